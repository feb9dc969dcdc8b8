//! Managed-queue throughput with a no-op worker, next to a bare sequential async
//! loop over the same tasks, and the memory a queued task costs. `managed`
//! publishes progress with the periodic renewals only (`Progress::WithRenewal`:
//! the queue's own cost); `managed-every-task` with the default, a lease renewal
//! after every task (on the in-process store: the cost of the hand-offs between
//! the worker and the election, without a database's round trips).
//!
//! `cargo bench -p failover --bench queue`

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use failover::{IntoOutcome, Managed, MemoryStore, Options, Outcome, Progress, Work, WorkContext};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Mutex as AsyncMutex, Notify};

const SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];

#[derive(Serialize, Deserialize)]
struct Job {
    id: u64,
    amount: u64,
}

/// The worker under test: does nothing, except that job 0 waits for the gate (so
/// that all jobs are queued before the clock starts) and the last job reports.
struct NoOp {
    entered: Arc<Notify>,
    gate: Arc<Notify>,
    last: u64,
    done: Arc<AsyncMutex<Option<oneshot::Sender<Instant>>>>,
}

impl Work for NoOp {
    type Task = Job;
    type Key = u64;

    fn key(&self, job: &Job) -> u64 {
        job.id
    }

    async fn work(&self, job: &Job, _: &WorkContext) -> Outcome {
        if job.id == 0 {
            self.entered.notify_one();
            self.gate.notified().await;
        }
        no_op(job, self.last, &self.done).await.into_outcome()
    }
}

/// The work itself, shared by the managed worker and the bare loop: nothing, but
/// the last job reports the time.
async fn no_op(job: &Job, last: u64, done: &AsyncMutex<Option<oneshot::Sender<Instant>>>) -> bool {
    if job.id == last {
        if let Some(tx) = done.lock().await.take() {
            let _ = tx.send(Instant::now());
        }
    }
    std::hint::black_box(job.amount);
    true
}

/// Queues `n` jobs behind the gate, opens it, and returns the time to drain them.
async fn managed_drain(n: u64, progress: Progress) -> Duration {
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (tx, rx) = oneshot::channel();
    let work = NoOp {
        entered: entered.clone(),
        gate: gate.clone(),
        last: n,
        done: Arc::new(AsyncMutex::new(Some(tx))),
    };
    let store = MemoryStore::new();
    let options = Options::new().in_memory(&store).progress(progress);
    let m = Managed::start("bench", options, work).await.unwrap();
    m.member().wait_for_master().await.unwrap();
    for id in 0..=n {
        m.submit_work(Job { id, amount: id }).await.unwrap();
    }
    // Job 0 holds the worker at the gate while the others queue up.
    entered.notified().await;
    let start = Instant::now();
    gate.notify_one();
    let end = rx.await.unwrap();
    m.shutdown().await.unwrap();
    end - start
}

/// The baseline: the same jobs in a `VecDeque`, popped and awaited one by one,
/// remembering the last finished key.
async fn bare_loop(n: u64) -> Duration {
    let mut queue: VecDeque<(u64, Job)> = (1..=n).map(|id| (id, Job { id, amount: id })).collect();
    let (tx, mut rx) = oneshot::channel();
    let done = AsyncMutex::new(Some(tx));
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = 0;
        while let Some((key, job)) = queue.pop_front() {
            if no_op(&job, n, &done).await {
                last = key;
            }
        }
        std::hint::black_box(last);
        start
    })
    .await
    .map(|start| rx.try_recv().map(|end| end - start))
    .unwrap()
    .unwrap()
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("drain");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for n in SIZES {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("managed", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += managed_drain(n, Progress::WithRenewal).await;
                }
                total
            })
        });
        if n <= 10_000 {
            group.bench_with_input(BenchmarkId::new("managed-every-task", n), &n, |b, &n| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += managed_drain(n, Progress::EveryTask).await;
                    }
                    total
                })
            });
        }
        group.bench_with_input(BenchmarkId::new("bare-loop", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += bare_loop(n).await;
                }
                total
            })
        });
    }
    group.finish();
}

/// Resident memory in bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Memory per queued task: 1M jobs queued on a standby (nothing is worked).
fn memory_per_task() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemoryStore::new();
        let holder = failover::Member::start("mem", Options::new().in_memory(&store).member_id("holder")).await.unwrap();
        holder.wait_for_master().await.unwrap();
        let (tx, _rx) = oneshot::channel();
        let work = NoOp { entered: Arc::new(Notify::new()), gate: Arc::new(Notify::new()), last: u64::MAX, done: Arc::new(AsyncMutex::new(Some(tx))) };
        let m = Managed::start("mem", Options::new().in_memory(&store).member_id("standby"), work).await.unwrap();
        let n = 1_000_000u64;
        let before = rss();
        for id in 0..n {
            m.submit_work(Job { id, amount: id }).await.unwrap();
        }
        let after = rss();
        println!(
            "memory: {n} queued tasks of {} bytes (+ {} byte key) take {:.1} MB resident, {:.1} bytes per task",
            std::mem::size_of::<Job>(),
            std::mem::size_of::<u64>(),
            (after - before) as f64 / 1e6,
            (after - before) as f64 / n as f64
        );
        m.shutdown().await.unwrap();
        holder.shutdown().await.unwrap();
    });
}

criterion_group!(benches, throughput);

fn main() {
    memory_per_task();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
