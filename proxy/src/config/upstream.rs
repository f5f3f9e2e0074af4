//! Pools to mine for: an ordered list, each a pool and, when the farm builds its own blocks, the
//! pool's Job Declaration Server.

use std::time::Duration;

pub use job_declarator::Mode as DeclarationMode;
use sv2_wire::AuthorityPublicKey;

use super::raw::{RawFailover, RawUpstream};
use super::{bad, secs, ConfigError};

/// A Noise endpoint: where it is and the authority key its certificate must be signed by.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// The key its certificate must be signed by.
    pub authority: AuthorityPublicKey,
}

/// One pool.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// For logs.
    pub name: String,
    /// The pool's mining service.
    pub pool: Endpoint,
    /// The JDS, and what is declared to it; `None`: mine the pool's own jobs.
    pub jds: Option<(Endpoint, DeclarationMode)>,
    /// The account shares are credited to.
    pub user_identity: String,
}

/// Timings of the upstream connections.
#[derive(Debug, Clone, Copy)]
pub struct FailoverConfig {
    /// TCP connect plus Noise handshake.
    pub connect_timeout: Duration,
    /// Any answer we wait for: setup, channel, token, declaration, custom job.
    pub response_timeout: Duration,
    /// How often a more preferred upstream is tried again while a less preferred one (or solo)
    /// is in use.
    pub retry_preferred: Duration,
    /// How often the farm's hashrate is reported (`UpdateChannel`).
    pub hashrate_report: Duration,
}

impl FailoverConfig {
    /// Checks `[failover]`.
    pub(super) fn from_raw(raw: &RawFailover) -> Result<Self, ConfigError> {
        Ok(FailoverConfig {
            connect_timeout: secs(raw.connect_timeout_secs, 5, "failover.connect_timeout_secs")?,
            response_timeout: secs(
                raw.response_timeout_secs,
                10,
                "failover.response_timeout_secs",
            )?,
            retry_preferred: secs(
                raw.retry_preferred_secs,
                30,
                "failover.retry_preferred_secs",
            )?,
            hashrate_report: secs(
                raw.hashrate_report_secs,
                60,
                "failover.hashrate_report_secs",
            )?,
        })
    }
}

fn endpoint(
    address: Option<String>,
    key: Option<String>,
    address_key: &'static str,
    key_key: &'static str,
) -> Result<Endpoint, ConfigError> {
    let address = address.ok_or_else(|| bad(address_key, "required (host:port)"))?;
    let key = key.ok_or_else(|| bad(key_key, "required: the pool's published authority key"))?;
    let authority = key.parse().map_err(|e| bad(key_key, e))?;
    Ok(Endpoint { address, authority })
}

pub(super) fn from_raw(list: Vec<RawUpstream>) -> Result<Vec<UpstreamConfig>, ConfigError> {
    list.into_iter()
        .enumerate()
        .map(|(i, u)| {
            let pool = endpoint(
                u.pool_address,
                u.pool_authority_public_key,
                "upstream.pool_address",
                "upstream.pool_authority_public_key",
            )?;
            let mode = match u.declaration.as_deref() {
                None | Some("full-template") => DeclarationMode::FullTemplate,
                Some("coinbase-only") => DeclarationMode::CoinbaseOnly,
                Some(other) => {
                    return Err(bad(
                        "upstream.declaration",
                        format!("{other:?}: give \"full-template\" or \"coinbase-only\""),
                    ))
                }
            };
            let jds = match u.jds_address {
                None => {
                    if u.jds_authority_public_key.is_some() || u.declaration.is_some() {
                        return Err(bad(
                            "upstream.jds_address",
                            "required when jds_authority_public_key or declaration is given",
                        ));
                    }
                    None
                }
                Some(address) => {
                    // A pool usually signs both services with one authority key.
                    let authority = match u.jds_authority_public_key {
                        None => pool.authority,
                        Some(k) => k
                            .parse()
                            .map_err(|e| bad("upstream.jds_authority_public_key", e))?,
                    };
                    Some((Endpoint { address, authority }, mode))
                }
            };
            Ok(UpstreamConfig {
                name: u.name.unwrap_or_else(|| format!("upstream-{}", i + 1)),
                pool,
                jds,
                user_identity: u.user_identity.unwrap_or_else(|| "jd-proxy".into()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::raw::RawConfig;
    use crate::config::{Config, DeclarationMode};

    const BASE: &str = "network = \"regtest\"\n[coinbase]\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\n";
    const KEY: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";

    fn parse(extra: &str) -> Result<Config, String> {
        let raw: RawConfig =
            toml::from_str(&format!("{BASE}{extra}")).map_err(|e| e.to_string())?;
        Config::from_raw(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn upstreams_keep_their_order_and_defaults() {
        let c = parse(&format!(
            "[[upstream]]\npool_address = \"a:1\"\npool_authority_public_key = \"{KEY}\"\njds_address = \"a:2\"\n\
             [[upstream]]\nname = \"backup\"\npool_address = \"b:1\"\npool_authority_public_key = \"{KEY}\"\n\
             [failover]\nretry_preferred_secs = 5\n"
        ))
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        let (first, second) = (&c.upstreams[0], &c.upstreams[1]);
        assert_eq!(
            (first.name.as_str(), second.name.as_str()),
            ("upstream-1", "backup")
        );
        let (jds, mode) = first.jds.as_ref().unwrap();
        assert_eq!(jds.address, "a:2");
        assert_eq!(
            jds.authority, first.pool.authority,
            "the pool's key signs its JDS too"
        );
        assert_eq!(*mode, DeclarationMode::FullTemplate);
        assert!(second.jds.is_none(), "no JDS: the pool's own jobs");
        assert_eq!(c.failover.retry_preferred.as_secs(), 5);
        assert_eq!(c.failover.response_timeout.as_secs(), 10);
    }

    #[test]
    fn bad_upstreams_name_their_key() {
        for (extra, key) in [
            ("[[upstream]]\npool_address = \"a:1\"\n", "upstream.pool_authority_public_key"),
            (
                &format!("[[upstream]]\npool_authority_public_key = \"{KEY}\"\n") as &str,
                "upstream.pool_address",
            ),
            (
                "[[upstream]]\npool_address = \"a:1\"\npool_authority_public_key = \"nope\"\n",
                "upstream.pool_authority_public_key",
            ),
            (
                &format!("[[upstream]]\npool_address = \"a:1\"\npool_authority_public_key = \"{KEY}\"\njds_address = \"a:2\"\ndeclaration = \"half\"\n"),
                "upstream.declaration",
            ),
            (
                &format!("[[upstream]]\npool_address = \"a:1\"\npool_authority_public_key = \"{KEY}\"\ndeclaration = \"coinbase-only\"\n"),
                "upstream.jds_address",
            ),
            (
                &format!("[[upstream]]\npool_address = \"a:1\"\npool_authority_public_key = \"{KEY}\"\n[template_provider]\naddress = \"t:1\"\nauthority_public_key = \"{KEY}\"\n"),
                "upstream",
            ),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }
}
