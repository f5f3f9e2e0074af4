//! Node backends: how templates and tips come in, and how blocks go out.
//!
//! A [`NodeBackend`] is one way of talking to the farm's node. Two exist: [`RpcBackend`]
//! (JSON-RPC `getblocktemplate` long polling, any Core or Knots) and, with the `ipc` feature,
//! [`ipc::IpcBackend`] (Bitcoin Core 30+'s mining interface over a UNIX socket; checks and
//! blocks still go over RPC, which gives the node's verdict).

pub mod gbt;
#[cfg(feature = "ipc")]
pub mod ipc;
pub mod rpc;
pub mod tip;
pub mod zmq;

use std::future::Future;
use std::sync::Arc;

use bitcoin::{BlockHash, Network};
use mining_types::{Side, Template};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::rpc::RpcError;
pub use crate::source::TemplateSource as RpcBackend;

/// One way of talking to the farm's node.
pub trait NodeBackend: Send + Sync + 'static {
    /// Checks that the node is on the configured chain and has synced.
    ///
    /// # Errors
    /// [`NodeError::WrongNetwork`], [`NodeError::InitialBlockDownload`], or the failure to ask.
    fn check(&self) -> impl Future<Output = Result<ChainInfo, NodeError>> + Send;

    /// Starts the template stream on `tracker`; the receiver always holds the newest template.
    /// Returns once the first template is in, so jobs can start at once.
    ///
    /// # Errors
    /// When the first template cannot be had: the node cannot be reached, refuses, or sends
    /// one that cannot be used.
    fn templates(
        &self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<watch::Receiver<Arc<Template>>, NodeError>> + Send;

    /// Submits a serialized block and returns the node's verdict.
    ///
    /// # Errors
    /// Only when the node could not be asked; a refused block is [`Verdict::Rejected`].
    fn submit_block(&self, block: &[u8])
        -> impl Future<Output = Result<Verdict, NodeError>> + Send;
}

/// What a node said of a block it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The block is the node's new tip.
    Accepted,
    /// The node had it already.
    Duplicate,
    /// Valid, but a competing block at the same height came first.
    Inconclusive,
    /// The node lacks the block's parent (`prev-blk-not-found`): no verdict on the block yet.
    /// A node back from an outage learns the parent from its peers or from our own submission
    /// of it, so the block is submitted again.
    MissingParent,
    /// Refused, with the node's reason.
    Rejected(String),
}

impl Verdict {
    /// Reads `submitblock`'s answer: `null` is acceptance, a string the reason otherwise.
    pub fn from_submitblock(reason: Option<String>) -> Self {
        let Some(reason) = reason else {
            return Verdict::Accepted;
        };
        match reason.as_str() {
            "duplicate" => Verdict::Duplicate,
            "inconclusive" => Verdict::Inconclusive,
            "prev-blk-not-found" => Verdict::MissingParent,
            _ => Verdict::Rejected(reason),
        }
    }

    /// A short name for logs and metrics.
    pub fn as_str(&self) -> &str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Inconclusive => "inconclusive",
            Verdict::MissingParent => "prev-blk-not-found",
            Verdict::Rejected(reason) => reason,
        }
    }

    /// How the block journal records it: `rejected: <reason>` for a refusal.
    pub fn fate(&self) -> String {
        match self {
            Verdict::Rejected(reason) => format!("rejected: {reason}"),
            other => other.as_str().to_owned(),
        }
    }
}

/// Why the node could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node is on another chain.
    #[error("the node is on chain {actual:?}, but the config says {expected:?}")]
    WrongNetwork {
        /// The chain configured.
        expected: String,
        /// The chain the node reports.
        actual: String,
    },
    /// The node is still syncing.
    #[error("the node is in initial block download ({blocks} of {headers} headers); mining on a stale tip would waste work, try again when it has synced")]
    InitialBlockDownload {
        /// Blocks it has.
        blocks: u64,
        /// Headers it knows.
        headers: u64,
    },
    /// JSON-RPC failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// This build has no IPC backend.
    #[error("node.backend = \"ipc\" needs template-provider built with the `ipc` feature")]
    IpcUnavailable,
    /// The IPC backend failed.
    #[cfg(feature = "ipc")]
    #[error(transparent)]
    Ipc(#[from] ipc::IpcError),
}

impl NodeError {
    /// Always the node's side: whatever failed, it was in talking to it.
    pub fn side(&self) -> Side {
        match self {
            NodeError::IpcUnavailable => Side::Local,
            _ => Side::Node,
        }
    }
}

/// What the node said about itself at start.
#[derive(Debug, Clone, Deserialize)]
pub struct ChainInfo {
    /// Core's name for its chain (`main`, `test`, `regtest`...).
    pub chain: String,
    /// Blocks on its active chain.
    pub blocks: u64,
    /// Headers it knows.
    pub headers: u64,
    /// Its tip.
    #[serde(rename = "bestblockhash")]
    pub best_block_hash: BlockHash,
    /// Whether it is still syncing.
    #[serde(rename = "initialblockdownload")]
    pub initial_block_download: bool,
}

/// The chain name Bitcoin Core reports in `getblockchaininfo` for a network.
pub fn core_chain_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "main",
        Network::Testnet => "test",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}
