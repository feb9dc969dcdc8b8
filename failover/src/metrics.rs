//! Metrics and tracing spans of a member.
//!
//! With the cargo feature `metrics`, every member records the metrics below
//! through the [`metrics` facade](https://docs.rs/metrics/0.24) (version 0.24): the
//! application installs the exporter it likes (Prometheus, StatsD, …) as the
//! global recorder, before it starts its members. Without the feature nothing is
//! recorded, the `metrics` crate is not a dependency, and the calls compile to
//! nothing. Recording never adds a database operation: every value is one the
//! member already has.
//!
//! Every metric has the labels `subsystem` (the subsystem's name) and `member`
//! (the member id); some have one more, named in the table.
//!
//! | name | kind | extra label | meaning |
//! |---|---|---|---|
//! | `failover_is_master` | gauge | | 1 while this member holds the lease and may act, else 0 |
//! | `failover_epoch` | gauge | | the newest epoch this member knows: its own while master, the epoch of the master it follows as a standby |
//! | `failover_transitions_total` | counter | `to`: `init`, `ticking`, `master`, `slave`, `error`, `stopped` | state changes, by the state entered; `to="master"` counts the terms won, `to="error"` the outages |
//! | `failover_takeovers_total` | counter | `from`: `none`, `released`, `expired` | leases this member took: `none` a lease created anew, `released` a hand-over (or its own lease from before a step-down), `expired` the lease of a master that stopped renewing (crashed, cut off, paused) |
//! | `failover_renewal_seconds` | histogram | | duration of each renewal attempt of the master, from sending the write to its answer (or its deadline) |
//! | `failover_renewal_failures_total` | counter | | renewal attempts that failed (a database error, a timeout, or a renewal due after the master's deadline); a lease lost to another member is not counted here but as a transition |
//! | `failover_queue_depth` | gauge | | managed mode: tasks in this member's queue (waiting or running); updated when a task is submitted, finished or retried, and at every check of a standby |
//! | `failover_task_seconds` | histogram | | managed mode: duration of each attempt of a task on the master |
//! | `failover_tasks_total` | counter | | managed mode: tasks this member finished as master (done; dead letters are counted apart) |
//! | `failover_task_retries_total` | counter | | managed mode: attempts that asked for a retry (or panicked) and were retried |
//! | `failover_dead_letters_total` | counter | | managed mode: tasks this member gave up on after [`Options::max_attempts`](crate::Options::max_attempts) |
//! | `failover_tasks_maybe_repeated_total` | counter | | managed mode: an estimate, see below |
//!
//! # Repeated tasks
//!
//! A task repeats when a master finished it but crashed (or was cut off) before
//! its next renewal published it: the next master does not know, and runs it
//! again. No member can tell which tasks those were. The in-memory queue keeps no
//! record, and the only master that knew is gone. So
//! `failover_tasks_maybe_repeated_total` counts the tasks that *can* be such
//! repeats: those a member finished (done or dead-lettered) within one lease
//! duration after it took over an **expired** lease. The crashed master could run
//! unpublished tasks only for less than one lease (from its last renewal to its
//! deadline), and they are the first tasks the new master runs. It is an
//! estimate: it counts tasks that did not repeat when the crashed master had
//! published everything, and it misses repeats when the new master works slower
//! than the old one did or spends part of that lease in its `on_master` hook. It
//! stays 0 after a hand-over (a graceful [`shutdown`](crate::Member::shutdown)
//! publishes everything): read it beside `failover_takeovers_total{from="expired"}`.
//! A member whose queue did not know where the previous master stopped
//! ([`Event::ResumePointUnknown`](crate::Event::ResumePointUnknown)) works its
//! queue from the head: its repeats are not bounded by one lease, and this counter
//! does not cover them; watch that event for it.
//!
//! # Tracing spans
//!
//! Independent of the feature, the member opens [`tracing`] spans with the fields
//! `subsystem`, `member` and `epoch`: `take_over` (info level; `epoch` is filled
//! in when the take-over is won), `renew` (debug level), `release` (info level),
//! and `task` (debug level, with the task's `key` too) around each attempt of a
//! managed task. Their target is `failover` (`failover::managed` for tasks).

