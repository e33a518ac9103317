//! A SQLite metadata store serves one JobManager: a second one started on the same file (the same data
//! directory) refuses to start and says why, instead of resuming every job a second time.
//!
//! Method: a cluster (its JobManager on SQLite in its data directory) runs; a second JobManager process with the
//! same data directory and ports of its own is started and must exit, non-zero, within the bound, naming the
//! other JobManager; the first one still serves.
use std::time::Duration;

use sluice_tests::{Cluster, ClusterSpec};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_second_job_manager_on_the_same_sqlite_file_refuses_to_start() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    let data_dir = cluster.dir().join("jobmanager");
    let logs = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (status, log) = sluice_tests::cluster::job_manager_that_refuses_to_start(
        "second-jobmanager",
        &data_dir,
        &[],
        logs.path(),
        TIMEOUT,
    );
    assert!(!status.success(), "the second JobManager did not run: {status}");
    assert!(log.contains("another JobManager already uses the SQLite metadata store"), "it says why:\n{log}");
    let health = cluster.get("/health");
    assert_eq!(health["status"], "ok", "the first JobManager still serves: {health}");
}
