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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const NAME: &str = "jobs";
/// The supervisors' lease.
const LEASE: &str = "1s";
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
    child: Child,
    stderr: PathBuf,
}

impl Supervisor {
    fn start(uri: &str, collection: &str, id: &str, log: &Path) -> Supervisor {
        let dir = log.parent().expect("log in a directory");
        let stderr = dir.join(format!("{id}.stderr"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .expect("stderr file");
        Self::start_with_stderr(uri, collection, id, log, Stdio::from(file), stderr, false)
    }

    /// As a shell starts a job: in a process group of its own, which a terminal's
    /// Ctrl-Z stops as a whole.
    fn start_job(uri: &str, collection: &str, id: &str, log: &Path) -> Supervisor {
        let dir = log.parent().expect("log in a directory");
        let stderr = dir.join(format!("{id}.stderr"));
        let file = fs::File::create(&stderr).expect("stderr file");
        Self::start_with_stderr(uri, collection, id, log, Stdio::from(file), stderr, true)
    }

    fn start_with_stderr(
        uri: &str,
        collection: &str,
        id: &str,
        log: &Path,
        stderr: Stdio,
        stderr_path: PathBuf,
        job: bool,
    ) -> Supervisor {
        let mut command = failover(uri, collection);
        if job {
            command.process_group(0);
        }
        let child = command
            .args([
                "run", "--name", NAME, "--id", id, "--lease", LEASE, "--grace", "1s",
            ])
            .args(["--", "sh", "-c", &writer_script(log)])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("failover run starts");
        Supervisor {
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

/// The runs of the children, in the order they first wrote. A run is one process
/// of one member under one epoch: pids are recycled in a long run.
fn runs(lines: &[Line]) -> Vec<Run> {
    let mut by_pid: HashMap<(String, u32, u64), Run> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        let key = (l.member.clone(), l.pid, l.epoch);
        let run = by_pid.entry(key).or_insert_with(|| Run {
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
        let a = Supervisor::start(&uri, c, "st-a", &log);
        let first = wait_line(&log, STARTUP + ms(1000), "line of a's child", |l| l.member == "st-a");
        let b = Supervisor::start(&uri, c, "st-b", &log);
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

    /// Ctrl-Z: the terminal stops the supervisor's job (SIGTSTP to its process
    /// group). The command is not in that group: its leash kills it at the deadline,
    /// before the standby starts its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ctrl_z_of_the_supervisors_job_stops_its_child_before_the_standby_starts(uri: String) {
        let c = "sup_ctrl_z";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let a = Supervisor::start_job(&uri, c, "z-a", &log);
        let first = wait_line(&log, STARTUP + ms(1000), "line of a's child", |l| l.member == "z-a");
        let b = Supervisor::start(&uri, c, "z-b", &log);
        thread::sleep(ms(1000));

        let job = libc::pid_t::try_from(a.child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(-job, libc::SIGTSTP) }, 0, "Ctrl-Z");
        let second = wait_line(&log, ms(1000 + 800 + 3000), "line of b's child", |l| l.member == "z-b");
        assert!(second.epoch > first.epoch);
        thread::sleep(ms(1500));
        // fg: a comes back as a standby.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(-job, libc::SIGCONT) }, 0, "fg");
        thread::sleep(ms(1500));
        let runs = runs(&read_log(&log));
        let found = overlaps(&runs);
        assert!(found.is_empty(), "two children wrote at once:\n{}\na's stderr:\n{}", found.join("\n"), a.stderr());
        assert_eq!(runs.iter().map(|r| r.member.as_str()).collect::<Vec<_>>(), ["z-a", "z-b"], "{runs:#?}");
        assert!(a.stderr().contains("the leash killed"), "{}", a.stderr());
        drop(b);
    }

    /// The leash is SIGKILLed: the supervisor kills the command (it would run
    /// without a deadline) and starts it again under a new leash, still master.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_leash_takes_the_command_along_and_a_new_one_starts(uri: String) {
        let c = "sup_leash_killed";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let a = Supervisor::start(&uri, c, "k-a", &log);
        let first = wait_line(&log, STARTUP + ms(1000), "line of a's child", |l| l.member == "k-a");
        let group = group_of(first.pid);
        let cmdline = fs::read_to_string(format!("/proc/{group}/cmdline")).unwrap_or_default();
        assert!(cmdline.contains("__leash"), "the group's leader is the leash: {cmdline:?}");

        signal(group, libc::SIGKILL);
        let second = wait_line(&log, ms(2000), "a new child", |l| l.pid != first.pid);
        assert_eq!((second.member.as_str(), second.epoch), ("k-a", first.epoch), "same term");
        assert!(gone(first.pid), "the old command was killed");
        let found = overlaps(&runs(&read_log(&log)));
        assert!(found.is_empty(), "{}", found.join("\n"));
        assert!(a.stderr().contains("ended while the lease is still valid"), "{}", a.stderr());
    }

    /// The leash alone is SIGSTOPped and the supervisor is cut off from the
    /// database: the supervisor, which still runs, kills the group (the stopped
    /// leash too) at its own deadline, before the standby starts its child.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_leash_leaves_the_kill_to_the_running_supervisor(uri: String) {
        let c = "sup_leash_stopped";
        let dir = scratch(c, &uri);
        let log = dir.join("child.log");
        let proxy = support::proxy::FaultProxy::in_front_of(&uri).await;
        let a = Supervisor::start(&proxy.proxied(&uri), c, "ls-a", &log);
        let first = wait_line(&log, STARTUP + ms(1000), "line of a's child", |l| l.member == "ls-a");
        let _b = Supervisor::start(&uri, c, "ls-b", &log);
        thread::sleep(ms(1000));
        let leash = group_of(first.pid);
        signal(leash, libc::SIGSTOP);
        proxy.set(support::proxy::Fault::Blackhole);
        let second = wait_line(&log, ms(1000 + 800 + 3000), "line of b's child", |l| l.member == "ls-b");
        assert!(second.epoch > first.epoch);
        thread::sleep(ms(1000));
        let runs = runs(&read_log(&log));
        let found = overlaps(&runs);
        assert!(found.is_empty(), "two children wrote at once:\n{}\na's stderr:\n{}", found.join("\n"), a.stderr());
        assert!(gone(first.pid) && gone(leash), "the command and its stopped leash were killed");
        assert!(a.stderr().contains("the lease was lost"), "{}", a.stderr());
        proxy.set(support::proxy::Fault::None);
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
            &uri, c, "full-a", &log, Stdio::from(writer), dir.join("none"), false,
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
        let _b = Supervisor::start(&uri, c, "full-b", &log);
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

/// A small xorshift generator: the chaos run's choices, replayable by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Whether the child of `run` still runs: its pid is alive (not a zombie) with
/// the run's epoch in its environment (pids are recycled in a long run).
fn still_runs(run: &Run) -> bool {
    let environ = fs::read(format!("/proc/{}/environ", run.pid)).unwrap_or_default();
    let epoch = format!("FAILOVER_EPOCH={}", run.epoch);
    !gone(run.pid)
        && environ
            .split(|b| *b == 0)
            .any(|var| var == epoch.as_bytes())
}

/// The process group of running process `pid`.
fn group_of(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
        .and_then(|g| g.parse().ok())
        .expect("its process group")
}

/// Whether process `pid` is gone (or a zombie, which runs nothing any more).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Three `failover run` supervisors whose children append to one log, randomly
/// SIGSTOPped and SIGCONTed (shorter and longer than a lease), SIGKILLed and
/// restarted; then the checker: never two children writing at once, and a
/// child writing again once the faults stop.
#[test]
fn chaos_supervised() {
    const SUPERVISORS: usize = 3;
    let secs = env_u64("FAILOVER_CHAOS_SUPERVISED_SECS").unwrap_or(20);
    let seed = env_u64("FAILOVER_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let mut rng = Rng(seed);
    let uri = support::mongodb_uri();
    let c = "sup_chaos";
    let dir = scratch(c, &uri);
    let log = dir.join("child.log");
    println!(
        "chaos_supervised: {secs} s, seed {seed} (FAILOVER_CHAOS_SEED replays the choices), files in {}",
        dir.display()
    );
    let ids: Vec<String> = (0..SUPERVISORS).map(|i| format!("chaos-{i}")).collect();
    let mut sups: Vec<Option<Supervisor>> = ids
        .iter()
        .map(|id| Some(Supervisor::start(&uri, c, id, &log)))
        .collect();
    wait_line(&log, STARTUP + ms(1000), "line of a child", |_| true);
    // Stopped supervisors and when they get SIGCONT; killed ones and when they
    // are started again.
    let mut resume: Vec<Option<Instant>> = vec![None; SUPERVISORS];
    let mut restart: Vec<Option<Instant>> = vec![None; SUPERVISORS];
    let (mut stops, mut master_stops, mut kills, mut master_kills) = (0_u64, 0_u64, 0_u64, 0_u64);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut next_action = Instant::now() + ms(rng.range(300, 1500));
    while Instant::now() < end {
        let now = Instant::now();
        for i in 0..SUPERVISORS {
            if resume[i].is_some_and(|t| t <= now) {
                resume[i] = None;
                if let Some(s) = &sups[i] {
                    s.signal(libc::SIGCONT);
                }
            }
            if restart[i].is_some_and(|t| t <= now) {
                restart[i] = None;
                sups[i] = Some(Supervisor::start(&uri, c, &ids[i], &log));
            }
        }
        if now >= next_action {
            next_action = now + ms(rng.range(300, 1500));
            // The master: whoever wrote last, most of the time; else anyone.
            let last = read_log(&log).last().map(|l| l.member.clone());
            let master = last.and_then(|m| ids.iter().position(|id| *id == m));
            let target = match master {
                Some(m) if rng.range(0, 9) < 7 => m,
                _ => rng.range(0, SUPERVISORS as u64 - 1) as usize,
            };
            let running = (0..SUPERVISORS)
                .filter(|&i| sups[i].is_some() && resume[i].is_none())
                .count();
            let is_master = Some(target) == master;
            if sups[target].is_some() && resume[target].is_none() && running > 1 {
                if rng.range(0, 2) < 2 {
                    // SIGSTOP for less than a lease, or for well past it.
                    let pause = ms(rng.range(200, 3000));
                    sups[target]
                        .as_ref()
                        .expect("running")
                        .signal(libc::SIGSTOP);
                    resume[target] = Some(now + pause);
                    stops += 1;
                    master_stops += u64::from(is_master);
                } else {
                    let mut s = sups[target].take().expect("running");
                    s.signal(libc::SIGKILL);
                    let _ = s.child.wait();
                    drop(s);
                    restart[target] = Some(now + ms(rng.range(0, 1000)));
                    kills += 1;
                    master_kills += u64::from(is_master);
                }
            }
        }
        thread::sleep(ms(20));
    }
    // The faults stop: everyone runs again, and a child writes again.
    for i in 0..SUPERVISORS {
        if let Some(s) = &sups[i] {
            s.signal(libc::SIGCONT);
        } else {
            sups[i] = Some(Supervisor::start(&uri, c, &ids[i], &log));
        }
    }
    let lines_before = read_log(&log).len();
    let end = Instant::now() + ms(1000 + 800 + 5000);
    while read_log(&log).len() <= lines_before + 5 {
        assert!(
            Instant::now() < end,
            "no child writes once the faults stopped"
        );
        thread::sleep(ms(20));
    }
    // SIGKILL every supervisor: their leashes and the kernel take the children.
    for s in sups.iter_mut().flatten() {
        s.signal(libc::SIGKILL);
        let _ = s.child.wait();
    }
    thread::sleep(ms(500));
    let lines = read_log(&log);
    let runs = runs(&lines);
    let found = overlaps(&runs);
    let mut epochs: Vec<u64> = runs.iter().map(|r| r.epoch).collect();
    epochs.dedup();
    let gaps: Vec<u128> = runs
        .windows(2)
        .filter(|w| w[0].member != w[1].member)
        .map(|w| w[1].first_ns.saturating_sub(w[0].last_ns) / 1_000_000)
        .collect();
    let min_gap = gaps.iter().min().copied();
    println!(
        "chaos_supervised: {secs} s; {stops} SIGSTOPs ({master_stops} of the master), {kills} SIGKILLs \
         ({master_kills} of the master); {} runs of a child under {} terms, {} hand-overs between \
         supervisors (smallest gap between two children: {min_gap:?} ms); {} lines; {} violations",
        runs.len(),
        epochs.len(),
        gaps.len(),
        lines.len(),
        found.len()
    );
    let alive: Vec<&Run> = runs.iter().filter(|r| still_runs(r)).collect();
    assert!(
        found.is_empty(),
        "two children wrote at once (seed {seed}):\n{}",
        found.join("\n")
    );
    assert!(
        alive.is_empty(),
        "children outlived their SIGKILLed supervisors: {alive:?}"
    );
    assert!(stops + kills > 0 || secs < 2, "no fault was made");
    assert!(
        gaps.len() as u64 >= 1 || secs < 5,
        "no hand-over in {secs} s"
    );
}
