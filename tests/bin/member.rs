//! `failover-member`: one managed member of a subsystem in a process of its own,
//! for the chaos and fencing tests and the failover latency benchmark.
//!
//! ```text
//! failover-member --name jobs --id m1 --collection chaos --log m1.log \
//!     [--master-ms 2000] [--slave-ms 2500] [--lease-ms 3000] [--ticking-ms 2000] \
//!     [--error-ms 5000] [--tasks N] [--task-ms 5] [--fence] [--blocking] [--sequenced] \
//!     [--durable]
//! ```
//!
//! With `--produce N` it is no member but a producer of the durable queue: it
//! submits the tasks `0..N` with `failover::Queue::submit_many`, `--batch B`
//! (default 100) at a time, `--batch-ms MS` (default 0) apart, logs
//! `submitted - <first>-<last>` after each batch returned (stored) and `exit`, and
//! exits with status 0.
//!
//! With `--feed-rate R` (tasks a second) it feeds itself the tasks `0..N` as a
//! live feed publishes them, not all at once: task `n` is published at
//! `--feed-t0-ns T0` (`CLOCK_MONOTONIC`, ns) plus `n / R` seconds, and this member
//! receives it `--feed-lag-ms L` later (a lagging consumer); with
//! `--feed-from-now` it starts at the feed's current point when it starts (a
//! consumer that joins late and never sees the earlier tasks). It logs
//! `fed - - <first>-<last>` after each batch it was given (`submit_work`
//! returned).
//!
//! With `--durable` it works the subsystem's durable queue in MongoDB
//! (`Managed::start_durable`, default `DurableQueue` settings) and feeds itself
//! nothing: a producer submits the tasks (`failover::Queue`), each an `i64`.
//!
//! It connects to `MONGODB_URI` (required), feeds itself the tasks `0..N` in order
//! (every member of a test is fed the same tasks) and works them as master: a task
//! checks `ctx.is_master()`, logs `task-start`, sleeps `--task-ms` (with
//! `--blocking`, blocking its thread with `std::thread::sleep`, as synchronous work
//! does; the member then runs on a multi-thread runtime), with `--fence`
//! increments `{_id: "ledger"}` in `<collection>_ledger` through a
//! [`FencedCollection`] under its epoch, and logs `task-done`.
//!
//! # The log
//!
//! One line per event, appended to `--log` with one `write(2)` on an `O_APPEND`
//! file (no user-space buffer), so a SIGKILL loses nothing already logged and
//! the lines of several processes never interleave:
//!
//! ```text
//! <mono_ns> <member_id> <event> <epoch|-> <key|-> <detail>
//! ```
//!
//! `mono_ns` is `CLOCK_MONOTONIC`, read with `clock_gettime`: one clock for every
//! process on the machine, which libfaketime leaves alone with
//! `FAKETIME_DONT_FAKE_MONOTONIC=1`. Events:
//!
//! | event | epoch | key | detail |
//! |---|---|---|---|
//! | `start` | - | - | `pid=<pid> wall_ms=<wall clock, ms since 1970> tasks=<N>` |
//! | `fed` | - | - | `<first>-<last>`: tasks given to this member (`--feed-rate`) |
//! | `master`, `slave` | the lease's | - | - |
//! | `statechange` | the event's, if any | - | `<old>-><new>` |
//! | `synchronize` | the master's | the id | - |
//! | `error`, `info`, `panic` | - | - | the message |
//! | `dead-letter` | - | the key | `attempts=<n> <reason>` |
//! | `task-start` | the task's | the task | `attempt=<n>` |
//! | `task-done` | the task's | the task | - |
//! | `fence-rejected` | the task's | the task | the `Error::StaleEpoch`, `{:?}` |
//! | `fence-error` | the task's | the task | any other error of the fenced write |
//! | `exit` | epoch at the signal | - | `final=<state> at_signal=<state> signal=<TERM or INT>` |
//!
//! A task's `mono_ns` is read *before* its `ctx.is_master()` check, so a
//! `task-start` line is stamped no later than an instant at which the member held
//! the lease.
//!
//! On SIGTERM or SIGINT it shuts down gracefully (`Managed::shutdown`: the running
//! task finishes, the lease is released), logs every remaining event, then `exit`,
//! and exits with status 0.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failover::bson::{doc, Document};

