//! The lease document, and the rules that say who may act when.
//!
//! # The protocol
//!
//! Every write of a lease (take-over, renewal, release) *inserts* its next version:
//! a document `_id: {lease: <subsystem>, v: <version>}` in the lease collection. The
//! current lease is the *newest* version: the highest epoch, and of that epoch the
//! highest version. The holder deletes versions far behind now and then.
//!
//! | field | meaning |
//! |---|---|
//! | `holder` | member id of the master (for people; never compared) |
//! | `token` | random number of the holding member *instance* |
//! | `epoch` | fencing token: grows with each take-over and never goes back |
//! | `version` | the version (as in `_id.v`); its presence marks a written version |
//! | `lease_ms` | how long the holder promises to stay valid after `renewed_at` |
//! | `renewed_at` | the time of the last write, stamped by the database node that applied it (`$currentDate`) |
//! | `released` | the holder handed the lease over; anybody may take it at once |
//! | `sync` | the master's synchronize id (managed mode: the key of the last task it finished) |
//! | `run` | managed mode: `{epoch, first, count, from, upto}`: the epoch and length of the master's run of finished tasks, the key from which every task up to `sync` was run (its origin), and (tasks with feed sequence numbers) the interval of sequence numbers of which every task was run |
//! | `step_down` | set by an operator: the master hands over at its next renewal |
//! | `successor` | managed mode: the token of the standby that asked for the hand-over, because it holds tasks that no master would run; it goes first when the lease is released |
//!
//! Beside them live small *clock documents*, `_id: {clock: <subsystem>, member: <member id>}`,
//! that members stamp to read the database's clock (below). The holder's garbage
//! collection also deletes versions of lower epochs than its own and clock
//! documents that nobody stamped for an hour.
//!
//! * **Taking** the lease is writing version `v + 1` after reading version `v`: an
//!   upsert of that `_id` filtered on `version` not existing. Of members racing for
//!   one version exactly one succeeds (the others get a duplicate key), and it gets
//!   `epoch + 1`: no two members ever hold one epoch. The uniqueness of `_id` is the
//!   only atomicity asked of the server; conditional updates are not relied on
//!   (FerretDB 1.x, for one, does not apply them atomically). After a write the
//!   writer reads the newest version back and wins only if it is its own.
//! * **The newest is judged by epoch first.** A version of a lower epoch never
//!   leads, whatever its number: a deposed master's late renewal, or a taker that
//!   was paused long enough to insert a version that was since garbage-collected,
//!   loses at its read-back. A write that finds its version's slot taken by a
//!   document of an epoch below the lease it follows deletes that stale document
//!   (documents are never changed in place, so the filter on its epoch names
//!   exactly it) and tries the slot again.
//! * **A missing lease is never taken at once.** A member that finds no lease
//!   writes a *vacancy*: version 1, no holder, epoch from the database clock in
//!   milliseconds ([`rules::fresh_epoch`]), stamped now, with its own lease
//!   duration. A vacancy is taken over like any lease that ran out, once the
//!   stamping clock has passed its stamp plus its lease. So **deleting a lease
//!   (every version of it) is safe at any instant**: the vacancy is stamped after
//!   the deletion, which came after the old master's last successful renewal, so
//!   the old master's deadline has passed before anybody may take the vacancy over
//!   (when members of one subsystem use one lease duration, or the vacancy's
//!   writer the longest); and its epoch, from the clock, is above every epoch
//!   counted up before (as long as a subsystem was taken over less than once per
//!   millisecond on average), so the old master's late renewals lose, fenced
//!   collections accept the next master, and epochs never go back. The price: the
//!   first election on an empty database takes one lease longer. (The in-process
//!   [`MemoryStore`](crate::MemoryStore), whose leases cannot be deleted, takes a
//!   missing lease at once.) What is *not* protected against: deleting only the
//!   newest version of a held lease and keeping older ones, which makes standbys
//!   judge an older stamp; delete a lease whole or not at all.
//! * A document that `failover` cannot read is never overwritten silently:
//!   members report [`Error::MalformedLease`] and wait, and
//!   [`repair`](crate::repair_lease) replaces it with a vacancy above its epoch.
//!   Epochs are stored as 64-bit integers; a take-over of a lease at
//!   [`rules::MAX_EPOCH`] is refused with [`Error::MalformedLease`] rather than
//!   writing one epoch twice.
//! * **Renewing** (and releasing) is the holder writing the next version, so it
//!   fails as soon as anybody else has taken the lease.
//! * **Expiry is judged on the clock that stamped the lease.** `renewed_at` is
//!   written with `$currentDate` by the node that applies the write: the replica
//!   set's primary, or the shard's primary behind a `mongos`. A standby reads *that*
//!   clock by stamping its own clock document in the same collection with
//!   `$currentDate` and reading it back in the same `findAndModify` (the collection
//!   is small and unsharded, so all its documents live on one replica set). It takes
//!   the midpoint of the round trip as the instant of the stamp, the half round trip
//!   (+1 ms for the date's precision) as the error, and takes over only once the
//!   stamping clock has surely passed `renewed_at + lease_ms` ([`rules::takeover_delay_ms`]).
//!   Just before taking over it stamps again; if the two samples disagree by more
//!   than their errors and NTP's largest slew (500 ppm) allow, a clock stepped or
//!   the primary changed, and it falls back to client-go's rule: a whole `lease_ms`
//!   from that moment, on its own clock ([`rules::clock_stepped`]). `hello`'s
//!   `localTime`, answered by whatever server the driver picked (a `mongos` has a
//!   clock of its own), is never used. Members' wall clocks never matter.
//! * **The master steps down first.** A master acts only until `t_s + lease_ms −
//!   margin` ([`rules::master_deadline`]), where `t_s` is the instant on its own
//!   clock at which it *sent* its last successful renewal (so `t_s` comes before the
//!   stamp `renewed_at`), and the margin is a tenth of the lease. A standby cannot
//!   take over before the stamping clock passes `renewed_at + lease_ms`. So the
//!   master has stopped at least the margin before any standby may start.
//!   Deadlines are measured on `CLOCK_BOOTTIME`, which counts time the machine
//!   spent suspended, and a task starts only after a check of that clock.
//! * **Release** on shutdown marks the lease `released` (only after the master's
//!   work has stopped), so a standby takes over at its next check instead of after
//!   expiry.
//! * **Step-down on request** ([`crate::step_down`]): the operator writes the next
//!   version as a copy of the newest with `step_down` set: same holder, token,
//!   epoch and `renewed_at`, so it extends nothing and breaks no lease. The
//!   master's next renewal finds its version taken; its read-back sees its own
//!   token with `step_down` and hands over as on shutdown (the term ends, the work
//!   stops, the lease is released), then lets the standbys go first for one lease.
//!   A standby's judgement of a lease (its expiry on a stepped clock, its head
//!   start) carries over to such a copy, since the copy has the same stamp.
//!
//! # What is guaranteed, and under which assumptions
//!
//! *At most one master acts at any instant* (starts a task, sees
//! [`Member::is_master`](crate::Member::is_master) true, holds a valid
//! [`Leadership`](crate::Leadership)), and *each epoch has one holder, and epochs
//! only grow*, provided that
//! 1. the database keeps `_id` unique (every MongoDB-compatible server does, on a
//!    standalone server, a replica set, and through `mongos`), with majority write
//!    concern so that a primary change does not undo a write;
//! 2. the clocks of the replica set's members (the nodes that may stamp the lease)
//!    agree within the step-down margin, a tenth of the lease; NTP keeps them within
//!    milliseconds;
//! 3. clocks advance at rates that differ by less than the margin over one lease
//!    (a few percent; real clocks differ by less than 0.05 %).
//!
//! What is **not** guaranteed: a task (or the application's work) already running
//! when the lease ends is not interrupted, unless it watches
//! [`WorkContext::lost`](crate::WorkContext::lost) or the cancellation token of its
//! term; a process that is paused in the middle of a write can still land that
//! write late. Fencing ([`crate::fence`]) is what protects the writes of such a
//! master: every write carries its epoch and the storage refuses older ones.
//!
//! # The model
//!
//! The rules in [`rules`] are pure functions, shared by the election and by the
//! model of the protocol in `tests/model.rs` (with `stateright`), which `cargo test
//! --test model` explores exhaustively among two or three members, a database of
//! one or two nodes whose clocks differ by up to a margin, a `mongos` whose clock
//! runs ahead, member clocks that drift, messages delayed, lost (also after the
//! write was applied), members paused or crashed. It explores the store as it runs:
//! versions in unique slots, the newest by (epoch, version), the insert and the
//! read-back of the two newest as separate steps, a take-over's pre-read and its
//! check that the version it judged is right below its own, vacancies for a missing
//! lease, stale lower-epoch occupants replaced, a renewal stepping over its own
//! earlier version, and step-down copies (an operator's, or a standby's naming
//! itself as successor). Faults include the deletion of every version and the
//! holder's garbage collection at any instant. It also covers the managed queue
//! (the library's own rule, with capacity refusals and tasks only a standby
//! holds), the durable queue (fenced progress that never goes back, dead letters
//! only after an accepted progress write, nothing lost, at most one repeat per
//! unclean end) and `failover run`'s leashed children (never two at once while a
//! supervisor is paused). It checks that no two members act for different epochs
//! at one tick, that each epoch has one holder and held epochs only grow, that no
//! task a live member holds is lost and every one is run at last, that a graceful
//! hand-over repeats nothing, that a stale fenced write never lands after a newer
//! one, and (under fair scheduling) that a crashed or released lease is taken
//! within a bound. Each known-wrong variant yields a counterexample, printed: among
//! them expiry on the `mongos` clock, no step-down margin, a missing lease taken at
//! once, the newest judged by version, a take-over without the predecessor check,
//! an own lease taken at once whatever its epoch, a child killed only by its
//! supervisor, a dead letter stored before the progress write, progress that may
//! go back, a new master that forgets the run it inherited, refusals left
//! unrecorded, and no hand-over to the holder of tasks no run covers. Without
//! sequence numbers, keys must not repeat (`key_mode_needs_keys_that_do_not_repeat_*`
//! keeps that counterexample as a test of the documented contract).

