//! Multi-head attention fused on the CPU, for f32 inputs of one sequence.
//!
//! The unfused path (`softmax(q k^T * scale + mask) v` through candle) writes the logits and
//! the probabilities of every head as `(heads, queries, keys)` tensors (2 x 108 MB per layer
//! for a 30 s window of a 12-head encoder, page-faulted and zeroed by the kernel on first touch)
//! and its softmax calls the C library's scalar `expf` per element. Here the work is split into
//! tasks of one head and a block of queries ([`Attention::query_block`]): the block's logits (`rows x keys`, a few
//! hundred KB that stay in the core's cache) come from one `gemm` call, the softmax runs in place
//! with a vectorised `exp` ([`crate::softmax`]), the block's probabilities are multiplied by the
//! values straight into the output rows of that head, and, when asked, their column sums over the
//! first queries are accumulated: the attention each key receives, which the encoder's pruning
//! scores are made of, in the same pass and without the probability matrix ever existing whole.
//!
//! Keys a query may not see ([`Visible`]) are left out of the products or get probability 0:
//! exactly what the unfused softmax gives them (`exp(-inf) = 0`), so the results are the same
//! up to the summation order.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::cpu::Cpu;
use crate::round::{round_bf16_at, Compute};
use crate::softmax;

/// Fewest and most queries per task ([`Attention::query_block`]).
pub const QUERY_BLOCK: (usize, usize) = (64, 256);

/// Bytes of logits one task may hold: about a core's L2 cache.
const LOGITS_BUDGET: usize = 2 << 20;

/// Where element `(row, head, i)` of a `(rows, heads, head_dim)` operand is in its slice:
/// `offset + row * row_stride + head * head_stride + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Index of element `(0, 0, 0)`.
    pub offset: usize,
    /// Distance between consecutive rows (queries or keys).
    pub row_stride: usize,
    /// Distance between consecutive heads.
    pub head_stride: usize,
}

impl Layout {
    /// Heads side by side in each row, `(rows, heads * head_dim)` row-major: the layout of a
    /// projection's output.
    pub fn rows(heads: usize, head_dim: usize) -> Self {
        Self {
            offset: 0,
            row_stride: heads * head_dim,
            head_stride: head_dim,
        }
    }

    fn at(&self, row: usize, head: usize) -> usize {
        self.offset + row * self.row_stride + head * self.head_stride
    }
}

/// Which keys each query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible {
    /// Every query sees keys `0..n` (an encoder window whose keys from `n` on are padding).
    Prefix(usize),
    /// Query `i` is at position `start + i` and sees keys `0..=start + i` (a decoder with
    /// `start` positions in its cache); with a window `w` only the last `w` of them
    /// (transformers' sliding window: key `k` is visible iff `q - w < k <= q`).
    Causal {
        /// Position of the first query.
        start: usize,
        /// Sliding window, if any.
        window: Option<usize>,
    },
}

impl Visible {
    /// The keys `lo..hi` query `i` sees.
    fn range(self, i: usize) -> (usize, usize) {
        match self {
            Visible::Prefix(n) => (0, n),
            Visible::Causal { start, window } => {
                let hi = start + i + 1;
                (window.map_or(0, |w| hi.saturating_sub(w)), hi)
            }
        }
    }
}

