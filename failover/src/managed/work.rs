//! What the application gives managed mode: the work, the task key, the outcome.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::shared::Shared;

/// The work of a managed subsystem: how to key a task and how to do it.
///
/// Implemented by `#[failover::subsystem]`, by [`work_fn`] for closures, or by hand.
///
/// ```
/// use failover::{Outcome, Work, WorkContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Invoice { id: u64, amount: u64 }
///
/// struct Billing;
///
/// impl Work for Billing {
///     type Task = Invoice;
///     type Key = u64;
///     fn key(&self, task: &Invoice) -> u64 { task.id }
///     async fn work(&self, task: &Invoice, ctx: &WorkContext) -> Outcome {
///         println!("charging {} under fencing token {}", task.amount, ctx.epoch());
///         Outcome::Done
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no work: it does not implement `failover::Work`",
    label = "`{Self}` needs a `#[work]` method",
    note = "with the macro, add `#[failover::subsystem] impl {Self} {{ #[work] async fn name(&self, task: &Task) -> failover::Outcome {{ ... }} }}`",
    note = "by hand, write `impl failover::Work for {Self}`, or build the work from closures with `failover::work_fn`"
)]
pub trait Work: Send + Sync + 'static {
    /// A unit of work. Every member is fed the same tasks.
    type Task: Serialize + Send + Sync + 'static;
    /// What identifies a task; published to the standbys after the task is done.
    type Key: Serialize + DeserializeOwned + PartialEq + Clone + Debug + Send + Sync + 'static;

    /// The task's key: its identity when the standbys drop what the master ran.
    /// Without [`sequence`](Work::sequence), a key must not be reused while a
    /// member may still hold or be fed the earlier task with that key (in practice:
    /// keys never repeat); with it, keys may repeat freely.
    fn key(&self, task: &Self::Task) -> Self::Key;

    /// The task's feed sequence number, if the feed numbers its tasks: a number
    /// that grows with every task in feed order, the same for a task on every
    /// member (a message log's offset, a table's auto-increment id). With one,
    /// the standbys drop exactly the tasks a master ran, whatever their keys and
    /// wherever each member's feed started (the README's "Managed mode"). Return
    /// `Some` for every task or for none. The default is `None`.
    fn sequence(&self, task: &Self::Task) -> Option<u64> {
        let _ = task;
        None
    }

    /// Does the task, on the master only, one task at a time, in submission order.
    fn work(&self, task: &Self::Task, ctx: &WorkContext) -> impl Future<Output = Outcome> + Send;
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the task leaves the queue and its key is published.
    Done,
    /// Not done: try again after the retry back-off (the original's `false` or
    /// rejected promise). Counts towards `max_attempts`.
    Retry(String),
    /// Will never succeed: the task leaves the queue at once as a dead letter
    /// ([`Event::DeadLetter`](crate::Event::DeadLetter)).
    Failed(String),
}

/// Converts what a work function returns into an [`Outcome`]. Implemented for
/// `Outcome`, `bool` and `Result<bool | () | Outcome, E: Display>`, so that the
/// original's convention holds: `true`/`Ok(true)`/`Ok(())` done, `false`,
/// `Ok(false)` and `Err(_)` retried.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an outcome of work",
    label = "work returns `failover::Outcome`, `bool` or `()`, or a `Result` of one of these whose error implements `Display`",
    note = "`true`, `()`, `Ok(true)` and `Ok(())` mean done; `false`, `Ok(false)` and `Err(_)` mean retry; `Outcome::Failed` gives up"
)]
pub trait IntoOutcome {
    /// The outcome.
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl IntoOutcome for bool {
    fn into_outcome(self) -> Outcome {
        if self {
            Outcome::Done
        } else {
            Outcome::Retry("work returned false".to_owned())
        }
    }
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Done
    }
}

impl<T: IntoOutcome, E: Display> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(v) => v.into_outcome(),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

/// What a task knows about the mastership it runs under.
#[derive(Clone)]
pub struct WorkContext {
    pub(crate) epoch: u64,
    pub(crate) attempt: u32,
    pub(crate) shared: Arc<Shared>,
    pub(crate) token: tokio_util::sync::CancellationToken,
}

