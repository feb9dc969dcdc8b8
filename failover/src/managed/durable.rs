//! The durable queue: a managed subsystem's tasks kept in MongoDB instead of
//! every member's memory (issue 10: the original's "not yet").
//!
//! # What it guarantees
//!
//! * A task whose [`Queue::submit`] (or [`Managed::submit_work`](crate::Managed::submit_work))
//!   returned is stored with majority write concern: it survives the death of
//!   every member and of the producer.
//! * Tasks run one at a time on the master, in the order the database accepted
//!   them (a sequence number assigned by the insert itself, not by clocks), with
//!   the same lease check before every task, the same [`Work`] trait, hooks,
//!   [`WorkContext`](crate::WorkContext) and outcomes as the in-memory queue.
//! * The master records the last finished task with a write fenced by its epoch;
//!   a stale master's write matches nothing, is refused, and the stale master
//!   stops working. With [`Progress::EveryTask`] (the default) at most the one task
//!   in flight runs again after a crash or a database fault (a record that fails
//!   is retried, while the lease is held, before the next task starts); with [`Progress::Batched`] at most the
//!   tasks finished since the last record.
//! * The master holds only a bounded read-ahead batch ([`DurableQueue::read_ahead`])
//!   in memory, never the whole queue.
//! * Tasks that exhaust `max_attempts` (or return [`Outcome::Failed`](crate::Outcome::Failed),
//!   or whose stored document cannot be decoded) move to a dead-letter collection
//!   with their error and attempt count ([`Queue::dead_letters`], [`Queue::requeue`]).
//!
//! # Layout
//!
//! In the lease database, collection `<lease collection>_tasks` (or
//! [`DurableQueue::collection`]):
//!
//! * one document per task: `{_id: {q: <subsystem>, seq: <i64>}, key, task,
//!   attempts, submitted_at, nonce}`;
//! * one progress document per subsystem: `{_id: {q, progress: true}, seq: <last
//!   finished>, epoch}`, and `dead: <a dead letter>` while the dead letter of the
//!   last record is not known to be stored.
//!
//! Dead letters go to `<tasks collection>_dead`, `{_id: {q, seq}, key, task, error,
//! attempts, epoch, failed_at}`; a re-queued one is replaced by a marker `{_id,
//! requeued_as, requeued_at}` that keeps its `_id` taken.
//!
//! # Sequence numbers: the insert is the counter
//!
//! A producer reads the highest sequence number of the subsystem (the highest task,
//! then the progress document: in that order, so that tasks finished and deleted
//! meanwhile are still counted), and inserts its tasks (`insert_many`, ordered) with
//! the numbers that follow. The `_id` is unique: when another producer took a
//! number first, the insert fails with a duplicate key at that task, the tasks
//! before it are in, and the producer reads again and inserts the rest. So number
//! N+1 exists only once N has been inserted: the master never sees a later task
//! before an earlier one, and each producer's tasks keep their order. Each call
//! stamps its documents with a random `nonce`, so that an insert retried by the
//! driver after a lost reply is recognised as its own and not inserted twice.
//! No transactions are used: only the uniqueness of `_id`, as the lease store.
//!
//! # Progress, fenced
//!
//! A new master writes the progress document once on taking over, with the
//! filter `epoch <= mine` and `$set: {epoch: mine}` (upserting it the first time),
//! and reads the last finished number from it: that one atomic write both fences
//! out every older master and tells the new one where to resume. Each later record
//! is `update_one({_id, epoch: {$lte: mine}, seq: {$lte: new}}, {$set: {seq: new,
//! epoch: mine}})`: fenced by the epoch, and the position only grows (a delayed or
//! repeated record of a lower position changes nothing). When it matches nothing
//! and the stored position is not this epoch's, a newer master has taken over: the
//! write is refused and this member stops working the epoch. Finished tasks
//! (numbers up to the recorded one) are deleted after a record (every 64 tasks, and
//! whenever the queue runs empty or the member stops), or marked `done_at` and left
//! to a TTL index with [`DurableQueue::keep_finished`].
//!
//! # Dead letters: the fenced record decides
//!
//! A task given up on is recorded first: the record that passes it carries its
//! dead letter in the progress document (`dead`), at once whatever the
//! [`Progress`] cadence. Only once that fenced write is accepted is the letter
//! inserted in the dead-letter collection, under the task's own `_id` (a repeat
//! finds it there and is done); the next record removes it from the progress
//! document. So a stale master's verdict is refused with its record and never
//! stored (the newer master runs the task; a stored letter would let
//! [`Queue::requeue`] run a finished task again), and a crash between the record
//! and the insert loses nothing: the next master finds the letter in the progress
//! document it takes over and inserts it before its first record. A re-queued
//! letter leaves a marker with its `_id`, so a late insert of the same letter (by
//! a master that read it before the re-queue) meets a duplicate key and cannot
//! bring it back. Only inserts with unique `_id`s and replacements by `_id` are
//! used beside the fenced record.
//!
//! The atomicity of the fenced write is the server's (MongoDB's single-document
//! atomicity); FerretDB 1.x does not apply conditional updates atomically (see
//! [`crate::fence`]): there a stale master's record that races a take-over can
//! still land, and the fence, with the dead letter it carries, is only as good as
//! that.
//!
//! # Noticing new work
//!
//! The master reads ahead up to [`DurableQueue::read_ahead`] tasks after the last
//! one it holds (`seq > cursor`, ascending, on the primary with majority read
//! concern). When there are none it polls: first after the short interval, then
//! doubling up to the long one while the queue stays empty
//! ([`DurableQueue::poll_interval`], default 5 ms to 25 ms: a newly submitted task
//! starts within about 25 ms plus one read on an idle master, at the cost of at
//! most 25 reads a second per idle master; raise the long interval to lower the
//! idle load). A task submitted through the master's own `submit_work` wakes it at
//! once. No change stream is used (the test server has none); polling is the
//! tested path.
//!
//! # Limits
//!
//! * Attempts are counted by the master that runs the task; a crash forgets the
//!   count of the task in flight (a task that kills its process is retried by
//!   every master).
//! * [`Queue::requeue`] inserts the task again, then replaces the dead letter by
//!   its marker: a crash between the two leaves both (nothing is lost, and a
//!   second `requeue` of the same letter submits it once more); two `requeue`s of
//!   one letter at the same instant may both submit it.
//! * The capacity bound is checked before each insert: concurrent producers can
//!   overshoot it by one batch each.
//! * A document written by something else with a non-integer `_id.seq` stops the
//!   queue at it (logged as an error); a task that cannot be decoded, or without a
//!   `task` field, becomes a dead letter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    CollectionOptions, ReadConcern, ReadPreference, ReturnDocument, SelectionCriteria, WriteConcern,
};
use mongodb::{Collection, IndexModel};
use serde::Serialize;
use tokio::sync::Notify;

