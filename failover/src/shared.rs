//! What a member's parts share: the handle, the election task, the worker and the
//! holders of a [`Leadership`](crate::Leadership). The lowest layer: it uses only
//! the clock, the events and the state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bson::Bson;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::LeaseClock;
use crate::event::{lock, EventSink};
use crate::lease::{ClockSample, Lease, Published};
use crate::state::State;

/// What the election publishes and receives as synchronize ids. Unmanaged mode
/// publishes what the application passed to [`Member::synchronize`](crate::Member::synchronize);
/// managed mode publishes its run of finished tasks and prunes its queue on receipt.
pub(crate) trait SyncPort: Send + Sync + 'static {
    /// What the master should publish with its next renewal.
    fn outgoing(&self) -> Option<Published>;
    /// A standby read what the master of `epoch` published (called on every check,
    /// so that a standby whose feed lags catches up).
    fn incoming(&self, epoch: u64, published: &Published);
    /// This member became master of `epoch`; the previous master last published
    /// `inherited`.
    fn became_master(&self, epoch: u64, inherited: Option<&Published>) {
        let _ = (epoch, inherited);
    }
    /// Whether this member should give better-fed members a head start when it
    /// takes over from a master that last published `published` (managed mode: its
    /// queue does not know where that master stopped).
    fn should_defer(&self, published: Option<&Published>) -> bool {
        let _ = published;
        false
    }
    /// Asked of a standby after it applied the master's publication: this standby
    /// holds tasks that no published run covers, which no other member will run:
    /// it must lead to run them (managed mode).
    fn needs_lease(&self) -> bool {
        false
    }
}

/// Unmanaged mode: the application's own id.
#[derive(Default)]
pub(crate) struct Unmanaged {
    pub latest: Mutex<Option<Bson>>,
}

impl SyncPort for Unmanaged {
    fn outgoing(&self) -> Option<Published> {
        lock(&self.latest)
            .clone()
            .map(|id| Published { id, run: None })
    }
    fn incoming(&self, _: u64, _: &Published) {}
}

/// The status the election task publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub state: State,
    /// Our epoch while master.
    pub epoch: Option<u64>,
}

/// State shared by the handle, the election task, the worker and leaderships.
pub(crate) struct Shared {
    pub name: String,
    pub member_id: String,
    pub events: Arc<EventSink>,
    pub sync: Arc<dyn SyncPort>,
    /// The clock of every lease deadline.
    pub clock: LeaseClock,
    origin: Instant,
    /// Nanoseconds after `origin` (lease clock) until which this member may act;
    /// 0 = not master.
    valid_until: AtomicU64,
    /// The epoch of the lease `valid_until` belongs to.
    epoch: AtomicU64,
    status: watch::Sender<Status>,
    /// The current term's token: cancelled when the term ends.
    term: Mutex<Option<(u64, CancellationToken)>>,
    /// Cancelled when the member is asked to stop (shutdown or abort); see
    /// [`Shared::stop`].
    pub stopping: CancellationToken,
    /// The same, as a flag that is cheap to read before every task.
    stop_flag: std::sync::atomic::AtomicBool,
    /// Set by an abort, before the stop: a crash hands nothing over.
    aborted: std::sync::atomic::AtomicBool,
    /// Cancelled when running work must be dropped (abort, or a shutdown whose
    /// grace period ran out).
    pub kill: CancellationToken,
    /// How many units of work hold a term now (leaderships and a busy worker).
    guards: AtomicUsize,
    /// Woken when `guards` drops to zero.
    idle: tokio::sync::Notify,
    /// The highest epoch whose `on_master` hook has returned.
    pub hooked: watch::Sender<u64>,
    /// Nanoseconds after `origin` (lease clock) of the last change of state.
    state_since: AtomicU64,
    /// The member's metrics (nothing without the `metrics` feature).
    pub metrics: crate::metrics::Metrics,
    /// The lease the election last read or wrote, and its last sample of the
    /// stamping clock: what [`Member::leader`](crate::Member::leader) reports.
    observed: Mutex<Option<(Lease, Option<ClockSample>)>>,
    /// Managed mode with progress per task: the worker's requests that the
    /// election publish now (a count of requests), and the last request that a
    /// renewal has published.
    progress_wanted: AtomicU64,
    progress_asked: tokio::sync::Notify,
    progress_published: watch::Sender<u64>,
}

