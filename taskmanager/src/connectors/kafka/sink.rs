//! The Kafka sink: at least once (flush at every barrier) or exactly once (a transaction per checkpoint).
//!
//! Exactly once with librdkafka cannot work the way Flink's Java sink does: Flink writes into an open
//! transaction between barriers and, after a crash, *resumes* that transaction by re-instantiating the
//! producer with the old producer id and epoch through reflection, to commit it. librdkafka has no such
//! entry point; a new producer with the same transactional id aborts whatever was open. So this sink keeps
//! the records of a checkpoint interval in the checkpoint itself, and writes them in one transaction when
//! the checkpoint completes. The transaction also commits, for the consumer group `<transactional id>`, the
//! offset "checkpoint N" on partition 0 of the output topic: that marker commits atomically with the
//! records, so after a crash the restored sink reads it and writes again exactly the checkpoints whose
//! transaction did not commit. Nothing is lost (the records are in the checkpoint) and nothing repeats (the
//! marker says what committed).
//!
//! Transactional ids are stable: `<prefix>-<subtask>`. Starting the producer (`init_transactions`) fences
//! every earlier producer with that id, a zombie of an earlier attempt included, and aborts its open
//! transaction. A job restored at a lower parallelism also starts the ids of the subtasks that no longer
//! exist, to fence and abort what they left.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use prometheus::IntCounter;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_common::proto::{KafkaDelivery, KafkaSink, OperatorSnapshot};

use super::codec::{KafkaRecord, RecordEncoder};
use crate::metrics::KafkaCounters;
use crate::operator_api::{Operator, OperatorError, SubtaskInfo};

use sluice_common::job::KAFKA_TRANSACTION_TIMEOUT_MS_DEFAULT as TRANSACTION_TIMEOUT_DEFAULT_MS;
/// How long a flush, a transaction commit or an abort may take before the sink gives up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an at-least-once sink waits before sending again when the producer's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);
/// How long a transaction's send serves delivery reports before sending again when the queue is full.
const TRANSACTION_QUEUE_FULL_POLL: Duration = Duration::from_millis(10);
/// The most records a restore reserves room for at once, whatever count a (possibly damaged) state claims.
const RESTORE_PREALLOCATION_MAX: usize = 1 << 20;
/// How long the end of a transaction waits for its delivery reports to be served, at most.
const DELIVERY_REPORTS_WAIT: Duration = Duration::from_secs(1);
/// How often an exactly-once commit is tried when the broker answers with a retriable error.
const COMMIT_ATTEMPTS: usize = 5;

/// What the broker acknowledged since the last look: records and bytes per partition, and the first failure.
#[derive(Default)]
struct Deliveries {
    by_partition: BTreeMap<i32, (u64, u64)>,
    first_error: Option<String>,
    /// At least once: acknowledged records count at once, here, instead of in `by_partition`.
    live: Option<OutCounters>,
}

/// Collects delivery reports (served by the producer's poll: its own thread at least once, the commit's
/// flush exactly once).
#[derive(Clone, Default)]
struct SinkContext(Arc<Mutex<Deliveries>>);

impl SinkContext {
    /// Delivery reports count into `out` as they arrive.
    fn live(out: OutCounters) -> Self {
        Self(Arc::new(Mutex::new(Deliveries { live: Some(out), ..Default::default() })))
    }

    /// The reports since the last call: (records, bytes) per partition, and the first failure.
    fn take(&self) -> (BTreeMap<i32, (u64, u64)>, Option<String>) {
        let mut deliveries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut deliveries.by_partition), deliveries.first_error.take())
    }
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut deliveries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(message) => {
                let bytes = message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len);
                let (partition, bytes) = (message.partition(), bytes as u64);
                match &mut deliveries.live {
                    Some(out) => out.add(partition, 1, bytes),
                    None => {
                        let (records, total) = deliveries.by_partition.entry(partition).or_default();
                        *records += 1;
                        *total += bytes;
                    }
                }
            }
            Err((error, _)) => {
                deliveries.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// A sink's records/bytes-out series, one pair per partition written, made on first use.
struct OutCounters {
    metrics: KafkaCounters,
    topic: String,
    by_partition: BTreeMap<i32, (IntCounter, IntCounter)>,
}

impl OutCounters {
    fn add(&mut self, partition: i32, records: u64, bytes: u64) {
        let (records_out, bytes_out) = self.by_partition.entry(partition).or_insert_with(|| {
            (self.metrics.records_out(&self.topic, partition), self.metrics.bytes_out(&self.topic, partition))
        });
        records_out.inc_by(records);
        bytes_out.inc_by(bytes);
    }
}

fn producer_config(spec: &KafkaSink) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &spec.bootstrap_servers).set("enable.idempotence", "true").set("linger.ms", "5");
    for (key, value) in &spec.properties {
        config.set(key, value);
    }
    config
}

