//! The pipeline: audio file -> log-mel -> encoder (+ scores) -> pruning -> projector -> prompt
//! merge -> Qwen2 decoder -> text.
//!
//! [`Pipeline`] holds the loaded stages and no per-request state; each [`Request`] is run on its
//! own KV cache. Data flows one way through the stages; shapes are checked between stages when
//! the model is loaded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use auris_audio::config::EncoderConfig;
use auris_audio::encoder::{EncodeOptions, EncoderMode, EncoderOutput, Qwen2AudioEncoder};
use auris_audio::{LogMel, MelConfig, MelExtractor};
use auris_llm::{GenerateOptions, KvCache, Qwen2Decoder, SamplingParams, WeightFormat};
use auris_projector::MultiModalProjector;
use auris_prune::{Policy, Strategy, WindowInput};
use candle_core::{DType, Device, IndexOp, Tensor};
use serde::Serialize;
use tokenizers::Tokenizer;

use crate::budget::{ContextFit, ContextUse};
use crate::checkpoint::{self, ModelFiles, ModelSource, TensorInfo, WeightStore};
use crate::config::{GenerationConfig, ModelConfig};
use crate::memory::{self, Placement};
use crate::prompt::{
    self, ChatTemplate, Message, Part, PromptFormat, SpecialTokens, AUDIO_TOKEN,
    BUILTIN_CHAT_TEMPLATE,
};
use crate::Error;

mod chat;
mod stream;
pub use chat::{ChatRequest, ChatResponse};
pub use stream::TokenGatherer;

/// The instruction used by `caption` on a chat model when the user gives none.
pub const DEFAULT_CHAT_CAPTION: &str = "Describe the audio in one sentence.";
/// The instruction used by `caption` on a base model (the model card's captioning prompt).
pub const DEFAULT_BASE_CAPTION: &str = "Generate the caption in English:";

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the tensors live and the computation runs.
    pub device: Device,
    /// Compute dtype of the encoder and projector (f32 on CPU by default), and of the language
    /// model under [`Weights::Compute`].
    pub dtype: DType,
    /// How the language model keeps its weights.
    pub weights: Weights,
    /// Show download progress on stderr.
    pub progress: bool,
    /// Chat template or base prompt.
    pub prompt_format: PromptFormat,
    /// Estimate the resident memory before reading any weight and fail with
    /// [`Error::InsufficientMemory`] when it exceeds the memory available.
    pub memory_check: bool,
    /// Positions (prompt and generated tokens) the memory estimate reserves KV cache for.
    pub context: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            weights: Weights::Checkpoint,
            progress: false,
            prompt_format: PromptFormat::Auto,
            memory_check: true,
            context: DEFAULT_CONTEXT,
        }
    }
}

/// The context [`LoadOptions::context`] assumes by default: one 30 s window of audio tokens,
/// a prompt and [`crate::DEFAULT_MAX_NEW_TOKENS`] new tokens.
pub const DEFAULT_CONTEXT: usize = 750 + 128 + crate::DEFAULT_MAX_NEW_TOKENS;

/// How the language model keeps its weights; the encoder and projector always use
/// [`LoadOptions::dtype`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Converted to the compute dtype, which is also the dtype of every activation (the GPU
    /// default, and `--dtype f32`).
    Compute,
    /// Kept in the checkpoint's precision (bf16 and f16 stay as they are on disk, anything
    /// else becomes f32), computing in f32: the CPU default. No whole-model f32 copy.
    Checkpoint,
    /// Stored in the given format (bf16, f16, or quantised at load to q8_0, q4_0, q4_k),
    /// computing in f32.
    Format(WeightFormat),
}

impl Weights {
    /// Where the language model's weights go for a checkpoint stored in `checkpoint` (the
    /// dtype of its language-model tensors), with `compute` for the other stages.
    pub fn placement(self, compute: DType, checkpoint: DType) -> Placement {
        let (llm_read, llm_format) = match self {
            Weights::Compute => (compute, None),
            Weights::Checkpoint => match checkpoint {
                DType::BF16 => (DType::BF16, Some(WeightFormat::Bf16)),
                DType::F16 => (DType::F16, Some(WeightFormat::F16)),
                _ => (DType::F32, Some(WeightFormat::F32)),
            },
            Weights::Format(f) => {
                let read = match f {
                    WeightFormat::F32 => DType::F32,
                    WeightFormat::Bf16 => DType::BF16,
                    WeightFormat::F16 => DType::F16,
                    // Quantised straight from the checkpoint's own values.
                    _ if matches!(checkpoint, DType::BF16 | DType::F16) => checkpoint,
                    _ => DType::F32,
                };
                (read, Some(f))
            }
        };
        // The encoder keeps a half-precision checkpoint's linear weights whenever the
        // language model does not compute in the compute dtype (the CPU modes).
        let half = matches!(checkpoint, DType::BF16 | DType::F16);
        let audio_linear = match llm_format {
            Some(f) if f != WeightFormat::F32 && half => checkpoint,
            _ => compute,
        };
        Placement {
            compute,
            audio_linear,
            llm_read,
            llm_format,
        }
    }

