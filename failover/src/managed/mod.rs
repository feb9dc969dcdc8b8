//! Managed mode: every member is fed the same tasks; the master works them one at
//! a time, in order, and its progress travels to the standbys with each renewal,
//! so that a new master resumes after the last task the old one published.
//!
//! Guarantees:
//! * Tasks run on the master only, one at a time, in submission order; a task
//!   starts only after the worker has confirmed, by this process's monotonic
//!   clock, that the lease is valid (see the worker's notes on instant tasks).
//! * After each finished task the master records its key; the key travels with
//!   the next renewal (no database write per task). Standbys drop their tasks up to
//!   and including that key.
//! * After a crash, the tasks finished after the last published key run again on
//!   the new master; nothing is lost while one member still holds a task. A
//!   graceful [`Managed::shutdown`] finishes the running task and publishes its key
//!   in the release, so a hand-over repeats nothing.

mod queue;
mod work;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use queue::QueueStats;
pub use work::{key_field, work_fn, IntoOutcome, Outcome, Work, WorkContext};

use crate::error::Result;
use crate::event::{lock, EventSink, Events, Hooks};
use crate::member::Member;
use crate::options::Options;
use crate::state::State;
use queue::Queue;
use worker::Worker;

/// A subsystem described by one type: its name, its work and its hooks.
/// `#[failover::subsystem]` implements it; [`Managed::start_subsystem`] starts it.
pub trait Subsystem: Work + Hooks {
    /// The subsystem's name, shared by all its members.
    const NAME: &'static str;
}

/// A member of a managed subsystem: the election plus the work queue.
///
/// Dropping it without [`shutdown`](Managed::shutdown) stops it like a crash.
pub struct Managed<W: Work> {
    member: Member,
    work: Arc<W>,
    queue: Arc<Queue<W>>,
    stop: watch::Sender<bool>,
    stopping: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl<W: Work> std::fmt::Debug for Managed<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Managed")
            .field("member", &self.member)
            .field("stats", &self.queue.stats())
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
    /// cluster.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn start(name: &str, options: Options, work: W) -> Result<Self> {
        Self::launch(name, options, Arc::new(work), Arc::new(())).await
    }

    /// Like [`Managed::start`], with hooks called on every event.
    pub async fn start_with_hooks<H: Hooks>(
        name: &str,
        options: Options,
        work: W,
        hooks: H,
    ) -> Result<Self> {
        Self::launch(name, options, Arc::new(work), Arc::new(hooks)).await
    }

    /// Starts a [`Subsystem`]: its name, work and hooks in one value.
    pub async fn start_subsystem(options: Options, subsystem: W) -> Result<Self>
    where
        W: Subsystem,
    {
        let subsystem = Arc::new(subsystem);
        Self::launch(W::NAME, options, subsystem.clone(), subsystem).await
    }

    async fn launch<H: Hooks>(
        name: &str,
        options: Options,
        work: Arc<W>,
        hooks: Arc<H>,
    ) -> Result<Self> {
        let events = Arc::new(EventSink::default());
        let queue = Arc::new(Queue::<W>::new(options.queue_capacity, events.clone()));
        let backoff = options.retry;
        let max_attempts = options.max_attempts;
        let member = Member::launch_with(name, options, hooks, queue.clone(), events).await?;
        let (stop, stop_rx) = watch::channel(false);
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            stopping: stopping.clone(),
            work: work.clone(),
            queue: queue.clone(),
            shared: member.shared().clone(),
            backoff,
            max_attempts,
        };
        let worker = tokio::spawn(worker.run(stop_rx));
        Ok(Managed {
            member,
            work,
            queue,
            stop,
            stopping,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Adds a task to this member's queue. Feed every member the same tasks in the
    /// same order: the master works them, the standbys keep them until the master
    /// publishes that they are done.
    ///
    /// With a bounded queue ([`Options::queue_capacity`]) this waits for room, or
    /// fails with [`Error::QueueFull`](crate::Error::QueueFull).
    ///
    /// A task whose key is BSON `null` (a missing key field, or a key with no
    /// BSON form) is refused with [`Error::Serialization`](crate::Error::Serialization):
    /// it could not be told apart from other tasks when the master publishes it.
    pub async fn submit_work(&self, task: W::Task) -> Result<()> {
        let key = self.work.key(&task);
        if (&key as &dyn std::any::Any)
            .downcast_ref::<bson::Bson>()
            .is_some_and(|k| matches!(k, bson::Bson::Null))
        {
            return Err(crate::error::Error::serialization(
                "task key",
                "the task has no key (the key field is missing, null, or has no BSON form)",
            ));
        }
        self.queue.submit(key, task).await
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

    /// Counters of the queue.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// The key of the last finished task: this member's own as master, or the one
    /// the master last published.
    pub fn last_finished(&self) -> Option<W::Key> {
        self.queue.last_done()
    }

    /// The keys of the tasks waiting, in order (not those being worked on).
    pub fn queued_keys(&self) -> Vec<W::Key> {
        self.queue.keys()
    }

    /// Takes the tasks that left the queue as dead letters since the last call.
    pub fn take_dead_letters(&self) -> Vec<(W::Key, W::Task)> {
        self.queue.take_dead_letters()
    }

    /// Stops the way a crash would: no task is finished or started, nothing is
    /// published, the lease is not handed over. Dropping it does the same.
    pub fn abort(&self) {
        if let Some(worker) = lock(&self.worker).take() {
            worker.abort();
        }
        self.member.abort();
    }

    /// Stops gracefully: lets the running task finish, starts no other, then
    /// publishes the last finished key and hands the lease over in one write.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.send_replace(true);
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        self.member.shutdown().await;
    }
}

impl<W: Work> Drop for Managed<W> {
    fn drop(&mut self) {
        self.abort();
    }
}
