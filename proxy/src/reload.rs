//! SIGHUP: the farm's policy and the vardiff settings reloaded without dropping a miner.
//!
//! The config is read again (file, environment, the same flags) and validated whole; a bad
//! key refuses the reload and the config in force stays. Otherwise the new policy applies to
//! the next template (the nodes' sources fetch one at once) and each session takes the new
//! vardiff bounds and targets at its next tick, in the same connection. Keys that only a
//! restart applies are logged as such.

use std::future::Future;

use template_provider::layers::diff::Change;
use template_provider::reload::{keys, log_outcome, Hangups, Outcome, Reloader};
use tracing::{info, warn};

use crate::config::Config;
use crate::figures::events::EventKind;
use crate::Proxy;

impl Proxy {
    /// Reads the config again with `reloader` and puts its live settings in force; logs what
    /// changed and records a [`EventKind::Reload`] event.
    pub fn reload(&self, reloader: &mut Reloader<Config>) {
        let outcome = reloader.reload();
        if let Outcome::Refused(errors) = &outcome {
            let first = errors
                .0
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            self.board.events.push(EventKind::Reload {
                what: format!("refused, config in force kept: {first}"),
            });
        }
        let Some((config, live)) = log_outcome(outcome) else {
            return;
        };
        if live.is_empty() {
            info!("config reloaded: nothing that applies while running changed");
            return;
        }
        self.apply(&config, &live);
    }

    /// Puts `config`'s vardiff settings and policy in force; `live` is what changed.
    fn apply(&self, config: &Config, live: &[Change]) {
        let vardiff = config.sv1.vardiff;
        self.vardiff.send_if_modified(|v| {
            let changed = *v != vardiff;
            *v = vardiff;
            changed
        });
        let policy_changed = live.iter().any(|c| c.in_section("policy"));
        match (&self.policy, config.nodes.first()) {
            (Some(live_policy), Some(node)) => {
                live_policy.replace(node.source.policy.clone());
            }
            _ if policy_changed => {
                warn!("[policy] changed, but templates come from [template_provider]: reload the policy there");
            }
            _ => {}
        }
        for c in live {
            info!(change = %c, "reloaded");
        }
        let what = keys(live);
        info!(
            changed = %what,
            "config reloaded: vardiff applies at each miner's next retarget tick, the policy from the next template; no miner is disconnected"
        );
        self.board.events.push(EventKind::Reload { what });
    }
}

/// Runs the proxy until `signal` (or a handover), reloading on each SIGHUP.
///
/// # Errors
/// As [`Proxy::start`].
pub async fn run_reloading(
    config: Config,
    mut reloader: Reloader<Config>,
    signal: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Before anything else: a SIGHUP while starting must not end the process.
    let mut hangups = Hangups::new();
    let proxy = Proxy::start(config).await?;
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => {
                info!("shutting down: miners are asked to reconnect");
                break;
            }
            () = proxy.handed_over() => {
                info!("handed over to the new version: shutting down");
                break;
            }
            () = hangups.next() => proxy.reload(&mut reloader),
        }
    }
    proxy.shutdown().await;
    Ok(())
}
