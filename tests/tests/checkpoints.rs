//! Checkpoints: the coordinator triggers them, barriers flow and align, every task writes its snapshot, and
//! the JobManager records, retains and deletes them.
//!
//! Goal: with checkpointing on, a running job completes checkpoint after checkpoint; each completed one is
//! a directory with one snapshot file per task holding the operators' state; only `retained` of them stay on
//! disk; a user can trigger one through the REST API; the history and metrics show them; cancelling the job
//! leaves no file behind. A task that cannot snapshot declines, and a job whose checkpoints keep failing
//! fails once past its tolerance, naming the cause.
//!
//! Method: an unbounded, rate-limited generator with a wall-clock event time feeds a keyed tumbling window
//! at parallelism 2 on two TaskManagers (so window tasks have two input channels and align). The test polls
//! the REST API and the checkpoint directory with deadlines and decodes snapshot files itself (header,
//! length, checksum, protobuf) rather than through the TaskManager's code.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde_json::{json, Value};
use sluice_common::proto::{KeyedChunk, TaskSnapshot};
use sluice_tests::s3::{S3Server, BUCKET};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobId, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(60);
const RETAINED: usize = 2;

fn windowed_job(name: &str, checkpointing: Value) -> Value {
    json!({
        "name": name,
        "config": {"checkpointing": checkpointing},
        "vertices": [
            {"id": "lines", "parallelism": 2, "event_time": {"column": "ts", "monotonous": {}},
             "datagen": {"seed": 7, "rows_per_second": 2000.0, "batch_size": 100,
                "columns": [{"name": "line", "words": {"min_words": 1, "max_words": 3}}, {"name": "ts", "wall_clock": {}}]}},
            {"id": "split", "parallelism": 2, "flat_map": {"column": "line", "output_column": "word"}},
            {"id": "lower", "parallelism": 2, "select": {"columns": [{"name": "word", "expr": "lower(word)"}, {"name": "ts", "expr": "ts"}]}},
            {"id": "count", "parallelism": 2, "window": {"keys": ["word"], "tumbling": {"size_ms": 60000},
                "aggregates": [{"function": "count", "name": "count"}]}},
            {"id": "sink", "parallelism": 2, "blackhole_sink": {}}
        ],
        "edges": [
            {"from": "lines", "to": "split"},
            {"from": "split", "to": "lower"},
            {"from": "lower", "to": "count", "partitioning": "HASH", "key": ["word"]},
            {"from": "count", "to": "sink"}
        ]
    })
}

fn checkpoints(cluster: &Cluster, job: &JobId) -> Value {
    cluster.get(&format!("/jobs/{}/checkpoints", job.0))
}

fn job_dir(cluster: &Cluster, job: &JobId) -> PathBuf {
    cluster.dir().join("jobmanager").join("checkpoints").join(&job.0)
}

/// The ids of the `chk-N` directories under a job's checkpoint directory.
fn checkpoint_dirs(dir: &Path) -> BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()).collect()
}

/// Decodes a snapshot file by its documented layout: "SLUICESN", version 2, records (kind, length, body:
/// 1 = the task's header, 2 = a chunk of keyed entries), then a trailer (0xFF, record count, CRC-32C).
fn read_snapshot(path: &Path) -> (TaskSnapshot, Vec<KeyedChunk>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 25, "{} is too short", path.display());
    assert_eq!(&bytes[..8], b"SLUICESN", "{}: magic", path.display());
    assert_eq!(u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]), 2, "format version");
    let end = bytes.len() - 13;
    assert_eq!(bytes[end], 0xFF, "{}: trailer", path.display());
    let (mut at, mut header, mut chunks) = (12, None, Vec::new());
    while at < end {
        let length = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]) as usize;
        let body = &bytes[at + 5..at + 5 + length];
        match bytes[at] {
            1 => header = Some(TaskSnapshot::decode(body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))),
            2 => chunks.push(KeyedChunk::decode(body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))),
            kind => panic!("{}: record kind {kind}", path.display()),
        }
        at += 5 + length;
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&bytes[end + 1..end + 9]);
    assert_eq!(u64::from_be_bytes(count), 1 + chunks.len() as u64, "{}: record count", path.display());
    (header.unwrap_or_else(|| panic!("{}: no header", path.display())), chunks)
}

