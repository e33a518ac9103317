//! The gRPC service TaskManagers call: registration, heartbeats, task state reports.
//!
//! Handlers are thin: registration and heartbeats go to the cluster registry; a task report without a
//! state (`TASK_STATE_UNSPECIFIED`) is refused as malformed; task reports are fenced
//! by attempt (a report of any attempt other than the job's current one is refused, so a slow message of
//! an earlier deployment can never move the current one) and forwarded to the job's actor. Task metrics
//! update the job's live view directly (latest per task, stale attempts ignored).
use std::sync::Arc;
use std::time::Duration;

use sluice_common::ids::JobId;
use sluice_common::lifecycle;
use sluice_common::proto::job_manager_service_server::JobManagerService;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, CheckpointReply, DeclineCheckpointRequest, HeartbeatRequest, HeartbeatResponse,
    LeaveClusterRequest, LeaveClusterResponse, RegisterTaskManagerRequest, RegisterTaskManagerResponse, TaskMetrics,
    TaskRef, TaskStateAck, TaskStateReport,
};
use tonic::{Request, Response, Status};

use std::collections::BTreeMap;

use sluice_common::proto::JobAttempt;

use crate::cluster::TaskManagerId;
use crate::deployment::TaskKey;
use crate::job::{JobEvent, JobShared, REPORT_FORWARD_TIMEOUT};
use crate::leader::Leadership;
use crate::Context;

/// The longest one RPC from a TaskManager may take. Handlers only update the registry or hand a report to
/// a job's actor (waiting at most [`REPORT_FORWARD_TIMEOUT`]), so anything longer is a stuck connection.
pub(crate) const RPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(RPC_REQUEST_TIMEOUT.as_secs() > 2 * REPORT_FORWARD_TIMEOUT.as_secs());

/// The most RPCs one connection may have in progress at once. A TaskManager sends a heartbeat and a few
/// reports at a time; a connection asking for more waits (HTTP/2 flow control), it is not served unboundedly.
pub(crate) const RPC_CONCURRENCY_PER_CONNECTION_MAX: usize = 64;

/// Idle time before the kernel probes an RPC connection (TCP keepalive): a TaskManager host that vanished
/// without closing its sockets is noticed and its connection freed.
pub(crate) const RPC_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How often the RPC server pings an HTTP/2 connection, and how long it waits for the answer before it
/// closes the connection: a peer that stopped answering does not hold its connection forever.
pub(crate) const RPC_HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`RPC_HTTP2_KEEPALIVE_INTERVAL`].
pub(crate) const RPC_HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The RPC server with every limit of this module set (message sizes are set on the service).
pub(crate) fn limited_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(RPC_REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(RPC_CONCURRENCY_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(RPC_HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(RPC_HTTP2_KEEPALIVE_TIMEOUT))
}

/// The accepted RPC connections of `listener`, with TCP keepalive ([`RPC_TCP_KEEPALIVE`]) and no Nagle delay.
/// (The server's own `tcp_keepalive` is ignored for connections it did not accept itself.)
pub(crate) fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_keepalive(Some(RPC_TCP_KEEPALIVE))
        .with_nodelay(Some(true))
}

/// The most task metrics one heartbeat may carry; a heartbeat with more is refused as malformed (a
/// TaskManager sends at most `HEARTBEAT_TASK_METRICS_MAX` per heartbeat, taking turns over its tasks).
pub const HEARTBEAT_TASKS_MAX: usize = 65_536;
const _: () = assert!(sluice_common::bounds::HEARTBEAT_TASK_METRICS_MAX <= HEARTBEAT_TASKS_MAX);

/// The most running tasks one registration may report (a TaskManager runs at most its slots × the chains of
/// its jobs; this is far above any real one and bounds the work a stranger's registration can cause).
pub const REGISTRATION_RUNNING_TASKS_MAX: usize = 65_536;

/// The refusal of a standby to a TaskManager's call: UNAVAILABLE, naming the leader when it is known, so the
/// TaskManager tries its next JobManager address.
pub(crate) fn not_the_leader(leadership: &Leadership) -> Status {
    let state = leadership.state();
    match state.lease.filter(|lease| lease.is_held()) {
        Some(lease) => Status::unavailable(format!(
            "this JobManager is a standby; the leader (epoch {}) is at {}",
            lease.epoch, lease.rpc_address
        )),
        None => Status::unavailable("this JobManager is a standby and no leader is known yet"),
    }
}

