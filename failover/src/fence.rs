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
//! Fencing needs a server that applies a conditional update atomically, as
//! MongoDB does. FerretDB 1.x does not (it reads, then writes the document back by
//! `_id`), so there every fenced write fails with [`Error::Unsupported`] rather
//! than fence in name only. (The lease itself does not need that: see
//! [`crate::lease`].)
//!
//! ```no_run
//! # async fn run(db: mongodb::Database, ctx: &failover::WorkContext) -> failover::Result<()> {
//! use failover::bson::doc;
//! use failover::fence::FencedCollection;
//!
//! let accounts = FencedCollection::new(db.collection("accounts"));
//! let updated = accounts
//!     .update_one(ctx.epoch(), doc! { "_id": "acct-7" }, doc! { "$inc": { "balance": -10 } })
//!     .await?; // Err(StaleEpoch) if a newer master has written acct-7
//! if updated.is_none() {
//!     // No such account (or it was deleted).
//! }
//! # Ok(()) }
//! ```
//!
//! # The rules
//!
//! * **A write** (update, upsert, delete) by epoch `e` applies to a document whose
//!   fence field holds an epoch up to `e`, and sets the field to `e`. A document
//!   with a higher epoch refuses it with [`Error::StaleEpoch`]; two writers of the
//!   same epoch may both write.
//! * **Documents without the fence field** (written before fencing was used, or by
//!   other code) are accepted by any epoch, and get the field on their first fenced
//!   write. From then on they are fenced like the others.
//! * **No document matches**: [`update_one`](FencedCollection::update_one) and
//!   [`delete_one`](FencedCollection::delete_one) return `Ok(None)`; that is not an
//!   error, and not a database failure.
//! * **Deletes leave tombstones.** A fenced delete does not remove the document: it
//!   replaces it by `{_id, _fence: e, _deleted: true}` (see [`TOMBSTONE_FIELD`]),
//!   so that the deleting epoch stays on record. A stale master's later upsert of
//!   the same `_id` meets the tombstone and is refused with [`Error::StaleEpoch`]
//!   instead of bringing the document back; an upsert by the deleting epoch or a
//!   newer one creates it anew, as an insert would. A delete by `_id` of a
//!   document that does not exist leaves a tombstone too, for the same reason.
//! * **Reading**: tombstones are documents of the collection. Read through
//!   [`find_one`](FencedCollection::find_one), or add
//!   [`live_filter`](FencedCollection::live_filter) to your own queries
//!   (`find`, `count_documents`, ...), to see live documents only. Tombstones are
//!   small; remove the ones of epochs older than `e` (with
//!   `delete_many({"_deleted": true, "_fence": {"$lt": e}})`) once no member that
//!   held an older epoch can still be running.
//! * **Upserts name the `_id`**: an upsert's filter must give the document's `_id`
//!   (`{"_id": value, ...}`), since only the unique `_id` stops a refused upsert
//!   from inserting a second document.
//! * An update must consist of update operators (`$set`, `$inc`, ...), and may not
//!   touch the fence field or `_deleted` itself.
//! * **Cancellation**: dropping a write's future leaves the write applied or not,
//!   as with any MongoDB command; the document is never left half-written.

use bson::{doc, Bson, Document};
use mongodb::options::{ReturnDocument, UpdateModifications};
use mongodb::Collection;

use crate::error::{Error, Result};
use crate::store::{driver_error, error_code, DUPLICATE_KEY};

/// The field that holds the epoch of the last write, unless [`FencedCollection::field`]
/// names another.
pub const DEFAULT_FENCE_FIELD: &str = "_fence";

/// The field that marks a tombstone, the document a fenced delete leaves:
/// `{_id, <fence field>: epoch, _deleted: true}`.
pub const TOMBSTONE_FIELD: &str = "_deleted";

/// How often a write is tried again when a concurrent write changed the document
/// between its attempt and the check of why it did not apply.
const ATTEMPTS: usize = 5;

