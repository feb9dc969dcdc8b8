//! Options: where the lease lives, who this member is, and the election's timings.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::MemoryStore;

/// The connection string used when neither [`Options::connect_string`] nor the
/// `MONGODB_URI` environment variable gives one (the original's default).
pub const DEFAULT_CONNECT_STRING: &str = "mongodb://localhost:27017/test";

/// The collection that holds one lease document per subsystem, unless
/// [`Options::collection`] names another.
pub const DEFAULT_COLLECTION: &str = "failover";

/// How long [`Options::connect_timeout`] lets `start` wait for the database, unless
/// set otherwise.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Options::shutdown_timeout`] lets a graceful shutdown wait for the
/// running task, unless set otherwise.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for every duration option, so that deadline arithmetic can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The election's timings, with the original's names and defaults.
///
/// | field | default | what it paces |
/// |---|---|---|
/// | `init` | 0 ms | delay before a new member's first check |
/// | `master` | 2000 ms | the master renews its lease (and publishes its synchronize id) this often |
/// | `slave` | 2500 ms | a standby reads the lease at least this often (and exactly when it can expire) |
/// | `ticking` | 2000 ms | the longest a member may spend taking over before it counts as an error |
/// | `error` | 5000 ms | after a database error a member retries this much later |
///
/// The lease duration itself is [`Options::lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// INIT: delay before the first check.
    pub init: Duration,
    /// MASTER: renewal period of the master.
    pub master: Duration,
    /// SLAVE: longest pause between two checks of a standby.
    pub slave: Duration,
    /// TICKING: time limit for the take-over (verification and conditional write).
    pub ticking: Duration,
    /// ERROR: pause before retrying after a database error.
    pub error: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            init: Duration::ZERO,
            master: Duration::from_millis(2000),
            slave: Duration::from_millis(2500),
            ticking: Duration::from_millis(2000),
            error: Duration::from_millis(5000),
        }
    }
}

/// Where the lease documents live.
#[derive(Clone)]
pub(crate) enum Backend {
    /// A MongoDB deployment, reached through the official driver.
    Mongo {
        connect_string: Option<String>,
        client_options: Option<Box<mongodb::options::ClientOptions>>,
        client: Option<mongodb::Client>,
    },
    /// The in-process store, shared by every member given the same [`MemoryStore`].
    Memory(MemoryStore),
}

