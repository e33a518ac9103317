//! Cluster membership: without the cluster secret a process can neither join nor command the cluster.
//!
//! Goal: a gRPC caller without the secret is refused on every JobManager and TaskManager call
//! (Unauthenticated) and counted; a caller with the secret but without a TaskManager's session (another
//! member) cannot command that TaskManager (PermissionDenied); a TaskManager given a wrong secret never
//! registers; one given none refuses to start and says what to pass. A TaskManager restarted with the right
//! secret replaces its old incarnation and runs jobs (the recovery and chaos suites rely on that too).
//!
//! Method: a real cluster (the JobManager generates the secret; the harness hands it to its TaskManagers),
//! raw tonic clients as the stranger, and stranger TaskManager processes started by the test.
use std::time::Duration;

use sluice_common::proto::job_manager_service_client::JobManagerServiceClient;
use sluice_common::proto::task_manager_service_client::TaskManagerServiceClient;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, CancelTasksRequest, DeployTasksRequest, HeartbeatRequest,
    NotifyCheckpointCompleteRequest, RegisterTaskManagerRequest, TaskStateReport, TriggerCheckpointRequest,
};
use sluice_tests::binaries;
use sluice_tests::process::{Launch, Process};
use sluice_tests::prometheus::sum;
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(60);

