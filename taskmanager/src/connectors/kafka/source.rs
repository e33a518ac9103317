//! The Kafka source: assigned partitions, offsets in checkpoints, bad records by policy.
//!
//! No consumer-group rebalancing: each subtask computes which partitions are its own (a stable function of
//! topic, partition and parallelism, so partitions added later never move the existing ones) and assigns
//! them to its consumer directly. Which partitions exist is learnt by a discovery thread, which also turns
//! `start_from` into a concrete offset for every new partition before it is assigned (so a checkpoint
//! always holds a real offset, never "latest") and samples the partitions' end offsets for the lag gauge.
//! Everything that can block on the network runs on that thread; the task polls the consumer without
//! waiting.
//!
//! The position in a checkpoint is the next offset of every partition this subtask owns. A restore merges
//! the positions of every subtask of the checkpointed job, so a job restored at another parallelism finds
//! every partition's offset whichever subtask had it.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_common::job::BATCH_SIZE_DEFAULT;
use sluice_common::proto::{BadRecordPolicy, KafkaSource, KafkaStartFrom};

use super::codec::{RawRecord, RecordDecoder};
use crate::metrics::KafkaCounters;
use crate::operator_api::{OperatorError, Source, SourcePoll, SubtaskInfo};

const DISCOVERY_INTERVAL_DEFAULT_MS: u64 = 10_000;
/// How long a metadata or offsets request of the discovery thread may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a checkpoint waits for dead letters to be acknowledged.
const DEAD_LETTER_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the source waits between polls when the consumer had nothing.
const EMPTY_POLL_WAIT: Duration = Duration::from_millis(5);
/// How long the source waits between polls until the discovery thread has listed its partitions.
const UNLISTED_POLL_WAIT: Duration = Duration::from_millis(20);
/// How often the first listing of the partitions is tried again when it fails (broker unreachable).
const LISTING_RETRY: Duration = Duration::from_secs(1);
/// The discovery thread wakes at most this often, whatever partition_discovery_interval_ms says.
const DISCOVERY_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// How long one end-offset request for the lag gauge may take (the gauge just keeps its value otherwise).
const LAG_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Consumer errors (librdkafka retries them itself) are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the discovery thread samples the partitions' end offsets for the lag gauge.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The subtask (of `parallelism`) owning `partition` of `topic`. Consecutive partitions of a topic go to
/// consecutive subtasks from a start that depends on the topic, so several topics spread evenly (Flink's
/// rule); adding partitions never moves an existing one.
pub fn owner_of(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let parallelism = parallelism.max(1);
    let start = crc32fast_hash(topic.as_bytes()) % parallelism;
    (start + partition.unsigned_abs() % parallelism) % parallelism
}

