//! One home per operator kind: what each kind of vertex declares about itself.
//!
//! Every kind implements [`OperatorSpec`] in its own file: its name in job files, its [`Role`] in a graph,
//! and the schema it outputs given its input, checking its own settings on the way. Validation
//! (`super::validate`) walks the graph and asks the spec of each vertex; the TaskManager builds the
//! running operator from the same proto message in its own one file per kind. Adding an operator kind is:
//! the proto field, one file here, one line in [`operator_kinds!`]'s list below, and one file (and one
//! factory line) in the TaskManager.
//!
//! The list below is the only place that enumerates the kinds: [`OPERATOR_KINDS`], [`operator_kind`],
//! [`role`] and [`output_schema`] are all generated from it, so they cannot disagree.
use std::collections::HashMap;

use datafusion::arrow::datatypes::SchemaRef;

use crate::expr::ExprCompiler;
use crate::proto::{self, vertex::Operator, Edge, JobConfig};

mod aggregate;
mod blackhole;
mod custom;
mod datagen;
mod dedup;
mod file;
mod filter;
mod flat_map;
mod join;
mod kafka;
mod nexmark;
mod print;
pub(crate) mod schema;
mod select;
mod window;

pub use aggregate::{is_changelog, retract_field, AGGREGATE_FUNCTIONS, RETRACTABLE_FUNCTIONS, RETRACT_COLUMN};
pub use kafka::KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT;
pub(crate) use kafka::{SINK_OWNED_PROPERTIES, SOURCE_OWNED_PROPERTIES};
pub use nexmark::{nexmark_kind, nexmark_timeline, NEXMARK_OUT_OF_ORDER_GROUP_MAX};
pub use schema::{arrow_type, is_time_type, BATCH_SIZE_DEFAULT, BATCH_SIZE_MAX};
pub use window::{LATE_SIDE_OUTPUT, WINDOW_END_COLUMN, WINDOW_START_COLUMN};

/// Where a kind of vertex stands in a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads from outside the job: no inputs.
    Source,
    /// Turns its input into its output: inputs and outputs.
    Transform,
    /// Writes to outside the job: no outputs.
    Sink,
}

/// What an operator kind declares about itself. Implemented by the kind's proto message.
pub(crate) trait OperatorSpec {
    /// The kind's name in job files (the proto field's name).
    const KIND: &'static str;
    /// Its role in a graph.
    const ROLE: Role;

    /// The schema of the vertex's output (for a sink: the schema it receives), given what it receives,
    /// reporting every problem with its settings to `input.report`. None when it cannot say (a problem
    /// was reported); validation then skips what depends on it.
    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef>;

    /// Whether the kind takes a changelog input (a [`RETRACT_COLUMN`]): those that handle a retraction row
    /// as one (filters pass it on, running aggregates take it back out, sinks write it) and selects, which
    /// must keep the column.
    const TAKES_CHANGELOG: bool = false;

    /// The checks that need no input schema, run when the input's schema is unknown (an upstream vertex
    /// failed already) so that one submission still shows every mistake.
    fn check_without_input(&self, _report: &mut dyn FnMut(String)) {}
}

/// What a vertex's spec sees when it infers its output.
pub(crate) struct SchemaInput<'a, 'r> {
    /// The union of its inputs' schemas (all equal); empty for a source, and for a join, which reads its
    /// two inputs apart through `upstream`.
    pub input: SchemaRef,
    /// The event-time column the input carries, if all inputs agree on one.
    pub input_time: Option<String>,
    /// The event-time column of the output: the input's unless the spec changes it.
    pub output_time: Option<String>,
    /// The edges into the vertex.
    pub in_edges: &'a [&'a Edge],
    /// Every upstream vertex's output, for operators that read their inputs apart (joins).
    pub upstream: &'a Upstream,
    /// Side outputs the vertex adds: (name, schema, event-time column).
    pub side_outputs: Vec<(String, SchemaRef, Option<String>)>,
    /// The job's (normalized) config.
    pub config: Option<&'a JobConfig>,
    /// Compiles the SQL expressions the vertex holds.
    pub compiler: &'a ExprCompiler,
    /// Where problems go, each one sentence.
    pub report: &'r mut dyn FnMut(String),
}

