//! The local demo: a regtest Bitcoin Core, the `jd-proxy` binary in solo mode, and CPU miners
//! speaking the dialects of real ASIC firmware. Transactions are put in the node's mempool as
//! it runs; at the end the demo checks with the node what was mined.
//!
//! Run it through `scripts/demo.sh`, which builds everything first.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::{Amount, BlockHash, Txid};
use clap::Parser;
use integration_tests::node::{free_local_port, BitcoinNode, NodeKind};
use integration_tests::wallet::TestWallet;
use serde_json::json;
use sv1_miner::{Dialect, MinerConfig, MinerEvent};
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
}

fn say(msg: impl std::fmt::Display) {
    println!("\x1b[1;36mdemo:\x1b[0m {msg}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.jd_proxy.exists(),
        "no jd-proxy binary at {} (run scripts/demo.sh)",
        args.jd_proxy.display()
    );

    say("starting a regtest Bitcoin Core node");
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    let mut wallet = TestWallet::new();
    wallet.fund(&node, 110).await?;
    let payout = TestWallet::new();
    let (start, _) = node.tip().await?;
    say(format_args!(
        "node ready at height {start}; block rewards go to {}",
        payout.address()
    ));

    let port = free_local_port()?;
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
"#,
            rpc = node.rpc_url(),
            cookie = node.cookie_file().display(),
            payout = payout.address(),
            blocks = blocks_dir.display(),
        ),
    )?;
    say(format_args!(
        "starting {} --config {}",
        args.jd_proxy.display(),
        config_path.display()
    ));
    let mut proxy = tokio::process::Command::new(&args.jd_proxy)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting jd-proxy")?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
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

    let shutdown = CancellationToken::new();
    for (i, dialect) in args.miners.iter().enumerate() {
        let config = MinerConfig::new(addr, format!("demo.{dialect}"), *dialect)
            .with_suggest_difficulty(0.00001)
            .with_max_hashrate(args.hashrate);
        let mut miner = sv1_miner::spawn(config, shutdown.clone());
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

    let mut sent: HashSet<Txid> = HashSet::new();
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut next_tx = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while Instant::now() < end {
        if Instant::now() >= next_tx {
            match wallet.send_self(&node, Amount::from_sat(3_000)).await {
                Ok(txid) => {
                    say(format_args!("put transaction {txid} in the node's mempool"));
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

    shutdown.cancel();
    if let Some(pid) = proxy.id() {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), proxy.wait()).await;

    // What the node says was mined.
    let (tip, _) = node.tip().await?;
    let mut mined_txs = 0;
    let mut paid = 0;
    for h in start + 1..=tip {
        let hash: BlockHash = node.rpc_as("getblockhash", json!([h])).await?;
        let block = node.block(&hash).await?;
        if block.txdata[0].output[0].script_pubkey == *payout.script_pubkey() {
            paid += 1;
        }
        mined_txs += block
            .txdata
            .iter()
            .filter(|t| sent.contains(&t.compute_txid()))
            .count();
    }
    let blocks = tip - start;
    say(format_args!(
        "the node accepted {blocks} blocks mined through jd-proxy ({paid} paying {}); {mined_txs} of the {} demo transactions are in them; blocks were also written to {}",
        payout.address(),
        sent.len(),
        blocks_dir.display()
    ));
    anyhow::ensure!(
        blocks > 0 && paid == blocks,
        "the demo mined no blocks, or some do not pay the payout address"
    );
    Ok(())
}
