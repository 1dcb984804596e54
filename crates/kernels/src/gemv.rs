//! Bandwidth-bound products of a few f32 activation rows with f32 (or, through
//! [`crate::halfgemv`], bf16/f16) weights: the decode steps.
//!
//! `out[r][j] = dot(x[r], w[j * k..(j + 1) * k]) (+ bias[j])` with `w` row-major `(n, k)`, as
//! in `x · wᵀ` of a linear layer, for `batch` rows `x` (one row: [`gemv`]; a stack of decode
//! rows: [`gemv_batch`]). The weight rows are split over the rayon pool ([`crate::batch`]).
//! With AVX2 (when the [`Cpu`] has it) one activation row walks one weight row at a time, and
//! several walk pairs of weight rows against pairs of activation rows, so each weight vector
//! is loaded once per pair of activation rows and each activation vector once per two weight
//! rows (the walk is described at the kernel).
//!
//! Every element is two 8-lane FMA chains over the first `k - k % 16` positions, sixteen at a
//! time in order (for bf16 weights one chain takes the even positions and the other the odd
//! ones, for f32 and f16 the first and last eight), the horizontal sum of their sum, then the
//! last `k % 16` products added one at a time; the portable code keeps eight partial sums
//! instead. How the walk reaches an element changes nothing, so a row of a batch is bitwise
//! that row alone.

use half::{bf16, f16};

use crate::batch::split_rows;
use crate::cpu::{Cpu, Feature};

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::hsum;

/// A weight element the float kernels widen exactly to f32: f32 itself, bf16 or f16.
pub(crate) trait Widen: Copy + Sync {
    /// Whether [`Widen::load16`] gives the even positions of sixteen weights in its first
    /// vector and the odd ones in its second (bf16, which needs no shuffle that way); else
    /// positions 0-7 and 8-15.
    const PAIRED: bool;

    /// The value as f32 (exact).
    fn widen(self) -> f32;

    /// Sixteen elements at `p` widened to f32, as two vectors in the order [`Widen::PAIRED`]
    /// says.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reading 16 elements; the caller must run with AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256);
}

impl Widen for f32 {
    const PAIRED: bool = false;

    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable floats and AVX.
        unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
}

impl Widen for bf16 {
    const PAIRED: bool = true;

    fn widen(self) -> f32 {
        self.to_f32()
    }

    /// bf16 is the upper half of an f32: in each 32-bit lane of the 32 bytes read, shifting
    /// left by 16 gives the even weight and clearing the low half the odd one (llama.cpp and
    /// the earlier kernel here did the same; widening with `vpmovzxwd` costs a shuffle per
    /// eight weights instead).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 32 readable bytes and AVX2.
        unsafe {
            let v = _mm256_loadu_si256(p.cast());
            let even = _mm256_slli_epi32::<16>(v);
            let odd = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF_0000_u32 as i32));
            (_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd))
        }
    }
}

impl Widen for f16 {
    const PAIRED: bool = false;

    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 32 readable bytes and F16C.
        unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast())),
            )
        }
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
    #[cfg(target_arch = "x86_64")]
    if cpu.has(Feature::Avx2) && k > 0 {
        split_rows(batch, k, w, bias, out, |w, t| {
            // Each task arranges its own copy, which stays in its core's caches.
            let xa = x86::Arranged::new::<T>(xs, k);
            let xa = xa.as_slice();
            // SAFETY: the `Cpu` holds AVX2, FMA and F16C (a `Cpu` only holds what was
            // detected); `split_rows` gives whole weight rows and their `t`, k > 0, and `xa`
            // is `xs` arranged for `T`.
            unsafe { x86::rows(xa, k, w, t) }
        });
        return;
    }
    split_rows(batch, k, w, bias, out, |w, t| rows_portable(xs, k, w, t));
}

