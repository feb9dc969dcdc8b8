//! The model of the protocol: members running the election of
//! `failover/src/election.rs` and the worker of `failover/src/managed/worker.rs`
//! against one lease document on a database of one or two nodes, behind a
//! mongos-like router, in discrete time.
//!
//! # Time and clocks
//!
//! One tick is one millisecond of true time; the rules of `failover::lease::rules`
//! are called with ticks as milliseconds. Every clock (each member's lease clock,
//! each database node's wall clock, the mongos's wall clock) reads
//! `base + offset + t + rate * ((t + phase) / period)`: an offset, and a rate error
//! of one tick per `period` ticks (fast, slow, or none). A member's clock
//! offset never matters (the protocol only takes differences of it), so members
//! get rates only.
//!
//! # What is nondeterministic
//!
//! * the order of the database's applies within a tick (races), and of each
//!   member's own steps against them;
//! * messages' delays: a message leaves and arrives in the same tick unless the
//!   environment delays it, by a tick at a time, from a budget of `delays` ticks;
//! * faults, from a budget: a message (request or reply) lost, so also a write
//!   applied and its reply lost; a member paused for any number of ticks (its
//!   clock runs on: `CLOCK_BOOTTIME`); a member crashed; the primary moving to the
//!   other node (the data moves with it: majority writes); and, outside the
//!   budget, graceful shutdowns.
//!
//! A member takes every step as soon as it is due (a due step is forced before
//! time moves on), unless it is paused: a late timer is a pause. Requests whose
//! member gave up on them (timeout, crash) still reach the database.
//!
//! # Reductions (each keeps every outcome)
//!
//! * Members' own steps (timers, replies, the worker's) touch only their own
//!   state and commute with one another: in a tick, only the lowest-numbered
//!   member with a due step is offered its steps (the database's applies and all
//!   faults stay offered everywhere). So the safety property is stated per tick:
//!   every member that acted at any moment of a tick counts for the whole tick.
//! * A fault is offered only where it can make a difference: a member is paused,
//!   crashed or shut down right before a step it would take (earlier is the same,
//!   as it does nothing in between; resuming is offered at every tick), a message
//!   is delayed or lost as it would arrive, and the primary changes right before
//!   the database applies a request.
//!
//! # What is abstracted
//!
//! A member checks its lease and starts a task in one step, as the worker does
//! (the check and the start are one synchronous stretch); the task then sends one
//! fenced write to one data document (a step that can be paused: a late write of
//! a deposed master) and finishes when the write's answer comes back (refused:
//! the task is retried). The half round trip of a clock sample is rounded down
//! to whole ticks for the sample's instant (the library keeps the half tick),
//! which makes the model's members take over up to half a tick *earlier* than
//! the library's: the model is the stricter one. The library's constant slack
//! (the sample's error of half a round trip *plus one millisecond*, and one more
//! millisecond for the dates' precision) is in milliseconds, hence in ticks: with
//! a lease of ten ticks it is worth two tenths of the lease (in the library, with
//! the default 3 s lease, two thousandths), so clock errors must reach a margin
//! plus those two ticks before the model shows an overlap; the configurations
//! put their clocks there. Submissions follow a fixed schedule per member (a
//! late joiner's starts later and further down the feed); a key is submitted to
//! a member only while no task with that key is in its queue (the documented
//! contract of keys); a member with a capacity refuses a task submitted while
//! its queue is full. The hand-over to a standby that holds tasks no run covers
//! is abstract: its request lands in the lease document at once, the master
//! reads it with its next renewal, starts no task, and releases the lease once
//! its running task ended; the standby takes it at its next check.

use std::fmt::Write as _;

use failover::lease::rules;
use stateright::{Model, Property};

use super::queue::{Entry, Pub, Queue, Rule};

/// Member clocks read from here (so no subtraction goes below zero).
pub const MEMBER_BASE: i64 = 1_000;
/// Node and mongos clocks read from here (a date in milliseconds).
pub const NODE_BASE: i64 = 1_000_000;

/// TODO(lead): share with failover::election (`CLOCK_REFRESH`, 60 s, 20 leases of
/// the default 3 s): how long a standby keeps a clock sample when nothing else
/// asks for a new one. The model scales it to 20 leases.
pub const CLOCK_REFRESH_LEASES: u64 = 20;

/// TODO(lead): share with failover::election (the back-off after a lost
/// take-over race: `min(10 ms << min(races, 6), slave)`).
pub fn lost_race_pause(races: u8, slave: u64) -> u64 {
    (10u64 << races.min(6)).min(slave)
}

/// A clock: offset, rate error (-1 slow, 0, +1 fast: one tick per `period`) and
/// the phase of that error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockCfg {
    /// Ticks ahead of true time (negative: behind).
    pub offset: i64,
    /// -1: loses a tick every period; 1: gains one; 0: exact.
    pub rate: i64,
    /// Shifts the ticks at which the rate error shows.
    pub phase: u64,
}

impl ClockCfg {
    /// A clock without offset or rate error.
    pub const EXACT: ClockCfg = ClockCfg {
        offset: 0,
        rate: 0,
        phase: 0,
    };

    /// A clock `offset` ticks ahead (negative: behind).
    pub const fn ahead(offset: i64) -> ClockCfg {
        ClockCfg {
            offset,
            rate: 0,
            phase: 0,
        }
    }

    /// A clock that gains (`rate` = 1) or loses (-1) a tick every period.
    pub const fn drifting(rate: i64, phase: u64) -> ClockCfg {
        ClockCfg {
            offset: 0,
            rate,
            phase,
        }
    }

    fn read(&self, t: u16, period: u64) -> i64 {
        self.offset + i64::from(t) + self.rate * ((u64::from(t) + self.phase) / period) as i64
    }
}

/// One member: its clock, when it starts, and when it is fed each task
/// (`None`: never, it joined after that task was submitted).
#[derive(Clone, Debug)]
pub struct MemberCfg {
    /// The member's lease clock.
    pub clock: ClockCfg,
    /// The tick at which the member starts.
    pub join: u16,
    /// When each task of the feed is submitted to it.
    pub feed: Vec<Option<u16>>,
    /// `Options::queue_capacity` with `QueueFull::Reject`: a task submitted
    /// while this many wait or run is refused (a gap in the member's feed).
    pub capacity: Option<u8>,
}

/// The faults a configuration may inject, within its budget.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// How many faults a run may have.
    pub budget: u8,
    /// A message (request or reply) may be lost.
    pub lose: bool,
    /// A member may be paused (for any number of ticks).
    pub pause: bool,
    /// A member may crash.
    pub crash: bool,
    /// The primary may move to the other node.
    pub primary_change: bool,
    /// Graceful shutdowns allowed (outside the budget).
    pub shutdowns: u8,
}

/// A rule known to be wrong, put in place of the implemented one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Standbys read the time from the mongos they talk to (the old `hello`
    /// `localTime`) instead of stamping the node that stamps the lease.
    MongosClock,
    /// The master acts until `sent + lease` (no step-down margin).
    NoMargin,
    /// The worker checks the lease once per this many tasks.
    BatchedChecks(u8),
    /// Shutdown writes the release at once, while the running task goes on.
    EarlyRelease,
    /// The old pending-key prune rule of the queue.
    PendingKeyPrune,
    /// A new master forgets the run it inherited and could not apply yet.
    ForgetInheritedRun,
    /// A task refused by a full queue leaves no trace in the rule.
    UnrecordedRefusals,
    /// A standby holding tasks that no run covers never asks for the lease.
    NoOrphanHandOver,
}

