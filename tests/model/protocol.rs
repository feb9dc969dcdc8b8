//! The model of the protocol: members running the election of
//! `failover/src/election.rs`, the worker of `failover/src/managed/worker.rs`
//! and the durable queue's worker (`durable.rs`) against the lease store as it
//! runs (`failover/src/store/mongo.rs`), on a database of one or two nodes,
//! behind a mongos-like router, in discrete time.
//!
//! # The store
//!
//! The lease is a set of versions, each in a slot of its own (`_id.v`, unique).
//! The newest is the highest (epoch, version). A write inserts its version
//! (a take-over: the one after the version it judged, with the next epoch; a
//! renewal or release: the one after its own last) and then reads the two newest
//! back, as separate database steps; it won if the newest is its own (slot,
//! holder and epoch), and a take-over also needs the version it judged right
//! below. A take-over first reads the newest and gives up unless it is still the
//! one it judged. A slot taken by a lower epoch than the lease the write is based
//! on is stale: the occupant is deleted and the slot tried again (one step with
//! the insert). A renewal that finds its slot taken by an earlier write of its
//! own (its answer lost) goes on to the next slot; one that finds an operator's
//! step-down copy of its lease begins the hand-over. A member that finds no lease
//! writes a vacancy (version 1, no holder, a fresh epoch), which is taken as any
//! expired lease. An operator's step-down request is a copy of the newest version
//! in the next slot, with `step_down` set (same holder, epoch and stamp); the
//! master hands over after its work stopped and then yields for a lease.
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
//!   applied and its reply lost (a durable worker's request lost on the way
//!   lands at any later time); a member paused for any number of ticks (its
//!   clock runs on: `CLOCK_BOOTTIME`); a member crashed; the primary moving to the
//!   other node (the data moves with it: majority writes); every version of the
//!   lease deleted; the holder's garbage collection (versions more than
//!   [`KEEP_VERSIONS`] behind the newest, and those of lower epochs); and,
//!   outside the budget, graceful shutdowns and operators' step-down requests.
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
//!   is delayed or lost as it would arrive, and the primary changes, the lease
//!   is deleted or collected and an operator's step-down request lands right
//!   before the database applies a request.
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
//! put their clocks there. With `failover run` (`Config::supervised`) a master
//! starts a child when it takes the lease; the child runs until its leash's
//! deadline, the master's deadline renewed with each renewal, on the member's
//! clock, which runs on while the supervisor is paused; the supervisor kills it
//! when it steps down or hands over. Submissions follow a fixed schedule per member (a
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

/// The holder's garbage collection keeps this many versions behind the newest
/// (the library keeps 16, renewed every 2/3 of a lease: ten leases; two here,
/// more than a lease, so that a writer whose slot was collected has passed its
/// deadline, as in the library).
pub const KEEP_VERSIONS: u32 = 2;

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
    /// Every version of the lease may be deleted (an operator, a cleanup job).
    pub delete: bool,
    /// Every version but the newest may be garbage-collected (as the holder
    /// does every few versions, at any instant).
    pub gc: bool,
    /// Operators' step-down requests allowed (outside the budget).
    pub step_downs: u8,
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
    /// Finding 1, the old rule: a member that finds no lease takes it at once
    /// (version 1, a fresh epoch) instead of writing a vacancy.
    TakeMissing,
    /// Finding 1, both old rules: a missing lease is taken at once, and the
    /// newest version is the highest version, whatever its epoch.
    OldRules,
    /// The design as first written: a take-over's read-back checks only that
    /// the newest version is its own, not that the version it was based on is
    /// still right below it.
    NoPredecessorCheck,
    /// The library's rule: a member takes a lease that names it as holder at
    /// once, whatever the epoch (a take-over that lost its read-back leaves such
    /// a version behind when the lease was deleted under it).
    OwnLeaseAtOnce,
    /// Finding 2, the old supervisor: its child is killed only by the
    /// supervisor's own steps (no leash), so a paused supervisor's child runs on.
    SupervisorKillsChild,
    /// The old order of the durable queue: the dead letter is stored before the
    /// fenced progress write (which may then be refused).
    BuryBeforeRecord,
    /// The durable queue's progress write requires only `epoch <= mine`, not
    /// that the number grows within an epoch.
    ProgressMayGoBack,
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
    /// Whether the database starts empty (`false`: with a vacancy that expired
    /// long ago, as a database whose lease was vacated; it saves a lease of
    /// waiting before the first election).
    pub empty: bool,
    /// `failover run`: each master runs a child process, under a leash that
    /// kills it at the master's deadline.
    pub supervised: bool,
    /// The durable queue: this many tasks stored before the start (0: none).
    pub durable: u8,
    /// The durable queue: tasks (bit `i`: task `i + 1`) whose first run fails
    /// (past `max_attempts`: a dead letter); a later run succeeds.
    pub flaky: u8,
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

/// One version of the lease: the document `_id: {lease, v: version}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Doc {
    /// Holder and token: the member's index (members never restart); `None`: a
    /// vacancy.
    pub holder: Option<u8>,
    /// The fencing token.
    pub epoch: u64,
    /// The version slot (`_id.v`): unique.
    pub version: u32,
    /// Stamped by the node that applied the write (an operator's step-down copy
    /// keeps the stamp it copied).
    pub renewed_at: i64,
    /// Handed over.
    pub released: bool,
    /// An operator asked the holder to hand over (or a standby did, naming
    /// itself as `successor`).
    pub step_down: bool,
    /// The standby that asked for the hand-over (it holds tasks that no run
    /// covers): a released lease goes to it first.
    pub successor: Option<u8>,
    /// What the master published (`sync` and `run`).
    pub publ: Option<Pub>,
}

/// Which write a standby's judgement was made on (`Seen` in the election): an
/// operator's step-down copy (same epoch, same stamp) is the same write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seen {
    version: u32,
    epoch: u64,
    renewed_at: i64,
}

