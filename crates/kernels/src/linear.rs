//! `y = act(x W^T + b)` for f32 rows and an f32 weight stored `(out, in)` as checkpoints store it.
//!
//! candle's `Linear` computes the product into one fresh tensor, adds the bias into a second and
//! applies an activation into a third: two extra passes over the output and two extra buffers.
//! Here the output buffer starts as the bias rows and the product is accumulated onto it by
//! `gemm` (`dst = dst + x W^T`), and the activation runs in place.

use gemm::{gemm, Parallelism};

use crate::activation::gelu_erf_in_place;

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

    fn check(&self) {
        assert!(self.rows > 0 && self.len > 0, "linear: empty x");
        assert!(
            (self.rows - 1) * self.stride + self.len <= self.data.len(),
            "linear: {} rows of {} at stride {} need more than {} values",
            self.rows,
            self.len,
            self.stride,
            self.data.len()
        );
    }
}

/// `act(x W^T + b)` for `w` of `out` rows of `x.len` values and `b` of `out` values;
/// `(x.rows, out)` row-major, computed on the current rayon pool.
///
/// # Panics
/// When the lengths disagree.
pub fn linear(x: Rows, w: &[f32], out: usize, bias: Option<&[f32]>, act: Act) -> Vec<f32> {
    assert!(out > 0, "linear: empty output");
    assert_eq!(w.len(), out * x.len, "linear: w is not ({out}, {})", x.len);
    let mut y = match bias {
        Some(b) => {
            assert_eq!(b.len(), out, "linear: bias is not {out} values");
            b.repeat(x.rows)
        }
        None => vec![0.0; x.rows * out],
    };
    linear_into(&mut y, out, 0, x, w);
    if act == Act::GeluErf {
        gelu_erf_in_place(&mut y);
    }
    y
}

/// `y[:, col0..col0 + out] += x W^T` for `y` of `x.rows` rows of `y_cols` values and `w` of
/// `out` rows of `x.len` values: a product over a slice of the weight rows (a chunk of a wide
/// weight widened to f32) written in place into its columns of the whole output.
///
/// # Panics
/// When the lengths disagree.
pub fn linear_into(y: &mut [f32], y_cols: usize, col0: usize, x: Rows, w: &[f32]) {
    x.check();
    let k = x.len;
    assert!(w.len().is_multiple_of(k), "linear: w is not (out, {k})");
    let out = w.len() / k;
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
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the block of y is (rows, out) from column col0 with row stride y_cols; x is
    // (rows, k) with row stride x.stride (checked in bounds); w^T is (k, out) read from w's
    // rows (column j of w^T is row j of w, stride k), all in bounds by the asserts above.
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
            w.as_ptr(),
            k as isize,
            1,
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
    use crate::test_values::values;

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
                    let got = pool.install(|| linear(Rows::dense(&x, rows), &w, out, bias, act));
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
        let whole = linear(Rows::dense(&x, rows), &w, out, None, Act::Identity);
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
        let got = linear(x, &w, out, Some(&b), Act::GeluErf);
        let want = linear(Rows::dense(&copied, rows), &w, out, Some(&b), Act::GeluErf);
        assert_eq!(got, want);
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
        linear(x, &[1.0; 4], 1, None, Act::Identity);
    }

    #[test]
    #[should_panic(expected = "w is not")]
    fn a_wrong_weight_length_is_refused() {
        linear(Rows::dense(&[1.0; 6], 2), &[1.0; 5], 2, None, Act::Identity);
    }
}
