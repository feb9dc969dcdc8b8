//! What members do with lease documents that an operator (or time) changed under
//! them: a repair while the holder may still act, an epoch at the largest value
//! a document can store, and clock documents of members that are gone. Wall-clock
//! time, on every selected server.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failover::bson::{doc, Bson, DateTime, Document};
use failover::{repair_lease, Intervals, Member, Options};
use futures_util::StreamExt;
use tokio::time::{sleep, timeout};

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

async fn newest(leases: &mongodb::Collection<Document>) -> Document {
    leases
        .find_one(doc! { "_id.lease": NAME })
        .sort(doc! { "epoch": -1, "_id.v": -1 })
        .await
        .unwrap()
        .expect("a lease version")
}

fn number(d: &Document, field: &str) -> i64 {
    match d.get(field) {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        other => panic!("field {field} is {other:?} in {d}"),
    }
}

/// Watches two members every millisecond; true when both were master at once.
fn overlap_watch(
    a: Arc<Member>,
    b: Arc<Member>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let mut overlap = false;
        while !done.load(Ordering::SeqCst) {
            overlap |= a.is_master() && b.is_master();
            sleep(ms(1)).await;
        }
        overlap
    })
}

support::server_tests! {
    /// An operator spoils the holder's newest version and repairs it at once:
    /// the repaired lease must not be taken while the holder may still act.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repair_under_a_holder_makes_no_second_master(uri: String) {
        let c = "lease_repaired_under_master";
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let leases = client.database(support::TEST_DB).collection::<Document>(c);
        let a = Arc::new(Member::start(NAME, options(&uri, c, "a")).await.unwrap());
        timeout(ms(10_000), a.wait_for_master()).await.unwrap().unwrap();
        let b = Arc::new(Member::start(NAME, options(&uri, c, "b")).await.unwrap());
        timeout(ms(10_000), b.wait_for_state(failover::State::Slave)).await.unwrap().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let watch = overlap_watch(a.clone(), b.clone(), done.clone());
        for _ in 0..3 {
            // The holder's newest version, made unreadable by a hand edit, and
            // repaired at once, while the holder may still act.
            let top = newest(&leases).await;
            leases
                .update_one(
                    doc! { "_id": top.get_document("_id").unwrap().clone() },
                    doc! { "$set": { "version": "spoiled by hand" } },
                )
                .await
                .unwrap();
            match repair_lease(&options(&uri, c, "repairer"), NAME).await {
                Ok(_) => {}
                // The holder renewed past the spoiled version first: nothing to
                // repair any more, as the error says.
                Err(e) if e.to_string().contains("run the repair again") => {}
                Err(e) => panic!("repair: {e}"),
            }
            sleep(ms(1500)).await;
        }
        timeout(ms(10_000), async {
            while !a.is_master() && !b.is_master() {
                sleep(ms(5)).await;
            }
        })
        .await
        .expect("somebody leads after the repairs");
        done.store(true, Ordering::SeqCst);
        assert!(
            !watch.await.unwrap(),
            "two members were master at one instant after a repair"
        );
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    /// A lease whose epoch is the largest a document can store is never taken
    /// with that same epoch again: the member reports it and waits.
    #[tokio::test]
    async fn the_largest_epoch_is_never_written_twice(uri: String) {
        let c = "lease_epoch_at_the_limit";
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let leases = client.database(support::TEST_DB).collection::<Document>(c);
        leases
            .insert_one(doc! {
                "_id": { "lease": NAME, "v": 1_i64 }, "holder": "gone", "token": 1_i64,
                "epoch": i64::MAX, "version": 1_i64, "lease_ms": 100_i64,
                "renewed_at": DateTime::from_millis(0), "released": true,
            })
            .await
            .unwrap();
        let a = Member::start(NAME, options(&uri, c, "a")).await.unwrap();
        let mut events = a.events();
        let reported = timeout(ms(5000), async {
            loop {
                match events.next().await {
                    Some(failover::Event::Error(e)) => break e.to_string(),
                    Some(_) => {}
                    None => panic!("the member stopped"),
                }
            }
        })
        .await
        .expect("the member reports the epoch at its limit");
        assert!(reported.contains("largest epoch"), "{reported}");
        sleep(ms(1000)).await;
        assert!(!a.is_master(), "a took the lease with epoch {:?}", a.epoch());
        let epochs: Vec<i64> = leases
            .find(doc! { "_id.lease": NAME })
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|d| number(&d.unwrap(), "epoch"))
            .collect();
        assert_eq!(epochs, vec![i64::MAX], "an epoch was written twice or went back");
        a.shutdown().await.unwrap();
    }

    /// The clock documents of members that are gone do not pile up: the
    /// holder's garbage collection deletes those not stamped for an hour.
    #[tokio::test]
    async fn clock_documents_of_members_that_are_gone_are_collected(uri: String) {
        let c = "lease_idle_clocks";
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let leases = client.database(support::TEST_DB).collection::<Document>(c);
        let two_hours_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 2 * 3_600_000);
        for pid in 0..20 {
            leases
                .insert_one(doc! {
                    "_id": { "clock": NAME, "member": format!("gone-host:{pid}") },
                    "now": two_hours_ago,
                })
                .await
                .unwrap();
        }
        let a = Member::start(NAME, options(&uri, c, "a")).await.unwrap();
        timeout(ms(10_000), a.wait_for_master()).await.unwrap().unwrap();
        // 200 ms a renewal: 16 versions (one collection) within about 3.5 s.
        let gone = timeout(ms(15_000), async {
            loop {
                let left = leases
                    .count_documents(doc! { "_id.clock": NAME, "_id.member": { "$regex": "^gone-host" } })
                    .await
                    .unwrap();
                if left == 0 {
                    break;
                }
                sleep(ms(100)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the idle clock documents are still there after 15 s");
        // The live member's own clock document stays.
        assert_eq!(
            leases.count_documents(doc! { "_id.clock": NAME, "_id.member": "a" }).await.unwrap(),
            1
        );
        a.shutdown().await.unwrap();
    }
}
