//! The builder API: Rust programs that write job files.
//!
//! A [`JobBuilder`] holds the graph; [`Stream`]s are handles on its vertices. Each call adds a vertex and
//! the edge from the stream it was called on, so a program reads like the dataflow it describes. The
//! result is a plain [`JobGraph`], written out as the same JSON users write by hand.
//!
//! ```
//! use sluice_common::job::builder::{count, JobBuilder};
//! use sluice_common::proto::{FileSource, Field, DataType};
//!
//! let job = JobBuilder::new("word_count");
//! job.file_source("lines", 1, FileSource {
//!         path: "examples/data/sample.txt".into(),
//!         schema: vec![Field { name: "line".into(), r#type: DataType::String as i32, nullable: false }],
//!         ..Default::default()
//!     })
//!     .split("split", "line", "word")
//!     .select("lower", &[("word", "lower(word)")])
//!     .key_by(&["word"])
//!     .aggregate("count", &[count("count")])
//!     .set_parallelism(2)
//!     .file_sink("sink", "out/word_count");
//! let graph = job.build();
//! assert_eq!(graph.vertices.len(), 5);
//! assert!(sluice_common::job::validate(graph).is_ok());
//! ```
use std::cell::RefCell;
use std::rc::Rc;

use crate::proto::{
    event_time::Watermarks, vertex::Operator, window::Assigner, Aggregate, AggregateCall, AggregateEmit, BlackholeSink,
    CustomOperator, DataType, DatagenSource, Deduplicate, Edge, EventTime, Field, FileSink, FileSource, Filter,
    FlatMap, IntervalJoin, JobConfig, JobGraph, Join, KafkaSink, KafkaSource, Monotonous, Partitioning, PrintSink,
    Projection, Reduce, Select, SessionWindow, SlidingWindow, SortKey, TemporalJoin, TopN, TumblingWindow, Vertex,
    Window,
};

/// Builds a [`JobGraph`].
#[derive(Clone)]
pub struct JobBuilder {
    graph: Rc<RefCell<JobGraph>>,
}

/// A handle on a vertex's output, from which the next vertex is attached.
#[derive(Clone)]
pub struct Stream {
    graph: Rc<RefCell<JobGraph>>,
    vertex: String,
    partitioning: Partitioning,
    key: Vec<String>,
    /// Non-empty: this handle is a side output of the vertex.
    side_output: String,
}

/// A stream partitioned by key: the input of keyed operators.
pub struct KeyedStream {
    stream: Stream,
}

impl JobBuilder {
    /// An empty job.
    pub fn new(name: &str) -> Self {
        let graph = JobGraph { name: name.to_string(), config: Some(JobConfig::default()), ..Default::default() };
        Self { graph: Rc::new(RefCell::new(graph)) }
    }

    /// Changes the job's configuration.
    pub fn config(&self, change: impl FnOnce(&mut JobConfig)) -> &Self {
        change(self.graph.borrow_mut().config.get_or_insert_with(JobConfig::default));
        self
    }

    /// Adds a source vertex.
    pub fn source(&self, id: &str, parallelism: u32, operator: Operator) -> Stream {
        let vertex = Vertex { id: id.to_string(), parallelism, operator: Some(operator), event_time: None };
        self.graph.borrow_mut().vertices.push(vertex);
        Stream {
            graph: self.graph.clone(),
            vertex: id.to_string(),
            partitioning: Partitioning::Unspecified,
            key: Vec::new(),
            side_output: String::new(),
        }
    }

    /// Adds a deterministic data generator.
    pub fn datagen(&self, id: &str, parallelism: u32, datagen: DatagenSource) -> Stream {
        self.source(id, parallelism, Operator::Datagen(datagen))
    }

    /// Adds a file source.
    pub fn file_source(&self, id: &str, parallelism: u32, source: FileSource) -> Stream {
        self.source(id, parallelism, Operator::FileSource(source))
    }

    /// Adds a Kafka source.
    pub fn kafka_source(&self, id: &str, parallelism: u32, source: KafkaSource) -> Stream {
        self.source(id, parallelism, Operator::KafkaSource(source))
    }

    /// The graph built so far.
    pub fn build(&self) -> JobGraph {
        self.graph.borrow().clone()
    }

    /// The graph as a pretty-printed job file.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&self.build())
    }
}