/// How a member connects and how it times the election.
///
/// Built with chained setters and checked when a member starts, before anything
/// connects. Every setter has a default, so `Options::new()` alone is a working
/// configuration for a MongoDB on localhost (or the one `MONGODB_URI` names).
///
/// ```
/// use std::time::Duration;
/// use failover::{Intervals, Options};
///
/// let options = Options::new()
///     .connect_string("mongodb://db.example.com:27017/app")
///     .member_id("worker-1")
///     .intervals(Intervals { master: Duration::from_millis(500), ..Intervals::default() })
///     .lease(Duration::from_millis(1000));
/// assert_eq!(options.effective_lease(), Duration::from_millis(1000));
/// ```
#[derive(Clone)]
pub struct Options {
    pub(crate) backend: Backend,
    pub(crate) database: Option<String>,
    pub(crate) collection: String,
    pub(crate) member_id: Option<String>,
    pub(crate) intervals: Intervals,
    pub(crate) lease: Option<Duration>,
    pub(crate) retry: Backoff,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) queue_capacity: Option<(usize, QueueFull)>,
    pub(crate) progress: crate::Progress,
    /// How long `start` waits for the database before failing
    /// ([`Options::connect_timeout`]).
    pub(crate) connect_timeout: Duration,
    /// How long a graceful shutdown waits for the running task before aborting it
    /// ([`Options::shutdown_timeout`]).
    pub(crate) shutdown_timeout: Duration,
    /// How long `error` may last before [`Member::health`](crate::Member::health)
    /// reports it ([`Options::unhealthy_after`]); `None`: 3 × `intervals.error`.
    pub(crate) unhealthy_after: Option<Duration>,
    /// The durable queue's settings ([`Options::durable_queue`]).
    pub(crate) durable: Option<crate::DurableQueue>,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Default options: MongoDB at `MONGODB_URI` (or [`DEFAULT_CONNECT_STRING`]),
    /// the original's intervals, member id `hostname:pid`.
    #[must_use]
    pub fn new() -> Self {
        Options {
            backend: Backend::Mongo {
                connect_string: None,
                client_options: None,
                client: None,
            },
            database: None,
            collection: DEFAULT_COLLECTION.to_owned(),
            member_id: None,
            intervals: Intervals::default(),
            lease: None,
            retry: Backoff::default(),
            max_attempts: None,
            queue_capacity: None,
            progress: crate::Progress::WithRenewal,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            durable: None,
            unhealthy_after: None,
        }
    }

    /// The MongoDB connection string. Its default database is used unless
    /// [`Options::database`] names another.
    #[must_use]
    pub fn connect_string(mut self, uri: impl Into<String>) -> Self {
        self.backend = Backend::Mongo {
            connect_string: Some(uri.into()),
            client_options: None,
            client: None,
        };
        self
    }

    /// Driver options, for settings a connection string cannot carry (TLS
    /// configuration, event handlers, …). Replaces any connection string.
    #[must_use]
    pub fn client_options(mut self, options: mongodb::options::ClientOptions) -> Self {
        self.backend = Backend::Mongo {
            connect_string: None,
            client_options: Some(Box::new(options)),
            client: None,
        };
        self
    }

    /// An existing driver client, shared with the rest of the application.
    #[must_use]
    pub fn client(mut self, client: mongodb::Client) -> Self {
        self.backend = Backend::Mongo {
            connect_string: None,
            client_options: None,
            client: Some(client),
        };
        self
    }

    /// Keep the leases in `store`, in this process only (the original's `nodb`, but
    /// with the real election among all members given the same store).
    #[must_use]
    pub fn in_memory(mut self, store: &MemoryStore) -> Self {
        self.backend = Backend::Memory(store.clone());
        self
    }

    /// The database that holds the lease collection (default: the connection
    /// string's database, else `test`).
    #[must_use]
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// The collection that holds the lease documents (default [`DEFAULT_COLLECTION`]).
    #[must_use]
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = name.into();
        self
    }

    /// This member's id, shown in the lease document and in events (default `hostname:pid`).
    #[must_use]
    pub fn member_id(mut self, id: impl Into<String>) -> Self {
        self.member_id = Some(id.into());
        self
    }

    /// The election's timings.
    #[must_use]
    pub fn intervals(mut self, intervals: Intervals) -> Self {
        self.intervals = intervals;
        self
    }

    /// The lease duration: how long a lease stays valid after a renewal (default
    /// 1.5 × `intervals.master`, so 3 s with the original's intervals). A master
    /// stops acting at 90 % of it if it could not renew; a standby takes over when it
    /// has fully passed.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Managed mode: how long to wait before retrying a task that asked for a retry.
    #[must_use]
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry = backoff;
        self
    }

    /// Managed mode: after this many attempts a task that keeps asking for a retry
    /// leaves the queue as a dead letter (default: no limit, as the original).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Managed mode: at most `capacity` tasks wait in the queue; when it is full,
    /// `submit_work` waits for room or fails, as `when_full` says (default: no bound,
    /// as the original).
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize, when_full: QueueFull) -> Self {
        self.queue_capacity = Some((capacity, when_full));
        self
    }

    /// Managed mode, in-memory queue: when the master publishes its progress (its
    /// run of finished tasks) to the standbys through the lease. The default,
    /// [`Progress::WithRenewal`](crate::Progress::WithRenewal), publishes with the
    /// periodic renewals, as the original does: no write per task, and a crash
    /// repeats the tasks finished since the last renewal.
    /// [`Progress::EveryTask`](crate::Progress::EveryTask) renews the lease after
    /// every task before the next one starts, so that after a crash at most the
    /// task in flight runs again, at the cost of one lease write (two round
    /// trips) per task; [`Progress::Batched`](crate::Progress::Batched) lies
    /// between. The durable queue takes its own from
    /// [`DurableQueue::progress`](crate::DurableQueue::progress).
    #[must_use]
    pub fn progress(mut self, progress: crate::Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Keeps a managed subsystem's queue in MongoDB instead of every member's
    /// memory: tasks survive the death of every member, any process may submit
    /// them ([`Queue`](crate::Queue)), and progress is recorded by a fenced write
    /// (see [`DurableQueue`](crate::DurableQueue)). A member starts on it with
    /// [`Managed::start_durable`](crate::Managed::start_durable) (its tasks must
    /// implement `Deserialize`), or `#[failover::subsystem(queue = "mongodb")]`;
    /// `start_durable` without this option uses [`DurableQueue::new`](crate::DurableQueue::new).
    #[must_use]
    pub fn durable_queue(mut self, queue: crate::DurableQueue) -> Self {
        self.durable = Some(queue);
        self
    }

    /// How long [`Member::start`](crate::Member::start) (and every `start` built on
    /// it) waits for the database to answer before it fails (default 5 s). A
    /// database that cannot be reached within it fails `start` with an error that
    /// says so, instead of a member that starts and keeps retrying; once started, a
    /// member that loses the database retries by itself. Must be longer than zero.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a graceful shutdown waits for the running task (the work, in
    /// managed mode) to finish before it aborts it (default 10 s). The lease is
    /// released only after the task has stopped, either way. Zero aborts the
    /// running task at once.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a member may stay in [`State::Error`](crate::State::Error) (the
    /// database fails) before [`Member::health`](crate::Member::health) reports it
    /// unhealthy (default: three ERROR intervals, so 15 s with the original's
    /// intervals: one failed retry is no reason to restart a process).
    #[must_use]
    pub fn unhealthy_after(mut self, bound: Duration) -> Self {
        self.unhealthy_after = Some(bound);
        self
    }

    /// The bound of [`Options::unhealthy_after`] in force.
    pub(crate) fn effective_unhealthy_after(&self) -> Duration {
        self.unhealthy_after
            .unwrap_or_else(|| self.intervals.error.saturating_mul(3))
    }

    /// The lease duration in force: the one set with [`Options::lease`], or the default.
    pub fn effective_lease(&self) -> Duration {
        self.lease
            .unwrap_or_else(|| self.intervals.master.saturating_mul(3) / 2)
    }

    /// How long before its lease runs out a master stops acting when it cannot renew:
    /// a tenth of the lease.
    pub(crate) fn step_down_margin(&self) -> Duration {
        self.effective_lease() / 10
    }

    /// The member id in force.
    pub(crate) fn effective_member_id(&self) -> String {
        self.member_id.clone().unwrap_or_else(default_member_id)
    }

    /// The connection string in force (for a MongoDB back-end without client or options).
    pub(crate) fn effective_connect_string(explicit: &Option<String>) -> String {
        explicit
            .clone()
            .or_else(|| std::env::var("MONGODB_URI").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_CONNECT_STRING.to_owned())
    }

    /// Checks every option; the error says which one is wrong and how to fix it.
    pub fn validate(&self) -> Result<()> {
        let i = &self.intervals;
        for (option, value, zero_ok) in [
            ("intervals.init", i.init, true),
            ("intervals.master", i.master, false),
            ("intervals.slave", i.slave, false),
            ("intervals.ticking", i.ticking, false),
            ("intervals.error", i.error, false),
            ("lease", self.effective_lease(), false),
            ("connect_timeout", self.connect_timeout, false),
            ("shutdown_timeout", self.shutdown_timeout, true),
            (
                "unhealthy_after",
                self.unhealthy_after.unwrap_or_default(),
                true,
            ),
        ] {
            if !zero_ok && value.is_zero() {
                return Err(Error::invalid(
                    option,
                    "must be longer than zero; give a duration such as 1 s",
                ));
            }
            if value > MAX_DURATION {
                return Err(Error::invalid(
                    option,
                    format!("{value:?} is longer than the 24 h this crate allows"),
                ));
            }
        }
        let lease = self.effective_lease();
        let deadline = lease - self.step_down_margin();
        if i.master >= deadline {
            return Err(Error::invalid(
                "intervals.master",
                format!(
                    "the renewal period ({:?}) must be shorter than the renew deadline, 90 % of the lease ({:?} of {:?}); \
                     lower intervals.master or raise `lease` above {:?}",
                    i.master,
                    deadline,
                    lease,
                    i.master.saturating_mul(10) / 9 + Duration::from_millis(1)
                ),
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(Error::invalid(
                "max_attempts",
                "must be at least 1 (1 = never retry)",
            ));
        }
        if let crate::Progress::Batched { tasks: 0, .. } = self.progress {
            return Err(Error::invalid(
                "progress",
                "Progress::Batched needs `tasks` of at least 1 (1 = after every task)",
            ));
        }
        if matches!(self.queue_capacity, Some((0, _))) {
            return Err(Error::invalid("queue_capacity", "must be at least 1"));
        }
        self.retry.validate()?;
        if let Some(id) = &self.member_id {
            if id.trim().is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "member_id",
                    "must be 1 to 256 printable characters (default: hostname:pid)",
                ));
            }
        }
        check_db_name("collection", &self.collection, "$\0")?;
        if let Some(db) = &self.database {
            check_db_name("database", db, "/\\. \"$*<>:|?\0")?;
            if db.len() > 63 {
                return Err(Error::invalid("database", "must be at most 63 bytes"));
            }
        }
        Ok(())
    }
}

