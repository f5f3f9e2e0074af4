//! The units the books are kept in: work, fee rates and hashrate.
//!
//! Amounts of bitcoin are [`bitcoin::Amount`] (whole satoshis) wherever a value is paid or
//! received; expected earnings, which are real numbers, stay `f64` satoshis until they are
//! rounded once, at the edge (see [`crate::payout`]).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

use mining_types::Difficulty;
use serde::{Deserialize, Serialize};

/// Hashes that one unit of work (a share of difficulty 1) stands for, on average.
///
/// The exact figure is `2^48 / 65535`, 15 ppm more; the proxy measures hashrate with `2^32`
/// (`figures::rates::HASHES_PER_DIFFICULTY`), and so do pools, so the books use it too: a
/// hashrate converted to work here gives back the work it was measured from.
pub const HASHES_PER_WORK: f64 = 4_294_967_296.0;

/// Work: a sum of share difficulties. Finite and not negative.
///
/// A share of difficulty `d` stands for `d` units, so `work / network_difficulty` is the number
/// of blocks the work was expected to find.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Work(f64);

/// A number that is not valid work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("work must be a finite number not below 0, got {0}")]
pub struct WorkError(pub f64);

impl Work {
    /// No work.
    pub const ZERO: Work = Work(0.0);

    /// Checks and wraps a sum of share difficulties.
    ///
    /// # Errors
    /// When `w` is negative, NaN or infinite.
    pub fn new(w: f64) -> Result<Self, WorkError> {
        if w.is_finite() && w >= 0.0 {
            // -0.0 passes the test above; store +0.0 so equal work compares and prints equal.
            Ok(Work(w + 0.0))
        } else {
            Err(WorkError(w))
        }
    }

    /// The work of one share accepted at `difficulty`.
    pub fn of_share(difficulty: Difficulty) -> Self {
        Work(difficulty.get())
    }

    /// The raw sum of difficulties.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether this is no work at all.
    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }

    /// The blocks this work was expected to find at `network_difficulty`.
    pub fn expected_blocks(self, network_difficulty: Difficulty) -> f64 {
        self.0 / network_difficulty.get()
    }
}

impl TryFrom<f64> for Work {
    type Error = WorkError;
    fn try_from(w: f64) -> Result<Self, WorkError> {
        Work::new(w)
    }
}

impl From<Work> for f64 {
    fn from(w: Work) -> f64 {
        w.0
    }
}

impl Add for Work {
    type Output = Work;
    /// Saturates at `f64::MAX` (far beyond any real farm) so the sum stays finite.
    fn add(self, rhs: Work) -> Work {
        Work((self.0 + rhs.0).min(f64::MAX))
    }
}

impl AddAssign for Work {
    fn add_assign(&mut self, rhs: Work) {
        *self = *self + rhs;
    }
}

impl Sum for Work {
    fn sum<I: Iterator<Item = Work>>(iter: I) -> Work {
        iter.fold(Work::ZERO, Add::add)
    }
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A fee rate in basis points (1/100 of a percent): `0..=10_000`.
///
/// Used for the pool's fee and the hosting farm's fee. Parsed from `"2.5%"`, `"250bps"` or
/// `"250 bp"`; a bare number is refused, since `2.5` and `250` are both plausible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(into = "u16")]
pub struct Bps(u16);

/// A fee rate out of range or not understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BpsError {
    /// Above 100 %.
    #[error("a fee rate cannot exceed 10000 bps (100%), got {0} bps")]
    OverOneHundredPercent(u64),
    /// Not a number with `%` or `bps`.
    #[error("fee rate {0:?} not understood: write it as \"2.5%\" or \"250bps\"")]
    Syntax(String),
}

impl Bps {
    /// No fee.
    pub const ZERO: Bps = Bps(0);
    /// The whole amount.
    pub const ALL: Bps = Bps(10_000);

    /// Checks and wraps a rate in basis points.
    ///
    /// # Errors
    /// When `bps` is above 10 000.
    pub fn new(bps: u16) -> Result<Self, BpsError> {
        if bps <= 10_000 {
            Ok(Bps(bps))
        } else {
            Err(BpsError::OverOneHundredPercent(u64::from(bps)))
        }
    }

    /// The rate in basis points.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The rate as a fraction of one.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// The part of one that is left after the fee: `1 - fraction`.
    pub fn kept_fraction(self) -> f64 {
        f64::from(10_000 - self.0) / 10_000.0
    }

