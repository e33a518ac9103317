//! `print_sink`: rows to the TaskManager's standard output.
use datafusion::arrow::datatypes::SchemaRef;

use super::{OperatorSpec, Role, SchemaInput};
use crate::proto;

impl OperatorSpec for proto::PrintSink {
    const KIND: &'static str = "print_sink";
    const ROLE: Role = Role::Sink;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        Some(input.input.clone())
    }
}
