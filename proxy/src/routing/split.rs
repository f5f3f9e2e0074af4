//! The weighted split of the farm's hashrate across routes. Pure: no I/O, no clock.
//!
//! A whole ASIC mines for one route at a time, so the split is made of ASICs: a newcomer goes
//! where the farm is furthest below its target, and the rebalancer moves the fewest ASICs that
//! bring every route within the tolerance. Hashrates are the measured ones; an ASIC not yet
//! measured counts at the median of those that are (a fair guess in a farm of one model), and
//! when none is, every ASIC counts the same.

/// One ASIC as the split sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    /// Its id on the board.
    pub id: u64,
    /// The route (index among the weighted ones) it mines for.
    pub route: usize,
    /// Its measured hashrate, `None` before the first estimate.
    pub hashrate: Option<f64>,
}

/// A move the rebalancer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The ASIC.
    pub id: u64,
    /// From route.
    pub from: usize,
    /// To route.
    pub to: usize,
}

/// Target shares of the farm's hashrate, one per weighted route.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    shares: Vec<f64>,
}

/// Why weights were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    /// None given.
    #[error("no weighted route")]
    Empty,
    /// Zero, negative or not a number.
    #[error("weight {0} of route {1} is not a positive number")]
    NotPositive(String, usize),
}

impl Split {
    /// Targets in proportion to `weights` (70 and 30, or 0.7 and 0.3: the same).
    ///
    /// # Errors
    /// No weight, or one not positive.
    pub fn new(weights: &[f64]) -> Result<Split, WeightError> {
        if weights.is_empty() {
            return Err(WeightError::Empty);
        }
        for (i, w) in weights.iter().enumerate() {
            if !(w.is_finite() && *w > 0.0) {
                return Err(WeightError::NotPositive(w.to_string(), i));
            }
        }
        let total: f64 = weights.iter().sum();
        Ok(Split {
            shares: weights.iter().map(|w| w / total).collect(),
        })
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.shares.len()
    }

    /// Whether there is none (never: [`Split::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// The hashrate per route with these placements (unmeasured ASICs at the median).
    pub fn loads(&self, asics: &[Placed]) -> Vec<f64> {
        let guess = median_rate(asics);
        let mut loads = vec![0.0; self.shares.len()];
        for a in asics {
            if let Some(l) = loads.get_mut(a.route) {
                *l += a.hashrate.unwrap_or(guess);
            }
        }
        loads
    }

    /// The route a newcomer goes to: the one furthest below its target once it is counted.
    pub fn assign(&self, asics: &[Placed], newcomer: Option<f64>) -> usize {
        let rate = newcomer.unwrap_or_else(|| median_rate(asics));
        self.pick(&self.loads(asics), rate)
    }

    /// [`Split::assign`] from the routes' `loads` as they stand: for callers that keep them
    /// up to date as ASICs come and go, rather than summing the whole farm for each newcomer.
    pub fn pick(&self, loads: &[f64], rate: f64) -> usize {
        let load = |r: usize| loads.get(r).copied().unwrap_or(0.0);
        let total: f64 = loads.iter().sum::<f64>() + rate;
        (0..self.shares.len())
            .max_by(|&a, &b| {
                let da = self.shares[a] * total - load(a);
                let db = self.shares[b] * total - load(b);
                da.total_cmp(&db).then(b.cmp(&a))
            })
            .unwrap_or(0)
    }

    /// The worst distance of a route from its target, as a fraction of the farm.
    pub fn deviation(&self, asics: &[Placed]) -> f64 {
        let loads = self.loads(asics);
        let total: f64 = loads.iter().sum();
        if total <= 0.0 {
            return 0.0;
        }
        loads
            .iter()
            .zip(&self.shares)
            .map(|(l, s)| (l / total - s).abs())
            .fold(0.0, f64::max)
    }

    /// The moves that bring every route within `tolerance` of its target (as a fraction of
    /// the farm), fewest first: each moves the ASIC, from the most loaded route to the least,
    /// that best closes the gap; stops when no move improves the worst deviation.
    pub fn rebalance(&self, asics: &[Placed], tolerance: f64) -> Vec<Move> {
        let mut placed = asics.to_vec();
        let mut moves = Vec::new();
        let guess = median_rate(asics);
        while self.deviation(&placed) > tolerance && moves.len() < placed.len() {
            let loads = self.loads(&placed);
            let total: f64 = loads.iter().sum();
            let gap = |r: usize| loads[r] - self.shares[r] * total;
            let over = (0..loads.len()).max_by(|&a, &b| gap(a).total_cmp(&gap(b)));
            let under = (0..loads.len()).min_by(|&a, &b| gap(a).total_cmp(&gap(b)));
            let (Some(over), Some(under)) = (over, under) else {
                break;
            };
            // The ASIC whose rate is closest to the surplus to hand over.
            let want = gap(over).min(-gap(under));
            let best = placed
                .iter()
                .enumerate()
                .filter(|(_, a)| a.route == over)
                .min_by(|(_, a), (_, b)| {
                    let ra = (a.hashrate.unwrap_or(guess) - want).abs();
                    let rb = (b.hashrate.unwrap_or(guess) - want).abs();
                    ra.total_cmp(&rb).then(a.id.cmp(&b.id))
                })
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let before = self.deviation(&placed);
            placed[i].route = under;
            if self.deviation(&placed) >= before {
                placed[i].route = over;
                break;
            }
            moves.push(Move {
                id: placed[i].id,
                from: over,
                to: under,
            });
        }
        moves
    }
}

