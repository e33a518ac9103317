//! A short chaos run (about two minutes): TaskManagers killed with SIGKILL at random moments and started
//! again, the JobManager killed and started again once, while an exactly-once windowed job runs. The test
//! first checks that the kills really restarted the job and from which checkpoints, then that every
//! recovery stayed under 10 s, then that the output is exactly an uninterrupted run's. `scripts/chaos_test.sh`
//! runs the same thing for as long as asked.
use std::time::Duration;

use sluice_tests::chaos::{run, ChaosOptions};

#[test]
fn a_short_chaos_run_loses_and_repeats_nothing() {
    let options = ChaosOptions {
        duration: Duration::from_secs(90),
        kill_every: (Duration::from_secs(10), Duration::from_secs(14)),
        restart_after: Duration::from_secs(2),
        kill_jobmanager: 1,
        seed: 7,
        ..ChaosOptions::default()
    };
    let report = run(&options).unwrap_or_else(|e| panic!("the chaos run failed: {e:#}"));
    println!("{report}");

    let task_manager_kills: Vec<_> = report.recoveries.iter().filter(|r| r.killed != "jobmanager").collect();
    let job_manager_kills = report.recoveries.len() - task_manager_kills.len();
    assert!(task_manager_kills.len() >= 4, "at least 4 TaskManager kills:\n{report}");
    assert_eq!(job_manager_kills, 1, "one JobManager kill:\n{report}");
    // Every kill hit a TaskManager running the job's tasks (or the JobManager), so each one restarted it.
    let recovered: Vec<_> = report.recoveries.iter().filter(|r| r.took.is_some()).collect();
    assert_eq!(recovered.len(), report.recoveries.len(), "every kill restarted the job:\n{report}");
    assert!(report.restarts >= recovered.len() as u64, "the JobManager counted the restarts:\n{report}");
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
