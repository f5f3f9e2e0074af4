//! One simulated miner: one task and one socket, no thread and no hashing loop of its own.
//!
//! `sv1-miner` spawns an OS thread per miner for hashing and builds a `serde_json::Value` tree
//! per line; at 15,000 connections on two cores that costs more than the server under test.
//! This client borrows from each line instead, keeps a 4 KiB read buffer, and only hashes in
//! `shares` mode, when it grinds a share the moment one is due: at the very low share
//! difficulties a load run uses (about 1e-9: some 4 header hashes a share) that is cheaper than
//! keeping a precomputed stock fresh across jobs.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash as _;
use bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::histogram::Histogram;

/// Longest line taken from the server.
const MAX_LINE: usize = 256 * 1024;
/// Read buffer kept per connection.
const READ_CHUNK: usize = 4096;
/// How long a write to the server may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Hashes tried for one share before giving up (the share difficulty is too high for a load tool).
const MAX_GRIND: u32 = 1 << 22;
/// First id used for submits; lower ones are the handshake.
const FIRST_SUBMIT_ID: u64 = 100;

/// What every connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect, handshake, follow jobs.
    Idle,
    /// As idle, and submit valid shares when the pacer says so.
    Shares,
}

/// Settings shared by every connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    pub mode: Mode,
    /// `mining.suggest_difficulty`, sent before `mining.authorize`.
    pub suggest_difficulty: Option<f64>,
    /// Ask for BIP310 version rolling (and submit with the 6th parameter when granted).
    pub version_rolling: bool,
    pub connect_timeout: Duration,
    /// Submits a connection may have unanswered; a due share beyond it is counted, not sent.
    pub window: usize,
    /// Submit shares that happen to meet the network target too (they are blocks, and move
    /// the tip); by default they are skipped so a run measures shares only.
    pub submit_blocks: bool,
}

/// When shares are due. Changed by the driver; every connection follows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub active: bool,
    /// Unlimited: keep `window` submits in flight on every connection.
    pub closed_loop: bool,
    /// Time between bursts on one connection.
    pub period: Duration,
    /// Shares per burst.
    pub batch: u32,
    pub start: Instant,
}

impl Pace {
    pub fn idle() -> Pace {
        Pace {
            active: false,
            closed_loop: false,
            period: Duration::from_secs(3600),
            batch: 0,
            start: Instant::now(),
        }
    }

    /// `rate` shares per second spread over `connections`; `rate` 0 is closed loop.
    pub fn shares(rate: f64, connections: usize) -> Pace {
        if rate <= 0.0 {
            return Pace {
                active: true,
                closed_loop: true,
                period: Duration::from_secs(3600),
                batch: 0,
                start: Instant::now(),
            };
        }
        let per_conn = rate / connections.max(1) as f64;
        // Timers tick in milliseconds: below 5 ms a period, send bursts instead.
        let batch = (per_conn * 0.005).ceil().max(1.0);
        Pace {
            active: true,
            closed_loop: false,
            period: Duration::from_secs_f64(batch / per_conn),
            batch: batch as u32,
            start: Instant::now(),
        }
    }
}

/// A connection saw a job on a new previous block hash.
#[derive(Debug, Clone, Copy)]
pub struct TipSeen {
    pub conn: u32,
    pub prev_hash: BlockHash,
    pub at: Instant,
    pub clean: bool,
}

/// Counters of every connection together.
#[derive(Debug, Default)]
pub struct Stats {
    pub attempted: AtomicU64,
    pub connected_total: AtomicU64,
    pub live: AtomicU64,
    pub failed: AtomicU64,
    pub failures: Mutex<BTreeMap<String, u64>>,
    /// Connections the server ended after they were mining.
    pub dropped: AtomicU64,
    pub drops: Mutex<BTreeMap<String, u64>>,
    pub notifies: AtomicU64,
    pub clean_notifies: AtomicU64,
    pub set_difficulty: AtomicU64,
    /// The last `mining.set_difficulty` value, as `f64` bits (0: none yet).
    pub last_difficulty: AtomicU64,
    pub other_messages: AtomicU64,
    /// Lines that are not JSON-RPC, or replies the tool cannot place.
    pub protocol_errors: AtomicU64,
    pub submitted: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub rejects: Mutex<BTreeMap<String, u64>>,
    /// Due shares not sent because the connection's window was full.
    pub window_full: AtomicU64,
    pub blocks_skipped: AtomicU64,
    pub grind_failed: AtomicU64,
    pub hashes: AtomicU64,
    /// TCP connect, then connect → first job.
    pub tcp_connect: Histogram,
    pub handshake: Histogram,
    pub submit_latency: Histogram,
}

