//! Configuration: the file ([`raw`]) checked once into typed settings ([`Config`]).
//!
//! Every bad value is refused at start with its key named; nothing downstream re-validates.

pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bitcoin::Network;
use template_provider::{NodeAuth, TemplateSourceConfig};

use self::raw::RawConfig;
use crate::job::ExtranonceLayout;
use crate::share::Difficulty;
use crate::sv1::vardiff::VardiffConfig;
use crate::sv1::Sv1Config;

/// A key with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

fn bad(key: &'static str, problem: impl ToString) -> ConfigError {
    ConfigError {
        key,
        problem: problem.to_string(),
    }
}

/// Where block rewards go in solo mode.
#[derive(Debug, Clone)]
pub enum Payout {
    Address(bitcoin::Address),
    /// An output descriptor, turned into a script by the node (`deriveaddresses`) at start.
    Descriptor(String),
}

/// The node connection.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub rpc_url: String,
    pub auth: NodeAuth,
    pub source: TemplateSourceConfig,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub network: Network,
    pub node: NodeConfig,
    pub payout: Payout,
    pub coinbase_tag: Vec<u8>,
    pub listen: SocketAddr,
    pub sv1: Sv1Config,
    pub blocks_dir: PathBuf,
}

/// The BIP320 general-purpose version bits: what miners may roll unless configured otherwise.
pub const BIP320_MASK: u32 = 0x1fff_e000;

impl Config {
    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// When the file cannot be read, does not parse, or holds a bad value.
    pub fn load(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Validates the raw settings.
    ///
    /// # Errors
    /// The first bad value, with its key.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let network = match raw.network.as_deref().unwrap_or("bitcoin") {
            "mainnet" | "main" => Network::Bitcoin,
            other => Network::from_str(other).map_err(|_| {
                bad(
                    "network",
                    format!("{other:?} is not bitcoin, testnet, testnet4, signet or regtest"),
                )
            })?,
        };

        let n = raw.node;
        let default_port = match network {
            Network::Bitcoin => 8332,
            Network::Testnet => 18332,
            Network::Testnet4 => 48332,
            Network::Signet => 38332,
            _ => 18443,
        };
        let rpc_url = n
            .rpc_url
            .unwrap_or_else(|| format!("http://127.0.0.1:{default_port}"));
        if !rpc_url.starts_with("http://") {
            return Err(bad(
                "node.rpc_url",
                "must start with http:// (the node serves plain HTTP)",
            ));
        }
        let auth = match (n.cookie_file, n.rpc_user, n.rpc_password) {
            (Some(_), Some(_), _) => {
                return Err(bad(
                    "node.cookie_file",
                    "give either cookie_file or rpc_user/rpc_password, not both",
                ))
            }
            (Some(path), None, _) => NodeAuth::CookieFile(path),
            (None, Some(user), Some(password)) => NodeAuth::UserPass { user, password },
            (None, Some(_), None) => {
                return Err(bad("node.rpc_password", "rpc_user needs rpc_password"))
            }
            (None, None, _) => NodeAuth::CookieFile(default_cookie(network)),
        };
        let secs = |v: Option<u64>, d: u64, key: &'static str| -> Result<Duration, ConfigError> {
            match v.unwrap_or(d) {
                0 => Err(bad(key, "must be above 0")),
                s => Ok(Duration::from_secs(s)),
            }
        };
        let source = TemplateSourceConfig {
            network,
            long_poll: secs(n.long_poll_secs, 20, "node.long_poll_secs")?,
            poll_interval: Duration::from_millis(n.poll_interval_ms.unwrap_or(500).max(10)),
            refresh_interval: secs(n.template_refresh_secs, 30, "node.template_refresh_secs")?,
            zmq_hashblock: match n.zmq_hashblock {
                Some(e) if !e.starts_with("tcp://") => {
                    return Err(bad(
                        "node.zmq_hashblock",
                        format!(
                            "{e:?}: expected tcp://HOST:PORT as in the node's -zmqpubhashblock"
                        ),
                    ))
                }
                other => other,
            },
        };

        let c = raw.coinbase;
        let payout = match (c.payout_address, c.payout_descriptor) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "coinbase.payout_address",
                    "give payout_address or payout_descriptor, not both",
                ))
            }
            (Some(a), None) => {
                let addr = bitcoin::Address::from_str(&a)
                    .map_err(|e| bad("coinbase.payout_address", format!("{a:?}: {e}")))?;
                let addr = addr.require_network(network).map_err(|e| {
                    bad(
                        "coinbase.payout_address",
                        format!("{a:?} is not a {network} address: {e}"),
                    )
                })?;
                Payout::Address(addr)
            }
            (None, Some(d)) => Payout::Descriptor(d),
            (None, None) => {
                return Err(bad(
                    "coinbase.payout_address",
                    "required: where solo block rewards go",
                ))
            }
        };
        let tag = c.tag.unwrap_or_else(|| "/jd-proxy/".into()).into_bytes();
        if tag.len() > 40 {
            return Err(bad(
                "coinbase.tag",
                format!(
                    "{} bytes; keep it at most 40 so the coinbase stays small",
                    tag.len()
                ),
            ));
        }

        let s = raw.stratum;
        let listen_s = s.listen.unwrap_or_else(|| "0.0.0.0:3333".into());
        let listen = SocketAddr::from_str(&listen_s)
            .map_err(|e| bad("stratum.listen", format!("{listen_s:?}: {e}")))?;
        let layout = ExtranonceLayout::new(
            s.extranonce1_bytes.unwrap_or(4),
            s.extranonce2_bytes.unwrap_or(4),
        )
        .map_err(|e| bad("stratum.extranonce2_bytes", e))?;
        let mask_s = s
            .version_rolling_mask
            .unwrap_or_else(|| format!("{BIP320_MASK:08x}"));
        let version_mask = u32::from_str_radix(mask_s.trim_start_matches("0x"), 16)
            .map_err(|e| bad("stratum.version_rolling_mask", format!("{mask_s:?}: {e}")))?;
        let max_connections = s.max_connections.unwrap_or(20_000);
        if max_connections == 0 {
            return Err(bad("stratum.max_connections", "must be above 0"));
        }
        let max_line_bytes = s.max_line_bytes.unwrap_or(4096);
        if !(512..=1 << 20).contains(&max_line_bytes) {
            return Err(bad("stratum.max_line_bytes", "must be 512..=1048576"));
        }

        let v = raw.vardiff;
        let diff = |x: Option<f64>, d: f64, key: &'static str| {
            Difficulty::new(x.unwrap_or(d)).map_err(|e| bad(key, e))
        };
        let vardiff = VardiffConfig {
            initial: diff(v.initial_difficulty, 1024.0, "vardiff.initial_difficulty")?,
            min: diff(v.min_difficulty, 0.001, "vardiff.min_difficulty")?,
            max: diff(v.max_difficulty, 1e15, "vardiff.max_difficulty")?,
            target_share_interval: positive_secs(
                v.target_share_secs,
                10.0,
                "vardiff.target_share_secs",
            )?,
            retarget_interval: positive_secs(v.retarget_secs, 60.0, "vardiff.retarget_secs")?,
        };
        if vardiff.min > vardiff.max {
            return Err(bad("vardiff.min_difficulty", "above max_difficulty"));
        }

        let sv1 = Sv1Config {
            max_connections,
            max_line_bytes,
            first_message_timeout: secs(
                s.first_message_timeout_secs,
                30,
                "stratum.first_message_timeout_secs",
            )?,
            idle_timeout: secs(s.idle_timeout_secs, 900, "stratum.idle_timeout_secs")?,
            write_timeout: secs(s.write_timeout_secs, 30, "stratum.write_timeout_secs")?,
            layout,
            version_mask,
            max_ntime_future: Duration::from_secs(s.max_ntime_future_secs.unwrap_or(600)),
            vardiff: VardiffConfig {
                initial: vardiff.initial.clamp(vardiff.min, vardiff.max),
                ..vardiff
            },
        };
        Ok(Config {
            network,
            node: NodeConfig {
                rpc_url,
                auth,
                source,
            },
            payout,
            coinbase_tag: tag,
            listen,
            sv1,
            blocks_dir: raw
                .solo
                .blocks_dir
                .unwrap_or_else(|| PathBuf::from("blocks")),
        })
    }
}

