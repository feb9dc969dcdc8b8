//! The pruning rule of the managed queue, as a pure data structure: which tasks a
//! member holds, what its run is as master, what it publishes, and what it drops
//! when it reads a master's publication.
//!
//! [`Queue`](super::queue::Queue) wraps it (with a lock, wake-ups, capacity and
//! counters); the model check (`tests/model.rs`) runs this very code on small
//! integers, through `failover::__private::QueueCore`.
//!
//! # Two ways to tell tasks apart
//!
//! * **By feed sequence** ([`Work::sequence`](super::Work::sequence) returns
//!   `Some`): every task carries a number that grows in feed order (a message
//!   log's offset, a table's auto-increment id). Keys may then repeat freely and
//!   members may be fed from any point. The master publishes the interval of
//!   sequence numbers `[from, upto]` of which every task of the feed has been run:
//!   its own feed from its first task up to the task before its queue's head,
//!   joined with what earlier masters published when the two touch. A standby
//!   drops exactly the tasks whose sequence lies in a published interval (also a
//!   task that arrives later with such a number) and nothing else, so it never
//!   drops a task nobody ran. A member whose first task comes after the published
//!   interval's end cannot know what lies between: it gives better-fed members a
//!   head start and reports `ResumePointUnknown` if it leads anyway.
//! * **By key** (no sequence): the original's rule, made safe for members fed
//!   from different points. The master publishes its run: the last key, and the
//!   *origin*: the key from which every task up to the last was run, by it and
//!   by the masters before it whose runs it continued. A master continues its
//!   predecessor's origin when it could place the predecessor's last key in its
//!   queue (and holds no orphans, below); otherwise (it joined late, was fed from
//!   another point, or it is the first master) the origin is its own first task.
//!   A standby drops from the origin through the last key; when the origin is not
//!   in its queue (it ran or dropped it before, or was never fed it), everything
//!   up to the last key. What stands before the origin is kept as *orphans*: only
//!   a run whose interval names them drops them, and their holder runs them first
//!   when it leads. A last key not fed yet is applied when it arrives. Here the key
//!   is the task's identity: keys must not repeat while a member may still hold or
//!   be fed the earlier task (in practice: never reuse a key), or a standby can
//!   take the new task for the old one. Give tasks a sequence when keys repeat.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Debug;

/// Most intervals of covered sequence numbers a member remembers (older ones are
/// forgotten: a task of a forgotten interval that arrives late runs again, it is
/// never dropped).
const MAX_INTERVALS: usize = 64;

/// What the rule needs to know of a queued task.
pub trait Item {
    /// How the task is named in publications.
    type Key: Clone + PartialEq + Debug;
    /// The task's key.
    fn key(&self) -> &Self::Key;
    /// Its feed sequence number, if tasks have one.
    fn seq(&self) -> Option<u64>;
    /// Whether it is kept as an orphan (key mode).
    fn orphan(&self) -> bool;
    /// Marks it an orphan.
    fn set_orphan(&mut self);
}

/// A master's run in its epoch, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Run<K> {
    /// The epoch the run belongs to.
    pub epoch: u64,
    /// Key mode: the origin, the key from which every task up to the last one
    /// was run (by this master and those whose runs it continued).
    pub first: K,
    /// How many tasks left the master's queue in the epoch.
    pub count: u64,
    /// Sequence mode: every task of the feed numbered in `[from, upto]` was run.
    pub covers: Option<(u64, u64)>,
}

/// What a master publishes: its last finished key (the synchronize id) and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Published<K> {
    /// The last finished task's key.
    pub id: K,
    /// The run, in managed mode.
    pub run: Option<Run<K>>,
}

/// Why a task cannot be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Its sequence number is not above the last one fed.
    OutOfOrder {
        /// The task's sequence number.
        seq: u64,
        /// The highest one fed before.
        last: u64,
    },
    /// Some tasks have a sequence number and this one has not, or the reverse.
    Mixed {
        /// Whether the queue's tasks have sequence numbers.
        sequenced: bool,
    },
}

