use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
union Jobs { a: u32, b: f32 }

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {}
