//! `sv1-miner`: runs N simulated ASICs against a Stratum V1 server until Ctrl-C.

use anyhow::Result;
use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use sv1_miner::{spawn, Dialect, MinerConfig, MinerEvent, StatsSnapshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "sv1-miner",
    version,
    about = "Stratum V1 CPU miner imitating ASIC firmware dialects"
)]
struct Args {
    /// Stratum V1 server address.
    #[arg(long, default_value = "127.0.0.1:3333", env = "SV1_MINER_SERVER")]
    server: SocketAddr,
    /// Worker name; with --count > 1 each miner gets a ".N" suffix (1-based).
    #[arg(long, default_value = "sv1-miner")]
    user: String,
    #[arg(long, default_value = "x")]
    password: String,
    /// Firmware dialect(s): cgminer, whatsminer, avalon, bitaxe, braiins, nerdminer.
    /// A comma-separated list is assigned round-robin.
    #[arg(long, default_value = "cgminer", value_delimiter = ',')]
    dialect: Vec<Dialect>,
    /// Number of miners.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Difficulty hint for the dialects that send one (bitaxe, nerdminer, braiins).
    #[arg(long)]
    suggest_difficulty: Option<f64>,
    /// Hashes per second cap, per miner (0: connect and follow jobs, never hash).
    #[arg(long)]
    max_hashrate: Option<f64>,
    /// Local source address for the connections (e.g. 127.0.0.3).
    #[arg(long)]
    bind_ip: Option<IpAddr>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    if args.count == 0 {
        anyhow::bail!("--count must be at least 1");
    }
    if args.dialect.is_empty() {
        anyhow::bail!("--dialect needs at least one dialect");
    }

    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        let dialect = args.dialect[i % args.dialect.len()];
        let user = if args.count > 1 {
            format!("{}.{}", args.user, i + 1)
        } else {
            args.user.clone()
        };
        let config = MinerConfig {
            server: args.server,
            user: user.clone(),
            password: args.password.clone(),
            dialect,
            suggest_difficulty: args.suggest_difficulty,
            max_hashrate: args.max_hashrate,
            bind_ip: args.bind_ip,
            // As cgminer does: a proxy restarting asks its miners back, and they come.
            follow_reconnect: true,
        };
        let mut handle = spawn(config, shutdown.clone());
        handles.push(handle.stats.clone());
        tasks.spawn(async move {
            while let Some(event) = handle.events.recv().await {
                log_event(&user, dialect, &event);
            }
        });
    }
    info!(count = args.count, server = %args.server, "miners started; Ctrl-C to stop");

    let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
    stats_tick.tick().await;
    let interrupted = loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r { warn!("cannot listen for Ctrl-C: {e}"); }
                break true;
            }
            joined = tasks.join_next() => {
                if joined.is_none() || tasks.is_empty() { break false; }
            }
            _ = stats_tick.tick() => info!("{}", summary(&total(&handles))),
        }
    };
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    info!("stopped: {}", summary(&total(&handles)));
    if !interrupted {
        anyhow::bail!("all miners disconnected");
    }
    Ok(())
}

fn log_event(user: &str, dialect: Dialect, event: &MinerEvent) {
    match event {
        MinerEvent::Subscribed {
            extranonce1,
            extranonce2_size,
        } => {
            info!(%user, %dialect, extranonce1 = %hex::encode(extranonce1), extranonce2_size, "subscribed");
        }
        MinerEvent::Configured { version_mask } => {
            info!(%user, version_mask = ?version_mask.map(|m| format!("{m:08x}")), "configured");
        }
        MinerEvent::Difficulty(d) => info!(%user, difficulty = d, "difficulty"),
        MinerEvent::Reconnecting { to, wait } => info!(%user, %to, ?wait, "reconnecting"),
        MinerEvent::Notify {
            job_id,
            prevhash,
            clean,
            ..
        } => {
            if *clean {
                info!(%user, %job_id, %prevhash, "new block job");
            } else {
                tracing::debug!(%user, %job_id, "job");
            }
        }
        MinerEvent::ShareSubmitted { job_id, block_hash } => {
            tracing::debug!(%user, %job_id, %block_hash, "share submitted");
        }
        MinerEvent::ShareResult {
            accepted: true,
            latency,
            ..
        } => {
            info!(%user, latency_ms = latency.as_millis() as u64, "share accepted");
        }
        MinerEvent::ShareResult {
            accepted: false,
            reason,
            latency,
        } => warn!(
            %user,
            reason = reason.as_deref().unwrap_or("(none)"),
            latency_ms = latency.as_millis() as u64,
            "share rejected"
        ),
        MinerEvent::Disconnected { reason } => info!(%user, %reason, "disconnected"),
    }
}

fn total(stats: &[std::sync::Arc<sv1_miner::Stats>]) -> StatsSnapshot {
    stats
        .iter()
        .map(|s| s.snapshot())
        .fold(StatsSnapshot::default(), |a, s| StatsSnapshot {
            shares_submitted: a.shares_submitted + s.shares_submitted,
            shares_accepted: a.shares_accepted + s.shares_accepted,
            shares_rejected: a.shares_rejected + s.shares_rejected,
            shares_stale_dropped: a.shares_stale_dropped + s.shares_stale_dropped,
            notifies: a.notifies + s.notifies,
            clean_notifies: a.clean_notifies + s.clean_notifies,
            hashes: a.hashes + s.hashes,
            unknown_messages: a.unknown_messages + s.unknown_messages,
            authorized: a.authorized || s.authorized,
        })
}

fn summary(s: &StatsSnapshot) -> String {
    format!(
        "submitted {} accepted {} rejected {} stale-dropped {} notifies {} ({} clean) hashes {}",
        s.shares_submitted,
        s.shares_accepted,
        s.shares_rejected,
        s.shares_stale_dropped,
        s.notifies,
        s.clean_notifies,
        s.hashes
    )
}
