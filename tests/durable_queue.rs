//! The durable queue (issue 10) over the wire: `MONGODB_URI`, or the test server
//! the harness starts. Wall-clock time: short intervals, and bounds that are the
//! protocol's with an honest margin for a shared 2-core machine; waits poll the
//! database for the state they wait for, never sleep and hope.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::{
    work_fn, DurableQueue, Error, Intervals, Managed, Options, Outcome, Progress, Queue, QueueFull,
    WorkContext,
};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const LEASE: u64 = 1000;

fn intervals() -> Intervals {
    Intervals {
        init: Duration::ZERO,
        master: ms(300),
        slave: ms(400),
        ticking: ms(400),
        error: ms(300),
    }
}

fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("dq_{what}_{}_{n}", std::process::id())
}

fn options(uri: &str, collection: &str, id: &str, queue: DurableQueue) -> Options {
    Options::new()
        .connect_string(uri)
        .collection(collection)
        .member_id(format!("{collection}-{id}"))
        .intervals(intervals())
        .lease(ms(LEASE))
        .durable_queue(queue)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    /// The producer.
    p: u32,
    /// The producer's own counter.
    n: u64,
}

/// One line per task start or end: (key, epoch, member, started?).
#[derive(Debug, Clone, PartialEq)]
struct Line {
    p: u32,
    n: u64,
    epoch: u64,
    member: String,
    start: bool,
}

type Log = Arc<Mutex<Vec<Line>>>;

/// A work that logs each start and end, takes `task_ms`, and fails the tasks
/// `fail` says fail (`Some(permanent)`).
fn logging_work(
    member: &str,
    log: Log,
    task_ms: u64,
    fail: impl Fn(&Job) -> Option<bool> + Send + Sync + 'static,
) -> impl failover::Work<Task = Job, Key = String> {
    let member = member.to_owned();
    let fail = Arc::new(fail);
    work_fn(
        |j: &Job| format!("{}-{}", j.p, j.n),
        move |j: &Job, ctx: &WorkContext| {
            let (job, epoch, member, log, fail) = (
                j.clone(),
                ctx.epoch(),
                member.clone(),
                log.clone(),
                fail.clone(),
            );
            async move {
                let line = |start| Line {
                    p: job.p,
                    n: job.n,
                    epoch,
                    member: member.clone(),
                    start,
                };
                log.lock().unwrap().push(line(true));
                if task_ms > 0 {
                    sleep(ms(task_ms)).await;
                }
                match fail(&job) {
                    Some(true) => return Outcome::Failed("refused for good".to_owned()),
                    Some(false) => return Outcome::Retry("not yet".to_owned()),
                    None => {}
                }
                log.lock().unwrap().push(line(false));
                Outcome::Done
            }
        },
    )
}

async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"))
}

/// A bound for `uri`'s server: FerretDB 1.24 on SQLite does a durable write in
/// about 100 ms on this machine (5 to 10 tasks a second with per-task progress,
/// measured), the test server and MongoDB in about 1 ms.
fn bound(uri: &str, limit: Duration) -> Duration {
    match support::kind_of(uri) {
        support::Server::FerretDb => limit * 5,
        _ => limit,
    }
}

/// Waits until the recorded progress reaches `seq`.
async fn progress_reaches(queue: &Queue, seq: u64, limit: Duration) -> (u64, u64) {
    within(limit, &format!("progress {seq}"), async {
        loop {
            let p = queue.progress().await.unwrap();
            if p.0 >= seq {
                return p;
            }
            sleep(ms(20)).await;
        }
    })
    .await
}

fn jobs(p: u32, range: std::ops::Range<u64>) -> Vec<Job> {
    range.map(|n| Job { p, n }).collect()
}

/// The counters of the starts in `log` (in log order).
fn starts(log: &Log) -> Vec<u64> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.start)
        .map(|l| l.n)
        .collect()
}

