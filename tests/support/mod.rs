//! Shared support for the integration tests in `tests/` (use it with `mod support;`).
//!
//! Tests get their MongoDB deployment from [`mongodb_uri`]: the `MONGODB_URI`
//! environment variable when it is set (a real `mongod`; start it with
//! `--setParameter enableTestCommands=1` for the fail point helpers), otherwise
//! a MongoDB wire-compatible test server (`tests/support/mongo_server.py`, built
//! on the PyPI packages `mongomock` and `mockupdb`) that is started once per test
//! process and dies with it.
//!
//! The server runs from a Python virtual environment that is created on first use
//! under the cargo target directory (`python3` must be on `PATH` and pip must reach
//! the package registry that first time). Set `FAILOVER_TEST_SERVER_LOG=<file>` to
//! have the server log every command and reply to that file.
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

/// Starts the test server and waits for its `PORT` line.
fn start_server() -> TestServer {
    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mongo_server.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--port", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let log_file = env::var_os("FAILOVER_TEST_SERVER_LOG").filter(|f| !f.is_empty());
    if let Some(file) = &log_file {
        let log = fs::File::create(file).expect("cannot create FAILOVER_TEST_SERVER_LOG");
        cmd.arg("--verbose").stderr(log);
    } else {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start the test server {python:?} {script:?}: {err}"));

    // Keep the last lines of stderr for the panic message; keep draining
    // stdout and stderr so that the server never blocks on a full pipe.
    let stderr_tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&stderr_tail);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap();
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

    let port = match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Some(Ok(line))) => line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse::<u16>().ok()),
        _ => None,
    };
    let Some(port) = port else {
        let _ = child.kill(); // no effect if it has exited already
        let status = child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        thread::sleep(Duration::from_millis(200)); // let the stderr thread finish
        let tail = stderr_tail.lock().unwrap();
        let stderr = tail.iter().cloned().collect::<Vec<_>>().join("\n");
        panic!(
            "the MongoDB test server ({} {}) printed no `PORT <n>` line within {STARTUP_TIMEOUT:?} \
             ({status}).\nIts stderr:\n{stderr}",
            python.display(),
            script.display(),
        );
    };
    TestServer {
        uri: format!("mongodb://127.0.0.1:{port}/{TEST_DB}"),
        _child: child,
    }
}
