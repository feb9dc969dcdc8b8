use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[derive(Debug)]
struct ChargeError;

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> Result<(), ChargeError> {
        if job.id > 0 { Ok(()) } else { Err(ChargeError) }
    }
}

fn main() {}
