//! The Nexmark queries shipped as job files (`examples/jobs/nexmark/`) give what a naive evaluation of the
//! same generated events gives.
//!
//! Goal: the `nexmark` source emits the generator's events exactly once at any parallelism, and q0, q1, q2,
//! q3 (local item suggestion: a regular join of auctions and persons), q4 (average winning bid per
//! category: a join, then a changelog of the maximum per auction averaged per category), q5 (hot items per
//! sliding window: a Top-N of each window's counts), q7 (highest bid per window: a Top-N with ties), q8 (new
//! users: a join of two windows' results) and q11 (sessions) compute the query texts' answers, on the heap
//! and on RocksDB; q12 (processing-time windows, which follow the wall clock) counts every bid once.
//!
//! Method: each job file as shipped, with its sources bounded to 200,000 events (for the windowed queries,
//! event time slowed to 1,000 events a second, so the input spans 200 s: twenty 10 s windows, and sessions
//! that split), its parallelism set to 1 (heap) and 3 (RocksDB), and its blackhole sink replaced by a file
//! sink. The expected rows come from `sluice_common::nexmark` (the generator itself is the input) and plain
//! Rust, straight from the query texts: a filter, a product, a lookup of each auction's seller, each auction's
//! highest bid while open averaged per category (q4's changelog is added up first), per-window counts and
//! their maxima, per-window maxima and the bids at them, per-window sets of persons and sellers intersected, a session split per bidder.
//!
//! The stateful q5, q7 and q8 run once more each with a TaskManager killed (SIGKILL) mid-run: their output
//! must still be exactly the naive one, nothing lost and nothing repeated.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sluice_common::nexmark::{Auction, Bid, Event, Person, Timeline};
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{sink, Cluster, ClusterSpec, JobStatus};

const EVENTS: u64 = 200_000;
/// The windowed queries' event time: 1,000 events a second, so 200,000 events span 200 s.
const SLOW_EVENT_RATE: f64 = 1_000.0;
const WINDOW_MS: i64 = 10_000;
const SESSION_GAP_MS: i64 = 10_000;
const JOB_TIMEOUT: Duration = Duration::from_secs(180);
const RUNS: [(u32, &str); 2] = [(1, "heap"), (3, "rocksdb")];

