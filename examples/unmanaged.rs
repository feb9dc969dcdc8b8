//! Unmanaged mode, the counterpart of the original's `samples/test.unmanaged.js`.
//!
//! Without `MONGODB_URI`: three members in this process on the in-memory store;
//! the master publishes a counter with `synchronize`, is killed (no hand-over),
//! a standby takes over, then shuts down gracefully and the last one takes over
//! at once.
//!
//! With `MONGODB_URI`: one member per process; start several, stop them with
//! Ctrl-C (graceful hand-over) or kill them (failover after the lease).
//!
//! ```text
//! cargo run --example unmanaged -- [--name S] [--id M] [--master-ms N] [--slave-ms N] [--lease-ms N] [--seconds N]
//! ```

use std::time::Duration;

use failover::{Event, Intervals, Member, MemoryStore, Options};
use tokio::time::{sleep, Instant};

struct Args {
    name: String,
    id: Option<String>,
    intervals: Intervals,
    lease: Option<Duration>,
    seconds: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        name: "unmanaged-demo".into(),
        id: None,
        intervals: Intervals::default(),
        lease: None,
        seconds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let millis = |v: String| {
            v.parse()
                .map(Duration::from_millis)
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--name" => args.name = value()?,
            "--id" => args.id = Some(value()?),
            "--master-ms" => args.intervals.master = millis(value()?)?,
            "--slave-ms" => args.intervals.slave = millis(value()?)?,
            "--lease-ms" => args.lease = Some(millis(value()?)?),
            "--seconds" => {
                args.seconds = Some(value()?.parse().map_err(|e| format!("--seconds: {e}"))?)
            }
            other => {
                return Err(format!(
                    "unknown flag {other}; see the comment at the top of examples/unmanaged.rs"
                ))
            }
        }
    }
    Ok(args)
}

/// Prints one line per event of `member`.
fn print_events(member: &Member, started: Instant) {
    let id = member.member_id().to_owned();
    let mut events = member.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let (epoch, detail) = match &event {
                Event::Master { epoch } | Event::Slave { epoch } => (Some(*epoch), String::new()),
                Event::StateChange { old, new, epoch } => (*epoch, format!("{old} -> {new}")),
                Event::Synchronize { id, epoch } => (Some(*epoch), format!("id={id}")),
                Event::Error(e) => (None, e.to_string()),
                Event::Panic(i) => (None, i.clone()),
                other => (None, format!("{other:?}")),
            };
            let epoch = epoch.map_or("-".into(), |e| e.to_string());
            println!(
                "{:>6.2}s member={id} event={} epoch={epoch} {detail}",
                started.elapsed().as_secs_f64(),
                event.name()
            );
        }
    });
}

/// For each term of mastership, publishes a counter every second; the work is
/// dropped when the term ends, and a graceful shutdown waits for it.
fn publish_counter(member: std::sync::Arc<Member>) {
    tokio::spawn(async move {
        let m = member.clone();
        let _ = member
            .run_while_master(|term| {
                let m = m.clone();
                async move {
                    let mut n = 0u64;
                    loop {
                        sleep(Duration::from_secs(1)).await;
                        n += 1;
                        // Pass term.epoch() along with every write elsewhere.
                        let _ = m.synchronize(n);
                        println!(
                            "{} published {n} under epoch {}",
                            m.member_id(),
                            term.epoch()
                        );
                    }
                }
            })
            .await;
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let started = Instant::now();
    let mut options = Options::new().intervals(args.intervals);
    if let Some(lease) = args.lease {
        options = options.lease(lease);
    }

    if std::env::var("MONGODB_URI").is_ok_and(|u| !u.is_empty()) {
        if let Some(id) = &args.id {
            options = options.member_id(id.clone());
        }
        let member = std::sync::Arc::new(Member::start(&args.name, options).await?);
        print_events(&member, started);
        publish_counter(member.clone());
        match args.seconds {
            Some(s) => sleep(Duration::from_secs(s)).await,
            None => tokio::signal::ctrl_c().await?,
        }
        member.shutdown().await.unwrap();
        return Ok(());
    }

    println!("no MONGODB_URI: three members in this process, on the in-memory store");
    let store = MemoryStore::new();
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        let member = std::sync::Arc::new(
            Member::start(&args.name, options.clone().in_memory(&store).member_id(id)).await?,
        );
        print_events(&member, started);
        publish_counter(member.clone());
        members.push(member);
    }
    let wait = |members: &Vec<std::sync::Arc<Member>>| {
        let members = members.clone();
        async move {
            loop {
                if let Some(i) = members.iter().position(|m| m.is_master()) {
                    return i;
                }
                sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let master = wait(&members).await;
    sleep(Duration::from_secs(3)).await;
    let killed = members.remove(master);
    println!(
        "--- killing master {} (no hand-over) ---",
        killed.member_id()
    );
    killed.abort();
    let master = wait(&members).await;
    sleep(Duration::from_secs(3)).await;
    let leaving = members.remove(master);
    println!(
        "--- shutting down master {} gracefully ---",
        leaving.member_id()
    );
    leaving.shutdown().await.unwrap();
    wait(&members).await;
    sleep(Duration::from_secs(args.seconds.unwrap_or(2))).await;
    for m in members {
        m.shutdown().await.unwrap();
    }
    Ok(())
}
