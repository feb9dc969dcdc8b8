//! The managed work queue: FIFO on every member, pruned on the standbys by the
//! master's published progress. The pruning rule itself is in [`super::rule`]
//! (see its docs); this wraps it with a lock, wake-ups, a capacity and counters.

use std::sync::{Arc, Mutex};

use bson::Bson;
use tokio::sync::Notify;

use super::rule::{Item, Pushed, QueueCore, Refused};
use super::work::Work;
use crate::error::{Error, Result};
use crate::event::{lock, Event, EventSink};
use crate::lease::Published;
use crate::options::QueueFull;
use crate::shared::SyncPort;

/// A queued task with its key (typed and as BSON), its feed sequence number if it
/// has one, and how often it was tried.
pub(crate) struct Entry<W: Work> {
    pub key: W::Key,
    pub bkey: Bson,
    pub seq: Option<u64>,
    pub task: W::Task,
    pub attempts: u32,
    /// Kept because it stands before a run's origin: only a run whose interval
    /// names it drops it (key mode).
    pub orphan: bool,
}

impl<W: Work> Item for Entry<W> {
    type Key = Bson;
    fn key(&self) -> &Bson {
        &self.bkey
    }
    fn seq(&self) -> Option<u64> {
        self.seq
    }
    fn orphan(&self) -> bool {
        self.orphan
    }
    fn set_orphan(&mut self, orphan: bool) {
        self.orphan = orphan;
    }
}

/// Records a gap in the feed if a waiting submission is dropped before its task
/// was queued.
struct Gap<'a, W: Work> {
    queue: &'a Queue<W>,
    offered: Option<(Bson, Option<u64>)>,
}

impl<W: Work> Drop for Gap<'_, W> {
    fn drop(&mut self) {
        if let Some((bkey, seq)) = self.offered.take() {
            self.queue.refused(&bkey, seq);
        }
    }
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

struct Inner<W: Work> {
    core: QueueCore<Entry<W>>,
    /// The last finished key: this member's own work as master, or the master's.
    last_done: Option<W::Key>,
    /// The newest publication read (epoch, count), so that an older one read
    /// again does not move `last_done` back.
    newest: Option<(u64, u64)>,
    dead: Vec<(W::Key, W::Task)>,
    stats: QueueStats,
}

