//! The local demo: the farm's regtest Bitcoin Core, the `jd-proxy` binary, and CPU miners
//! speaking the dialects of real ASIC firmware, mining for the reference pool (`pool_sv2` with
//! its Job Declaration Server, on a `bitcoin-node` of its own). Halfway through, the pool is
//! killed (the ASICs go on mining solo), then started again (mining returns to it). The farm's
//! node gets low-fee transactions the pool's node refuses; at the end the demo asks the node
//! what was mined. `--solo` runs without a pool.
//!
//! Run it through `scripts/demo.sh`, which builds everything first.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::{Amount, ScriptBuf, Txid};
use clap::Parser;
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::process::free_local_port;
use integration_tests::support::{block_at, connect_nodes, MinerSpec};
use integration_tests::sv2_peers::{PoolSv2, PoolSv2Config, TemplateSource};
use integration_tests::wallet::TestWallet;
use sv1_miner::{Dialect, MinerEvent};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

/// Mine regtest blocks through jd-proxy with simulated ASICs.
#[derive(Debug, Parser)]
struct Args {
    /// The jd-proxy binary to run.
    #[arg(long, default_value = "target/release/jd-proxy")]
    jd_proxy: PathBuf,
    /// How long to mine.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Miner dialects, comma separated.
    #[arg(
        long,
        default_value = "cgminer,whatsminer,bitaxe,nerdminer",
        value_delimiter = ','
    )]
    miners: Vec<Dialect>,
    /// Hashes per second per CPU miner.
    #[arg(long, default_value_t = 20_000.0)]
    hashrate: f64,
    /// Mine solo on the farm's node, without a pool.
    #[arg(long)]
    solo: bool,
}

fn say(msg: impl std::fmt::Display) {
    println!("\x1b[1;36mdemo:\x1b[0m {msg}");
}

/// The farm's node and its funded wallet, and unless solo the pool with its own node.
struct Farm {
    node: BitcoinNode,
    wallet: TestWallet,
    pool: Option<PoolSv2>,
    pool_node: Option<BitcoinNode>,
}

/// What the demo needs to say what was mined at the end.
struct Run {
    start: u64,
    payout: TestWallet,
    pool_script: Option<ScriptBuf>,
    blocks_dir: PathBuf,
    sent: HashSet<Txid>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.jd_proxy.exists(),
        "no jd-proxy binary at {} (run scripts/demo.sh)",
        args.jd_proxy.display()
    );

    let mut farm = start_farm(args.solo).await?;
    let payout = TestWallet::new();
    let pool_script = farm.pool.as_ref().map(|p| p.coinbase_script().clone());
    let (start, _) = farm.node.tip().await?;
    say(format_args!(
        "farm node ready at height {start}; solo block rewards go to {}",
        payout.address()
    ));
    let port = free_local_port()?;
    let (config_path, blocks_dir) =
        write_proxy_config(&farm.node, &payout, port, farm.pool.as_ref())?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut proxy = start_jd_proxy(&args.jd_proxy, &config_path, addr).await?;

    let shutdown = CancellationToken::new();
    spawn_miners(&args, addr, &shutdown);
    let sent = mine_for_a_while(&args, &mut farm).await?;

    shutdown.cancel();
    if let Some(pid) = proxy.id() {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), proxy.wait()).await;

    let run = Run {
        start,
        payout,
        pool_script,
        blocks_dir,
        sent,
    };
    report(&farm, &run, args.solo).await
}

