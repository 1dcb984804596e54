//! The Qwen2-Audio audio encoder (`audio_tower`): a Whisper encoder whose frames are pooled in
//! pairs before the final LayerNorm.
//!
//! Mirrors `Qwen2AudioEncoder` in transformers'
//! `src/transformers/models/qwen2_audio/modeling_qwen2_audio.py`:
//!
//! ```text
//! mel (1, n_mels, 2P) -> [WhisperEncoder stem, positions, layers]   (keys >= T1 masked)
//!     -> AvgPool1d(2, 2) -> LayerNorm -> (N, d)
//! ```
//! with `P = max_source_positions`, `T1 = (F - 1) / 2 + 1` for `F` valid mel frames and
//! `N = (T1 - 2) / 2 + 1` valid output tokens. [`WhisperEncoder`] is the Whisper encoder on its
//! own (every frame out, the LayerNorm on each), as candle-transformers keeps
//! `whisper::model::AudioEncoder`; [`Qwen2AudioEncoder`] layers the pooling on top of it.
//!
//! The reference always runs all `P` positions and masks the padded keys. Since masked keys
//! receive no attention and the valid rows only see the convolution's receptive field, running
//! the stack on the first `T1` positions gives the same valid rows: [`EncoderMode::Window`]
//! keeps the reference's full path for checking that claim.
//!
//! On request the encoder also returns each output token's **attention score**: the attention it
//! receives in the last layer, averaged over heads and valid queries, then averaged in pairs like
//! the pooler, so that each score belongs to one output token.

mod whisper;

use auris_kernels::round::Compute;
use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

pub use whisper::WhisperEncoder;

use crate::config::EncoderConfig;
use crate::{audio_token_count, conv_output_len, AudioError, LogMel};
use whisper::Span;

/// Which positions [`Qwen2AudioEncoder::forward`] runs; both give the same tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncoderMode {
    /// Only the valid prefix (`T1` positions). The default.
    #[default]
    ValidFrames,
    /// All `max_source_positions` positions with a key-padding mask, as the reference does.
    /// Slower; the valid rows are the same.
    Window,
}

/// What [`Qwen2AudioEncoder::forward`] should compute besides the hidden states.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Also return the per-token attention scores of the last layer.
    pub scores: bool,
    /// Which positions run.
    pub mode: EncoderMode,
}

/// What [`WhisperEncoder::forward`] should compute besides the frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameOptions {
    /// Also return the per-frame attention scores of the last layer.
    pub scores: bool,
}

/// The encoder's output for one window.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// One row per output token, `(rows, d_model)`: the `N` pooled tokens of
    /// [`Qwen2AudioEncoder::forward`], or every frame of [`WhisperEncoder::forward`].
    pub hidden: Tensor,
    /// One attention score per row of `hidden`, when the options asked for them.
    pub scores: Option<Vec<f32>>,
}

impl EncoderOutput {
    /// Number of rows (for [`Qwen2AudioEncoder`], the valid audio tokens `N`).
    pub fn len(&self) -> usize {
        self.hidden.dims().first().copied().unwrap_or(0)
    }

    /// True when the window yields no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Qwen2-Audio's audio tower: a [`WhisperEncoder`] with its average pool and final LayerNorm.
pub struct Qwen2AudioEncoder {
    whisper: WhisperEncoder,
}

impl Qwen2AudioEncoder {
    /// Loads the encoder from `vb`, which must point at the checkpoint's `audio_tower` prefix;
    /// it computes in `vb`'s dtype.
    pub fn load(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self, AudioError> {
        WhisperEncoder::load(cfg, vb).map(Self::new)
    }

    /// Like [`Qwen2AudioEncoder::load`], but computes in `compute` while the linear layers
    /// keep `vb`'s dtype (see [`WhisperEncoder::load_with`]).
    pub fn load_with(
        cfg: &EncoderConfig,
        vb: VarBuilder,
        compute: DType,
    ) -> Result<Self, AudioError> {
        WhisperEncoder::load_with(cfg, vb, compute).map(Self::new)
    }

    /// The encoder with its products in `compute` ([`WhisperEncoder::with_compute`]).
    pub fn with_compute(self, compute: Compute) -> Self {
        Self::new(self.whisper.with_compute(compute))
    }

    /// The pooling on top of `whisper` (the audio tower's weights, loaded by the caller).
    pub fn new(whisper: WhisperEncoder) -> Self {
        Self { whisper }
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &EncoderConfig {
        self.whisper.config()
    }

    /// The Whisper encoder under the pooling.
    pub fn whisper(&self) -> &WhisperEncoder {
        &self.whisper
    }

    /// Encodes one 30 s window of log-mel features.
    ///
    /// `mel` must have `num_mel_bins` rows and `2 * max_source_positions` frames, of which
    /// `mel.valid_frames` are real audio (at least 3: one token). Returns the `N` valid tokens.
    pub fn forward(&self, mel: &LogMel, opts: EncodeOptions) -> Result<EncoderOutput, AudioError> {
        self.whisper.check_mel(mel)?;
        let cfg = self.config();
        let t1 = conv_output_len(mel.valid_frames).min(cfg.max_source_positions);
        let n = audio_token_count(mel.valid_frames).min(t1 / 2);
        if n == 0 {
            return Err(AudioError::ShapeMismatch {
                what: "valid mel frames".to_string(),
                expected: "at least 3 frames (one encoder token)".to_string(),
                actual: mel.valid_frames.to_string(),
            });
        }
        let (input_frames, positions) = match opts.mode {
            // Frames past 2*T1 never reach a valid conv2 output (kernel 3, stride 2, padding
            // 1), so the short path keeps exactly the receptive field of the first T1 positions.
            EncoderMode::ValidFrames => ((2 * t1 + 1).min(cfg.mel_frames()), t1),
            EncoderMode::Window => (cfg.mel_frames(), cfg.max_source_positions),
        };
        let span = Span {
            input_frames,
            positions,
            valid_keys: t1,
            score_queries: opts.scores.then_some(t1),
        };
        let (x, received) = self.whisper.hidden_states(mel, span)?;

        // AvgPool1d(2, 2) over the valid prefix, then the final LayerNorm.
        let d = cfg.d_model;
        let pooled = x
            .narrow(1, 0, 2 * n)?
            .reshape((1, n, 2, d))?
            .mean(2)?
            .squeeze(0)?;
        let hidden = self.whisper.layer_norm().forward(&pooled)?;
        let scores = received.map(|r| pooled_scores(&r, n));
        Ok(EncoderOutput { hidden, scores })
    }
}

/// The attention received per key averaged over key pairs like the pooler:
/// `score[t] = (r[2t] + r[2t + 1]) / 2` for `t < n`.
fn pooled_scores(received: &[f32], n: usize) -> Vec<f32> {
    received[..2 * n]
        .chunks_exact(2)
        .map(|pair| (pair[0] + pair[1]) / 2.0)
        .collect()
}
