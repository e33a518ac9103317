//! The examples' sample inputs: deterministic, with records out of order within each job's bound (and, for
//! the sensor readings, a few far later than that). `cargo run -p sluice-examples --bin generate-data`
//! writes them to `examples/data/`.
use serde_json::json;
use sluice_common::splitmix::SplitMix64;

/// Event times start here: 2023-11-14T22:13:20Z.
pub const BASE_MS: i64 = 1_700_000_000_000;

/// A small deterministic generator (SplitMix64), so the files are the same on every machine.
struct Random(SplitMix64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `low..high`.
    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low) as u64) as i64
    }
}

/// Rows sorted by arrival time (event time plus a delay), as JSON lines.
fn by_arrival(mut rows: Vec<(i64, serde_json::Value)>) -> String {
    rows.sort_by_key(|(arrival, _)| *arrival);
    rows.into_iter().map(|(_, row)| row.to_string() + "\n").collect()
}

/// `lines.jsonl`: the lines of `sample.txt`, one every 300 ms, each up to 2 s late.
pub fn lines(sample_text: &str) -> String {
    let mut random = Random(SplitMix64(1));
    let rows = sample_text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let arrival = BASE_MS + i as i64 * 300;
            let ts = arrival - random.range(0, 2_000);
            (arrival, json!({"ts": ts, "line": line}))
        })
        .collect();
    by_arrival(rows)
}

/// `sensors.jsonl`: 5 sensors reading once a second for 3 minutes, up to 1.5 s late; a dozen readings 5–9 s
/// late (within the example's allowed lateness for some of their windows) and a few 45–60 s late (beyond it).
pub fn sensors() -> String {
    let mut random = Random(SplitMix64(2));
    let mut rows = Vec::new();
    for second in 0..180i64 {
        for sensor in 1..=5 {
            let ts = BASE_MS + second * 1_000 + random.range(0, 1_000);
            // Hundredths as an integer, divided once: the JSON shows two decimals, not binary noise.
            let temperature = (1_500 + sensor * 100 + random.range(0, 1_000)) as f64 / 100.0;
            let delay = match (second * 5 + sensor) % 97 {
                0 if second > 60 => random.range(45_000, 60_000),
                13 | 42 => random.range(5_000, 9_000),
                _ => random.range(0, 1_500),
            };
            rows.push((
                ts + delay,
                json!({"sensor": format!("sensor-{sensor}"), "ts": ts, "temperature": temperature}),
            ));
        }
    }
    by_arrival(rows)
}

/// `events.jsonl`: 600 events two a second; about one in six is delivered again 1–50 s later (a repeat
/// within the 60 s TTL) and one in twenty 70–120 s later (a new delivery after the TTL).
pub fn events() -> String {
    let mut random = Random(SplitMix64(3));
    let mut rows = Vec::new();
    for i in 0..600i64 {
        let ts = BASE_MS + i * 500;
        let id = format!("evt-{i:04}");
        let amount = random.range(1, 500);
        let mut deliver = |ts: i64, random: &mut Random| {
            let arrival = ts + random.range(0, 3_000);
            rows.push((arrival, json!({"event_id": id, "ts": ts, "amount": amount})));
        };
        deliver(ts, &mut random);
        match random.range(0, 20) {
            0..=2 => deliver(ts + random.range(1_000, 50_000), &mut random),
            3 => deliver(ts + random.range(70_000, 120_000), &mut random),
            _ => {}
        }
    }
    by_arrival(rows)
}

/// `page_views.jsonl`: 12 users, each with 3–5 visits of 2–10 page views 1–20 s apart; visits are 40–300 s
/// apart. Views arrive up to 3 s late.
pub fn page_views() -> String {
    const PAGES: &[&str] = &["/", "/search", "/product", "/cart", "/checkout", "/help"];
    let mut random = Random(SplitMix64(4));
    let mut rows = Vec::new();
    for user in 1..=12 {
        let mut ts = BASE_MS + random.range(0, 60_000);
        for _visit in 0..random.range(3, 6) {
            for _view in 0..random.range(2, 11) {
                let page = PAGES[random.range(0, PAGES.len() as i64) as usize];
                let arrival = ts + random.range(0, 3_000);
                rows.push((arrival, json!({"user": format!("user-{user:02}"), "ts": ts, "page": page})));
                ts += random.range(1_000, 20_000);
            }
            ts += random.range(40_000, 300_000);
        }
    }
    by_arrival(rows)
}

