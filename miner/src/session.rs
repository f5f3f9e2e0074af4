//! One miner's connection: handshake, server messages, share submission.

use crate::dialect::{Dialect, HandshakeStep};
use crate::hasher::{self, Found, StopOnDrop, Work, WorkSlot};
use crate::work::{parse_u32_hex, Job};
use crate::{
    share_target, MinerConfig, MinerEvent, Stats, CONNECT_TIMEOUT, HANDSHAKE_REPLY_TIMEOUT,
    MAX_LINE_LEN,
};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shares queued between the hashing thread and the connection before hashing blocks.
const FOUND_QUEUE: usize = 256;

pub(crate) async fn run(
    config: MinerConfig,
    shutdown: CancellationToken,
    events: UnboundedSender<MinerEvent>,
    stats: Arc<Stats>,
) {
    let reason = match session(&config, &shutdown, &events, &stats).await {
        Ok(reason) => reason,
        Err(e) => format!("{e:#}"),
    };
    tracing::debug!(user = %config.user, %reason, "miner disconnected");
    let _ = events.send(MinerEvent::Disconnected { reason });
}

async fn connect(config: &MinerConfig) -> Result<TcpStream> {
    let server = config.server;
    let attempt = async {
        match config.bind_ip {
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(server).await
            }
            None => TcpStream::connect(server).await,
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("connect to {server}: timed out"))?
        .with_context(|| format!("connect to {server}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn session(
    config: &MinerConfig,
    shutdown: &CancellationToken,
    events: &UnboundedSender<MinerEvent>,
    stats: &Arc<Stats>,
) -> Result<String> {
    let stream = tokio::select! {
        _ = shutdown.cancelled() => return Ok("shutdown".into()),
        s = connect(config) => s?,
    };
    let (read_half, write_half) = stream.into_split();
    let mut reader = LineReader::new(read_half, MAX_LINE_LEN);

    let slot = Arc::new(WorkSlot::default());
    let _stop_hasher = StopOnDrop(slot.clone());
    let (found_tx, mut found_rx) = tokio::sync::mpsc::channel(FOUND_QUEUE);
    {
        let slot = slot.clone();
        let stats = stats.clone();
        let max_hashrate = config.max_hashrate;
        std::thread::Builder::new()
            .name(format!("sv1-hash-{}", config.user))
            .spawn(move || hasher::run(slot, found_tx, stats, max_hashrate))
            .context("spawn hashing thread")?;
    }

    let mut s = Session::new(config, write_half, events.clone(), stats.clone(), slot);
    s.advance_handshake().await?;
    loop {
        let wait_deadline = s.wait_deadline;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok("shutdown".into()),
            line = reader.next_line() => match line? {
                None => return Ok("connection closed by server".into()),
                Some(line) => s.handle_line(&line).await?,
            },
            Some(found) = found_rx.recv() => s.submit(found).await?,
            _ = sleep_until_opt(wait_deadline), if wait_deadline.is_some() => s.handshake_timeout().await?,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

/// Reads `\n`-terminated lines with a length limit. Cancel-safe: a partial line survives a
/// dropped `next_line` future.
struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::new(inner),
            buf: Vec::new(),
            max,
        }
    }

    /// The next non-empty line (without `\r\n`), or `None` at end of stream.
    async fn next_line(&mut self) -> Result<Option<String>> {
        loop {
            let available = self.inner.fill_buf().await.context("read")?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&line).trim().to_string()));
            }
            let (take, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(pos) => (pos, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > self.max {
                bail!("server sent a line longer than {} bytes", self.max);
            }
            self.buf.extend_from_slice(&available[..take]);
            self.inner.consume(if complete { take + 1 } else { take });
            if complete {
                let line = std::mem::take(&mut self.buf);
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if !line.is_empty() {
                    return Ok(Some(line));
                }
            }
        }
    }
}

/// What an outstanding request was.
#[derive(Debug)]
enum Pending {
    Configure { requested_mask: u32 },
    Subscribe,
    Authorize,
    Submit { sent: Instant },
    Other(&'static str),
}

/// The JSON-RPC id as a map key: `1` and `"1"` are the same request (servers differ in echoing).
fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

struct Session<'a> {
    config: &'a MinerConfig,
    dialect: Dialect,
    writer: OwnedWriteHalf,
    events: UnboundedSender<MinerEvent>,
    stats: Arc<Stats>,
    slot: Arc<WorkSlot>,

    next_id: u64,
    pending: HashMap<String, Pending>,
    handshake: VecDeque<HandshakeStep>,
    waiting_for: Option<String>,
    wait_deadline: Option<Instant>,

