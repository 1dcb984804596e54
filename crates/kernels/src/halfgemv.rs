//! Products of f32 activation rows with bf16 or f16 weights (decode steps).
//!
//! `out[r][j] = dot(x[r], widen(w[j * k..(j + 1) * k])) (+ bias[j])`. Each weight is widened
//! to f32 exactly (bf16: shift left by 16 bits; f16: `vcvtph2ps`) and multiplied and summed
//! in f32 by the kernel of [`crate::gemv`], so the result equals the f32 product on the upcast
//! weights up to summation order, and a row of a batch is bitwise that row alone. A decode
//! step is bound by memory bandwidth, so the widening is free and halving the bytes read
//! nearly doubles the speed. llama.cpp's bf16 dot (`ggml/src/ggml-cpu/vec.cpp`) uses
//! `vdpbf16ps` instead, which also rounds the activations to bf16; we keep them in f32.
//!
//! The instruction set is picked at run time ([`Cpu`]): AVX2 + FMA + F16C (8 lanes), or
//! portable code.
//!
//! The decoder packs its bf16/f16 linears on the CPU ([`crate::packed`]), whose register tile
//! serves a stack of rows better; these kernels take half weights kept row by row.

use half::slice::HalfBitsSliceExt;
use half::{bf16, f16};

use crate::cpu::Cpu;
use crate::gemv::float_batch;

/// The half-precision encoding of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfKind {
    /// bfloat16: the upper half of an f32.
    Bf16,
    /// IEEE half precision.
    F16,
}

/// Computes `out = x · widen(w)ᵀ (+ bias)` with the features of this CPU; see
/// [`gemv_half_at`].
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long.
pub fn gemv_half(kind: HalfKind, x: &[f32], w: &[u16], bias: Option<&[f32]>, out: &mut [f32]) {
    gemv_half_at(Cpu::detected(), kind, x, w, bias, out);
}

/// Computes `out = x · widen(w)ᵀ (+ bias)` for `x` of length `k` and `w` of `out.len()` rows
/// of `k` half-precision bit patterns, splitting the rows over the current rayon pool, with
/// the features `cpu` allows (the tests run every level this CPU has): the one-row case of
/// [`gemv_half_batch_at`].
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long.
pub fn gemv_half_at(
    cpu: Cpu,
    kind: HalfKind,
    x: &[f32],
    w: &[u16],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    gemv_half_batch_at(cpu, kind, x, 1, w, bias, out);
}

/// Computes `out[r] = xs[r] · widen(w)ᵀ (+ bias)` for `batch` rows `xs` of `k` values and `w`
/// of `n` rows of `k` bit patterns, into `batch` rows of `n`, with the features of this CPU;
/// see [`gemv_half_batch_at`].
///
/// # Panics
///
/// As [`gemv_half_batch_at`].
pub fn gemv_half_batch(
    kind: HalfKind,
    xs: &[f32],
    batch: usize,
    w: &[u16],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    gemv_half_batch_at(Cpu::detected(), kind, xs, batch, w, bias, out);
}

/// [`gemv_half_batch`] with the features `cpu` allows. Each row of `out` is bitwise what
/// [`gemv_half_at`] gives for that row of `xs` alone, whatever the other rows and the pool.
///
/// # Panics
///
/// If `batch == 0`, `xs` or `out` is not `batch` rows, `w.len() != n * k` or `bias` is not
/// `n` long.
pub fn gemv_half_batch_at(
    cpu: Cpu,
    kind: HalfKind,
    xs: &[f32],
    batch: usize,
    w: &[u16],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    match kind {
        HalfKind::Bf16 => float_batch::<bf16>(cpu, xs, batch, w.reinterpret_cast(), bias, out),
        HalfKind::F16 => float_batch::<f16>(cpu, xs, batch, w.reinterpret_cast(), bias, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::levels;
    use crate::gemv::tests::check_batch;
    use crate::test_values::{assert_f32_sum_close, f64_product, values};

    fn widen(kind: HalfKind, bits: u16) -> f32 {
        match kind {
            HalfKind::Bf16 => bf16::from_bits(bits).to_f32(),
            HalfKind::F16 => f16::from_bits(bits).to_f32(),
        }
    }

    fn to_bits(kind: HalfKind, w: &[f32]) -> Vec<u16> {
        w.iter()
            .map(|&v| match kind {
                HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
                HalfKind::F16 => f16::from_f32(v).to_bits(),
            })
            .collect()
    }

    fn check(cpu: Cpu, kind: HalfKind, k: usize, n: usize, batch: usize) {
        let xs: Vec<Vec<f32>> = (0..batch)
            .map(|r| values(k, 1 + (k + 5 * r) as u64))
            .collect();
        let w = to_bits(kind, &values(n * k, 2 + n as u64));
        let bias = (n % 2 == 1).then(|| values(n, 3));
        // The product in f64 on the widened weights.
        let widened: Vec<f32> = w.iter().map(|&b| widen(kind, b)).collect();
        let what = format!("{cpu:?} {kind:?} k={k} n={n}");
        check_batch(
            &what,
            &xs,
            n,
            |rows, out| {
                let flat = rows.concat();
                gemv_half_batch_at(cpu, kind, &flat, rows.len(), &w, bias.as_deref(), out);
            },
            |r, got| {
                let want = f64_product(&xs[r], &widened, bias.as_deref());
                assert_f32_sum_close(got, &want, k, &what);
            },
        );
    }

    #[test]
    fn every_level_matches_the_f64_reference_on_odd_sizes() {
        let sizes = [(1, 1), (7, 3), (8, 4), (15, 5), (17, 4), (33, 17), (100, 7)];
        for cpu in levels() {
            for kind in [HalfKind::Bf16, HalfKind::F16] {
                for &(k, n) in &sizes {
                    for batch in 1..=9 {
                        check(cpu, kind, k, n, batch);
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_matches_when_split_over_threads() {
        for cpu in levels() {
            for kind in [HalfKind::Bf16, HalfKind::F16] {
                for batch in [1, 2, 7] {
                    check(cpu, kind, 257, 1023, batch);
                    check(cpu, kind, 896, 301, batch);
                }
                // Long rows with a tail, odd batches and an odd weight row left over by the pairs.
                check(cpu, kind, 1001, 37, 9);
                check(cpu, kind, 2000, 19, 5);
                // One row walks rows longer than a span in several spans, a batch whole rows.
                check(cpu, kind, 5000, 9, 3);
            }
        }
    }
}
