//! The process's own figures, as the Prometheus client libraries name them: open and allowed
//! file descriptors (a gateway with thousands of ASICs lives near its fd limit), resident
//! memory and start time. Read from `/proc` at scrape time; absent where there is no `/proc`.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::encode::gauge;

/// The `process_*` metrics.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector {
    /// Unix seconds the daemon started.
    pub started_at: u64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        if let Some(n) = open_fds() {
            gauge(&mut enc, "process_open_fds", "Open file descriptors.", n)?;
        }
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        if let Some(n) = limits.as_deref().and_then(max_fds) {
            gauge(
                &mut enc,
                "process_max_fds",
                "The soft limit on open file descriptors.",
                n,
            )?;
        }
        let status = std::fs::read_to_string("/proc/self/status").ok();
        if let Some(b) = status.as_deref().and_then(rss_bytes) {
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory.",
                b,
            )?;
        }
        gauge(
            &mut enc,
            "process_start_time_seconds",
            "When the process started, unix seconds.",
            self.started_at,
        )
    }
}

fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle itself is one of the entries.
    Some((dir.count() as u64).saturating_sub(1))
}

/// The soft `Max open files` of `/proc/self/limits`.
fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace();
    soft.into_iter().next()?.parse().ok()
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \n";
        assert_eq!(max_fds(limits), Some(1024));
        let status = "Name:\tjd-proxy\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(rss_bytes(status), Some(5120 * 1024));
        assert_eq!(rss_bytes("Name: x\n"), None);
    }

    #[test]
    fn this_process_reports_its_figures() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector { started_at: 7 }));
        let text = super::super::encode::render(&registry);
        assert!(text.contains("process_start_time_seconds 7\n"), "{text}");
        for name in [
            "process_open_fds ",
            "process_max_fds ",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
