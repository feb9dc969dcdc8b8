//! A failover-enabled worker, written with `#[failover::subsystem]`.
//!
//! `cargo run --example worker` runs three members of the subsystem in this
//! process, on the in-memory store, and feeds them all the same jobs. After two
//! seconds it drops the master as if it crashed: a standby takes over with the
//! next fencing token and finishes the jobs. The members publish their progress
//! with a lease renewal after every job (`Progress::EveryTask`; the default
//! publishes with the periodic renewals only), so at most the job the master was
//! running when it crashed runs again: work is done at least once, and repeated
//! at most once per crash. It ends by itself once the jobs are done, after about
//! ten seconds.
//!
//! With `MONGODB_URI` set, the three members keep their lease in that database
//! instead (for one member per process, see `examples/managed.rs`).

use std::time::Duration;

use failover::{MemoryStore, Options, Progress, WorkContext};

#[derive(serde::Serialize)]
struct Job {
    id: u32,
}

#[failover::subsystem(name = "example-worker", key = "id")]
struct Worker {
    name: &'static str,
}

#[failover::subsystem]
impl Worker {
    #[work]
    async fn run(&self, job: &Job, ctx: &WorkContext) {
        println!("{}: job {} under epoch {}", self.name, job.id, ctx.epoch());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[on_master]
    fn leading(&self, epoch: u64) {
        println!("{}: master with epoch {epoch}", self.name);
    }
}

#[tokio::main]
async fn main() -> failover::Result<()> {
    let store = MemoryStore::new(); // used when MONGODB_URI is not set
    let options = match std::env::var_os("MONGODB_URI") {
        Some(_) => Options::new(),
        None => Options::new().in_memory(&store),
    }
    // Publish after every job: a crash repeats at most the job in flight.
    .progress(Progress::EveryTask);
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(
            Worker { name }
                .start(options.clone().member_id(name))
                .await?,
        );
    }
    for id in 1..=30 {
        for member in &members {
            member.submit_work(Job { id }).await?;
        }
    }
    // The demonstration: after two seconds the master crashes (it is dropped, not
    // shut down); a standby takes over and finishes the jobs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    members.retain(|m| !m.member().is_master());
    while members
        .iter()
        .all(|m| !m.member().is_master() || m.stats().queued > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for member in &members {
        member.shutdown().await.unwrap(); // hands the lease over
    }
    Ok(())
}
