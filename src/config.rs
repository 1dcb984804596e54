//! `config.json` and `generation_config.json` of a Qwen2-Audio-like checkpoint.
//!
//! [`ModelConfig`] mirrors transformers' `Qwen2AudioConfig` and `AudioFlamingo3Config`: the
//! nested `audio_config` ([`EncoderConfig`]) and `text_config` ([`Qwen2Config`]) take the
//! transformers defaults for every field the file omits (the hub's Qwen2-Audio-7B config omits
//! the LLM's sizes; both config classes give their sub-configs the same defaults). `model_type`
//! picks the [`Family`], which supplies the defaults that differ.

use std::path::Path;

use auris_audio::config::EncoderConfig;
use auris_llm::{Qwen2Config, TokenIds};
use serde::Deserialize;

use crate::checkpoint::read_json;
use crate::family::{self, Family};
use crate::Error;

/// `config.json` of `Qwen2AudioForConditionalGeneration` or
/// `AudioFlamingo3ForConditionalGeneration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// The audio encoder.
    pub audio_config: EncoderConfig,
    /// The Qwen2 language model.
    pub text_config: Qwen2Config,
    /// Id of the audio placeholder token; when absent, the family's default (read it through
    /// [`ModelConfig::audio_token_id`]).
    #[serde(alias = "audio_token_id")]
    pub audio_token_index: Option<u32>,
    /// `model_type`, which picks the family ([`ModelConfig::family`]).
    pub model_type: Option<String>,
    /// The activation between the projector's two layers (Audio Flamingo 3); absent: the
    /// family's default.
    pub projector_hidden_act: Option<auris_projector::ProjectorAct>,
    /// Whether the projector's two layers have a bias (Audio Flamingo 3); absent: the family's
    /// default.
    pub projector_bias: Option<bool>,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let cfg: Self = read_json(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The model family `model_type` names.
    pub fn family(&self) -> Result<&'static dyn Family, Error> {
        family::for_model_type(self.model_type.as_deref())
    }

    /// Id of the audio placeholder token: the file's, else `family`'s default.
    pub fn audio_token_id(&self, family: &dyn Family) -> u32 {
        self.audio_token_index
            .unwrap_or_else(|| family.default_audio_token_id())
    }

    /// Checks the family, both sub-configs and how they fit together.
    pub fn validate(&self) -> Result<(), Error> {
        let family = self.family()?;
        self.check_limits()?;
        self.audio_config.validate()?;
        self.text_config.validate()?;
        let vocab = self.text_config.vocab_size;
        let audio_token = self.audio_token_id(family);
        if audio_token as usize >= vocab {
            return Err(Error::InvalidConfig {
                field: "audio_token_index".to_string(),
                value: audio_token.to_string(),
                reason: format!("outside the vocabulary of {vocab} rows"),
            });
        }
        Ok(())
    }
}

/// Largest size each config field may claim. Published checkpoints stay far below (Qwen2-72B:
/// 80 layers, hidden 8192, vocab 152064, 131072 positions); a larger value is a corrupt or
/// hostile file, rejected before anything is allocated from it (tables, caches and estimates
/// all multiply these sizes).
const LIMITS: [(&str, usize); 13] = [
    ("audio_config.num_mel_bins", 1 << 10),
    ("audio_config.encoder_layers", 1 << 10),
    ("audio_config.encoder_attention_heads", 1 << 10),
    ("audio_config.encoder_ffn_dim", 1 << 20),
    ("audio_config.d_model", 1 << 16),
    ("audio_config.max_source_positions", 1 << 20),
    ("text_config.vocab_size", 1 << 24),
    ("text_config.hidden_size", 1 << 16),
    ("text_config.intermediate_size", 1 << 20),
    ("text_config.num_hidden_layers", 1 << 10),
    ("text_config.num_attention_heads", 1 << 10),
    ("text_config.num_key_value_heads", 1 << 10),
    ("text_config.max_position_embeddings", 1 << 26),
];

impl ModelConfig {
    /// Every size within [`LIMITS`].
    fn check_limits(&self) -> Result<(), Error> {
        let (a, t) = (&self.audio_config, &self.text_config);
        let values = [
            a.num_mel_bins,
            a.encoder_layers,
            a.encoder_attention_heads,
            a.encoder_ffn_dim,
            a.d_model,
            a.max_source_positions,
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_kv_heads(),
            t.max_position_embeddings,
        ];
        let head_dim = t.head_dim.unwrap_or(0);
        for ((field, limit), value) in LIMITS
            .iter()
            .chain(&[("text_config.head_dim", 1 << 16)])
            .zip(values.into_iter().chain([head_dim]))
        {
            if value > *limit {
                return Err(Error::InvalidConfig {
                    field: field.to_string(),
                    value: value.to_string(),
                    reason: format!("larger than any model auris can load (at most {limit})"),
                });
            }
        }
        Ok(())
    }
}

