//! `/metrics`: every family of the operations contract (`docs/metrics.md`), written at scrape
//! time from snapshots of the board, the counters and the current job. Nothing here is
//! updated on the share path: the collectors only read.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use template_provider::http::encode::{counter, counters, gauge, gauges, histogram};
use template_provider::http::process::ProcessCollector;

use super::fold::{self, Folded, Named};
use super::Shown;
use crate::figures::asic::REASONS;
use crate::figures::upstream::UpstreamMode;

/// The registry of jd-proxy's collectors, bounded to `max_workers` named workers.
pub fn registry(shown: Arc<Shown>, max_workers: usize) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector {
        started_at: shown.started_at,
    }));
    registry.register_collector(Box::new(ProxyCollector {
        shown,
        named: Mutex::new(Named::new(max_workers)),
    }));
    registry
}

/// Reads everything of jd-proxy at scrape time.
#[derive(Debug)]
struct ProxyCollector {
    shown: Arc<Shown>,
    /// Who has series of their own: sticky across scrapes.
    named: Mutex<Named>,
}

impl Collector for ProxyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.shown;
        let difficulties = s
            .board
            .asics()
            .into_iter()
            .map(|a| (a.identity.worker.clone(), a.difficulty()));
        let rows = fold::rows(s.board.workers(), difficulties);
        let folded = self
            .named
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fold(rows);
        workers(&mut enc, &folded)?;
        farm(&mut enc, s)?;
        upstream(&mut enc, s)?;
        super::routes::metrics(&mut enc, &super::routes::rows(s))?;
        template(&mut enc, s)?;
        blocks(&mut enc, s)
    }
}

/// The per-worker families, the overflow row last.
pub(super) fn workers(enc: &mut DescriptorEncoder, f: &Folded) -> fmt::Result {
    let all: Vec<_> = f.rows.iter().chain(f.other.as_ref()).collect();
    let label = |w: &fold::WorkerRow| [("worker", w.worker.to_string())];
    gauges(
        enc,
        "jd_proxy_worker_hashrate_hashes_per_second",
        "Hashrate of the worker's connected ASICs, 5 minute estimate.",
        all.iter().map(|w| (label(w), w.rates.h5m)),
    )?;
    counters(
        enc,
        "jd_proxy_worker_shares_accepted",
        "Shares accepted from the worker since start.",
        all.iter().map(|w| (label(w), w.totals.accepted)),
    )?;
    counters(
        enc,
        "jd_proxy_worker_work_accepted",
        "Summed difficulty of the worker's accepted shares.",
        all.iter().map(|w| (label(w), w.totals.work)),
    )?;
    let rejected = all.iter().flat_map(|w| {
        let rows = REASONS.iter().zip(w.totals.rejected);
        rows.filter(|(_, n)| *n > 0).map(|(r, n)| {
            let labels = vec![
                ("worker", w.worker.to_string()),
                ("reason", r.as_str().into()),
            ];
            (labels, n)
        })
    });
    counters(
        enc,
        "jd_proxy_worker_shares_rejected",
        "Shares refused from the worker, by reason (reasons seen only).",
        rejected,
    )?;
    gauges(
        enc,
        "jd_proxy_worker_difficulty",
        "Share difficulty asked of the worker (mean over its connected ASICs).",
        all.iter().filter_map(|w| Some((label(w), w.difficulty()?))),
    )?;
    gauges(
        enc,
        "jd_proxy_worker_last_share_timestamp_seconds",
        "When the worker's last accepted share came, unix seconds.",
        all.iter()
            .filter(|w| w.totals.last_share > 0)
            .map(|w| (label(w), w.totals.last_share)),
    )?;
    gauge(
        enc,
        "jd_proxy_workers_folded",
        "Workers past http.max_metric_workers, summed into worker=\"(other workers)\".",
        f.folded,
    )
}

fn farm(enc: &mut DescriptorEncoder, s: &Shown) -> fmt::Result {
    let rates = s.board.rates();
    let windows = [("5m", rates.h5m), ("1h", rates.h1h), ("24h", rates.h24h)];
    gauges(
        enc,
        "jd_proxy_hashrate_hashes_per_second",
        "The farm's hashrate estimate over a window.",
        windows.map(|(w, v)| ([("window", w)], v)),
    )?;
    let st = s.stats.snapshot();
    counter(
        enc,
        "jd_proxy_shares_accepted",
        "Shares accepted.",
        st.accepted,
    )?;
    counter(
        enc,
        "jd_proxy_work_accepted",
        "Summed difficulty of accepted shares.",
        st.accepted_work,
    )?;
    counters(
        enc,
        "jd_proxy_shares_rejected",
        "Shares refused, by reason.",
        st.rejected.iter().map(|(r, n)| ([("reason", *r)], *n)),
    )?;
    gauge(
        enc,
        "jd_proxy_connections",
        "Miner connections open.",
        st.connections,
    )?;
    gauge(
        enc,
        "jd_proxy_miners",
        "Miners subscribed and authorized (on the board).",
        s.board.asics().len(),
    )
}

