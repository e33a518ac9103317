//! The rules of a task's state, as TaskManagers report it (the proto [`TaskState`]).
//!
//! ```text
//!   DEPLOYING ──▶ TASK_RUNNING ──▶ TASK_FINISHED | TASK_FAILED | TASK_CANCELED
//!       └────────────────────────▶ TASK_FINISHED | TASK_FAILED | TASK_CANCELED
//! ```
//!
//! A task only moves forward. A report may repeat the current state (it carries fresh metrics); a report
//! that would move a task back (RUNNING after a terminal state, DEPLOYING after RUNNING) is a stale or
//! forged message and is refused, and `TASK_STATE_UNSPECIFIED` (what a decoder makes of a missing or
//! unknown value) is never a state a task can be in.
use crate::proto::TaskState;

/// Whether a task in `state` will not change state any more.
pub fn is_terminal(state: TaskState) -> bool {
    match state {
        TaskState::TaskFinished | TaskState::TaskFailed | TaskState::TaskCanceled => true,
        TaskState::Unspecified | TaskState::Deploying | TaskState::TaskRunning => false,
    }
}

/// How far along its life a task in `state` is; None for the unspecified value.
fn progress(state: TaskState) -> Option<u8> {
    match state {
        TaskState::Unspecified => None,
        TaskState::Deploying => Some(0),
        TaskState::TaskRunning => Some(1),
        TaskState::TaskFinished | TaskState::TaskFailed | TaskState::TaskCanceled => Some(2),
    }
}

/// Whether a report of `to` may be applied to a task in `from`: forward moves, and repeats of a
/// non-terminal state. Nothing follows a terminal state, and nothing is or becomes unspecified.
pub fn can_follow(from: TaskState, to: TaskState) -> bool {
    if is_terminal(from) {
        return false;
    }
    match (progress(from), progress(to)) {
        (Some(from), Some(to)) => to >= from,
        _ => false,
    }
}

/// Whether `state` may arrive in a report at all (anything but the unspecified value).
pub fn is_reportable(state: TaskState) -> bool {
    progress(state).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    const ALL: [TaskState; 6] = [Unspecified, Deploying, TaskRunning, TaskFinished, TaskFailed, TaskCanceled];

    /// Every report that may be applied, written out independently of the rules.
    const LEGAL: &[(TaskState, TaskState)] = &[
        (Deploying, Deploying),
        (Deploying, TaskRunning),
        (Deploying, TaskFinished),
        (Deploying, TaskFailed),
        (Deploying, TaskCanceled),
        (TaskRunning, TaskRunning),
        (TaskRunning, TaskFinished),
        (TaskRunning, TaskFailed),
        (TaskRunning, TaskCanceled),
    ];

    #[test]
    fn a_task_moves_only_forward_and_never_out_of_a_terminal_state() {
        for from in ALL {
            for to in ALL {
                assert_eq!(can_follow(from, to), LEGAL.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn exactly_three_states_are_terminal_and_only_unspecified_is_unreportable() {
        assert_eq!(ALL.iter().filter(|s| is_terminal(**s)).count(), 3);
        assert_eq!(ALL.iter().filter(|s| !is_reportable(**s)).collect::<Vec<_>>(), vec![&Unspecified]);
    }
}
