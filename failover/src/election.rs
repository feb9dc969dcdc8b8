//! The election task: the state machine of one member (see [`crate::lease`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::lease::{rules, ClockSample, Lease};
use crate::metrics::{self, TakenFrom};
use crate::options::Intervals;
use crate::shared::Shared;
use crate::state::State;
use crate::store::{Claim, Created, LeaseStore, Renewal};

/// How often a standby re-reads the lease clock when nothing else asks for it.
const CLOCK_REFRESH: Duration = Duration::from_secs(60);

/// The lease this member holds.
#[derive(Debug, Clone)]
struct Held {
    epoch: u64,
    /// The lease as this member last wrote it.
    lease: Lease,
    /// The member may act until here (lease clock): the send time of its last
    /// successful renewal plus the lease, minus the step-down margin.
    valid_until: Instant,
}

/// Which lease write a judgement was made on: a version, and an operator's
/// step-down copy of it (same epoch and stamp), which extends nothing and so must
/// not reset what was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    version: u64,
    epoch: u64,
    renewed_at_ms: i64,
}

impl Seen {
    fn of(lease: &Lease) -> Seen {
        Seen {
            version: lease.version,
            epoch: lease.epoch,
            renewed_at_ms: lease.renewed_at_ms,
        }
    }

    fn covers(&self, lease: &Lease) -> bool {
        // A version number names one write only within an epoch: a lease deleted
        // and written anew as a vacancy starts again at version 1.
        (self.version == lease.version && self.epoch == lease.epoch)
            || (lease.step_down
                && self.epoch == lease.epoch
                && self.renewed_at_ms == lease.renewed_at_ms)
    }
}

/// The timings of one member's election.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub intervals: Intervals,
    pub lease: Duration,
    /// How long a graceful shutdown lets running work finish before it drops it.
    pub shutdown_grace: Duration,
}

pub(crate) struct Election<S: LeaseStore> {
    shared: Arc<Shared>,
    store: S,
    claim: Claim,
    timing: Timing,
    state: State,
    held: Option<Held>,
    clock: Option<ClockSample>,
    /// After a step of the lease clock: the lease whose expiry is judged by
    /// local observation alone, and that expiry.
    fallback: Option<(Seen, Instant)>,
    /// A standby that gives better-fed members a head start: the expired lease,
    /// and when its head start ends.
    deferred: Option<(Seen, Instant)>,
    /// The master was asked to step down and hands the lease over.
    handing_over: bool,
    /// After a step-down: this member takes no lease before then, so that the
    /// standbys have their chance first.
    yield_until: Option<Instant>,
    /// Lost take-over races in a row (a stale read must not make it spin).
    lost_races: u32,
    /// The epoch of the master this member follows as a standby.
    followed: Option<u64>,
    /// The synchronize id last seen as a standby (for the event).
    seen_sync: Option<bson::Bson>,
    /// What this member last wrote as master.
    published: Option<crate::lease::Published>,
    /// The epoch this member held last as master.
    last_held: Option<u64>,
    /// The last progress a master published that this member read or wrote: a
    /// lease found missing is written anew with it (managed mode: a deletion
    /// erased the queue's record of what was run, as far as this member knows).
    last_seen: Option<crate::lease::Published>,
    /// The epoch whose master this standby asked to hand over, to run tasks
    /// that only this member holds.
    asked_for: Option<u64>,
    connected: bool,
}

impl<S: LeaseStore> Election<S> {
    pub fn new(shared: Arc<Shared>, store: S, claim: Claim, timing: Timing) -> Self {
        Election {
            shared,
            store,
            claim,
            timing,
            state: State::Init,
            held: None,
            clock: None,
            fallback: None,
            deferred: None,
            handing_over: false,
            yield_until: None,
            lost_races: 0,
            followed: None,
            seen_sync: None,
            published: None,
            last_held: None,
            last_seen: None,
            asked_for: None,
            connected: false,
        }
    }

    fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// Runs until the member is asked to stop; then lets the work stop and hands
    /// the lease over.
    pub async fn run(mut self) {
        let stopping = self.shared.stopping.clone();
        let mut wake = self.now() + self.timing.intervals.init;
        loop {
            tokio::select! {
                biased;
                _ = stopping.cancelled() => break,
                // The worker asks to publish its progress now (managed mode,
                // progress per task): renew at once.
                _ = self.shared.progress_asked(), if self.held.is_some() && !self.handing_over => {}
                _ = sleep_until(self.shared.clock.timer(wake)) => {}
            }
            // A step in flight is finished, not dropped: a write whose outcome is
            // unknown would leave the lease in doubt.
            wake = self.step().await;
            if self.shared.is_stopping() {
                break;
            }
        }
        self.stop_work(wake).await;
        let span = metrics::release_span(
            &self.shared.name,
            &self.claim.member_id,
            self.held.as_ref().map(|h| h.epoch),
        );
        self.release().instrument(span).await;
    }

    /// One check or renewal; returns when to wake up next (lease clock).
    async fn step(&mut self) -> Instant {
        match self.held.clone() {
            Some(h) if self.handing_over => {
                let span =
                    metrics::release_span(&self.shared.name, &self.claim.member_id, Some(h.epoch));
                self.hand_over().instrument(span).await
            }
            Some(held) => {
                let span =
                    metrics::renew_span(&self.shared.name, &self.claim.member_id, held.epoch);
                self.renew(held).instrument(span).await
            }
            None => self.check().await,
        }
    }

    // ----- standby -----------------------------------------------------------

    /// Stamps the lease clock and takes the sample.
    async fn sample(&mut self, deadline: Instant) -> Result<ClockSample> {
        let sent = self.now();
        let name = self.shared.name.clone();
        let stamp = self
            .timed(
                deadline,
                "read the lease clock",
                self.store.stamp(&name, &self.claim),
            )
            .await?;
        let received = self.now();
        let half = received.saturating_duration_since(sent) / 2;
        Ok(ClockSample {
            stamp_ms: stamp,
            local: sent + half,
            // The date has millisecond precision.
            error: half + Duration::from_millis(1),
        })
    }

    /// Reads the lease and decides: follow it, or take it over.
    async fn check(&mut self) -> Instant {
        let deadline = self.now() + self.timing.intervals.slave;
        let stale = self
            .clock
            .is_none_or(|c| c.local + CLOCK_REFRESH <= self.now());
        if stale {
            match self.sample(deadline).await {
                Ok(sample) => self.clock = Some(sample),
                Err(e) => return self.fail(e),
            }
        }
        let name = self.shared.name.clone();
        let lease = match self
            .timed(deadline, "read lease", self.store.read(&name))
            .await
        {
            Ok(lease) => lease,
            Err(e) => return self.fail(e),
        };
        self.note_connected();
        self.observe(lease.as_ref());
        let Some(lease) = lease else {
            tracing::debug!(target: "failover::tests", member = %self.claim.member_id, "no lease yet");
            return self.take_over(None).await;
        };
        let now = self.now();
        if let Some(until) = self.yielding(now) {
            // Stepped down on request: the standbys go first.
            if lease.released || lease.token == Some(self.claim.token) || now >= self.expiry(&lease)
            {
                self.follow(&lease);
                return until.min(now + self.timing.intervals.slave);
            }
        }
        let successor_first =
            lease.released && lease.successor.is_some_and(|s| s != self.claim.token);
        if successor_first && now < self.expiry(&lease) {
            // Handed over to the standby that asked for it: it goes first, and
            // the others wait as for a lease that runs out.
            self.follow(&lease);
            return self.expiry(&lease).min(now + self.timing.intervals.slave);
        }
        if lease.released || self.is_own(&lease) {
            // Handed over, or our own lease from before a step-down: take it at once.
            tracing::debug!(target: "failover::tests", member = %self.claim.member_id, epoch = lease.epoch,
                released = lease.released, "lease free to take");
            return self.take_over(Some(lease)).await;
        }
        let expiry = self.expiry(&lease);
        let now = self.now();
        tracing::debug!(target: "failover::tests", member = %self.claim.member_id, epoch = lease.epoch,
            holder = lease.holder.as_deref().unwrap_or(""), expires_in = ?expiry.saturating_duration_since(now), "lease checked");
        if now >= expiry {
            if let Some(until) = self.head_start(&lease, now) {
                self.follow(&lease);
                return until.min(now + self.timing.intervals.slave);
            }
            return self.take_over(Some(lease)).await;
        }
        self.follow(&lease);
        if lease.token.is_some() && !lease.step_down && self.shared.sync.needs_lease() {
            self.ask_for_lease(&lease, deadline).await;
        }
        expiry.min(now + self.timing.intervals.slave)
    }

