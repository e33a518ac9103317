//! The harness keeps its promises: no process outlives its test, a failing test leaves its logs and
//! directory behind, and a killed TaskManager can be started again under its id.
//!
//! Method: start small clusters, note their PIDs, end them normally and by a panic (on a thread of its own,
//! so the panic can be observed), and check `/proc` for the processes and the disk for the directory.
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use sluice_tests::{Cluster, ClusterSpec};

/// Whether `pid` names a live (not zombie) process. A reaped child's `/proc` entry is gone.
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status.lines().any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

fn small_cluster() -> Cluster {
    Cluster::start(ClusterSpec { task_managers: 1, slots: 1, ..ClusterSpec::default() })
}

#[test]
fn dropping_a_cluster_kills_every_process_and_removes_its_directory() {
    let cluster = small_cluster();
    let pids = [cluster.job_manager_pid(), cluster.task_manager_pid(0)];
    let dir = cluster.dir().to_path_buf();
    assert!(pids.iter().all(|&pid| is_alive(pid)), "the processes should run: {pids:?}");

    drop(cluster);
    for pid in pids {
        assert!(!is_alive(pid), "pid {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "{} should be removed after a passing test", dir.display());
}

#[test]
fn a_failing_test_kills_its_processes_but_keeps_its_directory_and_logs() {
    let (sender, receiver) = mpsc::channel::<([u32; 2], PathBuf)>();
    let outcome = std::thread::spawn(move || {
        let cluster = small_cluster();
        // The receiver outlives this thread; a send error would only lose the evidence checked below.
        let _ = sender.send(([cluster.job_manager_pid(), cluster.task_manager_pid(0)], cluster.dir().to_path_buf()));
        panic!("a deliberate failure, to see what the harness leaves behind");
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let (pids, dir) =
        receiver.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|e| panic!("no evidence from the thread: {e}"));

    for pid in pids {
        assert!(!is_alive(pid), "pid {pid} outlived its failing test");
    }
    let log = std::fs::read_to_string(dir.join("jobmanager.log")).unwrap_or_default();
    assert!(log.contains("REST listening"), "the JobManager's log should be kept in {}:\n{log}", dir.display());
    assert!(dir.join("tm-0.log").is_file(), "the TaskManager's log should be kept in {}", dir.display());
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clean up {}: {e}", dir.display()));
}

#[test]
fn a_killed_task_manager_restarts_under_its_id_and_registers_again() {
    let mut cluster = small_cluster();
    let old_pid = cluster.task_manager_pid(0);
    cluster.kill_task_manager(0);
    assert!(!is_alive(old_pid), "the TaskManager should be dead after a kill");

    cluster.restart_task_manager(0);
    let new_pid = cluster.task_manager_pid(0);
    assert!(new_pid != old_pid && is_alive(new_pid));
    let list = cluster.get("/taskmanagers");
    let ids: Vec<&str> = list["taskmanagers"]
        .as_array()
        .map(|l| l.iter().filter_map(|t| t["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["tm-0"], "the restarted TaskManager replaces its old registration: {list}");
    assert_eq!(
        list["taskmanagers"][0]["rpc_address"],
        cluster.task_manager_rpc_address(0),
        "the registration is the new incarnation's: {list}"
    );
}
