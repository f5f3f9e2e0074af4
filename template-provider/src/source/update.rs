//! Which templates from the node reach the miners: a new tip always, a same-tip template
//! only for a real fee gain and not too often, since every update makes every ASIC switch jobs.

use std::time::Duration;

use mining_types::{Template, TemplateKind};

/// When a same-tip template is worth sending to miners: every update makes every ASIC switch
/// jobs, so only a real gain in fees counts, and not more often than the interval allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// Fees must rise by at least this much over the published template.
    pub fee_threshold: bitcoin::Amount,
    /// Same-tip updates at most this often. New tips are never delayed.
    pub min_interval: Duration,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            fee_threshold: bitcoin::Amount::from_sat(1_000),
            min_interval: Duration::from_secs(5),
        }
    }
}

/// What the publisher does with a full template from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new tip, or a full template replacing an empty one: published at once.
    NewTip,
    /// A same-tip template worth the switch: published.
    Update,
    /// Not published, and why.
    Drop(&'static str),
}

/// Decides on `new` given the published `current`.
pub fn decide(
    current: &Template,
    new: &Template,
    since_last: Duration,
    policy: &UpdatePolicy,
) -> Decision {
    if new.height < current.height {
        return Decision::Drop("older height");
    }
    if new.prev_hash != current.prev_hash || current.kind == TemplateKind::Empty {
        return Decision::NewTip;
    }
    if new.fees() < current.fees() + policy.fee_threshold {
        return Decision::Drop("fee gain below the threshold");
    }
    if since_last < policy.min_interval {
        return Decision::Drop("rate limited");
    }
    Decision::Update
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, BlockHash, Network, Txid, Wtxid};
    use std::sync::Arc;

    use bitcoin::CompactTarget;
    use mining_types::{TemplateId, TemplateTx};

    fn template(prev: u8, height: u32, fees: u64, kind: TemplateKind) -> Template {
        let tx = TemplateTx {
            txid: Txid::all_zeros(),
            wtxid: Wtxid::all_zeros(),
            data: vec![],
            fee: Some(Amount::from_sat(fees)),
            weight: 400,
            depends: vec![],
        };
        Template {
            id: TemplateId::new(1),
            kind,
            network: Network::Regtest,
            height,
            prev_hash: BlockHash::from_byte_array([prev; 32]),
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::from_sat(5_000_000_000 + fees),
            witness_commitment: None,
            txs: Arc::new(vec![tx]),
            merkle_path: vec![],
        }
    }

    #[test]
    fn new_tips_always_pass_and_updates_need_fees_and_time() {
        let p = UpdatePolicy {
            fee_threshold: Amount::from_sat(1_000),
            min_interval: Duration::from_secs(5),
        };
        let cur = template(1, 100, 5_000, TemplateKind::Full);
        let long = Duration::from_secs(60);
        assert_eq!(
            decide(
                &cur,
                &template(2, 101, 0, TemplateKind::Full),
                Duration::ZERO,
                &p
            ),
            Decision::NewTip
        );
        assert_eq!(
            decide(
                &template(1, 100, 0, TemplateKind::Empty),
                &cur,
                Duration::ZERO,
                &p
            ),
            Decision::NewTip
        );
        assert_eq!(
            decide(&cur, &template(1, 100, 5_999, TemplateKind::Full), long, &p),
            Decision::Drop("fee gain below the threshold")
        );
        assert_eq!(
            decide(&cur, &template(1, 100, 6_000, TemplateKind::Full), long, &p),
            Decision::Update
        );
        assert_eq!(
            decide(
                &cur,
                &template(1, 100, 9_000, TemplateKind::Full),
                Duration::from_secs(1),
                &p
            ),
            Decision::Drop("rate limited")
        );
        assert_eq!(
            decide(&cur, &template(0, 99, 9_000, TemplateKind::Full), long, &p),
            Decision::Drop("older height")
        );
    }
}
