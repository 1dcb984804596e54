//! The decoder's linear layers, over weights kept in their storage precision.
//!
//! A [`Linear`] holds one of three weight kinds:
//! - dense: a candle tensor computed in its own dtype ([`crate::Qwen2Decoder::load`], and f32
//!   storage); single f32 rows go through [`gemv_batch`], the rest through candle's matmul;
//! - half: bf16/f16 bits computed in f32; single rows through [`gemv_half_batch`], several
//!   rows by widening a chunk of weight rows at a time to f32 and calling candle's matmul
//!   (gemm);
//! - packed: bf16/f16 on the CPU packed in panels of 16 output columns ([`Linear::pack`],
//!   [`auris_kernels::packed`]); single rows and stacks of rows through [`packed_batch`], whose
//!   register tile keeps a batch's sums for sixteen outputs at once, several rows of a prefill
//!   by widening blocks of panels for gemm ([`linear_into_packed`]);
//! - quantised: a GGML block tensor (`q8_0`, `q4_0`, `q4_K`); single rows through
//!   [`qgemv_batch`] or [`q4k_gemv_batch`] (activations quantised to 8-bit blocks, integer
//!   block dots), many rows by dequantising chunks of weight rows for gemm, a few rows through
//!   candle's `QMatMul`.
//!
//! A stack of independent rows (one decode position of each of several sequences,
//! [`Linear::forward_rows`]) takes the single-row kernels' batched form: each weight is read
//! once for the stack, and each row's result is bitwise that of the row alone.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ4_0, BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Storage, Tensor, WithDType};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use auris_kernels::gemv::gemv_batch;
use auris_kernels::halfgemv::{gemv_half_batch, HalfKind};
use auris_kernels::linear::{linear_into, linear_into_packed, Rows};
use auris_kernels::packed::{packed_batch, PackedHalf};
use auris_kernels::q4k::q4k_gemv_batch;
use auris_kernels::qgemv::{dequantize_par, qgemv_batch, BlockKind, QuantRow};
use auris_kernels::round::Compute;

use crate::{LlmError, WeightFormat};

/// Weights converted to f32 at once while quantising a tensor at load: 32 MiB of f32, so a
/// load never holds a whole tensor (the 7B's 156032 × 4096 head: 2.5 GB) in f32.
pub(crate) const QUANTIZE_CHUNK_WEIGHTS: usize = 1 << 23;

/// Weights widened or dequantised to f32 at once by a multi-row product off the CPU (half
/// weights) or with quantised weights: 64 MiB of f32, a few times a layer's working set, so one
/// such chunk at most is alive. (Half weights on the CPU are widened a few MiB at a time inside
/// the product: `auris_kernels::linear::WIDEN_BLOCK`.)
const WIDEN_CHUNK_WEIGHTS: usize = 1 << 24;

/// From this many rows on, a quantised product dequantises chunks of weight rows for gemm
/// rather than taking candle's integer dots: on an 815-token prefill of a 0.5B decoder gemm is
/// several times faster, and a few rows (a small batch of decode steps) are bandwidth-bound.
const QUANT_GEMM_MIN_ROWS: usize = 16;

#[derive(Debug, Clone)]
enum Weight {
    Dense(Tensor),
    Half {
        bits: Tensor,
        kind: HalfKind,
    },
    Quant {
        qtensor: Arc<QTensor>,
        format: WeightFormat,
    },
    /// bf16/f16 on the CPU, packed for the decode kernels (shared with a tied embedding table).
    Packed(Arc<PackedHalf>),
}

/// `y = x · wᵀ + b` with `weight` `(out, in)` and an optional `bias` `(out)`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    out_dim: usize,
    in_dim: usize,
    /// Under [`Compute::Bf16`] a float weight's product rounds its input to bf16 first.
    compute: Compute,
}