/// The transactional id prefix of a sink vertex.
pub fn transactional_prefix(spec: &KafkaSink, vertex: &str) -> String {
    if spec.transactional_id_prefix.is_empty() {
        format!("sluice-{vertex}")
    } else {
        spec.transactional_id_prefix.clone()
    }
}

pub struct KafkaSinkWriter {
    topic: String,
    encoder: RecordEncoder,
    metrics: KafkaCounters,
    mode: Mode,
}

enum Mode {
    AtLeastOnce { producer: ThreadedProducer<SinkContext>, deliveries: SinkContext },
    ExactlyOnce { transactional: Box<Transactional>, out: OutCounters },
}

impl KafkaSinkWriter {
    pub fn open(
        spec: &KafkaSink,
        vertex: &str,
        schema: &SchemaRef,
        subtask: SubtaskInfo,
        metrics: KafkaCounters,
    ) -> Result<Self, OperatorError> {
        let encoder = RecordEncoder::new(schema, spec.format(), &spec.key_column)?;
        let out = OutCounters { metrics: metrics.clone(), topic: spec.topic.clone(), by_partition: BTreeMap::new() };
        let mode = match spec.delivery() {
            KafkaDelivery::ExactlyOnce => {
                Mode::ExactlyOnce { transactional: Box::new(Transactional::new(spec, vertex, subtask)?), out }
            }
            KafkaDelivery::AtLeastOnce | KafkaDelivery::Unspecified => {
                let deliveries = SinkContext::live(out);
                let config = producer_config(spec);
                let producer = config
                    .create_with_context(deliveries.clone())
                    .map_err(|e| super::client_error("cannot create a Kafka producer", &config, e))?;
                Mode::AtLeastOnce { producer, deliveries }
            }
        };
        Ok(Self { topic: spec.topic.clone(), encoder, metrics, mode })
    }

    /// At least once: fails if the broker refused a record since the last look.
    fn check_deliveries(&self) -> Result<(), OperatorError> {
        let Mode::AtLeastOnce { deliveries, .. } = &self.mode else { return Ok(()) };
        match deliveries.take().1 {
            Some(error) => Err(OperatorError::io(format!("a record could not be written to Kafka: {error}"))),
            None => Ok(()),
        }
    }

    /// At least once: waits until the broker acknowledged everything sent, or fails.
    fn flush(&mut self) -> Result<(), OperatorError> {
        let Mode::AtLeastOnce { producer, .. } = &self.mode else { return Ok(()) };
        producer.flush(OPERATION_TIMEOUT).map_err(|e| OperatorError::io(format!("Kafka flush failed: {e}")))?;
        self.check_deliveries()
    }
}

/// Sends a record, waiting while the producer's queue is full (the sink's backpressure).
type Sent<'a> = Result<(), Box<(KafkaError, BaseRecord<'a, Vec<u8>, Vec<u8>>)>>;

fn send_blocking<'a>(
    send: impl Fn(BaseRecord<'a, Vec<u8>, Vec<u8>>) -> Sent<'a>,
    poll: impl Fn(),
    topic: &'a str,
    record: &'a KafkaRecord,
) -> Result<(), OperatorError> {
    let mut out = BaseRecord::to(topic);
    if let Some(value) = &record.1 {
        out = out.payload(value);
    }
    if let Some(key) = &record.0 {
        out = out.key(key);
    }
    loop {
        match send(out).map_err(|e| *e) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                out = back;
                poll();
            }
            Err((e, _)) => return Err(OperatorError::io(format!("cannot send a record to Kafka: {e}"))),
        }
    }
}

