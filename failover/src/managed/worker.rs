//! The master's work loop: one task at a time, in order, each started only after a
//! check of the lease on the lease clock. It runs on a thread of its own, so that
//! work that blocks its thread cannot starve the election's renewals.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::queue::Queue;
use super::work::{Outcome, Work, WorkContext};
use crate::event::{panic_message, Event};
use crate::options::Backoff;
use crate::shared::Shared;

pub(crate) struct Worker<W: Work> {
    pub work: Arc<W>,
    pub queue: Arc<Queue<W>>,
    pub shared: Arc<Shared>,
    pub backoff: Backoff,
    pub max_attempts: Option<u32>,
    /// How long the first task of an epoch waits for the `on_master` hook.
    pub hook_wait: Duration,
}

impl<W: Work> Worker<W> {
    /// Works whenever this member is master, until the member stops.
    pub async fn run(self) {
        let mut status = self.shared.watch();
        loop {
            // Wait for a mastership.
            let epoch = loop {
                if self.shared.is_stopping() {
                    return;
                }
                if let Some(epoch) = self.shared.acting_epoch() {
                    break epoch;
                }
                tokio::select! {
                    _ = status.changed() => {}
                    _ = self.shared.stopping.cancelled() => return,
                }
            };
            self.wait_for_hook(epoch).await;
            tracing::info!(target: "failover::managed", member = %self.shared.member_id, epoch, "working the queue");
            self.work_epoch(epoch).await;
            tracing::info!(target: "failover::managed", member = %self.shared.member_id, epoch,
                stats = ?self.queue.stats(), "stopped working the queue");
            // Do not spin on an epoch that is still published but no longer valid.
            while self.shared.acting_epoch() == Some(epoch) && !self.shared.is_stopping() {
                tokio::select! {
                    _ = status.changed() => {}
                    _ = self.shared.stopping.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
    }

    /// The `on_master` hook of `epoch` returns before the epoch's first task starts
    /// (waiting at most `hook_wait`).
    async fn wait_for_hook(&self, epoch: u64) {
        let mut hooked = self.shared.hooked.subscribe();
        let waited = tokio::time::timeout(self.hook_wait, hooked.wait_for(|e| *e >= epoch)).await;
        if waited.is_err() {
            tracing::warn!(target: "failover::managed", member = %self.shared.member_id, epoch,
                wait = ?self.hook_wait, "the on_master hook did not return in time; starting the work anyway");
        }
    }

    async fn work_epoch(&self, epoch: u64) {
        let Some(token) = self.shared.term(epoch) else {
            return;
        };
        // One context per mastership; only the attempt changes from task to task.
        let mut ctx = WorkContext {
            epoch,
            attempt: 0,
            shared: self.shared.clone(),
            token: token.clone(),
        };
        // Held while the worker is busy (between the check before a task and the
        // end of the task, across a run of tasks): a stop waits for it.
        let mut guard = None;
        loop {
            // The guard first, then the checks: a stop either sees the guard and
            // waits for the task, or is seen here. Both checks before every task.
            if guard.is_none() {
                guard = Some(self.shared.guard());
            }
            if self.shared.is_stopping() || !self.shared.holds(epoch) {
                return;
            }
            let Some(mut entry) = self.queue.take() else {
                guard = None;
                let until = self.shared.clock.timer(self.shared.valid_until());
                tokio::select! {
                    _ = self.queue.ready.notified() => {}
                    _ = token.cancelled() => {}
                    _ = self.shared.stopping.cancelled() => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
                continue;
            };
            entry.attempts += 1;
            ctx.attempt = entry.attempts;
            let outcome = tokio::select! {
                biased;
                _ = self.shared.kill.cancelled() => None,
                outcome = run_task(|| self.work.work(&entry.task, &ctx)) => Some(outcome),
            };
            let Some(outcome) = outcome else {
                // Dropped by an abort: the task is not done.
                self.queue.restore(entry);
                return;
            };
            let outcome = outcome.unwrap_or_else(|message| {
                tracing::error!(target: "failover::managed", key = %entry.bkey, %message, "task panicked");
                let text = format!("work panicked on task {}: {message}", entry.bkey);
                self.shared.events.emit(Event::Panic(text));
                Outcome::Retry(format!("panicked: {message}"))
            });
            match outcome {
                Outcome::Done => self.queue.finish(epoch, entry, None),
                Outcome::Retry(reason)
                    if self.max_attempts.is_none_or(|max| entry.attempts < max) =>
                {
                    self.queue.retried();
                    let delay = self.backoff.delay(entry.attempts);
                    tracing::debug!(target: "failover::managed", key = %entry.bkey, attempt = entry.attempts, ?delay, %reason, "retry");
                    self.queue.restore(entry);
                    guard = None;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shared.stopping.cancelled() => {}
                        _ = token.cancelled() => {}
                    }
                }
                Outcome::Retry(reason) | Outcome::Failed(reason) => {
                    self.queue.finish(epoch, entry, Some(reason))
                }
            }
        }
    }
}

/// Runs a task to completion, catching a panic in building its future as well as
/// in polling it.
async fn run_task<F: Future>(make: impl FnOnce() -> F) -> Result<F::Output, String> {
    let fut = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => fut,
        Err(payload) => return Err(panic_message(payload)),
    };
    let mut fut = std::pin::pin!(fut);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload))),
        },
    )
    .await
}
