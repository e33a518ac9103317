//! The coordinator against a fake TaskManager client, a real SQLite store and a local checkpoint directory.
//!
//! Goal: the coordinator's decisions (complete, expire, ignore a stale acknowledgement, fail over at once
//! when a source's TaskManager is gone, retain and discard) and what they leave behind in the store and in
//! storage. Method: drive it as the job actor does, with one task on one TaskManager; the fake client records
//! every call. Time is real but short: a test waits for the coordinator's own deadline, never for a guess.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use sluice_common::ids::{ChainIndex, JobId, SubtaskIndex, TaskManagerId};
use sluice_common::job::checkpoint::CheckpointPolicy;
use sluice_common::lifecycle::CheckpointStatus;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, CancelTasksRequest, CheckpointConfig, DeployTasksRequest,
    NotifyCheckpointCompleteRequest, TaskRef, TriggerCheckpointRequest,
};
use sluice_common::storage::Storage;

use super::{CheckpointServices, Coordinator, Verdict};
use crate::deployment::{Deployment, TaskKey};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::task_manager_client::{TaskManagerCallError, TaskManagerClient};
use crate::test_support::{insert_job, one_task_job, JOB_ID};

/// Where a TaskManager that is gone "listens": a port nothing listens on (bound, then closed).
async fn closed_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("address: {e}")).to_string();
    drop(listener);
    address
}

/// Records calls; a trigger to `gone` fails as a connection refused.
#[derive(Default)]
struct FakeTaskManagers {
    triggers: Mutex<Vec<TriggerCheckpointRequest>>,
    notifications: Mutex<Vec<NotifyCheckpointCompleteRequest>>,
    gone: Option<String>,
}

#[tonic::async_trait]
impl TaskManagerClient for FakeTaskManagers {
    async fn deploy_tasks(&self, _: &str, _: DeployTasksRequest) -> Result<(), TaskManagerCallError> {
        Ok(())
    }

    async fn cancel_tasks(&self, _: &str, _: CancelTasksRequest) -> Result<(), TaskManagerCallError> {
        Ok(())
    }

    async fn trigger_checkpoint(
        &self,
        address: &str,
        request: TriggerCheckpointRequest,
    ) -> Result<u32, TaskManagerCallError> {
        if self.gone.as_deref() == Some(address) {
            let uri = format!("http://{address}");
            let refused = tonic::transport::Endpoint::from_shared(uri)
                .unwrap_or_else(|e| panic!("uri: {e}"))
                .connect()
                .await
                .err()
                .unwrap_or_else(|| panic!("{address} accepted a connection"));
            return Err(TaskManagerCallError::Connect { address: address.to_string(), source: refused });
        }
        self.triggers.lock().unwrap_or_else(|p| p.into_inner()).push(request);
        Ok(1)
    }

    async fn notify_checkpoint_complete(
        &self,
        _: &str,
        request: NotifyCheckpointCompleteRequest,
    ) -> Result<(), TaskManagerCallError> {
        self.notifications.lock().unwrap_or_else(|p| p.into_inner()).push(request);
        Ok(())
    }
}

const TASK_MANAGER: &str = "127.0.0.1:1";

/// A coordinator of a one-task job with the given checkpoint policy, and what the test inspects.
struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    job_id: JobId,
    job_dir: Storage,
    client: Arc<FakeTaskManagers>,
    coordinator: Coordinator,
}