impl<W: Work> Queue<W> {
    pub fn new(capacity: Option<(usize, QueueFull)>, events: Arc<EventSink>) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                core: QueueCore::default(),
                last_done: None,
                newest: None,
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
    pub async fn submit(
        &self,
        key: W::Key,
        bkey: Bson,
        seq: Option<u64>,
        task: W::Task,
    ) -> Result<()> {
        let mut entry = Entry {
            key,
            bkey,
            seq,
            task,
            attempts: 0,
            orphan: false,
        };
        if self.capacity.is_none() {
            // Unbounded: never waits.
            return self.try_push(entry).map(|_| ());
        }
        // A submitter that gives up waiting for room leaves a gap in this
        // member's feed, as a refusal does.
        let mut gap = Gap {
            queue: self,
            offered: Some((entry.bkey.clone(), entry.seq)),
        };
        loop {
            // Register for a wake-up before looking, so that none is missed.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_push(entry) {
                Ok(Some(full)) => entry = full,
                done => {
                    // Queued, or refused (a refusal records its gap itself).
                    gap.offered = None;
                    return done.map(|_| ());
                }
            }
            space.await;
        }
    }

    /// Records that a fed task was not queued: this member's feed has a gap.
    fn refused(&self, bkey: &Bson, seq: Option<u64>) {
        let mut inner = lock(&self.inner);
        let dropped = inner.core.refused(bkey, seq);
        inner.stats.pruned += dropped;
        drop(inner);
        if dropped > 0 {
            self.space.notify_waiters();
        }
    }

    /// Appends `entry` unless the queue is full: then gives it back (with
    /// `QueueFull::Wait`) or refuses it.
    fn try_push(&self, entry: Entry<W>) -> Result<Option<Entry<W>>> {
        let mut inner = lock(&self.inner);
        if let Some((capacity, when_full)) = self.capacity {
            if inner.core.len() >= capacity {
                return match when_full {
                    QueueFull::Reject => {
                        // A gap in this member's feed: its runs must not span it.
                        let dropped = inner.core.refused(&entry.bkey, entry.seq);
                        inner.stats.pruned += dropped;
                        Err(Error::QueueFull { capacity })
                    }
                    QueueFull::Wait => Ok(Some(entry)),
                };
            }
        }
        match inner.core.push(entry) {
            Ok(Pushed::Queued) => {
                drop(inner);
                self.ready.notify_one();
            }
            Ok(Pushed::AlreadyRun) => {
                inner.stats.pruned += 1;
            }
            Ok(Pushed::Completed(dropped)) => {
                // The master's last published task arrived: its run was applied.
                inner.stats.pruned += dropped;
                drop(inner);
                self.ready.notify_one();
                self.space.notify_waiters();
            }
            Err(Refused::OutOfOrder { seq, last }) => {
                return Err(Error::argument(
                    "task",
                    format!(
                        "its sequence number {seq} is not above the last one fed, {last}: \
                         feed tasks in sequence order, and skip a task the feed delivers again"
                    ),
                ))
            }
            Err(Refused::Mixed { sequenced }) => {
                return Err(Error::argument(
                    "task",
                    if sequenced {
                        "it has no sequence number but the queue's tasks have: \
                         `Work::sequence` must return `Some` for every task or for none"
                    } else {
                        "it has a sequence number but the queue's tasks have not: \
                         `Work::sequence` must return `Some` for every task or for none"
                    },
                ))
            }
        }
        Ok(None)
    }

    /// Moves the next task to the worker.
    pub fn take(&self) -> Option<Entry<W>> {
        lock(&self.inner).core.take()
    }

    /// Puts an unfinished task back at the head.
    pub fn restore(&self, entry: Entry<W>) {
        let mut inner = lock(&self.inner);
        if inner.core.restore(entry).is_some() {
            // A master published meanwhile that it ran it.
            inner.stats.pruned += 1;
        }
    }

    /// The worker finished a task of `epoch` (done, or dead-lettered when
    /// `dead_letter` is given): it joins the epoch's run.
    pub fn finish(&self, epoch: u64, entry: Entry<W>, dead_letter: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.core.finish(epoch, &entry);
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
            queued: inner.core.len(),
            ..inner.stats.clone()
        }
    }

    pub fn last_done(&self) -> Option<W::Key> {
        lock(&self.inner).last_done.clone()
    }

    /// The keys waiting, in order (not the one being worked on).
    pub fn keys(&self) -> Vec<W::Key> {
        lock(&self.inner)
            .core
            .tasks()
            .map(|e| e.key.clone())
            .collect()
    }
}

impl<W: Work> Inner<W> {
    /// Applies a master's publication and notes its last key.
    fn apply(&mut self, published: &Published) -> u64 {
        let dropped = self.core.incoming(published);
        self.stats.pruned += dropped;
        if let Some(run) = &published.run {
            if self.newest.is_none_or(|seen| (run.epoch, run.count) > seen) {
                self.newest = Some((run.epoch, run.count));
                if let Ok(key) = bson::from_bson(published.id.clone()) {
                    self.last_done = Some(key);
                }
            }
        }
        dropped
    }
}

impl<W: Work> SyncPort for Queue<W> {
    fn outgoing(&self) -> Option<Published> {
        lock(&self.inner).core.outgoing()
    }

    fn incoming(&self, _lease_epoch: u64, published: &Published) {
        let pruned = lock(&self.inner).apply(published);
        if pruned > 0 && self.capacity.is_some() {
            self.space.notify_waiters();
        }
    }

    fn became_master(&self, epoch: u64, inherited: Option<&Published>) {
        let known = {
            let mut inner = lock(&self.inner);
            if let Some(p) = inherited {
                inner.apply(p);
            }
            inner.core.became_master(epoch, inherited)
        };
        self.ready.notify_one();
        if self.capacity.is_some() {
            self.space.notify_waiters();
        }
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
        !lock(&self.inner).core.knows(published)
    }

