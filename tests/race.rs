//! What each server does with the writes the library relies on, run against every
//! selected server (`NAME::mock`, `NAME::ferretdb`, `NAME::uri`; see
//! `tests/support/ferretdb.rs`). Each race has 50 members, each with its own driver
//! client and app name, send their write at once (after a barrier), 20 rounds.
//!
//! What is asserted, and why:
//! - **The lease's writes, on every server**: the version insert of a take-over
//!   (`failover::lease`) and the first upsert of a lease have exactly one winner per
//!   round, the 49 others getting duplicate key 11000; and the library itself, 50
//!   members on one subsystem, elects one master and, after a crash, one successor.
//!   The lease needs only the uniqueness of `_id`, so these hold on FerretDB too.
//! - **Conditional updates** (a filter on fields besides `_id`), which
//!   `FencedCollection` and the durable queue's fenced progress use: one winner per
//!   round and an epoch that never goes back on the mock and on `MONGODB_URI`
//!   (MongoDB's single-document atomicity). FerretDB 1.24.2 on SQLite reads the
//!   document, applies the update in memory and writes the whole document back by
//!   `_id`, without re-checking the filter or holding a transaction: several
//!   winners in most rounds (up to 46 of 50 seen), and a lower epoch's write landing
//!   after a higher one's. That is asserted as recorded (so that a FerretDB that
//!   becomes atomic fails the test and the records get updated), together with the
//!   library's answer: `FencedCollection` refuses FerretDB with `Error::Unsupported`.
//!   (The durable queue's progress fence relies on the same write and does not
//!   refuse FerretDB; see the README.)
//!
//! The operation probe asserts what the protocol needs (`hello.localTime`,
//! `findAndModify` with upsert and `new`, `$set`/`$inc` on Int64/`$currentDate` by the
//! server's clock, conditional `update`, `find` by `_id`, an embedded-document `_id`,
//! majority write and read concern, `insert_many`, duplicate key 11000) and records
//! the optional features, checking them against what was found on each server:
//!
//! | feature | mock | FerretDB 1.24.2 |
//! |---|---|---|
//! | `$expr` with `$$NOW` in a filter | code 2 BadValue: "KeyError: 'NOW'" | code 238 NotImplemented: "Invalid $match :: caused by :: The operator $lt is not implemented yet" |
//! | pipeline-style update | works, `$$NOW` ignored | code 14 TypeMismatch: "BSON field 'update.updates.u' is the wrong type 'array', expected type 'object'" |
//! | `createIndexes` with a TTL index | accepted (no expiry) | code 238: "Index option \"expireAfterSeconds\" is not implemented yet" |
//! | change streams (`$changeStream`) | code 238 NotImplemented | code 238: "`aggregate` stage \"$changeStream\" is not implemented yet" |
//! | upsert with `_id` only inside a top-level `$and` | inserts that `_id` | inserts a new ObjectId `_id` (equality conditions under `$and` are not copied) |
//!
//! `$currentDate` has millisecond precision on both (BSON dates), and lies between the
//! `hello.localTime` read before and after it: it is the server's clock.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, ReadConcern, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};
use support::Server;
use tokio::sync::Barrier;

/// The "code" of a probe whose command succeeded but did not do what MongoDB does.
const NOT_AS_MONGODB: i32 = -1;

/// What an optional-feature probe got: a description, or the error's code and text.
type Probe = Result<String, (Option<i32>, String)>;

/// Members racing in each round.
const MEMBERS: usize = 50;
/// Rounds of each race.
const ROUNDS: usize = 20;

/// `MEMBERS` clients, each with its own connection pool and app name, each
/// connected before the race starts.
async fn members(uri: &str, test: &str) -> Vec<Client> {
    let mut clients = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let mut options = ClientOptions::parse(uri).await.unwrap();
        options.app_name = Some(format!("{test}-{i}"));
        options.server_selection_timeout = Some(Duration::from_secs(10));
        let client = Client::with_options(options).unwrap();
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .unwrap_or_else(|e| panic!("member {i} cannot reach the server: {e}"));
        clients.push(client);
    }
    clients
}

