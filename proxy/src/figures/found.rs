//! The blocks the farm found, newest last, and what each node and pool said of them: a bounded
//! list for the API and the dashboard, and counts by judge and fate for `/metrics`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use bitcoin::BlockHash;
use serde::Serialize;
use template_provider::figures::fate_class;

/// Blocks listed.
pub const KEPT: usize = 100;
/// Judges counted one by one (nodes and pools are configured, so this is only a safety bound).
const MAX_JUDGES: usize = 64;

/// One block found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// Its hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// Who found it.
    pub worker: String,
    /// Unix seconds.
    pub at: u64,
    /// Each node's and pool's verdict so far, by name.
    pub fates: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    found: u64,
    list: VecDeque<Found>,
    /// (judge, fate class) → verdicts.
    fates: BTreeMap<(String, &'static str), u64>,
}

/// Blocks found and their fates.
#[derive(Debug, Default)]
pub struct FoundBlocks {
    inner: Mutex<Inner>,
}

impl FoundBlocks {
    /// A block was found.
    pub fn found(&self, hash: BlockHash, height: u32, worker: &str, at: u64) {
        let mut i = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        i.found += 1;
        if i.list.len() >= KEPT {
            i.list.pop_front();
        }
        i.list.push_back(Found {
            hash,
            height,
            worker: worker.to_owned(),
            at,
            fates: BTreeMap::new(),
        });
    }

    /// `by` (a node or a pool) judged block `hash`.
    pub fn fate(&self, hash: BlockHash, by: &str, fate: &str) {
        let mut i = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = i.list.iter_mut().rev().find(|b| b.hash == hash) {
            b.fates.insert(by.to_owned(), fate.to_owned());
        }
        let known = i.fates.keys().any(|(j, _)| j == by);
        let judges: BTreeSet<&String> = i.fates.keys().map(|(j, _)| j).collect();
        let by = if !known && judges.len() >= MAX_JUDGES {
            "(others)"
        } else {
            by
        };
        *i.fates
            .entry((by.to_owned(), fate_class(fate)))
            .or_insert(0) += 1;
    }

    /// Blocks found since start.
    pub fn count(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .found
    }

    /// The blocks listed, oldest first.
    pub fn list(&self) -> Vec<Found> {
        let i = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        i.list.iter().cloned().collect()
    }

    /// Verdicts by judge and fate class.
    pub fn fates(&self) -> Vec<(String, &'static str, u64)> {
        let i = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        i.fates
            .iter()
            .map(|((j, f), n)| (j.clone(), *f, *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;

    #[test]
    fn fates_attach_to_their_block_and_are_counted_by_class() {
        let f = FoundBlocks::default();
        let a = BlockHash::from_byte_array([1; 32]);
        f.found(a, 10, "w1", 5);
        f.fate(a, "node-1", "accepted");
        f.fate(a, "pool", "rejected: stale");
        f.fate(BlockHash::from_byte_array([9; 32]), "node-1", "duplicate");
        let list = f.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].fates["pool"], "rejected: stale");
        assert_eq!(
            f.fates(),
            [
                ("node-1".into(), "accepted", 1),
                ("node-1".into(), "duplicate", 1),
                ("pool".into(), "rejected", 1)
            ]
        );
        for n in 0..KEPT as u8 + 3 {
            f.found(BlockHash::from_byte_array([n; 32]), 11, "w", 6);
        }
        assert_eq!(f.list().len(), KEPT);
        assert_eq!(f.count(), KEPT as u64 + 4);
    }
}
