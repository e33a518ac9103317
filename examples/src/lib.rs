//! Example jobs, written with the builder API. `cargo run -p sluice-examples` writes each one to
//! `examples/jobs/<name>.json`; a test keeps the checked-in files equal to what these functions build.
pub mod data;
pub mod fraud;
pub mod nexmark;

use sluice_common::job::builder::{
    aggregate, avg, bounded_out_of_orderness, count, max, min, monotonous, session, sliding, tumbling, JobBuilder,
};
use sluice_common::proto::{
    generated_column::Generator, CheckpointConfig, DataType, DatagenSource, Field, FileFormat, FileSource,
    GeneratedColumn, JobGraph, KafkaDelivery, KafkaSink, KafkaSource, WallClockGenerator, Window, WordsGenerator,
};

/// Every example, by file name.
pub fn all() -> Vec<(&'static str, JobGraph)> {
    vec![
        ("word_count", word_count()),
        ("datagen_word_count", datagen_word_count(10_000_000, 2)),
        ("windowed_word_count", windowed_word_count()),
        ("windowed_aggregation", windowed_aggregation()),
        ("stateful_deduplication", stateful_deduplication()),
        ("session_windows", session_windows()),
        ("stream_join", stream_join()),
        ("stream_enrichment", stream_enrichment()),
        ("fraud_detection", fraud_detection()),
        ("checkpointed_word_count", checkpointed_word_count()),
        ("word_count_kafka", word_count_kafka("127.0.0.1:9092")),
    ]
    .into_iter()
    .chain(nexmark::all())
    .collect()
}

