//! Fencing: a master paused in the middle of a task wakes up after another member
//! has taken over and written with a higher epoch; its own write is refused with
//! `Error::StaleEpoch`. First across two member processes, then
//! `FencedCollection` alone against the test server (or `MONGODB_URI`).

mod members;
mod support;

use std::time::Duration;

use failover::fence::FencedCollection;
use failover::Error;
use members::{Spec, Tail, Timings};
use mongodb::bson::{doc, Document};

const TIMINGS: Timings = members::SHORT_TIMINGS;
/// Long enough that A is still inside its task when it is paused and resumed.
const TASK_MS: u64 = 3000;
/// Slack for a shared 2-core machine on top of every bound below.
const SLACK_MS: u64 = 3000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn unique(what: &str) -> String {
    format!("{what}_{}_{}", std::process::id(), members::mono_ns())
}

// On every selected server (mock, FerretDB, MONGODB_URI).
support::server_tests! {
    #[test]
    fn a_paused_masters_fenced_write_is_rejected(uri: String) {
        if support::kind_of(&uri) == support::Server::FerretDb {
            // FerretDB cannot fence (see failover::fence): it must say so.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(fencing_is_refused(&uri));
            return;
        }
        let dir = members::run_dir("fence");
        let collection = unique("fence");
        let spec = |id: &str| Spec {
            name: "fenced".to_owned(),
            id: id.to_owned(),
            collection: collection.clone(),
            timings: TIMINGS,
            tasks: 1,
            task_ms: TASK_MS,
            fence: true,
            blocking: false,
            sequenced: false,
            durable: false,
            faketime: None,
            log: dir.join(format!("{id}.log")),
        };
        let (sa, sb) = (spec("a"), spec("b"));
        let (mut la, mut lb) = (Tail::new(&sa.log), Tail::new(&sb.log));
        let first = ms(5000 + SLACK_MS);

        // A becomes master and starts the one task.
        let mut a = sa.spawn(&uri);
        let master_a = la
            .wait_for(first, |l| l.event == "master")
            .expect("a became master");
        let epoch_a = master_a.epoch.unwrap();
        la.wait_for(first, |l| l.event == "task-start")
            .expect("a started its task");
        let mut b = sb.spawn(&uri);
        lb.wait_for(first, |l| l.event == "slave")
            .expect("b follows a");

        // A pauses mid-task, longer than its lease: B takes over (once the lease has
        // run out, at B's next check, in one round trip) and does the task with its
        // fenced write.
        a.pause();
        let paused = members::mono_ns();
        let t = TIMINGS;
        let takeover = ms(t.lease() + t.slave + t.ticking + SLACK_MS);
        let master_b = lb
            .wait_for(takeover, |l| l.event == "master")
            .expect("b took over from the paused a");
        let epoch_b = master_b.epoch.unwrap();
        assert!(epoch_b > epoch_a, "epochs {epoch_a} then {epoch_b}");
        let done_b = lb
            .wait_for(ms(TASK_MS + SLACK_MS), |l| {
                l.event == "task-done" && l.epoch == Some(epoch_b)
            })
            .expect("b did the task under its epoch");
        assert!(
            done_b.t - paused >= t.lease() * 1_000_000,
            "a was paused for less than its lease"
        );

        // A wakes up, finishes its task and tries its write with the old epoch.
        a.resume();
        let rejected = la
            .wait_for(ms(SLACK_MS), |l| l.event == "fence-rejected")
            .expect("a's fenced write was rejected");
        assert_eq!(rejected.epoch, Some(epoch_a));
        assert_eq!(rejected.key.as_deref(), Some("0"));
        let want = format!("StaleEpoch {{ epoch: {epoch_a}, current: Some({epoch_b}) }}");
        assert_eq!(rejected.detail, want);
        la.poll();
        assert!(
            !la.lines.iter().any(|l| l.event == "task-done"),
            "a logged its task as done: {:?}",
            la.lines
        );
        // And it steps down.
        la.wait_for(ms(SLACK_MS), |l| {
            l.event == "statechange" && l.detail.starts_with("master->")
        })
        .expect("a stepped down");

        // The ledger has B's write only, fenced with B's epoch.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ledger = rt.block_on(async {
            let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
            client
                .default_database()
                .unwrap_or_else(|| client.database("test"))
                .collection::<Document>(&format!("{collection}_ledger"))
                .find_one(doc! { "_id": "ledger" })
                .await
                .unwrap()
                .expect("the ledger document")
        });
        assert_eq!(ledger.get_i64("_fence"), Ok(epoch_b as i64), "{ledger}");
        assert_eq!(ledger.get_i64("n"), Ok(1), "{ledger}");

        for p in [&mut a, &mut b] {
            p.terminate();
            let status = p.wait_exit(ms(TASK_MS + t.ticking + SLACK_MS));
            assert!(status.is_some_and(|s| s.success()), "{}: {status:?}", p.id);
        }
    }
}

