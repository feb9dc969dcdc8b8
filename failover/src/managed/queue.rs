//! The managed work queue: FIFO on every member, pruned on the standbys by the
//! master's published run.
//!
//! # What the master publishes
//!
//! Every task that leaves the master's queue in its epoch (done, or moved out as a
//! dead letter) belongs to the epoch's *run*. With each renewal the master
//! publishes the run: its epoch, its first key, its length, and its last key (the
//! synchronize id).
//!
//! # How a standby prunes
//!
//! A standby drops a task only when it can place it in the run:
//! * it finds the run's first key in its queue (or among the keys it finished
//!   itself as master, when it stepped down and another member resumed after it):
//!   the *anchor*; from there the run's tasks are its next tasks, counted;
//! * the counted run must end with the published last key. If the standby's feed
//!   lags, the tasks it has are set aside and the next ones to arrive are counted
//!   into the run as they come; only when the last one matches are they dropped. A
//!   mismatch puts every task set aside back, in order.
//!
//! So a standby that was fed from another point than the master (it joined late,
//! or restarted), or whose keys repeat, never drops a task that the master did not
//! run: it keeps it, and runs it if it leads later (a repeat, never a loss).
//! A member whose queue cannot place the last run gives better-fed members a head
//! start of one lease before it takes an expired lease, and reports
//! [`Event::ResumePointUnknown`] if it leads anyway.

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

/// How many keys a member remembers of the tasks it finished itself in its last
/// epoch, to place the next master's run after a step-down.
const OWN_TAIL: usize = 4096;

/// A queued task with its key (typed and as BSON) and how often it was tried.
pub(crate) struct Entry<W: Work> {
    pub key: W::Key,
    pub bkey: Bson,
    pub task: W::Task,
    pub attempts: u32,
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
    /// The chain it ends: its first key and its tasks before this run.
    origin: Option<Bson>,
    before: u64,
    first: Bson,
    count: u64,
    last: Bson,
}

/// A standby's progress in placing the run of one epoch.
struct Follow {
    epoch: u64,
    /// The run's chain: its first key, and the run's position in it.
    origin: Bson,
    before: u64,
    /// Where this member stood in a chain when the run arrived: the index in
    /// `tasks`, that task's position in the chain, and the chain's first key.
    hint: Option<(usize, u64, Bson)>,
    /// Where in `tasks` the run continues, once anchored.
    anchor: Option<usize>,
    /// Run tasks accounted for: pruned, set aside, or finished by this member.
    matched: u64,
    /// The published length and last key.
    count: u64,
    last: Bson,
    /// A mismatch was found: no more pruning for this epoch.
    broken: bool,
}