async fn harness(config: CheckpointConfig, client: FakeTaskManagers) -> Harness {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let store = Store::open(&format!("sqlite://{}", dir.path().join("sluice.db").display()))
        .await
        .unwrap_or_else(|e| panic!("store: {e}"));
    let job = one_task_job("{}");
    let job_id = insert_job(&store).await;
    let root = dir.path().join("checkpoints").join(&job_id.0);
    let job_dir = Storage::open(&root.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let client = Arc::new(client);
    let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    let services =
        CheckpointServices { store: store.clone(), metrics: metrics.checkpoint_metrics(), client: client.clone() };
    let coordinator =
        Coordinator::new(job_id.clone(), Arc::new(job), CheckpointPolicy::of(&config), job_dir.clone(), 0, services);
    Harness { _dir: dir, store, job_id, job_dir, client, coordinator }
}

impl Harness {
    /// Returns once the janitor has done everything queued before: it works in order, so a marker
    /// directory queued for deletion now is gone only after all of it.
    async fn janitor_barrier(&self) {
        let marker = self._dir.path().join("janitor-marker");
        std::fs::create_dir_all(&marker).unwrap_or_else(|e| panic!("{e}"));
        let storage = Storage::open(&marker.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        self.coordinator.janitor.submit(super::retention::Cleanup::Delete(storage)).await;
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while marker.exists() {
            assert!(StdInstant::now() < deadline, "the janitor did not reach the marker within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn deployment(attempt: u32, source_task_manager: &str) -> Deployment {
    Deployment {
        attempt,
        tasks: vec![TaskKey { chain: ChainIndex(0), subtask: SubtaskIndex(0) }],
        finished: Vec::new(),
        source_task_managers: vec![(TaskManagerId("tm-0".into()), source_task_manager.to_string())],
        all_task_managers: vec![source_task_manager.to_string()],
    }
}

fn subtask(index: u32) -> TaskKey {
    TaskKey { chain: ChainIndex(0), subtask: SubtaskIndex(index) }
}

/// A deployment of subtasks 0..`running` running and the `finished` ones (with the newest checkpoint each
/// took part in) finished.
fn deployment_with(running: u32, finished: &[(u32, u64)]) -> Deployment {
    Deployment {
        tasks: (0..running).map(subtask).collect(),
        finished: finished.iter().map(|&(index, last)| (subtask(index), last)).collect(),
        ..deployment(1, TASK_MANAGER)
    }
}

fn ack_of(index: u32, checkpoint_id: u64) -> AcknowledgeCheckpointRequest {
    AcknowledgeCheckpointRequest {
        task: Some(TaskRef { job_id: JOB_ID.into(), attempt: 1, chain: 0, subtask: index }),
        checkpoint_id,
        ..Default::default()
    }
}

/// The `_metadata` of a completed checkpoint of the harness's job.
async fn metadata_of(h: &Harness, id: u64) -> super::metadata::CheckpointMetadata {
    let bytes = h.job_dir.child(&format!("chk-{id}")).get("_metadata").await.unwrap_or_else(|e| panic!("{e}"));
    super::metadata::parse_metadata(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn ack(attempt: u32, checkpoint_id: u64) -> AcknowledgeCheckpointRequest {
    AcknowledgeCheckpointRequest {
        task: Some(TaskRef { job_id: JOB_ID.into(), attempt, chain: 0, subtask: 0 }),
        checkpoint_id,
        ..Default::default()
    }
}

/// Lets the periodic trigger come due, then triggers: the coordinator's own deadline is what is waited for.
async fn trigger(h: &mut Harness, attempt: u32, source: &str) -> Verdict {
    if let Some(deadline) = h.coordinator.deadline() {
        tokio::time::sleep_until(deadline).await;
    }
    h.coordinator.on_deadline(Some(deployment(attempt, source))).await
}

async fn status_of(h: &Harness, id: u64) -> Option<CheckpointStatus> {
    h.store.checkpoint(&h.job_id, id).await.ok().flatten().map(|c| c.status)
}

/// Polls `check` until it holds, for at most five seconds (the janitor and the notification run apart).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = StdInstant::now() + Duration::from_secs(5);
    while !check() {
        assert!(StdInstant::now() < deadline, "{what} did not happen within 5 s");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn policy(interval_ms: u64, timeout_ms: u64, tolerable_failures: u32, retained: u32) -> CheckpointConfig {
    CheckpointConfig {
        interval_ms,
        timeout_ms: Some(timeout_ms),
        tolerable_failures: Some(tolerable_failures),
        retained: Some(retained),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_checkpoint_every_task_acknowledged_completes_and_is_announced() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    assert_eq!(trigger(&mut h, 1, TASK_MANAGER).await, Verdict::Continue);
    assert_eq!(h.client.triggers.lock().map(|t| t.len()).unwrap_or(0), 1, "the source's TaskManager was triggered");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::InProgress));

    assert_eq!(h.coordinator.on_ack(deployment(1, TASK_MANAGER), ack(1, 1)).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Completed));
    let metadata = h.job_dir.child("chk-1").exists("_metadata").await.unwrap_or(false);
    assert!(metadata, "the completed checkpoint has its _metadata");
    let client = h.client.clone();
    eventually("the notification", || client.notifications.lock().map(|n| n.len() == 1).unwrap_or(false)).await;
    assert_eq!(h.coordinator.restore_candidates().first().map(|(id, _)| *id), Some(1));
}

#[tokio::test]
async fn an_acknowledgement_of_an_earlier_attempt_completes_nothing() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    trigger(&mut h, 2, TASK_MANAGER).await;
    assert_eq!(h.coordinator.on_ack(deployment(2, TASK_MANAGER), ack(1, 1)).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::InProgress), "a stale ack is ignored");
    h.coordinator.on_ack(deployment(2, TASK_MANAGER), ack(2, 1)).await;
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Completed), "the current attempt's ack completes it");
}

#[tokio::test]
async fn an_unacknowledged_checkpoint_expires_and_beyond_the_tolerance_fails_the_job() {
    let mut h = harness(policy(10, 30, 0, 1), FakeTaskManagers::default()).await;
    assert_eq!(trigger(&mut h, 1, TASK_MANAGER).await, Verdict::Continue);
    // The pending checkpoint's deadline is now its timeout.
    let verdict = trigger(&mut h, 1, TASK_MANAGER).await;
    let Verdict::FailJob(cause) = verdict else { panic!("expected the job to fail, got {verdict:?}") };
    assert!(cause.contains("checkpoint 1 expired after 30 ms"), "{cause}");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed));
    let failure = h.store.checkpoint(&h.job_id, 1).await.ok().flatten().and_then(|c| c.failure);
    assert!(failure.is_some_and(|f| f.contains("expired")));
}

