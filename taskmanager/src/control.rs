//! The control plane of a TaskManager: registration, heartbeats, and the deploy/cancel RPCs.
//!
//! It runs on its own small runtime so that CPU-heavy tasks on the data runtime can never starve a
//! heartbeat (a starved heartbeat looks like a dead TaskManager). Tasks are spawned onto the data runtime
//! through its handle.
//!
//! Registration retries forever with capped exponential backoff, so a TaskManager may start before its
//! JobManager; with several JobManager addresses (`JOBMANAGER=a,b,c`: a leader and standbys) it tries the next
//! one after each refusal. A heartbeat the leader answers with `registered = false` (it declared us lost)
//! cancels every task and sends the TaskManager back to registration. A heartbeat that fails (transport error,
//! timeout, a standby's refusal) is retried, and sends it back only once none was answered for the heartbeat
//! timeout (see [`crate::heartbeat`]); so does `registered = false` from a newer leader epoch. In those two
//! cases the leader is gone or changed: the tasks keep running, and the registration reports them. The new
//! leader answers with the attempts it adopts (their tasks go on) and the TaskManager cancels every other
//! reported task. Tasks are kept without a leader for at most [`TASKS_KEPT_WITHOUT_LEADER_MAX`].
//!
//! Leader fencing: every call of the JobManager carries its leader epoch; the TaskManager refuses a call whose
//! epoch is older than its registration's (an old leader that has not noticed it lost the lease).
//!
//! Attempt fencing: the TaskManager remembers the newest attempt it saw per job and refuses deployments of
//! older ones; a task's reports carry its attempt and the JobManager refuses stale ones.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_common::bounds::{CHECKPOINT_COMMIT_WAIT_MAX, GRPC_MESSAGE_BYTES_MAX, HEARTBEAT_TIMEOUT_DEFAULT};
use sluice_common::cluster_auth::{ClusterCredentials, LEADER_EPOCH_METADATA, SESSION_METADATA};
use sluice_common::job::validate;
use sluice_common::lifecycle::FailureKind;
use sluice_common::proto::job_manager_service_client::JobManagerServiceClient;
use sluice_common::proto::task_manager_service_server::TaskManagerService;
use sluice_common::proto::{
    CancelTasksRequest, CancelTasksResponse, DeployTasksRequest, DeployTasksResponse, HeartbeatRequest,
    LeaveClusterRequest, NotifyCheckpointCompleteRequest, NotifyCheckpointCompleteResponse, RegisterTaskManagerRequest,
    RegisterTaskManagerResponse, RunningTask as ReportedTask, TaskMetrics, TaskRef, TaskState, TaskStateReport,
    TriggerCheckpointRequest, TriggerCheckpointResponse,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::checkpoint::{CheckpointCommand, CheckpointOutcome, CheckpointReporter, CHECKPOINT_COMMANDS_MAX};
use crate::heartbeat::{Liveness, MetricsRotation, NextStep, HEARTBEAT_METRICS_BYTES_MAX, HEARTBEAT_TASK_METRICS_MAX};
use crate::metrics::{Metrics, TaskCounters};
use crate::network::NetworkEnvironment;
use crate::operators::native::OperatorRegistry;
use crate::state::StateSettings;
use crate::task::plan::plan_subtasks;
use crate::task::{Task, TaskCheckpoints, TaskError};

/// The longest one RPC from the JobManager may take on this server. The JobManager's own deadline
/// (`TASK_MANAGER_REQUEST_TIMEOUT`) is shorter and decides; this frees the server's side of a call whose
/// caller is gone.
pub(crate) const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const _: () =
    assert!(CONTROL_REQUEST_TIMEOUT.as_millis() > sluice_common::bounds::TASK_MANAGER_REQUEST_TIMEOUT.as_millis());
/// The most RPCs one connection may have in progress at once. The JobManager opens a connection per call;
/// a connection asking for more waits (HTTP/2 flow control), it is not served unboundedly.
pub(crate) const CONTROL_CONCURRENCY_PER_CONNECTION_MAX: usize = 32;
/// Idle time before the kernel probes a control connection (TCP keepalive): a JobManager host that
/// vanished without closing its sockets is noticed and the connection freed.
pub(crate) const CONTROL_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How often the control server pings an HTTP/2 connection, and how long it waits for the answer before
/// it closes the connection: a peer that stopped answering does not hold its connection forever.
pub(crate) const CONTROL_HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`CONTROL_HTTP2_KEEPALIVE_INTERVAL`].
pub(crate) const CONTROL_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control (gRPC) server with every limit above set (message sizes are set on the service).
pub(crate) fn limited_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(CONTROL_REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(CONTROL_CONCURRENCY_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(CONTROL_HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(CONTROL_HTTP2_KEEPALIVE_TIMEOUT))
}

/// The accepted control connections of `listener`, with TCP keepalive ([`CONTROL_TCP_KEEPALIVE`]) and no
/// Nagle delay (the server's own `tcp_keepalive` applies only to connections it accepts itself).
pub(crate) fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_keepalive(Some(CONTROL_TCP_KEEPALIVE))
        .with_nodelay(Some(true))
}

/// Bound on connecting to the JobManager.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on any one RPC to the JobManager.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// First and largest pause between registration attempts.
const REGISTER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REGISTER_BACKOFF_MAX: Duration = Duration::from_secs(5);
const _: () = assert!(REGISTER_BACKOFF_MIN.as_millis() < REGISTER_BACKOFF_MAX.as_millis());
/// The longest time tasks keep running while no JobManager leader answers (the leader died or changed, and
/// no new one has registered this TaskManager yet): past it, they are cancelled, since a leader elsewhere may
/// have restarted their jobs on other TaskManagers. Well above a takeover: the lease timeout plus the heartbeat
/// timeout plus the adoption wait (defaults 5 + 5 + 10 s).
pub const TASKS_KEPT_WITHOUT_LEADER_MAX: Duration = Duration::from_secs(60);

