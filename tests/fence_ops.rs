//! `FencedCollection` over the wire (the test server, or `MONGODB_URI`): what each
//! write does for an older, the same and a newer epoch; deletes and their
//! tombstones; documents without a fence; and the filters and updates it refuses.

mod support;

use failover::bson::{doc, Bson, Document};
use failover::fence::{FencedCollection, TOMBSTONE_FIELD};
use failover::Error;
use mongodb::Collection;

/// A fenced view and the raw collection of a collection of its own.
async fn fenced(name: &str) -> (FencedCollection, Collection<Document>) {
    let coll = collection(name).await;
    (FencedCollection::new(coll.clone()), coll)
}

async fn collection(name: &str) -> Collection<Document> {
    let client = mongodb::Client::with_uri_str(support::mongodb_uri())
        .await
        .unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    client
        .default_database()
        .unwrap_or_else(|| client.database("test"))
        .collection::<Document>(&format!("{name}_{}_{nanos}", std::process::id()))
}

fn stale(epoch: u64, current: u64) -> Error {
    Error::StaleEpoch {
        epoch,
        current: Some(current),
    }
}

async fn raw(coll: &Collection<Document>, id: &str) -> Option<Document> {
    coll.find_one(doc! { "_id": id }).await.unwrap()
}

#[tokio::test]
async fn writes_refuse_older_epochs_and_accept_the_same_and_newer() {
    let (f, coll) = fenced("fence_epochs").await;
    let id = doc! { "_id": "acct" };
    let inc = doc! { "$inc": { "n": 1_i64 } };

    let d = f.upsert_one(1, id.clone(), inc.clone()).await.unwrap();
    assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(1), Ok(1)), "{d}");
    let d = f.update_one(2, id.clone(), inc.clone()).await.unwrap();
    let d = d.expect("the document");
    assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(2), Ok(2)), "{d}");

    // Epoch 1 again: refused, whatever the write, and nothing changes.
    let err = f.update_one(1, id.clone(), inc.clone()).await.unwrap_err();
    assert_eq!(err, stale(1, 2));
    let err = f.upsert_one(1, id.clone(), inc.clone()).await.unwrap_err();
    assert_eq!(err, stale(1, 2));
    let err = f.delete_one(1, id.clone()).await.unwrap_err();
    assert_eq!(err, stale(1, 2));
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    let d = raw(&coll, "acct").await.unwrap();
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
    // So may a newer one, which fences the older ones out.
    let d = f.upsert_one(5, id.clone(), inc.clone()).await.unwrap();
    assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(4), Ok(5)), "{d}");
    assert_eq!(
        f.update_one(4, id.clone(), inc).await.unwrap_err(),
        stale(4, 5)
    );
}

#[tokio::test]
async fn no_matching_document_is_none_not_an_error() {
    let (f, coll) = fenced("fence_missing").await;
    let inc = doc! { "$inc": { "n": 1_i64 } };
    let none = f
        .update_one(3, doc! { "_id": "nobody" }, inc.clone())
        .await
        .unwrap();
    assert_eq!(none, None);
    // Without an `_id` in the filter too, and nothing is written.
    let none = f
        .update_one(3, doc! { "owner": "nobody" }, inc)
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(
        f.delete_one(3, doc! { "owner": "nobody" }).await.unwrap(),
        None
    );
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
}

#[tokio::test]
async fn documents_without_a_fence_take_any_epoch_then_are_fenced() {
    let (f, coll) = fenced("fence_unfenced").await;
    coll.insert_many([
        doc! { "_id": "a", "n": 1_i64 },
        doc! { "_id": "b", "n": 1_i64 },
    ])
    .await
    .unwrap();
    let inc = doc! { "$inc": { "n": 1_i64 } };
    // Any epoch, even 0, is accepted, and the document gets the field.
    let d = f
        .update_one(0, doc! { "_id": "a" }, inc.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(2), Ok(0)), "{d}");
    let d = f
        .upsert_one(7, doc! { "_id": "b" }, inc.clone())
        .await
        .unwrap();
    assert_eq!((d.get_i64("n"), d.get_i64("_fence")), (Ok(2), Ok(7)), "{d}");
    // From then on it is fenced like any other.
    assert_eq!(
        f.update_one(6, doc! { "_id": "b" }, inc).await.unwrap_err(),
        stale(6, 7)
    );
    // The reads see them both.
    assert!(f.find_one(doc! { "_id": "a" }).await.unwrap().is_some());
}