/// What became of a task offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and it completed a pending run (key mode): `n` tasks were dropped.
    Completed(u64),
    /// Not queued: a master already published that it ran it (sequence mode).
    AlreadyRun,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OwnRun<K> {
    epoch: u64,
    /// The origin (see [`Run::first`]).
    first: K,
    count: u64,
    last: K,
}

/// One member's queue and the state of the pruning rule.
#[derive(Debug, Clone)]
pub struct QueueCore<E: Item> {
    tasks: VecDeque<E>,
    /// Sequence numbers of the tasks taken by the worker and not finished yet.
    in_flight: Vec<Option<u64>>,
    /// Whether tasks have sequence numbers (decided by the first one fed).
    sequenced: Option<bool>,
    /// Sequence mode: the first and the highest sequence number fed.
    feed_start: Option<u64>,
    highest_fed: Option<u64>,
    /// Sequence mode: intervals known to have been run, sorted and disjoint.
    covered: Vec<(u64, u64)>,
    /// As master: this epoch's run.
    run: Option<OwnRun<E::Key>>,
    /// As master (key mode): the predecessor's origin, when this member continues
    /// its run.
    origin: Option<E::Key>,
    /// Epochs this member led.
    own_epochs: BTreeSet<u64>,
    /// Key mode, as standby: the run applied last (epoch, count); a run whose
    /// last key is not in the queue yet waits in `pending`.
    applied: Option<(u64, u64)>,
    pending: Option<Published<E::Key>>,
}

impl<E: Item> Default for QueueCore<E> {
    fn default() -> Self {
        QueueCore {
            tasks: VecDeque::new(),
            in_flight: Vec::new(),
            sequenced: None,
            feed_start: None,
            highest_fed: None,
            covered: Vec::new(),
            run: None,
            origin: None,
            own_epochs: BTreeSet::new(),
            applied: None,
            pending: None,
        }
    }
}

impl<E: Item> QueueCore<E> {
    /// The tasks waiting, in order (not those taken by the worker).
    pub fn tasks(&self) -> impl ExactSizeIterator<Item = &E> {
        self.tasks.iter()
    }

    /// How many tasks are waiting or taken.
    pub fn len(&self) -> usize {
        self.tasks.len() + self.in_flight.len()
    }

    /// Whether no task is waiting or taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers a fed task.
    pub fn push(&mut self, entry: E) -> Result<Pushed, Refused> {
        let seq = entry.seq();
        match self.sequenced {
            Some(sequenced) if sequenced != seq.is_some() => {
                return Err(Refused::Mixed { sequenced })
            }
            _ => self.sequenced = Some(seq.is_some()),
        }
        if let Some(seq) = seq {
            if let Some(last) = self.highest_fed.filter(|&last| seq <= last) {
                return Err(Refused::OutOfOrder { seq, last });
            }
            self.highest_fed = Some(seq);
            self.feed_start.get_or_insert(seq);
            if self.is_covered(seq) {
                return Ok(Pushed::AlreadyRun);
            }
            self.tasks.push_back(entry);
            return Ok(Pushed::Queued);
        }
        let completes = self.pending.as_ref().is_some_and(|p| &p.id == entry.key());
        self.tasks.push_back(entry);
        if completes {
            if let Some(p) = self.pending.take() {
                if let Some(run) = &p.run {
                    return Ok(Pushed::Completed(self.apply_run(run, &p.id)));
                }
            }
        }
        Ok(Pushed::Queued)
    }

    /// Moves the next task to the worker.
    pub fn take(&mut self) -> Option<E> {
        let entry = self.tasks.pop_front()?;
        self.in_flight.push(entry.seq());
        Some(entry)
    }

    fn untake(&mut self, entry: &E) {
        if let Some(i) = self.in_flight.iter().position(|s| *s == entry.seq()) {
            self.in_flight.swap_remove(i);
        }
    }

    /// Puts an unfinished task back at the head; gives it back instead when a
    /// master published meanwhile that it ran it (sequence mode).
    pub fn restore(&mut self, entry: E) -> Option<E> {
        self.untake(&entry);
        if entry.seq().is_some_and(|s| self.is_covered(s)) {
            return Some(entry);
        }
        self.tasks.push_front(entry);
        None
    }

