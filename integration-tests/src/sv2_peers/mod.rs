//! The Stratum V2 Reference Implementation's pool and translator as real peers: `pool_sv2` 0.7.0
//! (with its embedded Job Declaration Server) and `translator_sv2` 0.6.0, built by
//! `scripts/sv2-peers.sh` and run as child processes.
//!
//! Each [`PoolSv2`] / [`TranslatorSv2`] owns a fresh temporary directory holding its TOML config and
//! its log (stdout and stderr of the child). Dropping the handle kills the process and waits for it;
//! set `JD_KEEP_TEST_DIRS=1` to keep the directory (its path is printed to stderr). Every error
//! from start-up carries the tail of the log.
//!
//! Binaries are looked up, in order, in `$JD_SV2_BIN_DIR`, then in
//! `$JD_CACHE_DIR/sv2-peers-pool_sv2-0.7.0-translator_sv2-0.6.0/bin` (default cache
//! `~/.cache/jd-proxy`).
//!
//! ```no_run
//! # async fn demo(node: &integration_tests::node::BitcoinNode, payout: &bitcoin::Address) -> anyhow::Result<()> {
//! use integration_tests::sv2_peers::{PoolSv2, PoolSv2Config, TemplateSource, TranslatorSv2, TranslatorSv2Config};
//! let pool = PoolSv2::start(PoolSv2Config::new(TemplateSource::ipc(node), payout)).await?;
//! let tproxy = TranslatorSv2::start(TranslatorSv2Config::new(&pool)).await?;
//! println!("SV1 miners connect to {}", tproxy.sv1_addr());
//! # Ok(()) }
//! ```

mod pool;
mod process;
mod toml;
mod translator;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

pub use pool::{Pool, PoolSv2, PoolSv2Config, TemplateSource};
pub use process::Sv2Peer;
pub use translator::{Translator, TranslatorSv2, TranslatorSv2Config};

use crate::support::process::{binary_in, cache_root, dir_from_env};

/// crates.io version of `pool_sv2` that `scripts/sv2-peers.sh` builds.
pub const POOL_SV2_VERSION: &str = "0.7.0";
/// crates.io version of `translator_sv2` that `scripts/sv2-peers.sh` builds.
pub const TRANSLATOR_SV2_VERSION: &str = "0.6.0";
/// Overrides where `pool_sv2` and `translator_sv2` are taken from.
pub const SV2_BIN_DIR_ENV: &str = "JD_SV2_BIN_DIR";
/// `RUST_LOG` for the children (default `info`; they accept a bare level only).
pub const SV2_LOG_ENV: &str = "JD_SV2_LOG";
/// File name of the pool binary.
pub const POOL_BIN: &str = "pool_sv2";
/// File name of the translator binary.
pub const TRANSLATOR_BIN: &str = "translator_sv2";

/// Bitcoin Core IPC schema major version the pool is told to speak (`30` or `31`). Our node is
/// built from Bitcoin Core 31.99 (master), whose `mining.capnp` only adds methods to v31's.
pub const DEFAULT_IPC_VERSION: u8 = 31;

/// The pool logs this once it has a template and a previous hash; only then does it accept
/// (its port is bound, and connections queue, before that).
pub const POOL_READY_LOG: &str = "ready to accept connections";
/// The pool logs this (with the block hash after it) for every share that is a block.
pub const POOL_BLOCK_FOUND_LOG: &str = "Block Found!!!";

/// The script that builds the binaries.
const SCRIPT: &str = "scripts/sv2-peers.sh";
/// How long a start waits for the child's ports and readiness line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(45);
/// Start attempts when a freshly chosen port turns out to be taken.
const START_ATTEMPTS: usize = 3;

fn cache_dir_name() -> String {
    format!("sv2-peers-pool_sv2-{POOL_SV2_VERSION}-translator_sv2-{TRANSLATOR_SV2_VERSION}")
}

/// The directory holding `pool_sv2` and `translator_sv2`.
///
/// Order: `$JD_SV2_BIN_DIR`, then `$JD_CACHE_DIR/sv2-peers-pool_sv2-0.7.0-translator_sv2-0.6.0/bin`
/// (default cache `~/.cache/jd-proxy`). Fails with instructions when neither has them.
pub fn sv2_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir_from_env(SV2_BIN_DIR_ENV, SCRIPT)? {
        return Ok(dir);
    }
    let cached = cache_root().map(|root| root.join(cache_dir_name()).join("bin"));
    match &cached {
        Some(dir) if dir.join(POOL_BIN).is_file() && dir.join(TRANSLATOR_BIN).is_file() => {
            Ok(dir.clone())
        }
        _ => bail!(
            "Stratum V2 reference binaries ({POOL_BIN} {POOL_SV2_VERSION}, {TRANSLATOR_BIN} \
             {TRANSLATOR_SV2_VERSION}) not found (looked in ${SV2_BIN_DIR_ENV}, unset, and {}). \
             Run `{SCRIPT}` from the repository root to build them (once; 10 to 45 minutes \
             on 2 cores), \
             or point {SV2_BIN_DIR_ENV} at a directory holding {POOL_BIN} and {TRANSLATOR_BIN}.",
            cached
                .as_deref()
                .map_or_else(|| "<no $HOME>".into(), |p| p.display().to_string()),
        ),
    }
}

/// Full path of one of the binaries (`pool_sv2` or `translator_sv2`), checked to exist.
pub fn sv2_binary(name: &str) -> anyhow::Result<PathBuf> {
    binary_in(&sv2_bin_dir()?, name, SV2_BIN_DIR_ENV, SCRIPT)
}

#[cfg(test)]
mod tests {
    use sv2_wire::{AuthorityKeypair, AuthorityPublicKey};

    /// Key pairs from the reference implementation's own config examples and key-utils tests.
    #[test]
    fn key_forms_match_the_reference_implementation() {
        for (secret, public) in [
            (
                "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n",
                "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72",
            ),
            (
                "zmBEmPhqo3A92FkiLVvyCz6htc3e53ph3ZbD4ASqGaLjwnFLi",
                "9bDuixKmZqAJnrmP746n8zU1wyAQRrus7th9dxnkPg6RzQvCnan",
            ),
        ] {
            let keys = AuthorityKeypair::from_strings(public, secret).unwrap();
            assert_eq!(keys.secret_string(), secret);
            assert_eq!(keys.public().to_string(), public);
            assert_eq!(public.parse::<AuthorityPublicKey>().unwrap(), keys.public());
        }
        let fresh = AuthorityKeypair::generate();
        assert_eq!(
            fresh
                .public()
                .to_string()
                .parse::<AuthorityPublicKey>()
                .unwrap(),
            fresh.public()
        );
        // Wrong version (12) and a missing byte are refused, like key-utils does.
        assert!("2myPhc5vkPzuC5FXNK5tee79WmP7uoLh55SxezoF8iqwF3E3rnPY"
            .parse::<AuthorityPublicKey>()
            .is_err());
        assert!("2wmHTKZkLg2QzXyEXGMBXzKP7JXDUt8yy9SA5hoQwERc92qR6c"
            .parse::<AuthorityPublicKey>()
            .is_err());
    }
}
