//! A soak run: the share phase held for a long time, a tip mined on a fixed grid, and the server
//! sampled all along (RSS, descriptors, CPU) for the flatness verdict of [`crate::soak`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::tips::{announce, best, measure_tip};
use super::{progress, Settings};
use crate::client::Shared;
use crate::histogram::Histogram;
use crate::node::{MineTo, Rpc};
use crate::procfs;
use crate::report::TipReport;
use crate::soak::{judge, Sample, SoakReport, SoakSettings, SoakTip};

/// What one sample reads: the server from /proc, this tool's counters.
#[derive(Clone)]
struct Probe {
    pid: u32,
    shared: Arc<Shared>,
    tips: Arc<AtomicU64>,
    start: Instant,
}

impl Probe {
    /// `None` once the server cannot be read (it exited).
    fn take(&self) -> Option<Sample> {
        let memory = procfs::memory(Some(self.pid))?;
        let fds = procfs::open_fds(Some(self.pid))?;
        let stats = &self.shared.stats;
        Some(Sample {
            t_s: self.start.elapsed().as_secs_f64(),
            rss_kib: memory.rss_kib,
            fds,
            live: stats.live.load(Relaxed),
            accepted: stats.accepted.load(Relaxed),
            tips: self.tips.load(Relaxed),
            cpu_s: procfs::cpu_time(Some(self.pid)).map_or(0.0, |d| d.as_secs_f64()),
        })
    }
}

/// Samples the server every `--sample-interval` from before the first miner until stopped.
pub(super) struct Sampler {
    settings: SoakSettings,
    probe: Probe,
    stop: CancellationToken,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling when `s` is a soak run; `start` is the time samples count from.
    pub(super) fn start(s: &Settings, shared: &Arc<Shared>, start: Instant) -> Option<Sampler> {
        let settings = s.soak?;
        let probe = Probe {
            pid: s.server_pid?,
            shared: shared.clone(),
            tips: Arc::new(AtomicU64::new(0)),
            start,
        };
        let stop = CancellationToken::new();
        // The first sample here, not in the task: the task may only run once miners connect.
        let first = probe.take();
        let task = tokio::spawn(sample_until(
            probe.clone(),
            first.into_iter().collect(),
            Duration::from_secs_f64(settings.sample_interval),
            stop.clone(),
            s.quiet,
        ));
        Some(Sampler {
            settings,
            probe,
            stop,
            task,
        })
    }

    /// Stops sampling and takes one last sample, so the steady state ends where the load does.
    /// The flag is false when the server could not be read at the end.
    pub(super) async fn finish(&mut self) -> (Vec<Sample>, bool) {
        self.stop.cancel();
        let mut samples = (&mut self.task).await.unwrap_or_default();
        let Some(last) = self.probe.take() else {
            return (samples, false);
        };
        // A periodic sample just before would only repeat it.
        let half = self.settings.sample_interval / 2.0;
        if samples.last().is_some_and(|s| last.t_s - s.t_s < half) {
            samples.pop();
        }
        samples.push(last);
        (samples, true)
    }
}

/// Adds a sample every `every` to `samples` (which hold the one taken at the start).
async fn sample_until(
    probe: Probe,
    mut samples: Vec<Sample>,
    every: Duration,
    stop: CancellationToken,
    quiet: bool,
) -> Vec<Sample> {
    if let Some(s) = samples.first() {
        announce_sample(quiet, s);
    }
    let start = tokio::time::Instant::from_std(probe.start);
    let mut tick = tokio::time::interval_at(start + every, every);
    // A stalled tool should not make up for it with a burst of samples at one moment.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return samples,
            _ = tick.tick() => {}
        }
        let Some(s) = probe.take() else {
            progress(quiet, "sample: the server cannot be read");
            continue;
        };
        announce_sample(quiet, &s);
        samples.push(s);
    }
}

fn announce_sample(quiet: bool, s: &Sample) {
    progress(
        quiet,
        format_args!(
            "sample at {:.0} s: RSS {} KiB, {} fds, {} live, {} accepted, {} tips, server CPU {:.1} s",
            s.t_s, s.rss_kib, s.fds, s.live, s.accepted, s.tips, s.cpu_s
        ),
    );
}

