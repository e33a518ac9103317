//! Formatting for people: aligned tables, UTC timestamps, durations, counts and byte sizes.
//!
//! Pure functions with no I/O, so they are unit-tested exactly. Timestamps are shown in UTC (the
//! JobManager's clock, the same in every terminal) without pulling in a calendar crate: the civil-date
//! conversion is Howard Hinnant's `civil_from_days`, exact for every date after 1970.
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    /// For numbers.
    Right,
}

/// A table with a header row, printed with columns padded to their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "a row has {} cells for {} columns",
            cells.len(),
            self.headers.len()
        );
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline; trailing spaces trimmed.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.aligns[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    // A clock before 1970 is a broken clock; showing durations from 0 is then the least surprising.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-23 09:13:05` (UTC) for milliseconds since the Unix epoch; `-` for 0 (unknown).
pub fn timestamp(ms: u64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    let seconds = ms / 1000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm, for days >= 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A duration for people: `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// How long a job ran: until its end, or until now while it runs; `-` if it has not started.
pub fn job_duration(start_ms: u64, end_ms: Option<u64>) -> String {
    if start_ms == 0 {
        return "-".to_string();
    }
    duration(end_ms.unwrap_or_else(now_ms).saturating_sub(start_ms))
}

/// A count with thousands separators: `12,345,678`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte size in binary units: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(out, "{value:.1} {}", UNITS[unit]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell_and_right_align_numbers() {
        let mut table = Table::new(&[("ID", Align::Left), ("NAME", Align::Left), ("RECORDS", Align::Right)]);
        table.row(vec!["a".into(), "word_count".into(), "7".into()]);
        table.row(vec!["bbb".into(), "x".into(), "1,234".into()]);
        assert_eq!(
            table.render(),
            "ID   NAME        RECORDS\n\
             a    word_count        7\n\
             bbb  x             1,234\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let table = Table::new(&[("JOB ID", Align::Left), ("STATUS", Align::Left)]);
        assert_eq!(table.render(), "JOB ID  STATUS\n");
    }

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1), "1970-01-01 00:00:00");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00", "a leap day of a year divisible by 400");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(timestamp(4_107_542_399_000), "2100-02-28 23:59:59", "2100 is not a leap year");
        assert_eq!(timestamp(4_107_542_400_000), "2100-03-01 00:00:00");
    }

    #[test]
    fn durations_pick_a_unit_people_read_at_a_glance() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(12_340), "12.3s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(job_duration(0, None), "-");
        assert_eq!(job_duration(1_000, Some(3_500)), "2.5s");
        assert_eq!(job_duration(5_000, Some(1_000)), "0ms", "a clock step backwards shows 0, not a panic");
    }

    #[test]
    fn counts_and_bytes_are_grouped_and_scaled() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(12_345_678), "12,345,678");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB", "the largest unit absorbs the rest");
    }
}
