//! Validating a job graph as a whole: structure, parameters, and the Arrow schema of every vertex.
//!
//! Steps, each adding to one list of problems:
//! 0. sizes: vertex and edge counts, id and name lengths within [`crate::job::bounds`] (alone: the later
//!    steps run only on a graph whose sizes are bounded);
//! 1. vertices: ids unique and non-empty, parallelism in `1..=max_parallelism`, an operator present;
//! 2. edges: endpoints exist (with a "did you mean"), partitioning fits (HASH has a key, FORWARD joins equal
//!    parallelisms), no self-loops, no cycles, sources have no inputs, everything else has inputs, only sinks
//!    lack outputs;
//! 3. schemas, in topological order: each operator's parameters are checked against its input schema,
//!    compiling its SQL expressions with DataFusion, and its output schema is inferred.
//!
//! Step 3 runs only when steps 1 and 2 found nothing, because a broken structure makes schema errors noise.
//! Steps 1 and 2 are in [`graph`], step 3 in [`schemas`]; what each operator kind checks of its own settings
//! is in that kind's file under `super::operators`.
//!
//! On success the graph is returned normalized (defaults filled in, every edge's partitioning resolved) with
//! its chains, so the JobManager stores and the TaskManagers execute exactly what was validated.
use std::collections::HashMap;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;

use super::bounds::SLOT_WAIT_TIMEOUT_MS_MAX;
use super::chain::build_chains;
use super::operators::edge_source_key;
use super::JobError;
use crate::keygroup::{MAX_PARALLELISM_DEFAULT, MAX_PARALLELISM_LIMIT};
use crate::proto::{self, vertex::Operator, Edge, JobConfig, JobGraph, Placement};

mod graph;
mod schemas;
mod sizes;

/// How often a source emits its watermark when the job does not say.
pub const WATERMARK_INTERVAL_MS_DEFAULT: u64 = 200;
/// How long a job waits for slots before it fails, when its config does not say.
const SLOT_WAIT_TIMEOUT_MS_DEFAULT: u64 = 60_000;
const _: () = assert!(SLOT_WAIT_TIMEOUT_MS_DEFAULT <= SLOT_WAIT_TIMEOUT_MS_MAX);
/// How long a partially filled output buffer may wait before it is sent, when the config does not say:
/// a few milliseconds of latency buy full buffers under load.
const BUFFER_TIMEOUT_MS_DEFAULT: u64 = 5;
/// Upper bound for buffer_timeout_ms: beyond a minute it is surely a unit mistake.
const BUFFER_TIMEOUT_MS_MAX: u64 = 60_000;
const _: () = assert!(BUFFER_TIMEOUT_MS_DEFAULT <= BUFFER_TIMEOUT_MS_MAX);

/// A job graph that passed validation, normalized, with its schemas and chains.
#[derive(Debug, Clone)]
pub struct ValidatedJob {
    /// The graph with defaults filled in and every edge's partitioning resolved.
    pub graph: JobGraph,
    /// The chains of the execution graph, in topological order.
    pub chains: Vec<proto::Chain>,
    /// The edges between chains.
    pub chain_edges: Vec<proto::ChainEdge>,
    /// Each vertex's output schema (for sinks, the schema they receive).
    pub schemas: HashMap<String, SchemaRef>,
    /// The schemas of side outputs that an edge consumes, by (vertex, side output).
    pub side_output_schemas: HashMap<(String, String), SchemaRef>,
    /// The event-time column of each vertex's output, for vertices whose output has one.
    pub event_time_columns: HashMap<String, String>,
}

