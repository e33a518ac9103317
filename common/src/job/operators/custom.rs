//! `custom`: a native operator registered by name in the TaskManager binary, with the output it declares.
use datafusion::arrow::datatypes::SchemaRef;

use super::schema::{check_keys, declared_schema, is_time_type};
use super::{OperatorSpec, Role, SchemaInput};
use crate::proto;

impl OperatorSpec for proto::CustomOperator {
    const KIND: &'static str = "custom";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        let report = &mut *input.report;
        if self.name.trim().is_empty() {
            report("'name' is missing: the name the TaskManager registered the operator under".into());
        }
        check_keys(&self.keys, &input.input, input.in_edges, report);
        if self.output.is_empty() {
            report(
                "'output' is missing: list the operator's output columns as [{\"name\": ..., \"type\": ...}]".into(),
            );
            input.output_time = None;
            return None;
        }
        let schema = declared_schema(&self.output, report);
        // The event time goes on when the operator outputs a time column of the same name.
        input.output_time = input.input_time.as_deref().and_then(|time| {
            let field = schema.field_with_name(time).ok()?;
            is_time_type(field.data_type()).then(|| time.to_string())
        });
        Some(schema)
    }
}
