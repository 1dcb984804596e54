//! Matrix-vector products with GGML `q8_0` / `q4_0` weights (decode steps), done the way
//! llama.cpp does them (`ggml/src/ggml-cpu/arch/x86/quants.c`, `ggml_vec_dot_q8_0_q8_0` and
//! `ggml_vec_dot_q4_0_q8_0`): the activation row is quantised once to blocks of 32 signed
//! bytes with an f32 scale, then each weight block takes one integer dot of 32 byte pairs and
//! one FMA with the product of the two scales.
//!
//! The weights are GGML blocks as candle's `QTensor` stores them: `q8_0` is an f16 scale and
//! 32 `i8`; `q4_0` an f16 scale and 16 bytes, byte `i` holding weight `i` in its low nibble and
//! weight `i + 16` in its high one, each offset by 8.
//!
//! The integer dot multiplies unsigned by signed bytes (`vpmaddubsw`, or `vpdpbusd` with
//! AVX-VNNI / AVX512-VNNI), so a signed weight `w` times an activation `x` is computed as
//! `|w| · (x · sign(w))`.

use rayon::prelude::*;

use crate::batch::split_rows;
use crate::cpu::{Cpu, Feature};

/// Weights per block.
pub const BLOCK: usize = 32;

/// A GGML block format with 32 weights per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// An f16 scale and 32 `i8`.
    Q8_0,
    /// An f16 scale and 32 four-bit values offset by 8.
    Q4_0,
}

impl BlockKind {
    /// Bytes per block: the f16 scale and the packed weights.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockKind::Q8_0 => 2 + BLOCK,
            BlockKind::Q4_0 => 2 + BLOCK / 2,
        }
    }
}

/// The instruction set of the integer dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntDot {
    /// Plain Rust, any CPU.
    Portable,
    /// AVX2 + FMA + F16C: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// AVX-VNNI (256-bit `vpdpbusd`, VEX encoded).
    AvxVnni,
    /// AVX512-VNNI with AVX512VL (256-bit `vpdpbusd`, EVEX encoded).
    Avx512Vnni,
}

impl IntDot {
    /// The best dot `cpu` allows.
    fn of(cpu: Cpu) -> IntDot {
        // Prefer the VEX form where both exist: same instruction, shorter encoding.
        if cpu.has(Feature::AvxVnni) {
            IntDot::AvxVnni
        } else if cpu.has(Feature::Avx512Vnni) {
            IntDot::Avx512Vnni
        } else if cpu.has(Feature::Avx2) {
            IntDot::Avx2
        } else {
            IntDot::Portable
        }
    }
}

/// An activation row quantised to `q8_0`-like blocks: 32 `i8` per block and an f32 scale
/// (llama.cpp rounds the scale to f16; f32 costs nothing here and loses less).
#[derive(Debug)]
pub struct QuantRow {
    /// The quantised values, [`BLOCK`] per block.
    pub qs: Vec<i8>,
    /// Each block's scale: a value is `scale * q`.
    pub scales: Vec<f32>,
    /// Each block's sum of `qs`, for formats with a per-block minimum (`q4_K`).
    pub sums: Vec<i32>,
}

impl QuantRow {
    /// Quantises `x` (length a multiple of [`BLOCK`]): `d = max|x| / 127`, `q = round(x / d)`.
    pub fn new(x: &[f32]) -> QuantRow {
        let mut qs = Vec::with_capacity(x.len());
        let mut scales = Vec::with_capacity(x.len() / BLOCK);
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            qs.extend(block.iter().map(|v| (v * inv).round() as i8));
            scales.push(d);
        }
        let sums = qs
            .chunks_exact(BLOCK)
            .map(|b| b.iter().map(|&q| i32::from(q)).sum())
            .collect();
        QuantRow { qs, scales, sums }
    }
}

/// Computes `out = x · wᵀ (+ bias)` for `w` of `out.len()` rows of `GGML` blocks of `kind`,
/// with the features of this CPU; see [`qgemv_at`].
///
/// # Panics
///
/// If `w` is not `out.len()` rows of `x`'s block count, or `bias` not `out.len()` long.
pub fn qgemv(kind: BlockKind, x: &QuantRow, w: &[u8], bias: Option<&[f32]>, out: &mut [f32]) {
    qgemv_at(Cpu::detected(), kind, x, w, bias, out);
}

