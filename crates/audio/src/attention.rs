//! Multi-head attention as Whisper writes it (`WhisperAttention` in transformers'
//! `src/transformers/models/whisper/modeling_whisper.py`): `q_proj`, `k_proj` (no bias),
//! `v_proj`, `out_proj`, queries scaled by `head_dim^-1/2`. Used by the encoder's self-attention
//! and by a Whisper text decoder's self- and cross-attention.

use auris_kernels::linear::{linear_with as fused_linear, Act, Rows, Weight};
use auris_kernels::round::Compute;
use candle_core::{DType, Module, Storage, Tensor, WithDType};
use candle_nn::{
    linear, linear_no_bias, Activation, LayerNorm, LayerNormConfig, Linear, VarBuilder,
};
use half::{bf16, f16};

/// How the projections multiply: both give `x W^T + b`, they differ in speed on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// `x W^T`: candle's `Linear`, fast when `x` has many rows (an encoder window).
    RowsTimesWeight,
    /// `(W x^T)^T`: with the weight as the left operand the product runs at GEMM speed when `x`
    /// has a few rows (decoding); the other orientation takes a much slower small-m path.
    WeightTimesRows,
}

/// One attention block: `(b, s, d)` in, `(b, s, d)` out.
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
    product: Product,
    compute: Compute,
}

