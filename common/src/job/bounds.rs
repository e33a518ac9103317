//! Bounds on what a job file may ask (issue 19): every size a job file controls has a named maximum, checked
//! at validation, so that neither validating a job nor running it can be made arbitrarily slow, deep or
//! large by the file's author. A job over a bound is refused with a 400 whose problem names the field and
//! the bound.
//!
//! Why bound at validation rather than cope at run time: the JobManager validates every submission on its
//! own threads, and the TaskManagers re-validate and compile the same graph. A quadratic "did you mean", an
//! expression whose planning recurses once per term, or a generator asked for a 33 TB buffer would take
//! down a process that serves every other job. Refusing such a file costs nothing to a real job: each bound
//! sits orders of magnitude above what the examples and tests use.

/// The most vertices a job may have. Validation, chaining and scheduling are linear or near-linear in the
/// vertex count; a thousand vertices is far beyond any hand-written pipeline.
pub const VERTICES_MAX: usize = 1_000;

/// The most edges a job may have: a few per vertex on average.
pub const EDGES_MAX: usize = 4 * VERTICES_MAX;

/// The longest vertex id, job name, edge endpoint, side-output name or column name, in bytes. Ids appear
/// in every log line, metric label and error message about the vertex; 256 bytes is a sentence.
pub const NAME_BYTES_MAX: usize = 256;

/// The most columns a list in a job file may name: a declared schema, a select's columns, a datagen's
/// columns, an operator's keys. Problems about a column list the input's columns, so this also bounds the
/// length of every such message.
pub const COLUMNS_MAX: usize = 1_000;

/// The longest SQL expression (a select column, a filter predicate, an aggregate argument, a reduce
/// expression), in bytes. A hand-written expression is a line or two; 16 KiB leaves room for a long CASE.
pub const EXPRESSION_BYTES_MAX: usize = 16 * 1024;

/// The most lexical tokens (identifiers, literals, operators, parentheses) in one SQL expression.
///
/// DataFusion plans, simplifies, type-coerces and drops an expression by recursing once per level of its
/// syntax tree, and `a || a || a ...` is a tree as deep as it has terms; with DataFusion's
/// `recursive_protection` feature off (it is, to keep builds small), a 5,001-term expression overflowed the
/// 2 MiB stack of a tokio worker and aborted the JobManager. A tree cannot be deeper than half its tokens
/// (every level of `a || b` or `f(x)` costs at least two), so bounding tokens bounds the depth.
///
/// Measured (debug build, compiling on a thread with a 2 MiB stack, as tokio's workers and blocking threads
/// have): `word || ...` of 700 terms compiles, 800 terms overflow the stack. 400 tokens allow at most 200
/// terms, a margin of 3.5 below the measured limit, which a release build (smaller frames) only widens. The
/// test `expressions_at_the_token_bound_compile_on_a_small_stack` in `crate::expr` compiles the largest
/// expression allowed on such a stack.
pub const EXPRESSION_TOKENS_MAX: usize = 400;

/// The deepest nesting of parentheses in one SQL expression (function calls, sub-expressions). Counted
/// apart from tokens so the message says what is wrong with `f(f(f(...)))`.
pub const EXPRESSION_NESTING_MAX: usize = 32;
const _: () = assert!(EXPRESSION_NESTING_MAX < EXPRESSION_TOKENS_MAX);

/// The most windows one record may belong to: a sliding window's `size_ms / slide_ms` (rounded up). Each
/// record is added to every window it falls in, so `size_ms = 1e12, slide_ms = 1` would ask for 10^12
/// state updates per record.
pub const WINDOWS_PER_RECORD_MAX: u64 = 1_000;

/// The most records a window Top-N keeps per key and window (`top_n.n`). They sit in one state value that
/// is read and rewritten whenever a batch brings a record good enough to enter.
pub const TOP_N_MAX: u32 = 1_000;

/// The most records a Top-N with ties keeps per key and window, ties included: records tied with the n-th
/// beyond this are dropped (and logged), so a window of equal values cannot grow one state value without
/// bound.
pub const TOP_N_KEPT_MAX: usize = 10 * TOP_N_MAX as usize;

/// The most words a `datagen` words column may put in one value (`min_words`, `max_words`). The generator
/// reserves room for a batch of maximal values up front: `max_words = 4e9` asked for a 33 TB allocation.
pub const DATAGEN_WORDS_PER_VALUE_MAX: u32 = 1_000;

/// The most rows a `print_sink` prints of each batch (`max_rows_per_batch`). Printed rows go to the
/// TaskManager's log; more than this per batch floods it without telling a human anything more.
pub const PRINT_ROWS_PER_BATCH_MAX: u32 = 1_000;

/// The longest a job may wait for slots (`config.slot_wait_timeout_ms`) before the wait counts as a
/// failure. A waiting job holds an actor and a place under the JobManager's cap on unfinished jobs; past a
/// day it is surely a unit mistake (and `u64::MAX` ms would overflow the deadline's arithmetic).
pub const SLOT_WAIT_TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;

/// `text` shortened for an error message: a refused 3 MB id must not be echoed back 3 MB long.
pub fn shown(text: &str) -> String {
    /// How many characters of an oversized name or expression a message shows.
    const SHOWN_CHARS_MAX: usize = 48;
    if text.len() <= SHOWN_CHARS_MAX {
        return text.to_string();
    }
    let head: String = text.chars().take(SHOWN_CHARS_MAX).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// The problem with a name (`what` says which) longer than [`NAME_BYTES_MAX`], if it is.
pub fn check_name_length(what: &str, name: &str) -> Option<String> {
    (name.len() > NAME_BYTES_MAX)
        .then(|| format!("{what} '{}' is {} bytes long; the most allowed is {NAME_BYTES_MAX}", shown(name), name.len()))
}

/// The windows a sliding window puts each record in: `ceil(size / slide)`, for positive `slide`.
pub fn windows_per_record(size_ms: u64, slide_ms: u64) -> u64 {
    debug_assert!(slide_ms > 0, "slide_ms must be positive");
    size_ms.div_ceil(slide_ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_refused_and_shown_short() {
        assert_eq!(check_name_length("vertex id", &"a".repeat(NAME_BYTES_MAX)), None);
        let long = "a".repeat(3_000_000);
        let problem = check_name_length("vertex id", &long).unwrap_or_default();
        assert!(problem.contains("is 3000000 bytes long; the most allowed is 256"), "{problem}");
        assert!(problem.len() < 200, "the message must not echo the name: {} bytes", problem.len());
    }

    #[test]
    fn windows_per_record_rounds_up() {
        assert_eq!(windows_per_record(10, 5), 2);
        assert_eq!(windows_per_record(10, 3), 4);
        assert_eq!(windows_per_record(1_000_000_000_000, 1), 1_000_000_000_000);
    }
}