#[tokio::test]
async fn a_source_task_manager_that_refuses_connections_fails_the_job_at_once() {
    let gone = closed_address().await;
    let client = FakeTaskManagers { gone: Some(gone.clone()), ..Default::default() };
    // Failures tolerated: the job still fails over at once, the loss is not the checkpoint's fault.
    let mut h = harness(policy(10, 60_000, 3, 1), client).await;
    let verdict = trigger(&mut h, 1, &gone).await;
    let Verdict::FailJob(cause) = verdict else { panic!("expected the job to fail over, got {verdict:?}") };
    assert!(cause.contains("cannot trigger checkpoint 1"), "{cause}");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed));
}

#[tokio::test]
async fn only_the_retained_checkpoints_keep_their_files() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    for id in 1..=2 {
        trigger(&mut h, 1, TASK_MANAGER).await;
        h.job_dir
            .child(&format!("chk-{id}"))
            .put("0-0.snapshot", b"state".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        h.coordinator.on_ack(deployment(1, TASK_MANAGER), ack(1, id)).await;
    }
    let first = h.job_dir.child("chk-1");
    let mut gone = false;
    let deadline = StdInstant::now() + Duration::from_secs(5);
    while !gone {
        assert!(StdInstant::now() < deadline, "checkpoint 1 was not discarded within 5 s");
        let discarded = h.store.checkpoint(&h.job_id, 1).await.ok().flatten().is_some_and(|c| c.discarded);
        gone = discarded && !first.exists("_metadata").await.unwrap_or(true);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.job_dir.child("chk-2").exists("_metadata").await.unwrap_or(false), "the newest is kept");
    assert_eq!(h.coordinator.restore_candidates().iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2]);
}

