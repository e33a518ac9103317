//! The Kafka connector against a real broker (nisshi, started by each test): the source's offsets live in
//! checkpoints (a killed TaskManager rewinds it, a savepoint resumes it exactly), undecodable records go to
//! the dead-letter topic, and the seed's word count runs from its job file with per-partition watermarks.
//!
//! Exactly-once end to end is proven through the exactly-once file sink: the source's rewind to the
//! checkpointed offsets is what makes the committed output complete and free of repeats. (The Kafka sink's
//! transactions are tested against librdkafka's mock cluster: nisshi refuses transactional producers.)
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::kafka::{KafkaBroker, KeyValue, Record};
use sluice_tests::sink::{part_files, read_rows};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobId, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(90);

fn broker() -> KafkaBroker {
    KafkaBroker::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn produce_ids(broker: &KafkaBroker, topic: &str, partitions: i32, ids: std::ops::Range<u64>) {
    let values: Vec<String> = ids.map(|i| json!({"id": i}).to_string()).collect();
    broker.produce(topic, partitions, &values, |_| None).unwrap_or_else(|e| panic!("{e:#}"));
}

/// The `id`s committed by the file sink in `dir`, in order of appearance (repeats kept).
fn committed_ids(dir: &Path) -> Vec<u64> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut ids = Vec::new();
    for file in part_files(dir).unwrap_or_default() {
        for row in read_rows(&file).unwrap_or_default() {
            ids.extend(row.get("id").and_then(Value::as_u64));
        }
    }
    ids
}

