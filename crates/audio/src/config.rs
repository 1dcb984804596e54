//! The `audio_config` block of a Qwen2-Audio `config.json`.
//!
//! Mirrors transformers' `Qwen2AudioEncoderConfig` field for field. Every field the hub file may
//! omit takes the value `Qwen2AudioConfig` gives its audio sub-config (the Whisper-large-v3
//! encoder of Qwen2-Audio-7B). The `attribute_map` aliases (`hidden_size`, `num_hidden_layers`,
//! `num_attention_heads`, `intermediate_size`) are accepted too.

use candle_nn::Activation;
use serde::Deserialize;

use crate::AudioError;

/// Hyper-parameters of the Whisper-style audio encoder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EncoderConfig {
    /// Mel bins of the input features (128 for Qwen2-Audio, 80 for Whisper-base).
    pub num_mel_bins: usize,
    /// Number of transformer layers.
    #[serde(alias = "num_hidden_layers")]
    pub encoder_layers: usize,
    /// Attention heads per layer.
    #[serde(alias = "num_attention_heads")]
    pub encoder_attention_heads: usize,
    /// Hidden size of the feed-forward block.
    #[serde(alias = "intermediate_size")]
    pub encoder_ffn_dim: usize,
    /// Model width.
    #[serde(alias = "hidden_size")]
    pub d_model: usize,
    /// Feed-forward activation (`"gelu"` is the exact erf GELU).
    pub activation_function: Activation,
    /// Present in the config but unused by the reference forward pass (it never multiplies the
    /// embeddings), so it has no effect here either.
    pub scale_embedding: bool,
    /// Positions after the convolution stem; the mel input has twice as many frames.
    pub max_source_positions: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            num_mel_bins: 128,
            encoder_layers: 32,
            encoder_attention_heads: 20,
            encoder_ffn_dim: 5120,
            d_model: 1280,
            activation_function: Activation::Gelu,
            scale_embedding: false,
            max_source_positions: 1500,
        }
    }
}

impl EncoderConfig {
    /// Checks that the sizes describe a buildable encoder.
    pub fn validate(&self) -> Result<(), AudioError> {
        let positive = [
            ("audio_config.num_mel_bins", self.num_mel_bins),
            ("audio_config.encoder_layers", self.encoder_layers),
            (
                "audio_config.encoder_attention_heads",
                self.encoder_attention_heads,
            ),
            ("audio_config.encoder_ffn_dim", self.encoder_ffn_dim),
            ("audio_config.d_model", self.d_model),
            (
                "audio_config.max_source_positions",
                self.max_source_positions,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(AudioError::InvalidConfig {
                    field: field.to_string(),
                    value: value.to_string(),
                    reason: "must be positive".to_string(),
                });
            }
        }
        if !self.d_model.is_multiple_of(self.encoder_attention_heads) {
            return Err(AudioError::InvalidConfig {
                field: "audio_config.d_model".to_string(),
                value: self.d_model.to_string(),
                reason: format!(
                    "must be divisible by encoder_attention_heads ({})",
                    self.encoder_attention_heads
                ),
            });
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.encoder_attention_heads
    }

    /// Mel frames the encoder expects per window (`2 * max_source_positions`).
    pub fn mel_frames(&self) -> usize {
        2 * self.max_source_positions
    }
}
