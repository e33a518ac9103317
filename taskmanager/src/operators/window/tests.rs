//! Goal: windows fire, update and expire as the module docs say, for every assigner, for aggregates and
//! reductions. Method: drive a [`WindowOp`] over a heap backend with batches and watermarks.
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::{window::Assigner, Reduce, TimeDomain, Window};

use super::WindowOp;
use crate::operator_api::{Operator, OperatorError};
use crate::state::HeapBackend;
use crate::time::END_OF_TIME;
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use sluice_common::proto::{AggregateCall, SessionWindow, SlidingWindow, TumblingWindow};

fn input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn output() -> SchemaRef {
    let time = DataType::Timestamp(TimeUnit::Millisecond, None);
    Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("window_start", time.clone(), false),
        Field::new("window_end", time, false),
        Field::new("n", DataType::Int64, false),
        Field::new("total", DataType::Int64, true),
    ]))
}

fn window(assigner: Assigner, lateness: u64) -> Result<WindowOp, OperatorError> {
    let call = |function: &str, argument: &str, name: &str| AggregateCall {
        function: function.into(),
        argument: argument.into(),
        name: name.into(),
    };
    let spec = Window {
        keys: vec!["word".into()],
        assigner: Some(assigner),
        aggregates: vec![call("count", "", "n"), call("sum", "v", "total")],
        allowed_lateness_ms: lateness,
        ..Default::default()
    };
    WindowOp::new(&spec, &input(), output(), Some("t"), 128, Box::new(HeapBackend::default()))
}

