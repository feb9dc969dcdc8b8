//! The state machine of one member: when to check, when to take over, when to
//! renew, when to step down. The lease rules it applies are in [`crate::lease`].

use std::sync::Arc;
use std::time::Duration;

use bson::Bson;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::lease::{ClockSample, Lease};
use crate::member::Shared;
use crate::options::Intervals;
use crate::state::State;
use crate::store::{Claim, Store};

/// How often a standby re-reads the server's clock when nothing else asks for it.
const CLOCK_REFRESH: Duration = Duration::from_secs(60);

/// The lease this member holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    /// The member may act until here: the send time of its last successful
    /// renewal plus the lease, minus the step-down margin.
    valid_until: Instant,
}

pub(crate) struct Election {
    shared: Arc<Shared>,
    store: Store,
    claim: Claim,
    intervals: Intervals,
    lease: Duration,
    margin: Duration,
    state: State,
    held: Option<Held>,
    clock: Option<ClockSample>,
    /// After a step of the server's clock: the version whose expiry is judged by
    /// local observation alone, and that expiry.
    fallback: Option<(u64, Instant)>,
    /// The epoch of the master this member follows as a standby.
    followed: Option<u64>,
    /// The synchronize id last seen as a standby (or inherited at take-over).
    seen_sync: Option<Bson>,
    /// The synchronize id last written as master.
    published: Option<Bson>,
    connected: bool,
}

impl Election {
    pub fn new(
        shared: Arc<Shared>,
        store: Store,
        claim: Claim,
        intervals: Intervals,
        lease: Duration,
        margin: Duration,
    ) -> Self {
        Election {
            shared,
            store,
            claim,
            intervals,
            lease,
            margin,
            state: State::Init,
            held: None,
            clock: None,
            fallback: None,
            followed: None,
            seen_sync: None,
            published: None,
            connected: false,
        }
    }