/// Checks that `runs` (the counters of the starts, in order) cover `0..total`,
/// never go back except to repeat the task just before, and returns how many
/// repeats there were.
fn in_order_with_repeats(runs: &[u64], total: u64) -> usize {
    let mut seen = vec![false; total as usize];
    let mut repeats = 0;
    for (i, &n) in runs.iter().enumerate() {
        if i > 0 && n <= runs[i - 1] {
            assert!(
                n + 1 >= runs[i - 1] && seen[n as usize],
                "out of order at {i}: {n} after {}",
                runs[i - 1]
            );
            repeats += 1;
        }
        seen[n as usize] = true;
    }
    let missing: Vec<usize> = (0..total as usize).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "never run: {missing:?}");
    repeats
}

support::server_tests! {
    /// 1,000 tasks queued; both members stop abruptly mid-run; one fresh member
    /// does every remaining task, in order, repeating at most the one in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_tasks_survive_every_member_in_order(uri: String) {
        const TOTAL: u64 = 1000;
        let c = unique("thousand");
        let settings = DurableQueue::new();
        let queue = Queue::connect("jobs", options(&uri, &c, "producer", settings.clone()))
            .await
            .unwrap();
        for chunk in 0..10 {
            let seqs = queue
                .submit_many(jobs(0, chunk * 100..(chunk + 1) * 100))
                .await
                .unwrap();
            assert_eq!(seqs, ((chunk * 100 + 1)..=(chunk + 1) * 100).collect::<Vec<_>>());
        }
        assert_eq!(queue.pending().await.unwrap(), TOTAL);

        let log: Log = Arc::default();
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings.clone()),
            logging_work("a", log.clone(), 2, |_| None)).await.unwrap();
        let b = Managed::start_durable("jobs", options(&uri, &c, "b", settings.clone()),
            logging_work("b", log.clone(), 2, |_| None)).await.unwrap();
        let (first, _) = progress_reaches(&queue, 100, bound(&uri, ms(30_000))).await;
        assert!(first < TOTAL, "the members finished before the crash; make tasks longer");
        // Every member dies at once, like a crash.
        a.abort();
        b.abort();
        drop((a, b));
        let left = queue.pending().await.unwrap();
        assert!(left > 0 && left <= TOTAL - 100, "{left} left");

        let c_member = Managed::start_durable("jobs", options(&uri, &c, "c", settings),
            logging_work("c", log.clone(), 0, |_| None)).await.unwrap();
        let (done, epoch) = progress_reaches(&queue, TOTAL, bound(&uri, ms(60_000))).await;
        assert_eq!(done, TOTAL);
        assert_eq!(c_member.epoch(), Some(epoch), "the last records are c's");
        let repeats = in_order_with_repeats(&starts(&log), TOTAL);
        assert!(repeats <= 1, "{repeats} repeats after one crash with per-task progress");
        assert_eq!(queue.pending().await.unwrap(), 0);
        c_member.shutdown().await.unwrap();
    }

    /// Per-task progress repeats at most the task in flight after an abrupt stop;
    /// progress every 100 tasks repeats what was finished since the last record
    /// (this shows the check can fail).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_task_progress_repeats_at_most_the_task_in_flight(uri: String) {
        for (progress, bound) in [
            (Progress::EveryTask, Some(1)),
            (Progress::Batched { tasks: 100, interval: ms(60_000) }, None),
        ] {
            const TOTAL: u64 = 150;
            let c = unique("repeats");
            let settings = DurableQueue::new().progress(progress);
            let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
            queue.submit_many(jobs(0, 0..TOTAL)).await.unwrap();
            let log: Log = Arc::default();
            let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings.clone()),
                logging_work("a", log.clone(), 3, |_| None)).await.unwrap();
            // Abort in the middle of a task, once 30 have started.
            within(ms(30_000), "30 starts", async {
                while starts(&log).len() < 30 { sleep(ms(1)).await }
            }).await;
            a.abort();
            drop(a);
            let before = starts(&log).len();
            let b = Managed::start_durable("jobs", options(&uri, &c, "b", settings),
                logging_work("b", log.clone(), 0, |_| None)).await.unwrap();
            progress_reaches(&queue, TOTAL, ms(30_000)).await;
            b.shutdown().await.unwrap();
            let runs = starts(&log);
            match bound {
                Some(bound) => {
                    let repeats = in_order_with_repeats(&runs, TOTAL);
                    assert!(repeats <= bound, "{repeats} repeats with {progress:?}");
                }
                None => {
                    // Nothing was recorded before the crash: b starts over at 0 and
                    // repeats every task a started.
                    assert!(before >= 30);
                    assert_eq!(runs[before..], (0..TOTAL).collect::<Vec<_>>()[..], "{progress:?}");
                }
            }
        }
    }

    /// Two producers (two clients) submitting at once: each one's tasks keep their
    /// order, none is lost, numbers never collide.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_producers_keep_each_their_own_order(uri: String) {
        const EACH: u64 = 200;
        let c = unique("producers");
        let settings = DurableQueue::new();
        let mut producers = Vec::new();
        for p in 0..2u32 {
            let queue = Queue::connect("jobs", options(&uri, &c, &format!("p{p}"), settings.clone()))
                .await
                .unwrap();
            producers.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                let mut n = 0;
                while n < EACH {
                    // Singles and batches, mixed.
                    if n % 3 == 0 {
                        seqs.push(queue.submit(&Job { p, n }).await.unwrap());
                        n += 1;
                    } else {
                        let end = (n + 7).min(EACH);
                        seqs.extend(queue.submit_many(jobs(p, n..end)).await.unwrap());
                        n = end;
                    }
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for p in producers {
            let seqs = p.await.unwrap();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a producer's numbers go up");
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=2 * EACH).collect::<Vec<_>>(), "dense and distinct");

        let log: Log = Arc::default();
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings.clone()),
            logging_work("a", log.clone(), 0, |_| None)).await.unwrap();
        let queue = Queue::connect("jobs", options(&uri, &c, "check", settings)).await.unwrap();
        progress_reaches(&queue, 2 * EACH, bound(&uri, ms(30_000))).await;
        a.shutdown().await.unwrap();
        let log = log.lock().unwrap();
        for p in 0..2 {
            let mine: Vec<u64> = log.iter().filter(|l| l.start && l.p == p).map(|l| l.n).collect();
            assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "producer {p}'s order");
        }
    }

    /// The fence of the progress document: a stale master's record is refused;
    /// a member whose record is refused stops working its epoch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_masters_progress_write_is_refused(uri: String) {
        let c = unique("stale");
        let settings = DurableQueue::new();
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        // The store's fence on its own.
        assert_eq!(queue.take_over_progress(1).await.unwrap(), Some(0));
        assert!(queue.record_progress(1, 5).await.unwrap());
        assert_eq!(queue.take_over_progress(2).await.unwrap(), Some(5));
        assert!(!queue.record_progress(1, 9).await.unwrap(), "a stale record is refused");
        assert_eq!(queue.take_over_progress(1).await.unwrap(), None);
        assert_eq!(queue.progress().await.unwrap(), (5, 2));
        assert!(queue.record_progress(2, 6).await.unwrap());

        // A member: master of its epoch; then a newer epoch takes the progress over
        // behind its back (as a master that took over while it was paused would).
        let c = unique("stale_member");
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        let log: Log = Arc::default();
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings),
            logging_work("a", log.clone(), 0, |_| None)).await.unwrap();
        let epoch = within(ms(5000), "a master", a.member().wait_for_master()).await.unwrap();
        queue.submit(&Job { p: 0, n: 0 }).await.unwrap();
        progress_reaches(&queue, 1, ms(5000)).await;
        assert_eq!(queue.take_over_progress(epoch + 1).await.unwrap(), Some(1));
        queue.submit_many(jobs(0, 1..4)).await.unwrap();
        // a runs task 1, its record is refused, and it starts nothing more.
        within(ms(5000), "a starts task 1", async {
            while starts(&log).len() < 2 { sleep(ms(5)).await }
        }).await;
        let until = Instant::now() + ms(1500);
        while Instant::now() < until {
            assert_eq!(starts(&log), vec![0, 1], "a went on after its record was refused");
            assert_eq!(queue.progress().await.unwrap(), (1, epoch + 1));
            sleep(ms(50)).await;
        }
        assert_eq!(a.epoch(), Some(epoch), "the lease itself is still a's");
        a.abort();
    }

    /// A task that fails for good and one that exhausts `max_attempts` become dead
    /// letters with their error and attempts; they survive the master's crash and
    /// the next master re-runs a re-queued one. A stored task that cannot be decoded
    /// is a dead letter too, not a panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_letters_survive_a_failover_and_can_be_requeued(uri: String) {
        let c = unique("dead");
        let settings = DurableQueue::new();
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fail = {
            let healed = healed.clone();
            move |j: &Job| match j.n {
                _ if healed.load(std::sync::atomic::Ordering::SeqCst) => None,
                2 => Some(true),
                4 => Some(false),
                _ => None,
            }
        };
        let log: Log = Arc::default();
        let member = |id: &'static str| {
            let (uri, c, settings, log, fail) =
                (uri.clone(), c.clone(), settings.clone(), log.clone(), fail.clone());
            async move {
                Managed::start_durable(
                    "jobs",
                    options(&uri, &c, id, settings)
                        .max_attempts(2)
                        .retry_backoff(failover::Backoff { initial: ms(10), ..Default::default() }),
                    logging_work(id, log, 0, fail),
                ).await.unwrap()
            }
        };
        queue.submit_many(jobs(0, 0..3)).await.unwrap();
        queue.submit(&"not a job").await.unwrap();
        queue.submit_many(jobs(0, 4..6)).await.unwrap();
        let a = member("a").await;
        let epoch_a = within(ms(5000), "a master", a.member().wait_for_master()).await.unwrap();
        progress_reaches(&queue, 6, ms(10_000)).await;
        assert_eq!(a.stats().dead_letters, 3);
        a.abort();
        drop(a);

        let b = member("b").await;
        let epoch_b = within(ms(10_000), "b master", b.member().wait_for_master()).await.unwrap();
        assert!(epoch_b > epoch_a);
        let dead = queue.dead_letters().await.unwrap();
        assert_eq!(dead.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!((dead[0].key.as_str(), dead[0].attempts, dead[0].epoch), (Some("0-2"), 1, epoch_a));
        assert_eq!(dead[0].error, "refused for good");
        assert!(dead[1].key.as_str().is_none() && dead[1].error.contains("cannot decode"), "{:?}", dead[1]);
        assert_eq!((dead[2].key.as_str(), dead[2].attempts), (Some("0-4"), 2));
        assert_eq!(dead[2].error, "not yet");

        healed.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(queue.requeue(3).await.unwrap(), Some(7));
        assert_eq!(queue.requeue(5).await.unwrap(), Some(8));
        assert_eq!(queue.requeue(5).await.unwrap(), None, "already re-queued");
        progress_reaches(&queue, 8, ms(10_000)).await;
        let done_by_b: Vec<u64> = log.lock().unwrap().iter()
            .filter(|l| !l.start && l.epoch == epoch_b).map(|l| l.n).collect();
        assert_eq!(done_by_b, vec![2, 4]);
        let left = queue.dead_letters().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, 4, "the undecodable task stays");
        b.shutdown().await.unwrap();
    }

    /// A bound on the queue refuses (or holds back) the producer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_queue_refuses_or_waits(uri: String) {
        let c = unique("bounded");
        let reject = DurableQueue::new().capacity(5, QueueFull::Reject);
        let queue = Queue::connect("jobs", options(&uri, &c, "p", reject)).await.unwrap();
        queue.submit_many(jobs(0, 0..5)).await.unwrap();
        assert!(matches!(queue.submit(&Job { p: 0, n: 5 }).await, Err(Error::QueueFull { capacity: 5 })));
        assert!(matches!(queue.submit_many(jobs(0, 5..7)).await, Err(Error::QueueFull { .. })));
        assert_eq!(queue.pending().await.unwrap(), 5);

        let wait = DurableQueue::new().capacity(5, QueueFull::Wait);
        let waiting = Queue::connect("jobs", options(&uri, &c, "w", wait.clone())).await.unwrap();
        let blocked = tokio::spawn(async move { waiting.submit(&Job { p: 0, n: 5 }).await });
        sleep(ms(300)).await;
        assert!(!blocked.is_finished(), "submitted past the bound");
        let log: Log = Arc::default();
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", wait),
            logging_work("a", log.clone(), 0, |_| None)).await.unwrap();
        let seq = within(ms(10_000), "the waiting submit", blocked).await.unwrap().unwrap();
        assert_eq!(seq, 6);
        progress_reaches(&queue, 6, ms(10_000)).await;
        a.shutdown().await.unwrap();
    }

    /// An idle master notices a task submitted by another process quickly: the
    /// 95th percentile from the acknowledged submit to the task's start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_master_starts_a_new_task_quickly(uri: String) {
        let c = unique("latency");
        let settings = DurableQueue::new();
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let s = started.clone();
        let work = work_fn(|j: &Job| j.n, move |_: &Job, _: &WorkContext| {
            s.lock().unwrap().push(Instant::now());
            async { true }
        });
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings), work).await.unwrap();
        within(ms(5000), "a master", a.member().wait_for_master()).await.unwrap();
        let mut latencies = Vec::new();
        for n in 0..40 {
            // Idle long enough for the polling to back off fully.
            sleep(ms(150)).await;
            queue.submit(&Job { p: 0, n }).await.unwrap();
            let acked = Instant::now();
            let at = within(ms(5000), "the start", async {
                loop {
                    if let Some(&t) = started.lock().unwrap().get(n as usize) { return t; }
                    sleep(ms(1)).await;
                }
            }).await;
            latencies.push(at.saturating_duration_since(acked));
        }
        latencies.sort();
        let p95 = latencies[latencies.len() * 95 / 100 - 1];
        eprintln!("idle master: submit-to-start p50 {:?}, p95 {:?}, max {:?}",
            latencies[latencies.len() / 2], p95, latencies.last().unwrap());
        // 40 ms of polling at most, one read, and a margin for a shared machine.
        assert!(p95 < ms(100), "p95 {p95:?}");
        a.shutdown().await.unwrap();
    }
}

