//! How a template source watches its node, and when a same-tip template is worth sending to
//! the miners.

use std::time::Duration;

use bitcoin::Network;

use crate::policy::Policy;

/// How the source watches the node.
#[derive(Debug, Clone)]
pub struct TemplateSourceConfig {
    /// The chain the farm mines; the node must be on it.
    pub network: Network,
    /// How long one `waitfornewblock` / `getblocktemplate` long poll may wait.
    pub long_poll: Duration,
    /// Fallback tip polling interval for nodes without `waitfornewblock`.
    pub poll_interval: Duration,
    /// A fresh full template at least this often, even when the node's long poll is quiet.
    pub refresh_interval: Duration,
    /// The node's ZMQ `hashblock` publisher (`-zmqpubhashblock`), e.g. `tcp://127.0.0.1:28332`.
    pub zmq_hashblock: Option<String>,
    /// The farm's transaction policy at start, applied to every template the node gives; a
    /// reload replaces it in the source's [`LivePolicy`](TemplateSource::live_policy).
    pub policy: Policy,
    /// Txids the node is asked to rank first, with the fee bonus in satoshis.
    pub prioritise: Vec<(bitcoin::Txid, i64)>,
    /// When a same-tip template replaces the published one.
    pub updates: UpdatePolicy,
}

impl Default for TemplateSourceConfig {
    fn default() -> Self {
        TemplateSourceConfig {
            network: Network::Bitcoin,
            long_poll: Duration::from_secs(20),
            poll_interval: Duration::from_millis(500),
            refresh_interval: Duration::from_secs(30),
            zmq_hashblock: None,
            policy: Policy::default(),
            prioritise: Vec::new(),
            updates: UpdatePolicy::default(),
        }
    }
}

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
