//! `template-provider`: serves the Stratum V2 Template Distribution Protocol from any Bitcoin
//! Core or Knots node, to SV2 pools and job-declaration clients.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sv2_wire::AuthorityKeypair;
use template_provider::server::{Provider, ProviderConfig, RawProviderConfig};

/// SV2 Template Provider for any Bitcoin node: templates built by your node, served over
/// encrypted Stratum V2 Template Distribution.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a fresh authority key pair for the [server] section (clients pin the public key).
    Keygen,
    /// Serve templates (see examples/template-provider.toml for every key).
    Run {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Override server.listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Check the configuration and exit.
        #[arg(long)]
        check_config: bool,
        /// Log filter (also RUST_LOG).
        #[arg(long, default_value = "info", env = "RUST_LOG")]
        log: String,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Keygen => {
            let kp = AuthorityKeypair::generate();
            println!("authority_public_key = \"{}\"", kp.public());
            println!("authority_secret_key = \"{}\"", kp.secret_string());
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            listen,
            check_config,
            log,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&log).unwrap_or_else(|_| "info".into()),
                )
                .init();
            let raw: RawProviderConfig = match std::fs::read_to_string(&config)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            let mut raw = raw;
            if listen.is_some() {
                raw.server.listen = listen;
            }
            let config = match ProviderConfig::from_raw(raw) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if check_config {
                println!("configuration is valid");
                return ExitCode::SUCCESS;
            }
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                match Provider::start(config).await {
                    Ok(p) => {
                        tracing::info!(listen = %p.local_addr(), "template provider running");
                        template_provider::stop_signal().await;
                        p.shutdown().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}
