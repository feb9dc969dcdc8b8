//! The in-process store: the lease protocol of [`crate::lease`] on a mutex-guarded
//! map, with fault injection for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::{take_over_epoch, Claim, Created, LeaseStore, Renewal};
use crate::error::{Error, Result};
use crate::event::lock;
use crate::lease::{Lease, Published};

/// Leases kept in this process: the original's `nodb`, but with the real election
/// among all members given the same store (clones share it).
///
/// Besides running several members in one process (examples, tests), it can cut
/// a member off or slow it down, to test how an application behaves in a failover.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
/// use failover::{Member, MemoryStore, Options};
///
/// let store = MemoryStore::new();
/// let a = Member::start("billing", Options::new().in_memory(&store).member_id("a")).await?;
/// a.wait_for_master().await?;
/// assert_eq!(store.holder("billing"), Some(("a".to_owned(), 1)));
/// a.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    leases: Mutex<HashMap<String, Lease>>,
    faults: Mutex<HashMap<String, Fault>>,
    /// The "server clock" starts here.
    origin: OnceLock<Instant>,
}

#[derive(Clone, Copy, Default)]
struct Fault {
    unreachable: bool,
    delay: Duration,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Cuts the member with this id off the store (`true`) or reconnects it: while
    /// cut off, every operation of that member fails like a lost connection.
    /// With the `test-util` feature.
    #[cfg(feature = "test-util")]
    pub fn set_unreachable(&self, member_id: &str, unreachable: bool) {
        lock(&self.inner.faults)
            .entry(member_id.to_owned())
            .or_default()
            .unreachable = unreachable;
    }

    /// Delays every answer to the member with this id by `delay` (the operation
    /// itself takes effect at once, as a command whose reply is slow).
    /// With the `test-util` feature.
    #[cfg(feature = "test-util")]
    pub fn set_delay(&self, member_id: &str, delay: Duration) {
        lock(&self.inner.faults)
            .entry(member_id.to_owned())
            .or_default()
            .delay = delay;
    }

    /// The member id and epoch of the lease of subsystem `name`, unless it is
    /// released or was never taken.
    pub fn holder(&self, name: &str) -> Option<(String, u64)> {
        let leases = lock(&self.inner.leases);
        let lease = leases.get(name).filter(|l| !l.released)?;
        Some((lease.holder.clone().unwrap_or_default(), lease.epoch))
    }

    fn now_ms(&self) -> i64 {
        let origin = *self.inner.origin.get_or_init(Instant::now);
        // Start the clock at a realistic date so documents look like MongoDB's.
        1_700_000_000_000 + Instant::now().saturating_duration_since(origin).as_millis() as i64
    }

    pub(crate) fn connect(&self, member_id: &str) -> MemoryConn {
        MemoryConn {
            store: self.clone(),
            member_id: member_id.to_owned(),
        }
    }
}

/// One member's connection to a [`MemoryStore`].
pub(crate) struct MemoryConn {
    store: MemoryStore,
    member_id: String,
}

impl MemoryConn {
    /// Applies the member's faults: fails when cut off; otherwise runs `op` and
    /// delays its answer.
    async fn run<T>(
        &self,
        operation: &'static str,
        op: impl FnOnce(&mut HashMap<String, Lease>, i64) -> Result<T>,
    ) -> Result<T> {
        let fault = lock(&self.store.inner.faults)
            .get(&self.member_id)
            .copied()
            .unwrap_or_default();
        if fault.unreachable {
            return Err(Error::Database {
                operation,
                message: format!(
                    "in-memory store: member {:?} is cut off (injected fault)",
                    self.member_id
                ),
                code: None,
                source: None,
            });
        }
        let now = self.store.now_ms();
        let result = op(&mut lock(&self.store.inner.leases), now);
        if !fault.delay.is_zero() {
            tokio::time::sleep(fault.delay).await;
        }
        result
    }
}

impl LeaseStore for MemoryConn {
    async fn stamp(&self, _name: &str, _claim: &Claim) -> Result<i64> {
        self.run("read the lease clock", |_, now| Ok(now)).await
    }

    async fn read(&self, name: &str) -> Result<Option<Lease>> {
        self.run("read lease", |leases, _| Ok(leases.get(name).cloned()))
            .await
    }

