//! Nexmark queries as jobs (`examples/jobs/nexmark/qN.json`), each on the `nexmark` source with the
//! benchmark's defaults (10 M events a second of event time, emitted as fast as possible) and a blackhole
//! sink. The functions take the event count, the parallelism and the sink, so tests run the same queries on
//! a small input into file sinks. Column names are the generator's (`bid.auction`, `bid.date_time`, ...);
//! the query texts they follow are Flink's (`nexmark.md` §2).
use sluice_common::job::builder::{avg, count, descending, max, session, sliding, tumbling, JobBuilder, Stream};
use sluice_common::proto::{
    vertex::Operator, BlackholeSink, EventTime, JobGraph, NexmarkSource, NexmarkTable, TimeDomain, TopN, Window,
};

/// Where a query's results go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Discarded (what the benchmark measures).
    Blackhole,
    /// Newline-JSON part files under this directory (what tests compare).
    Files(String),
}

/// The watermark of the Nexmark source: Flink's `dateTime - 4 s`.
const WATERMARK_DELAY_MS: u64 = 4_000;

/// A `nexmark` source of `table`, `events` events in all (None: unbounded), with event time on `date_time`.
fn source(job: &JobBuilder, id: &str, table: NexmarkTable, events: Option<u64>, parallelism: u32) -> Stream {
    let spec = NexmarkSource { table: table as i32, events, ..Default::default() };
    job.source(id, parallelism, Operator::Nexmark(spec)).with_event_time(EventTime {
        column: "date_time".into(),
        watermarks: Some(sluice_common::proto::event_time::Watermarks::BoundedOutOfOrdernessMs(WATERMARK_DELAY_MS)),
        ..Default::default()
    })
}

fn sink(stream: Stream, sink: &Sink) -> Stream {
    match sink {
        Sink::Blackhole => stream.then("sink", Operator::BlackholeSink(BlackholeSink::default())),
        Sink::Files(dir) => stream.file_sink("sink", dir),
    }
}

/// q0, pass-through: every bid's columns, unchanged (measures the source, serialization and the sink).
pub fn q0(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q0");
    let bids = source(&job, "bid", NexmarkTable::Bid, events, parallelism).select(
        "q0",
        &[
            ("auction", "auction"),
            ("bidder", "bidder"),
            ("price", "price"),
            ("date_time", "date_time"),
            ("extra", "extra"),
        ],
    );
    sink(bids, out);
    job.build()
}

/// q1, currency conversion: every bid with its price in euros (0.908 per dollar).
pub fn q1(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q1");
    let bids = source(&job, "bid", NexmarkTable::Bid, events, parallelism).select(
        "q1",
        &[
            ("auction", "auction"),
            ("bidder", "bidder"),
            ("price", "CAST(price AS DOUBLE) * 0.908"),
            ("date_time", "date_time"),
            ("extra", "extra"),
        ],
    );
    sink(bids, out);
    job.build()
}

/// q2, selection: the auction and price of bids on every 123rd auction.
pub fn q2(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q2");
    let bids = source(&job, "bid", NexmarkTable::Bid, events, parallelism)
        .filter("selection", "auction % 123 = 0")
        .select("q2", &[("auction", "auction"), ("price", "price")]);
    sink(bids, out);
    job.build()
}

/// q3, local item suggestion: the auctions in category 10 of sellers in Oregon, Idaho or California, with the
/// seller's name, city and state: a regular join of auctions and persons on the seller (both sides stay in
/// state for good, as in Flink without a state TTL).
pub fn q3(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q3");
    let auctions = source(&job, "auction", NexmarkTable::Auction, events, parallelism)
        .filter("category_10", "category = 10")
        .select("auctions", &[("auction_id", "id"), ("seller", "seller")]);
    let sellers = source(&job, "person", NexmarkTable::Person, events, parallelism)
        .filter("local", "state = 'OR' OR state = 'ID' OR state = 'CA'")
        .select("sellers", &[("id", "id"), ("name", "name"), ("city", "city"), ("state", "state")]);
    let local_items = auctions
        .join("local_items", sellers, (&["seller"], &["id"]))
        .select("q3", &[("name", "name"), ("city", "city"), ("state", "state"), ("id", "auction_id")]);
    sink(local_items, out);
    job.build()
}

