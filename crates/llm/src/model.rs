//! The Qwen2 decoder, mirroring transformers'
//! [`modeling_qwen2.py`](https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2/modeling_qwen2.py)
//! (eager attention), driven by embeddings and a caller-owned [`KvCache`].

use std::cell::OnceCell;
use std::sync::Arc;

use auris_kernels::activation::silu_gate;
use auris_kernels::attention::{Attention as FusedAttention, Layout, Visible};
use auris_kernels::round::Compute;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::embedding::Embedding;
use crate::linear::{
    out_dims, quantize_rows_from, rounded_bf16, with_cpu_slice, Linear, QUANTIZE_CHUNK_WEIGHTS,
};
use crate::plan::{table_format, tensor_parts, tied_head_shares_table};
use crate::{HiddenAct, KvCache, LlmError, LoadOptions, Qwen2Config, RowReader, WeightFormat};

/// How the layers store their weights, and where those quantised at load are read from.
#[derive(Clone, Copy)]
pub(crate) struct Storage<'r> {
    /// `None` computes in the `VarBuilder`'s dtype ([`Qwen2Decoder::load`]); a format stores
    /// the linears that way and computes in f32 ([`Qwen2Decoder::load_with`]).
    pub(crate) format: Option<WeightFormat>,
    /// Where a weight stored in a block format is read from, by ranges of rows
    /// ([`Qwen2Decoder::load_with_rows`]); `None`: whole, through the `VarBuilder`, then
    /// quantised a chunk of rows at a time.
    pub(crate) rows: Option<&'r dyn RowReader>,
    /// Weights (whole rows, at least one) converted to f32 at a time while quantising.
    pub(crate) chunk_weights: usize,
}

impl<'r> Storage<'r> {
    /// Linears stored as `format` (`None`: in the `VarBuilder`'s dtype), quantised ones read
    /// through `rows` when given.
    fn new(format: Option<WeightFormat>, rows: Option<&'r dyn RowReader>) -> Self {
        Self {
            format,
            rows,
            chunk_weights: QUANTIZE_CHUNK_WEIGHTS,
        }
    }

    /// Tensor `name` under `vb`, `(out, in)`, quantised to `format` from chunks of its rows
    /// read through [`Storage::rows`], each converted to `vb`'s dtype first as a whole read
    /// would be (so the blocks are those of quantising the whole tensor). `None` when there is
    /// no reader, `format` is not a block format or the device is not the CPU: the caller then
    /// reads the tensor whole.
    fn quantize(
        &self,
        vb: &VarBuilder,
        name: &str,
        (out_dim, in_dim): (usize, usize),
        format: WeightFormat,
    ) -> Result<Option<Arc<QTensor>>, LlmError> {
        let Some(rows) = self.rows else {
            return Ok(None);
        };
        if !format.is_quantized() || !vb.device().is_cpu() {
            return Ok(None);
        }
        let full = full_name(vb, name);
        let shape = rows
            .shape(&full)
            .ok_or_else(|| LlmError::MissingTensor { name: full.clone() })?;
        let load = |source| LlmError::Load {
            name: full.clone(),
            source,
        };
        if shape != [out_dim, in_dim] {
            return Err(load(candle_core::Error::UnexpectedShape {
                msg: "the checkpoint's tensor has the wrong shape".into(),
                expected: (out_dim, in_dim).into(),
                got: shape.into(),
            }));
        }
        let dtype = vb.dtype();
        let qtensor = quantize_rows_from(
            (out_dim, in_dim),
            format,
            self.chunk_weights,
            |start, len| {
                rows.read_rows(&full, start..start + len)
                    .and_then(|t| t.to_dtype(dtype))
                    .map_err(load)
            },
        )?;
        Ok(Some(Arc::new(qtensor)))
    }
}

