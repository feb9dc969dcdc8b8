//! The durable queue (issue 10): tasks kept in MongoDB, submitted by any process,
//! worked in order by the master of a managed subsystem, surviving the death of
//! every member.
//!
//! ```text
//! MONGODB_URI=mongodb://localhost/app cargo run --example durable -- produce 1000
//! MONGODB_URI=mongodb://localhost/app cargo run --example durable -- member m1 [--task-ms 50]
//! cargo run --example durable            # self-contained demonstration
//! ```
//!
//! `produce N` submits tasks `0..N` and exits once they are stored (majority
//! write concern). `member ID` runs one member that works the queue when it is
//! master and prints `done <key> epoch=<epoch> member=<ID>` per finished task;
//! Ctrl-C hands over gracefully. Start several members, kill them (`kill -9`),
//! produce more: nothing is lost, and with progress recorded after every task at
//! most the task in flight at a crash runs twice.
//!
//! Without `MONGODB_URI` the demonstration runs on the bundled MongoDB test server
//! (`tests/support/mongo_server.py`: mongomock behind a wire-protocol server; its
//! Python environment is built under `target/` on first use, which needs
//! `python3` and, that first time, access to the Python package index): a
//! producer queues 20 tasks, member `a` works some of them and crashes, member `b`
//! takes over and does the rest.

#[path = "../tests/support/mod.rs"]
#[allow(unused_macros, unused_imports)]
mod support;

use std::time::Duration;

use failover::{DurableQueue, Intervals, Managed, Options, Outcome, Queue, Work, WorkContext};
use serde::{Deserialize, Serialize};
use tokio::time::sleep;

const NAME: &str = "durable-demo";

#[derive(Debug, Serialize, Deserialize)]
struct Task {
    key: u64,
    payload: String,
}

struct Printer {
    member: String,
    task_ms: u64,
}

impl Work for Printer {
    type Task = Task;
    type Key = u64;

    fn key(&self, task: &Task) -> u64 {
        task.key
    }

    async fn work(&self, task: &Task, ctx: &WorkContext) -> Outcome {
        if self.task_ms > 0 {
            sleep(Duration::from_millis(self.task_ms)).await;
        }
        println!(
            "done {} epoch={} member={}",
            task.key,
            ctx.epoch(),
            self.member
        );
        Outcome::Done
    }
}

fn options(uri: &str, id: &str) -> Options {
    Options::new()
        .connect_string(uri)
        .member_id(id)
        .intervals(Intervals {
            master: Duration::from_millis(500),
            slave: Duration::from_millis(700),
            ticking: Duration::from_millis(500),
            error: Duration::from_millis(1000),
            ..Intervals::default()
        })
        .lease(Duration::from_millis(1500))
        .durable_queue(DurableQueue::new())
}

fn tasks(range: std::ops::Range<u64>) -> impl Iterator<Item = Task> {
    range.map(|key| Task {
        key,
        payload: format!("task {key}"),
    })
}

async fn produce(uri: &str, n: u64) -> failover::Result<()> {
    let queue = Queue::connect(NAME, options(uri, "producer")).await?;
    let seqs = queue.submit_many(tasks(0..n)).await?;
    match (seqs.first(), seqs.last()) {
        (Some(first), Some(last)) => println!("queued {n} tasks as numbers {first}..={last}"),
        _ => println!("nothing to queue"),
    }
    Ok(())
}

async fn member(uri: &str, id: &str, task_ms: u64) -> failover::Result<()> {
    let work = Printer {
        member: id.to_owned(),
        task_ms,
    };
    let member = Managed::start_durable(NAME, options(uri, id), work).await?;
    eprintln!("member {id} started; Ctrl-C hands over gracefully");
    let _ = tokio::signal::ctrl_c().await;
    member.shutdown().await
}

async fn demonstration() -> failover::Result<()> {
    println!(
        "no MONGODB_URI: running on the bundled MongoDB test server (mongomock behind a \
         wire-protocol server, tests/support/mongo_server.py)"
    );
    let uri = support::test_server_uri();
    let name = format!("{NAME}-{}", std::process::id());
    let options = |id: &str| options(&uri, id).collection(name.as_str());
    let queue = Queue::connect(NAME, options("producer")).await?;
    queue.submit_many(tasks(0..20)).await?;
    println!("producer: 20 tasks queued; no member is running yet");

    let a = Managed::start_durable(
        NAME,
        options("a"),
        Printer {
            member: "a".into(),
            task_ms: 100,
        },
    )
    .await?;
    while queue.progress().await?.0 < 8 {
        sleep(Duration::from_millis(20)).await;
    }
    a.abort(); // a crash: nothing handed over
    drop(a);
    println!("member a crashed; member b starts and takes over once a's lease runs out");
    let b = Managed::start_durable(
        NAME,
        options("b"),
        Printer {
            member: "b".into(),
            task_ms: 10,
        },
    )
    .await?;
    while queue.progress().await?.0 < 20 {
        sleep(Duration::from_millis(20)).await;
    }
    let (seq, epoch) = queue.progress().await?;
    println!(
        "all 20 tasks done (progress {seq} under epoch {epoch}); {} waiting, {} dead letters",
        queue.pending().await?,
        queue.dead_letters().await?.len()
    );
    b.shutdown().await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: durable produce N | durable member ID [--task-ms MS] (with MONGODB_URI set); no arguments: demonstration";
    match (args.first().map(String::as_str), uri) {
        (None, _) => demonstration().await?,
        (Some("produce"), Some(uri)) => {
            let n = args.get(1).and_then(|n| n.parse().ok()).ok_or(usage)?;
            produce(&uri, n).await?;
        }
        (Some("member"), Some(uri)) => {
            let id = args.get(1).ok_or(usage)?;
            let task_ms = match args.get(2).map(String::as_str) {
                Some("--task-ms") => args.get(3).and_then(|m| m.parse().ok()).ok_or(usage)?,
                None => 0,
                Some(_) => return Err(usage.into()),
            };
            member(&uri, id, task_ms).await?;
        }
        (Some("produce" | "member"), None) => {
            return Err("set MONGODB_URI (a MongoDB connection string) for `produce` and `member`; \
                        without arguments the example runs a demonstration on the bundled test server"
                .into())
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