use std::time::Duration;

use tokio::time::Instant;
use tracing::Span;

use crate::state::State;

/// Gauge: 1 while this member holds the lease and may act, else 0.
pub const IS_MASTER: &str = "failover_is_master";
/// Gauge: the newest epoch this member knows (its own, or its master's).
pub const EPOCH: &str = "failover_epoch";
/// Counter, label `to`: state changes, by the state entered.
pub const TRANSITIONS: &str = "failover_transitions_total";
/// Counter, label `from`: leases this member took.
pub const TAKEOVERS: &str = "failover_takeovers_total";
/// Histogram, seconds: duration of each renewal attempt.
pub const RENEWAL_SECONDS: &str = "failover_renewal_seconds";
/// Counter: renewal attempts that failed.
pub const RENEWAL_FAILURES: &str = "failover_renewal_failures_total";
/// Gauge: tasks in this member's queue.
pub const QUEUE_DEPTH: &str = "failover_queue_depth";
/// Histogram, seconds: duration of each attempt of a task.
pub const TASK_SECONDS: &str = "failover_task_seconds";
/// Counter: tasks finished (done) by this member as master.
pub const TASKS: &str = "failover_tasks_total";
/// Counter: attempts that were retried.
pub const TASK_RETRIES: &str = "failover_task_retries_total";
/// Counter: tasks moved out of the queue as dead letters.
pub const DEAD_LETTERS: &str = "failover_dead_letters_total";
/// Counter: tasks finished within one lease after taking over an expired lease
/// (see [the module docs](self#repeated-tasks)).
pub const TASKS_MAYBE_REPEATED: &str = "failover_tasks_maybe_repeated_total";

/// How a lease was taken: the `from` label of [`TAKEOVERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakenFrom {
    /// No lease existed.
    None,
    /// Released by its master (or this member's own lease).
    Released,
    /// Its master stopped renewing.
    Expired,
}

impl TakenFrom {
    /// Whether a lease was `seen` before the take-over, and whether it had to be
    /// confirmed expired (it was not released, nor this member's own).
    pub(crate) fn of(seen: bool, confirmed_expired: bool) -> TakenFrom {
        match (seen, confirmed_expired) {
            (false, _) => TakenFrom::None,
            (true, false) => TakenFrom::Released,
            (true, true) => TakenFrom::Expired,
        }
    }
}

/// A member's metric handles, registered once when it starts (no allocation per
/// event). Without the `metrics` feature it is empty and every method is a no-op.
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    on: enabled::Handles,
}

impl Metrics {
    /// Registers the member's metrics with the recorder in force (the global one,
    /// or a local one for tests).
    pub(crate) fn new(subsystem: &str, member: &str) -> Metrics {
        let _ = (subsystem, member);
        Metrics {
            #[cfg(feature = "metrics")]
            on: enabled::Handles::new(subsystem, member),
        }
    }

    /// The member entered `state`.
    #[inline]
    pub(crate) fn state(&self, state: State) {
        #[cfg(feature = "metrics")]
        self.on.transitions[enabled::state_index(state)].increment(1);
        let _ = state;
    }

    /// The lease this member may act under (`None`: none).
    #[inline]
    pub(crate) fn lease(&self, epoch: Option<u64>) {
        #[cfg(feature = "metrics")]
        {
            self.on
                .is_master
                .set(if epoch.is_some() { 1.0 } else { 0.0 });
            if let Some(epoch) = epoch {
                self.on.epoch.set(epoch as f64);
            }
        }
        let _ = epoch;
    }

    /// A standby follows the master of `epoch` (at every check: its queue's
    /// depth is read too).
    #[inline]
    pub(crate) fn followed(&self, epoch: u64) {
        #[cfg(feature = "metrics")]
        {
            self.on.epoch.set(epoch as f64);
            self.queue_depth();
        }
        let _ = epoch;
    }

    /// This member took the lease of `epoch`; `window_end` is one lease later.
    #[inline]
    pub(crate) fn took_over(&self, epoch: u64, from: TakenFrom, window_end: Instant) {
        #[cfg(feature = "metrics")]
        {
            self.on.takeovers[from as usize].increment(1);
            *crate::event::lock(&self.on.repeat_window) =
                (from == TakenFrom::Expired).then_some((epoch, window_end));
        }
        let _ = (epoch, from, window_end);
    }

