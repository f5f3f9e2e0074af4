//! The routes at run time: each route's jobs and mode, and which route each ASIC mines for.
//!
//! An ASIC is seated once it is authorized (its worker name and address known): on the first
//! fixed route that matches, or, among the weighted routes, on the one furthest below its
//! share of the farm. A task moves ASICs between weighted routes as they come and go, by
//! their measured hashrates; a moved ASIC keeps its connection and simply gets its new route's
//! job. The seats sit behind one small lock, taken at authorize, at disconnect and by the
//! rebalancer: never on the share path.
//!
//! With a single route nothing is tracked at all: every ASIC mines the one route's jobs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::rules::{Placement, RouteTable};
use super::split::{median_rate, Placed, Split};
use crate::figures::upstream::RouteFigures;
use crate::figures::Board;
use crate::job::{Command, Job};
use crate::upstream::Mode;

/// One route as it runs.
#[derive(Debug)]
pub struct RouteLive {
    /// Its figures (name included).
    pub figures: Arc<RouteFigures>,
    /// Its newest job.
    pub jobs: watch::Receiver<Arc<Job>>,
    /// Where it mines now.
    pub mode: watch::Receiver<Mode>,
    /// Keeps its publisher's command queue open.
    pub commands: mpsc::UnboundedSender<Command>,
}

/// The weighted routes: the split, and the route of each of its places.
#[derive(Debug)]
struct Weighted {
    split: Split,
    routes: Vec<usize>,
}

/// An ASIC on a weighted route.
#[derive(Debug)]
struct WeightedSeat {
    /// Its place in the split.
    slot: usize,
    /// What it counts for in `loads`.
    counted: f64,
    /// Its measured hashrate, once there is one.
    rate: Option<f64>,
    /// Its route, for its session to follow.
    route: watch::Sender<usize>,
}

/// Who mines where.
#[derive(Debug, Default)]
struct Seats {
    /// Every ASIC seated, by board id: its route.
    route_of: HashMap<u64, usize>,
    /// ASICs per route.
    counts: Vec<usize>,
    /// Those on weighted routes.
    weighted: HashMap<u64, WeightedSeat>,
    /// Per place in the split, the hashrate counted on it.
    loads: Vec<f64>,
    /// What an ASIC not yet measured counts for.
    guess: f64,
}

/// Every route, and where each ASIC mines.
#[derive(Debug)]
pub struct Router {
    table: RouteTable,
    routes: Vec<RouteLive>,
    weighted: Option<Weighted>,
    tolerance: f64,
    seats: Mutex<Seats>,
}

/// Where an ASIC mines.
#[derive(Debug)]
pub struct Seat {
    /// The route.
    pub route: usize,
    /// The route's jobs, when they are not those every session starts with (the first
    /// route's).
    pub jobs: Option<watch::Receiver<Arc<Job>>>,
    /// On a weighted route: its route from now on, as the rebalancer moves it.
    pub moves: Option<watch::Receiver<usize>>,
    /// Frees the seat when dropped.
    pub guard: SeatGuard,
}

/// An ASIC's seat, freed when this is dropped (the session ends).
#[derive(Debug)]
pub struct SeatGuard {
    router: Option<Arc<Router>>,
    id: u64,
}

impl Drop for SeatGuard {
    fn drop(&mut self) {
        if let Some(r) = &self.router {
            r.leave(self.id);
        }
    }
}

/// A move the rebalancer made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The ASIC's board id.
    pub id: u64,
    /// From route.
    pub from: usize,
    /// To route.
    pub to: usize,
}

impl Router {
    /// The router over `routes` (in `table`'s order); weighted routes are kept within
    /// `tolerance` (a fraction of the farm).
    pub fn new(table: RouteTable, routes: Vec<RouteLive>, tolerance: f64) -> Router {
        let weights = table.weighted();
        let weighted = Split::new(&weights.iter().map(|(_, w)| *w).collect::<Vec<_>>())
            .ok()
            .map(|split| Weighted {
                split,
                routes: weights.iter().map(|(r, _)| *r).collect(),
            });
        let seats = Seats {
            counts: vec![0; routes.len()],
            loads: vec![0.0; weights.len()],
            guess: 1.0,
            ..Seats::default()
        };
        Router {
            table,
            routes,
            weighted,
            tolerance,
            seats: Mutex::new(seats),
        }
    }

    /// The routes.
    pub fn routes(&self) -> &[RouteLive] {
        &self.routes
    }

