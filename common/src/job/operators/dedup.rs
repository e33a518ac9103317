//! `deduplicate`: the first row of each key within a time to live.
use datafusion::arrow::datatypes::SchemaRef;

use super::schema::check_keys;
use super::{OperatorSpec, Role, SchemaInput};
use crate::proto;

impl OperatorSpec for proto::Deduplicate {
    const KIND: &'static str = "deduplicate";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        check_keys(&self.keys, &input.input, input.in_edges, input.report);
        if self.ttl_ms == 0 {
            (input.report)("'ttl_ms' must be positive: how long a key is remembered".into());
        }
        Some(input.input.clone())
    }
}