fn coll(client: &Client, name: &str) -> Collection<Document> {
    client.database(support::TEST_DB).collection(name)
}

/// The server's error code of a driver error, if any.
fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// A short description of a driver error: code and message, or the error kind.
fn describe(e: &mongodb::error::Error) -> String {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("code {} {}: {}", c.code, c.code_name, c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("code {}: {}", w.code, w.message),
        kind => format!("{kind}"),
    }
}

/// What one racer got.
#[derive(Debug)]
enum Outcome {
    /// The write returned (or matched) a document naming this member.
    Won,
    /// No document matched (`null` from findAndModify, or nothing matched).
    Lost,
    /// Duplicate key 11000 (the upsert race's expected loss), with the message.
    Duplicate(String),
    /// A document came back that names another member: the server broke the filter.
    Foreign(String),
    /// A server or network error.
    Failed(Option<i32>, String),
}

/// One round: every member runs `op(member index, its collection)` after a barrier.
async fn race<F, Fut>(clients: &[Client], collection: &str, op: F) -> Vec<Outcome>
where
    F: Fn(usize, Collection<Document>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(clients.len()));
    let op = Arc::new(op);
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let c = coll(client, collection);
            let barrier = Arc::clone(&barrier);
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                barrier.wait().await;
                op(i, c).await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Sums a round up: the winners, and the other outcomes counted by kind.
fn summary(outcomes: &[Outcome]) -> (Vec<usize>, BTreeMap<String, usize>) {
    let mut winners = Vec::new();
    let mut others = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        let key = match o {
            Outcome::Won => {
                winners.push(i);
                continue;
            }
            Outcome::Lost => "no document".to_owned(),
            Outcome::Duplicate(msg) => format!("duplicate key: {msg}"),
            Outcome::Foreign(holder) => format!("a document naming {holder}"),
            Outcome::Failed(_, msg) => msg.clone(),
        };
        *others.entry(key).or_insert(0) += 1;
    }
    (winners, others)
}

/// The expired lease document of round `round`, as a previous holder left it.
fn expired_lease(id: &str) -> Document {
    doc! {
        "_id": id,
        "holder": "gone",
        "token": 1_i64,
        "epoch": 7_i64,
        "version": 41_i64,
        "lease_ms": 1000_i64,
        "released": false,
        "renewed_at": DateTime::from_millis(DateTime::now().timestamp_millis() - 60_000),
    }
}

/// The take-over write of the protocol: conditional on the version seen.
fn take_over(me: usize, version: Option<i64>) -> (Document, Document) {
    let filter = match version {
        Some(v) => doc! { "version": v },
        None => doc! { "version": { "$exists": false } },
    };
    let update = doc! {
        "$set": { "holder": format!("m{me}"), "token": 1000 + me as i64, "lease_ms": 1000_i64, "released": false },
        "$inc": { "epoch": 1_i64, "version": 1_i64 },
        "$currentDate": { "renewed_at": true },
    };
    (filter, update)
}

fn outcome_of(me: usize, result: mongodb::error::Result<Option<Document>>) -> Outcome {
    match result {
        Ok(None) => Outcome::Lost,
        Ok(Some(doc)) => match doc.get_str("holder") {
            Ok(h) if h == format!("m{me}") => Outcome::Won,
            Ok(h) => Outcome::Foreign(h.to_owned()),
            Err(_) => Outcome::Foreign(format!("{doc}")),
        },
        Err(e) => Outcome::Failed(code(&e), describe(&e)),
    }
}

/// What `ROUNDS` rounds of a race gave: each round's winners (member indexes), the
/// rounds that did not have exactly one winner whose write is the stored document
/// (all others finding no document), and a line per round.
struct Rounds {
    winners: Vec<Vec<usize>>,
    bad: usize,
    report: String,
}

