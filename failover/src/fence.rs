//! Fenced writes: the application's own MongoDB writes, made conditional on the
//! master's epoch (Kleppmann's fencing token).
//!
//! A master that was paused (a long GC, a stopped process, a full disk) can wake
//! up after another member has taken over and still believe, for an instant,
//! that it leads. No lease can stop that instant; the storage can. Every write
//! through [`FencedCollection`] carries the writer's epoch in a field of the
//! document (`_fence` by default), and is applied only if the document's field is
//! not higher. Once a newer master has written a document, the old master's
//! writes to it fail with [`Error::StaleEpoch`].
//!
//! ```no_run
//! # async fn run(db: mongodb::Database, ctx: &failover::WorkContext) -> failover::Result<()> {
//! use failover::bson::doc;
//! use failover::fence::FencedCollection;
//!
//! let accounts = FencedCollection::new(db.collection("accounts"));
//! accounts
//!     .update_one(ctx.epoch(), doc! { "_id": "acct-7" }, doc! { "$inc": { "balance": -10 } })
//!     .await?; // Err(StaleEpoch) if a newer master has written acct-7
//! # Ok(()) }
//! ```

use bson::{doc, Bson, Document};
use mongodb::options::{ReturnDocument, UpdateModifications};
use mongodb::Collection;

use crate::error::{Error, Result};
use crate::store::{driver_error, error_code, DUPLICATE_KEY};

/// The field that holds the epoch of the last write, unless [`FencedCollection::field`]
/// names another.
pub const DEFAULT_FENCE_FIELD: &str = "_fence";

/// A collection whose writes are fenced by the writer's epoch.
#[derive(Debug, Clone)]
pub struct FencedCollection {
    collection: Collection<Document>,
    field: String,
}

impl FencedCollection {
    /// Fences writes to `collection` with the field [`DEFAULT_FENCE_FIELD`].
    pub fn new(collection: Collection<Document>) -> Self {
        FencedCollection {
            collection,
            field: DEFAULT_FENCE_FIELD.to_owned(),
        }
    }

    /// Keeps the epoch in `field` instead.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Updates the one document matched by `filter` with `update` (an update
    /// document such as `{"$set": …}`), if no write with a higher epoch reached it.
    /// Returns the document as it is after the update.
    ///
    /// Fails with [`Error::StaleEpoch`] when a newer epoch has written the document,
    /// and with [`Error::Database`] when no document matches.
    pub async fn update_one(
        &self,
        epoch: u64,
        filter: Document,
        update: Document,
    ) -> Result<Document> {
        self.write(epoch, filter, update, false).await
    }

    /// Like [`update_one`](Self::update_one), but inserts the document when none
    /// matches (the filter should name the `_id`).
    pub async fn upsert_one(
        &self,
        epoch: u64,
        filter: Document,
        update: Document,
    ) -> Result<Document> {
        self.write(epoch, filter, update, true).await
    }

    async fn write(
        &self,
        epoch: u64,
        filter: Document,
        mut update: Document,
        upsert: bool,
    ) -> Result<Document> {
        let epoch_value = Bson::Int64(i64::try_from(epoch).map_err(|_| {
            Error::invalid("epoch", "is larger than MongoDB's 64-bit signed integers")
        })?);
        let fenced = doc! {
            "$and": [
                filter.clone(),
                { "$or": [
                    { &self.field: { "$lte": epoch_value.clone() } },
                    { &self.field: { "$exists": false } },
                ] },
            ]
        };
        match update.get_mut("$set") {
            Some(Bson::Document(set)) => {
                set.insert(&self.field, epoch_value);
            }
            Some(_) => return Err(Error::invalid("update", "`$set` must be a document")),
            None => {
                update.insert("$set", doc! { &self.field: epoch_value });
            }
        }
        let result = self
            .collection
            .find_one_and_update(fenced, UpdateModifications::Document(update))
            .upsert(upsert)
            .return_document(ReturnDocument::After)
            .await;
        match result {
            Ok(Some(doc)) => Ok(doc),
            Ok(None) => Err(self.rejection(epoch, filter).await),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {
                Err(self.rejection(epoch, filter).await)
            }
            Err(e) => Err(driver_error("fenced write", &e, "")),
        }
    }

    /// Why a fenced write matched nothing: a newer epoch, or no document at all.
    async fn rejection(&self, epoch: u64, filter: Document) -> Error {
        match self.collection.find_one(filter).await {
            Ok(Some(doc)) => {
                let current = match doc.get(&self.field) {
                    Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
                    Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
                    _ => None,
                };
                tracing::warn!(target: "failover", epoch, ?current, "fenced write rejected: a newer master wrote first");
                Error::StaleEpoch { epoch, current }
            }
            Ok(None) => Error::Database {
                operation: "fenced write",
                message: "no document matches the filter".to_owned(),
                code: None,
            },
            Err(e) => driver_error("fenced write", &e, ""),
        }
    }
}
