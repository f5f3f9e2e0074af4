//! The config as the daemon reads it: the TOML file, environment variables over it
//! (`JD_PROXY__STRATUM__LISTEN`), and command-line flags over both; then validated, every bad
//! key reported at once with where its value came from.
//!
//! See [`template_provider::layers`] for how variables name keys, lists of tables included.

use std::path::Path;

use template_provider::layers::{KeyErrors, Layers};

use super::raw::RawConfig;
use super::Config;

/// Environment variables naming config keys start with this: `JD_PROXY__VARDIFF__MIN_DIFFICULTY`
/// is `vardiff.min_difficulty`.
pub const ENV_PREFIX: &str = "JD_PROXY__";

/// What a SIGHUP applies to a running proxy: the vardiff settings and the policy's filters.
/// Everything else (and `policy.prioritise_*`, told to the node at start) waits for a restart.
pub const LIVE_KEYS: &[&str] = &[
    "vardiff",
    "policy.exclude_txids",
    "policy.exclude_script_types",
    "policy.max_datacarrier_bytes",
    "policy.min_feerate",
    "policy.weight_reserve",
];

/// A command-line flag that sets a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSetting {
    /// The key, dotted (`stratum.listen`).
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// The flag, for messages (`--listen`).
    pub flag: &'static str,
}

/// Reads `file` (none: defaults), the `JD_PROXY__` variables and `flags`, and validates them.
///
/// # Errors
/// Every bad key, each with the file, variable or flag its value came from.
pub fn load(file: Option<&Path>, flags: &[FlagSetting]) -> Result<(Config, Layers), KeyErrors> {
    let mut layers = Layers::read(file, ENV_PREFIX)?;
    for f in flags {
        layers = layers.set(f.key, &f.value, f.flag)?;
    }
    let config = layers.load::<RawConfig, _>(Config::from_raw)?;
    Ok((config, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "network = \"regtest\"\n[node]\nrpc_url = \"http://127.0.0.1:18443\"\n[coinbase]\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\n[stratum]\nlisten = \"0.0.0.0:3333\"\n";

    fn with_vars<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let out = f();
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        out
    }

    /// The only test of this crate that sets `JD_PROXY__` variables: tests run in parallel,
    /// and another reading them would see these.
    #[test]
    fn variables_and_flags_override_the_file_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jd-proxy.toml");
        std::fs::write(&path, FILE).unwrap();
        let flags = [FlagSetting {
            key: "solo.blocks_dir",
            value: "/var/lib/jd-proxy/blocks".into(),
            flag: "--blocks-dir",
        }];
        let (config, _) = with_vars(
            &[
                ("JD_PROXY__STRATUM__LISTEN", "127.0.0.1:4444"),
                ("JD_PROXY__VARDIFF__MIN_DIFFICULTY", "1e-3"),
                ("JD_PROXY__COINBASE__TAG", "2024"),
                (
                    "JD_PROXY__POLICY__EXCLUDE_SCRIPT_TYPES",
                    "[\"p2pk\", \"bare-multisig\"]",
                ),
            ],
            || load(Some(&path), &flags),
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:4444");
        assert_eq!(config.sv1.vardiff.min.get(), 1e-3);
        assert_eq!(config.coinbase_tag, b"2024");
        assert_eq!(
            config.nodes[0].source.policy.excluded_script_types().len(),
            2
        );
        assert_eq!(
            config.blocks_dir,
            std::path::PathBuf::from("/var/lib/jd-proxy/blocks")
        );

        let err = with_vars(
            &[
                ("JD_PROXY__STRATUM__LISTEN", "nowhere"),
                ("JD_PROXY__STRATUM__LISTN", "0.0.0.0:1"),
                ("JD_PROXY__VARDIFF__RETARGET_SECS", "-1"),
                ("JD_PROXY__UPSTREAM__0__POOL_ADDRESS", "pool:34254"),
            ],
            || load(Some(&path), &[]),
        )
        .unwrap_err()
        .to_string();
        for line in [
            "config key `stratum.listn` (from JD_PROXY__STRATUM__LISTN): unknown key",
            "config key `stratum.listen` (from JD_PROXY__STRATUM__LISTEN): \"nowhere\"",
            "config key `vardiff.retarget_secs` (from JD_PROXY__VARDIFF__RETARGET_SECS)",
            "config key `upstream.pool_authority_public_key`: required",
        ] {
            assert!(err.contains(line), "{line:?} missing from:\n{err}");
        }
        assert_eq!(err.lines().count(), 4, "{err}");
    }
}
