//! One connection's state and its loop: socket reads and writes, pace changes, due shares.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::protocol::FIRST_SUBMIT_ID;
use super::work::Work;
use super::{Pace, Shared};

/// Longest line taken from the server.
const MAX_LINE: usize = 256 * 1024;
/// Read buffer kept per connection.
const READ_CHUNK: usize = 4096;
/// How long a write to the server may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Conn {
    pub(super) idx: u32,
    stream: TcpStream,
    pub(super) shared: Arc<Shared>,
    pub(super) started: Instant,
    buf: Vec<u8>,
    /// Lines waiting to be written, flushed once per loop turn.
    pub(super) out: Vec<u8>,
    pub(super) subscribed: bool,
    pub(super) authorized: bool,
    pub(super) got_job: bool,
    pub(super) mining: bool,
    pub(super) extranonce1: Vec<u8>,
    pub(super) extranonce2_size: usize,
    pub(super) version_mask: Option<u32>,
    pub(super) next_difficulty: f64,
    pub(super) last_prev: Option<String>,
    pub(super) work: Option<Work>,
    pub(super) pending: VecDeque<(u64, Instant)>,
    pub(super) next_id: u64,
    pub(super) worker: String,
    pub(super) pace: Pace,
    pub(super) next_due: Option<Instant>,
}

impl Conn {
    pub(super) fn new(idx: u32, stream: TcpStream, shared: Arc<Shared>, started: Instant) -> Conn {
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

    pub(super) async fn run(&mut self) -> Result<(), String> {
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

    /// Handles every complete line in the read buffer.
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
