//! What every hostile-client test starts from: a regtest node, jd-proxy on it, honest miners
//! beside the hostile ones, and a reading of the lines a raw client got back.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{solo_config, start_proxy, wait_until};
use integration_tests::wallet::TestWallet;
use jd_proxy::config::raw::RawConfig;
use jd_proxy::Proxy;
use serde_json::Value;
use sv1_miner::{Dialect, MinerConfig, MinerEvent, MinerHandle};
use tokio_util::sync::CancellationToken;

/// The honest miners' difficulty. On regtest each of their shares is also a block, so the tip
/// moves whenever they find one.
pub const HONEST_DIFFICULTY: f64 = 5e-6;
/// A share about every 0.9 s at that difficulty.
pub const BUSY: f64 = 25_000.0;
/// A share (and a new tip) about every 2.7 s: for tests that need one job to stay in force for
/// a moment.
pub const CALM: f64 = 8_000.0;

/// A regtest node past its first block (no templates before one), and the wallet it pays.
pub async fn regtest() -> anyhow::Result<(BitcoinNode, TestWallet)> {
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    let wallet = TestWallet::new();
    node.mine_to(1, wallet.address()).await?;
    Ok((node, wallet))
}

/// jd-proxy in-process in solo mode on `node`, its config changed by `edit` first.
pub async fn proxy(
    node: &BitcoinNode,
    wallet: &TestWallet,
    dir: &Path,
    edit: impl FnOnce(&mut RawConfig),
) -> anyhow::Result<Proxy> {
    let mut raw = solo_config(node, wallet.address(), dir);
    edit(&mut raw);
    start_proxy(raw).await
}

/// A CPU miner speaking a real firmware's dialect, minding its own business.
pub struct Honest {
    handle: MinerHandle,
    name: String,
}

impl Honest {
    /// A miner of `dialect` connecting from `from`, hashing at most `hashrate` H/s.
    pub fn spawn(
        server: SocketAddr,
        dialect: Dialect,
        from: IpAddr,
        hashrate: f64,
        stop: &CancellationToken,
    ) -> Honest {
        let name = format!("honest.{dialect}");
        let config = MinerConfig::new(server, name.clone(), dialect)
            .with_suggest_difficulty(HONEST_DIFFICULTY)
            .with_max_hashrate(hashrate)
            .with_bind_ip(from);
        Honest {
            handle: sv1_miner::spawn(config, stop.clone()),
            name,
        }
    }

    /// Shares accepted so far.
    pub fn accepted(&self) -> u64 {
        self.handle.stats.snapshot().shares_accepted
    }

    /// Waits until more than `n` of its shares were accepted, on the connection it opened
    /// first; returns how many were.
    ///
    /// # Errors
    /// The miner lost its connection, or `within` passed.
    pub async fn mines_past(&self, n: u64, within: Duration) -> anyhow::Result<u64> {
        let ok = wait_until(within, || async {
            self.accepted() > n || self.handle.task.is_finished()
        })
        .await;
        let s = self.handle.stats.snapshot();
        anyhow::ensure!(
            !self.handle.task.is_finished(),
            "{} was disconnected: {s:?}",
            self.name
        );
        anyhow::ensure!(
            ok,
            "{} got no share accepted past {n} within {within:?}: {s:?}",
            self.name
        );
        Ok(self.accepted())
    }

    /// The extranonce1 the proxy gave it.
    ///
    /// # Errors
    /// The miner ended before it subscribed.
    pub async fn extranonce1(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), self.handle.events.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("{} ended before subscribing", self.name))?;
            if let MinerEvent::Subscribed { extranonce1, .. } = event {
                return Ok(extranonce1);
            }
        }
    }
}

/// Whether `v` is the reply to request `id`.
pub fn is_reply(v: &Value, id: u64) -> bool {
    v["id"] == id
}

/// The error code of a reply; `None` for a success.
pub fn error_code(v: &Value) -> Option<i64> {
    v["error"][0].as_i64()
}

/// Whether `v` is a `mining.notify`.
pub fn is_notify(v: &Value) -> bool {
    v["method"] == "mining.notify"
}

/// Whether `v` is a `mining.notify` of a job sent again to this miner under an id of its own:
/// those have the top bit set (`ALIAS_BIT`, proxy/src/sv1/session/work.rs).
pub fn is_resend(v: &Value) -> bool {
    is_notify(v)
        && v["params"][0]
            .as_str()
            .and_then(|id| u32::from_str_radix(id, 16).ok())
            .is_some_and(|id| id & 0x8000_0000 != 0)
}

/// Whether `v` is a `mining.set_difficulty`.
pub fn is_set_difficulty(v: &Value) -> bool {
    v["method"] == "mining.set_difficulty"
}

/// Where in `lines` the reply to `id` is.
///
/// # Errors
/// There is none.
pub fn reply_at(lines: &[Value], id: u64) -> anyhow::Result<usize> {
    lines
        .iter()
        .position(|v| is_reply(v, id))
        .ok_or_else(|| anyhow::anyhow!("no reply to request {id}"))
}

/// Whether the notify `v` resends `job` (the same work, its time maybe moved on) under another
/// id, without clearing the miner's other jobs.
pub fn resends(v: &Value, job: &sv1_miner::Job) -> bool {
    let p = &v["params"];
    is_notify(v)
        && p[0] != job.job_id.as_str()
        && sv1_miner::Job::from_notify_params(p).is_ok_and(|j| {
            !j.clean
                && (j.prevhash, &j.coinb1, &j.coinb2, &j.merkle_branch)
                    == (job.prevhash, &job.coinb1, &job.coinb2, &job.merkle_branch)
                && (j.version, j.nbits) == (job.version, job.nbits)
                && j.ntime >= job.ntime
        })
}

/// Whether `v` is a new job from the publisher (a new tip, or a new template on the same one),
/// not one sent again to this miner.
pub fn is_new_job(v: &Value) -> bool {
    is_notify(v) && !is_resend(v)
}