impl Stream {
    /// Attaches `operator` as a new vertex fed by this stream. The new vertex inherits this vertex's
    /// parallelism; change it with [`Stream::set_parallelism`].
    pub fn then(self, id: &str, operator: Operator) -> Stream {
        let mut graph = self.graph.borrow_mut();
        let parallelism = graph.vertices.iter().find(|v| v.id == self.vertex).map_or(1, |v| v.parallelism);
        graph.vertices.push(Vertex { id: id.to_string(), parallelism, operator: Some(operator), event_time: None });
        let mut edge = Edge {
            from: self.vertex.clone(),
            to: id.to_string(),
            key: self.key.clone(),
            side_output: self.side_output.clone(),
            ..Default::default()
        };
        edge.set_partitioning(self.partitioning);
        graph.edges.push(edge);
        drop(graph);
        Stream {
            graph: self.graph,
            vertex: id.to_string(),
            partitioning: Partitioning::Unspecified,
            key: Vec::new(),
            side_output: String::new(),
        }
    }

    /// Joins this stream (left) with `right`: every pair of rows with equal keys, whenever each arrives (a
    /// regular join; its state keeps every row). Both inputs are HASH-partitioned on their keys.
    pub fn join(self, id: &str, right: Stream, keys: (&[&str], &[&str])) -> Stream {
        let join = Join {
            left: self.vertex.clone(),
            right: right.vertex.clone(),
            left_keys: strings(keys.0),
            right_keys: strings(keys.1),
        };
        self.join_with(id, right, keys, Operator::Join(join))
    }

    /// Joins this stream (left) with `right`: rows with equal keys whose right time lies in
    /// `[left time + lower_ms, left time + upper_ms]`. Both inputs are HASH-partitioned on their keys.
    pub fn interval_join(
        self,
        id: &str,
        right: Stream,
        keys: (&[&str], &[&str]),
        lower_ms: i64,
        upper_ms: i64,
    ) -> Stream {
        let join = IntervalJoin {
            left: self.vertex.clone(),
            right: right.vertex.clone(),
            left_keys: strings(keys.0),
            right_keys: strings(keys.1),
            lower_bound_ms: lower_ms,
            upper_bound_ms: upper_ms,
        };
        self.join_with(id, right, keys, Operator::IntervalJoin(join))
    }

    /// Enriches this stream with the version of `table`'s row for the same key valid at each record's time
    /// (an event-time temporal join). `keep_unmatched` keeps records without a row, with nulls.
    pub fn temporal_join(self, id: &str, table: Stream, keys: (&[&str], &[&str]), keep_unmatched: bool) -> Stream {
        let join = TemporalJoin {
            stream: self.vertex.clone(),
            table: table.vertex.clone(),
            stream_keys: strings(keys.0),
            table_keys: strings(keys.1),
            keep_unmatched,
        };
        self.join_with(id, table, keys, Operator::TemporalJoin(join))
    }

    /// Adds a two-input vertex fed by this stream and `other`, each HASH-partitioned on its keys.
    fn join_with(self, id: &str, other: Stream, keys: (&[&str], &[&str]), operator: Operator) -> Stream {
        let second_vertex = other.vertex.clone();
        let joined = self.key_by(keys.0).stream.then(id, operator);
        let mut edge = Edge { from: second_vertex, to: id.to_string(), key: strings(keys.1), ..Default::default() };
        edge.set_partitioning(Partitioning::Hash);
        joined.graph.borrow_mut().edges.push(edge);
        joined
    }

    /// Declares this source's event-time column and watermark strategy (see [`bounded_out_of_orderness`]).
    pub fn with_event_time(self, event_time: EventTime) -> Stream {
        if let Some(vertex) = self.graph.borrow_mut().vertices.iter_mut().find(|v| v.id == self.vertex) {
            vertex.event_time = Some(event_time);
        }
        self
    }

    /// The named side output of this vertex (a window's "late" records), to attach operators to.
    pub fn side_output(&self, name: &str) -> Stream {
        Stream {
            graph: self.graph.clone(),
            vertex: self.vertex.clone(),
            partitioning: Partitioning::Unspecified,
            key: Vec::new(),
            side_output: name.to_string(),
        }
    }

