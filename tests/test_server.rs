//! Integration tests of the MongoDB deployment used by the test suite (the
//! bundled mongomock/mockupdb test server unless `MONGODB_URI` is set), through
//! the official driver. They pin down the server behaviour the `failover`
//! library relies on.

mod support;

use std::time::{Duration, Instant, SystemTime};

use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, FindOptions, ReturnDocument};
use mongodb::{Client, Collection};

/// Fail-point state is global to the server: tests that configure it run one at
/// a time, and each filters its fail point on its own `appName`.
static FAIL_POINT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn client_named(app_name: &str) -> Client {
    let mut options = ClientOptions::parse(support::mongodb_uri())
        .await
        .expect("valid URI");
    options.app_name = Some(app_name.to_string());
    Client::with_options(options).expect("client")
}

async fn client() -> Client {
    client_named("failover-test-server").await
}

/// A fresh (dropped) collection of the default database.
async fn collection(client: &Client, name: &str) -> Collection<Document> {
    let coll = client
        .default_database()
        .expect("the URI names a database")
        .collection::<Document>(name);
    coll.drop().await.expect("drop");
    coll
}

/// The server error code of a command or write error.
fn error_code(err: &Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        _ => None,
    }
}

fn is_network_error(err: &Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
    )
}

async fn hello_local_time(client: &Client) -> DateTime {
    let reply = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .expect("hello");
    *reply
        .get_datetime("localTime")
        .expect("hello has localTime")
}

fn millis_apart(a: DateTime, b: DateTime) -> i64 {
    (a.timestamp_millis() - b.timestamp_millis()).abs()
}

#[tokio::test]
async fn hello_reports_local_time() {
    let client = client().await;
    let local_time = hello_local_time(&client).await;
    let now = DateTime::from_system_time(SystemTime::now());
    assert!(
        millis_apart(local_time, now) < 5_000,
        "{local_time} vs {now}"
    );
}