/// The JobManager side of `JobManagerService`.
pub struct JobManagerRpc {
    ctx: Arc<Context>,
}

impl JobManagerRpc {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        JobManagerRpc { ctx }
    }

    fn record_task_metrics(&self, metrics: &[TaskMetrics]) {
        for task_metrics in metrics {
            let Some(task) = task_metrics.task.as_ref() else { continue };
            if let Some(job) = self.ctx.jobs.get(&JobId(task.job_id.clone())) {
                // false: a stale attempt or an unknown task, ignored on purpose.
                let _ = job.record_metrics(task_metrics);
            }
        }
    }
}

/// The TaskManager (and its incarnation) a call comes from: the owner of the session it carries (see
/// `sluice_common::cluster_auth`); None for a call without a live session.
fn caller(ctx: &Context, metadata: &tonic::metadata::MetadataMap) -> Option<(TaskManagerId, u64)> {
    let session = metadata.get(sluice_common::cluster_auth::SESSION_METADATA)?.to_str().ok()?;
    ctx.cluster.session_owner(session)
}

/// Whether `caller` is the incarnation of the TaskManager the job's current deployment runs `task` on.
fn runs_task(job: &JobShared, task: &TaskRef, caller: Option<&(TaskManagerId, u64)>) -> bool {
    let live = job.live();
    caller.is_some_and(|(id, incarnation)| {
        live.tasks
            .get(&TaskKey::of(task))
            .is_some_and(|entry| &entry.task_manager == id && entry.incarnation == *incarnation)
    })
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

#[tonic::async_trait]
impl JobManagerService for JobManagerRpc {
    async fn register_task_manager(
        &self,
        request: Request<RegisterTaskManagerRequest>,
    ) -> Result<Response<RegisterTaskManagerResponse>, Status> {
        let request = request.into_inner();
        if request.running.len() > REGISTRATION_RUNNING_TASKS_MAX {
            return Err(Status::invalid_argument(format!(
                "a registration reports {} running tasks, more than the limit {REGISTRATION_RUNNING_TASKS_MAX}",
                request.running.len()
            )));
        }
        let registration = self.ctx.cluster.register(&request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let keep = self.adoptable(&request, registration.incarnation);
        tracing::info!(task_manager = %request.task_manager_id, rpc_address = %request.rpc_address,
            data_address = %request.data_address, slots = request.slots, incarnation = registration.incarnation,
            running = request.running.len(), kept_attempts = keep.len(), "TaskManager registered");
        Ok(Response::new(RegisterTaskManagerResponse {
            heartbeat_interval_ms: millis(self.ctx.settings.heartbeat_interval),
            heartbeat_timeout_ms: millis(self.ctx.settings.heartbeat_timeout),
            leader_epoch: self.ctx.leadership.epoch(),
            keep,
        }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        if !self.ctx.leadership.is_leader() {
            // Stepping down as the call came: "unknown" from a JobManager that no longer leads would make the
            // TaskManager cancel its tasks.
            return Err(not_the_leader(&self.ctx.leadership));
        }
        let caller = caller(&self.ctx, request.metadata());
        let request = request.into_inner();
        if request.tasks.len() > HEARTBEAT_TASKS_MAX {
            return Err(Status::invalid_argument(format!(
                "a heartbeat carries {} task metrics, more than the limit {HEARTBEAT_TASKS_MAX}",
                request.tasks.len()
            )));
        }
        let id = TaskManagerId(request.task_manager_id.clone());
        if caller.as_ref().map(|(owner, _)| owner) != Some(&id) {
            // Another incarnation's session (the TaskManager then registers anew), or a forgery (which learns
            // nothing and changes nothing).
            self.ctx.metrics.requests_refused.with_label_values(&["rpc", "session"]).inc();
            tracing::debug!(task_manager = %id, "heartbeat without this TaskManager's session");
            return Ok(Response::new(HeartbeatResponse {
                registered: false,
                leader_epoch: self.ctx.leadership.epoch(),
            }));
        }
        let registered = self.ctx.cluster.heartbeat(&id);
        if registered {
            self.ctx.cluster.note_memory(&id, request.memory_rss_bytes);
            self.record_task_metrics(&request.tasks);
        } else {
            tracing::debug!(task_manager = %request.task_manager_id, "heartbeat of an unregistered TaskManager");
        }
        Ok(Response::new(HeartbeatResponse { registered, leader_epoch: self.ctx.leadership.epoch() }))
    }

    async fn leave_cluster(
        &self,
        request: Request<LeaveClusterRequest>,
    ) -> Result<Response<LeaveClusterResponse>, Status> {
        let caller = caller(&self.ctx, request.metadata());
        let request = request.into_inner();
        let id = TaskManagerId(request.task_manager_id.clone());
        let Some((owner, incarnation)) = caller.filter(|(owner, _)| owner == &id) else {
            // Only a TaskManager's own incarnation can say it leaves; anyone else learns nothing.
            self.ctx.metrics.requests_refused.with_label_values(&["rpc", "session"]).inc();
            return Ok(Response::new(LeaveClusterResponse { known: false, slots_held: 0 }));
        };
        let Some((held, changed)) = self.ctx.cluster.leave(&owner, incarnation, request.done) else {
            return Ok(Response::new(LeaveClusterResponse { known: false, slots_held: 0 }));
        };
        match (request.done, changed) {
            (true, _) => tracing::info!(task_manager = %id, "TaskManager left the cluster"),
            (false, true) => {
                tracing::info!(task_manager = %id, slots_held = held, "TaskManager is leaving: its jobs move off it")
            }
            (false, false) => {}
        }
        Ok(Response::new(LeaveClusterResponse { known: true, slots_held: held }))
    }

    async fn report_task_state(&self, request: Request<TaskStateReport>) -> Result<Response<TaskStateAck>, Status> {
        let caller = caller(&self.ctx, request.metadata());
        let report = request.into_inner();
        let Some(task) = report.task.as_ref() else {
            return Err(Status::invalid_argument("a task state report needs a task"));
        };
        if !lifecycle::task::is_reportable(report.state()) {
            self.ctx.metrics.task_reports_refused.inc();
            return Err(Status::invalid_argument(format!(
                "a task state report needs a state (got {})",
                report.state().as_str_name()
            )));
        }
        let job_id = JobId(task.job_id.clone());
        let refuse = |why: &str| {
            tracing::info!(job_id = %job_id, attempt = task.attempt, chain = task.chain, subtask = task.subtask, why, "task report refused");
            self.ctx.metrics.task_reports_refused.inc();
            Ok(Response::new(TaskStateAck { accepted: false }))
        };
        let Some(job) = self.ctx.jobs.get(&job_id) else {
            return refuse("unknown or ended job");
        };
        if !job.is_current_attempt(task.attempt) {
            return refuse("stale attempt");
        }
        if caller.is_none() && job.adopting(task.attempt) {
            // A report sent with the session of the TaskManager's previous registration: retried after it registered
            // with this leader (a refusal would make it cancel the task).
            return Err(Status::unavailable(format!("job {job_id} is being adopted; retry the report")));
        }
        if caller.is_some() && job.adopting(task.attempt) {
            // No actor follows the attempt's tasks yet. One that ended or failed spoils the adoption (the job
            // restarts); any other report is stale news of a running task, accepted so it is not cancelled.
            if lifecycle::task::is_terminal(report.state()) {
                let why = format!(
                    "task {}#{} reported {} while its attempt was being adopted",
                    task.chain,
                    task.subtask,
                    report.state().as_str_name()
                );
                job.spoil_adoption(task.attempt, why);
            }
            return Ok(Response::new(TaskStateAck { accepted: true }));
        }
        if !runs_task(&job, task, caller.as_ref()) {
            self.ctx.metrics.requests_refused.with_label_values(&["rpc", "not_the_tasks_task_manager"]).inc();
            return refuse("not from the TaskManager incarnation that runs the task");
        }
        match job.inbox.send_timeout(JobEvent::TaskReport(report.clone()), REPORT_FORWARD_TIMEOUT).await {
            Ok(()) => Ok(Response::new(TaskStateAck { accepted: true })),
            Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => refuse("the job has ended"),
            Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(Status::unavailable(format!("job {job_id} is busy; retry the report")))
            }
        }
    }

    async fn acknowledge_checkpoint(
        &self,
        request: Request<AcknowledgeCheckpointRequest>,
    ) -> Result<Response<CheckpointReply>, Status> {
        let caller = caller(&self.ctx, request.metadata());
        let ack = request.into_inner();
        let task = ack.task.clone();
        self.forward_checkpoint_event(task.as_ref(), caller, JobEvent::CheckpointAck(ack)).await
    }

    async fn decline_checkpoint(
        &self,
        request: Request<DeclineCheckpointRequest>,
    ) -> Result<Response<CheckpointReply>, Status> {
        let caller = caller(&self.ctx, request.metadata());
        let decline = request.into_inner();
        let task = decline.task.clone();
        self.forward_checkpoint_event(task.as_ref(), caller, JobEvent::CheckpointDecline(decline)).await
    }
}

impl JobManagerRpc {
    /// Offers the tasks a registering TaskManager still runs to the adoptions open for their jobs; returns the
    /// attempts it keeps (every other reported task it cancels).
    fn adoptable(&self, request: &RegisterTaskManagerRequest, incarnation: u64) -> Vec<JobAttempt> {
        let mut by_attempt: BTreeMap<(String, u32, u64), Vec<TaskKey>> = BTreeMap::new();
        for running in &request.running {
            let Some(task) = running.task.as_ref() else { continue };
            let key = (task.job_id.clone(), task.attempt, running.execution_id);
            by_attempt.entry(key).or_default().push(TaskKey::of(task));
        }
        let task_manager = TaskManagerId(request.task_manager_id.clone());
        let mut keep: Vec<JobAttempt> = Vec::new();
        for ((job_id, attempt, execution_id), tasks) in by_attempt {
            let id = JobId(job_id.clone());
            let Some(job) = self.ctx.jobs.get(&id) else { continue };
            if !job.adopting(attempt) {
                continue;
            }
            // Only tasks the job has (a bogus key would reserve slots for nothing); slot j runs subtask j of
            // every chain, so the TaskManager needs one slot per distinct subtask it reports.
            let tasks: Vec<TaskKey> = tasks.into_iter().filter(|key| job.has_task(key)).collect();
            let slots = tasks.iter().map(|key| key.subtask.0).collect::<std::collections::BTreeSet<_>>().len();
            let slots = u32::try_from(slots).unwrap_or(u32::MAX);
            // The slots are reserved now, under the registry's lock, so that no other job takes them first.
            if self.ctx.cluster.claim(&id, &task_manager, incarnation, slots).is_none() {
                job.spoil_adoption(
                    attempt,
                    format!("cannot reserve {slots} slots for its tasks on TaskManager {task_manager}"),
                );
                continue;
            }
            if job.offer(&task_manager, incarnation, attempt, execution_id, &tasks) {
                tracing::info!(job_id = %job_id, attempt, task_manager = %task_manager, tasks = tasks.len(),
                    "a TaskManager reported running tasks of an attempt being adopted");
                keep.push(JobAttempt { job_id, attempt });
            } else {
                self.ctx.cluster.release_on(&id, &task_manager);
            }
        }
        keep
    }

    /// Hands a checkpoint message of the current attempt to its job's actor; messages of ended jobs and
    /// other attempts are dropped (their checkpoint is gone with them). A message from another TaskManager
    /// than the one running the task is refused and counted.
    async fn forward_checkpoint_event(
        &self,
        task: Option<&TaskRef>,
        caller: Option<(TaskManagerId, u64)>,
        event: JobEvent,
    ) -> Result<Response<CheckpointReply>, Status> {
        let task = task.ok_or_else(|| Status::invalid_argument("a checkpoint message needs a task"))?;
        let job_id = JobId(task.job_id.clone());
        match self.ctx.jobs.get(&job_id) {
            Some(job) if job.is_current_attempt(task.attempt) => {
                if !runs_task(&job, task, caller.as_ref()) {
                    self.ctx.metrics.requests_refused.with_label_values(&["rpc", "not_the_tasks_task_manager"]).inc();
                    tracing::info!(job_id = %job_id, chain = task.chain, subtask = task.subtask,
                        "checkpoint message refused: not from the TaskManager that runs the task");
                    return Err(Status::permission_denied("not from the TaskManager that runs this task"));
                }
                if let Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) =
                    job.inbox.send_timeout(event, REPORT_FORWARD_TIMEOUT).await
                {
                    return Err(Status::unavailable(format!("job {job_id} is busy; the checkpoint will time out")));
                }
            }
            _ => {
                tracing::debug!(job_id = %job_id, attempt = task.attempt, "dropping a checkpoint message of an ended job or attempt")
            }
        }
        Ok(Response::new(CheckpointReply {}))
    }
}

#[cfg(test)]
mod tests {
    //! The service's refusals, called directly (no network): malformed messages are errors, messages of
    //! another attempt or an unknown job are refused and counted, and neither reaches a job's actor.
    use std::sync::Arc;

    use sluice_common::proto::{TaskState, TaskStateReport};

    use super::*;
    use crate::deployment::TaskEntry;
    use crate::task_manager_client::GrpcTaskManagerClient;

    /// A request carrying `session`, as a TaskManager sends it.
    fn with_session<T>(message: T, session: &str) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = session.parse() {
            request.metadata_mut().insert(sluice_common::cluster_auth::SESSION_METADATA, value);
        }
        request
    }

    /// Registers TaskManager `id` and returns its session.
    fn register(rpc: &JobManagerRpc, id: &str) -> String {
        let request = RegisterTaskManagerRequest {
            task_manager_id: id.into(),
            rpc_address: format!("127.0.0.1:1{}", id.len()),
            data_address: "127.0.0.1:2".into(),
            metrics_address: "127.0.0.1:3".into(),
            slots: 1,
            session: sluice_common::secret::generate(),
            running: Vec::new(),
        };
        rpc.ctx.cluster.register(&request).unwrap_or_else(|e| panic!("{e}")).session
    }

    fn report(job_id: &str, attempt: u32, state: TaskState) -> TaskStateReport {
        TaskStateReport {
            task: Some(TaskRef { job_id: job_id.into(), attempt, chain: 0, subtask: 0 }),
            state: state.into(),
            ..Default::default()
        }
    }

    /// A service with one job at attempt 2 whose task (chain 0, subtask 0) runs on TaskManager `tm`; returns
    /// the job's inbox to check what reached it, and `tm`'s session.
    async fn service() -> (tempfile::TempDir, JobManagerRpc, tokio::sync::mpsc::Receiver<JobEvent>, String) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ctx = Context::for_tests(dir.path(), Arc::new(GrpcTaskManagerClient::default())).await;
        let job = crate::test_support::one_task_job("{}");
        let (shared, inbox) = JobShared::new(JobId("j".into()), Arc::new(job), None);
        shared.live().attempt = sluice_common::ids::Attempt(2);
        let key = TaskKey::of(&TaskRef { job_id: "j".into(), attempt: 2, chain: 0, subtask: 0 });
        ctx.jobs.insert(shared.clone());
        let rpc = JobManagerRpc::new(ctx);
        let session = register(&rpc, "tm");
        let incarnation = rpc.ctx.cluster.session_owner(&session).map(|(_, i)| i).unwrap_or_default();
        let entry = TaskEntry::deployed(TaskManagerId("tm".into()), incarnation);
        shared.live().tasks.insert(key, entry);
        (dir, rpc, inbox, session)
    }

    fn refused(rpc: &JobManagerRpc) -> u64 {
        rpc.ctx.metrics.task_reports_refused.get()
    }

    #[tokio::test]
    async fn a_report_without_a_state_is_refused_as_malformed_and_counted() {
        let (_dir, rpc, mut inbox, session) = service().await;
        let status = rpc.report_task_state(with_session(report("j", 2, TaskState::Unspecified), &session)).await.err();
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
        let mut missing_task = report("j", 2, TaskState::TaskRunning);
        missing_task.task = None;
        let status = rpc.report_task_state(with_session(missing_task, &session)).await.err();
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
        assert_eq!(refused(&rpc), 1, "the report without a state is counted");
        assert!(inbox.try_recv().is_err(), "nothing reached the job");
    }

    #[tokio::test]
    async fn reports_of_another_attempt_or_an_unknown_job_are_refused_and_only_the_current_one_is_forwarded() {
        let (_dir, rpc, mut inbox, session) = service().await;
        for (job, attempt) in [("j", 1), ("j", 3), ("other", 2)] {
            let answer =
                rpc.report_task_state(with_session(report(job, attempt, TaskState::TaskFailed), &session)).await;
            assert_eq!(answer.ok().map(|a| a.into_inner().accepted), Some(false), "{job} attempt {attempt}");
        }
        assert_eq!(refused(&rpc), 3);
        assert!(inbox.try_recv().is_err(), "no refused report reached the job");
        let answer = rpc.report_task_state(with_session(report("j", 2, TaskState::TaskRunning), &session)).await;
        assert_eq!(answer.ok().map(|a| a.into_inner().accepted), Some(true));
        assert!(matches!(inbox.try_recv(), Ok(JobEvent::TaskReport(_))), "the current attempt's report is forwarded");
    }

    #[tokio::test]
    async fn checkpoint_messages_of_another_attempt_are_dropped_and_malformed_ones_refused() {
        let (_dir, rpc, mut inbox, session) = service().await;
        let stale = AcknowledgeCheckpointRequest {
            task: Some(TaskRef { job_id: "j".into(), attempt: 1, chain: 0, subtask: 0 }),
            checkpoint_id: 1,
            ..Default::default()
        };
        assert!(rpc.acknowledge_checkpoint(with_session(stale, &session)).await.is_ok());
        assert!(inbox.try_recv().is_err(), "a stale acknowledgement does not reach the job");
        let status = rpc.decline_checkpoint(Request::new(DeclineCheckpointRequest::default())).await.err();
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    }

    #[tokio::test]
    async fn a_heartbeat_with_more_tasks_than_the_limit_is_refused() {
        let (_dir, rpc, _inbox, _session) = service().await;
        let request = HeartbeatRequest {
            task_manager_id: "tm".into(),
            tasks: vec![TaskMetrics::default(); HEARTBEAT_TASKS_MAX + 1],
            ..Default::default()
        };
        let status = rpc.heartbeat(Request::new(request)).await.err();
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    }

    fn current_ack() -> AcknowledgeCheckpointRequest {
        AcknowledgeCheckpointRequest {
            task: Some(TaskRef { job_id: "j".into(), attempt: 2, chain: 0, subtask: 0 }),
            checkpoint_id: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn reports_and_acks_from_another_task_manager_or_an_old_incarnation_are_refused_and_counted() {
        let (_dir, rpc, mut inbox, session) = service().await;
        let other = register(&rpc, "tm-other");
        let forged = || report("j", 2, TaskState::TaskFailed);
        for (who, request) in [
            ("no session", Request::new(forged())),
            ("another TaskManager's session", with_session(forged(), &other)),
            ("a made-up session", with_session(forged(), &"0".repeat(64))),
        ] {
            let answer = rpc.report_task_state(request).await;
            assert_eq!(answer.ok().map(|a| a.into_inner().accepted), Some(false), "{who}");
        }
        let status = rpc.acknowledge_checkpoint(with_session(current_ack(), &other)).await.err();
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::PermissionDenied));
        assert!(inbox.try_recv().is_err(), "no forged message reached the job");
        let forged_count = rpc.ctx.metrics.requests_refused.with_label_values(&["rpc", "not_the_tasks_task_manager"]);
        assert_eq!(forged_count.get(), 4);
        // The incarnation running the task is heard.
        assert!(rpc.acknowledge_checkpoint(with_session(current_ack(), &session)).await.is_ok());
        assert!(matches!(inbox.try_recv(), Ok(JobEvent::CheckpointAck(_))), "the running incarnation's ack");

        // The same TaskManager registered again: its old session is gone with its old incarnation, and the new
        // incarnation may not speak for tasks deployed to the old one.
        let renewed = register(&rpc, "tm");
        let answer = rpc.report_task_state(with_session(forged(), &session)).await;
        assert_eq!(answer.ok().map(|a| a.into_inner().accepted), Some(false), "the old incarnation's session");
        let status = rpc.acknowledge_checkpoint(with_session(current_ack(), &renewed)).await.err();
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::PermissionDenied), "a task of the old incarnation");
        assert!(inbox.try_recv().is_err(), "nothing of another incarnation reached the job");
    }

    #[tokio::test]
    async fn a_heartbeat_counts_only_with_the_task_managers_own_session() {
        let (_dir, rpc, _inbox, session) = service().await;
        let other = register(&rpc, "tm-other");
        let heartbeat = || HeartbeatRequest { task_manager_id: "tm".into(), ..Default::default() };
        let registered =
            |answer: Result<Response<HeartbeatResponse>, Status>| answer.ok().map(|a| a.into_inner().registered);
        assert_eq!(registered(rpc.heartbeat(with_session(heartbeat(), &other)).await), Some(false));
        assert_eq!(registered(rpc.heartbeat(Request::new(heartbeat())).await), Some(false));
        assert_eq!(registered(rpc.heartbeat(with_session(heartbeat(), &session)).await), Some(true));
        assert_eq!(rpc.ctx.metrics.requests_refused.with_label_values(&["rpc", "session"]).get(), 2);
    }
}
