//! Calls from the JobManager to a TaskManager (DeployTasks, CancelTasks, TriggerCheckpoint,
//! NotifyCheckpointComplete), with explicit deadlines, behind the [`TaskManagerClient`] trait so that the
//! job actor and the checkpoint coordinator can be tested against a fake.
//!
//! [`GrpcTaskManagerClient`] keeps one HTTP/2 channel per TaskManager address: a checkpoint every second
//! to every TaskManager of every job must not cost a TCP handshake each. A channel whose call fails is
//! dropped from the pool, and the address is probed with a fresh connection: when that is refused, the call
//! fails with [`TaskManagerCallError::Connect`], as it would have without a pool. Callers rely on that error: it means no process is behind the address (a killed TaskManager),
//! which the job actor acts on at once instead of waiting for the heartbeat timeout. The call itself is
//! never sent twice.
//!
//! Both the connect and the request have named bounds; a TaskManager that does not answer in time is
//! treated as failed by the caller, never waited on forever.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sluice_common::proto::task_manager_service_client::TaskManagerServiceClient;
use sluice_common::proto::{
    CancelTasksRequest, DeployTasksRequest, NotifyCheckpointCompleteRequest, TriggerCheckpointRequest,
};
use tonic::transport::{Channel, Endpoint};

/// How long to wait for a TCP (HTTP/2) connection to a TaskManager. A TaskManager that cannot be reached
/// in this time is considered unreachable for this call.
pub const TASK_MANAGER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub use sluice_common::bounds::TASK_MANAGER_REQUEST_TIMEOUT;
/// The most TaskManager channels kept open. Beyond it the pool is emptied and filled again as calls come
/// (a cluster this large would mean a leak of addresses: TaskManagers re-register under new ports).
pub const TASK_MANAGER_CHANNELS_MAX: usize = 4096;

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
    /// No connection: nothing listens at the address, or it did not answer within the connect timeout.
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

impl TaskManagerCallError {
    /// Whether nothing listens at the address: the TaskManager's process is gone.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TaskManagerCallError::Connect { .. })
    }
}

/// The calls the JobManager makes to TaskManagers, by RPC address.
#[tonic::async_trait]
pub trait TaskManagerClient: Send + Sync {
    /// Deploys the tasks of `request` placed on the TaskManager at `address`.
    async fn deploy_tasks(&self, address: &str, request: DeployTasksRequest) -> Result<(), TaskManagerCallError>;

    /// Cancels every task of the job (up to the attempt in `request`) on the TaskManager at `address`.
    async fn cancel_tasks(&self, address: &str, request: CancelTasksRequest) -> Result<(), TaskManagerCallError>;

    /// Starts a checkpoint at the job's source tasks on the TaskManager at `address`; returns how many
    /// sources took it.
    async fn trigger_checkpoint(
        &self,
        address: &str,
        request: TriggerCheckpointRequest,
    ) -> Result<u32, TaskManagerCallError>;

    /// Tells the tasks on the TaskManager at `address` that a checkpoint completed.
    async fn notify_checkpoint_complete(
        &self,
        address: &str,
        request: NotifyCheckpointCompleteRequest,
    ) -> Result<(), TaskManagerCallError>;
}

/// The gRPC client, with one pooled channel per address.
#[derive(Default)]
pub struct GrpcTaskManagerClient {
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcTaskManagerClient {
    fn pool(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // Inserts and removes are single steps: a poisoned map is still consistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pooled channel to `address`, connecting (bounded by the connect timeout) when there is none.
    async fn channel(&self, address: &str) -> Result<TaskManagerServiceClient<Channel>, TaskManagerCallError> {
        if let Some(channel) = self.pool().get(address).cloned() {
            return Ok(TaskManagerServiceClient::new(channel));
        }
        let channel = connect(address, TASK_MANAGER_CONNECT_TIMEOUT).await?;
        let mut pool = self.pool();
        if pool.len() >= TASK_MANAGER_CHANNELS_MAX {
            pool.clear();
        }
        pool.insert(address.to_string(), channel.clone());
        Ok(TaskManagerServiceClient::new(channel))
    }

    /// Turns a failed call into its error. The channel that failed is dropped from the pool, and the address
    /// is probed with a fresh connection: if that is refused, the TaskManager is gone and the error says so.
    /// Every failure is probed, whatever its code: a call on a pooled connection whose peer was just killed
    /// may end `Unavailable`, `Unknown` or `Internal` depending on where the connection broke.
    async fn failed(&self, address: &str, status: tonic::Status) -> TaskManagerCallError {
        self.pool().remove(address);
        // The probe is bounded like any connect, and a probe that cannot connect in time counts as
        // unreachable, exactly as a fresh connection per call did before channels were pooled. (So a host
        // that drops packets costs the request timeout and then the connect timeout.)
        if let Err(gone) = connect(address, TASK_MANAGER_CONNECT_TIMEOUT).await {
            if gone.is_unreachable() {
                return gone;
            }
        }
        TaskManagerCallError::Status {
            address: address.to_string(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

async fn connect(address: &str, timeout: Duration) -> Result<Channel, TaskManagerCallError> {
    let uri = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| TaskManagerCallError::Address { address: address.to_string(), message: e.to_string() })?
        .connect_timeout(timeout)
        .timeout(TASK_MANAGER_REQUEST_TIMEOUT);
    endpoint.connect().await.map_err(|source| TaskManagerCallError::Connect { address: address.to_string(), source })
}

#[tonic::async_trait]
impl TaskManagerClient for GrpcTaskManagerClient {
    async fn deploy_tasks(&self, address: &str, request: DeployTasksRequest) -> Result<(), TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.deploy_tasks(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status).await),
        }
    }

    async fn cancel_tasks(&self, address: &str, request: CancelTasksRequest) -> Result<(), TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.cancel_tasks(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status).await),
        }
    }

    async fn trigger_checkpoint(
        &self,
        address: &str,
        request: TriggerCheckpointRequest,
    ) -> Result<u32, TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.trigger_checkpoint(request).await {
            Ok(response) => Ok(response.into_inner().triggered),
            Err(status) => Err(self.failed(address, status).await),
        }
    }

    async fn notify_checkpoint_complete(
        &self,
        address: &str,
        request: NotifyCheckpointCompleteRequest,
    ) -> Result<(), TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.notify_checkpoint_complete(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed TaskManager's address refuses connections: the call says so (the actor fails the job over
    /// at once on this error), both before a channel is pooled and after the pooled one broke.
    #[tokio::test]
    async fn an_address_with_nothing_behind_it_is_reported_unreachable() -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        drop(listener);
        let client = GrpcTaskManagerClient::default();
        let request = CancelTasksRequest { job_id: "j".into(), attempt: 1 };
        let error = client.cancel_tasks(&address, request).await.err();
        assert!(error.as_ref().is_some_and(TaskManagerCallError::is_unreachable), "{error:?}");
        assert!(client.pool().is_empty(), "no channel is kept for an address that refused");
        Ok(())
    }
}
