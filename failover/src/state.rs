//! The states of a member, in the original's order.

use std::fmt;

/// Where a member stands in the election.
///
/// The first five are the original's states, in its order; [`State::Stopped`] is
/// added so that a member that was shut down says so instead of keeping its last
/// state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Just started; the first check has not finished.
    Init,
    /// Found no live master and is taking over: it verifies the lease once more and
    /// writes its claim, conditional on the version it saw. Never longer than the
    /// TICKING interval.
    Ticking,
    /// Holds the lease: the only member that may act.
    Master,
    /// Another member holds a live lease.
    Slave,
    /// The database failed; the member retries after the ERROR interval.
    Error,
    /// Shut down by [`Member::shutdown`](crate::Member::shutdown); terminal.
    Stopped,
}

impl State {
    /// The state's name, as the original spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Ticking => "ticking",
            State::Master => "master",
            State::Slave => "slave",
            State::Error => "error",
            State::Stopped => "stopped",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
