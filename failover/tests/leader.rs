//! Leader information and the step-down request (issue 11) on the in-memory
//! store, under Tokio's paused clock: the timings asserted are virtual and exact.

mod common;

use common::{fast, ms};
use failover::{
    work_fn, Event, Intervals, LeaseState, Managed, Member, MemoryStore, Options, State,
    WorkContext,
};
use tokio::time::{sleep, Instant};

const NAME: &str = "billing";

fn options(store: &MemoryStore, id: &str) -> Options {
    Options::new().in_memory(store).member_id(id)
}

async fn master_and_standby(store: &MemoryStore) -> (Member, Member, u64) {
    let a = Member::start(NAME, options(store, "a")).await.unwrap();
    let epoch = a.wait_for_master().await.unwrap();
    let b = Member::start(NAME, options(store, "b")).await.unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    (a, b, epoch)
}

#[tokio::test(start_paused = true)]
async fn members_know_the_leader_from_the_lease_they_already_read() {
    let store = MemoryStore::new();
    let a = Member::start(NAME, options(&store, "a")).await.unwrap();
    assert_eq!(a.leader(), None, "nothing read before the first check");
    let epoch = a.wait_for_master().await.unwrap();
    let b = Member::start(NAME, options(&store, "b")).await.unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    for member in [&a, &b] {
        let info = member.leader().unwrap();
        assert_eq!(info.name, NAME);
        assert_eq!(info.holder.as_deref(), Some("a"));
        assert_eq!((info.epoch, info.state), (epoch, LeaseState::Held));
        assert_eq!(info.lease, ms(3000));
        assert!(
            info.expires_in_ms > 0 && info.expires_in_ms <= 3000,
            "{info:?}"
        );
    }
    // Judged at the call, on the member's sample carried forward: 1 s later the
    // standby (which has not read again: its next check is later) sees 1 s less.
    let before = b.leader().unwrap().expires_in_ms;
    sleep(ms(1000)).await;
    let after = b.leader().unwrap();
    assert!(
        after.expires_in_ms <= before - 1000 + 1,
        "{before} -> {after:?}"
    );

    // A crash: the standby reports the lease expired once it ran out, then itself.
    a.abort();
    let took = b.wait_for_master().await.unwrap();
    let info = b.leader().unwrap();
    assert_eq!((info.holder.as_deref(), info.epoch), (Some("b"), took));
    assert_eq!(took, epoch + 1);
    b.shutdown().await.unwrap();
    assert_eq!(b.leader().unwrap().state, LeaseState::Released);
}