/// Computes `out = x · wᵀ (+ bias)`, splitting the rows over the current rayon pool, with the
/// features `cpu` allows (the tests run every level this CPU has): the one-row case of
/// [`qgemv_batch_at`].
///
/// # Panics
///
/// If `w` is not `out.len()` rows of `x`'s block count, or `bias` not `out.len()` long.
pub fn qgemv_at(
    cpu: Cpu,
    kind: BlockKind,
    x: &QuantRow,
    w: &[u8],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    qgemv_batch_at(cpu, kind, std::slice::from_ref(x), w, bias, out);
}

/// Computes `out[r] = xs[r] · wᵀ (+ bias)` for the quantised rows `xs` (each quantised on its
/// own by [`QuantRow::new`]) and `w` of `n` rows of blocks of `kind`, into `xs.len()` rows of
/// `n`, with the features of this CPU; see [`qgemv_batch_at`].
///
/// # Panics
///
/// As [`qgemv_batch_at`].
pub fn qgemv_batch(
    kind: BlockKind,
    xs: &[QuantRow],
    w: &[u8],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    qgemv_batch_at(Cpu::detected(), kind, xs, w, bias, out);
}

/// [`qgemv_batch`] with the features `cpu` allows. Each weight block is unpacked once for up
/// to eight activation rows; each row of `out` is bitwise what [`qgemv_at`] gives for that row
/// alone, whatever the other rows and the pool (each element is one chain of block products
/// in block order).
///
/// # Panics
///
/// If `xs` is empty or its rows differ in length, `w` is not `n` rows of their block count,
/// `out` not `xs.len()` rows of `n`, or `bias` not `n` long.
pub fn qgemv_batch_at(
    cpu: Cpu,
    kind: BlockKind,
    xs: &[QuantRow],
    w: &[u8],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let isa = IntDot::of(cpu);
    let row_bytes = same_blocks(xs) * kind.block_bytes();
    split_rows(xs.len(), row_bytes, w, bias, out, |w, t| {
        for (col, row) in t.chunks_exact_mut(xs.len()).zip(w.chunks_exact(row_bytes)) {
            dot_rows(isa, kind, xs, row, col);
        }
    });
}

/// The block count the rows of `xs` share.
///
/// # Panics
///
/// If `xs` is empty or its rows differ.
pub(crate) fn same_blocks(xs: &[QuantRow]) -> usize {
    let blocks = xs.first().map_or(0, |x| x.scales.len());
    assert!(
        !xs.is_empty() && xs.iter().all(|x| x.scales.len() == blocks),
        "gemv: the activation rows are not all of {blocks} blocks"
    );
    blocks
}

