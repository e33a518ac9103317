//! The Kafka connector: a source reading assigned partitions with its offsets in checkpoints, and a sink
//! writing at least once or exactly once. See docs/kafka.md.
mod codec;
mod sink;
mod source;

pub use sink::{transactional_prefix, KafkaSinkWriter};
pub use source::{group_id, owner_of, KafkaSourceReader};

#[cfg(test)]
mod tests;
