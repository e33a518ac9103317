//! Job graphs: reading, validating, chaining and building them.
//!
//! A job file is the proto3 JSON form of [`crate::proto::JobGraph`]. [`parse_job_file`] reads one and
//! reports every unknown or malformed field with the vertex or edge it belongs to; [`validate`] checks the
//! graph as a whole, infers every vertex's Arrow schema (compiling its SQL expressions), fills in defaults,
//! and derives the chains that run as tasks. Both report *every* problem they find, not just the first,
//! so a user fixes a job file in one round.
pub mod bounds;
pub mod builder;
pub mod chain;
pub mod checkpoint;
pub mod operators;
mod parse;
pub mod restart;
mod validate;

use std::fmt;

pub use parse::parse_job_file;

/// The multipart field of `POST /jobs/submit` that carries the job file (the JobManager reads it, the CLI
/// and the web page send it).
pub const JOB_FILE_FIELD: &str = "job_file";
pub use operators::{
    arrow_type, is_time_type, operator_kind, role, Role, AGGREGATE_FUNCTIONS, BATCH_SIZE_DEFAULT, BATCH_SIZE_MAX,
    KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT, LATE_SIDE_OUTPUT, OPERATOR_KINDS, WINDOW_END_COLUMN, WINDOW_START_COLUMN,
};
pub use operators::{nexmark_kind, nexmark_timeline, NEXMARK_OUT_OF_ORDER_GROUP_MAX};
pub use validate::{validate, ValidatedJob, WATERMARK_INTERVAL_MS_DEFAULT};

/// The most problems one [`JobError`] lists. A user fixes a job file from the first problems; a file with
/// thousands of broken edges must not produce an answer of megabytes.
pub const PROBLEMS_REPORTED_MAX: usize = 200;

/// Everything wrong with a job file or graph. Displayed as one problem per line; each names the vertex,
/// edge or field concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    problems: Vec<String>,
}

impl JobError {
    /// An error made of these problems (at least one), of which the first [`PROBLEMS_REPORTED_MAX`] are
    /// kept, followed by a line counting the rest.
    pub fn new(mut problems: Vec<String>) -> Self {
        debug_assert!(!problems.is_empty(), "a JobError needs at least one problem");
        if problems.len() > PROBLEMS_REPORTED_MAX {
            let more = problems.len() - PROBLEMS_REPORTED_MAX;
            problems.truncate(PROBLEMS_REPORTED_MAX);
            problems.push(format!("... and {more} more problems, not shown"));
        }
        Self { problems }
    }

    /// The problems, in the order found.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for JobError {}

/// The longest word or candidate, in characters, that [`did_you_mean`] compares. The edit distance costs
/// |word|·|candidate| steps: two 3 MB strings would pin a core for hours, and nobody mistypes a 64-character
/// name into something a suggestion could fix. Longer strings get no suggestion.
pub const DID_YOU_MEAN_CHARS_MAX: usize = 64;

/// The most candidates [`did_you_mean`] compares a word with (the first ones given). With
/// [`DID_YOU_MEAN_CHARS_MAX`] this bounds one suggestion to about 800,000 steps, a millisecond or so.
pub const DID_YOU_MEAN_CANDIDATES_MAX: usize = 200;

/// The candidate closest to `word` by edit distance, if it is close enough to be a plausible typo. Words
/// and candidates longer than [`DID_YOU_MEAN_CHARS_MAX`] are not compared, and only the first
/// [`DID_YOU_MEAN_CANDIDATES_MAX`] candidates are, so the cost is bounded whatever the input.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Byte length first: it bounds the character count and costs nothing on a huge string.
    let short = |s: &str| s.len() <= 4 * DID_YOU_MEAN_CHARS_MAX && s.chars().count() <= DID_YOU_MEAN_CHARS_MAX;
    if !short(word) {
        return None;
    }
    let word = word.to_lowercase();
    // Up to a third of the longer word may differ (at least one letter): "cnt" still finds "count".
    let limit = |candidate: &str| (word.chars().count().max(candidate.chars().count()).div_ceil(3)).max(1);
    candidates
        .into_iter()
        .take(DID_YOU_MEAN_CANDIDATES_MAX)
        .filter(|c| short(c))
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= limit(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The most suggestions one parse or one validation computes. A job file can name thousands of unknown
/// vertices or columns, each costing a [`did_you_mean`]; after this many, problems come without a
/// suggestion (a user fixes the first ones first anyway).
pub const SUGGESTIONS_PER_JOB_MAX: usize = 50;

thread_local! {
    /// How many suggestions [`hint`] may still compute on this thread. Parsing and validation each run on
    /// one thread from start to end and call [`reset_suggestion_budget`] first, so this counts per job.
    static SUGGESTIONS_LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(SUGGESTIONS_PER_JOB_MAX) };
}

/// Gives this thread a fresh [`SUGGESTIONS_PER_JOB_MAX`]; called as parsing and validation begin.
pub(crate) fn reset_suggestion_budget() {
    SUGGESTIONS_LEFT.set(SUGGESTIONS_PER_JOB_MAX);
}

/// ` (did you mean 'x'?)` or the empty string (always, once this job's suggestion budget is spent).
pub(crate) fn hint(word: &str, candidates: &[&str]) -> String {
    let left = SUGGESTIONS_LEFT.get();
    if left == 0 {
        return String::new();
    }
    SUGGESTIONS_LEFT.set(left - 1);
    did_you_mean(word, candidates.iter().copied()).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested_and_far_ones_are_not() {
        let ops = ["flat_map", "filter", "file_sink"];
        assert_eq!(did_you_mean("flatmap", ops), Some("flat_map"));
        assert_eq!(did_you_mean("filtr", ops), Some("filter"));
        assert_eq!(did_you_mean("window", ops), None);
    }

    #[test]
    fn huge_words_and_candidates_get_no_suggestion_and_cost_nothing() {
        let huge = "x".repeat(3_000_000);
        let near_huge = format!("{huge}y");
        let started = std::time::Instant::now();
        assert_eq!(did_you_mean(&near_huge, [huge.as_str()]), None);
        assert_eq!(did_you_mean("filtr", [huge.as_str(), "filter"]), Some("filter"));
        let at_bound = "a".repeat(DID_YOU_MEAN_CHARS_MAX);
        assert_eq!(did_you_mean(&format!("{at_bound}b"), [at_bound.as_str()]), None, "over the bound by one");
        assert_eq!(did_you_mean(&at_bound[1..], [at_bound.as_str()]), Some(at_bound.as_str()));
        let many: Vec<String> = (0..100_000).map(|i| format!("vertex-{i}")).collect();
        // Only the first candidates are compared: 'vertex-99999' itself is never reached.
        let suggestion = did_you_mean("vertex-99999x", many.iter().map(String::as_str));
        assert!(suggestion.is_some_and(|c| c.len() <= "vertex-999".len()), "{suggestion:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}
