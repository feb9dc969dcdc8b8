//! Managed mode through a crash and a graceful hand-over: three members fed the
//! same 1,000 tasks, on the in-memory store and over the wire.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::{Intervals, Managed, MemoryStore, Options, Outcome, Work, WorkContext};
use tokio::time::{sleep, timeout, Instant};

const TASKS: u32 = 1000;
const MASTER: Duration = Duration::from_millis(300);

/// One finished task: who, under which epoch, which task, when.
type Run = (String, u64, u32, Instant);

struct Recorded {
    member: String,
    runs: Arc<Mutex<Vec<Run>>>,
}

impl Work for Recorded {
    type Task = u32;
    type Key = u32;

    fn key(&self, task: &u32) -> u32 {
        *task
    }

    async fn work(&self, task: &u32, ctx: &WorkContext) -> Outcome {
        sleep(Duration::from_millis(2)).await;
        self.runs
            .lock()
            .unwrap()
            .push((self.member.clone(), ctx.epoch(), *task, Instant::now()));
        Outcome::Done
    }
}

fn intervals() -> Intervals {
    Intervals {
        master: MASTER,
        slave: Duration::from_millis(400),
        ticking: Duration::from_millis(400),
        error: Duration::from_millis(400),
        ..Intervals::default()
    }
}

async fn master_of(members: &[Option<Managed<Recorded>>]) -> usize {
    timeout(Duration::from_secs(10), async {
        loop {
            if let Some(i) = members
                .iter()
                .position(|m| m.as_ref().is_some_and(|m| m.member().is_master()))
            {
                return i;
            }
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a master within 10 s")
}

async fn finished_by(runs: &Arc<Mutex<Vec<Run>>>, member: &str, count: usize) {
    timeout(Duration::from_secs(30), async {
        while runs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == member)
            .count()
            < count
        {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{member} did not finish {count} tasks in time"));
}

async fn scenario(options: impl Fn(&str) -> Options) {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        let work = Recorded {
            member: id.to_owned(),
            runs: runs.clone(),
        };
        let m = Managed::start(
            "jobs",
            options(id).intervals(intervals()).member_id(id),
            work,
        )
        .await
        .unwrap();
        members.push(Some(m));
    }
    for t in 0..TASKS {
        for m in members.iter().flatten() {
            m.submit_work(t).await.unwrap();
        }
    }

    // 1. Crash the first master a third of the way through.
    let first = master_of(&members).await;
    let first_id = members[first]
        .as_ref()
        .unwrap()
        .member()
        .member_id()
        .to_owned();
    finished_by(&runs, &first_id, TASKS as usize / 3).await;
    members[first].take().unwrap().member().abort();
    let crashed_at = Instant::now();

    // 2. Shut the second master down gracefully two thirds of the way through.
    let second = master_of(&members).await;
    let second_m = members[second].take().unwrap();
    let second_id = second_m.member().member_id().to_owned();
    finished_by(&runs, &second_id, TASKS as usize / 3).await;
    second_m.shutdown().await.unwrap();

    // 3. The third works off the rest.
    let third = master_of(&members).await;
    let third_m = members[third].take().unwrap();
    timeout(Duration::from_secs(30), async {
        while third_m.stats().queued > 0 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the last master drains the queue");
    third_m.shutdown().await.unwrap();

    let runs = runs.lock().unwrap().clone();
    let by_member = |id: &str| {
        runs.iter()
            .filter(|r| r.0 == id)
            .cloned()
            .collect::<Vec<_>>()
    };

    // Every task ran at least once.
    let ran: HashSet<u32> = runs.iter().map(|r| r.2).collect();
    assert_eq!(
        ran.len(),
        TASKS as usize,
        "tasks never run: {:?}",
        (0..TASKS).filter(|t| !ran.contains(t)).collect::<Vec<_>>()
    );

    // Within each epoch, tasks ran in order, each once.
    let mut epochs: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for r in &runs {
        epochs.entry(r.1).or_default().push(r.2);
    }
    for (epoch, tasks) in &epochs {
        assert!(
            tasks.windows(2).all(|w| w[0] < w[1]),
            "epoch {epoch} ran out of order"
        );
    }
    // Each epoch had one member.
    for epoch in epochs.keys() {
        let holders: HashSet<&str> = runs
            .iter()
            .filter(|r| r.1 == *epoch)
            .map(|r| r.0.as_str())
            .collect();
        assert_eq!(holders.len(), 1, "epoch {epoch} had holders {holders:?}");
    }

    // The crash: only tasks the first master finished after its last published key
    // (so within the last renewal period before the crash) may run twice.
    let first_runs = by_member(&first_id);
    let second_runs = by_member(&second_id);
    let second_tasks: HashSet<u32> = second_runs.iter().map(|r| r.2).collect();
    let dup_after_crash: Vec<&Run> = first_runs
        .iter()
        .filter(|r| second_tasks.contains(&r.2))
        .collect();
    // A renewal's round trip, plus a renewal timer that fires late on a loaded
    // 2-core machine.
    let slack = Duration::from_millis(250);
    for r in &dup_after_crash {
        assert!(
            r.3 + MASTER + slack >= crashed_at,
            "task {} finished {:?} before the crash, long enough to be published, and ran again",
            r.2,
            crashed_at - r.3
        );
    }

    // The graceful hand-over repeats nothing.
    let third_id = third_m.member().member_id().to_owned();
    let third_tasks: HashSet<u32> = by_member(&third_id).iter().map(|r| r.2).collect();
    let dup_after_handover: Vec<u32> = second_runs
        .iter()
        .map(|r| r.2)
        .filter(|t| third_tasks.contains(t))
        .collect();
    assert!(
        dup_after_handover.is_empty(),
        "repeated after the hand-over: {dup_after_handover:?}"
    );
    eprintln!(
        "{} runs of {TASKS} tasks; {} repeated after the crash, none after the hand-over; epochs {:?}",
        runs.len(),
        dup_after_crash.len(),
        epochs.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_members_survive_a_crash_and_a_hand_over() {
    let store = MemoryStore::new();
    scenario(|_| Options::new().in_memory(&store)).await;
}

// Over the wire: one test per selected server (mock, FerretDB, MONGODB_URI).
support::server_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_over_the_wire_survive_a_crash_and_a_hand_over(uri: String) {
        scenario(|_| {
            Options::new()
                .connect_string(uri.clone())
                .collection("managed_failover")
        })
        .await;
    }
}