use super::queue::{Entry, QueueStats};
use super::work::Work;
use super::worker::{Next, Source};
use crate::error::{Error, Result};
use crate::event::{lock, Event, EventSink};
use crate::options::{validate_name, Backend, Options, QueueFull};
use crate::shared::Shared;
use crate::store::{error_code, scrubbed_driver_error, MongoStore, DUPLICATE_KEY};

/// When the master records its progress (the last finished task) in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// After every task (the default): at most the task in flight runs again after
    /// a crash, at the cost of one fenced write per task.
    EveryTask,
    /// After `tasks` tasks or `interval`, whichever comes first, and whenever the
    /// queue runs empty or the member stops: after a crash, the tasks finished since
    /// the last record run again.
    Batched {
        /// Record after this many finished tasks (at least 1).
        tasks: u32,
        /// Record when the last record is this old (checked after each task).
        interval: Duration,
    },
    /// With the lease's renewal period ([`Intervals::master`](crate::Intervals)), as
    /// the original publishes its progress: `Batched` with that interval.
    WithRenewal,
}

/// The settings of the durable queue ([`Options::durable_queue`]).
///
/// ```
/// use std::time::Duration;
/// use failover::{DurableQueue, Options, Progress};
///
/// let options = Options::new().durable_queue(
///     DurableQueue::new()
///         .progress(Progress::Batched { tasks: 100, interval: Duration::from_millis(500) })
///         .read_ahead(256),
/// );
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DurableQueue {
    pub(crate) collection: Option<String>,
    pub(crate) progress: Progress,
    pub(crate) poll: (Duration, Duration),
    pub(crate) read_ahead: usize,
    pub(crate) capacity: Option<(usize, QueueFull)>,
    pub(crate) retention: Option<Duration>,
}

impl Default for DurableQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl DurableQueue {
    /// The defaults: collection `<lease collection>_tasks`, progress after every
    /// task, polling from 5 ms to 25 ms, 128 tasks read ahead, no bound, finished
    /// tasks deleted.
    pub fn new() -> Self {
        DurableQueue {
            collection: None,
            progress: Progress::EveryTask,
            poll: (Duration::from_millis(5), Duration::from_millis(25)),
            read_ahead: 128,
            capacity: None,
            retention: None,
        }
    }

    /// The collection of the tasks (default `<lease collection>_tasks`); dead
    /// letters go to `<name>_dead`. Every member and producer of a subsystem must
    /// use the same.
    #[must_use]
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = Some(name.into());
        self
    }

    /// When progress is recorded (default [`Progress::EveryTask`]).
    #[must_use]
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// How an idle master polls for new tasks: after `short` first, doubling up to
    /// `long` while the queue stays empty (default 5 ms and 25 ms). `long` bounds
    /// how late an idle master notices a task; `1 / long` is its idle read rate.
    #[must_use]
    pub fn poll_interval(mut self, short: Duration, long: Duration) -> Self {
        self.poll = (short, long);
        self
    }

    /// How many tasks the master reads (and holds in memory) at a time (default 128).
    #[must_use]
    pub fn read_ahead(mut self, tasks: usize) -> Self {
        self.read_ahead = tasks;
        self
    }

    /// A bound on the tasks waiting in the database: `submit` waits for room or
    /// fails with [`Error::QueueFull`], as `when_full` says (default: no bound).
    #[must_use]
    pub fn capacity(mut self, tasks: usize, when_full: QueueFull) -> Self {
        self.capacity = Some((tasks, when_full));
        self
    }

    /// Keeps finished tasks for `time` (marked `done_at`, removed by a TTL index,
    /// which the server applies about once a minute) instead of deleting them.
    #[must_use]
    pub fn keep_finished(mut self, time: Duration) -> Self {
        self.retention = Some(time);
        self
    }

    fn validate(&self) -> Result<()> {
        if let Some(c) = &self.collection {
            if c.is_empty() || c.contains('$') || c.contains('\0') {
                return Err(Error::invalid(
                    "durable_queue.collection",
                    "a collection name is not empty and holds no `$` or NUL",
                ));
            }
        }
        if self.read_ahead == 0 {
            return Err(Error::invalid(
                "durable_queue.read_ahead",
                "read at least one task ahead",
            ));
        }
        if self.poll.0.is_zero() || self.poll.0 > self.poll.1 {
            return Err(Error::invalid(
                "durable_queue.poll_interval",
                "the short interval is above zero and at most the long one",
            ));
        }
        if let Progress::Batched { tasks: 0, .. } = self.progress {
            return Err(Error::invalid(
                "durable_queue.progress",
                "record after at least one task",
            ));
        }
        if matches!(self.capacity, Some((0, _))) {
            return Err(Error::invalid(
                "durable_queue.capacity",
                "a bound of zero tasks admits nothing",
            ));
        }
        if self.retention.is_some_and(|r| r.as_secs() == 0) {
            return Err(Error::invalid(
                "durable_queue.keep_finished",
                "a TTL index counts whole seconds: keep tasks at least 1 s",
            ));
        }
        Ok(())
    }
}

/// A task that was given up on: in the dead-letter collection until re-queued.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its sequence number in the queue it left.
    pub seq: u64,
    /// Its key (`Null` for a task that could not be decoded).
    pub key: Bson,
    /// The task, as stored.
    pub task: Bson,
    /// The last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// The epoch of the master that gave up on it.
    pub epoch: u64,
}

fn task_id(q: &str, seq: i64) -> Document {
    doc! { "q": q, "seq": seq }
}

fn progress_id(q: &str) -> Document {
    doc! { "q": q, "progress": true }
}

