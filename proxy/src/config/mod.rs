//! Configuration: the file ([`raw`]) checked once into typed settings ([`Config`]).
//!
//! Every bad value is refused at start with its key named; nothing downstream re-validates.

pub mod http;
pub mod load;
pub mod raw;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bitcoin::Network;

pub use self::http::HttpConfig;
use self::raw::{RawConfig, RawStratum, RawTemplateProvider, RawVardiff};
pub use self::route::RoutingConfig;
pub use self::upstream::{DeclarationMode, Endpoint, FailoverConfig, UpstreamConfig};
use crate::sv1::admission::{parse_net, AdmissionConfig};
use crate::sv1::vardiff::VardiffConfig;
use crate::sv1::Sv1Config;
use mining_types::{Difficulty, ExtranonceLayout};

pub use template_provider::config::{
    bad, parse_network, secs, ConfigError, ConfigErrors, NodeConfig,
};

/// Where block rewards go in solo mode.
#[derive(Debug, Clone)]
pub enum Payout {
    /// An address of the configured network.
    Address(bitcoin::Address),
    /// An output descriptor, turned into a script by the node (`deriveaddresses`) at start.
    Descriptor(String),
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The chain mined.
    pub network: Network,
    /// The farm's nodes, most preferred first: templates come from the first that answers,
    /// blocks go to all.
    pub nodes: Vec<NodeConfig>,
    /// Where solo rewards go.
    pub payout: Payout,
    /// Written into every coinbase.
    pub coinbase_tag: Vec<u8>,
    /// Where ASICs connect.
    pub listen: SocketAddr,
    /// The miner-facing server.
    pub sv1: Sv1Config,
    /// Who may connect.
    pub admission: AdmissionConfig,
    /// Where found blocks are written.
    pub blocks_dir: PathBuf,
    /// Templates from an external SV2 Template Provider rather than from the node's RPC.
    pub template_provider: Option<TemplateProviderConfig>,
    /// Pools in order of preference; empty: solo mining only. Solo is also where mining goes
    /// when every pool is down.
    pub upstreams: Vec<UpstreamConfig>,
    /// How upstreams are watched and left.
    pub failover: FailoverConfig,
    /// Handing over to a newer version.
    pub upgrade: UpgradeConfig,
    /// The operators' HTTP server.
    pub http: HttpConfig,
    /// The share ledger.
    pub ledger: crate::ledger::LedgerConfig,
    /// Worker to customer (`[[customer]]`), for the ledger and routing.
    pub customers: ledger_math::CustomerMap,
    /// Which ASICs mine for which upstreams (`[[route]]`); never empty: without routes, one
    /// over every upstream.
    pub routes: Vec<crate::routing::rules::RouteSpec>,
    /// How the weighted split is kept.
    pub routing: RoutingConfig,
}

/// `[upgrade]`, checked.
#[derive(Debug, Clone, Default)]
pub struct UpgradeConfig {
    /// Where a newer version asks for the listening socket.
    pub handover_socket: Option<PathBuf>,
}

