//! A running member: the handle the application holds, and the state it shares
//! with the election task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bson::Bson;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::election::Election;
use crate::error::{Error, Result};
use crate::event::{lock, spawn_hooks, EventSink, Events, Hooks};
use crate::options::{validate_name, Backend, Options};
use crate::state::State;
use crate::store::{Claim, MongoStore, Store};

/// What the election publishes and receives as synchronize ids. Unmanaged mode
/// publishes what the application passed to [`Member::synchronize`]; managed mode
/// publishes the key of the last finished task and prunes its queue on receipt.
pub(crate) trait SyncPort: Send + Sync + 'static {
    /// The id the master should publish with its next renewal.
    fn outgoing(&self) -> Option<Bson>;
    /// A standby received `id` from the master (or a new master inherited it).
    fn incoming(&self, id: &Bson);
}

/// Unmanaged mode: the application's own id.
#[derive(Default)]
pub(crate) struct Unmanaged {
    latest: Mutex<Option<Bson>>,
}

impl SyncPort for Unmanaged {
    fn outgoing(&self) -> Option<Bson> {
        lock(&self.latest).clone()
    }
    fn incoming(&self, _: &Bson) {}
}

/// The status the election task publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub state: State,
    /// Our epoch while master.
    pub epoch: Option<u64>,
}

/// State shared by the handle, the election task and (managed mode) the worker.
pub(crate) struct Shared {
    pub name: String,
    pub member_id: String,
    pub events: Arc<EventSink>,
    pub sync: Arc<dyn SyncPort>,
    origin: Instant,
    /// Nanoseconds after `origin` until which this member may act; 0 = not master.
    valid_until: AtomicU64,
    /// The epoch of the lease `valid_until` belongs to.
    epoch: AtomicU64,
    status: watch::Sender<Status>,
}

impl Shared {
    /// Whether the lease is held and still valid *now*, by this process's monotonic
    /// clock: a master that was paused past its deadline answers `false` at once,
    /// before its election task has had a chance to run.
    pub fn lease_valid(&self) -> bool {
        let until = self.valid_until.load(Ordering::Acquire);
        until != 0 && (self.origin.elapsed().as_nanos() as u64) < until
    }

    /// The epoch this member may act under now, if any.
    pub fn acting_epoch(&self) -> Option<u64> {
        // Read the deadline first: it is published after the epoch.
        self.lease_valid()
            .then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Whether this member may act under `epoch` now.
    pub fn holds(&self, epoch: u64) -> bool {
        self.acting_epoch() == Some(epoch)
    }

    /// The instant until which the lease is valid (now, if there is none).
    pub fn valid_until(&self) -> Instant {
        let until = self.valid_until.load(Ordering::Acquire);
        self.origin + std::time::Duration::from_nanos(until)
    }

    /// Publishes the lease this member may act under (`None`: stop acting).
    pub fn set_lease(&self, lease: Option<(u64, Instant)>) {
        match lease {
            None => self.valid_until.store(0, Ordering::Release),
            Some((epoch, until)) => {
                self.epoch.store(epoch, Ordering::Release);
                let nanos = (until.saturating_duration_since(self.origin).as_nanos() as u64).max(1);
                self.valid_until.store(nanos, Ordering::Release);
            }
        }
    }

    pub fn set_status(&self, state: State, epoch: Option<u64>) {
        self.status.send_replace(Status { state, epoch });
    }

    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }
}

/// One member of a subsystem: takes part in the election until shut down.
///
/// Dropping a `Member` without [`shutdown`](Member::shutdown) stops it the way a
/// crash would: it stops acting at once but does not hand the lease over, so the
/// other members take over only when the lease expires.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
/// use failover::{Member, MemoryStore, Options};
///
/// let store = MemoryStore::new();
/// let member = Member::start("reports", Options::new().in_memory(&store)).await?;
/// let epoch = member.wait_for_master().await?;
/// member.synchronize(42)?; // reaches the standbys with the next renewal
/// assert_eq!(member.epoch(), Some(epoch));
/// member.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Member {
    shared: Arc<Shared>,
    unmanaged: Option<Arc<Unmanaged>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.shared.name)
            .field("member_id", &self.shared.member_id)
            .field("state", &self.state())
            .field("epoch", &self.epoch())
            .finish()
    }
}

impl Member {
    /// Starts a member of subsystem `name` (unmanaged mode).
    ///
    /// The options and the name are checked before anything connects; the
    /// election then runs on a task of its own. Must be called within a Tokio
    /// runtime.
    pub async fn start(name: &str, options: Options) -> Result<Member> {
        Member::start_with_hooks(name, options, ()).await
    }

