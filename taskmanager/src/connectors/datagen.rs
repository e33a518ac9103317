//! The deterministic data generator.
//!
//! Row `i`'s value in a column is a pure function of `(seed, column position, i)`: a SplitMix64 stream
//! seeded from the three. So the output does not depend on parallelism (subtask `k` of `p` produces rows
//! `k, k+p, k+2p, ...`), on batch boundaries, or on restarts: a source that resumes at row `i` produces what
//! an uninterrupted one would have. The one exception is a `wall_clock` column, which holds the time a batch
//! was generated (for measuring latency against event time that follows the clock).
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::job::BATCH_SIZE_DEFAULT;
use sluice_common::proto::{generated_column::Generator, DatagenSource, GeneratedColumn};

use crate::operator_api::{OperatorError, Source, SourcePoll, SubtaskInfo};
use crate::time::now_millis;

/// The longest a rate-limited generator asks its task to wait at once, so cancellation stays prompt.
const WAIT_MAX: Duration = Duration::from_millis(50);

/// Used when a `words` generator has no vocabulary of its own.
pub const DEFAULT_VOCABULARY: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
    "river", "stream", "water", "flow", "gate", "sluice", "mill", "stone", "bridge", "rain", "sea", "time", "window",
    "event", "key", "state", "barrier", "check", "point", "record", "batch", "arrow", "task", "slot", "job", "graph",
    "edge", "vertex", "source", "sink", "count", "word", "line", "data", "fast", "slow", "quick", "brown", "fox",
    "jumps", "over", "lazy", "dog", "red", "green", "blue", "light", "dark", "night", "day",
];

pub struct Datagen {
    spec: DatagenSource,
    schema: SchemaRef,
    vocabulary: Vec<Vec<String>>,
    subtask: SubtaskInfo,
    /// Index, among this subtask's rows, of the next row to produce.
    next_local: u64,
    /// This subtask's share of `rows`; None when unbounded.
    local_rows: Option<u64>,
    rows_per_second: f64,
    batch_size: usize,
    started: Option<Instant>,
    /// The row the source (re)started at: pacing counts from it.
    resumed_at: u64,
}

impl Datagen {
    pub fn new(spec: &DatagenSource, schema: SchemaRef, subtask: SubtaskInfo) -> Self {
        let (k, p) = (u64::from(subtask.index), u64::from(subtask.parallelism.max(1)));
        let local_rows = spec.rows.map(|rows| rows / p + u64::from(k < rows % p));
        let vocabulary = spec
            .columns
            .iter()
            .map(|c| match &c.generator {
                Some(Generator::Words(w)) if !w.vocabulary.is_empty() => w.vocabulary.clone(),
                _ => DEFAULT_VOCABULARY.iter().map(|w| w.to_string()).collect(),
            })
            .collect();
        Self {
            spec: spec.clone(),
            schema,
            vocabulary,
            subtask,
            next_local: 0,
            local_rows,
            rows_per_second: spec.rows_per_second / p as f64,
            batch_size: spec.batch_size.unwrap_or(BATCH_SIZE_DEFAULT).max(1) as usize,
            started: None,
            resumed_at: 0,
        }
    }

    fn generate(&self, rows: usize) -> Result<RecordBatch, OperatorError> {
        let (k, p) = (u64::from(self.subtask.index), u64::from(self.subtask.parallelism.max(1)));
        let indices: Vec<u64> = (0..rows as u64).map(|j| k + (self.next_local + j) * p).collect();
        let columns = self
            .spec
            .columns
            .iter()
            .enumerate()
            .map(|(position, column)| self.column(position, column, &indices))
            .collect::<Vec<_>>();
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn column(&self, position: usize, column: &GeneratedColumn, indices: &[u64]) -> ArrayRef {
        let rng = |i: u64| SplitMix64::new(self.spec.seed, position as u64, i);
        match &column.generator {
            Some(Generator::Sequence(g)) => {
                let mut b = Int64Builder::with_capacity(indices.len());
                indices.iter().for_each(|&i| b.append_value(g.start.wrapping_add(i as i64)));
                Arc::new(b.finish())
            }
            Some(Generator::RandomInt(g)) => {
                let span = (g.max as i128 - g.min as i128 + 1) as u128;
                let mut b = Int64Builder::with_capacity(indices.len());
                indices
                    .iter()
                    .for_each(|&i| b.append_value((g.min as i128 + (rng(i).next() as u128 % span) as i128) as i64));
                Arc::new(b.finish())
            }
            Some(Generator::RandomFloat(g)) => {
                let mut b = Float64Builder::with_capacity(indices.len());
                indices.iter().for_each(|&i| b.append_value(g.min + rng(i).next_f64() * (g.max - g.min)));
                Arc::new(b.finish())
            }
            Some(Generator::Words(g)) => {
                let vocabulary = &self.vocabulary[position];
                let min = g.min_words.max(1);
                let max = g.max_words.max(min);
                let mut b = StringBuilder::with_capacity(indices.len(), indices.len() * 8 * max as usize);
                let mut line = String::new();
                for &i in indices {
                    let mut r = rng(i);
                    let n = min + (r.next() % u64::from(max - min + 1)) as u32;
                    line.clear();
                    for w in 0..n {
                        if w > 0 {
                            line.push(' ');
                        }
                        line.push_str(&vocabulary[(r.next() % vocabulary.len() as u64) as usize]);
                    }
                    b.append_value(&line);
                }
                Arc::new(b.finish())
            }
            Some(Generator::EventTime(g)) => {
                let mut b = TimestampMillisecondBuilder::with_capacity(indices.len());
                indices
                    .iter()
                    .for_each(|&i| b.append_value(g.start_ms.wrapping_add((i as i64).wrapping_mul(g.step_ms))));
                Arc::new(b.finish())
            }
            Some(Generator::WallClock(_)) => {
                let now = now_millis();
                Arc::new(TimestampMillisecondArray::from_value(now, indices.len()))
            }
            // Validation refuses a column without a generator; nulls keep this total anyway.
            None => Arc::new(Int64Builder::new().finish()),
        }
    }
}

impl Source for Datagen {
    fn position(&mut self, _checkpoint: u64) -> Result<Vec<u8>, OperatorError> {
        // The index of the next row among this subtask's rows.
        Ok(self.next_local.to_be_bytes().to_vec())
    }