#[tokio::test]
async fn an_acknowledgement_naming_a_file_outside_the_job_fails_the_checkpoint_and_deletes_nothing() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    // `<tmp>/checkpoints/<job>/shared/../../../victim` is `<tmp>/victim`.
    let victim = h._dir.path().join("victim");
    std::fs::write(&victim, b"not the job's").unwrap_or_else(|e| panic!("{e}"));
    let escape = "../../../victim".to_string();
    trigger(&mut h, 1, TASK_MANAGER).await;
    let forged = AcknowledgeCheckpointRequest {
        shared_files: vec![escape.clone()],
        uploaded_shared_files: vec![escape],
        ..ack(1, 1)
    };
    assert_eq!(h.coordinator.on_ack(deployment(1, TASK_MANAGER), forged).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed));
    let failure = h.store.checkpoint(&h.job_id, 1).await.ok().flatten().and_then(|c| c.failure).unwrap_or_default();
    assert!(failure.contains("not a single path component"), "{failure}");

    // The next checkpoint completes; then every queued deletion runs to its end.
    trigger(&mut h, 1, TASK_MANAGER).await;
    h.coordinator.on_ack(deployment(1, TASK_MANAGER), ack(1, 2)).await;
    assert_eq!(status_of(&h, 2).await, Some(CheckpointStatus::Completed));
    h.coordinator.on_job_end(true).await;
    assert!(victim.exists(), "a file outside the job's directory was deleted");
}

/// Goal: a store error while recording a completion is retried, and a completion whose record is in doubt
/// never costs the checkpoint its files (issue 19). Method: a write that fails twice, then lands; and a
/// store closed under the coordinator, so every try fails.
#[tokio::test]
async fn a_completion_write_that_fails_and_then_lands_is_recorded() {
    use super::completion::{record_completion, CompletionRecord, COMPLETION_RECORD_ATTEMPTS};
    use crate::store::StoreError;
    let tries = std::cell::Cell::new(0u32);
    let recorded = record_completion(1, || {
        tries.set(tries.get() + 1);
        let answer = if tries.get() < 3 { Err(StoreError::Database(sqlx::Error::PoolTimedOut)) } else { Ok(true) };
        std::future::ready(answer)
    })
    .await;
    assert_eq!((recorded, tries.get()), (CompletionRecord::Completed, 3));

    tries.set(0);
    let refused = record_completion(1, || {
        tries.set(tries.get() + 1);
        std::future::ready(Ok(false))
    })
    .await;
    assert_eq!((refused, tries.get()), (CompletionRecord::Refused, 1), "a refusal is an answer, not retried");

    tries.set(0);
    let unknown = record_completion(1, || {
        tries.set(tries.get() + 1);
        std::future::ready(Err(StoreError::Database(sqlx::Error::PoolTimedOut)))
    })
    .await;
    assert!(matches!(unknown, CompletionRecord::Unknown(_)), "{unknown:?}");
    assert_eq!(tries.get(), COMPLETION_RECORD_ATTEMPTS, "the tries are bounded");
}