#[tokio::test]
async fn a_fenced_delete_leaves_a_tombstone_that_fences_out_stale_writers() {
    let (f, coll) = fenced("fence_delete").await;
    let id = doc! { "_id": "acct" };
    let inc = doc! { "$inc": { "n": 1_i64 } };
    f.upsert_one(
        2,
        id.clone(),
        doc! { "$set": { "n": 10_i64, "owner": "a" } },
    )
    .await
    .unwrap();

    // Epoch 3 deletes it: it returns the document as it was...
    let deleted = f.delete_one(3, id.clone()).await.unwrap().unwrap();
    assert_eq!(
        (deleted.get_i64("n"), deleted.get_i64("_fence")),
        (Ok(10), Ok(2)),
        "{deleted}"
    );
    // ...and leaves a tombstone with its epoch, which reads skip.
    let tombstone = raw(&coll, "acct").await.unwrap();
    assert_eq!(
        tombstone,
        doc! { "_id": "acct", "_fence": 3_i64, TOMBSTONE_FIELD: true }
    );
    assert_eq!(f.find_one(id.clone()).await.unwrap(), None);
    let live = coll.count_documents(f.live_filter(doc! {})).await.unwrap();
    assert_eq!(live, 0);

    // The stale master of epoch 2 can neither resurrect, update nor delete it.
    assert_eq!(
        f.upsert_one(2, id.clone(), inc.clone()).await.unwrap_err(),
        stale(2, 3)
    );
    assert_eq!(
        f.update_one(2, id.clone(), inc.clone()).await.unwrap_err(),
        stale(2, 3)
    );
    assert_eq!(f.delete_one(2, id.clone()).await.unwrap_err(), stale(2, 3));
    assert_eq!(raw(&coll, "acct").await.unwrap(), tombstone);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);

    // The deleting epoch sees nothing to update or delete.
    assert_eq!(
        f.update_one(3, id.clone(), inc.clone()).await.unwrap(),
        None
    );
    assert_eq!(f.delete_one(3, id.clone()).await.unwrap(), None);

    // An upsert of the same or a newer epoch creates the document anew, as an
    // insert: the filter's fields, `$setOnInsert` and the update, nothing of old.
    let d = f
        .upsert_one(
            4,
            doc! { "_id": "acct", "kind": "savings" },
            doc! { "$inc": { "n": 1_i64 }, "$setOnInsert": { "opened": 4_i64 } },
        )
        .await
        .unwrap();
    assert_eq!(d.get_i64("n"), Ok(1), "{d}");
    assert_eq!(d.get_i64("_fence"), Ok(4), "{d}");
    assert_eq!(d.get_str("kind"), Ok("savings"), "{d}");
    assert_eq!(d.get_i64("opened"), Ok(4), "{d}");
    assert!(
        d.get("owner").is_none() && d.get(TOMBSTONE_FIELD).is_none(),
        "{d}"
    );
    assert_eq!(f.find_one(id).await.unwrap(), Some(d));
}

#[tokio::test]
async fn deleting_a_missing_id_still_fences_it() {
    let (f, coll) = fenced("fence_delete_missing").await;
    let id = doc! { "_id": "never" };
    assert_eq!(f.delete_one(5, id.clone()).await.unwrap(), None);
    assert_eq!(
        raw(&coll, "never").await.unwrap(),
        doc! { "_id": "never", "_fence": 5_i64, TOMBSTONE_FIELD: true }
    );
    // A stale master cannot create it afterwards.
    assert_eq!(
        f.upsert_one(4, id.clone(), doc! { "$set": { "x": 1 } })
            .await
            .unwrap_err(),
        stale(4, 5)
    );
    // A newer delete raises the tombstone's epoch.
    assert_eq!(f.delete_one(6, id.clone()).await.unwrap(), None);
    assert_eq!(raw(&coll, "never").await.unwrap().get_i64("_fence"), Ok(6));
    // A live document that the rest of the filter excludes is left alone.
    f.upsert_one(6, doc! { "_id": "kept" }, doc! { "$set": { "kind": "a" } })
        .await
        .unwrap();
    assert_eq!(
        f.delete_one(6, doc! { "_id": "kept", "kind": "b" })
            .await
            .unwrap(),
        None
    );
    let kept = raw(&coll, "kept").await.unwrap();
    assert_eq!(kept.get_str("kind"), Ok("a"), "{kept}");
    assert!(kept.get(TOMBSTONE_FIELD).is_none(), "{kept}");
}

#[tokio::test]
async fn an_upsert_must_name_the_id() {
    let (f, coll) = fenced("fence_upsert_id").await;
    for filter in [
        doc! { "owner": "a" },
        doc! {},
        doc! { "_id": { "$in": ["a", "b"] } },
    ] {
        let err = f
            .upsert_one(1, filter.clone(), doc! { "$inc": { "n": 1 } })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { argument: "filter", reason } if reason.contains("_id")),
            "{filter}: {err:?}"
        );
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
    // A document as the `_id` is an equality, not an operator.
    let d = f
        .upsert_one(1, doc! { "_id": { "day": 1 } }, doc! { "$inc": { "n": 1 } })
        .await
        .unwrap();
    assert_eq!(d.get_document("_id"), Ok(&doc! { "day": 1 }), "{d}");
}

