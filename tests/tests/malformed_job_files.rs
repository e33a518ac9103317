//! A malformed job file is refused with HTTP 400 and a message that names the problem, and nothing is
//! created.
//!
//! Goal: a data engineer who submits a broken job file learns what is wrong and where (which vertex or
//! edge, which field), from the answer alone, and the cluster is left exactly as it was.
//!
//! Method: start from one valid job (a test below shows the JobManager accepts it, so each refusal is due to
//! its breakage alone), break it in one way per case, submit each the way `curl -F job_file=@...` does, and
//! require 400 + `{"error": ...}` containing every distinctive piece of the expected message (e.g. the
//! vertex id and the word "cycle"). All cases are checked and every failing one reported together.
//! Finally `GET /jobs` must still be empty: a rejected submission leaves nothing behind.
use serde_json::{json, Value};
use sluice_tests::{Cluster, ClusterSpec};

/// datagen → split → lower → keep → HASH(word) → count → sink: one of every kind of check applies.
fn valid_job() -> Value {
    json!({
        "name": "malformed_base",
        "vertices": [
            {"id": "gen", "parallelism": 1, "datagen": {"seed": 7, "rows": 10, "columns": [
                {"name": "line", "words": {"vocabulary": ["a", "b"], "min_words": 1, "max_words": 3}},
                {"name": "n", "sequence": {"start": 0}}]}},
            {"id": "split", "parallelism": 1, "flat_map": {"column": "line", "output_column": "word"}},
            {"id": "lower", "parallelism": 1, "select": {"columns": [
                {"name": "word", "expr": "lower(word)"}, {"name": "n", "expr": "n"}]}},
            {"id": "keep", "parallelism": 1, "filter": {"predicate": "word <> ''"}},
            {"id": "count", "parallelism": 1, "aggregate": {
                "keys": ["word"], "aggregates": [{"function": "count", "name": "count"}]}},
            {"id": "sink", "parallelism": 1, "blackhole_sink": {}}
        ],
        "edges": [
            {"from": "gen", "to": "split"},
            {"from": "split", "to": "lower"},
            {"from": "lower", "to": "keep"},
            {"from": "keep", "to": "count", "partitioning": "HASH", "key": ["word"]},
            {"from": "count", "to": "sink"}
        ]
    })
}

/// The array `key` ("vertices" or "edges") of a job being broken.
fn list<'a>(job: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    job[key].as_array_mut().unwrap_or_else(|| panic!("the base job has an array '{key}'"))
}

/// Removes `field` from a vertex or edge being broken.
fn remove(object: &mut Value, field: &str) {
    if let Some(fields) = object.as_object_mut() {
        fields.remove(field);
    }
}

/// The vertex with this id in a job being broken.
fn vertex<'a>(job: &'a mut Value, id: &str) -> &'a mut Value {
    list(job, "vertices")
        .iter_mut()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("the base job has no vertex '{id}'"))
}

/// The edge at this index in a job being broken.
fn edge(job: &mut Value, index: usize) -> &mut Value {
    &mut job["edges"][index]
}

/// The base job changed by `change`, as file bytes.
fn broken(change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut job = valid_job();
    change(&mut job);
    job.to_string().into_bytes()
}

