//! `failover run` when its supervisor does not run: stopped (SIGSTOP, Ctrl-Z),
//! killed, or blocked on its own output. The supervisors' children append
//! timestamped lines to one shared log, and a checker proves from that log that
//! no two children ever wrote at once.
//!
//! The checker works on intervals: every child writes a line about every 10 ms,
//! stamped with `CLOCK_REALTIME` (`date +%s%N`) before it is appended, so a run of
//! a child is the interval from its first line to its last, in file order (the
//! order of the appends, which is exact) and by stamp. Two runs overlap when
//! their intervals in the file interleave or their stamps do; no margin is
//! needed either way. A child that was still alive but did not write while
//! another one started would be missed, hence the short period (a child is
//! never stopped here, only supervisors are).
//!
//! `chaos_supervised`: three supervisors randomly SIGSTOPped and SIGCONTed,
//! SIGKILLed and restarted, for `FAILOVER_CHAOS_SUPERVISED_SECS` (default 20 s).

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const NAME: &str = "jobs";
/// Starting a process and connecting to the database.
const STARTUP: Duration = Duration::from_secs(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

/// `failover status NAME --json`, parsed (`None`: no lease, or it failed).
fn status(uri: &str, collection: &str) -> Option<serde_json::Value> {
    let out: Output = failover(uri, collection)
        .args(["status", NAME, "--json"])
        .output()
        .expect("the failover binary runs");
    if !out.status.success() {
        return None;
    }
    serde_json::from_str(text(&out.stdout).lines().next()?).ok()
}

/// The child's script: a line `w MEMBER PID EPOCH NANOS` about every 10 ms.
fn writer_script(log: &Path) -> String {
    format!(
        "while :; do echo \"w $FAILOVER_MEMBER $$ $FAILOVER_EPOCH $(date +%s%N)\" >> {log}; sleep 0.01; done",
        log = log.display()
    )
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A `failover run` supervisor whose child writes to the shared log.
struct Supervisor {
    id: String,
    child: Child,
    stderr: PathBuf,
}

impl Supervisor {
    fn start(uri: &str, collection: &str, id: &str, log: &Path, lease: &str) -> Supervisor {
        let dir = log.parent().expect("log in a directory");
        let stderr = dir.join(format!("{id}.stderr"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .expect("stderr file");
        Self::start_with_stderr(uri, collection, id, log, lease, Stdio::from(file), stderr)
    }

    fn start_with_stderr(
        uri: &str,
        collection: &str,
        id: &str,
        log: &Path,
        lease: &str,
        stderr: Stdio,
        stderr_path: PathBuf,
    ) -> Supervisor {
        let child = failover(uri, collection)
            .args(["run", "--name", NAME, "--id", id, "--lease", lease, "--grace", "1s"])
            .args(["--", "sh", "-c", &writer_script(log)])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("failover run starts");
        Supervisor {
            id: id.to_owned(),
            child,
            stderr: stderr_path,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        signal(self.child.id(), sig);
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // A stopped process takes SIGKILL too; SIGCONT for good measure.
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the log.
#[derive(Debug, Clone)]
struct Line {
    member: String,
    pid: u32,
    epoch: u64,
    nanos: u128,
}

fn read_log(log: &Path) -> Vec<Line> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "w" {
                return None;
            }
            Some(Line {
                member: w.next()?.to_owned(),
                pid: w.next()?.parse().ok()?,
                epoch: w.next()?.parse().ok()?,
                nanos: w.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// One run of a child: its lines' first and last positions in the file and stamps.
#[derive(Debug, Clone)]
struct Run {
    member: String,
    pid: u32,
    epoch: u64,
    first_at: usize,
    last_at: usize,
    first_ns: u128,
    last_ns: u128,
    lines: usize,
}

/// The runs of the children, in the order they first wrote.
fn runs(lines: &[Line]) -> Vec<Run> {
    let mut by_pid: HashMap<u32, Run> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        let run = by_pid.entry(l.pid).or_insert_with(|| Run {
            member: l.member.clone(),
            pid: l.pid,
            epoch: l.epoch,
            first_at: i,
            last_at: i,
            first_ns: l.nanos,
            last_ns: l.nanos,
            lines: 0,
        });
        run.last_at = i;
        run.first_ns = run.first_ns.min(l.nanos);
        run.last_ns = run.last_ns.max(l.nanos);
        run.lines += 1;
    }
    let mut runs: Vec<Run> = by_pid.into_values().collect();
    runs.sort_by_key(|r| r.first_at);
    runs
}

/// Every pair of runs that wrote at once: their intervals interleave in the file,
/// or by their stamps. Sorted by first position, runs are exclusive exactly when
/// each one ends (in the file and by stamp) before the next one begins.
fn overlaps(runs: &[Run]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if b.first_at > a.last_at && b.first_ns > a.last_ns {
                continue;
            }
            let by = a.last_ns.saturating_sub(b.first_ns);
            found.push(format!(
                "{} (pid {}, epoch {}) and {} (pid {}, epoch {}) wrote at once for {} ms: \
                 the first wrote lines {}..={} of the log, the second {}..={}",
                a.member,
                a.pid,
                a.epoch,
                b.member,
                b.pid,
                b.epoch,
                by / 1_000_000,
                a.first_at,
                a.last_at,
                b.first_at,
                b.last_at
            ));
        }
    }
    found
}

/// Waits until the log has a line that satisfies `pred`, within `limit`.
fn wait_line(log: &Path, limit: Duration, what: &str, pred: impl Fn(&Line) -> bool) -> Line {
    let end = Instant::now() + limit;
    loop {
        if let Some(l) = read_log(log).into_iter().find(|l| pred(l)) {
            return l;
        }
        assert!(Instant::now() < end, "no {what} within {limit:?}");
        thread::sleep(ms(5));
    }
}

/// A fresh directory for the files of one test.
fn scratch(test: &str, uri: &str) -> PathBuf {
    let server: String = uri
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("supervisor")
        .join(format!("{test}-{}-{server}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

support::server_tests! {
    /// The master's supervisor is SIGSTOPped: its lease runs out, the standby takes
    /// over and starts its child. The stopped supervisor's child must be gone by
    /// then: the two children never write at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_supervisors_child_is_gone_before_the_standby_starts_its_own(uri: String) {
        let c = "sup_stopped";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let a = Supervisor::start(&uri, c, "st-a", &log, "1s");
        let first = wait_line(&log, STARTUP + ms(1000), "line of a's child", |l| l.member == "st-a");
        let b = Supervisor::start(&uri, c, "st-b", &log, "1s");
        thread::sleep(ms(1000)); // b connects and follows

        a.signal(libc::SIGSTOP);
        let second = wait_line(&log, ms(1000 + 800 + 3000), "line of b's child", |l| l.member == "st-b");
        assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
        // Long enough for a child that survived its supervisor's deadline to be
        // seen writing beside b's.
        thread::sleep(ms(1500));
        a.signal(libc::SIGCONT);
        // a comes back as a standby: its child does not start again.
        thread::sleep(ms(1500));
        let lines = read_log(&log);
        let runs = runs(&lines);
        let found = overlaps(&runs);
        assert!(
            found.is_empty(),
            "two children wrote at once:\n{}\nruns: {runs:#?}\na's stderr:\n{}",
            found.join("\n"),
            a.stderr()
        );
        assert_eq!(
            runs.iter().map(|r| r.member.as_str()).collect::<Vec<_>>(),
            ["st-a", "st-b"],
            "a's child, then b's; a stays a standby: {runs:#?}\na's stderr:\n{}",
            a.stderr()
        );
        assert_eq!(status(&uri, c).expect("a lease")["holder"], "st-b");
        drop(b);
    }

    /// A supervisor whose stderr is a full pipe that nobody reads still takes the
    /// lease, renews it, and hands it over on a step-down.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_supervisor_whose_stderr_is_full_still_renews_and_hands_over(uri: String) {
        let c = "sup_stderr";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let (reader, mut writer) = std::io::pipe().expect("a pipe");
        // Fill the pipe, then make it blocking again: the next write blocks.
        let fd = writer.as_raw_fd();
        // SAFETY: fcntl(2) on a descriptor this test owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let chunk = [b'x'; 4096];
        let mut filled = 0;
        while let Ok(n) = writer.write(&chunk) {
            filled += n;
        }
        assert!(filled >= 4096, "the pipe took {filled} bytes");
        // SAFETY: as above.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        let mut a = Supervisor::start_with_stderr(
            &uri, c, "full-a", &log, "1s", Stdio::from(writer), dir.join("none"),
        );
        let first = wait_line(&log, STARTUP + ms(1000), "line of a's child", |l| l.member == "full-a");
        // Renewed: the lease's stamp moves on, under the same epoch.
        let s1 = status(&uri, c).expect("a lease");
        assert_eq!((s1["holder"].as_str(), s1["epoch"].as_u64()), (Some("full-a"), Some(first.epoch)));
        thread::sleep(ms(2500));
        let s2 = status(&uri, c).expect("a lease");
        assert_eq!((s2["holder"].as_str(), s2["epoch"].as_u64(), s2["state"].as_str()),
            (Some("full-a"), Some(first.epoch), Some("held")), "{s2}");
        assert!(s2["version"].as_u64() > s1["version"].as_u64(), "renewed: {s1} then {s2}");
        assert!(!a.exited(), "the supervisor runs");

        // Hands over on a step-down: a standby takes over under the next epoch.
        let _b = Supervisor::start(&uri, c, "full-b", &log, "1s");
        thread::sleep(ms(1000));
        let out = failover(&uri, c)
            .args(["step-down", NAME, "--wait", "--timeout", "20s"])
            .output()
            .expect("step-down runs");
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let second = wait_line(&log, ms(3000), "line of b's child", |l| l.member == "full-b");
        assert!(second.epoch > first.epoch);
        let s3 = status(&uri, c).expect("a lease");
        assert_eq!(s3["holder"], "full-b", "{s3}");
        assert!(!a.exited(), "the supervisor stays a standby");
        drop(reader);
    }
}
