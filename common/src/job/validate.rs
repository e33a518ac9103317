//! Validating a job graph as a whole: structure, parameters, and the Arrow schema of every vertex.
//!
//! Steps, each adding to one list of problems:
//! 1. vertices: ids unique and non-empty, parallelism in `1..=max_parallelism`, an operator present;
//! 2. edges: endpoints exist (with a "did you mean"), partitioning fits (HASH has a key, FORWARD joins equal
//!    parallelisms), no self-loops, no cycles, sources have no inputs, everything else has inputs, only sinks
//!    lack outputs;
//! 3. schemas, in topological order: each operator's parameters are checked against its input schema,
//!    compiling its SQL expressions with DataFusion, and its output schema is inferred.
//!
//! Step 3 runs only when steps 1 and 2 found nothing, because a broken structure makes schema errors noise.
//! On success the graph is returned normalized (defaults filled in, every edge's partitioning resolved) with
//! its chains, so the JobManager stores and the TaskManagers execute exactly what was validated.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema, SchemaRef, TimeUnit};

use super::chain::build_chains;
use super::{hint, JobError};
use crate::aggregates::{generic_aggregate, generic_aggregate_names};
use crate::expr::ExprCompiler;
use crate::keygroup::{is_hashable_key_type, MAX_PARALLELISM_DEFAULT, MAX_PARALLELISM_LIMIT};
use crate::proto::{
    self, generated_column::Generator, vertex::Operator, DataType, Edge, JobConfig, JobGraph, Partitioning, Placement,
};
use datafusion::arrow::compute::can_cast_types;

/// The operator names a vertex may carry, as written in job files.
pub const OPERATOR_KINDS: &[&str] = &[
    "datagen",
    "file_source",
    "select",
    "filter",
    "flat_map",
    "aggregate",
    "file_sink",
    "print_sink",
    "blackhole_sink",
    "window",
    "deduplicate",
    "interval_join",
    "temporal_join",
    "custom",
    "kafka_source",
    "kafka_sink",
];
/// The side output of a window that receives records later than its allowed lateness.
pub const LATE_SIDE_OUTPUT: &str = "late";
/// The window bounds a window operator adds to its output, after the key columns.
pub const WINDOW_START_COLUMN: &str = "window_start";
/// The exclusive end of a window in a window operator's output.
pub const WINDOW_END_COLUMN: &str = "window_end";
/// How often a source emits its watermark when the job does not say.
pub const WATERMARK_INTERVAL_MS_DEFAULT: u64 = 200;
/// The functions of the keyed running aggregate.
pub const AGGREGATE_FUNCTIONS: &[&str] = &["count", "sum", "min", "max", "avg"];

/// The largest batch a source may be asked to emit, in rows. Larger batches only add latency and memory.
pub const BATCH_SIZE_MAX: u32 = 1 << 16;
const BATCH_SIZE_DEFAULT: u32 = 1024;
const SLOT_WAIT_TIMEOUT_MS_DEFAULT: u64 = 60_000;
const BUFFER_TIMEOUT_MS_DEFAULT: u64 = 5;
/// Upper bound for buffer_timeout_ms: beyond a minute it is surely a unit mistake.
const BUFFER_TIMEOUT_MS_MAX: u64 = 60_000;

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

/// The name of an operator as written in job files.
pub fn operator_kind(operator: &Operator) -> &'static str {
    match operator {
        Operator::Datagen(_) => "datagen",
        Operator::FileSource(_) => "file_source",
        Operator::Select(_) => "select",
        Operator::Filter(_) => "filter",
        Operator::FlatMap(_) => "flat_map",
        Operator::Aggregate(_) => "aggregate",
        Operator::FileSink(_) => "file_sink",
        Operator::PrintSink(_) => "print_sink",
        Operator::BlackholeSink(_) => "blackhole_sink",
        Operator::Window(_) => "window",
        Operator::Deduplicate(_) => "deduplicate",
        Operator::IntervalJoin(_) => "interval_join",
        Operator::TemporalJoin(_) => "temporal_join",
        Operator::Custom(_) => "custom",
        Operator::KafkaSource(_) => "kafka_source",
        Operator::KafkaSink(_) => "kafka_sink",
    }
}

/// The key under which the event-time column of an edge's records is recorded: the upstream vertex, or
/// `vertex/side_output` for a side output.
fn edge_source_key(edge: &Edge) -> String {
    if edge.side_output.is_empty() {
        edge.from.clone()
    } else {
        format!("{}/{}", edge.from, edge.side_output)
    }
}

fn is_source(operator: &Operator) -> bool {
    matches!(operator, Operator::Datagen(_) | Operator::FileSource(_) | Operator::KafkaSource(_))
}

fn is_sink(operator: &Operator) -> bool {
    matches!(
        operator,
        Operator::FileSink(_) | Operator::PrintSink(_) | Operator::BlackholeSink(_) | Operator::KafkaSink(_)
    )
}