/// The store fails for a while (its table renamed away) while checkpoint 1 completes: its files stay, also
/// through a sweep; once the store answers again, the next completion settles checkpoint 1 (FAILED in the
/// store, so its files go).
#[tokio::test]
async fn a_completion_the_store_cannot_record_keeps_the_files_until_the_store_answers() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    trigger(&mut h, 1, TASK_MANAGER).await;
    let chk = h.job_dir.child("chk-1");
    chk.put("0-0.snapshot", b"state".to_vec()).await.unwrap_or_else(|e| panic!("{e}"));
    let away = h.store.execute_for_tests("ALTER TABLE checkpoints RENAME TO checkpoints_away").await;
    away.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.coordinator.on_ack(deployment(1, TASK_MANAGER), ack(1, 1)).await, Verdict::Continue);
    assert!(h.coordinator.restore_candidates().is_empty(), "an unrecorded checkpoint is not restored from");
    // A sweep (queued after every abort and completion) must not take it; the janitor runs apart, so a
    // later queued deletion is the barrier that shows the sweep ran.
    h.coordinator.sweep().await;
    h.janitor_barrier().await;
    assert!(chk.exists("_metadata").await.unwrap_or(false), "the committed _metadata was deleted");
    assert!(chk.exists("0-0.snapshot").await.unwrap_or(false), "the snapshot file was deleted");

    let back = h.store.execute_for_tests("ALTER TABLE checkpoints_away RENAME TO checkpoints").await;
    back.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::InProgress), "the store never heard of the end");
    trigger(&mut h, 1, TASK_MANAGER).await;
    h.coordinator.on_ack(deployment(1, TASK_MANAGER), ack(1, 2)).await;
    assert_eq!(status_of(&h, 2).await, Some(CheckpointStatus::Completed));
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed), "checkpoint 1 is settled");
    let deadline = StdInstant::now() + Duration::from_secs(5);
    while chk.exists("_metadata").await.unwrap_or(true) {
        assert!(StdInstant::now() < deadline, "checkpoint 1's files were not deleted within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.job_dir.child("chk-2").exists("_metadata").await.unwrap_or(false));
}

/// A user's or the actor's request, answered through a channel; the id it started, or why none did.
async fn request(h: &mut Harness, kind: super::Kind) -> (Verdict, Option<Result<u64, String>>) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let verdict = h.coordinator.request(Some(deployment(1, TASK_MANAGER)), kind, reply).await;
    (verdict, answer.await.ok())
}

/// Goal: a drain checkpoint (a TaskManager is leaving) stops the sources at its barrier, is retained as a
/// checkpoint, waits for the sinks' commit before the verdict, and ends with a redeployment. Method: request
/// one, acknowledge it, and look at the trigger, the notification, the store and the verdict.
#[tokio::test]
async fn a_completed_drain_checkpoint_is_retained_committed_and_redeploys_the_job() {
    let mut h = harness(policy(60_000, 60_000, 3, 1), FakeTaskManagers::default()).await;
    let (verdict, started) = request(&mut h, super::Kind::Drain).await;
    assert_eq!((verdict, started), (Verdict::Continue, Some(Ok(1))));
    assert!(h.coordinator.drain_in_progress());
    let stops = h.client.triggers.lock().map(|t| t.iter().map(|t| t.stop_sources).collect::<Vec<_>>());
    assert_eq!(stops.unwrap_or_default(), vec![true], "the sources stop at the drain's barrier");

    let verdict = h.coordinator.on_ack(deployment(1, TASK_MANAGER), ack(1, 1)).await;
    let Verdict::Redeploy(why) = verdict else { panic!("expected a redeployment, got {verdict:?}") };
    assert!(why.contains("checkpoint 1"), "{why}");
    assert!(!h.coordinator.drain_in_progress());
    // Awaited before the verdict (not spawned): the tasks are cancelled right after it.
    assert_eq!(h.client.notifications.lock().map(|n| n.len()).unwrap_or(0), 1, "the sinks were told to commit");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Completed));
    assert_eq!(h.coordinator.restore_candidates().first().map(|(id, _)| *id), Some(1), "the move restores it");
}