    /// The worker finished a task of `epoch` (done or dead-lettered): it joins the
    /// epoch's run.
    pub fn finish(&mut self, epoch: u64, entry: &E) {
        self.untake(entry);
        match &mut self.run {
            Some(run) if run.epoch == epoch => {
                run.count += 1;
                run.last = entry.key().clone();
            }
            _ => {
                // An orphan first: the run did not resume where the predecessor
                // stopped, its origin is its own first task.
                let origin = self.origin.take().filter(|_| !entry.orphan());
                self.run = Some(OwnRun {
                    epoch,
                    first: origin.unwrap_or_else(|| entry.key().clone()),
                    count: 1,
                    last: entry.key().clone(),
                });
            }
        }
    }

    /// What this member publishes as master.
    pub fn outgoing(&self) -> Option<Published<E::Key>> {
        let run = self.run.as_ref()?;
        Some(Published {
            id: run.last.clone(),
            run: Some(Run {
                epoch: run.epoch,
                first: run.first.clone(),
                count: run.count,
                covers: self.own_cover(),
            }),
        })
    }

    /// Applies a master's publication; returns how many tasks it dropped.
    pub fn incoming(&mut self, published: &Published<E::Key>) -> u64 {
        let Some(run) = &published.run else { return 0 };
        match (self.sequenced, run.covers) {
            (Some(true) | None, Some((from, upto))) => self.cover(from, upto),
            (Some(true), None) => 0, // a run we cannot place by sequence
            (Some(false) | None, None) | (Some(false), Some(_)) => {
                self.apply_run(run, &published.id)
            }
        }
    }

    /// This member takes over in `epoch` from the master that published
    /// `inherited`; returns whether it knew where that master stopped.
    pub fn became_master(&mut self, epoch: u64, inherited: Option<&Published<E::Key>>) -> bool {
        if let Some(p) = inherited {
            self.incoming(p);
        }
        let known = self.knows(inherited);
        // Continue the predecessor's origin when we know where it stopped.
        self.origin = inherited
            .and_then(|p| p.run.as_ref())
            .filter(|_| known)
            .map(|run| run.first.clone());
        self.pending = None;
        self.own_epochs.insert(epoch);
        known
    }

    /// Whether this member knows where the master that published `published`
    /// stopped (or needs not).
    pub fn knows(&self, published: Option<&Published<E::Key>>) -> bool {
        let Some(run) = published.and_then(|p| p.run.as_ref()) else {
            return true;
        };
        if self.own_epochs.contains(&run.epoch) {
            return true;
        }
        match (self.sequenced, run.covers) {
            // Our feed reaches back to the published interval's end: we hold every
            // task after it that anyone holds.
            (Some(true) | None, Some((_, upto))) => {
                self.feed_start.is_some_and(|s| s <= upto.saturating_add(1))
            }
            (Some(true), None) => false,
            (Some(false) | None, _) => self
                .applied
                .is_some_and(|(e, c)| e == run.epoch && c >= run.count),
        }
    }

    // ---- sequence mode ----

