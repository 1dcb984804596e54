//! Audio Flamingo 3 (`nvidia/audio-flamingo-3-hf`), as transformers' `models/audioflamingo3`
//! runs it: `AudioFlamingo3ForConditionalGeneration` (the Qwen2-Audio encoder shape with
//! AF-Whisper weights, a Qwen2.5 decoder) with its two-layer
//! `AudioFlamingo3MultiModalProjector`, and `AudioFlamingo3Processor`, which replaces each
//! `<sound>` by one `<sound>` per audio token, with nothing around them.
//!
//! The processor cuts audio into 30 s windows, each padded and encoded on its own, and counts
//! the tokens of all windows together; since every window but the last is full, that count is
//! the sum of the windows' counts, which is how auris counts them. Past `max_audio_len` (600 s,
//! 20 windows) it keeps the first 600 s with a warning; auris keeps every window and lets the
//! context budget decide (`--fit-context`, or an error naming the sizes).
//!
//! `models/musicflamingo` (Music Flamingo) is not this family with another configuration: it
//! adds rotary time embeddings to the encoder output before the projector, so it is not run.

use tokenizers::Tokenizer;

use super::{AudioMarkup, Family, ProcessorStrings, ProjectorKind, SelectionScope};
use crate::config::ModelConfig;

/// The audio placeholder string (`AudioFlamingo3Processor`'s `audio_token` default).
pub const AUDIO_TOKEN: &str = "<sound>";

/// The processor's chat template as transformers' `convert_audioflamingo3_to_hf.py` writes it
/// (the hub checkpoint ships the same one as `chat_template.jinja`): the audio first, then the
/// text of the message. Used only for a checkpoint without a template of its own.
pub const CHAT_TEMPLATE: &str = "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}{% for m in messages if m['content'] is not none %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}{% set audio = namespace(found=False) %}{% set text_buf = namespace(v='') %}{% for c in m['content'] %}{% if c.get('type') == 'audio' or 'audio' in c %}{% set audio.found = True %}{% elif c.get('type') == 'text' or 'text' in c %}{% set text_buf.v = text_buf.v + c['text'] %}{% endif %}{% endfor %}{% if audio.found %}{{ '<sound>' }}{% endif %}{{ text_buf.v }}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The instruction used by `caption` when the user gives none (NVIDIA publishes no captioning
/// prompt for the hub checkpoint; this is auris's chat-model one).
pub const CAPTION: &str = "Describe the audio in one sentence.";

/// The Audio Flamingo 3 family (`model_type` `audioflamingo3`).
#[derive(Debug, Clone, Copy)]
pub struct AudioFlamingo3;

impl Family for AudioFlamingo3 {
    fn name(&self) -> &'static str {
        "Audio Flamingo 3"
    }

    fn model_type(&self) -> &'static str {
        "audioflamingo3"
    }

    fn default_audio_token_id(&self) -> u32 {
        151_669
    }

    /// `projector_hidden_act` and `projector_bias`, with `AudioFlamingo3Config`'s defaults
    /// (`gelu`, `true`).
    fn projector(&self, config: &ModelConfig) -> ProjectorKind {
        ProjectorKind::Mlp {
            act: config.projector_hidden_act.unwrap_or_default(),
            bias: config.projector_bias.unwrap_or(true),
        }
    }

    fn markup(&self, processor: &ProcessorStrings) -> AudioMarkup {
        AudioMarkup {
            placeholder: processor
                .audio_token
                .clone()
                .unwrap_or_else(|| AUDIO_TOKEN.to_string()),
            span: None,
        }
    }

    fn builtin_chat_template(&self) -> &'static str {
        CHAT_TEMPLATE
    }

    /// Every published Audio Flamingo 3 checkpoint is instruction-tuned.
    fn chats_without_template(&self, _name: &str, _tokenizer: &Tokenizer) -> bool {
        true
    }

    fn selection_scope(&self) -> SelectionScope {
        // transformers' `AudioFlamingo3ForConditionalGeneration` places every window's tokens
        // in one `<sound>` run and its pruning reference selects over that run.
        SelectionScope::WholeInput
    }

    fn caption_instruction(&self, _chat: bool) -> &'static str {
        CAPTION
    }
}
