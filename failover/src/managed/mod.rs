//! Managed mode: every member is fed the same tasks; the master works them one at
//! a time, in order, and its progress travels to the standbys with each renewal,
//! so that a new master resumes after the last task the old one published.
//!
//! Guarantees:
//! * Tasks run on the master only, one at a time, in submission order; each task
//!   starts only after a check, on `CLOCK_BOOTTIME`, that the lease is valid.
//! * The work runs on a thread of its own (driving the application's runtime), so
//!   work that blocks its thread (synchronous I/O, CPU work) cannot starve the
//!   election's renewals. Keep [`Hooks`] quick and non-blocking: they run on the
//!   runtime beside the election.
//! * The `on_master` hook of an epoch has returned before the epoch's first task
//!   starts (the worker waits for it at most one lease).
//! * After each finished task the master records it in its *run*; the run travels
//!   with the next renewal (no database write per task). Standbys drop the tasks
//!   the run covers, and keep everything else (see below).
//! * Nothing is lost while one member that holds a task is alive: a standby fed
//!   from another point than the master (joined late, restarted, or its full
//!   queue refused a task) keeps what the master's run does not cover. This holds
//!   for any keys when tasks carry a feed sequence number ([`Work::sequence`]);
//!   without one, the key is a task's identity and must not repeat (see below).
//! * Kept is run: a standby that holds tasks the master will never run (they
//!   stand before the master's run: its feed started later, or refused them)
//!   asks the master to hand the lease over; the master does so after its
//!   running task, as on a step-down, and the standby runs them.
//! * After a crash, the tasks finished after the last published run repeat on the
//!   new master. A graceful [`Managed::shutdown`] finishes the running task (for at
//!   most [`Options::shutdown_timeout`]) and publishes the run in the release, so a
//!   hand-over repeats nothing, also to a standby whose feed lags behind the run:
//!   the new master keeps the run and drops its tasks as its feed brings them.
//!   Limits (a repeat, never a loss): without sequence numbers, a new master
//!   that holds neither the run's first task nor its last one cannot place the
//!   run until its last key arrives (this needs an unclean end before, or a
//!   member fed from a point inside the run whose feed lags); and after a
//!   releasing member's full queue refused a task, its run restarts after the
//!   gap, so a standby that missed its publications from before the gap runs
//!   those tasks again.
//! * Dead letters (a task that failed `max_attempts` times) go to the application
//!   on the master that gave up on them ([`Event::DeadLetter`](crate::Event::DeadLetter),
//!   [`Managed::take_dead_letters`]) and leave every queue with the run. If that
//!   master crashes before it published the run, the standbys still hold the task
//!   and the next master tries it again.
//!
//! # Placing the master's run on a standby
//!
//! Two ways, chosen by [`Work::sequence`] (the rule is in one place,
//! `managed/rule.rs`, and the model check in `tests/model.rs` runs that very code):
//!
//! * **Feed sequence numbers** (recommended when the feed has them: a message
//!   log's offset, an auto-increment id). The master publishes the interval of
//!   sequence numbers of which every task was run: the stretch of its own feed
//!   without a gap (below) that ends with the task before its queue's head,
//!   joined with the intervals its predecessors published where they touch. A
//!   standby drops exactly the tasks in a published interval, also those that
//!   arrive later (a lagging feed), and nothing else. Keys may repeat freely;
//!   members may be fed from any point, as long as each member is fed the feed's
//!   tasks in order from its first one on (a task refused as out of order was
//!   fed before; one refused by a full queue is a gap, below). A member whose
//!   feed starts after the published interval's end cannot know what lies between.
//! * **Keys** (no sequence numbers). The master publishes its run: its last key
//!   and its *origin*, the key from which every task up to the last one was run
//!   (by it, and by the masters before it whose runs it continued: a master
//!   continues its predecessor's origin when its queue holds where that one
//!   stopped). A standby drops from the origin through the last key, keeping the
//!   tasks before the origin as *orphans* that only a run naming them drops and
//!   that their holder runs first when it leads. A last key that a standby has
//!   not been fed yet: if it holds the origin, it drops from there at once and
//!   drops what arrives up to the last key; if not, it applies the run when the
//!   last key arrives. Here a key names one task for good: a key that repeats can
//!   be taken for the earlier task with that key by a standby that joined late
//!   or was fed from another point, which then drops a task nobody ran (the
//!   model check shows it: `key_mode_needs_keys_that_do_not_repeat_*`). Never
//!   reuse a key, or number the tasks.
//!
//! A task offered to a member and not queued (a full queue with
//! [`QueueFull::Reject`](crate::QueueFull::Reject), or a submission with
//! [`QueueFull::Wait`](crate::QueueFull::Wait) dropped before there was room) is
//! a gap in that member's feed: its runs never span it (the interval restarts
//! after it; the origin restarts at the task after it), so a standby that holds
//! the refused task keeps it, and then asks for the lease to run it. Offering
//! the same task again closes the gap.
//!
//! Either way, a member that cannot place the last published run gives
//! better-fed members one lease of head start before taking an expired lease, and
//! reports [`Event::ResumePointUnknown`](crate::Event::ResumePointUnknown) if it
//! leads anyway.

