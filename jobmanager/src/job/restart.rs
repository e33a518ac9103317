//! The seam for restart strategies (ARCHITECTURE.md §8): what to do when a running job fails.
//!
//! Today the only strategy is [`NoRestart`]: a failed job goes FAILING → FAILED. Restarts (exponential
//! delay, fixed delay, failure rate) are a later issue; they will return [`RestartDecision::Restart`] and
//! the actor will take FAILING → RESTARTING → RUNNING with the next attempt.
use std::time::Duration;

use sluice_common::ids::Attempt;

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Give up: the job becomes FAILED.
    Fail,
    /// Redeploy as the next attempt after `delay` (not yet carried out by the actor).
    Restart {
        /// How long to wait first.
        delay: Duration,
    },
}

/// Decides whether a failed job restarts.
///
/// Implementors promise to be pure functions of their own state and the arguments: the actor may ask more
/// than once for the same failure.
pub trait RestartStrategy: Send + Sync {
    /// The decision after `attempt` failed with `cause`.
    fn on_failure(&self, attempt: Attempt, cause: &str) -> RestartDecision;
}

/// Never restart.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRestart;

impl RestartStrategy for NoRestart {
    fn on_failure(&self, _attempt: Attempt, _cause: &str) -> RestartDecision {
        RestartDecision::Fail
    }
}
