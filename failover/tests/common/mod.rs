//! Helpers shared by the in-memory integration tests (`mod common;`).
#![allow(dead_code)] // each test binary uses part of it

use std::time::Duration;

use failover::{Intervals, MemoryStore, Options};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Short timings on the in-memory store: renew every 100 ms, lease 300 ms.
pub fn fast(store: &MemoryStore, id: &str) -> Options {
    Options::new()
        .in_memory(store)
        .member_id(id)
        .intervals(Intervals {
            init: Duration::ZERO,
            master: ms(100),
            slave: ms(100),
            ticking: ms(100),
            error: ms(100),
        })
        .lease(ms(300))
}

/// Polls `cond` every 5 ms until it holds or `limit` passes (Tokio's clock).
pub async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(ms(5)).await;
    }
}