/// What schema inference has learnt of the vertices before this one.
#[derive(Default)]
pub(crate) struct Upstream {
    /// Each vertex's output schema.
    pub schemas: HashMap<String, SchemaRef>,
    /// The schemas of side outputs, by (vertex, side output).
    pub side_outputs: HashMap<(String, String), SchemaRef>,
    /// Event-time column by [`edge_source_key`].
    pub event_time: HashMap<String, String>,
}

/// The key under which the event-time column of an edge's records is recorded: the upstream vertex, or
/// `vertex/side_output` for a side output.
pub(crate) fn edge_source_key(edge: &Edge) -> String {
    if edge.side_output.is_empty() {
        edge.from.clone()
    } else {
        format!("{}/{}", edge.from, edge.side_output)
    }
}

/// Generates the registry of operator kinds from one list of (proto variant, proto message).
macro_rules! operator_kinds {
    ($($variant:ident => $message:ty),+ $(,)?) => {
        /// The operator names a vertex may carry, as written in job files.
        pub const OPERATOR_KINDS: &[&str] = &[$(<$message as OperatorSpec>::KIND),+];

        /// The name of an operator as written in job files.
        pub fn operator_kind(operator: &Operator) -> &'static str {
            match operator {
                $(Operator::$variant(_) => <$message as OperatorSpec>::KIND),+
            }
        }

        /// The role of an operator in a graph.
        pub fn role(operator: &Operator) -> Role {
            match operator {
                $(Operator::$variant(_) => <$message as OperatorSpec>::ROLE),+
            }
        }

        /// The output schema of a vertex running `operator` (see [`OperatorSpec::output_schema`]).
        pub(crate) fn output_schema(operator: &Operator, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
            match operator {
                $(Operator::$variant(spec) => spec.output_schema(input)),+
            }
        }

        /// Whether `operator` takes a changelog input (see [`OperatorSpec::TAKES_CHANGELOG`]).
        pub(crate) fn takes_changelog(operator: &Operator) -> bool {
            match operator {
                $(Operator::$variant(_) => <$message as OperatorSpec>::TAKES_CHANGELOG),+
            }
        }

        /// The checks of `operator` that need no input schema.
        pub(crate) fn check_without_input(operator: &Operator, report: &mut dyn FnMut(String)) {
            match operator {
                $(Operator::$variant(spec) => spec.check_without_input(report)),+
            }
        }
    };
}

operator_kinds! {
    Datagen => proto::DatagenSource,
    FileSource => proto::FileSource,
    Select => proto::Select,
    Filter => proto::Filter,
    FlatMap => proto::FlatMap,
    Aggregate => proto::Aggregate,
    FileSink => proto::FileSink,
    PrintSink => proto::PrintSink,
    BlackholeSink => proto::BlackholeSink,
    Window => proto::Window,
    Deduplicate => proto::Deduplicate,
    Join => proto::Join,
    IntervalJoin => proto::IntervalJoin,
    TemporalJoin => proto::TemporalJoin,
    Custom => proto::CustomOperator,
    KafkaSource => proto::KafkaSource,
    KafkaSink => proto::KafkaSink,
    Nexmark => proto::NexmarkSource,
}

/// Whether an operator reads its inputs as one union (everything but joins, which read two inputs apart).
pub(crate) fn unions_inputs(operator: &Operator) -> bool {
    !matches!(operator, Operator::Join(_) | Operator::IntervalJoin(_) | Operator::TemporalJoin(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_and_the_sinks_are_the_ones_the_no_sink_message_lists() {
        let mut names = OPERATOR_KINDS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPERATOR_KINDS.len(), "duplicate kind names: {OPERATOR_KINDS:?}");
        let sinks = [
            Operator::FileSink(Default::default()),
            Operator::KafkaSink(Default::default()),
            Operator::PrintSink(Default::default()),
            Operator::BlackholeSink(Default::default()),
        ];
        for sink in &sinks {
            assert_eq!(role(sink), Role::Sink, "{}", operator_kind(sink));
        }
        assert_eq!(role(&Operator::KafkaSource(Default::default())), Role::Source);
        assert_eq!(role(&Operator::Window(Default::default())), Role::Transform);
    }
}
