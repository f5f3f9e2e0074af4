//! A real Bitcoin Core node on regtest, started from the binaries built by `scripts/bitcoin-core.sh`.
//!
//! Every [`BitcoinNode`] owns a fresh temporary datadir and its child process. Dropping the node kills the
//! process and waits for it, so a failing test never leaks a `bitcoind`. Set `JD_KEEP_TEST_DIRS=1` to keep
//! the datadir (and its `regtest/debug.log`) after the node is gone; its path is printed to stderr.
//!
//! Binaries are looked up, in order, in `$JD_BITCOIN_BIN_DIR`, then in
//! `$JD_CACHE_DIR/bitcoin-core-0.4.1/bin` (default cache `~/.cache/jd-proxy`).

mod rpc;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::json;

pub use rpc::RpcError;

use crate::support::process::{
    binary_in, cache_root, dir_from_env, free_local_port, tail_file, ChildInDir,
};

/// Version of the `libbitcoinkernel-sys` crate whose Bitcoin Core source `scripts/bitcoin-core.sh` builds.
pub const BITCOIN_CORE_PKG_VERSION: &str = "0.4.1";
/// Overrides where the Bitcoin Core binaries are taken from.
pub const BIN_DIR_ENV: &str = "JD_BITCOIN_BIN_DIR";

/// The script that builds the binaries.
const SCRIPT: &str = "scripts/bitcoin-core.sh";
/// How long [`BitcoinNode::start`] waits for the RPC server to answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`BitcoinNode::stop`] waits for a graceful shutdown before killing the process.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts when a freshly chosen port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// JSON-RPC error code for "Loading block index…" and friends.
const RPC_IN_WARMUP: i64 = -28;

/// Which Bitcoin Core executable to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// Plain `bitcoind`.
    Bitcoind,
    /// `bitcoin-node` started with `-ipcbind=unix`; the Cap'n Proto socket is `<datadir>/regtest/node.sock`.
    BitcoinNodeIpc,
}

impl NodeKind {
    /// File name of the executable for this kind.
    pub fn binary_name(self) -> &'static str {
        match self {
            NodeKind::Bitcoind => "bitcoind",
            NodeKind::BitcoinNodeIpc => "bitcoin-node",
        }
    }
}

/// The directory holding `bitcoind`, `bitcoin-node` and `bitcoin-cli`.
///
/// Order: `$JD_BITCOIN_BIN_DIR`, then `$JD_CACHE_DIR/bitcoin-core-0.4.1/bin` (default cache
/// `~/.cache/jd-proxy`). Fails with instructions when neither exists.
pub fn bitcoin_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir_from_env(BIN_DIR_ENV, SCRIPT)? {
        return Ok(dir);
    }
    let cached = cache_root().map(|root| {
        root.join(format!("bitcoin-core-{BITCOIN_CORE_PKG_VERSION}"))
            .join("bin")
    });
    match &cached {
        Some(dir) if dir.join("bitcoind").is_file() => Ok(dir.clone()),
        _ => bail!(
            "Bitcoin Core binaries not found (looked in ${BIN_DIR_ENV}, unset, and {}). \
             Run `{SCRIPT}` from the repository root to build them (about 12 minutes), \
             or point {BIN_DIR_ENV} at a directory holding bitcoind, bitcoin-node and bitcoin-cli.",
            cached
                .as_deref()
                .map_or_else(|| "<no $HOME>".into(), |p| p.display().to_string()),
        ),
    }
}

/// Full path of the executable for `kind`, checked to exist.
pub fn bitcoin_binary(kind: NodeKind) -> anyhow::Result<PathBuf> {
    binary_in(&bitcoin_bin_dir()?, kind.binary_name(), BIN_DIR_ENV, SCRIPT)
}

/// Which chain a test node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chain {
    /// Regtest: blocks at the lowest difficulty there is, so every share is a block.
    Regtest,
    /// A custom signet with the challenge `OP_TRUE` (no signature needed): blocks at the signet
    /// minimum difficulty (about 0.001), so shares far below it are shares and not blocks. Its
    /// tip may be old (blocks are replayed from a cache): the node never counts as syncing.
    Signet,
}

