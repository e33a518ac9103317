//! The Nexmark benchmark's event generator (`docs/nexmark.md`), shared by the `nexmark` source and by tests
//! that check queries against a naive evaluation of the same events.
//!
//! It follows the Java reference (Flink's nexmark, Beam) for the event mix, the id rules, hot keys, prices,
//! strings, auction lengths and timestamps, with the choices `../shared/nexmark.md` §1.8 recommends for
//! reproducibility:
//! - every field of event `i` is drawn from a generator seeded with `i` alone, so event `i` is the same
//!   whatever the parallelism, the batch boundaries or the restarts; subtask `k` of `p` emits the 50-event
//!   cycles `k, k+p, ...`;
//! - one global timeline: event `i` happens at `base + i · 10⁶ / rate` µs (f64, never f32);
//! - event ids start at 0 (Beam's), so the first event is person 1000, and the bidder id gets
//!   `FIRST_PERSON_ID` once (Flink adds it twice: nexmark/nexmark#30);
//! - the hot channels' URLs and the long string `extra` is cut from are built from fixed seeds.
//!
//! Word lists and constants are the reference's, in its spelling (`"OR"`, `"Phoenix"`).
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::splitmix::SplitMix64;

/// Events in one cycle of the mix: 1 person, 3 auctions, 46 bids.
pub const PROPORTION_DENOMINATOR: u64 = 50;
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
/// The id of the first person (ids are base-0 counters plus this).
pub const FIRST_PERSON_ID: i64 = 1000;
/// The id of the first auction.
pub const FIRST_AUCTION_ID: i64 = 1000;
/// The first of the five auction categories.
pub const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: u64 = 5;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
const HOT_SELLER_RATIO: u64 = 100;
/// One in this many bids goes to a random auction (the others to the hot one).
const HOT_AUCTIONS_ONE_IN: u64 = 2;
const HOT_BIDDERS_ONE_IN: u64 = 4;
const HOT_SELLERS_ONE_IN: u64 = 4;
const HOT_CHANNELS_ONE_IN: u64 = 2;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const CHANNELS: u64 = 10_000;
/// Average bytes of a record; `extra` pads to about this.
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
/// The length of the string `extra` is cut from (Java's `nextExactString`).
const EXTRA_SOURCE_BYTES: usize = 1 << 20;

/// The default event-time rate (Flink's benchmark setting), events per second.
pub const EVENT_RATE_DEFAULT: f64 = 10_000_000.0;
/// The default time of event 0: 2015-07-15T00:00:00Z, Beam's base time.
pub const BASE_TIME_MS_DEFAULT: i64 = 1_436_918_400_000;

const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// The kind of event `id` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the reference's three tables
pub enum Kind {
    Person,
    Auction,
    Bid,
}

impl Kind {
    /// The kind of the event with id `id` (a fixed repeating pattern, not random).
    pub fn of(id: u64) -> Kind {
        match id % PROPORTION_DENOMINATOR {
            offset if offset < PERSON_PROPORTION => Kind::Person,
            offset if offset < PERSON_PROPORTION + AUCTION_PROPORTION => Kind::Auction,
            _ => Kind::Bid,
        }
    }
}

/// A person event; the fields are the reference's columns (`nexmark.md` §1.1), in snake_case, times in ms since
/// the epoch, prices in cents.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: &'static str,
    pub state: &'static str,
    pub date_time: i64,
    pub extra: String,
}

/// A auction event; the fields are the reference's columns (`nexmark.md` §1.1), in snake_case, times in ms since
/// the epoch, prices in cents.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: String,
}

/// A bid event; the fields are the reference's columns (`nexmark.md` §1.1), in snake_case, times in ms since
/// the epoch, prices in cents.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: String,
    pub url: String,
    pub date_time: i64,
    pub extra: String,
}

/// One generated event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

/// The settings that shape the event sequence (not which table a source emits or how fast).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeline {
    /// Events per second of event time.
    pub event_rate: f64,
    /// When event 0 happens, ms since the epoch.
    pub base_time_ms: i64,
    /// Event numbers are shuffled within groups of this many (1: in order).
    pub out_of_order_group: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline { event_rate: EVENT_RATE_DEFAULT, base_time_ms: BASE_TIME_MS_DEFAULT, out_of_order_group: 1 }
    }
}

