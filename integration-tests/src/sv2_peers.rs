//! The Stratum V2 Reference Implementation's pool and translator as real peers: `pool_sv2` 0.7.0
//! (with its embedded Job Declaration Server) and `translator_sv2` 0.6.0, built by
//! `scripts/sv2-peers.sh` and run as child processes.
//!
//! Each [`PoolSv2`] / [`TranslatorSv2`] owns a fresh temporary directory holding its TOML config and
//! its log (stdout and stderr of the child). Dropping the handle kills the process and waits for it;
//! set `JD_KEEP_TEST_DIRS=1` to keep the directory (its path is printed to stderr). Every error
//! from start-up carries the tail of the log.
//!
//! Binaries are looked up, in order, in `$JD_SV2_BIN_DIR`, then in
//! `$JD_CACHE_DIR/sv2-peers-pool_sv2-0.7.0-translator_sv2-0.6.0/bin` (default cache
//! `~/.cache/jd-proxy`).
//!
//! ```no_run
//! # async fn demo(node: &integration_tests::node::BitcoinNode, payout: &bitcoin::Address) -> anyhow::Result<()> {
//! use integration_tests::sv2_peers::{PoolSv2, PoolSv2Config, TemplateSource, TranslatorSv2, TranslatorSv2Config};
//! let pool = PoolSv2::start(PoolSv2Config::new(TemplateSource::ipc(node), payout)).await?;
//! let tproxy = TranslatorSv2::start(TranslatorSv2Config::new(&pool)).await?;
//! println!("SV1 miners connect to {}", tproxy.sv1_addr());
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use bitcoin::secp256k1::{self, Secp256k1, SecretKey, XOnlyPublicKey};
use bitcoin::{Address, ScriptBuf};

use crate::node::{free_local_port, BitcoinNode, CACHE_DIR_ENV, KEEP_DIRS_ENV};

/// crates.io version of `pool_sv2` that `scripts/sv2-peers.sh` builds.
pub const POOL_SV2_VERSION: &str = "0.7.0";
/// crates.io version of `translator_sv2` that `scripts/sv2-peers.sh` builds.
pub const TRANSLATOR_SV2_VERSION: &str = "0.6.0";
/// Overrides where `pool_sv2` and `translator_sv2` are taken from.
pub const SV2_BIN_DIR_ENV: &str = "JD_SV2_BIN_DIR";
/// `RUST_LOG` for the children (default `info`; they accept a bare level only).
pub const SV2_LOG_ENV: &str = "JD_SV2_LOG";
/// File name of the pool binary.
pub const POOL_BIN: &str = "pool_sv2";
/// File name of the translator binary.
pub const TRANSLATOR_BIN: &str = "translator_sv2";

/// Bitcoin Core IPC schema major version the pool is told to speak (`30` or `31`). Our node is
/// built from Bitcoin Core 31.99 (master), whose `mining.capnp` only adds methods to v31's.
pub const DEFAULT_IPC_VERSION: u8 = 31;

/// The pool logs this once it has a template and a previous hash; only then does it accept
/// (its port is bound, and connections queue, before that).
pub const POOL_READY_LOG: &str = "ready to accept connections";
/// The pool logs this (with the block hash after it) for every share that is a block.
pub const POOL_BLOCK_FOUND_LOG: &str = "Block Found!!!";

/// How long a start waits for the child's ports and readiness line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(45);
/// Start attempts when a freshly chosen port turns out to be taken.
const START_ATTEMPTS: usize = 3;
/// How much log an error message carries.
const ERROR_LOG_TAIL: u64 = 6 * 1024;

fn cache_dir_name() -> String {
    format!("sv2-peers-pool_sv2-{POOL_SV2_VERSION}-translator_sv2-{TRANSLATOR_SV2_VERSION}")
}

fn cache_bin_dir() -> Option<PathBuf> {
    let root = match std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?)
            .join(".cache/jd-proxy"),
    };
    Some(root.join(cache_dir_name()).join("bin"))
}

