//! A reference peer as a child process: its directory, its log, and waiting for it to be ready
//! without disturbing it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use super::{STARTUP_TIMEOUT, SV2_LOG_ENV};
use crate::support::process::{free_local_port, tail_file, ChildInDir};

/// How much log an error message carries.
const ERROR_LOG_TAIL: u64 = 6 * 1024;

/// One child process with its temp dir and log file.
pub(super) struct Peer {
    name: &'static str,
    process: ChildInDir,
    log: PathBuf,
}

impl Peer {
    pub(super) fn spawn(name: &'static str, bin: &Path, config_toml: &str) -> anyhow::Result<Peer> {
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
            process: ChildInDir::new(format!("{name} dir"), child, dir),
            log,
        })
    }

    pub(super) fn path(&self) -> &Path {
        self.process.path()
    }

    fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the child died of a port already taken.
    pub(super) fn port_clash(&self) -> bool {
        let log = self.log_text();
        self.process.exit_status().is_some()
            && (log.contains("Address already in use")
                || log.contains("AddrInUse")
                || log.contains("os error 98"))
    }

    fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "{}: {what}; dir {}\n--- tail of {} ---\n{}",
            self.name,
            self.path().display(),
            self.log.display(),
            tail_file(&self.log, ERROR_LOG_TAIL).trim_end()
        )
    }

    fn check_alive(&self, waiting_for: &str) -> anyhow::Result<()> {
        match self.process.exit_status() {
            Some(status) => Err(self.failure(&format!("exited ({status}) while {waiting_for}"))),
            None => Ok(()),
        }
    }

    /// Polls until something listens on `addr` (bounded).
    ///
    /// On Linux this reads the socket tables (`/proc/net/tcp`, `/proc/net/tcp6`) instead of
    /// connecting, so the peer never sees a probe: a connect-and-close makes the pool log
    /// `Noise handshake failed error=SocketClosed` and the translator register and drop a phantom
    /// SV1 miner. Elsewhere it falls back to a TCP connect.
    pub(super) async fn wait_port(
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
                return Err(self.failure(&format!(
                    "{what} on {addr} not listening within {STARTUP_TIMEOUT:?} (last: {last})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the log until it contains `needle` (bounded).
    pub(super) async fn wait_log(&self, needle: &str, deadline: Instant) -> anyhow::Result<()> {
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            self.check_alive(&format!("waiting for {needle:?} in its log"))?;
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("no {needle:?} in its log in time")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running reference peer: [`super::PoolSv2`] or [`super::TranslatorSv2`], as `K` says, with
/// what it was started with. Dropping it kills the process.
pub struct Sv2Peer<K> {
    pub(super) peer: Peer,
    pub(super) kind: K,
}

impl<K> Sv2Peer<K> {
    /// OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.peer.process.pid()
    }

    /// The temp dir with `config.toml` and the log.
    pub fn dir(&self) -> &Path {
        self.peer.path()
    }

    /// The log file (child stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.peer.log
    }

    /// The last 8 KiB of the log.
    pub fn log_tail(&self) -> String {
        tail_file(&self.peer.log, 8 * 1024)
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
        self.peer.process.exit_status()
    }

    /// An error unless the process is still running (with the log tail).
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        self.peer.check_alive("running")
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

/// `n` different ports on 127.0.0.1 that were free a moment ago.
pub(super) fn distinct_free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let p = free_local_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
