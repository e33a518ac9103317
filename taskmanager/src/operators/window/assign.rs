//! Window assignment: which windows `[start, end)` hold an event at time `t` (tumbling, sliding, session).
use sluice_common::proto::{window::Assigner, Window};

use crate::operator_api::OperatorError;

/// How records map to windows.
#[derive(Clone, Copy, Debug)]
pub(super) enum Assign {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
}

/// Milliseconds from a spec as an event time, saturating.
pub(super) fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Assign {
    pub(super) fn of(spec: &Window) -> Result<Self, OperatorError> {
        Ok(match &spec.assigner {
            Some(Assigner::Tumbling(t)) if t.size_ms > 0 => {
                Assign::Tumbling { size: millis(t.size_ms), offset: t.offset_ms }
            }
            Some(Assigner::Sliding(s)) if s.size_ms > 0 && s.slide_ms > 0 => {
                Assign::Sliding { size: millis(s.size_ms), slide: millis(s.slide_ms), offset: s.offset_ms }
            }
            Some(Assigner::Session(s)) if s.gap_ms > 0 => Assign::Session { gap: millis(s.gap_ms) },
            _ => return Err(OperatorError::new("the window has no valid assigner")),
        })
    }

    /// The windows `[start, end)` holding time `t` (for sessions, the record's own window).
    pub(super) fn windows(self, t: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match self {
            Assign::Tumbling { size, offset } => {
                let start = t.saturating_sub(t.wrapping_sub(offset).rem_euclid(size));
                out.push((start, start.saturating_add(size)));
            }
            Assign::Sliding { size, slide, offset } => {
                let mut start = t.saturating_sub(t.wrapping_sub(offset).rem_euclid(slide));
                while start > t.saturating_sub(size) {
                    out.push((start, start.saturating_add(size)));
                    start = start.saturating_sub(slide);
                }
            }
            Assign::Session { gap } => out.push((t, t.saturating_add(gap))),
        }
    }
}
