//! The Stratum V1 dialects of real ASIC firmware: handshake order, ids, and submit formatting.

use serde_json::{json, Value};
use std::fmt;
use std::str::FromStr;

/// Which firmware's Stratum V1 dialect a miner imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Antminer bmminer/cgminer: `mining.configure` (mask `1fffe000`, min-bit-count 2) and wait for
    /// its reply, then `mining.subscribe ["bmminer/2.0.0"]` (wait), then `mining.authorize`.
    Cgminer,
    /// Whatsminer: configure + subscribe + authorize pipelined without waiting; u32 hex fields in
    /// submits have no zero padding.
    Whatsminer,
    /// Avalon (cgminer 4.11.1): string ids, `mining.subscribe ["cgminer/4.11.1", null]`,
    /// `mining.extranonce.subscribe []`, authorize; no version rolling.
    Avalon,
    /// Bitaxe (ESP-Miner): subscribe, configure asking mask `ffffffff`, `mining.suggest_difficulty`
    /// (default 1000), authorize, all pipelined.
    Bitaxe,
    /// Braiins OS: configure with `version-rolling` and `minimum-difficulty` (wait), subscribe, authorize.
    Braiins,
    /// NerdMiner: subscribe `["NerdMinerV2"]` (wait), authorize, `mining.suggest_difficulty` with a
    /// float (default 0.0001); no version rolling.
    Nerdminer,
}

impl Dialect {
    /// Every dialect, in declaration order.
    pub const ALL: [Dialect; 6] = [
        Dialect::Cgminer,
        Dialect::Whatsminer,
        Dialect::Avalon,
        Dialect::Bitaxe,
        Dialect::Braiins,
        Dialect::Nerdminer,
    ];

