//! Step 3 of validation: the schema of every vertex's output, in topological order, each vertex's own
//! settings checked by its kind's spec (`crate::job::operators`) against what it receives.
use std::sync::Arc;

use std::collections::HashMap;

use datafusion::arrow::datatypes::{Schema, SchemaRef};

use crate::expr::ExprCompiler;
use crate::job::hint;
use crate::job::operators::{
    self, edge_source_key, is_changelog, is_time_type, operator_kind, role, unions_inputs, Role, SchemaInput, Upstream,
    RETRACT_COLUMN,
};
use crate::proto::{self, vertex::Operator, Edge, JobGraph};

/// Infers every vertex's output schema and event-time column, reporting what is wrong on the way.
pub(super) fn infer_schemas(graph: &JobGraph, order: &[usize], problems: &mut Vec<String>) -> Upstream {
    let compiler = ExprCompiler::new();
    let mut inferred = Upstream::default();
    for &i in order {
        let vertex = &graph.vertices[i];
        let Some(operator) = &vertex.operator else { continue };
        let in_edges: Vec<&Edge> = graph.edges.iter().filter(|e| e.to == vertex.id).collect();
        let source = role(operator) == Role::Source;
        if vertex.event_time.is_some() && !source {
            problems.push(format!(
                "vertex '{}': 'event_time' belongs on a source; {} takes the event time of its input",
                vertex.id,
                operator_kind(operator)
            ));
        }
        for edge in in_edges.iter().filter(|e| !e.side_output.is_empty()) {
            let upstream = graph.vertices.iter().find(|v| v.id == edge.from).and_then(|v| v.operator.as_ref());
            if !matches!(upstream, Some(Operator::Window(_))) {
                problems.push(format!(
                    "edge {} -> {}: side output '{}' comes only from a window, and '{}' is not one",
                    edge.from, edge.to, edge.side_output, edge.from
                ));
            }
        }
        let kind = operator_kind(operator);
        if !operators::takes_changelog(operator) {
            for edge in in_edges.iter().filter(|e| schema_of_edge(e, &inferred).is_some_and(|s| is_changelog(s))) {
                problems.push(format!(
                    "vertex '{}' ({kind}): its input '{}' is a changelog (a '{RETRACT_COLUMN}' column, from a running \
                     aggregate with emit CHANGELOG), and {kind} would take a retraction for a new row; a running \
                     aggregate, a filter, a select or a sink takes a changelog",
                    vertex.id, edge.from
                ));
            }
        }
        if !unions_inputs(operator) {
            // A join reads its two inputs apart, and its output carries no event-time column of its own.
            let mut report = |problem: String| problems.push(format!("vertex '{}' ({kind}): {problem}", vertex.id));
            let empty = Arc::new(Schema::empty());
            let mut input = schema_input(empty, None, &in_edges, &inferred, graph, &compiler, &mut report);
            if let Some(output) = operators::output_schema(operator, &mut input) {
                inferred.schemas.insert(vertex.id.clone(), output);
            }
            continue;
        }
        let received = input_schema(vertex, &in_edges, &inferred, problems);
        let mut report = |problem: String| problems.push(format!("vertex '{}' ({kind}): {problem}", vertex.id));
        let received = match received {
            Some(received) => received,
            None if source => Arc::new(Schema::empty()),
            None => {
                // The problem was reported, or an upstream vertex failed already; what needs no input schema
                // is still checked, so one submission shows every mistake.
                operators::check_without_input(operator, &mut report);
                continue;
            }
        };
        let input_time = input_event_time(&in_edges, &inferred.event_time);
        let mut input = schema_input(received, input_time, &in_edges, &inferred, graph, &compiler, &mut report);
        let output = operators::output_schema(operator, &mut input);
        let SchemaInput { mut output_time, side_outputs, .. } = input;
        if let Some(event_time) = &vertex.event_time {
            if let Some(schema) = &output {
                output_time = Some(event_time.column.clone());
                check_event_time(event_time, schema, &mut report);
            }
        }
        for (name, schema, time) in side_outputs {
            if let Some(time) = time {
                inferred.event_time.insert(format!("{}/{name}", vertex.id), time);
            }
            inferred.side_outputs.insert((vertex.id.clone(), name), schema);
        }
        if let Some(output) = output {
            if let Some(time) = output_time {
                inferred.event_time.insert(vertex.id.clone(), time);
            }
            inferred.schemas.insert(vertex.id.clone(), output);
        }
    }
    inferred
}

