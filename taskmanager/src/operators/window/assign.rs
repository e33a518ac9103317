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
            _ => return Err(OperatorError::configuration("the window has no valid assigner")),
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

/// Properties of window assignment over generated times, sizes, slides and offsets.
#[cfg(test)]
mod properties {
    use super::Assign;
    use proptest::prelude::*;
    use sluice_common::job::bounds::windows_per_record;

    /// Event times the properties draw from: ±10^15 ms (±31,000 years), far from i64's saturation.
    const TIME_MS_MAX: i64 = 1_000_000_000_000_000;
    /// Window sizes and slides: up to 10^6 ms, so a sliding window of slide 1 is at most 10^6 windows.
    const SIZE_MS_MAX: i64 = 1_000_000;
    /// Slides of the sliding-window properties, kept small enough that a case enumerates few windows.
    const SLIDE_MS_MIN: i64 = 1_000;

    fn windows(assign: Assign, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        assign.windows(t, &mut out);
        out
    }

    proptest! {
        #[test]
        fn a_time_is_in_size_over_slide_sliding_windows_each_holding_it(
            t in -TIME_MS_MAX..TIME_MS_MAX,
            slide in SLIDE_MS_MIN..SIZE_MS_MAX,
            slides_per_size in 1i64..=20,
            extra in 0i64..SLIDE_MS_MIN,
            offset in -SIZE_MS_MAX..SIZE_MS_MAX,
        ) {
            let size = slide * slides_per_size + extra;
            let got = windows(Assign::Sliding { size, slide, offset }, t);
            // ceil(size / slide) windows when the time falls where the longest run of windows overlaps,
            // floor(size / slide) otherwise; exactly size / slide when slide divides size.
            let (floor, ceil) = (size / slide, windows_per_record(size as u64, slide as u64) as i64);
            prop_assert!(
                (floor..=ceil).contains(&(got.len() as i64)),
                "{} windows for size {size}, slide {slide}", got.len()
            );
            if extra == 0 {
                prop_assert_eq!(got.len() as i64, slides_per_size);
            }
            for &(start, end) in &got {
                prop_assert!(start <= t && t < end, "[{start}, {end}) does not hold {t}");
                prop_assert_eq!(end - start, size);
                prop_assert_eq!((start - offset).rem_euclid(slide), 0, "window [{}, {}) is not aligned", start, end);
            }
            let mut starts: Vec<i64> = got.iter().map(|w| w.0).collect();
            starts.dedup();
            prop_assert_eq!(starts.len(), got.len(), "a window appears twice");
            // No aligned window holding `t` is missing: the ones just outside the list do not hold it.
            if let (Some(first), Some(last)) = (got.first(), got.last()) {
                prop_assert!(first.0 + slide > t, "a later window [{}, ..) would hold {}", first.0 + slide, t);
                prop_assert!(last.0 - slide + size <= t, "an earlier window would hold {}", t);
            }
        }

        #[test]
        fn tumbling_windows_partition_time(
            t in -TIME_MS_MAX..TIME_MS_MAX,
            size in 1..SIZE_MS_MAX,
            offset in -SIZE_MS_MAX..SIZE_MS_MAX,
        ) {
            let got = windows(Assign::Tumbling { size, offset }, t);
            prop_assert_eq!(got.len(), 1, "a time is in exactly one tumbling window");
            let (start, end) = got[0];
            prop_assert!(start <= t && t < end, "[{start}, {end}) does not hold {t}");
            prop_assert_eq!(end - start, size);
            prop_assert_eq!((start - offset).rem_euclid(size), 0);
            // Every time of the window is in this same window, and the next window starts where it ends.
            prop_assert_eq!(windows(Assign::Tumbling { size, offset }, start), got.clone());
            prop_assert_eq!(windows(Assign::Tumbling { size, offset }, end - 1), got.clone());
            prop_assert_eq!(windows(Assign::Tumbling { size, offset }, end), vec![(end, end + size)]);
        }

        #[test]
        fn sliding_assignment_ends_and_stays_within_its_bound_at_any_time(
            t in any::<i64>(),
            slide in 1i64..=SIZE_MS_MAX,
            slides_per_size in 1i64..=8,
            offset in any::<i64>(),
        ) {
            let size = slide.saturating_mul(slides_per_size);
            let got = windows(Assign::Sliding { size, slide, offset }, t);
            prop_assert!(
                got.len() as u64 <= windows_per_record(size as u64, slide as u64),
                "{} windows for size {size}, slide {slide} at {t}", got.len()
            );
        }
    }
}
