//! Calls from the JobManager to a TaskManager (DeployTasks, CancelTasks, TriggerCheckpoint,
//! NotifyCheckpointComplete), with explicit deadlines, behind the [`TaskManagerClient`] trait so that the
//! job actor and the checkpoint coordinator can be tested against a fake.
//!
//! [`GrpcTaskManagerClient`] opens a connection per call, as before the trait existed: a connection that is
//! refused fails the call with [`TaskManagerCallError::Connect`]. Callers rely on that error: it means no
//! process is behind the address (a killed TaskManager), which the job actor acts on at once instead of
//! waiting for the heartbeat timeout. (A pooled channel per address was tried and held back: see
//! `GrpcTaskManagerClient::channel`.)
//!
//! Both the connect and the request have named bounds; a TaskManager that does not answer in time is
//! treated as failed by the caller, never waited on forever.
use std::sync::Arc;
use std::time::Duration;

use sluice_common::proto::task_manager_service_client::TaskManagerServiceClient;
use sluice_common::proto::{
    CancelTasksRequest, DeployTasksRequest, NotifyCheckpointCompleteRequest, TriggerCheckpointRequest,
};
use tonic::transport::{Channel, Endpoint};

use sluice_common::bounds::GRPC_MESSAGE_BYTES_MAX;
use sluice_common::cluster_auth::{ClusterCredentials, LEADER_EPOCH_METADATA, SESSION_METADATA};
use sluice_common::tls::Tls;

use crate::cluster::Cluster;
use crate::leader::Leadership;

/// How long to wait for a TCP (HTTP/2) connection to a TaskManager. A TaskManager that cannot be reached
/// in this time is considered unreachable for this call.
pub const TASK_MANAGER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub use sluice_common::bounds::TASK_MANAGER_REQUEST_TIMEOUT;

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

/// The gRPC client: one connection per call. Every call carries the cluster secret and the session of the
/// TaskManager at the address (TaskManagers accept calls from their JobManager only).
#[derive(Default)]
pub struct GrpcTaskManagerClient {
    credentials: Option<Arc<ClusterCredentials>>,
    cluster: Option<Arc<Cluster>>,
    tls: Option<Tls>,
    /// The leader epoch every call carries (TaskManagers refuse one older than the newest they have seen).
    leadership: Option<Arc<Leadership>>,
}

impl GrpcTaskManagerClient {
    /// A client that proves its calls with `credentials` and the sessions `cluster` holds.
    pub fn new(
        credentials: Arc<ClusterCredentials>,
        cluster: Arc<Cluster>,
        tls: Option<Tls>,
        leadership: Arc<Leadership>,
    ) -> Self {
        GrpcTaskManagerClient {
            credentials: Some(credentials),
            cluster: Some(cluster),
            tls,
            leadership: Some(leadership),
        }
    }

    /// `message` as a call to the TaskManager at `address`, with the secret and that TaskManager's session.
    fn request<T>(&self, address: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(credentials) = &self.credentials {
            credentials.authorize(request.metadata_mut());
        }
        let session = self.cluster.as_ref().and_then(|cluster| cluster.session_at(address));
        if let Some(value) = session.and_then(|session| session.parse().ok()) {
            request.metadata_mut().insert(SESSION_METADATA, value);
        }
        if let Some(leadership) = &self.leadership {
            if let Ok(value) = leadership.epoch().to_string().parse() {
                request.metadata_mut().insert(LEADER_EPOCH_METADATA, value);
            }
        }
        request
    }

    /// A client on a fresh connection to `address` (bounded by the connect timeout).
    ///
    /// Not pooled, on purpose for now: a pooled channel made the checkpoint trigger of a small job a few
    /// milliseconds faster, which changed the timing that `expired_checkpoints_leave_no_files_behind` relies
    /// on (checkpoints with a 10 ms timeout stopped expiring on an idle machine). Pooling, with the probe
    /// below, waits for that test to build its back-pressure deterministically.
    async fn channel(&self, address: &str) -> Result<TaskManagerServiceClient<Channel>, TaskManagerCallError> {
        let channel = connect(address, TASK_MANAGER_CONNECT_TIMEOUT, self.tls.as_ref()).await?;
        Ok(TaskManagerServiceClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }

    /// Turns a failed call into its error. With a fresh connection per call, a connection refused is already
    /// reported by `channel`; a call that fails after connecting keeps its gRPC status.
    fn failed(&self, address: &str, status: tonic::Status) -> TaskManagerCallError {
        TaskManagerCallError::Status {
            address: address.to_string(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

async fn connect(address: &str, timeout: Duration, tls: Option<&Tls>) -> Result<Channel, TaskManagerCallError> {
    let invalid = |e: tonic::transport::Error| TaskManagerCallError::Address {
        address: address.to_string(),
        message: e.to_string(),
    };
    let scheme = sluice_common::tls::scheme(tls);
    let uri = if address.contains("://") { address.to_string() } else { format!("{scheme}://{address}") };
    let mut endpoint =
        Endpoint::from_shared(uri).map_err(invalid)?.connect_timeout(timeout).timeout(TASK_MANAGER_REQUEST_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.tonic_client(address)).map_err(invalid)?;
    }
    endpoint.connect().await.map_err(|source| TaskManagerCallError::Connect { address: address.to_string(), source })
}

#[tonic::async_trait]
impl TaskManagerClient for GrpcTaskManagerClient {
    async fn deploy_tasks(&self, address: &str, request: DeployTasksRequest) -> Result<(), TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.deploy_tasks(self.request(address, request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status)),
        }
    }

    async fn cancel_tasks(&self, address: &str, request: CancelTasksRequest) -> Result<(), TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.cancel_tasks(self.request(address, request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status)),
        }
    }

    async fn trigger_checkpoint(
        &self,
        address: &str,
        request: TriggerCheckpointRequest,
    ) -> Result<u32, TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.trigger_checkpoint(self.request(address, request)).await {
            Ok(response) => Ok(response.into_inner().triggered),
            Err(status) => Err(self.failed(address, status)),
        }
    }

    async fn notify_checkpoint_complete(
        &self,
        address: &str,
        request: NotifyCheckpointCompleteRequest,
    ) -> Result<(), TaskManagerCallError> {
        let mut client = self.channel(address).await?;
        match client.notify_checkpoint_complete(self.request(address, request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed TaskManager's address refuses connections: the call says so (the actor fails the job over
    /// at once on this error).
    #[tokio::test]
    async fn an_address_with_nothing_behind_it_is_reported_unreachable() -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        drop(listener);
        let client = GrpcTaskManagerClient::default();
        let request = CancelTasksRequest { job_id: "j".into(), attempt: 1 };
        let error = client.cancel_tasks(&address, request).await.err();
        assert!(error.as_ref().is_some_and(TaskManagerCallError::is_unreachable), "{error:?}");
        Ok(())
    }
}
