//! Integration tests of the MongoDB deployment used by the test suite (the
//! bundled mongomock/mockupdb test server unless `MONGODB_URI` is set), through
//! the official driver. They pin down the server behaviour the `failover`
//! library relies on, and the deployments the test server plays beyond a
//! standalone `mongod` (always on the bundled server): a mongos whose clock runs
//! ahead (hello offsets by appName) and replica sets with a primary change.

mod support;

use std::time::{Duration, Instant, SystemTime};

use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::event::sdam::SdamEvent;
use mongodb::event::EventHandler;
use mongodb::options::{
    ClientOptions, CollectionOptions, FindOptions, ReadConcern, ReadPreference, ReturnDocument,
    SelectionCriteria, ServerMonitoringMode, WriteConcern,
};
use mongodb::{Client, Collection, ServerType};

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

// --- Emulated deployments: a mongos's clock, replica sets -----------------------

/// A client of `uri` named `app_name`, with `tweak` applied to its options.
async fn client_of(uri: &str, app_name: &str, tweak: impl FnOnce(&mut ClientOptions)) -> Client {
    let mut options = ClientOptions::parse(uri).await.expect("valid URI");
    options.app_name = Some(app_name.to_string());
    tweak(&mut options);
    Client::with_options(options).expect("client")
}

/// The collection `name` of the test database as the library uses its lease
/// collection: majority write and read concern, primary read preference.
fn lease_collection(client: &Client, name: &str) -> Collection<Document> {
    let options = CollectionOptions::builder()
        .write_concern(WriteConcern::majority())
        .read_concern(ReadConcern::majority())
        .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        .build();
    client
        .database(support::TEST_DB)
        .collection_with_options(name, options)
}

/// This machine's wall clock (the test server's too) in ms since the epoch.
fn wall_ms() -> i64 {
    DateTime::now().timestamp_millis()
}

/// Asserts that `at` was read, between the wall-clock instants `before` and
/// `after` (ms), from a clock `offset_ms` ahead of the wall clock. The test
/// server runs on this machine's clock: 5 ms of slack cover the rounding to ms.
fn assert_clock(what: &str, at: DateTime, offset_ms: i64, before: i64, after: i64) {
    let wall = at.timestamp_millis() - offset_ms;
    assert!(
        before - 5 <= wall && wall <= after + 5,
        "{what}: {at} is {} to {} ms ahead of the wall clock (between {} and {}), \
         not {offset_ms} ms",
        at.timestamp_millis() - after,
        at.timestamp_millis() - before,
        DateTime::from_millis(before),
        DateTime::from_millis(after),
    );
}

/// `hello.localTime` on `client`, with the wall-clock instants around it.
async fn timed_hello(client: &Client) -> (i64, DateTime, i64) {
    let before = wall_ms();
    let local_time = hello_local_time(client).await;
    (before, local_time, wall_ms())
}

/// Reads the clock of the member that applies writes as the library does: a
/// findAndModify upsert of `$currentDate` into a small document of the lease
/// collection, returning `now` (with the wall-clock instants around the call).
async fn read_write_clock(coll: &Collection<Document>) -> Result<(i64, DateTime, i64), Error> {
    let before = wall_ms();
    let doc = coll
        .find_one_and_update(
            doc! { "_id": { "clock": "ts-subsystem", "member": "ts-member" } },
            doc! { "$currentDate": { "now": true } },
        )
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await?;
    let after = wall_ms();
    let doc = doc.expect("an upsert with new: true returns the document");
    let now = *doc
        .get_datetime("now")
        .expect("$currentDate sets a datetime");
    Ok((before, now, after))
}

/// A direct client of `node` of `rs` (no discovery: it talks to that member only).
async fn member_client(rs: &support::ReplicaSet, node: usize) -> Client {
    client_of(&rs.member_uri(node), "ts-rs-member", |_| {}).await
}

async fn member_hello(client: &Client) -> Document {
    client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .expect("hello")
}

fn topology_counter(hello: &Document) -> i64 {
    hello
        .get_document("topologyVersion")
        .and_then(|tv| tv.get_i64("counter"))
        .unwrap_or_else(|e| panic!("hello has no topologyVersion.counter ({e}): {hello}"))
}

