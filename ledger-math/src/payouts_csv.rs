//! The pool's payouts, read from a CSV export.
//!
//! # Format
//!
//! A header line, then one payout per line. Two columns are used, found by their header
//! (case, spaces, `_`, `-` and brackets ignored); any other column is ignored:
//!
//! - **when**: the first header that contains `date` or `time`, or is `day`, `at`, `when`,
//!   `paidat`, `createdat`; its values as [`Timestamp::parse`] reads them (`2026-11-29`,
//!   `2026-11-29T15:04:05Z`, `2026-11-29 15:04:05+01:00`, Unix seconds);
//! - **amount**: the first other header that contains `amount`, `value`, `payout`, `earning`,
//!   `reward` or `credit`, or is `btc`, `sat`, `sats`, `satoshi(s)`, `paid`.
//!
//! The unit is taken from the value's suffix (`0.001 BTC`, `12345 sat`), else from the amount
//! header (`amount_sat`, `Amount (BTC)`), else a value with a decimal point is BTC; a whole
//! number with no unit anywhere is refused, since 1 BTC and 1 sat are both plausible.
//!
//! ```text
//! date,amount_btc,txid
//! 2026-11-28,0.00123456,3b1f...
//! 2026-11-29T00:10:00Z,0.00120001,9c0e...
//! ```
//!
//! Comma, semicolon or tab separated (whichever the header line has most of); with semicolons
//! or tabs a decimal comma is accepted. Lines starting with `#` and blank lines are skipped.

use bitcoin::{Amount, Denomination};
use serde::Serialize;

use crate::time::{TimeError, Timestamp};

/// One payout from the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Payout {
    /// When it was paid (or credited, as the pool dates it).
    pub at: Timestamp,
    /// How much.
    pub amount: Amount,
}

/// A payout CSV that cannot be read, with the line at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PayoutCsvError {
    /// Nothing but comments and blank lines.
    #[error("the payout CSV is empty: expected a header line such as date,amount_btc")]
    Empty,
    /// No header names the date/time.
    #[error("no date/time column among the headers {0:?}: name one date, time or timestamp")]
    NoTimeColumn(Vec<String>),
    /// No header names the amount.
    #[error("no amount column among the headers {0:?}: name one amount_btc or amount_sat")]
    NoAmountColumn(Vec<String>),
    /// A date/time that cannot be read.
    #[error("line {line}: {source}")]
    Time {
        /// The line (from 1).
        line: u64,
        /// Why.
        source: TimeError,
    },
    /// An amount that cannot be read.
    #[error("line {line}: amount {text:?} {why}")]
    Amount {
        /// The line (from 1).
        line: u64,
        /// The value.
        text: String,
        /// Why.
        why: String,
    },
    /// The CSV itself is malformed (an unclosed quote, say).
    #[error("line {line}: {message}")]
    Syntax {
        /// The line (from 1).
        line: u64,
        /// The reader's message.
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Btc,
    Sat,
}

/// Reads the pool's payouts from CSV text (see the module docs for the format).
///
/// # Errors
/// When the header names no date/time or amount column, or a line's date or amount cannot be
/// read; the error names the line.
pub fn parse_payouts_csv(text: &str) -> Result<Vec<Payout>, PayoutCsvError> {
    // Spreadsheet exports often start with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let header = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or(PayoutCsvError::Empty)?;
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&d| (header.bytes().filter(|&b| b == d).count(), d == b','))
        .expect("three candidates");
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let syntax = |e: &csv::Error| PayoutCsvError::Syntax {
        line: e.position().map_or(0, csv::Position::line),
        message: e.to_string(),
    };
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| syntax(&e))?
        .iter()
        .map(str::to_owned)
        .collect();
    let (time_col, amount_col, header_unit) = columns(&headers)?;
    let mut payouts = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| syntax(&e))?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let when = record.get(time_col).unwrap_or("");
        let at = Timestamp::parse(when).map_err(|source| PayoutCsvError::Time { line, source })?;
        let raw = record.get(amount_col).unwrap_or("");
        let amount = parse_amount(raw, header_unit, delimiter != b',').map_err(|why| {
            PayoutCsvError::Amount {
                line,
                text: raw.to_owned(),
                why,
            }
        })?;
        payouts.push(Payout { at, amount });
    }
    Ok(payouts)
}

