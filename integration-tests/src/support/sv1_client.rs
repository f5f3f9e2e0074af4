//! A hand-driven Stratum V1 connection, for the tests of clients that misbehave: it connects
//! from a chosen loopback address, writes lines, and reads lines and bytes back, every wait
//! bounded. Shares for it are built here too, on the jobs it was sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::{BlockHash, CompactTarget, Target};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

/// How long a read waits for a line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `127.0.0.n`: loopback is all of 127.0.0.0/8, so one test can be several sources.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// One connection to a Stratum V1 server.
pub struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Bytes received so far.
    pub bytes_in: usize,
    /// When connecting began: the server accepts the connection after it.
    pub started: Instant,
}

/// What came back while a batch of lines was written.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Every line read, in order.
    pub lines: Vec<Value>,
    /// Their bytes, newlines included.
    pub bytes: usize,
    /// When the server closed the connection, if it did.
    pub closed: Option<Instant>,
}

impl RawClient {
    /// Connects to `server` from 127.0.0.1.
    ///
    /// # Errors
    /// The connection fails.
    pub async fn connect(server: SocketAddr) -> anyhow::Result<RawClient> {
        RawClient::connect_from(server, loopback(1)).await
    }

    /// Connects to `server` from `from` (any port).
    ///
    /// # Errors
    /// The address cannot be bound or the connection fails.
    pub async fn connect_from(server: SocketAddr, from: IpAddr) -> anyhow::Result<RawClient> {
        let started = Instant::now();
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::new(from, 0))
            .with_context(|| format!("binding {from}"))?;
        let (r, w) = socket.connect(server).await?.into_split();
        Ok(RawClient {
            reader: BufReader::new(r),
            writer: w,
            bytes_in: 0,
            started,
        })
    }

    /// Writes `line` and a newline.
    ///
    /// # Errors
    /// The write fails.
    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await?;
        Ok(())
    }

    /// Writes a request `{"id":id,"method":method,"params":params}`.
    ///
    /// # Errors
    /// The write fails.
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> anyhow::Result<()> {
        let line = json!({"id": id, "method": method, "params": params}).to_string();
        self.send(&line).await
    }

    /// The next line as JSON; `None` once the server has closed the connection.
    ///
    /// # Errors
    /// Nothing within [`READ_TIMEOUT`], or a line that is not JSON.
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        let mut line = String::new();
        let read = tokio::time::timeout(READ_TIMEOUT, self.reader.read_line(&mut line)).await;
        match read {
            Err(_) => anyhow::bail!("no line from the server within {READ_TIMEOUT:?}"),
            Ok(Ok(0) | Err(_)) => Ok(None),
            Ok(Ok(n)) => {
                self.bytes_in += n;
                Ok(Some(
                    serde_json::from_str(&line).with_context(|| line.clone())?,
                ))
            }
        }
    }

    /// The next message `pred` accepts; `None` if the server closes the connection first.
    ///
    /// # Errors
    /// As [`RawClient::next`].
    pub async fn next_until(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Option<Value>> {
        while let Some(v) = self.next().await? {
            if pred(&v) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The reply to request `id` (notifications before it are skipped); `None` if the server
    /// closes the connection first.
    ///
    /// # Errors
    /// As [`RawClient::next`].
    pub async fn reply(&mut self, id: u64) -> anyhow::Result<Option<Value>> {
        self.next_until(|v| v["id"] == id).await
    }

    /// Sends request `id` and returns its reply (`None`: the server closed the connection).
    ///
    /// # Errors
    /// As [`RawClient::next`].
    pub async fn call(
        &mut self,
        id: u64,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Option<Value>> {
        // A server that closed at once may reset the connection under the write: that is
        // the answer, not an error.
        if self.request(id, method, params).await.is_err() {
            return Ok(None);
        }
        self.reply(id).await
    }

    /// Reads and drops whatever comes until the server closes the connection; the time from
    /// connecting to the close, or `None` if it is still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let deadline = tokio::time::Instant::now() + within;
        drain(&mut self.reader, &mut self.bytes_in, deadline)
            .await
            .map(|t| t.saturating_duration_since(self.started))
    }

    /// Writes a line made by `line(n)` for n = 1, 2, … every `every` while reading and dropping
    /// what comes back, until the server closes the connection (the time from connecting) or
    /// `within` passes (`None`).
    pub async fn talk_until_closed(
        &mut self,
        mut line: impl FnMut(u64) -> String,
        every: Duration,
        within: Duration,
    ) -> Option<Duration> {
        let deadline = tokio::time::Instant::now() + within;
        let RawClient {
            reader,
            writer,
            bytes_in,
            started,
        } = self;
        let talk = async {
            for n in 1.. {
                // Writes fail once the server is gone; the reader sees that too.
                let _ = writer.write_all(format!("{}\n", line(n)).as_bytes()).await;
                tokio::time::sleep(every).await;
            }
        };
        tokio::select! {
            closed = drain(reader, bytes_in, deadline) => {
                closed.map(|t| t.saturating_duration_since(*started))
            }
            () = talk => None,
        }
    }

    /// Writes `bytes` while reading lines back, until `done` accepts a line, the server closes
    /// the connection, or `within` passes.
    ///
    /// # Errors
    /// A line that is not JSON.
    pub async fn exchange(
        &mut self,
        bytes: &[u8],
        within: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Exchange> {
        let deadline = tokio::time::Instant::now() + within;
        let RawClient {
            reader,
            writer,
            bytes_in,
            ..
        } = self;
        // The write fails once the server cuts the connection off: what it sent until then
        // is what counts.
        let write = tokio::time::timeout_at(deadline, writer.write_all(bytes));
        let read = async {
            let mut got = Exchange::default();
            let mut line = String::new();
            loop {
                line.clear();
                match tokio::time::timeout_at(deadline, reader.read_line(&mut line)).await {
                    Err(_) => return Ok(got),
                    Ok(Ok(0) | Err(_)) => {
                        got.closed = Some(Instant::now());
                        return Ok(got);
                    }
                    Ok(Ok(n)) => {
                        got.bytes += n;
                        let v: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
                        let last = done(&v);
                        got.lines.push(v);
                        if last {
                            return Ok(got);
                        }
                    }
                }
            }
        };
        let (_, got) = tokio::join!(write, read);
        let got: anyhow::Result<Exchange> = got;
        if let Ok(g) = &got {
            *bytes_in += g.bytes;
        }
        got
    }
}

/// Reads and drops bytes until the connection closes (when) or `deadline` passes (`None`).
async fn drain(
    reader: &mut BufReader<OwnedReadHalf>,
    bytes_in: &mut usize,
    deadline: tokio::time::Instant,
) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(n)) => *bytes_in += n,
        }
    }
}