    /// Managed mode: this standby holds tasks that no master would run, so it
    /// asks the master of `lease` to hand over (a step-down request naming this
    /// member as successor; the master releases once its running task is done),
    /// once per epoch.
    async fn ask_for_lease(&mut self, lease: &Lease, deadline: Instant) {
        if self.asked_for == Some(lease.epoch) {
            return;
        }
        self.asked_for = Some(lease.epoch);
        tracing::info!(target: "failover", member = %self.claim.member_id, epoch = lease.epoch,
            "this member holds tasks that no master would run; asking the master to hand over");
        let name = self.shared.name.clone();
        if let Err(e) = self
            .timed(
                deadline,
                "request a step-down",
                self.store.request_step_down(&name, Some(&self.claim)),
            )
            .await
        {
            // Asked again at the next check.
            self.asked_for = None;
            self.shared.events.emit(Event::Error(e));
        }
    }

    /// Managed mode: a member whose queue does not know where the last master
    /// stopped gives better-fed members one lease of head start before it takes an
    /// expired lease. Returns the end of the head start while it lasts.
    fn head_start(&mut self, lease: &Lease, now: Instant) -> Option<Instant> {
        if !self.shared.sync.should_defer(lease.published().as_ref()) {
            return None;
        }
        let until = match self.deferred {
            Some((seen, until)) if seen.covers(lease) => until,
            _ => {
                let until = now + self.timing.lease;
                tracing::info!(target: "failover", member = %self.claim.member_id, epoch = lease.epoch,
                    "the lease expired, but this member's queue does not know where the last master stopped; giving better-fed members a head start");
                self.deferred = Some((Seen::of(lease), until));
                until
            }
        };
        (now < until).then_some(until)
    }

    /// When `lease` expires, on the lease clock (see [`crate::lease`]).
    fn expiry(&mut self, lease: &Lease) -> Instant {
        match self.fallback {
            Some((seen, expiry)) if seen.covers(lease) => return expiry,
            Some(_) => self.fallback = None,
            None => {}
        }
        match &self.clock {
            Some(clock) => clock.takeover_at(lease.renewed_at_ms, lease.lease_ms),
            // Unreachable in practice (a check samples the clock first); be safe anyway.
            None => self.now() + Duration::from_millis(lease.lease_ms),
        }
    }

    /// Whether `lease` is one this member instance held as master and still
    /// names it: its own token *and* the epoch it held last. A version that
    /// names it under another epoch (a take-over whose answer was lost, or one
    /// it withdrew because the lease was deleted meanwhile) was never judged
    /// safe to act on, so it is judged like anybody's.
    fn is_own(&self, lease: &Lease) -> bool {
        lease.token == Some(self.claim.token) && self.last_held == Some(lease.epoch)
    }

    /// Follows the lease as a standby.
    fn follow(&mut self, lease: &Lease) {
        self.lost_races = 0;
        if self.state != State::Slave || self.followed != Some(lease.epoch) {
            self.followed = Some(lease.epoch);
            self.set_state(State::Slave, Some(lease.epoch));
            self.shared.events.emit(Event::Slave { epoch: lease.epoch });
        }
        self.shared.metrics.followed(lease.epoch);
        if let Some(published) = lease.published() {
            self.last_seen = Some(published.clone());
            // Every check: a standby whose feed lags catches up with it.
            self.shared.sync.incoming(lease.epoch, &published);
            if self.seen_sync.as_ref() != Some(&published.id) {
                self.seen_sync = Some(published.id.clone());
                tracing::debug!(target: "failover::managed", member = %self.claim.member_id, id = %published.id, "synchronize");
                self.shared.events.emit(Event::Synchronize {
                    id: published.id,
                    epoch: lease.epoch,
                });
            }
        }
    }