impl Linear {
    /// A dense layer computed in `weight`'s dtype.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self, LlmError> {
        let (out_dim, in_dim) = weight.dims2()?;
        Ok(Self {
            weight: Weight::Dense(weight),
            bias,
            out_dim,
            in_dim,
            compute: Compute::F32,
        })
    }

    /// A layer computed in f32 with `weight` `(out, in)` stored as `format` asks, or as
    /// [`WeightFormat::for_row_len`] falls back to when `in` does not fit the block size.
    /// A quantised weight is converted here by [`quantize_rows`], 32 MiB of f32 rows at a
    /// time.
    pub(crate) fn with_format(
        weight: &Tensor,
        bias: Option<&Tensor>,
        format: WeightFormat,
    ) -> Result<Self, LlmError> {
        let (out_dim, in_dim) = weight.dims2()?;
        let half = |dtype, kind| -> Result<Weight, LlmError> {
            Ok(Weight::Half {
                bits: weight.to_dtype(dtype)?.contiguous()?,
                kind,
            })
        };
        let stored = match format.for_row_len(in_dim) {
            WeightFormat::F32 => Weight::Dense(weight.to_dtype(DType::F32)?.contiguous()?),
            WeightFormat::Bf16 => half(DType::BF16, HalfKind::Bf16)?,
            WeightFormat::F16 => half(DType::F16, HalfKind::F16)?,
            quant => Weight::Quant {
                qtensor: Arc::new(quantize_rows(weight, quant, QUANTIZE_CHUNK_WEIGHTS)?),
                format: quant,
            },
        };
        Ok(Self {
            weight: stored,
            bias: bias.map(|b| b.to_dtype(DType::F32)).transpose()?,
            out_dim,
            in_dim,
            compute: Compute::F32,
        })
    }

    /// A layer without bias over an already quantised `(out, in)` weight, shared rather than
    /// copied (a tied head over the `q8_0` embedding table).
    pub(crate) fn from_quant(
        qtensor: Arc<QTensor>,
        format: WeightFormat,
    ) -> Result<Self, LlmError> {
        Self::quantized(qtensor, None, format)
    }

    /// A layer over an `(out, in)` weight quantised to `format` (by [`quantize_rows_from`] as
    /// it was read), with an optional `bias` `(out)` widened to f32 as in
    /// [`Linear::with_format`].
    pub(crate) fn quantized(
        qtensor: Arc<QTensor>,
        bias: Option<&Tensor>,
        format: WeightFormat,
    ) -> Result<Self, LlmError> {
        let (out_dim, in_dim) = qtensor.shape().dims2()?;
        Ok(Self {
            weight: Weight::Quant { qtensor, format },
            bias: bias.map(|b| b.to_dtype(DType::F32)).transpose()?,
            out_dim,
            in_dim,
            compute: Compute::F32,
        })
    }

    /// The quantised weight, to check that a tied head shares the embedding table.
    #[cfg(test)]
    pub(crate) fn qtensor(&self) -> Option<&Arc<QTensor>> {
        match &self.weight {
            Weight::Quant { qtensor, .. } => Some(qtensor),
            _ => None,
        }
    }

    /// The storage format of the weight.
    pub(crate) fn format(&self) -> WeightFormat {
        match &self.weight {
            Weight::Dense(w) => match w.dtype() {
                DType::BF16 => WeightFormat::Bf16,
                DType::F16 => WeightFormat::F16,
                _ => WeightFormat::F32,
            },
            Weight::Half { kind, .. } => match kind {
                HalfKind::Bf16 => WeightFormat::Bf16,
                HalfKind::F16 => WeightFormat::F16,
            },
            Weight::Quant { format, .. } => *format,
            Weight::Packed(p) => match p.kind() {
                HalfKind::Bf16 => WeightFormat::Bf16,
                HalfKind::F16 => WeightFormat::F16,
            },
        }
    }

    /// Bytes of weight a product reads (the bias aside).
    pub(crate) fn weight_bytes(&self) -> usize {
        match &self.weight {
            Weight::Dense(w) | Weight::Half { bits: w, .. } => {
                w.elem_count() * w.dtype().size_in_bytes()
            }
            Weight::Quant { qtensor, .. } => qtensor.storage_size_in_bytes(),
            Weight::Packed(p) => 2 * p.n() * p.k(),
        }
    }

    /// Packs a bf16 or f16 weight held on the CPU in panels of 16 output columns
    /// ([`auris_kernels::packed`]): a decode step's products with one row or a stack of rows
    /// then keep sixteen outputs' sums for up to six rows in registers (on a 2-core Zen 3 a
    /// whole decoder's products ran 1.15-1.2x faster for one row, 1.65-1.7x for a stack of 8),
    /// and a prefill widens blocks of panels instead of rows. The same values, in another
    /// layout: every other weight stays as it is.
    pub(crate) fn pack(&mut self) -> Result<(), LlmError> {
        if let Weight::Half { bits, kind } = &self.weight {
            let (n, k, kind) = (self.out_dim, self.in_dim, *kind);
            let bits = bits.contiguous()?;
            let pack = |w: &[u16]| PackedHalf::pack(kind, w, n, k);
            let packed = match kind {
                HalfKind::Bf16 => with_cpu_slice::<bf16, _>(&bits, |w| pack(w.reinterpret_cast()))?,
                HalfKind::F16 => with_cpu_slice::<f16, _>(&bits, |w| pack(w.reinterpret_cast()))?,
            };
            if let Some(p) = packed {
                self.weight = Weight::Packed(Arc::new(p));
            }
        }
        Ok(())
    }

    /// The packed weight, when [`Linear::pack`] packed it.
    pub(crate) fn packed(&self) -> Option<&Arc<PackedHalf>> {
        match &self.weight {
            Weight::Packed(p) => Some(p),
            _ => None,
        }
    }

    /// Stacks the outputs of `parts` (same input size and storage) into one layer, so a
    /// single product computes them all: `y = [y_0, y_1, ...]` along the last dim. Biases must
    /// be all present or all absent.
    pub(crate) fn concat(parts: &[Linear]) -> Result<Self, LlmError> {
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        let bias = match biases {
            Some(b) => Some(Tensor::cat(&b, 0)?),
            None if parts.iter().all(|p| p.bias.is_none()) => None,
            None => return Err(mismatch("bias", "mixed", "all have a bias or none")),
        };
        let in_dim = parts.first().map_or(0, |p| p.in_dim);
        if parts.iter().any(|p| p.in_dim != in_dim) {
            return Err(mismatch("in_features", "mixed", "share the input size"));
        }
        let out_dim = parts.iter().map(|p| p.out_dim).sum();
        let weight = match parts.first().map(|p| &p.weight) {
            Some(Weight::Dense(_)) => Weight::Dense(cat_tensors(parts, |w| match w {
                Weight::Dense(t) => Some(t),
                _ => None,
            })?),
            Some(Weight::Half { kind, .. }) => Weight::Half {
                bits: cat_tensors(parts, |w| match w {
                    Weight::Half { bits, kind: k } if k == kind => Some(bits),
                    _ => None,
                })?,
                kind: *kind,
            },
            Some(Weight::Quant { format, .. }) => Weight::Quant {
                qtensor: Arc::new(cat_quant(parts, *format, out_dim, in_dim)?),
                format: *format,
            },
            Some(Weight::Packed(first)) => {
                let kind = first.kind();
                let rows = parts
                    .iter()
                    .map(|p| match &p.weight {
                        Weight::Packed(w) if w.kind() == kind => Some(w.rows(0..w.n())),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        mismatch("weight", "mixed storage", "share one storage format")
                    })?;
                let packed = PackedHalf::pack(kind, &rows.concat(), out_dim, in_dim);
                Weight::Packed(Arc::new(packed))
            }
            None => return Err(mismatch("parts", "0", "at least one")),
        };
        Ok(Self {
            weight,
            bias,
            out_dim,
            in_dim,
            compute: Compute::F32,
        })
    }

    /// The precision of this layer's products: [`Compute::Bf16`] rounds the input of every
    /// product with a float weight (stored bf16, see [`crate::LoadOptions::compute`]) to bf16,
    /// once, before any kernel runs; a quantised weight keeps its own products.
    pub(crate) fn set_compute(&mut self, compute: Compute) {
        self.compute = compute;
    }

    /// `xs` rounded to bf16 when this layer computes in bf16 ([`Linear::set_compute`]) with
    /// a float weight; `None` when its products take `xs` as it is. Elementwise, so a row of a
    /// stack rounds as it would alone.
    fn rounded_input(&self, xs: &Tensor) -> Result<Option<Tensor>, LlmError> {
        Ok(match (&self.weight, self.compute) {
            (Weight::Quant { .. }, _) | (_, Compute::F32) => None,
            (_, Compute::Bf16) => Some(rounded_bf16(xs)?),
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor, LlmError> {
        let k = self.in_dim;
        if xs.dims().last() != Some(&k) {
            return Err(LlmError::BadInput {
                what: "linear input",
                expected: format!("(..., {k})"),
                actual: xs.dims().to_vec(),
                dtype: xs.dtype(),
            });
        }
        let rounded = self.rounded_input(xs)?;
        let xs = rounded.as_ref().unwrap_or(xs);
        if xs.elem_count() == k {
            if let Some(ys) = self.decode_rows(xs)? {
                return Ok(ys);
            }
        }
        match &self.weight {
            Weight::Dense(w) if xs.dtype() == DType::F32 && w.dtype() == DType::F32 => {
                self.rows_via_f32(xs, usize::MAX, |start, len| Ok(w.narrow(0, start, len)?))
            }
            Weight::Dense(w) => {
                Ok(candle_nn::Linear::new(w.clone(), self.bias.clone()).forward(xs)?)
            }
            Weight::Half { bits, .. } => self.forward_half(xs, bits),
            Weight::Packed(w) => self.packed_rows(xs, w),
            Weight::Quant { qtensor, format } => {
                let xs = xs.to_dtype(DType::F32)?.contiguous()?;
                if xs.device().is_cpu() && xs.elem_count() >= QUANT_GEMM_MIN_ROWS * self.in_dim {
                    return self.quant_rows(&xs, qtensor, *format, WIDEN_CHUNK_WEIGHTS);
                }
                self.add_bias(QMatMul::QTensor(qtensor.clone()).forward(&xs)?)
            }
        }
    }

    /// `y[r] = x[r] · wᵀ + b` for a stack of independent rows `xs` `(rows, in)`, each bitwise
    /// what [`Linear::forward`] gives for that row alone as `(1, 1, in)`: the decode positions
    /// of several sequences in one product that reads every weight once. Where the batched
    /// kernels do not apply (another device, dense weights in a half dtype) each row runs
    /// alone.
    pub(crate) fn forward_rows(&self, xs: &Tensor) -> Result<Tensor, LlmError> {
        let (m, k) = xs.dims2()?;
        if k != self.in_dim {
            return Err(LlmError::BadInput {
                what: "linear input rows",
                expected: format!("(rows, {})", self.in_dim),
                actual: xs.dims().to_vec(),
                dtype: xs.dtype(),
            });
        }
        let rounded = self.rounded_input(xs)?;
        if let Some(ys) = self.decode_rows(rounded.as_ref().unwrap_or(xs))? {
            return Ok(ys);
        }
        let rows = (0..m)
            .map(|r| self.forward(&xs.narrow(0, r, 1)?.unsqueeze(0)?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::cat(&rows, 0)?.reshape((m, self.out_dim))?)
    }

    /// The decode kernels on every row of `xs` (`(..., in)`, rows independent): f32 rows
    /// against dense f32 weights, any float rows (widened to f32) against half or block
    /// weights. `None` off the CPU, for dense weights or rows in another dtype, or block
    /// weights whose rows do not fit their blocks (candle's paths then).
    fn decode_rows(&self, xs: &Tensor) -> Result<Option<Tensor>, LlmError> {
        let (k, n) = (self.in_dim, self.out_dim);
        let m = xs.elem_count() / k.max(1);
        let f32_bias = self.bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
        if !xs.device().is_cpu() || m == 0 || !f32_bias {
            return Ok(None);
        }
        let bias = self.bias_values()?;
        if self.bias.is_some() && bias.is_none() {
            return Ok(None);
        }
        let bias = bias.as_deref();
        let mut out = vec![0.0f32; m * n];
        let done = match &self.weight {
            Weight::Dense(w) if w.dtype() == DType::F32 && xs.dtype() == DType::F32 => {
                with_cpu_slices::<f32, f32, _>(&xs.contiguous()?, w, |x, w| {
                    gemv_batch(x, m, w, bias, &mut out)
                })?
            }
            Weight::Dense(_) => None,
            Weight::Half { bits, kind } => {
                let xs = xs.to_dtype(DType::F32)?.contiguous()?;
                let mut run =
                    |x: &[f32], w: &[u16]| gemv_half_batch(*kind, x, m, w, bias, &mut out);
                match kind {
                    HalfKind::Bf16 => with_cpu_slices::<f32, bf16, _>(&xs, bits, |x, w| {
                        run(x, w.reinterpret_cast())
                    })?,
                    HalfKind::F16 => with_cpu_slices::<f32, f16, _>(&xs, bits, |x, w| {
                        run(x, w.reinterpret_cast())
                    })?,
                }
            }
            Weight::Quant { qtensor, format } => {
                self.quant_decode_rows(xs, qtensor, *format, bias, &mut out)?
            }
            Weight::Packed(w) => {
                let xs = xs.to_dtype(DType::F32)?.contiguous()?;
                with_cpu_slice::<f32, _>(&xs, |x| packed_batch(x, m, w, bias, &mut out))?
            }
        };
        done.map(|()| Tensor::from_vec(out, out_dims(xs, n), xs.device()))
            .transpose()
            .map_err(LlmError::from)
    }

    /// [`Linear::decode_rows`] for block weights: each row quantised to 8-bit blocks on its
    /// own, then [`qgemv_batch`] (`q8_0`, `q4_0`) or [`q4k_gemv_batch`] (`q4_K`).
    fn quant_decode_rows(
        &self,
        xs: &Tensor,
        qtensor: &QTensor,
        format: WeightFormat,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<Option<()>, LlmError> {
        let (k, n) = (self.in_dim, self.out_dim);
        let kind = match format {
            WeightFormat::Q8_0 => Some(BlockKind::Q8_0),
            WeightFormat::Q4_0 => Some(BlockKind::Q4_0),
            WeightFormat::Q4K => None,
            _ => return Ok(None),
        };
        let row_bytes = k / format.block_len() * format.block_bytes();
        if k == 0 || !k.is_multiple_of(format.block_len()) {
            return Ok(None);
        }
        let data = qtensor.data()?;
        let xs = xs.to_dtype(DType::F32)?.contiguous()?;
        let (Some(x), true) = (cpu_vec::<f32>(&xs)?, data.len() == n * row_bytes) else {
            return Ok(None);
        };
        let rows: Vec<QuantRow> = x.chunks_exact(k).map(QuantRow::new).collect();
        match kind {
            Some(kind) => qgemv_batch(kind, &rows, &data, bias, out),
            None => q4k_gemv_batch(&rows, &data, bias, out),
        }
        Ok(Some(()))
    }

    fn add_bias(&self, ys: Tensor) -> Result<Tensor, LlmError> {
        Ok(match &self.bias {
            Some(b) => ys.broadcast_add(b)?,
            None => ys,
        })
    }

    /// Half weights, several rows: [`Linear::half_rows`] (on the CPU, `auris_kernels::linear`
    /// widening blocks of weight rows inside the product).
    fn forward_half(&self, xs: &Tensor, bits: &Tensor) -> Result<Tensor, LlmError> {
        let xs = xs.to_dtype(DType::F32)?.contiguous()?;
        self.half_rows(&xs, bits, WIDEN_CHUNK_WEIGHTS)
    }

    /// Packed weights, several rows: [`linear_into_packed`] widens blocks of panels inside the
    /// product, onto an output that starts as the bias rows.
    fn packed_rows(&self, xs: &Tensor, w: &PackedHalf) -> Result<Tensor, LlmError> {
        let (k, n) = (self.in_dim, self.out_dim);
        let xs = xs.to_dtype(DType::F32)?.contiguous()?;
        let m = xs.elem_count() / k.max(1);
        let x2 = xs.reshape((m, k))?;
        let y = match self.bias_rows(&x2, m)? {
            Some(mut y) => with_cpu_slice::<f32, _>(&x2, |x| {
                linear_into_packed(Compute::F32, &mut y, n, 0, Rows::dense(x, m), w);
                y
            })?,
            None => None,
        };
        let y = y.ok_or_else(|| LlmError::BadInput {
            what: "rows for a packed half-precision weight",
            expected: "f32 rows on the CPU".into(),
            actual: xs.dims().to_vec(),
            dtype: xs.dtype(),
        })?;
        Ok(Tensor::from_vec(y, out_dims(&xs, n), xs.device())?)
    }

    /// `xs · widen(bits)ᵀ (+ bias)` on `chunk_weights / in` weight rows at a time widened to
    /// f32: [`Linear::half_rows_cpu`] on the CPU, candle's matmul elsewhere.
    fn half_rows(
        &self,
        xs: &Tensor,
        bits: &Tensor,
        chunk_weights: usize,
    ) -> Result<Tensor, LlmError> {
        let kind = match bits.dtype() {
            DType::BF16 => HalfKind::Bf16,
            _ => HalfKind::F16,
        };
        if let Some(ys) = self.half_rows_cpu(xs, bits, kind)? {
            return Ok(ys);
        }
        // Off the CPU: candle widens each chunk on the device.
        self.rows_via_f32(xs, chunk_weights, |start, len| {
            Ok(bits.narrow(0, start, len)?.to_dtype(DType::F32)?)
        })
    }

    /// [`Linear::half_rows`] on the CPU: [`linear_into`] widens the weight rows a block at a
    /// time inside the product, onto an output that starts as the bias rows. `None` off the
    /// CPU.
    fn half_rows_cpu(
        &self,
        xs: &Tensor,
        bits: &Tensor,
        kind: HalfKind,
    ) -> Result<Option<Tensor>, LlmError> {
        let (k, n) = (self.in_dim, self.out_dim);
        let m = xs.elem_count() / k.max(1);
        let x2 = xs.reshape((m, k))?;
        let Some(mut y) = self.bias_rows(&x2, m)? else {
            return Ok(None);
        };
        let bits = bits.contiguous()?;
        let done = match kind {
            HalfKind::Bf16 => with_cpu_slices::<f32, bf16, _>(&x2, &bits, |x, w| {
                linear_into(&mut y, n, 0, Rows::dense(x, m), w)
            })?,
            HalfKind::F16 => with_cpu_slices::<f32, f16, _>(&x2, &bits, |x, w| {
                linear_into(&mut y, n, 0, Rows::dense(x, m), w)
            })?,
        };
        if done.is_none() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(y, out_dims(xs, n), xs.device())?))
    }

    /// `xs · dequantise(w)ᵀ (+ bias)` by candle's matmul on `chunk_weights / in` weight rows
    /// at a time dequantised to f32: for many rows, gemm beats integer dots.
    fn quant_rows(
        &self,
        xs: &Tensor,
        qtensor: &QTensor,
        format: WeightFormat,
        chunk_weights: usize,
    ) -> Result<Tensor, LlmError> {
        let k = self.in_dim;
        let row_bytes = k / format.block_len() * format.block_bytes();
        let data = qtensor.data()?;
        self.rows_via_f32(xs, chunk_weights, |start, len| {
            let bytes = &data[start * row_bytes..(start + len) * row_bytes];
            dequantize_rows(format, bytes, len, k)
        })
    }

    /// `xs · wᵀ (+ bias)` with the weight rows `start..start + len` given in f32 by `widen`,
    /// `chunk_weights / in` rows at a time, so one chunk at most is alive. On the CPU each
    /// chunk's product is written by [`linear_into`] straight into its columns of one output
    /// that starts as the bias rows (no per-chunk tensors, no concatenation, no bias pass).
    fn rows_via_f32(
        &self,
        xs: &Tensor,
        chunk_weights: usize,
        widen: impl Fn(usize, usize) -> Result<Tensor, LlmError>,
    ) -> Result<Tensor, LlmError> {
        let (k, n) = (self.in_dim, self.out_dim);
        let m = xs.elem_count() / k.max(1);
        let x2 = xs.reshape((m, k))?;
        let rows_per_chunk = (chunk_weights / k.max(1)).max(1);
        let dims = out_dims(xs, n);
        if let Some(mut y) = self.bias_rows(&x2, m)? {
            for start in (0..n).step_by(rows_per_chunk) {
                let len = rows_per_chunk.min(n - start);
                let w = widen(start, len)?.contiguous()?;
                with_cpu_slices::<f32, f32, _>(&x2, &w, |x, w| {
                    linear_into(&mut y, n, start, Rows::dense(x, m), w)
                })?
                .ok_or(LlmError::Candle(candle_core::Error::Msg(
                    "a widened weight chunk is not on the CPU".into(),
                )))?;
            }
            return Ok(Tensor::from_vec(y, dims, xs.device())?);
        }
        let mut parts = Vec::with_capacity(n.div_ceil(rows_per_chunk));
        for start in (0..n).step_by(rows_per_chunk) {
            let len = rows_per_chunk.min(n - start);
            parts.push(x2.matmul(&widen(start, len)?.t()?)?);
        }
        let ys = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 1)?
        };
        self.add_bias(ys.reshape(dims)?)
    }

    /// The `(m, out)` output of a CPU product initialised with the bias in every row (zeros
    /// without a bias); `None` when `x2` is not contiguous f32 CPU data, or the bias not on
    /// the CPU.
    fn bias_rows(&self, x2: &Tensor, m: usize) -> Result<Option<Vec<f32>>, LlmError> {
        if !x2.device().is_cpu() || x2.dtype() != DType::F32 || !x2.is_contiguous() || m == 0 {
            return Ok(None);
        }
        Ok(match &self.bias {
            Some(b) => cpu_vec::<f32>(b)?.map(|b| b.repeat(m)),
            None => Some(vec![0.0; m * self.out_dim]),
        })
    }

    /// The bias as host values, for the single-row kernels (`None` without a bias, or when it
    /// does not live on the CPU).
    fn bias_values(&self) -> Result<Option<Vec<f32>>, LlmError> {
        Ok(self
            .bias
            .as_ref()
            .map(cpu_vec::<f32>)
            .transpose()?
            .flatten())
    }
}

