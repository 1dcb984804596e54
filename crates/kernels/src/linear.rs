//! `y = act(x W^T + b)` for f32 rows and a weight stored `(out, in)` as checkpoints store it,
//! in f32, bf16 or f16 ([`Weight`]).
//!
//! candle's `Linear` computes the product into one fresh tensor, adds the bias into a second and
//! applies an activation into a third: two extra passes over the output and two extra buffers.
//! Here the output buffer starts as the bias rows and the product is accumulated onto it by
//! `gemm` (`dst = dst + x W^T`), and the activation runs in place.
//!
//! Half-precision weights are widened to f32 exactly (bf16: the bits shifted left by 16; f16:
//! `vcvtph2ps` where the CPU has F16C) and multiplied in f32, so the result equals the f32
//! product on the widened weights up to summation order. The `gemm` crate takes f32 operands
//! only, so the weight rows are widened a block at a time into a buffer the thread keeps, each
//! block small enough to stay in the cache until the product has read it ([`WIDEN_BLOCK`]):
//! widening a whole matrix first would write it to memory in f32 and read it back, which cost
//! a prefill with bf16 weights 1.2x its f32 time.

use std::cell::RefCell;

use gemm::{gemm, Parallelism};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use crate::activation::gelu_erf_in_place;
use crate::cpu::{Cpu, Simd};
use crate::halfgemv::HalfKind;
use crate::packed::{PackedHalf, PANEL};
use crate::round::{round_bf16_in_place, rounded_bf16, Compute};

/// What follows the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Nothing.
    Identity,
    /// GELU, the erf form ([`crate::activation`]).
    GeluErf,
}

/// The left operand: `rows` rows of `len` values, row `r` at `data[r * stride..][..len]`. Rows
/// may overlap: the windows of a convolution over time-major frames are rows of one buffer
/// (kernel 3, stride 2: `len = 3 d`, `stride = 2 d`), so the convolution is one product with no
/// copy of its input.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub len: usize,
    /// Distance between the starts of consecutive rows.
    pub stride: usize,
}

impl<'a> Rows<'a> {
    /// `data` as `rows` consecutive rows.
    ///
    /// # Panics
    /// When `rows` does not divide `data`'s length or is 0.
    pub fn dense(data: &'a [f32], rows: usize) -> Self {
        assert!(rows > 0, "linear: no rows");
        let len = data.len() / rows;
        assert_eq!(data.len(), rows * len, "linear: x is not {rows} rows");
        Self {
            data,
            rows,
            len,
            stride: len,
        }
    }

    /// Values from the start of the first row to the end of the last.
    fn span(&self) -> usize {
        (self.rows - 1) * self.stride + self.len
    }

    fn check(&self) {
        assert!(self.rows > 0 && self.len > 0, "linear: empty x");
        assert!(
            self.span() <= self.data.len(),
            "linear: {} rows of {} at stride {} need more than {} values",
            self.rows,
            self.len,
            self.stride,
            self.data.len()
        );
    }
}

/// A weight matrix, `out` rows of `in` values one after the other, in the type it is stored in.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bf16 values, widened to f32 in the product.
    Bf16(&'a [bf16]),
    /// f16 values, widened to f32 in the product.
    F16(&'a [f16]),
}

impl<'a> From<&'a [f32]> for Weight<'a> {
    fn from(w: &'a [f32]) -> Self {
        Weight::F32(w)
    }
}

impl<'a> From<&'a [bf16]> for Weight<'a> {
    fn from(w: &'a [bf16]) -> Self {
        Weight::Bf16(w)
    }
}

impl<'a> From<&'a [f16]> for Weight<'a> {
    fn from(w: &'a [f16]) -> Self {
        Weight::F16(w)
    }
}

