//! Running our own binaries (`jd-proxy`, `template-provider`) as processes, for what only a
//! process shows: signals, file-descriptor limits, a socket handed from one process to the
//! next.
//!
//! `scripts/test.sh` builds the binaries before the tests; a test run without them fails with
//! the command that builds them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{tail_file, ChildInDir};
use crate::node::BitcoinNode;

/// Where cargo put this workspace's binaries: the test executable runs from `target/<profile>/deps`.
pub fn our_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("test executable {} has no target dir", exe.display()))?;
    let path = profile_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is not built: run `cargo build -p jd-proxy -p template-provider --bins` (scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// A solo-mode jd-proxy config for `node`, listening on `listen`: `stratum` holds more keys of
/// the `[stratum]` table, `extra` whole tables of its own.
pub fn solo_toml(
    node: &BitcoinNode,
    payout: &bitcoin::Address,
    listen: &str,
    stratum: &str,
    extra: &str,
) -> String {
    format!(
        r#"network = "regtest"
[node]
rpc_url = "{rpc}"
cookie_file = "{cookie}"
long_poll_secs = 5
[coinbase]
payout_address = "{payout}"
tag = "/jd-proxy-test/"
[vardiff]
initial_difficulty = 5e-6
min_difficulty = 1e-12
target_share_secs = 1.0
retarget_secs = 5.0
[stratum]
listen = "{listen}"
{stratum}
{extra}
"#,
        rpc = node.rpc_url(),
        cookie = node.cookie_file().display(),
    )
}

/// A jd-proxy process, its config and log in its own temp dir (blocks in `blocks/` there).
pub struct ProxyProcess {
    child: ChildInDir,
}

impl ProxyProcess {
    /// Writes `toml` (plus `solo.blocks_dir` inside the process's dir, unless `toml` names one)
    /// and starts the binary, through `sh -c` with `shell_prefix` before it (e.g.
    /// `ulimit -n 400;`), logging to `proxy.log`.
    pub fn start(toml: &str, shell_prefix: &str) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::Builder::new()
            .prefix("jd-proxy-proc-")
            .tempdir()?;
        let mut toml = toml.to_string();
        if !toml.contains("blocks_dir") {
            toml.push_str(&format!(
                "[solo]\nblocks_dir = \"{}\"\n",
                dir.path().join("blocks").display()
            ));
        }
        std::fs::write(dir.path().join("jd-proxy.toml"), toml)?;
        let bin = our_binary("jd-proxy")?;
        let log = std::fs::File::create(dir.path().join("proxy.log"))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{shell_prefix} exec \"$0\" --config jd-proxy.toml"))
            .arg(&bin)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(ProxyProcess {
            child: ChildInDir::new("jd-proxy process", child, dir),
        })
    }

    /// The process's directory (config, log, blocks).
    pub fn dir(&self) -> &Path {
        self.child.path()
    }

    /// The blocks (journal) directory, unless the config named another.
    pub fn blocks_dir(&self) -> PathBuf {
        self.dir().join("blocks")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("proxy.log")).unwrap_or_default()
    }

    /// The log's last lines, for failure messages.
    pub fn log_tail(&self) -> String {
        tail_file(&self.dir().join("proxy.log"), 8_000)
    }

    /// The OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.child.is_running()
    }

    /// Waits until the log contains `needle`, for at most `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            anyhow::ensure!(
                self.is_running(),
                "jd-proxy exited before logging {needle:?}:\n{}",
                self.log_tail()
            );
            anyhow::ensure!(
                Instant::now() < deadline,
                "jd-proxy did not log {needle:?} within {timeout:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `TERM`) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("no jd-proxy process"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Waits for the process to exit, at most `timeout`; polled every 10 ms (a cheap
    /// `waitpid`), so the time it took is measured to that.
    pub async fn wait_exit(&self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.exit_status() {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "jd-proxy still running after {timeout:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