impl Shared {
    pub fn new(
        name: String,
        member_id: String,
        events: Arc<EventSink>,
        sync: Arc<dyn SyncPort>,
        clock: LeaseClock,
    ) -> Shared {
        let origin = clock.now();
        let metrics = crate::metrics::Metrics::new(&name, &member_id);
        Shared {
            name,
            member_id,
            events,
            sync,
            clock,
            origin,
            valid_until: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            status: watch::channel(Status {
                state: State::Init,
                epoch: None,
            })
            .0,
            term: Mutex::new(None),
            stopping: CancellationToken::new(),
            stop_flag: std::sync::atomic::AtomicBool::new(false),
            aborted: std::sync::atomic::AtomicBool::new(false),
            kill: CancellationToken::new(),
            guards: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            hooked: watch::channel(0).0,
            state_since: AtomicU64::new(0),
            metrics,
            observed: Mutex::new(None),
            progress_wanted: AtomicU64::new(0),
            progress_asked: tokio::sync::Notify::new(),
            progress_published: watch::channel(0).0,
        }
    }

    /// Asks the election to publish the queue's progress now, with a renewal;
    /// returns the request's number for [`Shared::progress_published`].
    pub fn want_progress(&self) -> u64 {
        let request = self.progress_wanted.fetch_add(1, Ordering::SeqCst) + 1;
        self.progress_asked.notify_one();
        request
    }

    /// The election: the newest request for progress, read before a renewal is
    /// sent (what the renewal publishes includes everything finished before it).
    pub fn progress_request(&self) -> u64 {
        self.progress_wanted.load(Ordering::SeqCst)
    }

    /// The election: resolves when the worker asks to publish progress.
    pub async fn progress_asked(&self) {
        self.progress_asked.notified().await
    }

    /// The election: a renewal published every request up to `request`.
    pub fn published_progress(&self, request: u64) {
        self.progress_published.send_if_modified(|p| {
            let newer = request > *p;
            if newer {
                *p = request;
            }
            newer
        });
    }

    /// Resolves when a renewal has published progress request `request`.
    pub async fn progress_published(&self, request: u64) {
        let mut published = self.progress_published.subscribe();
        let _ = published.wait_for(|p| *p >= request).await;
    }

    /// Whether the lease is held and still valid *now*, by the lease clock
    /// (`CLOCK_BOOTTIME`): a master that was paused or suspended past its deadline
    /// answers `false` at once, before its election task has had a chance to run.
    pub fn lease_valid(&self) -> bool {
        let until = self.valid_until.load(Ordering::Acquire);
        until != 0
            && (self
                .clock
                .now()
                .saturating_duration_since(self.origin)
                .as_nanos() as u64)
                < until
    }

