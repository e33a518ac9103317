//! `nexmark`: one table of the Nexmark generator (`sluice_common::nexmark`) as a source.
//!
//! The one global sequence of event numbers is cut in blocks of [`BLOCK`] (one cycle of the generator's mix:
//! 1 person, 3 auctions, 46 bids); subtask `k` of `p` generates blocks `k, k+p, k+2p, ...` and emits the
//! events of its table (the others are skipped by their number alone: the kind of an event is its id mod 50).
//! Whole cycles, not every p-th event: at a parallelism that divides 50, every p-th event would give one
//! subtask all the persons and the others none. Its position is the next event number it would look at, so a
//! restored source continues exactly where the checkpoint left it, and the output is the same at any
//! parallelism.
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use sluice_common::job::{nexmark_kind, nexmark_timeline, BATCH_SIZE_DEFAULT};
use sluice_common::nexmark::{Event, Kind, Timeline};
use sluice_common::proto::NexmarkSource;

use crate::operator_api::{OperatorError, Source, SourcePoll, SubtaskInfo};

/// The longest a rate-limited generator asks its task to wait at once, so cancellation stays prompt.
const WAIT_MAX: Duration = Duration::from_millis(50);
/// Event numbers per block a subtask takes at a time: one cycle of the generator's mix of kinds.
const BLOCK: u64 = 50;
/// A rate-limited source emits at most this share of a second's events in one batch, so it does not burst.
const THROTTLED_BATCH_SHARE: f64 = 0.1;

pub struct Nexmark {
    kind: Kind,
    timeline: Timeline,
    schema: SchemaRef,
    /// This subtask's index and the parallelism.
    k: u64,
    p: u64,
    /// The next event number this subtask looks at (in one of its blocks: `(next / BLOCK) % p == k`).
    next: u64,
    /// Event numbers below this exist (None: unbounded).
    end: Option<u64>,
    batch_size: usize,
    /// Event numbers (of all kinds, this subtask's) a second of wall-clock time; 0: as fast as possible.
    events_per_second: f64,
    started: Option<Instant>,
    /// Event numbers looked at since the start or the restore (the rate limit's count).
    looked_at: u64,
}

impl Nexmark {
    pub fn new(spec: &NexmarkSource, schema: SchemaRef, subtask: SubtaskInfo) -> Result<Self, OperatorError> {
        let kind = nexmark_kind(spec).ok_or_else(|| OperatorError::configuration("nexmark: table is unspecified"))?;
        let (k, p) = (u64::from(subtask.index), u64::from(subtask.parallelism.max(1)));
        Ok(Self {
            kind,
            timeline: nexmark_timeline(spec),
            schema,
            k,
            p,
            next: k * BLOCK,
            end: spec.events,
            batch_size: spec.batch_size.unwrap_or(BATCH_SIZE_DEFAULT).max(1) as usize,
            events_per_second: spec.events_per_second / p as f64,
            started: None,
            looked_at: 0,
        })
    }

    /// The event number after `n` in this subtask's blocks.
    fn after(&self, n: u64) -> u64 {
        if (n + 1).is_multiple_of(BLOCK) {
            n + 1 + (self.p - 1) * BLOCK
        } else {
            n + 1
        }
    }

    /// Generates rows of this source's table from event numbers `next..` until `rows` rows, `events` event
    /// numbers looked at, or the end.
    fn generate(&mut self, rows: usize, events: u64) -> Result<RecordBatch, OperatorError> {
        let mut table = Table::new(self.kind, rows);
        let (mut emitted, mut looked_at) = (0, 0);
        while emitted < rows && looked_at < events && self.end.is_none_or(|end| self.next < end) {
            let id = self.timeline.event_id(self.next);
            self.next = self.after(self.next);
            looked_at += 1;
            if Kind::of(id) != self.kind {
                continue;
            }
            table.push(self.timeline.event(id));
            emitted += 1;
        }
        self.looked_at += looked_at;
        Ok(RecordBatch::try_new(self.schema.clone(), table.finish())?)
    }
}

impl Source for Nexmark {
    fn poll_next(&mut self) -> Result<SourcePoll, OperatorError> {
        if self.end.is_some_and(|end| self.next >= end) {
            return Ok(SourcePoll::End);
        }
        let mut events = u64::MAX;
        if self.events_per_second > 0.0 {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = Duration::from_secs_f64(self.looked_at as f64 / self.events_per_second);
            if let Some(wait) = due.checked_sub(started.elapsed()).filter(|w| !w.is_zero()) {
                return Ok(SourcePoll::Wait(wait.min(WAIT_MAX)));
            }
            // Counted in events of all kinds, not rows: a person source emits one row in fifty events.
            events = (self.events_per_second * THROTTLED_BATCH_SHARE).ceil().max(1.0) as u64;
        }
        let batch = self.generate(self.batch_size, events)?;
        if batch.num_rows() == 0 {
            // Nothing of this table among the events looked at: the end, or only a throttled batch's worth.
            return Ok(if self.end.is_some_and(|end| self.next >= end) {
                SourcePoll::End
            } else {
                SourcePoll::Wait(Duration::ZERO)
            });
        }
        Ok(SourcePoll::Batch(batch))
    }

