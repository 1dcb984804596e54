//! Whisper's encoder (`WhisperEncoder` in transformers'
//! `src/transformers/models/whisper/modeling_whisper.py`; candle-transformers'
//! `whisper::model::AudioEncoder`):
//!
//! ```text
//! mel (1, n_mels, 2P) -> gelu(conv1 k3 p1) -> gelu(conv2 k3 s2 p1) -> (1, P, d) + embed_positions
//!     -> L x [x + out_proj(MHA(LN1 x)); x + fc2(act(fc1(LN2 x)))] -> LayerNorm -> (P, d)
//! ```
//! with `P = max_source_positions`: one row per frame of the window, padding included, which
//! is what a Whisper text decoder cross-attends to. Qwen2-Audio's audio tower is this encoder
//! with an average pool before the final LayerNorm ([`super::Qwen2AudioEncoder`]), built on
//! [`WhisperEncoder::hidden_states`].

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{conv1d, linear, Activation, Conv1dConfig, LayerNorm, Linear, VarBuilder};

use super::{EncoderOutput, FrameOptions};
use auris_kernels::round::Compute;

use crate::attention::{apply_then_with, apply_with, layer_norm, Attention, Product};
use crate::config::EncoderConfig;
use crate::stem::Stem;
use crate::{AudioError, LogMel};

/// `torch.finfo(torch.float16).max - 1000`: the reference clamps f16 activations to this.
const F16_CLAMP: f64 = 64504.0;

struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    activation: Activation,
    compute: Compute,
}

impl EncoderLayer {
    /// Linear layers from `vb` (their storage dtype), norms from `f` (the compute dtype).
    fn load(cfg: &EncoderConfig, vb: VarBuilder, f: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: Attention::load(
                d,
                cfg.encoder_attention_heads,
                Product::RowsTimesWeight,
                vb.pp("self_attn"),
            )?,
            self_attn_layer_norm: layer_norm(d, f.pp("self_attn_layer_norm"))?,
            fc1: linear(d, cfg.encoder_ffn_dim, vb.pp("fc1"))?,
            fc2: linear(cfg.encoder_ffn_dim, d, vb.pp("fc2"))?,
            final_layer_norm: layer_norm(d, f.pp("final_layer_norm"))?,
            activation: cfg.activation_function,
            compute: Compute::F32,
        })
    }

    /// One layer; with `scores = Some(n)` also the attention each key received in this layer,
    /// averaged over the heads and the first `n` queries.
    fn forward(
        &self,
        x: &Tensor,
        keys: &KeyMask,
        scores: Option<usize>,
    ) -> candle_core::Result<(Tensor, Option<Vec<f32>>)> {
        let h = self.self_attn_layer_norm.forward(x)?;
        let (h, received) = match self.self_attn.forward_fused(&h, keys.valid, scores)? {
            Some(fused) => fused,
            None => {
                let (h, probs) =
                    self.self_attn
                        .forward(&h, keys.tensor.as_ref(), scores.is_some())?;
                let received = match (probs, scores) {
                    (Some(p), Some(n)) => Some(received_attention(&p, n)?.to_vec1::<f32>()?),
                    _ => None,
                };
                (h, received)
            }
        };
        let x = (x + h)?;
        let h = self.final_layer_norm.forward(&x)?;
        let h = apply_then_with(&self.fc1, &h, self.activation, self.compute)?;
        let h = apply_with(&self.fc2, &h, self.compute)?;
        let mut x = (x + h)?;
        if x.dtype() == DType::F16 {
            x = x.clamp(-F16_CLAMP, F16_CLAMP)?;
        }
        Ok((x, received))
    }
}

/// The keys a window's queries may attend to: the first `valid` (the rest is padding), as a
/// count for the fused CPU attention and as an additive `-inf` mask for candle's.
struct KeyMask {
    valid: usize,
    tensor: Option<Tensor>,
}

impl KeyMask {
    fn new(valid: usize, positions: usize, device: &Device) -> candle_core::Result<Self> {
        let tensor = if valid < positions {
            let row: Vec<f32> = (0..positions)
                .map(|j| if j < valid { 0.0 } else { f32::NEG_INFINITY })
                .collect();
            Some(Tensor::from_vec(row, (1, 1, 1, positions), device)?)
        } else {
            None
        };
        Ok(Self { valid, tensor })
    }
}

/// Which positions [`WhisperEncoder::hidden_states`] runs, and which scores it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Mel frames fed to the convolution stem (zero padded past them).
    pub(crate) input_frames: usize,
    /// Positions after the stem that run through the layers.
    pub(crate) positions: usize,
    /// Keys the queries may attend to: the first `valid_keys` positions (the rest masked).
    pub(crate) valid_keys: usize,
    /// With `Some(n)`: the attention each position receives in the last layer, averaged over
    /// the heads and the first `n` queries.
    pub(crate) score_queries: Option<usize>,
}

/// Whisper's encoder: convolution stem, positions, layers and final LayerNorm.
pub struct WhisperEncoder {
    stem: Stem,
    embed_positions: Tensor,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
    cfg: EncoderConfig,
    dtype: DType,
    compute: Compute,
    device: Device,
}