use bson::{Bson, Document};
use tokio::time::Instant;

use crate::error::{Error, Result};
use std::time::Duration;

/// A lease document, read leniently (numbers of any integer type) and checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lease {
    pub holder: Option<String>,
    pub token: Option<i64>,
    pub epoch: u64,
    pub version: u64,
    pub lease_ms: u64,
    /// Stamping node's time of the last write, in milliseconds since the Unix epoch.
    pub renewed_at_ms: i64,
    pub released: bool,
    pub sync: Option<Bson>,
    /// Managed mode: the master's run of finished tasks in this epoch.
    pub run: Option<Run>,
    /// An operator asked the master to hand over.
    pub step_down: bool,
    /// The member instance (token) that asked for the hand-over to run tasks
    /// that only it holds, and goes first once the lease is released.
    pub successor: Option<i64>,
}

/// Managed mode: the tasks that left the master's queue in this epoch (see
/// [`crate::managed`]'s rule). The last one's key is the lease's `sync`.
pub(crate) type Run = crate::managed::rule::Run<Bson>;

/// What the master publishes: its synchronize id and, in managed mode, its run.
pub(crate) type Published = crate::managed::rule::Published<Bson>;

impl Run {
    /// The run as the lease document stores it (`run`).
    pub fn to_document(&self) -> Document {
        let int = |n: u64| n.min(i64::MAX as u64) as i64;
        let mut doc = bson::doc! {
            "epoch": int(self.epoch),
            "first": self.first.clone(),
            "count": int(self.count),
        };
        if let Some((from, upto)) = self.covers {
            doc.insert("from", int(from));
            doc.insert("upto", int(upto));
        }
        doc
    }
}