impl Timeline {
    /// The id of the `n`-th event generated (its place in the sequence, after the out-of-order shuffle: within
    /// each group of `g`, number `k` becomes `k · 953 mod g`, a fixed permutation when g is not a multiple of
    /// 953).
    pub fn event_id(&self, n: u64) -> u64 {
        let g = self.out_of_order_group.max(1);
        if g == 1 {
            return n;
        }
        let base = n - n % g;
        base + ((n % g) * 953) % g
    }

    /// When event `id` happens, ms since the epoch.
    pub fn timestamp_ms(&self, id: u64) -> i64 {
        let micros = (id as f64 * 1e6 / self.event_rate).floor();
        self.base_time_ms.saturating_add((micros / 1000.0).floor() as i64)
    }

    /// The event with id `id`.
    pub fn event(&self, id: u64) -> Event {
        let mut rng = Rng::for_event(id);
        let time = self.timestamp_ms(id);
        match Kind::of(id) {
            Kind::Person => Event::Person(person(id, time, &mut rng)),
            Kind::Auction => Event::Auction(self.auction(id, time, &mut rng)),
            Kind::Bid => Event::Bid(bid(id, time, &mut rng)),
        }
    }

    fn auction(&self, id: u64, time: i64, rng: &mut Rng) -> Auction {
        let item_name = rng.string(20);
        let description = rng.string(100);
        let initial_bid = rng.price();
        let reserve = initial_bid + rng.price();
        // An auction lasts up to twice the event time 1,666 events take (100 auctions in flight).
        let horizon_events = NUM_IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let horizon_ms = (self.timestamp_ms(id + horizon_events) - time).max(0) as u64;
        let expires = time + 1 + rng.below((horizon_ms * 2).max(1)) as i64;
        let last_person = last_person(id);
        let seller = if rng.below(HOT_SELLERS_ONE_IN) > 0 {
            (last_person / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            random_person(last_person, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
        let size = 8 + item_name.len() + description.len() + 8 * 5;
        Auction {
            id: FIRST_AUCTION_ID + last_auction(id) as i64,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: time,
            expires,
            seller: FIRST_PERSON_ID + seller as i64,
            category,
            extra: rng.extra(size, AVG_AUCTION_BYTES),
        }
    }
}

fn person(id: u64, time: i64, rng: &mut Rng) -> Person {
    let name = format!("{} {}", rng.pick(&FIRST_NAMES), rng.pick(&LAST_NAMES));
    let email_address = format!("{}@{}.com", rng.string(7), rng.string(5));
    let card: Vec<String> = (0..4).map(|_| format!("{:04}", rng.below(10_000))).collect();
    let credit_card = card.join(" ");
    let city = rng.pick(&US_CITIES);
    let state = rng.pick(&US_STATES);
    let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
    Person {
        id: FIRST_PERSON_ID + last_person(id) as i64,
        name,
        email_address,
        credit_card,
        city,
        state,
        date_time: time,
        extra: rng.extra(size, AVG_PERSON_BYTES),
    }
}

fn bid(id: u64, time: i64, rng: &mut Rng) -> Bid {
    let last_auction = last_auction(id);
    let auction = if rng.below(HOT_AUCTIONS_ONE_IN) > 0 {
        (last_auction / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
    } else {
        let min = last_auction.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
        min + rng.below(last_auction - min + 1 + AUCTION_ID_LEAD)
    };
    let last_person = last_person(id);
    let bidder = if rng.below(HOT_BIDDERS_ONE_IN) > 0 {
        (last_person / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
    } else {
        random_person(last_person, rng)
    };
    let price = rng.price();
    let (channel, url) = if rng.below(HOT_CHANNELS_ONE_IN) > 0 {
        let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
        (HOT_CHANNELS[i].to_string(), channel_urls().hot[i].clone())
    } else {
        let i = rng.below(CHANNELS) as usize;
        (format!("channel-{i}"), channel_urls().numbered[i].clone())
    };
    Bid {
        auction: FIRST_AUCTION_ID + auction as i64,
        bidder: FIRST_PERSON_ID + bidder as i64,
        price,
        channel,
        url,
        date_time: time,
        extra: rng.extra(32, AVG_BID_BYTES),
    }
}

/// The base-0 id of the newest person at event `id`: the reference's `epoch · persons + min(offset, persons -
/// 1)`, which with one person per cycle (the person comes first) is the cycle's number.
fn last_person(id: u64) -> u64 {
    const _: () = assert!(PERSON_PROPORTION == 1, "last_person assumes one person per cycle");
    id / PROPORTION_DENOMINATOR
}

/// The base-0 id of the newest auction at event `id` (three per cycle of 50).
fn last_auction(id: u64) -> u64 {
    let (epoch, offset) = (id / PROPORTION_DENOMINATOR, id % PROPORTION_DENOMINATOR);
    match offset {
        // A person comes first in a cycle: the newest auction is the last of the previous cycle.
        o if o < PERSON_PROPORTION => (epoch * AUCTION_PROPORTION).saturating_sub(1),
        o if o < PERSON_PROPORTION + AUCTION_PROPORTION => epoch * AUCTION_PROPORTION + (o - PERSON_PROPORTION),
        _ => epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1,
    }
}

/// A random one of the active people (the newest 1,000, plus 10 ids of lead not yet created), base 0.
fn random_person(last_person: u64, rng: &mut Rng) -> u64 {
    let people = last_person + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below(active + PERSON_ID_LEAD)
}

/// The URLs of the channels: fixed, built once from fixed seeds.
struct ChannelUrls {
    hot: Vec<String>,
    numbered: Vec<String>,
}

fn channel_urls() -> &'static ChannelUrls {
    static URLS: OnceLock<ChannelUrls> = OnceLock::new();
    URLS.get_or_init(|| {
        let hot = (0..HOT_CHANNELS.len() as u64).map(|i| base_url(&mut Rng::new(0x4807_0000 + i))).collect();
        let numbered = (0..CHANNELS)
            .map(|i| {
                let mut rng = Rng::new(0x4348_0000_0000 + i);
                let url = base_url(&mut rng);
                // 9 in 10 URLs carry the channel's id (the bits of i reversed, as Java's Integer.reverse).
                if rng.below(10) > 0 {
                    format!("{url}&channel_id={}", (i as i32).reverse_bits().unsigned_abs())
                } else {
                    url
                }
            })
            .collect();
        ChannelUrls { hot, numbered }
    })
}

fn base_url(rng: &mut Rng) -> String {
    let mut part = || rng.string_with(5, '_');
    format!("https://www.nexmark.com/{}/{}/{}/item.htm?query=1", part(), part(), part())
}

/// The long random lowercase string `extra` is cut from, built once from a fixed seed.
fn extra_source() -> &'static Arc<str> {
    static SOURCE: OnceLock<Arc<str>> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let mut rng = Rng::new(0x45_5854_5241);
        let text: String = (0..EXTRA_SOURCE_BYTES).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
        Arc::from(text)
    })
}

/// SplitMix64 seeded with an event id: every field of an event is drawn from its own stream.
pub struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(SplitMix64(seed ^ 0x6E65_786D_6172_6B21));
        rng.next();
        rng
    }

    /// The stream event `id`'s fields are drawn from.
    pub fn for_event(id: u64) -> Self {
        Rng::new(id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0; 0 gives 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: no division, bias below 2^-64 · n.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Java's `nextPrice`: log-uniform over [100, 10^8) cents.
    fn price(&mut self) -> i64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as i64
    }

    /// Java's `nextString(max)`: 3 to max-1 characters, each a space one time in 13, else a-z; trimmed.
    fn string(&mut self, max: u64) -> String {
        self.string_with(max, ' ').trim().to_string()
    }

    fn string_with(&mut self, max: u64, special: char) -> String {
        let length = 3 + self.below(max.saturating_sub(3).max(1));
        (0..length).map(|_| if self.below(13) == 0 { special } else { (b'a' + self.below(26) as u8) as char }).collect()
    }

    /// Java's `nextExtra`: padding to about `average` bytes in all, ±20 %.
    fn extra(&mut self, size: usize, average: usize) -> String {
        if size > average {
            return String::new();
        }
        let target = average - size;
        let delta = ((target as f64) * 0.2).round() as u64;
        let length = (target as u64 - delta + self.below(2 * delta)) as usize;
        let source = extra_source();
        let start = self.below((source.len() - length) as u64) as usize;
        source[start..start + length].to_string()
    }
}

