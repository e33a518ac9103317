//! `nexmark`: the Nexmark benchmark's generator as a source of one of its three tables (`crate::nexmark`).
use datafusion::arrow::datatypes::SchemaRef;

use super::schema::check_batch_size;
use super::{OperatorSpec, Role, SchemaInput};
use crate::nexmark::{self, Kind};
use crate::proto::{self, NexmarkTable};

/// The largest out-of-order group: the reference's permutation (`k · 953 mod g`) is one only when `g` is not
/// a multiple of 953, and groups beyond this would hold events minutes of event time apart.
pub const NEXMARK_OUT_OF_ORDER_GROUP_MAX: u32 = 900;

/// The kind of event a `nexmark` source emits, None when its table is unspecified.
pub fn nexmark_kind(spec: &proto::NexmarkSource) -> Option<Kind> {
    match spec.table() {
        NexmarkTable::Bid => Some(Kind::Bid),
        NexmarkTable::Auction => Some(Kind::Auction),
        NexmarkTable::Person => Some(Kind::Person),
        NexmarkTable::Unspecified => None,
    }
}

/// The timeline of a `nexmark` source's events (its defaults filled in).
pub fn nexmark_timeline(spec: &proto::NexmarkSource) -> nexmark::Timeline {
    let default = nexmark::Timeline::default();
    nexmark::Timeline {
        event_rate: if spec.event_rate > 0.0 { spec.event_rate } else { default.event_rate },
        base_time_ms: spec.base_time_ms.unwrap_or(default.base_time_ms),
        out_of_order_group: u64::from(spec.out_of_order_group.unwrap_or(1).max(1)),
    }
}

impl OperatorSpec for proto::NexmarkSource {
    const KIND: &'static str = "nexmark";
    const ROLE: Role = Role::Source;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        self.check_without_input(input.report);
        nexmark_kind(self).map(nexmark::schema)
    }

    fn check_without_input(&self, report: &mut dyn FnMut(String)) {
        check_batch_size(self.batch_size, report);
        if nexmark_kind(self).is_none() {
            report("table must be one of BID, AUCTION, PERSON".into());
        }
        if !(self.event_rate >= 0.0 && self.event_rate.is_finite()) {
            report(format!("event_rate must be a finite number >= 0 (got {})", self.event_rate));
        }
        if !(self.events_per_second >= 0.0 && self.events_per_second.is_finite()) {
            report(format!("events_per_second must be a finite number >= 0 (got {})", self.events_per_second));
        }
        if let Some(group) = self.out_of_order_group {
            if !(1..=NEXMARK_OUT_OF_ORDER_GROUP_MAX).contains(&group) {
                report(format!("out_of_order_group must be in 1..={NEXMARK_OUT_OF_ORDER_GROUP_MAX} (got {group})"));
            }
        }
    }
}
