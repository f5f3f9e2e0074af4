//! The operators' HTTP server: the JSON API (`/api/v1/...`, see `docs/api.md`), Prometheus
//! `/metrics` (`docs/metrics.md`) and the dashboard at `/`, on `[http] listen` (loopback by
//! default).
//!
//! It reads what the rest of the proxy already keeps ([`Board`], [`Stats`], the current job,
//! which node serves) and never touches the share path: the server and its rendering are
//! [`template_provider::http`]'s, shared with the template provider.

mod api;
mod assets;
pub mod fold;
pub mod metrics;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use mining_types::Template;
use prometheus_client::registry::Registry;
use template_provider::figures::{Exclusions, SourceFigures, TemplateFigures};
use template_provider::http::{encode, metrics_response, Heavy};
use template_provider::nodes::Serving;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::figures::{unix_now, Board};
use crate::job::Job;
use crate::metrics::Stats;

/// What the server shows.
#[derive(Debug)]
pub struct Shown {
    /// ASICs, workers, history, events, upstream, blocks.
    pub board: Arc<Board>,
    /// Process-wide counters.
    pub stats: Arc<Stats>,
    /// The job mined now (its template: the farm's, or the pool's own).
    pub jobs: watch::Receiver<Arc<Job>>,
    /// Which node serves templates; `None` with an external template provider.
    pub serving: Option<watch::Receiver<Serving>>,
    /// The nodes' names, in configured order.
    pub nodes: Vec<String>,
    /// The policy's exclusions per template; `None` with an external template provider.
    pub source: Option<SourceFigures>,
    /// Unix seconds the proxy started.
    pub started_at: u64,
    /// The share ledger, for `/api/v1/ledger/...`; `None` when disabled.
    pub ledger: Option<crate::ledger::LedgerHandle>,
    /// Which route each ASIC mines for; `None`: every ASIC counts for the first route.
    pub router: Option<Arc<crate::routing::Router>>,
}

impl Shown {
    /// The template mined now, and its figures.
    pub fn template(&self) -> (Arc<Template>, TemplateFigures) {
        let t = self.jobs.borrow().template.clone();
        let f = TemplateFigures::of(&t, unix_now());
        (t, f)
    }

    /// What the policy removed from template `id`.
    pub fn exclusions(&self, id: mining_types::TemplateId) -> Arc<Exclusions> {
        self.source
            .as_ref()
            .map(|s| s.exclusions.of(id))
            .unwrap_or_default()
    }

    /// The node serving templates, or since when none does (unix seconds).
    pub fn node(&self) -> (Option<String>, Option<u64>) {
        let Some(serving) = &self.serving else {
            return (None, None);
        };
        match *serving.borrow() {
            Serving::Node(i) => (self.nodes.get(i).cloned(), None),
            Serving::NoNode(since) => {
                let ago = since.elapsed().as_secs();
                (None, Some(unix_now().saturating_sub(ago)))
            }
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
struct AppState {
    shown: Arc<Shown>,
    registry: Arc<Registry>,
    heavy: Heavy,
}

/// The routes, over `shown`, with `/metrics` bounded to `max_metric_workers` named workers.
pub fn router(shown: Arc<Shown>, max_metric_workers: usize) -> Router {
    let ledger = crate::ledger::api::routes(shown.ledger.clone());
    let registry = Arc::new(metrics::registry(shown.clone(), max_metric_workers));
    let state = AppState {
        shown,
        registry,
        heavy: Heavy::default(),
    };
    Router::new()
        .route("/metrics", get(scrape))
        .merge(api::routes())
        .merge(assets::routes())
        .merge(ledger)
        .with_state(state)
}

async fn scrape(State(s): State<AppState>) -> Response {
    let registry = s.registry.clone();
    match s.heavy.run(move || encode::render(&registry)).await {
        Ok(body) => metrics_response(body),
        Err(r) => r,
    }
}

/// Serves [`router`] on `config.listen` until shutdown; the address bound at start, if any.
pub async fn start(
    config: &HttpConfig,
    shown: Arc<Shown>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Option<SocketAddr> {
    let listen = config.listen?;
    let router = router(shown, config.max_metric_workers);
    template_provider::http::start(listen, router, tracker, shutdown, "http.listen").await
}

/// Timing for the job publisher's clean jobs, when the nodes say when they saw each tip.
pub fn notify_timing(
    source: Option<&SourceFigures>,
    board: &Arc<Board>,
) -> Option<crate::figures::latency::NotifyTiming> {
    source.map(|f| crate::figures::latency::NotifyTiming {
        tips: f.tips.clone(),
        board: board.clone(),
        last: None,
    })
}

/// The nodes' verdicts on found blocks, onto the board (blocks on the farm's nodes only: an
/// external template provider does not say).
pub fn follow_fates(
    route: &crate::blocks::NodeRoute,
    board: &Arc<Board>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    if let crate::blocks::NodeRoute::Node(blocks) = route {
        tracker.spawn(board.clone().follow_blocks(blocks.news(), shutdown.clone()));
    }
}

/// A `node` event each time the node serving templates changes, or none answers.
pub fn follow_nodes(
    serving: Option<watch::Receiver<Serving>>,
    nodes: Vec<String>,
    board: &Arc<Board>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let Some(mut serving) = serving else {
        return;
    };
    let (board, shutdown) = (board.clone(), shutdown.clone());
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = serving.changed() => if r.is_err() { return },
            }
            let node = match *serving.borrow_and_update() {
                Serving::Node(i) => nodes.get(i).cloned().unwrap_or_else(|| i.to_string()),
                Serving::NoNode(_) => "none".to_owned(),
            };
            board
                .events
                .push(crate::figures::events::EventKind::Node { node });
        }
    });
}
