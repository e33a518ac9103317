//! `print_sink`: logs rows through the TaskManager's log (bounded per batch).
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice_common::proto::PrintSink;

use crate::operator_api::{Operator, OperatorError, SubtaskInfo};

const MAX_ROWS_PER_BATCH_DEFAULT: u32 = 20;

pub struct PrintSinkOp {
    vertex: String,
    subtask: u32,
    max_rows: usize,
}

impl PrintSinkOp {
    pub fn new(spec: &PrintSink, vertex: &str, subtask: SubtaskInfo) -> Self {
        let max_rows = spec.max_rows_per_batch.unwrap_or(MAX_ROWS_PER_BATCH_DEFAULT) as usize;
        Self { vertex: vertex.to_string(), subtask: subtask.index, max_rows }
    }
}

impl Operator for PrintSinkOp {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let shown = batch.slice(0, batch.num_rows().min(self.max_rows));
        let table = pretty_format_batches(&[shown])?;
        tracing::info!(vertex = %self.vertex, subtask = self.subtask, rows = batch.num_rows(), "\n{table}");
        Ok(())
    }
}
