//! Managed mode on the in-memory store under Tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::{
    work_fn, Backoff, Error, Event, Managed, MemoryStore, Options, Outcome, QueueFull, State, Work,
    WorkContext,
};
use tokio::time::{sleep, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Records which member ran which task under which epoch, and catches overlap.
/// Member, epoch, task, finish time.
type Run = (String, u64, u32, Instant);

#[derive(Clone, Default)]
struct Log {
    runs: Arc<Mutex<Vec<Run>>>,
    running: Arc<AtomicUsize>,
}

struct Recorded {
    member: String,
    log: Log,
    task_time: Duration,
    /// Task -> how many times it fails before it succeeds.
    fail_first: fn(u32) -> u32,
}

impl Work for Recorded {
    type Task = u32;
    type Key = u32;

    fn key(&self, task: &u32) -> u32 {
        *task
    }

    async fn work(&self, task: &u32, ctx: &WorkContext) -> Outcome {
        assert_eq!(
            self.log.running.fetch_add(1, Ordering::SeqCst),
            0,
            "two tasks at once"
        );
        assert!(ctx.is_master(), "a task started without a valid lease");
        if !self.task_time.is_zero() {
            sleep(self.task_time).await;
        }
        self.log.running.fetch_sub(1, Ordering::SeqCst);
        self.log.runs.lock().unwrap().push((
            self.member.clone(),
            ctx.epoch(),
            *task,
            Instant::now(),
        ));
        if ctx.attempt() <= (self.fail_first)(*task) {
            Outcome::Retry(format!("attempt {} of {task} fails", ctx.attempt()))
        } else {
            Outcome::Done
        }
    }
}

fn never(_: u32) -> u32 {
    0
}

async fn start(
    store: &MemoryStore,
    id: &str,
    log: &Log,
    options: Options,
    fail_first: fn(u32) -> u32,
) -> Managed<Recorded> {
    let work = Recorded {
        member: id.to_owned(),
        log: log.clone(),
        task_time: ms(1),
        fail_first,
    };
    Managed::start("jobs", options.in_memory(store).member_id(id), work)
        .await
        .unwrap()
}

async fn drained(m: &Managed<Recorded>) {
    while m.stats().queued > 0 {
        sleep(ms(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn tasks_run_in_order_one_at_a_time_on_the_master_only() {
    let store = MemoryStore::new();
    let log = Log::default();
    let a = start(&store, "a", &log, Options::new(), never).await;
    a.member().wait_for_master().await.unwrap();
    let b = start(&store, "b", &log, Options::new(), never).await;
    b.member().wait_for_state(State::Slave).await.unwrap();
    for t in 0..200 {
        a.submit_work(t).await.unwrap();
        b.submit_work(t).await.unwrap();
    }
    drained(&a).await;
    let runs = log.runs.lock().unwrap().clone();
    assert!(runs.iter().all(|(m, e, _, _)| m == "a" && *e == 1));
    assert_eq!(
        runs.iter().map(|r| r.2).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    // The standby follows the published keys with the renewals.
    sleep(ms(5000)).await;
    assert_eq!(b.stats().queued, 0);
    assert_eq!(b.last_finished(), Some(199));
    assert_eq!(a.stats().finished, 200);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retried_task_waits_its_back_off_and_blocks_those_behind_it() {
    let store = MemoryStore::new();
    let log = Log::default();
    let backoff = Backoff {
        initial: ms(100),
        max: ms(1000),
        multiplier: 2.0,
        jitter: 0.1,
    };
    let a = start(
        &store,
        "a",
        &log,
        Options::new().retry_backoff(backoff),
        |t| if t == 1 { 3 } else { 0 },
    )
    .await;
    a.member().wait_for_master().await.unwrap();
    for t in 0..3 {
        a.submit_work(t).await.unwrap();
    }
    drained(&a).await;
    let runs = log.runs.lock().unwrap().clone();
    assert_eq!(
        runs.iter().map(|r| r.2).collect::<Vec<_>>(),
        [0, 1, 1, 1, 1, 2]
    );
    // Gaps between attempts of task 1: back-off (±10 %) plus the 1 ms the task takes.
    for (i, expected) in [100u64, 200, 400].into_iter().enumerate() {
        let gap = runs[i + 2].3 - runs[i + 1].3;
        let (lo, hi) = (ms(expected * 9 / 10), ms(expected * 11 / 10 + 2));
        assert!(
            gap >= lo && gap <= hi,
            "gap {i}: {gap:?} not in {lo:?}..{hi:?}"
        );
    }
    assert_eq!(a.stats().retries, 3);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_task_that_keeps_failing_becomes_a_dead_letter() {
    let store = MemoryStore::new();
    let log = Log::default();
    let a = start(&store, "a", &log, Options::new().max_attempts(3), |t| {
        if t == 1 {
            u32::MAX
        } else {
            0
        }
    })
    .await;
    let mut events = a.events();
    a.member().wait_for_master().await.unwrap();
    for t in 0..3 {
        a.submit_work(t).await.unwrap();
    }
    drained(&a).await;
    let runs: Vec<u32> = log.runs.lock().unwrap().iter().map(|r| r.2).collect();
    assert_eq!(runs, [0, 1, 1, 1, 2]);
    let dead = loop {
        if let Event::DeadLetter {
            key,
            task,
            attempts,
            reason,
        } = events.next().await.unwrap()
        {
            break (key, task, attempts, reason);
        }
    };
    assert_eq!(dead.0, 1_i64.into()); // a u32 key in BSON
    assert_eq!(dead.1, 1_i64.into());
    assert_eq!(dead.2, 3);
    assert!(dead.3.contains("attempt 3"), "{}", dead.3);
    assert_eq!(a.take_dead_letters(), [(1, 1)]);
    assert_eq!(a.stats().dead_letters, 1);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn results_map_onto_outcomes_as_in_the_original() {
    let store = MemoryStore::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let work = work_fn(|t: &u32| *t, {
        let seen = seen.clone();
        move |t: &u32, ctx: &WorkContext| {
            let (t, attempt) = (*t, ctx.attempt());
            seen.lock().unwrap().push((t, attempt));
            async move {
                match (t, attempt) {
                    (0, 1) => Ok(false),         // retried
                    (1, 1) => Err("not yet"),    // retried
                    _ => Ok::<bool, &str>(true), // done
                }
            }
        }
    });
    let a = Managed::start("jobs", Options::new().in_memory(&store), work)
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    a.submit_work(0).await.unwrap();
    a.submit_work(1).await.unwrap();
    while a.stats().queued > 0 {
        sleep(ms(10)).await;
    }
    assert_eq!(*seen.lock().unwrap(), [(0, 1), (0, 2), (1, 1), (1, 2)]);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_bounded_queue_gives_back_pressure() {
    let store = MemoryStore::new();
    let log = Log::default();
    let a = start(
        &store,
        "a",
        &log,
        Options::new().queue_capacity(4, QueueFull::Reject),
        never,
    )
    .await;
    for t in 0..4 {
        a.submit_work(t).await.unwrap();
    }
    assert_eq!(
        a.submit_work(4).await.unwrap_err(),
        Error::QueueFull { capacity: 4 }
    );

    let b = start(
        &MemoryStore::new(),
        "b",
        &Log::default(),
        Options::new().queue_capacity(4, QueueFull::Wait),
        never,
    )
    .await;
    b.member().wait_for_master().await.unwrap();
    let t0 = Instant::now();
    for t in 0..20 {
        b.submit_work(t).await.unwrap(); // waits for the worker once 4 are queued
        assert!(b.stats().queued <= 4);
    }
    assert!(Instant::now() - t0 >= ms(15), "submissions never waited");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_task_sees_the_mastership_end_and_no_new_task_starts() {
    let store = MemoryStore::new();
    let started = Arc::new(Mutex::new(Vec::new()));
    let work = work_fn(|t: &u32| *t, {
        let started = started.clone();
        move |t: &u32, ctx: &WorkContext| {
            started.lock().unwrap().push(*t);
            let ctx = ctx.clone();
            async move {
                tokio::select! {
                    _ = ctx.lost() => Outcome::Retry("mastership lost".into()),
                    _ = sleep(Duration::from_secs(3600)) => Outcome::Done,
                }
            }
        }
    });
    let a = Managed::start(
        "jobs",
        Options::new().in_memory(&store).member_id("a"),
        work,
    )
    .await
    .unwrap();
    a.member().wait_for_master().await.unwrap();
    a.submit_work(1).await.unwrap();
    a.submit_work(2).await.unwrap();
    sleep(ms(100)).await;
    store.set_unreachable("a", true);
    let t = Instant::now();
    a.member().wait_for_state(State::Error).await.unwrap();
    sleep(Duration::from_secs(20)).await;
    // Task 1 gave up when the lease ended; task 2 never started.
    assert_eq!(*started.lock().unwrap(), [1]);
    assert!(Instant::now() - t >= ms(1));
    assert_eq!(a.stats().queued, 2);
    // Back in touch, it is master again and resumes with task 1.
    store.set_unreachable("a", false);
    assert_eq!(a.member().wait_for_master().await.unwrap(), 2);
    sleep(ms(100)).await;
    assert_eq!(*started.lock().unwrap(), [1, 1]);
    drop(a);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_is_reported_and_retried() {
    let store = MemoryStore::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let work = work_fn(|t: &u32| *t, {
        let calls = calls.clone();
        move |_: &u32, _: &WorkContext| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("task exploded");
                }
                Outcome::Done
            }
        }
    });
    let a = Managed::start("jobs", Options::new().in_memory(&store), work)
        .await
        .unwrap();
    let mut events = a.events();
    a.member().wait_for_master().await.unwrap();
    a.submit_work(7).await.unwrap();
    let panic = loop {
        if let Event::Panic(p) = events.next().await.unwrap() {
            break p;
        }
    };
    assert!(panic.contains("task exploded"), "{panic}");
    while a.stats().queued > 0 {
        sleep(ms(10)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(a.last_finished(), Some(7));
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_task_without_its_key_field_is_refused() {
    #[derive(serde::Serialize)]
    struct Job {
        name: String,
    }
    let work = work_fn(
        failover::key_field::<Job>("id"),
        |_: &Job, _: &WorkContext| async { true },
    );
    let a = Managed::start("jobs", Options::new().in_memory(&MemoryStore::new()), work)
        .await
        .unwrap();
    let err = a.submit_work(Job { name: "x".into() }).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Serialization {
                what: "task key",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no key"), "{err}");
    assert_eq!(a.stats().queued, 0);
    a.shutdown().await.unwrap();
}

/// Runs tasks 0..40 on `a`, aborts it (a crash) in the middle of the run, and
/// returns how many tasks `b` ran that `a` had finished.
async fn repeats_after_a_crash(progress: failover::Progress) -> usize {
    let store = MemoryStore::new();
    // One log each: the task that the crash drops never leaves a's.
    let (log_a, log_b) = (Log::default(), Log::default());
    let options = || Options::new().progress(progress);
    let a = start(&store, "a", &log_a, options(), never).await;
    a.member().wait_for_master().await.unwrap();
    let b = start(&store, "b", &log_b, options(), never).await;
    b.member().wait_for_state(State::Slave).await.unwrap();
    for t in 0..40 {
        a.submit_work(t).await.unwrap();
        b.submit_work(t).await.unwrap();
    }
    // 1 ms a task: a crash after about 20 of them, long before a's next renewal.
    while a.stats().finished < 20 {
        sleep(ms(1)).await;
    }
    a.abort();
    b.member().wait_for_master().await.unwrap();
    drained(&b).await;
    let by_a: Vec<u32> = log_a.runs.lock().unwrap().iter().map(|r| r.2).collect();
    let by_b: Vec<u32> = log_b.runs.lock().unwrap().iter().map(|r| r.2).collect();
    // Nothing lost, in order.
    let last_of_a = *by_a.last().unwrap();
    assert_eq!(
        by_b.last(),
        Some(&39),
        "b ran {by_b:?} after a ran {by_a:?}"
    );
    assert!(
        by_b[0] <= last_of_a + 1 && by_b.windows(2).all(|w| w[0] + 1 == w[1]),
        "b skipped tasks: {by_b:?} after {by_a:?}"
    );
    b.shutdown().await.unwrap();
    by_b.iter().filter(|t| by_a.contains(t)).count()
}

#[tokio::test(start_paused = true)]
async fn progress_after_every_task_repeats_at_most_the_task_in_flight() {
    // The master renews (publishing its run) after every task.
    let repeats = repeats_after_a_crash(failover::Progress::EveryTask).await;
    assert!(repeats <= 1, "{repeats} tasks ran again after the crash");
}

#[tokio::test(start_paused = true)]
async fn progress_with_the_renewals_repeats_what_finished_since_the_last_one() {
    // The default, the original's way, for contrast: the check above can fail.
    let repeats = repeats_after_a_crash(failover::Progress::WithRenewal).await;
    assert!(
        repeats > 1,
        "only {repeats} tasks ran again after the crash"
    );
}
