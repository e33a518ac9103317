//! The event-time examples (`examples/jobs/{windowed_word_count, windowed_aggregation, stateful_deduplication,
//! session_windows}.json`) give the answers a naive implementation computes from their sample inputs.
//!
//! Goal: event time, watermarks, windows (tumbling, sliding, session), allowed lateness with its "late" side
//! output, and keyed deduplication behave as documented, across processes, at any parallelism, and
//! independently of arrival order within the out-of-orderness bound.
//!
//! Method: each job file is submitted as shipped (its keyed vertices' parallelism rewritten to 1, 4 and 2,
//! the last run on the RocksDB state backend) on a JobManager with 2 TaskManagers, over a copy of its sample input in the cluster's directory.
//! The expected rows are computed here in plain Rust, record by record, straight from the definitions (a
//! window is `[start, start + size)`, a session closes `gap` after its last record, a repeat is a record less
//! than the TTL after the last emitted one of its id). For the example with allowed lateness, the naive code
//! replays the source's watermark after every batch of 50 records, which the job asks for
//! (`watermark_interval_ms: 0`), so which records are late is determined by the input. The golden files in
//! `examples/expected/` are checked against the same naive results (`UPDATE_GOLDEN=1` rewrites them).
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use sluice_tests::{sink, Cluster, ClusterSpec, JobId, JobStatus};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Each example runs at these (parallelism of its keyed vertices, state backend): both backends, and more
/// than one parallelism, must give the naive answer.
const RUNS: [(u32, &str); 3] = [(1, "heap"), (4, "heap"), (2, "rocksdb")];
/// The characters the word-count examples strip from both ends of a word.
const TRIMMED: &[char] = &['.', ',', ';', ':', '!', '?', '"', '(', ')', '\'', '-'];

fn examples_dir() -> PathBuf {
    // At run time when cargo or nextest says (the target dir is shared between checkouts), else as compiled.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.join("..").join("examples")
}

fn read_jsonl(text: &str) -> Vec<Map<String, Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(row)) => row,
            other => panic!("not a JSON object: {line} ({other:?})"),
        })
        .collect()
}

fn sample(name: &str) -> String {
    let path = examples_dir().join("data").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn int(row: &Map<String, Value>, column: &str) -> i64 {
    match row.get(column) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_else(|| panic!("{column} is not an integer: {n}")),
        Some(Value::String(s)) => s.parse().unwrap_or_else(|_| timestamp_ms(s)),
        other => panic!("column {column} missing or not a number in {row:?}: {other:?}"),
    }
}

fn float(row: &Map<String, Value>, column: &str) -> f64 {
    row.get(column).and_then(Value::as_f64).unwrap_or_else(|| panic!("column {column} is not a number in {row:?}"))
}

/// A float with 6 decimals, or "null".
fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "null".to_string(), |v| format!("{v:.6}"))
}

fn string<'a>(row: &'a Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or_else(|| panic!("column {column} is not a string in {row:?}"))
}

/// Arrow's JSON form of a TIMESTAMP_MS value ("2023-11-14T22:13:20" or with ".123") as milliseconds.
fn timestamp_ms(text: &str) -> i64 {
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("not a timestamp: {text} ({e})"));
    parsed.and_utc().timestamp_millis()
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_else(|| panic!("{ms} ms is out of range"))
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string()
}

/// Runs an example job file on a fresh cluster over its sample input, with `parallelism` for the listed
/// vertices, and returns the cluster (for metrics) and where its sinks write.
struct Run {
    cluster: Cluster,
    job: JobId,
}

impl Run {
    fn start(example: &str, inputs: &[(&str, &str)], parallelism: Option<(u32, &[&str])>, backend: &str) -> Run {
        Self::start_on(ClusterSpec::default(), example, inputs, parallelism, backend)
    }

