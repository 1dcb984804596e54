//! Loading a model: the weight placement, the memory check before any weight is read, and
//! the checks between the stages' configurations.

use auris_audio::config::EncoderConfig;
use auris_audio::encoder::Qwen2AudioEncoder;
use auris_audio::{MelConfig, MelExtractor};
use auris_kernels::cpu::Cpu;
use auris_kernels::round::{resolve_auto, Compute};
use auris_llm::{Qwen2Decoder, WeightFormat};
use auris_projector::MultiModalProjector;
use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use super::Pipeline;
use crate::checkpoint::{self, ModelFiles, ModelSource, TensorInfo, WeightStore};
use crate::config::{GenerationConfig, ModelConfig};
use crate::family::{AudioMarkup, Family, ProcessorStrings};
use crate::memory::{self, Placement};
use crate::prompt::{ChatTemplate, PromptFormat, SpecialTokens};
use crate::Error;

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
    /// Sequences served at the same time, each with its own KV cache of `context` positions.
    pub sequences: Sequences,
    /// Precision of the matrix products' inputs.
    pub compute: ComputeChoice,
}

/// How many sequences a loaded model serves at the same time ([`LoadOptions::sequences`]):
/// the memory check reserves a KV cache for each, and [`Pipeline::sequences`] reports the
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequences {
    /// Exactly this many; when fewer fit, the load fails with [`Error::TooManySequences`]
    /// naming the number that fits.
    Exactly(usize),
    /// As many as fit, at most this many; at least one (one that does not fit fails as any
    /// load does, with [`Error::InsufficientMemory`]).
    UpTo(usize),
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
            sequences: Sequences::Exactly(1),
            compute: ComputeChoice::Auto,
        }
    }
}

/// The precision asked of the matrix products.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ComputeChoice {
    /// bf16 when the checkpoint stores bf16/f16 weights, the CPU has a bf16 matrix unit and a
    /// start-up probe measures its kernel faster than the f32 one; f32 otherwise
    /// ([`auris_kernels::round::resolve_auto`]: no such kernel exists yet, so f32 on every
    /// CPU today). Off the CPU: the compute dtype.
    #[default]
    Auto,
    /// f32 inputs: the exact path.
    F32,
    /// Inputs rounded to bf16, f32 accumulation, bf16 weights (CPU only): the encoder's
    /// products (convolution stem, attention, MLP), the projector, and the language model's
    /// float products (prefill, decode, attention, output head). Quantised weights (`--quant`)
    /// keep their integer products.
    Bf16,
}

/// What a load computes the matrix products in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeMode {
    /// The precision of the products' inputs: `f32` or `bf16`, and off the CPU the compute
    /// dtype's name (`f16` too).
    pub name: &'static str,
    /// The CPU kernels' precision (f32 off the CPU, where candle computes in the dtype).
    pub kernels: Compute,
    /// Why: chosen by the caller, or what `auto` found.
    pub reason: String,
}

