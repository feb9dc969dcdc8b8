//! Which servers the wire-level suites run against: the rules, shared by the root
//! package's build script (`build.rs`, which decides when the tests are built) and
//! the test support (`tests/support/ferretdb.rs`). Only `std` here: the build
//! script compiles this file on its own.

use std::fmt;

/// A kind of server the wire-level suites can run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Server {
    /// The bundled wire-compatible emulation, `tests/support/mongo_server.py`.
    Mock,
    /// FerretDB 1.24 on SQLite, built from `tests/support/ferretdb/`.
    FerretDb,
    /// The deployment in the `MONGODB_URI` environment variable.
    Uri,
}

impl Server {
    /// Every kind, in the order the tests are generated.
    pub const ALL: [Server; 3] = [Server::Mock, Server::FerretDb, Server::Uri];

    /// The kind's name in `FAILOVER_TEST_SERVER` and in test names.
    pub fn name(self) -> &'static str {
        match self {
            Server::Mock => "mock",
            Server::FerretDb => "ferretdb",
            Server::Uri => "uri",
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the tests of a kind are `#[ignore]`d. Each is a value of the kind's cfg
/// (`failover_skip_mock`, `failover_skip_ferretdb`, `failover_skip_uri`) that the
/// build script sets and `server_tests!` turns into `#[ignore = "..."]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `FAILOVER_TEST_SERVER` is set and does not name the kind.
    Deselected,
    /// The default selection, and no `go` on `PATH` to build FerretDB with.
    GoNotFound,
    /// The default selection, which leaves `uri` out: it runs only when named,
    /// so that the build never depends on `MONGODB_URI` (cargo would keep the
    /// connection string, password included, in its fingerprints under `target/`).
    UriNotNamed,
}

impl Skip {
    /// The cfg value: `failover_skip_<kind> = "<value>"`.
    pub fn cfg_value(self) -> &'static str {
        match self {
            Skip::Deselected => "deselected",
            Skip::GoNotFound => "go_not_found",
            Skip::UriNotNamed => "uri_not_named",
        }
    }

    /// Every value, for `cargo::rustc-check-cfg`.
    pub const ALL: [Skip; 3] = [Skip::Deselected, Skip::GoNotFound, Skip::UriNotNamed];
}

/// Parses a `FAILOVER_TEST_SERVER` value: a comma-separated list of kinds, in any
/// case, duplicates and empty entries ignored.
///
/// # Errors
/// A message naming the unknown entry and the accepted ones.
pub fn parse_servers(list: &str) -> Result<Vec<Server>, String> {
    let mut servers = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some(kind) = Server::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(entry))
        else {
            return Err(format!(
                "FAILOVER_TEST_SERVER={list:?}: unknown server kind {entry:?}; \
                 write a comma-separated list of mock, ferretdb and uri"
            ));
        };
        if !servers.contains(&kind) {
            servers.push(kind);
        }
    }
    Ok(servers)
}

/// Decides, for each kind in [`Server::ALL`] order, whether its tests run (`None`)
/// or are ignored and why.
///
/// `list` is `FAILOVER_TEST_SERVER`; when it names kinds, exactly those run (a
/// named kind that cannot be set up fails its tests instead of being skipped).
/// When it is unset or names none: `mock`, and `ferretdb` if `go_found`.
///
/// # Errors
/// As [`parse_servers`].
pub fn select(list: Option<&str>, go_found: bool) -> Result<Vec<(Server, Option<Skip>)>, String> {
    let named = parse_servers(list.unwrap_or(""))?;
    Ok(Server::ALL
        .into_iter()
        .map(|kind| {
            let skip = if !named.is_empty() {
                (!named.contains(&kind)).then_some(Skip::Deselected)
            } else {
                match kind {
                    Server::Mock => None,
                    Server::FerretDb => (!go_found).then_some(Skip::GoNotFound),
                    Server::Uri => Some(Skip::UriNotNamed),
                }
            };
            (kind, skip)
        })
        .collect())
}
