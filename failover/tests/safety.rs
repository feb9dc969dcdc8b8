//! The safety promises under the workloads most likely to break them: work that
//! blocks its thread, work that panics before its future exists, a shutdown while a
//! task runs, keys that repeat, members fed from different points. In-memory store.

mod common;

use common::{fast, ms, until};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::{work_fn, Event, Managed, MemoryStore, State, WorkContext};

type Starts = Arc<Mutex<Vec<(u32, bool)>>>;

/// Work that blocks its thread for `block` per task and records whether the lease
/// was valid when each task started.
fn blocking_work(starts: Starts, block: Duration) -> impl failover::Work<Task = u32, Key = u32> {
    work_fn(
        |n: &u32| *n,
        move |n: &u32, ctx: &WorkContext| {
            starts.lock().unwrap().push((*n, ctx.is_master()));
            std::thread::sleep(block);
            async { true }
        },
    )
}

/// Issue 8, item 1: a task starts only after the lease was confirmed valid, even
/// when every task blocks its thread (no batching of lease checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_starts_under_a_valid_lease_when_work_blocks_its_thread() {
    let store = MemoryStore::new();
    let starts = Starts::default();
    let a = Managed::start(
        "blocking",
        fast(&store, "a"),
        blocking_work(starts.clone(), ms(20)),
    )
    .await
    .unwrap();
    a.member().wait_for_master().await.unwrap();
    a.submit_work(1).await.unwrap();
    until(ms(2000), "task 1", || a.stats().finished == 1).await;
    // Cut the master off: it can no longer renew, so its lease runs out within
    // 300 ms while 59 tasks of 20 ms each wait.
    store.set_unreachable("a", true);
    for n in 2..=60 {
        a.submit_work(n).await.unwrap();
    }
    tokio::time::sleep(ms(1500)).await;
    let starts = starts.lock().unwrap().clone();
    let without: Vec<u32> = starts.iter().filter(|s| !s.1).map(|s| s.0).collect();
    assert!(
        without.is_empty(),
        "tasks started without a valid lease: {without:?} (of {} started)",
        starts.len()
    );
    assert!(
        starts.len() < 60,
        "the master went on working after its lease ran out"
    );
}

/// Issue 8, item 1: work that blocks its thread cannot starve the renewals: the
/// master keeps its lease through 2 s of blocking work (multi-thread runtime, the
/// default of `#[tokio::main]`; a single worker thread makes it the worst case).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn blocking_work_does_not_starve_renewals() {
    let store = MemoryStore::new();
    let starts = Starts::default();
    let a = Managed::start(
        "starve",
        fast(&store, "a"),
        blocking_work(starts.clone(), ms(50)),
    )
    .await
    .unwrap();
    let mut events = a.events();
    let epoch = a.member().wait_for_master().await.unwrap();
    for n in 1..=40 {
        a.submit_work(n).await.unwrap();
    }
    until(ms(10_000), "40 tasks", || a.stats().finished == 40).await;
    assert_eq!(
        a.epoch(),
        Some(epoch),
        "the master lost its lease to blocking work"
    );
    while let Some(event) = events.try_next() {
        assert!(
            !matches!(event, Event::Error(_)),
            "the master lost its lease to blocking work: {event:?}"
        );
    }
    assert!(starts.lock().unwrap().iter().all(|s| s.1));
}

/// Issue 8, item 5: a work function that panics before its future exists is caught
/// like any panic in a task; the worker goes on with the next task.
#[tokio::test(start_paused = true)]
async fn work_that_panics_before_its_future_exists_is_caught() {
    let store = MemoryStore::new();
    let done = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let work = work_fn(
        |n: &u32| *n,
        move |n: &u32, _: &WorkContext| {
            assert!(*n != 2, "task 2 cannot be built");
            d.lock().unwrap().push(*n);
            async { true }
        },
    );
    let a = Managed::start("panics", fast(&store, "a").max_attempts(2), work)
        .await
        .unwrap();
    let mut events = a.events();
    for n in 1..=3 {
        a.submit_work(n).await.unwrap();
    }
    until(ms(5000), "task 3", || done.lock().unwrap().contains(&3)).await;
    assert_eq!(*done.lock().unwrap(), vec![1, 3]);
    let mut panics = 0;
    while let Some(event) = events.try_next() {
        if let Event::Panic(message) = event {
            assert!(message.contains("task 2 cannot be built"), "{message}");
            panics += 1;
        }
    }
    assert_eq!(panics, 2, "both attempts of task 2 are reported");
    assert_eq!(a.stats().dead_letters, 1);
    assert!(a.member().is_master());
}

