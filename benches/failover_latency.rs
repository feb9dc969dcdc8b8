//! Failover latency, idle database load and memory of member processes
//! (`failover-member`, tests/bin/member.rs), on every selected server in one run.
//!
//! `cargo bench --bench failover_latency`; `FAILOVER_BENCH_RUNS` (default 10) runs
//! per case and server, `FAILOVER_BENCH_IDLE_SECS` (default 30) per idle
//! measurement. The servers: `FAILOVER_TEST_SERVER` (a comma-separated list of
//! `mock`, `ferretdb`, `uri`, as for the tests; see `tests/support/ferretdb.rs`),
//! by default `mock,ferretdb`: the bundled test server and FerretDB 1.24 (built
//! and started by the test harness; the build needs Go), so that their figures
//! come from the same run. The runs of a case alternate between the servers, so
//! that a busy moment of the shared machine falls on both alike.
//!
//! * **Crash failover**: a master and a standby, both working the same queue of
//!   5 ms tasks. Once the standby follows, after two renewal periods and a random
//!   fraction of a third (a random point between renewals), the master is
//!   SIGKILLed. Latency: from the kill (CLOCK_MONOTONIC in this process) to the
//!   standby's first `task-start` in its log (the same clock).
//! * **Graceful hand-over**: the same, with SIGTERM (the master finishes its task
//!   and releases the lease).
//! * Each with the original's default intervals (master 2000 ms, slave 2500 ms,
//!   lease 3000 ms) and with intervals tuned for a 1 s lease (master 300 ms,
//!   slave 400 ms).
//! * **Idle load**: the server's operation counters before and after a window
//!   with one idle member (master), then with a master and a standby; default
//!   intervals. `serverStatus.opcounters` where the server has them (the test
//!   server, MongoDB), else `serverStatus.metrics.commands` by command name
//!   (FerretDB), without the bench's own `serverStatus`.
//! * **Memory**: VmRSS of the idle master and standby.

#[path = "../tests/members/mod.rs"]
mod members;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use members::{Proc, Rng, Spec, Tail, Timings};
use mongodb::bson::{doc, Bson};
use support::Server;

const DEFAULT: Timings = Timings {
    master: 2000,
    slave: 2500,
    lease: None,
    ticking: 2000,
    error: 5000,
};
const TUNED: Timings = Timings {
    master: 300,
    slave: 400,
    lease: Some(1000),
    ticking: 400,
    error: 500,
};
const TASK_MS: u64 = 5;
/// Enough 5 ms tasks for any run (a master does about 160 a second).
const TASKS: u64 = 20_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Crash,
    Graceful,
}

struct Bench {
    rng: Rng,
    run: u64,
    dir: std::path::PathBuf,
}

impl Bench {
    fn spec(&mut self, collection: &str, id: &str, timings: Timings, tasks: u64) -> Spec {
        Spec {
            name: "bench".to_owned(),
            id: id.to_owned(),
            collection: collection.to_owned(),
            timings,
            tasks,
            task_ms: TASK_MS,
            fence: false,
            blocking: false,
            sequenced: false,
            durable: false,
            faketime: None,
            log: self.dir.join(format!("{collection}-{id}.log")),
        }
    }

    /// Starts a master and a standby on `uri` and waits until the standby follows.
    fn pair(&mut self, uri: &str, timings: Timings, tasks: u64) -> (Proc, Proc, Tail, Tail) {
        self.run += 1;
        let collection = format!("latency{}", self.run);
        let (sa, sb) = (
            self.spec(&collection, "a", timings, tasks),
            self.spec(&collection, "b", timings, tasks),
        );
        let (mut ta, mut tb) = (Tail::new(&sa.log), Tail::new(&sb.log));
        let a = sa.spawn(uri);
        ta.wait_for(ms(15_000), |l| l.event == "master")
            .unwrap_or_else(|| panic!("a became no master within 15 s (log {})", sa.log.display()));
        let b = sb.spawn(uri);
        tb.wait_for(ms(15_000), |l| l.event == "slave")
            .unwrap_or_else(|| panic!("b did not follow a within 15 s (log {})", sb.log.display()));
        (a, b, ta, tb)
    }

