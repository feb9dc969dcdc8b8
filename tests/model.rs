//! Model check of the lease protocol, the managed queue, the durable queue and
//! `failover run` (issues 13 and 17).
//!
//! The model (`tests/model/protocol.rs`) runs the election of
//! `failover/src/election.rs` (take-over, renewal, release, the step-down on an
//! operator's request and the hand-over after it), the worker of
//! `failover/src/managed/worker.rs` and the queue rule of
//! `failover/src/managed/queue.rs` (`tests/model/queue.rs`), the durable queue of
//! `failover/src/managed/durable.rs` (`tests/model/durable.rs`) and `failover
//! run`'s supervised children, among two or three members, a database of one or
//! two nodes and a mongos-like router, every clock with its own offset and rate
//! error, in discrete time, and `stateright` explores every interleaving breadth
//! first. The timing rules are the library's own (`failover::lease::rules`,
//! ticks as milliseconds).
//!
//! The lease store is the one that runs (`failover/src/store/mongo.rs` with the
//! rules of the deletion fix): every write inserts a version into a slot of its
//! own (`_id.v`, unique), then reads the two newest back; the newest is the
//! highest (epoch, version); a take-over reads the newest first and goes on only
//! if it is still the one it judged, and wins only if its read-back shows its
//! own version with the one it judged right below; a member that finds no lease
//! writes a vacancy, taken by the ordinary expiry rule; a write that finds a
//! lower-epoch occupant in its slot deletes it and tries again; an operator's
//! step-down request is a copy of the newest version with `step_down` set. The
//! faults include the deletion of every version at any instant, the holder's
//! garbage collection at any instant, and the loss of a write's answer after it
//! applied.
//!
//! * The protocol as implemented must satisfy every safety and liveness property
//!   in every configuration; the state counts and times are printed.
//! * Each mutation, a variant of one rule known to be wrong, must produce a
//!   counterexample; its shortest trace is printed. Among them the rules behind
//!   the holes of issue 17: a missing lease taken at once and the newest judged
//!   by version as well (finding 1), a child killed only by its supervisor
//!   (finding 2), a dead letter stored before the progress write a newer master
//!   refuses, and progress that may go back (finding 6); and two rules the
//!   store needs under deletion that the model found: a take-over's read-back
//!   must show the version it judged right below its own, and a lease that
//!   names a member is its own (taken at once) only with the epoch it held.
//!
//! The managed queue's properties: no task a live member holds is lost; a
//! graceful hand-over repeats nothing (no task that a master finished in an
//! epoch whose release landed runs again; the documented limits, a fault
//! before the release or a refusal in the releasing queue, are left out); and,
//! under fair scheduling, every task a live member holds is run at last (within
//! `Config::run_bound` of the last feed, fault and release). Members may have a
//! bounded queue that refuses tasks (`QueueFull::Reject`), and a standby that
//! holds tasks no run covers asks the master to hand the lease over: a
//! step-down request naming it as successor, the mechanism of the operator's
//! step-down; the released lease goes to the successor first (see `protocol.rs`).
//!
//! By default the heaviest configurations run with messages on time (no delay
//! budget; every other fault stays): the election with two faults, with lease
//! deletions, and the managed late-joiner, hand-over and repeated-key ones.
//! `FAILOVER_MODEL_LARGE=1` checks those with their delays, and adds larger
//! configurations (three members, more faults, longer horizons) to the same
//! tests; they take much longer.

mod model {
    pub mod durable;
    pub mod protocol;
    pub mod queue;
}

use std::collections::BTreeSet;
use std::time::Instant;

use model::protocol::{ClockCfg, Config, Faults, MemberCfg, Mutation, Protocol};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

/// The lease, in ticks (milliseconds): a margin of 1.
const LEASE: u64 = 10;

/// Whether to add the larger configurations.
fn large() -> bool {
    std::env::var("FAILOVER_MODEL_LARGE").is_ok_and(|v| v == "1")
}

/// The default size of a heavy configuration: its messages on time (no delay
/// budget; losses, pauses and the other faults stay); `FAILOVER_MODEL_LARGE=1`
/// checks it as written, with delays.
fn on_time(cfg: Config) -> Config {
    if large() || cfg.delays == 0 {
        return cfg;
    }
    Config {
        name: Box::leak(format!("{}, messages on time", cfg.name).into_boxed_str()),
        delays: 0,
        ..cfg
    }
}

