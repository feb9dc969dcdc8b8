//! The metrics of `failover::metrics` under failover, on the in-memory store and
//! Tokio's paused clock, read with `metrics-util`'s debugging recorder.
//!
//! The crate's dev-dependency on itself enables the `metrics` feature, so these
//! tests run in every `cargo test`; without the feature they would fail, not
//! vanish. Each test installs its own recorder on its thread (the tests' runtimes
//! are single-threaded, and every handle is registered when a member starts).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::{fast, ms, until};
use failover::metrics::{
    DEAD_LETTERS, EPOCH, IS_MASTER, QUEUE_DEPTH, RENEWAL_FAILURES, RENEWAL_SECONDS, TAKEOVERS,
    TASKS, TASKS_MAYBE_REPEATED, TASK_RETRIES, TASK_SECONDS, TRANSITIONS,
};
use failover::{work_fn, Backoff, Managed, Member, MemoryStore, Outcome, State, WorkContext};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::sleep;

const NAME: &str = "metered";

/// What the recorder holds, keyed by `name{label=value,...}` (labels sorted).
/// Counters accumulate over readings (the recorder resets them on each
/// snapshot); gauges and histograms are those of the last reading.
struct Readings {
    snapshotter: Snapshotter,
    counters: HashMap<String, u64>,
    gauges: HashMap<String, f64>,
    histograms: HashMap<String, Vec<f64>>,
}

impl Readings {
    fn new(recorder: &DebuggingRecorder) -> Readings {
        Readings {
            snapshotter: recorder.snapshotter(),
            counters: HashMap::new(),
            gauges: HashMap::new(),
            histograms: HashMap::new(),
        }
    }

    /// Takes a snapshot.
    fn read(&mut self) -> &mut Self {
        self.gauges.clear();
        self.histograms.clear();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let id = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => *self.counters.entry(id).or_default() += n,
                DebugValue::Gauge(v) => {
                    self.gauges.insert(id, v.into_inner());
                }
                DebugValue::Histogram(vs) => {
                    self.histograms
                        .insert(id, vs.into_iter().map(|v| v.into_inner()).collect());
                }
            }
        }
        self
    }

    fn counter(&self, name: &str, member: &str, extra: Option<(&str, &str)>) -> u64 {
        let id = id(name, member, extra);
        *self
            .counters
            .get(&id)
            .unwrap_or_else(|| panic!("{id} was never registered"))
    }

    fn gauge(&self, name: &str, member: &str) -> f64 {
        let id = id(name, member, None);
        *self
            .gauges
            .get(&id)
            .unwrap_or_else(|| panic!("{id} was never registered"))
    }

    fn histogram(&self, name: &str, member: &str) -> Vec<f64> {
        let id = id(name, member, None);
        self.histograms.get(&id).cloned().unwrap_or_default()
    }
}

