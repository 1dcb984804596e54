//! `config.json` and `generation_config.json` of a `WhisperForConditionalGeneration`
//! checkpoint.

use auris_audio::config::EncoderConfig;
use candle_nn::Activation;
use serde::Deserialize;

use crate::WhisperError;

/// A Whisper `config.json`, field for field (the fields this crate reads). Defaults are those
/// of transformers' `WhisperConfig` (`src/transformers/models/whisper/configuration_whisper.py`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct WhisperConfig {
    /// `model_type`; `whisper` for the supported architecture.
    pub model_type: Option<String>,
    /// Vocabulary rows.
    pub vocab_size: usize,
    /// Mel bins of the input features.
    pub num_mel_bins: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_attention_heads: usize,
    /// Hidden size of the encoder's feed-forward block.
    pub encoder_ffn_dim: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Hidden size of the decoder's feed-forward block.
    pub decoder_ffn_dim: usize,
    /// Model width, shared by the encoder and the decoder.
    pub d_model: usize,
    /// Feed-forward activation of both stacks.
    pub activation_function: Activation,
    /// Multiply token embeddings by `sqrt(d_model)` (false for every OpenAI Whisper).
    pub scale_embedding: bool,
    /// Encoder positions after the convolution stem.
    pub max_source_positions: usize,
    /// Learned decoder positions: the most tokens one transcription can hold.
    pub max_target_positions: usize,
    /// Tokens masked at every step (older hub configs keep them here).
    pub suppress_tokens: Option<Vec<u32>>,
    /// Tokens masked at the first generated step (older hub configs keep them here).
    pub begin_suppress_tokens: Option<Vec<u32>>,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        Self {
            model_type: None,
            vocab_size: 51_865,
            num_mel_bins: 80,
            encoder_layers: 4,
            encoder_attention_heads: 6,
            encoder_ffn_dim: 1536,
            decoder_layers: 4,
            decoder_attention_heads: 6,
            decoder_ffn_dim: 1536,
            d_model: 384,
            activation_function: Activation::Gelu,
            scale_embedding: false,
            max_source_positions: 1500,
            max_target_positions: 448,
            suppress_tokens: None,
            begin_suppress_tokens: None,
        }
    }
}

impl WhisperConfig {
    /// The encoder's part, for `auris_audio`'s encoder.
    pub fn encoder_config(&self) -> EncoderConfig {
        EncoderConfig {
            num_mel_bins: self.num_mel_bins,
            encoder_layers: self.encoder_layers,
            encoder_attention_heads: self.encoder_attention_heads,
            encoder_ffn_dim: self.encoder_ffn_dim,
            d_model: self.d_model,
            activation_function: self.activation_function,
            scale_embedding: self.scale_embedding,
            max_source_positions: self.max_source_positions,
        }
    }

    /// Checks that the decoder's sizes describe a buildable model (the encoder checks its own).
    pub fn validate(&self) -> Result<(), WhisperError> {
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

pub(crate) fn invalid(field: &str, value: &dyn std::fmt::Display, reason: &str) -> WhisperError {
    WhisperError::InvalidConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The fields of a Whisper `generation_config.json` that greedy transcription uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WhisperGeneration {
    /// Tokens masked at every step.
    pub suppress_tokens: Option<Vec<u32>>,
    /// Tokens masked at the first generated step.
    pub begin_suppress_tokens: Option<Vec<u32>>,
    /// The most tokens a sequence holds, prompt included.
    pub max_length: Option<usize>,
}
