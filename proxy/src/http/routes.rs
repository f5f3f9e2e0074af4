//! Each route's figures for the API (`routes` in `/api/v1/upstream` and the summary) and
//! `/metrics` (the `jd_proxy_route_*` families): where it mines, its pools' verdicts and work,
//! its ASICs and their hashrate. Without `[[route]]` there is one, `default`: the whole farm.

use std::collections::HashMap;
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;
use template_provider::http::encode::{counters, gauges};

use super::Shown;
use crate::figures::upstream::{RouteSnapshot, UpstreamMode};

/// One route as shown.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    /// Name, mode, pool, since, failovers, pool shares and work.
    #[serde(flatten)]
    pub figures: RouteSnapshot,
    /// ASICs mining for it now.
    pub miners: usize,
    /// Their hashrate, 5 minute estimate (hashes per second).
    pub hashrate: f64,
}

/// Every route now, in configured order.
pub fn rows(s: &Shown) -> Vec<RouteRow> {
    let routes = s.board.routes();
    let seated: HashMap<u64, usize> = match &s.router {
        Some(r) if routes.len() > 1 => r.seated(),
        _ => HashMap::new(),
    };
    let mut miners = vec![0usize; routes.len()];
    let mut hashrate = vec![0.0f64; routes.len()];
    for a in s.board.asics() {
        // Not seated (yet, or a single route): the first route's.
        let r = seated.get(&a.identity.id).copied().unwrap_or(0);
        if let (Some(m), Some(h)) = (miners.get_mut(r), hashrate.get_mut(r)) {
            *m += 1;
            *h += a.rates().h5m;
        }
    }
    routes
        .iter()
        .zip(miners.into_iter().zip(hashrate))
        .map(|(r, (miners, hashrate))| RouteRow {
            figures: r.snapshot(),
            miners,
            hashrate,
        })
        .collect()
}

fn route(r: &RouteRow) -> String {
    r.figures.name.clone()
}

/// The `jd_proxy_route_*` families.
pub(super) fn metrics(enc: &mut DescriptorEncoder, rows: &[RouteRow]) -> fmt::Result {
    modes(enc, rows)?;
    work(enc, rows)
}

/// Where each route mines, since when, and its failovers.
fn modes(enc: &mut DescriptorEncoder, rows: &[RouteRow]) -> fmt::Result {
    let modes = rows.iter().flat_map(|r| {
        let state = &r.figures.state;
        UpstreamMode::ALL.map(|m| {
            let current = m == state.mode;
            let pool = if current {
                state.pool.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let labels = [
                ("route", route(r)),
                ("mode", m.as_str().to_owned()),
                ("pool", pool),
            ];
            (labels, u32::from(current))
        })
    });
    gauges(
        enc,
        "jd_proxy_route_mode",
        "1 for how the route mines now (solo, declared jobs, or the pool's own jobs), 0 otherwise.",
        modes,
    )?;
    gauges(
        enc,
        "jd_proxy_route_mode_since_timestamp_seconds",
        "Since when the route mines this way, unix seconds.",
        rows.iter()
            .map(|r| ([("route", route(r))], r.figures.state.since)),
    )?;
    counters(
        enc,
        "jd_proxy_route_failovers",
        "Times the route left an upstream, by reason.",
        rows.iter().flat_map(|r| {
            let failovers = r.figures.failovers.clone();
            failovers
                .into_iter()
                .map(move |(why, n)| ([("route", route(r)), ("reason", why.to_owned())], n))
        }),
    )
}

/// Each route's pool shares and work, miners and hashrate.
fn work(enc: &mut DescriptorEncoder, rows: &[RouteRow]) -> fmt::Result {
    counters(
        enc,
        "jd_proxy_route_pool_shares",
        "Shares the route sent to its pools, and their verdicts.",
        rows.iter().flat_map(|r| {
            let p = r.figures.pool_shares;
            [
                ("submitted", p.submitted),
                ("accepted", p.accepted),
                ("rejected", p.rejected),
            ]
            .map(|(v, n)| ([("route", route(r)), ("verdict", v.to_owned())], n))
        }),
    )?;
    counters(
        enc,
        "jd_proxy_route_pool_work",
        "The work of the route's pool shares: sent at the pools' targets (validated), acknowledged by them at those targets (accepted), and the pools' own sums (acknowledged).",
        rows.iter().flat_map(|r| {
            let w = r.figures.work;
            [
                ("validated", w.validated),
                ("accepted", w.accepted),
                ("acknowledged", w.acknowledged as f64),
            ]
            .map(|(k, v)| ([("route", route(r)), ("kind", k.to_owned())], v))
        }),
    )?;
    gauges(
        enc,
        "jd_proxy_route_miners",
        "ASICs mining for the route now.",
        rows.iter().map(|r| ([("route", route(r))], r.miners)),
    )?;
    gauges(
        enc,
        "jd_proxy_route_hashrate_hashes_per_second",
        "Hashrate of the route's ASICs, 5 minute estimate.",
        rows.iter().map(|r| ([("route", route(r))], r.hashrate)),
    )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;
    use tokio::sync::watch;

    use super::*;
    use crate::figures::asic::Identity;
    use crate::figures::upstream::RouteFigures;
    use crate::figures::Board;
    use crate::metrics::Stats;

    #[derive(Debug)]
    struct Routes(Vec<RouteRow>);

    impl Collector for Routes {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            metrics(&mut enc, &self.0)
        }
    }

    #[tokio::test]
    async fn every_route_has_its_mode_work_and_miners() {
        let board = Board::new();
        let hedge = RouteFigures::new(1, "hedge");
        board.set_routes(vec![RouteFigures::new(0, "main"), hedge.clone()]);
        board.route_changed(&hedge, UpstreamMode::Declared, Some("pool-30"), "pool_up");
        hedge.sent(0.25);
        hedge.accepted(&Arc::from("pool-30"), &Arc::from("w"), 0.25);
        let identity = Identity {
            id: 0,
            worker: Arc::from("w"),
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            agent: None,
            version_mask: None,
            connected_at: 1,
        };
        let _asic = board.join(identity, 2.0);
        let shown = Shown {
            board: board.clone(),
            stats: Arc::new(Stats::default()),
            jobs: watch::channel(crate::test_support::job(1)).1,
            serving: None,
            nodes: Vec::new(),
            source: None,
            started_at: 1,
            ledger: None,
            router: None,
        };
        let rows = rows(&shown);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].miners, rows[1].miners),
            (1, 0),
            "unseated: the first route's"
        );
        let json = serde_json::to_value(&rows[1]).expect("json");
        assert_eq!(json["name"], "hedge");
        assert_eq!(json["mode"], "declared");
        assert_eq!(json["pool"], "pool-30");
        assert_eq!(json["work"]["accepted"], 0.25);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Routes(rows)));
        let text = template_provider::http::encode::render(&registry);
        for line in [
            "jd_proxy_route_mode{route=\"hedge\",mode=\"declared\",pool=\"pool-30\"} 1\n",
            "jd_proxy_route_mode{route=\"main\",mode=\"solo\",pool=\"\"} 1\n",
            "jd_proxy_route_pool_shares_total{route=\"hedge\",verdict=\"accepted\"} 1\n",
            "jd_proxy_route_pool_work_total{route=\"hedge\",kind=\"accepted\"} 0.25\n",
            "jd_proxy_route_miners{route=\"main\"} 1\n",
            "# TYPE jd_proxy_route_mode_since_timestamp_seconds gauge\n",
            "# TYPE jd_proxy_route_failovers_total counter\n",
            "# TYPE jd_proxy_route_hashrate_hashes_per_second gauge\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }
}