    fn position(&mut self, _checkpoint: u64) -> Result<Vec<u8>, OperatorError> {
        Ok(self.next.to_be_bytes().to_vec())
    }

    fn seek(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let next = <[u8; 8]>::try_from(position)
            .map(u64::from_be_bytes)
            .map_err(|_| OperatorError::input(format!("a nexmark position is 8 bytes, not {}", position.len())))?;
        if (next / BLOCK) % self.p != self.k {
            return Err(OperatorError::input(format!(
                "nexmark position {next} is not one of subtask {} of {}'s event numbers (a checkpoint of another \
                 parallelism?)",
                self.k, self.p
            )));
        }
        self.next = next;
        self.looked_at = 0;
        Ok(())
    }
}

/// The columns of one table under construction.
#[allow(clippy::large_enum_variant)] // one per batch, built in place and finished at once
enum Table {
    Person {
        id: Int64Builder,
        name: StringBuilder,
        email: StringBuilder,
        card: StringBuilder,
        city: StringBuilder,
        state: StringBuilder,
        time: TimestampMillisecondBuilder,
        extra: StringBuilder,
    },
    Auction {
        id: Int64Builder,
        item: StringBuilder,
        description: StringBuilder,
        initial_bid: Int64Builder,
        reserve: Int64Builder,
        time: TimestampMillisecondBuilder,
        expires: TimestampMillisecondBuilder,
        seller: Int64Builder,
        category: Int64Builder,
        extra: StringBuilder,
    },
    Bid {
        auction: Int64Builder,
        bidder: Int64Builder,
        price: Int64Builder,
        channel: StringBuilder,
        url: StringBuilder,
        time: TimestampMillisecondBuilder,
        extra: StringBuilder,
    },
}

impl Table {
    fn new(kind: Kind, rows: usize) -> Self {
        let int = || Int64Builder::with_capacity(rows);
        let text = |bytes: usize| StringBuilder::with_capacity(rows, rows * bytes);
        let time = || TimestampMillisecondBuilder::with_capacity(rows);
        match kind {
            Kind::Person => Table::Person {
                id: int(),
                name: text(12),
                email: text(16),
                card: text(19),
                city: text(8),
                state: text(2),
                time: time(),
                extra: text(140),
            },
            Kind::Auction => Table::Auction {
                id: int(),
                item: text(12),
                description: text(52),
                initial_bid: int(),
                reserve: int(),
                time: time(),
                expires: time(),
                seller: int(),
                category: int(),
                extra: text(380),
            },
            Kind::Bid => Table::Bid {
                auction: int(),
                bidder: int(),
                price: int(),
                channel: text(10),
                url: text(60),
                time: time(),
                extra: text(68),
            },
        }
    }

    fn push(&mut self, event: Event) {
        match (self, event) {
            (Table::Person { id, name, email, card, city, state, time, extra }, Event::Person(p)) => {
                id.append_value(p.id);
                name.append_value(&p.name);
                email.append_value(&p.email_address);
                card.append_value(&p.credit_card);
                city.append_value(p.city);
                state.append_value(p.state);
                time.append_value(p.date_time);
                extra.append_value(&p.extra);
            }
            (
                Table::Auction { id, item, description, initial_bid, reserve, time, expires, seller, category, extra },
                Event::Auction(a),
            ) => {
                id.append_value(a.id);
                item.append_value(&a.item_name);
                description.append_value(&a.description);
                initial_bid.append_value(a.initial_bid);
                reserve.append_value(a.reserve);
                time.append_value(a.date_time);
                expires.append_value(a.expires);
                seller.append_value(a.seller);
                category.append_value(a.category);
                extra.append_value(&a.extra);
            }
            (Table::Bid { auction, bidder, price, channel, url, time, extra }, Event::Bid(b)) => {
                auction.append_value(b.auction);
                bidder.append_value(b.bidder);
                price.append_value(b.price);
                channel.append_value(&b.channel);
                url.append_value(&b.url);
                time.append_value(b.date_time);
                extra.append_value(&b.extra);
            }
            // The caller pushes only events of the table's kind.
            _ => {}
        }
    }

