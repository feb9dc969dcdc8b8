//! Where leases are kept: MongoDB, or an in-process store with the same semantics.
//!
//! Both back-ends implement [`LeaseStore`], the five operations described in
//! [`crate::lease`]; the election is generic over it and never sees which one it
//! talks to.

mod memory;
mod mongo;

use std::future::Future;

pub use memory::MemoryStore;
pub(crate) use mongo::{driver_error, error_code, MongoStore, DUPLICATE_KEY};

use crate::error::Result;
use crate::lease::{Lease, Published};

/// Who is writing: the member id (for people) and the random token of this member
/// instance (what renewals are conditional on).
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub member_id: String,
    pub token: i64,
}

/// The lease operations of one member on one back-end.
pub(crate) trait LeaseStore: Send + Sync + 'static {
    /// Stamps this member's clock document of subsystem `name` with the time of the
    /// node that stamps the lease, and returns that time in milliseconds.
    fn stamp(&self, name: &str, claim: &Claim) -> impl Future<Output = Result<i64>> + Send;

    /// Reads the lease of subsystem `name`, if there is one.
    fn read(&self, name: &str) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Takes the lease: creates it with epoch `fresh_epoch` when `seen` is `None`,
    /// else replaces the lease whose version is `seen` (its epoch plus one).
    /// `Ok(None)` when another member won the race.
    fn acquire(
        &self,
        name: &str,
        seen: Option<u64>,
        claim: &Claim,
        lease_ms: u64,
        fresh_epoch: u64,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Renews `held`, the lease as this member last wrote it, publishing
    /// `published` when given. `Ok(None)` when the lease is no longer ours.
    fn renew(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Marks `held` released, publishing `published` when given. `Ok(false)` when
    /// the lease was no longer ours.
    fn release(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> impl Future<Output = Result<bool>> + Send;
}