fn member(clock: ClockCfg, join: u16, feed: Vec<Option<u16>>) -> MemberCfg {
    MemberCfg {
        clock,
        join,
        feed,
        capacity: None,
    }
}

/// Two members whose clocks drift apart (one loses a tick, the other gains one,
/// every two leases: 10 % of the lease apart per lease, as much as the margin).
fn two_members() -> Vec<MemberCfg> {
    vec![
        member(ClockCfg::drifting(-1, 0), 0, vec![]),
        member(ClockCfg::drifting(1, 0), 0, vec![]),
    ]
}

/// Timings in the library's proportions (renewal at 2/3 of the lease, standbys
/// check a bit less often, the take-over limit like the renewal), scaled to a
/// lease of 10 ticks; a database of one node with an exact clock; a mongos four
/// ticks ahead of it; messages delayed by one tick at most in a run.
fn base(name: &'static str) -> Config {
    Config {
        name,
        members: two_members(),
        nodes: vec![ClockCfg::EXACT],
        mongos: ClockCfg::ahead(4),
        keys: Vec::new(),
        sequenced: false,
        lease: LEASE,
        master: 6,
        slave: 8,
        ticking: 6,
        error: 8,
        drift_period: 2 * LEASE,
        delays: 1,
        horizon: 45,
        faults: Faults::default(),
        mutation: None,
        empty: false,
        supervised: false,
        durable: 0,
        flaky: 0,
    }
}

/// `base` for managed mode: long enough for the take-over bound (which adds a
/// lease of head start) to pass after an early crash.
fn managed_base(name: &'static str) -> Config {
    Config {
        horizon: 52,
        ..base(name)
    }
}

/// Every kind of fault, `budget` of them.
fn faults(budget: u8) -> Faults {
    Faults {
        budget,
        lose: true,
        pause: true,
        crash: true,
        primary_change: true,
        shutdowns: 0,
        delete: false,
        gc: false,
        step_downs: 0,
    }
}

/// The election alone, one fault of any kind: a lost message (request or reply),
/// a pause, a crash, or the primary moving to the node whose clock is a margin
/// ahead.
fn election_one_fault() -> Config {
    Config {
        nodes: vec![ClockCfg::EXACT, ClockCfg::ahead(1)],
        faults: faults(1),
        ..base("election: 2 members, 2 nodes, 1 fault of any kind")
    }
}

/// The election, two faults among lost messages, crashes and primary changes.
fn election_two_faults() -> Config {
    Config {
        nodes: vec![ClockCfg::EXACT, ClockCfg::ahead(1)],
        faults: Faults {
            pause: false,
            ..faults(2)
        },
        ..base("election: 2 members, 2 nodes, 2 faults (loss, crash, primary change)")
    }
}

/// The election with a standby that joins late, so that its first clock sample
/// can come from a node that did not stamp the last renewal: both nodes' clocks
/// gain a tick every two leases, the second is a margin ahead of the first; the
/// master's clock loses a tick every two leases (the slowest and the fastest
/// clock are a margin apart after one lease); two faults among lost messages and
/// primary changes.
fn election_late_joiner() -> Config {
    let mut members = two_members();
    members[1] = member(ClockCfg::EXACT, 21, vec![]);
    Config {
        members,
        nodes: vec![
            ClockCfg::drifting(1, 0),
            ClockCfg {
                offset: 1,
                ..ClockCfg::drifting(1, 0)
            },
        ],
        faults: Faults {
            pause: false,
            crash: false,
            ..faults(2)
        },
        horizon: 40,
        ..base("election: a late joiner, 2 drifting nodes, 2 faults (loss, primary change)")
    }
}

/// The election with a graceful shutdown and one more fault.
fn election_hand_over() -> Config {
    Config {
        faults: Faults {
            shutdowns: 1,
            primary_change: false,
            pause: false,
            ..faults(1)
        },
        ..base("election: 2 members, a shutdown and 1 fault (loss, crash)")
    }
}