    /// A renewal attempt answered (or timed out) after `elapsed`.
    #[inline]
    pub(crate) fn renewal(&self, elapsed: Duration, ok: bool) {
        #[cfg(feature = "metrics")]
        {
            self.on.renewal_seconds.record(elapsed.as_secs_f64());
            if !ok {
                self.on.renewal_failures.increment(1);
            }
        }
        let _ = (elapsed, ok);
    }

    /// A renewal could not even be attempted: it was due after the deadline.
    #[inline]
    pub(crate) fn renewal_missed(&self) {
        #[cfg(feature = "metrics")]
        self.on.renewal_failures.increment(1);
    }

    /// Managed mode: how to read the queue's depth (set once, at start).
    pub(crate) fn set_depth_source(
        &self,
        source: impl Fn() -> Option<usize> + Send + Sync + 'static,
    ) {
        #[cfg(feature = "metrics")]
        let _ = self.on.depth_source.set(Box::new(source));
        #[cfg(not(feature = "metrics"))]
        let _ = source;
    }

    /// Managed mode: reads the queue's depth into its gauge.
    #[inline]
    pub(crate) fn queue_depth(&self) {
        #[cfg(feature = "metrics")]
        if let Some(depth) = self.on.depth_source.get().and_then(|source| source()) {
            self.on.queue_depth.set(depth as f64);
        }
    }

    /// Managed mode: an attempt of a task of `epoch`, started at `started` (lease
    /// clock), took `elapsed` and ended the task (done, or a dead letter).
    #[inline]
    pub(crate) fn task_finished(
        &self,
        epoch: u64,
        started: Instant,
        elapsed: Duration,
        dead_letter: bool,
    ) {
        #[cfg(feature = "metrics")]
        {
            self.on.task_seconds.record(elapsed.as_secs_f64());
            if dead_letter {
                self.on.dead_letters.increment(1);
            } else {
                self.on.tasks.increment(1);
            }
            let window = *crate::event::lock(&self.on.repeat_window);
            if window.is_some_and(|(e, end)| e == epoch && started < end) {
                self.on.maybe_repeated.increment(1);
            }
            self.queue_depth();
        }
        let _ = (epoch, started, elapsed, dead_letter);
    }

    /// Managed mode: an attempt took `elapsed` and the task will be retried.
    #[inline]
    pub(crate) fn task_retried(&self, elapsed: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.on.task_seconds.record(elapsed.as_secs_f64());
            self.on.task_retries.increment(1);
            self.queue_depth();
        }
        let _ = elapsed;
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::{Mutex, OnceLock};

    use metrics::{Counter, Gauge, Histogram, Label, Unit};
    use tokio::time::Instant;

    use super::*;

    type DepthSource = Box<dyn Fn() -> Option<usize> + Send + Sync>;

    pub(super) struct Handles {
        pub is_master: Gauge,
        pub epoch: Gauge,
        /// By [`state_index`].
        pub transitions: [Counter; 6],
        /// By [`TakenFrom`].
        pub takeovers: [Counter; 3],
        pub renewal_seconds: Histogram,
        pub renewal_failures: Counter,
        pub queue_depth: Gauge,
        pub task_seconds: Histogram,
        pub tasks: Counter,
        pub task_retries: Counter,
        pub dead_letters: Counter,
        pub maybe_repeated: Counter,
        pub depth_source: OnceLock<DepthSource>,
        /// After a take-over of an expired lease: its epoch and the end of the
        /// window in which a finished task may be a repeat.
        pub repeat_window: Mutex<Option<(u64, Instant)>>,
    }

    pub(super) fn state_index(state: State) -> usize {
        match state {
            State::Init => 0,
            State::Ticking => 1,
            State::Master => 2,
            State::Slave => 3,
            State::Error => 4,
            State::Stopped => 5,
        }
    }