    fn finish(self) -> Vec<ArrayRef> {
        match self {
            Table::Person { mut id, mut name, mut email, mut card, mut city, mut state, mut time, mut extra } => vec![
                Arc::new(id.finish()),
                Arc::new(name.finish()),
                Arc::new(email.finish()),
                Arc::new(card.finish()),
                Arc::new(city.finish()),
                Arc::new(state.finish()),
                Arc::new(time.finish()),
                Arc::new(extra.finish()),
            ],
            Table::Auction {
                mut id,
                mut item,
                mut description,
                mut initial_bid,
                mut reserve,
                mut time,
                mut expires,
                mut seller,
                mut category,
                mut extra,
            } => vec![
                Arc::new(id.finish()),
                Arc::new(item.finish()),
                Arc::new(description.finish()),
                Arc::new(initial_bid.finish()),
                Arc::new(reserve.finish()),
                Arc::new(time.finish()),
                Arc::new(expires.finish()),
                Arc::new(seller.finish()),
                Arc::new(category.finish()),
                Arc::new(extra.finish()),
            ],
            Table::Bid { mut auction, mut bidder, mut price, mut channel, mut url, mut time, mut extra } => vec![
                Arc::new(auction.finish()),
                Arc::new(bidder.finish()),
                Arc::new(price.finish()),
                Arc::new(channel.finish()),
                Arc::new(url.finish()),
                Arc::new(time.finish()),
                Arc::new(extra.finish()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use sluice_common::nexmark::schema;
    use sluice_common::proto::NexmarkTable;

    use super::*;

    fn bids(parallelism: u32, events: u64, restart_after: Option<usize>) -> Vec<(i64, i64, i64)> {
        let spec = NexmarkSource {
            table: NexmarkTable::Bid as i32,
            events: Some(events),
            batch_size: Some(100),
            ..Default::default()
        };
        let mut rows = Vec::new();
        for index in 0..parallelism {
            let subtask = SubtaskInfo { index, parallelism };
            let mut source = Nexmark::new(&spec, schema(Kind::Bid), subtask).unwrap_or_else(|e| panic!("{e}"));
            let mut polls = 0;
            loop {
                if restart_after == Some(polls) {
                    // A restart: a new source resumes from the old one's position.
                    let position = source.position(1).unwrap_or_else(|e| panic!("{e}"));
                    source = Nexmark::new(&spec, schema(Kind::Bid), subtask).unwrap_or_else(|e| panic!("{e}"));
                    source.seek(&position).unwrap_or_else(|e| panic!("{e}"));
                }
                polls += 1;
                match source.poll_next() {
                    Ok(SourcePoll::Batch(b)) => {
                        let column = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
                        let (auction, bidder, price) = (column(0), column(1), column(2));
                        rows.extend((0..b.num_rows()).map(|r| (auction.value(r), bidder.value(r), price.value(r))));
                    }
                    Ok(SourcePoll::End) => break,
                    other => panic!("unexpected poll result {:?}", other.map(|_| ())),
                }
            }
        }
        rows.sort_unstable();
        rows
    }

    /// Goal: the same bids at any parallelism and across a restart, and only bids. Method: 10,000 events at
    /// parallelism 1 and 3, and at 3 with each subtask restarted from its position after 2 polls.
    #[test]
    fn the_same_bids_at_any_parallelism_and_after_a_restart() {
        let one = bids(1, 10_000, None);
        assert_eq!(one.len(), 9_200, "46 bids in every 50 events");
        assert_eq!(bids(3, 10_000, None), one);
        assert_eq!(bids(3, 10_000, Some(2)), one);
    }

    /// Goal: a position of another subtask is refused, not misread. Method: subtask 1 of 2 given event 4
    /// (in block 0, subtask 0's), then event 54 (block 1, its own).
    #[test]
    fn a_position_of_another_subtask_is_refused() {
        let spec = NexmarkSource { table: NexmarkTable::Person as i32, ..Default::default() };
        let subtask = SubtaskInfo { index: 1, parallelism: 2 };
        let mut source = Nexmark::new(&spec, schema(Kind::Person), subtask).unwrap_or_else(|e| panic!("{e}"));
        assert!(source.seek(&4u64.to_be_bytes()).is_err());
        assert!(source.seek(&[1, 2]).is_err());
        assert!(source.seek(&54u64.to_be_bytes()).is_ok());
    }

    /// Goal: every subtask of a person source has persons to emit, rate-limited or not (a split of every p-th
    /// event gave subtask 1 of 2 none: persons are the events 0 mod 50). Method: 1,000 events at parallelism 2,
    /// unthrottled and at 1,000 events/s (polls that must wait are retried), counting each subtask's persons.
    #[test]
    fn every_subtask_of_a_person_source_emits_persons() {
        for events_per_second in [0.0, 1_000.0] {
            let spec = NexmarkSource {
                table: NexmarkTable::Person as i32,
                events: Some(1_000),
                events_per_second,
                ..Default::default()
            };
            for index in 0..2 {
                let subtask = SubtaskInfo { index, parallelism: 2 };
                let mut source = Nexmark::new(&spec, schema(Kind::Person), subtask).unwrap_or_else(|e| panic!("{e}"));
                let (mut persons, mut polls) = (0, 0);
                while polls < 100_000 {
                    polls += 1;
                    match source.poll_next() {
                        Ok(SourcePoll::Batch(b)) => persons += b.num_rows(),
                        Ok(SourcePoll::Wait(wait)) => std::thread::sleep(wait),
                        Ok(SourcePoll::End) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(persons, 10, "subtask {index} at {events_per_second} events/s: its 10 cycles' persons");
            }
        }
    }
}
