//! When the master of an in-memory queue publishes its progress: the run of
//! finished tasks travels with the lease's renewals, and a standby that takes
//! over after a crash repeats what was finished after the last one it read.
//! Publishing after every task (a renewal before the next task starts) bounds that
//! to the task in flight.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Progress;
use crate::shared::Shared;

/// The worker's side of [`Progress`] for the in-memory queue: counts what is
/// finished and not published, and asks the election for a renewal when the
/// policy says so. One per epoch.
#[derive(Debug, Clone)]
pub(crate) struct LeaseProgress {
    /// Publish after this many finished tasks (`u32::MAX`: with the renewals only).
    tasks: u32,
    /// Publish when the last publication is this old.
    interval: Duration,
    unpublished: u32,
    last: Option<Instant>,
}

impl LeaseProgress {
    /// The policy `progress`; `renewal` is the lease's renewal period.
    pub fn new(progress: Progress, renewal: Duration) -> LeaseProgress {
        let (tasks, interval) = match progress {
            Progress::EveryTask => (1, Duration::ZERO),
            Progress::Batched { tasks, interval } => (tasks.max(1), interval),
            // The renewals publish by themselves.
            Progress::WithRenewal => (u32::MAX, renewal),
        };
        LeaseProgress {
            tasks,
            interval,
            unpublished: 0,
            last: None,
        }
    }

    /// A task finished: publishes when `tasks` are unpublished or the last
    /// publication is `interval` old, before the next task may start.
    pub async fn finished(&mut self, shared: &Shared, term: &CancellationToken) {
        self.unpublished = self.unpublished.saturating_add(1);
        let now = shared.clock.now();
        let last = *self.last.get_or_insert(now);
        let due = self.unpublished >= self.tasks
            || (self.tasks != u32::MAX && now.saturating_duration_since(last) >= self.interval);
        if due {
            self.publish(shared, term).await;
        }
    }

    /// The queue ran empty: publishes what is unpublished (not with the renewals
    /// only, which publish by themselves).
    pub async fn idle(&mut self, shared: &Shared, term: &CancellationToken) {
        if self.unpublished > 0 && self.tasks != u32::MAX {
            self.publish(shared, term).await;
        }
    }

    /// Asks for a renewal that publishes everything finished, and waits for it
    /// while the term lasts. A shutdown or a hand-over publishes with its release
    /// (after the work has stopped), so they end the wait; a lease lost ends the
    /// term. The worker checks the lease before the next task either way.
    async fn publish(&mut self, shared: &Shared, term: &CancellationToken) {
        let request = shared.want_progress();
        let until = shared.clock.timer(shared.valid_until());
        tokio::select! {
            _ = shared.progress_published(request) => {}
            _ = term.cancelled() => {}
            _ = shared.stopping.cancelled() => {}
            _ = tokio::time::sleep_until(until) => {}
        }
        self.unpublished = 0;
        self.last = Some(shared.clock.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_map_onto_counts_and_intervals() {
        let renewal = Duration::from_secs(2);
        let every = LeaseProgress::new(Progress::EveryTask, renewal);
        assert_eq!((every.tasks, every.interval), (1, Duration::ZERO));
        let batched = LeaseProgress::new(
            Progress::Batched {
                tasks: 0,
                interval: Duration::from_millis(50),
            },
            renewal,
        );
        assert_eq!(
            (batched.tasks, batched.interval),
            (1, Duration::from_millis(50))
        );
        let renewals = LeaseProgress::new(Progress::WithRenewal, renewal);
        assert_eq!(renewals.tasks, u32::MAX);
    }
}