/// The columns of each table, as the `nexmark` source emits them (snake_case, as RisingWave and Arroyo name
/// them; times are TIMESTAMP(ms), prices in cents).
pub fn schema(kind: Kind) -> SchemaRef {
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let time = |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), false);
    let fields = match kind {
        Kind::Person => vec![
            int("id"),
            text("name"),
            text("email_address"),
            text("credit_card"),
            text("city"),
            text("state"),
            time("date_time"),
            text("extra"),
        ],
        Kind::Auction => vec![
            int("id"),
            text("item_name"),
            text("description"),
            int("initial_bid"),
            int("reserve"),
            time("date_time"),
            time("expires"),
            int("seller"),
            int("category"),
            text("extra"),
        ],
        Kind::Bid => vec![
            int("auction"),
            int("bidder"),
            int("price"),
            text("channel"),
            text("url"),
            time("date_time"),
            text("extra"),
        ],
    };
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: u64) -> Vec<Event> {
        let timeline = Timeline::default();
        (0..n).map(|i| timeline.event(timeline.event_id(i))).collect()
    }

    /// Goal: the mix, the ids and the timeline follow the reference. Method: the first 100,000 events.
    #[test]
    fn the_mix_ids_and_times_follow_the_reference() {
        let all = events(100_000);
        let persons = all.iter().filter(|e| matches!(e, Event::Person(_))).count();
        let auctions = all.iter().filter(|e| matches!(e, Event::Auction(_))).count();
        assert_eq!((persons, auctions, all.len() - persons - auctions), (2_000, 6_000, 92_000));
        let Event::Person(first) = &all[0] else { panic!("event 0 is a person") };
        assert_eq!((first.id, first.date_time), (1000, BASE_TIME_MS_DEFAULT));
        let Event::Auction(auction) = &all[3] else { panic!("event 3 is an auction") };
        assert_eq!(auction.id, 1002);
        let person_ids: Vec<i64> =
            all.iter().filter_map(|e| if let Event::Person(p) = e { Some(p.id) } else { None }).collect();
        assert!(person_ids.windows(2).all(|w| w[1] == w[0] + 1), "person ids are dense");
        // 10 M events a second: event 10,000,000 is one second after event 0.
        assert_eq!(Timeline::default().timestamp_ms(10_000_000), BASE_TIME_MS_DEFAULT + 1000);
        let hot = all
            .iter()
            .filter_map(|e| if let Event::Bid(b) = e { Some(b) } else { None })
            .filter(|b| (b.auction - FIRST_AUCTION_ID) % 100 == 0)
            .count();
        assert!(hot > 92_000 / 2, "half the bids go to a hot auction: {hot}");
    }

    /// Goal: values are as the reference draws them. Method: ranges and shares over 100,000 events.
    #[test]
    fn values_have_the_reference_ranges() {
        for event in events(100_000) {
            match event {
                Event::Bid(b) => {
                    assert!((100..100_000_000).contains(&b.price), "{}", b.price);
                    assert!((54..=81).contains(&b.extra.len()), "{}", b.extra.len());
                    assert!(b.url.starts_with("https://www.nexmark.com/"), "{}", b.url);
                }
                Event::Auction(a) => {
                    assert!((10..15).contains(&a.category));
                    assert!(a.reserve > a.initial_bid && a.expires > a.date_time);
                    assert!(a.item_name.len() <= 19 && a.description.len() <= 99);
                }
                Event::Person(p) => {
                    assert!(US_STATES.contains(&p.state) && US_CITIES.contains(&p.city));
                    assert_eq!(p.credit_card.len(), 19);
                }
            }
        }
    }

    /// Goal: out-of-order groups permute ids within a group and lose none. Method: g = 50 over 1,000 numbers.
    #[test]
    fn out_of_order_groups_are_permutations() {
        let timeline = Timeline { out_of_order_group: 50, ..Timeline::default() };
        let mut ids: Vec<u64> = (0..1000).map(|n| timeline.event_id(n)).collect();
        assert_ne!(ids, (0..1000).collect::<Vec<_>>(), "shuffled");
        assert!(ids.chunks(50).enumerate().all(|(g, c)| c.iter().all(|&id| id / 50 == g as u64)), "within groups");
        ids.sort_unstable();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>(), "none lost");
    }

    /// Goal: an event is a pure function of its id. Method: one id generated twice, apart.
    #[test]
    fn an_event_is_a_function_of_its_id() {
        let timeline = Timeline::default();
        assert_eq!(timeline.event(12_345), timeline.event(12_345));
        assert_ne!(timeline.event(12_345), timeline.event(12_346));
    }
}