/// An integer field as `i64`, whatever its BSON integer width (`None` otherwise).
fn int(doc: &Document, field: &str) -> Option<i64> {
    match doc.get(field)? {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Double(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(*v as i64),
        _ => None,
    }
}

fn seq_of(doc: &Document) -> Option<i64> {
    doc.get_document("_id").ok().and_then(|id| int(id, "seq"))
}

/// The durable queue's database operations for one subsystem.
pub(crate) struct TaskStore {
    q: String,
    tasks: Collection<Document>,
    dead: Collection<Document>,
    secrets: Vec<String>,
    settings: DurableQueue,
}

impl TaskStore {
    /// Connects (as [`Options`] says) and creates the indexes.
    pub async fn open(name: &str, options: &Options) -> Result<TaskStore> {
        validate_name(name)?;
        options.validate()?;
        let settings = options.durable.clone().unwrap_or_default();
        settings.validate()?;
        if matches!(options.backend, Backend::Memory(_)) {
            return Err(Error::invalid(
                "durable_queue",
                "the durable queue keeps its tasks in MongoDB: give a connection string or client, not `in_memory`",
            ));
        }
        let store = MongoStore::connect(options, &options.effective_member_id()).await?;
        store.ping(options.connect_timeout).await?;
        let db = store.database().clone();
        let name_of_tasks = settings
            .collection
            .clone()
            .unwrap_or_else(|| format!("{}_tasks", options.collection));
        let durable = || {
            CollectionOptions::builder()
                .write_concern(WriteConcern::majority())
                .read_concern(ReadConcern::majority())
                .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                .build()
        };
        let tasks = db.collection_with_options(&name_of_tasks, durable());
        let dead = db.collection_with_options(&format!("{name_of_tasks}_dead"), durable());
        let this = TaskStore {
            q: name.to_owned(),
            tasks,
            dead,
            secrets: store.secrets().to_vec(),
            settings,
        };
        this.ensure_indexes().await;
        Ok(this)
    }

    fn err(&self, operation: &'static str, e: &mongodb::error::Error) -> Error {
        scrubbed_driver_error(operation, e, &self.secrets)
    }

    /// The indexes (idempotent); without them everything works by scans.
    async fn ensure_indexes(&self) {
        let by_seq = IndexModel::builder()
            .keys(doc! { "_id.q": 1, "_id.seq": 1 })
            .build();
        if let Err(e) = self.tasks.create_index(by_seq).await {
            let e = self.err("create the task index", &e);
            tracing::warn!(target: "failover::managed", error = %e, "cannot create the task index; reading tasks by a scan");
        }
        if let Some(keep) = self.settings.retention {
            let ttl = IndexModel::builder()
                .keys(doc! { "done_at": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .expire_after(keep)
                        .build(),
                )
                .build();
            if let Err(e) = self.tasks.create_index(ttl).await {
                let e = self.err("create the TTL index of finished tasks", &e);
                tracing::warn!(target: "failover::managed", error = %e, "cannot create the TTL index; finished tasks stay");
            }
        }
    }

    /// The last finished sequence number and the epoch that recorded it.
    pub async fn progress(&self) -> Result<(i64, u64)> {
        let found = self
            .tasks
            .find_one(doc! { "_id": progress_id(&self.q) })
            .await
            .map_err(|e| self.err("read the queue's progress", &e))?;
        Ok(found.map_or((0, 0), |d| {
            (
                int(&d, "seq").unwrap_or(0),
                int(&d, "epoch").unwrap_or(0).max(0) as u64,
            )
        }))
    }

    /// The highest sequence number ever given in this queue: the highest task
    /// first, then the progress (see the module docs for why in this order).
    async fn last_seq(&self) -> Result<i64> {
        let top = self
            .tasks
            .find_one(doc! { "_id.q": &self.q, "_id.seq": { "$gt": 0_i64 } })
            .sort(doc! { "_id.seq": -1 })
            .await
            .map_err(|e| self.err("read the queue's last task", &e))?;
        let top = top.as_ref().and_then(seq_of).unwrap_or(0);
        let (done, _) = self.progress().await?;
        Ok(top.max(done))
    }

    /// Tasks waiting: everything above the progress (sequence numbers are dense).
    pub async fn pending(&self) -> Result<u64> {
        let top = self
            .tasks
            .find_one(doc! { "_id.q": &self.q, "_id.seq": { "$gt": 0_i64 } })
            .sort(doc! { "_id.seq": -1 })
            .await
            .map_err(|e| self.err("read the queue's last task", &e))?;
        let top = top.as_ref().and_then(seq_of).unwrap_or(0);
        let (done, _) = self.progress().await?;
        Ok(top.saturating_sub(done).max(0) as u64)
    }

    /// Waits for room (or refuses) for `n` more tasks under the capacity bound.
    async fn room_for(&self, n: usize) -> Result<()> {
        let Some((capacity, when_full)) = self.settings.capacity else {
            return Ok(());
        };
        let mut pause = self.settings.poll.0;
        loop {
            let pending = self.pending().await? as usize;
            if pending == 0 || pending + n <= capacity {
                return Ok(());
            }
            if when_full == QueueFull::Reject {
                return Err(Error::QueueFull { capacity });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.settings.poll.1);
        }
    }

    /// Inserts `tasks` (key, task) in order with the next sequence numbers; returns
    /// their numbers.
    pub async fn insert(&self, tasks: Vec<(Bson, Bson)>) -> Result<Vec<u64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        self.room_for(tasks.len()).await?;
        let nonce = crate::member::random_token();
        let now = bson::DateTime::now();
        let mut seqs = Vec::with_capacity(tasks.len());
        let mut from = 0usize; // the first task not yet in
        while from < tasks.len() {
            let next = self.last_seq().await? + 1;
            let docs: Vec<Document> = tasks[from..]
                .iter()
                .enumerate()
                .map(|(i, (key, task))| {
                    doc! {
                        "_id": task_id(&self.q, next + i as i64),
                        "key": key.clone(),
                        "task": task.clone(),
                        "attempts": 0_i32,
                        "submitted_at": now,
                        "nonce": nonce,
                        "n": (from + i) as i64,
                    }
                })
                .collect();
            let err = match self.tasks.insert_many(docs).ordered(true).await {
                Ok(_) => {
                    seqs.extend((0..(tasks.len() - from) as i64).map(|i| (next + i) as u64));
                    return Ok(seqs);
                }
                Err(e) => e,
            };
            // Ordered: the tasks before the first write error are in.
            let first = match err.kind.as_ref() {
                ErrorKind::InsertMany(m) if m.write_concern_error.is_none() => m
                    .write_errors
                    .as_ref()
                    .and_then(|w| w.iter().min_by_key(|w| w.index))
                    .filter(|w| w.code == DUPLICATE_KEY)
                    .map(|w| w.index),
                ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY => Some(0),
                _ => None,
            };
            let Some(first) = first else {
                return Err(self.err("submit tasks", &err));
            };
            seqs.extend((0..first as i64).map(|i| (next + i) as u64));
            from += first;
            // Whose is the task at the taken number? Ours when a retried insert of
            // this very call landed before (a lost reply).
            let taken = next + first as i64;
            let holder = self
                .tasks
                .find_one(doc! { "_id": task_id(&self.q, taken) })
                .await
                .map_err(|e| self.err("submit tasks", &e))?;
            if holder.is_some_and(|h| {
                int(&h, "nonce") == Some(nonce) && int(&h, "n") == Some(from as i64)
            }) {
                seqs.push(taken as u64);
                from += 1;
            }
        }
        Ok(seqs)
    }

    /// Takes over as master of `epoch`: fences out older masters and returns the
    /// last finished number; `None` when a newer master has written the progress.
    pub async fn take_over(&self, epoch: u64) -> Result<Option<i64>> {
        let e = epoch.min(i64::MAX as u64) as i64;
        let written = self
            .tasks
            .find_one_and_update(
                doc! { "_id": progress_id(&self.q), "epoch": { "$lte": e } },
                doc! { "$set": { "epoch": e }, "$setOnInsert": { "seq": 0_i64 } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match written {
            Ok(Some(d)) => {
                // A dead letter whose progress the last master recorded, stored
                // before it moves on (it may have died in between): stored now,
                // before anything of this epoch unsets it.
                if let Ok(letter) = d.get_document("dead") {
                    self.store_letter(letter.clone()).await?;
                }
                Ok(Some(int(&d, "seq").unwrap_or(0)))
            }
            Ok(None) => Ok(None),
            Err(err) if error_code(&err) == Some(DUPLICATE_KEY) => Ok(None),
            Err(err) => Err(self.err("take over the queue's progress", &err)),
        }
    }

    /// Records `seq` as the last finished task under `epoch`, with `letter` the
    /// dead letter of a task up to `seq` not yet stored in the dead-letter
    /// collection (`None` removes a letter carried before); `false` when the write
    /// was refused (a newer master). A record of a lower position than the stored
    /// one changes nothing and counts as recorded when the stored position is this
    /// epoch's. Then, with `clean`, removes the finished tasks.
    pub async fn record(
        &self,
        epoch: u64,
        seq: i64,
        clean: bool,
        letter: Option<&Document>,
    ) -> Result<bool> {
        let e = epoch.min(i64::MAX as u64) as i64;
        let update = match letter {
            Some(letter) => doc! { "$set": { "seq": seq, "epoch": e, "dead": letter.clone() } },
            None => doc! { "$set": { "seq": seq, "epoch": e }, "$unset": { "dead": "" } },
        };
        // Fenced by the epoch, and the position only grows: a delayed or repeated
        // record of a lower position must not make finished tasks run again.
        let updated = self
            .tasks
            .update_one(
                doc! {
                    "_id": progress_id(&self.q),
                    "epoch": { "$lte": e },
                    "seq": { "$lte": seq },
                },
                update,
            )
            .await
            .map_err(|err| self.err("record the queue's progress", &err))?;
        if updated.matched_count == 0 {
            // Refused: a newer epoch, or a position already past `seq`.
            let (stored, by) = self.progress().await?;
            return Ok(by == e as u64 && stored >= seq);
        }
        if !clean {
            return Ok(true);
        }
        let finished = doc! { "_id.q": &self.q, "_id.seq": { "$gt": 0_i64, "$lte": seq } };
        let cleaned = match self.settings.retention {
            None => self.tasks.delete_many(finished).await.map(drop),
            Some(_) => {
                let mut filter = finished;
                filter.insert("done_at", doc! { "$exists": false });
                self.tasks
                    .update_many(
                        filter,
                        doc! { "$set": { "done_at": bson::DateTime::now() } },
                    )
                    .await
                    .map(drop)
            }
        };
        if let Err(err) = cleaned {
            // Harmless: finished tasks are never read again (seq <= progress) and
            // the next record removes them.
            let err = self.err("remove finished tasks", &err);
            tracing::warn!(target: "failover::managed", error = %err, "cannot remove finished tasks yet");
        }
        Ok(true)
    }

    /// Up to `limit` tasks after `after`, in order.
    pub async fn read(&self, after: i64, limit: usize) -> Result<Vec<Document>> {
        let mut cursor = self
            .tasks
            .find(doc! { "_id.q": &self.q, "_id.seq": { "$gt": after } })
            .sort(doc! { "_id.seq": 1 })
            .limit(limit.min(i64::MAX as usize) as i64)
            .await
            .map_err(|e| self.err("read tasks", &e))?;
        let mut docs = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.err("read tasks", &e))?
        {
            match cursor.deserialize_current() {
                Ok(d) => docs.push(d),
                Err(e) => return Err(self.err("read tasks", &e)),
            }
        }
        Ok(docs)
    }

    /// The stored form of a dead letter.
    pub fn letter_doc(&self, letter: &DeadLetter) -> Document {
        let seq = letter.seq.min(i64::MAX as u64) as i64;
        doc! {
            "_id": task_id(&self.q, seq),
            "key": letter.key.clone(),
            "task": letter.task.clone(),
            "error": &letter.error,
            "attempts": i64::from(letter.attempts),
            "epoch": letter.epoch.min(i64::MAX as u64) as i64,
            "failed_at": bson::DateTime::now(),
        }
    }

    /// Puts a dead letter (as [`TaskStore::letter_doc`] makes it) in the
    /// dead-letter collection. Its `_id` is the task's: a repeat (after a crash,
    /// or by the next master) finds it there already and is fine, and so does an
    /// insert after it was re-queued, which leaves a marker in its place.
    pub async fn store_letter(&self, letter: Document) -> Result<()> {
        match self.dead.insert_one(letter).await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some(DUPLICATE_KEY) => Ok(()),
            Err(e) => Err(self.err("store a dead letter", &e)),
        }
    }

    /// The dead letters of this subsystem, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let mut cursor = self
            .dead
            .find(doc! { "_id.q": &self.q, "requeued_as": { "$exists": false } })
            .sort(doc! { "_id.seq": 1 })
            .await
            .map_err(|e| self.err("read dead letters", &e))?;
        let mut out = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.err("read dead letters", &e))?
        {
            let d: Document = cursor
                .deserialize_current()
                .map_err(|e| self.err("read dead letters", &e))?;
            out.push(DeadLetter {
                seq: seq_of(&d).unwrap_or(0).max(0) as u64,
                key: d.get("key").cloned().unwrap_or(Bson::Null),
                task: d.get("task").cloned().unwrap_or(Bson::Null),
                error: d.get_str("error").unwrap_or("").to_owned(),
                attempts: int(&d, "attempts").unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
                epoch: int(&d, "epoch").unwrap_or(0).max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Submits dead letter `seq` again (at the end of the queue) and replaces it
    /// by a marker `{_id, requeued_as, requeued_at}`; its new number, or `None` if
    /// there is no such letter. The marker keeps the `_id`: a master that read the
    /// letter before (from the progress document) and stores it late meets the
    /// duplicate key and cannot bring it back.
    pub async fn requeue(&self, seq: u64) -> Result<Option<u64>> {
        let id = task_id(&self.q, seq.min(i64::MAX as u64) as i64);
        let found = self
            .dead
            .find_one(doc! { "_id": id.clone(), "requeued_as": { "$exists": false } })
            .await
            .map_err(|e| self.err("read a dead letter", &e))?;
        let Some(d) = found else { return Ok(None) };
        let key = d.get("key").cloned().unwrap_or(Bson::Null);
        let task = d.get("task").cloned().unwrap_or(Bson::Null);
        let new = self.insert(vec![(key, task)]).await?;
        let new = new.first().copied();
        self.dead
            .replace_one(
                doc! { "_id": id },
                doc! {
                    "requeued_as": new.unwrap_or(0).min(i64::MAX as u64) as i64,
                    "requeued_at": bson::DateTime::now(),
                },
            )
            .await
            .map_err(|e| self.err("mark a re-queued dead letter", &e))?;
        Ok(new)
    }
}

/// A producer's handle on a subsystem's durable queue: submits tasks from any
/// process, member or not, with no election.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> failover::Result<()> {
/// use failover::{Options, Queue};
///
/// let queue = Queue::connect("billing", Options::new().connect_string("mongodb://localhost/app")).await?;
/// let seq = queue.submit(&serde_json_like::Invoice { id: 7, amount: 10 }).await?;
/// println!("queued as number {seq}");
/// # Ok(()) }
/// # mod serde_json_like { #[derive(serde::Serialize)] pub struct Invoice { pub id: u64, pub amount: u64 } }
/// ```
pub struct Queue {
    store: Arc<TaskStore>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("subsystem", &self.store.q)
            .field("collection", &self.store.tasks.name())
            .finish()
    }
}

impl Queue {
    /// Connects to the durable queue of subsystem `name`: the same connection
    /// settings, lease collection and [`Options::durable_queue`] settings as its
    /// members (the election options are not used).
    ///
    /// # Errors
    /// Bad options or name; [`Error::InvalidOption`] for an in-memory store; a
    /// database that does not answer within [`Options::connect_timeout`].
    pub async fn connect(name: &str, options: Options) -> Result<Queue> {
        Ok(Queue {
            store: Arc::new(TaskStore::open(name, &options).await?),
        })
    }

    /// Submits one task; returns its sequence number once the insert is
    /// acknowledged by a majority. The task's key is computed by the master.
    ///
    /// # Errors
    /// [`Error::Serialization`] for a task with no BSON form, [`Error::QueueFull`]
    /// under a full bound with [`QueueFull::Reject`], database errors.
    pub async fn submit<T: Serialize + ?Sized>(&self, task: &T) -> Result<u64> {
        let task = bson::to_bson(task).map_err(|e| Error::serialization("task", e))?;
        let seqs = self.store.insert(vec![(Bson::Null, task)]).await?;
        Ok(seqs[0])
    }

    /// Submits tasks in one ordered batch: they get consecutive numbers unless
    /// another producer interleaves (each producer's tasks keep their order).
    /// Returns their numbers.
    ///
    /// # Errors
    /// As [`Queue::submit`]; on a database error some leading tasks may be in.
    pub async fn submit_many<T: Serialize>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<u64>> {
        let tasks = tasks
            .into_iter()
            .map(|t| {
                bson::to_bson(&t)
                    .map(|t| (Bson::Null, t))
                    .map_err(|e| Error::serialization("task", e))
            })
            .collect::<Result<Vec<_>>>()?;
        self.store.insert(tasks).await
    }

    /// How many tasks wait (above the recorded progress, the running one included).
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending(&self) -> Result<u64> {
        self.store.pending().await
    }

    /// The sequence number of the last finished task the master recorded, and the
    /// epoch of that master (0, 0 before any).
    ///
    /// # Errors
    /// Database errors.
    pub async fn progress(&self) -> Result<(u64, u64)> {
        let (seq, epoch) = self.store.progress().await?;
        Ok((seq.max(0) as u64, epoch))
    }

    /// The dead letters, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.store.dead_letters().await
    }

    /// Submits dead letter `seq` again, at the end of the queue, with its attempts
    /// reset; returns its new number (`None`: no such dead letter).
    ///
    /// # Errors
    /// As [`Queue::submit`].
    pub async fn requeue(&self, seq: u64) -> Result<Option<u64>> {
        self.store.requeue(seq).await
    }

    /// Records `seq` as finished under `epoch`, as a master does: `Ok(false)` when
    /// the fenced write is refused because a newer epoch has taken over. For
    /// tests and tools; members do this by themselves.
    ///
    /// # Errors
    /// Database errors.
    #[doc(hidden)]
    pub async fn record_progress(&self, epoch: u64, seq: u64) -> Result<bool> {
        self.store
            .record(epoch, seq.min(i64::MAX as u64) as i64, true, None)
            .await
    }

    /// Takes the progress over for `epoch`, as a new master does; `Ok(None)` when a
    /// newer epoch holds it. For tests and tools.
    ///
    /// # Errors
    /// Database errors.
    #[doc(hidden)]
    pub async fn take_over_progress(&self, epoch: u64) -> Result<Option<u64>> {
        Ok(self.store.take_over(epoch).await?.map(|s| s.max(0) as u64))
    }
}

/// One read-ahead item: a task, or a stored document that cannot be decoded.
enum Item<W: Work> {
    Task(Entry<W>),
    Malformed {
        seq: i64,
        task: Bson,
        reason: String,
    },
}

struct State<W: Work> {
    epoch: u64,
    batch: VecDeque<Item<W>>,
    /// The highest number read into the batch.
    read_to: i64,
    /// The highest number finished (done or dead) in this epoch.
    done_to: i64,
    /// The highest number recorded in the database.
    recorded: i64,
    /// The highest number whose finished tasks were removed.
    cleaned: i64,
    unrecorded: u32,
    recorded_at: Instant,
    /// Empty reads in a row, for the back-off of the polling.
    idle: u32,
    stats: QueueStats,
    last_done: Option<W::Key>,
    dead: Vec<(W::Key, W::Task)>,
    /// A dead letter recorded in the progress document and not yet stored in the
    /// dead-letter collection: every record carries it until it is stored.
    letter: Option<Document>,
}

/// Finished tasks are removed once this many have been recorded since the last
/// removal (and whenever the queue runs empty or the member stops): a removal per
/// record would double the writes of per-task progress. Finished tasks are never
/// read again (the reads start after the recorded progress).
const CLEAN_EVERY: i64 = 64;

/// The worker's side of the durable queue.
pub(crate) struct Durable<W: Work> {
    store: Arc<TaskStore>,
    work: Arc<W>,
    decode: fn(Bson) -> std::result::Result<W::Task, String>,
    shared: Arc<Shared>,
    events: Arc<EventSink>,
    /// Progress cadence as (tasks, interval).
    cadence: (u32, Duration),
    error_pause: Duration,
    /// Wakes an idle master when this member submits.
    pub ready: Notify,
    state: Mutex<State<W>>,
}

impl<W: Work> Durable<W> {
    pub fn new(
        store: Arc<TaskStore>,
        work: Arc<W>,
        decode: fn(Bson) -> std::result::Result<W::Task, String>,
        shared: Arc<Shared>,
        events: Arc<EventSink>,
        options_renewal: Duration,
        error_pause: Duration,
    ) -> Self {
        let cadence = match store.settings.progress {
            Progress::EveryTask => (1, Duration::ZERO),
            Progress::Batched { tasks, interval } => (tasks.max(1), interval),
            Progress::WithRenewal => (u32::MAX, options_renewal),
        };
        Durable {
            store,
            work,
            decode,
            shared,
            events,
            cadence,
            error_pause: error_pause.min(Duration::from_millis(500)),
            ready: Notify::new(),
            state: Mutex::new(State {
                epoch: 0,
                batch: VecDeque::new(),
                read_to: 0,
                done_to: 0,
                recorded: 0,
                cleaned: 0,
                unrecorded: 0,
                recorded_at: Instant::now(),
                idle: 0,
                stats: QueueStats::default(),
                last_done: None,
                dead: Vec::new(),
                letter: None,
            }),
        }
    }

    pub fn last_done(&self) -> Option<W::Key> {
        lock(&self.state).last_done.clone()
    }

    pub fn keys(&self) -> Vec<W::Key> {
        lock(&self.state)
            .batch
            .iter()
            .filter_map(|i| match i {
                Item::Task(e) => Some(e.key.clone()),
                Item::Malformed { .. } => None,
            })
            .collect()
    }

    pub fn take_dead_letters(&self) -> Vec<(W::Key, W::Task)> {
        std::mem::take(&mut lock(&self.state).dead)
    }

    /// Decodes a stored task document into an item of the batch.
    fn item(&self, doc: Document, seq: i64) -> Item<W> {
        let task = doc.get("task").cloned().unwrap_or(Bson::Null);
        let attempts = int(&doc, "attempts")
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32;
        match (self.decode)(task.clone()) {
            Ok(decoded) => {
                let key = self.work.key(&decoded);
                let bkey = bson::to_bson(&key).unwrap_or(Bson::Null);
                Item::Task(Entry {
                    key,
                    bkey,
                    seq: Some(seq as u64),
                    task: decoded,
                    attempts,
                    orphan: false,
                })
            }
            Err(reason) => Item::Malformed {
                seq,
                task,
                reason: format!("cannot decode the stored task: {reason}"),
            },
        }
    }

    /// Buries the dead letter of task `seq`, which ends the task: first the
    /// progress passing `seq` is recorded with the letter in it (fenced: a stale
    /// master's verdict is refused and never stored, as the newer master runs the
    /// task), then the letter is stored in the dead-letter collection. A crash in
    /// between leaves the letter in the progress document, and the next master
    /// stores it when it takes over. Database errors are retried while the lease
    /// holds; `false` when the record was refused or the lease lost first.
    async fn bury(&self, epoch: u64, seq: i64, letter: DeadLetter) -> bool {
        let stored = self.store.letter_doc(&letter);
        lock(&self.state).letter = Some(stored.clone());
        if !self.advance(epoch, Some(seq), true, true).await {
            // Not recorded (refused, or the lease lost first): the next master runs
            // the task again, or stores the letter if a record landed after all.
            // The letter stays in the state: a record of this epoch at the stop
            // still carries it, never drops it.
            return false;
        }
        loop {
            match self.store.store_letter(stored.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(target: "failover::managed", error = %e, seq = letter.seq, "cannot store a dead letter; retrying");
                    if !self.shared.holds(epoch) || self.shared.is_stopping() {
                        // Still in the progress document (no record of this epoch
                        // runs from now on): the next master stores it.
                        return false;
                    }
                    tokio::time::sleep(self.error_pause).await;
                }
            }
        }
        lock(&self.state).letter = None;
        tracing::warn!(target: "failover::managed", key = %letter.key, attempts = letter.attempts, reason = %letter.error, "dead letter");
        self.events.emit(Event::DeadLetter {
            key: letter.key,
            task: letter.task,
            attempts: letter.attempts,
            reason: letter.error,
        });
        true
    }

    /// Notes `seq` finished and records the progress if the cadence says so (or
    /// `force`); `false` when the record was refused (a newer master). With
    /// `must`, a record that fails is retried while the lease holds, whatever the
    /// cadence. Every record carries the dead letter not yet stored, if any.
    async fn advance(&self, epoch: u64, seq: Option<i64>, force: bool, must: bool) -> bool {
        let due = {
            let mut s = lock(&self.state);
            if let Some(seq) = seq {
                s.done_to = s.done_to.max(seq);
                s.unrecorded += 1;
            }
            (s.done_to > s.recorded
                && (force
                    || s.unrecorded >= self.cadence.0
                    || s.recorded_at.elapsed() >= self.cadence.1))
                || (force && s.done_to > s.cleaned)
        };
        if !due {
            return true;
        }
        let (target, clean, letter) = {
            let s = lock(&self.state);
            (
                s.done_to,
                force || s.done_to - s.cleaned >= CLEAN_EVERY,
                s.letter.clone(),
            )
        };
        let mut pause = Duration::from_millis(5);
        loop {
            match self
                .store
                .record(epoch, target, clean, letter.as_ref())
                .await
            {
                Ok(true) => {
                    let mut s = lock(&self.state);
                    s.recorded = s.recorded.max(target);
                    if clean {
                        s.cleaned = s.cleaned.max(target);
                    }
                    s.unrecorded = 0;
                    s.recorded_at = Instant::now();
                    return true;
                }
                Ok(false) => {
                    tracing::warn!(target: "failover::managed", member = %self.shared.member_id, epoch,
                        "progress write refused: a newer master has taken over; stopping the work");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(target: "failover::managed", error = %e, "cannot record progress yet");
                    self.events.emit(Event::Error(e));
                    if self.cadence.0 != 1 && !must {
                        // Kept: the next record carries it.
                        return true;
                    }
                    // Progress after every task: no next task before this one is
                    // recorded, or a fault lasting several tasks would leave them all
                    // to be done again. Retried while the lease is held.
                    if !self.shared.holds(epoch) {
                        return false;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.error_pause.max(Duration::from_millis(5)));
                    if !self.shared.holds(epoch) {
                        return false;
                    }
                }
            }
        }
    }
}

