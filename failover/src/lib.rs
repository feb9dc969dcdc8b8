//! Active/passive failover of a subsystem's instances, coordinated through MongoDB.
//!
//! A Rust port of the Node package mongoose-failover: every running instance
//! (*member*) of a named subsystem takes part in an election through one lease
//! document in MongoDB; one member is *master*, the others are *slaves* (standbys)
//! ready to take over. On top of the original it gives each lease a fencing token
//! ([`Member::epoch`]) that only grows, judges expiry on the clock of the database
//! node that stamps the lease (never a member's or a `mongos`'s), steps a master
//! down before anybody else may take over, scopes work to a term of leadership
//! ([`Member::run_while_master`], [`Leadership`]), and hands the lease over once
//! the work has stopped on [`Member::shutdown`] or on an operator's [`step_down`].
//! Any process can see who leads ([`Member::leader`], [`status`], [`list`],
//! [`watch`]); the `failover` command-line tool (cargo feature `cli`) does it from
//! a shell and runs any program under failover. The protocol, what it guarantees
//! and under which assumptions, is described in [`lease`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
//! use failover::{Member, MemoryStore, Options, State};
//!
//! // Two members of one subsystem; here in one process, on the in-memory store.
//! let store = MemoryStore::new();
//! let a = Member::start("billing", Options::new().in_memory(&store).member_id("a")).await?;
//! a.wait_for_master().await?;
//! let b = Member::start("billing", Options::new().in_memory(&store).member_id("b")).await?;
//! b.wait_for_state(State::Slave).await?;
//!
//! a.shutdown().await?; // hands the lease over
//! let epoch = b.wait_for_master().await?;
//! assert_eq!(epoch, 2);
//! # b.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Tracing targets mirror the original's debug namespaces: `failover`,
//! `failover::tests` (every check), `failover::states` (state changes) and
//! `failover::managed` (synchronization and work). Take-overs, renewals, releases
//! and managed tasks run in spans with the fields `subsystem`, `member` and `epoch`;
//! with the cargo feature `metrics` every member records the metrics listed in
//! [`metrics`]; [`Member::health`] is a framework-free health check.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod clock;
mod election;
mod error;
mod event;
pub mod fence;
mod health;
mod leadership;
pub mod lease;
mod managed;
mod member;
pub mod metrics;
mod options;
mod repair;
mod shared;
mod state;
mod status;
mod store;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use error::{DriverError, Error, Result};
pub use event::{Event, Events, Hooks};
pub use health::{Health, Unhealthy};
pub use leadership::Leadership;