    impl Handles {
        pub fn new(subsystem: &str, member: &str) -> Handles {
            describe();
            let base = vec![
                Label::new("subsystem", subsystem.to_owned()),
                Label::new("member", member.to_owned()),
            ];
            let with = |key: &'static str, value: &'static str| {
                let mut labels = base.clone();
                labels.push(Label::new(key, value));
                labels
            };
            let states = [
                State::Init,
                State::Ticking,
                State::Master,
                State::Slave,
                State::Error,
                State::Stopped,
            ];
            Handles {
                is_master: metrics::gauge!(IS_MASTER, base.clone()),
                epoch: metrics::gauge!(EPOCH, base.clone()),
                transitions: states.map(|s| metrics::counter!(TRANSITIONS, with("to", s.as_str()))),
                takeovers: ["none", "released", "expired"]
                    .map(|from| metrics::counter!(TAKEOVERS, with("from", from))),
                renewal_seconds: metrics::histogram!(RENEWAL_SECONDS, base.clone()),
                renewal_failures: metrics::counter!(RENEWAL_FAILURES, base.clone()),
                queue_depth: metrics::gauge!(QUEUE_DEPTH, base.clone()),
                task_seconds: metrics::histogram!(TASK_SECONDS, base.clone()),
                tasks: metrics::counter!(TASKS, base.clone()),
                task_retries: metrics::counter!(TASK_RETRIES, base.clone()),
                dead_letters: metrics::counter!(DEAD_LETTERS, base.clone()),
                maybe_repeated: metrics::counter!(TASKS_MAYBE_REPEATED, base),
                depth_source: OnceLock::new(),
                repeat_window: Mutex::new(None),
            }
        }
    }

    /// Describes every metric to the recorder (idempotent).
    fn describe() {
        metrics::describe_gauge!(
            IS_MASTER,
            "1 while this member holds the lease and may act, else 0"
        );
        metrics::describe_gauge!(
            EPOCH,
            "the newest epoch this member knows: its own, or its master's"
        );
        metrics::describe_counter!(
            TRANSITIONS,
            "state changes, by the state entered (label `to`)"
        );
        metrics::describe_counter!(
            TAKEOVERS,
            "leases taken, by what was taken (label `from`: none, released, expired)"
        );
        metrics::describe_histogram!(
            RENEWAL_SECONDS,
            Unit::Seconds,
            "duration of each renewal attempt"
        );
        metrics::describe_counter!(RENEWAL_FAILURES, "renewal attempts that failed");
        metrics::describe_gauge!(QUEUE_DEPTH, "tasks in this member's queue");
        metrics::describe_histogram!(
            TASK_SECONDS,
            Unit::Seconds,
            "duration of each attempt of a task"
        );
        metrics::describe_counter!(TASKS, "tasks finished (done) by this member as master");
        metrics::describe_counter!(TASK_RETRIES, "attempts of tasks that were retried");
        metrics::describe_counter!(DEAD_LETTERS, "tasks moved out of the queue as dead letters");
        metrics::describe_counter!(TASKS_MAYBE_REPEATED,
            "tasks finished within one lease after taking over an expired lease: those that may repeat a crashed master's unpublished work");
    }
}

// ----- tracing spans ---------------------------------------------------------

/// The span of a take-over attempt; its `epoch` is recorded when it is won.
pub(crate) fn take_over_span(subsystem: &str, member: &str) -> Span {
    tracing::info_span!(target: "failover", "take_over", subsystem, member, epoch = tracing::field::Empty)
}

/// The span of a renewal of the lease of `epoch`.
pub(crate) fn renew_span(subsystem: &str, member: &str, epoch: u64) -> Span {
    tracing::debug_span!(target: "failover", "renew", subsystem, member, epoch)
}

/// The span of the release of the lease (`epoch`: the lease held, if any).
pub(crate) fn release_span(subsystem: &str, member: &str, epoch: Option<u64>) -> Span {
    tracing::info_span!(target: "failover", "release", subsystem, member, epoch)
}

/// The span of one attempt of a managed task.
pub(crate) fn task_span(subsystem: &str, member: &str, epoch: u64, key: &bson::Bson) -> Span {
    tracing::debug_span!(target: "failover::managed", "task", subsystem, member, epoch, %key)
}