    fn seek(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let next = <[u8; 8]>::try_from(position)
            .map(u64::from_be_bytes)
            .map_err(|_| OperatorError::input(format!("a datagen position is 8 bytes, not {}", position.len())))?;
        if self.local_rows.is_some_and(|total| next > total) {
            return Err(OperatorError::input(format!("position {next} is past this subtask's rows")));
        }
        self.next_local = next;
        // A rate-limited source paces itself from here, not from row 0.
        self.resumed_at = next;
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll, OperatorError> {
        let remaining = self.local_rows.map_or(u64::MAX, |total| total - self.next_local);
        if remaining == 0 {
            return Ok(SourcePoll::End);
        }
        if self.rows_per_second > 0.0 {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = Duration::from_secs_f64((self.next_local - self.resumed_at) as f64 / self.rows_per_second);
            if let Some(wait) = due.checked_sub(started.elapsed()).filter(|w| !w.is_zero()) {
                return Ok(SourcePoll::Wait(wait.min(WAIT_MAX)));
            }
        }
        let mut rows = (self.batch_size as u64).min(remaining);
        if self.rows_per_second > 0.0 {
            // Small batches at low rates, so a throttled source does not emit in bursts.
            rows = rows.min((self.rows_per_second / 10.0).ceil().max(1.0) as u64);
        }
        let batch = self.generate(rows as usize)?;
        self.next_local += rows;
        Ok(SourcePoll::Batch(batch))
    }
}

/// The generator of one column's value in one row: SplitMix64 seeded from (seed, column, row).
struct SplitMix64(sluice_common::splitmix::SplitMix64);

impl SplitMix64 {
    fn new(seed: u64, column: u64, row: u64) -> Self {
        let mut s = sluice_common::splitmix::SplitMix64(seed ^ column.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let first = s.next_u64();
        s.0 ^= first ^ row.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self(s)
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn next_f64(&mut self) -> f64 {
        self.0.next_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use sluice_common::proto::{SequenceGenerator, WordsGenerator};

    fn spec(rows: u64) -> (DatagenSource, SchemaRef) {
        let columns = vec![
            GeneratedColumn { name: "id".into(), generator: Some(Generator::Sequence(SequenceGenerator { start: 0 })) },
            GeneratedColumn {
                name: "text".into(),
                generator: Some(Generator::Words(WordsGenerator { vocabulary: vec![], min_words: 1, max_words: 3 })),
            },
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        (DatagenSource { seed: 7, rows: Some(rows), batch_size: Some(100), columns, ..Default::default() }, schema)
    }

    fn rows_of(parallelism: u32) -> Vec<(i64, String)> {
        let (spec, schema) = spec(1001);
        let mut rows = Vec::new();
        for index in 0..parallelism {
            let mut source = Datagen::new(&spec, schema.clone(), SubtaskInfo { index, parallelism });
            for _ in 0..100 {
                match source.poll_next() {
                    Ok(SourcePoll::Batch(b)) => {
                        let ids = b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                        let text = b.column(1).as_string::<i32>();
                        rows.extend((0..b.num_rows()).map(|r| (ids.value(r), text.value(r).to_string())));
                    }
                    Ok(SourcePoll::End) => break,
                    Ok(SourcePoll::Wait(_)) | Err(_) => panic!("unexpected poll result"),
                }
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn output_is_the_same_at_any_parallelism() {
        let one = rows_of(1);
        assert_eq!(one.len(), 1001);
        assert_eq!(one, rows_of(3));
        assert_eq!(one, rows_of(4));
        assert!(one.iter().all(|(_, t)| (1..=3).contains(&t.split(' ').count())));
    }
}
