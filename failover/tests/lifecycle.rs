//! The handles' lifecycle (issue 9): work scoped to leadership, hooks before work,
//! shutdown and abort and the states after them. In-memory store, Tokio's paused
//! clock unless the test needs a real network.

mod common;

use common::{fast, ms};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::fence::FencedCollection;
use failover::{
    work_fn, Error, Events, Hooks, Leadership, Managed, Member, MemoryStore, Options, State,
    WorkContext,
};
use tokio::time::{sleep, Instant};

#[test]
fn the_public_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Member>();
    send_sync::<Leadership>();
    send_sync::<Error>();
    send_sync::<Options>();
    send_sync::<FencedCollection>();
    send_sync::<MemoryStore>();
    send_sync::<WorkContext>();
    send::<Events>();
    fn managed<W: failover::Work>() {
        send_sync::<Managed<W>>();
    }
    let _ = managed::<Ticks>;
}

struct Ticks;
impl failover::Work for Ticks {
    type Task = u32;
    type Key = u32;
    fn key(&self, t: &u32) -> u32 {
        *t
    }
    async fn work(&self, _: &u32, _: &WorkContext) -> failover::Outcome {
        failover::Outcome::Done
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_idempotent_and_work_submitted_after_it_is_refused() {
    let store = MemoryStore::new();
    let m = Managed::start("life", fast(&store, "a"), Ticks)
        .await
        .unwrap();
    m.member().wait_for_master().await.unwrap();
    m.submit_work(1).await.unwrap();
    m.shutdown().await.unwrap();
    m.shutdown().await.unwrap();
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.submit_work(2).await, Err(Error::Shutdown));
    assert_eq!(store.holder("life"), None, "the lease was released");
}

#[tokio::test(start_paused = true)]
async fn after_abort_the_member_is_stopped_and_waits_end_in_shutdown() {
    let store = MemoryStore::new();
    let a = Member::start("life", fast(&store, "a")).await.unwrap();
    a.wait_for_master().await.unwrap();
    a.abort();
    assert_eq!(a.state(), State::Stopped);
    assert!(!a.is_master());
    assert_eq!(a.epoch(), None);
    assert_eq!(a.wait_for_master().await, Err(Error::Shutdown));
    assert_eq!(a.wait_for_state(State::Master).await, Err(Error::Shutdown));
    assert_eq!(a.wait_for_state(State::Stopped).await, Ok(()));
    assert!(a.leadership().await.is_err());
    // A crash: the lease was not released.
    assert_eq!(store.holder("life").map(|h| h.0), Some("a".to_owned()));
}

/// Records the order of hook calls and tasks.
struct Ordered {
    log: Arc<Mutex<Vec<String>>>,
}

impl Hooks for Ordered {
    async fn on_master(&self, epoch: u64) {
        // A hook that prepares something the work needs, slowly.
        sleep(ms(200)).await;
        self.log.lock().unwrap().push(format!("master {epoch}"));
    }
}

#[tokio::test(start_paused = true)]
async fn on_master_returns_before_the_first_task_of_its_epoch() {
    let store = MemoryStore::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let work = work_fn(
        |n: &u32| *n,
        move |n: &u32, ctx: &WorkContext| {
            l.lock()
                .unwrap()
                .push(format!("task {n} epoch {}", ctx.epoch()));
            async { true }
        },
    );
    let m = Managed::start_with_hooks(
        "hooks",
        fast(&store, "a"),
        work,
        Ordered { log: log.clone() },
    )
    .await
    .unwrap();
    m.submit_work(1).await.unwrap();
    let epoch = m.member().wait_for_master().await.unwrap();
    while m.stats().finished < 1 {
        sleep(ms(10)).await;
    }
    assert_eq!(
        *log.lock().unwrap(),
        [format!("master {epoch}"), format!("task 1 epoch {epoch}")]
    );
    m.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_while_master_is_cancelled_at_the_end_of_the_term_before_a_standby_leads() {
    let store = MemoryStore::new();
    let a = Arc::new(Member::start("term", fast(&store, "a")).await.unwrap());
    a.wait_for_master().await.unwrap();
    let b = Member::start("term", fast(&store, "b")).await.unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    let ended: Arc<Mutex<Option<Instant>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(false));
    let (a2, e2, r2) = (a.clone(), ended.clone(), running.clone());
    let leading = tokio::spawn(async move {
        a2.run_while_master(|term| {
            let (e, r) = (e2.clone(), r2.clone());
            async move {
                // Runs until dropped; records when.
                struct OnDrop(Arc<Mutex<Option<Instant>>>, Arc<AtomicBool>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.1.store(false, Ordering::SeqCst);
                        *self.0.lock().unwrap() = Some(Instant::now());
                    }
                }
                r.store(true, Ordering::SeqCst);
                let _guard = OnDrop(e, r);
                let _term = term;
                std::future::pending::<()>().await;
            }
        })
        .await
    });
    while !running.load(Ordering::SeqCst) {
        sleep(ms(5)).await;
    }
    // Cut a off: its term ends at its deadline, before b may take over.
    store.set_unreachable("a", true);
    let b_epoch = b.wait_for_master().await.unwrap();
    let b_leads = Instant::now();
    let ended = ended
        .lock()
        .unwrap()
        .expect("the term's future was dropped");
    assert!(
        ended < b_leads,
        "the term ended at {ended:?}, after b led at {b_leads:?}"
    );
    assert!(b_epoch > 0);
    a.abort();
    leading.await.unwrap().unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_held_leadership_before_it_releases() {
    let store = MemoryStore::new();
    let a = Arc::new(Member::start("held", fast(&store, "a")).await.unwrap());
    let term = a.leadership().await.unwrap();
    assert!(term.is_valid());
    let a2 = a.clone();
    let stopping = tokio::spawn(async move { a2.shutdown().await });
    sleep(ms(1000)).await;
    // Still held, still renewed: not released while the work runs.
    assert!(!stopping.is_finished());
    assert_eq!(store.holder("held").map(|h| h.0), Some("a".to_owned()));
    assert!(
        a.is_master(),
        "the lease is renewed while the work finishes"
    );
    drop(term);
    stopping.await.unwrap().unwrap();
    assert_eq!(store.holder("held"), None, "released once the work stopped");
}

#[tokio::test(start_paused = true)]
async fn a_leadership_held_past_the_shutdown_timeout_is_cancelled_and_the_lease_left_to_expire() {
    let store = MemoryStore::new();
    let options = fast(&store, "a").shutdown_timeout(ms(500));
    let a = Arc::new(Member::start("stuck", options).await.unwrap());
    let term = a.leadership().await.unwrap();
    let a2 = a.clone();
    let stopping = tokio::spawn(async move { a2.shutdown().await });
    // The token is cancelled when the grace period ends.
    tokio::time::timeout(ms(2000), term.cancelled())
        .await
        .expect("the term is cancelled after the shutdown timeout");
    // The work ignores it and keeps its leadership: the lease is not released;
    // the member stops acting at its deadline.
    sleep(ms(1000)).await;
    assert!(!a.is_master());
    assert_eq!(store.holder("stuck").map(|h| h.0), Some("a".to_owned()));
    drop(term);
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_fast_when_the_database_cannot_be_reached() {
    // Nothing listens on port 1.
    let options = Options::new()
        .connect_string("mongodb://127.0.0.1:1/test?serverSelectionTimeoutMS=200")
        .connect_timeout(ms(800));
    let t = std::time::Instant::now();
    let err = Member::start("unreachable", options).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.is_transient(), "{err:?}");
    // The driver gave up first (server selection, 200 ms): its error is the source,
    // for its labels and codes.
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    let source = std::error::Error::source(&err).expect("the driver's error as source");
    let driver = source
        .downcast_ref::<failover::DriverError>()
        .expect("a DriverError");
    assert!(matches!(
        *driver.driver().kind,
        mongodb::error::ErrorKind::ServerSelection { .. }
    ));
}

/// An abort is a crash even when the election task runs on another thread and sees
/// the stop before its task is aborted: it must not release the lease (it did, about
/// every other time, before the abort flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_never_releases_even_on_a_multi_thread_runtime() {
    for _ in 0..100 {
        let store = MemoryStore::new();
        let a = Member::start("life", Options::new().in_memory(&store).member_id("a"))
            .await
            .unwrap();
        a.wait_for_master().await.unwrap();
        a.abort();
        // Whatever the election task was doing has ended by then (no database
        // latency in memory).
        sleep(ms(5)).await;
        assert_eq!(
            store.holder("life").map(|h| h.0),
            Some("a".to_owned()),
            "an abort released the lease"
        );
    }
}
