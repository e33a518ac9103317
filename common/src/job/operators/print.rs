//! `print_sink`: rows to the TaskManager's standard output.
use datafusion::arrow::datatypes::SchemaRef;

use super::{OperatorSpec, Role, SchemaInput};
use crate::job::bounds::PRINT_ROWS_PER_BATCH_MAX;
use crate::proto;

impl OperatorSpec for proto::PrintSink {
    const KIND: &'static str = "print_sink";
    const ROLE: Role = Role::Sink;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        if let Some(rows) = self.max_rows_per_batch.filter(|rows| *rows > PRINT_ROWS_PER_BATCH_MAX) {
            (input.report)(format!("max_rows_per_batch is {rows}; the most allowed is {PRINT_ROWS_PER_BATCH_MAX}"));
        }
        Some(input.input.clone())
    }
}
