//! The election over a real MongoDB wire connection: `MONGODB_URI`, or the test
//! server that the harness starts. Wall-clock time: intervals are short, bounds
//! are the protocol's with an honest margin for a shared 2-core machine.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::bson::doc;
use failover::{Error, Event, Intervals, Member, Options, State};
use support::proxy::{Fault, FaultProxy};
use tokio::time::{sleep, timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const MASTER: u64 = 600;
const SLAVE: u64 = 800;
const TICKING: u64 = 600;
const LEASE: u64 = 1000;

fn intervals() -> Intervals {
    Intervals {
        init: Duration::ZERO,
        master: ms(MASTER),
        slave: ms(SLAVE),
        ticking: ms(TICKING),
        error: ms(500),
    }
}

/// Options for member `id` of a test; every test has its own collection.
fn options(uri: &str, collection: &str, id: &str) -> Options {
    Options::new()
        .connect_string(uri)
        .collection(collection)
        .member_id(format!("{collection}-{id}"))
        .intervals(intervals())
        .lease(ms(LEASE))
}

async fn start(uri: &str, collection: &str, id: &str) -> Member {
    Member::start("subsystem", options(uri, collection, id))
        .await
        .unwrap()
}

/// Starts member `a` and waits until it is master, then member `b` and waits until
/// it follows `a`; each comes with a recorder of its events.
async fn master_and_standby(uri: &str, c: &str) -> (Member, Recorder, Member, Recorder) {
    let a = start(uri, c, "a").await;
    let ra = Recorder::of(&a);
    within(ms(5000), "a master", a.wait_for_master())
        .await
        .unwrap();
    let b = start(uri, c, "b").await;
    let rb = Recorder::of(&b);
    within(ms(5000), "b following", b.wait_for_state(State::Slave))
        .await
        .unwrap();
    (a, ra, b, rb)
}

/// Every event of a member with the instant it was seen.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Recorder {
    fn of(member: &Member) -> Recorder {
        let rec = Recorder::default();
        let mut events = member.events();
        let log = rec.0.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                log.lock().unwrap().push((Instant::now(), e));
            }
        });
        rec
    }
    fn first(&self, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| pred(e))
            .map(|(t, _)| *t)
    }
    fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
}

async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {limit:?}"))
}

