//! The TaskManager's Prometheus metrics, and the per-task counters the heartbeat reports from.
//!
//! The hot path updates each counter once per batch through a handle resolved when the task starts (no
//! label lookups per batch). The same counters feed both `GET /metrics` and the heartbeats to the
//! JobManager, so the two views cannot disagree. A task's series are removed when it ends, after its final
//! values were reported; a job's Kafka series (shared by its tasks here) when the last of them ended.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sluice_common::proto::{TaskMetrics, TaskRef, VertexMetrics};

/// Every metric family of a TaskManager.
pub struct Metrics {
    pub registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    late_records: IntCounterVec,
    state_size_bytes: IntGaugeVec,
    busy: CounterVec,
    backpressured: CounterVec,
    idle: CounterVec,
    remote_bytes_in: IntCounterVec,
    remote_bytes_out: IntCounterVec,
    in_flight_bytes: IntGaugeVec,
    in_flight_bytes_max: IntGaugeVec,
    floating_credits: IntGaugeVec,
    window_emit_latency: HistogramVec,
    processing_latency: HistogramVec,
    busy_ratio: GaugeVec,
    backpressure_ratio: GaugeVec,
    watermark_lag: GaugeVec,
    kafka: KafkaFamilies,
    process: prometheus::process_collector::ProcessCollector,
    pub tasks_running: IntGauge,
    /// Calls and data connections refused by authentication, by transport (`rpc`, `data`) and reason.
    pub requests_refused: IntCounterVec,
}

/// The Kafka connector's series, by job and topic partition (records, bytes, lag) or topic.
#[derive(Clone)]
struct KafkaFamilies {
    records_in: IntCounterVec,
    bytes_in: IntCounterVec,
    lag: IntGaugeVec,
    records_out: IntCounterVec,
    bytes_out: IntCounterVec,
    transactions: IntCounterVec,
    bad_records: IntCounterVec,
    /// The label values of every series made so far, by job: what to remove when the job leaves.
    made: Arc<Mutex<HashMap<String, HashSet<KafkaSeries>>>>,
}

/// One series: its family and label values.
type KafkaSeries = (KafkaFamily, Vec<String>);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KafkaFamily {
    RecordsIn,
    BytesIn,
    Lag,
    RecordsOut,
    BytesOut,
    Transactions,
    BadRecords,
}

impl KafkaFamilies {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        const PARTITION: &[&str] = &["job", "topic", "partition"];
        Ok(Self {
            records_in: int_counter(r, "kafka_records_in_total", "Records a Kafka source read", PARTITION)?,
            bytes_in: int_counter(r, "kafka_bytes_in_total", "Key and value bytes a Kafka source read", PARTITION)?,
            lag: {
                let vec = IntGaugeVec::new(
                    Opts::new(
                        "kafka_consumer_lag",
                        "Records between a Kafka source's position and the partition's end",
                    ),
                    PARTITION,
                )?;
                r.register(Box::new(vec.clone()))?;
                vec
            },
            records_out: int_counter(
                r,
                "kafka_records_out_total",
                "Records a Kafka sink wrote (acknowledged by the broker; exactly once: committed)",
                PARTITION,
            )?,
            bytes_out: int_counter(
                r,
                "kafka_bytes_out_total",
                "Key and value bytes a Kafka sink wrote (acknowledged by the broker; exactly once: committed)",
                PARTITION,
            )?,
            transactions: int_counter(
                r,
                "kafka_transactions_total",
                "Transactions of exactly-once Kafka sinks, by outcome (committed, aborted)",
                &["job", "topic", "outcome"],
            )?,
            bad_records: int_counter(
                r,
                "kafka_bad_records_total",
                "Records a Kafka source could not decode, by what happened to them (dropped, dead_lettered)",
                &["job", "topic", "action"],
            )?,
            made: Arc::default(),
        })
    }

    /// Remembers that the series `labels` (job first) of `family` exists.
    fn note(&self, family: KafkaFamily, labels: &[&str]) {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let job = made.entry(labels[0].to_string()).or_default();
        job.insert((family, labels.iter().map(|l| l.to_string()).collect()));
    }

    /// Removes every series of `job`.
    fn remove_job(&self, job: &str) {
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner()).remove(job).unwrap_or_default();
        for (family, labels) in made {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            // A series that is already gone needs no removal: ignoring the error is right.
            let _ = match family {
                KafkaFamily::RecordsIn => self.records_in.remove_label_values(&labels),
                KafkaFamily::BytesIn => self.bytes_in.remove_label_values(&labels),
                KafkaFamily::Lag => self.lag.remove_label_values(&labels),
                KafkaFamily::RecordsOut => self.records_out.remove_label_values(&labels),
                KafkaFamily::BytesOut => self.bytes_out.remove_label_values(&labels),
                KafkaFamily::Transactions => self.transactions.remove_label_values(&labels),
                KafkaFamily::BadRecords => self.bad_records.remove_label_values(&labels),
            };
        }
    }
}