impl ValidatedJob {
    /// The config with its defaults filled in.
    pub fn config(&self) -> &JobConfig {
        // Invariant: validate() always sets it.
        static DEFAULT: std::sync::OnceLock<JobConfig> = std::sync::OnceLock::new();
        self.graph.config.as_ref().unwrap_or_else(|| DEFAULT.get_or_init(JobConfig::default))
    }
    /// Slots the job needs: with slot sharing, its largest parallelism.
    pub fn slots_needed(&self) -> u32 {
        self.graph.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1)
    }
    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.config().max_parallelism.unwrap_or(MAX_PARALLELISM_DEFAULT)
    }
    /// Where subtasks go.
    pub fn placement(&self) -> Placement {
        match self.config().placement() {
            Placement::Pack => Placement::Pack,
            Placement::Spread | Placement::Unspecified => Placement::Spread,
        }
    }
    /// How long the job waits for slots before failing.
    pub fn slot_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.config().slot_wait_timeout_ms.unwrap_or(SLOT_WAIT_TIMEOUT_MS_DEFAULT))
    }
    /// How long a partially filled output buffer may wait before it is sent.
    pub fn buffer_timeout(&self) -> Duration {
        Duration::from_millis(self.config().buffer_timeout_ms.unwrap_or(BUFFER_TIMEOUT_MS_DEFAULT))
    }
    /// The job's own checkpoint policy; None when its config does not turn checkpointing on.
    pub fn checkpoint_policy(&self) -> Option<super::checkpoint::CheckpointPolicy> {
        self.config().checkpointing.as_ref().and_then(super::checkpoint::CheckpointPolicy::of)
    }
    /// The job's restart strategy; `checkpoints` says whether the job takes checkpoints (its own policy
    /// or the JobManager's interval), which decides the default.
    pub fn restart_policy(&self, checkpoints: bool) -> super::restart::RestartPolicy {
        super::restart::RestartPolicy::of(self.config().restart_strategy.as_ref(), checkpoints)
    }
    /// The vertex with this id.
    pub fn vertex(&self, id: &str) -> Option<&proto::Vertex> {
        self.graph.vertices.iter().find(|v| v.id == id)
    }
    /// The schema a vertex receives (its first input's output schema), for non-sources.
    pub fn input_schema(&self, id: &str) -> Option<SchemaRef> {
        let edge = self.graph.edges.iter().find(|e| e.to == id)?;
        self.edge_schema(edge)
    }
    /// The schema of the records an edge carries: its upstream vertex's output, or the side output it names.
    pub fn edge_schema(&self, edge: &Edge) -> Option<SchemaRef> {
        if edge.side_output.is_empty() {
            self.schemas.get(&edge.from).cloned()
        } else {
            self.side_output_schemas.get(&(edge.from.clone(), edge.side_output.clone())).cloned()
        }
    }
    /// The event-time column of the records a vertex receives, if its input has one.
    pub fn input_event_time_column(&self, id: &str) -> Option<&str> {
        let edge = self.graph.edges.iter().find(|e| e.to == id)?;
        self.event_time_columns.get(&edge_source_key(edge)).map(String::as_str)
    }
    /// The main-output edge from `from` into `id` (a join's named input).
    pub fn edge_between(&self, from: &str, id: &str) -> Option<&Edge> {
        self.graph.edges.iter().find(|e| e.from == from && e.to == id && e.side_output.is_empty())
    }
    /// The event-time column of the records an edge carries.
    pub fn edge_event_time_column(&self, edge: &Edge) -> Option<&str> {
        self.event_time_columns.get(&edge_source_key(edge)).map(String::as_str)
    }
    /// Which input of vertex `id` each of its incoming edges is, by edge index: 0 for all but a join's right
    /// (or table) input, which is 1.
    pub fn input_index_of_edge(&self, id: &str, edge: usize) -> usize {
        let Some(edge) = self.graph.edges.get(edge) else { return 0 };
        match self.vertex(id).and_then(|v| v.operator.as_ref()) {
            Some(Operator::Join(join)) => usize::from(edge.from == join.right),
            Some(Operator::IntervalJoin(join)) => usize::from(edge.from == join.right),
            Some(Operator::TemporalJoin(join)) => usize::from(edge.from == join.table),
            _ => 0,
        }
    }
    /// Where a keyed vertex keeps its state: the job's choice, else `default` (the TaskManager's setting).
    pub fn state_backend(&self, default: proto::StateBackend) -> proto::StateBackend {
        match self.config().state_backend() {
            proto::StateBackend::Unspecified => default,
            chosen => chosen,
        }
    }
}

