//! A slow sink slows the source down through credit-based flow control, and memory stays bounded.
//!
//! Goal: the pressure of a slow consumer walks back across TaskManagers to an unthrottled source, so that
//! what is in flight — in bytes at every input gate, and in the processes' resident memory — stays within
//! the configured bounds however long the job runs; and a job under backpressure can still be cancelled.
//!
//! Method: an unbounded, unthrottled datagen (parallelism 1) feeds two blackhole sinks paced at
//! [`SINK_ROWS_PER_SECOND`] each through a REBALANCE edge, on two TaskManagers of one slot each (SPREAD), so
//! one sink is local to the source and the other is reached over TCP. Small network buffers make the bounds
//! tight. For [`OBSERVATION`] the test samples, about once a second:
//! - the source's `records_out` (from `GET /jobs/{id}/metrics`), which must stay below what the sinks can
//!   have consumed since submission plus what the network can hold ([`IN_FLIGHT_ROWS_ALLOWANCE`]) — an
//!   unthrottled source would be orders of magnitude above;
//! - each TaskManager's `input_gate_in_flight_bytes` gauges, which must stay below their
//!   `input_gate_in_flight_bytes_max`, itself within the bound the settings imply;
//! - each TaskManager's resident memory (`VmRSS`), which must not grow by more than
//!   [`RSS_GROWTH_ALLOWANCE_BYTES`] from the first sample to the last.
//!
//! It also proves it exercised the path (bytes crossed TCP, the sinks kept consuming), cancels the job and
//! expects CANCELED, and finally checks that the task metrics show the source back-pressured more than
//! busy, which is how an operator would find the cause.
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{memory, prometheus, Cluster, ClusterSpec, JobId, JobStatus};

/// Pace of each of the two sink subtasks.
const SINK_ROWS_PER_SECOND: u64 = 1_000;
const SINK_PARALLELISM: u64 = 2;
/// Rows per generated batch.
const BATCH_ROWS: u64 = 256;

/// Network settings of the TaskManagers, small so that the bounds are tight.
const BUFFER_SIZE_BYTES: u64 = 4096;
const CREDIT_INITIAL: u64 = 2;
const BUFFER_POOL_SIZE: u64 = 4;
const OUTPUT_QUEUE_BUFFERS: u64 = 4;

/// Rows that may sit between the source and the sinks at any instant, per channel: the sender's output
/// queue, the receiver's credits (exclusive and floating), the buffer being filled and the one being
/// consumed, each holding at most one batch or one buffer's worth of rows (a row is at least 8 bytes: its
/// INT64 column). Doubled for the heartbeat lag between the source's and the sinks' reported counters.
const IN_FLIGHT_ROWS_ALLOWANCE: u64 = {
    let buffers_per_channel = OUTPUT_QUEUE_BUFFERS + CREDIT_INITIAL + BUFFER_POOL_SIZE + 2;
    let rows_per_buffer = if BATCH_ROWS > BUFFER_SIZE_BYTES / 8 { BATCH_ROWS } else { BUFFER_SIZE_BYTES / 8 };
    2 * SINK_PARALLELISM * buffers_per_channel * rows_per_buffer
};

/// The largest in-flight byte bound a sink's gate may have: one input channel's exclusive credits plus the
/// floating pool, in buffers of [`BUFFER_SIZE_BYTES`].
const GATE_IN_FLIGHT_BYTES_BOUND: u64 = (CREDIT_INITIAL + BUFFER_POOL_SIZE) * BUFFER_SIZE_BYTES;

/// How long the job is watched under backpressure.
const OBSERVATION: Duration = Duration::from_secs(8);
/// The measurement cadence during [`OBSERVATION`] (sampling a rate, not waiting for an event).
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Growth of a TaskManager's resident memory tolerated over the observation: allocator noise and lazily
/// touched pages. Unbounded buffering at an unthrottled source's rate would exceed it within a second.
const RSS_GROWTH_ALLOWANCE_BYTES: u64 = 48 * 1024 * 1024;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long cancelling may take. Well under the JobManager's default `CANCEL_TIMEOUT` (30 s), after which
/// it closes the job as CANCELED even if tasks never confirmed: a cancel that only "succeeds" that way
/// leaves a task running on a TaskManager, and must fail this test.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

