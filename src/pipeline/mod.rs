//! The pipeline: audio -> log-mel -> encoder (+ scores) -> pruning -> projector -> prompt
//! merge -> Qwen2 decoder -> text.
//!
//! [`Pipeline`] holds the loaded stages and no per-request state; each request is run on its
//! own KV cache. Data flows one way through the stages; shapes are checked between stages when
//! the model is loaded.
//!
//! # One request core
//!
//! Every path runs through one function, [`Pipeline::prepare`], on an [`AudioRequest`]: any
//! number of audio inputs ([`AudioSource`]: a file, an upload held in memory, or audio encoded
//! beforehand), a prompt with one placeholder per input ([`PromptSpec`], a conversation
//! included), one pruning policy and one context budget for all inputs together.
//! [`Pipeline::execute`] is that preparation, the prefill and the answer; a server that steps
//! many sequences together prefills and generates itself and completes the same [`Response`]
//! ([`Pipeline::complete`]).
//!
//! ```text
//! caption / ask / inspect ─ Pipeline::run (one file) ─┐
//! bench ─ Pipeline::run, per keep ratio ──────────────┤
//! eval ─ Pipeline::run_encoded (encoded once) ────────┴─ Pipeline::execute ─┐
//! serve ─ AudioRequest of N uploads + the chat ─────────────────────────────┴─ Pipeline::prepare
//!                                                    measure -> plan -> gather -> merge
//! ```
//!
//! A file or upload is scanned first (each window's token count, no samples kept), the
//! budget chooses the policy ([`crate::budget::plan`]), then each input is read again one
//! 30 s window at a time (decode, log-mel, encoder, selection: `stream`), so memory does not
//! grow with the audio's length. The kept rows of every input are projected and written into
//! their placeholder spans with the text around them embedded ([`Pipeline::merge_embeddings`]),
//! the prompt is prefilled and the [`Task`] answered. The library returns data (a
//! [`Response`] with [`Timings`], a [`crate::budget::Overflow`] with the policy that would
//! fit); the binary turns it into flags and messages.
//!
//! - `load`: [`LoadOptions`], [`Weights`], loading a checkpoint into a [`Pipeline`];
//! - `request`: [`Request`], [`AudioRequest`] and its [`AudioSource`]s, [`Task`],
//!   [`Response`], [`Timings`];
//! - `execute`: the four steps of [`Pipeline::execute`], and [`Pipeline::prepare`] (the steps up to
//!   the decoder, [`Prepared`]) for a caller that runs the decoder itself;
//! - `stream`: one input read, encoded and pruned one 30 s window at a time;
//! - `tokens`: the encoder's output and scores -> the kept audio tokens ([`select_tokens`]);
//! - this module: the stages.

use std::ops::Range;
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
use crate::family::{AudioMarkup, Family};
use crate::prompt::{self, ChatTemplate, Message, Part, SpecialTokens};
use crate::Error;

