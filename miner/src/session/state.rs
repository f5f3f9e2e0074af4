//! A session's state, its handshake, and the routing of each server line.

use super::parse::id_key;
use crate::dialect::{Dialect, HandshakeStep};
use crate::hasher::WorkSlot;
use crate::work::{parse_u32_hex, Job};
use crate::{MinerConfig, MinerEvent, Stats, HANDSHAKE_REPLY_TIMEOUT};
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::UnboundedSender;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an outstanding request was.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    Configure { requested_mask: u32 },
    Subscribe,
    Authorize,
    Submit { sent: Instant },
    Other(&'static str),
}

pub(super) struct Session<'a> {
    pub(super) config: &'a MinerConfig,
    pub(super) dialect: Dialect,
    writer: OwnedWriteHalf,
    events: UnboundedSender<MinerEvent>,
    pub(super) stats: Arc<Stats>,
    pub(super) slot: Arc<WorkSlot>,

    pub(super) next_id: u64,
    pub(super) pending: HashMap<String, Pending>,
    handshake: VecDeque<HandshakeStep>,
    waiting_for: Option<String>,
    pub(super) wait_deadline: Option<Instant>,

    pub(super) extranonce1: Option<Vec<u8>>,
    pub(super) extranonce2_size: usize,
    /// From `mining.set_extranonce`; applies from the next notify.
    pub(super) next_extranonce: Option<(Vec<u8>, usize)>,
    pub(super) version_mask: Option<u32>,
    /// From `mining.set_difficulty`; applies from the next notify.
    pub(super) next_difficulty: f64,
    pub(super) job: Option<Arc<Job>>,
    pub(super) job_difficulty: f64,
    pub(super) generation: u64,
    pub(super) last_clean_generation: u64,
    pub(super) last_prevhash: Option<bitcoin::BlockHash>,
    /// `client.reconnect`: where to, and after how long.
    pub(super) reconnect: Option<(std::net::SocketAddr, std::time::Duration)>,
}

impl<'a> Session<'a> {
    pub(super) fn new(
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
            reconnect: None,
        }
    }

    pub(super) fn emit(&self, event: MinerEvent) {
        let _ = self.events.send(event);
    }

    /// Counts a message the session ignores.
    pub(super) fn count_unknown(&self) {
        self.stats.unknown_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) async fn send_line(&mut self, line: String) -> Result<()> {
        tracing::trace!(user = %self.config.user, "> {line}");
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&bytes))
            .await
            .map_err(|_| anyhow!("write: timed out"))?
            .context("write")
    }

    /// Sends handshake requests until one whose reply the firmware waits for.
    pub(super) async fn advance_handshake(&mut self) -> Result<()> {
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

    pub(super) async fn handshake_timeout(&mut self) -> Result<()> {
        tracing::warn!(user = %self.config.user, "no reply to a handshake request; carrying on");
        self.waiting_for = None;
        self.wait_deadline = None;
        self.advance_handshake().await
    }

    pub(super) async fn handle_line(&mut self, line: &str) -> Result<()> {
        tracing::trace!(user = %self.config.user, "< {line}");
        let msg: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                tracing::debug!(user = %self.config.user, "ignoring unparsable line: {line:.200}");
                self.count_unknown();
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
            self.count_unknown();
            return Ok(());
        };
        let result = msg.get("result").cloned().unwrap_or(Value::Null);
        let error = msg.get("error").cloned().unwrap_or(Value::Null);
        self.handle_reply(pending, &result, &error)?;
        if key.is_some() && key == self.waiting_for {
            self.waiting_for = None;
            self.wait_deadline = None;
            self.advance_handshake().await?;
        }
        Ok(())
    }
}
