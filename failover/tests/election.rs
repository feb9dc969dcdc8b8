//! The election state machine on the in-memory store, under Tokio's paused clock:
//! deterministic, and the timings asserted are exact virtual times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::{Error, Event, Hooks, Intervals, Member, MemoryStore, Options, State};
use tokio::time::{sleep, Instant};

const NAME: &str = "billing";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn options(store: &MemoryStore, id: &str) -> Options {
    Options::new().in_memory(store).member_id(id)
}

/// Every event with the virtual instant it was seen at.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Recorder {
    fn spawn(&self, member: &Member) {
        let mut events = member.events();
        let log = self.0.clone();
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                log.lock().unwrap().push((Instant::now(), e));
            }
        });
    }
    fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
    fn first(&self, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| pred(e))
            .map(|(t, _)| *t)
    }
}

async fn start(store: &MemoryStore, id: &str) -> Member {
    Member::start(NAME, options(store, id)).await.unwrap()
}

fn masters(members: &[&Member]) -> usize {
    members.iter().filter(|m| m.is_master()).count()
}

#[tokio::test(start_paused = true)]
async fn first_member_passes_through_ticking_to_master_and_others_follow() {
    let store = MemoryStore::new();
    let rec = Recorder::default();
    let a = Member::start_with_hooks(
        NAME,
        options(&store, "a").intervals(Intervals {
            init: ms(10),
            ..Intervals::default()
        }),
        (),
    )
    .await
    .unwrap();
    rec.spawn(&a);
    assert_eq!(a.wait_for_master().await.unwrap(), 1);
    let states: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::StateChange { old, new, .. } => Some((old, new)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            (State::Init, State::Ticking),
            (State::Ticking, State::Master)
        ]
    );
    assert!(rec.events().contains(&Event::Master { epoch: 1 }));

    let b = start(&store, "b").await;
    let c = start(&store, "c").await;
    b.wait_for_state(State::Slave).await.unwrap();
    c.wait_for_state(State::Slave).await.unwrap();
    // Many renewals later there is still exactly one master, with the first epoch.
    sleep(Duration::from_secs(30)).await;
    assert_eq!(masters(&[&a, &b, &c]), 1);
    assert_eq!(a.epoch(), Some(1));
    assert_eq!(store.holder(NAME), Some(("a".to_owned(), 1)));
    for m in [a, b, c] {
        m.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn simultaneous_start_elects_exactly_one() {
    let store = MemoryStore::new();
    let members: Vec<Member> = futures_join(&store, &["a", "b", "c", "d", "e"]).await;
    sleep(ms(100)).await;
    let refs: Vec<&Member> = members.iter().collect();
    assert_eq!(masters(&refs), 1);
    assert_eq!(store.holder(NAME).map(|(_, e)| e), Some(1));
    for m in members {
        m.shutdown().await.unwrap();
    }
}

async fn futures_join(store: &MemoryStore, ids: &[&str]) -> Vec<Member> {
    let mut out = Vec::new();
    for id in ids {
        out.push(start(store, id).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn crash_failover_happens_within_the_lease_after_the_last_renewal() {
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    a.wait_for_master().await.unwrap();
    let b = start(&store, "b").await;
    let rec = Recorder::default();
    rec.spawn(&b);
    b.wait_for_state(State::Slave).await.unwrap();
    sleep(ms(5_300)).await; // somewhere between two renewals
    let crashed = Instant::now();
    drop(a); // no release
    let epoch = b.wait_for_master().await.unwrap();
    let took = Instant::now() - crashed;
    assert_eq!(epoch, 2);
    // Lease 3 s after the last renewal, which was at most 2 s before the crash.
    assert!(
        took > ms(1000) && took <= ms(3000) + ms(5),
        "failover took {took:?}"
    );
    // The original's worst case with the same intervals: SLAVE + TICKING + MASTER.
    assert!(took < ms(6500));
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_hands_over_within_one_standby_check() {
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    a.wait_for_master().await.unwrap();
    a.synchronize("job-7").unwrap();
    let b = start(&store, "b").await;
    b.wait_for_state(State::Slave).await.unwrap();
    sleep(ms(1234)).await;
    let t = Instant::now();
    a.shutdown().await.unwrap();
    assert_eq!(a.state(), State::Stopped);
    assert!(!a.is_master());
    assert_eq!(b.wait_for_master().await.unwrap(), 2);
    let took = Instant::now() - t;
    assert!(
        took <= Intervals::default().slave,
        "hand-over took {took:?}"
    );
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn synchronize_ids_reach_standbys_with_the_next_renewal() {
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    a.wait_for_master().await.unwrap();
    let b = start(&store, "b").await;
    let rec = Recorder::default();
    rec.spawn(&b);
    b.wait_for_state(State::Slave).await.unwrap();
    for id in 1..=3 {
        a.synchronize(id).unwrap();
        sleep(ms(5_000)).await;
    }
    let ids: Vec<i32> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Synchronize { id, epoch: 1 } => id.as_i32(),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_master_steps_down_before_any_standby_takes_over() {
    let store = MemoryStore::new();
    let ra = Recorder::default();
    let rb = Recorder::default();
    let a = start(&store, "a").await;
    ra.spawn(&a);
    a.wait_for_master().await.unwrap();
    let b = start(&store, "b").await;
    rb.spawn(&b);
    b.wait_for_state(State::Slave).await.unwrap();
    sleep(ms(3_100)).await;
    let cut = Instant::now();
    store.set_unreachable("a", true);
    b.wait_for_master().await.unwrap();
    let a_down = ra
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
    let b_up = rb.first(|e| matches!(e, Event::Master { .. })).unwrap();
    assert!(
        a_down < b_up,
        "a stepped down at {:?}, b took over at {:?}",
        a_down - cut,
        b_up - cut
    );
    // The margin is a tenth of the lease.
    assert!(b_up - a_down >= ms(300), "margin only {:?}", b_up - a_down);
    assert!(ra
        .events()
        .iter()
        .any(|e| matches!(e, Event::Error(err) if err.is_transient())));
    // Reconnected, a becomes a standby of b.
    store.set_unreachable("a", false);
    a.wait_for_state(State::Slave).await.unwrap();
    assert_eq!(b.epoch(), Some(2));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_master_whose_renewals_hang_steps_down_at_its_deadline() {
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    a.wait_for_master().await.unwrap();
    let b = start(&store, "b").await;
    b.wait_for_state(State::Slave).await.unwrap();
    store.set_delay("a", Duration::from_secs(60));
    let t = Instant::now();
    a.wait_for_state(State::Error).await.unwrap();
    // At most one renewal period plus the renew deadline (90 % of the 3 s lease).
    assert!(
        Instant::now() - t <= ms(2000 + 2700),
        "{:?}",
        Instant::now() - t
    );
    assert!(!a.is_master());
    b.wait_for_master().await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_short_outage_of_a_lone_member_ends_with_it_master_again() {
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    assert_eq!(a.wait_for_master().await.unwrap(), 1);
    store.set_unreachable("a", true);
    a.wait_for_state(State::Error).await.unwrap();
    store.set_unreachable("a", false);
    // Its own lease needs no expiry: it retakes it at the next check, with a new epoch.
    assert_eq!(a.wait_for_master().await.unwrap(), 2);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn epochs_strictly_increase_with_one_holder_each() {
    let store = MemoryStore::new();
    let mut seen = Vec::new();
    let mut current = start(&store, "m0").await;
    seen.push(current.wait_for_master().await.unwrap());
    for i in 1..6 {
        let next = start(&store, &format!("m{i}")).await;
        next.wait_for_state(State::Slave).await.unwrap();
        if i % 2 == 0 {
            current.shutdown().await.unwrap();
        } else {
            drop(current);
        }
        seen.push(next.wait_for_master().await.unwrap());
        current = next;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    current.shutdown().await.unwrap();
}

struct Slow(Arc<Mutex<Vec<u64>>>);

impl Hooks for Slow {
    async fn on_master(&self, epoch: u64) {
        sleep(Duration::from_secs(3600)).await;
        self.0.lock().unwrap().push(epoch);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_hook_does_not_delay_renewals() {
    let store = MemoryStore::new();
    let a = Member::start_with_hooks(NAME, options(&store, "a"), Slow(Default::default()))
        .await
        .unwrap();
    a.wait_for_master().await.unwrap();
    let b = start(&store, "b").await;
    sleep(Duration::from_secs(60)).await;
    assert!(
        a.is_master(),
        "the master lost its lease while a hook slept"
    );
    assert_eq!(b.state(), State::Slave);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

struct Panicky;

impl Hooks for Panicky {
    async fn on_master(&self, _: u64) {
        panic!("boom");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_hook_is_reported_and_the_member_goes_on() {
    let store = MemoryStore::new();
    let a = Member::start_with_hooks(NAME, options(&store, "a"), Panicky)
        .await
        .unwrap();
    let mut events = a.events();
    a.wait_for_master().await.unwrap();
    let panic = loop {
        if let Event::Panic(p) = events.next().await.unwrap() {
            break p;
        }
    };
    assert!(
        panic.contains("boom") && panic.contains("master"),
        "{panic}"
    );
    sleep(Duration::from_secs(10)).await;
    assert!(a.is_master());
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn invalid_options_and_names_are_refused_before_starting() {
    let store = MemoryStore::new();
    let err = Member::start("", options(&store, "a")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let bad = options(&store, "a").intervals(Intervals {
        master: Duration::ZERO,
        ..Intervals::default()
    });
    let err = Member::start(NAME, bad).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "intervals.master",
                ..
            }
        ),
        "{err}"
    );
    let err = Member::start(NAME, Options::new().connect_string("postgres://x:pw@h/db"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUri { .. }), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
    assert_eq!(store.holder(NAME), None);
}

#[tokio::test(start_paused = true)]
async fn tuned_intervals_fail_over_within_the_lease() {
    let store = MemoryStore::new();
    let fast = |id: &str| {
        options(&store, id)
            .intervals(Intervals {
                master: ms(300),
                slave: ms(500),
                ..Intervals::default()
            })
            .lease(ms(1000))
    };
    let a = Member::start(NAME, fast("a")).await.unwrap();
    a.wait_for_master().await.unwrap();
    let b = Member::start(NAME, fast("b")).await.unwrap();
    b.wait_for_state(State::Slave).await.unwrap();
    sleep(ms(777)).await;
    let t = Instant::now();
    drop(a);
    b.wait_for_master().await.unwrap();
    assert!(Instant::now() - t <= ms(1005), "{:?}", Instant::now() - t);
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_first_subscriber_sees_the_events_from_the_start() {
    let store = MemoryStore::new();
    let a = start(&store, "a").await;
    a.wait_for_master().await.unwrap();
    sleep(ms(10)).await;
    // Subscribed after the election: still sees it, in order.
    let mut first = a.events();
    let mut names = Vec::new();
    while let Some(e) = first.try_next() {
        names.push(e.name());
    }
    assert_eq!(names, ["info", "statechange", "statechange", "master"]);
    // A later subscriber starts from now.
    let mut later = a.events();
    assert!(later.try_next().is_none());
    a.shutdown().await.unwrap();
    assert_eq!(later.next().await.map(|e| e.name()), Some("info"));
}
