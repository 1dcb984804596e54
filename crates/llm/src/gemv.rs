//! A bandwidth-bound f32 matrix-vector product for single-row inputs (decode steps).
//!
//! `out[j] = dot(x, w[j * k..(j + 1) * k]) (+ bias[j])` with `w` row-major `(n, k)`, as in
//! `x · wᵀ` of a linear layer. Every weight is read once, so the speed is the memory
//! bandwidth: rows are split over the rayon pool (the gemm crate's matrix-vector path runs on
//! one thread), and each thread walks four rows at a time with 8-wide FMA (AVX2, detected at
//! run time) so the input is loaded once per four rows.

use rayon::prelude::*;

/// Below this many weights a product runs on the calling thread: waking the pool would cost
/// more than it saves.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 16;

/// Rows handled together by the kernels.
const ROW_BLOCK: usize = 4;

/// Computes `out = x · wᵀ (+ bias)` for `x` of length `k`, `w` of `out.len()` rows of `k`.
///
/// Splits the rows over the current rayon pool when the matrix is large enough.
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long (callers check).
pub(crate) fn gemv(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (k, n) = (x.len(), out.len());
    assert_eq!(w.len(), n * k, "gemv: weight is not (out, in)");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "gemv: bias length");
    }
    let threads = rayon::current_num_threads();
    if threads <= 1 || w.len() < PARALLEL_MIN_WEIGHTS || k == 0 {
        rows(x, w, bias, out);
        return;
    }
    // A few chunks per thread so a thread slowed by another process does not hold up the
    // rest; multiples of the row block keep the fast kernel busy.
    let per_chunk = n.div_ceil(threads * 4).next_multiple_of(ROW_BLOCK);
    out.par_chunks_mut(per_chunk)
        .zip(w.par_chunks(per_chunk * k))
        .enumerate()
        .for_each(|(c, (out, w))| {
            let bias = bias.map(|b| &b[c * per_chunk..c * per_chunk + out.len()]);
            rows(x, w, bias, out);
        });
}

/// The single-threaded product over a block of rows.
fn rows(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the kernel is compiled for.
            unsafe { avx2::rows(x, w, out) };
            add_bias(out, bias);
            return;
        }
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot_portable(x, row);
    }
    add_bias(out, bias);
}

fn add_bias(out: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (o, b) in out.iter_mut().zip(bias) {
            *o += b;
        }
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
    use candle_core::{Device, Tensor};

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, n: usize) -> Vec<f32> {
        let k = x.len();
        let xt = Tensor::from_slice(x, (1, k), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap();
        let mut y = xt.matmul(&wt.t().unwrap()).unwrap();
        if let Some(b) = bias {
            let bt = Tensor::from_slice(b, n, &Device::Cpu).unwrap();
            y = y.broadcast_add(&bt).unwrap();
        }
        y.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn check(k: usize, n: usize, with_bias: bool, threads: usize) {
        let x = values(k, 1 + k as u64);
        let w = values(n * k, 2 + n as u64);
        let bias = with_bias.then(|| values(n, 3));
        let expect = reference(&x, &w, bias.as_deref(), n);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut got = vec![f32::NAN; n];
        pool.install(|| gemv(&x, &w, bias.as_deref(), &mut got));
        let mut portable = vec![f32::NAN; n];
        for (o, row) in portable.iter_mut().zip(w.chunks_exact(k)) {
            *o = dot_portable(&x, row);
        }
        add_bias(&mut portable, bias.as_deref());
        for j in 0..n {
            // Summation order differs from gemm: allow a few ulps of the magnitude summed.
            let scale: f32 = x
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(a, b)| (a * b).abs())
                .sum::<f32>()
                + bias.as_ref().map_or(0.0, |b| b[j].abs());
            let tol = 4.0 * f32::EPSILON * scale.max(1.0) * (k as f32).sqrt();
            for (what, v) in [("gemv", got[j]), ("portable", portable[j])] {
                assert!(
                    (v - expect[j]).abs() <= tol,
                    "{what} k={k} n={n} threads={threads} row {j}: {v} vs {}",
                    expect[j]
                );
            }
        }
    }

    #[test]
    fn matches_candle_matmul_on_odd_sizes() {
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
                check(k, n, false, threads);
                check(k, n, true, threads);
            }
        }
    }

    #[test]
    fn matches_candle_matmul_when_split_over_threads() {
        // Large enough to take the parallel path, with rows not a multiple of the chunking.
        for threads in [1, 2, 3] {
            check(257, 1023, true, threads);
            check(896, 301, false, threads);
        }
    }
}