    /// One failover on `uri`; returns (to the standby's master line, to its first
    /// task-start), ns.
    fn failover(&mut self, uri: &str, timings: Timings, stop: Stop) -> (u64, u64) {
        let (mut a, mut b, _ta, mut tb) = self.pair(uri, timings, TASKS);
        // A random point between renewals, in the steady state.
        let wait = 2 * timings.master + self.rng.range(0, timings.master - 1);
        std::thread::sleep(ms(wait));
        let stopped = members::mono_ns();
        match stop {
            Stop::Crash => a.kill(),
            Stop::Graceful => a.terminate(),
        }
        let limit = ms(3 * timings.lease() + timings.slave + timings.ticking + 10_000);
        let master = tb
            .wait_for(limit, |l| l.event == "master" && l.t >= stopped)
            .expect("b took over");
        let started = tb
            .wait_for(limit, |l| l.event == "task-start" && l.t >= stopped)
            .expect("b started a task");
        if stop == Stop::Graceful {
            let status = a.wait_exit(ms(10_000));
            assert!(status.is_some_and(|s| s.success()), "a: {status:?}");
        }
        b.terminate();
        let _ = b.wait_exit(ms(10_000));
        (master.t - stopped, started.t - stopped)
    }
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn fmt_ms(ns: u64) -> String {
    format!("{:.0} ms", ns as f64 / 1e6)
}

const KINDS: [&str; 6] = ["insert", "query", "update", "delete", "getmore", "command"];

/// The server's operation counters by [`KINDS`], and where they came from.
async fn opcounters(client: &mongodb::Client) -> (Vec<i64>, &'static str) {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .expect("serverStatus");
    let number = |v: Option<&Bson>| match v {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    };
    if let Ok(op) = status.get_document("opcounters") {
        // The second serverStatus counts itself as a command.
        let counts = KINDS
            .iter()
            .map(|k| number(op.get(*k)) - i64::from(*k == "command"))
            .collect();
        return (counts, "serverStatus.opcounters");
    }
    let Ok(commands) = status
        .get_document("metrics")
        .and_then(|m| m.get_document("commands"))
    else {
        return (
            vec![0; KINDS.len()],
            "none (the server reports no counters)",
        );
    };
    let mut counts = vec![0_i64; KINDS.len()];
    for (name, value) in commands {
        let kind = match name.to_ascii_lowercase().as_str() {
            "serverstatus" => continue, // the bench's own
            "insert" => "insert",
            "find" | "count" | "aggregate" => "query",
            "findandmodify" | "update" => "update",
            "delete" => "delete",
            "getmore" => "getmore",
            _ => "command",
        };
        let total = match value {
            Bson::Document(d) => number(d.get("total")),
            other => number(Some(other)),
        };
        let i = KINDS.iter().position(|k| *k == kind).unwrap();
        counts[i] += total;
    }
    (counts, "serverStatus.metrics.commands")
}

/// The servers to measure: `FAILOVER_TEST_SERVER`, or the mock and FerretDB.
fn bench_servers() -> Vec<Server> {
    let list = std::env::var("FAILOVER_TEST_SERVER").unwrap_or_default();
    let servers = support::parse_servers(&list).unwrap_or_else(|e| panic!("{e}"));
    if servers.is_empty() {
        vec![Server::Mock, Server::FerretDb]
    } else {
        servers
    }
}

/// One case's samples (ns), per server.
struct Case {
    label: &'static str,
    timings: Timings,
    stop: Stop,
    what: &'static str,
    /// Per server (same order as the servers): (to `master`, to first task), sorted.
    samples: Vec<(Vec<u64>, Vec<u64>)>,
}

/// Idle load (ops/s by [`KINDS`]) and memory of one server.
struct Idle {
    source: &'static str,
    alone: Vec<f64>,
    pair: Vec<f64>,
    rss_alone: Vec<u64>,
    rss_pair: Vec<u64>,
}

fn idle(bench: &mut Bench, uri: &str, idle_secs: u64) -> Idle {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let mut options = mongodb::options::ClientOptions::parse(uri).await.unwrap();
        // This client's own monitoring would count too: one check an hour.
        options.heartbeat_freq = Some(Duration::from_secs(3600));
        options.app_name = Some("failover-bench".to_owned());
        mongodb::Client::with_options(options).unwrap()
    });
    let mut source = "";
    let mut measure = |procs: &[&Proc]| -> (Vec<f64>, Vec<u64>) {
        std::thread::sleep(ms(3000)); // connections and first checks settle
        let (before, _) = rt.block_on(opcounters(&client));
        std::thread::sleep(Duration::from_secs(idle_secs));
        let (after, from) = rt.block_on(opcounters(&client));
        source = from;
        let rates = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a - b) as f64 / idle_secs as f64)
            .collect();
        let rss = procs.iter().map(|p| p.rss_kib().unwrap_or(0)).collect();
        (rates, rss)
    };
    bench.run += 1;
    let collection = format!("idle{}", bench.run);
    let sa = bench.spec(&collection, "a", DEFAULT, 0);
    let sb = bench.spec(&collection, "b", DEFAULT, 0);
    let mut ta = Tail::new(&sa.log);
    let mut a = sa.spawn(uri);
    ta.wait_for(ms(15_000), |l| l.event == "master")
        .expect("a became master");
    let (alone, rss_alone) = measure(&[&a]);
    let mut tb = Tail::new(&sb.log);
    let mut b = sb.spawn(uri);
    tb.wait_for(ms(15_000), |l| l.event == "slave")
        .expect("b follows a");
    let (pair, rss_pair) = measure(&[&a, &b]);
    b.terminate();
    a.terminate();
    let _ = (b.wait_exit(ms(10_000)), a.wait_exit(ms(10_000)));
    Idle {
        source,
        alone,
        pair,
        rss_alone,
        rss_pair,
    }
}