/// q4, average price per category: the winning bid of every auction (its highest among the bids made while
/// it was open, `date_time BETWEEN` its opening and `expires`), averaged per category. A regular join pairs
/// each auction with its bids; an auction's winning bid changes as higher bids come, so the maximum per
/// auction is a changelog (`emit: CHANGELOG`), and the average per category takes each superseded maximum
/// back out. The output is a changelog too: the current average of a category is its last row not taken back
/// (Flink's q4 emits the same retract stream).
pub fn q4(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q4");
    let auctions = source(&job, "auction", NexmarkTable::Auction, events, parallelism)
        .select("auctions", &[("id", "id"), ("category", "category"), ("opened", "date_time"), ("expires", "expires")]);
    let bids = source(&job, "bid", NexmarkTable::Bid, events, parallelism)
        .select("bids", &[("auction", "auction"), ("price", "price"), ("bid_time", "date_time")]);
    let winning_bids = auctions
        .join("auction_bids", bids, (&["id"], &["auction"]))
        .filter("while_open", "bid_time BETWEEN opened AND expires")
        .key_by(&["id", "category"])
        .aggregate_changelog("winning_bids", &[max("final", "price")]);
    let averages = winning_bids.key_by(&["category"]).aggregate_changelog("q4", &[avg("avg_final", "final")]);
    sink(averages, out);
    job.build()
}

/// The size of q7's and q8's tumbling windows.
const WINDOW_MS: u64 = 10_000;

/// q5's sliding windows: 10 s, every 2 s.
const HOT_WINDOW_MS: u64 = 10_000;
const HOT_SLIDE_MS: u64 = 2_000;

/// q5, hot items: per sliding window (10 s every 2 s), the auctions with the most bids. Bids are counted per
/// auction and window; the counts of each window (their event time is the window's end) fall into one 2 s
/// tumbling window keyed by that end, whose Top-N keeps the highest count with its ties (Flink's text keeps
/// every auction at the maximum).
pub fn q5(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q5");
    let hot = source(&job, "bid", NexmarkTable::Bid, events, parallelism)
        .select("auctions", &[("auction", "auction"), ("date_time", "date_time")])
        .key_by(&["auction"])
        .window("bids_per_auction", sliding(HOT_WINDOW_MS, HOT_SLIDE_MS), &[count("num")])
        // The window's end is the count's event time, renamed so the next window's bounds do not clash.
        .select("counts", &[("auction", "auction"), ("num", "num"), ("ends", "window_end")])
        .key_by(&["ends"])
        .top_n("hottest", tumbling(HOT_SLIDE_MS), highest("num"))
        .select("q5", &[("auction", "auction"), ("num", "num")]);
    sink(hot, out);
    job.build()
}

/// The records with the largest `column`, ties all kept (SQL's `RANK() = 1`, or `= max(...)`).
fn highest(column: &str) -> TopN {
    TopN { order_by: vec![descending(column)], n: 1, with_ties: true, rank_column: String::new() }
}

