//! Sizes and durations printed as docker prints them (its `go-units`): `2.14MB` (three significant
//! digits, powers of 1000), `About an hour`, `3 weeks`.

/// docker's `units.HumanSizeWithPrecision(n, 3)` (`images`, `history`): `0B`, `123B`, `2.14MB`.
pub fn human_size(n: u64) -> String {
    human_size_with_precision(n, 3)
}

/// docker's `units.HumanSize` (`system df`, `ps -s`): four significant digits, `1.234GB`.
pub fn human_size4(n: u64) -> String {
    human_size_with_precision(n, 4)
}

/// docker's `units.BytesSize` (`info`'s Total Memory): powers of 1024, four significant digits
/// (`23.44GiB`).
pub fn bytes_size(n: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{}{}", sig(v, 4), UNITS[u])
}

/// Powers of 1000 with `digits` significant digits (Go's `%.*g`).
fn human_size_with_precision(n: u64, digits: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", sig(v, digits), UNITS[u])
}

/// Go's `%.Ng`: N significant digits, trailing zeros dropped.
fn sig(v: f64, digits: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (digits as i32 - 1 - mag).max(0) as usize;
    let mut t = format!("{v:.decimals$}");
    if t.contains('.') {
        t = t.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    t
}

/// docker's `units.HumanDuration`: `Less than a second`, `5 seconds`, `About a minute`, `3 hours`,
/// `2 days`, `3 weeks`, `4 months`, `2 years`.
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    // hours are rounded, as Go's d.Round(time.Hour)
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// Seconds since the epoch now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `N units ago` for a moment in seconds since the epoch (`N/A` when unknown), as docker's `CREATED`.
pub fn ago(then: Option<i64>) -> String {
    match then {
        Some(t) => format!("{} ago", human_duration((now_secs() - t).max(0) as u64)),
        None => "N/A".into(),
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp (`2024-05-01T10:00:00.123Z`, offsets ignored).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    if s.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    Some(crate::store::images::unix_seconds(y, m, d, hh, mm, ss))
}

/// docker's `CreatedAt` text: `2024-05-01 10:00:00 +0000 UTC`.
pub fn created_at(secs: i64) -> String {
    let ts = crate::store::images::rfc3339(secs.max(0) as u64);
    format!("{} {} +0000 UTC", &ts[..10], &ts[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(123), "123B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(2_140_000), "2.14MB");
        assert_eq!(human_size(4_261_234), "4.26MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size4(1_234_567_890), "1.235GB");
        assert_eq!(bytes_size(1536 * 1024), "1.5MiB");
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(75), "About a minute");
        assert_eq!(human_duration(3 * 3600 + 60), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(21 * 86_400), "3 weeks");
        assert_eq!(human_duration(400 * 86_400), "13 months");
        assert_eq!(human_duration(800 * 86_400), "2 years");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(created_at(86_401), "1970-01-02 00:00:01 +0000 UTC");
    }
}
