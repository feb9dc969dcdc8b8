//! Deleting a lease's documents is safe at any instant: an operator who deletes
//! every version of a lease while a master holds it never makes two masters act at
//! once, the newest epoch never goes back, and a collection fenced by epoch keeps
//! accepting each new master. Wall-clock time, on every selected server.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failover::bson::{doc, Document};
use failover::{Intervals, Member, Options};
use tokio::time::{sleep, timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const NAME: &str = "subsystem";

fn options(uri: &str, collection: &str, id: &str) -> Options {
    Options::new()
        .connect_string(uri)
        .collection(collection)
        .member_id(id)
        .intervals(Intervals {
            init: Duration::ZERO,
            master: ms(200),
            slave: ms(250),
            ticking: ms(400),
            error: ms(200),
        })
        .lease(ms(500))
}

/// Watches two members every millisecond: whether both were master at one
/// instant, and the highest epoch any of them acted under.
struct Watch {
    overlap: Arc<AtomicBool>,
    highest: Arc<AtomicU64>,
    back: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn watch(members: Arc<[Member; 2]>) -> Watch {
    let overlap = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(AtomicU64::new(0));
    let back = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let task = {
        let (overlap, highest, back, done) =
            (overlap.clone(), highest.clone(), back.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                if members.iter().all(|m| m.is_master()) {
                    overlap.store(true, Ordering::SeqCst);
                }
                for m in members.iter() {
                    if let Some(epoch) = m.epoch().filter(|_| m.is_master()) {
                        if epoch < highest.load(Ordering::SeqCst) {
                            back.store(true, Ordering::SeqCst);
                        }
                        highest.fetch_max(epoch, Ordering::SeqCst);
                    }
                }
                sleep(ms(1)).await;
            }
        })
    };
    Watch {
        overlap,
        highest,
        back,
        done,
        task,
    }
}

/// A write fenced by epoch, as `FencedCollection` and the durable queue make
/// them: refused when a newer epoch wrote first.
async fn fenced_write(docs: &mongodb::Collection<Document>, epoch: u64) -> bool {
    let epoch = epoch as i64;
    let filter = doc! { "_id": "fenced", "epoch": { "$lte": epoch } };
    let update = doc! { "$set": { "epoch": epoch } };
    match docs.update_one(filter, update).upsert(true).await {
        Ok(_) => true,
        Err(e) if e.to_string().contains("E11000") || e.to_string().contains("11000") => false,
        Err(e) => panic!("fenced write: {e}"),
    }
}

support::server_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_the_lease_under_a_master_makes_no_second_master(uri: String) {
        let c = "lease_deleted_under_master";
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let db = client.database(support::TEST_DB);
        let leases = db.collection::<Document>(c);
        let fenced = db.collection::<Document>("lease_deleted_fenced");
        let a = Member::start(NAME, options(&uri, c, "a")).await.unwrap();
        timeout(ms(10_000), a.wait_for_master()).await.unwrap().unwrap();
        let b = Member::start(NAME, options(&uri, c, "b")).await.unwrap();
        let members = Arc::new([a, b]);
        let w = watch(members.clone());
        for round in 0..4 {
            // Each master fences the collection with its epoch, as its work would.
            let master = timeout(ms(10_000), async {
                loop {
                    if let Some(m) = members.iter().find(|m| m.is_master()) {
                        break m.epoch().unwrap();
                    }
                    sleep(ms(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: nobody leads within 10 s"));
            assert!(
                fenced_write(&fenced, master).await,
                "round {round}: the fenced collection refuses the master of epoch {master}"
            );
            // Just after a renewal, every version of the lease goes.
            sleep(ms(20 + 60 * round)).await;
            leases.delete_many(doc! { "_id.lease": NAME }).await.unwrap();
            sleep(ms(1500)).await;
        }
        // The last master still gets past the fence.
        let last = timeout(ms(10_000), async {
            loop {
                if let Some(m) = members.iter().find(|m| m.is_master()) {
                    break m.epoch().unwrap();
                }
                sleep(ms(5)).await;
            }
        })
        .await
        .expect("somebody leads at the end");
        assert!(
            fenced_write(&fenced, last).await,
            "the fenced collection refuses the last master (epoch {last}): an epoch went back"
        );
        w.done.store(true, Ordering::SeqCst);
        w.task.await.unwrap();
        assert!(
            !w.overlap.load(Ordering::SeqCst),
            "two members were master at one instant after the lease was deleted"
        );
        assert!(
            !w.back.load(Ordering::SeqCst),
            "a master acted under an epoch below one acted under before (highest {})",
            w.highest.load(Ordering::SeqCst)
        );
        let started = Instant::now();
        for m in members.iter() {
            m.shutdown().await.unwrap();
        }
        assert!(started.elapsed() < ms(10_000));
    }
}
