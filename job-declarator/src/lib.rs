//! Stratum V2 Job Declaration client: the farm tells the pool's Job Declaration Server (JDS)
//! which block it is about to mine, and gets the token the pool's mining connection wants for
//! that job (`SetCustomMiningJob`).
//!
//! One [`JdClient`] per JDS connection; requests run one at a time, so a declaration's
//! `ProvideMissingTransactions` round trip is answered in line.

pub mod client;

pub use client::{Allocation, Declaration, JdClient, JdError, Solution, SolutionPusher, Token};

use template_provider::Template;

/// The wtxids a full-template `DeclareMiningJob` lists, in block order.
pub fn declared_wtxids(template: &Template) -> Vec<bitcoin::Wtxid> {
    template.txs.iter().map(|t| t.wtxid).collect()
}