impl ComputeChoice {
    /// The mode of a load with `opts` of a checkpoint whose language model is stored in
    /// `checkpoint`; [`Error::InvalidConfig`] for a choice off the CPU (the dtype decides
    /// there) and for bf16 with weights in the f32 compute dtype ([`Weights::Compute`]).
    pub fn resolve(self, opts: &LoadOptions, checkpoint: DType) -> Result<ComputeMode, Error> {
        let refuse = |reason: &str| Error::InvalidConfig {
            field: "compute".to_string(),
            value: format!("{self:?}").to_lowercase(),
            reason: reason.to_string(),
        };
        if !opts.device.is_cpu() {
            if self != ComputeChoice::Auto {
                return Err(refuse(
                    "off the CPU the products compute in the compute dtype",
                ));
            }
            let name = match opts.dtype {
                DType::BF16 => "bf16",
                DType::F16 => "f16",
                _ => "f32",
            };
            let reason = format!("the device computes in {}", opts.dtype.as_str());
            return Ok(ComputeMode {
                name,
                kernels: Compute::F32,
                reason,
            });
        }
        let (kernels, reason) = match self {
            ComputeChoice::F32 => (Compute::F32, "chosen".to_string()),
            ComputeChoice::Bf16 if opts.weights == Weights::Compute => {
                return Err(refuse("bf16 compute multiplies bf16 weights, not f32 ones"))
            }
            ComputeChoice::Bf16 => (Compute::Bf16, "chosen".to_string()),
            ComputeChoice::Auto => {
                let half = matches!(checkpoint, DType::BF16 | DType::F16)
                    && opts.weights != Weights::Compute;
                let (compute, why) = resolve_auto(Cpu::detected(), half);
                (compute, format!("auto: {why}"))
            }
        };
        Ok(ComputeMode {
            name: kernels.name(),
            kernels,
            reason,
        })
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
    /// The storage that `compute` multiplies: under bf16 the float modes store bf16 (the
    /// checkpoint's own bf16 weights as they are, others rounded at load); the quantised
    /// formats and f32 compute keep theirs.
    pub fn for_compute(self, compute: Compute) -> Weights {
        match (compute, self) {
            (
                Compute::Bf16,
                Weights::Checkpoint | Weights::Format(WeightFormat::F32 | WeightFormat::F16),
            ) => Weights::Format(WeightFormat::Bf16),
            (_, w) => w,
        }
    }

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
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weights::Compute => f.write_str("weights in the compute dtype"),
            Weights::Checkpoint => f.write_str("weights as in the checkpoint"),
            Weights::Format(format) => write!(f, "weights in {format}"),
        }
    }
}

/// The dtype of the language model's tensors in the checkpoint (that of its embedding table,
/// else f32).
fn llm_checkpoint_dtype(infos: &[TensorInfo], family: &dyn Family) -> DType {
    let embed = family.layout().embed_tokens();
    infos
        .iter()
        .find(|i| i.name == embed)
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
/// [`crate::memory`]) with one sequence, and with [`Error::TooManySequences`] when it would
/// not with the sequences `opts` asks for; otherwise returns how many sequences it serves.
/// Passes when the system does not report its memory.
fn check_memory(
    cfg: &ModelConfig,
    infos: &[TensorInfo],
    opts: &LoadOptions,
    name: &str,
    available: Option<memory::Available>,
) -> Result<usize, Error> {
    let Some(available) = available else {
        return Ok(opts.sequences.most());
    };
    let checkpoint = llm_checkpoint_dtype(infos, cfg.family()?);
    let place = |w: Weights| w.placement(opts.dtype, checkpoint);
    let footprint = |w: Weights| memory::estimate(cfg, infos, &place(w), opts.context);
    let asked = footprint(opts.weights);
    let needed = asked.total();
    if needed <= available.bytes {
        return fit_sequences(&asked, opts.sequences, name, available);
    }
    // Two choices that place the weights alike (auto and bf16 on a bf16 checkpoint) are one.
    let mut seen = vec![place(opts.weights)];
    let mut fits: Vec<(Weights, u64)> = Vec::new();
    for w in alternatives(&opts.device) {
        let bytes = footprint(w).total();
        if bytes <= available.bytes && !seen.contains(&place(w)) {
            seen.push(place(w));
            fits.push((w, bytes));
        }
    }
    Err(Error::InsufficientMemory(Box::new(memory::Shortfall {
        model: name.to_string(),
        mode: opts.weights,
        needed,
        available,
        fits,
    })))
}

/// The sequences `asked` for that fit `available` with `footprint` (one of them does).
fn fit_sequences(
    footprint: &memory::Footprint,
    asked: Sequences,
    name: &str,
    available: memory::Available,
) -> Result<usize, Error> {
    let fit = footprint.sequences_within(available.bytes).max(1);
    match asked {
        Sequences::UpTo(most) => Ok(most.min(fit).max(1)),
        Sequences::Exactly(n) if n <= fit => Ok(n),
        Sequences::Exactly(n) => Err(Error::TooManySequences(Box::new(
            memory::SequenceShortfall {
                model: name.to_string(),
                asked: n,
                fit,
                needed: footprint.total_for(n),
                per_sequence: footprint.kv_cache,
                available,
            },
        ))),
    }
}

impl Sequences {
    /// The most this asks for.
    fn most(self) -> usize {
        match self {
            Sequences::Exactly(n) | Sequences::UpTo(n) => n.max(1),
        }
    }
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
        let family = config.family()?;
        let generation = GenerationConfig::from_file(files.generation_config.as_deref())?;
        let mel_config = files.mel_config(config.audio_config.num_mel_bins)?;
        check_front_end(&mel_config, &config.audio_config)?;
        let markup = family.markup(&ProcessorStrings::from_file(
            files.processor_config.as_deref(),
        )?);
        let (tokenizer, special) = load_tokenizer(files, &markup, config.audio_token_id(family))?;
        let chat_template = chat_template(files, opts.prompt_format, name, &tokenizer, family)?;

        let store = WeightStore::open_model(files)?;
        let infos = store.infos();
        let (compute, opts, place) = compute_placement(opts, llm_checkpoint_dtype(&infos, family))?;
        let opts = &opts;
        // The estimate is of host memory, where the CPU keeps the weights; on a GPU they live in
        // device memory (the memory-mapped file is read through once), and an oversized model
        // fails with the driver's out-of-memory error instead.
        let sequences = if opts.memory_check && opts.device.is_cpu() {
            check_memory(&config, &infos, opts, name, memory::available())?
        } else {
            opts.sequences.most()
        };
        let layout = family.layout();
        let encoder = Qwen2AudioEncoder::load_with(
            &config.audio_config,
            store
                .var_builder(place.audio_linear, &opts.device)
                .pp(layout.audio_tower),
            opts.dtype,
        )?
        .with_compute(compute.kernels);
        let projector = MultiModalProjector::load_kind(
            family.projector(&config),
            config.audio_config.d_model,
            config.text_config.hidden_size,
            store
                .var_builder(opts.dtype, &opts.device)
                .pp(layout.projector),
        )?
        .with_compute(compute.kernels)?;
        let kernels = compute.kernels;
        let decoder = load_decoder(&config, &store, &place, &opts.device, family, kernels)?;
        store.check_coverage(&[layout.lm_head().as_str()])?;

        let stop_ids = stop_ids(&generation, &config, &tokenizer, family);
        let mel = MelExtractor::new(mel_config)?;
        Ok(Self {
            config,
            family,
            markup,
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
            sequences,
            compute,
        })
    }
}

