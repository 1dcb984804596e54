//! Matrix-vector products with GGML `q4_K` weights (decode steps), against an activation row
//! quantised to 8-bit blocks of 32 ([`QuantRow`]).
//!
//! A `q4_K` super-block holds 256 weights in 144 bytes: an f16 scale `d`, an f16 `dmin`, twelve
//! bytes packing eight 6-bit sub-block scales and minimums, and 128 bytes of 4-bit values. Chunk
//! `j` (0..4) of 32 bytes holds sub-block `2j` in its low nibbles and `2j + 1` in its high ones.
//! A weight is `d · sc · q − dmin · m` (GGML's `dequantize_row_q4_K`), so a sub-block's dot with
//! the activations is `dx · (d · sc · Σ q·xq − dmin · m · Σ xq)`: the nibbles are unsigned, so
//! `vpmaddubsw` takes them as they are, and `Σ xq` comes with the activation row.

use crate::batch::split_rows;
use crate::cpu::{Cpu, Feature};
use crate::qgemv::{same_blocks, QuantRow, BLOCK};

/// Weights per super-block.
pub const SUPER: usize = 256;
/// Bytes per super-block.
pub const SUPER_BYTES: usize = 144;

/// Sub-block `j`'s 6-bit scale and minimum (GGML's `get_scale_min_k4`).
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// The super-block's factors: `d · sc` and `dmin · m` for each of the eight sub-blocks.
fn factors(block: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    for j in 0..8 {
        let (sc, m) = scale_min(j, &block[4..16]);
        scales[j] = d * f32::from(sc);
        mins[j] = dmin * f32::from(m);
    }
    (scales, mins)
}

/// Computes `out = x · wᵀ (+ bias)` for `w` of `out.len()` rows of `q4_K` super-blocks,
/// splitting the rows over the current rayon pool, with the features `cpu` allows (the tests
/// run every level this CPU has): the one-row case of [`q4k_gemv_batch_at`].
///
/// # Panics
///
/// If `w` is not `out.len()` rows of `x.len() / 256` super-blocks, or `bias` is not
/// `out.len()` long.
pub fn q4k_gemv_at(cpu: Cpu, x: &QuantRow, w: &[u8], bias: Option<&[f32]>, out: &mut [f32]) {
    q4k_gemv_batch_at(cpu, std::slice::from_ref(x), w, bias, out);
}

/// [`q4k_gemv_at`] with the features of this CPU.
///
/// # Panics
///
/// As [`q4k_gemv_at`].
pub fn q4k_gemv(x: &QuantRow, w: &[u8], bias: Option<&[f32]>, out: &mut [f32]) {
    q4k_gemv_at(Cpu::detected(), x, w, bias, out);
}

/// Computes `out[r] = xs[r] · wᵀ (+ bias)` for the quantised rows `xs` and `w` of `n` rows of
/// `q4_K` super-blocks, into `xs.len()` rows of `n`, with the features of this CPU; see
/// [`q4k_gemv_batch_at`].
///
/// # Panics
///
/// As [`q4k_gemv_batch_at`].
pub fn q4k_gemv_batch(xs: &[QuantRow], w: &[u8], bias: Option<&[f32]>, out: &mut [f32]) {
    q4k_gemv_batch_at(Cpu::detected(), xs, w, bias, out);
}

/// [`q4k_gemv_batch`] with the features `cpu` allows. Every level with AVX2 runs the AVX2 code
/// (the dot has no VNNI form here); the portable level the plain one. A super-block's factors
/// and nibbles are unpacked once for up to four activation rows; each row of `out` is bitwise
/// what [`q4k_gemv_at`] gives for that row alone, whatever the other rows and the pool.
///
/// # Panics
///
/// If `xs` is empty or its rows differ in length, `w` is not `n` rows of their super-block
/// count, `out` not `xs.len()` rows of `n`, or `bias` not `n` long.
pub fn q4k_gemv_batch_at(
    cpu: Cpu,
    xs: &[QuantRow],
    w: &[u8],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let simd = cpu.has(Feature::Avx2);
    let row_bytes = same_blocks(xs) / (SUPER / BLOCK) * SUPER_BYTES;
    split_rows(xs.len(), row_bytes, w, bias, out, |w, t| {
        for (col, row) in t.chunks_exact_mut(xs.len()).zip(w.chunks_exact(row_bytes)) {
            dot_rows(simd, xs, row, col);
        }
    });
}

