//! `pool_sv2`: its config, and the running pool.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::ensure;
use bitcoin::{Address, ScriptBuf};
use sv2_wire::AuthorityKeypair;

use super::process::{distinct_free_ports, Peer, Sv2Peer};
use super::toml::{toml_float, toml_str};
use super::{
    sv2_binary, DEFAULT_IPC_VERSION, POOL_BIN, POOL_READY_LOG, STARTUP_TIMEOUT, START_ATTEMPTS,
};
use crate::node::BitcoinNode;

/// Where the pool takes its block templates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// Bitcoin Core's IPC mining interface: `[template_provider_type.BitcoinCoreIpc]` with
    /// `network` and `data_dir` (the pool opens `<data_dir>/<network>/node.sock`).
    /// The embedded JDS needs this source.
    BitcoinCoreIpc {
        /// The node's `-datadir` (not the `regtest/` subdirectory).
        data_dir: PathBuf,
        /// `regtest`, or `signet` for a custom signet node.
        network: &'static str,
        /// IPC schema major version, `30` or `31`.
        version: u8,
        /// Fee increase (sat) that makes the node send a new template.
        fee_threshold: u64,
        /// Minimum seconds between two non-tip templates.
        min_interval: u8,
    },
    /// A Stratum V2 Template Provider: `[template_provider_type.Sv2Tp] address, public_key`.
    /// The embedded JDS is not available with it.
    Sv2Tp {
        /// `ip:port` or `host:port`.
        address: String,
        /// The TP's authority public key in base58check form (as
        /// [`sv2_wire::AuthorityPublicKey`] prints it); `None` skips the check.
        public_key: Option<String>,
    },
}

impl TemplateSource {
    /// Bitcoin Core IPC on `node` (a [`crate::node::NodeKind::BitcoinNodeIpc`] node), schema
    /// [`DEFAULT_IPC_VERSION`], `fee_threshold = 100`, `min_interval = 1`.
    pub fn ipc(node: &BitcoinNode) -> Self {
        TemplateSource::BitcoinCoreIpc {
            data_dir: node.datadir().to_path_buf(),
            network: node.chain().name(),
            version: DEFAULT_IPC_VERSION,
            fee_threshold: 100,
            min_interval: 1,
        }
    }

    /// An SV2 Template Provider at `address`, optionally pinned to its authority `public_key`.
    pub fn sv2_tp(address: impl Into<String>, public_key: Option<String>) -> Self {
        TemplateSource::Sv2Tp {
            address: address.into(),
            public_key,
        }
    }

    fn is_ipc(&self) -> bool {
        matches!(self, TemplateSource::BitcoinCoreIpc { .. })
    }

    /// The `[template_provider_type.…]` section.
    fn write_toml(&self, t: &mut String) {
        match self {
            TemplateSource::BitcoinCoreIpc {
                data_dir,
                network,
                version,
                fee_threshold,
                min_interval,
            } => {
                let _ = writeln!(t, "[template_provider_type.BitcoinCoreIpc]");
                let _ = writeln!(t, "version = {version}");
                let _ = writeln!(t, "network = {}", toml_str(network));
                let _ = writeln!(
                    t,
                    "data_dir = {}",
                    toml_str(&data_dir.display().to_string())
                );
                let _ = writeln!(t, "fee_threshold = {fee_threshold}");
                let _ = writeln!(t, "min_interval = {min_interval}");
            }
            TemplateSource::Sv2Tp {
                address,
                public_key,
            } => {
                let _ = writeln!(t, "[template_provider_type.Sv2Tp]");
                let _ = writeln!(t, "address = {}", toml_str(address));
                if let Some(key) = public_key {
                    let _ = writeln!(t, "public_key = {}", toml_str(key));
                }
            }
        }
    }
}

/// Everything [`PoolSv2::start`] writes into the pool's config. Ports are chosen at start.
#[derive(Clone, Debug)]
pub struct PoolSv2Config {
    pub template_source: TemplateSource,
    /// The pool's reward output (the coinbase pays the whole reward here).
    pub coinbase_script: ScriptBuf,
    /// The `coinbase_reward_script` descriptor text (`addr(…)` or `raw(…)`) for `coinbase_script`.
    pub coinbase_descriptor: String,
    /// `pool_signature`, the pool tag in the coinbase.
    pub pool_signature: String,
    /// `shares_per_minute`: the pool's vardiff goal per channel.
    pub shares_per_minute: f32,
    /// `share_batch_size`: how many shares one `SubmitShares.Success` acknowledges.
    pub share_batch_size: usize,
    /// Whether to run the embedded Job Declaration Server (`[jds]`); needs Bitcoin Core IPC.
    pub jds: bool,
    pub authority: AuthorityKeypair,
    /// `cert_validity_sec` of the Noise certificates the pool signs.
    pub cert_validity_sec: u64,
}

