//! Bounds that two processes must agree on, each defined once, with their relations checked at compile
//! time. A bound that only one process uses lives beside the code that enforces it.
use std::time::Duration;

/// How long a call from the JobManager to a TaskManager (deploy, cancel, trigger, notify) may take once
/// connected. Deploying only sets tasks up and a trigger only injects barriers, so seconds are plenty; a
/// TaskManager that does not answer in time is treated as failed by the caller, never waited on forever.
pub const TASK_MANAGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TaskManager's answer to NotifyCheckpointComplete waits for its sinks to commit. It must end
/// before the JobManager's request times out, so that the JobManager hears the answer (a stop-with-savepoint
/// waits for it before it cancels the tasks).
pub const CHECKPOINT_COMMIT_WAIT_MAX: Duration = Duration::from_secs(8);
const _: () = assert!(CHECKPOINT_COMMIT_WAIT_MAX.as_millis() < TASK_MANAGER_REQUEST_TIMEOUT.as_millis());

/// How often TaskManagers send heartbeats by default, and how long the JobManager waits without one before
/// it declares a TaskManager lost. A TaskManager must get several chances to be heard within the timeout.
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_millis(1000);
/// See [`HEARTBEAT_INTERVAL_DEFAULT`].
pub const HEARTBEAT_TIMEOUT_DEFAULT: Duration = Duration::from_millis(5000);
/// The fewest heartbeats a timeout must leave room for: one late heartbeat must not lose a TaskManager.
pub const HEARTBEATS_PER_TIMEOUT_MIN: u32 = 2;
const _: () = assert!(
    HEARTBEAT_INTERVAL_DEFAULT.as_millis() * HEARTBEATS_PER_TIMEOUT_MIN as u128
        <= HEARTBEAT_TIMEOUT_DEFAULT.as_millis()
);

/// Whether a heartbeat interval and timeout leave room for [`HEARTBEATS_PER_TIMEOUT_MIN`] heartbeats.
pub fn heartbeat_bounds_fit(interval: Duration, timeout: Duration) -> bool {
    interval.saturating_mul(HEARTBEATS_PER_TIMEOUT_MIN) <= timeout
}

/// The largest gRPC message the JobManager and the TaskManagers send or accept, in bytes, set explicitly on
/// every tonic server and client (tonic's default is 4 MiB). A DeployTasks request carries the whole job
/// graph, so this must sit comfortably above the largest job file the REST API accepts (8 MiB): a graph
/// that passes submission must also deploy, with room for the chains and placements the request adds. A
/// message over this bound is refused by tonic with `OutOfRange`, which fails the call, not the process.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// tonic's default limit on a decoded message: what a gRPC server applies that sets none. Heartbeats stay well
/// under it (see [`HEARTBEAT_METRICS_BYTES_MAX`]), so a JobManager with default limits never refuses one.
pub const RPC_DEFAULT_DECODING_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The most task metrics one heartbeat carries. A TaskManager with more tasks sends them in turns (round
/// robin over its tasks, one share per heartbeat), so every task's metrics still arrive, each a few heartbeats
/// apart at most. 256 tasks is more than a TaskManager's slots run in practice, so usually one heartbeat
/// carries everything; the JobManager refuses a heartbeat with more than its own, larger, limit.
pub const HEARTBEAT_TASK_METRICS_MAX: usize = 256;

/// The most bytes of encoded task metrics one heartbeat carries (vertex ids make a task's metrics as large as
/// its chain's ids). A share is closed when the next task's metrics would pass this; a single task whose
/// metrics alone would is sent without its per-vertex counters (its totals still arrive). A quarter of
/// [`RPC_DEFAULT_DECODING_BYTES_MAX`], so a heartbeat is never refused for its size.
pub const HEARTBEAT_METRICS_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(HEARTBEAT_METRICS_BYTES_MAX * 4 <= RPC_DEFAULT_DECODING_BYTES_MAX);
const _: () = assert!(RPC_DEFAULT_DECODING_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_must_leave_room_for_two_heartbeats() {
        assert!(heartbeat_bounds_fit(HEARTBEAT_INTERVAL_DEFAULT, HEARTBEAT_TIMEOUT_DEFAULT));
        assert!(heartbeat_bounds_fit(Duration::from_millis(200), Duration::from_millis(400)));
        assert!(!heartbeat_bounds_fit(Duration::from_millis(200), Duration::from_millis(399)));
        assert!(!heartbeat_bounds_fit(Duration::from_secs(5), Duration::from_secs(1)));
    }
}
