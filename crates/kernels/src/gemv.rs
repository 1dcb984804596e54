//! Bandwidth-bound products of a few f32 activation rows with f32 (or, through
//! [`crate::halfgemv`], bf16/f16) weights: the decode steps.
//!
//! `out[r][j] = dot(x[r], w[j * k..(j + 1) * k]) (+ bias[j])` with `w` row-major `(n, k)`, as
//! in `x · wᵀ` of a linear layer, for `batch` rows `x` (one row: [`gemv`]; a stack of decode
//! rows: [`gemv_batch`]). The weight rows are split over the rayon pool ([`crate::batch`]), and
//! each thread walks a tile of up to four weight rows against up to four activation rows with
//! 8-wide FMA (AVX2, when the [`Cpu`] has it), so each weight vector is loaded once per tile
//! and each activation vector once per few weight rows.
//!
//! Every element is `hsum(Σ_lanes w·x)` over the first `k - k % 8` positions (one 8-lane FMA
//! chain, in order), then the last `k % 8` products added one at a time; the portable code
//! keeps eight partial sums instead. Which tile an element falls in changes nothing, so a row
//! of a batch is bitwise that row alone.

use half::{bf16, f16};

use crate::batch::split_rows;
use crate::cpu::{Cpu, Feature};

/// A weight element the float kernels widen exactly to f32: f32 itself, bf16 or f16.
pub(crate) trait Widen: Copy + Sync {
    /// The value as f32 (exact).
    fn widen(self) -> f32;

    /// Eight elements at `p` widened to f32.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reading 8 elements; the caller must run with AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Widen for f32 {
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable floats and AVX.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl Widen for bf16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }

    /// bf16 is the upper half of an f32: zero-extend to 32 bits and shift left by 16.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable bytes and AVX2.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }
}

impl Widen for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable bytes and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// Computes `out = x · wᵀ (+ bias)` for `x` of length `k`, `w` of `out.len()` rows of `k`,
/// with the features of this CPU; see [`gemv_at`].
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long.
pub fn gemv(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    gemv_at(Cpu::detected(), x, w, bias, out);
}

/// [`gemv`] with the features `cpu` allows (the tests run every level this CPU has): the
/// one-row case of [`gemv_batch_at`].
///
/// # Panics
///
/// If `w.len() != out.len() * x.len()` or `bias` is not `out.len()` long.
pub fn gemv_at(cpu: Cpu, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    float_batch(cpu, x, 1, w, bias, out);
}

/// Computes `out[r] = xs[r] · wᵀ (+ bias)` for `batch` rows `xs` of `k` values (row-major)
/// and `w` of `n` rows of `k`, into `out` of `batch` rows of `n`, with the features of this
/// CPU; see [`gemv_batch_at`].
///
/// # Panics
///
/// As [`gemv_batch_at`].
pub fn gemv_batch(xs: &[f32], batch: usize, w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    gemv_batch_at(Cpu::detected(), xs, batch, w, bias, out);
}

/// [`gemv_batch`] with the features `cpu` allows. Each row of `out` is bitwise what
/// [`gemv_at`] gives for that row of `xs` alone, whatever the other rows and the pool.
///
/// # Panics
///
/// If `batch == 0`, `xs` or `out` is not `batch` rows, `w.len() != n * k` or `bias` is not
/// `n` long.
pub fn gemv_batch_at(
    cpu: Cpu,
    xs: &[f32],
    batch: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    float_batch(cpu, xs, batch, w, bias, out);
}

/// The product of `batch` f32 rows with weights of any [`Widen`] type (see the module docs).
pub(crate) fn float_batch<T: Widen>(
    cpu: Cpu,
    xs: &[f32],
    batch: usize,
    w: &[T],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(
        batch > 0 && xs.len().is_multiple_of(batch),
        "gemv: {} inputs are not {batch} rows",
        xs.len()
    );
    let k = xs.len() / batch;
    let avx2 = cpu.has(Feature::Avx2);
    split_rows(batch, k, w, bias, out, |w, t| rows(avx2, xs, k, w, t));
}

