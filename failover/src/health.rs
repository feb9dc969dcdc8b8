//! Whether a member works as it should: for a liveness or readiness probe.

use std::fmt;
use std::time::Duration;

use crate::shared::Shared;
use crate::state::State;

/// What [`Member::health`](crate::Member::health) reports: client-go's
/// `HealthzAdaptor`, framework-free.
///
/// Standbys are healthy: a member that waits for its turn is doing its job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The member takes part in the election as it should.
    Healthy,
    /// The member needs attention, for the reason given.
    Unhealthy(Unhealthy),
}

/// Why a member is unhealthy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unhealthy {
    /// The member has been in [`State::Error`] (the database fails) for `since`,
    /// longer than the bound [`Options::unhealthy_after`](crate::Options::unhealthy_after).
    InError {
        /// How long it has been in `error`, by the lease clock.
        since: Duration,
        /// The bound it passed.
        bound: Duration,
    },
    /// The member is master but its lease ran out `by` ago without its election
    /// stepping it down: its process, its runtime or its machine did not run in
    /// time (a pause, a suspended machine, work blocking the runtime's thread). It
    /// does not act any more (every task and [`Member::is_master`](crate::Member::is_master)
    /// checks the lease), but it is stuck.
    PastDeadline {
        /// How long ago the lease's deadline passed, by the lease clock.
        by: Duration,
    },
    /// The member was shut down or aborted.
    Stopped,
}

impl Health {
    /// Whether the member is healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str("healthy"),
            Health::Unhealthy(why) => write!(f, "unhealthy: {why}"),
        }
    }
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::InError { since, bound } => write!(
                f,
                "in error (the database fails) for {since:?}, longer than {bound:?}"
            ),
            Unhealthy::PastDeadline { by } => write!(
                f,
                "master {by:?} past its lease's deadline without stepping down (the process did not run in time)"
            ),
            Unhealthy::Stopped => f.write_str("stopped"),
        }
    }
}

/// Judges `shared` now, on the lease clock; `bound`: how long `error` may last.
pub(crate) fn judge(shared: &Shared, bound: Duration) -> Health {
    let status = shared.status();
    let now = shared.clock.now();
    match status.state {
        State::Stopped => Health::Unhealthy(Unhealthy::Stopped),
        State::Error => {
            let since = now.saturating_duration_since(shared.state_since());
            if since > bound {
                Health::Unhealthy(Unhealthy::InError { since, bound })
            } else {
                Health::Healthy
            }
        }
        // No deadline while master: the election is stepping down right now.
        State::Master => match shared.deadline() {
            Some(deadline) if now >= deadline => Health::Unhealthy(Unhealthy::PastDeadline {
                by: now.saturating_duration_since(deadline),
            }),
            _ => Health::Healthy,
        },
        _ => Health::Healthy,
    }
}
