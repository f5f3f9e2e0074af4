//! `jd-proxy status`: reads a running instance's JSON API and prints what an operator checks
//! first.

mod format;
pub mod render;

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use self::render::{render, Answers};

/// Where the instance is and how much to list.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The instance's HTTP server ([http] listen).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9100",
        env = "JD_PROXY_API"
    )]
    pub api: String,
    /// Workers listed (the fastest, and the silent ones).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// How long each request may take: the API answers from memory.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches and prints the summary; exit code 1 when the instance does not answer.
pub fn main(args: &StatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fetch_and_render(args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The summary of the instance at `args.api`.
///
/// # Errors
/// The summary cannot be fetched or is not JSON. The upstream and worker details are optional.
pub async fn fetch_and_render(args: &StatusArgs) -> anyhow::Result<String> {
    let api = args.api.trim_end_matches('/');
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let summary = get(&client, api, "summary").await.map_err(|e| {
        e.context(format!(
            "jd-proxy does not answer at {api} (its [http] listen; --api or JD_PROXY_API)"
        ))
    })?;
    let (upstream, workers) =
        tokio::join!(get(&client, api, "upstream"), get(&client, api, "workers"));
    let now = crate::figures::unix_now();
    let answers = Answers {
        summary: &summary,
        upstream: upstream.as_ref().ok(),
        workers: workers.as_ref().ok(),
    };
    Ok(render(api, answers, now, args.top))
}

async fn get(client: &reqwest::Client, api: &str, what: &str) -> anyhow::Result<Value> {
    let url = format!("{api}/api/v1/{what}");
    let reply = client.get(&url).send().await?.error_for_status()?;
    Ok(reply.json().await?)
}
