//! Block templates from the farm's own node.
//!
//! Data flows one way: [`node`] talks to Bitcoin Core (or Knots) and reports new tips and new
//! templates; [`template`] turns what the node says into typed [`Template`]s with a coinbase
//! split around the proxy's extranonce space; [`source`] runs the watchers and publishes the
//! newest template, so the proxy can turn it into jobs.
//!
//! The crate knows nothing of Stratum: a template is consensus data, and the proxy decides how
//! it reaches miners.

pub mod blocks;
pub mod config;
pub mod node;
pub mod server;
pub mod source;
pub mod sv2;
pub mod tdp;
pub mod template;

pub use node::rpc::{NodeAuth, RpcClient, RpcError};
pub use source::{TemplateSource, TemplateSourceConfig};
pub use template::coinbase::{CoinbaseConfig, CoinbaseError, CoinbaseSplit};
pub use template::{Template, TemplateId, TemplateKind};

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