fn field(name: &str, data_type: DataType) -> Field {
    Field { name: name.into(), r#type: data_type as i32, nullable: false }
}

fn json_source(path: &str, schema: Vec<Field>) -> FileSource {
    FileSource { path: path.into(), format: FileFormat::Json as i32, schema, ..Default::default() }
}

/// The seed's flagship: timestamped lines → words → lower-case → key by word → 10 s tumbling event-time
/// window → count → keep counts > 5 → newline-JSON part files under `data/output/windowed_word_count`.
pub fn windowed_word_count() -> JobGraph {
    let job = JobBuilder::new("windowed_word_count");
    job.file_source(
        "lines",
        1,
        json_source(
            "examples/data/lines.jsonl",
            vec![field("ts", DataType::TimestampMs), field("line", DataType::String)],
        ),
    )
    .with_event_time(bounded_out_of_orderness("ts", 5_000))
    .split("split", "line", "word")
    .select("normalize", &[("word", "lower(btrim(word, '.,;:!?\"()''-'))"), ("ts", "ts")])
    .filter("non_empty", "word <> ''")
    .key_by(&["word"])
    .window("count", tumbling(10_000), &[count("count")])
    .set_parallelism(2)
    .filter("frequent", "count > 5")
    .file_sink("sink", "data/output/windowed_word_count");
    job.build()
}

/// Sensor readings → key by sensor → 30 s windows every 10 s → avg/min/max/count/stddev/median. Readings up to 2 s out of
/// order are on time; a window accepts records for 5 s after it closes (updating its result), and readings
/// later than that go to a separate sink through the window's "late" side output.
pub fn windowed_aggregation() -> JobGraph {
    let job = JobBuilder::new("windowed_aggregation");
    let readings = job
        .file_source(
            "readings",
            1,
            FileSource {
                // Small batches and a watermark after each make the example's lateness deterministic.
                batch_size: Some(50),
                ..json_source(
                    "examples/data/sensors.jsonl",
                    vec![
                        field("sensor", DataType::String),
                        field("ts", DataType::TimestampMs),
                        field("temperature", DataType::Float64),
                    ],
                )
            },
        )
        .with_event_time(sluice_common::proto::EventTime {
            watermark_interval_ms: Some(0),
            ..bounded_out_of_orderness("ts", 2_000)
        });
    let windows = readings.key_by(&["sensor"]).window_with(
        "stats",
        Window {
            assigner: Some(sliding(30_000, 10_000)),
            aggregates: vec![
                avg("avg_temperature", "temperature"),
                min("min_temperature", "temperature"),
                max("max_temperature", "temperature"),
                count("readings"),
                // DataFusion's aggregate functions beyond the native five work the same way.
                aggregate("stddev", "stddev_temperature", "temperature"),
                aggregate("median", "median_temperature", "temperature"),
            ],
            allowed_lateness_ms: 5_000,
            ..Default::default()
        },
    );
    windows.side_output("late").file_sink("late_sink", "data/output/windowed_aggregation_late");
    windows.set_parallelism(2).file_sink("sink", "data/output/windowed_aggregation");
    job.build()
}

/// Events with ids, some delivered more than once → key by id → drop repeats of an id seen within 60 s.
pub fn stateful_deduplication() -> JobGraph {
    let job = JobBuilder::new("stateful_deduplication");
    job.file_source(
        "events",
        1,
        json_source(
            "examples/data/events.jsonl",
            vec![
                field("event_id", DataType::String),
                field("ts", DataType::TimestampMs),
                field("amount", DataType::Int64),
            ],
        ),
    )
    .with_event_time(bounded_out_of_orderness("ts", 5_000))
    .key_by(&["event_id"])
    .deduplicate("dedup", 60_000)
    .set_parallelism(2)
    .file_sink("sink", "data/output/stateful_deduplication");
    job.build()
}

/// Orders joined with their payments made within 30 s of the order (an interval join on the order id).
pub fn stream_join() -> JobGraph {
    let job = JobBuilder::new("stream_join");
    let orders = job
        .file_source(
            "orders",
            1,
            json_source(
                "examples/data/orders.jsonl",
                vec![
                    field("order_id", DataType::String),
                    field("ts", DataType::TimestampMs),
                    field("amount", DataType::Int64),
                ],
            ),
        )
        .with_event_time(bounded_out_of_orderness("ts", 5_000));
    let payments = job
        .file_source(
            "payments",
            1,
            json_source(
                "examples/data/payments.jsonl",
                vec![
                    field("order_id", DataType::String),
                    field("paid_at", DataType::TimestampMs),
                    field("method", DataType::String),
                ],
            ),
        )
        .with_event_time(bounded_out_of_orderness("paid_at", 5_000));
    orders
        .interval_join("paid_orders", payments, (&["order_id"], &["order_id"]), 0, 30_000)
        .set_parallelism(2)
        .file_sink("sink", "data/output/stream_join");
    job.build()
}

/// Clicks enriched with the user's profile tier as it was when they clicked (a temporal join against the
/// latest profile row per user; clicks before a user's first profile keep a null tier).
pub fn stream_enrichment() -> JobGraph {
    let job = JobBuilder::new("stream_enrichment");
    let clicks = job
        .file_source(
            "clicks",
            1,
            json_source(
                "examples/data/clicks.jsonl",
                vec![
                    field("user", DataType::String),
                    field("ts", DataType::TimestampMs),
                    field("page", DataType::String),
                ],
            ),
        )
        .with_event_time(bounded_out_of_orderness("ts", 5_000));
    let profiles = job
        .file_source(
            "profiles",
            1,
            json_source(
                "examples/data/profiles.jsonl",
                vec![
                    field("user", DataType::String),
                    field("updated_at", DataType::TimestampMs),
                    field("tier", DataType::String),
                ],
            ),
        )
        .with_event_time(bounded_out_of_orderness("updated_at", 5_000));
    clicks
        .temporal_join("enrich", profiles, (&["user"], &["user"]), true)
        .set_parallelism(2)
        .file_sink("sink", "data/output/stream_enrichment");
    job.build()
}

/// Page views → key by user → sessions that close after 30 s without a view → views per session; and, from
/// the same sessions, each one's last page and when it was viewed (a reducing window: records folded
/// pairwise, keeping the later view).
pub fn session_windows() -> JobGraph {
    let job = JobBuilder::new("session_windows");
    let views = job
        .file_source(
            "views",
            1,
            json_source(
                "examples/data/page_views.jsonl",
                vec![
                    field("user", DataType::String),
                    field("ts", DataType::TimestampMs),
                    field("page", DataType::String),
                ],
            ),
        )
        .with_event_time(bounded_out_of_orderness("ts", 5_000));
    views
        .clone()
        .key_by(&["user"])
        .window("sessions", session(30_000), &[count("views")])
        .set_parallelism(2)
        .file_sink("sink", "data/output/session_windows");
    views
        .key_by(&["user"])
        .reduce(
            "exits",
            session(30_000),
            &[("ts", "greatest(a.ts, b.ts)"), ("page", "CASE WHEN b.ts >= a.ts THEN b.page ELSE a.page END")],
        )
        .set_parallelism(2)
        .file_sink("exits_sink", "data/output/session_exits");
    job.build()
}

/// Card transactions → key by account → the native operator `fraud_detector` (a small transaction followed
/// at once by a large one within a minute raises an alert) → alerts. Needs TaskManagers that register the
/// operator: `custom-taskmanager` from this crate (see [`fraud`]).
pub fn fraud_detection() -> JobGraph {
    let job = JobBuilder::new("fraud_detection");
    job.file_source(
        "transactions",
        1,
        json_source(
            "examples/data/transactions.jsonl",
            vec![
                field("account", DataType::String),
                field("ts", DataType::TimestampMs),
                field("amount", DataType::Float64),
            ],
        ),
    )
    .with_event_time(bounded_out_of_orderness("ts", 5_000))
    .key_by(&["account"])
    .process(
        "detect",
        fraud::NAME,
        &[("small_amount", "1.00"), ("large_amount", "500.00"), ("within_ms", "60000")],
        vec![
            field("account", DataType::String),
            field("small_ts", DataType::TimestampMs),
            field("large_ts", DataType::TimestampMs),
            field("amount", DataType::Float64),
        ],
    )
    .set_parallelism(2)
    .file_sink("sink", "data/output/fraud_detection");
    job.build()
}

/// Word count over the bundled sample text: lines → words → lower-case → key by word → running count →
/// newline-JSON part files under `data/output/word_count` (relative to the TaskManagers' directory).
pub fn word_count() -> JobGraph {
    let job = JobBuilder::new("word_count");
    job.file_source(
        "lines",
        1,
        FileSource {
            path: "examples/data/sample.txt".into(),
            format: FileFormat::Lines as i32,
            schema: vec![Field { name: "line".into(), r#type: DataType::String as i32, nullable: false }],
            ..Default::default()
        },
    )
    .split("split", "line", "word")
    .select("normalize", &[("word", "lower(btrim(word, '.,;:!?\"()''-'))")])
    .filter("non_empty", "word <> ''")
    .key_by(&["word"])
    .aggregate("count", &[count("count")])
    .set_parallelism(2)
    .file_sink("sink", "data/output/word_count");
    job.build()
}

/// The job to watch checkpoints with: an endless generator of lines stamped with the wall clock → words →
/// lower-case → key by word → 10 s tumbling event-time window → count → the exactly-once file sink, with a
/// checkpoint every second (a window's counts appear under `data/output/checkpointed_word_count` once the
/// checkpoint after it completes). Stop it with `sluice stop ID`; resume with `sluice submit
/// --from-savepoint DIR`.
pub fn checkpointed_word_count() -> JobGraph {
    let job = JobBuilder::new("checkpointed_word_count");
    job.config(|config| {
        config.checkpointing = Some(CheckpointConfig { interval_ms: 1_000, retained: Some(2), ..Default::default() });
    });
    let words = WordsGenerator { vocabulary: vec![], min_words: 1, max_words: 4 };
    job.datagen(
        "lines",
        1,
        DatagenSource {
            seed: 7,
            rows_per_second: 1_000.0,
            batch_size: Some(100),
            columns: vec![
                GeneratedColumn { name: "line".into(), generator: Some(Generator::Words(words)) },
                GeneratedColumn { name: "ts".into(), generator: Some(Generator::WallClock(WallClockGenerator {})) },
            ],
            ..Default::default()
        },
    )
    .with_event_time(monotonous("ts"))
    .split("split", "line", "word")
    .select("lower", &[("word", "lower(word)"), ("ts", "ts")])
    .key_by(&["word"])
    .window("count", tumbling(10_000), &[count("count")])
    .set_parallelism(2)
    .file_sink("sink", "data/output/checkpointed_word_count");
    job.build()
}

/// The seed's flagship on Kafka: lines of text from the topic `input-text` (event time: the Kafka
/// timestamp; a partition without records for 5 s stops holding windows back) → words → lower-case → key by
/// word → 10 s tumbling window → count → the topic `word-count-output`, checkpointing every second. The
/// sink writes at least once, which every broker supports; on a broker with transactions (Apache Kafka,
/// Redpanda) set `"delivery": "EXACTLY_ONCE"` for a transaction per checkpoint (docs/kafka.md).
pub fn word_count_kafka(bootstrap_servers: &str) -> JobGraph {
    let job = JobBuilder::new("word_count_kafka");
    job.config(|config| {
        config.checkpointing = Some(CheckpointConfig { interval_ms: 1_000, retained: Some(2), ..Default::default() });
    });
    let mut event_time = bounded_out_of_orderness("ts", 1_000);
    event_time.idle_timeout_ms = Some(5_000);
    job.kafka_source(
        "lines",
        2,
        KafkaSource {
            bootstrap_servers: bootstrap_servers.into(),
            topics: vec!["input-text".into()],
            format: FileFormat::Lines as i32,
            schema: vec![field("line", DataType::String), field("ts", DataType::TimestampMs)],
            timestamp_column: "ts".into(),
            ..Default::default()
        },
    )
    .with_event_time(event_time)
    .split("split", "line", "word")
    .select("lower", &[("word", "lower(word)"), ("ts", "ts")])
    .key_by(&["word"])
    .window("count", tumbling(10_000), &[count("count")])
    .set_parallelism(2)
    .kafka_sink(
        "sink",
        KafkaSink {
            bootstrap_servers: bootstrap_servers.into(),
            topic: "word-count-output".into(),
            key_column: "word".into(),
            delivery: KafkaDelivery::AtLeastOnce as i32,
            ..Default::default()
        },
    );
    job.build()
}

/// The benchmark's shape: generated lines of random words → split → lower-case → key by word → running
/// count → blackhole, at parallelism `parallelism`.
pub fn datagen_word_count(rows: u64, parallelism: u32) -> JobGraph {
    let job = JobBuilder::new("datagen_word_count");
    let words = WordsGenerator { vocabulary: vec![], min_words: 1, max_words: 1 };
    job.datagen(
        "lines",
        parallelism,
        DatagenSource {
            seed: 42,
            rows: Some(rows),
            batch_size: Some(4096),
            columns: vec![GeneratedColumn { name: "line".into(), generator: Some(Generator::Words(words)) }],
            ..Default::default()
        },
    )
    .split("split", "line", "word")
    .select("lower", &[("word", "lower(word)")])
    .key_by(&["word"])
    .aggregate("count", &[count("count")])
    .blackhole_sink("sink", 0.0);
    job.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_validates() {
        for (name, graph) in all() {
            if let Err(e) = sluice_common::job::validate(graph) {
                panic!("example {name} is invalid:\n{e}");
            }
        }
    }

    #[test]
    fn checked_in_job_files_match_the_builder_programs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        for (name, graph) in all() {
            let path = dir.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let on_disk = sluice_common::job::parse_job_file(text.as_bytes());
            assert_eq!(
                on_disk.as_ref().ok(),
                Some(&graph),
                "{} is stale: run `cargo run -p sluice-examples`",
                path.display()
            );
        }
    }
}