    /// [`Election::try_take_over`] in its tracing span.
    async fn take_over(&mut self, seen: Option<Lease>) -> Instant {
        let span = metrics::take_over_span(&self.shared.name, &self.claim.member_id);
        self.try_take_over(seen).instrument(span).await
    }

    /// Takes the lease over, conditional on the version seen; `None`: the lease is
    /// missing, and the store creates it (a vacancy on MongoDB, see
    /// [`Created`]).
    async fn try_take_over(&mut self, seen: Option<Lease>) -> Instant {
        self.set_state(State::Ticking, None);
        let deadline = self.now() + self.timing.intervals.ticking;
        let confirm = seen.as_ref().is_none_or(|l| !l.released && !self.is_own(l));
        if confirm {
            // Expired by our last sample (or no lease yet, whose fresh epoch needs
            // the clock): confirm with a fresh sample.
            let fresh = match self.sample(deadline).await {
                Ok(sample) => sample,
                Err(e) => return self.fail(e),
            };
            let stepped = self.clock.is_some_and(|old| old.disagrees_with(&fresh));
            self.clock = Some(fresh);
            if let Some(lease) = seen.as_ref() {
                if stepped {
                    let expiry = self.now() + Duration::from_millis(lease.lease_ms);
                    tracing::warn!(target: "failover", member = %self.claim.member_id,
                        "the lease clock stepped (or a new primary stamps now); judging this lease by local observation");
                    self.fallback = Some((Seen::of(lease), expiry));
                }
                let expiry = self.expiry(lease);
                if self.now() < expiry {
                    self.follow(lease);
                    return expiry.min(self.now() + self.timing.intervals.slave);
                }
            }
        }
        let fresh_epoch = self
            .clock
            .map_or(1, |c| rules::fresh_epoch(c.stamp_now_ms(self.now())));
        let sent = self.now();
        let name = self.shared.name.clone();
        let lease_ms = self.timing.lease.as_millis() as u64;
        let attempt = match &seen {
            Some(lease) => self
                .timed(
                    deadline,
                    "take lease",
                    self.store.acquire(&name, lease, &self.claim, lease_ms),
                )
                .await
                .map(|taken| taken.map_or(Created::Raced, Created::Held)),
            None => {
                self.timed(
                    deadline,
                    "create lease",
                    self.store.create(
                        &name,
                        &self.claim,
                        lease_ms,
                        fresh_epoch,
                        self.last_seen.clone(),
                    ),
                )
                .await
            }
        };
        match attempt {
            Ok(Created::Held(lease)) => {
                let from = TakenFrom::of(seen.is_some(), confirm);
                self.shared
                    .metrics
                    .took_over(lease.epoch, from, self.now() + self.timing.lease);
                self.become_master(lease, sent)
            }
            Ok(Created::Vacancy(lease)) => {
                tracing::info!(target: "failover", member = %self.claim.member_id, epoch = lease.epoch,
                    "the lease was missing: wrote a vacancy, which any member takes over once it expires");
                self.observe(Some(&lease));
                self.follow(&lease);
                let now = self.now();
                self.expiry(&lease).min(now + self.timing.intervals.slave)
            }
            Ok(Created::Raced) => {
                // Another member won. Read again soon to learn who, backing off so
                // that a read that lags the winner's write cannot make us spin.
                self.lost_races = self.lost_races.saturating_add(1);
                let pause = Duration::from_millis(10 << self.lost_races.min(6))
                    .min(self.timing.intervals.slave);
                tracing::debug!(target: "failover::tests", member = %self.claim.member_id, ?pause, "another member took the lease first");
                self.now() + pause
            }
            Err(e) => self.fail(e),
        }
    }