impl Operator for KafkaSinkWriter {
    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let records = self.encoder.encode(&batch)?;
        self.check_deliveries()?;
        match &mut self.mode {
            Mode::AtLeastOnce { producer, .. } => {
                for record in &records {
                    send_blocking(
                        |r| producer.send(r).map_err(Box::new),
                        || std::thread::sleep(QUEUE_FULL_WAIT),
                        &self.topic,
                        record,
                    )?;
                }
                Ok(())
            }
            Mode::ExactlyOnce { transactional, .. } => {
                transactional.current.extend(records);
                Ok(())
            }
        }
    }

    fn snapshot_state(&mut self, snapshot: &mut OperatorSnapshot) -> Result<(), OperatorError> {
        match &mut self.mode {
            Mode::AtLeastOnce { .. } => self.flush(),
            Mode::ExactlyOnce { transactional, .. } => {
                let records = std::mem::take(&mut transactional.current);
                transactional.pending.insert(snapshot.checkpoint_id, records);
                snapshot.operator_state = transactional.encode_state();
                Ok(())
            }
        }
    }

    fn restore_state(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        _key_groups: std::ops::RangeInclusive<u16>,
    ) -> Result<(), OperatorError> {
        let Mode::ExactlyOnce { transactional, out } = &mut self.mode else { return Ok(()) };
        transactional.restore(snapshots, &self.metrics, out)
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<(), OperatorError> {
        let Mode::ExactlyOnce { transactional, out } = &mut self.mode else { return Ok(()) };
        transactional.commit_up_to(id, &self.metrics, out)
    }

    fn finish(&mut self, _out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        match &mut self.mode {
            Mode::AtLeastOnce { .. } => self.flush(),
            Mode::ExactlyOnce { transactional, out } => {
                // The end of a bounded input: what came after the last checkpoint commits now, marked as the
                // checkpoint after it.
                let after = transactional.pending.keys().next_back().copied().unwrap_or(transactional.committed) + 1;
                let records = std::mem::take(&mut transactional.current);
                transactional.pending.insert(after, records);
                transactional.commit_up_to(after, &self.metrics, out)
            }
        }
    }
}

/// The exactly-once machinery of one sink subtask.
struct Transactional {
    spec: KafkaSink,
    prefix: String,
    subtask: SubtaskInfo,
    transactional_id: String,
    producer: Option<BaseProducer<SinkContext>>,
    /// The delivery reports of `producer`.
    deliveries: SinkContext,
    /// Records since the last barrier.
    current: Vec<KafkaRecord>,
    /// Checkpoint id → its records, snapshotted and not yet committed.
    pending: BTreeMap<u64, Vec<KafkaRecord>>,
    /// Records of earlier subtasks (a restore) to write with this subtask's next commit: (origin
    /// transactional id, checkpoint id) → records.
    adopted: BTreeMap<(String, u64), Vec<KafkaRecord>>,
    /// The last checkpoint whose records committed.
    committed: u64,
    /// A client of each marker group used so far, by transactional id: made once, not per transaction.
    marker_consumers: BTreeMap<String, BaseConsumer>,
}

impl Transactional {
    fn new(spec: &KafkaSink, vertex: &str, subtask: SubtaskInfo) -> Result<Self, OperatorError> {
        let prefix = transactional_prefix(spec, vertex);
        let transactional_id = format!("{prefix}-{}", subtask.index);
        Ok(Self {
            spec: spec.clone(),
            prefix,
            subtask,
            transactional_id,
            producer: None,
            deliveries: SinkContext::default(),
            current: Vec::new(),
            pending: BTreeMap::new(),
            adopted: BTreeMap::new(),
            committed: 0,
            marker_consumers: BTreeMap::new(),
        })
    }

    fn config(&self, transactional_id: &str) -> ClientConfig {
        let mut config = producer_config(&self.spec);
        let timeout = self.spec.transaction_timeout_ms.unwrap_or(TRANSACTION_TIMEOUT_DEFAULT_MS);
        config.set("transactional.id", transactional_id).set("transaction.timeout.ms", timeout.to_string());
        config
    }

