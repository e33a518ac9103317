//! The exactly-once Kafka sink's transaction protocol against librdkafka's mock cluster (in-process, real
//! TCP listeners, transactions and fencing). The mock does not hide aborted records from consumers and
//! does not keep transactional offset commits, so these tests assert the sequence of what is written and
//! when, not isolation: nothing before a checkpoint completes, one transaction per completed checkpoint,
//! the pending records of a crashed attempt written on restore, a fenced zombie stopping, broker errors
//! retried.
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_common::proto::{KafkaDelivery, KafkaSink, OperatorSnapshot};

use super::KafkaSinkWriter;
use crate::metrics::KafkaCounters;
use crate::operator_api::{Operator, SubtaskInfo};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(ids))]).expect("batch")
}

fn sink(bootstrap: &str, metrics: &KafkaCounters) -> KafkaSinkWriter {
    sink_keyed_by(bootstrap, metrics, "")
}

/// An exactly-once sink whose record keys come from `key_column` (none when empty).
fn sink_keyed_by(bootstrap: &str, metrics: &KafkaCounters, key_column: &str) -> KafkaSinkWriter {
    let spec = KafkaSink {
        bootstrap_servers: bootstrap.into(),
        topic: "out".into(),
        delivery: KafkaDelivery::ExactlyOnce as i32,
        transaction_timeout_ms: Some(60_000),
        key_column: key_column.into(),
        ..Default::default()
    };
    KafkaSinkWriter::open(&spec, "sink", &schema(), SubtaskInfo { index: 0, parallelism: 1 }, metrics.clone())
        .expect("sink")
}

fn checkpoint(sink: &mut KafkaSinkWriter, id: u64) -> OperatorSnapshot {
    let mut snapshot = OperatorSnapshot { vertex_id: "sink".into(), checkpoint_id: id, ..Default::default() };
    sink.snapshot_state(&mut snapshot).expect("snapshot");
    snapshot
}

/// The ids in topic `out`, in offset order, read until `expected` records arrived or 10 s passed.
fn read_ids(bootstrap: &str, expected: usize) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset("out", 0, Offset::Beginning).expect("partition");
    consumer.assign(&list).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ids = Vec::new();
    while Instant::now() < deadline && ids.len() < expected {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
            ids.push(value["id"].as_i64().expect("id"));
        }
    }
    // Nothing more arrives than expected: poll a little longer.
    let quiet = Instant::now() + Duration::from_millis(300);
    while Instant::now() < quiet {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
            let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
            ids.push(value["id"].as_i64().expect("id"));
        }
    }
    ids
}

