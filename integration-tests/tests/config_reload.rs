//! Operating jd-proxy as its own process: settings from environment variables, JSON logs, a
//! SIGHUP that reloads the farm's policy and the vardiff settings while a miner mines (the
//! miner keeps its one connection), a broken file refused on reload, and `jd-proxy status`
//! against the running instance's API.
//!
//! On regtest every share at the test difficulty is also a block, so the policy shows in the
//! blocks the miner finds.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::{Amount, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::binary::{our_binary, solo_toml, ProxyProcess};
use integration_tests::support::process::{free_local_port, ChildInDir};
use integration_tests::support::{init_tracing, wait_until, with_timeout};
use integration_tests::wallet::TestWallet;
use serde_json::{json, Value};
use sv1_miner::{Dialect, MinerConfig, MinerEvent};
use sv2_wire::AuthorityKeypair;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// What `jd_proxy::Proxy::start` logs once it accepts miners.
const SERVING: &str = "jd-proxy serving Stratum V1 miners";
/// What a reload that applied something logs.
const RELOADED: &str = "config reloaded: vardiff applies";
/// What a refused reload logs.
const REFUSED: &str = "config reload refused";
/// The miner's pace: at the new minimum difficulty, a share (and a block) every ~1.7 s.
const HASHRATE: f64 = 50_000.0;
/// The minimum difficulty the reload raises every session to.
const NEW_MIN: f64 = 2e-5;

/// Everything one miner saw, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<MinerEvent>>>);

impl Seen {
    fn spawn(addr: SocketAddr, user: &str, stop: &CancellationToken) -> Seen {
        let config = MinerConfig::new(addr, user, Dialect::Cgminer).with_max_hashrate(HASHRATE);
        let mut miner = sv1_miner::spawn(config, stop.clone());
        let seen = Seen::default();
        let log = seen.0.clone();
        tokio::spawn(async move {
            while let Some(e) = miner.events.recv().await {
                log.lock().expect("not poisoned").push(e);
            }
        });
        seen
    }

    fn len(&self) -> usize {
        self.0.lock().expect("not poisoned").len()
    }

    /// Events from index `from` on.
    fn since(&self, from: usize) -> Vec<MinerEvent> {
        self.0.lock().expect("not poisoned")[from..].to_vec()
    }

    fn accepted_since(&self, from: usize) -> usize {
        let e = self.since(from);
        e.iter()
            .filter(|e| matches!(e, MinerEvent::ShareResult { accepted: true, .. }))
            .count()
    }

    /// One connection, never closed nor moved: one subscribe, no disconnect, no reconnect.
    fn one_connection(&self) -> anyhow::Result<()> {
        let all = self.since(0);
        let subscribed = all
            .iter()
            .filter(|e| matches!(e, MinerEvent::Subscribed { .. }))
            .count();
        let gone = all.iter().find(|e| {
            matches!(
                e,
                MinerEvent::Disconnected { .. } | MinerEvent::Reconnecting { .. }
            )
        });
        anyhow::ensure!(
            subscribed == 1 && gone.is_none(),
            "the miner's connection did not stay: {subscribed} subscribes, {gone:?}"
        );
        Ok(())
    }

    async fn wait_accepted(&self, from: usize, n: usize, within: Duration) -> anyhow::Result<()> {
        anyhow::ensure!(
            wait_until(within, || async { self.accepted_since(from) >= n }).await,
            "{n} shares not accepted within {within:?}: {:?}",
            self.since(from)
        );
        Ok(())
    }
}

async fn funded_node() -> anyhow::Result<(BitcoinNode, TestWallet)> {
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    let mut wallet = TestWallet::new();
    wallet.fund(&node, 101).await?;
    Ok((node, wallet))
}

/// The proxy's config file: the test defaults, `[http]` on `http`, and `extra` tables.
fn config(node: &BitcoinNode, wallet: &TestWallet, addr: &str, http: &str, extra: &str) -> String {
    solo_toml(
        node,
        wallet.address(),
        addr,
        "",
        &format!("[http]\nlisten = \"{http}\"\n{extra}"),
    )
}

/// `solo_toml` sets `[vardiff]`; a reload with new vardiff settings rewrites that table.
fn with_vardiff(toml: &str, vardiff: &str) -> String {
    let start = toml.find("[vardiff]").expect("solo_toml has [vardiff]");
    let end = start + toml[start..].find("[stratum]").expect("then [stratum]");
    format!("{}{vardiff}\n{}", &toml[..start], &toml[end..])
}

/// Writes the config file the process reads on SIGHUP (`[solo]` as the first start wrote it).
fn rewrite(proxy: &ProxyProcess, toml: &str) -> anyhow::Result<()> {
    let blocks = proxy.blocks_dir();
    let text = format!("{toml}[solo]\nblocks_dir = \"{}\"\n", blocks.display());
    std::fs::write(proxy.dir().join("jd-proxy.toml"), text)?;
    Ok(())
}

