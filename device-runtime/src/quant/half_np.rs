//! Scalar conversions with numpy's exact semantics, the ones gguf-py's `gguf.quants` relies on.
//!
//! - f16 <-> f32: IEEE round-to-nearest-even through the `half` crate, except NaN, where numpy's software
//!   conversion (`npy_halfbits_to_floatbits` / `npy_floatbits_to_halfbits` in `numpy/_core/src/npymath/
//!   halffloat.cpp`) keeps the payload without setting the quiet bit (hardware F16C, which `half` may use,
//!   sets it).
//! - f32 -> u8 / i8 casts (`ndarray.astype(np.uint8)`): on x86-64 numpy compiles a C cast, i.e. a truncating
//!   conversion to a 32-bit integer (`cvttss2si`, which yields `0x8000_0000` for NaN and out-of-range values)
//!   and keeps the low byte. Checked against numpy 2.4 on x86-64: 200.0 -> -56 (i8), -1.0 -> 255 (u8),
//!   NaN / ±inf / 1e10 -> 0.

use half::f16;

/// f16 bits to f32, as `np.float16 -> np.float32`.
#[inline]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    if h & 0x7C00 == 0x7C00 && h & 0x03FF != 0 {
        // NaN: sign, all-ones exponent, payload shifted up unchanged.
        f32::from_bits(((h as u32 & 0x8000) << 16) | 0x7F80_0000 | ((h as u32 & 0x03FF) << 13))
    } else {
        f16::from_bits(h).to_f32()
    }
}

/// f32 to f16 bits, as `np.float32 -> np.float16` (round to nearest even, overflow to inf).
#[inline]
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    if x.is_nan() {
        let b = x.to_bits();
        let mut h = 0x7C00u16 | ((b & 0x007F_FFFF) >> 13) as u16;
        if h == 0x7C00 {
            h += 1; // keep it a NaN when the payload's high bits are zero
        }
        h | ((b >> 16) as u16 & 0x8000)
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// Read the little-endian f16 at `b[i..i + 2]` as f32.
#[inline]
pub(crate) fn f16_le(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// `x.astype(np.uint8)` for one f32 (x86-64 numpy semantics, see the module docs).
#[inline]
pub(crate) fn np_cast_u8(x: f32) -> u8 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        (x as i32) as u8 // truncation toward zero, then the low byte
    } else {
        0 // NaN and out-of-range: 0x8000_0000, whose low byte is 0
    }
}

/// gguf-py's `np_roundf`: round half away from zero, NaN for ±inf and NaN input.
#[inline]
pub(crate) fn np_roundf(n: f32) -> f32 {
    let a = n.abs();
    let b = if a < 8_388_608.0 {
        // floor(a) and floor(2 * frac) via integer truncation (both arguments are in [0, 2^23)); the same
        // values as `f32::floor`, without a libm call on baseline x86-64.
        let floored = (a as i32) as f32;
        floored + ((2.0 * (a - floored)) as i32) as f32
    } else {
        // a >= 2^23 is an integer (floor(a) = a, fraction 0); for inf and NaN numpy's `a - floor(a)` is NaN.
        if a.is_finite() { a } else { f32::NAN }
    };
    np_sign(n) * b
}

/// `np.sign`: -1, +0 (also for -0), +1, or NaN.
#[inline]
fn np_sign(n: f32) -> f32 {
    if n > 0.0 {
        1.0
    } else if n < 0.0 {
        -1.0
    } else if n == 0.0 {
        0.0
    } else {
        n // NaN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_casts() {
        // Reference values printed by numpy 2.4.6 on x86-64 (see module docs).
        let xs = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 200.0, -200.0, 128.0, -129.0, 300.0, -1.0, 255.0,
            256.0, 1e10, -1e10, -0.5, 3e9, -3e9];
        let u8s: Vec<u8> = xs.iter().map(|&x| np_cast_u8(x)).collect();
        assert_eq!(u8s, [0, 0, 0, 200, 56, 128, 127, 44, 255, 255, 0, 0, 0, 0, 0, 0]);
        let i8s: Vec<i8> = xs.iter().map(|&x| np_cast_u8(x) as i8).collect();
        assert_eq!(i8s, [0, 0, 0, -56, 56, -128, 127, 44, -1, -1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn numpy_half_nans() {
        // numpy: float16 bits -> float32 bits, and back.
        for (h, f) in [(0x7C01u16, 0x7F80_2000u32), (0x7E00, 0x7FC0_0000), (0xFC01, 0xFF80_2000),
            (0x7D00, 0x7FA0_0000), (0x7FFF, 0x7FFF_E000)] {
            assert_eq!(f16_to_f32(h).to_bits(), f, "{h:#x}");
        }
        for (f, h) in [(0x7F80_0001u32, 0x7C01u16), (0x7FC0_0000, 0x7E00), (0xFF80_0001, 0xFC01),
            (0x7F80_1000, 0x7C01), (0x7FA0_0000, 0x7D00), (0x7F80_2000, 0x7C01), (0x7FFF_FFFF, 0x7FFF)] {
            assert_eq!(f32_to_f16(f32::from_bits(f)), h, "{f:#x}");
        }
        // Round to nearest even at the f16 half-ulp: 1 + 2^-11 -> 1.0; 1 + 3*2^-11 -> 1 + 2^-9.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
        assert_eq!(f32_to_f16(65520.0), 0x7C00); // rounds up to inf
    }

    #[test]
    fn roundf_half_away_from_zero() {
        assert_eq!(np_roundf(2.5), 3.0);
        assert_eq!(np_roundf(-2.5), -3.0);
        assert_eq!(np_roundf(0.49999997), 0.0);
        assert!(np_roundf(f32::INFINITY).is_nan());
        assert!(np_roundf(f32::NAN).is_nan());
        // Against the literal numpy formula (floor-based) on a sweep of values, ties and large magnitudes.
        let literal = |n: f32| {
            let a = n.abs();
            let f = a.floor();
            np_sign(n) * (f + (2.0 * (a - f)).floor())
        };
        let mut x = 1e-6f32;
        while x < 1e30 {
            for v in [x, -x, x.floor() + 0.5, -(x.floor() + 0.5), f32::from_bits(x.to_bits() + 1)] {
                assert_eq!(np_roundf(v).to_bits(), literal(v).to_bits(), "{v:e}");
            }
            x *= 1.0137;
        }
        assert_eq!(np_roundf(8_388_607.5), 8_388_608.0);
        assert_eq!(np_roundf(-16_777_217.0), -16_777_216.0);
        // numpy: np_roundf(-0.0) = +0.0 (np.sign(-0.0) = +0.0), np_roundf(-0.3) = -0.0.
        assert_eq!(np_roundf(-0.0).to_bits(), 0);
        assert_eq!(np_roundf(-0.3).to_bits(), (-0.0f32).to_bits());
    }
}
