//! Declarations counted for the operator: `DeclareMiningJob` sent, and the JDS's answers,
//! refusals by error code. Atomics and one short lock per answer: read at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// Error codes counted one by one; a JDS sending more distinct codes shares [`OTHER_CODES`].
pub const MAX_CODES: usize = 32;
/// Where codes past [`MAX_CODES`] are counted.
pub const OTHER_CODES: &str = "(other codes)";

/// Declarations and their answers.
#[derive(Debug, Default)]
pub struct Tally {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
}

/// A copy of a [`Tally`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallySnapshot {
    /// `DeclareMiningJob` sent.
    pub sent: u64,
    /// `DeclareMiningJob.Success` received.
    pub accepted: u64,
    /// `DeclareMiningJob.Error` received, by error code.
    pub refused: BTreeMap<String, u64>,
}

impl Tally {
    /// A declaration went out.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Relaxed);
    }

    /// The JDS took one.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    /// The JDS refused one with `code`.
    pub fn refused(&self, code: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        // Codes are the JDS's to choose: their number is bounded here.
        let key = if refused.len() >= MAX_CODES && !refused.contains_key(code) {
            OTHER_CODES
        } else {
            code
        };
        *refused.entry(key.to_owned()).or_insert(0) += 1;
    }

    /// The counts now.
    pub fn snapshot(&self) -> TallySnapshot {
        TallySnapshot {
            sent: self.sent.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_code_within_a_bound() {
        let t = Tally::default();
        t.sent();
        t.sent();
        t.accepted();
        t.refused("stale-chain-tip");
        for n in 0..MAX_CODES + 3 {
            t.refused(&format!("code-{n}"));
        }
        let s = t.snapshot();
        assert_eq!((s.sent, s.accepted), (2, 1));
        assert_eq!(s.refused["stale-chain-tip"], 1);
        assert_eq!(
            s.refused.len(),
            MAX_CODES + 1,
            "the bound plus the overflow"
        );
        assert_eq!(s.refused[OTHER_CODES], 4);
    }
}
