//! What the tests share: starting jd-proxy and the template provider against a test node, CPU
//! miners, blocks built by hand, waiting with a bound, and the child-process plumbing behind the
//! node and the reference peers.

pub mod binary;
pub mod blocks;
pub mod chain;
pub mod chromium;
pub mod farm;
pub mod miner;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod provider;
pub mod proxy;
pub mod relay;
pub mod signet;
pub mod sv1_client;

use std::future::Future;
use std::time::{Duration, Instant};

pub use blocks::{build_block, mine_block, txids};
pub use chain::{block_at, blocks_above, connect_nodes};
pub use miner::MinerSpec;
pub use provider::{ipc_provider_config, provider_config, provider_link, start_provider};
pub use proxy::{solo_config, start_proxy};

/// Logs to the test's captured output; once per process.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `f` under `timeout`, failing the test when it runs over.
///
/// # Errors
/// `f`'s error, or the timeout.
pub async fn with_timeout<F: Future<Output = anyhow::Result<()>>>(
    timeout: Duration,
    f: F,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| anyhow::anyhow!("test timed out after {timeout:?}"))?
}

/// Runs `f` under `limit` and returns its value, for tests that return nothing.
///
/// # Panics
/// `f` fails or runs over.
pub async fn bounded<T>(limit: Duration, f: impl Future<Output = anyhow::Result<T>>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{e:#}"),
        Err(_) => panic!("test timed out after {limit:?}"),
    }
}

/// Cancels `shutdown`, then waits (bounded) until every task of `tracker` has stopped.
///
/// # Errors
/// A task still runs after `timeout`; `what` names them.
pub async fn stop_tasks(
    shutdown: &tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(timeout, tracker.wait())
        .await
        .map_err(|_| anyhow::anyhow!("{what} did not stop"))
}

/// How many blocks the journal in `dir` holds: every block found is written there before it
/// goes anywhere.
pub fn journaled_blocks(dir: &std::path::Path) -> usize {
    template_provider::blocks::journal::read_dir(dir)
        .expect("the block journal reads back")
        .len()
}
