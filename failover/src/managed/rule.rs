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
//!   when it leads. A last key not fed yet: when the origin is in the queue (and
//!   no orphan, so nothing after it left the queue), the run is placed at once:
//!   everything from the origin on is dropped now, and what arrives is dropped up
//!   to and including the last key (a standby whose feed lags, and a new master
//!   that inherited the run from a graceful hand-over, repeat nothing); else the
//!   run waits, and is applied when its last key arrives (also on a new master:
//!   it is never forgotten). Here the key is the task's identity: keys must not
//!   repeat while a member may still hold or be fed the earlier task (in
//!   practice: never reuse a key), or a standby can take the new task for the
//!   old one. Give tasks a sequence when keys repeat.
//!
//! # Gaps
//!
//! A task offered and not queued (a full queue refused it, or its submitter
//! stopped waiting for room) leaves a gap in its member's feed, which no run of
//! that member spans: in sequence mode the interval it vouches for is the
//! stretch of its feed without a gap that ends with its last finished task; in
//! key mode its run restarts its origin at the first task after the gap. (The
//! same task offered again closes its gap.) A standby that holds the refused
//! task keeps it.
//!
//! # Tasks nobody else will run
//!
//! A standby that holds tasks standing before the master's run (sequence mode:
//! below the interval the master published last, which no interval covers; key
//! mode: orphans) holds tasks the master will never run: its feed started later,
//! or has a gap there. [`QueueCore::needs_lease`] says so; the election then asks
//! the master to hand the lease over, and the standby runs them.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Debug;

/// Most intervals of covered sequence numbers a member remembers (older ones are
/// forgotten: a task of a forgotten interval that arrives late runs again, it is
/// never dropped).
const MAX_INTERVALS: usize = 64;

