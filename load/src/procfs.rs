//! What `/proc` says about a process: resident memory, CPU time and open descriptors, for the
//! server under test and for this tool itself.

use std::time::Duration;

use serde::Serialize;

/// Memory figures of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

/// `VmRSS`, `VmHWM` and `Threads` from `/proc/<pid>/status` (`pid` `None`: this process).
pub fn memory(pid: Option<u32>) -> Option<Memory> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:").unwrap_or(0),
        threads: field("Threads:").unwrap_or(0),
    })
}

/// CPU time the process has used so far (all threads, user and system).
///
/// `/proc/<pid>/schedstat` gives nanoseconds; without it, `utime + stime` from
/// `/proc/<pid>/stat` at the usual 100 ticks per second.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let base = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let from_ticks = Duration::from_millis(ticks * 10);
    // schedstat is per thread; the process's own file covers only the main thread, so sum
    // the task directory when it can be read.
    let mut total_ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("{base}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                if let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    total_ns += ns;
                    any = true;
                }
            }
        }
    }
    // Threads that already exited are only in stat; take whichever is larger.
    Some(if any {
        Duration::from_nanos(total_ns).max(from_ticks)
    } else {
        from_ticks
    })
}

/// How many descriptors the process has open: the entries of `/proc/<pid>/fd` (`pid` `None`:
/// this process). Reading another user's list needs the same privileges as ptrace.
pub fn open_fds(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/fd"),
        None => "/proc/self/fd".to_owned(),
    };
    Some(std::fs::read_dir(path).ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_figures() {
        let m = memory(None).expect("own status");
        assert!(m.rss_kib > 0 && m.threads >= 1);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time(None).expect("own stat") > Duration::ZERO);
        assert!(memory(Some(u32::MAX)).is_none());
    }

    #[test]
    fn counts_own_descriptors() {
        // Other tests of this binary open files at the same time: hold many, allow a few.
        let before = open_fds(None).expect("own fd list") as i64;
        let held: Vec<_> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/status").expect("a file to hold open"))
            .collect();
        let during = open_fds(None).expect("own fd list") as i64;
        assert!((during - before - 50).abs() <= 5, "{before} -> {during}");
        drop(held);
        assert!(open_fds(Some(u32::MAX)).is_none());
    }
}
