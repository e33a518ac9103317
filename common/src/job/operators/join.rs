//! `join`, `interval_join` and `temporal_join`: two inputs, read apart (not unioned), joined on equal keys.
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field as ArrowField, Schema, SchemaRef};

use super::schema::check_keys;
use super::{edge_source_key, OperatorSpec, Role, SchemaInput};
use crate::job::hint;
use crate::proto;

impl OperatorSpec for proto::Join {
    const KIND: &'static str = "join";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        let sides = JoinSides {
            roles: [("left", &self.left), ("right", &self.right)],
            first_keys: &self.left_keys,
            second_keys: &self.right_keys,
            nullable_second: false,
            needs_event_time: false,
        };
        // A pair is emitted when its second row arrives, at any time: the output carries no event time.
        input.output_time = None;
        join_schema(&sides, input)
    }
}

impl OperatorSpec for proto::IntervalJoin {
    const KIND: &'static str = "interval_join";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        if self.lower_bound_ms > self.upper_bound_ms {
            (input.report)(format!(
                "lower_bound_ms ({}) is above upper_bound_ms ({}): nothing could join",
                self.lower_bound_ms, self.upper_bound_ms
            ));
        }
        let sides = JoinSides {
            roles: [("left", &self.left), ("right", &self.right)],
            first_keys: &self.left_keys,
            second_keys: &self.right_keys,
            nullable_second: false,
            needs_event_time: true,
        };
        join_schema(&sides, input)
    }
}

impl OperatorSpec for proto::TemporalJoin {
    const KIND: &'static str = "temporal_join";
    const ROLE: Role = Role::Transform;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        let sides = JoinSides {
            roles: [("stream", &self.stream), ("table", &self.table)],
            first_keys: &self.stream_keys,
            second_keys: &self.table_keys,
            nullable_second: self.keep_unmatched,
            needs_event_time: true,
        };
        join_schema(&sides, input)
    }
}

/// A join's two inputs: their roles and vertex ids, their keys, whether the second side may be missing, and
/// whether both need an event time.
struct JoinSides<'a> {
    roles: [(&'static str, &'a String); 2],
    first_keys: &'a [String],
    second_keys: &'a [String],
    nullable_second: bool,
    needs_event_time: bool,
}

/// The output schema of a join: its first (left, stream) input's columns, then its second (right, table)
/// input's columns other than its keys.
fn join_schema(join: &JoinSides<'_>, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
    let in_edges = input.in_edges;
    let upstream = input.upstream;
    let report = &mut *input.report;
    let roles = join.roles;
    let inputs: Vec<&str> = in_edges.iter().map(|e| e.from.as_str()).collect();
    if in_edges.len() != 2 || in_edges.iter().any(|e| !e.side_output.is_empty()) {
        report(format!(
            "a join has exactly two inputs, the main outputs of two vertices (it has: {})",
            inputs.join(", ")
        ));
        return None;
    }
    let mut sides = Vec::new();
    for ((role, id), keys) in roles.iter().zip([join.first_keys, join.second_keys]) {
        let Some(edge) = in_edges.iter().find(|e| e.from == **id) else {
            report(format!(
                "'{role}' names '{id}', which is not one of its inputs{}; its inputs are: {}",
                hint(id, &inputs),
                inputs.join(", ")
            ));
            return None;
        };
        let schema = upstream.schemas.get(&edge.from)?.clone();
        if join.needs_event_time && !upstream.event_time.contains_key(&edge_source_key(edge)) {
            report(format!("its {role} input '{id}' has no event-time column: set 'event_time' on its source"));
        }
        let fields = check_keys(keys, &schema, &[*edge], report);
        sides.push((schema, fields));
    }
    if roles[0].1 == roles[1].1 {
        report(format!("its two inputs must be different vertices (both are '{}')", roles[0].1));
        return None;
    }
    let [(first, first_fields), (second, second_fields)] = <[_; 2]>::try_from(sides).ok()?;
    if join.first_keys.len() != join.second_keys.len() {
        report(format!(
            "it has {} {} keys but {} {} keys",
            join.first_keys.len(),
            roles[0].0,
            join.second_keys.len(),
            roles[1].0
        ));
    }
    for (a, b) in first_fields.iter().zip(&second_fields) {
        if a.data_type() != b.data_type() {
            report(format!(
                "key columns '{}' ({}) and '{}' ({}) differ in type; equal keys must hash alike",
                a.name(),
                a.data_type(),
                b.name(),
                b.data_type()
            ));
        }
    }
    let mut fields: Vec<ArrowField> = first.fields().iter().map(|f| f.as_ref().clone()).collect();
    for field in second.fields().iter().filter(|f| !join.second_keys.contains(f.name())) {
        if first.field_with_name(field.name()).is_ok() {
            report(format!(
                "column '{}' is in both inputs; rename it on one side with a select before the join",
                field.name()
            ));
        }
        fields.push(field.as_ref().clone().with_nullable(field.is_nullable() || join.nullable_second));
    }
    Some(Arc::new(Schema::new(fields)))
}