impl Lease {
    /// Parses a lease document; a document `failover` did not write gives
    /// [`Error::MalformedLease`] naming the field.
    pub fn from_document(name: &str, doc: &Document) -> Result<Lease> {
        let bad = |reason: String| Error::MalformedLease {
            name: name.to_owned(),
            reason,
        };
        let number = |field: &str| -> Result<u64> {
            match doc.get(field) {
                Some(Bson::Int32(n)) if *n >= 0 => Ok(*n as u64),
                Some(Bson::Int64(n)) if *n >= 0 => Ok(*n as u64),
                Some(Bson::Double(n)) if *n >= 0.0 && n.fract() == 0.0 && *n < 9.0e15 => {
                    Ok(*n as u64)
                }
                Some(other) => Err(bad(format!(
                    "field `{field}` must be a non-negative integer, found {other}"
                ))),
                None => Err(bad(format!("field `{field}` is missing"))),
            }
        };
        let (epoch, version, lease_ms) =
            (number("epoch")?, number("version")?, number("lease_ms")?);
        let renewed_at_ms = match doc.get("renewed_at") {
            Some(Bson::DateTime(d)) => d.timestamp_millis(),
            Some(other) => {
                return Err(bad(format!(
                    "field `renewed_at` must be a date, found {other}"
                )))
            }
            None => return Err(bad("field `renewed_at` is missing".to_owned())),
        };
        let holder = match doc.get("holder") {
            Some(Bson::String(s)) => Some(s.clone()),
            None | Some(Bson::Null) => None,
            Some(other) => {
                return Err(bad(format!(
                    "field `holder` must be a string, found {other}"
                )))
            }
        };
        let token = match doc.get("token") {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            None | Some(Bson::Null) => None,
            Some(other) => {
                return Err(bad(format!(
                    "field `token` must be an integer, found {other}"
                )))
            }
        };
        let released = match doc.get("released") {
            Some(Bson::Boolean(b)) => *b,
            None => false,
            Some(other) => {
                return Err(bad(format!(
                    "field `released` must be a boolean, found {other}"
                )))
            }
        };
        let step_down = match doc.get("step_down") {
            Some(Bson::Boolean(b)) => *b,
            None | Some(Bson::Null) => false,
            Some(other) => {
                return Err(bad(format!(
                    "field `step_down` must be a boolean, found {other}"
                )))
            }
        };
        let run = match doc.get("run") {
            None | Some(Bson::Null) => None,
            Some(Bson::Document(r)) => {
                let first = r.get("first").cloned().unwrap_or(Bson::Null);
                let int = |field: &str| match r.get(field) {
                    Some(Bson::Int32(n)) if *n >= 0 => Ok(*n as u64),
                    Some(Bson::Int64(n)) if *n >= 0 => Ok(*n as u64),
                    other => Err(bad(format!(
                        "field `run.{field}` must be a non-negative integer, found {other:?}"
                    ))),
                };
                let covers = match (r.get("from"), r.get("upto")) {
                    (None, None) => None,
                    _ => Some((int("from")?, int("upto")?)),
                };
                Some(Run {
                    epoch: int("epoch")?,
                    first,
                    count: int("count")?,
                    covers,
                })
            }
            Some(other) => {
                return Err(bad(format!(
                    "field `run` must be a document, found {other}"
                )))
            }
        };
        let successor = match doc.get("successor") {
            Some(Bson::Int64(n)) => Some(*n),
            Some(Bson::Int32(n)) => Some(i64::from(*n)),
            None | Some(Bson::Null) => None,
            Some(other) => {
                return Err(bad(format!(
                    "field `successor` must be an integer, found {other}"
                )))
            }
        };
        Ok(Lease {
            holder,
            token,
            epoch,
            version,
            lease_ms: lease_ms.min(24 * 60 * 60 * 1000),
            renewed_at_ms,
            released,
            sync: doc
                .get("sync")
                .filter(|b| !matches!(b, Bson::Null))
                .cloned(),
            run,
            step_down,
            successor,
        })
    }

