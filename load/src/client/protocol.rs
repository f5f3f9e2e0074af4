//! The handshake a connection sends, and what it makes of each line from the server. Lines
//! are parsed borrowed ([`RawValue`]), never into a `serde_json::Value` tree.

use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::PoisonError;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::conn::Conn;
use super::{Mode, Stats, TipSeen};

/// First id used for submits; lower ones are the handshake.
pub(super) const FIRST_SUBMIT_ID: u64 = 100;

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
pub(super) struct NotifyParams<'a>(
    #[serde(borrow)] pub(super) &'a RawValue,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    #[serde(borrow)] pub(super) Vec<&'a str>,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    #[serde(default)] pub(super) Option<bool>,
);

impl Conn {
    pub(super) fn handshake(&mut self) {
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

    pub(super) fn handle_line(&mut self, line: &[u8], now: Instant) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        let Ok(msg) = serde_json::from_slice::<Msg<'_>>(line) else {
            self.shared.stats.protocol_errors.fetch_add(1, Relaxed);
            return Ok(());
        };
        if let Some(method) = msg.method {
            let params = msg.params.map_or("[]", RawValue::get);
            return self.on_server_method(method, params, now);
        }
        self.on_reply(&msg, now)?;
        self.check_mining(now);
        Ok(())
    }

    fn on_server_method(&mut self, method: &str, params: &str, now: Instant) -> Result<(), String> {
        let stats = &self.shared.stats;
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
        Ok(())
    }

    /// A reply to the handshake (ids 1 to 3) or to a submit.
    fn on_reply(&mut self, msg: &Msg<'_>, now: Instant) -> Result<(), String> {
        let id = msg
            .id
            .map(RawValue::get)
            .and_then(|s| s.trim_matches('"').parse::<u64>().ok());
        let ok = msg.error.is_none() && msg.result.is_some_and(|r| r.get() != "false");
        match id {
            Some(1) => {
                if ok {
                    self.on_configured(msg.result);
                }
            }
            Some(2) => {
                if !ok {
                    return Err("mining.subscribe refused".into());
                }
                self.on_subscribed(msg.result)?;
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
                self.shared.stats.protocol_errors.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    fn on_configured(&mut self, result: Option<&RawValue>) {
        #[derive(Deserialize)]
        struct Configured<'a> {
            #[serde(rename = "version-rolling", default)]
            rolling: bool,
            #[serde(rename = "version-rolling.mask", borrow)]
            mask: Option<&'a str>,
        }
        if let Some(c) = result.and_then(|r| serde_json::from_str::<Configured<'_>>(r.get()).ok()) {
            if c.rolling {
                self.version_mask = c
                    .mask
                    .and_then(|m| u32::from_str_radix(m, 16).ok())
                    .or(Some(0x1fff_e000));
            }
        }
    }

    fn on_subscribed(&mut self, result: Option<&RawValue>) -> Result<(), String> {
        let result = result.map_or("null", RawValue::get);
        let (_, en1, size): (&RawValue, &str, usize) =
            serde_json::from_str(result).map_err(|e| format!("subscribe reply: {e}"))?;
        self.extranonce1 = hex::decode(en1).map_err(|e| format!("subscribe extranonce1: {e}"))?;
        self.extranonce2_size = size;
        self.subscribed = true;
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
            Stats::bump(&stats.rejects, reject_reason(error));
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
        if self.last_prev.as_deref() != Some(p.1) {
            if self.mining {
                self.record_tip(p.1, now, clean);
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

    /// Notes when this connection first saw a job on `prevhash`, for the tip latencies.
    fn record_tip(&self, prevhash: &str, now: Instant, clean: bool) {
        if let Ok(prev_hash) = sv1_miner::decode_prevhash(prevhash) {
            self.shared
                .tips
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(TipSeen {
                    conn: self.idx,
                    prev_hash,
                    at: now,
                    clean,
                });
        }
    }
}

/// The message of a rejected submit's error, as the reject counters key it.
fn reject_reason(error: Option<&RawValue>) -> String {
    error
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
        .unwrap_or_else(|| "result false".into())
}