    /// This subtask's producer, started (fencing every earlier producer with its id) on first use.
    fn producer(&mut self) -> Result<&BaseProducer<SinkContext>, OperatorError> {
        if self.producer.is_none() {
            let config = self.config(&self.transactional_id);
            let producer = start_producer(&config, &self.transactional_id, self.deliveries.clone())?;
            self.producer = Some(producer);
        }
        self.producer.as_ref().ok_or_else(|| OperatorError::internal("no producer"))
    }

    /// The client of `transactional_id`'s marker group, made on first use.
    fn marker_consumer(&mut self, transactional_id: &str) -> Result<&BaseConsumer, OperatorError> {
        if !self.marker_consumers.contains_key(transactional_id) {
            let consumer = marker_consumer(&self.spec.bootstrap_servers, transactional_id)?;
            self.marker_consumers.insert(transactional_id.to_string(), consumer);
        }
        self.marker_consumers.get(transactional_id).ok_or_else(|| OperatorError::internal("no marker consumer"))
    }

    /// Writes the records of every pending checkpoint up to `id` (and adopted ones) in one transaction.
    fn commit_up_to(&mut self, id: u64, metrics: &KafkaCounters, out: &mut OutCounters) -> Result<(), OperatorError> {
        let topic = self.spec.topic.clone();
        let topic = topic.as_str();
        let due: Vec<u64> = self.pending.range(..=id).map(|(&k, _)| k).collect();
        if due.is_empty() && self.adopted.is_empty() {
            return Ok(());
        }
        let mut markers: BTreeMap<String, u64> = BTreeMap::new();
        if let Some(&last) = due.last() {
            markers.insert(self.transactional_id.clone(), last);
        }
        for (origin, checkpoint) in self.adopted.keys() {
            let marker = markers.entry(origin.clone()).or_insert(0);
            *marker = (*marker).max(*checkpoint);
        }
        let mut groups = Vec::with_capacity(markers.len());
        for (origin, checkpoint) in markers {
            let consumer = self.marker_consumer(&origin)?;
            let group = consumer
                .group_metadata()
                .ok_or_else(|| OperatorError::internal(format!("no consumer group metadata for '{origin}'")))?;
            groups.push((group, checkpoint));
        }
        self.producer()?;
        let mut records: Vec<&KafkaRecord> = self.adopted.values().flatten().collect();
        records.extend(due.iter().filter_map(|k| self.pending.get(k)).flatten());
        let id_for_log = id;
        let producer = self.producer.as_ref().ok_or_else(|| OperatorError::internal("no producer"))?;
        let mut last_error = None;
        for attempt in 1..=COMMIT_ATTEMPTS {
            match write_transaction(producer, topic, &records, &groups) {
                Ok(()) => {
                    serve_delivery_reports(producer);
                    for (partition, (records, bytes)) in self.deliveries.take().0 {
                        out.add(partition, records, bytes);
                    }
                    metrics.transactions(topic, "committed").inc();
                    last_error = None;
                    break;
                }
                Err(TxnError::Abortable(e)) => {
                    tracing::warn!(checkpoint = id_for_log, attempt, error = %e, "a Kafka transaction failed; aborting and writing it again");
                    metrics.transactions(topic, "aborted").inc();
                    producer
                        .abort_transaction(OPERATION_TIMEOUT)
                        .map_err(|e| OperatorError::io(format!("cannot abort a failed Kafka transaction: {e}")))?;
                    // The aborted attempt's reports: what it wrote does not count.
                    serve_delivery_reports(producer);
                    drop(self.deliveries.take());
                    last_error = Some(e);
                }
                Err(TxnError::Fatal(e)) => {
                    return Err(OperatorError::io(format!(
                        "the Kafka transaction of checkpoint {id_for_log} failed: {e} (it is written again after the restart)"
                    )))
                }
            }
        }
        if let Some(e) = last_error {
            return Err(OperatorError::io(format!(
                "the Kafka transaction of checkpoint {id_for_log} failed {COMMIT_ATTEMPTS} times: {e}"
            )));
        }
        for k in due {
            self.pending.remove(&k);
        }
        self.adopted.clear();
        self.committed = self.committed.max(id);
        Ok(())
    }

