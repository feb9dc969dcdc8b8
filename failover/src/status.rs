//! Leader information from any process, member or not: who holds a subsystem's
//! lease, a stream of its changes, and the operator's step-down request.
//!
//! Expiry is judged on the clock of the database node that stamps the lease, the
//! way a standby judges it (see [`crate::lease`]): a reader stamps a clock document
//! of its own (`_id: {clock: <subsystem>, member: <reader>}`) in the lease
//! collection and reads it back. Neither this machine's wall clock nor the
//! `localTime` of a `hello` is used.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bson::Bson;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::lease::{ClockSample, Lease};
use crate::managed::durable;
use crate::options::{validate_name, Backend, Options};
use crate::store::{Claim, LeaseStore, MongoStore};

/// How often a watch re-reads the stamping clock; in between it carries its last
/// sample forward on its own clock (as a standby does).
const CLOCK_REFRESH: Duration = Duration::from_secs(60);

/// The member id under which a reader that is no member stamps its clock
/// document, unless [`Options::member_id`] names another.
const READER_ID: &str = "failover-status";

/// Whether a lease is held, by the stamping clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseState {
    /// Its holder renewed it, and it has not run out: the holder is master.
    Held,
    /// It ran out without a renewal: its holder stopped acting, and a standby
    /// takes it at its next check.
    Expired,
    /// Its holder handed it over; a standby takes it at its next check.
    Released,
    /// Nobody holds it: it was found missing (or was repaired) and written anew
    /// unheld; a standby takes it over once it runs out (see
    /// [`crate::lease`]: a lease deleted under a master must not make a second
    /// one).
    Vacant,
}

impl LeaseState {
    /// `held`, `expired`, `released` or `vacant`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Held => "held",
            LeaseState::Expired => "expired",
            LeaseState::Released => "released",
            LeaseState::Vacant => "vacant",
        }
    }
}

impl std::fmt::Display for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lease of one subsystem, as read from the store and judged on the stamping
/// clock: what [`Member::leader`](crate::Member::leader), [`status`], [`list`] and
/// [`watch`] return.
///
/// `queue_depth` is the number of tasks waiting in the subsystem's durable queue,
/// given by [`status`] and [`list`] (two reads per subsystem); an in-memory queue
/// lives in its members' memory and has no depth here.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The subsystem's name.
    pub name: String,
    /// The member id of the holder (or of the last holder, when the lease is
    /// expired or released); `None` for a vacancy (a lease written anew after it
    /// was found missing, or repaired).
    pub holder: Option<String>,
    /// The lease's epoch, the fencing token of its holder.
    pub epoch: u64,
    /// Held, expired, released or vacant.
    pub state: LeaseState,
    /// When the holder last wrote the lease, by the stamping clock.
    pub renewed_at: bson::DateTime,
    /// How long the lease lasts after `renewed_at`.
    pub lease: Duration,
    /// Milliseconds until the lease runs out, by the stamping clock: negative
    /// once it has run out (that long ago), 0 when it is released.
    pub expires_in_ms: i64,
    /// The last synchronize id the master published (managed mode: the key of
    /// its last finished task).
    pub sync: Option<Bson>,
    /// An operator asked the holder to step down; it hands over once its work
    /// has stopped.
    pub step_down: bool,
    /// The lease's version: it grows with every write (take-over, renewal,
    /// release, step-down request).
    pub version: u64,
    /// Durable queue ([`Managed::start_durable`](crate::Managed::start_durable)):
    /// how many tasks wait, from [`status`] and [`list`]; `None` for a subsystem
    /// without one, and from [`Member::leader`](crate::Member::leader) and
    /// [`watch`] (which read only the lease).
    pub queue_depth: Option<u64>,
}

