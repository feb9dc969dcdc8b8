//! The master's work loop: one task at a time, in order, only while the lease is
//! valid.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::watch;

use super::queue::{Entry, Queue};
use super::work::{Outcome, Work, WorkContext};
use crate::event::{panic_message, Event};
use crate::member::Shared;
use crate::options::Backoff;

/// Tasks moved from the queue to the worker at a time.
const BATCH: usize = 256;
/// Tasks that complete on their first poll may run this many in a row between two
/// readings of the clock (a few nanoseconds each); any task that waits, retries or
/// fails is followed by a reading.
const INSTANT_RUN: u32 = 64;

pub(crate) struct Worker<W: Work> {
    pub work: Arc<W>,
    pub queue: Arc<Queue<W>>,
    pub shared: Arc<Shared>,
    pub backoff: Backoff,
    pub max_attempts: Option<u32>,
    /// Set by a graceful shutdown: start no other task.
    pub stopping: Arc<AtomicBool>,
}

/// Finished tasks not yet recorded in the queue (recorded in bulk for speed).
struct Progress<K> {
    done: usize,
    retries: u64,
    last: Option<K>,
}

impl<W: Work> Worker<W> {
    /// Works whenever this member is master, until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut status = self.shared.watch();
        let mut batch = VecDeque::new();
        loop {
            // Wait for a mastership.
            let epoch = loop {
                if *stop.borrow() {
                    return;
                }
                if let Some(epoch) = self.shared.acting_epoch() {
                    break epoch;
                }
                tokio::select! {
                    _ = status.changed() => {}
                    _ = stop.changed() => {}
                }
            };
            tracing::info!(target: "failover::managed", member = %self.shared.member_id, epoch, "working the queue");
            self.work_epoch(epoch, &mut batch, &mut stop, &mut status)
                .await;
            self.queue.restore(&mut batch);
            tracing::info!(target: "failover::managed", member = %self.shared.member_id, epoch,
                stats = ?self.queue.stats(), "stopped working the queue");
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn work_epoch(
        &self,
        epoch: u64,
        batch: &mut VecDeque<Entry<W>>,
        stop: &mut watch::Receiver<bool>,
        status: &mut watch::Receiver<crate::member::Status>,
    ) {
        let mut progress = Progress {
            done: 0,
            retries: 0,
            last: None,
        };
        let mut unchecked = INSTANT_RUN; // read the clock before the first task
                                         // One context per mastership; only the attempt changes from task to task.
        let mut ctx = WorkContext {
            epoch,
            attempt: 0,
            shared: self.shared.clone(),
        };
        loop {
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            if batch.is_empty() {
                self.record(&mut progress);
                self.queue.take(batch, BATCH);
                if batch.is_empty() {
                    if !self.shared.holds(epoch) {
                        break;
                    }
                    tokio::select! {
                        _ = self.queue.ready.notified() => {}
                        _ = status.changed() => {}
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep_until(self.shared.valid_until()) => {}
                    }
                    unchecked = INSTANT_RUN;
                    continue;
                }
            }
            if unchecked >= INSTANT_RUN {
                self.record(&mut progress);
                if !self.shared.holds(epoch) {
                    break;
                }
                unchecked = 0;
            }
            let Some(mut entry) = batch.pop_front() else {
                continue;
            };
            entry.attempts += 1;
            ctx.attempt = entry.attempts;
            let (outcome, waited) = run_task(self.work.work(&entry.task, &ctx)).await;
            unchecked = if waited { INSTANT_RUN } else { unchecked + 1 };
            let outcome = outcome.unwrap_or_else(|message| {
                tracing::error!(target: "failover::managed", key = ?entry.key, %message, "task panicked");
                let text = format!("work panicked on task {:?}: {message}", entry.key);
                self.shared.events.emit(Event::Panic(text));
                Outcome::Retry(format!("panicked: {message}"))
            });
            match outcome {
                Outcome::Done => {
                    progress.done += 1;
                    progress.last = Some(entry.key);
                }
                Outcome::Retry(reason)
                    if self.max_attempts.is_none_or(|max| entry.attempts < max) =>
                {
                    unchecked = INSTANT_RUN;
                    progress.retries += 1;
                    self.record(&mut progress);
                    let delay = self.backoff.delay(entry.attempts);
                    tracing::debug!(target: "failover::managed", key = ?entry.key, attempt = entry.attempts, ?delay, %reason, "retry");
                    batch.push_front(entry);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                        _ = ctx.lost() => {}
                    }
                }
                Outcome::Retry(reason) | Outcome::Failed(reason) => {
                    unchecked = INSTANT_RUN;
                    self.record(&mut progress);
                    self.queue.dead_letter(entry, reason);
                }
            }
        }
        self.record(&mut progress);
    }

    fn record(&self, progress: &mut Progress<W::Key>) {
        self.queue
            .record(progress.done, progress.last.take(), progress.retries);
        progress.done = 0;
        progress.retries = 0;
    }
}

/// Runs a task to completion, catching a panic; says whether it ever waited.
async fn run_task<F: Future>(fut: F) -> (Result<F::Output, String>, bool) {
    let mut fut = std::pin::pin!(fut);
    let mut waited = false;
    let result = poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => {
                waited = true;
                Poll::Pending
            }
            Err(payload) => Poll::Ready(Err(panic_message(payload))),
        },
    )
    .await;
    (result, waited)
}
