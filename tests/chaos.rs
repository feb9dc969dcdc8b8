//! Proof under fire: six member processes (`failover-member`) work one queue
//! while the test kills, pauses, faults and stops them, two of them with wall
//! clocks skewed by ±5 s (libfaketime); then a checker reads every line the
//! members logged and proves the guarantees held.
//!
//! The test picks one action at a time, then waits for a working master (a live
//! lease renewed after the action by a running member) and a random 0.2–1.5 s:
//! SIGKILL the master and restart it 0–1 lease later; SIGSTOP the master for a
//! lease plus 0.2–0.8 s, then SIGCONT; cut the master off from the database for
//! 1–3 leases (see below: an error, a closed connection, or commands that hang
//! past the renew deadline of 0.9 lease); SIGTERM the master or another member
//! and restart it; ask the master to step down (`failover::step_down`, as an
//! operator does: a graceful hand-over). A member that is stopped is restarted
//! before the next action, so at least five of the six run at any time.
//!
//! Besides, when `FAILOVER_CHAOS_DELETE_MS` is set, an operator deletes every version of the
//! lease (`deleteMany({"_id.lease": "chaos"})` on the lease collection) at random
//! instants that have nothing to do with the other actions, `FAILOVER_CHAOS_DELETE_MS`
//! apart on average (e.g. 4000: every 1 to 7 s). The in-memory queue's record of what
//! was run lives in the lease, so there a deletion makes the next master repeat it. An
//! epoch that ends after a deletion without another cause ended `deleted`, an
//! unclean end (no hand-over).
//!
//! # Database faults, on any server
//!
//! Two ways, used where they work:
//!
//! * **Fail points** (the bundled test server, its replica set, and a
//!   `MONGODB_URI` deployment that accepts `configureFailPoint`): `failCommand` on
//!   the master's `find`, `findAndModify`, `update` and `insert`, filtered on its
//!   appName: error code 91, `closeConnection`, or `blockConnection` for 1 s.
//! * **A fault proxy per member** ([`support::proxy::FaultProxy`]; every
//!   single-server run: the bundled test server, FerretDB, a one-host
//!   `MONGODB_URI`): each member's `MONGODB_URI` names its own proxy, and the test
//!   sets the master's proxy to [`Fault::Reset`](support::proxy::Fault::Reset)
//!   for an error, [`Fault::CloseAfter`](support::proxy::Fault::CloseAfter) 0–4096
//!   bytes for a closed connection, and
//!   [`Fault::Latency`](support::proxy::Fault::Latency) of 1 s towards the server
//!   for a blocked command. The test's own client goes around the proxies.
//!
//! When both work (the bundled test server), each fault picks one of the two.
//!
//! # Tests
//!
//! * `chaos`: the bundled test server (or `MONGODB_URI`);
//!   `FAILOVER_CHAOS_SECS` sets how long the faults go on (default 45 s, for CI).
//! * `chaos_replica_set`: the test server's three-member replica set, with
//!   primary changes; `FAILOVER_CHAOS_RS_SECS` (default 30 s).
//! * `chaos_ferretdb`: FerretDB 1.24 (faults through the proxies only);
//!   `FAILOVER_CHAOS_FERRETDB_SECS` (default 30 s); it runs when
//!   `FAILOVER_TEST_SERVER` selects FerretDB, as it does by default (see
//!   `tests/support/ferretdb.rs`).
//! * `chaos_sequenced`: the bundled test server (or `MONGODB_URI`), with keys that
//!   repeat all the time (`n % 10`) and tasks numbered by their feed
//!   (`failover-member --sequenced`); `FAILOVER_CHAOS_SEQ_SECS` (default 30 s).
//! * `chaos_durable`: the bundled test server (or `MONGODB_URI`), the members on
//!   the durable queue (`failover-member --durable`, progress after every task),
//!   fed by a producer process (`failover-member --produce N`: `Queue::submit_many`
//!   in batches of 30 every 0.5 s, straight to the database, then it exits); the
//!   same actions, plus at least once a SIGKILL of every member at the same moment
//!   (at a third of the run, then with a small chance per action) and a restart of
//!   all; `FAILOVER_CHAOS_DURABLE_SECS` (default 30 s). On top of the rules below:
//!   nothing lost (every task the producer logged as stored has a `task-done`,
//!   [`check::lost`]); a task done in epochs E1 < E2 needs E1 to have ended by a
//!   kill, a pause or a fault of its holder, and each such end repeats at most one
//!   task, the one in flight ([`check::durable_repeats`]).
//! * `chaos_lagging`: the bundled test server (or `MONGODB_URI`), the in-memory
//!   queue fed as a live feed publishes (`failover-member --feed-rate`, 100 tasks
//!   a second), each member process with its own lag of 0–1.5 s, and a restarted
//!   one from the feed's current point half the time (it never sees the earlier
//!   tasks); half the actions are graceful hand-overs (SIGTERM, step-down
//!   requests). A task fed only to processes that were killed may be gone with
//!   them; instead of "every task ran", every task fed to a member still running at
//!   the end must be done ([`check::unrun`]); `FAILOVER_CHAOS_LAGGING_SECS`
//!   (default 30 s).
//!
//! `FAILOVER_CHAOS_SEED` replays a run's choices (the seed is printed). The logs
//! stay in `target/failover-runs/chaos-*` for inspection. The checker is the same
//! for every server.
//!
//! # What is checked ([`check::check`], over the parsed logs and the test's own
//! record of what it did)
//!
//! * **One holder per epoch**: every epoch has exactly one `master` line.
//! * **Epochs only grow**: for each member id (across its restarts), the epochs of
//!   its `master` lines strictly increase and those of its `master`/`slave` lines
//!   never decrease.
//! * **One master at a time**: a member is *master* from its `master` line until
//!   the first of: its line leaving master (`statechange master->…`), its `exit`,
//!   its SIGKILL, or its SIGSTOP when the pause lasted at least a lease (a stopped
//!   process cannot act, and when it resumes its lease has run out; that it then
//!   starts nothing is the next rule). Two such intervals of different epochs may
//!   overlap by at most the step-down margin (a tenth of the lease): by the
//!   protocol the old master stops at least that margin before a new one may
//!   start, so a logged overlap can only come from the lag between an event and
//!   its log line.
//! * **No task after a newer master**: no `task-start` of epoch E is stamped after
//!   the first `master` line of any epoch above E (a member stamps a task before
//!   checking its lease, so the stamp is an instant at which it held the lease),
//!   and every `task-start` of E comes from E's holder.
//! * **Every task ran**: a `task-done` for every task `0..N` (lagging feeds:
//!   every task a member alive at the end was fed).
//! * **Duplicates only after an unclean end**: if a task is done in epochs
//!   E1 < E2 (consecutive in the list of epochs that did it), E1 was not
//!   released: its holder never logged `released the lease of epoch E1`, i.e. it
//!   was killed, paused, cut off or its lease deleted. So a graceful hand-over
//!   (SIGTERM or a step-down request, which release the lease) repeats nothing.
//!   A task is never done twice in one epoch.
//! * **No panic** line anywhere.
//! * **Clean ends**: every member process that was not SIGKILLed logged `exit`
//!   with `final=stopped`. Those stopped at the end of the run (after the faults
//!   stopped and the queue was drained) were in `master` or `slave` when the
//!   signal came (`at_signal`), exactly one of them `master`. One stopped mid-run
//!   may have been in any state (it may have been faulted a moment before), but
//!   if it was master it released its epoch (a graceful stop hands over).
//! * **The clocks really were skewed**: each `start` line's `wall_ms` is the
//!   member's wall clock; against the test's wall clock at the same monotonic
//!   instant it is off by the skew given to that member (±1 s).
//!
//! The test itself adds the liveness failures it saw: no working master within a
//! bound after a disruption ended, a graceful stop that did not exit with status
//! 0 in time, a queue not drained at the end.

mod members;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use members::{Line, Proc, Rng, Spec, Tail, Timings};
use mongodb::bson::{doc, Bson, Document};
use support::proxy::{Fault as ProxyFault, FaultProxy};
use support::Server;

/// The chaos run's timings: a 500 ms lease keeps failovers quick.
const TIMINGS: Timings = members::SHORT_TIMINGS;
/// How long each task takes.
const TASK_MS: u64 = 5;
/// Tasks per second of the run: a master does about 160 of these 5 ms tasks a
/// second here; under chaos some 140 runs a second, of which about 120 are new
/// tasks (the rest repeat the work lost in crashes), so the queue lasts about the
/// whole run and what is left is drained at the end.
const TASKS_PER_SEC: u64 = 130;
/// The members, and the wall-clock skew each runs with (libfaketime), in ms.
const MEMBERS: [(&str, i64); 6] = [
    ("m0", 0),
    ("m1", 0),
    ("m2", 0),
    ("m3", 5000),
    ("m4", -5000),
    ("m5", 0),
];
/// The member whose work blocks its thread (`failover-member --blocking`).
const BLOCKING: &str = "m5";
/// The member that reads the server's clock through a "mongos" whose `hello`
/// clock runs ahead of the node that stamps the lease by more than a lease (the
/// test server offsets `localTime` for its connections). The protocol must not
/// care: it judges expiry on the stamping node's clock.
const MONGOS: &str = "m1";
/// How far a member's logged wall clock may be from its intended skew.
const SKEW_TOLERANCE_MS: i64 = 1000;

/// The checker: a pure function of the members' log lines and the test's
/// record of its actions.
mod check {
    use std::collections::{BTreeMap, HashMap};

    use super::members::Line;

