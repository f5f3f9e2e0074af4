//! The ledger's reports, the same for the CLI (`jd-proxy ledger report|audit|split|variance`)
//! and the HTTP API (`/api/v1/ledger/...`): each reads one period's rows from the ledger and
//! hands them to a pure function ([`books`], [`pay`], and the `ledger-math` crate).
//!
//! The requests are plain strings as typed on the command line or in a query string, parsed
//! here once, so both front ends accept exactly the same input.

pub mod books;
pub mod pay;

use std::num::NonZeroU64;

use bitcoin::Amount;
use ledger::{Ledger, LedgerError, Period};
use ledger_math::{
    audit, fpps, pplns, pps, AuditPeriod, Bps, CustomerMap, Discrepancy, Expected, Hashrate, Model,
    Paid, Payout, PooledScheme, Split, Timestamp, Variance, VarianceInput, MONTH_SECS,
};
use serde::{Deserialize, Serialize};

pub use self::books::Report;

/// Why a report could not be made, and whose doing it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A bad argument: the caller's to fix.
    #[error("{0}")]
    Input(String),
    /// The ledger has nothing to compute from.
    #[error("{0}")]
    Empty(String),
    /// The database failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn input(e: impl std::fmt::Display) -> ReportError {
    ReportError::Input(e.to_string())
}

/// A report's period: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First second in.
    pub from: Timestamp,
    /// First second out.
    pub to: Timestamp,
}

/// A period when none is given: the last 30 days.
const DEFAULT_SPAN_SECS: i64 = 30 * 86_400;

impl Span {
    /// `from` and `to` as typed (`2026-11-01`, `2026-11-29T12:00Z`, Unix seconds); `to`
    /// defaults to `now`, `from` to 30 days before `to`.
    ///
    /// # Errors
    /// A date that does not parse, or a period that ends before it starts.
    pub fn parse(from: Option<&str>, to: Option<&str>, now: i64) -> Result<Span, ReportError> {
        let to = match to {
            Some(t) => Timestamp::parse(t).map_err(|e| input(format!("--to: {e}")))?,
            None => Timestamp::from_unix(now),
        };
        let from = match from {
            Some(f) => Timestamp::parse(f).map_err(|e| input(format!("--from: {e}")))?,
            None => to.add_secs(-DEFAULT_SPAN_SECS),
        };
        if from >= to {
            return Err(input(format!(
                "--from ({}) must be before --to ({})",
                from.unix(),
                to.unix()
            )));
        }
        Ok(Span { from, to })
    }

    /// As the ledger queries it.
    pub fn period(self) -> Period {
        Period {
            from: self.from.unix(),
            to: self.to.unix(),
        }
    }

    /// The UTC days it touches.
    fn days(self) -> Result<AuditPeriod, ReportError> {
        AuditPeriod::new(self.from.day(), self.to.add_secs(-1).day()).map_err(input)
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One table, with a header line.
    Csv,
    /// Everything, pretty-printed.
    #[default]
    Json,
}

/// Which table of a report CSV shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Per worker.
    #[default]
    Worker,
    /// Per customer.
    Customer,
    /// Per gateway.
    Gateway,
    /// Hour by hour: validated work against the pool's acknowledgements.
    Hour,
    /// Day by day.
    Day,
    /// The pools' refusals by reason.
    Refusal,
}

/// `report`: the books of a period.
pub async fn report(
    ledger: &Ledger,
    customers: &CustomerMap,
    span: Span,
    remap: bool,
) -> Result<Report, ReportError> {
    let p = span.period();
    let rows = books::Rows {
        work: ledger.work(p).await?,
        acks: ledger.acks(p).await?,
        refusals: ledger.refusals(p).await?,
        blocks: ledger.blocks(p).await?,
    };
    Ok(Report::build(span, rows, customers, remap))
}

/// What `audit` compares the expectation with.
#[derive(Debug, Clone)]
pub enum PaidInput {
    /// One amount for the period.
    Total(Amount),
    /// The pool's payouts, with the days between work and payout.
    Payouts(Vec<Payout>, i64),
}

/// An `audit` request, parsed.
#[derive(Debug, Clone)]
pub struct AuditRequest {
    /// The pool's scheme.
    pub model: Model,
    /// The pool's fee.
    pub pool_fee: Bps,
    /// What was paid.
    pub paid: PaidInput,
    /// PPLNS: the window (`N` work units or `kxD`).
    pub window: Option<String>,
    /// PPLNS: the pool's hashrate, which places each window.
    pub pool_hashrate: Option<Hashrate>,
    /// PPLNS: the pool's blocks (time, reward); default: the farm's own blocks.
    pub pool_blocks: Option<Vec<Payout>>,
}

/// What `audit` prints: the expectation and the discrepancy.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// What the model expects, per day.
    pub expected: Expected,
    /// Against what was paid.
    pub discrepancy: Discrepancy,
    /// PPLNS: the farm's part of each block.
    pub blocks: Vec<ledger_math::BlockShare>,
}

/// `audit`: the pay a model expects for the period, against what the pool paid.
pub async fn audit_period(
    ledger: &Ledger,
    span: Span,
    req: &AuditRequest,
) -> Result<AuditReport, ReportError> {
    let days = span.days()?;
    let (expected, blocks) = match req.model {
        Model::Pps | Model::Fpps => {
            let p = span.period();
            let series = pay::series(&ledger.work(p).await?, &ledger.chain(p).await?)?;
            let f = if req.model == Model::Pps { pps } else { fpps };
            (f(&series, req.pool_fee), Vec::new())
        }
        Model::Pplns => pplns_expected(ledger, span, req).await?,
    };
    let paid = match &req.paid {
        PaidInput::Total(a) => Paid::Total(*a),
        PaidInput::Payouts(p, lag) => Paid::Payouts {
            payouts: p,
            credit_lag_days: *lag,
        },
    };
    let discrepancy = audit(&expected, &paid, days);
    Ok(AuditReport {
        expected,
        discrepancy,
        blocks,
    })
}

