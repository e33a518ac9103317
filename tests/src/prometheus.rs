//! Reading the Prometheus text exposition format (`GET /metrics`), enough for tests to look up a series.
//!
//! Only sample lines are read (`name{label="value",...} number`); `# HELP` and `# TYPE` lines are skipped.
use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or "" when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Every sample of `text`. A malformed line is an error naming it.
pub fn parse(text: &str) -> anyhow::Result<Vec<Sample>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).ok_or_else(|| anyhow::anyhow!("malformed Prometheus sample line: {line}")))
        .collect()
}

/// The samples of `text` whose name is `name`.
pub fn samples(text: &str, name: &str) -> anyhow::Result<Vec<Sample>> {
    Ok(parse(text)?.into_iter().filter(|s| s.name == name).collect())
}

/// The sum of the series of `name` whose labels include every `(label, value)` of `labels` (0 when none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    let matches = |s: &Sample| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v));
    Ok(samples(text, name)?.iter().filter(|s| matches(s)).map(|s| s.value).sum())
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value; the value is the first field.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// Parses `k="v",k2="v2"}` and returns the labels and the text after the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_string();
        let mut chars = text[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.insert(key, value);
        // Skip the opening quote (1 byte) and the value through its closing quote.
        text = &text[eq + 1 + 1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels_are_read() {
        let text = "# HELP x help\n# TYPE x gauge\nx 3\ny{job=\"a\",task=\"s \\\"q\\\" 0\"} 1.5e3\n";
        let parsed = parse(text).unwrap_or_default();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].name, "x");
        assert_eq!(parsed[0].value, 3.0);
        assert_eq!(parsed[1].label("job"), "a");
        assert_eq!(parsed[1].label("task"), "s \"q\" 0");
        assert_eq!(parsed[1].value, 1500.0);
    }

    #[test]
    fn a_malformed_line_is_an_error() {
        assert!(parse("x{job=\"a\" 3").is_err());
        assert!(parse("x notanumber").is_err());
    }
}
