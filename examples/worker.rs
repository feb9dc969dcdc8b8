//! A failover-enabled worker, written with `#[failover::subsystem]`.
//!
//! `cargo run --example worker` runs three members of the subsystem in this
//! process, on the in-memory store, and feeds them all the same jobs. After two
//! seconds it drops the master as if it crashed: a standby takes over with the
//! next fencing token and finishes the jobs (those the old master did but had not
//! yet published run again: work is done at least once). It ends by itself once
//! the jobs are done, after about ten seconds.
//!
//! With `MONGODB_URI` set, each process is one member and runs until it is
//! stopped: start it in several terminals, stop the master (Ctrl-C) and watch
//! another take over once its lease has run out.

use std::time::Duration;

use failover::{MemoryStore, Options, WorkContext};

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
    // Without MONGODB_URI: three members in this process, on the in-memory store.
    let mongo = std::env::var_os("MONGODB_URI").is_some();
    let names = if mongo {
        vec!["me"]
    } else {
        vec!["a", "b", "c"]
    };
    let store = MemoryStore::new();
    let mut members = Vec::new();
    for name in names {
        let options = match mongo {
            true => Options::new(),
            false => Options::new().in_memory(&store),
        };
        members.push(Worker { name }.start(options).await?);
    }
    for id in 1..=30 {
        for member in &members {
            member.submit_work(Job { id }).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if mongo {
        std::future::pending::<()>().await; // runs until stopped: stop the master to fail over
    }
    members.retain(|m| !m.member().is_master()); // the master crashes: dropped, not shut down
    while members
        .iter()
        .all(|m| !m.member().is_master() || m.stats().queued > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await; // until a new master is done
    }
    for member in &members {
        member.shutdown().await; // hands the lease over
    }
    Ok(())
}
