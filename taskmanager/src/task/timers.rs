//! Time in the task loop: event time (watermarks through the chain, then to every consumer) and
//! processing-time timers (the chain's earliest is one of the loop's wake-ups).
use std::time::Duration;

use super::{operator_error, Runner, TaskError};
use crate::metrics::TaskCounters;
use crate::network::StreamEvent;
use crate::time::{now_millis, IDLE};

/// How often a source sends a latency marker (`processing_latency_seconds`): one small event a second per
/// source subtask, on one channel of each partition it crosses.
pub(super) const LATENCY_MARKER_INTERVAL: Duration = Duration::from_secs(1);

impl Runner {
    /// Event time reached `watermark` (or the task went idle): each operator in chain order fires what it
    /// completes, its output flowing through the rest, then the watermark goes to every consumer.
    pub(super) async fn advance_watermark(&mut self, watermark: i64, counters: &TaskCounters) -> Result<(), TaskError> {
        counters.set_watermark(watermark);
        if watermark != IDLE {
            for index in 0..self.operators.len() {
                let mut out = Vec::new();
                self.operators[index]
                    .on_watermark(watermark, &mut out)
                    .map_err(|e| operator_error(counters, index + self.offset, e))?;
                self.produced(index, out, counters).await?;
            }
        }
        for output in &mut self.outputs {
            output.partition.broadcast_event(StreamEvent::Watermark(watermark)).await?;
        }
        Ok(())
    }

    /// Sends a latency marker on along one channel of each output (a sink's task has none).
    pub(super) async fn forward_latency_marker(&mut self, emitted_ms: i64) -> Result<(), TaskError> {
        for output in &mut self.outputs {
            output.partition.send_latency_marker(emitted_ms).await?;
        }
        Ok(())
    }

    /// The earliest processing-time timer of the chain, as a runtime instant.
    pub(super) fn timer_deadline(&self) -> Option<tokio::time::Instant> {
        let at = self.operators.iter().filter_map(|o| o.next_timer()).min()?;
        let wait = u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0);
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }

    /// Fires the processing-time timers that are due, in chain order.
    pub(super) async fn fire_due_timers(&mut self, counters: &TaskCounters) -> Result<(), TaskError> {
        let now = now_millis();
        for index in 0..self.operators.len() {
            if self.operators[index].next_timer().is_none_or(|at| at > now) {
                continue;
            }
            let mut out = Vec::new();
            self.operators[index]
                .on_processing_time(now, &mut out)
                .map_err(|e| operator_error(counters, index + self.offset, e))?;
            self.produced(index, out, counters).await?;
        }
        Ok(())
    }
}

/// Sleeps until `deadline`; forever without one.
pub(super) async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