    extranonce1: Option<Vec<u8>>,
    extranonce2_size: usize,
    /// From `mining.set_extranonce`; applies from the next notify.
    next_extranonce: Option<(Vec<u8>, usize)>,
    version_mask: Option<u32>,
    /// From `mining.set_difficulty`; applies from the next notify.
    next_difficulty: f64,
    job: Option<Arc<Job>>,
    job_difficulty: f64,
    generation: u64,
    last_clean_generation: u64,
    last_prevhash: Option<bitcoin::BlockHash>,
}

impl<'a> Session<'a> {
    fn new(
        config: &'a MinerConfig,
        writer: OwnedWriteHalf,
        events: UnboundedSender<MinerEvent>,
        stats: Arc<Stats>,
        slot: Arc<WorkSlot>,
    ) -> Self {
        let handshake: VecDeque<_> = config
            .dialect
            .handshake(&config.user, &config.password, config.suggest_difficulty)
            .into();
        Session {
            config,
            dialect: config.dialect,
            writer,
            events,
            stats,
            slot,
            next_id: handshake.len() as u64 + 1,
            pending: HashMap::new(),
            handshake,
            waiting_for: None,
            wait_deadline: None,
            extranonce1: None,
            extranonce2_size: 0,
            next_extranonce: None,
            version_mask: None,
            next_difficulty: 1.0,
            job: None,
            job_difficulty: 1.0,
            generation: 0,
            last_clean_generation: 0,
            last_prevhash: None,
        }
    }

    fn emit(&self, event: MinerEvent) {
        let _ = self.events.send(event);
    }