mod execute;
mod load;
mod request;
mod stream;
mod tokens;
pub use execute::Prepared;
pub use load::{ComputeChoice, ComputeMode, LoadOptions, Sequences, Weights, DEFAULT_CONTEXT};
pub use request::{
    AudioRequest, AudioSource, Inspection, PromptSpec, Request, Response, Task, Timings,
};
pub use tokens::{select_tokens, AudioTokens, TokenGatherer};

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
    family: &'static dyn Family,
    markup: AudioMarkup,
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
    /// Sequences served at the same time ([`LoadOptions::sequences`], as the memory check
    /// resolved it).
    sequences: usize,
    compute: ComputeMode,
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

    /// The model family (Qwen2-Audio, Audio Flamingo 3), from `config.json`'s `model_type`.
    pub fn family(&self) -> &'static dyn Family {
        self.family
    }

    /// How this checkpoint marks audio in its prompts (`<|AUDIO|>`, `<sound>`).
    pub fn audio_markup(&self) -> &AudioMarkup {
        &self.markup
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

    /// What the matrix products compute in, and why ([`LoadOptions::compute`]).
    pub fn compute(&self) -> &ComputeMode {
        &self.compute
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

    /// The language model's context length in tokens.
    pub fn context_length(&self) -> usize {
        self.config.text_config.max_position_embeddings
    }

    /// How many sequences this load serves at the same time: the memory check reserved a KV
    /// cache for each ([`LoadOptions::sequences`]).
    pub fn sequences(&self) -> usize {
        self.sequences
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

    /// Decodes, resamples and cuts an audio file held in memory into log-mel windows;
    /// `format` is a container hint such as `wav` and `name` labels errors.
    pub fn audio_from_bytes(
        &self,
        bytes: Vec<u8>,
        format: Option<&str>,
        name: &str,
    ) -> Result<AudioInput, Error> {
        let start = Instant::now();
        let pcm = auris_audio::decode_bytes(bytes, format, name)?;
        self.audio_input(&pcm, PathBuf::from(name), start)
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
        if self.family.window_tokens(mel.valid_frames) == 0 {
            let d = self.encoder.config().d_model;
            return Ok(EncoderOutput {
                hidden: Tensor::zeros((0, d), DType::F32, &self.device)?,
                scores: scores.then(Vec::new),
            });
        }
        let mode = EncoderMode::ValidFrames;
        Ok(self.encoder.forward(mel, EncodeOptions { scores, mode })?)
    }

    /// Applies `policy` to the windows of one input in the family's
    /// [`crate::family::SelectionScope`] and gathers the kept encoder rows in time order; kept
    /// indices count tokens across windows.
    pub fn select(&self, encoded: &[EncoderOutput], policy: &Policy) -> Result<AudioTokens, Error> {
        select_tokens(encoded, policy, self.family.selection_scope())
    }

    /// Projects the kept encoder rows into the language model's embedding space.
    pub fn project(&self, tokens: &AudioTokens) -> Result<Tensor, Error> {
        Ok(self.projector.forward(&tokens.rows)?)
    }

    /// The prompt text before expansion, for one audio input.
    pub fn render_prompt(&self, spec: &PromptSpec, audio: &Path) -> Result<String, Error> {
        match spec {
            PromptSpec::Raw(text) => {
                let n = prompt::count_placeholders(text, &self.markup.placeholder);
                if n != 1 {
                    return Err(Error::PlaceholderCount {
                        placeholders: n,
                        audios: 1,
                        token: self.markup.placeholder.clone(),
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
                    Ok(self.markup.base_prompt(text))
                }
            },
            PromptSpec::Chat(messages) => self.render_chat(messages),
        }
    }

    /// A conversation through the model's chat template.
    fn render_chat(&self, messages: &[Message]) -> Result<String, Error> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::Usage("this model has no chat template, so it takes no chat request".into())
        })?;
        template.render(messages, true)
    }

    /// The default instruction of `caption` for this model.
    pub fn default_caption_instruction(&self) -> &'static str {
        self.family.caption_instruction(self.is_chat())
    }

    /// Embeds `ids` and writes `rows[i]` into the placeholder span `spans[i]` of each audio
    /// input. Only the text around the spans is embedded: the placeholders' rows would be
    /// thrown away, and on long audio they are most of the prompt.
    pub fn merge_embeddings(
        &self,
        ids: &[u32],
        spans: &[Range<usize>],
        rows: &[Tensor],
    ) -> Result<Tensor, Error> {
        if spans.len() != rows.len() {
            return Err(Error::Invariant("one audio span per audio input"));
        }
        let embed = |ids: &[u32]| -> Result<Tensor, Error> {
            let ids_t = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
            Ok(self.decoder.embed_tokens(&ids_t)?.squeeze(0)?)
        };
        let mut parts: Vec<(bool, Tensor)> = Vec::with_capacity(2 * spans.len() + 1);
        let mut at = 0;
        for (span, audio) in spans.iter().zip(rows) {
            let n = audio.dim(0)?;
            if n != span.len() {
                return Err(Error::AudioRowMismatch {
                    tokens: span.len(),
                    rows: n,
                });
            }
            if span.start > at {
                parts.push((false, embed(&ids[at..span.start])?));
            }
            if n > 0 {
                parts.push((true, audio.clone()));
            }
            at = span.end;
        }
        if at < ids.len() {
            parts.push((false, embed(&ids[at..])?));
        }
        let text_dtype = parts
            .iter()
            .find(|(audio, _)| !audio)
            .map(|(_, t)| t.dtype());
        let parts = parts
            .into_iter()
            .map(|(audio, t)| match text_dtype {
                Some(dtype) if audio => t.to_dtype(dtype),
                _ => Ok(t),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }

    /// Runs one request on one audio file end to end, reading it one window at a time (or
    /// whole for [`Task::Inspect`]); `on_token` sees each new token id as it is generated and
    /// may return `false` to stop.
    pub fn run(
        &self,
        request: &Request,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        let source = AudioSource::File(request.audio.clone());
        self.execute(&request.with_source(source), on_token)
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
        let source = AudioSource::Encoded {
            audio,
            windows: encoded,
            encoder_ms,
        };
        self.execute(&request.with_source(source), on_token)
    }

    /// Completes `response` after the prefill as `task` asks: nothing more (an inspection
    /// without generation), the choices' log-likelihoods, or the generated text.
    fn answer(
        &self,
        task: &Task,
        generate: &GenerateOptions,
        mut response: Response,
        cache: &mut KvCache,
        logits: &Tensor,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Response, Error> {
        match task {
            Task::Inspect { generate: false } => Ok(response),
            Task::ScoreChoices(choices) => {
                let start = Instant::now();
                response.choice_logprobs = Some(self.score_choices(cache, logits, choices)?);
                response.timings.generate = ms(start);
                Ok(response)
            }
            Task::Generate | Task::Inspect { generate: true } => {
                let start = Instant::now();
                let generation = auris_llm::generate_from_logits(
                    &self.decoder,
                    cache,
                    logits,
                    &response.prompt_token_ids,
                    generate,
                    on_token,
                )?;
                self.complete(&mut response, generation, ms(start))?;
                Ok(response)
            }
        }
    }

    /// Completes a [`Prepared`] request's response with its generation: the ids, the stop id,
    /// the text, and `generate_ms` as the generation's time (with the tokens per second).
    /// [`Pipeline::execute`] ends so; a caller that steps the sequence itself does too.
    pub fn complete(
        &self,
        response: &mut Response,
        generation: auris_llm::Generation,
        generate_ms: f64,
    ) -> Result<(), Error> {
        response.text = self.decode(&generation.tokens)?;
        let t = &mut response.timings;
        t.generate = generate_ms;
        t.tokens_per_s = if generate_ms > 0.0 {
            generation.tokens.len() as f64 / (generate_ms / 1e3)
        } else {
            0.0
        };
        response.output_token_ids = generation.tokens;
        response.stopped_on = generation.stopped_on;
        Ok(())
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

/// Audio tokens of each window of `audio`, as `family` counts them.
fn audio_token_counts(family: &dyn Family, audio: &AudioInput) -> Vec<usize> {
    audio
        .windows
        .iter()
        .map(|w| family.window_tokens(w.valid_frames))
        .collect()
}

/// The audio of a request as the response reports it.
struct AudioSummary {
    duration_s: f64,
    sample_rate: u32,
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