    /// The epoch this member may act under now, if any.
    pub fn acting_epoch(&self) -> Option<u64> {
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            let valid = self.lease_valid();
            // A take-over of a new epoch in between: read again.
            if self.epoch.load(Ordering::Acquire) == epoch {
                return valid.then_some(epoch);
            }
        }
    }

    /// Whether this member may act under `epoch` now.
    pub fn holds(&self, epoch: u64) -> bool {
        self.acting_epoch() == Some(epoch)
    }

    /// The deadline of the lease this member holds (lease clock), if it holds one.
    pub fn deadline(&self) -> Option<Instant> {
        let until = self.valid_until.load(Ordering::Acquire);
        (until != 0).then(|| self.origin + std::time::Duration::from_nanos(until))
    }

    /// When the member entered its current state (lease clock).
    pub fn state_since(&self) -> Instant {
        self.origin + std::time::Duration::from_nanos(self.state_since.load(Ordering::Acquire))
    }

    fn since_origin(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }

    /// The lease-clock instant until which the lease is valid (now, if none).
    pub fn valid_until(&self) -> Instant {
        let until = self.valid_until.load(Ordering::Acquire);
        self.origin + std::time::Duration::from_nanos(until)
    }

    /// Publishes the lease this member may act under (`None`: stop acting). A new
    /// epoch starts a new term; `None` ends the current one.
    pub fn set_lease(&self, lease: Option<(u64, Instant)>) {
        self.metrics.lease(lease.map(|(epoch, _)| epoch));
        match lease {
            None => {
                self.valid_until.store(0, Ordering::Release);
                if let Some((_, token)) = lock(&self.term).take() {
                    token.cancel();
                }
            }
            Some((epoch, until)) => {
                let mut term = lock(&self.term);
                if term.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    if let Some((_, old)) = term.take() {
                        old.cancel();
                    }
                    *term = Some((epoch, self.stopping.child_token()));
                    // A new epoch: no reader may pair it with the old deadline.
                    self.valid_until.store(0, Ordering::Release);
                    self.epoch.store(epoch, Ordering::Release);
                }
                let nanos = (until.saturating_duration_since(self.origin).as_nanos() as u64).max(1);
                self.valid_until.store(nanos, Ordering::Release);
            }
        }
    }

    /// Ends the current term without ending the lease: its token is cancelled, so
    /// no new work starts under it and its holders learn that it ends, while the
    /// lease stays valid for the hand-over (a step-down on request).
    pub fn end_term(&self) {
        if let Some((_, token)) = lock(&self.term).as_ref() {
            token.cancel();
        }
    }

    /// Keeps the lease last read or written (`None`: there is none) with the
    /// last clock sample.
    pub fn observe(&self, lease: Option<Lease>, clock: Option<ClockSample>) {
        *lock(&self.observed) = lease.map(|l| (l, clock));
    }

    /// The lease last read or written, and the clock sample to judge it by.
    pub fn observed(&self) -> Option<(Lease, Option<ClockSample>)> {
        lock(&self.observed).clone()
    }

    /// The token of the term of `epoch`, if that term is the current one.
    pub fn term(&self, epoch: u64) -> Option<CancellationToken> {
        lock(&self.term)
            .as_ref()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, t)| t.clone())
    }

    pub fn set_status(&self, state: State, epoch: Option<u64>) {
        self.state_since
            .store(self.since_origin(self.clock.now()), Ordering::Release);
        self.metrics.state(state);
        self.status.send_replace(Status { state, epoch });
    }

    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Asks the member to stop: no new work starts after this.
    pub fn stop(&self) {
        self.stop_flag.store(true, Ordering::SeqCst);
        self.stopping.cancel();
    }

    /// Marks the stop that follows as an abort (a crash): the election, which may
    /// see the stop before its task is aborted, must not release the lease.
    pub fn set_aborted(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    /// Whether the member was aborted.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Whether the member was asked to stop (one atomic load).
    pub fn is_stopping(&self) -> bool {
        self.stop_flag.load(Ordering::SeqCst)
    }

    /// Counts a unit of work that holds the current term until the guard drops.
    /// Take the guard first, then check [`Shared::is_stopping`]: a stop either sees
    /// the guard and waits, or is seen.
    pub fn guard(self: &Arc<Self>) -> TermGuard {
        self.guards.fetch_add(1, Ordering::SeqCst);
        TermGuard {
            shared: self.clone(),
        }
    }

    /// Waits until no unit of work holds a term.
    pub async fn idle(&self) {
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.is_idle() {
                return;
            }
            woken.await;
        }
    }

    /// Whether no unit of work holds a term.
    pub fn is_idle(&self) -> bool {
        self.guards.load(Ordering::SeqCst) == 0
    }
}

/// Keeps the election from releasing the lease while a unit of work runs.
pub(crate) struct TermGuard {
    shared: Arc<Shared>,
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        if self.shared.guards.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    /// Issue 8, item 3: a deadline counts the time the machine was suspended. On
    /// `CLOCK_MONOTONIC` alone the lease would still look valid after the resume.
    #[tokio::test(start_paused = true)]
    async fn a_suspended_machine_wakes_up_without_a_valid_lease() {
        let suspended = Arc::new(AtomicU64::new(0));
        let s = suspended.clone();
        let clock = LeaseClock::with_source(Arc::new(move || {
            Duration::from_millis(s.load(Ordering::SeqCst))
        }));
        let shared = Shared::new(
            "s".into(),
            "m".into(),
            Arc::new(EventSink::default()),
            Arc::new(Unmanaged::default()),
            clock,
        );
        shared.set_lease(Some((7, shared.clock.now() + Duration::from_secs(2))));
        assert_eq!(shared.acting_epoch(), Some(7));
        // The VM sleeps for a minute: Tokio's clock does not move.
        suspended.store(60_000, Ordering::SeqCst);
        assert!(
            !shared.lease_valid(),
            "a suspended master acted on an expired lease"
        );
        assert_eq!(shared.acting_epoch(), None);
    }
}
