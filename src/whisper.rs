//! Whisper speech recognition over (possibly pruned) encoder frames, for measuring what pruning
//! costs a real model (`auris eval asr-pruning`).
//!
//! Qwen2-Audio's audio tower *is* a Whisper encoder, so a Whisper checkpoint
//! (`WhisperForConditionalGeneration`, hub layout) runs through the same encoder crate, in its
//! Whisper form ([`EncodeOptions::frames`]: all 1500 frames, no mask, no pool). The text decoder
//! here mirrors transformers' `WhisperDecoder`:
//!
//! ```text
//! ids -> embed_tokens + embed_positions[past..past+t]
//!     -> L x [x + SelfAttn(LN x) (causal, cached); x + CrossAttn(LN x, frames); x + fc2(gelu(fc1(LN x)))]
//!     -> LayerNorm -> logits = x . embed_tokens^T   (proj_out is tied)
//! ```
//! The cross-attention keys and values are computed once per transcription from whatever frames
//! are given: all 1500, or only the kept ones. Decoding is greedy with transformers' short-form
//! defaults: prompt `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>` (English-only
//! models: `<|startoftranscript|><|notimestamps|>`), `suppress_tokens` masked at every step,
//! `begin_suppress_tokens` at the first, stop at `<|endoftext|>` or `max_length` tokens in all.

use std::path::Path;

use auris_audio::config::EncoderConfig;
use auris_audio::encoder::{EncodeOptions, EncoderOutput, Qwen2AudioEncoder};
use auris_audio::MelExtractor;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{
    layer_norm, linear, linear_no_bias, Activation, LayerNorm, LayerNormConfig, Linear, VarBuilder,
};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::checkpoint::{self, read_json, ModelSource, WeightStore};
use crate::Error;

const LAYER_NORM_EPS: f64 = 1e-5;

/// The text-decoder part of a Whisper `config.json` (the encoder part is an [`EncoderConfig`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WhisperDecoderConfig {
    /// `model_type`; `whisper` for the supported architecture.
    pub model_type: Option<String>,
    /// Vocabulary rows.
    pub vocab_size: usize,
    /// Model width (shared with the encoder).
    pub d_model: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Hidden size of the decoder's feed-forward block.
    pub decoder_ffn_dim: usize,
    /// Learned decoder positions: the most tokens one transcription can hold.
    pub max_target_positions: usize,
    /// Feed-forward activation.
    pub activation_function: Activation,
    /// Multiply token embeddings by `sqrt(d_model)` (false for every OpenAI Whisper).
    pub scale_embedding: bool,
    /// Tokens masked at every step (older hub configs keep them here).
    pub suppress_tokens: Option<Vec<u32>>,
    /// Tokens masked at the first generated step (older hub configs keep them here).
    pub begin_suppress_tokens: Option<Vec<u32>>,
}

impl Default for WhisperDecoderConfig {
    fn default() -> Self {
        // transformers' WhisperConfig defaults.
        Self {
            model_type: None,
            vocab_size: 51_865,
            d_model: 384,
            decoder_layers: 4,
            decoder_attention_heads: 6,
            decoder_ffn_dim: 1536,
            max_target_positions: 448,
            activation_function: Activation::Gelu,
            scale_embedding: false,
            suppress_tokens: None,
            begin_suppress_tokens: None,
        }
    }
}

