//! Model check of the lease protocol and the managed queue (issue 13).
//!
//! The model (`tests/model/protocol.rs`) runs the election of
//! `failover/src/election.rs`, the worker of `failover/src/managed/worker.rs` and
//! the queue rule of `failover/src/managed/queue.rs` (`tests/model/queue.rs`)
//! among two or three members, a database of one or two nodes and a mongos-like
//! router, every clock with its own offset and rate error, in discrete time, and
//! `stateright` explores every interleaving breadth first. The timing rules are
//! the library's own (`failover::lease::rules`, ticks as milliseconds).
//!
//! * The protocol as implemented must satisfy every safety and liveness property
//!   in every configuration; the state counts and times are printed.
//! * Each mutation, a variant of one rule known to be wrong, must produce a
//!   counterexample; its shortest trace is printed.
//!
//! `FAILOVER_MODEL_LARGE=1` adds larger configurations (three members, more
//! faults, longer horizons) to the same tests; they take much longer.

mod model {
    pub mod protocol;
    pub mod queue;
}

use std::collections::BTreeSet;
use std::time::Instant;

use model::protocol::{ClockCfg, Config, Faults, MemberCfg, Mutation, Protocol};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

/// The lease, in ticks (milliseconds): a margin of 2.
const LEASE: u64 = 20;

fn large() -> bool {
    std::env::var("FAILOVER_MODEL_LARGE").is_ok_and(|v| v == "1")
}

fn member(clock: ClockCfg, join: u16, feed: Vec<Option<u16>>) -> MemberCfg {
    MemberCfg { clock, join, feed }
}

/// Timings in the library's proportions (lease 1.5 renewals; standbys check a bit
/// less often than the master renews), scaled to a lease of 20 ticks.
fn base(name: &'static str) -> Config {
    Config {
        name,
        members: Vec::new(),
        nodes: vec![ClockCfg::EXACT],
        mongos: ClockCfg::EXACT,
        keys: Vec::new(),
        lease: LEASE,
        master: 10,
        slave: 15,
        ticking: 10,
        error: 15,
        drift_period: 2 * LEASE,
        delays: 2,
        horizon: 60,
        faults: Faults::default(),
        mutation: None,
    }
}

/// The election alone: two members whose clocks drift apart (one slow, one
/// fast), a database of two nodes (the second's clock a margin ahead) and a
/// mongos whose clock is three margins ahead.
fn election() -> Config {
    Config {
        members: vec![
            member(ClockCfg::drifting(-1, 0), 0, vec![]),
            member(ClockCfg::drifting(1, LEASE), 0, vec![]),
        ],
        nodes: vec![ClockCfg::EXACT, ClockCfg::ahead(2)],
        mongos: ClockCfg::ahead(6),
        faults: Faults {
            budget: 2,
            lose: true,
            pause: true,
            crash: true,
            primary_change: true,
            shutdowns: 1,
        },
        ..base("election: 2 members, 2 nodes, 2 faults")
    }
}

/// Managed mode: two members fed three tasks whose keys repeat (1, 2, 1), the
/// second member a late joiner that missed the first task.
fn managed() -> Config {
    Config {
        members: vec![
            member(
                ClockCfg::drifting(-1, 0),
                0,
                vec![Some(1), Some(3), Some(9)],
            ),
            member(
                ClockCfg::drifting(1, LEASE),
                2,
                vec![None, Some(4), Some(9)],
            ),
        ],
        keys: vec![1, 2, 1],
        faults: Faults {
            budget: 1,
            lose: true,
            pause: true,
            crash: true,
            primary_change: false,
            shutdowns: 1,
        },
        ..base("managed: 2 members, late joiner, keys 1 2 1, 1 fault")
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
        "{name}: {} states ({} unique), depth {}, {:.1?}; take-over bound {} ticks, release bound {} ticks",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed(),
        model.cfg.takeover_bound(),
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

const ELECTION_EXAMPLES: &[&str] = &[
    "a master",
    "a take-over by a second epoch",
    "a crashed master replaced",
    "a released lease taken",
    "a primary change under a master",
];

#[test]
fn election_is_safe_and_live() {
    check(election(), ELECTION_EXAMPLES);
}

#[test]
fn managed_mode_is_safe_and_live() {
    check(
        managed(),
        &[
            "a master",
            "a take-over by a second epoch",
            "a crashed master replaced",
            "a released lease taken",
            "a task done",
            "a stale fenced write refused",
            "a standby pruned a task",
        ],
    );
}

#[test]
fn mutation_expiry_on_the_mongos_clock() {
    refute(
        Config {
            mutation: Some(Mutation::MongosClock),
            ..election()
        },
        "one acting epoch per tick",
    );
}

#[test]
fn mutation_no_step_down_margin() {
    refute(
        Config {
            mutation: Some(Mutation::NoMargin),
            ..election()
        },
        "one acting epoch per tick",
    );
}

#[test]
fn mutation_lease_checks_batched() {
    refute(
        Config {
            mutation: Some(Mutation::BatchedChecks(3)),
            ..managed()
        },
        "one acting epoch per tick",
    );
}

#[test]
fn mutation_release_before_the_task_stopped() {
    refute(
        Config {
            mutation: Some(Mutation::EarlyRelease),
            ..managed()
        },
        "a lease is released only after its work stopped",
    );
}

#[test]
fn mutation_pending_key_prune() {
    refute(
        Config {
            mutation: Some(Mutation::PendingKeyPrune),
            ..managed()
        },
        "no task of a live member is lost",
    );
}

#[test]
fn zz_probe() {
    let env = |k: &str, d: u64| std::env::var(k).map(|v| v.parse().unwrap()).unwrap_or(d);
    let mut cfg = Config {
        horizon: env("H", 20) as u16,
        ..election()
    };
    cfg.faults.budget = env("B", 0) as u8;
    cfg.delays = env("D", 0) as u8;
    cfg.faults.shutdowns = env("S", 0) as u8;
    let kinds = std::env::var("K").unwrap_or("lpcx".into());
    cfg.faults.lose = kinds.contains('l');
    cfg.faults.pause = kinds.contains('p');
    cfg.faults.crash = kinds.contains('c');
    cfg.faults.primary_change = kinds.contains('x');
    let label = format!("{:?} d{} s{}", cfg.faults, cfg.delays, cfg.faults.shutdowns);
    let started = Instant::now();
    let checker = Protocol { cfg }
        .checker()
        .target_state_count(env("N", 3_000_000) as usize)
        .spawn_bfs()
        .join();
    println!(
        "h={} {label}: {} states ({} unique), depth {}, {:.1?}",
        env("H", 20),
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
}
