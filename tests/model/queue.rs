//! A model member's managed queue: the library's own pruning rule
//! (`failover::__private::QueueCore`, the code `failover::managed` runs), on small
//! integers, plus the old pending-key rule as a mutation.
//!
//! Every task carries its *occurrence* (which submission it is) beside its key and,
//! in sequence mode, its feed sequence number; the rule looks at keys and sequence
//! numbers, the properties look at occurrences.

use failover::__private::{Pushed, QueueCore, QueueItem, QueuePublished, QueueRun};

/// A queued task: its occurrence (index into the feed), its key, and its feed
/// sequence number in sequence mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Which submission it is.
    pub occ: u8,
    /// Its key.
    pub key: u8,
    /// Its feed sequence number (sequence mode).
    pub seq: Option<u64>,
    orphan: bool,
}

impl Entry {
    /// Occurrence `occ` with key `key`.
    pub fn new(occ: u8, key: u8, seq: Option<u64>) -> Self {
        Entry {
            occ,
            key,
            seq,
            orphan: false,
        }
    }
}

impl QueueItem for Entry {
    type Key = u8;
    fn key(&self) -> &u8 {
        &self.key
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

/// What a master publishes (the lease's `sync` and `run`).
pub type Pub = QueuePublished<u8>;

/// Which pruning rule a standby follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The library's rule.
    Library,
    /// MUTATION: the old rule. A standby drops everything up to and including the
    /// published key; a key it has not seen yet is remembered and fires when a
    /// task with that key arrives.
    PendingKey,
    /// MUTATION: the library's rule, but a new master forgets the run it
    /// inherited and has not applied yet (it cleared it before), so that a
    /// standby whose feed lags runs its predecessor's tasks again.
    ForgetInherited,
    /// MUTATION: the library's rule, but a task refused by a full queue leaves
    /// no trace (as before), so that the member's run spans the gap.
    UnrecordedRefusals,
}

/// One member's queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Queue {
    core: QueueCore<Entry>,
    /// The old rule's queue, remembered key and own last finished task.
    old: Vec<Entry>,
    pending: Option<u8>,
    old_run: Option<(u64, u8, u8)>,
}

impl Queue {
    fn entries(&self) -> Vec<Entry> {
        self.core.tasks().chain(&self.old).copied().collect()
    }

    /// Whether an occurrence is in the queue.
    pub fn holds(&self, occ: u8) -> bool {
        self.entries().iter().any(|e| e.occ == occ)
    }

    /// Whether a key is in the queue.
    pub fn has_key(&self, key: u8) -> bool {
        self.entries().iter().any(|e| e.key == key)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.core.tasks().len() == 0 && self.old.is_empty()
    }

    /// How many tasks wait or run (what a capacity bounds).
    pub fn len(&self) -> usize {
        self.core.len() + self.old.len()
    }

    /// `Queue::try_push` refusing a task (`QueueFull::Reject`).
    pub fn refused(&mut self, rule: Rule, entry: Entry) {
        if matches!(rule, Rule::Library | Rule::ForgetInherited) {
            self.core.refused(&entry.key, entry.seq);
        }
    }

    /// `SyncPort::needs_lease`.
    pub fn needs_lease(&self, rule: Rule) -> bool {
        rule != Rule::PendingKey && self.core.needs_lease()
    }

    /// The waiting tasks, for traces.
    pub fn describe(&self) -> Vec<String> {
        self.entries()
            .iter()
            .map(|e| format!("{}#{}", e.key, e.occ))
            .collect()
    }

    /// `Queue::submit` (unbounded).
    pub fn push(&mut self, rule: Rule, entry: Entry) {
        if rule == Rule::PendingKey {
            if self.pending == Some(entry.key) {
                // The remembered key arrived: everything up to it is "done".
                self.old.clear();
                self.pending = None;
                return;
            }
            self.old.push(entry);
            return;
        }
        match self.core.push(entry) {
            Ok(Pushed::Queued | Pushed::Completed(_) | Pushed::AlreadyRun) => {}
            Err(refused) => unreachable!("the model feeds in order: {refused:?}"),
        }
    }

    /// `Queue::take`.
    pub fn take(&mut self) -> Option<Entry> {
        if !self.old.is_empty() {
            return Some(self.old.remove(0));
        }
        self.core.take()
    }

    /// `Queue::restore`.
    pub fn restore(&mut self, rule: Rule, entry: Entry) {
        if rule == Rule::PendingKey {
            self.old.insert(0, entry);
            return;
        }
        let _ = self.core.restore(entry);
    }

    /// `Queue::finish` (done).
    pub fn finish(&mut self, rule: Rule, epoch: u64, entry: Entry) {
        if rule == Rule::PendingKey {
            let first = match self.old_run {
                Some((e, first, _)) if e == epoch => first,
                _ => entry.key,
            };
            self.old_run = Some((epoch, first, entry.key));
            return;
        }
        self.core.finish(epoch, &entry);
    }

    /// `SyncPort::outgoing`.
    pub fn outgoing(&self, rule: Rule) -> Option<Pub> {
        if rule == Rule::PendingKey {
            let (epoch, first, last) = self.old_run?;
            return Some(Pub {
                id: last,
                run: Some(QueueRun {
                    epoch,
                    first,
                    count: 1,
                    covers: None,
                }),
            });
        }
        self.core.outgoing()
    }

    /// `SyncPort::incoming`.
    pub fn incoming(&mut self, rule: Rule, published: &Pub) {
        if rule == Rule::PendingKey {
            match self.old.iter().position(|e| e.key == published.id) {
                Some(j) => {
                    self.old.drain(..=j);
                    self.pending = None;
                }
                None => self.pending = Some(published.id),
            }
            return;
        }
        self.core.incoming(published);
    }

    /// `SyncPort::became_master`.
    pub fn became_master(&mut self, rule: Rule, epoch: u64, inherited: Option<&Pub>) {
        if rule == Rule::PendingKey {
            if let Some(p) = inherited {
                self.incoming(rule, p);
            }
            self.pending = None;
            return;
        }
        self.core.became_master(epoch, inherited);
        if rule == Rule::ForgetInherited {
            self.core.forget_pending();
        }
    }

    /// `SyncPort::should_defer`.
    pub fn should_defer(&self, rule: Rule, published: Option<&Pub>) -> bool {
        rule != Rule::PendingKey && !self.core.knows(published)
    }
}