    /// The state of a checkpoint: this subtask's index, its transactional id, and every pending checkpoint's
    /// records (adopted ones included, under their origin's id).
    fn encode_state(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, STATE_MAGIC);
        let mut groups: Vec<(&str, u64, &Vec<KafkaRecord>)> =
            self.pending.iter().map(|(id, records)| (self.transactional_id.as_str(), *id, records)).collect();
        groups.extend(self.adopted.iter().map(|((origin, id), records)| (origin.as_str(), *id, records)));
        out.extend_from_slice(&(groups.len() as u32).to_be_bytes());
        for (origin, id, records) in groups {
            put_bytes(&mut out, origin.as_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&(records.len() as u32).to_be_bytes());
            for (key, value) in records {
                put_optional_bytes(&mut out, key.as_deref());
                put_optional_bytes(&mut out, value.as_deref());
            }
        }
        out
    }

    /// Restore: takes the pending records of the checkpointed subtasks that map to this one, drops those
    /// whose transaction had committed (the marker says so), and writes the rest in the first transaction.
    fn restore(
        &mut self,
        snapshots: &[&OperatorSnapshot],
        metrics: &KafkaCounters,
        out: &mut OutCounters,
    ) -> Result<(), OperatorError> {
        let topic = self.spec.topic.clone();
        let mut origins = BTreeMap::new();
        for snapshot in snapshots {
            if snapshot.operator_state.is_empty() {
                continue;
            }
            let groups = decode_state(&snapshot.operator_state)
                .map_err(|e| OperatorError::input(format!("a Kafka sink state that does not parse: {e}")))?;
            for (origin, id, records) in groups {
                let Some(index) = origin.strip_prefix(&format!("{}-", self.prefix)).and_then(|i| i.parse::<u32>().ok())
                else {
                    return Err(OperatorError::configuration(format!(
                        "the checkpoint holds records of transactional id '{origin}', not of prefix '{}'",
                        self.prefix
                    )));
                };
                if index % self.subtask.parallelism.max(1) == self.subtask.index {
                    origins.entry(origin.clone()).or_insert_with(BTreeMap::new).insert(id, records);
                }
            }
        }
        // Fence and abort what producers of the ids this subtask takes over left open (init_transactions does
        // both), then look at their markers.
        for (origin, pending) in origins {
            if origin != self.transactional_id {
                drop(start_producer(&self.config(&origin), &origin, DefaultProducerContext)?);
            }
            let committed = committed_marker(self.marker_consumer(&origin)?, &origin, &topic)?;
            for (id, records) in pending {
                if committed.is_some_and(|c| id <= c) {
                    tracing::info!(transactional_id = origin, checkpoint = id, "already committed before the restart");
                    continue;
                }
                tracing::info!(
                    transactional_id = origin,
                    checkpoint = id,
                    records = records.len(),
                    "committing a checkpoint's records after the restart"
                );
                self.adopted.insert((origin.clone(), id), records);
            }
        }
        // Ids of subtasks beyond the new parallelism that map to this one but had nothing pending.
        let old_parallelism = snapshots.len() as u32;
        let mut index = self.subtask.index + self.subtask.parallelism.max(1);
        while index < old_parallelism {
            let id = format!("{}-{index}", self.prefix);
            drop(start_producer(&self.config(&id), &id, DefaultProducerContext)?);
            index += self.subtask.parallelism.max(1);
        }
        self.producer()?;
        if !self.adopted.is_empty() {
            self.commit_up_to(0, metrics, out)?;
        }
        Ok(())
    }
}

/// Version 2 marks a value's presence as a key's (version 1, whose values were always there, still reads).
const STATE_MAGIC: &[u8] = b"sluice-kafka-sink-2";
const STATE_MAGIC_V1: &[u8] = b"sluice-kafka-sink-1";

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A presence marker (0 or 1), then the bytes if present.
fn put_optional_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
        None => out.push(0),
    }
}