/// Fail point tests share the server's one fail point.
static FAIL_POINT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// The tests that need no fail point run on every selected server (mock, FerretDB,
// MONGODB_URI): one test per server kind, `NAME::mock`, `NAME::ferretdb`, `NAME::uri`.
support::server_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_elect_exactly_one_master(uri: String) {
        let c = "three_members";
        let members = [
            start(&uri, c, "a").await,
            start(&uri, c, "b").await,
            start(&uri, c, "c").await,
        ];
        within(ms(5000), "an election", async {
            loop {
                if members.iter().any(|m| m.is_master())
                    && members.iter().filter(|m| m.state() == State::Slave).count() == 2
                {
                    break;
                }
                sleep(ms(20)).await;
            }
        })
        .await;
        // Over several renewal periods, never two masters.
        let end = Instant::now() + ms(3 * MASTER);
        while Instant::now() < end {
            assert_eq!(members.iter().filter(|m| m.is_master()).count(), 1);
            sleep(ms(10)).await;
        }
        let epochs: Vec<_> = members.iter().filter_map(|m| m.epoch()).collect();
        assert_eq!(epochs.len(), 1, "{epochs:?}");
        for m in &members {
            m.shutdown().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_failover_respects_the_lease_and_beats_the_original_bound(uri: String) {
        let c = "crash_failover";
        let (a, _, b, _) = master_and_standby(&uri, c).await;
        let first = a.epoch().expect("a leads");
        sleep(ms(MASTER + 150)).await;
        let crashed = Instant::now();
        drop(a);
        let epoch = within(ms(10_000), "a failover", b.wait_for_master())
            .await
            .unwrap();
        let took = crashed.elapsed();
        assert_eq!(epoch, first + 1);
        // Safety, on the clock that stamps the lease: b's take-over was written at
        // least a lease after a's last renewal (a renewal that load delayed moves
        // the take-over earlier after the crash, never before the expiry).
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let versions: Vec<failover::bson::Document> = {
            use futures_util::TryStreamExt;
            client
                .default_database()
                .unwrap_or_else(|| client.database("test"))
                .collection::<failover::bson::Document>(c)
                .find(doc! { "_id.lease": "subsystem" })
                .sort(doc! { "_id.v": -1 })
                .limit(2)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap()
        };
        let stamp = |d: &failover::bson::Document| d.get_datetime("renewed_at").unwrap().timestamp_millis();
        let gap = stamp(&versions[0]) - stamp(&versions[1]);
        assert!(
            gap >= LEASE as i64,
            "b took over {gap} ms after a's last renewal, within the {LEASE} ms lease"
        );
        // Speed: the original's worst case is SLAVE + TICKING + MASTER.
        assert!(
            took <= ms(SLAVE + TICKING + MASTER),
            "failover took {took:?}"
        );
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graceful_shutdown_hands_over_within_one_standby_check(uri: String) {
        let c = "graceful";
        let (a, _, b, _) = master_and_standby(&uri, c).await;
        let first = a.epoch().expect("a leads");
        sleep(ms(300)).await;
        let t = Instant::now();
        a.shutdown().await.unwrap();
        assert_eq!(a.state(), State::Stopped);
        assert_eq!(
            within(ms(5000), "hand-over", b.wait_for_master())
                .await
                .unwrap(),
            first + 1
        );
        let took = t.elapsed();
        assert!(took <= ms(SLAVE + 200), "hand-over took {took:?}");
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn epochs_strictly_increase_and_each_has_one_holder(uri: String) {
        let c = "epochs";
        let mut holders: Vec<(u64, String)> = Vec::new();
        let mut current = start(&uri, c, "m0").await;
        holders.push((
            within(ms(5000), "master", current.wait_for_master())
                .await
                .unwrap(),
            "m0".into(),
        ));
        for i in 1..4 {
            let id = format!("m{i}");
            let next = start(&uri, c, &id).await;
            within(ms(5000), "standby", next.wait_for_state(State::Slave))
                .await
                .unwrap();
            if i % 2 == 1 {
                current.shutdown().await.unwrap();
            } else {
                drop(current);
            }
            holders.push((
                within(ms(5000), "take-over", next.wait_for_master())
                    .await
                    .unwrap(),
                id,
            ));
            current = next;
        }
        let epochs: Vec<u64> = holders.iter().map(|(e, _)| *e).collect();
        // A new lease document starts at the lease clock's milliseconds; each
        // take-over adds one.
        assert!(epochs[0] > 1_600_000_000_000, "holders: {holders:?}");
        assert!(
            epochs.windows(2).all(|w| w[1] == w[0] + 1),
            "holders: {holders:?}"
        );
        current.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synchronize_ids_reach_standbys(uri: String) {
        let c = "synchronize";
        let (a, _, b, rec) = master_and_standby(&uri, c).await;
        let epoch = a.epoch().expect("a leads");
        a.synchronize(&doc! { "job": "invoice-17" }).unwrap();
        within(ms(3 * SLAVE), "the synchronize event", async {
            while rec
                .first(|e| matches!(e, Event::Synchronize { .. }))
                .is_none()
            {
                sleep(ms(20)).await;
            }
        })
        .await;
        let got: Vec<_> = rec
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Synchronize { id, epoch } => Some((id, epoch)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(doc! { "job": "invoice-17" }.into(), epoch)]);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_lease_document_is_reported_not_obeyed(uri: String) {
        let c = "malformed";
        let client = mongodb::Client::with_uri_str(&uri)
            .await
            .unwrap();
        let coll = client
            .default_database()
            .unwrap_or_else(|| client.database("test"))
            .collection::<failover::bson::Document>(c);
        // The newest version of the lease (see failover::lease) is not one failover wrote.
        coll.insert_one(doc! { "_id": { "lease": "subsystem", "v": 1_i64 }, "epoch": "seven" })
            .await
            .unwrap();
        let a = start(&uri, c, "a").await;
        let rec = Recorder::of(&a);
        within(ms(5000), "error state", a.wait_for_state(State::Error))
            .await
            .unwrap();
        // The member retries after each ERROR interval and reports the document again.
        let malformed = |rec: &Recorder| {
            rec.events().into_iter().find_map(|e| match e {
                Event::Error(e @ Error::MalformedLease { .. }) => Some(e.to_string()),
                _ => None,
            })
        };
        let reported = within(ms(5000), "a MalformedLease error event", async {
            loop {
                match malformed(&rec) {
                    Some(text) => break text,
                    None => sleep(ms(20)).await,
                }
            }
        })
        .await;
        assert!(
            reported.contains("`epoch`")
                && reported.contains("repair_lease")
                && !reported.contains("delete"),
            "{reported}"
        );
        assert!(!a.is_master());
        a.shutdown().await.unwrap();
    }
}

// The fail point tests below need `configureFailPoint`: they run on the bundled test
// server, or on MONGODB_URI when it is set (a mongod with enableTestCommands=1), as
// `support::mongodb_uri()` picks; FerretDB has no fail points.

/// Fails every command of member `id` of collection `c` as `data` says.
async fn fail_member(
    c: &str,
    id: &str,
    mode: failover::bson::Bson,
    mut data: failover::bson::Document,
) -> mongodb::Client {
    let client = mongodb::Client::with_uri_str(support::mongodb_uri())
        .await
        .unwrap();
    data.insert("appName", format!("failover:{c}-{id}"));
    data.insert(
        "failCommands",
        vec!["findAndModify", "find", "hello", "update"],
    );
    support::fail_command(&client, doc! { "mode": mode, "data": data }).await;
    client
}

/// A master cut off by `fault` must step down before the standby takes over.
async fn master_steps_down_first(
    c: &str,
    mode: failover::bson::Bson,
    fault: failover::bson::Document,
) {
    let _guard = FAIL_POINT.lock().await;
    let (a, ra, b, rb) = master_and_standby(&support::mongodb_uri(), c).await;
    let first = a.epoch().expect("a leads");
    let client = fail_member(c, "a", mode, fault).await;
    within(ms(10_000), "b taking over", b.wait_for_master())
        .await
        .unwrap();
    support::clear_fail_points(&client).await;
    let down = ra
        .first(|e| {
            matches!(
                e,
                Event::StateChange {
                    old: State::Master,
                    ..
                }
            )
        })
        .expect("a stepped down");
    // The recorders see events a moment after they happen: wait for b's.
    let up = within(ms(2000), "b's master event", async {
        loop {
            match rb.first(|e| matches!(e, Event::Master { .. })) {
                Some(t) => break t,
                None => sleep(ms(5)).await,
            }
        }
    })
    .await;
    assert!(
        down < up,
        "a stepped down {:?} after b took over",
        down - up
    );
    assert!(ra
        .events()
        .iter()
        .any(|e| matches!(e, Event::Error(err) if err.is_transient())));
    // a comes back as a standby of b.
    within(ms(10_000), "a following b", a.wait_for_state(State::Slave))
        .await
        .unwrap();
    assert_eq!(b.epoch(), Some(first + 1));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_errors_make_the_master_step_down_first() {
    master_steps_down_first("fault_errors", "alwaysOn".into(), doc! { "errorCode": 91 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_make_the_master_step_down_first() {
    master_steps_down_first(
        "fault_close",
        "alwaysOn".into(),
        doc! { "closeConnection": true },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_blocked_past_the_deadline_make_the_master_step_down_first() {
    master_steps_down_first(
        "fault_block",
        "alwaysOn".into(),
        doc! { "blockConnection": true, "blockTimeMS": (3 * LEASE) as i64 },
    )
    .await;
}

/// As [`master_steps_down_first`], with the fault made by a [`FaultProxy`] between
/// member `a` and the database instead of a fail point, so that it works on every
/// server: `a` connects through the proxy, `b` directly.
async fn master_steps_down_first_behind_a_proxy(uri: &str, c: &str, fault: Fault) {
    let proxy = FaultProxy::in_front_of(uri).await;
    let a = Member::start("subsystem", options(&proxy.proxied(uri), c, "a"))
        .await
        .unwrap();
    let ra = Recorder::of(&a);
    let first = within(ms(5000), "a master", a.wait_for_master())
        .await
        .unwrap();
    let b = start(uri, c, "b").await;
    let rb = Recorder::of(&b);
    within(ms(5000), "b following", b.wait_for_state(State::Slave))
        .await
        .unwrap();
    proxy.set(fault);
    let second = within(ms(10_000), "b taking over", b.wait_for_master())
        .await
        .unwrap();
    proxy.set(Fault::None);
    let down = ra
        .first(|e| {
            matches!(
                e,
                Event::StateChange {
                    old: State::Master,
                    ..
                }
            )
        })
        .expect("a stepped down");
    // The recorders see events a moment after they happen: wait for b's.
    let up = within(ms(2000), "b's master event", async {
        loop {
            match rb.first(|e| matches!(e, Event::Master { .. })) {
                Some(t) => break t,
                None => sleep(ms(5)).await,
            }
        }
    })
    .await;
    assert!(
        down < up,
        "a stepped down {:?} after b took over",
        down - up
    );
    assert!(ra
        .events()
        .iter()
        .any(|e| matches!(e, Event::Error(err) if err.is_transient())));
    assert!(
        second > first,
        "b's epoch {second} is not above a's {first}"
    );
    // a comes back as a standby of b.
    within(ms(10_000), "a following b", a.wait_for_state(State::Slave))
        .await
        .unwrap();
    assert_eq!(b.epoch(), Some(second));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

// The same faults made by a proxy: on every selected server.
support::server_tests! {
    /// Connections reset (and new ones refused) while `a` is master.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_connections_make_the_master_step_down_first(uri: String) {
        master_steps_down_first_behind_a_proxy(&uri, "proxy_reset", Fault::Reset).await;
    }

    /// Requests that are never answered: `a` must give up at its own deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswering_database_makes_the_master_step_down_first(uri: String) {
        master_steps_down_first_behind_a_proxy(&uri, "proxy_blackhole", Fault::Blackhole).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_fault_puts_a_member_in_error_and_back() {
    let _guard = FAIL_POINT.lock().await;
    let c = "fault_brief";
    let a = start(&support::mongodb_uri(), c, "a").await;
    let ra = Recorder::of(&a);
    let first = within(ms(5000), "a master", a.wait_for_master())
        .await
        .unwrap();
    let client = fail_member(c, "a", doc! { "times": 20 }.into(), doc! { "errorCode": 6 }).await;
    within(ms(10_000), "error state", a.wait_for_state(State::Error))
        .await
        .unwrap();
    support::clear_fail_points(&client).await;
    // Alone, it retakes its own lease at once when the database answers again.
    let epoch = within(ms(10_000), "a master again", a.wait_for_master())
        .await
        .unwrap();
    assert_eq!(epoch, first + 1);
    assert!(ra
        .events()
        .iter()
        .any(|e| matches!(e, Event::Error(Error::Database { code: Some(6), .. }))));
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_options_are_refused_before_connecting_and_hide_passwords() {
    let err = Member::start(
        "x",
        Options::new().connect_string("mongodb://alice:hunter2@[::1"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidUri { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    let err = Member::start(
        "bad\u{0}name",
        options(&support::mongodb_uri(), "invalid", "a"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = Member::start(
        "x",
        options(&support::mongodb_uri(), "invalid", "a").lease(ms(MASTER)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("raise `lease`"), "{err}");
}