/// A collection whose writes are fenced by the writer's epoch; see the
/// [module documentation](self) for the rules.
#[derive(Debug, Clone)]
pub struct FencedCollection {
    collection: Collection<Document>,
    field: String,
    /// Whether the server applies conditional writes atomically (checked once).
    atomic: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

/// Why a conditional write matched nothing.
enum Diagnosis {
    /// A newer epoch wrote (or deleted) the document.
    Stale(Option<u64>),
    /// No live document matches the filter.
    Missing,
    /// The document changed in between: try again.
    Retry,
}

impl FencedCollection {
    /// Fences writes to `collection` with the field [`DEFAULT_FENCE_FIELD`].
    #[must_use]
    pub fn new(collection: Collection<Document>) -> Self {
        FencedCollection {
            collection,
            field: DEFAULT_FENCE_FIELD.to_owned(),
            atomic: Default::default(),
        }
    }

    /// Keeps the epoch in `field` instead: a top-level field name, not `_id` or
    /// `_deleted`, without `.` and not starting with `$` (checked by every write).
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// The collection itself, for reads and for writes that need no fence.
    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    /// `filter`, restricted to live documents: tombstones left by
    /// [`delete_one`](Self::delete_one) do not match it. Use it in your own queries
    /// on [`collection`](Self::collection).
    #[must_use]
    pub fn live_filter(&self, filter: Document) -> Document {
        doc! { "$and": [filter, { TOMBSTONE_FIELD: { "$ne": true } }] }
    }

    /// The live document that matches `filter`, if any (tombstones are skipped).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the query fails.
    pub async fn find_one(&self, filter: Document) -> Result<Option<Document>> {
        self.collection
            .find_one(self.live_filter(filter))
            .await
            .map_err(|e| driver_error("fenced read", &e, ""))
    }

