//! `/api/v1/ledger/...`: the reports of `jd-proxy ledger` on the HTTP API, with the same
//! arguments as query parameters (`?from=2026-11-01&to=2026-12-01&format=csv`).
//!
//! - `status`: the writer's counters (written, spooled, replayed, failures, last error);
//! - `report` (`by=worker|customer|gateway|hour|day|refusal` for CSV);
//! - `audit` (`model`, `fee_bps`, `paid`; PPLNS: `window`, `pool_hashrate`);
//! - `split` (`amount`, `hosting_fee_bps`, `remap`);
//! - `variance` (`hashrate` or measured, `fee_bps`, `scheme`, `period_days`).
//!
//! A bad argument is a 400 naming it; a ledger with nothing to compute from, 404; a database
//! that does not answer, 503. Each answer reads the ledger off the share path, as the CLI does.

use std::num::NonZeroU64;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ledger_math::{Hashrate, Model, PooledScheme};
use serde::Deserialize;
use serde_json::json;

use super::cli::{key_value_csv, parse_amount, parse_bps, report_csv};
use super::report::{
    self, AuditRequest, By, Format, PaidInput, ReportError, Span, VarianceRequest,
};
use super::LedgerHandle;

/// The ledger's routes; without a ledger every one says it is disabled.
pub fn routes<S: Clone + Send + Sync + 'static>(ledger: Option<LedgerHandle>) -> Router<S> {
    Router::new()
        .route("/api/v1/ledger/status", get(status))
        .route("/api/v1/ledger/report", get(report_route))
        .route("/api/v1/ledger/audit", get(audit))
        .route("/api/v1/ledger/split", get(split))
        .route("/api/v1/ledger/variance", get(variance))
        .with_state(ledger)
}

type Ledger = State<Option<LedgerHandle>>;

/// What every report takes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Common {
    from: Option<String>,
    to: Option<String>,
    format: Format,
    by: By,
    remap: bool,
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(flatten)]
    common: Common,
    model: String,
    fee_bps: Option<String>,
    paid: String,
    window: Option<String>,
    pool_hashrate: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SplitQuery {
    #[serde(flatten)]
    common: Common,
    amount: String,
    hosting_fee_bps: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VarianceQuery {
    #[serde(flatten)]
    common: Common,
    hashrate: Option<String>,
    fee_bps: Option<String>,
    scheme: Option<String>,
    period_days: Option<u64>,
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (code, Json(json!({ "error": message.to_string() }))).into_response()
}

fn failed(e: &ReportError) -> Response {
    let code = match e {
        ReportError::Input(_) => StatusCode::BAD_REQUEST,
        ReportError::Empty(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e)
}

fn bad(e: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, e)
}

fn disabled() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "the share ledger is disabled ([ledger] enabled = false)",
    )
}

fn csv(text: anyhow::Result<String>) -> Response {
    match text {
        Ok(t) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], t).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The ledger and the period, or the answer that says why not.
async fn open(
    h: Option<LedgerHandle>,
    c: &Common,
) -> Result<(LedgerHandle, ledger::Ledger, Span), Response> {
    let h = h.ok_or_else(disabled)?;
    let now = crate::figures::unix_now() as i64;
    let span = Span::parse(c.from.as_deref(), c.to.as_deref(), now).map_err(|e| failed(&e))?;
    let l = h.reader().await.map_err(|e| failed(&e.into()))?;
    Ok((h, l, span))
}

async fn status(State(h): Ledger) -> Response {
    match h {
        Some(h) => Json(json!({
            "url": h.url.to_string(),
            "gateway": h.gateway,
            "status": h.status.snapshot(),
        }))
        .into_response(),
        None => disabled(),
    }
}

async fn report_route(State(h): Ledger, Query(c): Query<Common>) -> Response {
    let (h, l, span) = match open(h, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match report::report(&l, &h.customers, span, c.remap).await {
        Ok(r) if c.format == Format::Csv => csv(report_csv(&r, c.by)),
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(&e),
    }
}

async fn audit(State(h): Ledger, Query(q): Query<AuditQuery>) -> Response {
    let req = match audit_request(&q) {
        Ok(r) => r,
        Err(e) => return bad(format!("{e:#}")),
    };
    let (_, l, span) = match open(h, &q.common).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match report::audit_period(&l, span, &req).await {
        Ok(r) if q.common.format == Format::Csv => csv(r.discrepancy.to_csv().map_err(Into::into)),
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(&e),
    }
}

fn audit_request(q: &AuditQuery) -> anyhow::Result<AuditRequest> {
    use anyhow::Context;
    Ok(AuditRequest {
        model: q.model.parse::<Model>()?,
        pool_fee: parse_bps(q.fee_bps.as_deref().unwrap_or("0")).context("fee_bps")?,
        paid: PaidInput::Total(parse_amount(&q.paid).context("paid")?),
        window: q.window.clone(),
        pool_hashrate: q
            .pool_hashrate
            .as_deref()
            .map(|h| h.parse::<Hashrate>().context("pool_hashrate"))
            .transpose()?,
        pool_blocks: None,
    })
}

async fn split(State(h): Ledger, Query(q): Query<SplitQuery>) -> Response {
    let amount = match parse_amount(&q.amount) {
        Ok(a) => a,
        Err(e) => return bad(format!("amount: {e:#}")),
    };
    let fee = match parse_bps(q.hosting_fee_bps.as_deref().unwrap_or("0")) {
        Ok(f) => f,
        Err(e) => return bad(format!("hosting_fee_bps: {e:#}")),
    };
    let (h, l, span) = match open(h, &q.common).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match report::split(&l, &h.customers, span, amount, fee, q.common.remap).await {
        Ok(s) if q.common.format == Format::Csv => csv(s.to_csv().map_err(Into::into)),
        Ok(s) => Json(s).into_response(),
        Err(e) => failed(&e),
    }
}

async fn variance(State(h): Ledger, Query(q): Query<VarianceQuery>) -> Response {
    let req = match variance_request(&q) {
        Ok(r) => r,
        Err(e) => return bad(format!("{e:#}")),
    };
    let (_, l, span) = match open(h, &q.common).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match report::variance(&l, span, &req).await {
        Ok(v) if q.common.format == Format::Csv => csv(serde_json::to_value(&v)
            .map_err(Into::into)
            .and_then(|v| key_value_csv(&v))),
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(&e),
    }
}

fn variance_request(q: &VarianceQuery) -> anyhow::Result<VarianceRequest> {
    use anyhow::Context;
    let scheme = match q.scheme.as_deref().unwrap_or("fpps") {
        "pps" => PooledScheme::Pps,
        "fpps" => PooledScheme::Fpps,
        other => anyhow::bail!("scheme {other:?}: pps or fpps"),
    };
    let days = q.period_days.unwrap_or(30);
    Ok(VarianceRequest {
        hashrate: q
            .hashrate
            .as_deref()
            .map(|h| h.parse::<Hashrate>().context("hashrate"))
            .transpose()?,
        pool_fee: parse_bps(q.fee_bps.as_deref().unwrap_or("0")).context("fee_bps")?,
        scheme,
        period_secs: days
            .checked_mul(86_400)
            .and_then(NonZeroU64::new)
            .context("period_days must be above 0")?,
    })
}