/// Validates `graph`, reporting every problem found.
pub fn validate(mut graph: JobGraph) -> Result<ValidatedJob, JobError> {
    super::reset_suggestion_budget();
    let mut problems = Vec::new();
    let config = normalize_config(graph.config.take().unwrap_or_default(), &mut problems);
    let max_parallelism = config.max_parallelism.unwrap_or(MAX_PARALLELISM_DEFAULT);
    graph.config = Some(config);

    if !sizes::check_sizes(&graph, &mut problems) {
        return Err(JobError::new(problems));
    }
    graph::check_vertices(&graph, max_parallelism, &mut problems);
    graph::resolve_edges(&mut graph, &mut problems);
    let order = if problems.is_empty() { graph::topological_order(&graph, &mut problems) } else { Vec::new() };
    if !problems.is_empty() {
        return Err(JobError::new(problems));
    }
    let inferred = schemas::infer_schemas(&graph, &order, &mut problems);
    if !problems.is_empty() {
        return Err(JobError::new(problems));
    }
    let (chains, chain_edges) = build_chains(&graph, &order);
    Ok(ValidatedJob {
        graph,
        chains,
        chain_edges,
        schemas: inferred.schemas,
        side_output_schemas: inferred.side_outputs,
        event_time_columns: inferred.event_time,
    })
}

