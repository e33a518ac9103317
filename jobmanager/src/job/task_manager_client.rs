//! Calls from the JobManager to a TaskManager (DeployTasks, CancelTasks), with explicit deadlines.
//!
//! Each call opens its own connection: deployments and cancellations are rare (a few per job), and a
//! fresh connection never carries state from a TaskManager's previous incarnation. Both the connect and
//! the request have named bounds; a TaskManager that does not answer in time is treated as failed by the
//! caller, never waited on forever.
use std::time::Duration;

use sluice_common::proto::task_manager_service_client::TaskManagerServiceClient;
use sluice_common::proto::{
    CancelTasksRequest, DeployTasksRequest, NotifyCheckpointCompleteRequest, TriggerCheckpointRequest,
};
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a TCP (HTTP/2) connection to a TaskManager. A TaskManager that cannot be reached
/// in this time is considered unreachable for this call.
pub const TASK_MANAGER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a DeployTasks or CancelTasks call may take once connected. Deploying only sets tasks up (the
/// work runs afterwards), so seconds are plenty.
pub const TASK_MANAGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A call to a TaskManager that failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskManagerCallError {
    /// The address does not parse as a URI.
    #[error("invalid TaskManager address '{address}': {message}")]
    Address {
        /// The address.
        address: String,
        /// Why.
        message: String,
    },
    /// No connection.
    #[error("cannot connect to TaskManager at {address}: {source}")]
    Connect {
        /// The address.
        address: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The TaskManager answered with an error (or the request timed out).
    #[error("TaskManager at {address} answered {code:?}: {message}")]
    Status {
        /// The address.
        address: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The message.
        message: String,
    },
}

async fn connect(address: &str) -> Result<TaskManagerServiceClient<Channel>, TaskManagerCallError> {
    let uri = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| TaskManagerCallError::Address { address: address.to_string(), message: e.to_string() })?
        .connect_timeout(TASK_MANAGER_CONNECT_TIMEOUT)
        .timeout(TASK_MANAGER_REQUEST_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| TaskManagerCallError::Connect { address: address.to_string(), source })?;
    Ok(TaskManagerServiceClient::new(channel))
}

fn status_error(address: &str, status: tonic::Status) -> TaskManagerCallError {
    TaskManagerCallError::Status {
        address: address.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

/// Deploys the tasks of `request` placed on the TaskManager at `address`.
pub async fn deploy_tasks(address: &str, request: DeployTasksRequest) -> Result<(), TaskManagerCallError> {
    let mut client = connect(address).await?;
    client.deploy_tasks(request).await.map_err(|s| status_error(address, s))?;
    Ok(())
}

/// Cancels every task of the job (up to the attempt in `request`) on the TaskManager at `address`.
pub async fn cancel_tasks(address: &str, request: CancelTasksRequest) -> Result<(), TaskManagerCallError> {
    let mut client = connect(address).await?;
    client.cancel_tasks(request).await.map_err(|s| status_error(address, s))?;
    Ok(())
}

/// Starts a checkpoint at the job's source tasks on the TaskManager at `address`; returns how many sources
/// took it.
pub async fn trigger_checkpoint(address: &str, request: TriggerCheckpointRequest) -> Result<u32, TaskManagerCallError> {
    let mut client = connect(address).await?;
    let response = client.trigger_checkpoint(request).await.map_err(|s| status_error(address, s))?;
    Ok(response.into_inner().triggered)
}

/// Tells the tasks on the TaskManager at `address` that a checkpoint completed.
pub async fn notify_checkpoint_complete(
    address: &str,
    request: NotifyCheckpointCompleteRequest,
) -> Result<(), TaskManagerCallError> {
    let mut client = connect(address).await?;
    client.notify_checkpoint_complete(request).await.map_err(|s| status_error(address, s))?;
    Ok(())
}
