//! The durable queue of `failover/src/managed/durable.rs`: tasks stored in the
//! database before the start (numbers 1 to n), a progress document written with
//! a fence by epoch, and dead letters.
//!
//! * A new master's first write is the take-over of the progress document
//!   (`epoch <= mine`, set mine): it fences out older masters and says where to
//!   resume (and which dead letter a master that crashed promised).
//! * The master starts the next task after a lease check (one step, as the
//!   worker does); the task's work runs then (a *run*). A task may fail: a
//!   flaky task fails on its first run, past `max_attempts` (one here), and
//!   becomes a dead letter.
//! * Progress is recorded after every task (`Progress::EveryTask`) with a write
//!   fenced by epoch that must also not take the number back
//!   (`epoch <= mine` and `seq <= new`); a refused write stops the master's
//!   work for the epoch.
//! * A failed task's record comes *first* and names the dead letter it promises
//!   (`bury`); the letter is inserted after the record was accepted, and a
//!   master that takes over completes a promised letter (the insert of a letter
//!   that exists already counts as done). So a master whose record is refused
//!   never stores a dead letter, and a crash between the two loses nothing.
//!
//! A request of the worker may be lost on the way and land at any later time
//! (a *stuck* request, within the fault budget): the worker sees an error and
//! sends it again.

use super::protocol::{
    Msg, Mutation, Protocol, Reply, Req, State, Up, DEAD_REFUSED, PROGRESS_BACK,
};

/// The durable queue's documents, and what the properties need to know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Db {
    /// The progress document: the last finished number.
    pub seq: u8,
    /// The progress document's epoch (0: not written yet).
    pub epoch: u64,
    /// The dead letter the last record promised.
    pub bury: Option<u8>,
    /// Dead letters stored: (number, epoch of the master that stored it).
    pub letters: Vec<(u8, u64)>,
    /// Records accepted for tasks with dead letters: (number, epoch).
    pub accepted: Vec<(u8, u64)>,
    /// Runs of each task (index `i`: task `i + 1`).
    pub runs: Vec<u8>,
    /// Bit `i`: task `i + 1` finished well in some run.
    pub done: u16,
    /// Terms that ended without a release (a take-over of an expired lease, a
    /// deletion of a held one).
    pub unclean: u8,
}

impl Db {
    /// Whether task `seq` is a stored dead letter.
    pub fn dead(&self, seq: u8) -> bool {
        self.letters.iter().any(|&(s, _)| s == seq)
    }

    /// Runs beyond the first, over all tasks.
    pub fn repeats(&self) -> u8 {
        self.runs.iter().map(|&r| r.saturating_sub(1)).sum()
    }
}

/// A request of the durable worker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DReq {
    /// Take the progress over for this epoch.
    TakeOver { epoch: u64 },
    /// Record `seq` finished (`bury`: as a dead letter).
    Record { epoch: u64, seq: u8, bury: bool },
    /// Store dead letter `seq`.
    Bury { epoch: u64, seq: u8 },
}

/// The database's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DRep {
    /// Where to resume, and the dead letter promised; `None`: a newer master.
    TakeOver(Option<(u8, Option<u8>)>),
    /// Whether the record was accepted.
    Record(bool),
    /// Stored (or there already).
    Bury,
}

/// Where a master's durable worker is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Taking the progress over.
    Begin,
    /// Between tasks.
    Idle,
    /// Running task `seq`; `fails`: its work fails.
    Running { seq: u8, fails: bool },
    /// Recording `seq`.
    Record { seq: u8, bury: bool },
    /// Storing dead letter `seq`; `then_record`: the old order, the record
    /// comes after.
    Bury { seq: u8, then_record: bool },
    /// Stopped working the epoch (a newer master, or the term ended).
    Stopped,
}

/// A master's durable worker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Worker {
    /// The epoch it works.
    pub epoch: u64,
    /// The last task finished (or resumed after).
    pub cursor: u8,
    /// Where it is.
    pub step: Step,
    /// Its request or reply in flight.
    pub msg: Option<Msg>,
}

impl Worker {
    fn request(&self) -> Option<DReq> {
        match self.step {
            Step::Begin => Some(DReq::TakeOver { epoch: self.epoch }),
            Step::Record { seq, bury } => Some(DReq::Record {
                epoch: self.epoch,
                seq,
                bury,
            }),
            Step::Bury { seq, .. } => Some(DReq::Bury {
                epoch: self.epoch,
                seq,
            }),
            _ => None,
        }
    }

