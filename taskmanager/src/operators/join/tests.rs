//! Goal: both joins emit each matching pair once whatever the arrival order, drop late rows and expired
//! state, and restore. Method: drive the operators over a heap backend with batches and watermarks.
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::proto::{IntervalJoin, Join, TemporalJoin};

use super::{IntervalJoinOp, TemporalJoinOp};
use crate::operator_api::{Operator, OperatorError};
use std::sync::Arc;

use crate::state::HeapBackend;
use crate::time::END_OF_TIME;
use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

fn schema(value: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(format!("{value}_ts"), DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new(value, DataType::Int64, false),
    ]))
}

fn batch(schema: &SchemaRef, rows: &[(&str, i64, i64)]) -> Result<RecordBatch, OperatorError> {
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )?)
}

fn output(left: &SchemaRef, right: &SchemaRef, nullable: bool) -> SchemaRef {
    let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(right.fields().iter().skip(1).map(|f| f.as_ref().clone().with_nullable(nullable)));
    Arc::new(Schema::new(fields))
}

/// "id left_value right_value" per output row, sorted (None as "-").
fn pairs(out: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in out {
        for r in 0..b.num_rows() {
            let right = b.column(4).as_primitive::<Int64Type>();
            let right = if right.is_null(r) { "-".to_string() } else { right.value(r).to_string() };
            rows.push(format!(
                "{} {} {right}",
                b.column(0).as_string::<i32>().value(r),
                b.column(2).as_primitive::<Int64Type>().value(r)
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn interval_join_pairs_rows_within_the_bounds_whatever_arrives_first() -> Result<(), OperatorError> {
    let (orders, payments) = (schema("order"), schema("payment"));
    let spec = IntervalJoin {
        left: "orders".into(),
        right: "payments".into(),
        left_keys: vec!["id".into()],
        right_keys: vec!["id".into()],
        lower_bound_ms: 0,
        upper_bound_ms: 100,
    };
    let run = |payments_first: bool| -> Result<Vec<String>, OperatorError> {
        let mut op = IntervalJoinOp::new(
            &spec,
            &orders,
            Some("order_ts"),
            &payments,
            Some("payment_ts"),
            output(&orders, &payments, false),
            128,
            Box::new(HeapBackend::default()),
        )?;
        let left = batch(&orders, &[("a", 1_000, 1), ("b", 1_000, 2), ("a", 1_050, 3)])?;
        let right = batch(&payments, &[("a", 1_080, 10), ("a", 1_200, 11), ("b", 999, 12), ("c", 1_000, 13)])?;
        let mut out = Vec::new();
        if payments_first {
            op.process_input(1, right, &mut out)?;
            op.process_input(0, left, &mut out)?;
        } else {
            op.process_input(0, left, &mut out)?;
            op.process_input(1, right, &mut out)?;
        }
        op.on_watermark(END_OF_TIME, &mut out)?;
        Ok(pairs(&out))
    };
    let expected = vec!["a 1 10", "a 3 10"];
    assert_eq!(run(false)?, expected, "a@1080 is within [1000, 1100] and [1050, 1150]; b@999 is before b's order");
    assert_eq!(run(true)?, expected);
    Ok(())
}

/// Goal: a regular join pairs every left and right row with equal keys, whatever their times, the watermark or
/// the order they come in, and emits each pair when its second row arrives. Method: orders, then the
/// watermark at the end of time, then payments far from the orders' times (an interval join would call them
/// late or out of bounds), then another order; and the same with payments first.
#[test]
fn regular_join_pairs_rows_with_equal_keys_whenever_they_arrive() -> Result<(), OperatorError> {
    let (orders, payments) = (schema("order"), schema("payment"));
    let spec = Join {
        left: "orders".into(),
        right: "payments".into(),
        left_keys: vec!["id".into()],
        right_keys: vec!["id".into()],
    };
    let run = |payments_first: bool| -> Result<(Vec<String>, u64), OperatorError> {
        let output = output(&orders, &payments, false);
        let mut op = IntervalJoinOp::regular(&spec, &orders, &payments, output, 128, Box::new(HeapBackend::default()))?;
        let left = batch(&orders, &[("a", 1_000, 1), ("b", 1_000, 2)])?;
        let right = batch(&payments, &[("a", 5, 10), ("a", 9_000_000, 11), ("c", 1_000, 13)])?;
        let mut out = Vec::new();
        let (first, second) = if payments_first { ((1, right), (0, left)) } else { ((0, left), (1, right)) };
        op.process_input(first.0, first.1, &mut out)?;
        op.on_watermark(END_OF_TIME, &mut out)?;
        op.process_input(second.0, second.1, &mut out)?;
        assert_eq!(pairs(&out).len(), 2, "both pairs of key a, emitted as their second row arrived");
        op.process_input(0, batch(&orders, &[("a", 0, 4)])?, &mut out)?;
        Ok((pairs(&out), op.late_records()))
    };
    let expected: Vec<String> = ["a 1 10", "a 1 11", "a 4 10", "a 4 11"].map(String::from).to_vec();
    assert_eq!(run(false)?, (expected.clone(), 0), "no row is late, and every pair of key a is there");
    assert_eq!(run(true)?, (expected, 0));
    Ok(())
}

#[test]
fn temporal_join_uses_the_version_valid_at_each_records_time() -> Result<(), OperatorError> {
    let (clicks, prices) = (schema("click"), schema("price"));
    let spec = TemporalJoin {
        stream: "clicks".into(),
        table: "prices".into(),
        stream_keys: vec!["id".into()],
        table_keys: vec!["id".into()],
        keep_unmatched: true,
    };
    let mut op = TemporalJoinOp::new(
        &spec,
        &clicks,
        Some("click_ts"),
        &prices,
        Some("price_ts"),
        output(&clicks, &prices, true),
        128,
        Box::new(HeapBackend::default()),
    )?;
    let mut out = Vec::new();
    // The later click first: joining it must not drop the version the earlier one needs.
    op.process_input(0, batch(&clicks, &[("a", 250, 2), ("a", 150, 1), ("a", 50, 3), ("z", 100, 4)])?, &mut out)?;
    op.process_input(1, batch(&prices, &[("a", 200, 20), ("a", 100, 10)])?, &mut out)?;
    assert!(out.is_empty(), "stream rows wait for the watermark");
    op.on_watermark(END_OF_TIME, &mut out)?;
    assert_eq!(pairs(&out), vec!["a 1 10", "a 2 20", "a 3 -", "z 4 -"]);
    Ok(())
}