/// What a connection mines with, once subscribed and authorized.
#[derive(Debug, Clone)]
pub struct Mining {
    /// Its extranonce1.
    pub extranonce1: Vec<u8>,
    /// The extranonce2 size it rolls.
    pub extranonce2_size: usize,
    /// The difficulty set before its first job.
    pub difficulty: f64,
    /// Its first job.
    pub job: sv1_miner::Job,
}

impl RawClient {
    /// Subscribes (id 1), suggests `difficulty` (id 2) when given, authorizes as `worker`
    /// (id 3), and reads up to the first job.
    ///
    /// # Errors
    /// A reply missing or refused, or the server closing the connection.
    pub async fn start_mining(
        &mut self,
        worker: &str,
        difficulty: Option<f64>,
    ) -> anyhow::Result<Mining> {
        let sub = self
            .call(1, "mining.subscribe", json!(["hostile-test/1.0"]))
            .await?
            .context("closed before the subscribe reply")?;
        let extranonce1 = hex::decode(sub["result"][1].as_str().context("no extranonce1")?)?;
        let extranonce2_size = usize::try_from(sub["result"][2].as_u64().context("no size")?)?;
        if let Some(d) = difficulty {
            self.request(2, "mining.suggest_difficulty", json!([d]))
                .await?;
        }
        self.request(3, "mining.authorize", json!([worker, "x"]))
            .await?;
        let set = self
            .next_until(|v| v["method"] == "mining.set_difficulty")
            .await?
            .context("closed before set_difficulty")?;
        let notify = self
            .next_until(|v| v["method"] == "mining.notify")
            .await?
            .context("closed before the first job")?;
        Ok(Mining {
            extranonce1,
            extranonce2_size,
            difficulty: set["params"][0].as_f64().context("no difficulty")?,
            job: sv1_miner::Job::from_notify_params(&notify["params"])?,
        })
    }
}

/// One share: the fields a submit carries and the header hash they make.
#[derive(Debug, Clone)]
pub struct Share {
    /// The job id it is submitted on.
    pub job_id: String,
    /// Its extranonce2.
    pub extranonce2: Vec<u8>,
    /// Its header time.
    pub ntime: u32,
    /// Its nonce.
    pub nonce: u32,
    /// Its header hash.
    pub hash: BlockHash,
}

impl Share {
    /// The `mining.submit` line with request id `id`.
    pub fn submit(&self, id: u64, worker: &str) -> String {
        json!({
            "id": id,
            "method": "mining.submit",
            "params": [worker, self.job_id, hex::encode(&self.extranonce2),
                format!("{:08x}", self.ntime), format!("{:08x}", self.nonce)],
        })
        .to_string()
    }

    /// The same share submitted on another job id (the same job sent again under it).
    pub fn on(&self, job_id: &str) -> Share {
        Share {
            job_id: job_id.to_string(),
            ..self.clone()
        }
    }
}

/// The job's network target: on regtest nearly every share is also a block.
pub fn network_target(job: &sv1_miner::Job) -> Target {
    Target::from_compact(CompactTarget::from_consensus(job.nbits))
}

/// The first `n` shares on `m`'s job, nonces counting up from `from`, whose hash `keep` accepts
/// (extranonce2 zero, the job's version and time).
pub fn find_shares(
    m: &Mining,
    from: u32,
    n: usize,
    mut keep: impl FnMut(&BlockHash) -> bool,
) -> Vec<Share> {
    let en2 = vec![0u8; m.extranonce2_size];
    let job = &m.job;
    (from..)
        .map(|nonce| {
            let header =
                sv1_miner::build_header(job, &m.extranonce1, &en2, job.version, job.ntime, nonce);
            Share {
                job_id: job.job_id.clone(),
                extranonce2: en2.clone(),
                ntime: job.ntime,
                nonce,
                hash: header.block_hash(),
            }
        })
        .filter(|s| keep(&s.hash))
        .take(n)
        .collect()
}