/// Sends SIGHUP and waits for the `expect` log line it causes (the n-th of its kind).
async fn hangup(proxy: &ProxyProcess, expect: &str) -> anyhow::Result<()> {
    let before = proxy.log().matches(expect).count();
    proxy.signal("HUP")?;
    let log_has = || async { proxy.log().matches(expect).count() > before };
    anyhow::ensure!(
        wait_until(Duration::from_secs(10), log_has).await,
        "no {expect:?} after SIGHUP:\n{}",
        proxy.log_tail()
    );
    Ok(())
}

async fn in_mempool(node: &BitcoinNode, txid: Txid) -> bool {
    node.rpc("getmempoolentry", json!([txid.to_string()]))
        .await
        .is_ok()
}

async fn height(node: &BitcoinNode) -> anyhow::Result<u64> {
    Ok(node.tip().await?.0)
}

/// Waits for `n` blocks above `from`, found by the miner.
async fn blocks_after(node: &BitcoinNode, from: u64, n: u64) -> anyhow::Result<()> {
    let grown = wait_until(Duration::from_secs(30), || async {
        height(node).await.is_ok_and(|h| h >= from + n)
    })
    .await;
    anyhow::ensure!(grown, "the miner found no {n} blocks above {from}");
    Ok(())
}

fn jd_proxy(args: &[&str], envs: &[(&str, &str)], dir: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(our_binary("jd-proxy")?)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .output()?)
}

/// Settings from `JD_PROXY__...` variables take effect over the file (the listen address and
/// the starting difficulty), `JD_PROXY_LOG_FORMAT=json` logs one JSON object per line, and
/// `check-config` names every bad variable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_take_effect() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = funded_node().await?;
        let file_addr = format!("127.0.0.1:{}", free_local_port()?);
        let env_addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
        let http = format!("127.0.0.1:{}", free_local_port()?);
        let toml = config(&node, &wallet, &file_addr, &http, "");
        let prefix = format!(
            "export JD_PROXY__STRATUM__LISTEN={env_addr} JD_PROXY__VARDIFF__INITIAL_DIFFICULTY=3e-5 \
             JD_PROXY__COINBASE__TAG=2024 JD_PROXY_LOG_FORMAT=json;"
        );
        let proxy = ProxyProcess::start(&toml, &prefix)?;
        proxy.wait_for_log(SERVING, Duration::from_secs(20)).await?;

        let funded = height(&node).await?;
        let stop = CancellationToken::new();
        let seen = Seen::spawn(env_addr, "farm.env", &stop);
        seen.wait_accepted(0, 1, Duration::from_secs(20)).await?;
        blocks_after(&node, funded, 1).await?;
        let first = seen.since(0).into_iter().find_map(|e| match e {
            MinerEvent::Difficulty(d) => Some(d),
            _ => None,
        });
        anyhow::ensure!(first == Some(3e-5), "first difficulty {first:?}, not the variable's");
        anyhow::ensure!(
            tokio::net::TcpStream::connect(&file_addr).await.is_err(),
            "the file's listen address is not used"
        );
        let log = proxy.log();
        let serving = log.lines().find(|l| l.contains(SERVING)).unwrap_or_default();
        let line: Value = serde_json::from_str(serving)?;
        anyhow::ensure!(
            line["level"] == "INFO" && line["listen"] == env_addr.to_string(),
            "one JSON object per event, fields at the top: {line}"
        );
        for l in log.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<Value>(l)
                .map_err(|e| anyhow::anyhow!("not a JSON line ({e}): {l}"))?;
        }
        // The coinbase tag, a string of digits, stayed text: the blocks carry it.
        let (_, tip) = node.tip().await?;
        let coinbase = &node.block(&tip).await?.txdata[0];
        let sig = coinbase.input[0].script_sig.as_bytes();
        anyhow::ensure!(sig.windows(4).any(|w| w == b"2024"), "tag missing: {sig:?}");
        stop.cancel();

        let bad = jd_proxy(
            &["check-config", "--config", "jd-proxy.toml"],
            &[
                ("JD_PROXY__STRATUM__LISTN", "0.0.0.0:1"),
                ("JD_PROXY__VARDIFF__MIN_DIFFICULTY", "lots"),
                ("JD_PROXY__NODE__RPC_URL", "https://node"),
            ],
            proxy.dir(),
        )?;
        let stderr = String::from_utf8_lossy(&bad.stderr);
        anyhow::ensure!(bad.status.code() == Some(2), "exit {:?}: {stderr}", bad.status);
        for key in [
            "`stratum.listn` (from JD_PROXY__STRATUM__LISTN): unknown key",
            "`vardiff.min_difficulty` (from JD_PROXY__VARDIFF__MIN_DIFFICULTY): invalid type",
            "`node.rpc_url` (from JD_PROXY__NODE__RPC_URL): must start with http://",
        ] {
            anyhow::ensure!(stderr.contains(key), "{key:?} missing from:\n{stderr}");
        }
        println!("check-config with three bad variables:\n{stderr}");
        Ok(())
    })
    .await
}

