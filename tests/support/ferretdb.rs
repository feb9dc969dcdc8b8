//! FerretDB as a second test server, and the choice of servers for the wire-level
//! suites (declared from `tests/support/mod.rs`, which re-exports the public items).
//!
//! # What runs where
//! [`server_tests!`](crate::support::server_tests) turns each test body into one test
//! per server kind: `NAME::mock` (the bundled `tests/support/mongo_server.py`),
//! `NAME::ferretdb` (FerretDB 1.24 on SQLite, see below) and `NAME::uri` (the
//! deployment in `MONGODB_URI`). Which of them run is decided when the tests are
//! *built*, by the root package's build script (`build.rs`, rules in
//! `tests/support/selection.rs`):
//!
//! | `FAILOVER_TEST_SERVER` | `mock` | `ferretdb` | `uri` |
//! |---|---|---|---|
//! | unset or empty (the default) | runs | runs if `go` is on `PATH`, else ignored: "Go not found" | ignored: "runs when FAILOVER_TEST_SERVER names uri" |
//! | a comma-separated list of `mock`, `ferretdb`, `uri` | runs if listed | runs if listed | runs if listed |
//!
//! A kind that does not run is `#[ignore]`d with its reason, so that libtest's
//! summary counts it as ignored (`test NAME::ferretdb ... ignored, Go not found
//! ...`); no test passes without running. A kind that runs and whose server cannot
//! be built or started (no Go, no Python, no `MONGODB_URI`, a failed build) fails
//! its tests with the reason: selecting a server is asking for it.
//! `cargo test -- --include-ignored` runs the ignored kinds too, with the same
//! failure when their server is missing.
//!
//! The build script reruns, and the tests are rebuilt, when `FAILOVER_TEST_SERVER`
//! or `PATH` changes; so `FAILOVER_TEST_SERVER=mock cargo test` after a default run
//! recompiles the test binaries before it runs them (setting it when running an
//! already built test binary by hand changes nothing). A value that names an
//! unknown kind fails the build. `MONGODB_URI` is read only when a `uri` test runs,
//! never by the build: cargo would keep its value, password included, in its
//! fingerprints under `target/`; that is why `uri` is never in the default.
//!
//! Tests outside `server_tests!` that need one kind (such as `chaos_ferretdb`) carry
//! the same `#[cfg_attr(failover_skip_ferretdb = ..., ignore = ...)]` attributes;
//! [`servers`] lists the selected kinds for code that loops over them.
//!
//! # FerretDB
//! [`ferretdb_uri`] builds `tests/support/ferretdb/` (a small Go program that embeds
//! FerretDB 1.24 with its SQLite handler, pinned in its `go.mod`/`go.sum`) into the
//! cargo target directory on first use, then starts one server per test process on a
//! free loopback port with a fresh data directory under the system's temporary
//! directory. The server exits, and deletes that directory, when the test process
//! exits (it watches its stdin). The build needs the Go toolchain (`go` on `PATH`);
//! the first one fetches the pinned modules through Go's module proxy into the
//! default module cache, later ones download nothing. Set
//! `FAILOVER_FERRETDB_LOG=<file>` to have the server log every message to that file.

use std::env;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{target_dir, TEST_DB};

#[allow(unused_imports)]
pub use super::selection::{parse_servers, select, Server, Skip};

/// Where the Go program lives, relative to the package root.
const GO_DIR: &str = "tests/support/ferretdb";

/// The files whose contents decide the binary; their hash names the build.
const GO_FILES: &[&str] = &["go.mod", "go.sum", "main.go"];

/// Go build tags: only the SQLite back-end is needed.
const GO_TAGS: &str = "ferretdb_no_postgresql";

/// How long the server may take to print its `PORT` line once built.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The server kinds whose tests run in this build (decided by `build.rs`, see the
/// module docs), in [`Server::ALL`] order.
pub fn servers() -> Vec<Server> {
    parse_servers(env!("FAILOVER_TEST_SERVERS"))
        .expect("build.rs writes FAILOVER_TEST_SERVERS from parsed kinds")
}

/// The connection string of a server of kind `kind`, starting it first (once per
/// test process) for `Mock` and `FerretDb`.
///
/// # Panics
/// If the server cannot be built or started (the message says why and includes
/// the server's stderr), or for `Uri` if `MONGODB_URI` is not set.
pub fn uri_of(kind: Server) -> String {
    match kind {
        Server::Mock => super::SERVER.get_or_init(super::start_server).uri.clone(),
        Server::FerretDb => ferretdb_uri(),
        Server::Uri => match env::var("MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => uri,
            _ => panic!(
                "the `uri` server kind needs MONGODB_URI (a MongoDB connection string); \
                 set it, or select mock/ferretdb with FAILOVER_TEST_SERVER"
            ),
        },
    }
}