/// Decodes a stored task.
/// The number of tasks waiting in subsystem `name`'s durable queue, read with two
/// queries and no write (for [`status`](crate::status)); `None` when the subsystem
/// has no durable queue (no task and no progress document).
pub(crate) async fn depth(
    store: &MongoStore,
    options: &Options,
    name: &str,
) -> Result<Option<u64>> {
    let collection = options
        .durable
        .as_ref()
        .and_then(|d| d.collection.clone())
        .unwrap_or_else(|| format!("{}_tasks", options.collection));
    let tasks = store.database().collection_with_options::<Document>(
        &collection,
        CollectionOptions::builder()
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .build(),
    );
    let err = |operation: &'static str, e: &mongodb::error::Error| {
        scrubbed_driver_error(operation, e, store.secrets())
    };
    let top = tasks
        .find_one(doc! { "_id.q": name, "_id.seq": { "$gt": 0_i64 } })
        .sort(doc! { "_id.seq": -1 })
        .await
        .map_err(|e| err("read the queue's last task", &e))?;
    let progress = tasks
        .find_one(doc! { "_id": progress_id(name) })
        .await
        .map_err(|e| err("read the queue's progress", &e))?;
    if top.is_none() && progress.is_none() {
        return Ok(None);
    }
    let top = top.as_ref().and_then(seq_of).unwrap_or(0);
    let done = progress.as_ref().and_then(|d| int(d, "seq")).unwrap_or(0);
    Ok(Some(top.saturating_sub(done).max(0) as u64))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(task: Bson) -> std::result::Result<T, String> {
    bson::from_bson(task).map_err(|e| e.to_string())
}