/// `col[r] = dot(xs[r], row)` for every activation row; `isa` is a detected [`Cpu`]'s.
fn dot_rows(isa: IntDot, kind: BlockKind, xs: &[QuantRow], row: &[u8], col: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` comes from the caller's `Cpu`, which holds the features of the kernel
        // taken; `row` holds one block per activation block and `col` one value per row.
        unsafe {
            match isa {
                IntDot::Avx2 => return x86::dot_avx2(kind, xs, row, col),
                IntDot::AvxVnni => return x86::dot_avxvnni(kind, xs, row, col),
                IntDot::Avx512Vnni => return x86::dot_avx512vnni(kind, xs, row, col),
                IntDot::Portable => {}
            }
        }
    }
    let _ = isa;
    for (o, x) in col.iter_mut().zip(xs) {
        *o = dot_portable(kind, x, row);
    }
}

/// The block's 32 weights as signed bytes.
fn unpack(kind: BlockKind, block: &[u8]) -> [i8; BLOCK] {
    let mut w = [0i8; BLOCK];
    match kind {
        BlockKind::Q8_0 => {
            for (w, &b) in w.iter_mut().zip(&block[2..2 + BLOCK]) {
                *w = b as i8;
            }
        }
        BlockKind::Q4_0 => {
            for (i, &b) in block[2..2 + BLOCK / 2].iter().enumerate() {
                w[i] = (b & 0x0F) as i8 - 8;
                w[i + BLOCK / 2] = (b >> 4) as i8 - 8;
            }
        }
    }
    w
}

/// GGML blocks of `kind` dequantised to f32, split over the rayon pool (a multi-row
/// product's weight chunk).
pub fn dequantize_par(kind: BlockKind, blocks: &[u8]) -> Vec<f32> {
    const BLOCKS_PER_TASK: usize = 2048;
    let bytes = kind.block_bytes();
    let mut out = vec![0.0f32; blocks.len() / bytes * BLOCK];
    out.par_chunks_mut(BLOCKS_PER_TASK * BLOCK)
        .zip(blocks.par_chunks(BLOCKS_PER_TASK * bytes))
        .for_each(|(out, blocks)| {
            for (o, block) in out.chunks_exact_mut(BLOCK).zip(blocks.chunks_exact(bytes)) {
                let d = scale(block);
                for (o, &q) in o.iter_mut().zip(&unpack(kind, block)) {
                    *o = d * f32::from(q);
                }
            }
        });
    out
}

fn scale(block: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

fn dot_portable(kind: BlockKind, x: &QuantRow, row: &[u8]) -> f32 {
    row.chunks_exact(kind.block_bytes())
        .zip(x.qs.chunks_exact(BLOCK).zip(&x.scales))
        .map(|(block, (xq, &dx))| {
            let w = unpack(kind, block);
            let isum: i32 = w.iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum();
            scale(block) * dx * isum as f32
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BlockKind, QuantRow, BLOCK};
    use crate::gemv::hsum;

    /// The block's 32 weights as signed bytes in one vector.
    ///
    /// # Safety
    ///
    /// `p` must point at a whole block of `KIND`.
    #[inline(always)]
    unsafe fn weights<const Q4: bool>(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees the block's bytes are readable.
        unsafe {
            if Q4 {
                let packed = _mm_loadu_si128(p.add(2).cast());
                let lo = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(packed), _mm_set1_epi8(0x0F));
                let both = _mm256_set_m128i(hi, lo);
                _mm256_sub_epi8(both, _mm256_set1_epi8(8))
            } else {
                _mm256_loadu_si256(p.add(2).cast())
            }
        }
    }

    /// The f16 scale at `p`, widened.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reading 2 bytes; the CPU must support F16C.
    #[inline(always)]
    unsafe fn scale(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 2 readable bytes and F16C.
        unsafe {
            let bits = p.cast::<u16>().read_unaligned();
            let wide = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)));
            _mm256_broadcastss_ps(wide)
        }
    }

    /// Activation rows dotted with one weight row at a time, at most: each block is unpacked
    /// once for all of them.
    pub(super) const GROUP: usize = 8;

    /// The dots of one weight row with up to [`GROUP`] activation rows at a time, the integer
    /// product of a block given by `idot(|w|, x · sign(w))`: each block is unpacked once for
    /// the group, and each element is one 8-lane chain of `(d_w · d_x) · idot` in block order.
    macro_rules! dot_fn {
        ($name:ident, $features:literal, |$a:ident, $b:ident| $idot:expr) => {
            /// # Safety
            ///
            /// The CPU must support the enabled features; `row` must hold one block per
            /// activation block of every row of `xs`, and `col` one value per row.
            #[target_feature(enable = $features)]
            pub(in crate::qgemv) unsafe fn $name(
                kind: BlockKind,
                xs: &[QuantRow],
                row: &[u8],
                col: &mut [f32],
            ) {
                let bytes = kind.block_bytes();
                for (xs, col) in xs.chunks(GROUP).zip(col.chunks_mut(GROUP)) {
                    // SAFETY: forwarded from the caller.
                    unsafe {
                        match kind {
                            BlockKind::Q8_0 => group::<false>(xs, row, bytes, col),
                            BlockKind::Q4_0 => group::<true>(xs, row, bytes, col),
                        }
                    }
                }
            }

            /// # Safety
            ///
            /// As for the public function; `xs` and `col` hold at most [`GROUP`] rows.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn group<const Q4: bool>(
                xs: &[QuantRow],
                row: &[u8],
                bytes: usize,
                col: &mut [f32],
            ) {
                // SAFETY: forwarded from the caller.
                unsafe {
                    match xs.len() {
                        1 => body::<Q4, 1>(xs, row, bytes, col),
                        2 => body::<Q4, 2>(xs, row, bytes, col),
                        3 => body::<Q4, 3>(xs, row, bytes, col),
                        4 => body::<Q4, 4>(xs, row, bytes, col),
                        5 => body::<Q4, 5>(xs, row, bytes, col),
                        6 => body::<Q4, 6>(xs, row, bytes, col),
                        7 => body::<Q4, 7>(xs, row, bytes, col),
                        _ => body::<Q4, GROUP>(xs, row, bytes, col),
                    }
                }
            }

            /// # Safety
            ///
            /// As for the public function; `xs` and `col` hold `R` rows, and `bytes` is the
            /// block size of `Q4`'s format.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn body<const Q4: bool, const R: usize>(
                xs: &[QuantRow],
                row: &[u8],
                bytes: usize,
                col: &mut [f32],
            ) {
                let blocks = xs[0].scales.len();
                debug_assert!(xs.len() == R && xs.iter().all(|x| x.scales.len() == blocks));
                // The rows' values and scales, read through pointers so the loop carries no
                // bound checks (every row holds `blocks` blocks).
                let qs: [*const i8; R] = std::array::from_fn(|r| xs[r].qs.as_ptr());
                let ds: [*const f32; R] = std::array::from_fn(|r| xs[r].scales.as_ptr());
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..blocks {
                    // SAFETY: block b lies inside `row` (one per activation block), and the
                    // activation block b inside each row's `qs` and `scales`.
                    unsafe {
                        let p = row.as_ptr().add(b * bytes);
                        let w = weights::<Q4>(p);
                        let $a = _mm256_sign_epi8(w, w);
                        let dw = scale(p);
                        for r in 0..R {
                            let xq = _mm256_loadu_si256(qs[r].add(b * BLOCK).cast());
                            let $b = _mm256_sign_epi8(xq, w);
                            let prod = $idot;
                            let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*ds[r].add(b)));
                            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(prod), acc[r]);
                        }
                    }
                }
                for (o, acc) in col.iter_mut().zip(acc) {
                    *o = hsum(acc);
                }
            }
        };
    }

    mod avx2 {
        use super::*;
        dot_fn!(dot, "avx2,fma,f16c", |a, b| _mm256_madd_epi16(
            _mm256_maddubs_epi16(a, b),
            _mm256_set1_epi16(1)
        ));
    }
    mod avxvnni {
        use super::*;
        dot_fn!(
            dot,
            "avx2,fma,f16c,avxvnni",
            |a, b| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b)
        );
    }
    mod avx512vnni {
        use super::*;
        dot_fn!(dot, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", |a, b| {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
        });
    }

    pub(in crate::qgemv) use avx2::dot as dot_avx2;
    pub(in crate::qgemv) use avx512vnni::dot as dot_avx512vnni;
    pub(in crate::qgemv) use avxvnni::dot as dot_avxvnni;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::levels;
    use crate::gemv::tests::check_batch;
    use crate::test_values::values;

    /// Random GGML blocks: every byte pattern is a valid weight; scales kept finite.
    fn blocks(kind: BlockKind, n_blocks: usize, seed: u64) -> Vec<u8> {
        let raw = values(n_blocks * kind.block_bytes(), seed);
        let mut out: Vec<u8> = raw.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
        for (b, block) in out.chunks_exact_mut(kind.block_bytes()).enumerate() {
            let d = half::f16::from_f32(0.01 + 0.001 * (b % 7) as f32).to_bits();
            block[..2].copy_from_slice(&d.to_le_bytes());
        }
        // Extremes: -128 (whose |w| is 128 as an unsigned byte) and 127.
        if kind == BlockKind::Q8_0 && out.len() > 4 {
            out[2] = 0x80;
            out[3] = 0x7F;
        }
        out
    }

    /// The exact product (f64) of the quantised row and the blocks.
    fn reference(kind: BlockKind, x: &QuantRow, w: &[u8], n: usize) -> Vec<f64> {
        let row_bytes = w.len() / n.max(1);
        (0..n)
            .map(|j| {
                let row = &w[j * row_bytes..(j + 1) * row_bytes];
                row.chunks_exact(kind.block_bytes())
                    .zip(x.qs.chunks_exact(BLOCK).zip(&x.scales))
                    .map(|(block, (xq, &dx))| {
                        let w = unpack(kind, block);
                        let isum: i64 = w.iter().zip(xq).map(|(&a, &b)| a as i64 * b as i64).sum();
                        f64::from(scale(block)) * f64::from(dx) * isum as f64
                    })
                    .sum()
            })
            .collect()
    }

    fn check(cpu: Cpu, kind: BlockKind, k: usize, n: usize, batch: usize) {
        let xs: Vec<QuantRow> = (0..batch)
            .map(|r| QuantRow::new(&values(k, 5 + (k + 3 * r) as u64)))
            .collect();
        let w = blocks(kind, n * k / BLOCK, 9 + n as u64);
        let bias = (n % 2 == 1).then(|| values(n, 3));
        let what = format!("{cpu:?} {kind:?} k={k} n={n}");
        check_batch(
            &what,
            &xs,
            n,
            |rows, out| qgemv_batch_at(cpu, kind, rows, &w, bias.as_deref(), out),
            |r, got| {
                for (j, (&g, e)) in got.iter().zip(reference(kind, &xs[r], &w, n)).enumerate() {
                    let e = e + bias.as_ref().map_or(0.0, |b| f64::from(b[j]));
                    // Integer dots are exact; only the f32 sum of k / 32 scaled blocks rounds.
                    let tol = 1e-5 * e.abs().max(1.0);
                    assert!(
                        (f64::from(g) - e).abs() <= tol,
                        "{what} row {r} col {j}: {g} vs {e}"
                    );
                }
            },
        );
    }

    #[test]
    fn every_level_matches_the_exact_product() {
        for cpu in levels() {
            for kind in [BlockKind::Q8_0, BlockKind::Q4_0] {
                for &(k, n) in &[(32, 1), (32, 3), (64, 5), (96, 7), (320, 9)] {
                    for batch in 1..=9 {
                        check(cpu, kind, k, n, batch);
                    }
                }
                for batch in [1, 2, 5] {
                    check(cpu, kind, 896, 301, batch);
                    check(cpu, kind, 256, 1023, batch);
                }
            }
        }
    }

    /// The row-length check names the mismatch rather than reading past a row.
    #[test]
    #[should_panic(expected = "not all of 1 blocks")]
    fn rows_of_different_lengths_are_refused() {
        let xs = [QuantRow::new(&[0.5; 32]), QuantRow::new(&[0.5; 64])];
        let mut out = [0.0; 2];
        qgemv_batch(BlockKind::Q8_0, &xs, &[0; 34], None, &mut out);
    }

    #[test]
    fn dequantised_blocks_match_the_block_formula() {
        for kind in [BlockKind::Q8_0, BlockKind::Q4_0] {
            let w = blocks(kind, 4099, 17);
            let got = dequantize_par(kind, &w);
            assert_eq!(got.len(), 4099 * BLOCK);
            for (b, block) in w.chunks_exact(kind.block_bytes()).enumerate() {
                let d = scale(block);
                for (i, &q) in unpack(kind, block).iter().enumerate() {
                    assert_eq!(got[b * BLOCK + i], d * f32::from(q), "{kind:?} block {b}");
                }
            }
        }
        // q4_0 nibbles: byte i holds weight i (low) and i + 16 (high), offset by 8.
        let mut block = vec![0u8; BlockKind::Q4_0.block_bytes()];
        block[..2].copy_from_slice(&half::f16::from_f32(1.0).to_bits().to_le_bytes());
        block[2] = 0xF0;
        let w = dequantize_par(BlockKind::Q4_0, &block);
        assert_eq!((w[0], w[16], w[1]), (-8.0, 7.0, -8.0));
    }

    #[test]
    fn activation_quantisation_is_within_half_a_step() {
        let x = values(96, 4);
        let q = QuantRow::new(&x);
        for (b, block) in x.chunks_exact(BLOCK).enumerate() {
            let d = q.scales[b];
            for (i, &v) in block.iter().enumerate() {
                let back = q.qs[b * BLOCK + i] as f32 * d;
                assert!((back - v).abs() <= 0.5 * d + 1e-7, "{v} -> {back}");
            }
        }
        let zeros = QuantRow::new(&[0.0; 32]);
        assert_eq!(zeros.scales, vec![0.0]);
        assert!(zeros.qs.iter().all(|&q| q == 0));
    }
}