/// Reads `name` under `vb`, naming the full tensor path when it is missing or malformed.
fn tensor(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor, LlmError> {
    let full = full_name(vb, name);
    if !vb.contains_tensor(name) {
        return Err(LlmError::MissingTensor { name: full });
    }
    vb.get(shape, name)
        .map_err(|source| LlmError::Load { name: full, source })
}

fn full_name(vb: &VarBuilder, name: &str) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn linear(
    vb: VarBuilder,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    storage: Storage,
) -> Result<Linear, LlmError> {
    let format = storage.format.map(|f| f.for_row_len(in_dim));
    if let Some(format) = format {
        if let Some(qtensor) = storage.quantize(&vb, "weight", (out_dim, in_dim), format)? {
            let bias = bias.then(|| tensor(&vb, &[out_dim], "bias")).transpose()?;
            return Linear::quantized(qtensor, bias.as_ref(), format);
        }
    }
    let weight = tensor(&vb, &[out_dim, in_dim], "weight")?;
    let bias = bias.then(|| tensor(&vb, &[out_dim], "bias")).transpose()?;
    match storage.format {
        None => Linear::new(weight, bias),
        Some(format) => Linear::with_format(&weight, bias.as_ref(), format),
    }
}

/// The embedding table under `vb`, `(vocab, hidden)`: quantised to its
/// [`WeightFormat::embedding_format`] when [`table_format`] allows it (read by rows when
/// `storage` has a reader), else in `vb`'s dtype.
fn embedding(cfg: &Qwen2Config, vb: &VarBuilder, storage: Storage) -> Result<Embedding, LlmError> {
    let dims = (cfg.vocab_size, cfg.hidden_size);
    let asked = storage.format.and_then(WeightFormat::embedding_format);
    if let Some(format) = table_format(asked, cfg.hidden_size) {
        if let Some(qtensor) = storage.quantize(vb, "weight", dims, format)? {
            return Embedding::from_quant(qtensor, format);
        }
    }
    Embedding::new(tensor(vb, &[dims.0, dims.1], "weight")?, asked)
}

/// RMSNorm as in `Qwen2RMSNorm`: statistics in f32, the weight applied after casting back.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64, dtype: DType) -> Result<Self, LlmError> {
        Ok(Self {
            weight: tensor(&vb, &[size], "weight")?.to_dtype(dtype)?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, LlmError> {
        let dtype = xs.dtype();
        if dtype == DType::F32 {
            return Ok(candle_nn::ops::rms_norm(
                &xs.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?);
        }
        // transformers rounds the normalised activations to the model dtype *before* the
        // weight multiply; candle's fused kernel multiplies in f32, which differs by an ulp.
        let xs32 = xs.to_dtype(DType::F32)?;
        let mean_sq = xs32.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_rms = (mean_sq + self.eps)?.sqrt()?.recip()?;
        let normed = xs32.broadcast_mul(&inv_rms)?.to_dtype(dtype)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// Non-interleaved ("rotate_half") RoPE with `inv_freq` computed in f32 like
/// `Qwen2RotaryEmbedding`.
#[derive(Debug, Clone)]
struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    fn new(cfg: &Qwen2Config) -> Self {
        let dim = cfg.head_dim();
        let base = cfg.rope_theta() as f32;
        let inv_freq = (0..dim)
            .step_by(2)
            .map(|i| 1.0f32 / base.powf(i as f32 / dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` of `position * inv_freq` for positions `start..start + len`, each
    /// `(len, head_dim / 2)`, computed in f32 and cast to `dtype`.
    fn cos_sin(
        &self,
        start: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor), LlmError> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in start..start + len {
            let pos = pos as f32;
            for &f in &self.inv_freq {
                let angle = pos * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Positions one prefill pass holds scores for (see [`Qwen2Decoder::forward_chunked`]): at
/// 512 a 28-head model attending over 32768 cached positions holds 1.9 GB of f32 scores per
/// pass instead of 120 GB for the whole prompt at once.
pub const PREFILL_CHUNK: usize = 512;

/// Additive mask `(1, 1, len, start + len)` for queries at positions `start..start + len`
/// over keys `0..start + len`: causal, and with a window `w` a query at `q` also skips keys
/// `k <= q - w` (transformers' `sliding_window_overlay`). `None` when nothing is masked.
fn attention_mask(
    start: usize,
    len: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>, LlmError> {
    let keys = start + len;
    let visible = |q: usize, k: usize| k <= q && window.is_none_or(|w| k + w > q);
    let mut any_masked = false;
    let mut mask = Vec::with_capacity(len * keys);
    for q in start..keys {
        for k in 0..keys {
            if visible(q, k) {
                mask.push(0.0f32);
            } else {
                any_masked = true;
                mask.push(f32::NEG_INFINITY);
            }
        }
    }
    if !any_masked {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(mask, (1, 1, len, keys), device)?))
}

#[derive(Debug, Clone)]
struct Attention {
    /// `q_proj`, `k_proj` and `v_proj` stacked: one product per step instead of three.
    qkv_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    /// Under [`Compute::Bf16`]: queries, keys and values rounded to bf16 as they are made (the
    /// cache holds the rounded keys and values), probabilities before they weigh the values.
    compute: Compute,
}

impl Attention {
    fn load(
        cfg: &Qwen2Config,
        layer: usize,
        vb: VarBuilder,
        storage: Storage,
    ) -> Result<Self, LlmError> {
        let hidden = cfg.hidden_size;
        let num_heads = cfg.num_attention_heads;
        let num_kv_heads = cfg.num_kv_heads();
        let head_dim = cfg.head_dim();
        Ok(Self {
            qkv_proj: Linear::concat(&[
                linear(vb.pp("q_proj"), hidden, num_heads * head_dim, true, storage)?,
                linear(
                    vb.pp("k_proj"),
                    hidden,
                    num_kv_heads * head_dim,
                    true,
                    storage,
                )?,
                linear(
                    vb.pp("v_proj"),
                    hidden,
                    num_kv_heads * head_dim,
                    true,
                    storage,
                )?,
            ])?,
            o_proj: linear(
                vb.pp("o_proj"),
                num_heads * head_dim,
                hidden,
                false,
                storage,
            )?,
            num_heads,
            num_kv_heads,
            head_dim,
            window: cfg.layer_window(layer),
            compute: Compute::F32,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        step: &Step,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor, LlmError> {
        let out = self.attend(&self.qkv_proj.forward(xs)?, step, cache, layer)?;
        self.o_proj.forward(&out)
    }

    /// The attention of `qkv` `(b, s, (heads + 2 kv_heads) * head_dim)`, the stacked
    /// projections of one sequence's new positions, over its cache (to which the new keys and
    /// values are appended): `(b, s, heads * head_dim)`, before `o_proj`.
    fn attend(
        &self,
        qkv: &Tensor,
        step: &Step,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor, LlmError> {
        let (b, s, _) = qkv.dims3()?;
        let heads = |first: usize, n: usize| -> Result<Tensor, LlmError> {
            Ok(qkv
                .narrow(D::Minus1, first * self.head_dim, n * self.head_dim)?
                .reshape((b, s, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = heads(0, self.num_heads)?;
        let k = heads(self.num_heads, self.num_kv_heads)?;
        let v = heads(self.num_heads + self.num_kv_heads, self.num_kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, &step.cos, &step.sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &step.cos, &step.sin)?;
        let (q, k, v) = match self.compute {
            Compute::F32 => (q, k, v),
            Compute::Bf16 => (rounded_bf16(&q)?, rounded_bf16(&k)?, rounded_bf16(&v)?),
        };

        let (k, v) = cache.append(layer, &k, &v)?;
        if let Some(out) = self.fused_prefill(&q, &k, &v)? {
            return Ok(out);
        }
        // Grouped-query attention without copying the cache: the `groups` query heads that
        // share kv head `g` are heads `g * groups .. (g + 1) * groups` (transformers'
        // `repeat_kv` order), so they fold into the row axis of one matmul per kv head.
        let groups = self.num_heads / self.num_kv_heads;
        let kv_len = k.dim(2)?;
        let q = q.reshape((b, self.num_kv_heads, groups * s, self.head_dim))?;

        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?.reshape((
            b,
            self.num_heads,
            s,
            kv_len,
        ))?;
        let scores = match step.mask(self.window)? {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(qkv.dtype())?;
        let probs = match self.compute {
            Compute::F32 => probs,
            Compute::Bf16 => rounded_bf16(&probs)?,
        }
        .reshape((b, self.num_kv_heads, groups * s, kv_len))?;
        Ok(probs
            .matmul(&v)?
            .reshape((b, self.num_heads, s, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, s, self.num_heads * self.head_dim))?)
    }
}

impl Attention {
    /// Several f32 queries of one sequence on the CPU, through the fused attention kernel
    /// (causal, the layer's sliding window, grouped-query heads read in place from the cache):
    /// no `(heads, s, keys)` logits, mask and probability tensors. `None` where it does not
    /// apply (decoding one token, another device or dtype, a batch); the caller then runs the
    /// unfused path. `q` is `(1, heads, s, head_dim)`, `k` and `v` the cache's views.
    fn fused_prefill(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Option<Tensor>, LlmError> {
        let (b, _, s, _) = q.dims4()?;
        let kv_len = k.dim(2)?;
        let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
        if b != 1 || s < 2 || !(f32_cpu(q) && f32_cpu(k) && f32_cpu(v)) {
            return Ok(None);
        }
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (
            candle_core::Storage::Cpu(qc),
            candle_core::Storage::Cpu(kc),
            candle_core::Storage::Cpu(vc),
        ) = (&*qs, &*ks, &*vs)
        else {
            return Ok(None);
        };
        let (Some(qlay), Some(klay), Some(vlay)) =
            (heads_layout(ql), heads_layout(kl), heads_layout(vl))
        else {
            return Ok(None);
        };
        let fused = FusedAttention {
            q: (qc.as_slice::<f32>()?, qlay),
            k: (kc.as_slice::<f32>()?, klay),
            v: (vc.as_slice::<f32>()?, vlay),
            queries: s,
            keys: kv_len,
            heads: self.num_heads,
            kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            visible: Visible::Causal {
                start: kv_len - s,
                window: self.window,
            },
        }
        .run_with(None, self.compute);
        let d = self.num_heads * self.head_dim;
        Ok(Some(Tensor::from_vec(fused.out, (1, s, d), q.device())?))
    }
}

/// Where the (row, head) elements of a `(1, heads, rows, head_dim)` tensor are in its storage,
/// or `None` when a head's elements are not contiguous.
fn heads_layout(layout: &candle_core::Layout) -> Option<Layout> {
    match layout.stride() {
        &[_, head_stride, row_stride, 1] => Some(Layout {
            offset: layout.start_offset(),
            row_stride,
            head_stride,
        }),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    /// `gate_proj` and `up_proj` stacked: one product per step instead of two.
    gate_up_proj: Linear,
    intermediate: usize,
    down_proj: Linear,
    act: HiddenAct,
}

impl Mlp {
    fn load(cfg: &Qwen2Config, vb: VarBuilder, storage: Storage) -> Result<Self, LlmError> {
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_up_proj: Linear::concat(&[
                linear(vb.pp("gate_proj"), hidden, inter, false, storage)?,
                linear(vb.pp("up_proj"), hidden, inter, false, storage)?,
            ])?,
            intermediate: inter,
            down_proj: linear(vb.pp("down_proj"), inter, hidden, false, storage)?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, LlmError> {
        self.down_proj
            .forward(&self.gate(&self.gate_up_proj.forward(xs)?)?)
    }

    /// [`Mlp::forward`] on a stack of independent rows `(rows, hidden)` ([`Linear::forward_rows`]).
    fn forward_rows(&self, xs: &Tensor) -> Result<Tensor, LlmError> {
        self.down_proj
            .forward_rows(&self.gate(&self.gate_up_proj.forward_rows(xs)?)?)
    }

    /// `act(gate) * up` from the stacked `gate_up` projections.
    fn gate(&self, gate_up: &Tensor) -> Result<Tensor, LlmError> {
        if let Some(hidden) = self.silu_gate_cpu(gate_up)? {
            return Ok(hidden);
        }
        let gate = gate_up.narrow(D::Minus1, 0, self.intermediate)?;
        let gate = match self.act {
            HiddenAct::Silu => gate.silu()?,
            HiddenAct::Gelu => gate.gelu_erf()?,
            HiddenAct::GeluTanh => gate.gelu()?,
            HiddenAct::Relu => gate.relu()?,
        };
        let up = gate_up.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        Ok((gate * up)?)
    }

    /// `silu(gate) * up` in one vectorised pass ([`auris_kernels::activation::silu_gate`]) when
    /// the activation is SiLU and `gate_up` contiguous f32 CPU data; `None` otherwise.
    fn silu_gate_cpu(&self, gate_up: &Tensor) -> Result<Option<Tensor>, LlmError> {
        if self.act != HiddenAct::Silu || gate_up.dtype() != DType::F32 {
            return Ok(None);
        }
        let Some(hidden) =
            with_cpu_slice::<f32, _>(gate_up, |gu| silu_gate(gu, self.intermediate))?
        else {
            return Ok(None);
        };
        let dims = out_dims(gate_up, self.intermediate);
        Ok(Some(Tensor::from_vec(hidden, dims, gate_up.device())?))
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// The layer's four products: attention's qkv and output, the MLP's gate+up and down.
    fn linears(&self) -> [&Linear; 4] {
        [
            &self.self_attn.qkv_proj,
            &self.self_attn.o_proj,
            &self.mlp.gate_up_proj,
            &self.mlp.down_proj,
        ]
    }

    /// [`DecoderLayer::linears`], to change them.
    fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [
            &mut self.self_attn.qkv_proj,
            &mut self.self_attn.o_proj,
            &mut self.mlp.gate_up_proj,
            &mut self.mlp.down_proj,
        ]
    }

    fn load(
        cfg: &Qwen2Config,
        layer: usize,
        vb: VarBuilder,
        storage: Storage,
        dtype: DType,
    ) -> Result<Self, LlmError> {
        let (hidden, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: Attention::load(cfg, layer, vb.pp("self_attn"), storage)?,
            mlp: Mlp::load(cfg, vb.pp("mlp"), storage)?,
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), hidden, eps, dtype)?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                hidden,
                eps,
                dtype,
            )?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        step: &Step,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor, LlmError> {
        let attn =
            self.self_attn
                .forward(&self.input_layernorm.forward(xs)?, step, cache, layer)?;
        let xs = (xs + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }

    /// [`DecoderLayer::forward`] on `xs` `(rows, 1, hidden)`, one new position of each of
    /// `passes`: the norms and residuals row by row, every linear layer in one product over
    /// the stack ([`Linear::forward_rows`]), the attention per sequence on its own cache at
    /// its own position. Row `r` is bitwise [`DecoderLayer::forward`] on row `r` alone.
    fn forward_rows(
        &self,
        xs: &Tensor,
        passes: &mut [&mut Pass<'_>],
        layer: usize,
    ) -> Result<Tensor, LlmError> {
        let (rows, _, hidden) = xs.dims3()?;
        let attn = &self.self_attn;
        let normed = self.input_layernorm.forward(xs)?.reshape((rows, hidden))?;
        let qkv = attn.qkv_proj.forward_rows(&normed)?;
        let outs = passes
            .iter_mut()
            .enumerate()
            .map(|(r, p)| {
                let row = qkv.narrow(0, r, 1)?.unsqueeze(0)?;
                attn.attend(&row, &p.step, p.cache, layer)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outs = Tensor::cat(&outs, 0)?.squeeze(1)?;
        let xs = (xs + attn.o_proj.forward_rows(&outs)?.unsqueeze(1)?)?;
        let normed = self.post_attention_layernorm.forward(&xs)?;
        let mlp = self.mlp.forward_rows(&normed.reshape((rows, hidden))?)?;
        Ok((xs + mlp.unsqueeze(1)?)?)
    }
}

/// One sequence's positions in one pass, which every layer shares: each sequence of a
/// [`Qwen2Decoder::forward_batch`] has its own.
struct Step {
    cos: Tensor,
    sin: Tensor,
    /// Position of the first query (the sequence's cache length), and the number of queries.
    start: usize,
    len: usize,
    device: Device,
    /// The additive masks, built on first use: only the unfused attention path reads them
    /// (the fused CPU kernel takes the visibility as numbers), and a prefill chunk's mask is
    /// `len x (start + len)` floats.
    causal_mask: OnceCell<Option<Tensor>>,
    sliding_mask: OnceCell<Option<Tensor>>,
}

impl Step {
    /// Queries at positions `start..start + len`.
    fn new(
        rope: &Rope,
        start: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, LlmError> {
        let (cos, sin) = rope.cos_sin(start, len, dtype, device)?;
        Ok(Self {
            cos,
            sin,
            start,
            len,
            device: device.clone(),
            causal_mask: OnceCell::new(),
            sliding_mask: OnceCell::new(),
        })
    }

    /// The mask of a layer with sliding window `window` (see [`attention_mask`]).
    fn mask(&self, window: Option<usize>) -> Result<Option<&Tensor>, LlmError> {
        let cell = if window.is_some() {
            &self.sliding_mask
        } else {
            &self.causal_mask
        };
        if cell.get().is_none() {
            // Single-threaded use: the cell is empty, so `set` cannot fail.
            let _ = cell.set(attention_mask(self.start, self.len, window, &self.device)?);
        }
        Ok(cell.get().and_then(Option::as_ref))
    }
}

/// One sequence in one pass through the stack: its activations, positions and cache.
struct Pass<'c> {
    xs: Tensor,
    step: Step,
    cache: &'c mut KvCache,
}

/// One sequence's part of a [`Qwen2Decoder::forward_batch`] call.
#[derive(Debug)]
pub struct SequenceInput<'a> {
    /// The new positions' embeddings, `(batch, seq, hidden)` as for
    /// [`Qwen2Decoder::forward_embeds`] (a batch's rows share the cache and its positions).
    pub embeds: &'a Tensor,
    /// The sequence's cache: the new positions follow what it holds and are appended to it.
    pub cache: &'a mut KvCache,
}

/// A Qwen2 decoder (`Qwen2ForCausalLM`) that takes input embeddings.
///
/// See the crate docs for shapes and the cache contract.
#[derive(Debug, Clone)]
pub struct Qwen2Decoder {
    cfg: Qwen2Config,
    /// In the checkpoint's dtype (the `VarBuilder`'s) or [`WeightFormat::embedding_format`];
    /// gathered rows are cast to `dtype`.
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    weights: WeightFormat,
    dtype: DType,
    compute: Compute,
    device: Device,
}

impl Qwen2Decoder {
    /// Validates `cfg` and loads the weights from `vb`, which must sit at the checkpoint prefix
    /// of the language model (`language_model` in a Qwen2-Audio checkpoint).
    ///
    /// Reads `model.embed_tokens.weight`, `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}`,
    /// `model.layers.{i}.self_attn.o_proj.weight`, `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
    /// `model.layers.{i}.{input,post_attention}_layernorm.weight`, `model.norm.weight` and,
    /// unless `tie_word_embeddings`, `lm_head.weight` (see [`Qwen2Decoder::tensor_names`]).
    /// Computation happens in `vb.dtype()` on `vb.device()`. `vb` must answer
    /// `contains_tensor` truthfully (safetensors or an explicit tensor map; a lazily
    /// initialising `VarMap` does not).
    pub fn load(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self, LlmError> {
        Self::load_impl(cfg, vb, Storage::new(None, None))
    }

    /// Like [`Qwen2Decoder::load`], but keeps the linear weights in `options.weights` and
    /// computes in f32: activations, norms (weights widened to f32), RoPE, attention,
    /// softmax and the KV cache. With [`LoadOptions::compute`] bf16 the products' inputs are
    /// rounded to bf16 (and float weights stored bf16: [`LoadOptions::stored_weights`]).
    ///
    /// `vb`'s dtype is the one tensors are read in (the checkpoint's, e.g. bf16: no
    /// whole-model f32 copy is ever made). `bf16`/`f16` keep each weight in that precision
    /// and widen it inside the product, so the logits equal those of an f32 model on the
    /// upcast weights up to summation order. `q8_0`/`q4_0`/`q4_k` quantise each linear weight
    /// as it is read, converting 32 MiB of rows to f32 at a time (peak memory: the quantised model
    /// plus the tensor being read, in `vb`'s dtype, and one such chunk;
    /// [`Qwen2Decoder::load_with_rows`] reads such a tensor by chunks of rows instead, never
    /// whole). A weight whose
    /// row length does not fit the block size falls back as [`WeightFormat::for_row_len`]
    /// says; the output head gets [`WeightFormat::head_format`] (`q8_0` for the 4-bit
    /// formats). The embedding table gets [`WeightFormat::embedding_format`]: `q8_0` in
    /// the block formats (quantised like the linears, and a tied head of `q8_0` shares it),
    /// `vb`'s dtype in the float formats, and also when `hidden_size` is not a multiple of 32
    /// or the device is not the CPU; looked-up rows are widened (dequantised) to f32.
    /// The fast kernels run on the CPU; on another device the products use candle's ops.
    pub fn load_with(
        cfg: &Qwen2Config,
        vb: VarBuilder,
        options: &LoadOptions,
    ) -> Result<Self, LlmError> {
        Self::load_stored(cfg, vb, options, None)
    }

    /// Every product of the model in `compute` (see [`LoadOptions::compute`]).
    fn set_compute(&mut self, compute: Compute) {
        for layer in &mut self.layers {
            layer.self_attn.compute = compute;
            for linear in layer.linears_mut() {
                linear.set_compute(compute);
            }
        }
        self.lm_head.set_compute(compute);
        self.compute = compute;
    }

    /// [`Qwen2Decoder::load_with`], reading every weight stored in a block format (the
    /// `q8_0`/`q4_0`/`q4_k` linears and output head, the `q8_0` embedding table) through
    /// `rows`, 32 MiB of f32 rows at a time, instead of whole through `vb`: the load then holds
    /// the quantised model and one chunk of rows (read, in `vb`'s dtype, and in f32), never a
    /// whole tensor (the 7B's 156032 × 4096 head is 1.3 GB in bf16). Each chunk is converted
    /// to `vb`'s dtype before f32, as a whole read would be, so the blocks are those
    /// [`Qwen2Decoder::load_with`] makes. Everything else (norms, biases, weights kept as
    /// floats, any weight off the CPU) is read through `vb` as there; `rows` must name
    /// tensors as `vb`'s backend does.
    pub fn load_with_rows(
        cfg: &Qwen2Config,
        vb: VarBuilder,
        options: &LoadOptions,
        rows: &dyn RowReader,
    ) -> Result<Self, LlmError> {
        Self::load_stored(cfg, vb, options, Some(rows))
    }

    /// [`Qwen2Decoder::load_with`], the quantised weights read through `rows` when given.
    fn load_stored(
        cfg: &Qwen2Config,
        vb: VarBuilder,
        options: &LoadOptions,
        rows: Option<&dyn RowReader>,
    ) -> Result<Self, LlmError> {
        let storage = Storage::new(Some(options.stored_weights()), rows);
        let mut model = Self::load_impl(cfg, vb, storage)?;
        model.set_compute(options.compute);
        model.pack_half()?;
        Ok(model)
    }

    /// Packs every linear weight kept in bf16 or f16 on the CPU in panels for the decode
    /// kernels ([`Linear::pack`]); a tied embedding table that holds the same values then looks
    /// its rows up in the packed head rather than keeping a second copy.
    fn pack_half(&mut self) -> Result<(), LlmError> {
        for layer in &mut self.layers {
            for linear in layer.linears_mut() {
                linear.pack()?;
            }
        }
        self.lm_head.pack()?;
        if self.cfg.tie_word_embeddings {
            if let Some(head) = self.lm_head.packed() {
                self.embed_tokens.share_packed(head);
            }
        }
        Ok(())
    }

    pub(crate) fn load_impl(
        cfg: &Qwen2Config,
        vb: VarBuilder,
        storage: Storage,
    ) -> Result<Self, LlmError> {
        cfg.validate()?;
        let dtype = if storage.format.is_some() {
            DType::F32
        } else {
            vb.dtype()
        };
        let model = vb.pp("model");
        // Quantised as it is read, so the checkpoint's table is dropped before the layers load.
        let embed_tokens = embedding(cfg, &model.pp("embed_tokens"), storage)?;
        let layers_vb = model.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(cfg, i, layers_vb.pp(i), storage, dtype))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = RmsNorm::load(model.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps, dtype)?;
        let head_storage = Storage {
            format: storage.format.map(WeightFormat::head_format),
            ..storage
        };
        let lm_head = match (cfg.tie_word_embeddings, head_storage.format) {
            (true, None) => Linear::new(embed_tokens.to_dense()?, None)?,
            (true, Some(format)) => match embed_tokens.quantized() {
                // The same blocks: share them rather than hold the table twice.
                Some((qtensor, f))
                    if tied_head_shares_table(format.for_row_len(cfg.hidden_size), f) =>
                {
                    Linear::from_quant(qtensor.clone(), f)?
                }
                _ => Linear::with_format(&embed_tokens.to_dense()?, None, format)?,
            },
            (false, _) => linear(
                vb.pp("lm_head"),
                cfg.hidden_size,
                cfg.vocab_size,
                false,
                head_storage,
            )?,
        };
        let weights = storage.format.unwrap_or(match vb.dtype() {
            DType::BF16 => WeightFormat::Bf16,
            DType::F16 => WeightFormat::F16,
            _ => WeightFormat::F32,
        });
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rope::new(cfg),
            weights,
            dtype,
            compute: Compute::F32,
            device: vb.device().clone(),
        })
    }

    /// Every tensor [`Qwen2Decoder::load`] reads for `cfg`, relative to its `VarBuilder`.
    ///
    /// With `tie_word_embeddings` a checkpoint may still store `lm_head.weight` (transformers
    /// 5.x saves a copy); it is not read, as transformers ignores it too.
    pub fn tensor_names(cfg: &Qwen2Config) -> Vec<String> {
        tensor_parts(cfg)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    /// The precision of the products' inputs: [`LoadOptions::compute`] after
    /// [`Qwen2Decoder::load_with`], f32 after [`Qwen2Decoder::load`] (whose products take the
    /// compute dtype's values).
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// The compute dtype: the `VarBuilder`'s after [`Qwen2Decoder::load`], f32 after
    /// [`Qwen2Decoder::load_with`]. [`Qwen2Decoder::embed_tokens`] returns it, and
    /// [`Qwen2Decoder::forward_embeds`] casts embeddings of any float dtype to it.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The storage asked for the linear weights ([`LoadOptions::weights`]); after
    /// [`Qwen2Decoder::load`], the format of the `VarBuilder`'s dtype.
    pub fn weight_format(&self) -> WeightFormat {
        self.weights
    }

    /// The storage the output head actually got ([`WeightFormat::head_format`], or a fallback
    /// of [`WeightFormat::for_row_len`]).
    pub fn head_weight_format(&self) -> WeightFormat {
        self.lm_head.format()
    }

    /// Bytes of linear weights (attention, MLP, output head) one decode step reads; the
    /// memory they take, and the numerator of the bandwidth bound on tokens/s.
    pub fn linear_weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(DecoderLayer::linears)
            .map(Linear::weight_bytes)
            .sum();
        layers + self.lm_head.weight_bytes()
    }

    /// The format of the embedding table: `None` when it keeps the checkpoint's dtype,
    /// `Some(q8_0)` when stored as [`WeightFormat::embedding_format`] asks.
    pub fn embedding_format(&self) -> Option<WeightFormat> {
        self.embed_tokens.format()
    }

    /// Bytes the embedding table occupies. A tied head sharing the `q8_0` table is counted
    /// here and in [`Qwen2Decoder::linear_weight_bytes`] (which a decode step reads), but
    /// takes the memory once.
    pub fn embedding_bytes(&self) -> usize {
        self.embed_tokens.bytes()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh, empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Looks up token embeddings: `ids` `(batch, seq)` of an integer dtype (u32, u8 or i64) to
    /// `(batch, seq, hidden)` in the compute dtype ([`Qwen2Decoder::dtype`]).
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor, LlmError> {
        let (b, s) = ids.dims2().map_err(|_| bad_ids(ids))?;
        if !matches!(ids.dtype(), DType::U32 | DType::U8 | DType::I64) {
            return Err(bad_ids(ids));
        }
        // Range-checked on the host: an out-of-range index would read past the table on some
        // backends.
        let host: Vec<i64> = ids
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_dtype(DType::I64)?
            .to_vec1()?;
        let mut checked = Vec::with_capacity(host.len());
        for id in host {
            match u32::try_from(id) {
                Ok(id) if (id as usize) < self.cfg.vocab_size => checked.push(id),
                _ => {
                    return Err(LlmError::TokenOutOfRange {
                        id,
                        vocab_size: self.cfg.vocab_size,
                    })
                }
            }
        }
        Ok(self
            .embed_tokens
            .gather(&checked, &self.device)?
            .to_dtype(self.dtype)?
            .reshape((b, s, self.cfg.hidden_size))?)
    }

    /// Runs `embeds` `(batch, seq, hidden)` after the cached positions and returns the logits of
    /// the last position, `(batch, vocab)` in f32.
    ///
    /// The new tokens take RoPE positions `cache.len()..cache.len() + seq` and are appended to
    /// `cache`. `embeds` (any float dtype) is cast to the compute dtype. `lm_head` runs on the last position only.
    pub fn forward_embeds(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlmError> {
        on_pool(|| self.last_logits(&self.forward_hidden(embeds, cache)?))
    }

    /// `lm_head` on the last position of `hidden` `(batch, seq, hidden)`: `(batch, vocab)` f32.
    fn last_logits(&self, hidden: &Tensor) -> Result<Tensor, LlmError> {
        let s = hidden.dim(1)?;
        let last = hidden.narrow(1, s - 1, 1)?;
        Ok(self
            .lm_head
            .forward(&last)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// Like [`Qwen2Decoder::forward_embeds`] but returns the logits of every new position,
    /// `(batch, seq, vocab)` in f32 (e.g. to score answer choices).
    pub fn forward_embeds_all(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor, LlmError> {
        on_pool(|| {
            let hidden = self.forward_hidden(embeds, cache)?;
            Ok(self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?)
        })
    }

    /// Runs several sequences, each at its own positions: for every input, its `embeds` after
    /// the positions its cache holds, appended to that cache. Returns the last position's
    /// logits of each, `(batch, vocab)` in f32, in order: what [`Qwen2Decoder::forward_embeds`]
    /// returns for that input alone (bit for bit, for inputs of up to [`PREFILL_CHUNK`]
    /// positions), whatever runs beside it.
    ///
    /// The inputs of one position `(1, 1, hidden)` (decode steps) run as one stack when the
    /// model computes in f32 on the CPU: every linear layer and the output head take all of
    /// them in one product that reads each weight once, the norms run row by row, and the
    /// attention runs per sequence on its own cache. The other inputs (prefill chunks) are
    /// each one pass: a caller with long prompts feeds them in chunks of [`PREFILL_CHUNK`]
    /// (chunked prefill). After an error no cache has changed length.
    pub fn forward_batch(&self, inputs: &mut [SequenceInput<'_>]) -> Result<Vec<Tensor>, LlmError> {
        on_pool(|| {
            let mut passes = inputs
                .iter_mut()
                .map(|input| self.begin_pass(input.embeds, input.cache))
                .collect::<Result<Vec<_>, _>>()?;
            self.run_passes(&mut passes)?;
            let stacked: Vec<usize> = (0..passes.len())
                .filter(|&i| self.stacks(&passes[i]))
                .collect();
            let mut logits: Vec<Option<Tensor>> = vec![None; passes.len()];
            if !stacked.is_empty() {
                let rows: Vec<Tensor> = stacked.iter().map(|&i| passes[i].xs.clone()).collect();
                let rows = Tensor::cat(&rows, 0)?.squeeze(1)?;
                let all = self.lm_head.forward_rows(&rows)?.to_dtype(DType::F32)?;
                for (r, &i) in stacked.iter().enumerate() {
                    logits[i] = Some(all.narrow(0, r, 1)?);
                }
            }
            passes
                .iter()
                .zip(logits)
                .map(|(p, l)| l.map_or_else(|| self.last_logits(&p.xs), Ok))
                .collect()
        })
    }

    /// Whether `pass` joins the stack of decode rows: one position of one sequence, computed
    /// in f32 on the CPU (where the decode kernels run).
    fn stacks(&self, pass: &Pass<'_>) -> bool {
        pass.step.len == 1
            && pass.xs.dim(0).is_ok_and(|b| b == 1)
            && self.dtype == DType::F32
            && self.device.is_cpu()
    }

    /// The decoder stack and final norm: `(batch, seq, hidden)` in, same shape out, run over
    /// chunks of [`PREFILL_CHUNK`] positions.
    fn forward_hidden(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlmError> {
        self.forward_chunked(embeds, cache, PREFILL_CHUNK)
    }

    /// Chunked prefill: the positions go through the stack `chunk` at a time, each chunk
    /// attending to the cache and itself, so the attention scores held at once are
    /// `(heads, chunk, cached + chunk)` rather than `(heads, seq, seq)`: memory grows linearly
    /// with the prompt (vLLM's chunked prefill; the result is the same up to rounding).
    pub(crate) fn forward_chunked(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        chunk: usize,
    ) -> Result<Tensor, LlmError> {
        let s = embeds.dims3().map_err(|_| self.bad_embeds(embeds))?.1;
        let chunk = chunk.max(1);
        if s <= chunk {
            return self.forward_chunk(embeds, cache);
        }
        let mut outputs = Vec::with_capacity(s.div_ceil(chunk));
        for start in (0..s).step_by(chunk) {
            let part = embeds.narrow(1, start, chunk.min(s - start))?;
            outputs.push(self.forward_chunk(&part, cache)?);
        }
        Ok(Tensor::cat(&outputs, 1)?)
    }

    /// One pass of the stack over `embeds` after the cached positions.
    fn forward_chunk(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlmError> {
        let mut pass = self.begin_pass(embeds, cache)?;
        self.run_passes(std::slice::from_mut(&mut pass))?;
        Ok(pass.xs)
    }

    /// Checks `embeds` against the model and `cache`, and places it after the cached positions.
    fn begin_pass<'c>(
        &self,
        embeds: &Tensor,
        cache: &'c mut KvCache,
    ) -> Result<Pass<'c>, LlmError> {
        let (b, s, h) = embeds.dims3().map_err(|_| self.bad_embeds(embeds))?;
        if b == 0 || s == 0 || h != self.cfg.hidden_size {
            return Err(self.bad_embeds(embeds));
        }
        if cache.num_layers() != self.layers.len() {
            return Err(LlmError::CacheMismatch {
                reason: format!(
                    "cache has {} layers, the model {}",
                    cache.num_layers(),
                    self.layers.len()
                ),
            });
        }
        if let Some(cached) = cache.batch().filter(|_| !cache.is_empty()) {
            if cached != b {
                return Err(LlmError::CacheMismatch {
                    reason: format!("cache holds batch {cached}, input has batch {b}"),
                });
            }
        }
        let step = Step::new(&self.rope, cache.len(), s, self.dtype, &self.device)?;
        let xs = embeds.to_device(&self.device)?.to_dtype(self.dtype)?;
        Ok(Pass { xs, step, cache })
    }

    /// Runs the stack layer by layer over every pass (each sequence attending to its own cache
    /// at its own positions), commits the new positions to each cache and leaves each pass's
    /// hidden states after the final norm in its `xs`. The passes of one decode position
    /// ([`Qwen2Decoder::stacks`]) go through each layer together
    /// ([`DecoderLayer::forward_rows`]), the others one by one. A sequence's result is the
    /// same whatever passes run beside it: they share nothing but the weights, and the
    /// stacked products compute each row as they would alone.
    fn run_passes(&self, passes: &mut [Pass<'_>]) -> Result<(), LlmError> {
        let (mut rows, mut own): (Vec<&mut Pass<'_>>, Vec<&mut Pass<'_>>) =
            passes.iter_mut().partition(|p| self.stacks(p));
        let stacked: Vec<Tensor> = rows.iter().map(|p| p.xs.clone()).collect();
        let mut stack = (!rows.is_empty())
            .then(|| Tensor::cat(&stacked, 0))
            .transpose()?;
        for (i, layer) in self.layers.iter().enumerate() {
            for pass in own.iter_mut() {
                pass.xs = layer.forward(&pass.xs, &pass.step, pass.cache, i)?;
            }
            if let Some(xs) = &mut stack {
                *xs = layer.forward_rows(xs, &mut rows, i)?;
            }
        }
        for pass in own.iter_mut() {
            pass.xs = self.norm.forward(&pass.xs)?;
        }
        if let Some(xs) = stack {
            let normed = self.norm.forward(&xs)?;
            for (r, pass) in rows.iter_mut().enumerate() {
                pass.xs = normed.narrow(0, r, 1)?;
            }
        }
        for pass in passes.iter_mut() {
            pass.cache.commit(pass.step.len);
        }
        Ok(())
    }

    fn bad_embeds(&self, embeds: &Tensor) -> LlmError {
        LlmError::BadInput {
            what: "embeds",
            expected: format!("(batch >= 1, seq >= 1, {})", self.cfg.hidden_size),
            actual: embeds.dims().to_vec(),
            dtype: embeds.dtype(),
        }
    }
}

#[cfg(test)]
impl Qwen2Decoder {
    /// The GGML bytes of every quantised weight (each layer's `qkv_proj`, `o_proj`,
    /// `gate_up_proj`, `down_proj`, the head, the table), named, to compare two loads.
    pub(crate) fn quantized_blocks(&self) -> Vec<(String, Vec<u8>)> {
        let mut linears: Vec<(String, &Linear)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            linears.push((format!("{i}.qkv_proj"), &l.self_attn.qkv_proj));
            linears.push((format!("{i}.o_proj"), &l.self_attn.o_proj));
            linears.push((format!("{i}.gate_up_proj"), &l.mlp.gate_up_proj));
            linears.push((format!("{i}.down_proj"), &l.mlp.down_proj));
        }
        linears.push(("lm_head".into(), &self.lm_head));
        let mut blocks: Vec<(String, Vec<u8>)> = linears
            .into_iter()
            .filter_map(|(name, l)| Some((name, l.qtensor()?.data().ok()?.into_owned())))
            .collect();
        if let Some((table, _)) = self.embed_tokens.quantized() {
            if let Ok(data) = table.data() {
                blocks.push(("embed_tokens".into(), data.into_owned()));
            }
        }
        blocks
    }

    /// Whether the output head holds the very blocks (or packed bf16 panels) of the
    /// embedding table (no copy).
    pub(crate) fn head_shares_embedding(&self) -> bool {
        if let (Some(head), Some(table)) = (self.lm_head.packed(), self.embed_tokens.packed()) {
            return std::sync::Arc::ptr_eq(head, table);
        }
        match (self.lm_head.qtensor(), self.embed_tokens.quantized()) {
            (Some(head), Some((table, _))) => std::sync::Arc::ptr_eq(head, table),
            _ => false,
        }
    }
}

/// Runs `f` on a thread of rayon's pool (candle's CPU kernels and [`auris_kernels::gemv`] use
/// it).
///
/// A decode step runs about a hundred parallel products; called from outside the pool, each
/// would park this thread until the pool finishes and wake it again. From inside, the pool's
/// threads split the rows among themselves and carry on with the next operation at once.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

fn bad_ids(ids: &Tensor) -> LlmError {
    LlmError::BadInput {
        what: "ids",
        expected: "(batch, seq) of u32, u8 or i64".into(),
        actual: ids.dims().to_vec(),
        dtype: ids.dtype(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_rows(start: usize, len: usize, window: Option<usize>) -> Vec<Vec<bool>> {
        let Some(mask) = attention_mask(start, len, window, &Device::Cpu).unwrap() else {
            return vec![vec![true; start + len]; len];
        };
        mask.squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|x| x == 0.0).collect())
            .collect()
    }

    #[test]
    fn causal_mask_with_cache_offset() {
        let (t, f) = (true, false);
        assert_eq!(
            mask_rows(0, 3, None),
            vec![vec![t, f, f], vec![t, t, f], vec![t, t, t]]
        );
        assert_eq!(
            mask_rows(2, 2, None),
            vec![vec![t, t, t, f], vec![t, t, t, t]]
        );
        // One decode step sees everything: no mask tensor at all.
        assert!(attention_mask(5, 1, None, &Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn sliding_mask_keeps_window_positions() {
        let (t, f) = (true, false);
        // transformers: visible iff q - window < k <= q.
        assert_eq!(
            mask_rows(0, 4, Some(2)),
            vec![
                vec![t, f, f, f],
                vec![t, t, f, f],
                vec![f, t, t, f],
                vec![f, f, t, t]
            ]
        );
        assert_eq!(mask_rows(3, 1, Some(2)), vec![vec![f, f, t, t]]);
        assert!(attention_mask(1, 1, Some(2), &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn inv_freq_matches_torch_formula() {
        let cfg = Qwen2Config {
            hidden_size: 8,
            num_attention_heads: 1,
            num_key_value_heads: Some(1),
            rope_theta: 10000.0,
            ..Default::default()
        };
        let rope = Rope::new(&cfg);
        // 1 / 10000 ** (arange(0, 8, 2) / 8) in float32.
        let expect = [1.0f32, 0.1, 0.01, 0.001];
        for (a, b) in rope.inv_freq.iter().zip(expect) {
            assert!((a - b).abs() <= 1e-7 * b.max(1e-3) + 1e-9, "{a} vs {b}");
        }
    }
}