/// `col[r] = dot(xs[r], row)` for every activation row; `simd` says a detected [`Cpu`] holds
/// [`Feature::Avx2`].
fn dot_rows(simd: bool, xs: &[QuantRow], row: &[u8], col: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        for (xs, col) in xs.chunks(4).zip(col.chunks_mut(4)) {
            // SAFETY: `simd` is only set when the caller's `Cpu` holds AVX2, FMA and F16C;
            // `row` holds one super-block per 8 activation blocks of each row, and `col` one
            // value per row.
            unsafe {
                match xs.len() {
                    1 => avx2::dot::<1>(xs, row, col),
                    2 => avx2::dot::<2>(xs, row, col),
                    3 => avx2::dot::<3>(xs, row, col),
                    _ => avx2::dot::<4>(xs, row, col),
                }
            }
        }
        return;
    }
    let _ = simd;
    for (o, x) in col.iter_mut().zip(xs) {
        *o = dot_portable(x, row);
    }
}

fn dot_portable(x: &QuantRow, row: &[u8]) -> f32 {
    let mut total = 0.0f32;
    for (s, block) in row.chunks_exact(SUPER_BYTES).enumerate() {
        let (scales, mins) = factors(block);
        for j in 0..4 {
            let qs = &block[16 + 32 * j..16 + 32 * (j + 1)];
            for (half, shift) in [(0, 0), (1, 4)] {
                let sub = 2 * j + half;
                let b = s * 8 + sub;
                let xq = &x.qs[b * BLOCK..(b + 1) * BLOCK];
                let isum: i32 = qs
                    .iter()
                    .zip(xq)
                    .map(|(&q, &v)| i32::from((q >> shift) & 0xF) * i32::from(v))
                    .sum();
                total += x.scales[b] * (scales[sub] * isum as f32 - mins[sub] * x.sums[b] as f32);
            }
        }
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{factors, QuantRow, BLOCK, SUPER, SUPER_BYTES};
    use crate::gemv::hsum;

    /// `col[c] = dot(xs[c], row)` for `R` activation rows: per element a low and a high
    /// 8-lane chain and a scalar sum of the minimums' terms, in super-block order.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `xs` and `col` hold `R` rows, and `row` one
    /// super-block per eight activation blocks of each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot<const R: usize>(xs: &[QuantRow], row: &[u8], col: &mut [f32]) {
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc_lo = [_mm256_setzero_ps(); R];
        let mut acc_hi = [_mm256_setzero_ps(); R];
        let mut mins_total = [0.0f32; R];
        // The rows' values, scales and block sums through pointers, so the loop carries no
        // bound checks (every row holds 8 blocks per super-block of `row`).
        debug_assert!(
            xs.len() == R
                && xs
                    .iter()
                    .all(|x| x.qs.len() * SUPER_BYTES >= row.len() * SUPER)
        );
        let qs: [*const i8; R] = std::array::from_fn(|c| xs[c].qs.as_ptr());
        let ds: [*const f32; R] = std::array::from_fn(|c| xs[c].scales.as_ptr());
        let sums: [*const i32; R] = std::array::from_fn(|c| xs[c].sums.as_ptr());
        for (s, block) in row.chunks_exact(SUPER_BYTES).enumerate() {
            let (scales, mins) = factors(block);
            for j in 0..4 {
                let (b0, b1) = (s * 8 + 2 * j, s * 8 + 2 * j + 1);
                // SAFETY: the chunk's 32 bytes lie inside the super-block, and activation
                // blocks b0, b1 inside each row's `qs`, `scales` and `sums` (8 per
                // super-block).
                unsafe {
                    let bytes = _mm256_loadu_si256(block.as_ptr().add(16 + 32 * j).cast());
                    let q_lo = _mm256_and_si256(bytes, low);
                    let q_hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), low);
                    for c in 0..R {
                        let x0 = _mm256_loadu_si256(qs[c].add(b0 * BLOCK).cast());
                        let x1 = _mm256_loadu_si256(qs[c].add(b1 * BLOCK).cast());
                        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q_lo, x0), ones);
                        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q_hi, x1), ones);
                        let (d0, d1) = (*ds[c].add(b0), *ds[c].add(b1));
                        let f0 = _mm256_set1_ps(scales[2 * j] * d0);
                        let f1 = _mm256_set1_ps(scales[2 * j + 1] * d1);
                        acc_lo[c] = _mm256_fmadd_ps(f0, _mm256_cvtepi32_ps(p0), acc_lo[c]);
                        acc_hi[c] = _mm256_fmadd_ps(f1, _mm256_cvtepi32_ps(p1), acc_hi[c]);
                        mins_total[c] += mins[2 * j] * d0 * *sums[c].add(b0) as f32
                            + mins[2 * j + 1] * d1 * *sums[c].add(b1) as f32;
                    }
                }
            }
        }
        for c in 0..R {
            col[c] = hsum(_mm256_add_ps(acc_lo[c], acc_hi[c])) - mins_total[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::{check_q4k_against, values};

    /// Random super-blocks: every byte pattern of the scales and nibbles is valid; `d` and
    /// `dmin` kept finite and small.
    fn blocks(n_blocks: usize, seed: u64) -> Vec<u8> {
        let raw = values(n_blocks * SUPER_BYTES, seed);
        let mut out: Vec<u8> = raw.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
        for (b, block) in out.chunks_exact_mut(SUPER_BYTES).enumerate() {
            let d = half::f16::from_f32(0.001 + 0.0001 * (b % 5) as f32).to_bits();
            let dmin = half::f16::from_f32(0.002 + 0.0001 * (b % 3) as f32).to_bits();
            block[..2].copy_from_slice(&d.to_le_bytes());
            block[2..4].copy_from_slice(&dmin.to_le_bytes());
        }
        out
    }

    /// A super-block's 256 weights by GGML's `dequantize_row_q4_K`, in f64.
    fn dequantize(block: &[u8]) -> Vec<f64> {
        let (d, dmin) = (f64::from(f16_at(block, 0)), f64::from(f16_at(block, 2)));
        let mut w = Vec::with_capacity(SUPER);
        for j in 0..4 {
            let qs = &block[16 + 32 * j..16 + 32 * (j + 1)];
            for (sub, shift) in [(2 * j, 0), (2 * j + 1, 4)] {
                let (sc, m) = scale_min(sub, &block[4..16]);
                let (sc, m) = (d * f64::from(sc), dmin * f64::from(m));
                w.extend(qs.iter().map(|&q| sc * f64::from((q >> shift) & 0xF) - m));
            }
        }
        w
    }

    /// The products at every level equal the f64 product of the quantised activations and the
    /// dequantised weights, on 1 to 3 threads. (crates/llm checks this reading of the layout
    /// against candle's own `q4_K` dequantisation.)
    #[test]
    fn every_level_matches_the_dequantised_product() {
        for &(n, k) in &[(1, 256), (3, 512), (37, 768), (301, 1024)] {
            let w = blocks(n * k / SUPER, 3 + n as u64);
            let deq: Vec<f64> = w.chunks_exact(SUPER_BYTES).flat_map(dequantize).collect();
            check_q4k_against(&w, &deq, n, k);
        }
    }
}
