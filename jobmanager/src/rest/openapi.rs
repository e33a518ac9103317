//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, written by hand next to the routes and
//! kept true by tests: the routes and methods here match the router's (below), and every response of a live
//! JobManager matches its schema (`tests/tests/rest_api.rs`).
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub(super) const OPENAPI_JSON: &str = include_str!("openapi.json");

/// `GET /openapi.json` (no token needed: it describes routes, it holds no data).
pub(super) async fn document() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    /// (METHOD, path) of every operation of the document.
    fn documented() -> BTreeSet<(String, String)> {
        let document: Value = serde_json::from_str(super::OPENAPI_JSON).unwrap_or_else(|e| panic!("openapi.json: {e}"));
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect()
    }

    /// (METHOD, path) of every route the router declares, read from its source: each `.route("path", ...)`
    /// up to the next `.route(` or `.fallback(`, and the method routers (`get(`, `post(`, ...) in it.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = &source[source.find("fn router(").unwrap_or(0)..];
        let body = &body[..body.find(".fallback(").unwrap_or(body.len())];
        let mut routes = BTreeSet::new();
        for part in body.split(".route(").skip(1) {
            let path = part.trim_start().trim_start_matches('"');
            let Some(end) = path.find('"') else { continue };
            let (path, rest) = (&path[..end], &path[end..]);
            for method in METHODS {
                let called = rest.match_indices(&format!("{method}(")).any(|(at, _)| {
                    // A whole word: `get(` but not `budget(`.
                    at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_'
                });
                if called {
                    routes.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
        routes
    }

    /// Goal: the document describes exactly the routes served, method by method. Method: both sets compared.
    #[test]
    fn the_document_lists_every_route_and_nothing_else() {
        let (documented, routed) = (documented(), routed());
        assert!(routed.len() > 20, "the router's routes were not found in its source: {routed:?}");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&routed).collect();
        assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
        assert!(unserved.is_empty(), "openapi.json describes routes nobody serves: {unserved:?}");
    }

    /// Goal: every `$ref` resolves and every operation says what it answers. Method: a walk of the document.
    #[test]
    fn every_reference_resolves_and_every_operation_has_responses() {
        let document: Value = serde_json::from_str(super::OPENAPI_JSON).unwrap_or_else(|e| panic!("openapi.json: {e}"));
        fn walk(value: &Value, document: &Value, missing: &mut Vec<String>) {
            match value {
                Value::Object(object) => {
                    if let Some(Value::String(target)) = object.get("$ref") {
                        let pointer = target.trim_start_matches('#');
                        if document.pointer(pointer).is_none() {
                            missing.push(target.clone());
                        }
                    }
                    object.values().for_each(|v| walk(v, document, missing));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, document, missing)),
                _ => {}
            }
        }
        let mut missing = Vec::new();
        walk(&document, &document, &mut missing);
        assert!(missing.is_empty(), "unresolved references: {missing:?}");
        for (method, path) in documented() {
            let operation = &document["paths"][&path][method.to_lowercase()];
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
    }
}
