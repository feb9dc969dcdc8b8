//! The managed work queue: FIFO on every member, pruned on the standbys by the
//! master's published progress.
//!
//! # What the master publishes
//!
//! Every task that leaves the master's queue in its epoch (done, or moved out as a
//! dead letter) belongs to the epoch's *run*. With each renewal the master
//! publishes the run: its epoch, its first key, its length, its last key (the
//! synchronize id), and whether it is *chained*: the master resumed right after the
//! last task the previous master published (or there was none), so every task
//! before the run's first one was run.
//!
//! # How a standby prunes
//!
//! * A chained run: the standby drops everything up to and including the run's
//!   last key (the original's rule), except tasks it keeps as *orphans* (below).
//! * A run that is not chained (its master joined late or was fed from another
//!   point, and did not know where the previous master stopped): the standby drops
//!   only the run itself, from its first key to its last, and keeps every task
//!   before it as an orphan: nobody is known to have run it. Orphans are dropped
//!   only by a run that names them, and run when their holder leads.
//! * A last key the standby has not been fed yet is applied when it arrives, as
//!   long as the master of that epoch is the one it follows and it has not led
//!   itself since. A member never applies its own epochs' runs to itself.
//!
//! So nothing is lost while a member that holds a task is alive, members fed from
//! the same point repeat nothing on a hand-over, and a member whose queue cannot
//! place the last run gives better-fed members a head start of one lease before it
//! takes an expired lease, and reports [`Event::ResumePointUnknown`] if it leads
//! anyway. The known limit: keys must be unique among the tasks of one queue at one
//! time; a key that repeats while a member fed from another point still holds the
//! earlier task can be taken for it (the model check keeps that case,
//! `tests/model.rs`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bson::Bson;
use tokio::sync::Notify;

use super::work::Work;
use crate::error::{Error, Result};
use crate::event::{lock, Event, EventSink};
use crate::lease::{Published, Run};
use crate::options::QueueFull;
use crate::shared::SyncPort;

/// A queued task with its key (typed and as BSON) and how often it was tried.
pub(crate) struct Entry<W: Work> {
    pub key: W::Key,
    pub bkey: Bson,
    pub task: W::Task,
    pub attempts: u32,
    /// Kept because a run that was not chained started after it: only a run that
    /// names it drops it.
    pub orphan: bool,
}

/// Counters of a managed queue, as [`Managed::stats`](crate::Managed::stats) reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Tasks waiting or being worked on.
    pub queued: usize,
    /// Tasks finished by this member (as master).
    pub finished: u64,
    /// Attempts that asked for a retry.
    pub retries: u64,
    /// Tasks moved out as dead letters.
    pub dead_letters: u64,
    /// Tasks dropped because the master published that it ran them.
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

/// The master's own run in its epoch.
struct OwnRun {
    epoch: u64,
    first: Bson,
    count: u64,
    last: Bson,
    chained: bool,
}

