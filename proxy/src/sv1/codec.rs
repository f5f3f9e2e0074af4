//! Stratum V1 messages: JSON-RPC lines in, typed requests out; replies and notifications
//! rendered as lines. No I/O here.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A request from a miner.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Subscribe {
        agent: Option<Cow<'a, str>>,
    },
    Authorize {
        worker: Cow<'a, str>,
    },
    Configure(Configure),
    Submit(Submit<'a>),
    SuggestDifficulty(f64),
    ExtranonceSubscribe,
    /// A method we do not serve; answered with an error, never a disconnect.
    Unknown(Cow<'a, str>),
}

/// BIP310 `mining.configure`.
#[derive(Debug, Default, PartialEq)]
pub struct Configure {
    /// The mask the miner asks for, when it asks for version rolling.
    pub version_rolling: Option<u32>,
    /// `minimum-difficulty.value`, when asked.
    pub minimum_difficulty: Option<Option<f64>>,
    /// Whether `subscribe-extranonce` was asked.
    pub subscribe_extranonce: bool,
    /// Extensions we do not know; answered `false`.
    pub unknown: Vec<String>,
}

/// `mining.submit` fields, still as the miner wrote them.
#[derive(Debug, PartialEq)]
pub struct Submit<'a> {
    pub worker: Cow<'a, str>,
    pub job_id: Cow<'a, str>,
    pub extranonce2: Cow<'a, str>,
    pub ntime: Cow<'a, str>,
    pub nonce: Cow<'a, str>,
    pub version_bits: Option<Cow<'a, str>>,
}

/// One decoded line: the id to echo and what was asked.
#[derive(Debug)]
pub struct Message<'a> {
    /// The request id exactly as sent (number, string or null), echoed verbatim.
    pub id: &'a str,
    pub request: Request<'a>,
}

/// A line that is not a Stratum V1 request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, or not an object: the peer does not speak Stratum.
    #[error("not a JSON-RPC request: {0}")]
    NotJson(String),
    /// A JSON message without a method (a reply to nothing we asked); ignored.
    #[error("message without a method")]
    NoMethod,
    /// A known method with parameters we cannot read; answered with an error.
    #[error("bad params for {method}: {detail}")]
    BadParams {
        id: String,
        method: &'static str,
        detail: String,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

const NULL: &str = "null";

/// Decodes one line (without its newline).
///
/// # Errors
/// [`DecodeError`]: garbage, a reply, or unreadable params of a known method.
pub fn decode(line: &[u8]) -> Result<Message<'_>, DecodeError> {
    let env: Envelope<'_> =
        serde_json::from_slice(line).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let id = env.id.map_or(NULL, RawValue::get);
    let method = env.method.ok_or(DecodeError::NoMethod)?;
    let params = env.params.map_or("[]", RawValue::get);
    let bad = |method: &'static str, detail: String| DecodeError::BadParams {
        id: id.to_owned(),
        method,
        detail,
    };
    let request = match method.as_ref() {
        "mining.subscribe" => {
            let p: Vec<Option<Cow<'_, str>>> = parse_lenient(params).unwrap_or_default();
            Request::Subscribe {
                agent: p.into_iter().next().flatten(),
            }
        }
        "mining.authorize" => {
            let p: Vec<Option<Cow<'_, str>>> =
                serde_json::from_str(params).map_err(|e| bad("mining.authorize", e.to_string()))?;
            let worker = p
                .into_iter()
                .next()
                .flatten()
                .ok_or_else(|| bad("mining.authorize", "no worker name".into()))?;
            Request::Authorize { worker }
        }
        "mining.submit" => {
            let p: Vec<Cow<'_, str>> =
                serde_json::from_str(params).map_err(|e| bad("mining.submit", e.to_string()))?;
            if !(5..=6).contains(&p.len()) {
                return Err(bad(
                    "mining.submit",
                    format!("{} params, expected 5 or 6", p.len()),
                ));
            }
            let mut it = p.into_iter();
            let mut next = || it.next();
            Request::Submit(Submit {
                worker: next().unwrap_or_default(),
                job_id: next().unwrap_or_default(),
                extranonce2: next().unwrap_or_default(),
                ntime: next().unwrap_or_default(),
                nonce: next().unwrap_or_default(),
                version_bits: next(),
            })
        }
        "mining.configure" => {
            Request::Configure(decode_configure(params).map_err(|d| bad("mining.configure", d))?)
        }
        "mining.suggest_difficulty" => {
            let p: Vec<serde_json::Value> = serde_json::from_str(params)
                .map_err(|e| bad("mining.suggest_difficulty", e.to_string()))?;
            let d = p
                .first()
                .and_then(number)
                .ok_or_else(|| bad("mining.suggest_difficulty", "no number".into()))?;
            Request::SuggestDifficulty(d)
        }
        "mining.extranonce.subscribe" => Request::ExtranonceSubscribe,
        _ => Request::Unknown(method),
    };
    Ok(Message { id, request })
}

