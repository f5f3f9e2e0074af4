//! Replies to the miner's own requests: handshake steps and submitted shares.

use super::parse::{error_reason, parse_subscribe_result};
use super::state::{Pending, Session};
use crate::work::parse_u32_hex;
use crate::MinerEvent;
use anyhow::{bail, Result};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Session<'_> {
    pub(super) fn handle_reply(
        &mut self,
        pending: Pending,
        result: &Value,
        error: &Value,
    ) -> Result<()> {
        let failed = !error.is_null() || result.is_null() || *result == Value::Bool(false);
        match pending {
            Pending::Configure { requested_mask } => {
                self.on_configure_reply(requested_mask, failed, result);
            }
            Pending::Subscribe => self.on_subscribe_reply(failed, result, error)?,
            Pending::Authorize => self.on_authorize_reply(failed, result, error),
            Pending::Submit { sent } => self.on_submit_reply(sent, result, error),
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

    fn on_configure_reply(&mut self, requested_mask: u32, failed: bool, result: &Value) {
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

    fn on_subscribe_reply(&mut self, failed: bool, result: &Value, error: &Value) -> Result<()> {
        if failed {
            bail!(
                "mining.subscribe failed: {}",
                error_reason(error).unwrap_or_else(|| result.to_string())
            );
        }
        let (en1, en2_size) = parse_subscribe_result(result)?;
        self.extranonce1 = Some(en1.clone());
        self.extranonce2_size = en2_size;
        self.emit(MinerEvent::Subscribed {
            extranonce1: en1,
            extranonce2_size: en2_size,
        });
        self.dispatch(false);
        Ok(())
    }

    fn on_authorize_reply(&self, failed: bool, result: &Value, error: &Value) {
        let ok = !failed && *result == Value::Bool(true);
        self.stats.authorized.store(ok, Ordering::Relaxed);
        if ok {
            tracing::debug!(user = %self.config.user, "authorized");
        } else {
            tracing::warn!(user = %self.config.user, reason = ?error_reason(error), "mining.authorize refused");
        }
    }

    fn on_submit_reply(&self, sent: Instant, result: &Value, error: &Value) {
        let accepted = error.is_null() && *result == Value::Bool(true);
        let counter = if accepted {
            &self.stats.shares_accepted
        } else {
            &self.stats.shares_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let reason = if accepted { None } else { error_reason(error) };
        self.emit(MinerEvent::ShareResult {
            accepted,
            reason,
            latency: sent.elapsed(),
        });
    }
}