struct Inner<W: Work> {
    tasks: VecDeque<Entry<W>>,
    /// Taken by the worker, not yet finished.
    in_flight: usize,
    /// As master: this epoch's run.
    run: Option<OwnRun>,
    /// As master: whether this epoch's run is chained (decided at take-over).
    chained: bool,
    /// Epochs this member led: their runs need no pruning here.
    own_epochs: HashSet<u64>,
    /// As standby: the run applied last (epoch, count), and whether its last key
    /// was found; a run not found waits here for its last key to arrive.
    applied: Option<(u64, u64)>,
    pending: Option<(Run, Bson)>,
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
                run: None,
                chained: true,
                own_epochs: HashSet::new(),
                applied: None,
                pending: None,
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
    pub async fn submit(&self, key: W::Key, bkey: Bson, task: W::Task) -> Result<()> {
        let mut entry = Entry {
            key,
            bkey,
            task,
            attempts: 0,
            orphan: false,
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
        if let Some((capacity, when_full)) = self.capacity {
            if inner.tasks.len() + inner.in_flight >= capacity {
                return match when_full {
                    QueueFull::Reject => Err(Error::QueueFull { capacity }),
                    QueueFull::Wait => Ok(Some(entry)),
                };
            }
        }
        let completes = inner
            .pending
            .as_ref()
            .is_some_and(|(_, last)| *last == entry.bkey);
        inner.tasks.push_back(entry);
        if completes {
            // The master's last published task arrived: apply its run now.
            if let Some((run, last)) = inner.pending.take() {
                inner.apply(&run, &last);
            }
            drop(inner);
            self.space.notify_waiters();
            return Ok(None);
        }
        drop(inner);
        self.ready.notify_one();
        Ok(None)
    }

    /// Moves the next task to the worker.
    pub fn take(&self) -> Option<Entry<W>> {
        let mut inner = lock(&self.inner);
        let entry = inner.tasks.pop_front()?;
        inner.in_flight += 1;
        Some(entry)
    }

    /// Puts an unfinished task back at the head.
    pub fn restore(&self, entry: Entry<W>) {
        let mut inner = lock(&self.inner);
        inner.in_flight = inner.in_flight.saturating_sub(1);
        inner.tasks.push_front(entry);
    }

    /// The worker finished a task of `epoch` (done, or dead-lettered when
    /// `dead_letter` is given): it joins the epoch's run.
    pub fn finish(&self, epoch: u64, entry: Entry<W>, dead_letter: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.in_flight = inner.in_flight.saturating_sub(1);
        let chained = inner.chained;
        match &mut inner.run {
            Some(run) if run.epoch == epoch => {
                run.count += 1;
                run.last = entry.bkey.clone();
            }
            _ => {
                inner.run = Some(OwnRun {
                    epoch,
                    first: entry.bkey.clone(),
                    count: 1,
                    last: entry.bkey.clone(),
                    // A run that starts with an orphan did not resume where the
                    // previous master stopped.
                    chained: chained && !entry.orphan,
                });
            }
        }
        match dead_letter {
            None => {
                inner.stats.finished += 1;
                inner.last_done = Some(entry.key);
            }
            Some(reason) => {
                let task = bson::to_bson(&entry.task)
                    .unwrap_or_else(|e| Bson::String(format!("<task not serializable: {e}>")));
                tracing::warn!(target: "failover::managed", key = %entry.bkey, attempts = entry.attempts, %reason, "dead letter");
                inner.stats.dead_letters += 1;
                inner.dead.push((entry.key, entry.task));
                drop(inner);
                self.events.emit(Event::DeadLetter {
                    key: entry.bkey,
                    task,
                    attempts: entry.attempts,
                    reason,
                });
            }
        }
        if self.capacity.is_some() {
            self.space.notify_waiters();
        }
    }

    /// Counts an attempt that asked for a retry.
    pub fn retried(&self) {
        lock(&self.inner).stats.retries += 1;
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

    /// The keys waiting, in order (not the one being worked on).
    pub fn keys(&self) -> Vec<W::Key> {
        lock(&self.inner)
            .tasks
            .iter()
            .map(|e| e.key.clone())
            .collect()
    }
}

impl<W: Work> Inner<W> {
    /// Applies the master's published run (see the module docs); returns how many
    /// tasks it dropped. A last key not in the queue yet waits in `pending`.
    fn apply(&mut self, run: &Run, last: &Bson) -> u64 {
        if self.own_epochs.contains(&run.epoch) {
            return 0; // our own run: its tasks left our queue as we ran them
        }
        if self
            .applied
            .is_some_and(|(e, c)| e == run.epoch && c >= run.count)
        {
            return 0; // seen already
        }
        let Some(j) = self.tasks.iter().position(|e| &e.bkey == last) else {
            // Not fed yet (or already gone): apply it when it arrives.
            self.pending = Some((run.clone(), last.clone()));
            return 0;
        };
        self.pending = None;
        self.applied = Some((run.epoch, run.count));
        // A run that is not chained covers only itself: from its first task (if we
        // have it), and what stands before it is kept as orphans.
        let first_at = if run.chained {
            None
        } else {
            self.tasks
                .iter()
                .take(j + 1)
                .position(|e| e.bkey == run.first)
        };
        if let Some(i) = first_at {
            for e in self.tasks.iter_mut().take(i) {
                e.orphan = true;
            }
        }
        let mut dropped = 0;
        let mut kept = VecDeque::with_capacity(self.tasks.len());
        for (i, e) in std::mem::take(&mut self.tasks).into_iter().enumerate() {
            let in_run = match first_at {
                Some(start) => i >= start && i <= j,
                None => i <= j && !e.orphan,
            };
            if in_run {
                if i == j {
                    self.last_done = Some(e.key.clone());
                }
                dropped += 1;
            } else {
                kept.push_back(e);
            }
        }
        self.tasks = kept;
        self.stats.pruned += dropped;
        dropped
    }

    /// Whether this member knows where the master that published `published`
    /// stopped (or needs not).
    fn knows(&self, published: Option<&Published>) -> bool {
        let Some(run) = published.and_then(|p| p.run.as_ref()) else {
            return true;
        };
        self.own_epochs.contains(&run.epoch)
            || self
                .applied
                .is_some_and(|(e, c)| e == run.epoch && c >= run.count)
    }
}

impl<W: Work> SyncPort for Queue<W> {
    fn outgoing(&self) -> Option<Published> {
        let inner = lock(&self.inner);
        let run = inner.run.as_ref()?;
        Some(Published {
            id: run.last.clone(),
            run: Some(Run {
                epoch: run.epoch,
                first: run.first.clone(),
                count: run.count,
                chained: run.chained,
            }),
        })
    }

    fn incoming(&self, _lease_epoch: u64, published: &Published) {
        let Some(run) = &published.run else { return };
        let pruned = {
            let mut inner = lock(&self.inner);
            inner.apply(run, &published.id)
        };
        if pruned > 0 && self.capacity.is_some() {
            self.space.notify_waiters();
        }
    }

    fn became_master(&self, epoch: u64, inherited: Option<&Published>) {
        let mut inner = lock(&self.inner);
        if let Some(p) = inherited {
            if let Some(run) = &p.run {
                inner.apply(run, &p.id);
            }
        }
        let known = inner.knows(inherited);
        // Chained when this member resumes right after the inherited run.
        inner.chained = known;
        inner.pending = None;
        inner.own_epochs.insert(epoch);
        drop(inner);
        self.ready.notify_one();
        if !known {
            if let Some(p) = inherited {
                tracing::warn!(target: "failover::managed", epoch, last = %p.id,
                    "this member's queue does not contain where the previous master stopped; working it from the head");
                self.events.emit(Event::ResumePointUnknown {
                    epoch,
                    last_published: p.id.clone(),
                });
            }
        }
    }

    fn should_defer(&self, published: Option<&Published>) -> bool {
        !lock(&self.inner).knows(published)
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
            q.submit(t, Bson::Int64(i64::from(t)), t).await.unwrap();
        }
    }

    fn run(epoch: u64, first: u32, count: u64, last: u32, chained: bool) -> Published {
        Published {
            id: Bson::Int64(i64::from(last)),
            run: Some(Run {
                epoch,
                first: Bson::Int64(i64::from(first)),
                count,
                chained,
            }),
        }
    }

    #[tokio::test]
    async fn a_chained_run_drops_everything_up_to_its_last_key() {
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.incoming(1, &run(1, 1, 3, 3, true));
        assert_eq!(q.keys(), (4..=10).collect::<Vec<_>>());
        // A standby that missed publications catches up at the next one.
        q.incoming(2, &run(2, 6, 2, 7, true));
        assert_eq!(q.keys(), [8, 9, 10]);
        // Repeated and older publications change nothing.
        q.incoming(2, &run(2, 6, 2, 7, true));
        q.incoming(1, &run(1, 1, 3, 3, true));
        assert_eq!(q.keys(), [8, 9, 10]);
        assert_eq!(q.stats().pruned, 7);
        assert_eq!(q.last_done(), Some(7));
    }

    #[tokio::test]
    async fn a_last_key_not_yet_fed_is_applied_when_it_arrives() {
        let q = queue(None);
        fill(&q, 1..=3).await;
        q.incoming(1, &run(1, 1, 5, 5, true)); // the master is ahead of our feed
        assert_eq!(
            q.keys(),
            [1, 2, 3],
            "nothing is dropped before the key is known"
        );
        fill(&q, [4, 5, 6]).await;
        assert_eq!(q.keys(), [6]);
        assert!(!q.should_defer(Some(&run(1, 1, 5, 5, true))));
    }

    #[tokio::test]
    async fn a_run_that_is_not_chained_keeps_what_stands_before_it() {
        // A late joiner led: its run starts at 6 and did not resume where the
        // previous master stopped.
        let q = queue(None);
        fill(&q, 3..=7).await;
        q.incoming(2, &run(2, 6, 1, 6, false));
        assert_eq!(q.keys(), [3, 4, 5, 7]);
        // A later chained run (its successor resumed after 6) keeps the orphans.
        fill(&q, 8..=9).await;
        q.incoming(3, &run(3, 7, 2, 8, true));
        assert_eq!(q.keys(), [3, 4, 5, 9]);
        // A member that cannot place the run defers.
        let late = queue(None);
        fill(&late, [6, 7]).await;
        let published = run(1, 1, 2, 2, true);
        late.incoming(1, &published);
        assert_eq!(late.keys(), [6, 7]);
        assert!(late.should_defer(Some(&published)));
    }

    #[tokio::test]
    async fn orphans_lead_their_holders_run_unchained() {
        let q = queue(None);
        fill(&q, 3..=7).await;
        q.incoming(2, &run(2, 6, 2, 7, false));
        q.became_master(3, Some(&run(2, 6, 2, 7, false)));
        let e = q.take().unwrap();
        q.finish(3, e, None);
        let r = q.outgoing().unwrap().run.unwrap();
        assert_eq!((r.first, r.chained), (Bson::Int64(3), false));
    }

    #[tokio::test]
    async fn our_own_run_is_never_pruned_again_and_repeated_keys_survive() {
        let q = queue(None);
        fill(&q, 1..=3).await;
        q.became_master(1, None);
        for _ in 0..3 {
            let e = q.take().unwrap();
            q.finish(1, e, None);
        }
        let published = q.outgoing().unwrap();
        assert!(published.run.as_ref().unwrap().chained);
        // We step down and re-take our own lease: our own run is inherited.
        q.became_master(2, Some(&published));
        fill(&q, [4, 5, 3, 7]).await;
        assert_eq!(q.keys(), [4, 5, 3, 7]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_or_waits() {
        let q = queue(Some((2, QueueFull::Reject)));
        fill(&q, [1, 2]).await;
        assert_eq!(
            q.submit(3, Bson::Int64(3), 3).await,
            Err(Error::QueueFull { capacity: 2 })
        );
        let q = Arc::new(queue(Some((1, QueueFull::Wait))));
        fill(&q, [1]).await;
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.submit(2, Bson::Int64(2), 2).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let e = q.take().unwrap();
        q.finish(1, e, None);
        waiting.await.unwrap().unwrap();
        assert_eq!(q.keys(), [2]);
    }
}