impl Attention {
    /// Loads the four projections under `vb` (`q_proj`, `k_proj`, `v_proj`, `out_proj`) for a
    /// width `d` split into `heads` heads.
    pub fn load(
        d: usize,
        heads: usize,
        product: Product,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear_no_bias(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads,
            head_dim: d / heads,
            product,
            compute: Compute::F32,
        })
    }

    /// The precision of the products on the CPU in f32 ([`Product::RowsTimesWeight`] and the
    /// fused attention): under [`Compute::Bf16`] the projections round their inputs and
    /// weights to bf16, [`Attention::forward_fused`] rounds the queries (scaled), keys, values
    /// and probabilities. The unfused path computes in its tensors' dtype.
    pub fn set_compute(&mut self, compute: Compute) {
        self.compute = compute;
    }

    fn project(&self, layer: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.product {
            Product::RowsTimesWeight => apply_with(layer, x, self.compute),
            Product::WeightTimesRows => project_rows(layer, x),
        }
    }

    /// `(b, s, d) -> (b, heads, s, head_dim)`.
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        x.reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x`, each `(b, heads, s, head_dim)`.
    pub fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.project(&self.k_proj, x)?)?,
            self.split_heads(&self.project(&self.v_proj, x)?)?,
        ))
    }

    /// Attention of the queries of `x` over `(k, v)`; `mask` is added to the logits. The logits
    /// and the softmax run in f32. Returns the output and, when `want_probs`, the attention
    /// probabilities `(b, heads, queries, keys)` in f32.
    pub fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (b, t, d) = x.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&(self.project(&self.q_proj, x)? * scale)?)?;
        let logits = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
        let logits = match mask {
            Some(mask) => logits.broadcast_add(mask)?,
            None => logits,
        };
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let out = probs.to_dtype(v.dtype())?.matmul(v)?;
        let out = out.transpose(1, 2)?.reshape((b, t, d))?;
        let out = self.project(&self.out_proj, &out)?;
        Ok((out, want_probs.then_some(probs)))
    }

    /// Self-attention of one f32 sequence on the CPU through [`auris_kernels::attention`], the
    /// keys from `valid_keys` on masked out; with `score_queries = Some(n)` also the attention
    /// each key received, averaged over the heads and the first `n` queries. `None` where the
    /// fused kernel does not apply (another device or dtype, a batch): use
    /// [`Attention::forward`].
    pub fn forward_fused(
        &self,
        x: &Tensor,
        valid_keys: usize,
        score_queries: Option<usize>,
    ) -> candle_core::Result<Option<(Tensor, Option<Vec<f32>>)>> {
        use auris_kernels::attention::{Attention as Fused, Layout, Visible};
        let (b, t, d) = x.dims3()?;
        if b != 1 || !x.device().is_cpu() || x.dtype() != DType::F32 || valid_keys == 0 {
            return Ok(None);
        }
        let scale = (self.head_dim as f64).powf(-0.5);
        let rows = |t: Tensor| -> candle_core::Result<Vec<f32>> {
            let mut values = t.flatten_all()?.to_vec1::<f32>()?;
            self.compute.round_in_place(&mut values);
            Ok(values)
        };
        let q = rows((self.project(&self.q_proj, x)? * scale)?)?;
        let k = rows(self.project(&self.k_proj, x)?)?;
        let v = rows(self.project(&self.v_proj, x)?)?;
        let layout = Layout::rows(self.heads, self.head_dim);
        let fused = Fused {
            q: (&q, layout),
            k: (&k, layout),
            v: (&v, layout),
            queries: t,
            keys: t,
            heads: self.heads,
            kv_heads: self.heads,
            head_dim: self.head_dim,
            scale: 1.0,
            visible: Visible::Prefix(valid_keys.min(t)),
        }
        .run_with(score_queries, self.compute);
        let out = Tensor::from_vec(fused.out, (1, t, d), x.device())?;
        Ok(Some((self.project(&self.out_proj, &out)?, fused.received)))
    }

    /// Self-attention of `x`: [`Attention::attend`] over its own keys and values.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (k, v) = self.keys_values(x)?;
        self.attend(x, &k, &v, mask, want_probs)
    }
}

/// `x W^T + b` for `x` of shape `(b, t, in)`, computed as `(W x^T)^T` (see
/// [`Product::WeightTimesRows`]).
pub fn project_rows(layer: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    let layer = &widened(layer, x.dtype())?;
    let (b, t, d) = x.dims3()?;
    let y = layer.weight().matmul(&x.reshape((b * t, d))?.t()?)?.t()?;
    let y = match layer.bias() {
        Some(bias) => y.broadcast_add(bias)?,
        None => y.contiguous()?,
    };
    y.reshape((b, t, ()))
}

/// `layer` applied to `x`; a layer stored in another dtype than `x` (bf16 weights of an f32
/// encoder on the CPU) is widened for this product only (on the CPU a block of rows at a time
/// inside the product, elsewhere by candle), so the model keeps its compact weights and computes
/// exactly what an f32 copy of them would.
pub fn apply(layer: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    apply_with(layer, x, Compute::F32)
}

/// [`apply`] with the product's inputs in `compute`'s precision on the CPU (f32 data through
/// [`auris_kernels::linear::linear_with`]: under [`Compute::Bf16`] `x` is rounded to bf16
/// once, and an f32 or f16 weight a block of rows at a time); elsewhere in `x`'s dtype.
pub fn apply_with(layer: &Linear, x: &Tensor, compute: Compute) -> candle_core::Result<Tensor> {
    match linear_cpu(layer, x, Act::Identity, compute)? {
        Some(y) => Ok(y),
        None => widened(layer, x.dtype())?.forward(x),
    }
}

/// `activation(apply(layer, x))`; GELU (erf) on f32 CPU data runs inside
/// [`auris_kernels::linear`], the other cases through candle.
pub fn apply_then(
    layer: &Linear,
    x: &Tensor,
    activation: Activation,
) -> candle_core::Result<Tensor> {
    apply_then_with(layer, x, activation, Compute::F32)
}

/// [`apply_then`] with the product's inputs in `compute`'s precision (see [`apply_with`]).
pub fn apply_then_with(
    layer: &Linear,
    x: &Tensor,
    activation: Activation,
    compute: Compute,
) -> candle_core::Result<Tensor> {
    if activation == Activation::Gelu {
        if let Some(y) = linear_cpu(layer, x, Act::GeluErf, compute)? {
            return Ok(y);
        }
    }
    activation.forward(&apply_with(layer, x, compute)?)
}

/// `act(x W^T + b)` through [`auris_kernels::linear`] when `x` is contiguous f32 CPU data and
/// the weight contiguous f32, bf16 or f16 CPU data (a half weight is widened inside the
/// product, a block of rows at a time; the bias inside the product, the activation in place:
/// no intermediate tensors), its inputs in `compute`'s precision; `None` otherwise (under
/// bf16 a strided `x` is made contiguous first, so f32 CPU data always takes this path).
fn linear_cpu(
    layer: &Linear,
    x: &Tensor,
    act: Act,
    compute: Compute,
) -> candle_core::Result<Option<Tensor>> {
    let w = layer.weight();
    let (out, k) = w.dims2()?;
    let on_cpu = x.device().is_cpu() && w.device().is_cpu();
    if !on_cpu || x.dtype() != DType::F32 || layer.bias().is_some_and(|b| !b.device().is_cpu()) {
        return Ok(None);
    }
    let rows = x.elem_count() / k.max(1);
    if x.dims().last() != Some(&k) || rows == 0 {
        return Ok(None);
    }
    let x = &match compute {
        Compute::F32 => x.clone(),
        Compute::Bf16 => x.contiguous()?,
    };
    let bias = layer
        .bias()
        .map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>())
        .transpose()?;
    let y = with_cpu_slice::<f32, _>(x, |x| {
        with_weight(w, |w| {
            fused_linear(compute, Rows::dense(x, rows), w, out, bias.as_deref(), act)
        })
    })?;
    let Some(Some(y)) = y else {
        return Ok(None);
    };
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    Tensor::from_vec(y, dims, x.device()).map(Some)
}

/// `f` on the contiguous CPU data of `t` as `T`; `None` when it is not contiguous on the CPU
/// or not of type `T`.
fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<Option<R>> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    match cpu.as_slice::<T>() {
        Ok(values) => f(&values[a..b]).map(Some),
        Err(_) => Ok(None),
    }
}

/// `f` on the weight `w` as stored (f32, bf16 or f16 on the CPU); `None` for another dtype or
/// place.
fn with_weight<R>(w: &Tensor, f: impl FnOnce(Weight) -> R) -> candle_core::Result<Option<R>> {
    match w.dtype() {
        DType::F32 => with_cpu_slice::<f32, _>(w, |w| Ok(f(Weight::F32(w)))),
        DType::BF16 => with_cpu_slice::<bf16, _>(w, |w| Ok(f(Weight::Bf16(w)))),
        DType::F16 => with_cpu_slice::<f16, _>(w, |w| Ok(f(Weight::F16(w)))),
        _ => Ok(None),
    }
}

fn widened(layer: &Linear, dtype: DType) -> candle_core::Result<Linear> {
    if layer.weight().dtype() == dtype {
        return Ok(layer.clone());
    }
    let bias = layer.bias().map(|b| b.to_dtype(dtype)).transpose()?;
    Ok(Linear::new(layer.weight().to_dtype(dtype)?, bias))
}

/// Whisper's `nn.LayerNorm(d)` (eps 1e-5, weight and bias) under `vb`, as every norm of the
/// encoder and the text decoder is built.
pub fn layer_norm(d: usize, vb: VarBuilder) -> candle_core::Result<LayerNorm> {
    let config = LayerNormConfig {
        eps: 1e-5,
        ..Default::default()
    };
    candle_nn::layer_norm(d, config, vb)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn ramp(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    /// A layer stored in bf16 or f16 (the kernel widens it block by block) gives the product
    /// of an f32 layer holding the widened values, with and without GELU.
    #[test]
    fn half_weights_equal_their_widened_f32_layer() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (rows, k, out) = (7, 33, 45);
        let x = Tensor::from_vec(ramp(rows * k, 1), (1, rows, k), &dev)?;
        let w = Tensor::from_vec(ramp(out * k, 2), (out, k), &dev)?;
        let b = Tensor::from_vec(ramp(out, 3), out, &dev)?;
        for dtype in [DType::BF16, DType::F16] {
            let half = Linear::new(w.to_dtype(dtype)?, Some(b.to_dtype(dtype)?));
            let widened = Linear::new(
                w.to_dtype(dtype)?.to_dtype(DType::F32)?,
                Some(b.to_dtype(dtype)?.to_dtype(DType::F32)?),
            );
            for act in [Activation::GeluPytorchTanh, Activation::Gelu] {
                let got = apply_then(&half, &x, act)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let want = apply_then(&widened, &x, act)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for (g, v) in got.iter().zip(&want) {
                    assert!(
                        (g - v).abs() <= 1e-5 * (1.0 + v.abs()),
                        "{dtype:?}: {g} vs {v}"
                    );
                }
            }
        }
        Ok(())
    }
}