impl Stats {
    fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

/// Shared by every connection and the driver.
#[derive(Debug)]
pub struct Shared {
    pub config: ClientConfig,
    pub stats: Stats,
    pub tips: Mutex<Vec<TipSeen>>,
    pub pace: watch::Receiver<Pace>,
    pub shutdown: CancellationToken,
}

/// Runs one miner until shutdown or until the server ends the connection.
pub async fn run(idx: u32, bind: Option<IpAddr>, shared: Arc<Shared>) {
    let stats = &shared.stats;
    stats.attempted.fetch_add(1, Relaxed);
    let t0 = Instant::now();
    let connect = async {
        let server = shared.config.server;
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = bind {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(server).await
    };
    let stream = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        r = tokio::time::timeout(shared.config.connect_timeout, connect) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return fail(stats, format!("connect: {}", e.kind())),
            Err(_) => return fail(stats, "connect: timed out".into()),
        },
    };
    stats.tcp_connect.record(t0.elapsed());
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(idx, stream, shared.clone(), t0);
    let result = conn.run().await;
    if conn.mining {
        stats.live.fetch_sub(1, Relaxed);
        if let Err(reason) = result {
            stats.dropped.fetch_add(1, Relaxed);
            Stats::bump(&stats.drops, reason);
        }
    } else {
        let reason = match result {
            Err(r) => r,
            Ok(()) => return, // shut down before the handshake finished
        };
        fail(stats, format!("handshake: {reason}"));
    }
}

fn fail(stats: &Stats, reason: String) {
    stats.failed.fetch_add(1, Relaxed);
    Stats::bump(&stats.failures, reason);
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// `mining.notify` params, borrowed.
#[derive(Deserialize)]
struct NotifyParams<'a>(
    #[serde(borrow)] &'a RawValue,
    &'a str,
    &'a str,
    &'a str,
    #[serde(borrow)] Vec<&'a str>,
    &'a str,
    &'a str,
    &'a str,
    #[serde(default)] Option<bool>,
);

/// The job a shares-mode connection grinds on.
struct Work {
    job_id: String,
    prev_hash: BlockHash,
    coinbase_prefix: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<[u8; 32]>,
    version: u32,
    bits: CompactTarget,
    ntime: u32,
    target: Target,
    network_target: Target,
    extranonce2: u64,
    merkle_root: TxMerkleNode,
    nonce: u32,
}

impl Work {
    fn roll_extranonce2(&mut self, en2_size: usize) {
        let en2 = self.extranonce2.to_be_bytes();
        let mut coinbase = self.coinbase_prefix.clone();
        coinbase.extend_from_slice(&en2[8 - en2_size.min(8)..]);
        coinbase.extend_from_slice(&self.coinb2);
        self.merkle_root = sv1_miner::merkle_root(&coinbase, &self.branch);
        self.nonce = 0;
    }
}

struct Conn {
    idx: u32,
    stream: TcpStream,
    shared: Arc<Shared>,
    started: Instant,
    buf: Vec<u8>,
    out: Vec<u8>,
    subscribed: bool,
    authorized: bool,
    got_job: bool,
    mining: bool,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    version_mask: Option<u32>,
    next_difficulty: f64,
    last_prev: Option<String>,
    work: Option<Work>,
    pending: VecDeque<(u64, Instant)>,
    next_id: u64,
    worker: String,
    pace: Pace,
    next_due: Option<Instant>,
}

impl Conn {
    fn new(idx: u32, stream: TcpStream, shared: Arc<Shared>, started: Instant) -> Conn {
        let pace = *shared.pace.borrow();
        Conn {
            idx,
            stream,
            shared,
            started,
            buf: Vec::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(512),
            subscribed: false,
            authorized: false,
            got_job: false,
            mining: false,
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            version_mask: None,
            next_difficulty: 1.0,
            last_prev: None,
            work: None,
            pending: VecDeque::new(),
            next_id: FIRST_SUBMIT_ID,
            worker: format!("load.{idx}"),
            pace,
            next_due: None,
        }
    }

