//! Block templates from the farm's own node, and the Stratum V2 Template Distribution server.
//!
//! Data flows one way: [`node`] talks to Bitcoin Core or Knots (a [`node::NodeBackend`]: JSON-RPC,
//! or IPC on Core 30+) and reports new tips and templates; [`policy`] removes what the farm
//! will not mine; [`source`] runs the watchers and publishes the newest template. The proxy
//! turns templates into jobs; [`tdp`] serves them to SV2 pools and job-declaration clients, and
//! [`blocks`] submits the blocks found on them.

#![warn(missing_docs)]

pub mod blocks;
pub mod config;
pub mod figures;
pub mod http;
pub mod layers;
pub mod logging;
pub mod node;
pub mod nodes;
pub mod policy;
pub mod reload;
pub mod run;
pub mod server;
pub mod source;
pub mod tdp;

pub use node::rpc::{NodeAuth, RpcClient, RpcError};
pub use node::{NodeBackend, NodeError, Verdict};
pub use source::{TemplateSource, TemplateSourceConfig};

/// Resolves on Ctrl-C, or on SIGTERM from a service manager: how both daemons learn to stop.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
