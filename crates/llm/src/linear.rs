//! The decoder's linear layers: candle's `Linear`, with a multi-threaded matrix-vector product
//! for the single-row inputs of decode steps.

use candle_core::{DType, Module, Storage, Tensor};

use crate::gemv::gemv;
use crate::LlmError;

/// `y = x · wᵀ + b` with `weight` `(out, in)` and an optional `bias` `(out)`.
///
/// A single row (all leading dims of `x` equal to 1) of f32 on the CPU goes through
/// [`gemv`], which reads the weights at memory bandwidth on every thread; anything else uses
/// candle's matmul (gemm), which is the faster choice for many rows.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    /// Stacks the outputs of `parts` (same input size) into one layer, so a single product
    /// computes them all: `y = [y_0, y_1, ...]` along the last dim. Biases must be all present
    /// or all absent.
    pub(crate) fn concat(parts: &[Linear]) -> Result<Self, LlmError> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| p.inner.weight()).collect();
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.inner.bias()).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = match biases {
            Some(b) => Some(Tensor::cat(&b, 0)?),
            None if parts.iter().all(|p| p.inner.bias().is_none()) => None,
            None => {
                return Err(LlmError::Unsupported {
                    field: "bias",
                    value: "mixed".into(),
                    reason: "concatenated projections must all have a bias or none".into(),
                })
            }
        };
        Ok(Self::new(weight, bias))
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor, LlmError> {
        if let Some(ys) = self.forward_one_row(xs)? {
            return Ok(ys);
        }
        Ok(self.inner.forward(xs)?)
    }

    /// The [`gemv`] path, or `None` when `xs` is not a single contiguous f32 row on the CPU.
    fn forward_one_row(&self, xs: &Tensor) -> Result<Option<Tensor>, LlmError> {
        let weight = self.inner.weight();
        let bias = self.inner.bias();
        let (Some(&k), Ok((n, wk))) = (xs.dims().last(), weight.dims2()) else {
            return Ok(None);
        };
        let all_f32 = xs.dtype() == DType::F32
            && weight.dtype() == DType::F32
            && bias.is_none_or(|b| b.dtype() == DType::F32 && b.dims() == [n]);
        if !all_f32 || !xs.device().is_cpu() || k != wk || xs.elem_count() != k {
            return Ok(None);
        }
        let (x_storage, x_layout) = xs.storage_and_layout();
        let (w_storage, w_layout) = weight.storage_and_layout();
        let (Storage::Cpu(x_cpu), Storage::Cpu(w_cpu)) = (&*x_storage, &*w_storage) else {
            return Ok(None);
        };
        let (Some((x0, x1)), Some((w0, w1))) =
            (x_layout.contiguous_offsets(), w_layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let x = &x_cpu.as_slice::<f32>()?[x0..x1];
        let w = &w_cpu.as_slice::<f32>()?[w0..w1];
        let mut out = vec![0.0f32; n];
        match bias {
            None => gemv(x, w, None, &mut out),
            Some(b) => {
                let (b_storage, b_layout) = b.storage_and_layout();
                let (Storage::Cpu(b_cpu), Some((b0, b1))) =
                    (&*b_storage, b_layout.contiguous_offsets())
                else {
                    return Ok(None);
                };
                gemv(x, w, Some(&b_cpu.as_slice::<f32>()?[b0..b1]), &mut out);
            }
        }
        let mut dims = xs.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok(Some(Tensor::from_vec(out, dims, xs.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
            .collect()
    }

    #[test]
    fn one_row_matches_candle_linear() {
        let (k, n) = (19, 13);
        let w = Tensor::from_vec(ramp(n * k, 0.01), (n, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(ramp(n, 0.1), n, &Device::Cpu).unwrap();
        let ours = Linear::new(w.clone(), Some(b.clone()));
        let theirs = candle_nn::Linear::new(w, Some(b));
        // A single row, also as the last position narrowed out of a longer sequence.
        let seq = Tensor::from_vec(ramp(3 * k, 0.02), (1, 3, k), &Device::Cpu).unwrap();
        for xs in [seq.narrow(1, 2, 1).unwrap(), seq.narrow(1, 0, 1).unwrap()] {
            assert!(ours.forward_one_row(&xs).unwrap().is_some());
            let a = values(ours.forward(&xs).unwrap());
            let e = values(theirs.forward(&xs).unwrap());
            assert_eq!(ours.forward(&xs).unwrap().dims(), &[1, 1, n]);
            for (a, e) in a.iter().zip(&e) {
                assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "{a} vs {e}");
            }
        }
        // Several rows take candle's path and give its exact result.
        assert!(ours.forward_one_row(&seq).unwrap().is_none());
        let a = values(ours.forward(&seq).unwrap());
        let e = values(theirs.forward(&seq).unwrap());
        assert_eq!(a, e);
    }
}