/// The goal of a case, and whether the sorted first-task samples meet it.
fn goal(timings: Timings, stop: Stop, to_task: &[u64]) -> (&'static str, bool) {
    match stop {
        // The original's median crash failover is 5.1 s.
        Stop::Crash if timings.lease.is_none() => {
            ("p95 < 5100 ms", pct(to_task, 95.0) < 5_100_000_000)
        }
        Stop::Crash => ("p95 ≤ 1500 ms", pct(to_task, 95.0) <= 1_500_000_000),
        // One standby check plus 100 ms.
        Stop::Graceful => {
            let bound = (timings.slave + 100) * 1_000_000;
            let max = to_task[to_task.len() - 1];
            if timings.lease.is_none() {
                ("max ≤ 2600 ms", max <= bound)
            } else {
                ("max ≤ 500 ms", max <= bound)
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let runs = env_u64("FAILOVER_BENCH_RUNS").unwrap_or(10).max(1);
    let idle_secs = env_u64("FAILOVER_BENCH_IDLE_SECS").unwrap_or(30).max(1);
    let servers = bench_servers();
    let uris: Vec<String> = servers.iter().map(|s| support::uri_of(*s)).collect();
    let names: Vec<&str> = servers.iter().map(|s| s.name()).collect();
    let seed = Rng::seed_from_clock();
    let mut bench = Bench {
        rng: Rng::new(seed),
        run: 0,
        dir: members::run_dir("latency"),
    };
    println!(
        "failover latency: servers {}, {runs} runs per case and server, logs in {}",
        names.join(", "),
        bench.dir.display()
    );

    let mut cases = Vec::new();
    for (label, timings) in [("default intervals", DEFAULT), ("1 s lease", TUNED)] {
        for (stop, what) in [(Stop::Crash, "crash"), (Stop::Graceful, "graceful")] {
            let mut samples = vec![(Vec::new(), Vec::new()); servers.len()];
            for i in 0..runs {
                for (k, uri) in uris.iter().enumerate() {
                    let (m, t) = bench.failover(uri, timings, stop);
                    println!(
                        "  {}: {what}, {label}, run {}: master after {}, first task after {}",
                        names[k],
                        i + 1,
                        fmt_ms(m),
                        fmt_ms(t)
                    );
                    samples[k].0.push(m);
                    samples[k].1.push(t);
                }
            }
            for (to_master, to_task) in &mut samples {
                to_master.sort_unstable();
                to_task.sort_unstable();
            }
            cases.push(Case {
                label,
                timings,
                stop,
                what,
                samples,
            });
        }
    }

    // Idle load and memory, default intervals, no tasks.
    let idles: Vec<Idle> = uris
        .iter()
        .map(|uri| idle(&mut bench, uri, idle_secs))
        .collect();

    println!();
    println!(
        "| server | stop | intervals | runs | to first task p50 | p95 | max | to `master` p50 | goal |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---|");
    for c in &cases {
        for (k, (to_master, to_task)) in c.samples.iter().enumerate() {
            let (goal, ok) = goal(c.timings, c.stop, to_task);
            println!(
                "| {} | {} | {} (master {} / slave {} / lease {} ms) | {runs} | {} | {} | {} | {} | {goal}: {} |",
                names[k],
                c.what,
                c.label,
                c.timings.master,
                c.timings.slave,
                c.timings.lease(),
                fmt_ms(pct(to_task, 50.0)),
                fmt_ms(pct(to_task, 95.0)),
                fmt_ms(to_task[to_task.len() - 1]),
                fmt_ms(pct(to_master, 50.0)),
                if ok { "met" } else { "MISSED" }
            );
        }
    }
    println!();
    println!("to first task, side by side (same run):");
    let heads: Vec<String> = names.iter().map(|n| format!("{n} p50 | {n} p95")).collect();
    println!("| stop | intervals | runs | {} |", heads.join(" | "));
    println!("|---|---|---:|{}", "---:|".repeat(2 * names.len()));
    for c in &cases {
        let cells: Vec<String> = c
            .samples
            .iter()
            .map(|(_, t)| format!("{} | {}", fmt_ms(pct(t, 50.0)), fmt_ms(pct(t, 95.0))))
            .collect();
        println!(
            "| {} | {} ({} / {} / {} ms) | {runs} | {} |",
            c.what,
            c.label,
            c.timings.master,
            c.timings.slave,
            c.timings.lease(),
            cells.join(" | ")
        );
    }
    println!();
    println!("idle database operations per second, default intervals, {idle_secs} s windows:");
    println!(
        "| server | member | total | {} | counters |",
        KINDS.join(" | ")
    );
    println!("|---|---|---:|{}---|", "---:|".repeat(KINDS.len()));
    for (k, idle) in idles.iter().enumerate() {
        let row = |name: &str, rates: &[f64]| {
            let total: f64 = rates.iter().sum();
            let cells: Vec<String> = rates.iter().map(|r| format!("{r:.3}")).collect();
            println!(
                "| {} | {name} | {total:.3} | {} | {} |",
                names[k],
                cells.join(" | "),
                idle.source
            );
        };
        row("master, alone", &idle.alone);
        let standby: Vec<f64> = idle
            .pair
            .iter()
            .zip(&idle.alone)
            .map(|(p, a)| p - a)
            .collect();
        row("standby (pair − master)", &standby);
    }
    println!();
    for (k, idle) in idles.iter().enumerate() {
        println!(
            "resident memory (VmRSS) on {}: master alone {} KiB; master {} KiB and standby {} KiB in the pair",
            names[k], idle.rss_alone[0], idle.rss_pair[0], idle.rss_pair[1]
        );
    }
}
