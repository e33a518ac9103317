//! A Kafka broker of a test's own: `nisshi` (crates.io), a Kafka-protocol broker that keeps its log in
//! memory and starts in milliseconds. It implements topics, idempotent produce, consumer groups and
//! committed offsets, but refuses transactional producers, so the exactly-once sink's protocol is tested
//! against librdkafka's mock cluster instead (taskmanager/src/operators/kafka/tests.rs).
//!
//! The binary is found as `$SLUICE_NISSHI`, else `nisshi` on the PATH, else
//! `$HOME/.cache/sluice/tools/bin/nisshi`, where `scripts/install-test-tools.sh` installs it. The broker
//! listens on 127.0.0.1 and a port the test picks, and is killed by its PID when the value is dropped, pass or
//! fail.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::process::{Launch, Process};
use crate::wait::{poll_until, Progress};

/// The `nisshi` binary.
pub fn binary() -> anyhow::Result<PathBuf> {
    crate::binaries::test_tool("nisshi", "SLUICE_NISSHI")
}

/// One record read back from a topic.
#[derive(Clone, Debug)]
pub struct Record {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value (empty when it had none).
    pub value: Vec<u8>,
    /// Whether it had no value at all (a tombstone).
    pub tombstone: bool,
    /// Its headers, values as (lossy) text.
    pub headers: BTreeMap<String, String>,
    /// Its timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
}

impl Record {
    /// The value as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// A record to produce: its key and value, each optional (no value: a tombstone).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A running broker owned by a test.
pub struct KafkaBroker {
    port: u16,
    /// The CA clients trust when the broker listens with TLS only.
    tls_ca: Option<PathBuf>,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl KafkaBroker {
    /// Starts a broker with in-memory storage; returns once it answers metadata requests.
    pub fn start() -> anyhow::Result<KafkaBroker> {
        KafkaBroker::start_with(None)
    }

    /// Starts a broker that accepts TLS connections only, presenting `cert` and `key`; its own clients
    /// (topics, produce, read) trust `ca`, as a job must ([`KafkaBroker::client_properties`]).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<KafkaBroker> {
        KafkaBroker::start_with(Some((cert, key, ca)))
    }