    /// The CLI / display name.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Cgminer => "cgminer",
            Dialect::Whatsminer => "whatsminer",
            Dialect::Avalon => "avalon",
            Dialect::Bitaxe => "bitaxe",
            Dialect::Braiins => "braiins",
            Dialect::Nerdminer => "nerdminer",
        }
    }

    /// The user agent sent in `mining.subscribe` (and in answer to `client.get_version`).
    pub fn user_agent(self) -> &'static str {
        match self {
            Dialect::Cgminer => "bmminer/2.0.0",
            Dialect::Whatsminer => "whatsminer/v1.0",
            Dialect::Avalon => "cgminer/4.11.1",
            Dialect::Bitaxe => "bitaxe/BM1366/v2.4.0",
            Dialect::Braiins => "bosminer/1.0.0",
            Dialect::Nerdminer => "NerdMinerV2",
        }
    }

    /// Whether this firmware asks for version rolling (`mining.configure`).
    pub fn requests_version_rolling(self) -> bool {
        !matches!(self, Dialect::Avalon | Dialect::Nerdminer)
    }

    /// The JSON-RPC id of the `n`th request (1-based): a number, or a string for Avalon.
    pub fn request_id(self, n: u64) -> Value {
        match self {
            Dialect::Avalon => Value::String(n.to_string()),
            _ => Value::from(n),
        }
    }

    /// The handshake this firmware sends after connecting, in order, with ids `1..=len`.
    ///
    /// `suggest_difficulty` sets the value of `mining.suggest_difficulty` (Bitaxe, default 1000;
    /// NerdMiner, default 0.0001) or of `minimum-difficulty.value` (Braiins, default 1); the
    /// other dialects never send one and ignore it.
    pub fn handshake(
        self,
        user: &str,
        password: &str,
        suggest_difficulty: Option<f64>,
    ) -> Vec<HandshakeStep> {
        let rolling_1fffe000 =
            json!({"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2});
        let authorize = json!([user, password]);
        let subscribe = json!([self.user_agent()]);
        let steps: Vec<(&'static str, Value, bool)> = match self {
            Dialect::Cgminer => vec![
                (
                    "mining.configure",
                    json!([["version-rolling"], rolling_1fffe000]),
                    true,
                ),
                ("mining.subscribe", subscribe, true),
                ("mining.authorize", authorize, false),
            ],
            Dialect::Whatsminer => vec![
                (
                    "mining.configure",
                    json!([["version-rolling"], rolling_1fffe000]),
                    false,
                ),
                ("mining.subscribe", subscribe, false),
                ("mining.authorize", authorize, false),
            ],
            Dialect::Avalon => vec![
                ("mining.subscribe", json!([self.user_agent(), null]), true),
                ("mining.extranonce.subscribe", json!([]), false),
                ("mining.authorize", authorize, false),
            ],
            Dialect::Bitaxe => vec![
                ("mining.subscribe", subscribe, false),
                (
                    "mining.configure",
                    json!([["version-rolling"], {"version-rolling.mask": "ffffffff"}]),
                    false,
                ),
                (
                    "mining.suggest_difficulty",
                    json!([json_number(suggest_difficulty.unwrap_or(1000.0))]),
                    false,
                ),
                ("mining.authorize", authorize, false),
            ],
            Dialect::Braiins => vec![
                (
                    "mining.configure",
                    json!([
                        ["version-rolling", "minimum-difficulty"],
                        {
                            "version-rolling.mask": "1fffe000",
                            "version-rolling.min-bit-count": 2,
                            "minimum-difficulty.value": json_number(suggest_difficulty.unwrap_or(1.0)),
                        }
                    ]),
                    true,
                ),
                ("mining.subscribe", subscribe, false),
                ("mining.authorize", authorize, false),
            ],
            Dialect::Nerdminer => vec![
                ("mining.subscribe", subscribe, true),
                ("mining.authorize", authorize, false),
                (
                    "mining.suggest_difficulty",
                    json!([json_number(suggest_difficulty.unwrap_or(0.0001))]),
                    false,
                ),
            ],
        };
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (method, params, wait_for_reply))| HandshakeStep {
                request: Request {
                    id: self.request_id(i as u64 + 1),
                    method,
                    params,
                },
                wait_for_reply,
            })
            .collect()
    }

    /// `mining.submit` params. `version_bits` (already `& mask`) is `Some` only when version
    /// rolling was negotiated, which makes it the 6th param. Whatsminer drops leading zeros
    /// from the u32 fields.
    pub fn submit_params(
        self,
        worker: &str,
        job_id: &str,
        extranonce2: &[u8],
        ntime: u32,
        nonce: u32,
        version_bits: Option<u32>,
    ) -> Value {
        let u32hex = |v: u32| match self {
            Dialect::Whatsminer => format!("{v:x}"),
            _ => format!("{v:08x}"),
        };
        let mut p = vec![
            Value::from(worker),
            Value::from(job_id),
            Value::from(hex::encode(extranonce2)),
            Value::from(u32hex(ntime)),
            Value::from(u32hex(nonce)),
        ];
        if let Some(v) = version_bits {
            p.push(Value::from(u32hex(v)));
        }
        Value::Array(p)
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        let d = match l.as_str() {
            "cgminer" | "antminer" | "bmminer" => Dialect::Cgminer,
            "whatsminer" | "btminer" => Dialect::Whatsminer,
            "avalon" | "canaan" => Dialect::Avalon,
            "bitaxe" | "esp-miner" | "espminer" => Dialect::Bitaxe,
            "braiins" | "bosminer" | "braiins-os" => Dialect::Braiins,
            "nerdminer" | "nerd" => Dialect::Nerdminer,
            _ => {
                let names: Vec<_> = Dialect::ALL.iter().map(|d| d.name()).collect();
                return Err(format!(
                    "unknown dialect {s:?} (expected one of {})",
                    names.join(", ")
                ));
            }
        };
        Ok(d)
    }
}

/// One JSON-RPC request line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The JSON-RPC id, as the dialect spells it.
    pub id: Value,
    /// The JSON-RPC method.
    pub method: &'static str,
    /// The JSON-RPC params.
    pub params: Value,
}

impl Request {
    /// The wire form, without the trailing newline.
    pub fn to_line(&self) -> String {
        json!({"id": self.id, "method": self.method, "params": self.params}).to_string()
    }
}

/// One request of a dialect's handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct HandshakeStep {
    /// The request to send.
    pub request: Request,
    /// Whether the firmware waits for this request's reply before sending the next one.
    pub wait_for_reply: bool,
}

