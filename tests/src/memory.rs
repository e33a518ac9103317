//! The memory of a process as the kernel sees it (`/proc/<pid>/status`), to check that it stays bounded.
use anyhow::Context as _;

/// The resident set size of process `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS").map(|kib| kib * 1024)
}

/// The peak resident set size of process `pid` in bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM").map(|kib| kib * 1024)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .ok_or_else(|| anyhow::anyhow!("{path} has no {field} line"))?;
    // "   123456 kB"
    let number = line.trim().trim_end_matches("kB").trim();
    number.parse().with_context(|| format!("{path}: {field} is not a number of kB: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_set_no_larger_than_its_peak() {
        let pid = std::process::id();
        let rss = rss_bytes(pid).unwrap_or(0);
        let peak = peak_rss_bytes(pid).unwrap_or(0);
        assert!(rss > 0, "VmRSS of this process should be readable");
        assert!(rss <= peak, "VmRSS {rss} > VmHWM {peak}");
    }
}