impl Seen {
    fn of(d: &Doc) -> Seen {
        Seen {
            version: d.version,
            epoch: d.epoch,
            renewed_at: d.renewed_at,
        }
    }

    fn covers(&self, d: &Doc) -> bool {
        (self.version == d.version && self.epoch == d.epoch)
            || (d.step_down && self.epoch == d.epoch && self.renewed_at == d.renewed_at)
    }
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

/// `Held` in the election: the epoch, the member's deadline on its own clock,
/// and the version it last wrote (or the operator's copy of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Held {
    /// The held epoch.
    pub epoch: u64,
    /// The member may act while its clock reads less.
    pub valid_until: u64,
    /// The version its next write follows.
    pub version: u32,
    /// The lease it holds carries a step-down request.
    pub step_down: bool,
    /// The successor that the step-down request names, if any.
    pub successor: Option<u8>,
}

/// A request to the database.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Req {
    /// Stamp the clock document: the stamping node's time.
    Stamp,
    /// Read the lease.
    Read,
    /// Read the two newest versions (a write's read-back).
    ReadBack,
    /// Insert a version (`renewed_at` stamped on the way) into its slot; an
    /// occupant whose epoch is below `base` (the epoch of the lease the write is
    /// based on) is stale: deleted, and the slot tried again.
    Put { doc: Doc, base: Option<u64> },
    /// A fenced write of a task.
    Write { epoch: u64, occ: u8 },
    /// A request of the durable queue's worker.
    Durable(super::durable::DReq),
}

/// The database's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The stamp.
    Stamp(i64),
    /// The newest version.
    Read(Option<Doc>),
    /// The two newest versions.
    ReadBack(Option<Doc>, Option<Doc>),
    /// The version as inserted, or `None`: the slot was taken (duplicate key).
    Put(Option<Doc>),
    /// Whether the write landed (its epoch not older than the document's).
    Write(bool),
    /// The durable queue's answer.
    Durable(super::durable::DRep),
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
    /// The vacancy written for a missing lease.
    Vacate,
    /// `acquire`: the read of the newest version before the insert (the
    /// take-over gives up unless it is still the one seen).
    PreRead { seen: Doc, clean: bool },
    /// A lease write (`MongoStore::write`): the insert of `doc` (`inserted`
    /// `None`), then the read-back of the newest version (`Some`: whether the
    /// insert got the slot); `tries` slots tried so far.
    Lease {
        purpose: Purpose,
        doc: Doc,
        base: Option<u64>,
        inserted: Option<Option<Doc>>,
        tries: u8,
    },
}

/// What a lease write is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A take-over (`true`: of a released lease, or a vacancy no term held).
    Take(bool),
    /// A renewal.
    Renew,
    /// A release (on shutdown, or a hand-over after a step-down request).
    Release,
}

/// What a lease write's read-back says (`Written` in the store).
enum Written {
    Won(Doc),
    Lost,
    AlreadyOurs,
    StepDown(Doc),
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
    /// `Election::fallback`: the write judged, and expiry by local observation.
    pub fallback: Option<(Seen, u64)>,
    /// `Election::deferred`: the write judged, and end of the head start.
    pub deferred: Option<(Seen, u64)>,
    /// Asked to step down (by an operator, or by a standby that holds tasks no
    /// run covers): starts no task, hands the lease over once its work
    /// stopped, and stays a standby.
    pub handing_over: bool,
    /// After a step-down: takes no lease before this (own clock).
    pub yield_until: Option<u64>,
    /// The epoch it held last: a lease of that epoch that names it is its own.
    pub last_epoch: Option<u64>,
    /// `failover run`: the child process, its epoch and its leash's deadline
    /// (own clock).
    pub child: Option<(u64, u64)>,
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
    /// Its durable queue worker (while it is or was master).
    pub dw: Option<super::durable::Worker>,
    /// Its durable worker's requests lost on the way: they land at any time.
    pub stuck: Vec<Req>,
    /// Occurrences it finished in its current epoch (what its run publishes).
    pub term_done: u16,
}

/// Violations seen in a transition (bit flags).
pub const DUP_EPOCH: u8 = 1;
/// A decrease of the lease's epoch was seen.
pub const EPOCH_BACK: u8 = 2;
/// A fenced write of an older epoch landed after a newer one.
pub const FENCE_BACK: u8 = 4;
/// A member acted under an epoch below one an earlier member acted under (so a
/// fenced collection that holds the earlier one refuses it for good).
pub const ACT_BACK: u8 = 8;
/// A durable queue's progress went backwards.
pub const PROGRESS_BACK: u8 = 16;
/// A dead letter stored by a master whose progress write was then refused.
pub const DEAD_REFUSED: u8 = 32;
/// A task that a landed release published as run was started again.
pub const HANDED_REPEAT: u8 = 64;