/// A stable 32-bit hash (FNV-1a): the same in every process and release.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// What a Kafka source subtask writes into a checkpoint.
#[derive(Serialize, Deserialize, Default)]
struct Position {
    /// topic → partition → next offset to read.
    next: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Bounded sources: topic → partition → the offset to stop at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    end: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Whether the subtask had listed its partitions (a subtask that had not yet owns partitions that are
    /// missing from `next` without being new).
    started: bool,
}

type Tp = (String, i32);

struct PartitionState {
    /// The next offset to emit: what a checkpoint records.
    next: i64,
    /// The next offset to take from the consumer (ahead of `next` while decoded batches wait to be emitted).
    fetched: i64,
    end: Option<i64>,
    /// This partition's index among the subtask's partitions: its watermark split.
    split: usize,
    records_in: prometheus::IntCounter,
    bytes_in: prometheus::IntCounter,
}

/// A decoded batch waiting to be emitted, with where its partition stands after it.
struct Ready {
    batch: RecordBatch,
    tp: Tp,
    next: i64,
    split: usize,
}

/// What the discovery thread tells the source.
enum Discovered {
    /// Partitions to read from now on, each from its offset (up to its end, when bounded).
    Partitions(Vec<(Tp, i64, Option<i64>)>),
    /// Every topic was listed once: the source knows all its partitions of the start.
    Listed,
}

/// The discovery thread's end of things. Dropping it stops the thread at its next wait, without joining:
/// a metadata request in flight may take seconds, and a cancelled task must not wait for it.
struct Discovery {
    events: Receiver<Discovered>,
    _stop: Sender<()>,
    _thread: JoinHandle<()>,
}

struct DeadLetters {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

pub struct KafkaSourceReader {
    spec: KafkaSource,
    subtask: SubtaskInfo,
    config: ClientConfig,
    consumer: BaseConsumer,
    decoder: RecordDecoder,
    batch_size: usize,
    partitions: BTreeMap<Tp, PartitionState>,
    /// Shared with the discovery thread, for the lag gauge: each partition's next offset.
    positions: Arc<Mutex<HashMap<Tp, i64>>>,
    restored: Option<Position>,
    discovery: Option<Discovery>,
    listed: bool,
    ready: VecDeque<Ready>,
    last_split: Option<usize>,
    dead_letters: Option<DeadLetters>,
    /// Checkpoint id → the offsets it holds, committed to the group when it completes.
    pending_commits: BTreeMap<u64, Vec<(Tp, i64)>>,
    metrics: KafkaCounters,
    /// kafka_bad_records_total of each topic, made on its first bad record.
    bad_counters: HashMap<String, prometheus::IntCounter>,
    last_error_log: Option<Instant>,
}

/// How long librdkafka waits before fetching a partition again once its prefetch queue is full
/// (`fetch.queue.backoff.ms`). librdkafka's default, 1 s, starves a source that drains the queue in a fraction
/// of that: the Kafka word count at parallelism 1 ran at 154 K rows/s with it and at 760-860 K with 50 ms
/// (10 ms: 670 K, 100 ms: 700 K; 0 refetches too eagerly: 330 K). A property of the job overrides it.
const FETCH_QUEUE_BACKOFF_MS: &str = "50";

fn client_config(spec: &KafkaSource, group_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &spec.bootstrap_servers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    for (key, value) in &spec.properties {
        config.set(key, value);
    }
    config
}

/// The consumer group of a source vertex.
pub fn group_id(spec: &KafkaSource, vertex: &str) -> String {
    if spec.group_id.is_empty() {
        format!("sluice-{vertex}")
    } else {
        spec.group_id.clone()
    }
}

impl KafkaSourceReader {
    pub fn open(
        spec: &KafkaSource,
        vertex: &str,
        schema: SchemaRef,
        subtask: SubtaskInfo,
        metrics: KafkaCounters,
    ) -> Result<Self, OperatorError> {
        let config = client_config(spec, &group_id(spec, vertex));
        let consumer: BaseConsumer =
            config.create().map_err(|e| super::client_error("cannot create a Kafka consumer", &config, e))?;
        let decoder = RecordDecoder::new(schema, spec.format(), &spec.timestamp_column, &spec.key_column)?;
        let dead_letters = match spec.on_bad_record() {
            BadRecordPolicy::DeadLetter => {
                let mut producer_config = ClientConfig::new();
                producer_config
                    .set("bootstrap.servers", &spec.bootstrap_servers)
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "5");
                for (key, value) in &spec.properties {
                    // Consumer-only settings would make the producer refuse to start.
                    if !is_consumer_only(key) {
                        producer_config.set(key, value);
                    }
                }
                let producer = producer_config
                    .create()
                    .map_err(|e| super::client_error("cannot create the dead-letter producer", &producer_config, e))?;
                Some(DeadLetters { producer, topic: spec.dead_letter_topic.clone() })
            }
            _ => None,
        };
        Ok(Self {
            spec: spec.clone(),
            subtask,
            config,
            consumer,
            decoder,
            batch_size: spec.batch_size.unwrap_or(BATCH_SIZE_DEFAULT).max(1) as usize,
            partitions: BTreeMap::new(),
            positions: Arc::default(),
            restored: None,
            discovery: None,
            listed: false,
            ready: VecDeque::new(),
            last_split: None,
            dead_letters,
            pending_commits: BTreeMap::new(),
            metrics,
            bad_counters: HashMap::new(),
            last_error_log: None,
        })
    }

