use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

impl Jobs {
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {}