#[path = "../members/clock.rs"]
mod clock;
use clock::mono_ns;
use failover::fence::FencedCollection;
use failover::{Error, Event, Intervals, Managed, Options, Outcome, Work, WorkContext};
use tokio::signal::unix::{signal, SignalKind};

/// The append-only event log.
struct Log {
    file: File,
    member: String,
}

impl Log {
    /// Appends one line stamped now.
    fn line(&self, event: &str, epoch: Option<u64>, key: Option<&str>, detail: &str) {
        self.line_at(mono_ns(), event, epoch, key, detail);
    }

    /// Appends one line stamped `at`, with one `write(2)`.
    fn line_at(&self, at: u64, event: &str, epoch: Option<u64>, key: Option<&str>, detail: &str) {
        let epoch = epoch.map_or_else(|| "-".to_owned(), |e| e.to_string());
        let key = key.map_or_else(|| "-".to_owned(), one_word);
        let detail = detail.replace(['\n', '\r'], " ");
        let mut text = format!("{at} {} {event} {epoch} {key}", self.member);
        if !detail.trim().is_empty() {
            text.push(' ');
            text.push_str(detail.trim());
        }
        text.push('\n');
        // O_APPEND: the kernel appends the whole buffer at the end in one step.
        if let Err(e) = (&self.file).write_all(text.as_bytes()) {
            eprintln!("failover-member: cannot write the log: {e}");
        }
    }
}

/// A value as one word (keys and ids must not contain blanks in the log).
fn one_word(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    if s.is_empty() {
        "-".to_owned()
    } else {
        s
    }
}

struct Args {
    name: String,
    id: String,
    collection: String,
    master_ms: u64,
    slave_ms: u64,
    lease_ms: Option<u64>,
    ticking_ms: u64,
    error_ms: u64,
    tasks: i64,
    task_ms: u64,
    log: PathBuf,
    fence: bool,
    blocking: bool,
    sequenced: bool,
    durable: bool,
    /// `--produce N`: submit `0..N` to the durable queue and exit.
    produce: Option<i64>,
    batch: usize,
    batch_ms: u64,
    /// `--feed-rate`: a live feed of this many tasks a second (0: all at once).
    feed_rate: u64,
    feed_t0_ns: u64,
    feed_lag_ms: u64,
    feed_from_now: bool,
}

const USAGE: &str = "usage: failover-member --name NAME --id ID --collection COLL --log FILE \
[--master-ms MS] [--slave-ms MS] [--lease-ms MS] [--ticking-ms MS] [--error-ms MS] \
[--tasks N] [--task-ms MS] [--fence] [--blocking] [--sequenced] [--durable] \
[--feed-rate R --feed-t0-ns T0 [--feed-lag-ms L] [--feed-from-now]] \
[--produce N [--batch B] [--batch-ms MS]]   (MONGODB_URI must be set)";