/// The state of the whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// True time (ticks).
    pub now: u16,
    /// Which node is primary.
    pub primary: u8,
    /// The lease's versions, by slot.
    pub versions: Vec<Doc>,
    /// The highest epoch the newest held version ever had.
    pub top_epoch: u64,
    /// The highest epoch any member acted under.
    pub top_acted: u64,
    /// Step-down requests used.
    pub step_downs: u8,
    /// Supervised children that ran in this tick: (member, epoch), sorted.
    pub children: Vec<(u8, u64)>,
    /// The durable queue, if any.
    pub dq: Option<super::durable::Db>,
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
    /// When the lease was last deleted.
    pub deleted: Option<u16>,
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
    /// A message of the member's (0: its election's, 1: its task's write, 2:
    /// its durable worker's) takes a tick longer.
    Delay(u8, u8),
    /// The member's durable worker takes its step.
    DStep(u8),
    /// The database applies the member's durable worker's request.
    DApply(u8),
    /// The member's durable worker's request is lost on the way (it lands later).
    DStick(u8),
    /// The database applies one of the member's stuck requests.
    ApplyStuck(u8, u8),
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
    /// Every version of the lease is deleted.
    Delete,
    /// Every version but the newest is garbage-collected.
    Gc,
    /// An operator copies the newest version with `step_down` set.
    StepDown,
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
            None if mem.stopping || (mem.handing_over && mem.held.is_some()) => {
                // stop_work (and a hand-over): renew when due while work holds
                // the term; else release.
                if mem.held.is_some() && (mem.task.is_some() || super::durable::busy(s, m)) {
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
        if super::durable::due(self, s, m) {
            out.push(Action::DStep(i));
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
            if super::durable::request_due(s, i) {
                out.push(Action::DApply(m));
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
            let dw_msg = mem.dw.as_ref().and_then(|w| w.msg.as_ref());
            db_due |= matches!(op_msg, Some(Msg::Req(at, _)) if *at <= s.now)
                || matches!(&mem.task, Some(Task { msg: Some(Msg::Req(at, _)), .. }) if *at <= s.now)
                || mem.orphans.iter().any(|(at, _)| *at <= s.now)
                || super::durable::request_due(s, i);
            if delay && due_msg(op_msg) {
                out.push(Action::Delay(m, 0));
            }
            if delay && due_msg(mem.task.as_ref().and_then(|t| t.msg.as_ref())) {
                out.push(Action::Delay(m, 1));
            }
            if delay && due_msg(dw_msg) {
                out.push(Action::Delay(m, 2));
            }
            if budget && f.lose && Self::alive(mem) && super::durable::request_due(s, i) {
                out.push(Action::DStick(m));
            }
            for j in 0..mem.stuck.len() {
                out.push(Action::ApplyStuck(m, j as u8));
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
        // Deletion, garbage collection and an operator's step-down request
        // matter only to the database's next apply: offered right before one.
        if budget && f.delete && db_due && !s.versions.is_empty() {
            out.push(Action::Delete);
        }
        if budget && f.gc && db_due && self.collectible(s) {
            out.push(Action::Gc);
        }
        if s.step_downs < f.step_downs && db_due && self.step_down_offered(s) {
            out.push(Action::StepDown);
        }
    }

    /// Records who acts in this tick (and which children run).
    fn note_acting(&self, s: &mut State) {
        for &(_, e) in &s.acting {
            if e < s.top_acted {
                s.broken |= ACT_BACK;
            }
            s.top_acted = s.top_acted.max(e);
        }
        for m in 0..s.members.len() {
            if let Some(e) = self.acting(s, m) {
                if e < s.top_acted {
                    s.broken |= ACT_BACK;
                }
                s.top_acted = s.top_acted.max(e);
                let entry = (m as u8, e);
                if let Err(i) = s.acting.binary_search(&entry) {
                    s.acting.insert(i, entry);
                }
            }
            if let Some(e) = self.child_acting(s, m) {
                let entry = (m as u8, e);
                if let Err(i) = s.children.binary_search(&entry) {
                    s.children.insert(i, entry);
                }
            }
        }
    }

    /// The epoch a member's supervised child runs under now: until its leash's
    /// deadline (on the member's clock, which runs on while the supervisor is
    /// paused); without the leash, until the supervisor kills it.
    fn child_acting(&self, s: &State, m: usize) -> Option<u64> {
        let (epoch, until) = s.members[m].child?;
        let leash = self.cfg.mutation != Some(Mutation::SupervisorKillsChild);
        (!leash || self.local(s, m) < until).then_some(epoch)
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

    /// `Election::step_down`: the term ends at once (the supervisor, which takes
    /// this step, kills its child).
    fn step_down(&self, s: &mut State, m: usize, to: Status) {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        mem.held = None;
        mem.handing_over = false;
        mem.child = None;
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
            Some((seen, expiry)) if seen.covers(lease) => return expiry,
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
    }

    /// `Election::head_start`.
    fn head_start(&self, s: &mut State, m: usize, lease: &Doc, now: u64) -> Option<u64> {
        let rule = self.cfg.rule();
        let mem = &mut s.members[m];
        if !mem.queue.should_defer(rule, lease.publ.as_ref()) {
            return None;
        }
        let until = match mem.deferred {
            Some((seen, until)) if seen.covers(lease) => until,
            _ => {
                let until = now + self.cfg.lease;
                mem.deferred = Some((Seen::of(lease), until));
                until
            }
        };
        (now < until).then_some(until)
    }

    /// `Election::yielding`: after a step-down the standbys go first.
    fn yielding(&self, s: &mut State, m: usize, now: u64) -> Option<u64> {
        let mem = &mut s.members[m];
        match mem.yield_until {
            Some(until) if now < until => Some(until),
            _ => {
                mem.yield_until = None;
                None
            }
        }
    }

    /// The rest of `Election::check`, once the lease is read.
    fn checked(&self, s: &mut State, m: usize, lease: Option<Doc>) {
        s.members[m].op = None;
        let Some(lease) = lease else {
            if matches!(
                self.cfg.mutation,
                Some(Mutation::TakeMissing | Mutation::OldRules)
            ) {
                return self.take_over(s, m, None);
            }
            return self.vacate(s, m);
        };
        let own = self.own(s, m, &lease);
        let now = self.local(s, m);
        if let Some(until) = self.yielding(s, m, now) {
            if lease.released || own || now >= self.expiry(s, m, &lease) {
                self.follow(s, m, &lease);
                s.members[m].wake = until.min(now + self.cfg.slave);
                return;
            }
        }
        let expiry = self.expiry(s, m, &lease);
        let successor_first = lease.released && lease.successor.is_some_and(|a| a != m as u8);
        if successor_first && now < expiry {
            // Handed over to the standby that asked for it: it goes first, and
            // the others wait as for a lease that runs out.
            self.follow(s, m, &lease);
            s.members[m].wake = expiry.min(now + self.cfg.slave);
            return;
        }
        if lease.released || own {
            return self.take_over(s, m, Some(lease));
        }
        if now >= expiry {
            if let Some(until) = self.head_start(s, m, &lease, now) {
                self.follow(s, m, &lease);
                s.members[m].wake = until.min(now + self.cfg.slave);
                return;
            }
            return self.take_over(s, m, Some(lease));
        }
        self.follow(s, m, &lease);
        self.ask_for_lease(s, m, &lease);
        s.members[m].wake = expiry.min(now + self.cfg.slave);
    }

    /// Whether a lease is this member's own (taken at once): it names the
    /// member, with the epoch the member held last. A version that names it
    /// with another epoch is a take-over that lost its read-back.
    fn own(&self, s: &State, m: usize, lease: &Doc) -> bool {
        lease.holder == Some(m as u8)
            && (self.cfg.mutation == Some(Mutation::OwnLeaseAtOnce)
                || s.members[m].last_epoch == Some(lease.epoch))
    }

    /// No lease: writes a vacancy (version 1, no holder, a fresh epoch), which
    /// is taken over by the ordinary expiry rule.
    fn vacate(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let doc = Doc {
            holder: None,
            epoch: self.fresh_epoch(s, m),
            version: 1,
            renewed_at: 0,
            released: false,
            step_down: false,
            successor: None,
            publ: None,
        };
        let deadline = now + self.cfg.ticking;
        self.send(s, m, OpKind::Vacate, deadline, Req::Put { doc, base: None });
    }

    fn fresh_epoch(&self, s: &State, m: usize) -> u64 {
        let now = self.local(s, m);
        s.members[m]
            .clock
            .map_or(1, |c| rules::fresh_epoch(c.stamp_now(now)))
    }

    /// `Election::take_over`, up to its first request.
    fn take_over(&self, s: &mut State, m: usize, seen: Option<Doc>) {
        let now = self.local(s, m);
        s.members[m].status = Status::Ticking;
        let deadline = now + self.cfg.ticking;
        let confirm = seen
            .as_ref()
            .is_none_or(|l| !l.released && !self.own(s, m, l));
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
                s.members[m].fallback = Some((Seen::of(lease), now + self.cfg.lease));
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

    /// `LeaseStore::acquire`: the version after the one seen, with the next
    /// epoch, once a read shows that the one seen is still the newest. `None`
    /// (the old rule): version 1 with a fresh epoch, at once.
    fn acquire(&self, s: &mut State, m: usize, seen: Option<Doc>, deadline: u64) {
        let clean = seen
            .as_ref()
            .is_some_and(|l| l.released || l.holder.is_none());
        if let Some(seen) = seen {
            return self.send(s, m, OpKind::PreRead { seen, clean }, deadline, Req::Read);
        }
        self.insert_take(s, m, None, clean, deadline, None);
    }

    /// The insert of a take-over (after the pre-read, which keeps the send time).
    fn insert_take(
        &self,
        s: &mut State,
        m: usize,
        seen: Option<Doc>,
        clean: bool,
        deadline: u64,
        sent: Option<u64>,
    ) {
        let fresh = self.fresh_epoch(s, m);
        let (doc, base) = match seen {
            Some(l) => (
                Doc {
                    holder: Some(m as u8),
                    epoch: rules::next_epoch(l.epoch),
                    version: l.version + 1,
                    renewed_at: 0,
                    released: false,
                    step_down: false,
                    successor: None,
                    publ: l.publ,
                },
                Some(l.epoch),
            ),
            None => (
                Doc {
                    holder: Some(m as u8),
                    epoch: fresh,
                    version: 1,
                    renewed_at: 0,
                    released: false,
                    step_down: false,
                    successor: None,
                    publ: None,
                },
                None,
            ),
        };
        self.put(s, m, Purpose::Take(clean), doc, base, 0, deadline, sent);
    }

    /// Sends the insert of a lease write; a retry in the next slot keeps the
    /// operation's send time (`sent`).
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        s: &mut State,
        m: usize,
        purpose: Purpose,
        doc: Doc,
        base: Option<u64>,
        tries: u8,
        deadline: u64,
        sent: Option<u64>,
    ) {
        let kind = OpKind::Lease {
            purpose,
            doc: doc.clone(),
            base,
            inserted: None,
            tries,
        };
        self.send(s, m, kind, deadline, Req::Put { doc, base });
        if let Some(sent) = sent {
            s.members[m].op.as_mut().expect("sent").sent = sent;
        }
    }

    /// `MongoStore::write`'s verdict, from the insert's outcome and the newest
    /// version read back.
    fn written(
        &self,
        m: usize,
        doc: &Doc,
        inserted: &Option<Doc>,
        newest: Option<Doc>,
        purpose: Purpose,
    ) -> Written {
        let me = Some(m as u8);
        let ours = |n: &Doc| n.version == doc.version && n.holder == me && n.epoch == doc.epoch;
        // An operator's copy of this member's lease: ours still, not extended.
        let step_down = newest
            .as_ref()
            .filter(|n| !matches!(purpose, Purpose::Take(_)) && n.holder == me && n.step_down)
            .cloned();
        match (inserted, newest) {
            (Some(d), Some(n)) if ours(&n) && !n.step_down => Written::Won(d.clone()),
            (None, Some(n)) if ours(&n) && step_down.is_none() => Written::AlreadyOurs,
            _ => step_down.map_or(Written::Lost, Written::StepDown),
        }
    }

    /// The lease write's verdict, for the operation it belongs to
    /// (`write_next`'s retries, `acquire`, `renew`, `release`).
    #[allow(clippy::too_many_arguments)]
    fn after_write(
        &self,
        s: &mut State,
        m: usize,
        purpose: Purpose,
        doc: Doc,
        base: Option<u64>,
        tries: u8,
        verdict: Written,
        sent: u64,
        deadline: u64,
    ) {
        let now = self.local(s, m);
        let next = |mut d: Doc, v: u32, step_down: bool| {
            d.version = v;
            d.step_down |= step_down;
            d
        };
        match (purpose, verdict) {
            (Purpose::Take(clean), Written::Won(lease)) => {
                if !clean {
                    if let Some(db) = s.dq.as_mut() {
                        db.unclean += 1;
                    }
                }
                self.become_master(s, m, lease, sent)
            }
            (Purpose::Take(_), _) => self.lost_race(s, m),
            (Purpose::Renew, Written::Won(lease)) => {
                let stopping = s.members[m].stopping;
                let mem = &mut s.members[m];
                let held = mem.held.as_mut().expect("renewing");
                held.valid_until = self.cfg.deadline(sent);
                held.version = lease.version;
                held.step_down |= lease.step_down;
                held.successor = held.successor.or(lease.successor);
                let until = held.valid_until;
                mem.published = lease.publ;
                if let Some(child) = mem.child.as_mut() {
                    // The supervisor renews its child's leash.
                    child.1 = until;
                }
                mem.wake = sent + self.cfg.master;
                if lease.step_down && !mem.handing_over && !stopping {
                    mem.handing_over = true;
                    mem.wake = now;
                }
            }
            (Purpose::Renew | Purpose::Release, Written::AlreadyOurs) if tries < 3 => {
                let v = doc.version + 1;
                self.put(
                    s,
                    m,
                    purpose,
                    next(doc, v, false),
                    base,
                    tries + 1,
                    deadline,
                    Some(sent),
                );
            }
            (Purpose::Renew, Written::StepDown(copy)) => {
                // Not extended: the deadline stays that of the last renewal.
                let stopping = s.members[m].stopping;
                let mem = &mut s.members[m];
                let held = mem.held.as_mut().expect("renewing");
                held.version = copy.version;
                held.step_down = true;
                held.successor = copy.successor;
                if !stopping {
                    mem.handing_over = true;
                }
                mem.wake = now;
            }
            (Purpose::Release, Written::StepDown(copy)) if tries < 3 => {
                let v = copy.version + 1;
                self.put(
                    s,
                    m,
                    purpose,
                    next(doc, v, true),
                    base,
                    tries + 1,
                    deadline,
                    Some(sent),
                );
            }
            (Purpose::Renew, _) => {
                self.step_down(s, m, Status::Slave);
                s.members[m].wake = now;
            }
            (Purpose::Release, _) => self.released(s, m),
        }
    }

    fn lost_race(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        mem.op = None;
        mem.lost_races = mem.lost_races.saturating_add(1);
        mem.wake = now + lost_race_pause(mem.lost_races, self.cfg.slave);
    }

    /// `Election::become_master`.
    fn become_master(&self, s: &mut State, m: usize, lease: Doc, sent: u64) {
        if s.taken.contains(&lease.epoch) {
            s.broken |= DUP_EPOCH;
        }
        s.taken.push(lease.epoch);
        let rule = self.cfg.rule();
        let supervised = self.cfg.supervised;
        let mem = &mut s.members[m];
        let held = Held {
            epoch: lease.epoch,
            valid_until: self.cfg.deadline(sent),
            version: lease.version,
            step_down: lease.step_down,
            successor: lease.successor,
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
        mem.yield_until = None;
        mem.handing_over = false;
        mem.lost_races = 0;
        mem.held = Some(held);
        mem.last_epoch = Some(held.epoch);
        mem.status = Status::Master;
        mem.wake = sent + self.cfg.master;
        if supervised {
            // `failover run` starts its child, leashed to the deadline.
            mem.child = Some((held.epoch, held.valid_until));
        }
        if self.cfg.durable > 0 {
            super::durable::became_master(s, m, held.epoch);
        }
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
        let doc = Doc {
            holder: Some(m as u8),
            epoch: held.epoch,
            version: held.version + 1,
            renewed_at: 0,
            released: false,
            step_down: held.step_down,
            successor: held.successor,
            publ: publish.or(mem.published),
        };
        self.put(
            s,
            m,
            Purpose::Renew,
            doc,
            Some(held.epoch),
            0,
            held.valid_until,
            None,
        );
    }

    /// `Election::release`: hands the lease over if no work holds the term.
    fn release(&self, s: &mut State, m: usize) {
        let now = self.local(s, m);
        let early = self.cfg.mutation == Some(Mutation::EarlyRelease);
        let busy = !early && (s.members[m].task.is_some() || super::durable::busy(s, m));
        let mem = &mut s.members[m];
        let held = mem.held.take();
        // The supervisor stops its child before it hands over.
        mem.child = None;
        match held.filter(|_| !busy) {
            Some(held) => {
                let publish = mem
                    .queue
                    .outgoing(self.cfg.rule())
                    .filter(|p| mem.published.as_ref() != Some(p));
                let doc = Doc {
                    holder: Some(m as u8),
                    epoch: held.epoch,
                    version: held.version + 1,
                    renewed_at: 0,
                    released: true,
                    step_down: held.step_down,
                    successor: held.successor,
                    publ: publish.or(mem.published),
                };
                let deadline = now + self.cfg.ticking;
                self.put(
                    s,
                    m,
                    Purpose::Release,
                    doc,
                    Some(held.epoch),
                    0,
                    deadline,
                    None,
                );
            }
            None if mem.stopping => self.stopped(s, m),
            None => {
                // A hand-over under running work: the lease expires instead.
                mem.handing_over = false;
                self.step_down(s, m, Status::Slave);
            }
        }
    }

    /// After the release (or its failure): a shutdown ends; a hand-over leaves a
    /// standby that lets the others go first for a lease.
    fn released(&self, s: &mut State, m: usize) {
        if s.members[m].stopping {
            return self.stopped(s, m);
        }
        let now = self.local(s, m);
        let mem = &mut s.members[m];
        mem.op = None;
        mem.held = None;
        mem.handing_over = false;
        mem.yield_until = Some(now + self.cfg.lease);
        mem.status = Status::Slave;
        mem.wake = now;
    }

    /// The election has ended; the member is gone once its task (if any) is.
    fn stopped(&self, s: &mut State, m: usize) {
        let busy = super::durable::busy(s, m);
        let mem = &mut s.members[m];
        mem.op = None;
        mem.held = None;
        mem.child = None;
        mem.ended = true;
        if mem.task.is_none() && !busy {
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
                OpKind::Lease {
                    purpose: Purpose::Renew,
                    ..
                } => self.step_down(s, m, Status::Error),
                OpKind::Lease {
                    purpose: Purpose::Release,
                    ..
                } => self.released(s, m),
                _ => self.fail(s, m),
            };
        }
        let mem = &s.members[m];
        if mem.stopping || (mem.handing_over && mem.held.is_some()) {
            if let (Some(held), true) = (mem.held, mem.task.is_some() || super::durable::busy(s, m))
            {
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
            (OpKind::PreRead { seen, clean }, Reply::Read(newest)) => {
                s.members[m].op = None;
                let same = newest.as_ref().is_some_and(|n| {
                    (n.version, n.epoch, n.holder) == (seen.version, seen.epoch, seen.holder)
                });
                if same {
                    self.insert_take(s, m, Some(seen), clean, op.deadline, Some(op.sent));
                } else {
                    self.lost_race(s, m);
                }
            }
            (OpKind::Vacate, Reply::Put(written)) => {
                s.members[m].op = None;
                match written {
                    Some(vacancy) => {
                        self.follow(s, m, &vacancy);
                        let expiry = self.expiry(s, m, &vacancy);
                        s.members[m].wake = expiry.min(now + self.cfg.slave);
                    }
                    None => self.lost_race(s, m),
                }
            }
            (
                OpKind::Lease {
                    purpose,
                    doc,
                    base,
                    inserted: None,
                    tries,
                },
                Reply::Put(inserted),
            ) => {
                if matches!(purpose, Purpose::Take(_)) && inserted.is_none() {
                    // The slot is another's: lost (the read-back decides nothing).
                    return self.lost_race(s, m);
                }
                let kind = OpKind::Lease {
                    purpose,
                    doc,
                    base,
                    inserted: Some(inserted),
                    tries,
                };
                let mem = &mut s.members[m];
                mem.op = Some(Op {
                    kind,
                    msg: Some(Msg::Req(s.now, Req::ReadBack)),
                    ..op
                });
            }
            (
                OpKind::Lease {
                    purpose,
                    doc,
                    base,
                    inserted: Some(inserted),
                    tries,
                },
                Reply::ReadBack(newest, below),
            ) => {
                s.members[m].op = None;
                // A take-over of the version seen: that version must still be
                // right below the new one (else the lease was deleted since,
                // and the slot may have been won before by another).
                let predecessor = match base {
                    Some(b) if matches!(purpose, Purpose::Take(_)) => {
                        self.cfg.mutation == Some(Mutation::NoPredecessorCheck)
                            || below.is_some_and(|d| d.version + 1 == doc.version && d.epoch == b)
                    }
                    _ => true,
                };
                let newest = newest.filter(|_| predecessor);
                let verdict = self.written(m, &doc, &inserted, newest, purpose);
                self.after_write(
                    s,
                    m,
                    purpose,
                    doc,
                    base,
                    tries,
                    verdict,
                    op.sent,
                    op.deadline,
                );
            }
            (kind, reply) => unreachable!("{kind:?} answered by {reply:?}"),
        }
    }

    // ----- the database ------------------------------------------------------

    /// The newest version: the highest (epoch, version); the old rule, the
    /// highest version.
    pub fn newest<'a>(&self, s: &'a State) -> Option<&'a Doc> {
        if self.cfg.mutation == Some(Mutation::OldRules) {
            s.versions.iter().max_by_key(|d| d.version)
        } else {
            s.versions.iter().max_by_key(|d| (d.epoch, d.version))
        }
    }

    /// After the versions changed: the newest held epoch must not go back (a
    /// vacancy's fresh epoch may: two vacancies written a tick apart by members
    /// whose estimates of the stamping clock differ; nobody held either); a
    /// released newest version counts as released since it appeared.
    fn note_versions(&self, s: &mut State) {
        let top = self.newest(s).map(|d| (d.epoch, d.released));
        if let Some((epoch, _)) = self
            .newest(s)
            .filter(|d| d.holder.is_some())
            .map(|d| (d.epoch, ()))
        {
            if epoch < s.top_epoch {
                s.broken |= EPOCH_BACK;
            }
            s.top_epoch = s.top_epoch.max(epoch);
        }
        s.released = match top {
            Some((_, true)) => s.released.or(Some(s.now)),
            _ => None,
        };
    }

    /// The database applies a request of member `m`; returns the reply.
    fn apply(&self, s: &mut State, m: usize, req: Req) -> Reply {
        let clock = self.node_clock(s);
        match req {
            Req::Stamp => Reply::Stamp(if self.cfg.mutation == Some(Mutation::MongosClock) {
                self.mongos_clock(s)
            } else {
                clock
            }),
            Req::Read => Reply::Read(self.newest(s).cloned()),
            Req::ReadBack => {
                let newest = self.newest(s).cloned();
                let below = newest.as_ref().and_then(|n| {
                    s.versions
                        .iter()
                        .filter(|d| *d != n)
                        .max_by_key(|d| (d.epoch, d.version))
                        .cloned()
                });
                Reply::ReadBack(newest, below)
            }
            Req::Put { mut doc, base } => {
                let before = self.newest(s).cloned();
                if let Some(i) = s.versions.iter().position(|d| d.version == doc.version) {
                    let stale = base.is_some_and(|b| s.versions[i].epoch < b);
                    if !stale {
                        return Reply::Put(None);
                    }
                    // A stale occupant (a lower epoch than the lease this write
                    // is based on): deleted, and the slot tried again.
                    s.versions.remove(i);
                }
                doc.renewed_at = clock;
                let i = s.versions.partition_point(|d| d.version < doc.version);
                s.versions.insert(i, doc.clone());
                if doc.released {
                    s.first_release.get_or_insert(s.now);
                    if self.newest(s) == Some(&doc) {
                        self.note_hand_over(s, m);
                    }
                }
                if let Some(b) = before.filter(|b| b.released && b.epoch != doc.epoch) {
                    if self.newest(s) == Some(&doc) {
                        // Taken after a release: the releasing member stopped
                        // acting before it wrote the release, earlier in this tick.
                        if let Some(h) = b.holder {
                            s.acting.retain(|e| *e != (h, b.epoch));
                        }
                    }
                }
                self.note_versions(s);
                Reply::Put(Some(doc))
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
            Req::Durable(r) => Reply::Durable(super::durable::apply(self, s, m, r)),
        }
    }

    /// `LeaseStore::request_step_down`: a copy of the newest version with
    /// `step_down` set, in the next slot (same holder, epoch and stamp), naming
    /// `successor` when a standby asks (`None`: an operator). Whether it landed
    /// (nothing when nobody holds the lease or it was asked already).
    fn request_step_down(&self, s: &mut State, successor: Option<u8>) -> bool {
        let Some(mut copy) = self.newest(s).cloned() else {
            return false;
        };
        if copy.holder.is_none() || copy.released || copy.step_down {
            return false;
        }
        copy.version += 1;
        copy.step_down = true;
        copy.successor = successor;
        let landed = s.versions.iter().all(|d| d.version != copy.version);
        if landed {
            s.versions.push(copy);
            s.versions.sort_by_key(|d| d.version);
        }
        self.note_versions(s);
        landed
    }

    /// The holder's garbage collection (run at any instant): the versions more
    /// than [`KEEP_VERSIONS`] behind the newest, and those of lower epochs.
    fn collect(&self, s: &mut State) {
        if let Some((v, e)) = self.newest(s).map(|n| (n.version, n.epoch)) {
            s.versions
                .retain(|d| d.version + KEEP_VERSIONS >= v && d.epoch >= e);
        }
        self.note_versions(s);
    }

    fn collectible(&self, s: &State) -> bool {
        self.newest(s).is_some_and(|n| {
            s.versions
                .iter()
                .any(|d| d.version + KEEP_VERSIONS < n.version || d.epoch < n.epoch)
        })
    }

    /// Whether an operator's step-down request can land now.
    fn step_down_offered(&self, s: &State) -> bool {
        self.newest(s).is_some_and(|n| {
            n.holder.is_some()
                && !n.released
                && !n.step_down
                && s.versions.iter().all(|d| d.version != n.version + 1)
        })
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
    // One mechanism with the operator's step-down: the standby's request is a
    // step-down request naming it as successor (abstract: it lands at once); the
    // master reads it with its next renewal, starts no task, releases the lease
    // (with its run) once its work stopped and yields for a lease; the released
    // lease goes to the successor first, the others wait as for a lease that
    // runs out.

    /// `Election::ask_for_lease`: a standby that followed `lease` (held, not
    /// asked to step down) and holds tasks that no published run covers
    /// (`SyncPort::needs_lease`) asks the master to hand the lease over.
    fn ask_for_lease(&self, s: &mut State, m: usize, lease: &Doc) {
        if self.cfg.mutation == Some(Mutation::NoOrphanHandOver)
            || s.asked.is_some()
            || lease.released
            || lease.step_down
            || lease.holder.is_none_or(|h| h == m as u8)
        {
            return;
        }
        let mem = &s.members[m];
        if mem.held.is_none()
            && mem.queue.needs_lease(self.cfg.rule())
            && self.request_step_down(s, Some(m as u8))
        {
            s.asked = Some(m as u8);
        }
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
        s.children.clear();
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
            if let Some((e, until)) = mem.child {
                let left = until as i64 - self.local(s, i) as i64;
                let _ = write!(out, " child e{} leash {left:+}", e % 1000);
            }
            if mem.handing_over {
                out.push_str(" handing over");
            }
            out.push_str(&super::durable::describe(s, i));
        }
        if s.versions.is_empty() {
            out.push_str(" | no lease");
        }
        let newest = self.newest(s);
        for l in &s.versions {
            let holder = l.holder.map_or("vacant".to_owned(), |h| format!("m{h}"));
            let _ = write!(
                out,
                " | {}v{} {holder} e{} at {}{}{}",
                if Some(l) == newest { "*" } else { "" },
                l.version,
                l.epoch % 1000,
                l.renewed_at - NODE_BASE,
                if l.released { " released" } else { "" },
                if l.step_down { " step_down" } else { "" },
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
            if let Some(a) = l.successor {
                let _ = write!(out, " successor m{a}");
            }
        }
        if let Some(a) = s.asked {
            let _ = write!(out, " | asked by m{a}");
        }
        if let Some(db) = &s.dq {
            let _ = write!(
                out,
                " | progress {} e{}{} dead {:?} runs {:?}",
                db.seq,
                db.epoch % 1000,
                db.bury.map_or(String::new(), |b| format!(" bury {b}")),
                db.letters
                    .iter()
                    .map(|(q, e)| (q, e % 1000))
                    .collect::<Vec<_>>(),
                db.runs,
            );
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
                yield_until: None,
                last_epoch: None,
                child: None,
                dw: None,
                stuck: Vec::new(),
                term_done: 0,
            })
            .collect();
        // A vacancy that expired long ago (or nothing).
        let vacancy = Doc {
            holder: None,
            epoch: rules::fresh_epoch(NODE_BASE - 100),
            version: 1,
            renewed_at: NODE_BASE - 100,
            released: false,
            step_down: false,
            successor: None,
            publ: None,
        };
        let versions = if self.cfg.empty {
            vec![]
        } else {
            vec![vacancy]
        };
        let dq = (self.cfg.durable > 0).then(|| super::durable::Db {
            runs: vec![0; usize::from(self.cfg.durable)],
            ..Default::default()
        });
        let mut s = State {
            now: 0,
            primary: 0,
            top_epoch: 0,
            versions,
            top_acted: 0,
            step_downs: 0,
            children: Vec::new(),
            dq,
            fence: 0,
            members,
            faults: 0,
            shutdowns: 0,
            unfair: 0,
            crash: None,
            deleted: None,
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
            Action::Delay(m, kind) => {
                s.delays += 1;
                let mem = &mut s.members[m as usize];
                let msg = match kind {
                    1 => mem
                        .task
                        .as_mut()
                        .and_then(|t| t.msg.as_mut())
                        .expect("a write"),
                    2 => mem
                        .dw
                        .as_mut()
                        .and_then(|w| w.msg.as_mut())
                        .expect("a request"),
                    _ => mem
                        .op
                        .as_mut()
                        .and_then(|op| op.msg.as_mut())
                        .expect("a message"),
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
                if let Some(super::durable::Worker {
                    msg: Some(Msg::Req(at, req)),
                    ..
                }) = mem.dw.take()
                {
                    mem.orphans.push((at, req));
                }
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
            Action::DStep(m) => {
                let m = m as usize;
                super::durable::step(self, &mut s, m);
                let mem = &mut s.members[m];
                if mem.ended && !super::durable::busy(&s, m) {
                    s.members[m].up = Up::Stopped;
                }
            }
            Action::DApply(m) => super::durable::deliver(self, &mut s, m as usize),
            Action::DStick(m) => {
                s.faults += 1;
                s.unfair = s.now;
                super::durable::stick(&mut s, m as usize);
            }
            Action::ApplyStuck(m, j) => {
                let req = s.members[m as usize].stuck.remove(j as usize);
                self.apply(&mut s, m as usize, req);
            }
            Action::Delete => {
                s.faults += 1;
                s.unfair = s.now;
                let held = self
                    .newest(&s)
                    .is_some_and(|n| n.holder.is_some() && !n.released);
                if let (true, Some(db)) = (held, s.dq.as_mut()) {
                    db.unclean += 1;
                }
                s.versions.clear();
                s.deleted = Some(s.now);
                self.note_versions(&mut s);
            }
            Action::Gc => {
                s.faults += 1;
                self.collect(&mut s);
            }
            Action::StepDown => {
                // The hand-over lets the others go first for a lease: with
                // nobody else alive, nobody leads for that long (not a fault,
                // but the bounds count from it as from one).
                s.unfair = s.now;
                s.step_downs += 1;
                self.request_step_down(&mut s, None);
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
                "no member acts under an epoch below an earlier one's (no fence wedged)",
                |_: &Protocol, s: &State| s.broken & ACT_BACK == 0,
            ),
            Property::always(
                "one supervised child runs at a time",
                |_: &Protocol, s: &State| {
                    s.children
                        .iter()
                        .all(|&(m, e)| s.children.iter().all(|&(n, f)| m == n || e == f))
                },
            ),
            Property::always(
                "durable progress never goes back",
                |_: &Protocol, s: &State| s.broken & PROGRESS_BACK == 0,
            ),
            Property::always(
                "no dead letter from a master whose progress write is refused",
                |_: &Protocol, s: &State| s.broken & DEAD_REFUSED == 0,
            ),
            Property::always(
                "a task that finished well is no dead letter",
                |_: &Protocol, s: &State| super::durable::done_is_not_dead(s),
            ),
            Property::always("no durable task is lost", |_: &Protocol, s: &State| {
                super::durable::nothing_lost(s)
            }),
            Property::always(
                "at most one repeat per unclean end",
                |_: &Protocol, s: &State| super::durable::repeats_bounded(s),
            ),
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
                |p: &Protocol, s: &State| {
                    let Some(l) = p.newest(s).filter(|l| l.released) else {
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
                    let releaser = p.newest(s).and_then(|l| l.holder).map(usize::from);
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
            Property::sometimes("a released lease taken", |p: &Protocol, s: &State| {
                s.members.iter().any(|m| m.up == Up::Stopped)
                    && p.newest(s)
                        .is_some_and(|l| !l.released && l.holder.is_some())
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
            Property::sometimes("an asked hand-over done", |p: &Protocol, s: &State| {
                p.newest(s)
                    .is_some_and(|n| n.released && n.successor.is_some())
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
                "a lease deleted under a master",
                |_: &Protocol, s: &State| {
                    s.versions.is_empty() && s.members.iter().any(|m| m.held.is_some())
                },
            ),
            Property::sometimes(
                "a vacancy taken after a deletion",
                |_: &Protocol, s: &State| {
                    s.deleted.is_some() && s.taken.last().is_some_and(|&e| e > s.taken[0] + 2)
                },
            ),
            Property::sometimes("a step-down handed over", |p: &Protocol, s: &State| {
                s.step_downs > 0
                    && s.members.iter().any(|m| m.yield_until.is_some())
                    && p.newest(s).is_some_and(|l| l.released)
            }),
            Property::sometimes("a durable task dead-lettered", |_: &Protocol, s: &State| {
                s.dq.as_ref().is_some_and(|db| !db.letters.is_empty())
            }),
            Property::sometimes("a durable task repeated", |_: &Protocol, s: &State| {
                s.dq.as_ref().is_some_and(|db| db.repeats() > 0)
            }),
            Property::sometimes("the durable queue finished", |p: &Protocol, s: &State| {
                s.dq.as_ref().is_some_and(|db| db.seq == p.cfg.durable)
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
