use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id", queue = "mongodb")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

#[failover::subsystem(name = "in_memory", key = "id", queue = "memory")]
struct InMemory;

#[failover::subsystem]
impl InMemory {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {
    use failover::Subsystem;
    assert!(<Jobs as Subsystem>::__durable_decoder().is_some());
    assert!(<InMemory as Subsystem>::__durable_decoder().is_none());
}
