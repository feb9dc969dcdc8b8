use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id", queue = "redis")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {}
