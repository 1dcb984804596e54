//! Model families: everything that differs between Qwen2-Audio-like checkpoints, in one place.
//!
//! A checkpoint's `config.json` `model_type` picks its family, as transformers' `AutoModel`
//! mapping does; the pipeline asks the family and never compares `model_type` itself. Every
//! family shares the Whisper-style encoder (`auris-audio`, average pool by 2 and a final
//! LayerNorm: 750 tokens per 30 s window) and the Qwen2 decoder (`auris-llm`). What differs:
//!
//! | | [`Qwen2Audio`] | [`AudioFlamingo3`] |
//! |---|---|---|
//! | `model_type` | `qwen2_audio` | `audioflamingo3` |
//! | projector | one Linear | Linear, `projector_hidden_act`, Linear (`projector_bias`) |
//! | placeholder | `<\|AUDIO\|>` (151646) | `<sound>` (151669) |
//! | span around the placeholder | `<\|audio_bos\|>` … `<\|audio_eos\|>` | none |
//! | chat template without one in the checkpoint | the processor's built-in ChatML one, for a model named `*Instruct*` | the one transformers' conversion script writes |
//! | base prompt | placeholder span, then the instruction | placeholder, then the instruction |
//! | pruning selects over ([`SelectionScope`]) | each 30 s window | the whole audio input |
//!
//! Both keep their weights under the same roots ([`HF_LAYOUT`]) and stop on `<|im_end|>` and
//! `<|endoftext|>` unless `generation_config.json` says otherwise. The placeholder strings are
//! read from `processor_config.json` (`audio_token`, `audio_bos_token`, `audio_eos_token`) when
//! the checkpoint has one, their ids from the tokenizer, checked against `config.json`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::checkpoint::read_json;
use crate::config::ModelConfig;
use crate::Error;

pub mod audioflamingo3;
pub mod qwen2_audio;

pub use audioflamingo3::AudioFlamingo3;
pub use auris_projector::{ProjectorAct, ProjectorKind};
pub use qwen2_audio::Qwen2Audio;

/// Every family auris runs, looked up by `model_type`.
pub const FAMILIES: [&dyn Family; 2] = [&Qwen2Audio, &AudioFlamingo3];

/// Where the parts of a checkpoint keep their tensors (the root prefixes of the weight tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The audio encoder.
    pub audio_tower: &'static str,
    /// The audio-to-text projector.
    pub projector: &'static str,
    /// The language model (its `model.` and `lm_head` below it).
    pub language_model: &'static str,
}

/// The transformers layout of both families: `audio_tower.*`, `multi_modal_projector.*`,
/// `language_model.model.*` and `language_model.lm_head.weight`.
pub const HF_LAYOUT: Layout = Layout {
    audio_tower: "audio_tower",
    projector: "multi_modal_projector",
    language_model: "language_model",
};

impl Layout {
    /// Full name of the language model's output head.
    pub fn lm_head(&self) -> String {
        format!("{}.lm_head.weight", self.language_model)
    }

    /// Full name of the language model's embedding table.
    pub fn embed_tokens(&self) -> String {
        format!("{}.model.embed_tokens.weight", self.language_model)
    }
}

/// The audio markup strings a processor may set in `processor_config.json` (transformers 5.x
/// writes the processor's `__init__` arguments there).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcessorStrings {
    /// The placeholder (`audio_token`).
    pub audio_token: Option<String>,
    /// What opens an audio span (`audio_bos_token`).
    pub audio_bos_token: Option<String>,
    /// What closes an audio span (`audio_eos_token`).
    pub audio_eos_token: Option<String>,
}

impl ProcessorStrings {
    /// Reads them from `processor_config.json`, or none when the checkpoint has no such file.
    pub fn from_file(path: Option<&Path>) -> Result<Self, Error> {
        path.map_or_else(|| Ok(Self::default()), read_json)
    }
}

/// How a checkpoint marks audio in its prompt text: the family's choice, with the strings the
/// checkpoint's processor config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioMarkup {
    /// The placeholder each audio input stands for (`<|AUDIO|>`, `<sound>`).
    pub placeholder: String,
    /// The strings around an expanded placeholder, for families that mark the audio span.
    pub span: Option<(String, String)>,
}

impl AudioMarkup {
    /// The prompt of a model without a chat template: the audio, then the instruction.
    pub fn base_prompt(&self, instruction: &str) -> String {
        match &self.span {
            Some((open, close)) => format!("{open}{}{close}{instruction}", self.placeholder),
            None => format!("{}{instruction}", self.placeholder),
        }
    }
}

