//! How the decode products split their work: `out[r][j] = dot(x[r], w[j]) (+ bias[j])` for a
//! stack of `batch` activation rows `x` (one new position of each of `batch` sequences) and
//! the `n` rows of a weight matrix `w`.
//!
//! The weight rows (the output columns) are split over the rayon pool, never the activation
//! rows, and a kernel computes each output element wholly on one thread with the same
//! operations in the same order whatever `batch` is, whatever the other activation rows hold
//! and however many threads run: so a row of a batch is bitwise the product of that row alone,
//! and a single row is simply `batch == 1`. Each block of weight rows is read from memory once
//! for the whole batch; a kernel walks it for a few activation rows at a time while it is in
//! the cache.

use rayon::prelude::*;

/// Below this many weights a product runs on the calling thread: waking the pool would cost
/// more than it saves.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 16;

/// Weight rows per task are a multiple of this, so the kernels' pairs of rows stay whole.
const ROW_BLOCK: usize = 4;

/// Computes `out` (`batch` rows of `n`, row-major) from `w` (`n` rows of `row_len` elements)
/// by `f`, splitting the weight rows over the rayon pool when the matrix is large enough, then
/// adds `bias` to every row.
///
/// `f(w_rows, t)` is given whole weight rows and writes their products transposed: `t[jj *
/// batch + r]` is activation row `r` times weight row `jj` of `w_rows`. It must compute each
/// element the same way wherever the element falls in a task.
///
/// # Panics
///
/// If `batch == 0`, `out.len()` is not a multiple of `batch`, `w.len() != n * row_len` or
/// `bias` is not `n` long.
pub(crate) fn split_rows<T: Sync>(
    batch: usize,
    row_len: usize,
    w: &[T],
    bias: Option<&[f32]>,
    out: &mut [f32],
    f: impl Fn(&[T], &mut [f32]) + Sync,
) {
    assert!(
        batch > 0 && out.len().is_multiple_of(batch),
        "gemv: {} outputs are not {batch} rows",
        out.len()
    );
    let n = out.len() / batch;
    assert_eq!(w.len(), n * row_len, "gemv: weight is not (out, in)");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "gemv: bias length");
    }
    if row_len == 0 {
        out.fill(0.0);
    } else if batch == 1 {
        // One row: the transposed layout is the output's own.
        run(1, row_len, w, out, &f);
    } else {
        let mut t = vec![0.0f32; out.len()];
        run(batch, row_len, w, &mut t, &f);
        for (j, col) in t.chunks_exact(batch).enumerate() {
            for (r, &v) in col.iter().enumerate() {
                out[r * n + j] = v;
            }
        }
    }
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(n.max(1)) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }
}

/// Runs `f` over `w`'s rows and the matching parts of the transposed output `t`, on the pool
/// when it pays.
fn run<T: Sync>(
    batch: usize,
    row_len: usize,
    w: &[T],
    t: &mut [f32],
    f: &(impl Fn(&[T], &mut [f32]) + Sync),
) {
    let n = w.len() / row_len;
    let Some(per_chunk) = units_per_task(n, w.len(), ROW_BLOCK) else {
        f(w, t);
        return;
    };
    t.par_chunks_mut(per_chunk * batch)
        .zip(w.par_chunks(per_chunk * row_len))
        .for_each(|(t, w)| f(w, t));
}

/// How a product of `weights` weights, in `units` independent units (weight rows, panels), is
/// split over the rayon pool: `None` when it runs on the calling thread (one thread, or too
/// few weights), else the units per task, a multiple of `multiple`.
pub(crate) fn units_per_task(units: usize, weights: usize, multiple: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    if threads <= 1 || weights < PARALLEL_MIN_WEIGHTS {
        return None;
    }
    // A few tasks per thread, so a thread slowed by another process does not hold up the
    // rest.
    Some(units.div_ceil(threads * 4).next_multiple_of(multiple))
}
