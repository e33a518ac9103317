//! Two-input keyed joins on event time: the interval join and the event-time temporal (versioned-table) join.
//!
//! Both keep rows in the keyed state backend as Arrow row-format bytes of all their columns, under
//! `key group | key | time` (time sign-flipped big-endian, so a key's rows scan in time order), and both emit
//! the first input's columns followed by the second input's non-key columns.
//!
//! Interval join: a left row `l` and a right row `r` with equal keys join when
//! `l.ts + lower <= r.ts <= l.ts + upper`. Each arriving row probes the other side's rows of its key, then is
//! stored; so every pair is emitted exactly once, by whichever of the two arrives second. A left row is
//! dropped from state once the watermark reaches `l.ts + upper` (no right row it could match is still to
//! come), a right row once it reaches `r.ts - lower`. Rows at or behind the watermark on arrival are late:
//! counted and dropped, as Flink does. Without late rows, the pairs do not depend on arrival order.
//!
//! Temporal join: table rows are versions of the row for their key, valid from their time on. A stream row
//! at time `t` waits until the watermark passes `t`, then joins the version with the largest time `<= t`.
//! A version superseded by a newer one at or before both the watermark and the earliest row being joined can
//! no longer be chosen, and is dropped when a scan meets it.
//!
//! Layout: [`side`] reading an input's keys, times and rows, building joined output, scanning a key's
//! stored rows; [`interval`] and [`temporal`] the two operators.
mod interval;
mod side;
mod temporal;
#[cfg(test)]
mod tests;

pub use interval::IntervalJoinOp;
pub use temporal::TemporalJoinOp;