impl Chain {
    /// The datadir subdirectory (`regtest`, `signet`), also the name the SV2 peers use.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Regtest => "regtest",
            Chain::Signet => "signet",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Chain::Regtest => &["-regtest"],
            Chain::Signet => &[
                "-signet",
                "-signetchallenge=51",
                "-maxtipage=2000000000",
                "-dnsseed=0",
                "-fixedseeds=0",
            ],
        }
    }
}

/// A running regtest node. Dropping it kills the process; prefer [`BitcoinNode::stop`] for a clean shutdown.
pub struct BitcoinNode {
    kind: NodeKind,
    chain: Chain,
    process: ChildInDir,
    rpc_port: u16,
    p2p_port: u16,
    http: reqwest::Client,
    next_id: AtomicU64,
}

impl fmt::Debug for BitcoinNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitcoinNode")
            .field("kind", &self.kind)
            .field("pid", &self.pid())
            .field("datadir", &self.datadir())
            .field("rpc_port", &self.rpc_port)
            .field("p2p_port", &self.p2p_port)
            .finish()
    }
}

/// Why a single start attempt failed.
enum StartFailure {
    /// The node exited complaining about a port in use: worth another try with new ports.
    PortClash(anyhow::Error),
    Fatal(anyhow::Error),
}

/// The command line of a node of `chain` on loopback ports, in `datadir`.
fn node_args(
    kind: NodeKind,
    chain: Chain,
    datadir: &Path,
    rpc_port: u16,
    p2p_port: u16,
) -> Vec<String> {
    let mut args: Vec<String> = chain.args().iter().map(ToString::to_string).collect();
    args.extend([
        "-daemon=0".into(),
        "-server=1".into(),
        "-listen=1".into(),
        format!("-bind=127.0.0.1:{p2p_port}"),
        "-listenonion=0".into(),
        "-rpcbind=127.0.0.1".into(),
        "-rpcallowip=127.0.0.1".into(),
        format!("-rpcport={rpc_port}"),
        format!("-datadir={}", datadir.display()),
        "-printtoconsole=0".into(),
        "-fallbackfee=0.0001".into(),
        "-txindex=0".into(),
        "-debug=0".into(),
    ]);
    if kind == NodeKind::BitcoinNodeIpc {
        args.push("-ipcbind=unix".into());
    }
    args
}

impl BitcoinNode {
    /// Starts a regtest node on free loopback ports and waits until its RPC server answers.
    pub async fn start(kind: NodeKind) -> anyhow::Result<Self> {
        Self::start_with_args(kind, &[]).await
    }

    /// Like [`BitcoinNode::start`], with extra command-line arguments appended (they win over the defaults).
    pub async fn start_with_args(kind: NodeKind, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(kind, Chain::Regtest, extra_args).await
    }