fn backpressure_job() -> Value {
    json!({
        "name": "backpressure_test",
        "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 1, "batch_size": BATCH_ROWS, "columns": [
                {"name": "n", "sequence": {"start": 0}},
                {"name": "word", "words": {"vocabulary": ["x", "y", "z"], "min_words": 1, "max_words": 1}}]}},
            {"id": "sink", "parallelism": SINK_PARALLELISM, "blackhole_sink": {"rows_per_second": SINK_ROWS_PER_SECOND}}
        ],
        "edges": [{"from": "gen", "to": "sink", "partitioning": "REBALANCE"}],
        "config": {"placement": "SPREAD", "buffer_timeout_ms": 5}
    })
}

/// One vertex's totals from `GET /jobs/{id}/metrics`.
fn vertex_total(metrics: &Value, id: &str, counter: &str) -> u64 {
    metrics["vertices"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["id"] == id))
        .and_then(|v| v[counter].as_u64())
        .unwrap_or(0)
}

/// The task (subtask of a chain) whose chain starts with vertex `id`, summed over subtasks.
fn task_total(metrics: &Value, head: &str, counter: &str) -> u64 {
    metrics["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter(|t| t["vertex_ids"].get(0).is_some_and(|v| v == head))
                .filter_map(|t| t[counter].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Checks the input gate of every sink subtask of `job` on TaskManager `index`: in flight ≤ its max ≤ the
/// configured bound. Returns the number of gates seen. (The source has no input gate.)
fn check_in_flight_bytes(cluster: &Cluster, index: usize, job: &JobId) -> usize {
    let text = cluster.task_manager_metrics(index);
    let parse = |name| prometheus::samples(&text, name).unwrap_or_else(|e| panic!("{e:#}"));
    let (values, maxima) = (parse("input_gate_in_flight_bytes"), parse("input_gate_in_flight_bytes_max"));
    let mut gates = 0;
    for value in values.iter().filter(|s| s.label("job") == job.0 && s.label("task").starts_with("sink")) {
        let max = maxima
            .iter()
            .find(|m| m.labels == value.labels)
            .unwrap_or_else(|| panic!("no input_gate_in_flight_bytes_max for {:?}", value.labels))
            .value;
        assert!(max > 0.0, "gate {:?} has no bound", value.labels);
        assert!(
            max <= GATE_IN_FLIGHT_BYTES_BOUND as f64,
            "gate {:?}: bound {max} > {GATE_IN_FLIGHT_BYTES_BOUND}",
            value.labels
        );
        assert!(value.value <= max, "gate {:?}: {} bytes in flight > its bound {max}", value.labels, value.value);
        gates += 1;
    }
    gates
}

#[test]
fn a_slow_sink_throttles_an_unthrottled_source_across_task_managers_with_bounded_memory() {
    let spec = ClusterSpec { task_managers: 2, slots: 1, ..ClusterSpec::default() }
        .env("BUFFER_SIZE", BUFFER_SIZE_BYTES)
        .env("CREDIT_INITIAL", CREDIT_INITIAL)
        .env("BUFFER_POOL_SIZE", BUFFER_POOL_SIZE)
        .env("OUTPUT_QUEUE_BUFFERS", OUTPUT_QUEUE_BUFFERS);
    let mut cluster = Cluster::start(spec);
    let submitted = Instant::now();
    let job = cluster.submit_json(&backpressure_job());
    cluster.wait_for_status(&job, JobStatus::Running, START_TIMEOUT);

    let sink_rate = (SINK_ROWS_PER_SECOND * SINK_PARALLELISM) as f64;
    let pids = [cluster.task_manager_pid(0), cluster.task_manager_pid(1)];
    let rss = |pid| memory::rss_bytes(pid).unwrap_or_else(|e| panic!("{e:#}"));
    let first_rss: Vec<u64> = pids.iter().map(|&pid| rss(pid)).collect();
    let observation_start = Instant::now();
    let first = cluster.job_metrics(&job);
    let mut gates_seen = 0;
    let mut last = first.clone();
    while observation_start.elapsed() < OBSERVATION {
        std::thread::sleep(SAMPLE_INTERVAL);
        last = cluster.job_metrics(&job);
        let source_out = vertex_total(&last, "gen", "records_out");
        let bound = sink_rate * submitted.elapsed().as_secs_f64() + IN_FLIGHT_ROWS_ALLOWANCE as f64;
        assert!(
            (source_out as f64) <= bound,
            "the source emitted {source_out} rows after {:.1?}, more than the sinks' {sink_rate} rows/s plus \
             {IN_FLIGHT_ROWS_ALLOWANCE} rows in flight allow ({bound:.0}): it was not slowed down",
            submitted.elapsed()
        );
        gates_seen =
            gates_seen.max(check_in_flight_bytes(&cluster, 0, &job) + check_in_flight_bytes(&cluster, 1, &job));
    }
    let last_rss: Vec<u64> = pids.iter().map(|&pid| rss(pid)).collect();

    // The path was covered: the sinks kept consuming, data crossed TCP, and both sink gates reported their
    // in-flight bytes.
    let window = observation_start.elapsed().as_secs_f64();
    let consumed = vertex_total(&last, "sink", "records_in") - vertex_total(&first, "sink", "records_in");
    assert!(
        consumed as f64 >= 0.5 * sink_rate * window,
        "the sinks consumed only {consumed} rows in {window:.1} s: {last}"
    );
    let emitted = vertex_total(&last, "gen", "records_out") - vertex_total(&first, "gen", "records_out");
    assert!(
        emitted as f64 <= sink_rate * window + IN_FLIGHT_ROWS_ALLOWANCE as f64,
        "the source emitted {emitted} rows in {window:.1} s against a sink rate of {sink_rate} rows/s"
    );
    assert!(task_total(&last, "gen", "remote_bytes_out") > 0, "no bytes crossed TCP: {last}");
    assert_eq!(gates_seen, SINK_PARALLELISM as usize, "every sink subtask's gate should report its in-flight bytes");

    for ((pid, before), after) in pids.iter().zip(&first_rss).zip(&last_rss) {
        assert!(
            *after <= before + RSS_GROWTH_ALLOWANCE_BYTES,
            "TaskManager pid {pid} grew from {before} to {after} bytes resident in {window:.1} s"
        );
    }
    let backpressured_ms = task_total(&last, "gen", "backpressured_ms");
    let busy_ms = task_total(&last, "gen", "busy_ms");
    eprintln!(
        "backpressure: source emitted {emitted} rows, sinks consumed {consumed} in {window:.1} s; source \
         back-pressured {backpressured_ms} ms, busy {busy_ms} ms; RSS {first_rss:?} -> {last_rss:?}"
    );

    // A job under backpressure can be cancelled, promptly, and leaves no task running anywhere (a source
    // blocked on credit that its cancelled consumers will never send must still stop).
    cluster.cancel(&job);
    cluster.wait_for_status(&job, JobStatus::Canceled, CANCEL_TIMEOUT);
    for index in 0..cluster.task_manager_count() {
        let result = poll_until(&format!("no task running on tm-{index}"), CANCEL_TIMEOUT, || {
            let text = cluster.task_manager_metrics(index);
            let running = prometheus::samples(&text, "tasks_running")?;
            Ok(match running.first() {
                Some(sample) if sample.value == 0.0 => Progress::Ready(()),
                other => Progress::Pending(format!("tasks_running = {other:?}")),
            })
        });
        result.unwrap_or_else(|e| panic!("{e:#}"));
    }

    // The metrics tell the operator why: an unthrottled source facing slow sinks spends most of its time
    // waiting for credit, not working (Flink's busy / back-pressured / idle model).
    assert!(backpressured_ms > busy_ms, "the source should be back-pressured more than busy: {last}");
}