/// An external SV2 Template Provider (ours or sv2-tp).
#[derive(Debug, Clone)]
pub struct TemplateProviderConfig {
    /// `host:port`.
    pub address: String,
    /// Its authority key, pinned.
    pub authority: sv2_wire::AuthorityPublicKey,
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
    /// Every bad value, each with its key.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let network = e
            .take(parse_network(raw.network.as_deref().unwrap_or("bitcoin")))
            .unwrap_or(Network::Bitcoin);
        let books = e.take_all(crate::ledger::config::from_raw(&raw));
        let nodes = e.take_all(raw.node.resolve(network, &raw.policy));
        if let Some(err) = nodes.as_deref().and_then(rpc_only) {
            e.push(err);
        }
        let c = raw.coinbase;
        let payout = e.take(payout(c.payout_address, c.payout_descriptor, network));
        let tag = e.take(coinbase_tag(c.tag));
        let listen = e.take(listen(raw.stratum.listen.clone()));
        let sv1 = e.take_all(sv1(&raw.stratum, &raw.vardiff));
        let admission = e.take_all(admission(&raw.stratum));
        let template_provider = e.take(template_provider(raw.template_provider));
        let upstreams = e.take(upstream::from_raw(raw.upstream));
        let failover = e.take(FailoverConfig::from_raw(&raw.failover));
        let http = e.take_all(HttpConfig::from_raw(&raw.http));
        let (
            Some(nodes),
            Some(payout),
            Some(coinbase_tag),
            Some(listen),
            Some(sv1),
            Some(admission),
            Some(template_provider),
            Some(upstreams),
            Some(failover),
        ) = (
            nodes,
            payout,
            tag,
            listen,
            sv1,
            admission,
            template_provider,
            upstreams,
            failover,
        )
        else {
            return Err(e);
        };
        let (Some((ledger, customers)), Some(http)) = (books, http) else {
            return Err(e);
        };
        let routing = route::from_raw(&raw.route, &raw.routing, &upstreams, &customers);
        let Some((routes, routing)) = e.take_all(routing) else {
            return Err(e);
        };
        e.take(pool_needs_node(&upstreams, template_provider.as_ref()));
        if !e.is_empty() {
            return Err(e);
        }
        Ok(Config {
            network,
            nodes,
            payout,
            coinbase_tag,
            listen,
            sv1,
            admission,
            blocks_dir: raw
                .solo
                .blocks_dir
                .unwrap_or_else(|| PathBuf::from("blocks")),
            template_provider,
            upstreams,
            failover,
            upgrade: UpgradeConfig {
                handover_socket: raw.upgrade.handover_socket,
            },
            ledger,
            customers,
            http,
            routes,
            routing,
        })
    }
}

/// Pool mode declares the node's own templates: not those of an external provider.
fn pool_needs_node(
    upstreams: &[UpstreamConfig],
    provider: Option<&TemplateProviderConfig>,
) -> Result<(), ConfigError> {
    if !upstreams.is_empty() && provider.is_some() {
        return Err(bad(
            "upstream",
            "pool mode builds jobs from the node's own templates; remove [template_provider] or the upstreams",
        ));
    }
    Ok(())
}

/// jd-proxy reads its nodes over RPC: an IPC backend is refused, naming its key.
fn rpc_only(nodes: &[NodeConfig]) -> Option<ConfigError> {
    let ipc = nodes
        .iter()
        .any(|n| !matches!(n.backend, template_provider::config::BackendKind::Rpc));
    ipc.then(|| {
        bad(
            "node.backend",
            "jd-proxy reads the node over RPC; for Bitcoin Core IPC run template-provider with backend = \"ipc\" and point [template_provider] at it",
        )
    })
}

/// `coinbase.payout_address` or `coinbase.payout_descriptor`, exactly one.
fn payout(
    address: Option<String>,
    descriptor: Option<String>,
    network: Network,
) -> Result<Payout, ConfigError> {
    match (address, descriptor) {
        (Some(_), Some(_)) => Err(bad(
            "coinbase.payout_address",
            "give payout_address or payout_descriptor, not both",
        )),
        (Some(a), None) => {
            let addr = bitcoin::Address::from_str(&a)
                .map_err(|e| bad("coinbase.payout_address", format!("{a:?}: {e}")))?;
            let addr = addr.require_network(network).map_err(|e| {
                let problem = format!("{a:?} is not a {network} address: {e}");
                bad("coinbase.payout_address", problem)
            })?;
            Ok(Payout::Address(addr))
        }
        (None, Some(d)) => Ok(Payout::Descriptor(d)),
        (None, None) => Err(bad(
            "coinbase.payout_address",
            "required: where solo block rewards go",
        )),
    }
}

