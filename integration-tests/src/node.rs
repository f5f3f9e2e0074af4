//! A real Bitcoin Core node on regtest, started from the binaries built by `scripts/bitcoin-core.sh`.
//!
//! Every [`BitcoinNode`] owns a fresh temporary datadir and its child process. Dropping the node kills the
//! process and waits for it, so a failing test never leaks a `bitcoind`. Set `JD_KEEP_TEST_DIRS=1` to keep
//! the datadir (and its `regtest/debug.log`) after the node is gone; its path is printed to stderr.
//!
//! Binaries are looked up, in order, in `$JD_BITCOIN_BIN_DIR`, then in
//! `$JD_CACHE_DIR/bitcoin-core-0.4.1/bin` (default cache `~/.cache/jd-proxy`).

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bitcoin::{Address, Block, BlockHash};
use serde_json::{json, Value};

/// Version of the `libbitcoinkernel-sys` crate whose Bitcoin Core source `scripts/bitcoin-core.sh` builds.
pub const BITCOIN_CORE_PKG_VERSION: &str = "0.4.1";
/// Overrides where the Bitcoin Core binaries are taken from.
pub const BIN_DIR_ENV: &str = "JD_BITCOIN_BIN_DIR";
/// Cache root used by `scripts/bitcoin-core.sh` (default `~/.cache/jd-proxy`).
pub const CACHE_DIR_ENV: &str = "JD_CACHE_DIR";
/// When set to `1`, node datadirs are kept after the node is dropped.
pub const KEEP_DIRS_ENV: &str = "JD_KEEP_TEST_DIRS";

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

/// An error object returned by the node's JSON-RPC server (as opposed to a transport failure).
///
/// [`BitcoinNode::rpc`] returns it inside `anyhow::Error`; get it back with `err.downcast_ref::<RpcError>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub method: String,
    pub code: i64,
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RPC {} failed: {} (code {})",
            self.method, self.message, self.code
        )
    }
}

impl std::error::Error for RpcError {}

/// The directory holding `bitcoind`, `bitcoin-node` and `bitcoin-cli`.
///
/// Order: `$JD_BITCOIN_BIN_DIR`, then `$JD_CACHE_DIR/bitcoin-core-0.4.1/bin` (default cache
/// `~/.cache/jd-proxy`). Fails with instructions when neither exists.
pub fn bitcoin_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!(
                "{BIN_DIR_ENV}={} is not a directory; unset it to use the binaries built by \
                 `scripts/bitcoin-core.sh`",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let cached = cache_bin_dir();
    match &cached {
        Some(dir) if dir.join("bitcoind").is_file() => Ok(dir.clone()),
        _ => bail!(
            "Bitcoin Core binaries not found (looked in ${BIN_DIR_ENV}, unset, and {}). \
             Run `scripts/bitcoin-core.sh` from the repository root to build them (about 12 minutes), \
             or point {BIN_DIR_ENV} at a directory holding bitcoind, bitcoin-node and bitcoin-cli.",
            cached.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "<no $HOME>".into()),
        ),
    }
}

fn cache_bin_dir() -> Option<PathBuf> {
    let root = match std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?)
            .join(".cache/jd-proxy"),
    };
    Some(
        root.join(format!("bitcoin-core-{BITCOIN_CORE_PKG_VERSION}"))
            .join("bin"),
    )
}