fn decode_state(mut bytes: &[u8]) -> Result<Vec<(String, u64, Vec<KafkaRecord>)>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn u32_of(bytes: &mut &[u8]) -> Result<u32, String> {
        Ok(u32::from_be_bytes(take(bytes, 4)?.try_into().map_err(|_| "truncated")?))
    }
    fn u64_of(bytes: &mut &[u8]) -> Result<u64, String> {
        Ok(u64::from_be_bytes(take(bytes, 8)?.try_into().map_err(|_| "truncated")?))
    }
    fn bytes_of(bytes: &mut &[u8]) -> Result<Vec<u8>, String> {
        let n = u32_of(bytes)? as usize;
        Ok(take(bytes, n)?.to_vec())
    }
    fn optional_bytes(bytes: &mut &[u8], what: &str) -> Result<Option<Vec<u8>>, String> {
        match take(bytes, 1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(bytes_of(bytes)?)),
            other => Err(format!("a {what} marker {other}")),
        }
    }
    let optional_values = match bytes_of(&mut bytes)?.as_slice() {
        STATE_MAGIC => true,
        STATE_MAGIC_V1 => false,
        _ => return Err("not a Kafka sink state".into()),
    };
    let groups = u32_of(&mut bytes)?;
    let mut out = Vec::new();
    for _ in 0..groups {
        let origin = String::from_utf8(bytes_of(&mut bytes)?).map_err(|e| e.to_string())?;
        let id = u64_of(&mut bytes)?;
        let n = u32_of(&mut bytes)? as usize;
        let mut records = Vec::with_capacity(n.min(RESTORE_PREALLOCATION_MAX));
        for _ in 0..n {
            let key = optional_bytes(&mut bytes, "key")?;
            let value =
                if optional_values { optional_bytes(&mut bytes, "value")? } else { Some(bytes_of(&mut bytes)?) };
            records.push((key, value));
        }
        out.push((origin, id, records));
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the end", bytes.len()));
    }
    Ok(out)
}

/// Serves the delivery reports still queued once a transaction ended (its records are all acknowledged or
/// purged by then: only reports remain, each counted by `in_flight_count`), so that they count now.
fn serve_delivery_reports(producer: &BaseProducer<SinkContext>) {
    let deadline = Instant::now() + DELIVERY_REPORTS_WAIT;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(Duration::ZERO);
    }
}

/// A transactional producer with `transactional_id`, started: every earlier producer with that id is
/// fenced and its open transaction aborted.
fn start_producer<C: ProducerContext>(
    config: &ClientConfig,
    transactional_id: &str,
    context: C,
) -> Result<BaseProducer<C>, OperatorError> {
    let producer: BaseProducer<C> = config.create_with_context(context).map_err(|e| {
        super::client_error(&format!("cannot create the Kafka producer '{transactional_id}'"), config, e)
    })?;
    producer
        .init_transactions(OPERATION_TIMEOUT)
        .map_err(|e| OperatorError::io(format!("cannot start transactions for '{transactional_id}': {e}")))?;
    Ok(producer)
}

/// The last checkpoint whose transaction committed for `transactional_id`, from its marker (read through
/// `consumer`, a client of the marker group).
fn committed_marker(
    consumer: &BaseConsumer,
    transactional_id: &str,
    topic: &str,
) -> Result<Option<u64>, OperatorError> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(list, OPERATION_TIMEOUT)
        .map_err(|e| OperatorError::io(format!("cannot read the commit marker of '{transactional_id}': {e}")))?;
    Ok(match committed.find_partition(topic, 0).map(|p| p.offset()) {
        Some(Offset::Offset(n)) if n >= 0 => Some(n as u64),
        _ => None,
    })
}

/// A client of the consumer group holding the commit markers of `transactional_id` (the group is named
/// like the id). It never joins the group: it reads the marker and hands its group metadata to transactions.
fn marker_consumer(bootstrap_servers: &str, transactional_id: &str) -> Result<BaseConsumer, OperatorError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", transactional_id)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| OperatorError::io(format!("cannot create a Kafka consumer: {e}")))
}

enum TxnError {
    /// The transaction must be aborted; it may then be written again.
    Abortable(String),
    /// The producer cannot go on.
    Fatal(String),
}

