//! Configuration: the file ([`raw`]) checked once into typed settings ([`Config`]).
//!
//! Every bad value is refused at start with its key named; nothing downstream re-validates.

pub mod raw;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bitcoin::Network;

use self::raw::RawConfig;
pub use self::upstream::{DeclarationMode, Endpoint, FailoverConfig, UpstreamConfig};
use crate::job::ExtranonceLayout;
use crate::share::Difficulty;
use crate::sv1::vardiff::VardiffConfig;
use crate::sv1::Sv1Config;

pub use template_provider::config::{bad, parse_network, secs, ConfigError, NodeConfig};

/// Where block rewards go in solo mode.
#[derive(Debug, Clone)]
pub enum Payout {
    Address(bitcoin::Address),
    /// An output descriptor, turned into a script by the node (`deriveaddresses`) at start.
    Descriptor(String),
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
    /// Templates from an external SV2 Template Provider rather than from the node's RPC.
    pub template_provider: Option<TemplateProviderConfig>,
    /// Pools in order of preference; empty: solo mining only. Solo is also where mining goes
    /// when every pool is down.
    pub upstreams: Vec<UpstreamConfig>,
    pub failover: FailoverConfig,
}

/// An external SV2 Template Provider (ours or sv2-tp).
#[derive(Debug, Clone)]
pub struct TemplateProviderConfig {
    /// `host:port`.
    pub address: String,
    /// Its authority key, pinned.
    pub authority: template_provider::sv2::AuthorityPublicKey,
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
        let network = parse_network(raw.network.as_deref().unwrap_or("bitcoin"))?;

        let node = raw.node.resolve_with_policy(network, raw.policy)?;
        if !matches!(node.backend, template_provider::config::NodeBackend::Rpc) {
            return Err(bad(
                "node.backend",
                "jd-proxy reads the node over RPC; for Bitcoin Core IPC run template-provider with backend = \"ipc\" and point [template_provider] at it",
            ));
        }

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
        let template_provider = match raw.template_provider {
            None => None,
            Some(tp) => {
                let address = tp
                    .address
                    .ok_or_else(|| bad("template_provider.address", "required (host:port)"))?;
                let key = tp.authority_public_key.ok_or_else(|| {
                    bad(
                        "template_provider.authority_public_key",
                        "required: the provider's published authority key",
                    )
                })?;
                let authority = key
                    .parse()
                    .map_err(|e| bad("template_provider.authority_public_key", e))?;
                Some(TemplateProviderConfig { address, authority })
            }
        };
        let upstreams = upstream::from_raw(raw.upstream)?;
        if !upstreams.is_empty() && template_provider.is_some() {
            return Err(bad(
                "upstream",
                "pool mode builds jobs from the node's own templates; remove [template_provider] or the upstreams",
            ));
        }
        Ok(Config {
            upstreams,
            failover: FailoverConfig::from_raw(raw.failover)?,
            template_provider,
            network,
            node,
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
