//! Member processes for the tests and benchmarks that need real processes (to
//! SIGKILL, SIGSTOP, SIGTERM): spawning `failover-member`
//! (`tests/bin/member.rs`), signalling it, always reaping it, and reading the
//! logs it writes. Use it with `mod members;` (or `#[path]` from a bench).
#![allow(dead_code)] // every user compiles the whole module but uses only part of it

mod clock;
pub use clock::mono_ns;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The member binary, built by cargo for this package's tests and benches.
pub const MEMBER_BIN: &str = env!("CARGO_BIN_EXE_failover-member");

/// Debian's libfaketime (package `faketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Makes sure libfaketime is there: when it is missing and this process runs as
/// root with Debian's apt (a fresh machine), installs the `faketime` package once,
/// as the harness installs the test server's Python packages. Panics, saying what
/// to install, when it is still missing: the tests that skew clocks must never
/// pass without skewing them.
pub fn require_libfaketime() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !Path::new(LIBFAKETIME).exists() && root && Path::new("/usr/bin/apt-get").exists() {
            eprintln!("installing Debian's faketime package for the clock-skew tests");
            let apt = |args: &[&str]| {
                std::process::Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !apt(&["install", "-y", "-qq", "faketime"]) {
                apt(&["update", "-qq"]);
                apt(&["install", "-y", "-qq", "faketime"]);
            }
        }
    });
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package \
         (`apt-get install -y faketime`; .ci/run does it) — this test skews members' \
         wall clocks with it and must not run without"
    );
}

/// The wall clock in milliseconds since 1970.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The short timings of the chaos and fencing tests: a 500 ms lease.
pub const SHORT_TIMINGS: Timings = Timings {
    master: 200,
    slave: 250,
    lease: Some(500),
    ticking: 300,
    error: 300,
};

/// A member's timings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub master: u64,
    pub slave: u64,
    /// `None`: the library's default, 1.5 × master.
    pub lease: Option<u64>,
    pub ticking: u64,
    pub error: u64,
}

impl Timings {
    /// The lease in force.
    pub fn lease(&self) -> u64 {
        self.lease.unwrap_or(self.master * 3 / 2)
    }

    /// The step-down margin: a tenth of the lease.
    pub fn margin(&self) -> u64 {
        self.lease() / 10
    }
}

/// How to start one member.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub id: String,
    pub collection: String,
    pub timings: Timings,
    pub tasks: u64,
    pub task_ms: u64,
    pub fence: bool,
    /// The work blocks its thread (`--blocking`).
    pub blocking: bool,
    /// Keys repeat (`n % 10`) and tasks carry their feed sequence number
    /// (`--sequenced`).
    pub sequenced: bool,
    /// Works the durable queue (`--durable`) and is fed by a producer.
    pub durable: bool,
    /// `FAKETIME` for libfaketime (e.g. `+5s`); the monotonic clock is left alone.
    pub faketime: Option<String>,
    pub log: PathBuf,
}

impl Spec {
    /// Starts the member against `uri`; its stderr goes to `<log>.stderr`.
    pub fn spawn(&self, uri: &str) -> Proc {
        self.spawn_with(uri, &[])
    }

    /// Starts the member against `uri` with `extra` arguments (such as a live
    /// feed's `--feed-rate`); its stderr goes to `<log>.stderr`.
    pub fn spawn_with(&self, uri: &str, extra: &[String]) -> Proc {
        let t = self.timings;
        let mut cmd = Command::new(MEMBER_BIN);
        cmd.args(extra);
        cmd.env("MONGODB_URI", uri)
            .args(["--name", &self.name, "--id", &self.id])
            .args(["--collection", &self.collection])
            .arg("--log")
            .arg(&self.log)
            .args(["--master-ms", &t.master.to_string()])
            .args(["--slave-ms", &t.slave.to_string()])
            .args(["--ticking-ms", &t.ticking.to_string()])
            .args(["--error-ms", &t.error.to_string()])
            .args(["--tasks", &self.tasks.to_string()])
            .args(["--task-ms", &self.task_ms.to_string()]);
        if let Some(lease) = t.lease {
            cmd.args(["--lease-ms", &lease.to_string()]);
        }
        if self.fence {
            cmd.arg("--fence");
        }
        if self.blocking {
            cmd.arg("--blocking");
        }
        if self.sequenced {
            cmd.arg("--sequenced");
        }
        if self.durable {
            cmd.arg("--durable");
        }
        if let Some(offset) = &self.faketime {
            require_libfaketime();
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.with_extension("stderr"))
            .expect("cannot open the member's stderr file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe. The member dies with the thread that
        // started it, even if this process is killed before the guard's Drop runs.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MEMBER_BIN}: {e}"));
        Proc {
            pid: child.id(),
            id: self.id.clone(),
            child: Some(child),
            stopped: false,
        }
    }
}

/// A running member process. Dropping it SIGKILLs and reaps it, so no test leaves
/// a process behind, whatever fails. It signals only its own child, by PID; the
/// PID cannot be reused before the child is reaped here.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub id: String,
    child: Option<Child>,
    stopped: bool,
}

