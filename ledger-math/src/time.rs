//! Instants and UTC days, with the lenient date parsing a pool's CSV export needs.
//!
//! The books group by UTC day: pools settle PPS/FPPS per UTC day, and a day in UTC is the same
//! day on every gateway of the farm. The calendar arithmetic is Howard Hinnant's
//! `days_from_civil` / `civil_from_days` (proleptic Gregorian), a dozen lines that spare the
//! crate a date library.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const SECS_PER_DAY: i64 = 86_400;

/// An instant: seconds since 1970-01-01T00:00:00Z (leap seconds ignored, as Unix time does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A UTC calendar day, counted from 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

/// A date or time that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("date/time {input:?} not understood ({why}); write 2026-11-29, 2026-11-29T15:04:05Z, 2026-11-29 15:04:05+01:00 or Unix seconds")]
pub struct TimeError {
    /// What was given.
    pub input: String,
    /// What was wrong with it.
    pub why: &'static str,
}

impl Timestamp {
    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_unix(secs: i64) -> Self {
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// The UTC day this instant falls on.
    pub const fn day(self) -> Day {
        Day(self.0.div_euclid(SECS_PER_DAY))
    }

    /// This instant moved by `secs` seconds (saturating).
    pub const fn add_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs))
    }

    /// Reads an instant, leniently:
    /// - `2026-11-29` (midnight UTC), also with `/` between the parts;
    /// - `2026-11-29T15:04`, `2026-11-29 15:04:05`, `…:05.123` (the fraction is dropped);
    /// - followed by nothing or `Z`/`UTC`/`GMT` (UTC), or an offset `+01:00`, `-0500`, `+01`;
    /// - an integer: Unix seconds, or milliseconds when above 10^11 (year 5138 in seconds).
    ///
    /// # Errors
    /// When the text is none of these, or names a day or time that does not exist.
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        let t = s.trim();
        let err = |why| TimeError {
            input: s.to_owned(),
            why,
        };
        if let Ok(n) = t.parse::<i64>() {
            return Ok(Timestamp(if n.unsigned_abs() > 100_000_000_000 {
                n / 1000
            } else {
                n
            }));
        }
        let mut c = Cursor(t.as_bytes());
        let day = c.date().map_err(err)?;
        if c.0.is_empty() {
            return Ok(day.start());
        }
        let secs = c.time_of_day().map_err(err)?;
        let offset = c.offset().map_err(err)?;
        Ok(Timestamp(day.start().0 + secs - offset))
    }
}

impl Day {
    /// The day with this calendar date.
    ///
    /// # Errors
    /// When the month or the day of the month does not exist (2026-02-29), or the year is
    /// outside 1..=9999.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Result<Self, &'static str> {
        if !(1..=9999).contains(&year) {
            return Err("year outside 1..=9999");
        }
        if !(1..=12).contains(&month) {
            return Err("no such month");
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err("no such day in that month");
        }
        Ok(Day(days_from_civil(year, month, day)))
    }

    /// The calendar date: year, month (1–12), day of the month (1–31).
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.0)
    }

    /// Days since 1970-01-01.
    pub const fn days_since_epoch(self) -> i64 {
        self.0
    }

    /// Midnight UTC at the start of the day.
    pub const fn start(self) -> Timestamp {
        Timestamp(self.0.saturating_mul(SECS_PER_DAY))
    }

    /// The day `n` days later (earlier when negative).
    pub const fn plus_days(self, n: i64) -> Day {
        Day(self.0.saturating_add(n))
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("day of month is 1..=31");
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("month is 1..=12");
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A forward-only reader over the ASCII bytes of a date/time.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Between `min` and `max` decimal digits.
    fn number(&mut self, min: usize, max: usize) -> Result<i64, &'static str> {
        let n = self
            .0
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n < min {
            return Err("expected a number");
        }
        let (digits, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(digits
            .iter()
            .fold(0, |acc, b| acc * 10 + i64::from(b - b'0')))
    }

    /// Consumes `b` if it comes next.
    fn eat(&mut self, b: u8) -> bool {
        match self.0.split_first() {
            Some((&first, rest)) if first == b => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    fn date(&mut self) -> Result<Day, &'static str> {
        let year = self.number(4, 4)?;
        let Some(&sep @ (b'-' | b'/')) = self.0.first() else {
            return Err("expected - or / after the year");
        };
        self.eat(sep);
        let month = self.number(1, 2)?;
        if !self.eat(sep) {
            return Err("expected the same separator after the month");
        }
        let day = self.number(1, 2)?;
        let small = |n: i64| u32::try_from(n).map_err(|_| "no such date");
        Day::from_ymd(year, small(month)?, small(day)?)
    }

    /// `T15:04[:05[.fff]]`, in seconds after midnight.
    fn time_of_day(&mut self) -> Result<i64, &'static str> {
        if !(self.eat(b'T') || self.eat(b't') || self.eat(b' ')) {
            return Err("expected T or a space between date and time");
        }
        let h = self.number(1, 2)?;
        if !self.eat(b':') {
            return Err("expected hours:minutes");
        }
        let m = self.number(2, 2)?;
        let s = if self.eat(b':') {
            self.number(2, 2)?
        } else {
            0
        };
        if self.eat(b'.') || self.eat(b',') {
            self.number(1, 9)?;
            while self.0.first().is_some_and(u8::is_ascii_digit) {
                self.0 = &self.0[1..];
            }
        }
        if h > 23 || m > 59 || s > 60 {
            return Err("no such time of day");
        }
        // A leap second (23:59:60) counts as the last second of the day, as Unix time does.
        Ok(h * 3600 + m * 60 + s.min(59))
    }

    /// The UTC offset that follows, in seconds east of Greenwich; then the end of the text.
    fn offset(&mut self) -> Result<i64, &'static str> {
        while self.eat(b' ') {}
        let rest = std::str::from_utf8(self.0).map_err(|_| "unexpected characters")?;
        if rest.is_empty() || ["Z", "z", "UTC", "GMT"].contains(&rest) {
            return Ok(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Err("unexpected text after the time");
        };
        let h = self.number(2, 2)?;
        self.eat(b':');
        let m = if self.0.is_empty() {
            0
        } else {
            self.number(2, 2)?
        };
        if !self.0.is_empty() || h > 23 || m > 59 {
            return Err("bad UTC offset");
        }
        Ok(sign * (h * 3600 + m * 60))
    }
}

