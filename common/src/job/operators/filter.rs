//! `filter`: keeps the rows for which a boolean SQL predicate holds.
use datafusion::arrow::datatypes::{DataType as ArrowType, SchemaRef};

use super::{OperatorSpec, Role, SchemaInput};
use crate::proto;

impl OperatorSpec for proto::Filter {
    const KIND: &'static str = "filter";
    const ROLE: Role = Role::Transform;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        match input.compiler.compile(&self.predicate, &input.input) {
            Ok(expr) if expr.data_type == ArrowType::Boolean => Some(input.input.clone()),
            Ok(expr) => {
                (input.report)(format!("predicate '{}' must be boolean, but it is {}", self.predicate, expr.data_type));
                None
            }
            Err(e) => {
                (input.report)(format!("predicate: {e}"));
                None
            }
        }
    }
}