    /// The fee on `sat` satoshis, rounded down: a payer never pays more than the stated rate.
    pub fn fee_floor(self, sat: u64) -> u64 {
        let fee = u128::from(sat) * u128::from(self.0) / 10_000;
        u64::try_from(fee).expect("fee is at most the amount, which is a u64")
    }
}

impl TryFrom<u16> for Bps {
    type Error = BpsError;
    fn try_from(bps: u16) -> Result<Self, BpsError> {
        Bps::new(bps)
    }
}

impl From<Bps> for u16 {
    fn from(b: Bps) -> u16 {
        b.0
    }
}

impl FromStr for Bps {
    type Err = BpsError;
    fn from_str(s: &str) -> Result<Self, BpsError> {
        let syntax = || BpsError::Syntax(s.to_owned());
        let t = s.trim();
        if let Some(num) = t.strip_suffix('%') {
            return percent_to_bps(num.trim())
                .ok_or_else(syntax)
                .and_then(checked_bps);
        }
        let num = t
            .strip_suffix("bps")
            .or_else(|| t.strip_suffix("bp"))
            .ok_or_else(syntax)?;
        num.trim()
            .parse::<u64>()
            .map_err(|_| syntax())
            .and_then(checked_bps)
    }
}

/// `"2.5"` → 250, exactly (no float): at most two decimals, since a basis point is 0.01 %.
fn percent_to_bps(num: &str) -> Option<u64> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.len() > 2 {
        return None;
    }
    let digits = |d: &str| d.is_empty() || d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || int.len() > 6 {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u64 = format!("{frac:0<2}").parse().ok()?;
    Some(int * 100 + frac)
}

fn checked_bps(bps: u64) -> Result<Bps, BpsError> {
    u16::try_from(bps)
        .ok()
        .filter(|b| *b <= 10_000)
        .map(Bps)
        .ok_or(BpsError::OverOneHundredPercent(bps))
}

impl<'de> Deserialize<'de> for Bps {
    /// A number of basis points, or a string as [`FromStr`] takes it (`"2.5%"`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bps(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bps(b) => checked_bps(b),
            Raw::Text(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Bps {
    /// As a percentage: `2.5%`, `0.01%`, `100%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{int}%"),
            _ if frac % 10 == 0 => write!(f, "{int}.{}%", frac / 10),
            _ => write!(f, "{int}.{frac:02}%"),
        }
    }
}

/// A hashrate in hashes per second: finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Hashrate(f64);

/// A hashrate that is not a finite number at or above zero, or not understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("hashrate {0:?} not understood: a number of H/s, with an optional k, M, G, T, P or E")]
pub struct HashrateError(pub String);

impl Hashrate {
    /// Checks and wraps hashes per second.
    ///
    /// # Errors
    /// When `hs` is negative, NaN or infinite.
    pub fn new(hs: f64) -> Result<Self, HashrateError> {
        if hs.is_finite() && hs >= 0.0 {
            Ok(Hashrate(hs + 0.0))
        } else {
            Err(HashrateError(hs.to_string()))
        }
    }

    /// The hashrate that did `work` in `secs` seconds (as the proxy measures it).
    pub fn from_work(work: Work, secs: f64) -> Option<Self> {
        (secs > 0.0)
            .then(|| Hashrate::new(work.get() * HASHES_PER_WORK / secs).ok())
            .flatten()
    }

    /// Hashes per second.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Work done per second, in units of difficulty 1.
    pub fn work_per_sec(self) -> f64 {
        self.0 / HASHES_PER_WORK
    }
}

impl TryFrom<f64> for Hashrate {
    type Error = HashrateError;
    fn try_from(hs: f64) -> Result<Self, HashrateError> {
        Hashrate::new(hs)
    }
}

impl From<Hashrate> for f64 {
    fn from(h: Hashrate) -> f64 {
        h.0
    }
}

