//! The template provider's own figures: its template, its clients, the blocks its clients found
//! and the nodes' verdicts, the policy's exclusions. `tp_*` metrics and a small JSON API.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mining_types::Template;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

use super::encode::{counter, counters, gauge, gauges, render};
use super::process::ProcessCollector;
use super::{metrics_response, Heavy};
use crate::blocks::journal::unix_now;
use crate::figures::{BlockTally, SourceFigures, TemplateFigures};

/// What the provider shows.
#[derive(Debug)]
pub struct ProviderFigures {
    /// The template served now.
    pub templates: watch::Receiver<Arc<Template>>,
    /// The policy's exclusions.
    pub source: SourceFigures,
    /// Template Distribution clients connected.
    pub clients: Arc<AtomicUsize>,
    /// Blocks the clients found, and the nodes' verdicts.
    pub blocks: Arc<BlockTally>,
    /// Unix seconds the provider started.
    pub started_at: u64,
}

impl ProviderFigures {
    fn template(&self) -> (Arc<Template>, TemplateFigures) {
        let t = self.templates.borrow().clone();
        let f = TemplateFigures::of(&t, unix_now());
        (t, f)
    }
}

/// The `tp_*` metrics, read at scrape time.
#[derive(Debug, Clone)]
struct TpCollector(Arc<ProviderFigures>);

impl Collector for TpCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (t, f) = self.0.template();
        let e = &mut enc;
        gauge(
            e,
            "tp_template_age_seconds",
            "Seconds since the served template's own time.",
            f.age_secs,
        )?;
        gauge(
            e,
            "tp_template_height",
            "Height of the block the served template builds.",
            f.height,
        )?;
        gauge(
            e,
            "tp_template_fees_sats",
            "Fees of the served template's transactions.",
            f.fees_sat,
        )?;
        gauge(
            e,
            "tp_template_transactions",
            "Transactions in the served template.",
            f.txs,
        )?;
        gauge(
            e,
            "tp_template_weight",
            "Weight of the served template's transactions.",
            f.weight,
        )?;
        let excluded = self.0.source.exclusions.of(t.id);
        gauges(
            e,
            "tp_policy_excluded_transactions",
            "Transactions the farm's policy removed from the served template, by rule.",
            excluded
                .by_reason
                .iter()
                .map(|(r, n)| ([("reason", *r)], *n)),
        )?;
        gauge(
            e,
            "tp_clients",
            "Template Distribution clients connected.",
            self.0.clients.load(Relaxed),
        )?;
        let (found, fates) = self.0.blocks.snapshot();
        counter(
            e,
            "tp_blocks_found",
            "Blocks the clients found (solutions submitted).",
            found,
        )?;
        counters(
            e,
            "tp_block_fates",
            "The nodes' verdicts on found blocks, by node and fate.",
            fates
                .iter()
                .map(|(n, f, v)| ([("node", n.as_str()), ("fate", f)], *v)),
        )
    }
}

/// `/metrics` and `/api/v1/{summary,template}` for the provider.
pub fn router(figures: Arc<ProviderFigures>) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TpCollector(figures.clone())));
    registry.register_collector(Box::new(ProcessCollector {
        started_at: figures.started_at,
    }));
    let state = TpState {
        figures,
        registry: Arc::new(registry),
        heavy: Heavy::default(),
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/template", get(template))
        .with_state(state)
}

#[derive(Debug, Clone)]
struct TpState {
    figures: Arc<ProviderFigures>,
    registry: Arc<Registry>,
    heavy: Heavy,
}

async fn metrics(State(s): State<TpState>) -> Response {
    let registry = s.registry.clone();
    match s.heavy.run(move || render(&registry)).await {
        Ok(body) => metrics_response(body),
        Err(r) => r,
    }
}

async fn summary(State(s): State<TpState>) -> Response {
    let (_, template) = s.figures.template();
    let (blocks_found, _) = s.figures.blocks.snapshot();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": s.figures.started_at,
        "uptime_secs": unix_now().saturating_sub(s.figures.started_at),
        "clients": s.figures.clients.load(Relaxed),
        "template": template,
        "blocks_found": blocks_found,
    }))
    .into_response()
}

async fn template(State(s): State<TpState>) -> Response {
    let (t, f) = s.figures.template();
    let excluded = s.figures.source.exclusions.of(t.id);
    Json(json!({
        "height": f.height,
        "fees_sat": f.fees_sat,
        "txs": f.txs,
        "weight": f.weight,
        "age_secs": f.age_secs,
        "kind": f.kind,
        "excluded": excluded.excluded,
        "excluded_by_reason": excluded.by_reason,
    }))
    .into_response()
}
