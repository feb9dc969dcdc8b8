//! Every hook, async and plain; unmarked hooks keep the defaults; the context by
//! value; the task by value (cloned); a `#[work]` method named `work`.
use std::sync::atomic::{AtomicU64, Ordering};

use failover::bson::Bson;
use failover::{Error, State, WorkContext};
use serde::Serialize;

#[derive(Serialize, Clone)]
struct Job {
    id: u64,
}

#[failover::subsystem(name = "jobs", key = "id")]
struct Jobs {
    epoch: AtomicU64,
}

#[failover::subsystem]
impl Jobs {
    #[work]
    async fn work(&self, job: Job, ctx: WorkContext) {
        let _ = (job.id, ctx.attempt());
    }

    #[on_master]
    async fn on_master(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    #[on_slave]
    fn following(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    #[on_synchronize]
    fn synchronized(&self, id: Bson) -> () {
        let _ = id;
    }

    #[failover::on_state_change]
    async fn changed(&self, old: State, new: State) {
        let _ = (old, new);
    }

    #[on_error]
    async fn failed(&self, error: Error) {
        let _ = error;
    }

    /// An ordinary method stays as it is.
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

#[failover::subsystem(name = "quiet", key = "id")]
struct Quiet {}

#[failover::subsystem]
impl Quiet {
    #[work]
    async fn run(&self, job: &Job) -> failover::Outcome {
        if job.id == 0 {
            failover::Outcome::Failed("job 0 does not exist".into())
        } else {
            failover::Outcome::Done
        }
    }
}

fn main() {
    let jobs = Jobs { epoch: AtomicU64::new(0) };
    assert_eq!(jobs.epoch(), 0);
    let _ = Quiet {};
}