/// One attention: `queries` rows of `heads` query heads over `keys` rows of `kv_heads` key and
/// value heads (grouped-query: query head `h` uses kv head `h / (heads / kv_heads)`, the
/// `repeat_kv` order of transformers), each of width `head_dim`.
#[derive(Debug, Clone, Copy)]
pub struct Attention<'a> {
    /// Queries and their layout.
    pub q: (&'a [f32], Layout),
    /// Keys and their layout.
    pub k: (&'a [f32], Layout),
    /// Values and their layout.
    pub v: (&'a [f32], Layout),
    /// Query rows.
    pub queries: usize,
    /// Key (and value) rows.
    pub keys: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; divides `heads`.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Factor of the logits `q . k` (1 when `q` is scaled already).
    pub scale: f32,
    /// Which keys each query sees.
    pub visible: Visible,
}

/// What [`Attention::run`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// `(queries, heads * head_dim)` row-major.
    pub out: Vec<f32>,
    /// With `score_queries = Some(n)`: the attention each key received, averaged over the heads
    /// and the first `n` queries, `(keys,)`.
    pub received: Option<Vec<f32>>,
}

impl Attention<'_> {
    /// Runs the attention in f32 on the current rayon pool; see [`Output`] for
    /// `score_queries`.
    ///
    /// # Panics
    /// When the shapes are inconsistent: a slice too short for its layout, `kv_heads` not
    /// dividing `heads`, or a query that sees no key or keys past `keys`.
    pub fn run(&self, score_queries: Option<usize>) -> Output {
        self.run_with(score_queries, Compute::F32)
    }

    /// [`Attention::run`] with the products' inputs in `compute`'s precision. Under
    /// [`Compute::Bf16`] the probabilities are rounded to bf16 before they multiply the values
    /// (the received attention is summed from the unrounded ones); `q`, `k` and `v` are taken
    /// as given: the caller rounds them once where they are made (a projection's output, a KV
    /// cache), so a cache is not copied and rounded again for every block.
    ///
    /// # Panics
    /// As [`Attention::run`].
    pub fn run_with(&self, score_queries: Option<usize>, compute: Compute) -> Output {
        self.check();
        let d = self.heads * self.head_dim;
        let score_queries = score_queries.map(|n| n.min(self.queries));
        let mut out = vec![0.0f32; self.queries * d];
        let out_ptr = SharedOut(out.as_mut_ptr());
        let block = self.query_block();
        let blocks = self.queries.div_ceil(block);
        let received = (0..self.heads * blocks)
            .into_par_iter()
            .map(|task| {
                let (h, b) = (task / blocks, task % blocks);
                let q0 = b * block;
                let rows = block.min(self.queries - q0);
                let scored = score_queries.map(|n| n.saturating_sub(q0).min(rows));
                // SAFETY: the task writes rows q0..q0 + rows of head h's columns only; no two
                // tasks share a (block, head) pair, so the regions written are disjoint.
                unsafe { self.block(h, q0, rows, out_ptr, scored, compute) }
            })
            .reduce_with(|a, b| match (a, b) {
                (Some(mut a), Some(b)) => {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    Some(a)
                }
                (a, _) => a,
            })
            .flatten();
        let received = received.map(|sums| {
            let n = score_queries.unwrap_or(self.queries).max(1);
            let scale = 1.0 / (self.heads * n) as f64;
            sums.iter().map(|&s| (s * scale) as f32).collect()
        });
        Output { out, received }
    }

    /// Queries per task. Each `gemm` call packs the block's keys (and values) before
    /// multiplying, so larger blocks spread that copy over more queries: on a 30 s encoder
    /// window (1500 keys, head width 64) a task of 256 queries ran 15-20 % faster than one of 64.
    /// The block's logits stay within [`LOGITS_BUDGET`] (long prompts with many cached keys get
    /// smaller blocks, down to 64 queries), and there are at least four tasks per thread for the
    /// pool to balance.
    pub fn query_block(&self) -> usize {
        let (lo, hi) = QUERY_BLOCK;
        let by_cache = LOGITS_BUDGET / (4 * self.keys.max(1));
        let tasks = 4 * rayon::current_num_threads();
        let by_tasks = self.queries / tasks.div_ceil(self.heads.max(1));
        (by_cache.min(by_tasks).clamp(lo, hi) / 16) * 16
    }

    fn check(&self) {
        let (heads, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        assert!(
            kv >= 1 && heads.is_multiple_of(kv),
            "{heads} heads, {kv} kv heads"
        );
        let last = |l: &Layout, rows: usize, heads: usize| l.at(rows - 1, heads - 1) + hd;
        if self.queries == 0 {
            return;
        }
        assert!(
            self.q.0.len() >= last(&self.q.1, self.queries, heads),
            "q too short"
        );
        assert!(
            self.k.0.len() >= last(&self.k.1, self.keys, kv),
            "k too short"
        );
        assert!(
            self.v.0.len() >= last(&self.v.1, self.keys, kv),
            "v too short"
        );
        for i in [0, self.queries - 1] {
            let (lo, hi) = self.visible.range(i);
            assert!(
                lo < hi && hi <= self.keys,
                "query {i} sees keys {lo}..{hi} of {}",
                self.keys
            );
        }
    }

    /// Logits, softmax and output of one head and block of queries; returns the column sums
    /// (f64, `keys` long) of the probabilities of the first `scored` rows when asked.
    ///
    /// # Safety
    /// `out` must point to a `(queries, heads * head_dim)` buffer whose rows `q0..q0 + rows`,
    /// columns of head `h`, no other thread touches meanwhile.
    unsafe fn block(
        &self,
        h: usize,
        q0: usize,
        rows: usize,
        out: SharedOut,
        scored: Option<usize>,
        compute: Compute,
    ) -> Option<Vec<f64>> {
        let hd = self.head_dim;
        let g = h / (self.heads / self.kv_heads);
        // The keys any query of the block sees: lo of the first row, hi of the last.
        let (lo, _) = self.visible.range(q0);
        let (_, hi) = self.visible.range(q0 + rows - 1);
        let n = hi - lo;
        let (q, ql) = self.q;
        let (k, kl) = self.k;
        let (v, vl) = self.v;
        let mut probs = vec![0.0f32; rows * n];
        // logits (rows x n) = scale * q_block (rows x hd) . k_g[lo..hi]^T (hd x n)
        gemm(
            rows,
            n,
            hd,
            probs.as_mut_ptr(),
            1,
            n as isize,
            false,
            q.as_ptr().add(ql.at(q0, h)),
            1,
            ql.row_stride as isize,
            k.as_ptr().add(kl.at(lo, g)),
            kl.row_stride as isize,
            1,
            0.0,
            self.scale,
            false,
            false,
            false,
            Parallelism::None,
        );
        for (i, row) in probs.chunks_exact_mut(n).enumerate() {
            let (a, b) = self.visible.range(q0 + i);
            softmax::softmax_in_place(&mut row[a - lo..b - lo]);
            row[..a - lo].fill(0.0);
            row[b - lo..].fill(0.0);
        }
        let scores = scored.map(|m| {
            let mut sums = vec![0.0f64; self.keys];
            for row in probs.chunks_exact(n).take(m) {
                sums[lo..hi]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(s, &p)| *s += p as f64);
            }
            sums
        });
        if compute == Compute::Bf16 {
            round_bf16_at(Cpu::detected(), &mut probs);
        }
        let d = self.heads * hd;
        // out rows (rows x hd) = probs (rows x n) . v_g[lo..hi] (n x hd)
        gemm(
            rows,
            hd,
            n,
            out.0.add(q0 * d + h * hd),
            1,
            d as isize,
            false,
            probs.as_ptr(),
            1,
            n as isize,
            v.as_ptr().add(vl.at(lo, g)),
            1,
            vl.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
        scores
    }
}

/// The output buffer, written by the tasks at disjoint places.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see the disjointness argument in `Attention::run`.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    /// The definition in f64: per head, softmax over the visible keys, times the values;
    /// received attention averaged over the heads and the first `n` queries.
    fn reference(a: &Attention, n: usize) -> (Vec<f64>, Vec<f64>) {
        reference_with(a, n, Compute::F32)
    }

    /// [`reference`] with the probabilities rounded to bf16 before they weigh the values
    /// under [`Compute::Bf16`].
    fn reference_with(a: &Attention, n: usize, compute: Compute) -> (Vec<f64>, Vec<f64>) {
        let (hd, d) = (a.head_dim, a.heads * a.head_dim);
        let mut out = vec![0.0f64; a.queries * d];
        let mut received = vec![0.0f64; a.keys];
        for h in 0..a.heads {
            let g = h / (a.heads / a.kv_heads);
            for i in 0..a.queries {
                let (lo, hi) = a.visible.range(i);
                let logits: Vec<f64> = (lo..hi)
                    .map(|j| {
                        let dot: f64 = (0..hd)
                            .map(|p| {
                                a.q.0[a.q.1.at(i, h) + p] as f64 * a.k.0[a.k.1.at(j, g) + p] as f64
                            })
                            .sum();
                        dot * a.scale as f64
                    })
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in (lo..hi).zip(&e) {
                    let p = ej / z;
                    if i < n {
                        received[j] += p / (a.heads * n) as f64;
                    }
                    let p = match compute {
                        Compute::F32 => p,
                        Compute::Bf16 => crate::round::round_bf16(p as f32) as f64,
                    };
                    for c in 0..hd {
                        out[i * d + h * hd + c] += p * a.v.0[a.v.1.at(j, g) + c] as f64;
                    }
                }
            }
        }
        (out, received)
    }

    fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y).abs())
            .fold(0.0, f64::max)
    }

    fn check(a: &Attention, n: usize) {
        let (want_out, want_rec) = reference(a, n);
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| a.run(Some(n)));
            let rec = got.received.as_ref().unwrap();
            assert!(
                max_abs_diff(&got.out, &want_out) < 1e-5,
                "{a:?} {threads} threads"
            );
            assert!(
                max_abs_diff(rec, &want_rec) < 1e-6,
                "{a:?} {threads} threads"
            );
            let again = pool.install(|| a.run(None));
            assert!(again.received.is_none());
            assert_eq!(again.out, got.out, "the scores do not change the output");
        }
    }

    /// Encoder-style: heads side by side, keys from `valid` on masked; odd sizes, blocks cut
    /// short, scores over part of the queries; 1 to 3 threads.
    #[test]
    fn prefix_visibility_matches_the_definition() {
        for (t, heads, head_dim, valid, n) in [
            (1, 1, 4, 1, 1),
            (7, 2, 3, 7, 7),
            (65, 3, 8, 40, 40),
            (130, 2, 16, 130, 77),
            (200, 4, 5, 129, 129),
        ] {
            let d = heads * head_dim;
            let (q, k, v) = (
                values(t * d, 1 + t as u64),
                values(t * d, 2 + t as u64),
                values(t * d, 3 + t as u64),
            );
            let l = Layout::rows(heads, head_dim);
            check(
                &Attention {
                    q: (&q, l),
                    k: (&k, l),
                    v: (&v, l),
                    queries: t,
                    keys: t,
                    heads,
                    kv_heads: heads,
                    head_dim,
                    scale: 1.0,
                    visible: Visible::Prefix(valid),
                },
                n,
            );
        }
    }

    /// Decoder-style: a KV cache with `start` earlier positions and spare capacity (head-major,
    /// rows of one head contiguous), grouped-query heads, queries head-major, causal with and
    /// without a sliding window; 1 to 3 threads.
    #[test]
    fn causal_grouped_visibility_matches_the_definition() {
        for (s, start, heads, kv_heads, head_dim, window) in [
            (1, 0, 2, 1, 4, None),
            (5, 3, 4, 2, 3, None),
            (70, 0, 6, 2, 8, None),
            (67, 9, 4, 1, 5, Some(20)),
            (130, 0, 2, 2, 4, Some(64)),
        ] {
            let keys = start + s;
            let cap = keys + 3;
            let q = values(heads * s * head_dim, 7 + s as u64);
            let k = values(kv_heads * cap * head_dim, 8 + s as u64);
            let v = values(kv_heads * cap * head_dim, 9 + s as u64);
            let ql = Layout {
                offset: 0,
                row_stride: head_dim,
                head_stride: s * head_dim,
            };
            let kl = Layout {
                offset: 0,
                row_stride: head_dim,
                head_stride: cap * head_dim,
            };
            check(
                &Attention {
                    q: (&q, ql),
                    k: (&k, kl),
                    v: (&v, kl),
                    queries: s,
                    keys,
                    heads,
                    kv_heads,
                    head_dim,
                    scale: 1.0 / (head_dim as f32).sqrt(),
                    visible: Visible::Causal { start, window },
                },
                s,
            );
        }
    }

    /// bf16 compute on bf16 inputs: the output is that of the probabilities rounded to bf16
    /// (up to the rare probability whose f32 and f64 values round apart: a loose maximum, and
    /// a root-mean-square error far below the rounding's own effect), the scores are the
    /// unrounded ones; 1 to 3 threads, causal grouped heads and a masked prefix.
    #[test]
    fn bf16_compute_rounds_the_probabilities() {
        use crate::round::rounded_bf16;
        let rms = |a: &[f32], b: &[f64]| {
            let s: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
            (s / a.len() as f64).sqrt()
        };
        for (t, heads, kv_heads, head_dim, visible) in [
            (
                67,
                4,
                2,
                8,
                Visible::Causal {
                    start: 0,
                    window: None,
                },
            ),
            (130, 3, 3, 16, Visible::Prefix(100)),
        ] {
            let kv = kv_heads * head_dim;
            let q = rounded_bf16(&values(t * heads * head_dim, 31));
            let k = rounded_bf16(&values(t * kv, 32));
            let v = rounded_bf16(&values(t * kv, 33));
            let a = Attention {
                q: (&q, Layout::rows(heads, head_dim)),
                k: (&k, Layout::rows(kv_heads, head_dim)),
                v: (&v, Layout::rows(kv_heads, head_dim)),
                queries: t,
                keys: t,
                heads,
                kv_heads,
                head_dim,
                scale: 1.0,
                visible,
            };
            let (f32_out, want_rec) = reference(&a, t);
            let (want, _) = reference_with(&a, t, Compute::Bf16);
            let effect = f32_out
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
                .sqrt()
                / (want.len() as f64).sqrt();
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| a.run_with(Some(t), Compute::Bf16));
                assert!(max_abs_diff(&got.out, &want) < 1e-4, "{threads} threads");
                assert!(
                    rms(&got.out, &want) < 0.1 * effect,
                    "{threads} threads: rms {} against the rounding's {effect}",
                    rms(&got.out, &want)
                );
                let rec = got.received.unwrap();
                assert!(max_abs_diff(&rec, &want_rec) < 1e-6, "{threads} threads");
            }
        }
    }

    #[test]
    fn query_blocks_follow_the_keys_and_the_threads() {
        let data = vec![0.0f32; 16];
        let at = |queries: usize, keys: usize, heads: usize| Attention {
            q: (&data, Layout::rows(1, 1)),
            k: (&data, Layout::rows(1, 1)),
            v: (&data, Layout::rows(1, 1)),
            queries,
            keys,
            heads,
            kv_heads: heads,
            head_dim: 64,
            scale: 1.0,
            visible: Visible::Prefix(keys),
        };
        let pool = |n: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        // A 30 s encoder window on 2 threads: the largest block.
        assert_eq!(pool(2).install(|| at(1500, 1500, 12).query_block()), 256);
        // 32k cached keys: logits of 64 queries are already 8 MB, the smallest block.
        assert_eq!(pool(2).install(|| at(512, 32768, 14).query_block()), 64);
        // 2 heads on 16 threads: 32 blocks per head wanted, 1500 / 32 -> 46, raised to 64.
        assert_eq!(pool(16).install(|| at(1500, 1500, 2).query_block()), 64);
        // In between: 4 heads on 8 threads want 8 blocks per head, 1500 / 8 = 187 -> 176.
        assert_eq!(pool(8).install(|| at(1500, 1500, 4).query_block()), 176);
    }
}