/// A task state report is retried this often before it is given up (the heartbeat still carries metrics,
/// and the JobManager's failure detection covers a TaskManager that cannot reach it).
const REPORT_ATTEMPTS_MAX: u32 = 5;

/// The shortest heartbeat interval taken from the JobManager's registration answer. A smaller one (0 from a
/// misconfigured JobManager) is raised to it, so the heartbeat loop cannot spin; 10 ms is far below any
/// useful setting (the default is a second) and still leaves the control runtime idle between beats.
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Addresses this TaskManager actually bound, as others reach them.
#[derive(Clone, Debug)]
pub struct BoundAddresses {
    pub rpc: String,
    pub data: String,
    pub metrics: String,
}

struct RunningTask {
    task: TaskRef,
    /// The deployment it belongs to: its network channels are released when its last local task ends.
    execution_id: u64,
    cancel: CancellationToken,
    counters: Arc<TaskCounters>,
    /// Checkpoint triggers and completions for the task.
    commands: mpsc::Sender<CheckpointCommand>,
    /// Whether its head is a source (the tasks a checkpoint is triggered at).
    is_source: bool,
}

/// State shared by the RPC handlers, the heartbeat loop and the tasks.
pub struct TaskManager {
    pub id: String,
    pub slots: u32,
    pub addresses: BoundAddresses,
    network: Arc<NetworkEnvironment>,
    metrics: Arc<Metrics>,
    data_runtime: tokio::runtime::Handle,
    /// Where keyed state goes.
    state: StateSettings,
    registry: Arc<OperatorRegistry>,
    /// One client per JobManager address (a leader and its standbys), tried in turn.
    jobmanagers: Vec<JobManagerServiceClient<Channel>>,
    /// The index (modulo their number) of the JobManager calls go to: the last one that took a registration.
    current: std::sync::atomic::AtomicUsize,
    /// The epoch of the leader this TaskManager registered with (from its answer): calls with an older one are
    /// refused. (Not the largest ever seen: a metadata store recreated from scratch starts its epochs again.)
    leader_epoch: std::sync::atomic::AtomicU64,
    /// The cluster secret every call to and from the JobManager carries.
    credentials: Arc<ClusterCredentials>,
    /// The session of the current registration: sent with calls to the JobManager, and required of its calls.
    session: std::sync::RwLock<Option<String>>,
    /// Keyed by "job/attempt/chain/subtask". A std Mutex: held only for map updates, never across await.
    tasks: Mutex<HashMap<String, RunningTask>>,
    /// The newest attempt seen per job.
    attempts: Mutex<HashMap<String, u32>>,
    /// Network lifetimes of deployments, see [`Executions`].
    executions: Mutex<Executions>,
    /// Set once this TaskManager is leaving (see [`TaskManager::leave`]): it registers no more.
    leaving: std::sync::atomic::AtomicBool,
    /// Woken whenever a task ends, for [`TaskManager::leave`] to wait on.
    task_ended: tokio::sync::Notify,
    /// Held across a registration call, so that a leave is told to the JobManager only once the registration
    /// it concerns is known (a leave sent with a session the JobManager does not know yet would be ignored).
    registering: tokio::sync::Mutex<()>,
}

/// How often a TaskManager that is leaving tries to tell the JobManager, and the pause between tries; past
/// them it cancels its tasks and exits (its jobs then fail over as after a crash).
const LEAVE_ATTEMPTS_MAX: u32 = 3;
const LEAVE_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// While leaving, how often the TaskManager asks the JobManager again how many of its slots jobs still hold (a
/// task ending wakes it sooner).
const LEAVE_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How a leave ended, for the log and the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// Every task ended and no job holds a slot here (the JobManager moved them) within the drain timeout.
    Drained,
    /// The JobManager could not be reached at the start, or does not know this TaskManager: nothing waits for
    /// its tasks, which are cancelled.
    NotHeard {
        /// Tasks cancelled.
        cancelled: usize,
    },
    /// Tasks still ran or slots were still held when the drain timeout passed, or a second signal came.
    Cut {
        /// Tasks that still ran.
        tasks: usize,
        /// Slots jobs still held, as the JobManager last said.
        slots_held: u32,
    },
}

/// `wait`, unless `deadline` passes or `cut` fires first (None then).
async fn bounded<T>(
    wait: impl std::future::Future<Output = T>,
    deadline: tokio::time::Instant,
    cut: &CancellationToken,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cut.cancelled() => None,
        _ = tokio::time::sleep_until(deadline) => None,
        value = wait => Some(value),
    }
}

/// Refuses a call whose leader epoch (gRPC metadata [`LEADER_EPOCH_METADATA`], none counting as 0) is older than
/// `registered`, the epoch of the leader this TaskManager registered with: it comes from a JobManager that lost
/// the lead and has not noticed.
fn check_leader_epoch(metadata: &tonic::metadata::MetadataMap, registered: u64) -> Result<(), Status> {
    let offered = metadata.get(LEADER_EPOCH_METADATA).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    if offered < registered {
        return Err(Status::failed_precondition(format!(
            "stale leader epoch {offered}: this TaskManager follows epoch {registered} (the caller lost the lead)"
        )));
    }
    Ok(())
}