fn mismatch(field: &'static str, value: &str, need: &str) -> LlmError {
    LlmError::Unsupported {
        field,
        value: value.into(),
        reason: format!("concatenated projections must {need}"),
    }
}

/// `t` in f32 with storage of exactly its elements: candle's `QTensor::quantize` reads the
/// whole storage, ignoring a view's offset (a row slice of a larger tensor).
fn fresh_f32(t: &Tensor) -> Result<Tensor, LlmError> {
    if t.dtype() != DType::F32 {
        // A conversion writes a new storage laid out like the view.
        return Ok(t.to_dtype(DType::F32)?);
    }
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Tensor::from_vec(data, t.dims(), t.device())?)
}

/// `weight` `(out, in)` quantised to the block format `format`, converting at most
/// `chunk_weights` weights (whole rows, at least one) to f32 at a time.
///
/// The bytes equal those of `QTensor::quantize` on the whole tensor: a row is a whole number
/// of blocks and GGML quantises each block on its own. On the CPU the blocks are written in
/// place into the final vector (no second copy of the quantised tensor, see
/// [`quantize_rows_from`]); elsewhere each chunk is quantised on the device and the block
/// bytes are joined.
pub(crate) fn quantize_rows(
    weight: &Tensor,
    format: WeightFormat,
    chunk_weights: usize,
) -> Result<QTensor, LlmError> {
    let (out_dim, in_dim) = weight.dims2()?;
    if weight.device().is_cpu() {
        return quantize_rows_from((out_dim, in_dim), format, chunk_weights, |start, len| {
            Ok(weight.narrow(0, start, len)?)
        });
    }
    let rows_per_chunk = chunk_rows(format, in_dim, chunk_weights)?;
    let dtype = ggml_dtype(format);
    let mut bytes =
        Vec::with_capacity(out_dim * in_dim / format.block_len() * format.block_bytes());
    for start in (0..out_dim).step_by(rows_per_chunk) {
        let len = rows_per_chunk.min(out_dim - start);
        let chunk = fresh_f32(&weight.narrow(0, start, len)?)?;
        bytes.extend_from_slice(&QTensor::quantize(&chunk, dtype)?.data()?);
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), weight.device(), dtype)?;
    Ok(QTensor::new(storage, (out_dim, in_dim))?)
}

