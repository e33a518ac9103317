//! `kafka_source` and `kafka_sink`: Kafka topics in and out (JSON, CSV, LINES or BYTES values).
use datafusion::arrow::datatypes::{DataType as ArrowType, SchemaRef};

use super::schema::{check_batch_size, declared_schema, refuse_csv_binary};
use super::{OperatorSpec, Role, SchemaInput};
use crate::proto::{self, DataType, JobConfig};

/// The librdkafka properties the Kafka source sets itself; a job may not set them (validation says which
/// field to use instead).
pub(crate) const SOURCE_OWNED_PROPERTIES: &[&str] = &["bootstrap.servers", "enable.auto.commit", "group.id"];
/// The librdkafka properties the Kafka sink sets itself.
pub(crate) const SINK_OWNED_PROPERTIES: &[&str] = &["bootstrap.servers", "transactional.id", "transaction.timeout.ms"];

/// The brokers' default upper bound on a transaction timeout, and the Kafka sink's default timeout.
pub const KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT: u64 = 900_000;

impl OperatorSpec for proto::KafkaSource {
    const KIND: &'static str = "kafka_source";
    const ROLE: Role = Role::Source;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        kafka_source_schema(self, input.report)
    }
}

impl OperatorSpec for proto::KafkaSink {
    const KIND: &'static str = "kafka_sink";
    const ROLE: Role = Role::Sink;
    const TAKES_CHANGELOG: bool = true;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        check_kafka_sink(self, &input.input, input.config, input.report);
        Some(input.input.clone())
    }
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
        if SOURCE_OWNED_PROPERTIES.contains(&key.as_str()) {
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
        if SINK_OWNED_PROPERTIES.contains(&key.as_str()) {
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
    let Some(policy) =
        config.and_then(|c| c.checkpointing.as_ref()).and_then(crate::job::checkpoint::CheckpointPolicy::of)
    else {
        return;
    };
    let checkpoints = true;
    let restart = crate::job::restart::RestartPolicy::of(config.and_then(|c| c.restart_strategy.as_ref()), checkpoints);
    let needed = policy.interval + policy.timeout.min(policy.interval) + restart.longest_delay();
    let needed_ms = u64::try_from(needed.as_millis()).unwrap_or(u64::MAX);
    if timeout <= needed_ms {
        report(format!(
            "transaction_timeout_ms {timeout} must exceed the checkpoint interval plus the longest restart delay \
             ({needed_ms} ms): a transaction the broker times out first is lost"
        ));
    }
}
