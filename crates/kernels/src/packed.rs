//! Half-precision (bf16, f16) weight matrices packed in panels of sixteen output columns, for
//! the decode steps' products with one activation row or a stack of them (one new position of
//! each of several sequences).
//!
//! A checkpoint stores a weight `(n, k)` row by row: an output's weights are contiguous. The
//! dot-product kernels of [`crate::gemv`] walk such rows, and a stack of activation rows must
//! then either reload each activation vector for every weight row or hold a few rows' partial
//! sums in registers: on AVX2 that is 2 weight rows x 2 activation rows (the sixteen vector
//! registers), so the activations stream from the L2 cache as fast as the weights from memory,
//! and a batch of 8 reached about half of the FMA peak. Packed here, position `p` of a panel
//! holds the sixteen weights `w[16 q + c][p]` next to each other (a panel is one sequential
//! stream of `k` × 32 bytes), and a kernel keeps the sums of sixteen outputs for up to six
//! activation rows in registers: each step loads one panel position (widened to two vectors of
//! eight f32), broadcasts one activation value per row and does two FMAs per row. This is the
//! register tile of the GEMM micro-kernels (the `gemm` crate, BLIS), with the weights packed
//! once at load instead of at every product.
//!
//! Each output is one FMA chain over the positions in order, `s = fma(x[p], w[p], s)` from
//! `p = 0` to `k - 1`, then `+ bias`: the same operations whatever the batch, whatever the
//! other rows and however many threads run, so a row of a batch is bitwise that row alone.
//! The widening is exact (a bf16 is the upper half of an f32), so the result is the f32 product
//! on the upcast weights up to summation order.
//!
//! Within a position the sixteen bf16 weights are stored in the order `c0, c8, c1, c9, …, c7,
//! c15`: shifting each 32-bit lane left by 16 bits gives columns 0-7 as f32, masking off its low
//! half gives columns 8-15 (two instructions, no shuffle). f16 weights are stored in column
//! order and widened by `vcvtph2ps`, eight at a time.
//!
//! Measured on a 2-core Zen 3 (AVX2, FMA peak 205 GFLOP/s) over the weights of a whole
//! Qwen2-0.5B-shaped decoder (`cargo run --release -p auris-kernels --example batch_bench --
//! packed 1,8` against `-- bf16 1,8`, two runs each): one row 34-35 ms a step against 40-41 for
//! the row-major kernel of [`crate::gemv`] (28-29 GB/s, the machine's read bandwidth), a batch
//! of 8 54-56 ms against 92 (141-147 GFLOP/s, 69-72 % of the FMA peak, against 42 %). f16
//! (`-- packed-f16 1,8` against `-- f16 1,8`): one row 38-42 ms against 48, eight 65-71 ms
//! against 114-125.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::batch::units_per_task;
use crate::cpu::{Cpu, Feature};
use crate::halfgemv::HalfKind;

/// Output columns per panel.
pub const PANEL: usize = 16;

/// Panels per task are a multiple of this, so that one activation row walks four panels at a
/// time.
const PANEL_GROUP: usize = 4;

/// The sixteen weights of one panel at one position, aligned so that a position never
/// straddles two cache lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(32))]
struct Position([u16; PANEL]);

/// Where column `c` of a panel sits within a [`Position`] of weights of `kind`.
fn slot(kind: HalfKind, c: usize) -> usize {
    match kind {
        HalfKind::Bf16 if c < 8 => 2 * c,
        HalfKind::Bf16 => 2 * (c - 8) + 1,
        HalfKind::F16 => c,
    }
}

/// `bits` of `kind` as f32, exactly.
fn widen_bits(kind: HalfKind, bits: u16) -> f32 {
    match kind {
        HalfKind::Bf16 => f32::from_bits(u32::from(bits) << 16),
        HalfKind::F16 => f16::from_bits(bits).to_f32(),
    }
}

/// A bf16 or f16 weight matrix `(n, k)` packed in panels of [`PANEL`] output columns (see the
/// module docs). The last panel is padded with zero weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedHalf {
    data: Vec<Position>,
    n: usize,
    k: usize,
    kind: HalfKind,
}