fn upstream(enc: &mut DescriptorEncoder, s: &Shown) -> fmt::Result {
    let state = s.board.upstream.state();
    let current_pool = state.pool.clone().unwrap_or_default();
    let modes = UpstreamMode::ALL.map(|m| {
        let current = m == state.mode;
        let p = if current {
            current_pool.clone()
        } else {
            String::new()
        };
        (
            [("mode", m.as_str().to_owned()), ("pool", p)],
            u32::from(current),
        )
    });
    gauges(
        enc,
        "jd_proxy_upstream_mode",
        "1 for how the farm mines now (solo, declared jobs, or the pool's own jobs), 0 otherwise.",
        modes,
    )?;
    gauge(
        enc,
        "jd_proxy_upstream_mode_since_timestamp_seconds",
        "Since when the farm mines this way, unix seconds.",
        state.since,
    )?;
    counters(
        enc,
        "jd_proxy_failovers",
        "Times mining left an upstream, by reason.",
        s.board
            .upstream
            .failovers()
            .into_iter()
            .map(|(r, n)| ([("reason", r)], n)),
    )?;
    let d = s.stats.declarations.snapshot();
    let declared = [
        ("sent", String::new(), d.sent),
        ("accepted", String::new(), d.accepted),
    ];
    let refused = d.refused.into_iter().map(|(c, n)| ("refused", c, n));
    counters(
        enc,
        "jd_proxy_declarations",
        "DeclareMiningJob sent to the pools' JDS and their answers, refusals by code.",
        declared
            .into_iter()
            .chain(refused)
            .map(|(r, c, n)| ([("result", r.to_owned()), ("code", c)], n)),
    )?;
    pool(enc, s)
}

fn pool(enc: &mut DescriptorEncoder, s: &Shown) -> fmt::Result {
    let st = s.stats.snapshot();
    let verdicts = [
        ("submitted", st.pool_submitted),
        ("accepted", st.pool_accepted),
        ("rejected", st.pool_rejected),
        ("dropped", st.pool_dropped),
    ];
    counters(
        enc,
        "jd_proxy_pool_shares",
        "Shares for the pool: sent, its verdicts, and those that never reached it.",
        verdicts.map(|(v, n)| ([("verdict", v)], n)),
    )?;
    let work = [
        ("validated", st.pool_work_validated),
        ("acknowledged", st.pool_work_acknowledged as f64),
    ];
    counters(
        enc,
        "jd_proxy_pool_work",
        "Work sent to the pool at its targets (validated) and what it acknowledged.",
        work.map(|(k, v)| ([("kind", k)], v)),
    )
}

fn template(enc: &mut DescriptorEncoder, s: &Shown) -> fmt::Result {
    let (t, f) = s.template();
    let help = |what: &str| format!("{what} of the template mined now.");
    gauge(
        enc,
        "jd_proxy_template_age_seconds",
        "Seconds since the template's own time (curtime).",
        f.age_secs,
    )?;
    gauge(
        enc,
        "jd_proxy_template_height",
        &help("Block height"),
        f.height,
    )?;
    gauge(
        enc,
        "jd_proxy_template_fees_sats",
        &help("Fees"),
        f.fees_sat,
    )?;
    gauge(
        enc,
        "jd_proxy_template_transactions",
        &help("Transactions"),
        f.txs,
    )?;
    gauge(
        enc,
        "jd_proxy_template_weight",
        &help("Transaction weight"),
        f.weight,
    )?;
    let excluded = s.exclusions(t.id);
    gauges(
        enc,
        "jd_proxy_policy_excluded_transactions",
        "Transactions the farm's policy removed from the template mined now, by rule.",
        excluded
            .by_reason
            .iter()
            .map(|(r, n)| ([("reason", *r)], *n)),
    )
}