impl<'a> Weight<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Weight::F32(w) => w.len(),
            Weight::Bf16(w) => w.len(),
            Weight::F16(w) => w.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `start..start + len`.
    fn slice(&self, start: usize, len: usize) -> Weight<'a> {
        let r = start..start + len;
        match *self {
            Weight::F32(w) => Weight::F32(&w[r]),
            Weight::Bf16(w) => Weight::Bf16(&w[r]),
            Weight::F16(w) => Weight::F16(&w[r]),
        }
    }

    /// The values widened to f32 into `out` (of the same length), split over the rayon pool.
    fn widen_into(&self, out: &mut [f32]) {
        match *self {
            Weight::F32(w) => out.copy_from_slice(w),
            Weight::Bf16(w) => {
                let cpu = Cpu::detected();
                out.par_chunks_mut(WIDEN_TASK)
                    .zip(w.par_chunks(WIDEN_TASK))
                    .for_each(|(out, w)| widen_bf16_at(cpu, w, out))
            }
            Weight::F16(w) => out
                .par_chunks_mut(WIDEN_TASK)
                .zip(w.par_chunks(WIDEN_TASK))
                .for_each(|(out, w)| w.convert_to_f32_slice(out)),
        }
    }
}

/// `out[i] = w[i]` widened, exactly: a bf16 is the upper half of the f32 with the same value, so
/// the bits shift left by 16 (no NaN special case). With the features `cpu` allows (the tests
/// run every level this CPU has); the vector paths read 16 or 8 values per instruction, the portable loop
/// 4 (SSE2), and the widening of a block is bound by reading the weights from memory.
pub fn widen_bf16_at(cpu: Cpu, w: &[bf16], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len(),
        "widen: {} values into {}",
        w.len(),
        out.len()
    );
    match cpu.simd() {
        // SAFETY: `cpu` holds the feature each kernel is compiled for; the lengths are equal.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::widen_bf16_avx512(w, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::widen_bf16_avx2(w, out) },
        _ => widen_bf16_portable(w, out),
    }
}

fn widen_bf16_portable(w: &[bf16], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(w) {
        *o = f32::from_bits(u32::from(b.to_bits()) << 16);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    /// # Safety
    /// The CPU has AVX-512F; `w` and `out` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen_bf16_avx512(w: &[bf16], out: &mut [f32]) {
        let n = w.len() / 16 * 16;
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= n <= len of both; unaligned loads and stores.
            unsafe {
                let bits = _mm256_loadu_si256(w.as_ptr().add(i) as *const __m256i);
                let wide = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits));
                _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut __m512i, wide);
            }
        }
        super::widen_bf16_portable(&w[n..], &mut out[n..]);
    }

    /// # Safety
    /// The CPU has AVX2; `w` and `out` have the same length.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_bf16_avx2(w: &[bf16], out: &mut [f32]) {
        let n = w.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both; unaligned loads and stores.
            unsafe {
                let bits = _mm_loadu_si128(w.as_ptr().add(i) as *const __m128i);
                let wide = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits));
                _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, wide);
            }
        }
        super::widen_bf16_portable(&w[n..], &mut out[n..]);
    }
}

/// Weights widened per block of a half-precision product: 1 Mi values, 4 MiB of f32, so a
/// block stays in the last-level cache between its widening and its product. Measured on a
/// 2-core AMD EPYC (AVX-512, 32 MiB L3) with `decode_bench` (auris-llm's example) on a
/// 0.5B-class decoder with bf16 weights, fastest of six prefills of 255 / 815 positions: f32
/// weights 0.673 / 2.022 s; bf16 in blocks of 1 Mi 0.666 / 2.026 s, 4 Mi 0.706 / 2.085 s,
/// 16 Mi 0.727 / 2.126 s. (With the weights kept in cache, as in `linear_bench`, larger blocks
/// win instead: a model's weights stream from memory.)
pub const WIDEN_BLOCK: usize = 1 << 20;

/// Weight rows per block are a multiple of this when a block holds more.
const BLOCK_ALIGN: usize = 64;

/// Values per task of a parallel widening.
const WIDEN_TASK: usize = 1 << 15;