fn cluster() -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("out", 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

#[test]
fn records_are_written_in_one_transaction_per_checkpoint_once_it_completes() {
    let (_cluster, bootstrap) = cluster();
    let metrics = KafkaCounters::detached();
    let mut sink = sink(&bootstrap, &metrics);
    let mut out = Vec::new();
    sink.process(batch(0..10), &mut out).expect("process");
    checkpoint(&mut sink, 1);
    sink.process(batch(10..15), &mut out).expect("process");
    assert_eq!(read_ids(&bootstrap, 0), Vec::<i64>::new(), "nothing is written before checkpoint 1 completes");

    assert_eq!(metrics.records_out("out", 0).get(), 0, "nothing counts as written before a commit");

    sink.notify_checkpoint_complete(1).expect("commit 1");
    assert_eq!(read_ids(&bootstrap, 10), (0..10).collect::<Vec<_>>(), "checkpoint 1's records, not those after it");
    assert_eq!(metrics.transactions("out", "committed").get(), 1);
    // Counted from the delivery reports, per partition: the 10 committed records, {"id":N} each.
    assert_eq!(metrics.records_out("out", 0).get(), 10);
    let bytes: u64 = (0..10).map(|i: i64| format!(r#"{{"id":{i}}}"#).len() as u64).sum();
    assert_eq!(metrics.bytes_out("out", 0).get(), bytes);

    checkpoint(&mut sink, 2);
    checkpoint(&mut sink, 3);
    sink.notify_checkpoint_complete(3).expect("commit 3");
    // Checkpoint 3 completing commits 2 as well (a completion notice may be skipped), in one transaction.
    assert_eq!(read_ids(&bootstrap, 15), (0..15).collect::<Vec<_>>());
    assert_eq!(metrics.transactions("out", "committed").get(), 2);
    sink.notify_checkpoint_complete(3).expect("a repeated notice writes nothing");
    assert_eq!(read_ids(&bootstrap, 15).len(), 15);
    assert_eq!(metrics.records_out("out", 0).get(), 15);
}

#[test]
fn a_restored_sink_writes_the_pending_checkpoint_of_the_crashed_attempt_and_a_fenced_zombie_stops() {
    let (cluster, bootstrap) = cluster();
    let metrics = KafkaCounters::detached();
    let mut zombie = sink(&bootstrap, &metrics);
    let mut out = Vec::new();
    zombie.process(batch(0..5), &mut out).expect("process");
    zombie.notify_checkpoint_complete(0).expect("nothing due");
    let first = checkpoint(&mut zombie, 1);
    zombie.notify_checkpoint_complete(1).expect("commit 1");
    zombie.process(batch(5..8), &mut out).expect("process");
    // Checkpoint 2 completes, but the attempt dies before its completion notice reaches the sink.
    let second = checkpoint(&mut zombie, 2);
    assert!(!first.operator_state.is_empty() && !second.operator_state.is_empty());

    let mut restored = sink(&bootstrap, &metrics);
    restored.restore_state(&[&second], 0..=127).expect("restore");
    // The mock keeps no transactional offset commits, so the marker cannot show that 1 committed; 2's records
    // are what checkpoint 2 held as pending: only those.
    assert_eq!(read_ids(&bootstrap, 8), (0..8).collect::<Vec<_>>());

    // The old attempt's producer: a real broker answers it PRODUCER_FENCED, since the restored sink started
    // a producer with the same transactional id (a higher epoch). The mock hands out a new producer id
    // instead of bumping the epoch, so the answer is injected: the zombie must stop, not retry.
    zombie.process(batch(100..101), &mut out).expect("buffering needs no broker");
    checkpoint(&mut zombie, 3);
    cluster.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let error = zombie.notify_checkpoint_complete(3).expect_err("a fenced producer cannot commit");
    assert!(error.message().to_lowercase().contains("fenced"), "{error}");
    assert_eq!(metrics.transactions("out", "aborted").get(), 0, "a fenced producer is not retried");
}

#[test]
fn a_commit_that_meets_retriable_broker_errors_is_retried_and_persistent_failure_fails_the_task() {
    let (cluster, bootstrap) = cluster();
    let metrics = KafkaCounters::detached();
    let mut sink = sink(&bootstrap, &metrics);
    let mut out = Vec::new();
    sink.process(batch(0..3), &mut out).expect("process");
    checkpoint(&mut sink, 1);
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ],
    );
    sink.notify_checkpoint_complete(1).expect("retried through the coordinator errors");
    assert_eq!(read_ids(&bootstrap, 3), vec![0, 1, 2]);

    sink.process(batch(3..4), &mut out).expect("process");
    checkpoint(&mut sink, 2);
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 20],
    );
    let error = sink.notify_checkpoint_complete(2).expect_err("a refused commit fails the task");
    assert!(error.message().contains("checkpoint 2"), "{error}");
}

#[test]
fn records_out_count_per_partition_as_soon_as_their_transaction_commits() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("out", 3, 1).expect("topic");
    let metrics = KafkaCounters::detached();
    // Keyed, so the records spread over the 3 partitions: a delivery report per partition.
    let mut sink = sink_keyed_by(&cluster.bootstrap_servers(), &metrics, "id");
    let mut out = Vec::new();
    for (checkpoint_id, ids) in [(1, 0..300), (2, 300..1000)] {
        sink.process(batch(ids), &mut out).expect("process");
        checkpoint(&mut sink, checkpoint_id);
        sink.notify_checkpoint_complete(checkpoint_id).expect("commit");
    }
    // Every delivery report of both transactions is served and counted when notify returns: value and key
    // bytes of all 1000 records, spread over the partitions.
    let counts: Vec<(u64, u64)> =
        (0..3).map(|p| (metrics.records_out("out", p).get(), metrics.bytes_out("out", p).get())).collect();
    let bytes: u64 = (0..1000).map(|i: i64| (format!(r#"{{"id":{i}}}"#).len() + i.to_string().len()) as u64).sum();
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), 1000, "{counts:?}");
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), bytes, "{counts:?}");
    assert!(counts.iter().all(|c| c.0 > 0), "keyed records land in every partition: {counts:?}");
}
