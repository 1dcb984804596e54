//! The Qwen2-Audio audio encoder (`audio_tower`): a Whisper encoder followed by an average pool.
//!
//! Mirrors `Qwen2AudioEncoder` in transformers'
//! `src/transformers/models/qwen2_audio/modeling_qwen2_audio.py`:
//!
//! ```text
//! mel (1, n_mels, 2P) -> gelu(conv1 k3 p1) -> gelu(conv2 k3 s2 p1) -> (1, P, d) + embed_positions
//!     -> L x [x + out_proj(MHA(LN1 x)); x + fc2(act(fc1(LN2 x)))]       (keys >= T1 masked)
//!     -> AvgPool1d(2, 2) -> LayerNorm -> (N, d)
//! ```
//! with `P = max_source_positions`, `T1 = (F - 1) / 2 + 1` for `F` valid mel frames and
//! `N = (T1 - 2) / 2 + 1` valid output tokens.
//!
//! The reference always runs all `P` positions and masks the padded keys. Since masked keys
//! receive no attention and the valid rows only see the convolution's receptive field, running
//! the stack on the first `T1` positions gives the same valid rows: [`EncoderMode::Window`]
//! keeps the reference's full path for checking that claim.
//!
//! On request the encoder also returns each output token's **attention score**: the attention it
//! receives in the last layer, averaged over heads and valid queries, then averaged in pairs like
//! the pooler, so that each score belongs to one output token.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{conv1d, linear, Activation, Conv1dConfig, LayerNorm, Linear, VarBuilder};

use crate::attention::{apply, apply_then, layer_norm, Attention, Product};

use crate::config::EncoderConfig;
use crate::stem::Stem;
use crate::{audio_token_count, conv_output_len, AudioError, LogMel};

/// `torch.finfo(torch.float16).max - 1000`: the reference clamps f16 activations to this.
const F16_CLAMP: f64 = 64504.0;

/// Which positions the encoder runs and what it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncoderMode {
    /// Only the valid prefix (`T1` positions), pooled to the `N` valid tokens. The default.
    #[default]
    ValidFrames,
    /// All `max_source_positions` positions with a key-padding mask, as the reference does,
    /// pooled to the `N` valid tokens. Slower; the valid rows are the same.
    Window,
    /// Whisper's own encoder: all `max_source_positions` frames with no mask and no average
    /// pool (the LayerNorm applies to every frame). The output has one row per frame, padding
    /// included, and the scores are per frame, averaged over heads and all queries. This is
    /// what a Whisper text decoder cross-attends to.
    WhisperFrames,
}

/// What [`Qwen2AudioEncoder::forward`] should compute besides the hidden states.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Also return the per-token attention scores of the last layer.
    pub scores: bool,
    /// Which positions run and what comes out.
    pub mode: EncoderMode,
}

/// The encoder's output for one window.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `(N, d_model)`: the valid tokens after the pool and the final LayerNorm (with
    /// [`EncoderMode::WhisperFrames`], `(max_source_positions, d_model)`: every frame).
    pub hidden: Tensor,
    /// One attention score per row of `hidden`, when [`EncodeOptions::scores`] asked for them.
    pub scores: Option<Vec<f32>>,
}

impl EncoderOutput {
    /// Number of valid audio tokens `N`.
    pub fn len(&self) -> usize {
        self.hidden.dims().first().copied().unwrap_or(0)
    }