    fn start_with(tls: Option<(&Path, &Path, &Path)>) -> anyhow::Result<KafkaBroker> {
        let dir = tempfile::Builder::new().prefix("sluice-test-kafka").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let process = Process::spawn(Launch {
            name: "nisshi",
            program: &binary()?,
            args: vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                "--storage-engine".into(),
                "memory://nisshi/".into(),
            ]
            .into_iter()
            .chain(tls.iter().flat_map(|(cert, key, _)| {
                ["--cert".to_string(), cert.display().to_string(), "--key".to_string(), key.display().to_string()]
            }))
            .collect(),
            env: &[],
            cwd: dir.path(),
            log_dir: dir.path(),
        })?;
        let tls_ca = tls.map(|(_, _, ca)| ca.to_path_buf());
        let broker = KafkaBroker { port, tls_ca, _process: process, _dir: dir };
        let consumer = broker.consumer("sluice-test-probe")?;
        poll_until("the Kafka broker to answer", Duration::from_secs(30), || {
            Ok(match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(_) => Progress::Ready(()),
                Err(e) => Progress::Pending(e.to_string()),
            })
        })?;
        Ok(broker)
    }

    /// The librdkafka properties a client of this broker needs (TLS and its CA, or none).
    pub fn client_properties(&self) -> Vec<(String, String)> {
        match &self.tls_ca {
            Some(ca) => vec![
                ("security.protocol".to_string(), "ssl".to_string()),
                ("ssl.ca.location".to_string(), ca.display().to_string()),
            ],
            None => Vec::new(),
        }
    }

    /// A client configuration for this broker.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers());
        for (key, value) in self.client_properties() {
            config.set(key, value);
        }
        config
    }

    /// host:port for `bootstrap_servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log (for failure messages).
    pub fn log_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.config().create()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let results = runtime.block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))?;
        for result in results {
            result.map_err(|(name, code)| anyhow::anyhow!("cannot create topic {name}: {code}"))?;
        }
        // The topic is usable once its metadata lists every partition.
        let consumer = self.consumer("sluice-test-probe")?;
        poll_until(&format!("topic {topic} to exist"), Duration::from_secs(30), || {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(2))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
            Ok(if found == partitions as usize { Progress::Ready(()) } else { Progress::Pending(format!("{found}")) })
        })
    }

    /// Grows `topic` to `partitions` partitions (CreatePartitions).
    pub fn add_partitions(&self, topic: &str, partitions: usize) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.config().create()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let results = runtime.block_on(admin.create_partitions(
            &[NewPartitions::new(topic, partitions)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))?;
        for result in results {
            result.map_err(|(name, code)| anyhow::anyhow!("cannot add partitions to {name}: {code}"))?;
        }
        Ok(())
    }

    fn consumer(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        Ok(self.config().set("group.id", group).set("enable.auto.commit", "false").create()?)
    }

    /// Writes `values` to `topic` (the record i to partition i mod `partitions`, with timestamp
    /// `timestamps(i)` when given) and waits until the broker acknowledged all of them.
    pub fn produce(
        &self,
        topic: &str,
        partitions: i32,
        values: &[String],
        timestamp: impl Fn(usize) -> Option<i64>,
    ) -> anyhow::Result<()> {
        let records: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        self.produce_keyed(topic, partitions, &records, timestamp)
    }

    /// Like [`Self::produce`], with a key per record and values of any bytes: `records` are (key, value), a
    /// record without value being a tombstone.
    pub fn produce_keyed(
        &self,
        topic: &str,
        partitions: i32,
        records: &[KeyValue<'_>],
        timestamp: impl Fn(usize) -> Option<i64>,
    ) -> anyhow::Result<()> {
        let producer: ThreadedProducer<DefaultProducerContext> =
            self.config().set("enable.idempotence", "true").set("linger.ms", "5").create()?;
        for (i, (key, value)) in records.iter().enumerate() {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(i as i32 % partitions);
            if let Some(value) = value {
                record = record.payload(*value);
            }
            if let Some(key) = key {
                record = record.key(*key);
            }
            if let Some(ts) = timestamp(i) {
                record = record.timestamp(ts);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((rdkafka::error::KafkaError::MessageProduction(_), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(30)).context("flushing the test producer")?;
        Ok(())
    }

    /// Every record of `topic` (all partitions), read from the beginning until `expect(records)` holds or
    /// `timeout` passes; returns what was read either way.
    pub fn read_all(
        &self,
        topic: &str,
        timeout: Duration,
        expect: impl Fn(&[Record]) -> bool,
    ) -> anyhow::Result<Vec<Record>> {
        let consumer = self.consumer("sluice-test-reader")?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let partitions = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        while Instant::now() < deadline && !expect(&records) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => records.push(Record {
                    timestamp: message.timestamp().to_millis(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    tombstone: message.payload().is_none(),
                    headers: message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => bail!("reading {topic}: {e}"),
            }
        }
        Ok(records)
    }

    /// Commits `offsets` (partition → next offset) of `topic` for consumer group `group`.
    pub fn commit(&self, group: &str, topic: &str, offsets: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let consumer = self.consumer(group)?;
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        consumer.commit(&list, rdkafka::consumer::CommitMode::Sync)?;
        Ok(())
    }

    /// The committed offsets of consumer group `group` on `topic`'s partitions 0..`partitions`.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> anyhow::Result<BTreeMap<i32, i64>> {
        let consumer = self.consumer(group)?;
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(topic, partition);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(n) => Some((e.partition(), n)),
                _ => None,
            })
            .collect())
    }
}
