//! Stratum V1 messages: JSON-RPC lines in, typed requests out; every reply and notification
//! rendered as lines. No I/O here.

use std::borrow::Cow;

use mining_types::{Extranonce2, JobId};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::share::Reject;

/// A request from a miner.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    /// `mining.subscribe`, with the firmware's user agent when it sends one.
    Subscribe {
        /// The user agent.
        agent: Option<Cow<'a, str>>,
    },
    /// `mining.authorize`.
    Authorize {
        /// The worker name.
        worker: Cow<'a, str>,
    },
    /// BIP310 `mining.configure`.
    Configure(Configure),
    /// `mining.submit`: the typed share, or the reason its fields do not read.
    Submit(Result<Submit, Reject>),
    /// `mining.suggest_difficulty`.
    SuggestDifficulty(f64),
    /// `mining.extranonce.subscribe`.
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

/// A `mining.submit`, read: hex with or without zero padding, the job id as we sent it.
///
/// The extranonce2 is read at its hex length; the session pads it to the negotiated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submit {
    /// The job the share is on.
    pub job_id: JobId,
    /// The part of the extranonce the miner rolled.
    pub extranonce2: Extranonce2,
    /// The header time.
    pub ntime: u32,
    /// The header nonce.
    pub nonce: u32,
    /// The 6th parameter, when the miner rolls versions: the rolled bits or the whole version.
    pub version_bits: Option<u32>,
}

impl Submit {
    /// Reads the fields of a submit: worker, job id, extranonce2, ntime, nonce and the
    /// optional version bits; the worker name is not used (a connection has one).
    ///
    /// # Errors
    /// The [`Reject`] reason of the first field that does not read.
    pub fn read(fields: &[Cow<'_, str>], extranonce2_len: usize) -> Result<Submit, Reject> {
        let field = |i: usize| fields.get(i).map_or("", |f| f.as_ref());
        let job_id = JobId::parse(field(1)).ok_or(Reject::UnknownJob)?;
        let extranonce2 =
            Extranonce2::from_hex(field(2), extranonce2_len).map_err(|_| Reject::BadExtranonce2)?;
        let ntime = parse_hex_u32(field(3)).ok_or(Reject::Malformed)?;
        let nonce = parse_hex_u32(field(4)).ok_or(Reject::Malformed)?;
        let version_bits = match fields.get(5) {
            Some(v) => Some(parse_hex_u32(v).ok_or(Reject::Malformed)?),
            None => None,
        };
        Ok(Submit {
            job_id,
            extranonce2,
            ntime,
            nonce,
            version_bits,
        })
    }
}

/// One decoded line: the id to echo and what was asked.
#[derive(Debug)]
pub struct Message<'a> {
    /// The request id exactly as sent (number, string or null), echoed verbatim.
    pub id: &'a str,
    /// What was asked.
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
        /// The request id, to answer.
        id: String,
        /// The method.
        method: &'static str,
        /// What is wrong with them.
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

/// Decodes one line (without its newline); `extranonce2_len` is the connection's negotiated
/// size, for reading submits.
///
/// # Errors
/// [`DecodeError`]: garbage, a reply, or unreadable params of a known method.
pub fn decode(line: &[u8], extranonce2_len: usize) -> Result<Message<'_>, DecodeError> {
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
            Request::Submit(Submit::read(&p, extranonce2_len))
        }
        "mining.configure" => Request::Configure(
            decode_configure(params).map_err(|d| bad("mining.configure", d.to_string()))?,
        ),
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

/// A `mining.configure` whose parameters do not read.
#[derive(Debug, thiserror::Error)]
enum BadConfigure {
    #[error("no extension list")]
    NoExtensions,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("bad version-rolling.mask {0:?}")]
    Mask(String),
}