async fn pplns_expected(
    ledger: &Ledger,
    span: Span,
    req: &AuditRequest,
) -> Result<(Expected, Vec<ledger_math::BlockShare>), ReportError> {
    let need = |what: &str| input(format!("PPLNS needs {what}"));
    let window_text = req
        .window
        .as_deref()
        .ok_or_else(|| need("--window (work units, or e.g. 2xD)"))?;
    let rate = req
        .pool_hashrate
        .ok_or_else(|| need("--pool-hashrate, which places each block's window"))?;
    let p = span.period();
    let chain = ledger
        .chain(Period {
            from: i64::MIN,
            to: p.to,
        })
        .await?;
    let window = pay::window(window_text, &chain)?;
    let found = ledger.blocks(p).await?;
    let blocks: Vec<_> = pay::pplns_blocks(req.pool_blocks.as_deref(), &found, &chain)
        .into_iter()
        .filter(|(at, _)| *at >= span.from && *at < span.to)
        .collect();
    let placed = pay::place(&blocks, window, rate)?;
    // The windows of the first blocks reach back before the period.
    let from = ledger_math::ledger_span(&placed).map_or(span.from, |(f, _)| f.min(span.from));
    let work = ledger
        .work(Period {
            from: from.unix(),
            to: p.to,
        })
        .await?;
    let series = pay::series(&work, &chain)?;
    let e = pplns(&series, &placed, window, req.pool_fee).map_err(input)?;
    Ok((e.expected, e.blocks))
}

/// `split`: an amount received for the period, split among customers by their work.
pub async fn split(
    ledger: &Ledger,
    customers: &CustomerMap,
    span: Span,
    amount: Amount,
    hosting_fee: Bps,
    remap: bool,
) -> Result<Split, ReportError> {
    let work = ledger.work(span.period()).await?;
    let by_customer = pay::work_by_customer(&work, customers, remap)?;
    ledger_math::split(amount, &by_customer, hosting_fee)
        .map_err(|e| ReportError::Empty(e.to_string()))
}

/// A `variance` request, parsed.
#[derive(Debug, Clone)]
pub struct VarianceRequest {
    /// The hashrate; `None`: measured from the ledger over the period.
    pub hashrate: Option<Hashrate>,
    /// The pool's fee.
    pub pool_fee: Bps,
    /// The pool's scheme.
    pub scheme: PooledScheme,
    /// The period the spread is over (a month by default).
    pub period_secs: NonZeroU64,
}

/// What `variance` prints.
#[derive(Debug, Clone, Serialize)]
pub struct VarianceReport {
    /// The hashrate used, hashes per second.
    pub hashrate: f64,
    /// Whether it was measured from the ledger.
    pub measured: bool,
    /// The network difficulty used (the period's last).
    pub network_difficulty: f64,
    /// The subsidy used, satoshis.
    pub subsidy_sat: u64,
    /// Fees per block used (the period's average), satoshis.
    pub fees_per_block_sat: u64,
    /// Solo against pooled.
    #[serde(flatten)]
    pub variance: Variance,
}

/// `variance`: solo against pooled for the farm's hashrate, with the chain as last mined.
pub async fn variance(
    ledger: &Ledger,
    span: Span,
    req: &VarianceRequest,
) -> Result<VarianceReport, ReportError> {
    let p = span.period();
    let mut chain = ledger.chain(p).await?;
    if chain.is_empty() {
        chain = ledger
            .chain(Period {
                from: i64::MIN,
                to: p.to,
            })
            .await?;
    }
    let last = chain
        .iter()
        .max_by_key(|c| c.bucket_start)
        .ok_or_else(|| ReportError::Empty("the ledger has no chain figures yet".into()))?;
    let fees = chain.iter().map(|c| c.fees_sat.max(0) as f64).sum::<f64>() / chain.len() as f64;
    let (hashrate, measured) = match req.hashrate {
        Some(h) => (h, false),
        None => {
            let work = pay::total_work(&ledger.work(p).await?);
            let secs = (span.to.unix() - span.from.unix()) as f64;
            let h = Hashrate::from_work(work, secs)
                .filter(|h| h.get() > 0.0)
                .ok_or_else(|| {
                    ReportError::Empty(
                        "no work in the period to measure a hashrate from: give --hashrate".into(),
                    )
                })?;
            (h, true)
        }
    };
    let input_ = VarianceInput {
        hashrate,
        network_difficulty: mining_types::Difficulty::new(last.network_difficulty)
            .map_err(input)?,
        subsidy: Amount::from_sat(u64::try_from(last.subsidy_sat).unwrap_or(0)),
        fees_per_block: Amount::from_sat(fees.round() as u64),
        pool_fee: req.pool_fee,
        pooled: req.scheme,
        period_secs: req.period_secs,
    };
    let variance = ledger_math::variance(&input_).map_err(input)?;
    Ok(VarianceReport {
        hashrate: hashrate.get(),
        measured,
        network_difficulty: last.network_difficulty,
        subsidy_sat: input_.subsidy.to_sat(),
        fees_per_block_sat: input_.fees_per_block.to_sat(),
        variance,
    })
}

/// A month, for the variance period's default.
pub fn month() -> NonZeroU64 {
    NonZeroU64::new(MONTH_SECS).unwrap_or(NonZeroU64::MIN)
}