    /// Sets the parallelism of this stream's vertex.
    pub fn set_parallelism(self, parallelism: u32) -> Stream {
        if let Some(vertex) = self.graph.borrow_mut().vertices.iter_mut().find(|v| v.id == self.vertex) {
            vertex.parallelism = parallelism;
        }
        self
    }

    /// Sends records round-robin to the next vertex's subtasks.
    pub fn rebalance(mut self) -> Stream {
        self.partitioning = Partitioning::Rebalance;
        self
    }

    /// Sends every record to every subtask of the next vertex.
    pub fn broadcast(mut self) -> Stream {
        self.partitioning = Partitioning::Broadcast;
        self
    }

    /// Partitions by the key columns (through key groups) for a keyed operator.
    pub fn key_by(mut self, key: &[&str]) -> KeyedStream {
        self.partitioning = Partitioning::Hash;
        self.key = key.iter().map(|k| k.to_string()).collect();
        KeyedStream { stream: self }
    }

    /// Computes columns with SQL expressions: `(name, expr)` pairs.
    pub fn select(self, id: &str, columns: &[(&str, &str)]) -> Stream {
        let columns =
            columns.iter().map(|(name, expr)| Projection { name: name.to_string(), expr: expr.to_string() }).collect();
        self.then(id, Operator::Select(Select { columns }))
    }

    /// Keeps rows matching a SQL predicate.
    pub fn filter(self, id: &str, predicate: &str) -> Stream {
        self.then(id, Operator::Filter(Filter { predicate: predicate.to_string() }))
    }

    /// Splits the string `column` on whitespace into one row per word, in column `output`.
    pub fn split(self, id: &str, column: &str, output: &str) -> Stream {
        let flat_map =
            FlatMap { column: column.to_string(), separator: String::new(), output_column: output.to_string() };
        self.then(id, Operator::FlatMap(flat_map))
    }

    /// Writes newline-delimited JSON part files into the directory `path`.
    pub fn file_sink(self, id: &str, path: &str) -> Stream {
        self.then(id, Operator::FileSink(FileSink { path: path.to_string() }))
    }

    /// Writes each row as a Kafka record.
    pub fn kafka_sink(self, id: &str, sink: KafkaSink) -> Stream {
        self.then(id, Operator::KafkaSink(sink))
    }

    /// Logs rows.
    pub fn print_sink(self, id: &str) -> Stream {
        self.then(id, Operator::PrintSink(PrintSink::default()))
    }

    /// Discards rows, throttled to `rows_per_second` per subtask when positive.
    pub fn blackhole_sink(self, id: &str, rows_per_second: f64) -> Stream {
        self.then(id, Operator::BlackholeSink(BlackholeSink { rows_per_second }))
    }
}

impl KeyedStream {
    /// A running aggregate per key, emitting each touched key's current values.
    pub fn aggregate(self, id: &str, aggregates: &[AggregateCall]) -> Stream {
        self.running_aggregate(id, aggregates, AggregateEmit::Updates)
    }

    /// A running aggregate per key emitting a changelog: a key's previous row taken back (`_retract`
    /// true), then its new one, whenever its values change (see `AggregateEmit` in the proto).
    pub fn aggregate_changelog(self, id: &str, aggregates: &[AggregateCall]) -> Stream {
        self.running_aggregate(id, aggregates, AggregateEmit::Changelog)
    }

    fn running_aggregate(self, id: &str, aggregates: &[AggregateCall], emit: AggregateEmit) -> Stream {
        let keys = self.stream.key.clone();
        let aggregate = Aggregate { keys, aggregates: aggregates.to_vec(), emit: emit as i32 };
        self.stream.then(id, Operator::Aggregate(aggregate))
    }

    /// An event-time window per key, emitting `aggregates` when each window closes.
    pub fn window(self, id: &str, assigner: Assigner, aggregates: &[AggregateCall]) -> Stream {
        self.window_with(id, Window { assigner: Some(assigner), aggregates: aggregates.to_vec(), ..Default::default() })
    }

    /// A window folding its records pairwise: each `(column, expr)` gets the SQL expression over the
    /// accumulated record `a` and the next record `b` ("a.amount + b.amount"); other columns keep b's value.
    pub fn reduce(self, id: &str, assigner: Assigner, columns: &[(&str, &str)]) -> Stream {
        let columns = columns.iter().map(|(name, expr)| Projection { name: name.to_string(), expr: expr.to_string() });
        let reduce = Reduce { columns: columns.collect() };
        self.window_with(id, Window { assigner: Some(assigner), reduce: Some(reduce), ..Default::default() })
    }