/// Issue 8, item 6: the election handle of a managed member cannot release the
/// lease while a task still runs: the next master starts after the task ended.
#[tokio::test(start_paused = true)]
async fn a_managed_members_election_shutdown_waits_for_the_running_task() {
    let store = MemoryStore::new();
    let running = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let make = |id: &'static str| {
        let (running, overlaps, runs) = (running.clone(), overlaps.clone(), runs.clone());
        work_fn(
            |n: &u32| *n,
            move |n: &u32, _: &WorkContext| {
                let (running, overlaps, runs, n) =
                    (running.clone(), overlaps.clone(), runs.clone(), *n);
                async move {
                    if running.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(ms(1000)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    runs.lock().unwrap().push((id, n));
                    true
                }
            },
        )
    };
    let a = Managed::start("handover", fast(&store, "a"), make("a"))
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    let b = Managed::start("handover", fast(&store, "b"), make("b"))
        .await
        .unwrap();
    b.member().wait_for_state(State::Slave).await.unwrap();
    for m in [&a, &b] {
        m.submit_work(1).await.unwrap();
        m.submit_work(2).await.unwrap();
    }
    tokio::time::sleep(ms(200)).await; // task 1 runs on a
    let _ = a.member().shutdown().await;
    until(ms(10_000), "tasks 1 and 2", || {
        runs.lock().unwrap().len() >= 2
    })
    .await;
    tokio::time::sleep(ms(2000)).await;
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two members ran a task at once: {:?}",
        runs.lock().unwrap()
    );
    let runs = runs.lock().unwrap().clone();
    assert_eq!(
        runs,
        vec![("a", 1), ("b", 2)],
        "a task ran twice or not at all"
    );
}

/// Issue 8, item 7 (first repro): a member that re-takes its own lease must not
/// treat its own published key as a pending prune that a later task with the same
/// key (keys may repeat over time) would fire.
#[tokio::test(start_paused = true)]
async fn a_repeated_key_does_not_clear_the_queue_after_a_retake() {
    let store = MemoryStore::new();
    let done = Arc::new(Mutex::new(Vec::new()));
    let d = done.clone();
    let work = work_fn(
        |n: &(u32, u32)| n.0,
        move |n: &(u32, u32), _: &WorkContext| {
            let (d, n) = (d.clone(), *n);
            async move {
                if n.0 == 4 {
                    tokio::time::sleep(ms(500)).await;
                }
                d.lock().unwrap().push(n);
                true
            }
        },
    );
    let a = Managed::start("retake", fast(&store, "a"), work)
        .await
        .unwrap();
    let mut events = a.events();
    let first = a.member().wait_for_master().await.unwrap();
    for n in 1..=3 {
        a.submit_work((n, 0)).await.unwrap();
    }
    until(ms(2000), "tasks 1-3", || done.lock().unwrap().len() == 3).await;
    tokio::time::sleep(ms(250)).await; // key 3 is published with a renewal
                                       // Slow every answer past the deadline: the master steps down; then it
                                       // re-takes its own lease.
    store.set_delay("a", ms(400));
    a.member().wait_for_state(State::Error).await.unwrap();
    store.set_delay("a", Duration::ZERO);
    loop {
        match tokio::time::timeout(ms(10_000), events.next()).await {
            Ok(Some(Event::Master { epoch })) if epoch > first => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("member stopped"),
            Err(_) => panic!("the member did not re-take its lease"),
        }
    }
    a.submit_work((4, 0)).await.unwrap();
    tokio::time::sleep(ms(100)).await; // task 4 runs for 500 ms
    for task in [(5, 0), (6, 0), (3, 1), (7, 0)] {
        a.submit_work(task).await.unwrap();
    }
    until(ms(5000), "tasks 4-7 and the new 3", || {
        done.lock().unwrap().len() == 8
    })
    .await;
    let got: BTreeSet<(u32, u32)> = done.lock().unwrap().iter().copied().collect();
    for task in [(4, 0), (5, 0), (6, 0), (3, 1), (7, 0)] {
        assert!(got.contains(&task), "task {task:?} was lost: done {got:?}");
    }
}