/// `act(x W^T + b)` for `w` of `out` rows of `x.len` values and `b` of `out` values;
/// `(x.rows, out)` row-major, computed in f32 on the current rayon pool.
///
/// # Panics
/// When the lengths disagree.
pub fn linear<'a>(
    x: Rows,
    w: impl Into<Weight<'a>>,
    out: usize,
    bias: Option<&[f32]>,
    act: Act,
) -> Vec<f32> {
    linear_with(Compute::F32, x, w, out, bias, act)
}

/// [`linear`] with the product's inputs in `compute`'s precision (see
/// [`linear_into_with`]); the bias and the activation are f32.
///
/// # Panics
/// When the lengths disagree.
pub fn linear_with<'a>(
    compute: Compute,
    x: Rows,
    w: impl Into<Weight<'a>>,
    out: usize,
    bias: Option<&[f32]>,
    act: Act,
) -> Vec<f32> {
    let w = w.into();
    assert!(out > 0, "linear: empty output");
    assert_eq!(w.len(), out * x.len, "linear: w is not ({out}, {})", x.len);
    let mut y = match bias {
        Some(b) => {
            assert_eq!(b.len(), out, "linear: bias is not {out} values");
            b.repeat(x.rows)
        }
        None => vec![0.0; x.rows * out],
    };
    linear_into_with(compute, &mut y, out, 0, x, w);
    if act == Act::GeluErf {
        gelu_erf_in_place(&mut y);
    }
    y
}

/// `y[:, col0..col0 + out] += x W^T` for `y` of `x.rows` rows of `y_cols` values and `w` of
/// `out` rows of `x.len` values: a product over a slice of the weight rows written in place
/// into its columns of the whole output. Half-precision weights go through f32 one block of
/// rows at a time ([`WIDEN_BLOCK`]).
///
/// # Panics
/// When the lengths disagree.
pub fn linear_into<'a>(
    y: &mut [f32],
    y_cols: usize,
    col0: usize,
    x: Rows,
    w: impl Into<Weight<'a>>,
) {
    linear_into_with(Compute::F32, y, y_cols, col0, x, w)
}

/// [`linear_into`] with the product's inputs in `compute`'s precision. [`Compute::Bf16`]
/// rounds `x` to bf16 once (one copy of its rows) and multiplies bf16 weights as they are;
/// f32 and f16 weights are rounded to bf16 a block at a time as they are widened
/// ([`WIDEN_BLOCK`]). The products then run in f32 on bf16 values, which is bf16 × bf16 with
/// f32 accumulation: [`crate::round`].
///
/// # Panics
/// When the lengths disagree.
pub fn linear_into_with<'a>(
    compute: Compute,
    y: &mut [f32],
    y_cols: usize,
    col0: usize,
    x: Rows,
    w: impl Into<Weight<'a>>,
) {
    let w = w.into();
    x.check();
    let mut rounded = Vec::new();
    let x = in_precision(compute, x, &mut rounded);
    let round_w = compute == Compute::Bf16 && !matches!(w, Weight::Bf16(_));
    match w {
        Weight::F32(w) if !round_w => gemm_into(y, y_cols, col0, x, w),
        w => widened_blocks_into(y, y_cols, col0, x, w, round_w),
    }
}

/// `x` as the products take it under `compute`: as it is, or its values rounded to bf16 into
/// `store` (one copy of its rows). `x` must be checked.
fn in_precision<'a>(compute: Compute, x: Rows<'a>, store: &'a mut Vec<f32>) -> Rows<'a> {
    match compute {
        Compute::F32 => x,
        Compute::Bf16 => {
            *store = rounded_bf16(&x.data[..x.span()]);
            Rows { data: store, ..x }
        }
    }
}

