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
