//! Qwen2-Audio (`Qwen/Qwen2-Audio-7B`, `Qwen/Qwen2-Audio-7B-Instruct`), as transformers'
//! `models/qwen2_audio` runs it: `Qwen2AudioForConditionalGeneration` with its one-Linear
//! `Qwen2AudioMultiModalProjector`, and `Qwen2AudioProcessor`, which expands each `<|AUDIO|>`
//! inside an `<|audio_bos|>` … `<|audio_eos|>` span.

use tokenizers::Tokenizer;

use super::{AudioMarkup, Family, ProcessorStrings, ProjectorKind, SelectionScope};
use crate::config::ModelConfig;

/// The audio placeholder string.
pub const AUDIO_TOKEN: &str = "<|AUDIO|>";
/// Opens an audio span.
pub const AUDIO_BOS_TOKEN: &str = "<|audio_bos|>";
/// Closes an audio span.
pub const AUDIO_EOS_TOKEN: &str = "<|audio_eos|>";

/// The ChatML template of Qwen2-Audio-7B-Instruct (transformers'
/// `Qwen2AudioProcessor.default_chat_template`, in
/// `src/transformers/models/qwen2_audio/processing_qwen2_audio.py`), used only when a chat model
/// ships no template of its own (the hub's Qwen2-Audio-7B-Instruct keeps its template in an
/// unmerged pull request, and transformers falls back to this one).
pub const CHAT_TEMPLATE: &str = "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The instruction used by `caption` on a chat model when the user gives none.
pub const CHAT_CAPTION: &str = "Describe the audio in one sentence.";
/// The instruction used by `caption` on a base model (the model card's captioning prompt).
pub const BASE_CAPTION: &str = "Generate the caption in English:";

/// The Qwen2-Audio family (`model_type` `qwen2_audio`).
#[derive(Debug, Clone, Copy)]
pub struct Qwen2Audio;

impl Family for Qwen2Audio {
    fn name(&self) -> &'static str {
        "Qwen2-Audio"
    }

    fn model_type(&self) -> &'static str {
        "qwen2_audio"
    }

    fn default_audio_token_id(&self) -> u32 {
        151_646
    }

    fn projector(&self, _config: &ModelConfig) -> ProjectorKind {
        ProjectorKind::Linear
    }

    /// Like transformers 4.x and vLLM (and unlike transformers 5.x, which dropped it), a
    /// placeholder with neither `<|audio_bos|>` before it nor `<|audio_eos|>` after it is
    /// wrapped in the pair, since that is the form the model was trained on.
    fn markup(&self, processor: &ProcessorStrings) -> AudioMarkup {
        let or = |own: &Option<String>, default: &str| {
            own.clone().unwrap_or_else(|| default.to_string())
        };
        AudioMarkup {
            placeholder: or(&processor.audio_token, AUDIO_TOKEN),
            span: Some((
                or(&processor.audio_bos_token, AUDIO_BOS_TOKEN),
                or(&processor.audio_eos_token, AUDIO_EOS_TOKEN),
            )),
        }
    }

    fn builtin_chat_template(&self) -> &'static str {
        CHAT_TEMPLATE
    }

    /// The base and the instruct checkpoints on the hub ship the same files (the instruct
    /// one's template is only in a pull request), so the instruct model is known by its name,
    /// and only when its tokenizer has ChatML's `<|im_start|>`.
    fn chats_without_template(&self, name: &str, tokenizer: &Tokenizer) -> bool {
        name.to_lowercase().contains("instruct") && tokenizer.token_to_id("<|im_start|>").is_some()
    }

    fn selection_scope(&self) -> SelectionScope {
        // The processor keeps one 30 s window; auris prunes each window of longer audio on
        // its own.
        SelectionScope::PerWindow
    }

    fn caption_instruction(&self, chat: bool) -> &'static str {
        if chat {
            CHAT_CAPTION
        } else {
            BASE_CAPTION
        }
    }
}
