//! File descriptors held back for blocks: a flood of connections must not leave a found block
//! without a socket to reach its node.
//!
//! The proxy keeps miners below the process's limit less a headroom (see the proxy's
//! `stratum.max_connections` check); this reserve is the last line: a few descriptors opened at
//! start and given back the moment a submission fails for want of one.

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tracing::{error, warn};

/// Descriptors held in reserve.
pub const RESERVED: usize = 16;

/// Placeholder descriptors, given back on demand.
#[derive(Debug, Default)]
pub struct FdReserve {
    held: Mutex<Vec<File>>,
    wanted: usize,
    /// Submissions that failed for want of a descriptor and have not had a verdict yet.
    waiting: AtomicUsize,
}

/// A submission waiting for descriptors; the reserve is not taken back while one lives.
#[derive(Debug)]
pub struct Waiting<'a>(&'a FdReserve);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FdReserve {
    /// Holds `n` descriptors (of `/dev/null`).
    pub fn new(n: usize) -> Self {
        let held: Vec<File> = (0..n).map_while(|_| File::open("/dev/null").ok()).collect();
        if held.len() < n {
            warn!(
                held = held.len(),
                wanted = n,
                "could not reserve file descriptors for block submission"
            );
        }
        FdReserve {
            held: Mutex::new(held),
            wanted: n,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Marks a submission as waiting for descriptors until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    /// Whether a new connection may take a descriptor: only with the reserve whole. After a
    /// release the reserve is taken back first, once no block waits for descriptors; until
    /// then connections wait in the listen queue.
    pub fn ready_to_accept(&self) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= self.wanted {
            return true;
        }
        if self.waiting.load(Ordering::Relaxed) > 0 {
            return false;
        }
        while held.len() < self.wanted {
            match File::open("/dev/null") {
                Ok(f) => held.push(f),
                Err(_) => return false,
            }
        }
        warn!(
            held = held.len(),
            "file descriptors reserved for blocks again: accepting miners"
        );
        true
    }

    /// Gives the held descriptors back to the process; returns how many.
    pub fn release(&self) -> usize {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.len();
        held.clear();
        if n > 0 {
            error!(
                released = n,
                "out of file descriptors: released the reserve for block submission"
            );
        }
        n
    }

    /// Descriptors still held.
    pub fn held(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether `e`, or anything that caused it, is the process or the system running out of file
/// descriptors (`EMFILE`, `ENFILE`).
pub fn is_fd_exhaustion(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(23 | 24)) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn exhaustion_is_found_anywhere_in_the_chain() {
        let emfile = Wrapped(std::io::Error::from_raw_os_error(24));
        assert!(is_fd_exhaustion(&emfile));
        let refused = Wrapped(std::io::Error::from_raw_os_error(111));
        assert!(!is_fd_exhaustion(&refused));
    }

    #[test]
    fn the_reserve_is_held_until_released() {
        let r = FdReserve::new(4);
        assert_eq!(r.held(), 4);
        assert_eq!(r.release(), 4);
        assert_eq!(r.held(), 0);
        assert_eq!(r.release(), 0);
    }

    #[test]
    fn the_reserve_is_taken_back_only_once_no_block_waits() {
        let r = FdReserve::new(4);
        assert!(r.ready_to_accept());
        assert_eq!(r.release(), 4);
        let waiting = r.waiting();
        assert!(
            !r.ready_to_accept(),
            "a block waits: no connection takes its descriptors"
        );
        assert_eq!(r.held(), 0);
        drop(waiting);
        assert!(r.ready_to_accept());
        assert_eq!(r.held(), 4);
    }
}