/// [`linear_into`] over weights widened to f32 (and rounded to bf16 when `round` says) one
/// block of rows at a time.
fn widened_blocks_into(y: &mut [f32], y_cols: usize, col0: usize, x: Rows, w: Weight, round: bool) {
    let k = x.len;
    assert!(w.len().is_multiple_of(k), "linear: w is not (out, {k})");
    let out = w.len() / k;
    let block_rows = widen_block_len(k);
    with_widen_buffer(|buf| {
        for start in (0..out).step_by(block_rows) {
            let len = block_rows.min(out - start);
            buf.resize(len * k, 0.0);
            w.slice(start * k, len * k).widen_into(buf);
            if round {
                round_bf16_in_place(buf);
            }
            gemm_into(y, y_cols, col0 + start, x, buf);
        }
    });
}

/// Weight rows (output columns) widened at a time for rows of `k`: about [`WIDEN_BLOCK`]
/// weights, in whole tiles of the AVX-512 microkernel (64 rows of the weight) so that only the
/// last block runs the narrower edge kernels; at least one row.
fn widen_block_len(k: usize) -> usize {
    match WIDEN_BLOCK / k {
        0 => 1,
        r if r < BLOCK_ALIGN => r,
        r => r / BLOCK_ALIGN * BLOCK_ALIGN,
    }
}

/// Runs `f` with this thread's buffer for widened weights, or a fresh one when a product
/// nested in this one (a rayon task run by this thread while it waits) already holds it. The
/// buffer is kept between products: a fresh multi-megabyte allocation per product is fresh
/// pages the kernel zeroes, which cost a prefill more than the widening.
fn with_widen_buffer(f: impl FnOnce(&mut Vec<f32>)) {
    thread_local! {
        static WIDENED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    WIDENED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    });
}

/// [`linear_into_with`] for a bf16 or f16 weight packed in panels ([`PackedHalf`]): a block of
/// panels at a time is widened to f32 as `wᵀ` (`(k, 16 × panels)` row-major, the layout a GEMM
/// reads its right operand in) into a buffer that stays in the cache (f16 weights rounded to
/// bf16 there under [`Compute::Bf16`]), then multiplied by `gemm`, as [`linear_into`] does
/// with blocks of weight rows.
///
/// # Panics
/// When the lengths disagree.
pub fn linear_into_packed(
    compute: Compute,
    y: &mut [f32],
    y_cols: usize,
    col0: usize,
    x: Rows,
    w: &PackedHalf,
) {
    x.check();
    let k = x.len;
    assert_eq!(w.k(), k, "linear: w is not (out, {k})");
    let mut rounded = Vec::new();
    let x = in_precision(compute, x, &mut rounded);
    let round_w = compute == Compute::Bf16 && w.kind() != HalfKind::Bf16;
    let n = w.n();
    let panels = n.div_ceil(PANEL);
    let block = (widen_block_len(k) / PANEL).max(1);
    with_widen_buffer(|buf| {
        for q in (0..panels).step_by(block) {
            let to = (q + block).min(panels);
            let cols = (to - q) * PANEL;
            buf.resize(k * cols, 0.0);
            w.widen_transposed(q..to, buf);
            if round_w {
                round_bf16_in_place(buf);
            }
            let out = cols.min(n - q * PANEL);
            gemm_cols(y, y_cols, col0 + q * PANEL, x, buf, out, (cols as isize, 1));
        }
    });
}

/// [`linear_into`] for f32 weights: one `gemm` call.
fn gemm_into(y: &mut [f32], y_cols: usize, col0: usize, x: Rows, w: &[f32]) {
    let k = x.len;
    assert!(w.len().is_multiple_of(k), "linear: w is not (out, {k})");
    // wᵀ is (k, out) read from w's rows: column j of wᵀ is row j of w.
    gemm_cols(y, y_cols, col0, x, w, w.len() / k, (1, k as isize));
}

