//! `select`: a projection of SQL expressions over the input's columns.
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field as ArrowField, Schema, SchemaRef};

use super::aggregate::{is_changelog, RETRACT_COLUMN};
use super::schema::unique_names;
use super::{OperatorSpec, Role, SchemaInput};
use crate::proto;

impl OperatorSpec for proto::Select {
    const KIND: &'static str = "select";
    const ROLE: Role = Role::Transform;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        let schema = &input.input;
        // The event time goes on under the name of the column that passes it through unchanged.
        input.output_time = input.input_time.as_deref().and_then(|time| {
            self.columns.iter().find(|c| c.expr.trim() == time).map(|c| output_name(c, schema).to_string())
        });
        let report = &mut *input.report;
        if self.columns.is_empty() {
            report("no columns; list the output columns as [{\"name\": ..., \"expr\": ...}]".into());
            return None;
        }
        if is_changelog(schema)
            && !self.columns.iter().any(|c| c.expr.trim() == RETRACT_COLUMN && output_name(c, schema) == RETRACT_COLUMN)
        {
            report(format!(
                "its input is a changelog: keep its '{RETRACT_COLUMN}' column as it is (a column \
                 {{\"name\": \"{RETRACT_COLUMN}\", \"expr\": \"{RETRACT_COLUMN}\"}}), or retractions would read as new rows"
            ));
        }
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut ok = true;
        for column in &self.columns {
            let name = output_name(column, schema);
            if name.is_empty() {
                report(format!("column with expr '{}' needs a 'name'", column.expr));
                ok = false;
                continue;
            }
            match input.compiler.compile(&column.expr, schema) {
                Ok(expr) => fields.push(ArrowField::new(name, expr.data_type, expr.nullable)),
                Err(e) => {
                    report(format!("column '{name}': {e}"));
                    ok = false;
                }
            }
        }
        unique_names(fields.iter().map(|f| f.name().as_str()), "column", report);
        ok.then(|| Arc::new(Schema::new(fields)))
    }
}

/// A projection's output name: its `name`, or its expression when that is a bare input column.
pub(crate) fn output_name<'a>(column: &'a proto::Projection, input: &Schema) -> &'a str {
    if !column.name.is_empty() {
        return &column.name;
    }
    let expr = column.expr.trim();
    if input.field_with_name(expr).is_ok() {
        expr
    } else {
        ""
    }
}