    fn handshake(&mut self) {
        let c = &self.shared.config;
        if c.version_rolling {
            self.out.extend_from_slice(br#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2}]}"#);
            self.out.push(b'\n');
        }
        self.out
            .extend_from_slice(br#"{"id":2,"method":"mining.subscribe","params":["jd-load/0.1"]}"#);
        self.out.push(b'\n');
        if let Some(d) = c.suggest_difficulty {
            let _ = writeln!(
                self.out,
                r#"{{"id":4,"method":"mining.suggest_difficulty","params":[{}]}}"#,
                sv1_miner::json_number(d)
            );
        }
        let _ = writeln!(
            self.out,
            r#"{{"id":3,"method":"mining.authorize","params":["{}","x"]}}"#,
            self.worker
        );
    }

    async fn run(&mut self) -> Result<(), String> {
        let mut pace_rx = self.shared.pace.clone();
        let shutdown = self.shared.shutdown.clone();
        self.handshake();
        self.flush().await?;
        loop {
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            let due = self.next_due.filter(|_| self.mining && self.work.is_some());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                changed = pace_rx.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.pace = *pace_rx.borrow_and_update();
                    self.schedule();
                }
                read = self.stream.read_buf(&mut self.buf) => {
                    let n = read.map_err(|e| format!("read: {}", e.kind()))?;
                    if n == 0 {
                        return Err("closed by the server".into());
                    }
                    let now = Instant::now();
                    self.process(now)?;
                }
                _ = sleep_until(due), if due.is_some() => self.on_due(),
            }
            if self.pace.active && self.pace.closed_loop && self.mining {
                while self.pending.len() < self.shared.config.window && self.submit_one() {}
            }
            if !self.out.is_empty() {
                self.flush().await?;
            }
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&self.out)).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write: {}", e.kind())),
            Err(_) => Err("write: timed out".into()),
        }
    }

    fn schedule(&mut self) {
        if !self.pace.active || self.pace.closed_loop || self.shared.config.mode != Mode::Shares {
            self.next_due = None;
            return;
        }
        // Spread connections evenly over one period.
        let phase = self.pace.period.mul_f64(f64::from(self.idx % 997) / 997.0);
        self.next_due = Some(self.pace.start.max(Instant::now()) + phase);
    }

    fn on_due(&mut self) {
        let Some(due) = self.next_due else { return };
        let now = Instant::now();
        // Far behind (the tool or the server is saturated): skip ahead instead of bursting.
        let mut next = due + self.pace.period;
        if now > next + Duration::from_secs(1) {
            next = now + self.pace.period;
        }
        self.next_due = Some(next);
        for _ in 0..self.pace.batch {
            if self.pending.len() >= self.shared.config.window {
                self.shared.stats.window_full.fetch_add(1, Relaxed);
                continue;
            }
            if !self.submit_one() {
                break;
            }
        }
    }

    fn process(&mut self, now: Instant) -> Result<(), String> {
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = std::mem::take(&mut self.buf);
            let result = self.handle_line(trim(&line[start..end]), now);
            self.buf = line;
            result?;
            start = end + 1;
        }
        if start > 0 {
            self.buf.drain(..start);
        }
        if self.buf.len() > MAX_LINE {
            return Err("line too long".into());
        }
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::with_capacity(READ_CHUNK);
        }
        Ok(())
    }

    fn handle_line(&mut self, line: &[u8], now: Instant) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        let stats = &self.shared.stats;
        let Ok(msg) = serde_json::from_slice::<Msg<'_>>(line) else {
            stats.protocol_errors.fetch_add(1, Relaxed);
            return Ok(());
        };
        if let Some(method) = msg.method {
            let params = msg.params.map_or("[]", RawValue::get);
            match method {
                "mining.notify" => self.on_notify(params, now)?,
                "mining.set_difficulty" => {
                    stats.set_difficulty.fetch_add(1, Relaxed);
                    match serde_json::from_str::<(f64,)>(params) {
                        Ok((d,)) if d > 0.0 => {
                            self.next_difficulty = d;
                            stats.last_difficulty.store(d.to_bits(), Relaxed);
                        }
                        _ => {
                            stats.protocol_errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                _ => {
                    stats.other_messages.fetch_add(1, Relaxed);
                }
            }
            return Ok(());
        }
        let id = msg
            .id
            .map(RawValue::get)
            .and_then(|s| s.trim_matches('"').parse::<u64>().ok());
        let ok = msg.error.is_none() && msg.result.is_some_and(|r| r.get() != "false");
        match id {
            Some(1) => {
                if ok {
                    #[derive(Deserialize)]
                    struct Configured<'a> {
                        #[serde(rename = "version-rolling", default)]
                        rolling: bool,
                        #[serde(rename = "version-rolling.mask", borrow)]
                        mask: Option<&'a str>,
                    }
                    if let Some(c) = msg
                        .result
                        .and_then(|r| serde_json::from_str::<Configured<'_>>(r.get()).ok())
                    {
                        if c.rolling {
                            self.version_mask = c
                                .mask
                                .and_then(|m| u32::from_str_radix(m, 16).ok())
                                .or(Some(0x1fff_e000));
                        }
                    }
                }
            }
            Some(2) => {
                if !ok {
                    return Err("mining.subscribe refused".into());
                }
                let result = msg.result.map_or("null", RawValue::get);
                let (_, en1, size): (&RawValue, &str, usize) =
                    serde_json::from_str(result).map_err(|e| format!("subscribe reply: {e}"))?;
                self.extranonce1 =
                    hex::decode(en1).map_err(|e| format!("subscribe extranonce1: {e}"))?;
                self.extranonce2_size = size;
                self.subscribed = true;
            }
            Some(3) => {
                if !ok {
                    return Err("mining.authorize refused".into());
                }
                self.authorized = true;
            }
            Some(n) if n >= FIRST_SUBMIT_ID => self.on_submit_reply(n, ok, msg.error, now),
            Some(_) => {}
            None => {
                stats.protocol_errors.fetch_add(1, Relaxed);
            }
        }
        self.check_mining(now);
        Ok(())
    }

    fn check_mining(&mut self, now: Instant) {
        if self.mining || !(self.subscribed && self.authorized && self.got_job) {
            return;
        }
        self.mining = true;
        let stats = &self.shared.stats;
        stats.handshake.record(now - self.started);
        stats.connected_total.fetch_add(1, Relaxed);
        stats.live.fetch_add(1, Relaxed);
        self.schedule();
    }

    fn on_submit_reply(&mut self, id: u64, ok: bool, error: Option<&RawValue>, now: Instant) {
        let stats = &self.shared.stats;
        let Some(pos) = self.pending.iter().position(|(i, _)| *i == id) else {
            stats.protocol_errors.fetch_add(1, Relaxed);
            return;
        };
        let (_, sent) = self.pending.remove(pos).expect("found above");
        stats
            .submit_latency
            .record(now.saturating_duration_since(sent));
        if ok {
            stats.accepted.fetch_add(1, Relaxed);
        } else {
            stats.rejected.fetch_add(1, Relaxed);
            let reason = error
                .and_then(|e| serde_json::from_str::<serde_json::Value>(e.get()).ok())
                .map(|e| match &e {
                    serde_json::Value::Array(a) => a
                        .get(1)
                        .and_then(|m| m.as_str())
                        .map_or_else(|| e.to_string(), str::to_owned),
                    serde_json::Value::Object(o) => o
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map_or_else(|| e.to_string(), str::to_owned),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "result false".into());
            Stats::bump(&stats.rejects, reason);
        }
    }

    fn on_notify(&mut self, params: &str, now: Instant) -> Result<(), String> {
        let stats = &self.shared.stats;
        let p: NotifyParams<'_> = match serde_json::from_str(params) {
            Ok(p) => p,
            Err(_) => {
                stats.protocol_errors.fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        stats.notifies.fetch_add(1, Relaxed);
        let clean = p.8.unwrap_or(false);
        if clean {
            stats.clean_notifies.fetch_add(1, Relaxed);
        }
        let new_prev = self.last_prev.as_deref() != Some(p.1);
        if new_prev {
            if self.mining {
                if let Ok(prev_hash) = sv1_miner::decode_prevhash(p.1) {
                    self.shared
                        .tips
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(TipSeen {
                            conn: self.idx,
                            prev_hash,
                            at: now,
                            clean,
                        });
                }
            }
            self.last_prev = Some(p.1.to_owned());
        }
        self.got_job = true;
        if self.shared.config.mode == Mode::Shares && self.subscribed {
            self.work = Some(self.make_work(&p)?);
        }
        self.check_mining(now);
        Ok(())
    }

    fn make_work(&self, p: &NotifyParams<'_>) -> Result<Work, String> {
        let bad = |what: &str| format!("mining.notify: bad {what}");
        let hex32 = |s: &str| -> Result<[u8; 32], String> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(s, &mut out).map_err(|_| bad("merkle branch"))?;
            Ok(out)
        };
        let mut coinbase_prefix = hex::decode(p.2).map_err(|_| bad("coinb1"))?;
        coinbase_prefix.extend_from_slice(&self.extranonce1);
        let u32hex = |s: &str, what| u32::from_str_radix(s, 16).map_err(|_| bad(what));
        let bits = CompactTarget::from_consensus(u32hex(p.6, "nbits")?);
        let mut work = Work {
            job_id: p.0.get().trim_matches('"').to_owned(),
            prev_hash: sv1_miner::decode_prevhash(p.1).map_err(|_| bad("prevhash"))?,
            coinbase_prefix,
            coinb2: hex::decode(p.3).map_err(|_| bad("coinb2"))?,
            branch: p.4.iter().map(|b| hex32(b)).collect::<Result<_, _>>()?,
            version: u32hex(p.5, "version")?,
            bits,
            ntime: u32hex(p.7, "ntime")?,
            target: sv1_miner::share_target(self.next_difficulty),
            network_target: Target::from_compact(bits),
            // Each connection starts its extranonce2 where no other job of its has been.
            extranonce2: self.work.as_ref().map_or(0, |w| w.extranonce2 + 1),
            merkle_root: TxMerkleNode::from_byte_array([0; 32]),
            nonce: 0,
        };
        work.roll_extranonce2(self.extranonce2_size);
        Ok(work)
    }

    /// Grinds and queues one valid share; `false` when there is no job or none was found.
    fn submit_one(&mut self) -> bool {
        let stats = &self.shared.stats;
        let mask = self.version_mask.unwrap_or(0);
        // One rolled bit, as version-rolling firmware sends: exercises 6-parameter submits.
        let version_bits = (self.version_mask.is_some()).then_some(0x0000_2000 & mask);
        let en2_size = self.extranonce2_size;
        let Some(w) = self.work.as_mut() else {
            return false;
        };
        let version = match version_bits {
            Some(b) => (w.version & !mask) | b,
            None => w.version,
        };
        let mut tries = 0u32;
        let nonce = loop {
            if tries >= MAX_GRIND {
                stats.hashes.fetch_add(u64::from(tries), Relaxed);
                stats.grind_failed.fetch_add(1, Relaxed);
                return false;
            }
            tries += 1;
            if w.nonce == u32::MAX {
                w.extranonce2 += 1;
                w.roll_extranonce2(en2_size);
            }
            let nonce = w.nonce;
            w.nonce += 1;
            let header = Header {
                version: Version::from_consensus(version as i32),
                prev_blockhash: w.prev_hash,
                merkle_root: w.merkle_root,
                time: w.ntime,
                bits: w.bits,
                nonce,
            };
            let hash = header.block_hash();
            if !w.target.is_met_by(hash) {
                continue;
            }
            if !self.shared.config.submit_blocks && w.network_target.is_met_by(hash) {
                stats.blocks_skipped.fetch_add(1, Relaxed);
                continue;
            }
            break nonce;
        };
        stats.hashes.fetch_add(u64::from(tries), Relaxed);
        let id = self.next_id;
        self.next_id += 1;
        let en2 = w.extranonce2.to_be_bytes();
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            r#"{{"id":{id},"method":"mining.submit","params":["{}","{}","{}","{:08x}","{:08x}""#,
            self.worker,
            w.job_id,
            hex::encode(&en2[8 - en2_size.min(8)..]),
            w.ntime,
            nonce
        );
        if let Some(b) = version_bits {
            let _ = write!(line, r#","{b:08x}""#);
        }
        line.push_str("]}\n");
        self.out.extend_from_slice(line.as_bytes());
        self.pending.push_back((id, Instant::now()));
        stats.submitted.fetch_add(1, Relaxed);
        true
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\r' | b' '] = l {
        l = rest;
    }
    l
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}