/// What `submit_work` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFull {
    /// Wait until the master has worked off a task (back-pressure).
    Wait,
    /// Fail at once with [`Error::QueueFull`].
    Reject,
}

/// Exponential back-off with jitter, for tasks that ask for a retry.
///
/// Attempt *n* waits `initial × multiplier^(n−1)`, at most `max`, then scaled by a
/// random factor in `1 ± jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait after the first failed attempt (default 100 ms).
    pub initial: Duration,
    /// Longest wait (default 30 s).
    pub max: Duration,
    /// Growth per attempt (default 2).
    pub multiplier: f64,
    /// Random spread, from 0 to 1 (default 0.2).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * random_unit() - 1.0);
        Duration::from_secs_f64((base * spread).clamp(0.0, MAX_DURATION.as_secs_f64()))
    }

    fn validate(&self) -> Result<()> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::invalid(
                "retry_backoff.multiplier",
                "must be a finite number of at least 1.0",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid(
                "retry_backoff.jitter",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.initial > self.max || self.max > MAX_DURATION {
            return Err(Error::invalid(
                "retry_backoff",
                "`initial` must not exceed `max`, and `max` must be at most 24 h",
            ));
        }
        Ok(())
    }
}

/// A random number in [0, 1), good enough for jitter.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn check_db_name(option: &'static str, name: &str, forbidden: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(option, "must not be empty"));
    }
    if let Some(c) = name.chars().find(|c| forbidden.contains(*c)) {
        return Err(Error::invalid(
            option,
            format!("{name:?} contains {c:?}, which MongoDB does not allow in this name"),
        ));
    }
    Ok(())
}