/// Runs `ROUNDS` rounds of a race: before each, `setup` prepares the document of
/// that round's id; then every member runs `op` on it at once.
async fn run_rounds<S, SFut, F, Fut>(
    uri: &str,
    test: &str,
    stored_id: fn(&str) -> Bson,
    setup: S,
    op: F,
) -> Rounds
where
    S: Fn(Collection<Document>, String) -> SFut,
    SFut: std::future::Future<Output = ()>,
    F: Fn(usize, Collection<Document>, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let clients = members(uri, test).await;
    let c = coll(&clients[0], test);
    c.drop().await.unwrap();
    let mut report = Vec::new();
    let mut all_winners = Vec::new();
    let mut bad = 0;
    for round in 0..ROUNDS {
        let id = format!("{test}-{round}");
        setup(c.clone(), id.clone()).await;
        let op = op.clone();
        let outcomes = race(&clients, test, move |i, c| op(i, c, id.clone())).await;
        let (winners, others) = summary(&outcomes);
        let stored = c
            .find_one(doc! { "_id": stored_id(&format!("{test}-{round}")) })
            .await;
        let holder = stored
            .as_ref()
            .ok()
            .and_then(|d| d.as_ref())
            .and_then(|d| d.get_str("holder").ok().map(str::to_owned));
        let one_winner_stored = matches!(&winners[..], [w] if holder == Some(format!("m{w}")));
        if !one_winner_stored
            || others
                .keys()
                .any(|k| !k.starts_with("no document") && !k.starts_with("duplicate key"))
        {
            bad += 1;
        }
        report.push(format!(
            "round {round}: {} winner(s) {:?}; others {:?}; stored {:?}",
            winners.len(),
            winners,
            others,
            stored.map(|d| d.map(|d| d.to_string()))
        ));
        all_winners.push(winners);
    }
    let report = report.join("\n");
    eprintln!("{test}:\n{report}");
    Rounds {
        winners: all_winners,
        bad,
        report,
    }
}

/// Runs `ROUNDS` rounds of a race and asserts exactly one winner in each; the
/// failure message lists every round.
async fn rounds<S, SFut, F, Fut>(
    uri: &str,
    test: &str,
    stored_id: fn(&str) -> Bson,
    setup: S,
    op: F,
) where
    S: Fn(Collection<Document>, String) -> SFut,
    SFut: std::future::Future<Output = ()>,
    F: Fn(usize, Collection<Document>, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let Rounds { bad, report, .. } = run_rounds(uri, test, stored_id, setup, op).await;
    assert_eq!(
        bad, 0,
        "{test}: {bad} of {ROUNDS} rounds did not have exactly one winner whose write \
         is the stored document, all others finding no document \
         ({MEMBERS} members raced each round):\n{report}"
    );
}

#[test]
fn the_server_selection_is_parsed_and_unknown_kinds_are_refused() {
    assert_eq!(
        support::parse_servers(" mock, FerretDB,mock ,,uri"),
        Ok(vec![Server::Mock, Server::FerretDb, Server::Uri])
    );
    assert_eq!(support::parse_servers(""), Ok(vec![]));
    let err = support::parse_servers("mock,mongo").unwrap_err();
    assert!(
        err.contains("\"mongo\"") && err.contains("mock, ferretdb and uri"),
        "{err}"
    );
}

/// The rules `build.rs` applies (see `tests/support/ferretdb.rs`): by default mock,
/// and FerretDB when Go is found; a list runs exactly the kinds it names, whatever
/// is installed, so that a missing server fails.
#[test]
fn the_default_selection_follows_go() {
    use support::Skip::{Deselected, GoNotFound, UriNotNamed};
    let select = |list: Option<&str>, go: bool| {
        support::select(list, go)
            .unwrap()
            .into_iter()
            .map(|(_, skip)| skip)
            .collect::<Vec<_>>()
    };
    // [mock, ferretdb, uri]; None = runs.
    assert_eq!(select(None, true), [None, None, Some(UriNotNamed)]);
    assert_eq!(
        select(None, false),
        [None, Some(GoNotFound), Some(UriNotNamed)]
    );
    assert_eq!(
        select(Some(" , "), false),
        [None, Some(GoNotFound), Some(UriNotNamed)]
    );
    assert_eq!(
        select(Some("ferretdb"), false),
        [Some(Deselected), None, Some(Deselected)]
    );
    assert_eq!(
        select(Some("uri,mock"), true),
        [None, Some(Deselected), None]
    );
    assert!(support::select(Some("mock,mongo"), true).is_err());
}