    /// [`Run::start`] on a cluster started from `spec`.
    fn start_on(
        spec: ClusterSpec,
        example: &str,
        inputs: &[(&str, &str)],
        parallelism: Option<(u32, &[&str])>,
        backend: &str,
    ) -> Run {
        let mut cluster = Cluster::start(spec.env("STATE_BACKEND", backend));
        let data_dir = cluster.dir().join("examples").join("data");
        std::fs::create_dir_all(&data_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        for (name, contents) in inputs {
            std::fs::write(data_dir.join(name), contents).unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
        }
        let path = examples_dir().join("jobs").join(format!("{example}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut job: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some((p, vertices)) = parallelism {
            for vertex in job["vertices"].as_array_mut().into_iter().flatten() {
                if vertices.contains(&vertex["id"].as_str().unwrap_or_default()) {
                    vertex["parallelism"] = p.into();
                }
            }
        }
        let job = cluster.submit_json(&job);
        cluster.wait_for_status(&job, JobStatus::Finished, JOB_TIMEOUT);
        Run { cluster, job }
    }

    fn rows(&self, sink: &str) -> Vec<Map<String, Value>> {
        let dir = self.cluster.dir().join("data").join("output").join(sink);
        let mut rows = Vec::new();
        for file in sink::part_files(&dir).unwrap_or_else(|e| panic!("{e:#}")) {
            rows.extend(sink::read_rows(&file).unwrap_or_else(|e| panic!("{e:#}")));
        }
        rows
    }

    /// The total of a vertex counter over the job's subtasks, from `GET /jobs/{id}`.
    fn vertex_total(&self, vertex: &str, counter: &str) -> u64 {
        let job = self.cluster.job(&self.job);
        let vertices = job["vertices"].as_array().cloned().unwrap_or_default();
        let found = vertices.iter().find(|v| v["id"] == vertex).unwrap_or_else(|| panic!("no vertex {vertex}: {job}"));
        found[counter].as_u64().unwrap_or_else(|| panic!("vertex {vertex} has no {counter}: {found}"))
    }
}

/// Window results keyed by "key|start|end": the last row per window (a window fired again after a late record
/// supersedes its earlier result), as "key|start|end|values...".
fn last_per_window(
    rows: &[Map<String, Value>],
    key: &str,
    values: &dyn Fn(&Map<String, Value>) -> String,
) -> Vec<String> {
    let mut latest = BTreeMap::new();
    for row in rows {
        let window = format!("{}|{}|{}", string(row, key), int(row, "window_start"), int(row, "window_end"));
        latest.insert(window.clone(), format!("{window}|{}", values(row)));
    }
    latest.into_values().collect()
}

// ---------------------------------------------------------------------------------------------------
// windowed_word_count: 10 s tumbling windows, counts > 5.
// ---------------------------------------------------------------------------------------------------

fn naive_word_count(lines: &str) -> Vec<String> {
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for row in read_jsonl(lines) {
        let ts = int(&row, "ts");
        let start = ts - ts.rem_euclid(10_000);
        for word in string(&row, "line").split_whitespace() {
            let word = word.trim_matches(TRIMMED).to_lowercase();
            if !word.is_empty() {
                *counts.entry((word, start)).or_insert(0) += 1;
            }
        }
    }
    let mut rows: Vec<String> = counts
        .into_iter()
        .filter(|(_, count)| *count > 5)
        .map(|((word, start), count)| format!("{word}|{start}|{}|{count}", start + 10_000))
        .collect();
    rows.sort();
    rows
}

fn word_count_rows(run: &Run) -> Vec<String> {
    last_per_window(&run.rows("windowed_word_count"), "word", &|row| int(row, "count").to_string())
}

#[test]
fn windowed_word_count_matches_a_naive_count_at_any_parallelism_on_both_backends() {
    let lines = sample("lines.jsonl");
    let expected = naive_word_count(&lines);
    assert!(expected.len() > 20, "the sample should fill several windows with frequent words: {expected:?}");
    for (p, backend) in RUNS {
        let run = Run::start(
            "windowed_word_count",
            &[("lines.jsonl", &lines)],
            Some((p, &["count", "frequent", "sink"])),
            backend,
        );
        assert_eq!(word_count_rows(&run), expected, "parallelism {p}, {backend}");
        assert_eq!(run.vertex_total("count", "late_records"), 0, "nothing is late within the bound");
    }
}

#[test]
fn shuffling_within_the_out_of_orderness_bound_changes_nothing() {
    let lines = sample("lines.jsonl");
    let mut rows: Vec<&str> = lines.lines().collect();
    // Reverse every run of 4 lines: each line moves at most 3 places (900 ms of arrival time), so no timestamp
    // falls further behind the largest before it than 2 s + 0.9 s, inside the job's 5 s bound.
    for chunk in rows.chunks_mut(4) {
        chunk.reverse();
    }
    let shuffled = rows.join("\n") + "\n";
    assert_ne!(shuffled, lines);
    let run = Run::start("windowed_word_count", &[("lines.jsonl", &shuffled)], None, "heap");
    assert_eq!(word_count_rows(&run), naive_word_count(&lines));
}

// ---------------------------------------------------------------------------------------------------
// windowed_aggregation: 30 s windows every 10 s, 2 s bound, 5 s allowed lateness, late side output.
// ---------------------------------------------------------------------------------------------------

/// (window results "sensor|start|end|avg|min|max|count", late records "sensor|ts").
fn naive_sensor_stats(readings: &str) -> (Vec<String>, Vec<String>) {
    const SIZE: i64 = 30_000;
    const SLIDE: i64 = 10_000;
    const BOUND: i64 = 2_000;
    const LATENESS: i64 = 5_000;
    const BATCH: usize = 50;
    let rows = read_jsonl(readings);
    let mut windows: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    let mut late = Vec::new();
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    for batch in rows.chunks(BATCH) {
        for row in batch {
            let (sensor, ts, temperature) = (string(row, "sensor"), int(row, "ts"), float(row, "temperature"));
            let mut accepted = false;
            let mut start = ts - ts.rem_euclid(SLIDE);
            while start > ts - SIZE {
                let end = start + SIZE;
                // Kept until the watermark passes end - 1 + allowed lateness.
                if end - 1 + LATENESS > watermark {
                    windows.entry((sensor.to_string(), start)).or_default().push(temperature);
                    accepted = true;
                }
                start -= SLIDE;
            }
            if !accepted {
                late.push(format!("{sensor}|{ts}"));
            }
            max_ts = max_ts.max(ts);
        }
        watermark = watermark.max(max_ts - BOUND - 1);
    }
    let mut results: Vec<String> = windows
        .into_iter()
        .map(|((sensor, start), temperatures)| {
            let n = temperatures.len();
            let avg = temperatures.iter().sum::<f64>() / n as f64;
            let min = temperatures.iter().copied().fold(f64::INFINITY, f64::min);
            let max = temperatures.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // The sample standard deviation (null for one reading) and the median (the mean of the middle two
            // for an even count), as SQL defines them.
            let stddev =
                (n > 1).then(|| (temperatures.iter().map(|t| (t - avg).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
            let mut sorted = temperatures.clone();
            sorted.sort_by(f64::total_cmp);
            let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            format!("{sensor}|{start}|{}|{avg:.6}|{min:.6}|{max:.6}|{n}|{}|{median:.6}", start + SIZE, optional(stddev))
        })
        .collect();
    results.sort();
    late.sort();
    (results, late)
}

#[test]
fn windowed_aggregation_matches_naive_sliding_windows_and_sends_late_readings_aside() {
    let readings = sample("sensors.jsonl");
    let (expected, expected_late) = naive_sensor_stats(&readings);
    assert!(!expected_late.is_empty(), "the sample has readings beyond the allowed lateness");
    for (p, backend) in RUNS {
        let run =
            Run::start("windowed_aggregation", &[("sensors.jsonl", &readings)], Some((p, &["stats", "sink"])), backend);
        let actual = last_per_window(&run.rows("windowed_aggregation"), "sensor", &|row| {
            format!(
                "{:.6}|{:.6}|{:.6}|{}|{}|{:.6}",
                float(row, "avg_temperature"),
                float(row, "min_temperature"),
                float(row, "max_temperature"),
                int(row, "readings"),
                optional(row.get("stddev_temperature").and_then(Value::as_f64)),
                float(row, "median_temperature"),
            )
        });
        assert_eq!(actual, expected, "parallelism {p}, {backend}");
        let mut late: Vec<String> = run
            .rows("windowed_aggregation_late")
            .iter()
            .map(|row| format!("{}|{}", string(row, "sensor"), int(row, "ts")))
            .collect();
        late.sort();
        assert_eq!(late, expected_late, "parallelism {p}, {backend}: the late side output");
        assert_eq!(run.vertex_total("stats", "late_records"), expected_late.len() as u64, "the late-record counter");
    }
}

// ---------------------------------------------------------------------------------------------------
// stateful_deduplication: drop repeats of an id within 60 s.
// ---------------------------------------------------------------------------------------------------

fn naive_dedup(events: &str) -> Vec<String> {
    let mut rows: Vec<(i64, String, i64)> = read_jsonl(events)
        .iter()
        .map(|r| (int(r, "ts"), string(r, "event_id").to_string(), int(r, "amount")))
        .collect();
    rows.sort();
    let mut last_emitted: BTreeMap<String, i64> = BTreeMap::new();
    let mut kept = Vec::new();
    for (ts, id, amount) in rows {
        if last_emitted.get(&id).is_some_and(|&last| ts - last < 60_000) {
            continue;
        }
        last_emitted.insert(id.clone(), ts);
        kept.push(format!("{id}|{ts}|{amount}"));
    }
    kept.sort();
    kept
}

#[test]
fn stateful_deduplication_keeps_the_first_delivery_per_ttl_at_any_parallelism_on_both_backends() {
    let events = sample("events.jsonl");
    let expected = naive_dedup(&events);
    let deliveries = events.lines().count();
    assert!(expected.len() < deliveries, "the sample has repeats");
    let ids: BTreeSet<&str> = expected.iter().filter_map(|r| r.split('|').next()).collect();
    assert!(ids.len() < expected.len(), "and redeliveries after the TTL, which are kept");
    for (p, backend) in RUNS {
        let run =
            Run::start("stateful_deduplication", &[("events.jsonl", &events)], Some((p, &["dedup", "sink"])), backend);
        let mut actual: Vec<String> = run
            .rows("stateful_deduplication")
            .iter()
            .map(|r| format!("{}|{}|{}", string(r, "event_id"), int(r, "ts"), int(r, "amount")))
            .collect();
        actual.sort();
        assert_eq!(actual, expected, "parallelism {p}, {backend}");
    }
}

// ---------------------------------------------------------------------------------------------------
// session_windows: sessions with a 30 s gap.
// ---------------------------------------------------------------------------------------------------

fn naive_sessions(views: &str) -> Vec<String> {
    let mut by_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in read_jsonl(views) {
        by_user.entry(string(&row, "user").to_string()).or_default().push(int(&row, "ts"));
    }
    let mut sessions = Vec::new();
    for (user, mut times) in by_user {
        times.sort();
        let mut first = times[0];
        let mut last = times[0];
        let mut views = 0;
        for &t in &times {
            // Session windows [t, t + gap) that touch merge: a gap of exactly 30 s still joins.
            if t - last > 30_000 {
                sessions.push(format!("{user}|{first}|{}|{views}", last + 30_000));
                first = t;
                views = 0;
            }
            last = t;
            views += 1;
        }
        sessions.push(format!("{user}|{first}|{}|{views}", last + 30_000));
    }
    sessions.sort();
    sessions
}

/// Per session (as in [`naive_sessions`]): the time and page of its last view, "user|start|end|ts|page".
fn naive_session_exits(views: &str) -> Vec<String> {
    let mut by_user: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for row in read_jsonl(views) {
        by_user
            .entry(string(&row, "user").to_string())
            .or_default()
            .push((int(&row, "ts"), string(&row, "page").into()));
    }
    let mut exits = Vec::new();
    for (user, mut views) in by_user {
        views.sort();
        assert!(views.windows(2).all(|w| w[0].0 < w[1].0), "{user} has two views at one time: the last is ambiguous");
        let mut first = views[0].0;
        for (i, (t, page)) in views.iter().enumerate() {
            match views.get(i + 1) {
                Some((next, _)) if next - t <= 30_000 => {}
                _ => {
                    exits.push(format!("{user}|{first}|{}|{t}|{page}", t + 30_000));
                    if let Some((next, _)) = views.get(i + 1) {
                        first = *next;
                    }
                }
            }
        }
    }
    exits.sort();
    exits
}

#[test]
fn session_windows_match_naive_sessions_at_any_parallelism_on_both_backends() {
    let views = sample("page_views.jsonl");
    let expected = naive_sessions(&views);
    assert!(expected.len() >= 36, "12 users with 3 to 5 visits each: {expected:?}");
    for (p, backend) in RUNS {
        let run = Run::start(
            "session_windows",
            &[("page_views.jsonl", &views)],
            Some((p, &["sessions", "sink", "exits", "exits_sink"])),
            backend,
        );
        let actual = last_per_window(&run.rows("session_windows"), "user", &|row| int(row, "views").to_string());
        assert_eq!(actual, expected, "parallelism {p}, {backend}");
        let exits = last_per_window(&run.rows("session_exits"), "user", &|row| {
            format!("{}|{}", int(row, "ts"), string(row, "page"))
        });
        assert_eq!(exits, naive_session_exits(&views), "parallelism {p}, {backend}: the reducing window");
    }
}

// ---------------------------------------------------------------------------------------------------
// stream_join: orders with their payments within 30 s (interval join).
// ---------------------------------------------------------------------------------------------------

fn naive_interval_join(orders: &str, payments: &str) -> Vec<String> {
    let payments = read_jsonl(payments);
    let mut pairs = Vec::new();
    for order in read_jsonl(orders) {
        let (id, ts) = (string(&order, "order_id"), int(&order, "ts"));
        for payment in payments.iter().filter(|p| string(p, "order_id") == id) {
            let paid_at = int(payment, "paid_at");
            if ts <= paid_at && paid_at <= ts + 30_000 {
                pairs.push(format!("{id}|{ts}|{}|{paid_at}|{}", int(&order, "amount"), string(payment, "method")));
            }
        }
    }
    pairs.sort();
    pairs
}

#[test]
fn stream_join_pairs_orders_with_payments_within_the_bound_at_any_parallelism_on_both_backends() {
    let (orders, payments) = (sample("orders.jsonl"), sample("payments.jsonl"));
    let expected = naive_interval_join(&orders, &payments);
    assert!(expected.len() > 200 && expected.len() < orders.lines().count(), "some orders go unpaid or paid late");
    for (p, backend) in RUNS {
        let inputs = [("orders.jsonl", orders.as_str()), ("payments.jsonl", payments.as_str())];
        let run = Run::start("stream_join", &inputs, Some((p, &["paid_orders", "sink"])), backend);
        let mut actual: Vec<String> = run
            .rows("stream_join")
            .iter()
            .map(|r| {
                let (id, ts, amount) = (string(r, "order_id"), int(r, "ts"), int(r, "amount"));
                format!("{id}|{ts}|{amount}|{}|{}", int(r, "paid_at"), string(r, "method"))
            })
            .collect();
        actual.sort();
        assert_eq!(actual, expected, "parallelism {p}, {backend}");
    }
}

// ---------------------------------------------------------------------------------------------------
// stream_enrichment: clicks with the profile tier valid at click time (temporal join, left).
// ---------------------------------------------------------------------------------------------------

fn naive_temporal_join(clicks: &str, profiles: &str) -> Vec<String> {
    let profiles = read_jsonl(profiles);
    let mut rows = Vec::new();
    for click in read_jsonl(clicks) {
        let (user, ts) = (string(&click, "user"), int(&click, "ts"));
        let version = profiles
            .iter()
            .filter(|p| string(p, "user") == user && int(p, "updated_at") <= ts)
            .max_by_key(|p| int(p, "updated_at"));
        let (updated_at, tier) = match version {
            Some(p) => (int(p, "updated_at").to_string(), string(p, "tier").to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        rows.push(format!("{user}|{ts}|{}|{updated_at}|{tier}", string(&click, "page")));
    }
    rows.sort();
    rows
}

#[test]
fn stream_enrichment_joins_each_click_with_the_profile_valid_at_its_time_at_any_parallelism_on_both_backends() {
    let (clicks, profiles) = (sample("clicks.jsonl"), sample("profiles.jsonl"));
    let expected = naive_temporal_join(&clicks, &profiles);
    assert!(expected.iter().any(|r| r.ends_with("|-|-")), "some clicks come before their user's first profile");
    for (p, backend) in RUNS {
        let inputs = [("clicks.jsonl", clicks.as_str()), ("profiles.jsonl", profiles.as_str())];
        let run = Run::start("stream_enrichment", &inputs, Some((p, &["enrich", "sink"])), backend);
        let mut actual: Vec<String> = run
            .rows("stream_enrichment")
            .iter()
            .map(|r| {
                let nullable = |column: &str, read: &dyn Fn() -> String| match r.get(column) {
                    None | Some(Value::Null) => "-".to_string(),
                    Some(_) => read(),
                };
                let updated_at = nullable("updated_at", &|| int(r, "updated_at").to_string());
                let tier = nullable("tier", &|| string(r, "tier").to_string());
                format!("{}|{}|{}|{updated_at}|{tier}", string(r, "user"), int(r, "ts"), string(r, "page"))
            })
            .collect();
        actual.sort();
        assert_eq!(actual, expected, "parallelism {p}, {backend}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Golden files: what a user compares their run with.
// ---------------------------------------------------------------------------------------------------

/// The TaskManager binary of the examples crate that registers the native operator `fraud_detector`.
const CUSTOM_TASK_MANAGER: &str = "custom-taskmanager";

/// Per account, transactions in time order (ties by amount); a transaction under 1.00 immediately followed by
/// one over 500.00 at most 60 s later is an alert "account|small ts|large ts|amount".
fn naive_fraud(transactions: &str) -> Vec<String> {
    let mut by_account: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for row in read_jsonl(transactions) {
        by_account
            .entry(string(&row, "account").to_string())
            .or_default()
            .push((int(&row, "ts"), float(&row, "amount")));
    }
    let mut alerts = Vec::new();
    for (account, mut payments) in by_account {
        payments.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for pair in payments.windows(2) {
            let ((small_ts, small), (large_ts, large)) = (pair[0], pair[1]);
            if small < 1.0 && large > 500.0 && large_ts - small_ts <= 60_000 {
                alerts.push(format!("{account}|{small_ts}|{large_ts}|{large}"));
            }
        }
    }
    alerts.sort();
    alerts
}

#[test]
fn fraud_detection_runs_a_native_operator_with_state_and_timers_at_any_parallelism_on_both_backends() {
    let input = sample("transactions.jsonl");
    let expected = naive_fraud(&input);
    assert!(expected.len() >= 5, "the sample should raise several alerts: {expected:?}");
    for (p, backend) in RUNS {
        let spec = ClusterSpec::default().task_manager_binary(CUSTOM_TASK_MANAGER);
        let inputs = [("transactions.jsonl", input.as_str())];
        let run = Run::start_on(spec, "fraud_detection", &inputs, Some((p, &["detect"])), backend);
        let mut alerts: Vec<String> = run
            .rows("fraud_detection")
            .iter()
            .map(|r| {
                let (small, large) = (int(r, "small_ts"), int(r, "large_ts"));
                format!("{}|{small}|{large}|{}", string(r, "account"), float(r, "amount"))
            })
            .collect();
        alerts.sort();
        assert_eq!(alerts, expected, "parallelism {p}, {backend}");
    }
}

#[test]
fn a_taskmanager_without_the_native_operator_fails_the_job_with_a_clear_cause() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    // The input is there, so the missing operator is the only thing that can fail the job.
    let data_dir = cluster.dir().join("examples").join("data");
    std::fs::create_dir_all(&data_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
    std::fs::write(data_dir.join("transactions.jsonl"), sample("transactions.jsonl"))
        .unwrap_or_else(|e| panic!("cannot write the input: {e}"));
    let path = examples_dir().join("jobs").join("fraud_detection.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let job: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let job = cluster.submit_json(&job);
    cluster.wait_for_status(&job, JobStatus::Failed, JOB_TIMEOUT);
    let details = cluster.job(&job);
    let cause = details["failure_cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("no native operator 'fraud_detector'") && cause.contains("registers none"),
        "cause: {cause:?}"
    );
    // A configuration error: the same job would meet it again, so it is not restarted, and the exception
    // history says what kind of failure it was.
    assert!(cause.contains("not restarted: a CONFIGURATION error"), "cause: {cause:?}");
    assert_eq!(details["restarts"], 0, "{details}");
    let exceptions = cluster.get(&format!("/jobs/{}/exceptions", job.0));
    assert_eq!(exceptions["exceptions"][0]["failure_kind"], "CONFIGURATION", "{exceptions}");
}

/// Each golden file row as JSON, in the file sink's form (timestamps as Arrow writes them).
fn golden_rows() -> Vec<(&'static str, Vec<Value>)> {
    let split = |row: &str| row.split('|').map(str::to_string).collect::<Vec<_>>();
    let number = |s: &str| -> i64 { s.parse().unwrap_or_else(|_| panic!("not a number: {s}")) };
    let real = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("not a number: {s}")) };
    let word_count = naive_word_count(&sample("lines.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"word": f[0], "window_start": iso(number(&f[1])), "window_end": iso(number(&f[2])), "count": number(&f[3])})
        })
        .collect();
    let (stats, late) = naive_sensor_stats(&sample("sensors.jsonl"));
    let stats = stats
        .iter()
        .map(|r| {
            let f = split(r);
            let mut row = serde_json::json!({"sensor": f[0], "window_start": iso(number(&f[1])),
                "window_end": iso(number(&f[2])), "avg_temperature": real(&f[3]), "min_temperature": real(&f[4]),
                "max_temperature": real(&f[5]), "readings": number(&f[6]), "median_temperature": real(&f[8])});
            if f[7] != "null" {
                row["stddev_temperature"] = real(&f[7]).into();
            }
            row
        })
        .collect();
    let late = late
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"sensor": f[0], "ts": iso(number(&f[1]))})
        })
        .collect();
    let dedup = naive_dedup(&sample("events.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"event_id": f[0], "ts": iso(number(&f[1])), "amount": number(&f[2])})
        })
        .collect();
    let sessions = naive_sessions(&sample("page_views.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"user": f[0], "window_start": iso(number(&f[1])), "window_end": iso(number(&f[2])), "views": number(&f[3])})
        })
        .collect();
    let exits = naive_session_exits(&sample("page_views.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"user": f[0], "window_start": iso(number(&f[1])), "window_end": iso(number(&f[2])),
                "ts": iso(number(&f[3])), "page": f[4]})
        })
        .collect();
    let joined = naive_interval_join(&sample("orders.jsonl"), &sample("payments.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"order_id": f[0], "ts": iso(number(&f[1])), "amount": number(&f[2]),
                "paid_at": iso(number(&f[3])), "method": f[4]})
        })
        .collect();
    let enriched = naive_temporal_join(&sample("clicks.jsonl"), &sample("profiles.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            let (updated_at, tier) = if f[3] == "-" {
                (Value::Null, Value::Null)
            } else {
                (Value::String(iso(number(&f[3]))), Value::String(f[4].clone()))
            };
            serde_json::json!({"user": f[0], "ts": iso(number(&f[1])), "page": f[2], "updated_at": updated_at, "tier": tier})
        })
        .collect();
    let alerts = naive_fraud(&sample("transactions.jsonl"))
        .iter()
        .map(|r| {
            let f = split(r);
            serde_json::json!({"account": f[0], "small_ts": iso(number(&f[1])), "large_ts": iso(number(&f[2])),
                "amount": real(&f[3])})
        })
        .collect();
    vec![
        ("fraud_detection", alerts),
        ("stream_join", joined),
        ("stream_enrichment", enriched),
        ("windowed_word_count", word_count),
        ("windowed_aggregation", stats),
        ("windowed_aggregation_late", late),
        ("stateful_deduplication", dedup),
        ("session_windows", sessions),
        ("session_exits", exits),
    ]
}

#[test]
fn golden_files_hold_the_naive_results() {
    let dir = examples_dir().join("expected");
    for (name, rows) in golden_rows() {
        let path = dir.join(format!("{name}.jsonl"));
        let text: String = rows.iter().map(|r| r.to_string() + "\n").collect();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is stale: run `UPDATE_GOLDEN=1 cargo test -p sluice-tests --test event_time_examples golden`",
            path.display()
        );
    }
}