impl PackedHalf {
    /// Packs the bf16 weights `w`, `n` rows of `k`, on the rayon pool.
    ///
    /// # Panics
    /// If `w.len() != n * k`.
    pub fn pack_bf16(w: &[bf16], n: usize, k: usize) -> Self {
        Self::pack(HalfKind::Bf16, w.reinterpret_cast(), n, k)
    }

    /// Packs `w`, `n` rows of `k` bit patterns of `kind`, on the rayon pool.
    ///
    /// # Panics
    /// If `w.len() != n * k`.
    pub fn pack(kind: HalfKind, w: &[u16], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed: the weight is not ({n}, {k})");
        let len = n.div_ceil(PANEL) * k;
        let mut data: Vec<Position> = Vec::with_capacity(len);
        if k > 0 {
            // Every position is written once, by the thread that packs its panel: no pass
            // zeroing the memory first (a 7B's 15 GB of weights), and the pages are touched by
            // both threads.
            data.spare_capacity_mut()[..len]
                .par_chunks_mut(k)
                .enumerate()
                .for_each(|(q, panel)| {
                    let rows: Vec<&[u16]> = (q * PANEL..n.min((q + 1) * PANEL))
                        .map(|j| &w[j * k..][..k])
                        .collect();
                    for (p, dst) in panel.iter_mut().enumerate() {
                        let mut pos = [0u16; PANEL];
                        for (c, row) in rows.iter().enumerate() {
                            pos[slot(kind, c)] = row[p];
                        }
                        dst.write(Position(pos));
                    }
                });
        }
        // SAFETY: the loop above wrote each of the first `len` elements (every panel's `k`
        // positions; with k == 0 there are none), and `len` is within the capacity.
        unsafe { data.set_len(len) };
        Self { data, n, k, kind }
    }

    /// The encoding of the weights.
    pub fn kind(&self) -> HalfKind {
        self.kind
    }

    /// Output columns (weight rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input values (weights per row).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The bit patterns of weight row `j` (output column `j`), or `None` past the last.
    pub fn row(&self, j: usize) -> Option<Vec<u16>> {
        (j < self.n).then(|| {
            let (q, s) = (j / PANEL, slot(self.kind, j % PANEL));
            self.data[q * self.k..][..self.k]
                .iter()
                .map(|pos| pos.0[s])
                .collect()
        })
    }

    /// The bit patterns of weight rows `rows` as one row-major `(rows.len(), k)` matrix.
    ///
    /// # Panics
    /// If the range ends past the last row.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Vec<u16> {
        assert!(rows.end <= self.n, "packed: rows past {}", self.n);
        rows.flat_map(|j| self.row(j).unwrap_or_default()).collect()
    }

    /// The columns of panels `panels` widened to f32 as `(k, 16 * panels.len())` row-major: the
    /// transposed weight `wᵀ` of those columns, as a GEMM reads its right operand. Padding
    /// columns of the last panel are zero.
    ///
    /// # Panics
    /// If `out` is not `k * 16 * panels.len()` long or the range ends past the last panel.
    pub fn widen_transposed(&self, panels: std::ops::Range<usize>, out: &mut [f32]) {
        let (k, cols) = (self.k, PANEL * panels.len());
        assert_eq!(out.len(), k * cols, "packed: output is not ({k}, {cols})");
        assert!(
            panels.end * k <= self.data.len(),
            "packed: panels past the last"
        );
        if k == 0 || cols == 0 {
            return;
        }
        let cpu = Cpu::detected();
        out.par_chunks_mut(cols)
            .zip(0..k)
            .with_min_len(64)
            .for_each(|(line, p)| {
                for (q, dst) in panels.clone().zip(line.chunks_exact_mut(PANEL)) {
                    widen_position(cpu, self.kind, &self.data[q * k + p], dst);
                }
            });
    }
}