/// q7, highest bid: per 10 s tumbling window, the bids whose price is the window's highest. One key (the
/// whole stream) and a Top-N with ties per window. Flink's text joins the window's maximum back to the bids
/// with `date_time BETWEEN window_end - 10 s AND window_end`, which also takes a bid at exactly the next
/// window's first millisecond when it ties the maximum; this keeps each window's own bids, as Nexmark's
/// description of the query has it.
pub fn q7(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q7");
    let columns = [
        ("all_bids", "0"),
        ("auction", "auction"),
        ("price", "price"),
        ("bidder", "bidder"),
        ("date_time", "date_time"),
        ("extra", "extra"),
    ];
    let highest_bids = source(&job, "bid", NexmarkTable::Bid, events, parallelism)
        .select("priced", &columns)
        .key_by(&["all_bids"])
        .top_n("highest", tumbling(WINDOW_MS), highest("price"))
        .set_parallelism(1)
        .select(
            "q7",
            &[
                ("auction", "auction"),
                ("price", "price"),
                ("bidder", "bidder"),
                ("date_time", "date_time"),
                ("extra", "extra"),
            ],
        );
    sink(highest_bids, out);
    job.build()
}

/// q8, new users: people who registered and opened an auction in the same 10 s tumbling window: the
/// distinct (id, name) of persons per window, joined with the distinct sellers of auctions per window on id
/// and window (an interval join of the two windows' results, whose time is their window's end, over [0, 0]).
pub fn q8(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q8");
    let persons = source(&job, "person", NexmarkTable::Person, events, parallelism)
        .select("people", &[("id", "id"), ("name", "name"), ("date_time", "date_time")])
        .key_by(&["id", "name"])
        .window("new_people", tumbling(WINDOW_MS), &[count("registrations")]);
    let sellers = source(&job, "auction", NexmarkTable::Auction, events, parallelism)
        .select("sellers", &[("seller", "seller"), ("date_time", "date_time")])
        .key_by(&["seller"])
        .window("active_sellers", tumbling(WINDOW_MS), &[count("auctions")])
        // One window's bounds suffice in the join's output (and its end stays the event time).
        .select("sellers_per_window", &[("seller", "seller"), ("sold_in", "window_end")]);
    let new_users = persons
        .interval_join("new_users", sellers, (&["id"], &["seller"]), 0, 0)
        .select("q8", &[("id", "id"), ("name", "name"), ("starttime", "window_start")]);
    sink(new_users, out);
    job.build()
}

/// q11, user sessions: bids per bidder per session (10 s of inactivity ends one).
pub fn q11(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q11");
    let sessions = source(&job, "bid", NexmarkTable::Bid, events, parallelism)
        .select("bidders", &[("bidder", "bidder"), ("date_time", "date_time")])
        .key_by(&["bidder"])
        .window("sessions", session(10_000), &[count("bid_count")]);
    sink(sessions, out);
    job.build()
}

/// q12, processing-time windows: bids per bidder per 10 s tumbling window of the wall clock (Flink's text
/// windows `PROCTIME()`). Its windows depend on when records arrive, so only their sums can be checked: every
/// bid is counted once, in some window of its bidder (a bounded run fires what its windows hold at the end).
pub fn q12(events: Option<u64>, parallelism: u32, out: &Sink) -> JobGraph {
    let job = JobBuilder::new("nexmark_q12");
    let windows = Window {
        assigner: Some(tumbling(WINDOW_MS)),
        time: TimeDomain::ProcessingTime as i32,
        aggregates: vec![count("bid_count")],
        ..Default::default()
    };
    let counts = source(&job, "bid", NexmarkTable::Bid, events, parallelism)
        .select("bidders", &[("bidder", "bidder")])
        .key_by(&["bidder"])
        .window_with("bids_per_window", windows);
    sink(counts, out);
    job.build()
}

/// Every query shipped as a job file: name (under `examples/jobs/`) and graph, unbounded into a blackhole.
pub fn all() -> Vec<(&'static str, JobGraph)> {
    let (events, parallelism) = (None, 2);
    vec![
        ("nexmark/q0", q0(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q1", q1(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q2", q2(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q3", q3(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q4", q4(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q5", q5(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q7", q7(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q8", q8(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q11", q11(events, parallelism, &Sink::Blackhole)),
        ("nexmark/q12", q12(events, parallelism, &Sink::Blackhole)),
    ]
}