support::server_tests! {
    /// 50 members take over the same expired lease at once with the protocol's
    /// write (see `failover::store::mongo`): each inserts the next version,
    /// `{_id: {lease, v: 42}, version: {$exists: false}}` with upsert: exactly one
    /// wins each round, the others get duplicate key 11000, and the stored version
    /// is the winner's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_members_take_over_one_expired_lease(uri: String) {
        let test = "race_take_over";
        rounds(
            &uri,
            test,
            |id| Bson::Document(doc! { "lease": id, "v": 42_i64 }),
            |c, id| async move {
                let mut old = expired_lease(&id);
                old.insert("_id", doc! { "lease": &id, "v": 41_i64 });
                c.insert_one(old).await.unwrap();
            },
            |me, c, id| async move {
                let (_, update) = take_over(me, None);
                let filter = doc! { "_id": { "lease": &id, "v": 42_i64 }, "version": { "$exists": false } };
                let mut set = update.get_document("$set").unwrap().clone();
                set.insert("version", 42_i64); // the marker the filter tests
                set.insert("epoch", 8_i64);
                let update = doc! { "$set": set, "$currentDate": { "renewed_at": true } };
                let result = c
                    .find_one_and_update(filter, update)
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .await;
                match outcome_of(me, result) {
                    Outcome::Failed(Some(11000), msg) => Outcome::Duplicate(msg),
                    other => other,
                }
            },
        )
        .await;
    }

    /// 50 members race the first take-over of a lease that has no document yet
    /// (`{_id, version: {$exists: false}}`, `upsert: true`): exactly one wins; the
    /// others get duplicate key 11000 (or no document).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_members_race_the_first_upsert(uri: String) {
        let test = "race_upsert";
        rounds(
            &uri,
            test,
            |id| Bson::String(id.to_owned()),
            |_, _| async {},
            |me, c, id| async move {
                let (mut filter, update) = take_over(me, None);
                filter.insert("_id", id);
                let result = c
                    .find_one_and_update(filter, update)
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .await;
                match outcome_of(me, result) {
                    Outcome::Failed(Some(11000), msg) => Outcome::Duplicate(msg),
                    other => other,
                }
            },
        )
        .await;
    }

    /// The library itself: 50 members start at once on a subsystem without a lease
    /// (the race for the first version), then the master crashes and the 49 others
    /// race its expired lease; each time exactly one leads, and the epoch grows by one.
    ///
    /// On FerretDB every interval and the lease are five times longer: its SQLite
    /// back-end applies one write at a time, and 50 members checking every 200 ms
    /// kept it so busy that a master's renewal timed out after its ~240 ms budget
    /// (seen: `Timeout { operation: "renew lease" }`, then a second take-over, so
    /// the epoch grew by two). The checks stay the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_members_elect_one_master_and_one_successor(uri: String) {
        use failover::{Intervals, Member, Options};
        let collection = format!("race_members_{}", std::process::id());
        let scale = match support::kind_of(&uri) {
            Server::FerretDb => 5,
            Server::Mock | Server::Uri => 1,
        };
        let ms = |n: u64| Duration::from_millis(n * scale);
        let options = |i: usize| {
            Options::new()
                .connect_string(&uri)
                .collection(&collection)
                .member_id(format!("m{i}"))
                .intervals(Intervals {
                    init: Duration::ZERO,
                    master: ms(300),
                    slave: ms(200),
                    ticking: ms(2000),
                    error: ms(300),
                })
                .lease(ms(600))
        };
        // Every member starts on a task of its own, after one barrier.
        let barrier = Arc::new(Barrier::new(MEMBERS));
        let starts: Vec<_> = (0..MEMBERS)
            .map(|i| {
                let (options, barrier) = (options(i), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    Member::start("race", options).await.expect("a member starts")
                })
            })
            .collect();
        let mut members: Vec<Option<Member>> = Vec::new();
        for start in starts {
            members.push(Some(start.await.unwrap()));
        }
        let leaders = |members: &[Option<Member>]| -> Vec<(usize, u64)> {
            members
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.as_ref().and_then(|m| m.epoch().map(|e| (i, e))))
                .collect()
        };
        let mut epoch = None;
        for round in 0..2 {
            // Wait for a leader, then watch for two leases: never two at once.
            let end = tokio::time::Instant::now() + ms(15_000);
            let first = loop {
                let l = leaders(&members);
                assert!(l.len() <= 1, "round {round}: several masters at once: {l:?}");
                if let [one] = l[..] {
                    break one;
                }
                assert!(tokio::time::Instant::now() < end, "round {round}: no master within {:?}", ms(15_000));
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let watch = tokio::time::Instant::now() + ms(1200);
            while tokio::time::Instant::now() < watch {
                let l = leaders(&members);
                assert!(l.len() <= 1, "round {round}: several masters at once: {l:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(previous) = epoch {
                assert_eq!(first.1, previous + 1, "round {round}: the epoch did not grow by one");
            }
            epoch = Some(first.1);
            // Crash the master: the others race its expired lease.
            if let Some(m) = members[first.0].take() {
                m.abort();
            }
        }
        for m in members.into_iter().flatten() {
            m.shutdown().await.unwrap();
        }
    }

    /// Every operation the protocol needs works, with the semantics it relies on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_operations_the_protocol_needs_work(uri: String) {
        let client = Client::with_uri_str(&uri).await.unwrap();
        let db = client.database(support::TEST_DB);
        let leases = db.collection_with_options::<Document>(
            "probe_required",
            mongodb::options::CollectionOptions::builder()
                .write_concern(WriteConcern::majority())
                .read_concern(ReadConcern::majority())
                .build(),
        );
        leases.drop().await.unwrap();

        // hello.localTime: the server's clock.
        let local_time = || async {
            let hello = db.run_command(doc! { "hello": 1 }).await.unwrap();
            *hello
                .get_datetime("localTime")
                .unwrap_or_else(|_| panic!("hello has no localTime: {hello}"))
        };
        let before = local_time().await;

        // findAndModify: upsert + new, $set, $inc on Int64, $currentDate.
        let (mut filter, update) = take_over(1, None);
        filter.insert("_id", "lease");
        let doc = leases
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .unwrap()
            .expect("upsert with new: true returns the new document");
        let after = local_time().await;
        assert_eq!(doc.get_str("holder"), Ok("m1"), "{doc}");
        assert_eq!(doc.get("epoch"), Some(&Bson::Int64(1)), "$inc of a missing field by Int64 1: {doc}");
        assert_eq!(doc.get("version"), Some(&Bson::Int64(1)), "{doc}");
        let renewed = *doc.get_datetime("renewed_at").unwrap_or_else(|_| panic!("$currentDate: {doc}"));
        assert!(
            before <= renewed && renewed <= after,
            "$currentDate {renewed} is not between hello.localTime before ({before}) and after ({after})"
        );

        // The same upsert again: the document exists, so duplicate key 11000.
        let (mut filter, update) = take_over(2, None);
        filter.insert("_id", "lease");
        let err = leases
            .find_one_and_update(filter, update)
            .upsert(true)
            .await
            .expect_err("a second first-take-over must fail");
        assert_eq!(code(&err), Some(11000), "{err}");

        // Conditional take-over on the version: matches once, $inc keeps Int64.
        let (mut filter, update) = take_over(3, Some(1));
        filter.insert("_id", "lease");
        let doc = leases
            .find_one_and_update(filter.clone(), update.clone())
            .return_document(ReturnDocument::After)
            .await
            .unwrap()
            .expect("the version matches");
        assert_eq!(doc.get("epoch"), Some(&Bson::Int64(2)), "{doc}");
        assert_eq!(doc.get("version"), Some(&Bson::Int64(2)), "{doc}");
        assert!(leases.find_one_and_update(filter, update).await.unwrap().is_none(), "stale version must not match");

        // update with $set/$inc/$currentDate, filter on _id, token, epoch, released.
        let mine = doc! { "_id": "lease", "token": 1003_i64, "epoch": 2_i64, "released": false };
        let renew = doc! { "$set": { "released": true }, "$inc": { "version": 1_i64 }, "$currentDate": { "renewed_at": true } };
        let wrong = doc! { "_id": "lease", "token": 9_i64, "epoch": 2_i64, "released": false };
        assert_eq!(leases.update_one(wrong, renew.clone()).await.unwrap().matched_count, 0);
        assert_eq!(leases.update_one(mine.clone(), renew.clone()).await.unwrap().matched_count, 1);
        assert_eq!(leases.update_one(mine, renew).await.unwrap().matched_count, 0, "released: false no longer matches");

        // find by _id.
        let doc = leases.find_one(doc! { "_id": "lease" }).await.unwrap().expect("find by _id");
        assert_eq!(doc.get("version"), Some(&Bson::Int64(3)), "{doc}");
        assert_eq!(doc.get_bool("released"), Ok(true), "{doc}");

        // An embedded-document _id, upserted with $currentDate {now: true}.
        let clocks = db.collection::<Document>("probe_clocks");
        clocks.drop().await.unwrap();
        let id = doc! { "clock": "s", "member": "a" };
        let mut seen = Vec::new();
        for _ in 0..5 {
            let doc = clocks
                .find_one_and_update(doc! { "_id": id.clone() }, doc! { "$currentDate": { "now": true } })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
                .unwrap()
                .expect("embedded _id upsert");
            assert_eq!(doc.get_document("_id"), Ok(&id), "{doc}");
            seen.push(*doc.get_datetime("now").unwrap());
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "$currentDate went back: {seen:?}");
        assert_eq!(clocks.count_documents(doc! {}).await.unwrap(), 1);
        // Millisecond precision: five samples 7 ms apart are not all whole seconds.
        assert!(
            seen.iter().any(|d| d.timestamp_millis() % 1000 != 0),
            "$currentDate has no millisecond precision: {seen:?}"
        );

        // insert_many.
        let many = db.collection::<Document>("probe_many");
        many.drop().await.unwrap();
        let ids = many.insert_many(vec![doc! { "a": 1 }, doc! { "a": 2 }]).await.unwrap();
        assert_eq!(ids.inserted_ids.len(), 2);
        assert_eq!(many.count_documents(doc! {}).await.unwrap(), 2);
    }

    /// Records the optional features (none of which the protocol uses today) and
    /// checks each server against the table in this file's docs, so that the table
    /// cannot silently go stale. Against `MONGODB_URI` it prints what it found.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn optional_features_are_as_recorded(uri: String) {
        let client = Client::with_uri_str(&uri).await.unwrap();
        let db = client.database(support::TEST_DB);
        let c = db.collection::<Document>("probe_optional");
        c.drop().await.unwrap();
        c.insert_one(doc! { "_id": "x", "at": DateTime::from_millis(0) }).await.unwrap();

        let expr_now = c
            .find_one(doc! { "$expr": { "$lt": ["$at", "$$NOW"] } })
            .await
            .map(|d| format!("found {}", d.is_some()));
        let pipeline = c
            .update_one(doc! { "_id": "x" }, vec![doc! { "$set": { "piped": "$$NOW" } }])
            .await
            .map(|r| format!("matched {}", r.matched_count));
        let ttl = c
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "at": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .expire_after(Duration::from_secs(3600))
                            .build(),
                    )
                    .build(),
            )
            .await
            .map(|r| format!("index {}", r.index_name));
        let change_stream = c.watch().await.map(|_| "opened".to_owned());
        // An upsert whose `_id` is given only inside a top-level `$and` (as
        // `FencedCollection` wrote it): MongoDB copies it into the new document.
        let and_upsert: Probe = match c
            .find_one_and_update(
                doc! { "$and": [{ "_id": "and-upsert" }, { "n": { "$exists": false } }] },
                doc! { "$set": { "n": 1 } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
        {
            Ok(Some(d)) if d.get_str("_id") == Ok("and-upsert") => Ok("_id kept".to_owned()),
            Ok(other) => Err((
                Some(NOT_AS_MONGODB),
                format!("the upserted document is {other:?}"),
            )),
            Err(e) => Err((code(&e), describe(&e))),
        };

        let found: Vec<(&str, Probe)> = vec![
            ("$expr with $$NOW", expr_now.map_err(|e| (code(&e), describe(&e)))),
            ("pipeline update", pipeline.map_err(|e| (code(&e), describe(&e)))),
            ("TTL index", ttl.map_err(|e| (code(&e), describe(&e)))),
            ("change stream", change_stream.map_err(|e| (code(&e), describe(&e)))),
            ("upsert with `_id` inside `$and`", and_upsert),
        ];
        for (what, outcome) in &found {
            eprintln!("{what}: {outcome:?}");
        }
        let kind = support::kind_of(&uri);
        // What was found on each server: Ok(()) = works, Err(code) = refused with that
        // code, or replied ok but not as MongoDB does (NOT_AS_MONGODB).
        let expected: [Result<(), i32>; 5] = match kind {
            Server::FerretDb => [Err(238), Err(14), Err(238), Err(238), Err(NOT_AS_MONGODB)],
            Server::Mock => [Err(2), Ok(()), Ok(()), Err(238), Ok(())],
            Server::Uri => {
                for (what, outcome) in &found {
                    if let Err((None, msg)) = outcome {
                        panic!("{what}: no reply from the server: {msg}");
                    }
                }
                return;
            }
        };
        let mismatches: Vec<String> = found
            .iter()
            .zip(expected)
            .filter(|((_, got), want)| match (got, want) {
                (Ok(_), Ok(())) => false,
                (Err((code, _)), Err(want)) => *code != Some(*want),
                _ => true,
            })
            .map(|((what, got), want)| format!("{what}: expected {want:?}, got {got:?}"))
            .collect();
        assert!(
            mismatches.is_empty(),
            "the optional features on {kind:?} differ from the table in tests/race.rs:\n{}",
            mismatches.join("\n")
        );
    }
}

