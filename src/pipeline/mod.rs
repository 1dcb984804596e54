//! The pipeline: audio file -> log-mel -> encoder (+ scores) -> pruning -> projector -> prompt
//! merge -> Qwen2 decoder -> text.
//!
//! [`Pipeline`] holds the loaded stages and no per-request state; each [`Request`] is run on its
//! own KV cache. Data flows one way through the stages; shapes are checked between stages when
//! the model is loaded.
//!
//! - `load`: [`LoadOptions`], [`Weights`], loading a checkpoint into a [`Pipeline`];
//! - `request`: [`Request`] and its [`Task`], [`Response`], [`Timings`];
//! - `tokens`: the encoder's output and scores -> the kept audio tokens ([`select_tokens`]);
//! - `stream`: long audio one 30 s window at a time;
//! - `chat`: conversations with any number of audio inputs ([`ChatRequest`]);
//! - this module: the stages and the run of a request through them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use auris_audio::encoder::{EncodeOptions, EncoderMode, EncoderOutput, Qwen2AudioEncoder};
use auris_audio::{LogMel, MelExtractor};
use auris_llm::{GenerateOptions, KvCache, Qwen2Decoder, SamplingParams};
use auris_projector::MultiModalProjector;
use auris_prune::Policy;
use candle_core::{DType, Device, IndexOp, Tensor};
use tokenizers::Tokenizer;

use crate::budget::ContextUse;
use crate::config::{GenerationConfig, ModelConfig};
use crate::prompt::{self, ChatTemplate, Message, Part, SpecialTokens, AUDIO_TOKEN};
use crate::Error;

mod chat;
mod load;
mod request;
mod stream;
mod tokens;
pub use chat::{ChatRequest, ChatResponse};
pub use load::{LoadOptions, Weights, DEFAULT_CONTEXT};
pub use request::{Inspection, PromptSpec, Request, Response, Task, Timings};
pub use tokens::{select_tokens, AudioTokens, TokenGatherer};

/// The instruction used by `caption` on a chat model when the user gives none.
pub const DEFAULT_CHAT_CAPTION: &str = "Describe the audio in one sentence.";
/// The instruction used by `caption` on a base model (the model card's captioning prompt).
pub const DEFAULT_BASE_CAPTION: &str = "Generate the caption in English:";

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

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl Pipeline {
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
        }
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
        decode_ids(&self.tokenizer, ids)
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

/// Detokenizes `ids` with `tokenizer`, skipping special tokens.
fn decode_ids(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, Error> {
    tokenizer
        .decode(ids, true)
        .map_err(|source| Error::Tokenizer {
            context: "decoding token ids".to_string(),
            source,
        })
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
        let text = decode_ids(self.tokenizer, &self.ids)?;
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
