//! The job actor's phases against a fake TaskManager client, a real SQLite store and a real cluster registry.
//!
//! Goal: each phase takes the edge the lifecycle table and the job's settings call for, and leaves the store
//! saying so. Method: run one actor to its end, bounded by a deadline, feeding it what TaskManagers and users
//! would (a registration, task reports, a cancel request); the fake client counts deployments and cancels.
//! Time is real but short: the job's own timeouts are set to tens of milliseconds.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_common::lifecycle::JobStatus;
use sluice_common::proto::{
    CancelTasksRequest, DeployTasksRequest, FailureKind, NotifyCheckpointCompleteRequest, RegisterTaskManagerRequest,
    TaskRef, TaskState, TaskStateReport, TriggerCheckpointRequest,
};

use super::actor::JobActor;
use super::{JobEvent, JobShared};
use crate::task_manager_client::{TaskManagerCallError, TaskManagerClient};
use crate::test_support::{insert_job, one_task_job, JOB_ID};
use crate::Context;

/// How long a test lets one actor run before it calls the test failed.
const ACTOR_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct CountingTaskManagers {
    deploys: AtomicU32,
    cancels: AtomicU32,
    /// The TaskManager dies during the first cancel: that call breaks mid-way (as when it is killed while it
    /// accepts the connection), and every later one finds nothing listening.
    dies_in_a_cancel: bool,
}

