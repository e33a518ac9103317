//! `sluice-kafka-bench`: Kafka → word count → Kafka throughput on a running cluster, next to the broker's
//! own ceiling. Starts a nisshi broker of its own, writes `--rows` lines of 1-4 words into a topic (timing the
//! produce: the broker's write ceiling), reads them back with a plain consumer (its read ceiling), then for
//! each parallelism submits a bounded job to the cluster at `--rest` (kafka_source → split → lower → HASH by
//! word → running count → at-least-once kafka_sink) and prints rows/s from the job's start and end times.
//! `scripts/benchmark.sh` runs it (KAFKA_ROWS, KAFKA_PARALLELISMS).
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice_tests::kafka::KafkaBroker;
use sluice_tests::JobStatus;

#[derive(Parser, Debug)]
#[command(name = "sluice-kafka-bench", about = "Kafka -> word count -> Kafka throughput, with the broker's ceiling")]
struct Args {
    /// The JobManager's REST address (host:port).
    #[arg(long)]
    rest: String,
    /// Lines to write and count.
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Job parallelisms to run, comma-separated.
    #[arg(long, default_value = "1,2")]
    parallelisms: String,
    /// An extra librdkafka property of the job's source, KEY=VALUE (repeatable): for tuning experiments.
    #[arg(long = "source-property", value_parser = parse_property)]
    source_properties: Vec<(String, String)>,
    /// How long one job may take, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// A file holding the JobManager's admin token (`<data-dir>/admin.token` of a local cluster).
    #[arg(long, env = "SLUICE_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "stream",
    "state",
    "window",
    "barrier",
    "checkpoint",
    "kafka",
    "sluice",
    "flink",
    "arrow",
    "batch",
    "record",
    "offset",
];

fn lines(rows: u64) -> Vec<String> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..rows)
        .map(|_| {
            let n = 1 + next() % 4;
            (0..n).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    Ok((key.to_string(), value.to_string()))
}

fn job(bootstrap: &str, parallelism: u32, source_properties: &[(String, String)]) -> Value {
    let properties: serde_json::Map<String, Value> =
        source_properties.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "name": format!("kafka_word_count_p{parallelism}"),
        "vertices": [
            {"id": "lines", "parallelism": parallelism, "kafka_source": {
                "bootstrap_servers": bootstrap, "topics": ["bench-in"], "format": "LINES",
                "schema": [{"name": "line", "type": "STRING"}], "bounded": true, "batch_size": 4096,
                "properties": properties}},
            {"id": "split", "parallelism": parallelism, "flat_map": {"column": "line", "output_column": "word"}},
            {"id": "lower", "parallelism": parallelism, "select": {"columns": [{"name": "word", "expr": "lower(word)"}]}},
            {"id": "count", "parallelism": parallelism, "aggregate": {"keys": ["word"],
                "aggregates": [{"function": "count", "name": "count"}]}},
            {"id": "sink", "parallelism": parallelism, "kafka_sink": {
                "bootstrap_servers": bootstrap, "topic": format!("bench-out-{parallelism}")}}
        ],
        "edges": [
            {"from": "lines", "to": "split"}, {"from": "split", "to": "lower"},
            {"from": "lower", "to": "count", "partitioning": "HASH", "key": ["word"]},
            {"from": "count", "to": "sink"}
        ]
    })
}

fn run_job(rest: &str, token: Option<&str>, job: &Value, timeout: Duration) -> anyhow::Result<u64> {
    let client = reqwest::blocking::Client::new();
    let authorized = |request: reqwest::blocking::RequestBuilder| match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let answer: Value = authorized(client.post(format!("http://{rest}/jobs/submit"))).json(job).send()?.json()?;
    let id = answer["job_id"].as_str().with_context(|| format!("not submitted: {answer}"))?.to_string();
    let deadline = Instant::now() + timeout;
    loop {
        let details: Value = authorized(client.get(format!("http://{rest}/jobs/{id}"))).send()?.json()?;
        match details["status"].as_str().and_then(|text| text.parse::<JobStatus>().ok()) {
            // The end time may be recorded a moment after the status.
            Some(JobStatus::Finished) if details["end_time"].is_u64() => {
                let start = details["start_time"].as_u64().context("no start_time")?;
                let end = details["end_time"].as_u64().context("no end_time")?;
                return Ok(end.saturating_sub(start));
            }
            Some(status) if status.is_terminal() && status != JobStatus::Finished => {
                bail!("job {id} ended {}: {details}", details["status"])
            }
            _ if Instant::now() > deadline => bail!("job {id} did not finish in {timeout:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn consume_all(bootstrap: &str, topic: &str, partitions: i32, rows: u64) -> anyhow::Result<Duration> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-ceiling")
        .set("enable.auto.commit", "false")
        // As the Kafka source sets it: librdkafka's default (1 s) leaves a fast reader waiting for fetches.
        .set("fetch.queue.backoff.ms", "50")
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    let started = Instant::now();
    let mut read = 0;
    while read < rows {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None if started.elapsed() > Duration::from_secs(600) => bail!("only {read} of {rows} records read"),
            None => {}
        }
    }
    Ok(started.elapsed())
}

fn rate(rows: u64, elapsed: Duration) -> u64 {
    (rows as f64 / elapsed.as_secs_f64().max(1e-9)) as u64
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-kafka-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let token = args.token_file.as_deref().map(sluice_common::secret::read_first).transpose()?;
    let broker = KafkaBroker::start()?;
    let bootstrap = broker.bootstrap_servers();
    broker.create_topic("bench-in", args.partitions)?;
    let parallelisms: Vec<u32> =
        args.parallelisms.split(',').map(|p| p.trim().parse()).collect::<Result<_, _>>().context("--parallelisms")?;
    for p in &parallelisms {
        broker.create_topic(&format!("bench-out-{p}"), args.partitions)?;
    }
    let input = lines(args.rows);
    let started = Instant::now();
    broker.produce("bench-in", args.partitions, &input, |_| None)?;
    let produce = started.elapsed();
    println!("broker ceiling: produce {} rows/s", rate(args.rows, produce));
    let consume = consume_all(&bootstrap, "bench-in", args.partitions, args.rows)?;
    println!("broker ceiling: consume {} rows/s", rate(args.rows, consume));
    for p in parallelisms {
        let ms = run_job(
            &args.rest,
            token.as_deref(),
            &job(&bootstrap, p, &args.source_properties),
            Duration::from_secs(args.timeout),
        )?;
        println!(
            "kafka word count, parallelism {p}: {} rows in {ms} ms = {} rows/s",
            args.rows,
            rate(args.rows, Duration::from_millis(ms))
        );
    }
    Ok(())
}