impl<W: Work> Source<W> for Durable<W> {
    async fn begin(&self, epoch: u64) -> bool {
        loop {
            match self.store.take_over(epoch).await {
                Ok(Some(done)) => {
                    let mut s = lock(&self.state);
                    s.epoch = epoch;
                    s.batch.clear();
                    s.read_to = done;
                    s.done_to = done;
                    s.recorded = done;
                    s.cleaned = 0;
                    s.unrecorded = 0;
                    s.recorded_at = Instant::now();
                    s.idle = 0;
                    // A letter of an earlier epoch is in the database or not at all
                    // (the take-over stored the one it found).
                    s.letter = None;
                    tracing::info!(target: "failover::managed", member = %self.shared.member_id, epoch, resume_after = done, "took over the durable queue");
                    return true;
                }
                Ok(None) => {
                    tracing::warn!(target: "failover::managed", member = %self.shared.member_id, epoch,
                        "a newer master has taken over the durable queue");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(target: "failover::managed", error = %e, "cannot take over the durable queue; retrying");
                    self.events.emit(Event::Error(e));
                    if !self.shared.holds(epoch) || self.shared.is_stopping() {
                        return false;
                    }
                    tokio::time::sleep(self.error_pause).await;
                }
            }
        }
    }

    async fn next(&self, epoch: u64) -> Next<Entry<W>> {
        loop {
            let item = lock(&self.state).batch.pop_front();
            match item {
                Some(Item::Task(entry)) => return Next::Task(entry),
                Some(Item::Malformed { seq, task, reason }) => {
                    let letter = DeadLetter {
                        seq: seq as u64,
                        key: Bson::Null,
                        task,
                        error: reason,
                        attempts: 0,
                        epoch,
                    };
                    if !self.bury(epoch, seq, letter).await {
                        return Next::Stop;
                    }
                    lock(&self.state).stats.dead_letters += 1;
                    // Each item goes through the lease check again.
                    if !self.shared.holds(epoch) || self.shared.is_stopping() {
                        return Next::Stop;
                    }
                }
                None => {
                    let after = lock(&self.state).read_to;
                    let docs = match self.store.read(after, self.store.settings.read_ahead).await {
                        Ok(docs) => docs,
                        Err(e) => {
                            tracing::warn!(target: "failover::managed", error = %e, "cannot read tasks");
                            self.events.emit(Event::Error(e));
                            lock(&self.state).idle += 3;
                            return Next::Empty;
                        }
                    };
                    if docs.is_empty() {
                        let mut s = lock(&self.state);
                        s.idle = s.idle.saturating_add(1);
                        return Next::Empty;
                    }
                    let mut items = Vec::with_capacity(docs.len());
                    let mut read_to = after;
                    for d in docs {
                        // The filter asked for numbers above `after`: anything else
                        // is not a task of ours (skip it).
                        let Some(seq) = seq_of(&d).filter(|&s| s > read_to) else {
                            continue;
                        };
                        read_to = seq;
                        items.push(self.item(d, seq));
                    }
                    if items.is_empty() {
                        // Only documents with no integer number (not written by
                        // this crate): the queue cannot pass them.
                        tracing::error!(target: "failover::managed", after,
                            "the next stored task has no integer `_id.seq`; the queue waits at it (remove or renumber it)");
                        let mut s = lock(&self.state);
                        s.idle = s.idle.saturating_add(1);
                        return Next::Empty;
                    }
                    let mut s = lock(&self.state);
                    s.idle = 0;
                    s.read_to = read_to.max(s.read_to);
                    s.batch.extend(items);
                }
            }
        }
    }

