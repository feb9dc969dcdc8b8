//! Decides, when the root package is built, which servers the wire-level test suites
//! run against (the rules are in `tests/support/selection.rs`), so that a test of a
//! server left out is `#[ignore]`d with its reason and libtest's summary counts it
//! as ignored, never as passed.
//!
//! For each kind it may set `failover_skip_<kind> = "<why>"` (kinds `mock`,
//! `ferretdb`, `uri`; reasons `deselected`, `go_not_found`, `uri_not_named`), which
//! `server_tests!` (`tests/support/ferretdb.rs`) turns into `#[ignore = "..."]`, and
//! it passes the selected kinds to the tests as `FAILOVER_TEST_SERVERS` (for
//! `env!`). The inputs are `FAILOVER_TEST_SERVER` and whether `go` is on `PATH`;
//! a change of either runs this script again and rebuilds the tests. (Not
//! `MONGODB_URI`: cargo keeps the value of every variable a build script watches in
//! its fingerprints under `target/`, and a connection string can hold a password;
//! so the `uri` tests run only when `FAILOVER_TEST_SERVER` names `uri`.)

use std::env;
use std::path::Path;

#[allow(dead_code)] // the build script uses only the selection rules
#[path = "tests/support/selection.rs"]
mod selection;

use selection::{select, Server, Skip};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=tests/support/selection.rs");
    for var in ["FAILOVER_TEST_SERVER", "PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let values = Skip::ALL
        .iter()
        .map(|s| format!("\"{}\"", s.cfg_value()))
        .collect::<Vec<_>>()
        .join(", ");
    for kind in Server::ALL {
        println!("cargo::rustc-check-cfg=cfg(failover_skip_{kind}, values({values}))");
    }

    let list = env::var("FAILOVER_TEST_SERVER").ok();
    let choices = match select(list.as_deref(), go_on_path()) {
        Ok(choices) => choices,
        Err(why) => {
            eprintln!("error: {why}");
            std::process::exit(1);
        }
    };
    let mut selected = Vec::new();
    for (kind, skip) in choices {
        match skip {
            None => selected.push(kind.name()),
            Some(skip) => {
                println!(
                    "cargo::rustc-cfg=failover_skip_{kind}=\"{}\"",
                    skip.cfg_value()
                );
                if skip == Skip::GoNotFound {
                    println!(
                        "cargo::warning=no `go` on PATH: the FerretDB tests are built as ignored \
                         (install Go, or select servers with FAILOVER_TEST_SERVER)"
                    );
                }
            }
        }
    }
    println!(
        "cargo::rustc-env=FAILOVER_TEST_SERVERS={}",
        selected.join(",")
    );
}

/// Whether an executable `go` is in one of `PATH`'s directories (as `Command::new("go")`
/// will look it up when the tests build FerretDB).
fn go_on_path() -> bool {
    let Some(path) = env::var_os("PATH") else {
        return false;
    };
    let name = if cfg!(windows) { "go.exe" } else { "go" };
    env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
}

#[cfg(unix)]
fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(file: &Path) -> bool {
    file.is_file()
}
