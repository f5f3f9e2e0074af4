//! `jd-proxy ledger report|audit|split|variance`: the reports of [`super::report`] on the
//! command line, reading the ledger the config names (or `--url`).

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bitcoin::{Amount, Denomination};
use clap::{Args, Subcommand};
use ledger::{Ledger, LedgerUrl};
use ledger_math::{parse_payouts_csv, Bps, Hashrate, Model, Payout, PooledScheme};
use serde::Serialize;

use super::report::{self, AuditRequest, By, Format, PaidInput, Span, VarianceRequest};
use crate::cli::ConfigArgs;
use crate::config::load::load;
use crate::config::Config;

/// `jd-proxy ledger ...`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Which report.
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// The reports.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// The books: work per worker, customer and gateway; validated work against the pool's
    /// acknowledgements per hour and day; refusals; blocks.
    Report(ReportArgs),
    /// The pay a model (PPS, FPPS, PPLNS) expects for the period, against what the pool paid.
    Audit(AuditArgs),
    /// Split an amount received among customers by their work (a payment run; moves nothing).
    Split(SplitArgs),
    /// Solo against pooled: time to a block, chance of none in a month, revenue spread.
    Variance(VarianceArgs),
}

/// What every report takes.
#[derive(Debug, Args)]
pub struct Common {
    /// The config whose ledger is read (its [[customer]] rules name the customers).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Start of the period (2026-11-01, 2026-11-01T12:00Z or Unix seconds); default 30 days
    /// before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the period, excluded; default now.
    #[arg(long)]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// The ledger to read instead of the config's ledger.url.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `ledger report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    common: Common,
    /// The table CSV shows (JSON has them all).
    #[arg(long, value_enum, default_value_t = By::Worker)]
    by: By,
    /// Name customers by today's [[customer]] rules, not as recorded with the work.
    #[arg(long)]
    remap: bool,
}

/// `ledger audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    common: Common,
    /// The pool's scheme: pps, fpps or pplns.
    #[arg(long)]
    model: Model,
    /// The pool's fee: basis points (250), or 2.5%.
    #[arg(long, default_value = "0")]
    fee_bps: String,
    /// What the pool paid for the period (0.0123, 0.0123btc or 1230000sat).
    #[arg(long, conflicts_with = "payouts", required_unless_present = "payouts")]
    paid: Option<String>,
    /// The pool's payouts as CSV (date and amount columns), compared day by day.
    #[arg(long, value_name = "CSV")]
    payouts: Option<PathBuf>,
    /// Days between a day's work and the payout dated for it.
    #[arg(long, default_value_t = 0)]
    credit_lag_days: i64,
    /// PPLNS window: work units, or a multiple of the network difficulty (2xD).
    #[arg(long)]
    window: Option<String>,
    /// PPLNS: the pool's hashrate (500P, 5e17), which places each block's window.
    #[arg(long)]
    pool_hashrate: Option<String>,
    /// PPLNS: the pool's blocks as CSV (date and reward columns); default the farm's own.
    #[arg(long, value_name = "CSV")]
    pool_blocks: Option<PathBuf>,
}

/// `ledger split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    common: Common,
    /// The amount received for the period (0.5, 0.5btc or 50000000sat).
    #[arg(long)]
    amount: String,
    /// The farm's hosting fee: basis points (500), or 5%.
    #[arg(long, default_value = "0")]
    hosting_fee_bps: String,
    /// Name customers by today's [[customer]] rules, not as recorded with the work.
    #[arg(long)]
    remap: bool,
}

/// `ledger variance`.
#[derive(Debug, Args)]
pub struct VarianceArgs {
    #[command(flatten)]
    common: Common,
    /// The hashrate (120T, 1.2e14); default: measured from the ledger over the period.
    #[arg(long)]
    hashrate: Option<String>,
    /// The pool's fee: basis points, or 2%.
    #[arg(long, default_value = "0")]
    fee_bps: String,
    /// The pool's scheme set against solo: pps or fpps.
    #[arg(long, default_value = "fpps")]
    scheme: String,
    /// The period the spread is over, in days.
    #[arg(long, default_value_t = 30)]
    period_days: u64,
}

/// Runs a report, prints it; the process's exit code.
pub fn main(args: LedgerArgs) -> ExitCode {
    let c = args.command.common();
    let config = match load(c.config.config.as_deref(), &c.config.settings()) {
        Ok((config, _)) => config,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    match run(args, &config) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl LedgerCommand {
    fn common(&self) -> &Common {
        match self {
            LedgerCommand::Report(a) => &a.common,
            LedgerCommand::Audit(a) => &a.common,
            LedgerCommand::Split(a) => &a.common,
            LedgerCommand::Variance(a) => &a.common,
        }
    }
}

/// Runs a report; the text to print.
///
/// # Errors
/// A bad argument, an unreadable file, a ledger that cannot be opened or read.
pub fn run(args: LedgerArgs, config: &Config) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run_async(args, config))
}

