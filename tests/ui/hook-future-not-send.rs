use std::rc::Rc;

use serde::Serialize;

#[derive(Serialize)]
struct Job { id: u64 }

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs;

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn run(&self, job: &Job) -> bool { job.id > 0 }

    #[on_master]
    async fn leading(&self, epoch: u64) {
        let local = Rc::new(epoch);
        tokio::task::yield_now().await;
        let _ = local;
    }
}

fn main() {}