/// Reads a number given as a JSON number or a numeric string (both seen in the field).
fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_lenient<'a, T: Deserialize<'a>>(params: &'a str) -> Option<T> {
    serde_json::from_str(params).ok()
}

fn decode_configure(params: &str) -> Result<Configure, String> {
    let (exts, opts): (Vec<String>, serde_json::Map<String, serde_json::Value>) =
        match serde_json::from_str::<Vec<serde_json::Value>>(params) {
            Ok(mut v) if !v.is_empty() => {
                let opts = match v.get_mut(1).map(serde_json::Value::take) {
                    Some(serde_json::Value::Object(m)) => m,
                    _ => Default::default(),
                };
                let exts = serde_json::from_value(v.swap_remove(0)).map_err(|e| e.to_string())?;
                (exts, opts)
            }
            Ok(_) => return Err("no extension list".into()),
            Err(e) => return Err(e.to_string()),
        };
    let mut out = Configure::default();
    for ext in exts {
        match ext.as_str() {
            "version-rolling" => {
                let mask = match opts.get("version-rolling.mask") {
                    Some(serde_json::Value::String(s)) => {
                        parse_hex_u32(s).ok_or_else(|| format!("bad version-rolling.mask {s:?}"))?
                    }
                    // No mask given: the miner takes whatever we allow.
                    _ => u32::MAX,
                };
                out.version_rolling = Some(mask);
            }
            "minimum-difficulty" => {
                out.minimum_difficulty =
                    Some(opts.get("minimum-difficulty.value").and_then(number));
            }
            "subscribe-extranonce" => out.subscribe_extranonce = true,
            _ => out.unknown.push(ext),
        }
    }
    Ok(out)
}

/// Parses hex the way miners write it: with or without zero padding or a `0x`.
pub fn parse_hex_u32(s: &str) -> Option<u32> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// An extranonce2 that is not hex of the negotiated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("extranonce2 is not hex of the negotiated size")]
pub struct Extranonce2Error;

/// Decodes extranonce2 into `out`: left-pads unpadded hex with zeros to `len` bytes.
///
/// # Errors
/// When the hex is invalid or longer than `len` bytes.
pub fn parse_extranonce2(s: &str, len: usize, out: &mut [u8; 8]) -> Result<(), Extranonce2Error> {
    if s.is_empty() || s.len() > len * 2 || len > 8 {
        return Err(Extranonce2Error);
    }
    let mut padded = [b'0'; 16];
    padded[len * 2 - s.len()..len * 2].copy_from_slice(s.as_bytes());
    hex::decode_to_slice(&padded[..len * 2], &mut out[..len]).map_err(|_| Extranonce2Error)
}

/// Renders replies and notifications into a buffer.
pub mod render {
    use super::*;

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

    /// `mining.set_difficulty`, with integral values written as integers for old parsers.
    pub fn set_difficulty(out: &mut Vec<u8>, difficulty: f64) {
        let mut s = String::with_capacity(80);
        s.push_str("{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[");
        push_number(&mut s, difficulty);
        s.push_str("]}\n");
        out.extend_from_slice(s.as_bytes());
    }

    /// `mining.set_version_mask`.
    pub fn set_version_mask(out: &mut Vec<u8>, mask: u32) {
        let s = format!(
            "{{\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"{mask:08x}\"]}}\n"
        );
        out.extend_from_slice(s.as_bytes());
    }