/// An `(out, in)` weight quantised on the CPU to the block format `format`, its rows given
/// by `read(start, len)` (rows `start..start + len`, any float dtype, on the CPU) at most
/// `chunk_weights` weights (whole rows, at least one) at a time: the weight is never whole in
/// memory, only the final blocks and one chunk of rows (in its dtype and in f32). The bytes
/// are those of [`quantize_rows`] on the whole tensor.
pub(crate) fn quantize_rows_from(
    dims: (usize, usize),
    format: WeightFormat,
    chunk_weights: usize,
    read: impl FnMut(usize, usize) -> Result<Tensor, LlmError>,
) -> Result<QTensor, LlmError> {
    let rows_per_chunk = chunk_rows(format, dims.1, chunk_weights)?;
    match format {
        WeightFormat::Q8_0 => quantize_rows_cpu::<BlockQ8_0>(dims, rows_per_chunk, read),
        WeightFormat::Q4_0 => quantize_rows_cpu::<BlockQ4_0>(dims, rows_per_chunk, read),
        _ => quantize_rows_cpu::<BlockQ4K>(dims, rows_per_chunk, read),
    }
}

/// Rows of `in_dim` weights converted at once when quantising `chunk_weights` weights at a
/// time (at least one row), or an error when the rows do not fit `format`'s blocks (or it is
/// a float format).
fn chunk_rows(
    format: WeightFormat,
    in_dim: usize,
    chunk_weights: usize,
) -> Result<usize, LlmError> {
    if !format.is_quantized() || !in_dim.is_multiple_of(format.block_len()) {
        return Err(LlmError::Unsupported {
            field: "weights",
            value: format.name().into(),
            reason: format!(
                "cannot quantise rows of {in_dim} weights to {format} (blocks of {})",
                format.block_len()
            ),
        });
    }
    Ok((chunk_weights / in_dim.max(1)).max(1))
}

