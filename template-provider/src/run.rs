//! The `template-provider run` command: the config from the file and the environment, served
//! until stopped, with the farm's policy reloaded on SIGHUP.

use std::future::Future;
use std::path::Path;

use tracing::info;

use crate::layers::{KeyErrors, Layers};
use crate::reload::{keys, log_outcome, Hangups, Reloader};
use crate::server::{Provider, ProviderConfig, RawProviderConfig};

/// Environment variables naming config keys start with this:
/// `TEMPLATE_PROVIDER__SERVER__LISTEN` is `server.listen`.
pub const ENV_PREFIX: &str = "TEMPLATE_PROVIDER__";

/// What a SIGHUP applies while running: the policy's filters. The rest of the file (and
/// `policy.prioritise_*`, told to the node at start) waits for a restart.
pub const LIVE_KEYS: &[&str] = &[
    "policy.exclude_txids",
    "policy.exclude_script_types",
    "policy.max_datacarrier_bytes",
    "policy.min_feerate",
    "policy.weight_reserve",
];

/// Reads `file` with the environment over it and `listen` (the `--listen` flag) over both.
///
/// # Errors
/// Every bad key, each with where its value came from.
pub fn load(file: &Path, listen: Option<&str>) -> Result<(ProviderConfig, Layers), KeyErrors> {
    let mut layers = Layers::read(Some(file), ENV_PREFIX)?;
    if let Some(l) = listen {
        layers = layers.set("server.listen", l, "--listen")?;
    }
    let config = layers.load::<RawProviderConfig, _>(ProviderConfig::from_raw)?;
    Ok((config, layers))
}

/// Serves until `stop`, reloading on each SIGHUP.
///
/// # Errors
/// As [`Provider::start`].
pub async fn serve(
    config: ProviderConfig,
    mut reloader: Reloader<ProviderConfig>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let provider = Provider::start(config).await?;
    info!(listen = %provider.local_addr(), "template provider running");
    let mut hangups = Hangups::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = hangups.next() => reload(&provider, &mut reloader),
        }
    }
    provider.shutdown().await;
    Ok(())
}

/// Reads the config again and puts its policy in force.
pub fn reload(provider: &Provider, reloader: &mut Reloader<ProviderConfig>) {
    let Some((config, live)) = log_outcome(reloader.reload()) else {
        return;
    };
    if live.is_empty() {
        info!("config reloaded: nothing that applies while running changed");
        return;
    }
    provider.policy().replace(config.node.source.policy.clone());
    for c in &live {
        info!(change = %c, "reloaded");
    }
    info!(
        changed = keys(&live),
        "config reloaded: the farm policy applies from the next template"
    );
}