    /// What the master published, as one value.
    pub fn published(&self) -> Option<Published> {
        self.sync.as_ref().map(|id| Published {
            id: id.clone(),
            run: self.run.clone(),
        })
    }
}

/// The protocol's rules as pure functions of integers (milliseconds), shared by the
/// election and by the model check (`tests/model.rs`).
pub mod rules {
    /// The step-down margin is the lease divided by this: a master stops acting a
    /// tenth of the lease before any standby may take over.
    pub const MARGIN_DIVISOR: u64 = 10;

    /// NTP slews a clock by at most this many parts per million; two clock samples
    /// that differ by less (plus their errors) do not count as a step.
    pub const MAX_SLEW_PPM: u64 = 500;

    /// Tolerance, in milliseconds, added to every step check (the date precision of
    /// the stamp and scheduling noise).
    pub const STEP_TOLERANCE_MS: u64 = 5;

    /// The step-down margin of a lease of `lease_ms`.
    pub fn margin_ms(lease_ms: u64) -> u64 {
        lease_ms / MARGIN_DIVISOR
    }

    /// Until when a master that *sent* its last successful renewal (or take-over)
    /// at `sent_ms` on its own clock may act: `sent + lease − margin`.
    pub fn master_deadline(sent_ms: u64, lease_ms: u64) -> u64 {
        sent_ms
            .saturating_add(lease_ms)
            .saturating_sub(margin_ms(lease_ms))
    }