impl WhisperEncoder {
    /// Loads the encoder from `vb`, which must point at the encoder's prefix (`model.encoder`
    /// in a Whisper checkpoint, `audio_tower` in a Qwen2-Audio one); it computes in `vb`'s
    /// dtype.
    pub fn load(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self, AudioError> {
        let compute = vb.dtype();
        Self::load_with(cfg, vb, compute)
    }

    /// Like [`WhisperEncoder::load`], but computes in `compute` while the linear layers
    /// keep `vb`'s dtype (bf16 weights of an f32 encoder on the CPU: half the memory, and the
    /// same results as widening them at load, since each product widens its weight exactly).
    /// Convolutions, positions and norms are read in `compute`.
    pub fn load_with(
        cfg: &EncoderConfig,
        vb: VarBuilder,
        compute: DType,
    ) -> Result<Self, AudioError> {
        cfg.validate()?;
        let d = cfg.d_model;
        let f = vb.clone().set_dtype(compute);
        let conv = |stride| Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let conv1 = conv1d(cfg.num_mel_bins, d, 3, conv(1), f.pp("conv1"))?;
        let conv2 = conv1d(d, d, 3, conv(2), f.pp("conv2"))?;
        let embed_positions = f
            .pp("embed_positions")
            .get((cfg.max_source_positions, d), "weight")?;
        let layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::load(cfg, vb.pp("layers").pp(i), f.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem: Stem::new(conv1, conv2)?,
            embed_positions,
            layers,
            layer_norm: layer_norm(d, f.pp("layer_norm"))?,
            cfg: cfg.clone(),
            dtype: compute,
            compute: Compute::F32,
            device: vb.device().clone(),
        })
    }

    /// The encoder with its matrix products in `compute` on the CPU in f32: the convolution
    /// stem, the attention's projections and products and the MLP; under [`Compute::Bf16`]
    /// each product's inputs (activations and weights) are rounded to bf16 and accumulated in
    /// f32 (see [`auris_kernels::round`]), norms, GELU, softmax and the residual stream stay
    /// f32. Elsewhere the products compute in the tensors' dtype.
    pub fn with_compute(mut self, compute: Compute) -> Self {
        for layer in &mut self.layers {
            layer.compute = compute;
            layer.self_attn.set_compute(compute);
        }
        self.compute = compute;
        self
    }

    /// The precision of the products' inputs ([`WhisperEncoder::with_compute`]).
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Encodes one 30 s window as Whisper does: all `max_source_positions` frames, no mask,
    /// the final LayerNorm on each. Returns `(max_source_positions, d_model)`, one row per
    /// frame (padding included), and on request per-frame scores averaged over the heads and
    /// all queries.
    ///
    /// `mel` must have `num_mel_bins` rows and `2 * max_source_positions` frames.
    pub fn forward(&self, mel: &LogMel, opts: FrameOptions) -> Result<EncoderOutput, AudioError> {
        self.check_mel(mel)?;
        let positions = self.cfg.max_source_positions;
        let (x, scores) = self.hidden_states(
            mel,
            Span {
                input_frames: self.cfg.mel_frames(),
                positions,
                valid_keys: positions,
                score_queries: opts.scores.then_some(positions),
            },
        )?;
        let hidden = self.layer_norm.forward(&x.squeeze(0)?)?;
        Ok(EncoderOutput { hidden, scores })
    }

    /// The stem and the layers over `span`, before the final LayerNorm: `(1, positions,
    /// d_model)`, and the last layer's received attention when `span.score_queries` asks.
    /// `mel` must have passed [`WhisperEncoder::check_mel`].
    pub(crate) fn hidden_states(
        &self,
        mel: &LogMel,
        span: Span,
    ) -> Result<(Tensor, Option<Vec<f32>>), AudioError> {
        let x = self.stem.forward(
            mel,
            span.input_frames,
            span.positions,
            self.dtype,
            self.compute,
            &self.device,
        )?;
        let mut x = x.broadcast_add(&self.embed_positions.narrow(0, 0, span.positions)?)?;
        let keys = KeyMask::new(span.valid_keys, span.positions, &self.device)?;
        let last = self.layers.len().saturating_sub(1);
        let mut received = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let want = span.score_queries.filter(|_| i == last);
            let (next, r) = layer.forward(&x, &keys, want)?;
            x = next;
            if r.is_some() {
                received = r;
            }
        }
        Ok((x, received))
    }

    /// The final LayerNorm.
    pub(crate) fn layer_norm(&self) -> &LayerNorm {
        &self.layer_norm
    }

    /// [`AudioError::ShapeMismatch`] unless `mel` has `num_mel_bins` rows and
    /// `2 * max_source_positions` frames.
    pub(crate) fn check_mel(&self, mel: &LogMel) -> Result<(), AudioError> {
        let frames = self.cfg.mel_frames();
        if mel.n_mels == self.cfg.num_mel_bins && mel.n_frames == frames {
            return Ok(());
        }
        Err(AudioError::ShapeMismatch {
            what: "log-mel features".to_string(),
            expected: format!("({}, {frames})", self.cfg.num_mel_bins),
            actual: format!("({}, {})", mel.n_mels, mel.n_frames),
        })
    }
}

/// Attention received per key `(keys,)`, averaged over heads and the first `queries` queries.
fn received_attention(probs: &Tensor, queries: usize) -> candle_core::Result<Tensor> {
    let (_, heads, _, keys) = probs.dims4()?;
    // Column sums as a (1 x queries) by (queries x keys) product per head: a strided reduction
    // over the query axis is an order of magnitude slower on the CPU.
    let ones = Tensor::ones((1, heads, 1, queries), DType::F32, probs.device())?;
    ones.matmul(&probs.narrow(2, 0, queries)?.contiguous()?)?
        .reshape((heads, keys))?
        .sum(0)?
        .affine(1.0 / (heads * queries) as f64, 0.0)
}
