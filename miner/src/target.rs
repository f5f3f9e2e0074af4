//! Pool difficulty (an `f64`, possibly far below 1) to a 256-bit share target.

use bitcoin::Target;

/// The difficulty-1 target, `0x00000000FFFF0000...0000` (`0xFFFF << 208`).
pub const DIFF1_TARGET_BE: [u8; 32] = {
    let mut t = [0u8; 32];
    t[4] = 0xff;
    t[5] = 0xff;
    t
};

/// The share target for a Stratum V1 difficulty: `floor(0xFFFF·2^208 / difficulty)`,
/// computed exactly from the `f64`'s binary value and capped at `2^256 - 1`.
///
/// A share is valid when its block hash, read as a little-endian 256-bit number,
/// is `<=` this target ([`Target::is_met_by`]). Difficulties that are zero, negative
/// or NaN give the maximum target (every hash is a share); `+inf` gives zero.
pub fn share_target(difficulty: f64) -> Target {
    Target::from_be_bytes(share_target_be(difficulty))
}

/// [`share_target`] as 32 big-endian bytes.
pub fn share_target_be(difficulty: f64) -> [u8; 32] {
    if difficulty.is_nan() || difficulty <= 0.0 {
        return [0xff; 32];
    }
    if difficulty.is_infinite() {
        return [0; 32];
    }
    // difficulty = m * 2^e exactly, with m a 53-bit integer.
    let bits = difficulty.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let frac = bits & ((1u64 << 52) - 1);
    let (m, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    // target = 0xFFFF * 2^208 / (m * 2^e) = (0xFFFF << s) / m, s = 208 - e.
    let s = 208 - e;
    if s < 0 {
        // The numerator is below 0xFFFF and the denominator is at least 2^52.
        return [0; 32];
    }
    let s = s as u64;
    // The quotient is >= 2^(s + 16 - 1 - 53): certainly over 2^256 when that exponent is >= 256.
    if s + 16 >= 256 + 54 {
        return [0xff; 32];
    }
    // Numerator as little-endian u64 limbs, then long division by m.
    let nbits = s + 16;
    let nlimbs = (nbits / 64 + 1) as usize;
    let mut num = vec![0u64; nlimbs + 1];
    let limb = (s / 64) as usize;
    let shift = s % 64;
    let v = (0xffffu128) << shift;
    num[limb] = v as u64;
    num[limb + 1] = (v >> 64) as u64;
    let mut quotient = vec![0u64; num.len()];
    let mut rem: u128 = 0;
    for i in (0..num.len()).rev() {
        let cur = (rem << 64) | num[i] as u128;
        quotient[i] = (cur / m as u128) as u64;
        rem = cur % m as u128;
    }
    if quotient.iter().skip(4).any(|&l| l != 0) {
        return [0xff; 32];
    }
    let mut out = [0u8; 32];
    for (i, l) in quotient.iter().take(4).enumerate() {
        // limb i holds bits 64*i.., which are bytes 31-8i-7 ..= 31-8i in big-endian order
        out[24 - 8 * i..32 - 8 * i].copy_from_slice(&l.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(hex_str: &str) -> [u8; 32] {
        let v = hex::decode(hex_str).unwrap();
        v.try_into().unwrap()
    }

    #[test]
    fn difficulty_one_is_the_classic_constant() {
        assert_eq!(share_target_be(1.0), DIFF1_TARGET_BE);
        assert_eq!(
            share_target_be(1.0),
            be("00000000ffff0000000000000000000000000000000000000000000000000000")
        );
    }

    #[test]
    fn two_is_half_and_half_is_double() {
        assert_eq!(
            share_target_be(2.0),
            be("000000007fff8000000000000000000000000000000000000000000000000000")
        );
        assert_eq!(
            share_target_be(0.5),
            be("00000001fffe0000000000000000000000000000000000000000000000000000")
        );
        assert_eq!(
            share_target_be(65536.0),
            be("000000000000ffff000000000000000000000000000000000000000000000000")
        );
    }

    #[test]
    fn non_power_of_two_rounds_down() {
        // 0xFFFF * 2^208 / 3 = 0x5555 * 2^208 exactly.
        assert_eq!(
            share_target_be(3.0),
            be("0000000055550000000000000000000000000000000000000000000000000000")
        );
        // 0xFFFF * 2^208 / 0xFFFF = 2^208.
        assert_eq!(
            share_target_be(65535.0),
            be("0000000000010000000000000000000000000000000000000000000000000000")
        );
        // Agrees with the bitcoin crate's own float difficulty, to f64 precision.
        for d in [1.0, 7.5, 1234.5678, 1e6, 3.3e12, 0.001] {
            let got = share_target(d).difficulty_float();
            assert!((got - d).abs() / d < 1e-9, "{d} -> {got}");
        }
    }

    #[test]
    fn tiny_difficulties_and_the_cap() {
        // 1e-6 is far below 1: the target exceeds the diff-1 constant but still fits.
        let t = share_target_be(1e-6);
        assert!(t > DIFF1_TARGET_BE && t != [0xff; 32]);
        assert_eq!(&t[..2], &[0, 0x0f]); // 0xFFFF·2^208·10^6 ≈ 2^243.93
                                         // 1e-9 → ≈ 2^253.9, still below the cap.
        let t = share_target_be(1e-9);
        assert!(t[0] == 0x3b || t[0] == 0x3a, "{t:x?}");
        // 2^-32 → 0xFFFF·2^240 < 2^256.
        assert_eq!(
            share_target_be(2f64.powi(-32)),
            be("ffff000000000000000000000000000000000000000000000000000000000000")
        );
        // Anything at or below 2^-33 overflows: capped.
        assert_eq!(share_target_be(2f64.powi(-33)), [0xff; 32]);
        assert_eq!(share_target_be(1e-30), [0xff; 32]);
        assert_eq!(share_target_be(f64::MIN_POSITIVE / 4.0), [0xff; 32]);
        assert_eq!(share_target_be(0.0), [0xff; 32]);
        assert_eq!(share_target_be(-1.0), [0xff; 32]);
        assert_eq!(share_target_be(f64::NAN), [0xff; 32]);
        assert_eq!(share_target_be(f64::INFINITY), [0; 32]);
        assert_eq!(share_target_be(1e300), [0; 32]);
        assert_eq!(share_target(1.0), Target::MAX);
    }
}