/// `y[:, col0..col0 + out] += x wt` for `wt` the `(k, out)` transposed weight whose element
/// `(p, j)` is `wt[p * strides.0 + j * strides.1]`: one `gemm` call on the rayon pool.
fn gemm_cols(
    y: &mut [f32],
    y_cols: usize,
    col0: usize,
    x: Rows,
    wt: &[f32],
    out: usize,
    strides: (isize, isize),
) {
    x.check();
    let k = x.len;
    let rows = x.rows;
    assert_eq!(
        y.len(),
        rows * y_cols,
        "linear: y is not {rows} rows of {y_cols}"
    );
    assert!(
        col0 + out <= y_cols,
        "linear: columns {col0}..{} past {y_cols}",
        col0 + out
    );
    if out == 0 {
        return;
    }
    let (rs, cs) = strides;
    let last = (k - 1) as isize * rs + (out - 1) as isize * cs;
    assert!(
        rs >= 0 && cs >= 0 && (last as usize) < wt.len(),
        "linear: the weight is not ({k}, {out}) at strides {strides:?}"
    );
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the block of y is (rows, out) from column col0 with row stride y_cols; x is
    // (rows, k) with row stride x.stride (checked in bounds); wt is (k, out) at the strides
    // checked above, its last element in bounds.
    unsafe {
        gemm(
            rows,
            out,
            k,
            y.as_mut_ptr().add(col0),
            1,
            y_cols as isize,
            true,
            x.data.as_ptr(),
            1,
            x.stride as isize,
            wt.as_ptr(),
            cs,
            rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::gelu_erf;
    use crate::test_values::{on_threads, values};

    fn reference(x: &[f32], rows: usize, w: &[f32], out: usize, b: Option<&[f32]>) -> Vec<f64> {
        let k = x.len() / rows;
        let mut y = vec![0.0f64; rows * out];
        for r in 0..rows {
            for j in 0..out {
                let dot: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[j * k + i] as f64)
                    .sum();
                y[r * out + j] = dot + b.map_or(0.0, |b| b[j] as f64);
            }
        }
        y
    }

    /// Odd shapes (cut microkernel tiles), with and without bias and GELU, on 1-3 threads.
    #[test]
    fn matches_the_definition_on_odd_shapes_and_threads() {
        for (rows, k, out) in [
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 65),
            (70, 129, 31),
            (130, 64, 200),
        ] {
            let x = values(rows * k, 1);
            let w = values(out * k, 2);
            let b = values(out, 3);
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                for (bias, act) in [
                    (None, Act::Identity),
                    (Some(&b[..]), Act::Identity),
                    (Some(&b[..]), Act::GeluErf),
                ] {
                    let got =
                        pool.install(|| linear(Rows::dense(&x, rows), &w[..], out, bias, act));
                    let want = reference(&x, rows, &w, out, bias);
                    for (g, v) in got.iter().zip(&want) {
                        let v = match act {
                            Act::Identity => *v,
                            Act::GeluErf => gelu_erf(*v as f32) as f64,
                        };
                        let tol = 1e-5 * (1.0 + v.abs()) * (k as f64).sqrt();
                        assert!(
                            (*g as f64 - v).abs() <= tol,
                            "{rows}x{k}x{out} {threads} threads {act:?}: {g} vs {v}"
                        );
                    }
                }
            }
        }
    }

    /// A weight in uneven chunks of rows, each written into its columns, equals the whole.
    #[test]
    fn chunks_of_weight_rows_fill_their_columns() {
        let (rows, k, out) = (37, 45, 50);
        let x = values(rows * k, 4);
        let w = values(out * k, 5);
        let whole = linear(Rows::dense(&x, rows), &w[..], out, None, Act::Identity);
        let mut y = vec![0.0; rows * out];
        for (start, len) in [(0, 7), (7, 20), (27, 23)] {
            linear_into(
                &mut y,
                out,
                start,
                Rows::dense(&x, rows),
                &w[start * k..(start + len) * k],
            );
        }
        for (a, b) in y.iter().zip(&whole) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// Overlapping rows (a kernel-3, stride-2 convolution over time-major frames) read the
    /// same values as their copies laid out one after the other.
    #[test]
    fn overlapping_rows_equal_their_copies() {
        let (frames, d, out) = (23, 6, 5);
        let data = values(frames * d, 6);
        let rows = (frames - 3) / 2 + 1;
        let x = Rows {
            data: &data,
            rows,
            len: 3 * d,
            stride: 2 * d,
        };
        let copied: Vec<f32> = (0..rows)
            .flat_map(|r| data[2 * r * d..(2 * r + 3) * d].iter().copied())
            .collect();
        let w = values(out * 3 * d, 7);
        let b = values(out, 8);
        let got = linear(x, &w[..], out, Some(&b), Act::GeluErf);
        let want = linear(
            Rows::dense(&copied, rows),
            &w[..],
            out,
            Some(&b),
            Act::GeluErf,
        );
        assert_eq!(got, want);
    }

    /// Every level widens every bf16 (normal, subnormal, zero, infinite, NaN) to the f32 of the
    /// same bits, on lengths that cut the vector widths.
    #[test]
    fn bf16_widening_is_exact_at_every_level() {
        let w: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        for level in crate::cpu::tests::levels() {
            for len in [0, 1, 7, 8, 15, 16, 17, 33, w.len()] {
                let mut out = vec![0.0f32; len];
                widen_bf16_at(level, &w[..len], &mut out);
                for (b, o) in w[..len].iter().zip(&out) {
                    assert_eq!(o.to_bits(), u32::from(b.to_bits()) << 16, "{level:?} {len}");
                }
            }
        }
    }

    /// bf16 and f16 weights give the f32 product of their widened values, over several
    /// blocks of rows (one block is [`WIDEN_BLOCK`] values) and on 1-3 threads.
    #[test]
    fn half_weights_equal_the_product_of_their_widened_values() {
        for (rows, k, out) in [
            (3, 7, 5),
            (2, 1000, 1100),
            (5, 3001, 700),
            (1, 2_000_000, 1),
        ] {
            let x = values(rows * k, 9);
            let w = values(out * k, 10);
            let b = values(out, 11);
            let w16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            for (name, half, widened) in [
                (
                    "bf16",
                    Weight::Bf16(&w16),
                    w16.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                ),
                (
                    "f16",
                    Weight::F16(&wh),
                    wh.iter().map(|v| v.to_f32()).collect(),
                ),
            ] {
                for threads in 1..=3 {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let (got, want) = pool.install(|| {
                        let x = Rows::dense(&x, rows);
                        (
                            linear(x, half, out, Some(&b), Act::GeluErf),
                            linear(x, &widened[..], out, Some(&b), Act::GeluErf),
                        )
                    });
                    for (g, v) in got.iter().zip(&want) {
                        let tol = 1e-6 * (1.0 + v.abs()) * (k as f32).sqrt();
                        assert!(
                            (g - v).abs() <= tol,
                            "{rows}x{k}x{out} {name} {threads} threads: {g} vs {v}"
                        );
                    }
                }
            }
        }
    }

    /// A packed bf16 or f16 weight gives the product of the same weights row by row, within
    /// the rounding of another summation order: odd shapes, several widening blocks (k = 3001,
    /// 700 columns), a last panel with padding, both precisions, 1-3 threads.
    #[test]
    fn packed_weights_equal_the_product_of_their_rows() {
        for (rows, k, out) in [(3, 7, 5), (2, 1000, 1100), (5, 3001, 700), (4, 64, 4100)] {
            let x = values(rows * k, 12);
            let v = values(out * k, 13);
            let wb: Vec<bf16> = v.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = v.iter().map(|&v| f16::from_f32(v)).collect();
            let packed_b = PackedHalf::pack_bf16(&wb, out, k);
            let bits: Vec<u16> = wh.iter().map(|v| v.to_bits()).collect();
            let packed_h = PackedHalf::pack(HalfKind::F16, &bits, out, k);
            for (compute, (packed, w)) in [Compute::F32, Compute::Bf16].into_iter().flat_map(|c| {
                [
                    (&packed_b, Weight::Bf16(&wb)),
                    (&packed_h, Weight::F16(&wh)),
                ]
                .map(|p| (c, p))
            }) {
                for threads in 1..=3 {
                    let (got, want) = on_threads(threads, || {
                        let x = Rows::dense(&x, rows);
                        let mut got = vec![0.5f32; rows * (out + 3)];
                        linear_into_packed(compute, &mut got, out + 3, 2, x, packed);
                        let mut want = vec![0.5f32; rows * (out + 3)];
                        linear_into_with(compute, &mut want, out + 3, 2, x, w);
                        (got, want)
                    });
                    for (g, v) in got.iter().zip(&want) {
                        let tol = 1e-6 * (1.0 + v.abs()) * (k as f32).sqrt();
                        assert!(
                            (g - v).abs() <= tol,
                            "{rows}x{k}x{out} {compute:?} {:?} {threads} threads: {g} vs {v}",
                            packed.kind()
                        );
                    }
                    for row in got.chunks_exact(out + 3) {
                        assert_eq!([row[0], row[1], row[out + 2]], [0.5; 3], "columns kept");
                    }
                }
            }
        }
    }

    /// bf16 compute equals the f64 product of the operands rounded to bf16 by the scalar
    /// reference, for f32, bf16 and f16 weights, odd shapes (several widening blocks in the
    /// last), overlapping rows, and 1-3 threads; and it is not the f32 product (the check can
    /// tell the two apart).
    #[test]
    fn bf16_compute_equals_the_product_of_rounded_operands() {
        use crate::round::round_bf16;
        let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| round_bf16(x)).collect() };
        for (rows, k, out, stride) in [
            (1, 1, 1, 1),
            (3, 5, 7, 5),
            (17, 33, 65, 33),
            (70, 129, 31, 64),
            (4, 3001, 700, 3001),
        ] {
            let data = values((rows - 1) * stride + k, 21);
            let x = Rows {
                data: &data,
                rows,
                len: k,
                stride,
            };
            let dense: Vec<f32> = (0..rows)
                .flat_map(|r| round(&data[r * stride..r * stride + k]))
                .collect();
            let w = values(out * k, 22);
            let b = values(out, 23);
            let w16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let wh_wide: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
            let cases = [
                (Weight::F32(&w), round(&w)),
                (Weight::Bf16(&w16), round(&w)),
                (Weight::F16(&wh), round(&wh_wide)),
            ];
            let unrounded: Vec<f32> = (0..rows)
                .flat_map(|r| data[r * stride..r * stride + k].to_vec())
                .collect();
            let f32_product = reference(&unrounded, rows, &w, out, Some(&b));
            let bf16_product = reference(&dense, rows, &round(&w), out, Some(&b));
            for (weight, rounded_w) in cases {
                let want = reference(&dense, rows, &rounded_w, out, Some(&b));
                for threads in 1..=3 {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let got = pool.install(|| {
                        linear_with(Compute::Bf16, x, weight, out, Some(&b), Act::Identity)
                    });
                    for (g, v) in got.iter().zip(&want) {
                        let tol = 1e-6 * (1.0 + v.abs()) * (k as f64).sqrt();
                        assert!(
                            (*g as f64 - v).abs() <= tol,
                            "{rows}x{k}x{out} {weight:?} {threads} threads: {g} vs {v}"
                        );
                    }
                }
            }
            // The rounding moves the result by far more than the tolerance.
            let moved = bf16_product
                .iter()
                .zip(&f32_product)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                k == 1 || moved > 1e-4,
                "{rows}x{k}x{out}: rounding moved {moved}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "need more than")]
    fn rows_past_the_data_are_refused() {
        let data = [1.0; 10];
        let x = Rows {
            data: &data,
            rows: 3,
            len: 4,
            stride: 4,
        };
        linear(x, &[1.0; 4][..], 1, None, Act::Identity);
    }

    #[test]
    #[should_panic(expected = "w is not")]
    fn a_wrong_weight_length_is_refused() {
        linear(
            Rows::dense(&[1.0; 6], 2),
            &[1.0; 5][..],
            2,
            None,
            Act::Identity,
        );
    }
}
