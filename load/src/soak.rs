//! A soak run's figures: the server sampled at a fixed interval while miners, shares and tips go
//! on for a long time, and whether its memory and descriptors stayed flat.
//!
//! Pure: the driver takes the samples and mines the tips (`driver::soak`); this module fits and
//! judges the samples, and writes the soak part of the report.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::histogram::Summary;

/// A steady state shorter than this gives a per-hour slope that is mostly extrapolation.
const SHORT_SPAN_S: f64 = 600.0;
/// Rows of the sample table in the text report (the JSON has every sample).
const MAX_TABLE_ROWS: usize = 40;

/// How a soak run samples the server and judges flatness; the `jd-load` flags of the same names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoakSettings {
    /// Seconds between samples of the server.
    pub sample_interval: f64,
    /// Seconds from the start of the share phase to the start of the steady state.
    pub warmup: f64,
    /// How far the descriptor count may end from where the steady state began.
    pub fd_tolerance: u64,
    /// The largest RSS slope (KiB per hour, least squares over the steady state) called flat.
    pub rss_slope_limit_kib_per_h: f64,
}

/// The server, and this tool's counters, at one moment of a soak run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the first miner was started.
    pub t_s: f64,
    pub rss_kib: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: u64,
    /// Miners mining, shares accepted and tips mined so far.
    pub live: u64,
    pub accepted: u64,
    pub tips: u64,
    /// The server's CPU time so far (all threads).
    pub cpu_s: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Flat,
    NotFlat,
    /// Too few steady-state samples to fit a line through.
    #[default]
    Undecided,
}

/// RSS and descriptors over the steady state, and the verdict on them.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Flatness {
    pub verdict: Verdict,
    /// Why the verdict is not `flat`.
    pub reasons: Vec<String>,
    /// What to keep in mind reading it (a short span, miners lost).
    pub notes: Vec<String>,
    pub steady_from_s: f64,
    pub steady_samples: usize,
    pub steady_span_s: f64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_max_kib: u64,
    pub rss_slope_kib_per_h: f64,
    pub rss_slope_limit_kib_per_h: f64,
    pub fds_start: u64,
    pub fds_end: u64,
    pub fds_max: u64,
    pub fds_slope_per_h: f64,
    pub fd_tolerance: u64,
}

impl Flatness {
    /// Overrides the verdict: something outside the samples shows the run was not steady.
    pub fn fail(&mut self, reason: String) {
        self.verdict = Verdict::NotFlat;
        self.reasons.push(reason);
    }
}

/// The least-squares slope of `y` against `t_s`, per hour; `None` below two distinct times.
pub fn slope_per_hour(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return None;
    }
    let mean_t = samples.iter().map(|s| s.t_s).sum::<f64>() / n;
    let mean_y = samples.iter().map(&y).sum::<f64>() / n;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for s in samples {
        let dt = s.t_s - mean_t;
        sxx += dt * dt;
        sxy += dt * (y(s) - mean_y);
    }
    (sxx > 0.0).then(|| sxy / sxx * 3600.0)
}

