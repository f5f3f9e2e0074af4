//! File descriptors held back for blocks: a flood of connections must not leave a found block
//! without a socket to reach its node.
//!
//! The proxy keeps miners below the process's limit less a headroom (see the proxy's
//! `stratum.max_connections` check); this reserve is the last line: a few descriptors opened at
//! start and given back the moment a submission fails for want of one.

use std::fs::File;
use std::sync::{Mutex, PoisonError};

use tracing::{error, warn};

/// Descriptors held in reserve.
pub const RESERVED: usize = 16;

/// Placeholder descriptors, given back on demand.
#[derive(Debug, Default)]
pub struct FdReserve {
    held: Mutex<Vec<File>>,
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
        }
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
}
