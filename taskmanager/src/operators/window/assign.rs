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

/// A sliding window kept as slices (Flink's slice-shared windows): when the size is a whole number of slides,
/// the windows are unions of consecutive `slide`-long slices, so a record updates the one slice holding it
/// rather than every window, and a window merges its slices when it fires.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slicing {
    pub(super) size: i64,
    pub(super) slide: i64,
    offset: i64,
}

impl Slicing {
    /// The slicing of `assign`: a sliding window of at least two slides per size, a whole number of them.
    pub(super) fn of(assign: Assign) -> Option<Self> {
        match assign {
            Assign::Sliding { size, slide, offset } if size > slide && size % slide == 0 => {
                Some(Slicing { size, slide, offset })
            }
            _ => None,
        }
    }

    /// The slice `[start, end)` holding time `t`.
    pub(super) fn slice(self, t: i64) -> (i64, i64) {
        let start = t.saturating_sub(t.wrapping_sub(self.offset).rem_euclid(self.slide));
        (start, start.saturating_add(self.slide))
    }

    /// The end of the last window holding the slice that starts at `start`.
    pub(super) fn last_end(self, start: i64) -> i64 {
        start.saturating_add(self.size)
    }

    /// The end of the first window holding the slice that ends at `slice_end` whose last millisecond is after
    /// `watermark` (one that has not fired), if any: the windows holding it end at `slice_end`, one slide
    /// later, and so on up to [`Slicing::last_end`].
    pub(super) fn first_window_after(self, slice_end: i64, watermark: i64) -> Option<i64> {
        let last = self.last_end(slice_end.saturating_sub(self.slide));
        let mut end = slice_end;
        // At most size / slide steps.
        while end.saturating_sub(1) <= watermark {
            if end >= last {
                return None;
            }
            end = end.saturating_add(self.slide);
        }
        Some(end)
    }
}

/// Properties of window assignment over generated times, sizes, slides and offsets.
#[cfg(test)]
mod properties {
    use super::{Assign, Slicing};
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
        fn the_windows_holding_a_time_are_those_holding_its_slice(
            t in -TIME_MS_MAX..TIME_MS_MAX,
            slide in 1i64..SIZE_MS_MAX,
            slides_per_size in 2i64..=20,
            offset in -SIZE_MS_MAX..SIZE_MS_MAX,
            behind in 0i64..SIZE_MS_MAX,
        ) {
            let size = slide * slides_per_size;
            let assign = Assign::Sliding { size, slide, offset };
            let slicing = Slicing::of(assign).ok_or_else(|| TestCaseError::fail("not sliced"))?;
            let (start, end) = slicing.slice(t);
            prop_assert!(start <= t && t < end && end - start == slide);
            // Every window holding t holds its whole slice; they end at the slice's end, a slide apart.
            let mut expected = windows(assign, t);
            expected.sort_unstable();
            let held: Vec<(i64, i64)> =
                (1..=slides_per_size).map(|k| (end + (k - 1) * slide - size, end + (k - 1) * slide)).collect();
            prop_assert_eq!(&held, &expected);
            prop_assert_eq!(slicing.last_end(start), expected[expected.len() - 1].1);
            // The first window not fired at a watermark is the first of them ending after it.
            let watermark = t - behind;
            let first = expected.iter().map(|w| w.1).find(|&e| e - 1 > watermark);
            prop_assert_eq!(slicing.first_window_after(end, watermark), first);
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
