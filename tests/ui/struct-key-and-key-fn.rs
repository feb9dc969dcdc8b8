use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

fn job_key(job: &Job) -> u64 { job.id }

#[failover::subsystem(name = "jobs", key = "id", key_fn = job_key)]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {}
