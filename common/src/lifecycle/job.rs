//! The job lifecycle as a state machine: which status may follow which, and what a user asked for.
//!
//! The states are Flink's. The table in [`JobStatus::can_transition_to`] is the single definition of the
//! legal edges; the actor refuses (and logs as a bug) any other edge rather than corrupting the record.
//!
//! ```text
//!                    slots + deploy ok                 all tasks FINISHED
//!   CREATED ─────────────────────────────▶ RUNNING ───────────────────────▶ FINISHED
//!     │  │  │                                │  │
//!     │  │  │ deploy failed                  │  │ cancel requested
//!     │  │  └──────────────▶ FAILING ◀───────┘  └──────────────▶ CANCELLING ──▶ CANCELED
//!     │  │                     │      task failed / TM lost        (tasks terminal or
//!     │  │ cancel requested    │ tasks terminal (or timeout)         timeout)
//!     │  └─────────▶ CANCELED  ▼
//!     └─ slot wait timed out ▶ FAILED ◀── the restart strategy says no
//!
//!   restarts:  FAILING ──▶ RESTARTING ──▶ RUNNING (next attempt, from the latest checkpoint)
//!                               └──────▶ FAILING (deploy failed) | CANCELLING | FAILED (no slots, no more restarts)
//!   moves:     RUNNING ──▶ RESTARTING     (a redeployment that is no failure: a TaskManager is leaving and the
//!                                          job took a checkpoint first, or a stop-with-savepoint failed after
//!                                          its sources stopped; the tasks are cancelled within RUNNING, and
//!                                          the restart strategy is not asked)
//!   reserved:  CREATED | RUNNING ──▶ SUSPENDED ──▶ CREATED | FAILED      (JobManager failover)
//! ```
//!
//! Stored as text (`as_str`); text that names no state parses to an error, which the caller turns into a
//! FAILED job with a reason, never a panic.
//!
//! A user's wish is kept apart from the status: REST writes a [`DesiredStatus`] and wakes the job's actor,
//! which alone moves the status.
use std::fmt;
use std::str::FromStr;

use super::named_values;

/// The status of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    /// Accepted; waiting for slots, then deploying.
    Created,
    /// Every task deployed.
    Running,
    /// A task failed or a TaskManager was lost: cancelling the remaining tasks before FAILED.
    Failing,
    /// Terminal: the job failed; `failure_cause` says why.
    Failed,
    /// A cancel was requested: cancelling every task before CANCELED.
    Cancelling,
    /// Terminal: cancelled by a user.
    Canceled,
    /// Terminal: every task finished.
    Finished,
    /// Waiting (the restart strategy's delay, then slots) to redeploy after a failure, or (no delay) to move the
    /// job off a TaskManager that is leaving.
    Restarting,
    /// Reserved: the JobManager stopped while the job must live on (failover is a later issue).
    Suspended,
}

impl JobStatus {
    /// Every status, for metrics that report one series per status.
    pub const ALL: [JobStatus; 9] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Failing,
        JobStatus::Failed,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
        JobStatus::Restarting,
        JobStatus::Suspended,
    ];

    /// The name used in the store, the REST API, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Suspended => "SUSPENDED",
        }
    }

    /// Whether the job is over: nothing follows a terminal status.
    pub fn is_terminal(self) -> bool {
        match self {
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Finished => true,
            JobStatus::Created
            | JobStatus::Running
            | JobStatus::Failing
            | JobStatus::Cancelling
            | JobStatus::Restarting
            | JobStatus::Suspended => false,
        }
    }

    /// The terminal statuses, in declaration order: for SQL lists and clients that wait for a job to end.
    pub fn terminal() -> impl Iterator<Item = JobStatus> {
        JobStatus::ALL.into_iter().filter(|status| status.is_terminal())
    }

    /// The transition table: whether `self -> to` is a legal edge.
    pub fn can_transition_to(self, to: JobStatus) -> bool {
        use JobStatus::*;
        match self {
            Created => matches!(to, Running | Failing | Failed | Canceled | Suspended),
            Running => matches!(to, Finished | Failing | Cancelling | Restarting | Suspended),
            Failing => matches!(to, Failed | Restarting),
            Cancelling => matches!(to, Canceled),
            Restarting => matches!(to, Running | Failing | Cancelling | Failed),
            Suspended => matches!(to, Created | Failed),
            Failed | Canceled | Finished => false,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Stored text that names no job status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status '{0}' in the store")]
pub struct UnknownJobStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownJobStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| UnknownJobStatus(text.to_string()))
    }
}

