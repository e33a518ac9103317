//! The Kafka connector: a source reading assigned partitions with its offsets in checkpoints, and a sink
//! writing at least once or exactly once. See docs/kafka.md.
//!
//! The client (librdkafka) is behind the `kafka` cargo feature, on by default. Only the fuzz build leaves it
//! out: its target exercises the record codec, which needs no client. Without it, a job with a Kafka source or
//! sink fails with a configuration error that says why.
use datafusion::arrow::datatypes::SchemaRef;
use sluice_common::proto::{KafkaSink, KafkaSource};

use crate::metrics::KafkaCounters;
use crate::operator_api::{Operator, OperatorError, Source, SubtaskInfo};

pub(crate) mod codec;
#[cfg(feature = "kafka")]
mod sink;
#[cfg(feature = "kafka")]
mod source;

#[cfg(feature = "kafka")]
pub use sink::{transactional_prefix, KafkaSinkWriter};
#[cfg(feature = "kafka")]
pub use source::{group_id, owner_of, KafkaSourceReader};

/// The source of a `kafka_source` vertex.
#[cfg(feature = "kafka")]
pub(crate) fn open_source(
    spec: &KafkaSource,
    vertex: &str,
    schema: SchemaRef,
    subtask: SubtaskInfo,
    metrics: KafkaCounters,
) -> Result<Box<dyn Source>, OperatorError> {
    Ok(Box::new(KafkaSourceReader::open(spec, vertex, schema, subtask, metrics)?))
}

/// The sink of a `kafka_sink` vertex.
#[cfg(feature = "kafka")]
pub(crate) fn open_sink(
    spec: &KafkaSink,
    vertex: &str,
    schema: &SchemaRef,
    subtask: SubtaskInfo,
    metrics: KafkaCounters,
) -> Result<Box<dyn Operator>, OperatorError> {
    Ok(Box::new(KafkaSinkWriter::open(spec, vertex, schema, subtask, metrics)?))
}

#[cfg(not(feature = "kafka"))]
fn absent() -> OperatorError {
    OperatorError::configuration(
        "this TaskManager was built without the Kafka connector (the `kafka` cargo feature of sluice-taskmanager)",
    )
}

#[cfg(not(feature = "kafka"))]
pub(crate) fn open_source(
    _spec: &KafkaSource,
    _vertex: &str,
    _schema: SchemaRef,
    _subtask: SubtaskInfo,
    _metrics: KafkaCounters,
) -> Result<Box<dyn Source>, OperatorError> {
    Err(absent())
}

#[cfg(not(feature = "kafka"))]
pub(crate) fn open_sink(
    _spec: &KafkaSink,
    _vertex: &str,
    _schema: &SchemaRef,
    _subtask: SubtaskInfo,
    _metrics: KafkaCounters,
) -> Result<Box<dyn Operator>, OperatorError> {
    Err(absent())
}

#[cfg(feature = "kafka")]
/// A client library error about a client built from `config`, as a task failure: the message names `what`
/// failed, and never a secret property's value (librdkafka quotes a value it refuses).
fn client_error(what: &str, config: &rdkafka::ClientConfig, error: rdkafka::error::KafkaError) -> OperatorError {
    let message = format!("{what}: {error}");
    OperatorError::io(sluice_common::confine::redact_text(&message, config.config_map()))
}

#[cfg(all(test, feature = "kafka"))]
mod tests;