#[tokio::test]
async fn hello_offset_shifts_local_time_of_that_app_only() {
    let uri = support::test_server_uri();
    let ahead = client_of(&uri, "ts-hello-ahead", |_| {}).await;
    let plain = client_of(&uri, "ts-hello-plain", |_| {}).await;
    let coll = collection(&ahead, "ts_hello_offset").await;

    support::set_hello_offset(&plain, "ts-hello-ahead", 2_500).await;
    let (before, at, after) = timed_hello(&ahead).await;
    assert_clock("hello through the mongos", at, 2_500, before, after);
    let (before, at, after) = timed_hello(&plain).await;
    assert_clock("hello of another app", at, 0, before, after);

    // The clock that stamps the lease is the data node's: judging expiry by
    // hello.localTime through this mongos would be 2.5 s early.
    let (before, at, after) = read_write_clock(&coll).await.unwrap();
    assert_clock("$currentDate through the mongos", at, 0, before, after);
    let update = coll
        .update_one(
            doc! { "_id": "lease" },
            doc! { "$currentDate": { "renewed_at": true } },
        )
        .upsert(true);
    let before = wall_ms();
    update.await.unwrap();
    let after = wall_ms();
    let lease = coll
        .find_one(doc! { "_id": "lease" })
        .await
        .unwrap()
        .unwrap();
    let renewed_at = *lease.get_datetime("renewed_at").unwrap();
    assert_clock("$currentDate in update", renewed_at, 0, before, after);

    // Judged by hello.localTime through this mongos, a 2 s lease renewed a
    // moment ago has expired already; by the clock that stamped it, it has not.
    let expires_ms = renewed_at.timestamp_millis() + 2_000;
    let (_, mongos_now, _) = timed_hello(&ahead).await;
    assert!(
        mongos_now.timestamp_millis() >= expires_ms,
        "hello through the mongos ({mongos_now}) should be 2 s past the renewal at {renewed_at}"
    );
    let (_, node_now, _) = read_write_clock(&coll).await.unwrap();
    assert!(
        node_now.timestamp_millis() < expires_ms,
        "the stamping clock ({node_now}) should be under 2 s past the renewal at {renewed_at}"
    );

    // Negative offsets, and 0 removes the shift.
    support::set_hello_offset(&ahead, "ts-hello-ahead", -1_500).await;
    let (before, at, after) = timed_hello(&ahead).await;
    assert_clock("hello behind", at, -1_500, before, after);
    support::set_hello_offset(&ahead, "ts-hello-ahead", 0).await;
    let (before, at, after) = timed_hello(&ahead).await;
    assert_clock("hello after the reset", at, 0, before, after);

    // Bad input gets a clear error.
    let err = ahead
        .database("admin")
        .run_command(doc! { "failoverTestHelloOffset": "", "offsetMs": 1 })
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), Some(2), "{err}");
    assert!(err.to_string().contains("appName"), "{err}");
}