    /// A fault injected on the database side.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Fault {
        /// Commands fail with an error code.
        Error,
        /// The server closes the connection.
        Close,
        /// Commands hang past the renew deadline.
        Block,
    }

    impl Fault {
        pub fn name(self) -> &'static str {
            match self {
                Fault::Error => "error",
                Fault::Close => "close",
                Fault::Block => "block",
            }
        }
    }

    /// What the test did, to which process.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Start,
        Kill,
        Stop,
        Cont,
        /// SIGTERM in the middle of the run (then restarted).
        Term,
        /// SIGTERM at the end of the run.
        FinalTerm,
        FaultOn(Fault),
        FaultOff,
        /// An operator deleted every version of the lease (member `-`, pid 0).
        Delete,
        /// An operator asked the master to step down (`failover::step_down`).
        StepDown,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Action {
        /// CLOCK_MONOTONIC, ns.
        pub t: u64,
        pub kind: Kind,
        pub member: String,
        pub pid: u32,
    }

    #[derive(Debug, Clone)]
    pub struct Params {
        /// Tasks `0..tasks` must all be done.
        pub tasks: u64,
        pub lease_ns: u64,
        /// The step-down margin: the overlap allowed between logged masterships.
        pub margin_ns: u64,
        /// The wall-clock skew of each member, ms.
        pub skew_ms: HashMap<String, i64>,
        pub skew_tolerance_ms: i64,
        /// A reading of the test's clocks: (CLOCK_MONOTONIC ns, wall clock ms).
        pub clock_ref: (u64, i64),
    }

    #[derive(Debug, Default)]
    pub struct Report {
        pub violations: Vec<String>,
        pub lines: usize,
        pub epochs: usize,
        pub keys_done: usize,
        pub task_runs: usize,
        /// Keys done in more than one epoch.
        pub duplicates: usize,
        /// How each epoch but the last ended: released, killed, paused, faulted,
        /// terminated (SIGTERM without a release), deleted (the lease deleted by
        /// the operator) or lost (stepped down with no disruption from the test,
        /// e.g. a renewal late on a loaded machine).
        pub epoch_ends: BTreeMap<&'static str, usize>,
        /// Epochs held by each member.
        pub held: BTreeMap<String, usize>,
        /// How each epoch but the last ended, by epoch (the causes above).
        pub ends: BTreeMap<u64, &'static str>,
    }

    /// A member process: (member id, instance number).
    type Instance = (String, u32);

    fn released_epoch(line: &Line) -> Option<u64> {
        (line.event == "info")
            .then(|| line.detail.strip_prefix("released the lease of epoch "))
            .flatten()
            .and_then(|n| n.trim().parse().ok())
    }

    /// Checks the guarantees (see the file's documentation). `lines` in the order
    /// each member wrote them (files concatenated is fine); `actions` in order.
    pub fn check(lines: &[Line], actions: &[Action], params: &Params) -> Report {
        let mut r = Report {
            lines: lines.len(),
            ..Report::default()
        };
        let mut v = Vec::new();

        // Processes: start lines name their pid.
        let mut pid_of: HashMap<Instance, u32> = HashMap::new();
        let mut instance_of: HashMap<u32, Instance> = HashMap::new();
        for l in lines.iter().filter(|l| l.event == "start") {
            let inst = (l.member.clone(), l.instance);
            if let Some(pid) = l.field("pid").and_then(|p| p.parse().ok()) {
                pid_of.insert(inst.clone(), pid);
                instance_of.insert(pid, inst);
            } else {
                v.push(format!("start line without pid: {l:?}"));
            }
        }
        let acts_on = |inst: &Instance, kind: fn(&Kind) -> bool| -> Vec<&Action> {
            let pid = pid_of.get(inst);
            actions
                .iter()
                .filter(|a| Some(&a.pid) == pid && kind(&a.kind))
                .collect()
        };

        // Panics.
        for l in lines.iter().filter(|l| l.event == "panic") {
            v.push(format!("{} panicked: {}", l.member, l.detail));
        }

        // One holder per epoch.
        let mut holders: BTreeMap<u64, Vec<&Line>> = BTreeMap::new();
        for l in lines.iter().filter(|l| l.event == "master") {
            match l.epoch {
                Some(e) => holders.entry(e).or_default().push(l),
                None => v.push(format!("master line without epoch: {l:?}")),
            }
        }
        for (e, ls) in &holders {
            if ls.len() != 1 {
                let who: Vec<_> = ls
                    .iter()
                    .map(|l| format!("{}#{}", l.member, l.instance))
                    .collect();
                v.push(format!("epoch {e} has {} holders: {who:?}", ls.len()));
            }
        }
        r.epochs = holders.len();
        for ls in holders.values() {
            *r.held.entry(ls[0].member.clone()).or_default() += 1;
        }
        let holder = |e: u64| holders.get(&e).map(|ls| ls[0]);

        // Epochs only grow, per member.
        let mut by_member: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
        for l in lines {
            by_member.entry(&l.member).or_default().push(l);
        }
        for (m, ls) in &by_member {
            let (mut last_master, mut last_seen) = (0, 0);
            for l in ls {
                let Some(e) = l.epoch else { continue };
                if l.event == "master" {
                    if e <= last_master {
                        v.push(format!(
                            "{m}: master of epoch {e} after master of epoch {last_master}"
                        ));
                    }
                    last_master = last_master.max(e);
                }
                if l.event == "master" || l.event == "slave" {
                    if e < last_seen {
                        v.push(format!(
                            "{m}: {} of epoch {e} after epoch {last_seen}",
                            l.event
                        ));
                    }
                    last_seen = last_seen.max(e);
                }
            }
        }

        // Released epochs.
        let mut released: HashMap<u64, Instance> = HashMap::new();
        for l in lines {
            if let Some(e) = released_epoch(l) {
                released.insert(e, (l.member.clone(), l.instance));
            }
        }
        for (e, inst) in &released {
            if holder(*e).map(|h| (h.member.clone(), h.instance)) != Some(inst.clone()) {
                v.push(format!(
                    "{}#{} released epoch {e} it did not hold",
                    inst.0, inst.1
                ));
            }
        }

        // Masterships as intervals, and how each epoch ended.
        let last_t = lines.iter().map(|l| l.t).max().unwrap_or(0);
        let mut intervals: Vec<(u64, u64, u64, &str)> = Vec::new(); // (start, end, epoch, member)
        let epochs: Vec<u64> = holders.keys().copied().collect();
        for (i, &e) in epochs.iter().enumerate() {
            let h = holder(e).unwrap();
            let inst = (h.member.clone(), h.instance);
            let mut end = u64::MAX;
            if let Some(l) = ls_of(&by_member, &h.member).iter().find(|l| {
                l.instance == h.instance
                    && l.t >= h.t
                    && ((l.event == "statechange" && l.detail.starts_with("master->"))
                        || l.event == "exit")
            }) {
                end = l.t;
            }
            for a in acts_on(&inst, |k| matches!(k, Kind::Kill)) {
                if a.t >= h.t {
                    end = end.min(a.t);
                }
            }
            let stops = acts_on(&inst, |k| matches!(k, Kind::Stop));
            let conts = acts_on(&inst, |k| matches!(k, Kind::Cont));
            let before_end = end;
            for s in stops.iter().filter(|s| s.t >= h.t && s.t < before_end) {
                let resumed = conts.iter().map(|c| c.t).find(|&t| t >= s.t);
                if resumed.is_none_or(|c| c - s.t >= params.lease_ns) {
                    end = end.min(s.t);
                }
            }
            intervals.push((h.t, end, e, &h.member));

            // How it ended (all epochs but the newest).
            if i + 1 < epochs.len() {
                let next_t = holder(epochs[i + 1]).unwrap().t;
                let cause = if released.contains_key(&e) {
                    "released"
                } else {
                    let pid = pid_of.get(&inst).copied();
                    actions
                        .iter()
                        .filter(|a| a.t >= h.t && a.t <= next_t.max(end.min(last_t)))
                        .find_map(|a| match a.kind {
                            Kind::Kill if Some(a.pid) == pid => Some("killed"),
                            Kind::Stop if Some(a.pid) == pid => Some("paused"),
                            Kind::FaultOn(_) if a.member == h.member => Some("faulted"),
                            Kind::Term | Kind::FinalTerm if Some(a.pid) == pid => {
                                Some("terminated")
                            }
                            Kind::Delete => Some("deleted"),
                            _ => None,
                        })
                        .unwrap_or("lost")
                };
                *r.epoch_ends.entry(cause).or_default() += 1;
                r.ends.insert(e, cause);
            }
        }
        intervals.sort();
        for (i, a) in intervals.iter().enumerate() {
            for b in &intervals[i + 1..] {
                if b.0 >= a.1 {
                    break;
                }
                let overlap = a.1.min(b.1) - b.0;
                if overlap > params.margin_ns {
                    v.push(format!(
                        "{} (epoch {}) and {} (epoch {}) were both master for {:.1} ms, more than the {:.1} ms margin",
                        a.3,
                        a.2,
                        b.3,
                        b.2,
                        overlap as f64 / 1e6,
                        params.margin_ns as f64 / 1e6
                    ));
                }
            }
        }

        // No task-start after a newer master; only by the holder.
        let mut first_after: BTreeMap<u64, u64> = BTreeMap::new(); // epoch -> first master line of a higher epoch
        let mut min_t = u64::MAX;
        for (&e, ls) in holders.iter().rev() {
            first_after.insert(e, min_t);
            min_t = min_t.min(ls.iter().map(|l| l.t).min().unwrap());
        }
        for l in lines.iter().filter(|l| l.event == "task-start") {
            let Some(e) = l.epoch else {
                v.push(format!("task-start without epoch: {l:?}"));
                continue;
            };
            match holder(e) {
                Some(h) if h.member == l.member && h.instance == l.instance => {}
                _ => v.push(format!(
                    "{}#{} started task {:?} under epoch {e}, which it did not hold",
                    l.member, l.instance, l.key
                )),
            }
            let newer = first_after.get(&e).copied().unwrap_or(u64::MAX);
            if l.t > newer {
                v.push(format!(
                    "{} started task {:?} of epoch {e} {:.1} ms after a newer master took over",
                    l.member,
                    l.key,
                    (l.t - newer) as f64 / 1e6
                ));
            }
        }

        // Every task done; duplicates only after an unreleased epoch.
        let mut done: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for l in lines.iter().filter(|l| l.event == "task-done") {
            match (l.key_num(), l.epoch) {
                (Some(k), Some(e)) => done.entry(k).or_default().push(e),
                _ => v.push(format!("task-done without key or epoch: {l:?}")),
            }
            r.task_runs += 1;
        }
        let missing: Vec<u64> = (0..params.tasks)
            .filter(|k| !done.contains_key(k))
            .collect();
        if !missing.is_empty() {
            v.push(format!(
                "{} of {} tasks never done, the first: {:?}",
                missing.len(),
                params.tasks,
                &missing[..missing.len().min(10)]
            ));
        }
        r.keys_done = done.len();
        for (k, es) in &mut done {
            let n = es.len();
            es.sort_unstable();
            es.dedup();
            if es.len() != n {
                v.push(format!("task {k} done more than once in one epoch: {es:?}"));
            }
            if es.len() > 1 {
                r.duplicates += 1;
            }
            for w in es.windows(2) {
                if released.contains_key(&w[0]) {
                    v.push(format!(
                        "task {k} done in epoch {}, which was released gracefully, and again in epoch {}",
                        w[0], w[1]
                    ));
                }
            }
        }

        // Clean ends.
        let mut final_masters = 0;
        let mut instances: Vec<Instance> = pid_of.keys().cloned().collect();
        instances.sort();
        for inst in &instances {
            let killed = !acts_on(inst, |k| matches!(k, Kind::Kill)).is_empty();
            if killed {
                continue;
            }
            let name = format!("{}#{}", inst.0, inst.1);
            let exit = ls_of(&by_member, &inst.0)
                .iter()
                .find(|l| l.instance == inst.1 && l.event == "exit")
                .copied();
            let Some(exit) = exit else {
                v.push(format!("{name} was not killed but logged no exit"));
                continue;
            };
            if exit.field("final") != Some("stopped") {
                v.push(format!("{name} exited in state {:?}", exit.field("final")));
            }
            let at_signal = exit.field("at_signal").unwrap_or("");
            if !acts_on(inst, |k| matches!(k, Kind::FinalTerm)).is_empty() {
                if at_signal == "master" {
                    final_masters += 1;
                } else if at_signal != "slave" {
                    v.push(format!(
                        "{name} was {at_signal:?} when stopped at the end, not master or slave"
                    ));
                }
            } else if acts_on(inst, |k| matches!(k, Kind::Term)).is_empty() {
                v.push(format!("{name} exited by itself: {}", exit.detail));
            }
            if at_signal == "master" {
                if let Some(e) = exit.epoch {
                    if released.get(&e) != Some(inst) {
                        v.push(format!(
                            "{name} was stopped gracefully as master of epoch {e} but did not release it"
                        ));
                    }
                }
            }
        }
        let stopped_at_end = actions.iter().filter(|a| a.kind == Kind::FinalTerm).count();
        if stopped_at_end > 0 && final_masters != 1 {
            v.push(format!(
                "{final_masters} members were master when the run ended, not exactly one"
            ));
        }

        // The clocks were skewed as intended.
        let (mono0, wall0) = params.clock_ref;
        for l in lines.iter().filter(|l| l.event == "start") {
            let Some(wall) = l.field("wall_ms").and_then(|w| w.parse::<i64>().ok()) else {
                v.push(format!("start line without wall_ms: {l:?}"));
                continue;
            };
            let true_wall = wall0 + (l.t as i64 - mono0 as i64) / 1_000_000;
            let skew = wall - true_wall;
            let want = params.skew_ms.get(&l.member).copied().unwrap_or(0);
            if (skew - want).abs() > params.skew_tolerance_ms {
                v.push(format!(
                    "{}#{}'s wall clock was {skew} ms off, not {want} ms (is libfaketime working?)",
                    l.member, l.instance
                ));
            }
        }

        r.violations = v;
        r
    }

    /// Durable queue: the tasks the producer logged as stored
    /// (`submitted - - <first>-<last>`, one line per `submit_many` that returned).
    pub fn submitted(producer: &[Line]) -> Vec<u64> {
        let mut tasks = Vec::new();
        for l in producer.iter().filter(|l| l.event == "submitted") {
            if let Some((a, b)) = l.detail.split_once('-') {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                    tasks.extend(a..=b);
                }
            }
        }
        tasks
    }

    /// Durable queue, nothing lost: every task whose submit returned has a
    /// `task-done` line.
    pub fn lost(submitted: &[u64], lines: &[Line]) -> Vec<String> {
        let done: std::collections::HashSet<u64> = lines
            .iter()
            .filter(|l| l.event == "task-done")
            .filter_map(Line::key_num)
            .collect();
        let lost: Vec<u64> = submitted
            .iter()
            .copied()
            .filter(|k| !done.contains(k))
            .collect();
        if lost.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "{} of {} submitted tasks lost (never done), the first: {:?}",
            lost.len(),
            submitted.len(),
            &lost[..lost.len().min(10)]
        )]
    }

    /// Durable queue, repeats: a task done in epochs E1 < E2 (consecutive among
    /// the epochs that did it) needs E1 to have ended uncleanly: by a kill, a pause
    /// or a fault of its holder, a deletion of the lease, or lost (the holder stopped renewing in time
    /// without a fault of the test's: the database failed or was slow on a loaded
    /// machine), never by a graceful release or SIGTERM (`ends`, from [`check`]'s
    /// [`Report::ends`]); and with per-task progress each such end repeats at most
    /// one task (the one in flight). Returns the violations and the number of
    /// repeated runs.
    pub fn durable_repeats(
        lines: &[Line],
        ends: &BTreeMap<u64, &'static str>,
    ) -> (Vec<String>, usize) {
        let mut v = Vec::new();
        let mut done: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for l in lines.iter().filter(|l| l.event == "task-done") {
            if let (Some(k), Some(e)) = (l.key_num(), l.epoch) {
                done.entry(k).or_default().push(e);
            }
        }
        let mut repeated_after: BTreeMap<u64, Vec<u64>> = BTreeMap::new(); // E1 -> tasks
        for (k, es) in &mut done {
            es.sort_unstable();
            es.dedup();
            for w in es.windows(2) {
                let cause = ends.get(&w[0]).copied().unwrap_or("not ended");
                if !matches!(cause, "killed" | "paused" | "faulted" | "deleted" | "lost") {
                    v.push(format!(
                        "task {k} done in epoch {} and again in epoch {}, but epoch {} ended {cause}, not by a kill, pause, fault, deletion or lost lease",
                        w[0], w[1], w[0]
                    ));
                }
                repeated_after.entry(w[0]).or_default().push(*k);
            }
        }
        let mut repeats = 0;
        for (e, ks) in &repeated_after {
            repeats += ks.len();
            if ks.len() > 1 {
                v.push(format!(
                    "epoch {e} ended {} and {} of its tasks were done again: {:?}, more than the one in flight",
                    ends.get(e).copied().unwrap_or("?"),
                    ks.len(),
                    &ks[..ks.len().min(10)]
                ));
            }
        }
        (v, repeats)
    }

    /// Lagging feeds, every task a live member holds is run at last: each task
    /// fed (`fed` lines) to a member process that was still running at the end
    /// (stopped by [`Kind::FinalTerm`]) has a `task-done` line of some member.
    /// Returns the violations and how many distinct tasks were so required.
    pub fn unrun(lines: &[Line], actions: &[Action]) -> (Vec<String>, usize) {
        let done: std::collections::HashSet<u64> = lines
            .iter()
            .filter(|l| l.event == "task-done")
            .filter_map(Line::key_num)
            .collect();
        let final_pids: std::collections::HashSet<u32> = actions
            .iter()
            .filter(|a| a.kind == Kind::FinalTerm)
            .map(|a| a.pid)
            .collect();
        let mut pid_of: HashMap<(String, u32), u32> = HashMap::new();
        for l in lines.iter().filter(|l| l.event == "start") {
            if let Some(pid) = l.field("pid").and_then(|p| p.parse().ok()) {
                pid_of.insert((l.member.clone(), l.instance), pid);
            }
        }
        let mut v = Vec::new();
        let mut required = std::collections::BTreeSet::new();
        let mut unrun: BTreeMap<(String, u32), Vec<u64>> = BTreeMap::new();
        for l in lines.iter().filter(|l| l.event == "fed") {
            let inst = (l.member.clone(), l.instance);
            if !pid_of.get(&inst).is_some_and(|p| final_pids.contains(p)) {
                continue;
            }
            let Some((a, b)) = l.detail.split_once('-') else {
                v.push(format!("fed line without a range: {l:?}"));
                continue;
            };
            let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) else {
                v.push(format!("fed line without a range: {l:?}"));
                continue;
            };
            for k in a..=b {
                required.insert(k);
                if !done.contains(&k) {
                    unrun.entry(inst.clone()).or_default().push(k);
                }
            }
        }
        for ((m, i), ks) in unrun {
            v.push(format!(
                "{m}#{i} was running at the end and held {} tasks never done, the first: {:?}",
                ks.len(),
                &ks[..ks.len().min(10)]
            ));
        }
        (v, required.len())
    }

    fn ls_of<'a>(by_member: &BTreeMap<&str, Vec<&'a Line>>, member: &str) -> Vec<&'a Line> {
        by_member.get(member).cloned().unwrap_or_default()
    }

    #[cfg(test)]
    mod tests {
        use super::super::members::parse_log;
        use super::*;

        const MS: u64 = 1_000_000;

        fn params(tasks: u64) -> Params {
            Params {
                tasks,
                lease_ns: 500 * MS,
                margin_ns: 50 * MS,
                skew_ms: HashMap::from([("c".to_owned(), 5000)]),
                skew_tolerance_ms: 1000,
                clock_ref: (0, 1_000_000),
            }
        }

        fn act(t_ms: u64, kind: Kind, member: &str, pid: u32) -> Action {
            Action {
                t: t_ms * MS,
                kind,
                member: member.to_owned(),
                pid,
            }
        }

        /// Log lines from `<t_ms> <rest>`.
        fn log(text: &str) -> Vec<Line> {
            let lines: String = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (t, rest) = l.split_once(' ').unwrap();
                    format!("{} {rest}\n", t.parse::<u64>().unwrap() * MS)
                })
                .collect();
            parse_log(&lines)
        }

        /// a is master of epoch 1 and does tasks 0..=2 but publishes only 0; it is
        /// killed; b takes over (epoch 2), redoes 1 and 2, does 3, and is stopped
        /// gracefully; c (skewed +5 s) takes over (epoch 3), does 4; a is
        /// restarted and follows; the end stops everybody.
        const CLEAN: &str = "
            0 a start - - pid=10 wall_ms=1000000 tasks=5
            1 b start - - pid=20 wall_ms=1000001 tasks=5
            2 c start - - pid=30 wall_ms=1005002 tasks=5
            10 a statechange - - init->ticking
            11 a statechange 1 - ticking->master
            11 a master 1 -
            12 b statechange - - init->slave
            12 b slave 1 -
            13 c slave 1 -
            20 a task-start 1 0 attempt=1
            26 a task-done 1 0
            27 a task-start 1 1 attempt=1
            33 a task-done 1 1
            34 a task-start 1 2 attempt=1
            40 a task-done 1 2
            700 b statechange - - slave->ticking
            701 b master 2 -
            702 b task-start 2 1 attempt=1
            708 b task-done 2 1
            709 b task-start 2 2 attempt=1
            715 b task-done 2 2
            716 b task-start 2 3 attempt=1
            722 b task-done 2 3
            750 c slave 2 -
            900 a start - - pid=11 wall_ms=1000900 tasks=5
            905 a slave 2 -
            1000 b info - - released the lease of epoch 2
            1000 b statechange - - master->stopped
            1001 b exit 2 - final=stopped at_signal=master signal=TERM
            1100 c master 3 -
            1101 c task-start 3 4 attempt=1
            1107 c task-done 3 4
            1200 b start - - pid=21 wall_ms=1001200 tasks=5
            1201 b slave 3 -
            2000 a statechange - - slave->stopped
            2001 a exit - - final=stopped at_signal=slave signal=TERM
            2002 b exit - - final=stopped at_signal=slave signal=TERM
            2010 c info - - released the lease of epoch 3
            2011 c exit 3 - final=stopped at_signal=master signal=TERM
        ";

        fn clean_actions() -> Vec<Action> {
            vec![
                act(0, Kind::Start, "a", 10),
                act(1, Kind::Start, "b", 20),
                act(2, Kind::Start, "c", 30),
                act(200, Kind::Kill, "a", 10),
                act(900, Kind::Start, "a", 11),
                act(999, Kind::Term, "b", 20),
                act(1200, Kind::Start, "b", 21),
                act(2000, Kind::FinalTerm, "a", 11),
                act(2000, Kind::FinalTerm, "b", 21),
                act(2005, Kind::FinalTerm, "c", 30),
            ]
        }

        fn violations(text: &str, actions: &[Action], tasks: u64) -> Vec<String> {
            check(&log(text), actions, &params(tasks)).violations
        }

        fn assert_caught(text: &str, actions: &[Action], what: &str) {
            let v = violations(text, actions, 5);
            assert!(
                v.iter().any(|s| s.contains(what)),
                "expected a violation containing {what:?}, got {v:#?}"
            );
        }

        #[test]
        fn a_clean_run_passes_and_is_counted() {
            let r = check(&log(CLEAN), &clean_actions(), &params(5));
            assert!(r.violations.is_empty(), "{:#?}", r.violations);
            assert_eq!(
                (r.epochs, r.keys_done, r.task_runs, r.duplicates),
                (3, 5, 7, 2)
            );
            assert_eq!(r.epoch_ends.get("killed"), Some(&1));
            assert_eq!(r.epoch_ends.get("released"), Some(&1));
        }

        #[test]
        fn two_holders_of_one_epoch_are_caught() {
            let text = CLEAN.replace("701 b master 2 -", "701 b master 1 -");
            assert_caught(&text, &clean_actions(), "epoch 1 has 2 holders");
        }

        #[test]
        fn a_shrinking_epoch_is_caught() {
            let text = format!("{CLEAN}\n1202 b slave 2 -");
            assert_caught(&text, &clean_actions(), "b: slave of epoch 2 after epoch 3");
        }

        #[test]
        fn a_task_started_after_a_newer_master_is_caught() {
            // a, paused at 200 ms instead of killed, wakes at 800 and starts task 3.
            let text = CLEAN.replace(
                "700 b statechange - - slave->ticking",
                "800 a task-start 1 3 attempt=1\n 801 a statechange - - master->error",
            );
            let mut actions = clean_actions();
            actions[3] = act(200, Kind::Stop, "a", 10);
            actions.insert(4, act(790, Kind::Cont, "a", 10));
            assert_caught(&text, &actions, "after a newer master took over");
        }

        #[test]
        fn overlapping_masters_are_caught() {
            // a is never killed and only steps down at 900 ms, after b took over at 701.
            let text = CLEAN.replace(
                "900 a start",
                "900 a statechange - - master->slave\n 900 a start",
            );
            let actions: Vec<_> = clean_actions()
                .into_iter()
                .filter(|a| a.kind != Kind::Kill)
                .collect();
            assert_caught(&text, &actions, "were both master for 199.0 ms");
        }

        #[test]
        fn a_pause_shorter_than_the_lease_does_not_end_a_mastership() {
            let text = CLEAN.replace(
                "900 a start",
                "900 a statechange - - master->slave\n 900 a start",
            );
            let mut actions = clean_actions();
            actions[3] = act(200, Kind::Stop, "a", 10);
            actions.insert(4, act(600, Kind::Cont, "a", 10));
            assert_caught(&text, &actions, "were both master");
            actions[4] = act(700, Kind::Cont, "a", 10);
            let v = violations(&text, &actions, 5);
            assert!(!v.iter().any(|s| s.contains("both master")), "{v:#?}");
        }

        #[test]
        fn a_task_missing_from_the_end_is_caught() {
            let v = violations(CLEAN, &clean_actions(), 6);
            assert!(
                v.iter()
                    .any(|s| s.contains("1 of 6 tasks never done, the first: [5]")),
                "{v:#?}"
            );
        }

        #[test]
        fn a_repeat_after_a_graceful_release_is_caught() {
            // c redoes task 3, which b did in epoch 2 and then released.
            let text = CLEAN.replace(
                "1101 c task-start 3 4 attempt=1",
                "1101 c task-start 3 3 attempt=1\n 1102 c task-done 3 3\n 1103 c task-start 3 4 attempt=1",
            );
            assert_caught(
                &text,
                &clean_actions(),
                "task 3 done in epoch 2, which was released gracefully, and again in epoch 3",
            );
        }

        #[test]
        fn a_repeat_in_one_epoch_is_caught() {
            let text = format!("{CLEAN}\n 1108 c task-done 3 4");
            assert_caught(&text, &clean_actions(), "more than once in one epoch");
        }

        #[test]
        fn a_panic_is_caught() {
            let text = format!("{CLEAN}\n 1500 b panic - - work panicked on task 7");
            assert_caught(&text, &clean_actions(), "b panicked");
        }

        #[test]
        fn unclean_ends_are_caught() {
            // b's second process never logs exit.
            let text = CLEAN.replace(
                "2002 b exit - - final=stopped at_signal=slave signal=TERM",
                "",
            );
            assert_caught(
                &text,
                &clean_actions(),
                "b#1 was not killed but logged no exit",
            );
            // a is in error when the run ends.
            let text = CLEAN.replace(
                "2001 a exit - - final=stopped at_signal=slave",
                "2001 a exit - - final=stopped at_signal=error",
            );
            assert_caught(
                &text,
                &clean_actions(),
                "a#1 was \"error\" when stopped at the end",
            );
            // b stopped as master without releasing.
            let text = CLEAN.replace("1000 b info - - released the lease of epoch 2", "");
            assert_caught(&text, &clean_actions(), "did not release it");
        }

        /// The producer's log of a durable run: tasks 0..=4 in two batches.
        const PRODUCED: &str = "
            0 p start - - pid=90 wall_ms=1000000 tasks=0
            1 p submitted - - 0-2
            2 p submitted - - 3-4
            3 p exit - - submitted=5
        ";

        #[test]
        fn submitted_tasks_are_read_from_the_producer_log() {
            assert_eq!(submitted(&log(PRODUCED)), vec![0, 1, 2, 3, 4]);
        }

        #[test]
        fn a_lost_durable_task_is_caught() {
            let tasks = submitted(&log(PRODUCED));
            assert!(lost(&tasks, &log(CLEAN)).is_empty());
            let text = CLEAN.replace("1107 c task-done 3 4", "");
            let v = lost(&tasks, &log(&text));
            assert!(
                v.iter()
                    .any(|s| s.contains("1 of 5 submitted tasks lost (never done), the first: [4]")),
                "{v:#?}"
            );
        }

        /// CLEAN as a durable run: a was killed after doing 1 (recorded) and 2 (not
        /// recorded); b redoes only 2.
        fn durable_clean() -> String {
            CLEAN.replace(
                "702 b task-start 2 1 attempt=1\n            708 b task-done 2 1\n",
                "",
            )
        }

        #[test]
        fn a_durable_repeat_after_a_kill_passes() {
            let lines = log(&durable_clean());
            let r = check(&lines, &clean_actions(), &params(5));
            assert!(r.violations.is_empty(), "{:#?}", r.violations);
            assert_eq!(r.ends.get(&1), Some(&"killed"));
            let (v, repeats) = durable_repeats(&lines, &r.ends);
            assert!(v.is_empty(), "{v:#?}");
            assert_eq!(repeats, 1);
        }

        #[test]
        fn two_durable_repeats_after_one_kill_are_caught() {
            let lines = log(CLEAN); // b redoes 1 and 2
            let r = check(&lines, &clean_actions(), &params(5));
            let (v, repeats) = durable_repeats(&lines, &r.ends);
            assert_eq!(repeats, 2);
            assert!(
                v.iter().any(|s| s.contains(
                    "epoch 1 ended killed and 2 of its tasks were done again: [1, 2], more than the one in flight"
                )),
                "{v:#?}"
            );
        }

        #[test]
        fn a_durable_repeat_after_a_graceful_end_is_caught() {
            // a was not killed: its epoch was lost (it stopped renewing in time, as
            // on a failing database): one repeat is allowed, as after a kill.
            let lines = log(&durable_clean());
            let actions: Vec<_> = clean_actions()
                .into_iter()
                .filter(|a| a.kind != Kind::Kill)
                .collect();
            let r = check(&lines, &actions, &params(5));
            assert_eq!(r.ends.get(&1), Some(&"lost"));
            let (v, repeats) = durable_repeats(&lines, &r.ends);
            assert_eq!(repeats, 1);
            assert!(
                !v.iter().any(|s| s.contains("task 2 done in epoch 1")),
                "{v:#?}"
            );
            // And after a graceful release (c redoes 3 after b released epoch 2).
            let text = durable_clean().replace(
                "1101 c task-start 3 4 attempt=1",
                "1101 c task-start 3 3 attempt=1\n 1102 c task-done 3 3\n 1103 c task-start 3 4 attempt=1",
            );
            let lines = log(&text);
            let r = check(&lines, &clean_actions(), &params(5));
            let (v, _) = durable_repeats(&lines, &r.ends);
            assert!(
                v.iter().any(|s| s.contains("but epoch 2 ended released")),
                "{v:#?}"
            );
        }

        #[test]
        fn a_repeat_after_a_lease_deletion_is_unclean_and_counted_once() {
            // a is not killed: the operator deleted the lease while a held it.
            let lines = log(&durable_clean());
            let mut actions: Vec<_> = clean_actions()
                .into_iter()
                .filter(|a| a.kind != Kind::Kill)
                .collect();
            actions.insert(3, act(300, Kind::Delete, "-", 0));
            let r = check(&lines, &actions, &params(5));
            assert_eq!(r.ends.get(&1), Some(&"deleted"));
            let (v, repeats) = durable_repeats(&lines, &r.ends);
            assert!(v.is_empty(), "{v:#?}");
            assert_eq!(repeats, 1);
            // Two repeats after one deletion are still too many.
            let lines = log(CLEAN);
            let r = check(&lines, &actions, &params(5));
            let (v, _) = durable_repeats(&lines, &r.ends);
            assert!(
                v.iter()
                    .any(|s| s.contains("epoch 1 ended deleted and 2 of its tasks")),
                "{v:#?}"
            );
        }

        #[test]
        fn a_task_fed_to_a_member_alive_at_the_end_must_be_done() {
            // b#1 (alive at the end) was fed 3..=5; 5 was never done. a#0 was fed
            // 0..=9 but was killed: its tasks are not required.
            let text = format!("{CLEAN}\n 1202 b fed - - 3-5")
                .replace("700 b statechange", "150 a fed - - 0-9\n 700 b statechange");
            let lines = log(&text);
            let (v, required) = unrun(&lines, &clean_actions());
            assert_eq!(required, 3);
            assert_eq!(
                v,
                vec![
                    "b#1 was running at the end and held 1 tasks never done, the first: [5]"
                        .to_owned()
                ]
            );
            let text = format!("{CLEAN}\n 1202 b fed - - 3-4");
            let (v, required) = unrun(&log(&text), &clean_actions());
            assert!(v.is_empty(), "{v:#?}");
            assert_eq!(required, 2);
        }

        #[test]
        fn an_unskewed_clock_is_caught() {
            let text = CLEAN.replace("pid=30 wall_ms=1005002", "pid=30 wall_ms=1000002");
            assert_caught(
                &text,
                &clean_actions(),
                "c#0's wall clock was 0 ms off, not 5000 ms",
            );
        }
    }
}