#[tokio::test]
async fn duplicate_id_is_error_11000() {
    let client = client().await;
    let coll = collection(&client, "ts_duplicate_id").await;
    coll.insert_one(doc! { "_id": 1, "a": 1 }).await.unwrap();
    let err = coll
        .insert_one(doc! { "_id": 1, "a": 2 })
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(11000), "{err}");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn find_one_and_update_upserts_and_returns_after() {
    let client = client().await;
    let coll = collection(&client, "ts_find_one_and_update").await;
    let update = doc! {
        "$inc": { "n": 1_i64 },
        "$setOnInsert": { "created": true },
        "$set": { "holder": "a" },
    };
    let first = coll
        .find_one_and_update(doc! { "_id": "lease" }, update.clone())
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .unwrap()
        .expect("upserted document");
    assert_eq!(first.get_i64("n"), Ok(1));
    assert_eq!(first.get_bool("created"), Ok(true));
    assert_eq!(first.get_str("holder"), Ok("a"));

    coll.update_one(
        doc! { "_id": "lease" },
        doc! { "$unset": { "created": "" } },
    )
    .await
    .unwrap();
    let second = coll
        .find_one_and_update(doc! { "_id": "lease" }, update)
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .unwrap()
        .expect("updated document");
    assert_eq!(second.get_i64("n"), Ok(2));
    assert!(!second.contains_key("created"), "$setOnInsert on update");

    // Before-image, projection, and no match without upsert.
    let before = coll
        .find_one_and_update(doc! { "_id": "lease" }, doc! { "$set": { "holder": "b" } })
        .projection(doc! { "holder": 1 })
        .await
        .unwrap()
        .expect("matched document");
    assert_eq!(before, doc! { "_id": "lease", "holder": "a" });
    let missing = coll
        .find_one_and_update(doc! { "_id": "nothing" }, doc! { "$set": { "x": 1 } })
        .await
        .unwrap();
    assert_eq!(missing, None);

    // An upsert whose filter misses an existing _id collides with it.
    let err = coll
        .find_one_and_update(
            doc! { "_id": "lease", "holder": "z" },
            doc! { "$set": { "x": 1 } },
        )
        .upsert(true)
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(11000), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_update_has_exactly_one_winner() {
    let client = client().await;
    let coll = collection(&client, "ts_conditional_update").await;
    coll.insert_one(doc! { "_id": "lease", "version": 1_i64 })
        .await
        .unwrap();

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let coll = coll.clone();
            tokio::spawn(async move {
                coll.update_one(
                    doc! { "_id": "lease", "version": 1_i64 },
                    doc! {
                        "$inc": { "version": 1_i64 },
                        "$set": { "holder": i },
                        "$currentDate": { "renewed": true },
                    },
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        let result = task.await.unwrap();
        assert!(result.matched_count <= 1);
        winners += result.modified_count;
    }
    assert_eq!(winners, 1);

    let doc = coll.find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(doc.get("version"), Some(&Bson::Int64(2)), "{doc}");
}

#[tokio::test]
async fn current_date_is_close_to_hello_local_time() {
    let client = client().await;
    let coll = collection(&client, "ts_current_date").await;
    let before = hello_local_time(&client).await;
    let result = coll
        .update_one(
            doc! { "_id": "x" },
            doc! { "$currentDate": { "at": true }, "$set": { "v": 1 } },
        )
        .upsert(true)
        .await
        .unwrap();
    assert!(result.upserted_id.is_some());
    let after = hello_local_time(&client).await;
    let at = *coll
        .find_one(doc! { "_id": "x" })
        .await
        .unwrap()
        .unwrap()
        .get_datetime("at")
        .expect("$currentDate sets a datetime");
    assert!(
        before.timestamp_millis() - 1 <= at.timestamp_millis()
            && at.timestamp_millis() <= after.timestamp_millis() + 1,
        "{before} <= {at} <= {after}"
    );
}

#[tokio::test]
async fn crud_basics() {
    let client = client().await;
    let coll = collection(&client, "ts_crud_basics").await;
    let docs: Vec<_> = (0..10_i32)
        .map(|i| doc! { "_id": i, "even": i % 2 == 0, "v": i64::from(i) })
        .collect();
    coll.insert_many(docs).await.unwrap();

    let page: Vec<Document> = {
        let options = FindOptions::builder()
            .sort(doc! { "v": -1 })
            .skip(1)
            .limit(3)
            .projection(doc! { "v": 1, "_id": 0 })
            .build();
        let mut cursor = coll
            .find(doc! { "even": true })
            .with_options(options)
            .await
            .unwrap();
        let mut out = Vec::new();
        while cursor.advance().await.unwrap() {
            out.push(cursor.deserialize_current().unwrap());
        }
        out
    };
    assert_eq!(
        page,
        vec![
            doc! { "v": 6_i64 },
            doc! { "v": 4_i64 },
            doc! { "v": 2_i64 }
        ]
    );

    let filter = doc! { "$or": [{ "v": { "$lt": 2_i64 } }, { "gone": { "$exists": true } }] };
    assert_eq!(coll.count_documents(filter.clone()).await.unwrap(), 2);
    assert_eq!(coll.estimated_document_count().await.unwrap(), 10);
    let updated = coll
        .update_many(filter, doc! { "$set": { "gone": true } })
        .await
        .unwrap();
    assert_eq!((updated.matched_count, updated.modified_count), (2, 2));
    let deleted = coll.delete_many(doc! { "gone": true }).await.unwrap();
    assert_eq!(deleted.deleted_count, 2);

    let index = mongodb::IndexModel::builder()
        .keys(doc! { "v": 1 })
        .options(
            mongodb::options::IndexOptions::builder()
                .unique(true)
                .build(),
        )
        .build();
    coll.create_index(index).await.unwrap();
    assert!(coll
        .list_index_names()
        .await
        .unwrap()
        .contains(&"v_1".to_string()));
    let err = coll
        .insert_one(doc! { "_id": 100, "v": 5_i64 })
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(11000), "{err}");

    let err = client
        .database("admin")
        .run_command(doc! { "noSuchCommand": 1 })
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(59), "{err}");
}

#[tokio::test]
async fn fail_point_error_code_fails_n_commands_then_recovers() {
    let _guard = FAIL_POINT_LOCK.lock().await;
    let client = client_named("ts-fp-error-code").await;
    let coll = collection(&client, "ts_fp_error_code").await;
    support::fail_command(
        &client,
        doc! {
            "mode": { "times": 2 },
            "data": {
                "failCommands": ["insert"],
                "errorCode": 10107,
                "appName": "ts-fp-error-code",
            },
        },
    )
    .await;
    for i in 0..2 {
        let err = coll.insert_one(doc! { "_id": i }).await.unwrap_err();
        assert_eq!(error_code(&err), Some(10107), "attempt {i}: {err}");
    }
    coll.insert_one(doc! { "_id": 2 }).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    support::clear_fail_points(&client).await;
}

#[tokio::test]
async fn fail_point_close_connection_is_a_network_error() {
    let _guard = FAIL_POINT_LOCK.lock().await;
    let client = client_named("ts-fp-close").await;
    let coll = collection(&client, "ts_fp_close").await;
    support::fail_command(
        &client,
        doc! {
            "mode": { "times": 1 },
            "data": {
                "failCommands": ["insert"],
                "closeConnection": true,
                "appName": "ts-fp-close",
            },
        },
    )
    .await;
    let err = coll.insert_one(doc! { "_id": 1 }).await.unwrap_err();
    assert!(is_network_error(&err), "not a network error: {err:?}");
    coll.insert_one(doc! { "_id": 2 }).await.unwrap();
    support::clear_fail_points(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_point_block_connection_delays_only_that_command() {
    let _guard = FAIL_POINT_LOCK.lock().await;
    let blocked = client_named("ts-fp-block").await;
    let other = client_named("ts-fp-block-other").await;
    let coll = collection(&blocked, "ts_fp_block").await;
    let other_coll = other
        .default_database()
        .unwrap()
        .collection::<Document>("ts_fp_block");
    other_coll.find_one(doc! {}).await.unwrap(); // connect before timing
    support::fail_command(
        &blocked,
        doc! {
            "mode": { "times": 1 },
            "data": {
                "failCommands": ["find"],
                "blockConnection": true,
                "blockTimeMS": 1000,
                "appName": "ts-fp-block",
            },
        },
    )
    .await;

    let slow = tokio::spawn(async move {
        let start = Instant::now();
        coll.find_one(doc! {}).await.unwrap();
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    other_coll.find_one(doc! {}).await.unwrap();
    let other_elapsed = start.elapsed();
    let slow_elapsed = slow.await.unwrap();

    assert!(
        slow_elapsed >= Duration::from_millis(1000),
        "blocked for {slow_elapsed:?}"
    );
    assert!(
        slow_elapsed < Duration::from_secs(10),
        "blocked for {slow_elapsed:?}"
    );
    assert!(
        other_elapsed < Duration::from_millis(500),
        "other connection took {other_elapsed:?}"
    );
    support::clear_fail_points(&blocked).await;
}

#[tokio::test]
async fn server_status_counts_operations() {
    async fn opcounters(client: &Client) -> Document {
        let status = client
            .database("admin")
            .run_command(doc! { "serverStatus": 1 })
            .await
            .unwrap();
        assert!(status.get_datetime("localTime").is_ok());
        status.get_document("opcounters").unwrap().clone()
    }
    let client = client().await;
    let coll = collection(&client, "ts_server_status").await;
    let before = opcounters(&client).await;
    for i in 0..3 {
        coll.insert_one(doc! { "_id": i }).await.unwrap();
    }
    coll.find_one(doc! {}).await.unwrap();
    coll.update_one(doc! { "_id": 0 }, doc! { "$set": { "a": 1 } })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 1 }).await.unwrap();
    let after = opcounters(&client).await;
    for (name, at_least) in [
        ("insert", 3),
        ("query", 1),
        ("update", 1),
        ("delete", 1),
        ("command", 1),
    ] {
        let (b, a) = (before.get_i64(name).unwrap(), after.get_i64(name).unwrap());
        assert!(a - b >= at_least, "{name}: {b} -> {a}");
    }
}
