//! A bandwidth-bound f32 matrix-vector product for single-row inputs (decode steps).
//!
//! `out[j] = dot(x, w[j * k..(j + 1) * k]) (+ bias[j])` with `w` row-major `(n, k)`, as in
//! `x · wᵀ` of a linear layer. Every weight is read once, so the speed is the memory
//! bandwidth: rows are split over the rayon pool (the gemm crate's matrix-vector path runs on
//! one thread), and each thread walks four rows at a time with 8-wide FMA (AVX2, when the
//! [`Cpu`] has it) so the input is loaded once per four rows.

use crate::cpu::{Cpu, Feature};
use crate::halfgemv::{split_rows, ROW_BLOCK};

/// Computes `out = x · wᵀ (+ bias)` for `x` of length `k`, `w` of `out.len()` rows of `k`,
/// with the features of this CPU; see [`gemv_at`].
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long.
pub fn gemv(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    gemv_at(Cpu::detected(), x, w, bias, out);
}

/// [`gemv`] with the features `cpu` allows (the tests run every level this CPU has).
///
/// Splits the rows over the current rayon pool when the matrix is large enough.
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long.
pub fn gemv_at(cpu: Cpu, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    split_rows(x.len(), w, bias, out, |w, out| rows(cpu, x, w, out));
}

/// The single-threaded product over a block of rows (`w.len() == out.len() * x.len()`, which
/// [`split_rows`] checked).
fn rows(cpu: Cpu, x: &[f32], w: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu.has(Feature::Avx2) {
        // SAFETY: `cpu` holds AVX2 and FMA, the kernel's features; the lengths agree.
        unsafe { avx2::rows(x, w, out) };
        return;
    }
    let _ = cpu;
    if x.is_empty() {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot_portable(x, row);
    }
}

/// Eight independent partial sums, which the compiler vectorises on any target.
fn dot_portable(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xc, wc) = (x.chunks_exact(8), w.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, ws) in xc.zip(wc) {
        for ((a, x), w) in acc.iter_mut().zip(xs).zip(ws) {
            *a += x * w;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::ROW_BLOCK;

    /// Horizontal sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// `out[j] = dot(x, w[j * k..])` for every row of `w`, four rows per pass.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA; `w.len() == out.len() * x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(x: &[f32], w: &[f32], out: &mut [f32]) {
        let k = x.len();
        let k8 = k - k % 8;
        debug_assert_eq!(w.len(), out.len() * k);
        let xp = x.as_ptr();
        let mut blocks = out.chunks_exact_mut(ROW_BLOCK);
        let mut r = 0;
        for block in &mut blocks {
            // SAFETY: rows r..r + 4 lie inside `w` (length out.len() * k) and every load reads
            // 8 floats at an index below k8 <= k.
            unsafe {
                let p0 = w.as_ptr().add(r * k);
                let (p1, p2, p3) = (p0.add(k), p0.add(2 * k), p0.add(3 * k));
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let mut i = 0;
                while i < k8 {
                    let xv = _mm256_loadu_ps(xp.add(i));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p0.add(i)), xv, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p1.add(i)), xv, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p2.add(i)), xv, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p3.add(i)), xv, a3);
                    i += 8;
                }
                let mut sums = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
                for i in k8..k {
                    let xi = *xp.add(i);
                    sums[0] += *p0.add(i) * xi;
                    sums[1] += *p1.add(i) * xi;
                    sums[2] += *p2.add(i) * xi;
                    sums[3] += *p3.add(i) * xi;
                }
                block.copy_from_slice(&sums);
            }
            r += ROW_BLOCK;
        }
        for o in blocks.into_remainder() {
            let row = &w[r * k..(r + 1) * k];
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i < k8 {
                // SAFETY: i + 8 <= k8 <= k, the length of both slices.
                unsafe {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(row.as_ptr().add(i)),
                        _mm256_loadu_ps(xp.add(i)),
                        acc,
                    );
                }
                i += 8;
            }
            let tail: f32 = x[k8..].iter().zip(&row[k8..]).map(|(a, b)| a * b).sum();
            *o = hsum(acc) + tail;
            r += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::levels;
    use crate::test_values::{assert_f32_sum_close, f64_product, values};

    fn check(cpu: Cpu, k: usize, n: usize, with_bias: bool, threads: usize) {
        let x = values(k, 1 + k as u64);
        let w = values(n * k, 2 + n as u64);
        let bias = with_bias.then(|| values(n, 3));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut got = vec![f32::NAN; n];
        pool.install(|| gemv_at(cpu, &x, &w, bias.as_deref(), &mut got));
        let want = f64_product(&x, &w, bias.as_deref());
        assert_f32_sum_close(
            &got,
            &want,
            k,
            &format!("{cpu:?} k={k} n={n} threads={threads}"),
        );
    }

    #[test]
    fn every_level_matches_the_f64_reference_on_odd_sizes() {
        for cpu in levels() {
            for threads in [1, 2] {
                for &(k, n) in &[
                    (1, 1),
                    (7, 3),
                    (8, 4),
                    (9, 5),
                    (33, 17),
                    (64, 130),
                    (896, 131),
                ] {
                    check(cpu, k, n, false, threads);
                    check(cpu, k, n, true, threads);
                }
            }
        }
    }

    #[test]
    fn every_level_matches_when_split_over_threads() {
        // Large enough to take the parallel path, with rows not a multiple of the chunking.
        for cpu in levels() {
            for threads in [1, 2, 3] {
                check(cpu, 257, 1023, true, threads);
                check(cpu, 896, 301, false, threads);
            }
        }
    }
}