/// Issue 8, item 7 (second repro): a member that joined late wins the lease and
/// publishes keys of its own feed; a standby must not drop the earlier tasks that
/// nobody ran. Nothing is lost while a member that holds a task is alive.
#[tokio::test(start_paused = true)]
async fn a_late_joiner_that_wins_does_not_make_others_drop_unrun_tasks() {
    let store = MemoryStore::new();
    let done = Arc::new(Mutex::new(Vec::new()));
    let make = |id: &'static str| {
        let d = done.clone();
        work_fn(
            |n: &u32| *n,
            move |n: &u32, _: &WorkContext| {
                let (d, n) = (d.clone(), *n);
                async move {
                    tokio::time::sleep(ms(if n == 3 { 1000 } else { 10 })).await;
                    d.lock().unwrap().push((id, n));
                    true
                }
            },
        )
    };
    let a = Managed::start("late", fast(&store, "a"), make("a"))
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    let b = Managed::start("late", fast(&store, "b"), make("b"))
        .await
        .unwrap();
    b.member().wait_for_state(State::Slave).await.unwrap();
    for n in 1..=5 {
        a.submit_work(n).await.unwrap();
    }
    for n in 1..=7 {
        b.submit_work(n).await.unwrap();
    }
    // A finishes 1 and 2 and publishes 2; B prunes them.
    until(ms(2000), "b pruned 1 and 2", || {
        b.queued_keys().first() == Some(&3)
    })
    .await;
    // C starts late and is fed only 6 and 7.
    let c = Managed::start("late", fast(&store, "c"), make("c"))
        .await
        .unwrap();
    c.member().wait_for_state(State::Slave).await.unwrap();
    c.submit_work(6).await.unwrap();
    c.submit_work(7).await.unwrap();
    // A crashes while running 3; B is cut off during the take-over.
    store.set_unreachable("b", true);
    a.abort();
    until(ms(10_000), "c took over", || c.member().is_master()).await;
    until(ms(5000), "c ran 6 and 7", || c.stats().queued == 0).await;
    tokio::time::sleep(ms(500)).await; // c publishes 7
    store.set_unreachable("b", false);
    // B follows c and reads its progress: 3, 4 and 5 stand before c's run, and
    // nobody ran them. B keeps them and, while c is still alive, asks c to hand
    // over and runs them.
    until(ms(10_000), "b ran 3, 4, 5", || {
        let d = done.lock().unwrap();
        [3, 4, 5]
            .iter()
            .all(|n| d.iter().any(|(who, m)| *who == "b" && m == n))
    })
    .await;
    let _ = c.shutdown().await;
}

