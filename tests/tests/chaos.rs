//! A short chaos run (about two minutes): TaskManagers killed with SIGKILL at random moments and started
//! again, and the leader of three JobManagers on PostgreSQL killed twice (a standby takes over each time and
//! adopts the running job), while an exactly-once windowed job runs. The test first checks that the TaskManager
//! kills really restarted the job and from which checkpoints, that the leader kills restarted nothing, then
//! that every recovery stayed under 10 s, then that the output is exactly an uninterrupted run's.
//! `scripts/chaos_test.sh` runs the same thing for as long as asked.
use std::time::Duration;

use sluice_tests::chaos::{run, ChaosOptions};

#[test]
fn a_short_chaos_run_loses_and_repeats_nothing() {
    let options = ChaosOptions {
        duration: Duration::from_secs(90),
        kill_every: (Duration::from_secs(10), Duration::from_secs(14)),
        restart_after: Duration::from_secs(2),
        kill_jobmanager: 2,
        job_managers: 3,
        seed: 7,
        ..ChaosOptions::default()
    };
    let report = run(&options).unwrap_or_else(|e| panic!("the chaos run failed: {e:#}"));
    println!("{report}");

    let task_manager_kills: Vec<_> = report.recoveries.iter().filter(|r| !r.killed.starts_with("jobmanager")).collect();
    let leader_kills: Vec<_> = report.recoveries.iter().filter(|r| r.killed.starts_with("jobmanager")).collect();
    assert!(task_manager_kills.len() >= 4, "at least 4 TaskManager kills:\n{report}");
    assert_eq!(leader_kills.len(), 2, "two leader kills:\n{report}");
    for kill in &leader_kills {
        assert_eq!(kill.restarts_caused, Some(0), "the new leader adopted the job, restarting nothing:\n{report}");
    }
    // Every kill hit a TaskManager running the job's tasks (or the leader), so each one was recovered from.
    let recovered: Vec<_> = report.recoveries.iter().filter(|r| r.took.is_some()).collect();
    assert_eq!(recovered.len(), report.recoveries.len(), "every kill was recovered from:\n{report}");
    assert!(report.restarts >= task_manager_kills.len() as u64, "the JobManager counted the restarts:\n{report}");
    for recovery in &recovered {
        assert!(
            recovery.restored_checkpoint.is_some(),
            "{} was restored from a checkpoint:\n{report}",
            recovery.killed
        );
    }
    let restored: Vec<u64> = recovered.iter().filter_map(|r| r.restored_checkpoint).collect();
    assert!(restored.windows(2).all(|w| w[0] <= w[1]), "restored checkpoints only go forward: {restored:?}");
    for took in report.recovery_times() {
        assert!(took < Duration::from_secs(10), "a recovery took {took:?}:\n{report}");
    }
    assert!(report.exact(), "the output differs from an uninterrupted run's:\n{report}");
    assert_eq!(report.records_verified, report.records_expected, "{report}");
}
