//! `blackhole_sink`: discards rows (optionally at a bounded rate): for benchmarks and back-pressure tests.
use datafusion::arrow::datatypes::SchemaRef;

use super::{OperatorSpec, Role, SchemaInput};
use crate::proto;

impl OperatorSpec for proto::BlackholeSink {
    const KIND: &'static str = "blackhole_sink";
    const ROLE: Role = Role::Sink;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        if !(self.rows_per_second >= 0.0 && self.rows_per_second.is_finite()) {
            (input.report)(format!("rows_per_second must be a finite number >= 0 (got {})", self.rows_per_second));
        }
        Some(input.input.clone())
    }
}
