//! The farm's figures as an operator sees them: each ASIC connected, each worker's work since
//! start, the farm's hashrate history and what happened.
//!
//! Sessions write their own ASIC's counters (atomics with one writer: nothing on the share
//! path waits). Everything else (the HTTP API, `/metrics`, the ledger) reads them from here,
//! off the share path; the sampler turns work into hashrates every [`SAMPLE_EVERY`].

pub mod asic;
pub mod events;
pub mod found;
pub mod history;
pub mod latency;
pub mod rates;
pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::asic::{AsicFigures, Identity, Totals};
use self::events::{EventKind, Events};
use self::found::FoundBlocks;
use self::history::History;
use self::latency::TipToNotify;
use self::rates::Rates;
use self::upstream::{RouteFigures, UpstreamFigures, UpstreamMode};

/// How often work is turned into hashrates.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Worker names kept one by one; past this, new names share [`OTHER_WORKERS`] (names come from
/// the miners, so their number is theirs to choose).
pub const MAX_WORKERS: usize = 100_000;
/// The worker that stands for names past [`MAX_WORKERS`].
pub const OTHER_WORKERS: &str = "(other workers)";

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every ASIC connected, every worker's totals, the farm's history and events.
#[derive(Debug, Default)]
pub struct Board {
    asics: Mutex<HashMap<u64, Arc<AsicFigures>>>,
    /// Totals of ASICs gone, by worker.
    retired: Mutex<HashMap<Arc<str>, Totals>>,
    next_id: AtomicU64,
    /// What happened.
    pub events: Events,
    /// The farm's hashrate, minute by minute.
    pub history: Mutex<History>,
    /// Where mining goes, and the failovers: the first route's state, every route's failovers.
    pub upstream: UpstreamFigures,
    /// Each route's figures, set once at start.
    routes: OnceLock<Vec<Arc<RouteFigures>>>,
    /// Blocks found and their fates.
    pub blocks: FoundBlocks,
    /// New tip → clean job to every session.
    pub tip_to_notify: TipToNotify,
}

/// An ASIC on the board; it leaves the board (its totals kept under its worker) when dropped.
#[derive(Debug)]
pub struct OnBoard {
    figures: Arc<AsicFigures>,
    board: Arc<Board>,
}

impl std::ops::Deref for OnBoard {
    type Target = AsicFigures;
    fn deref(&self) -> &AsicFigures {
        &self.figures
    }
}

impl Drop for OnBoard {
    fn drop(&mut self) {
        let id = self.figures.identity.id;
        lock(&self.board.asics).remove(&id);
        let mut retired = lock(&self.board.retired);
        let key = self
            .board
            .worker_key(&retired, &self.figures.identity.worker);
        retired.entry(key).or_default().add(&self.figures.totals());
    }
}