/// Which kind of server `uri` belongs to: `Mock` or `FerretDb` when it is the
/// connection string of the one this process started, otherwise `Uri`.
pub fn kind_of(uri: &str) -> Server {
    if super::SERVER.get().is_some_and(|s| s.uri == uri) {
        Server::Mock
    } else if matches!(FERRETDB.get(), Some(Ok(s)) if s.uri == uri) {
        Server::FerretDb
    } else {
        Server::Uri
    }
}

/// Writes `line` to the process's stderr, past the test harness's output capture.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Runs one generated async test: `body` against a server of kind `kind`. Used by
/// [`server_tests!`](crate::support::server_tests), whose attributes decide whether
/// the test runs at all.
///
/// # Panics
/// If the server cannot be built or started (as [`uri_of`]), or if the body panics.
pub async fn run_on<F, Fut>(kind: Server, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    body(uri_of(kind)).await;
}

/// Runs one generated blocking test: `body` against a server of kind `kind`. Used
/// by [`server_tests!`](crate::support::server_tests), and by tests of one kind.
///
/// # Panics
/// If the server cannot be built or started (as [`uri_of`]), or if the body panics.
pub fn run_blocking_on(kind: Server, body: impl FnOnce(String)) {
    body(uri_of(kind));
}

/// Expands each `async fn NAME(uri: String) { ... }` (or plain `fn`) into a module
/// `NAME` with one test per server kind: `NAME::mock`, `NAME::ferretdb`, `NAME::uri`,
/// each `#[ignore]`d with its reason when the build leaves its kind out (see the
/// module docs). Each `async fn` must carry a `#[tokio::test]` attribute (with any
/// arguments), each `fn` a `#[test]` attribute, which every generated test gets;
/// doc comments may precede it and further attributes follow it.
///
/// ```ignore
/// support::server_tests! {
///     /// What it checks.
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     async fn one_master(uri: String) {
///         // ... connect to `uri` ...
///     }
/// }
/// ```
#[allow(unused_macros)] // every test binary compiles this module; not all use it
macro_rules! server_tests {
    () => {};
    (
        $(#[doc = $doc:expr])*
        #[tokio::test $( ( $($targs:tt)* ) )?]
        $(#[$attr:meta])*
        async fn $name:ident ($uri:ident : String) $body:block
        $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn server_test_body($uri: String) $body

            #[tokio::test $( ( $($targs)* ) )?]
            #[cfg_attr(failover_skip_mock = "deselected", ignore = "FAILOVER_TEST_SERVER leaves out mock")]
            $(#[$attr])*
            async fn mock() {
                $crate::support::run_on($crate::support::Server::Mock, server_test_body).await;
            }

            #[tokio::test $( ( $($targs)* ) )?]
            #[cfg_attr(failover_skip_ferretdb = "deselected", ignore = "FAILOVER_TEST_SERVER leaves out ferretdb")]
            #[cfg_attr(failover_skip_ferretdb = "go_not_found", ignore = "Go not found (no `go` on PATH when the tests were built)")]
            $(#[$attr])*
            async fn ferretdb() {
                $crate::support::run_on($crate::support::Server::FerretDb, server_test_body).await;
            }

            #[tokio::test $( ( $($targs)* ) )?]
            #[cfg_attr(failover_skip_uri = "deselected", ignore = "FAILOVER_TEST_SERVER leaves out uri")]
            #[cfg_attr(failover_skip_uri = "uri_not_named", ignore = "runs when FAILOVER_TEST_SERVER names uri (against MONGODB_URI)")]
            $(#[$attr])*
            async fn uri() {
                $crate::support::run_on($crate::support::Server::Uri, server_test_body).await;
            }
        }
        $crate::support::server_tests! { $($rest)* }
    };
    (
        $(#[doc = $doc:expr])*
        #[test]
        $(#[$attr:meta])*
        fn $name:ident ($uri:ident : String) $body:block
        $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn server_test_body($uri: String) $body

            #[test]
            #[cfg_attr(failover_skip_mock = "deselected", ignore = "FAILOVER_TEST_SERVER leaves out mock")]
            $(#[$attr])*
            fn mock() {
                $crate::support::run_blocking_on($crate::support::Server::Mock, server_test_body);
            }

            #[test]
            #[cfg_attr(failover_skip_ferretdb = "deselected", ignore = "FAILOVER_TEST_SERVER leaves out ferretdb")]
            #[cfg_attr(failover_skip_ferretdb = "go_not_found", ignore = "Go not found (no `go` on PATH when the tests were built)")]
            $(#[$attr])*
            fn ferretdb() {
                $crate::support::run_blocking_on($crate::support::Server::FerretDb, server_test_body);
            }

            #[test]
            #[cfg_attr(failover_skip_uri = "deselected", ignore = "FAILOVER_TEST_SERVER leaves out uri")]
            #[cfg_attr(failover_skip_uri = "uri_not_named", ignore = "runs when FAILOVER_TEST_SERVER names uri (against MONGODB_URI)")]
            $(#[$attr])*
            fn uri() {
                $crate::support::run_blocking_on($crate::support::Server::Uri, server_test_body);
            }
        }
        $crate::support::server_tests! { $($rest)* }
    };
}
pub(crate) use server_tests;

// ---------------------------------------------------------------------------
// FerretDB: build and start
// ---------------------------------------------------------------------------

/// The running FerretDB: `Child` is held for the life of the process; its piped
/// stdin stays open until the process exits, and the server exits on EOF.
struct FerretDb {
    uri: String,
    _child: Child,
}

/// The server, or why it could not be started (so that every test of the process
/// reports the same failure instead of building again).
static FERRETDB: OnceLock<Result<FerretDb, String>> = OnceLock::new();

/// The connection string of this process's FerretDB, building and starting it on
/// first use: `mongodb://127.0.0.1:<port>/failover_test`.
///
/// # Panics
/// If the Go program cannot be built or the server does not start; the message says
/// why, with the compiler's or the server's output.
pub fn ferretdb_uri() -> String {
    match FERRETDB.get_or_init(start_ferretdb) {
        Ok(server) => server.uri.clone(),
        Err(why) => panic!("FerretDB test server: {why}"),
    }
}

/// Hash of the Go sources and build settings (FNV-1a: stable across Rust versions).
fn source_hash(dir: &Path) -> Result<u64, String> {
    let mut bytes = GO_TAGS.as_bytes().to_vec();
    for file in GO_FILES {
        let path = dir.join(file);
        let content =
            fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        bytes.extend_from_slice(file.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&content);
        bytes.push(0);
    }
    Ok(bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    }))
}

/// Returns the FerretDB binary, building it first if this version of the sources
/// has not been built in this target directory.
///
/// The binary's directory name carries the hash of the sources; it is built under
/// a temporary name and renamed into place, which is atomic: when several test
/// binaries race, one rename wins and the others use the winner's. The build is
/// `-mod=readonly`: it uses exactly the pinned modules and never edits go.mod/go.sum.
pub fn ferretdb_binary() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(GO_DIR);
    let hash = source_hash(&src)?;
    let target = target_dir();
    let dir = target.join(format!("failover-ferretdb-{hash:016x}"));
    let binary = dir.join("ferretdb");
    if binary.is_file() {
        return Ok(binary);
    }

    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let tmp = target.join(format!(
        "failover-ferretdb-tmp-{}-{}",
        std::process::id(),
        unique()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let started = Instant::now();
    let out = Command::new("go")
        .args([
            "build",
            "-mod=readonly",
            "-trimpath",
            "-buildvcs=false",
            "-tags",
            GO_TAGS,
            "-o",
        ])
        .arg(tmp.join("ferretdb"))
        .arg(".")
        .current_dir(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run `go build` in {} ({e}); the FerretDB tests need the Go \
                 toolchain on PATH (or deselect them: FAILOVER_TEST_SERVER=mock)",
                src.display()
            )
        })?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(format!(
            "`go build -mod=readonly -trimpath -buildvcs=false -tags {GO_TAGS}` in {} failed ({}):\n{}{}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    say(&format!(
        "built FerretDB into {} in {:.1?}",
        dir.display(),
        started.elapsed()
    ));
    if fs::rename(&tmp, &dir).is_err() {
        let _ = fs::remove_dir_all(&tmp); // lost the race: use the winner's
        if !binary.is_file() {
            return Err(format!(
                "cannot move {} to {}",
                tmp.display(),
                dir.display()
            ));
        }
    }
    Ok(binary)
}

/// A number unique within this process, for temporary names.
fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Builds (if needed) and starts FerretDB, and waits for its `PORT` line.
fn start_ferretdb() -> Result<FerretDb, String> {
    let binary = ferretdb_binary()?;
    let data = env::temp_dir().join(format!(
        "failover-ferretdb-data-{}-{}",
        std::process::id(),
        unique()
    ));
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.args(["-listen", "127.0.0.1:0", "-remove-data-on-exit", "-data"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let log_file = env::var_os("FAILOVER_FERRETDB_LOG").filter(|f| !f.is_empty());
    if let Some(file) = &log_file {
        let log = fs::File::create(file)
            .map_err(|e| format!("cannot create FAILOVER_FERRETDB_LOG {file:?}: {e}"))?;
        cmd.arg("-verbose").stderr(log);
    } else {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| {
        let _ = fs::remove_dir_all(&data);
        format!("cannot start {}: {e}", binary.display())
    })?;

    let port = match super::await_ports(&mut child) {
        Ok(ports) => ports[0],
        Err(e) => {
            let _ = fs::remove_dir_all(&data);
            return Err(format!("{} {e}", binary.display()));
        }
    };
    Ok(FerretDb {
        uri: format!("mongodb://127.0.0.1:{port}/{TEST_DB}"),
        _child: child,
    })
}