/// The single-threaded products of every row of `xs` with the weight rows `w`, written
/// transposed into `t` (see [`split_rows`]), by portable code. `k > 0`.
fn rows_portable<T: Widen>(xs: &[f32], k: usize, w: &[T], t: &mut [f32]) {
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

    /// Weights per step of an element's sum: two 8-lane vectors.
    const STEP: usize = 16;

    /// Activation rows walked against one weight row at a time, at most: two accumulators
    /// each, twelve of the sixteen vector registers.
    const GROUP: usize = 6;

    /// `xs` (rows of `k`) copied to memory aligned to 32 bytes (so that no activation vector
    /// straddles two cache lines when `k` is a multiple of 8), with each whole block of
    /// sixteen positions in the lane order of [`Widen::load16`]: for bf16 the even positions
    /// then the odd ones; the rest as is.
    pub(super) struct Arranged(Vec<Lanes>, usize);

    /// Eight floats aligned as a vector.
    #[derive(Clone, Copy)]
    #[repr(C, align(32))]
    struct Lanes([f32; 8]);

    impl Arranged {
        /// `xs`, rows of `k > 0`, arranged for weights of type `T`.
        pub(super) fn new<T: Widen>(xs: &[f32], k: usize) -> Self {
            let k16 = k - k % STEP;
            let mut this = Arranged(vec![Lanes([0.0; 8]); xs.len().div_ceil(8)], xs.len());
            let out = this.as_mut();
            out.copy_from_slice(xs);
            if T::PAIRED {
                for (o, x) in out.chunks_exact_mut(k).zip(xs.chunks_exact(k)) {
                    for (o, x) in o[..k16].chunks_exact_mut(STEP).zip(x.chunks_exact(STEP)) {
                        for (i, pair) in x.chunks_exact(2).enumerate() {
                            o[i] = pair[0];
                            o[i + STEP / 2] = pair[1];
                        }
                    }
                }
            }
            this
        }

        fn as_mut(&mut self) -> &mut [f32] {
            // SAFETY: the vectors hold at least `self.1` floats, any bits are a valid f32.
            unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.1) }
        }

        /// The arranged rows.
        pub(super) fn as_slice(&self) -> &[f32] {
            // SAFETY: as in `as_mut`.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.1) }
        }
    }

    /// Horizontal sum of the eight lanes: the halves, then pairs, then the last two (the
    /// order every decode kernel's elements end with).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Every row of `xa` times every weight row of `w`, into `t[j * batch + r]`.
    ///
    /// One activation row walks one weight row at a time (in spans of [`SPAN`] positions), so
    /// a thread reads its weights nearly as one sequential stream, which the memory bandwidth
    /// rewards most; several walk pairs of weight rows against pairs of activation rows held
    /// in registers (six vector loads per eight FMAs instead of nine). Both prefetch the
    /// weights two rows or pairs ahead. Whatever the walk, each element is the same two chains
    /// in the same order. (A batch walking the positions in panels that keep its activations
    /// in the L1 cache, the chains stored between panels, was slower: on a 2-core Zen 3 a
    /// batch of 8 ran 26 % fewer FLOP/s than over whole rows.)
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `k > 0`, `xa.len()` and `w.len()` are
    /// multiples of `k`, `xa` is arranged for `T` ([`Arranged`]) and
    /// `t.len() == (xa.len() / k) * (w.len() / k)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows<T: Widen>(xa: &[f32], k: usize, w: &[T], t: &mut [f32]) {
        let batch = xa.len() / k;
        let k16 = k - k % STEP;
        let step = if batch == 1 { 1 } else { 2 };
        // One activation row walks a block's rows in spans of positions (the down projection
        // of a Qwen2-0.5B-shaped decoder, rows of 4864, in two), prefetching the row after
        // the next at the same positions: together 5-10 % more tokens per second end to
        // end than whole rows without the prefetch, while either alone was no faster (2-core
        // Zen 3, pairwise medians). The chains are carried from one span to the next, which
        // changes no bit.
        let span = if batch == 1 { SPAN } else { k16 };
        let mut sums = vec![[_mm256_setzero_ps(); 2]; BLOCK * batch];
        // Blocks of rows walked before their sums are finished: one activation row ran 3 %
        // slower when each row was finished as soon as it was walked.
        for (b, (block, t)) in w
            .chunks(BLOCK * k)
            .zip(t.chunks_mut(BLOCK * batch))
            .enumerate()
        {
            let sums = &mut sums[..t.len()];
            sums.fill([_mm256_setzero_ps(); 2]);
            let mut from = 0;
            while from < k16 {
                let to = (from + span).min(k16);
                let x = &xa[from..];
                for (j, (wr, sums)) in block
                    .chunks(step * k)
                    .zip(sums.chunks_mut(step * batch))
                    .enumerate()
                {
                    // The row or pair after the next within this task's rows (a batch of 8
                    // ran about 10 % faster than with the next pair).
                    let later = (b * BLOCK + (j + 2) * step) * k + from;
                    let ahead = (later < w.len()).then(|| w[later..].as_ptr());
                    // SAFETY: forwarded; `wr` holds one or two rows of k weights, `sums`
                    // `batch` pairs of chains for each, and `x` the activation rows from
                    // position `from` on (row c at c * k), to <= k.
                    unsafe {
                        if wr.len() == 2 * k {
                            let (s0, s1) = sums.split_at_mut(batch);
                            let w2 = [&wr[from..to], &wr[k + from..k + to]];
                            pairs(x, k, w2, [s0, s1], ahead);
                        } else {
                            groups(x, k, &wr[from..to], sums, ahead);
                        }
                    }
                }
                from = to;
            }
            finish(xa, k, block, sums, t);
        }
    }

    /// Positions one activation row walks at a time (see [`rows`]).
    const SPAN: usize = 4096;

    /// Weight rows walked before their sums are finished (even, so that pairs of rows stay
    /// within a block).
    const BLOCK: usize = 8;

    /// Writes `t[j * batch + r]`: the horizontal sum of the two chains `sums` of weight row
    /// `j` of `block` with activation row `r`, then the last `k % 16` products one at a time.
    #[target_feature(enable = "avx2,fma")]
    fn finish<T: Widen>(xa: &[f32], k: usize, block: &[T], sums: &[[__m256; 2]], t: &mut [f32]) {
        let (k16, batch) = (k - k % STEP, xa.len() / k);
        for ((row, sums), t) in block
            .chunks_exact(k)
            .zip(sums.chunks_exact(batch))
            .zip(t.chunks_exact_mut(batch))
        {
            for ((x, &[lo, hi]), t) in xa.chunks_exact(k).zip(sums).zip(t) {
                let mut s = hsum(_mm256_add_ps(lo, hi));
                for (xv, wv) in x[k16..].iter().zip(&row[k16..]) {
                    s += xv * wv.widen();
                }
                *t = s;
            }
        }
    }

    /// Carries the chains `sums[r]` of one weight row over the positions `w` holds, with
    /// activation row `r` of `xa` (rows `k` apart, each from the same position as `w`), in
    /// groups of nearly equal size (8 rows are 4 + 4).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `w.len()` is a multiple of [`STEP`] and at
    /// most `k`; `xa` holds `(sums.len() - 1) * k + w.len()` values at least.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn groups<T: Widen>(
        xa: &[f32],
        k: usize,
        w: &[T],
        sums: &mut [[__m256; 2]],
        ahead: Option<*const T>,
    ) {
        let batch = sums.len();
        let count = batch.div_ceil(GROUP);
        let mut r = 0;
        for g in 0..count {
            let size = (batch - r) / (count - g);
            let x = &xa[r * k..];
            let s = &mut sums[r..r + size];
            // The later groups find the weights in the L1 cache.
            let p = if g == 0 { ahead } else { None };
            // SAFETY: `x` holds (size - 1) * k + w.len() values at least, as `xa` holds
            // (batch - 1) * k + w.len() and r + size <= batch; `s` holds `size` pairs.
            unsafe {
                match size {
                    1 => tile::<T, 1>(x, k, w, s, p),
                    2 => tile::<T, 2>(x, k, w, s, p),
                    3 => tile::<T, 3>(x, k, w, s, p),
                    4 => tile::<T, 4>(x, k, w, s, p),
                    5 => tile::<T, 5>(x, k, w, s, p),
                    _ => tile::<T, GROUP>(x, k, w, s, p),
                }
            }
            r += size;
        }
    }

    /// Carries the two 8-lane FMA chains `sums[c]` of one weight row `w` with the activation
    /// row `c` of `x` (rows `k` apart, arranged) over `w.len()` positions, sixteen at a time
    /// in order; with `ahead`, prefetching the weights at the same offsets from there.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `w.len()` is a multiple of [`STEP`], `x`
    /// holds `(G - 1) * k + w.len()` values, `sums` `G` pairs.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<T: Widen, const G: usize>(
        x: &[f32],
        k: usize,
        w: &[T],
        sums: &mut [[__m256; 2]],
        ahead: Option<*const T>,
    ) {
        debug_assert!(x.len() >= (G - 1) * k + w.len() && sums.len() == G);
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let mut acc: [[__m256; 2]; G] = std::array::from_fn(|c| sums[c]);
        let mut i = 0;
        while i < w.len() {
            if let Some(p) = ahead {
                // A prefetch reads nothing and cannot fault, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i).cast());
            }
            // SAFETY: i + 16 <= w.len(); the features are enabled here.
            let (wl, wh) = unsafe { T::load16(wp.add(i)) };
            for (c, acc) in acc.iter_mut().enumerate() {
                // SAFETY: c * k + i + 16 <= (G - 1) * k + w.len() <= x.len().
                unsafe {
                    acc[0] = _mm256_fmadd_ps(wl, _mm256_loadu_ps(xp.add(c * k + i)), acc[0]);
                    acc[1] = _mm256_fmadd_ps(wh, _mm256_loadu_ps(xp.add(c * k + i + 8)), acc[1]);
                }
            }
            i += STEP;
        }
        sums.copy_from_slice(&acc);
    }

    /// Carries the chains `sums[0]` and `sums[1]` of two weight rows `w` over the positions
    /// they hold, with every activation row of `xa` as in [`groups`], two activation rows at
    /// a time.
    ///
    /// # Safety
    ///
    /// As [`groups`], for both rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pairs<T: Widen>(
        xa: &[f32],
        k: usize,
        w: [&[T]; 2],
        sums: [&mut [[__m256; 2]]; 2],
        ahead: Option<*const T>,
    ) {
        let [s0, s1] = sums;
        let mut r = 0;
        while r < s0.len() {
            let size = (s0.len() - r).min(2);
            let x = &xa[r * k..];
            let s = [&mut s0[r..r + size], &mut s1[r..r + size]];
            let p = if r == 0 { ahead } else { None };
            // SAFETY: as in `groups`.
            unsafe {
                match size {
                    1 => tile2::<T, 1>(x, k, w, s, p),
                    _ => tile2::<T, 2>(x, k, w, s, p),
                }
            }
            r += size;
        }
    }

    /// [`tile`] for two weight rows `w` at once, each of the `G` activation vectors loaded
    /// once for both; `ahead` prefetches a later pair of rows (`k` apart).
    ///
    /// # Safety
    ///
    /// As [`tile`], for both rows (`w[0].len() == w[1].len()`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile2<T: Widen, const G: usize>(
        x: &[f32],
        k: usize,
        w: [&[T]; 2],
        sums: [&mut [[__m256; 2]]; 2],
        ahead: Option<*const T>,
    ) {
        debug_assert!(x.len() >= (G - 1) * k + w[0].len() && w[0].len() == w[1].len());
        let xp = x.as_ptr();
        let [s0, s1] = sums;
        let mut a0: [[__m256; 2]; G] = std::array::from_fn(|c| s0[c]);
        let mut a1: [[__m256; 2]; G] = std::array::from_fn(|c| s1[c]);
        let mut i = 0;
        while i < w[0].len() {
            if let Some(p) = ahead {
                // A prefetch reads nothing and cannot fault, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i).cast());
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + k).cast());
            }
            // SAFETY: c * k + i + 16 <= (G - 1) * k + w.len() <= x.len().
            let xv: [[__m256; 2]; G] = std::array::from_fn(|c| unsafe {
                [
                    _mm256_loadu_ps(xp.add(c * k + i)),
                    _mm256_loadu_ps(xp.add(c * k + i + 8)),
                ]
            });
            for (w, acc) in w.iter().zip([&mut a0, &mut a1]) {
                // SAFETY: i + 16 <= w.len(); the features are enabled here.
                let (wl, wh) = unsafe { T::load16(w.as_ptr().add(i)) };
                for (acc, xv) in acc.iter_mut().zip(&xv) {
                    acc[0] = _mm256_fmadd_ps(wl, xv[0], acc[0]);
                    acc[1] = _mm256_fmadd_ps(wh, xv[1], acc[1]);
                }
            }
            i += STEP;
        }
        s0.copy_from_slice(&a0);
        s1.copy_from_slice(&a1);
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
            // Long rows with a tail, odd batches and an odd weight row left over by the pairs.
            check(cpu, 1001, 37, 9, false);
            check(cpu, 2000, 19, 5, true);
            // One row walks rows longer than a span in several spans, a batch whole rows.
            check(cpu, 5000, 9, 3, true);
        }
    }
}
