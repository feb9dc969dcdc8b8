//! The clock that lease deadlines are measured on: Tokio's clock plus the time the
//! machine spent suspended.
//!
//! Tokio's [`Instant`] is `CLOCK_MONOTONIC`, which on Linux stops while the system
//! (or its virtual machine) is suspended. A master whose deadline is measured on it
//! would, after a resume, still believe its lease valid for up to 90 % of the lease,
//! although the lease ran out long ago. Lease deadlines are therefore measured on
//! `CLOCK_BOOTTIME`, which counts suspended time: a [`LeaseClock`] reads Tokio's
//! clock and adds how much more `CLOCK_BOOTTIME` than `CLOCK_MONOTONIC` has advanced
//! since the member started. Timers stay on Tokio's clock (converted with
//! [`LeaseClock::timer`]), so tests under Tokio's paused time still work, and a
//! timer that fires late after a resume only makes the member check sooner than it
//! otherwise would have, never act longer.
//!
//! On systems without `CLOCK_BOOTTIME` (anything but Linux and Android) the
//! suspended time reads as zero: there, suspend the process rather than the
//! machine, or keep leases short.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A source of "how long has this machine been suspended, in total". The real one
/// reads `CLOCK_BOOTTIME − CLOCK_MONOTONIC`; tests substitute their own.
pub(crate) type SuspendSource = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Tokio's clock plus suspended time: the clock of every lease deadline.
#[derive(Clone)]
pub(crate) struct LeaseClock {
    source: SuspendSource,
    /// The suspended total when this clock was made.
    base: Duration,
}

impl std::fmt::Debug for LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClock")
            .field("suspended", &self.suspended())
            .finish()
    }
}

impl Default for LeaseClock {
    fn default() -> Self {
        LeaseClock::with_source(Arc::new(system_suspended))
    }
}

impl LeaseClock {
    /// A clock on the given source of suspended time.
    pub(crate) fn with_source(source: SuspendSource) -> Self {
        let base = source();
        LeaseClock { source, base }
    }

    /// Time suspended since this clock was made.
    fn suspended(&self) -> Duration {
        (self.source)().saturating_sub(self.base)
    }

    /// Now, on the lease clock: never behind Tokio's clock, and ahead of it by the
    /// time the machine was suspended.
    pub(crate) fn now(&self) -> Instant {
        Instant::now() + self.suspended()
    }

    /// The Tokio instant at which a timer must fire to wake at lease-clock instant
    /// `at`, given the suspended time so far.
    pub(crate) fn timer(&self, at: Instant) -> Instant {
        at.checked_sub(self.suspended()).unwrap_or(at)
    }
}

/// `CLOCK_BOOTTIME − CLOCK_MONOTONIC`: the total time this machine was suspended.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn system_suspended() -> Duration {
    use rustix::time::{clock_gettime, ClockId};
    let as_duration = |t: rustix::time::Timespec| {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    };
    // Monotonic first: a preemption between the two reads can only make the
    // suspended time look longer, which shortens a master's deadline, never extends it.
    let monotonic = as_duration(clock_gettime(ClockId::Monotonic));
    let boot = as_duration(clock_gettime(ClockId::Boottime));
    boot.saturating_sub(monotonic)
}

/// No `CLOCK_BOOTTIME` here: suspended time reads as zero.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn system_suspended() -> Duration {
    Duration::ZERO
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn suspended_time_moves_the_lease_clock_but_not_timers() {
        let suspended = Arc::new(AtomicU64::new(5_000));
        let s = suspended.clone();
        let clock = LeaseClock::with_source(Arc::new(move || {
            Duration::from_millis(s.load(Ordering::SeqCst))
        }));
        let t0 = Instant::now();
        assert_eq!(
            clock.now(),
            t0,
            "suspension before the start does not count"
        );
        // The machine sleeps 10 s: Tokio's clock does not move, the lease clock does.
        suspended.store(15_000, Ordering::SeqCst);
        assert_eq!(clock.now(), t0 + Duration::from_secs(10));
        // A timer for lease-clock instant now + 1 s fires 1 s from now on Tokio's clock.
        let at = clock.now() + Duration::from_secs(1);
        assert_eq!(clock.timer(at), t0 + Duration::from_secs(1));
    }

    #[test]
    fn the_system_source_is_monotone_and_small() {
        let a = system_suspended();
        let b = system_suspended();
        // Two reads a moment apart never differ by more than scheduling noise.
        assert!(b + Duration::from_millis(50) >= a, "{a:?} then {b:?}");
    }
}
