//! Word count across two TaskManagers gives exactly the counts a plain HashMap gives.
//!
//! Goal: the whole path a user takes — a job file submitted over REST, a parallel file source, chained
//! split/lower-case/filter, a HASH exchange over TCP between TaskManagers, the keyed running count, the file
//! sink — produces the right answer, and the REST API tells the truth about what flowed.
//!
//! Method: the test writes a text file of random words in mixed case (and ragged spacing), computes the
//! expected counts itself with `split_whitespace` + `to_lowercase`, runs the job at parallelism 4 on a
//! JobManager and two TaskManagers of two slots each (SPREAD placement, so half of the aggregate subtasks
//! are remote from half of the sources), and compares the last count per word in the sink's part files.
//! It also checks that bytes crossed between the TaskManagers (the exchange really used the network) and
//! that the aggregate saw every word exactly once (`records_in` == number of words).
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sluice_tests::{sink, Cluster, ClusterSpec, JobStatus};

/// Lines in the generated input.
const LINES: usize = 20_000;
/// The test's parallelism: all four slots of the two TaskManagers.
const PARALLELISM: u32 = 4;
/// How long the job may run. It reads about 1 MB; debug builds take a few seconds.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

const VOCABULARY: &[&str] = &[
    "stream",
    "river",
    "sluice",
    "barrier",
    "credit",
    "window",
    "state",
    "key",
    "group",
    "task",
    "slot",
    "job",
    "graph",
    "edge",
    "vertex",
    "flow",
    "water",
    "gate",
    "buffer",
    "arrow",
    "batch",
    "record",
    "watermark",
    "event",
];

/// Writes the input file and returns the expected count per lower-cased word and the total word count.
fn write_input(path: &Path, seed: u64) -> (BTreeMap<String, u64>, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut text = String::new();
    for _ in 0..LINES {
        let words = rng.random_range(1..=12);
        for i in 0..words {
            if i > 0 {
                // Ragged spacing: the flat_map splits on runs of whitespace.
                text.push_str(if rng.random_bool(0.2) { "  " } else { " " });
            }
            let word = VOCABULARY[rng.random_range(0..VOCABULARY.len())];
            text.extend(word.chars().map(|c| if rng.random_bool(0.3) { c.to_ascii_uppercase() } else { c }));
        }
        text.push('\n');
    }
    std::fs::write(path, &text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));

    let mut expected = BTreeMap::new();
    let mut total = 0;
    for word in text.split_whitespace() {
        *expected.entry(word.to_lowercase()).or_insert(0) += 1;
        total += 1;
    }
    (expected, total)
}

fn word_count_job(input: &Path, output: &Path) -> serde_json::Value {
    let p = PARALLELISM;
    json!({
        "name": "word_count_test",
        "vertices": [
            {"id": "lines", "parallelism": p, "file_source": {
                "path": input.display().to_string(), "format": "LINES",
                "schema": [{"name": "line", "type": "STRING"}], "batch_size": 512}},
            {"id": "split", "parallelism": p, "flat_map": {"column": "line", "output_column": "word"}},
            {"id": "normalize", "parallelism": p, "select": {"columns": [{"name": "word", "expr": "lower(word)"}]}},
            {"id": "non_empty", "parallelism": p, "filter": {"predicate": "word <> ''"}},
            {"id": "count", "parallelism": p, "aggregate": {
                "keys": ["word"], "aggregates": [{"function": "count", "name": "count"}]}},
            {"id": "sink", "parallelism": p, "file_sink": {"path": output.display().to_string()}}
        ],
        "edges": [
            {"from": "lines", "to": "split"},
            {"from": "split", "to": "normalize"},
            {"from": "normalize", "to": "non_empty"},
            {"from": "non_empty", "to": "count", "partitioning": "HASH", "key": ["word"]},
            {"from": "count", "to": "sink"}
        ],
        "config": {"placement": "SPREAD"}
    })
}

#[test]
fn word_count_at_parallelism_four_on_two_task_managers_matches_a_hash_map() {
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 2, slots: 2, ..ClusterSpec::default() });
    let input = cluster.dir().join("words.txt");
    let output = cluster.dir().join("word_count_out");
    let (expected, total_words) = write_input(&input, 20_240_601);

    let job = cluster.submit_json(&word_count_job(&input, &output));
    cluster.wait_for_status(&job, JobStatus::Finished, JOB_TIMEOUT);

    // 1. The path was covered: bytes crossed between the TaskManagers.
    let details = cluster.job(&job);
    let remote_bytes_out = details["remote_bytes_out"].as_u64().unwrap_or(0);
    assert!(remote_bytes_out > 0, "no bytes crossed between the TaskManagers: {details}");

    // 2. The aggregate saw every word exactly once.
    let vertex = |id: &str| details["vertices"].as_array().and_then(|vs| vs.iter().find(|v| v["id"] == id)).cloned();
    let count_vertex = vertex("count").unwrap_or_else(|| panic!("no vertex 'count' in {details}"));
    assert_eq!(count_vertex["records_in"].as_u64(), Some(total_words), "records_in of 'count': {count_vertex}");
    let lines_vertex = vertex("lines").unwrap_or_else(|| panic!("no vertex 'lines' in {details}"));
    assert_eq!(lines_vertex["records_out"].as_u64(), Some(LINES as u64), "records_out of 'lines': {lines_vertex}");

    // 3. The final count of every word (its last row, in the one part file that holds it) is exact.
    let latest = sink::latest_rows_by_key(&output, "word").unwrap_or_else(|e| panic!("{e:#}"));
    let actual: BTreeMap<String, u64> = latest
        .iter()
        .map(|(word, row)| {
            (word.clone(), sink::as_u64(row, "count").unwrap_or_else(|e| panic!("word '{word}': {e:#}")))
        })
        .collect();
    assert_eq!(actual, expected);
    let parts = sink::part_files(&output).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(parts.len(), PARALLELISM as usize, "one part file per sink subtask: {parts:?}");
}