/// One worker: all its ASICs, gone and connected.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerFigures {
    /// The worker name.
    pub worker: Arc<str>,
    /// ASICs connected now under this name.
    pub connected: usize,
    /// Shares since start.
    pub totals: Totals,
    /// The hashrate of those connected.
    pub rates: Rates,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Board {
    /// A new board.
    pub fn new() -> Arc<Board> {
        Arc::new(Board::default())
    }

    /// Puts an ASIC that started mining on the board.
    pub fn join(self: &Arc<Self>, mut identity: Identity, difficulty: f64) -> OnBoard {
        identity.id = self.next_id.fetch_add(1, Relaxed) + 1;
        let figures = Arc::new(AsicFigures::new(identity, difficulty));
        lock(&self.asics).insert(figures.identity.id, figures.clone());
        OnBoard {
            figures,
            board: self.clone(),
        }
    }

    fn worker_key(&self, retired: &HashMap<Arc<str>, Totals>, worker: &Arc<str>) -> Arc<str> {
        if retired.len() >= MAX_WORKERS && !retired.contains_key(worker) {
            Arc::from(OTHER_WORKERS)
        } else {
            worker.clone()
        }
    }

    /// The ASICs connected now.
    pub fn asics(&self) -> Vec<Arc<AsicFigures>> {
        lock(&self.asics).values().cloned().collect()
    }

    /// Every worker's figures, by name.
    pub fn workers(&self) -> Vec<WorkerFigures> {
        let mut by_name: HashMap<Arc<str>, WorkerFigures> = lock(&self.retired)
            .iter()
            .map(|(w, t)| {
                let f = WorkerFigures {
                    worker: w.clone(),
                    connected: 0,
                    totals: t.clone(),
                    rates: Rates::default(),
                };
                (w.clone(), f)
            })
            .collect();
        for asic in self.asics() {
            let w = asic.identity.worker.clone();
            let f = by_name.entry(w.clone()).or_insert_with(|| WorkerFigures {
                worker: w,
                connected: 0,
                totals: Totals::default(),
                rates: Rates::default(),
            });
            f.connected += 1;
            f.totals.add(&asic.totals());
            f.rates.add(&asic.rates());
        }
        let mut v: Vec<WorkerFigures> = by_name.into_values().collect();
        v.sort_by(|a, b| a.worker.cmp(&b.worker));
        v
    }

    /// The farm's totals since start.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for r in lock(&self.retired).values() {
            t.add(r);
        }
        for a in self.asics() {
            t.add(&a.totals());
        }
        t
    }

    /// The farm's hashrate now: the sum over the ASICs connected.
    pub fn rates(&self) -> Rates {
        let mut r = Rates::default();
        for a in self.asics() {
            r.add(&a.rates());
        }
        r
    }

    /// Mining goes `mode` (to `pool`) for `reason`: recorded, and an event when it changed.
    pub fn upstream_changed(&self, mode: UpstreamMode, pool: Option<&str>, reason: &str) {
        if self.upstream.set(mode, pool, unix_now()) {
            self.events.push(EventKind::Upstream {
                mode: mode.as_str().to_owned(),
                pool: pool.map(str::to_owned),
                reason: reason.to_owned(),
                route: None,
            });
        }
    }

    /// The routes' figures, in configured order (set once at start).
    pub fn set_routes(&self, routes: Vec<Arc<RouteFigures>>) {
        let _ = self.routes.set(routes);
    }

    /// Each route's figures, in configured order; empty before start.
    pub fn routes(&self) -> &[Arc<RouteFigures>] {
        self.routes.get().map_or(&[], Vec::as_slice)
    }

    /// `route` mines `mode` (for `pool`) for `reason`: recorded, with an event when it changed.
    /// The first route's state is the farm's `upstream` too; with more than one route, the
    /// event names the route.
    pub fn route_changed(
        &self,
        route: &RouteFigures,
        mode: UpstreamMode,
        pool: Option<&str>,
        reason: &str,
    ) {
        let now = unix_now();
        if route.index == 0 {
            self.upstream.set(mode, pool, now);
        }
        if route.upstream.set(mode, pool, now) {
            let named = self.routes().len() > 1;
            self.events.push(EventKind::Upstream {
                mode: mode.as_str().to_owned(),
                pool: pool.map(str::to_owned),
                reason: reason.to_owned(),
                route: named.then(|| route.name.clone()),
            });
        }
    }

    /// `route` left an upstream for `reason`: counted for the route and for the farm.
    pub fn route_failed_over(&self, route: &RouteFigures, reason: &'static str) {
        route.upstream.failed_over(reason);
        self.upstream.failed_over(reason);
    }

    /// A share met the network target.
    pub fn block_found(&self, hash: bitcoin::BlockHash, height: u32, worker: &str) {
        self.blocks.found(hash, height, worker, unix_now());
        self.events.push(EventKind::BlockFound {
            hash: hash.to_string(),
            height,
            worker: worker.to_owned(),
        });
    }

    /// `by` (a node or a pool) judged a block.
    pub fn block_fate(&self, hash: bitcoin::BlockHash, by: &str, fate: &str) {
        self.blocks.fate(hash, by, fate);
        self.events.push(EventKind::BlockFate {
            hash: hash.to_string(),
            by: by.to_owned(),
            fate: fate.to_owned(),
        });
    }

    /// Records the nodes' verdicts from `news` until it closes or `shutdown`.
    pub async fn follow_blocks(
        self: Arc<Self>,
        mut news: tokio::sync::broadcast::Receiver<template_provider::blocks::BlockNews>,
        shutdown: CancellationToken,
    ) {
        use template_provider::blocks::BlockNews;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                n = news.recv() => n,
            };
            match next {
                // Found blocks are recorded by their session, with the worker's name.
                Ok(BlockNews::Found { .. }) | Err(RecvError::Lagged(_)) => {}
                Ok(BlockNews::Fate { hash, node, fate }) => self.block_fate(hash, &node, &fate),
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Turns work into hashrates every [`SAMPLE_EVERY`] until `shutdown`.
    pub async fn sample(self: Arc<Self>, shutdown: CancellationToken) {
        self.sample_every(SAMPLE_EVERY, shutdown).await;
    }

    /// Turns work into hashrates every `every` until `shutdown` (`[http] hashrate_sample_secs`;
    /// tests sample faster).
    pub async fn sample_every(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut last: HashMap<u64, f64> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut at = std::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let secs = at.elapsed().as_secs_f64();
            at = std::time::Instant::now();
            let mut farm_work = 0.0;
            let mut seen = HashMap::with_capacity(last.len());
            for a in self.asics() {
                let work = a.totals().work;
                let before = last.get(&a.identity.id).copied().unwrap_or(0.0);
                let delta = (work - before).max(0.0);
                farm_work += delta;
                lock(&a.rates).update(delta, secs);
                seen.insert(a.identity.id, work);
            }
            last = seen;
            lock(&self.history).add(unix_now(), farm_work);
        }
    }
}