/// Goal: a drain checkpoint that fails (its sources have stopped) still ends with a redeployment, from the
/// latest checkpoint, instead of a job that emits nothing more; and so does a failed stop-with-savepoint.
/// Method: let a drain expire, and decline a stop-with-savepoint.
#[tokio::test]
async fn a_failed_drain_or_stop_with_savepoint_redeploys_the_job_instead_of_leaving_its_sources_stopped() {
    let mut h = harness(policy(60_000, 30, 3, 1), FakeTaskManagers::default()).await;
    let (_, started) = request(&mut h, super::Kind::Drain).await;
    assert_eq!(started, Some(Ok(1)));
    if let Some(deadline) = h.coordinator.deadline() {
        tokio::time::sleep_until(deadline).await;
    }
    let verdict = h.coordinator.on_deadline(Some(deployment(1, TASK_MANAGER))).await;
    let Verdict::Redeploy(why) = verdict else { panic!("expected a redeployment, got {verdict:?}") };
    assert!(why.contains("expired") && why.contains("sources had stopped"), "{why}");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed));

    let dir = Storage::open(&h._dir.path().join("savepoint").display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (_, started) = request(&mut h, super::Kind::Savepoint { dir, stop: true }).await;
    assert_eq!(started, Some(Ok(2)));
    let verdict = h.coordinator.on_decline(2, "the disk is full".into()).await;
    assert!(matches!(verdict, Verdict::Redeploy(ref why) if why.contains("the disk is full")), "{verdict:?}");
}

/// Goal: the periodic trigger comes at its interval and a checkpoint expires at its timeout (the default),
/// neither a millisecond early. Method: on a paused clock moved only by the test, the coordinator is asked
/// a millisecond before each bound (nothing happens) and at it.
#[tokio::test]
async fn on_a_paused_clock_a_checkpoint_is_triggered_at_its_interval_and_expires_at_its_timeout() {
    use sluice_common::job::checkpoint::CHECKPOINT_TIMEOUT_MS_DEFAULT;
    use tokio::time::{advance, Instant};

    const TICK: Duration = Duration::from_millis(1);
    let _clock = crate::test_support::ManualClock::start();
    let interval = Duration::from_secs(30);
    let timeout = Duration::from_millis(CHECKPOINT_TIMEOUT_MS_DEFAULT);
    let mut h = harness(policy(30_000, CHECKPOINT_TIMEOUT_MS_DEFAULT, 5, 1), FakeTaskManagers::default()).await;
    let triggers = |h: &Harness| h.client.triggers.lock().map(|t| t.len()).unwrap_or(0);

    let due = h.coordinator.deadline().unwrap_or_else(|| panic!("no periodic trigger scheduled"));
    advance(due.saturating_duration_since(Instant::now()) - TICK).await;
    assert_eq!(h.coordinator.on_deadline(Some(deployment(1, TASK_MANAGER))).await, Verdict::Continue);
    assert_eq!(triggers(&h), 0, "not triggered a millisecond early");
    advance(TICK).await;
    assert_eq!(h.coordinator.on_deadline(Some(deployment(1, TASK_MANAGER))).await, Verdict::Continue);
    assert_eq!(triggers(&h), 1, "triggered at its time");
    let triggered = Instant::now();
    assert_eq!(h.coordinator.deadline(), Some(triggered + timeout), "the pending checkpoint's expiry comes next");

    advance(timeout - TICK).await;
    assert_eq!(h.coordinator.on_deadline(Some(deployment(1, TASK_MANAGER))).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::InProgress), "not expired a millisecond early");
    advance(TICK).await;
    assert_eq!(h.coordinator.on_deadline(Some(deployment(1, TASK_MANAGER))).await, Verdict::Continue, "tolerated");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed));
    let failure = h.store.checkpoint(&h.job_id, 1).await.ok().flatten().and_then(|c| c.failure);
    assert!(failure.as_deref().is_some_and(|f| f.contains("expired after 60000 ms")), "{failure:?}");
    // The next periodic trigger is an interval after the expired one's, or later.
    assert!(
        h.coordinator.deadline().is_some_and(|next| next >= triggered + interval),
        "{:?}",
        h.coordinator.deadline()
    );
}

