//! Stratum V2 Job Declaration client state (tokens, declarations, missing transactions and
//! solutions), kept free of I/O so it can be tested without a socket.
//!
//! This crate fills in with the pool-mode work; today it only holds what the declaration of a
//! template will be built from.

use template_provider::Template;

/// The wtxids a full-template `DeclareMiningJob` lists, in block order.
pub fn declared_wtxids(template: &Template) -> Vec<bitcoin::Wtxid> {
    template.txs.iter().map(|t| t.wtxid).collect()
}