    /// True when the window yields no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    activation: Activation,
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
        let h = apply_then(&self.fc1, &h, self.activation)?;
        let h = apply(&self.fc2, &h)?;
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

/// The Whisper-style encoder of Qwen2-Audio with its average pool and final LayerNorm.
pub struct Qwen2AudioEncoder {
    stem: Stem,
    embed_positions: Tensor,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
    cfg: EncoderConfig,
    dtype: DType,
    device: Device,
}

impl Qwen2AudioEncoder {
    /// Loads the encoder from `vb`, which must point at the checkpoint's `audio_tower` prefix;
    /// it computes in `vb`'s dtype.
    pub fn load(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self, AudioError> {
        let compute = vb.dtype();
        Self::load_with(cfg, vb, compute)
    }

    /// Like [`Qwen2AudioEncoder::load`], but computes in `compute` while the linear layers
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
        let conv1 = conv1d(
            cfg.num_mel_bins,
            d,
            3,
            Conv1dConfig {
                padding: 1,
                ..Default::default()
            },
            f.pp("conv1"),
        )?;
        let conv2 = conv1d(
            d,
            d,
            3,
            Conv1dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            },
            f.pp("conv2"),
        )?;
        let embed_positions = f
            .pp("embed_positions")
            .get((cfg.max_source_positions, d), "weight")?;
        let layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::load(cfg, vb.pp("layers").pp(i), f.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let layer_norm = layer_norm(d, f.pp("layer_norm"))?;
        Ok(Self {
            stem: Stem::new(conv1, conv2)?,
            embed_positions,
            layers,
            layer_norm,
            cfg: cfg.clone(),
            dtype: compute,
            device: vb.device().clone(),
        })
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Encodes one 30 s window of log-mel features.
    ///
    /// `mel` must have `num_mel_bins` rows and `2 * max_source_positions` frames, of which
    /// `mel.valid_frames` are real audio. Returns the `N` valid tokens.
    pub fn forward(&self, mel: &LogMel, opts: EncodeOptions) -> Result<EncoderOutput, AudioError> {
        let frames = self.cfg.mel_frames();
        if mel.n_mels != self.cfg.num_mel_bins || mel.n_frames != frames {
            return Err(AudioError::ShapeMismatch {
                what: "log-mel features".to_string(),
                expected: format!("({}, {frames})", self.cfg.num_mel_bins),
                actual: format!("({}, {})", mel.n_mels, mel.n_frames),
            });
        }
        let t1 = conv_output_len(mel.valid_frames).min(self.cfg.max_source_positions);
        let n = audio_token_count(mel.valid_frames).min(t1 / 2);
        if n == 0 {
            return Err(AudioError::ShapeMismatch {
                what: "valid mel frames".to_string(),
                expected: "at least 3 frames (one encoder token)".to_string(),
                actual: mel.valid_frames.to_string(),
            });
        }
        // Frames past 2*T1 never reach a valid conv2 output (kernel 3, stride 2, padding 1), so
        // the short path keeps exactly the receptive field of the first T1 positions.
        let (input_frames, positions) = if opts.mode != EncoderMode::ValidFrames {
            (frames, self.cfg.max_source_positions)
        } else {
            ((2 * t1 + 1).min(frames), t1)
        };
        let x = self
            .stem
            .forward(mel, input_frames, positions, self.dtype, &self.device)?;
        let mut x = x.broadcast_add(&self.embed_positions.narrow(0, 0, positions)?)?;

        let valid = if opts.mode == EncoderMode::Window {
            t1.min(positions)
        } else {
            positions
        };
        let keys = KeyMask::new(valid, positions, &self.device)?;
        // Whisper's frames are scored over every position, the pooled tokens over the valid ones.
        let score_queries = match opts.mode {
            EncoderMode::WhisperFrames => positions,
            _ => t1,
        };
        let last = self.layers.len().saturating_sub(1);
        let mut received = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let want = (opts.scores && i == last).then_some(score_queries);
            let (next, r) = layer.forward(&x, &keys, want)?;
            x = next;
            if r.is_some() {
                received = r;
            }
        }

        if opts.mode == EncoderMode::WhisperFrames {
            let hidden = self.layer_norm.forward(&x.squeeze(0)?)?;
            return Ok(EncoderOutput {
                hidden,
                scores: received,
            });
        }

        // AvgPool1d(2, 2) over the valid prefix, then the final LayerNorm.
        let d = self.cfg.d_model;
        let pooled = x
            .narrow(1, 0, 2 * n)?
            .reshape((1, n, 2, d))?
            .mean(2)?
            .squeeze(0)?;
        let hidden = self.layer_norm.forward(&pooled)?;

        let scores = received.map(|r| pooled_scores(&r, n));
        Ok(EncoderOutput { hidden, scores })
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

/// The attention received per key averaged over key pairs like the pooler:
/// `score[t] = (r[2t] + r[2t + 1]) / 2` for `t < n`.
fn pooled_scores(received: &[f32], n: usize) -> Vec<f32> {
    received[..2 * n]
        .chunks_exact(2)
        .map(|pair| (pair[0] + pair[1]) / 2.0)
        .collect()
}