/// The directory holding `pool_sv2` and `translator_sv2`.
///
/// Order: `$JD_SV2_BIN_DIR`, then `$JD_CACHE_DIR/sv2-peers-pool_sv2-0.7.0-translator_sv2-0.6.0/bin`
/// (default cache `~/.cache/jd-proxy`). Fails with instructions when neither has them.
pub fn sv2_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(SV2_BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!(
                "{SV2_BIN_DIR_ENV}={} is not a directory; unset it to use the binaries built by \
                 `scripts/sv2-peers.sh`",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let cached = cache_bin_dir();
    match &cached {
        Some(dir) if dir.join(POOL_BIN).is_file() && dir.join(TRANSLATOR_BIN).is_file() => {
            Ok(dir.clone())
        }
        _ => bail!(
            "Stratum V2 reference binaries ({POOL_BIN} {POOL_SV2_VERSION}, {TRANSLATOR_BIN} \
             {TRANSLATOR_SV2_VERSION}) not found (looked in ${SV2_BIN_DIR_ENV}, unset, and {}). \
             Run `scripts/sv2-peers.sh` from the repository root to build them (once; 10 to 45 minutes \
             on 2 cores), \
             or point {SV2_BIN_DIR_ENV} at a directory holding {POOL_BIN} and {TRANSLATOR_BIN}.",
            cached
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<no $HOME>".into()),
        ),
    }
}

/// Full path of one of the binaries (`pool_sv2` or `translator_sv2`), checked to exist.
pub fn sv2_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = sv2_bin_dir()?;
    let bin = dir.join(name);
    if !bin.is_file() {
        bail!(
            "{name} not found in {} (from {}). Run `scripts/sv2-peers.sh` to build it.",
            dir.display(),
            if std::env::var_os(SV2_BIN_DIR_ENV).is_some_and(|d| !d.is_empty()) {
                SV2_BIN_DIR_ENV
            } else {
                "the cache"
            },
        );
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// A pool's authority key pair in the Stratum V2 reference implementation's text forms.
///
/// - secret key: base58check of the 32 raw secret bytes;
/// - public key: base58check of `[0x01, 0x00]` (key version 1, little-endian u16) followed by the
///   32-byte BIP340 x-only public key.
///
/// Clients pin the public key (the translator's `authority_pubkey`, the pool's
/// `[template_provider_type.Sv2Tp] public_key`).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityKeys {
    secret: SecretKey,
    public: XOnlyPublicKey,
}

impl std::fmt::Debug for AuthorityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityKeys")
            .field("public", &self.public_key_b58())
            .finish_non_exhaustive()
    }
}

impl AuthorityKeys {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        let secp = Secp256k1::new();
        let (secret, _) = secp.generate_keypair(&mut secp256k1::rand::thread_rng());
        Self::from_secret_key(secret)
    }

    /// The pair for a given secret key.
    pub fn from_secret_key(secret: SecretKey) -> Self {
        let secp = Secp256k1::signing_only();
        let (public, _parity) = secret.public_key(&secp).x_only_public_key();
        AuthorityKeys { secret, public }
    }

    /// Parses the base58check secret key form (as in `authority_secret_key`).
    pub fn from_secret_key_b58(s: &str) -> anyhow::Result<Self> {
        let bytes = bitcoin::base58::decode_check(s)
            .map_err(|e| anyhow!("authority secret key {s:?} is not base58check: {e}"))?;
        let secret = SecretKey::from_slice(&bytes)
            .map_err(|e| anyhow!("authority secret key {s:?}: {e}"))?;
        Ok(Self::from_secret_key(secret))
    }

    /// The secret key.
    pub fn secret_key(&self) -> SecretKey {
        self.secret
    }

    /// The x-only public key.
    pub fn x_only_public_key(&self) -> XOnlyPublicKey {
        self.public
    }

    /// `authority_secret_key` form: base58check of the 32 secret bytes.
    pub fn secret_key_b58(&self) -> String {
        bitcoin::base58::encode_check(&self.secret.secret_bytes())
    }

    /// `authority_public_key` / `authority_pubkey` form: base58check of `01 00 || x-only key`.
    pub fn public_key_b58(&self) -> String {
        encode_public_key(&self.public)
    }
}

