//! `Member::health()` on the in-memory store: standbys and a working master are
//! healthy; a member in `error` longer than the bound, a master past its deadline
//! and a stopped member are not.

mod common;

use std::time::Duration;

use common::{fast, ms};
use failover::{Health, Member, MemoryStore, State, Unhealthy};
use tokio::time::sleep;

const NAME: &str = "probed";

#[tokio::test(start_paused = true)]
async fn a_master_and_its_standbys_are_healthy() {
    let store = MemoryStore::new();
    let a = Member::start(NAME, fast(&store, "a")).await.unwrap();
    a.wait_for_master().await.unwrap();
    let b = Member::start(NAME, fast(&store, "b")).await.unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    for _ in 0..20 {
        sleep(ms(37)).await;
        assert_eq!(a.health(), Health::Healthy);
        assert_eq!(b.health(), Health::Healthy);
    }
    assert_eq!(a.health().to_string(), "healthy");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(a.health(), Health::Unhealthy(Unhealthy::Stopped));
}

#[tokio::test(start_paused = true)]
async fn a_member_in_error_longer_than_the_bound_is_unhealthy() {
    let store = MemoryStore::new();
    let a = Member::start(NAME, fast(&store, "a")).await.unwrap();
    a.wait_for_master().await.unwrap();
    // The default bound: three ERROR intervals (3 × 100 ms here).
    let b = Member::start(NAME, fast(&store, "b")).await.unwrap();
    let c = Member::start(NAME, fast(&store, "c").unhealthy_after(ms(1000)))
        .await
        .unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    c.wait_for_state(State::Slave).await.unwrap();
    store.set_unreachable("b", true);
    store.set_unreachable("c", true);
    b.wait_for_state(State::Error).await.unwrap();
    c.wait_for_state(State::Error).await.unwrap();
    assert!(b.health().is_healthy(), "one failed check is no reason");
    sleep(ms(250)).await;
    assert!(b.health().is_healthy(), "250 ms in error, within the bound");
    sleep(ms(100)).await;
    match b.health() {
        Health::Unhealthy(Unhealthy::InError { since, bound }) => {
            assert_eq!(bound, ms(300));
            assert!(since > bound && since <= ms(400), "{since:?}");
        }
        other => panic!("expected unhealthy in error, got {other:?}"),
    }
    assert!(b.health().to_string().starts_with("unhealthy: in error"));
    assert!(c.health().is_healthy(), "c's bound is 1 s");
    assert!(a.health().is_healthy(), "the master is not affected");
    // Reconnected: a standby again, healthy again.
    store.set_unreachable("b", false);
    b.wait_for_state(State::Slave).await.unwrap();
    assert!(b.health().is_healthy());
    sleep(ms(700)).await;
    assert!(matches!(
        c.health(),
        Health::Unhealthy(Unhealthy::InError { .. })
    ));
    store.set_unreachable("c", false);
    for m in [a, b, c] {
        m.shutdown().await.unwrap();
    }
}

/// A master whose process does not run in time (here: the runtime's only thread
/// blocks) is past its deadline before its election can step it down; health
/// says so, on the lease clock, while the store is cut off. Real time: a blocked
/// thread does not move Tokio's paused clock.
#[tokio::test(flavor = "current_thread")]
async fn a_master_past_its_deadline_is_unhealthy() {
    let store = MemoryStore::new();
    let a = Member::start(NAME, fast(&store, "a")).await.unwrap();
    a.wait_for_master().await.unwrap();
    assert!(a.health().is_healthy());
    store.set_unreachable("a", true);
    // Blocks the runtime for longer than the lease (300 ms).
    std::thread::sleep(ms(400));
    assert_eq!(a.state(), State::Master, "the election has not run yet");
    assert!(!a.is_master(), "but the lease is no longer valid");
    match a.health() {
        Health::Unhealthy(Unhealthy::PastDeadline { by }) => {
            assert!(by > Duration::ZERO && by <= ms(400), "{by:?}")
        }
        other => panic!("expected unhealthy past the deadline, got {other:?}"),
    }
    // Once the election runs it steps down to `error`; that is healthy until the
    // bound (3 × 100 ms) has passed.
    a.wait_for_state(State::Error).await.unwrap();
    assert!(a.health().is_healthy());
    sleep(ms(400)).await;
    assert!(matches!(
        a.health(),
        Health::Unhealthy(Unhealthy::InError { .. })
    ));
    store.set_unreachable("a", false);
    a.shutdown().await.unwrap();
}