/// The sixteen weights of `kind` at `pos` widened to f32 into `dst`, in column order.
fn widen_position(cpu: Cpu, kind: HalfKind, pos: &Position, dst: &mut [f32]) {
    assert_eq!(dst.len(), PANEL);
    #[cfg(target_arch = "x86_64")]
    if cpu.has(Feature::Avx2) {
        // SAFETY: the `Cpu` holds AVX2, FMA and F16C (a `Cpu` only holds what was detected);
        // `pos` is a position and `dst` sixteen floats.
        unsafe {
            match kind {
                HalfKind::Bf16 => x86::widen_into::<false>(pos, dst),
                HalfKind::F16 => x86::widen_into::<true>(pos, dst),
            }
        }
        return;
    }
    let _ = cpu;
    for (c, d) in dst.iter_mut().enumerate() {
        *d = widen_bits(kind, pos.0[slot(kind, c)]);
    }
}

/// Computes `out[r] = xs[r] · widen(w)ᵀ (+ bias)` for `batch` rows `xs` of `w.k()` values, into
/// `batch` rows of `w.n()`, with the features of this CPU; see [`packed_batch_at`].
///
/// # Panics
/// As [`packed_batch_at`].
pub fn packed_batch(
    xs: &[f32],
    batch: usize,
    w: &PackedHalf,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    packed_batch_at(Cpu::detected(), xs, batch, w, bias, out);
}

/// Computes `out[r] = xs[r] · widen(w)ᵀ (+ bias)` with the features `cpu` allows (the tests
/// run every level this CPU has): AVX2 + FMA, or portable code (a multiply and an add per
/// product instead of the FMA, so its bits differ from the AVX2 level's). The panels are split
/// over the rayon pool, never the rows.
///
/// # Panics
/// If `batch == 0`, `xs` is not `batch` rows of `w.k()`, `out` not `batch` rows of `w.n()`, or
/// `bias` not `w.n()` long.
pub fn packed_batch_at(
    cpu: Cpu,
    xs: &[f32],
    batch: usize,
    w: &PackedHalf,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    assert!(batch > 0, "packed: no rows");
    assert_eq!(
        xs.len(),
        batch * k,
        "packed: inputs are not {batch} rows of {k}"
    );
    assert_eq!(
        out.len(),
        batch * n,
        "packed: outputs are not {batch} rows of {n}"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "packed: bias length");
    }
    let panels = n.div_ceil(PANEL);
    if panels == 0 {
        return;
    }
    let product = Product {
        xs,
        batch,
        w,
        bias,
        dst: Out {
            ptr: out.as_mut_ptr(),
            n,
            batch,
        },
    };
    let task = |from: usize, to: usize| {
        #[cfg(target_arch = "x86_64")]
        if cpu.has(Feature::Avx2) {
            // SAFETY: the `Cpu` holds AVX2, FMA and F16C (a `Cpu` only holds what was
            // detected); `xs` is `batch` rows of k, `bias` n long, `from..to` panels of `w`
            // and `dst` the whole output, of which this task writes only those panels'
            // columns (no other task does).
            unsafe { x86::panels(product, from, to) };
            return;
        }
        let _ = cpu;
        // SAFETY: as above, for the portable code.
        unsafe { panels_portable(product, from, to) };
    };
    let Some(per) = units_per_task(panels, n * k, PANEL_GROUP) else {
        task(0, panels);
        return;
    };
    (0..panels.div_ceil(per))
        .into_par_iter()
        .for_each(|t| task(t * per, ((t + 1) * per).min(panels)));
}

/// One product's operands, shared by its tasks: `batch` rows `xs` of `w.k()`, the bias, and
/// the output.
#[derive(Clone, Copy)]
struct Product<'a> {
    xs: &'a [f32],
    batch: usize,
    w: &'a PackedHalf,
    bias: Option<&'a [f32]>,
    dst: Out,
}

/// The output rows, shared by the tasks of one product: each writes the columns of its own
/// panels only.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    n: usize,
    batch: usize,
}

