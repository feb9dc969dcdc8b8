//! The managed queue's pruning rule, on small integers.
//!
//! TODO(lead): share with failover::managed::queue. The library keeps this rule
//! inside `Queue<W: Work>` (crate-private, behind a mutex, on `Bson` keys), so the
//! model carries a line-for-line copy of the committed version (`git show
//! HEAD:failover/src/managed/queue.rs`, the one without `since`/chains): `try_push`,
//! `take`, `restore`, `finish`, `settle`, `unsettle`, `apply`, `knows`,
//! `outgoing`, `incoming`, `became_master`, `should_defer`. A pure, generic core
//! (`QueueCore<K: Eq + Clone, T>` with exactly these methods) that `Queue` wraps
//! would let the model use the real rule.
//!
//! Every task carries its *occurrence* (which submission it is) beside its key;
//! the rule only ever looks at keys, the properties look at occurrences.

/// A queued task: its occurrence (index into the feed) and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Which submission it is.
    pub occ: u8,
    /// Its key.
    pub key: u8,
}

/// A published run, as in the lease document (`run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RunPub {
    /// The epoch of the run.
    pub epoch: u64,
    /// Its first task's key.
    pub first: u8,
    /// How many tasks.
    pub count: u8,
}

/// What a master publishes: the last key (`sync`) and its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pub {
    /// The last key (`sync`).
    pub id: u8,
    /// The run.
    pub run: Option<RunPub>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OwnRun {
    epoch: u64,
    first: u8,
    count: u8,
    last: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Follow {
    epoch: u64,
    anchor: Option<usize>,
    matched: u8,
    count: u8,
    last: u8,
    broken: bool,
}

/// Which pruning rule a standby follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The rule as implemented: runs placed by anchor, count and last key.
    Runs,
    /// MUTATION: the old rule. A standby drops everything up to and including the
    /// published key; a key it has not seen yet is remembered and fires when a
    /// task with that key arrives.
    PendingKey,
}

/// One member's queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Queue {
    /// Waiting, in order.
    pub tasks: Vec<Entry>,
    /// Set aside while a run is placed.
    pub aside: Vec<Entry>,
    run: Option<OwnRun>,
    own_epochs: Vec<u64>,
    own_tail: Vec<u8>,
    follow: Option<Follow>,
    /// The old rule's remembered key.
    pending: Option<u8>,
}

impl Queue {
    /// Whether an occurrence is in the queue (waiting or set aside).
    pub fn holds(&self, occ: u8) -> bool {
        self.tasks.iter().chain(&self.aside).any(|e| e.occ == occ)
    }

    /// Whether a key is in the queue (waiting or set aside).
    pub fn has_key(&self, key: u8) -> bool {
        self.tasks.iter().chain(&self.aside).any(|e| e.key == key)
    }

    /// `Queue::try_push` (unbounded).
    pub fn push(&mut self, rule: Rule, entry: Entry) {
        if rule == Rule::PendingKey {
            if self.pending == Some(entry.key) {
                // The remembered key arrived: everything up to it is "done".
                self.tasks.clear();
                self.pending = None;
                return;
            }
            self.tasks.push(entry);
            return;
        }
        let owed = self
            .follow
            .as_ref()
            .is_some_and(|f| !f.broken && f.anchor.is_some() && f.matched < f.count);
        if owed {
            let f = self.follow.as_mut().expect("checked above");
            f.matched += 1;
            let complete = f.matched == f.count;
            let matches = entry.key == f.last;
            self.aside.push(entry);
            if complete {
                self.settle(matches);
            }
            return;
        }
        self.tasks.push(entry);
    }

    /// `Queue::take`.
    pub fn take(&mut self) -> Option<Entry> {
        if self.tasks.is_empty() {
            return None;
        }
        let entry = self.tasks.remove(0);
        if let Some(a) = self.follow.as_mut().and_then(|f| f.anchor.as_mut()) {
            *a = a.saturating_sub(1);
        }
        Some(entry)
    }

    /// `Queue::restore`.
    pub fn restore(&mut self, entry: Entry) {
        self.tasks.insert(0, entry);
        if let Some(a) = self.follow.as_mut().and_then(|f| f.anchor.as_mut()) {
            *a += 1;
        }
    }