/// A configuration of the model.
#[derive(Clone, Debug)]
pub struct Config {
    /// Printed with the results.
    pub name: &'static str,
    /// The members.
    pub members: Vec<MemberCfg>,
    /// The database's nodes; node 0 is the first primary.
    pub nodes: Vec<ClockCfg>,
    /// The mongos's clock (read only by the `MongosClock` mutation).
    pub mongos: ClockCfg,
    /// The keys of the tasks fed, in order (occurrence `i` has key `keys[i]`).
    pub keys: Vec<u8>,
    /// Whether tasks carry feed sequence numbers (occurrence `i` has `i + 1`),
    /// as with `Work::sequence`; without them keys must never repeat.
    pub sequenced: bool,
    /// The lease (`Options::lease`), in ticks.
    pub lease: u64,
    /// `Intervals::master`.
    pub master: u64,
    /// `Intervals::slave`.
    pub slave: u64,
    /// `Intervals::ticking`.
    pub ticking: u64,
    /// `Intervals::error`.
    pub error: u64,
    /// Rate errors are one tick per this many ticks.
    pub drift_period: u64,
    /// Messages leave and arrive in the same tick, unless delayed: this many
    /// ticks of delay in all, each on any message, request or reply.
    pub delays: u8,
    /// No tick after this one.
    pub horizon: u16,
    /// The faults allowed.
    pub faults: Faults,
    /// The wrong rule in place of the implemented one, if any.
    pub mutation: Option<Mutation>,
}

impl Config {
    fn rule(&self) -> Rule {
        match self.mutation {
            Some(Mutation::PendingKeyPrune) => Rule::PendingKey,
            Some(Mutation::ForgetInheritedRun) => Rule::ForgetInherited,
            Some(Mutation::UnrecordedRefusals) => Rule::UnrecordedRefusals,
            _ => Rule::Library,
        }
    }

    fn managed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// A master's deadline after sending at `sent` (its own clock).
    fn deadline(&self, sent: u64) -> u64 {
        if self.mutation == Some(Mutation::NoMargin) {
            sent + self.lease
        } else {
            rules::master_deadline(sent, self.lease)
        }
    }

    /// After the master crashes (or the last fault, whichever is later), some member
    /// is master within this many ticks of fair scheduling: the lease runs out (its
    /// last renewal may land a delay after the crash, the standby adds its
    /// sample's error and a tick, clocks drift by up to a margin); a member that
    /// cannot place the last run gives the others a lease of head start; then a
    /// check and a take-over (three round trips), or, after a lost race, its
    /// back-off and another. When other faults came before the crash
    /// (`earlier_faults`), a standby may still be waiting out a timeout
    /// (`slave` or `ticking`) and the `error` pause before its next check.
    pub fn takeover_bound(&self, earlier_faults: bool) -> u64 {
        let rtt = u64::from(self.delays) + 1;
        let head_start = if self.managed() { self.lease } else { 0 };
        let recovery = if earlier_faults {
            self.slave.max(self.ticking) + self.error
        } else {
            0
        };
        self.lease
            + 2 * u64::from(self.delays)
            + 2 * rules::margin_ms(self.lease)
            + 2
            + head_start
            + recovery
            + 2 * 3 * rtt
            + lost_race_pause(1, self.slave)
    }

    /// A released lease is taken within this many ticks of fair scheduling: every
    /// standby checks at least every `slave` ticks (or `error` after a failure that
    /// began before), and a check that finds the lease released takes it at once:
    /// two round trips (read, acquire), plus the one in flight.
    pub fn release_bound(&self) -> u64 {
        let rtt = u64::from(self.delays) + 1;
        self.slave.max(self.ticking) + self.error + 3 * rtt + 1
    }

    /// The last tick at which a task is fed to a member (or a member joins).
    pub fn last_feed(&self) -> u16 {
        self.members
            .iter()
            .flat_map(|m| m.feed.iter().flatten().copied().chain([m.join]))
            .max()
            .unwrap_or(0)
    }

    /// Every task a live member holds is done within this many ticks of fair
    /// scheduling after the last feed, fault and release: a master is in place
    /// (after a fault, within the take-over bound) and runs what it holds (a
    /// start, a write's round trip and an end per task); it publishes its run
    /// at its next renewal; a standby left holding tasks that no run covers
    /// learns it at its next check and asks; the master reads the request at
    /// its next renewal and releases once its running task ended (a round
    /// trip); the standby takes the released lease at its next check (a read
    /// and a take-over) and runs its tasks.
    pub fn run_bound(&self, faults: bool) -> u64 {
        let rtt = u64::from(self.delays) + 1;
        let master = if faults { self.takeover_bound(true) } else { 0 };
        let task = rtt + 2;
        let tasks = self.keys.len() as u64 * task;
        master
            + tasks
            + self.master
            + self.slave
            + self.master
            + task
            + rtt
            + self.slave
            + 2 * rtt
            + tasks
    }
}

/// The lease document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Doc {
    /// Holder and token: the member's index (members never restart).
    pub holder: u8,
    /// The fencing token.
    pub epoch: u64,
    /// Grows with every write.
    pub version: u32,
    /// Stamped by the node that applied the last write.
    pub renewed_at: i64,
    /// Handed over.
    pub released: bool,
    /// What the master published (`sync` and `run`).
    pub publ: Option<Pub>,
}

/// A clock sample: the stamping clock read `stamp` at local instant `local`, give
/// or take `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sample {
    /// The stamping clock's reading.
    pub stamp: i64,
    /// The member's clock at the midpoint of the round trip.
    pub local: u64,
    /// Half the round trip plus one.
    pub error: u64,
}

impl Sample {
    /// `ClockSample::takeover_at`.
    fn takeover_at(&self, renewed_at: i64, lease: u64) -> u64 {
        let delay = rules::takeover_delay_ms(self.stamp, self.error, renewed_at, lease);
        if delay >= 0 {
            self.local + (delay as u64).min(24 * 60 * 60 * 1000)
        } else {
            self.local.saturating_sub(delay.unsigned_abs())
        }
    }

    /// `ClockSample::stamp_now_ms`.
    fn stamp_now(&self, now: u64) -> i64 {
        self.stamp + now.saturating_sub(self.local) as i64
    }

    /// `ClockSample::disagrees_with`.
    fn disagrees_with(&self, other: &Sample) -> bool {
        let base = self.local.min(other.local);
        let t = |s: &Sample| (s.stamp, s.local - base, s.error);
        rules::clock_stepped(t(self), t(other))
    }
}

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Up {
    /// Not started yet.
    Waiting,
    /// Started.
    Running,
    /// Paused (its clock runs on).
    Paused,
    /// Gone, without a hand-over.
    Crashed,
    /// Shut down gracefully.
    Stopped,
}

/// The election's state, as `State` in the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Started, no check yet.
    Init,
    /// A standby.
    Slave,
    /// Taking over.
    Ticking,
    /// The master.
    Master,
    /// After a failed operation.
    Error,
}

/// `Held` in the election: the epoch and the member's deadline on its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Held {
    /// The held epoch.
    pub epoch: u64,
    /// The member may act while its clock reads less.
    pub valid_until: u64,
}

/// A request to the database.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Req {
    /// Stamp the clock document: the stamping node's time.
    Stamp,
    /// Read the lease.
    Read,
    /// Take the lease: conditional on the version seen (`None`: insert, with this fresh epoch).
    Acquire { seen: Option<u32>, fresh: u64 },
    /// Renew, conditional on token and epoch; publish on the way.
    Renew { epoch: u64, publish: Option<Pub> },
    /// Release, conditional on token and epoch; publish on the way.
    Release { epoch: u64, publish: Option<Pub> },
    /// A fenced write of a task.
    Write { epoch: u64, occ: u8 },
}

/// The database's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The stamp.
    Stamp(i64),
    /// The lease.
    Read(Option<Doc>),
    /// The lease taken, or `None`: another won.
    Acquire(Option<Doc>),
    /// Whether the lease was still ours.
    Renew(bool),
    /// Whether the lease was still ours.
    Release(bool),
    /// Whether the write landed (its epoch not older than the document's).
    Write(bool),
}

/// A message on its way, sent (or answered) at tick `.0`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Msg {
    /// A request that reaches the database at the tick given.
    Req(u16, Req),
    /// A reply that reaches the member at the tick given.
    Rep(u16, Reply),
}