    fn send(&mut self, now: u16, step: Step) {
        self.step = step;
        self.msg = self.request().map(|r| Msg::Req(now, Req::Durable(r)));
    }
}

/// Whether member `m`'s durable worker holds the term (runs a task, or records
/// or buries one): the election releases only after.
pub fn busy(s: &State, m: usize) -> bool {
    s.members[m].dw.as_ref().is_some_and(|w| {
        matches!(
            w.step,
            Step::Running { .. } | Step::Record { .. } | Step::Bury { .. }
        )
    })
}

/// A new master begins: the take-over of the progress.
pub fn became_master(s: &mut State, m: usize, epoch: u64) {
    let now = s.now;
    let mem = &mut s.members[m];
    if let Some(Worker {
        msg: Some(Msg::Req(at, req)),
        ..
    }) = mem.dw.take()
    {
        // The last term's request still lands.
        mem.orphans.push((at, req));
    }
    let mut w = Worker {
        epoch,
        cursor: 0,
        step: Step::Begin,
        msg: None,
    };
    w.send(now, Step::Begin);
    mem.dw = Some(w);
}

/// The database applies a request of the durable worker.
pub fn apply(p: &Protocol, s: &mut State, _m: usize, req: DReq) -> DRep {
    let back = p.cfg.mutation == Some(Mutation::ProgressMayGoBack);
    let db = s.dq.as_mut().expect("a durable queue");
    match req {
        DReq::TakeOver { epoch } => {
            if db.epoch <= epoch {
                db.epoch = epoch;
                DRep::TakeOver(Some((db.seq, db.bury)))
            } else {
                DRep::TakeOver(None)
            }
        }
        DReq::Record { epoch, seq, bury } => {
            let accepted = db.epoch <= epoch && (back || db.seq <= seq);
            if accepted {
                if seq < db.seq {
                    s.broken |= PROGRESS_BACK;
                }
                db.seq = seq;
                db.epoch = epoch;
                db.bury = bury.then_some(seq);
                if (bury || db.letters.contains(&(seq, epoch)))
                    && !db.accepted.contains(&(seq, epoch))
                {
                    db.accepted.push((seq, epoch));
                }
            } else if db.letters.contains(&(seq, epoch)) && !db.accepted.contains(&(seq, epoch)) {
                // This master stored the task's dead letter, and its progress
                // write is refused: a newer master runs the task again.
                s.broken |= DEAD_REFUSED;
            }
            DRep::Record(accepted)
        }
        DReq::Bury { epoch, seq } => {
            if !db.dead(seq) {
                db.letters.push((seq, epoch));
            }
            DRep::Bury
        }
    }
}

/// The worker's step that is due now, if any (`true`: a reply to take, a task
/// to finish or to start).
pub fn due(p: &Protocol, s: &State, m: usize) -> bool {
    let mem = &s.members[m];
    let Some(w) = &mem.dw else { return false };
    match (&w.msg, &w.step) {
        (Some(Msg::Rep(at, _)), _) => s.now >= *at,
        (Some(Msg::Req(..)), _) => false,
        (None, Step::Running { .. }) => true,
        (None, Step::Idle) => may_start(p, s, m),
        _ => false,
    }
}

fn may_start(p: &Protocol, s: &State, m: usize) -> bool {
    let mem = &s.members[m];
    let w = mem.dw.as_ref().expect("a worker");
    mem.up == Up::Running
        && !mem.stopping
        && !mem.handing_over
        && w.cursor < p.cfg.durable
        && p.acting(s, m) == Some(w.epoch)
}

