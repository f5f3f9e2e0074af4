//! `template-provider`: serves the Stratum V2 Template Distribution Protocol from any Bitcoin
//! Core or Knots node, to SV2 pools and job-declaration clients.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sv2_wire::AuthorityKeypair;
use template_provider::logging::{self, LogFormat};
use template_provider::reload::Reloader;
use template_provider::run;

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
    /// Serve templates (see examples/template-provider.toml for every key). Every key can also
    /// be set by an environment variable: TEMPLATE_PROVIDER__SERVER__LISTEN is server.listen.
    /// SIGHUP reloads the farm's policy from the file.
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
        /// Log lines for people, or one JSON object per event for log collectors.
        #[arg(
            long,
            value_enum,
            default_value_t,
            env = "TEMPLATE_PROVIDER_LOG_FORMAT"
        )]
        log_format: LogFormat,
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
            log_format,
        } => {
            logging::init(&log, log_format);
            let (loaded, layers) = match run::load(&config, listen.as_deref()) {
                Ok(l) => l,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("error: {e}");
                    }
                    return ExitCode::from(2);
                }
            };
            if check_config {
                println!("configuration is valid");
                return ExitCode::SUCCESS;
            }
            let load = Box::new(move || run::load(&config, listen.as_deref()));
            let reloader = Reloader::new(load, &layers, run::LIVE_KEYS);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run::serve(
                loaded,
                reloader,
                template_provider::stop_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