pub(crate) mod durable;
mod publish;
mod queue;
pub(crate) mod rule;
mod work;
mod worker;

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

pub use durable::{DeadLetter, DurableQueue, Progress, Queue};
pub use queue::QueueStats;
pub use work::{key_field, work_fn, IntoOutcome, Outcome, Work, WorkContext};

use crate::error::{Error, Result};
#[allow(unused_imports)] // for the docs
use crate::event::Hooks as _;
use crate::event::{lock, panic_message, Event, EventSink, Events, Hooks};
use crate::member::Member;
use crate::options::Options;
use crate::state::State;
use durable::Durable;
use publish::LeaseProgress;
use queue::Queue as MemoryQueue;
use worker::{Source, Worker};

/// A subsystem described by one type: its name, its work and its hooks.
/// `#[failover::subsystem]` implements it; [`Managed::start_subsystem`] starts it.
pub trait Subsystem: Work + Hooks {
    /// The subsystem's name, shared by all its members.
    const NAME: &'static str;

    /// `queue = "mongodb"`: how the durable queue reads a task back. Generated by
    /// the macro; not part of the API.
    #[doc(hidden)]
    fn __durable_decoder() -> Option<crate::__private::Decoder<Self::Task>> {
        None
    }
}

/// A member of a managed subsystem: the election plus the work queue.
///
/// Dropping it without [`shutdown`](Managed::shutdown) stops it like a crash.
#[must_use = "a managed member stops (like a crash) when its handle is dropped"]
pub struct Managed<W: Work> {
    member: Member,
    work: Arc<W>,
    queue: Arc<MemoryQueue<W>>,
    /// The durable queue, when the member works one (then `queue` stays empty).
    durable: Option<Arc<Durable<W>>>,
    /// Reports how the worker's thread ended (`Err`: it panicked).
    worker: Mutex<Option<JoinHandle<std::result::Result<(), String>>>>,
}

impl<W: Work> std::fmt::Debug for Managed<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Managed")
            .field("member", &self.member)
            .field("stats", &self.stats())
            .field("durable", &self.durable.is_some())
            .finish()
    }
}

impl<W: Work> Managed<W> {
    /// Starts a member of the managed subsystem `name`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
    /// use failover::{work_fn, Managed, MemoryStore, Options, WorkContext};
    ///
    /// let store = MemoryStore::new();
    /// let work = work_fn(|n: &u32| *n, |n: &u32, ctx: &WorkContext| {
    ///     let (n, epoch) = (*n, ctx.epoch());
    ///     async move { println!("task {n} under epoch {epoch}"); true }
    /// });
    /// let cluster = Managed::start("jobs", Options::new().in_memory(&store), work).await?;
    /// for n in 1..=3 {
    ///     cluster.submit_work(n).await?;
    /// }
    /// cluster.member().wait_for_master().await?;
    /// # while cluster.stats().queued > 0 { tokio::time::sleep(std::time::Duration::from_millis(5)).await }
    /// cluster.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Member::start`]: bad input, or a database that cannot be reached within
    /// [`Options::connect_timeout`].
    pub async fn start(name: &str, options: Options, work: W) -> Result<Self> {
        Self::launch(name, options, Arc::new(work), Arc::new(())).await
    }

    /// Like [`Managed::start`], with hooks called on every event.
    ///
    /// # Errors
    /// As [`Managed::start`].
    pub async fn start_with_hooks<H: Hooks>(
        name: &str,
        options: Options,
        work: W,
        hooks: H,
    ) -> Result<Self> {
        Self::launch(name, options, Arc::new(work), Arc::new(hooks)).await
    }