/// The worker takes its due step.
pub fn step(p: &Protocol, s: &mut State, m: usize) {
    let now = s.now;
    let bury_first = p.cfg.mutation == Some(Mutation::BuryBeforeRecord);
    let mut w = s.members[m].dw.take().expect("a worker");
    match (w.msg.take(), w.step.clone()) {
        (Some(Msg::Rep(_, Reply::Durable(rep))), step) => match (step, rep) {
            (Step::Begin, DRep::TakeOver(Some((seq, bury)))) => {
                w.cursor = seq;
                match bury {
                    // Completes the dead letter a master promised and did not store.
                    Some(b) => w.send(
                        now,
                        Step::Bury {
                            seq: b,
                            then_record: false,
                        },
                    ),
                    None => w.step = Step::Idle,
                }
            }
            (Step::Begin, DRep::TakeOver(None)) | (Step::Record { .. }, DRep::Record(false)) => {
                w.step = Step::Stopped
            }
            (Step::Record { seq, bury }, DRep::Record(true)) => {
                w.cursor = w.cursor.max(seq);
                if bury && !bury_first {
                    w.send(
                        now,
                        Step::Bury {
                            seq,
                            then_record: false,
                        },
                    );
                } else {
                    w.step = Step::Idle;
                }
            }
            (Step::Bury { seq, then_record }, DRep::Bury) => {
                if then_record {
                    w.send(now, Step::Record { seq, bury: false });
                } else {
                    w.step = Step::Idle;
                }
            }
            (step, rep) => unreachable!("{step:?} answered by {rep:?}"),
        },
        (None, Step::Running { seq, fails }) => {
            let db = s.dq.as_mut().expect("a durable queue");
            if !fails {
                db.done |= 1 << (seq - 1);
            }
            let next = match (fails, bury_first) {
                (true, true) => Step::Bury {
                    seq,
                    then_record: true,
                },
                (fails, _) => Step::Record { seq, bury: fails },
            };
            w.send(now, next);
        }
        (None, Step::Idle) => {
            // The lease check and the start are one step.
            let seq = w.cursor + 1;
            let db = s.dq.as_mut().expect("a durable queue");
            let i = usize::from(seq - 1);
            let fails = p.cfg.flaky & (1 << i) != 0 && db.runs[i] == 0;
            db.runs[i] += 1;
            w.step = Step::Running { seq, fails };
            let entry = (m as u8, w.epoch);
            if let Err(i) = s.acting.binary_search(&entry) {
                s.acting.insert(i, entry);
            }
        }
        (msg, step) => unreachable!("{step:?} with {msg:?}"),
    }
    if w.step == Step::Idle && p.acting(s, m) != Some(w.epoch) {
        w.step = Step::Stopped;
    }
    s.members[m].dw = Some(w);
}

/// The database applies the worker's request now.
pub fn deliver(p: &Protocol, s: &mut State, m: usize) {
    let w = s.members[m].dw.as_mut().expect("a worker");
    let Some(Msg::Req(_, Req::Durable(req))) = w.msg.take() else {
        unreachable!("a request")
    };
    let rep = apply(p, s, m, req);
    let now = s.now;
    let mem = &mut s.members[m];
    if matches!(mem.up, Up::Running | Up::Paused) {
        mem.dw.as_mut().expect("a worker").msg = Some(Msg::Rep(now, Reply::Durable(rep)));
    }
}

/// The worker's request is lost on the way: it lands at any later time; the
/// worker sees an error and sends it again.
pub fn stick(s: &mut State, m: usize) {
    let now = s.now;
    let mem = &mut s.members[m];
    let w = mem.dw.as_mut().expect("a worker");
    let Some(Msg::Req(_, req)) = w.msg.clone() else {
        unreachable!("a request")
    };
    mem.stuck.push(req.clone());
    w.msg = Some(Msg::Req(now, req));
}

/// Whether the worker's request is due at the database.
pub fn request_due(s: &State, m: usize) -> bool {
    matches!(
        s.members[m].dw.as_ref().and_then(|w| w.msg.as_ref()),
        Some(Msg::Req(at, _)) if s.now >= *at
    )
}

/// Nothing is lost: every task the progress passed finished well, is a dead
/// letter, or is the dead letter the progress promises.
pub fn nothing_lost(s: &State) -> bool {
    let Some(db) = &s.dq else { return true };
    (1..=db.seq).all(|q| db.done & (1 << (q - 1)) != 0 || db.dead(q) || db.bury == Some(q))
}

/// A task that finished well is never a dead letter (`requeue` would run it
/// again).
pub fn done_is_not_dead(s: &State) -> bool {
    let Some(db) = &s.dq else { return true };
    db.letters
        .iter()
        .all(|&(q, _)| db.done & (1 << (q - 1)) == 0)
}

/// At most one repeat per term that ended without a release.
pub fn repeats_bounded(s: &State) -> bool {
    s.dq.as_ref().is_none_or(|db| db.repeats() <= db.unclean)
}

/// For traces.
pub fn describe(s: &State, m: usize) -> String {
    match &s.members[m].dw {
        Some(w) => format!(" dq(e{} at {} {:?})", w.epoch % 1000, w.cursor, w.step),
        None => String::new(),
    }
}