/// The durable queue needs MongoDB, and a member of one starts only through
/// `start_durable`: both are refused with a clear error.
#[tokio::test]
async fn misuse_is_refused_with_a_clear_error() {
    let store = failover::MemoryStore::new();
    let err = Queue::connect("jobs", Options::new().in_memory(&store))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("durable queue keeps its tasks in MongoDB"),
        "{err}"
    );
    let work = work_fn(|n: &u32| *n, |_: &u32, _: &WorkContext| async { true });
    let err = Managed::start(
        "jobs",
        Options::new()
            .in_memory(&store)
            .durable_queue(DurableQueue::new()),
        work,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("start_durable"), "{err}");
    let err = Queue::connect(
        "jobs",
        Options::new()
            .connect_string("mongodb://127.0.0.1:1/x")
            .durable_queue(DurableQueue::new().read_ahead(0)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("read_ahead"), "{err}");
}

/// `#[failover::subsystem(queue = "mongodb")]`: the generated `start` works the
/// durable queue, with the same `#[work]` method and hooks.
#[failover::subsystem(name = "macro_jobs", key = "n", queue = "mongodb")]
struct MacroJobs {
    done: Arc<Mutex<Vec<(u64, u64)>>>,
}

#[failover::subsystem]
impl MacroJobs {
    #[work]
    async fn run(&self, job: &Job, ctx: &WorkContext) -> bool {
        self.done.lock().unwrap().push((job.n, ctx.epoch()));
        true
    }
}