    async fn wait(&self) {
        let idle = lock(&self.state).idle;
        let (short, long) = self.store.settings.poll;
        let pause = short
            .checked_mul(1u32 << idle.saturating_sub(1).min(16))
            .unwrap_or(long)
            .min(long);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = self.ready.notified() => {}
        }
    }

    fn restore(&self, entry: Entry<W>) {
        lock(&self.state).batch.push_front(Item::Task(entry));
    }

    fn retried(&self) {
        lock(&self.state).stats.retries += 1;
    }

    async fn finish(&self, epoch: u64, entry: Entry<W>, dead_letter: Option<String>) -> bool {
        let seq = entry.seq.unwrap_or(0).min(i64::MAX as u64) as i64;
        match dead_letter {
            None => {
                let mut s = lock(&self.state);
                s.stats.finished += 1;
                s.last_done = Some(entry.key);
            }
            Some(reason) => {
                let task = bson::to_bson(&entry.task)
                    .unwrap_or_else(|e| Bson::String(format!("<task not serializable: {e}>")));
                let letter = DeadLetter {
                    seq: seq as u64,
                    key: entry.bkey.clone(),
                    task,
                    error: reason,
                    attempts: entry.attempts,
                    epoch,
                };
                if !self.bury(epoch, seq, letter).await {
                    // Not buried: the task stays in the queue for the next master
                    // (or its letter in the progress document, if recorded).
                    return false;
                }
                let mut s = lock(&self.state);
                s.stats.dead_letters += 1;
                s.dead.push((entry.key, entry.task));
                // Recorded with the letter.
                return true;
            }
        }
        self.advance(epoch, Some(seq), false, false).await
    }

    async fn flush(&self, epoch: u64) -> bool {
        if lock(&self.state).epoch != epoch {
            return true;
        }
        self.advance(epoch, None, true, false).await
    }

    fn stats(&self) -> QueueStats {
        let s = lock(&self.state);
        QueueStats {
            queued: s.batch.len(),
            ..s.stats.clone()
        }
    }
}

