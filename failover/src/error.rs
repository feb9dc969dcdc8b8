//! The one error type of the crate.

use std::time::Duration;

/// Everything that can go wrong in `failover`.
///
/// Every message says what failed and, where the caller can do something about it,
/// what to change. No variant ever carries a password: connection strings are
/// redacted before they reach an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is out of range or inconsistent with another one.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option's name, as in [`Options`](crate::Options) (for example `intervals.master`).
        option: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// An argument of a call is unusable (a fenced write's filter, update, field or
    /// epoch).
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        argument: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// A fenced write could not be applied, though no newer epoch wrote: the
    /// document does not match the rest of the filter, its fence field holds no
    /// epoch, or concurrent writers kept changing it (then try again).
    #[error("{operation} not applied: {reason}")]
    FenceConflict {
        /// The write (for example `fenced upsert`).
        operation: &'static str,
        /// Why, and what to do.
        reason: String,
    },

    /// The database server cannot give a guarantee this call needs.
    #[error("{what} is not supported on this server: {reason}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// Why, and what to use instead.
        reason: String,
    },

    /// The subsystem name cannot be used as a MongoDB document id.
    #[error("invalid subsystem name {name:?}: {reason}")]
    InvalidName {
        /// The name that was given.
        name: String,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// The MongoDB connection string could not be parsed. The string in the message has
    /// its password replaced by `***`.
    #[error("invalid MongoDB connection string {uri}: {reason}")]
    InvalidUri {
        /// The connection string, with any password replaced by `***`.
        uri: String,
        /// The driver's reason, with any password replaced by `***`.
        reason: String,
    },

    /// A database command failed (network error, server error, unreachable server).
    #[error("database error during {operation}: {message}")]
    Database {
        /// What the member was doing (for example `renew lease`).
        operation: &'static str,
        /// The server's or the driver's message, with credentials removed.
        message: String,
        /// The server's error code, where the server gave one.
        code: Option<i32>,
        /// The driver's error, for its labels and codes
        /// ([`DriverError::driver`]); `None` for errors that did not come from the
        /// driver.
        #[source]
        source: Option<DriverError>,
    },

    /// A database command did not answer in time.
    #[error("database timeout: {operation} did not answer within {after:?}")]
    Timeout {
        /// What the member was doing.
        operation: &'static str,
        /// How long it waited.
        after: Duration,
    },

    /// The master's renewal came due after its renew deadline: the process did not
    /// run in time (it was paused or starved of CPU). It stopped acting at once.
    #[error("the lease of epoch {epoch} ran out before this member could renew it (the process was paused or starved); it stopped acting as master")]
    LeaseExpired {
        /// The epoch of the lost lease.
        epoch: u64,
    },

    /// The lease document in the database is not one that `failover` wrote.
    #[error("malformed lease document for subsystem {name:?}: {reason}; this member waits; rewrite it with `failover::repair_lease` (or `failover repair {name}`), which keeps its epoch")]
    MalformedLease {
        /// The subsystem.
        name: String,
        /// Which field is missing or has the wrong type.
        reason: String,
    },

    /// A value (a synchronize id, a task or its key) could not be converted to or from BSON.
    #[error("cannot convert {what} to or from BSON: {reason}")]
    Serialization {
        /// What was being converted.
        what: &'static str,
        /// The serializer's message.
        reason: String,
    },

    /// The managed work queue is full and the options say to refuse new work.
    #[error(
        "work queue is full ({capacity} tasks); raise `queue_capacity` or choose `QueueFull::Wait`"
    )]
    QueueFull {
        /// The configured capacity.
        capacity: usize,
    },

    /// A fenced write was refused: a master with a higher epoch has written the
    /// document. This member is no longer master; stop the work.
    #[error("write refused: epoch {epoch} is older than epoch {current:?} that already wrote this document; a newer master has taken over, so stop working")]
    StaleEpoch {
        /// The epoch of the refused write.
        epoch: u64,
        /// The epoch found on the document.
        current: Option<u64>,
    },

    /// The member was shut down; start a new one to take part in the election again.
    #[error("member has been shut down")]
    Shutdown,

    /// A task or a hook panicked. The member keeps running; the payload's text is given.
    #[error("panic in {place}: {message}")]
    Panic {
        /// Where it happened (`work` or a hook name).
        place: &'static str,
        /// The panic message, when it was a string.
        message: String,
    },
}

impl Error {
    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    pub(crate) fn argument(argument: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }

    pub(crate) fn serialization(what: &'static str, reason: impl ToString) -> Self {
        Error::Serialization {
            what,
            reason: reason.to_string(),
        }
    }

    /// Whether the error comes from the database being unreachable, slow or failing,
    /// as opposed to a mistake in the options or the data.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Database { .. } | Error::Timeout { .. } | Error::LeaseExpired { .. }
        ) || matches!(self, Error::FenceConflict { reason, .. } if reason.contains("try again"))
    }
}

/// The MongoDB driver's error behind an [`Error::Database`], shared so that the
/// error stays cheap to clone. Its `Display` is the redacted message of the
/// [`Error::Database`] it belongs to, never the driver's own text (which may quote
/// the server's reply).
#[derive(Clone)]
pub struct DriverError {
    error: std::sync::Arc<mongodb::error::Error>,
    redacted: String,
}

impl DriverError {
    pub(crate) fn new(error: mongodb::error::Error, redacted: String) -> Self {
        DriverError {
            error: std::sync::Arc::new(error),
            redacted,
        }
    }

    /// The driver's error: its kind, labels (`contains_label`) and server code.
    pub fn driver(&self) -> &mongodb::error::Error {
        &self.error
    }
}

impl std::fmt::Debug for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DriverError").field(&self.redacted).finish()
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MongoDB driver: {}", self.redacted)
    }
}

impl std::error::Error for DriverError {}

impl PartialEq for DriverError {
    fn eq(&self, other: &Self) -> bool {
        self.redacted == other.redacted
    }
}

impl Eq for DriverError {}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