impl LeaderInfo {
    /// Judges `lease` at `now_ms` on the stamping clock (unknown: held until
    /// proven otherwise, for a whole lease).
    pub(crate) fn judge(name: &str, lease: &Lease, now_ms: Option<i64>) -> LeaderInfo {
        let lease_ms = i64::try_from(lease.lease_ms).unwrap_or(i64::MAX);
        let expires_in_ms = match now_ms {
            _ if lease.released => 0,
            Some(now) => lease
                .renewed_at_ms
                .saturating_add(lease_ms)
                .saturating_sub(now),
            None => lease_ms,
        };
        let state = if lease.released {
            LeaseState::Released
        } else if expires_in_ms <= 0 {
            LeaseState::Expired
        } else if lease.token.is_none() {
            LeaseState::Vacant
        } else {
            LeaseState::Held
        };
        LeaderInfo {
            name: name.to_owned(),
            holder: lease.holder.clone(),
            epoch: lease.epoch,
            state,
            renewed_at: bson::DateTime::from_millis(lease.renewed_at_ms),
            lease: Duration::from_millis(lease.lease_ms),
            expires_in_ms,
            sync: lease.sync.clone(),
            step_down: lease.step_down,
            version: lease.version,
            queue_depth: None,
        }
    }

    /// How long until the lease runs out, while it is held.
    pub fn expires_in(&self) -> Option<Duration> {
        (self.state == LeaseState::Held)
            .then(|| Duration::from_millis(self.expires_in_ms.unsigned_abs()))
    }

    /// What a watch reports a change of.
    fn change_key(&self) -> (Option<&str>, u64, LeaseState, bool) {
        (
            self.holder.as_deref(),
            self.epoch,
            self.state,
            self.step_down,
        )
    }
}

/// The lease of subsystem `name`, judged now on the stamping clock; `None` when
/// the subsystem has no lease. Works from any process, member or not.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
/// use failover::{LeaseState, Member, MemoryStore, Options};
///
/// let store = MemoryStore::new();
/// let options = Options::new().in_memory(&store);
/// let a = Member::start("billing", options.clone().member_id("a")).await?;
/// let epoch = a.wait_for_master().await?;
/// let info = failover::status(&options, "billing").await?.expect("a lease");
/// assert_eq!((info.holder.as_deref(), info.epoch, info.state), (Some("a"), epoch, LeaseState::Held));
/// # a.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidName`] or [`Error::InvalidOption`] for bad input,
/// [`Error::Database`] or [`Error::Timeout`] when the database fails or does not
/// answer within [`Options::connect_timeout`], [`Error::MalformedLease`] for a
/// lease document `failover` cannot read.
pub async fn status(options: &Options, name: &str) -> Result<Option<LeaderInfo>> {
    validate_name(name)?;
    options.validate()?;
    let claim = reader(options);
    let limit = options.connect_timeout;
    match &options.backend {
        Backend::Memory(store) => {
            let store = store.connect(&claim.member_id);
            bounded(
                limit,
                "read the lease status",
                status_on(&store, name, &claim),
            )
            .await
        }
        Backend::Mongo { .. } => {
            let store = connect(options, &claim).await?;
            bounded(limit, "read the lease status", async {
                let mut info = status_on(&store, name, &claim).await?;
                if let Some(info) = info.as_mut() {
                    info.queue_depth = durable::depth(&store, options, name).await?;
                }
                Ok(info)
            })
            .await
        }
    }
}

/// The leases of every subsystem in the collection, by name, each judged on the
/// stamping clock (clock documents and old versions are skipped).
///
/// # Errors
/// As [`status`].
pub async fn list(options: &Options) -> Result<Vec<LeaderInfo>> {
    options.validate()?;
    let claim = reader(options);
    let limit = options.connect_timeout;
    match &options.backend {
        Backend::Memory(store) => {
            let store = store.connect(&claim.member_id);
            bounded(limit, "list the leases", list_on(&store, &claim)).await
        }
        Backend::Mongo { .. } => {
            let store = connect(options, &claim).await?;
            bounded(limit, "list the leases", async {
                let mut all = list_on(&store, &claim).await?;
                for info in &mut all {
                    info.queue_depth = durable::depth(&store, options, &info.name).await?;
                }
                Ok(all)
            })
            .await
        }
    }
}

