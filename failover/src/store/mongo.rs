//! The lease operations as MongoDB commands: `hello`, `find`, and conditional
//! `findAndModify`/`update` — ordinary CRUD that a standalone mongod, a replica set
//! and the test server all support. Writes use majority write concern and reads
//! majority read concern, so a lease survives the failover of the database itself.

use bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, CollectionOptions, ReadConcern, ReadPreference, ReturnDocument,
    SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Collection, Database};

use super::{Claim, LeaseStore};
use crate::error::{Error, Result};
use crate::lease::{Lease, Published};
use crate::options::{redact_uri, scrub, Backend, Options};

/// MongoDB's duplicate-key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

pub(crate) struct MongoStore {
    db: Database,
    leases: Collection<Document>,
    /// The connection string, kept only to scrub its password out of driver messages.
    uri: String,
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
        let mut uri = String::new();
        let client = match (client, client_options) {
            (Some(client), _) => client.clone(),
            (None, Some(co)) => Client::with_options((**co).clone())
                .map_err(|e| driver_error("create client", &e, ""))?,
            (None, None) => {
                uri = Options::effective_connect_string(connect_string);
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
        Ok(MongoStore { db, leases, uri })
    }
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
            .map_err(|e| driver_error("read the lease clock", &e, &self.uri))?;
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
        let doc = self
            .leases
            .find_one(doc! { "_id": name })
            .await
            .map_err(|e| driver_error("read lease", &e, &self.uri))?;
        doc.map(|d| Lease::from_document(name, &d)).transpose()
    }

    async fn acquire(
        &self,
        name: &str,
        seen: Option<u64>,
        claim: &Claim,
        lease_ms: u64,
        fresh_epoch: u64,
    ) -> Result<Option<Lease>> {
        let set = doc! {
            "holder": &claim.member_id, "token": claim.token, "lease_ms": lease_ms as i64,
            "released": false, "step_down": false,
        };
        let result = match seen {
            Some(version) => {
                let update = doc! {
                    "$set": set,
                    "$inc": { "epoch": 1_i64, "version": 1_i64 },
                    "$currentDate": { "renewed_at": true },
                };
                self.leases
                    .find_one_and_update(doc! { "_id": name, "version": version as i64 }, update)
                    .return_document(ReturnDocument::After)
                    .await
            }
            None => {
                // A document created anew starts its epoch at the lease clock's
                // time, above any epoch of a deleted predecessor.
                let mut set = set;
                set.insert("epoch", fresh_epoch.min(i64::MAX as u64) as i64);
                set.insert("version", 1_i64);
                let update = doc! { "$set": set, "$currentDate": { "renewed_at": true } };
                self.leases
                    .find_one_and_update(
                        doc! { "_id": name, "version": { "$exists": false } },
                        update,
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .await
            }
        };
        match result {
            Ok(doc) => self.ours(name, doc, claim),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Ok(None),
            Err(e) => Err(driver_error("take lease", &e, &self.uri)),
        }
    }

    async fn renew(
        &self,
        name: &str,
        claim: &Claim,
        epoch: u64,
        published: Option<Published>,
    ) -> Result<Option<Lease>> {
        let mut update = doc! {
            "$inc": { "version": 1_i64 },
            "$currentDate": { "renewed_at": true },
        };
        if let Some(p) = published {
            update.insert("$set", publish(p));
        }
        let doc = self
            .leases
            .find_one_and_update(mine(name, claim, epoch), update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| driver_error("renew lease", &e, &self.uri))?;
        self.ours(name, doc, claim)
    }

    async fn release(
        &self,
        name: &str,
        claim: &Claim,
        epoch: u64,
        published: Option<Published>,
    ) -> Result<bool> {
        let mut set = doc! { "released": true, "step_down": false };
        if let Some(p) = published {
            set.extend(publish(p));
        }
        let update = doc! { "$set": set, "$inc": { "version": 1_i64 }, "$currentDate": { "renewed_at": true } };
        let result = self
            .leases
            .update_one(mine(name, claim, epoch), update)
            .await
            .map_err(|e| driver_error("release lease", &e, &self.uri))?;
        Ok(result.matched_count == 1)
    }
}

impl MongoStore {
    /// Fails unless the deployment answers a `ping` within `timeout`.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.db.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(driver_error("connect", &e, &self.uri)),
            Err(_) => Err(Error::Timeout {
                operation: "connect (raise `connect_timeout` if the database is slow to reach)",
                after: timeout,
            }),
        }
    }

    /// The lease document as stored, unparsed (for the repair).
    pub async fn raw(&self, name: &str) -> Result<Option<Document>> {
        self.leases
            .find_one(doc! { "_id": name })
            .await
            .map_err(|e| driver_error("read lease", &e, &self.uri))
    }

    /// Replaces `old` (matched field by field) with `new`; `false` if it changed.
    pub async fn replace_exact(&self, old: &Document, new: Document) -> Result<bool> {
        let result = self
            .leases
            .replace_one(old.clone(), new)
            .await
            .map_err(|e| driver_error("repair lease", &e, &self.uri))?;
        Ok(result.matched_count == 1)
    }

    /// Parses a returned document and checks that it names us (a server that
    /// ignored part of the filter must not make two masters).
    fn ours(&self, name: &str, doc: Option<Document>, claim: &Claim) -> Result<Option<Lease>> {
        let Some(doc) = doc else { return Ok(None) };
        let lease = Lease::from_document(name, &doc)?;
        Ok((lease.token == Some(claim.token)).then_some(lease))
    }
}

/// The fields that publish the master's progress.
fn publish(p: Published) -> Document {
    doc! {
        "sync": p.id,
        "run": p.run.map_or(Bson::Null, |r| Bson::Document(r.to_document())),
    }
}

/// The filter that matches the lease only while this member instance holds `epoch`.
fn mine(name: &str, claim: &Claim, epoch: u64) -> Document {
    doc! { "_id": name, "token": claim.token, "epoch": epoch as i64, "released": false }
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

/// A driver error as ours, with the password of `uri` scrubbed from the message and
/// the driver's error kept as the source.
pub(crate) fn driver_error(operation: &'static str, e: &mongodb::error::Error, uri: &str) -> Error {
    // The error kind's text, without the labels and the raw server reply that the
    // driver's full `Display` appends.
    let message = match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} (code {}): {}", c.code_name, c.code, c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!("write error (code {}): {}", w.code, w.message)
        }
        kind => kind.to_string(),
    };
    let message = scrub(&message, uri);
    Error::Database {
        operation,
        message: message.clone(),
        code: error_code(e),
        source: Some(crate::error::DriverError::new(e.clone(), message)),
    }
}
