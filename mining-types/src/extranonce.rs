//! The coinbase's extranonce space: a per-connection part the proxy assigns (extranonce1) and a
//! part each miner rolls (extranonce2).

use std::fmt;

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

    /// Bytes of the per-connection part.
    pub fn extranonce1_len(self) -> usize {
        usize::from(self.extranonce1_len)
    }

    /// Bytes the miner rolls.
    pub fn extranonce2_len(self) -> usize {
        usize::from(self.extranonce2_len)
    }

    /// Both parts together.
    pub fn total_len(self) -> usize {
        self.extranonce1_len() + self.extranonce2_len()
    }

    /// How many distinct extranonce1 values the layout has (saturating at `u64::MAX`).
    pub fn extranonce1_space(self) -> u64 {
        1u64.checked_shl(8 * u32::from(self.extranonce1_len))
            .unwrap_or(u64::MAX)
    }
}

/// Up to 8 bytes kept inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Inline {
    bytes: [u8; MAX_PART_LEN as usize],
    len: u8,
}

impl Inline {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One connection's extranonce1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extranonce1(Inline);

impl Extranonce1 {
    /// The value `n` in `layout`'s size, big-endian (higher bits of `n` are cut).
    pub fn from_counter(n: u64, layout: ExtranonceLayout) -> Self {
        let be = n.to_be_bytes();
        let len = layout.extranonce1_len;
        let l = usize::from(len);
        let mut bytes = [0u8; MAX_PART_LEN as usize];
        bytes[..l].copy_from_slice(&be[8 - l..]);
        Extranonce1(Inline { bytes, len })
    }

    /// The bytes miners put first in the extranonce.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
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

/// The part of the extranonce a miner rolled, as it submitted it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extranonce2(Inline);

/// An extranonce2 that is not hex of the negotiated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("extranonce2 is not hex of the negotiated size")]
pub struct Extranonce2Error;

impl Extranonce2 {
    /// Reads a miner's hex, left-padding it with zeros to `len` bytes: some firmware drops
    /// leading zeros.
    ///
    /// # Errors
    /// When the hex is invalid, empty, or longer than `len` bytes.
    pub fn from_hex(s: &str, len: usize) -> Result<Self, Extranonce2Error> {
        if s.is_empty() || len > usize::from(MAX_PART_LEN) || s.len() > len * 2 {
            return Err(Extranonce2Error);
        }
        let mut padded = [b'0'; 2 * MAX_PART_LEN as usize];
        padded[len * 2 - s.len()..len * 2].copy_from_slice(s.as_bytes());
        let mut bytes = [0u8; MAX_PART_LEN as usize];
        hex::decode_to_slice(&padded[..len * 2], &mut bytes[..len])
            .map_err(|_| Extranonce2Error)?;
        Ok(Extranonce2(Inline {
            bytes,
            len: u8::try_from(len).map_err(|_| Extranonce2Error)?,
        }))
    }

    /// The rolled bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.0.len)
    }

    /// Whether it has no bytes (never, for one read by [`from_hex`](Self::from_hex)).
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
}

impl fmt::Debug for Extranonce2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extranonce2({})", hex::encode(self.as_bytes()))
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
        assert_eq!(
            ExtranonceLayout::new(2, 4).unwrap().extranonce1_space(),
            65_536
        );
        assert_eq!(
            ExtranonceLayout::new(8, 4).unwrap().extranonce1_space(),
            u64::MAX
        );
    }

    #[test]
    fn extranonce1_from_a_counter_is_big_endian_and_sized() {
        let layout = ExtranonceLayout::new(2, 4).unwrap();
        let x = Extranonce1::from_counter(1, layout);
        assert_eq!(x.as_bytes(), &[0, 1]);
        assert_eq!(x.to_string(), "0001");
        assert_eq!(
            Extranonce1::from_counter(0x1_0002, layout).as_bytes(),
            &[0, 2]
        );
    }

    #[test]
    fn extranonce2_is_padded_and_bounded() {
        assert_eq!(
            Extranonce2::from_hex("1", 4).unwrap().as_bytes(),
            &[0, 0, 0, 1]
        );
        assert_eq!(Extranonce2::from_hex("0a0b0c0d", 4).unwrap().len(), 4);
        for bad in ["", "0000000001", "zz"] {
            assert!(Extranonce2::from_hex(bad, 4).is_err(), "{bad}");
        }
        assert!(Extranonce2::from_hex("00", 9).is_err());
    }
}
