//! Where a task's time goes, and its network counters: busy, back-pressured (waiting for credit) and idle
//! (waiting for input), booked at every wait of the loop so the three add up to the wall clock.
use std::time::{Duration, Instant};

use super::Runner;
use crate::metrics::TaskCounters;
use crate::network::InputGate;

/// Time accounting for the busy / back-pressured / idle split (Flink's model).
pub(super) struct Clock {
    /// When time was last booked.
    last: Instant,
    /// The partitions' back-pressured time already booked.
    backpressured_seen: Duration,
}

impl Clock {
    pub(super) fn start() -> Self {
        Self { last: Instant::now(), backpressured_seen: Duration::ZERO }
    }
}

impl Runner {
    /// Brings the task's remote-bytes-out counter up to what its partitions queued for other TaskManagers.
    pub(super) fn sync_remote_bytes_out(&self, counters: &TaskCounters) {
        let total: u64 = self.outputs.iter().map(|o| o.partition.remote_bytes_queued()).sum();
        counters.remote_bytes_out.inc_by(total.saturating_sub(counters.remote_bytes_out.get()));
    }

    /// Books the time since the last accounting as busy, minus what the partitions spent back-pressured.
    pub(super) fn account_busy(&mut self, counters: &TaskCounters) {
        let elapsed = self.clock.last.elapsed();
        self.clock.last = Instant::now();
        let backpressured: Duration = self.outputs.iter().map(|o| o.partition.backpressured_time()).sum();
        let new_backpressure = backpressured.saturating_sub(self.clock.backpressured_seen);
        self.clock.backpressured_seen = backpressured;
        let new_backpressure = new_backpressure.min(elapsed);
        counters.backpressured.inc_by(new_backpressure.as_secs_f64());
        counters.busy.inc_by((elapsed - new_backpressure).as_secs_f64());
        counters.note_booked();
    }

    pub(super) fn account_idle(&mut self, counters: &TaskCounters) {
        counters.idle.inc_by(self.clock.last.elapsed().as_secs_f64());
        self.clock.last = Instant::now();
        counters.note_booked();
        counters.note_waiting_for_input(false);
    }
}

/// Brings the task's input-gate gauges and counters up to the gate's.
pub(super) fn record_gate(gate: &InputGate, counters: &TaskCounters) {
    counters.in_flight_bytes.set(gate.in_flight_bytes() as i64);
    counters.floating_credits.set(i64::from(gate.available_floating_credits()));
    counters.remote_bytes_in.inc_by(gate.remote_bytes_in().saturating_sub(counters.remote_bytes_in.get()));
}
