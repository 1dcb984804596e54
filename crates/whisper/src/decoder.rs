//! Whisper's text decoder (`WhisperDecoder` in transformers'
//! `src/transformers/models/whisper/modeling_whisper.py`).

use auris_audio::attention::{layer_norm, project_rows, Attention, Product};
use candle_core::{Module, Tensor};
use candle_nn::{linear, Activation, LayerNorm, Linear, VarBuilder};

use crate::WhisperConfig;

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
    fn load(cfg: &WhisperConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let heads = cfg.decoder_attention_heads;
        Ok(Self {
            self_attn: Attention::load(d, heads, Product::WeightTimesRows, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            encoder_attn: Attention::load(
                d,
                heads,
                Product::WeightTimesRows,
                vb.pp("encoder_attn"),
            )?,
            encoder_attn_layer_norm: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
            fc1: linear(d, cfg.decoder_ffn_dim, vb.pp("fc1"))?,
            fc2: linear(cfg.decoder_ffn_dim, d, vb.pp("fc2"))?,
            final_layer_norm: layer_norm(d, vb.pp("final_layer_norm"))?,
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
        cfg: &WhisperConfig,
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
        let layer_norm = layer_norm(d, vb.pp("layer_norm"))?;
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
            let (h, _) = layer.self_attn.attend(&h, &k, &v, mask.as_ref(), false)?;
            state.self_kv[i] = Some((k, v));
            x = (x + h)?;
            let h = layer.encoder_attn_layer_norm.forward(&x)?;
            let (ck, cv) = &state.cross_kv[i];
            let (h, _) = layer
                .encoder_attn
                .attend(&h, ck, cv, state.cross_mask.as_ref(), false)?;
            x = (x + h)?;
            let h = layer.final_layer_norm.forward(&x)?;
            let h = project_rows(
                &layer.fc2,
                &self.activation.forward(&project_rows(&layer.fc1, &h)?)?,
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