    /// A JSON number: integers without a fraction, others in shortest round-trip form.
    pub fn push_number(s: &mut String, v: f64) {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            let _ = write!(s, "{}", v as i64);
        } else {
            s.push_str(
                &serde_json::Number::from_f64(v).map_or_else(|| "0".into(), |n| n.to_string()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_with_five_and_six_params_and_string_ids() {
        let m = decode(br#"{"id":"7","method":"mining.submit","params":["w","1a","00000001","5f5e1000","1a2b"]}"#).unwrap();
        assert_eq!(m.id, "\"7\"");
        let Request::Submit(s) = m.request else {
            panic!("not a submit")
        };
        assert_eq!(
            (s.job_id.as_ref(), s.nonce.as_ref(), s.version_bits),
            ("1a", "1a2b", None)
        );
        let m = decode(
            br#"{"id":4,"method":"mining.submit","params":["w","1","00","0","0","00002000"]}"#,
        )
        .unwrap();
        let Request::Submit(s) = m.request else {
            panic!("not a submit")
        };
        assert_eq!(s.version_bits.as_deref(), Some("00002000"));
        assert!(matches!(
            decode(br#"{"id":4,"method":"mining.submit","params":["w"]}"#),
            Err(DecodeError::BadParams { .. })
        ));
    }

    #[test]
    fn configure_reads_mask_and_min_difficulty() {
        let m = decode(br#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","foo"],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048}]}"#).unwrap();
        let Request::Configure(c) = m.request else {
            panic!()
        };
        assert_eq!(c.version_rolling, Some(0xffff_ffff));
        assert_eq!(c.minimum_difficulty, Some(Some(2048.0)));
        assert_eq!(c.unknown, vec!["foo".to_string()]);
    }

    #[test]
    fn suggest_difficulty_takes_floats_ints_and_strings() {
        for (line, d) in [
            (
                r#"{"id":3,"method":"mining.suggest_difficulty","params":[0.0001]}"#,
                0.0001,
            ),
            (
                r#"{"id":3,"method":"mining.suggest_difficulty","params":[1000]}"#,
                1000.0,
            ),
            (
                r#"{"id":3,"method":"mining.suggest_difficulty","params":["512"]}"#,
                512.0,
            ),
        ] {
            assert_eq!(
                decode(line.as_bytes()).unwrap().request,
                Request::SuggestDifficulty(d)
            );
        }
    }

    #[test]
    fn garbage_unknown_and_replies() {
        assert!(matches!(
            decode(b"GET / HTTP/1.1"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(decode(b"[1,2]"), Err(DecodeError::NotJson(_))));
        assert_eq!(
            decode(br#"{"id":9,"result":true,"error":null}"#).unwrap_err(),
            DecodeError::NoMethod
        );
        let m = decode(br#"{"id":9,"method":"mining.get_transactions","params":[]}"#).unwrap();
        assert_eq!(
            m.request,
            Request::Unknown("mining.get_transactions".into())
        );
        let m = decode(br#"{"method":"mining.extranonce.subscribe"}"#).unwrap();
        assert_eq!((m.id, m.request), ("null", Request::ExtranonceSubscribe));
    }

    #[test]
    fn hex_is_tolerated_without_padding() {
        assert_eq!(parse_hex_u32("1a2b"), Some(0x1a2b));
        assert_eq!(parse_hex_u32("0x1fffe000"), Some(0x1fff_e000));
        assert_eq!(parse_hex_u32("123456789"), None);
        let mut out = [0u8; 8];
        parse_extranonce2("1", 4, &mut out).unwrap();
        assert_eq!(&out[..4], &[0, 0, 0, 1]);
        assert!(parse_extranonce2("0000000001", 4, &mut out).is_err());
        assert!(parse_extranonce2("zz", 4, &mut out).is_err());
    }

    #[test]
    fn rendering() {
        let mut out = Vec::new();
        render::set_difficulty(&mut out, 1024.0);
        render::set_difficulty(&mut out, 0.0001);
        render::error(&mut out, "\"a\"", 21, "job not found");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["params"][0], serde_json::json!(1024));
        assert_eq!(lines[1]["params"][0].as_f64(), Some(0.0001));
        assert_eq!(lines[2]["error"][0], 21);
        assert_eq!(lines[2]["id"], "a");
    }
}
