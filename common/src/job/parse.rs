//! Reading a job file (proto3 JSON) with messages that name the vertex, edge and field at fault.
//!
//! pbjson's generated deserializers already refuse unknown fields, but their messages carry only a line and
//! column. So the file is first read as plain JSON, walked vertex by vertex and edge by edge, and each piece
//! is deserialized on its own: an error then says *which* vertex, and an unknown operator gets a
//! "did you mean". Every problem is collected before returning.
use serde_json::{Map, Value};

use super::{hint, JobError, OPERATOR_KINDS};
use crate::proto::{Edge, JobConfig, JobGraph, Vertex};

const TOP_LEVEL_FIELDS: &[&str] = &["name", "vertices", "edges", "config"];
const VERTEX_FIELDS: &[&str] = &["id", "parallelism", "event_time"];

/// Reads a job file. Every problem is reported, each naming where it is.
pub fn parse_job_file(bytes: &[u8]) -> Result<JobGraph, JobError> {
    super::reset_suggestion_budget();
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| JobError::new(vec![format!("the job file is not valid JSON: {e}")]))?;
    let Value::Object(top) = value else {
        return Err(JobError::new(vec![format!("the job file must be a JSON object, found {}", kind_of(&value))]));
    };
    let mut problems = Vec::new();
    for key in top.keys() {
        let field = snake_case(key);
        if !TOP_LEVEL_FIELDS.contains(&field.as_str()) {
            problems.push(format!(
                "unknown top-level field '{key}'{}; expected one of: {}",
                hint(&field, TOP_LEVEL_FIELDS),
                TOP_LEVEL_FIELDS.join(", ")
            ));
        }
    }
    let mut graph = JobGraph::default();
    match top.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => graph.name = name.clone(),
        Some(other) => problems.push(format!("'name' must be a string, found {}", kind_of(other))),
    }
    graph.vertices = parse_list(&top, "vertices", &mut problems, parse_vertex);
    graph.edges = parse_list(&top, "edges", &mut problems, parse_edge);
    if let Some(config) = top.get("config").filter(|v| !v.is_null()) {
        match serde_json::from_value::<JobConfig>(config.clone()) {
            Ok(config) => graph.config = Some(config),
            Err(e) => problems.push(format!("config: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(graph)
    } else {
        Err(JobError::new(problems))
    }
}

fn parse_list<T>(
    top: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
    parse_item: fn(usize, &Value, &mut Vec<String>) -> Option<T>,
) -> Vec<T> {
    match top.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().filter_map(|(i, item)| parse_item(i, item, problems)).collect()
        }
        Some(other) => {
            problems.push(format!("'{key}' must be an array, found {}", kind_of(other)));
            Vec::new()
        }
    }
}

fn parse_vertex(index: usize, value: &Value, problems: &mut Vec<String>) -> Option<Vertex> {
    let Value::Object(fields) = value else {
        problems.push(format!("vertices[{index}] must be an object, found {}", kind_of(value)));
        return None;
    };
    let name = match fields.get("id") {
        Some(Value::String(id)) => format!("vertex '{id}' (vertices[{index}])"),
        _ => format!("vertices[{index}]"),
    };
    let before = problems.len();
    let mut operators = Vec::new();
    for key in fields.keys() {
        let field = snake_case(key);
        if OPERATOR_KINDS.contains(&field.as_str()) {
            operators.push(key.as_str());
        } else if !VERTEX_FIELDS.contains(&field.as_str()) {
            let mut known: Vec<&str> = VERTEX_FIELDS.to_vec();
            known.extend_from_slice(OPERATOR_KINDS);
            problems.push(format!(
                "{name}: unknown operator or field '{key}'{}; operators are: {}",
                hint(&field, &known),
                OPERATOR_KINDS.join(", ")
            ));
        }
    }
    match operators.len() {
        0 if problems.len() == before => {
            problems.push(format!("{name}: no operator; give exactly one of: {}", OPERATOR_KINDS.join(", ")))
        }
        0 | 1 => {}
        _ => problems
            .push(format!("{name}: more than one operator ({}); a vertex has exactly one", operators.join(", "))),
    }
    if problems.len() > before {
        return None;
    }
    match serde_json::from_value::<Vertex>(value.clone()) {
        Ok(vertex) => Some(vertex),
        Err(e) => {
            problems.push(format!("{name}: {e}"));
            None
        }
    }
}

fn parse_edge(index: usize, value: &Value, problems: &mut Vec<String>) -> Option<Edge> {
    let endpoint = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
    let name = format!("edge {} -> {} (edges[{index}])", endpoint("from"), endpoint("to"));
    if !value.is_object() {
        problems.push(format!("edges[{index}] must be an object, found {}", kind_of(value)));
        return None;
    }
    match serde_json::from_value::<Edge>(value.clone()) {
        Ok(edge) => Some(edge),
        Err(e) => {
            problems.push(format!("{name}: {e}"));
            None
        }
    }
}

/// `flatMap` → `flat_map`: the proto3 JSON mapping accepts both spellings of a field.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> Vec<String> {
        parse_job_file(json.as_bytes()).err().map(|e| e.problems().to_vec()).unwrap_or_default()
    }

    #[test]
    fn a_minimal_job_parses_in_both_field_spellings() {
        let snake =
            r#"{"name":"j","vertices":[{"id":"s","parallelism":2,"flat_map":{"column":"line","output_column":"w"}}]}"#;
        let camel =
            r#"{"name":"j","vertices":[{"id":"s","parallelism":2,"flatMap":{"column":"line","outputColumn":"w"}}]}"#;
        let a = parse_job_file(snake.as_bytes());
        let b = parse_job_file(camel.as_bytes());
        assert!(a.is_ok(), "{a:?}");
        assert_eq!(a.ok(), b.ok());
    }

    #[test]
    fn every_problem_is_reported_with_its_vertex() {
        let found = problems(
            r#"{"nme":"j","vertices":[{"id":"a","flatmap":{}},{"id":"b"},{"id":"c","filter":{"predicat":"x"}}]}"#,
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("unknown top-level field 'nme'") && found[0].contains("did you mean 'name'"));
        assert!(found[1].contains("vertex 'a'") && found[1].contains("did you mean 'flat_map'"));
        assert!(found[2].contains("vertex 'b'") && found[2].contains("no operator"));
        assert!(found[3].contains("vertex 'c'") && found[3].contains("predicat"));
    }

    #[test]
    fn not_json_and_not_an_object_are_clear_errors() {
        assert!(problems("{not json").first().is_some_and(|p| p.contains("not valid JSON")));
        assert!(problems("[1,2]").first().is_some_and(|p| p.contains("must be a JSON object")));
    }
}