impl PoolSv2Config {
    /// Defaults for CPU miners on regtest: paying `payout` (`addr(…)` descriptor), JDS on when the
    /// source is IPC, a fresh authority key, 60 shares a minute, every share acknowledged.
    pub fn new(template_source: TemplateSource, payout: &Address) -> Self {
        let jds = template_source.is_ipc();
        PoolSv2Config {
            template_source,
            coinbase_script: payout.script_pubkey(),
            coinbase_descriptor: format!("addr({payout})"),
            pool_signature: "jd-proxy-test-pool".into(),
            shares_per_minute: 60.0,
            share_batch_size: 1,
            jds,
            authority: AuthorityKeypair::generate(),
            cert_validity_sec: 3600,
        }
    }

    /// Pays an arbitrary script instead (as a `raw(<hex>)` descriptor).
    pub fn with_coinbase_script(mut self, script: ScriptBuf) -> Self {
        self.coinbase_descriptor = format!("raw({})", script.to_hex_string());
        self.coinbase_script = script;
        self
    }

    pub fn with_jds(mut self, jds: bool) -> Self {
        self.jds = jds;
        self
    }

    pub fn with_authority(mut self, authority: AuthorityKeypair) -> Self {
        self.authority = authority;
        self
    }

    pub fn with_shares_per_minute(mut self, spm: f32) -> Self {
        self.shares_per_minute = spm;
        self
    }

    /// The TOML file `pool_sv2 -c` reads.
    pub fn to_toml(&self, listen: SocketAddr, jds_listen: Option<SocketAddr>) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "# written by integration-tests/src/sv2_peers/pool.rs");
        let _ = writeln!(t, "listen_address = {}", toml_str(&listen.to_string()));
        let _ = writeln!(
            t,
            "authority_public_key = {}",
            toml_str(&self.authority.public().to_string())
        );
        let _ = writeln!(
            t,
            "authority_secret_key = {}",
            toml_str(&self.authority.secret_string())
        );
        let _ = writeln!(t, "cert_validity_sec = {}", self.cert_validity_sec);
        let _ = writeln!(
            t,
            "coinbase_reward_script = {}",
            toml_str(&self.coinbase_descriptor)
        );
        let _ = writeln!(t, "server_id = 1");
        let _ = writeln!(t, "pool_signature = {}", toml_str(&self.pool_signature));
        let _ = writeln!(
            t,
            "shares_per_minute = {}",
            toml_float(f64::from(self.shares_per_minute))
        );
        let _ = writeln!(t, "share_batch_size = {}", self.share_batch_size);
        let _ = writeln!(t, "supported_extensions = []");
        let _ = writeln!(t, "required_extensions = []");
        // No monitoring_address: the examples' fixed 127.0.0.1:9090 would clash between tests.
        t.push('\n');
        self.template_source.write_toml(&mut t);
        if let Some(jds) = jds_listen {
            t.push('\n');
            let _ = writeln!(t, "[jds]");
            let _ = writeln!(t, "listen_address = {}", toml_str(&jds.to_string()));
        }
        t
    }
}

/// What a running pool was started with: its config and its ports.
#[derive(Debug)]
pub struct Pool {
    config: PoolSv2Config,
    listen: SocketAddr,
    jds: Option<SocketAddr>,
}

/// A running `pool_sv2`. Dropping it kills the process.
pub type PoolSv2 = Sv2Peer<Pool>;

impl std::fmt::Debug for PoolSv2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSv2")
            .field("pid", &self.pid())
            .field("listen", &self.kind.listen)
            .field("jds", &self.kind.jds)
            .field("dir", &self.dir())
            .finish()
    }
}