/// One malformed job file and the pieces its error message must contain.
struct Case {
    name: &'static str,
    file: Vec<u8>,
    expected: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let case = |name, file, expected| Case { name, file, expected };
    vec![
        case("not JSON", b"{\"name\": \"j\", \"vertices\": [".to_vec(), &["not valid JSON"]),
        case("not an object", b"[1, 2, 3]".to_vec(), &["must be a JSON object"]),
        case(
            "unknown top-level field",
            broken(|j| j["vertexes"] = json!([])),
            &["unknown top-level field 'vertexes'", "did you mean 'vertices'"],
        ),
        case(
            "unknown vertex field",
            broken(|j| vertex(j, "split")["paralelism"] = json!(2)),
            &["vertex 'split'", "'paralelism'", "did you mean 'parallelism'"],
        ),
        case(
            "unknown operator",
            broken(|j| {
                let v = vertex(j, "lower");
                v["map"] = v["select"].take();
                remove(v, "select");
            }),
            &["vertex 'lower'", "unknown operator or field 'map'"],
        ),
        case(
            "missing operator",
            broken(|j| {
                remove(vertex(j, "keep"), "filter");
            }),
            &["vertex 'keep'", "no operator"],
        ),
        case(
            "two operators in one vertex",
            broken(|j| vertex(j, "keep")["select"] = json!({"columns": [{"expr": "word"}]})),
            &["vertex 'keep'", "more than one operator"],
        ),
        case(
            "duplicate vertex id",
            broken(|j| vertex(j, "keep")["id"] = json!("lower")),
            &["vertex 'lower'", "duplicate vertex id"],
        ),
        case(
            "edge to an unknown vertex",
            broken(|j| edge(j, 4)["to"] = json!("sinc")),
            &["edge count -> sinc", "unknown vertex 'sinc'", "did you mean 'sink'"],
        ),
        case(
            "cycle",
            broken(|j| {
                list(j, "edges").push(json!({"from": "keep", "to": "lower"}));
            }),
            &["cycle", "keep", "lower"],
        ),
        case(
            "edge from a vertex to itself",
            broken(|j| {
                list(j, "edges").push(json!({"from": "lower", "to": "lower"}));
            }),
            &["edge lower -> lower", "cycle"],
        ),
        case(
            "parallelism 0",
            broken(|j| vertex(j, "split")["parallelism"] = json!(0)),
            &["vertex 'split'", "parallelism must be at least 1"],
        ),
        case(
            "parallelism of the wrong type",
            broken(|j| vertex(j, "split")["parallelism"] = json!("four")),
            &["vertex 'split'"],
        ),
        case(
            "SQL that does not parse",
            broken(|j| vertex(j, "lower")["select"]["columns"][0]["expr"] = json!("lower(word")),
            &["vertex 'lower' (select)", "column 'word'", "lower(word"],
        ),
        case(
            "unknown column in an expression",
            broken(|j| vertex(j, "lower")["select"]["columns"][0]["expr"] = json!("lower(wrd)")),
            &["vertex 'lower' (select)", "wrd"],
        ),
        case(
            "filter predicate that is not boolean",
            broken(|j| vertex(j, "keep")["filter"]["predicate"] = json!("length(word)")),
            &["vertex 'keep' (filter)", "must be boolean"],
        ),
        case(
            "HASH edge without a key",
            broken(|j| edge(j, 3)["key"] = json!([])),
            &["edge keep -> count", "HASH partitioning needs a 'key'"],
        ),
        case(
            "aggregate with an unknown function",
            broken(|j| vertex(j, "count")["aggregate"]["aggregates"][0]["function"] = json!("median")),
            &["vertex 'count' (aggregate)", "unknown aggregate function 'median'"],
        ),
        case(
            "window with a DataFusion aggregate over the wrong type",
            broken(|j| {
                *vertex(j, "count") = processing_time_window(json!({"aggregates": [
                    {"function": "stddev", "argument": "word", "name": "sd"}]}));
            }),
            &["vertex 'count' (window)", "aggregate 'sd': stddev(word)"],
        ),
        case(
            "window with both aggregates and reduce",
            broken(|j| {
                *vertex(j, "count") = processing_time_window(json!({
                    "aggregates": [{"function": "count", "name": "n"}],
                    "reduce": {"columns": [{"name": "word", "expr": "b.word"}]}}));
            }),
            &["vertex 'count' (window)", "one of 'aggregates', 'reduce' or 'top_n', not several"],
        ),
        case(
            "Top-N keeping no records, ordered by a column the input does not have",
            broken(|j| {
                *vertex(j, "count") = processing_time_window(json!({
                    "top_n": {"n": 0, "order_by": [{"column": "wrod", "descending": true}]}}));
            }),
            &["vertex 'count' (window)", "top_n.n is 0; it must be 1 to 1000", "column 'wrod' (did you mean"],
        ),
        case(
            "Top-N over session windows",
            broken(|j| {
                let mut window = processing_time_window(json!({
                    "top_n": {"n": 3, "order_by": [{"column": "word"}]}, "session": {"gap_ms": 1000}}));
                window["window"].as_object_mut().map(|w| w.remove("tumbling"));
                *vertex(j, "count") = window;
            }),
            &["vertex 'count' (window)", "'top_n' works on tumbling and sliding windows, not sessions"],
        ),
        case(
            "reduce of a column the input does not have",
            broken(|j| {
                *vertex(j, "count") = processing_time_window(json!({
                    "reduce": {"columns": [{"name": "total", "expr": "a.total + b.total"}]}}));
            }),
            &["vertex 'count' (window)", "reduce column 'total'", "not one of the input's non-key columns"],
        ),
        case(
            "custom operator without output columns",
            broken(|j| {
                *vertex(j, "count") =
                    json!({"id": "count", "parallelism": 2, "custom": {"name": "fraud_detector", "keys": ["word"]}});
            }),
            &["vertex 'count' (custom)", "'output' is missing"],
        ),
        case(
            "aggregate input not hashed by its keys",
            broken(|j| edge(j, 3)["key"] = json!(["n"])),
            &["vertex 'count' (aggregate)", "must be partitioned by its keys"],
        ),
        case(
            "sum over a string",
            broken(|j| {
                vertex(j, "count")["aggregate"]["aggregates"] =
                    json!([{"function": "sum", "argument": "word", "name": "s"}]);
            }),
            &["vertex 'count' (aggregate)", "numeric"],
        ),
        case(
            "flat_map of an unknown column",
            broken(|j| vertex(j, "split")["flat_map"]["column"] = json!("lines")),
            &["vertex 'split' (flat_map)", "unknown column 'lines'", "did you mean 'line'"],
        ),
        case(
            "FORWARD between different parallelisms",
            broken(|j| {
                vertex(j, "sink")["parallelism"] = json!(2);
                edge(j, 4)["partitioning"] = json!("FORWARD");
            }),
            &["edge count -> sink", "FORWARD needs equal parallelism"],
        ),
        case(
            "unknown partitioning",
            broken(|j| edge(j, 3)["partitioning"] = json!("HASHED")),
            &["edge keep -> count", "HASHED"],
        ),
        case(
            "no sink",
            broken(|j| {
                list(j, "vertices").retain(|v| v["id"] != "sink");
                list(j, "edges").retain(|e| e["to"] != "sink");
            }),
            &["no sink"],
        ),
    ]
}