support::server_tests! {
    /// 50 members send the same conditional `update` at once (a filter on fields
    /// besides `_id`: `{_id, token, epoch, released: false}` → `released: true`), 20
    /// rounds. MongoDB applies it atomically: one winner per round, asserted on the
    /// mock and on `MONGODB_URI`. FerretDB 1.24 on SQLite does not (it reads the
    /// document, applies the update in memory and writes it back by `_id`): several
    /// winners in most rounds, recorded here as at least one such round, so that
    /// the day FerretDB is atomic this fails and says so. `FencedCollection`, which
    /// needs that atomicity, must refuse exactly the servers that lack it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditional_updates_are_atomic_except_on_ferretdb(uri: String) {
        let test = "race_update";
        let Rounds { winners, bad, report } = run_rounds(
            &uri,
            test,
            |id| Bson::String(id.to_owned()),
            |c, id| async move {
                c.insert_one(expired_lease(&id)).await.unwrap();
            },
            |me, c, id| async move {
                let filter = doc! { "_id": id, "token": 1_i64, "epoch": 7_i64, "released": false };
                let update = doc! {
                    "$set": { "released": true, "holder": format!("m{me}") },
                    "$inc": { "version": 1_i64 },
                    "$currentDate": { "renewed_at": true },
                };
                match c.update_one(filter, update).await {
                    Ok(r) if r.matched_count == 1 => Outcome::Won,
                    Ok(_) => Outcome::Lost,
                    Err(e) => Outcome::Failed(code(&e), describe(&e)),
                }
            },
        )
        .await;
        let most = winners.iter().map(Vec::len).max().unwrap_or(0);
        let kind = support::kind_of(&uri);
        let fencing = fencing_refused(&uri).await;
        match kind {
            Server::FerretDb => {
                assert!(
                    bad > 0,
                    "FerretDB applied the conditional update atomically in all {ROUNDS} rounds \
                     (recorded: several winners in most rounds); update this test, the README's \
                     server table and failover::fence, which refuses FerretDB:\n{report}"
                );
                assert!(
                    fencing.is_some(),
                    "FerretDB lets up to {most} of {MEMBERS} racers win one conditional update, \
                     yet FencedCollection accepts it"
                );
            }
            Server::Mock | Server::Uri => {
                assert_eq!(
                    bad, 0,
                    "{test} on {kind}: {bad} of {ROUNDS} rounds did not have exactly one winner \
                     ({MEMBERS} members raced each round):\n{report}"
                );
                assert_eq!(fencing, None, "FencedCollection refuses {kind}, which is atomic");
            }
        }
    }

    /// The fenced-progress pattern (as the durable queue writes its progress): 50
    /// members with epochs 1 to 50 each send `update_one({_id, epoch: {$lte: e}},
    /// {$set: {epoch: e}})` at once on a document of epoch 0, 20 rounds. Applied
    /// one at a time, a write never lowers the epoch, so the stored epoch is the
    /// highest winner's: asserted on the mock and on `MONGODB_URI`. On FerretDB a
    /// lower epoch's write lands after a higher one's (recorded: the epoch went
    /// back in 20 of 20 rounds, to 3 after 50 had won), asserted as at least one
    /// such round so that this fails the day FerretDB keeps the epoch. On every
    /// server the stored document is some winner's write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fenced_progress_writes_never_lower_the_epoch(uri: String) {
        let test = "race_progress";
        let clients = members(&uri, test).await;
        let c = coll(&clients[0], test);
        c.drop().await.unwrap();
        let kind = support::kind_of(&uri);
        let mut went_back = Vec::new();
        for round in 0..ROUNDS {
            let id = format!("{test}-{round}");
            c.insert_one(doc! { "_id": &id, "epoch": 0_i64, "seq": 0_i64 }).await.unwrap();
            let race_id = id.clone();
            let outcomes = race(&clients, test, move |i, c| {
                let id = race_id.clone();
                async move {
                    let e = i as i64 + 1;
                    let filter = doc! { "_id": id, "epoch": { "$lte": e } };
                    match c.update_one(filter, doc! { "$set": { "epoch": e, "seq": e } }).await {
                        Ok(r) if r.matched_count == 1 => Outcome::Won,
                        Ok(_) => Outcome::Lost,
                        Err(e) => Outcome::Failed(code(&e), describe(&e)),
                    }
                }
            })
            .await;
            let (winners, others) = summary(&outcomes);
            assert!(
                others.keys().all(|k| k == "no document"),
                "round {round} on {kind}: errors {others:?}"
            );
            let stored = c.find_one(doc! { "_id": &id }).await.unwrap().expect("the document");
            let epoch = stored.get_i64("epoch").unwrap_or_else(|_| panic!("{stored}"));
            let highest = winners.iter().map(|i| *i as i64 + 1).max();
            assert!(highest.is_some(), "round {round} on {kind}: no member won: {stored}");
            assert!(
                winners.iter().any(|i| *i as i64 + 1 == epoch)
                    && stored.get_i64("seq") == Ok(epoch),
                "round {round} on {kind}: the stored document {stored} is no winner's write \
                 (winners {winners:?})"
            );
            if Some(epoch) != highest {
                went_back.push(format!(
                    "round {round}: stored epoch {epoch}, highest winner {highest:?}, {} winners",
                    winners.len()
                ));
            }
        }
        eprintln!("{test} on {kind}: {} of {ROUNDS} rounds ended below the highest winner's epoch:\n{}",
            went_back.len(), went_back.join("\n"));
        if kind == Server::FerretDb {
            assert!(
                !went_back.is_empty(),
                "{test}: FerretDB never lowered the epoch in {ROUNDS} rounds (recorded: it \
                 did in every round); update this test and what the README says of fenced \
                 writes on FerretDB"
            );
        } else {
            assert!(
                went_back.is_empty(),
                "{test} on {kind}: a write lowered the epoch:\n{}",
                went_back.join("\n")
            );
        }
    }
}

/// `Some(reason)` when `FencedCollection` refuses to fence on the server at `uri`
/// (`Error::Unsupported`), `None` when its fenced write works there.
async fn fencing_refused(uri: &str) -> Option<String> {
    let client = Client::with_uri_str(uri).await.unwrap();
    let c = coll(&client, "race_fence_check");
    c.drop().await.unwrap();
    let fenced = failover::fence::FencedCollection::new(c);
    match fenced
        .upsert_one(1, doc! { "_id": "x" }, doc! { "$set": { "n": 1 } })
        .await
    {
        Ok(_) => None,
        Err(failover::Error::Unsupported { reason, .. }) => Some(reason),
        Err(e) => panic!("a fenced upsert on a fresh collection failed: {e}"),
    }
}
