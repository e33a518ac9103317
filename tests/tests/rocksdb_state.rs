//! Keyed state larger than memory: a RocksDB job with 10 million distinct keys completes, and its
//! TaskManager's memory stays far below the size of its state.
//!
//! Method: one TaskManager with `STATE_BACKEND=rocksdb` and small RocksDB memory settings runs datagen
//! (10 million distinct ids) → HASH by id → deduplicate (a TTL longer than the run, so every id stays in
//! state) → blackhole. Every record is new, so all 10 million are emitted (checked through the job's
//! metrics), and the state holds one entry per id: at least 31 bytes each (a 6-byte key-group and length
//! prefix, 9 bytes of key in Arrow's row format, an 8-byte expiry and an 8-byte time), over 300 MB in all.
//! The TaskManager's peak resident memory (VmHWM) must stay under half of that.
use std::time::Duration;

use serde_json::json;
use sluice_tests::{memory, Cluster, ClusterSpec, JobStatus};

const KEYS: u64 = 10_000_000;
/// The least state the job holds, in bytes (see the module doc).
const STATE_BYTES_AT_LEAST: u64 = KEYS * 31;
const JOB_TIMEOUT: Duration = Duration::from_secs(900);

#[test]
fn ten_million_keys_on_rocksdb_complete_with_memory_far_below_the_state_size() {
    let mut cluster = Cluster::start(
        ClusterSpec { task_managers: 1, slots: 1, ..ClusterSpec::default() }
            .env("STATE_BACKEND", "rocksdb")
            .env("ROCKSDB_WRITE_BUFFER_SIZE", 16 << 20)
            .env("ROCKSDB_MAX_WRITE_BUFFERS", 2)
            .env("ROCKSDB_BLOCK_CACHE_SIZE", 16 << 20),
    );
    let job = cluster.submit_json(&json!({
        "name": "ten_million_keys",
        "vertices": [
            {"id": "ids", "parallelism": 1, "datagen": {"seed": 7, "rows": KEYS, "batch_size": 8192,
                "columns": [{"name": "id", "sequence": {"start": 0}}]}},
            {"id": "dedup", "parallelism": 1, "deduplicate": {"keys": ["id"], "ttl_ms": 86_400_000}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [
            {"from": "ids", "to": "dedup", "partitioning": "HASH", "key": ["id"]},
            {"from": "dedup", "to": "sink"}
        ]
    }));
    let finished = cluster.wait_for_status(&job, JobStatus::Finished, JOB_TIMEOUT);
    assert_eq!(finished["status"], "FINISHED");

    let details = cluster.job(&job);
    let vertices = details["vertices"].as_array().cloned().unwrap_or_default();
    let dedup = vertices.iter().find(|v| v["id"] == "dedup").unwrap_or_else(|| panic!("no dedup vertex: {details}"));
    assert_eq!(dedup["records_in"], KEYS, "every id reached the deduplication: {dedup}");
    assert_eq!(dedup["records_out"], KEYS, "every id is new, so every record is kept: {dedup}");

    let peak = memory::peak_rss_bytes(cluster.task_manager_pid(0)).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("TaskManager peak RSS {} MiB; state at least {} MiB", peak >> 20, STATE_BYTES_AT_LEAST >> 20);
    assert!(
        peak < STATE_BYTES_AT_LEAST / 2,
        "TaskManager peak RSS {} MiB is not far below the state's {} MiB",
        peak >> 20,
        STATE_BYTES_AT_LEAST >> 20
    );
}