    fn become_master(&mut self, lease: Lease, sent: Instant) -> Instant {
        let held = Held {
            epoch: lease.epoch,
            valid_until: deadline(sent, self.timing.lease),
            lease: lease.clone(),
        };
        let inherited = lease.published();
        self.shared
            .sync
            .became_master(held.epoch, inherited.as_ref());
        self.seen_sync = lease.sync.clone();
        if inherited.is_some() {
            self.last_seen.clone_from(&inherited);
        }
        self.published = inherited;
        self.followed = None;
        self.fallback = None;
        self.deferred = None;
        self.yield_until = None;
        self.handing_over = false;
        self.lost_races = 0;
        self.observe(Some(&lease));
        self.shared.set_lease(Some((held.epoch, held.valid_until)));
        let epoch = held.epoch;
        self.last_held = Some(epoch);
        tracing::Span::current().record("epoch", epoch);
        self.held = Some(held);
        self.set_state(State::Master, Some(epoch));
        self.shared.events.emit(Event::Master { epoch });
        sent + self.timing.intervals.master
    }

    // ----- master ------------------------------------------------------------

    async fn renew(&mut self, held: Held) -> Instant {
        if self.now() >= held.valid_until {
            // The renewal is due after the deadline: this process did not run in
            // time (it was paused, starved or suspended), so the lease may be
            // another's now.
            self.shared.metrics.renewal_missed();
            return self.step_down(
                State::Error,
                Some(Error::LeaseExpired { epoch: held.epoch }),
            );
        }
        // Every request for progress made before this point is in `outgoing`.
        let request = self.shared.progress_request();
        let outgoing = self.shared.sync.outgoing();
        let publish = outgoing.filter(|p| self.published.as_ref() != Some(p));
        let sent = self.now();
        let name = self.shared.name.clone();
        let result = self
            .timed(
                held.valid_until,
                "renew lease",
                self.store
                    .renew(&name, &self.claim, &held.lease, publish.clone()),
            )
            .await;
        self.shared
            .metrics
            .renewal(self.now().saturating_duration_since(sent), result.is_ok());
        match result {
            Ok(Renewal::Renewed(lease)) => {
                let asked = lease.step_down;
                self.observe(Some(&lease));
                let held = Held {
                    valid_until: deadline(sent, self.timing.lease),
                    lease,
                    ..held
                };
                self.shared.set_lease(Some((held.epoch, held.valid_until)));
                self.held = Some(held.clone());
                if publish.is_some() {
                    self.last_seen.clone_from(&publish);
                    self.published = publish;
                }
                self.shared.published_progress(request);
                tracing::trace!(target: "failover::tests", member = %self.claim.member_id, epoch = held.epoch, "lease renewed");
                if asked && !self.handing_over && !self.shared.is_stopping() {
                    self.begin_hand_over();
                    return self.now();
                }
                sent + self.timing.intervals.master
            }
            Ok(Renewal::StepDown(lease)) => {
                // Not extended: the deadline stays that of the last renewal.
                self.observe(Some(&lease));
                self.held = Some(Held { lease, ..held });
                self.begin_hand_over();
                self.now()
            }
            Ok(Renewal::Lost) => {
                tracing::warn!(target: "failover", member = %self.claim.member_id, epoch = held.epoch, "lease was taken over; stepping down");
                self.step_down(State::Slave, None);
                self.now()
            }
            Err(e) if matches!(e, Error::Timeout { .. }) || self.now() >= held.valid_until => {
                self.step_down(State::Error, Some(e))
            }
            Err(e) => {
                // Keep the lease while it is valid and retry soon.
                self.shared.events.emit(Event::Error(e));
                (self.now() + self.timing.intervals.master / 4).min(held.valid_until)
            }
        }
    }

    /// Stops acting at once (ends the term), then reports.
    fn step_down(&mut self, to: State, error: Option<Error>) -> Instant {
        self.shared.set_lease(None);
        self.held = None;
        // A lease that still names this member after it stopped acting (its
        // write may have been withdrawn, or the lease deleted and written again)
        // is judged like anybody's from now on.
        self.last_held = None;
        if let Some(e) = error {
            tracing::warn!(target: "failover", member = %self.claim.member_id, error = %e, "stepping down");
            self.shared.events.emit(Event::Error(e));
        }
        self.set_state(to, None);
        self.now() + self.timing.intervals.error
    }

