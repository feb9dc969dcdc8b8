use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(job: &Job) -> bool { job.id > 0 }
}

fn main() {}
