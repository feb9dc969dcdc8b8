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
use crate::lease::{rules, Lease, Published};

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

    /// Takes the lease over: writes the version after `seen`, the newest lease
    /// this member read and judged free, with the next epoch. `Ok(None)` when
    /// another member won the race (or the lease changed since it was read).
    ///
    /// # Errors
    /// [`Error::MalformedLease`](crate::Error::MalformedLease) when `seen`'s epoch
    /// has no successor, besides the database's errors.
    fn acquire(
        &self,
        name: &str,
        seen: &Lease,
        claim: &Claim,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Creates the lease of subsystem `name`, which this member found missing,
    /// with epoch `fresh_epoch` (see [`Created`]), carrying `published`, the last
    /// progress this member saw a master publish (what a deletion erased, as far
    /// as this member knows it).
    fn create(
        &self,
        name: &str,
        claim: &Claim,
        lease_ms: u64,
        fresh_epoch: u64,
        published: Option<Published>,
    ) -> impl Future<Output = Result<Created>> + Send;

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

    /// A step-down request: writes the next version of the lease of `name` as a
    /// copy of the newest one with `step_down` set (same holder, token, epoch and
    /// `renewed_at`: it extends nothing and breaks nothing), and `successor` set
    /// when a standby asks for the lease to run tasks only it holds (`None`: an
    /// operator's request). The lease asked to step down (already asked: as it
    /// is); `Ok(None)` when nobody holds it (no lease, released, or a vacancy).
    fn request_step_down(
        &self,
        name: &str,
        successor: Option<&Claim>,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;
}

/// What became of the creation of a missing lease.
#[derive(Debug, Clone)]
pub(crate) enum Created {
    /// This member holds the new lease (a store whose leases cannot be deleted:
    /// a missing lease was never held).
    Held(Lease),
    /// The store wrote a vacancy, an unheld lease that is taken over like any
    /// other once it expires (a lease found missing may have been deleted under
    /// a master that still acts): the lease that leads now.
    Vacancy(Lease),
    /// Another member wrote first; read again.
    Raced,
}

/// The epoch that a take-over of a lease of epoch `epoch` writes.
///
/// # Errors
/// [`Error::MalformedLease`](crate::Error::MalformedLease) when `epoch` has no
/// successor that the database can store (only a hand-edited document gets there):
/// never the same epoch twice.
pub(crate) fn take_over_epoch(name: &str, epoch: u64) -> Result<u64> {
    match rules::next_epoch(epoch) {
        next if next <= rules::MAX_EPOCH => Ok(next),
        _ => Err(crate::error::Error::MalformedLease {
            name: name.to_owned(),
            reason: format!(
                "field `epoch` is {epoch}, the largest epoch a lease can store, so no member can take \
                 it over with a higher one; a hand-edited document got there: reset the epochs of the \
                 lease and of every collection fenced with them together"
            ),
        }),
    }
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
