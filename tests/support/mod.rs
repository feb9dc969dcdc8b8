//! Shared support for the integration tests in `tests/` (use it with `mod support;`).
//!
//! The wire-level suites run each test once per server kind through
//! [`server_tests!`] (the bundled test server, FerretDB, `MONGODB_URI`); which kinds
//! run is decided when the tests are built: see `tests/support/ferretdb.rs`.
//!
//! The other tests get their MongoDB deployment from [`mongodb_uri`]: the `MONGODB_URI`
//! environment variable when it is set (a real `mongod`; start it with
//! `--setParameter enableTestCommands=1` for the fail point helpers), otherwise
//! a MongoDB wire-compatible test server (`tests/support/mongo_server.py`, built
//! on the PyPI packages `mongomock` and `mockupdb`) that is started once per test
//! process and dies with it.
//!
//! The server runs from a Python virtual environment that is created on first use
//! under the cargo target directory (`python3` must be on `PATH` and pip must reach
//! the package registry that first time). Set `FAILOVER_TEST_SERVER_LOG=<file>` to
//! have the server log every command and reply to `<file>.standalone` (`<file>.rs<k>`
//! for the replica sets).
#![allow(dead_code)] // every test binary compiles this module but uses only part of it

use std::collections::VecDeque;
use std::env;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::Client;

/// Name of the database in the URI returned by [`mongodb_uri`] for the test server.
pub const TEST_DB: &str = "failover_test";

/// The Python packages of the test server, pinned to versions known to work
/// together (on CPython 3.11), transitive dependencies included.
const PINNED_PACKAGES: &[&str] = &[
    "mongomock==4.3.0",
    "mockupdb==1.8.1",
    "pymongo==4.20.1",
    "dnspython==2.9.2",
    "packaging==26.4",
    "pytz==2026.6",
    "sentinels==1.1.1",
];

/// How long the server may take to print its `PORT` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The running test server. The `Child` is held for the life of the process:
/// its piped stdin stays open until the process exits, and the server exits on EOF.
struct TestServer {
    uri: String,
    _child: Child,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();

/// Returns the connection string the integration tests should use.
///
/// `MONGODB_URI` when it is set and non-empty; otherwise starts the test server
/// (once per test process) and returns `mongodb://127.0.0.1:<port>/failover_test`.
///
/// # Panics
/// If the test server cannot be set up or started; the message includes the
/// server's stderr. A test that needs MongoDB fails loudly, it never skips.
pub fn mongodb_uri() -> String {
    match env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => uri,
        _ => SERVER.get_or_init(start_server).uri.clone(),
    }
}

/// True when the tests run against the bundled test server, i.e. when
/// `MONGODB_URI` is not set (or empty).
pub fn using_test_server() -> bool {
    env::var("MONGODB_URI").map_or(true, |uri| uri.is_empty())
}

/// Configures the `failCommand` fail point on the deployment of `client`.
///
/// `spec` holds the rest of the `configureFailPoint` command, e.g.
/// `doc! { "mode": { "times": 2 }, "data": { "failCommands": ["find"], "errorCode": 91 } }`;
/// a `configureFailPoint` key in it is ignored. Works unchanged against a real
/// `mongod` started with `--setParameter enableTestCommands=1`.
///
/// # Panics
/// If the server rejects the command.
pub async fn fail_command(client: &Client, spec: Document) {
    let mut command = doc! { "configureFailPoint": "failCommand" };
    for (key, value) in spec {
        if key != "configureFailPoint" {
            command.insert(key, value);
        }
    }
    if let Err(err) = client.database("admin").run_command(command.clone()).await {
        panic!("configureFailPoint {command} failed: {err}");
    }
}

