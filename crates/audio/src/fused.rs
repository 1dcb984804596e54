//! The encoder's self-attention fused on the CPU, for f32 inputs of one sequence.
//!
//! The unfused path (`softmax(q k^T + mask) v` through candle) writes the logits and the
//! probabilities of every head as `(heads, t, keys)` tensors: 2 x 108 MB per layer for a 30 s
//! window of a 12-head encoder, page-faulted and zeroed by the kernel on first touch, and its
//! softmax calls the C library's scalar `expf` 27 M times per layer. Here the work is split into
//! tasks of one head and [`QUERY_BLOCK`] queries: the block's logits (`QUERY_BLOCK x keys`, a few
//! hundred KB that stay in the core's cache) come from one `gemm` call, the softmax runs in place
//! with a vectorised `exp` ([`crate::vexp`]), the block's probabilities are multiplied by the
//! values straight into the output rows of that head, and, when asked, their column sums over the
//! valid queries are accumulated: the attention each key receives, which the pruning scores are
//! made of (see `received_attention` in the encoder), in the same pass and without the
//! probability matrix ever existing whole.
//!
//! Masked keys (the padding of a window, keys `>= valid_keys`) are left out of both products:
//! their probability is exactly 0 in the unfused softmax (`exp(-inf)`), so the results are the
//! same up to the summation order of the products.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::vexp;

/// Queries per task: the block's logits (`64 x 1500` f32 = 384 KB for a 30 s window) fit a
/// core's L2 cache, and a window's 1500 queries x 12 heads make 288 tasks for the thread pool.
pub const QUERY_BLOCK: usize = 64;

/// Shapes of one fused self-attention: `t` queries and keys, `heads` heads of `head_dim`.
/// `q`, `k` and `v` are `(t, heads * head_dim)` row-major, heads side by side (the layout of
/// the projections' output); `q` is already scaled by `head_dim^-1/2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Queries, and keys.
    pub t: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Keys `>= valid_keys` are masked out (the encoder's padding mask); `t` for none.
    pub valid_keys: usize,
}

/// The attention output `(t, heads * head_dim)` and, with `score_queries = Some(n)`, the
/// attention each key received, averaged over the heads and the first `n` queries (`(t,)`, 0 for
/// masked keys).
pub fn self_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: Shape,
    score_queries: Option<usize>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let Shape {
        t,
        heads,
        head_dim,
        valid_keys,
    } = shape;
    let d = heads * head_dim;
    assert!(q.len() == t * d && k.len() == t * d && v.len() == t * d);
    assert!(valid_keys >= 1 && valid_keys <= t);
    let score_queries = score_queries.map(|n| n.min(t));
    let mut out = vec![0.0f32; t * d];
    let out_ptr = SharedOut(out.as_mut_ptr());
    let blocks = t.div_ceil(QUERY_BLOCK);
    let received = (0..heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (h, b) = (task / blocks, task % blocks);
            let q0 = b * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(t - q0);
            // Only the queries < score_queries contribute to the scores.
            let scored = score_queries.map(|n| n.saturating_sub(q0).min(rows));
            let task = Task {
                q,
                k,
                v,
                shape,
                h,
                q0,
                rows,
            };
            // SAFETY: each task writes rows q0..q0+rows of head h's columns only, and no two
            // tasks share a (block, head) pair, so the written regions are disjoint.
            unsafe { task.run(out_ptr, scored) }
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
        let n = score_queries.unwrap_or(t).max(1);
        let scale = 1.0 / (heads * n) as f64;
        let mut per_key: Vec<f32> = sums.iter().map(|&s| (s * scale) as f32).collect();
        per_key.resize(t, 0.0);
        per_key
    });
    (out, received)
}

/// The output buffer, written by the tasks at disjoint places.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see the disjointness argument in `self_attention`.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// One head and one block of queries.
struct Task<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: Shape,
    h: usize,
    q0: usize,
    rows: usize,
}