    fn start_discovery(&mut self) -> Result<(), OperatorError> {
        let (events_tx, events) = mpsc::channel();
        let (stop_tx, stop) = mpsc::channel();
        let restored = self.restored.take();
        let job = DiscoveryJob {
            missing: std::cell::RefCell::default(),
            config: self.config.clone(),
            spec: self.spec.clone(),
            subtask: self.subtask,
            restored,
            positions: self.positions.clone(),
            metrics: self.metrics.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("kafka-discovery".into())
            .spawn(move || job.run(&events_tx, &stop))
            .map_err(|e| OperatorError::io(format!("cannot start the Kafka partition discovery thread: {e}")))?;
        self.discovery = Some(Discovery { events, _stop: stop_tx, _thread: thread });
        Ok(())
    }

    /// Takes what the discovery thread found; reassigns the consumer when partitions were added.
    fn take_discoveries(&mut self) -> Result<(), OperatorError> {
        let Some(discovery) = &self.discovery else { return Ok(()) };
        let mut added = false;
        while let Ok(event) = discovery.events.try_recv() {
            match event {
                Discovered::Partitions(partitions) => {
                    for ((topic, partition), next, end) in partitions {
                        let split = self.partitions.len();
                        let state = PartitionState {
                            next,
                            fetched: next,
                            end,
                            split,
                            records_in: self.metrics.records_in(&topic, partition),
                            bytes_in: self.metrics.bytes_in(&topic, partition),
                        };
                        tracing::info!(topic, partition, offset = next, end, "assigned a Kafka partition");
                        self.partitions.insert((topic, partition), state);
                        added = true;
                    }
                }
                Discovered::Listed => self.listed = true,
            }
        }
        if added {
            self.assign()?;
        }
        Ok(())
    }

    fn assign(&mut self) -> Result<(), OperatorError> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), state) in &self.partitions {
            if state.end.is_some_and(|end| state.fetched >= end) {
                continue;
            }
            list.add_partition_offset(topic, *partition, Offset::Offset(state.fetched))
                .map_err(|e| OperatorError::io(format!("topic {topic} partition {partition}: {e}")))?;
        }
        self.consumer.assign(&list).map_err(|e| OperatorError::io(format!("cannot assign Kafka partitions: {e}")))
    }

    fn bounded_done(&self) -> bool {
        self.listed && self.partitions.values().all(|p| p.end.is_some_and(|end| p.next >= end))
    }

    /// Reads what the consumer has (without waiting), decoded into batches per partition.
    fn fill(&mut self) -> Result<(), OperatorError> {
        // Per partition seen in this round: its key, where its fetching stands, its end, its records. Found by
        // comparing the message's topic as &str, so no String is made per record.
        let mut groups: Vec<(Tp, i64, Option<i64>, Vec<OwnedRecord>)> = Vec::new();
        let mut count = 0;
        while count < self.batch_size {
            let Some(result) = self.consumer.poll(Duration::ZERO) else { break };
            let message = match result {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => {
                    self.log_error(&e);
                    break;
                }
            };
            let (topic, partition) = (message.topic(), message.partition());
            let group = match groups.iter().position(|g| g.0 .1 == partition && g.0 .0 == topic) {
                Some(index) => &mut groups[index],
                None => {
                    let tp = (topic.to_string(), partition);
                    let Some(state) = self.partitions.get(&tp) else { continue };
                    let (fetched, end) = (state.fetched, state.end);
                    groups.push((tp, fetched, end, Vec::new()));
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            let offset = message.offset();
            // Records before the position come again after a reassignment; past the end, a bounded source stops.
            if offset < group.1 || group.2.is_some_and(|end| offset >= end) {
                continue;
            }
            group.1 = offset + 1;
            group.3.push(OwnedRecord {
                offset,
                value: message.payload().map(<[u8]>::to_vec),
                key: message.key().map(<[u8]>::to_vec),
                timestamp: message.timestamp().to_millis(),
                headers: message.headers().map(|h| h.detach()),
            });
            count += 1;
        }
        for (tp, fetched, _, records) in groups {
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.fetched = fetched;
            }
            self.decode_partition(tp, records)?;
        }
        Ok(())
    }

    fn decode_partition(&mut self, tp: Tp, records: Vec<OwnedRecord>) -> Result<(), OperatorError> {
        let Some(state) = self.partitions.get(&tp) else { return Ok(()) };
        let Some(last) = records.last().map(|r| r.offset) else { return Ok(()) };
        let bytes: usize =
            records.iter().map(|r| r.value.as_ref().map_or(0, Vec::len) + r.key.as_ref().map_or(0, Vec::len)).sum();
        state.records_in.inc_by(records.len() as u64);
        state.bytes_in.inc_by(bytes as u64);
        let split = state.split;
        let raw: Vec<RawRecord<'_>> = records
            .iter()
            .map(|r| RawRecord { value: r.value.as_deref(), key: r.key.as_deref(), timestamp: r.timestamp })
            .collect();
        let (batch, bad) = self.decoder.decode(&raw)?;
        for (index, reason) in bad {
            let record = &records[index];
            self.bad_record(&tp, record, &reason)?;
        }
        self.ready.push_back(Ready { batch, tp, next: last + 1, split });
        Ok(())
    }

    /// Counts a bad record of `topic`; `action` is what the source's policy did with it (one per source).
    fn count_bad_record(&mut self, topic: &str, action: &str) {
        match self.bad_counters.get(topic) {
            Some(counter) => counter.inc(),
            None => {
                let counter = self.metrics.bad_records(topic, action);
                counter.inc();
                self.bad_counters.insert(topic.to_string(), counter);
            }
        }
    }

    fn bad_record(&mut self, (topic, partition): &Tp, record: &OwnedRecord, reason: &str) -> Result<(), OperatorError> {
        let at = format!("topic {topic} partition {partition} offset {}", record.offset);
        match self.spec.on_bad_record() {
            BadRecordPolicy::Drop => {
                tracing::debug!(%at, reason, "dropped a Kafka record that cannot be decoded");
                self.count_bad_record(topic, "dropped");
                Ok(())
            }
            BadRecordPolicy::DeadLetter => {
                let Some(dead) = &self.dead_letters else {
                    return Err(OperatorError::internal("no dead-letter producer"));
                };
                let mut headers = record.headers.clone().unwrap_or_default();
                let partition_text = partition.to_string();
                let offset_text = record.offset.to_string();
                for (key, value) in [
                    ("sluice.source.topic", topic.as_str()),
                    ("sluice.source.partition", partition_text.as_str()),
                    ("sluice.source.offset", offset_text.as_str()),
                    ("sluice.error", reason),
                ] {
                    headers = headers.insert(Header { key, value: Some(value) });
                }
                let mut out = BaseRecord::<Vec<u8>, Vec<u8>>::to(&dead.topic).headers(headers);
                if let Some(value) = &record.value {
                    out = out.payload(value);
                }
                if let Some(key) = &record.key {
                    out = out.key(key);
                }
                if let Some(timestamp) = record.timestamp {
                    out = out.timestamp(timestamp);
                }
                dead.producer
                    .send(out)
                    .map_err(|(e, _)| OperatorError::io(format!("{at}: cannot dead-letter the record: {e}")))?;
                self.count_bad_record(topic, "dead_lettered");
                Ok(())
            }
            BadRecordPolicy::Fail | BadRecordPolicy::Unspecified => {
                Err(OperatorError::input(format!("{at}: cannot decode the record: {reason}")))
            }
        }
    }

    fn log_error(&mut self, error: &KafkaError) {
        // librdkafka retries on its own; say so at most every 10 s.
        if self.last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
            self.last_error_log = Some(Instant::now());
            tracing::warn!(error = %error, "the Kafka consumer reports an error (retrying)");
        }
    }

    /// Everything taken from the consumer has been emitted and nothing more came: where the consumer's fetch
    /// position is past `next`, only records that are never delivered lie between (transaction markers,
    /// aborted transactions, compacted-away offsets), so the partition stands at that position. This is how
    /// a bounded source sees the end of a partition whose last offset is a transaction marker.
    fn skip_to_consumer_positions(&mut self) {
        let Ok(positions) = self.consumer.position() else { return };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else { continue };
            let tp = (element.topic().to_string(), element.partition());
            if let Some(state) = self.partitions.get_mut(&tp) {
                let position = state.end.map_or(position, |end| position.min(end));
                if state.next == state.fetched && position > state.next {
                    state.next = position;
                    state.fetched = position;
                }
            }
        }
    }

    /// Waits until the broker acknowledged every dead letter sent so far.
    fn flush_dead_letters(&self) -> Result<(), OperatorError> {
        match &self.dead_letters {
            Some(dead) => dead
                .producer
                .flush(DEAD_LETTER_FLUSH_TIMEOUT)
                .map_err(|e| OperatorError::io(format!("cannot flush the dead-letter topic: {e}"))),
            None => Ok(()),
        }
    }

    fn position_now(&self) -> Position {
        let mut position = Position { started: self.listed, ..Position::default() };
        for ((topic, partition), state) in &self.partitions {
            position.next.entry(topic.clone()).or_default().insert(*partition, state.next);
            if let Some(end) = state.end {
                position.end.entry(topic.clone()).or_default().insert(*partition, end);
            }
        }
        position
    }
}

