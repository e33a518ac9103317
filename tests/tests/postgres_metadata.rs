//! With `DATABASE_URL=postgres://...` the JobManager keeps its metadata in PostgreSQL.
//!
//! Goal: a job's record (status, name) is written to and read from PostgreSQL, not a local SQLite file, and
//! outlives the JobManager process.
//!
//! Method: a fresh database on the PostgreSQL server `scripts/test.sh` starts (`SLUICE_TEST_POSTGRES_URL`);
//! a cluster whose JobManager gets that database's URL runs a small job to FINISHED; the job's row is read
//! back from PostgreSQL directly; the JobManager is killed with SIGKILL and started again, and the new process
//! reports the same job, FINISHED. No SQLite file appears in the JobManager's data directory.
use std::time::Duration;

use serde_json::json;
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};
use sqlx::any::AnyPoolOptions;
use sqlx::Row;

const TIMEOUT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn fresh_database() -> String {
    sluice_tests::postgres::fresh_database("sluice_it")
}

#[test]
fn jobs_live_in_postgresql_and_outlive_the_job_manager() {
    let url = fresh_database();
    let mut cluster = Cluster::start(ClusterSpec::default().env("DATABASE_URL", &url));
    let job = json!({
        "name": "kept in postgres",
        "vertices": [
            {"id": "numbers", "parallelism": 1, "datagen": {"seed": 1, "rows": 1000,
                "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "numbers", "to": "sink"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);

    let stored: (String, String) = runtime().block_on(async {
        let pool = AnyPoolOptions::new().max_connections(1).connect(&url).await;
        let pool = pool.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let row = sqlx::query("SELECT status, name FROM jobs WHERE job_id = $1").bind(id.0.clone()).fetch_one(&pool);
        let row = row.await.unwrap_or_else(|e| panic!("job {id} is not in PostgreSQL: {e}"));
        (row.get(0), row.get(1))
    });
    assert_eq!(stored, ("FINISHED".to_string(), "kept in postgres".to_string()));
    let sqlite = cluster.dir().join("jobmanager").join("sluice.db");
    assert!(!sqlite.exists(), "{} was created although DATABASE_URL points at PostgreSQL", sqlite.display());

    cluster.restart_job_manager();
    let details = cluster.job(&id);
    assert_eq!(details["status"], "FINISHED", "after a restart: {details}");
    assert_eq!(details["name"], "kept in postgres", "after a restart: {details}");
}

/// Checkpoint metadata lives in PostgreSQL too, and a restart of the database loses none of it: while the
/// server is down the REST API answers 503 and checkpoints cannot be recorded (they fail, within the job's
/// tolerance, or their completion is retried until it lands); once it is back, checkpoints complete again,
/// ids going on from the last one, and the job never left RUNNING. Every checkpoint the store calls
/// COMPLETED and not discarded still has its `_metadata` (issue 19: a store error while completing never
/// deletes a checkpoint that the store may record as completed).
#[test]
fn checkpoints_are_recorded_in_postgresql_and_resume_after_it_restarts() {
    let server = sluice_tests::postgres::PostgresServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster = Cluster::start(ClusterSpec::default().env("DATABASE_URL", server.url()));
    let job = json!({
        "name": "checkpoints in postgres",
        "config": {"checkpointing": {"interval_ms": 200, "tolerable_failures": 1000, "retained": 2}},
        "vertices": [
            {"id": "numbers", "parallelism": 2, "event_time": {"column": "ts", "monotonous": {}},
             "datagen": {"seed": 1, "rows_per_second": 1000.0, "batch_size": 50,
                "columns": [{"name": "n", "sequence": {"start": 0}}, {"name": "ts", "wall_clock": {}}]}},
            {"id": "keyed", "parallelism": 2, "select": {"columns": [
                {"name": "k", "expr": "n % 5"}, {"name": "ts", "expr": "ts"}]}},
            {"id": "count", "parallelism": 2, "window": {"keys": ["k"], "tumbling": {"size_ms": 1000},
                "aggregates": [{"function": "count", "name": "rows"}]}},
            {"id": "sink", "parallelism": 2, "blackhole_sink": {}}
        ],
        "edges": [
            {"from": "numbers", "to": "keyed"},
            {"from": "keyed", "to": "count", "partitioning": "HASH", "key": ["k"]},
            {"from": "count", "to": "sink"}
        ]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    let path = format!("/jobs/{}/checkpoints", id.0);
    let completed_ids = |answer: &serde_json::Value| -> Vec<u64> {
        let history = answer["history"].as_array().cloned().unwrap_or_default();
        history.iter().filter(|c| c["status"] == "COMPLETED").filter_map(|c| c["id"].as_u64()).collect()
    };
    let before = poll_until("three completed checkpoints", TIMEOUT, || {
        let answer = cluster.get(&path);
        let ids = completed_ids(&answer);
        if ids.len() >= 3 {
            Ok(Progress::Ready(ids))
        } else {
            Ok(Progress::Pending(answer.to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    server.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let answer = cluster.request(reqwest::Method::GET, &path, None);
    assert_eq!(answer.status, 503, "with the database down: {}", answer.body);
    server.start_again().unwrap_or_else(|e| panic!("{e:#}"));

    let last_before = before.iter().copied().max().unwrap_or(0);
    let after = poll_until("checkpoints to complete again", TIMEOUT, || {
        let answer = cluster.request(reqwest::Method::GET, &path, None);
        if answer.status != 200 {
            return Ok(Progress::Pending(format!("HTTP {} {}", answer.status, answer.body)));
        }
        let answer = answer.body;
        let ids = completed_ids(&answer);
        if ids.iter().filter(|&&id| id > last_before).count() >= 2 {
            Ok(Progress::Ready(ids))
        } else {
            Ok(Progress::Pending(answer.to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    for id in &before {
        assert!(after.contains(id) || after.len() >= 100, "checkpoint {id} recorded before the restart is gone");
    }
    let status = cluster.get(&format!("/jobs/{}/status", id.0));
    assert_eq!(status["status"], "RUNNING", "{status}");
    // Retention may discard a checkpoint between reading the list and looking at its files: a file missing
    // counts only if the checkpoint is still listed as kept afterwards.
    let kept = |answer: &serde_json::Value| -> Vec<(u64, String)> {
        let history = answer["history"].as_array().cloned().unwrap_or_default();
        history
            .iter()
            .filter(|c| c["status"] == "COMPLETED" && c["discarded"] == false)
            .filter_map(|c| Some((c["id"].as_u64()?, c["location"].as_str()?.to_string())))
            .collect()
    };
    let listed = kept(&cluster.get(&path));
    assert!(!listed.is_empty(), "no kept checkpoint is listed");
    let missing: Vec<u64> = listed
        .iter()
        .filter(|(_, location)| !std::path::Path::new(location).join("_metadata").is_file())
        .map(|(id, _)| *id)
        .collect();
    let still_kept = kept(&cluster.get(&path));
    let lost: Vec<&u64> = missing.iter().filter(|id| still_kept.iter().any(|(k, _)| k == *id)).collect();
    assert!(lost.is_empty(), "kept COMPLETED checkpoints without their _metadata: {lost:?}");
    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
}

/// A job that ends while the database is down keeps trying to record its end, past the few tries other
/// transitions get, and records it once the database is back: a JobManager restarted afterwards finds it
/// FINISHED and does not run it again.
#[test]
fn a_job_that_finishes_while_the_database_is_down_is_recorded_finished_once_it_is_back() {
    let server = sluice_tests::postgres::PostgresServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster =
        Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() }.env("DATABASE_URL", server.url()));
    // About five seconds of input: enough to stop the database while it runs.
    let job = json!({
        "name": "ends during an outage",
        "vertices": [
            {"id": "numbers", "parallelism": 1, "datagen": {"seed": 1, "rows": 5000, "rows_per_second": 1000.0,
                "batch_size": 50, "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "numbers", "to": "sink"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    server.stop().unwrap_or_else(|e| panic!("{e:#}"));

    // More tries than a non-terminal transition gets (three): only a terminal status is retried this long.
    let log = cluster.dir().join("jobmanager.log");
    poll_until("the JobManager to retry recording FINISHED several times", TIMEOUT, || {
        let text = std::fs::read_to_string(&log)?;
        let retries = text
            .lines()
            .filter(|l| l.contains("cannot record transition; retrying") && l.contains("status=FINISHED"))
            .count();
        Ok(if retries >= 4 { Progress::Ready(()) } else { Progress::Pending(format!("{retries} retries so far")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    server.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);

    cluster.restart_job_manager();
    let details = poll_until("the restarted JobManager to answer", TIMEOUT, || {
        let answer = cluster.request(reqwest::Method::GET, &format!("/jobs/{}", id.0), None);
        Ok(if answer.status == 200 { Progress::Ready(answer.body) } else { Progress::Pending(answer.body.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(details["status"], "FINISHED", "{details}");
    assert_eq!(details["restarts"], 0, "the job was not run again: {details}");
}

/// Issue 19: PostgreSQL stops in the middle of a cancel. The job's CANCELED is retried until the database is
/// back and lands there, so a JobManager restarted afterwards finds the job CANCELED and does not run it
/// again.
///
/// Method: the job's only TaskManager is frozen (SIGSTOP) before the cancel, so the job stays CANCELLING
/// (its tasks cannot answer) while the database is stopped; the JobManager then declares the TaskManager
/// lost, which ends the cancel during the outage.
#[test]
fn a_job_cancelled_while_the_database_is_down_is_recorded_canceled_once_it_is_back() {
    let server = sluice_tests::postgres::PostgresServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster =
        Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() }.env("DATABASE_URL", server.url()));
    let job = json!({
        "name": "cancelled during an outage",
        "vertices": [
            {"id": "numbers", "parallelism": 1, "datagen": {"seed": 1, "rows_per_second": 1000.0,
                "batch_size": 50, "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "numbers", "to": "sink"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    cluster.freeze_task_manager(0);
    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Cancelling, TIMEOUT);
    server.stop().unwrap_or_else(|e| panic!("{e:#}"));

    let log = cluster.dir().join("jobmanager.log");
    poll_until("the JobManager to retry recording CANCELED", TIMEOUT, || {
        let text = std::fs::read_to_string(&log)?;
        let retries = text
            .lines()
            .filter(|l| l.contains("cannot record transition; retrying") && l.contains("status=CANCELED"))
            .count();
        Ok(if retries >= 2 { Progress::Ready(()) } else { Progress::Pending(format!("{retries} retries so far")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    server.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
    cluster.thaw_task_manager(0);

    cluster.restart_job_manager();
    let details = poll_until("the restarted JobManager to answer", TIMEOUT, || {
        let answer = cluster.request(reqwest::Method::GET, &format!("/jobs/{}", id.0), None);
        Ok(if answer.status == 200 { Progress::Ready(answer.body) } else { Progress::Pending(answer.body.to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(details["status"], "CANCELED", "{details}");
    assert_eq!(details["restarts"], 0, "the job was not run again: {details}");
}

/// Goal: the metadata connection is encrypted and its server verified when the URL asks for it
/// (`sslmode=verify-full&sslrootcert=CA`), as Cloud SQL and RDS expect; a JobManager whose URL turns TLS off is
/// refused by a server that enforces it, and says so instead of hanging. Method: a PostgreSQL server with a
/// certificate of a local CA that rejects every unencrypted TCP connection; a cluster whose JobManager has the
/// verify-full URL runs a job to FINISHED (only possible over TLS), and the server lists its connections as
/// encrypted; a JobManager with `sslmode=disable` exits within the bound with the server's refusal in its log.
#[test]
fn the_metadata_connection_uses_tls_when_the_url_asks_for_it() {
    use sluice_tests::postgres::PostgresServer;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let certs = sluice_tests::cluster::make_certificates(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let server = PostgresServer::start_with_tls(&certs.join("node.pem"), &certs.join("node.key"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let verified = format!("{}?sslmode=verify-full&sslrootcert={}", server.url(), certs.join("ca.pem").display());
    let mut cluster = Cluster::start(ClusterSpec::default().env("DATABASE_URL", &verified));
    let job = json!({
        "name": "metadata over TLS",
        "vertices": [
            {"id": "numbers", "parallelism": 1, "datagen": {"seed": 1, "rows": 100,
                "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [{"from": "numbers", "to": "sink"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);
    let encrypted: i64 = runtime().block_on(async {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new().max_connections(1).connect(&verified).await;
        let pool = pool.unwrap_or_else(|e| panic!("connect to {verified}: {e}"));
        let row = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE s.ssl AND a.datname = 'postgres' AND a.pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await;
        row.unwrap_or_else(|e| panic!("pg_stat_ssl: {e}")).get(0)
    });
    assert!(encrypted >= 1, "the JobManager's connections are encrypted ({encrypted} seen)");
    drop(cluster);

    let plain = format!("{}?sslmode=disable", server.url());
    let env = [("DATABASE_URL".to_string(), plain)];
    let (status, log) = sluice_tests::cluster::job_manager_that_refuses_to_start(
        "jobmanager-plain",
        &dir.path().join("plain"),
        &env,
        dir.path(),
        TIMEOUT,
    );
    assert!(!status.success(), "a JobManager that cannot open its database does not run: {status}");
    assert!(log.contains("no encryption") || log.contains("pg_hba.conf"), "the server's refusal is in the log:\n{log}");
}