/// Asks the master of subsystem `name` to step down: it stops its work (as on
/// [`Member::shutdown`](crate::Member::shutdown), within its shutdown timeout),
/// releases the lease, and stays a standby that takes no lease for one lease's
/// time, so that another member takes over at its next check. Returns the lease
/// asked (`step_down` set); `None` when nobody holds it (no lease, or released).
///
/// The request is the next version of the lease, a copy of the newest with
/// `step_down` set: it extends nothing and breaks no lease; the master learns it
/// at its next renewal. A master that does not act on it (a version of `failover`
/// before this request existed) keeps the lease. Asking again before the
/// hand-over does nothing more.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
/// use failover::{Member, MemoryStore, Options, State};
///
/// let store = MemoryStore::new();
/// let options = Options::new().in_memory(&store);
/// let a = Member::start("billing", options.clone().member_id("a")).await?;
/// let first = a.wait_for_master().await?;
/// let b = Member::start("billing", options.clone().member_id("b")).await?;
/// b.wait_for_state(State::Slave).await?;
///
/// failover::step_down(&options, "billing").await?;
/// assert!(b.wait_for_master().await? > first); // b takes over at its next check
/// # a.shutdown().await?; b.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`status`].
pub async fn step_down(options: &Options, name: &str) -> Result<Option<LeaderInfo>> {
    validate_name(name)?;
    options.validate()?;
    let claim = reader(options);
    let limit = options.connect_timeout;
    match &options.backend {
        Backend::Memory(store) => {
            let store = store.connect(&claim.member_id);
            bounded(
                limit,
                "request a step-down",
                step_down_on(&store, name, &claim),
            )
            .await
        }
        Backend::Mongo { .. } => {
            let store = connect(options, &claim).await?;
            bounded(
                limit,
                "request a step-down",
                step_down_on(&store, name, &claim),
            )
            .await
        }
    }
}

/// Watches the lease of subsystem `name`: a [`Stream`](futures_core::Stream) that
/// yields its state first (once there is a lease), then every change of holder,
/// epoch, state (held, expired, released) or step-down request. It polls the
/// newest version every `every`, and also when the lease is due to run out, so
/// an expiry is seen when it happens. A failed poll yields the error and the
/// watch goes on. Dropping the watch stops it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
/// use std::time::Duration;
/// use failover::{LeaseState, Member, MemoryStore, Options};
///
/// let store = MemoryStore::new();
/// let options = Options::new().in_memory(&store);
/// let a = Member::start("billing", options.clone().member_id("a")).await?;
/// a.wait_for_master().await?;
/// let mut changes = failover::watch(&options, "billing", Duration::from_millis(100)).await?;
/// assert_eq!(changes.next().await.unwrap()?.state, LeaseState::Held);
/// a.shutdown().await?;
/// assert_eq!(changes.next().await.unwrap()?.state, LeaseState::Released);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidName`] or [`Error::InvalidOption`] for bad input (`every`
/// must be longer than zero), [`Error::Database`] or [`Error::Timeout`] when the
/// database cannot be reached at the start.
pub async fn watch(options: &Options, name: &str, every: Duration) -> Result<Watch> {
    validate_name(name)?;
    options.validate()?;
    if every.is_zero() || every > Duration::from_secs(24 * 60 * 60) {
        return Err(Error::invalid(
            "every",
            "the watch's polling period must be longer than zero and at most 24 h",
        ));
    }
    let claim = reader(options);
    let limit = options.connect_timeout;
    let (tx, rx) = mpsc::channel(16);
    let name = name.to_owned();
    let task = match &options.backend {
        Backend::Memory(store) => {
            let store = store.connect(&claim.member_id);
            tokio::spawn(watch_on(store, name, claim, every, limit, tx))
        }
        Backend::Mongo { .. } => {
            let store = connect(options, &claim).await?;
            tokio::spawn(watch_on(store, name, claim, every, limit, tx))
        }
    };
    Ok(Watch { rx, task })
}

/// The changes of one lease: see [`watch`]. A [`Stream`](futures_core::Stream)
/// that never ends by itself; drop it to stop watching.
#[derive(Debug)]
#[must_use = "a watch does nothing unless polled"]
pub struct Watch {
    rx: mpsc::Receiver<Result<LeaderInfo>>,
    task: JoinHandle<()>,
}