support::server_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_macro_starts_a_member_of_the_durable_queue(uri: String) {
        let c = unique("macro");
        let settings = DurableQueue::new();
        let queue = Queue::connect("macro_jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        queue.submit_many(jobs(0, 0..5)).await.unwrap();
        let ran: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let member = MacroJobs { done: ran.clone() }
            .start(options(&uri, &c, "a", settings))
            .await
            .unwrap();
        assert!(member.is_durable());
        member.submit_work(Job { p: 0, n: 5 }).await.unwrap();
        let (done, epoch) = progress_reaches(&queue, 6, ms(10_000)).await;
        assert_eq!(done, 6);
        member.shutdown().await.unwrap();
        assert_eq!(*ran.lock().unwrap(), (0..6).map(|n| (n, epoch)).collect::<Vec<_>>());
    }
}

/// A member process, SIGKILLed when dropped (also when a test fails).
struct Child(std::process::Child);

impl Child {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `failover-member --durable` (tests/bin/member.rs) as member `id`.
fn spawn_member(uri: &str, c: &str, id: &str, log: &std::path::Path, task_ms: u64) -> Child {
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_failover-member"))
            .args(["--name", "jobs", "--id", id, "--collection", c, "--durable"])
            .args([
                "--master-ms",
                "300",
                "--slave-ms",
                "400",
                "--ticking-ms",
                "400",
                "--error-ms",
                "300",
            ])
            .args([
                "--lease-ms",
                &LEASE.to_string(),
                "--task-ms",
                &task_ms.to_string(),
            ])
            .arg("--log")
            .arg(log)
            .env("MONGODB_URI", uri)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start failover-member"),
    )
}