/// Goal: checkpoints go on after a task finished (Flink's FLIP-147): a task that finished before the trigger,
/// or finishes without taking part, is recorded as finished and not waited for; one that finished after
/// taking part is waited for until it acknowledges (its report and its acknowledgement travel apart).
/// Method: drive the coordinator with deployments of subtasks in both states and read the `_metadata`.
#[tokio::test]
async fn a_finished_task_is_recorded_as_finished_unless_it_took_part() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    if let Some(deadline) = h.coordinator.deadline() {
        tokio::time::sleep_until(deadline).await;
    }
    // Subtask 2 finished before checkpoint 1; 0 and 1 run.
    assert_eq!(h.coordinator.on_deadline(Some(deployment_with(2, &[(2, 0)]))).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::InProgress));
    // Subtask 1 finishes after it took part in checkpoint 1: its acknowledgement is still awaited.
    let after = deployment_with(1, &[(1, 1), (2, 0)]);
    assert_eq!(h.coordinator.on_task_ended(subtask(1), Some(1), Some(after.clone())).await, Verdict::Continue);
    assert_eq!(h.coordinator.on_ack(after.clone(), ack_of(0, 1)).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::InProgress), "subtask 1's acknowledgement is due");
    assert_eq!(h.coordinator.on_ack(after, ack_of(1, 1)).await, Verdict::Continue);
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Completed));
    let first = metadata_of(&h, 1).await;
    assert_eq!(first.format, sluice_common::checkpoint_metadata::METADATA_FORMAT_FINISHED);
    assert_eq!(first.finished.iter().map(|f| f.subtask).collect::<Vec<_>>(), vec![2]);
    assert_eq!(first.files.iter().map(|f| f.subtask).collect::<Vec<_>>(), vec![0, 1]);

    // Checkpoint 2: subtask 0 finishes without taking part, which completes it with nothing acknowledged.
    if let Some(deadline) = h.coordinator.deadline() {
        tokio::time::sleep_until(deadline).await;
    }
    let before = deployment_with(1, &[(1, 1), (2, 0)]);
    assert_eq!(h.coordinator.on_deadline(Some(before)).await, Verdict::Continue);
    let ended = Deployment { tasks: Vec::new(), ..deployment_with(0, &[(0, 1), (1, 1), (2, 0)]) };
    assert_eq!(h.coordinator.on_task_ended(subtask(0), Some(1), Some(ended)).await, Verdict::Continue);
    assert_eq!(status_of(&h, 2).await, Some(CheckpointStatus::Completed));
    let second = metadata_of(&h, 2).await;
    assert_eq!(second.finished.iter().map(|f| f.subtask).collect::<Vec<_>>(), vec![1, 2, 0]);
    assert!(second.files.is_empty());
}

/// Goal: a task that ends any other way while a checkpoint waits for it aborts the checkpoint, and no
/// checkpoint starts once no source runs (its barriers would have nowhere to start).
#[tokio::test]
async fn a_failed_task_aborts_the_checkpoint_and_none_starts_without_a_running_source() {
    let mut h = harness(policy(10, 60_000, 3, 1), FakeTaskManagers::default()).await;
    if let Some(deadline) = h.coordinator.deadline() {
        tokio::time::sleep_until(deadline).await;
    }
    assert_eq!(h.coordinator.on_deadline(Some(deployment_with(2, &[]))).await, Verdict::Continue);
    assert_eq!(h.coordinator.on_task_ended(subtask(1), None, None).await, Verdict::Continue, "not counted");
    assert_eq!(status_of(&h, 1).await, Some(CheckpointStatus::Failed));

    if let Some(deadline) = h.coordinator.deadline() {
        tokio::time::sleep_until(deadline).await;
    }
    let no_source = Deployment { source_task_managers: Vec::new(), ..deployment_with(1, &[(1, 0)]) };
    assert_eq!(h.coordinator.on_deadline(Some(no_source)).await, Verdict::Continue);
    assert_eq!(h.client.triggers.lock().map(|t| t.len()).unwrap_or(0), 1, "only checkpoint 1 was triggered");
    assert_eq!(status_of(&h, 2).await, None);
}