impl fmt::Display for Day {
    /// `2026-11-29`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC: `2026-11-29T15:04:05Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.rem_euclid(SECS_PER_DAY);
        let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
        write!(f, "{}T{h:02}:{m:02}:{s:02}Z", self.day())
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        Timestamp::parse(s)
    }
}

impl FromStr for Day {
    type Err = TimeError;
    /// A date (`2026-11-29`), or any instant [`Timestamp::parse`] reads: its UTC day.
    fn from_str(s: &str) -> Result<Self, TimeError> {
        Timestamp::parse(s).map(Timestamp::day)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Unix seconds as a number, or text as [`Timestamp::parse`] reads it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawTime {
    Unix(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawTime::deserialize(d)? {
            RawTime::Unix(n) => Ok(Timestamp(n)),
            RawTime::Text(s) => Timestamp::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Timestamp::deserialize(d).map(Timestamp::day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        Timestamp::parse(s).unwrap().unix()
    }

    #[test]
    fn calendar_round_trips_over_four_centuries() {
        // 146 097 days is one full Gregorian cycle; every day maps back to itself.
        for z in -1_000..146_097 + 1_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(Day::from_ymd(2000, 3, 1).unwrap().to_string(), "2000-03-01");
        // 2026-11-29: 56 years after 1970 with 14 leap days (1972..=2024) = 20454 days to
        // 2026-01-01, plus Jan..Oct (31+28+31+30+31+30+31+31+30+31 = 304) and 28 = 20786.
        assert_eq!(
            Day::from_ymd(2026, 11, 29).unwrap().days_since_epoch(),
            20_786
        );
    }

    #[test]
    fn impossible_dates_are_refused() {
        assert!(Day::from_ymd(2026, 2, 29).is_err());
        assert!(Day::from_ymd(2024, 2, 29).is_ok());
        assert!(Day::from_ymd(1900, 2, 29).is_err());
        assert!(Day::from_ymd(2026, 13, 1).is_err());
        assert!(Day::from_ymd(2026, 4, 31).is_err());
        for bad in [
            "2026-02-30",
            "2026-11-29T24:00",
            "2026-11-29 12",
            "29/11/2026",
            "2026-11/29",
            "2026-11-29T12:00:00+25:00",
            "2026-11-29T12:00:00 PST",
            "yesterday",
            "",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_usual_export_formats() {
        // 2026-11-29 is day 20786: 20786 * 86400 = 1_795_910_400.
        let midnight = 1_795_910_400;
        assert_eq!(ts("2026-11-29"), midnight);
        assert_eq!(ts("2026/11/29"), midnight);
        assert_eq!(
            ts("2026-11-29T15:04:05Z"),
            midnight + 15 * 3600 + 4 * 60 + 5
        );
        assert_eq!(ts("2026-11-29 15:04:05"), midnight + 54_245);
        assert_eq!(ts("2026-11-29 15:04"), midnight + 54_240);
        assert_eq!(ts("2026-11-29T15:04:05.999Z"), midnight + 54_245);
        assert_eq!(ts(" 2026-11-29 15:04:05 UTC "), midnight + 54_245);
        // 01:30 at +02:00 is 23:30 UTC the day before.
        assert_eq!(ts("2026-11-29T01:30:00+02:00"), midnight - 1800);
        assert_eq!(ts("2026-11-29T01:30:00+0200"), midnight - 1800);
        assert_eq!(ts("2026-11-28T20:30:00-05"), midnight + 5400);
        assert_eq!(ts("1795910400"), midnight);
        assert_eq!(ts("1795910400000"), midnight);
        assert_eq!(ts("2026-11-29T23:59:60Z"), midnight + 86_399);
    }

    #[test]
    fn displays_rfc3339_and_days() {
        let t = Timestamp::from_unix(1_795_910_400 + 54_245);
        assert_eq!(t.to_string(), "2026-11-29T15:04:05Z");
        assert_eq!(t.day().to_string(), "2026-11-29");
        assert_eq!(Timestamp::from_unix(-1).to_string(), "1969-12-31T23:59:59Z");
        assert_eq!(Timestamp::from_unix(-1).day(), Day(-1));
    }

    #[test]
    fn serde_uses_text_and_accepts_numbers() {
        let t = Timestamp::from_unix(1_795_910_400);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-29T00:00:00Z\""
        );
        assert_eq!(serde_json::to_string(&t.day()).unwrap(), "\"2026-11-29\"");
        assert_eq!(serde_json::from_str::<Timestamp>("1795910400").unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Day>("\"2026-11-29\"").unwrap(),
            t.day()
        );
    }
}