/// A header lower-cased with spaces, `_`, `-` and brackets removed: `Amount (BTC)` → `amountbtc`.
fn normalize(header: &str) -> String {
    header
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '(' | ')' | '[' | ']' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The date/time column, the amount column and the amount header's unit.
fn columns(headers: &[String]) -> Result<(usize, usize, Option<Unit>), PayoutCsvError> {
    let names: Vec<String> = headers.iter().map(|h| normalize(h)).collect();
    let is_time = |n: &str| {
        n.contains("date")
            || n.contains("time")
            || ["day", "at", "when", "paidat", "createdat"].contains(&n)
    };
    let time_col = names
        .iter()
        .position(|n| is_time(n))
        .ok_or_else(|| PayoutCsvError::NoTimeColumn(headers.to_vec()))?;
    let is_amount = |n: &str| {
        ["amount", "value", "payout", "earning", "reward", "credit"]
            .iter()
            .any(|k| n.contains(k))
            || ["btc", "sat", "sats", "satoshi", "satoshis", "paid"].contains(&n)
    };
    let amount_col = names
        .iter()
        .enumerate()
        .position(|(i, n)| i != time_col && is_amount(n))
        .ok_or_else(|| PayoutCsvError::NoAmountColumn(headers.to_vec()))?;
    let name = &names[amount_col];
    let unit = if name.contains("sat") {
        Some(Unit::Sat)
    } else if name.contains("btc") {
        Some(Unit::Btc)
    } else {
        None
    };
    Ok((time_col, amount_col, unit))
}

/// An amount in the unit its suffix, else its header, names; else BTC when it has decimals.
fn parse_amount(
    raw: &str,
    header_unit: Option<Unit>,
    decimal_comma: bool,
) -> Result<Amount, String> {
    let lower = raw.trim().to_ascii_lowercase();
    let suffixes = [
        ("satoshis", Unit::Sat),
        ("satoshi", Unit::Sat),
        ("sats", Unit::Sat),
        ("sat", Unit::Sat),
        ("btc", Unit::Btc),
    ];
    let (number, suffix_unit) = suffixes
        .iter()
        .find_map(|&(s, u)| lower.strip_suffix(s).map(|n| (n.trim(), Some(u))))
        .unwrap_or((lower.as_str(), None));
    let number = if decimal_comma && !number.contains('.') {
        number.replacen(',', ".", 1)
    } else {
        number.to_owned()
    };
    if number.is_empty() {
        return Err("is empty".to_owned());
    }
    let unit = match suffix_unit.or(header_unit) {
        Some(u) => u,
        None if number.contains('.') => Unit::Btc,
        None if number.trim_start_matches('0').is_empty() => Unit::Sat,
        None => return Err(
            "has no unit: name the column amount_btc or amount_sat, or write 0.001 BTC / 12345 sat"
                .to_owned(),
        ),
    };
    let denom = match unit {
        Unit::Btc => Denomination::Bitcoin,
        Unit::Sat => Denomination::Satoshi,
    };
    Amount::from_str_in(&number, denom).map_err(|e| format!("is not an amount in {denom}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sats(text: &str) -> Vec<(String, u64)> {
        parse_payouts_csv(text)
            .unwrap()
            .into_iter()
            .map(|p| (p.at.to_string(), p.amount.to_sat()))
            .collect()
    }

    #[test]
    fn the_documented_example() {
        let text = "date,amount_btc,txid\n2026-11-28,0.00123456,3b1f\n2026-11-29T00:10:00Z,0.00120001,9c0e\n";
        assert_eq!(
            sats(text),
            [
                ("2026-11-28T00:00:00Z".to_owned(), 123_456),
                ("2026-11-29T00:10:00Z".to_owned(), 120_001)
            ]
        );
    }

    #[test]
    fn lenient_headers_and_units() {
        // Header unit in brackets, other columns in between, quoting, comments, blank lines.
        let text = "# exported by the pool\nID;Payment Time;Status;Amount (BTC)\n\n1;\"2026-11-29 10:00:00\";paid;0,5\n";
        assert_eq!(
            sats(text),
            [("2026-11-29T10:00:00Z".to_owned(), 50_000_000)]
        );
        // Sats header.
        assert_eq!(sats("Timestamp,Sats\n1795910400,1234\n")[0].1, 1234);
        // Units in the values override a bare header.
        assert_eq!(sats("time,amount\n2026-11-29,0.001 BTC\n2026-11-29,12345 sat\n2026-11-29,0.5\n2026-11-29,0\n")
            .iter()
            .map(|r| r.1)
            .collect::<Vec<_>>(), [100_000, 12_345, 50_000_000, 0]);
        // Tab separated.
        assert_eq!(sats("paid_at\tvalue_sat\n2026-11-29\t7\n")[0].1, 7);
    }

    #[test]
    fn a_whole_number_without_unit_is_refused() {
        let err = parse_payouts_csv("date,amount\n2026-11-29,1\n").unwrap_err();
        assert!(
            matches!(err, PayoutCsvError::Amount { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("has no unit"), "{err}");
    }

    #[test]
    fn errors_name_the_line() {
        let err =
            parse_payouts_csv("date,amount_btc\n2026-11-29,0.1\n2026-13-01,0.1\n").unwrap_err();
        assert!(matches!(err, PayoutCsvError::Time { line: 3, .. }), "{err}");
        let err = parse_payouts_csv("date,amount_btc\n2026-11-29,-0.1\n").unwrap_err();
        assert!(
            matches!(err, PayoutCsvError::Amount { line: 2, .. }),
            "{err}"
        );
        // More than 8 decimals of BTC is not a whole number of satoshis.
        let err = parse_payouts_csv("date,amount_btc\n2026-11-29,0.000000001\n").unwrap_err();
        assert!(
            matches!(err, PayoutCsvError::Amount { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_columns_are_named() {
        assert_eq!(
            parse_payouts_csv("# only a comment\n\n"),
            Err(PayoutCsvError::Empty)
        );
        assert!(matches!(
            parse_payouts_csv("amount_btc\n0.1\n"),
            Err(PayoutCsvError::NoTimeColumn(_))
        ));
        let err = parse_payouts_csv("date,txid\n2026-11-29,ab\n").unwrap_err();
        assert_eq!(
            err,
            PayoutCsvError::NoAmountColumn(vec!["date".to_owned(), "txid".to_owned()])
        );
    }

    #[test]
    fn byte_order_mark_and_leading_blank_lines() {
        assert_eq!(
            sats("\u{feff}\n\nDay,Paid\n2026-11-29,0.1\n")[0].1,
            10_000_000
        );
    }

    #[test]
    fn header_only_is_no_payouts() {
        assert_eq!(parse_payouts_csv("date,amount_sat\n").unwrap(), []);
    }
}