    /// On shutdown: lets the running work finish (renewing meanwhile), for at most
    /// the grace period; then drops it (what can be dropped) and, if it is still
    /// running when the next renewal is due, stops acting without a release: the
    /// lease then expires instead of being handed over under running work.
    async fn stop_work(&mut self, mut wake: Instant) {
        let grace_end = self.now() + self.timing.shutdown_grace;
        while self.held.is_some() && !self.shared.is_idle() {
            if self.now() >= grace_end {
                tracing::warn!(target: "failover", member = %self.claim.member_id,
                    grace = ?self.timing.shutdown_grace, "the running work did not finish in time; dropping it");
                self.shared.kill.cancel();
                let dropped = tokio::select! {
                    _ = self.shared.idle() => true,
                    _ = sleep_until(self.shared.clock.timer(wake)) => self.shared.is_idle(),
                };
                if !dropped {
                    tracing::warn!(target: "failover", member = %self.claim.member_id,
                        "the work ignores cancellation; stopping without a release (the lease expires instead)");
                    self.step_down(State::Stopped, None);
                }
                return;
            }
            tokio::select! {
                _ = self.shared.idle() => {}
                _ = sleep_until(self.shared.clock.timer(wake.min(grace_end))) => {
                    if self.now() >= wake {
                        if let Some(held) = self.held.clone() {
                            wake = self.renew(held).await;
                        }
                    }
                }
            }
        }
    }

    /// Hands the lease over on shutdown, once no work runs under it.
    async fn release(&mut self) {
        if let Some(held) = &self.held {
            // Work cannot start any more (the member is stopping), but a worker
            // may hold a guard for the instant it takes to see that: wait for it,
            // at most until the lease's deadline.
            let until = self.shared.clock.timer(held.valid_until);
            let _ = tokio::time::timeout_at(until, self.shared.idle()).await;
        }
        let held = self.held.take();
        let was_master = held.is_some();
        self.shared.set_lease(None);
        if self.shared.is_aborted() {
            // A crash (the task is being aborted): nothing is handed over.
        } else if let Some(held) = held.filter(|_| self.shared.is_idle()) {
            self.write_release(held).await;
        } else if was_master {
            tracing::warn!(target: "failover", member = %self.claim.member_id,
                "work still runs under the lease; not releasing it (it expires instead)");
        }
        self.set_state(State::Stopped, None);
        self.shared.events.close();
    }

    /// Writes the release of `held`, publishing the last progress; the member has
    /// stopped acting already.
    async fn write_release(&mut self, held: Held) {
        let publish = self
            .shared
            .sync
            .outgoing()
            .filter(|p| self.published.as_ref() != Some(p));
        let deadline = self.now() + self.timing.intervals.ticking;
        let name = self.shared.name.clone();
        match self
            .timed(
                deadline,
                "release lease",
                self.store.release(&name, &self.claim, &held.lease, publish),
            )
            .await
        {
            Ok(Some(lease)) => {
                self.observe(Some(&lease));
                tracing::info!(target: "failover", member = %self.claim.member_id, epoch = held.epoch, "lease released");
                self.shared
                    .events
                    .emit(Event::Released { epoch: held.epoch });
            }
            Ok(None) => {
                tracing::warn!(target: "failover", member = %self.claim.member_id, "lease was no longer ours to release")
            }
            Err(e) => self.shared.events.emit(Event::Error(e)),
        }
    }

    // ----- step-down on request ----------------------------------------------

    /// An operator asked this master to step down: end the term (no new work
    /// starts, holders of the term learn it), keep the lease valid while the work
    /// stops, then release it (see [`Election::hand_over`]).
    fn begin_hand_over(&mut self) {
        if self.shared.is_stopping() {
            // A shutdown hands over anyway.
            return;
        }
        let epoch = self.held.as_ref().map(|h| h.epoch);
        tracing::info!(target: "failover", member = %self.claim.member_id, ?epoch,
            "asked to step down; handing the lease over once the work has stopped");
        self.handing_over = true;
        self.shared.end_term();
    }