/// The farm's node, funded; unless `solo`, the pool's node peered with it and the pool on it.
async fn start_farm(solo: bool) -> anyhow::Result<Farm> {
    say("starting the farm's regtest Bitcoin Core node");
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    let mut wallet = TestWallet::new();
    if solo {
        wallet.fund(&node, 110).await?;
        return Ok(Farm {
            node,
            wallet,
            pool: None,
            pool_node: None,
        });
    }
    say("starting the pool's node (bitcoin-node with IPC; it refuses transactions under 5 sat/vB)");
    let pn =
        BitcoinNode::start_with_args(NodeKind::BitcoinNodeIpc, &["-minrelaytxfee=0.00005"]).await?;
    connect_nodes(&node, &pn).await?;
    wallet.fund(&pn, 110).await?;
    node.wait_for_height(110, Duration::from_secs(30)).await?;
    let pool_payout = TestWallet::new();
    say("starting the reference pool pool_sv2 0.7.0 with its Job Declaration Server");
    let p = PoolSv2::start(PoolSv2Config::new(
        TemplateSource::ipc(&pn),
        pool_payout.address(),
    ))
    .await?;
    say(format_args!(
        "pool ready: mining {}, JDS {}, pays {}",
        p.listen_addr(),
        p.jds_addr().map(|a| a.to_string()).unwrap_or_default(),
        pool_payout.address()
    ));
    Ok(Farm {
        node,
        wallet,
        pool: Some(p),
        pool_node: Some(pn),
    })
}

/// Writes jd-proxy's config into the node's datadir; returns its path and the found-blocks
/// directory.
fn write_proxy_config(
    node: &BitcoinNode,
    payout: &TestWallet,
    port: u16,
    pool: Option<&PoolSv2>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let upstream = match pool {
        None => String::new(),
        Some(p) => format!(
            r#"[[upstream]]
name = "reference-pool"
pool_address = "{}"
pool_authority_public_key = "{}"
jds_address = "{}"
user_identity = "demo-farm"
[failover]
retry_preferred_secs = 3
hashrate_report_secs = 10
"#,
            p.listen_addr(),
            p.authority_public_key(),
            p.jds_addr().map(|a| a.to_string()).unwrap_or_default()
        ),
    };
    let config_path = node.datadir().join("jd-proxy.toml");
    let blocks_dir = node.datadir().join("found-blocks");
    std::fs::write(
        &config_path,
        format!(
            r#"network = "regtest"
[node]
rpc_url = "{rpc}"
cookie_file = "{cookie}"
[coinbase]
payout_address = "{payout}"
tag = "/jd-proxy-demo/"
[stratum]
listen = "127.0.0.1:{port}"
[vardiff]
# CPU miners: tiny difficulties, one share every few seconds each.
initial_difficulty = 0.00001
min_difficulty = 0.000000001
target_share_secs = 3
retarget_secs = 15
[solo]
blocks_dir = "{blocks}"
{upstream}"#,
            rpc = node.rpc_url(),
            cookie = node.cookie_file().display(),
            payout = payout.address(),
            blocks = blocks_dir.display(),
        ),
    )?;
    Ok((config_path, blocks_dir))
}

