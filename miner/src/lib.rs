//! A Stratum V1 CPU miner that imitates the dialects of real ASIC firmware.
//!
//! [`spawn`] starts one miner: it connects to a Stratum V1 server, performs the handshake of its
//! [`Dialect`], hashes the jobs it is sent on a dedicated OS thread, submits shares, and reports
//! what happens as [`MinerEvent`]s and [`Stats`] counters. It ends on shutdown or on the first
//! connection error (no reconnect), always with a final [`MinerEvent::Disconnected`].
//!
//! ```no_run
//! # async fn demo() {
//! use sv1_miner::{spawn, Dialect, MinerConfig, MinerEvent};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let mut miner = spawn(
//!     MinerConfig::new("127.0.0.1:3333".parse().unwrap(), "worker.1", Dialect::Bitaxe)
//!         .with_suggest_difficulty(0.0001)
//!         .with_max_hashrate(50_000.0),
//!     shutdown.clone(),
//! );
//! while let Some(ev) = miner.events.recv().await {
//!     if let MinerEvent::ShareResult { accepted, .. } = ev { println!("accepted: {accepted}"); }
//! }
//! # }
//! ```
//!
//! The pure parts are public for tests: [`share_target`], [`build_header`], [`Job`],
//! [`decode_prevhash`] / [`encode_prevhash`], [`merkle_root`] and [`Dialect::handshake`].

#![warn(missing_docs)]

mod dialect;
mod hasher;
mod session;
mod target;
mod work;

pub use dialect::{json_number, Dialect, HandshakeStep, Request};
pub use target::{share_target, share_target_be, DIFF1_TARGET_BE};
pub use work::{
    build_header, decode_prevhash, encode_prevhash, header_bytes, merkle_root, parse_u32_hex,
    roll_version, Job,
};

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest line accepted from the server; a longer one ends the connection.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handshake step that waits for its reply waits before the firmware carries on.
pub const HANDSHAKE_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What one miner connects to and how it behaves.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// The Stratum V1 server to connect to.
    pub server: SocketAddr,
    /// Worker name for `mining.authorize` and `mining.submit`.
    pub user: String,
    /// Password for `mining.authorize`; servers commonly ignore it.
    pub password: String,
    /// The firmware whose handshake and submit format the miner imitates.
    pub dialect: Dialect,
    /// Value for the dialect's difficulty hint: `mining.suggest_difficulty` (Bitaxe, NerdMiner)
    /// or `minimum-difficulty.value` (Braiins). Other dialects never send one.
    pub suggest_difficulty: Option<f64>,
    /// Hashes per second cap, so several miners can share a small machine. `None`: flat out;
    /// `Some(0.0)`: an idle miner that handshakes and follows jobs but never hashes.
    pub max_hashrate: Option<f64>,
    /// Local source address (e.g. 127.0.0.3), so a server sees distinct peers.
    pub bind_ip: Option<IpAddr>,
    /// Follow `client.reconnect`: close, wait what the server asks, connect where it says (as
    /// cgminer does). Off: the request is logged and ignored.
    pub follow_reconnect: bool,
}

impl MinerConfig {
    /// A config with password `"x"` and no difficulty hint, hashrate cap or bind address.
    pub fn new(server: SocketAddr, user: impl Into<String>, dialect: Dialect) -> MinerConfig {
        MinerConfig {
            server,
            user: user.into(),
            password: "x".into(),
            dialect,
            suggest_difficulty: None,
            max_hashrate: None,
            bind_ip: None,
            follow_reconnect: false,
        }
    }

    /// Follows `client.reconnect` (see [`MinerConfig::follow_reconnect`]).
    pub fn following_reconnect(mut self) -> Self {
        self.follow_reconnect = true;
        self
    }

    /// Sets the difficulty hint (see [`MinerConfig::suggest_difficulty`]).
    pub fn with_suggest_difficulty(mut self, d: f64) -> Self {
        self.suggest_difficulty = Some(d);
        self
    }

    /// Caps hashing (see [`MinerConfig::max_hashrate`]); `0.0` makes an idle miner.
    pub fn with_max_hashrate(mut self, h: f64) -> Self {
        self.max_hashrate = Some(h);
        self
    }

    /// Binds the local end to `ip`, so a server sees distinct peers.
    pub fn with_bind_ip(mut self, ip: IpAddr) -> Self {
        self.bind_ip = Some(ip);
        self
    }
}

