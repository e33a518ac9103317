//! The shipped example `examples/jobs/word_count.json` runs unchanged and counts its sample text right.
//!
//! Goal: what the quickstart submits works as written — its relative paths, its normalization expression
//! (`lower(btrim(word, ...))`), its parallelism change at the HASH edge — and a user reading its output gets
//! the true counts.
//!
//! Method: the cluster's working directory gets a copy of `examples/data/sample.txt` at the same relative
//! path; the job file is submitted byte for byte as `curl -F job_file=@...` would; the expected counts are
//! computed here with the same normalization in plain Rust, and compared with the last row per word of
//! the part files under the job's relative output directory.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sluice_tests::{sink, Cluster, ClusterSpec, JobId, JobStatus};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The characters the example strips from both ends of a word: `btrim(word, '.,;:!?"()''-')`.
const TRIMMED: &[char] = &['.', ',', ';', ':', '!', '?', '"', '(', ')', '\'', '-'];

fn examples_dir() -> PathBuf {
    // At run time when cargo or nextest says (the target dir is shared between checkouts), else as compiled.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.join("..").join("examples")
}

fn expected_counts(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in text.split_whitespace() {
        let word = word.trim_matches(TRIMMED).to_lowercase();
        if !word.is_empty() {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn the_shipped_word_count_example_runs_unchanged_and_counts_the_sample_text_exactly() {
    let mut cluster = Cluster::start(ClusterSpec::default());
    let sample = examples_dir().join("data").join("sample.txt");
    let text = std::fs::read_to_string(&sample).unwrap_or_else(|e| panic!("cannot read {}: {e}", sample.display()));
    let data_dir = cluster.dir().join("examples").join("data");
    std::fs::create_dir_all(&data_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
    std::fs::write(data_dir.join("sample.txt"), &text).unwrap_or_else(|e| panic!("cannot copy the sample text: {e}"));

    let job_file = examples_dir().join("jobs").join("word_count.json");
    let bytes = std::fs::read(&job_file).unwrap_or_else(|e| panic!("cannot read {}: {e}", job_file.display()));
    let answer = cluster.submit_file(&bytes);
    assert_eq!(answer.status, 200, "the example must be accepted: {}", answer.body);
    let job = JobId(answer.body["job_id"].as_str().unwrap_or_default().to_string());
    cluster.wait_for_status(&job, JobStatus::Finished, JOB_TIMEOUT);

    // The job's relative output path resolves against the TaskManagers' working directory.
    let output = cluster.dir().join("data").join("output").join("word_count");
    let latest = sink::latest_rows_by_key(&output, "word").unwrap_or_else(|e| panic!("{e:#}"));
    let actual: BTreeMap<String, u64> = latest
        .iter()
        .map(|(word, row)| {
            let count = sink::as_u64(row, "count").unwrap_or_else(|e| panic!("word '{word}': {e:#}"));
            (word.clone(), count)
        })
        .collect();
    let expected = expected_counts(&text);
    assert!(expected.len() > 100, "the sample text should have a real vocabulary");
    assert_eq!(actual, expected);
}