fn blocks(enc: &mut DescriptorEncoder, s: &Shown) -> fmt::Result {
    counter(
        enc,
        "jd_proxy_blocks_found",
        "Shares that met the network target.",
        s.stats.snapshot().blocks,
    )?;
    counters(
        enc,
        "jd_proxy_block_fates",
        "Verdicts on found blocks, by node or pool and fate.",
        s.board
            .blocks
            .fates()
            .into_iter()
            .map(|(by, fate, n)| ([("by", by), ("fate", fate.to_owned())], n)),
    )?;
    let (sum, count, buckets) = s.board.tip_to_notify.snapshot();
    histogram(
        enc,
        "jd_proxy_tip_to_notify_seconds",
        "From a new tip seen by the farm's nodes to the clean job queued to every miner.",
        (sum, count, &buckets),
    )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use tokio::sync::watch;

    use super::*;
    use crate::figures::asic::{Identity, Totals};
    use crate::figures::Board;
    use crate::http::fold::WorkerRow;
    use crate::metrics::Stats;
    use crate::share::Reject;

    /// Renders `workers` alone.
    #[derive(Debug)]
    struct Workers(Folded);

    impl Collector for Workers {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            workers(&mut enc, &self.0)
        }
    }

    fn render_workers(f: Folded) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Workers(f)));
        template_provider::http::encode::render(&registry)
    }

    fn row(name: &str) -> WorkerRow {
        let mut totals = Totals {
            accepted: 3,
            work: 1.5,
            last_share: 1_700_000_000,
            ..Totals::default()
        };
        totals.rejected[REASONS.iter().position(|r| *r == Reject::StaleJob).unwrap()] = 2;
        WorkerRow {
            worker: Arc::from(name),
            totals,
            difficulty_sum: 8.0,
            asics: 2,
            ..WorkerRow::default()
        }
    }

    #[test]
    fn worker_rows_render_with_escaped_names_and_the_overflow_last() {
        let mut named = Named::new(1);
        let text = render_workers(named.fold(vec![row("rig \"7\""), row("x"), row("y")]));
        for line in [
            "# TYPE jd_proxy_worker_shares_accepted_total counter",
            "jd_proxy_worker_shares_accepted_total{worker=\"rig \\\"7\\\"\"} 3",
            "jd_proxy_worker_shares_accepted_total{worker=\"(other workers)\"} 6",
            "jd_proxy_worker_work_accepted_total{worker=\"(other workers)\"} 3.0",
            "jd_proxy_worker_shares_rejected_total{worker=\"(other workers)\",reason=\"stale\"} 4",
            "jd_proxy_worker_difficulty{worker=\"(other workers)\"} 4.0",
            "jd_proxy_worker_last_share_timestamp_seconds{worker=\"x\"}",
            "jd_proxy_workers_folded 2",
        ] {
            let found = text.lines().any(|l| l.starts_with(line));
            assert!(
                found || line.ends_with("{worker=\"x\"}"),
                "{line} missing:\n{text}"
            );
        }
        assert!(!text.contains("worker=\"x\""), "x is folded:\n{text}");
        assert!(
            !text.contains("duplicate"),
            "reasons not seen are left out:\n{text}"
        );
    }

    #[tokio::test]
    async fn every_family_of_the_contract_is_rendered() {
        let board = Board::new();
        let identity = Identity {
            id: 0,
            worker: Arc::from("w"),
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            agent: None,
            version_mask: None,
            connected_at: 1,
        };
        let asic = board.join(identity, 2.0);
        asic.share_accepted(2.0, 5);
        let (_tx, jobs) = watch::channel(crate::test_support::job(1));
        let shown = Arc::new(Shown {
            board: board.clone(),
            stats: Arc::new(Stats::default()),
            jobs,
            serving: None,
            nodes: Vec::new(),
            source: None,
            started_at: 1,
            ledger: None,
            router: None,
        });
        let text = template_provider::http::encode::render(&registry(shown, 10));
        for family in [
            "jd_proxy_worker_hashrate_hashes_per_second gauge",
            "jd_proxy_worker_shares_accepted_total counter",
            "jd_proxy_worker_work_accepted_total counter",
            "jd_proxy_worker_shares_rejected_total counter",
            "jd_proxy_worker_difficulty gauge",
            "jd_proxy_worker_last_share_timestamp_seconds gauge",
            "jd_proxy_workers_folded gauge",
            "jd_proxy_hashrate_hashes_per_second gauge",
            "jd_proxy_shares_accepted_total counter",
            "jd_proxy_work_accepted_total counter",
            "jd_proxy_shares_rejected_total counter",
            "jd_proxy_connections gauge",
            "jd_proxy_miners gauge",
            "jd_proxy_upstream_mode gauge",
            "jd_proxy_upstream_mode_since_timestamp_seconds gauge",
            "jd_proxy_failovers_total counter",
            "jd_proxy_declarations_total counter",
            "jd_proxy_pool_shares_total counter",
            "jd_proxy_pool_work_total counter",
            "jd_proxy_template_age_seconds gauge",
            "jd_proxy_template_height gauge",
            "jd_proxy_template_fees_sats gauge",
            "jd_proxy_template_transactions gauge",
            "jd_proxy_template_weight gauge",
            "jd_proxy_policy_excluded_transactions gauge",
            "jd_proxy_blocks_found_total counter",
            "jd_proxy_block_fates_total counter",
            "jd_proxy_tip_to_notify_seconds histogram",
            "process_start_time_seconds gauge",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{text}"
            );
        }
        assert!(
            text.contains("jd_proxy_upstream_mode{mode=\"solo\",pool=\"\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("jd_proxy_worker_difficulty{worker=\"w\"} 2.0\n"),
            "{text}"
        );
        assert!(text.contains("jd_proxy_miners 1\n"), "{text}");
        assert!(
            text.contains("jd_proxy_tip_to_notify_seconds_bucket{le=\"+Inf\"} 0\n"),
            "{text}"
        );
    }
}