struct Inner<W: Work> {
    tasks: VecDeque<Entry<W>>,
    /// Taken by the worker, not yet finished.
    in_flight: usize,
    /// As master: this epoch's run.
    run: Option<OwnRun>,
    /// As master: the chain this epoch's run continues, if any (origin, before).
    chain: Option<(Bson, u64)>,
    /// Epochs this member led: their runs need no pruning here.
    own_epochs: HashSet<u64>,
    /// Keys this member finished in its latest epoch (at most [`OWN_TAIL`]).
    own_tail: VecDeque<Bson>,
    /// As standby: placing the current master's run.
    follow: Option<Follow>,
    /// The tasks of `follow` set aside until its last key is seen.
    aside: Vec<Entry<W>>,
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
                chain: None,
                own_epochs: HashSet::new(),
                own_tail: VecDeque::new(),
                follow: None,
                aside: Vec::new(),
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
            if inner.tasks.len() + inner.in_flight + inner.aside.len() >= capacity {
                return match when_full {
                    QueueFull::Reject => Err(Error::QueueFull { capacity }),
                    QueueFull::Wait => Ok(Some(entry)),
                };
            }
        }
        let owed = inner
            .follow
            .as_ref()
            .is_some_and(|f| !f.broken && f.anchor.is_some() && f.matched < f.count);
        if owed {
            // The master's run goes on past what we had: this task is part of it.
            let f = inner.follow.as_mut().expect("checked above");
            f.matched += 1;
            let complete = f.matched == f.count;
            let matches = entry.bkey == f.last;
            inner.aside.push(entry);
            if complete {
                inner.settle(matches);
                drop(inner);
                self.space.notify_waiters();
            }
            return Ok(None);
        }
        inner.tasks.push_back(entry);
        drop(inner);
        self.ready.notify_one();
        Ok(None)
    }

    /// Moves the next task to the worker.
    pub fn take(&self) -> Option<Entry<W>> {
        let mut inner = lock(&self.inner);
        let entry = inner.tasks.pop_front()?;
        inner.in_flight += 1;
        // The anchor of a run being placed moves with the head.
        if let Some(a) = inner.follow.as_mut().and_then(|f| f.anchor.as_mut()) {
            *a = a.saturating_sub(1);
        }
        Some(entry)
    }

    /// Puts an unfinished task back at the head.
    pub fn restore(&self, entry: Entry<W>) {
        let mut inner = lock(&self.inner);
        inner.in_flight = inner.in_flight.saturating_sub(1);
        inner.tasks.push_front(entry);
        if let Some(a) = inner.follow.as_mut().and_then(|f| f.anchor.as_mut()) {
            *a += 1;
        }
    }

    /// The worker finished a task of `epoch` (done, or dead-lettered when
    /// `dead_letter` is given): it joins the epoch's run.
    pub fn finish(&self, epoch: u64, entry: Entry<W>, dead_letter: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.in_flight = inner.in_flight.saturating_sub(1);
        match &mut inner.run {
            Some(run) if run.epoch == epoch => {
                run.count += 1;
                run.last = entry.bkey.clone();
            }
            _ => {
                let (origin, before) = match inner.chain.take() {
                    Some((origin, before)) => (Some(origin), before),
                    None => (None, 0),
                };
                inner.run = Some(OwnRun {
                    epoch,
                    origin,
                    before,
                    first: entry.bkey.clone(),
                    count: 1,
                    last: entry.bkey.clone(),
                });
            }
        }
        if inner.own_tail.len() == OWN_TAIL {
            inner.own_tail.pop_front();
        }
        inner.own_tail.push_back(entry.bkey.clone());
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
            queued: inner.tasks.len() + inner.in_flight + inner.aside.len(),
            ..inner.stats.clone()
        }
    }

    pub fn last_done(&self) -> Option<W::Key> {
        lock(&self.inner).last_done.clone()
    }

    /// The keys waiting, in order (not the one being worked on, nor those set aside).
    pub fn keys(&self) -> Vec<W::Key> {
        lock(&self.inner)
            .tasks
            .iter()
            .map(|e| e.key.clone())
            .collect()
    }
}

impl<W: Work> Inner<W> {
    /// The last counted task of the run arrived: drop the tasks set aside if it is
    /// the published last one, else put them back.
    fn settle(&mut self, matches: bool) {
        let Some(f) = self.follow.as_mut() else {
            return;
        };
        let aside = std::mem::take(&mut self.aside);
        if matches {
            self.stats.pruned += aside.len() as u64;
            if let Some(last) = aside.last() {
                self.last_done = Some(last.key.clone());
            }
        } else {
            tracing::warn!(target: "failover::managed", epoch = f.epoch,
                "the master's run does not line up with this member's queue; keeping every task");
            f.broken = true;
            let at = f.anchor.unwrap_or(self.tasks.len()).min(self.tasks.len());
            for (i, e) in aside.into_iter().enumerate() {
                self.tasks.insert(at + i, e);
            }
        }
    }

    /// Puts back every task set aside (not proven run).
    fn unsettle(&mut self) {
        if self.aside.is_empty() {
            return;
        }
        let at = self
            .follow
            .as_ref()
            .and_then(|f| f.anchor)
            .unwrap_or(0)
            .min(self.tasks.len());
        for (i, e) in std::mem::take(&mut self.aside).into_iter().enumerate() {
            self.tasks.insert(at + i, e);
        }
    }

