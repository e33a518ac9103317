//! `blackhole_sink`: discards what it receives, optionally at a bounded rate (benchmarks and tests use it
//! to stand for a slow sink without any I/O).
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::BlackholeSink;

use crate::operator_api::{Operator, OperatorError};

/// Discards rows; when `rows_per_second` > 0, paces the task so this subtask consumes at most that rate.
pub struct BlackholeOp {
    rows_per_second: f64,
    started: Option<Instant>,
    rows: u64,
}

impl BlackholeOp {
    pub fn new(spec: &BlackholeSink) -> Self {
        Self { rows_per_second: spec.rows_per_second, started: None, rows: 0 }
    }
}

impl Operator for BlackholeOp {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        self.started.get_or_insert_with(Instant::now);
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn pause(&mut self) -> Option<Duration> {
        if self.rows_per_second <= 0.0 {
            return None;
        }
        let due = Duration::from_secs_f64(self.rows as f64 / self.rows_per_second);
        let elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
        due.checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}