/// The compute mode `opts` resolve to for a checkpoint whose language model is stored in
/// `checkpoint`, the options with the weight storage that mode multiplies
/// ([`Weights::for_compute`]), and where the weights go (under bf16 the encoder's linear
/// weights are bf16 too, so no product rounds them again).
fn compute_placement(
    opts: &LoadOptions,
    checkpoint: DType,
) -> Result<(ComputeMode, LoadOptions, Placement), Error> {
    let compute = opts.compute.resolve(opts, checkpoint)?;
    let opts = LoadOptions {
        weights: opts.weights.for_compute(compute.kernels),
        ..opts.clone()
    };
    let mut place = opts.weights.placement(opts.dtype, checkpoint);
    if compute.kernels == Compute::Bf16 {
        place.audio_linear = DType::BF16;
    }
    Ok((compute, opts, place))
}

/// The tokenizer and the ids of its audio special tokens (a tokenizer without them is not an
/// audio model's).
fn load_tokenizer(
    files: &ModelFiles,
    markup: &AudioMarkup,
    audio_token_index: u32,
) -> Result<(Tokenizer, SpecialTokens), Error> {
    let tokenizer = Tokenizer::from_file(&files.tokenizer).map_err(|source| Error::Tokenizer {
        context: format!("loading {}", files.tokenizer.display()),
        source,
    })?;
    let special = SpecialTokens::from_tokenizer(&tokenizer, markup, audio_token_index).map_err(
        |e| match e {
            Error::MissingToken { token } => Error::BadFile {
                path: files.tokenizer.clone(),
                reason: format!(
                    "no {token} token: an audio model's tokenizer needs the audio special tokens"
                ),
            },
            e => e,
        },
    )?;
    Ok((tokenizer, special))
}