/// Runs the jd-proxy binary on `config` and waits (bounded) until it listens on `addr`.
async fn start_jd_proxy(bin: &Path, config: &Path, addr: SocketAddr) -> anyhow::Result<Child> {
    say(format_args!(
        "starting {} --config {}",
        bin.display(),
        config.display()
    ));
    let mut proxy = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting jd-proxy")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "jd-proxy did not start listening on {addr}"
        );
        if let Some(status) = proxy.try_wait()? {
            anyhow::bail!("jd-proxy exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The config leaves `[http] listen` at its default.
    say("jd-proxy is up: its dashboard is at http://127.0.0.1:9100/ (jd-proxy status prints a summary)");
    Ok(proxy)
}

/// One CPU miner per dialect asked for, printing its rejected shares and its disconnection.
fn spawn_miners(args: &Args, addr: SocketAddr, shutdown: &CancellationToken) {
    let spec = MinerSpec {
        worker_prefix: "demo",
        difficulty: 0.00001,
        hashrate: args.hashrate,
    };
    for (i, dialect) in args.miners.iter().enumerate() {
        let mut miner = spec.spawn(addr, *dialect, shutdown);
        say(format_args!(
            "miner {i} speaks {dialect} at {} kH/s",
            args.hashrate / 1000.0
        ));
        let name = dialect.to_string();
        tokio::spawn(async move {
            while let Some(event) = miner.events.recv().await {
                match event {
                    MinerEvent::ShareResult {
                        accepted: false,
                        reason,
                        ..
                    } => {
                        println!("  [{name}] share rejected: {}", reason.unwrap_or_default());
                    }
                    MinerEvent::Disconnected { reason } => {
                        println!("  [{name}] disconnected: {reason}");
                        break;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// Mines for `args.seconds` (or until Ctrl-C), killing the pool halfway and starting it again
/// at three quarters, with a low-fee transaction every 5 s. Returns the transactions sent.
async fn mine_for_a_while(args: &Args, farm: &mut Farm) -> anyhow::Result<HashSet<Txid>> {
    let mut sent: HashSet<Txid> = HashSet::new();
    let begin = Instant::now();
    let end = begin + Duration::from_secs(args.seconds);
    let kill_at = begin + Duration::from_secs(args.seconds / 2);
    let restart_at = begin + Duration::from_secs(args.seconds * 3 / 4);
    let mut stopped_pool = None;
    let mut restarted = false;
    let mut next_tx = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while Instant::now() < end {
        if stopped_pool.is_none() && !restarted && Instant::now() >= kill_at {
            if let Some(p) = farm.pool.take() {
                say("KILLING THE POOL: the ASICs stay connected and go on mining solo");
                stopped_pool = Some((p.config().clone(), p.listen_addr(), p.jds_addr()));
                drop(p);
            }
        }
        if Instant::now() >= restart_at {
            if let Some((config, listen, jds)) = stopped_pool.take() {
                restarted = true;
                say("STARTING THE POOL AGAIN: mining returns to it");
                farm.pool = Some(PoolSv2::start_on(config, listen, jds).await?);
            }
        }
        if Instant::now() >= next_tx {
            // About 2 sat/vB: the farm's node takes it, the pool's node refuses it.
            match farm
                .wallet
                .send_self(&farm.node, Amount::from_sat(250))
                .await
            {
                Ok(txid) => {
                    say(format_args!(
                        "put low-fee transaction {txid} in the farm node's mempool"
                    ));
                    sent.insert(txid);
                }
                Err(e) => say(format_args!("could not send a transaction: {e:#}")),
            }
            next_tx = Instant::now() + Duration::from_secs(5);
        }
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    Ok(sent)
}

/// What the node says was mined; an error unless every block pays the pool or the farm (and,
/// with a pool, some pay each).
async fn report(farm: &Farm, run: &Run, solo: bool) -> anyhow::Result<()> {
    let node = &farm.node;
    let (tip, _) = node.tip().await?;
    let mut mined_txs = 0;
    let mut paid = 0;
    let mut for_pool = 0;
    for h in run.start + 1..=tip {
        let block = block_at(node, h).await?;
        let first = &block.txdata[0].output[0].script_pubkey;
        if first == run.payout.script_pubkey() {
            paid += 1;
        } else if Some(first) == run.pool_script.as_ref() {
            for_pool += 1;
        }
        mined_txs += block
            .txdata
            .iter()
            .filter(|t| run.sent.contains(&t.compute_txid()))
            .count();
    }
    let blocks = tip - run.start;
    say(format_args!(
        "the node accepted {blocks} blocks mined through jd-proxy: {for_pool} for the pool, {paid} solo (paying {}); {mined_txs} of the {} demo transactions are in them; blocks were also written to {}",
        run.payout.address(),
        run.sent.len(),
        run.blocks_dir.display()
    ));
    if let Some(pn) = &farm.pool_node {
        let (pool_tip, _) = pn.tip().await?;
        say(format_args!(
            "the pool's node is at height {pool_tip} (the farm's at {tip})"
        ));
    }
    anyhow::ensure!(
        blocks > 0 && paid + for_pool == blocks,
        "the demo mined no blocks, or some pay neither the pool nor the farm"
    );
    anyhow::ensure!(
        solo || (for_pool > 0 && paid > 0),
        "expected blocks for the pool and, while it was down, solo blocks"
    );
    Ok(())
}
