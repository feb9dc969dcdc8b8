//! The managed work queue: FIFO, pruned by the master's synchronize ids.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bson::Bson;
use tokio::sync::Notify;

use super::work::Work;
use crate::error::{Error, Result};
use crate::event::{lock, Event, EventSink};
use crate::member::SyncPort;
use crate::options::QueueFull;

/// A queued task with its key and how often it was tried.
pub(crate) struct Entry<W: Work> {
    pub key: W::Key,
    pub task: W::Task,
    pub attempts: u32,
}

/// Counters of a managed queue, as [`Managed::stats`](crate::Managed::stats) reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Tasks waiting or being worked on.
    pub queued: usize,
    /// Tasks finished by this member (as master).
    pub finished: u64,
    /// Attempts that asked for a retry.
    pub retries: u64,
    /// Tasks moved out as dead letters.
    pub dead_letters: u64,
    /// Tasks dropped because the master published that they were done.
    pub pruned: u64,
}

pub(crate) struct Queue<W: Work> {
    inner: Mutex<Inner<W>>,
    /// A task was submitted (one worker: `notify_one` keeps a permit).
    pub ready: Notify,
    /// Room was freed (for submitters waiting on a full queue).
    space: Notify,
    capacity: Option<(usize, QueueFull)>,
    events: Arc<EventSink>,
}

struct Inner<W: Work> {
    tasks: VecDeque<Entry<W>>,
    /// Taken by the worker, not yet finished.
    in_flight: usize,
    /// A key the master published that this member has not been fed yet: when it
    /// arrives, it and everything before it are dropped.
    pending_prune: Option<W::Key>,
    /// The last finished key: this member's own work as master, or the master's.
    last_done: Option<W::Key>,
    dead: Vec<(W::Key, W::Task)>,
    stats: QueueStats,
}

impl<W: Work> Queue<W> {
    pub fn new(capacity: Option<(usize, QueueFull)>, events: Arc<EventSink>) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                tasks: VecDeque::new(),
                in_flight: 0,
                pending_prune: None,
                last_done: None,
                dead: Vec::new(),
                stats: QueueStats::default(),
            }),
            ready: Notify::new(),
            space: Notify::new(),
            capacity,
            events,
        }
    }

    /// Appends a task, waiting for room or refusing it when the queue is full.
    pub async fn submit(&self, key: W::Key, task: W::Task) -> Result<()> {
        let mut entry = Entry {
            key,
            task,
            attempts: 0,
        };
        if self.capacity.is_none() {
            // Unbounded: never waits.
            return self.try_push(entry).map(|_| ());
        }
        loop {
            // Register for a wake-up before looking, so that none is missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_push(entry)? {
                None => return Ok(()),
                Some(full) => entry = full,
            }
            space.await;
        }
    }

    /// Appends `entry` unless the queue is full: then gives it back (with
    /// `QueueFull::Wait`) or refuses it.
    fn try_push(&self, entry: Entry<W>) -> Result<Option<Entry<W>>> {
        let mut inner = lock(&self.inner);
        if inner.pending_prune.as_ref() == Some(&entry.key) {
            // The master already finished this task and all before it.
            let dropped = inner.tasks.len() as u64 + 1;
            inner.tasks.clear();
            inner.stats.pruned += dropped;
            inner.pending_prune = None;
            drop(inner);
            self.space.notify_waiters();
            return Ok(None);
        }
        if let Some((capacity, when_full)) = self.capacity {
            if inner.tasks.len() + inner.in_flight >= capacity {
                return match when_full {
                    QueueFull::Reject => Err(Error::QueueFull { capacity }),
                    QueueFull::Wait => Ok(Some(entry)),
                };
            }
        }
        inner.tasks.push_back(entry);
        drop(inner);
        self.ready.notify_one();
        Ok(None)
    }

    /// Moves up to `max` tasks into the worker's `batch`.
    pub fn take(&self, batch: &mut VecDeque<Entry<W>>, max: usize) {
        let mut inner = lock(&self.inner);
        let n = inner.tasks.len().min(max);
        batch.extend(inner.tasks.drain(..n));
        inner.in_flight += n;
    }

    /// Puts unfinished tasks back at the head, in order.
    pub fn restore(&self, batch: &mut VecDeque<Entry<W>>) {
        if batch.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        inner.in_flight = inner.in_flight.saturating_sub(batch.len());
        while let Some(e) = batch.pop_back() {
            inner.tasks.push_front(e);
        }
    }

    /// Records the worker's progress: `done` finished tasks (the last with key
    /// `last`) and `retries` attempts that asked for a retry.
    pub fn record(&self, done: usize, last: Option<W::Key>, retries: u64) {
        if done == 0 && retries == 0 {
            return;
        }
        let mut inner = lock(&self.inner);
        inner.in_flight = inner.in_flight.saturating_sub(done);
        inner.stats.finished += done as u64;
        inner.stats.retries += retries;
        if last.is_some() {
            inner.last_done = last;
        }
        drop(inner);
        if done > 0 && self.capacity.is_some() {
            self.space.notify_waiters();
        }
    }

    /// Moves a task out of the queue for good, handing it to the application.
    pub fn dead_letter(&self, entry: Entry<W>, reason: String) {
        let task = bson::to_bson(&entry.task)
            .unwrap_or_else(|e| Bson::String(format!("<task not serializable: {e}>")));
        let key = bson::to_bson(&entry.key).unwrap_or(Bson::Null);
        tracing::warn!(target: "failover::managed", %key, attempts = entry.attempts, %reason, "dead letter");
        {
            let mut inner = lock(&self.inner);
            inner.in_flight = inner.in_flight.saturating_sub(1);
            inner.stats.dead_letters += 1;
            inner.dead.push((entry.key, entry.task));
        }
        self.events.emit(Event::DeadLetter {
            key,
            task,
            attempts: entry.attempts,
            reason,
        });
        if self.capacity.is_some() {
            self.space.notify_waiters();
        }
    }

    pub fn take_dead_letters(&self) -> Vec<(W::Key, W::Task)> {
        std::mem::take(&mut lock(&self.inner).dead)
    }

    pub fn stats(&self) -> QueueStats {
        let inner = lock(&self.inner);
        QueueStats {
            queued: inner.tasks.len() + inner.in_flight,
            ..inner.stats.clone()
        }
    }

    pub fn last_done(&self) -> Option<W::Key> {
        lock(&self.inner).last_done.clone()
    }

    /// The keys waiting, in order (for tests and diagnostics).
    pub fn keys(&self) -> Vec<W::Key> {
        lock(&self.inner)
            .tasks
            .iter()
            .map(|e| e.key.clone())
            .collect()
    }

    /// Drops everything up to and including `key`; remembers a key not yet queued.
    pub fn prune(&self, key: W::Key) {
        let mut inner = lock(&self.inner);
        match inner.tasks.iter().position(|e| e.key == key) {
            Some(pos) => {
                inner.tasks.drain(..=pos);
                inner.stats.pruned += pos as u64 + 1;
                inner.pending_prune = None;
            }
            None => {
                // Already pruned (a repeated or older id), or not fed to us yet:
                // remember it and decide when (if) it arrives.
                inner.pending_prune = Some(key.clone());
            }
        }
        inner.last_done = Some(key);
        drop(inner);
        if self.capacity.is_some() {
            self.space.notify_waiters();
        }
    }
}

