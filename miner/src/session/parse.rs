//! Pure helpers for the JSON-RPC fields a session reads.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Longest extranonce2 accepted from a server.
const MAX_EXTRANONCE2_SIZE: u64 = 32;

/// The JSON-RPC id as a map key: `1` and `"1"` are the same request (servers differ in echoing).
pub(super) fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A number that some servers send as a JSON string.
pub(super) fn number_param(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The message of a `[code, "message", data]` (or `{"message": ..}`, or string) error.
pub(super) fn error_reason(error: &Value) -> Option<String> {
    match error {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a
            .get(1)
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(error.to_string())),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(error.to_string())),
        other => Some(other.to_string()),
    }
}

fn parse_extranonce_pair(en1: &Value, size: &Value) -> Result<(Vec<u8>, usize)> {
    let en1 = hex::decode(
        en1.as_str()
            .ok_or_else(|| anyhow!("extranonce1 is not a string"))?,
    )
    .context("extranonce1 hex")?;
    let size = size
        .as_u64()
        .ok_or_else(|| anyhow!("extranonce2_size is not an integer"))?;
    if size > MAX_EXTRANONCE2_SIZE {
        bail!("extranonce2_size {size} is too large");
    }
    Ok((en1, size as usize))
}

/// Extranonce1 and extranonce2 size from a `mining.subscribe` result.
pub(super) fn parse_subscribe_result(result: &Value) -> Result<(Vec<u8>, usize)> {
    let r = result
        .as_array()
        .ok_or_else(|| anyhow!("mining.subscribe result is not an array: {result}"))?;
    if r.len() < 3 {
        bail!("mining.subscribe result is too short: {result}");
    }
    parse_extranonce_pair(&r[1], &r[2]).context("mining.subscribe result")
}

/// Extranonce1 and extranonce2 size from `mining.set_extranonce` params.
pub(super) fn parse_extranonce(params: &Value) -> Result<(Vec<u8>, usize)> {
    let p = params
        .as_array()
        .ok_or_else(|| anyhow!("params are not an array"))?;
    if p.len() < 2 {
        bail!("expected [extranonce1, extranonce2_size]");
    }
    parse_extranonce_pair(&p[0], &p[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_match_whatever_the_server_echoes() {
        assert_eq!(id_key(&json!(1)), id_key(&json!("1")));
        assert_eq!(id_key(&Value::Null), None);
    }

    #[test]
    fn errors_and_results() {
        assert_eq!(
            error_reason(&json!([23, "Low difficulty share", null])).as_deref(),
            Some("Low difficulty share")
        );
        assert_eq!(
            error_reason(&json!({"code": 21, "message": "Job not found"})).as_deref(),
            Some("Job not found")
        );
        assert_eq!(error_reason(&Value::Null), None);
        let (en1, size) = parse_subscribe_result(&json!([
            [["mining.set_difficulty", "a"], ["mining.notify", "b"]],
            "08000002",
            4
        ]))
        .unwrap();
        assert_eq!((en1, size), (vec![8, 0, 0, 2], 4));
        assert!(parse_subscribe_result(&json!([[], "zz", 4])).is_err());
        assert!(parse_subscribe_result(&json!([[], "00", 400])).is_err());
        assert!(parse_subscribe_result(&json!(true)).is_err());
        assert_eq!(
            parse_extranonce(&json!(["ab", 2])).unwrap(),
            (vec![0xab], 2)
        );
        assert_eq!(number_param(&json!(1e-9)), Some(1e-9));
        assert_eq!(number_param(&json!("0.5")), Some(0.5));
    }
}
