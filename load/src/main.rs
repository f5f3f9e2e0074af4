//! `jd-load`: N simulated Stratum V1 miners against one server. See `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use jd_load::client::Mode;
use jd_load::driver::{drive, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Connect, handshake, receive jobs.
    Idle,
    /// As idle, and submit valid shares at --share-rate.
    Shares,
}

/// Simulated Stratum V1 miners against one server: connect time, new-tip latency at every
/// miner, share throughput and latency, and the server's memory per connection.
///
/// Traffic goes to --server only; keep it on loopback.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The Stratum V1 server.
    #[arg(long, default_value = "127.0.0.1:3333")]
    server: SocketAddr,
    #[arg(long, value_enum, default_value = "idle")]
    mode: ModeArg,
    /// Simulated miners.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: u32,
    /// Spread connections round-robin over 127.0.0.2 .. 127.0.0.(N+1) (each address has its
    /// own ephemeral ports); 0 binds nothing.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// New connections per second; 0 is as fast as possible.
    #[arg(long, default_value_t = 2000.0)]
    ramp: f64,
    /// Seconds to hold the connections once all are mining (the share phase, in shares mode).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Shares per second, all connections together; 0 is closed loop (--window in flight on
    /// every connection).
    #[arg(long, default_value_t = 10_000.0)]
    share_rate: f64,
    /// Unanswered submits one connection may have.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// mining.suggest_difficulty to send (sent before authorize); shares mode grinds at
    /// whatever difficulty the server sets, so keep it far below the chain's.
    #[arg(long)]
    difficulty: Option<f64>,
    /// Do not ask for version rolling (no mining.configure, 5-parameter submits).
    #[arg(long)]
    no_version_rolling: bool,
    /// Submit shares that are also blocks (by default they are skipped, so the tip holds).
    #[arg(long)]
    submit_blocks: bool,
    /// The server's PID, to read its RSS and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A process behind the server (e.g. the pool behind a translator): its CPU and memory are
    /// reported too, and shares per CPU-second also over server and peers together. Repeatable.
    #[arg(long)]
    peer_pid: Vec<u32>,
    /// The node's JSON-RPC URL, to mine blocks and time the new tip at every miner.
    #[arg(long)]
    rpc_url: Option<String>,
    /// The node's .cookie file.
    #[arg(long)]
    rpc_cookie: Option<PathBuf>,
    /// USER:PASSWORD instead of a cookie.
    #[arg(long)]
    rpc_user_pass: Option<String>,
    /// Address the mined tips pay (`generatetoaddress 1 ADDRESS`); without it, tips go to an
    /// anyone-can-spend `raw(51)` descriptor, which works on every chain.
    #[arg(long)]
    tip_address: Option<String>,
    /// New tips to mine (one block each) once every miner is connected.
    #[arg(long, default_value_t = 0)]
    tips: u32,
    /// Seconds between tips.
    #[arg(long, default_value_t = 3.0)]
    tip_interval: f64,
    /// The node's debug.log (run it with -logtimemicros=1) for the node's own time of each tip.
    #[arg(long)]
    node_log: Option<PathBuf>,
    /// Worker threads of this tool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds a TCP connect may take.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// A name for this run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Print the report as JSON on stdout (the text goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Every connection is a descriptor: take the whole hard limit.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    if u64::from(args.connections) + 64 > nofile {
        eprintln!(
            "error: {} connections need more descriptors than the open-file limit {nofile} allows",
            args.connections
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let json_out = args.json_out.clone();
    match runtime.block_on(drive(settings(args), nofile)) {
        Ok(report) => {
            let text = report.to_string();
            let as_json = serde_json::to_string_pretty(&report).expect("a report serializes");
            if let Some(path) = json_out {
                if let Err(e) = std::fs::write(&path, &as_json) {
                    eprintln!("error: writing {}: {e}", path.display());
                }
            }
            if json {
                eprint!("{text}");
                println!("{as_json}");
            } else {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The run's settings from the flags; the output flags stay with `main`.
fn settings(args: Args) -> Settings {
    Settings {
        server: args.server,
        mode: match args.mode {
            ModeArg::Idle => Mode::Idle,
            ModeArg::Shares => Mode::Shares,
        },
        connections: args.connections,
        sources: args.sources,
        ramp: args.ramp,
        duration: args.duration,
        share_rate: args.share_rate,
        window: args.window,
        difficulty: args.difficulty,
        version_rolling: !args.no_version_rolling,
        submit_blocks: args.submit_blocks,
        server_pid: args.server_pid,
        peer_pid: args.peer_pid,
        rpc_url: args.rpc_url,
        rpc_cookie: args.rpc_cookie,
        rpc_user_pass: args.rpc_user_pass,
        tip_address: args.tip_address,
        tips: args.tips,
        tip_interval: args.tip_interval,
        node_log: args.node_log,
        threads: args.threads,
        connect_timeout: args.connect_timeout,
        label: args.label,
        quiet: args.quiet,
    }
}