fn normalize_config(mut config: JobConfig, problems: &mut Vec<String>) -> JobConfig {
    let max_parallelism = *config.max_parallelism.get_or_insert(MAX_PARALLELISM_DEFAULT);
    if !(1..=MAX_PARALLELISM_LIMIT).contains(&max_parallelism) {
        problems.push(format!("config.max_parallelism must be in 1..={MAX_PARALLELISM_LIMIT} (got {max_parallelism})"));
    }
    if config.placement() == Placement::Unspecified {
        config.set_placement(Placement::Spread);
    }
    let slot_wait = *config.slot_wait_timeout_ms.get_or_insert(SLOT_WAIT_TIMEOUT_MS_DEFAULT);
    if slot_wait > SLOT_WAIT_TIMEOUT_MS_MAX {
        problems.push(format!(
            "config.slot_wait_timeout_ms is {slot_wait}; the most allowed is {SLOT_WAIT_TIMEOUT_MS_MAX}"
        ));
    }
    let buffer_timeout = *config.buffer_timeout_ms.get_or_insert(BUFFER_TIMEOUT_MS_DEFAULT);
    if buffer_timeout > BUFFER_TIMEOUT_MS_MAX {
        problems
            .push(format!("config.buffer_timeout_ms must be at most {BUFFER_TIMEOUT_MS_MAX} (got {buffer_timeout})"));
    }
    if let Some(checkpointing) = config.checkpointing.as_mut() {
        super::checkpoint::normalize(checkpointing, problems);
    }
    if let Some(restart) = config.restart_strategy.as_ref() {
        super::restart::check(restart, problems);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::schemas::describe;
    use super::*;
    use crate::job::parse_job_file;
    use crate::proto::Partitioning;

    const WORD_COUNT: &str = r#"{
      "name": "wc",
      "vertices": [
        {"id": "src", "parallelism": 1, "file_source": {"path": "in.jsonl", "schema": [{"name": "line", "type": "STRING"}]}},
        {"id": "split", "parallelism": 1, "flat_map": {"column": "line", "output_column": "word"}},
        {"id": "lower", "parallelism": 1, "select": {"columns": [{"name": "word", "expr": "lower(word)"}]}},
        {"id": "count", "parallelism": 2, "aggregate": {"keys": ["word"], "aggregates": [{"function": "count", "name": "n"}]}},
        {"id": "sink", "parallelism": 2, "file_sink": {"path": "out"}}
      ],
      "edges": [
        {"from": "src", "to": "split"}, {"from": "split", "to": "lower"},
        {"from": "lower", "to": "count", "partitioning": "HASH", "key": ["word"]},
        {"from": "count", "to": "sink"}
      ]
    }"#;

    fn problems_of(json: &str) -> Vec<String> {
        match parse_job_file(json.as_bytes()).and_then(validate) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn a_slot_wait_beyond_its_bound_is_refused_naming_the_field_and_the_bound() {
        let with_wait = |ms: u64| {
            WORD_COUNT.replacen(
                "\"name\": \"wc\",",
                &format!("\"name\": \"wc\", \"config\": {{\"slot_wait_timeout_ms\": {ms}}},"),
                1,
            )
        };
        assert!(problems_of(&with_wait(SLOT_WAIT_TIMEOUT_MS_MAX)).is_empty());
        let problems = problems_of(&with_wait(u64::MAX));
        let expected =
            format!("config.slot_wait_timeout_ms is {}; the most allowed is {SLOT_WAIT_TIMEOUT_MS_MAX}", u64::MAX);
        assert_eq!(problems, vec![expected]);
    }

    #[test]
    fn word_count_validates_with_schemas_defaults_and_chains() -> Result<(), JobError> {
        let job = validate(parse_job_file(WORD_COUNT.as_bytes())?)?;
        let count = job.schemas.get("count").map(|s| describe(s));
        assert_eq!(count.as_deref(), Some("[word Utf8, n Int64]"));
        assert_eq!(job.graph.edges[0].partitioning(), Partitioning::Forward);
        assert_eq!(job.max_parallelism(), 128);
        assert_eq!(job.slots_needed(), 2);
        let chains: Vec<Vec<String>> = job.chains.iter().map(|c| c.vertex_ids.clone()).collect();
        assert_eq!(chains, vec![vec!["src", "split", "lower"], vec!["count", "sink"]]);
        assert_eq!(job.chain_edges.len(), 1);
        Ok(())
    }

    #[test]
    fn structural_problems_are_all_reported() {
        let found = problems_of(
            r#"{"vertices": [
                {"id": "a", "parallelism": 0, "datagen": {"columns": [{"name": "x", "sequence": {}}]}},
                {"id": "b", "parallelism": 1, "filter": {"predicate": "x > 1"}},
                {"id": "b", "parallelism": 1, "print_sink": {}}],
               "edges": [{"from": "a", "to": "bb"}]}"#,
        );
        let text = found.join("\n");
        assert!(text.contains("vertex 'a': parallelism must be at least 1"), "{text}");
        assert!(text.contains("duplicate vertex id"), "{text}");
        assert!(text.contains("unknown vertex 'bb' (did you mean 'b'?)"), "{text}");
    }

    #[test]
    fn kafka_settings_that_cannot_work_are_refused_by_name() {
        let found = problems_of(
            r#"{"config": {"checkpointing": {"interval_ms": 60000}},
               "vertices": [
                {"id": "src", "parallelism": 1, "kafka_source": {"bootstrap_servers": "b:9092", "topics": ["in"],
                    "schema": [{"name": "line", "type": "STRING"}, {"name": "ts", "type": "STRING"}],
                    "timestamp_column": "ts", "on_bad_record": "DEAD_LETTER", "start_from": "TIMESTAMP"}},
                {"id": "sink", "parallelism": 1, "kafka_sink": {"bootstrap_servers": "b:9092", "topic": "out",
                    "delivery": "EXACTLY_ONCE", "transaction_timeout_ms": 30000, "key_column": "nope"}}],
               "edges": [{"from": "src", "to": "sink"}]}"#,
        );
        let text = found.join("\n");
        assert!(text.contains("timestamp_column 'ts' must be a TIMESTAMP_MS column"), "{text}");
        assert!(text.contains("on_bad_record DEAD_LETTER needs 'dead_letter_topic'"), "{text}");
        assert!(text.contains("start_from TIMESTAMP needs 'start_timestamp_ms'"), "{text}");
        assert!(text.contains("key_column 'nope' is not an input column"), "{text}");
        // 60 s interval + 60 s checkpoint timeout + the default restart delay (up to 66 s): 30 s is too short.
        assert!(text.contains("transaction_timeout_ms 30000 must exceed"), "{text}");
    }

    #[test]
    fn kafka_bytes_pass_through_and_misuse_of_bytes_is_refused() {
        let job = |source_schema: &str, sink: &str| {
            format!(
                r#"{{"vertices": [
                {{"id": "src", "parallelism": 1, "kafka_source": {{"bootstrap_servers": "b:9092", "topics": ["in"],
                    "format": "BYTES", "key_column": "k", "schema": {source_schema}}}}},
                {{"id": "sink", "parallelism": 1, "kafka_sink": {{"bootstrap_servers": "b:9092", "topic": "out", {sink}}}}}],
               "edges": [{{"from": "src", "to": "sink"}}]}}"#
            )
        };
        let binary = r#"[{"name": "v", "type": "BINARY"}, {"name": "k", "type": "BINARY"}]"#;
        let found = problems_of(&job(binary, r#""format": "BYTES", "key_column": "k""#));
        assert!(found.is_empty(), "{found:?}");

        let text = problems_of(&job(
            r#"[{"name": "v", "type": "STRING"}, {"name": "k", "type": "INT64"}]"#,
            r#""format": "BYTES""#,
        ))
        .join("\n");
        assert!(text.contains("format BYTES reads each value into one BINARY column"), "{text}");
        assert!(text.contains("key_column 'k' must be a STRING or BINARY column"), "{text}");
        assert!(text.contains("format BYTES writes one BINARY column as the value"), "{text}");

        let csv = job(binary, r#""format": "CSV""#).replacen(r#""format": "BYTES""#, r#""format": "CSV""#, 1);
        let text = problems_of(&csv).join("\n");
        assert!(text.contains("column 'v' is BINARY, which format CSV cannot read"), "{text}");

        let file = r#"{"vertices": [
            {"id": "src", "parallelism": 1, "file_source": {"path": "/x", "format": "BYTES",
                "schema": [{"name": "v", "type": "BINARY"}]}},
            {"id": "sink", "parallelism": 1, "print_sink": {}}],
           "edges": [{"from": "src", "to": "sink"}]}"#;
        let text = problems_of(file).join("\n");
        assert!(text.contains("format BYTES is for Kafka record values"), "{text}");
    }

    #[test]
    fn operator_settings_over_their_bounds_are_refused_by_name() {
        let job = |datagen: &str, window: &str, print: &str| {
            format!(
                r#"{{"vertices": [
                {{"id": "src", "parallelism": 1, "datagen": {{"columns": [
                    {{"name": "w", "words": {datagen}}}, {{"name": "ts", "event_time": {{"step_ms": 1}}}}]}},
                    "event_time": {{"column": "ts", "monotonous": {{}}}}}},
                {{"id": "win", "parallelism": 1, "window": {{"keys": ["w"], "sliding": {window},
                    "aggregates": [{{"function": "count", "name": "n"}}]}}}},
                {{"id": "sink", "parallelism": 1, "print_sink": {print}}}],
               "edges": [{{"from": "src", "to": "win", "partitioning": "HASH", "key": ["w"]}},
                         {{"from": "win", "to": "sink"}}]}}"#
            )
        };
        let ok =
            job(r#"{"max_words": 1000}"#, r#"{"size_ms": 1000, "slide_ms": 1}"#, r#"{"max_rows_per_batch": 1000}"#);
        assert_eq!(problems_of(&ok), Vec::<String>::new());
        let bombs = job(
            r#"{"min_words": 1001, "max_words": 4000000000}"#,
            r#"{"size_ms": 1000000000000, "slide_ms": 1}"#,
            r#"{"max_rows_per_batch": 1001}"#,
        );
        let text = problems_of(&bombs).join("\n");
        assert!(
            text.contains("vertex 'src' (datagen): column 'w': words min_words is 1001; the most allowed is 1000"),
            "{text}"
        );
        assert!(text.contains("words max_words is 4000000000; the most allowed is 1000"), "{text}");
        assert!(
            text.contains(
                "vertex 'win' (window): sliding.size_ms / sliding.slide_ms puts each record in \
             1000000000000 windows; the most allowed is 1000"
            ),
            "{text}"
        );
        assert!(
            text.contains("vertex 'sink' (print_sink): max_rows_per_batch is 1001; the most allowed is 1000"),
            "{text}"
        );
    }

    #[test]
    fn suggestions_stop_after_the_budget_of_one_job() {
        let edges: Vec<String> = (0..60).map(|_| r#"{"from": "a", "to": "bb"}"#.to_string()).collect();
        let job = format!(
            r#"{{"vertices": [
                {{"id": "a", "parallelism": 1, "datagen": {{"columns": [{{"name": "x", "sequence": {{}}}}]}}}},
                {{"id": "b", "parallelism": 1, "print_sink": {{}}}}],
               "edges": [{}]}}"#,
            edges.join(", ")
        );
        let found = problems_of(&job);
        let suggested = found.iter().filter(|p| p.contains("did you mean 'b'")).count();
        assert_eq!(suggested, crate::job::SUGGESTIONS_PER_JOB_MAX, "{found:?}");
        assert_eq!(found.iter().filter(|p| p.contains("names unknown vertex 'bb'")).count(), 60);
        // A second job on the same thread gets a fresh budget.
        let again = problems_of(&job);
        assert_eq!(again.iter().filter(|p| p.contains("did you mean 'b'")).count(), suggested);
    }

    #[test]
    fn a_column_name_over_its_bound_is_refused() {
        let long = "c".repeat(257);
        let text = problems_of(&WORD_COUNT.replace(r#""name": "n""#, &format!(r#""name": "{long}""#))).join("\n");
        assert!(text.contains("is 257 bytes long; the most allowed is 256"), "{text}");
    }

    #[test]
    fn a_cycle_is_named() {
        let found = problems_of(
            r#"{"vertices": [
                {"id": "src", "parallelism": 1, "datagen": {"columns": [{"name": "x", "sequence": {}}]}},
                {"id": "f1", "parallelism": 1, "filter": {"predicate": "x > 1"}},
                {"id": "f2", "parallelism": 1, "filter": {"predicate": "x > 2"}},
                {"id": "sink", "parallelism": 1, "print_sink": {}}],
               "edges": [{"from": "src", "to": "f1"}, {"from": "f1", "to": "f2"}, {"from": "f2", "to": "f1"},
                         {"from": "f2", "to": "sink"}]}"#,
        );
        assert!(found.iter().any(|p| p.contains("cycle through vertices: f1, f2")), "{found:?}");
    }

    #[test]
    fn expression_and_type_problems_name_the_vertex() {
        let bad =
            WORD_COUNT.replace("lower(word)", "lower(wrd)").replace(r#""function": "count""#, r#""function": "cnt""#);
        let found = problems_of(&bad);
        assert!(found.iter().any(|p| p.starts_with("vertex 'lower' (select)") && p.contains("wrd")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("vertex 'count'") && p.contains("did you mean 'count'")), "{found:?}");
    }

    /// Word count whose counts go on as a changelog into `downstream` (a vertex "next" between "count" and
    /// "sink"; `emit` is the count's).
    fn changelog_job(emit: &str, downstream: &str) -> String {
        let job = WORD_COUNT
            .replace(
                r#""aggregates": [{"function": "count", "name": "n"}]}}"#,
                &format!(r#""aggregates": [{{"function": "count", "name": "n"}}], "emit": "{emit}"}}}}"#),
            )
            .replace(
                r#"{"id": "sink", "parallelism": 2"#,
                &format!(r#"{{"id": "next", "parallelism": 2, {downstream}}}, {{"id": "sink", "parallelism": 2"#),
            )
            .replace(
                r#"{"from": "count", "to": "sink"}"#,
                r#"{"from": "count", "to": "next", "partitioning": "HASH", "key": ["n"]}, {"from": "next", "to": "sink"}"#,
            );
        assert!(job.contains("\"next\"") && job.contains(emit), "the word count job changed: {job}");
        job
    }

    #[test]
    fn a_changelog_goes_only_where_a_retraction_is_handled_as_one() -> Result<(), JobError> {
        let sum_by_count = r#""aggregate": {"keys": ["n"], "aggregates": [{"function": "sum", "argument": "n", "name": "s"},
            {"function": "count", "name": "words"}, {"function": "avg", "argument": "n", "name": "a"}]}"#;
        // A changelog's retractions are taken back out by a downstream count, sum and avg.
        let job = validate(parse_job_file(changelog_job("CHANGELOG", sum_by_count).as_bytes())?)?;
        let schema = |id: &str| job.schemas.get(id).map(|s| describe(s));
        assert_eq!(schema("count").as_deref(), Some("[word Utf8, n Int64, _retract Boolean]"));
        assert_eq!(schema("next").as_deref(), Some("[n Int64, s Int64, words Int64, a Float64]"));
        // The same aggregate behind an update stream: no changelog anywhere.
        let job = validate(parse_job_file(changelog_job("UPDATES", sum_by_count).as_bytes())?)?;
        assert_eq!(job.schemas.get("count").map(|s| describe(s)).as_deref(), Some("[word Utf8, n Int64]"));

        let problems = |downstream: &str| problems_of(&changelog_job("CHANGELOG", downstream)).join("\n");
        let max = problems(
            r#""aggregate": {"keys": ["n"], "aggregates": [{"function": "max", "argument": "n", "name": "m"}]}"#,
        );
        assert!(max.contains("aggregate 'm': max cannot take a retracted row back out"), "{max}");
        let window = problems(
            r#""window": {"keys": ["n"], "tumbling": {"size_ms": 1000}, "aggregates": [{"function": "count", "name": "c"}]}"#,
        );
        assert!(window.contains("vertex 'next' (window): its input 'count' is a changelog"), "{window}");
        let dropped = problems(r#""select": {"columns": [{"name": "n", "expr": "n"}]}"#);
        assert!(dropped.contains("keep its '_retract' column as it is"), "{dropped}");
        let kept = problems(
            r#""select": {"columns": [{"name": "n", "expr": "n"}, {"name": "_retract", "expr": "_retract"}]}"#,
        );
        assert_eq!(kept, "");
        assert_eq!(problems(r#""filter": {"predicate": "n > 1"}"#), "");
        let emit = problems_of(&WORD_COUNT.replace(r#""name": "n"}]}"#, r#""name": "n"}], "emit": "SOMETIMES"}"#));
        assert!(emit.join("\n").contains("SOMETIMES"), "{emit:?}");
        Ok(())
    }

    #[test]
    fn an_aggregate_needs_its_input_hashed_by_its_keys() {
        let bad = WORD_COUNT.replace(r#", "partitioning": "HASH", "key": ["word"]"#, "");
        let found = problems_of(&bad);
        assert!(found.iter().any(|p| p.contains("must be partitioned by its keys")), "{found:?}");
    }

    #[test]
    fn a_non_boolean_filter_is_refused() {
        let bad = WORD_COUNT.replace(
            r#"{"id": "lower", "parallelism": 1, "select": {"columns": [{"name": "word", "expr": "lower(word)"}]}}"#,
            r#"{"id": "lower", "parallelism": 1, "filter": {"predicate": "length(word)"}}"#,
        );
        let found = problems_of(&bad);
        assert!(found.iter().any(|p| p.contains("must be boolean")), "{found:?}");
    }
}