/// Checks a subsystem name; it becomes the `_id` of the lease document.
///
/// A name is 1 to 128 bytes of printable characters, with no white space at either
/// end and no leading `$`.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty; name the subsystem, for example \"billing\""
    } else if name.len() > 128 {
        "must be at most 128 bytes"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else if name.trim() != name {
        "must not begin or end with white space"
    } else if name.starts_with('$') {
        "must not begin with `$`, which MongoDB reserves for operators"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

fn default_member_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// What stands in for a secret wherever options, connection strings or errors are
/// printed.
const REDACTED: &str = "***";

/// Replaces every secret of a connection string by `***`: the password of the user
/// information, and the values of the query options that carry secrets
/// (`proxyPassword`, `tlsCertificateKeyFilePassword`, `authMechanismProperties`
/// with its AWS session token, and any other option whose name contains
/// `password`, `secret` or `token`). Works on malformed strings too, since those
/// are the ones that end up in error messages: where the end of the password is
/// ambiguous, it hides more rather than less.
pub(crate) fn redact_uri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut last = 0;
    for (start, end) in secret_spans(uri) {
        out.push_str(&uri[last..start]);
        out.push_str(REDACTED);
        last = end;
    }
    out.push_str(&uri[last..]);
    out
}

/// Removes every secret of `uri` (see [`redact_uri`]) from `text`, a driver message
/// that may quote it, as written in `uri`, percent-decoded or escaped.
pub(crate) fn scrub(text: &str, uri: &str) -> String {
    scrub_secrets(text, &uri_secrets(uri))
}

/// Replaces each of `secrets` in `text` by `***`, the longest first (so that a
/// secret that contains another one is removed whole).
pub(crate) fn scrub_secrets(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut text = text.to_owned();
    for secret in secrets {
        if text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

/// The secrets of driver options given with [`Options::client_options`], in the
/// forms a message may quote them: the credential's password and the values of
/// its mechanism properties (an AWS session token, for example).
pub(crate) fn client_options_secrets(options: &mongodb::options::ClientOptions) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(credential) = &options.credential {
        if let Some(password) = &credential.password {
            push_forms(&mut secrets, password);
        }
        if let Some(properties) = &credential.mechanism_properties {
            for (_, value) in properties {
                match value {
                    bson::Bson::String(s) => push_forms(&mut secrets, s),
                    other => push_forms(&mut secrets, &other.to_string()),
                }
            }
        }
    }
    secrets
}

/// The secrets of `uri` in every form a message may quote them.
pub(crate) fn uri_secrets(uri: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for (start, end) in secret_spans(uri) {
        let raw = &uri[start..end];
        push_forms(&mut secrets, raw);
        let decoded = percent_decode(raw);
        push_forms(&mut secrets, &decoded);
        // `authMechanismProperties=SERVICE_NAME:x,AWS_SESSION_TOKEN:y`: a message
        // may quote one property alone (the secret ones are removed, the others,
        // like a service name, may be as short as a letter and stay).
        for property in decoded.split(',') {
            if let Some((key, value)) = property.split_once(':') {
                if is_secret_option(key) {
                    push_forms(&mut secrets, value);
                }
            }
        }
    }
    secrets
}

/// `secret`, and `secret` as `{:?}` writes it inside quotes.
fn push_forms(secrets: &mut Vec<String>, secret: &str) {
    if secret.is_empty() {
        return;
    }
    secrets.push(secret.to_owned());
    let escaped = format!("{secret:?}");
    let escaped = &escaped[1..escaped.len() - 1];
    if escaped != secret {
        secrets.push(escaped.to_owned());
    }
}

/// The byte ranges of the secrets in a connection string, in order and without
/// overlaps: the password in `scheme://user:password@hosts/...`, then the values of
/// the secret query options.
fn secret_spans(uri: &str) -> Vec<(usize, usize)> {
    let authority_start = uri.find("://").map_or(0, |i| i + 3);
    let rest = &uri[authority_start..];
    let mut spans = Vec::new();
    // The user information ends at the last `@`: a password with an unescaped `@`,
    // `/` or `?` is still covered whole (and, if a query value holds an `@`, the
    // hosts are hidden too, which is the safe side).
    let at = rest.rfind('@').map(|at| authority_start + at);
    if let Some(at) = at {
        if let Some(colon) = uri[authority_start..at].find(':') {
            let start = authority_start + colon + 1;
            if at > start {
                spans.push((start, at));
            }
        }
    }
    let after_userinfo = at.map_or(authority_start, |at| at + 1);
    if let Some(q) = uri[after_userinfo..].find('?') {
        let mut offset = after_userinfo + q + 1;
        for option in uri[offset..].split(['&', ';']) {
            if let Some((key, value)) = option.split_once('=') {
                if !value.is_empty() && is_secret_option(&percent_decode(key)) {
                    let start = offset + key.len() + 1;
                    spans.push((start, start + value.len()));
                }
            }
            offset += option.len() + 1;
        }
    }
    spans
}

/// Whether a connection string option carries a secret (option names are
/// case-insensitive).
fn is_secret_option(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key == "authmechanismproperties"
        || ["password", "secret", "token"]
            .iter()
            .any(|word| key.contains(word))
}

/// `%xx` sequences decoded; anything else, including a malformed sequence, as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A summary of driver options that prints no secret: `ClientOptions`' own
/// `Debug` is never used.
fn client_options_summary(options: &mongodb::options::ClientOptions) -> String {
    let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
    let mut summary = format!("client options: hosts [{}]", hosts.join(", "));
    if let Some(db) = &options.default_database {
        summary.push_str(&format!(", database {db:?}"));
    }
    if let Some(set) = &options.repl_set_name {
        summary.push_str(&format!(", replica set {set:?}"));
    }
    if let Some(credential) = &options.credential {
        let mechanism = credential
            .mechanism
            .as_ref()
            .map_or("default", |m| m.as_str());
        summary.push_str(&format!(", credential ({mechanism} mechanism, {REDACTED})"));
    }
    if let Some(mongodb::options::Tls::Enabled(_)) = &options.tls {
        summary.push_str(", TLS");
    }
    summary
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.backend {
            Backend::Mongo {
                connect_string: Some(uri),
                ..
            } => format!("mongodb({})", redact_uri(uri)),
            Backend::Mongo {
                client_options: Some(options),
                ..
            } => format!("mongodb({})", client_options_summary(options)),
            Backend::Mongo {
                client: Some(_), ..
            } => "mongodb(shared client)".to_owned(),
            Backend::Mongo { .. } => "mongodb(MONGODB_URI or default)".to_owned(),
            Backend::Memory(_) => "in-memory".to_owned(),
        };
        f.debug_struct("Options")
            .field("backend", &backend)
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("member_id", &self.member_id)
            .field("intervals", &self.intervals)
            .field("lease", &self.effective_lease())
            .field("retry_backoff", &self.retry)
            .field("max_attempts", &self.max_attempts)
            .field("queue_capacity", &self.queue_capacity)
            .field("connect_timeout", &self.connect_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("unhealthy_after", &self.effective_unhealthy_after())
            .field("durable_queue", &self.durable)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_valid_and_match_the_original() {
        let o = Options::new();
        o.validate().unwrap();
        assert_eq!(o.intervals.master, ms(2000));
        assert_eq!(o.intervals.slave, ms(2500));
        assert_eq!(o.effective_lease(), ms(3000));
    }

    #[test]
    fn zero_intervals_are_refused_with_the_option_named() {
        let o = Options::new().intervals(Intervals {
            slave: Duration::ZERO,
            ..Intervals::default()
        });
        let err = o.validate().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "intervals.slave",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn renewal_slower_than_the_lease_is_refused_with_a_fix() {
        let o = Options::new().lease(ms(2000));
        let err = o.validate().unwrap_err().to_string();
        assert!(
            err.contains("intervals.master") && err.contains("raise `lease`"),
            "{err}"
        );
    }

    #[test]
    fn huge_durations_are_refused() {
        let o = Options::new().intervals(Intervals {
            error: Duration::from_secs(u64::MAX / 4),
            ..Intervals::default()
        });
        assert!(o.validate().is_err());
    }

    #[test]
    fn backoff_grows_to_its_maximum_with_bounded_jitter() {
        let b = Backoff::default();
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= ms(80) && d1 <= ms(120), "{d1:?}");
            let d4 = b.delay(4);
            assert!(d4 >= ms(640) && d4 <= ms(960), "{d4:?}");
            assert!(b.delay(40) <= Duration::from_secs(36));
        }
        let bad = Backoff {
            jitter: 2.0,
            ..Backoff::default()
        };
        assert!(Options::new().retry_backoff(bad).validate().is_err());
        assert!(Options::new().max_attempts(0).validate().is_err());
        assert!(Options::new()
            .queue_capacity(0, QueueFull::Wait)
            .validate()
            .is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", " x", "a\nb", "$x", &"x".repeat(129)] {
            assert!(validate_name(name).is_err(), "{name:?} accepted");
        }
        validate_name("billing-eu.1:a").unwrap();
        assert!(Options::new().collection("a$b").validate().is_err());
        assert!(Options::new().database("a.b").validate().is_err());
        assert!(Options::new().member_id(" ").validate().is_err());
    }

    #[test]
    fn passwords_never_show() {
        let uri = "mongodb://alice:s3cr%2Ft@db1:27017,db2/app?authSource=admin";
        assert_eq!(
            redact_uri(uri),
            "mongodb://alice:***@db1:27017,db2/app?authSource=admin"
        );
        let o = Options::new().connect_string(uri);
        let debug = format!("{o:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert_eq!(
            scrub("failed for s3cr%2Ft here", uri),
            "failed for *** here"
        );
        // The driver may quote the decoded password.
        assert_eq!(scrub("failed for s3cr/t here", uri), "failed for *** here");
        assert_eq!(redact_uri("mongodb://db1/app"), "mongodb://db1/app");
    }

    #[test]
    fn secret_query_options_never_show() {
        let uri = "mongodb+srv://u:pw1@db/app?proxyHost=p&PROXYPASSWORD=pw2&tls=true\
                   &tlsCertificateKeyFilePassword=pw%333\
                   &authMechanism=MONGODB-AWS\
                   &authMechanismProperties=AWS_SESSION_TOKEN:tok4,SERVICE_NAME:svc&appName=a";
        assert_eq!(
            redact_uri(uri),
            "mongodb+srv://u:***@db/app?proxyHost=p&PROXYPASSWORD=***&tls=true\
             &tlsCertificateKeyFilePassword=***&authMechanism=MONGODB-AWS\
             &authMechanismProperties=***&appName=a"
        );
        let text = "bad: pw1 pw2 pw%333 pw33 tok4 \"AWS_SESSION_TOKEN:tok4,SERVICE_NAME:svc\"";
        let scrubbed = scrub(text, uri);
        for secret in ["pw1", "pw2", "pw3", "tok4"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.starts_with("bad: *** ***"), "{scrubbed}");
    }

    #[test]
    fn malformed_connection_strings_are_redacted_too() {
        for (uri, secret) in [
            // unescaped `@` and `/` in the password
            ("mongodb://bob:p@ss/w0rd@db1:27017/app", "w0rd"),
            ("mongodb://bob:p@ss/w0rd@db1:27017/app", "p@ss"),
            // no scheme at all
            ("bob:hunter2@db1", "hunter2"),
            // an unescaped `?` in the password
            ("mongodb://bob:a?b=c@db1/app", "a?b=c"),
            // a secret option without hosts
            ("mongodb://?proxyPassword=xyzzy", "xyzzy"),
        ] {
            let redacted = redact_uri(uri);
            assert!(!redacted.contains(secret), "{uri} -> {redacted}");
            let scrubbed = scrub(&format!("the driver says {uri:?}"), uri);
            assert!(!scrubbed.contains(secret), "{uri} -> {scrubbed}");
        }
        // A password with a quote, as `{:?}` prints it.
        let uri = "mongodb://bob:q\"uote@db1";
        assert!(!scrub(&format!("{uri:?}"), uri).contains("uote"));
    }

    #[test]
    fn client_options_are_summarized_without_secrets() {
        let mut co = mongodb::options::ClientOptions::default();
        co.hosts = vec![mongodb::options::ServerAddress::Tcp {
            host: "db1".into(),
            port: Some(27017),
        }];
        let mut credential = mongodb::options::Credential::default();
        credential.username = Some("carol".into());
        credential.password = Some("pw5".into());
        credential.mechanism_properties = Some(bson::doc! { "AWS_SESSION_TOKEN": "tok6" });
        co.credential = Some(credential);
        let secrets = client_options_secrets(&co);
        let debug = format!("{:?}", Options::new().client_options(co));
        assert!(debug.contains("db1:27017"), "{debug}");
        for secret in ["pw5", "tok6"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert_eq!(
            scrub_secrets("auth failed: pw5 / tok6", &secrets),
            "auth failed: *** / ***"
        );
    }

    #[test]
    fn timeouts_default_and_are_checked() {
        let o = Options::new();
        assert_eq!(o.connect_timeout, Duration::from_secs(5));
        assert_eq!(o.shutdown_timeout, Duration::from_secs(10));
        let err = Options::new()
            .connect_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "connect_timeout",
                    ..
                }
            ),
            "{err}"
        );
        Options::new()
            .shutdown_timeout(Duration::ZERO)
            .validate()
            .unwrap();
        assert!(Options::new()
            .shutdown_timeout(Duration::from_secs(25 * 3600))
            .validate()
            .is_err());
    }
}
