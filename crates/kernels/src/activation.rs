//! GELU with the exact (erf) form, vectorised: `gelu(x) = x/2 (1 + erf(x / sqrt 2))`.
//!
//! candle's `gelu_erf` evaluates `erf` in f64 per element (candle-core's `cpu/erf.rs`); on a 30 s
//! window of a 12-layer encoder that is 55 M scalar calls, about a tenth of the window's time.
//! Here `erf` is the rational approximation 7.1.26 of Abramowitz and Stegun (Handbook of
//! Mathematical Functions, 1964), `erf(x) = 1 - (a1 t + ... + a5 t^5) e^{-x^2}` with
//! `t = 1 / (1 + p x)` for `x >= 0` and `erf(-x) = -erf(x)`, absolute error below `1.5e-7` (`5e-7` in f32 arithmetic):
//! the formula PyTorch's vectorised CPU `erf` uses (`Vectorized<float>::erf` in ATen's
//! `cpu/vec/vec512/vec512_float.h`), so the GELU of transformers on a CPU computes the same.
//! `e^{-x^2}` is [`crate::softmax::exp`]'s formula. AVX-512F / AVX2+FMA / portable, chosen at
//! run time ([`Cpu`]).

use rayon::prelude::*;

use crate::cpu::{Cpu, Simd};
use crate::softmax::exp;

const P: f32 = 0.327_591_1;
const A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_72,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Values per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// `erf(x)` by the formula the vector paths use, for one value.
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = A.iter().rev().fold(0.0f32, |s, &c| s.mul_add(t, c)) * t;
    let y = (-poly).mul_add(exp(-a * a), 1.0);
    y.copysign(x)
}

/// `gelu(x)` (the erf form) for one value.
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `xs[i] = gelu(xs[i])` on the current rayon pool, at the best level of this CPU.
pub fn gelu_erf_in_place(xs: &mut [f32]) {
    let cpu = Cpu::detected();
    xs.par_chunks_mut(CHUNK)
        .for_each(|chunk| gelu_erf_at(cpu, chunk));
}

/// [`gelu_erf_in_place`] on one thread with the features `cpu` allows (the tests run every
/// level this CPU has).
pub fn gelu_erf_at(cpu: Cpu, xs: &mut [f32]) {
    match cpu.simd() {
        // SAFETY: `cpu` holds the feature each kernel is compiled for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::gelu_avx512(xs) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::gelu_avx2(xs) },
        _ => xs.iter_mut().for_each(|x| *x = gelu_erf(*x)),
    }
}

/// `silu(x) = x / (1 + e^-x)` by the formula the vector paths use, for one value.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The gated MLP's `silu(gate) * up` (Qwen2's `act_fn(gate_proj(x)) * up_proj(x)`) for `rows`
/// of `[gate | up]`, `2 * width` values each, as one product with the two weights side by side
/// writes them: `(rows, width)`, on the current rayon pool, at the best level of this CPU. One
/// pass instead of candle's three (the activation, the product, and the copies of the two
/// strided halves), with a vectorised `exp`.
///
/// # Panics
/// When `gate_up` is not whole rows of `2 * width` values.
pub fn silu_gate(gate_up: &[f32], width: usize) -> Vec<f32> {
    assert!(
        width > 0 && gate_up.len().is_multiple_of(2 * width),
        "silu_gate: {} values are not rows of 2 x {width}",
        gate_up.len()
    );
    let cpu = Cpu::detected();
    let mut out = vec![0.0f32; gate_up.len() / 2];
    let rows_per_task = (CHUNK / width).max(1);
    out.par_chunks_mut(rows_per_task * width)
        .zip(gate_up.par_chunks(rows_per_task * 2 * width))
        .for_each(|(out, gate_up)| {
            for (o, gu) in out
                .chunks_exact_mut(width)
                .zip(gate_up.chunks_exact(2 * width))
            {
                let (gate, up) = gu.split_at(width);
                silu_gate_at(cpu, gate, up, o);
            }
        });
    out
}