/// Issue 8, item 7, found by the model check once it ran the library's own rule
/// (`managed_late_joiner_is_safe`, keys that never repeat): the first master to
/// publish joined late. A led first but was cut off before it published anything,
/// holding task 1; B, fed only 2 and 3, took over, ran them and published its run.
/// Its run claimed everything before 2 as run (the predecessor had published
/// nothing), so A dropped 1, which nobody ran. Now a run claims only what it
/// ran from its origin on, and A keeps 1 and runs it when it leads.
#[tokio::test(start_paused = true)]
async fn the_first_run_of_a_late_joiner_does_not_make_others_drop_unrun_tasks() {
    let store = MemoryStore::new();
    let done = Arc::new(Mutex::new(Vec::new()));
    let make = |id: &'static str| {
        let d = done.clone();
        work_fn(
            |n: &u32| *n,
            move |n: &u32, ctx: &WorkContext| {
                let (d, n, ctx) = (d.clone(), *n, ctx.clone());
                async move {
                    tokio::time::sleep(ms(50)).await;
                    if !ctx.is_master() {
                        return false; // the term ended: try again later
                    }
                    d.lock().unwrap().push((id, n));
                    true
                }
            },
        )
    };
    let a = Managed::start("first-run", fast(&store, "a"), make("a"))
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    // A is cut off before it is fed anything: it publishes nothing more, and
    // steps down at its deadline, holding 1, 2 and 3.
    store.set_unreachable("a", true);
    until(ms(2000), "a stepped down", || !a.member().is_master()).await;
    for n in 1..=3 {
        a.submit_work(n).await.unwrap();
    }
    // B joins late, fed only 2 and 3, and takes over.
    let b = Managed::start("first-run", fast(&store, "b"), make("b"))
        .await
        .unwrap();
    b.submit_work(2).await.unwrap();
    b.submit_work(3).await.unwrap();
    until(ms(10_000), "b took over", || b.member().is_master()).await;
    until(ms(5000), "b ran 2 and 3", || b.stats().queued == 0).await;
    tokio::time::sleep(ms(500)).await; // b publishes 3
    store.set_unreachable("a", false);
    until(ms(5000), "a follows b", || {
        a.member().state() == State::Slave && a.stats().pruned >= 2
    })
    .await;
    let kept = a.queued_keys();
    assert_eq!(kept, [1], "a dropped a task nobody ran, or kept what b ran");
    // B hands over: A runs 1.
    let _ = b.shutdown().await;
    until(ms(10_000), "a ran 1", || {
        done.lock()
            .unwrap()
            .iter()
            .any(|&(who, n)| who == "a" && n == 1)
    })
    .await;
    assert!(
        !done
            .lock()
            .unwrap()
            .iter()
            .any(|&(who, n)| who == "a" && n != 1),
        "a repeated what b ran: {:?}",
        done.lock().unwrap()
    );
}

/// Issue 8, item 8: a key without a BSON form is refused at submit, not silently
/// never published.
#[tokio::test(start_paused = true)]
async fn a_key_without_a_bson_form_is_refused_at_submit() {
    let store = MemoryStore::new();
    let work = work_fn(|n: &u64| *n, |_: &u64, _: &WorkContext| async { true });
    let a = Managed::start("keys", fast(&store, "a"), work)
        .await
        .unwrap();
    let err = a.submit_work(1 << 63).await.unwrap_err().to_string();
    assert!(err.contains("key"), "{err}");
    a.submit_work(5).await.unwrap();
}

