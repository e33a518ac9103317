//! Checks JSON answers against the JobManager's OpenAPI document (`jobmanager/src/rest/openapi.json`): the
//! subset of JSON Schema the document uses (`$ref`, `type` with `null`, `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `anyOf`, `minimum`, `maximum`).
use serde_json::Value;

/// The document, as the JobManager serves it.
pub fn document() -> Value {
    serde_json::from_str(include_str!("../../jobmanager/src/rest/openapi.json"))
        .unwrap_or_else(|e| panic!("openapi.json is not JSON: {e}"))
}

/// The schema of the answer `status` to `method` on `path` (a templated path as in the document), if the
/// document declares one for JSON.
pub fn response_schema<'a>(document: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
    let responses = &document["paths"][path][method.to_lowercase()]["responses"];
    responses[status.to_string()]["content"]["application/json"].get("schema")
}

/// Every way `value` departs from `schema`, each with its JSON path; empty when it conforms.
pub fn violations(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(document, schema, value, "$", &mut found);
    found
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(target) => document.pointer(target.trim_start_matches('#')).unwrap_or(&Value::Null),
        None => schema,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

fn check(document: &Value, schema: &Value, value: &Value, at: &str, found: &mut Vec<String>) {
    let schema = resolve(document, schema);
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        if !options.iter().any(|option| violations(document, option, value).is_empty()) {
            found.push(format!("{at}: {value} matches none of anyOf"));
        }
        return;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        found.push(format!("{at}: {value} is not of type {types:?}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !value.is_null() && !allowed.contains(value) {
            found.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(number) = value.as_f64() {
        if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| number < min) {
            found.push(format!("{at}: {number} is below the minimum"));
        }
        if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| number > max) {
            found.push(format!("{at}: {number} is above the maximum"));
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema.get("properties").and_then(Value::as_object)) {
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = required.as_str() {
                if !object.contains_key(name) {
                    found.push(format!("{at}: the required property {name:?} is missing"));
                }
            }
        }
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        for (name, item) in object {
            match properties.get(name) {
                Some(property) => check(document, property, item, &format!("{at}.{name}"), found),
                None if closed => found.push(format!("{at}: the property {name:?} is not documented")),
                None => {}
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(document, schema, item, &format!("{at}[{i}]"), found);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Goal: the checker finds what it must (else the API test proves nothing). Method: a schema with a
    /// reference, a nullable field, an enum, a closed object and an array, against good and bad values.
    #[test]
    fn the_checker_finds_missing_extra_and_mistyped_properties() {
        let document = json!({"components": {"schemas": {"Item": {"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 0}, "s": {"type": ["string", "null"]},
            "e": {"type": "string", "enum": ["A", "B"]}}, "required": ["n", "s"], "additionalProperties": false}}}});
        let schema = json!({"type": "array", "items": {"$ref": "#/components/schemas/Item"}});
        assert!(violations(&document, &schema, &json!([{"n": 1, "s": null, "e": "A"}])).is_empty());
        let bad = violations(&document, &schema, &json!([{"n": -1, "s": 3, "e": "C", "x": 1}, {"s": "a"}]));
        assert_eq!(bad.len(), 5, "{bad:#?}");
    }
}
