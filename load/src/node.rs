//! The node side of a tip measurement: a small JSON-RPC client (cookie or user:password) to
//! mine a block, and the node's own log, which says to the microsecond when it took the block.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

/// Where mined tips pay.
#[derive(Debug, Clone)]
pub enum MineTo {
    Address(String),
    Descriptor(String),
}

/// How to reach the node's JSON-RPC.
#[derive(Debug, Clone)]
pub struct Rpc {
    http: reqwest::Client,
    url: String,
    cookie: Option<PathBuf>,
    user_pass: Option<(String, String)>,
}

impl Rpc {
    /// `auth` is a cookie file path, or `user:password`.
    pub fn new(
        url: &str,
        cookie: Option<PathBuf>,
        user_pass: Option<String>,
    ) -> anyhow::Result<Rpc> {
        let user_pass = match user_pass {
            Some(up) => {
                let (u, p) = up
                    .split_once(':')
                    .ok_or_else(|| anyhow!("--rpc-user-pass must be USER:PASSWORD"))?;
                Some((u.to_owned(), p.to_owned()))
            }
            None => None,
        };
        if cookie.is_none() && user_pass.is_none() {
            bail!("a node RPC URL needs --rpc-cookie or --rpc-user-pass");
        }
        Ok(Rpc {
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .context("building the HTTP client")?,
            url: url.to_owned(),
            cookie,
            user_pass,
        })
    }

    fn credentials(&self) -> anyhow::Result<(String, String)> {
        if let Some(up) = &self.user_pass {
            return Ok(up.clone());
        }
        let path = self.cookie.as_ref().expect("checked in new");
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the cookie {}", path.display()))?;
        let (u, p) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("no ':' in {}", path.display()))?;
        Ok((u.to_owned(), p.to_owned()))
    }

    /// Calls `method`; the node's error object becomes an error.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let (user, pass) = self.credentials()?;
        let body = json!({"jsonrpc": "1.0", "id": "jd-load", "method": method, "params": params});
        let text = self
            .http
            .post(&self.url)
            .basic_auth(user, Some(pass))
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("RPC {method}"))?
            .text()
            .await
            .with_context(|| format!("RPC {method}: reading the reply"))?;
        let reply: Value = serde_json::from_str(&text)
            .with_context(|| format!("RPC {method}: not JSON: {}", text.trim()))?;
        match reply.get("error") {
            Some(e) if !e.is_null() => bail!("RPC {method} failed: {e}"),
            _ => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// The active tip's hash.
    pub async fn best_block_hash(&self) -> anyhow::Result<bitcoin::BlockHash> {
        let v = self
            .call("getbestblockhash", json!([]), Duration::from_secs(10))
            .await?;
        v.as_str()
            .ok_or_else(|| anyhow!("getbestblockhash: not a string"))?
            .parse()
            .context("getbestblockhash")
    }

    /// A checksummed `raw(51)` (anyone-can-spend) descriptor to mine to, on any chain.
    pub async fn mining_descriptor(&self) -> anyhow::Result<String> {
        let info = self
            .call(
                "getdescriptorinfo",
                json!(["raw(51)"]),
                Duration::from_secs(10),
            )
            .await?;
        let sum = info["checksum"]
            .as_str()
            .ok_or_else(|| anyhow!("getdescriptorinfo gave no checksum"))?;
        Ok(format!("raw(51)#{sum}"))
    }

    /// Mines one block to `to`: `generatetoaddress` for an address, `generatetodescriptor`
    /// for a descriptor (`maxtries` high enough for a real minimum difficulty).
    pub async fn mine_one(&self, to: &MineTo) -> anyhow::Result<bitcoin::BlockHash> {
        let (method, target) = match to {
            MineTo::Address(a) => ("generatetoaddress", a),
            MineTo::Descriptor(d) => ("generatetodescriptor", d),
        };
        let v = self
            .call(
                method,
                json!([1, target, 1_000_000_000u64]),
                Duration::from_secs(120),
            )
            .await?;
        v.as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{method} mined nothing: {v}"))?
            .parse()
            .context(method)
    }

    /// Waits (up to `timeout`) for a tip other than `current`; `None` when none came.
    pub async fn wait_for_new_block(
        &self,
        current: bitcoin::BlockHash,
        timeout: Duration,
    ) -> anyhow::Result<Option<bitcoin::BlockHash>> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let v = self
            .call(
                "waitfornewblock",
                json!([ms, current.to_string()]),
                timeout + Duration::from_secs(10),
            )
            .await?;
        let hash: bitcoin::BlockHash = v["hash"]
            .as_str()
            .ok_or_else(|| anyhow!("waitfornewblock: no hash in {v}"))?
            .parse()
            .context("waitfornewblock")?;
        Ok((hash != current).then_some(hash))
    }
}

/// When the node logged `UpdateTip: new best=<hash>` (needs `-logtimemicros=1` for better than
/// a second; the node logs in UTC).
pub fn update_tip_time(
    debug_log: &Path,
    hash: &bitcoin::BlockHash,
) -> anyhow::Result<Option<SystemTime>> {
    let text = read_tail(debug_log, 4 << 20)?;
    let needle = format!("UpdateTip: new best={hash}");
    Ok(text
        .lines()
        .rev()
        .find(|l| l.contains(&needle))
        .and_then(|l| parse_log_time(l.split_whitespace().next()?)))
}

fn read_tail(path: &Path, max: u64) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Parses `2025-11-22T00:45:55.123456Z` (fraction optional) into a time.
pub fn parse_log_time(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let micros = if frac.is_empty() {
        0
    } else {
        let digits = &frac[..frac.len().min(6)];
        digits.parse::<u64>().ok()? * 10u64.pow(6 - digits.len() as u32)
    };
    let days = days_from_civil(y, m, day);
    let secs = u64::try_from(days).ok()? * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times() {
        let t = parse_log_time("2025-11-22T00:45:55.123456Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_763_772_355);
        assert_eq!(d.subsec_micros(), 123_456);
        let t = parse_log_time("1970-01-01T00:00:01Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(1)
        );
        assert!(parse_log_time("garbage").is_none());
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