/// The Kafka series of one job, for a Kafka source or sink. Handles are meant to be kept: each call makes or
/// finds a series.
#[derive(Clone)]
pub struct KafkaCounters {
    job: String,
    families: KafkaFamilies,
}

impl KafkaCounters {
    /// The series of `vec` with this job's label and then `labels`, remembered for removal with the job.
    fn series<P: MetricVecBuilder>(&self, family: KafkaFamily, vec: &MetricVec<P>, labels: &[&str]) -> P::M {
        let labels: Vec<&str> = std::iter::once(self.job.as_str()).chain(labels.iter().copied()).collect();
        self.families.note(family, &labels);
        vec.with_label_values(&labels)
    }

    pub fn records_in(&self, topic: &str, partition: i32) -> IntCounter {
        self.series(KafkaFamily::RecordsIn, &self.families.records_in, &[topic, &partition.to_string()])
    }

    pub fn bytes_in(&self, topic: &str, partition: i32) -> IntCounter {
        self.series(KafkaFamily::BytesIn, &self.families.bytes_in, &[topic, &partition.to_string()])
    }

    pub fn lag(&self, topic: &str, partition: i32) -> IntGauge {
        self.series(KafkaFamily::Lag, &self.families.lag, &[topic, &partition.to_string()])
    }

    pub fn records_out(&self, topic: &str, partition: i32) -> IntCounter {
        self.series(KafkaFamily::RecordsOut, &self.families.records_out, &[topic, &partition.to_string()])
    }

    pub fn bytes_out(&self, topic: &str, partition: i32) -> IntCounter {
        self.series(KafkaFamily::BytesOut, &self.families.bytes_out, &[topic, &partition.to_string()])
    }

    pub fn transactions(&self, topic: &str, outcome: &str) -> IntCounter {
        self.series(KafkaFamily::Transactions, &self.families.transactions, &[topic, outcome])
    }

    pub fn bad_records(&self, topic: &str, action: &str) -> IntCounter {
        self.series(KafkaFamily::BadRecords, &self.families.bad_records, &[topic, action])
    }

    /// Counters registered nowhere: for unit tests of the connector.
    #[cfg(test)]
    pub fn detached() -> Self {
        let registry = Registry::new();
        Self { job: "test".into(), families: KafkaFamilies::new(&registry).unwrap_or_else(|e| panic!("{e}")) }
    }
}

/// Buckets of `window_emit_latency_seconds`: fine below a second, where a watermark interval (200 ms by
/// default) puts the latency of event time that follows the clock, then coarse up to a minute.
const EMIT_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
    60.0,
];