    /// A node of `kind` on `chain`, with extra command-line arguments appended.
    pub async fn start_on(
        kind: NodeKind,
        chain: Chain,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let bin = bitcoin_binary(kind)?;
        let mut last = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(kind, chain, &bin, extra_args).await {
                Ok(node) => return Ok(node),
                Err(StartFailure::PortClash(e)) => {
                    tracing::warn!(
                        attempt,
                        "bitcoin node hit a port clash, retrying with new ports: {e:#}"
                    );
                    last = Some(e);
                }
                Err(StartFailure::Fatal(e)) => return Err(e),
            }
        }
        Err(last
            .expect("at least one attempt")
            .context(format!("gave up after {START_ATTEMPTS} port clashes")))
    }

    async fn try_start(
        kind: NodeKind,
        chain: Chain,
        bin: &Path,
        extra_args: &[&str],
    ) -> Result<Self, StartFailure> {
        let fatal = StartFailure::Fatal;
        let dir = tempfile::Builder::new()
            .prefix("jd-bitcoin-")
            .tempdir()
            .context("creating a temporary datadir")
            .map_err(fatal)?;
        let datadir = dir.path().to_path_buf();
        let rpc_port = free_local_port().map_err(fatal)?;
        let mut p2p_port = free_local_port().map_err(fatal)?;
        while p2p_port == rpc_port {
            p2p_port = free_local_port().map_err(fatal)?;
        }
        let mut args = node_args(kind, chain, &datadir, rpc_port, p2p_port);
        args.extend(extra_args.iter().map(ToString::to_string));

        // Whatever the node prints before its log file is open (bad arguments, bind errors) lands here.
        let stderr = File::create(datadir.join("stderr.log"))
            .context("creating stderr.log")
            .map_err(fatal)?;
        let stdout = stderr
            .try_clone()
            .context("cloning stderr.log handle")
            .map_err(fatal)?;
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))
            .map_err(fatal)?;
        tracing::debug!(pid = child.id(), ?kind, datadir = %datadir.display(), rpc_port, p2p_port, "started bitcoin node");

        let node = BitcoinNode {
            kind,
            chain,
            process: ChildInDir::new("bitcoin node datadir", child, dir),
            rpc_port,
            p2p_port,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .context("building HTTP client")
                .map_err(fatal)?,
            next_id: AtomicU64::new(1),
        };
        node.wait_ready(STARTUP_TIMEOUT).await?;
        tracing::info!(?kind, rpc = %node.rpc_url(), p2p_port, datadir = %datadir.display(), "bitcoin node ready");
        Ok(node)
    }

    /// Polls until RPC answers (and, for IPC nodes, the socket exists), or the process dies, or time runs out.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let mut last_err: Option<anyhow::Error> = None;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.died_starting(status));
            }
            if Instant::now() >= deadline {
                let logs = self.failure_logs();
                return Err(StartFailure::Fatal(anyhow!(
                    "{} did not become ready within {timeout:?} (last error: {}); datadir {}\n{logs}",
                    self.kind.binary_name(),
                    last_err.map_or_else(|| "none".into(), |e| format!("{e:#}")),
                    self.datadir().display()
                )));
            }
            match self
                .rpc_with_timeout("getblockchaininfo", json!([]), Some(Duration::from_secs(5)))
                .await
            {
                Ok(_) => match self.ipc_socket() {
                    Some(sock) if !sock.exists() => {
                        last_err = Some(anyhow!("IPC socket {} not there yet", sock.display()));
                    }
                    _ => return Ok(()),
                },
                Err(e) => {
                    if let Some(rpc) = e.downcast_ref::<RpcError>() {
                        if rpc.code != RPC_IN_WARMUP {
                            tracing::debug!(
                                "unexpected RPC error while waiting for startup: {rpc}"
                            );
                        }
                    }
                    last_err = Some(e);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node exited while starting: a port clash is worth another try, anything else is not.
    fn died_starting(&self, status: ExitStatus) -> StartFailure {
        let logs = self.failure_logs();
        let clash = logs.contains("Address already in use")
            || logs.contains("Unable to bind")
            || logs.contains("Unable to start HTTP server");
        let err = anyhow!(
            "{} exited during startup ({status}); datadir {}\n{logs}",
            self.kind.binary_name(),
            self.datadir().display()
        );
        if clash {
            StartFailure::PortClash(err)
        } else {
            StartFailure::Fatal(err)
        }
    }

    /// Which executable this node runs.
    pub fn kind(&self) -> NodeKind {
        self.kind
    }

    /// Which chain it runs.
    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// OS process id, while the process is owned by this handle.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// `http://127.0.0.1:<rpcport>`.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// RPC port on 127.0.0.1.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// `<datadir>/regtest/.cookie`, written by the node once RPC is up.
    pub fn cookie_file(&self) -> PathBuf {
        self.datadir().join(self.chain.name()).join(".cookie")
    }

    /// The user and password from the cookie file (`__cookie__`, random hex).
    pub fn rpc_credentials(&self) -> anyhow::Result<(String, String)> {
        let path = self.cookie_file();
        let cookie = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let (user, pass) = cookie
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed cookie file {}", path.display()))?;
        Ok((user.to_string(), pass.to_string()))
    }

    /// The node's `-datadir` (the network subdirectory is `regtest/`).
    pub fn datadir(&self) -> &Path {
        self.process.path()
    }

    /// `<datadir>/regtest/debug.log`.
    pub fn debug_log(&self) -> PathBuf {
        self.datadir().join(self.chain.name()).join("debug.log")
    }

    /// P2P listening port on 127.0.0.1.
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// The Cap'n Proto IPC socket, `<datadir>/regtest/node.sock`, for [`NodeKind::BitcoinNodeIpc`] nodes.
    pub fn ipc_socket(&self) -> Option<PathBuf> {
        match self.kind {
            NodeKind::BitcoinNodeIpc => {
                Some(self.datadir().join(self.chain.name()).join("node.sock"))
            }
            NodeKind::Bitcoind => None,
        }
    }

    /// Graceful shutdown: `stop` RPC, then wait for the process to exit; kills it after 30 s.
    /// Returns the exit status. The datadir goes away (or is kept) as on drop.
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let rpc_result = self
            .rpc_with_timeout("stop", json!([]), Some(Duration::from_secs(10)))
            .await;
        if let Err(e) = &rpc_result {
            tracing::warn!("stop RPC failed, will wait and then kill: {e:#}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut child = self
            .process
            .take_child()
            .ok_or_else(|| anyhow!("node process already gone"))?;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the node")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    pid = child.id(),
                    "node did not stop within {STOP_TIMEOUT:?}, killing it"
                );
                let _ = child.kill();
                let status = child.wait().context("waiting for the killed node")?;
                bail!("node did not stop within {STOP_TIMEOUT:?} and was killed ({status})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the node as an operator would for an upgrade (`stop` RPC, then the process exits)
    /// and keeps its datadir and ports, for [`BitcoinNode::resume`].
    ///
    /// # Errors
    /// The node did not stop.
    pub async fn halt(&mut self) -> anyhow::Result<()> {
        let _ = self
            .rpc_with_timeout("stop", json!([]), Some(Duration::from_secs(10)))
            .await;
        let mut child = self
            .process
            .take_child()
            .ok_or_else(|| anyhow!("node process already gone"))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().context("waiting for the node")?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node did not stop within {STOP_TIMEOUT:?} and was killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts a halted node again on its datadir and ports, and waits until it answers.
    ///
    /// # Errors
    /// It does not start, or does not answer in time.
    pub async fn resume(&mut self, extra_args: &[&str]) -> anyhow::Result<()> {
        let bin = bitcoin_binary(self.kind)?;
        let mut args = node_args(
            self.kind,
            self.chain,
            self.datadir(),
            self.rpc_port,
            self.p2p_port,
        );
        args.extend(extra_args.iter().map(ToString::to_string));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.datadir().join("stderr.log"))
            .context("opening stderr.log")?;
        let child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning stderr.log handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.process.replace_child(child);
        match self.wait_ready(STARTUP_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(StartFailure::PortClash(e) | StartFailure::Fatal(e)) => Err(e),
        }
    }

    /// The last `max_bytes` of `regtest/debug.log` (empty if it does not exist).
    pub fn debug_log_tail(&self, max_bytes: u64) -> String {
        tail_file(&self.debug_log(), max_bytes)
    }

    /// The exit status if the process has exited (without blocking).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Whether the node process is still running.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    fn failure_logs(&self) -> String {
        let mut out = String::new();
        let stderr = tail_file(&self.datadir().join("stderr.log"), 4 * 1024);
        if !stderr.trim().is_empty() {
            out.push_str("--- stderr ---\n");
            out.push_str(stderr.trim_end());
            out.push('\n');
        }
        let log = self.debug_log_tail(8 * 1024);
        if !log.trim().is_empty() {
            out.push_str(&format!("--- tail of {} ---\n", self.debug_log().display()));
            out.push_str(log.trim_end());
            out.push('\n');
        }
        out
    }
}