/// Which audio tokens one pruning selection ranks against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionScope {
    /// Each 30 s window on its own, with its own budget (Qwen2-Audio: its processor keeps one
    /// window, and per-window selection lets long audio stream holding one window's rows).
    PerWindow,
    /// All windows of one audio input concatenated in time order, one budget over them (Audio
    /// Flamingo 3: transformers feeds every window's tokens to the model as one `<sound>`
    /// run). The input's encoder rows are held until its last window is encoded.
    WholeInput,
}

impl SelectionScope {
    /// The token counts one input's selections run over, from its windows' counts: the
    /// windows' own under [`SelectionScope::PerWindow`], their sum under
    /// [`SelectionScope::WholeInput`].
    pub fn selection_lengths(self, window_tokens: &[usize]) -> Vec<usize> {
        match self {
            SelectionScope::PerWindow => window_tokens.to_vec(),
            SelectionScope::WholeInput => vec![window_tokens.iter().sum()],
        }
    }
}

/// One model family: what a Qwen2-Audio-like checkpoint of that kind needs besides the shared
/// encoder and decoder code. Implementations are unit types listed in [`FAMILIES`].
pub trait Family: Sync + fmt::Debug {
    /// The name a user reads (`Qwen2-Audio`).
    fn name(&self) -> &'static str;

    /// The `model_type` of its `config.json`.
    fn model_type(&self) -> &'static str;

    /// `audio_token_index` / `audio_token_id` when `config.json` omits it (the transformers
    /// config class default).
    fn default_audio_token_id(&self) -> u32;

    /// Where its tensors live.
    fn layout(&self) -> &'static Layout {
        &HF_LAYOUT
    }

    /// Its projector, as `config` sets it up.
    fn projector(&self, config: &ModelConfig) -> ProjectorKind;

    /// Its audio markup, the strings `processor` names taking precedence over the family's.
    fn markup(&self, processor: &ProcessorStrings) -> AudioMarkup;

    /// The chat template used when the checkpoint ships none and a chat prompt is wanted.
    fn builtin_chat_template(&self) -> &'static str;

    /// Whether a checkpoint without a chat template of its own still gets
    /// [`Family::builtin_chat_template`] by default (it is a chat model); `name` is the model
    /// name as given when loading.
    fn chats_without_template(&self, name: &str, tokenizer: &Tokenizer) -> bool;

    /// The instruction `caption` uses when the user gives none, for a chat model or a base one.
    fn caption_instruction(&self, chat: bool) -> &'static str;

    /// Which tokens one pruning selection ranks together: each window, or the whole input as
    /// the family's reference implementation sees it.
    fn selection_scope(&self) -> SelectionScope;

    /// Tokens that end generation when neither `generation_config.json` nor the text config
    /// names any, looked up in the tokenizer.
    fn fallback_stop_tokens(&self) -> &'static [&'static str] {
        &["<|im_end|>", "<|endoftext|>"]
    }

    /// Audio tokens one window with `valid_frames` mel frames yields (the conv stem halves the
    /// frames, the pool halves them again).
    fn window_tokens(&self, valid_frames: usize) -> usize {
        auris_audio::audio_token_count(valid_frames)
    }
}

/// The family of a `config.json` whose `model_type` is `model_type` (none: Qwen2-Audio, whose
/// early configs omitted it).
pub fn for_model_type(model_type: Option<&str>) -> Result<&'static dyn Family, Error> {
    let Some(kind) = model_type else {
        return Ok(&Qwen2Audio);
    };
    FAMILIES
        .into_iter()
        .find(|f| f.model_type() == kind)
        .ok_or_else(|| Error::InvalidConfig {
            field: "model_type".to_string(),
            value: kind.to_string(),
            reason: format!(
                "auris runs {} checkpoints",
                FAMILIES.map(|f| f.model_type()).join(", ")
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_type_picks_the_family() {
        assert_eq!(for_model_type(None).unwrap().name(), "Qwen2-Audio");
        assert_eq!(
            for_model_type(Some("qwen2_audio")).unwrap().name(),
            "Qwen2-Audio"
        );
        assert_eq!(
            for_model_type(Some("audioflamingo3")).unwrap().name(),
            "Audio Flamingo 3"
        );
        let err = for_model_type(Some("llama")).unwrap_err().to_string();
        assert!(
            err.contains("llama") && err.contains("qwen2_audio, audioflamingo3"),
            "{err}"
        );
    }

    #[test]
    fn processor_strings_override_the_family_defaults() {
        let own = ProcessorStrings {
            audio_token: Some("<|A|>".into()),
            ..ProcessorStrings::default()
        };
        let m = Qwen2Audio.markup(&own);
        assert_eq!(m.base_prompt("Go:"), "<|audio_bos|><|A|><|audio_eos|>Go:");
        let m = AudioFlamingo3.markup(&ProcessorStrings::default());
        assert_eq!(m.base_prompt("Go:"), "<sound>Go:");
    }
}
