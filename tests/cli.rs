//! The `failover` command-line tool as a process, against the test servers
//! (issue 11): `status --json`, `watch`, `step-down --wait`, and `run` with two
//! supervisors, a SIGKILLed master, a step-down, and the child's exit status.
//!
//! Wall-clock time with a 1 s lease; each bound is the protocol's (a lease, a
//! renewal period, a standby check) plus an honest margin for starting a process
//! and connecting on a shared 2-core machine.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use failover::{Intervals, Member, Options, State};

const NAME: &str = "jobs";
const MASTER_MS: u64 = 600;
const SLAVE_MS: u64 = 800;
const LEASE_MS: u64 = 1000;
/// Starting a process and connecting to the database.
const STARTUP: Duration = Duration::from_secs(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The tool, configured for `collection` of the test database.
fn failover(uri: &str, collection: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_failover"));
    command
        .env("MONGODB_URI", uri)
        .args(["--collection", collection])
        .stdin(Stdio::null());
    command
}

fn run_to_end(command: &mut Command) -> (Output, Duration) {
    let started = Instant::now();
    let output = command.output().expect("the failover binary runs");
    (output, started.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A library member with the tests' timings.
async fn member(uri: &str, collection: &str, id: &str) -> Member {
    let options = Options::new()
        .connect_string(uri)
        .collection(collection)
        .member_id(id)
        .intervals(Intervals {
            init: Duration::ZERO,
            master: ms(MASTER_MS),
            slave: ms(SLAVE_MS),
            ticking: ms(MASTER_MS),
            error: ms(500),
        })
        .lease(ms(LEASE_MS));
    Member::start(NAME, options).await.expect("member starts")
}

/// The lines a process prints on stdout, as they come.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(stream: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// The next line that satisfies `pred`, within `limit`.
    fn expect(&self, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {what} within {limit:?}; lines seen: {seen:#?}"),
            }
        }
    }
}

/// A `failover run` supervisor whose child logs to a file.
struct Supervisor {
    child: Child,
    stderr: PathBuf,
}

impl Supervisor {
    /// Starts `failover run` for member `id`; its child appends
    /// `start <epoch> <pid> <member>` to `log` when it starts and
    /// `term <epoch> <pid>` when it gets SIGTERM (then exits 0).
    fn start(uri: &str, collection: &str, id: &str, log: &Path, extra: &[&str]) -> Supervisor {
        let dir = log.parent().expect("log in a directory");
        let stderr = dir.join(format!("{id}.stderr"));
        let script = format!(
            "echo \"start $FAILOVER_EPOCH $$ $FAILOVER_MEMBER $FAILOVER_SUBSYSTEM\" >> {log}; \
             trap 'echo \"term $FAILOVER_EPOCH $$\" >> {log}; exit 0' TERM; \
             while true; do sleep 0.02; done",
            log = log.display()
        );
        let child = failover(uri, collection)
            .args([
                "run", "--name", NAME, "--id", id, "--lease", "1s", "--grace", "2s",
            ])
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("failover run starts");
        Supervisor { child, stderr }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill supervisor");
    }

    /// Waits for the supervisor to exit, at most `limit`.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "the supervisor did not exit within {limit:?}; its stderr:\n{}",
                self.stderr()
            );
            thread::sleep(ms(10));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's line in the log: (event, epoch, pid, member).
#[derive(Debug, Clone, PartialEq)]
struct Logged {
    event: String,
    epoch: u64,
    pid: i32,
    member: String,
}

fn logged(log: &Path) -> Vec<Logged> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Logged {
                event: w.next()?.to_owned(),
                epoch: w.next()?.parse().ok()?,
                pid: w.next()?.parse().ok()?,
                member: w.next().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// Polls the log until a line satisfies `pred`, within `limit`.
fn wait_logged(log: &Path, limit: Duration, what: &str, pred: impl Fn(&Logged) -> bool) -> Logged {
    let end = Instant::now() + limit;
    loop {
        if let Some(l) = logged(log).into_iter().find(|l| pred(l)) {
            return l;
        }
        assert!(
            Instant::now() < end,
            "no {what} within {limit:?}; the log: {:#?}",
            logged(log)
        );
        thread::sleep(ms(5));
    }
}

/// Whether process `pid` is gone (or a zombie, which runs nothing any more).
fn gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// A fresh directory for the files of one test on one server.
fn scratch(test: &str, uri: &str) -> PathBuf {
    let server: String = uri
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(format!("{test}-{}-{server}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

support::server_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_reports_a_running_supervisor_as_json_and_as_a_table(uri: String) {
        let c = "cli_status";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let _a = Supervisor::start(&uri, c, "cli-a", &log, &[]);
        let started = wait_logged(&log, STARTUP + ms(LEASE_MS), "child start", |l| l.event == "start");

        let (out, _) = run_to_end(failover(&uri, c).args(["status", "--json"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let s = &lines[0];
        assert_eq!(s["name"], NAME);
        assert_eq!(s["holder"], "cli-a");
        assert_eq!(s["epoch"], started.epoch);
        assert_eq!(s["state"], "held");
        let left = s["expires_in_ms"].as_i64().expect("expires_in_ms");
        assert!(left > 0 && left <= LEASE_MS as i64, "{s}");
        assert_eq!(s["lease_ms"], LEASE_MS);
        assert_eq!(s["step_down"], false);
        assert_eq!(s["queue_depth"], serde_json::Value::Null, "no durable queue: {s}");

        let (out, _) = run_to_end(failover(&uri, c).args(["status", NAME]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("cli-a") && table.contains("held"), "{table}");

        let (out, _) = run_to_end(failover(&uri, c).args(["status", "nosuch"]));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("no lease"), "{}", text(&out.stderr));
    }

    /// The durable queue's depth: tasks submitted by a producer, none worked (the
    /// member holding the lease is not a managed one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_reports_the_durable_queue_depth(uri: String) {
        let c = "cli_depth";
        let a = member(&uri, c, "cli-a").await;
        a.wait_for_master().await.expect("a leads");
        let options = Options::new().connect_string(&uri).collection(c);
        let queue = failover::Queue::connect(NAME, options).await.expect("producer");
        queue.submit_many([1_u32, 2, 3]).await.expect("submitted");

        let (out, _) = run_to_end(failover(&uri, c).args(["status", "--json"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["queue_depth"], 3, "{}", lines[0]);

        let (out, _) = run_to_end(failover(&uri, c).args(["status", NAME]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        assert!(table.lines().next().is_some_and(|h| h.contains("QUEUE")), "{table}");
        assert!(table.lines().nth(1).is_some_and(|row| row.split_whitespace().any(|cell| cell == "3")), "{table}");
        a.shutdown().await.expect("shutdown");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_prints_a_line_for_each_change_of_a_failover(uri: String) {
        let c = "cli_watch";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        // Supervisors as the members: a crash is a SIGKILL of a process.
        let mut a = Supervisor::start(&uri, c, "w-a", &log, &[]);
        let first = wait_logged(&log, STARTUP + ms(LEASE_MS), "a's child", |l| l.event == "start").epoch;
        let mut b = Supervisor::start(&uri, c, "w-b", &log, &[]);

        let mut watch = failover(&uri, c)
            .args(["watch", NAME, "--interval", "100ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Lines::of(watch.stdout.take().unwrap());
        let line = lines.expect(STARTUP, "the holder", |l| l.contains("held by w-a"));
        assert!(line.contains(&format!("epoch {first}")), "{line}");
        thread::sleep(ms(500)); // b follows

        // A crash: the watch sees the lease expire, then the new master.
        a.signal(libc::SIGKILL);
        let crashed = Instant::now();
        lines.expect(ms(LEASE_MS + 1000), "the expiry", |l| l.contains("expired: w-a"));
        let line = lines.expect(ms(LEASE_MS + SLAVE_MS + 1000), "the new master", |l| {
            l.contains("new master w-b")
        });
        assert!(line.contains(&format!("epoch {}", first + 1)), "{line}");
        assert!(crashed.elapsed() <= ms(LEASE_MS + SLAVE_MS + 1000));
        assert_eq!(a.wait(ms(1000)).code(), None);

        // A hand-over: the release.
        b.signal(libc::SIGTERM);
        lines.expect(ms(3000), "the release", |l| l.contains("released by w-b"));
        assert_eq!(b.wait(ms(3000)).code(), Some(0));
        let _ = watch.kill();
        let _ = watch.wait();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn step_down_wait_returns_with_a_new_epoch_within_one_standby_check(uri: String) {
        let c = "cli_step_down";
        let a = member(&uri, c, "s-a").await;
        let first = a.wait_for_master().await.unwrap();
        let b = member(&uri, c, "s-b").await;
        b.wait_for_state(State::Slave).await.unwrap();

        let mut step_down = failover(&uri, c)
            .args(["step-down", NAME, "--wait", "--timeout", "20s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::of(step_down.stdout.take().unwrap());
        let asked = lines.expect(STARTUP, "the request", |l| l.starts_with("asked"));
        let asked_at = Instant::now();
        assert_eq!(asked, format!("asked s-a (epoch {first}) to step down from {NAME}"));
        // The master acts at its next renewal, the standby takes over at its next
        // check; the tool reads the lease every 100 ms (after connecting again).
        let limit = ms(MASTER_MS + SLAVE_MS + 1000);
        let new = lines.expect(limit, "the new epoch", |l| l.starts_with("new master"));
        assert_eq!(new, format!("new master s-b (epoch {})", first + 1));
        assert!(asked_at.elapsed() <= limit);
        let status = step_down.wait().unwrap();
        let mut stderr = String::new();
        step_down.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(status.success(), "{stderr}");
        assert_eq!(b.wait_for_master().await.unwrap(), first + 1);
        assert_eq!(a.state(), State::Slave, "the old master stays a standby");

        // Nothing to step down once the lease is released: exit status 3.
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        let (out, _) = run_to_end(failover(&uri, c).args(["step-down", NAME]));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("nobody holds the lease"), "{}", text(&out.stderr));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_supervisor_takes_its_child_along_and_the_other_one_takes_over(uri: String) {
        let c = "cli_run_kill";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let mut a = Supervisor::start(&uri, c, "r-a", &log, &[]);
        let first = wait_logged(&log, STARTUP + ms(LEASE_MS), "a's child", |l| l.event == "start");
        assert_eq!(first.member, "r-a");
        let mut b = Supervisor::start(&uri, c, "r-b", &log, &[]);
        // b is a standby: its child does not start while a leads.
        let (out, _) = run_to_end(failover(&uri, c).args(["status", NAME, "--json"]));
        assert_eq!(json_lines(&out.stdout)[0]["holder"], "r-a");
        thread::sleep(ms(LEASE_MS));
        assert_eq!(logged(&log).len(), 1, "only the master's child runs: {:?}", logged(&log));

        a.signal(libc::SIGKILL);
        let killed = Instant::now();
        while !gone(first.pid) {
            assert!(
                killed.elapsed() < ms(LEASE_MS),
                "the child of the killed supervisor still runs after a lease"
            );
            thread::sleep(ms(2));
        }
        let second = wait_logged(&log, ms(LEASE_MS + SLAVE_MS + 1500), "b's child", |l| {
            l.event == "start" && l.member == "r-b"
        });
        assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
        assert!(!gone(second.pid));
        assert_eq!(a.wait(ms(1000)).code(), None, "SIGKILLed");

        // SIGTERM to the master's supervisor: its child gets SIGTERM, the lease is
        // released, and the supervisor exits 0.
        b.signal(libc::SIGTERM);
        assert_eq!(b.wait(ms(5000)).code(), Some(0), "{}", b.stderr());
        assert!(logged(&log).iter().any(|l| l.event == "term" && l.pid == second.pid));
        assert!(gone(second.pid));
        let (out, _) = run_to_end(failover(&uri, c).args(["status", NAME, "--json"]));
        assert_eq!(json_lines(&out.stdout)[0]["state"], "released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_supervisor_cut_off_from_the_database_kills_its_child_before_any_takeover(uri: String) {
        let c = "cli_run_cut_off";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let proxy = support::proxy::FaultProxy::in_front_of(&uri).await;
        let _a = Supervisor::start(&proxy.proxied(&uri), c, "x-a", &log, &[]);
        let first = wait_logged(&log, STARTUP + ms(LEASE_MS), "a's child", |l| l.event == "start");
        let _b = Supervisor::start(&uri, c, "x-b", &log, &[]);
        thread::sleep(ms(500)); // b follows
        proxy.set(support::proxy::Fault::Blackhole);
        let cut = Instant::now();
        // The log first, then the process: a start of b's child seen before a's
        // child is seen gone is an overlap for certain.
        loop {
            let b_started = logged(&log).iter().any(|l| l.member == "x-b");
            if gone(first.pid) {
                break;
            }
            assert!(!b_started, "b's child started while a's child still ran");
            // a stops acting at its deadline, 90 % of a lease after its last renewal.
            assert!(cut.elapsed() < ms(LEASE_MS), "a's child still runs a lease after the cut");
            thread::sleep(ms(2));
        }
        assert!(!logged(&log).iter().any(|l| l.event == "term"), "killed at once, no SIGTERM");
        let second = wait_logged(&log, ms(LEASE_MS + SLAVE_MS + 1500), "b's child", |l| l.member == "x-b");
        assert!(second.epoch > first.epoch);
        proxy.set(support::proxy::Fault::None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period(uri: String) {
        let c = "cli_run_grace";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let script = format!(
            "echo \"start $FAILOVER_EPOCH $$\" >> {log}; trap '' TERM; while true; do sleep 0.02; done",
            log = log.display()
        );
        let mut a = Supervisor {
            child: failover(&uri, c)
                .args(["run", "--name", NAME, "--lease", "1s", "--grace", "700ms", "--", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("a.stderr")).unwrap())
                .spawn()
                .unwrap(),
            stderr: dir.join("a.stderr"),
        };
        let first = wait_logged(&log, STARTUP + ms(LEASE_MS), "the child", |l| l.event == "start");
        a.signal(libc::SIGTERM);
        let asked = Instant::now();
        assert_eq!(a.wait(ms(5000)).code(), Some(0), "{}", a.stderr());
        let took = asked.elapsed();
        assert!(took >= ms(700), "the grace period was cut short: {took:?}");
        assert!(gone(first.pid), "the child was killed");
        assert!(a.stderr().contains("did not stop within --grace"), "{}", a.stderr());
        // Held for the grace period (renewed meanwhile), released after the kill.
        let (out, _) = run_to_end(failover(&uri, c).args(["status", NAME, "--json"]));
        let s = &json_lines(&out.stdout)[0];
        assert_eq!((s["state"].as_str(), s["epoch"].as_u64()), (Some("released"), Some(first.epoch)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_down_stops_the_child_gracefully_and_the_standby_runs_its_own(uri: String) {
        let c = "cli_run_step_down";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let _a = Supervisor::start(&uri, c, "d-a", &log, &[]);
        let first = wait_logged(&log, STARTUP + ms(LEASE_MS), "a's child", |l| l.event == "start");
        let _b = Supervisor::start(&uri, c, "d-b", &log, &[]);
        thread::sleep(ms(500)); // b connects and follows
        let (out, _) = run_to_end(failover(&uri, c).args(["step-down", NAME, "--wait", "--timeout", "20s"]));
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        // a's child got SIGTERM before the hand-over; b's child runs under the new epoch.
        let term = wait_logged(&log, ms(1000), "a's child's SIGTERM", |l| l.event == "term");
        assert_eq!((term.pid, term.epoch), (first.pid, first.epoch));
        let second = wait_logged(&log, ms(2000), "b's child", |l| l.event == "start" && l.member == "d-b");
        assert!(second.epoch > first.epoch);
        let lines = logged(&log);
        let term_at = lines.iter().position(|l| l.event == "term");
        let start_at = lines.iter().position(|l| l.member == "d-b");
        assert!(term_at < start_at, "the old child stopped before the new one started: {lines:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_exits_with_the_status_of_its_child_and_releases(uri: String) {
        let c = "cli_run_exit";
        let (out, _) = run_to_end(failover(&uri, c).args([
            "run", "--name", NAME, "--id", "e-a", "--lease", "1s", "--",
            "sh", "-c", "test \"$FAILOVER_SUBSYSTEM/$FAILOVER_MEMBER\" = jobs/e-a && test -n \"$FAILOVER_EPOCH\" && exit 7",
        ]));
        assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
        let (out, _) = run_to_end(failover(&uri, c).args(["status", NAME, "--json"]));
        assert_eq!(json_lines(&out.stdout)[0]["state"], "released");

        let (out, _) = run_to_end(failover(&uri, c).args([
            "run", "--name", NAME, "--lease", "1s", "--", "sh", "-c", "kill -9 $$",
        ]));
        assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));

        let (out, _) = run_to_end(failover(&uri, c).args([
            "run", "--name", NAME, "--lease", "1s", "--", "/nonexistent/command",
        ]));
        assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("cannot run"), "{}", text(&out.stderr));

        // --restart: started again while still master, until stopped.
        let dir = scratch(c, &uri);
        let count = dir.join("count");
        let script = format!("echo \"start $FAILOVER_EPOCH $$\" >> {}; sleep 0.1", count.display());
        let mut restarting = Supervisor {
            child: failover(&uri, c)
                .args(["run", "--name", "restart", "--lease", "1s", "--restart", "--", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("restart.stderr")).unwrap())
                .spawn()
                .unwrap(),
            stderr: dir.join("restart.stderr"),
        };
        let third = wait_logged(&count, STARTUP + ms(2000), "a third start", |_| logged(&count).len() >= 3);
        let runs = logged(&count);
        assert!(runs.iter().all(|r| r.epoch == third.epoch), "one term: {runs:?}");
        restarting.signal(libc::SIGTERM);
        assert_eq!(restarting.wait(ms(5000)).code(), Some(0), "{}", restarting.stderr());
    }
}