fn refused(metrics: &str, transport: &str, reason: &str) -> f64 {
    let labels = [("transport", transport), ("reason", reason)];
    sum(metrics, "sluice_requests_refused_total", &labels).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `message` as a request with `secret` (if any) as the cluster secret.
fn request<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = secret.and_then(|s| format!("Bearer {s}").parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Option<tonic::Code> {
    result.err().map(|status| status.code())
}

#[test]
fn without_the_secret_no_call_is_answered_and_without_a_session_no_task_manager_obeys() {
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    let secret = std::fs::read_to_string(cluster.dir().join("jobmanager").join("cluster.secret"))
        .unwrap_or_else(|e| panic!("the JobManager generated no cluster secret: {e}"));
    let secret = secret.trim().to_string();
    let (jm, tm) =
        (format!("http://{}", cluster.rpc_address()), format!("http://{}", cluster.task_manager_rpc_address(0)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let mut jm = JobManagerServiceClient::connect(jm).await.unwrap_or_else(|e| panic!("{e}"));
        let register = RegisterTaskManagerRequest {
            task_manager_id: "tm-0".into(),
            rpc_address: "127.0.0.1:1".into(),
            data_address: "127.0.0.1:2".into(),
            metrics_address: "127.0.0.1:3".into(),
            slots: 8,
            session: "a-session-the-stranger-chose-0123456789".into(),
            running: Vec::new(),
        };
        let unauthenticated = Some(tonic::Code::Unauthenticated);
        for secret in [None, Some("a-wrong-secret-of-enough-length-0123456789")] {
            assert_eq!(code(jm.register_task_manager(request(register.clone(), secret)).await), unauthenticated);
            let heartbeat = HeartbeatRequest { task_manager_id: "tm-0".into(), ..Default::default() };
            assert_eq!(code(jm.heartbeat(request(heartbeat, secret)).await), unauthenticated);
            assert_eq!(code(jm.report_task_state(request(TaskStateReport::default(), secret)).await), unauthenticated);
            let ack = AcknowledgeCheckpointRequest::default();
            assert_eq!(code(jm.acknowledge_checkpoint(request(ack, secret)).await), unauthenticated);
        }

        let mut tm = TaskManagerServiceClient::connect(tm).await.unwrap_or_else(|e| panic!("{e}"));
        // Without the secret: unauthenticated. With it but without this TaskManager's session (what another
        // member has): permission denied. Either way nothing runs.
        for (secret, expected) in
            [(None, tonic::Code::Unauthenticated), (Some(secret.as_str()), tonic::Code::PermissionDenied)]
        {
            let deploy = DeployTasksRequest::default();
            assert_eq!(code(tm.deploy_tasks(request(deploy, secret)).await), Some(expected));
            let cancel = CancelTasksRequest { job_id: "j".into(), attempt: 1 };
            assert_eq!(code(tm.cancel_tasks(request(cancel, secret)).await), Some(expected));
            let trigger = TriggerCheckpointRequest::default();
            assert_eq!(code(tm.trigger_checkpoint(request(trigger, secret)).await), Some(expected));
            let notify = NotifyCheckpointCompleteRequest { checkpoint_id: u64::MAX, ..Default::default() };
            assert_eq!(code(tm.notify_checkpoint_complete(request(notify, secret)).await), Some(expected));
        }
    });
    let metrics = cluster.job_manager_metrics();
    assert_eq!(refused(&metrics, "rpc", "no_secret"), 4.0, "{metrics}");
    assert_eq!(refused(&metrics, "rpc", "wrong_secret"), 4.0, "{metrics}");
    let tm_metrics = cluster.task_manager_metrics(0);
    assert_eq!(refused(&tm_metrics, "rpc", "no_secret"), 4.0, "{tm_metrics}");
    assert_eq!(refused(&tm_metrics, "rpc", "session"), 4.0, "{tm_metrics}");
    let listed = cluster.get("/taskmanagers");
    assert_eq!(listed["taskmanagers"].as_array().map(Vec::len), Some(1), "the stranger did not join: {listed}");

    // The real members still work together: a job runs to the end.
    let job = serde_json::json!({
        "name": "members", "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 1, "rows": 1000, "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}],
        "edges": [{"from": "gen", "to": "sink"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);
}

/// Starts a TaskManager process registering with `cluster`, with `env`.
fn stranger(cluster: &Cluster, name: &str, env: &[(String, String)]) -> Process {
    let program = binaries::binary(binaries::TASK_MANAGER).unwrap_or_else(|e| panic!("{e:#}"));
    let data_dir = cluster.dir().join(name).display().to_string();
    let args = ["--jobmanager", cluster.rpc_address(), "--slots", "1", "--id", name, "--data-dir", &data_dir];
    let launch = Launch {
        name,
        program: &program,
        args: args.iter().map(ToString::to_string).collect(),
        env,
        cwd: cluster.dir(),
        log_dir: cluster.dir(),
    };
    Process::spawn(launch).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_task_manager_with_a_wrong_secret_never_joins_and_one_without_refuses_to_start() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    let wrong = cluster.dir().join("wrong.secret");
    std::fs::write(&wrong, "not-the-cluster-secret-0123456789abcdef\n").unwrap_or_else(|e| panic!("{e}"));
    let env = [("CLUSTER_SECRET_FILE".to_string(), wrong.display().to_string()), ("RUST_LOG".into(), "info".into())];
    let mut impostor = stranger(&cluster, "tm-impostor", &env);
    poll_until("the impostor's registration to be refused", TIMEOUT, || {
        impostor.ensure_running()?;
        let metrics = cluster.job_manager_metrics();
        let count = refused(&metrics, "rpc", "wrong_secret");
        Ok(if count >= 1.0 { Progress::Ready(()) } else { Progress::Pending(format!("{count} refused")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let listed = cluster.get("/taskmanagers");
    let ids: Vec<&str> =
        listed["taskmanagers"].as_array().into_iter().flatten().filter_map(|tm| tm["id"].as_str()).collect();
    assert_eq!(ids, vec!["tm-0"], "the impostor is not a member");

    let mut unconfigured = stranger(&cluster, "tm-unconfigured", &[]);
    let status = poll_until("the TaskManager without a secret to exit", TIMEOUT, || {
        Ok(unconfigured.exit_status()?.map_or(Progress::Pending("running".into()), Progress::Ready))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!status.success());
    let log = std::fs::read_to_string(unconfigured.log_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(log.contains("--cluster-secret-file"), "{log}");
}
