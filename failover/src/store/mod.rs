//! Where leases are kept: MongoDB, or an in-process store with the same semantics.
//!
//! Both back-ends implement [`LeaseStore`], the operations described in
//! [`crate::lease`]; the election is generic over it and never sees which one it
//! talks to.

mod memory;
mod mongo;

use std::future::Future;

pub use memory::MemoryStore;
pub(crate) use mongo::{
    driver_error, error_code, scrubbed_driver_error, MongoStore, DUPLICATE_KEY,
};

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
    /// `published` when given.
    fn renew(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> impl Future<Output = Result<Renewal>> + Send;

    /// Marks `held` released, publishing `published` when given (through an
    /// operator's step-down request). The released lease; `Ok(None)` when the
    /// lease was no longer ours.
    fn release(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// The names of every subsystem with a lease in the store, sorted.
    fn names(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// An operator's step-down request: writes the next version of the lease of
    /// `name` as a copy of the newest one with `step_down` set (same holder,
    /// token, epoch and `renewed_at`: it extends nothing and breaks nothing). The
    /// lease asked to step down (already asked: as it is); `Ok(None)` when
    /// nobody holds it (no lease, or released).
    fn request_step_down(&self, name: &str) -> impl Future<Output = Result<Option<Lease>>> + Send;
}

/// What became of a renewal.
#[derive(Debug, Clone)]
pub(crate) enum Renewal {
    /// The renewal is the newest version: the lease is extended from the send.
    Renewed(Lease),
    /// The renewal did not land, because an operator asked this holder to step
    /// down: the newest version is still this member instance's lease (a copy with
    /// `step_down` set), not extended.
    StepDown(Lease),
    /// Another member holds the lease now.
    Lost,
}