fn positive_secs(v: Option<f64>, d: f64, key: &'static str) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(d);
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(bad(key, format!("{s} is not a positive number of seconds")))
    }
}

/// Bitcoin Core's cookie path in the default data directory.
fn default_cookie(network: Network) -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let base = home.join(".bitcoin");
    match network {
        Network::Bitcoin => base.join(".cookie"),
        Network::Testnet => base.join("testnet3/.cookie"),
        Network::Testnet4 => base.join("testnet4/.cookie"),
        Network::Signet => base.join("signet/.cookie"),
        _ => base.join("regtest/.cookie"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Config::from_raw(raw).map_err(|e| e.to_string())
    }

    const MIN: &str = "network = \"regtest\"\n[coinbase]\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.network, Network::Regtest);
        assert_eq!(c.sv1.version_mask, BIP320_MASK);
        assert_eq!(c.sv1.layout.extranonce2_len(), 4);
        assert_eq!(c.node.rpc_url, "http://127.0.0.1:18443");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            (
                "[stratum]\nextranonce2_bytes = 9\n",
                "stratum.extranonce2_bytes",
            ),
            ("[vardiff]\nmin_difficulty = -1\n", "vardiff.min_difficulty"),
            ("[stratum]\nlisten = \"nope\"\n", "stratum.listen"),
            ("[coinbase]\ntag = \"x\"\n", "coinbase"), // duplicate table
        ] {
            let err = parse(&format!("{MIN}{extra}")).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
        let err = parse("network = \"regtest\"\n[coinbase]\npayout_address = \"1BoatSLRHtKNngkdXEeobR76b53LETtpyT\"\n").unwrap_err();
        assert!(err.contains("coinbase.payout_address"), "{err}");
        let err = parse(&format!("{MIN}[stratum]\nlisten_port = 1\n")).unwrap_err();
        assert!(
            err.contains("listen_port"),
            "unknown keys are refused: {err}"
        );
    }
}
