//! The master's work loop: one task at a time, in order, each started only after a
//! check of the lease on the lease clock. It runs on a thread of its own, so that
//! work that blocks its thread cannot starve the election's renewals.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tracing::Instrument;

use super::publish::LeaseProgress;
use super::queue::{Entry, Queue, QueueStats};
use super::work::{Outcome, Work, WorkContext};
use crate::event::{panic_message, Event};
use crate::options::Backoff;
use crate::shared::Shared;

/// What the worker takes next.
pub(crate) enum Next<E> {
    /// A task.
    Task(E),
    /// Nothing yet: wait for [`Source::wait`].
    Empty,
    /// This epoch cannot go on (a newer master wrote the durable queue).
    Stop,
}

/// Where the worker's tasks come from: the in-memory queue fed to every member
/// (`queue.rs`), or the durable queue in MongoDB (`durable.rs`). The worker's
/// loop, its lease checks and its shutdown are the same for both.
pub(crate) trait Source<W: Work>: Send + Sync + 'static {
    /// An epoch's work begins; `false`: it cannot (a newer master).
    fn begin(&self, epoch: u64) -> impl Future<Output = bool> + Send;
    /// The next task.
    fn next(&self, epoch: u64) -> impl Future<Output = Next<Entry<W>>> + Send;
    /// Resolves when there may be new tasks.
    fn wait(&self) -> impl Future<Output = ()> + Send;
    /// Puts an unfinished task back at the head.
    fn restore(&self, entry: Entry<W>);
    /// Counts an attempt that asked for a retry.
    fn retried(&self);
    /// A task of `epoch` finished (done, or dead when `dead_letter` is given);
    /// `false`: the epoch cannot go on.
    fn finish(
        &self,
        epoch: u64,
        entry: Entry<W>,
        dead_letter: Option<String>,
    ) -> impl Future<Output = bool> + Send;
    /// Records what is finished and not recorded yet (called while the worker
    /// still holds its guard); `false`: the epoch cannot go on.
    fn flush(&self, epoch: u64) -> impl Future<Output = bool> + Send;
    /// The counters.
    fn stats(&self) -> QueueStats;
}

impl<W: Work> Source<W> for Queue<W> {
    async fn begin(&self, _: u64) -> bool {
        true
    }
    async fn next(&self, _: u64) -> Next<Entry<W>> {
        match self.take() {
            Some(entry) => Next::Task(entry),
            None => Next::Empty,
        }
    }
    async fn wait(&self) {
        self.ready.notified().await
    }
    fn restore(&self, entry: Entry<W>) {
        Queue::restore(self, entry)
    }
    fn retried(&self) {
        Queue::retried(self)
    }
    async fn finish(&self, epoch: u64, entry: Entry<W>, dead_letter: Option<String>) -> bool {
        Queue::finish(self, epoch, entry, dead_letter);
        true
    }
    async fn flush(&self, _: u64) -> bool {
        // The run travels with the renewals.
        true
    }
    fn stats(&self) -> QueueStats {
        Queue::stats(self)
    }
}

pub(crate) struct Worker<W: Work, S: Source<W> = Queue<W>> {
    pub work: Arc<W>,
    pub queue: Arc<S>,
    pub shared: Arc<Shared>,
    pub backoff: Backoff,
    pub max_attempts: Option<u32>,
    /// How long the first task of an epoch waits for the `on_master` hook.
    pub hook_wait: Duration,
    /// The in-memory queue: when to publish progress with a renewal (the
    /// durable queue records its own).
    pub progress: Option<LeaseProgress>,
}

impl<W: Work, S: Source<W>> Worker<W, S> {
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
        if !self.queue.begin(epoch).await {
            return;
        }
        // One context per mastership; only the attempt changes from task to task.
        let mut ctx = WorkContext {
            epoch,
            attempt: 0,
            shared: self.shared.clone(),
            token: token.clone(),
        };
        let mut progress = self.progress.clone();
        // Held while the worker is busy (between the check before a task and the
        // end of the task, across a run of tasks): a stop waits for it.
        let mut guard = None;
        loop {
            // The guard first, then the checks: a stop either sees the guard and
            // waits for the task, or is seen here. Both checks before every task.
            if guard.is_none() {
                guard = Some(self.shared.guard());
            }
            // A cancelled term whose lease is still valid is handed over (a
            // step-down): no task starts under it any more.
            if self.shared.is_stopping() || token.is_cancelled() || !self.shared.holds(epoch) {
                // What is finished is recorded under the guard (a fenced write
                // for the durable queue: refused if a newer master took over).
                self.queue.flush(epoch).await;
                return;
            }
            let mut entry = match self.queue.next(epoch).await {
                Next::Task(entry) => entry,
                Next::Stop => return,
                Next::Empty => {
                    if !self.queue.flush(epoch).await {
                        return;
                    }
                    if let Some(progress) = progress.as_mut() {
                        progress.idle(&self.shared, &token).await;
                    }
                    guard = None;
                    let until = self.shared.clock.timer(self.shared.valid_until());
                    tokio::select! {
                        _ = self.queue.wait() => {}
                    _ = token.cancelled() => {}
                    _ = self.shared.stopping.cancelled() => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                    continue;
                }
            };
            // Taking the task may have waited on the database (the durable queue
            // reads ahead): check again, right before the task starts.
            if self.shared.is_stopping() || token.is_cancelled() || !self.shared.holds(epoch) {
                self.queue.restore(entry);
                self.queue.flush(epoch).await;
                return;
            }
            entry.attempts += 1;
            ctx.attempt = entry.attempts;
            let span = crate::metrics::task_span(
                &self.shared.name,
                &self.shared.member_id,
                epoch,
                &entry.bkey,
            );
            let started = self.shared.clock.now();
            let outcome = tokio::select! {
                biased;
                _ = self.shared.kill.cancelled() => None,
                outcome = run_task(|| self.work.work(&entry.task, &ctx)).instrument(span) => Some(outcome),
            };
            let elapsed = self.shared.clock.now().saturating_duration_since(started);
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
                Outcome::Done => {
                    self.shared
                        .metrics
                        .task_finished(epoch, started, elapsed, false);
                    if !self.queue.finish(epoch, entry, None).await {
                        return;
                    }
                    self.shared.metrics.queue_depth();
                    if let Some(progress) = progress.as_mut() {
                        progress.finished(&self.shared, &token).await;
                    }
                }
                Outcome::Retry(reason)
                    if self.max_attempts.is_none_or(|max| entry.attempts < max) =>
                {
                    self.queue.retried();
                    let delay = self.backoff.delay(entry.attempts);
                    tracing::debug!(target: "failover::managed", key = %entry.bkey, attempt = entry.attempts, ?delay, %reason, "retry");
                    self.queue.restore(entry);
                    self.shared.metrics.task_retried(elapsed);
                    if !self.queue.flush(epoch).await {
                        return;
                    }
                    guard = None;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shared.stopping.cancelled() => {}
                        _ = token.cancelled() => {}
                    }
                }
                Outcome::Retry(reason) | Outcome::Failed(reason) => {
                    self.shared
                        .metrics
                        .task_finished(epoch, started, elapsed, true);
                    if !self.queue.finish(epoch, entry, Some(reason)).await {
                        return;
                    }
                    self.shared.metrics.queue_depth();
                    if let Some(progress) = progress.as_mut() {
                        progress.finished(&self.shared, &token).await;
                    }
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