/// Which chaos run: the queue the members work and how they are fed.
#[derive(Debug, Clone, Copy, Default)]
struct Variant {
    /// Keys repeat and tasks carry feed sequence numbers (`--sequenced`).
    sequenced: bool,
    /// The durable queue, fed by a producer process.
    durable: bool,
    /// Lagging live feeds (`--feed-rate`), some members fed from a later point,
    /// and graceful hand-overs (SIGTERM and step-down requests) weighed up.
    lagging: bool,
}

/// Member `i`'s spec.
fn spec(dir: &std::path::Path, collection: &str, i: usize, tasks: u64, variant: Variant) -> Spec {
    let (id, skew) = MEMBERS[i];
    Spec {
        name: "chaos".to_owned(),
        id: id.to_owned(),
        collection: collection.to_owned(),
        timings: TIMINGS,
        tasks,
        task_ms: TASK_MS,
        fence: false,
        blocking: id == BLOCKING,
        sequenced: variant.sequenced,
        durable: variant.durable,
        faketime: (skew != 0).then(|| format!("{:+}s", skew / 1000)),
        log: dir.join(format!("{id}.log")),
    }
}

/// The run: processes, logs, the database, and what was done.
struct Chaos {
    /// Each member's connection string: its proxy's, or the database's.
    member_uris: Vec<String>,
    /// One fault proxy per member (same index), when the run uses proxies.
    proxies: Vec<FaultProxy>,
    /// Whether the server takes `configureFailPoint failCommand`.
    fail_points: bool,
    /// The replica set of a replica-set run (primary changes are one of the actions).
    replica_set: Option<support::ReplicaSet>,
    step_downs: usize,
    rt: tokio::runtime::Runtime,
    client: mongodb::Client,
    leases: mongodb::Collection<Document>,
    specs: Vec<Spec>,
    procs: Vec<Option<Proc>>,
    actions: Vec<check::Action>,
    /// Liveness and exit-status failures seen by the driver.
    violations: Vec<String>,
    faults: BTreeMap<&'static str, usize>,
    kills: usize,
    pauses: usize,
    graceful: usize,
    restarts: usize,
    /// Step-down requests sent to the master.
    step_down_requests: usize,
    /// The lagging variant's live feed: (CLOCK_MONOTONIC ns of task 0, tasks a
    /// second); each process started gets a random lag, and a restarted one
    /// starts at the feed's current point half the time.
    feed: Option<(u64, u64)>,
    feed_rng: Rng,
    /// The lease collection's name (for step-down requests).
    collection: String,
}