    fn needs_lease(&self) -> bool {
        lock(&self.inner).core.needs_lease()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Run;
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
            q.submit(t, Bson::Int64(i64::from(t)), None, t)
                .await
                .unwrap();
        }
    }

    /// A run of `count` tasks in `epoch`, from origin `first` to `last`.
    fn run(epoch: u64, first: u32, count: u64, last: u32) -> Published {
        Published {
            id: Bson::Int64(i64::from(last)),
            run: Some(Run {
                epoch,
                first: Bson::Int64(i64::from(first)),
                count,
                covers: None,
            }),
        }
    }

    /// Tasks `(seq, key)`: key mode is not used here.
    async fn feed(q: &Queue<Numbers>, tasks: impl IntoIterator<Item = (u64, u32)>) {
        for (seq, key) in tasks {
            q.submit(key, Bson::Int64(i64::from(key)), Some(seq), key)
                .await
                .unwrap();
        }
    }

    fn covers(epoch: u64, last: u32, from: u64, upto: u64) -> Published {
        Published {
            id: Bson::Int64(i64::from(last)),
            run: Some(Run {
                epoch,
                first: Bson::Int64(0),
                count: 1,
                covers: Some((from, upto)),
            }),
        }
    }

    fn seqs(q: &Queue<Numbers>) -> Vec<u64> {
        lock(&q.inner).core.tasks().filter_map(Item::seq).collect()
    }

    #[tokio::test]
    async fn with_sequences_a_repeated_key_is_never_taken_for_another_task() {
        // The late joiner of the model's counterexample: the master ran #1 (key 1);
        // B joined late and holds #2 (key 2) and #3 (key 1).
        let b = queue(None);
        feed(&b, [(2, 2), (3, 1)]).await;
        b.incoming(1, &covers(1, 1, 1, 1));
        assert_eq!(seqs(&b), [2, 3], "nothing B holds was run");
        // B's feed starts right after the interval: it knows where A stopped.
        assert!(!b.should_defer(Some(&covers(1, 1, 1, 1))));
        // The master runs #2 and #3: B drops both.
        b.incoming(1, &covers(1, 1, 1, 3));
        assert!(seqs(&b).is_empty());
        assert_eq!(b.stats().pruned, 2);
    }

    #[tokio::test]
    async fn with_sequences_a_master_vouches_only_for_what_it_ran() {
        let a = queue(None);
        feed(&a, [(5, 1), (6, 2), (7, 1), (8, 3)]).await;
        // The previous master ran up to 4: A's feed starts at 5, so it resumes
        // exactly there.
        a.became_master(2, Some(&covers(1, 9, 1, 4)));
        assert!(!a.should_defer(Some(&covers(1, 9, 1, 4))));
        for _ in 0..2 {
            let e = a.take().unwrap();
            a.finish(2, e, None);
        }
        let run = a.outgoing().unwrap().run.unwrap();
        assert_eq!(
            run.covers,
            Some((1, 6)),
            "joined with the predecessor's interval"
        );
        // A task taken but not finished is not vouched for.
        let e = a.take().unwrap();
        assert_eq!(a.outgoing().unwrap().run.unwrap().covers, Some((1, 6)));
        a.restore(e);
        assert_eq!(seqs(&a), [7, 8]);
    }

    #[tokio::test]
    async fn with_sequences_a_gap_is_never_vouched_for() {
        // C was fed from 6 on; the previous master published up to 2; B still
        // holds 3 to 5. C leads: its interval starts at 6, and B keeps 3 to 5.
        let c = queue(None);
        feed(&c, [(6, 6), (7, 7)]).await;
        assert!(c.should_defer(Some(&covers(1, 2, 1, 2))));
        c.became_master(3, Some(&covers(1, 2, 1, 2)));
        for _ in 0..2 {
            let e = c.take().unwrap();
            c.finish(3, e, None);
        }
        let published = c.outgoing().unwrap();
        assert_eq!(published.run.as_ref().unwrap().covers, Some((6, 7)));
        let b = queue(None);
        feed(&b, (1..=7).map(|s| (s, s as u32))).await;
        b.incoming(1, &covers(1, 2, 1, 2));
        b.incoming(3, &published);
        assert_eq!(seqs(&b), [3, 4, 5]);
    }

    #[tokio::test]
    async fn with_sequences_a_lagging_feed_drops_what_was_run_on_arrival() {
        let q = queue(None);
        q.incoming(1, &covers(1, 3, 1, 3));
        feed(&q, [(1, 1), (2, 2), (3, 3), (4, 4)]).await;
        assert_eq!(seqs(&q), [4]);
        assert_eq!(q.stats().pruned, 3);
        // Out of order, or mixed with tasks without a sequence: refused.
        let err = q.submit(9, Bson::Int64(9), Some(2), 9).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("sequence number 2 is not above the last one fed, 4"),
            "{err}"
        );
        let err = q.submit(9, Bson::Int64(9), None, 9).await.unwrap_err();
        assert!(
            err.to_string().contains("for every task or for none"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_run_drops_from_its_origin_through_its_last_key() {
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.incoming(1, &run(1, 1, 3, 3));
        assert_eq!(q.keys(), (4..=10).collect::<Vec<_>>());
        // A standby that missed publications catches up at the next one: the
        // successor continued origin 1, which left our queue before.
        q.incoming(2, &run(2, 1, 2, 7));
        assert_eq!(q.keys(), [8, 9, 10]);
        // Repeated and older publications change nothing.
        q.incoming(2, &run(2, 1, 2, 7));
        q.incoming(1, &run(1, 1, 3, 3));
        assert_eq!(q.keys(), [8, 9, 10]);
        assert_eq!(q.stats().pruned, 7);
        assert_eq!(q.last_done(), Some(7));
    }

    #[tokio::test]
    async fn a_last_key_not_yet_fed_is_applied_as_the_feed_catches_up() {
        // The master is ahead of our feed, and its run starts at a task we hold:
        // everything from there on is covered, now and as it arrives.
        let q = queue(None);
        fill(&q, 1..=3).await;
        q.incoming(1, &run(1, 1, 5, 5));
        assert!(q.keys().is_empty());
        assert!(!q.should_defer(Some(&run(1, 1, 5, 5))));
        fill(&q, [4, 5, 6]).await;
        assert_eq!(q.keys(), [6]);
        assert_eq!(q.stats().pruned, 5);
        // A run we cannot place (its origin is not ours) waits for its last key.
        let q = queue(None);
        fill(&q, 3..=4).await;
        q.incoming(1, &run(1, 1, 6, 6));
        assert_eq!(
            q.keys(),
            [3, 4],
            "nothing is dropped before the key is known"
        );
        assert!(q.should_defer(Some(&run(1, 1, 6, 6))));
        fill(&q, [5, 6, 7]).await;
        assert_eq!(q.keys(), [7]);
        assert!(!q.should_defer(Some(&run(1, 1, 6, 6))));
    }

    #[tokio::test]
    async fn what_stands_before_a_runs_origin_is_kept() {
        // A late joiner led: its run's origin is its own first task, 6.
        let q = queue(None);
        fill(&q, 3..=7).await;
        q.incoming(2, &run(2, 6, 1, 6));
        assert_eq!(q.keys(), [3, 4, 5, 7]);
        // Its successor continued origin 6: the orphans are kept.
        fill(&q, 8..=9).await;
        q.incoming(3, &run(3, 6, 2, 8));
        assert_eq!(q.keys(), [3, 4, 5, 9]);
        // A member that cannot place the run defers.
        let late = queue(None);
        fill(&late, [6, 7]).await;
        let published = run(1, 1, 2, 2);
        late.incoming(1, &published);
        assert_eq!(late.keys(), [6, 7]);
        assert!(late.should_defer(Some(&published)));
    }

    #[tokio::test]
    async fn orphans_start_their_holders_run() {
        let q = queue(None);
        fill(&q, 3..=7).await;
        q.incoming(2, &run(2, 6, 2, 7));
        q.became_master(3, Some(&run(2, 6, 2, 7)));
        let e = q.take().unwrap();
        q.finish(3, e, None);
        let r = q.outgoing().unwrap().run.unwrap();
        assert_eq!(r.first, Bson::Int64(3), "the orphan is the new origin");
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
            q.submit(3, Bson::Int64(3), None, 3).await,
            Err(Error::QueueFull { capacity: 2 })
        );
        let q = Arc::new(queue(Some((1, QueueFull::Wait))));
        fill(&q, [1]).await;
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.submit(2, Bson::Int64(2), None, 2).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let e = q.take().unwrap();
        q.finish(1, e, None);
        waiting.await.unwrap().unwrap();
        assert_eq!(q.keys(), [2]);
    }

    /// Runs the next `n` tasks as master of `epoch`.
    fn work_off(q: &Queue<Numbers>, epoch: u64, n: usize) {
        for _ in 0..n {
            let e = q.take().unwrap();
            q.finish(epoch, e, None);
        }
    }

    #[tokio::test]
    async fn with_sequences_a_refused_task_is_never_vouched_for() {
        let c = queue(Some((1, QueueFull::Reject)));
        c.became_master(1, None);
        feed(&c, [(1, 1)]).await;
        let err = c.submit(2, Bson::Int64(2), Some(2), 2).await.unwrap_err();
        assert_eq!(err, Error::QueueFull { capacity: 1 });
        work_off(&c, 1, 1);
        feed(&c, [(3, 3)]).await;
        // 3 waits: C vouches for its feed up to the gap.
        assert_eq!(c.outgoing().unwrap().run.unwrap().covers, Some((1, 1)));
        work_off(&c, 1, 1);
        // Past the gap: only what follows it, never 2.
        assert_eq!(c.outgoing().unwrap().run.unwrap().covers, Some((3, 3)));
        // B holds 2: it keeps it, and must lead to run it.
        let b = queue(None);
        feed(&b, [(1, 1), (2, 2), (3, 3)]).await;
        b.incoming(1, &covers(1, 1, 1, 1));
        b.incoming(1, &c.outgoing().unwrap());
        assert_eq!(seqs(&b), [2]);
        assert!(b.needs_lease());
        // A refused task offered again closes its own gap.
        let d = queue(Some((1, QueueFull::Reject)));
        d.became_master(1, None);
        feed(&d, [(1, 1)]).await;
        assert!(d.submit(2, Bson::Int64(2), Some(2), 2).await.is_err());
        work_off(&d, 1, 1);
        feed(&d, [(2, 2)]).await;
        work_off(&d, 1, 1);
        assert_eq!(d.outgoing().unwrap().run.unwrap().covers, Some((1, 2)));
    }

    #[tokio::test]
    async fn with_sequences_each_gap_restarts_the_interval() {
        let c = queue(Some((2, QueueFull::Reject)));
        c.became_master(1, None);
        feed(&c, [(1, 1), (2, 2)]).await;
        assert!(c.submit(3, Bson::Int64(3), Some(3), 3).await.is_err());
        work_off(&c, 1, 1);
        feed(&c, [(4, 4)]).await;
        assert!(c.submit(5, Bson::Int64(5), Some(5), 5).await.is_err());
        let mut published = Vec::new();
        for _ in 0..2 {
            work_off(&c, 1, 1);
            published.push(c.outgoing().unwrap().run.unwrap().covers);
        }
        feed(&c, [(6, 6), (7, 7)]).await;
        for _ in 0..2 {
            work_off(&c, 1, 1);
            published.push(c.outgoing().unwrap().run.unwrap().covers);
        }
        assert_eq!(
            published,
            [Some((1, 2)), Some((4, 4)), Some((6, 6)), Some((6, 7))],
            "never across 3 or 5"
        );
    }

    #[tokio::test]
    async fn a_submission_that_stops_waiting_for_room_leaves_a_gap() {
        let c = Arc::new(queue(Some((1, QueueFull::Wait))));
        c.became_master(1, None);
        feed(&c, [(1, 1)]).await;
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            c.submit(2, Bson::Int64(2), Some(2), 2),
        )
        .await;
        assert!(waiting.is_err(), "the queue is full: the submission waits");
        work_off(&c, 1, 1);
        feed(&c, [(3, 3)]).await;
        work_off(&c, 1, 1);
        assert_eq!(c.outgoing().unwrap().run.unwrap().covers, Some((3, 3)));
    }

    #[tokio::test]
    async fn without_sequences_a_run_restarts_its_origin_after_a_refused_task() {
        let c = queue(Some((1, QueueFull::Reject)));
        c.became_master(1, None);
        fill(&c, [1]).await;
        assert!(c.submit(2, Bson::Int64(2), None, 2).await.is_err());
        work_off(&c, 1, 1);
        let first = c.outgoing().unwrap();
        fill(&c, [3]).await;
        work_off(&c, 1, 1);
        let second = c.outgoing().unwrap();
        assert_eq!(second.run.as_ref().unwrap().first, Bson::Int64(3));
        // B holds 1, 2, 3: it keeps 2, and must lead to run it.
        let b = queue(None);
        fill(&b, 1..=3).await;
        b.incoming(1, &first);
        assert!(!b.needs_lease());
        b.incoming(1, &second);
        assert_eq!(b.keys(), [2]);
        assert!(b.needs_lease());
        // The refused task offered again closes its own gap.
        let d = queue(Some((1, QueueFull::Reject)));
        d.became_master(1, None);
        fill(&d, [1]).await;
        assert!(d.submit(2, Bson::Int64(2), None, 2).await.is_err());
        work_off(&d, 1, 1);
        fill(&d, [2]).await;
        work_off(&d, 1, 1);
        assert_eq!(d.outgoing().unwrap().run.unwrap().first, Bson::Int64(1));
    }

    #[tokio::test]
    async fn a_standby_holding_what_no_run_covers_needs_the_lease() {
        // Key mode: the master's run starts at 6; 3, 4, 5 stand before it.
        let b = queue(None);
        fill(&b, 3..=7).await;
        assert!(!b.needs_lease());
        b.incoming(2, &run(2, 6, 2, 7));
        assert_eq!(b.keys(), [3, 4, 5]);
        assert!(b.needs_lease());
        // A later run that starts at 3 takes them over: nothing left behind.
        fill(&b, [8]).await;
        b.incoming(3, &run(3, 3, 1, 3));
        assert_eq!(b.keys(), [4, 5, 8]);
        assert!(!b.needs_lease(), "the master runs 4 and 5 next");
        // Sequence mode: the master vouches for 6 and 7 only.
        let b = queue(None);
        feed(&b, (3..=7).map(|s| (s, s as u32))).await;
        b.incoming(2, &covers(2, 7, 6, 7));
        assert_eq!(seqs(&b), [3, 4, 5]);
        assert!(b.needs_lease());
        // The master's interval reaches back to them: it runs them next.
        b.incoming(3, &covers(3, 2, 1, 2));
        assert!(!b.needs_lease());
        // As master, never.
        b.incoming(2, &covers(2, 7, 6, 7));
        assert!(b.needs_lease());
        b.became_master(4, Some(&covers(2, 7, 6, 7)));
        assert!(!b.needs_lease());
    }

    #[tokio::test]
    async fn a_new_master_keeps_the_run_it_inherited_until_its_feed_catches_up() {
        // A ran 1, 2 and 3 and released; B was fed only 1.
        let b = queue(None);
        fill(&b, [1]).await;
        let released = run(1, 1, 3, 3);
        b.became_master(2, Some(&released));
        assert!(b.take().is_none(), "1 was run by A");
        fill(&b, [2, 3, 4]).await;
        assert_eq!(b.keys(), [4]);
        work_off(&b, 2, 1);
        let r = b.outgoing().unwrap().run.unwrap();
        assert_eq!(r.first, Bson::Int64(1), "B continues A's run");
        // C was fed from 2 on: it cannot place the run, which waits for its last
        // key; a full queue refuses that key: the run ends right after the tail.
        let c = queue(Some((1, QueueFull::Reject)));
        fill(&c, [2]).await;
        c.became_master(2, Some(&released));
        assert!(c.submit(3, Bson::Int64(3), None, 3).await.is_err());
        assert!(c.keys().is_empty(), "2 was run by A");
        fill(&c, [4]).await;
        assert_eq!(c.keys(), [4]);
    }
}
