use serde::Serialize;

struct JobId(u64);

#[derive(Serialize)]
struct Job {
    #[serde(skip)]
    id: JobId,
}

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id.0 > 0 }
}

fn main() {}
