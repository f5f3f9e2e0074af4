//! The JSON API, `/api/v1/...`: the shapes of `docs/api.md` (the operations contract), built
//! from snapshots. Lists that grow with the farm (ASICs, workers) render on the blocking pool.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AppState, Shown};
use crate::figures::asic::{Totals, REASONS};
use crate::figures::rates::Rates;
use crate::figures::unix_now;

/// The API's routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/asics", get(asics))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/history", get(history))
        .route("/api/v1/events", get(events))
        .route("/api/v1/blocks", get(blocks))
        .route("/api/v1/template", get(template))
        .route("/api/v1/upstream", get(upstream))
}

/// Totals as the API shows them: refusals by reason name, reasons seen only.
#[derive(Debug, Serialize)]
struct TotalsJson {
    accepted: u64,
    work: f64,
    rejected: BTreeMap<&'static str, u64>,
    last_share: u64,
}

impl From<&Totals> for TotalsJson {
    fn from(t: &Totals) -> Self {
        TotalsJson {
            accepted: t.accepted,
            work: t.work,
            rejected: REASONS
                .iter()
                .zip(t.rejected)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            last_share: t.last_share,
        }
    }
}

/// One connected ASIC.
#[derive(Debug, Serialize)]
struct AsicJson {
    #[serde(flatten)]
    identity: crate::figures::asic::Identity,
    difficulty: f64,
    rates: Rates,
    totals: TotalsJson,
}

/// One worker.
#[derive(Debug, Serialize)]
struct WorkerJson {
    worker: String,
    connected: usize,
    rates: Rates,
    totals: TotalsJson,
}

async fn summary(State(s): State<AppState>) -> Response {
    // Sums over every ASIC: off the runtime's workers on a large farm.
    let shown = s.shown.clone();
    let render = move || Json(summary_of(&shown)).into_response();
    s.heavy.run(render).await.unwrap_or_else(|r| r)
}

fn summary_of(s: &Shown) -> Value {
    let st = s.stats.snapshot();
    let mut totals = s.board.totals();
    // Refusals before a miner is on the board (not subscribed, unauthorized) count too.
    for (i, r) in REASONS.iter().enumerate() {
        totals.rejected[i] = totals.rejected[i].max(st.rejected_for(*r));
    }
    let upstream = s.board.upstream.state();
    let (node, down_since) = s.node();
    let (_, t) = s.template();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": s.started_at,
        "uptime_secs": unix_now().saturating_sub(s.started_at),
        "connections": st.connections,
        "miners": s.board.asics().len(),
        "hashrate": s.board.rates(),
        "totals": TotalsJson::from(&totals),
        "upstream": upstream,
        "template": {
            "height": t.height, "fees_sat": t.fees_sat, "txs": t.txs, "weight": t.weight,
            "age_secs": t.age_secs, "kind": t.kind, "node": node,
        },
        "blocks_found": st.blocks,
        "node": { "serving": node, "down_since": down_since },
    })
}

async fn asics(State(s): State<AppState>) -> Response {
    let shown = s.shown.clone();
    let render = move || {
        let mut list: Vec<AsicJson> = shown
            .board
            .asics()
            .iter()
            .map(|a| AsicJson {
                identity: a.identity.clone(),
                difficulty: a.difficulty(),
                rates: a.rates(),
                totals: TotalsJson::from(&a.totals()),
            })
            .collect();
        list.sort_by_key(|a| a.identity.id);
        Json(list).into_response()
    };
    s.heavy.run(render).await.unwrap_or_else(|r| r)
}

async fn workers(State(s): State<AppState>) -> Response {
    let shown = s.shown.clone();
    let render = move || {
        let list: Vec<WorkerJson> = shown
            .board
            .workers()
            .into_iter()
            .map(|w| WorkerJson {
                worker: w.worker.to_string(),
                connected: w.connected,
                rates: w.rates,
                totals: TotalsJson::from(&w.totals),
            })
            .collect();
        Json(list).into_response()
    };
    s.heavy.run(render).await.unwrap_or_else(|r| r)
}

async fn history(State(s): State<AppState>) -> Response {
    let points = s
        .shown
        .board
        .history
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .points();
    Json(points).into_response()
}

/// `?since=<seq>`: only events after it.
#[derive(Debug, Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn events(State(s): State<AppState>, Query(q): Query<Since>) -> Response {
    Json(s.shown.board.events.since(q.since)).into_response()
}

async fn blocks(State(s): State<AppState>) -> Response {
    Json(s.shown.board.blocks.list()).into_response()
}

async fn template(State(s): State<AppState>) -> Json<Value> {
    let (t, f) = s.shown.template();
    let excluded = s.shown.exclusions(t.id);
    let (node, _) = s.shown.node();
    Json(json!({
        "height": f.height, "fees_sat": f.fees_sat, "txs": f.txs, "weight": f.weight,
        "age_secs": f.age_secs, "kind": f.kind, "node": node,
        "excluded": excluded.excluded,
        "excluded_by_reason": excluded.by_reason,
    }))
}

async fn upstream(State(s): State<AppState>) -> Response {
    // Each route's miners are summed over every ASIC: off the runtime's workers.
    let shown = s.shown.clone();
    let render = move || Json(upstream_of(&shown)).into_response();
    s.heavy.run(render).await.unwrap_or_else(|r| r)
}

fn upstream_of(shown: &Shown) -> Value {
    let state = shown.board.upstream.state();
    let st = shown.stats.snapshot();
    let d = shown.stats.declarations.snapshot();
    json!({
        "mode": state.mode, "pool": state.pool, "since": state.since,
        "failovers": shown.board.upstream.failovers(),
        "declarations": { "sent": d.sent, "accepted": d.accepted, "refused": d.refused },
        "pool_shares": {
            "submitted": st.pool_submitted, "accepted": st.pool_accepted,
            "rejected": st.pool_rejected, "dropped": st.pool_dropped,
        },
        "work": {
            "validated": st.pool_work_validated,
            "acknowledged": st.pool_work_acknowledged,
        },
        "routes": super::routes::rows(shown),
    })
}
