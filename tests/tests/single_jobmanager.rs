//! A SQLite metadata store serves one JobManager: a second one started on the same file (the same data
//! directory) refuses to start and says why, instead of resuming every job a second time.
//!
//! Method: a cluster (its JobManager on SQLite in its data directory) runs; a second JobManager process with the
//! same data directory and ports of its own is started and must exit, non-zero, within the bound, naming the
//! other JobManager; the first one still serves.
use std::time::Duration;

use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_second_job_manager_on_the_same_sqlite_file_refuses_to_start() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    let data_dir = cluster.dir().join("jobmanager");
    let program = sluice_tests::binaries::binary(sluice_tests::binaries::JOB_MANAGER).unwrap_or_else(|e| panic!("{e}"));
    let args =
        ["--rest-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0", "--data-dir", &data_dir.display().to_string()]
            .map(String::from)
            .to_vec();
    let logs = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let launch = sluice_tests::process::Launch {
        name: "second-jobmanager",
        program: &program,
        args,
        env: &[],
        cwd: cluster.dir(),
        log_dir: logs.path(),
    };
    let mut second = sluice_tests::Process::spawn(launch).unwrap_or_else(|e| panic!("{e:#}"));
    let exited = poll_until("the second JobManager to exit", TIMEOUT, || {
        Ok(match second.exit_status()? {
            Some(status) => Progress::Ready(status),
            None => Progress::Pending(second.log_tail(5)),
        })
    });
    let status = exited.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!status.success(), "the second JobManager did not run: {status}");
    let log = second.log_tail(1000);
    assert!(log.contains("another JobManager already uses the SQLite metadata store"), "it says why:\n{log}");
    let health = cluster.get("/health");
    assert_eq!(health["status"], "ok", "the first JobManager still serves: {health}");
}