/// `coinbase.tag`: short, so the coinbase stays small for old firmware.
fn coinbase_tag(tag: Option<String>) -> Result<Vec<u8>, ConfigError> {
    let tag = tag.unwrap_or_else(|| "/jd-proxy/".into()).into_bytes();
    if tag.len() > 40 {
        let problem = format!(
            "{} bytes; keep it at most 40 so the coinbase stays small",
            tag.len()
        );
        return Err(bad("coinbase.tag", problem));
    }
    Ok(tag)
}

/// `stratum.listen`, every interface on port 3333 by default.
fn listen(listen: Option<String>) -> Result<SocketAddr, ConfigError> {
    let listen = listen.unwrap_or_else(|| "0.0.0.0:3333".into());
    SocketAddr::from_str(&listen).map_err(|e| bad("stratum.listen", format!("{listen:?}: {e}")))
}

/// `[stratum]` and `[vardiff]`: the miner-facing server.
fn sv1(s: &RawStratum, v: &RawVardiff) -> Result<Sv1Config, ConfigErrors> {
    let mut e = ConfigErrors::default();
    let layout = e.take(
        ExtranonceLayout::new(
            s.extranonce1_bytes.unwrap_or(4),
            s.extranonce2_bytes.unwrap_or(4),
        )
        .map_err(|x| bad("stratum.extranonce2_bytes", x)),
    );
    let mask = s
        .version_rolling_mask
        .clone()
        .unwrap_or_else(|| format!("{BIP320_MASK:08x}"));
    let version_mask = e.take(
        u32::from_str_radix(mask.trim_start_matches("0x"), 16)
            .map_err(|x| bad("stratum.version_rolling_mask", format!("{mask:?}: {x}"))),
    );
    let max_connections = s.max_connections.unwrap_or(20_000);
    if max_connections == 0 {
        e.push(bad("stratum.max_connections", "must be above 0"));
    }
    let max_line_bytes = s.max_line_bytes.unwrap_or(4096);
    if !(512..=1 << 20).contains(&max_line_bytes) {
        e.push(bad("stratum.max_line_bytes", "must be 512..=1048576"));
    }
    let first = e.take(secs(
        s.first_message_timeout_secs,
        30,
        "stratum.first_message_timeout_secs",
    ));
    let idle = e.take(secs(s.idle_timeout_secs, 900, "stratum.idle_timeout_secs"));
    let handshake = e.take(secs(
        s.handshake_timeout_secs,
        60,
        "stratum.handshake_timeout_secs",
    ));
    let max_requests_per_sec = s.max_requests_per_sec.unwrap_or(100);
    if max_requests_per_sec == 0 {
        e.push(bad("stratum.max_requests_per_sec", "must be above 0"));
    }
    let write = e.take(secs(s.write_timeout_secs, 30, "stratum.write_timeout_secs"));
    let vardiff = e.take_all(vardiff(v));
    let (
        Some(layout),
        Some(version_mask),
        Some(first),
        Some(handshake),
        Some(idle),
        Some(write),
        Some(vardiff),
    ) = (layout, version_mask, first, handshake, idle, write, vardiff)
    else {
        return Err(e);
    };
    if !e.is_empty() {
        return Err(e);
    }
    Ok(Sv1Config {
        max_connections,
        max_line_bytes,
        first_message_timeout: first,
        handshake_timeout: handshake,
        max_requests_per_sec,
        idle_timeout: idle,
        write_timeout: write,
        reconnect_wait: Duration::from_secs(s.reconnect_wait_secs.unwrap_or(1)),
        layout,
        version_mask,
        max_ntime_future: Duration::from_secs(s.max_ntime_future_secs.unwrap_or(600)),
        vardiff,
    })
}