    /// Places the master's published run (see the module docs).
    fn apply(&mut self, run: &Run, last: &Bson) -> u64 {
        let (run_epoch, first, count) = (run.epoch, &run.first, run.count);
        if self.own_epochs.contains(&run_epoch) {
            return 0; // our own run: its tasks left our queue as we ran them
        }
        if self.follow.as_ref().is_none_or(|f| f.epoch != run_epoch) {
            // Where we were in the chain: the tasks set aside go back first.
            let hint = match (&self.follow, &self.run) {
                (Some(f), _) => f.anchor.and_then(|anchor| {
                    let pos = (f.before + f.matched).checked_sub(self.aside.len() as u64)?;
                    (!f.broken).then(|| (anchor, pos, f.origin.clone()))
                }),
                // We led last: our queue's head follows our own run.
                (None, Some(own)) => Some((
                    0,
                    own.before + own.count,
                    own.origin.clone().unwrap_or_else(|| own.first.clone()),
                )),
                (None, None) => None,
            };
            self.unsettle();
            self.follow = Some(Follow {
                epoch: run_epoch,
                origin: run.origin.clone(),
                before: run.before,
                hint,
                anchor: None,
                matched: 0,
                count: 0,
                last: Bson::Null,
                broken: false,
            });
        }
        let mut pruned = 0;
        if self
            .follow
            .as_ref()
            .is_some_and(|f| f.anchor.is_none() && !f.broken)
        {
            // Not placed yet (also retried on every later publication, as the feed
            // of a member that just started catches up).
            let hint = self.follow.as_ref().and_then(|f| f.hint.clone());
            match self.drop_chain(run, hint) {
                Some((dropped, start)) => {
                    pruned += dropped;
                    if let Some(f) = self.follow.as_mut() {
                        f.anchor = Some(start);
                        f.hint = Some((start, run.before, run.origin.clone()));
                    }
                }
                None => {
                    let found = self.tasks.iter().position(|e| &e.bkey == first);
                    let own = self.own_tail.iter().position(|k| k == first);
                    let tail = self.own_tail.len();
                    let Some(f) = self.follow.as_mut() else {
                        return 0;
                    };
                    if let Some(i) = found {
                        f.anchor = Some(i);
                    } else if let Some(k) = own {
                        // We ran the start of this run ourselves before we stepped down.
                        f.anchor = Some(0);
                        f.matched = (tail - k) as u64;
                    } else {
                        return 0; // cannot place it (yet): keep everything
                    }
                }
            }
        }
        let tasks = &mut self.tasks;
        let Some(f) = self.follow.as_mut() else {
            return pruned;
        };
        if f.broken || count <= f.count {
            return pruned;
        }
        f.count = count;
        f.last = last.clone();
        let Some(anchor) = f.anchor else {
            return pruned;
        };
        let need = f.count.saturating_sub(f.matched) as usize;
        let have = tasks.len().saturating_sub(anchor);
        let take = need.min(have);
        if take == 0 {
            return pruned;
        }
        let moved: Vec<Entry<W>> = tasks.drain(anchor..anchor + take).collect();
        f.matched += take as u64;
        let complete = f.matched == f.count;
        let matches = moved.last().is_some_and(|e| &e.bkey == last);
        self.aside.extend(moved);
        if complete {
            let before = self.stats.pruned;
            self.settle(matches);
            return pruned + self.stats.pruned - before;
        }
        pruned
    }

    /// A new epoch's run that ends a chain of gapless runs: if this member's queue
    /// holds the chain's first key, followed after exactly the chain's earlier
    /// tasks by this run's first key, those earlier tasks were run (by the chain's
    /// earlier epochs): drop them. This is how a member that restarted (fed from
    /// the start) or missed the last publications of an epoch catches up. Returns
    /// how many were dropped and where the run starts in the queue.
    fn drop_chain(&mut self, run: &Run, hint: Option<(usize, u64, Bson)>) -> Option<(u64, usize)> {
        if run.before == 0 {
            return None;
        }
        let lines_up = |tasks: &VecDeque<Entry<W>>, start: usize, skip: u64| {
            let at = start.checked_add(usize::try_from(skip).ok()?)?;
            tasks
                .get(at)
                .filter(|e| e.bkey == run.first)
                .map(|_| (start, at))
        };
        // Where we were in the same chain, or where the chain starts.
        let found = hint
            .filter(|(_, pos, origin)| *origin == run.origin && *pos <= run.before)
            .and_then(|(anchor, pos, _)| lines_up(&self.tasks, anchor, run.before - pos))
            .or_else(|| {
                let o = self.tasks.iter().position(|e| e.bkey == run.origin)?;
                lines_up(&self.tasks, o, run.before)
            });
        let (start, at) = found?; // does not line up: keep everything
        let dropped: Vec<Entry<W>> = self.tasks.drain(start..at).collect();
        if let Some(last) = dropped.last() {
            self.last_done = Some(last.key.clone());
        }
        self.stats.pruned += dropped.len() as u64;
        Some((dropped.len() as u64, start))
    }