impl PoolSv2 {
    /// Writes the config, starts `pool_sv2` on free loopback ports and waits (bounded) until the
    /// mining port (and the JDS port, if enabled) are listening and the pool has logged
    /// [`POOL_READY_LOG`] (it has a template and a previous hash).
    pub async fn start(config: PoolSv2Config) -> anyhow::Result<Self> {
        ensure!(
            !config.jds || config.template_source.is_ipc(),
            "the pool's embedded JDS needs the Bitcoin Core IPC template source, not an SV2 TP"
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = distinct_free_ports(2)?;
            let listen = SocketAddr::from(([127, 0, 0, 1], ports[0]));
            let jds = config
                .jds
                .then(|| SocketAddr::from(([127, 0, 0, 1], ports[1])));
            let pool = Self::spawn(config.clone(), listen, jds)?;
            match pool.wait_ready().await {
                Ok(()) => {
                    tracing::info!(listen = %listen, jds = ?jds, dir = %pool.dir().display(), "pool_sv2 ready");
                    return Ok(pool);
                }
                Err(e) if attempt < START_ATTEMPTS && pool.peer.port_clash() => {
                    tracing::warn!(attempt, "pool_sv2 hit a port clash, retrying: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts `pool_sv2` again on the ports an earlier one (now stopped) used, as an operator
    /// restarting a pool would: clients that remember the address find it there again.
    pub async fn start_on(
        config: PoolSv2Config,
        listen: SocketAddr,
        jds: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let pool = Self::spawn(config, listen, jds)?;
        pool.wait_ready().await?;
        Ok(pool)
    }

    fn spawn(
        config: PoolSv2Config,
        listen: SocketAddr,
        jds: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let bin = sv2_binary(POOL_BIN)?;
        let peer = Peer::spawn("pool_sv2", &bin, &config.to_toml(listen, jds))?;
        Ok(Sv2Peer {
            peer,
            kind: Pool {
                config,
                listen,
                jds,
            },
        })
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        if let Some(jds) = self.kind.jds {
            self.peer
                .wait_port(jds, "the JDS listener", deadline)
                .await?;
        }
        self.peer
            .wait_port(self.kind.listen, "the mining listener", deadline)
            .await?;
        self.peer.wait_log(POOL_READY_LOG, deadline).await
    }

    /// Where SV2 mining clients connect (`listen_address`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.kind.listen
    }

    /// Where job declaration clients connect (`[jds] listen_address`); `None` without JDS.
    pub fn jds_addr(&self) -> Option<SocketAddr> {
        self.kind.jds
    }

    /// The authority public key clients pin, in the base58check form of the configs.
    pub fn authority_public_key(&self) -> String {
        self.kind.config.authority.public().to_string()
    }

    /// The authority key pair.
    pub fn authority(&self) -> &AuthorityKeypair {
        &self.kind.config.authority
    }

    /// The output script every coinbase of this pool pays.
    pub fn coinbase_script(&self) -> &ScriptBuf {
        &self.kind.config.coinbase_script
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &PoolSv2Config {
        &self.kind.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_toml_has_every_required_key() {
        let payout = crate::wallet::TestWallet::new();
        let cfg = PoolSv2Config::new(
            TemplateSource::BitcoinCoreIpc {
                data_dir: "/tmp/x".into(),
                network: "regtest",
                version: 31,
                fee_threshold: 100,
                min_interval: 1,
            },
            payout.address(),
        );
        let t = cfg.to_toml(
            "127.0.0.1:1".parse().unwrap(),
            Some("127.0.0.1:2".parse().unwrap()),
        );
        for key in [
            "listen_address = \"127.0.0.1:1\"",
            "authority_public_key",
            "authority_secret_key",
            "cert_validity_sec",
            "coinbase_reward_script = \"addr(bcrt1",
            "pool_signature",
            "shares_per_minute = 60.0",
            "share_batch_size",
            "[template_provider_type.BitcoinCoreIpc]",
            "network = \"regtest\"",
            "data_dir = \"/tmp/x\"",
            "[jds]\nlisten_address = \"127.0.0.1:2\"",
        ] {
            assert!(t.contains(key), "{key} missing from\n{t}");
        }
        let tp = PoolSv2Config::new(
            TemplateSource::sv2_tp("127.0.0.1:8442", Some("9auq".into())),
            payout.address(),
        );
        assert!(!tp.jds);
        let t = tp.to_toml("127.0.0.1:1".parse().unwrap(), None);
        assert!(t.contains(
            "[template_provider_type.Sv2Tp]\naddress = \"127.0.0.1:8442\"\npublic_key = \"9auq\""
        ));
        assert!(!t.contains("[jds]"));
    }
}