    /// `Queue::finish` (done).
    pub fn finish(&mut self, epoch: u64, entry: Entry) {
        match &mut self.run {
            Some(run) if run.epoch == epoch => {
                run.count += 1;
                run.last = entry.key;
            }
            _ => {
                self.run = Some(OwnRun {
                    epoch,
                    first: entry.key,
                    count: 1,
                    last: entry.key,
                })
            }
        }
        self.own_tail.push(entry.key);
    }

    fn settle(&mut self, matches: bool) {
        let Some(f) = self.follow.as_mut() else {
            return;
        };
        let aside = std::mem::take(&mut self.aside);
        if !matches {
            f.broken = true;
            let at = f.anchor.unwrap_or(self.tasks.len()).min(self.tasks.len());
            for (i, e) in aside.into_iter().enumerate() {
                self.tasks.insert(at + i, e);
            }
        }
    }

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

    fn apply(&mut self, run: RunPub, last: u8) {
        if self.own_epochs.contains(&run.epoch) {
            return;
        }
        if self.follow.as_ref().is_none_or(|f| f.epoch != run.epoch) {
            self.unsettle();
            self.follow = Some(Follow {
                epoch: run.epoch,
                anchor: None,
                matched: 0,
                count: 0,
                last: 0,
                broken: false,
            });
        }
        let own_tail = &self.own_tail;
        let tasks = &mut self.tasks;
        let f = self.follow.as_mut().expect("set above");
        if f.broken || run.count <= f.count {
            return;
        }
        f.count = run.count;
        f.last = last;
        if f.anchor.is_none() {
            if let Some(i) = tasks.iter().position(|e| e.key == run.first) {
                f.anchor = Some(i);
            } else if let Some(k) = own_tail.iter().position(|k| *k == run.first) {
                f.anchor = Some(0);
                f.matched = (own_tail.len() - k) as u8;
            } else {
                return;
            }
        }
        let Some(anchor) = f.anchor else { return };
        let need = f.count.saturating_sub(f.matched) as usize;
        let have = tasks.len().saturating_sub(anchor);
        let take = need.min(have);
        if take == 0 {
            return;
        }
        let moved: Vec<Entry> = tasks.drain(anchor..anchor + take).collect();
        f.matched += take as u8;
        let complete = f.matched == f.count;
        let matches = moved.last().is_some_and(|e| e.key == last);
        self.aside.extend(moved);
        if complete {
            self.settle(matches);
        }
    }

    fn knows(&self, published: Option<&Pub>) -> bool {
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

    /// `SyncPort::outgoing`.
    pub fn outgoing(&self) -> Option<Pub> {
        let run = self.run.as_ref()?;
        Some(Pub {
            id: run.last,
            run: Some(RunPub {
                epoch: run.epoch,
                first: run.first,
                count: run.count,
            }),
        })
    }

    /// `SyncPort::incoming`.
    pub fn incoming(&mut self, rule: Rule, published: &Pub) {
        if rule == Rule::PendingKey {
            match self.tasks.iter().position(|e| e.key == published.id) {
                Some(i) => {
                    self.tasks.drain(..=i);
                    self.pending = None;
                }
                None => self.pending = Some(published.id),
            }
            return;
        }
        if let Some(run) = published.run {
            self.apply(run, published.id);
        }
    }

    /// `SyncPort::became_master`.
    pub fn became_master(&mut self, rule: Rule, epoch: u64, inherited: Option<&Pub>) {
        if rule == Rule::PendingKey {
            if let Some(p) = inherited {
                self.incoming(rule, p);
            }
            self.pending = None;
            self.own_epochs.push(epoch);
            return;
        }
        if let Some(p) = inherited {
            if let Some(run) = p.run {
                self.apply(run, p.id);
            }
        }
        self.unsettle();
        self.follow = None;
        self.own_epochs.push(epoch);
        self.own_tail.clear();
    }

    /// `SyncPort::should_defer`.
    pub fn should_defer(&self, rule: Rule, published: Option<&Pub>) -> bool {
        rule == Rule::Runs && !self.knows(published)
    }
}