    /// Whether this member can place the run `published` names (or needs not).
    fn knows(&self, published: Option<&Published>) -> bool {
        let Some(run) = published.and_then(|p| p.run.as_ref()) else {
            return true;
        };
        if self.own_epochs.contains(&run.epoch) {
            return true;
        }
        self.follow.as_ref().is_some_and(|f| {
            f.epoch == run.epoch && !f.broken && f.anchor.is_some() && f.matched >= run.count
        })
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
                origin: run.origin.clone().unwrap_or_else(|| run.first.clone()),
                before: run.before,
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
        // This epoch's run continues the chain if this member resumes right after
        // the inherited run: it placed it whole and keeps no task in front of it.
        let inherited_run = inherited.and_then(|p| p.run.as_ref());
        let head = inner.follow.as_ref().and_then(|f| f.anchor);
        let own = inherited_run.is_some_and(|r| inner.own_epochs.contains(&r.epoch));
        let resumes = own || (known && head == Some(0) && inner.aside.is_empty());
        inner.chain = match inherited_run {
            // Our own run goes on where we stopped, which may be past what we published.
            Some(run) if own => inner
                .run
                .as_ref()
                .filter(|r| r.epoch == run.epoch)
                .map(|r| {
                    let origin = r.origin.clone().unwrap_or_else(|| r.first.clone());
                    (origin, r.before.saturating_add(r.count))
                })
                .or_else(|| Some((run.origin.clone(), run.before.saturating_add(run.count)))),
            Some(run) if resumes => {
                Some((run.origin.clone(), run.before.saturating_add(run.count)))
            }
            _ => None,
        };
        // Tasks set aside are not proven run: work them.
        inner.unsettle();
        inner.follow = None;
        inner.own_epochs.insert(epoch);
        inner.own_tail.clear();
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

    fn run(epoch: u64, first: u32, count: u64, last: u32) -> Published {
        chained(epoch, first, 0, first, count, last)
    }

    /// A run whose chain starts at `origin` with `before` tasks before `first`.
    fn chained(
        epoch: u64,
        origin: u32,
        before: u64,
        first: u32,
        count: u64,
        last: u32,
    ) -> Published {
        Published {
            id: Bson::Int64(i64::from(last)),
            run: Some(Run {
                epoch,
                first: Bson::Int64(i64::from(first)),
                count,
                origin: Bson::Int64(i64::from(origin)),
                before,
            }),
        }
    }

    #[tokio::test]
    async fn a_placed_run_is_dropped() {
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.incoming(1, &run(1, 1, 3, 3));
        assert_eq!(q.keys(), (4..=10).collect::<Vec<_>>());
        q.incoming(1, &run(1, 1, 5, 5));
        assert_eq!(q.keys(), (6..=10).collect::<Vec<_>>());
        // Repeated and older publications change nothing.
        q.incoming(1, &run(1, 1, 5, 5));
        q.incoming(1, &run(1, 1, 4, 4));
        assert_eq!(q.keys(), (6..=10).collect::<Vec<_>>());
        assert_eq!(q.stats().pruned, 5);
        assert_eq!(q.last_done(), Some(5));
    }

    #[tokio::test]
    async fn a_lagging_feed_is_counted_into_the_run_as_it_arrives() {
        let q = queue(None);
        fill(&q, 1..=3).await;
        q.incoming(1, &run(1, 1, 5, 5)); // the master is ahead of what we were fed
        assert!(q.keys().is_empty(), "1 to 3 are set aside");
        assert_eq!(q.stats().queued, 3, "set aside, not dropped");
        fill(&q, [4, 5, 6]).await;
        assert_eq!(q.keys(), [6]);
        assert_eq!(q.stats().pruned, 5);
    }

    #[tokio::test]
    async fn a_run_that_does_not_line_up_drops_nothing() {
        let q = queue(None);
        fill(&q, 1..=3).await;
        q.incoming(1, &run(1, 1, 5, 5));
        fill(&q, [4, 9, 6]).await; // the fifth task is 9, not 5
        assert_eq!(q.keys(), [1, 2, 3, 4, 9, 6]);
        assert_eq!(q.stats().pruned, 0);
    }

    #[tokio::test]
    async fn a_run_that_starts_elsewhere_drops_nothing_before_it() {
        // A late joiner led: its run starts at 6.
        let q = queue(None);
        fill(&q, 3..=7).await;
        q.incoming(2, &run(2, 6, 1, 6));
        assert_eq!(q.keys(), [3, 4, 5, 7]);
        // It cannot place a run whose start it never had: it keeps everything.
        let late = queue(None);
        fill(&late, [6, 7]).await;
        late.incoming(1, &run(1, 1, 2, 2));
        assert_eq!(late.keys(), [6, 7]);
        assert!(late.should_defer(Some(&run(1, 1, 2, 2))));
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
    async fn a_run_resumed_after_our_own_finished_tasks_is_placed() {
        // We ran 1..=5 as master of epoch 1 but published only 3; another member
        // resumed at 4 and ran 4..=7.
        let q = queue(None);
        fill(&q, 1..=9).await;
        q.became_master(1, None);
        for _ in 0..5 {
            let e = q.take().unwrap();
            q.finish(1, e, None);
        }
        q.incoming(2, &run(2, 4, 4, 7));
        assert_eq!(q.keys(), [8, 9]);
    }

    #[tokio::test]
    async fn a_chained_run_drops_the_chains_earlier_tasks() {
        // Epoch 1 ran 1..=7; we saw only its publication up to 3. Epoch 2 resumed
        // right after 7: its chain starts at 1 with 7 tasks before its first, 8.
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.incoming(1, &run(1, 1, 3, 3));
        assert_eq!(q.keys(), (4..=10).collect::<Vec<_>>());
        q.incoming(2, &chained(2, 1, 7, 8, 1, 8));
        assert_eq!(q.keys(), [9, 10]);
        // A member that restarted, fed from the start, catches up the same way.
        let fresh = queue(None);
        fill(&fresh, 1..=10).await;
        fresh.incoming(2, &chained(2, 1, 7, 8, 1, 8));
        assert_eq!(fresh.keys(), [9, 10]);
        // An unchained next run drops nothing before its first task, and a chain
        // that does not line up drops nothing.
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.incoming(1, &run(1, 1, 3, 3));
        q.incoming(2, &run(2, 8, 1, 8));
        assert_eq!(q.keys(), [4, 5, 6, 7, 9, 10]);
        let q = queue(None);
        fill(&q, 1..=10).await;
        q.incoming(2, &chained(2, 1, 6, 8, 1, 8));
        assert_eq!(q.keys(), [1, 2, 3, 4, 5, 6, 7, 9, 10]);
    }

    #[tokio::test]
    async fn a_master_that_resumes_right_after_the_inherited_run_chains_it() {
        let q = queue(None);
        fill(&q, 1..=6).await;
        q.became_master(2, Some(&run(1, 1, 2, 2)));
        let e = q.take().unwrap();
        q.finish(2, e, None);
        let r = q.outgoing().unwrap().run.unwrap();
        assert_eq!(
            (r.origin, r.before, r.first),
            (Bson::Int64(1), 2, Bson::Int64(3))
        );
        // A member with a task in front of the inherited run starts a new chain.
        let q = queue(None);
        fill(&q, [0, 1, 2, 3]).await;
        q.became_master(2, Some(&run(1, 1, 2, 2)));
        let e = q.take().unwrap();
        q.finish(2, e, None);
        let r = q.outgoing().unwrap().run.unwrap();
        assert_eq!(
            (r.origin, r.before, r.first),
            (Bson::Int64(0), 0, Bson::Int64(0))
        );
    }

    #[tokio::test]
    async fn a_retaken_own_lease_continues_the_chain_past_what_was_published() {
        let q = queue(None);
        fill(&q, 1..=8).await;
        q.became_master(1, None);
        let mut published = None;
        for n in 1..=5 {
            let e = q.take().unwrap();
            q.finish(1, e, None);
            if n == 3 {
                published = q.outgoing(); // the last renewal saw three tasks
            }
        }
        q.became_master(2, published.as_ref());
        let e = q.take().unwrap();
        q.finish(2, e, None);
        let r = q.outgoing().unwrap().run.unwrap();
        assert_eq!(
            (r.origin, r.before, r.first),
            (Bson::Int64(1), 5, Bson::Int64(6))
        );
    }

    #[tokio::test]
    async fn a_member_whose_feed_is_still_arriving_places_the_run_once_it_can() {
        // A member just started: it has been fed 1..=3 of the tasks 1..=10 when it
        // first reads the master's run (chain from 1, 7 tasks before 8).
        let q = queue(None);
        fill(&q, 1..=3).await;
        let published = chained(2, 1, 7, 8, 1, 8);
        q.incoming(2, &published);
        assert_eq!(q.keys(), [1, 2, 3], "nothing can be placed yet");
        fill(&q, 4..=10).await;
        q.incoming(2, &published); // the next check reads the same publication
        assert_eq!(q.keys(), [9, 10]);
        assert!(!q.should_defer(Some(&published)));
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