/// A difficulty as JSON: an integer when it is integral (`1000`, as firmware sends it), else a float.
pub fn json_number(d: f64) -> Value {
    if d.is_finite() && d.fract() == 0.0 && d.abs() < 9.0e15 {
        Value::from(d as i64)
    } else {
        serde_json::Number::from_f64(d)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(d: Dialect, suggest: Option<f64>) -> Vec<(String, bool)> {
        d.handshake("w.1", "x", suggest)
            .into_iter()
            .map(|s| (s.request.to_line(), s.wait_for_reply))
            .collect()
    }

    #[test]
    fn cgminer_handshake() {
        assert_eq!(
            lines(Dialect::Cgminer, Some(0.5)),
            vec![
                (r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2}]}"#.into(), true),
                (r#"{"id":2,"method":"mining.subscribe","params":["bmminer/2.0.0"]}"#.into(), true),
                (r#"{"id":3,"method":"mining.authorize","params":["w.1","x"]}"#.into(), false),
            ]
        );
    }

    #[test]
    fn whatsminer_handshake_is_pipelined() {
        let l = lines(Dialect::Whatsminer, None);
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|(_, wait)| !wait));
        assert!(l[0].0.contains(r#""method":"mining.configure""#));
        assert_eq!(
            l[1].0,
            r#"{"id":2,"method":"mining.subscribe","params":["whatsminer/v1.0"]}"#
        );
        assert_eq!(
            l[2].0,
            r#"{"id":3,"method":"mining.authorize","params":["w.1","x"]}"#
        );
    }

    #[test]
    fn avalon_handshake() {
        assert_eq!(
            lines(Dialect::Avalon, Some(1.0)),
            vec![
                (
                    r#"{"id":"1","method":"mining.subscribe","params":["cgminer/4.11.1",null]}"#
                        .into(),
                    true
                ),
                (
                    r#"{"id":"2","method":"mining.extranonce.subscribe","params":[]}"#.into(),
                    false
                ),
                (
                    r#"{"id":"3","method":"mining.authorize","params":["w.1","x"]}"#.into(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn bitaxe_handshake() {
        assert_eq!(
            lines(Dialect::Bitaxe, None),
            vec![
                (r#"{"id":1,"method":"mining.subscribe","params":["bitaxe/BM1366/v2.4.0"]}"#.into(), false),
                (r#"{"id":2,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}"#.into(), false),
                (r#"{"id":3,"method":"mining.suggest_difficulty","params":[1000]}"#.into(), false),
                (r#"{"id":4,"method":"mining.authorize","params":["w.1","x"]}"#.into(), false),
            ]
        );
        assert_eq!(
            lines(Dialect::Bitaxe, Some(0.001))[2].0,
            r#"{"id":3,"method":"mining.suggest_difficulty","params":[0.001]}"#
        );
    }

    #[test]
    fn braiins_handshake() {
        assert_eq!(
            lines(Dialect::Braiins, Some(64.0)),
            vec![
                (r#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty"],{"minimum-difficulty.value":64,"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2}]}"#.into(), true),
                (r#"{"id":2,"method":"mining.subscribe","params":["bosminer/1.0.0"]}"#.into(), false),
                (r#"{"id":3,"method":"mining.authorize","params":["w.1","x"]}"#.into(), false),
            ]
        );
        assert!(lines(Dialect::Braiins, Some(1e-6))[0]
            .0
            .contains(r#""minimum-difficulty.value":1e-6"#));
    }

    #[test]
    fn nerdminer_handshake() {
        assert_eq!(
            lines(Dialect::Nerdminer, None),
            vec![
                (
                    r#"{"id":1,"method":"mining.subscribe","params":["NerdMinerV2"]}"#.into(),
                    true
                ),
                (
                    r#"{"id":2,"method":"mining.authorize","params":["w.1","x"]}"#.into(),
                    false
                ),
                (
                    r#"{"id":3,"method":"mining.suggest_difficulty","params":[0.0001]}"#.into(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn submit_formats() {
        let en2 = [0, 0, 0, 1];
        assert_eq!(
            Dialect::Cgminer
                .submit_params("w", "j1", &en2, 0x5f00_0001, 0x1a2b, Some(0x2000))
                .to_string(),
            r#"["w","j1","00000001","5f000001","00001a2b","00002000"]"#
        );
        assert_eq!(
            Dialect::Whatsminer
                .submit_params("w", "j1", &en2, 0x5f00_0001, 0x1a2b, Some(0x2000))
                .to_string(),
            r#"["w","j1","00000001","5f000001","1a2b","2000"]"#
        );
        assert_eq!(
            Dialect::Avalon
                .submit_params("w", "j1", &en2, 0x5f00_0001, 0, None)
                .to_string(),
            r#"["w","j1","00000001","5f000001","00000000"]"#
        );
    }

    #[test]
    fn names_roundtrip() {
        for d in Dialect::ALL {
            assert_eq!(d.name().parse::<Dialect>().unwrap(), d);
            assert_eq!(d.to_string().to_uppercase().parse::<Dialect>().unwrap(), d);
        }
        assert!("s9000".parse::<Dialect>().is_err());
        assert_eq!(
            Dialect::ALL
                .iter()
                .filter(|d| d.requests_version_rolling())
                .count(),
            4
        );
    }
}