impl<W: Work> SyncPort for Queue<W> {
    fn outgoing(&self) -> Option<Bson> {
        let key = self.last_done()?;
        bson::to_bson(&key).ok()
    }

    fn incoming(&self, id: &Bson) {
        match bson::from_bson::<W::Key>(id.clone()) {
            Ok(key) => self.prune(key),
            Err(e) => {
                let error = Error::serialization("synchronize id into the task key type", e);
                tracing::error!(target: "failover::managed", %id, %error, "cannot prune");
                self.events.emit(Event::Error(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::work::{Outcome, WorkContext};

    struct Numbers;

    impl Work for Numbers {
        type Task = u32;
        type Key = u32;
        fn key(&self, task: &u32) -> u32 {
            *task
        }
        async fn work(&self, _: &u32, _: &WorkContext) -> Outcome {
            Outcome::Done
        }
    }

    fn queue(capacity: Option<(usize, QueueFull)>) -> Queue<Numbers> {
        Queue::new(capacity, Arc::new(EventSink::default()))
    }

    async fn fill(q: &Queue<Numbers>, tasks: impl IntoIterator<Item = u32>) {
        for t in tasks {
            q.submit(t, t).await.unwrap();
        }
    }

    #[tokio::test]
    async fn pruning_drops_up_to_and_including_the_key() {
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.prune(3);
        assert_eq!(q.keys(), (4..=10).collect::<Vec<_>>());
        assert_eq!(q.last_done(), Some(3));
        assert_eq!(q.stats().pruned, 3);
    }

    #[tokio::test]
    async fn repeated_and_older_keys_change_nothing() {
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.prune(5);
        q.prune(5);
        q.prune(2);
        assert_eq!(q.keys(), (6..=10).collect::<Vec<_>>());
        // Neither 5 nor 2 arrives again, so nothing else is dropped.
        fill(&q, 11..=12).await;
        assert_eq!(q.keys(), (6..=12).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_key_not_yet_fed_prunes_when_it_arrives() {
        let q = queue(None);
        fill(&q, 1..=3).await;
        q.prune(5); // the master is ahead of what this member was fed
        assert_eq!(
            q.keys(),
            [1, 2, 3],
            "nothing is dropped before the key is known"
        );
        fill(&q, [4, 5, 6]).await;
        assert_eq!(q.keys(), [6], "5 and everything before it were done");
        assert_eq!(q.stats().pruned, 5);
    }

    #[tokio::test]
    async fn out_of_order_keys_prune_what_they_name() {
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.prune(7);
        q.prune(4); // older: already gone, remembered in case it arrives
        assert_eq!(q.keys(), [8, 9, 10]);
        q.prune(9);
        assert_eq!(q.keys(), [10]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_or_waits() {
        let q = queue(Some((2, QueueFull::Reject)));
        fill(&q, [1, 2]).await;
        assert_eq!(
            q.submit(3, 3).await.unwrap_err(),
            Error::QueueFull { capacity: 2 }
        );

        let q = Arc::new(queue(Some((2, QueueFull::Wait))));
        fill(&q, [1, 2]).await;
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.submit(3, 3).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut batch = VecDeque::new();
        q.take(&mut batch, 1);
        q.record(1, Some(1), 0);
        waiting.await.unwrap().unwrap();
        assert_eq!(q.keys(), [2, 3]);
    }

    #[tokio::test]
    async fn restored_tasks_go_back_to_the_head_in_order() {
        let q = queue(None);
        fill(&q, 1..=5).await;
        let mut batch = VecDeque::new();
        q.take(&mut batch, 3);
        assert_eq!(q.stats().queued, 5);
        batch.pop_front();
        q.record(1, Some(1), 0);
        q.restore(&mut batch);
        assert_eq!(q.keys(), [2, 3, 4, 5]);
        assert_eq!(q.stats().queued, 4);
    }
}