/// Where the election is in an operation (the `await` it waits at).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `check`: the clock sample.
    CheckSample,
    /// `check`: the lease read.
    CheckRead,
    /// `take_over`: the confirming sample.
    TakeSample { seen: Option<Doc> },
    /// `take_over`: the conditional write.
    Acquire,
    /// `renew`.
    Renew { epoch: u64, publish: Option<Pub> },
    /// `release`.
    Release,
}

/// The election's operation in flight: its deadline and send time (own clock) and
/// its message (`None`: lost).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    /// Where the election waits.
    pub kind: OpKind,
    /// When it times out (own clock).
    pub deadline: u64,
    /// When it was sent (own clock).
    pub sent: u64,
    /// Its message; `None`: lost.
    pub msg: Option<Msg>,
}

/// The task the worker runs: the entry, its epoch, its fenced write.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Task {
    /// The task.
    pub entry: Entry,
    /// The epoch it runs under.
    pub epoch: u64,
    /// `None`: the write is not sent yet.
    pub msg: Option<Msg>,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// Whether it runs.
    pub up: Up,
    /// The election's state.
    pub status: Status,
    /// The lease it holds (`Held`).
    pub held: Option<Held>,
    /// Its last clock sample.
    pub clock: Option<Sample>,
    /// `Election::fallback`: version, and expiry by local observation.
    pub fallback: Option<(u32, u64)>,
    /// `Election::deferred`: version, and end of the head start.
    pub deferred: Option<(u32, u64)>,
    /// Take-over races lost in a row.
    pub lost_races: u8,
    /// What it last published as master.
    pub published: Option<Pub>,
    /// When its election wakes next (own clock).
    pub wake: u64,
    /// The operation in flight.
    pub op: Option<Op>,
    /// Requests whose operation was given up (timed out, or the member stopped
    /// or crashed): they still reach the database.
    pub orphans: Vec<(u16, Req)>,
    /// A shutdown was asked for.
    pub stopping: bool,
    /// The election task has returned (after a shutdown).
    pub ended: bool,
    /// The task its worker runs.
    pub task: Option<Task>,
    /// Batched-checks mutation: tasks left in the batch, and its epoch.
    pub credit: (u8, u64),
    /// Its queue.
    pub queue: Queue,
    /// The next occurrence of the feed to consider, and the ones fed so far.
    pub fed: u8,
    /// Bit `i`: task `i` was submitted to it.
    pub fed_mask: u16,
    /// Hands the lease over to a standby that asked for it (it holds tasks no
    /// run covers): no task starts, the lease is released once the running one
    /// ended, and the member stays a standby.
    pub handing_over: bool,
    /// Occurrences it finished in its current epoch (what its run publishes).
    pub term_done: u16,
}

/// Violations seen in a transition (bit flags).
pub const DUP_EPOCH: u8 = 1;
/// A decrease of the lease's epoch was seen.
pub const EPOCH_BACK: u8 = 2;
/// A fenced write of an older epoch landed after a newer one.
pub const FENCE_BACK: u8 = 4;
/// A task that a landed release published as run was started again.
pub const HANDED_REPEAT: u8 = 8;

/// The state of the whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// True time (ticks).
    pub now: u16,
    /// Which node is primary.
    pub primary: u8,
    /// The lease document.
    pub lease: Option<Doc>,
    /// The fenced data document's epoch (0: never written).
    pub fence: u64,
    /// The members.
    pub members: Vec<Member>,
    /// Faults used.
    pub faults: u8,
    /// Shutdowns used.
    pub shutdowns: u8,
    /// The last tick with a fault or a paused member.
    pub unfair: u16,
    /// When a master crashed.
    pub crash: Option<u16>,
    /// Since when the lease is released and not taken again.
    pub released: Option<u16>,
    /// When the first release landed.
    pub first_release: Option<u16>,
    /// Who acted in this tick (held a lease valid by its own clock, or started
    /// a task): (member, epoch), sorted. Members' steps within a tick are
    /// explored in one order only, so acting is counted per tick, not per step:
    /// a member whose lease was valid at the tick's start acts in the whole tick
    /// (a step-down on a renewal that found the lease taken does not undo that),
    /// unless it released the lease and the release was taken over in the tick.
    pub acting: Vec<(u8, u64)>,
    /// Delays used (ticks).
    pub delays: u8,
    /// Epochs taken, in order.
    pub taken: Vec<u64>,
    /// Occurrences whose write landed.
    pub done: u16,
    /// Violations seen in transitions.
    pub broken: u8,
    /// A standby's request that the master hand the lease over to it (written
    /// to the lease document; abstract: it lands at once and stays until a
    /// member takes the lease).
    pub asked: Option<u8>,
    /// Occurrences that a master finished in an epoch whose release, with the
    /// run published, landed: a graceful hand-over must not repeat them.
    pub handed: u16,
}

/// What happens next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Time moves on by one tick.
    Tick,
    /// The database applies the member's request.
    Apply(u8),
    /// The database applies one of the member's orphaned requests.
    ApplyOrphan(u8, u8),
    /// The member's election takes the reply.
    Reply(u8),
    /// The member's election wakes up (timer or timeout).
    Timer(u8),
    /// The database applies the member's fenced write.
    WApply(u8),
    /// The member's task sends its fenced write.
    WSend(u8),
    /// The member's worker takes the write's answer (the task ends).
    WDone(u8),
    /// The member's worker starts its next task.
    WStart(u8),
    /// A message of the member's (`true`: its task's write) takes a tick longer.
    Delay(u8, bool),
    /// The member's message (request or reply) is lost.
    Lose(u8),
    /// The member is paused.
    Pause(u8),
    /// The member goes on.
    Resume(u8),
    /// The member crashes.
    Crash(u8),
    /// The primary moves to the other node.
    PrimaryChange,
    /// The member is shut down gracefully.
    Shutdown(u8),
}

/// The model: a configuration.
pub struct Protocol {
    /// Its configuration.
    pub cfg: Config,
}

impl Protocol {
    fn local(&self, s: &State, m: usize) -> u64 {
        (MEMBER_BASE + self.cfg.members[m].clock.read(s.now, self.cfg.drift_period)) as u64
    }

    fn node_clock(&self, s: &State) -> i64 {
        NODE_BASE + self.cfg.nodes[s.primary as usize].read(s.now, self.cfg.drift_period)
    }

    fn mongos_clock(&self, s: &State) -> i64 {
        NODE_BASE + self.cfg.mongos.read(s.now, self.cfg.drift_period)
    }

    fn alive(m: &Member) -> bool {
        matches!(m.up, Up::Running | Up::Paused)
    }

    /// The epoch a member may act under now: a lease valid by its own clock
    /// (`Shared::acting_epoch`).
    pub fn acting(&self, s: &State, m: usize) -> Option<u64> {
        let mem = &s.members[m];
        if !Self::alive(mem) {
            return None;
        }
        mem.held
            .filter(|h| self.local(s, m) < h.valid_until)
            .map(|h| h.epoch)
    }

    /// Whether the member's election is due (timer or timeout).
    fn timer_due(&self, s: &State, m: usize) -> bool {
        let mem = &s.members[m];
        if mem.up != Up::Running || mem.ended {
            return false;
        }
        let now = self.local(s, m);
        match &mem.op {
            Some(op) => now >= op.deadline,
            None if mem.stopping || mem.handing_over => {
                // stop_work: renew when due while work holds the term; else release.
                if mem.held.is_some() && mem.task.is_some() {
                    now >= mem.wake
                } else {
                    true
                }
            }
            None => now >= mem.wake,
        }
    }