struct OwnedRecord {
    offset: i64,
    value: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: Option<OwnedHeaders>,
}

fn is_consumer_only(key: &str) -> bool {
    matches!(
        key,
        "group.id"
            | "isolation.level"
            | "auto.offset.reset"
            | "enable.auto.commit"
            | "enable.auto.offset.store"
            | "fetch.min.bytes"
            | "fetch.wait.max.ms"
            | "max.poll.interval.ms"
            | "session.timeout.ms"
            | "group.instance.id"
    )
}

impl Source for KafkaSourceReader {
    fn poll_next(&mut self) -> Result<SourcePoll, OperatorError> {
        if self.discovery.is_none() {
            self.start_discovery()?;
        }
        self.take_discoveries()?;
        if self.ready.is_empty() && self.listed {
            self.fill()?;
        }
        if let Some(ready) = self.ready.pop_front() {
            if let Some(state) = self.partitions.get_mut(&ready.tp) {
                state.next = ready.next;
            }
            self.positions.lock().unwrap_or_else(|p| p.into_inner()).insert(ready.tp.clone(), ready.next);
            self.last_split = Some(ready.split);
            if ready.batch.num_rows() > 0 {
                return Ok(SourcePoll::Batch(ready.batch));
            }
            return Ok(SourcePoll::Wait(Duration::ZERO));
        }
        if self.spec.bounded {
            self.skip_to_consumer_positions();
        }
        if self.spec.bounded && self.bounded_done() {
            self.flush_dead_letters()?;
            return Ok(SourcePoll::End);
        }
        Ok(SourcePoll::Wait(if self.listed { EMPTY_POLL_WAIT } else { UNLISTED_POLL_WAIT }))
    }

