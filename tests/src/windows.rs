//! The windowed job that exactly-once tests run, its expected output computed without the engine, and
//! readers of what its exactly-once file sink committed.
//!
//! A rate-limited generator of `n = 0..ROWS` with event time `START + n` ms feeds a tumbling one-second
//! window keyed by `n % 7` (count and sum of `n`) into a file sink. Every window must be committed exactly
//! once, with the right count and sum, however the run was interrupted.
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::sink::{as_u64, part_files, read_rows};

/// Rows the generator emits in all.
pub const ROWS: i64 = 24_000;
/// The generator's rate.
pub const ROWS_PER_SECOND: f64 = 3_000.0;
/// Event time of row 0.
pub const START: i64 = 1_700_000_000_000;
/// Distinct keys.
pub const KEYS: i64 = 7;
/// Window size.
pub const WINDOW_MS: i64 = 1_000;

/// (key, window start ms) → (rows, sum of n).
pub type Windows = BTreeMap<(i64, i64), (u64, i64)>;

/// Every value each window was committed with: (key, window start ms) → [(rows, sum of n)].
pub type WindowRows = BTreeMap<(i64, i64), Vec<(u64, i64)>>;

/// The job, windows at `window_parallelism`, state on `backend` (HEAP or ROCKSDB), output in `sink`.
pub fn job(backend: &str, window_parallelism: u32, sink: &Path) -> Value {
    let shape = Shape { rows: ROWS, rows_per_second: ROWS_PER_SECOND, source_parallelism: 2, window_parallelism };
    job_of(&shape, backend, sink)
}

/// The size and parallelism of a run of the job.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Rows generated in all.
    pub rows: i64,
    /// The generator's total rate.
    pub rows_per_second: f64,
    /// Generator (and key-selecting) subtasks.
    pub source_parallelism: u32,
    /// Window and sink subtasks.
    pub window_parallelism: u32,
}

/// The job of `shape`, state on `backend`, output in `sink`.
pub fn job_of(shape: &Shape, backend: &str, sink: &Path) -> Value {
    let Shape { rows, rows_per_second, source_parallelism, window_parallelism } = *shape;
    json!({
        "name": "savepointed windows",
        "config": {"state_backend": backend},
        "vertices": [
            {"id": "numbers", "parallelism": source_parallelism, "event_time": {"column": "ts", "monotonous": {}},
             "datagen": {"seed": 1, "rows": rows, "rows_per_second": rows_per_second, "batch_size": 50,
                "columns": [{"name": "n", "sequence": {"start": 0}},
                            {"name": "ts", "event_time": {"start_ms": START, "step_ms": 1}}]}},
            {"id": "keyed", "parallelism": source_parallelism, "select": {"columns": [
                {"name": "k", "expr": "n % 7"}, {"name": "n", "expr": "n"}, {"name": "ts", "expr": "ts"}]}},
            {"id": "count", "parallelism": window_parallelism, "window": {"keys": ["k"],
                "tumbling": {"size_ms": WINDOW_MS},
                "aggregates": [{"function": "count", "name": "rows"}, {"function": "sum", "argument": "n", "name": "total"}]}},
            {"id": "sink", "parallelism": window_parallelism, "file_sink": {"path": sink.display().to_string()}}
        ],
        "edges": [
            {"from": "numbers", "to": "keyed"},
            {"from": "keyed", "to": "count", "partitioning": "HASH", "key": ["k"]},
            {"from": "count", "to": "sink"}
        ]
    })
}

/// The windows an uninterrupted run emits, computed without the engine.
pub fn expected() -> Windows {
    expected_of(ROWS)
}

/// The windows an uninterrupted run over `rows` rows emits, computed without the engine.
pub fn expected_of(rows: i64) -> Windows {
    let mut windows = Windows::new();
    for n in 0..rows {
        let ts = START + n;
        let entry = windows.entry((n % KEYS, ts - ts.rem_euclid(WINDOW_MS))).or_default();
        entry.0 += 1;
        entry.1 += n;
    }
    windows
}

/// A timestamp as the sink writes it, in ms since the epoch.
pub fn millis(text: &str) -> i64 {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .unwrap_or_else(|| panic!("not a timestamp: {text}"))
        .and_utc()
        .timestamp_millis()
}

/// Every window row of a sink directory; a window written twice fails the test.
pub fn windows_in(dir: &Path, into: &mut Windows) {
    for (window, values) in every_window_row(dir).unwrap_or_else(|e| panic!("{e:#}")) {
        if let [first, second, ..] = values.as_slice() {
            panic!("window {window:?} emitted twice: {first:?} and {second:?} (in {})", dir.display());
        }
        if let Some(value) = values.first() {
            into.insert(window, *value);
        }
    }
}

/// Every value each window has in the committed part files of `dir`, in file order (more than one: the
/// window was emitted twice).
pub fn every_window_row(dir: &Path) -> anyhow::Result<WindowRows> {
    let mut all = WindowRows::new();
    for file in part_files(dir)? {
        for row in read_rows(&file)? {
            let key = row["k"].as_i64().ok_or_else(|| anyhow::anyhow!("no k in {row:?} ({})", file.display()))?;
            let start = row["window_start"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no window_start in {row:?} ({})", file.display()))?;
            let rows = as_u64(&row, "rows")?;
            let total =
                row["total"].as_i64().ok_or_else(|| anyhow::anyhow!("no total in {row:?} ({})", file.display()))?;
            all.entry((key, millis(start))).or_default().push((rows, total));
        }
    }
    Ok(all)
}

/// The job with a checkpoint every 200 ms (3 retained): its file sink commits on checkpoint completion.
pub fn checkpointed_job_on(backend: &str, sink: &Path) -> Value {
    let mut job = job(backend, 2, sink);
    job["config"]["checkpointing"] = json!({"interval_ms": 200, "retained": 3});
    job
}

/// Committed windows in `dir`, and whether any uncommitted (hidden) file is there.
pub fn committed(dir: &Path) -> (Windows, bool) {
    let mut windows = Windows::new();
    if !dir.exists() {
        return (windows, false); // The sink has not opened its first file yet.
    }
    windows_in(dir, &mut windows);
    let hidden = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with('.')))
        .unwrap_or(false);
    (windows, hidden)
}

/// Every committed window must be one of the expected ones, with its final value.
pub fn assert_subset(windows: &Windows, expected: &Windows) {
    for (window, value) in windows {
        assert_eq!(expected.get(window), Some(value), "committed window {window:?} is not one of the expected");
    }
}

/// The committed windows are exactly the expected ones.
pub fn assert_exactly(windows: &Windows, expected: &Windows) {
    assert_eq!(windows.len(), expected.len(), "committed windows");
    assert_subset(windows, expected);
}