/// `generation_config.json`: the decoding defaults a model ships with.
///
/// Missing fields take transformers' `GenerationConfig` defaults (greedy, temperature 1,
/// top-k 50, top-p 1, no repetition penalty).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// Sample instead of taking the most likely token.
    pub do_sample: bool,
    /// Softmax temperature when sampling.
    pub temperature: f64,
    /// Keep only the k most likely tokens when sampling (0 = off).
    pub top_k: usize,
    /// Nucleus threshold when sampling (1 = off).
    pub top_p: f64,
    /// HF repetition penalty (1 = off); it applies to greedy decoding too.
    pub repetition_penalty: f32,
    /// Ids that end generation.
    pub eos_token_id: Option<TokenIds>,
    /// Padding id.
    pub pad_token_id: Option<TokenIds>,
    /// Default cap on new tokens, when the model sets one.
    pub max_new_tokens: Option<usize>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            eos_token_id: None,
            pad_token_id: None,
            max_new_tokens: None,
        }
    }
}

impl GenerationConfig {
    /// Reads `generation_config.json`, or the defaults when the model has none.
    pub fn from_file(path: Option<&Path>) -> Result<Self, Error> {
        match path {
            Some(path) => read_json(path),
            None => Ok(Self::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_rejected_before_allocation() {
        for (field, json) in [
            (
                "text_config.num_hidden_layers",
                r#"{"text_config": {"num_hidden_layers": 1000000000}}"#,
            ),
            (
                "text_config.vocab_size",
                r#"{"text_config": {"vocab_size": 18446744073709551615}}"#,
            ),
            (
                "audio_config.d_model",
                r#"{"audio_config": {"d_model": 4294967296}}"#,
            ),
            (
                "text_config.max_position_embeddings",
                r#"{"text_config": {"max_position_embeddings": 1099511627776}}"#,
            ),
        ] {
            let cfg: ModelConfig = serde_json::from_str(json).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("larger than"), "{err}");
        }
    }

    #[test]
    fn hub_config_gets_transformers_defaults() {
        // The shape of Qwen2-Audio-7B-Instruct's config.json: the LLM's sizes are omitted.
        let json = r#"{
          "architectures": ["Qwen2AudioForConditionalGeneration"],
          "audio_config": {"model_type": "qwen2_audio_encoder", "num_mel_bins": 128,
            "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
            "d_model": 1280, "activation_function": "gelu", "scale_embedding": false,
            "max_source_positions": 1500},
          "audio_token_index": 151646, "ignore_index": -100, "model_type": "qwen2_audio",
          "text_config": {"bos_token_id": 151643, "eos_token_id": 151645,
            "intermediate_size": 11008, "max_position_embeddings": 8192, "model_type": "qwen2",
            "rms_norm_eps": 1e-05, "rope_theta": 10000, "sliding_window": 32768,
            "torch_dtype": "bfloat16", "use_mrope": false, "vocab_size": 156032},
          "vocab_size": 156032
        }"#;
        let cfg: ModelConfig = serde_json::from_str(json).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.text_config.hidden_size, 4096);
        assert_eq!(cfg.text_config.num_hidden_layers, 32);
        assert_eq!(cfg.text_config.num_kv_heads(), 32);
        assert_eq!(cfg.text_config.intermediate_size, 11008);
        assert_eq!(cfg.audio_config.d_model, 1280);
        assert_eq!(cfg.audio_token_id(cfg.family().unwrap()), 151646);
    }

    #[test]
    fn audioflamingo3_config_takes_its_family_defaults() {
        // A config as transformers 5.x writes AudioFlamingo3Config (defaults left out).
        let json = r#"{
          "architectures": ["AudioFlamingo3ForConditionalGeneration"],
          "audio_config": {"model_type": "audioflamingo3_encoder", "hidden_size": 64,
            "num_attention_heads": 4, "intermediate_size": 128, "num_hidden_layers": 2},
          "model_type": "audioflamingo3",
          "text_config": {"model_type": "qwen2", "hidden_size": 64, "vocab_size": 151672,
            "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}}
        }"#;
        let cfg: ModelConfig = serde_json::from_str(json).unwrap();
        cfg.validate().unwrap();
        let family = cfg.family().unwrap();
        assert_eq!(family.name(), "Audio Flamingo 3");
        assert_eq!(cfg.audio_token_id(family), 151669);
        assert_eq!(cfg.audio_config.d_model, 64);
        assert_eq!(
            family.projector(&cfg),
            family::ProjectorKind::Mlp {
                act: family::ProjectorAct::Gelu,
                bias: true
            }
        );
        let other: ModelConfig = serde_json::from_str(r#"{"model_type": "voxtral"}"#).unwrap();
        let err = other.validate().unwrap_err().to_string();
        assert!(
            err.contains("model_type") && err.contains("voxtral"),
            "{err}"
        );
    }

    #[test]
    fn audio_token_id_alias_and_validation() {
        let cfg: ModelConfig =
            serde_json::from_str(r#"{"audio_token_id": 7, "text_config": {"vocab_size": 5}}"#)
                .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("audio_token_index"), "{err}");
    }

    #[test]
    fn eos_may_be_one_or_many() {
        let g: GenerationConfig = serde_json::from_str(r#"{"eos_token_id": 3}"#).unwrap();
        assert_eq!(g.eos_token_id.unwrap().to_vec(), vec![3]);
        let g: GenerationConfig =
            serde_json::from_str(r#"{"eos_token_id": [3, 4], "do_sample": true}"#).unwrap();
        assert_eq!(g.eos_token_id.unwrap().to_vec(), vec![3, 4]);
        assert_eq!(g.top_k, 50);
    }
}
