//! What a template source reports besides templates, for whoever shows it: when each recent tip
//! was first seen (so a job publisher can time new tip → job), and what the farm's policy
//! removed from each recent template and why.
//!
//! Both are small, bounded and written off the share path (by the source's publisher and its
//! template conversion); readers take a copy.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bitcoin::{BlockHash, Txid};
use mining_types::{Template, TemplateId, TemplateKind};
use serde::Serialize;

use crate::blocks::BlockNews;
use crate::policy::{Removal, RemovalReason};

/// Tips remembered.
const TIPS_KEPT: usize = 16;
/// Templates whose exclusions are remembered.
const REPORTS_KEPT: usize = 8;
/// Removed transactions listed one by one per template; the counts by reason cover them all.
pub const LISTED_PER_TEMPLATE: usize = 1_000;

/// What a source reports; cheap to clone, shared by the sources of one node set.
#[derive(Debug, Clone, Default)]
pub struct SourceFigures {
    /// When each recent tip was first seen.
    pub tips: TipClock,
    /// What the policy removed from each recent template.
    pub exclusions: PolicyReports,
}

/// When each recent tip was first seen, whichever watcher saw it first.
#[derive(Debug, Clone, Default)]
pub struct TipClock {
    seen: Arc<Mutex<VecDeque<(BlockHash, Instant)>>>,
}

impl TipClock {
    /// `tip` was seen now; a tip seen before keeps its first time.
    pub fn seen(&self, tip: BlockHash) {
        self.seen_at(tip, Instant::now());
    }

    /// `tip` was seen at `at`; a tip seen before keeps its first time.
    pub fn seen_at(&self, tip: BlockHash, at: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.iter().any(|(h, _)| *h == tip) {
            return;
        }
        if seen.len() >= TIPS_KEPT {
            seen.pop_front();
        }
        seen.push_back((tip, at));
    }

    /// When `tip` was first seen, if it is recent.
    pub fn first_seen(&self, tip: &BlockHash) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter().find(|(h, _)| h == tip).map(|(_, at)| *at)
    }
}

/// One removed transaction, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// The transaction.
    pub txid: Txid,
    /// The rule, as a label: see [`reason_label`].
    pub reason: &'static str,
    /// The rule with its figures (`fee 120 sat for 141 vB`).
    pub detail: String,
}

/// What the policy removed from one template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exclusions {
    /// The first [`LISTED_PER_TEMPLATE`] removed transactions, in template order.
    pub excluded: Vec<Excluded>,
    /// Every removed transaction, counted by reason label.
    pub by_reason: BTreeMap<&'static str, u64>,
}

impl Exclusions {
    /// The report of `removed`.
    pub fn of(removed: &[Removal]) -> Exclusions {
        let mut by_reason = BTreeMap::new();
        for r in removed {
            *by_reason.entry(reason_label(&r.reason)).or_insert(0) += 1;
        }
        let excluded = removed
            .iter()
            .take(LISTED_PER_TEMPLATE)
            .map(|r| Excluded {
                txid: r.txid,
                reason: reason_label(&r.reason),
                detail: r.reason.to_string(),
            })
            .collect();
        Exclusions {
            excluded,
            by_reason,
        }
    }
}

/// A rule's name, one of a fixed few (a metric label): `excluded_txid`, `script_type`,
/// `datacarrier`, `feerate`, `descendant`, `weight_reserve`.
pub fn reason_label(reason: &RemovalReason) -> &'static str {
    match reason {
        RemovalReason::ExcludedTxid => "excluded_txid",
        RemovalReason::ScriptType(_) => "script_type",
        RemovalReason::Datacarrier { .. } => "datacarrier",
        RemovalReason::Feerate { .. } => "feerate",
        RemovalReason::Descendant { .. } => "descendant",
        RemovalReason::WeightReserve => "weight_reserve",
    }
}

/// One template's report.
type Report = (TemplateId, Arc<Exclusions>);

/// The policy's reports on recent templates, by template id.
#[derive(Debug, Clone, Default)]
pub struct PolicyReports {
    reports: Arc<Mutex<VecDeque<Report>>>,
}

impl PolicyReports {
    /// The policy removed `removed` from template `id` (none: it kept everything).
    pub fn record(&self, id: TemplateId, removed: &[Removal]) {
        let report = Arc::new(Exclusions::of(removed));
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        if reports.len() >= REPORTS_KEPT {
            reports.pop_front();
        }
        reports.push_back((id, report));
    }

    /// What the policy removed from template `id`; empty for a template it kept whole or one
    /// too old to be remembered.
    pub fn of(&self, id: TemplateId) -> Arc<Exclusions> {
        let reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        reports
            .iter()
            .rev()
            .find(|(t, _)| *t == id)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }
}

/// A template as an operator reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateFigures {
    /// The height of the block it builds.
    pub height: u32,
    /// The fees of its transactions, as the source reported them.
    pub fees_sat: u64,
    /// Its transactions (the coinbase not counted).
    pub txs: usize,
    /// Their weight.
    pub weight: u64,
    /// Seconds since the template's own time (`curtime`): how stale the work is.
    pub age_secs: u64,
    /// `empty` (coinbase only, on a fresh tip), `full`, or `pool` (a pool's own job).
    pub kind: &'static str,
}

