//! A real Prometheus (the Debian package `prometheus`, installed by `scripts/setup.sh`), started
//! by a test on a free loopback port with its own config and storage in a temp dir, never the
//! system service. Queried over its HTTP API.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::process::{free_local_port, tail_file, ChildInDir};

/// Names the Prometheus binary instead of `prometheus` on the `PATH`.
pub const PROMETHEUS_BIN_ENV: &str = "JD_PROMETHEUS_BIN";

/// A running Prometheus, killed with its directory on drop.
pub struct Prometheus {
    child: ChildInDir,
    addr: SocketAddr,
    http: reqwest::Client,
}

fn binary() -> String {
    std::env::var(PROMETHEUS_BIN_ENV)
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "prometheus".into())
}

impl Prometheus {
    /// Starts Prometheus scraping `targets`' `/metrics` every `every`, and waits until it is
    /// ready.
    ///
    /// # Errors
    /// No binary (run `scripts/setup.sh`), or it did not get ready within 30 s.
    pub async fn start(targets: &[SocketAddr], every: Duration) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new().prefix("prometheus-").tempdir()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let secs = every.as_secs().max(1);
        let config = format!(
            "global:\n  scrape_interval: {secs}s\n  evaluation_interval: {secs}s\nscrape_configs:\n  - job_name: jd\n    scrape_interval: {secs}s\n    scrape_timeout: {secs}s\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        let port = free_local_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let bin = binary();
        let child = Command::new(&bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {bin} (install it: scripts/setup.sh, or set {PROMETHEUS_BIN_ENV})"
                )
            })?;
        let p = Prometheus {
            child: ChildInDir::new("prometheus", child, dir),
            addr,
            http: reqwest::Client::new(),
        };
        p.wait_ready(Duration::from_secs(30)).await?;
        Ok(p)
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/-/ready", self.addr);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                self.child.is_running() && tokio::time::Instant::now() < deadline,
                "prometheus not ready within {timeout:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The instant query `promql`: each series' labels and value.
    ///
    /// # Errors
    /// Prometheus did not answer, or refused the query.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let body: Value = self
            .http
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(body["status"] == "success", "query {promql}: {body}");
        let series = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(series
            .into_iter()
            .map(|s| {
                let v = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (s["metric"].clone(), v.unwrap_or(f64::NAN))
            })
            .collect())
    }

    /// Its log's last lines.
    pub fn log_tail(&self) -> String {
        tail_file(&self.child.path().join("prometheus.log"), 4_000)
    }
}