impl FromStr for Hashrate {
    type Err = HashrateError;
    /// `"120T"`, `"120 TH/s"`, `"1.2e14"`, `"850 GH/s"`.
    fn from_str(s: &str) -> Result<Self, HashrateError> {
        let err = || HashrateError(s.to_owned());
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        let t = t.strip_suffix(['H', 'h']).unwrap_or(t).trim_end();
        let scales = [
            ('k', 1e3),
            ('K', 1e3),
            ('M', 1e6),
            ('G', 1e9),
            ('T', 1e12),
            ('P', 1e15),
            ('E', 1e18),
        ];
        let (num, scale) = scales
            .into_iter()
            .find_map(|(c, m)| t.strip_suffix(c).map(|n| (n, m)))
            .unwrap_or((t, 1.0));
        let v: f64 = num.trim().parse().map_err(|_| err())?;
        Hashrate::new(v * scale).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_refuses_negative_and_non_finite() {
        assert!(Work::new(-1.0).is_err());
        assert!(Work::new(f64::NAN).is_err());
        assert!(Work::new(f64::INFINITY).is_err());
        assert_eq!(Work::new(-0.0).unwrap().get().to_bits(), 0.0f64.to_bits());
        let w: Work = [1.5, 2.5].iter().map(|&w| Work::new(w).unwrap()).sum();
        assert_eq!(w.get(), 4.0);
        assert_eq!(
            Work::new(f64::MAX).unwrap() + Work::new(f64::MAX).unwrap(),
            Work(f64::MAX)
        );
    }

    #[test]
    fn work_deserializes_through_the_check() {
        assert!(serde_json::from_str::<Work>("-2").is_err());
        assert_eq!(serde_json::from_str::<Work>("2.5").unwrap().get(), 2.5);
    }

    #[test]
    fn bps_parses_percent_and_bps_exactly() {
        assert_eq!("2.5%".parse::<Bps>().unwrap().get(), 250);
        assert_eq!(" 0.01 % ".parse::<Bps>().unwrap().get(), 1);
        assert_eq!("100%".parse::<Bps>().unwrap(), Bps::ALL);
        assert_eq!(".5%".parse::<Bps>().unwrap().get(), 50);
        assert_eq!("250bps".parse::<Bps>().unwrap().get(), 250);
        assert_eq!("40 bp".parse::<Bps>().unwrap().get(), 40);
        assert!(matches!("250".parse::<Bps>(), Err(BpsError::Syntax(_))));
        assert!(matches!("0.001%".parse::<Bps>(), Err(BpsError::Syntax(_))));
        assert!(matches!("-1%".parse::<Bps>(), Err(BpsError::Syntax(_))));
        assert!(matches!(
            "100.01%".parse::<Bps>(),
            Err(BpsError::OverOneHundredPercent(10_001))
        ));
        assert!(Bps::new(10_001).is_err());
    }

    #[test]
    fn bps_displays_as_percent_and_round_trips() {
        for (bps, text) in [
            (250, "2.5%"),
            (1, "0.01%"),
            (10_000, "100%"),
            (0, "0%"),
            (125, "1.25%"),
        ] {
            let b = Bps::new(bps).unwrap();
            assert_eq!(b.to_string(), text);
            assert_eq!(text.parse::<Bps>().unwrap(), b);
        }
    }

    #[test]
    fn bps_deserializes_from_number_or_text() {
        assert_eq!(serde_json::from_str::<Bps>("250").unwrap().get(), 250);
        assert_eq!(serde_json::from_str::<Bps>("\"2%\"").unwrap().get(), 200);
        assert!(serde_json::from_str::<Bps>("10001").is_err());
        assert!(serde_json::from_str::<Bps>("\"2\"").is_err());
    }

    #[test]
    fn fee_floor_rounds_down() {
        // 2.5% of 999 sat = 24.975 sat: the payer is charged 24.
        assert_eq!(Bps::new(250).unwrap().fee_floor(999), 24);
        assert_eq!(Bps::ALL.fee_floor(u64::MAX), u64::MAX);
        assert_eq!(Bps::ZERO.fee_floor(u64::MAX), 0);
    }

    #[test]
    fn hashrate_parses_si_suffixes() {
        assert_eq!("120T".parse::<Hashrate>().unwrap().get(), 120e12);
        assert_eq!("120 TH/s".parse::<Hashrate>().unwrap().get(), 120e12);
        assert_eq!("850 GH/s".parse::<Hashrate>().unwrap().get(), 850e9);
        assert_eq!("1.2e14".parse::<Hashrate>().unwrap().get(), 1.2e14);
        assert_eq!("5 kH/s".parse::<Hashrate>().unwrap().get(), 5e3);
        assert!("fast".parse::<Hashrate>().is_err());
        assert!("-1T".parse::<Hashrate>().is_err());
    }

    #[test]
    fn hashrate_and_work_convert_both_ways() {
        // 2^32 units of work in 2^32 s: 2^32 hashes per second, i.e. 1 unit of work per second.
        let h = Hashrate::from_work(Work::new(4_294_967_296.0).unwrap(), 4_294_967_296.0).unwrap();
        assert_eq!(h.get(), 4_294_967_296.0);
        assert_eq!(h.work_per_sec(), 1.0);
        assert!(Hashrate::from_work(Work::ZERO, 0.0).is_none());
    }
}
