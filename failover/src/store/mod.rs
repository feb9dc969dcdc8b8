//! Where leases are kept: MongoDB, or an in-process store with the same semantics.
//!
//! Both back-ends implement the same five operations, described in
//! [`crate::lease`]; the election never sees which one it talks to.

mod memory;
mod mongo;

pub(crate) use memory::MemoryConn;
pub use memory::MemoryStore;
pub(crate) use mongo::{driver_error, error_code, MongoStore, DUPLICATE_KEY};

use bson::Bson;

use crate::error::Result;
use crate::lease::{ClockSample, Lease};

/// Who is writing: the member id (for people) and the random token of this member
/// instance (what renewals are conditional on).
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub member_id: String,
    pub token: i64,
}

/// A member's connection to its back-end.
pub(crate) enum Store {
    Mongo(MongoStore),
    Memory(MemoryConn),
}

impl Store {
    /// Reads the server's clock.
    pub async fn clock(&self) -> Result<ClockSample> {
        match self {
            Store::Mongo(s) => s.clock().await,
            Store::Memory(s) => s.clock().await,
        }
    }

    /// Reads the lease of subsystem `name`, if there is one.
    pub async fn read(&self, name: &str) -> Result<Option<Lease>> {
        match self {
            Store::Mongo(s) => s.read(name).await,
            Store::Memory(s) => s.read(name).await,
        }
    }

    /// Takes the lease: creates it when `seen` is `None`, else replaces the lease
    /// whose version is `seen`. `Ok(None)` when another member won the race.
    pub async fn acquire(
        &self,
        name: &str,
        seen: Option<u64>,
        claim: &Claim,
        lease_ms: u64,
    ) -> Result<Option<Lease>> {
        match self {
            Store::Mongo(s) => s.acquire(name, seen, claim, lease_ms).await,
            Store::Memory(s) => s.acquire(name, seen, claim, lease_ms).await,
        }
    }

    /// Renews the lease held with `epoch`, publishing `sync` when given.
    /// `Ok(None)` when the lease is no longer ours.
    pub async fn renew(
        &self,
        name: &str,
        claim: &Claim,
        epoch: u64,
        sync: Option<Bson>,
    ) -> Result<Option<Lease>> {
        match self {
            Store::Mongo(s) => s.renew(name, claim, epoch, sync).await,
            Store::Memory(s) => s.renew(name, claim, epoch, sync).await,
        }
    }

    /// Marks the lease held with `epoch` released, publishing `sync` when given.
    /// `Ok(false)` when the lease was no longer ours.
    pub async fn release(
        &self,
        name: &str,
        claim: &Claim,
        epoch: u64,
        sync: Option<Bson>,
    ) -> Result<bool> {
        match self {
            Store::Mongo(s) => s.release(name, claim, epoch, sync).await,
            Store::Memory(s) => s.release(name, claim, epoch, sync).await,
        }
    }
}