#[test]
fn every_malformed_job_file_is_refused_with_a_message_naming_the_problem() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 0, ..ClusterSpec::default() });

    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let answer = cluster.submit_file(&case.file);
        let error = answer.body["error"].as_str().unwrap_or("");
        let missing: Vec<&str> = case.expected.iter().copied().filter(|piece| !error.contains(piece)).collect();
        if answer.status != 400 || error.is_empty() || !missing.is_empty() {
            failures.push(format!(
                "- {}: HTTP {}, missing {missing:?} in the answer {}",
                case.name, answer.status, answer.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed job files were not refused as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let jobs = cluster.get("/jobs");
    assert_eq!(jobs["jobs"], json!([]), "a refused submission must create nothing: {jobs}");
}

#[test]
fn every_problem_of_a_job_file_is_reported_at_once_and_the_unbroken_base_is_accepted() {
    let cluster = Cluster::start(ClusterSpec { task_managers: 0, ..ClusterSpec::default() });

    // Two problems in the structure, and two in the expressions of one vertex (a vertex downstream of a
    // broken one is not type-checked, since its input schema is unknown).
    let structural = broken(|j| {
        vertex(j, "split")["parallelism"] = json!(0);
        edge(j, 4)["to"] = json!("sinc");
    });
    let expressions = broken(|j| {
        vertex(j, "lower")["select"]["columns"] =
            json!([{"name": "word", "expr": "lower(wrd)"}, {"name": "n", "expr": "nn + 1"}]);
    });
    for (file, pieces) in
        [(structural, ["parallelism must be at least 1", "unknown vertex 'sinc'"]), (expressions, ["wrd", "nn"])]
    {
        let answer = cluster.submit_file(&file);
        assert_eq!(answer.status, 400, "{}", answer.body);
        let problems: Vec<&str> = answer.body["problems"]
            .as_array()
            .map(|ps| ps.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(problems.len(), 2, "both problems must be reported, one per entry: {}", answer.body);
        for (problem, piece) in problems.iter().zip(pieces) {
            assert!(problem.contains(piece), "expected '{piece}' in '{problem}'");
        }
        let error = answer.body["error"].as_str().unwrap_or("");
        assert_eq!(error.lines().collect::<Vec<_>>(), problems, "'error' lists the problems one per line");
    }
    assert_eq!(cluster.get("/jobs")["jobs"], json!([]));

    // The base of every case is itself valid, so each refusal above is due to its breakage alone. With no
    // TaskManager the job then waits for slots; only its acceptance matters here.
    let answer = cluster.submit_file(valid_job().to_string().as_bytes());
    assert_eq!(answer.status, 200, "the base job must be accepted: {}", answer.body);
    assert_eq!(cluster.get("/jobs")["jobs"].as_array().map(Vec::len), Some(1));
}

/// The job's "count" vertex as a processing-time tumbling window on "word" with the given settings.
fn processing_time_window(settings: Value) -> Value {
    let mut window = json!({"keys": ["word"], "tumbling": {"size_ms": 1000}, "time": "PROCESSING_TIME"});
    if let (Some(window), Some(settings)) = (window.as_object_mut(), settings.as_object()) {
        window.extend(settings.clone());
    }
    json!({"id": "count", "parallelism": 2, "window": window})
}