/// Three members, two nodes (one a margin behind), two faults of any kind, a
/// shutdown: `FAILOVER_MODEL_LARGE=1` only.
fn election_large() -> Config {
    let mut members = two_members();
    members.push(member(ClockCfg::EXACT, 3, vec![]));
    Config {
        members,
        nodes: vec![ClockCfg::EXACT, ClockCfg::ahead(-1)],
        faults: Faults {
            shutdowns: 1,
            ..faults(2)
        },
        horizon: 55,
        ..base("election: 3 members, 2 nodes, 2 faults of any kind, a shutdown")
    }
}

/// Managed mode: two members fed three tasks whose keys repeat (1, 2, 1), with
/// feed sequence numbers, the first member's feed lagging behind the second's;
/// one fault (loss, pause, crash).
fn managed_repeated_keys() -> Config {
    let mut members = two_members();
    members[0].feed = vec![Some(1), Some(14), Some(16)];
    members[1].feed = vec![Some(1), Some(3), Some(5)];
    Config {
        members,
        keys: vec![1, 2, 1],
        sequenced: true,
        faults: Faults {
            primary_change: false,
            ..faults(1)
        },
        ..managed_base("managed: 2 members, keys 1 2 1 with sequences, lagging feed, 1 fault")
    }
}

/// Managed mode: the second member joins late and misses the first task (keys
/// 1, 2, 3); one fault (loss, pause, crash).
fn managed_late_joiner() -> Config {
    let mut members = two_members();
    members[0].feed = vec![Some(1), Some(3), Some(9)];
    members[1].join = 2;
    members[1].feed = vec![None, Some(4), Some(9)];
    Config {
        members,
        keys: vec![1, 2, 3],
        faults: Faults {
            primary_change: false,
            ..faults(1)
        },
        ..managed_base("managed: 2 members, a late joiner, keys 1 2 3, 1 fault")
    }
}

/// Managed mode with a graceful shutdown (and one loss or crash).
fn managed_hand_over() -> Config {
    let mut members = two_members();
    members[0].feed = vec![Some(1), Some(2), Some(12)];
    members[1].feed = vec![Some(1), Some(2), Some(12)];
    Config {
        members,
        keys: vec![1, 2, 3],
        faults: Faults {
            shutdowns: 1,
            primary_change: false,
            pause: false,
            ..faults(1)
        },
        ..managed_base("managed: 2 members, keys 1 2 3, a shutdown and 1 fault (loss, crash)")
    }
}

/// The hand-over of `managed_hand_over`, with keys that repeat (1, 2, 1) and
/// feed sequence numbers.
fn managed_hand_over_repeated_keys() -> Config {
    Config {
        keys: vec![1, 2, 1],
        sequenced: true,
        name: "managed: 2 members, keys 1 2 1 with sequences, a shutdown and 1 fault (loss, crash)",
        ..managed_hand_over()
    }
}

/// The late joiner of `managed_late_joiner`, with keys that repeat (1, 2, 1) and
/// feed sequence numbers.
fn managed_late_joiner_repeated_keys() -> Config {
    Config {
        keys: vec![1, 2, 1],
        sequenced: true,
        name: "managed: 2 members, a late joiner, keys 1 2 1 with sequences, 1 fault",
        ..managed_late_joiner()
    }
}

/// Managed mode with two faults and a shutdown: `FAILOVER_MODEL_LARGE=1` only.
fn managed_large() -> Config {
    Config {
        faults: Faults {
            shutdowns: 1,
            primary_change: false,
            ..faults(2)
        },
        horizon: 60,
        name: "managed: 2 members, keys 1 2 1, lagging feed, 2 faults, a shutdown",
        ..managed_repeated_keys()
    }
}

/// The election with the lease deleted (every version) or garbage-collected
/// (as the holder does) at any instant, twice; messages delayed by a tick.
fn election_deletion() -> Config {
    Config {
        faults: Faults {
            budget: 2,
            delete: true,
            gc: true,
            ..Faults::default()
        },
        ..base("election: 2 members, the lease deleted or collected twice")
    }
}

/// The election on an empty database (a vacancy is written first; the first
/// election takes a lease longer), with one fault (a loss, a crash, the lease
/// deleted).
fn election_empty() -> Config {
    Config {
        empty: true,
        faults: Faults {
            budget: 1,
            lose: true,
            crash: true,
            delete: true,
            ..Faults::default()
        },
        ..base("election: 2 members, an empty database, 1 fault (loss, crash, deletion)")
    }
}