    /// How long after a clock sample a standby must wait before it may take over a
    /// lease stamped `renewed_at_ms` with duration `lease_ms` (negative: already
    /// expired). The sample read the stamping clock as `sample_ms`, give or take
    /// `error_ms`: the wait ends when that clock has *surely* passed
    /// `renewed_at + lease`, so the error is added, plus one millisecond for the
    /// precision of the dates.
    pub fn takeover_delay_ms(
        sample_ms: i64,
        error_ms: u64,
        renewed_at_ms: i64,
        lease_ms: u64,
    ) -> i64 {
        let lease_ms = lease_ms.min(i64::MAX as u64 / 4) as i64;
        let error_ms = error_ms.min(i64::MAX as u64 / 4) as i64;
        renewed_at_ms
            .saturating_add(lease_ms)
            .saturating_sub(sample_ms)
            .saturating_add(error_ms)
            .saturating_add(1)
    }

    /// Whether two samples of the stamping clock disagree about its offset from the
    /// member's clock by more than their errors, NTP's slew over the time between
    /// them, and [`STEP_TOLERANCE_MS`] allow: a clock stepped, or a new primary with
    /// another clock stamps now. Each sample is `(stamp_ms, local_ms, error_ms)`,
    /// `local_ms` on the member's own clock.
    pub fn clock_stepped(a: (i64, u64, u64), b: (i64, u64, u64)) -> bool {
        let offset = |(stamp, local, _): (i64, u64, u64)| i128::from(stamp) - i128::from(local);
        let drift = (offset(a) - offset(b)).unsigned_abs();
        let elapsed = a.1.abs_diff(b.1);
        let allowed = u128::from(a.2)
            + u128::from(b.2)
            + u128::from(STEP_TOLERANCE_MS)
            + u128::from(elapsed) * u128::from(MAX_SLEW_PPM) / 1_000_000;
        drift > allowed
    }

    /// The epoch of a lease document created anew, from the stamping clock's time in
    /// milliseconds: above any epoch counted up from an earlier document of the
    /// same subsystem (see the module docs); never below `1`.
    pub fn fresh_epoch(clock_ms: i64) -> u64 {
        u64::try_from(clock_ms).unwrap_or(0).max(1)
    }

    /// The epoch a take-over of a document holding `epoch` gets (above
    /// [`MAX_EPOCH`]: none that can be stored, and the take-over is refused).
    pub fn next_epoch(epoch: u64) -> u64 {
        epoch.saturating_add(1)
    }

    /// The largest epoch a lease document can store (a BSON 64-bit integer).
    pub const MAX_EPOCH: u64 = i64::MAX as u64;
}

/// A reading of the stamping clock: `stamp_ms` was that clock's time at the local
/// instant `local` (on the member's [lease clock](crate::clock)), give or take `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockSample {
    pub stamp_ms: i64,
    pub local: Instant,
    pub error: Duration,
}

impl ClockSample {
    /// The local instant after which the stamping clock has surely passed
    /// `renewed_at_ms + lease_ms`.
    pub fn takeover_at(&self, renewed_at_ms: i64, lease_ms: u64) -> Instant {
        let delay = rules::takeover_delay_ms(
            self.stamp_ms,
            self.error.as_millis().min(u64::MAX as u128) as u64,
            renewed_at_ms,
            lease_ms,
        );
        if delay >= 0 {
            // A date far in the future (a corrupt document) must not overflow: it
            // counts as a day away, and is checked again long before that.
            self.local + Duration::from_millis(delay as u64).min(Duration::from_secs(24 * 60 * 60))
        } else {
            self.local
                .checked_sub(Duration::from_millis(delay.unsigned_abs()))
                .unwrap_or(self.local)
        }
    }

