//! Writing metric families from snapshots: what every collector of both daemons does at scrape
//! time, through `prometheus-client`'s encoder (names, `# HELP`/`# TYPE`, label escaping, the
//! `_total` suffix of counters and the histogram layout are the crate's).
//!
//! Counter names are given without `_total`; the encoder appends it.

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// One gauge without labels.
///
/// # Errors
/// Only the writer's.
#[allow(clippy::needless_pass_by_value)] // values are small numbers, read once
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// One counter without labels.
///
/// # Errors
/// Only the writer's.
#[allow(clippy::needless_pass_by_value)] // values are small numbers, read once
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeCounterValue,
) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A family of gauges, one per label set.
///
/// # Errors
/// Only the writer's.
pub fn gauges<L, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    V: EncodeGaugeValue,
{
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// A family of counters, one per label set.
///
/// # Errors
/// Only the writer's.
pub fn counters<L, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    V: EncodeCounterValue,
{
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

/// A histogram without labels: `buckets` are (upper bound, observations in that bucket alone),
/// the encoder makes them cumulative.
///
/// # Errors
/// Only the writer's.
pub fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    (sum, count, buckets): (f64, u64, &[(f64, u64)]),
) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, buckets, None)
}

/// The registry in the Prometheus text format (0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String fails only if a collector does.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "a metrics collector failed; the scrape is partial");
    }
    out
}