fn classify(what: &str, error: KafkaError) -> TxnError {
    let message = format!("{what}: {error}");
    match &error {
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnError::Abortable(message),
        _ => TxnError::Fatal(message),
    }
}

/// One transaction: begin, the records, the markers, commit (retried while the error is retriable).
fn write_transaction(
    producer: &BaseProducer<SinkContext>,
    topic: &str,
    records: &[&KafkaRecord],
    markers: &[(ConsumerGroupMetadata, u64)],
) -> Result<(), TxnError> {
    producer.begin_transaction().map_err(|e| classify("begin", e))?;
    for record in records {
        send_blocking(
            |r| producer.send(r).map_err(Box::new),
            || producer.poll(TRANSACTION_QUEUE_FULL_POLL),
            topic,
            record,
        )
        .map_err(|e| TxnError::Abortable(e.to_string()))?;
    }
    for (group, checkpoint) in markers {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, 0, Offset::Offset(*checkpoint as i64))
            .map_err(|e| TxnError::Fatal(e.to_string()))?;
        producer
            .send_offsets_to_transaction(&offsets, group, OPERATION_TIMEOUT)
            .map_err(|e| classify("commit marker", e))?;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match producer.commit_transaction(OPERATION_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < COMMIT_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "committing a Kafka transaction failed; retrying");
            }
            Err(e) => return Err(classify("commit", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Managed Kafka (MSK, Confluent Cloud) speaks SSL or SASL_SSL; librdkafka refuses those protocols at
    /// client creation when it was built without OpenSSL ("OpenSSL not available at build time"). The local
    /// broker of the tests (nisshi) has no TLS listener, so the handshake itself is not tested here.
    #[test]
    fn librdkafka_is_built_with_tls_and_scram_for_managed_kafka() {
        for (protocol, mechanism) in [("ssl", None), ("sasl_ssl", Some("SCRAM-SHA-512")), ("sasl_ssl", Some("PLAIN"))] {
            let mut config = ClientConfig::new();
            config.set("bootstrap.servers", "127.0.0.1:1").set("security.protocol", protocol);
            if let Some(mechanism) = mechanism {
                config.set("sasl.mechanism", mechanism).set("sasl.username", "u").set("sasl.password", "p");
            }
            let created: Result<rdkafka::producer::BaseProducer, _> = config.create();
            assert!(created.is_ok(), "{protocol} {mechanism:?}: {:?}", created.err());
        }
    }

    #[test]
    fn the_state_round_trips_and_damage_is_an_error() {
        let spec = KafkaSink { topic: "out".into(), bootstrap_servers: "127.0.0.1:1".into(), ..Default::default() };
        let mut transactional =
            Transactional::new(&spec, "sink", SubtaskInfo { index: 1, parallelism: 2 }).expect("transactional");
        let v = |bytes: &[u8]| Some(bytes.to_vec());
        transactional.pending.insert(3, vec![(v(b"k"), v(b"v1")), (None, v(b"v2")), (v(b"gone"), None)]);
        transactional.adopted.insert(("sluice-sink-3".into(), 2), vec![(None, v(b"old"))]);
        let bytes = transactional.encode_state();
        let groups = decode_state(&bytes).expect("decode");
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0],
            ("sluice-sink-1".to_string(), 3, vec![(v(b"k"), v(b"v1")), (None, v(b"v2")), (v(b"gone"), None)])
        );
        assert_eq!(groups[1], ("sluice-sink-3".to_string(), 2, vec![(None, v(b"old"))]));
        assert!(decode_state(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_state(b"garbage").is_err());

        // A checkpoint of the first version (values always present) still restores.
        let mut v1 = Vec::new();
        put_bytes(&mut v1, STATE_MAGIC_V1);
        v1.extend_from_slice(&1u32.to_be_bytes());
        put_bytes(&mut v1, b"sluice-sink-0");
        v1.extend_from_slice(&7u64.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        put_optional_bytes(&mut v1, Some(b"k"));
        put_bytes(&mut v1, b"value");
        assert_eq!(
            decode_state(&v1).expect("v1"),
            vec![("sluice-sink-0".to_string(), 7, vec![(v(b"k"), v(b"value"))])]
        );
    }
}
