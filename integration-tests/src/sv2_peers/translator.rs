//! `translator_sv2`: its config, and the running translator.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use sv2_wire::AuthorityPublicKey;

use super::process::{Peer, Sv2Peer};
use super::toml::{toml_float, toml_str};
use super::{sv2_binary, PoolSv2, STARTUP_TIMEOUT, START_ATTEMPTS, TRANSLATOR_BIN};
use crate::support::process::free_local_port;

/// Everything [`TranslatorSv2::start`] writes into the translator's config. The SV1 port is
/// chosen at start.
#[derive(Clone, Debug)]
pub struct TranslatorSv2Config {
    /// The SV2 pool's mining listener.
    pub upstream: SocketAddr,
    /// The pool's authority public key, in base58check form (as [`AuthorityPublicKey`] prints it).
    pub authority_pubkey: String,
    /// `user_identity` of the upstream channel(s).
    pub user_identity: String,
    /// `downstream_difficulty_config.min_individual_miner_hashrate` (H/s): the first SV1
    /// difficulty is set so a miner of this hashrate finds `shares_per_minute` shares.
    pub min_individual_miner_hashrate: f64,
    /// `downstream_difficulty_config.shares_per_minute`.
    pub shares_per_minute: f32,
    /// `downstream_difficulty_config.enable_vardiff`.
    pub enable_vardiff: bool,
    /// `downstream_difficulty_config.job_keepalive_interval_secs` (required; `0` disables).
    pub job_keepalive_interval_secs: u16,
    /// `aggregate_channels`: one upstream channel for all miners, or one each.
    pub aggregate_channels: bool,
    /// `downstream_extranonce2_size` (2..=16; cgminer takes at most 8).
    pub downstream_extranonce2_size: u16,
}

impl TranslatorSv2Config {
    /// In front of `pool`: 20 kH/s miners at 20 shares a minute (on regtest every share is a
    /// block), vardiff on, aggregated channel, 4-byte extranonce2.
    pub fn new(pool: &PoolSv2) -> Self {
        Self::with_upstream(pool.listen_addr(), pool.authority_public_key())
    }

    /// In front of any SV2 upstream.
    pub fn with_upstream(upstream: SocketAddr, authority_pubkey: impl Into<String>) -> Self {
        TranslatorSv2Config {
            upstream,
            authority_pubkey: authority_pubkey.into(),
            user_identity: "jd-proxy-test".into(),
            min_individual_miner_hashrate: 20_000.0,
            shares_per_minute: 20.0,
            enable_vardiff: true,
            job_keepalive_interval_secs: 60,
            aggregate_channels: true,
            downstream_extranonce2_size: 4,
        }
    }

    /// Difficulty for CPU miners of `hashrate` H/s finding `shares_per_minute` shares.
    pub fn with_miner_hashrate(mut self, hashrate: f64, shares_per_minute: f32) -> Self {
        self.min_individual_miner_hashrate = hashrate;
        self.shares_per_minute = shares_per_minute;
        self
    }

    pub fn with_aggregate_channels(mut self, aggregate: bool) -> Self {
        self.aggregate_channels = aggregate;
        self
    }

    /// The TOML file `translator_sv2 -c` reads.
    pub fn to_toml(&self, sv1_listen: SocketAddr) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# written by integration-tests/src/sv2_peers/translator.rs"
        );
        let _ = writeln!(
            t,
            "downstream_address = {}",
            toml_str(&sv1_listen.ip().to_string())
        );
        let _ = writeln!(t, "downstream_port = {}", sv1_listen.port());
        let _ = writeln!(t, "max_supported_version = 2");
        let _ = writeln!(t, "min_supported_version = 2");
        let _ = writeln!(
            t,
            "downstream_extranonce2_size = {}",
            self.downstream_extranonce2_size
        );
        let _ = writeln!(t, "verify_payout = false");
        let _ = writeln!(t, "aggregate_channels = {}", self.aggregate_channels);
        let _ = writeln!(t, "supported_extensions = []");
        let _ = writeln!(t, "required_extensions = []");
        // No monitoring_address and no [miner_telemetry]: nothing to scan, no fixed ports.
        t.push('\n');
        let _ = writeln!(t, "[downstream_difficulty_config]");
        let _ = writeln!(
            t,
            "min_individual_miner_hashrate = {}",
            toml_float(self.min_individual_miner_hashrate)
        );
        let _ = writeln!(
            t,
            "shares_per_minute = {}",
            toml_float(f64::from(self.shares_per_minute))
        );
        let _ = writeln!(t, "enable_vardiff = {}", self.enable_vardiff);
        let _ = writeln!(
            t,
            "job_keepalive_interval_secs = {}",
            self.job_keepalive_interval_secs
        );
        t.push('\n');
        let _ = writeln!(t, "[[upstreams]]");
        let _ = writeln!(t, "address = {}", toml_str(&self.upstream.ip().to_string()));
        let _ = writeln!(t, "port = {}", self.upstream.port());
        let _ = writeln!(t, "authority_pubkey = {}", toml_str(&self.authority_pubkey));
        let _ = writeln!(t, "user_identity = {}", toml_str(&self.user_identity));
        t
    }
}

/// What a running translator was started with: its config and its SV1 port.
#[derive(Debug)]
pub struct Translator {
    config: TranslatorSv2Config,
    sv1: SocketAddr,
}

/// A running `translator_sv2`. Dropping it kills the process.
pub type TranslatorSv2 = Sv2Peer<Translator>;

impl std::fmt::Debug for TranslatorSv2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslatorSv2")
            .field("pid", &self.pid())
            .field("sv1", &self.kind.sv1)
            .field("upstream", &self.kind.config.upstream)
            .field("dir", &self.dir())
            .finish()
    }
}

impl TranslatorSv2 {
    /// Writes the config, starts `translator_sv2` with its SV1 listener on a free loopback port,
    /// and waits (bounded) until that port is listening. The translator opens its SV1
    /// listener only after the upstream connection (Noise handshake, `SetupConnection`) succeeded,
    /// so a ready translator is connected to its pool.
    pub async fn start(config: TranslatorSv2Config) -> anyhow::Result<Self> {
        config
            .authority_pubkey
            .parse::<AuthorityPublicKey>()
            .context("translator authority_pubkey")?;
        let bin = sv2_binary(TRANSLATOR_BIN)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sv1 = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
            let peer = Peer::spawn("translator_sv2", &bin, &config.to_toml(sv1))?;
            let tproxy = Sv2Peer {
                peer,
                kind: Translator {
                    config: config.clone(),
                    sv1,
                },
            };
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            match tproxy
                .peer
                .wait_port(sv1, "the SV1 listener", deadline)
                .await
            {
                Ok(()) => {
                    tracing::info!(sv1 = %sv1, upstream = %config.upstream, dir = %tproxy.dir().display(), "translator_sv2 ready");
                    return Ok(tproxy);
                }
                Err(e) if attempt < START_ATTEMPTS && tproxy.peer.port_clash() => {
                    tracing::warn!(attempt, "translator_sv2 hit a port clash, retrying: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Where SV1 miners connect.
    pub fn sv1_addr(&self) -> SocketAddr {
        self.kind.sv1
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &TranslatorSv2Config {
        &self.kind.config
    }
}
