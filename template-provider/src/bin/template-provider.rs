//! `template-provider`: watches a node and logs every template it would serve.
//!
//! The Stratum V2 Template Distribution server lands on top of this; today the binary is the
//! quickest way to check that a node's templates and tips reach us.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use template_provider::{NodeAuth, RpcClient, TemplateSource, TemplateSourceConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Watch a Bitcoin Core or Knots node and log its block templates as they change.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The node's JSON-RPC URL.
    #[arg(long, default_value = "http://127.0.0.1:8332")]
    rpc_url: String,
    /// The node's cookie file (default auth).
    #[arg(long, conflicts_with = "rpc_user")]
    cookie_file: Option<PathBuf>,
    /// RPC user (with --rpc-password).
    #[arg(long, requires = "rpc_password")]
    rpc_user: Option<String>,
    /// RPC password.
    #[arg(long, env = "TP_RPC_PASSWORD")]
    rpc_password: Option<String>,
    /// bitcoin, testnet, testnet4, signet or regtest.
    #[arg(long, default_value = "bitcoin")]
    network: bitcoin::Network,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let auth = match (args.cookie_file, args.rpc_user, args.rpc_password) {
        (Some(path), _, _) => NodeAuth::CookieFile(path),
        (None, Some(user), Some(password)) => NodeAuth::UserPass { user, password },
        _ => anyhow::bail!("give --cookie-file or --rpc-user and --rpc-password"),
    };
    let config = TemplateSourceConfig {
        network: args.network,
        ..Default::default()
    };
    let source = TemplateSource::new(RpcClient::new(args.rpc_url, auth), config);
    source.check_node().await.context("node check failed")?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut templates = source.spawn(&tracker, shutdown.clone()).await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = templates.changed() => if changed.is_err() { break },
        }
    }
    shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    Ok(())
}
