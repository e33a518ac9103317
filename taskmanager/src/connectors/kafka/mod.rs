//! The Kafka connector: a source reading assigned partitions with its offsets in checkpoints, and a sink
//! writing at least once or exactly once. See docs/kafka.md.
use crate::operator_api::OperatorError;

pub(crate) mod codec;
mod sink;
mod source;

pub use sink::{transactional_prefix, KafkaSinkWriter};

/// A client library error about a client built from `config`, as a task failure: the message names `what`
/// failed, and never a secret property's value (librdkafka quotes a value it refuses).
fn client_error(what: &str, config: &rdkafka::ClientConfig, error: rdkafka::error::KafkaError) -> OperatorError {
    let message = format!("{what}: {error}");
    OperatorError::io(sluice_common::confine::redact_text(&message, config.config_map()))
}
pub use source::{group_id, owner_of, KafkaSourceReader};

#[cfg(test)]
mod tests;