/// Buckets of `processing_latency_seconds`: from a millisecond (a local hop) to a minute (a back-pressured job).
const PROCESSING_LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn int_counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<CounterVec> {
    let vec = CounterVec::new(Opts::new(name, help), &["job", "task"])?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn ratio(registry: &Registry, name: &str, help: &str) -> prometheus::Result<GaugeVec> {
    let vec = GaugeVec::new(Opts::new(name, help), TASK_LABELS)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGaugeVec> {
    let vec = IntGaugeVec::new(Opts::new(name, help), &["job", "task"])?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

const OPERATOR_LABELS: &[&str] = &["job", "task", "operator"];
const TASK_LABELS: &[&str] = &["job", "task"];

impl Metrics {
    pub fn new() -> prometheus::Result<Arc<Self>> {
        let r = Registry::new();
        let tasks_running = IntGauge::new("tasks_running", "Tasks running on this TaskManager")?;
        r.register(Box::new(tasks_running.clone()))?;
        let requests_refused = IntCounterVec::new(
            Opts::new("sluice_requests_refused_total", "Calls and data connections refused by authentication"),
            &["transport", "reason"],
        )?;
        r.register(Box::new(requests_refused.clone()))?;
        let process = prometheus::process_collector::ProcessCollector::for_self();
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Arc::new(Self {
            records_in: int_counter(&r, "records_processed_total", "Records an operator received", OPERATOR_LABELS)?,
            records_out: int_counter(&r, "records_out_total", "Records an operator emitted", OPERATOR_LABELS)?,
            bytes_in: int_counter(&r, "bytes_in_total", "Bytes (Arrow memory) an operator received", OPERATOR_LABELS)?,
            bytes_out: int_counter(&r, "bytes_out_total", "Bytes (Arrow memory) an operator emitted", OPERATOR_LABELS)?,
            late_records: int_counter(
                &r,
                "late_records_dropped_total",
                "Records later than a window's allowed lateness, sent to its late side output instead",
                OPERATOR_LABELS,
            )?,
            state_size_bytes: {
                let vec = IntGaugeVec::new(
                    Opts::new("state_size_bytes", "Bytes of an operator's state in its last checkpoint snapshot"),
                    OPERATOR_LABELS,
                )?;
                r.register(Box::new(vec.clone()))?;
                vec
            },
            busy: counter(&r, "task_busy_seconds_total", "Time a task spent processing")?,
            backpressured: counter(
                &r,
                "task_backpressured_seconds_total",
                "Time a task waited for output credit or buffers",
            )?,
            idle: counter(&r, "task_idle_seconds_total", "Time a task waited for input")?,
            remote_bytes_in: int_counter(
                &r,
                "network_remote_bytes_in_total",
                "Bytes received from other TaskManagers",
                TASK_LABELS,
            )?,
            remote_bytes_out: int_counter(
                &r,
                "network_remote_bytes_out_total",
                "Bytes sent to other TaskManagers",
                TASK_LABELS,
            )?,
            in_flight_bytes: gauge(&r, "input_gate_in_flight_bytes", "Bytes in flight towards a task's input gate")?,
            in_flight_bytes_max: gauge(
                &r,
                "input_gate_in_flight_bytes_max",
                "The bound on a task's in-flight input bytes",
            )?,
            floating_credits: gauge(
                &r,
                "input_gate_floating_credits_available",
                "Floating credits a task's input gate can still grant",
            )?,
            window_emit_latency: {
                let opts = HistogramOpts::new(
                    "window_emit_latency_seconds",
                    "Wall-clock time of a window result's emission minus its window end (end-to-end latency when \
                     event time follows the clock)",
                )
                .buckets(EMIT_LATENCY_BUCKETS.to_vec());
                let vec = HistogramVec::new(opts, OPERATOR_LABELS)?;
                r.register(Box::new(vec.clone()))?;
                vec
            },
            processing_latency: {
                let opts = HistogramOpts::new(
                    "processing_latency_seconds",
                    "Time from a source to an operator, measured by latency markers a source emits every second \
                     and that travel behind its records (queueing and network time; operator work is not included)",
                )
                .buckets(PROCESSING_LATENCY_BUCKETS.to_vec());
                let vec = HistogramVec::new(opts, OPERATOR_LABELS)?;
                r.register(Box::new(vec.clone()))?;
                vec
            },
            busy_ratio: ratio(
                &r,
                "busy_ratio",
                "Share (0-1) of the last reporting interval (about a heartbeat interval) a task spent processing",
            )?,
            backpressure_ratio: ratio(
                &r,
                "backpressure_ratio",
                "Share (0-1) of the last reporting interval a task waited for output credit or buffers",
            )?,
            watermark_lag: ratio(
                &r,
                "watermark_lag_seconds",
                "Wall clock minus a task's current event-time watermark (only tasks that have a watermark)",
            )?,
            kafka: KafkaFamilies::new(&r)?,
            process,
            tasks_running,
            requests_refused,
            registry: r,
        }))
    }

    /// Removes the Kafka series of `job` (when the last of its tasks here ended).
    pub fn remove_kafka_job(&self, job: &str) {
        self.kafka.remove_job(job);
    }

    /// This process's resident memory, when the platform says (Linux).
    pub fn memory_rss_bytes(&self) -> Option<u64> {
        let families = self.process.collect();
        let family = families.iter().find(|f| f.name() == "process_resident_memory_bytes")?;
        let value = family.get_metric().first()?.get_gauge().get_value();
        (value.is_finite() && value >= 0.0).then_some(value as u64)
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for want of space; an error would mean a malformed metric.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// Resolves the counters of one task.
    pub fn task(self: &Arc<Self>, task: TaskRef, name: String, vertices: &[String]) -> TaskCounters {
        let labels = [task.job_id.as_str(), name.as_str()];
        let vertex = |id: &String| {
            let l = [task.job_id.as_str(), name.as_str(), id.as_str()];
            VertexCounters {
                id: id.clone(),
                records_in: self.records_in.with_label_values(&l),
                records_out: self.records_out.with_label_values(&l),
                bytes_in: self.bytes_in.with_label_values(&l),
                bytes_out: self.bytes_out.with_label_values(&l),
                late_records: self.late_records.with_label_values(&l),
                state_size_bytes: self.state_size_bytes.with_label_values(&l),
            }
        };
        TaskCounters {
            vertices: vertices.iter().map(vertex).collect(),
            busy: self.busy.with_label_values(&labels),
            backpressured: self.backpressured.with_label_values(&labels),
            idle: self.idle.with_label_values(&labels),
            remote_bytes_in: self.remote_bytes_in.with_label_values(&labels),
            remote_bytes_out: self.remote_bytes_out.with_label_values(&labels),
            in_flight_bytes: self.in_flight_bytes.with_label_values(&labels),
            in_flight_bytes_max: self.in_flight_bytes_max.with_label_values(&labels),
            floating_credits: self.floating_credits.with_label_values(&labels),
            busy_ratio: self.busy_ratio.with_label_values(&labels),
            backpressure_ratio: self.backpressure_ratio.with_label_values(&labels),
            watermark: AtomicI64::new(NO_WATERMARK),
            interval: Mutex::new(Interval::default()),
            last_booked: AtomicU64::new(crate::time::monotonic_nanos()),
            input_wait_since: AtomicU64::new(0),
            output_waits: Mutex::new(Vec::new()),
            task,
            name,
            metrics: self.clone(),
        }
    }
}

pub struct VertexCounters {
    pub id: String,
    pub records_in: IntCounter,
    pub records_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub late_records: IntCounter,
    pub state_size_bytes: IntGauge,
}

/// Handles on one task's series.
pub struct TaskCounters {
    pub task: TaskRef,
    pub name: String,
    pub vertices: Vec<VertexCounters>,
    pub busy: Counter,
    pub backpressured: Counter,
    pub idle: Counter,
    pub remote_bytes_in: IntCounter,
    pub remote_bytes_out: IntCounter,
    pub in_flight_bytes: IntGauge,
    pub in_flight_bytes_max: IntGauge,
    pub floating_credits: IntGauge,
    busy_ratio: Gauge,
    backpressure_ratio: Gauge,
    /// The task's current event-time watermark ([`NO_WATERMARK`] before the first).
    watermark: AtomicI64,
    /// The recent reports' totals, which rates and shares are measured over.
    interval: Mutex<Interval>,
    /// When the task last booked its time, and since when it waits for input (0: it does not), in
    /// [`crate::time::monotonic_nanos`]: the time since the last booking is counted where it goes while it
    /// goes, so a long wait shows as it lasts.
    last_booked: AtomicU64,
    input_wait_since: AtomicU64,
    /// Its output partitions' wait clocks (`ResultPartition::waiting_since`).
    output_waits: Mutex<Vec<Arc<std::sync::atomic::AtomicU64>>>,
    metrics: Arc<Metrics>,
}

/// What [`TaskCounters::watermark`] holds before the task's first watermark.
const NO_WATERMARK: i64 = i64::MIN;

/// Rates and shares are over about this much of the past: a task books its time at each wait of its loop
/// (a throttled sink every batch, half a second apart say), so a window of a few bookings keeps the figures
/// from flapping between 0 and 100 % from one report to the next.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);
/// Reports closer together than this to the window's oldest sample reuse the previous rates.
const RATE_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_millis(200);
/// The most samples kept per task (reports come every heartbeat interval, 200 ms at the least).
const RATE_SAMPLES_MAX: usize = 64;

/// The counters of one task at one report.
#[derive(Clone)]
struct Sample {
    at: Instant,
    /// records in, records out, bytes in, bytes out, per vertex.
    vertices: Vec<[u64; 4]>,
    /// busy, back-pressured, idle seconds.
    times: [f64; 3],
}

/// The samples of the last [`RATE_WINDOW`], and the rates and shares last measured over them.
#[derive(Default)]
struct Interval {
    samples: std::collections::VecDeque<Sample>,
    /// Per second, per vertex.
    rates: Vec<[f64; 4]>,
    /// busy, back-pressured, idle.
    ratios: [f64; 3],
}

impl Interval {
    /// Adds `now` and measures rates and shares since the oldest sample of the window.
    fn observe(&mut self, now: Sample) -> (Vec<[f64; 4]>, [f64; 3]) {
        while self.samples.len() > 1
            && self.samples.get(1).is_some_and(|next| now.at.saturating_duration_since(next.at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        if let Some(oldest) = self.samples.front() {
            let elapsed = now.at.saturating_duration_since(oldest.at);
            if elapsed >= RATE_INTERVAL_MIN {
                let seconds = elapsed.as_secs_f64();
                self.rates = now
                    .vertices
                    .iter()
                    .zip(oldest.vertices.iter())
                    .map(|(n, o)| std::array::from_fn(|i| n[i].saturating_sub(o[i]) as f64 / seconds))
                    .collect();
                let spent: [f64; 3] = std::array::from_fn(|i| (now.times[i] - oldest.times[i]).max(0.0));
                // Shares of the time booked (the three add up to the task's wall time once booked; time not yet
                // booked, a wait under way, is left out rather than guessed).
                let booked = spent.iter().sum::<f64>();
                self.ratios = if booked > 0.0 { spent.map(|s| (s / booked).clamp(0.0, 1.0)) } else { [0.0; 3] };
            }
        }
        if self.samples.len() >= RATE_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(now);
        (self.rates.clone(), self.ratios)
    }
}

impl TaskCounters {
    /// The emission-latency histogram of window vertex `vertex` of this task (created on first use, so only
    /// windows have the series).
    pub fn window_emit_latency(&self, vertex: &str) -> Histogram {
        self.metrics.window_emit_latency.with_label_values(&[self.task.job_id.as_str(), self.name.as_str(), vertex])
    }

    /// Notes a latency marker emitted at `emitted_ms` that reached every vertex of this task now.
    pub fn observe_latency_marker(&self, emitted_ms: i64) {
        let seconds = crate::time::now_millis().saturating_sub(emitted_ms).max(0) as f64 / 1000.0;
        for vertex in &self.vertices {
            let labels = [self.task.job_id.as_str(), self.name.as_str(), vertex.id.as_str()];
            self.metrics.processing_latency.with_label_values(&labels).observe(seconds);
        }
    }

    /// The Kafka connector's series of this task's job.
    pub fn kafka(&self) -> KafkaCounters {
        KafkaCounters { job: self.task.job_id.clone(), families: self.metrics.kafka.clone() }
    }

    /// The task booked its time up to now (`busy`, `backpressured`, `idle`).
    pub fn note_booked(&self) {
        self.last_booked.store(crate::time::monotonic_nanos(), Ordering::Relaxed);
    }

    /// The task starts (true) or stops (false) waiting for input.
    pub fn note_waiting_for_input(&self, waiting: bool) {
        let since = if waiting { crate::time::monotonic_nanos() } else { 0 };
        self.input_wait_since.store(since, Ordering::Relaxed);
    }

    /// Follows an output partition's waits for room.
    pub fn watch_output(&self, waiting_since: Arc<AtomicU64>) {
        self.output_waits.lock().unwrap_or_else(|p| p.into_inner()).push(waiting_since);
    }

    /// The time since the task's last booking, where it went: busy, back-pressured, idle (seconds).
    fn unbooked(&self) -> [f64; 3] {
        let now = crate::time::monotonic_nanos();
        let last = self.last_booked.load(Ordering::Relaxed);
        let seconds = |from: u64| now.saturating_sub(from.max(last)) as f64 / 1e9;
        let output_wait = {
            let waits = self.output_waits.lock().unwrap_or_else(|p| p.into_inner());
            waits.iter().map(|w| w.load(Ordering::Relaxed)).filter(|&since| since != 0).min()
        };
        let input_wait = Some(self.input_wait_since.load(Ordering::Relaxed)).filter(|&since| since != 0);
        match (output_wait, input_wait) {
            // Waiting for room downstream: back-pressured since the wait began, busy before.
            (Some(since), _) => {
                let (total, waited) = (seconds(last), seconds(since));
                [total - waited, waited, 0.0]
            }
            (None, Some(since)) => [0.0, 0.0, seconds(since)],
            // Neither: working (a throttled sink's pause included).
            (None, None) => [seconds(last), 0.0, 0.0],
        }
    }

    /// Notes the task's current event-time watermark (the idle marker and the end of input are none).
    pub fn set_watermark(&self, watermark: i64) {
        if watermark != crate::time::IDLE && watermark != crate::time::END_OF_TIME {
            self.watermark.store(watermark, Ordering::Relaxed);
        }
    }

    /// The values to report to the JobManager; rates and ratios are over the interval since the previous
    /// report (and the ratio gauges are set from them).
    pub fn snapshot(&self) -> TaskMetrics {
        let totals: Vec<[u64; 4]> = self
            .vertices
            .iter()
            .map(|v| [v.records_in.get(), v.records_out.get(), v.bytes_in.get(), v.bytes_out.get()])
            .collect();
        let (busy_s, backpressured_s, idle_s) = (self.busy.get(), self.backpressured.get(), self.idle.get());
        // Booked time plus the time since the last booking where it goes now, so the figures move while a
        // long wait lasts (a booked wait replaces the estimate: the sum only grows).
        let unbooked = self.unbooked();
        let times = [busy_s + unbooked[0], backpressured_s + unbooked[1], idle_s + unbooked[2]];
        let sample = Sample { at: Instant::now(), vertices: totals.clone(), times };
        let (rates, ratios) = self.interval.lock().unwrap_or_else(|p| p.into_inner()).observe(sample);
        self.busy_ratio.set(ratios[0]);
        self.backpressure_ratio.set(ratios[1]);
        let watermark = self.watermark.load(Ordering::Relaxed);
        let watermark_ms = (watermark != NO_WATERMARK).then_some(watermark);
        if let Some(watermark) = watermark_ms {
            let lag_ms = crate::time::now_millis().saturating_sub(watermark).max(0);
            self.metrics
                .watermark_lag
                .with_label_values(&[self.task.job_id.as_str(), self.name.as_str()])
                .set(lag_ms as f64 / 1000.0);
        }
        TaskMetrics {
            task: Some(self.task.clone()),
            vertices: self
                .vertices
                .iter()
                .zip(totals.iter())
                .enumerate()
                .map(|(i, (v, t))| {
                    let rate = rates.get(i).copied().unwrap_or_default();
                    VertexMetrics {
                        vertex_id: v.id.clone(),
                        records_in: t[0],
                        records_out: t[1],
                        bytes_in: t[2],
                        bytes_out: t[3],
                        late_records: v.late_records.get(),
                        records_in_per_second: rate[0],
                        records_out_per_second: rate[1],
                        bytes_in_per_second: rate[2],
                        bytes_out_per_second: rate[3],
                    }
                })
                .collect(),
            remote_bytes_out: self.remote_bytes_out.get(),
            remote_bytes_in: self.remote_bytes_in.get(),
            busy_ms: (busy_s * 1000.0) as u64,
            backpressured_ms: (backpressured_s * 1000.0) as u64,
            idle_ms: (idle_s * 1000.0) as u64,
            busy_ratio: ratios[0],
            backpressured_ratio: ratios[1],
            idle_ratio: ratios[2],
            watermark_ms,
        }
    }

    /// Removes the task's series from the registry (after its final values were reported).
    pub fn remove(&self) {
        let m = &self.metrics;
        let labels = [self.task.job_id.as_str(), self.name.as_str()];
        for v in &self.vertices {
            let l = [self.task.job_id.as_str(), self.name.as_str(), v.id.as_str()];
            // A series that is already gone needs no removal: ignoring the error is right.
            let _ = m.records_in.remove_label_values(&l);
            let _ = m.records_out.remove_label_values(&l);
            let _ = m.bytes_in.remove_label_values(&l);
            let _ = m.bytes_out.remove_label_values(&l);
            let _ = m.late_records.remove_label_values(&l);
            let _ = m.state_size_bytes.remove_label_values(&l);
            let _ = m.window_emit_latency.remove_label_values(&l);
            let _ = m.processing_latency.remove_label_values(&l);
        }
        let _ = m.busy.remove_label_values(&labels);
        let _ = m.backpressured.remove_label_values(&labels);
        let _ = m.idle.remove_label_values(&labels);
        let _ = m.remote_bytes_in.remove_label_values(&labels);
        let _ = m.remote_bytes_out.remove_label_values(&labels);
        let _ = m.in_flight_bytes.remove_label_values(&labels);
        let _ = m.in_flight_bytes_max.remove_label_values(&labels);
        let _ = m.floating_credits.remove_label_values(&labels);
        let _ = m.busy_ratio.remove_label_values(&labels);
        let _ = m.backpressure_ratio.remove_label_values(&labels);
        let _ = m.watermark_lag.remove_label_values(&labels);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Goal: a task that books its time in lumps (a throttled sink: half a second busy at a time, 1,024 rows a
    /// lump) shows steady figures when reported every 200 ms, not 0 one report and 100 % the next. Method:
    /// 20 s of such lumps, sampled every 200 ms; every figure after the first window is checked.
    #[test]
    fn lumpy_bookings_give_steady_rates_and_shares() {
        let mut interval = Interval::default();
        let start = Instant::now();
        let (mut rows, mut busy) = (0u64, 0.0f64);
        for step in 0..100u32 {
            let at = start + Duration::from_millis(200 * u64::from(step));
            let elapsed = at.saturating_duration_since(start).as_secs_f64();
            // A lump is booked at every whole half second.
            while busy + 0.5 <= elapsed {
                busy += 0.5;
                rows += 1024;
            }
            let (rates, ratios) =
                interval.observe(Sample { at, vertices: vec![[rows, 0, 0, 0]], times: [busy, 0.0, 0.0] });
            if elapsed > RATE_WINDOW.as_secs_f64() + 1.0 {
                let rate = rates[0][0];
                assert!((1_700.0..=2_400.0).contains(&rate), "{rate} rows/s at {elapsed} s");
                assert!((ratios[0] - 1.0).abs() < 1e-9, "busy share {} at {elapsed} s", ratios[0]);
            }
        }
        assert!(interval.samples.len() <= RATE_SAMPLES_MAX);
    }

    /// Goal: a wait under way counts where it goes while it lasts (a producer blocked for credit shows as
    /// back-pressured before its wait ends). Method: the booking and the waits set at the clock's start, so
    /// all the time since is unbooked; then an output wait, an input wait, and neither.
    #[test]
    fn time_since_the_last_booking_goes_to_the_wait_under_way() {
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let task = TaskRef { job_id: "j".into(), attempt: 1, chain: 0, subtask: 0 };
        let counters = metrics.task(task, "v#0".into(), &["v".to_string()]);
        counters.last_booked.store(1, Ordering::Relaxed);
        let output = Arc::new(AtomicU64::new(1));
        counters.watch_output(output.clone());
        let [busy, backpressured, idle] = counters.unbooked();
        assert!(backpressured > 0.0 && busy == 0.0 && idle == 0.0, "{busy} {backpressured} {idle}");
        output.store(0, Ordering::Relaxed);
        counters.input_wait_since.store(1, Ordering::Relaxed);
        let [busy, backpressured, idle] = counters.unbooked();
        assert!(idle > 0.0 && busy == 0.0 && backpressured == 0.0, "{busy} {backpressured} {idle}");
        counters.note_waiting_for_input(false);
        let [busy, backpressured, idle] = counters.unbooked();
        assert!(busy > 0.0 && backpressured == 0.0 && idle == 0.0, "{busy} {backpressured} {idle}");
        let snapshot = counters.snapshot();
        assert!(snapshot.busy_ratio == 0.0, "a first report has no interval to measure over");
    }
}
