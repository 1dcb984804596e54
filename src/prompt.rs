//! Prompts: the chat template, the special tokens and the expansion of audio placeholders.
//!
//! Follows the processors of transformers (`processing_qwen2_audio.py`,
//! `processing_audioflamingo3.py`): the prompt text holds one placeholder per audio input; each
//! becomes `N` copies of the placeholder, one per audio token the encoder keeps, and the audio
//! rows are later written into exactly those positions. A family that marks audio spans
//! (Qwen2-Audio's `<|audio_bos|>` … `<|audio_eos|>`) has a bare placeholder wrapped in its pair
//! (see [`crate::family`]).

use std::ops::Range;
use std::path::Path;

use minijinja::{context, Environment};
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::checkpoint::read_json;
use crate::family::AudioMarkup;
use crate::Error;

/// How prompts are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptFormat {
    /// The model's chat template when it has one; else its family's built-in template when
    /// the family says the checkpoint is a chat model (for Qwen2-Audio: named like an instruct
    /// model, `*Instruct*`, with `<|im_start|>` in its tokenizer); the base prompt otherwise.
    #[default]
    Auto,
    /// The chat template (the model's own, else its family's built-in one).
    Chat,
    /// The audio placeholder (in its span, `<|audio_bos|><|AUDIO|><|audio_eos|>` for
    /// Qwen2-Audio) followed by the instruction.
    Base,
}

/// Ids of the tokens the prompt format needs, looked up by their strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The audio placeholder's text (`<|AUDIO|>`, `<sound>`), for messages.
    pub placeholder: String,
    /// The audio placeholder's id.
    pub audio: u32,
    /// What opens and closes an audio span, for families that mark one
    /// (`<|audio_bos|>`, `<|audio_eos|>`).
    pub span: Option<(u32, u32)>,
}

impl SpecialTokens {
    /// Looks `markup`'s tokens up in `tokenizer` and checks the placeholder against the
    /// model's `audio_token_index`.
    pub fn from_tokenizer(
        tokenizer: &Tokenizer,
        markup: &AudioMarkup,
        audio_token_index: u32,
    ) -> Result<Self, Error> {
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| Error::MissingToken {
                    token: token.to_string(),
                })
        };
        let audio = id(&markup.placeholder)?;
        if audio != audio_token_index {
            return Err(Error::InvalidConfig {
                field: "audio_token_index".to_string(),
                value: audio_token_index.to_string(),
                reason: format!("the tokenizer maps {} to {audio}", markup.placeholder),
            });
        }
        let span = match &markup.span {
            Some((open, close)) => Some((id(open)?, id(close)?)),
            None => None,
        };
        Ok(Self {
            placeholder: markup.placeholder.clone(),
            audio,
            span,
        })
    }
}

/// Instructions a chat template may run per rendering (minijinja fuel): real templates use a
/// few hundred per message.
const TEMPLATE_FUEL: u64 = 1_000_000;

/// A chat template in the Jinja dialect transformers uses.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
}

