//! Where the daemons' logs go: stdout, as text lines (the default) or one JSON object per event
//! for log collectors (`--log-format json`).

use tracing_subscriber::EnvFilter;

/// How log events are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    #[default]
    Text,
    /// One JSON object per event, its fields at the top level beside `timestamp`, `level`,
    /// `target` and `message`.
    Json,
}

/// Installs the global subscriber: `filter` as `RUST_LOG` takes it (`info`,
/// `jd_proxy=debug`), `info` when it does not parse.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