/// Why the heartbeat loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// The TaskManager shuts down.
    Shutdown,
    /// The leader answered that it does not know this registration: every task was cancelled.
    Forgotten,
    /// The leader stopped answering, or another one answers: the tasks keep running, to be reported.
    LeaderGone,
}

/// Every JobManager address of a `JOBMANAGER` list (`host:port[,host:port...]`), trimmed, empty ones dropped.
pub fn jobmanager_addresses(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|address| !address.is_empty())
}

/// What the JobManager said to a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaveAnswer {
    /// It knows this TaskManager; jobs hold this many of its slots.
    Known { slots_held: u32 },
    /// It does not know this registration (it restarted, or declared this TaskManager lost).
    Unknown,
    /// It could not be reached (after [`LEAVE_ATTEMPTS_MAX`] tries), or the drain's time ran out first.
    Unreachable,
}

/// When a deployment's network channels are released.
///
/// Not when its last local task ends: a finished producer's buffers may still be queued for a consumer on
/// another TaskManager, and releasing would discard them. The JobManager ends every deployment with a
/// `CancelTasks` once the job is terminal (for a FINISHED job every consumer has then received its
/// end-of-partition, so nothing is in flight); the execution is released when that request has come and
/// no local task of it still runs.
#[derive(Default)]
struct Executions {
    /// (job, attempt) → execution id, for deployments not yet closed by a cancel.
    open: HashMap<(String, u32), u64>,
    /// Executions whose cancel came while some of their tasks still ran.
    closing: std::collections::HashSet<u64>,
}

/// The heartbeat interval and timeout a registration answer gives, raised to sane minimums: the interval to
/// [`HEARTBEAT_INTERVAL_MIN`], the timeout to room for the fewest heartbeats a timeout must hold (a JobManager
/// that sends none, 0, gets the default).
fn heartbeat_settings(answer: &RegisterTaskManagerResponse) -> (Duration, Duration) {
    let interval = Duration::from_millis(answer.heartbeat_interval_ms).max(HEARTBEAT_INTERVAL_MIN);
    let timeout = match answer.heartbeat_timeout_ms {
        0 => HEARTBEAT_TIMEOUT_DEFAULT,
        ms => Duration::from_millis(ms),
    };
    (interval, timeout.max(interval * sluice_common::bounds::HEARTBEATS_PER_TIMEOUT_MIN))
}

fn task_key(task: &TaskRef) -> String {
    format!("{}/{}/{}/{}", task.job_id, task.attempt, task.chain, task.subtask)
}

/// What the tasks of a TaskManager run on: its network stack, metrics, the runtime for tasks, and its state
/// settings.
pub struct TaskServices {
    pub network: Arc<NetworkEnvironment>,
    pub metrics: Arc<Metrics>,
    pub data_runtime: tokio::runtime::Handle,
    pub state: StateSettings,
    /// The native operators this binary offers.
    pub registry: Arc<OperatorRegistry>,
    /// The cluster secret.
    pub credentials: Arc<ClusterCredentials>,
    /// TLS for calls to the JobManager, if on.
    pub tls: Option<sluice_common::tls::Tls>,
}