    /// The options a user would type for this choice (`--dtype bf16`, `--quant q8_0`).
    pub fn flag(self) -> String {
        match self {
            Weights::Compute => "--dtype f32".to_string(),
            Weights::Checkpoint => "--dtype auto".to_string(),
            Weights::Format(f) if f.is_quantized() => format!("--quant {f}"),
            Weights::Format(f) => format!("--dtype {f}"),
        }
    }
}

/// A decoded audio file, cut into 30 s windows of log-mel features.
#[derive(Debug, Clone)]
pub struct AudioInput {
    /// The file.
    pub path: PathBuf,
    /// The file's own sample rate.
    pub sample_rate: u32,
    /// The file's channel count.
    pub channels: usize,
    /// Samples after downmixing and resampling to 16 kHz.
    pub n_samples: usize,
    /// One log-mel window per started 30 s.
    pub windows: Vec<LogMel>,
    /// Milliseconds spent decoding and resampling.
    pub decode_ms: f64,
    /// Milliseconds spent on the log-mel features.
    pub mel_ms: f64,
}

impl AudioInput {
    /// Length of the audio in seconds.
    pub fn duration_s(&self) -> f64 {
        self.n_samples as f64 / f64::from(auris_audio::SAMPLE_RATE)
    }
}

/// The audio tokens handed to the language model, after pruning.
#[derive(Debug, Clone)]
pub struct AudioTokens {
    /// `(n_kept, d_audio)` encoder rows in time order.
    pub rows: Tensor,
    /// Tokens the encoder produced over all windows.
    pub n_audio_tokens: usize,
    /// Indices of the kept tokens, counted across windows.
    pub kept_indices: Vec<usize>,
    /// Attention scores of every token (all windows), when computed.
    pub scores: Option<Vec<f32>>,
}

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

/// A loaded model: every stage, the tokenizer and the prompt format.
pub struct Pipeline {
    config: ModelConfig,
    generation: GenerationConfig,
    mel: MelExtractor,
    encoder: Qwen2AudioEncoder,
    projector: MultiModalProjector,
    decoder: Qwen2Decoder,
    tokenizer: Tokenizer,
    special: SpecialTokens,
    chat_template: Option<ChatTemplate>,
    stop_ids: Vec<u32>,
    device: Device,
    name: String,
}

/// The dtype of the language model's tensors in the checkpoint (that of its embedding table,
/// else f32).
fn llm_checkpoint_dtype(infos: &[TensorInfo]) -> DType {
    infos
        .iter()
        .find(|i| i.name == "language_model.model.embed_tokens.weight")
        .and_then(|i| i.dtype)
        .unwrap_or(DType::F32)
}

/// The weight choices a user can switch to on this device, cheapest last.
fn alternatives(device: &Device) -> Vec<Weights> {
    let mut all = vec![Weights::Compute, Weights::Checkpoint];
    if device.is_cpu() {
        all.extend(
            [WeightFormat::Bf16, WeightFormat::Q8_0, WeightFormat::Q4K].map(Weights::Format),
        );
    }
    all
}

