//! The durable queue (issue 10): submit-to-done throughput over the wire, beside
//! the raw database operations the design needs, on the same server in the same
//! run.
//!
//! `cargo bench --bench durable_queue` runs on `MONGODB_URI` when it is set,
//! otherwise on the bundled test server (`tests/support/mongo_server.py`). Each
//! iteration handles `BATCH` tasks (criterion reports time per iteration and
//! tasks per second):
//!
//! * `submit_to_done/every_task` and `/every_100_tasks`: a producer submits
//!   `BATCH` tasks in one `submit_many`, a master (in this process, work that does
//!   nothing) works them; the iteration ends when the last one has been worked
//!   (watched in this process) and its progress recorded (then read from the
//!   database).
//! * `raw/insert_many`: one ordered `insert_many` of the same `BATCH` documents,
//!   majority write concern.
//! * `raw/read_pass`: the reads of one pass over `BATCH` tasks: `find` of 128
//!   tasks after a number, sorted, `BATCH / 128` times (rounded up).
//! * `raw/fenced_update`: one fenced progress write (`update_one` filtered on the
//!   epoch) plus the `delete_many` of the finished tasks, as the master does per
//!   record (per iteration: one; multiply by the records of a pass).

#[path = "../tests/support/mod.rs"]
#[allow(unused_macros, unused_imports)]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use failover::{work_fn, DurableQueue, Intervals, Managed, Options, Progress, Queue, WorkContext};
use mongodb::bson::{doc, Document};

const BATCH: u64 = 500;

fn uri() -> String {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => uri,
        _ => support::test_server_uri(),
    }
}

fn options(uri: &str, collection: &str, id: &str, progress: Progress) -> Options {
    Options::new()
        .connect_string(uri)
        .collection(collection)
        .member_id(id)
        .intervals(Intervals {
            master: Duration::from_millis(300),
            slave: Duration::from_millis(400),
            ticking: Duration::from_millis(400),
            error: Duration::from_millis(300),
            ..Intervals::default()
        })
        .lease(Duration::from_millis(1000))
        .durable_queue(DurableQueue::new().progress(progress))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let uri = uri();
    let mut group = c.benchmark_group("durable_queue");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(BATCH));

    for (label, progress) in [
        ("every_task", Progress::EveryTask),
        (
            "every_100_tasks",
            Progress::Batched {
                tasks: 100,
                interval: Duration::from_secs(60),
            },
        ),
    ] {
        let collection = format!("bench_dq_{label}_{}", std::process::id());
        let finished = Arc::new(AtomicU64::new(0));
        let worked = finished.clone();
        let (queue, member) = rt.block_on(async {
            let queue = Queue::connect("bench", options(&uri, &collection, "p", progress))
                .await
                .unwrap();
            let work = work_fn(
                |n: &u64| *n,
                move |_: &u64, _: &WorkContext| {
                    worked.fetch_add(1, Ordering::SeqCst);
                    async { true }
                },
            );
            let member =
                Managed::start_durable("bench", options(&uri, &collection, "m", progress), work)
                    .await
                    .unwrap();
            member.member().wait_for_master().await.unwrap();
            (queue, member)
        });
        group.bench_function(BenchmarkId::new("submit_to_done", label), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (queue, finished) = (&queue, &finished);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let target = finished.load(Ordering::SeqCst) + BATCH;
                        let seqs = queue.submit_many(0..BATCH).await.unwrap();
                        let last = *seqs.last().unwrap();
                        // Watched in this process, so as not to load the server:
                        // the last task worked, then its progress recorded.
                        while finished.load(Ordering::SeqCst) < target {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        while queue.progress().await.unwrap().0 < last {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        total += start.elapsed();
                    }
                    total
                }
            })
        });
        rt.block_on(member.shutdown()).unwrap();
    }

    // The raw operations, on a scratch collection of the same database.
    let (tasks, dead_epoch) = rt.block_on(async {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let db = client
            .default_database()
            .unwrap_or_else(|| client.database("test"));
        let tasks = db.collection_with_options::<Document>(
            &format!("bench_dq_raw_{}", std::process::id()),
            mongodb::options::CollectionOptions::builder()
                .write_concern(mongodb::options::WriteConcern::majority())
                .read_concern(mongodb::options::ReadConcern::majority())
                .build(),
        );
        tasks
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "_id.q": 1, "_id.seq": 1 })
                    .build(),
            )
            .await
            .unwrap();
        tasks
            .insert_one(
                doc! { "_id": { "q": "raw", "progress": true }, "seq": 0_i64, "epoch": 1_i64 },
            )
            .await
            .unwrap();
        (tasks, 1_i64)
    });
    let mut next = 1_000_000_i64;
    group.bench_function(BenchmarkId::new("raw", "insert_many"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let tasks = &tasks;
            let base = next;
            next += iters as i64 * BATCH as i64;
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters as i64 {
                    let docs: Vec<Document> = (0..BATCH as i64)
                        .map(|k| {
                            let seq = base + i * BATCH as i64 + k + 1;
                            doc! { "_id": { "q": "raw", "seq": seq }, "key": mongodb::bson::Bson::Null,
                                   "task": seq, "attempts": 0_i32, "nonce": 7_i64, "n": k }
                        })
                        .collect();
                    let start = Instant::now();
                    tasks.insert_many(docs).ordered(true).await.unwrap();
                    total += start.elapsed();
                    // Untimed: keep the collection at one batch, as the queue's is.
                    tasks
                        .delete_many(doc! { "_id.q": "raw", "_id.seq": { "$gt": 0_i64 } })
                        .await
                        .unwrap();
                }
                total
            }
        })
    });
    // One batch for the reads and the records.
    rt.block_on(async {
        let docs: Vec<Document> = (1..=BATCH as i64)
            .map(|seq| doc! { "_id": { "q": "raw", "seq": seq }, "task": seq, "attempts": 0_i32 })
            .collect();
        tasks.insert_many(docs).await.unwrap();
    });
    group.bench_function(BenchmarkId::new("raw", "read_pass"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let tasks = &tasks;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut after = 0_i64;
                    for _ in 0..BATCH.div_ceil(128) {
                        let mut cursor = tasks
                            .find(doc! { "_id.q": "raw", "_id.seq": { "$gt": after } })
                            .sort(doc! { "_id.seq": 1 })
                            .limit(128)
                            .await
                            .unwrap();
                        while cursor.advance().await.unwrap() {
                            let d = cursor.deserialize_current().unwrap();
                            after = d.get_document("_id").unwrap().get_i64("seq").unwrap();
                        }
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    let mut seq = 0_i64;
    group.bench_function(BenchmarkId::new("raw", "fenced_update"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let tasks = &tasks;
            let base = seq;
            seq += iters as i64;
            async move {
                let start = Instant::now();
                for i in 0..iters as i64 {
                    let done = base + i + 1;
                    let r = tasks
                        .update_one(
                            doc! { "_id": { "q": "raw", "progress": true }, "epoch": { "$lte": dead_epoch } },
                            doc! { "$set": { "seq": done, "epoch": dead_epoch } },
                        )
                        .await
                        .unwrap();
                    assert_eq!(r.matched_count, 1);
                    tasks
                        .delete_many(doc! { "_id.q": "raw", "_id.seq": { "$gt": 0_i64, "$lte": done } })
                        .await
                        .unwrap();
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