/// The chat template `format` asks for: the model's own, else its family's built-in one
/// (always for [`PromptFormat::Chat`]; under [`PromptFormat::Auto`] when the family says the
/// checkpoint is a chat model); `None` means the base prompt.
fn chat_template(
    files: &ModelFiles,
    format: PromptFormat,
    name: &str,
    tokenizer: &Tokenizer,
    family: &dyn Family,
) -> Result<Option<ChatTemplate>, Error> {
    let own_template = ChatTemplate::from_model_files(
        files.chat_template.as_deref(),
        files.processor_config.as_deref(),
        files.tokenizer_config.as_deref(),
    )?;
    let builtin = || ChatTemplate::new(family.builtin_chat_template());
    Ok(match format {
        PromptFormat::Base => None,
        PromptFormat::Chat => Some(own_template.unwrap_or_else(builtin)),
        PromptFormat::Auto => {
            own_template.or_else(|| family.chats_without_template(name, tokenizer).then(builtin))
        }
    })
}

/// The language model, its weights read and kept as `place` says.
fn load_decoder(
    config: &ModelConfig,
    store: &WeightStore,
    place: &Placement,
    device: &Device,
    family: &dyn Family,
    compute: Compute,
) -> Result<Qwen2Decoder, Error> {
    let vb = store
        .var_builder(place.llm_read, device)
        .pp(family.layout().language_model);
    Ok(match place.llm_format {
        None => Qwen2Decoder::load(&config.text_config, vb)?,
        // The weights quantised at load are read by rows from the mapping, never whole.
        Some(weights) => Qwen2Decoder::load_with_rows(
            &config.text_config,
            vb,
            &auris_llm::LoadOptions { weights, compute },
            store,
        )?,
    })
}

/// The stop ids of a model (see [`Pipeline::stop_ids`]): `generation_config.json`'s
/// `eos_token_id` when it has one (what `generate` uses), else the text config's
/// `eos_token_id` plus the family's fallback stop tokens (`<|im_end|>`, `<|endoftext|>`) that
/// the tokenizer has.
fn stop_ids(
    generation: &GenerationConfig,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    family: &dyn Family,
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
    for token in family.fallback_stop_tokens() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Available, AvailableSource};
    use std::path::Path;

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
        assert_eq!((short.needed, short.mode), (f32, Weights::Compute));
        let fits: Vec<Weights> = short.fits.iter().map(|&(w, _)| w).collect();
        assert_eq!(
            fits,
            [WeightFormat::Q8_0, WeightFormat::Q4K].map(Weights::Format)
        );
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
    fn parallel_sequences_get_a_kv_cache_each_and_too_many_are_refused_with_what_fits() {
        let (cfg, infos) = tiny_chat();
        let one = needed(&cfg, &infos, Weights::Checkpoint);
        let place = Weights::Checkpoint.placement(DType::F32, DType::BF16);
        let per_sequence = memory::estimate(&cfg, &infos, &place, DEFAULT_CONTEXT).kv_cache;
        assert!(per_sequence > 0);
        // Room for exactly three sequences.
        let available = Available {
            bytes: one + 2 * per_sequence,
            source: AvailableSource::System,
        };
        let check = |sequences| {
            let opts = LoadOptions {
                sequences,
                ..LoadOptions::default()
            };
            check_memory(&cfg, &infos, &opts, "tiny", Some(available))
        };
        assert_eq!(check(Sequences::Exactly(3)).unwrap(), 3);
        assert_eq!(check(Sequences::UpTo(8)).unwrap(), 3);
        assert_eq!(check(Sequences::UpTo(2)).unwrap(), 2);
        let err = check(Sequences::Exactly(4)).unwrap_err();
        let Error::TooManySequences(short) = &err else {
            panic!("{err}");
        };
        assert_eq!((short.asked, short.fit), (4, 3));
        assert_eq!(short.needed, one + 3 * per_sequence);
        assert!(err.to_string().ends_with(": 3 sequences fit"), "{err}");
        // Nothing reported: what was asked for.
        let opts = LoadOptions {
            sequences: Sequences::UpTo(8),
            ..LoadOptions::default()
        };
        assert_eq!(check_memory(&cfg, &infos, &opts, "tiny", None).unwrap(), 8);
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