fn parse_args() -> Result<Args, String> {
    let defaults = Intervals::default();
    let mut a = Args {
        name: String::new(),
        id: String::new(),
        collection: String::new(),
        master_ms: defaults.master.as_millis() as u64,
        slave_ms: defaults.slave.as_millis() as u64,
        lease_ms: None,
        ticking_ms: defaults.ticking.as_millis() as u64,
        error_ms: defaults.error.as_millis() as u64,
        tasks: 0,
        task_ms: 5,
        log: PathBuf::new(),
        fence: false,
        blocking: false,
        sequenced: false,
        durable: false,
        produce: None,
        batch: 100,
        batch_ms: 0,
        feed_rate: 0,
        feed_t0_ns: 0,
        feed_lag_ms: 0,
        feed_from_now: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--fence" {
            a.fence = true;
            continue;
        }
        if flag == "--blocking" {
            a.blocking = true;
            continue;
        }
        if flag == "--sequenced" {
            a.sequenced = true;
            continue;
        }
        if flag == "--durable" {
            a.durable = true;
            continue;
        }
        if flag == "--feed-from-now" {
            a.feed_from_now = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--name" => a.name = value,
            "--id" => a.id = value,
            "--collection" => a.collection = value,
            "--log" => a.log = PathBuf::from(value),
            "--master-ms" => a.master_ms = number(&value)?,
            "--slave-ms" => a.slave_ms = number(&value)?,
            "--lease-ms" => a.lease_ms = Some(number(&value)?),
            "--ticking-ms" => a.ticking_ms = number(&value)?,
            "--error-ms" => a.error_ms = number(&value)?,
            "--tasks" => {
                a.tasks = i64::try_from(number(&value)?).map_err(|e| format!("--tasks: {e}"))?
            }
            "--task-ms" => a.task_ms = number(&value)?,
            "--produce" => {
                a.produce =
                    Some(i64::try_from(number(&value)?).map_err(|e| format!("--produce: {e}"))?)
            }
            "--batch" => a.batch = number(&value)?.max(1) as usize,
            "--batch-ms" => a.batch_ms = number(&value)?,
            "--feed-rate" => a.feed_rate = number(&value)?,
            "--feed-t0-ns" => a.feed_t0_ns = number(&value)?,
            "--feed-lag-ms" => a.feed_lag_ms = number(&value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    for (flag, v) in [
        ("--name", &a.name),
        ("--id", &a.id),
        ("--collection", &a.collection),
    ] {
        if v.is_empty() {
            return Err(format!("{flag} is required"));
        }
    }
    if a.log.as_os_str().is_empty() {
        return Err("--log is required".to_owned());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("failover-member: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread, unless the work blocks its thread: then a multi-thread runtime,
    // on which the worker gets a thread of its own. The first event subscriber
    // gets the events from the start either way.
    let runtime = if args.blocking {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("a Tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover-member: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let uri = std::env::var("MONGODB_URI")
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or("MONGODB_URI must be set")?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("cannot open {}: {e}", args.log.display()))?;
    let log = Arc::new(Log {
        file,
        member: one_word(&args.id),
    });
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    log.line(
        "start",
        None,
        None,
        &format!(
            "pid={} wall_ms={wall_ms} tasks={}",
            std::process::id(),
            args.tasks
        ),
    );

    if let Some(n) = args.produce {
        return produce(&args, &uri, &log, n).await;
    }

    // One driver client for the election and the fenced writes, named like the
    // client `failover` would build (`failover:<member id>`), so that a fail
    // point filtered on that appName hits both.
    let mut client_options = mongodb::options::ClientOptions::parse(&uri)
        .await
        .map_err(|e| format!("MONGODB_URI: {e}"))?;
    client_options.app_name = Some(format!("failover:{}", args.id));
    let client = mongodb::Client::with_options(client_options).map_err(|e| e.to_string())?;
    let db = client
        .default_database()
        .unwrap_or_else(|| client.database("test"));
    let ledger = args.fence.then(|| {
        FencedCollection::new(db.collection::<Document>(&format!("{}_ledger", args.collection)))
    });

    let ms = Duration::from_millis;
    let mut options = Options::new()
        .client(client)
        .collection(&args.collection)
        .member_id(&args.id)
        .intervals(Intervals {
            init: Duration::ZERO,
            master: ms(args.master_ms),
            slave: ms(args.slave_ms),
            ticking: ms(args.ticking_ms),
            error: ms(args.error_ms),
        });
    if let Some(lease) = args.lease_ms {
        options = options.lease(ms(lease));
    }

    let work = ChaosWork {
        log: log.clone(),
        ledger,
        task_ms: args.task_ms,
        blocking: args.blocking,
        sequenced: args.sequenced,
    };
    let managed = if args.durable {
        let options = options.durable_queue(failover::DurableQueue::new());
        Managed::start_durable(&args.name, options, work).await
    } else {
        Managed::start(&args.name, options, work).await
    }
    .map_err(|e| e.to_string())?;
    // On this one-thread runtime the election task has not run yet: no event is missed.
    let mut events = managed.events();
    let event_log = log.clone();
    let logger = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            log_event(&event_log, &event);
        }
    });
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    // With `--durable` a producer submits the tasks.
    let fed = if args.durable { 0 } else { args.tasks };
    let managed = Arc::new(managed);
    let feeder = if args.feed_rate > 0 && fed > 0 {
        let feed = Feed {
            tasks: fed,
            rate: args.feed_rate,
            t0_ns: args.feed_t0_ns,
            lag_ns: args.feed_lag_ms * 1_000_000,
        };
        let (managed, log) = (managed.clone(), log.clone());
        let mut next = if args.feed_from_now {
            feed.published(mono_ns())
        } else {
            0
        };
        Some(tokio::spawn(async move {
            while next < feed.tasks {
                let upto = feed.published(mono_ns());
                if upto > next {
                    for n in next..upto {
                        if let Err(e) = managed.submit_work(n).await {
                            log.line("error", None, None, &format!("feeding task {n}: {e}"));
                        }
                    }
                    log.line("fed", None, None, &format!("{next}-{}", upto - 1));
                    next = upto;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    } else {
        for n in 0..fed {
            managed.submit_work(n).await.map_err(|e| e.to_string())?;
        }
        None
    };

    let signal = tokio::select! {
        _ = term.recv() => "TERM",
        _ = int.recv() => "INT",
    };
    if let Some(feeder) = feeder {
        // Nothing more is given to a member that is stopping.
        feeder.abort();
        let _ = feeder.await;
    }
    let at_signal = managed.state();
    let epoch = managed.epoch();
    managed.shutdown().await.unwrap();
    // The stream ends once the member has stopped: every event is logged before `exit`.
    let _ = logger.await;
    log.line(
        "exit",
        epoch,
        None,
        &format!(
            "final={} at_signal={at_signal} signal={signal}",
            managed.state()
        ),
    );
    Ok(())
}

/// A live feed of the tasks `0..tasks`: task `n` is published at `t0_ns + n /
/// rate` seconds and reaches this member `lag_ns` later.
struct Feed {
    tasks: i64,
    rate: u64,
    t0_ns: u64,
    lag_ns: u64,
}

impl Feed {
    /// How many tasks (`0..returned`) have reached this member at `now_ns`.
    fn published(&self, now_ns: u64) -> i64 {
        let Some(since) = now_ns.checked_sub(self.t0_ns + self.lag_ns) else {
            return 0;
        };
        let n = u128::from(since) * u128::from(self.rate) / 1_000_000_000 + 1;
        n.min(self.tasks as u128) as i64
    }
}

/// The producer: submits `0..n` to the durable queue in batches, logging each.
async fn produce(args: &Args, uri: &str, log: &Log, n: i64) -> Result<(), String> {
    let options = Options::new()
        .connect_string(uri)
        .collection(&args.collection)
        .member_id(&args.id)
        .durable_queue(failover::DurableQueue::new());
    let queue = failover::Queue::connect(&args.name, options)
        .await
        .map_err(|e| e.to_string())?;
    let mut first = 0;
    while first < n {
        let last = (first + args.batch as i64).min(n) - 1;
        queue
            .submit_many(first..=last)
            .await
            .map_err(|e| e.to_string())?;
        log.line("submitted", None, None, &format!("{first}-{last}"));
        first = last + 1;
        if first < n {
            tokio::time::sleep(Duration::from_millis(args.batch_ms)).await;
        }
    }
    log.line("exit", None, None, &format!("submitted={n}"));
    Ok(())
}

/// Task `n`: its key is `n`, or with `--sequenced` `n % 10` (keys that repeat all
/// the time) with `n` as its feed sequence number. The log names tasks by `n`.
struct ChaosWork {
    log: Arc<Log>,
    ledger: Option<FencedCollection>,
    task_ms: u64,
    blocking: bool,
    sequenced: bool,
}

impl Work for ChaosWork {
    type Task = i64;
    type Key = i64;
    fn key(&self, n: &i64) -> i64 {
        if self.sequenced {
            n % 10
        } else {
            *n
        }
    }
    fn sequence(&self, n: &i64) -> Option<u64> {
        self.sequenced.then(|| u64::try_from(*n).unwrap_or(0))
    }
    async fn work(&self, n: &i64, ctx: &WorkContext) -> Outcome {
        task(
            *n,
            ctx,
            &self.log,
            self.ledger.as_ref(),
            self.task_ms,
            self.blocking,
        )
        .await
    }
}

/// One task: check the lease, log, work, (fenced write), log.
async fn task(
    n: i64,
    ctx: &WorkContext,
    log: &Log,
    ledger: Option<&FencedCollection>,
    task_ms: u64,
    blocking: bool,
) -> Outcome {
    let key = n.to_string();
    // Stamp first, then check: the line's instant is one at which the lease was held.
    let at = mono_ns();
    if !ctx.is_master() {
        return Outcome::Retry("not master".to_owned());
    }
    log.line_at(
        at,
        "task-start",
        Some(ctx.epoch()),
        Some(&key),
        &format!("attempt={}", ctx.attempt()),
    );
    if blocking {
        std::thread::sleep(Duration::from_millis(task_ms));
    } else {
        tokio::time::sleep(Duration::from_millis(task_ms)).await;
    }
    if let Some(ledger) = ledger {
        // No second lease check here on purpose: a pause between the check above and
        // this write is what the fence is for.
        match ledger
            .upsert_one(
                ctx.epoch(),
                doc! { "_id": "ledger" },
                doc! { "$inc": { "n": 1_i64 } },
            )
            .await
        {
            Ok(_) => {}
            Err(e @ Error::StaleEpoch { .. }) => {
                log.line(
                    "fence-rejected",
                    Some(ctx.epoch()),
                    Some(&key),
                    &format!("{e:?}"),
                );
                return Outcome::Retry(e.to_string());
            }
            Err(e) => {
                log.line("fence-error", Some(ctx.epoch()), Some(&key), &e.to_string());
                return Outcome::Retry(e.to_string());
            }
        }
    }
    log.line("task-done", Some(ctx.epoch()), Some(&key), "");
    Outcome::Done
}

fn log_event(log: &Log, event: &Event) {
    match event {
        Event::Master { epoch } => log.line("master", Some(*epoch), None, ""),
        Event::Slave { epoch } => log.line("slave", Some(*epoch), None, ""),
        Event::StateChange { old, new, epoch } => {
            log.line("statechange", *epoch, None, &format!("{old}->{new}"))
        }
        Event::Synchronize { id, epoch } => {
            log.line("synchronize", Some(*epoch), Some(&id.to_string()), "")
        }
        Event::Error(e) => log.line("error", None, None, &e.to_string()),
        Event::Connected => log.line("info", None, None, "connected"),
        Event::Released { epoch } => log.line(
            "info",
            None,
            None,
            &format!("released the lease of epoch {epoch}"),
        ),
        Event::Panic(text) => log.line("panic", None, None, text),
        Event::DeadLetter {
            key,
            attempts,
            reason,
            ..
        } => log.line(
            "dead-letter",
            None,
            Some(&key.to_string()),
            &format!("attempts={attempts} {reason}"),
        ),
        other => log.line(other.name(), None, None, &format!("{other:?}")),
    }
}