/// `stratum.allow_networks`, `max_connections_per_ip` and `per_ip_exempt`.
fn admission(s: &RawStratum) -> Result<AdmissionConfig, ConfigErrors> {
    let mut e = ConfigErrors::default();
    let mut nets = |list: &[String], key: &'static str| -> Vec<ipnet::IpNet> {
        list.iter()
            .filter_map(|n| e.take(parse_net(n).map_err(|x| bad(key, x))))
            .collect()
    };
    let allow = nets(&s.allow_networks, "stratum.allow_networks");
    let exempt = nets(&s.per_ip_exempt, "stratum.per_ip_exempt");
    if !e.is_empty() {
        return Err(e);
    }
    Ok(AdmissionConfig {
        allow,
        max_per_ip: s.max_connections_per_ip.unwrap_or(256),
        exempt,
    })
}

/// `[vardiff]`; the initial difficulty is kept within the bounds.
fn vardiff(v: &RawVardiff) -> Result<VardiffConfig, ConfigErrors> {
    let mut e = ConfigErrors::default();
    let diff = |x: Option<f64>, d: f64, key: &'static str| {
        Difficulty::new(x.unwrap_or(d)).map_err(|err| bad(key, err))
    };
    let initial = e.take(diff(
        v.initial_difficulty,
        1024.0,
        "vardiff.initial_difficulty",
    ));
    let min = e.take(diff(v.min_difficulty, 0.001, "vardiff.min_difficulty"));
    let max = e.take(diff(v.max_difficulty, 1e15, "vardiff.max_difficulty"));
    let target = e.take(positive_secs(
        v.target_share_secs,
        10.0,
        "vardiff.target_share_secs",
    ));
    let retarget = e.take(positive_secs(
        v.retarget_secs,
        60.0,
        "vardiff.retarget_secs",
    ));
    let (Some(initial), Some(min), Some(max), Some(target), Some(retarget)) =
        (initial, min, max, target, retarget)
    else {
        return Err(e);
    };
    if min > max {
        e.push(bad("vardiff.min_difficulty", "above max_difficulty"));
        return Err(e);
    }
    Ok(VardiffConfig {
        initial: initial.clamp(min, max),
        min,
        max,
        target_share_interval: target,
        retarget_interval: retarget,
    })
}

/// `[template_provider]`, when given: both keys are required.
fn template_provider(
    tp: Option<RawTemplateProvider>,
) -> Result<Option<TemplateProviderConfig>, ConfigError> {
    let Some(tp) = tp else {
        return Ok(None);
    };
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
    Ok(Some(TemplateProviderConfig { address, authority }))
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

    #[test]
    fn the_example_config_is_valid_with_every_commented_table_too() {
        let text = include_str!("../../../examples/jd-proxy.toml");
        parse(text).expect("the example as shipped");
        // The commented-out tables, switched on, must be known keys with valid values too.
        let on: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| looks_like_toml(r))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let raw: RawConfig = toml::from_str(&on).expect("every documented key is known");
        drop(raw);
    }

    /// A commented line that is a table header or a `key = value`, not prose.
    fn looks_like_toml(line: &str) -> bool {
        line.starts_with('[')
            || line.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    }

    const MIN: &str = "network = \"regtest\"\n[coinbase]\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.network, Network::Regtest);
        assert_eq!(c.sv1.version_mask, BIP320_MASK);
        assert_eq!(c.sv1.layout.extranonce2_len(), 4);
        assert_eq!(c.nodes[0].rpc_url, "http://127.0.0.1:18443");
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

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let text = "network = \"regtest\"\n[coinbase]\ntag = \"0123456789012345678901234567890123456789X\"\n[stratum]\nlisten = \"nope\"\nmax_connections = 0\n[vardiff]\nretarget_secs = -1\n[node]\nrpc_url = \"https://x\"\n[failover]\nresponse_timeout_secs = 0\n";
        let err = parse(text).unwrap_err();
        for key in [
            "coinbase.payout_address",
            "coinbase.tag",
            "stratum.listen",
            "stratum.max_connections",
            "vardiff.retarget_secs",
            "node.rpc_url",
            "failover.response_timeout_secs",
        ] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }
        assert_eq!(err.lines().count(), 7, "one line per bad key:\n{err}");
    }
}