/// Judges the samples taken at or after `steady_from_s`: flat when the descriptor count ends
/// within the tolerance of where it began and the RSS slope is under the limit.
pub fn judge(samples: &[Sample], steady_from_s: f64, limits: &SoakSettings) -> Flatness {
    let steady: Vec<Sample> = samples
        .iter()
        .filter(|s| s.t_s >= steady_from_s)
        .copied()
        .collect();
    let mut out = Flatness {
        steady_from_s,
        steady_samples: steady.len(),
        rss_slope_limit_kib_per_h: limits.rss_slope_limit_kib_per_h,
        fd_tolerance: limits.fd_tolerance,
        ..Flatness::default()
    };
    let (Some(first), Some(last)) = (steady.first(), steady.last()) else {
        out.reasons.push(format!(
            "no sample at or after {steady_from_s:.0} s: the run ended within the warm-up"
        ));
        return out;
    };
    out.steady_span_s = last.t_s - first.t_s;
    out.rss_start_kib = first.rss_kib;
    out.rss_end_kib = last.rss_kib;
    out.rss_max_kib = steady.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    out.fds_start = first.fds;
    out.fds_end = last.fds;
    out.fds_max = steady.iter().map(|s| s.fds).max().unwrap_or(0);
    let rss_slope = slope_per_hour(&steady, |s| s.rss_kib as f64);
    out.rss_slope_kib_per_h = rss_slope.unwrap_or(0.0);
    out.fds_slope_per_h = slope_per_hour(&steady, |s| s.fds as f64).unwrap_or(0.0);
    if last.live < first.live {
        out.notes.push(format!(
            "{} miners were lost during the steady state (each took its descriptor with it)",
            first.live - last.live
        ));
    }
    if steady.len() < 3 || rss_slope.is_none() {
        out.reasons.push(format!(
            "only {} samples in the steady state: too few to fit a line",
            steady.len()
        ));
        return out;
    }
    if out.steady_span_s < SHORT_SPAN_S {
        out.notes.push(format!(
            "the steady state lasted {:.0} s: its per-hour slope is an extrapolation; judge on a run of an hour",
            out.steady_span_s
        ));
    }
    out.verdict = Verdict::Flat;
    if first.fds.abs_diff(last.fds) > limits.fd_tolerance {
        out.fail(format!(
            "descriptors ended at {}, {:+} from the {} the steady state began with (tolerance ±{})",
            last.fds,
            last.fds as i64 - first.fds as i64,
            first.fds,
            limits.fd_tolerance
        ));
    }
    if out.rss_slope_kib_per_h > limits.rss_slope_limit_kib_per_h {
        out.fail(format!(
            "RSS grew {:.2} MiB per hour over the steady state (limit {:.2} MiB per hour)",
            out.rss_slope_kib_per_h / 1024.0,
            limits.rss_slope_limit_kib_per_h / 1024.0
        ));
    }
    out
}

/// One tip of a soak run: when it came, and how long its job took to reach every miner.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakTip {
    /// Seconds since the first miner was started, when the tip was asked for.
    pub t_s: f64,
    pub hash: String,
    pub generate_ms: f64,
    pub miners_expected: u64,
    pub miners_reached: u64,
    pub not_clean: u64,
    /// Which reference the latencies are from: `node_log`, `node_notify` or `rpc_return`.
    pub reference: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub server_cpu_ms: Option<f64>,
}

/// The soak part of a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    /// The share phase asked for, and how the run was paced and sampled.
    pub duration_s: f64,
    pub share_rate: f64,
    pub tip_interval_s: f64,
    pub sample_interval_s: f64,
    pub warmup_s: f64,
    pub tips_mined: u64,
    /// Tips whose mining or timing failed, by error (the run goes on without them).
    pub tip_errors: BTreeMap<String, u64>,
    /// Tips mined later than their slot because the one before took longer than the interval.
    pub tips_late: u64,
    /// Every miner's latency on every tip, each tip from its best reference (negative: 0).
    pub tip_latency: Summary,
    /// Tips timed from the node's `UpdateTip` log line (the others from a coarser reference).
    pub tips_from_node_log: u64,
    pub tips: Vec<SoakTip>,
    pub flatness: Flatness,
    pub samples: Vec<Sample>,
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