fn id(name: &str, member: &str, extra: Option<(&str, &str)>) -> String {
    let mut labels = vec![format!("member={member}"), format!("subsystem={NAME}")];
    if let Some((k, v)) = extra {
        labels.push(format!("{k}={v}"));
    }
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

async fn start(store: &MemoryStore, id: &str) -> Member {
    Member::start(NAME, fast(store, id)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_take_over_sets_is_master_and_epoch_and_renewals_are_timed() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut m = Readings::new(&recorder);
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    let epoch = a.wait_for_master().await.unwrap();
    store.set_delay("a", ms(7));
    sleep(ms(250)).await; // two renewals, each answered 7 ms late
    m.read();
    assert_eq!(m.gauge(IS_MASTER, "a"), 1.0);
    assert_eq!(m.gauge(EPOCH, "a"), epoch as f64);
    assert_eq!(m.counter(TRANSITIONS, "a", Some(("to", "ticking"))), 1);
    assert_eq!(m.counter(TRANSITIONS, "a", Some(("to", "master"))), 1);
    assert_eq!(m.counter(TRANSITIONS, "a", Some(("to", "error"))), 0);
    assert_eq!(m.counter(TAKEOVERS, "a", Some(("from", "none"))), 1);
    assert_eq!(m.counter(TAKEOVERS, "a", Some(("from", "expired"))), 0);
    let renewals = m.histogram(RENEWAL_SECONDS, "a");
    assert_eq!(renewals.len(), 2, "{renewals:?}");
    // Tokio's timers round up to the millisecond.
    assert!(
        renewals.iter().all(|s| (0.007..0.009).contains(s)),
        "{renewals:?}"
    );
    assert_eq!(m.counter(RENEWAL_FAILURES, "a", None), 0);
    a.shutdown().await.unwrap();
    m.read();
    assert_eq!(m.gauge(IS_MASTER, "a"), 0.0);
    assert_eq!(m.counter(TRANSITIONS, "a", Some(("to", "stopped"))), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failover_counts_transitions_and_takeovers_on_the_other_member() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut m = Readings::new(&recorder);
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    let first = a.wait_for_master().await.unwrap();
    let b = start(&store, "b").await;
    b.wait_for_state(State::Slave).await.unwrap();
    sleep(ms(150)).await;
    m.read();
    assert_eq!(m.gauge(IS_MASTER, "b"), 0.0);
    assert_eq!(
        m.gauge(EPOCH, "b"),
        first as f64,
        "a standby reports its master's epoch"
    );
    assert_eq!(m.counter(TRANSITIONS, "b", Some(("to", "slave"))), 1);

    a.abort(); // a crash: b takes over when the lease expires
    let second = b.wait_for_master().await.unwrap();
    assert!(second > first);
    sleep(ms(150)).await;
    m.read();
    assert_eq!(m.gauge(IS_MASTER, "a"), 0.0);
    assert_eq!(m.gauge(IS_MASTER, "b"), 1.0);
    assert_eq!(m.gauge(EPOCH, "b"), second as f64);
    assert_eq!(m.counter(TRANSITIONS, "b", Some(("to", "master"))), 1);
    assert_eq!(m.counter(TAKEOVERS, "b", Some(("from", "expired"))), 1);
    assert_eq!(m.counter(TAKEOVERS, "b", Some(("from", "none"))), 0);
    assert_eq!(m.counter(TRANSITIONS, "a", Some(("to", "stopped"))), 1);

    // A hand-over counts as taken from a released lease.
    let c = start(&store, "c").await;
    c.wait_for_state(State::Slave).await.unwrap();
    b.shutdown().await.unwrap();
    let third = c.wait_for_master().await.unwrap();
    m.read();
    assert_eq!(m.counter(TAKEOVERS, "c", Some(("from", "released"))), 1);
    assert_eq!(m.counter(TAKEOVERS, "c", Some(("from", "expired"))), 0);
    assert_eq!(m.counter(TRANSITIONS, "c", Some(("to", "master"))), 1);
    assert_eq!(m.gauge(EPOCH, "c"), third as f64);
    assert_eq!(m.gauge(IS_MASTER, "b"), 0.0);
    c.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_counts_renewal_failures() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut m = Readings::new(&recorder);
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    a.wait_for_master().await.unwrap();
    sleep(ms(250)).await;
    m.read();
    assert_eq!(m.counter(RENEWAL_FAILURES, "a", None), 0);
    store.set_unreachable("a", true);
    a.wait_for_state(State::Error).await.unwrap();
    m.read();
    // The master retries every quarter of its renewal period until its deadline
    // (270 ms after its last renewal), then steps down.
    let failures = m.counter(RENEWAL_FAILURES, "a", None);
    assert!((2..=12).contains(&failures), "{failures} renewal failures");
    assert_eq!(m.gauge(IS_MASTER, "a"), 0.0);
    assert_eq!(m.counter(TRANSITIONS, "a", Some(("to", "error"))), 1);
    // A standby's failing checks are no renewals.
    sleep(ms(500)).await;
    m.read();
    assert_eq!(m.counter(RENEWAL_FAILURES, "a", None), failures);
    store.set_unreachable("a", false);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_managed_master_records_its_tasks() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut m = Readings::new(&recorder);
    let store = MemoryStore::new();
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    // Task 1 takes 50 ms; task 2 asks for a retry every time (a dead letter after
    // three attempts); task 3 fails once, then is done.
    let work = work_fn(
        |n: &u32| *n,
        move |n: &u32, _: &WorkContext| {
            let (n, attempt) = (*n, seen.fetch_add(1, Ordering::SeqCst));
            async move {
                match n {
                    1 => {
                        sleep(ms(50)).await;
                        Outcome::Done
                    }
                    2 => Outcome::Retry("always".into()),
                    _ if attempt % 2 == 0 => Outcome::Retry("once".into()),
                    _ => Outcome::Done,
                }
            }
        },
    );
    let options = fast(&store, "a").max_attempts(3).retry_backoff(Backoff {
        initial: ms(10),
        max: ms(10),
        multiplier: 1.0,
        jitter: 0.0,
    });
    let a = Managed::start(NAME, options, work).await.unwrap();
    a.member().wait_for_master().await.unwrap();
    for n in 1..=3 {
        a.submit_work(n).await.unwrap();
    }
    until(ms(2000), "three tasks finished", || {
        let s = a.stats();
        s.finished + s.dead_letters == 3
    })
    .await;
    m.read();
    assert_eq!(m.counter(TASKS, "a", None), 2);
    assert_eq!(m.counter(DEAD_LETTERS, "a", None), 1);
    assert_eq!(m.counter(TASK_RETRIES, "a", None), 3);
    let seconds = m.histogram(TASK_SECONDS, "a");
    assert_eq!(seconds.len(), 6, "one per attempt: {seconds:?}");
    assert_eq!(seconds.len() as u32, attempts.load(Ordering::SeqCst));
    assert!(
        seconds.iter().any(|s| (0.05..0.052).contains(s)),
        "task 1 took 50 ms: {seconds:?}"
    );
    assert_eq!(m.gauge(QUEUE_DEPTH, "a"), 0.0);
    // The first election found no lease: nothing can repeat.
    assert_eq!(m.counter(TASKS_MAYBE_REPEATED, "a", None), 0);
    assert!(a.health().is_healthy());
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn queue_depth_and_tasks_that_may_repeat_after_a_crash() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut m = Readings::new(&recorder);
    let store = MemoryStore::new();
    let work = || work_fn(|n: &u32| *n, |_: &u32, _: &WorkContext| async { true });
    let a = Managed::start(NAME, fast(&store, "a"), work())
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    let b = Managed::start(NAME, fast(&store, "b"), work())
        .await
        .unwrap();
    b.member().wait_for_state(State::Slave).await.unwrap();
    // Fed to both; the master runs them and publishes them with its next renewal.
    for n in 1..=2 {
        a.submit_work(n).await.unwrap();
        b.submit_work(n).await.unwrap();
    }
    m.read();
    assert_eq!(m.gauge(QUEUE_DEPTH, "b"), 2.0, "read when submitted");
    until(ms(1000), "the standby pruned", || b.stats().queued == 0).await;
    sleep(ms(150)).await;
    m.read();
    assert_eq!(
        m.gauge(QUEUE_DEPTH, "b"),
        0.0,
        "read at the standby's check"
    );
    assert_eq!(m.counter(TASKS, "a", None), 2);

    // Task 3 reaches both, and the master crashes before it runs it: the new
    // master runs it within one lease of taking over an expired lease, so it
    // counts as one that may repeat (here it does not: the estimate errs high).
    a.submit_work(3).await.unwrap();
    b.submit_work(3).await.unwrap();
    a.abort();
    b.member().wait_for_master().await.unwrap();
    until(ms(1000), "task 3 done", || b.stats().finished == 1).await;
    m.read();
    assert_eq!(m.counter(TASKS, "b", None), 1);
    assert_eq!(m.counter(TASKS_MAYBE_REPEATED, "b", None), 1);
    assert_eq!(m.counter(TASKS_MAYBE_REPEATED, "a", None), 0);

    // Later tasks are outside the window.
    sleep(ms(400)).await;
    b.submit_work(4).await.unwrap();
    until(ms(1000), "task 4 done", || b.stats().finished == 2).await;
    m.read();
    assert_eq!(m.counter(TASKS, "b", None), 2);
    assert_eq!(m.counter(TASKS_MAYBE_REPEATED, "b", None), 1);
    b.shutdown().await.unwrap();
}