/// `orders.jsonl` and `payments.jsonl`: 300 orders one a second; most are paid 1–25 s later, some 40–60 s
/// later (outside the example's 30 s bound), the rest never. Both arrive up to 3 s late.
pub fn orders_and_payments() -> (String, String) {
    const METHODS: &[&str] = &["card", "transfer", "wallet"];
    let mut random = Random(SplitMix64(5));
    let (mut orders, mut payments) = (Vec::new(), Vec::new());
    for i in 0..300i64 {
        let ts = BASE_MS + i * 1_000;
        let id = format!("order-{i:03}");
        orders.push((ts + random.range(0, 3_000), json!({"order_id": id, "ts": ts, "amount": random.range(5, 300)})));
        let paid_after = match random.range(0, 20) {
            0 => None,
            1 => Some(random.range(40_000, 60_000)),
            _ => Some(random.range(1_000, 25_000)),
        };
        if let Some(delay) = paid_after {
            let paid_at = ts + delay;
            let method = METHODS[random.range(0, METHODS.len() as i64) as usize];
            payments.push((
                paid_at + random.range(0, 3_000),
                json!({"order_id": id, "paid_at": paid_at, "method": method}),
            ));
        }
    }
    (by_arrival(orders), by_arrival(payments))
}

/// `clicks.jsonl` and `profiles.jsonl`: 20 users clicking over 10 minutes, and each user's profile tier
/// changing 1–3 times (some users' first profile comes after their first clicks). Both up to 3 s late.
pub fn clicks_and_profiles() -> (String, String) {
    const TIERS: &[&str] = &["free", "silver", "gold"];
    const PAGES: &[&str] = &["/", "/search", "/product", "/cart"];
    let mut random = Random(SplitMix64(6));
    let (mut clicks, mut profiles) = (Vec::new(), Vec::new());
    for user in 1..=20 {
        let name = format!("user-{user:02}");
        let mut updated_at = BASE_MS + random.range(0, 120_000);
        for _ in 0..random.range(1, 4) {
            let tier = TIERS[random.range(0, TIERS.len() as i64) as usize];
            profiles.push((
                updated_at + random.range(0, 3_000),
                json!({"user": name, "updated_at": updated_at, "tier": tier}),
            ));
            updated_at += random.range(60_000, 240_000);
        }
        let mut ts = BASE_MS + random.range(0, 30_000);
        while ts < BASE_MS + 600_000 {
            let page = PAGES[random.range(0, PAGES.len() as i64) as usize];
            clicks.push((ts + random.range(0, 3_000), json!({"user": name, "ts": ts, "page": page})));
            ts += random.range(5_000, 60_000);
        }
    }
    (by_arrival(clicks), by_arrival(profiles))
}

/// `transactions.jsonl`: 12 accounts paying every 5–40 s for 10 minutes, up to 3 s late. About one payment
/// in ten is small (under 1.00); after a small one, the next is large (500–2000) half of the time, sometimes
/// sooner and sometimes later than a minute.
pub fn transactions() -> String {
    let mut random = Random(SplitMix64(7));
    let mut rows = Vec::new();
    for account in 1..=12 {
        let name = format!("acct-{account:02}");
        let mut ts = BASE_MS + random.range(0, 20_000);
        let mut after_small = false;
        while ts < BASE_MS + 600_000 {
            // Cents as an integer, divided once: the JSON shows two decimals, not binary noise.
            let cents = if after_small && random.range(0, 2) == 0 {
                random.range(50_000, 200_000)
            } else if random.range(0, 10) == 0 {
                random.range(1, 100)
            } else {
                random.range(500, 30_000)
            };
            after_small = cents < 100;
            let arrival = ts + random.range(0, 3_000);
            rows.push((arrival, json!({"account": name, "ts": ts, "amount": cents as f64 / 100.0})));
            ts += if after_small { random.range(10_000, 90_000) } else { random.range(5_000, 40_000) };
        }
    }
    by_arrival(rows)
}