fn batch(rows: &[(&str, i64, i64)]) -> Result<RecordBatch, OperatorError> {
    Ok(RecordBatch::try_new(
        input(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )?)
}

/// "word start end n total" per output row, sorted.
fn rows(out: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in out {
        for r in 0..b.num_rows() {
            let ts = |c: usize| {
                b.column(c).as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>().value(r)
            };
            rows.push(format!(
                "{} {} {} {} {}",
                b.column(0).as_string::<i32>().value(r),
                ts(1),
                ts(2),
                b.column(3).as_primitive::<Int64Type>().value(r),
                b.column(4).as_primitive::<Int64Type>().value(r)
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn tumbling_windows_fire_when_the_watermark_passes_their_end() -> Result<(), OperatorError> {
    let mut op = window(Assigner::Tumbling(TumblingWindow { size_ms: 10, offset_ms: 0 }), 0)?;
    let mut out = Vec::new();
    op.process(batch(&[("a", 1, 1), ("b", 5, 2), ("a", 9, 3), ("a", 10, 4), ("a", -1, 5)])?, &mut out)?;
    op.on_watermark(8, &mut out)?;
    assert_eq!(rows(&out), vec!["a -10 0 1 5"], "only [-10, 0) is complete at watermark 8");
    out.clear();
    op.on_watermark(9, &mut out)?;
    assert_eq!(rows(&out), vec!["a 0 10 2 4", "b 0 10 1 2"]);
    out.clear();
    op.process(batch(&[("a", 3, 100)])?, &mut out)?;
    assert!(out.is_empty());
    let mut side = Vec::new();
    op.drain_side_output(&mut side);
    assert_eq!(side.len(), 1, "a record for a fired window without lateness is late");
    assert_eq!(op.late_records(), 1);
    op.on_watermark(END_OF_TIME, &mut out)?;
    assert_eq!(rows(&out), vec!["a 10 20 1 4"]);
    Ok(())
}

#[test]
fn late_records_within_allowed_lateness_update_and_fire_again() -> Result<(), OperatorError> {
    let mut op = window(Assigner::Tumbling(TumblingWindow { size_ms: 10, offset_ms: 0 }), 5)?;
    let mut out = Vec::new();
    op.process(batch(&[("a", 1, 1)])?, &mut out)?;
    op.on_watermark(12, &mut out)?;
    assert_eq!(rows(&out), vec!["a 0 10 1 1"]);
    out.clear();
    op.process(batch(&[("a", 2, 10)])?, &mut out)?;
    assert_eq!(rows(&out), vec!["a 0 10 2 11"], "within lateness: the window fires again, updated");
    out.clear();
    op.on_watermark(14, &mut out)?;
    op.process(batch(&[("a", 3, 100)])?, &mut out)?;
    assert!(out.is_empty(), "past end - 1 + lateness the window is gone: {out:?}");
    assert_eq!(op.late_records(), 1);
    Ok(())
}

/// A restored window that had fired is updated, not started over, by a late record within the lateness:
/// the watermark starts over on restore, and such a window has no fire timer to say it is stored.
#[test]
fn a_restored_fired_window_is_updated_by_a_late_record_within_the_lateness() -> Result<(), OperatorError> {
    let tumbling = || Assigner::Tumbling(TumblingWindow { size_ms: 10, offset_ms: 0 });
    let mut before = window(tumbling(), 50)?;
    let mut out = Vec::new();
    before.process(batch(&[("a", 1, 1), ("a", 2, 2), ("b", 15, 7)])?, &mut out)?;
    before.on_watermark(12, &mut out)?;
    assert_eq!(rows(&out), vec!["a 0 10 2 3"]);
    let mut snapshot = sluice_common::proto::OperatorSnapshot::default();
    before.snapshot_state(&mut snapshot)?;
    let keyed = before.keyed_backend().ok_or_else(|| OperatorError::internal("no keyed backend"))?.snapshot()?;
    snapshot.keyed = crate::checkpoint::to_messages(keyed);

    let mut after = window(tumbling(), 50)?;
    after.restore_state(&[&snapshot], 0..=127)?;
    out.clear();
    // Unfired windows are stored as well: "b" [10, 20) goes on counting.
    after.process(batch(&[("a", 3, 10), ("b", 16, 1)])?, &mut out)?;
    after.on_watermark(20, &mut out)?;
    assert_eq!(rows(&out), vec!["a 0 10 3 13", "b 10 20 2 8"], "restored windows are updated, not replaced");
    Ok(())
}

#[test]
fn sliding_windows_count_each_record_in_every_window_holding_it() -> Result<(), OperatorError> {
    let mut op = window(Assigner::Sliding(SlidingWindow { size_ms: 30, slide_ms: 10, offset_ms: 0 }), 0)?;
    let mut out = Vec::new();
    op.process(batch(&[("a", 25, 1), ("a", 31, 2)])?, &mut out)?;
    op.on_watermark(END_OF_TIME, &mut out)?;
    assert_eq!(
        rows(&out),
        vec!["a 0 30 1 1", "a 10 40 2 3", "a 20 50 2 3", "a 30 60 1 2"],
        "25 is in [0,30), [10,40), [20,50); 31 in [10,40), [20,50), [30,60)"
    );
    Ok(())
}

#[test]
fn sessions_merge_when_a_record_bridges_them() -> Result<(), OperatorError> {
    let mut op = window(Assigner::Session(SessionWindow { gap_ms: 10 }), 0)?;
    let mut out = Vec::new();
    op.process(batch(&[("a", 0, 1), ("a", 18, 2), ("b", 5, 7)])?, &mut out)?;
    op.process(batch(&[("a", 9, 4)])?, &mut out)?;
    op.on_watermark(24, &mut out)?;
    assert_eq!(rows(&out), vec!["b 5 15 1 7"], "a's session [0,28) is still open");
    out.clear();
    op.on_watermark(END_OF_TIME, &mut out)?;
    assert_eq!(rows(&out), vec!["a 0 28 3 7"], "9 bridges [0,10) and [18,28)");
    Ok(())
}

/// Goal: a key's records merged into sessions a batch at a time give what record by record gives, late
/// records and late firings included. Method: the same records and watermarks, once in two batches and once a
/// record per batch: out-of-order times bridging sessions (all on time), then, after a watermark, a batch with
/// a record within the allowed lateness (it fires its session again), an on-time one, and an expired one.
#[test]
fn sessions_come_out_the_same_a_batch_at_a_time_or_record_by_record() -> Result<(), OperatorError> {
    let first = [("a", 40, 1), ("a", 0, 2), ("b", 5, 3), ("a", 18, 4), ("a", 9, 5), ("a", 55, 6), ("a", 3, 7)];
    let second = [("a", 12, 10), ("a", 29, 20), ("c", 1, 30), ("b", 100, 40)];
    let run = |one_by_one: bool| -> Result<(Vec<String>, u64), OperatorError> {
        let mut op = window(session_of(10), 5)?;
        let mut out = Vec::new();
        for (records, watermark) in [(&first[..], 30), (&second[..], END_OF_TIME)] {
            if one_by_one {
                for record in records {
                    op.process(batch(&[*record])?, &mut out)?;
                }
            } else {
                op.process(batch(records)?, &mut out)?;
            }
            op.on_watermark(watermark, &mut out)?;
        }
        Ok((rows(&out), op.late_records()))
    };
    let (together, late) = run(false)?;
    assert_eq!((together.clone(), late), run(true)?);
    assert_eq!(late, 1, "c at 1: its session ended before the watermark 30 less the lateness");
    for expected in ["a 0 28 4 18", "a 0 28 5 28", "a 29 39 1 20", "a 40 50 1 1", "a 55 65 1 6", "b 5 15 1 3"] {
        assert!(together.contains(&expected.to_string()), "{expected} in {together:?}");
    }
    Ok(())
}

#[test]
fn processing_time_windows_fire_on_the_wall_clock_or_at_the_end() -> Result<(), OperatorError> {
    let spec = Window {
        keys: vec!["word".into()],
        assigner: Some(Assigner::Tumbling(TumblingWindow { size_ms: 60_000, offset_ms: 0 })),
        time: TimeDomain::ProcessingTime as i32,
        aggregates: vec![AggregateCall { function: "count".into(), argument: String::new(), name: "n".into() }],
        ..Default::default()
    };
    let time = DataType::Timestamp(TimeUnit::Millisecond, None);
    let output = Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("window_start", time.clone(), false),
        Field::new("window_end", time, false),
        Field::new("n", DataType::Int64, false),
    ]));
    let mut op = WindowOp::new(&spec, &input(), output, None, 128, Box::new(HeapBackend::default()))?;
    let mut out = Vec::new();
    op.process(batch(&[("a", 0, 1), ("a", 0, 1)])?, &mut out)?;
    let due = op.next_timer().ok_or_else(|| OperatorError::input("no timer"))?;
    op.on_processing_time(due - 1, &mut out)?;
    assert!(out.is_empty(), "not before the window's end");
    op.on_processing_time(due, &mut out)?;
    assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
    assert_eq!(op.next_timer(), None);
    Ok(())
}

/// stddev, median and approx_distinct per window, fed in several batches so partial states are stored,
/// reloaded and (for sessions) merged; compared with the values computed here.
#[test]
fn datafusion_aggregates_keep_partial_states_across_batches_and_session_merges() -> Result<(), OperatorError> {
    let call = |function: &str, name: &str| AggregateCall {
        function: function.into(),
        argument: "v".into(),
        name: name.into(),
    };
    let time = DataType::Timestamp(TimeUnit::Millisecond, None);
    let output = Arc::new(Schema::new(vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("window_start", time.clone(), false),
        Field::new("window_end", time, false),
        Field::new("sd", DataType::Float64, true),
        Field::new("med", DataType::Int64, true),
        Field::new("distinct", DataType::UInt64, true),
    ]));
    for assigner in [Assigner::Tumbling(TumblingWindow { size_ms: 100, offset_ms: 0 }), session_of(30)] {
        let spec = Window {
            keys: vec!["word".into()],
            assigner: Some(assigner),
            aggregates: vec![call("stddev", "sd"), call("median", "med"), call("approx_distinct", "distinct")],
            ..Default::default()
        };
        let backend = Box::new(HeapBackend::default());
        let mut op = WindowOp::new(&spec, &input(), output.clone(), Some("t"), 128, backend)?;
        let mut out = Vec::new();
        // "a": 2, 4, 4, 4, 5, 5, 7, 9 within [0, 100) (times 50 apart at most 20: one session too),
        // arriving out of order over three batches.
        op.process(batch(&[("a", 10, 4), ("a", 0, 2), ("b", 5, 1)])?, &mut out)?;
        op.process(batch(&[("a", 30, 4), ("a", 20, 4)])?, &mut out)?;
        op.process(batch(&[("a", 40, 5), ("a", 50, 5), ("a", 60, 7), ("a", 70, 9)])?, &mut out)?;
        op.on_watermark(END_OF_TIME, &mut out)?;
        let mut found = Vec::new();
        for b in &out {
            let words = b.column(0).as_string::<i32>();
            let sd = b.column(3).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let med = b.column(4).as_primitive::<Int64Type>();
            let distinct = b.column(5).as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            for r in 0..b.num_rows() {
                let sd = datafusion::arrow::array::Array::is_valid(sd, r).then(|| (sd.value(r) * 1e6).round() / 1e6);
                found.push((words.value(r).to_string(), sd, med.value(r), distinct.value(r)));
            }
        }
        found.sort_by(|x, y| x.0.cmp(&y.0));
        // Sample standard deviation of 2,4,4,4,5,5,7,9: mean 5, squares 32 over 7.
        let sd_a = ((32.0f64 / 7.0).sqrt() * 1e6).round() / 1e6;
        let expected = vec![("a".to_string(), Some(sd_a), 4, 5), ("b".to_string(), None, 1, 1)];
        assert_eq!(found, expected, "{assigner:?}");
    }
    Ok(())
}

fn session_of(gap_ms: u64) -> Assigner {
    Assigner::Session(SessionWindow { gap_ms })
}

/// The output of a window emitting records (reduce, Top-N): word, the bounds, t, v, then `more`.
fn record_window_output(more: &[Field]) -> SchemaRef {
    let time = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields = vec![
        Field::new("word", DataType::Utf8, false),
        Field::new("window_start", time.clone(), false),
        Field::new("window_end", time.clone(), false),
        Field::new("t", time, false),
        Field::new("v", DataType::Int64, false),
    ];
    fields.extend_from_slice(more);
    Arc::new(Schema::new(fields))
}

/// A reducing window folds records pairwise with its expressions, across batches and session merges.
#[test]
fn reduce_folds_records_with_pair_expressions() -> Result<(), OperatorError> {
    let output = record_window_output(&[]);
    let projection = |name: &str, expr: &str| sluice_common::proto::Projection { name: name.into(), expr: expr.into() };
    // v: the sum; t: the latest time (the default would be the last record's).
    let reduce = Reduce { columns: vec![projection("v", "a.v + b.v"), projection("t", "greatest(a.t, b.t)")] };
    for assigner in [Assigner::Tumbling(TumblingWindow { size_ms: 100, offset_ms: 0 }), session_of(30)] {
        let spec = Window {
            keys: vec!["word".into()],
            assigner: Some(assigner),
            reduce: Some(reduce.clone()),
            ..Default::default()
        };
        let backend = Box::new(HeapBackend::default());
        let mut op = WindowOp::new(&spec, &input(), output.clone(), Some("t"), 128, backend)?;
        let mut out = Vec::new();
        op.process(batch(&[("a", 20, 1), ("a", 0, 2), ("b", 5, 7)])?, &mut out)?;
        op.process(batch(&[("a", 40, 10), ("a", 10, 100)])?, &mut out)?;
        op.on_watermark(END_OF_TIME, &mut out)?;
        let mut found = Vec::new();
        for b in &out {
            let words = b.column(0).as_string::<i32>();
            let t = b.column(3).as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
            let v = b.column(4).as_primitive::<Int64Type>();
            found.extend((0..b.num_rows()).map(|r| (words.value(r).to_string(), t.value(r), v.value(r))));
        }
        found.sort();
        assert_eq!(found, vec![("a".to_string(), 40, 113), ("b".to_string(), 5, 7)], "{assigner:?}");
    }
    Ok(())
}

/// A Top-N window's output row: word, window start and end, t, v, rank.
type RankedRow = (String, i64, i64, i64, i64, u64);

/// Top-N windows: the output rows (word, start, end, t, v, rank) of a window keeping the first `n` records
/// by `v` descending, per word and window, fed `batches` and closed at the end of time.
fn top_n_rows(
    assigner: &Assigner,
    n: u32,
    with_ties: bool,
    batches: &[Vec<(String, i64, i64)>],
) -> Result<Vec<RankedRow>, OperatorError> {
    use sluice_common::proto::{SortKey, TopN};
    let output = record_window_output(&[Field::new("rank", DataType::UInt64, false)]);
    let top_n = TopN {
        order_by: vec![SortKey { column: "v".into(), descending: true }],
        n,
        with_ties,
        rank_column: "rank".into(),
    };
    let spec =
        Window { keys: vec!["word".into()], assigner: Some(*assigner), top_n: Some(top_n), ..Default::default() };
    let mut op = WindowOp::new(&spec, &input(), output, Some("t"), 128, Box::new(HeapBackend::default()))?;
    let mut out = Vec::new();
    for rows in batches {
        let rows: Vec<(&str, i64, i64)> = rows.iter().map(|(w, t, v)| (w.as_str(), *t, *v)).collect();
        op.process(batch(&rows)?, &mut out)?;
    }
    op.on_watermark(END_OF_TIME, &mut out)?;
    let mut found = Vec::new();
    for b in &out {
        let ts =
            |c: usize| b.column(c).as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>().clone();
        let (words, starts, ends, t) = (b.column(0).as_string::<i32>(), ts(1), ts(2), ts(3));
        let (v, rank) = (b.column(4).as_primitive::<Int64Type>(), b.column(5).as_primitive::<UInt64Type>());
        for r in 0..b.num_rows() {
            let row = (words.value(r).to_string(), starts.value(r), ends.value(r), t.value(r), v.value(r));
            found.push((row.0, row.1, row.2, row.3, row.4, rank.value(r)));
        }
    }
    Ok(found)
}

/// Goal: a Top-N window keeps, per key and window, the first n records by its order, earlier arrivals
/// first among equals (or every tie with `with_ties`), ranked from 1 as SQL's ROW_NUMBER()/RANK() do, in any
/// batching. Method: pseudo-random records (few values, so ties are common) in batches, against a naive
/// evaluation over all records at once, for tumbling and sliding windows and several n.
#[test]
fn top_n_keeps_the_first_n_records_per_key_and_window_as_a_naive_ranking_does() -> Result<(), OperatorError> {
    let assigners = [
        Assigner::Tumbling(TumblingWindow { size_ms: 100, offset_ms: 0 }),
        Assigner::Sliding(SlidingWindow { size_ms: 100, slide_ms: 50, offset_ms: 0 }),
    ];
    let mut random = sluice_common::splitmix::SplitMix64(7);
    let records: Vec<(String, i64, i64)> = (0..600)
        .map(|_| {
            let word = ["a", "b", "c"][(random.next_u64() % 3) as usize].to_string();
            (word, (random.next_u64() % 400) as i64, (random.next_u64() % 6) as i64)
        })
        .collect();
    for assigner in &assigners {
        for n in [1, 2, 5] {
            for with_ties in [false, true] {
                // Naive: every (word, window) with its records in arrival order, stably sorted by v descending.
                let mut windows: std::collections::BTreeMap<(String, i64, i64), Vec<(i64, i64)>> = Default::default();
                for (word, t, v) in &records {
                    let mut assigned = Vec::new();
                    super::assign::Assign::of(&Window { assigner: Some(*assigner), ..Default::default() })?
                        .windows(*t, &mut assigned);
                    for (start, end) in assigned {
                        windows.entry((word.clone(), start, end)).or_default().push((*t, *v));
                    }
                }
                let mut expected = Vec::new();
                for ((word, start, end), mut kept) in windows {
                    kept.sort_by_key(|&(_, v)| std::cmp::Reverse(v));
                    let n = n as usize;
                    let cut = if kept.len() <= n {
                        kept.len()
                    } else if with_ties {
                        n + kept[n..].iter().take_while(|r| r.1 == kept[n - 1].1).count()
                    } else {
                        n
                    };
                    for (i, &(t, v)) in kept[..cut].iter().enumerate() {
                        let rank = if with_ties { kept.iter().position(|r| r.1 == v).unwrap_or(i) + 1 } else { i + 1 };
                        expected.push((word.clone(), start, end, t, v, rank as u64));
                    }
                }
                expected.sort();
                for batch_rows in [1, 7, 600] {
                    let batches: Vec<Vec<_>> = records.chunks(batch_rows).map(|c| c.to_vec()).collect();
                    let mut found = top_n_rows(assigner, n, with_ties, &batches)?;
                    found.sort();
                    assert_eq!(found, expected, "{assigner:?}, n {n}, ties {with_ties}, batches of {batch_rows}");
                }
            }
        }
    }
    Ok(())
}

/// Batches of (word, time, value) records, each followed by a watermark.
type Batches = Vec<(Vec<(&'static str, i64, i64)>, i64)>;

/// Records in batches, each batch followed by a watermark, for the sliced-window tests: three words, times
/// around a moving base and sometimes far behind it (late for some or all of their windows), from a fixed
/// seed.
fn shuffled_records(seed: u64) -> Batches {
    let mut state = seed;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound) as i64
    };
    let mut watermark = i64::MIN;
    (0..40)
        .map(|i| {
            let records = (0..1 + next(8))
                .map(|_| {
                    let word = ["a", "b", "c"][next(3) as usize];
                    (word, i * 15 - 90 + next(120), next(100))
                })
                .collect();
            watermark = watermark.max(i * 15 - 20 - next(10));
            (records, watermark)
        })
        .collect()
}

/// What a sliding window (size 30, slide 10, `offset`, no lateness) emits, naively: a record counts in each
/// window `[start, start + 30)` holding it whose last millisecond was after the watermark when it came.
fn naive_sliding(batches: &Batches, offset: i64) -> Vec<String> {
    let mut windows: std::collections::BTreeMap<(String, i64), (i64, i64)> = Default::default();
    let mut watermark = i64::MIN;
    for (records, next) in batches {
        for &(word, t, v) in records {
            let newest = offset + (t - offset).div_euclid(10) * 10;
            for start in [newest - 20, newest - 10, newest] {
                if start + 30 - 1 > watermark {
                    let entry = windows.entry((word.to_string(), start)).or_default();
                    *entry = (entry.0 + 1, entry.1 + v);
                }
            }
        }
        watermark = watermark.max(*next);
    }
    let mut rows: Vec<String> = windows
        .iter()
        .map(|((word, start), (n, total))| format!("{word} {start} {} {n} {total}", start + 30))
        .collect();
    rows.sort();
    rows
}

/// Goal: a sliding window kept as slices emits what each window would hold, late records included (they
/// count in the windows that had not fired yet, and a record whose windows all fired is late). Method:
/// shuffled records and watermarks against [`naive_sliding`], at two offsets.
#[test]
fn sliced_sliding_windows_emit_what_a_naive_evaluation_gives() -> Result<(), OperatorError> {
    for (seed, offset) in [(7, 0), (11, 3), (13, -4)] {
        let batches = shuffled_records(seed);
        let mut op = window(Assigner::Sliding(SlidingWindow { size_ms: 30, slide_ms: 10, offset_ms: offset }), 0)?;
        assert!(op.slicing.is_some(), "a sliding window of three slides without lateness is sliced");
        let mut out = Vec::new();
        for (records, watermark) in &batches {
            op.process(batch(records)?, &mut out)?;
            op.on_watermark(*watermark, &mut out)?;
        }
        op.on_watermark(END_OF_TIME, &mut out)?;
        let expected = naive_sliding(&batches, offset);
        let (late, windows) = (op.late_records(), expected.len());
        assert!(late > 0 && windows > 40, "the input has late records ({late}) and many windows ({windows})");
        assert_eq!(rows(&out), expected, "seed {seed}, offset {offset}");
        assert!(op.fire_timers.is_empty() && op.cleanup_timers.is_empty(), "every slice was deleted");
    }
    Ok(())
}

/// The snapshot of `op`'s state, as a checkpoint takes it.
fn snapshot_of(op: &mut WindowOp) -> Result<sluice_common::proto::OperatorSnapshot, OperatorError> {
    let mut snapshot = sluice_common::proto::OperatorSnapshot::default();
    op.snapshot_state(&mut snapshot)?;
    let keyed = op.keyed_backend().ok_or_else(|| OperatorError::internal("no keyed backend"))?.snapshot()?;
    snapshot.keyed = crate::checkpoint::to_messages(keyed);
    Ok(snapshot)
}

/// Goal: a sliced window restored from a checkpoint fires each window once, with every slice it had:
/// before and after the restore together emit what an uninterrupted run does. The restored operator is given
/// the last watermark again first, as its task would be. Also for a checkpoint whose whole windows were
/// stored unsliced (a window with lateness keeps them so; a job of an earlier build did too): they fire
/// with the slices that join them.
#[test]
fn a_restored_sliced_window_emits_what_an_uninterrupted_one_does() -> Result<(), OperatorError> {
    let sliding = || Assigner::Sliding(SlidingWindow { size_ms: 30, slide_ms: 10, offset_ms: 0 });
    let batches = shuffled_records(17);
    let on_time: Batches = batches
        .iter()
        .scan(i64::MIN, |watermark, (records, next)| {
            let kept = records.iter().filter(|r| r.1 > *watermark + 30).copied().collect();
            *watermark = (*watermark).max(*next);
            Some((kept, *next))
        })
        .collect();
    let (first, second) = on_time.split_at(on_time.len() / 2);
    for before_lateness in [0, 5] {
        let mut uninterrupted = window(sliding(), 0)?;
        let mut expected = Vec::new();
        for (records, watermark) in &on_time {
            uninterrupted.process(batch(records)?, &mut expected)?;
            uninterrupted.on_watermark(*watermark, &mut expected)?;
        }
        uninterrupted.on_watermark(END_OF_TIME, &mut expected)?;

        let mut before = window(sliding(), before_lateness)?;
        assert_eq!(before.slicing.is_some(), before_lateness == 0);
        let mut out = Vec::new();
        for (records, watermark) in first {
            before.process(batch(records)?, &mut out)?;
            before.on_watermark(*watermark, &mut out)?;
        }
        let snapshot = snapshot_of(&mut before)?;
        let mut after = window(sliding(), 0)?;
        after.restore_state(&[&snapshot], 0..=127)?;
        if let Some((_, watermark)) = first.last() {
            after.on_watermark(*watermark, &mut out)?;
        }
        for (records, watermark) in second {
            after.process(batch(records)?, &mut out)?;
            after.on_watermark(*watermark, &mut out)?;
        }
        after.on_watermark(END_OF_TIME, &mut out)?;
        assert_eq!(uninterrupted.late_records(), 0, "only records no window has fired for");
        assert_eq!(rows(&out), rows(&expected), "restored from a window with lateness {before_lateness}");
    }
    Ok(())
}