/// The election with an operator's step-down request and one loss (also of a
/// write's answer after it applied), over three leases.
fn election_step_down() -> Config {
    Config {
        faults: Faults {
            step_downs: 1,
            budget: 1,
            lose: true,
            ..Faults::default()
        },
        horizon: 32,
        ..base("election: 2 members, a step-down request and 1 loss")
    }
}

/// `failover run`: each master runs a child under a leash; one pause (SIGSTOP of
/// the supervisor) or crash, over four leases.
fn supervised() -> Config {
    Config {
        supervised: true,
        faults: Faults {
            budget: 1,
            pause: true,
            crash: true,
            ..Faults::default()
        },
        horizon: 40,
        ..base("failover run: 2 supervisors with leashed children, 1 fault (pause, crash)")
    }
}

/// The durable queue: three stored tasks, the second fails on its first run
/// (a dead letter); one fault (a request lost on the way and landing later, a
/// crash, a pause). Messages are not delayed (a pause delays all a member
/// does), over a horizon of four leases.
fn durable() -> Config {
    Config {
        durable: 3,
        flaky: 0b010,
        faults: Faults {
            budget: 1,
            lose: true,
            pause: true,
            crash: true,
            ..Faults::default()
        },
        delays: 0,
        horizon: 40,
        ..base(
            "durable queue: 2 members, 3 tasks (the 2nd fails once), 1 fault (loss, pause, crash)",
        )
    }
}

/// The durable queue with a step-down request and a shutdown (graceful ends:
/// no repeat).
fn durable_hand_over() -> Config {
    Config {
        name: "durable queue: 2 members, 3 tasks (the 2nd fails once), a step-down and a shutdown",
        faults: Faults {
            budget: 0,
            shutdowns: 1,
            step_downs: 1,
            ..Faults::default()
        },
        ..durable()
    }
}

/// Managed mode, a graceful hand-over to a standby whose feed lags (keys 1 2 3,
/// no sequence numbers): the first member is fed everything at once, the second
/// only the first task, the rest much later; a shutdown and one lost message;
/// messages on time.
fn managed_lagging_hand_over() -> Config {
    let mut members = two_members();
    members[0].feed = vec![Some(1), Some(1), Some(1)];
    members[1].feed = vec![Some(1), Some(24), Some(25)];
    Config {
        members,
        keys: vec![1, 2, 3],
        delays: 0,
        faults: Faults {
            shutdowns: 1,
            primary_change: false,
            pause: false,
            crash: false,
            ..faults(1)
        },
        horizon: 40,
        ..managed_base("managed: a shutdown, the standby's feed lagging, keys 1 2 3, 1 loss")
    }
}

/// Managed mode with a full queue (sequence numbers): the first member holds one
/// task at most and refuses what comes while it runs one; both are fed 1 and 2
/// at once, 3 a tick later; one lost message; messages on time.
fn managed_capacity() -> Config {
    let mut members = two_members();
    members[0].feed = vec![Some(1), Some(1), Some(2)];
    members[0].capacity = Some(1);
    members[1].feed = vec![Some(1), Some(1), Some(2)];
    Config {
        members,
        keys: vec![1, 2, 3],
        sequenced: true,
        delays: 0,
        faults: Faults {
            primary_change: false,
            pause: false,
            crash: false,
            ..faults(1)
        },
        horizon: 60,
        ..managed_base("managed: a queue of 1 that refuses, keys 1 2 3 with sequences, 1 loss")
    }
}

/// Managed mode, a task that only a standby holds (keys 1 2): the second member
/// leads, fed only the second task; the first joins later and is fed both: the
/// first task stands before every run of the second. One lost message;
/// messages on time.
fn managed_orphans() -> Config {
    let mut members = two_members();
    members[0].join = 4;
    members[0].feed = vec![Some(4), Some(4)];
    members[1].feed = vec![None, Some(1)];
    Config {
        members,
        keys: vec![1, 2],
        delays: 0,
        faults: Faults {
            primary_change: false,
            pause: false,
            crash: false,
            ..faults(1)
        },
        horizon: 60,
        ..managed_base("managed: a task only a late standby holds, keys 1 2, 1 loss")
    }
}