    /// Updates the one live document matched by `filter` with `update` (update
    /// operators such as `{"$set": …}`), if no write with a higher epoch reached it,
    /// and records `epoch` in it. Returns the document as it is after the update, or
    /// `Ok(None)` when no live document matches.
    ///
    /// # Errors
    ///
    /// * [`Error::StaleEpoch`] when a newer epoch has written or deleted the
    ///   document: this member is no longer master.
    /// * [`Error::InvalidArgument`] when `update` is not made of update operators,
    ///   or touches the fence field or `_deleted`; when `epoch` is above
    ///   `i64::MAX`; when the [`field`](Self::field) is no plain field name.
    /// * [`Error::FenceConflict`] when concurrent writers kept changing the
    ///   document (try again), or when its fence field holds no epoch.
    /// * [`Error::Unsupported`] on a server that cannot fence (FerretDB 1.x).
    /// * [`Error::Database`] when the database fails.
    pub async fn update_one(
        &self,
        epoch: u64,
        filter: Document,
        update: Document,
    ) -> Result<Option<Document>> {
        let epoch_value = self.epoch_value(epoch)?;
        let update = self.fenced_update(update, &epoch_value)?;
        self.require_atomic_writes().await?;
        for _ in 0..ATTEMPTS {
            let result = self
                .collection
                .find_one_and_update(
                    self.fenced_filter(filter.clone(), true, &epoch_value),
                    UpdateModifications::Document(update.clone()),
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(|e| driver_error("fenced update", &e, ""))?;
            if let Some(doc) = result {
                return Ok(Some(doc));
            }
            match self.diagnose(epoch, &filter).await? {
                Diagnosis::Stale(current) => return Err(stale(epoch, current)),
                Diagnosis::Missing => return Ok(None),
                Diagnosis::Retry => {}
            }
        }
        Err(busy("fenced update"))
    }

    /// Like [`update_one`](Self::update_one), but inserts the document when none
    /// matches, as MongoDB's upsert does (with the filter's equality fields and
    /// `$setOnInsert`). `filter` must name the document's `_id`. A tombstone of the
    /// same or an older epoch is replaced by the new document; one of a newer epoch
    /// refuses the write. Returns the document as it is after the write.
    ///
    /// Two writers of the same epoch may race to insert the same document: the one
    /// that loses applies its update to the winner's document, as if it had come
    /// second.
    ///
    /// # Errors
    ///
    /// * [`Error::StaleEpoch`] when a newer epoch has written or deleted the
    ///   document.
    /// * [`Error::InvalidArgument`] when `filter` does not name the `_id`, or
    ///   `update` is not made of update operators or touches the fence field or
    ///   `_deleted`; when `epoch` is above `i64::MAX`; when the
    ///   [`field`](Self::field) is no plain field name.
    /// * [`Error::FenceConflict`] when a live document with this `_id` exists but
    ///   does not match the rest of `filter`, when concurrent writers kept changing
    ///   the document (try again), or when its fence field holds no epoch.
    /// * [`Error::Unsupported`] on a server that cannot fence (FerretDB 1.x).
    /// * [`Error::Database`] when the database fails.
    pub async fn upsert_one(
        &self,
        epoch: u64,
        filter: Document,
        update: Document,
    ) -> Result<Document> {
        let epoch_value = self.epoch_value(epoch)?;
        let Some(id) = id_of(&filter) else {
            return Err(Error::argument(
                "filter",
                "a fenced upsert's filter must name the document's `_id`, like \
                 `{\"_id\": \"acct-7\"}`: a filter that is not unique would let a refused \
                 upsert insert a second document",
            ));
        };
        let fenced_update = self.fenced_update(update.clone(), &epoch_value)?;
        self.require_atomic_writes().await?;
        for _ in 0..ATTEMPTS {
            let result = self
                .collection
                .find_one_and_update(
                    self.fenced_filter(filter.clone(), true, &epoch_value),
                    UpdateModifications::Document(fenced_update.clone()),
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match result {
                Ok(Some(doc)) => return Ok(doc),
                Ok(None) => {}
                Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {}
                Err(e) => return Err(driver_error("fenced upsert", &e, "")),
            }
            // A document with this `_id` exists and did not match: a newer epoch's
            // document or tombstone, a tombstone to replace, a same-epoch writer's
            // insert that won the race, or a document the rest of the filter excludes.
            let Some(existing) = self.by_id(&id).await? else {
                continue; // removed in between
            };
            let current = self.epoch_of(&existing)?;
            if current.is_some_and(|c| c > epoch) {
                return Err(stale(epoch, current));
            }
            if existing.get_bool(TOMBSTONE_FIELD) == Ok(true) {
                let revived = self
                    .collection
                    .find_one_and_update(
                        self.fenced_filter(
                            doc! { "_id": id.clone(), TOMBSTONE_FIELD: true },
                            false,
                            &epoch_value,
                        ),
                        UpdateModifications::Document(self.revival(&filter, &update, &epoch_value)),
                    )
                    .return_document(ReturnDocument::After)
                    .await
                    .map_err(|e| driver_error("fenced upsert", &e, ""))?;
                match revived {
                    Some(doc) => return Ok(doc),
                    None => continue, // the tombstone changed in between
                }
            }
            let matches = self
                .collection
                .find_one(self.live_filter(filter.clone()))
                .await
                .map_err(|e| driver_error("fenced upsert", &e, ""))?;
            if matches.is_none() {
                return Err(Error::FenceConflict {
                    operation: "fenced upsert",
                    reason: format!(
                        "a document with _id {id} exists but does not match the rest of the \
                         filter, so the upsert can neither update it nor insert another"
                    ),
                });
            }
            // A writer of the same (or an older) epoch inserted it first: again.
        }
        Err(busy("fenced upsert"))
    }

    /// Deletes the one live document matched by `filter`, if no write with a higher
    /// epoch reached it, by replacing it with a tombstone that records `epoch`.
    /// Returns the document as it was, or `Ok(None)` when no live document matches.
    ///
    /// When `filter` names an `_id` and no document has it, a tombstone is written
    /// all the same, so that a stale master cannot create the document afterwards.
    ///
    /// # Errors
    ///
    /// * [`Error::StaleEpoch`] when a newer epoch has written or deleted the
    ///   document.
    /// * [`Error::InvalidArgument`] when `epoch` is above `i64::MAX`, or the
    ///   [`field`](Self::field) is no plain field name.
    /// * [`Error::FenceConflict`] when concurrent writers kept changing the
    ///   document (try again), or when its fence field holds no epoch.
    /// * [`Error::Unsupported`] on a server that cannot fence (FerretDB 1.x).
    /// * [`Error::Database`] when the database fails.
    pub async fn delete_one(&self, epoch: u64, filter: Document) -> Result<Option<Document>> {
        let epoch_value = self.epoch_value(epoch)?;
        let tombstone = doc! { &self.field: epoch_value.clone(), TOMBSTONE_FIELD: true };
        self.require_atomic_writes().await?;
        for _ in 0..ATTEMPTS {
            let deleted = self
                .collection
                .find_one_and_replace(
                    self.fenced_filter(filter.clone(), true, &epoch_value),
                    tombstone.clone(),
                )
                .return_document(ReturnDocument::Before)
                .await
                .map_err(|e| driver_error("fenced delete", &e, ""))?;
            if let Some(doc) = deleted {
                return Ok(Some(doc));
            }
            match self.diagnose(epoch, &filter).await? {
                Diagnosis::Stale(current) => return Err(stale(epoch, current)),
                Diagnosis::Retry => continue,
                Diagnosis::Missing => {}
            }
            let Some(id) = id_of(&filter) else {
                return Ok(None);
            };
            // No live document: record the delete in a tombstone of this `_id` (a new
            // one, or an older one raised to this epoch), unless a live document
            // that the rest of the filter excludes holds the `_id`.
            let result = self
                .collection
                .update_one(
                    self.fenced_filter(
                        doc! { "_id": id.clone(), TOMBSTONE_FIELD: true },
                        false,
                        &epoch_value,
                    ),
                    doc! { "$set": { &self.field: epoch_value.clone(), TOMBSTONE_FIELD: true } },
                )
                .upsert(true)
                .await;
            match result {
                Ok(_) => return Ok(None),
                Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => {
                    // Another document holds the `_id`: a live one that the rest of
                    // the filter excludes (left alone), or a newer tombstone.
                    match self.by_id(&id).await? {
                        Some(doc) if doc.get_bool(TOMBSTONE_FIELD) != Ok(true) => return Ok(None),
                        Some(doc) => {
                            let current = self.epoch_of(&doc)?;
                            if current.is_some_and(|c| c > epoch) {
                                return Err(stale(epoch, current));
                            }
                        }
                        None => {}
                    }
                }
                Err(e) => return Err(driver_error("fenced delete", &e, "")),
            }
        }
        Err(busy("fenced delete"))
    }

    /// `epoch` as MongoDB stores it, once the fence field is known to be usable.
    fn epoch_value(&self, epoch: u64) -> Result<Bson> {
        let field = self.field.as_str();
        if field.is_empty()
            || field.starts_with('$')
            || field.contains('.')
            || field == "_id"
            || field == TOMBSTONE_FIELD
        {
            return Err(Error::argument(
                "field",
                format!(
                    "{field:?} cannot hold the fence: give a top-level field name that is \
                     not `_id` or `{TOMBSTONE_FIELD}`, has no `.` and does not start with `$`, \
                     like \"{DEFAULT_FENCE_FIELD}\""
                ),
            ));
        }
        epoch_bson(epoch)
    }

    /// `filter`, for documents whose fence is at most `epoch` or unset, and that
    /// are not tombstones if `live`. One flat `$and`, whose equality clauses an
    /// upsert copies into the document it inserts.
    fn fenced_filter(&self, filter: Document, live: bool, epoch: &Bson) -> Document {
        // The caller's conditions stay at the top level (an upsert copies equality
        // conditions from there into the inserted document, on every server); the
        // fence's conditions join them under `$and`.
        let mut fenced = filter;
        let mut clauses = match fenced.remove("$and") {
            Some(Bson::Array(existing)) => existing,
            Some(other) => vec![other],
            None => Vec::new(),
        };
        if live {
            clauses.push(Bson::Document(doc! { TOMBSTONE_FIELD: { "$ne": true } }));
        }
        clauses.push(Bson::Document(doc! { "$or": [
            { &self.field: { "$lte": epoch.clone() } },
            { &self.field: { "$exists": false } },
        ] }));
        fenced.insert("$and", clauses);
        fenced
    }

    /// Checks `update` and adds the fence to its `$set`.
    fn fenced_update(&self, mut update: Document, epoch: &Bson) -> Result<Document> {
        self.check_update(&update)?;
        match update.get_mut("$set") {
            Some(Bson::Document(set)) => {
                set.insert(&self.field, epoch.clone());
            }
            Some(_) => {
                return Err(Error::argument(
                    "update",
                    "`$set` must be a document, like `{\"$set\": {\"owner\": \"b\"}}`",
                ))
            }
            None => {
                update.insert("$set", doc! { &self.field: epoch.clone() });
            }
        }
        Ok(update)
    }

    /// An update document of operators that leaves the fence and `_deleted` alone.
    fn check_update(&self, update: &Document) -> Result<()> {
        if update.is_empty() || update.keys().any(|k| !k.starts_with('$')) {
            return Err(Error::argument(
                "update",
                "a fenced update consists of update operators, like \
                 `{\"$set\": {\"owner\": \"b\"}, \"$inc\": {\"n\": 1}}`; a replacement \
                 document cannot carry the fence",
            ));
        }
        let reserved = |path: &str| {
            [self.field.as_str(), TOMBSTONE_FIELD]
                .iter()
                .any(|f| path == *f || path.starts_with(&format!("{f}.")))
        };
        for (operator, fields) in update {
            let Bson::Document(fields) = fields else {
                continue;
            };
            let renamed = operator == "$rename";
            for (path, value) in fields {
                let target = value.as_str().filter(|_| renamed);
                if reserved(path) || target.is_some_and(reserved) {
                    return Err(Error::argument(
                        "update",
                        format!(
                            "`{operator}` may not change `{path}`: `{}` and `{TOMBSTONE_FIELD}` \
                             belong to the fence",
                            self.field
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The update that turns a tombstone into the document an upsert inserts: the
    /// filter's equality fields, `$setOnInsert` and the update, the fence, and no
    /// `_deleted`.
    fn revival(&self, filter: &Document, update: &Document, epoch: &Bson) -> Document {
        let touched: Vec<&str> = update
            .iter()
            .filter(|(op, _)| *op != "$setOnInsert")
            .filter_map(|(_, fields)| fields.as_document())
            .flat_map(|fields| fields.keys().map(String::as_str))
            .collect();
        let mut set = Document::new();
        for (key, value) in filter {
            let operator =
                matches!(value, Bson::Document(d) if d.keys().any(|k| k.starts_with('$')));
            if key != "_id"
                && !key.starts_with('$')
                && !operator
                && !touched.contains(&key.as_str())
            {
                set.insert(key, value.clone());
            }
        }
        let mut revival = Document::new();
        for (operator, fields) in update {
            match (operator.as_str(), fields) {
                ("$setOnInsert" | "$set", Bson::Document(fields)) => set.extend(fields.clone()),
                ("$unset", Bson::Document(_)) => {}
                _ => {
                    revival.insert(operator, fields.clone());
                }
            }
        }
        set.insert(&self.field, epoch.clone());
        let mut unset = match update.get("$unset") {
            Some(Bson::Document(unset)) => unset.clone(),
            _ => Document::new(),
        };
        unset.insert(TOMBSTONE_FIELD, "");
        revival.insert("$set", set);
        revival.insert("$unset", unset);
        revival
    }

    /// Why a fenced update or delete by `epoch` matched nothing.
    async fn diagnose(&self, epoch: u64, filter: &Document) -> Result<Diagnosis> {
        let live = self
            .collection
            .find_one(self.live_filter(filter.clone()))
            .await
            .map_err(|e| driver_error("fenced write", &e, ""))?;
        if let Some(doc) = live {
            let current = self.epoch_of(&doc)?;
            return Ok(match current {
                Some(c) if c > epoch => Diagnosis::Stale(current),
                // It matches now: it changed in between.
                _ => Diagnosis::Retry,
            });
        }
        // A tombstone of a newer epoch: the document was deleted by a newer master.
        if let Some(id) = id_of(filter) {
            if let Some(doc) = self.by_id(&id).await? {
                let current = self.epoch_of(&doc)?;
                if doc.get_bool(TOMBSTONE_FIELD) == Ok(true) && current.is_some_and(|c| c > epoch) {
                    return Ok(Diagnosis::Stale(current));
                }
            }
        }
        Ok(Diagnosis::Missing)
    }

    async fn by_id(&self, id: &Bson) -> Result<Option<Document>> {
        self.collection
            .find_one(doc! { "_id": id.clone() })
            .await
            .map_err(|e| driver_error("fenced write", &e, ""))
    }

    /// The epoch recorded in `doc`, `None` for a document without the fence field.
    fn epoch_of(&self, doc: &Document) -> Result<Option<u64>> {
        let epoch = match doc.get(&self.field) {
            None => return Ok(None),
            Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
            Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
            Some(Bson::Double(x)) if x.fract() == 0.0 && *x >= 0.0 && *x < 9.0e18 => {
                Some(*x as u64)
            }
            Some(_) => None,
        };
        match epoch {
            Some(epoch) => Ok(Some(epoch)),
            None => Err(Error::FenceConflict {
                operation: "fenced write",
                reason: format!(
                    "document {} holds {} in `{}`, which is not an epoch; only fenced \
                     writes may set that field",
                    doc.get("_id")
                        .map_or_else(|| "?".to_owned(), ToString::to_string),
                    doc.get(&self.field)
                        .map_or_else(String::new, ToString::to_string),
                    self.field
                ),
            }),
        }
    }
}

/// The `_id` a filter names with an equality (`{"_id": value, ...}`).
fn id_of(filter: &Document) -> Option<Bson> {
    match filter.get("_id")? {
        Bson::Document(d) if d.keys().any(|k| k.starts_with('$')) => None,
        id => Some(id.clone()),
    }
}

fn epoch_bson(epoch: u64) -> Result<Bson> {
    i64::try_from(epoch)
        .map(Bson::Int64)
        .map_err(|_| Error::argument("epoch", "is larger than MongoDB's 64-bit signed integers"))
}

fn stale(epoch: u64, current: Option<u64>) -> Error {
    tracing::warn!(target: "failover", epoch, ?current, "fenced write rejected: a newer master wrote first");
    Error::StaleEpoch { epoch, current }
}

impl FencedCollection {
    /// Refuses servers that apply conditional writes without atomicity: there a
    /// stale master's write could land after a newer master's.
    async fn require_atomic_writes(&self) -> Result<()> {
        let atomic = self
            .atomic
            .get_or_try_init(|| async {
                let db = self
                    .collection
                    .client()
                    .database(&self.collection.namespace().db);
                let info = db
                    .run_command(doc! { "buildInfo": 1 })
                    .await
                    .map_err(|e| driver_error("fenced write", &e, ""))?;
                Ok::<bool, Error>(!info.contains_key("ferretdbVersion"))
            })
            .await?;
        if *atomic {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: "fenced writes",
                reason: "FerretDB 1.x applies a conditional update as a read and then a write \
                         by _id, without a transaction, so a stale master's write can land after \
                         a newer master's; fence on MongoDB (standalone, replica set or sharded)"
                    .to_owned(),
            })
        }
    }
}

fn busy(operation: &'static str) -> Error {
    Error::FenceConflict {
        operation,
        reason: format!(
            "concurrent writers changed the document {ATTEMPTS} times while this write was \
             tried; try again"
        ),
    }
}