/// Most refused tasks remembered while no later task was queued; beyond that the
/// next queued task is taken to follow a gap anyway (which is always safe).
const MAX_REFUSED: usize = 64;

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
    /// Marks it an orphan, or no longer one.
    fn set_orphan(&mut self, orphan: bool);
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
    /// Not queued: a master already published that it ran it (sequence mode, or
    /// key mode while the feed catches up with a run placed by its origin).
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
    /// Sequence mode: the gaps in this member's feed, as (the last number fed
    /// before it, the first one fed after it): a task between them was offered
    /// and refused (a full queue). This member never vouches across one.
    breaks: Vec<(u64, u64)>,
    /// Sequence mode: numbers of refused tasks above the highest one fed (a
    /// later task queued above one of them opens a gap; the task itself,
    /// offered again, closes it).
    refused_seqs: BTreeSet<u64>,
    /// Key mode: keys of tasks refused since the last task queued.
    refused_keys: Vec<E::Key>,
    /// Key mode: queued tasks that follow a gap (a refused task before them):
    /// a run never spans the gap, so it restarts its origin there.
    gap_keys: Vec<E::Key>,
    /// Sequence mode, as standby: the start of the interval the master published
    /// last. A task held below it, which no interval covers, is one the master
    /// will never run: this member must lead to run it.
    latest_from: Option<u64>,
    /// As master: this epoch's run.
    run: Option<OwnRun<E::Key>>,
    /// As master (key mode): the predecessor's origin, when this member continues
    /// its run.
    origin: Option<E::Key>,
    /// Epochs this member led.
    own_epochs: BTreeSet<u64>,
    /// Key mode: the run applied last (epoch, count); a run whose last key is not
    /// in the queue yet and cannot be placed waits in `pending`.
    applied: Option<(u64, u64)>,
    pending: Option<Published<E::Key>>,
    /// Key mode: a run was placed by its origin before its last key was fed:
    /// tasks that arrive are dropped up to and including this key.
    drop_until: Option<E::Key>,
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
            breaks: Vec::new(),
            refused_seqs: BTreeSet::new(),
            refused_keys: Vec::new(),
            gap_keys: Vec::new(),
            latest_from: None,
            run: None,
            origin: None,
            own_epochs: BTreeSet::new(),
            applied: None,
            pending: None,
            drop_until: None,
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
            if !self.refused_seqs.is_empty() {
                // A refused task below this one that was not offered again: a gap.
                let gap = self.refused_seqs.range(..seq).next().is_some();
                self.refused_seqs = self.refused_seqs.split_off(&seq);
                self.refused_seqs.remove(&seq);
                if let Some(last) = self.highest_fed.filter(|_| gap) {
                    self.breaks.push((last, seq));
                }
            }
            self.highest_fed = Some(seq);
            self.feed_start.get_or_insert(seq);
            if self.is_covered(seq) {
                return Ok(Pushed::AlreadyRun);
            }
            self.tasks.push_back(entry);
            return Ok(Pushed::Queued);
        }
        if !self.refused_keys.is_empty() {
            if let Some(i) = self.refused_keys.iter().position(|k| k == entry.key()) {
                // The refused task, offered again: it fills its own gap.
                self.refused_keys.swap_remove(i);
            } else {
                self.refused_keys.clear();
                self.gap_keys.push(entry.key().clone());
            }
        }
        if let Some(until) = &self.drop_until {
            // A run placed by its origin covers everything up to its last key.
            if until == entry.key() {
                self.drop_until = None;
            }
            self.forget_gap(entry.key());
            return Ok(Pushed::AlreadyRun);
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

    /// A fed task was not queued (a full queue refused it, or the submitter gave
    /// up waiting for room): this member's feed has a gap, which its runs must not
    /// span. Returns how many tasks a run waiting for exactly this task dropped.
    pub fn refused(&mut self, key: &E::Key, seq: Option<u64>) -> u64 {
        if let Some(seq) = seq {
            let above = self.highest_fed.is_none_or(|last| seq > last);
            if above && !self.is_covered(seq) {
                if self.refused_seqs.len() >= MAX_REFUSED {
                    // Too many to track: the lowest stands for them all (the
                    // next task queued above it opens a gap).
                    self.refused_seqs.pop_last();
                }
                self.refused_seqs.insert(seq);
            }
            return 0;
        }
        if self.refused_keys.len() >= MAX_REFUSED {
            self.refused_keys.remove(0);
        }
        self.refused_keys.push(key.clone());
        if self.drop_until.as_ref() == Some(key) {
            // The last key of a placed run will not arrive: nothing more to drop.
            self.drop_until = None;
        }
        let completes = self.pending.as_ref().is_some_and(|p| &p.id == key);
        if completes {
            if let Some(Published { run: Some(run), .. }) = self.pending.take() {
                // The run ends at the refused task, right after our tail.
                return self.apply_through(&run, None);
            }
        }
        0
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
        let key = entry.key().clone();
        // A task after a gap in our feed: the run restarts there, so that it never
        // claims the refused task.
        let after_gap = self.forget_gap(&key);
        match &mut self.run {
            Some(run) if run.epoch == epoch => {
                run.count += 1;
                run.last = key.clone();
                if after_gap {
                    run.first = key;
                }
            }
            _ => {
                // An orphan first: the run did not resume where the predecessor
                // stopped, its origin is its own first task.
                let origin = self.origin.take().filter(|_| !entry.orphan() && !after_gap);
                self.run = Some(OwnRun {
                    epoch,
                    first: origin.unwrap_or_else(|| key.clone()),
                    count: 1,
                    last: key,
                });
            }
        }
        self.prune_breaks();
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
            (Some(true) | None, Some((from, upto))) => {
                if !self.own_epochs.contains(&run.epoch) {
                    self.latest_from = Some(from);
                }
                self.cover(from, upto)
            }
            (Some(true), None) => 0, // a run we cannot place by sequence
            (Some(false) | None, None) | (Some(false), Some(_)) => {
                self.apply_run(run, &published.id)
            }
        }
    }

    /// This member takes over in `epoch` from the master that published
    /// `inherited`; returns whether it knew where that master stopped. A run it
    /// cannot place yet stays pending: the tasks it covers are dropped as the
    /// feed brings its last key.
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
        self.latest_from = None;
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
            // Our feed reaches back to the published interval's end, without a
            // gap after it: we hold every task after it that anyone holds.
            (Some(true) | None, Some((_, upto))) => {
                let next = upto.saturating_add(1);
                self.feed_start.is_some_and(|s| s <= next)
                    && self.breaks.iter().all(|&(_, after)| after <= next)
            }
            (Some(true), None) => false,
            (Some(false) | None, _) => self
                .applied
                .is_some_and(|(e, c)| e == run.epoch && c >= run.count),
        }
    }

    /// Whether this member, as a standby, holds tasks that no published run
    /// covers and that the master will never run (they stand before its run:
    /// it was fed from a later point, or its feed has a gap there). Nobody runs
    /// them unless this member leads.
    pub fn needs_lease(&self) -> bool {
        match self.sequenced {
            // Tasks are in feed order: the head is the lowest. Held tasks are never
            // inside a known interval.
            Some(true) => self
                .tasks
                .front()
                .and_then(Item::seq)
                .zip(self.latest_from)
                .is_some_and(|(head, from)| head < from),
            // Orphans stand at the head: before the origin of the run that
            // marked them.
            Some(false) => self.tasks.front().is_some_and(Item::orphan),
            None => false,
        }
    }

    /// MUTATION, for the model check only: forgets the runs not applied yet (the
    /// rule before a new master kept its inherited run).
    #[doc(hidden)]
    pub fn forget_pending(&mut self) {
        self.pending = None;
        self.drop_until = None;
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
        self.refused_seqs.retain(|&s| !(from <= s && s <= upto));
        self.prune_breaks();
        (before - self.tasks.len()) as u64
    }

    /// The first sequence number this member still holds (waiting or taken).
    /// Waiting tasks are in feed order (a restored task was the head), so the
    /// first one is the lowest.
    fn head(&self) -> Option<u64> {
        self.tasks
            .front()
            .and_then(Item::seq)
            .into_iter()
            .chain(self.in_flight.iter().flatten().copied())
            .min()
    }

    /// The interval this member can vouch for: the stretch of its feed without a
    /// gap that ends with the last task it finished (the task before the first
    /// one it still holds), joined with the intervals it knows were run where
    /// they touch. No task it holds, and no task it was never fed, is ever inside
    /// it.
    fn own_cover(&self) -> Option<(u64, u64)> {
        if self.sequenced != Some(true) {
            return None;
        }
        let start = self.feed_start?;
        let head = self.head();
        let end = match head {
            Some(h) => h.checked_sub(1),
            None => self.highest_fed,
        };
        let Some(end) = end.filter(|&e| e >= start) else {
            // Nothing of our own feed finished yet: vouch for what we know was
            // run right before our head, if anything.
            let h = head?;
            return self
                .covered
                .iter()
                .copied()
                .find(|&(_, y)| y.saturating_add(1) == h);
        };
        // The stretch of the feed that `end` lies in, or the one that ends right
        // before the gap `end` lies in.
        let mut cover = (start, end);
        for &(before, after) in &self.breaks {
            if after <= end {
                cover.0 = after;
            } else {
                if before < end {
                    cover.1 = before;
                }
                break;
            }
        }
        // Held tasks are never inside a known interval, so a merge never passes
        // the head.
        for &(x, y) in &self.covered {
            if y.saturating_add(1) >= cover.0 && x <= cover.1.saturating_add(1) {
                cover = (cover.0.min(x), cover.1.max(y));
            }
        }
        Some(cover)
    }

    /// Forgets the gaps before the stretch of the feed that the head lies in:
    /// no interval this member vouches for reaches back past them any more.
    fn prune_breaks(&mut self) {
        let next = self.highest_fed.map(|h| h.saturating_add(1));
        let Some(head) = self.head().or(next) else {
            return;
        };
        if let Some(last) = self.breaks.iter().rposition(|&(_, after)| after < head) {
            self.breaks.drain(..last);
        }
    }

    // ---- key mode ----

    /// Forgets that `key` follows a gap; returns whether it did.
    fn forget_gap(&mut self, key: &E::Key) -> bool {
        match self.gap_keys.iter().position(|k| k == key) {
            Some(i) => {
                self.gap_keys.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Applies a master's run (see the module docs); returns how many tasks it
    /// dropped. A run whose last key is not in the queue yet is placed by its
    /// origin if it can be (then the tasks it covers are dropped now, and those
    /// that arrive up to its last key on arrival), and else waits in `pending`.
    fn apply_run(&mut self, run: &Run<E::Key>, last: &E::Key) -> u64 {
        if self.own_epochs.contains(&run.epoch) {
            return 0; // our own run: its tasks left our queue as we ran them
        }
        if self
            .applied
            .is_some_and(|applied| (run.epoch, run.count) <= applied)
        {
            return 0; // seen already, or older than one we applied
        }
        if let Some(j) = self.tasks.iter().position(|e| e.key() == last) {
            self.pending = None;
            return self.apply_through(run, Some(j));
        }
        // Not fed yet (or already gone). Placed by its origin when that is in our
        // queue and no orphan: then nothing after it left the queue, so the last
        // key is still to come and everything from the origin to the tail comes
        // before it. (Nothing else tells a key not yet fed from one gone.)
        let placed = self
            .tasks
            .iter()
            .any(|e| e.key() == &run.first && !e.orphan());
        if placed && self.drop_until.as_ref() != Some(last) {
            self.pending = None;
            self.drop_until = Some(last.clone());
            return self.apply_through(run, None);
        }
        if !placed {
            // Apply it when its last key arrives.
            self.pending = Some(Published {
                id: last.clone(),
                run: Some(run.clone()),
            });
        }
        0
    }

    /// Drops what `run` covers, through position `end` of the queue (`None`: the
    /// last key stands after the tail).
    fn apply_through(&mut self, run: &Run<E::Key>, end: Option<usize>) -> u64 {
        self.applied = Some((run.epoch, run.count));
        let j = end.unwrap_or(self.tasks.len());
        // The run covers its origin through its last key; what stands before the
        // origin is kept as orphans. An origin not in the queue lies before it.
        let first_at = self
            .tasks
            .iter()
            .take(j.saturating_add(1))
            .position(|e| e.key() == &run.first);
        let mut dropped = 0;
        let mut kept = VecDeque::with_capacity(self.tasks.len());
        for (i, mut e) in std::mem::take(&mut self.tasks).into_iter().enumerate() {
            let in_run = match first_at {
                Some(start) => {
                    if i < start {
                        e.set_orphan(true);
                    } else if i > j {
                        // After the run: its master holds it too, and runs it
                        // next; whatever an older run left it marked.
                        e.set_orphan(false);
                    }
                    i >= start && i <= j
                }
                None => i <= j && !e.orphan(),
            };
            if in_run {
                dropped += 1;
                if let Some(g) = self.gap_keys.iter().position(|k| k == e.key()) {
                    self.gap_keys.swap_remove(g);
                }
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
            && self.breaks == other.breaks
            && self.refused_seqs == other.refused_seqs
            && self.refused_keys == other.refused_keys
            && self.gap_keys == other.gap_keys
            && self.latest_from == other.latest_from
            && self.drop_until == other.drop_until
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
        self.breaks.hash(state);
        self.refused_seqs.hash(state);
        self.refused_keys.hash(state);
        self.gap_keys.hash(state);
        self.latest_from.hash(state);
        self.drop_until.hash(state);
    }
}
