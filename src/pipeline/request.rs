//! What a caller asks of the pipeline and what it gets back.

use std::path::{Path, PathBuf};

use auris_audio::encoder::EncoderOutput;
use auris_llm::GenerateOptions;
use auris_prune::Policy;
use candle_core::Tensor;
use serde::Serialize;

use super::AudioInput;
use crate::budget::{ContextFit, ContextUse};
use crate::prompt::Message;

/// What to put around the audio.
#[derive(Debug, Clone)]
pub enum PromptSpec {
    /// An instruction placed in the model's prompt format (chat template or base prompt).
    Instruction {
        /// The instruction text.
        text: String,
        /// A system message (chat models only).
        system: Option<String>,
    },
    /// The complete prompt text, used verbatim; each `<|AUDIO|>` is expanded.
    Raw(String),
    /// A conversation rendered through the model's chat template (chat models only); its
    /// audio parts, in order, stand for the request's audio inputs.
    Chat(Vec<Message>),
}

/// Where one audio input of an [`AudioRequest`] comes from.
#[derive(Debug, Clone)]
pub enum AudioSource<'a> {
    /// A file, read one 30 s window at a time.
    File(PathBuf),
    /// A file held in memory (an upload), read one window at a time like a file.
    Bytes {
        /// The file's bytes.
        bytes: Vec<u8>,
        /// A container hint such as `wav`.
        format: Option<String>,
        /// What errors and the response call it.
        name: String,
    },
    /// Audio decoded and encoded beforehand (an evaluation encodes a clip once and runs every
    /// pruning policy on it); pruning needs `windows` to carry the attention scores.
    Encoded {
        /// The decoded audio.
        audio: &'a AudioInput,
        /// The encoder's output for each of its windows.
        windows: &'a [EncoderOutput],
        /// Milliseconds the encoding took, reported as the encoder's time.
        encoder_ms: f64,
    },
}

impl AudioSource<'_> {
    /// The path or name the response reports for this input.
    pub fn label(&self) -> &Path {
        match self {
            AudioSource::File(path) => path,
            AudioSource::Bytes { name, .. } => Path::new(name),
            AudioSource::Encoded { audio, .. } => &audio.path,
        }
    }
}

/// One run of the request core: any number of audio inputs, a prompt with one audio
/// placeholder per input, one pruning policy and one context budget over all of them. A
/// [`Request`] is this with one audio file.
#[derive(Debug, Clone)]
pub struct AudioRequest<'a> {
    /// The audio inputs, in the order of the prompt's placeholders.
    pub inputs: Vec<AudioSource<'a>>,
    /// The prompt.
    pub prompt: PromptSpec,
    /// Which audio tokens to keep (applied to each window of each input).
    pub policy: Policy,
    /// Decoding parameters.
    pub generate: GenerateOptions,
    /// What to do once the prompt is prefilled.
    pub task: Task,
    /// What to do when the prompt would not fit the model's context.
    pub context: ContextFit,
}

impl Request {
    /// The core's request for this one file, read from `source`.
    pub fn with_source<'a>(&self, source: AudioSource<'a>) -> AudioRequest<'a> {
        AudioRequest {
            inputs: vec![source],
            prompt: self.prompt.clone(),
            policy: self.policy,
            generate: self.generate.clone(),
            task: self.task.clone(),
            context: self.context,
        }
    }
}

/// One run of the pipeline on one audio file.
#[derive(Debug, Clone)]
pub struct Request {
    /// The audio file.
    pub audio: PathBuf,
    /// The prompt.
    pub prompt: PromptSpec,
    /// Which audio tokens to keep.
    pub policy: Policy,
    /// Decoding parameters.
    pub generate: GenerateOptions,
    /// What to do once the prompt is prefilled.
    pub task: Task,
    /// What to do when the prompt would not fit the model's context.
    pub context: ContextFit,
}

/// What a [`Request`] does after the prompt is prefilled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Task {
    /// Generate text (`caption`, `ask`): [`Response::text`] and [`Response::output_token_ids`].
    #[default]
    Generate,
    /// Score each answer choice by log-likelihood instead of generating (`ask
    /// --score-choices`): [`Response::choice_logprobs`].
    ScoreChoices(Vec<String>),
    /// Keep the intermediate tensors ([`Response::inspection`], `auris inspect`), then stop
    /// at the prompt logits, or with `generate` go on as [`Task::Generate`] does.
    Inspect {
        /// Generate after the prompt too.
        generate: bool,
    },
}

impl Task {
    /// True for [`Task::Inspect`]: the run keeps the intermediate tensors.
    pub fn inspects(&self) -> bool {
        matches!(self, Task::Inspect { .. })
    }
}

/// Stage timings of one request, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Model loading (filled in by the caller, shared by every file of a call).
    pub load: f64,
    /// Decoding and resampling the audio.
    pub decode_audio: f64,
    /// Log-mel features.
    pub mel: f64,
    /// Encoder, scores included.
    pub encoder: f64,
    /// Pruning and projection.
    pub projector: f64,
    /// Prompt prefill up to the first logits.
    pub prefill: f64,
    /// Generating the new tokens.
    pub generate: f64,
    /// New tokens per second of `generate`.
    pub tokens_per_s: f64,
}

/// Intermediate tensors of a request (`auris inspect`).
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `(n_mels, frames)` log-mel of the first window.
    pub input_features: Tensor,
    /// `(N, d_audio)` encoder output of all windows, valid rows.
    pub audio_embeds: Tensor,
    /// `(N,)` attention scores.
    pub audio_scores: Tensor,
    /// `(n_kept, hidden)` rows fed to the LLM.
    pub projected: Tensor,
    /// `(vocab,)` logits at the last prompt position.
    pub prompt_logits: Tensor,
    /// `(prompt tokens, vocab)` logits at every prompt position (the next-token distribution
    /// after each prefix), f32.
    pub all_logits: Tensor,
}

/// The result of one request.
#[derive(Debug, Clone)]
pub struct Response {
    /// The audio file (the first input's path or name).
    pub audio: PathBuf,
    /// Duration in seconds, all inputs together.
    pub duration_s: f64,
    /// The file's sample rate (the first input's).
    pub sample_rate: u32,
    /// Tokens the encoder produced, all inputs together.
    pub n_audio_tokens: usize,
    /// Tokens given to the LLM, all inputs together.
    pub n_kept: usize,
    /// Indices of the kept tokens across windows (and across inputs, in order).
    pub kept_indices: Vec<usize>,
    /// Prompt text before placeholder expansion.
    pub prompt: String,
    /// Prompt ids after expansion.
    pub prompt_token_ids: Vec<u32>,
    /// Generated ids (stop token excluded).
    pub output_token_ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// The stop id that ended generation, if any.
    pub stopped_on: Option<u32>,
    /// Log-likelihood of each answer choice: `Some` for [`Task::ScoreChoices`].
    pub choice_logprobs: Option<Vec<f32>>,
    /// Stage timings (the audio stages summed over the inputs).
    pub timings: Timings,
    /// Intermediate tensors: `Some` for [`Task::Inspect`].
    pub inspection: Option<Inspection>,
    /// The policy applied (its keep ratio lowered when the context asked for it).
    pub policy: Policy,
    /// How the prompt uses the model's context.
    pub context: ContextUse,
}