/// The CPU side of [`quantize_rows_from`]: GGML's `from_float` on each chunk of rows, into its
/// range of the final block vector.
fn quantize_rows_cpu<T: GgmlType + 'static>(
    (out_dim, in_dim): (usize, usize),
    rows_per_chunk: usize,
    mut read: impl FnMut(usize, usize) -> Result<Tensor, LlmError>,
) -> Result<QTensor, LlmError> {
    let blocks_per_row = in_dim / T::BLCK_SIZE;
    let mut blocks = vec![T::zeros(); out_dim * blocks_per_row];
    for start in (0..out_dim).step_by(rows_per_chunk) {
        let len = rows_per_chunk.min(out_dim - start);
        let rows = read(start, len)?;
        if rows.dims() != [len, in_dim] {
            return Err(LlmError::Candle(candle_core::Error::UnexpectedShape {
                msg: format!("rows {start}..{} of a weight to quantise", start + len),
                expected: (len, in_dim).into(),
                got: rows.shape().clone(),
            }));
        }
        let chunk = fresh_f32(&rows)?;
        drop(rows);
        let dst = &mut blocks[start * blocks_per_row..(start + len) * blocks_per_row];
        let done = with_cpu_slice::<f32, _>(&chunk, |xs| T::from_float(xs, dst))?;
        if done.is_none() {
            return Err(LlmError::Unsupported {
                field: "weights",
                value: format!("{:?}", T::DTYPE),
                reason: "the f32 rows to quantise are not contiguous on the CPU".into(),
            });
        }
    }
    Ok(QTensor::new(
        QStorage::Cpu(Box::new(blocks)),
        (out_dim, in_dim),
    )?)
}

fn ggml_dtype(format: WeightFormat) -> GgmlDType {
    match format {
        WeightFormat::F32 => GgmlDType::F32,
        WeightFormat::Bf16 => GgmlDType::BF16,
        WeightFormat::F16 => GgmlDType::F16,
        WeightFormat::Q8_0 => GgmlDType::Q8_0,
        WeightFormat::Q4_0 => GgmlDType::Q4_0,
        WeightFormat::Q4K => GgmlDType::Q4K,
    }
}

fn cat_tensors(
    parts: &[Linear],
    pick: impl Fn(&Weight) -> Option<&Tensor>,
) -> Result<Tensor, LlmError> {
    let tensors = parts
        .iter()
        .map(|p| pick(&p.weight))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| mismatch("weight", "mixed storage", "share one storage format"))?;
    Ok(Tensor::cat(&tensors, 0)?)
}

