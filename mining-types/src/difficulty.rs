//! Pool difficulty, the miner-facing measure of a share target.
//!
//! `bitcoin::Target::difficulty` is an integer and cannot express the sub-1 difficulties that
//! small miners (and regtest) need, so difficulty is our own type and [`Difficulty::target`] is
//! the only way from one to the other.

use std::fmt;

use bitcoin::Target;

/// A share difficulty: finite and above zero, possibly far below 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Difficulty(f64);

/// A number that is not a valid difficulty.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("difficulty must be a finite number above 0, got {0}")]
pub struct DifficultyError(pub f64);

impl Difficulty {
    /// Difficulty 1: the target `0x00000000ffff0000...`.
    pub const ONE: Difficulty = Difficulty(1.0);

    /// Checks and wraps a difficulty.
    ///
    /// # Errors
    /// When `d` is not finite or not above zero.
    pub fn new(d: f64) -> Result<Self, DifficultyError> {
        if d.is_finite() && d > 0.0 {
            Ok(Difficulty(d))
        } else {
            Err(DifficultyError(d))
        }
    }

    /// The raw number, as sent in `mining.set_difficulty`.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The lower of two difficulties.
    pub fn min(self, other: Difficulty) -> Difficulty {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }

    /// Keeps the difficulty within `[lo, hi]`.
    pub fn clamp(self, lo: Difficulty, hi: Difficulty) -> Difficulty {
        Difficulty(self.0.clamp(lo.0, hi.0.max(lo.0)))
    }

    /// Scales by a positive factor; results outside the f64 range saturate.
    pub fn scaled(self, factor: f64) -> Difficulty {
        let d = self.0 * factor;
        if d.is_finite() && d > 0.0 {
            Difficulty(d)
        } else if d > 0.0 {
            Difficulty(f64::MAX)
        } else {
            Difficulty(f64::MIN_POSITIVE)
        }
    }

    /// The share target: `0xffff * 2^208 / difficulty`, saturating at `2^256 - 1`.
    ///
    /// 53 bits of precision, far more than share accounting needs.
    pub fn target(self) -> Target {
        // 0xffff * 2^208 / d = (65535 / d) * 2^208; split the quotient into mantissa * 2^exp.
        let q = 65535.0 / self.0;
        if !q.is_finite() {
            return Target::from_be_bytes([0xff; 32]);
        }
        let bits = q.to_bits();
        let raw_exp = ((bits >> 52) & 0x7ff) as i32;
        let (mantissa, exp) = if raw_exp == 0 {
            (bits & ((1 << 52) - 1), -1074) // subnormal
        } else {
            ((bits & ((1 << 52) - 1)) | (1 << 52), raw_exp - 1075)
        };
        let shift = exp + 208;
        let mut out = [0u8; 32];
        if shift < 0 {
            let m = if shift <= -64 {
                0
            } else {
                mantissa >> (-shift)
            };
            out[24..].copy_from_slice(&m.max(1).to_be_bytes());
            return Target::from_be_bytes(out);
        }
        // mantissa has 53 significant bits; anything reaching bit 256 saturates.
        if shift + 53 > 256 {
            return Target::from_be_bytes([0xff; 32]);
        }
        let shift = shift as usize;
        let wide = u128::from(mantissa);
        // Place `wide << shift` into the big-endian 256-bit buffer, byte by byte.
        let byte_shift = shift / 8;
        let bit_shift = shift % 8;
        let value = wide << bit_shift; // at most 60 bits: fits
        for i in 0..16 {
            let byte = ((value >> (8 * i)) & 0xff) as u8;
            let pos = 31usize.checked_sub(byte_shift + i);
            if let Some(pos) = pos {
                out[pos] = byte;
            }
        }
        Target::from_be_bytes(out)
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(t: Target) -> String {
        hex::encode(t.to_be_bytes())
    }

    #[test]
    fn difficulty_one_is_the_classic_target() {
        assert_eq!(
            hex(Difficulty::ONE.target()),
            format!("00000000ffff{}", "0".repeat(52))
        );
    }

    #[test]
    fn target_scales_inversely() {
        assert_eq!(
            hex(Difficulty::new(2.0).unwrap().target()),
            format!("000000007fff8{}", "0".repeat(51))
        );
        assert_eq!(
            hex(Difficulty::new(0.5).unwrap().target()),
            format!("00000001fffe{}", "0".repeat(52))
        );
        assert_eq!(
            hex(Difficulty::new(65536.0).unwrap().target()),
            format!("000000000000ffff{}", "0".repeat(48))
        );
    }

    #[test]
    fn tiny_difficulty_saturates_and_huge_stays_positive() {
        assert_eq!(
            hex(Difficulty::new(1e-12).unwrap().target()),
            "f".repeat(64)
        );
        let t = Difficulty::new(1e30).unwrap().target();
        assert!(t > Target::ZERO);
        assert!(t < Difficulty::new(1e29).unwrap().target());
    }

    #[test]
    fn regtest_difficulty_matches_the_chain_target() {
        // regtest's 207fffff is difficulty ~4.66e-10; a share at 1e-9 is harder than a block there.
        let net = Target::from_compact(bitcoin::CompactTarget::from_consensus(0x207f_ffff));
        assert!(Difficulty::new(1e-9).unwrap().target() < net);
        assert!(Difficulty::new(4e-10).unwrap().target() > net);
    }

    #[test]
    fn rejects_nonsense() {
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Difficulty::new(d).is_err());
        }
    }
}