/// Prints a trace: every step but the ticks, with the state after it.
fn print_trace(
    p: &Protocol,
    path: stateright::Path<model::protocol::State, model::protocol::Action>,
) -> usize {
    let steps = path.into_vec();
    let actions = steps.iter().filter(|(_, a)| a.is_some()).count();
    let mut last = None;
    for (state, action) in &steps {
        if let Some(a) = last.take() {
            println!("    {a:?}\n        {}", p.summary(state));
        }
        match action {
            Some(model::protocol::Action::Tick) | None => {}
            Some(a) => last = Some(a.clone()),
        }
    }
    if let Some((state, _)) = steps.last() {
        println!("    final: {}", p.summary(state));
    }
    actions
}

/// Explores `cfg` with the protocol as implemented: no property may fail, and
/// every example in `examples` must be reached.
fn check(cfg: Config, examples: &[&'static str]) {
    let name = cfg.name;
    let started = Instant::now();
    let checker = Protocol { cfg }.checker().spawn_bfs().join();
    let model = checker.model();
    println!(
        "{name}: {} states ({} unique), depth {}, {:.1?}; bounds: take-over {} ticks ({} after earlier faults), release {} ticks",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed(),
        model.cfg.takeover_bound(false),
        model.cfg.takeover_bound(true),
        model.cfg.release_bound(),
    );
    let mut failed = Vec::new();
    for property in model.properties() {
        let found = checker.discovery(property.name);
        match property.expectation {
            Expectation::Always | Expectation::Eventually => {
                if let Some(path) = found {
                    println!("  VIOLATED: {}", property.name);
                    print_trace(model, path);
                    failed.push(property.name);
                }
            }
            Expectation::Sometimes => {
                if examples.contains(&property.name) && found.is_none() {
                    println!("  never reached: {}", property.name);
                    failed.push(property.name);
                }
            }
        }
    }
    assert!(checker.is_done(), "{name}: exploration incomplete");
    assert!(failed.is_empty(), "{name}: {failed:?}");
}

/// Explores `cfg` (a mutation) until `property` fails; prints the shortest trace.
fn refute(cfg: Config, property: &'static str) {
    let name = cfg.name;
    let started = Instant::now();
    let checker = Protocol { cfg }
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_bfs()
        .join();
    let model = checker.model();
    let path = checker.discovery(property);
    println!(
        "{name}: {} states, {:.1?}",
        checker.state_count(),
        started.elapsed()
    );
    let Some(path) = path else {
        panic!("{name}: no counterexample for \"{property}\": the model cannot tell this mutation from the protocol");
    };
    println!("  counterexample to \"{property}\":");
    let len = print_trace(model, path);
    println!("  ({len} steps)");
}

const SAFETY: &[&str] = &["a master", "a take-over by a second epoch"];
const CRASH: &[&str] = &[
    "a crashed master replaced",
    "the take-over bound checked after a crash",
];
const RELEASE: &[&str] = &[
    "a released lease taken",
    "the release bound checked after a release",
];
const DELETION: &[&str] = &[
    "a lease deleted under a master",
    "a vacancy taken after a deletion",
];
const DURABLE: &[&str] = &[
    "a durable task dead-lettered",
    "a durable task repeated",
    "the durable queue finished",
];
const RUN_AT_LAST: &[&str] = &[
    "the run-at-last bound checked",
    "a standby asked for the lease",
    "an asked hand-over done",
];
const TASKS: &[&str] = &[
    "a task done",
    "a stale fenced write refused",
    "a standby pruned a task",
];

fn examples(groups: &[&[&'static str]]) -> Vec<&'static str> {
    groups.iter().flat_map(|g| g.iter().copied()).collect()
}

#[test]
fn election_one_fault_is_safe_and_live() {
    let e = examples(&[SAFETY, CRASH, &["a primary change under a master"]]);
    check(election_one_fault(), &e);
}

#[test]
fn election_two_faults_is_safe_and_live() {
    let e = examples(&[SAFETY, CRASH, &["a primary change under a master"]]);
    check(on_time(election_two_faults()), &e);
    if large() {
        check(election_large(), &examples(&[SAFETY, CRASH, RELEASE]));
    }
}

#[test]
fn election_late_joiner_is_safe() {
    check(election_late_joiner(), &examples(&[SAFETY]));
}

#[test]
fn election_hand_over_is_safe_and_live() {
    check(election_hand_over(), &examples(&[SAFETY, CRASH, RELEASE]));
}

#[test]
fn managed_repeated_keys_are_safe() {
    check(
        on_time(managed_repeated_keys()),
        &examples(&[SAFETY, CRASH, TASKS]),
    );
    if large() {
        check(managed_large(), &examples(&[SAFETY, CRASH, TASKS, RELEASE]));
    }
}

#[test]
fn managed_late_joiner_is_safe() {
    check(
        on_time(managed_late_joiner()),
        &examples(&[SAFETY, CRASH, TASKS]),
    );
}

#[test]
fn managed_hand_over_is_safe() {
    check(
        on_time(managed_hand_over()),
        &examples(&[SAFETY, RELEASE, &["a task done"]]),
    );
}

/// A graceful hand-over to a standby whose feed lags repeats nothing: the new
/// master drops what its predecessor ran as its feed catches up.
#[test]
fn managed_lagging_hand_over_repeats_nothing() {
    check(
        managed_lagging_hand_over(),
        &examples(&[SAFETY, RELEASE, &["a task done", "a standby pruned a task"]]),
    );
}

/// A task refused by a full queue is a gap in its member's feed: no run spans
/// it, the standby that holds it keeps it, asks for the lease and runs it.
#[test]
fn managed_capacity_refusals_lose_nothing() {
    let e = examples(&[SAFETY, RUN_AT_LAST, &["a task refused by a full queue"]]);
    check(managed_capacity(), &e);
    check(
        Config {
            sequenced: false,
            name: "managed: a queue of 1 that refuses, keys 1 2 3, 1 loss",
            ..managed_capacity()
        },
        &e,
    );
}

/// Tasks that only a standby holds are run at last: it asks for the lease, the
/// master hands over after its running task.
#[test]
fn managed_orphans_are_run_at_last() {
    let e = examples(&[
        SAFETY,
        RUN_AT_LAST,
        &["a task done", "a standby pruned a task"],
    ]);
    check(managed_orphans(), &e);
    check(
        Config {
            sequenced: true,
            name: "managed: a task only a late standby holds, keys 1 2 with sequences, 1 loss",
            ..managed_orphans()
        },
        &e,
    );
}

/// The new master forgets the run it inherited and could not place yet (the
/// rule before): it runs its predecessor's tasks again as its feed brings them.
#[test]
fn mutation_new_master_forgets_the_inherited_run() {
    refute(
        Config {
            mutation: Some(Mutation::ForgetInheritedRun),
            ..managed_lagging_hand_over()
        },
        "a graceful hand-over repeats nothing",
    );
}

/// A refusal leaves no trace (the rule before): the refusing member's run spans
/// the task it never had, and the standby that holds it drops it.
#[test]
fn mutation_refusals_unrecorded() {
    refute(
        Config {
            mutation: Some(Mutation::UnrecordedRefusals),
            ..managed_capacity()
        },
        "no task of a live member is lost",
    );
}

/// The standby that holds tasks no run covers never asks for the lease (the
/// protocol before): they are kept, and never run.
#[test]
fn mutation_no_hand_over_to_the_orphan_holder() {
    refute(
        Config {
            mutation: Some(Mutation::NoOrphanHandOver),
            ..managed_orphans()
        },
        "every task a live member holds is run at last",
    );
}

#[test]
fn mutation_expiry_on_the_mongos_clock() {
    refute(
        Config {
            mutation: Some(Mutation::MongosClock),
            ..election_one_fault()
        },
        "one acting epoch per tick",
    );
}

#[test]
fn mutation_no_step_down_margin() {
    refute(
        Config {
            mutation: Some(Mutation::NoMargin),
            ..election_late_joiner()
        },
        "one acting epoch per tick",
    );
}

#[test]
fn mutation_lease_checks_batched() {
    refute(
        Config {
            mutation: Some(Mutation::BatchedChecks(3)),
            ..managed_repeated_keys()
        },
        "one acting epoch per tick",
    );
}

#[test]
fn mutation_release_before_the_task_stopped() {
    refute(
        Config {
            mutation: Some(Mutation::EarlyRelease),
            ..managed_hand_over()
        },
        "a lease is released only after its work stopped",
    );
}

#[test]
fn mutation_pending_key_prune() {
    refute(
        Config {
            mutation: Some(Mutation::PendingKeyPrune),
            ..managed_repeated_keys()
        },
        "no task of a live member is lost",
    );
}

/// The late joiner with keys that repeat (1, 2, 1), tasks numbered by their feed:
/// the master ran #0 (key 1); the late joiner never had #0, and holds #1 (key 2)
/// and #2 (key 1). By key alone it took #2 for #0 and dropped it (the violation
/// this model found, issue 8); by sequence number it drops only what was run.
#[test]
fn managed_late_joiner_repeated_keys_with_sequences_are_safe() {
    check(
        on_time(managed_late_joiner_repeated_keys()),
        &examples(&[SAFETY, CRASH, TASKS]),
    );
}

/// The hand-over with keys that repeat, tasks numbered by their feed: a master
/// that ran #0 (key 1) itself no longer takes the successor's run of #0 for #2.
#[test]
fn managed_hand_over_repeated_keys_with_sequences_are_safe() {
    check(
        on_time(managed_hand_over_repeated_keys()),
        &examples(&[SAFETY, CRASH, RELEASE]),
    );
}

/// Without sequence numbers the key is a task's identity, and the documented
/// contract is that keys never repeat: this shows why. The same late joiner, keys
/// 1 2 1 with no sequence numbers: the checker finds the loss.
#[test]
fn key_mode_needs_keys_that_do_not_repeat_late_joiner() {
    refute(
        Config {
            sequenced: false,
            ..managed_late_joiner_repeated_keys()
        },
        "no task of a live member is lost",
    );
}

/// The same for the hand-over: keys 1 2 1 without sequence numbers lose a task.
#[test]
fn key_mode_needs_keys_that_do_not_repeat_hand_over() {
    refute(
        Config {
            sequenced: false,
            ..managed_hand_over_repeated_keys()
        },
        "no task of a live member is lost",
    );
}

/// The late joiner of the model's first counterexample, on the library itself
/// (the in-memory store, real members), with feed sequence numbers: B never had
/// #0 (key 1), holds #1 (key 2) and #2 (key 1), and must not drop #2, which no
/// master ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_keeps_a_repeated_key_in_the_library() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use failover::{Intervals, Managed, MemoryStore, Options, Outcome, Work, WorkContext};

    /// (key, occurrence); the occurrence is the feed's sequence number.
    type Task = (u32, u32);
    struct Record {
        id: &'static str,
        ran: Arc<Mutex<Vec<(String, Task)>>>,
    }
    impl Work for Record {
        type Task = Task;
        type Key = u32;
        fn key(&self, t: &Task) -> u32 {
            t.0
        }
        fn sequence(&self, t: &Task) -> Option<u64> {
            Some(u64::from(t.1))
        }
        async fn work(&self, t: &Task, _: &WorkContext) -> Outcome {
            self.ran.lock().unwrap().push((self.id.to_owned(), *t));
            Outcome::Done
        }
    }
    let ran: Arc<Mutex<Vec<(String, Task)>>> = Arc::default();
    let store = MemoryStore::new();
    let start = |id: &'static str| {
        let work = Record {
            id,
            ran: ran.clone(),
        };
        let options = Options::new()
            .in_memory(&store)
            .member_id(id)
            .intervals(Intervals {
                master: Duration::from_millis(100),
                slave: Duration::from_millis(150),
                ticking: Duration::from_millis(100),
                error: Duration::from_millis(150),
                ..Intervals::default()
            })
            .lease(Duration::from_millis(300));
        Managed::start("model-late-joiner", options, work)
    };
    let a = start("a").await.expect("a starts");
    a.member().wait_for_master().await.expect("a leads");
    // #0 (key 1) runs on A and is published with A's next renewals.
    a.submit_work((1, 0)).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // B joins late: it never had #0. It is fed #1 (key 2) and #2 (key 1, a key
    // that left every queue with #0); A's feed lags and has neither yet.
    let b = start("b").await.expect("b starts");
    b.submit_work((2, 1)).await.expect("submit");
    b.submit_work((1, 2)).await.expect("submit");
    // B checks the lease (every 150 ms) and reads A's publication of #0.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = b.queued_keys();
    let ran_2 = ran.lock().unwrap().iter().any(|(_, t)| *t == (1, 2));
    a.abort();
    b.abort();
    assert!(!ran_2, "no master was fed #2");
    assert_eq!(kept, [2, 1], "B dropped a task that no master ran");
}

#[test]
fn election_deletion_is_safe_and_live() {
    check(on_time(election_deletion()), &examples(&[SAFETY, DELETION]));
}

#[test]
fn election_empty_database_is_safe_and_live() {
    check(
        election_empty(),
        &examples(&[SAFETY, &["a crashed master replaced"], DELETION]),
    );
}

#[test]
fn election_step_down_is_safe_and_live() {
    check(
        election_step_down(),
        &examples(&[SAFETY, &["a step-down handed over"]]),
    );
}

#[test]
fn supervised_children_never_overlap() {
    check(
        supervised(),
        &examples(&[SAFETY, &["a crashed master replaced"]]),
    );
}

#[test]
fn durable_queue_is_safe() {
    check(durable(), &examples(&[SAFETY, DURABLE]));
}

#[test]
fn durable_queue_hand_over_repeats_nothing() {
    check(
        durable_hand_over(),
        &examples(&[
            SAFETY,
            &["a step-down handed over", "the durable queue finished"],
        ]),
    );
}

/// Finding 1, the old rule: a member that finds no lease takes it at once.
/// After a deletion under a master, both act until the old master's deadline.
#[test]
fn mutation_missing_lease_taken_at_once() {
    refute(
        Config {
            mutation: Some(Mutation::TakeMissing),
            ..election_deletion()
        },
        "one acting epoch per tick",
    );
}

/// Finding 1, both old rules: a missing lease is taken at once, and the newest
/// version is the highest version. After a deletion under a master, a standby
/// takes a fresh (higher) epoch at once; the old master's next renewal (a higher
/// version, a lower epoch) wins its read-back: the newest epoch goes back.
/// (The old rule of the newest alone is not caught: with vacancies and the
/// take-over's check of its predecessor, a lower epoch in a higher slot is
/// only ever a loser's leftover, and no write lands late enough in the model
/// to put a deposed master's renewal there.)
#[test]
fn mutation_old_rules_epoch_goes_back() {
    refute(
        Config {
            mutation: Some(Mutation::OldRules),
            ..election_deletion()
        },
        "epochs only grow",
    );
}

/// The design as first written: a take-over's read-back checks only that the
/// newest version is its own. Two standbys take the same expired lease; the
/// first wins; the lease is deleted; the second inserts into the freed slot,
/// with the same epoch, and wins too.
#[test]
fn mutation_take_over_without_predecessor_check() {
    refute(
        Config {
            mutation: Some(Mutation::NoPredecessorCheck),
            ..election_empty()
        },
        "one holder per epoch",
    );
}

/// The library's rule that a member takes a lease naming it at once: a
/// take-over that lost its read-back (the lease deleted under it) leaves a
/// version naming it; at its next check it takes that at once, while the
/// winner acts.
#[test]
fn mutation_own_lease_taken_at_once() {
    refute(
        Config {
            mutation: Some(Mutation::OwnLeaseAtOnce),
            ..election_deletion()
        },
        "one acting epoch per tick",
    );
}

/// Finding 2, the old supervisor: the child is killed only by the supervisor;
/// paused (SIGSTOP), it leaves its child running after its lease expired, while
/// the other supervisor's child runs.
#[test]
fn mutation_child_killed_only_by_its_supervisor() {
    refute(
        Config {
            mutation: Some(Mutation::SupervisorKillsChild),
            name: "failover run: 2 supervisors, children not leashed, 1 pause",
            faults: Faults {
                budget: 1,
                pause: true,
                ..Faults::default()
            },
            ..supervised()
        },
        "one supervised child runs at a time",
    );
}

/// The old order of the durable queue: a dead letter stored before the
/// progress write, which a newer master refuses.
#[test]
fn mutation_dead_letter_before_progress() {
    refute(
        Config {
            mutation: Some(Mutation::BuryBeforeRecord),
            ..durable()
        },
        "no dead letter from a master whose progress write is refused",
    );
}

/// Progress fenced by epoch alone: a record of the same master that lands late
/// takes the number back.
#[test]
fn mutation_progress_may_go_back() {
    refute(
        Config {
            mutation: Some(Mutation::ProgressMayGoBack),
            ..durable()
        },
        "durable progress never goes back",
    );
}