/// Stacks GGML tensors by rows: a row is a whole number of blocks, so the rows of the result
/// are the parts' bytes one after the other.
fn cat_quant(
    parts: &[Linear],
    format: WeightFormat,
    out_dim: usize,
    in_dim: usize,
) -> Result<QTensor, LlmError> {
    let mut bytes = Vec::new();
    for p in parts {
        match &p.weight {
            Weight::Quant { qtensor, format: f } if *f == format => {
                bytes.extend_from_slice(&qtensor.data()?)
            }
            _ => {
                return Err(mismatch(
                    "weight",
                    "mixed storage",
                    "share one storage format",
                ))
            }
        }
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, ggml_dtype(format))?;
    Ok(QTensor::new(storage, (out_dim, in_dim))?)
}

/// `t` in f32 with every value rounded to bf16 (to nearest even): on the CPU by
/// [`auris_kernels::round`], elsewhere by candle's conversion (the same rounding).
pub(crate) fn rounded_bf16(t: &Tensor) -> Result<Tensor, LlmError> {
    let t = t.to_dtype(DType::F32)?;
    match with_cpu_slice::<f32, _>(&t, auris_kernels::round::rounded_bf16)? {
        Some(values) => Ok(Tensor::from_vec(values, t.dims(), t.device())?),
        None => Ok(t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?),
    }
}

/// A contiguous CPU tensor's values, or `None` elsewhere.
fn cpu_vec<T: WithDType>(t: &Tensor) -> Result<Option<Vec<T>>, LlmError> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    Ok(Some(cpu.as_slice::<T>()?[a..b].to_vec()))
}

/// `rows` rows of `k` weights in the block format `format`, given as their GGML bytes,
/// dequantised to an f32 CPU tensor `(rows, k)`.
pub(crate) fn dequantize_rows(
    format: WeightFormat,
    bytes: &[u8],
    rows: usize,
    k: usize,
) -> Result<Tensor, LlmError> {
    let w = match format {
        WeightFormat::Q8_0 => dequantize_par(BlockKind::Q8_0, bytes),
        WeightFormat::Q4_0 => dequantize_par(BlockKind::Q4_0, bytes),
        _ => {
            let storage =
                QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, ggml_dtype(format))?;
            return Ok(QTensor::new(storage, (rows, k))?.dequantize(&Device::Cpu)?);
        }
    };
    Ok(Tensor::from_vec(w, (rows, k), &Device::Cpu)?)
}

/// Runs `f` on the contiguous CPU data of `t`, or returns `None` when it is not contiguous on
/// the CPU.
pub(crate) fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<Option<R>, LlmError> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    Ok(Some(f(&cpu.as_slice::<T>()?[a..b])))
}

