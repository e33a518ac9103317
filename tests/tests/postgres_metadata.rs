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
use sluice_tests::{Cluster, ClusterSpec};
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor, Row};

const TIMEOUT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The URL of a new, empty database on the test server.
fn fresh_database() -> String {
    let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("SLUICE_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    });
    let name = format!("sluice_it_{}", std::process::id());
    runtime().block_on(async {
        sqlx::any::install_default_drivers();
        let admin = AnyPoolOptions::new().max_connections(1).connect(&admin_url).await;
        let admin = admin.unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
        let drop = format!("DROP DATABASE IF EXISTS {name}");
        let create = format!("CREATE DATABASE {name}");
        for statement in [drop, create] {
            let done = admin.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))).await;
            done.unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    });
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
    format!("{base}/{name}")
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
    cluster.wait_for_status(&id, "FINISHED", TIMEOUT);

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