/// Full path of the executable for `kind`, checked to exist.
pub fn bitcoin_binary(kind: NodeKind) -> anyhow::Result<PathBuf> {
    let dir = bitcoin_bin_dir()?;
    let bin = dir.join(kind.binary_name());
    if !bin.is_file() {
        bail!(
            "{} not found in {} (from {}). Run `scripts/bitcoin-core.sh` to build it.",
            kind.binary_name(),
            dir.display(),
            if std::env::var_os(BIN_DIR_ENV).is_some_and(|d| !d.is_empty()) {
                BIN_DIR_ENV
            } else {
                "the cache"
            },
        );
    }
    Ok(bin)
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_local_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A running regtest node. Dropping it kills the process; prefer [`BitcoinNode::stop`] for a clean shutdown.
pub struct BitcoinNode {
    kind: NodeKind,
    /// Behind a mutex so liveness can be polled through `&self` (nodes are often shared via `Arc`).
    child: Mutex<Option<Child>>,
    /// `None` only after the directory has been kept or during drop.
    dir: Option<tempfile::TempDir>,
    datadir: PathBuf,
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
            .field("datadir", &self.datadir)
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

impl BitcoinNode {
    /// Starts a regtest node on free loopback ports and waits until its RPC server answers.
    pub async fn start(kind: NodeKind) -> anyhow::Result<Self> {
        Self::start_with_args(kind, &[]).await
    }

    /// Like [`BitcoinNode::start`], with extra command-line arguments appended (they win over the defaults).
    pub async fn start_with_args(kind: NodeKind, extra_args: &[&str]) -> anyhow::Result<Self> {
        let bin = bitcoin_binary(kind)?;
        let mut last = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(kind, &bin, extra_args).await {
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

        let mut args: Vec<String> = vec![
            "-regtest".into(),
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
        ];
        if kind == NodeKind::BitcoinNodeIpc {
            args.push("-ipcbind=unix".into());
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));

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
            child: Mutex::new(Some(child)),
            dir: Some(dir),
            datadir,
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
        tracing::info!(?kind, rpc = %node.rpc_url(), p2p_port, datadir = %node.datadir.display(), "bitcoin node ready");
        Ok(node)
    }

    /// Polls until RPC answers (and, for IPC nodes, the socket exists), or the process dies, or time runs out.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let mut last_err: Option<anyhow::Error> = None;
        loop {
            if let Some(status) = self.exit_status() {
                let logs = self.failure_logs();
                let clash = logs.contains("Address already in use")
                    || logs.contains("Unable to bind")
                    || logs.contains("Unable to start HTTP server");
                let err = anyhow!(
                    "{} exited during startup ({status}); datadir {}\n{logs}",
                    self.kind.binary_name(),
                    self.datadir.display()
                );
                return Err(if clash {
                    StartFailure::PortClash(err)
                } else {
                    StartFailure::Fatal(err)
                });
            }
            if Instant::now() >= deadline {
                let logs = self.failure_logs();
                return Err(StartFailure::Fatal(anyhow!(
                    "{} did not become ready within {timeout:?} (last error: {}); datadir {}\n{logs}",
                    self.kind.binary_name(),
                    last_err.map(|e| format!("{e:#}")).unwrap_or_else(|| "none".into()),
                    self.datadir.display()
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

    /// Which executable this node runs.
    pub fn kind(&self) -> NodeKind {
        self.kind
    }

    /// OS process id, while the process is owned by this handle.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Child::id)
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
        self.datadir.join("regtest").join(".cookie")
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
        &self.datadir
    }

    /// `<datadir>/regtest/debug.log`.
    pub fn debug_log(&self) -> PathBuf {
        self.datadir.join("regtest").join("debug.log")
    }

    /// P2P listening port on 127.0.0.1.
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// The Cap'n Proto IPC socket, `<datadir>/regtest/node.sock`, for [`NodeKind::BitcoinNodeIpc`] nodes.
    pub fn ipc_socket(&self) -> Option<PathBuf> {
        match self.kind {
            NodeKind::BitcoinNodeIpc => Some(self.datadir.join("regtest").join("node.sock")),
            NodeKind::Bitcoind => None,
        }
    }

    /// Calls a JSON-RPC method with cookie auth. `params` is an array (or object for named params);
    /// `Value::Null` means no parameters. An error object from the node becomes an [`RpcError`].
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.rpc_with_timeout(method, params, None).await
    }

    /// [`BitcoinNode::rpc`], deserializing the result.
    pub async fn rpc_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<T> {
        let v = self.rpc(method, params).await?;
        serde_json::from_value(v).with_context(|| format!("decoding the result of {method}"))
    }

    /// [`BitcoinNode::rpc`] with an optional whole-request timeout.
    pub async fn rpc_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Value> {
        let params = if params.is_null() { json!([]) } else { params };
        let (user, pass) = self.rpc_credentials()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "1.0", "id": id, "method": method, "params": params });
        let mut req = self
            .http
            .post(self.rpc_url())
            .basic_auth(user, Some(pass))
            .json(&body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("RPC {method}: sending request"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("RPC {method}: reading response"))?;
        // Bitcoin Core answers errors with HTTP 4xx/5xx *and* a JSON body, so look at the body first.
        let reply: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => bail!("RPC {method}: HTTP {status}: {}", text.trim()),
        };
        match reply.get("error") {
            Some(err) if !err.is_null() => Err(RpcError {
                method: method.to_string(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| err.to_string()),
            }
            .into()),
            _ if !status.is_success() => bail!("RPC {method}: HTTP {status}: {}", text.trim()),
            _ => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// `generatetoaddress n address`: mines `n` blocks paying the coinbase to `address`.
    pub async fn mine_to(&self, n: u64, address: &Address) -> anyhow::Result<Vec<BlockHash>> {
        let hashes: Vec<String> = self
            .rpc_as("generatetoaddress", json!([n, address.to_string()]))
            .await?;
        hashes
            .iter()
            .map(|h| BlockHash::from_str(h).with_context(|| format!("bad block hash {h}")))
            .collect()
    }

    /// Height and hash of the active chain tip.
    pub async fn tip(&self) -> anyhow::Result<(u64, BlockHash)> {
        let info = self.rpc("getblockchaininfo", json!([])).await?;
        let height = info["blocks"]
            .as_u64()
            .ok_or_else(|| anyhow!("getblockchaininfo: no blocks field"))?;
        let hash = info["bestblockhash"]
            .as_str()
            .ok_or_else(|| anyhow!("getblockchaininfo: no bestblockhash"))?;
        Ok((height, BlockHash::from_str(hash)?))
    }

    /// The full block (`getblock <hash> 0`, consensus-decoded).
    pub async fn block(&self, hash: &BlockHash) -> anyhow::Result<Block> {
        let hex: String = self
            .rpc_as("getblock", json!([hash.to_string(), 0]))
            .await?;
        bitcoin::consensus::encode::deserialize_hex(&hex)
            .with_context(|| format!("decoding block {hash}"))
    }

    /// Waits until the tip height is at least `h`.
    pub async fn wait_for_height(&self, h: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let height: u64 = self.rpc_as("getblockcount", json!([])).await?;
            if height >= h {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node still at height {height} after {timeout:?}, wanted {h}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

    /// The last `max_bytes` of `regtest/debug.log` (empty if it does not exist).
    pub fn debug_log_tail(&self, max_bytes: u64) -> String {
        tail_file(&self.debug_log(), max_bytes)
    }

    /// The exit status if the process has exited (without blocking).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child.as_mut()?.try_wait().ok().flatten()
    }

    /// Whether the node process is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn take_child(&mut self) -> Option<Child> {
        self.child
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn failure_logs(&self) -> String {
        let mut out = String::new();
        let stderr = tail_file(&self.datadir.join("stderr.log"), 4 * 1024);
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

impl Drop for BitcoinNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.take_child() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1") {
                let path = dir.keep();
                eprintln!(
                    "{KEEP_DIRS_ENV}=1: kept bitcoin node datadir {}",
                    path.display()
                );
            }
        }
    }
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
        // Drop the partial first line.
        match text.split_once('\n') {
            Some((_, rest)) => rest.to_string(),
            None => text,
        }
    } else {
        text
    }
}
