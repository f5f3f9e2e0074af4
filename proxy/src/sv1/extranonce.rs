//! Extranonce1 values for connections: distinct among live connections, handed out on
//! subscribe and given back when the connection ends.
//!
//! A counter alone would wrap into values still in use when `extranonce1_bytes` is small (two
//! miners on one extranonce1 do the same work twice); the in-use set keeps every live value
//! distinct, and a full space is refused rather than shared.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use mining_types::{Extranonce1, ExtranonceLayout};

/// Hands out extranonce1 values.
#[derive(Debug)]
pub struct Extranonce1Allocator {
    layout: ExtranonceLayout,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    in_use: HashSet<u64>,
}

/// A connection's extranonce1, given back when dropped.
#[derive(Debug)]
pub struct Lease {
    value: Extranonce1,
    n: u64,
    allocator: Arc<Extranonce1Allocator>,
}

impl Lease {
    /// The extranonce1.
    pub fn value(&self) -> &Extranonce1 {
        &self.value
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.allocator.lock().in_use.remove(&self.n);
    }
}

impl Extranonce1Allocator {
    /// An allocator for `layout`'s extranonce1 size.
    pub fn new(layout: ExtranonceLayout) -> Arc<Self> {
        Arc::new(Extranonce1Allocator {
            layout,
            state: Mutex::new(State {
                next: 1,
                in_use: HashSet::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A value no live connection has; `None` when every value is taken.
    pub fn allocate(self: &Arc<Self>) -> Option<Lease> {
        let space = self.layout.extranonce1_space();
        let mut state = self.lock();
        if u64::try_from(state.in_use.len()).unwrap_or(u64::MAX) >= space {
            return None;
        }
        loop {
            let n = state.next % space;
            state.next = state.next.wrapping_add(1);
            if state.in_use.insert(n) {
                return Some(Lease {
                    value: Extranonce1::from_counter(n, self.layout),
                    n,
                    allocator: self.clone(),
                });
            }
        }
    }

    /// How many values are in use.
    pub fn in_use(&self) -> usize {
        self.lock().in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_use_are_never_handed_out_again() {
        let a = Extranonce1Allocator::new(ExtranonceLayout::new(1, 4).unwrap());
        let mut leases: Vec<Lease> = (0..256).map(|_| a.allocate().expect("room")).collect();
        let distinct: HashSet<Vec<u8>> = leases
            .iter()
            .map(|l| l.value().as_bytes().to_vec())
            .collect();
        assert_eq!(distinct.len(), 256, "every value of a 1-byte space, once");
        assert!(
            a.allocate().is_none(),
            "a full space is refused, not shared"
        );
        let freed = leases.swap_remove(17);
        let value = *freed.value();
        drop(freed);
        assert_eq!(a.in_use(), 255);
        let again = a.allocate().expect("the freed value");
        assert_eq!(*again.value(), value);
    }
}
