//! Small pure formatting helpers.

use shared::api::ServiceSummary;

/// CSS class of a deploy log line: `[OK]` green, `[ERROR]` red.
pub fn log_class(line: &str) -> &'static str {
    if line.contains("[ERROR]") {
        "log-error"
    } else if line.contains("[OK]") {
        "log-ok"
    } else {
        "log-info"
    }
}

/// `2024-05-01T12:34:56Z` → `2024-05-01 12:34:56` (UTC, as stored).
pub fn short_time(rfc3339: &str) -> String {
    let t = rfc3339.replacen('T', " ", 1);
    let t = t.split(['.', 'Z', '+']).next().unwrap_or(&t);
    t.to_string()
}

pub fn speedup(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "—".into())
}

/// A time given in milliseconds, in the unit that fits: "12.40 ms",
/// "350 ms", and below a millisecond microseconds ("3.20 µs", "85.0 µs").
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 1.0 {
        format!("{x:.2} ms")
    } else {
        let us = x * 1000.0;
        if us >= 100.0 {
            format!("{us:.0} µs")
        } else if us >= 10.0 {
            format!("{us:.1} µs")
        } else {
            format!("{us:.2} µs")
        }
    }
}

pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1048576.0 {
        format!("{:.1} MiB", n / 1048576.0)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// The services-list filter: case-insensitive substring of name, team,
/// status, processor or level. `needle` is already lowercase and trimmed.
pub fn matches_filter(s: &ServiceSummary, needle: &str) -> bool {
    needle.is_empty()
        || [
            s.name.as_str(),
            s.team.as_str(),
            s.status.as_str(),
            s.processor.as_str(),
            s.optimization_level.as_deref().unwrap_or(""),
        ]
        .iter()
        .any(|f| f.to_lowercase().contains(needle))
}