/// The `task-start` lines of the member logs, in the order of their monotonic
/// stamps: the task numbers.
fn logged_starts(logs: &[std::path::PathBuf]) -> Vec<u64> {
    let mut lines: Vec<(u128, u64)> = Vec::new();
    for path in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() >= 5 && f[2] == "task-start" {
                lines.push((f[0].parse().unwrap(), f[4].parse().unwrap()));
            }
        }
    }
    lines.sort();
    lines.into_iter().map(|(_, n)| n).collect()
}

support::server_tests! {
    /// 1,000 tasks queued by a producer; both member processes are SIGKILLed
    /// mid-run; a third process does the rest: every task, in order, with at most
    /// the one task in flight repeated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_member_sigkilled_then_one_restarted_does_every_task_in_order(uri: String) {
        const TOTAL: u64 = 1000;
        let c = unique("sigkill");
        let dir = std::env::temp_dir().join(&c);
        std::fs::create_dir_all(&dir).unwrap();
        let logs: Vec<_> = ["a", "b", "c"].iter().map(|id| dir.join(format!("{id}.log"))).collect();
        let queue = Queue::connect("jobs", options(&uri, &c, "producer", DurableQueue::new()))
            .await
            .unwrap();
        queue.submit_many(0..TOTAL as i64).await.unwrap();
        let mut a = spawn_member(&uri, &c, "a", &logs[0], 3);
        let mut b = spawn_member(&uri, &c, "b", &logs[1], 3);
        progress_reaches(&queue, 100, bound(&uri, ms(30_000))).await;
        a.kill(); // SIGKILL
        b.kill();
        let (at_kill, _) = queue.progress().await.unwrap();
        assert!(at_kill < TOTAL, "all done before the kill; make tasks longer");
        let mut c_member = spawn_member(&uri, &c, "c", &logs[2], 0);
        let finished = progress_reaches(&queue, TOTAL, bound(&uri, ms(60_000))).await;
        c_member.kill();
        assert_eq!(finished.0, TOTAL);
        let runs = logged_starts(&logs);
        let repeats = in_order_with_repeats(&runs, TOTAL);
        assert!(repeats <= 1, "{repeats} repeats after one SIGKILL of the master");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

support::server_tests! {
    /// The master holds a bounded batch, never the whole queue: with 2,000 tasks
    /// waiting, its in-memory queue never exceeds the read-ahead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_master_holds_only_a_bounded_batch(uri: String) {
        // Ten read-aheads at least; FerretDB works a few tasks a second (see `bound`).
        let total: u64 = match support::kind_of(&uri) {
            support::Server::FerretDb => 500,
            _ => 2000,
        };
        let c = unique("bounded_batch");
        let settings = DurableQueue::new().read_ahead(50);
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        queue.submit_many(jobs(0, 0..total)).await.unwrap();
        let log: Log = Arc::default();
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings),
            logging_work("a", log.clone(), 0, |_| None)).await.unwrap();
        let mut most = 0;
        within(bound(&uri, ms(60_000)), "every task", async {
            while queue.progress().await.unwrap().0 < total {
                most = most.max(a.stats().queued);
                sleep(ms(2)).await;
            }
        }).await;
        assert!(most > 0 && most <= 50, "held {most} tasks at once");
        assert_eq!(a.stats().finished, total);
        a.shutdown().await.unwrap();
    }
}