/// Fails with [`Error::InsufficientMemory`] when the load would not fit `available` (see
/// [`crate::memory`]); passes when the system does not report its memory.
fn check_memory(
    cfg: &ModelConfig,
    infos: &[TensorInfo],
    opts: &LoadOptions,
    name: &str,
    available: Option<memory::Available>,
) -> Result<(), Error> {
    let Some(available) = available else {
        return Ok(());
    };
    let checkpoint = llm_checkpoint_dtype(infos);
    let need = |w: Weights| {
        memory::estimate(
            cfg,
            infos,
            &w.placement(opts.dtype, checkpoint),
            opts.context,
        )
        .total()
    };
    let needed = need(opts.weights);
    if needed <= available.bytes {
        return Ok(());
    }
    // Two choices that place the weights alike (auto and bf16 on a bf16 checkpoint) are one.
    let place = |w: Weights| w.placement(opts.dtype, checkpoint);
    let mut seen = vec![place(opts.weights)];
    let mut fits: Vec<(String, u64)> = Vec::new();
    for w in alternatives(&opts.device) {
        let bytes = need(w);
        if bytes <= available.bytes && !seen.contains(&place(w)) {
            seen.push(place(w));
            fits.push((w.flag(), bytes));
        }
    }
    Err(Error::InsufficientMemory(Box::new(memory::Shortfall {
        model: name.to_string(),
        mode: opts.weights.flag(),
        needed,
        available,
        fits,
    })))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl Pipeline {
    /// Loads a model from a folder or the hub.
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Self, Error> {
        let files = checkpoint::resolve(source, opts.progress)?;
        Self::from_files(&files, &source.display(), opts)
    }

    /// Loads a model whose files are already resolved.
    pub fn from_files(files: &ModelFiles, name: &str, opts: &LoadOptions) -> Result<Self, Error> {
        let config = ModelConfig::from_file(&files.config)?;
        let generation = GenerationConfig::from_file(files.generation_config.as_deref())?;
        let mel_config = files.mel_config(config.audio_config.num_mel_bins)?;
        check_front_end(&mel_config, &config.audio_config)?;
        let tokenizer =
            Tokenizer::from_file(&files.tokenizer).map_err(|source| Error::Tokenizer {
                context: format!("loading {}", files.tokenizer.display()),
                source,
            })?;
        let special = SpecialTokens::from_tokenizer(&tokenizer, config.audio_token_index)
            .map_err(|e| match e {
                Error::MissingToken { token } => Error::BadFile {
                    path: files.tokenizer.clone(),
                    reason: format!("no {token} token: an audio model's tokenizer needs the audio special tokens"),
                },
                e => e,
            })?;
        let own_template = ChatTemplate::from_model_files(
            files.chat_template.as_deref(),
            files.processor_config.as_deref(),
            files.tokenizer_config.as_deref(),
        )?;
        let chat_template = match opts.prompt_format {
            PromptFormat::Base => None,
            PromptFormat::Chat => {
                Some(own_template.unwrap_or_else(|| ChatTemplate::new(BUILTIN_CHAT_TEMPLATE)))
            }
            PromptFormat::Auto => own_template.or_else(|| {
                let instruct = name.to_lowercase().contains("instruct")
                    && tokenizer.token_to_id("<|im_start|>").is_some();
                instruct.then(|| ChatTemplate::new(BUILTIN_CHAT_TEMPLATE))
            }),
        };

        let store = WeightStore::open_model(files)?;
        let infos = store.infos();
        let place = opts
            .weights
            .placement(opts.dtype, llm_checkpoint_dtype(&infos));
        // The estimate is of host memory, where the CPU keeps the weights; on a GPU they live in
        // device memory (the memory-mapped file is read through once), and an oversized model
        // fails with the driver's out-of-memory error instead.
        if opts.memory_check && opts.device.is_cpu() {
            check_memory(&config, &infos, opts, name, memory::available())?;
        }
        let vb = store.var_builder(opts.dtype, &opts.device);
        let encoder = Qwen2AudioEncoder::load_with(
            &config.audio_config,
            store
                .var_builder(place.audio_linear, &opts.device)
                .pp("audio_tower"),
            opts.dtype,
        )?;
        let projector = MultiModalProjector::load(
            config.audio_config.d_model,
            config.text_config.hidden_size,
            vb.pp("multi_modal_projector"),
        )?;
        let llm_vb = store
            .var_builder(place.llm_read, &opts.device)
            .pp("language_model");
        let decoder = match place.llm_format {
            None => Qwen2Decoder::load(&config.text_config, llm_vb)?,
            Some(weights) => Qwen2Decoder::load_with(
                &config.text_config,
                llm_vb,
                &auris_llm::LoadOptions { weights },
            )?,
        };
        store.check_coverage(&["language_model.lm_head.weight"])?;

        let stop_ids = stop_ids(&generation, &config, &tokenizer);
        let mel = MelExtractor::new(mel_config)?;
        Ok(Self {
            config,
            generation,
            mel,
            encoder,
            projector,
            decoder,
            tokenizer,
            special,
            chat_template,
            stop_ids,
            device: opts.device.clone(),
            name: name.to_string(),
        })
    }

    /// The model's name as given when loading.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model's decoding defaults.
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The audio encoder.
    pub fn encoder(&self) -> &Qwen2AudioEncoder {
        &self.encoder
    }

    /// The language model.
    pub fn decoder(&self) -> &Qwen2Decoder {
        &self.decoder
    }

    /// Ids of the audio placeholder tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// True when the model has a chat template (an instruct model).
    pub fn is_chat(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Ids that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Decoding options from the model's `generation_config.json`, with `max_new_tokens`.
    pub fn default_generate_options(&self, max_new_tokens: usize) -> GenerateOptions {
        let g = &self.generation;
        let sampling = if g.do_sample {
            SamplingParams {
                temperature: Some(g.temperature),
                top_k: (g.top_k > 0).then_some(g.top_k),
                top_p: (g.top_p < 1.0).then_some(g.top_p),
                repetition_penalty: g.repetition_penalty,
                seed: 0,
            }
        } else {
            SamplingParams {
                temperature: None,
                top_k: None,
                top_p: None,
                repetition_penalty: g.repetition_penalty,
                seed: 0,
            }
        };
        GenerateOptions {
            max_new_tokens,
            stop_ids: self.stop_ids.clone(),
            sampling,
        }
    }

    /// Decodes, resamples and cuts an audio file into log-mel windows.
    pub fn load_audio(&self, path: &Path) -> Result<AudioInput, Error> {
        let start = Instant::now();
        let pcm = auris_audio::decode_file(path)?;
        self.audio_input(&pcm, path.to_path_buf(), start)
    }

    /// Resamples decoded audio and cuts it into log-mel windows; `start` is when decoding began.
    fn audio_input(
        &self,
        pcm: &auris_audio::Pcm,
        path: PathBuf,
        start: Instant,
    ) -> Result<AudioInput, Error> {
        let samples = auris_audio::to_16k(pcm, &path)?;
        let decode_ms = ms(start);
        let start = Instant::now();
        let windows = self.mel.windows(&samples)?;
        Ok(AudioInput {
            path,
            sample_rate: pcm.sample_rate,
            channels: pcm.channels,
            n_samples: samples.len(),
            windows,
            decode_ms,
            mel_ms: ms(start),
        })
    }

    /// Runs the encoder on every window.
    pub fn encode(&self, audio: &AudioInput, scores: bool) -> Result<Vec<EncoderOutput>, Error> {
        audio
            .windows
            .iter()
            .map(|w| self.encode_window(w, scores))
            .collect()
    }

    /// Runs the encoder on one window. A last window of 320 samples or fewer (2 mel frames)
    /// yields no token, which the encoder refuses: it gets an empty output instead.
    fn encode_window(&self, mel: &LogMel, scores: bool) -> Result<EncoderOutput, Error> {
        if auris_audio::audio_token_count(mel.valid_frames) == 0 {
            let d = self.encoder.config().d_model;
            return Ok(EncoderOutput {
                hidden: Tensor::zeros((0, d), DType::F32, &self.device)?,
                scores: scores.then(Vec::new),
            });
        }
        let mode = EncoderMode::ValidFrames;
        Ok(self.encoder.forward(mel, EncodeOptions { scores, mode })?)
    }

    /// Applies `policy` to each window on its own and gathers the kept encoder rows in time
    /// order; kept indices count tokens across windows.
    pub fn select(&self, encoded: &[EncoderOutput], policy: &Policy) -> Result<AudioTokens, Error> {
        select_tokens(encoded, policy)
    }

    /// Projects the kept encoder rows into the language model's embedding space.
    pub fn project(&self, tokens: &AudioTokens) -> Result<Tensor, Error> {
        Ok(self.projector.forward(&tokens.rows)?)
    }

    /// The prompt text before expansion, for one audio input.
    pub fn render_prompt(&self, spec: &PromptSpec, audio: &Path) -> Result<String, Error> {
        match spec {
            PromptSpec::Raw(text) => {
                let n = prompt::count_placeholders(text);
                if n != 1 {
                    return Err(Error::PlaceholderCount {
                        placeholders: n,
                        audios: 1,
                        token: AUDIO_TOKEN.to_string(),
                    });
                }
                Ok(text.clone())
            }
            PromptSpec::Instruction { text, system } => match &self.chat_template {
                Some(template) => {
                    let mut messages = Vec::new();
                    if let Some(system) = system {
                        messages.push(Message {
                            role: "system".to_string(),
                            content: vec![Part::Text {
                                text: system.clone(),
                            }],
                        });
                    }
                    messages.push(Message {
                        role: "user".to_string(),
                        content: vec![
                            Part::Audio {
                                audio_url: audio.display().to_string(),
                            },
                            Part::Text { text: text.clone() },
                        ],
                    });
                    template.render(&messages, true)
                }
                None => {
                    if system.is_some() {
                        return Err(Error::Usage(
                            "this model has no chat template, so it takes no system message"
                                .to_string(),
                        ));
                    }
                    Ok(format!("<|audio_bos|>{AUDIO_TOKEN}<|audio_eos|>{text}"))
                }
            },
        }
    }

    /// The default instruction of `caption` for this model.
    pub fn default_caption_instruction(&self) -> &'static str {
        if self.is_chat() {
            DEFAULT_CHAT_CAPTION
        } else {
            DEFAULT_BASE_CAPTION
        }
    }

    /// Embeds `ids` and writes `audio_rows` into the placeholder span.
    pub fn merge_embeddings(
        &self,
        ids: &[u32],
        span: std::ops::Range<usize>,
        audio_rows: &Tensor,
    ) -> Result<Tensor, Error> {
        let rows = audio_rows.dim(0)?;
        if rows != span.len() {
            return Err(Error::AudioRowMismatch {
                tokens: span.len(),
                rows,
            });
        }
        // Only the text around the span is embedded: the placeholders' rows would be thrown
        // away, and on long audio they are most of the prompt.
        let embed = |ids: &[u32]| -> Result<Tensor, Error> {
            let ids_t = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
            Ok(self.decoder.embed_tokens(&ids_t)?.squeeze(0)?)
        };
        let before = (span.start > 0)
            .then(|| embed(&ids[..span.start]))
            .transpose()?;
        let after = (span.end < ids.len())
            .then(|| embed(&ids[span.end..]))
            .transpose()?;
        let dtype = before.as_ref().or(after.as_ref()).map(Tensor::dtype);
        let audio = match dtype {
            Some(dtype) => audio_rows.to_dtype(dtype)?,
            None => audio_rows.clone(),
        };
        let parts: Vec<Tensor> = [before, Some(audio), after].into_iter().flatten().collect();
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }

    /// Runs one request end to end; `on_token` sees each new token id as it is generated and
    /// may return `false` to stop.
    pub fn run(
        &self,
        request: &Request,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        request.policy.validate()?;
        match request.task {
            Task::Generate | Task::ScoreChoices(_) => self.run_streamed(request, on_token),
            Task::Inspect { .. } => self.run_inspected(request, on_token),
        }
    }

    /// [`Pipeline::run`] keeping the whole audio and its encoder output, which the
    /// inspection reports (with the attention scores whatever the policy).
    fn run_inspected(
        &self,
        request: &Request,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let audio = self.load_audio(&request.audio)?;
        let plan = self.plan(request, &audio_token_counts(&audio))?;
        let start = Instant::now();
        let encoded = self.encode(&audio, true)?;
        self.run_planned(request, &audio, &encoded, ms(start), plan, on_token)
    }

    /// [`Pipeline::run`] from audio already decoded and encoded (`encoder_ms` is reported as
    /// the encoder's time): an evaluation encodes a clip once and runs every pruning policy on
    /// it. Pruning needs `encoded` to carry the attention scores.
    pub fn run_encoded(
        &self,
        request: &Request,
        audio: &AudioInput,
        encoded: &[EncoderOutput],
        encoder_ms: f64,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        request.policy.validate()?;
        let plan = self.plan(request, &audio_token_counts(audio))?;
        self.run_planned(request, audio, encoded, encoder_ms, plan, on_token)
    }

    /// The prompt of `request` and the pruning policy that fits the model's context, for
    /// audio of `window_tokens` tokens per window.
    fn plan(&self, request: &Request, window_tokens: &[usize]) -> Result<Plan, Error> {
        let prompt_text = self.render_prompt(&request.prompt, &request.audio)?;
        let ids = prompt::tokenize(&self.tokenizer, &prompt_text)?;
        let (policy, context) = self.fit_context(window_tokens, &ids, request)?;
        Ok(Plan {
            prompt_text,
            ids,
            policy,
            context,
        })
    }

    fn run_planned(
        &self,
        request: &Request,
        audio: &AudioInput,
        encoded: &[EncoderOutput],
        encoder_ms: f64,
        plan: Plan,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let mut timings = Timings {
            decode_audio: audio.decode_ms,
            mel: audio.mel_ms,
            encoder: encoder_ms,
            ..Timings::default()
        };
        let start = Instant::now();
        let tokens = self.select(encoded, &plan.policy)?;
        timings.projector = ms(start);
        let selected = Selected {
            audio: AudioSummary {
                duration_s: audio.duration_s(),
                sample_rate: audio.sample_rate,
            },
            tokens,
            timings,
        };
        self.run_selected(request, selected, plan, Some((audio, encoded)), on_token)
    }

    /// The rest of a request once its audio tokens are selected: projection, prompt merge,
    /// prefill and generation. `inspect` is the audio and its encoder output, which
    /// [`Task::Inspect`] needs.
    fn run_selected(
        &self,
        request: &Request,
        selected: Selected,
        plan: Plan,
        inspect: Option<(&AudioInput, &[EncoderOutput])>,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let Plan {
            prompt_text,
            ids,
            policy,
            context,
        } = plan;
        let Selected {
            audio,
            tokens,
            mut timings,
        } = selected;
        let start = Instant::now();
        let projected = self.project(&tokens)?;
        // The encoder rows are not needed past the projection.
        let AudioTokens {
            n_audio_tokens,
            kept_indices,
            scores,
            ..
        } = tokens;
        timings.projector += ms(start);

        let expanded = prompt::expand(&ids, &[kept_indices.len()], &self.special)?;
        let span = expanded.audio_spans.first().cloned().unwrap_or(0..0);
        let embeds = self.merge_embeddings(&expanded.ids, span, &projected)?;
        // On long audio the projected rows and the prompt embeddings are hundreds of MB: each
        // goes as soon as nothing reads it.
        let projected = request.task.inspects().then_some(projected);

        let start = Instant::now();
        let mut cache = self.decoder.new_cache();
        let (logits, all_logits) = self.prefill(&embeds, &mut cache, request.task.inspects())?;
        drop(embeds);
        timings.prefill = ms(start);

        let inspection = match (&all_logits, inspect, &projected) {
            (Some(all), Some((audio, encoded)), Some(projected)) => {
                Some(self.inspection(audio, encoded, scores, projected, all)?)
            }
            (None, _, _) => None,
            _ => {
                return Err(Error::Invariant(
                    "inspect needs the audio windows and their encoder output",
                ))
            }
        };
        drop(projected);

        let response = Response {
            audio: request.audio.clone(),
            duration_s: audio.duration_s,
            sample_rate: audio.sample_rate,
            n_audio_tokens,
            n_kept: kept_indices.len(),
            kept_indices,
            prompt: prompt_text,
            prompt_token_ids: expanded.ids,
            output_token_ids: Vec::new(),
            text: String::new(),
            stopped_on: None,
            choice_logprobs: None,
            timings,
            inspection,
            policy,
            context,
        };
        self.answer(request, response, &mut cache, &logits, on_token)
    }

    /// Completes `response` after the prefill as `request.task` asks: nothing more (an
    /// inspection without generation), the choices' log-likelihoods, or the generated text.
    fn answer(
        &self,
        request: &Request,
        mut response: Response,
        cache: &mut KvCache,
        logits: &Tensor,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        match &request.task {
            Task::Inspect { generate: false } => Ok(response),
            Task::ScoreChoices(choices) => {
                let start = Instant::now();
                response.choice_logprobs = Some(self.score_choices(cache, logits, choices)?);
                response.timings.generate = ms(start);
                Ok(response)
            }
            Task::Generate | Task::Inspect { generate: true } => {
                self.generate_text(request, response, cache, logits, on_token)
            }
        }
    }

    /// Generates after the prompt and puts the text and ids into `response`.
    fn generate_text(
        &self,
        request: &Request,
        mut response: Response,
        cache: &mut KvCache,
        logits: &Tensor,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let generation = self.generate(
            cache,
            logits,
            &response.prompt_token_ids,
            &request.generate,
            on_token,
            &mut response.timings,
        )?;
        response.text = self.decode(&generation.tokens)?;
        response.output_token_ids = generation.tokens;
        response.stopped_on = generation.stopped_on;
        Ok(response)
    }

    /// Runs the prompt `embeds` through the decoder into `cache`: the logits at the last
    /// position, and with `all` those of every position (`inspect`; a plain request computes
    /// the output head on the last one only).
    fn prefill(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        all: bool,
    ) -> Result<(Tensor, Option<Tensor>), Error> {
        if all {
            let all = self.decoder.forward_embeds_all(embeds, cache)?;
            let last = all.i((.., all.dim(1)? - 1))?;
            return Ok((last, Some(all)));
        }
        Ok((self.decoder.forward_embeds(embeds, cache)?, None))
    }

    /// The policy `request` runs with on `audio` and the context it uses (see
    /// [`crate::budget::plan`]); `ids` is the prompt before placeholder expansion.
    pub fn plan_context(
        &self,
        audio: &AudioInput,
        ids: &[u32],
        request: &Request,
    ) -> Result<(Policy, ContextUse), Error> {
        self.fit_context(&audio_token_counts(audio), ids, request)
    }

    /// [`Pipeline::plan_context`] for audio of `tokens` tokens per window.
    fn fit_context(
        &self,
        tokens: &[usize],
        ids: &[u32],
        request: &Request,
    ) -> Result<(Policy, ContextUse), Error> {
        // The placeholder becomes the audio, wrapped in <|audio_bos|>/<|audio_eos|> if needed.
        let text = prompt::expand(ids, &[0], &self.special)?.ids.len();
        crate::budget::plan(
            tokens,
            text,
            request.generate.max_new_tokens,
            self.config.text_config.max_position_embeddings,
            &request.policy,
            &request.context,
        )
    }

    /// Generates after the prompt's last logits and records the time and tokens per second.
    fn generate(
        &self,
        cache: &mut KvCache,
        logits: &Tensor,
        context_ids: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
        timings: &mut Timings,
    ) -> Result<auris_llm::Generation, Error> {
        let start = Instant::now();
        let generation = auris_llm::generate_from_logits(
            &self.decoder,
            cache,
            logits,
            context_ids,
            opts,
            on_token,
        )?;
        timings.generate = ms(start);
        timings.tokens_per_s = if timings.generate > 0.0 {
            generation.tokens.len() as f64 / (timings.generate / 1e3)
        } else {
            0.0
        };
        Ok(generation)
    }

    /// Detokenizes, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|source| Error::Tokenizer {
                context: "decoding token ids".to_string(),
                source,
            })
    }

    /// Log-likelihood of each choice's continuation `"(L) text"` after the prompt, reusing the
    /// prompt's KV cache.
    fn score_choices(
        &self,
        cache: &mut KvCache,
        prompt_logits: &Tensor,
        choices: &[String],
    ) -> Result<Vec<f32>, Error> {
        let prompt_len = cache.len();
        let first = candle_nn::ops::log_softmax(&prompt_logits.squeeze(0)?, 0)?;
        let mut out = Vec::with_capacity(choices.len());
        for (i, choice) in choices.iter().enumerate() {
            let text = format!("({}) {choice}", prompt::choice_letter(i));
            let ids = self
                .tokenizer
                .encode(text.as_str(), false)
                .map_err(|source| Error::Tokenizer {
                    context: format!("encoding {text:?}"),
                    source,
                })?
                .get_ids()
                .to_vec();
            let Some(&first_id) = ids.first() else {
                out.push(0.0);
                continue;
            };
            let mut total = first.i(first_id as usize)?.to_scalar::<f32>()?;
            if ids.len() > 1 {
                cache.truncate(prompt_len);
                let ids_t = Tensor::new(&ids[..ids.len() - 1], &self.device)?.unsqueeze(0)?;
                let embeds = self.decoder.embed_tokens(&ids_t)?;
                let logits = self
                    .decoder
                    .forward_embeds_all(&embeds, cache)?
                    .squeeze(0)?;
                let logp = candle_nn::ops::log_softmax(&logits, 1)?;
                for (pos, &id) in ids[1..].iter().enumerate() {
                    total += logp.i((pos, id as usize))?.to_scalar::<f32>()?;
                }
            }
            out.push(total);
        }
        cache.truncate(prompt_len);
        Ok(out)
    }

    fn inspection(
        &self,
        audio: &AudioInput,
        encoded: &[EncoderOutput],
        scores: Option<Vec<f32>>,
        projected: &Tensor,
        logits: &Tensor,
    ) -> Result<Inspection, Error> {
        let first = audio
            .windows
            .first()
            .ok_or(Error::Invariant("the audio produced no window"))?;
        let input_features =
            Tensor::from_slice(&first.data, (first.n_mels, first.n_frames), &Device::Cpu)?;
        let hidden: Vec<Tensor> = encoded
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| w.hidden.clone())
            .collect();
        let audio_embeds = Tensor::cat(&hidden, 0)?.to_dtype(DType::F32)?;
        let scores = scores.unwrap_or_default();
        let n = scores.len();
        Ok(Inspection {
            input_features,
            audio_embeds,
            audio_scores: Tensor::from_vec(scores, n, &Device::Cpu)?,
            projected: projected.to_dtype(DType::F32)?,
            prompt_logits: logits.i((0, logits.dim(1)? - 1))?.to_dtype(DType::F32)?,
            all_logits: logits.squeeze(0)?.to_dtype(DType::F32)?,
        })
    }
}

