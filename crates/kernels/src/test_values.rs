//! Deterministic test data for the kernel tests of this crate and of `auris-llm` (one
//! generator, so the two crates' tests draw the same kind of values), and the checks both
//! crates run. Not for inference.

use crate::cpu::Cpu;
use crate::q4k::{q4k_gemv_at, q4k_gemv_batch_at};
use crate::qgemv::{QuantRow, BLOCK};

/// `len` values in [-1, 1) from an xorshift stream seeded by `seed`.
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `f` run on a rayon pool of `threads` threads (the tests' check that a result does not
/// depend on the thread count).
///
/// # Panics
/// When the pool cannot be built.
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}

/// `x · wᵀ (+ bias)` in f64 for `w` of rows of `x.len()` values, and the magnitude summed per
/// row (the scale of an f32 sum's rounding).
#[cfg(test)]
pub(crate) fn f64_product(x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<(f64, f64)> {
    let k = x.len();
    (0..w.len() / k.max(1))
        .map(|j| {
            let b = bias.map_or(0.0, |b| f64::from(b[j]));
            let row = &w[j * k..(j + 1) * k];
            x.iter().zip(row).fold((b, b.abs()), |(s, m), (&a, &wv)| {
                let p = f64::from(a) * f64::from(wv);
                (s + p, m + p.abs())
            })
        })
        .collect()
}

/// Asserts that each of `got` is within the rounding of an f32 sum of `k` products, taken in
/// another order, of its [`f64_product`]; `what` names the case.
#[cfg(test)]
pub(crate) fn assert_f32_sum_close(got: &[f32], want: &[(f64, f64)], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (j, (&g, &(e, mag))) in got.iter().zip(want).enumerate() {
        let tol = 4.0 * f64::from(f32::EPSILON) * mag.max(1.0) * (k as f64).sqrt().max(1.0);
        assert!(
            (f64::from(g) - e).abs() <= tol,
            "{what} row {j}: {g} vs {e}"
        );
    }
}

/// Checks the `q4_K` product of `blocks` (`n` rows of `k` weights) at every level of this CPU
/// against the f64 product of quantised activation rows and `deq`, the blocks' weights
/// dequantised by the caller's reading of the layout; and that a batch of rows (1 to 5), on
/// 1 to 3 threads, gives each row bitwise as that row alone.
///
/// # Panics
/// When a product is further than `1e-5` of the magnitude it sums from the reference, or a
/// row of a batch differs from the row alone.
pub fn check_q4k_against(blocks: &[u8], deq: &[f64], n: usize, k: usize) {
    let xs: Vec<QuantRow> = (0..5)
        .map(|r| QuantRow::new(&values(k, 7 + (k + r) as u64)))
        .collect();
    for cpu in Cpu::detected().levels() {
        let alone: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| {
                let mut got = vec![f32::NAN; n];
                q4k_gemv_at(cpu, x, blocks, None, &mut got);
                got
            })
            .collect();
        for (x, got) in xs.iter().zip(&alone) {
            for (j, &g) in got.iter().enumerate() {
                let (e, mag) = deq[j * k..(j + 1) * k].iter().enumerate().fold(
                    (0.0f64, 0.0f64),
                    |(s, m), (i, &wv)| {
                        let xv = f64::from(x.qs[i]) * f64::from(x.scales[i / BLOCK]);
                        (s + wv * xv, m + (wv * xv).abs())
                    },
                );
                assert!(
                    (f64::from(g) - e).abs() <= 1e-5 * mag.max(1.0),
                    "{cpu:?} n={n} k={k} row {j}: {g} vs {e}"
                );
            }
        }
        for threads in [1, 2, 3] {
            for batch in 1..=xs.len() {
                let mut got = vec![f32::NAN; batch * n];
                on_threads(threads, || {
                    q4k_gemv_batch_at(cpu, &xs[..batch], blocks, None, &mut got)
                });
                for (r, row) in got.chunks_exact(n).enumerate() {
                    let same = row
                        .iter()
                        .zip(&alone[r])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{cpu:?} n={n} k={k} batch={batch} threads={threads} row {r}"
                    );
                }
            }
        }
    }
}
