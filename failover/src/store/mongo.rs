//! The lease operations as MongoDB commands: `hello`, `find`, and conditional
//! `findAndModify`/`update` — ordinary CRUD that a standalone mongod, a replica set
//! and the test server all support. Writes use majority write concern and reads
//! majority read concern, so a lease survives the failover of the database itself.

use bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, CollectionOptions, ReadConcern, ReturnDocument, WriteConcern,
};
use mongodb::{Client, Collection, Database};
use tokio::time::Instant;

use super::Claim;
use crate::error::{Error, Result};
use crate::lease::{ClockSample, Lease};
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
                .build(),
        );
        Ok(MongoStore { db, leases, uri })
    }

    pub async fn clock(&self) -> Result<ClockSample> {
        let sent = Instant::now();
        let reply = self
            .db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| driver_error("read server clock", &e, &self.uri))?;
        let received = Instant::now();
        let Ok(local_time) = reply.get_datetime("localTime") else {
            return Err(Error::Database {
                operation: "read server clock",
                message: "the server's hello reply has no `localTime`".to_owned(),
                code: None,
            });
        };
        let half = (received - sent) / 2;
        Ok(ClockSample {
            server_ms: local_time.timestamp_millis(),
            local: sent + half,
            // localTime has millisecond precision.
            error: half + std::time::Duration::from_millis(1),
        })
    }

    pub async fn read(&self, name: &str) -> Result<Option<Lease>> {
        let doc = self
            .leases
            .find_one(doc! { "_id": name })
            .await
            .map_err(|e| driver_error("read lease", &e, &self.uri))?;
        doc.map(|d| Lease::from_document(name, &d)).transpose()
    }

    pub async fn acquire(
        &self,
        name: &str,
        seen: Option<u64>,
        claim: &Claim,
        lease_ms: u64,
    ) -> Result<Option<Lease>> {
        let filter = match seen {
            Some(version) => doc! { "_id": name, "version": version as i64 },
            None => doc! { "_id": name, "version": { "$exists": false } },
        };
        let update = doc! {
            "$set": { "holder": &claim.member_id, "token": claim.token, "lease_ms": lease_ms as i64, "released": false },
            "$inc": { "epoch": 1_i64, "version": 1_i64 },
            "$currentDate": { "renewed_at": true },
        };
        let result = self
            .leases
            .find_one_and_update(filter, update)
            .upsert(seen.is_none())
            .return_document(ReturnDocument::After)
            .await;
        match result {
            Ok(doc) => self.ours(name, doc, claim),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Ok(None),
            Err(e) => Err(driver_error("take lease", &e, &self.uri)),
        }
    }

    pub async fn renew(
        &self,
        name: &str,
        claim: &Claim,
        epoch: u64,
        sync: Option<Bson>,
    ) -> Result<Option<Lease>> {
        let mut update = doc! {
            "$inc": { "version": 1_i64 },
            "$currentDate": { "renewed_at": true },
        };
        if let Some(sync) = sync {
            update.insert("$set", doc! { "sync": sync });
        }
        let doc = self
            .leases
            .find_one_and_update(mine(name, claim, epoch), update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| driver_error("renew lease", &e, &self.uri))?;
        self.ours(name, doc, claim)
    }

    pub async fn release(
        &self,
        name: &str,
        claim: &Claim,
        epoch: u64,
        sync: Option<Bson>,
    ) -> Result<bool> {
        let mut set = doc! { "released": true };
        if let Some(sync) = sync {
            set.insert("sync", sync);
        }
        let update = doc! { "$set": set, "$inc": { "version": 1_i64 }, "$currentDate": { "renewed_at": true } };
        let result = self
            .leases
            .update_one(mine(name, claim, epoch), update)
            .await
            .map_err(|e| driver_error("release lease", &e, &self.uri))?;
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

/// A driver error as ours, with the password of `uri` scrubbed from the message.
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
    Error::Database {
        operation,
        message: scrub(&message, uri),
        code: error_code(e),
    }
}