/// Validates `graph`, reporting every problem found.
pub fn validate(mut graph: JobGraph) -> Result<ValidatedJob, JobError> {
    let mut problems = Vec::new();
    let config = normalize_config(graph.config.take().unwrap_or_default(), &mut problems);
    let max_parallelism = config.max_parallelism.unwrap_or(MAX_PARALLELISM_DEFAULT);
    graph.config = Some(config);

    check_vertices(&graph, max_parallelism, &mut problems);
    resolve_edges(&mut graph, &mut problems);
    let order = if problems.is_empty() { topological_order(&graph, &mut problems) } else { Vec::new() };
    if !problems.is_empty() {
        return Err(JobError::new(problems));
    }
    let inferred = infer_schemas(&graph, &order, &mut problems);
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
    config.slot_wait_timeout_ms.get_or_insert(SLOT_WAIT_TIMEOUT_MS_DEFAULT);
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

fn check_vertices(graph: &JobGraph, max_parallelism: u32, problems: &mut Vec<String>) {
    if graph.vertices.is_empty() {
        problems.push("the job has no vertices".to_string());
    }
    let mut seen = HashSet::new();
    for (index, vertex) in graph.vertices.iter().enumerate() {
        let name = if vertex.id.is_empty() { format!("vertices[{index}]") } else { format!("vertex '{}'", vertex.id) };
        if vertex.id.is_empty() {
            problems.push(format!("{name}: missing 'id'"));
        } else if !seen.insert(vertex.id.as_str()) {
            problems.push(format!("{name}: duplicate vertex id"));
        }
        if vertex.parallelism == 0 {
            problems.push(format!("{name}: parallelism must be at least 1 (got 0 or missing)"));
        } else if vertex.parallelism > max_parallelism {
            problems.push(format!(
                "{name}: parallelism {} exceeds max_parallelism {max_parallelism} (the number of key groups)",
                vertex.parallelism
            ));
        }
        if vertex.operator.is_none() {
            problems.push(format!("{name}: no operator; give exactly one of: {}", OPERATOR_KINDS.join(", ")));
        }
    }
}

fn resolve_edges(graph: &mut JobGraph, problems: &mut Vec<String>) {
    let ids: Vec<String> = graph.vertices.iter().map(|v| v.id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let parallelism: HashMap<&str, u32> = graph.vertices.iter().map(|v| (v.id.as_str(), v.parallelism)).collect();
    let mut seen = HashSet::new();
    for (index, edge) in graph.edges.iter_mut().enumerate() {
        let name = format!("edge {} -> {} (edges[{index}])", edge.from, edge.to);
        let mut endpoints_known = true;
        for (role, id) in [("from", &edge.from), ("to", &edge.to)] {
            if !parallelism.contains_key(id.as_str()) {
                endpoints_known = false;
                problems.push(format!("{name}: '{role}' names unknown vertex '{id}'{}", hint(id, &id_refs)));
            }
        }
        if edge.from == edge.to && endpoints_known {
            problems.push(format!("{name}: an edge from a vertex to itself is a cycle"));
        }
        if !seen.insert((edge.from.clone(), edge.to.clone(), edge.side_output.clone())) {
            problems.push(format!("{name}: duplicate edge"));
        }
        let partitioning = edge.partitioning();
        if partitioning == Partitioning::Hash && edge.key.is_empty() {
            problems.push(format!("{name}: HASH partitioning needs a 'key' (the key columns)"));
        }
        if partitioning != Partitioning::Hash && !edge.key.is_empty() {
            problems.push(format!("{name}: 'key' is only meaningful with partitioning HASH"));
        }
        if !edge.side_output.is_empty() && edge.side_output != LATE_SIDE_OUTPUT {
            problems.push(format!(
                "{name}: unknown side output '{}'{}; the only side output is '{LATE_SIDE_OUTPUT}' (a window's late records)",
                edge.side_output,
                hint(&edge.side_output, &[LATE_SIDE_OUTPUT])
            ));
        }
        if !endpoints_known {
            continue;
        }
        let (p_from, p_to) = (parallelism[edge.from.as_str()], parallelism[edge.to.as_str()]);
        match partitioning {
            Partitioning::Unspecified => {
                edge.set_partitioning(if p_from == p_to { Partitioning::Forward } else { Partitioning::Rebalance })
            }
            Partitioning::Forward if p_from != p_to => problems.push(format!(
                "{name}: FORWARD needs equal parallelism on both ends (got {p_from} and {p_to}); use REBALANCE or HASH"
            )),
            _ => {}
        }
    }
}

/// Kahn's algorithm; also checks each vertex's inputs and outputs against its operator's role.
fn topological_order(graph: &JobGraph, problems: &mut Vec<String>) -> Vec<usize> {
    let index: HashMap<&str, usize> = graph.vertices.iter().enumerate().map(|(i, v)| (v.id.as_str(), i)).collect();
    let n = graph.vertices.len();
    let mut inputs = vec![0usize; n];
    let mut outputs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for edge in &graph.edges {
        let (from, to) = (index[edge.from.as_str()], index[edge.to.as_str()]);
        inputs[to] += 1;
        outputs[from].push(to);
    }
    let mut has_sink = false;
    for (i, vertex) in graph.vertices.iter().enumerate() {
        let Some(operator) = &vertex.operator else { continue };
        let kind = operator_kind(operator);
        if is_source(operator) && inputs[i] > 0 {
            problems.push(format!("vertex '{}': a {kind} source cannot have inputs", vertex.id));
        }
        if !is_source(operator) && inputs[i] == 0 {
            problems.push(format!("vertex '{}': {kind} has no input; connect it with an edge", vertex.id));
        }
        if is_sink(operator) {
            has_sink = true;
            if !outputs[i].is_empty() {
                problems.push(format!("vertex '{}': a {kind} sink cannot have outputs", vertex.id));
            }
        } else if outputs[i].is_empty() {
            problems.push(format!("vertex '{}': its output goes nowhere; connect it to a sink", vertex.id));
        }
    }
    if !has_sink && n > 0 {
        problems.push("the job has no sink (file_sink, kafka_sink, print_sink or blackhole_sink)".to_string());
    }
    let mut remaining = inputs.clone();
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &to in &outputs[i] {
            remaining[to] -= 1;
            if remaining[to] == 0 {
                ready.push_back(to);
            }
        }
    }
    if order.len() < n {
        let mut cyclic: Vec<&str> =
            (0..n).filter(|&i| remaining[i] > 0).map(|i| graph.vertices[i].id.as_str()).collect();
        cyclic.sort_unstable();
        problems.push(format!("the graph has a cycle through vertices: {}", cyclic.join(", ")));
    }
    order
}

/// What schema inference learns about the graph.
#[derive(Default)]
struct Inferred {
    schemas: HashMap<String, SchemaRef>,
    side_outputs: HashMap<(String, String), SchemaRef>,
    /// Event-time column by [`edge_source_key`].
    event_time: HashMap<String, String>,
}

fn infer_schemas(graph: &JobGraph, order: &[usize], problems: &mut Vec<String>) -> Inferred {
    let compiler = ExprCompiler::new();
    let mut inferred = Inferred::default();
    for &i in order {
        let vertex = &graph.vertices[i];
        let Some(operator) = &vertex.operator else { continue };
        let in_edges: Vec<&Edge> = graph.edges.iter().filter(|e| e.to == vertex.id).collect();
        if vertex.event_time.is_some() && !is_source(operator) {
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
        if matches!(operator, Operator::IntervalJoin(_) | Operator::TemporalJoin(_)) {
            let mut report = |problem: String| {
                problems.push(format!("vertex '{}' ({}): {problem}", vertex.id, operator_kind(operator)))
            };
            if let Some(output) = join_schema(operator, &in_edges, &inferred, &mut report) {
                inferred.schemas.insert(vertex.id.clone(), output);
            }
            continue;
        }
        let input = match input_schema(vertex, &in_edges, &inferred, problems) {
            Some(input) => input,
            None if is_source(operator) => Arc::new(Schema::empty()),
            None => {
                // The problem was reported, or an upstream vertex failed already; what needs no input schema
                // is still checked, so one submission shows every mistake.
                check_without_input_schema(vertex, operator, problems);
                continue;
            }
        };
        let input_time = input_event_time(&in_edges, &inferred.event_time);
        let mut report =
            |problem: String| problems.push(format!("vertex '{}' ({}): {problem}", vertex.id, operator_kind(operator)));
        let mut output_time = input_time.clone();
        let output = match operator {
            Operator::Datagen(datagen) => datagen_schema(datagen, &mut report),
            Operator::FileSource(source) => file_source_schema(source, &mut report),
            Operator::KafkaSource(source) => kafka_source_schema(source, &mut report),
            Operator::Select(select) => {
                output_time = input_time.as_deref().and_then(|time| {
                    select.columns.iter().find(|c| c.expr.trim() == time).map(|c| output_name(c, &input).to_string())
                });
                select_schema(select, &input, &compiler, &mut report)
            }
            Operator::Filter(filter) => filter_schema(filter, &input, &compiler, &mut report),
            Operator::FlatMap(flat_map) => {
                if input_time.as_deref() == Some(flat_map.column.as_str()) {
                    output_time = None;
                }
                flat_map_schema(flat_map, &input, &mut report)
            }
            Operator::Aggregate(aggregate) => {
                output_time = None;
                aggregate_schema(aggregate, &input, &in_edges, &compiler, &mut report)
            }
            Operator::Window(window) => {
                output_time = None;
                let schema = window_schema(window, &input, input_time.as_deref(), &in_edges, &compiler, &mut report);
                if schema.is_some() {
                    let side = (vertex.id.clone(), LATE_SIDE_OUTPUT.to_string());
                    inferred.side_outputs.insert(side, input.clone());
                    if let Some(time) = &input_time {
                        inferred.event_time.insert(format!("{}/{LATE_SIDE_OUTPUT}", vertex.id), time.clone());
                    }
                }
                schema
            }
            // Handled above, before the union of the inputs.
            Operator::IntervalJoin(_) | Operator::TemporalJoin(_) => None,
            Operator::Deduplicate(dedup) => {
                check_keys(&dedup.keys, &input, &in_edges, &mut report);
                if dedup.ttl_ms == 0 {
                    report("'ttl_ms' must be positive: how long a key is remembered".into());
                }
                Some(input)
            }
            Operator::Custom(custom) => {
                let schema = custom_schema(custom, &input, &in_edges, &mut report);
                output_time = input_time.as_deref().and_then(|time| {
                    let field = schema.as_ref()?.field_with_name(time).ok()?;
                    is_time_type(field.data_type()).then(|| time.to_string())
                });
                schema
            }
            Operator::FileSink(sink) => {
                if sink.path.trim().is_empty() {
                    report("'path' is missing (the output directory)".into());
                }
                Some(input)
            }
            Operator::KafkaSink(sink) => {
                check_kafka_sink(sink, &input, graph.config.as_ref(), &mut report);
                Some(input)
            }
            Operator::PrintSink(_) => Some(input),
            Operator::BlackholeSink(sink) => {
                if !(sink.rows_per_second >= 0.0 && sink.rows_per_second.is_finite()) {
                    report(format!("rows_per_second must be a finite number >= 0 (got {})", sink.rows_per_second));
                }
                Some(input)
            }
        };
        if let Some(event_time) = &vertex.event_time {
            if let Some(schema) = &output {
                output_time = Some(event_time.column.clone());
                check_event_time(event_time, schema, &mut report);
            }
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

/// Whether a column can carry event time (milliseconds since the epoch).
pub fn is_time_type(data_type: &ArrowType) -> bool {
    matches!(data_type, ArrowType::Timestamp(TimeUnit::Millisecond, None) | ArrowType::Int64)
}

/// Checks a keyed operator's key columns and that its inputs are HASH-partitioned on them; returns the key
/// fields found.
fn check_keys(
    keys: &[String],
    input: &SchemaRef,
    in_edges: &[&Edge],
    report: &mut dyn FnMut(String),
) -> Vec<ArrowField> {
    if keys.is_empty() {
        report("'keys' is missing: the key columns".into());
        return Vec::new();
    }
    let mut fields = Vec::new();
    let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
    for key in keys {
        match input.field_with_name(key) {
            Ok(field) if is_hashable_key_type(field.data_type()) => fields.push(field.clone()),
            Ok(field) => report(format!("key column '{key}' has type {}, which cannot be a key", field.data_type())),
            Err(_) => {
                report(format!("unknown key column '{key}'{}; the input has: {}", hint(key, &names), names.join(", ")))
            }
        }
    }
    for edge in in_edges {
        if edge.partitioning() != Partitioning::Hash || edge.key != keys {
            report(format!(
                "its input from '{}' must be partitioned by its keys: set that edge's partitioning to HASH with key {:?}",
                edge.from, keys
            ));
        }
    }
    fields
}

/// The output schema of a join: its first (left, stream) input's columns, then its second (right, table)
/// input's columns other than its keys.
fn join_schema(
    operator: &Operator,
    in_edges: &[&Edge],
    inferred: &Inferred,
    report: &mut dyn FnMut(String),
) -> Option<SchemaRef> {
    let (roles, first_keys, second_keys, nullable_second) = match operator {
        Operator::IntervalJoin(j) => {
            if j.lower_bound_ms > j.upper_bound_ms {
                report(format!(
                    "lower_bound_ms ({}) is above upper_bound_ms ({}): nothing could join",
                    j.lower_bound_ms, j.upper_bound_ms
                ));
            }
            ([("left", &j.left), ("right", &j.right)], &j.left_keys, &j.right_keys, false)
        }
        Operator::TemporalJoin(j) => {
            ([("stream", &j.stream), ("table", &j.table)], &j.stream_keys, &j.table_keys, j.keep_unmatched)
        }
        _ => return None,
    };
    let inputs: Vec<&str> = in_edges.iter().map(|e| e.from.as_str()).collect();
    if in_edges.len() != 2 || in_edges.iter().any(|e| !e.side_output.is_empty()) {
        report(format!(
            "a join has exactly two inputs, the main outputs of two vertices (it has: {})",
            inputs.join(", ")
        ));
        return None;
    }
    let mut sides = Vec::new();
    for ((role, id), keys) in roles.iter().zip([first_keys, second_keys]) {
        let Some(edge) = in_edges.iter().find(|e| e.from == **id) else {
            report(format!(
                "'{role}' names '{id}', which is not one of its inputs{}; its inputs are: {}",
                hint(id, &inputs),
                inputs.join(", ")
            ));
            return None;
        };
        let schema = inferred.schemas.get(&edge.from)?.clone();
        if !inferred.event_time.contains_key(&edge_source_key(edge)) {
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
    if first_keys.len() != second_keys.len() {
        report(format!(
            "it has {} {} keys but {} {} keys",
            first_keys.len(),
            roles[0].0,
            second_keys.len(),
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
    for field in second.fields().iter().filter(|f| !second_keys.contains(f.name())) {
        if first.field_with_name(field.name()).is_ok() {
            report(format!(
                "column '{}' is in both inputs; rename it on one side with a select before the join",
                field.name()
            ));
        }
        fields.push(field.as_ref().clone().with_nullable(field.is_nullable() || nullable_second));
    }
    Some(Arc::new(Schema::new(fields)))
}

fn window_schema(
    window: &proto::Window,
    input: &SchemaRef,
    input_time: Option<&str>,
    in_edges: &[&Edge],
    compiler: &ExprCompiler,
    report: &mut dyn FnMut(String),
) -> Option<SchemaRef> {
    use proto::window::Assigner;
    let mut fields = check_keys(&window.keys, input, in_edges, report);
    match &window.assigner {
        None => report("no window assigner: give one of 'tumbling', 'sliding' or 'session'".into()),
        Some(Assigner::Tumbling(t)) if t.size_ms == 0 => report("tumbling.size_ms must be positive".into()),
        Some(Assigner::Sliding(s)) if s.size_ms == 0 || s.slide_ms == 0 => {
            report("sliding.size_ms and sliding.slide_ms must be positive".into())
        }
        Some(Assigner::Sliding(s)) if s.slide_ms > s.size_ms => report(format!(
            "sliding.slide_ms ({}) is larger than size_ms ({}): records between windows would be lost",
            s.slide_ms, s.size_ms
        )),
        Some(Assigner::Session(s)) if s.gap_ms == 0 => report("session.gap_ms must be positive".into()),
        Some(_) => {}
    }
    let event_time = window.time() != proto::TimeDomain::ProcessingTime;
    if event_time && input_time.is_none() {
        report(
            "an event-time window needs an event-time column: set 'event_time' on the source (and keep that column \
             through the operators in between), or set \"time\": \"PROCESSING_TIME\""
                .into(),
        );
    }
    if !event_time && window.allowed_lateness_ms > 0 {
        report("allowed_lateness_ms applies to event-time windows only".into());
    }
    let bound = ArrowType::Timestamp(TimeUnit::Millisecond, None);
    fields.push(ArrowField::new(WINDOW_START_COLUMN, bound.clone(), false));
    fields.push(ArrowField::new(WINDOW_END_COLUMN, bound, false));
    match &window.reduce {
        Some(_) if !window.aggregates.is_empty() => {
            report("a window has either 'aggregates' or 'reduce', not both".into())
        }
        Some(reduce) => fields.extend(reduce_fields(reduce, &window.keys, input, compiler, report)),
        None if window.aggregates.is_empty() => report(
            "'aggregates' is missing: e.g. [{\"function\": \"count\", \"name\": \"count\"}] (or give 'reduce')".into(),
        ),
        None => {}
    }
    for call in &window.aggregates {
        if let Some(field) = aggregate_field(call, input, compiler, true, report) {
            fields.push(field);
        }
    }
    unique_names(fields.iter().map(|f| f.name().as_str()), "output column", report);
    Some(Arc::new(Schema::new(fields)))
}

/// A reducing window's value columns: the input's columns other than the keys, each listed one checked.
fn reduce_fields(
    reduce: &proto::Reduce,
    keys: &[String],
    input: &SchemaRef,
    compiler: &ExprCompiler,
    report: &mut dyn FnMut(String),
) -> Vec<ArrowField> {
    let values: Vec<ArrowField> =
        input.fields().iter().filter(|f| !keys.contains(f.name())).map(|f| f.as_ref().clone()).collect();
    let names: Vec<&str> = values.iter().map(|f| f.name().as_str()).collect();
    if values.is_empty() {
        report("'reduce' needs columns besides the keys to fold".into());
    }
    unique_names(reduce.columns.iter().map(|c| c.name.as_str()), "reduce column", report);
    for column in &reduce.columns {
        let Some(field) = values.iter().find(|f| *f.name() == column.name) else {
            report(format!(
                "reduce column '{}'{} is not one of the input's non-key columns: {}",
                column.name,
                hint(&column.name, &names),
                names.join(", ")
            ));
            continue;
        };
        match compiler.compile_pair(&column.expr, input) {
            Ok(expr) if can_cast_types(&expr.data_type, field.data_type()) => {}
            Ok(expr) => report(format!(
                "reduce column '{}': '{}' is {}, which cannot become the column's {}",
                column.name,
                column.expr,
                expr.data_type,
                field.data_type()
            )),
            Err(e) => report(format!("reduce column '{}': {e} (name the two records 'a' and 'b')", column.name)),
        }
    }
    values
}

fn input_schema(
    vertex: &proto::Vertex,
    in_edges: &[&Edge],
    inferred: &Inferred,
    problems: &mut Vec<String>,
) -> Option<SchemaRef> {
    let schema_of = |e: &Edge| {
        if e.side_output.is_empty() {
            inferred.schemas.get(&e.from)
        } else {
            inferred.side_outputs.get(&(e.from.clone(), e.side_output.clone()))
        }
    };
    let mut inputs = in_edges.iter().map(|e| (e.from.as_str(), schema_of(e)));
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

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

fn describe(schema: &Schema) -> String {
    let columns: Vec<String> = schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
    format!("[{}]", columns.join(", "))
}

/// The Arrow type of a job-file type.
pub fn arrow_type(data_type: DataType) -> Option<ArrowType> {
    Some(match data_type {
        DataType::Unspecified => return None,
        DataType::String => ArrowType::Utf8,
        DataType::Int64 => ArrowType::Int64,
        DataType::Float64 => ArrowType::Float64,
        DataType::Bool => ArrowType::Boolean,
        DataType::TimestampMs => ArrowType::Timestamp(TimeUnit::Millisecond, None),
        DataType::Int32 => ArrowType::Int32,
        DataType::Binary => ArrowType::Binary,
    })
}

fn check_batch_size(batch_size: Option<u32>, report: &mut dyn FnMut(String)) {
    let batch_size = batch_size.unwrap_or(BATCH_SIZE_DEFAULT);
    if !(1..=BATCH_SIZE_MAX).contains(&batch_size) {
        report(format!("batch_size must be in 1..={BATCH_SIZE_MAX} (got {batch_size})"));
    }
}

fn unique_names<'a>(names: impl Iterator<Item = &'a str>, what: &str, report: &mut dyn FnMut(String)) {
    let mut seen = HashSet::new();
    for name in names {
        if name.is_empty() {
            report(format!("a {what} has no name"));
        } else if !seen.insert(name) {
            report(format!("duplicate {what} name '{name}'"));
        }
    }
}

fn datagen_schema(datagen: &proto::DatagenSource, report: &mut dyn FnMut(String)) -> Option<SchemaRef> {
    check_batch_size(datagen.batch_size, report);
    if !(datagen.rows_per_second >= 0.0 && datagen.rows_per_second.is_finite()) {
        report(format!("rows_per_second must be a finite number >= 0 (got {})", datagen.rows_per_second));
    }
    if datagen.columns.is_empty() {
        report("no columns; add at least one generated column".into());
        return None;
    }
    unique_names(datagen.columns.iter().map(|c| c.name.as_str()), "column", report);
    let mut fields = Vec::with_capacity(datagen.columns.len());
    for column in &datagen.columns {
        let data_type = match &column.generator {
            None => {
                report(format!(
                    "column '{}' has no generator; give one of: sequence, random_int, random_float, words, event_time",
                    column.name
                ));
                continue;
            }
            Some(Generator::Sequence(_)) => ArrowType::Int64,
            Some(Generator::RandomInt(g)) => {
                if g.min > g.max {
                    report(format!("column '{}': random_int min {} > max {}", column.name, g.min, g.max));
                }
                ArrowType::Int64
            }
            Some(Generator::RandomFloat(g)) => {
                if !(g.min <= g.max && g.min.is_finite() && g.max.is_finite()) {
                    report(format!(
                        "column '{}': random_float needs finite min <= max (got {}, {})",
                        column.name, g.min, g.max
                    ));
                }
                ArrowType::Float64
            }
            Some(Generator::Words(g)) => {
                if g.min_words > g.max_words && g.max_words != 0 {
                    report(format!(
                        "column '{}': words min_words {} > max_words {}",
                        column.name, g.min_words, g.max_words
                    ));
                }
                if g.vocabulary.iter().any(|w| w.is_empty() || w.contains(char::is_whitespace)) {
                    report(format!(
                        "column '{}': vocabulary words must be non-empty and contain no whitespace",
                        column.name
                    ));
                }
                ArrowType::Utf8
            }
            Some(Generator::EventTime(_) | Generator::WallClock(_)) => {
                ArrowType::Timestamp(TimeUnit::Millisecond, None)
            }
        };
        fields.push(ArrowField::new(&column.name, data_type, false));
    }
    Some(Arc::new(Schema::new(fields)))
}

fn file_source_schema(source: &proto::FileSource, report: &mut dyn FnMut(String)) -> Option<SchemaRef> {
    check_batch_size(source.batch_size, report);
    if source.path.trim().is_empty() {
        report("'path' is missing (a file or a directory of files)".into());
    }
    if source.schema.is_empty() {
        report("'schema' is missing: list the columns to read as [{\"name\": ..., \"type\": ...}]".into());
        return None;
    }
    match source.format() {
        proto::FileFormat::Lines if source.schema.len() != 1 || source.schema[0].r#type() != DataType::String => {
            report("format LINES reads each line into one STRING column: give exactly one STRING column".into())
        }
        proto::FileFormat::Bytes => {
            report("format BYTES is for Kafka record values; a file is read as JSON, CSV or LINES".into())
        }
        proto::FileFormat::Csv => refuse_csv_binary(&source.schema, report),
        _ => {}
    }
    Some(declared_schema(&source.schema, report))
}

fn kafka_source_schema(source: &proto::KafkaSource, report: &mut dyn FnMut(String)) -> Option<SchemaRef> {
    check_batch_size(source.batch_size, report);
    if source.bootstrap_servers.trim().is_empty() {
        report("'bootstrap_servers' is missing (host:port of the brokers)".into());
    }
    if source.topics.is_empty() || source.topics.iter().any(|t| t.trim().is_empty()) {
        report("'topics' is missing or holds an empty name: list the topics to read".into());
    }
    if source.start_from() == proto::KafkaStartFrom::Timestamp && source.start_timestamp_ms <= 0 {
        report("start_from TIMESTAMP needs 'start_timestamp_ms' (ms since the epoch)".into());
    }
    if source.start_from() != proto::KafkaStartFrom::Timestamp && source.start_timestamp_ms != 0 {
        report("'start_timestamp_ms' is only read with start_from TIMESTAMP".into());
    }
    match (source.on_bad_record(), source.dead_letter_topic.trim().is_empty()) {
        (proto::BadRecordPolicy::DeadLetter, true) => {
            report("on_bad_record DEAD_LETTER needs 'dead_letter_topic'".into())
        }
        (proto::BadRecordPolicy::DeadLetter, false) => {
            if source.topics.contains(&source.dead_letter_topic) {
                report("'dead_letter_topic' must not be a topic the source reads".into());
            }
        }
        (_, false) => report("'dead_letter_topic' is only used with on_bad_record DEAD_LETTER".into()),
        (_, true) => {}
    }
    for key in source.properties.keys() {
        if ["bootstrap.servers", "enable.auto.commit", "group.id"].contains(&key.as_str()) {
            report(format!("property '{key}' is set by the source itself (use the field of the same name, if any)"));
        }
    }
    if source.schema.is_empty() {
        report("'schema' is missing: list the columns to read as [{\"name\": ..., \"type\": ...}]".into());
        return None;
    }
    let schema = declared_schema(&source.schema, report);
    for (field, what, wanted) in [
        (&source.timestamp_column, "timestamp_column", &[DataType::TimestampMs][..]),
        (&source.key_column, "key_column", &[DataType::String, DataType::Binary][..]),
    ] {
        if field.is_empty() {
            continue;
        }
        match source.schema.iter().find(|c| &c.name == field) {
            None => report(format!("{what} '{field}' is not a column of the schema")),
            Some(column) if !wanted.contains(&column.r#type()) => {
                let names: Vec<&str> = wanted.iter().map(|t| t.as_str_name()).collect();
                report(format!("{what} '{field}' must be a {} column", names.join(" or ")))
            }
            Some(_) => {}
        }
    }
    let value_columns: Vec<&proto::Field> =
        source.schema.iter().filter(|c| c.name != source.timestamp_column && c.name != source.key_column).collect();
    if value_columns.is_empty() {
        report("the schema has no column decoded from the record's value".into());
    }
    let single = |wanted: DataType| value_columns.len() == 1 && value_columns[0].r#type() == wanted;
    match source.format() {
        proto::FileFormat::Lines if !single(DataType::String) => report(
            "format LINES reads each value into one STRING column: give exactly one besides the metadata columns"
                .into(),
        ),
        proto::FileFormat::Bytes if !single(DataType::Binary) => report(
            "format BYTES reads each value into one BINARY column: give exactly one besides the metadata columns"
                .into(),
        ),
        proto::FileFormat::Csv => refuse_csv_binary(value_columns, report),
        _ => {}
    }
    Some(schema)
}

fn check_kafka_sink(
    sink: &proto::KafkaSink,
    input: &SchemaRef,
    config: Option<&JobConfig>,
    report: &mut dyn FnMut(String),
) {
    if sink.bootstrap_servers.trim().is_empty() {
        report("'bootstrap_servers' is missing (host:port of the brokers)".into());
    }
    if sink.topic.trim().is_empty() {
        report("'topic' is missing".into());
    }
    if !sink.key_column.is_empty() && input.index_of(&sink.key_column).is_err() {
        report(format!("key_column '{}' is not an input column", sink.key_column));
    }
    let value_columns: Vec<&ArrowType> =
        input.fields().iter().filter(|f| f.name() != &sink.key_column).map(|f| f.data_type()).collect();
    let single = |wanted: &ArrowType| value_columns.len() == 1 && value_columns[0] == wanted;
    match sink.format() {
        proto::FileFormat::Lines if !single(&ArrowType::Utf8) => {
            report("format LINES writes one STRING column as the value: select exactly one besides key_column".into())
        }
        proto::FileFormat::Bytes if !single(&ArrowType::Binary) => {
            report("format BYTES writes one BINARY column as the value: select exactly one besides key_column".into())
        }
        _ => {}
    }
    for key in sink.properties.keys() {
        if ["bootstrap.servers", "transactional.id", "transaction.timeout.ms"].contains(&key.as_str()) {
            report(format!("property '{key}' is set by the sink itself (use the field of the same name, if any)"));
        }
    }
    let exactly_once = sink.delivery() == proto::KafkaDelivery::ExactlyOnce;
    if !exactly_once {
        if !sink.transactional_id_prefix.is_empty() || sink.transaction_timeout_ms.is_some() {
            report(
                "'transactional_id_prefix' and 'transaction_timeout_ms' are only used with delivery EXACTLY_ONCE"
                    .into(),
            );
        }
        return;
    }
    let timeout = sink.transaction_timeout_ms.unwrap_or(KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT);
    if timeout > KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT {
        report(format!(
            "transaction_timeout_ms {timeout} is above the brokers' default limit (transaction.max.timeout.ms = \
             {KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT}); a broker would refuse the producer"
        ));
    }
    let Some(policy) = config.and_then(|c| c.checkpointing.as_ref()).and_then(super::checkpoint::CheckpointPolicy::of)
    else {
        return;
    };
    let checkpoints = true;
    let restart = super::restart::RestartPolicy::of(config.and_then(|c| c.restart_strategy.as_ref()), checkpoints);
    let needed = policy.interval + policy.timeout.min(policy.interval) + restart.longest_delay();
    let needed_ms = u64::try_from(needed.as_millis()).unwrap_or(u64::MAX);
    if timeout <= needed_ms {
        report(format!(
            "transaction_timeout_ms {timeout} must exceed the checkpoint interval plus the longest restart delay \
             ({needed_ms} ms): a transaction the broker times out first is lost"
        ));
    }
}

/// The brokers' default upper bound on a transaction timeout, and the Kafka sink's default timeout.
pub const KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT: u64 = 900_000;

/// Arrow's CSV reader has no binary type (its writer writes hex): a CSV source cannot declare a BINARY column.
fn refuse_csv_binary<'a>(columns: impl IntoIterator<Item = &'a proto::Field>, report: &mut dyn FnMut(String)) {
    for column in columns {
        if column.r#type() == DataType::Binary {
            report(format!(
                "column '{}' is BINARY, which format CSV cannot read; use JSON (hex strings) or BYTES (Kafka)",
                column.name
            ));
        }
    }
}

/// A schema declared in the job file (a file source's columns, a custom operator's output).
fn declared_schema(declared: &[proto::Field], report: &mut dyn FnMut(String)) -> SchemaRef {
    unique_names(declared.iter().map(|f| f.name.as_str()), "column", report);
    let mut fields = Vec::with_capacity(declared.len());
    for field in declared {
        match arrow_type(field.r#type()) {
            Some(data_type) => fields.push(ArrowField::new(&field.name, data_type, field.nullable)),
            None => report(format!(
                "column '{}' has no type; give one of: STRING, INT64, INT32, FLOAT64, BOOL, TIMESTAMP_MS, BINARY",
                field.name
            )),
        }
    }
    Arc::new(Schema::new(fields))
}

/// A custom operator: its keys, and the output schema it declares.
fn custom_schema(
    custom: &proto::CustomOperator,
    input: &SchemaRef,
    in_edges: &[&Edge],
    report: &mut dyn FnMut(String),
) -> Option<SchemaRef> {
    if custom.name.trim().is_empty() {
        report("'name' is missing: the name the TaskManager registered the operator under".into());
    }
    check_keys(&custom.keys, input, in_edges, report);
    if custom.output.is_empty() {
        report("'output' is missing: list the operator's output columns as [{\"name\": ..., \"type\": ...}]".into());
        return None;
    }
    Some(declared_schema(&custom.output, report))
}

fn select_schema(
    select: &proto::Select,
    input: &SchemaRef,
    compiler: &ExprCompiler,
    report: &mut dyn FnMut(String),
) -> Option<SchemaRef> {
    if select.columns.is_empty() {
        report("no columns; list the output columns as [{\"name\": ..., \"expr\": ...}]".into());
        return None;
    }
    let mut fields = Vec::with_capacity(select.columns.len());
    let mut ok = true;
    for column in &select.columns {
        let name = output_name(column, input);
        if name.is_empty() {
            report(format!("column with expr '{}' needs a 'name'", column.expr));
            ok = false;
            continue;
        }
        match compiler.compile(&column.expr, input) {
            Ok(expr) => fields.push(ArrowField::new(name, expr.data_type, expr.nullable)),
            Err(e) => {
                report(format!("column '{name}': {e}"));
                ok = false;
            }
        }
    }
    unique_names(fields.iter().map(|f| f.name().as_str()), "column", report);
    ok.then(|| Arc::new(Schema::new(fields)))
}

/// A projection's output name: its `name`, or its expression when that is a bare input column.
pub(crate) fn output_name<'a>(column: &'a proto::Projection, input: &Schema) -> &'a str {
    if !column.name.is_empty() {
        return &column.name;
    }
    let expr = column.expr.trim();
    if input.field_with_name(expr).is_ok() {
        expr
    } else {
        ""
    }
}

fn filter_schema(
    filter: &proto::Filter,
    input: &SchemaRef,
    compiler: &ExprCompiler,
    report: &mut dyn FnMut(String),
) -> Option<SchemaRef> {
    match compiler.compile(&filter.predicate, input) {
        Ok(expr) if expr.data_type == ArrowType::Boolean => Some(input.clone()),
        Ok(expr) => {
            report(format!("predicate '{}' must be boolean, but it is {}", filter.predicate, expr.data_type));
            None
        }
        Err(e) => {
            report(format!("predicate: {e}"));
            None
        }
    }
}

fn flat_map_schema(flat_map: &proto::FlatMap, input: &SchemaRef, report: &mut dyn FnMut(String)) -> Option<SchemaRef> {
    let Ok(field) = input.field_with_name(&flat_map.column) else {
        let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        report(format!(
            "unknown column '{}'{}; the input has: {}",
            flat_map.column,
            hint(&flat_map.column, &names),
            names.join(", ")
        ));
        return None;
    };
    if !matches!(field.data_type(), ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View) {
        report(format!("column '{}' is {}, but flat_map splits strings", flat_map.column, field.data_type()));
        return None;
    }
    let output = if flat_map.output_column.is_empty() { &flat_map.column } else { &flat_map.output_column };
    let fields: Vec<ArrowField> = input
        .fields()
        .iter()
        .map(|f| {
            if f.name() == &flat_map.column {
                ArrowField::new(output, ArrowType::Utf8, false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    unique_names(fields.iter().map(|f| f.name().as_str()), "column", report);
    Some(Arc::new(Schema::new(fields)))
}

fn aggregate_schema(
    aggregate: &proto::Aggregate,
    input: &SchemaRef,
    in_edges: &[&Edge],
    compiler: &ExprCompiler,
    report: &mut dyn FnMut(String),
) -> Option<SchemaRef> {
    if aggregate.keys.is_empty() {
        report("'keys' is missing: the key columns".into());
        return None;
    }
    let mut fields = check_keys(&aggregate.keys, input, in_edges, report);
    if aggregate.aggregates.is_empty() {
        report("'aggregates' is missing: e.g. [{\"function\": \"count\", \"name\": \"count\"}]".into());
    }
    for call in &aggregate.aggregates {
        if let Some(field) = aggregate_field(call, input, compiler, false, report) {
            fields.push(field);
        }
    }
    unique_names(fields.iter().map(|f| f.name().as_str()), "output column", report);
    Some(Arc::new(Schema::new(fields)))
}

/// The checks of a vertex that do not depend on its input schema, for when that schema is unknown.
fn check_without_input_schema(vertex: &proto::Vertex, operator: &Operator, problems: &mut Vec<String>) {
    let (calls, generic) = match operator {
        Operator::Aggregate(aggregate) => (&aggregate.aggregates, false),
        Operator::Window(window) => (&window.aggregates, true),
        _ => return,
    };
    for call in calls {
        if !is_known_function(&call.function, generic) {
            problems.push(format!(
                "vertex '{}' ({}): {}",
                vertex.id,
                operator_kind(operator),
                unknown_function(&call.function, generic)
            ));
        }
    }
}

/// Whether `function` is native, or (when `generic`) one of DataFusion's aggregate functions or aliases.
fn is_known_function(function: &str, generic: bool) -> bool {
    let function = function.to_lowercase();
    AGGREGATE_FUNCTIONS.contains(&function.as_str())
        || (generic && generic_aggregate(&function, &ArrowField::new("x", ArrowType::Int64, true)).is_some())
}

/// "unknown aggregate function ..." with what the operator supports.
fn unknown_function(function: &str, generic: bool) -> String {
    let mut supported: Vec<String> = AGGREGATE_FUNCTIONS.iter().map(|f| f.to_string()).collect();
    if generic {
        supported.extend(generic_aggregate_names());
    }
    let names: Vec<&str> = supported.iter().map(String::as_str).collect();
    format!(
        "unknown aggregate function '{function}'{}; supported: {}{}",
        hint(&function.to_lowercase(), &names),
        names.join(", "),
        if generic { "" } else { " (windows also take DataFusion's other aggregate functions)" }
    )
}

/// The output column of an aggregate call. `generic`: DataFusion's other aggregate functions are allowed
/// (windows), besides the five native ones.
fn aggregate_field(
    call: &proto::AggregateCall,
    input: &SchemaRef,
    compiler: &ExprCompiler,
    generic: bool,
    report: &mut dyn FnMut(String),
) -> Option<ArrowField> {
    let function = call.function.to_lowercase();
    if call.name.is_empty() {
        report(format!("aggregate '{}({})' needs a 'name' for its output column", call.function, call.argument));
    }
    let native = AGGREGATE_FUNCTIONS.contains(&function.as_str());
    if !is_known_function(&function, generic) {
        report(unknown_function(&call.function, generic));
        return None;
    }
    let argument = call.argument.trim();
    if function == "count" && (argument.is_empty() || argument == "*") {
        return Some(ArrowField::new(&call.name, ArrowType::Int64, false));
    }
    if argument.is_empty() {
        report(format!("aggregate '{}' ({function}) needs an 'argument' expression", call.name));
        return None;
    }
    let expr = match compiler.compile(argument, input) {
        Ok(expr) => expr,
        Err(e) => {
            report(format!("aggregate '{}': {e}", call.name));
            return None;
        }
    };
    if !native {
        let field = ArrowField::new(argument, expr.data_type.clone(), expr.nullable);
        return match generic_aggregate(&function, &field) {
            Some(Ok(typed)) => Some(ArrowField::new(&call.name, typed.result.data_type().clone(), true)),
            Some(Err(e)) => {
                report(format!(
                    "aggregate '{}': {function}({argument}) with '{argument}' {}: {e}",
                    call.name,
                    field.data_type()
                ));
                None
            }
            None => None,
        };
    }
    let data_type = match (function.as_str(), &expr.data_type) {
        ("count", _) => ArrowType::Int64,
        ("avg", t) if t.is_numeric() => ArrowType::Float64,
        ("sum" | "min" | "max", t) if t.is_integer() => ArrowType::Int64,
        ("sum" | "min" | "max", t) if t.is_floating() => ArrowType::Float64,
        ("min" | "max", ArrowType::Timestamp(TimeUnit::Millisecond, None)) => expr.data_type.clone(),
        (_, t) => {
            report(format!("aggregate '{}': {function} needs a numeric argument, but '{argument}' is {t}", call.name));
            return None;
        }
    };
    // count never yields null; the others are null until a non-null value arrives.
    Some(ArrowField::new(&call.name, data_type, function != "count"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse_job_file;

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