/// Submits tasks of a member's own work through its durable store.
pub(crate) async fn submit_task<W: Work>(
    durable: &Durable<W>,
    key: Bson,
    task: &W::Task,
) -> Result<()> {
    let task = bson::to_bson(task).map_err(|e| Error::serialization("task", e))?;
    durable.store.insert(vec![(key, task)]).await?;
    durable.ready.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::work::{Outcome, WorkContext};

    struct Numbers;
    impl Work for Numbers {
        type Task = u64;
        type Key = u64;
        fn key(&self, task: &u64) -> u64 {
            *task
        }
        async fn work(&self, _: &u64, _: &WorkContext) -> Outcome {
            Outcome::Done
        }
    }

    #[test]
    fn settings_are_checked() {
        DurableQueue::new().validate().unwrap();
        let bad = [
            DurableQueue::new().read_ahead(0),
            DurableQueue::new().poll_interval(Duration::ZERO, Duration::from_millis(5)),
            DurableQueue::new().poll_interval(Duration::from_millis(9), Duration::from_millis(5)),
            DurableQueue::new().progress(Progress::Batched {
                tasks: 0,
                interval: Duration::from_secs(1),
            }),
            DurableQueue::new().capacity(0, QueueFull::Reject),
            DurableQueue::new().keep_finished(Duration::from_millis(10)),
            DurableQueue::new().collection("a$b"),
        ];
        for settings in bad {
            let err = settings.validate().unwrap_err();
            assert!(
                matches!(err, Error::InvalidOption { option, .. } if option.starts_with("durable_queue.")),
                "{err}"
            );
        }
    }

    #[test]
    fn stored_numbers_of_any_integer_width_are_read_and_others_are_not() {
        let id = |seq: Bson| doc! { "_id": { "q": "x", "seq": seq } };
        assert_eq!(seq_of(&id(Bson::Int64(7))), Some(7));
        assert_eq!(seq_of(&id(Bson::Int32(7))), Some(7));
        assert_eq!(seq_of(&id(Bson::Double(7.0))), Some(7));
        assert_eq!(seq_of(&id(Bson::Double(7.5))), None);
        assert_eq!(seq_of(&id(Bson::String("7".into()))), None);
        assert_eq!(seq_of(&doc! { "_id": 7 }), None);
    }

    #[test]
    fn a_stored_task_that_does_not_decode_is_an_error_not_a_panic() {
        assert_eq!(decode::<u64>(Bson::Int64(3)), Ok(3));
        assert!(decode::<u64>(Bson::String("x".into())).is_err());
        assert!(decode::<u64>(Bson::Null).is_err());
    }

    /// What the master holds per task it has read ahead (besides the task's own
    /// heap data): the batch is bounded by `read_ahead`, whatever the queue holds.
    #[test]
    fn memory_per_task_read_ahead() {
        let per_task = std::mem::size_of::<Item<Numbers>>();
        eprintln!("read-ahead entry: {per_task} bytes (u64 task and key)");
        assert!(per_task <= 256, "{per_task}");
    }
}
