//! The lease operations as MongoDB commands: `find`, `findAndModify` with upsert,
//! `delete` and `createIndexes` — ordinary CRUD that a standalone mongod, a replica
//! set, a sharded cluster (through mongos), FerretDB and the test server all
//! support. Writes use majority write concern and reads majority read concern and
//! the primary, so a lease survives the failover of the database itself.
//!
//! # One document per version
//!
//! Every write of a lease — take-over, renewal, release — *inserts* the next
//! version: a document `_id: {lease: <name>, v: <version>}`. The insert is an
//! upsert of that `_id` filtered on `version` not existing, so of all writers of
//! one version exactly one succeeds and the others get a duplicate key (11000).
//! That is the only atomicity the protocol asks of the database: the uniqueness of
//! `_id`, which every MongoDB-compatible server enforces. (FerretDB 1.x, for one,
//! applies the filter of a conditional update without a transaction, so a
//! compare-and-set on another field can have several winners; an insert cannot.)
//!
//! The current lease is the document with the highest version. After a write the
//! writer reads the highest version back: if it is not its own, it lost (a writer
//! paused long enough can insert a version that was since garbage-collected; the
//! read-back refuses it). The master deletes versions more than
//! [`KEEP_VERSIONS`] behind its own now and then.

use bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, CollectionOptions, ReadConcern, ReadPreference, ReturnDocument,
    SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Collection, Database};

use super::{take_over_epoch, Claim, Created, LeaseStore, Renewal};
use crate::error::{Error, Result};
use crate::lease::{rules::MAX_EPOCH, Lease, Published};
use crate::options::{
    client_options_secrets, redact_uri, scrub, scrub_secrets, uri_secrets, Backend, Options,
};

/// MongoDB's duplicate-key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// How many versions of a lease are kept behind the current one.
pub(crate) const KEEP_VERSIONS: u64 = 16;

/// How long a clock document may go unstamped before the holder's garbage
/// collection deletes it: an hour (standbys stamp theirs every minute).
pub(crate) const CLOCK_KEEP_MS: i64 = 60 * 60 * 1000;

/// The order that puts a lease's newest version first (see [`crate::lease`]).
fn newest_first() -> Document {
    doc! { "epoch": -1, "_id.v": -1 }
}

/// Whether `below`, the version right under a write, is version `v` of epoch
/// `epoch`: the version the write was based on.
fn follows(below: Option<&Document>, name: &str, v: u64, epoch: u64) -> bool {
    below.is_some_and(|d| {
        d.get_document("_id").ok() == Some(&slot(name, v)) && epoch_of(d) == Some(epoch)
    })
}

/// The epoch of a stored version, if it has a readable one.
fn epoch_of(doc: &Document) -> Option<u64> {
    match doc.get("epoch") {
        Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
        Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
        Some(Bson::Double(d)) if *d >= 0.0 && d.fract() == 0.0 && *d < 9.0e18 => Some(*d as u64),
        _ => None,
    }
}

/// The `_id` of version `v` of lease `name`.
fn slot(name: &str, v: u64) -> Document {
    doc! { "lease": name, "v": v.min(i64::MAX as u64) as i64 }
}

pub(crate) struct MongoStore {
    db: Database,
    leases: Collection<Document>,
    /// The secrets of the connection string or client options, kept only to scrub
    /// them out of driver messages.
    secrets: Vec<String>,
}

impl MongoStore {
    /// Builds the client from the options. Parses the connection string but does
    /// not connect: the driver connects on the first command.
    pub async fn connect(options: &Options, member_id: &str) -> Result<MongoStore> {
        let Backend::Mongo {
            connect_string,
            client_options,
            client,
        } = &options.backend
        else {
            unreachable!("MongoStore::connect is only called for the MongoDB back-end")
        };
        let mut secrets = Vec::new();
        let client = match (client, client_options) {
            (Some(client), _) => client.clone(),
            (None, Some(co)) => {
                secrets = client_options_secrets(co);
                Client::with_options((**co).clone())
                    .map_err(|e| scrubbed_driver_error("create client", &e, &secrets))?
            }
            (None, None) => {
                let uri = Options::effective_connect_string(connect_string);
                secrets = uri_secrets(&uri);
                let invalid = |e: mongodb::error::Error| Error::InvalidUri {
                    uri: redact_uri(&uri),
                    reason: scrub(&e.to_string(), &uri),
                };
                mongodb::options::ConnectionString::parse(&uri).map_err(invalid)?;
                let mut co = ClientOptions::parse(&uri).await.map_err(invalid)?;
                if co.app_name.is_none() {
                    co.app_name = Some(format!("failover:{member_id}"));
                }
                Client::with_options(co).map_err(|e| driver_error("create client", &e, &uri))?
            }
        };
        let db_name = options
            .database
            .clone()
            .or_else(|| client.default_database().map(|d| d.name().to_owned()))
            .unwrap_or_else(|| "test".to_owned());
        let db = client.database(&db_name);
        let leases = db.collection_with_options(
            &options.collection,
            CollectionOptions::builder()
                .write_concern(WriteConcern::majority())
                .read_concern(ReadConcern::majority())
                // Never a secondary's stale copy, whatever the client's default.
                .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                .build(),
        );
        Ok(MongoStore {
            db,
            leases,
            secrets,
        })
    }