fn completed_ids(history: &Value, discarded: bool) -> BTreeSet<u64> {
    let entries = history["history"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .filter(|c| c["status"] == "COMPLETED" && c["discarded"].as_bool() == Some(discarded))
        .filter_map(|c| c["id"].as_u64())
        .collect()
}

#[test]
fn periodic_checkpoints_complete_are_retained_and_deleted_on_cancel() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let job = windowed_job("checkpointed", json!({"interval_ms": 200, "retained": RETAINED}));
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);

    let summary = poll_until("four completed checkpoints", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        if answer["counts"]["completed"].as_u64().unwrap_or(0) >= 4 {
            Ok(Progress::Ready(answer))
        } else {
            Ok(Progress::Pending(answer.to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let latest = &summary["latest"]["completed"];
    let location = PathBuf::from(latest["location"].as_str().unwrap_or_else(|| panic!("no location: {summary}")));
    assert!(location.starts_with(job_dir(&cluster, &id)), "{location:?}");
    assert!(latest["state_size_bytes"].as_u64().unwrap_or(0) > 0, "{summary}");
    for field in ["end_to_end_duration_ms", "alignment_ms", "sync_ms", "async_ms", "state_size_bytes"] {
        assert!(summary["summary"][field]["max"].is_u64(), "summary.{field} missing: {summary}");
    }
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");

    // The latest completed checkpoint may already be deleted by retention; take one that is kept.
    let kept = poll_until("a retained checkpoint on disk", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        let on_disk = checkpoint_dirs(&job_dir(&cluster, &id));
        match completed_ids(&answer, false).into_iter().rev().find(|c| on_disk.contains(c)) {
            Some(kept) => Ok(Progress::Ready(kept)),
            None => Ok(Progress::Pending(format!("{on_disk:?} / {answer}"))),
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Every task (2 source chains + 2 window chains) wrote a snapshot; the windows hold keyed state.
    let dir = job_dir(&cluster, &id).join(format!("chk-{kept}"));
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "_metadata"))
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    let metadata: Value =
        serde_json::from_slice(&std::fs::read(dir.join("_metadata")).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("_metadata: {e}"));
    assert_eq!(metadata["checkpoint_id"], kept, "{metadata}");
    assert_eq!(metadata["files"].as_array().map(Vec::len), Some(4), "{metadata}");
    let decoded: Vec<(TaskSnapshot, Vec<KeyedChunk>)> = files.iter().map(|f| read_snapshot(f)).collect();
    let snapshots: Vec<&TaskSnapshot> = decoded.iter().map(|(s, _)| s).collect();
    assert!(snapshots.iter().all(|s| s.checkpoint_id == kept && s.job_id == id.0));
    let sources: Vec<&&TaskSnapshot> = snapshots.iter().filter(|s| s.operators[0].vertex_id == "lines").collect();
    assert_eq!(sources.len(), 2);
    for source in sources {
        let position = &source.operators[0].source_position;
        assert_eq!(position.len(), 8, "datagen's position is its next row index");
    }
    let window_entries: usize = decoded
        .iter()
        .flat_map(|(header, chunks)| {
            chunks.iter().filter(|c| header.operators.get(c.operator as usize).is_some_and(|o| o.vertex_id == "count"))
        })
        .map(|chunk| chunk.keys.len())
        .sum();
    assert!(window_entries > 0, "the windows' state is in the snapshots");

    // Retention: on disk, only the `RETAINED` newest completed checkpoints (and perhaps one in progress).
    poll_until("retention to delete older checkpoints", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        let on_disk = checkpoint_dirs(&job_dir(&cluster, &id));
        let kept = completed_ids(&answer, false);
        let in_progress: BTreeSet<u64> = answer["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "IN_PROGRESS")
            .filter_map(|c| c["id"].as_u64())
            .collect();
        let expected: BTreeSet<u64> = kept.union(&in_progress).copied().collect();
        let discarded = completed_ids(&answer, true);
        if kept.len() == RETAINED && on_disk.is_subset(&expected) && discarded.iter().all(|d| !on_disk.contains(d)) {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(format!("on disk {on_disk:?}, kept {kept:?}, in progress {in_progress:?}")))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // A checkpoint on request: 202 with its id (409 while another is in flight), then it completes.
    let requested = poll_until("a triggered checkpoint", TIMEOUT, || {
        let answer = cluster.request(reqwest::Method::POST, &format!("/jobs/{}/checkpoints", id.0), None);
        match (answer.status, answer.body["checkpoint_id"].as_u64()) {
            (202, Some(checkpoint)) => Ok(Progress::Ready(checkpoint)),
            (409, _) => Ok(Progress::Pending(answer.body.to_string())),
            _ => anyhow::bail!("unexpected answer {} {}", answer.status, answer.body),
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    poll_until("the triggered checkpoint to complete", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        let entry = answer["history"].as_array().into_iter().flatten().find(|c| c["id"] == requested).cloned();
        match entry {
            Some(entry) if entry["status"] == "COMPLETED" => Ok(Progress::Ready(())),
            Some(entry) if entry["status"] == "FAILED" => anyhow::bail!("checkpoint {requested} failed: {entry}"),
            other => Ok(Progress::Pending(format!("{other:?}"))),
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    let metrics = cluster.job_manager_metrics();
    assert!(metrics.contains(&format!("checkpoint_duration_seconds_count{{job=\"{}\"}}", id.0)), "{metrics}");
    let task_manager_metrics = cluster.task_manager_metrics(0) + &cluster.task_manager_metrics(1);
    assert!(
        task_manager_metrics.lines().any(|l| l.starts_with("state_size_bytes{") && l.contains("operator=\"count\"")),
        "no state_size_bytes for the window: {task_manager_metrics}"
    );

    // Cancelling deletes every checkpoint of the job.
    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
    let dir = job_dir(&cluster, &id);
    poll_until("the job's checkpoints to be deleted", TIMEOUT, || {
        if dir.exists() {
            Ok(Progress::Pending(format!("{:?}", checkpoint_dirs(&dir))))
        } else {
            Ok(Progress::Ready(()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let after = checkpoints(&cluster, &id);
    assert!(completed_ids(&after, false).is_empty(), "all recorded as discarded: {after}");
    assert_eq!(after["counts"]["in_progress"], 0, "{after}");
}

/// Past its tolerance, failing checkpoints fail the attempt; the restart strategy (here: one fixed-delay
/// restart) restarts it, the new attempt's tolerance starts over, and it fails the same way.
#[test]
fn checkpoints_that_keep_failing_fail_the_job_past_its_tolerance() {
    // Snapshots cannot be written under a path that goes through a file: every task declines.
    let spec = ClusterSpec::default().env("CHECKPOINT_DIR", "/dev/null/checkpoints");
    let mut cluster = Cluster::start(spec);
    let mut job = windowed_job("cannot checkpoint", json!({"interval_ms": 100, "tolerable_failures": 1}));
    job["config"]["restart_strategy"] = json!({"strategy": "FIXED_DELAY", "attempts": 1, "delay_ms": 100});
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Failed, TIMEOUT);
    let details = cluster.job(&id);
    let cause = details["failure_cause"].as_str().unwrap_or_default();
    assert!(cause.contains("2 consecutive checkpoints failed"), "{details}");
    assert!(cause.contains("fixed-delay restart strategy: all 1 restarts used"), "{details}");
    assert_eq!(details["restarts"], 1, "{details}");
    assert_eq!(details["attempt"], 2, "{details}");
    assert!(cause.contains("cannot write the snapshot") && cause.contains("/dev/null/checkpoints"), "{details}");
    let answer = checkpoints(&cluster, &id);
    // Two per attempt.
    assert_eq!(answer["counts"]["failed"], 4, "{answer}");
    assert_eq!(answer["counts"]["completed"], 0, "{answer}");
    let failure = answer["latest"]["failed"]["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("declined"), "{answer}");
}

#[test]
fn bad_checkpoint_settings_are_refused_by_name() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    let job = windowed_job("bad", json!({"interval_ms": 1, "max_concurrent": 3, "retained": 0}));
    let answer = cluster.request(reqwest::Method::POST, "/jobs/submit", Some(&job));
    assert_eq!(answer.status, 400, "{}", answer.body);
    let message = answer.body["error"].as_str().unwrap_or_default();
    for field in ["checkpointing.interval_ms", "checkpointing.max_concurrent", "checkpointing.retained"] {
        assert!(message.contains(field), "{field} not named: {message}");
    }
    let unknown = windowed_job("unknown", json!({"interval_ms": 100, "every": 3}));
    let answer = cluster.request(reqwest::Method::POST, "/jobs/submit", Some(&unknown));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap_or_default().contains("every"), "{}", answer.body);
    assert!(cluster.get("/jobs")["jobs"].as_array().is_some_and(Vec::is_empty), "nothing was stored");
}

/// Checkpoints that expire under back-pressure (their barriers stuck behind data) are aborted, and what the
/// slow tasks still write for them afterwards is swept away: the files on disk come back down to the checkpoint
/// in flight and a couple of late writes, never a pile of aborted ones that stays.
///
/// The back-pressure is built, not hoped for: about 4,000 words a second go over a network edge to a sink
/// that takes 200 a second, so once the edge's buffers are full every barrier waits behind seconds of data,
/// whatever the speed of the machine or of the checkpoint trigger.
#[test]
fn expired_checkpoints_leave_no_files_behind() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let mut job = windowed_job("slow", json!({"interval_ms": 50, "timeout_ms": 10, "tolerable_failures": 100000}));
    job["vertices"][3] = json!({"id": "sink", "parallelism": 2, "blackhole_sink": {"rows_per_second": 200.0}});
    if let Some(vertices) = job["vertices"].as_array_mut() {
        vertices.truncate(4);
    }
    job["edges"] = json!([
        {"from": "lines", "to": "split"},
        {"from": "split", "to": "lower"},
        {"from": "lower", "to": "sink", "partitioning": "HASH", "key": ["word"]}
    ]);
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    poll_until("ten expired checkpoints", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        let failed = answer["counts"]["failed"].as_u64().unwrap_or(0);
        if failed >= 10 {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(answer["latest"].to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let answer = checkpoints(&cluster, &id);
    let failure = answer["latest"]["failed"]["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("expired after 10 ms"), "{answer}");
    // The janitor deletes behind the coordinator, so on a loaded machine a few more directories than that may
    // exist for a moment; what must never happen is a pile that stays. Checkpoints keep expiring meanwhile, so a
    // broken sweep would never get back down to the one in flight and a couple of late writes.
    poll_until("the aborted checkpoints' files to be swept", TIMEOUT, || {
        let on_disk = checkpoint_dirs(&job_dir(&cluster, &id));
        Ok(if on_disk.len() <= 3 { Progress::Ready(()) } else { Progress::Pending(format!("on disk: {on_disk:?}")) })
    })
    .unwrap_or_else(|e| panic!("aborted checkpoints left files: {e:#}"));
    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
    let dir = job_dir(&cluster, &id);
    poll_until("the job's checkpoint directory to go", TIMEOUT, || {
        if dir.exists() {
            Ok(Progress::Pending(format!("{:?}", checkpoint_dirs(&dir))))
        } else {
            Ok(Progress::Ready(()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Every file (relative path) under `dir`, recursively; none when it does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap_or(&path).display().to_string());
            }
        }
    }
    out
}

fn count(answer: &Value, what: &str) -> u64 {
    answer["counts"][what].as_u64().unwrap_or(0)
}

/// Checkpoints in S3 (an s3s-fs server of the test's own; metadata in PostgreSQL): they complete there; while
/// the server is down they are declined and the job keeps running; once it is back the next one completes;
/// retention keeps `retained` in the bucket and cancel leaves no file of the job behind.
#[test]
fn an_s3_outage_declines_checkpoints_and_the_next_succeeds_once_it_is_back() {
    let mut s3 = S3Server::start_in_temp_dir().unwrap_or_else(|e| panic!("{e:#}"));
    let database = sluice_tests::postgres::fresh_database("sluice_s3_outage");
    let prefix = format!("s3://{BUCKET}/sluice");
    let spec = ClusterSpec::default().env("DATABASE_URL", &database).env("S3_CHECKPOINT_PATH", &prefix).envs(s3.env());
    let mut cluster = Cluster::start(spec);
    let checkpointing = json!({"interval_ms": 300, "retained": RETAINED, "tolerable_failures": 1000});
    let mut job = windowed_job("checkpoints in s3", checkpointing);
    // On RocksDB: incremental checkpoints, with shared files in the bucket.
    job["config"]["state_backend"] = json!("ROCKSDB");
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    let job_dir = s3.local_path(&format!("{prefix}/{}", id.0));

    let summary = poll_until("two completed checkpoints in S3", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        if count(&answer, "completed") >= 2 {
            Ok(Progress::Ready(answer))
        } else {
            Ok(Progress::Pending(answer.to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let location = summary["latest"]["completed"]["location"].as_str().unwrap_or_default();
    assert!(location.starts_with(&format!("{prefix}/{}/chk-", id.0)), "{summary}");
    assert!(!cluster.dir().join("jobmanager").join("checkpoints").exists(), "nothing goes to the local directory");
    assert!(!files_under(&job_dir.join("shared")).is_empty(), "SST files are shared in the bucket");

    s3.stop();
    let failed_before = count(&checkpoints(&cluster, &id), "failed");
    let failed = poll_until("a checkpoint to fail while S3 is down", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        if count(&answer, "failed") > failed_before {
            Ok(Progress::Ready(answer))
        } else {
            Ok(Progress::Pending(answer.to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let failure = failed["latest"]["failed"]["failure"].as_str().unwrap_or_default();
    assert!(failure.contains(&prefix), "the failure names the storage: {failed}");
    assert_eq!(cluster.job(&id)["status"], "RUNNING", "the job keeps running through the outage");
    let completed_during = count(&checkpoints(&cluster, &id), "completed");

    s3.start_again().unwrap_or_else(|e| panic!("{e:#}"));
    poll_until("a checkpoint to complete once S3 is back", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        if count(&answer, "completed") > completed_during {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(answer.to_string()))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(cluster.job(&id)["status"], "RUNNING");

    // Retention in the bucket: only the retained checkpoints (and perhaps one in progress) remain, the
    // files of the ones that failed during the outage included.
    poll_until("only retained checkpoints in the bucket", TIMEOUT, || {
        let answer = checkpoints(&cluster, &id);
        let kept = completed_ids(&answer, false);
        // s3s-fs leaves a deleted prefix's folders behind: a checkpoint is in the bucket if it has files.
        let on_storage: BTreeSet<u64> = checkpoint_dirs(&job_dir)
            .into_iter()
            .filter(|c| !files_under(&job_dir.join(format!("chk-{c}"))).is_empty())
            .collect();
        let newest = answer["history"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_u64()).max();
        let allowed: BTreeSet<u64> = kept.iter().copied().chain(newest).collect();
        if kept.len() == RETAINED && on_storage.is_subset(&allowed) {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(format!("in the bucket {on_storage:?}, retained {kept:?}")))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
    poll_until("the job's files to be deleted from the bucket", TIMEOUT, || {
        let left = files_under(&job_dir);
        if left.is_empty() {
            Ok(Progress::Ready(()))
        } else {
            Ok(Progress::Pending(format!("{left:?}")))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}