/// `out[i] = silu(gate[i]) * up[i]` on one thread with the features `cpu` allows (the tests
/// run every level this CPU has).
///
/// # Panics
/// When the lengths differ.
pub fn silu_gate_at(cpu: Cpu, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == up.len() && up.len() == out.len(),
        "silu_gate: lengths differ"
    );
    match cpu.simd() {
        // SAFETY: `cpu` holds the feature each kernel is compiled for; the lengths are equal.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::silu_gate_avx512(gate, up, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::silu_gate_avx2(gate, up, out) },
        _ => silu_gate_portable(gate, up, out),
    }
}

fn silu_gate_portable(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{gelu_erf, A, FRAC_1_SQRT_2, P};
    use crate::softmax::x86::{exp16, exp8};

    #[target_feature(enable = "avx512f")]
    unsafe fn gelu16(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(FRAC_1_SQRT_2));
        let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(
            _mm512_set1_epi32(i32::MIN),
            _mm512_castps_si512(z),
        ));
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(P), a, one));
        let mut poly = _mm512_set1_ps(A[4]);
        for &c in A[..4].iter().rev() {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
        let erf_abs = _mm512_fnmadd_ps(poly, e, one);
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(one, erf),
        )
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_avx512(xs: &mut [f32]) {
        let body = xs.len() - xs.len() % 16;
        let ptr = xs.as_mut_ptr();
        for i in (0..body).step_by(16) {
            _mm512_storeu_ps(ptr.add(i), gelu16(_mm512_loadu_ps(ptr.add(i))));
        }
        xs[body..].iter_mut().for_each(|x| *x = gelu_erf(*x));
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu8(x: __m256) -> __m256 {
        let z = _mm256_mul_ps(x, _mm256_set1_ps(FRAC_1_SQRT_2));
        let sign_mask = _mm256_set1_ps(-0.0);
        let sign = _mm256_and_ps(z, sign_mask);
        let a = _mm256_andnot_ps(sign_mask, z);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(P), a, one));
        let mut poly = _mm256_set1_ps(A[4]);
        for &c in A[..4].iter().rev() {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        poly = _mm256_mul_ps(poly, t);
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
        let erf = _mm256_or_ps(_mm256_fnmadd_ps(poly, e, one), sign);
        _mm256_mul_ps(
            _mm256_mul_ps(_mm256_set1_ps(0.5), x),
            _mm256_add_ps(one, erf),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_avx2(xs: &mut [f32]) {
        let body = xs.len() - xs.len() % 8;
        let ptr = xs.as_mut_ptr();
        for i in (0..body).step_by(8) {
            _mm256_storeu_ps(ptr.add(i), gelu8(_mm256_loadu_ps(ptr.add(i))));
        }
        xs[body..].iter_mut().for_each(|x| *x = gelu_erf(*x));
    }

    /// # Safety
    /// The CPU has AVX-512F; the three slices have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_gate_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let body = gate.len() - gate.len() % 16;
        let one = _mm512_set1_ps(1.0);
        for i in (0..body).step_by(16) {
            // SAFETY: i + 16 <= body <= every length; unaligned loads and stores.
            unsafe {
                let g = _mm512_loadu_ps(gate.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
                let s = _mm512_div_ps(g, _mm512_add_ps(one, e));
                let y = _mm512_mul_ps(s, _mm512_loadu_ps(up.as_ptr().add(i)));
                _mm512_storeu_ps(out.as_mut_ptr().add(i), y);
            }
        }
        super::silu_gate_portable(&gate[body..], &up[body..], &mut out[body..]);
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; the three slices have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_gate_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let body = gate.len() - gate.len() % 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..body).step_by(8) {
            // SAFETY: i + 8 <= body <= every length; unaligned loads and stores.
            unsafe {
                let g = _mm256_loadu_ps(gate.as_ptr().add(i));
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
                let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
                let y = _mm256_mul_ps(s, _mm256_loadu_ps(up.as_ptr().add(i)));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
            }
        }
        super::silu_gate_portable(&gate[body..], &up[body..], &mut out[body..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::levels;

    /// `silu(gate) * up` at every level against the f64 definition, on lengths that cut the
    /// vector widths and values from -100 to 100 (both ends of the clamped `exp`), and the
    /// row-wise split of `[gate | up]` on 1-3 threads.
    #[test]
    fn silu_gate_matches_the_definition() {
        let n = 1000;
        let gate: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) / 5.0).collect();
        let up: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let want: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(&g, &u)| g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64)
            .collect();
        for level in levels() {
            for len in [0, 1, 7, 8, 15, 16, 17, 33, n] {
                let mut out = vec![0.0f32; len];
                silu_gate_at(level, &gate[..len], &up[..len], &mut out);
                for (o, w) in out.iter().zip(&want) {
                    let tol = 1e-6 * (1.0 + w.abs());
                    assert!((*o as f64 - w).abs() <= tol, "{level:?} {len}: {o} vs {w}");
                }
            }
        }
        let (rows, width) = (5, n / 5);
        let gate_up: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let span = r * width..(r + 1) * width;
                gate[span.clone()]
                    .iter()
                    .chain(&up[span])
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| silu_gate(&gate_up, width));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{threads}: {g} vs {w}"
                );
            }
        }
    }

    /// `erf` in f64 by its Maclaurin series (|x| < 3) or the continued fraction of `erfc`
    /// (|x| >= 3), both far more accurate than the f32 results they check.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0f64);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{-a^2}/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...)))), Lentz-free:
            // evaluated from the tail.
            let mut f = 0.0f64;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        v.copysign(x)
    }

    fn gelu64(x: f64) -> f64 {
        0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
    }

    #[test]
    fn reference_erf_is_right() {
        // Values from tables of erf.
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
        ] {
            assert!((erf64(x) - want).abs() < 1e-15, "{x}");
            assert!((erf64(-x) + want).abs() < 1e-15, "{x}");
        }
    }

    #[test]
    fn erf_is_within_its_bound() {
        let mut worst = (0.0f64, 0.0f32);
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let err = (erf(x) as f64 - erf64(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        // 1.5e-7 for the formula, plus the f32 rounding of its Horner steps, whose terms
        // (a3 t^3, a4 t^4, a5 t^5) are near 1 and mostly cancel: 4.5e-7 at |x| = 0.2.
        assert!(worst.0 < 5e-7, "erf({}): error {}", worst.1, worst.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert!(erf(f32::NAN).is_nan());
    }

    /// Every level on odd lengths (vector bodies and scalar tails) against the f64 GELU.
    #[test]
    fn gelu_matches_the_definition_at_every_level() {
        for level in levels() {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 33, 1001] {
                let xs: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 2001) as f32 * 0.01 - 10.0)
                    .collect();
                let mut got = xs.clone();
                gelu_erf_at(level, &mut got);
                for (&x, &g) in xs.iter().zip(&got) {
                    let want = gelu64(x as f64);
                    let err = (g as f64 - want).abs();
                    assert!(
                        err <= 2e-7 * x.abs().max(1.0) as f64 + 1e-6 * want.abs(),
                        "{level:?} gelu({x}) = {g}, want {want}"
                    );
                }
            }
            // gelu(-inf) = -inf * 0 is NaN, as in candle and PyTorch.
            let mut special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, 40.0, -40.0];
            gelu_erf_at(level, &mut special);
            assert!(special[0].is_nan(), "{level:?}");
            assert_eq!(special[1], f32::INFINITY, "{level:?}");
            assert!(special[2].is_nan(), "{level:?}");
            assert_eq!(special[3..], [0.0, 40.0, 0.0], "{level:?}");
        }
    }

    #[test]
    fn the_parallel_gelu_equals_one_thread() {
        let xs: Vec<f32> = (0..3 * CHUNK + 5)
            .map(|i| ((i * 31) % 997) as f32 * 0.02 - 10.0)
            .collect();
        let mut one = xs.clone();
        gelu_erf_at(Cpu::detected(), &mut one);
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut par = xs.clone();
            pool.install(|| gelu_erf_in_place(&mut par));
            assert_eq!(par, one, "{threads} threads");
        }
    }
}
