//! Replies and notifications rendered into a buffer, as Stratum V1 lines.

use std::fmt::Write as _;

use mining_types::JobId;

use super::ConfigureReply;
use crate::share::Reject;
/// `{"id":ID,"result":RESULT,"error":null}`
pub fn ok(out: &mut Vec<u8>, id: &str, result: &str) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result.as_bytes());
    out.extend_from_slice(b",\"error\":null}\n");
}

/// `{"id":ID,"result":null,"error":[CODE,"MSG",null]}`
pub fn error(out: &mut Vec<u8>, id: &str, code: i32, message: &str) {
    let msg = serde_json::to_string(message).expect("a str always serializes");
    let mut s = String::with_capacity(64);
    let _ = writeln!(
        s,
        "{{\"id\":{id},\"result\":null,\"error\":[{code},{msg},null]}}"
    );
    out.extend_from_slice(s.as_bytes());
}

/// A refused share, with the classic code and message for its reason.
pub fn reject(out: &mut Vec<u8>, id: &str, reason: Reject) {
    let (code, message) = reason.sv1_error();
    error(out, id, code, message);
}

/// The `mining.subscribe` result: both subscriptions, extranonce1 and the extranonce2 size.
pub fn subscribed(out: &mut Vec<u8>, id: &str, extranonce1: &str, extranonce2_len: usize) {
    let result = format!(
        "[[[\"mining.set_difficulty\",\"{extranonce1}\"],[\"mining.notify\",\"{extranonce1}\"]],\"{extranonce1}\",{extranonce2_len}]"
    );
    ok(out, id, &result);
}

/// The `mining.configure` result.
pub fn configured(out: &mut Vec<u8>, id: &str, reply: &ConfigureReply) {
    let mut result = serde_json::Map::new();
    match reply.version_rolling {
        None => {}
        Some(None) => {
            result.insert("version-rolling".into(), false.into());
        }
        Some(Some(mask)) => {
            result.insert("version-rolling".into(), true.into());
            result.insert("version-rolling.mask".into(), format!("{mask:08x}").into());
        }
    }
    if reply.minimum_difficulty {
        result.insert("minimum-difficulty".into(), true.into());
    }
    if reply.subscribe_extranonce {
        result.insert("subscribe-extranonce".into(), true.into());
    }
    for ext in &reply.unknown {
        result.insert(ext.clone(), false.into());
    }
    ok(out, id, &serde_json::Value::Object(result).to_string());
}

/// `mining.set_difficulty`, with integral values written as integers for old parsers.
pub fn set_difficulty(out: &mut Vec<u8>, difficulty: f64) {
    let mut s = String::with_capacity(80);
    s.push_str("{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[");
    push_number(&mut s, difficulty);
    s.push_str("]}\n");
    out.extend_from_slice(s.as_bytes());
}

/// `client.reconnect` to the same address after `wait_secs`: what a proxy shutting down
/// tells miners, so they come back without their own long retry pause.
pub fn reconnect(out: &mut Vec<u8>, host: &str, port: u16, wait_secs: u32) {
    let host = serde_json::to_string(host).expect("a str always serializes");
    let s = format!(
        "{{\"id\":null,\"method\":\"client.reconnect\",\"params\":[{host},{port},{wait_secs}]}}\n"
    );
    out.extend_from_slice(s.as_bytes());
}

/// `mining.notify` for a job, with the clean-jobs flag given; newline included. Rendered
/// once per job and copied into every connection's buffer.
pub fn notify(job: &NotifyFields<'_>, clean: bool) -> Vec<u8> {
    let params = serde_json::json!([
        job.job_id.to_string(),
        job.prev_hash,
        hex::encode(job.coinb1),
        hex::encode(job.coinb2),
        job.merkle_branch,
        format!("{:08x}", job.version),
        format!("{:08x}", job.bits),
        format!("{:08x}", job.ntime),
        clean,
    ]);
    let mut line =
        serde_json::json!({"id": null, "method": "mining.notify", "params": params}).to_string();
    line.push('\n');
    line.into_bytes()
}

/// A notify line rendered by [`notify`], under another job id and ntime: `out` gets the line
/// with `id` and `ntime` in place of the ones it carries. A session re-sends a job this way
/// when the miner must move to fresh work on the same job (a new difficulty, a full duplicate
/// set); the later ntime moves the miner's search past the headers it already found.
pub fn notify_as(out: &mut Vec<u8>, line: &[u8], id: JobId, ntime: u32) {
    const PARAMS: &[u8] = b"\"params\":[\"";
    let start = memchr::memmem::find(line, PARAMS).map(|i| i + PARAMS.len());
    let end = start.and_then(|s| memchr::memchr(b'"', &line[s..]).map(|e| s + e));
    // ntime is the last string: eight hex digits between the last two quotes.
    let close = memchr::memrchr(b'"', line).filter(|&c| c >= 9 && line[c - 9] == b'"');
    let (Some(start), Some(end), Some(close)) = (start, end, close) else {
        // Not a line `notify` made: nothing to rewrite, so send it as it is.
        out.extend_from_slice(line);
        return;
    };
    if close - 9 <= end {
        out.extend_from_slice(line);
        return;
    }
    out.extend_from_slice(&line[..start]);
    let _ = write!(Bytes(out), "{id}");
    out.extend_from_slice(&line[end..close - 8]);
    let _ = write!(Bytes(out), "{ntime:08x}");
    out.extend_from_slice(&line[close..]);
}

/// `fmt::Write` into a byte buffer, for ids and numbers without a temporary `String`.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A JSON number: integers without a fraction, others in shortest round-trip form.
pub fn push_number(s: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        let _ = write!(s, "{}", v as i64);
    } else {
        s.push_str(&serde_json::Number::from_f64(v).map_or_else(|| "0".into(), |n| n.to_string()));
    }
}

/// What a `mining.notify` says of a job.
#[derive(Debug)]
pub struct NotifyFields<'a> {
    /// The job id.
    pub job_id: JobId,
    /// The previous block hash, already in Stratum V1's word-swapped hex.
    pub prev_hash: &'a str,
    /// The coinbase before the extranonce.
    pub coinb1: &'a [u8],
    /// The coinbase after the extranonce.
    pub coinb2: &'a [u8],
    /// The merkle branch, each node in hex.
    pub merkle_branch: &'a [String],
    /// The header version.
    pub version: u32,
    /// The compact target.
    pub bits: u32,
    /// The time to start from.
    pub ntime: u32,
}