/// SIGHUP while a miner mines: the new minimum difficulty reaches it in `mining.set_difficulty`
/// and the new policy keeps a transaction out of every block, on the same connection; a broken
/// file is refused and the config in force stays; lifting the exclusion lets the transaction
/// in. `jd-proxy status` reads the running instance meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policy_and_vardiff_without_dropping_the_miner() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let (node, mut wallet) = funded_node().await?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
        let http = format!("127.0.0.1:{}", free_local_port()?);
        let toml = config(&node, &wallet, &addr.to_string(), &http, "");
        let proxy = ProxyProcess::start(&toml, "")?;
        proxy.wait_for_log(SERVING, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let seen = Seen::spawn(addr, "farm.rack1.s19-07", &stop);
        seen.wait_accepted(0, 2, Duration::from_secs(20)).await?;

        // The transaction the new policy keeps out, known before anyone sees it.
        let coin = wallet.spendable(&node).await?[0].clone();
        let out = (wallet.script_pubkey().clone(), coin.value - Amount::from_sat(2_000));
        let tx = wallet.build_tx(&[coin.outpoint], &[out], Amount::from_sat(2_000))?;
        let txid = tx.compute_txid();
        let vardiff = format!(
            "[vardiff]\ninitial_difficulty = 5e-6\nmin_difficulty = {NEW_MIN:e}\ntarget_share_secs = 1.0\nretarget_secs = 2.0\n"
        );
        let excluding = with_vardiff(
            &config(&node, &wallet, &addr.to_string(), &http, &format!("[policy]\nexclude_txids = [\"{txid}\"]\n")),
            &vardiff,
        );
        rewrite(&proxy, &excluding)?;
        let mark = seen.len();
        hangup(&proxy, RELOADED).await?;
        let raised = wait_until(Duration::from_secs(10), || async {
            seen.since(mark)
                .iter()
                .any(|e| matches!(e, MinerEvent::Difficulty(d) if *d >= NEW_MIN))
        })
        .await;
        anyhow::ensure!(raised, "no set_difficulty at the new minimum: {:?}", seen.since(mark));
        seen.wait_accepted(mark, 1, Duration::from_secs(20)).await?;

        wallet.broadcast(&node, &tx).await?;
        let h = height(&node).await?;
        blocks_after(&node, h, 3).await?;
        anyhow::ensure!(in_mempool(&node, txid).await, "the excluded transaction was mined");

        // A broken file: refused with each bad key named, the policy and vardiff kept.
        let broken = with_vardiff(&excluding, "[vardiff]\nmin_difficulty = \"lots\"\nmin_dificulty = 1\n");
        rewrite(&proxy, &broken)?;
        let mark = seen.len();
        hangup(&proxy, REFUSED).await?;
        let log = proxy.log();
        for key in ["`vardiff.min_difficulty` (from", "`vardiff.min_dificulty` (from"] {
            anyhow::ensure!(log.contains(key), "{key:?} not in the refusal:\n{}", proxy.log_tail());
        }
        let h = height(&node).await?;
        blocks_after(&node, h, 3).await?;
        anyhow::ensure!(in_mempool(&node, txid).await, "a refused reload dropped the policy");
        let lowered = seen
            .since(mark)
            .into_iter()
            .find(|e| matches!(e, MinerEvent::Difficulty(d) if *d < NEW_MIN));
        anyhow::ensure!(lowered.is_none(), "a refused reload lowered the minimum: {lowered:?}");

        let status = jd_proxy(&["status", "--api", &format!("http://{http}")], &[], proxy.dir())?;
        let text = String::from_utf8_lossy(&status.stdout);
        anyhow::ensure!(status.status.success(), "status failed: {}", String::from_utf8_lossy(&status.stderr));
        for want in ["Mining     solo, on the farm's node", "Miners     1 mining", "farm.rack1.s19-07"] {
            anyhow::ensure!(text.contains(want), "{want:?} missing from the status:\n{text}");
        }
        println!("jd-proxy status:\n{text}");

        // The exclusion lifted: the transaction goes into the next blocks.
        rewrite(&proxy, &with_vardiff(&config(&node, &wallet, &addr.to_string(), &http, ""), &vardiff))?;
        hangup(&proxy, RELOADED).await?;
        let mined = wait_until(Duration::from_secs(30), || async { !in_mempool(&node, txid).await }).await;
        anyhow::ensure!(mined, "the transaction stayed out after the exclusion was lifted");
        seen.one_connection()?;
        anyhow::ensure!(proxy.is_running(), "the proxy stopped:\n{}", proxy.log_tail());
        let events = reqwest_events(&http).await?;
        let reloads = events.iter().filter(|e| e["kind"] == "reload").count();
        anyhow::ensure!(reloads == 3, "three reload events (two applied, one refused): {events:?}");
        let log = proxy.log();
        let reload_lines: Vec<&str> = log.lines().filter(|l| l.contains("::reload")).collect();
        println!("the proxy's reload lines:\n{}", reload_lines.join("\n"));
        stop.cancel();
        Ok(())
    })
    .await
}