/// Audio tokens of each window of `audio`.
fn audio_token_counts(audio: &AudioInput) -> Vec<usize> {
    crate::budget::window_tokens(audio.windows.iter().map(|w| w.valid_frames))
}

/// The audio of a request as the response reports it.
struct AudioSummary {
    duration_s: f64,
    sample_rate: u32,
}

/// A request's audio tokens after selection, with the stage timings so far.
struct Selected {
    audio: AudioSummary,
    tokens: AudioTokens,
    timings: Timings,
}

/// What a request resolves to before its audio is encoded: the rendered prompt, its token ids
/// and the pruning policy that fits the model's context.
struct Plan {
    prompt_text: String,
    ids: Vec<u32>,
    policy: Policy,
    context: ContextUse,
}

/// Turns generated ids into text pieces as they arrive, holding back a piece while it ends in
/// an incomplete UTF-8 sequence (a byte-level BPE token can carry part of a character).
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// A stream over `tokenizer`'s vocabulary; special tokens are skipped.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds one id; returns the new text, if any is complete.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, Error> {
        self.ids.push(id);
        let text = self
            .tokenizer
            .decode(&self.ids, true)
            .map_err(|source| Error::Tokenizer {
                context: "decoding token ids".to_string(),
                source,
            })?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return Ok(None);
        }
        let piece = text
            .get(self.emitted..)
            .map(str::to_string)
            .filter(|p| !p.is_empty());
        self.emitted = text.len();
        Ok(piece)
    }
}