impl TaskManager {
    pub fn new(
        id: String,
        slots: u32,
        jobmanager_address: &str,
        addresses: BoundAddresses,
        services: TaskServices,
    ) -> anyhow::Result<Arc<Self>> {
        let TaskServices { network, metrics, data_runtime, state, registry, credentials, tls } = services;
        let scheme = sluice_common::tls::scheme(tls.as_ref());
        let mut jobmanagers = Vec::new();
        for address in jobmanager_addresses(jobmanager_address) {
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(RPC_TIMEOUT);
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.tonic_client(address))?;
            }
            let client = JobManagerServiceClient::new(endpoint.connect_lazy())
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX);
            jobmanagers.push(client);
        }
        anyhow::ensure!(!jobmanagers.is_empty(), "JOBMANAGER names no address");
        Ok(Arc::new(Self {
            id,
            slots,
            addresses,
            network,
            metrics,
            data_runtime,
            state,
            registry,
            jobmanagers,
            current: std::sync::atomic::AtomicUsize::new(0),
            leader_epoch: std::sync::atomic::AtomicU64::new(0),
            credentials,
            session: std::sync::RwLock::new(None),
            tasks: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            executions: Mutex::new(Executions::default()),
            leaving: std::sync::atomic::AtomicBool::new(false),
            task_ended: tokio::sync::Notify::new(),
            registering: tokio::sync::Mutex::new(()),
        }))
    }

    /// The client of the JobManager calls go to now.
    fn jobmanager(&self) -> JobManagerServiceClient<Channel> {
        let index = self.current.load(std::sync::atomic::Ordering::SeqCst) % self.jobmanagers.len();
        self.jobmanagers[index].clone()
    }

    /// Calls go to the next JobManager address from now on.
    fn next_jobmanager(&self) {
        self.current.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The tasks running here, as a registration reports them.
    fn running_tasks(&self) -> Vec<ReportedTask> {
        let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tasks
            .values()
            .filter(|t| !t.cancel.is_cancelled())
            .map(|t| ReportedTask { task: Some(t.task.clone()), execution_id: t.execution_id })
            .collect()
    }

    /// `message` as a call to the JobManager: with the cluster secret and this registration's session.
    fn to_jobmanager<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.credentials.authorize(request.metadata_mut());
        let session = self.session.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(value) = session.and_then(|session| session.parse().ok()) {
            request.metadata_mut().insert(SESSION_METADATA, value);
        }
        request
    }

    /// Checks a call to this TaskManager: the cluster secret, and the session the JobManager gave this
    /// registration (no other process has it: another TaskManager has a session of its own).
    pub fn check_call(&self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let refuse = |reason: &str, status: tonic::Status| {
            self.metrics.requests_refused.with_label_values(&["rpc", reason]).inc();
            // Counted in sluice_requests_refused_total; a log line each would let a stranger flood the log.
            tracing::debug!(reason, "refused a call to this TaskManager");
            Err(status)
        };
        if let Err(refusal) = self.credentials.check(request.metadata()) {
            return refuse(refusal.reason(), refusal.status());
        }
        let offered = request.metadata().get(SESSION_METADATA).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let current = self.session.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let matches = current.is_some_and(|current| {
            use subtle::ConstantTimeEq as _;
            bool::from(current.as_bytes().ct_eq(offered.as_bytes()))
        });
        if !matches {
            return refuse(
                "session",
                tonic::Status::permission_denied("only this TaskManager's JobManager may call it (wrong session)"),
            );
        }
        let registered = self.leader_epoch.load(std::sync::atomic::Ordering::SeqCst);
        if let Err(status) = check_leader_epoch(request.metadata(), registered) {
            return refuse("leader_epoch", status);
        }
        Ok(request)
    }

    /// Registers, then heartbeats; goes back to registering whenever the JobManager is lost. Never returns
    /// until `shutdown` fires.
    pub async fn run_registration(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = REGISTER_BACKOFF_MIN;
        let mut refused_in_round = 0;
        // Since when tasks run here without a leader that knows of them.
        let mut leaderless_since: Option<tokio::time::Instant> = None;
        loop {
            if self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::info!("leaving: not registering again");
                shutdown.cancelled().await;
                return;
            }
            if leaderless_since.is_some_and(|since| since.elapsed() >= TASKS_KEPT_WITHOUT_LEADER_MAX) {
                leaderless_since = None;
                let cancelled = self.cancel_all();
                tracing::warn!(
                    tasks_cancelled = cancelled,
                    kept_for_ms = TASKS_KEPT_WITHOUT_LEADER_MAX.as_millis() as u64,
                    "no JobManager leader took this TaskManager's tasks over in time; cancelled them"
                );
            }
            // The tasks still running are reported: a new leader adopts the attempts it can (they go on), and
            // the answer's `keep` says which; every other one is cancelled below. Tasks deployed after the
            // request went out (the leader may deploy before its answer arrives) are not in it, and live.
            let running = self.running_tasks();
            let request = RegisterTaskManagerRequest {
                task_manager_id: self.id.clone(),
                rpc_address: self.addresses.rpc.clone(),
                data_address: self.addresses.data.clone(),
                metrics_address: self.addresses.metrics.clone(),
                slots: self.slots,
                session: sluice_common::secret::generate(),
                running: running.clone(),
            };
            // The new session is in force before the request goes out: the first deployment may arrive before
            // the answer.
            let registering = self.registering.lock().await;
            if self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // Leaving began meanwhile: the top of the loop stops registering.
            }
            *self.session.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(request.session.clone());
            let registered = self.jobmanager().register_task_manager(self.to_jobmanager(request)).await;
            drop(registering);
            match registered {
                Ok(response) => {
                    backoff = REGISTER_BACKOFF_MIN;
                    refused_in_round = 0;
                    leaderless_since = None;
                    let answer = response.into_inner();
                    let epoch = answer.leader_epoch;
                    self.leader_epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
                    let kept: std::collections::HashSet<(String, u32)> =
                        answer.keep.iter().map(|k| (k.job_id.clone(), k.attempt)).collect();
                    let cancelled = self.cancel_reported(&running, &kept);
                    let (interval, timeout) = heartbeat_settings(&answer);
                    tracing::info!(task_manager = %self.id, interval_ms = interval.as_millis() as u64,
                        timeout_ms = timeout.as_millis() as u64, leader_epoch = epoch, tasks_reported = running.len(),
                        tasks_cancelled = cancelled, "registered with the JobManager");
                    match self.heartbeat_until_lost(interval, timeout, answer.leader_epoch, &shutdown).await {
                        Lost::Shutdown => return,
                        Lost::Forgotten => {}
                        Lost::LeaderGone => {
                            leaderless_since = Some(tokio::time::Instant::now());
                            self.next_jobmanager();
                        }
                    }
                }
                Err(status) => {
                    // A standby's refusal, or no JobManager at this address: the next address is tried at once,
                    // the back-off grows only after a whole round of them.
                    self.next_jobmanager();
                    refused_in_round += 1;
                    let pause = if refused_in_round < self.jobmanagers.len() {
                        REGISTER_BACKOFF_MIN
                    } else {
                        refused_in_round = 0;
                        let pause = backoff;
                        backoff = (backoff * 2).min(REGISTER_BACKOFF_MAX);
                        pause
                    };
                    tracing::warn!(error = %status.message(), retry_in_ms = pause.as_millis() as u64, "cannot register with the JobManager");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Cancels the tasks of `reported` whose (job, attempt) is not in `kept` (with their deployments' channels,
    /// as a `CancelTasks` would); returns how many tasks.
    fn cancel_reported(&self, reported: &[ReportedTask], kept: &std::collections::HashSet<(String, u32)>) -> usize {
        let dropped: std::collections::BTreeSet<(String, u32)> = reported
            .iter()
            .filter_map(|running| running.task.as_ref())
            .map(|task| (task.job_id.clone(), task.attempt))
            .filter(|attempt| !kept.contains(attempt))
            .collect();
        // `cancel` takes every attempt up to the one named: a newer attempt deployed meanwhile lives.
        dropped.iter().map(|(job, attempt)| self.cancel(job, *attempt)).sum()
    }

    /// Heartbeats every `interval` to the leader of `epoch`, until it is lost (see [`Lost`]) or `shutdown`. A
    /// failed heartbeat is retried and keeps the tasks, until none was answered for `timeout` (see
    /// [`Liveness`]).
    async fn heartbeat_until_lost(
        &self,
        interval: Duration,
        timeout: Duration,
        epoch: u64,
        shutdown: &CancellationToken,
    ) -> Lost {
        let mut liveness = Liveness::new(interval, timeout, tokio::time::Instant::now());
        let mut rotation = MetricsRotation::default();
        let call_timeout = liveness.call_timeout(RPC_TIMEOUT);
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Lost::Shutdown,
                _ = tokio::time::sleep(pause) => {}
            }
            let tasks =
                rotation.next_share(self.task_metrics(), HEARTBEAT_TASK_METRICS_MAX, HEARTBEAT_METRICS_BYTES_MAX);
            let request = HeartbeatRequest {
                task_manager_id: self.id.clone(),
                tasks,
                memory_rss_bytes: self.metrics.memory_rss_bytes(),
            };
            let mut client = self.jobmanager();
            let call = client.heartbeat(self.to_jobmanager(request));
            let answer = match tokio::time::timeout(call_timeout, call).await {
                Ok(answer) => answer,
                Err(_) => Err(Status::deadline_exceeded(format!("no answer within {call_timeout:?}"))),
            };
            let now = tokio::time::Instant::now();
            let step = match answer {
                Ok(response) => {
                    let answer = response.get_ref();
                    if !answer.registered && answer.leader_epoch != epoch {
                        // Another leader answers (the address now reaches it, or this one restarted): it has never
                        // known this registration. The tasks are reported to it, not cancelled.
                        tracing::warn!(
                            from_epoch = epoch,
                            to_epoch = answer.leader_epoch,
                            "the JobManager leader changed; registering with the new one, keeping the tasks"
                        );
                        return Lost::LeaderGone;
                    }
                    liveness.answered(answer.registered, now)
                }
                Err(status) => {
                    let step = liveness.failed(now);
                    match step {
                        NextStep::Beat(retry_in) => {
                            tracing::warn!(error = %status.message(), code = ?status.code(),
                                retry_in_ms = retry_in.as_millis() as u64, "heartbeat failed; keeping the tasks and retrying");
                        }
                        NextStep::Register => {
                            // No answer for the heartbeat timeout: the leader died, stalled, or stepped down. The
                            // tasks keep running (bounded by TASKS_KEPT_WITHOUT_LEADER_MAX) and are reported to
                            // whichever JobManager leads now.
                            tracing::warn!(tasks = self.task_count(),
                                "the JobManager has not answered a heartbeat for the timeout; looking for the leader, keeping the tasks");
                            return Lost::LeaderGone;
                        }
                    }
                    step
                }
            };
            match step {
                NextStep::Beat(next) => pause = next,
                NextStep::Register => {
                    // The leader does not know us (we were frozen or cut off for longer than the heartbeat timeout):
                    // its jobs have moved on without our tasks, which must not write anything more. They are
                    // cancelled at once, before registering again.
                    let cancelled = self.cancel_all();
                    tracing::warn!(
                        tasks_cancelled = cancelled,
                        "the JobManager does not know this TaskManager any more; cancelled its tasks, registering again"
                    );
                    return Lost::Forgotten;
                }
            }
        }
    }

    /// Leaves the cluster gracefully (on SIGTERM): tells the JobManager, which takes a checkpoint of every job
    /// with tasks here and moves them to other TaskManagers (cancelling them here); waits until no task runs
    /// here and no job holds a slot here (asking again every [`LEAVE_POLL_INTERVAL`]), at most `timeout` or until
    /// `cut` fires; then says it has left. Heartbeats go on meanwhile, so the JobManager does not take the drain
    /// for a crash. Whatever still runs afterwards is cancelled.
    pub async fn leave(&self, timeout: Duration, cut: &CancellationToken) -> LeaveOutcome {
        self.leaving.store(true, std::sync::atomic::Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        tracing::info!(
            tasks = self.task_count(),
            timeout_ms = timeout.as_millis() as u64,
            "leaving the cluster: the JobManager moves this TaskManager's tasks elsewhere"
        );
        // Every wait below ends at the deadline or at a second signal (`bounded`).
        // A registration in flight finishes first: the leave must carry the session the JobManager knows.
        let first = match bounded(
            async {
                drop(self.registering.lock().await);
                self.tell_leaving(false).await
            },
            deadline,
            cut,
        )
        .await
        {
            Some(answer) => answer,
            None => LeaveAnswer::Unreachable,
        };
        let mut slots_held = match first {
            LeaveAnswer::Known { slots_held } => Some(slots_held),
            LeaveAnswer::Unknown | LeaveAnswer::Unreachable => None,
        };
        let outcome = loop {
            let Some(held) = slots_held else { break LeaveOutcome::NotHeard { cancelled: 0 } };
            let ended = self.task_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let tasks = self.task_count();
            if tasks == 0 && held == 0 {
                break LeaveOutcome::Drained;
            }
            let poll = async {
                tokio::select! {
                    _ = ended => {}
                    _ = tokio::time::sleep(LEAVE_POLL_INTERVAL) => {}
                }
            };
            let waited = bounded(poll, deadline, cut).await;
            let Some(()) = waited else { break LeaveOutcome::Cut { tasks, slots_held: held } };
            match bounded(self.tell_leaving(false), deadline, cut).await {
                Some(LeaveAnswer::Known { slots_held: now }) => slots_held = Some(now),
                Some(LeaveAnswer::Unknown) => slots_held = None,
                // A blip mid-drain: the JobManager still moves the jobs; ask again at the next poll.
                Some(LeaveAnswer::Unreachable) | None => {}
            }
        };
        let cancelled = self.cancel_all();
        let outcome = match outcome {
            LeaveOutcome::NotHeard { .. } => LeaveOutcome::NotHeard { cancelled },
            other => other,
        };
        if !matches!(outcome, LeaveOutcome::NotHeard { .. }) {
            // One try, bounded by the RPC timeout: if it is lost, the heartbeat timeout marks this TaskManager lost,
            // and no job holds its slots any more.
            self.tell_leaving(true).await;
        }
        let took_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            LeaveOutcome::Drained => tracing::info!(took_ms, "left the cluster: every task moved elsewhere"),
            LeaveOutcome::NotHeard { cancelled } => tracing::warn!(
                tasks_cancelled = cancelled,
                "the JobManager did not hear that this TaskManager leaves; cancelled its tasks"
            ),
            LeaveOutcome::Cut { tasks, slots_held } => tracing::warn!(
                tasks,
                slots_held,
                took_ms,
                "the drain ended before every task moved; cancelled what still ran (those jobs fail over)"
            ),
        }
        outcome
    }

    /// Tells the JobManager that this TaskManager leaves (`done`: has left).
    async fn tell_leaving(&self, done: bool) -> LeaveAnswer {
        let attempts = if done { 1 } else { LEAVE_ATTEMPTS_MAX };
        for attempt in 1..=attempts {
            let request = LeaveClusterRequest { task_manager_id: self.id.clone(), done };
            match self.jobmanager().leave_cluster(self.to_jobmanager(request)).await {
                Ok(answer) if answer.get_ref().known => {
                    return LeaveAnswer::Known { slots_held: answer.get_ref().slots_held };
                }
                Ok(_) => return LeaveAnswer::Unknown,
                Err(status) => {
                    tracing::warn!(error = %status.message(), attempt, done, "cannot tell the JobManager that this TaskManager leaves");
                    if attempt < attempts {
                        tokio::time::sleep(LEAVE_RETRY_PAUSE).await;
                    }
                }
            }
        }
        LeaveAnswer::Unreachable
    }

    /// How many tasks run here.
    fn task_count(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Every running task's metrics, with its key (the order heartbeats take turns in).
    fn task_metrics(&self) -> Vec<(String, TaskMetrics)> {
        let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tasks.iter().map(|(key, t)| (key.clone(), t.counters.snapshot())).collect()
    }

    /// Reports a task's state (with its failure, kind and message, when it failed) to the JobManager.
    async fn report(
        &self,
        task: &TaskRef,
        state: TaskState,
        failure: Option<(FailureKind, String)>,
        metrics: Option<TaskMetrics>,
        last_checkpoint: u64,
    ) {
        let (failure_kind, error) = match failure {
            Some((kind, error)) => (kind.to_proto() as i32, error),
            None => (0, String::new()),
        };
        let report = TaskStateReport {
            task: Some(task.clone()),
            state: state as i32,
            error,
            metrics,
            failure_kind,
            last_checkpoint,
        };
        let mut backoff = REGISTER_BACKOFF_MIN;
        for attempt in 1..=REPORT_ATTEMPTS_MAX {
            match self.jobmanager().report_task_state(self.to_jobmanager(report.clone())).await {
                Ok(ack) => {
                    if !ack.get_ref().accepted {
                        tracing::info!(task = %task_key(task), "the JobManager refused a report (stale attempt); cancelling");
                        self.cancel(&task.job_id, task.attempt);
                    }
                    return;
                }
                Err(status) if attempt < REPORT_ATTEMPTS_MAX => {
                    tracing::warn!(task = %task_key(task), error = %status.message(), "cannot report task state; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REGISTER_BACKOFF_MAX);
                }
                Err(status) => {
                    tracing::error!(task = %task_key(task), error = %status.message(), "giving up reporting task state")
                }
            }
        }
    }

    /// Cancels every task of `job_id` whose attempt is at most `attempt`, and releases the network channels
    /// of those deployments once their tasks have ended.
    fn cancel(&self, job_id: &str, attempt: u32) -> usize {
        let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut cancelled = 0;
        for task in tasks.values().filter(|t| t.task.job_id == job_id && t.task.attempt <= attempt) {
            task.cancel.cancel();
            cancelled += 1;
        }
        let mut executions = self.executions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let closed: Vec<(String, u32)> =
            executions.open.keys().filter(|(job, a)| job == job_id && *a <= attempt).cloned().collect();
        for key in closed {
            let Some(execution_id) = executions.open.remove(&key) else { continue };
            if tasks.values().any(|t| t.execution_id == execution_id) {
                executions.closing.insert(execution_id);
            } else {
                self.network.release_execution(execution_id);
            }
        }
        cancelled
    }

    /// Cancels every task of every job (see [`Self::cancel`]).
    fn cancel_all(&self) -> usize {
        let jobs: std::collections::BTreeSet<String> = {
            let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let executions = self.executions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            tasks
                .values()
                .map(|t| t.task.job_id.clone())
                .chain(executions.open.keys().map(|(j, _)| j.clone()))
                .collect()
        };
        jobs.iter().map(|job| self.cancel(job, u32::MAX)).sum()
    }

    /// Sends a command made by `command` to each task of `job_id`'s `attempt` (only sources when
    /// `sources_only`). Returns how many took it.
    fn send_checkpoint_command(
        &self,
        job_id: &str,
        attempt: u32,
        sources_only: bool,
        mut command: impl FnMut() -> CheckpointCommand,
    ) -> u32 {
        let tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let targets = tasks
            .values()
            .filter(|t| t.task.job_id == job_id && t.task.attempt == attempt && (t.is_source || !sources_only));
        let mut taken = 0;
        for task in targets {
            match task.commands.try_send(command()) {
                Ok(()) => taken += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(task = %task_key(&task.task), "the task's checkpoint command queue is full; dropping a command")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        taken
    }

    /// Where a task's checkpoint outcomes go: an RPC to the JobManager, on the control runtime.
    fn checkpoint_reporter(self: &Arc<Self>) -> CheckpointReporter {
        let this = Arc::downgrade(self);
        let control = tokio::runtime::Handle::current();
        Arc::new(move |outcome: CheckpointOutcome| {
            let Some(this) = this.upgrade() else { return };
            control.spawn(async move {
                let mut client = this.jobmanager();
                let result = match outcome {
                    CheckpointOutcome::Acknowledge(ack) => {
                        client.acknowledge_checkpoint(this.to_jobmanager(ack)).await.map(|_| ())
                    }
                    CheckpointOutcome::Decline(decline) => {
                        tracing::warn!(checkpoint = decline.checkpoint_id, reason = %decline.reason, "declining a checkpoint");
                        client.decline_checkpoint(this.to_jobmanager(decline)).await.map(|_| ())
                    }
                };
                if let Err(status) = result {
                    // The coordinator's timeout aborts the checkpoint; the next one starts afresh.
                    tracing::warn!(error = %status.message(), "cannot report a checkpoint outcome to the JobManager");
                }
            });
        })
    }

    /// Forgets an ended task; releases its deployment's channels if that was the last task of a closed one.
    fn task_ended(&self, key: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(ended) = tasks.remove(key) else { return };
        self.task_ended.notify_waiters();
        if !tasks.values().any(|t| t.task.job_id == ended.task.job_id) {
            // Under the lock: a task of the job deployed after this makes its series anew.
            self.metrics.remove_kafka_job(&ended.task.job_id);
        }
        if tasks.values().any(|t| t.execution_id == ended.execution_id) {
            return;
        }
        let mut executions = self.executions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if executions.closing.remove(&ended.execution_id) {
            self.network.release_execution(ended.execution_id);
        }
    }

    fn deploy(self: &Arc<Self>, request: DeployTasksRequest) -> Result<usize, Status> {
        let superseded = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let newest = attempts.entry(request.job_id.clone()).or_insert(request.attempt);
            if request.attempt < *newest {
                return Err(Status::failed_precondition(format!(
                    "job {} attempt {} is stale: attempt {} was already deployed here",
                    request.job_id, request.attempt, newest
                )));
            }
            let superseded = *newest < request.attempt;
            *newest = request.attempt;
            superseded
        };
        if superseded {
            // Fencing: whatever is left here of an earlier attempt (its cancel may have been lost with the
            // JobManager's connection) stops now, before the new attempt's tasks start.
            let cancelled = self.cancel(&request.job_id, request.attempt - 1);
            if cancelled > 0 {
                tracing::warn!(job = %request.job_id, attempt = request.attempt, tasks = cancelled,
                    "cancelled tasks of an earlier attempt");
            }
        }
        let graph = request.graph.clone().ok_or_else(|| Status::invalid_argument("the deployment has no job graph"))?;
        let job =
            Arc::new(validate(graph).map_err(|e| Status::invalid_argument(format!("the job graph is invalid: {e}")))?);
        if job.chains != request.chains {
            return Err(Status::invalid_argument(
                "the deployment's chains differ from the ones this TaskManager derives",
            ));
        }
        let plans = plan_subtasks(&request, &job, &self.id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let count = plans.len();
        let checkpoint_dir = match request.checkpoint_dir.as_str() {
            "" => None,
            location => Some(sluice_common::storage::Storage::open(location).map_err(|e| {
                Status::invalid_argument(format!("this TaskManager cannot use the checkpoint storage: {e}"))
            })?),
        };
        let reporter = self.checkpoint_reporter();
        let restore = request.restore.clone().map(Arc::new);
        self.executions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .open
            .insert((request.job_id.clone(), request.attempt), request.execution_id);
        for plan in plans {
            let task_ref = TaskRef {
                job_id: request.job_id.clone(),
                attempt: request.attempt,
                chain: plan.chain,
                subtask: plan.subtask,
            };
            let chain = &job.chains[plan.chain as usize];
            let name = format!("{}#{}", chain.vertex_ids.join("->"), plan.subtask);
            // Every line the task logs carries these fields (in JSON logs: `span` and `spans`).
            let span = tracing::info_span!(
                "task",
                job = %task_ref.job_id,
                attempt = task_ref.attempt,
                vertex = %chain.vertex_ids.join("->"),
                chain = task_ref.chain,
                subtask = task_ref.subtask,
            );
            let counters = Arc::new(self.metrics.task(task_ref.clone(), name, &chain.vertex_ids));
            let cancel = CancellationToken::new();
            let key = task_key(&task_ref);
            let (commands, command_receiver) = mpsc::channel(CHECKPOINT_COMMANDS_MAX);
            let is_source = plan.inputs.is_empty();
            self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(
                key.clone(),
                RunningTask {
                    task: task_ref.clone(),
                    execution_id: request.execution_id,
                    cancel: cancel.clone(),
                    counters: counters.clone(),
                    commands,
                    is_source,
                },
            );
            let checkpoints = TaskCheckpoints {
                task: task_ref.clone(),
                dir: checkpoint_dir.clone(),
                commands: command_receiver,
                reporter: reporter.clone(),
                restore: restore.clone(),
                periodic: request.checkpointing,
            };
            let task = Task::new(
                job.clone(),
                plan,
                counters.clone(),
                cancel,
                self.state.clone(),
                self.registry.clone(),
                checkpoints,
            );
            let this = self.clone();
            let network = self.network.clone();
            let control = tokio::runtime::Handle::current();
            self.metrics.tasks_running.inc();
            self.data_runtime.spawn(
                async move {
                    let running_report = {
                        let (this, task_ref) = (this.clone(), task_ref.clone());
                        move || {
                            control.spawn(async move {
                                this.report(&task_ref, TaskState::TaskRunning, None, None, 0).await
                            });
                        }
                    };
                    let result = task.run(network, running_report).await;
                    let (state, failure, last_checkpoint) = match result {
                        Ok(last_checkpoint) => (TaskState::TaskFinished, None, last_checkpoint),
                        Err(TaskError::Cancelled) => (TaskState::TaskCanceled, None, 0),
                        Err(e) => (TaskState::TaskFailed, Some((e.kind(), e.to_string())), 0),
                    };
                    match &failure {
                        Some((kind, error)) => tracing::warn!(task = %key, %kind, %error, "task failed"),
                        None => tracing::info!(task = %key, state = state.as_str_name(), "task ended"),
                    }
                    this.report(&task_ref, state, failure, Some(counters.snapshot()), last_checkpoint).await;
                    this.task_ended(&key);
                    this.metrics.tasks_running.dec();
                    counters.remove();
                }
                .instrument(span),
            );
        }
        Ok(count)
    }
}

/// The gRPC face of a [`TaskManager`].
pub struct TaskManagerRpc(pub Arc<TaskManager>);

#[tonic::async_trait]
impl TaskManagerService for TaskManagerRpc {
    async fn deploy_tasks(
        &self,
        request: Request<DeployTasksRequest>,
    ) -> Result<Response<DeployTasksResponse>, Status> {
        let request = request.into_inner();
        let (job, attempt) = (request.job_id.clone(), request.attempt);
        let count = self.0.deploy(request)?;
        tracing::info!(job = %job, attempt, tasks = count, "deployed tasks");
        Ok(Response::new(DeployTasksResponse {}))
    }

    async fn cancel_tasks(
        &self,
        request: Request<CancelTasksRequest>,
    ) -> Result<Response<CancelTasksResponse>, Status> {
        let request = request.into_inner();
        let cancelled = self.0.cancel(&request.job_id, request.attempt);
        tracing::info!(job = %request.job_id, attempt = request.attempt, tasks = cancelled, "cancelling tasks");
        Ok(Response::new(CancelTasksResponse {}))
    }

    async fn trigger_checkpoint(
        &self,
        request: Request<TriggerCheckpointRequest>,
    ) -> Result<Response<TriggerCheckpointResponse>, Status> {
        let request = request.into_inner();
        let command = || CheckpointCommand::Trigger {
            id: request.checkpoint_id,
            timestamp_ms: request.timestamp_ms,
            stop: request.stop_sources,
        };
        let triggered = self.0.send_checkpoint_command(&request.job_id, request.attempt, true, command);
        tracing::debug!(job = %request.job_id, checkpoint = request.checkpoint_id, triggered, "checkpoint triggered");
        Ok(Response::new(TriggerCheckpointResponse { triggered }))
    }

    async fn notify_checkpoint_complete(
        &self,
        request: Request<NotifyCheckpointCompleteRequest>,
    ) -> Result<Response<NotifyCheckpointCompleteResponse>, Status> {
        let request = request.into_inner();
        // Answered once every task committed (bounded): a stop-with-savepoint cancels the tasks right after.
        let mut done = Vec::new();
        let command = || {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            done.push(receiver);
            CheckpointCommand::Complete { id: request.checkpoint_id, done: Some(sender) }
        };
        self.0.send_checkpoint_command(&request.job_id, request.attempt, false, command);
        let all = futures::future::join_all(done);
        if tokio::time::timeout(CHECKPOINT_COMMIT_WAIT_MAX, all).await.is_err() {
            tracing::warn!(job = %request.job_id, checkpoint = request.checkpoint_id, "tasks did not confirm their commit in time");
        }
        Ok(Response::new(NotifyCheckpointCompleteResponse {}))
    }
}

#[cfg(test)]
mod epoch_tests {
    use super::*;

    fn metadata(epoch: Option<&str>) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(value) = epoch.and_then(|e| e.parse().ok()) {
            metadata.insert(LEADER_EPOCH_METADATA, value);
        }
        metadata
    }

    /// Goal: leader fencing on the TaskManager (issue 21). A call of the leader it registered with, or of a newer
    /// one, passes; an older epoch, a missing one or one that is not a number (read as 0) is refused once this
    /// TaskManager follows a leader; before its first registration (0) nothing is refused for its epoch.
    #[test]
    fn calls_of_an_older_leader_epoch_are_refused() {
        assert!(check_leader_epoch(&metadata(Some("3")), 3).is_ok());
        assert!(check_leader_epoch(&metadata(Some("4")), 3).is_ok());
        for stale in [Some("2"), None, Some("not-a-number"), Some("-1")] {
            let refused = check_leader_epoch(&metadata(stale), 3);
            assert_eq!(
                refused.as_ref().map_err(|s| s.code()).err(),
                Some(tonic::Code::FailedPrecondition),
                "{stale:?}"
            );
        }
        assert!(check_leader_epoch(&metadata(None), 0).is_ok());
    }
}