fn job_file(query: &str) -> Value {
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = manifest_dir.join("../examples/jobs/nexmark").join(format!("{query}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The kill test's sources emit this many events per second (over all subtasks): 200,000 events take 5 s,
/// long enough to kill a TaskManager after the first checkpoint and before the end.
const KILL_RUN_EVENTS_PER_SECOND: f64 = 40_000.0;
const KILL_RUN_CHECKPOINT_INTERVAL_MS: u64 = 300;
const KILL_RUN_PARALLELISM: u32 = 2;

/// `query` as shipped, bounded to [`EVENTS`], at `parallelism`, with `event_rate`, into a file sink under
/// `output` (relative to the cluster's directory).
fn bounded_job(query: &str, parallelism: u32, event_rate: Option<f64>, output: &str) -> Value {
    let mut job = job_file(query);
    for vertex in job["vertices"].as_array_mut().into_iter().flatten() {
        vertex["parallelism"] = parallelism.into();
        if let Some(source) = vertex.get_mut("nexmark") {
            source["events"] = EVENTS.to_string().into();
            if let Some(rate) = event_rate {
                source["event_rate"] = rate.into();
            }
        }
        if vertex["id"] == "sink" {
            let object = vertex.as_object_mut().unwrap_or_else(|| panic!("a vertex is an object"));
            object.remove("blackhole_sink");
            object.insert("file_sink".into(), json!({ "path": output }));
        }
    }
    job
}

/// The committed rows of the file sink under `output`.
fn sink_rows(cluster: &Cluster, output: &str) -> Vec<Map<String, Value>> {
    let dir = cluster.dir().join(output);
    let mut rows = Vec::new();
    for file in sink::part_files(&dir).unwrap_or_else(|e| panic!("{e:#}")) {
        rows.extend(sink::read_rows(&file).unwrap_or_else(|e| panic!("{e:#}")));
    }
    rows
}

/// Runs `query` bounded to [`EVENTS`] at `parallelism` into a file sink; returns its rows.
fn run(cluster: &mut Cluster, query: &str, parallelism: u32, event_rate: Option<f64>) -> Vec<Map<String, Value>> {
    let output = format!("data/output/nexmark_{query}_{parallelism}");
    let id = cluster.submit_json(&bounded_job(query, parallelism, event_rate, &output));
    cluster.wait_for_status(&id, JobStatus::Finished, JOB_TIMEOUT);
    sink_rows(cluster, &output)
}

/// Runs `query` (slow event time, sources throttled to [`KILL_RUN_EVENTS_PER_SECOND`], a checkpoint every
/// [`KILL_RUN_CHECKPOINT_INTERVAL_MS`], state on `backend`) and kills, with SIGKILL, the TaskManager of the
/// sink's first subtask once a checkpoint has completed ([`kill_the_sinks_task_manager`]). Returns the rows
/// committed when the job has finished.
fn run_with_a_kill(cluster: &mut Cluster, query: &str, backend: &str) -> Vec<Map<String, Value>> {
    let output = format!("data/output/nexmark_{query}_{backend}_killed");
    let mut job = bounded_job(query, KILL_RUN_PARALLELISM, Some(SLOW_EVENT_RATE), &output);
    for source in job["vertices"].as_array_mut().into_iter().flatten().filter_map(|v| v.get_mut("nexmark")) {
        source["events_per_second"] = KILL_RUN_EVENTS_PER_SECOND.into();
    }
    job["config"] = kill_run_config(backend);
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, JOB_TIMEOUT);
    let completed = poll_until(&format!("{query}: a completed checkpoint while it runs"), JOB_TIMEOUT, || {
        let latest = &cluster.get(&format!("/jobs/{}/checkpoints", id.0))["latest"]["completed"];
        Ok(match latest["id"].as_u64() {
            Some(checkpoint) => Progress::Ready(checkpoint),
            None => Progress::Pending("no completed checkpoint".into()),
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    kill_the_sinks_task_manager(cluster, &id, query, completed);
    sink_rows(cluster, &output)
}

fn kill_run_config(backend: &str) -> Value {
    json!({
        "state_backend": backend.to_uppercase(),
        "checkpointing": {"interval_ms": KILL_RUN_CHECKPOINT_INTERVAL_MS},
    })
}

/// Kills, with SIGKILL, the TaskManager of the running job's sink's first subtask; asserts that the job
/// restarts from checkpoint `restored_at_least` or a newer one, waits for it to finish, and starts a
/// TaskManager in the killed one's place.
fn kill_the_sinks_task_manager(cluster: &mut Cluster, id: &sluice_tests::JobId, query: &str, restored_at_least: u64) {
    let sink = cluster.get(&format!("/jobs/{}/vertices/sink", id.0));
    let victim = sink["subtasks"][0]["task_manager_id"].as_str().map(str::to_string);
    let victim = victim.unwrap_or_else(|| panic!("{query}: the sink's first subtask is placed nowhere: {sink}"));
    let index = (0..cluster.task_manager_count())
        .find(|&i| cluster.task_manager_id(i) == victim)
        .unwrap_or_else(|| panic!("{query}: the sink runs on {victim}, not a TaskManager of this cluster"));
    let status = cluster.job(id)["status"].clone();
    assert_eq!(status, "RUNNING", "{query} must still run when its TaskManager is killed (throttle it more)");
    cluster.kill_task_manager(index);
    // A finished job's details no longer say which checkpoint its attempt restored: look while it runs.
    poll_until(&format!("{query}: a restart from a checkpoint"), JOB_TIMEOUT, || {
        let details = cluster.job(id);
        anyhow::ensure!(details["status"] != "FINISHED", "{query} finished before it was seen restored: {details}");
        let restored = details["restarts"].as_u64() >= Some(1) && details["restored_checkpoint"].is_u64();
        Ok(if restored && details["status"] == "RUNNING" {
            Progress::Ready(())
        } else {
            Progress::Pending(format!("{} after {} restarts", details["status"], details["restarts"]))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let restored = cluster.job(id)["restored_checkpoint"].as_u64();
    assert!(restored >= Some(restored_at_least), "{query} restored {restored:?}, before {restored_at_least}");
    cluster.wait_for_status(id, JobStatus::Finished, JOB_TIMEOUT);
    cluster.add_task_manager();
    cluster.wait_for_active_task_managers(2, JOB_TIMEOUT);
}

/// Events 0..[`EVENTS`] of `timeline`, by kind: persons, auctions, bids, each in event order.
fn events_by_kind(timeline: &Timeline) -> (Vec<Person>, Vec<Auction>, Vec<Bid>) {
    let (mut persons, mut auctions, mut bids) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..EVENTS {
        match timeline.event(timeline.event_id(n)) {
            Event::Person(p) => persons.push(p),
            Event::Auction(a) => auctions.push(a),
            Event::Bid(b) => bids.push(b),
        }
    }
    (persons, auctions, bids)
}

fn bids(timeline: &Timeline) -> Vec<Bid> {
    events_by_kind(timeline).2
}

fn int(row: &Map<String, Value>, column: &str) -> i64 {
    match row.get(column) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_else(|| panic!("{column} is not an integer: {n}")),
        Some(Value::String(s)) => s.parse().unwrap_or_else(|_| timestamp_ms(s)),
        other => panic!("column {column} missing or not a number in {row:?}: {other:?}"),
    }
}

fn timestamp_ms(text: &str) -> i64 {
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("not a timestamp: {text} ({e})"));
    parsed.and_utc().timestamp_millis()
}

fn text(row: &Map<String, Value>, column: &str) -> String {
    row.get(column).and_then(Value::as_str).unwrap_or_else(|| panic!("no text {column} in {row:?}")).to_string()
}

/// Asserts two multisets of rows are equal, saying how many differ and showing the first difference.
fn assert_same<T: Ord + std::fmt::Debug>(query: &str, mut got: Vec<T>, mut expected: Vec<T>) {
    got.sort();
    expected.sort();
    if got != expected {
        let first = got.iter().zip(expected.iter()).position(|(g, e)| g != e);
        panic!(
            "{query}: {} rows, {} expected; first difference at {first:?}: {:?} vs {:?}",
            got.len(),
            expected.len(),
            first.and_then(|i| got.get(i)),
            first.and_then(|i| expected.get(i)),
        );
    }
}

#[test]
fn nexmark_queries_match_a_naive_evaluation_at_parallelism_1_and_3_on_heap_and_rocksdb() {
    let timeline = Timeline::default();
    let all = bids(&timeline);
    assert_eq!(all.len() as u64, EVENTS / 50 * 46, "46 bids in every 50 events");
    let slow = Timeline { event_rate: SLOW_EVENT_RATE, ..timeline };
    let slow_bids = bids(&slow);
    let expected_sessions = sessions(&slow_bids);
    let expected_highest = highest_bids(&slow_bids);
    let expected_hot = hot_items(&slow_bids);
    let expected_new_users = new_users(&slow);
    let expected_local_items = local_items(&timeline);
    let expected_averages = average_final_prices(&timeline);
    for (parallelism, backend) in RUNS {
        let mut cluster =
            Cluster::start(ClusterSpec { slots: 3, ..ClusterSpec::default() }.env("STATE_BACKEND", backend));

        let q0 = run(&mut cluster, "q0", parallelism, None);
        let got = q0
            .iter()
            .map(|r| (int(r, "auction"), int(r, "bidder"), int(r, "price"), int(r, "date_time"), text(r, "extra")));
        let expected = all.iter().map(|b| (b.auction, b.bidder, b.price, b.date_time, b.extra.clone()));
        assert_same("q0", got.collect(), expected.collect());

        let q1 = run(&mut cluster, "q1", parallelism, None);
        // Flink's result is DECIMAL(23, 3): compared to the thousandth of a euro.
        let thousandths = |euros: f64| (euros * 1000.0).round() as i64;
        let euros = |row: &Map<String, Value>| row["price"].as_f64().map(thousandths);
        let got = q1.iter().map(|r| (int(r, "auction"), int(r, "bidder"), euros(r), int(r, "date_time")));
        let expected =
            all.iter().map(|b| (b.auction, b.bidder, Some(thousandths(b.price as f64 * 0.908)), b.date_time));
        assert_same("q1", got.collect(), expected.collect());

        let q2 = run(&mut cluster, "q2", parallelism, None);
        let got: Vec<(i64, i64)> = q2.iter().map(|r| (int(r, "auction"), int(r, "price"))).collect();
        let expected: Vec<(i64, i64)> =
            all.iter().filter(|b| b.auction % 123 == 0).map(|b| (b.auction, b.price)).collect();
        assert!(!expected.is_empty(), "q2 selects some bids");
        assert_same("q2", got, expected);

        let q3 = run(&mut cluster, "q3", parallelism, None);
        let got = q3.iter().map(|r| (text(r, "name"), text(r, "city"), text(r, "state"), int(r, "id")));
        assert_same("q3", got.collect(), expected_local_items.clone());

        let q4 = run(&mut cluster, "q4", parallelism, None);
        let got = current_rows(&q4).into_iter().map(|r| (int(&r, "category"), in_thousandths(&r, "avg_final")));
        assert_same("q4", got.collect(), expected_averages.clone());

        let q5 = run(&mut cluster, "q5", parallelism, Some(SLOW_EVENT_RATE));
        let got = q5.iter().map(|r| (int(r, "auction"), int(r, "num")));
        assert_same("q5", got.collect(), expected_hot.clone());

        let q7 = run(&mut cluster, "q7", parallelism, Some(SLOW_EVENT_RATE));
        let got = q7
            .iter()
            .map(|r| (int(r, "auction"), int(r, "price"), int(r, "bidder"), int(r, "date_time"), text(r, "extra")));
        assert_same("q7", got.collect(), expected_highest.clone());

        let q8 = run(&mut cluster, "q8", parallelism, Some(SLOW_EVENT_RATE));
        let got = q8.iter().map(|r| (int(r, "id"), text(r, "name"), int(r, "starttime")));
        assert_same("q8", got.collect(), expected_new_users.clone());

        let q11 = run(&mut cluster, "q11", parallelism, Some(SLOW_EVENT_RATE));
        let got =
            q11.iter().map(|r| (int(r, "bidder"), int(r, "window_start"), int(r, "window_end"), int(r, "bid_count")));
        assert_same("q11", got.collect(), expected_sessions.clone());

        // q12's windows follow the wall clock: each bid must be counted once, in a 10 s window of its bidder.
        let q12 = run(&mut cluster, "q12", parallelism, None);
        let mut counted: BTreeMap<i64, i64> = BTreeMap::new();
        for row in &q12 {
            let (start, end) = (int(row, "window_start"), int(row, "window_end"));
            assert!(end - start == WINDOW_MS && start % WINDOW_MS == 0, "q12: not a 10 s tumbling window: {row:?}");
            assert!(int(row, "bid_count") > 0, "q12: an empty window was emitted: {row:?}");
            *counted.entry(int(row, "bidder")).or_default() += int(row, "bid_count");
        }
        let mut expected_counts: BTreeMap<i64, i64> = BTreeMap::new();
        for bid in &all {
            *expected_counts.entry(bid.bidder).or_default() += 1;
        }
        assert_eq!(counted, expected_counts, "q12: bids per bidder over all windows");
    }
}

#[test]
fn q5_q7_and_q8_lose_and_repeat_nothing_when_a_taskmanager_is_killed_mid_run() {
    let slow = Timeline { event_rate: SLOW_EVENT_RATE, ..Timeline::default() };
    let slow_bids = bids(&slow);
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 2, slots: 2, ..ClusterSpec::default() });
    for backend in ["rocksdb", "heap"] {
        let q5 = run_with_a_kill(&mut cluster, "q5", backend);
        let got = q5.iter().map(|r| (int(r, "auction"), int(r, "num")));
        assert_same(&format!("q5 on {backend}, killed"), got.collect(), hot_items(&slow_bids));

        let q7 = run_with_a_kill(&mut cluster, "q7", backend);
        let got = q7
            .iter()
            .map(|r| (int(r, "auction"), int(r, "price"), int(r, "bidder"), int(r, "date_time"), text(r, "extra")));
        assert_same(&format!("q7 on {backend}, killed"), got.collect(), highest_bids(&slow_bids));

        let q8 = run_with_a_kill(&mut cluster, "q8", backend);
        let got = q8.iter().map(|r| (int(r, "id"), text(r, "name"), int(r, "starttime")));
        assert_same(&format!("q8 on {backend}, killed"), got.collect(), new_users(&slow));
    }
}

/// Goal: checkpoints go on after a source finished (Flink's FLIP-147), and a job restored from one starts that
/// source at its end: nothing it read is read again, nothing is lost. Method: q3 joins persons and auctions
/// (a regular join, whose output repeats rows if persons come twice); its person source runs unthrottled
/// and finishes within a second, its auction source is throttled to run for seconds. Once a completed
/// checkpoint's `_metadata` names every person subtask finished, the sink's TaskManager is killed; the job
/// must restart from that checkpoint or a newer one and commit exactly the naive join.
#[test]
fn a_source_that_finished_before_a_checkpoint_is_not_read_again_after_a_restore() {
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 2, slots: 2, ..ClusterSpec::default() });
    let output = "data/output/nexmark_q3_finished_source";
    let mut job = bounded_job("q3", KILL_RUN_PARALLELISM, None, output);
    for vertex in job["vertices"].as_array_mut().into_iter().flatten().filter(|v| v["id"] == "auction") {
        vertex["nexmark"]["events_per_second"] = KILL_RUN_EVENTS_PER_SECOND.into();
    }
    job["config"] = kill_run_config("rocksdb");
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Running, JOB_TIMEOUT);
    let checkpoint = poll_until("q3: a checkpoint that names the person source finished", JOB_TIMEOUT, || {
        let latest = cluster.get(&format!("/jobs/{}/checkpoints", id.0))["latest"]["completed"].clone();
        let (Some(checkpoint), Some(location)) = (latest["id"].as_u64(), latest["location"].as_str()) else {
            return Ok(Progress::Pending("no completed checkpoint".into()));
        };
        let file = PathBuf::from(location.trim_start_matches("file://")).join("_metadata");
        // A newer checkpoint may have replaced it meanwhile: look again.
        let Ok(bytes) = std::fs::read(&file) else {
            return Ok(Progress::Pending(format!("{} is gone", file.display())));
        };
        let metadata: Value = serde_json::from_slice(&bytes)?;
        let finished = metadata["finished"].as_array().into_iter().flatten();
        let persons = finished.filter(|f| f["vertex_ids"][0] == "person").count();
        Ok(if persons == KILL_RUN_PARALLELISM as usize {
            Progress::Ready(checkpoint)
        } else {
            Progress::Pending(format!("checkpoint {checkpoint} names {persons} person subtasks finished"))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    kill_the_sinks_task_manager(&mut cluster, &id, "q3", checkpoint);
    let rows = sink_rows(&cluster, output);
    let got = rows.iter().map(|r| (text(r, "name"), text(r, "city"), text(r, "state"), int(r, "id")));
    assert_same("q3 restored after its person source finished", got.collect(), local_items(&Timeline::default()));
}

/// The rows a changelog leaves standing: each row without `_retract` (or with it false) adds one, each with
/// it true takes one back, in any order; every row must end up out at most once.
fn current_rows(changelog: &[Map<String, Value>]) -> Vec<Map<String, Value>> {
    let mut standing: BTreeMap<String, (i64, Map<String, Value>)> = BTreeMap::new();
    for row in changelog {
        let mut values = row.clone();
        let retract = match values.remove("_retract") {
            Some(Value::Bool(retract)) => retract,
            other => panic!("a changelog row has a boolean _retract: {other:?} in {row:?}"),
        };
        let entry = standing.entry(Value::Object(values.clone()).to_string()).or_insert((0, values));
        entry.0 += if retract { -1 } else { 1 };
    }
    standing
        .into_values()
        .filter_map(|(count, row)| {
            assert!((0..=1).contains(&count), "a changelog row is out {count} times: {row:?}");
            (count == 1).then_some(row)
        })
        .collect()
}

/// A float column in thousandths (the output's averages are compared to the thousandth).
fn in_thousandths(row: &Map<String, Value>, column: &str) -> i64 {
    let value = row.get(column).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number {column} in {row:?}"));
    (value * 1000.0).round() as i64
}

/// q4 naively: per auction, the highest bid among those made while it was open (its `date_time` to its
/// `expires`, both included); per category, the average of those winning bids, in thousandths.
fn average_final_prices(timeline: &Timeline) -> Vec<(i64, i64)> {
    let (_, auctions, bids) = events_by_kind(timeline);
    let auctions: BTreeMap<i64, Auction> = auctions.into_iter().map(|a| (a.id, a)).collect();
    let mut winning: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for bid in &bids {
        let Some(auction) = auctions.get(&bid.auction) else { continue };
        if (auction.date_time..=auction.expires).contains(&bid.date_time) {
            let entry = winning.entry(auction.id).or_insert((auction.category, bid.price));
            entry.1 = entry.1.max(bid.price);
        }
    }
    let mut per_category: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (category, price) in winning.into_values() {
        let entry = per_category.entry(category).or_default();
        entry.0 += price;
        entry.1 += 1;
    }
    assert!(per_category.len() >= 3, "auctions with bids in several categories: {per_category:?}");
    per_category
        .into_iter()
        .map(|(category, (sum, count))| (category, (sum as f64 / count as f64 * 1000.0).round() as i64))
        .collect()
}

/// q3 naively: every auction in category 10 whose seller (a person among the same events) lives in OR, ID or
/// CA, with the seller's name, city and state.
fn local_items(timeline: &Timeline) -> Vec<(String, String, String, i64)> {
    let (persons, auctions, _) = events_by_kind(timeline);
    let persons: BTreeMap<i64, Person> = persons.into_iter().map(|p| (p.id, p)).collect();
    let out: Vec<_> = auctions
        .iter()
        .filter(|a| a.category == 10)
        .filter_map(|a| persons.get(&a.seller).map(|p| (p, a.id)))
        .filter(|(p, _)| ["OR", "ID", "CA"].contains(&p.state))
        .map(|(p, id)| (p.name.clone(), p.city.to_string(), p.state.to_string(), id))
        .collect();
    assert!(out.len() >= 100, "some auctions are local items: {}", out.len());
    out
}

/// q11 naively: per bidder, bids in time order; a bid 10 s or more after the previous one starts a session;
/// a session is [first, last + gap) with its bid count.
fn sessions(bids: &[Bid]) -> Vec<(i64, i64, i64, i64)> {
    let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for bid in bids {
        times.entry(bid.bidder).or_default().push(bid.date_time);
    }
    let mut out = Vec::new();
    for (bidder, mut times) in times {
        times.sort_unstable();
        let (mut first, mut last, mut count) = (times[0], times[0], 0);
        for t in times {
            if t - last >= SESSION_GAP_MS {
                out.push((bidder, first, last + SESSION_GAP_MS, count));
                (first, count) = (t, 0);
            }
            last = t;
            count += 1;
        }
        out.push((bidder, first, last + SESSION_GAP_MS, count));
    }
    assert!(out.len() > 1_000, "the input splits into many sessions: {}", out.len());
    out
}

/// The start of the 10 s tumbling window `time` falls in.
fn window_of(time: i64) -> i64 {
    time - time.rem_euclid(WINDOW_MS)
}

/// q7 naively: per window, the highest price; then every bid of that window at that price.
fn highest_bids(bids: &[Bid]) -> Vec<(i64, i64, i64, i64, String)> {
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for bid in bids {
        let max = highest.entry(window_of(bid.date_time)).or_insert(bid.price);
        *max = (*max).max(bid.price);
    }
    let mut out = Vec::new();
    for (&start, &price) in &highest {
        out.extend(
            bids.iter()
                .filter(|b| b.price == price && window_of(b.date_time) == start)
                .map(|b| (b.auction, b.price, b.bidder, b.date_time, b.extra.clone())),
        );
    }
    assert!(out.len() >= highest.len() && highest.len() >= 10, "{} windows, {} rows", highest.len(), out.len());
    out
}

/// q8 naively: per window, the persons who registered in it and the sellers of auctions opened in it; the
/// persons among those sellers, with the window's start.
fn new_users(timeline: &Timeline) -> Vec<(i64, String, i64)> {
    let (persons, auctions, _) = events_by_kind(timeline);
    let sellers: std::collections::BTreeSet<(i64, i64)> =
        auctions.iter().map(|a| (a.seller, window_of(a.date_time))).collect();
    let out: Vec<_> = persons
        .into_iter()
        .map(|p| (p.id, p.name, window_of(p.date_time)))
        .filter(|(id, _, window)| sellers.contains(&(*id, *window)))
        .collect();
    assert!(out.len() >= 10, "some persons open an auction in their first window: {}", out.len());
    out
}

/// q5 naively: every sliding window (10 s, every 2 s) a bid falls in; per window, bids per auction; the
/// auctions whose count is the window's highest.
fn hot_items(bids: &[Bid]) -> Vec<(i64, i64)> {
    const SIZE_MS: i64 = 10_000;
    const SLIDE_MS: i64 = 2_000;
    let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for bid in bids {
        let last_start = bid.date_time - bid.date_time.rem_euclid(SLIDE_MS);
        let mut start = last_start;
        while start > bid.date_time - SIZE_MS {
            *counts.entry((start, bid.auction)).or_default() += 1;
            start -= SLIDE_MS;
        }
    }
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for (&(start, _), &n) in &counts {
        let max = highest.entry(start).or_insert(n);
        *max = (*max).max(n);
    }
    let out: Vec<(i64, i64)> = counts
        .iter()
        .filter(|(&(start, _), &n)| highest.get(&start) == Some(&n))
        .map(|(&(_, auction), &n)| (auction, n))
        .collect();
    assert!(out.len() >= highest.len() && highest.len() >= 50, "{} windows, {} rows", highest.len(), out.len());
    out
}