/// Declares a managed subsystem in one type: its name, how to key its tasks, the
/// work and the hooks.
///
/// The attribute goes on two items: on the struct that holds the subsystem's
/// state, with the subsystem's name and task key, and on that struct's `impl`
/// block, where [`#[work]`](macro@work) marks the method that does a task and the
/// hook attributes mark the methods called on events. The struct then has an
/// `async fn start(self, options: Options) -> Result<Managed<Self>>`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> failover::Result<()> {
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use failover::{MemoryStore, Options, Outcome, WorkContext};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Invoice {
///     id: u64,
///     amount: u64,
/// }
///
/// #[failover::subsystem(name = "billing", key = "id")]
/// struct Billing {
///     charged: AtomicU64,
/// }
///
/// #[failover::subsystem]
/// impl Billing {
///     /// Runs on the master only, one invoice at a time, in submission order.
///     #[work]
///     async fn charge(&self, invoice: &Invoice, ctx: &WorkContext) -> Outcome {
///         // Put `ctx.epoch()`, the fencing token, on every write to shared state.
///         println!("charging invoice {} under epoch {}", invoice.id, ctx.epoch());
///         self.charged.fetch_add(invoice.amount, Ordering::SeqCst);
///         Outcome::Done
///     }
///
///     #[on_master]
///     async fn leading(&self, epoch: u64) {
///         println!("billing master with fencing token {epoch}");
///     }
/// }
///
/// // One member here; run one per process, each with the same name and options.
/// let store = MemoryStore::new();
/// let billing = Billing { charged: AtomicU64::new(0) }
///     .start(Options::new().in_memory(&store))
///     .await?;
/// for id in 1..=3 {
///     billing.submit_work(Invoice { id, amount: 10 }).await?;
/// }
/// billing.member().wait_for_master().await?;
/// # while billing.stats().finished < 3 { tokio::time::sleep(std::time::Duration::from_millis(5)).await }
/// billing.shutdown().await?; // finishes the running task, then hands the lease over
/// # Ok(()) }
/// ```
///
/// # On the struct
///
/// | argument | meaning |
/// |---|---|
/// | `name = "billing"` | Required. The subsystem's name, the same for all its members. A string literal of 1 to 128 bytes without control characters, white space at either end or a leading `$`, checked at compile time. |
/// | `key = "id"` | The field of the task that identifies it: `"customer.id"` for a nested field, `"0"` for a tuple struct's first field, `"r#type"` for a keyword. |
/// | `key_fn = path` | Instead of `key`: a function `fn(&Task) -> impl Serialize` that computes the key. |
/// | `queue = "mongodb"` | Keeps the queue in MongoDB ([`DurableQueue`], [`Queue`]): `start` then works the durable queue (settings in [`Options::durable_queue`]); the task type must also implement `Deserialize`. `"memory"`, the default, is the in-memory queue. |
/// | `crate = "path"` | Where this crate is when the dependency is renamed (default `::failover`). Written once, on the struct; the `impl` block's attribute may repeat the same path. |
///
/// The struct has named fields (or none: `struct Jobs;`), no generic parameters,
/// and is `Send + Sync + 'static`: the runtime shares it between the election and
/// the work, so keep state that changes behind a lock or in atomics.
///
/// The [`Work::Key`] of a macro-built subsystem is [`bson::Bson`]: the key field's
/// value (or `key_fn`'s result) converted to BSON, which is what the master
/// publishes to the standbys. Keys must be unique among the tasks in one queue at
/// one time; they may repeat over time. A value with no BSON form (such as a `u64`
/// above `i64::MAX`) becomes `Bson::Null`, and `submit_work` refuses the task with
/// [`Error::Serialization`]; give keys a type with a BSON form (integers up to
/// `i64::MAX`, strings, object ids).
///
/// # On the `impl` block
///
/// The attribute takes no arguments there (but `crate`). Exactly one method is
/// marked [`#[work]`](macro@work):
///
/// ```text
/// #[work]
/// async fn name(&self, task: &Task) -> R
/// async fn name(&self, task: &Task, ctx: &failover::WorkContext) -> R
/// ```
///
/// * The task type comes from the task parameter; it is
///   `Serialize + Send + Sync + 'static`. A method may take the task by value
///   (`task: Task`) when `Task: Clone`: it then gets a clone for each attempt,
///   since the queue keeps the task until it is done.
/// * The context ([`WorkContext`], by reference or by value) is optional.
/// * `R` implements [`IntoOutcome`]: [`Outcome`], `bool`, `()`, or a `Result` of
///   one of these whose error implements `Display` (`true`, `()`, `Ok(true)`,
///   `Ok(())` are done; `false`, `Ok(false)` and `Err(_)` are retried).
/// * The future must be `Send`.
///
/// Hooks, each optional, at most one of each, as `async fn` or plain `fn`
/// (a plain `fn` runs on the hooks' task: keep it quick):
///
/// | attribute | signature | called when |
/// |---|---|---|
/// | [`#[on_master]`](macro@on_master) | `(&self, epoch: u64)` | this member became master; `epoch` is its fencing token |
/// | [`#[on_slave]`](macro@on_slave) | `(&self, epoch: u64)` | this member follows the master holding `epoch` |
/// | [`#[on_synchronize]`](macro@on_synchronize) | `(&self, id: failover::bson::Bson)` | a standby learned the key of the master's last finished task |
/// | [`#[on_state_change]`](macro@on_state_change) | `(&self, old: failover::State, new: failover::State)` | the member changed state |
/// | [`#[on_error]`](macro@on_error) | `(&self, error: failover::Error)` | a database command failed (the member retries by itself) |
///
/// They are the methods of [`Hooks`]; see there for how hooks run. The block's
/// other items stay as they are.
///
/// # What it generates
///
/// On the types only: implementations of [`Work`], [`Hooks`] and [`Subsystem`]
/// (and of a hidden trait), and the inherent method `start`, the same as
/// [`Managed::start_subsystem`]`(options, self)`; so do not define a method named
/// `start` on the struct yourself. Beside the struct, a hidden macro with the
/// struct's name carries its settings to the `impl` block's expansion, so name the
/// struct directly in the `impl` (not through a type alias). Nothing else is added to your namespace, and
/// the generated code names this crate by absolute paths only: it needs no
/// imports, and no dependencies besides this crate.
///
/// # Mistakes
///
/// Mistakes are reported at compile time, all at once, on the tokens at fault,
/// with what to write instead: a missing or invalid name, a key field the task
/// does not have, a `#[work]` method that is not `async` or returns something
/// that is no outcome, a hook with the wrong parameters, and so on. An `impl`
/// block whose struct lacks `#[failover::subsystem(...)]` reads "cannot find macro
/// `Jobs` in this scope".
pub use failover_macros::subsystem;

/// Marks the method of a [`#[subsystem]`](macro@subsystem) `impl` block that does a
/// task; see there. Anywhere else it is a compile error that says so.
pub use failover_macros::work;

/// Marks the method of a [`#[subsystem]`](macro@subsystem) `impl` block called when
/// this member becomes master: `fn(&self, epoch: u64)`, `async` or not. Anywhere
/// else it is a compile error that says so.
pub use failover_macros::on_master;

/// Marks the method of a [`#[subsystem]`](macro@subsystem) `impl` block called when
/// this member follows a master: `fn(&self, epoch: u64)`, `async` or not. Anywhere
/// else it is a compile error that says so.
pub use failover_macros::on_slave;

/// Marks the method of a [`#[subsystem]`](macro@subsystem) `impl` block called when
/// a standby learns the key of the master's last finished task:
/// `fn(&self, id: failover::bson::Bson)`, `async` or not. Anywhere else it is a
/// compile error that says so.
pub use failover_macros::on_synchronize;

/// Marks the method of a [`#[subsystem]`](macro@subsystem) `impl` block called when
/// this member changes state: `fn(&self, old: failover::State, new: failover::State)`,
/// `async` or not. Anywhere else it is a compile error that says so.
pub use failover_macros::on_state_change;

/// Marks the method of a [`#[subsystem]`](macro@subsystem) `impl` block called when
/// a database command fails: `fn(&self, error: failover::Error)`, `async` or not.
/// Anywhere else it is a compile error that says so.
pub use failover_macros::on_error;

pub use managed::{
    key_field, work_fn, IntoOutcome, Managed, Outcome, QueueStats, Subsystem, Work, WorkContext,
};
pub use managed::{DeadLetter, DurableQueue, Progress, Queue};
pub use member::Member;
pub use options::{
    Backoff, Intervals, Options, QueueFull, DEFAULT_COLLECTION, DEFAULT_CONNECT_STRING,
};
pub use repair::repair_lease;
pub use state::State;
pub use status::{list, status, step_down, watch, LeaderInfo, LeaseState, Watch};
pub use store::MemoryStore;

/// Re-exported so that applications need no direct dependency to build ids and tasks.
pub use bson;
