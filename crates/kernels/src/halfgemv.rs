//! Matrix-vector products with bf16 or f16 weights and f32 activations (decode steps).
//!
//! `out[j] = dot(x, widen(w[j * k..(j + 1) * k])) (+ bias[j])`. Each weight is widened to f32
//! exactly (bf16: shift left by 16 bits; f16: `vcvtph2ps`) and multiplied and summed in f32,
//! so the result equals the f32 product on the upcast weights up to summation order. A decode
//! step is bound by memory bandwidth, so the widening is free and halving the bytes read
//! nearly doubles the speed. llama.cpp's bf16 dot (`ggml/src/ggml-cpu/vec.cpp`) uses
//! `vdpbf16ps` instead, which also rounds the activations to bf16; we keep them in f32.
//!
//! The instruction set is picked at run time ([`Cpu`]): AVX-512F (16 lanes), AVX2 + FMA +
//! F16C (8 lanes), or portable code.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu::{Cpu, Simd};

/// Below this many weights a product runs on the calling thread: waking the pool would cost
/// more than it saves.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 16;

/// Rows handled together by the SIMD kernels, so each activation load serves four rows.
pub(crate) const ROW_BLOCK: usize = 4;

/// The half-precision encoding of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfKind {
    /// bfloat16: the upper half of an f32.
    Bf16,
    /// IEEE half precision.
    F16,
}

fn widen(kind: HalfKind, bits: u16) -> f32 {
    match kind {
        HalfKind::Bf16 => bf16::from_bits(bits).to_f32(),
        HalfKind::F16 => f16::from_bits(bits).to_f32(),
    }
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
/// the features `cpu` allows (the tests run every level this CPU has).
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
    let simd = cpu.simd();
    split_rows(x.len(), w, bias, out, |w, out| rows(simd, kind, x, w, out));
}