    fn is_covered(&self, seq: u64) -> bool {
        self.covered.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    /// Records that `[from, upto]` was run and drops those tasks.
    fn cover(&mut self, from: u64, upto: u64) -> u64 {
        if from > upto {
            return 0;
        }
        let (mut a, mut b) = (from, upto);
        let mut kept = Vec::with_capacity(self.covered.len() + 1);
        for &(x, y) in &self.covered {
            // Merge intervals that overlap or touch.
            if y.saturating_add(1) >= a && x <= b.saturating_add(1) {
                a = a.min(x);
                b = b.max(y);
            } else {
                kept.push((x, y));
            }
        }
        kept.push((a, b));
        kept.sort_unstable();
        if kept.len() > MAX_INTERVALS {
            kept.drain(..kept.len() - MAX_INTERVALS);
        }
        self.covered = kept;
        let before = self.tasks.len();
        self.tasks
            .retain(|e| !e.seq().is_some_and(|s| from <= s && s <= upto));
        (before - self.tasks.len()) as u64
    }

    /// The interval this member can vouch for: its feed from its first task up to
    /// the task before the first one it still holds, joined with the intervals it
    /// knows were run where they touch. No task it holds is ever inside it.
    fn own_cover(&self) -> Option<(u64, u64)> {
        if self.sequenced != Some(true) {
            return None;
        }
        let start = self.feed_start?;
        let head = self
            .tasks
            .iter()
            .filter_map(Item::seq)
            .chain(self.in_flight.iter().flatten().copied())
            .min();
        let mut cover = match head {
            // Nothing of our own feed finished yet: vouch for what we know was
            // run right before our head, if anything.
            Some(h) if h <= start => {
                return self
                    .covered
                    .iter()
                    .copied()
                    .find(|&(_, y)| y.saturating_add(1) == h)
            }
            Some(h) => (start, h - 1),
            None => (start, self.highest_fed?),
        };
        // Held tasks are never inside a known interval, so a merge never passes
        // the head.
        for &(x, y) in &self.covered {
            if y.saturating_add(1) >= cover.0 && x <= cover.1.saturating_add(1) {
                cover = (cover.0.min(x), cover.1.max(y));
            }
        }
        Some(cover)
    }

    // ---- key mode ----

    /// Applies a master's run (see the module docs); returns how many tasks it
    /// dropped. A last key not in the queue yet waits in `pending`.
    fn apply_run(&mut self, run: &Run<E::Key>, last: &E::Key) -> u64 {
        if self.own_epochs.contains(&run.epoch) {
            return 0; // our own run: its tasks left our queue as we ran them
        }
        if self
            .applied
            .is_some_and(|(e, c)| e == run.epoch && c >= run.count)
        {
            return 0; // seen already
        }
        let Some(j) = self.tasks.iter().position(|e| e.key() == last) else {
            // Not fed yet (or already gone): apply it when it arrives.
            self.pending = Some(Published {
                id: last.clone(),
                run: Some(run.clone()),
            });
            return 0;
        };
        self.pending = None;
        self.applied = Some((run.epoch, run.count));
        // The run covers its origin through its last key; what stands before the
        // origin is kept as orphans. An origin not in the queue lies before it.
        let first_at = self
            .tasks
            .iter()
            .take(j + 1)
            .position(|e| e.key() == &run.first);
        if let Some(i) = first_at {
            for e in self.tasks.iter_mut().take(i) {
                e.set_orphan();
            }
        }
        let mut dropped = 0;
        let mut kept = VecDeque::with_capacity(self.tasks.len());
        for (i, e) in std::mem::take(&mut self.tasks).into_iter().enumerate() {
            let in_run = match first_at {
                Some(start) => i >= start && i <= j,
                None => i <= j && !e.orphan(),
            };
            if in_run {
                dropped += 1;
            } else {
                kept.push_back(e);
            }
        }
        self.tasks = kept;
        dropped
    }
}

impl<E> PartialEq for QueueCore<E>
where
    E: Item + PartialEq,
    E::Key: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.tasks == other.tasks
            && self.in_flight == other.in_flight
            && self.sequenced == other.sequenced
            && self.feed_start == other.feed_start
            && self.highest_fed == other.highest_fed
            && self.covered == other.covered
            && self.run == other.run
            && self.origin == other.origin
            && self.own_epochs == other.own_epochs
            && self.applied == other.applied
            && self.pending == other.pending
    }
}

impl<E> Eq for QueueCore<E>
where
    E: Item + Eq,
    E::Key: Eq,
{
}

impl<E> std::hash::Hash for QueueCore<E>
where
    E: Item + std::hash::Hash,
    E::Key: std::hash::Hash,
{
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.tasks.hash(state);
        self.in_flight.hash(state);
        self.sequenced.hash(state);
        self.feed_start.hash(state);
        self.highest_fed.hash(state);
        self.covered.hash(state);
        self.run.hash(state);
        self.origin.hash(state);
        self.own_epochs.hash(state);
        self.applied.hash(state);
        self.pending.hash(state);
    }
}