/// The reference implementation's text form of an x-only public key: base58check of
/// `[0x01, 0x00] || x-only key` (version 1 as a little-endian u16, then 32 bytes).
pub fn encode_public_key(key: &XOnlyPublicKey) -> String {
    let mut raw = [0u8; 34];
    raw[0] = 1;
    raw[2..].copy_from_slice(&key.serialize());
    bitcoin::base58::encode_check(&raw)
}

/// Parses [`encode_public_key`]'s form.
pub fn decode_public_key(s: &str) -> anyhow::Result<XOnlyPublicKey> {
    let raw = bitcoin::base58::decode_check(s)
        .map_err(|e| anyhow!("public key {s:?} is not base58check: {e}"))?;
    ensure!(
        raw.len() == 34,
        "public key {s:?}: {} bytes, want 34",
        raw.len()
    );
    let version = u16::from_le_bytes([raw[0], raw[1]]);
    ensure!(
        version == 1,
        "public key {s:?}: key version {version}, want 1"
    );
    XOnlyPublicKey::from_slice(&raw[2..]).map_err(|e| anyhow!("public key {s:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// One child process with its temp dir and log file.
struct Peer {
    name: &'static str,
    child: Mutex<Option<Child>>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    log: PathBuf,
}

impl Peer {
    fn spawn(name: &'static str, bin: &Path, config_toml: &str) -> anyhow::Result<Peer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("jd-{name}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let path = dir.path().to_path_buf();
        let config = path.join("config.toml");
        std::fs::write(&config, config_toml)
            .with_context(|| format!("writing {}", config.display()))?;
        let log = path.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning the log file handle")?;

        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&config)
            .current_dir(&path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var(SV2_LOG_ENV)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "info".into()),
            );
        // Both binaries let `POOL__…` / `TPROXY__…` variables override the file: keep the config
        // we wrote authoritative.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy().to_uppercase();
            if k.starts_with("POOL__") || k.starts_with("TPROXY__") {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        tracing::debug!(pid = child.id(), dir = %path.display(), "started {name}");
        Ok(Peer {
            name,
            child: Mutex::new(Some(child)),
            dir: Some(dir),
            path,
            log,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Child::id)
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child.as_mut()?.try_wait().ok().flatten()
    }

    fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self, max_bytes: u64) -> String {
        tail_file(&self.log, max_bytes)
    }

    /// Whether the child died of a port already taken.
    fn port_clash(&self) -> bool {
        let log = self.log_text();
        self.exit_status().is_some()
            && (log.contains("Address already in use")
                || log.contains("AddrInUse")
                || log.contains("os error 98"))
    }

    fn failure(&self, what: String) -> anyhow::Error {
        anyhow!(
            "{}: {what}; dir {}\n--- tail of {} ---\n{}",
            self.name,
            self.path.display(),
            self.log.display(),
            self.log_tail(ERROR_LOG_TAIL).trim_end()
        )
    }

    fn check_alive(&self, waiting_for: &str) -> anyhow::Result<()> {
        match self.exit_status() {
            Some(status) => Err(self.failure(format!("exited ({status}) while {waiting_for}"))),
            None => Ok(()),
        }
    }

    /// Polls until something listens on `addr` (bounded).
    ///
    /// On Linux this reads the socket tables (`/proc/net/tcp`, `/proc/net/tcp6`) instead of
    /// connecting, so the peer never sees a probe: a connect-and-close makes the pool log
    /// `Noise handshake failed error=SocketClosed` and the translator register and drop a phantom
    /// SV1 miner. Elsewhere it falls back to a TCP connect.
    async fn wait_port(
        &self,
        addr: SocketAddr,
        what: &str,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            self.check_alive(&format!("waiting for {what} on {addr}"))?;
            let last = match is_listening(addr) {
                Some(true) => return Ok(()),
                Some(false) => "not listening yet".to_string(),
                None => match tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                {
                    Ok(Ok(_stream)) => return Ok(()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connect timed out".to_string(),
                },
            };
            if Instant::now() >= deadline {
                return Err(self.failure(format!(
                    "{what} on {addr} not listening within {STARTUP_TIMEOUT:?} (last: {last})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the log until it contains `needle` (bounded).
    async fn wait_log(&self, needle: &str, deadline: Instant) -> anyhow::Result<()> {
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            self.check_alive(&format!("waiting for {needle:?} in its log"))?;
            if Instant::now() >= deadline {
                return Err(self.failure(format!("no {needle:?} in its log in time")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self
            .child
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1") {
                let path = dir.keep();
                eprintln!(
                    "{KEEP_DIRS_ENV}=1: kept {} dir {}",
                    self.name,
                    path.display()
                );
            }
        }
    }
}

/// Whether a TCP socket is in LISTEN state on `addr` (or on the wildcard address, same port),
/// from the kernel's socket tables. `None` when the tables cannot be read (not Linux).
fn is_listening(addr: SocketAddr) -> Option<bool> {
    const TCP_LISTEN: &str = "0A";
    let port = format!("{:04X}", addr.port());
    // The kernel prints each address as its in-memory 32-bit words in hex (host byte order).
    let hex_words = |bytes: &[u8]| -> String {
        bytes
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    };
    let (table, wanted, any) = match addr {
        SocketAddr::V4(a) => (
            "/proc/net/tcp",
            hex_words(&a.ip().octets()),
            hex_words(&[0; 4]),
        ),
        SocketAddr::V6(a) => (
            "/proc/net/tcp6",
            hex_words(&a.ip().octets()),
            hex_words(&[0; 16]),
        ),
    };
    let text = std::fs::read_to_string(table).ok()?;
    Some(text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let Some((ip, p)) = local.rsplit_once(':') else {
            return false;
        };
        state == TCP_LISTEN && p == port && (ip == wanted || ip == any)
    }))
}

fn tail_file(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        match text.split_once('\n') {
            Some((_, rest)) => rest.to_string(),
            None => text,
        }
    } else {
        text
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML float (always with a decimal point or exponent).
fn toml_float(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) || !x.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

fn distinct_free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let p = free_local_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

// ---------------------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------------------

/// Where the pool takes its block templates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// Bitcoin Core's IPC mining interface: `[template_provider_type.BitcoinCoreIpc]` with
    /// `network = "regtest"` and `data_dir` (the pool opens `<data_dir>/regtest/node.sock`).
    /// The embedded JDS needs this source.
    BitcoinCoreIpc {
        /// The node's `-datadir` (not the `regtest/` subdirectory).
        data_dir: PathBuf,
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
        /// The TP's authority public key in [`encode_public_key`] form; `None` skips the check.
        public_key: Option<String>,
    },
}

impl TemplateSource {
    /// Bitcoin Core IPC on `node` (a [`crate::node::NodeKind::BitcoinNodeIpc`] node), schema
    /// [`DEFAULT_IPC_VERSION`], `fee_threshold = 100`, `min_interval = 1`.
    pub fn ipc(node: &BitcoinNode) -> Self {
        TemplateSource::BitcoinCoreIpc {
            data_dir: node.datadir().to_path_buf(),
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
    pub authority: AuthorityKeys,
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
            authority: AuthorityKeys::generate(),
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

    pub fn with_authority(mut self, authority: AuthorityKeys) -> Self {
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
        let _ = writeln!(t, "# written by integration-tests/src/sv2_peers.rs");
        let _ = writeln!(t, "listen_address = {}", toml_str(&listen.to_string()));
        let _ = writeln!(
            t,
            "authority_public_key = {}",
            toml_str(&self.authority.public_key_b58())
        );
        let _ = writeln!(
            t,
            "authority_secret_key = {}",
            toml_str(&self.authority.secret_key_b58())
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
        match &self.template_source {
            TemplateSource::BitcoinCoreIpc {
                data_dir,
                version,
                fee_threshold,
                min_interval,
            } => {
                let _ = writeln!(t, "[template_provider_type.BitcoinCoreIpc]");
                let _ = writeln!(t, "version = {version}");
                let _ = writeln!(t, "network = \"regtest\"");
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
        if let Some(jds) = jds_listen {
            t.push('\n');
            let _ = writeln!(t, "[jds]");
            let _ = writeln!(t, "listen_address = {}", toml_str(&jds.to_string()));
        }
        t
    }
}

/// A running `pool_sv2`. Dropping it kills the process.
pub struct PoolSv2 {
    peer: Peer,
    config: PoolSv2Config,
    listen: SocketAddr,
    jds: Option<SocketAddr>,
}

impl std::fmt::Debug for PoolSv2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSv2")
            .field("pid", &self.peer.pid())
            .field("listen", &self.listen)
            .field("jds", &self.jds)
            .field("dir", &self.peer.path)
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
        let bin = sv2_binary(POOL_BIN)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = distinct_free_ports(2)?;
            let listen = SocketAddr::from(([127, 0, 0, 1], ports[0]));
            let jds = config
                .jds
                .then(|| SocketAddr::from(([127, 0, 0, 1], ports[1])));
            let peer = Peer::spawn("pool_sv2", &bin, &config.to_toml(listen, jds))?;
            let pool = PoolSv2 {
                peer,
                config: config.clone(),
                listen,
                jds,
            };
            match pool.wait_ready().await {
                Ok(()) => {
                    tracing::info!(listen = %listen, jds = ?jds, dir = %pool.peer.path.display(), "pool_sv2 ready");
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
        let bin = sv2_binary(POOL_BIN)?;
        let peer = Peer::spawn("pool_sv2", &bin, &config.to_toml(listen, jds))?;
        let pool = PoolSv2 {
            peer,
            config,
            listen,
            jds,
        };
        pool.wait_ready().await?;
        Ok(pool)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        if let Some(jds) = self.jds {
            self.peer
                .wait_port(jds, "the JDS listener", deadline)
                .await?;
        }
        self.peer
            .wait_port(self.listen, "the mining listener", deadline)
            .await?;
        self.peer.wait_log(POOL_READY_LOG, deadline).await
    }

    /// Where SV2 mining clients connect (`listen_address`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where job declaration clients connect (`[jds] listen_address`); `None` without JDS.
    pub fn jds_addr(&self) -> Option<SocketAddr> {
        self.jds
    }

    /// The authority public key clients pin, in the base58check form of the configs.
    pub fn authority_public_key(&self) -> String {
        self.config.authority.public_key_b58()
    }

    /// The authority key pair.
    pub fn authority(&self) -> &AuthorityKeys {
        &self.config.authority
    }

    /// The output script every coinbase of this pool pays.
    pub fn coinbase_script(&self) -> &ScriptBuf {
        &self.config.coinbase_script
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &PoolSv2Config {
        &self.config
    }

    /// OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.peer.pid()
    }

    /// The temp dir with `config.toml` and `pool_sv2.log`.
    pub fn dir(&self) -> &Path {
        &self.peer.path
    }

    /// The log file (child stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.peer.log
    }

    /// The last 8 KiB of the log.
    pub fn log_tail(&self) -> String {
        self.peer.log_tail(8 * 1024)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.peer.log_text()
    }

    /// How many times `needle` occurs in the log so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.peer.log_text().matches(needle).count()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.peer.wait_log(needle, Instant::now() + timeout).await
    }

    /// The exit status if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.peer.exit_status()
    }

    /// An error unless the process is still running (with the log tail).
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        self.peer.check_alive("running")
    }
}

// ---------------------------------------------------------------------------------------------
// Translator
// ---------------------------------------------------------------------------------------------

/// Everything [`TranslatorSv2::start`] writes into the translator's config. The SV1 port is
/// chosen at start.
#[derive(Clone, Debug)]
pub struct TranslatorSv2Config {
    /// The SV2 pool's mining listener.
    pub upstream: SocketAddr,
    /// The pool's authority public key ([`encode_public_key`] form).
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
        let _ = writeln!(t, "# written by integration-tests/src/sv2_peers.rs");
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

/// A running `translator_sv2`. Dropping it kills the process.
pub struct TranslatorSv2 {
    peer: Peer,
    config: TranslatorSv2Config,
    sv1: SocketAddr,
}

impl std::fmt::Debug for TranslatorSv2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslatorSv2")
            .field("pid", &self.peer.pid())
            .field("sv1", &self.sv1)
            .field("upstream", &self.config.upstream)
            .field("dir", &self.peer.path)
            .finish()
    }
}

impl TranslatorSv2 {
    /// Writes the config, starts `translator_sv2` with its SV1 listener on a free loopback port,
    /// and waits (bounded) until that port is listening. The translator opens its SV1
    /// listener only after the upstream connection (Noise handshake, `SetupConnection`) succeeded,
    /// so a ready translator is connected to its pool.
    pub async fn start(config: TranslatorSv2Config) -> anyhow::Result<Self> {
        decode_public_key(&config.authority_pubkey).context("translator authority_pubkey")?;
        let bin = sv2_binary(TRANSLATOR_BIN)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sv1 = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
            let peer = Peer::spawn("translator_sv2", &bin, &config.to_toml(sv1))?;
            let tproxy = TranslatorSv2 {
                peer,
                config: config.clone(),
                sv1,
            };
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            match tproxy
                .peer
                .wait_port(sv1, "the SV1 listener", deadline)
                .await
            {
                Ok(()) => {
                    tracing::info!(sv1 = %sv1, upstream = %config.upstream, dir = %tproxy.peer.path.display(), "translator_sv2 ready");
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
        self.sv1
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &TranslatorSv2Config {
        &self.config
    }

    /// OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.peer.pid()
    }

    /// The temp dir with `config.toml` and `translator_sv2.log`.
    pub fn dir(&self) -> &Path {
        &self.peer.path
    }

    /// The log file (child stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.peer.log
    }

    /// The last 8 KiB of the log.
    pub fn log_tail(&self) -> String {
        self.peer.log_tail(8 * 1024)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.peer.log_text()
    }

    /// How many times `needle` occurs in the log so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.peer.log_text().matches(needle).count()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.peer.wait_log(needle, Instant::now() + timeout).await
    }

    /// The exit status if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.peer.exit_status()
    }

    /// An error unless the process is still running (with the log tail).
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        self.peer.check_alive("running")
    }
}

impl FromStr for AuthorityKeys {
    type Err = anyhow::Error;

    /// Parses the secret key form.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::from_secret_key_b58(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key pairs from the reference implementation's own config examples and key-utils tests.
    #[test]
    fn key_forms_match_the_reference_implementation() {
        for (secret, public) in [
            (
                "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n",
                "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72",
            ),
            (
                "zmBEmPhqo3A92FkiLVvyCz6htc3e53ph3ZbD4ASqGaLjwnFLi",
                "9bDuixKmZqAJnrmP746n8zU1wyAQRrus7th9dxnkPg6RzQvCnan",
            ),
        ] {
            let keys = AuthorityKeys::from_secret_key_b58(secret).unwrap();
            assert_eq!(keys.secret_key_b58(), secret);
            assert_eq!(keys.public_key_b58(), public);
            assert_eq!(decode_public_key(public).unwrap(), keys.x_only_public_key());
        }
        let fresh = AuthorityKeys::generate();
        assert_eq!(
            decode_public_key(&fresh.public_key_b58()).unwrap(),
            fresh.x_only_public_key()
        );
        // Wrong version (12) and a missing byte are refused, like key-utils does.
        assert!(decode_public_key("2myPhc5vkPzuC5FXNK5tee79WmP7uoLh55SxezoF8iqwF3E3rnPY").is_err());
        assert!(decode_public_key("2wmHTKZkLg2QzXyEXGMBXzKP7JXDUt8yy9SA5hoQwERc92qR6c").is_err());
    }

    #[test]
    fn listening_sockets_are_seen_without_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        if let Some(seen) = is_listening(addr) {
            assert!(seen, "{addr} is listening");
            drop(listener);
            assert_eq!(is_listening(addr), Some(false), "{addr} closed");
        }
    }

    #[test]
    fn toml_scalars() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_float(20_000.0), "20000.0");
        assert_eq!(toml_float(0.5), "0.5");
        assert_eq!(toml_float(1e20), "1e20");
    }

    #[test]
    fn pool_toml_has_every_required_key() {
        let payout = crate::wallet::TestWallet::new();
        let cfg = PoolSv2Config::new(
            TemplateSource::BitcoinCoreIpc {
                data_dir: "/tmp/x".into(),
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