impl Task<'_> {
    /// Logits, softmax, output rows; returns the column sums (f64, `valid_keys` long) of the
    /// probabilities of the first `scored` rows when `scored` is `Some`.
    ///
    /// # Safety
    /// `out` must point to a `(t, d)` buffer whose rows `q0..q0 + rows`, columns of head `h`,
    /// no other thread touches meanwhile.
    unsafe fn run(&self, out: SharedOut, scored: Option<usize>) -> Option<Vec<f64>> {
        let Shape {
            heads,
            head_dim: hd,
            valid_keys: keys,
            ..
        } = self.shape;
        let d = heads * hd;
        let col = self.h * hd;
        let mut probs = vec![0.0f32; self.rows * keys];
        // logits (rows x keys) = q_block (rows x hd) . k_h^T (hd x keys)
        gemm(
            self.rows,
            keys,
            hd,
            probs.as_mut_ptr(),
            1,
            keys as isize,
            false,
            self.q.as_ptr().add(self.q0 * d + col),
            1,
            d as isize,
            self.k.as_ptr().add(col),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
        for row in probs.chunks_exact_mut(keys) {
            vexp::softmax_in_place(row);
        }
        // out rows (rows x hd) = probs (rows x keys) . v_h (keys x hd)
        gemm(
            self.rows,
            hd,
            keys,
            out.0.add(self.q0 * d + col),
            1,
            d as isize,
            false,
            probs.as_ptr(),
            1,
            keys as isize,
            self.v.as_ptr().add(col),
            1,
            d as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
        scored.map(|n| {
            let mut sums = vec![0.0f64; keys];
            for row in probs.chunks_exact(keys).take(n) {
                sums.iter_mut().zip(row).for_each(|(s, &p)| *s += p as f64);
            }
            sums
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The unfused definition in f64: per head, softmax over the valid keys, times the values;
    /// received attention averaged over heads and the first `n` queries.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: Shape, n: usize) -> (Vec<f64>, Vec<f64>) {
        let d = s.heads * s.head_dim;
        let mut out = vec![0.0f64; s.t * d];
        let mut received = vec![0.0f64; s.t];
        for h in 0..s.heads {
            for i in 0..s.t {
                let logits: Vec<f64> = (0..s.valid_keys)
                    .map(|j| {
                        (0..s.head_dim)
                            .map(|p| {
                                q[i * d + h * s.head_dim + p] as f64
                                    * k[j * d + h * s.head_dim + p] as f64
                            })
                            .sum()
                    })
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    let p = ej / z;
                    if i < n {
                        received[j] += p / (s.heads * n) as f64;
                    }
                    for c in 0..s.head_dim {
                        out[i * d + h * s.head_dim + c] += p * v[j * d + h * s.head_dim + c] as f64;
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

    /// Odd shapes (blocks cut short, one head, keys masked, scores over part of the queries),
    /// on 1 to 3 threads, against the f64 definition.
    #[test]
    fn matches_the_definition_on_odd_shapes_and_thread_counts() {
        for (t, heads, head_dim, valid_keys, n) in [
            (1, 1, 4, 1, 1),
            (7, 2, 3, 7, 7),
            (65, 3, 8, 40, 40),
            (130, 2, 16, 130, 77),
            (200, 4, 5, 129, 129),
        ] {
            let d = heads * head_dim;
            let q = values(t * d, 1 + t as u64);
            let k = values(t * d, 2 + t as u64);
            let v = values(t * d, 3 + t as u64);
            let s = Shape {
                t,
                heads,
                head_dim,
                valid_keys,
            };
            let (want_out, want_rec) = reference(&q, &k, &v, s, n);
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (out, rec) = pool.install(|| self_attention(&q, &k, &v, s, Some(n)));
                let rec = rec.unwrap();
                assert!(
                    max_abs_diff(&out, &want_out) < 1e-5,
                    "{s:?} {threads} threads"
                );
                assert!(
                    max_abs_diff(&rec, &want_rec) < 1e-6,
                    "{s:?} {threads} threads"
                );
                assert!(rec[valid_keys..].iter().all(|&r| r == 0.0));
                let (again, none) = pool.install(|| self_attention(&q, &k, &v, s, None));
                assert!(none.is_none());
                assert_eq!(again, out, "the scores do not change the output");
            }
        }
    }
}