    fn worker_may_start(&self, s: &State, m: usize) -> bool {
        let mem = &s.members[m];
        if mem.up != Up::Running
            || mem.stopping
            || mem.handing_over
            || mem.task.is_some()
            || mem.queue.is_empty()
        {
            return false;
        }
        if let Some(Mutation::BatchedChecks(_)) = self.cfg.mutation {
            if mem.credit.0 > 0 {
                return true;
            }
        }
        self.acting(s, m).is_some()
    }

    /// The member's own steps that are due now.
    fn local_due(&self, s: &State, m: usize, out: &mut Vec<Action>) {
        let mem = &s.members[m];
        if mem.up != Up::Running {
            return;
        }
        let i = m as u8;
        if let Some(Op {
            msg: Some(Msg::Rep(at, _)),
            ..
        }) = &mem.op
        {
            if s.now >= *at {
                out.push(Action::Reply(i));
            }
        }
        match &mem.task {
            Some(Task {
                msg: Some(Msg::Rep(at, _)),
                ..
            }) if s.now >= *at => out.push(Action::WDone(i)),
            Some(Task { msg: None, .. }) => out.push(Action::WSend(i)),
            _ => {}
        }
        if self.timer_due(s, m) {
            out.push(Action::Timer(i));
        }
        if self.worker_may_start(s, m) {
            out.push(Action::WStart(i));
        }
    }

    /// What must happen before time moves on: requests arriving at the database,
    /// and the members' due steps. Members' own steps touch only their own state,
    /// so they commute with one another: only the first member's are offered (a
    /// partial-order reduction; the per-tick properties do not depend on the order
    /// within a tick).
    fn forced(&self, s: &State, out: &mut Vec<Action>) {
        for (i, mem) in s.members.iter().enumerate() {
            let m = i as u8;
            if let Some(Op {
                msg: Some(Msg::Req(at, _)),
                ..
            }) = &mem.op
            {
                if s.now >= *at {
                    out.push(Action::Apply(m));
                }
            }
            for (j, (at, _)) in mem.orphans.iter().enumerate() {
                if s.now >= *at {
                    out.push(Action::ApplyOrphan(m, j as u8));
                }
            }
            if let Some(Task {
                msg: Some(Msg::Req(at, _)),
                ..
            }) = &mem.task
            {
                if s.now >= *at {
                    out.push(Action::WApply(m));
                }
            }
        }
        for m in 0..s.members.len() {
            let before = out.len();
            self.local_due(s, m, out);
            if out.len() > before {
                break;
            }
        }
    }

    /// Whether the member has a step due now.
    fn has_due(&self, s: &State, m: usize) -> bool {
        let mut due = Vec::new();
        self.local_due(s, m, &mut due);
        !due.is_empty()
    }

    /// Faults and operator actions. Each is offered only where it can make a
    /// difference: a member is paused, crashed or shut down right before a step
    /// it would take (doing so earlier is the same, as it does nothing in
    /// between), a message is delayed or lost as it would arrive, and the primary
    /// changes right before the database applies a request.
    fn optional(&self, s: &State, out: &mut Vec<Action>) {
        let f = &self.cfg.faults;
        let budget = s.faults < f.budget;
        let delay = s.delays < self.cfg.delays;
        let due_msg = |msg: Option<&Msg>| matches!(msg, Some(Msg::Req(at, _)) | Some(Msg::Rep(at, _)) if *at <= s.now);
        let mut db_due = false;
        for (i, mem) in s.members.iter().enumerate() {
            let m = i as u8;
            let op_msg = mem.op.as_ref().and_then(|op| op.msg.as_ref());
            db_due |= matches!(op_msg, Some(Msg::Req(at, _)) if *at <= s.now)
                || matches!(&mem.task, Some(Task { msg: Some(Msg::Req(at, _)), .. }) if *at <= s.now)
                || mem.orphans.iter().any(|(at, _)| *at <= s.now);
            if delay && due_msg(op_msg) {
                out.push(Action::Delay(m, false));
            }
            if delay && due_msg(mem.task.as_ref().and_then(|t| t.msg.as_ref())) {
                out.push(Action::Delay(m, true));
            }
            if budget && f.lose && Self::alive(mem) && due_msg(op_msg) {
                out.push(Action::Lose(m));
            }
            if mem.up == Up::Paused {
                out.push(Action::Resume(m));
            }
            if mem.up != Up::Running || !self.has_due(s, i) {
                continue;
            }
            if budget && f.pause {
                out.push(Action::Pause(m));
            }
            if budget && f.crash {
                out.push(Action::Crash(m));
            }
            if s.shutdowns < f.shutdowns
                && !mem.stopping
                && mem.op.is_none()
                && mem.status != Status::Init
            {
                out.push(Action::Shutdown(m));
            }
        }
        if budget && f.primary_change && self.cfg.nodes.len() > 1 && db_due {
            out.push(Action::PrimaryChange);
        }
    }

    /// Records who acts in this tick.
    fn note_acting(&self, s: &mut State) {
        for m in 0..s.members.len() {
            if let Some(e) = self.acting(s, m) {
                let entry = (m as u8, e);
                if let Err(i) = s.acting.binary_search(&entry) {
                    s.acting.insert(i, entry);
                }
            }
        }
    }

    // ----- the election (failover/src/election.rs) ---------------------------

    fn send(&self, s: &mut State, m: usize, kind: OpKind, deadline: u64, req: Req) {
        let sent = self.local(s, m);
        s.members[m].op = Some(Op {
            kind,
            deadline,
            sent,
            msg: Some(Msg::Req(s.now, req)),
        });
    }

    /// `Election::fail`.
    fn fail(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        mem.op = None;
        mem.status = Status::Error;
        mem.wake = now + self.cfg.error;
    }

    /// `Election::step_down`: the term ends at once.
    fn step_down(&self, s: &mut State, m: usize, to: Status) {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        mem.held = None;
        mem.handing_over = false;
        mem.status = to;
        mem.wake = now + self.cfg.error;
    }

    /// `Election::check`, up to its first request.
    fn check(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let deadline = now + self.cfg.slave;
        let refresh = CLOCK_REFRESH_LEASES * self.cfg.lease;
        let stale = s.members[m].clock.is_none_or(|c| c.local + refresh <= now);
        if stale {
            self.send(s, m, OpKind::CheckSample, deadline, Req::Stamp);
        } else {
            self.send(s, m, OpKind::CheckRead, deadline, Req::Read);
        }
    }

    fn sample(&self, s: &State, m: usize, sent: u64, stamp: i64) -> Sample {
        let received = self.local(s, m);
        let half = received.saturating_sub(sent) / 2;
        Sample {
            stamp,
            local: sent + half,
            error: half + 1,
        }
    }

    /// `Election::expiry`.
    fn expiry(&self, s: &mut State, m: usize, lease: &Doc) -> u64 {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        match mem.fallback {
            Some((version, expiry)) if version == lease.version => return expiry,
            Some(_) => mem.fallback = None,
            None => {}
        }
        match &mem.clock {
            Some(c) => c.takeover_at(lease.renewed_at, self.cfg.lease),
            None => now + self.cfg.lease,
        }
    }

    /// `Election::follow`.
    fn follow(&self, s: &mut State, m: usize, lease: &Doc) {
        let rule = self.cfg.rule();
        let mem = &mut s.members[m];
        mem.lost_races = 0;
        mem.status = Status::Slave;
        if let Some(p) = &lease.publ {
            mem.queue.incoming(rule, p);
        }
        self.ask_for_lease(s, m, lease);
    }

    /// `Election::head_start`.
    fn head_start(&self, s: &mut State, m: usize, lease: &Doc, now: u64) -> Option<u64> {
        let rule = self.cfg.rule();
        let mem = &mut s.members[m];
        if !mem.queue.should_defer(rule, lease.publ.as_ref()) {
            return None;
        }
        let until = match mem.deferred {
            Some((version, until)) if version == lease.version => until,
            _ => {
                let until = now + self.cfg.lease;
                mem.deferred = Some((lease.version, until));
                until
            }
        };
        (now < until).then_some(until)
    }