/// One content part of a chat message.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    /// An audio input; `audio_url` names the file.
    Audio {
        /// Path or URL of the audio.
        audio_url: String,
    },
    /// Text.
    Text {
        /// The text.
        text: String,
    },
}

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The parts, in order.
    pub content: Vec<Part>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(serde::Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

#[derive(serde::Deserialize)]
struct TemplateHolder {
    chat_template: Option<TemplateField>,
}

impl ChatTemplate {
    /// Wraps template source text.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// The model's own template: `chat_template.jinja`, `chat_template.json`, the
    /// `chat_template` key of `processor_config.json`, or that of `tokenizer_config.json` when
    /// it can place audio (a text-only Qwen2 template cannot). `None` when the model ships no
    /// audio chat template.
    pub fn from_model_files(
        template_file: Option<&Path>,
        processor_config: Option<&Path>,
        tokenizer_config: Option<&Path>,
    ) -> Result<Option<Self>, Error> {
        if let Some(path) = template_file {
            if path.extension().is_some_and(|e| e == "jinja") {
                let source = std::fs::read_to_string(path).map_err(|e| Error::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
                return Ok(Some(Self::new(source)));
            }
            let holder: TemplateHolder = read_json(path)?;
            if let Some(t) = holder.chat_template.and_then(pick_template) {
                return Ok(Some(t));
            }
        }
        if let Some(path) = processor_config {
            let holder: TemplateHolder = read_json(path)?;
            if let Some(t) = holder.chat_template.and_then(pick_template) {
                return Ok(Some(t));
            }
        }
        if let Some(path) = tokenizer_config {
            let holder: TemplateHolder = read_json(path)?;
            return Ok(holder
                .chat_template
                .and_then(pick_template)
                .filter(|t| t.source.contains("audio")));
        }
        Ok(None)
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`, ending with the assistant header when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let mut env = Environment::new();
        // A template is code from the checkpoint: bound its work so that a hostile one (nested
        // loops over large ranges) fails instead of hanging.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|source| Error::Template {
                context: "parsing",
                source,
            })?;
        let template = env.get_template("chat").map_err(|source| Error::Template {
            context: "parsing",
            source,
        })?;
        template
            .render(
                context! { messages => messages, add_generation_prompt => add_generation_prompt },
            )
            .map_err(|source| Error::Template {
                context: "rendering",
                source,
            })
    }
}

fn pick_template(field: TemplateField) -> Option<ChatTemplate> {
    match field {
        TemplateField::One(source) => Some(ChatTemplate::new(source)),
        TemplateField::Named(list) => {
            let default = list.iter().position(|t| t.name == "default").unwrap_or(0);
            list.into_iter()
                .nth(default)
                .map(|t| ChatTemplate::new(t.template))
        }
    }
}

/// A tokenized prompt whose audio placeholders have been expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedPrompt {
    /// The token ids fed to the language model.
    pub ids: Vec<u32>,
    /// For each audio input, the positions of its placeholder tokens.
    pub audio_spans: Vec<Range<usize>>,
}

/// Counts the `placeholder`s (`<|AUDIO|>`, `<sound>`) of a prompt text.
pub fn count_placeholders(text: &str, placeholder: &str) -> usize {
    text.matches(placeholder).count()
}

/// Tokenizes `text` like the reference tokenizer call (special tokens parsed as single ids).
pub fn tokenize(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, Error> {
    tokenizer
        .encode(text, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|source| Error::Tokenizer {
            context: "encoding the prompt".to_string(),
            source,
        })
}

/// Replaces the `i`-th placeholder id of `ids` by `counts[i]` copies; for a family that marks
/// audio spans, wraps it in the span's tokens (`<|audio_bos|>` / `<|audio_eos|>`) when neither
/// neighbour is already there.
pub fn expand(
    ids: &[u32],
    counts: &[usize],
    special: &SpecialTokens,
) -> Result<ExpandedPrompt, Error> {
    let placeholders = ids.iter().filter(|&&id| id == special.audio).count();
    if placeholders != counts.len() {
        return Err(Error::PlaceholderCount {
            placeholders,
            audios: counts.len(),
            token: special.placeholder.clone(),
        });
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>() + 2 * counts.len());
    let mut spans = Vec::with_capacity(counts.len());
    let mut next = counts.iter();
    for (i, &id) in ids.iter().enumerate() {
        if id != special.audio {
            out.push(id);
            continue;
        }
        let n = next.next().copied().unwrap_or(0);
        let wrap = special.span.filter(|&(open, close)| {
            !((i > 0 && ids[i - 1] == open) || ids.get(i + 1) == Some(&close))
        });
        if let Some((open, _)) = wrap {
            out.push(open);
        }
        let start = out.len();
        out.extend(std::iter::repeat_n(special.audio, n));
        spans.push(start..out.len());
        if let Some((_, close)) = wrap {
            out.push(close);
        }
    }
    Ok(ExpandedPrompt {
        ids: out,
        audio_spans: spans,
    })
}

/// Renders a multiple-choice question the way `auris ask` asks it.
pub fn multiple_choice(question: &str, choices: &[String]) -> String {
    let mut text = format!("{question}\n");
    for (i, choice) in choices.iter().enumerate() {
        text.push_str(&format!("({}) {choice}\n", choice_letter(i)));
    }
    text.push_str("Answer with the letter of the correct choice.");
    text
}

/// `A`, `B`, … for choice `i`.
pub fn choice_letter(i: usize) -> char {
    char::from(b'A' + (i % 26) as u8)
}

/// Finds which choice an answer names: `(B)`, a lone `B`, or the choice text itself.
pub fn parse_choice(answer: &str, choices: &[String]) -> Option<usize> {
    let letters: Vec<char> = (0..choices.len()).map(choice_letter).collect();
    let trimmed = answer.trim();
    for (i, l) in letters.iter().enumerate() {
        if trimmed.contains(&format!("({l})")) {
            return Some(i);
        }
    }
    let first_word: String = trimmed
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if let Some(i) = letters.iter().position(|l| first_word == l.to_string()) {
        return Some(i);
    }
    let lower = trimmed.to_lowercase();
    choices
        .iter()
        .position(|c| !c.is_empty() && lower.contains(&c.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::qwen2_audio::{AUDIO_TOKEN, CHAT_TEMPLATE as BUILTIN_CHAT_TEMPLATE};

    fn special() -> SpecialTokens {
        SpecialTokens {
            placeholder: AUDIO_TOKEN.to_string(),
            audio: 9,
            span: Some((7, 8)),
        }
    }

    #[test]
    fn expands_wrapped_placeholder() {
        let e = expand(&[1, 7, 9, 8, 2], &[3], &special()).unwrap();
        assert_eq!(e.ids, vec![1, 7, 9, 9, 9, 8, 2]);
        assert_eq!(e.audio_spans, vec![2..5]);
    }

    #[test]
    fn wraps_bare_placeholder_and_keeps_order() {
        let e = expand(&[9, 5, 7, 9, 8], &[2, 1], &special()).unwrap();
        assert_eq!(e.ids, vec![7, 9, 9, 8, 5, 7, 9, 8]);
        assert_eq!(e.audio_spans, vec![1..3, 6..7]);
    }

    #[test]
    fn a_family_without_spans_repeats_the_placeholder_only() {
        let bare = SpecialTokens {
            placeholder: "<sound>".to_string(),
            audio: 9,
            span: None,
        };
        let e = expand(&[1, 9, 2, 9], &[2, 1], &bare).unwrap();
        assert_eq!(e.ids, vec![1, 9, 9, 2, 9]);
        assert_eq!(e.audio_spans, vec![1..3, 4..5]);
    }

    #[test]
    fn audioflamingo3_template_puts_the_sound_before_the_text() {
        let t = ChatTemplate::new(crate::family::audioflamingo3::CHAT_TEMPLATE);
        let messages = [Message {
            role: "user".into(),
            content: vec![
                Part::Text {
                    text: "What is it?".into(),
                },
                Part::Audio {
                    audio_url: "a.wav".into(),
                },
            ],
        }];
        let text = t.render(&messages, true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<sound>What is it?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let template = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        );
        let start = std::time::Instant::now();
        let err = template.render(&[], true).unwrap_err();
        assert!(matches!(err, Error::Template { .. }), "{err}");
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let err = expand(&[1, 9, 2], &[3, 4], &special()).unwrap_err();
        assert!(matches!(
            err,
            Error::PlaceholderCount {
                placeholders: 1,
                audios: 2,
                ..
            }
        ));
    }

    #[test]
    fn builtin_template_renders_reference_example() {
        let t = ChatTemplate::new(BUILTIN_CHAT_TEMPLATE);
        let messages = [Message {
            role: "user".into(),
            content: vec![
                Part::Audio {
                    audio_url: "a.wav".into(),
                },
                Part::Text {
                    text: "What's that sound?".into(),
                },
            ],
        }];
        let text = t.render(&messages, true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhat's that sound?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn parses_choice_answers() {
        let choices = vec!["a dog".to_string(), "a violin".to_string()];
        assert_eq!(parse_choice("(B) a violin", &choices), Some(1));
        assert_eq!(parse_choice("A", &choices), Some(0));
        assert_eq!(parse_choice("It is a violin.", &choices), Some(1));
        assert_eq!(parse_choice("no idea", &choices), None);
        assert_eq!(
            multiple_choice("What?", &choices),
            "What?\n(A) a dog\n(B) a violin\nAnswer with the letter of the correct choice."
        );
    }
}
