//! Managed mode, the counterpart of the original's `samples/test.managed.js`: a task
//! every second, fed to every member; the master works them in order; every 10th
//! task fails on its first attempt and is retried after the back-off.
//!
//! Without `MONGODB_URI`: three members in this process on the in-memory store; the
//! master is killed after a few seconds and a standby resumes after the last task
//! the old master published. With `MONGODB_URI`: one member per process (start
//! several; each feeds itself the same numbered tasks); Ctrl-C hands over gracefully.
//!
//! ```text
//! cargo run --example managed -- [--name S] [--id M] [--seconds N]
//! ```

use std::sync::Arc;
use std::time::Duration;

use failover::{Event, Intervals, Managed, MemoryStore, Options, Outcome, Work, WorkContext};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, Instant};

#[derive(Debug, Serialize, Deserialize)]
struct Task {
    id: u64,
    payload: String,
}

struct Printer {
    member: String,
    started: Instant,
}

impl Work for Printer {
    type Task = Task;
    type Key = u64;

    fn key(&self, task: &Task) -> u64 {
        task.id
    }

    async fn work(&self, task: &Task, ctx: &WorkContext) -> Outcome {
        let t = self.started.elapsed().as_secs_f64();
        if task.id.is_multiple_of(10) && ctx.attempt() == 1 {
            println!(
                "{t:>6.2}s member={} event=work epoch={} task={} attempt=1 failed, will retry",
                self.member,
                ctx.epoch(),
                task.id
            );
            return Outcome::Retry("every 10th task fails once".into());
        }
        println!(
            "{t:>6.2}s member={} event=work epoch={} task={} attempt={} {}",
            self.member,
            ctx.epoch(),
            task.id,
            ctx.attempt(),
            task.payload
        );
        Outcome::Done
    }
}

fn print_events(m: &Managed<Printer>, started: Instant) {
    let id = m.member().member_id().to_owned();
    let mut events = m.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let line = match &e {
                Event::Master { epoch } => format!("epoch={epoch}"),
                Event::Slave { epoch } => format!("epoch={epoch}"),
                Event::Synchronize { id, epoch } => format!("epoch={epoch} last-done={id}"),
                Event::StateChange { old, new, epoch } => format!(
                    "epoch={} {old} -> {new}",
                    epoch.map_or("-".into(), |e| e.to_string())
                ),
                other => format!("{other:?}"),
            };
            println!(
                "{:>6.2}s member={id} event={} {line}",
                started.elapsed().as_secs_f64(),
                e.name()
            );
        }
    });
}

/// Feeds task n to every member each second, forever.
fn feed(members: Arc<Vec<Managed<Printer>>>) {
    tokio::spawn(async move {
        for id in 1.. {
            for m in members.iter() {
                let _ = m
                    .submit_work(Task {
                        id,
                        payload: format!("payload-{id}"),
                    })
                    .await;
            }
            sleep(Duration::from_secs(1)).await;
        }
    });
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let name = arg("--name").unwrap_or_else(|| "managed-demo".into());
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(12);
    let intervals = Intervals {
        master: Duration::from_millis(1000),
        slave: Duration::from_millis(1250),
        ..Intervals::default()
    };
    let options = Options::new().intervals(intervals);

    if std::env::var("MONGODB_URI").is_ok_and(|u| !u.is_empty()) {
        let member_id = arg("--id").unwrap_or_else(|| format!("pid-{}", std::process::id()));
        let options = options.member_id(member_id.clone());
        let m = Managed::start(
            &name,
            options,
            Printer {
                member: member_id,
                started,
            },
        )
        .await?;
        print_events(&m, started);
        let members = Arc::new(vec![m]);
        feed(members.clone());
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = sleep(Duration::from_secs(seconds)) => {}
        }
        members[0].shutdown().await.unwrap();
        return Ok(());
    }

    println!("no MONGODB_URI: three members in this process, on the in-memory store");
    let store = MemoryStore::new();
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        let work = Printer {
            member: id.into(),
            started,
        };
        let m =
            Managed::start(&name, options.clone().in_memory(&store).member_id(id), work).await?;
        print_events(&m, started);
        members.push(m);
    }
    let members = Arc::new(members);
    feed(members.clone());
    sleep(Duration::from_secs(5)).await;
    if let Some(master) = members.iter().find(|m| m.member().is_master()) {
        println!(
            "--- killing master {} (no hand-over) ---",
            master.member().member_id()
        );
        master.abort();
    }
    sleep(Duration::from_secs(seconds.saturating_sub(5))).await;
    for m in members.iter() {
        m.shutdown().await.unwrap();
    }
    Ok(())
}