impl Watch {
    /// The next change (the first call: the lease as it is). Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<LeaderInfo>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<LeaderInfo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ----- on one store -----------------------------------------------------------

/// Who stamps the reader's clock document.
fn reader(options: &Options) -> Claim {
    Claim {
        member_id: options
            .member_id
            .clone()
            .unwrap_or_else(|| READER_ID.to_owned()),
        token: 0,
    }
}

async fn connect(options: &Options, claim: &Claim) -> Result<MongoStore> {
    let store = MongoStore::connect(options, &claim.member_id).await?;
    store.ping(options.connect_timeout).await?;
    Ok(store)
}

async fn bounded<T>(
    limit: Duration,
    operation: &'static str,
    op: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or(Err(Error::Timeout {
            operation,
            after: limit,
        }))
}

/// Stamps the clock document of `name` and takes the sample (as a standby does).
async fn sample<S: LeaseStore>(store: &S, name: &str, claim: &Claim) -> Result<ClockSample> {
    let sent = Instant::now();
    let stamp_ms = store.stamp(name, claim).await?;
    let received = Instant::now();
    let half = received.saturating_duration_since(sent) / 2;
    Ok(ClockSample {
        stamp_ms,
        local: sent + half,
        error: half + Duration::from_millis(1),
    })
}

async fn status_on<S: LeaseStore>(
    store: &S,
    name: &str,
    claim: &Claim,
) -> Result<Option<LeaderInfo>> {
    let Some(lease) = store.read(name).await? else {
        return Ok(None);
    };
    // A released lease needs no clock; anything else is judged after the read.
    let now_ms = if lease.released {
        None
    } else {
        let clock = sample(store, name, claim).await?;
        Some(clock.stamp_now_ms(Instant::now()))
    };
    Ok(Some(LeaderInfo::judge(name, &lease, now_ms)))
}

async fn list_on<S: LeaseStore>(store: &S, claim: &Claim) -> Result<Vec<LeaderInfo>> {
    let names = store.names().await?;
    let mut leases = Vec::with_capacity(names.len());
    for name in &names {
        if let Some(lease) = store.read(name).await? {
            leases.push((name, lease));
        }
    }
    // One clock sample for the collection, after the reads: all its documents
    // are stamped by one node.
    let clock = match leases.iter().find(|(_, l)| !l.released) {
        Some((name, _)) => Some(sample(store, name, claim).await?),
        None => None,
    };
    let now_ms = clock.map(|c| c.stamp_now_ms(Instant::now()));
    Ok(leases
        .iter()
        .map(|(name, lease)| LeaderInfo::judge(name, lease, now_ms))
        .collect())
}

async fn step_down_on<S: LeaseStore>(
    store: &S,
    name: &str,
    claim: &Claim,
) -> Result<Option<LeaderInfo>> {
    let Some(lease) = store.request_step_down(name, None).await? else {
        return Ok(None);
    };
    let clock = sample(store, name, claim).await?;
    Ok(Some(LeaderInfo::judge(
        name,
        &lease,
        Some(clock.stamp_now_ms(Instant::now())),
    )))
}

async fn watch_on<S: LeaseStore>(
    store: S,
    name: String,
    claim: Claim,
    every: Duration,
    limit: Duration,
    tx: mpsc::Sender<Result<LeaderInfo>>,
) {
    let mut clock: Option<ClockSample> = None;
    let mut last: Option<LeaderInfo> = None;
    loop {
        let polled = bounded(limit, "watch the lease", async {
            let Some(lease) = store.read(&name).await? else {
                return Ok(None);
            };
            if !lease.released && clock.is_none_or(|c| c.local + CLOCK_REFRESH <= Instant::now()) {
                clock = Some(sample(&store, &name, &claim).await?);
            }
            let now_ms = clock.map(|c| c.stamp_now_ms(Instant::now()));
            Ok(Some(LeaderInfo::judge(&name, &lease, now_ms)))
        })
        .await;
        let mut wait = every;
        let report = match polled {
            Ok(Some(info)) => {
                if let Some(left) = info.expires_in() {
                    // Poll again right after the lease is due to run out.
                    wait = wait.min(left + Duration::from_millis(1));
                }
                let changed = last
                    .as_ref()
                    .is_none_or(|l| l.change_key() != info.change_key());
                last = Some(info.clone());
                changed.then_some(Ok(info))
            }
            Ok(None) => None,
            Err(e) => {
                clock = None;
                Some(Err(e))
            }
        };
        if let Some(report) = report {
            if tx.send(report).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}