/// The stop ids of a model (see [`Pipeline::stop_ids`]): `generation_config.json`'s
/// `eos_token_id` when it has one (what `generate` uses), else the text config's
/// `eos_token_id` plus `<|im_end|>` and `<|endoftext|>` when the tokenizer has them.
fn stop_ids(
    generation: &GenerationConfig,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
) -> Vec<u32> {
    if let Some(eos) = &generation.eos_token_id {
        return eos.to_vec();
    }
    let mut ids: Vec<u32> = config
        .text_config
        .eos_token_id
        .as_ref()
        .map(|e| e.to_vec())
        .unwrap_or_default();
    for token in ["<|im_end|>", "<|endoftext|>"] {
        if let Some(id) = tokenizer.token_to_id(token) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// The front-end must produce what the encoder expects.
fn check_front_end(mel: &MelConfig, audio: &EncoderConfig) -> Result<(), Error> {
    if mel.n_mels != audio.num_mel_bins {
        return Err(Error::InvalidConfig {
            field: "preprocessor_config.feature_size".to_string(),
            value: mel.n_mels.to_string(),
            reason: format!(
                "the encoder expects audio_config.num_mel_bins = {}",
                audio.num_mel_bins
            ),
        });
    }
    if mel.n_frames() != audio.mel_frames() {
        return Err(Error::InvalidConfig {
            field: "preprocessor_config.n_samples".to_string(),
            value: mel.n_samples.to_string(),
            reason: format!(
                "gives {} frames per window, the encoder expects {} (2 x max_source_positions)",
                mel.n_frames(),
                audio.mel_frames()
            ),
        });
    }
    Ok(())
}

/// Applies `policy` to each window on its own and gathers the kept encoder rows in time
/// order; kept indices count tokens across windows.
pub fn select_tokens(encoded: &[EncoderOutput], policy: &Policy) -> Result<AudioTokens, Error> {
    let mut gatherer = TokenGatherer::new(*policy);
    for window in encoded {
        gatherer.push(window)?;
    }
    gatherer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Available, AvailableSource};

    /// tiny-chat's configuration and tensor headers (bf16 on disk).
    fn tiny_chat() -> (ModelConfig, Vec<TensorInfo>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-chat");
        let files = checkpoint::resolve(&ModelSource::Local(dir), false).unwrap();
        let cfg = ModelConfig::from_file(&files.config).unwrap();
        (cfg, WeightStore::open(&files.weights).unwrap().infos())
    }

    fn needed(cfg: &ModelConfig, infos: &[TensorInfo], weights: Weights) -> u64 {
        let place = weights.placement(DType::F32, DType::BF16);
        memory::estimate(cfg, infos, &place, DEFAULT_CONTEXT).total()
    }

    #[test]
    fn a_load_that_does_not_fit_names_the_options_that_do() {
        let (cfg, infos) = tiny_chat();
        let opts = LoadOptions {
            weights: Weights::Compute,
            ..LoadOptions::default()
        };
        let q8 = needed(&cfg, &infos, Weights::Format(WeightFormat::Q8_0));
        let q4 = needed(&cfg, &infos, Weights::Format(WeightFormat::Q4K));
        let f32 = needed(&cfg, &infos, Weights::Compute);
        let bf16 = needed(&cfg, &infos, Weights::Checkpoint);
        assert!(q4 < q8 && q8 < bf16 && bf16 < f32, "{q4} {q8} {bf16} {f32}");
        let available = Available {
            bytes: q8,
            source: AvailableSource::System,
        };
        let err = check_memory(&cfg, &infos, &opts, "tiny", Some(available)).unwrap_err();
        let Error::InsufficientMemory(short) = &err else {
            panic!("{err}");
        };
        assert_eq!((short.needed, short.mode.as_str()), (f32, "--dtype f32"));
        let flags: Vec<&str> = short.fits.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(flags, ["--quant q8_0", "--quant q4_k"]);
        assert!(err.to_string().starts_with("tiny needs about"), "{err}");
        // Enough memory, or none reported: the load goes ahead.
        let plenty = Available {
            bytes: f32,
            ..available
        };
        assert!(check_memory(&cfg, &infos, &opts, "tiny", Some(plenty)).is_ok());
        assert!(check_memory(&cfg, &infos, &opts, "tiny", None).is_ok());
    }

    #[test]
    fn checkpoint_precision_is_kept_and_formats_read_what_they_need() {
        let bf16 = Weights::Checkpoint.placement(DType::F32, DType::BF16);
        assert_eq!(bf16.llm_read, DType::BF16);
        assert_eq!(bf16.llm_format, Some(WeightFormat::Bf16));
        // The encoder keeps bf16 linear weights too, computing in f32.
        assert_eq!((bf16.audio_linear, bf16.compute), (DType::BF16, DType::F32));
        let widened = Weights::Compute.placement(DType::F32, DType::BF16);
        assert_eq!(widened.audio_linear, DType::F32);
        let f32 = Weights::Checkpoint.placement(DType::F32, DType::F32);
        assert_eq!(f32.llm_format, Some(WeightFormat::F32));
        // Quantised from the checkpoint's own half-precision values.
        let q = Weights::Format(WeightFormat::Q8_0).placement(DType::F32, DType::F16);
        assert_eq!(
            (q.llm_read, q.llm_format),
            (DType::F16, Some(WeightFormat::Q8_0))
        );
        let gpu = Weights::Compute.placement(DType::BF16, DType::BF16);
        assert_eq!((gpu.llm_read, gpu.llm_format), (DType::BF16, None));
    }
}