// SAFETY: the tasks of a product write disjoint columns through it, and the product waits for
// them all before the output's borrow ends.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    /// Writes `sums[r][c] (+ bias)` to columns `16 q + c` (those below `n`) of rows `r0 + r`.
    ///
    /// # Safety
    /// `r0 + sums.len() <= batch`, `q` is a panel of the output, and no other thread writes
    /// these elements meanwhile.
    unsafe fn store(&self, r0: usize, q: usize, sums: &[[f32; PANEL]], bias: Option<&[f32]>) {
        let c0 = q * PANEL;
        let cols = PANEL.min(self.n - c0);
        for (r, sums) in sums.iter().enumerate() {
            debug_assert!(r0 + r < self.batch);
            for (c, &s) in sums[..cols].iter().enumerate() {
                let v = match bias {
                    Some(b) => s + b[c0 + c],
                    None => s,
                };
                // SAFETY: row r0 + r < batch and column c0 + c < n are in the output of batch
                // rows of n; no other thread writes it (the caller's promise).
                unsafe { *self.ptr.add((r0 + r) * self.n + c0 + c) = v };
            }
        }
    }
}

/// Panels `from..to` of the product, portable: per panel and row, sixteen sums in order.
///
/// # Safety
/// As [`x86::panels`], the CPU features aside.
unsafe fn panels_portable(product: Product, from: usize, to: usize) {
    let Product {
        xs,
        batch,
        w,
        bias,
        dst,
    } = product;
    let k = w.k;
    for q in from..to {
        let panel = &w.data[q * k..][..k];
        for (r, x) in xs.chunks_exact(k.max(1)).take(batch).enumerate() {
            let mut s = [0.0f32; PANEL];
            for (pos, &xv) in panel.iter().zip(x) {
                for (c, s) in s.iter_mut().enumerate() {
                    *s += xv * widen_bits(w.kind, pos.0[slot(w.kind, c)]);
                }
            }
            // SAFETY: r < batch, q a panel of the output, written by this task only.
            unsafe { dst.store(r, q, &[s], bias) };
        }
        if k == 0 {
            for r in 0..batch {
                // SAFETY: as above.
                unsafe { dst.store(r, q, &[[0.0; PANEL]], bias) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{HalfKind, Position, Product, PANEL, PANEL_GROUP};

    /// The sixteen weights at `p`, widened: columns 0-7 and 8-15; f16 with `F16`, else bf16.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C; `p` points to a [`Position`].
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn widen<const F16: bool>(p: *const Position) -> (__m256, __m256) {
        if F16 {
            // SAFETY: `p` is a readable, 32-byte aligned position of sixteen f16 (the
            // caller's promise): two 16-byte halves.
            let (lo, hi) = unsafe {
                (
                    _mm_load_si128(p.cast()),
                    _mm_load_si128(p.cast::<__m128i>().add(1)),
                )
            };
            return (_mm256_cvtph_ps(lo), _mm256_cvtph_ps(hi));
        }
        // SAFETY: `p` is a readable, 32-byte aligned position (the caller's promise).
        let v = unsafe { _mm256_load_si256(p.cast()) };
        let lo = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
        let hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536)));
        (lo, hi)
    }

    /// [`widen`] stored into `dst`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C; `dst` holds sixteen floats.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn widen_into<const F16: bool>(pos: &Position, dst: &mut [f32]) {
        debug_assert_eq!(dst.len(), PANEL);
        // SAFETY: `pos` is a position; `dst` holds two vectors of eight floats.
        unsafe {
            let (lo, hi) = widen::<F16>(pos);
            _mm256_storeu_ps(dst.as_mut_ptr(), lo);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), hi);
        }
    }

    /// The sums of `R` activation rows `x` (rows `k` apart) with `P` consecutive panels from
    /// `w` (`k` positions each), every position in order; with `ahead`, prefetching the panels
    /// at the same offsets from there.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `x` holds `R` rows of `k` values and `w` `P` panels
    /// of `k` positions.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<const R: usize, const P: usize, const F16: bool>(
        x: *const f32,
        k: usize,
        w: *const Position,
        ahead: Option<*const Position>,
    ) -> [[[f32; PANEL]; P]; R] {
        let mut acc = [[[_mm256_setzero_ps(); 2]; P]; R];
        for p in 0..k {
            if let Some(a) = ahead {
                if p % 2 == 0 {
                    for q in 0..P {
                        // A prefetch reads nothing and cannot fault, whatever the address.
                        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(q * k + p).cast());
                    }
                }
            }
            for q in 0..P {
                // SAFETY: panel q < P, position p < k (the caller's promise).
                let (lo, hi) = unsafe { widen::<F16>(w.add(q * k + p)) };
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: row r < R, position p < k.
                    let b = unsafe { _mm256_broadcast_ss(&*x.add(r * k + p)) };
                    acc[q][0] = _mm256_fmadd_ps(b, lo, acc[q][0]);
                    acc[q][1] = _mm256_fmadd_ps(b, hi, acc[q][1]);
                }
            }
        }
        let mut sums = [[[0.0f32; PANEL]; P]; R];
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            for (s, a) in sums.iter_mut().zip(acc) {
                // SAFETY: each half of `s` holds eight floats.
                unsafe {
                    _mm256_storeu_ps(s.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(s.as_mut_ptr().add(8), a[1]);
                }
            }
        }
        sums
    }

    /// [`tile`] for rows `r0..r0 + R` and panels `q..q + P`, stored into `dst`.
    ///
    /// # Safety
    /// As [`tile`] and [`Out::store`].
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run<const R: usize, const P: usize, const F16: bool>(
        product: Product,
        r0: usize,
        q: usize,
        ahead: Option<usize>,
    ) {
        let Product {
            xs, w, bias, dst, ..
        } = product;
        let k = w.k;
        let base = w.data.as_ptr();
        // SAFETY: rows r0..r0 + R of `xs` and panels q..q + P exist (the caller's promise).
        let sums = unsafe {
            tile::<R, P, F16>(
                xs.as_ptr().add(r0 * k),
                k,
                base.add(q * k),
                ahead.map(|a| base.wrapping_add(a * k)),
            )
        };
        for (i, _) in sums[0].iter().enumerate() {
            let rows: [[f32; PANEL]; R] = std::array::from_fn(|r| sums[r][i]);
            // SAFETY: forwarded.
            unsafe { dst.store(r0, q + i, &rows, bias) };
        }
    }

    /// Panels `from..to` of `out = xs · widen(w)ᵀ (+ bias)` for `batch` rows `xs`.
    ///
    /// One row walks four panels at a time (eight chains, enough to hide the FMA latency),
    /// two rows two panels; three to six rows one panel, with two FMAs per row and position;
    /// more rows in groups of at most four, each group walking a panel while the others find
    /// it in the cache (a batch of 8 as 4 + 4 ran about 10 % faster than as 6 + 2 on a Zen 3).
    /// The weights are prefetched two panels (one row: two groups of four) ahead.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; in `product`, `xs` is `batch` rows of `w.k()`,
    /// `bias` `w.n()` long and `dst` the output of `batch` rows of `w.n()`, whose columns of
    /// panels `from..to` (`from <= to <=` the panels of `w`) no other thread writes meanwhile.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn panels(product: Product, from: usize, to: usize) {
        // SAFETY: forwarded.
        unsafe {
            match product.w.kind {
                HalfKind::Bf16 => panels_of::<false>(product, from, to),
                HalfKind::F16 => panels_of::<true>(product, from, to),
            }
        }
    }

    /// [`panels`] for weights of one kind: f16 with `F16`, else bf16.
    ///
    /// # Safety
    /// As [`panels`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panels_of<const F16: bool>(product: Product, from: usize, to: usize) {
        let p = product;
        let batch = p.batch;
        let all = p.w.n.div_ceil(PANEL);
        let ahead = |q: usize, by: usize| Some((q + by).min(all));
        // SAFETY (every call below): rows r0..r0 + R < batch and panels q..q + P <= to are in
        // range; the rest is the caller's promise.
        match batch {
            1 | 2 => {
                let step = if batch == 1 { PANEL_GROUP } else { 2 };
                let mut q = from;
                while q < to {
                    let by = 2 * step;
                    unsafe {
                        match (batch, to - q >= step) {
                            (1, true) => run::<1, PANEL_GROUP, F16>(p, 0, q, ahead(q, by)),
                            (1, false) => run::<1, 1, F16>(p, 0, q, ahead(q, by)),
                            (_, true) => run::<2, 2, F16>(p, 0, q, ahead(q, by)),
                            (_, false) => run::<2, 1, F16>(p, 0, q, ahead(q, by)),
                        }
                    }
                    q += if to - q >= step { step } else { 1 };
                }
            }
            3..=6 => {
                for q in from..to {
                    let a = ahead(q, 2);
                    unsafe {
                        match batch {
                            3 => run::<3, 1, F16>(p, 0, q, a),
                            4 => run::<4, 1, F16>(p, 0, q, a),
                            5 => run::<5, 1, F16>(p, 0, q, a),
                            _ => run::<6, 1, F16>(p, 0, q, a),
                        }
                    }
                }
            }
            _ => {
                let count = batch.div_ceil(4);
                for q in from..to {
                    let mut r0 = 0;
                    for g in 0..count {
                        let size = (batch - r0) / (count - g);
                        // The later groups find the panel in the cache.
                        let a = if g == 0 { ahead(q, 2) } else { None };
                        unsafe {
                            match size {
                                1 => run::<1, 1, F16>(p, r0, q, a),
                                2 => run::<2, 1, F16>(p, r0, q, a),
                                3 => run::<3, 1, F16>(p, r0, q, a),
                                _ => run::<4, 1, F16>(p, r0, q, a),
                            }
                        }
                        r0 += size;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::levels;
    use crate::gemv::tests::check_batch;
    use crate::test_values::{assert_f32_sum_close, f64_product, on_threads, values};

    const KINDS: [HalfKind; 2] = [HalfKind::Bf16, HalfKind::F16];

    /// `len` bit patterns of `kind` (values in [-1, 1)).
    fn halves(kind: HalfKind, len: usize, seed: u64) -> Vec<u16> {
        values(len, seed)
            .into_iter()
            .map(|v| match kind {
                HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
                HalfKind::F16 => f16::from_f32(v).to_bits(),
            })
            .collect()
    }

    fn wide(kind: HalfKind, w: &[u16]) -> Vec<f32> {
        w.iter().map(|&b| widen_bits(kind, b)).collect()
    }

    fn check(cpu: Cpu, kind: HalfKind, k: usize, n: usize, batch: usize, with_bias: bool) {
        let xs: Vec<Vec<f32>> = (0..batch)
            .map(|r| values(k, 1 + (k + 7 * r) as u64))
            .collect();
        let w = halves(kind, n * k, 2 + n as u64);
        let wide = wide(kind, &w);
        let packed = PackedHalf::pack(kind, &w, n, k);
        let bias = with_bias.then(|| values(n, 3));
        let what = format!("{cpu:?} {kind:?} k={k} n={n}");
        check_batch(
            &what,
            &xs,
            n,
            |rows, out| {
                let flat: Vec<f32> = rows.concat();
                packed_batch_at(cpu, &flat, rows.len(), &packed, bias.as_deref(), out);
            },
            |r, got| {
                let want = f64_product(&xs[r], &wide, bias.as_deref());
                assert_f32_sum_close(got, &want, k, &what);
            },
        );
    }

    #[test]
    fn every_level_matches_the_f64_reference_on_odd_sizes() {
        for cpu in levels() {
            for kind in KINDS {
                for &(k, n) in &[(1, 1), (7, 3), (8, 4), (9, 5), (33, 17), (64, 13), (5, 70)] {
                    for batch in 1..=9 {
                        check(cpu, kind, k, n, batch, batch % 2 == 0);
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_matches_when_split_over_threads() {
        // Large enough to take the parallel path, with panels not a multiple of the tasks.
        for cpu in levels() {
            for kind in KINDS {
                for batch in [1, 2, 3, 5, 7, 8] {
                    check(cpu, kind, 257, 1023, batch, true);
                }
                check(cpu, kind, 896, 301, 8, false);
                check(cpu, kind, 2000, 45, 6, true);
            }
        }
    }

    #[test]
    fn the_avx2_level_is_one_fma_chain_per_output() {
        // Bitwise the chain the module docs promise, so a row's bits are fixed by its inputs.
        let cpu = Cpu::detected();
        if !cpu.has(Feature::Avx2) {
            return;
        }
        let (k, n) = (37, 21);
        for kind in KINDS {
            let w = halves(kind, n * k, 5);
            let xs = values(3 * k, 6);
            let mut out = vec![0.0; 3 * n];
            packed_batch_at(
                cpu,
                &xs,
                3,
                &PackedHalf::pack(kind, &w, n, k),
                None,
                &mut out,
            );
            for (x, got) in xs.chunks_exact(k).zip(out.chunks_exact(n)) {
                for (row, &g) in w.chunks_exact(k).zip(got) {
                    let s = x
                        .iter()
                        .zip(row)
                        .fold(0.0f32, |s, (a, &b)| a.mul_add(widen_bits(kind, b), s));
                    assert_eq!(s.to_bits(), g.to_bits(), "{kind:?}");
                }
            }
        }
    }

    #[test]
    fn rows_and_the_transposed_widening_give_back_the_weights() {
        let (k, n) = (11, 37);
        for kind in KINDS {
            let w = halves(kind, n * k, 9);
            let packed = on_threads(2, || PackedHalf::pack(kind, &w, n, k));
            assert_eq!((packed.kind(), packed.n(), packed.k()), (kind, n, k));
            assert_eq!(packed.rows(0..n), w);
            assert_eq!(packed.row(n), None);
            assert_eq!(packed.row(20), Some(w[20 * k..21 * k].to_vec()));
            let mut t = vec![f32::NAN; k * 2 * PANEL];
            packed.widen_transposed(1..3, &mut t);
            for p in 0..k {
                for c in 0..2 * PANEL {
                    let j = PANEL + c;
                    let want = if j < n {
                        widen_bits(kind, w[j * k + p])
                    } else {
                        0.0
                    };
                    assert_eq!(t[p * 2 * PANEL + c], want, "{kind:?} p {p} column {j}");
                }
            }
        }
        let w: Vec<bf16> = (0..6).map(|i| bf16::from_f32(i as f32)).collect();
        assert_eq!(
            PackedHalf::pack_bf16(&w, 2, 3).rows(1..2),
            [0x4040, 0x4080, 0x40a0]
        );
    }

    #[test]
    fn every_level_widens_a_position_in_column_order() {
        for kind in KINDS {
            let w = halves(kind, PANEL * 3, 14);
            let packed = PackedHalf::pack(kind, &w, PANEL, 3);
            for cpu in levels() {
                for p in 0..3 {
                    let mut got = [f32::NAN; PANEL];
                    widen_position(cpu, kind, &packed.data[p], &mut got);
                    let want: Vec<f32> =
                        (0..PANEL).map(|c| widen_bits(kind, w[c * 3 + p])).collect();
                    assert_eq!(got.to_vec(), want, "{cpu:?} {kind:?} position {p}");
                }
            }
        }
    }

    #[test]
    fn empty_shapes_are_products_of_nothing() {
        for cpu in levels() {
            for kind in KINDS {
                let packed = PackedHalf::pack(kind, &[], 3, 0);
                let mut out = vec![f32::NAN; 6];
                packed_batch_at(cpu, &[], 2, &packed, Some(&[1.0, 2.0, 3.0]), &mut out);
                assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
                let packed = PackedHalf::pack(kind, &[], 0, 4);
                packed_batch_at(cpu, &[0.0; 4], 1, &packed, None, &mut []);
            }
        }
    }
}
