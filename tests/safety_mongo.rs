//! Safety over the wire, on deployments the bundled test server plays: a `mongos`
//! whose clock runs ahead of the node that stamps the lease, epochs after the lease
//! document was deleted, and the repair of a malformed lease. Wall-clock time.

mod support;

use std::time::Duration;

use failover::bson::{doc, Document};
use failover::{repair_lease, Error, Event, Intervals, Member, Options, State};
use tokio::time::{sleep, timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fast(uri: &str, collection: &str, id: &str) -> Options {
    Options::new()
        .connect_string(uri)
        .collection(collection)
        .member_id(id)
        .intervals(Intervals {
            init: Duration::ZERO,
            master: ms(300),
            slave: ms(400),
            ticking: ms(500),
            error: ms(300),
        })
        .lease(ms(600))
}

/// Issue 8, item 2: a standby whose `hello` clock (a mongos on its application
/// server) runs 2.5 s ahead must not take the lease from a healthy master: expiry
/// is judged on the clock that stamps the lease. Default intervals.
#[tokio::test]
async fn a_mongos_clock_ahead_does_not_make_a_second_master() {
    let uri = support::test_server_uri();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    // The member's connections carry appName `failover:<member id>`.
    support::set_hello_offset(&client, "failover:mongos-b", 2500).await;
    let options = |id: &str| {
        Options::new()
            .connect_string(&uri)
            .collection("safety_mongos")
            .member_id(id)
    };
    let a = Member::start("subsystem", options("mongos-a"))
        .await
        .unwrap();
    let epoch = timeout(ms(10_000), a.wait_for_master())
        .await
        .unwrap()
        .unwrap();
    let b = Member::start("subsystem", options("mongos-b"))
        .await
        .unwrap();
    timeout(ms(10_000), b.wait_for_state(State::Slave))
        .await
        .expect("b follows within 10 s")
        .unwrap();
    // Watch for two lease periods (3 s each): a renews every 2 s; b must never lead.
    let end = Instant::now() + ms(6500);
    while Instant::now() < end {
        assert!(!b.is_master(), "b took the lease from a healthy master");
        assert_eq!(a.epoch(), Some(epoch), "a lost its lease while healthy");
        sleep(ms(50)).await;
    }
    support::set_hello_offset(&client, "failover:mongos-b", 0).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Issue 8, item 4: epochs never go backwards, even if the lease document is
/// deleted: a fenced document written by an old master would otherwise refuse the
/// new one and accept a zombie.
#[tokio::test]
async fn epochs_grow_after_the_lease_document_is_deleted() {
    let uri = support::test_server_uri();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let leases = client
        .database(support::TEST_DB)
        .collection::<Document>("safety_deleted");
    let a = Member::start("subsystem", fast(&uri, "safety_deleted", "del-a"))
        .await
        .unwrap();
    let first = timeout(ms(10_000), a.wait_for_master())
        .await
        .unwrap()
        .unwrap();
    a.shutdown().await.unwrap();
    let deleted = leases
        .delete_many(doc! { "_id.lease": "subsystem" })
        .await
        .unwrap();
    assert!(deleted.deleted_count > 0, "no lease version was deleted");
    let b = Member::start("subsystem", fast(&uri, "safety_deleted", "del-b"))
        .await
        .unwrap();
    let second = timeout(ms(10_000), b.wait_for_master())
        .await
        .unwrap()
        .unwrap();
    assert!(second > first, "epoch went from {first} back to {second}");
    b.shutdown().await.unwrap();
}

/// Issue 8, item 4: a malformed lease document is reported without advice to delete
/// it, and `repair_lease` rewrites it keeping its epoch.
#[tokio::test]
async fn a_malformed_lease_is_repaired_keeping_its_epoch() {
    let uri = support::test_server_uri();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let leases = client
        .database(support::TEST_DB)
        .collection::<Document>("safety_malformed");
    let far = 9_000_000_000_000_i64; // above any clock-based fresh epoch
    leases
        .insert_one(
            doc! { "_id": { "lease": "subsystem", "v": 3_i64 }, "epoch": far, "version": "seven" },
        )
        .await
        .unwrap();
    let a = Member::start("subsystem", fast(&uri, "safety_malformed", "bad-a"))
        .await
        .unwrap();
    let mut events = a.events();
    let message = timeout(ms(10_000), async {
        loop {
            match events.next().await {
                Some(Event::Error(e @ Error::MalformedLease { .. })) => break e.to_string(),
                Some(_) => {}
                None => panic!("member stopped"),
            }
        }
    })
    .await
    .expect("the malformed lease is reported");
    assert!(
        message.contains("repair") && !message.contains("delete"),
        "{message}"
    );
    assert!(!a.is_master());
    let options = fast(&uri, "safety_malformed", "repairer");
    let repaired = repair_lease(&options, "subsystem").await.unwrap();
    assert!(
        repaired > far as u64,
        "repaired epoch {repaired} is not above {far}"
    );
    let epoch = timeout(ms(10_000), a.wait_for_master())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(epoch, repaired + 1);
    a.shutdown().await.unwrap();
}