impl SoakReport {
    /// The soak summary: tips, then the flatness verdict.
    pub(crate) fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self;
        let reached: u64 = s.tips.iter().map(|t| t.miners_reached).sum();
        let expected: u64 = s.tips.iter().map(|t| t.miners_expected).sum();
        let not_clean: u64 = s.tips.iter().map(|t| t.not_clean).sum();
        writeln!(
            f,
            "soak:      {:.0} s at {} shares/s, a tip every {} s: {} tips mined ({} late, {} failed), {reached} of {expected} miner notifications ({not_clean} not clean)",
            s.duration_s,
            s.share_rate,
            s.tip_interval_s,
            s.tips_mined,
            s.tips_late,
            s.tip_errors.values().sum::<u64>()
        )?;
        for (e, n) in &s.tip_errors {
            writeln!(f, "           tip failed: {e}: {n}")?;
        }
        let l = &s.tip_latency;
        writeln!(
            f,
            "           new tip -> job at every miner ({} of {} tips from the node's UpdateTip log): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            s.tips_from_node_log, s.tips.len(), l.p50_ms, l.p99_ms, l.max_ms, l.count
        )?;
        if let Some((i, t)) = s
            .tips
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.p99_ms.total_cmp(&b.1.p99_ms))
        {
            writeln!(
                f,
                "           worst tip: {} at {:.0} s, p99 {:.2} ms, max {:.2} ms, {}/{} miners",
                i + 1,
                t.t_s,
                t.p99_ms,
                t.max_ms,
                t.miners_reached,
                t.miners_expected
            )?;
        }
        self.flatness
            .write_text(f, s.sample_interval_s, s.samples.len(), s.warmup_s)
    }

    /// The sample table, thinned to about 40 rows (the JSON has them all).
    pub(crate) fn write_samples(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.samples.len();
        let step = n.div_ceil(MAX_TABLE_ROWS).max(1);
        writeln!(
            f,
            "samples:   every {} of {n} (all in the JSON); * = steady state",
            if step == 1 {
                "one".to_owned()
            } else {
                format!("{step}th")
            }
        )?;
        writeln!(
            f,
            "             t (s)    RSS (KiB)     fds    live     accepted   tips  server CPU (s)"
        )?;
        for (i, s) in self.samples.iter().enumerate() {
            if i % step != 0 && i + 1 != n {
                continue;
            }
            writeln!(
                f,
                "           {}{:7.0} {:12} {:7} {:7} {:12} {:6} {:15.2}",
                if s.t_s >= self.flatness.steady_from_s {
                    '*'
                } else {
                    ' '
                },
                s.t_s,
                s.rss_kib,
                s.fds,
                s.live,
                s.accepted,
                s.tips,
                s.cpu_s
            )?;
        }
        Ok(())
    }
}