/// The tips of a soak run so far.
#[derive(Default)]
pub(super) struct Tips {
    rows: Vec<SoakTip>,
    latency: Histogram,
    errors: BTreeMap<String, u64>,
    late: u64,
    from_node_log: u64,
}

impl Tips {
    fn add(&mut self, t_s: f64, tip: &TipReport) {
        let samples = &tip.samples;
        let (reference, all) = match (&samples.from_node_log, &samples.from_node_notify) {
            (Some(v), _) => ("node_log", v),
            (None, Some(v)) => ("node_notify", v),
            (None, None) => ("rpc_return", &samples.from_rpc_return),
        };
        self.from_node_log += u64::from(reference == "node_log");
        for ms in all {
            // A miner ahead of a coarse reference (the RPC's return) counts as no delay.
            self.latency.record_us((ms * 1000.0).max(0.0) as u64);
        }
        let b = best(tip);
        self.rows.push(SoakTip {
            t_s,
            hash: tip.hash.clone(),
            generate_ms: tip.generate_ms,
            miners_expected: tip.miners_expected,
            miners_reached: tip.miners_reached,
            not_clean: tip.not_clean,
            reference,
            p50_ms: b.p50_ms,
            p99_ms: b.p99_ms,
            max_ms: b.max_ms,
            server_cpu_ms: tip.server_cpu_ms,
        });
    }
}

/// Mines a tip every `--tip-interval` from `phase_start` until `until`. A failed tip is counted
/// and the run goes on: an hour's samples are worth more than one RPC hiccup.
pub(super) async fn mine_tips(
    s: &Settings,
    (rpc, to): (&Rpc, &MineTo),
    shared: &Arc<Shared>,
    sampler: &Sampler,
    phase_start: Instant,
    until: Instant,
) -> Tips {
    let mut out = Tips::default();
    let interval = Duration::from_secs_f64(s.tip_interval);
    let mut next = phase_start + interval;
    let mut number = 0u64;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        number += 1;
        let t_s = (Instant::now() - sampler.probe.start).as_secs_f64();
        // One anchor per tip: over an hour the wall clock and the monotonic clock drift apart
        // by more than the latencies measured.
        let anchor = (Instant::now(), SystemTime::now());
        let node_log = s.node_log.as_deref();
        match measure_tip(rpc, to, shared, anchor, node_log, s.server_pid, &s.peer_pid).await {
            Ok(tip) => {
                sampler.probe.tips.fetch_add(1, Relaxed);
                announce(s.quiet, number, &tip);
                out.add(t_s, &tip);
            }
            Err(e) => {
                progress(s.quiet, format_args!("tip {number} failed: {e:#}"));
                *out.errors.entry(format!("{e:#}")).or_default() += 1;
            }
        }
        // Done with this tip's records: kept, they grow by one per miner per tip, and every
        // tip's wait scans them all under the lock the miners record into.
        shared
            .tips
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        next += interval;
        if next < Instant::now() {
            out.late += 1;
            next = Instant::now();
        }
    }
    out
}

/// The soak part of the report: the tips, the samples and the verdict on them.
pub(super) fn report(
    s: &Settings,
    sampler: &Sampler,
    tips: Tips,
    (samples, readable_at_end): (Vec<Sample>, bool),
    phase_start: Instant,
) -> SoakReport {
    let k = &sampler.settings;
    let steady_from_s = (phase_start - sampler.probe.start).as_secs_f64() + k.warmup;
    let mut flatness = judge(&samples, steady_from_s, k);
    if !readable_at_end {
        flatness.fail("the server could not be read at the end (it exited?)".into());
    }
    SoakReport {
        duration_s: s.duration,
        share_rate: s.share_rate,
        tip_interval_s: s.tip_interval,
        sample_interval_s: k.sample_interval,
        warmup_s: k.warmup,
        tips_mined: sampler.probe.tips.load(Relaxed),
        tip_errors: tips.errors,
        tips_late: tips.late,
        tip_latency: tips.latency.summary(),
        tips_from_node_log: tips.from_node_log,
        tips: tips.rows,
        flatness,
        samples,
    }
}