impl TemplateFigures {
    /// The figures of `t` at `now` (unix seconds).
    pub fn of(t: &Template, now: u64) -> TemplateFigures {
        TemplateFigures {
            height: t.height,
            fees_sat: t.fees().to_sat(),
            txs: t.txs.len(),
            weight: t.txs.iter().map(|tx| tx.weight).sum(),
            age_secs: now.saturating_sub(u64::from(t.cur_time)),
            kind: match t.kind {
                TemplateKind::Empty => "empty",
                TemplateKind::Full => "full",
                TemplateKind::Pool => "pool",
            },
        }
    }
}

/// A fate as a label, one of a fixed few: `accepted`, `duplicate`, `inconclusive`, `rejected`,
/// `abandoned`, or `other` (the reason after the colon goes to the API, not to labels).
pub fn fate_class(fate: &str) -> &'static str {
    let head = fate.split(':').next().unwrap_or("").trim();
    match head {
        "accepted" => "accepted",
        "duplicate" => "duplicate",
        "inconclusive" => "inconclusive",
        "rejected" => "rejected",
        "abandoned" => "abandoned",
        _ => "other",
    }
}

/// Blocks found, and verdicts by (node, fate class).
type Counts = (u64, BTreeMap<(String, &'static str), u64>);

/// Blocks found and the nodes' verdicts, counted.
#[derive(Debug, Default)]
pub struct BlockTally {
    counts: Mutex<Counts>,
}

impl BlockTally {
    /// Counts `news`.
    pub fn count(&self, news: &BlockNews) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match news {
            BlockNews::Found { .. } => c.0 += 1,
            BlockNews::Fate { node, fate, .. } => {
                *c.1.entry((node.clone(), fate_class(fate))).or_insert(0) += 1;
            }
        }
    }

    /// Blocks found, and verdicts by node and fate class.
    pub fn snapshot(&self) -> (u64, Vec<(String, &'static str, u64)>) {
        let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let fates = c.1.iter().map(|((n, f), v)| (n.clone(), *f, *v)).collect();
        (c.0, fates)
    }

    /// Counts every block and verdict from `news` until it closes or `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        mut news: tokio::sync::broadcast::Receiver<BlockNews>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                n = news.recv() => n,
            };
            match next {
                Ok(n) => self.count(&n),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bitcoin::hashes::Hash;
    use bitcoin::Amount;

    use super::*;

    fn removal(n: u8, reason: RemovalReason) -> Removal {
        Removal {
            txid: Txid::from_byte_array([n; 32]),
            fee: None,
            weight: 400,
            reason,
        }
    }

    #[test]
    fn a_tip_keeps_its_first_time_and_old_tips_are_forgotten() {
        let clock = TipClock::default();
        let t0 = Instant::now();
        let tip = BlockHash::from_byte_array([1; 32]);
        clock.seen_at(tip, t0);
        clock.seen_at(tip, t0 + Duration::from_secs(1));
        assert_eq!(clock.first_seen(&tip), Some(t0));
        for n in 2..=(TIPS_KEPT as u8 + 1) {
            clock.seen_at(BlockHash::from_byte_array([n; 32]), t0);
        }
        assert_eq!(clock.first_seen(&tip), None, "the oldest tip went");
    }

    #[test]
    fn exclusions_are_counted_by_reason_and_found_by_template() {
        let reports = PolicyReports::default();
        let removed = [
            removal(1, RemovalReason::ExcludedTxid),
            removal(
                2,
                RemovalReason::Feerate {
                    fee: Amount::from_sat(10),
                    vsize: 100,
                },
            ),
            removal(
                3,
                RemovalReason::Descendant {
                    parent: Txid::from_byte_array([2; 32]),
                },
            ),
            removal(4, RemovalReason::ExcludedTxid),
        ];
        reports.record(TemplateId::new(7), &removed);
        reports.record(TemplateId::new(8), &[]);
        let r = reports.of(TemplateId::new(7));
        assert_eq!(r.excluded.len(), 4);
        assert_eq!(r.excluded[1].reason, "feerate");
        assert_eq!(r.excluded[1].detail, "fee 10 sat for 100 vB");
        let counts: Vec<(&str, u64)> = r.by_reason.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            counts,
            [("descendant", 1), ("excluded_txid", 2), ("feerate", 1)]
        );
        assert!(reports.of(TemplateId::new(8)).excluded.is_empty());
        assert!(reports.of(TemplateId::new(99)).by_reason.is_empty());
    }

    #[test]
    fn fates_fold_into_a_few_labels() {
        assert_eq!(fate_class("accepted"), "accepted");
        assert_eq!(fate_class("rejected: bad-txnmrklroot"), "rejected");
        assert_eq!(fate_class("abandoned: chain at 7, timeout"), "abandoned");
        assert_eq!(fate_class("something new"), "other");
        let tally = BlockTally::default();
        let hash = BlockHash::from_byte_array([1; 32]);
        let fate = |node: &str, fate: &str| BlockNews::Fate {
            hash,
            node: node.into(),
            fate: fate.into(),
        };
        tally.count(&BlockNews::Found {
            hash,
            height: 1,
            found_by: "w".into(),
        });
        tally.count(&fate("a", "accepted"));
        tally.count(&fate("b", "rejected: x"));
        tally.count(&fate("b", "rejected: y"));
        let (found, fates) = tally.snapshot();
        assert_eq!(found, 1);
        assert_eq!(
            fates,
            [("a".into(), "accepted", 1), ("b".into(), "rejected", 2)]
        );
    }
}