impl Debug for WorkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkContext")
            .field("epoch", &self.epoch)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl WorkContext {
    /// The fencing token of the mastership this task runs under: put it on every
    /// write the task makes (see [`crate::fence`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this member still holds the lease of [`epoch`](Self::epoch) at this
    /// instant. A long task should check it between steps and stop when it is false.
    pub fn is_master(&self) -> bool {
        self.shared.holds(self.epoch)
    }

    /// Resolves once the mastership of this epoch is lost (or was already). Use it
    /// with `tokio::select!` to abandon a long task; an abandoned task is retried by
    /// the next master.
    pub async fn lost(&self) {
        let mut status = self.shared.watch();
        loop {
            if !self.is_master() {
                return;
            }
            let until = self.shared.clock.timer(self.shared.valid_until());
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(until) => {}
                _ = self.token.cancelled() => return,
            }
        }
    }

    /// Resolves when the term this task runs under ends: the master's deadline
    /// passed without a renewal (before any standby may take over), the lease was
    /// lost, the member is stopping, or it was asked to step down
    /// ([`crate::step_down`]; the lease is then handed over once the task has
    /// finished). Cancel-safe.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The term's cancellation token, to hand to code that takes one.
    pub fn cancellation_token(&self) -> tokio_util::sync::CancellationToken {
        self.token.clone()
    }
}

/// [`Work`] from two closures: `key(&task)` and `work(&task, &ctx)`, whose
/// future must own what it uses (clone from the task what the future needs).
///
/// ```
/// use failover::{work_fn, WorkContext};
///
/// let work = work_fn(
///     |n: &u32| *n,
///     |n: &u32, _ctx: &WorkContext| {
///         let n = *n;
///         async move { n % 10 != 0 } // true: done; false: retry
///     },
/// );
/// # let _ = work;
/// ```
pub fn work_fn<T, K, O, Fk, Fw, Fut>(key: Fk, work: Fw) -> impl Work<Task = T, Key = K>
where
    T: Serialize + Send + Sync + 'static,
    K: Serialize + DeserializeOwned + PartialEq + Clone + Debug + Send + Sync + 'static,
    O: IntoOutcome,
    Fk: Fn(&T) -> K + Send + Sync + 'static,
    Fw: Fn(&T, &WorkContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
{
    FnWork {
        key,
        work,
        types: PhantomData,
    }
}

/// Ties the closures' argument and result types to [`FnWork`].
type Signature<T, K, Fut> = fn(&T) -> (K, Fut);

struct FnWork<T, K, Fut, Fk, Fw> {
    key: Fk,
    work: Fw,
    types: PhantomData<Signature<T, K, Fut>>,
}

impl<T, K, O, Fk, Fw, Fut> Work for FnWork<T, K, Fut, Fk, Fw>
where
    T: Serialize + Send + Sync + 'static,
    K: Serialize + DeserializeOwned + PartialEq + Clone + Debug + Send + Sync + 'static,
    O: IntoOutcome,
    Fk: Fn(&T) -> K + Send + Sync + 'static,
    Fw: Fn(&T, &WorkContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
{
    type Task = T;
    type Key = K;

    fn key(&self, task: &T) -> K {
        (self.key)(task)
    }

    fn work(&self, task: &T, ctx: &WorkContext) -> impl Future<Output = Outcome> + Send {
        let fut = (self.work)(task, ctx);
        async move { fut.await.into_outcome() }
    }
}

/// A key function that reads the field `name` of a task, as the original's string
/// key does. The key is the field's BSON value; a task without the field gets
/// the key `null`, and [`Managed::submit_work`](crate::Managed::submit_work) refuses it.
///
/// ```
/// use failover::{key_field, bson::Bson};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Job { id: String }
///
/// let key = key_field::<Job>("id");
/// assert_eq!(key(&Job { id: "j1".into() }), Bson::String("j1".into()));
/// ```
pub fn key_field<T: Serialize>(
    name: &'static str,
) -> impl Fn(&T) -> bson::Bson + Send + Sync + 'static {
    move |task: &T| {
        bson::to_document(task)
            .ok()
            .and_then(|mut d| d.remove(name))
            .unwrap_or(bson::Bson::Null)
    }
}