/// What a vertex's spec sees.
fn schema_input<'a, 'r>(
    input: SchemaRef,
    input_time: Option<String>,
    in_edges: &'a [&'a Edge],
    upstream: &'a Upstream,
    graph: &'a JobGraph,
    compiler: &'a ExprCompiler,
    report: &'r mut dyn FnMut(String),
) -> SchemaInput<'a, 'r> {
    SchemaInput {
        input,
        output_time: input_time.clone(),
        input_time,
        in_edges,
        upstream,
        side_outputs: Vec::new(),
        config: graph.config.as_ref(),
        compiler,
        report,
    }
}

/// The event-time column shared by all of a vertex's inputs, if they agree on one.
fn input_event_time(in_edges: &[&Edge], event_time: &HashMap<String, String>) -> Option<String> {
    let mut columns = in_edges.iter().map(|e| event_time.get(&edge_source_key(e)));
    let first = columns.next()??;
    columns.all(|c| c == Some(first)).then(|| first.clone())
}

fn check_event_time(event_time: &proto::EventTime, schema: &Schema, report: &mut dyn FnMut(String)) {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    match schema.field_with_name(&event_time.column) {
        Ok(field) if is_time_type(field.data_type()) => {}
        Ok(field) => report(format!(
            "event_time column '{}' is {}; it must be TIMESTAMP_MS or INT64 (milliseconds)",
            event_time.column,
            field.data_type()
        )),
        Err(_) if event_time.column.is_empty() => {
            report(format!("event_time needs a 'column'; the output has: {}", names.join(", ")))
        }
        Err(_) => report(format!(
            "unknown event_time column '{}'{}; the output has: {}",
            event_time.column,
            hint(&event_time.column, &names),
            names.join(", ")
        )),
    }
    if event_time.watermarks.is_none() {
        report("event_time needs a watermark strategy: 'bounded_out_of_orderness_ms' or 'monotonous': {}".into());
    }
    if event_time.idle_timeout_ms == Some(0) {
        report("event_time.idle_timeout_ms must be positive (leave it out to never mark the source idle)".into());
    }
}

fn input_schema(
    vertex: &proto::Vertex,
    in_edges: &[&Edge],
    inferred: &Upstream,
    problems: &mut Vec<String>,
) -> Option<SchemaRef> {
    let mut inputs = in_edges.iter().map(|e| (e.from.as_str(), schema_of_edge(e, inferred)));
    let (first_id, first) = inputs.next()?;
    let first = first?.clone();
    for (id, schema) in inputs {
        let schema = schema?;
        if !same_columns(schema, &first) {
            problems.push(format!(
                "vertex '{}': its inputs '{first_id}' and '{id}' have different schemas ({} vs {}); inputs are unioned and must match",
                vertex.id,
                describe(&first),
                describe(schema)
            ));
            return None;
        }
    }
    Some(first)
}

/// The schema of what an edge carries (its vertex's main output or side output), when known.
fn schema_of_edge<'u>(edge: &Edge, inferred: &'u Upstream) -> Option<&'u SchemaRef> {
    if edge.side_output.is_empty() {
        inferred.schemas.get(&edge.from)
    } else {
        inferred.side_outputs.get(&(edge.from.clone(), edge.side_output.clone()))
    }
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

pub(super) fn describe(schema: &Schema) -> String {
    let columns: Vec<String> = schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
    format!("[{}]", columns.join(", "))
}