    /// The database the leases are kept in (the durable queue keeps its
    /// collections beside them).
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The secrets to scrub out of driver messages.
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Creates the index that finds a lease's newest version (idempotent). Without
    /// it everything still works, by a scan of the small lease collection.
    async fn ensure_index(&self) {
        let index = mongodb::IndexModel::builder()
            .keys(doc! { "_id.lease": 1, "epoch": -1, "_id.v": -1 })
            .build();
        if let Err(e) = self.leases.create_index(index).await {
            let e = scrubbed_driver_error("create the lease index", &e, &self.secrets);
            tracing::warn!(target: "failover", error = %e, "cannot create the lease index; reading leases by a scan");
        }
    }

    /// The newest version of lease `name`, unparsed: the highest epoch, and of
    /// that epoch the highest version. A version of a lower epoch written after a
    /// newer epoch's (a deposed master's late renewal, a stale take-over) never
    /// leads, whatever its version number.
    pub async fn raw(&self, name: &str) -> Result<Option<Document>> {
        self.leases
            .find_one(doc! { "_id.lease": name })
            .sort(newest_first())
            .await
            .map_err(|e| scrubbed_driver_error("read lease", &e, &self.secrets))
    }

    /// The two newest versions of lease `name`, unparsed, newest first.
    async fn newest_two(&self, name: &str) -> Result<Vec<Document>> {
        let mut cursor = self
            .leases
            .find(doc! { "_id.lease": name })
            .sort(newest_first())
            .limit(2)
            .await
            .map_err(|e| scrubbed_driver_error("read lease", &e, &self.secrets))?;
        let mut docs = Vec::with_capacity(2);
        while cursor
            .advance()
            .await
            .map_err(|e| scrubbed_driver_error("read lease", &e, &self.secrets))?
        {
            let doc = cursor
                .deserialize_current()
                .map_err(|e| scrubbed_driver_error("read lease", &e, &self.secrets))?;
            docs.push(doc);
        }
        Ok(docs)
    }

    /// Deletes version `v` of lease `name` that this member instance wrote but
    /// that must not count (the lease was deleted under the write), so that no
    /// member takes it for a live lease.
    async fn withdraw(
        &self,
        name: &str,
        v: u64,
        token: Option<i64>,
        operation: &'static str,
    ) -> Result<()> {
        tracing::info!(target: "failover", name, v,
            "the lease was deleted under this write; withdrawing it");
        self.leases
            .delete_one(doc! { "_id": slot(name, v), "token": token })
            .await
            .map(drop)
            .map_err(|e| scrubbed_driver_error(operation, &e, &self.secrets))
    }

    /// The document at version `v` of lease `name`, unparsed.
    async fn at(&self, name: &str, v: u64) -> Result<Option<Document>> {
        self.leases
            .find_one(doc! { "_id": slot(name, v) })
            .await
            .map_err(|e| scrubbed_driver_error("read lease", &e, &self.secrets))
    }