async fn open(common: &Common, config: &Config) -> anyhow::Result<(Ledger, Span)> {
    let url = match &common.url {
        Some(u) => u.parse::<LedgerUrl>()?,
        None => config.ledger.url.clone(),
    };
    if let LedgerUrl::Sqlite(path) = &url {
        anyhow::ensure!(
            path.exists(),
            "no ledger at {} (ledger.url, or --url)",
            path.display()
        );
    }
    let ledger = Ledger::open(&url).await.with_context(|| format!("{url}"))?;
    let span = Span::parse(
        common.from.as_deref(),
        common.to.as_deref(),
        crate::figures::unix_now() as i64,
    )?;
    Ok((ledger, span))
}

async fn run_async(args: LedgerArgs, config: &Config) -> anyhow::Result<String> {
    match args.command {
        LedgerCommand::Report(a) => {
            let (ledger, span) = open(&a.common, config).await?;
            let r = report::report(&ledger, &config.customers, span, a.remap).await?;
            match a.common.format {
                Format::Json => json(&r),
                Format::Csv => report_csv(&r, a.by),
            }
        }
        LedgerCommand::Audit(a) => {
            let req = audit_request(&a)?;
            let (ledger, span) = open(&a.common, config).await?;
            let r = report::audit_period(&ledger, span, &req).await?;
            match a.common.format {
                Format::Json => json(&r),
                Format::Csv => Ok(r.discrepancy.to_csv()?),
            }
        }
        LedgerCommand::Split(a) => {
            let amount = parse_amount(&a.amount).context("--amount")?;
            let fee = parse_bps(&a.hosting_fee_bps).context("--hosting-fee-bps")?;
            let (ledger, span) = open(&a.common, config).await?;
            let s = report::split(&ledger, &config.customers, span, amount, fee, a.remap).await?;
            match a.common.format {
                Format::Json => json(&s),
                Format::Csv => Ok(s.to_csv()?),
            }
        }
        LedgerCommand::Variance(a) => {
            let req = variance_request(&a)?;
            let (ledger, span) = open(&a.common, config).await?;
            let v = report::variance(&ledger, span, &req).await?;
            match a.common.format {
                Format::Json => json(&v),
                Format::Csv => key_value_csv(&serde_json::to_value(&v)?),
            }
        }
    }
}

fn audit_request(a: &AuditArgs) -> anyhow::Result<AuditRequest> {
    let paid = match (&a.paid, &a.payouts) {
        (Some(p), _) => PaidInput::Total(parse_amount(p).context("--paid")?),
        (None, Some(file)) => {
            PaidInput::Payouts(read_payouts(file, "--payouts")?, a.credit_lag_days)
        }
        (None, None) => anyhow::bail!("give --paid or --payouts"),
    };
    Ok(AuditRequest {
        model: a.model,
        pool_fee: parse_bps(&a.fee_bps).context("--fee-bps")?,
        paid,
        window: a.window.clone(),
        pool_hashrate: a
            .pool_hashrate
            .as_deref()
            .map(|h| h.parse::<Hashrate>().context("--pool-hashrate"))
            .transpose()?,
        pool_blocks: a
            .pool_blocks
            .as_ref()
            .map(|f| read_payouts(f, "--pool-blocks"))
            .transpose()?,
    })
}

fn variance_request(a: &VarianceArgs) -> anyhow::Result<VarianceRequest> {
    let scheme = match a.scheme.to_ascii_lowercase().as_str() {
        "pps" => PooledScheme::Pps,
        "fpps" => PooledScheme::Fpps,
        other => anyhow::bail!("--scheme {other:?}: pps or fpps"),
    };
    let secs = a.period_days.checked_mul(86_400).and_then(NonZeroU64::new);
    Ok(VarianceRequest {
        hashrate: a
            .hashrate
            .as_deref()
            .map(|h| h.parse::<Hashrate>().context("--hashrate"))
            .transpose()?,
        pool_fee: parse_bps(&a.fee_bps).context("--fee-bps")?,
        scheme,
        period_secs: secs.context("--period-days must be above 0")?,
    })
}

fn read_payouts(file: &PathBuf, flag: &str) -> anyhow::Result<Vec<Payout>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("{flag} {}", file.display()))?;
    parse_payouts_csv(&text).with_context(|| format!("{flag} {}", file.display()))
}