    /// The rest of `Election::check`, once the lease is read.
    fn checked(&self, s: &mut State, m: usize, lease: Option<Doc>) {
        s.members[m].op = None;
        let Some(lease) = lease else {
            return self.take_over(s, m, None);
        };
        if lease.released || lease.holder == m as u8 {
            return self.take_over(s, m, Some(lease));
        }
        let expiry = self.expiry(s, m, &lease);
        let now = self.local(s, m);
        if now >= expiry {
            if let Some(until) = self.head_start(s, m, &lease, now) {
                self.follow(s, m, &lease);
                s.members[m].wake = until.min(now + self.cfg.slave);
                return;
            }
            return self.take_over(s, m, Some(lease));
        }
        self.follow(s, m, &lease);
        s.members[m].wake = expiry.min(now + self.cfg.slave);
    }

    /// `Election::take_over`, up to its first request.
    fn take_over(&self, s: &mut State, m: usize, seen: Option<Doc>) {
        let now = self.local(s, m);
        s.members[m].status = Status::Ticking;
        let deadline = now + self.cfg.ticking;
        let confirm = seen
            .as_ref()
            .is_none_or(|l| !l.released && l.holder != m as u8);
        if confirm {
            self.send(s, m, OpKind::TakeSample { seen }, deadline, Req::Stamp);
        } else {
            self.acquire(s, m, seen, deadline);
        }
    }

    /// `Election::take_over` after the confirming sample.
    fn confirmed(&self, s: &mut State, m: usize, seen: Option<Doc>, fresh: Sample, deadline: u64) {
        let stepped = s.members[m]
            .clock
            .is_some_and(|old| old.disagrees_with(&fresh));
        s.members[m].clock = Some(fresh);
        s.members[m].op = None;
        if let Some(lease) = seen.as_ref() {
            let now = self.local(s, m);
            if stepped {
                s.members[m].fallback = Some((lease.version, now + self.cfg.lease));
            }
            let expiry = self.expiry(s, m, lease);
            if now < expiry {
                self.follow(s, m, lease);
                s.members[m].wake = expiry.min(now + self.cfg.slave);
                return;
            }
        }
        self.acquire(s, m, seen, deadline);
    }

    fn acquire(&self, s: &mut State, m: usize, seen: Option<Doc>, deadline: u64) {
        let now = self.local(s, m);
        let fresh = s.members[m]
            .clock
            .map_or(1, |c| rules::fresh_epoch(c.stamp_now(now)));
        let req = Req::Acquire {
            seen: seen.map(|l| l.version),
            fresh,
        };
        self.send(s, m, OpKind::Acquire, deadline, req);
    }

    /// `Election::become_master`.
    fn become_master(&self, s: &mut State, m: usize, lease: Doc, sent: u64) {
        let rule = self.cfg.rule();
        let mem = &mut s.members[m];
        let held = Held {
            epoch: lease.epoch,
            valid_until: self.cfg.deadline(sent),
        };
        mem.queue
            .became_master(rule, held.epoch, lease.publ.as_ref());
        mem.term_done = 0;
        mem.handing_over = false;
        s.asked = None;
        let mem = &mut s.members[m];
        mem.published = lease.publ;
        mem.fallback = None;
        mem.deferred = None;
        mem.lost_races = 0;
        mem.held = Some(held);
        mem.status = Status::Master;
        mem.wake = sent + self.cfg.master;
    }

    /// `Election::renew`, up to its request.
    fn renew(&self, s: &mut State, m: usize, held: Held) {
        let now = self.local(s, m);
        if now >= held.valid_until {
            return self.step_down(s, m, Status::Error);
        }
        let mem = &s.members[m];
        let publish = mem
            .queue
            .outgoing(self.cfg.rule())
            .filter(|p| mem.published.as_ref() != Some(p));
        let kind = OpKind::Renew {
            epoch: held.epoch,
            publish,
        };
        let req = Req::Renew {
            epoch: held.epoch,
            publish,
        };
        self.send(s, m, kind, held.valid_until, req);
    }

    /// `Election::release`: hands the lease over if no work holds the term.
    fn release(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        let held = mem.held.take();
        let idle = mem.task.is_none() || self.cfg.mutation == Some(Mutation::EarlyRelease);
        match held.filter(|_| idle) {
            Some(held) => {
                let publish = mem
                    .queue
                    .outgoing(self.cfg.rule())
                    .filter(|p| mem.published.as_ref() != Some(p));
                let req = Req::Release {
                    epoch: held.epoch,
                    publish,
                };
                self.send(s, m, OpKind::Release, now + self.cfg.ticking, req);
            }
            None => self.stopped(s, m),
        }
    }

    /// The election has ended; the member is gone once its task (if any) is.
    fn stopped(&self, s: &mut State, m: usize) {
        let mem = &mut s.members[m];
        mem.op = None;
        mem.held = None;
        mem.ended = true;
        if mem.task.is_none() {
            mem.up = Up::Stopped;
        }
    }

    /// The member's election wakes up: a timeout, or its timer.
    fn timer(&self, s: &mut State, m: usize) {
        if let Some(op) = s.members[m].op.take() {
            // `timed`: the operation timed out; a request on its way still lands.
            if let Some(Msg::Req(at, req)) = op.msg {
                s.members[m].orphans.push((at, req));
            }
            return match op.kind {
                OpKind::Renew { .. } => self.step_down(s, m, Status::Error),
                OpKind::Release if s.members[m].handing_over => self.handed_over(s, m),
                OpKind::Release => self.stopped(s, m),
                _ => self.fail(s, m),
            };
        }
        if s.members[m].stopping || s.members[m].handing_over {
            let mem = &s.members[m];
            if let (Some(held), Some(_)) = (mem.held, &mem.task) {
                return self.renew(s, m, held);
            }
            return self.release(s, m);
        }
        match s.members[m].held {
            Some(held) => self.renew(s, m, held),
            None => self.check(s, m),
        }
    }

    /// The member's election takes the reply to its operation.
    fn reply(&self, s: &mut State, m: usize) {
        let op = s.members[m].op.clone().expect("a reply has an operation");
        let Some(Msg::Rep(_, reply)) = op.msg else {
            unreachable!("a reply")
        };
        let now = self.local(s, m);
        match (op.kind, reply) {
            (OpKind::CheckSample, Reply::Stamp(stamp)) => {
                let sample = self.sample(s, m, op.sent, stamp);
                s.members[m].clock = Some(sample);
                self.send(s, m, OpKind::CheckRead, op.deadline, Req::Read);
            }
            (OpKind::CheckRead, Reply::Read(lease)) => self.checked(s, m, lease),
            (OpKind::TakeSample { seen }, Reply::Stamp(stamp)) => {
                let fresh = self.sample(s, m, op.sent, stamp);
                self.confirmed(s, m, seen, fresh, op.deadline);
            }
            (OpKind::Acquire, Reply::Acquire(result)) => {
                s.members[m].op = None;
                match result {
                    Some(lease) => self.become_master(s, m, lease, op.sent),
                    None => {
                        let mem = &mut s.members[m];
                        mem.lost_races = mem.lost_races.saturating_add(1);
                        mem.wake = now + lost_race_pause(mem.lost_races, self.cfg.slave);
                    }
                }
            }
            (OpKind::Renew { epoch, publish }, Reply::Renew(ok)) => {
                s.members[m].op = None;
                if ok {
                    let mem = &mut s.members[m];
                    mem.held = Some(Held {
                        epoch,
                        valid_until: self.cfg.deadline(op.sent),
                    });
                    if publish.is_some() {
                        mem.published = publish;
                    }
                    mem.wake = op.sent + self.cfg.master;
                    self.asked_to_hand_over(s, m);
                } else {
                    self.step_down(s, m, Status::Slave);
                    s.members[m].wake = now;
                }
            }
            (OpKind::Release, Reply::Release(_)) if s.members[m].handing_over => {
                self.handed_over(s, m)
            }
            (OpKind::Release, Reply::Release(_)) => self.stopped(s, m),
            (kind, reply) => unreachable!("{kind:?} answered by {reply:?}"),
        }
    }

