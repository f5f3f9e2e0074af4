//! A real headless Chromium driven over the DevTools protocol (CDP), for the dashboard test.
//!
//! Why CDP and not WebDriver: Debian's `chromium` package speaks CDP by itself
//! (`--remote-debugging-port`), while WebDriver needs `chromium-driver`, a second package and a
//! second process between the test and the browser. CDP also gives screenshots
//! (`Page.captureScreenshot`) and viewport sizes (`Emulation.setDeviceMetricsOverride`) directly.
//! The client is a few JSON messages over one websocket (`tokio-tungstenite`).
//!
//! The browser runs headless, listens on loopback only, keeps its profile in a temporary
//! directory, and runs in a process group of its own: dropping [`Chromium`] kills the group
//! (browser, zygote, renderers and GPU process), so a failing test leaks none of them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Names the browser binary, overriding the search of `PATH`.
pub const CHROMIUM_ENV: &str = "JD_CHROMIUM";
/// How long the browser may take to open its DevTools port.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one DevTools command may take, and a page to load.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the browser may take to stop when asked, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A headless Chromium, killed with its whole process group when dropped.
pub struct Chromium {
    child: Child,
    profile: tempfile::TempDir,
    port: u16,
}

/// The browser binary: `$JD_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
///
/// # Errors
/// None found, with how to install it.
pub fn chromium_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(CHROMIUM_ENV).filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let bin = dir.join(name);
            if bin.is_file() {
                return Ok(bin);
            }
        }
    }
    bail!("chromium not found on PATH: run scripts/setup.sh (Debian package `chromium`) or set {CHROMIUM_ENV}")
}

impl Chromium {
    /// Starts a headless browser on a blank page.
    ///
    /// # Errors
    /// No browser, or it did not open its DevTools port in time.
    pub async fn launch() -> anyhow::Result<Chromium> {
        let bin = chromium_binary()?;
        let profile = tempfile::Builder::new().prefix("chromium-").tempdir()?;
        let log = std::fs::File::create(profile.path().join("chromium.log"))?;
        let child = Command::new(&bin)
            .args([
                "--headless",
                // The sandbox needs user namespaces or a setuid helper, which containers and CI
                // runners as root often lack; this browser only ever loads our page on loopback.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                // 0: the browser picks a free port and writes it to DevToolsActivePort.
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut browser = Chromium {
            child,
            profile,
            port: 0,
        };
        browser.port = browser.wait_for_port().await?;
        Ok(browser)
    }

    async fn wait_for_port(&mut self) -> anyhow::Result<u16> {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse().ok())
            {
                return Ok(port);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("chromium exited ({status}): {}", self.log_tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromium opened no DevTools port in {START_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of the browser's own log, for error messages.
    pub fn log_tail(&self) -> String {
        super::process::tail_file(&self.profile.path().join("chromium.log"), 2_000)
    }

    /// Opens a new blank page and connects to it.
    ///
    /// # Errors
    /// The DevTools endpoint did not answer as expected.
    pub async fn page(&self) -> anyhow::Result<Page> {
        let target: Value = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("opening a page")?;
        let url = target["webSocketDebuggerUrl"]
            .as_str()
            .context("a page without a DevTools socket")?;
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("connecting to the page's DevTools socket")?;
        let mut page = Page {
            ws,
            next_id: 0,
            exceptions: Vec::new(),
        };
        page.call("Runtime.enable", json!({})).await?;
        Ok(page)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Asked first, the browser stops its own renderers and reaps them; whatever is left
        // after a moment is killed with the whole group (its id is the browser's pid:
        // process_group(0)). `kill` as the other tests signal their processes: the workspace
        // forbids unsafe code, so no libc::kill.
        let pid = self.child.id().to_string();
        let group = format!("-{pid}");
        let signal = |args: &[&str]| {
            let _ = Command::new("kill")
                .args(args)
                .stderr(Stdio::null())
                .status();
        };
        signal(&["-TERM", &pid]);
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&["-KILL", "--", &group]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page of the browser, driven over its DevTools websocket.
pub struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Uncaught exceptions the page's scripts threw so far (`Runtime.exceptionThrown`).
    pub exceptions: Vec<String>,
}

impl Page {
    /// Sends one DevTools command and returns its result, noting the events that arrive first.
    ///
    /// # Errors
    /// The browser answered with an error, went away, or took longer than 20 s.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(id, request))
            .await
            .with_context(|| format!("{method}: no answer in {CALL_TIMEOUT:?}"))?
            .with_context(|| format!("DevTools {method}"))
    }

    async fn exchange(&mut self, id: u64, request: Value) -> anyhow::Result<Value> {
        self.ws.send(Message::text(request.to_string())).await?;
        while let Some(message) = self.ws.next().await {
            let message = message?;
            let Ok(text) = message.to_text() else {
                continue;
            };
            let mut v: Value = serde_json::from_str(text)?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    bail!("{e}");
                }
                return Ok(v["result"].take());
            }
            if v["method"] == "Runtime.exceptionThrown" {
                let d = &v["params"]["exceptionDetails"];
                let what = d["exception"]["description"].as_str().unwrap_or_default();
                self.exceptions.push(format!("{} {what}", d["text"]));
            }
        }
        bail!("the DevTools socket closed")
    }

    /// Loads `url` and waits until the document and its script and style have loaded.
    ///
    /// # Errors
    /// The browser could not load it, or not in 20 s.
    pub async fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r.get("errorText") {
            bail!("loading {url}: {e}");
        }
        // Page.navigate answers once the navigation has started, not when it is done.
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let (href, state): (String, String) =
                self.eval("[location.href, document.readyState]").await?;
            if href == url && state == "complete" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{url} not loaded in {CALL_TIMEOUT:?}: at {href}, {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    ///
    /// # Errors
    /// The script threw, or its value is not a `T`.
    pub async fn eval<T: DeserializeOwned>(&mut self, expression: &str) -> anyhow::Result<T> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("script threw: {e}");
        }
        serde_json::from_value(r["result"]["value"].clone())
            .with_context(|| format!("the value of `{expression}`"))
    }

    /// Sizes the viewport: `width`×`height` CSS pixels, as a phone when `mobile`.
    ///
    /// # Errors
    /// The browser refused.
    pub async fn set_viewport(
        &mut self,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> anyhow::Result<()> {
        let params =
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
        self.call("Emulation.setDeviceMetricsOverride", params)
            .await
            .map(drop)
    }

    /// Writes a PNG of the viewport to `path`, creating its directory.
    ///
    /// # Errors
    /// The capture failed or the file could not be written.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("a screenshot without data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}