impl WhisperDecoderConfig {
    fn validate(&self) -> Result<(), Error> {
        if let Some(kind) = &self.model_type {
            if kind != "whisper" {
                return Err(invalid(
                    "model_type",
                    kind,
                    "a Whisper checkpoint is needed here",
                ));
            }
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("decoder_layers", self.decoder_layers),
            ("decoder_attention_heads", self.decoder_attention_heads),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("max_target_positions", self.max_target_positions),
        ] {
            if value == 0 {
                return Err(invalid(field, &value, "must be positive"));
            }
        }
        if !self.d_model.is_multiple_of(self.decoder_attention_heads) {
            return Err(invalid(
                "decoder_attention_heads",
                &self.decoder_attention_heads,
                &format!("does not divide d_model = {}", self.d_model),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &str, value: &dyn std::fmt::Display, reason: &str) -> Error {
    Error::InvalidConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The fields of a Whisper `generation_config.json` that greedy transcription uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct WhisperGeneration {
    suppress_tokens: Option<Vec<u32>>,
    begin_suppress_tokens: Option<Vec<u32>>,
    max_length: Option<usize>,
}

/// `x W^T + b` for `x` of shape `(b, t, in)`, as `W x^T`: decoding feeds a few rows at a time,
/// and with the weight as the left operand the product runs at GEMM speed (the `x W^T`
/// orientation takes a much slower small-m path).
fn project(layer: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let y = layer.weight().matmul(&x.reshape((b * t, d))?.t()?)?.t()?;
    let y = match layer.bias() {
        Some(bias) => y.broadcast_add(bias)?,
        None => y.contiguous()?,
    };
    y.reshape((b, t, ()))
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            q_proj: linear(d, d, vb.pp("q_proj"))?,
            k_proj: linear_no_bias(d, d, vb.pp("k_proj"))?,
            v_proj: linear(d, d, vb.pp("v_proj"))?,
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            heads,
            head_dim: d / heads,
        })
    }

    /// `(1, s, d) -> (1, heads, s, head_dim)`.
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        x.reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x`, split into heads.
    fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&project(&self.k_proj, x)?)?,
            self.split_heads(&project(&self.v_proj, x)?)?,
        ))
    }

    /// Attention of the queries of `x` over `(k, v)`; `mask` is added to the logits.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&(project(&self.q_proj, x)? * scale)?)?;
        let logits = q.matmul(&k.t()?)?;
        let logits = match mask {
            Some(mask) => logits.broadcast_add(mask)?,
            None => logits,
        };
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let out = probs.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        project(&self.out_proj, &out)
    }
}

struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn load(cfg: &WhisperDecoderConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let heads = cfg.decoder_attention_heads;
        let ln = LayerNormConfig {
            eps: LAYER_NORM_EPS,
            ..Default::default()
        };
        Ok(Self {
            self_attn: Attention::load(d, heads, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, ln, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: Attention::load(d, heads, vb.pp("encoder_attn"))?,
            encoder_attn_layer_norm: layer_norm(d, ln, vb.pp("encoder_attn_layer_norm"))?,
            fc1: linear(d, cfg.decoder_ffn_dim, vb.pp("fc1"))?,
            fc2: linear(cfg.decoder_ffn_dim, d, vb.pp("fc2"))?,
            final_layer_norm: layer_norm(d, ln, vb.pp("final_layer_norm"))?,
        })
    }
}

/// State of a batch of transcriptions decoded in lockstep: the self-attention caches and the
/// cross-attention keys/values, one row per transcription.
pub struct DecoderState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    /// `(rows, 1, 1, frames)`: `-inf` on the padding of rows with fewer frames than the most.
    cross_mask: Option<Tensor>,
    /// Frames of each row (the rest of its cross keys is padding); one entry per row.
    frames: Vec<usize>,
    len: usize,
}

impl DecoderState {
    /// Tokens decoded so far per row (prompt included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Transcriptions in the batch.
    pub fn rows(&self) -> usize {
        self.frames.len()
    }

    /// Keeps only the given rows (ascending), e.g. when the others have finished.
    pub fn retain(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        if rows.len() == self.rows() {
            return Ok(());
        }
        let device = self.cross_kv.first().map(|(k, _)| k.device().clone());
        let Some(device) = device else {
            return Ok(());
        };
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &device)?;
        let pick = |t: &Tensor| t.index_select(&idx, 0);
        for (k, v) in self.cross_kv.iter_mut() {
            *k = pick(k)?;
            *v = pick(v)?;
        }
        for (k, v) in self.self_kv.iter_mut().flatten() {
            *k = pick(k)?;
            *v = pick(v)?;
        }
        if let Some(mask) = self.cross_mask.as_mut() {
            *mask = pick(mask)?;
        }
        self.frames = rows.iter().map(|&r| self.frames[r]).collect();
        // Drop the padding no remaining row needs: the cross-attention reads less per step.
        let longest = self.frames.iter().copied().max().unwrap_or(0);
        if let Some((k, _)) = self.cross_kv.first() {
            if k.dim(2)? > longest {
                for (k, v) in self.cross_kv.iter_mut() {
                    *k = k.narrow(2, 0, longest)?.contiguous()?;
                    *v = v.narrow(2, 0, longest)?.contiguous()?;
                }
                self.cross_mask = match self.cross_mask.take() {
                    Some(m) if self.frames.iter().any(|&n| n < longest) => {
                        Some(m.narrow(3, 0, longest)?.contiguous()?)
                    }
                    _ => None,
                };
            }
        }
        Ok(())
    }
}

/// Whisper's text decoder (`model.decoder` of `WhisperForConditionalGeneration`).
pub struct WhisperDecoder {
    embed_tokens: Tensor,
    embed_positions: Tensor,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    proj_out: Tensor,
    activation: Activation,
    embed_scale: f64,
    max_positions: usize,
}

impl WhisperDecoder {
    /// Loads the decoder; `vb` points at `model.decoder`, `head` at the checkpoint root (an
    /// untied `proj_out.weight` is used when present, else the token embeddings).
    pub fn load(
        cfg: &WhisperDecoderConfig,
        vb: VarBuilder,
        head: Option<Tensor>,
    ) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let embed_tokens = vb.pp("embed_tokens").get((cfg.vocab_size, d), "weight")?;
        let embed_positions = vb
            .pp("embed_positions")
            .get((cfg.max_target_positions, d), "weight")?;
        let layers = (0..cfg.decoder_layers)
            .map(|i| DecoderLayer::load(cfg, vb.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let layer_norm = layer_norm(
            d,
            LayerNormConfig {
                eps: LAYER_NORM_EPS,
                ..Default::default()
            },
            vb.pp("layer_norm"),
        )?;
        Ok(Self {
            proj_out: head.unwrap_or_else(|| embed_tokens.clone()),
            embed_tokens,
            embed_positions,
            layers,
            layer_norm,
            activation: cfg.activation_function,
            embed_scale: if cfg.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            max_positions: cfg.max_target_positions,
        })
    }

    /// Prepares transcriptions over `frames`, each `(n_i, d)`: the cross-attention keys and
    /// values of every layer, computed once. Rows with fewer frames are padded and masked: a
    /// masked key gets exactly zero attention.
    pub fn start(&self, frames: &[Tensor]) -> candle_core::Result<DecoderState> {
        let lens = frames
            .iter()
            .map(|f| f.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let longest = lens.iter().copied().max().unwrap_or(0);
        let padded = frames
            .iter()
            .zip(&lens)
            .map(|(f, &n)| {
                if n == longest {
                    Ok(f.clone())
                } else {
                    let pad = Tensor::zeros((longest - n, f.dim(1)?), f.dtype(), f.device())?;
                    Tensor::cat(&[f, &pad], 0)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let batch = Tensor::stack(&padded, 0)?;
        let rows = lens.len();
        let cross_mask = if lens.iter().all(|&n| n == longest) {
            None
        } else {
            let m: Vec<f32> = lens
                .iter()
                .flat_map(|&n| {
                    (0..longest).map(move |j| if j < n { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            Some(
                Tensor::from_vec(m, (rows, 1, 1, longest), batch.device())?
                    .to_dtype(batch.dtype())?,
            )
        };
        let cross_kv = self
            .layers
            .iter()
            .map(|l| l.encoder_attn.keys_values(&batch))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(DecoderState {
            self_kv: vec![None; self.layers.len()],
            cross_kv,
            cross_mask,
            frames: lens,
            len: 0,
        })
    }

    /// Feeds `t` more tokens per row (`ids` holds `rows * t` ids, row after row) after what
    /// `state` holds; returns the logits `(rows, vocab)` of each row's last position.
    pub fn step(&self, state: &mut DecoderState, ids: &[u32]) -> candle_core::Result<Tensor> {
        let rows = state.rows();
        if rows == 0 || !ids.len().is_multiple_of(rows) {
            candle_core::bail!("{} ids for {rows} rows", ids.len());
        }
        let t = ids.len() / rows;
        let past = state.len;
        if t == 0 || past + t > self.max_positions {
            candle_core::bail!(
                "the decoder holds {} positions; {past} used, {t} more asked",
                self.max_positions
            );
        }
        let device = self.embed_tokens.device();
        let ids_t = Tensor::from_slice(ids, rows * t, device)?;
        let tokens = self
            .embed_tokens
            .index_select(&ids_t, 0)?
            .reshape((rows, t, ()))?;
        let tokens = if self.embed_scale != 1.0 {
            (tokens * self.embed_scale)?
        } else {
            tokens
        };
        let mut x = tokens.broadcast_add(&self.embed_positions.narrow(0, past, t)?)?;
        // Query i (absolute position past + i) sees keys 0..=past + i.
        let mask = if t > 1 {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..past + t).map(move |j| {
                        if j <= past + i {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(m, (1, 1, t, past + t), device)?.to_dtype(x.dtype())?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.self_attn_layer_norm.forward(&x)?;
            let (k, v) = layer.self_attn.keys_values(&h)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let h = layer.self_attn.attend(&h, &k, &v, mask.as_ref())?;
            state.self_kv[i] = Some((k, v));
            x = (x + h)?;
            let h = layer.encoder_attn_layer_norm.forward(&x)?;
            let (ck, cv) = &state.cross_kv[i];
            x = (&x
                + layer
                    .encoder_attn
                    .attend(&h, ck, cv, state.cross_mask.as_ref())?)?;
            let h = layer.final_layer_norm.forward(&x)?;
            let h = project(
                &layer.fc2,
                &self.activation.forward(&project(&layer.fc1, &h)?)?,
            )?;
            x = (x + h)?;
        }
        state.len += t;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?;
        let last = self.layer_norm.forward(&last)?;
        // (vocab, d) x (d, rows): the long side as the product's rows runs at GEMM speed; the
        // other orientation goes through a much slower small-m path.
        self.proj_out.matmul(&last.t()?)?.t()?.contiguous()
    }
}

/// A loaded Whisper model: log-mel front-end, encoder, text decoder and tokenizer.
pub struct Transcriber {
    mel: MelExtractor,
    encoder: Qwen2AudioEncoder,
    decoder: WhisperDecoder,
    tokenizer: Tokenizer,
    prompt: Vec<u32>,
    eos: u32,
    suppress: Vec<u32>,
    begin_suppress: Vec<u32>,
    max_length: usize,
    device: Device,
}

/// One transcription: the generated ids (prompt and end token excluded) and their text.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Generated token ids.
    pub ids: Vec<u32>,
    /// The ids decoded with special tokens skipped.
    pub text: String,
}

impl Transcriber {
    /// Loads a `WhisperForConditionalGeneration` checkpoint (folder or hub id) in f32.
    pub fn load(source: &ModelSource, device: &Device, progress: bool) -> Result<Self, Error> {
        let files = checkpoint::resolve(source, progress)?;
        let encoder_cfg: EncoderConfig = read_json(&files.config)?;
        let decoder_cfg: WhisperDecoderConfig = read_json(&files.config)?;
        decoder_cfg.validate()?;
        if encoder_cfg.d_model != decoder_cfg.d_model {
            return Err(invalid(
                "d_model",
                &decoder_cfg.d_model,
                "encoder and decoder widths differ",
            ));
        }
        let generation: WhisperGeneration = match &files.generation_config {
            Some(path) => read_json(path)?,
            None => WhisperGeneration::default(),
        };
        let mel_config = files.mel_config(encoder_cfg.num_mel_bins)?;
        if mel_config.n_mels != encoder_cfg.num_mel_bins {
            return Err(invalid(
                "num_mel_bins",
                &encoder_cfg.num_mel_bins,
                &format!("the feature extractor makes {} bins", mel_config.n_mels),
            ));
        }
        let tokenizer = Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", files.tokenizer.display())))?;
        let id = |token: &str| tokenizer.token_to_id(token);
        let need = |token: &str| {
            id(token).ok_or_else(|| Error::MissingToken {
                token: token.to_string(),
            })
        };
        let sot = need("<|startoftranscript|>")?;
        let eos = need("<|endoftext|>")?;
        let no_timestamps = need("<|notimestamps|>")?;
        // A multilingual model is told the language and the task; English-only models have
        // neither token.
        let prompt = match (id("<|en|>"), id("<|transcribe|>")) {
            (Some(en), Some(transcribe)) => vec![sot, en, transcribe, no_timestamps],
            _ => vec![sot, no_timestamps],
        };

        let store = WeightStore::open(&files.weights)?;
        let vb = store.var_builder(DType::F32, device);
        let encoder = Qwen2AudioEncoder::load(&encoder_cfg, vb.pp("model.encoder"))?;
        let head = if store.names().iter().any(|n| n == "proj_out.weight") {
            Some(vb.get(
                (decoder_cfg.vocab_size, decoder_cfg.d_model),
                "proj_out.weight",
            )?)
        } else {
            None
        };
        let decoder = WhisperDecoder::load(&decoder_cfg, vb.pp("model.decoder"), head)?;
        store.check_coverage(&[])?;
        let max_length = generation
            .max_length
            .unwrap_or(decoder_cfg.max_target_positions)
            .min(decoder_cfg.max_target_positions);
        Ok(Self {
            mel: MelExtractor::new(mel_config)?,
            encoder,
            decoder,
            prompt,
            eos,
            suppress: generation
                .suppress_tokens
                .or(decoder_cfg.suppress_tokens)
                .unwrap_or_default(),
            begin_suppress: generation
                .begin_suppress_tokens
                .or(decoder_cfg.begin_suppress_tokens)
                .unwrap_or_default(),
            max_length,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The decoder prompt (`<|startoftranscript|>` ... `<|notimestamps|>`).
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    /// The encoder.
    pub fn encoder(&self) -> &Qwen2AudioEncoder {
        &self.encoder
    }

    /// Decodes an audio file and encodes it: all frames of its one 30 s window, with per-frame
    /// attention scores, and the audio's duration in seconds. Longer audio is an error (Whisper
    /// transcribes 30 s at a time).
    pub fn encode_file(&self, path: &Path) -> Result<(EncoderOutput, f64), Error> {
        let samples = auris_audio::load_audio_16k(path)?;
        let mut windows = self.mel.windows(&samples)?;
        if windows.len() != 1 {
            return Err(Error::Usage(format!(
                "{}: {:.1} s of audio; Whisper transcription here takes at most 30 s",
                path.display(),
                samples.len() as f64 / 16_000.0
            )));
        }
        let window = windows.remove(0);
        let encoded = self.encoder.forward(
            &window,
            EncodeOptions {
                scores: true,
                frames: true,
                ..Default::default()
            },
        )?;
        Ok((encoded, samples.len() as f64 / 16_000.0))
    }

    /// Greedy transcription from encoder frames `(n, d)`: all of them or a pruned subset.
    ///
    /// Stops at the end token, at the model's `max_length` (prompt included, as transformers
    /// does) or after `max_new_tokens` tokens when given.
    pub fn transcribe(
        &self,
        frames: &Tensor,
        max_new_tokens: Option<usize>,
    ) -> Result<Transcript, Error> {
        let mut out = self.transcribe_batch(std::slice::from_ref(frames), max_new_tokens)?;
        Ok(out.remove(0))
    }

    /// Greedy transcriptions of several frame sets (any numbers of frames), decoded in lockstep
    /// (one pass over the weights per step for all of them); a transcription leaves the batch
    /// when it ends. Each result is what [`Transcriber::transcribe`] gives up to
    /// float rounding (the products are computed for several rows at once).
    pub fn transcribe_batch(
        &self,
        frames: &[Tensor],
        max_new_tokens: Option<usize>,
    ) -> Result<Vec<Transcript>, Error> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let max_length = match max_new_tokens {
            Some(n) => self.max_length.min(self.prompt.len() + n),
            None => self.max_length,
        };
        let frames = frames
            .iter()
            .map(|f| f.to_device(&self.device)?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut state = self.decoder.start(&frames)?;
        let prompt: Vec<u32> = frames.iter().flat_map(|_| self.prompt.clone()).collect();
        let mut logits = self.decoder.step(&mut state, &prompt)?;
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); frames.len()];
        // Batch row -> transcription index.
        let mut active: Vec<usize> = (0..frames.len()).collect();
        while !active.is_empty() {
            let table = logits.to_vec2::<f32>()?;
            let mut keep_rows = Vec::with_capacity(active.len());
            let mut next_ids = Vec::with_capacity(active.len());
            for (row, mut scores) in table.into_iter().enumerate() {
                let which = active[row];
                let first = ids[which].is_empty();
                for &t in self
                    .suppress
                    .iter()
                    .chain(first.then_some(&self.begin_suppress).into_iter().flatten())
                {
                    if let Some(v) = scores.get_mut(t as usize) {
                        *v = f32::NEG_INFINITY;
                    }
                }
                let next = argmax(&scores);
                if next == self.eos {
                    continue;
                }
                ids[which].push(next);
                // The sequence (prompt + generated) has reached max_length.
                if state.len() + 1 >= max_length {
                    continue;
                }
                keep_rows.push(row);
                next_ids.push(next);
            }
            if keep_rows.is_empty() {
                break;
            }
            state.retain(&keep_rows)?;
            active = keep_rows.iter().map(|&r| active[r]).collect();
            logits = self.decoder.step(&mut state, &next_ids)?;
        }
        ids.into_iter()
            .map(|ids| {
                let text = self
                    .tokenizer
                    .decode(&ids, true)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                Ok(Transcript {
                    ids,
                    text: text.trim().to_string(),
                })
            })
            .collect()
    }
}

/// Index of the largest value; the first one on ties (like `torch.argmax`).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