/// The median measured hashrate; 1 when none is measured, so a farm just started splits by
/// the number of ASICs.
pub fn median_rate(asics: &[Placed]) -> f64 {
    let mut rates: Vec<f64> = asics.iter().filter_map(|a| a.hashrate).collect();
    if rates.is_empty() {
        return 1.0;
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(rates: &[(usize, f64)]) -> Vec<Placed> {
        rates
            .iter()
            .enumerate()
            .map(|(i, &(route, r))| Placed {
                id: i as u64,
                route,
                hashrate: Some(r),
            })
            .collect()
    }

    #[test]
    fn newcomers_fill_seventy_thirty_by_hashrate() {
        let split = Split::new(&[70.0, 30.0]).expect("weights");
        let mut asics = Vec::new();
        for id in 0..100u64 {
            let rate = 100.0 + (id % 7) as f64 * 10.0;
            let route = split.assign(&asics, Some(rate));
            asics.push(Placed {
                id,
                route,
                hashrate: Some(rate),
            });
        }
        let loads = split.loads(&asics);
        let share = loads[0] / (loads[0] + loads[1]);
        assert!((share - 0.7).abs() < 0.01, "route 0 has {share}");
    }

    #[test]
    fn the_rebalancer_moves_few_asics_to_bring_the_split_back() {
        let split = Split::new(&[70.0, 30.0]).expect("weights");
        // 10 equal ASICs all on route 1 after route 0's pool came back.
        let asics = placed(&[(1, 100.0); 10]);
        let moves = split.rebalance(&asics, 0.05);
        assert_eq!(moves.len(), 7, "{moves:?}");
        assert!(moves.iter().all(|m| m.from == 1 && m.to == 0));
        let mut after = asics.clone();
        for m in &moves {
            after[m.id as usize].route = m.to;
        }
        assert!(split.deviation(&after) <= 0.05);
        assert!(
            split.rebalance(&after, 0.05).is_empty(),
            "stable once within tolerance"
        );
    }

    #[test]
    fn unmeasured_asics_count_at_the_median_and_bad_weights_are_refused() {
        let split = Split::new(&[1.0, 1.0]).expect("weights");
        let mut asics = placed(&[(0, 100.0), (0, 300.0), (1, 200.0)]);
        asics.push(Placed {
            id: 9,
            route: 1,
            hashrate: None,
        });
        assert_eq!(split.loads(&asics), vec![400.0, 400.0]);
        assert_eq!(Split::new(&[]), Err(WeightError::Empty));
        assert!(matches!(
            Split::new(&[1.0, 0.0]),
            Err(WeightError::NotPositive(_, 1))
        ));
    }

    #[test]
    fn a_farm_not_yet_measured_splits_by_the_number_of_asics() {
        let split = Split::new(&[70.0, 30.0]).expect("weights");
        let mut asics = Vec::new();
        for id in 0..10u64 {
            let route = split.assign(&asics, None);
            asics.push(Placed {
                id,
                route,
                hashrate: None,
            });
        }
        let on_first = asics.iter().filter(|a| a.route == 0).count();
        assert_eq!(on_first, 7, "{asics:?}");
        assert_eq!(split.pick(&[7.0, 2.0], 1.0), 1, "the route furthest below");
    }

    #[test]
    fn a_split_that_cannot_be_met_exactly_stops_at_the_best_it_can() {
        let split = Split::new(&[50.0, 50.0]).expect("weights");
        // One big ASIC and one small: 75/25 is the best there is.
        let asics = placed(&[(0, 300.0), (0, 100.0)]);
        let moves = split.rebalance(&asics, 0.01);
        let mut after = asics.clone();
        for m in &moves {
            after[m.id as usize].route = m.to;
        }
        assert!((split.deviation(&after) - 0.25).abs() < 1e-9, "{moves:?}");
    }
}
