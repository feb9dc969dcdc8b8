use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

fn job_key(id: u64) -> u64 { id }

#[failover::subsystem(name = "jobs", key_fn = job_key)]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {}
