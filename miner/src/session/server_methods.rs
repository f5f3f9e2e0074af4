//! Requests and notifications the server sends on its own.

use super::parse::{number_param, parse_extranonce};
use super::state::Session;
use crate::work::{parse_u32_hex, Job};
use crate::MinerEvent;
use anyhow::Result;
use serde_json::{json, Value};

impl Session<'_> {
    pub(super) async fn handle_server_method(
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
                    self.count_unknown();
                }
            },
            "mining.set_difficulty" => self.on_set_difficulty(params),
            "mining.set_extranonce" => match parse_extranonce(params) {
                Ok(en) => self.next_extranonce = Some(en),
                Err(e) => {
                    tracing::warn!(user = %self.config.user, "ignoring bad mining.set_extranonce: {e:#}");
                    self.count_unknown();
                }
            },
            "mining.set_version_mask" => self.on_set_version_mask(params),
            "client.get_version" if !id.is_null() => {
                let line = json!({"id": id, "result": self.dialect.user_agent(), "error": null})
                    .to_string();
                self.send_line(line).await?;
            }
            "client.reconnect" => self.on_reconnect(params),
            "client.show_message" => {
                tracing::info!(user = %self.config.user, "server message: {params}");
            }
            other => {
                tracing::debug!(user = %self.config.user, method = other, "ignoring unknown server method");
                self.count_unknown();
            }
        }
        Ok(())
    }

    /// `client.reconnect [host, port, wait]`, every field optional: the same server by default.
    fn on_reconnect(&mut self, params: &Value) {
        if !self.config.follow_reconnect {
            tracing::info!(user = %self.config.user, %params, "server asked to reconnect; not following");
            return;
        }
        let server = self.config.server;
        let host = params
            .get(0)
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty());
        let port = params
            .get(1)
            .and_then(|p| {
                p.as_u64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(server.port());
        let ip = host.and_then(|h| h.parse().ok()).unwrap_or(server.ip());
        let wait = params.get(2).and_then(Value::as_u64).unwrap_or(0).min(600);
        self.reconnect = Some((
            std::net::SocketAddr::new(ip, port),
            std::time::Duration::from_secs(wait),
        ));
    }

    fn on_set_difficulty(&mut self, params: &Value) {
        match params.get(0).and_then(number_param) {
            Some(d) if d.is_finite() && d > 0.0 => {
                self.next_difficulty = d;
                self.emit(MinerEvent::Difficulty(d));
            }
            _ => {
                tracing::warn!(user = %self.config.user, %params, "ignoring bad mining.set_difficulty");
                self.count_unknown();
            }
        }
    }

    fn on_set_version_mask(&mut self, params: &Value) {
        let mask = params
            .get(0)
            .and_then(Value::as_str)
            .and_then(|m| parse_u32_hex(m).ok());
        match (mask, self.version_mask) {
            // Only meaningful once rolling was negotiated; applies from the next notify.
            (Some(m), Some(_)) => self.version_mask = Some(m),
            (Some(_), None) => {}
            (None, _) => self.count_unknown(),
        }
    }
}
