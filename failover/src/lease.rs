//! The lease document and the rule that says when a lease has expired.
//!
//! # The protocol
//!
//! One document per subsystem, `_id` = subsystem name:
//!
//! | field | meaning |
//! |---|---|
//! | `holder` | member id of the master (for people; never compared) |
//! | `token` | random number of the holding member *instance*; renewals are conditional on it |
//! | `epoch` | fencing token: grows by one each time the lease is taken |
//! | `version` | grows by one with every write (take-over, renewal, release) |
//! | `lease_ms` | how long the holder promises to stay valid after `renewed_at` |
//! | `renewed_at` | the **server's** time of the last write (`$currentDate`) |
//! | `released` | the holder handed the lease over; anybody may take it at once |
//! | `sync` | the master's synchronize id (managed mode: the last finished task's key) |
//!
//! * **Taking** the lease is one atomic conditional write: an upsert that fails on
//!   the duplicate `_id` when there is no document yet, or an update whose filter
//!   names the `version` the member last read. Of members racing for one version,
//!   exactly one wins, and it gets `epoch + 1`: no two members ever hold one epoch.
//! * **Renewing** is an update conditional on `token` and `epoch`, so it fails as
//!   soon as anybody else has taken the lease.
//! * **Expiry without trusting the members' clocks.** Every time that enters the
//!   decision is the database server's (`renewed_at` is written with
//!   `$currentDate`) or a member's own monotonic clock. A member estimates the
//!   offset between its monotonic clock and the server's clock from the `localTime`
//!   of a `hello` reply, taken at the midpoint of the round trip; the error of the
//!   estimate is at most half the round trip, and the member *adds* it to every
//!   expiry it computes. A standby takes over only when, by that estimate, the
//!   server clock has passed `renewed_at + lease_ms` — and before it takes over it
//!   re-reads the server clock: if the offset moved (the server's wall clock
//!   stepped), it falls back to client-go's rule and waits a whole `lease_ms` from
//!   that moment on its own monotonic clock. Members' wall clocks never matter.
//! * **The master steps down first.** A master acts only until `t_s + lease_ms −
//!   margin`, where `t_s` is the monotonic instant at which it *sent* its last
//!   successful renewal (so `t_s` ≤ the server's `renewed_at`), and margin is a
//!   tenth of the lease. A standby cannot take over before `renewed_at + lease_ms`.
//!   So the master has stopped at least `margin` before any standby may start.
//! * **Release** on shutdown marks the lease `released` (after the master's work has
//!   stopped), so a standby takes over at its next check instead of after expiry.

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
    /// Server time of the last write, in milliseconds since the Unix epoch.
    pub renewed_at_ms: i64,
    pub released: bool,
    pub sync: Option<Bson>,
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
        })
    }
}

/// A reading of the server's clock: `server_ms` was the server's time at the local
/// monotonic instant `local`, give or take `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockSample {
    pub server_ms: i64,
    pub local: Instant,
    pub error: Duration,
}

impl ClockSample {
    /// The latest local instant at which the server's clock may still read less
    /// than `server_ms` — so after it, the server's clock has surely passed
    /// `server_ms` (by this sample).
    pub fn surely_after(&self, server_ms: i64) -> Instant {
        let ahead = server_ms.saturating_sub(self.server_ms);
        let base = self.local + self.error + Duration::from_millis(1);
        if ahead >= 0 {
            // A date far in the future (a corrupt document) must not overflow:
            // it counts as a day away, and is checked again long before that.
            let ahead = Duration::from_millis(ahead as u64).min(Duration::from_secs(24 * 60 * 60));
            base + ahead
        } else {
            base.checked_sub(Duration::from_millis(ahead.unsigned_abs()))
                .unwrap_or(base)
        }
    }

    /// Whether two samples disagree about the offset between the clocks by more than
    /// their errors allow (a step of the server's wall clock).
    pub fn disagrees_with(&self, other: &ClockSample) -> bool {
        let base = self.local.min(other.local);
        let offset = |s: &ClockSample| {
            s.server_ms as i128 - s.local.duration_since(base).as_millis() as i128
        };
        let drift = (offset(self) - offset(other)).unsigned_abs();
        let allowed = (self.error + other.error).as_millis() + 5;
        drift > allowed
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
    fn malformed_documents_name_the_field() {
        let d = doc! { "_id": "s", "epoch": "x" };
        let e = Lease::from_document("s", &d).unwrap_err().to_string();
        assert!(
            e.contains("`epoch`") && e.contains("delete the document"),
            "{e}"
        );
        let d = doc! { "_id": "s", "epoch": -1, "version": 1, "lease_ms": 1, "renewed_at": 1 };
        assert!(Lease::from_document("s", &d).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_adds_the_error_of_the_estimate() {
        let now = Instant::now();
        let s = ClockSample {
            server_ms: 10_000,
            local: now,
            error: Duration::from_millis(4),
        };
        assert_eq!(s.surely_after(12_000), now + Duration::from_millis(2005));
        assert_eq!(s.surely_after(9_000) + Duration::from_millis(995), now);
        let later = ClockSample {
            server_ms: 11_000,
            local: now + Duration::from_millis(1000),
            error: Duration::from_millis(2),
        };
        assert!(!s.disagrees_with(&later));
        let stepped = ClockSample {
            server_ms: 15_000,
            ..later
        };
        assert!(s.disagrees_with(&stepped));
        // Dates from a corrupt document at either end of time do not overflow.
        assert!(s.surely_after(i64::MAX) > now);
        assert!(s.surely_after(i64::MIN) <= now + Duration::from_millis(5));
    }
}
