//! What a caller asks of the pipeline and what it gets back.

use std::path::PathBuf;

use auris_llm::GenerateOptions;
use auris_prune::Policy;
use candle_core::Tensor;
use serde::Serialize;

use crate::budget::{ContextFit, ContextUse};

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
    /// The audio file.
    pub audio: PathBuf,
    /// Duration in seconds.
    pub duration_s: f64,
    /// The file's sample rate.
    pub sample_rate: u32,
    /// Tokens the encoder produced.
    pub n_audio_tokens: usize,
    /// Tokens given to the LLM.
    pub n_kept: usize,
    /// Indices of the kept tokens across windows.
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
    /// Stage timings.
    pub timings: Timings,
    /// Intermediate tensors: `Some` for [`Task::Inspect`].
    pub inspection: Option<Inspection>,
    /// The policy applied (its keep ratio lowered when the context asked for it).
    pub policy: Policy,
    /// How the prompt uses the model's context.
    pub context: ContextUse,
}
