//! Keyed windows: tumbling, sliding and session, on event time or processing time.
//!
//! State: one entry per (key, window) in the keyed state backend, holding the window's partial aggregates
//! ([`Acc`], 16 bytes each, then for each DataFusion aggregate its length-prefixed partial state). Its key is `key group | key | window start | window end`, so all windows of a
//! key are one prefix (sessions scan it to merge).
//!
//! A batch is handled column-at-a-time where it can be: every row's key bytes (Arrow row format), key group
//! and aggregate arguments are computed once per batch; tumbling and sliding windows then fold the batch
//! into one partial result per distinct (key, window) before touching the backend, so the backend sees one
//! read and one write per group and batch rather than per record. Session windows merge record by record.
//!
//! Sliding windows whose size is a whole number of slides are kept as slices when that is exact (event time,
//! no allowed lateness, aggregates that merge): one entry per (key, slice), so a record updates one entry
//! instead of size / slide; a window merges its key's slices (a prefix scan) when it fires, and the slice no
//! later window holds is deleted then. Timers: a new slice schedules the first of its windows that has not
//! fired, and each window that fires schedules the next one while a slice of it lies in that one too.
//!
//! Firing (Flink's event-time trigger with allowed lateness):
//! - a window fires when the watermark reaches its last millisecond (`end - 1`), emitting the key columns,
//!   `window_start`, `window_end` and the aggregates;
//! - its state is kept until the watermark passes `end - 1 + allowed_lateness`; a record arriving in that
//!   span updates the window and fires it again at once (the later row supersedes the earlier);
//! - a record whose windows are all past that point is late: it goes to the side output "late" and is
//!   counted, never folded into a result.
//!
//! Processing-time windows use the wall clock for both the records' times and the firing; at the end of a
//! bounded input they fire whatever they hold. Timers live on the heap, ordered by time.
//!
//! Layout: [`assign`] which windows hold a time; [`stored`] the state layout (window bounds in the key,
//! accumulators in the value); [`reduce`] reducing windows' pair expressions; [`rank`] Top-N windows (the
//! first n records per key and window, in an order); [`fold`] folding a batch into
//! windows; [`operator`] the operator: timers, firing, checkpoints.
mod assign;
mod fold;
mod operator;
mod rank;
mod reduce;
mod stored;
#[cfg(test)]
mod tests;

pub use operator::WindowOp;