/// An edge the transition table forbids: a bug in the actor, reported instead of applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal job transition {from} -> {to}")]
pub struct IllegalTransition {
    /// Where the job was.
    pub from: JobStatus,
    /// Where the actor tried to take it.
    pub to: JobStatus,
}

/// Checks `from -> to` against the table.
pub fn check_transition(from: JobStatus, to: JobStatus) -> Result<(), IllegalTransition> {
    if from.can_transition_to(to) {
        Ok(())
    } else {
        Err(IllegalTransition { from, to })
    }
}

/// What a user asked a job to become, stored beside its status (`jobs.desired_status`) until its actor
/// acts on it. Only cancellation exists today; a stop or a rescale request would be another value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DesiredStatus {
    /// A cancel was requested: the actor takes the job to CANCELLING (or straight to CANCELED before it runs).
    Canceled,
}

named_values!(DesiredStatus, "desired job status", { Canceled => "CANCELED" });

impl DesiredStatus {
    /// The status the job ends in once the wish is carried out.
    pub fn target(self) -> JobStatus {
        match self {
            DesiredStatus::Canceled => JobStatus::Canceled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    /// Every legal edge, written out independently of the table so that a change to one shows in the other.
    const LEGAL: &[(JobStatus, JobStatus)] = &[
        (Created, Running),
        (Created, Failing),
        (Created, Failed),
        (Created, Canceled),
        (Created, Suspended),
        (Running, Finished),
        (Running, Failing),
        (Running, Cancelling),
        (Running, Restarting),
        (Running, Suspended),
        (Failing, Failed),
        (Failing, Restarting),
        (Cancelling, Canceled),
        (Restarting, Running),
        (Restarting, Failing),
        (Restarting, Cancelling),
        (Restarting, Failed),
        (Suspended, Created),
        (Suspended, Failed),
    ];

    #[test]
    fn the_transition_table_allows_exactly_the_listed_edges() {
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let expected = LEGAL.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                assert_eq!(check_transition(from, to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_statuses_have_no_way_out() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(JobStatus::ALL.iter().all(|to| !from.can_transition_to(*to)), "{from} has an exit");
        }
        assert_eq!(JobStatus::ALL.iter().filter(|s| s.is_terminal()).count(), 3);
    }

    #[test]
    fn every_non_terminal_status_can_reach_a_terminal_one() {
        for start in JobStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let mut reached = vec![start];
            // Bounded: each round adds at least one status or stops; at most ALL.len() rounds.
            for _ in 0..JobStatus::ALL.len() {
                let next: Vec<JobStatus> = JobStatus::ALL
                    .into_iter()
                    .filter(|to| !reached.contains(to) && reached.iter().any(|from| from.can_transition_to(*to)))
                    .collect();
                reached.extend(next);
            }
            assert!(reached.iter().any(|s| s.is_terminal()), "{start} cannot end");
        }
    }

    #[test]
    fn the_stored_text_round_trips_and_unknown_text_is_an_error() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert_eq!("running".parse::<JobStatus>(), Err(UnknownJobStatus("running".into())));
        assert_eq!("".parse::<JobStatus>(), Err(UnknownJobStatus(String::new())));
    }

    #[test]
    fn a_desired_status_round_trips_and_names_the_status_it_leads_to() {
        for desired in DesiredStatus::ALL {
            assert_eq!(desired.as_str().parse::<DesiredStatus>(), Ok(desired));
            assert!(desired.target().is_terminal(), "{desired} leads to a terminal status");
            assert_eq!(desired.as_str(), desired.target().as_str(), "stored under the status's own name");
        }
        assert!("RUNNING".parse::<DesiredStatus>().is_err());
    }

    #[test]
    fn illegal_edges_name_both_ends() {
        let err = check_transition(Finished, Running).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("illegal job transition FINISHED -> RUNNING"));
    }
}
