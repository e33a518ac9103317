//! What the JobManager's unit tests share: a one-task job and its row in the store.
use sluice_common::ids::JobId;
use sluice_common::job::{parse_job_file, validate, ValidatedJob};

use crate::store::{NewJob, Store};

/// The id of the job [`insert_job`] records.
pub(crate) const JOB_ID: &str = "job-1";

/// A one-task job (a generator chained to a print sink: chain 0, subtask 0) with `config` as its job
/// config (JSON).
pub(crate) fn one_task_job(config: &str) -> ValidatedJob {
    let file = format!(
        r#"{{"name": "t", "config": {config}, "vertices": [
            {{"id": "src", "parallelism": 1, "datagen": {{"columns": [{{"name": "x", "sequence": {{}}}}]}}}},
            {{"id": "sink", "parallelism": 1, "print_sink": {{}}}}],
          "edges": [{{"from": "src", "to": "sink"}}]}}"#
    );
    validate(parse_job_file(file.as_bytes()).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
}

/// Records the job [`JOB_ID`] in `store` (checkpoints and statuses refer to it).
pub(crate) async fn insert_job(store: &Store) -> JobId {
    let job_id = JobId(JOB_ID.into());
    let new_job = NewJob {
        job_id: job_id.clone(),
        name: "t".into(),
        graph_json: "{}".into(),
        chains_json: "[]".into(),
        start_time_ms: 0,
        submitted_restore_json: None,
    };
    store.insert_job(&new_job).await.unwrap_or_else(|e| panic!("{e}"));
    job_id
}

/// How long (real time) a test on a [`ManualClock`] waits for the actor to get somewhere.
pub(crate) const REAL_TIME_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
/// The real-time pause between two looks while waiting on a [`ManualClock`].
const REAL_TIME_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Tokio's clock, paused and moved only by the test (`tokio::time::advance`), for timing tests that assert
/// bounds of minutes without waiting for them.
///
/// A plain `tokio::time::pause()` is not enough here: with the clock paused, tokio jumps to the next timer
/// whenever the runtime has nothing to run, and the actor waits on the store (SQLite answers from a worker
/// thread of its own) with sqlx's acquire timeout pending, so the clock would jump and time that out. While
/// a blocking task runs, tokio does not auto-advance (documented on `tokio::time::pause`): the guard holds
/// one for its life. Waiting for the actor then takes real time: [`ManualClock::until`].
pub(crate) struct ManualClock {
    release: Option<std::sync::mpsc::Sender<()>>,
}

impl ManualClock {
    /// Pauses the clock (call first in a `current_thread` test) and keeps it from moving by itself.
    pub(crate) fn start() -> ManualClock {
        tokio::time::pause();
        let (release, held) = std::sync::mpsc::channel::<()>();
        // Ends when the guard drops its sender (at the end of the test, or while a failing one unwinds).
        drop(tokio::task::spawn_blocking(move || held.recv()));
        ManualClock { release: Some(release) }
    }

    /// Waits until `done` holds, looking every millisecond of real time (the paused clock stands still)
    /// for at most [`REAL_TIME_DEADLINE`]; panics naming `what` past it.
    pub(crate) async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + REAL_TIME_DEADLINE;
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}: not within {REAL_TIME_DEADLINE:?}");
            // A blocking task, so the wait itself does not let the clock advance.
            let _ = tokio::task::spawn_blocking(|| std::thread::sleep(REAL_TIME_POLL)).await;
        }
    }
}

impl Drop for ManualClock {
    fn drop(&mut self) {
        self.release.take();
    }
}
