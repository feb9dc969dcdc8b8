//! Work scoped to one term of mastership, as client-go's `OnStartedLeading(ctx)`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::shared::{Shared, TermGuard};

/// One term of this member's mastership: its epoch and a cancellation token that
/// is cancelled when the term ends — at the master's deadline when a renewal
/// failed (before any standby may take over), when the lease is lost, when the
/// member stops, and when an operator asks it to step down ([`crate::step_down`]).
/// After a step-down request, as on shutdown, the lease stays valid and is handed
/// over only once the `Leadership` is dropped (at most the shutdown timeout; then
/// the member stops acting and the lease expires instead).
///
/// While a `Leadership` lives, a graceful [`Member::shutdown`](crate::Member::shutdown)
/// does not hand the lease over: it waits for it to be dropped (at most the
/// shutdown timeout, then it cancels the token and lets the lease expire instead of
/// releasing it). Get one from [`Member::leadership`](crate::Member::leadership), or
/// let [`Member::run_while_master`](crate::Member::run_while_master) manage it.
#[must_use = "a leadership does nothing unless its work watches it"]
pub struct Leadership {
    epoch: u64,
    token: CancellationToken,
    shared: Arc<Shared>,
    _guard: TermGuard,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("epoch", &self.epoch)
            .field("valid", &self.is_valid())
            .finish()
    }
}

impl Leadership {
    pub(crate) fn new(epoch: u64, token: CancellationToken, shared: Arc<Shared>) -> Self {
        let guard = shared.guard();
        Leadership {
            epoch,
            token,
            shared,
            _guard: guard,
        }
    }

    /// The term's epoch, its fencing token: put it on every write (see [`crate::fence`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the term is still on at this instant (the lease of this epoch is
    /// held and valid by this process's clock).
    pub fn is_valid(&self) -> bool {
        !self.token.is_cancelled() && self.shared.holds(self.epoch)
    }

    /// Resolves when the term ends. Cancel-safe.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The term's cancellation token, for code that takes one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}