impl Proc {
    fn send(&self, sig: libc::c_int) {
        if self.child.is_some() {
            // SAFETY: plain kill(2) on our own unreaped child.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
        }
    }

    /// Whether it has been neither reaped nor SIGSTOPped.
    pub fn running(&self) -> bool {
        self.child.is_some() && !self.stopped
    }

    /// SIGSTOP.
    pub fn pause(&mut self) {
        self.send(libc::SIGSTOP);
        self.stopped = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.send(libc::SIGCONT);
        self.stopped = false;
    }

    /// SIGTERM (a graceful stop); see [`Proc::wait_exit`].
    pub fn terminate(&mut self) {
        if self.stopped {
            self.resume();
        }
        self.send(libc::SIGTERM);
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own unreaped child.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Waits up to `limit` for the process to exit; reaps it. `None`: still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Has it exited (reaped now if so)?
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(child) => match child.try_wait() {
                Ok(Some(_)) => {
                    self.child = None;
                    true
                }
                _ => false,
            },
        }
    }

    /// Resident memory (VmRSS) in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line of a member's log (see tests/bin/member.rs):
/// `<mono_ns> <member_id> <event> <epoch|-> <key|-> <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub t: u64,
    pub member: String,
    pub event: String,
    pub epoch: Option<u64>,
    pub key: Option<String>,
    pub detail: String,
    /// Which process of this member wrote it: 0 for the first, +1 at every `start`.
    pub instance: u32,
}

impl Line {
    /// `name=value` from the detail.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.detail
            .split(' ')
            .find_map(|w| w.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }

    /// The key as a number.
    pub fn key_num(&self) -> Option<u64> {
        self.key.as_deref().and_then(|k| k.parse().ok())
    }
}

/// Parses one line; `None` for a malformed one.
pub fn parse_line(text: &str) -> Option<Line> {
    let mut parts = text.splitn(6, ' ');
    let t = parts.next()?.parse().ok()?;
    let member = parts.next()?.to_owned();
    let event = parts.next()?.to_owned();
    let epoch = match parts.next()? {
        "-" => None,
        e => Some(e.parse().ok()?),
    };
    let key = match parts.next()? {
        "-" => None,
        k => Some(k.to_owned()),
    };
    let detail = parts.next().unwrap_or("").trim().to_owned();
    Some(Line {
        t,
        member,
        event,
        epoch,
        key,
        detail,
        instance: 0,
    })
}

/// Numbers the processes of each member: a `start` line begins a new one. Call it
/// on the lines in the order they were written.
#[derive(Debug, Default)]
pub struct Instances {
    started: HashMap<String, u32>,
}

impl Instances {
    pub fn assign(&mut self, line: &mut Line) {
        let n = self.started.entry(line.member.clone()).or_insert(0);
        if line.event == "start" {
            *n += 1;
        }
        line.instance = n.saturating_sub(1);
    }
}

/// Parses a whole log (several members' lines may share one file).
pub fn parse_log(text: &str) -> Vec<Line> {
    let mut instances = Instances::default();
    text.lines()
        .filter_map(parse_line)
        .map(|mut l| {
            instances.assign(&mut l);
            l
        })
        .collect()
}

/// Follows a log file as it grows, parsing complete lines only.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
    instances: Instances,
    pub lines: Vec<Line>,
}

impl Tail {
    pub fn new(path: impl Into<PathBuf>) -> Tail {
        Tail {
            path: path.into(),
            offset: 0,
            partial: String::new(),
            instances: Instances::default(),
            lines: Vec::new(),
        }
    }

    /// Reads what was appended; returns the index of the first new line.
    pub fn poll(&mut self) -> usize {
        let first = self.lines.len();
        let Ok(mut file) = File::open(&self.path) else {
            return first;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return first;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return first;
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = self.partial.find('\n') {
            let text: String = self.partial.drain(..=end).collect();
            if let Some(mut line) = parse_line(text.trim_end()) {
                self.instances.assign(&mut line);
                self.lines.push(line);
            }
        }
        first
    }

    /// Polls every few milliseconds until a line (from the start) satisfies `pred`.
    pub fn wait_for(&mut self, limit: Duration, pred: impl Fn(&Line) -> bool) -> Option<Line> {
        let end = Instant::now() + limit;
        let mut seen = 0;
        loop {
            self.poll();
            if let Some(l) = self.lines[seen..].iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            seen = self.lines.len();
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A fresh directory for one run's logs under the cargo target directory.
pub fn run_dir(what: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    let dir =
        target
            .join("failover-runs")
            .join(format!("{what}-{}-{}", std::process::id(), mono_ns()));
    std::fs::create_dir_all(&dir).expect("cannot create the run directory");
    dir
}

/// A small random number generator (xorshift64*), seeded for reproducible runs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock.
    pub fn seed_from_clock() -> u64 {
        mono_ns() ^ (wall_ms() as u64).rotate_left(32) ^ u64::from(std::process::id())
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