/// The durable layout's progress document of subsystem `q` in `<c>_tasks`, read
/// and written straight through the driver (to set up the state a crash leaves).
async fn tasks_collection(uri: &str, c: &str) -> mongodb::Collection<mongodb::bson::Document> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    client
        .default_database()
        .unwrap_or_else(|| client.database("test"))
        .collection(&format!("{c}_tasks"))
}

support::server_tests! {
    /// The recorded progress never moves back: a record of a lower position, by the
    /// same epoch or by a later one, leaves the higher position in place (a delayed
    /// or repeated record must not make finished tasks run again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_never_moves_back(uri: String) {
        let c = unique("monotone");
        let queue = Queue::connect("jobs", options(&uri, &c, "p", DurableQueue::new())).await.unwrap();
        assert_eq!(queue.take_over_progress(1).await.unwrap(), Some(0));
        assert!(queue.record_progress(1, 5).await.unwrap());
        // Not refused as stale (the epoch is the writer's own), but nothing moves.
        assert!(queue.record_progress(1, 3).await.unwrap(), "a lower record of the same epoch counts as recorded");
        assert_eq!(queue.progress().await.unwrap(), (5, 1), "a lower record of the same epoch moved the progress back");
        assert_eq!(queue.take_over_progress(2).await.unwrap(), Some(5));
        assert!(queue.record_progress(2, 4).await.unwrap());
        assert_eq!(queue.progress().await.unwrap(), (5, 2), "a lower record of a later epoch moved the progress back");
        assert!(queue.record_progress(2, 6).await.unwrap());
        assert_eq!(queue.progress().await.unwrap(), (6, 2));
        assert!(!queue.record_progress(1, 9).await.unwrap(), "a stale record is still refused");
        assert_eq!(queue.progress().await.unwrap(), (6, 2));
    }

    /// A stale master gives up on a task while a newer master has taken the
    /// progress over: its dead letter is not kept (the newer master runs the task,
    /// and a kept letter would let `requeue` run a finished task again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_masters_dead_letter_is_not_kept(uri: String) {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let c = unique("stale_dead");
        let settings = DurableQueue::new();
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        let (started, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let work = {
            let (started, release) = (started.clone(), release.clone());
            work_fn(|j: &Job| j.n, move |_: &Job, _: &WorkContext| {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    started.store(true, SeqCst);
                    while !release.load(SeqCst) {
                        sleep(ms(5)).await;
                    }
                    Outcome::Failed("refused for good".to_owned())
                }
            })
        };
        let a = Managed::start_durable("jobs", options(&uri, &c, "a", settings), work).await.unwrap();
        let epoch = within(ms(5000), "a master", a.member().wait_for_master()).await.unwrap();
        assert_eq!(queue.submit(&Job { p: 0, n: 0 }).await.unwrap(), 1);
        within(ms(5000), "a starts task 1", async {
            while !started.load(SeqCst) { sleep(ms(5)).await }
        }).await;
        // A newer master takes the progress over while a runs task 1 (a was paused,
        // say); then a's task fails for good.
        assert_eq!(queue.take_over_progress(epoch + 1).await.unwrap(), Some(0));
        release.store(true, SeqCst);
        let until = Instant::now() + ms(1500);
        while Instant::now() < until {
            let dead = queue.dead_letters().await.unwrap();
            assert!(dead.is_empty(), "the stale master's dead letter was kept: {dead:?}");
            assert_eq!(queue.progress().await.unwrap(), (0, epoch + 1));
            sleep(ms(50)).await;
        }
        // The newer master runs task 1 and records it.
        assert!(queue.record_progress(epoch + 1, 1).await.unwrap());
        assert_eq!(queue.requeue(1).await.unwrap(), None, "requeue would run finished task 1 again");
        assert!(queue.dead_letters().await.unwrap().is_empty());
        a.abort();
    }

    /// A master that records a dead letter's progress and dies before the letter
    /// is stored: the next master stores it (nothing lost); once re-queued, a
    /// master that read the letter before the re-queue cannot bring it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_letter_survives_a_crash_after_its_progress_and_is_requeued_once(uri: String) {
        let c = unique("dead_crash");
        let settings = DurableQueue::new();
        let queue = Queue::connect("jobs", options(&uri, &c, "p", settings.clone())).await.unwrap();
        assert_eq!(queue.submit(&Job { p: 0, n: 0 }).await.unwrap(), 1);
        assert_eq!(queue.take_over_progress(1).await.unwrap(), Some(0));
        // The state a crash of epoch 1 leaves between its record (progress 1 and the
        // letter in the progress document) and the letter's insert.
        let tasks = tasks_collection(&uri, &c).await;
        let letter = mongodb::bson::doc! {
            "_id": { "q": "jobs", "seq": 1_i64 },
            "key": "0-0",
            "task": { "p": 0_i64, "n": 0_i64 },
            "error": "refused for good",
            "attempts": 1_i64,
            "epoch": 1_i64,
            "failed_at": mongodb::bson::DateTime::now(),
        };
        let set = tasks
            .update_one(
                mongodb::bson::doc! { "_id": { "q": "jobs", "progress": true } },
                mongodb::bson::doc! { "$set": { "seq": 1_i64, "epoch": 1_i64, "dead": letter.clone() } },
            )
            .await
            .unwrap();
        assert_eq!(set.matched_count, 1);
        assert!(queue.dead_letters().await.unwrap().is_empty());
        // The next master takes over: the letter is stored before it goes on.
        assert_eq!(queue.take_over_progress(2).await.unwrap(), Some(1));
        let dead = queue.dead_letters().await.unwrap();
        assert_eq!(dead.iter().map(|d| (d.seq, d.epoch)).collect::<Vec<_>>(), vec![(1, 1)], "{dead:?}");
        assert_eq!(dead[0].error, "refused for good");
        // Re-queued once: a second requeue finds nothing.
        assert_eq!(queue.requeue(1).await.unwrap(), Some(2));
        assert_eq!(queue.requeue(1).await.unwrap(), None);
        // A master that read the letter before the re-queue (its take-over raced the
        // requeue) stores it late: it stays re-queued.
        tasks
            .update_one(
                mongodb::bson::doc! { "_id": { "q": "jobs", "progress": true } },
                mongodb::bson::doc! { "$set": { "dead": letter } },
            )
            .await
            .unwrap();
        assert_eq!(queue.take_over_progress(3).await.unwrap(), Some(1));
        assert!(queue.dead_letters().await.unwrap().is_empty(), "a re-queued letter came back");
        assert_eq!(queue.requeue(1).await.unwrap(), None, "re-queued twice");
        // The re-queued task runs once, and the progress document no longer carries
        // the letter after the next record.
        let log: Log = Arc::default();
        let b = Managed::start_durable("jobs", options(&uri, &c, "b", settings),
            logging_work("b", log.clone(), 0, |_| None)).await.unwrap();
        progress_reaches(&queue, 2, ms(10_000)).await;
        b.shutdown().await.unwrap();
        assert_eq!(starts(&log), vec![0]);
        let progress = tasks
            .find_one(mongodb::bson::doc! { "_id": { "q": "jobs", "progress": true } })
            .await
            .unwrap()
            .unwrap();
        assert!(!progress.contains_key("dead"), "{progress:?}");
    }
}