    /// Like [`Member::start`], with hooks called on every event.
    pub async fn start_with_hooks<H: Hooks>(
        name: &str,
        options: Options,
        hooks: H,
    ) -> Result<Member> {
        let port = Arc::new(Unmanaged::default());
        let mut member = Member::launch(name, options, Arc::new(hooks), port.clone()).await?;
        member.unmanaged = Some(port);
        Ok(member)
    }

    pub(crate) async fn launch<H: Hooks>(
        name: &str,
        options: Options,
        hooks: Arc<H>,
        sync: Arc<dyn SyncPort>,
    ) -> Result<Member> {
        Member::launch_with(name, options, hooks, sync, Arc::new(EventSink::default())).await
    }

    /// Checks everything, connects the store and starts the election task.
    pub(crate) async fn launch_with<H: Hooks>(
        name: &str,
        options: Options,
        hooks: Arc<H>,
        sync: Arc<dyn SyncPort>,
        events: Arc<EventSink>,
    ) -> Result<Member> {
        validate_name(name)?;
        options.validate()?;
        let member_id = options.effective_member_id();
        let store = match &options.backend {
            Backend::Memory(store) => Store::Memory(store.connect(&member_id)),
            Backend::Mongo { .. } => Store::Mongo(MongoStore::connect(&options, &member_id).await?),
        };
        let (status, _) = watch::channel(Status {
            state: State::Init,
            epoch: None,
        });
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            member_id: member_id.clone(),
            events: events.clone(),
            sync,
            origin: Instant::now(),
            valid_until: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            status,
        });
        spawn_hooks(hooks, events.subscribe_internal(), Arc::downgrade(&events));
        let claim = Claim {
            member_id,
            token: random_token(),
        };
        let election = Election::new(
            shared.clone(),
            store,
            claim,
            options.intervals,
            options.effective_lease(),
            options.step_down_margin(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(election.run(stop_rx));
        Ok(Member {
            shared,
            unmanaged: None,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The subsystem's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.shared.member_id
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.status().state
    }

    /// The fencing token while this member is master, else `None`. Pass it with
    /// every write the master makes elsewhere, so that those systems can reject the
    /// writes of a master that has been replaced (see [`crate::fence`]).
    pub fn epoch(&self) -> Option<u64> {
        self.is_master()
            .then(|| self.shared.status().epoch)
            .flatten()
    }

    /// Whether this member is master and its lease is valid at this instant.
    pub fn is_master(&self) -> bool {
        self.shared.lease_valid()
    }

    /// The member's events: the first call gets them from the start (see
    /// [`Events`]), later calls from now on. Hooks given at start see every event.
    pub fn events(&self) -> Events {
        self.shared.events.subscribe()
    }

    /// Unmanaged mode: publish `id` to the standbys with the next renewal (they get
    /// it as [`Event::Synchronize`](crate::Event::Synchronize)). Call it on the
    /// master; a standby keeps it and publishes it if it becomes master.
    pub fn synchronize<T: Serialize>(&self, id: T) -> Result<()> {
        let id = bson::to_bson(&id).map_err(|e| Error::serialization("synchronize id", e))?;
        match &self.unmanaged {
            Some(port) => {
                *lock(&port.latest) = Some(id);
                Ok(())
            }
            None => Err(Error::invalid(
                "synchronize",
                "a managed member publishes the keys of finished tasks itself; call synchronize on an unmanaged Member",
            )),
        }
    }

    /// Waits until this member is master; returns its epoch. Fails with
    /// [`Error::Shutdown`] if the member stops first.
    pub async fn wait_for_master(&self) -> Result<u64> {
        let mut rx = self.shared.watch();
        loop {
            let status = *rx.borrow_and_update();
            match status {
                Status {
                    state: State::Master,
                    epoch: Some(epoch),
                } => return Ok(epoch),
                Status {
                    state: State::Stopped,
                    ..
                } => return Err(Error::Shutdown),
                _ => {}
            }
            rx.changed().await.map_err(|_| Error::Shutdown)?;
        }
    }

    /// Waits until the member is in `state`.
    pub async fn wait_for_state(&self, state: State) -> Result<()> {
        let mut rx = self.shared.watch();
        rx.wait_for(|s| s.state == state)
            .await
            .map(|_| ())
            .map_err(|_| Error::Shutdown)
    }

    /// Stops the member the way a crash would: it stops acting at once and hands
    /// nothing over, so the others take over when the lease expires. Dropping the
    /// `Member` does the same. For tests and demonstrations of a failover.
    pub fn abort(&self) {
        self.shared.set_lease(None);
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        self.shared.events.close();
    }

    /// Stops taking part: a master stops acting, publishes its last synchronize id
    /// and marks its lease released, so that a standby takes over at its next check.
    /// Returns when that is done (at the latest after the TICKING interval).
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A random number that tells this member instance from any other, even one
/// configured with the same member id.
fn random_token() -> i64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() as i64
}