#[tokio::test]
async fn replica_set_members_answer_hello_like_a_replica_set() {
    let rs = support::start_replica_set(&[0, 5_000, -5_000]);
    let members = [
        member_client(&rs, 0).await,
        member_client(&rs, 1).await,
        member_client(&rs, 2).await,
    ];
    let mut counters = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let hello = member_hello(member).await;
        assert_eq!(
            hello.get_str("setName"),
            Ok(support::REPLICA_SET_NAME),
            "{hello}"
        );
        let hosts: Vec<&str> = hello
            .get_array("hosts")
            .unwrap()
            .iter()
            .filter_map(Bson::as_str)
            .collect();
        assert_eq!(hosts, rs.hosts, "{hello}");
        assert_eq!(hello.get_str("me"), Ok(rs.hosts[i].as_str()), "{hello}");
        assert_eq!(
            hello.get_str("primary"),
            Ok(rs.hosts[0].as_str()),
            "{hello}"
        );
        assert_eq!(hello.get_bool("isWritablePrimary"), Ok(i == 0), "{hello}");
        assert_eq!(hello.get_bool("secondary"), Ok(i != 0), "{hello}");
        assert_eq!(hello.get_i32("setVersion"), Ok(1), "{hello}");
        assert_eq!(hello.contains_key("electionId"), i == 0, "{hello}");
        assert_eq!(
            hello.get_i32("logicalSessionTimeoutMinutes"),
            Ok(30),
            "{hello}"
        );
        counters.push(topology_counter(&hello));
        // Each member's own clock.
        let (before, at, after) = timed_hello(member).await;
        assert_clock(
            &format!("member {i}'s hello"),
            at,
            [0, 5_000, -5_000][i],
            before,
            after,
        );
    }
    let first_election = member_hello(&members[0])
        .await
        .get_object_id("electionId")
        .unwrap();

    assert_eq!(rs.primary().await, Some(0));
    rs.step_down(1).await;
    assert_eq!(rs.primary().await, Some(1));
    for (i, member) in members.iter().enumerate() {
        let hello = member_hello(member).await;
        assert_eq!(
            hello.get_str("primary"),
            Ok(rs.hosts[1].as_str()),
            "{hello}"
        );
        assert_eq!(hello.get_bool("isWritablePrimary"), Ok(i == 1), "{hello}");
        assert!(topology_counter(&hello) > counters[i], "{hello}");
    }
    let second_election = member_hello(&members[1])
        .await
        .get_object_id("electionId")
        .unwrap();
    assert!(
        second_election.bytes() > first_election.bytes(),
        "{second_election} after {first_election}"
    );
    // Electing the same member again is a new election.
    rs.step_down(1).await;
    let third_election = member_hello(&members[1])
        .await
        .get_object_id("electionId")
        .unwrap();
    assert!(third_election.bytes() > second_election.bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_writes_follow_the_primary_and_its_clock() {
    let rs = support::start_replica_set(&[0, 60_000, -60_000]);
    let client = client_of(&rs.uri, "ts-rs-follow", |_| {}).await;
    let coll = lease_collection(&client, "ts_rs_follow");

    // The offsets tell which member stamped `now`: member 0, the primary.
    let (before, now, after) = read_write_clock(&coll).await.expect("first write");
    assert_clock("member 0's $currentDate", now, 0, before, after);

    // replSetStepDown goes to the primary; the next member is elected.
    client
        .database("admin")
        .run_command(doc! { "replSetStepDown": 60 })
        .await
        .expect("replSetStepDown on the primary");
    assert_eq!(rs.primary().await, Some(1));
    let start = Instant::now();
    let (before, now, after) = read_write_clock(&coll)
        .await
        .expect("the write after replSetStepDown reaches the new primary");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "rediscovery took {took:?}");
    assert_clock("member 1's $currentDate", now, 60_000, before, after);

    // The test step-down, to member 2 whose clock is a minute behind.
    rs.step_down(2).await;
    let start = Instant::now();
    let (before, now, after) = read_write_clock(&coll)
        .await
        .expect("the write after the test step-down");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "rediscovery took {took:?}");
    assert_clock("member 2's $currentDate", now, -60_000, before, after);

    // A member's clock can be moved at run time.
    rs.set_node_offset(2, 30_000).await;
    let (before, now, after) = read_write_clock(&coll).await.unwrap();
    assert_clock("member 2's moved $currentDate", now, 30_000, before, after);

    // A majority read with primary read preference sees the last write.
    let lease = coll
        .find_one(doc! { "_id": { "clock": "ts-subsystem", "member": "ts-member" } })
        .await
        .expect("primary read")
        .expect("the clock document");
    assert_eq!(lease.get_datetime("now"), Ok(&now), "{lease}");

    // The old primaries refuse writes, and stepping down.
    for old in [0, 1] {
        let member = member_client(&rs, old).await;
        let err = lease_collection(&member, "ts_rs_follow")
            .insert_one(doc! { "_id": "refused" })
            .await
            .unwrap_err();
        assert_eq!(error_code(&err), Some(10107), "member {old}: {err}");
        assert!(
            err.contains_label("RetryableWriteError"),
            "member {old}: a retryable write's NotWritablePrimary carries the label: {err:?}"
        );
        let err = member
            .database("admin")
            .run_command(doc! { "replSetStepDown": 60 })
            .await
            .unwrap_err();
        assert_eq!(error_code(&err), Some(10107), "member {old}: {err}");
    }
    assert_eq!(
        coll.count_documents(doc! { "_id": "refused" })
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_clients_get_not_primary_errors_unless_they_retry() {
    let rs = support::start_replica_set(&[0, 0, 0]);
    // Polling every minute: these clients learn of the step-down only from an error.
    let stale = |retry: bool| {
        move |o: &mut ClientOptions| {
            o.heartbeat_freq = Some(Duration::from_secs(60));
            o.server_monitoring_mode = Some(ServerMonitoringMode::Poll);
            o.retry_writes = Some(retry);
            o.retry_reads = Some(retry);
        }
    };
    let writer = client_of(&rs.uri, "ts-rs-stale-writer", stale(false)).await;
    let reader = client_of(&rs.uri, "ts-rs-stale-reader", stale(false)).await;
    let retrying_writer = client_of(&rs.uri, "ts-rs-retry-writer", stale(true)).await;
    let retrying_reader = client_of(&rs.uri, "ts-rs-retry-reader", stale(true)).await;
    let clients = [&writer, &reader, &retrying_writer, &retrying_reader];
    for (i, client) in clients.into_iter().enumerate() {
        lease_collection(client, "ts_rs_stale")
            .insert_one(doc! { "_id": i as i64 })
            .await
            .expect("write through member 0");
    }

    rs.step_down(1).await;

    // Without retries the first operation reaches the old primary and fails ...
    let writes = lease_collection(&writer, "ts_rs_stale");
    let err = writes.insert_one(doc! { "_id": "w" }).await.unwrap_err();
    assert_eq!(error_code(&err), Some(10107), "{err}");
    let reads = lease_collection(&reader, "ts_rs_stale");
    let err = reads.find_one(doc! {}).await.unwrap_err();
    assert_eq!(error_code(&err), Some(13435), "{err}");
    // ... and makes the driver check the members: the next one succeeds.
    let start = Instant::now();
    writes.insert_one(doc! { "_id": "w" }).await.unwrap();
    reads.find_one(doc! {}).await.unwrap().unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "rediscovery took {took:?}");

    // With retries (the driver's default) the stale view costs no error.
    let start = Instant::now();
    lease_collection(&retrying_writer, "ts_rs_stale")
        .insert_one(doc! { "_id": "rw" })
        .await
        .expect("a retryable write after the step-down");
    lease_collection(&retrying_reader, "ts_rs_stale")
        .find_one(doc! { "_id": "rw" })
        .await
        .expect("a retryable read after the step-down")
        .expect("the retried write's document");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "retries took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_monitors_see_a_new_primary_at_once_without_spinning() {
    let rs = support::start_replica_set(&[0, 0, 0]);
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // Heartbeats every 10 s: only the awaitable hello can tell within 2 s.
    let client = client_of(&rs.uri, "ts-rs-stream", |o| {
        o.heartbeat_freq = Some(Duration::from_secs(10));
        o.retry_writes = Some(false);
        o.sdam_event_handler = Some(EventHandler::callback(move |event: SdamEvent| {
            let _ = tx.send(event);
        }));
    })
    .await;
    let coll = lease_collection(&client, "ts_rs_stream");
    coll.insert_one(doc! { "_id": 0 })
        .await
        .expect("first write");

    // Wait until every member's monitor awaits a topology change.
    let mut awaiting = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while awaiting.len() < rs.hosts.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(SdamEvent::ServerHeartbeatStarted(e))) if e.awaited => {
                awaiting.insert(e.server_address.to_string());
            }
            Ok(Some(_)) => {}
            other => panic!("monitors awaiting after 5 s: {awaiting:?} ({other:?})"),
        }
    }

    rs.step_down(1).await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(SdamEvent::ServerDescriptionChanged(e)))
                if e.address.to_string() == rs.hosts[1]
                    && e.new_description.server_type() == ServerType::RsPrimary =>
            {
                break
            }
            Ok(Some(_)) => {}
            other => panic!("no new primary within 2 s ({other:?})"),
        }
    }
    // Without retries, the write succeeds only if the driver knows the new primary.
    coll.insert_one(doc! { "_id": 1 })
        .await
        .expect("a write to the new primary");

    // Idle, the awaitable hellos wait for maxAwaitTimeMS (10 s) instead of
    // answering at once: almost no heartbeats in a second.
    while events.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut heartbeats = 0;
    while let Ok(event) = events.try_recv() {
        heartbeats += usize::from(matches!(event, SdamEvent::ServerHeartbeatSucceeded(_)));
    }
    assert!(heartbeats <= 6, "{heartbeats} heartbeats in 1 s while idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_out_an_election() {
    let rs = support::start_replica_set(&[0, 0, 0]);
    let client = client_of(&rs.uri, "ts-rs-election", |_| {}).await;
    let coll = lease_collection(&client, "ts_rs_election");
    coll.insert_one(doc! { "_id": 0 })
        .await
        .expect("first write");

    rs.step_down_with_election_delay(2, Duration::from_millis(1_500))
        .await;
    let start = Instant::now();
    assert_eq!(rs.primary().await, None, "no primary during the election");
    coll.insert_one(doc! { "_id": 1 })
        .await
        .expect("the write once member 2 is elected");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1_300) && took < Duration::from_millis(6_500),
        "the write took {took:?} across a 1.5 s election"
    );
    assert_eq!(rs.primary().await, Some(2));
}