    fn split_of_last_batch(&self) -> Option<usize> {
        self.last_split
    }

    fn split_count(&self) -> usize {
        self.partitions.len()
    }

    fn position(&mut self, checkpoint: u64) -> Result<Vec<u8>, OperatorError> {
        // Dead letters of records before the barrier are acknowledged before the checkpoint counts them as read.
        self.flush_dead_letters()?;
        let offsets = self.partitions.iter().map(|(tp, state)| (tp.clone(), state.next)).collect();
        self.pending_commits.insert(checkpoint, offsets);
        serde_json::to_vec(&self.position_now())
            .map_err(|e| OperatorError::internal(format!("cannot encode the Kafka source's position: {e}")))
    }

    fn seek_all(&mut self, _own: Option<&[u8]>, all: &[&[u8]]) -> Result<(), OperatorError> {
        let mut merged = Position { started: true, ..Position::default() };
        for bytes in all {
            if bytes.is_empty() {
                continue;
            }
            let position: Position = serde_json::from_slice(bytes)
                .map_err(|e| OperatorError::input(format!("a Kafka source position that does not parse: {e}")))?;
            merged.started &= position.started;
            for (topic, partitions) in position.next {
                merged.next.entry(topic).or_default().extend(partitions);
            }
            for (topic, partitions) in position.end {
                merged.end.entry(topic).or_default().extend(partitions);
            }
        }
        self.restored = Some(merged);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), OperatorError> {
        let Some(offsets) = self.pending_commits.remove(&checkpoint) else { return Ok(()) };
        self.pending_commits.retain(|&id, _| id > checkpoint);
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            if list.add_partition_offset(&topic, partition, Offset::Offset(next)).is_err() {
                continue;
            }
        }
        if list.count() > 0 {
            // For lag monitoring only: a failure is logged, never fatal (the checkpoint holds the offsets).
            if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
                tracing::debug!(error = %e, "cannot commit offsets to the consumer group");
            }
        }
        Ok(())
    }
}