impl Chaos {
    fn act(&mut self, kind: check::Kind, i: usize) {
        let pid = self.procs[i].as_ref().map_or(0, |p| p.pid);
        self.actions.push(check::Action {
            t: members::mono_ns(),
            kind,
            member: self.specs[i].id.clone(),
            pid,
        });
    }

    /// Starts member `i`; `restart`: it ran before in this run.
    fn start(&mut self, i: usize, restart: bool) {
        let mut extra = Vec::new();
        if let Some((t0, rate)) = self.feed {
            extra.extend([
                "--feed-rate".to_owned(),
                rate.to_string(),
                "--feed-t0-ns".to_owned(),
                t0.to_string(),
                "--feed-lag-ms".to_owned(),
                self.feed_rng.range(0, MAX_FEED_LAG_MS).to_string(),
            ]);
            if restart && self.feed_rng.range(0, 1) == 0 {
                extra.push("--feed-from-now".to_owned());
            }
        }
        self.procs[i] = Some(self.specs[i].spawn_with(&self.member_uris[i], &extra));
        self.act(check::Kind::Start, i);
    }

    /// Asks the master to step down, as an operator does (`failover::step_down`).
    fn request_step_down(&mut self, m: usize) {
        let options = failover::Options::new()
            .client(self.client.clone())
            .collection(&self.collection);
        self.act(check::Kind::StepDown, m);
        if let Err(e) = self.rt.block_on(failover::step_down(&options, "chaos")) {
            self.violations
                .push(format!("the step-down request failed: {e}"));
        }
        self.step_down_requests += 1;
    }

