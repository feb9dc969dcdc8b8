extern crate failover as fo;

use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[fo::subsystem(name = "jobs", key = "id", crate = "fo")]
struct Jobs;

#[fo::subsystem(crate = "failover")]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }
}

fn main() {}