#[tokio::test]
async fn writers_of_the_same_epoch_get_no_stale_epoch() {
    let (f, coll) = fenced("fence_same_epoch").await;
    // A document with this `_id` that the rest of the filter excludes: the upsert
    // can neither update nor insert; the error says so, and is no `StaleEpoch`.
    f.upsert_one(2, doc! { "_id": "x" }, doc! { "$set": { "kind": "a" } })
        .await
        .unwrap();
    let err = f
        .upsert_one(
            2,
            doc! { "_id": "x", "kind": "b" },
            doc! { "$inc": { "n": 1 } },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::FenceConflict { reason, .. } if reason.contains("does not match")),
        "{err:?}"
    );

    // Writers of one epoch racing to create one document: every upsert applies
    // once (on a real server the losers of the insert race update the winner's).
    const WRITERS: i64 = 8;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        // A client of its own for each, so that the writes really run at once.
        let client = mongodb::Client::with_uri_str(support::mongodb_uri())
            .await
            .unwrap();
        let f = FencedCollection::new(
            client
                .database(&coll.namespace().db)
                .collection(coll.name()),
        );
        tasks.push(tokio::spawn(async move {
            f.upsert_one(3, doc! { "_id": "race" }, doc! { "$inc": { "n": 1_i64 } })
                .await
        }));
    }
    for task in tasks {
        let d = task.await.unwrap().unwrap();
        assert_eq!(d.get_i64("_fence"), Ok(3), "{d}");
    }
    let d = raw(&coll, "race").await.unwrap();
    assert_eq!(d.get_i64("n"), Ok(WRITERS), "{d}");
    let copies = coll.count_documents(doc! { "_id": "race" }).await.unwrap();
    assert_eq!(copies, 1);
}

#[tokio::test]
async fn updates_that_would_break_the_fence_are_refused() {
    let (f, coll) = fenced("fence_bad_updates").await;
    f.upsert_one(1, doc! { "_id": "a" }, doc! { "$set": { "n": 1 } })
        .await
        .unwrap();
    for update in [
        doc! { "n": 2 },                       // a replacement
        doc! {},                               // nothing
        doc! { "$set": { "_fence": 99_i64 } }, // the fence itself
        doc! { "$inc": { "_fence": 1_i64 } },  //
        doc! { "$unset": { "_deleted": "" } }, // the tombstone mark
        doc! { "$rename": { "n": "_fence" } }, // onto the fence
        doc! { "$set": "not a document" },     //
    ] {
        let err = f
            .update_one(1, doc! { "_id": "a" }, update.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::InvalidArgument {
                    argument: "update",
                    ..
                }
            ),
            "{update}: {err:?}"
        );
    }
    assert_eq!(
        raw(&coll, "a").await.unwrap(),
        doc! { "_id": "a", "_fence": 1_i64, "n": 1 }
    );
    // Fields that cannot hold the fence, and epochs MongoDB cannot store.
    for field in ["", "a.b", "$f", "_id", TOMBSTONE_FIELD] {
        let bad = FencedCollection::new(coll.clone()).field(field);
        let err = bad
            .upsert_one(1, doc! { "_id": "a" }, doc! { "$set": { "n": 2 } })
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::InvalidArgument {
                    argument: "field",
                    ..
                }
            ),
            "{field:?}: {err:?}"
        );
    }
    let err = f
        .delete_one(u64::MAX, doc! { "_id": "a" })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidArgument {
                argument: "epoch",
                ..
            }
        ),
        "{err:?}"
    );
    // With a field of its own, `_fence` is an ordinary field.
    let own = FencedCollection::new(coll.clone()).field("epoch");
    let d = own
        .update_one(4, doc! { "_id": "a" }, doc! { "$set": { "_fence": 0_i64 } })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.get_i64("epoch"), d.get_i64("_fence")),
        (Ok(4), Ok(0)),
        "{d}"
    );
}

#[tokio::test]
async fn a_fence_field_that_holds_no_epoch_is_an_error() {
    let (f, coll) = fenced("fence_not_an_epoch").await;
    coll.insert_one(doc! { "_id": "a", "_fence": "three" })
        .await
        .unwrap();
    let err = f
        .update_one(5, doc! { "_id": "a" }, doc! { "$set": { "n": 1 } })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::FenceConflict { reason, .. } if reason.contains("not an epoch")),
        "{err:?}"
    );
    assert!(!matches!(err, Error::StaleEpoch { .. }));
    assert_eq!(
        raw(&coll, "a").await.unwrap().get(TOMBSTONE_FIELD),
        None::<&Bson>
    );
}