async fn fenced(uri: &str, name: &str) -> (FencedCollection, mongodb::Collection<Document>) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let coll = client
        .default_database()
        .unwrap_or_else(|| client.database("test"))
        .collection::<Document>(&unique(name));
    (FencedCollection::new(coll.clone()), coll)
}

/// On a server that applies conditional writes without atomicity (FerretDB 1.x),
/// every fenced write is refused with `Error::Unsupported`, and nothing is written.
async fn fencing_is_refused(uri: &str) {
    let (f, coll) = fenced(uri, "fence_refused").await;
    let id = doc! { "_id": "acct" };
    let inc = doc! { "$inc": { "n": 1_i64 } };
    let upsert = f.upsert_one(1, id.clone(), inc.clone()).await.unwrap_err();
    assert!(matches!(upsert, Error::Unsupported { .. }), "{upsert:?}");
    assert!(upsert.to_string().contains("FerretDB"), "{upsert}");
    let update = f.update_one(1, id.clone(), inc).await.unwrap_err();
    assert!(matches!(update, Error::Unsupported { .. }), "{update:?}");
    let delete = f.delete_one(1, id).await.unwrap_err();
    assert!(matches!(delete, Error::Unsupported { .. }), "{delete:?}");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
}

support::server_tests! {
    #[tokio::test]
    async fn fenced_writes_refuse_older_epochs(uri: String) {
        if support::kind_of(&uri) == support::Server::FerretDb {
            fencing_is_refused(&uri).await;
            return;
        }
        let (f, coll) = fenced(&uri, "fenced_writes").await;
        let id = doc! { "_id": "acct" };
        let inc = doc! { "$inc": { "n": 1_i64 } };

        let d = f.upsert_one(1, id.clone(), inc.clone()).await.unwrap();
        assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(1), Ok(1)), "{d}");
        let d = f
            .update_one(2, id.clone(), inc.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(2), Ok(2)), "{d}");

        // Epoch 1 again: refused, and the document is untouched.
        let err = f.update_one(1, id.clone(), inc.clone()).await.unwrap_err();
        assert_eq!(
            err,
            Error::StaleEpoch {
                epoch: 1,
                current: Some(2)
            }
        );
        // An upsert with a stale epoch does not insert a second document either.
        let err = f.upsert_one(1, id.clone(), inc.clone()).await.unwrap_err();
        assert_eq!(
            err,
            Error::StaleEpoch {
                epoch: 1,
                current: Some(2)
            }
        );
        let docs = coll.count_documents(doc! {}).await.unwrap();
        assert_eq!(docs, 1);
        let d = coll.find_one(id.clone()).await.unwrap().unwrap();
        assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(2), Ok(2)), "{d}");

        // The same epoch may write again; a `$set` of its own keeps the fence.
        let d = f
            .update_one(
                2,
                id.clone(),
                doc! { "$inc": { "n": 1_i64 }, "$set": { "owner": "b" } },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.get_i64("n"), d.get_i64("_fence"), d.get_str("owner")),
            (Ok(3), Ok(2), Ok("b")),
            "{d}"
        );

        // No document at all: no document, neither a database error nor a stale epoch.
        let none = f
            .update_one(3, doc! { "_id": "nobody" }, inc.clone())
            .await
            .unwrap();
        assert_eq!(none, None);
    }
}
