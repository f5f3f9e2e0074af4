//! The status summary, rendered from the JSON API's answers. Pure: the tests feed it JSON.
//!
//! Missing fields show as `-`: an older or newer server still gives a readable summary.

use std::fmt::Write as _;

use serde_json::Value;

use super::format::{btc, count, duration, hashrate, percent, utc};

/// A worker connected but silent this long is listed as silent (the alert's threshold).
pub const SILENT_AFTER_SECS: u64 = 600;

/// What the API answered; `upstream` and `workers` may be missing.
#[derive(Debug, Clone, Copy)]
pub struct Answers<'a> {
    /// `/api/v1/summary`.
    pub summary: &'a Value,
    /// `/api/v1/upstream`.
    pub upstream: Option<&'a Value>,
    /// `/api/v1/workers`.
    pub workers: Option<&'a Value>,
}

/// The summary: `api` as asked, `now` in Unix seconds, `top` workers listed.
pub fn render(api: &str, answers: Answers<'_>, now: u64, top: usize) -> String {
    let s = answers.summary;
    let mut out = String::new();
    let version = s["version"].as_str().unwrap_or("-");
    let up = s["uptime_secs"].as_u64().map_or("-".into(), duration);
    let _ = writeln!(out, "jd-proxy {version} at {api}, up {up}");
    let mut line = |label: &str, text: String| {
        let _ = writeln!(out, "{label:<10} {text}");
    };
    line("Mining", mining(&s["upstream"], now));
    line("Node", node(&s["node"], now));
    let h = &s["hashrate"];
    line(
        "Hashrate",
        format!(
            "{} (5 min)   {} (1 h)   {} (24 h)",
            rate(&h["h5m"]),
            rate(&h["h1h"]),
            rate(&h["h24h"])
        ),
    );
    line(
        "Miners",
        format!(
            "{} mining, {} connections",
            num(&s["miners"]),
            num(&s["connections"])
        ),
    );
    line("Shares", shares(&s["totals"], now));
    line("Template", template(&s["template"]));
    line("Blocks", format!("{} found", num(&s["blocks_found"])));
    // A solo farm that never had a pool has nothing to say here.
    if let Some(u) = answers.upstream.filter(|u| had_pool(u)) {
        line("Upstream", upstream(u));
    }
    if let Some(w) = answers.workers.and_then(Value::as_array) {
        workers(&mut out, w, now, top);
    }
    out
}

fn num(v: &Value) -> String {
    v.as_u64().map_or("-".into(), count)
}

fn rate(v: &Value) -> String {
    v.as_f64().map_or("-".into(), hashrate)
}

/// `since` as a date, and how long ago.
fn since(at: &Value, now: u64) -> String {
    match at.as_u64() {
        Some(t) if t > 0 => format!("since {} ({})", utc(t), duration(now.saturating_sub(t))),
        _ => String::new(),
    }
}

fn mining(u: &Value, now: u64) -> String {
    let pool = u["pool"].as_str().unwrap_or("?");
    let what = match u["mode"].as_str() {
        Some("solo") => "solo, on the farm's node".to_owned(),
        Some("declared") => format!("the farm's templates for pool {pool} (declared jobs)"),
        Some("pool_jobs") => {
            format!("the pool's own jobs from {pool}, NOT the farm's templates")
        }
        Some(other) => other.to_owned(),
        None => "-".to_owned(),
    };
    format!("{what} {}", since(&u["since"], now))
        .trim_end()
        .to_owned()
}

fn node(n: &Value, now: u64) -> String {
    match (n["serving"].as_str(), n["down_since"].as_u64()) {
        (Some(name), _) => format!("{name} serves the templates"),
        (None, Some(t)) => format!("NO NODE ANSWERS {}", since(&Value::from(t), now)),
        (None, None) => "templates from the template provider".to_owned(),
    }
}

/// Refused shares, summed: the API gives them by reason (an object), or as a list.
fn rejected(r: &Value) -> (u64, Vec<(String, u64)>) {
    let mut by: Vec<(String, u64)> = match r {
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        Value::Array(a) => vec![("".into(), a.iter().filter_map(Value::as_u64).sum())],
        _ => Vec::new(),
    };
    by.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    (by.iter().map(|(_, n)| n).sum(), by)
}

fn shares(t: &Value, now: u64) -> String {
    let accepted = t["accepted"].as_u64().unwrap_or(0);
    let (refused, by) = rejected(&t["rejected"]);
    let reasons: Vec<String> = by
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, n)| format!("{k} {}", count(*n)))
        .collect();
    let mut text = format!(
        "{} accepted, {} rejected",
        count(accepted),
        percent(refused, accepted + refused)
    );
    if !reasons.is_empty() {
        let _ = write!(text, " ({})", reasons.join(", "));
    }
    match t["last_share"].as_u64() {
        Some(at) if at > 0 => {
            let _ = write!(text, "; last {} ago", duration(now.saturating_sub(at)));
        }
        _ => text.push_str("; no share yet"),
    }
    text
}

