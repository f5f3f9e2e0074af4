//! `jd-load`: N simulated Stratum V1 miners against one server. See `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use jd_load::client::Mode;
use jd_load::driver::{drive, Settings};
use jd_load::soak::SoakSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Connect, handshake, receive jobs.
    Idle,
    /// As idle, and submit valid shares at --share-rate.
    Shares,
    /// Shares for --duration (1 h by default) with a tip every --tip-interval (--tips is not
    /// used), the server's RSS and open descriptors sampled every --sample-interval, and a
    /// verdict on their flatness. Needs --server-pid and --rpc-url.
    Soak,
}

/// Defaults of the flags whose default depends on the mode: (other modes, soak).
const DEFAULT_CONNECTIONS: (u32, u32) = (1000, 5000);
const DEFAULT_DURATION: (f64, f64) = (20.0, 3600.0);
const DEFAULT_SHARE_RATE: (f64, f64) = (10_000.0, 3000.0);
const DEFAULT_TIP_INTERVAL: (f64, f64) = (3.0, 10.0);

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
    /// Simulated miners [default: 1000; soak: 5000].
    #[arg(short = 'n', long)]
    connections: Option<u32>,
    /// Spread connections round-robin over 127.0.0.2 .. 127.0.0.(N+1) (each address has its
    /// own ephemeral ports); 0 binds nothing.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// New connections per second; 0 is as fast as possible.
    #[arg(long, default_value_t = 2000.0)]
    ramp: f64,
    /// Seconds to hold the connections once all are mining (the share phase, in shares and soak
    /// mode) [default: 20; soak: 3600].
    #[arg(long)]
    duration: Option<f64>,
    /// Shares per second, all connections together; 0 is closed loop (--window in flight on
    /// every connection) [default: 10000; soak: 3000].
    #[arg(long)]
    share_rate: Option<f64>,
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
    /// Seconds between tips [default: 3; soak: 10].
    #[arg(long)]
    tip_interval: Option<f64>,
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
    #[command(flatten)]
    soak: SoakArgs,
}

/// Soak mode only.
#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// Seconds between samples of the server (RSS, open descriptors, CPU).
    #[arg(long, default_value_t = 10.0)]
    sample_interval: f64,
    /// Seconds of the share phase left out of the steady state. jd-proxy keeps each miner's
    /// last 32 retired job ids, so its memory grows by design over the first 32 or so tips
    /// (5.5 minutes at a tip every 10 s).
    #[arg(long, default_value_t = 360.0)]
    warmup: f64,
    /// How far the server's descriptor count may end from its steady-state start and be flat:
    /// room for its own connections to the node coming and going, far below one leaked per tip.
    #[arg(long, default_value_t = 5)]
    fd_tolerance: u64,
    /// The largest RSS slope (MiB per hour, least squares over the steady state) called flat.
    /// 2 passes a one-off 1 MiB table resize mid-run (it reads as 1.5 MiB/h) and fails a byte
    /// leaked per share at 3,000/s (10 MiB/h) or two per miner per tip at 5,000 miners.
    #[arg(long, default_value_t = 2.0)]
    rss_slope_limit: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (json, json_out) = (args.json, args.json_out.clone());
    let settings = settings(args);
    // Every connection is a descriptor: take the whole hard limit.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    if u64::from(settings.connections) + 64 > nofile {
        eprintln!(
            "error: {} connections need more descriptors than the open-file limit {nofile} allows",
            settings.connections
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(drive(settings, nofile)) {
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

/// The run's settings from the flags, with the mode's defaults; the output flags stay with
/// `main`.
fn settings(args: Args) -> Settings {
    let soak = args.mode == ModeArg::Soak;
    Settings {
        server: args.server,
        mode: match args.mode {
            ModeArg::Idle => Mode::Idle,
            ModeArg::Shares | ModeArg::Soak => Mode::Shares,
        },
        connections: args.connections.unwrap_or(pick(soak, DEFAULT_CONNECTIONS)),
        sources: args.sources,
        ramp: args.ramp,
        duration: args.duration.unwrap_or(pick(soak, DEFAULT_DURATION)),
        share_rate: args.share_rate.unwrap_or(pick(soak, DEFAULT_SHARE_RATE)),
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
        tip_interval: args
            .tip_interval
            .unwrap_or(pick(soak, DEFAULT_TIP_INTERVAL)),
        node_log: args.node_log,
        threads: args.threads,
        connect_timeout: args.connect_timeout,
        label: args.label,
        quiet: args.quiet,
        soak: soak.then_some(SoakSettings {
            sample_interval: args.soak.sample_interval,
            warmup: args.soak.warmup,
            fd_tolerance: args.soak.fd_tolerance,
            rss_slope_limit_kib_per_h: args.soak.rss_slope_limit * 1024.0,
        }),
    }
}

/// The default of a flag for the mode: the first in other modes, the second in soak mode.
fn pick<T>(soak: bool, (other, in_soak): (T, T)) -> T {
    if soak {
        in_soak
    } else {
        other
    }
}
