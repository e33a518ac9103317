//! A checkpoint's lifecycle and kind, as stored in the `checkpoints` table and shown by REST.
//!
//! ```text
//!   IN_PROGRESS ──every task acknowledged, _metadata written──▶ COMPLETED
//!        └──────declined / expired / a task ended / aborted────▶ FAILED
//! ```
//!
//! A row is written IN_PROGRESS when the coordinator triggers the checkpoint and updated once, to COMPLETED
//! (the commit point of the checkpoint) or FAILED; neither end ever changes again. Whether a completed
//! checkpoint's files were deleted later (retention) is a separate flag (`discarded`), not a status.
use super::named_values;

/// Where a checkpoint is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointStatus {
    /// Triggered; waiting for every task's acknowledgement.
    InProgress,
    /// Every task acknowledged and its metadata is written: the state can be restored from it.
    Completed,
    /// Declined, expired or aborted: its files are deleted and it is never restored from.
    Failed,
}

named_values!(CheckpointStatus, "checkpoint status", {
    InProgress => "IN_PROGRESS",
    Completed => "COMPLETED",
    Failed => "FAILED",
});

impl CheckpointStatus {
    /// Whether the checkpoint has ended (nothing follows).
    pub fn is_terminal(self) -> bool {
        match self {
            CheckpointStatus::Completed | CheckpointStatus::Failed => true,
            CheckpointStatus::InProgress => false,
        }
    }

    /// The transition table: whether `self -> to` is a legal edge.
    pub fn can_transition_to(self, to: CheckpointStatus) -> bool {
        match self {
            CheckpointStatus::InProgress => to.is_terminal(),
            CheckpointStatus::Completed | CheckpointStatus::Failed => false,
        }
    }
}

/// Who asked for a checkpoint, and so who owns its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// Periodic or requested by a user; owned by the job (retention deletes it), restarts restore from it.
    Checkpoint,
    /// Requested by a user, who owns it: moved to the savepoint directory and never deleted by Sluice.
    Savepoint,
}

named_values!(CheckpointKind, "checkpoint kind", {
    Checkpoint => "CHECKPOINT",
    Savepoint => "SAVEPOINT",
});

#[cfg(test)]
mod tests {
    use super::CheckpointStatus::*;
    use super::*;

    /// Every legal edge, written out independently of the table.
    const LEGAL: &[(CheckpointStatus, CheckpointStatus)] = &[(InProgress, Completed), (InProgress, Failed)];

    #[test]
    fn the_checkpoint_table_allows_exactly_the_listed_edges() {
        for from in CheckpointStatus::ALL {
            for to in CheckpointStatus::ALL {
                assert_eq!(from.can_transition_to(to), LEGAL.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_text_is_an_error_naming_what_was_read() {
        for status in CheckpointStatus::ALL {
            assert_eq!(status.as_str().parse::<CheckpointStatus>(), Ok(status));
        }
        for kind in CheckpointKind::ALL {
            assert_eq!(kind.as_str().parse::<CheckpointKind>(), Ok(kind));
        }
        let err = "completed".parse::<CheckpointStatus>().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("unknown checkpoint status 'completed'"));
        assert!("".parse::<CheckpointKind>().is_err());
    }
}