#[tonic::async_trait]
impl TaskManagerClient for CountingTaskManagers {
    async fn deploy_tasks(&self, _: &str, _: DeployTasksRequest) -> Result<(), TaskManagerCallError> {
        self.deploys.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn cancel_tasks(&self, address: &str, _: CancelTasksRequest) -> Result<(), TaskManagerCallError> {
        let earlier = self.cancels.fetch_add(1, Ordering::SeqCst);
        if !self.dies_in_a_cancel {
            return Ok(());
        }
        if earlier == 0 {
            let message = "transport error".to_string();
            return Err(TaskManagerCallError::Status {
                address: address.to_string(),
                code: tonic::Code::Unknown,
                message,
            });
        }
        // A real refused connection: nothing listens on port 1.
        match tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect().await {
            Ok(_) => Ok(()),
            Err(source) => Err(TaskManagerCallError::Connect { address: address.to_string(), source }),
        }
    }

    async fn trigger_checkpoint(&self, _: &str, _: TriggerCheckpointRequest) -> Result<u32, TaskManagerCallError> {
        Ok(1)
    }

    async fn notify_checkpoint_complete(
        &self,
        _: &str,
        _: NotifyCheckpointCompleteRequest,
    ) -> Result<(), TaskManagerCallError> {
        Ok(())
    }
}

struct Started {
    _dir: tempfile::TempDir,
    ctx: Arc<Context>,
    shared: Arc<JobShared>,
    client: Arc<CountingTaskManagers>,
    actor: tokio::task::JoinHandle<()>,
}

async fn start(config: &str) -> Started {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let client = Arc::new(CountingTaskManagers::default());
    let ctx = Context::for_tests(dir.path(), client.clone()).await;
    let job = one_task_job(config);
    let job_id = insert_job(&ctx.store).await;
    let (shared, inbox) = JobShared::new(job_id, Arc::new(job), None);
    ctx.jobs.insert(shared.clone());
    let actor = tokio::spawn(JobActor::new(ctx.clone(), shared.clone(), inbox).run());
    Started { _dir: dir, ctx, shared, client, actor }
}

fn register_task_manager(ctx: &Context) {
    let request = RegisterTaskManagerRequest {
        task_manager_id: "tm-1".into(),
        rpc_address: "127.0.0.1:1".into(),
        data_address: "127.0.0.1:2".into(),
        metrics_address: "127.0.0.1:3".into(),
        slots: 1,
        session: "the-session-of-tm-1-for-tests".into(),
        running: Vec::new(),
    };
    ctx.cluster.register(&request).unwrap_or_else(|e| panic!("{e}"));
}

/// Polls the live view until the job is in `status`, for at most [`ACTOR_DEADLINE`].
async fn wait_for(shared: &JobShared, status: JobStatus) {
    let deadline = tokio::time::Instant::now() + ACTOR_DEADLINE;
    while shared.live().status != status {
        assert!(tokio::time::Instant::now() < deadline, "the job did not reach {status}: {:?}", shared.live().status);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A report that the job's one task (attempt 1) failed with `error`, of `kind`.
/// Starts a job with `config`, lets it run on one TaskManager, then has its task report a failure.
async fn running_then_failed(config: &str, error: &str, kind: FailureKind) -> Started {
    let started = start(config).await;
    register_task_manager(&started.ctx);
    wait_for(&started.shared, JobStatus::Running).await;
    let failed = task_failed(error, kind);
    started.shared.inbox.send(JobEvent::TaskReport(failed)).await.unwrap_or_else(|e| panic!("{e}"));
    started
}

fn task_failed(error: &str, kind: FailureKind) -> TaskStateReport {
    TaskStateReport {
        task: Some(TaskRef { job_id: JOB_ID.into(), attempt: 1, chain: 0, subtask: 0 }),
        state: TaskState::TaskFailed.into(),
        error: error.into(),
        failure_kind: kind.into(),
        ..Default::default()
    }
}

async fn ended(started: Started) -> (JobStatus, Option<String>, Arc<CountingTaskManagers>) {
    tokio::time::timeout(ACTOR_DEADLINE, started.actor)
        .await
        .unwrap_or_else(|_| panic!("the actor did not end within {ACTOR_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("the actor panicked: {e}"));
    let record = started.ctx.store.job(&started.shared.job_id).await.ok().flatten();
    let record = record.unwrap_or_else(|| panic!("the job's record is gone"));
    let status = record.status.unwrap_or_else(|e| panic!("{e}"));
    (status, record.failure_cause, started.client)
}

#[tokio::test]
async fn a_job_without_slots_fails_when_its_slot_wait_times_out() {
    let started = start(r#"{"slot_wait_timeout_ms": 50}"#).await;
    assert_failed_for_want_of_slots(ended(started).await, "could not get 1 slots");
}

/// The job ended FAILED, its cause naming `cause`, with nothing deployed.
fn assert_failed_for_want_of_slots(ended: (JobStatus, Option<String>, Arc<CountingTaskManagers>), cause: &str) {
    let (status, found, client) = ended;
    assert_eq!(status, JobStatus::Failed);
    assert!(found.as_deref().is_some_and(|c| c.contains(cause)), "{found:?}");
    assert_eq!(client.deploys.load(Ordering::SeqCst), 0, "nothing was deployed");
}

#[tokio::test]
async fn a_cancel_while_restarting_ends_the_job_canceled_without_a_second_deployment() {
    let config = r#"{"restart_strategy": {"strategy": "FIXED_DELAY", "delay_ms": 60000, "attempts": 3}}"#;
    let started = running_then_failed(config, "boom", FailureKind::Unspecified).await;
    wait_for(&started.shared, JobStatus::Restarting).await;
    assert!(started.ctx.store.request_cancel(&started.shared.job_id).await.unwrap_or(false));
    started.shared.desired_changed.notify_one();
    let (status, cause, client) = ended(started).await;
    assert_eq!(status, JobStatus::Canceled);
    assert!(cause.as_deref().is_some_and(|c| c.contains("failed: boom")), "the failure is kept: {cause:?}");
    assert_eq!(client.deploys.load(Ordering::SeqCst), 1, "the restart's delay was cut short by the cancel");
}

#[tokio::test]
async fn a_task_report_that_would_move_a_task_back_is_ignored() {
    let started = start("{}").await;
    register_task_manager(&started.ctx);
    wait_for(&started.shared, JobStatus::Running).await;
    let report = |state: TaskState| TaskStateReport {
        task: Some(TaskRef { job_id: JOB_ID.into(), attempt: 1, chain: 0, subtask: 0 }),
        state: state.into(),
        ..Default::default()
    };
    let send = |state| {
        let inbox = started.shared.inbox.clone();
        async move { inbox.send(JobEvent::TaskReport(report(state))).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    send(TaskState::TaskRunning).await;
    send(TaskState::Deploying).await;
    // The actor applies what it takes from its inbox before it waits again: once the inbox is empty, both
    // reports were applied.
    let inbox = &started.shared.inbox;
    let deadline = tokio::time::Instant::now() + ACTOR_DEADLINE;
    while inbox.capacity() < inbox.max_capacity() {
        assert!(tokio::time::Instant::now() < deadline, "the actor did not take its reports");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let state = started.shared.live().tasks.values().next().map(|t| t.state);
    assert_eq!(state, Some(TaskState::TaskRunning), "DEPLOYING after RUNNING moved nothing");
    send(TaskState::TaskFinished).await;
    send(TaskState::TaskRunning).await;
    let (status, _, client) = ended(started).await;
    assert_eq!(status, JobStatus::Finished, "RUNNING after FINISHED moved nothing");
    assert_eq!(client.deploys.load(Ordering::SeqCst), 1);
}

/// A cancel that breaks other than by a refused connection is sent once more; a TaskManager that then refuses
/// the connection is lost at once, and the job goes on to its restart without waiting for the heartbeat timeout
/// (in the chaos test, a TaskManager killed as it accepted the cancel cost a 10 s recovery).
#[tokio::test]
async fn a_cancel_that_breaks_mid_call_is_retried_and_a_refusing_task_manager_is_lost_at_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let client = Arc::new(CountingTaskManagers { dies_in_a_cancel: true, ..Default::default() });
    let ctx = Context::for_tests(dir.path(), client.clone()).await;
    let config = r#"{"restart_strategy": {"strategy": "FIXED_DELAY", "delay_ms": 60000, "attempts": 3}}"#;
    let job_id = insert_job(&ctx.store).await;
    let (shared, inbox) = JobShared::new(job_id, Arc::new(one_task_job(config)), None);
    ctx.jobs.insert(shared.clone());
    let actor = tokio::spawn(JobActor::new(ctx.clone(), shared.clone(), inbox).run());
    register_task_manager(&ctx);
    wait_for(&shared, JobStatus::Running).await;
    let failed = task_failed("a peer's connection was lost", FailureKind::Unspecified);
    shared.inbox.send(JobEvent::TaskReport(failed)).await.unwrap_or_else(|e| panic!("{e}"));
    // The heartbeat timeout of the test context is seconds; RESTARTING well before it means the refusal decided.
    let started = tokio::time::Instant::now();
    wait_for(&shared, JobStatus::Restarting).await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(client.cancels.load(Ordering::SeqCst), 2, "the broken cancel was sent once more");
    let views = ctx.cluster.snapshot();
    assert!(views.iter().all(|tm| tm.slots_total == 0), "the TaskManager is lost: {views:?}");
    actor.abort();
}

/// A job accepted before `slot_wait_timeout_ms` had a bound is taken over by a restarted JobManager with its wait
/// clamped to the bound, not closed FAILED because its stored graph no longer validates.
#[tokio::test]
async fn a_job_stored_with_a_slot_wait_beyond_todays_bound_is_taken_over_with_it_clamped() {
    use sluice_common::job::bounds::SLOT_WAIT_TIMEOUT_MS_MAX;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::for_tests(dir.path(), Arc::new(CountingTaskManagers::default())).await;
    let mut graph = one_task_job("{}").graph;
    if let Some(config) = graph.config.as_mut() {
        config.slot_wait_timeout_ms = Some(SLOT_WAIT_TIMEOUT_MS_MAX * 10);
    }
    let job = crate::store::NewJob {
        job_id: sluice_common::ids::JobId("old".into()),
        name: "old".into(),
        graph_json: serde_json::to_string(&graph).unwrap_or_else(|e| panic!("{e}")),
        chains_json: "[]".into(),
        start_time_ms: 0,
        submitted_restore_json: None,
    };
    ctx.store.insert_job(&job).await.unwrap_or_else(|e| panic!("{e}"));
    let (resumed, closed, _) = super::recovery::resume_unfinished_jobs(&ctx).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(closed, Vec::new(), "nothing is closed");
    assert_eq!(resumed, vec![job.job_id.clone()]);
    let taken = ctx.jobs.get(&job.job_id).unwrap_or_else(|| panic!("the job runs"));
    assert_eq!(taken.job.slot_wait_timeout(), Duration::from_millis(SLOT_WAIT_TIMEOUT_MS_MAX));
    ctx.leadership.term_stop().cancel();
}

/// The phases' own timing on a paused clock: the bounds are the real defaults (a minute), asserted to the
/// millisecond on both sides, and the test takes milliseconds. (The tests above run on real time with the
/// job's timeouts shortened.)
mod paused_clock {
    use super::*;
    use crate::test_support::ManualClock;

    /// A millisecond: how close to a bound the clock is moved on either side of it.
    const TICK: Duration = Duration::from_millis(1);

    fn reason(shared: &JobShared) -> String {
        shared.live().reason.clone().unwrap_or_default()
    }

    async fn stored_status(ctx: &Context) -> Option<JobStatus> {
        let record = ctx.store.job(&sluice_common::ids::JobId(JOB_ID.into())).await.ok().flatten()?;
        record.status.ok()
    }

    /// Goal: a job that cannot get its slots fails at its slot wait timeout (the default, 60 s), not before.
    /// Method: no TaskManager; the clock is moved to a millisecond short of the bound, then past it.
    #[tokio::test]
    async fn the_slot_wait_ends_at_its_default_timeout_and_not_a_millisecond_before() {
        let clock = ManualClock::start();
        let started = start("{}").await;
        clock.until("the job waits for slots", || reason(&started.shared).contains("slot")).await;
        let timeout = started.shared.job.slot_wait_timeout();
        assert_eq!(timeout, Duration::from_secs(60), "the default");
        tokio::time::advance(timeout - TICK).await;
        assert_eq!(stored_status(&started.ctx).await, Some(JobStatus::Created), "still waiting");
        assert!(!started.actor.is_finished());
        tokio::time::advance(2 * TICK).await;
        clock.until("the actor to end", || started.actor.is_finished()).await;
        assert_failed_for_want_of_slots(ended(started).await, "could not get 1 slots within 60 s");
    }

    /// Goal: a restart waits the fixed delay its strategy names, and no longer. Method: a task fails; the
    /// clock is moved to a millisecond short of the delay (no second deployment), then past it (the second
    /// attempt is deployed and runs).
    #[tokio::test]
    async fn a_restart_waits_its_fixed_delay_and_not_a_millisecond_longer() {
        let clock = ManualClock::start();
        let config = r#"{"restart_strategy": {"strategy": "FIXED_DELAY", "delay_ms": 45000, "attempts": 3}}"#;
        let started = start(config).await;
        register_task_manager(&started.ctx);
        let shared = started.shared.clone();
        clock.until("the first attempt runs", || shared.live().status == JobStatus::Running).await;
        let failed = task_failed("boom", FailureKind::Io);
        shared.inbox.send(JobEvent::TaskReport(failed)).await.unwrap_or_else(|e| panic!("{e}"));
        clock.until("the restart's delay begins", || reason(&shared).contains("restarting in 45000 ms")).await;
        // The actor may still be reading the desired state as the clock moves; a read that times out counts as
        // no cancel and the actor waits for the same instant, so the outcome is the same either way.
        tokio::time::advance(Duration::from_millis(45_000) - TICK).await;
        assert_eq!(started.client.deploys.load(Ordering::SeqCst), 1, "no second deployment before the delay");
        assert_eq!(shared.live().status, JobStatus::Restarting);
        tokio::time::advance(2 * TICK).await;
        let client = started.client.clone();
        clock.until("the second deployment", || client.deploys.load(Ordering::SeqCst) == 2).await;
        clock.until("the second attempt runs", || shared.live().status == JobStatus::Running).await;
        assert_eq!(shared.live().restarts, 1);
        started.actor.abort();
    }
}

/// Goal: a failure of a kind no restart can get past (CONFIGURATION) fails the job at once, whatever the
/// strategy allows, and the exception history says which kind it was. Method: a strategy with restarts
/// left; a task reports a configuration failure.
#[tokio::test]
async fn a_configuration_failure_is_not_restarted_whatever_the_strategy_allows() {
    let config = r#"{"restart_strategy": {"strategy": "FIXED_DELAY", "delay_ms": 10, "attempts": 100}}"#;
    let message = "vertex 'src': this TaskManager has no native operator 'x'";
    let started = running_then_failed(config, message, FailureKind::Configuration).await;
    // The store's file lives as long as `started`: read the exception history before `ended` drops it.
    let deadline = tokio::time::Instant::now() + ACTOR_DEADLINE;
    while !started.actor.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "the actor did not end");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let exceptions = started.ctx.store.exceptions(&started.shared.job_id).await.unwrap_or_else(|e| panic!("{e}"));
    let (status, cause, client) = ended(started).await;
    assert_eq!(status, JobStatus::Failed);
    let cause = cause.unwrap_or_default();
    assert!(
        cause.contains("no native operator 'x'") && cause.contains("not restarted: a CONFIGURATION error"),
        "{cause}"
    );
    assert_eq!(client.deploys.load(Ordering::SeqCst), 1, "no second deployment");
    let kinds: Vec<_> = exceptions.iter().map(|e| (e.failure_kind, e.restarted)).collect();
    assert_eq!(kinds, vec![(Some(sluice_common::lifecycle::FailureKind::Configuration), false)]);
}
