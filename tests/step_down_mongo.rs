//! Step-down requests over the wire (issue 11), racing with fast renewals: the
//! request's copy of the lease and the master's renewal compete for one version,
//! in either order. Every request must end in a graceful hand-over (a release,
//! then the other member's next epoch), never in two masters at one instant.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failover::{Event, Intervals, LeaseState, Member, Options, State};
use tokio::time::{timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const NAME: &str = "subsystem";

fn options(uri: &str, collection: &str, id: Option<&str>) -> Options {
    let options = Options::new()
        .connect_string(uri)
        .collection(collection)
        .intervals(Intervals {
            init: Duration::ZERO,
            master: ms(100),
            slave: ms(150),
            ticking: ms(300),
            error: ms(200),
        })
        .lease(ms(400));
    match id {
        Some(id) => options.member_id(id),
        None => options,
    }
}

support::server_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_step_down_request_hands_over_gracefully(uri: String) {
        let c = "step_down_rounds";
        let members = Arc::new([
            Member::start(NAME, options(&uri, c, Some("a"))).await.unwrap(),
            Member::start(NAME, options(&uri, c, Some("b"))).await.unwrap(),
        ]);
        let mut events = [members[0].events(), members[1].events()];
        // Never two masters at one instant.
        let overlap = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (members, overlap, done) = (members.clone(), overlap.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    if members.iter().all(|m| m.is_master()) {
                        overlap.store(true, Ordering::SeqCst);
                    }
                    tokio::time::sleep(ms(1)).await;
                }
            })
        };
        let reader = options(&uri, c, None);
        let mut epoch = timeout(ms(5000), async {
            loop {
                if let Some(e) = members.iter().find_map(|m| m.epoch()) {
                    break e;
                }
                tokio::time::sleep(ms(5)).await;
            }
        })
        .await
        .expect("a master");
        for round in 0..6 {
            let master = members.iter().position(|m| m.epoch() == Some(epoch)).expect("the master");
            let standby = 1 - master;
            timeout(ms(3000), members[standby].wait_for_state(State::Slave))
                .await
                .expect("the standby follows")
                .unwrap();
            // A member that stepped down lets the others go first for one lease;
            // then vary the request's moment within the renewal period.
            tokio::time::sleep(ms(400 + 17 * round)).await;
            let asked = Instant::now();
            let info = failover::step_down(&reader, NAME).await.unwrap().expect("a holder");
            assert_eq!(info.epoch, epoch, "round {round}");
            assert!(info.step_down);
            let next = timeout(ms(2000), members[standby].wait_for_master())
                .await
                .unwrap_or_else(|_| panic!("round {round}: no hand-over within 2 s"))
                .unwrap();
            assert_eq!(next, epoch + 1, "round {round}");
            // A renewal period plus a standby check, with room for a loaded machine.
            assert!(asked.elapsed() <= ms(100 + 150 + 500), "round {round}: {:?}", asked.elapsed());
            // It was a release, not an expiry.
            let released = timeout(ms(1000), async {
                while let Some(e) = events[master].next().await {
                    if e == (Event::Released { epoch }) {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(released, Ok(true), "round {round}: no release of epoch {epoch}");
            let status = failover::status(&reader, NAME).await.unwrap().unwrap();
            assert_eq!((status.epoch, status.state, status.step_down), (next, LeaseState::Held, false));
            epoch = next;
        }
        done.store(true, Ordering::SeqCst);
        watcher.await.unwrap();
        assert!(!overlap.load(Ordering::SeqCst), "two masters at one instant");
        for m in members.iter() {
            m.shutdown().await.unwrap();
        }
    }
}
