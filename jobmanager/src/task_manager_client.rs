//! Calls from the JobManager to a TaskManager (DeployTasks, CancelTasks, TriggerCheckpoint,
//! NotifyCheckpointComplete), with explicit deadlines, behind the [`TaskManagerClient`] trait so that the
//! job actor and the checkpoint coordinator can be tested against a fake.
//!
//! [`GrpcTaskManagerClient`] keeps one HTTP/2 channel per TaskManager incarnation (its address and the
//! session it chose at registration): a checkpoint every second to every TaskManager of every job must not
//! cost a TCP (and TLS) handshake each. A TaskManager that registers again gets a new session, so a new
//! channel, and the old incarnation's channel is dropped then.
//!
//! A channel whose call fails is dropped from the pool, and the address is probed with a fresh
//! connection: when that is refused, the call fails with [`TaskManagerCallError::Connect`], exactly as a
//! first connection would. Callers rely on that error: it means no process is behind the address (a
//! killed TaskManager), which the job actor acts on at once instead of waiting for the heartbeat timeout.
//! Every failure is probed, whatever its code: a call on a pooled connection whose peer was just killed
//! ends `Unavailable`, `Unknown` or `Internal` depending on where the connection broke. The call itself is
//! never sent twice.
//!
//! Both the connect and the request have named bounds; a TaskManager that does not answer in time is
//! treated as failed by the caller, never waited on forever.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
/// The most TaskManager channels kept open. Beyond it the pool is emptied and filled again as calls come
/// (a cluster this large would mean a leak: TaskManagers registering again and again under new sessions).
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

/// A pooled channel's key: a TaskManager's address and its session there (None without cluster membership).
type Incarnation = (String, Option<String>);

