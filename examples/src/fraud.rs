//! A native operator: Flink's fraud-detection walkthrough as a [`KeyedProcessFunction`].
//!
//! Rule: an account's transaction of less than `small_amount` (default 1.00) immediately followed, within
//! `within_ms` (default 60 s of event time), by one of more than `large_amount` (default 500.00) raises an
//! alert `{account, small_ts, large_ts, amount}`. Thieves test a stolen card with a tiny purchase first.
//!
//! Transactions of an account can reach the operator out of event-time order (they come through the network
//! from several source subtasks, and up to the source's out-of-orderness bound late), so the function does
//! not decide on arrival: it buffers each transaction in list state and registers an event-time timer at its
//! time. When the watermark passes that time no earlier transaction can still come, and the timer handles
//! the due transactions in time order (ties by amount). The answer is therefore the same at any parallelism
//! and arrival order. A second timer per small transaction clears the flag once `within_ms` passed, so an
//! idle account keeps no state.
//!
//! `custom-taskmanager` (in `src/bin`) is a TaskManager binary that registers this operator as
//! `fraud_detector`; `examples/jobs/fraud_detection.json` uses it.
use sluice_taskmanager::operators::native::{
    Collector, Context, KeyedProcessFunction, ListStateHandle, OperatorError, OperatorRegistry, Record, ScalarValue,
    TimeDomain, ValueStateHandle,
};

/// The name jobs use for the operator.
pub const NAME: &str = "fraud_detector";

/// A transaction as buffered: (event time, amount).
type Payment = (i64, f64);

/// The detector, with its settings and state handles.
pub struct FraudDetector {
    small_amount: f64,
    large_amount: f64,
    within_ms: i64,
    /// Transactions waiting for the watermark.
    pending: ListStateHandle<Payment>,
    /// The time of the last transaction, if it was small (and is not older than `within_ms`).
    small_at: ValueStateHandle<i64>,
}

impl FraudDetector {
    /// Handles one transaction, in event-time order.
    fn transaction(
        &mut self,
        ts: i64,
        amount: f64,
        ctx: &mut Context<'_>,
        out: &mut Collector,
    ) -> Result<(), OperatorError> {
        if let Some(small_at) = ctx.value(&self.small_at)? {
            if amount > self.large_amount && ts - small_at <= self.within_ms {
                let mut alert = ctx.current_key()?;
                alert.push(ScalarValue::TimestampMillisecond(Some(small_at), None));
                alert.push(ScalarValue::TimestampMillisecond(Some(ts), None));
                alert.push(ScalarValue::from(amount));
                out.emit(alert)?;
            }
            // Any transaction ends the pattern: the small one must be followed *immediately*.
            ctx.clear_value(&self.small_at)?;
        }
        if amount < self.small_amount {
            ctx.update_value(&self.small_at, &ts)?;
            ctx.register_event_time_timer(ts.saturating_add(self.within_ms))?;
        }
        Ok(())
    }
}

impl KeyedProcessFunction for FraudDetector {
    fn process_element(
        &mut self,
        record: &Record<'_>,
        ctx: &mut Context<'_>,
        _out: &mut Collector,
    ) -> Result<(), OperatorError> {
        let ts = record.timestamp().ok_or_else(|| OperatorError::new("fraud_detector needs event time"))?;
        let Some(amount) = record.f64("amount")? else { return Ok(()) };
        ctx.add_to_list(&self.pending, &(ts, amount))?;
        ctx.register_event_time_timer(ts)
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        _domain: TimeDomain,
        ctx: &mut Context<'_>,
        out: &mut Collector,
    ) -> Result<(), OperatorError> {
        let pending = ctx.list(&self.pending)?;
        let (mut due, later): (Vec<Payment>, Vec<Payment>) = pending.into_iter().partition(|(ts, _)| *ts <= timestamp);
        if !due.is_empty() {
            due.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            ctx.clear_list(&self.pending)?;
            for transaction in &later {
                ctx.add_to_list(&self.pending, transaction)?;
            }
            for (ts, amount) in due {
                self.transaction(ts, amount, ctx, out)?;
            }
        }
        // The flag of a small transaction lapses `within_ms` after it.
        if ctx.value(&self.small_at)?.is_some_and(|at| at.saturating_add(self.within_ms) <= timestamp) {
            ctx.clear_value(&self.small_at)?;
        }
        Ok(())
    }
}

/// A registry holding the detector, as `custom-taskmanager` runs it.
pub fn registry() -> OperatorRegistry {
    OperatorRegistry::new().register(NAME, |ctx| {
        let detector = FraudDetector {
            small_amount: ctx.parse("small_amount", 1.0)?,
            large_amount: ctx.parse("large_amount", 500.0)?,
            within_ms: ctx.parse("within_ms", 60_000)?,
            pending: ctx.list_state("pending")?,
            small_at: ctx.value_state("small_at", None)?,
        };
        Ok(Box::new(detector))
    })
}