/// An amount with its unit: `0.5`, `0.5btc` (BTC), `50000sat`. A bare whole number is refused:
/// 1 BTC and 1 sat are both plausible.
///
/// # Errors
/// No unit on a whole number, or not an amount.
pub fn parse_amount(text: &str) -> anyhow::Result<Amount> {
    let t = text.trim().to_ascii_lowercase().replace(' ', "");
    if let Some(sat) = t.strip_suffix("sats").or_else(|| t.strip_suffix("sat")) {
        return Ok(Amount::from_sat(
            sat.parse().with_context(|| format!("{text:?}"))?,
        ));
    }
    let btc = t.strip_suffix("btc").unwrap_or(&t);
    anyhow::ensure!(
        btc.contains('.') || t.ends_with("btc"),
        "{text:?}: give the unit, e.g. {t}.0 or {t}btc for BTC, {t}sat for satoshis"
    );
    Amount::from_str_in(btc, Denomination::Bitcoin).with_context(|| format!("{text:?}"))
}

/// A fee: bare basis points (`250`), or `2.5%`, `250bps`.
///
/// # Errors
/// Not a rate, or above 100 %.
pub fn parse_bps(text: &str) -> anyhow::Result<Bps> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u16>() {
        return Bps::new(n).map_err(|e| anyhow::anyhow!("{t:?}: {e}"));
    }
    t.parse::<Bps>().map_err(|e| anyhow::anyhow!("{t:?}: {e}"))
}

fn json(v: &impl Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

fn table<T: Serialize>(rows: &[T]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// The report's table `by`, as CSV.
///
/// # Errors
/// Not in practice: every field is plain.
pub fn report_csv(r: &report::Report, by: By) -> anyhow::Result<String> {
    match by {
        By::Worker => table(&r.workers),
        By::Customer => table(&r.customers),
        By::Gateway => table(&r.gateways),
        By::Hour => table(&r.hours),
        By::Day => table(&r.days),
        By::Refusal => table(&r.refusals),
    }
}

/// A nested JSON value as `field,value` lines (`solo.mean_sat,...`).
///
/// # Errors
/// Not in practice.
pub fn key_value_csv(v: &serde_json::Value) -> anyhow::Result<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(&format!("{prefix}.{i}"), x, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut rows = Vec::new();
    walk("", v, &mut rows);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["field", "value"])?;
    for (k, x) in rows {
        w.write_record([k, x])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_need_a_unit_unless_they_are_decimal_btc() {
        assert_eq!(parse_amount("0.5").unwrap(), Amount::from_sat(50_000_000));
        assert_eq!(parse_amount("1btc").unwrap(), Amount::ONE_BTC);
        assert_eq!(parse_amount("1 BTC").unwrap(), Amount::ONE_BTC);
        assert_eq!(parse_amount("1234sat").unwrap(), Amount::from_sat(1234));
        assert_eq!(parse_amount("1234 sats").unwrap(), Amount::from_sat(1234));
        for bad in ["1", "abc", "0.000000001", "-1sat"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fees_are_basis_points_or_percent() {
        assert_eq!(parse_bps("250").unwrap().get(), 250);
        assert_eq!(parse_bps("2.5%").unwrap().get(), 250);
        assert_eq!(parse_bps("250bps").unwrap().get(), 250);
        assert!(parse_bps("10001").is_err());
        assert!(parse_bps("lots").is_err());
    }

    #[test]
    fn nested_values_flatten_to_field_value_lines() {
        let v = serde_json::json!({"a": 1, "b": {"c": "x,y"}, "d": [1, 2]});
        let text = key_value_csv(&v).unwrap();
        assert_eq!(text, "field,value\na,1\nb.c,\"x,y\"\nd.0,1\nd.1,2\n");
    }

    #[test]
    fn the_subcommands_parse() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: LedgerCommand,
        }
        let c = Cli::try_parse_from([
            "x",
            "audit",
            "--model",
            "fpps",
            "--fee-bps",
            "250",
            "--paid",
            "0.1",
            "--from",
            "2026-11-01",
        ])
        .unwrap();
        assert!(matches!(c.command, LedgerCommand::Audit(_)));
        assert!(
            Cli::try_parse_from(["x", "audit", "--model", "pps"]).is_err(),
            "--paid or --payouts"
        );
        let c = Cli::try_parse_from([
            "x",
            "split",
            "--amount",
            "0.5",
            "--hosting-fee-bps",
            "500",
            "--format",
            "csv",
        ])
        .unwrap();
        assert!(matches!(c.command, LedgerCommand::Split(_)));
        assert!(Cli::try_parse_from(["x", "report", "--by", "hour", "--format", "csv"]).is_ok());
        assert!(Cli::try_parse_from(["x", "variance", "--hashrate", "120T"]).is_ok());
    }
}