/// Splits the rows of `out = f(w)` (`w` holding `k` elements per row) over the rayon pool
/// when the matrix is large enough, then adds `bias`.
///
/// # Panics
///
/// If `w.len() != out.len() * k` or `bias` is not `out.len()` long.
pub(crate) fn split_rows<T: Sync>(
    k: usize,
    w: &[T],
    bias: Option<&[f32]>,
    out: &mut [f32],
    f: impl Fn(&[T], &mut [f32]) + Sync,
) {
    let n = out.len();
    assert_eq!(w.len(), n * k, "gemv: weight is not (out, in)");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "gemv: bias length");
    }
    let threads = rayon::current_num_threads();
    if threads <= 1 || w.len() < PARALLEL_MIN_WEIGHTS || k == 0 {
        f(w, out);
    } else {
        // A few chunks per thread so a thread slowed by another process does not hold up the
        // rest; multiples of the row block keep the fast kernels busy.
        let per_chunk = n.div_ceil(threads * 4).next_multiple_of(ROW_BLOCK);
        out.par_chunks_mut(per_chunk)
            .zip(w.par_chunks(per_chunk * k))
            .for_each(|(out, w)| f(w, out));
    }
    if let Some(bias) = bias {
        for (o, b) in out.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// The single-threaded product over a block of rows; `simd` is a detected [`Cpu`]'s.
fn rows(simd: Simd, kind: HalfKind, x: &[f32], w: &[u16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `simd` comes from the caller's `Cpu`, which holds the features of the kernel
        // taken; `w.len() == out.len() * x.len()` was checked by `split_rows`.
        match (simd, kind) {
            (Simd::Avx512, HalfKind::Bf16) => return unsafe { bf16_pairs::rows_avx512(x, w, out) },
            (Simd::Avx512, HalfKind::F16) => return unsafe { avx512::rows_f16(x, w, out) },
            (Simd::Avx2, HalfKind::Bf16) => return unsafe { bf16_pairs::rows_avx2(x, w, out) },
            (Simd::Avx2, HalfKind::F16) => return unsafe { avx2::rows_f16(x, w, out) },
            (Simd::Portable, _) => {}
        }
    }
    let _ = simd;
    if x.is_empty() {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot_portable(kind, x, row);
    }
}

/// Eight independent partial sums, which the compiler vectorises on any target.
fn dot_portable(kind: HalfKind, x: &[f32], w: &[u16]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xc, wc) = (x.chunks_exact(8), w.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(a, &b)| a * widen(kind, b))
        .sum();
    for (xs, ws) in xc.zip(wc) {
        for ((a, x), &w) in acc.iter_mut().zip(xs).zip(ws) {
            *a += x * widen(kind, w);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The scalar tail of a row (the last `k % lanes` weights).
fn tail(kind: HalfKind, x: &[f32], w: &[u16]) -> f32 {
    x.iter().zip(w).map(|(a, &b)| a * widen(kind, b)).sum()
}

/// bf16 rows without a shuffle: a 32-bit lane holding weights `2t` (low half) and `2t + 1`
/// (high half) yields both as f32 by a shift left by 16 and by masking the low half, and they
/// multiply the activations split once into even and odd positions. Widening with
/// `vpmovzxwd` instead costs a shuffle per eight or sixteen weights, which a core with its
/// share of the memory bandwidth does not have time for.
#[cfg(target_arch = "x86_64")]
mod bf16_pairs {
    use std::arch::x86_64::*;

    use super::{avx2::hsum, tail, HalfKind};

    /// Vectors of weights per row in flight (each with an even and an odd sum).
    const UNROLL: usize = 4;

    /// `x[..len]` split into its even and odd positions.
    fn split(x: &[f32], len: usize) -> (Vec<f32>, Vec<f32>) {
        let pairs = x[..len].chunks_exact(2);
        pairs.map(|p| (p[0], p[1])).unzip()
    }

    /// Defines `$name(x, w, out)`: `out[j] = dot(x, widen(w[j * k..]))`, one row at a time (on
    /// an AVX-512 EPYC, 2 threads, this read 20 GB/s where four rows per pass read 15).
    macro_rules! pairs_kernel {
        ($name:ident, $row:ident, $features:literal, $lanes:literal, $zero:ident,
         $load_x:ident, $load_w:expr, $shift:ident, $and:ident, $mask:expr, $cast:ident,
         $fma:ident, $add:ident, $hsum:expr) => {
            /// # Safety
            ///
            /// The CPU must support the enabled features; `w.len() == out.len() * x.len()`.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(x: &[f32], w: &[u16], out: &mut [f32]) {
                let k = x.len();
                let kv = k - k % (2 * $lanes);
                let (xe, xo) = split(x, kv);
                for (o, row) in out.iter_mut().zip(w.chunks_exact(k.max(1))) {
                    // SAFETY: forwarded from the caller; `row` holds k weights.
                    *o =
                        unsafe { $row(&xe, &xo, row) } + tail(HalfKind::Bf16, &x[kv..], &row[kv..]);
                }
                if k == 0 {
                    out.fill(0.0);
                }
            }

            /// The dot of the first `2 * xe.len()` weights of `row` with the split activations.
            ///
            /// # Safety
            ///
            /// As for the public kernel; `row` holds at least `2 * xe.len()` weights.
            #[target_feature(enable = $features)]
            unsafe fn $row(xe: &[f32], xo: &[f32], row: &[u16]) -> f32 {
                let kv = 2 * xe.len();
                let mask = $mask;
                // UNROLL independent pairs of sums, so the FMA latency does not bound the speed.
                let mut acc = [$zero(); 2 * UNROLL];
                let mut i = 0;
                while i < kv {
                    let step = if i + 2 * UNROLL * $lanes <= kv {
                        UNROLL
                    } else {
                        1
                    };
                    for u in 0..step {
                        let at = i + 2 * $lanes * u;
                        // SAFETY: at + 2 * lanes <= kv <= row.len(), and
                        // at / 2 + lanes <= xe.len().
                        unsafe {
                            let v = $load_w(row.as_ptr().add(at));
                            let xev = $load_x(xe.as_ptr().add(at / 2));
                            let xov = $load_x(xo.as_ptr().add(at / 2));
                            acc[2 * u] = $fma($cast($shift::<16>(v)), xev, acc[2 * u]);
                            acc[2 * u + 1] = $fma($cast($and(v, mask)), xov, acc[2 * u + 1]);
                        }
                    }
                    i += 2 * $lanes * step;
                }
                let even = $add($add(acc[0], acc[2]), $add(acc[4], acc[6]));
                let odd = $add($add(acc[1], acc[3]), $add(acc[5], acc[7]));
                $hsum(even) + $hsum(odd)
            }
        };
    }

    pairs_kernel!(
        rows_avx512,
        row_avx512,
        "avx512f,avx2,fma,f16c",
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        |p: *const u16| _mm512_loadu_si512(p.cast()),
        _mm512_slli_epi32,
        _mm512_and_si512,
        _mm512_set1_epi32(0xFFFF_0000_u32 as i32),
        _mm512_castsi512_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_reduce_add_ps
    );

    pairs_kernel!(
        rows_avx2,
        row_avx2,
        "avx2,fma,f16c",
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        |p: *const u16| _mm256_loadu_si256(p.cast()),
        _mm256_slli_epi32,
        _mm256_and_si256,
        _mm256_set1_epi32(0xFFFF_0000_u32 as i32),
        _mm256_castsi256_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        hsum
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{tail, HalfKind, ROW_BLOCK};

    /// Horizontal sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Eight f16 weights at `p` widened to f32.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reading 8 `u16`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }

    /// `out[j] = dot(x, widen(w[j * k..]))` for every row of f16 `w`, four rows per pass.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `w.len() == out.len() * x.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_f16(x: &[f32], w: &[u16], out: &mut [f32]) {
        let kind = HalfKind::F16;
        let k = x.len();
        let k8 = k - k % 8;
        let xp = x.as_ptr();
        let mut r = 0;
        let mut blocks = out.chunks_exact_mut(ROW_BLOCK);
        for block in &mut blocks {
            let mut acc = [_mm256_setzero_ps(); ROW_BLOCK];
            let mut i = 0;
            while i < k8 {
                // SAFETY: i + 8 <= k8 <= k and rows r..r + 4 lie inside `w`.
                unsafe {
                    let xv = _mm256_loadu_ps(xp.add(i));
                    for (j, a) in acc.iter_mut().enumerate() {
                        let wv = load8(w.as_ptr().add((r + j) * k + i));
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                }
                i += 8;
            }
            for (j, o) in block.iter_mut().enumerate() {
                let row = &w[(r + j) * k..(r + j + 1) * k];
                *o = hsum(acc[j]) + tail(kind, &x[k8..], &row[k8..]);
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
                    let wv = load8(row.as_ptr().add(i));
                    acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i)), acc);
                }
                i += 8;
            }
            *o = hsum(acc) + tail(kind, &x[k8..], &row[k8..]);
            r += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{tail, HalfKind, ROW_BLOCK};

    /// Sixteen f16 weights at `p` widened to f32.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reading 16 `u16`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn load16(p: *const u16) -> __m512 {
        // SAFETY: the caller guarantees 32 readable bytes.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
    }

    /// `out[j] = dot(x, widen(w[j * k..]))` for every row of f16 `w`, four rows per pass.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F, AVX2, FMA and F16C; `w.len() == out.len() * x.len()`.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn rows_f16(x: &[f32], w: &[u16], out: &mut [f32]) {
        let kind = HalfKind::F16;
        let k = x.len();
        let k16 = k - k % 16;
        let xp = x.as_ptr();
        let mut r = 0;
        let mut blocks = out.chunks_exact_mut(ROW_BLOCK);
        for block in &mut blocks {
            let mut acc = [_mm512_setzero_ps(); ROW_BLOCK];
            let mut i = 0;
            while i < k16 {
                // SAFETY: i + 16 <= k16 <= k and rows r..r + 4 lie inside `w`.
                unsafe {
                    let xv = _mm512_loadu_ps(xp.add(i));
                    for (j, a) in acc.iter_mut().enumerate() {
                        let wv = load16(w.as_ptr().add((r + j) * k + i));
                        *a = _mm512_fmadd_ps(wv, xv, *a);
                    }
                }
                i += 16;
            }
            for (j, o) in block.iter_mut().enumerate() {
                let row = &w[(r + j) * k..(r + j + 1) * k];
                *o = _mm512_reduce_add_ps(acc[j]) + tail(kind, &x[k16..], &row[k16..]);
            }
            r += ROW_BLOCK;
        }
        for o in blocks.into_remainder() {
            let row = &w[r * k..(r + 1) * k];
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i < k16 {
                // SAFETY: i + 16 <= k16 <= k, the length of both slices.
                unsafe {
                    let wv = load16(row.as_ptr().add(i));
                    acc = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xp.add(i)), acc);
                }
                i += 16;
            }
            *o = _mm512_reduce_add_ps(acc) + tail(kind, &x[k16..], &row[k16..]);
            r += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::levels;
    use crate::test_values::{assert_f32_sum_close, f64_product, values};

    fn to_bits(kind: HalfKind, w: &[f32]) -> Vec<u16> {
        w.iter()
            .map(|&v| match kind {
                HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
                HalfKind::F16 => f16::from_f32(v).to_bits(),
            })
            .collect()
    }

    fn check(cpu: Cpu, kind: HalfKind, k: usize, n: usize, threads: usize) {
        let x = values(k, 1 + k as u64);
        let w = to_bits(kind, &values(n * k, 2 + n as u64));
        let bias = (n % 2 == 1).then(|| values(n, 3));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut got = vec![f32::NAN; n];
        pool.install(|| gemv_half_at(cpu, kind, &x, &w, bias.as_deref(), &mut got));
        // The product in f64 on the widened weights.
        let widened: Vec<f32> = w.iter().map(|&b| widen(kind, b)).collect();
        let want = f64_product(&x, &widened, bias.as_deref());
        let what = format!("{cpu:?} {kind:?} k={k} n={n} threads={threads}");
        assert_f32_sum_close(&got, &want, k, &what);
    }

    #[test]
    fn every_level_matches_the_f64_reference_on_odd_sizes() {
        let sizes = [
            (1, 1),
            (7, 3),
            (8, 4),
            (15, 5),
            (16, 9),
            (17, 4),
            (33, 17),
            (100, 7),
        ];
        for cpu in levels() {
            for kind in [HalfKind::Bf16, HalfKind::F16] {
                for &(k, n) in &sizes {
                    check(cpu, kind, k, n, 1);
                }
            }
        }
    }

    #[test]
    fn every_level_matches_when_split_over_threads() {
        for cpu in levels() {
            for kind in [HalfKind::Bf16, HalfKind::F16] {
                for threads in [1, 2, 3] {
                    check(cpu, kind, 257, 1023, threads);
                    check(cpu, kind, 896, 301, threads);
                }
            }
        }
    }
}
