//! `jd-proxy`: the gateway that Stratum V1 ASICs connect to.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jd_proxy::config::{raw::RawConfig, Config};

/// Stratum V1 gateway for mining farms: your ASICs, unchanged, mining blocks built by your own
/// Bitcoin node.
///
/// Settings come from a TOML file (see examples/jd-proxy.toml for every key, commented); the
/// flags below override the most common ones.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The TOML config file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where ASICs connect, e.g. 0.0.0.0:3333 (stratum.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Chain: bitcoin, testnet, testnet4, signet or regtest (network).
    #[arg(long)]
    network: Option<String>,
    /// The node's JSON-RPC URL, e.g. http://127.0.0.1:8332 (node.rpc_url).
    #[arg(long, value_name = "URL")]
    rpc_url: Option<String>,
    /// The node's .cookie file (node.cookie_file).
    #[arg(long, value_name = "FILE")]
    cookie_file: Option<PathBuf>,
    /// The address block rewards are paid to in solo mode (coinbase.payout_address).
    #[arg(long, value_name = "ADDRESS")]
    payout_address: Option<String>,
    /// Directory every found block is written to before it is submitted (solo.blocks_dir).
    #[arg(long, value_name = "DIR")]
    blocks_dir: Option<PathBuf>,
    /// Log filter, e.g. info or jd_proxy=debug (also RUST_LOG).
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    log: String,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

impl Args {
    fn apply(self, raw: &mut RawConfig) {
        if let Some(v) = self.listen {
            raw.stratum.listen = Some(v);
        }
        if let Some(v) = self.network {
            raw.network = Some(v);
        }
        if let Some(v) = self.rpc_url {
            raw.node.rpc_url = Some(v);
        }
        if let Some(v) = self.cookie_file {
            raw.node.cookie_file = Some(v);
        }
        if let Some(v) = self.payout_address {
            raw.coinbase.payout_address = Some(v);
        }
        if let Some(v) = self.blocks_dir {
            raw.solo.blocks_dir = Some(v);
        }
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .init();
    let check_only = args.check_config;
    let mut raw = match args.config.take() {
        Some(path) => match Config::load(&path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
        None => RawConfig::default(),
    };
    args.apply(&mut raw);
    let config = match Config::from_raw(raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(jd_proxy::run(config, template_provider::stop_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