    /// The server's clock, ms.
    fn server_ms(&self) -> i64 {
        self.rt.block_on(async {
            let reply = self
                .client
                .database("admin")
                .run_command(doc! { "hello": 1 })
                .await
                .expect("hello");
            reply
                .get_datetime("localTime")
                .expect("localTime")
                .timestamp_millis()
        })
    }

    /// The member holding a live lease renewed at or after `since` (server ms),
    /// if its process runs.
    fn master_since(&self, since: i64) -> Option<usize> {
        let lease = self.rt.block_on(async {
            // The newest version: the highest (epoch, version).
            self.leases
                .find_one(doc! { "_id.lease": "chaos" })
                .sort(doc! { "epoch": -1, "_id.v": -1 })
                .await
                .ok()
                .flatten()
        })?;
        if lease.get_bool("released").unwrap_or(false) {
            return None;
        }
        let renewed = lease.get_datetime("renewed_at").ok()?.timestamp_millis();
        let holder = lease.get_str("holder").ok()?;
        let i = self.specs.iter().position(|s| s.id == holder)?;
        (renewed >= since && self.procs[i].as_ref().is_some_and(Proc::running)).then_some(i)
    }

    /// Waits for a working master after a disruption that ended at server time
    /// `since`. The bound: the lease runs out, a standby notices (SLAVE), takes
    /// it (TICKING); a faulted member may first wait out its ERROR interval and a
    /// blocked command; plus 3 s for a shared 2-core machine.
    fn wait_master(&mut self, since: i64, what: &str) -> Option<usize> {
        let t = TIMINGS;
        let bound =
            Duration::from_millis(t.lease() + t.slave + t.ticking + t.error + BLOCK_MS + 3000);
        let end = Instant::now() + bound;
        loop {
            if let Some(i) = self.master_since(since) {
                return Some(i);
            }
            if Instant::now() >= end {
                self.violations
                    .push(format!("no working master within {bound:?} after {what}"));
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM member `i` and wait for a clean exit. The bound: the running task
    /// (TASK_MS), the release (at most TICKING), plus 3 s of slack.
    fn stop(&mut self, i: usize, kind: check::Kind) {
        let bound = Duration::from_millis(TASK_MS + TIMINGS.ticking + 3000);
        self.act(kind, i);
        let p = self.procs[i].as_mut().expect("a running member");
        p.terminate();
        match p.wait_exit(bound) {
            Some(status) if status.success() => {}
            Some(status) => self
                .violations
                .push(format!("{} exited with {status} after SIGTERM", p.id)),
            None => self
                .violations
                .push(format!("{} did not exit within {bound:?} of SIGTERM", p.id)),
        }
        self.procs[i] = None;
    }

    fn fail_point(&self, spec: Document) {
        self.rt.block_on(support::fail_command(&self.client, spec));
    }

    /// Cuts member `m` off from the database with `fault` through a fail point
    /// filtered on its appName; returns the name counted in the summary.
    fn fail_point_on(&self, m: usize, fault: check::Fault) -> &'static str {
        let mut data = doc! {
            "failCommands": ["find", "findAndModify", "update", "insert"],
            "appName": format!("failover:{}", self.specs[m].id),
        };
        match fault {
            check::Fault::Error => data.insert("errorCode", Bson::Int32(91)),
            check::Fault::Close => data.insert("closeConnection", true),
            check::Fault::Block => {
                data.insert("blockConnection", true);
                data.insert("blockTimeMS", BLOCK_MS as i64)
            }
        };
        self.fail_point(doc! { "mode": "alwaysOn", "data": data });
        fault.name()
    }

    /// Cuts member `m` off from the database with `fault` through its proxy;
    /// returns the name counted in the summary.
    fn proxy_fault_on(&self, m: usize, fault: check::Fault, rng: &mut Rng) -> &'static str {
        let (set, name) = match fault {
            check::Fault::Error => (ProxyFault::Reset, "proxy-reset"),
            check::Fault::Close => (
                ProxyFault::CloseAfter {
                    bytes: rng.range(0, 4096),
                },
                "proxy-close-after",
            ),
            // Not `Blackhole`: a connection whose handshake is swallowed hangs the
            // driver's pool (mongodb 3.9 has no handshake timeout), and the member
            // stays in `error` long after the fault; that is an open issue of its
            // own, tested apart (election_mongo's unanswering-database test).
            check::Fault::Block => (
                ProxyFault::Latency {
                    to_server: Duration::from_millis(BLOCK_MS),
                    to_client: Duration::ZERO,
                },
                "proxy-latency",
            ),
        };
        self.proxies[m].set(set);
        name
    }
}

/// What the chaos test runs against.
enum Setup {
    /// One server: the bundled test server, FerretDB, or `MONGODB_URI`.
    Single(String),
    /// The bundled test server's replica set.
    ReplicaSet(support::ReplicaSet),
}

/// Whether the server of `client` takes `configureFailPoint failCommand` (it is
/// switched off to find out, which changes nothing).
async fn takes_fail_points(client: &mongodb::Client) -> bool {
    client
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": "off" })
        .await
        .is_ok()
}

/// Whether `uri` names exactly one server (so that a proxy can sit in front of it).
async fn names_one_server(uri: &str) -> bool {
    mongodb::options::ClientOptions::parse(uri)
        .await
        .is_ok_and(|o| o.hosts.len() == 1)
}

/// blockTimeMS of the block fault: twice the lease, past the renew deadline.
const BLOCK_MS: u64 = 1000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn chaos() {
    run_chaos(
        Setup::Single(support::mongodb_uri()),
        env_u64("FAILOVER_CHAOS_SECS").unwrap_or(45),
        Variant::default(),
    );
}

/// The same with keys that repeat all the time and feed sequence numbers.
#[test]
fn chaos_sequenced() {
    run_chaos(
        Setup::Single(support::mongodb_uri()),
        env_u64("FAILOVER_CHAOS_SEQ_SECS").unwrap_or(30),
        Variant {
            sequenced: true,
            ..Variant::default()
        },
    );
}

/// The same on FerretDB 1.24, its database faults made by the proxies (FerretDB
/// has no fail points). It runs when the build selects `ferretdb` (by default when
/// `go` is on `PATH`; see `tests/support/ferretdb.rs`), and is ignored otherwise.
#[test]
#[cfg_attr(
    failover_skip_ferretdb = "deselected",
    ignore = "FAILOVER_TEST_SERVER leaves out ferretdb"
)]
#[cfg_attr(
    failover_skip_ferretdb = "go_not_found",
    ignore = "Go not found (no `go` on PATH when the tests were built)"
)]
fn chaos_ferretdb() {
    support::run_blocking_on(Server::FerretDb, |uri| {
        run_chaos(
            Setup::Single(uri),
            env_u64("FAILOVER_CHAOS_FERRETDB_SECS").unwrap_or(30),
            Variant::default(),
        );
    });
}

