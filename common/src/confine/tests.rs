//! The confinement of job files as the JobManager and the TaskManagers apply it, on a directory of its own.
use std::path::{Path, PathBuf};

use clap::Parser;

use super::*;
use crate::job::parse_job_file;

#[derive(Parser, Debug)]
struct Flags {
    #[command(flatten)]
    confinement: ConfinementArgs,
}

fn args(flags: &[&str]) -> ConfinementArgs {
    let argv = std::iter::once("test").chain(flags.iter().copied());
    Flags::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).confinement
}

/// A working directory with `examples/`, `data/`, a secret outside both, and `data/link` → the outside.
struct Workspace {
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for sub in ["examples/data", "data", "outside"] {
            std::fs::create_dir_all(base.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(base.join("outside").join("secret"), "s").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(base.join("outside"), base.join("data").join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        Workspace { _dir: dir, base }
    }

    fn confinement(&self, flags: &[&str]) -> Confinement {
        let savepoints = [self.base.join("data/jobmanager/savepoints").display().to_string()];
        Confinement::resolve(&self.base, &args(flags), &savepoints).unwrap_or_else(|e| panic!("{e}"))
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.base.join(relative)
    }
}

fn graph(vertices: &str) -> JobGraph {
    let json = format!(r#"{{"vertices": [{vertices}], "edges": []}}"#);
    parse_job_file(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn file_source(path: &str) -> String {
    format!(
        r#"{{"id": "src", "parallelism": 1, "file_source": {{"path": "{path}", "schema": [{{"name": "l", "type": "STRING"}}]}}}}"#
    )
}

fn file_sink(path: &str) -> String {
    format!(r#"{{"id": "out", "parallelism": 1, "file_sink": {{"path": "{path}"}}}}"#)
}

fn kafka_sink(bootstrap: &str, properties: &str) -> String {
    format!(
        r#"{{"id": "k", "parallelism": 1, "kafka_sink": {{"bootstrap_servers": "{bootstrap}", "topic": "t", "properties": {{{properties}}}}}}}"#
    )
}

fn problems(confinement: &Confinement, vertices: &str) -> Vec<(RefusalReason, String)> {
    confinement.check_graph(&graph(vertices)).into_iter().map(|r| (r.reason, r.problem)).collect()
}

#[test]
fn the_defaults_allow_the_examples_and_data_and_nothing_else() {
    let ws = Workspace::new();
    let defaults = args(&[]);
    assert_eq!(defaults.allowed_input_dirs, vec!["examples", "data"]);
    assert_eq!(defaults.allowed_output_dirs, vec!["data"]);
    assert!(defaults.allowed_kafka_brokers.is_empty());
    let confinement = ws.confinement(&[]);
    let examples_job =
        format!("{}, {}", file_source("examples/data/sample.txt"), file_sink("data/output/word_count/not/yet/there"));
    assert_eq!(problems(&confinement, &examples_job), Vec::new());
    assert_eq!(confinement.input_path("examples/data/x"), Ok(ws.path("examples/data/x")));
    assert_eq!(confinement.output_path("data/out"), Ok(ws.path("data/out")));
    assert!(confinement.output_path("examples/out").is_err(), "examples/ is for reading only");
}

#[test]
fn the_processes_own_data_is_refused_even_inside_an_allowed_root() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("data/jobmanager")).unwrap_or_else(|e| panic!("{e}"));
    let confinement = ws.confinement(&[]).protect(["data/jobmanager", "data/tm/cluster.secret"]);
    for (path, reading) in [
        ("data/jobmanager/cluster.secret", true),
        ("data/jobmanager/sluice.db", true),
        ("data/jobmanager/../jobmanager/admin.token", true),
        ("data/tm/cluster.secret", true),
        ("data", true),
        ("data/jobmanager/out", false),
    ] {
        let result = if reading { confinement.input_path(path) } else { confinement.output_path(path) };
        let error = result.err().unwrap_or_else(|| panic!("{path} was allowed"));
        assert!(error.contains("keeps its own data"), "{path}: {error}");
    }
    assert!(confinement.input_path("data/input/words.txt").is_ok(), "the rest of data/ stays usable");
    assert!(confinement.output_path("data/output/x").is_ok());
}

#[test]
fn paths_out_of_the_roots_are_refused_naming_the_vertex_and_field() {
    let ws = Workspace::new();
    let confinement = ws.confinement(&[]);
    let cases = [
        (file_source("/etc/passwd"), "vertex 'src' (file_source): path '/etc/passwd' is outside the allowed input"),
        (file_sink("../../x"), "vertex 'out' (file_sink): path '../../x'"),
        (file_source("data/link/secret"), "vertex 'src' (file_source): path 'data/link/secret' (= "),
        (file_sink("data/link/new"), "vertex 'out' (file_sink): path 'data/link/new' (= "),
        (file_sink("data/new/../../x"), "'..' or '.' in the part"),
    ];
    for (vertex, expected) in cases {
        let found = problems(&confinement, &vertex);
        assert_eq!(found.len(), 1, "{vertex}: {found:?}");
        assert_eq!(found[0].0, RefusalReason::PathOutsideRoots);
        assert!(found[0].1.contains(expected), "{vertex}: {}", found[0].1);
    }
    let message = &problems(&confinement, &file_source("/etc/passwd"))[0].1;
    assert!(message.contains(&ws.path("examples").display().to_string()), "names the allowed roots: {message}");
    assert!(message.contains("--allowed-input-dirs"), "says how to allow more: {message}");
}

#[test]
fn wider_roots_allow_more_and_an_empty_list_allows_nothing() {
    let ws = Workspace::new();
    let wide = ws.confinement(&["--allowed-input-dirs", "outside,examples", "--allowed-output-dirs", "/tmp,data"]);
    assert!(wide.input_path("data/link/secret").is_ok(), "the symlink's target is an allowed root itself");
    assert!(wide.input_path("data/other").is_err());
    let none = ws.confinement(&["--allowed-input-dirs", "", "--allowed-output-dirs", ""]);
    assert!(none.input_path("examples/data/x").is_err());
    assert!(none.output_path("data/x").is_err());
}

#[test]
fn dangerous_and_unknown_kafka_properties_are_refused_and_files_must_be_under_an_input_root() {
    let ws = Workspace::new();
    let confinement = ws.confinement(&[]);
    let properties = r#""plugin.library.paths": "/tmp/evil.so", "linger.ms": "5", "sasl.password": "p",
        "ssl.ca.location": "/etc/ssl/certs", "ssl.key.location": "data/client.key", "bogus.x": "1""#;
    let found = problems(&confinement, &kafka_sink("b:9092", properties));
    let text: Vec<&str> = found.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(found.len(), 3, "{text:#?}");
    assert!(found.iter().all(|(reason, _)| *reason == RefusalReason::KafkaProperty));
    assert!(text[0].starts_with("vertex 'k' (kafka_sink): properties: 'bogus.x' is not among"), "{}", text[0]);
    assert!(text[1].contains("'plugin.library.paths' is refused: it loads shared libraries"), "{}", text[1]);
    assert!(text[2].contains("'ssl.ca.location' '/etc/ssl/certs' is outside the allowed input"), "{}", text[2]);
    let probe = problems(&confinement, &kafka_sink("b:9092", r#""ssl.ca.location": "probe""#));
    assert_eq!(probe, Vec::new(), "probing the system's CA locations names no file");
}

#[test]
fn a_broker_allowlist_admits_listed_hosts_and_host_ports_only() {
    let ws = Workspace::new();
    let any = ws.confinement(&[]);
    assert_eq!(problems(&any, &kafka_sink("anywhere:9092", "")), Vec::new(), "no allowlist: any broker");
    let listed = ws.confinement(&["--allowed-kafka-brokers", "kafka.internal,127.0.0.1:9092"]);
    assert_eq!(problems(&listed, &kafka_sink("KAFKA.internal:9093,127.0.0.1:9092", "")), Vec::new());
    let found = problems(&listed, &kafka_sink("127.0.0.1:9093,evil:9092", ""));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(reason, _)| *reason == RefusalReason::KafkaBroker));
    assert!(found[1].1.contains("bootstrap_servers 'evil:9092' is not an allowed broker"), "{}", found[1].1);
}

#[test]
fn savepoints_go_under_the_savepoint_location_or_an_extra_prefix() {
    let ws = Workspace::new();
    let confinement = ws.confinement(&["--allowed-savepoint-prefixes", "data/archive,s3://bucket/sp"]);
    assert_eq!(confinement.check_savepoint_target("data/jobmanager/savepoints/sp-1"), Ok(()));
    assert_eq!(confinement.check_savepoint_target("data/archive/sp-1"), Ok(()));
    assert_eq!(confinement.check_savepoint_target("s3://bucket/sp/x"), Ok(()));
    let root = confinement.check_savepoint_target("/").err().map(|r| (r.reason, r.problem));
    let Some((reason, problem)) = root else { panic!("a savepoint into / must be refused") };
    assert_eq!(reason, RefusalReason::SavepointTarget);
    assert!(problem.contains("'/' is outside the allowed savepoint locations"), "{problem}");
}

#[test]
fn secrets_are_redacted_in_graphs_and_messages_and_nothing_else_is() {
    let job = graph(&kafka_sink("b:9092", r#""sasl.password": "hunter2", "sasl.jaas.config": "x", "linger.ms": "5""#));
    let redacted = redact_graph(job.clone());
    let Some(Operator::KafkaSink(sink)) = redacted.vertices[0].operator.as_ref() else { panic!("a kafka sink") };
    assert_eq!(sink.properties.get("sasl.password").map(String::as_str), Some(REDACTED));
    assert_eq!(sink.properties.get("sasl.jaas.config").map(String::as_str), Some(REDACTED));
    assert_eq!(sink.properties.get("linger.ms").map(String::as_str), Some("5"));
    let Some(Operator::KafkaSink(original)) = job.vertices[0].operator.as_ref() else { panic!("a kafka sink") };
    let message = redact_text("Client config error: sasl.password hunter2", &original.properties);
    assert_eq!(message, "Client config error: sasl.password ***");
}

#[test]
fn relative_roots_resolve_against_the_base_not_the_tests_working_directory() {
    let ws = Workspace::new();
    let confinement = ws.confinement(&[]);
    let elsewhere = Path::new("/").join("examples");
    assert!(confinement.input_path(&elsewhere.display().to_string()).is_err());
}

#[test]
fn the_connectors_own_properties_are_left_to_validation_which_names_the_field() {
    let ws = Workspace::new();
    let confinement = ws.confinement(&[]);
    let owned = kafka_sink("b:9092", r#""transactional.id": "x", "bootstrap.servers": "evil:1""#);
    assert_eq!(problems(&confinement, &owned), Vec::new(), "reported once, by validation");
    let job = format!(
        r#"{{"vertices": [{{"id": "g", "parallelism": 1, "datagen": {{"columns": [{{"name": "v", "sequence": {{}}}}]}}}}, {owned}],
            "edges": [{{"from": "g", "to": "k"}}]}}"#
    );
    let parsed = parse_job_file(job.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let text = crate::job::validate(parsed).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("property 'transactional.id' is set by the sink itself"), "{text}");
}
