//! A vectorised softmax for the fused attention: candle's CPU softmax calls the C library's
//! scalar `expf` per element, which made a fifth of a 30 s encoder window's time.
//!
//! `exp` is Cephes' `expf` algorithm (also the one of the SSE/AVX "mathfun" ports): `x = n ln2 +
//! r` with `|r| <= ln2 / 2`, `e^r` by a degree-7 polynomial, `2^n` put in the exponent bits;
//! about 1 ulp from the exact value over the range a softmax uses (`x <= 0`). AVX-512F or
//! AVX2+FMA are chosen at run time ([`Cpu`]), with a portable path that runs the same formula.

use crate::cpu::{Cpu, Simd};

/// Cephes `expf` polynomial, highest degree first: `e^r ~ 1 + r + r^2 (P0 r^5 + ... + P5)`.
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in two, so that `x - n ln2` is exact for the `n` a float exponent can take.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Inputs are clamped to `[LO, HI]`: `e^LO` is about the smallest normal float (`2^-126`), and
/// `e^HI` stays finite (`n <= 127`).
const LO: f32 = -87.336_54;
const HI: f32 = 88.0;

/// `e^x` by the formula the vector paths use, for one value.
pub fn exp(x: f32) -> f32 {
    // NaN stays NaN through the clamp.
    let x = x.clamp(LO, HI);
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = P[1..].iter().fold(P[0], |p, &c| p.mul_add(r, c));
    let y = p.mul_add(r * r, r) + 1.0;
    if x.is_nan() {
        return x;
    }
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `row = softmax(row)`: `e^(x - max) / sum`, with the widest vectors of this CPU.
pub fn softmax_in_place(row: &mut [f32]) {
    softmax_at(Cpu::detected(), row)
}

/// [`softmax_in_place`] with the features `cpu` allows (the tests run every level this CPU
/// has).
pub fn softmax_at(cpu: Cpu, row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    match cpu.simd() {
        // SAFETY: `cpu` holds the feature each kernel is compiled for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::softmax_avx512(row) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::softmax_avx2(row) },
        _ => softmax_portable(row),
    }
}

fn softmax_portable(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    row.iter_mut().for_each(|x| *x /= sum);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{exp, HI, LN2_HI, LN2_LO, LO, LOG2E, P};

    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp16(x: __m512) -> __m512 {
        // max(LO, x) and min(HI, .) keep a NaN in x (the second operand is returned on NaN).
        let x = _mm512_min_ps(_mm512_set1_ps(HI), _mm512_max_ps(_mm512_set1_ps(LO), x));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(y, _mm512_castsi512_ps(bits))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_avx512(row: &mut [f32]) {
        let n = row.len();
        let body = n - n % 16;
        let ptr = row.as_mut_ptr();
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(ptr.add(i)));
        }
        let mut max = _mm512_reduce_max_ps(vmax);
        for &x in &row[body..] {
            max = max.max(x);
        }
        let m = _mm512_set1_ps(max);
        let mut vsum = _mm512_setzero_ps();
        for i in (0..body).step_by(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(i)), m));
            _mm512_storeu_ps(ptr.add(i), e);
            vsum = _mm512_add_ps(vsum, e);
        }
        let mut sum = _mm512_reduce_add_ps(vsum);
        for x in &mut row[body..] {
            *x = exp(*x - max);
            sum += *x;
        }
        let s = _mm512_set1_ps(sum);
        for i in (0..body).step_by(16) {
            _mm512_storeu_ps(ptr.add(i), _mm512_div_ps(_mm512_loadu_ps(ptr.add(i)), s));
        }
        row[body..].iter_mut().for_each(|x| *x /= sum);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_set1_ps(HI), _mm256_max_ps(_mm256_set1_ps(LO), x));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum8(v: __m256) -> f32 {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        lanes.iter().sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_avx2(row: &mut [f32]) {
        let n = row.len();
        let body = n - n % 8;
        let ptr = row.as_mut_ptr();
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..body).step_by(8) {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(ptr.add(i)));
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &x in &row[body..] {
            max = max.max(x);
        }
        let m = _mm256_set1_ps(max);
        let mut vsum = _mm256_setzero_ps();
        for i in (0..body).step_by(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(ptr.add(i)), m));
            _mm256_storeu_ps(ptr.add(i), e);
            vsum = _mm256_add_ps(vsum, e);
        }
        let mut sum = hsum8(vsum);
        for x in &mut row[body..] {
            *x = exp(*x - max);
            sum += *x;
        }
        let s = _mm256_set1_ps(sum);
        for i in (0..body).step_by(8) {
            _mm256_storeu_ps(ptr.add(i), _mm256_div_ps(_mm256_loadu_ps(ptr.add(i)), s));
        }
        row[body..].iter_mut().for_each(|x| *x /= sum);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::cpu::tests::levels;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.to_bits() + 1) - b32).abs() as f64;
        (a as f64 - b).abs() / ulp
    }

    /// Within 2 ulp of the exact value from the smallest normal result to e^88.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let steps = 200_000;
        for i in 0..=steps {
            let x = LO + (HI - LO) * i as f32 / steps as f32;
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e30) < 1.2e-38 && exp(-1e30) > 0.0);
    }

    /// Each level against the f64 softmax, on lengths around the vector widths (tails).
    #[test]
    fn softmax_matches_f64_at_every_level() {
        for level in levels() {
            for len in [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1500] {
                let row: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919 % 1000) as f32 / 37.0) - 13.0)
                    .collect();
                let max = row
                    .iter()
                    .cloned()
                    .fold(f64::NEG_INFINITY, |m, x| m.max(x as f64));
                let e: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
                let z: f64 = e.iter().sum();
                let mut got = row.clone();
                softmax_at(level, &mut got);
                // The f32 sum of `len` terms: its rounding error grows like sqrt(len) ulp.
                let tol = 2e-7 * (len as f64).sqrt().max(2.0);
                for (g, w) in got.iter().zip(&e) {
                    let w = w / z;
                    assert!(
                        (*g as f64 - w).abs() <= tol * w + 1e-12,
                        "{level:?} len {len}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_keeps_nan_and_handles_minus_infinity() {
        for level in levels() {
            let mut row = vec![0.0f32; 20];
            row[3] = f32::NEG_INFINITY;
            softmax_at(level, &mut row);
            assert!(row[3] < 1e-37, "{level:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let mut row = vec![0.0f32; 20];
            row[17] = f32::NAN;
            softmax_at(level, &mut row);
            assert!(row.iter().all(|x| x.is_nan()), "{level:?}");
        }
    }
}