/// Turns the `failCommand` fail point off.
///
/// # Panics
/// If the server rejects the command.
pub async fn clear_fail_points(client: &Client) {
    fail_command(client, doc! { "mode": "off" }).await;
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the package
/// root) or `<CARGO_MANIFEST_DIR>/target`.
fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Runs `cmd` to completion, panicking with its output if it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("test server setup: cannot run {what} ({cmd:?}): {err}"));
    assert!(
        out.status.success(),
        "test server setup: {what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Returns the Python interpreter of the test server's virtual environment,
/// creating the environment first if needed.
///
/// The environment's directory name carries a hash of the pinned packages, so a
/// change of pins gets a fresh one and an existing one is never modified. It is
/// built under a temporary name and renamed into place, which is atomic: when
/// several test binaries race, one rename wins and the others use the winner's.
fn venv_python() -> PathBuf {
    // Once per process: tests of one binary that start servers at the same time
    // share the result (and the temporary directory name, which carries the pid).
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(build_venv).clone()
}

fn build_venv() -> PathBuf {
    let pins = PINNED_PACKAGES.join("\n");
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let hash = pins.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let target = target_dir();
    let venv = target.join(format!("failover-test-venv-{hash:016x}"));
    let marker = |dir: &Path| dir.join("failover-pins.txt");
    let python = |dir: &Path| dir.join("bin").join("python");
    let ready = |dir: &Path| fs::read_to_string(marker(dir)).is_ok_and(|m| m == pins);
    if ready(&venv) {
        return python(&venv);
    }

    fs::create_dir_all(&target).expect("test server setup: cannot create the target dir");
    let tmp = target.join(format!("failover-test-venv-tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&tmp),
        "python3 -m venv",
    );
    run(
        Command::new(python(&tmp))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PINNED_PACKAGES),
        "pip install",
    );
    fs::write(marker(&tmp), &pins).expect("test server setup: cannot write the marker file");
    if fs::rename(&tmp, &venv).is_err() {
        let _ = fs::remove_dir_all(&tmp); // lost the race: use the winner's
        assert!(
            ready(&venv),
            "test server setup: cannot move {} to {}",
            tmp.display(),
            venv.display()
        );
    }
    python(&venv)
}

/// Starts the test server and waits for its `PORT` line (with
/// `FAILOVER_TEST_SERVER_LOG=<file>`, it logs to `<file>.standalone`).
fn start_server() -> TestServer {
    let (child, ports) = spawn_test_server(&["--port".to_owned(), "0".to_owned()], "standalone");
    let port = ports[0];
    TestServer {
        uri: format!("mongodb://127.0.0.1:{port}/{TEST_DB}"),
        _child: child,
    }
}

// --- Emulated deployments: a mongos's clock, replica sets -----------------------

/// The connection string of the bundled test server, started once per test
/// process, even when `MONGODB_URI` is set: for tests of what only the test
/// server can play, such as [`set_hello_offset`].
///
/// # Panics
/// If the test server cannot be set up or started (see [`mongodb_uri`]).
pub fn test_server_uri() -> String {
    SERVER.get_or_init(start_server).uri.clone()
}

/// Runs a command on the `admin` database of `client`'s deployment.
///
/// # Panics
/// If the server rejects it; the message names the command and says that it
/// needs the bundled test server.
async fn test_command(client: &Client, command: Document) -> Document {
    match client.database("admin").run_command(command.clone()).await {
        Ok(reply) => reply,
        Err(err) => panic!(
            "test command {command} failed (it needs the bundled test server, \
             tests/support/mongo_server.py): {err}"
        ),
    }
}

/// Makes `hello`/`isMaster` (and `serverStatus`) report a `localTime` shifted by
/// `offset_ms` on the connections whose handshake named `app_name`, as a mongos
/// whose clock runs `offset_ms` ahead (negative: behind) of the data nodes would;
/// `$currentDate` keeps the data node's clock. An offset of 0 removes the shift.
///
/// `client` may use any app name: the shift applies to `app_name`'s connections,
/// on every member of the deployment, from their next `hello` on. Works on the
/// test server of [`test_server_uri`] and on a [`ReplicaSet`].
///
/// # Panics
/// If the server rejects the command (a real `mongod` does).
pub async fn set_hello_offset(client: &Client, app_name: &str, offset_ms: i64) {
    test_command(
        client,
        doc! { "failoverTestHelloOffset": app_name, "offsetMs": offset_ms },
    )
    .await;
}

/// Name of the replica sets that [`start_replica_set`] starts.
pub const REPLICA_SET_NAME: &str = "failover-rs";

/// Number of replica sets started by this process, for log file names.
static REPLICA_SETS_STARTED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// A replica set played by the test server (`mongo_server.py --replset N`): N
/// members on N loopback ports serving one data set, member 0 primary at the
/// start, each member with its own clock offset.
///
/// Started by [`start_replica_set`], one server process per call. The process
/// exits when this value is dropped (its stdin closes) or the test process ends.
/// Used regardless of `MONGODB_URI`.
pub struct ReplicaSet {
    /// Connection string through which the driver discovers every member:
    /// `mongodb://127.0.0.1:<p0>,.../failover_test?replicaSet=failover-rs`
    /// `&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=5000`. Add options
    /// with `&...`, or override these in the parsed `ClientOptions`.
    pub uri: String,
    /// The members' `host:port`, member 0 first, as their `hello` reports them.
    pub hosts: Vec<String>,
    child: Child,
}

/// Starts a replica set of `offsets_ms.len()` members whose clocks run
/// `offsets_ms[i]` milliseconds ahead of this machine's wall clock (negative:
/// behind); member 0 is primary. Set `FAILOVER_TEST_SERVER_LOG=<file>` to have
/// its server log every command to `<file>.rs<k>`.
///
/// # Panics
/// If `offsets_ms` is empty, or the server cannot be set up or started.
pub fn start_replica_set(offsets_ms: &[i64]) -> ReplicaSet {
    assert!(
        !offsets_ms.is_empty(),
        "start_replica_set needs one clock offset per member, got none"
    );
    let k = REPLICA_SETS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut args = vec![
        "--replset".to_string(),
        offsets_ms.len().to_string(),
        "--set-name".to_string(),
        REPLICA_SET_NAME.to_string(),
    ];
    for (i, ms) in offsets_ms.iter().enumerate() {
        args.push("--node-offset".to_string());
        args.push(format!("{i}={ms}"));
    }
    let (child, ports) = spawn_test_server(&args, &format!("rs{k}"));
    assert_eq!(
        ports.len(),
        offsets_ms.len(),
        "the replica set's server printed {} ports for {} members",
        ports.len(),
        offsets_ms.len()
    );
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    ReplicaSet {
        uri: format!(
            "mongodb://{}/{TEST_DB}?replicaSet={REPLICA_SET_NAME}\
             &heartbeatFrequencyMS=500&serverSelectionTimeoutMS=5000",
            hosts.join(",")
        ),
        hosts,
        child,
    }
}

impl ReplicaSet {
    /// Connection string of member `node` alone (`directConnection=true`): the
    /// driver sends everything to that member, whatever its role, as
    /// `primaryPreferred` reads.
    ///
    /// # Panics
    /// If there is no member `node`.
    pub fn member_uri(&self, node: usize) -> String {
        format!(
            "mongodb://{}/{TEST_DB}?directConnection=true",
            self.host(node)
        )
    }

    /// The index of the member that is primary now (None while an election is
    /// pending), as the members report it.
    ///
    /// # Panics
    /// If member 0 does not answer `hello`.
    pub async fn primary(&self) -> Option<usize> {
        let hello = self.command(doc! { "hello": 1 }).await;
        let primary = hello.get_str("primary").ok()?;
        self.hosts.iter().position(|host| host == primary)
    }

    /// The primary steps down and member `new_primary` is elected at once (the
    /// test command `failoverTestStepDown`). Electing the primary again is a new
    /// election too (new `electionId`). The old primary answers writes with
    /// `NotWritablePrimary` (10107) from then on.
    ///
    /// # Panics
    /// If there is no member `new_primary`, or the server refuses.
    pub async fn step_down(&self, new_primary: usize) {
        self.step_down_with_election_delay(new_primary, Duration::ZERO)
            .await;
    }

    /// The primary steps down now, and member `new_primary` is elected after
    /// `no_primary_for`: in between the set has no primary, so writes and
    /// primary reads wait in the driver's server selection (at most its
    /// `serverSelectionTimeoutMS`). A later step-down cancels the pending election.
    ///
    /// # Panics
    /// If there is no member `new_primary`, or the server refuses.
    pub async fn step_down_with_election_delay(
        &self,
        new_primary: usize,
        no_primary_for: Duration,
    ) {
        self.host(new_primary);
        let delay_ms = i64::try_from(no_primary_for.as_millis()).unwrap_or(i64::MAX);
        self.command(doc! {
            "failoverTestStepDown": 1,
            "newPrimary": new_primary as i64,
            "electionDelayMs": delay_ms,
        })
        .await;
    }

    /// Sets member `node`'s clock to run `offset_ms` ahead of this machine's wall
    /// clock (negative: behind). It stamps `$currentDate` in the writes that
    /// member applies as primary and the `localTime` of its `hello`.
    ///
    /// # Panics
    /// If there is no member `node`, or the server refuses.
    pub async fn set_node_offset(&self, node: usize, offset_ms: i64) {
        self.host(node);
        self.command(doc! { "failoverTestNodeOffset": node as i64, "offsetMs": offset_ms })
            .await;
    }

    fn host(&self, node: usize) -> &str {
        self.hosts.get(node).unwrap_or_else(|| {
            panic!(
                "the replica set has members 0 to {}, not {node}",
                self.hosts.len() - 1
            )
        })
    }

    /// Runs an admin command on member 0 (test commands work on any member).
    async fn command(&self, command: Document) -> Document {
        let mut options = mongodb::options::ClientOptions::parse(self.member_uri(0))
            .await
            .expect("valid member URI");
        options.app_name = Some("failover-test-harness".to_string());
        let client = Client::with_options(options).expect("client for member 0");
        test_command(&client, command).await
    }
}

impl Drop for ReplicaSet {
    /// Closes the server's stdin, on which it exits; kills it if it has not
    /// exited within two seconds.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mongo_server.py` with `args` and waits for its `PORT <p>...` line;
/// returns the child (its piped stdin open: the server exits on EOF) and the
/// ports. With `FAILOVER_TEST_SERVER_LOG=<file>` the server logs to
/// `<file>.<log_suffix>`.
///
/// # Panics
/// If the server prints no valid `PORT` line in time; the message includes the
/// server's stderr.
fn spawn_test_server(args: &[String], log_suffix: &str) -> (Child, Vec<u16>) {
    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mongo_server.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    match env::var_os("FAILOVER_TEST_SERVER_LOG").filter(|f| !f.is_empty()) {
        Some(file) => {
            let mut file = PathBuf::from(file).into_os_string();
            file.push(format!(".{log_suffix}"));
            let log = fs::File::create(&file).expect("cannot create FAILOVER_TEST_SERVER_LOG");
            cmd.arg("--verbose").stderr(log);
        }
        None => {
            cmd.stderr(Stdio::piped());
        }
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start the test server {python:?} {script:?}: {err}"));

    match await_ports(&mut child) {
        Ok(ports) => (child, ports),
        Err(e) => panic!(
            "the MongoDB test server ({} {} {}) {e}",
            python.display(),
            script.display(),
            args.join(" "),
        ),
    }
}

/// Waits for a started server's `PORT <p> [<p>...]` line on its piped stdout and
/// returns the ports; keeps draining its stdout and stderr so that it never blocks
/// on a full pipe. On failure kills it and returns what went wrong with the last
/// lines of its stderr.
pub(crate) fn await_ports(child: &mut Child) -> Result<Vec<u16>, String> {
    let stderr_tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&stderr_tail);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 200 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        lines.for_each(drop);
    });
    let ports = match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Some(Ok(line))) => line.strip_prefix("PORT ").and_then(|ports| {
            ports
                .split_whitespace()
                .map(|p| p.parse::<u16>().ok())
                .collect::<Option<Vec<u16>>>()
        }),
        _ => None,
    };
    match ports {
        Some(ports) if !ports.is_empty() => Ok(ports),
        _ => {
            let _ = child.kill(); // no effect if it has exited already
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            thread::sleep(Duration::from_millis(200)); // let the stderr thread finish
            let tail = stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
            let stderr = tail.iter().cloned().collect::<Vec<_>>().join("\n");
            Err(format!(
                "printed no `PORT <n>...` line within {STARTUP_TIMEOUT:?} ({status}).\nIts stderr:\n{stderr}"
            ))
        }
    }
}

// --- Server selection (mock, FerretDB, MONGODB_URI) and network faults ---

#[path = "selection.rs"]
mod selection;

#[path = "ferretdb.rs"]
mod ferretdb;
#[allow(unused_imports)]
pub(crate) use ferretdb::server_tests;
#[allow(unused_imports)]
pub use ferretdb::{
    ferretdb_binary, ferretdb_uri, kind_of, parse_servers, run_blocking_on, run_on, select,
    servers, uri_of, Server, Skip,
};

#[path = "proxy.rs"]
pub mod proxy;