/// The same on a three-member replica set whose members' clocks differ by up to
/// 30 ms (a tenth of the margin is the assumption the protocol states), with
/// primary step-downs among the actions.
#[test]
fn chaos_replica_set() {
    // Always on the bundled test server: it plays the replica set.
    let rs = support::start_replica_set(&[0, 30, -30]);
    run_chaos(
        Setup::ReplicaSet(rs),
        env_u64("FAILOVER_CHAOS_RS_SECS").unwrap_or(30),
        Variant::default(),
    );
}

/// The same on the durable queue: the members work `--durable` and feed
/// themselves nothing; a producer process (`failover-member --produce`) submits
/// the tasks in batches while the faults go on, and once at least every member is
/// SIGKILLed at the same moment, then restarted.
#[test]
fn chaos_durable() {
    run_chaos(
        Setup::Single(support::mongodb_uri()),
        env_u64("FAILOVER_CHAOS_DURABLE_SECS").unwrap_or(30),
        Variant {
            durable: true,
            ..Variant::default()
        },
    );
}

/// The same with lagging live feeds: every member process is fed the tasks as a
/// feed publishes them (`LAGGING_TASKS_PER_SEC`), each with its own lag of up to
/// `MAX_FEED_LAG_MS`, and a restarted one from the feed's current point half the
/// time (it never sees the earlier tasks); graceful hand-overs (SIGTERM of the
/// master and operators' step-down requests) are half the actions. On top of the
/// rules: a graceful hand-over repeats nothing (as everywhere), and every task fed
/// to a member still running at the end is done ([`check::unrun`]).
#[test]
fn chaos_lagging() {
    run_chaos(
        Setup::Single(support::mongodb_uri()),
        env_u64("FAILOVER_CHAOS_LAGGING_SECS").unwrap_or(30),
        // With feed sequence numbers: the mode whose hand-overs repeat nothing
        // whatever the members were fed. In key mode a member re-fed from an
        // earlier point than the published run's origin runs what stands before
        // it when it leads (documented: key mode cannot tell those tasks from
        // ones nobody ran).
        Variant {
            lagging: true,
            sequenced: true,
            ..Variant::default()
        },
    );
}

/// Lagging runs: the live feed's rate (a master does about 160 of the 5 ms tasks
/// a second) and the most a member's feed lags.
const LAGGING_TASKS_PER_SEC: u64 = 100;
const MAX_FEED_LAG_MS: u64 = 1500;

/// The operator's lease deletions: every version of the subsystem's lease
/// (`deleteMany({"_id.lease": "chaos"})`) at random instants, independent of the
/// other actions, until stopped. `FAILOVER_CHAOS_DELETE_MS` is the mean time
/// between two (default 4000; 0: none).
struct Deleter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<check::Action>>,
}