    /// Inserts version `v` of lease `name` (`update` applied to the new document),
    /// unless another writer has that version. A version taken by a document of an
    /// epoch below `based_on`, the epoch of the lease this write follows, is a stale
    /// writer's late insert (after the lease was deleted, or into a slot freed by
    /// garbage collection): it is deleted, and the slot tried again. `Ok(None)` when
    /// the slot is another writer's.
    async fn insert_version(
        &self,
        operation: &'static str,
        name: &str,
        v: u64,
        update: Document,
        based_on: u64,
    ) -> Result<Option<Document>> {
        for _ in 0..2 {
            let written = self
                .leases
                .find_one_and_update(
                    doc! { "_id": slot(name, v), "version": { "$exists": false } },
                    update.clone(),
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match written {
                Ok(Some(doc)) => return Ok(Some(doc)),
                Ok(None) => return Ok(None),
                Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {}
                Err(e) => return Err(scrubbed_driver_error(operation, &e, &self.secrets)),
            }
            let occupant = self.at(name, v).await?;
            let stale = occupant
                .as_ref()
                .and_then(epoch_of)
                .filter(|&epoch| epoch < based_on);
            let Some(stale) = stale else {
                return Ok(None);
            };
            // Documents are never changed in place, so the filter on the epoch
            // names exactly the stale document, on any server.
            self.leases
                .delete_one(doc! { "_id": slot(name, v), "epoch": stale as i64 })
                .await
                .map_err(|e| scrubbed_driver_error(operation, &e, &self.secrets))?;
            tracing::debug!(target: "failover", name, v, stale, based_on,
                "deleted a stale lease version of a lower epoch");
        }
        Ok(None)
    }

    /// Inserts version `v` of lease `name` with `fields` (and `renewed_at` stamped
    /// by the server), then checks that it is the newest version.
    async fn write(
        &self,
        operation: &'static str,
        name: &str,
        v: u64,
        mut fields: Document,
        based_on: u64,
    ) -> Result<Written> {
        let fields_token = match fields.get("token") {
            Some(Bson::Int64(t)) => Some(*t),
            _ => None,
        };
        fields.insert("version", v.min(i64::MAX as u64) as i64);
        let update = doc! { "$set": fields, "$currentDate": { "renewed_at": true } };
        let doc = self
            .insert_version(operation, name, v, update, based_on)
            .await?;
        // The two newest versions, read once: the newest decides whether this
        // write counts, the one below it whether it follows what it was based on.
        let mut top = self.newest_two(name).await?.into_iter();
        let newest = top.next();
        let below = top.next();
        // An operator's step-down request is a copy of this member instance's
        // newest version with `step_down` set: the lease is still ours, not lost.
        let step_down = newest.as_ref().filter(|d| {
            fields_token.is_some()
                && d.get_i64("token").ok() == fields_token
                && d.get_bool("step_down") == Ok(true)
        });
        let Some(doc) = doc else {
            if let Some(newest) = step_down {
                return Ok(Written::StepDown(Box::new(Lease::from_document(
                    name, newest,
                )?)));
            }
            // Somebody has version `v`: us, if an earlier write of ours was applied
            // but its answer lost (or the wait for it given up), and nobody wrote
            // after it. Its stamp is older than this attempt, so it renews nothing.
            let ours = newest.as_ref().is_some_and(|d| {
                d.get_document("_id").ok() == Some(&slot(name, v))
                    && fields_token.is_some()
                    && d.get_i64("token").ok() == fields_token
            });
            return Ok(if ours {
                Written::AlreadyOurs
            } else {
                Written::Lost
            });
        };
        let lease = Lease::from_document(name, &doc)?;
        // A server that ignored part of the filter must not make two masters.
        if lease.token != fields_token {
            return Ok(Written::Lost);
        }
        // A version garbage-collected long ago can be inserted again by a writer
        // that was paused: only the newest version counts.
        match newest {
            Some(ref newest) if newest.get_document("_id").ok() == Some(&slot(name, v)) => {}
            // An operator copied this very write with `step_down` set before the
            // read-back: ours still, but counted as not extended.
            _ => {
                return Ok(match step_down {
                    Some(newest) => {
                        Written::StepDown(Box::new(Lease::from_document(name, newest)?))
                    }
                    None => Written::Lost,
                })
            }
        }
        Ok(Written::Won(Box::new(lease), below))
    }

    /// Deletes what the newest version `v` of lease `name`, `lease`, makes
    /// history: versions more than [`KEEP_VERSIONS`] behind it, versions of lower
    /// epochs (late inserts of deposed writers), and clock documents of this
    /// subsystem that no member stamped for [`CLOCK_KEEP_MS`] (members that are
    /// gone; a live one stamps its document again when it next needs it). A
    /// failure only leaves them for the next time.
    async fn collect_garbage(&self, name: &str, v: u64, lease: &Lease) {
        let epoch = lease.epoch.min(i64::MAX as u64) as i64;
        // Never above its own epoch: a collection that lands late, after the
        // lease was deleted and written anew, must not touch the newer versions.
        let old = doc! { "_id.lease": name, "epoch": { "$lte": epoch }, "$or": [
            { "_id.v": { "$lt": v.saturating_sub(KEEP_VERSIONS) as i64 } },
            { "epoch": { "$lt": epoch } },
        ] };
        if let Err(e) = self.leases.delete_many(old).await {
            let e = scrubbed_driver_error("delete old lease versions", &e, &self.secrets);
            tracing::debug!(target: "failover", error = %e, "old lease versions stay");
        }
        let stamped_before =
            bson::DateTime::from_millis(lease.renewed_at_ms.saturating_sub(CLOCK_KEEP_MS));
        let idle_clocks = doc! { "_id.clock": name, "now": { "$lt": stamped_before } };
        if let Err(e) = self.leases.delete_many(idle_clocks).await {
            let e = scrubbed_driver_error("delete idle clock documents", &e, &self.secrets);
            tracing::debug!(target: "failover", error = %e, "idle clock documents stay");
        }
    }

    /// Writes the next version of a lease this member holds, stepping over a
    /// version an earlier write of its own already took, and (`through_step_down`)
    /// over an operator's step-down copy of its lease.
    async fn write_next(
        &self,
        operation: &'static str,
        name: &str,
        held: &Lease,
        fields: Document,
        through_step_down: bool,
    ) -> Result<Renewal> {
        let mut v = held.version + 1;
        for _ in 0..4 {
            match self
                .write(operation, name, v, fields.clone(), held.epoch)
                .await?
            {
                Written::Won(lease, below) => {
                    // The version right below must be this holder's previous one
                    // (its own earlier write, or an operator's copy of it): if the
                    // lease was deleted while this write was in flight, the write
                    // may have landed on an empty lease after another member took
                    // over and renewed, and must not count. It is withdrawn.
                    if !follows(below.as_ref(), name, v - 1, held.epoch) {
                        self.withdraw(name, v, lease.token, "withdraw a lease write")
                            .await?;
                        return Ok(Renewal::Lost);
                    }
                    // Only the holder's own writes collect (a take-over still
                    // checks its predecessor after its write).
                    if v % KEEP_VERSIONS == 0 {
                        self.collect_garbage(name, v, &lease).await;
                    }
                    return Ok(Renewal::Renewed(*lease));
                }
                Written::Lost => return Ok(Renewal::Lost),
                Written::AlreadyOurs => v += 1,
                Written::StepDown(newest) if through_step_down => v = newest.version + 1,
                Written::StepDown(newest) => return Ok(Renewal::StepDown(*newest)),
            }
        }
        Ok(Renewal::Lost)
    }
}

/// What became of a version write.
enum Written {
    /// This write is the version, and it is the newest; the version right
    /// below it, if any.
    Won(Box<Lease>, Option<Document>),
    /// Another writer has this version or a newer one.
    Lost,
    /// An earlier write of this member instance has this version, the newest.
    AlreadyOurs,
    /// The newest version is this member instance's lease, copied by an operator
    /// with `step_down` set (this write did not count).
    StepDown(Box<Lease>),
}

impl LeaseStore for MongoStore {
    async fn stamp(&self, name: &str, claim: &Claim) -> Result<i64> {
        // The clock document lives in the lease collection, so the node that
        // applies this write is the node that stamps the lease.
        let doc = self
            .leases
            .find_one_and_update(
                doc! { "_id": { "clock": name, "member": &claim.member_id } },
                doc! { "$currentDate": { "now": true } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| scrubbed_driver_error("read the lease clock", &e, &self.secrets))?;
        match doc.as_ref().map(|d| d.get("now")) {
            Some(Some(Bson::DateTime(now))) => Ok(now.timestamp_millis()),
            other => Err(Error::Database {
                operation: "read the lease clock",
                message: format!(
                    "the server answered `$currentDate` with {other:?} instead of a date"
                ),
                code: None,
                source: None,
            }),
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Lease>> {
        let doc = self.raw(name).await?;
        doc.map(|d| Lease::from_document(name, &d)).transpose()
    }

    async fn acquire(
        &self,
        name: &str,
        seen: &Lease,
        claim: &Claim,
        lease_ms: u64,
    ) -> Result<Option<Lease>> {
        // The next version after the one seen carries the next epoch.
        let Some(current) = self.read(name).await? else {
            return Ok(None);
        };
        if current.version != seen.version || current.epoch != seen.epoch {
            return Ok(None);
        }
        let epoch = take_over_epoch(name, current.epoch)?;
        let mut fields = taken(claim, lease_ms, epoch);
        if let Some(p) = current.published() {
            fields.extend(publish(p));
        }
        let v = seen.version + 1;
        let (lease, below) = match self
            .write("take lease", name, v, fields, current.epoch)
            .await?
        {
            Written::Won(lease, below) => (*lease, below),
            // An earlier attempt of ours took it (its answer lost): its time is
            // unknown, so it does not count; the election judges it like
            // anybody's lease.
            Written::Lost | Written::AlreadyOurs | Written::StepDown(_) => return Ok(None),
        };
        // The version judged free must still be there, right under the one just
        // written: if the lease was deleted meanwhile, the slot may have been freed by the
        // deletion of a renewal that the holder made after the version seen, and
        // that holder may still act. Then this version is withdrawn (the next
        // reader finds the lease missing and writes a vacancy).
        if !follows(below.as_ref(), name, seen.version, current.epoch) {
            self.withdraw(name, v, Some(claim.token), "withdraw a take-over")
                .await?;
            return Ok(None);
        }
        Ok(Some(lease))
    }

    async fn create(
        &self,
        name: &str,
        claim: &Claim,
        lease_ms: u64,
        fresh_epoch: u64,
        published: Option<Published>,
    ) -> Result<Created> {
        // Nobody may take a lease that is missing at once: it may have been deleted
        // under a master that still acts. A vacancy, an unheld lease stamped now,
        // is taken by the ordinary expiry rule, a whole lease after this write,
        // which comes after the deletion, which came after the old master's last
        // renewal: its deadline has passed by then. Its epoch, from the clock, is
        // above every epoch counted before, so the old master's late renewals lose.
        let mut fields = doc! {
            "holder": Bson::Null, "token": Bson::Null, "lease_ms": lease_ms.min(i64::MAX as u64) as i64,
            "epoch": fresh_epoch.min(MAX_EPOCH) as i64, "released": false, "step_down": false,
            "vacated_by": &claim.member_id,
        };
        fields.insert("version", 1_i64);
        if let Some(p) = published {
            fields.extend(publish(p));
        }
        let update = doc! { "$set": fields, "$currentDate": { "renewed_at": true } };
        // A vacancy is based on no epoch: it replaces nothing.
        if self
            .insert_version("create lease", name, 1, update, 0)
            .await?
            .is_none()
        {
            return Ok(Created::Raced);
        }
        // Whatever leads now (the vacancy, or a lease written meanwhile) is followed.
        Ok(match self.read(name).await? {
            Some(lease) => Created::Vacancy(lease),
            None => Created::Raced,
        })
    }

    async fn renew(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> Result<Renewal> {
        let mut fields = taken(claim, held.lease_ms, held.epoch);
        // A step-down request this member has seen stays visible until the release.
        fields.insert("step_down", held.step_down);
        if let Some(successor) = held.successor.filter(|_| held.step_down) {
            fields.insert("successor", successor);
        }
        if let Some(p) = published.or_else(|| held.published()) {
            fields.extend(publish(p));
        }
        self.write_next("renew lease", name, held, fields, false)
            .await
    }

    async fn release(
        &self,
        name: &str,
        claim: &Claim,
        held: &Lease,
        published: Option<Published>,
    ) -> Result<Option<Lease>> {
        let mut fields = taken(claim, held.lease_ms, held.epoch);
        fields.insert("released", true);
        // The standby that asked for the hand-over goes first.
        if let Some(successor) = held.successor.filter(|_| held.step_down) {
            fields.insert("successor", successor);
        }
        if let Some(p) = published.or_else(|| held.published()) {
            fields.extend(publish(p));
        }
        Ok(
            match self
                .write_next("release lease", name, held, fields, true)
                .await?
            {
                Renewal::Renewed(lease) => Some(lease),
                Renewal::StepDown(_) | Renewal::Lost => None,
            },
        )
    }

    async fn names(&self) -> Result<Vec<String>> {
        // Lease versions only: clock documents have no `_id.lease`.
        let values = self
            .leases
            .distinct("_id.lease", doc! { "_id.lease": { "$exists": true } })
            .await
            .map_err(|e| scrubbed_driver_error("list leases", &e, &self.secrets))?;
        let mut names: Vec<String> = values
            .into_iter()
            .filter_map(|v| match v {
                Bson::String(s) => Some(s),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn request_step_down(
        &self,
        name: &str,
        successor: Option<&Claim>,
    ) -> Result<Option<Lease>> {
        // Renewals race with the copy for the next version: try again on a
        // duplicate key, with the newer version.
        for _ in 0..8 {
            let Some(raw) = self.raw(name).await? else {
                return Ok(None);
            };
            let lease = Lease::from_document(name, &raw)?;
            if lease.released || lease.token.is_none() {
                // Released, or a vacancy: nobody holds it.
                return Ok(None);
            }
            if lease.step_down {
                return Ok(Some(lease));
            }
            let v = lease.version + 1;
            let mut fields = raw;
            fields.remove("_id");
            fields.insert("version", v.min(i64::MAX as u64) as i64);
            fields.insert("step_down", true);
            if let Some(successor) = successor {
                fields.insert("successor", successor.token);
            }
            // No `$currentDate`: the copy keeps the holder's `renewed_at`.
            let written = self
                .insert_version(
                    "request a step-down",
                    name,
                    v,
                    doc! { "$set": fields },
                    lease.epoch,
                )
                .await?;
            if let Some(doc) = written {
                return Lease::from_document(name, &doc).map(Some);
            }
        }
        Err(Error::Database {
            operation: "request a step-down",
            message: "the lease changed at every attempt; run the request again".to_owned(),
            code: None,
            source: None,
        })
    }
}

impl MongoStore {
    /// Fails unless the deployment answers a `ping` within `timeout`.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.db.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => {
                self.ensure_index().await;
                Ok(())
            }
            Ok(Err(e)) => Err(scrubbed_driver_error("connect", &e, &self.secrets)),
            Err(_) => Err(Error::Timeout {
                operation: "connect (raise `connect_timeout` if the database is slow to reach)",
                after: timeout,
            }),
        }
    }

    /// Replaces `malformed`, the newest version of lease `name` that `failover`
    /// cannot read, with `fields` at the next version, following a version of
    /// epoch `based_on` (what can be read of its epoch); the malformed version is
    /// then deleted, since a value of another type in `epoch` may sort above every
    /// number. `false` when another writer changed the lease meanwhile.
    pub async fn repair(
        &self,
        name: &str,
        malformed: &Document,
        v: u64,
        mut fields: Document,
        based_on: u64,
    ) -> Result<bool> {
        fields.insert("version", v.min(i64::MAX as u64) as i64);
        let update = doc! { "$set": fields, "$currentDate": { "renewed_at": true } };
        if self
            .insert_version("repair lease", name, v, update, based_on)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        if let Ok(id) = malformed.get_document("_id") {
            self.leases
                .delete_one(doc! { "_id": id.clone() })
                .await
                .map_err(|e| scrubbed_driver_error("repair lease", &e, &self.secrets))?;
        }
        let newest = self.raw(name).await?;
        Ok(newest.and_then(|d| d.get_document("_id").ok().cloned()) == Some(slot(name, v)))
    }
}

/// The fields that publish the master's progress.
fn publish(p: Published) -> Document {
    doc! {
        "sync": p.id,
        "run": p.run.map_or(Bson::Null, |r| Bson::Document(r.to_document())),
    }
}

/// The fields of a lease held by `claim` with `epoch`.
fn taken(claim: &Claim, lease_ms: u64, epoch: u64) -> Document {
    doc! {
        "holder": &claim.member_id, "token": claim.token, "lease_ms": lease_ms as i64,
        "epoch": epoch.min(MAX_EPOCH) as i64, "released": false, "step_down": false,
    }
}

/// The server's error code of a driver error, if it has one.
pub(crate) fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// A driver error as ours, with the secrets of `uri` scrubbed from the message and
/// the driver's error kept as the source.
pub(crate) fn driver_error(operation: &'static str, e: &mongodb::error::Error, uri: &str) -> Error {
    scrubbed_driver_error(operation, e, &uri_secrets(uri))
}

/// A driver error as ours, with `secrets` scrubbed from the message and the
/// driver's error kept as the source.
pub(crate) fn scrubbed_driver_error(
    operation: &'static str,
    e: &mongodb::error::Error,
    secrets: &[String],
) -> Error {
    // The error kind's text, without the labels and the raw server reply that the
    // driver's full `Display` appends.
    let message = match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} (code {}): {}", c.code_name, c.code, c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!("write error (code {}): {}", w.code, w.message)
        }
        kind => kind.to_string(),
    };
    let message = scrub_secrets(&message, secrets);
    Error::Database {
        operation,
        message: message.clone(),
        code: error_code(e),
        source: Some(crate::error::DriverError::new(e.clone(), message)),
    }
}