fn template(t: &Value) -> String {
    if t.is_null() {
        return "-".into();
    }
    let fees = t["fees_sat"].as_u64().map_or("-".into(), btc);
    let age = t["age_secs"].as_u64().map_or("-".into(), duration);
    let kind = t["kind"].as_str().unwrap_or("-");
    let from = t["node"]
        .as_str()
        .map(|n| format!(", from {n}"))
        .unwrap_or_default();
    format!(
        "height {}, fees {fees}, {} txs, weight {}, {age} old ({kind}{from})",
        num(&t["height"]),
        num(&t["txs"]),
        num(&t["weight"]),
    )
}

/// Whether a pool was ever in the picture: one is in use, or was declared to or failed.
fn had_pool(u: &Value) -> bool {
    !u["pool"].is_null()
        || rejected(&u["failovers"]).0 > 0
        || u["declarations"]["sent"].as_u64().unwrap_or(0) > 0
        || u["pool_shares"]["submitted"].as_u64().unwrap_or(0) > 0
}

fn upstream(u: &Value) -> String {
    let (failovers, why) = rejected(&u["failovers"]);
    let why: Vec<String> = why.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let d = &u["declarations"];
    let (refused, codes) = rejected(&d["refused"]);
    let codes: Vec<String> = codes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let p = &u["pool_shares"];
    let submitted = p["submitted"].as_u64().unwrap_or(0);
    let accepted = p["accepted"].as_u64().unwrap_or(0);
    let mut text = format!("failovers {}", count(failovers));
    if !why.is_empty() {
        let _ = write!(text, " ({})", why.join(", "));
    }
    let _ = write!(
        text,
        "; declarations {} sent, {} accepted, {} refused",
        num(&d["sent"]),
        num(&d["accepted"]),
        count(refused),
    );
    if !codes.is_empty() {
        let _ = write!(text, " ({})", codes.join(", "));
    }
    let _ = write!(
        text,
        "; pool shares {} accepted of {}, {} dropped",
        percent(accepted, submitted),
        count(submitted),
        num(&p["dropped"]),
    );
    text
}

/// One worker as listed.
struct Worker<'a> {
    name: &'a str,
    connected: u64,
    rates: [f64; 3],
    accepted: u64,
    refused: u64,
    last_share: Option<u64>,
}

impl<'a> Worker<'a> {
    fn from(v: &'a Value) -> Worker<'a> {
        let r = &v["rates"];
        let t = &v["totals"];
        let f = |x: &Value| x.as_f64().unwrap_or(0.0);
        Worker {
            name: v["worker"].as_str().unwrap_or("?"),
            connected: v["connected"].as_u64().unwrap_or(0),
            rates: [f(&r["h5m"]), f(&r["h1h"]), f(&r["h24h"])],
            accepted: t["accepted"].as_u64().unwrap_or(0),
            refused: rejected(&t["rejected"]).0,
            last_share: t["last_share"].as_u64().filter(|&t| t > 0),
        }
    }

    fn silent(&self, now: u64) -> bool {
        self.connected > 0
            && self
                .last_share
                .is_none_or(|t| now.saturating_sub(t) >= SILENT_AFTER_SECS)
    }
}

fn workers(out: &mut String, list: &[Value], now: u64, top: usize) {
    let mut all: Vec<Worker<'_>> = list.iter().map(Worker::from).collect();
    let connected = all.iter().filter(|w| w.connected > 0).count();
    all.sort_by(|a, b| b.rates[0].total_cmp(&a.rates[0]).then(a.name.cmp(b.name)));
    let _ = writeln!(
        out,
        "\nTop workers by 5-min hashrate ({} workers, {connected} connected):",
        all.len()
    );
    let _ = writeln!(
        out,
        "  {:<24} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "WORKER", "ASICS", "5 MIN", "1 H", "24 H", "ACCEPTED", "REJECTED"
    );
    for w in all.iter().take(top) {
        let _ = writeln!(
            out,
            "  {:<24} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8}",
            w.name,
            w.connected,
            hashrate(w.rates[0]),
            hashrate(w.rates[1]),
            hashrate(w.rates[2]),
            count(w.accepted),
            percent(w.refused, w.accepted + w.refused),
        );
    }
    let mut silent: Vec<&Worker<'_>> = all.iter().filter(|w| w.silent(now)).collect();
    silent.sort_by_key(|w| (w.last_share.unwrap_or(0), w.name));
    if silent.is_empty() {
        let _ = writeln!(
            out,
            "Silent: none (every connected worker shared in the last 10 min)"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Silent: {} connected workers without a share for 10 min:",
        silent.len()
    );
    for w in silent.iter().take(top) {
        let last = w.last_share.map_or("no share yet".into(), |t| {
            format!("last share {} ago", duration(now.saturating_sub(t)))
        });
        let _ = writeln!(out, "  {:<24} {last}", w.name);
    }
    if silent.len() > top {
        let _ = writeln!(out, "  ... and {} more", silent.len() - top);
    }
}

#[cfg(test)]
mod tests;