/// Who ran which task, in order.
type Ran = Arc<Mutex<Vec<(&'static str, u32)>>>;

/// Tasks are numbers, their own keys and, when `sequenced`, their own feed
/// sequence numbers. A task takes 10 ms; the `slow` one blocks for 10 s (a master
/// that crashes while it runs).
struct Recorder {
    id: &'static str,
    sequenced: bool,
    slow: Option<u32>,
    ran: Ran,
}

impl failover::Work for Recorder {
    type Task = u32;
    type Key = u32;
    fn key(&self, n: &u32) -> u32 {
        *n
    }
    fn sequence(&self, n: &u32) -> Option<u64> {
        self.sequenced.then_some(u64::from(*n))
    }
    async fn work(&self, n: &u32, ctx: &WorkContext) -> failover::Outcome {
        let wait = if self.slow == Some(*n) { 10_000 } else { 10 };
        tokio::time::sleep(ms(wait)).await;
        if !ctx.is_master() {
            return failover::Outcome::Retry("the term ended".into());
        }
        self.ran.lock().unwrap().push((self.id, *n));
        failover::Outcome::Done
    }
}

fn recorder(id: &'static str, sequenced: bool, ran: &Ran) -> Recorder {
    Recorder {
        id,
        sequenced,
        slow: None,
        ran: ran.clone(),
    }
}

/// A graceful hand-over to a standby whose feed lags (key mode): A runs 1, 2
/// and 3 and shuts down, publishing its run in the release; B has been fed only
/// 1 when it takes the released lease. B must keep A's run as a prune to apply
/// when the rest of its feed arrives, not clear it and run 1, 2 and 3 again.
#[tokio::test(start_paused = true)]
async fn a_graceful_hand_over_repeats_nothing_to_a_lagging_standby() {
    let store = MemoryStore::new();
    let ran = Ran::default();
    let a = Managed::start("lagging", fast(&store, "a"), recorder("a", false, &ran))
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    let b = Managed::start("lagging", fast(&store, "b"), recorder("b", false, &ran))
        .await
        .unwrap();
    b.member().wait_for_state(State::Slave).await.unwrap();
    b.submit_work(1).await.unwrap();
    for n in 1..=3 {
        a.submit_work(n).await.unwrap();
    }
    until(ms(2000), "a ran 1, 2, 3", || a.stats().finished == 3).await;
    tokio::time::sleep(ms(250)).await; // b reads a's run, whose last key it lacks
    a.shutdown().await.unwrap();
    until(ms(5000), "b took over", || b.member().is_master()).await;
    tokio::time::sleep(ms(300)).await;
    // B's feed catches up; then a task nobody ran.
    b.submit_work(2).await.unwrap();
    b.submit_work(3).await.unwrap();
    tokio::time::sleep(ms(300)).await;
    b.submit_work(4).await.unwrap();
    until(ms(5000), "b ran 4", || {
        ran.lock()
            .unwrap()
            .iter()
            .any(|&(who, n)| who == "b" && n == 4)
    })
    .await;
    let ran = ran.lock().unwrap().clone();
    assert_eq!(
        ran,
        [("a", 1), ("a", 2), ("a", 3), ("b", 4)],
        "the hand-over repeated tasks that A ran and published in its release"
    );
    assert!(b.queued_keys().is_empty(), "b holds {:?}", b.queued_keys());
}

/// A full queue that refuses a task (`QueueFull::Reject`) leaves a gap in its
/// member's feed; with sequence numbers, that member must not vouch for the gap
/// when it leads. C refuses 2, then gets 3; A crashes while it runs 2; C leads
/// and runs 3: B, alive and holding 2, must keep it.
#[tokio::test(start_paused = true)]
async fn a_task_refused_by_a_full_queue_is_not_vouched_for() {
    let store = MemoryStore::new();
    let ran = Ran::default();
    let slow = Recorder {
        slow: Some(2),
        ..recorder("a", true, &ran)
    };
    let a = Managed::start("refused", fast(&store, "a"), slow)
        .await
        .unwrap();
    a.member().wait_for_master().await.unwrap();
    let b = Managed::start("refused", fast(&store, "b"), recorder("b", true, &ran))
        .await
        .unwrap();
    let c = Managed::start(
        "refused",
        fast(&store, "c").queue_capacity(1, failover::QueueFull::Reject),
        recorder("c", true, &ran),
    )
    .await
    .unwrap();
    for m in [&b, &c] {
        m.member().wait_for_state(State::Slave).await.unwrap();
    }
    for m in [&a, &b] {
        m.submit_work(1).await.unwrap();
        m.submit_work(2).await.unwrap();
    }
    c.submit_work(1).await.unwrap();
    let refused = c.submit_work(2).await.unwrap_err();
    assert!(
        matches!(refused, failover::Error::QueueFull { capacity: 1 }),
        "{refused}"
    );
    // A runs 1 and publishes it; C drops 1, which makes room for 3.
    until(ms(2000), "c pruned 1", || c.stats().queued == 0).await;
    for m in [&a, &b, &c] {
        m.submit_work(3).await.unwrap();
    }
    // A crashes while it runs 2; B is cut off, so that C takes over.
    store.set_unreachable("b", true);
    a.abort();
    until(ms(10_000), "c took over", || c.member().is_master()).await;
    until(ms(5000), "c ran 3", || c.stats().queued == 0).await;
    tokio::time::sleep(ms(500)).await; // c publishes its run
    store.set_unreachable("b", false);
    let followed = tokio::time::timeout(ms(5000), async {
        // B drops 3 once it reads C's run. (1, which A ran, B keeps if it
        // missed A's publication of it: C vouches only for what follows its
        // gap. A repeat, never a loss.)
        while b.member().state() != State::Slave || b.queued_keys().contains(&3) {
            tokio::time::sleep(ms(5)).await;
        }
    })
    .await;
    assert!(
        followed.is_ok(),
        "b did not follow c: {:?}, {:?}, holds {:?}, ran {:?}",
        b.member().state(),
        b.stats(),
        b.queued_keys(),
        ran.lock().unwrap()
    );
    let kept = b.queued_keys();
    let ran_2 = ran.lock().unwrap().iter().any(|&(_, n)| n == 2);
    assert!(
        ran_2 || kept.contains(&2),
        "b dropped task 2, which nobody ran: b holds {kept:?}, ran {:?}",
        ran.lock().unwrap()
    );
    assert!(!kept.contains(&3), "b kept 3, which c ran: {kept:?}");
}

/// Kept is not done: a late joiner leads, and a standby holds tasks that no run
/// covers and no other member holds (3, 4, 5). The standby must get the lease
/// (the master hands it over after its running task) and run them, without a
/// crash or a shutdown to make room. Both ways of telling tasks apart.
#[tokio::test(start_paused = true)]
async fn tasks_only_a_standby_holds_are_run_at_last() {
    for sequenced in [false, true] {
        let store = MemoryStore::new();
        let ran = Ran::default();
        let name = if sequenced {
            "orphans-seq"
        } else {
            "orphans-key"
        };
        let a = Managed::start(name, fast(&store, "a"), recorder("a", sequenced, &ran))
            .await
            .unwrap();
        a.member().wait_for_master().await.unwrap();
        let b = Managed::start(name, fast(&store, "b"), recorder("b", sequenced, &ran))
            .await
            .unwrap();
        b.member().wait_for_state(State::Slave).await.unwrap();
        for n in 1..=2 {
            a.submit_work(n).await.unwrap();
            b.submit_work(n).await.unwrap();
        }
        until(ms(2000), "b pruned 1 and 2", || b.stats().pruned == 2).await;
        // A crashes; C, fed from 6 on, takes over while B is cut off.
        a.abort();
        for n in 3..=7 {
            b.submit_work(n).await.unwrap();
        }
        store.set_unreachable("b", true);
        let c = Managed::start(name, fast(&store, "c"), recorder("c", sequenced, &ran))
            .await
            .unwrap();
        c.submit_work(6).await.unwrap();
        c.submit_work(7).await.unwrap();
        until(ms(10_000), "c took over", || c.member().is_master()).await;
        until(ms(5000), "c ran 6 and 7", || c.stats().queued == 0).await;
        store.set_unreachable("b", false);
        // Nobody crashes or shuts down any more: B must come to run 3, 4, 5.
        tokio::time::sleep(ms(3000)).await;
        let ran = ran.lock().unwrap().clone();
        let missing: Vec<u32> = (3..=5)
            .filter(|n| !ran.iter().any(|(_, m)| m == n))
            .collect();
        assert!(
            missing.is_empty(),
            "sequenced: {sequenced}: tasks {missing:?} were held by b ({:?}) but never run: ran {ran:?}",
            b.queued_keys()
        );
        for n in 1..=7 {
            let times = ran.iter().filter(|(_, m)| *m == n).count();
            assert_eq!(
                times, 1,
                "sequenced: {sequenced}: task {n} ran {times} times: {ran:?}"
            );
        }
        a.abort();
        b.abort();
        c.abort();
    }
}