/// The discovery thread's work.
struct DiscoveryJob {
    /// Topics found missing (warned about once until they appear).
    missing: std::cell::RefCell<HashSet<String>>,
    config: ClientConfig,
    spec: KafkaSource,
    subtask: SubtaskInfo,
    restored: Option<Position>,
    positions: Arc<Mutex<HashMap<Tp, i64>>>,
    metrics: KafkaCounters,
}

impl DiscoveryJob {
    fn run(self, events: &Sender<Discovered>, stop: &Receiver<()>) {
        let client: BaseConsumer = match self.config.create() {
            Ok(client) => client,
            Err(e) => {
                let error = super::client_error("cannot create the Kafka discovery client", &self.config, e);
                tracing::error!(%error, "cannot create the Kafka discovery client");
                return;
            }
        };
        let interval =
            Duration::from_millis(self.spec.partition_discovery_interval_ms.unwrap_or(DISCOVERY_INTERVAL_DEFAULT_MS));
        let mut known: HashSet<Tp> = HashSet::new();
        let mut listed = false;
        let mut next_listing = Instant::now();
        let mut lag_gauges = HashMap::new();
        loop {
            let due = !listed || (!interval.is_zero() && Instant::now() >= next_listing);
            if due {
                match self.discover(&client, &mut known, !listed) {
                    Ok(started) => {
                        next_listing = Instant::now() + interval;
                        if !started.is_empty() && events.send(Discovered::Partitions(started)).is_err() {
                            return;
                        }
                        if !listed {
                            listed = true;
                            if events.send(Discovered::Listed).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list the Kafka topics' partitions (retrying)"),
                }
            }
            // A source gone while this listed (its job's series may be removed already) makes no new series.
            if matches!(stop.try_recv(), Ok(()) | Err(TryRecvError::Disconnected)) {
                return;
            }
            self.sample_lag(&client, &known, &mut lag_gauges);
            let wait =
                if listed { LAG_SAMPLE_INTERVAL.min(interval.max(DISCOVERY_INTERVAL_MIN)) } else { LISTING_RETRY };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// The partitions of this subtask not in `known` yet, each with its start (and end) offset.
    fn discover(
        &self,
        client: &BaseConsumer,
        known: &mut HashSet<Tp>,
        initial: bool,
    ) -> Result<Vec<(Tp, i64, Option<i64>)>, String> {
        let fresh: Vec<Tp> = self.list(client)?.into_iter().filter(|tp| !known.contains(tp)).collect();
        let started = self.starts(client, &fresh, initial)?;
        known.extend(fresh);
        Ok(started)
    }

    /// This subtask's partitions of every topic, sorted.
    fn list(&self, client: &BaseConsumer) -> Result<Vec<Tp>, String> {
        let mut owned = Vec::new();
        for topic in &self.spec.topics {
            let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            // A topic that does not exist (yet) is skipped with a warning, as Flink does: the others are read,
            // and its partitions are found by a later listing once it is created (and read from the start).
            let missing = match found {
                None => Some("not in the metadata".to_string()),
                Some(t) => t.error().map(|e| format!("{e:?}")),
            };
            if let Some(reason) = missing {
                if self.missing.borrow_mut().insert(topic.clone()) {
                    tracing::warn!(topic, reason, "a topic of the Kafka source is not available; reading the others");
                }
                continue;
            }
            let Some(found) = found else { continue };
            self.missing.borrow_mut().remove(topic);
            for partition in found.partitions() {
                if owner_of(topic, partition.id(), self.subtask.parallelism) == self.subtask.index {
                    owned.push((topic.clone(), partition.id()));
                }
            }
        }
        owned.sort();
        Ok(owned)
    }

    /// The offset each of `fresh` starts at: the restored one, else `start_from` for the partitions of the
    /// start, else the beginning (a partition created while the job ran).
    fn starts(
        &self,
        client: &BaseConsumer,
        fresh: &[Tp],
        initial: bool,
    ) -> Result<Vec<(Tp, i64, Option<i64>)>, String> {
        let restored_next = |tp: &Tp| self.restored.as_ref().and_then(|r| r.next.get(&tp.0)?.get(&tp.1).copied());
        let restored_end = |tp: &Tp| self.restored.as_ref().and_then(|r| r.end.get(&tp.0)?.get(&tp.1).copied());
        let use_start_from = initial && self.restored.as_ref().is_none_or(|r| !r.started);
        let mut out = Vec::with_capacity(fresh.len());
        for tp in fresh {
            let (low, high) =
                client.fetch_watermarks(&tp.0, tp.1, REQUEST_TIMEOUT).map_err(|e| format!("{} {}: {e}", tp.0, tp.1))?;
            let next = match restored_next(tp) {
                Some(next) => next,
                None if use_start_from => self.start_offset(client, tp, low, high)?,
                None => low,
            };
            let end = if self.spec.bounded { Some(restored_end(tp).unwrap_or(high)) } else { None };
            out.push((tp.clone(), next, end));
        }
        Ok(out)
    }

    fn start_offset(&self, client: &BaseConsumer, (topic, partition): &Tp, low: i64, high: i64) -> Result<i64, String> {
        let one = |offset: Offset| -> Result<TopicPartitionList, String> {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic, *partition, offset).map_err(|e| e.to_string())?;
            Ok(list)
        };
        let found = |list: TopicPartitionList| -> Option<i64> {
            match list.find_partition(topic, *partition)?.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            }
        };
        Ok(match self.spec.start_from() {
            KafkaStartFrom::Earliest | KafkaStartFrom::Unspecified => low,
            KafkaStartFrom::Latest => high,
            KafkaStartFrom::Committed => {
                let committed =
                    client.committed_offsets(one(Offset::Invalid)?, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
                found(committed).unwrap_or(low).clamp(low, high)
            }
            KafkaStartFrom::Timestamp => {
                let times = client
                    .offsets_for_times(one(Offset::Offset(self.spec.start_timestamp_ms))?, REQUEST_TIMEOUT)
                    .map_err(|e| e.to_string())?;
                found(times).unwrap_or(high)
            }
        })
    }

    fn sample_lag(&self, client: &BaseConsumer, known: &HashSet<Tp>, gauges: &mut HashMap<Tp, prometheus::IntGauge>) {
        let positions = self.positions.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for tp in known {
            let Some(next) = positions.get(tp) else { continue };
            if let Ok((_, high)) = client.fetch_watermarks(&tp.0, tp.1, LAG_REQUEST_TIMEOUT) {
                let gauge = gauges.entry(tp.clone()).or_insert_with(|| self.metrics.lag(&tp.0, tp.1));
                gauge.set((high - next).max(0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_new_partitions_do_not_move_old_ones() {
        for parallelism in 1..=5 {
            for topic in ["input-text", "orders", "a"] {
                let owners: Vec<u32> = (0..12).map(|p| owner_of(topic, p, parallelism)).collect();
                assert!(owners.iter().all(|&o| o < parallelism));
                // Consecutive partitions go to consecutive subtasks: an even spread.
                for window in owners.windows(2) {
                    assert_eq!(window[1], (window[0] + 1) % parallelism);
                }
                // The owner of a partition depends on nothing but topic, partition and parallelism.
                assert_eq!(owner_of(topic, 3, parallelism), owners[3]);
            }
        }
    }
}