    /// The stamping clock's time now, by this sample, surely not behind it: for a
    /// new document's epoch.
    pub fn stamp_now_ms(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.local).as_millis();
        self.stamp_ms
            .saturating_add(elapsed.min(i64::MAX as u128) as i64)
    }

    /// Whether two samples disagree (see [`rules::clock_stepped`]).
    pub fn disagrees_with(&self, other: &ClockSample) -> bool {
        let base = self.local.min(other.local);
        let as_tuple = |s: &ClockSample| {
            (
                s.stamp_ms,
                s.local
                    .duration_since(base)
                    .as_millis()
                    .min(u64::MAX as u128) as u64,
                s.error.as_millis().min(u64::MAX as u128) as u64,
            )
        };
        rules::clock_stepped(as_tuple(self), as_tuple(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn reads_numbers_of_any_width() {
        let now = bson::DateTime::now();
        let d = doc! { "_id": "s", "holder": "a", "token": 7_i64, "epoch": 3_i32, "version": 9_i64,
        "lease_ms": 3000.0, "renewed_at": now, "sync": 5 };
        let l = Lease::from_document("s", &d).unwrap();
        assert_eq!((l.epoch, l.version, l.lease_ms), (3, 9, 3000));
        assert_eq!(l.sync, Some(Bson::Int32(5)));
        assert!(!l.released);
    }

    #[test]
    fn malformed_documents_name_the_field_and_never_advise_deletion() {
        let d = doc! { "_id": "s", "epoch": "x" };
        let e = Lease::from_document("s", &d).unwrap_err().to_string();
        assert!(e.contains("`epoch`") && e.contains("repair"), "{e}");
        assert!(!e.contains("delete"), "{e}");
        let d = doc! { "_id": "s", "epoch": -1, "version": 1, "lease_ms": 1, "renewed_at": 1 };
        assert!(Lease::from_document("s", &d).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_adds_the_error_of_the_estimate() {
        let now = Instant::now();
        let s = ClockSample {
            stamp_ms: 10_000,
            local: now,
            error: Duration::from_millis(4),
        };
        // renewed at 9 000 with a 3 000 ms lease: 12 000, 2 000 ms after the sample,
        // plus the error and the date's precision.
        assert_eq!(
            s.takeover_at(9_000, 3_000),
            now + Duration::from_millis(2005)
        );
        assert_eq!(
            s.takeover_at(6_000, 3_000) + Duration::from_millis(995),
            now
        );
        let later = ClockSample {
            stamp_ms: 11_000,
            local: now + Duration::from_millis(1000),
            error: Duration::from_millis(2),
        };
        assert!(!s.disagrees_with(&later));
        let stepped = ClockSample {
            stamp_ms: 15_000,
            ..later
        };
        assert!(s.disagrees_with(&stepped));
        // Dates from a corrupt document at either end of time do not overflow.
        assert!(s.takeover_at(i64::MAX, 3_000) > now);
        assert!(s.takeover_at(i64::MIN, 3_000) <= now + Duration::from_millis(5));
    }

    #[test]
    fn slewing_is_not_a_step_but_a_jump_is() {
        // An hour apart, a clock slewed by NTP at 500 ppm drifts by 1.8 s: no step.
        let a = (1_000_000, 0, 2);
        let slewed = (1_000_000 + 3_600_000 + 1_790, 3_600_000, 2);
        assert!(!rules::clock_stepped(a, slewed));
        // 100 ms apart, a 50 ms jump is a step.
        assert!(rules::clock_stepped(a, (1_000_000 + 150, 100, 2)));
        // Within the errors: no step.
        assert!(!rules::clock_stepped(a, (1_000_000 + 108, 100, 2)));
    }

    #[test]
    fn master_stops_a_margin_before_any_takeover() {
        for lease in [100_u64, 1_000, 3_000, 86_400_000] {
            let sent = 5_000;
            // The stamp comes no earlier than the send; a perfect clock sample.
            let stamp = 5_000_i64;
            let deadline = rules::master_deadline(sent, lease);
            let takeover = sent as i64 + rules::takeover_delay_ms(sent as i64, 0, stamp, lease);
            assert!(takeover as u64 >= deadline + rules::margin_ms(lease));
        }
        assert!(rules::fresh_epoch(1_700_000_000_000) > 1_000_000);
        assert_eq!(rules::fresh_epoch(-5), 1);
    }
}