fn wait_for_ids(dir: &Path, at_least: usize) -> Vec<u64> {
    poll_until(&format!("{at_least} committed records"), TIMEOUT, || {
        let ids = committed_ids(dir);
        Ok(if ids.len() >= at_least { Progress::Ready(ids) } else { Progress::Pending(format!("{}", ids.len())) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn assert_exactly(ids: &[u64], expected: std::ops::Range<u64>) {
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "some records were committed twice");
    assert_eq!(distinct, expected.collect::<BTreeSet<u64>>(), "records are missing or foreign");
}

/// `examples/jobs/word_count_kafka.json`, unchanged but for its brokers.
fn example_job(kafka: &KafkaBroker) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/jobs/word_count_kafka.json")).expect("the example job");
    let mut job: Value = serde_json::from_str(&text).expect("the example is JSON");
    for vertex in job["vertices"].as_array_mut().expect("vertices") {
        for kind in ["kafka_source", "kafka_sink"] {
            if vertex.get(kind).is_some() {
                vertex[kind]["bootstrap_servers"] = json!(kafka.bootstrap_servers());
            }
        }
    }
    job
}

/// Waits until the job restarted at least once and runs again; returns its details.
fn wait_for_restart(cluster: &Cluster, id: &JobId) -> Value {
    poll_until("the restart", TIMEOUT, || {
        let details = cluster.job(id);
        anyhow::ensure!(details["status"] != "FAILED", "the job failed: {details}");
        let restarted = details["restarts"].as_u64().unwrap_or(0) >= 1 && details["status"] == "RUNNING";
        Ok(if restarted { Progress::Ready(details) } else { Progress::Pending(details["status"].to_string()) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Kafka → exactly-once file sink, checkpointing every 200 ms.
fn kafka_to_files(bootstrap: &str, parallelism: u32, sink: &str) -> Value {
    json!({
        "name": "kafka-to-files",
        "config": {"checkpointing": {"interval_ms": 200}},
        "vertices": [
            {"id": "src", "parallelism": parallelism, "kafka_source": {
                "bootstrap_servers": bootstrap, "topics": ["in"],
                "schema": [{"name": "id", "type": "INT64"}],
                "partition_discovery_interval_ms": 500}},
            {"id": "sink", "parallelism": parallelism, "file_sink": {"path": sink}}
        ],
        "edges": [{"from": "src", "to": "sink"}]
    })
}

/// A TaskManager killed mid-stream: the job restarts from its latest checkpoint, the source rewinds to the
/// offsets in it, and the committed output holds every record exactly once. The consumer group gets the
/// offsets of completed checkpoints (for lag monitoring).
#[test]
fn a_killed_taskmanager_rewinds_the_source_to_its_checkpoint_and_nothing_is_lost_or_repeated() {
    let kafka = broker();
    kafka.create_topic("in", 3).unwrap_or_else(|e| panic!("{e:#}"));
    produce_ids(&kafka, "in", 3, 0..3000);
    let mut cluster = Cluster::start(ClusterSpec::default());
    let sink = cluster.dir().join("out");
    let id = cluster.submit_json(&kafka_to_files(&kafka.bootstrap_servers(), 2, &sink.display().to_string()));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    wait_for_ids(&sink, 3000);

    cluster.kill_task_manager(1);
    produce_ids(&kafka, "in", 3, 3000..6000);
    cluster.restart_task_manager(1);
    let details = wait_for_restart(&cluster, &id);
    assert!(details["restored_checkpoint"].is_u64(), "the restart restored no checkpoint: {details}");

    let ids = wait_for_ids(&sink, 6000);
    assert_exactly(&ids, 0..6000);

    // The group's offsets follow completed checkpoints: eventually every record is committed.
    poll_until("the consumer group offsets", TIMEOUT, || {
        let committed = kafka.committed("sluice-src", "in", 3)?;
        let total: i64 = committed.values().sum();
        Ok(if total == 6000 { Progress::Ready(()) } else { Progress::Pending(format!("{committed:?}")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The example's word count (10 s windows on the Kafka timestamp, at-least-once Kafka sink) with a TaskManager
/// killed mid-run: the job restarts from a checkpoint, the sources rewind to its offsets (the restarted
/// subtasks are assigned their partitions at those offsets, not at the start), and every window of every word
/// reaches the output with its full count (a window emitted twice carries the same count).
#[test]
fn a_killed_taskmanager_loses_no_word_of_the_kafka_word_count() {
    let kafka = broker();
    kafka.create_topic("input-text", 2).unwrap_or_else(|e| panic!("{e:#}"));
    kafka.create_topic("word-count-output", 2).unwrap_or_else(|e| panic!("{e:#}"));
    let job = example_job(&kafka);
    // Line i at base + 100 ms × i: 4000 lines over 400 s of event time, 40 windows.
    let base = 1_700_000_000_000_i64;
    let line = |i: usize| format!("w{} v{}", i % 7, (i * 3) % 5);
    let produce = |range: std::ops::Range<usize>| {
        let values: Vec<String> = range.clone().map(line).collect();
        let start = range.start;
        kafka
            .produce("input-text", 2, &values, |k| Some(base + (start + k) as i64 * 100))
            .unwrap_or_else(|e| panic!("{e:#}"));
    };
    produce(0..2000);
    let mut cluster = Cluster::start(ClusterSpec::default());
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    kafka.read_all("word-count-output", TIMEOUT, |r| !r.is_empty()).unwrap_or_else(|e| panic!("{e:#}"));
    poll_until("a completed checkpoint", TIMEOUT, || {
        let completed =
            cluster.get(&format!("/jobs/{}/checkpoints", id.0))["counts"]["completed"].as_u64().unwrap_or(0);
        Ok(if completed >= 2 { Progress::Ready(()) } else { Progress::Pending(format!("{completed}")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    cluster.kill_task_manager(1);
    produce(2000..4000);
    cluster.restart_task_manager(1);
    let details = wait_for_restart(&cluster, &id);
    assert!(details["restored_checkpoint"].is_u64(), "the restart restored no checkpoint: {details}");

    // Every window that the last watermark (last timestamp - 1 s) closes, per word.
    let last = base + 3999 * 100;
    let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for i in 0..4000 {
        let start = (base + i as i64 * 100) / 10_000 * 10_000;
        if start + 10_000 <= last - 1000 {
            for word in line(i).split_whitespace() {
                *expected.entry((start, word.to_string())).or_default() += 1;
            }
        }
    }
    let out = kafka
        .read_all("word-count-output", TIMEOUT, |records| {
            let keys: BTreeSet<(i64, String)> = records.iter().filter_map(window_key).collect();
            expected.keys().all(|k| keys.contains(k))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut counted: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for record in &out {
        let (key, count) = window_count(record);
        if let Some(before) = counted.insert(key.clone(), count) {
            assert_eq!(before, count, "window {key:?} emitted twice with different counts");
        }
    }
    counted.retain(|k, _| expected.contains_key(k));
    assert_eq!(counted, expected);

    // The rewind: after the restart, sources were assigned their partitions at checkpointed offsets (> 0).
    let logs: String = (0..cluster.task_manager_count())
        .map(|tm| std::fs::read_to_string(cluster.dir().join(format!("tm-{tm}.log"))).unwrap_or_default())
        .collect();
    let offsets: Vec<i64> = logs
        .lines()
        .filter(|l| l.contains("assigned a Kafka partition"))
        .filter_map(|l| l.split("offset=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        offsets.iter().any(|&o| o > 0 && o < 2000),
        "no partition was assigned at a checkpointed offset: {offsets:?}"
    );
}

fn window_key(record: &Record) -> Option<(i64, String)> {
    let row: Value = serde_json::from_slice(&record.value).ok()?;
    let start = chrono::NaiveDateTime::parse_from_str(row["window_start"].as_str()?, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some((start.and_utc().timestamp_millis(), row["word"].as_str()?.to_string()))
}

fn window_count(record: &Record) -> ((i64, String), i64) {
    let key = window_key(record).unwrap_or_else(|| panic!("not a window row: {}", record.text()));
    let row: Value = serde_json::from_slice(&record.value).unwrap_or_else(|e| panic!("{e}"));
    (key, row["count"].as_i64().unwrap_or_else(|| panic!("no count: {}", record.text())))
}

/// Partition discovery: a topic of the source that does not exist when the job starts is skipped (the
/// others are read), and once created its partitions are found by the periodic discovery and read from their
/// beginning. (nisshi cannot add partitions to an existing topic; a new topic is the same path: partitions
/// the source did not know.)
#[test]
fn a_topic_created_while_the_job_runs_is_discovered_and_read_from_its_start() {
    let kafka = broker();
    kafka.create_topic("in", 2).unwrap_or_else(|e| panic!("{e:#}"));
    produce_ids(&kafka, "in", 2, 0..100);
    let mut cluster = Cluster::start(ClusterSpec::default());
    let sink = cluster.dir().join("out");
    let mut job = kafka_to_files(&kafka.bootstrap_servers(), 2, &sink.display().to_string());
    job["vertices"][0]["kafka_source"]["topics"] = json!(["in", "later"]);
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    wait_for_ids(&sink, 100);

    kafka.create_topic("later", 3).unwrap_or_else(|e| panic!("{e:#}"));
    produce_ids(&kafka, "later", 3, 100..400);
    let ids = wait_for_ids(&sink, 400);
    assert_exactly(&ids, 0..400);
}

/// A job stopped with a savepoint and started from it (at another parallelism) continues at the offsets
/// of the savepoint: the two runs' outputs together hold every record once.
#[test]
fn a_savepoint_resumes_the_source_exactly_where_it_stopped_at_another_parallelism() {
    let kafka = broker();
    kafka.create_topic("in", 4).unwrap_or_else(|e| panic!("{e:#}"));
    produce_ids(&kafka, "in", 4, 0..2000);
    let mut cluster = Cluster::start(ClusterSpec::default());
    let first = cluster.dir().join("out-1");
    let second = cluster.dir().join("out-2");
    let bootstrap = kafka.bootstrap_servers();
    let id = cluster.submit_json(&kafka_to_files(&bootstrap, 2, &first.display().to_string()));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    wait_for_ids(&first, 2000);

    let savepoint = cluster.stop_with_savepoint(&id, TIMEOUT);

    produce_ids(&kafka, "in", 4, 2000..5000);
    let job = kafka_to_files(&bootstrap, 3, &second.display().to_string());
    let answer =
        cluster.request(reqwest::Method::POST, &format!("/jobs/submit?savepoint_path={savepoint}"), Some(&job));
    let resumed =
        JobId(answer.body["job_id"].as_str().unwrap_or_else(|| panic!("not submitted: {}", answer.body)).to_string());
    cluster.wait_for_status(&resumed, JobStatus::Running, TIMEOUT);
    let after = wait_for_ids(&second, 3000);

    let mut all = committed_ids(&first);
    assert_eq!(all.len(), 2000, "run 1 committed more than it read before the savepoint");
    all.extend(after);
    assert_exactly(&all, 0..5000);
}

/// A bounded job from `start_from`: TIMESTAMP starts every partition at its first record at or after the
/// time, COMMITTED at the group's committed offsets (earliest where it has none); both finish at the end
/// offsets of their start.
#[test]
fn bounded_jobs_start_from_a_timestamp_or_the_committed_offsets_and_finish() {
    let kafka = broker();
    kafka.create_topic("in", 2).unwrap_or_else(|e| panic!("{e:#}"));
    let base = 1_700_000_000_000_i64;
    let values: Vec<String> = (0..200u64).map(|i| json!({"id": i}).to_string()).collect();
    // Record i on partition i mod 2 at base + i seconds.
    kafka.produce("in", 2, &values, |i| Some(base + i as i64 * 1000)).unwrap_or_else(|e| panic!("{e:#}"));
    let committed: BTreeMap<i32, i64> = [(0, 30)].into_iter().collect();
    kafka.commit("resume-group", "in", &committed).unwrap_or_else(|e| panic!("{e:#}"));

    let mut cluster = Cluster::start(ClusterSpec::default());
    let run = |cluster: &mut Cluster, name: &str, start: Value| -> Vec<u64> {
        let sink = cluster.dir().join(name);
        let mut source = json!({
            "bootstrap_servers": kafka.bootstrap_servers(), "topics": ["in"], "bounded": true,
            "schema": [{"name": "id", "type": "INT64"}]});
        for (key, value) in start.as_object().into_iter().flatten() {
            source[key] = value.clone();
        }
        let job = json!({
            "name": name,
            "vertices": [
                {"id": "src", "parallelism": 2, "kafka_source": source},
                {"id": "sink", "parallelism": 1, "file_sink": {"path": sink.display().to_string()}}
            ],
            "edges": [{"from": "src", "to": "sink"}]
        });
        let id = cluster.submit_json(&job);
        cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);
        committed_ids(&sink)
    };

    let from_time =
        run(&mut cluster, "from-time", json!({"start_from": "TIMESTAMP", "start_timestamp_ms": base + 150_000}));
    assert_exactly(&from_time, 150..200);
    // Partition 0 from offset 30 (record 60 on), partition 1 (no committed offset) from its beginning.
    let from_group = run(&mut cluster, "from-group", json!({"start_from": "COMMITTED", "group_id": "resume-group"}));
    let mut expected: Vec<u64> = (0..200).filter(|i| i % 2 == 1 || *i >= 60).collect();
    expected.sort_unstable();
    let mut got = from_group.clone();
    got.sort_unstable();
    assert_eq!(got, expected);
}

/// Records that do not decode go to the dead-letter topic with their bytes and origin headers; the job keeps
/// running and the good records reach the output topic through the at-least-once Kafka sink.
#[test]
fn undecodable_records_go_to_the_dead_letter_topic_and_the_job_keeps_running() {
    let kafka = broker();
    for topic in ["in", "out", "dead"] {
        kafka.create_topic(topic, 2).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let bad = |i: u64| i % 10 == 3;
    let values: Vec<String> =
        (0..500u64).map(|i| if bad(i) { format!("not json {i}") } else { json!({"id": i}).to_string() }).collect();
    kafka.produce("in", 2, &values, |_| None).unwrap_or_else(|e| panic!("{e:#}"));
    let mut cluster = Cluster::start(ClusterSpec::default());
    let job = json!({
        "name": "dead-letters",
        "config": {"checkpointing": {"interval_ms": 200}},
        "vertices": [
            {"id": "src", "parallelism": 2, "kafka_source": {
                "bootstrap_servers": kafka.bootstrap_servers(), "topics": ["in"],
                "schema": [{"name": "id", "type": "INT64"}],
                "on_bad_record": "DEAD_LETTER", "dead_letter_topic": "dead"}},
            {"id": "sink", "parallelism": 2, "kafka_sink": {
                "bootstrap_servers": kafka.bootstrap_servers(), "topic": "out", "key_column": "id"}}
        ],
        "edges": [{"from": "src", "to": "sink"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);

    let expected_bad: BTreeSet<u64> = (0..500).filter(|&i| bad(i)).collect();
    let dead = kafka.read_all("dead", TIMEOUT, |r| r.len() >= expected_bad.len()).unwrap_or_else(|e| panic!("{e:#}"));
    let mut seen = BTreeSet::new();
    for record in &dead {
        let i: u64 = record.text().trim_start_matches("not json ").parse().unwrap_or_else(|_| panic!("{record:?}"));
        seen.insert(i);
        let header = |k: &str| record.headers.get(k).cloned().unwrap_or_else(|| panic!("no header {k}: {record:?}"));
        assert_eq!(header("sluice.source.topic"), "in");
        // The producer put record i on partition i mod 2, at offset i / 2.
        assert_eq!(header("sluice.source.partition"), (i % 2).to_string());
        assert_eq!(header("sluice.source.offset"), (i / 2).to_string());
        assert!(!header("sluice.error").is_empty());
    }
    assert_eq!(seen, expected_bad, "dead letters");

    let good: BTreeSet<u64> = (0..500).filter(|&i| !bad(i)).collect();
    let out = kafka.read_all("out", TIMEOUT, |r| r.len() >= good.len()).unwrap_or_else(|e| panic!("{e:#}"));
    let ids: BTreeSet<u64> = out.iter().map(output_id).collect();
    assert_eq!(ids, good, "the output topic");
    assert!(out.iter().all(|r| r.key.as_deref() == Some(output_id(r).to_string().as_bytes())), "keys from key_column");

    assert_eq!(cluster.job(&id)["status"], "RUNNING");
    let dead_lettered: f64 = (0..cluster.task_manager_count())
        .flat_map(|tm| {
            sluice_tests::prometheus::samples(&cluster.task_manager_metrics(tm), "kafka_bad_records_total")
                .unwrap_or_else(|e| panic!("{e:#}"))
        })
        .filter(|s| s.labels.get("action").map(String::as_str) == Some("dead_lettered"))
        .map(|s| s.value)
        .sum();
    assert_eq!(dead_lettered as usize, expected_bad.len(), "kafka_bad_records_total{{action=dead_lettered}}");
}

/// The sum over every TaskManager of the samples of `name` for `job` whose labels include `labels`.
fn kafka_metric(cluster: &Cluster, name: &str, job: &JobId, labels: &[(&str, &str)]) -> u64 {
    let mut sum = 0.0;
    for tm in 0..cluster.task_manager_count() {
        let samples = sluice_tests::prometheus::samples(&cluster.task_manager_metrics(tm), name)
            .unwrap_or_else(|e| panic!("{e:#}"));
        sum += samples
            .iter()
            .filter(|s| s.label("job") == job.0 && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
            .sum::<f64>();
    }
    sum as u64
}

/// Format BYTES: values that are not text (and binary keys, some absent, and tombstones) go through a job
/// unchanged. The
/// records and bytes written count per output partition, as the broker placed them, and the records read per
/// input partition; the job's Kafka series leave the TaskManagers' /metrics once it ends.
#[test]
fn raw_bytes_pass_through_unchanged_and_records_count_per_partition_both_ways() {
    let kafka = broker();
    kafka.create_topic("in", 2).unwrap_or_else(|e| panic!("{e:#}"));
    kafka.create_topic("out", 3).unwrap_or_else(|e| panic!("{e:#}"));
    let keys: Vec<Option<Vec<u8>>> = (0..600u32).map(|i| (i % 5 != 0).then(|| vec![0x80, (i % 7) as u8])).collect();
    // Every 10th keyed record is a tombstone (no value).
    let values: Vec<Option<Vec<u8>>> =
        (0..600u32).map(|i| (i % 10 != 9).then(|| vec![i as u8, 0xff, 0x00, b'\n', (i >> 8) as u8])).collect();
    let records: Vec<KeyValue<'_>> = keys.iter().zip(&values).map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
    kafka.produce_keyed("in", 2, &records, |_| None).unwrap_or_else(|e| panic!("{e:#}"));

    let mut cluster = Cluster::start(ClusterSpec::default());
    let bootstrap = kafka.bootstrap_servers();
    let id = cluster.submit_json(&json!({
        "name": "bytes",
        "config": {"checkpointing": {"interval_ms": 200}},
        "vertices": [
            {"id": "src", "parallelism": 2, "kafka_source": {
                "bootstrap_servers": bootstrap, "topics": ["in"], "format": "BYTES", "key_column": "k",
                "schema": [{"name": "payload", "type": "BINARY", "nullable": true}, {"name": "k", "type": "BINARY", "nullable": true}]}},
            {"id": "sink", "parallelism": 2, "kafka_sink": {
                "bootstrap_servers": bootstrap, "topic": "out", "format": "BYTES", "key_column": "k"}}
        ],
        "edges": [{"from": "src", "to": "sink"}]
    }));
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);

    let out = kafka.read_all("out", TIMEOUT, |r| r.len() >= records.len()).unwrap_or_else(|e| panic!("{e:#}"));
    type Owned = (Option<Vec<u8>>, Option<Vec<u8>>);
    let mut written: Vec<Owned> =
        out.iter().map(|r| (r.key.clone(), (!r.tombstone).then(|| r.value.clone()))).collect();
    let mut expected: Vec<Owned> = keys.into_iter().zip(values).collect();
    written.sort();
    expected.sort();
    assert!(
        written == expected,
        "the output differs from the input: {} records, {} expected",
        written.len(),
        expected.len()
    );

    // Each output partition's count and bytes, as the broker placed the records (the sink lets librdkafka
    // pick: by key hash, keyless ones spread).
    let mut per_partition: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for record in &out {
        let entry = per_partition.entry(record.partition).or_default();
        entry.0 += 1;
        entry.1 += (record.key.as_ref().map_or(0, Vec::len) + record.value.len()) as u64;
    }
    assert!(per_partition.len() > 1, "the records landed in one partition: {per_partition:?}");
    poll_until("the per-partition Kafka counters", TIMEOUT, || {
        let mut counted = BTreeMap::new();
        for partition in 0..3 {
            let p = partition.to_string();
            let labels = [("topic", "out"), ("partition", p.as_str())];
            let records = kafka_metric(&cluster, "kafka_records_out_total", &id, &labels);
            let bytes = kafka_metric(&cluster, "kafka_bytes_out_total", &id, &labels);
            if records > 0 {
                counted.insert(partition, (records, bytes));
            }
        }
        let read: Vec<u64> = (0..2)
            .map(|p| {
                kafka_metric(&cluster, "kafka_records_in_total", &id, &[("topic", "in"), ("partition", &p.to_string())])
            })
            .collect();
        let done = counted == per_partition && read == [300, 300];
        Ok(if done { Progress::Ready(()) } else { Progress::Pending(format!("out {counted:?}, in {read:?}")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
    poll_until("the job's Kafka series to go", TIMEOUT, || {
        let left: Vec<String> = (0..cluster.task_manager_count())
            .flat_map(|tm| sluice_tests::prometheus::parse(&cluster.task_manager_metrics(tm)).unwrap_or_default())
            .filter(|s| s.name.starts_with("kafka_") && s.label("job") == id.0)
            .map(|s| s.name)
            .collect();
        Ok(if left.is_empty() { Progress::Ready(()) } else { Progress::Pending(format!("{left:?}")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}

fn output_id(record: &Record) -> u64 {
    let value: Value = serde_json::from_slice(&record.value).unwrap_or_else(|e| panic!("{e}: {record:?}"));
    value["id"].as_u64().unwrap_or_else(|| panic!("no id: {record:?}"))
}

/// The seed's flagship job from its file: lines from `input-text` (two partitions, one of them empty, so
/// windows close only because that partition is idle), word counts per 10 s event-time window (the Kafka
/// timestamp) into `word-count-output`.
#[test]
fn the_kafka_word_count_example_counts_every_word_per_window() {
    let kafka = broker();
    kafka.create_topic("input-text", 2).unwrap_or_else(|e| panic!("{e:#}"));
    kafka.create_topic("word-count-output", 1).unwrap_or_else(|e| panic!("{e:#}"));
    let job = example_job(&kafka);
    // Lines in three 10 s windows, all on partition 0; then one line far later pushes the watermark past them.
    let base = 1_700_000_000_000_i64;
    let lines = [
        (0, "the quick brown fox"),
        (4_000, "the lazy dog"),
        (12_000, "quick quick"),
        (25_000, "fox"),
        (90_000, "end"),
    ];
    let values: Vec<String> = lines.iter().map(|(_, l)| l.to_string()).collect();
    kafka.produce("input-text", 1, &values, |i| Some(base + lines[i].0)).unwrap_or_else(|e| panic!("{e:#}"));

    let mut cluster = Cluster::start(ClusterSpec::default());
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, TIMEOUT);
    let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for (at, line) in &lines[..4] {
        for word in line.split_whitespace() {
            *expected.entry(((base + at) / 10_000 * 10_000, word.to_string())).or_default() += 1;
        }
    }
    let out =
        kafka.read_all("word-count-output", TIMEOUT, |r| r.len() >= expected.len()).unwrap_or_else(|e| panic!("{e:#}"));
    let mut counted = BTreeMap::new();
    for record in &out {
        let row: Value = serde_json::from_slice(&record.value).unwrap_or_else(|e| panic!("{e}: {record:?}"));
        let start = chrono::DateTime::parse_from_rfc3339(&format!("{}Z", row["window_start"].as_str().unwrap_or("")))
            .map(|t| t.timestamp_millis())
            .or_else(|_| row["window_start"].as_i64().ok_or(()))
            .unwrap_or_else(|_| panic!("window_start: {row}"));
        let word = row["word"].as_str().unwrap_or_else(|| panic!("word: {row}")).to_string();
        counted.insert((start, word), row["count"].as_i64().unwrap_or_else(|| panic!("count: {row}")));
    }
    assert_eq!(counted, expected, "job: {}", cluster.job(&id));
}