    /// Runs until `stop` turns true, then hands the lease over.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut wake = Instant::now() + self.intervals.init;
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                _ = sleep_until(wake) => {}
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                next = self.step() => wake = next,
            }
        }
        self.release().await;
    }

    /// One check or renewal; returns when to wake up next.
    async fn step(&mut self) -> Instant {
        match self.held {
            Some(held) => self.renew(held).await,
            None => self.check().await,
        }
    }

    // ----- standby -----------------------------------------------------------

    /// Reads the lease and decides: follow it, or take it over.
    async fn check(&mut self) -> Instant {
        let deadline = Instant::now() + self.intervals.slave;
        let stale = self
            .clock
            .is_none_or(|c| c.local + CLOCK_REFRESH <= Instant::now());
        if stale {
            match self
                .timed(deadline, "read server clock", self.store.clock())
                .await
            {
                Ok(sample) => self.clock = Some(sample),
                Err(e) => return self.fail(e),
            }
        }
        let lease = match self
            .timed(deadline, "read lease", self.store.read(&self.shared.name))
            .await
        {
            Ok(lease) => lease,
            Err(e) => return self.fail(e),
        };
        self.note_connected();
        let Some(lease) = lease else {
            tracing::debug!(target: "failover::tests", member = %self.claim.member_id, "no lease yet");
            return self.take_over(None).await;
        };
        if lease.released || lease.token == Some(self.claim.token) {
            // Handed over, or our own lease from before a step-down: take it at once.
            tracing::debug!(target: "failover::tests", member = %self.claim.member_id, epoch = lease.epoch,
                released = lease.released, "lease free to take");
            return self.take_over(Some(lease)).await;
        }
        let expiry = self.expiry(&lease);
        let now = Instant::now();
        tracing::debug!(target: "failover::tests", member = %self.claim.member_id, epoch = lease.epoch,
            holder = lease.holder.as_deref().unwrap_or(""), expires_in = ?expiry.saturating_duration_since(now), "lease checked");
        if now >= expiry {
            return self.take_over(Some(lease)).await;
        }
        self.follow(&lease);
        expiry.min(now + self.intervals.slave)
    }

    /// When `lease` expires, on this member's monotonic clock (see [`crate::lease`]).
    fn expiry(&mut self, lease: &Lease) -> Instant {
        match self.fallback {
            Some((version, expiry)) if version == lease.version => return expiry,
            Some(_) => self.fallback = None,
            None => {}
        }
        let lease_ms = lease.lease_ms.min(i64::MAX as u64) as i64;
        match &self.clock {
            Some(clock) => clock.surely_after(lease.renewed_at_ms.saturating_add(lease_ms)),
            // Unreachable in practice (a check reads the clock first); be safe anyway.
            None => Instant::now() + Duration::from_millis(lease.lease_ms),
        }
    }

    /// Follows the lease as a standby.
    fn follow(&mut self, lease: &Lease) {
        if self.state != State::Slave || self.followed != Some(lease.epoch) {
            self.followed = Some(lease.epoch);
            self.set_state(State::Slave, Some(lease.epoch));
            self.shared.events.emit(Event::Slave { epoch: lease.epoch });
        }
        if let Some(id) = &lease.sync {
            if self.seen_sync.as_ref() != Some(id) {
                self.seen_sync = Some(id.clone());
                self.shared.sync.incoming(id);
                tracing::debug!(target: "failover::managed", member = %self.claim.member_id, %id, "synchronize");
                self.shared.events.emit(Event::Synchronize {
                    id: id.clone(),
                    epoch: lease.epoch,
                });
            }
        }
    }

    /// Takes the lease over, conditional on the version seen (`None`: no lease yet).
    async fn take_over(&mut self, seen: Option<Lease>) -> Instant {
        self.set_state(State::Ticking, None);
        let deadline = Instant::now() + self.intervals.ticking;
        if let Some(lease) = seen
            .as_ref()
            .filter(|l| !l.released && l.token != Some(self.claim.token))
        {
            // Expired by our last clock reading: confirm with a fresh one.
            let fresh = match self
                .timed(deadline, "read server clock", self.store.clock())
                .await
            {
                Ok(sample) => sample,
                Err(e) => return self.fail(e),
            };
            let stepped = self.clock.is_some_and(|old| old.disagrees_with(&fresh));
            self.clock = Some(fresh);
            if stepped {
                let expiry = Instant::now() + Duration::from_millis(lease.lease_ms);
                tracing::warn!(target: "failover", member = %self.claim.member_id,
                    "the database server's clock stepped; judging this lease by local observation");
                self.fallback = Some((lease.version, expiry));
            }
            let expiry = self.expiry(lease);
            if Instant::now() < expiry {
                self.follow(lease);
                return expiry.min(Instant::now() + self.intervals.slave);
            }
        }
        let sent = Instant::now();
        let name = self.shared.name.clone();
        let lease_ms = self.lease.as_millis() as u64;
        let attempt = self
            .timed(
                deadline,
                "take lease",
                self.store.acquire(
                    &name,
                    seen.as_ref().map(|l| l.version),
                    &self.claim,
                    lease_ms,
                ),
            )
            .await;
        match attempt {
            Ok(Some(lease)) => self.become_master(lease, sent),
            Ok(None) => {
                tracing::debug!(target: "failover::tests", member = %self.claim.member_id, "another member took the lease first");
                // Read again at once to learn who won.
                Instant::now()
            }
            Err(e) => self.fail(e),
        }
    }

    fn become_master(&mut self, lease: Lease, sent: Instant) -> Instant {
        let held = Held {
            epoch: lease.epoch,
            valid_until: sent + self.lease - self.margin,
        };
        // The previous master's last published id: the work to resume after.
        if let Some(id) = &lease.sync {
            if self.seen_sync.as_ref() != Some(id) {
                self.shared.sync.incoming(id);
            }
        }
        self.seen_sync = lease.sync.clone();
        self.published = lease.sync;
        self.followed = None;
        self.fallback = None;
        self.held = Some(held);
        self.shared.set_lease(Some((held.epoch, held.valid_until)));
        self.set_state(State::Master, Some(held.epoch));
        self.shared.events.emit(Event::Master { epoch: held.epoch });
        sent + self.intervals.master
    }

    // ----- master ------------------------------------------------------------

    async fn renew(&mut self, held: Held) -> Instant {
        if Instant::now() >= held.valid_until {
            // The renewal is due after the deadline: this process did not run in
            // time (it was paused or starved), so the lease may be another's now.
            return self.step_down(
                State::Error,
                Some(Error::LeaseExpired { epoch: held.epoch }),
            );
        }
        let outgoing = self.shared.sync.outgoing();
        let sync = outgoing.filter(|id| self.published.as_ref() != Some(id));
        let sent = Instant::now();
        let name = self.shared.name.clone();
        let result = self
            .timed(
                held.valid_until,
                "renew lease",
                self.store
                    .renew(&name, &self.claim, held.epoch, sync.clone()),
            )
            .await;
        match result {
            Ok(Some(_)) => {
                let held = Held {
                    valid_until: sent + self.lease - self.margin,
                    ..held
                };
                self.held = Some(held);
                self.shared.set_lease(Some((held.epoch, held.valid_until)));
                if sync.is_some() {
                    self.published = sync;
                }
                tracing::trace!(target: "failover::tests", member = %self.claim.member_id, epoch = held.epoch, "lease renewed");
                sent + self.intervals.master
            }
            Ok(None) => {
                tracing::warn!(target: "failover", member = %self.claim.member_id, epoch = held.epoch, "lease was taken over; stepping down");
                self.step_down(State::Slave, None);
                Instant::now()
            }
            Err(e) if matches!(e, Error::Timeout { .. }) || Instant::now() >= held.valid_until => {
                self.step_down(State::Error, Some(e))
            }
            Err(e) => {
                // Keep the lease while it is valid and retry soon.
                self.shared.events.emit(Event::Error(e));
                (Instant::now() + self.intervals.master / 4).min(held.valid_until)
            }
        }
    }

    /// Stops acting at once, then reports.
    fn step_down(&mut self, to: State, error: Option<Error>) -> Instant {
        self.shared.set_lease(None);
        self.held = None;
        if let Some(e) = error {
            tracing::warn!(target: "failover", member = %self.claim.member_id, error = %e, "stepping down");
            self.shared.events.emit(Event::Error(e));
        }
        self.set_state(to, None);
        Instant::now() + self.intervals.error
    }

    /// Hands the lease over on shutdown (after the work has stopped).
    async fn release(&mut self) {
        if let Some(held) = self.held.take() {
            self.shared.set_lease(None);
            let sync = self
                .shared
                .sync
                .outgoing()
                .filter(|id| self.published.as_ref() != Some(id));
            let deadline = Instant::now() + self.intervals.ticking;
            let name = self.shared.name.clone();
            match self
                .timed(
                    deadline,
                    "release lease",
                    self.store.release(&name, &self.claim, held.epoch, sync),
                )
                .await
            {
                Ok(true) => {
                    tracing::info!(target: "failover", member = %self.claim.member_id, epoch = held.epoch, "lease released");
                    self.shared.events.emit(Event::Info(format!(
                        "released the lease of epoch {}",
                        held.epoch
                    )));
                }
                Ok(false) => {
                    tracing::warn!(target: "failover", member = %self.claim.member_id, "lease was no longer ours to release")
                }
                Err(e) => self.shared.events.emit(Event::Error(e)),
            }
        }
        self.set_state(State::Stopped, None);
        self.shared.events.close();
    }

    // ----- helpers -----------------------------------------------------------

    fn fail(&mut self, error: Error) -> Instant {
        tracing::warn!(target: "failover", member = %self.claim.member_id, %error, "database check failed");
        self.shared.events.emit(Event::Error(error));
        self.set_state(State::Error, None);
        Instant::now() + self.intervals.error
    }

    fn note_connected(&mut self) {
        if !self.connected {
            self.connected = true;
            self.shared.events.emit(Event::Info("connected".to_owned()));
        }
    }

    fn set_state(&mut self, new: State, epoch: Option<u64>) {
        let old = self.state;
        if old == new {
            return;
        }
        self.state = new;
        tracing::info!(target: "failover::states", member = %self.claim.member_id, %old, %new, ?epoch, "state change");
        self.shared.set_status(new, self.held.map(|h| h.epoch));
        self.shared
            .events
            .emit(Event::StateChange { old, new, epoch });
    }

    /// Runs a store operation with a deadline.
    async fn timed<T>(
        &self,
        deadline: Instant,
        operation: &'static str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        match timeout_at(deadline, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation,
                after: deadline.saturating_duration_since(started),
            }),
        }
    }
}