    /// Starts a [`Subsystem`]: its name, work and hooks in one value. A subsystem
    /// declared with `queue = "mongodb"` starts on its durable queue, as with
    /// [`Managed::start_durable`].
    ///
    /// # Errors
    /// As [`Managed::start`].
    pub async fn start_subsystem(options: Options, subsystem: W) -> Result<Self>
    where
        W: Subsystem,
    {
        let subsystem = Arc::new(subsystem);
        if let Some(decode) = W::__durable_decoder() {
            // `#[failover::subsystem(queue = "mongodb")]`.
            return Self::launch_durable(W::NAME, options, subsystem.clone(), subsystem, decode)
                .await;
        }
        Self::launch(W::NAME, options, subsystem.clone(), subsystem).await
    }

    async fn launch<H: Hooks>(
        name: &str,
        options: Options,
        work: Arc<W>,
        hooks: Arc<H>,
    ) -> Result<Self> {
        if options.durable.is_some() {
            return Err(Error::invalid(
                "durable_queue",
                "start a member of the durable queue with `Managed::start_durable` (its tasks must implement `Deserialize`), or `queue = \"mongodb\"` on `#[failover::subsystem]`",
            ));
        }
        let events = Arc::new(EventSink::default());
        let queue = Arc::new(MemoryQueue::<W>::new(
            options.queue_capacity,
            events.clone(),
        ));
        let backoff = options.retry;
        let max_attempts = options.max_attempts;
        let hook_wait = options.effective_lease();
        let progress = Some(LeaseProgress::new(
            options.progress,
            options.intervals.master,
        ));
        let member = Member::launch(name, options, hooks, queue.clone(), events).await?;
        let shared = member.shared().clone();
        let depth = Arc::downgrade(&queue);
        shared
            .metrics
            .set_depth_source(move || depth.upgrade().map(|q| q.stats().queued));
        let worker = Worker {
            work: work.clone(),
            queue: queue.clone(),
            shared: shared.clone(),
            backoff,
            max_attempts,
            hook_wait,
            progress,
        };
        Self::spawn_worker(name, member, work, queue, None, worker)
    }