    // ----- the database ------------------------------------------------------

    fn note_epoch(s: &mut State, old: Option<u64>, new: u64, taken: bool) {
        if old.is_some_and(|o| new < o) {
            s.broken |= EPOCH_BACK;
        }
        if taken {
            if s.taken.contains(&new) {
                s.broken |= DUP_EPOCH;
            }
            s.taken.push(new);
        }
    }

    /// The database applies a request of member `m`; returns the reply.
    fn apply(&self, s: &mut State, m: usize, req: Req) -> Reply {
        let clock = self.node_clock(s);
        let holder = m as u8;
        match req {
            Req::Stamp => Reply::Stamp(if self.cfg.mutation == Some(Mutation::MongosClock) {
                self.mongos_clock(s)
            } else {
                clock
            }),
            Req::Read => Reply::Read(s.lease.clone()),
            Req::Acquire { seen, fresh } => {
                let old = s.lease.as_ref().map(|l| l.epoch);
                let new = match (&s.lease, seen) {
                    (None, None) => Some(Doc {
                        holder,
                        epoch: fresh,
                        version: 1,
                        renewed_at: clock,
                        released: false,
                        publ: None,
                    }),
                    (Some(l), Some(v)) if l.version == v => Some(Doc {
                        holder,
                        epoch: rules::next_epoch(l.epoch),
                        version: l.version + 1,
                        renewed_at: clock,
                        released: false,
                        publ: l.publ,
                    }),
                    _ => None,
                };
                if let Some(doc) = &new {
                    if let Some(l) = s.lease.as_ref().filter(|l| l.released) {
                        // Taken after a release: the releasing member stopped acting
                        // before it wrote the release, earlier in this tick.
                        let entry = (l.holder, l.epoch);
                        s.acting.retain(|e| *e != entry);
                    }
                    Self::note_epoch(s, old, doc.epoch, true);
                    s.lease = Some(doc.clone());
                    s.released = None;
                }
                Reply::Acquire(new)
            }
            Req::Renew { epoch, publish } | Req::Release { epoch, publish } => {
                let release = matches!(req, Req::Release { .. });
                let ours = s
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.holder == holder && l.epoch == epoch && !l.released);
                if ours {
                    let l = s.lease.as_mut().expect("checked");
                    l.version += 1;
                    l.renewed_at = clock;
                    if let Some(p) = publish {
                        l.publ = Some(p);
                    }
                    if release {
                        l.released = true;
                        s.released = Some(s.now);
                        s.first_release.get_or_insert(s.now);
                        self.note_hand_over(s, m);
                    }
                }
                if release {
                    Reply::Release(ours)
                } else {
                    Reply::Renew(ours)
                }
            }
            Req::Write { epoch, occ } => {
                // failover::fence: a write of epoch e applies while the document's
                // fence is at most e, and sets it to e.
                let landed = s.fence <= epoch;
                if landed {
                    s.fence = epoch;
                    s.done |= 1 << occ;
                }
                Reply::Write(landed)
            }
        }
    }

    // ----- the worker (failover/src/managed/worker.rs) -----------------------

    fn work_start(&self, s: &mut State, m: usize) {
        let acting = self.acting(s, m);
        let mem = &mut s.members[m];
        let epoch = match self.cfg.mutation {
            Some(Mutation::BatchedChecks(n)) => {
                if mem.credit.0 > 0 {
                    mem.credit.0 -= 1;
                    mem.credit.1
                } else {
                    let epoch = acting.expect("checked");
                    mem.credit = (n - 1, epoch);
                    epoch
                }
            }
            _ => acting.expect("checked"),
        };
        let entry = mem.queue.take().expect("checked");
        if s.handed & (1 << entry.occ) != 0 {
            s.broken |= HANDED_REPEAT;
        }
        let mem = &mut s.members[m];
        mem.task = Some(Task {
            entry,
            epoch,
            msg: None,
        });
        let entry = (m as u8, epoch);
        if let Err(i) = s.acting.binary_search(&entry) {
            s.acting.insert(i, entry);
        }
    }

    fn work_done(&self, s: &mut State, m: usize) {
        let mem = &mut s.members[m];
        let task = mem.task.take().expect("a task");
        let Some(Msg::Rep(_, Reply::Write(landed))) = task.msg else {
            unreachable!("a write's answer")
        };
        if landed {
            mem.queue.finish(self.cfg.rule(), task.epoch, task.entry);
            if mem.held.is_some_and(|h| h.epoch == task.epoch) {
                mem.term_done |= 1 << task.entry.occ;
            }
        } else {
            // Refused (a newer epoch wrote): the work asks for a retry.
            mem.queue.restore(self.cfg.rule(), task.entry);
            mem.credit.0 = 0;
        }
        if mem.ended {
            // The election ended while the task ran: the member is gone now.
            mem.up = Up::Stopped;
        }
    }

    fn feed(&self, s: &mut State, m: usize) {
        let rule = self.cfg.rule();
        let now = s.now;
        let plan = &self.cfg.members[m].feed;
        let mem = &mut s.members[m];
        while (mem.fed as usize) < self.cfg.keys.len() {
            let i = mem.fed as usize;
            match plan[i] {
                None => mem.fed += 1,
                Some(at) if at <= now => {
                    let key = self.cfg.keys[i];
                    let running = mem.task.as_ref().is_some_and(|t| t.entry.key == key);
                    if !self.cfg.sequenced && (mem.queue.has_key(key) || running) {
                        break; // keys unique in one queue at one time, at least
                    }
                    let seq = self.cfg.sequenced.then_some(i as u64 + 1);
                    let entry = Entry::new(i as u8, key, seq);
                    mem.fed += 1;
                    let full = self.cfg.members[m]
                        .capacity
                        .is_some_and(|c| mem.queue.len() >= usize::from(c));
                    if full {
                        // `QueueFull::Reject`: the member never holds it.
                        mem.queue.refused(rule, entry);
                        continue;
                    }
                    mem.queue.push(rule, entry);
                    mem.fed_mask |= 1 << i;
                }
                Some(_) => break,
            }
        }
    }

    // ----- the hand-over to a standby that holds tasks no run covers ---------
    //
    // Abstract: the standby's request lands in the lease document at once; the
    // master reads it with its next renewal, starts no task, and releases the
    // lease (with its run) once its running task ended, as on a step-down; the
    // standby takes the released lease at its next check.

    /// A standby that followed `lease` and holds tasks that no published run
    /// covers (`SyncPort::needs_lease`) asks the master to hand the lease over.
    fn ask_for_lease(&self, s: &mut State, m: usize, lease: &Doc) {
        if self.cfg.mutation == Some(Mutation::NoOrphanHandOver)
            || s.asked.is_some()
            || lease.released
        {
            return;
        }
        let mem = &s.members[m];
        if mem.held.is_none() && mem.queue.needs_lease(self.cfg.rule()) {
            s.asked = Some(m as u8);
        }
    }

    /// The master's renewal read a standby's request: it hands over.
    fn asked_to_hand_over(&self, s: &mut State, m: usize) {
        let asked = s.asked.is_some_and(|a| a != m as u8);
        let mem = &mut s.members[m];
        if asked && !mem.stopping && mem.held.is_some() {
            mem.handing_over = true;
        }
    }

    /// The release of a hand-over was answered (or timed out): the member stays
    /// a standby, and lets the others go first for one lease.
    fn handed_over(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        mem.op = None;
        mem.held = None;
        mem.handing_over = false;
        mem.status = Status::Slave;
        mem.wake = now + self.cfg.lease;
    }

    /// A release of member `m` landed, with its run: the tasks it finished in the
    /// epoch must not run again. The documented limits: not after a fault (an
    /// unclean end before, whose master ran tasks it never published, may have
    /// left a member that holds neither the released run's origin nor its last
    /// key; key mode cannot place that run then), and not when the releasing
    /// queue refused a task (its run restarts after the gap, and a standby that
    /// missed the publications before the gap runs what came before it again).
    /// Both repeat, never lose.
    fn note_hand_over(&self, s: &mut State, m: usize) {
        let refused = (0..self.cfg.keys.len()).any(|i| self.refused(s, m, i));
        if s.faults == 0 && !refused {
            s.handed |= s.members[m].term_done;
        }
    }

    /// Whether member `m` was fed occurrence `i` and its full queue refused it.
    fn refused(&self, s: &State, m: usize, i: usize) -> bool {
        let mem = &s.members[m];
        i < mem.fed as usize
            && self.cfg.members[m].feed[i].is_some()
            && mem.fed_mask & (1 << i) == 0
    }

    /// The tick from which the run-at-last bound counts: the last feed, fault
    /// or release.
    fn quiet_since(&self, s: &State) -> u64 {
        u64::from(
            s.unfair
                .max(self.cfg.last_feed())
                .max(s.first_release.unwrap_or(0)),
        )
    }

    fn tick(&self, s: &mut State) {
        s.now += 1;
        s.acting.clear();
        if s.members.iter().any(|m| m.up == Up::Paused) {
            s.unfair = s.now;
        }
        for m in 0..s.members.len() {
            if s.members[m].up == Up::Waiting && self.cfg.members[m].join <= s.now {
                s.members[m].up = Up::Running;
                s.members[m].wake = self.local(s, m);
            }
            if s.members[m].up == Up::Running {
                self.feed(s, m);
            }
        }
    }

    /// A short description of a state, for traces.
    pub fn summary(&self, s: &State) -> String {
        let mut out = format!("t={:<3}", s.now);
        for (i, mem) in s.members.iter().enumerate() {
            let _ = write!(out, " | m{i} {:?}/{:?}", mem.up, mem.status);
            if let Some(h) = mem.held {
                let left = h.valid_until as i64 - self.local(s, i) as i64;
                let _ = write!(out, " e{} valid {left:+}", h.epoch % 1000);
            }
            if !mem.queue.is_empty() {
                let _ = write!(out, " q[{}]", mem.queue.describe().join(","));
            }
            if let Some(t) = &mem.task {
                let _ = write!(
                    out,
                    " runs {}#{}@e{}",
                    t.entry.key,
                    t.entry.occ,
                    t.epoch % 1000
                );
            }
        }
        match &s.lease {
            Some(l) => {
                let _ = write!(
                    out,
                    " | lease m{} e{} v{} at {}{}",
                    l.holder,
                    l.epoch % 1000,
                    l.version,
                    l.renewed_at - NODE_BASE,
                    if l.released { " released" } else { "" }
                );
                if let Some(p) = &l.publ {
                    let _ = write!(out, " sync {}", p.id);
                    if let Some(r) = p.run {
                        let _ = write!(out, " run(e{} {}x{}", r.epoch % 1000, r.first, r.count);
                        if let Some((from, upto)) = r.covers {
                            let _ = write!(out, " covers {from}..={upto}");
                        }
                        out.push(')');
                    }
                }
                if let Some(a) = s.asked {
                    let _ = write!(out, " asked by m{a}");
                }
            }
            None => out.push_str(" | no lease"),
        }
        if self.cfg.nodes.len() > 1 {
            let _ = write!(out, " | primary n{}", s.primary);
        }
        out
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let members = self
            .cfg
            .members
            .iter()
            .map(|_| Member {
                up: Up::Waiting,
                status: Status::Init,
                held: None,
                clock: None,
                fallback: None,
                deferred: None,
                lost_races: 0,
                published: None,
                wake: 0,
                op: None,
                orphans: Vec::new(),
                stopping: false,
                ended: false,
                task: None,
                credit: (0, 0),
                queue: Queue::default(),
                fed: 0,
                fed_mask: 0,
                handing_over: false,
                term_done: 0,
            })
            .collect();
        let mut s = State {
            now: 0,
            primary: 0,
            lease: None,
            fence: 0,
            members,
            faults: 0,
            shutdowns: 0,
            unfair: 0,
            crash: None,
            released: None,
            first_release: None,
            acting: Vec::new(),
            delays: 0,
            taken: Vec::new(),
            done: 0,
            broken: 0,
            asked: None,
            handed: 0,
        };
        // Members that start at tick 0.
        s.now = 0;
        for m in 0..s.members.len() {
            if self.cfg.members[m].join == 0 {
                s.members[m].up = Up::Running;
                s.members[m].wake = self.local(&s, m);
                self.feed(&mut s, m);
            }
        }
        vec![s]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        // The database applies what arrives, and members take their due steps,
        // before time moves on.
        let before = out.len();
        self.forced(s, out);
        if out.len() == before && s.now < self.cfg.horizon {
            out.push(Action::Tick);
        }
        self.optional(s, out);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Tick => self.tick(&mut s),
            Action::Apply(m) => {
                let m = m as usize;
                let op = s.members[m].op.as_mut().expect("an operation");
                let Some(Msg::Req(_, req)) = op.msg.take() else {
                    unreachable!("a request")
                };
                let reply = self.apply(&mut s, m, req);
                let now = s.now;
                let mem = &mut s.members[m];
                if Self::alive(mem) {
                    mem.op.as_mut().expect("an operation").msg = Some(Msg::Rep(now, reply));
                } else {
                    mem.op = None;
                }
            }
            Action::ApplyOrphan(m, j) => {
                let (_, req) = s.members[m as usize].orphans.remove(j as usize);
                self.apply(&mut s, m as usize, req);
            }
            Action::Reply(m) => self.reply(&mut s, m as usize),
            Action::Timer(m) => self.timer(&mut s, m as usize),
            Action::WApply(m) => {
                let m = m as usize;
                let task = s.members[m].task.as_ref().expect("a task");
                let Some(Msg::Req(_, req)) = task.msg.clone() else {
                    unreachable!("a request")
                };
                let before = s.fence;
                let reply = self.apply(&mut s, m, req.clone());
                if let (Req::Write { epoch, .. }, Reply::Write(true)) = (&req, &reply) {
                    if *epoch < before {
                        s.broken |= FENCE_BACK;
                    }
                }
                let now = s.now;
                let mem = &mut s.members[m];
                if Self::alive(mem) {
                    mem.task.as_mut().expect("a task").msg = Some(Msg::Rep(now, reply));
                } else {
                    mem.task = None;
                }
            }
            Action::WDone(m) => self.work_done(&mut s, m as usize),
            Action::WSend(m) => {
                let now = s.now;
                let task = s.members[m as usize].task.as_mut().expect("a task");
                task.msg = Some(Msg::Req(
                    now,
                    Req::Write {
                        epoch: task.epoch,
                        occ: task.entry.occ,
                    },
                ));
            }
            Action::WStart(m) => self.work_start(&mut s, m as usize),
            Action::Delay(m, task) => {
                s.delays += 1;
                let mem = &mut s.members[m as usize];
                let msg = if task {
                    mem.task
                        .as_mut()
                        .and_then(|t| t.msg.as_mut())
                        .expect("a write")
                } else {
                    mem.op
                        .as_mut()
                        .and_then(|op| op.msg.as_mut())
                        .expect("a message")
                };
                match msg {
                    Msg::Req(at, _) | Msg::Rep(at, _) => *at += 1,
                }
            }
            Action::Lose(m) => {
                s.faults += 1;
                s.unfair = s.now;
                s.members[m as usize].op.as_mut().expect("an operation").msg = None;
            }
            Action::Pause(m) => {
                s.faults += 1;
                s.unfair = s.now;
                s.members[m as usize].up = Up::Paused;
            }
            Action::Resume(m) => s.members[m as usize].up = Up::Running,
            Action::Crash(m) => {
                s.faults += 1;
                s.unfair = s.now;
                let mem = &mut s.members[m as usize];
                if mem.held.is_some() {
                    s.crash = Some(s.now);
                }
                mem.up = Up::Crashed;
                if let Some(Op {
                    msg: Some(Msg::Req(at, req)),
                    ..
                }) = mem.op.take()
                {
                    mem.orphans.push((at, req));
                }
                // A write on its way still lands; the rest of the task is gone.
                if !matches!(
                    mem.task,
                    Some(Task {
                        msg: Some(Msg::Req(..)),
                        ..
                    })
                ) {
                    mem.task = None;
                }
            }
            Action::PrimaryChange => {
                s.faults += 1;
                s.unfair = s.now;
                s.primary = 1 - s.primary;
            }
            Action::Shutdown(m) => {
                s.shutdowns += 1;
                let m = m as usize;
                s.members[m].stopping = true;
                if self.cfg.mutation == Some(Mutation::EarlyRelease) {
                    self.release(&mut s, m);
                }
            }
        }
        self.note_acting(&mut s);
        Some(s)
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action:?}")
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one acting epoch per tick", |_: &Protocol, s: &State| {
                s.acting
                    .iter()
                    .all(|&(m, e)| s.acting.iter().all(|&(n, f)| m == n || e == f))
            }),
            Property::always("one holder per epoch", |_: &Protocol, s: &State| {
                if s.broken & DUP_EPOCH != 0 {
                    return false;
                }
                let held: Vec<u64> = s
                    .members
                    .iter()
                    .filter(|m| Protocol::alive(m))
                    .filter_map(|m| m.held.map(|h| h.epoch))
                    .collect();
                (1..held.len()).all(|i| !held[..i].contains(&held[i]))
            }),
            Property::always("epochs only grow", |_: &Protocol, s: &State| {
                s.broken & EPOCH_BACK == 0
            }),
            Property::always(
                "no older fenced write lands after a newer one",
                |_: &Protocol, s: &State| s.broken & FENCE_BACK == 0,
            ),
            Property::always(
                "no task of a live member is lost",
                |_: &Protocol, s: &State| {
                    s.members.iter().filter(|m| Protocol::alive(m)).all(|m| {
                        (0..16u8).filter(|i| m.fed_mask & (1 << i) != 0).all(|i| {
                            s.done & (1 << i) != 0
                                || m.queue.holds(i)
                                || m.task.as_ref().is_some_and(|t| t.entry.occ == i)
                        })
                    })
                },
            ),
            Property::always(
                "a graceful hand-over repeats nothing",
                |_: &Protocol, s: &State| s.broken & HANDED_REPEAT == 0,
            ),
            Property::always(
                "every task a live member holds is run at last",
                |p: &Protocol, s: &State| {
                    if !p.cfg.managed()
                        || u64::from(s.now) < p.quiet_since(s) + p.cfg.run_bound(s.faults > 0)
                    {
                        return true;
                    }
                    s.members
                        .iter()
                        .filter(|m| m.up == Up::Running && !m.stopping)
                        .all(|m| m.fed_mask & !s.done == 0)
                },
            ),
            Property::always(
                "a lease is released only after its work stopped",
                |_: &Protocol, s: &State| {
                    let Some(l) = s.lease.as_ref().filter(|l| l.released) else {
                        return true;
                    };
                    s.members
                        .iter()
                        .all(|m| m.task.as_ref().is_none_or(|t| t.epoch != l.epoch))
                },
            ),
            Property::always(
                "a crashed master is replaced within the bound",
                |p: &Protocol, s: &State| {
                    let Some(crash) = s.crash else { return true };
                    let from = u64::from(crash.max(s.unfair));
                    if u64::from(s.now) < from + p.cfg.takeover_bound(s.faults > 1) {
                        return true;
                    }
                    let live = s.members.iter().any(|m| m.up == Up::Running && !m.stopping);
                    !live
                        || s.members
                            .iter()
                            .any(|m| m.up == Up::Running && m.held.is_some())
                },
            ),
            Property::always(
                "a released lease is taken at the next check",
                |p: &Protocol, s: &State| {
                    let Some(released) = s.released else {
                        return true;
                    };
                    let from = u64::from(released.max(s.unfair));
                    if u64::from(s.now) < from + p.cfg.release_bound() {
                        return true;
                    }
                    let releaser = s.lease.as_ref().map(|l| l.holder as usize);
                    let others =
                        s.members.iter().enumerate().any(|(i, m)| {
                            Some(i) != releaser && m.up == Up::Running && !m.stopping
                        });
                    !others
                },
            ),
            // Coverage: what the checked runs must reach.
            Property::sometimes("a master", |_: &Protocol, s: &State| {
                s.members.iter().any(|m| m.held.is_some())
            }),
            Property::sometimes(
                "a take-over by a second epoch",
                |_: &Protocol, s: &State| s.taken.len() >= 2,
            ),
            Property::sometimes("a crashed master replaced", |_: &Protocol, s: &State| {
                s.crash.is_some()
                    && s.members
                        .iter()
                        .any(|m| m.up == Up::Running && m.held.is_some())
            }),
            Property::sometimes("a released lease taken", |_: &Protocol, s: &State| {
                s.members.iter().any(|m| m.up == Up::Stopped)
                    && s.lease.as_ref().is_some_and(|l| !l.released)
                    && s.taken.len() >= 2
            }),
            Property::sometimes(
                "the take-over bound checked after a crash",
                |p: &Protocol, s: &State| {
                    s.crash.is_some_and(|crash| {
                        let from = u64::from(crash.max(s.unfair));
                        u64::from(s.now) >= from + p.cfg.takeover_bound(s.faults > 1)
                    })
                },
            ),
            Property::sometimes(
                "the release bound checked after a release",
                |p: &Protocol, s: &State| {
                    s.first_release.is_some_and(|r| {
                        let from = u64::from(r.max(s.unfair));
                        u64::from(s.now) >= from + p.cfg.release_bound()
                    })
                },
            ),
            Property::sometimes("a task done", |_: &Protocol, s: &State| s.done != 0),
            Property::sometimes(
                "the run-at-last bound checked",
                |p: &Protocol, s: &State| {
                    p.cfg.managed()
                        && u64::from(s.now) >= p.quiet_since(s) + p.cfg.run_bound(s.faults > 0)
                        && s.members
                            .iter()
                            .any(|m| m.up == Up::Running && m.fed_mask != 0)
                },
            ),
            Property::sometimes(
                "a standby asked for the lease",
                |_: &Protocol, s: &State| s.asked.is_some(),
            ),
            Property::sometimes("an asked hand-over done", |_: &Protocol, s: &State| {
                s.first_release.is_some() && s.shutdowns == 0
            }),
            Property::sometimes(
                "a task refused by a full queue",
                |p: &Protocol, s: &State| {
                    (0..s.members.len()).any(|m| (0..p.cfg.keys.len()).any(|i| p.refused(s, m, i)))
                },
            ),
            Property::sometimes("a stale fenced write refused", |_: &Protocol, s: &State| {
                s.members.iter().any(|m| {
                    matches!(
                        m.task,
                        Some(Task {
                            msg: Some(Msg::Rep(_, Reply::Write(false))),
                            ..
                        })
                    )
                })
            }),
            Property::sometimes("a standby pruned a task", |_: &Protocol, s: &State| {
                s.members.iter().any(|m| {
                    m.held.is_none()
                        && m.fed_mask != 0
                        && (0..16u8)
                            .filter(|i| m.fed_mask & (1 << i) != 0)
                            .any(|i| s.done & (1 << i) != 0 && !m.queue.holds(i))
                })
            }),
            Property::sometimes(
                "a primary change under a master",
                |_: &Protocol, s: &State| {
                    s.primary == 1 && s.members.iter().any(|m| m.held.is_some())
                },
            ),
        ]
    }

    fn within_boundary(&self, _: &State) -> bool {
        true
    }
}