    /// The jobs of `route`, for a session that moves there.
    ///
    /// # Panics
    /// `route` is not a route (indices come from this router).
    pub fn jobs(&self, route: usize) -> watch::Receiver<Arc<Job>> {
        self.routes[route].jobs.clone()
    }

    /// ASICs seated per route now (empty with a single route, where nothing is tracked).
    pub fn counts(&self) -> Vec<usize> {
        if self.routes.len() < 2 {
            return Vec::new();
        }
        self.lock().counts.clone()
    }

    /// Every ASIC seated (board id) and its route (empty with one route).
    pub fn seated(&self) -> HashMap<u64, usize> {
        self.lock().route_of.clone()
    }

    /// The route of ASIC `id` (board id), when it is seated (always `None` with one route).
    pub fn route_of(&self, id: u64) -> Option<usize> {
        self.lock().route_of.get(&id).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seats> {
        self.seats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seats ASIC `id` (its board id), authorized as `worker` from `ip`.
    pub fn seat(self: &Arc<Self>, worker: &str, ip: IpAddr, id: u64) -> Seat {
        if self.routes.len() < 2 {
            return Seat {
                route: 0,
                jobs: None,
                moves: None,
                guard: SeatGuard { router: None, id },
            };
        }
        let mut seats = self.lock();
        let (route, moves) = match (self.table.place(worker, ip), &self.weighted) {
            (Placement::Weighted, Some(w)) => {
                let guess = seats.guess;
                let slot = w.split.pick(&seats.loads, guess);
                seats.loads[slot] += guess;
                let route = w.routes[slot];
                let (tx, rx) = watch::channel(route);
                let seat = WeightedSeat {
                    slot,
                    counted: guess,
                    rate: None,
                    route: tx,
                };
                seats.weighted.insert(id, seat);
                (route, Some(rx))
            }
            (Placement::Route(r), _) => (r.min(self.routes.len() - 1), None),
            (Placement::Weighted, None) => (0, None),
        };
        seats.route_of.insert(id, route);
        seats.counts[route] += 1;
        Seat {
            route,
            jobs: (route != 0).then(|| self.jobs(route)),
            moves,
            guard: SeatGuard {
                router: Some(self.clone()),
                id,
            },
        }
    }

    fn leave(&self, id: u64) {
        let mut seats = self.lock();
        if let Some(r) = seats.route_of.remove(&id) {
            seats.counts[r] = seats.counts[r].saturating_sub(1);
        }
        if let Some(w) = seats.weighted.remove(&id) {
            seats.loads[w.slot] = (seats.loads[w.slot] - w.counted).max(0.0);
        }
    }

    /// Takes in the measured hashrates (`rates`, by board id; ASICs not in it are not measured
    /// yet) and moves the fewest ASICs that bring the weighted routes within the tolerance.
    /// Only the moves and the bookkeeping are done under the lock.
    pub fn rebalance(&self, rates: &HashMap<u64, f64>) -> Vec<Moved> {
        let Some(w) = &self.weighted else {
            return Vec::new();
        };
        let rate = |id: &u64| rates.get(id).copied().filter(|r| *r > 0.0);
        // The moves are worked out off the lock: ASICs keep being seated meanwhile.
        let mut placed: Vec<Placed> = self
            .lock()
            .weighted
            .iter()
            .map(|(id, s)| Placed {
                id: *id,
                route: s.slot,
                hashrate: rate(id),
            })
            .collect();
        placed.sort_by_key(|p| p.id);
        let moves = w.split.rebalance(&placed, self.tolerance);
        let mut guard = self.lock();
        let seats = &mut *guard;
        let mut done = Vec::with_capacity(moves.len());
        for m in &moves {
            // Gone meanwhile: its move is moot.
            let Some(s) = seats.weighted.get_mut(&m.id).filter(|s| s.slot == m.from) else {
                continue;
            };
            let (from, to) = (w.routes[m.from], w.routes[m.to]);
            s.slot = m.to;
            s.route.send_replace(to);
            seats.route_of.insert(m.id, to);
            seats.counts[from] = seats.counts[from].saturating_sub(1);
            seats.counts[to] += 1;
            done.push(Moved { id: m.id, from, to });
        }
        // What newcomers are weighed against, from every seat as it stands now.
        placed = seats
            .weighted
            .iter_mut()
            .map(|(id, s)| {
                s.rate = rate(id);
                Placed {
                    id: *id,
                    route: s.slot,
                    hashrate: s.rate,
                }
            })
            .collect();
        seats.guess = median_rate(&placed);
        seats.loads = w.split.loads(&placed);
        let guess = seats.guess;
        for s in seats.weighted.values_mut() {
            s.counted = s.rate.unwrap_or(guess);
        }
        done
    }

    /// Rebalances every `every` from the board's 5 minute hashrates, until `shutdown`.
    pub async fn rebalance_every(
        self: Arc<Self>,
        board: Arc<Board>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        if self.weighted.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let rates: HashMap<u64, f64> = board
                .asics()
                .iter()
                .map(|a| (a.identity.id, a.rates().h5m))
                .collect();
            for m in self.rebalance(&rates) {
                let name = |r: usize| self.routes[r].figures.name.as_str();
                info!(
                    asic = m.id,
                    from = name(m.from),
                    to = name(m.to),
                    "ASIC moved to another weighted route to keep the split (its connection stays)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::rules::{Matcher, RouteSpec};
    use ledger_math::customers::{CustomerMap, WorkerPattern};

    fn router(specs: Vec<(&str, Matcher)>) -> Arc<Router> {
        let routes = specs
            .iter()
            .enumerate()
            .map(|(i, (name, _))| RouteLive {
                figures: RouteFigures::new(i, name),
                jobs: watch::channel(crate::test_support::job(1)).1,
                mode: watch::channel(Mode::Solo).1,
                commands: mpsc::unbounded_channel().0,
            })
            .collect();
        let table = RouteTable::new(
            specs
                .into_iter()
                .map(|(name, matcher)| RouteSpec {
                    name: name.into(),
                    matcher,
                    upstreams: vec![],
                })
                .collect(),
            CustomerMap::new(&[], "farm").expect("customers"),
        );
        Arc::new(Router::new(table, routes, 0.02))
    }

    fn ip() -> IpAddr {
        IpAddr::from([10, 0, 0, 1])
    }

    #[test]
    fn asics_fill_the_weights_and_the_rebalancer_moves_them_as_others_leave() {
        let r = router(vec![
            ("a", Matcher::Weight(70.0)),
            ("b", Matcher::Weight(30.0)),
        ]);
        let mut seats: Vec<Seat> = (1..=10).map(|id| r.seat("w", ip(), id)).collect();
        assert_eq!(r.counts(), vec![7, 3]);
        assert!(
            seats.iter().all(|s| s.moves.is_some()),
            "weighted seats follow moves"
        );
        let rates: HashMap<u64, f64> = (1..=10).map(|id| (id, 100.0)).collect();
        assert!(r.rebalance(&rates).is_empty(), "7/3 is the split");
        // Two of route b's ASICs leave: 7/1 is 87.5/12.5; one move makes it 75/25.
        let on_b: Vec<usize> = (0..10).filter(|&i| seats[i].route == 1).collect();
        for &i in on_b.iter().take(2).rev() {
            seats.remove(i);
        }
        let moves = r.rebalance(&rates);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!((moves[0].from, moves[0].to), (0, 1));
        assert_eq!(r.counts(), vec![6, 2]);
        let moved = seats
            .iter_mut()
            .find(|s| s.guard.id == moves[0].id)
            .expect("a seat");
        let follow = moved.moves.as_mut().expect("weighted");
        assert!(follow.has_changed().expect("open"));
        assert_eq!(*follow.borrow_and_update(), 1, "the session is told");
        assert_eq!(r.route_of(moves[0].id), Some(1));
    }

    #[test]
    fn fixed_routes_take_their_workers_and_one_route_tracks_nothing() {
        let alice = Matcher::Fixed {
            workers: vec![WorkerPattern::parse("alice.*").expect("pattern")],
            customer: None,
            networks: vec![],
        };
        let r = router(vec![("default", Matcher::Default), ("alice", alice)]);
        let a = r.seat("alice.1", ip(), 1);
        let d = r.seat("bob.1", ip(), 2);
        assert_eq!((a.route, d.route), (1, 0));
        assert!(
            a.jobs.is_some() && d.jobs.is_none(),
            "route 0's jobs are the start"
        );
        assert!(a.moves.is_none(), "fixed routes never move");
        assert_eq!(r.counts(), vec![1, 1]);
        drop(a);
        assert_eq!(r.counts(), vec![1, 0], "a seat is freed with its session");
        let one = router(vec![("default", Matcher::Default)]);
        let s = one.seat("x", ip(), 1);
        assert!(s.guard.router.is_none() && one.counts().is_empty());
    }
}
