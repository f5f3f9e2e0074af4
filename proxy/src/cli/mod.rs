//! The command line: `jd-proxy` runs the gateway (`jd-proxy run` says the same), `jd-proxy
//! check-config` validates the config, `jd-proxy status` summarises a running instance.
//!
//! A new subcommand is a variant of [`Command`] with its arguments, and its arm in [`main`];
//! its code lives in a module of its own beside [`status`].

pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use template_provider::layers::KeyErrors;
use template_provider::logging::{self, LogFormat};
use template_provider::reload::Reloader;

use crate::config::load::{load, FlagSetting, LIVE_KEYS};

/// Stratum V1 gateway for mining farms: your ASICs, unchanged, mining blocks built by your own
/// Bitcoin node.
///
/// Settings come from a TOML file (see examples/jd-proxy.toml for every key, commented).
/// Every key can also be set by an environment variable, JD_PROXY__ then the key's path in
/// capitals joined by __ (JD_PROXY__STRATUM__LISTEN=0.0.0.0:3333; list entries by index:
/// JD_PROXY__UPSTREAM__0__POOL_ADDRESS), and the flags below set the most common ones over
/// both. SIGHUP reloads the farm's policy and the vardiff settings without dropping a miner.
#[derive(Debug, Parser)]
#[command(
    name = "jd-proxy",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; without one, run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `jd-proxy [FLAGS]` runs, as `jd-proxy run [FLAGS]` does.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run(RunArgs),
    /// Check the configuration (file, environment and flags) and exit: every bad key at once.
    CheckConfig(ConfigArgs),
    /// Summarise a running instance from its JSON API ([http] listen).
    Status(status::StatusArgs),
    /// The share ledger's reports: report, audit, split, variance.
    Ledger(Box<crate::ledger::cli::LedgerArgs>),
}

/// Where the config comes from, and the flags that set keys over it.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The TOML config file; without one, every key not set otherwise has its default.
    #[arg(short, long, value_name = "FILE", env = "JD_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where ASICs connect, e.g. 0.0.0.0:3333 (stratum.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Chain: bitcoin, testnet, testnet4, signet or regtest (network).
    #[arg(long)]
    pub network: Option<String>,
    /// The node's JSON-RPC URL, e.g. http://127.0.0.1:8332 (node.rpc_url).
    #[arg(long, value_name = "URL")]
    pub rpc_url: Option<String>,
    /// The node's .cookie file (node.cookie_file).
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Option<PathBuf>,
    /// The address block rewards are paid to in solo mode (coinbase.payout_address).
    #[arg(long, value_name = "ADDRESS")]
    pub payout_address: Option<String>,
    /// Directory of the block journal (solo.blocks_dir).
    #[arg(long, value_name = "DIR")]
    pub blocks_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The keys the flags set.
    pub fn settings(&self) -> Vec<FlagSetting> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("stratum.listen", self.listen.clone(), "--listen"),
            ("network", self.network.clone(), "--network"),
            ("node.rpc_url", self.rpc_url.clone(), "--rpc-url"),
            ("node.cookie_file", path(&self.cookie_file), "--cookie-file"),
            (
                "coinbase.payout_address",
                self.payout_address.clone(),
                "--payout-address",
            ),
            ("solo.blocks_dir", path(&self.blocks_dir), "--blocks-dir"),
        ]
        .into_iter()
        .filter_map(|(key, value, flag)| {
            Some(FlagSetting {
                key,
                value: value?,
                flag,
            })
        })
        .collect()
    }
}

/// Running the gateway.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Log filter, e.g. info or jd_proxy=debug (also RUST_LOG).
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    pub log: String,
    /// Log lines for people, or one JSON object per event for log collectors.
    #[arg(long, value_enum, default_value_t, env = "JD_PROXY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Check the configuration and exit (as `jd-proxy check-config`).
    #[arg(long)]
    pub check_config: bool,
}

/// Runs the command line; the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        None => run(&cli.run),
        Some(Command::Run(args)) => run(&args),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Status(args)) => status::main(&args),
        Some(Command::Ledger(args)) => crate::ledger::cli::main(*args),
    }
}

/// Exit code of a refused config.
const BAD_CONFIG: u8 = 2;

fn report(errors: &KeyErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    ExitCode::from(BAD_CONFIG)
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    match load(args.config.as_deref(), &args.settings()) {
        Ok(_) => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    if args.check_config {
        return check_config(&args.config);
    }
    logging::init(&args.log, args.log_format);
    let file = args.config.config.clone();
    let settings = args.config.settings();
    let (config, layers) = match load(file.as_deref(), &settings) {
        Ok(loaded) => loaded,
        Err(e) => return report(&e),
    };
    let reloader = Reloader::new(
        Box::new(move || load(file.as_deref(), &settings)),
        &layers,
        LIVE_KEYS,
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = template_provider::stop_signal();
    match runtime.block_on(crate::reload::run_reloading(config, reloader, stop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_runs_and_subcommands_parse() {
        let cli = Cli::try_parse_from(["jd-proxy", "--config", "f.toml", "--listen", "0.0.0.0:1"])
            .unwrap();
        assert!(cli.command.is_none());
        let keys: Vec<_> = cli.run.config.settings().iter().map(|s| s.key).collect();
        assert_eq!(keys, ["stratum.listen"]);
        assert_eq!(cli.run.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from(["jd-proxy", "run", "--log-format", "json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run(r)) if r.log_format == LogFormat::Json));
        let cli =
            Cli::try_parse_from(["jd-proxy", "status", "--api", "http://10.0.0.2:9100"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status(s)) if s.api == "http://10.0.0.2:9100"));
        assert!(
            Cli::try_parse_from(["jd-proxy", "--listen", "x", "status"]).is_err(),
            "run flags and a subcommand do not mix"
        );
    }
}
