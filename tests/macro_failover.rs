//! A subsystem built with `#[failover::subsystem]`, run through a failover: three
//! members on one `MemoryStore`, all fed the same tasks; the master is dropped
//! (a crash: no shutdown, no hand-over) and a standby takes over.
//!
//! Runs in real time with short intervals (renewal every 100 ms, 300 ms leases),
//! so the whole failover takes about half a second; every wait is bounded by
//! 10 s. (Tokio's paused clock would need its `test-util` feature in this
//! package's dev-dependencies.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::bson::Bson;
use failover::{Intervals, Managed, MemoryStore, Options, State, WorkContext};
use serde::Serialize;

#[derive(Serialize)]
struct Task {
    id: u64,
}

/// What the members saw, in order, across all members.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Master {
        member: &'static str,
        epoch: u64,
    },
    Slave {
        member: &'static str,
        epoch: u64,
    },
    Work {
        member: &'static str,
        task: u64,
        epoch: u64,
    },
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[failover::subsystem(name = "macro-failover", key = "id")]
struct Recorder {
    member: &'static str,
    log: Log,
}

#[failover::subsystem]
impl Recorder {
    #[work]
    async fn record(&self, task: &Task, ctx: &WorkContext) -> bool {
        self.push(Seen::Work {
            member: self.member,
            task: task.id,
            epoch: ctx.epoch(),
        });
        true
    }

    #[on_master]
    async fn leading(&self, epoch: u64) {
        self.push(Seen::Master {
            member: self.member,
            epoch,
        });
    }

    #[on_slave]
    fn following(&self, epoch: u64) {
        self.push(Seen::Slave {
            member: self.member,
            epoch,
        });
    }

    fn push(&self, seen: Seen) {
        self.log.lock().unwrap().push(seen);
    }
}

fn options(store: &MemoryStore, member: &str) -> Options {
    Options::new()
        .in_memory(store)
        .member_id(member)
        .intervals(Intervals {
            master: Duration::from_millis(100),
            slave: Duration::from_millis(150),
            ..Intervals::default()
        })
        .lease(Duration::from_millis(300))
}

async fn start(store: &MemoryStore, member: &'static str, log: &Log) -> Managed<Recorder> {
    Recorder {
        member,
        log: log.clone(),
    }
    .start(options(store, member))
    .await
    .expect("member starts")
}

/// Waits until `done` holds, at most 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn a_macro_built_subsystem_fails_over_with_its_hooks_and_work() {
    let store = MemoryStore::new();
    let log = Log::default();

    let a = start(&store, "a", &log).await;
    assert_eq!(a.member().wait_for_master().await.unwrap(), 1);
    let b = start(&store, "b", &log).await;
    let c = start(&store, "c", &log).await;
    b.member().wait_for_state(State::Slave).await.unwrap();
    c.member().wait_for_state(State::Slave).await.unwrap();

    for id in 1..=3 {
        for member in [&a, &b, &c] {
            member.submit_work(Task { id }).await.unwrap();
        }
    }
    // The master works the tasks; the standbys drop them once it publishes the
    // last key with a renewal.
    until("the standbys learn that task 3 is done", || {
        a.stats().finished == 3
            && [&b, &c]
                .iter()
                .all(|s| s.last_finished() == Some(Bson::Int64(3)) && s.stats().queued == 0)
    })
    .await;

    drop(a); // a crash: the lease stays until it expires
    let (b_leads, epoch) = tokio::select! {
        epoch = b.member().wait_for_master() => (true, epoch),
        epoch = c.member().wait_for_master() => (false, epoch),
    };
    assert_eq!(epoch.unwrap(), 2, "the new master's fencing token");
    let (new, other, new_id, other_id) = if b_leads {
        (b, c, "b", "c")
    } else {
        (c, b, "c", "b")
    };

    for id in 4..=5 {
        for member in [&new, &other] {
            member.submit_work(Task { id }).await.unwrap();
        }
    }
    until("the new master works tasks 4 and 5", || {
        new.stats().finished == 2 && other.last_finished() == Some(Bson::Int64(5))
    })
    .await;
    until("the other standby follows epoch 2", || {
        seen(&log).contains(&Seen::Slave {
            member: other_id,
            epoch: 2,
        })
    })
    .await;

    let seen = seen(&log);
    let masters: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Master { .. }))
        .cloned()
        .collect();
    assert_eq!(
        masters,
        [
            Seen::Master {
                member: "a",
                epoch: 1
            },
            Seen::Master {
                member: new_id,
                epoch: 2
            },
        ],
        "on_master fired once per mastership, with its epoch; all seen: {seen:?}"
    );
    for member in ["b", "c"] {
        assert!(
            seen.contains(&Seen::Slave { member, epoch: 1 }),
            "{member} followed epoch 1: {seen:?}"
        );
    }
    let work: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Work { .. }))
        .cloned()
        .collect();
    let expected: Vec<_> = (1..=3)
        .map(|task| Seen::Work {
            member: "a",
            task,
            epoch: 1,
        })
        .chain((4..=5).map(|task| Seen::Work {
            member: new_id,
            task,
            epoch: 2,
        }))
        .collect();
    assert_eq!(
        work, expected,
        "each task ran once, on the master of its time"
    );
    assert_eq!(other.stats().finished, 0, "the standby worked nothing");
    assert_eq!(other.state(), State::Slave);

    new.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}
