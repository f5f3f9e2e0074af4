//! `jd-proxy`: the gateway that Stratum V1 ASICs connect to. The command line and what each
//! command does live in the library ([`jd_proxy::cli`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    jd_proxy::cli::main(jd_proxy::cli::Cli::parse())
}