    /// A window keeping, per key and window, its first `top_n.n` records in `top_n.order_by` (Flink's
    /// window Top-N); it emits one row per kept record when the window closes.
    pub fn top_n(self, id: &str, assigner: Assigner, top_n: TopN) -> Stream {
        self.window_with(id, Window { assigner: Some(assigner), top_n: Some(top_n), ..Default::default() })
    }

    /// A window with every setting given (time domain, allowed lateness); its keys are this stream's.
    pub fn window_with(self, id: &str, mut window: Window) -> Stream {
        window.keys = self.stream.key.clone();
        self.stream.then(id, Operator::Window(window))
    }

    /// Drops records whose key was emitted less than `ttl_ms` before.
    pub fn deduplicate(self, id: &str, ttl_ms: u64) -> Stream {
        let keys = self.stream.key.clone();
        self.stream.then(id, Operator::Deduplicate(Deduplicate { keys, ttl_ms }))
    }

    /// A native operator registered in the TaskManager binary as `name`, with its settings and the output
    /// columns it emits; its keys are this stream's.
    pub fn process(self, id: &str, name: &str, config: &[(&str, &str)], output: Vec<Field>) -> Stream {
        let custom = CustomOperator {
            name: name.to_string(),
            keys: self.stream.key.clone(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            output,
        };
        self.stream.then(id, Operator::Custom(custom))
    }
}

/// A column of a declared schema.
pub fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field { name: name.to_string(), r#type: data_type as i32, nullable }
}

/// Event time from `column`, with watermarks trailing the largest timestamp by `millis`.
pub fn bounded_out_of_orderness(column: &str, millis: u64) -> EventTime {
    EventTime {
        column: column.to_string(),
        watermarks: Some(Watermarks::BoundedOutOfOrdernessMs(millis)),
        ..Default::default()
    }
}

/// Event time from `column`, whose values only ascend.
pub fn monotonous(column: &str) -> EventTime {
    EventTime {
        column: column.to_string(),
        watermarks: Some(Watermarks::Monotonous(Monotonous {})),
        ..Default::default()
    }
}

/// Tumbling windows of `size_ms`.
pub fn tumbling(size_ms: u64) -> Assigner {
    Assigner::Tumbling(TumblingWindow { size_ms, offset_ms: 0 })
}

/// Windows of `size_ms` starting every `slide_ms`.
pub fn sliding(size_ms: u64, slide_ms: u64) -> Assigner {
    Assigner::Sliding(SlidingWindow { size_ms, slide_ms, offset_ms: 0 })
}

/// Ranks by `column`, largest first.
pub fn descending(column: &str) -> SortKey {
    SortKey { column: column.to_string(), descending: true }
}

/// Ranks by `column`, smallest first.
pub fn ascending(column: &str) -> SortKey {
    SortKey { column: column.to_string(), descending: false }
}

/// Sessions closed by `gap_ms` without records.
pub fn session(gap_ms: u64) -> Assigner {
    Assigner::Session(SessionWindow { gap_ms })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn call(function: &str, argument: &str, name: &str) -> AggregateCall {
    AggregateCall { function: function.to_string(), argument: argument.to_string(), name: name.to_string() }
}

/// `count(*) AS name`.
pub fn count(name: &str) -> AggregateCall {
    call("count", "", name)
}
/// `sum(argument) AS name`.
pub fn sum(name: &str, argument: &str) -> AggregateCall {
    call("sum", argument, name)
}
/// `min(argument) AS name`.
pub fn min(name: &str, argument: &str) -> AggregateCall {
    call("min", argument, name)
}
/// `max(argument) AS name`.
pub fn max(name: &str, argument: &str) -> AggregateCall {
    call("max", argument, name)
}
/// Any aggregate function by name: DataFusion's (`stddev`, `median`, `approx_distinct`, ...) in windows.
pub fn aggregate(function: &str, name: &str, argument: &str) -> AggregateCall {
    call(function, argument, name)
}
/// `avg(argument) AS name`.
pub fn avg(name: &str, argument: &str) -> AggregateCall {
    call("avg", argument, name)
}