/// The proxy's recent events, from its API.
async fn reqwest_events(http: &str) -> anyhow::Result<Vec<Value>> {
    let url = format!("http://{http}/api/v1/events?since=0");
    Ok(reqwest::get(url).await?.json().await?)
}

/// The template provider's config: `policy` as its `[policy]` table.
fn provider_toml(
    node: &BitcoinNode,
    keys: &AuthorityKeypair,
    listen: &str,
    policy: &str,
) -> String {
    format!(
        "network = \"regtest\"\n[node]\nrpc_url = \"{}\"\ncookie_file = \"{}\"\nlong_poll_secs = 5\n\
         template_refresh_secs = 2\nmin_template_interval_secs = 1\n[server]\nlisten = \"{listen}\"\n\
         authority_public_key = \"{}\"\nauthority_secret_key = \"{}\"\nblocks_dir = \"blocks\"\n\
         [http]\nlisten = \"\"\n[policy]\n{policy}\n",
        node.rpc_url(),
        node.cookie_file().display(),
        keys.public(),
        keys.secret_string(),
    )
}

/// Waits until the provider's log has one more line holding every one of `needles`.
async fn provider_logs(log: &Path, before: usize, needles: &[&str]) -> anyhow::Result<()> {
    let count = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    };
    anyhow::ensure!(
        wait_until(Duration::from_secs(15), || async { count() > before }).await,
        "no line with {needles:?}:\n{}",
        integration_tests::support::process::tail_file(log, 4_000)
    );
    Ok(())
}

fn lines_with(log: &Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// template-provider: SIGHUP puts a new policy in force at once (a template fetched under it,
/// served whatever its fees), and a broken file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_template_providers_policy() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let (node, mut wallet) = funded_node().await?;
        let keys = AuthorityKeypair::generate();
        let listen = format!("127.0.0.1:{}", free_local_port()?);
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("template-provider.toml");
        std::fs::write(&file, provider_toml(&node, &keys, &listen, ""))?;
        let log = dir.path().join("provider.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(our_binary("template-provider")?)
            .args(["run", "--config", "template-provider.toml"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let provider = ChildInDir::new("template-provider process", child, dir);
        let log = provider.path().join("provider.log");
        provider_logs(&log, 0, &["template provider running"]).await?;
        let pid = provider
            .pid()
            .ok_or_else(|| anyhow::anyhow!("no pid"))?
            .to_string();
        let hup = || Command::new("kill").args(["-HUP", &pid]).status();

        let txid = wallet.send_self(&node, Amount::from_sat(2_000)).await?;
        provider_logs(&log, 0, &["template", "txs=1"]).await?;

        let excluding = format!("exclude_txids = [\"{txid}\"]");
        let file = provider.path().join("template-provider.toml");
        std::fs::write(&file, provider_toml(&node, &keys, &listen, &excluding))?;
        let without = ["template under the new farm policy", "txs=0"];
        let before = lines_with(&log, &without);
        anyhow::ensure!(hup()?.success(), "kill -HUP failed");
        provider_logs(&log, 0, &["config reloaded: the farm policy applies"]).await?;
        provider_logs(&log, before, &without).await?;

        std::fs::write(
            &file,
            provider_toml(&node, &keys, &listen, "min_feerate = -1"),
        )?;
        anyhow::ensure!(hup()?.success(), "kill -HUP failed");
        provider_logs(
            &log,
            0,
            &["reload refused", "`policy` (from template-provider.toml)"],
        )
        .await?;

        std::fs::write(&file, provider_toml(&node, &keys, &listen, ""))?;
        let with = ["template under the new farm policy", "txs=1"];
        let before = lines_with(&log, &with);
        anyhow::ensure!(hup()?.success(), "kill -HUP failed");
        provider_logs(&log, before, &with).await?;
        anyhow::ensure!(provider.is_running(), "the provider stopped");
        Ok(())
    })
    .await
}