    async fn send_line(&mut self, line: String) -> Result<()> {
        tracing::trace!(user = %self.config.user, "> {line}");
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&bytes))
            .await
            .map_err(|_| anyhow!("write: timed out"))?
            .context("write")
    }

    /// Sends handshake requests until one whose reply the firmware waits for.
    async fn advance_handshake(&mut self) -> Result<()> {
        while let Some(step) = self.handshake.pop_front() {
            let req = step.request;
            let kind = match req.method {
                "mining.configure" => Pending::Configure {
                    requested_mask: req.params[1]["version-rolling.mask"]
                        .as_str()
                        .and_then(|m| parse_u32_hex(m).ok())
                        .unwrap_or(0),
                },
                "mining.subscribe" => Pending::Subscribe,
                "mining.authorize" => Pending::Authorize,
                other => Pending::Other(other),
            };
            let key = id_key(&req.id).unwrap_or_default();
            self.pending.insert(key.clone(), kind);
            self.send_line(req.to_line()).await?;
            if step.wait_for_reply {
                self.waiting_for = Some(key);
                self.wait_deadline = Some(Instant::now() + HANDSHAKE_REPLY_TIMEOUT);
                return Ok(());
            }
        }
        self.waiting_for = None;
        self.wait_deadline = None;
        Ok(())
    }

    async fn handshake_timeout(&mut self) -> Result<()> {
        tracing::warn!(user = %self.config.user, "no reply to a handshake request; carrying on");
        self.waiting_for = None;
        self.wait_deadline = None;
        self.advance_handshake().await
    }

    async fn handle_line(&mut self, line: &str) -> Result<()> {
        tracing::trace!(user = %self.config.user, "< {line}");
        let msg: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                tracing::debug!(user = %self.config.user, "ignoring unparsable line: {line:.200}");
                self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        if let Some(method) = msg.get("method").and_then(Value::as_str) {
            let params = msg.get("params").cloned().unwrap_or(Value::Null);
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            return self.handle_server_method(method, &params, &id).await;
        }
        let key = msg.get("id").and_then(id_key);
        let Some(pending) = key.as_ref().and_then(|k| self.pending.remove(k)) else {
            tracing::debug!(user = %self.config.user, "ignoring reply to no request: {line:.200}");
            self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let result = msg.get("result").cloned().unwrap_or(Value::Null);
        let error = msg.get("error").cloned().unwrap_or(Value::Null);
        self.handle_reply(pending, result, error)?;
        if key.is_some() && key == self.waiting_for {
            self.waiting_for = None;
            self.wait_deadline = None;
            self.advance_handshake().await?;
        }
        Ok(())
    }

    fn handle_reply(&mut self, pending: Pending, result: Value, error: Value) -> Result<()> {
        let failed = !error.is_null() || result.is_null() || result == Value::Bool(false);
        match pending {
            Pending::Configure { requested_mask } => {
                let granted = !failed && result.get("version-rolling") == Some(&Value::Bool(true));
                let mask = granted.then(|| {
                    result
                        .get("version-rolling.mask")
                        .and_then(Value::as_str)
                        .and_then(|m| parse_u32_hex(m).ok())
                        .unwrap_or(requested_mask)
                });
                self.version_mask = mask;
                tracing::debug!(user = %self.config.user, mask = ?mask.map(|m| format!("{m:08x}")), "configured");
                self.emit(MinerEvent::Configured { version_mask: mask });
                // Pipelining firmware may already be mining: restart with the granted mask.
                self.dispatch(false);
            }
            Pending::Subscribe => {
                if failed {
                    bail!(
                        "mining.subscribe failed: {}",
                        error_reason(&error).unwrap_or_else(|| result.to_string())
                    );
                }
                let (en1, en2_size) = parse_subscribe_result(&result)?;
                self.extranonce1 = Some(en1.clone());
                self.extranonce2_size = en2_size;
                self.emit(MinerEvent::Subscribed {
                    extranonce1: en1,
                    extranonce2_size: en2_size,
                });
                self.dispatch(false);
            }
            Pending::Authorize => {
                let ok = !failed && result == Value::Bool(true);
                self.stats.authorized.store(ok, Ordering::Relaxed);
                if ok {
                    tracing::debug!(user = %self.config.user, "authorized");
                } else {
                    tracing::warn!(user = %self.config.user, reason = ?error_reason(&error), "mining.authorize refused");
                }
            }
            Pending::Submit { sent } => {
                let accepted = error.is_null() && result == Value::Bool(true);
                let counter = if accepted {
                    &self.stats.shares_accepted
                } else {
                    &self.stats.shares_rejected
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let reason = if accepted { None } else { error_reason(&error) };
                self.emit(MinerEvent::ShareResult {
                    accepted,
                    reason,
                    latency: sent.elapsed(),
                });
            }
            Pending::Other(method) => {
                if failed
                    && !matches!(
                        method,
                        "mining.extranonce.subscribe" | "mining.suggest_difficulty"
                    )
                {
                    tracing::debug!(user = %self.config.user, method, ?error, "request failed");
                }
            }
        }
        Ok(())
    }

    async fn handle_server_method(
        &mut self,
        method: &str,
        params: &Value,
        id: &Value,
    ) -> Result<()> {
        match method {
            "mining.notify" => match Job::from_notify_params(params) {
                Ok(job) => self.on_notify(job),
                Err(e) => {
                    tracing::warn!(user = %self.config.user, "ignoring bad mining.notify: {e:#}");
                    self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
                }
            },
            "mining.set_difficulty" => match params.get(0).and_then(number_param) {
                Some(d) if d.is_finite() && d > 0.0 => {
                    self.next_difficulty = d;
                    self.emit(MinerEvent::Difficulty(d));
                }
                _ => {
                    tracing::warn!(user = %self.config.user, %params, "ignoring bad mining.set_difficulty");
                    self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
                }
            },
            "mining.set_extranonce" => match parse_extranonce(params) {
                Ok(en) => self.next_extranonce = Some(en),
                Err(e) => {
                    tracing::warn!(user = %self.config.user, "ignoring bad mining.set_extranonce: {e:#}");
                    self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
                }
            },
            "mining.set_version_mask" => {
                let mask = params
                    .get(0)
                    .and_then(Value::as_str)
                    .and_then(|m| parse_u32_hex(m).ok());
                match (mask, self.version_mask) {
                    // Only meaningful once rolling was negotiated; applies from the next notify.
                    (Some(m), Some(_)) => self.version_mask = Some(m),
                    (Some(_), None) => {}
                    (None, _) => {
                        self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            "client.get_version" if !id.is_null() => {
                let line = json!({"id": id, "result": self.dialect.user_agent(), "error": null})
                    .to_string();
                self.send_line(line).await?;
            }
            "client.show_message" => {
                tracing::info!(user = %self.config.user, "server message: {params}");
            }
            other => {
                tracing::debug!(user = %self.config.user, method = other, "ignoring unknown server method");
                self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn on_notify(&mut self, job: Job) {
        self.stats.notifies.fetch_add(1, Ordering::Relaxed);
        if job.clean {
            self.stats.clean_notifies.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((en1, size)) = self.next_extranonce.take() {
            self.extranonce1 = Some(en1);
            self.extranonce2_size = size;
        }
        self.job_difficulty = self.next_difficulty;
        if self.last_prevhash != Some(job.prevhash) {
            tracing::debug!(user = %self.config.user, prevhash = %job.prevhash, "new block");
            self.last_prevhash = Some(job.prevhash);
        }
        self.emit(MinerEvent::Notify {
            job_id: job.job_id.clone(),
            prevhash: job.prevhash,
            clean: job.clean,
            at: Instant::now(),
        });
        let clean = job.clean;
        self.job = Some(Arc::new(job));
        self.dispatch(clean);
    }

    /// Hands the current job to the hashing thread (once subscribed).
    fn dispatch(&mut self, clean: bool) {
        let (Some(job), Some(en1)) = (self.job.clone(), self.extranonce1.clone()) else {
            return;
        };
        self.generation += 1;
        if clean {
            self.last_clean_generation = self.generation;
        }
        self.slot.set(Work {
            generation: self.generation,
            job,
            extranonce1: en1,
            extranonce2_size: self.extranonce2_size,
            target_le: share_target(self.job_difficulty).to_le_bytes(),
            version_mask: self.version_mask,
        });
    }

    async fn submit(&mut self, found: Found) -> Result<()> {
        if found.generation < self.last_clean_generation {
            self.stats
                .shares_stale_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let id = self.dialect.request_id(self.next_id);
        self.next_id += 1;
        let params = self.dialect.submit_params(
            &self.config.user,
            &found.job_id,
            &found.extranonce2,
            found.ntime,
            found.nonce,
            found.version_bits,
        );
        let line = json!({"id": id, "method": "mining.submit", "params": params}).to_string();
        if let Some(key) = id_key(&id) {
            self.pending.insert(
                key,
                Pending::Submit {
                    sent: Instant::now(),
                },
            );
        }
        self.send_line(line).await?;
        self.stats.shares_submitted.fetch_add(1, Ordering::Relaxed);
        self.emit(MinerEvent::ShareSubmitted {
            job_id: found.job_id,
            block_hash: found.block_hash,
        });
        Ok(())
    }
}

fn number_param(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The message of a `[code, "message", data]` (or `{"message": ..}`, or string) error.
fn error_reason(error: &Value) -> Option<String> {
    match error {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a
            .get(1)
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(error.to_string())),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(error.to_string())),
        other => Some(other.to_string()),
    }
}

/// Longest extranonce2 accepted from a server.
const MAX_EXTRANONCE2_SIZE: u64 = 32;

fn parse_extranonce_pair(en1: &Value, size: &Value) -> Result<(Vec<u8>, usize)> {
    let en1 = hex::decode(
        en1.as_str()
            .ok_or_else(|| anyhow!("extranonce1 is not a string"))?,
    )
    .context("extranonce1 hex")?;
    let size = size
        .as_u64()
        .ok_or_else(|| anyhow!("extranonce2_size is not an integer"))?;
    if size > MAX_EXTRANONCE2_SIZE {
        bail!("extranonce2_size {size} is too large");
    }
    Ok((en1, size as usize))
}

fn parse_subscribe_result(result: &Value) -> Result<(Vec<u8>, usize)> {
    let r = result
        .as_array()
        .ok_or_else(|| anyhow!("mining.subscribe result is not an array: {result}"))?;
    if r.len() < 3 {
        bail!("mining.subscribe result is too short: {result}");
    }
    parse_extranonce_pair(&r[1], &r[2]).context("mining.subscribe result")
}

fn parse_extranonce(params: &Value) -> Result<(Vec<u8>, usize)> {
    let p = params
        .as_array()
        .ok_or_else(|| anyhow!("params are not an array"))?;
    if p.len() < 2 {
        bail!("expected [extranonce1, extranonce2_size]");
    }
    parse_extranonce_pair(&p[0], &p[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_whatever_the_server_echoes() {
        assert_eq!(id_key(&json!(1)), id_key(&json!("1")));
        assert_eq!(id_key(&Value::Null), None);
    }

    #[test]
    fn errors_and_results() {
        assert_eq!(
            error_reason(&json!([23, "Low difficulty share", null])).as_deref(),
            Some("Low difficulty share")
        );
        assert_eq!(
            error_reason(&json!({"code": 21, "message": "Job not found"})).as_deref(),
            Some("Job not found")
        );
        assert_eq!(error_reason(&Value::Null), None);
        let (en1, size) = parse_subscribe_result(&json!([
            [["mining.set_difficulty", "a"], ["mining.notify", "b"]],
            "08000002",
            4
        ]))
        .unwrap();
        assert_eq!((en1, size), (vec![8, 0, 0, 2], 4));
        assert!(parse_subscribe_result(&json!([[], "zz", 4])).is_err());
        assert!(parse_subscribe_result(&json!([[], "00", 400])).is_err());
        assert!(parse_subscribe_result(&json!(true)).is_err());
        assert_eq!(
            parse_extranonce(&json!(["ab", 2])).unwrap(),
            (vec![0xab], 2)
        );
        assert_eq!(number_param(&json!(1e-9)), Some(1e-9));
        assert_eq!(number_param(&json!("0.5")), Some(0.5));
    }

    #[tokio::test]
    async fn line_reader_limits_and_splits() {
        let data: &[u8] = b"{\"a\":1}\r\n\n{\"b\":2}\npartial";
        let mut r = LineReader::new(data, 100);
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("{\"b\":2}"));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("partial"));
        assert_eq!(r.next_line().await.unwrap(), None);
        let long = vec![b'x'; 300];
        let mut r = LineReader::new(&long[..], 100);
        assert!(r.next_line().await.is_err());
    }
}