#[tokio::test(start_paused = true)]
async fn status_and_list_judge_expiry_on_the_stamping_clock() {
    let store = MemoryStore::new();
    let reader = Options::new().in_memory(&store);
    assert_eq!(failover::status(&reader, NAME).await.unwrap(), None);
    assert!(failover::list(&reader).await.unwrap().is_empty());

    let a = Member::start(NAME, options(&store, "a")).await.unwrap();
    let epoch = a.wait_for_master().await.unwrap();
    let other = Member::start("reports", options(&store, "r"))
        .await
        .unwrap();
    other.wait_for_master().await.unwrap();

    let info = failover::status(&reader, NAME).await.unwrap().unwrap();
    assert_eq!((info.holder.as_deref(), info.epoch), (Some("a"), epoch));
    assert_eq!(info.state, LeaseState::Held);
    // Renewed at most a renewal period ago, by the store's clock.
    assert!((1000..=3000).contains(&info.expires_in_ms), "{info:?}");
    let names: Vec<_> = failover::list(&reader)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.state))
        .collect();
    assert_eq!(
        names,
        [
            (NAME.to_owned(), LeaseState::Held),
            ("reports".to_owned(), LeaseState::Held)
        ]
    );

    // The master crashes: held until the lease has run out on the store's clock,
    // expired from then on.
    a.abort();
    let crashed = Instant::now();
    let renewed = failover::status(&reader, NAME).await.unwrap().unwrap();
    let left = renewed.expires_in_ms as u64;
    sleep(ms(left - 20)).await;
    let info = failover::status(&reader, NAME).await.unwrap().unwrap();
    assert_eq!(info.state, LeaseState::Held);
    assert!((1..=20).contains(&info.expires_in_ms), "{info:?}");
    sleep(ms(520)).await;
    let info = failover::status(&reader, NAME).await.unwrap().unwrap();
    assert_eq!(info.state, LeaseState::Expired);
    assert!((-500..=-480).contains(&info.expires_in_ms), "{info:?}");
    assert_eq!(info.expires_in(), None);
    assert!(Instant::now() - crashed <= ms(3500));

    other.shutdown().await.unwrap();
    let info = failover::status(&reader, "reports").await.unwrap().unwrap();
    assert_eq!((info.state, info.expires_in_ms), (LeaseState::Released, 0));
    assert!(failover::status(&reader, " bad").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_step_down_hands_over_to_the_standby_within_one_standby_check() {
    let store = MemoryStore::new();
    let (a, b, first) = master_and_standby(&store).await;
    let mut events = a.events();
    let reader = Options::new().in_memory(&store);

    let asked = Instant::now();
    let info = failover::step_down(&reader, NAME).await.unwrap().unwrap();
    assert!(info.step_down);
    assert_eq!((info.holder.as_deref(), info.epoch), (Some("a"), first));
    assert_eq!(info.state, LeaseState::Held, "the request breaks no lease");
    // Asking twice does nothing more.
    let again = failover::step_down(&reader, NAME).await.unwrap().unwrap();
    assert_eq!(again.version, info.version);

    let second = b.wait_for_master().await.unwrap();
    let took = Instant::now() - asked;
    assert_eq!(second, first + 1);
    let i = Intervals::default();
    assert!(
        took <= i.master + i.slave,
        "the hand-over took {took:?}: more than the master's next renewal plus one standby check"
    );
    // A graceful hand-over: released, with the event, never two masters.
    let mut released = false;
    while let Ok(Some(e)) = tokio::time::timeout(ms(1), events.next()).await {
        released |= e == Event::Released { epoch: first };
    }
    assert!(released, "the old master released the lease");
    assert!(!a.is_master());
    assert_eq!(a.state(), State::Slave, "it stays in the election");
    assert!(
        !b.leader().unwrap().step_down,
        "the new lease carries no request"
    );

    // The old master takes over again when the new one leaves.
    b.shutdown().await.unwrap();
    assert_eq!(a.wait_for_master().await.unwrap(), second + 1);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lone_master_that_stepped_down_takes_the_lease_again_one_lease_later() {
    let store = MemoryStore::new();
    let a = Member::start(NAME, options(&store, "a")).await.unwrap();
    let first = a.wait_for_master().await.unwrap();
    let mut events = a.events();
    failover::step_down(&Options::new().in_memory(&store), NAME)
        .await
        .unwrap()
        .unwrap();
    let released_at = loop {
        if let Some(Event::Released { epoch }) = events.next().await {
            assert_eq!(epoch, first);
            break Instant::now();
        }
    };
    assert_eq!(a.wait_for_master().await.unwrap(), first + 1);
    let gap = Instant::now() - released_at;
    assert!(
        gap >= ms(3000) && gap <= ms(3000) + Intervals::default().slave,
        "took the lease again {gap:?} after releasing it: the standbys' head start is one lease"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_step_down_ends_the_term_and_releases_only_after_its_work_stopped() {
    let store = MemoryStore::new();
    let (a, b, first) = master_and_standby(&store).await;
    let term = a.leadership().await.unwrap();
    failover::step_down(&Options::new().in_memory(&store), NAME)
        .await
        .unwrap();
    // The term ends at the master's next renewal, while the lease stays valid.
    tokio::time::timeout(Intervals::default().master + ms(1), term.cancelled())
        .await
        .expect("the term ended at the next renewal");
    assert!(a.is_master(), "the lease stays valid during the hand-over");
    // A new term is not handed out meanwhile (and the call does not spin).
    let again = tokio::time::timeout(ms(100), a.leadership()).await;
    assert!(again.is_err(), "no new term during the hand-over");
    // The work takes 5 s to stop: the lease is renewed and not released meanwhile.
    sleep(ms(5000)).await;
    assert!(a.is_master() && !b.is_master());
    assert_eq!(store.holder(NAME), Some(("a".to_owned(), first)));
    let stopped = Instant::now();
    drop(term);
    let second = b.wait_for_master().await.unwrap();
    assert_eq!(second, first + 1);
    assert!(Instant::now() - stopped <= Intervals::default().slave);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn work_that_outlives_the_grace_period_lets_the_lease_expire_instead() {
    let store = MemoryStore::new();
    let a = Member::start(NAME, options(&store, "a").shutdown_timeout(ms(1000)))
        .await
        .unwrap();
    let first = a.wait_for_master().await.unwrap();
    let b = Member::start(NAME, options(&store, "b")).await.unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    let term = a.leadership().await.unwrap();
    failover::step_down(&Options::new().in_memory(&store), NAME)
        .await
        .unwrap();
    term.cancelled().await;
    let ended = Instant::now();
    // After the grace period the master stops acting, without a release.
    a.wait_for_state(State::Slave).await.unwrap();
    assert!(Instant::now() - ended <= ms(1000) + ms(1));
    assert!(!a.is_master());
    assert_eq!(store.holder(NAME).map(|h| h.1), Some(first), "not released");
    // The standby takes over once the lease has run out.
    assert_eq!(b.wait_for_master().await.unwrap(), first + 1);
    drop(term);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_managed_master_finishes_its_task_and_publishes_it_before_handing_over() {
    let store = MemoryStore::new();
    let work = || {
        work_fn(
            |n: &u32| *n,
            |n: &u32, _: &WorkContext| {
                let n = *n;
                async move {
                    sleep(ms(400)).await;
                    n > 0
                }
            },
        )
    };
    let a = Managed::start(NAME, fast(&store, "a"), work())
        .await
        .unwrap();
    let first = a.member().wait_for_master().await.unwrap();
    let b = Managed::start(NAME, fast(&store, "b"), work())
        .await
        .unwrap();
    b.member().wait_for_state(State::Slave).await.unwrap();
    for n in 1..=3 {
        a.submit_work(n).await.unwrap();
        b.submit_work(n).await.unwrap();
    }
    sleep(ms(100)).await; // task 1 runs on a
    failover::step_down(&Options::new().in_memory(&store), NAME)
        .await
        .unwrap();
    let second = b.member().wait_for_master().await.unwrap();
    assert_eq!(second, first + 1);
    assert_eq!(
        a.stats().finished,
        1,
        "the running task finished, no other started"
    );
    // b resumes after what a published in its release: it runs 2 and 3 only.
    common::until(ms(5000), "b works the rest", || b.stats().finished == 2).await;
    sleep(ms(1000)).await;
    assert_eq!(b.stats().finished, 2, "nothing ran twice");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn nobody_to_step_down_is_none() {
    let store = MemoryStore::new();
    let reader = Options::new().in_memory(&store);
    assert_eq!(failover::step_down(&reader, NAME).await.unwrap(), None);
    let a = Member::start(NAME, options(&store, "a")).await.unwrap();
    a.wait_for_master().await.unwrap();
    a.shutdown().await.unwrap();
    assert_eq!(failover::step_down(&reader, NAME).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_watch_reports_each_holder_epoch_release_and_expiry_once() {
    let store = MemoryStore::new();
    let reader = Options::new().in_memory(&store);
    let (a, b, first) = master_and_standby(&store).await;
    let mut watch = failover::watch(&reader, NAME, ms(200)).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        ("a".into(), first, LeaseState::Held, false)
    );
    failover::step_down(&reader, NAME).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        ("a".into(), first, LeaseState::Held, true)
    );
    assert_eq!(
        next(&mut watch).await,
        ("a".into(), first, LeaseState::Released, false)
    );
    assert_eq!(
        next(&mut watch).await,
        ("b".into(), first + 1, LeaseState::Held, false)
    );
    // A crash: the expiry is reported when the lease runs out, not a poll later.
    b.abort();
    let crashed = Instant::now();
    assert_eq!(next(&mut watch).await.2, LeaseState::Expired);
    assert!(Instant::now() - crashed <= ms(3000) + ms(2));
    // a yielded for one lease only: it takes over now.
    assert_eq!(
        next(&mut watch).await,
        ("a".into(), first + 2, LeaseState::Held, false)
    );
    drop(watch);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_hand_over_still_releases() {
    let store = MemoryStore::new();
    let (a, b, first) = master_and_standby(&store).await;
    let term = a.leadership().await.unwrap();
    failover::step_down(&Options::new().in_memory(&store), NAME)
        .await
        .unwrap();
    term.cancelled().await;
    let a = std::sync::Arc::new(a);
    let stopping = {
        let a = a.clone();
        tokio::spawn(async move { a.shutdown().await })
    };
    sleep(ms(50)).await;
    drop(term);
    stopping.await.unwrap().unwrap();
    assert_eq!(store.holder(NAME), None, "released");
    assert_eq!(b.wait_for_master().await.unwrap(), first + 1);
    b.shutdown().await.unwrap();
}

async fn next(watch: &mut failover::Watch) -> (String, u64, LeaseState, bool) {
    let info = watch.next().await.unwrap().unwrap();
    (
        info.holder.unwrap_or_default(),
        info.epoch,
        info.state,
        info.step_down,
    )
}