    /// The graceful hand-over after a step-down request, as on shutdown: lets
    /// the running work finish for at most the grace period while it keeps
    /// renewing, then stops acting and releases the lease with its progress
    /// published, and stays a standby, taking no lease for one lease's time.
    /// Work still running after the grace period is not dropped: the member stops
    /// acting without a release, and the lease expires instead.
    async fn hand_over(&mut self) -> Instant {
        let grace_end = self.now() + self.timing.shutdown_grace;
        // The operator's copy took the version of the last renewal: renew first.
        let mut wake = self.now();
        loop {
            if self.held.is_none() {
                // Lost meanwhile (a renewal failed): nothing to hand over.
                self.handing_over = false;
                return self.now();
            }
            if self.shared.is_stopping() {
                // The shutdown finishes the hand-over.
                return wake;
            }
            if self.shared.is_idle() {
                break;
            }
            if self.now() >= grace_end {
                tracing::warn!(target: "failover", member = %self.claim.member_id,
                    grace = ?self.timing.shutdown_grace,
                    "the work did not stop within the grace period after a step-down request; stopping without a release (the lease expires instead)");
                self.handing_over = false;
                self.yield_until = Some(self.now() + self.timing.lease);
                self.step_down(State::Slave, None);
                return self.now();
            }
            tokio::select! {
                _ = self.shared.idle() => {}
                _ = self.shared.stopping.cancelled() => {}
                _ = sleep_until(self.shared.clock.timer(wake.min(grace_end))) => {
                    if self.now() >= wake {
                        if let Some(held) = self.held.clone() {
                            wake = self.renew(held).await;
                        }
                    }
                }
            }
        }
        self.handing_over = false;
        let Some(held) = self.held.take() else {
            return self.now();
        };
        self.shared.set_lease(None);
        self.write_release(held).await;
        self.yield_until = Some(self.now() + self.timing.lease);
        self.set_state(State::Slave, None);
        self.now()
    }

    /// Until when this member still lets the standbys go first after a step-down.
    fn yielding(&mut self, now: Instant) -> Option<Instant> {
        match self.yield_until {
            Some(until) if now < until => Some(until),
            _ => {
                self.yield_until = None;
                None
            }
        }
    }

    /// Keeps the lease last read or written, for [`Member::leader`](crate::Member::leader).
    fn observe(&self, lease: Option<&Lease>) {
        self.shared.observe(lease.cloned(), self.clock);
    }

    // ----- helpers -----------------------------------------------------------

    fn fail(&mut self, error: Error) -> Instant {
        tracing::warn!(target: "failover", member = %self.claim.member_id, %error, "database check failed");
        self.shared.events.emit(Event::Error(error));
        self.set_state(State::Error, None);
        self.now() + self.timing.intervals.error
    }

    fn note_connected(&mut self) {
        if !self.connected {
            self.connected = true;
            self.shared.events.emit(Event::Connected);
        }
    }

    fn set_state(&mut self, new: State, epoch: Option<u64>) {
        let old = self.state;
        if old == new {
            return;
        }
        self.state = new;
        tracing::info!(target: "failover::states", member = %self.claim.member_id, %old, %new, ?epoch, "state change");
        self.shared
            .set_status(new, self.held.as_ref().map(|h| h.epoch));
        self.shared
            .events
            .emit(Event::StateChange { old, new, epoch });
    }

    /// Runs a store operation with a deadline on the lease clock.
    async fn timed<T>(
        &self,
        deadline: Instant,
        operation: &'static str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = self.now();
        match timeout_at(self.shared.clock.timer(deadline), op).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation,
                after: deadline.saturating_duration_since(started),
            }),
        }
    }
}

/// A master's deadline: `sent + lease − margin` ([`rules::master_deadline`]).
fn deadline(sent: Instant, lease: Duration) -> Instant {
    let lease_ms = lease.as_millis().min(u64::MAX as u128) as u64;
    let valid_ms = rules::master_deadline(0, lease_ms);
    sent + Duration::from_millis(valid_ms)
}
