use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job, ctx: &failover::WorkContext, retries: u32) -> bool {
        job.id > 0 && ctx.attempt() < retries
    }
}

fn main() {}