/// The single-threaded products of every row of `xs` with the weight rows `w`, written
/// transposed into `t` (see [`split_rows`]); `avx2` says a detected [`Cpu`] holds
/// [`Feature::Avx2`]. `k > 0`.
fn rows<T: Widen>(avx2: bool, xs: &[f32], k: usize, w: &[T], t: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only set when the caller's `Cpu` holds AVX2, FMA and F16C;
        // `split_rows` gives whole weight rows and their `t`.
        unsafe { x86::rows(xs, k, w, t) };
        return;
    }
    let _ = avx2;
    let batch = xs.len() / k;
    for (col, row) in t.chunks_exact_mut(batch).zip(w.chunks_exact(k)) {
        for (o, x) in col.iter_mut().zip(xs.chunks_exact(k)) {
            *o = dot_portable(x, row);
        }
    }
}

/// Eight independent partial sums, which the compiler vectorises on any target.
fn dot_portable<T: Widen>(x: &[f32], w: &[T]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xc, wc) = (x.chunks_exact(8), w.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(a, b)| a * b.widen())
        .sum();
    for (xs, ws) in xc.zip(wc) {
        for ((a, x), w) in acc.iter_mut().zip(xs).zip(ws) {
            *a += x * w.widen();
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Widen;

    /// Horizontal sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Every row of `xs` times every weight row of `w`, into `t[j * batch + r]`: blocks of
    /// four weight rows against groups of up to four activation rows.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `k > 0`, `xs.len()` and `w.len()` are
    /// multiples of `k` and `t.len() == (xs.len() / k) * (w.len() / k)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows<T: Widen>(xs: &[f32], k: usize, w: &[T], t: &mut [f32]) {
        let (batch, n) = (xs.len() / k, w.len() / k);
        let mut j = 0;
        while j < n {
            let block = if n - j >= 4 { 4 } else { 1 };
            let mut r = 0;
            while r < batch {
                let group = (batch - r).min(4);
                let x = &xs[r * k..(r + group) * k];
                let at = j * batch + r;
                let wb = &w[j * k..(j + block) * k];
                // SAFETY: `x` holds `group` rows and `wb` `block` rows of k; the tile writes
                // t[at + jj * batch + c] for jj < block, c < group, inside `t` since
                // j + block <= n and r + group <= batch.
                unsafe {
                    match (block, group) {
                        (4, 1) => tile::<T, 4, 1>(x, k, wb, t, at, batch),
                        (4, 2) => tile::<T, 4, 2>(x, k, wb, t, at, batch),
                        (4, 3) => {
                            tile::<T, 2, 3>(x, k, &wb[..2 * k], t, at, batch);
                            tile::<T, 2, 3>(x, k, &wb[2 * k..], t, at + 2 * batch, batch);
                        }
                        (4, _) => {
                            tile::<T, 2, 4>(x, k, &wb[..2 * k], t, at, batch);
                            tile::<T, 2, 4>(x, k, &wb[2 * k..], t, at + 2 * batch, batch);
                        }
                        (_, 1) => tile::<T, 1, 1>(x, k, wb, t, at, batch),
                        (_, 2) => tile::<T, 1, 2>(x, k, wb, t, at, batch),
                        (_, 3) => tile::<T, 1, 3>(x, k, wb, t, at, batch),
                        _ => tile::<T, 1, 4>(x, k, wb, t, at, batch),
                    }
                }
                r += group;
            }
            j += block;
        }
    }

    /// `RW` weight rows `w` times `RX` activation rows `x`, into `t[at + jj * batch + c]`:
    /// one 8-lane FMA chain per element, its horizontal sum, then the tail one product at a
    /// time.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `x` holds `RX` rows of `k`, `w` `RW` rows of
    /// `k`, and `t` the indices written.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<T: Widen, const RW: usize, const RX: usize>(
        x: &[f32],
        k: usize,
        w: &[T],
        t: &mut [f32],
        at: usize,
        batch: usize,
    ) {
        debug_assert!(x.len() == RX * k && w.len() == RW * k);
        let k8 = k - k % 8;
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); RX]; RW];
        let mut i = 0;
        while i < k8 {
            let mut xv = [_mm256_setzero_ps(); RX];
            for (c, v) in xv.iter_mut().enumerate() {
                // SAFETY: c * k + i + 8 <= c * k + k8 <= x.len().
                *v = unsafe { _mm256_loadu_ps(xp.add(c * k + i)) };
            }
            for (jj, acc) in acc.iter_mut().enumerate() {
                // SAFETY: jj * k + i + 8 <= w.len(); the features are enabled here.
                let wv = unsafe { T::load8(wp.add(jj * k + i)) };
                for (a, &v) in acc.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(wv, v, *a);
                }
            }
            i += 8;
        }
        for (jj, acc) in acc.iter().enumerate() {
            let row = &w[jj * k..(jj + 1) * k];
            for (c, &a) in acc.iter().enumerate() {
                let xr = &x[c * k..(c + 1) * k];
                let mut s = hsum(a);
                for (xv, wv) in xr[k8..].iter().zip(&row[k8..]) {
                    s += xv * wv.widen();
                }
                t[at + jj * batch + c] = s;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu::tests::levels;
    use crate::test_values::{assert_f32_sum_close, f64_product, on_threads, values};

    /// Checks a batched product `run(batch, xs, out)` of `batch` rows of `k` against `want`
    /// (each row's `(n)` reference) and each of its rows bitwise against the product of
    /// that row alone, on 1 to 3 threads.
    pub(crate) fn check_batch<X: Sync>(
        what: &str,
        rows: &[X],
        n: usize,
        run: impl Fn(&[X], &mut [f32]) + Sync,
        close: impl Fn(usize, &[f32]),
    ) {
        let batch = rows.len();
        let alone: Vec<Vec<f32>> = rows
            .iter()
            .map(|x| {
                let mut out = vec![f32::NAN; n];
                run(std::slice::from_ref(x), &mut out);
                out
            })
            .collect();
        for (r, row) in alone.iter().enumerate() {
            close(r, row);
        }
        for threads in [1, 2, 3] {
            let mut got = vec![f32::NAN; batch * n];
            on_threads(threads, || run(rows, &mut got));
            for (r, (g, a)) in got.chunks_exact(n.max(1)).zip(&alone).enumerate() {
                let same = g.iter().zip(a).all(|(g, a)| g.to_bits() == a.to_bits());
                assert!(
                    same,
                    "{what} batch={batch} threads={threads} row {r} differs"
                );
            }
        }
    }

    fn check(cpu: Cpu, k: usize, n: usize, batch: usize, with_bias: bool) {
        let xs: Vec<Vec<f32>> = (0..batch)
            .map(|r| values(k, 1 + (k + 7 * r) as u64))
            .collect();
        let w = values(n * k, 2 + n as u64);
        let bias = with_bias.then(|| values(n, 3));
        let what = format!("{cpu:?} k={k} n={n}");
        check_batch(
            &what,
            &xs,
            n,
            |rows, out| {
                let flat: Vec<f32> = rows.concat();
                gemv_batch_at(cpu, &flat, rows.len(), &w, bias.as_deref(), out);
            },
            |r, got| {
                let want = f64_product(&xs[r], &w, bias.as_deref());
                assert_f32_sum_close(got, &want, k, &what);
            },
        );
    }

    #[test]
    fn every_level_matches_the_f64_reference_on_odd_sizes() {
        for cpu in levels() {
            for &(k, n) in &[(1, 1), (7, 3), (8, 4), (9, 5), (33, 17), (64, 13)] {
                for batch in 1..=9 {
                    check(cpu, k, n, batch, batch % 2 == 0);
                }
            }
        }
    }

    #[test]
    fn every_level_matches_when_split_over_threads() {
        // Large enough to take the parallel path, with rows not a multiple of the chunking.
        for cpu in levels() {
            for batch in [1, 3, 8] {
                check(cpu, 257, 1023, batch, true);
                check(cpu, 896, 301, batch, false);
            }
        }
    }
}
