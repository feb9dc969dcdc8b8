//! Rewrites a lease document that `failover` cannot read, keeping its epoch.

use bson::{doc, Bson};

use crate::error::{Error, Result};
use crate::lease::{rules, Lease};
use crate::options::{validate_name, Backend, Options};
use crate::store::{Claim, LeaseStore, MongoStore};

/// Repairs the lease document of subsystem `name`: when members report
/// [`Error::MalformedLease`] (somebody edited the document by hand, or another
/// program wrote it), this replaces it with a *vacancy*: an unheld lease whose
/// epoch is above both the epoch found in it (if any number can be read there) and
/// the lease clock's time in milliseconds, so fencing tokens keep growing. Members
/// take the repaired lease over once it expires, a whole lease after the repair
/// (the longer of `options`' lease and the one readable in the document), since
/// the member that held it before the document was spoiled may still act until
/// its deadline. Returns the repaired lease's epoch; a document that is already
/// well-formed is left alone and its epoch returned.
///
/// Deleting every version of the lease instead is safe too (see
/// [`crate::lease`]), but loses the epoch and what the master published.
///
/// # Errors
/// [`Error::InvalidName`]/[`Error::InvalidOption`] for bad input,
/// [`Error::Database`]/[`Error::Timeout`] when the database fails, and
/// [`Error::InvalidOption`] for the in-memory store (whose documents cannot be
/// malformed).
pub async fn repair_lease(options: &Options, name: &str) -> Result<u64> {
    validate_name(name)?;
    options.validate()?;
    if matches!(options.backend, Backend::Memory(_)) {
        return Err(Error::invalid(
            "backend",
            "the in-memory store's leases cannot be malformed; repair a MongoDB lease",
        ));
    }
    let member_id = format!("repair:{}", options.effective_member_id());
    let store = MongoStore::connect(options, &member_id).await?;
    store.ping(options.connect_timeout).await?;
    let Some(raw) = store.raw(name).await? else {
        return Err(Error::invalid(
            "name",
            format!("there is no lease document for subsystem {name:?} to repair"),
        ));
    };
    if let Ok(lease) = Lease::from_document(name, &raw) {
        return Ok(lease.epoch);
    }
    let number = |field: &str| match raw.get(field) {
        Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
        Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
        Some(Bson::Double(d)) if *d >= 0.0 && *d < 9.0e18 => Some(*d as u64),
        Some(Bson::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let claim = Claim {
        member_id,
        token: 0,
    };
    let now_ms = store.stamp(name, &claim).await?;
    let readable = number("epoch").filter(|&e| e <= rules::MAX_EPOCH);
    let epoch = readable
        .map_or(0, rules::next_epoch)
        .max(rules::fresh_epoch(now_ms));
    if epoch > rules::MAX_EPOCH {
        return Err(Error::invalid(
            "name",
            format!(
                "the lease of {name:?} holds the largest epoch a lease can store; no repair can \
                 raise it: reset the lease and every collection fenced with its epochs together"
            ),
        ));
    }
    // A vacancy, not a released lease: the member that held the lease before its
    // document was spoiled may still act until its deadline, so nobody takes the
    // repaired lease before a whole lease (the longer of this member's and the
    // readable one) after this write.
    let lease_ms = u64::try_from(options.effective_lease().as_millis())
        .unwrap_or(u64::MAX)
        .max(number("lease_ms").unwrap_or(0))
        .min(24 * 60 * 60 * 1000);
    let repaired = doc! {
        "holder": Bson::Null, "token": Bson::Null,
        "epoch": epoch as i64,
        "lease_ms": lease_ms as i64, "released": false, "step_down": false,
        "vacated_by": &claim.member_id,
    };
    let v = raw
        .get_document("_id")
        .ok()
        .and_then(|id| {
            id.get_i64("v")
                .ok()
                .or_else(|| id.get_i32("v").ok().map(i64::from))
        })
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    if !store
        .repair(name, &raw, v + 1, repaired, readable.unwrap_or(0))
        .await?
    {
        return Err(Error::invalid(
            "name",
            format!(
                "the lease of {name:?} changed while it was being repaired; run the repair again"
            ),
        ));
    }
    tracing::info!(target: "failover", name, epoch, "lease document repaired");
    Ok(epoch)
}