/// The gRPC client, with one pooled channel per TaskManager incarnation. Every call carries the cluster
/// secret and the session of the TaskManager at the address (TaskManagers accept calls from their
/// JobManager only).
#[derive(Default)]
pub struct GrpcTaskManagerClient {
    channels: Mutex<HashMap<Incarnation, Channel>>,
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
            channels: Mutex::default(),
            credentials: Some(credentials),
            cluster: Some(cluster),
            tls,
            leadership: Some(leadership),
        }
    }

    /// `message` as a call to the TaskManager incarnation that has `session`, with the secret.
    fn request<T>(&self, session: Option<&str>, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(credentials) = &self.credentials {
            credentials.authorize(request.metadata_mut());
        }
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

    fn pool(&self) -> MutexGuard<'_, HashMap<Incarnation, Channel>> {
        // Inserts and removes are single steps: a poisoned map is still consistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The incarnation a call to `address` goes to: the address and the session registered there now.
    fn incarnation(&self, address: &str) -> Incarnation {
        (address.to_string(), self.cluster.as_ref().and_then(|cluster| cluster.session_at(address)))
    }

    /// A client on the pooled channel to the TaskManager now at `address` (connecting, bounded by the connect
    /// timeout, when there is none), and that incarnation's session for the call's metadata.
    async fn channel(
        &self,
        address: &str,
    ) -> Result<(TaskManagerServiceClient<Channel>, Option<String>), TaskManagerCallError> {
        let incarnation = self.incarnation(address);
        let pooled = self.pool().get(&incarnation).cloned();
        let channel = match pooled {
            Some(channel) => channel,
            None => {
                let channel = connect(address, TASK_MANAGER_CONNECT_TIMEOUT, self.tls.as_ref()).await?;
                let mut pool = self.pool();
                // An earlier incarnation at this address is gone (it registered anew): its channel goes too.
                pool.retain(|(at, _), _| at != address);
                if pool.len() >= TASK_MANAGER_CHANNELS_MAX {
                    pool.clear();
                }
                pool.insert(incarnation.clone(), channel.clone());
                channel
            }
        };
        let client = TaskManagerServiceClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        Ok((client, incarnation.1))
    }

    /// Turns a failed call into its error. The channel that failed is dropped from the pool, and the address
    /// is probed with a fresh connection: if that is refused, the TaskManager is gone and the error says so.
    /// The probe is bounded like any connect, and a probe that cannot connect in time counts as unreachable,
    /// as a first connection would (so a host that drops packets costs the request timeout and then the
    /// connect timeout).
    async fn failed(&self, address: &str, status: tonic::Status) -> TaskManagerCallError {
        self.pool().retain(|(at, _), _| at != address);
        if let Err(gone) = connect(address, TASK_MANAGER_CONNECT_TIMEOUT, self.tls.as_ref()).await {
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
        let (mut client, session) = self.channel(address).await?;
        match client.deploy_tasks(self.request(session.as_deref(), request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status).await),
        }
    }

    async fn cancel_tasks(&self, address: &str, request: CancelTasksRequest) -> Result<(), TaskManagerCallError> {
        let (mut client, session) = self.channel(address).await?;
        match client.cancel_tasks(self.request(session.as_deref(), request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status).await),
        }
    }

    async fn trigger_checkpoint(
        &self,
        address: &str,
        request: TriggerCheckpointRequest,
    ) -> Result<u32, TaskManagerCallError> {
        let (mut client, session) = self.channel(address).await?;
        match client.trigger_checkpoint(self.request(session.as_deref(), request)).await {
            Ok(response) => Ok(response.into_inner().triggered),
            Err(status) => Err(self.failed(address, status).await),
        }
    }

    async fn notify_checkpoint_complete(
        &self,
        address: &str,
        request: NotifyCheckpointCompleteRequest,
    ) -> Result<(), TaskManagerCallError> {
        let (mut client, session) = self.channel(address).await?;
        match client.notify_checkpoint_complete(self.request(session.as_deref(), request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.failed(address, status).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_common::proto::task_manager_service_server::{TaskManagerService, TaskManagerServiceServer};
    use sluice_common::proto::{
        CancelTasksResponse, DeployTasksResponse, NotifyCheckpointCompleteResponse, TriggerCheckpointResponse,
    };
    use tonic::{Request, Response, Status};

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

    /// A TaskManager that answers every call.
    struct Answering;

    #[tonic::async_trait]
    impl TaskManagerService for Answering {
        async fn deploy_tasks(&self, _: Request<DeployTasksRequest>) -> Result<Response<DeployTasksResponse>, Status> {
            Ok(Response::new(DeployTasksResponse::default()))
        }

        async fn cancel_tasks(&self, _: Request<CancelTasksRequest>) -> Result<Response<CancelTasksResponse>, Status> {
            Ok(Response::new(CancelTasksResponse::default()))
        }

        async fn trigger_checkpoint(
            &self,
            _: Request<TriggerCheckpointRequest>,
        ) -> Result<Response<TriggerCheckpointResponse>, Status> {
            Ok(Response::new(TriggerCheckpointResponse::default()))
        }

        async fn notify_checkpoint_complete(
            &self,
            _: Request<NotifyCheckpointCompleteRequest>,
        ) -> Result<Response<NotifyCheckpointCompleteResponse>, Status> {
            Ok(Response::new(NotifyCheckpointCompleteResponse::default()))
        }
    }

    /// Goal: calls to one TaskManager share one connection, and once that TaskManager is gone the next call
    /// says so at once (the probe), leaving no channel behind. Method: a real gRPC server on loopback answers
    /// three calls, is shut down, and is called again.
    #[tokio::test]
    async fn calls_share_a_pooled_channel_and_a_gone_peer_is_reported_unreachable(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TaskManagerServiceServer::new(Answering))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        let client = GrpcTaskManagerClient::default();
        let request = CancelTasksRequest { job_id: "j".into(), attempt: 1 };
        for _ in 0..3 {
            client.cancel_tasks(&address, request.clone()).await?;
        }
        assert_eq!(client.pool().len(), 1, "three calls, one channel");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await???;
        let error = client.cancel_tasks(&address, request).await.err();
        assert!(error.as_ref().is_some_and(TaskManagerCallError::is_unreachable), "{error:?}");
        assert!(client.pool().is_empty(), "the broken channel is dropped");
        Ok(())
    }
}