/// What a miner reports, in order.
#[derive(Debug, Clone)]
pub enum MinerEvent {
    /// The `mining.subscribe` reply arrived.
    Subscribed {
        /// The server-assigned extranonce1.
        extranonce1: Vec<u8>,
        /// Bytes of extranonce2 the miner rolls.
        extranonce2_size: usize,
    },
    /// The `mining.configure` reply arrived; `version_mask` is the granted mask, if rolling was granted.
    Configured {
        /// The granted version-rolling mask; `None` when rolling was refused or not asked for.
        version_mask: Option<u32>,
    },
    /// `mining.set_difficulty` arrived (it applies from the next notify on).
    Difficulty(f64),
    /// `mining.notify` arrived and is being mined. `prevhash` is in header order, i.e. the
    /// parent's real block hash (its `Display` is the usual hex).
    Notify {
        /// The server's job id.
        job_id: String,
        /// The parent block hash, in header order.
        prevhash: bitcoin::BlockHash,
        /// Whether the server asked to drop earlier jobs.
        clean: bool,
        /// When the notify was read, for latency measurements.
        at: Instant,
    },
    /// A share was sent with `mining.submit`.
    ShareSubmitted {
        /// The job the share belongs to.
        job_id: String,
        /// The share's block hash, so a test can match it to a block the pool finds.
        block_hash: bitcoin::BlockHash,
    },
    /// The server answered a submit. `reason` is the error message of a rejection, if any.
    ShareResult {
        /// Whether the server accepted the share.
        accepted: bool,
        /// The server's error message, for a rejection.
        reason: Option<String>,
        /// Time from sending the submit to reading its reply.
        latency: Duration,
    },
    /// The server asked the miner to reconnect; it is connecting to `to` after `wait`.
    Reconnecting {
        /// Where.
        to: SocketAddr,
        /// After how long.
        wait: std::time::Duration,
    },
    /// The miner stopped: the last event. `reason` is `"shutdown"` after cancellation.
    Disconnected {
        /// Why the miner stopped.
        reason: String,
    },
}

/// Live counters of one miner (all monotonic except `authorized`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Shares sent with `mining.submit`.
    pub shares_submitted: AtomicU64,
    /// Submits the server answered with `true`.
    pub shares_accepted: AtomicU64,
    /// Submits the server refused.
    pub shares_rejected: AtomicU64,
    /// Shares found for jobs a clean notify had already replaced, and so not submitted.
    pub shares_stale_dropped: AtomicU64,
    /// `mining.notify` messages accepted as jobs.
    pub notifies: AtomicU64,
    /// Of those, the ones with `clean_jobs` set.
    pub clean_notifies: AtomicU64,
    /// Header hashes computed.
    pub hashes: AtomicU64,
    /// Messages ignored: unknown methods, replies to no request, unparsable lines.
    pub unknown_messages: AtomicU64,
    /// Whether `mining.authorize` was answered with `true`.
    pub authorized: AtomicBool,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::shares_submitted`].
    pub shares_submitted: u64,
    /// See [`Stats::shares_accepted`].
    pub shares_accepted: u64,
    /// See [`Stats::shares_rejected`].
    pub shares_rejected: u64,
    /// See [`Stats::shares_stale_dropped`].
    pub shares_stale_dropped: u64,
    /// See [`Stats::notifies`].
    pub notifies: u64,
    /// See [`Stats::clean_notifies`].
    pub clean_notifies: u64,
    /// See [`Stats::hashes`].
    pub hashes: u64,
    /// See [`Stats::unknown_messages`].
    pub unknown_messages: u64,
    /// See [`Stats::authorized`].
    pub authorized: bool,
}

impl Stats {
    /// Reads every counter; each is read on its own, so the copy is not one instant's.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            shares_submitted: g(&self.shares_submitted),
            shares_accepted: g(&self.shares_accepted),
            shares_rejected: g(&self.shares_rejected),
            shares_stale_dropped: g(&self.shares_stale_dropped),
            notifies: g(&self.notifies),
            clean_notifies: g(&self.clean_notifies),
            hashes: g(&self.hashes),
            unknown_messages: g(&self.unknown_messages),
            authorized: self.authorized.load(Ordering::Relaxed),
        }
    }
}

/// A running miner.
#[derive(Debug)]
pub struct MinerHandle {
    /// Every [`MinerEvent`], ending with `Disconnected`. Unbounded: drop it if you won't read it.
    pub events: tokio::sync::mpsc::UnboundedReceiver<MinerEvent>,
    /// The miner's live counters.
    pub stats: Arc<Stats>,
    /// The connection task; it ends after `Disconnected` is sent.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts one miner on the current Tokio runtime (panics outside one). It runs until `shutdown`
/// is cancelled or the connection fails, whichever comes first; its hashing thread ends with it.
pub fn spawn(config: MinerConfig, shutdown: CancellationToken) -> MinerHandle {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let stats = Arc::new(Stats::default());
    let task = tokio::spawn(session::run(config, shutdown, tx, stats.clone()));
    MinerHandle {
        events,
        stats,
        task,
    }
}