    async fn acquire(
        &self,
        name: &str,
        seen: &Lease,
        claim: &Claim,
        lease_ms: u64,
    ) -> Result<Option<Lease>> {
        let (seen_version, seen_epoch) = (seen.version, seen.epoch);
        self.run("take lease", |leases, now| {
            let Some(current) = leases.get(name) else {
                return Ok(None);
            };
            if (current.version, current.epoch) != (seen_version, seen_epoch) {
                return Ok(None);
            }
            let lease = Lease {
                holder: Some(claim.member_id.clone()),
                token: Some(claim.token),
                epoch: take_over_epoch(name, current.epoch)?,
                version: current.version + 1,
                lease_ms,
                renewed_at_ms: now,
                released: false,
                sync: current.sync.clone(),
                run: current.run.clone(),
                step_down: false,
                successor: None,
            };
            leases.insert(name.to_owned(), lease.clone());
            Ok(Some(lease))
        })
        .await
    }

    async fn create(
        &self,
        name: &str,
        claim: &Claim,
        lease_ms: u64,
        _fresh_epoch: u64,
        published: Option<Published>,
    ) -> Result<Created> {
        // Its leases live as long as the process and cannot be deleted, so a
        // missing lease was never held: it is taken at once, with epoch 1.
        self.run("take lease", |leases, now| {
            if leases.contains_key(name) {
                return Ok(Created::Raced);
            }
            let lease = Lease {
                holder: Some(claim.member_id.clone()),
                token: Some(claim.token),
                epoch: 1,
                version: 1,
                lease_ms,
                renewed_at_ms: now,
                released: false,
                sync: published.as_ref().map(|p| p.id.clone()),
                run: published.and_then(|p| p.run),
                step_down: false,
                successor: None,
            };
            leases.insert(name.to_owned(), lease.clone());
            Ok(Created::Held(lease))
        })
        .await
    }

    async fn renew(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> Result<Renewal> {
        let epoch = held.epoch;
        let known = held.step_down;
        self.run("renew lease", |leases, now| {
            Ok(match mine(leases, name, claim, epoch) {
                None => Renewal::Lost,
                // An operator's request that this member has not seen yet took the
                // version this renewal would have written (as on MongoDB).
                Some(lease) if lease.step_down && !known => Renewal::StepDown(lease.clone()),
                Some(lease) => {
                    lease.version += 1;
                    lease.renewed_at_ms = now;
                    if let Some(p) = published {
                        lease.sync = Some(p.id);
                        lease.run = p.run;
                    }
                    Renewal::Renewed(lease.clone())
                }
            })
        })
        .await
    }

    async fn release(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> Result<Option<Lease>> {
        let epoch = held.epoch;
        self.run("release lease", |leases, now| {
            Ok(mine(leases, name, claim, epoch).map(|lease| {
                lease.version += 1;
                lease.renewed_at_ms = now;
                lease.released = true;
                lease.step_down = false;
                if let Some(p) = published {
                    lease.sync = Some(p.id);
                    lease.run = p.run;
                }
                lease.clone()
            }))
        })
        .await
    }

    async fn names(&self) -> Result<Vec<String>> {
        self.run("list leases", |leases, _| {
            let mut names: Vec<String> = leases.keys().cloned().collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn request_step_down(
        &self,
        name: &str,
        successor: Option<&Claim>,
    ) -> Result<Option<Lease>> {
        let successor = successor.map(|c| c.token);
        self.run("request a step-down", |leases, _| {
            Ok(leases.get_mut(name).filter(|l| !l.released).map(|lease| {
                if !lease.step_down {
                    // The next version, a copy: the stamp stays, nothing is extended.
                    lease.version += 1;
                    lease.step_down = true;
                    lease.successor = successor;
                }
                lease.clone()
            }))
        })
        .await
    }
}

/// The lease, while this member instance holds `epoch` and has not released it.
fn mine<'a>(
    leases: &'a mut HashMap<String, Lease>,
    name: &str,
    claim: &Claim,
    epoch: u64,
) -> Option<&'a mut Lease> {
    leases
        .get_mut(name)
        .filter(|l| l.token == Some(claim.token) && l.epoch == epoch && !l.released)
}
