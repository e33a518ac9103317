//! What a native operator implements: a function called per record and per timer, with its key current.
use super::{Collector, Context, OperatorError, Record};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's time.
    EventTime,
    /// Fires when the wall clock (ms since the epoch) reaches the timer's time.
    ProcessingTime,
}

/// A keyed operator written in Rust. See the module docs.
pub trait KeyedProcessFunction: Send {
    /// Handles one record; its key is the current key of `ctx`.
    fn process_element(
        &mut self,
        record: &Record<'_>,
        ctx: &mut Context<'_>,
        out: &mut Collector,
    ) -> Result<(), OperatorError>;

    /// A timer this function registered for the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut Context<'_>,
        _out: &mut Collector,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}
