//! `flat_map`: splits a string column into words, one output row per word.
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema, SchemaRef};

use super::schema::unique_names;
use super::{OperatorSpec, Role, SchemaInput};
use crate::job::hint;
use crate::proto;

impl OperatorSpec for proto::FlatMap {
    const KIND: &'static str = "flat_map";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        // The split column no longer holds the input's values: it cannot carry the event time on.
        if input.input_time.as_deref() == Some(self.column.as_str()) {
            input.output_time = None;
        }
        let report = &mut *input.report;
        let schema = &input.input;
        let Ok(field) = schema.field_with_name(&self.column) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            report(format!(
                "unknown column '{}'{}; the input has: {}",
                self.column,
                hint(&self.column, &names),
                names.join(", ")
            ));
            return None;
        };
        if !matches!(field.data_type(), ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View) {
            report(format!("column '{}' is {}, but flat_map splits strings", self.column, field.data_type()));
            return None;
        }
        let output = if self.output_column.is_empty() { &self.column } else { &self.output_column };
        let fields: Vec<ArrowField> = schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == &self.column {
                    ArrowField::new(output, ArrowType::Utf8, false)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        unique_names(fields.iter().map(|f| f.name().as_str()), "column", report);
        Some(Arc::new(Schema::new(fields)))
    }
}
