//! Numbers and times as an operator reads them. Pure.

/// Hashes per second with an SI prefix: `1.23 PH/s`.
pub fn hashrate(h: f64) -> String {
    const UNITS: [&str; 7] = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    if !h.is_finite() || h <= 0.0 {
        return "0 H/s".into();
    }
    let mut v = h;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// An integer with thousands separators: `1,234,567`.
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

/// Satoshis as BTC: `0.12345678 BTC`.
pub fn btc(sats: u64) -> String {
    format!("{}.{:08} BTC", sats / 100_000_000, sats % 100_000_000)
}

/// A share of a whole, in percent with two decimals; `-` of nothing.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    // Counts stay far below 2^52, where f64 is exact.
    #[expect(
        clippy::cast_precision_loss,
        reason = "share counts are far below 2^52"
    )]
    let p = part as f64 * 100.0 / whole as f64;
    format!("{p:.2}%")
}

/// A duration, its two largest units: `45s`, `12m 03s`, `3h 12m`, `2d 04h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Unix seconds as a UTC date and time: `2025-06-01 12:00:03 UTC`.
pub fn utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_at_a_glance() {
        assert_eq!(hashrate(1.234e15), "1.23 PH/s");
        assert_eq!(hashrate(110e12), "110 TH/s");
        assert_eq!(hashrate(52_000.0), "52.0 kH/s");
        assert_eq!(hashrate(0.0), "0 H/s");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(btc(12_345_678), "0.12345678 BTC");
        assert_eq!(btc(312_500_000), "3.12500000 BTC");
        assert_eq!(percent(42, 10_000), "0.42%");
        assert_eq!(percent(1, 0), "-");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(723), "12m 03s");
        assert_eq!(duration(11_520), "3h 12m");
        assert_eq!(duration(187_200), "2d 04h");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_748_779_203), "2025-06-01 12:00:03 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
