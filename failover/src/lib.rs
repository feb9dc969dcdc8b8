//! Active/passive failover of a subsystem's instances, coordinated through MongoDB.
//!
//! A Rust port of the Node package mongoose-failover: every running instance
//! (*member*) of a named subsystem takes part in an election through one lease
//! document in MongoDB; one member is *master*, the others are *slaves* (standbys)
//! ready to take over. On top of the original it gives each lease a fencing token
//! ([`Member::epoch`]), judges expiry without comparing machines' clocks, steps a
//! master down before anybody else may take over, and hands the lease over at
//! once on [`Member::shutdown`]. The protocol is described in [`lease`].
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
//! a.shutdown().await; // hands the lease over
//! let epoch = b.wait_for_master().await?;
//! assert_eq!(epoch, 2);
//! # b.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Tracing targets mirror the original's debug namespaces: `failover`,
//! `failover::tests` (every check), `failover::states` (state changes) and
//! `failover::managed` (synchronization and work).
#![warn(missing_docs)]

mod election;
mod error;
mod event;
pub mod lease;
mod managed;
mod member;
mod options;
mod state;
mod store;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use error::{Error, Result};
pub use event::{Event, Events, Hooks};
pub use failover_macros::{
    on_error, on_master, on_slave, on_state_change, on_synchronize, subsystem, work,
};
pub use managed::{
    key_field, work_fn, IntoOutcome, Managed, Outcome, QueueStats, Subsystem, Work, WorkContext,
};
pub use member::Member;
pub use options::{
    Backoff, Intervals, Options, QueueFull, DEFAULT_COLLECTION, DEFAULT_CONNECT_STRING,
};
pub use state::State;
pub use store::MemoryStore;

/// Re-exported so that applications need no direct dependency to build ids and tasks.
pub use bson;