/// Runs `f` on the contiguous CPU data of `x` and `w`, or returns `None` when either is not
/// contiguous on the CPU.
fn with_cpu_slices<X: WithDType, W: WithDType, R>(
    x: &Tensor,
    w: &Tensor,
    f: impl FnOnce(&[X], &[W]) -> R,
) -> Result<Option<R>, LlmError> {
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = w.storage_and_layout();
    let (Storage::Cpu(x_cpu), Storage::Cpu(w_cpu)) = (&*x_storage, &*w_storage) else {
        return Ok(None);
    };
    let (Some((x0, x1)), Some((w0, w1))) =
        (x_layout.contiguous_offsets(), w_layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    let x = &x_cpu.as_slice::<X>()?[x0..x1];
    let w = &w_cpu.as_slice::<W>()?[w0..w1];
    Ok(Some(f(x, w)))
}

/// The dims of `xs` with the last replaced by `n`: a product's output shape.
pub(crate) fn out_dims(xs: &Tensor, n: usize) -> Vec<usize> {
    let mut dims = xs.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    dims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
            .collect()
    }

    fn tensor(len: usize, scale: f32, shape: &[usize]) -> Tensor {
        Tensor::from_vec(ramp(len, scale), shape, &Device::Cpu).unwrap()
    }

    fn assert_close(a: &[f32], e: &[f32], rel: f32) {
        assert_eq!(a.len(), e.len());
        let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, e)) in a.iter().zip(e).enumerate() {
            assert!(
                (a - e).abs() <= rel * scale,
                "[{i}] {a} vs {e} (scale {scale})"
            );
        }
    }

    #[test]
    fn one_row_matches_candle_linear() {
        let (k, n) = (19, 13);
        let w = tensor(n * k, 0.01, &[n, k]);
        let b = tensor(n, 0.1, &[n]);
        let ours = Linear::new(w.clone(), Some(b.clone())).unwrap();
        let theirs = candle_nn::Linear::new(w.clone(), Some(b));
        // A single row, also as the last position narrowed out of a longer sequence.
        let seq = tensor(3 * k, 0.02, &[1, 3, k]);
        for xs in [seq.narrow(1, 2, 1).unwrap(), seq.narrow(1, 0, 1).unwrap()] {
            assert!(ours.decode_rows(&xs).unwrap().is_some());
            let a = values(ours.forward(&xs).unwrap());
            let e = values(theirs.forward(&xs).unwrap());
            assert_eq!(ours.forward(&xs).unwrap().dims(), &[1, 1, n]);
            for (a, e) in a.iter().zip(&e) {
                assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "{a} vs {e}");
            }
        }
        // Several rows take candle's path and give its exact result.
        let a = values(ours.forward(&seq).unwrap());
        let e = values(theirs.forward(&seq).unwrap());
        assert_eq!(a, e);
    }

    /// bf16/f16 storage equals the f32 layer on the upcast weights, one row or several
    /// (including a widening split into uneven chunks of rows), up to summation order.
    #[test]
    fn half_storage_equals_f32_on_upcast_weights() {
        let (k, n) = (37, 29);
        let w = tensor(n * k, 0.013, &[n, k]);
        let b = tensor(n, 0.1, &[n]);
        for (format, dtype) in [
            (WeightFormat::Bf16, DType::BF16),
            (WeightFormat::F16, DType::F16),
        ] {
            let ours = Linear::with_format(&w.to_dtype(dtype).unwrap(), Some(&b), format).unwrap();
            assert_eq!(ours.format(), format);
            assert_eq!(ours.weight_bytes(), 2 * n * k);
            let upcast = w.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let theirs = candle_nn::Linear::new(upcast, Some(b.clone()));
            let seq = tensor(4 * k, 0.02, &[2, 2, k]);
            let one = seq.narrow(0, 1, 1).unwrap().narrow(1, 1, 1).unwrap();
            for xs in [&one, &seq] {
                let e = values(theirs.forward(xs).unwrap());
                assert_close(&values(ours.forward(xs).unwrap()), &e, 1e-5);
                // The embeddings' dtype does not matter: they are widened first.
                let xs16 = xs.to_dtype(DType::BF16).unwrap();
                let e16 = values(theirs.forward(&xs16.to_dtype(DType::F32).unwrap()).unwrap());
                assert_close(&values(ours.forward(&xs16).unwrap()), &e16, 1e-5);
            }
            let Weight::Half { bits, .. } = &ours.weight else {
                panic!("{format} is not stored as half");
            };
            let xs = seq.contiguous().unwrap();
            let chunked = ours.half_rows(&xs, bits, 5 * k).unwrap();
            assert_eq!(chunked.dims(), &[2, 2, n]);
            assert_close(
                &values(chunked),
                &values(theirs.forward(&seq).unwrap()),
                1e-5,
            );
            // Packed in panels: the same products, one row or several, in another layout.
            let mut packed = ours.clone();
            packed.pack().unwrap();
            assert!(packed.packed().is_some(), "{format}");
            assert_eq!(
                (packed.format(), packed.weight_bytes()),
                (format, 2 * n * k)
            );
            for xs in [&one, &seq] {
                let e = values(theirs.forward(xs).unwrap());
                assert_close(&values(packed.forward(xs).unwrap()), &e, 1e-5);
            }
            // Concatenated with itself: the rows of both, packed again.
            let both = Linear::concat(&[packed.clone(), packed.clone()]).unwrap();
            let twice = values(both.forward(&seq).unwrap());
            let once = values(packed.forward(&seq).unwrap());
            for (t, o) in twice.chunks_exact(2 * n).zip(once.chunks_exact(n)) {
                assert_eq!((&t[..n], &t[n..]), (o, o));
            }
        }
    }

    /// A stack of independent rows gives each row bitwise what the row alone gives through
    /// `forward`, for every storage (the batched kernels), for dense half weights (each row
    /// alone) and with rows of several dtypes; 1 to 3 threads.
    #[test]
    fn stacked_rows_equal_each_row_alone_bit_for_bit() {
        let (n, k, m) = (301, 256, 6);
        let w = weights(n, k, 21);
        let b = tensor(n, 0.1, &[n]);
        let xs = weights(m, k, 22);
        let mut layers: Vec<Linear> = WeightFormat::ALL
            .into_iter()
            .map(|f| Linear::with_format(&w, Some(&b), f).unwrap())
            .collect();
        let dense_bf16 = w.to_dtype(DType::BF16).unwrap();
        layers.push(Linear::new(dense_bf16, Some(b.to_dtype(DType::BF16).unwrap())).unwrap());
        let mut packed = Linear::with_format(&w, Some(&b), WeightFormat::Bf16).unwrap();
        packed.pack().unwrap();
        assert!(packed.packed().is_some());
        layers.push(packed);
        for lin in &layers {
            let xs = match lin.format() {
                WeightFormat::Bf16 if matches!(lin.weight, Weight::Dense(_)) => {
                    xs.to_dtype(DType::BF16).unwrap()
                }
                _ => xs.clone(),
            };
            let alone: Vec<Vec<f32>> = (0..m)
                .map(|r| {
                    let row = xs.narrow(0, r, 1).unwrap().unsqueeze(0).unwrap();
                    let y = lin.forward(&row).unwrap();
                    assert_eq!(y.dims(), &[1, 1, n]);
                    values(y.to_dtype(DType::F32).unwrap())
                })
                .collect();
            for threads in 1..=3 {
                for rows in [1, 2, 5, 6] {
                    let x = xs.narrow(0, m - rows, rows).unwrap();
                    let y = auris_kernels::test_values::on_threads(threads, || {
                        lin.forward_rows(&x).unwrap()
                    });
                    assert_eq!(y.dims(), &[rows, n]);
                    let got = values(y.to_dtype(DType::F32).unwrap());
                    for (r, g) in got.chunks_exact(n).enumerate() {
                        let a = &alone[m - rows + r];
                        let same = g.iter().zip(a).all(|(g, a)| g.to_bits() == a.to_bits());
                        assert!(
                            same,
                            "{} threads={threads} rows={rows} row {r}",
                            lin.format()
                        );
                    }
                }
            }
        }
        assert!(layers[0].forward_rows(&weights(2, k + 1, 1)).is_err());
    }

    /// Deterministic values in [-1, 1) with a few outliers, like trained weights.
    fn weights(n: usize, k: usize, seed: u64) -> Tensor {
        let data = crate::test_values::with_outliers(n * k, seed, 4.0);
        Tensor::from_vec(data, (n, k), &Device::Cpu).unwrap()
    }

    /// Quantise → dequantise error per block, against the bound each format guarantees:
    /// `q8_0` rounds to steps of `amax / 127` (error <= half a step, plus the f16 scale's
    /// rounding); `q4_0` has steps of `amax / 8` and clamps the top code, so an error of up
    /// to one step; `q4_k` rounds each sub-block of 32 to 15 steps of its range with 6-bit
    /// scales, bounded here by a fifth of the super-block's `amax`.
    #[test]
    fn quantise_round_trip_error_is_bounded() {
        let (n, k) = (8, 512);
        let w = weights(n, k, 7);
        let orig = values(w.clone());
        for (format, block, bound) in [
            (WeightFormat::Q8_0, 32, 0.5 / 127.0 + 2e-3),
            (WeightFormat::Q4_0, 32, 1.0 / 8.0 + 2e-3),
            (WeightFormat::Q4K, 256, 1.0 / 5.0),
        ] {
            let lin = Linear::with_format(&w, None, format).unwrap();
            assert_eq!(lin.format(), format);
            let expect_bytes = n * k / format.block_len() * format.block_bytes();
            assert_eq!(lin.weight_bytes(), expect_bytes, "{format}");
            let Weight::Quant { qtensor, .. } = &lin.weight else {
                panic!("{format} is not quantised");
            };
            let back = values(qtensor.dequantize(&Device::Cpu).unwrap());
            let mut sq = 0.0f64;
            for (o, b) in orig.chunks(block).zip(back.chunks(block)) {
                let amax = o.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (x, y) in o.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= bound * amax,
                        "{format}: {x} -> {y}, amax {amax}"
                    );
                    sq += f64::from(x - y).powi(2);
                }
            }
            let rms = (sq / orig.len() as f64).sqrt();
            assert!(rms > 0.0, "{format} round trip is exact: not quantised?");
        }
    }

    /// Quantising a few rows at a time gives the bytes of quantising the whole tensor at
    /// once, for every block format, rows spanning several uneven chunks (45 rows, 7 per
    /// chunk), a bf16 source, and an f32 row slice of a larger tensor (a view with an offset,
    /// which candle's `QTensor::quantize` alone would misread).
    #[test]
    fn chunked_quantisation_is_bit_identical_to_whole() {
        let (n, k) = (45, 512);
        let big = weights(n + 3, k, 9);
        let sliced = big.narrow(0, 3, n).unwrap();
        let bf16 = weights(n, k, 11).to_dtype(DType::BF16).unwrap();
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4K] {
            for src in [&sliced, &bf16] {
                let whole_f32 = Tensor::from_vec(
                    values(src.to_dtype(DType::F32).unwrap()),
                    (n, k),
                    &Device::Cpu,
                )
                .unwrap();
                let whole = QTensor::quantize(&whole_f32, ggml_dtype(format)).unwrap();
                let chunked = quantize_rows(src, format, 7 * k + 5).unwrap();
                assert_eq!(chunked.shape().dims(), &[n, k]);
                let (a, e) = (chunked.data().unwrap(), whole.data().unwrap());
                assert_eq!(a.len(), n * k / format.block_len() * format.block_bytes());
                assert!(
                    a == e,
                    "{format} on {:?}: chunked bytes differ",
                    src.dtype()
                );
                // One row per chunk, the smallest chunk, is no different.
                assert!(quantize_rows(src, format, 1).unwrap().data().unwrap() == e);
            }
        }
        // Rows that do not fit the block, or a float format, are an error, not a panic.
        assert!(quantize_rows(&weights(2, 48, 1), WeightFormat::Q8_0, 64).is_err());
        assert!(quantize_rows(&sliced, WeightFormat::Bf16, 64).is_err());
    }

    /// The quantised product equals the f32 product on the dequantised weights up to the
    /// activations' rounding to 8 bits (3% of the largest output: the activations have
    /// outliers, which coarsen their blocks' steps), is close to the f32
    /// product on the original weights (the weights' own rounding: 1% for `q8_0`, 15% for
    /// the 4-bit formats on these outlier-laden weights), and single-row and multi-row
    /// products agree.
    #[test]
    fn quantised_products_are_close_to_f32() {
        let (n, k) = (45, 256);
        let w = weights(n, k, 3);
        let b = tensor(n, 0.1, &[n]);
        let theirs = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let xs = weights(3, k, 5).reshape((1, 3, k)).unwrap();
        let e = values(theirs.forward(&xs).unwrap());
        for (format, rel) in [
            (WeightFormat::Q8_0, 0.01),
            (WeightFormat::Q4_0, 0.15),
            (WeightFormat::Q4K, 0.15),
        ] {
            let lin = Linear::with_format(&w, Some(&b), format).unwrap();
            let Weight::Quant { qtensor, .. } = &lin.weight else {
                panic!("{format} is not quantised");
            };
            let deq = qtensor.dequantize(&Device::Cpu).unwrap();
            let exact = candle_nn::Linear::new(deq, Some(b.clone()));
            let all = values(lin.forward(&xs).unwrap());
            assert_close(&all, &values(exact.forward(&xs).unwrap()), 0.03);
            assert_close(&all, &e, rel);
            // One row runs our kernel, several candle's: both quantise the activations to 8
            // bits, candle with its scale rounded to f16, so they differ by that rounding.
            let last = values(lin.forward(&xs.narrow(1, 2, 1).unwrap()).unwrap());
            assert_close(&last, &all[2 * n..], 0.01);
        }
    }

    /// Many rows dequantise chunks of weight rows for gemm: the result is the f32 product on
    /// the dequantised weights (no activation rounding), for every format and uneven chunks.
    #[test]
    fn quantised_many_rows_equal_f32_on_dequantised_weights() {
        let (n, k, m) = (45, 256, QUANT_GEMM_MIN_ROWS + 1);
        let w = weights(n, k, 3);
        let b = tensor(n, 0.1, &[n]);
        let xs = weights(m, k, 5).reshape((1, m, k)).unwrap();
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4K] {
            let lin = Linear::with_format(&w, Some(&b), format).unwrap();
            let Weight::Quant { qtensor, .. } = &lin.weight else {
                panic!("{format} is not quantised");
            };
            let deq = qtensor.dequantize(&Device::Cpu).unwrap();
            let e = values(
                candle_nn::Linear::new(deq, Some(b.clone()))
                    .forward(&xs)
                    .unwrap(),
            );
            assert_close(&values(lin.forward(&xs).unwrap()), &e, 1e-5);
            let chunked = lin.quant_rows(&xs, qtensor, format, 7 * k).unwrap();
            assert_eq!(chunked.dims(), &[1, m, n]);
            assert_close(&values(chunked), &e, 1e-5);
        }
    }

    /// auris-kernels' reading of the `q4_K` layout equals candle's `dequantize`: its products
    /// at every level equal the f64 product of the quantised activations and candle's
    /// dequantised weights, on 1 to 3 threads.
    #[test]
    fn q4k_kernel_matches_candles_dequantised_weights() {
        for &(n, k) in &[(1, 256), (3, 512), (37, 768), (301, 1024)] {
            let w = crate::test_values::values(n * k, 3 + n as u64);
            let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
            let deq = values(q.dequantize(&Device::Cpu).unwrap());
            let deq: Vec<f64> = deq.into_iter().map(f64::from).collect();
            auris_kernels::test_values::check_q4k_against(&q.data().unwrap(), &deq, n, k);
        }
    }

    /// Rows that do not fit a block format fall back as documented, and concatenation keeps
    /// the storage, never a panic.
    #[test]
    fn rows_that_do_not_fit_the_block_fall_back() {
        let w = weights(6, 48, 1);
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4K] {
            let lin = Linear::with_format(&w, None, format).unwrap();
            assert_eq!(lin.format(), WeightFormat::Bf16, "{format} on k = 48");
            let xs = weights(1, 48, 2);
            assert_eq!(lin.forward(&xs).unwrap().dims(), &[1, 6]);
        }
        let w = weights(6, 96, 1);
        let parts = [
            Linear::with_format(&w, None, WeightFormat::Q4K).unwrap(),
            Linear::with_format(&w.narrow(0, 0, 3).unwrap(), None, WeightFormat::Q4K).unwrap(),
        ];
        assert_eq!(parts[0].format(), WeightFormat::Q4_0);
        let cat = Linear::concat(&parts).unwrap();
        assert_eq!(cat.format(), WeightFormat::Q4_0);
        let xs = weights(1, 96, 2);
        let whole = values(cat.forward(&xs).unwrap());
        assert_eq!(&whole[..6], &values(parts[0].forward(&xs).unwrap())[..]);
        assert_eq!(&whole[6..], &values(parts[1].forward(&xs).unwrap())[..]);
        // Mixed storage cannot share one product.
        let mixed = [
            Linear::with_format(&w, None, WeightFormat::Q8_0).unwrap(),
            Linear::with_format(&w, None, WeightFormat::Bf16).unwrap(),
        ];
        assert!(Linear::concat(&mixed).is_err());
        let wrong = Linear::with_format(&w, None, WeightFormat::Q8_0).unwrap();
        assert!(wrong.forward(&weights(1, 95, 2)).is_err());
    }
}