    /// Starts a member of the managed subsystem `name` on its durable queue in
    /// MongoDB (see [`DurableQueue`] and [`Queue`]; the settings come from
    /// [`Options::durable_queue`], else [`DurableQueue::new`]). The work, hooks and
    /// outcomes are the same as with [`Managed::start`].
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> failover::Result<()> {
    /// use failover::{work_fn, DurableQueue, Managed, Options, Queue, WorkContext};
    ///
    /// let options = Options::new()
    ///     .connect_string("mongodb://localhost/app")
    ///     .durable_queue(DurableQueue::new());
    /// let work = work_fn(|n: &u32| *n, |n: &u32, ctx: &WorkContext| {
    ///     let (n, epoch) = (*n, ctx.epoch());
    ///     async move { println!("task {n} under epoch {epoch}") }
    /// });
    /// let member = Managed::start_durable("jobs", options.clone(), work).await?;
    /// // Any process may submit, with no election:
    /// let queue = Queue::connect("jobs", options).await?;
    /// queue.submit_many(1..=3u32).await?;
    /// # member.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Managed::start`]; [`Error::InvalidOption`] for an in-memory store.
    pub async fn start_durable(name: &str, options: Options, work: W) -> Result<Self>
    where
        W::Task: serde::de::DeserializeOwned,
    {
        let decode = durable::decode::<W::Task>;
        Self::launch_durable(name, options, Arc::new(work), Arc::new(()), decode).await
    }

    /// Like [`Managed::start_durable`], with hooks called on every event.
    ///
    /// # Errors
    /// As [`Managed::start_durable`].
    pub async fn start_durable_with_hooks<H: Hooks>(
        name: &str,
        options: Options,
        work: W,
        hooks: H,
    ) -> Result<Self>
    where
        W::Task: serde::de::DeserializeOwned,
    {
        let decode = durable::decode::<W::Task>;
        Self::launch_durable(name, options, Arc::new(work), Arc::new(hooks), decode).await
    }

    /// Starts a [`Subsystem`] on its durable queue (what
    /// `#[failover::subsystem(queue = "mongodb")]` generates `start` with).
    ///
    /// # Errors
    /// As [`Managed::start_durable`].
    pub async fn start_durable_subsystem(options: Options, subsystem: W) -> Result<Self>
    where
        W: Subsystem,
        W::Task: serde::de::DeserializeOwned,
    {
        let subsystem = Arc::new(subsystem);
        let decode = durable::decode::<W::Task>;
        Self::launch_durable(W::NAME, options, subsystem.clone(), subsystem, decode).await
    }

    async fn launch_durable<H: Hooks>(
        name: &str,
        options: Options,
        work: Arc<W>,
        hooks: Arc<H>,
        decode: crate::__private::Decoder<W::Task>,
    ) -> Result<Self> {
        let store = Arc::new(durable::TaskStore::open(name, &options).await?);
        let events = Arc::new(EventSink::default());
        // Unused for tasks: the API's in-memory side stays empty.
        let queue = Arc::new(MemoryQueue::<W>::new(None, events.clone()));
        let backoff = options.retry;
        let max_attempts = options.max_attempts;
        let hook_wait = options.effective_lease();
        let renewal = options.intervals.master;
        let error_pause = options.intervals.error;
        // Nothing travels with the renewals: progress is in the queue's collection.
        let port = Arc::new(crate::shared::Unmanaged::default());
        let member = Member::launch(name, options, hooks, port, events.clone()).await?;
        let shared = member.shared().clone();
        let durable = Arc::new(Durable::new(
            store,
            work.clone(),
            decode,
            shared.clone(),
            events,
            renewal,
            error_pause,
        ));
        let depth = Arc::downgrade(&durable);
        shared
            .metrics
            .set_depth_source(move || depth.upgrade().map(|q| q.stats().queued));
        let worker = Worker {
            work: work.clone(),
            queue: durable.clone(),
            shared: shared.clone(),
            backoff,
            max_attempts,
            hook_wait,
            // The durable queue records its progress itself.
            progress: None,
        };
        Self::spawn_worker(name, member, work, queue, Some(durable), worker)
    }

    fn spawn_worker<S: Source<W>>(
        name: &str,
        member: Member,
        work: Arc<W>,
        queue: Arc<MemoryQueue<W>>,
        durable: Option<Arc<Durable<W>>>,
        worker: Worker<W, S>,
    ) -> Result<Self> {
        let shared = member.shared().clone();
        // On a multi-thread runtime the worker drives the runtime from a thread of
        // its own, so that work that blocks its thread cannot starve the election.
        // A current-thread runtime has one thread for everything (and Tokio's
        // paused test clock only sees that thread): the worker is a task there.
        let runtime = tokio::runtime::Handle::current();
        let (done, finished) = tokio::sync::oneshot::channel();
        if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            let task = tokio::spawn(worker.run());
            tokio::spawn(async move {
                let ended = task.await.map_err(|e| match e.try_into_panic() {
                    Ok(payload) => panic_message(payload),
                    Err(_) => "the worker was cancelled".to_owned(),
                });
                let _ = done.send(ended);
            });
        } else {
            let spawned = std::thread::Builder::new()
                .name(format!("failover-worker:{name}"))
                .spawn(move || {
                    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        runtime.block_on(worker.run())
                    }));
                    let _ = done.send(ended.map_err(panic_message));
                });
            if let Err(e) = spawned {
                member.abort();
                return Err(Error::invalid(
                    "worker",
                    format!("cannot start the worker's thread: {e}"),
                ));
            }
        }
        Self::watch(member, work, queue, durable, shared, finished)
    }

    /// Watches the worker: if it dies, the member cannot go on and hands the lease
    /// over.
    fn watch(
        member: Member,
        work: Arc<W>,
        queue: Arc<MemoryQueue<W>>,
        durable: Option<Arc<Durable<W>>>,
        shared: Arc<crate::shared::Shared>,
        finished: tokio::sync::oneshot::Receiver<std::result::Result<(), String>>,
    ) -> Result<Self> {
        // If the worker dies, the member cannot go on: it hands the lease over.
        let watcher = tokio::spawn(async move {
            let ended = finished
                .await
                .unwrap_or_else(|_| Err("the worker's thread ended without a word".to_owned()));
            if let Err(message) = &ended {
                tracing::error!(target: "failover::managed", member = %shared.member_id, %message,
                    "the worker panicked; this member stops and hands its lease over");
                shared
                    .events
                    .emit(Event::Panic(format!("worker panicked: {message}")));
                shared.stop();
            }
            ended
        });
        Ok(Managed {
            member,
            work,
            queue,
            durable,
            worker: Mutex::new(Some(watcher)),
        })
    }

    /// Adds a task to this member's queue. Feed every member the same tasks in the
    /// same order: the master works them, the standbys keep them until the master
    /// publishes that it ran them.
    ///
    /// With a bounded queue ([`Options::queue_capacity`]) this waits for room, or
    /// fails with [`Error::QueueFull`](crate::Error::QueueFull). Cancel-safe: a
    /// cancelled call has not queued the task.
    ///
    /// # Errors
    /// [`Error::Shutdown`] once the member is stopping;
    /// [`Error::Serialization`](crate::Error::Serialization) for a task whose key
    /// has no BSON form (such as a `u64` above `i64::MAX`) or is BSON `null` (a
    /// missing key field): it could not be told apart from other tasks when the
    /// master publishes it; [`Error::QueueFull`](crate::Error::QueueFull).
    pub async fn submit_work(&self, task: W::Task) -> Result<()> {
        if self.member.shared().is_stopping() {
            return Err(Error::Shutdown);
        }
        let key = self.work.key(&task);
        let bkey = bson::to_bson(&key).map_err(|e| {
            Error::serialization(
                "task key",
                format!("{e}; give keys a type with a BSON form (integers up to i64::MAX, strings, object ids)"),
            )
        })?;
        if matches!(bkey, bson::Bson::Null) {
            return Err(Error::serialization(
                "task key",
                "the task has no key (the key field is missing, null, or has no BSON form)",
            ));
        }
        let seq = self.work.sequence(&task);
        if let Some(seq) = seq.filter(|&s| s > i64::MAX as u64) {
            return Err(Error::argument(
                "task",
                format!("its sequence number {seq} is above i64::MAX, the largest a lease document can hold"),
            ));
        }
        if let Some(durable) = &self.durable {
            return durable::submit_task(durable, bkey, &task).await;
        }
        let submitted = self.queue.submit(key, bkey, seq, task).await;
        self.member.shared().metrics.queue_depth();
        submitted
    }

    /// The election side: state, epoch, events.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// Shorthand for `member().events()`.
    pub fn events(&self) -> Events {
        self.member.events()
    }

    /// Shorthand for `member().state()`.
    pub fn state(&self) -> State {
        self.member.state()
    }

    /// Shorthand for `member().epoch()`.
    pub fn epoch(&self) -> Option<u64> {
        self.member.epoch()
    }

    /// Shorthand for `member().health()`: see [`Member::health`].
    pub fn health(&self) -> crate::Health {
        self.member.health()
    }

    /// Counters of the queue.
    pub fn stats(&self) -> QueueStats {
        match &self.durable {
            Some(d) => d.stats(),
            None => self.queue.stats(),
        }
    }

    /// The key of the last finished task: this member's own as master, or the one
    /// the master last published.
    pub fn last_finished(&self) -> Option<W::Key> {
        match &self.durable {
            Some(d) => d.last_done(),
            None => self.queue.last_done(),
        }
    }

    /// The keys of the tasks waiting, in order (not those being worked on).
    pub fn queued_keys(&self) -> Vec<W::Key> {
        match &self.durable {
            Some(d) => d.keys(),
            None => self.queue.keys(),
        }
    }

    /// Takes the tasks that left the queue as dead letters since the last call.
    pub fn take_dead_letters(&self) -> Vec<(W::Key, W::Task)> {
        match &self.durable {
            Some(d) => d.take_dead_letters(),
            None => self.queue.take_dead_letters(),
        }
    }

    /// Whether this member works a durable queue ([`Managed::start_durable`]).
    pub fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// Stops the way a crash would: the running task is dropped, nothing is
    /// published, the lease is not handed over. Dropping it does the same.
    pub fn abort(&self) {
        self.member.abort();
    }

    /// Stops gracefully: starts no other task, lets the running one finish (for at
    /// most [`Options::shutdown_timeout`], then drops it), then publishes the run
    /// and hands the lease over in one write. Idempotent and cancel-safe (the stop
    /// goes on if this future is dropped).
    ///
    /// # Errors
    /// [`Error::Panic`](crate::Error::Panic) if the worker, the election or the
    /// hooks panicked.
    pub async fn shutdown(&self) -> Result<()> {
        let election = self.member.shutdown().await;
        let worker = lock(&self.worker).take();
        let worker = match worker {
            Some(w) => match w.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(Error::Panic {
                    place: "worker",
                    message,
                }),
                Err(e) => Err(Error::Panic {
                    place: "worker",
                    message: e.to_string(),
                }),
            },
            None => Ok(()),
        };
        worker.and(election)
    }
}

impl<W: Work> Drop for Managed<W> {
    fn drop(&mut self) {
        self.abort();
    }
}
