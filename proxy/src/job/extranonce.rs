//! The coinbase's extranonce space: a per-connection part the proxy assigns (extranonce1) and
//! a part each miner rolls (extranonce2).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest extranonce1 and extranonce2: cgminer and WhatsMiner firmware fail above 8 bytes.
pub const MAX_PART_LEN: u8 = 8;

/// How the extranonce space is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtranonceLayout {
    extranonce1_len: u8,
    extranonce2_len: u8,
}

/// A layout outside what miners handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("extranonce1 and extranonce2 sizes must each be 1..=8 bytes, got {0} and {1}")]
pub struct LayoutError(pub u8, pub u8);

impl ExtranonceLayout {
    /// Checks and builds a layout.
    ///
    /// # Errors
    /// When either part is 0 or above 8 bytes.
    pub fn new(extranonce1_len: u8, extranonce2_len: u8) -> Result<Self, LayoutError> {
        let ok = |n: u8| (1..=MAX_PART_LEN).contains(&n);
        if ok(extranonce1_len) && ok(extranonce2_len) {
            Ok(ExtranonceLayout {
                extranonce1_len,
                extranonce2_len,
            })
        } else {
            Err(LayoutError(extranonce1_len, extranonce2_len))
        }
    }

    pub fn extranonce1_len(self) -> usize {
        usize::from(self.extranonce1_len)
    }

    pub fn extranonce2_len(self) -> usize {
        usize::from(self.extranonce2_len)
    }

    pub fn total_len(self) -> usize {
        self.extranonce1_len() + self.extranonce2_len()
    }
}

/// One connection's extranonce1: at most 8 bytes, kept inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extranonce1 {
    bytes: [u8; MAX_PART_LEN as usize],
    len: u8,
}

impl Extranonce1 {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for Extranonce1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl fmt::Debug for Extranonce1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extranonce1({self})")
    }
}

/// Hands out distinct extranonce1 values; two live connections never share one until the
/// counter wraps its `8 * len` bits.
#[derive(Debug)]
pub struct Extranonce1Allocator {
    layout: ExtranonceLayout,
    next: AtomicU64,
}

impl Extranonce1Allocator {
    pub fn new(layout: ExtranonceLayout) -> Self {
        Extranonce1Allocator {
            layout,
            next: AtomicU64::new(1),
        }
    }

    pub fn layout(&self) -> ExtranonceLayout {
        self.layout
    }

    /// The next extranonce1: a counter, big-endian, in the layout's size.
    pub fn allocate(&self) -> Extranonce1 {
        let n = self.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let len = self.layout.extranonce1_len;
        let mut bytes = [0u8; MAX_PART_LEN as usize];
        let l = usize::from(len);
        bytes[..l].copy_from_slice(&n[8 - l..]);
        Extranonce1 { bytes, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_limits() {
        assert!(ExtranonceLayout::new(4, 4).is_ok());
        assert!(ExtranonceLayout::new(8, 8).is_ok());
        assert_eq!(ExtranonceLayout::new(4, 9), Err(LayoutError(4, 9)));
        assert!(ExtranonceLayout::new(0, 4).is_err());
    }

    #[test]
    fn allocations_are_distinct_and_sized() {
        let a = Extranonce1Allocator::new(ExtranonceLayout::new(2, 4).unwrap());
        let x = a.allocate();
        let y = a.allocate();
        assert_ne!(x, y);
        assert_eq!(x.as_bytes().len(), 2);
        assert_eq!(x.to_string(), "0001");
    }
}