impl Flatness {
    fn write_text(
        &self,
        f: &mut fmt::Formatter<'_>,
        every_s: f64,
        samples: usize,
        warmup_s: f64,
    ) -> fmt::Result {
        let s = self;
        writeln!(
            f,
            "           server sampled every {every_s} s ({samples} samples); steady state from {:.0} s (ramp and {warmup_s} s of warm-up left out): {} samples over {:.0} s",
            s.steady_from_s, s.steady_samples, s.steady_span_s
        )?;
        writeln!(
            f,
            "           RSS: {} KiB at the start, {} KiB at the end, max {} KiB; slope {:+.2} MiB/h (limit {:.2} MiB/h)",
            s.rss_start_kib,
            s.rss_end_kib,
            s.rss_max_kib,
            mib(s.rss_slope_kib_per_h),
            mib(s.rss_slope_limit_kib_per_h)
        )?;
        writeln!(
            f,
            "           fds: {} at the start, {} at the end, max {}; slope {:+.1}/h (tolerance ±{})",
            s.fds_start, s.fds_end, s.fds_max, s.fds_slope_per_h, s.fd_tolerance
        )?;
        let verdict = match s.verdict {
            Verdict::Flat => "FLAT",
            Verdict::NotFlat => "NOT FLAT",
            Verdict::Undecided => "UNDECIDED",
        };
        writeln!(f, "           verdict: {verdict}")?;
        for r in &s.reasons {
            writeln!(f, "           - {r}")?;
        }
        for n in &s.notes {
            writeln!(f, "           note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SoakSettings = SoakSettings {
        sample_interval: 10.0,
        warmup: 60.0,
        fd_tolerance: 5,
        rss_slope_limit_kib_per_h: 2048.0,
    };

    /// An hour at 10 s, from 0 s: RSS and descriptors as functions of time.
    fn run(rss: impl Fn(f64) -> u64, fds: impl Fn(f64) -> u64) -> Vec<Sample> {
        (0..=360)
            .map(|i| {
                let t = f64::from(i) * 10.0;
                Sample {
                    t_s: t,
                    rss_kib: rss(t),
                    fds: fds(t),
                    live: 5000,
                    ..Sample::default()
                }
            })
            .collect()
    }

    #[test]
    fn slope_of_a_line_and_of_too_little() {
        let s = run(|t| 1000 + (t / 3.6) as u64, |_| 10);
        let slope = slope_per_hour(&s, |s| s.rss_kib as f64).unwrap();
        assert!((slope - 1000.0).abs() < 1.0, "{slope}");
        assert_eq!(slope_per_hour(&s[..1], |s| s.rss_kib as f64), None);
        let same_time = [Sample::default(), Sample::default()];
        assert_eq!(slope_per_hour(&same_time, |s| s.rss_kib as f64), None);
    }

    #[test]
    fn ramp_then_flat_is_flat() {
        // The ramp (first 60 s) and a sawtooth of one tip's share set stay out of the verdict.
        let s = run(
            |t| {
                if t < 60.0 {
                    t as u64 * 500
                } else {
                    40_000 + (t as u64 % 100) * 10
                }
            },
            |t| {
                if t < 60.0 {
                    12
                } else {
                    5012 + (t as u64 / 10) % 3
                }
            },
        );
        let v = judge(&s, 60.0, &LIMITS);
        assert_eq!(v.verdict, Verdict::Flat, "{v:?}");
        assert_eq!((v.fds_start, v.steady_samples), (5012, 355));
        assert!(v.rss_slope_kib_per_h.abs() < 100.0, "{v:?}");
        assert!(v.notes.is_empty() && v.reasons.is_empty(), "{v:?}");
    }

    #[test]
    fn slow_leak_is_not_flat() {
        // 3 MiB over the hour: above the 2 MiB/h limit.
        let s = run(|t| 40_000 + (t * 3072.0 / 3600.0) as u64, |_| 5012);
        let v = judge(&s, 60.0, &LIMITS);
        assert_eq!(v.verdict, Verdict::NotFlat);
        assert!((v.rss_slope_kib_per_h - 3072.0).abs() < 5.0, "{v:?}");
        assert_eq!(v.reasons.len(), 1, "{v:?}");
        assert_eq!(v.rss_max_kib, v.rss_end_kib);
    }

    #[test]
    fn descriptors_within_tolerance_only() {
        let within = run(|_| 40_000, |t| 5012 + (t / 720.0) as u64);
        assert_eq!(judge(&within, 60.0, &LIMITS).verdict, Verdict::Flat);
        let leak = run(|_| 40_000, |t| 5012 + (t / 360.0) as u64);
        let v = judge(&leak, 60.0, &LIMITS);
        assert_eq!((v.verdict, v.fds_end), (Verdict::NotFlat, 5022));
        assert!(v.reasons[0].contains("+10"), "{v:?}");
    }

    #[test]
    fn one_step_passes_a_steady_climb_fails() {
        // A one-off 1 MiB resize mid-run reads as about 1.5 MiB/h: still flat.
        let step = run(|t| if t < 1800.0 { 40_000 } else { 41_024 }, |_| 5012);
        let v = judge(&step, 60.0, &LIMITS);
        assert_eq!(v.verdict, Verdict::Flat, "{v:?}");
        assert!(v.rss_slope_kib_per_h > 1024.0, "{v:?}");
    }

    #[test]
    fn too_few_samples_or_short_runs() {
        let s = run(|_| 40_000, |_| 5012);
        let v = judge(&s[..8], 60.0, &LIMITS);
        assert_eq!((v.verdict, v.steady_samples), (Verdict::Undecided, 2));
        let v = judge(&s[..3], 60.0, &LIMITS);
        assert_eq!((v.verdict, v.steady_samples), (Verdict::Undecided, 0));
        let v = judge(&s[..30], 60.0, &LIMITS);
        assert_eq!(v.verdict, Verdict::Flat);
        assert!(v.notes[0].contains("extrapolation"), "{v:?}");
    }

    #[test]
    fn lost_miners_are_noted() {
        let mut s = run(|_| 40_000, |t| if t < 1800.0 { 5012 } else { 4012 });
        for x in s.iter_mut().filter(|x| x.t_s >= 1800.0) {
            x.live = 4000;
        }
        let v = judge(&s, 60.0, &LIMITS);
        assert_eq!(v.verdict, Verdict::NotFlat);
        assert!(v.notes[0].contains("1000 miners"), "{v:?}");
    }
}