impl Deleter {
    fn start(uri: &str, collection: &str, mean_ms: u64, seed: u64) -> Option<Deleter> {
        if mean_ms == 0 {
            return None;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (uri, collection, flag) = (uri.to_owned(), collection.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = rt
                .block_on(mongodb::Client::with_uri_str(&uri))
                .expect("a client");
            let leases = client
                .default_database()
                .unwrap_or_else(|| client.database("test"))
                .collection::<Document>(&collection);
            let mut rng = Rng::new(seed);
            let mut done = Vec::new();
            loop {
                let wake =
                    Instant::now() + Duration::from_millis(rng.range(mean_ms / 4, mean_ms * 7 / 4));
                while Instant::now() < wake {
                    if flag.load(std::sync::atomic::Ordering::SeqCst) {
                        return done;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                match rt.block_on(async { leases.delete_many(doc! { "_id.lease": "chaos" }).await })
                {
                    // Stamped once the server has deleted them.
                    Ok(r) if r.deleted_count > 0 => done.push(check::Action {
                        t: members::mono_ns(),
                        kind: check::Kind::Delete,
                        member: "-".to_owned(),
                        pid: 0,
                    }),
                    Ok(_) => {}
                    Err(e) => eprintln!("chaos: the lease deletion failed: {e}"),
                }
            }
        });
        Some(Deleter { stop, thread })
    }

    /// Stops it; the deletions it made.
    fn finish(self) -> Vec<check::Action> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the deleter thread")
    }
}

/// Durable runs: tasks per second of the run, submitted by the producer in
/// batches of `DURABLE_BATCH` (a master records its progress after every task, so
/// it does fewer tasks a second than on the in-memory queue).
const DURABLE_TASKS_PER_SEC: u64 = 60;
const DURABLE_BATCH: u64 = 30;

fn run_chaos(setup: Setup, secs: u64, variant: Variant) {
    let durable = variant.durable;
    members::require_libfaketime();
    let seed = env_u64("FAILOVER_CHAOS_SEED").unwrap_or_else(Rng::seed_from_clock);
    let mut rng = Rng::new(seed);
    let tasks = secs
        * if durable {
            DURABLE_TASKS_PER_SEC
        } else if variant.lagging {
            LAGGING_TASKS_PER_SEC
        } else {
            TASKS_PER_SEC
        };
    let dir: PathBuf = members::run_dir("chaos");
    println!(
        "chaos: {secs} s, seed {seed} (FAILOVER_CHAOS_SEED={seed} replays the choices), logs in {}",
        dir.display()
    );
    let (uri, replica_set) = match setup {
        Setup::Single(uri) => (uri, None),
        Setup::ReplicaSet(rs) => (rs.uri.clone(), Some(rs)),
    };
    // The test server plays a replica set; a single server is the test server,
    // FerretDB or MONGODB_URI.
    let kind = match replica_set {
        Some(_) => Server::Mock,
        None => support::kind_of(&uri),
    };
    // Multi-threaded: the proxies' tasks must run while this thread sleeps.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(mongodb::Client::with_uri_str(&uri))
        .expect("a client");
    let fail_points = match kind {
        Server::Mock => true,
        Server::FerretDb => false,
        Server::Uri => rt.block_on(takes_fail_points(&client)),
    };
    let proxies: Vec<FaultProxy> = if replica_set.is_none() && rt.block_on(names_one_server(&uri)) {
        rt.block_on(async {
            let mut proxies = Vec::new();
            for _ in MEMBERS {
                proxies.push(FaultProxy::in_front_of(&uri).await);
            }
            proxies
        })
    } else {
        Vec::new()
    };
    assert!(
        fail_points || !proxies.is_empty(),
        "the chaos test cannot make database faults on this {kind} deployment: it names \
         several servers (no proxy can sit in front of it) and refuses `configureFailPoint`; \
         give a one-server MONGODB_URI, or start mongod with \
         `--setParameter enableTestCommands=1`"
    );
    let member_uris: Vec<String> = match proxies.is_empty() {
        true => MEMBERS.iter().map(|_| uri.clone()).collect(),
        false => proxies.iter().map(|p| p.proxied(&uri)).collect(),
    };
    println!(
        "chaos: server {kind}{}, database faults by {}",
        if replica_set.is_some() {
            " (replica set)"
        } else {
            ""
        },
        match (fail_points, proxies.is_empty()) {
            (true, false) => "fail points and proxies",
            (true, true) => "fail points",
            (false, _) => "proxies",
        }
    );
    let collection = format!("chaos_{}_{}", std::process::id(), members::mono_ns());
    let leases = client
        .default_database()
        .unwrap_or_else(|| client.database("test"))
        .collection::<Document>(&collection);
    let clock_ref = (members::mono_ns(), members::wall_ms());
    let specs: Vec<Spec> = (0..MEMBERS.len())
        .map(|i| spec(&dir, &collection, i, tasks, variant))
        .collect();
    if kind == Server::Mock {
        let offset = (TIMINGS.lease() + 1000) as i64;
        rt.block_on(support::set_hello_offset(
            &client,
            &format!("failover:{MONGOS}"),
            offset,
        ));
    }
    let mut c = Chaos {
        member_uris,
        proxies,
        fail_points,
        replica_set,
        step_downs: 0,
        rt,
        client,
        leases,
        procs: specs.iter().map(|_| None).collect(),
        specs,
        actions: Vec::new(),
        violations: Vec::new(),
        faults: BTreeMap::new(),
        kills: 0,
        pauses: 0,
        graceful: 0,
        restarts: 0,
        step_down_requests: 0,
        // The feed's task 0 comes a little after the members start.
        feed: variant
            .lagging
            .then(|| (members::mono_ns() + 500_000_000, LAGGING_TASKS_PER_SEC)),
        feed_rng: Rng::new(seed ^ 0x5eed),
        collection: collection.clone(),
    };
    let t = TIMINGS;
    let lease = t.lease();

    for i in 0..MEMBERS.len() {
        c.start(i, false);
    }
    // Lease deletions only when asked (`FAILOVER_CHAOS_DELETE_MS`): the in-memory
    // queue keeps its record of what was run in the lease, so a deletion makes the
    // next master repeat it (documented), and a graceful stop can find its lease
    // deleted under it. The lease rules under deletion are checked by
    // tests/lease_deletion.rs and the model; the runs with deletions are in
    // BENCHMARKS.md.
    let delete_ms = env_u64("FAILOVER_CHAOS_DELETE_MS").unwrap_or(0);
    let deleter = Deleter::start(&uri, &collection, delete_ms, seed ^ 0xde1e7e);
    // The durable queue's producer: a process of its own, straight to the
    // database (no proxy, no fault), that exits once every task is stored.
    let producer_log = dir.join("producer.log");
    let mut producer = durable.then(|| {
        std::process::Command::new(members::MEMBER_BIN)
            .env("MONGODB_URI", &uri)
            .args(["--name", "chaos", "--id", "producer"])
            .args(["--collection", &collection])
            .arg("--log")
            .arg(&producer_log)
            .args(["--produce", &tasks.to_string()])
            .args(["--batch", &DURABLE_BATCH.to_string()])
            .args([
                "--batch-ms",
                &(1000 * DURABLE_BATCH / DURABLE_TASKS_PER_SEC).to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(producer_log.with_extension("stderr"))
                    .expect("the producer's stderr file"),
            )
            .spawn()
            .expect("the producer")
    });
    let mut kills_all = 0;
    let began = Instant::now();
    let since = c.server_ms();
    c.wait_master(since, "the start");
    let deadline = began + Duration::from_secs(secs);

    while Instant::now() < deadline {
        let since = c.server_ms();
        let Some(m) = c.master_since(since - lease as i64) else {
            let since = c.server_ms();
            c.wait_master(since, "a quiet moment");
            continue;
        };
        let what;
        // Durable runs: once at a third of the run (and then with a kill's chance
        // in four), SIGKILL every member at the same moment, restart them all.
        let kill_all = durable
            && ((kills_all == 0 && began.elapsed() >= Duration::from_secs(secs) / 3)
                || rng.range(0, 99) < 6);
        if kill_all {
            what = "a kill of every member";
            for i in 0..MEMBERS.len() {
                c.act(check::Kind::Kill, i);
                c.procs[i].as_mut().unwrap().kill();
            }
            for i in 0..MEMBERS.len() {
                c.procs[i] = None;
            }
            c.kills += MEMBERS.len();
            kills_all += 1;
            std::thread::sleep(Duration::from_millis(rng.range(0, lease)));
            for i in 0..MEMBERS.len() {
                c.start(i, true);
                c.restarts += 1;
            }
            let since = c.server_ms();
            c.wait_master(since, what);
            std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
            continue;
        }
        // The lagging variant weighs graceful hand-overs up: half the actions
        // (kills, pauses and faults keep their proportions in the other half).
        let roll = match (variant.lagging, rng.range(0, 99)) {
            (true, r @ 0..=49) => r * 8 / 5,
            (true, 50..=74) => 90, // SIGTERM
            (true, _) => 95,       // step-down request
            (false, r) => r,
        };
        match roll {
            // SIGKILL the master, restart it a little later.
            0..=24 => {
                what = "a kill";
                c.act(check::Kind::Kill, m);
                c.procs[m].as_mut().unwrap().kill();
                c.procs[m] = None;
                c.kills += 1;
                std::thread::sleep(Duration::from_millis(rng.range(0, lease)));
                c.start(m, true);
                c.restarts += 1;
            }
            // SIGSTOP the master for longer than its lease.
            25..=49 => {
                what = "a pause";
                c.procs[m].as_mut().unwrap().pause();
                c.act(check::Kind::Stop, m);
                c.pauses += 1;
                std::thread::sleep(Duration::from_millis(lease + rng.range(200, 800)));
                c.procs[m].as_mut().unwrap().resume();
                c.act(check::Kind::Cont, m);
            }
            // Cut the master off from the database for a while.
            50..=79 => {
                what = "a database fault";
                let fault = [
                    check::Fault::Error,
                    check::Fault::Close,
                    check::Fault::Block,
                ][rng.range(0, 2) as usize];
                let by_proxy = match (c.fail_points, c.proxies.is_empty()) {
                    (true, false) => rng.range(0, 1) == 1,
                    (fail_points, _) => !fail_points,
                };
                let name = if by_proxy {
                    c.proxy_fault_on(m, fault, &mut rng)
                } else {
                    c.fail_point_on(m, fault)
                };
                c.act(check::Kind::FaultOn(fault), m);
                *c.faults.entry(name).or_default() += 1;
                std::thread::sleep(Duration::from_millis(rng.range(lease, 3 * lease)));
                if by_proxy {
                    c.proxies[m].set(ProxyFault::None);
                } else {
                    c.rt.block_on(support::clear_fail_points(&c.client));
                }
                c.act(check::Kind::FaultOff, m);
            }
            // A primary change of the replica set (replica-set runs only).
            80..=89 if c.replica_set.is_some() => {
                what = "a primary change";
                let rs = c.replica_set.as_ref().unwrap();
                let now = c.rt.block_on(rs.primary()).unwrap_or(0);
                let next = (now + 1 + rng.range(0, 1) as usize) % 3;
                c.rt.block_on(rs.step_down(next));
                c.step_downs += 1;
            }
            // An operator asks the master to step down: a graceful hand-over.
            95..=99 => {
                what = "a step-down request";
                c.request_step_down(m);
            }
            // SIGTERM the master or another member, restart it.
            _ => {
                what = "a graceful stop";
                let i = if rng.range(0, 1) == 0 {
                    m
                } else {
                    rng.range(0, MEMBERS.len() as u64 - 1) as usize
                };
                c.stop(i, check::Kind::Term);
                c.graceful += 1;
                std::thread::sleep(Duration::from_millis(rng.range(0, 500)));
                c.start(i, true);
                c.restarts += 1;
            }
        }
        let since = c.server_ms();
        c.wait_master(since, what);
        std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
    }
    let chaos_time = began.elapsed();
    // No more deletions either; theirs join the test's record, in time order.
    let deletions = deleter.map(Deleter::finish).unwrap_or_default();
    let deleted = deletions.len();
    c.actions.extend(deletions);
    c.actions.sort_by_key(|a| a.t);
    if let Some(p) = producer.as_mut() {
        // It submits at its own pace; the rest of its work is a few seconds'.
        let bound = Instant::now() + Duration::from_secs(60.max(secs / 2));
        let status = loop {
            match p.try_wait() {
                Ok(Some(status)) => break Some(status),
                _ if Instant::now() >= bound => break None,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        match status {
            Some(s) if s.success() => {}
            Some(s) => c.violations.push(format!("the producer exited with {s}")),
            None => {
                let _ = p.kill();
                let _ = p.wait();
                c.violations
                    .push("the producer did not finish in time".to_owned());
            }
        }
    }

    // The end: no more faults; the master drains the queue; everybody stops.
    let since = c.server_ms();
    c.wait_master(since, "the last fault");
    let mut tails: Vec<Tail> = c.specs.iter().map(|s| Tail::new(&s.log)).collect();
    let last = (tasks - 1).to_string();
    // What is left is a few seconds' work; a long run may fall further behind.
    let drain_bound = Duration::from_secs(60.max(secs / 4));
    let drain_start = Instant::now();
    if let Some((t0, rate)) = c.feed {
        // Every running member has been fed the whole feed.
        let fed_all = t0 + tasks * 1_000_000_000 / rate + MAX_FEED_LAG_MS * 1_000_000;
        let now = members::mono_ns();
        if fed_all > now {
            std::thread::sleep(Duration::from_nanos(fed_all - now + 100_000_000));
        }
    }
    let mut last_done = false;
    let mut polls = 0u64;
    let drained = loop {
        for tail in &mut tails {
            let from = tail.poll();
            last_done |= tail.lines[from..]
                .iter()
                .any(|l| l.event == "task-done" && l.key.as_deref() == Some(&last));
        }
        // Lagging feeds: every task fed to a running member is done (a member fed
        // from a later point may not have the last task's predecessors, others do).
        polls += 1;
        // (Checked once last is done, and then once a second: the logs are long.)
        let held_done = c.feed.is_none()
            || (last_done && polls.is_multiple_of(20)) && {
                let lines: Vec<Line> = tails.iter().flat_map(|t| t.lines.iter().cloned()).collect();
                let running: Vec<check::Action> = c
                    .procs
                    .iter()
                    .flatten()
                    .map(|p| check::Action {
                        t: 0,
                        kind: check::Kind::FinalTerm,
                        member: p.id.clone(),
                        pid: p.pid,
                    })
                    .collect();
                check::unrun(&lines, &running).0.is_empty()
            };
        if last_done && held_done {
            break true;
        }
        if drain_start.elapsed() > drain_bound {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !drained {
        c.violations.push(format!(
            "the queue was not drained within {drain_bound:?} of the end"
        ));
    }
    let drain_time = drain_start.elapsed();
    // Members faulted or restarted just before the end recover within an ERROR
    // interval plus a check (the durable queue drains at once, leaving them no
    // time otherwise): give them that, twice, before the final stop.
    std::thread::sleep(Duration::from_millis(
        2 * t.master + 2 * (t.error + t.slave + t.ticking),
    ));
    let since = c.server_ms();
    let master = c.wait_master(since, "the drain");
    for i in (0..MEMBERS.len()).filter(|&i| Some(i) != master) {
        c.stop(i, check::Kind::FinalTerm);
    }
    if let Some(m) = master {
        c.stop(m, check::Kind::FinalTerm);
    }

    // The test's record, beside the logs, for whoever reads a failed run.
    let record: String = c
        .actions
        .iter()
        .map(|a| format!("{} {:?} {} pid={}\n", a.t, a.kind, a.member, a.pid))
        .collect();
    let _ = std::fs::write(dir.join("actions.log"), record);

    // Check.
    let mut lines: Vec<Line> = Vec::new();
    for s in &c.specs {
        let text = std::fs::read_to_string(&s.log).unwrap_or_default();
        lines.extend(members::parse_log(&text));
    }
    let params = check::Params {
        // Lagging feeds: a task fed only to members that were killed may be gone
        // with them; what must be done is what the members alive at the end hold
        // (check::unrun, below).
        tasks: if variant.lagging { 0 } else { tasks },
        lease_ns: lease * 1_000_000,
        margin_ns: t.margin() * 1_000_000,
        skew_ms: MEMBERS
            .iter()
            .map(|(id, skew)| (id.to_string(), *skew))
            .collect(),
        skew_tolerance_ms: SKEW_TOLERANCE_MS,
        clock_ref,
    };
    let mut report = check::check(&lines, &c.actions, &params);
    report.violations.append(&mut c.violations);
    let mut durable_summary = String::new();
    if durable {
        let produced =
            members::parse_log(&std::fs::read_to_string(&producer_log).unwrap_or_default());
        let submitted = check::submitted(&produced);
        if submitted.len() as u64 != tasks {
            report.violations.push(format!(
                "the producer logged {} tasks stored, not {tasks}",
                submitted.len()
            ));
        }
        report.violations.extend(check::lost(&submitted, &lines));
        let (mut v, repeats) = check::durable_repeats(&lines, &report.ends);
        report.violations.append(&mut v);
        if kills_all == 0 {
            report
                .violations
                .push("every member was never killed at once".to_owned());
        }
        durable_summary = format!(
            " durable: submitted={} kills_of_all={kills_all} repeats={repeats}",
            submitted.len()
        );
    }
    let mut required = tasks as usize;
    if variant.lagging {
        let (mut v, n) = check::unrun(&lines, &c.actions);
        report.violations.append(&mut v);
        required = n;
        durable_summary = format!(" lagging: required={n} (fed to the members alive at the end)");
    }
    let skewed_held: usize = MEMBERS
        .iter()
        .filter(|(_, s)| *s != 0)
        .map(|(id, _)| report.held.get(*id).copied().unwrap_or(0))
        .sum();
    println!(
        "chaos summary: server={kind}{} duration={:.1}s (+{:.1}s drain) members={} events={} failovers={} (epochs; {} held by the skewed members) \
         faults={:?} kills={} pauses={} graceful_stops={} step_down_requests={} lease_deletions={} restarts={} step_downs={} tasks={} task_runs={} duplicates={} epoch_ends={:?}{} violations={}",
        if c.replica_set.is_some() { "-replica-set" } else { "" },
        chaos_time.as_secs_f64(),
        drain_time.as_secs_f64(),
        MEMBERS.len(),
        report.lines,
        report.epochs,
        skewed_held,
        c.faults,
        c.kills,
        c.pauses,
        c.graceful,
        c.step_down_requests,
        deleted,
        c.restarts,
        c.step_downs,
        tasks,
        report.task_runs,
        report.duplicates,
        report.epoch_ends,
        durable_summary,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "{} violations (logs in {}):\n{}",
        report.violations.len(),
        dir.display(),
        report.violations.join("\n")
    );
    // Not vacuous: the run did fail over, and the checker saw the work.
    assert!(report.epochs >= 2, "no failover happened");
    if variant.lagging {
        assert!(
            required > 0 && report.keys_done >= required,
            "{} done of {required} required",
            report.keys_done
        );
    } else {
        assert_eq!(report.keys_done as u64, tasks);
    }
    if delete_ms > 0 && secs >= 20 {
        assert!(deleted > 0, "no lease was deleted");
    }
}