fn decode_configure(params: &str) -> Result<Configure, BadConfigure> {
    let mut v = serde_json::from_str::<Vec<serde_json::Value>>(params)?;
    if v.is_empty() {
        return Err(BadConfigure::NoExtensions);
    }
    let opts = match v.get_mut(1).map(serde_json::Value::take) {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::default(),
    };
    let exts: Vec<String> = serde_json::from_value(v.swap_remove(0))?;
    let mut out = Configure::default();
    for ext in exts {
        match ext.as_str() {
            "version-rolling" => {
                let mask = match opts.get("version-rolling.mask") {
                    Some(serde_json::Value::String(s)) => {
                        parse_hex_u32(s).ok_or_else(|| BadConfigure::Mask(s.clone()))?
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

/// What the proxy answers a `mining.configure` with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigureReply {
    /// `None`: not asked; `Some(None)`: refused; `Some(Some(mask))`: the mask granted.
    pub version_rolling: Option<Option<u32>>,
    /// Whether `minimum-difficulty` was asked (always granted).
    pub minimum_difficulty: bool,
    /// Whether `subscribe-extranonce` was asked (always granted).
    pub subscribe_extranonce: bool,
    /// Extensions we do not know, answered `false`.
    pub unknown: Vec<String>,
}

/// Renders replies and notifications into a buffer.
pub mod render;

pub use render::NotifyFields;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_with_five_and_six_params_and_string_ids() {
        let m = decode(br#"{"id":"7","method":"mining.submit","params":["w","1a","00000001","5f5e1000","1a2b"]}"#, 4).unwrap();
        assert_eq!(m.id, "\"7\"");
        let Request::Submit(Ok(s)) = m.request else {
            panic!("not a submit")
        };
        assert_eq!(
            (s.job_id, s.ntime, s.nonce, s.version_bits),
            (JobId::new(0x1a), 0x5f5e_1000, 0x1a2b, None)
        );
        assert_eq!(s.extranonce2.as_bytes(), &[0, 0, 0, 1]);
        let m = decode(
            br#"{"id":4,"method":"mining.submit","params":["w","1","00","0","0","00002000"]}"#,
            4,
        )
        .unwrap();
        let Request::Submit(Ok(s)) = m.request else {
            panic!("not a submit")
        };
        assert_eq!(s.version_bits, Some(0x2000));
        assert!(matches!(
            decode(br#"{"id":4,"method":"mining.submit","params":["w"]}"#, 4),
            Err(DecodeError::BadParams { .. })
        ));
    }

    #[test]
    fn submit_fields_that_do_not_read_carry_their_reject_reason() {
        for (params, reason) in [
            (r#"["w","zz","00","0","0"]"#, Reject::UnknownJob),
            (r#"["w","1","0000000001","0","0"]"#, Reject::BadExtranonce2),
            (r#"["w","1","00","xyz","0"]"#, Reject::Malformed),
            (r#"["w","1","00","0","123456789"]"#, Reject::Malformed),
            (r#"["w","1","00","0","0","nope"]"#, Reject::Malformed),
        ] {
            let line = format!(r#"{{"id":1,"method":"mining.submit","params":{params}}}"#);
            let m = decode(line.as_bytes(), 4).unwrap();
            assert_eq!(m.request, Request::Submit(Err(reason)), "{params}");
        }
    }

    #[test]
    fn configure_reads_mask_and_min_difficulty() {
        let m = decode(br#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","foo"],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048}]}"#, 4).unwrap();
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
                decode(line.as_bytes(), 4).unwrap().request,
                Request::SuggestDifficulty(d)
            );
        }
    }

    #[test]
    fn garbage_unknown_and_replies() {
        assert!(matches!(
            decode(b"GET / HTTP/1.1", 4),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(decode(b"[1,2]", 4), Err(DecodeError::NotJson(_))));
        assert_eq!(
            decode(br#"{"id":9,"result":true,"error":null}"#, 4).unwrap_err(),
            DecodeError::NoMethod
        );
        let m = decode(
            br#"{"id":9,"method":"mining.get_transactions","params":[]}"#,
            4,
        )
        .unwrap();
        assert_eq!(
            m.request,
            Request::Unknown("mining.get_transactions".into())
        );
        let m = decode(br#"{"method":"mining.extranonce.subscribe"}"#, 4).unwrap();
        assert_eq!((m.id, m.request), ("null", Request::ExtranonceSubscribe));
    }

    #[test]
    fn hex_is_tolerated_without_padding() {
        assert_eq!(parse_hex_u32("1a2b"), Some(0x1a2b));
        assert_eq!(parse_hex_u32("0x1fffe000"), Some(0x1fff_e000));
        assert_eq!(parse_hex_u32("123456789"), None);
    }

    #[test]
    fn a_notify_line_is_resent_under_another_id() {
        let fields = NotifyFields {
            job_id: JobId::new(0x1a),
            prev_hash: "00",
            coinb1: &[1],
            coinb2: &[2],
            merkle_branch: &["ab".to_owned()],
            version: 0x2000_0000,
            bits: 0x207f_ffff,
            ntime: 7,
        };
        let line = render::notify(&fields, false);
        let mut out = Vec::new();
        render::notify_as(&mut out, &line, JobId::new(0x8000_0003), 0x6553_f1a0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["params"][0], "80000003");
        assert_eq!(v["params"][7], "6553f1a0");
        let mut original: serde_json::Value = serde_json::from_slice(&line).unwrap();
        original["params"][0] = "80000003".into();
        original["params"][7] = "6553f1a0".into();
        assert_eq!(v, original, "only the id and ntime changed");
        assert_eq!(out.last(), Some(&b'\n'));
    }

    #[test]
    fn rendering() {
        let mut out = Vec::new();
        render::set_difficulty(&mut out, 1024.0);
        render::set_difficulty(&mut out, 0.0001);
        render::reject(&mut out, "\"a\"", Reject::UnknownJob);
        render::subscribed(&mut out, "1", "0000abcd", 4);
        render::configured(
            &mut out,
            "2",
            &ConfigureReply {
                version_rolling: Some(Some(0x1fff_e000)),
                unknown: vec!["foo".into()],
                ..Default::default()
            },
        );
        render::reconnect(&mut out, "10.0.0.1", 3333, 1);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["params"][0], serde_json::json!(1024));
        assert_eq!(lines[1]["params"][0].as_f64(), Some(0.0001));
        assert_eq!(lines[2]["error"][0], 21);
        assert_eq!(lines[2]["error"][1], "job not found");
        assert_eq!(lines[2]["id"], "a");
        assert_eq!(lines[3]["result"][1], "0000abcd");
        assert_eq!(lines[3]["result"][2], 4);
        assert_eq!(lines[3]["result"][0][1][0], "mining.notify");
        assert_eq!(lines[4]["result"]["version-rolling.mask"], "1fffe000");
        assert_eq!(lines[4]["result"]["foo"], false);
        assert_eq!(lines[5]["method"], "client.reconnect");
        assert_eq!(lines[5]["params"], serde_json::json!(["10.0.0.1", 3333, 1]));
    }
}
