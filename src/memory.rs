//! Will the model fit? The resident size of a load, estimated from the checkpoint's tensor
//! headers before any weight is read, against the memory the system can give.
//!
//! The estimate adds up what stays resident once the model is loaded and a request runs:
//! - the weights, tensor by tensor, at the size each one is stored in after loading (the
//!   checkpoint's own precision, f32, or a quantised block format), as the loaders say: the
//!   language model's [`SizePlan`] (which tensors it reads, the format each gets, a tied head
//!   shared or copied, the memory a tensor passes through while being quantised) and the
//!   encoder's list of tensors with the dtype each is kept in ([`auris_audio::plan`]);
//! - the KV cache of the language model for the requested context, in the compute dtype, once
//!   per sequence served at the same time ([`Footprint::total_for`]; a server runs several);
//! - the largest transient buffers of one request: an encoder layer's attention probabilities
//!   over a 30 s window, the prefill's attention scores and MLP activations, and one weight
//!   matrix widened to f32 for a multi-row product when weights are not stored in f32;
//! - a fixed allowance for the binary, tokenizer and allocator.
//!
//! Available memory is the smaller of the system's available memory (`MemAvailable` on Linux)
//! and what the process's cgroup still allows, as read by `sysinfo`.

use std::collections::HashMap;
use std::fmt;

use auris_audio::plan::{tensor_parts, EncoderPart};
use auris_llm::{SizePlan, WeightFormat};
use candle_core::DType;

use crate::checkpoint::TensorInfo;
use crate::config::ModelConfig;
use crate::family::{Layout, HF_LAYOUT};

/// Fixed allowance for the code, tokenizer, templates and allocator slack.
const OVERHEAD_BYTES: u64 = 300 << 20;

/// Estimated resident memory of a loaded model serving one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Weights as stored after loading.
    pub weights: u64,
    /// The language model's KV cache of one sequence for the requested context.
    pub kv_cache: u64,
    /// Transient activations and widened weights of one request.
    pub activations: u64,
}

impl Footprint {
    /// Everything, with the fixed overhead, serving one sequence.
    pub fn total(&self) -> u64 {
        self.total_for(1)
    }

    /// Everything, with the fixed overhead, serving `sequences` sequences at the same time:
    /// one KV cache each. The transient buffers are counted once: the sequences share one
    /// model thread, which runs one request's encoder or prefill chunk at a time, and their
    /// decode rows are a few vectors each.
    pub fn total_for(&self, sequences: usize) -> u64 {
        (self.weights + self.activations + OVERHEAD_BYTES)
            .saturating_add(self.kv_cache.saturating_mul(sequences as u64))
    }

    /// The most sequences whose KV caches fit in `available` bytes beside everything else
    /// (0: not even one).
    pub fn sequences_within(&self, available: u64) -> usize {
        let Some(room) = available.checked_sub(self.total_for(0)) else {
            return 0;
        };
        match room.checked_div(self.kv_cache) {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => usize::MAX,
        }
    }
}

/// The model dimensions the KV cache and activation estimates need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads of the decoder.
    pub heads: usize,
    /// Key/value heads of the decoder.
    pub kv_heads: usize,
    /// Per-head size of the decoder.
    pub head_dim: usize,
    /// Decoder hidden size.
    pub hidden: usize,
    /// Decoder MLP size.
    pub intermediate: usize,
    /// Vocabulary rows of the output head.
    pub vocab: usize,
    /// Encoder attention heads.
    pub encoder_heads: usize,
    /// Encoder positions per 30 s window (1500 for Whisper-style encoders).
    pub encoder_positions: usize,
    /// Encoder MLP size.
    pub encoder_ffn: usize,
}

/// Bytes of one activation element (the CPU computes in f32).
const ACT: u64 = 4;

impl Dims {
    /// The KV cache of `context` positions, `kv_bytes` per element.
    pub fn kv_cache(&self, context: usize, kv_bytes: u64) -> u64 {
        // Saturating: the config's sizes are bounded, but their product need not fit.
        [self.layers, self.kv_heads, self.head_dim, context]
            .into_iter()
            .fold(2 * kv_bytes, |acc, n| acc.saturating_mul(n as u64))
    }

    /// The largest transient buffers of one request with a prompt of `context` positions:
    /// the larger of the encoder's and the prefill's working sets, plus `widened` bytes of
    /// weight converted for a multi-row product.
    pub fn activations(&self, context: usize, widened: u64) -> u64 {
        let (n, t) = (self.encoder_positions as u64, context as u64);
        // Scores and probabilities of one layer, plus the MLP's widest activation.
        let encoder =
            2 * self.encoder_heads as u64 * n * n * ACT + 2 * n * self.encoder_ffn as u64 * ACT;
        // The prefill runs in chunks: one chunk's scores over the whole prompt at a time.
        let rows = t.min(auris_llm::PREFILL_CHUNK as u64);
        let prefill = (2 * self.heads as u64)
            .saturating_mul(rows)
            .saturating_mul(t)
            .saturating_mul(ACT)
            + 3 * t * self.intermediate as u64 * ACT
            + 4 * t * self.hidden as u64 * ACT
            + self.vocab as u64 * ACT;
        encoder.max(prefill) + widened
    }
}

/// Where each part of the model lives once loaded: what [`estimate`] needs to know of the
/// load options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Dtype of the encoder's and projector's computation, and of their other tensors.
    pub compute: DType,
    /// Dtype the encoder's linear layers are stored in (bf16/f16 kept on the CPU, widened
    /// inside each product).
    pub audio_linear: DType,
    /// Dtype the language model's tensors are read in (its embedding table stays in it).
    pub llm_read: DType,
    /// Storage of the language model's linear weights when they are kept apart from the
    /// compute dtype (which is then f32); `None`: everything in `llm_read`.
    pub llm_format: Option<WeightFormat>,
}

impl Dims {
    /// The dimensions of `cfg`.
    pub fn of(cfg: &ModelConfig) -> Self {
        let (a, t) = (&cfg.audio_config, &cfg.text_config);
        Self {
            layers: t.num_hidden_layers,
            heads: t.num_attention_heads,
            kv_heads: t.num_kv_heads(),
            head_dim: t.head_dim(),
            hidden: t.hidden_size,
            intermediate: t.intermediate_size,
            vocab: t.vocab_size,
            encoder_heads: a.encoder_attention_heads,
            encoder_positions: a.max_source_positions,
            encoder_ffn: a.encoder_ffn_dim,
        }
    }
}

/// `name` relative to `prefix`, when it lies under it.
fn under<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)?.strip_prefix('.')
}

/// Bytes the encoder and projector tensors occupy after loading with `place`: the encoder's
/// as its loader keeps them ([`auris_audio::plan`]: linear layers in their storage dtype, the
/// rest in the compute dtype; a tensor it does not read takes nothing), every other tensor in
/// the compute dtype.
fn audio_bytes(cfg: &ModelConfig, infos: &[TensorInfo], place: &Placement, layout: &Layout) -> u64 {
    let parts: HashMap<String, EncoderPart> = tensor_parts(&cfg.audio_config).into_iter().collect();
    infos
        .iter()
        .filter(|i| under(&i.name, layout.language_model).is_none())
        .map(|i| {
            let dtype = match under(&i.name, layout.audio_tower) {
                Some(name) => match parts.get(name) {
                    Some(part) => part.dtype(place.audio_linear, place.compute),
                    None => return 0,
                },
                None => place.compute,
            };
            (i.numel() as u64).saturating_mul(dtype.size_in_bytes() as u64)
        })
        .sum()
}

/// The resident memory of `cfg`'s checkpoint (tensors `infos`) loaded with `place`, serving a
/// request of `context` positions. The language model's share is its loader's [`SizePlan`],
/// the encoder's its loader's list of tensors.
pub fn estimate(
    cfg: &ModelConfig,
    infos: &[TensorInfo],
    place: &Placement,
    context: usize,
) -> Footprint {
    // The checkpoint's layout (one for every family so far).
    let layout = cfg.family().map_or(&HF_LAYOUT, |f| f.layout());
    let plan = SizePlan::new(&cfg.text_config, place.llm_read, place.llm_format);
    let llm = plan.bytes(infos.iter().filter_map(|i| {
        under(&i.name, layout.language_model).map(|name| (name, i.shape.as_slice()))
    }));
    let rest = audio_bytes(cfg, infos, place, layout);
    let dims = Dims::of(cfg);
    let context = context.min(cfg.text_config.max_position_embeddings);
    let kv_bytes = plan.compute_dtype().size_in_bytes() as u64;
    Footprint {
        weights: llm.total() + rest,
        kv_cache: dims.kv_cache(context, kv_bytes),
        activations: dims.activations(context, 0).max(llm.transient),
    }
}

/// A load refused by the memory check: what it needs, what there is, and what would fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The model's name.
    pub model: String,
    /// The weight storage that was asked for.
    pub mode: crate::pipeline::Weights,
    /// Estimated resident bytes.
    pub needed: u64,
    /// The memory the system can give.
    pub available: Available,
    /// Weight storages that would fit, with their estimates.
    pub fits: Vec<(crate::pipeline::Weights, u64)>,
}

impl Shortfall {
    /// The shortfall in one sentence, naming the weight storage asked for as `mode`.
    pub fn describe(&self, mode: &str) -> String {
        format!(
            "{} needs about {} with {mode}; {} {}",
            self.model,
            gb(self.needed),
            gb(self.available.bytes),
            self.available.source
        )
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&self.mode.to_string()))
    }
}

/// A load refused by the memory check because the KV caches of the sequences it should serve
/// at the same time do not fit, though fewer would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceShortfall {
    /// The model's name.
    pub model: String,
    /// Sequences asked for.
    pub asked: usize,
    /// Sequences that fit (at least one).
    pub fit: usize,
    /// Estimated resident bytes with `asked` sequences.
    pub needed: u64,
    /// The KV cache of one sequence.
    pub per_sequence: u64,
    /// The memory the system can give.
    pub available: Available,
}

impl SequenceShortfall {
    /// The shortfall in one sentence, naming the sequences asked for as `asked`.
    pub fn describe(&self, asked: &str) -> String {
        format!(
            "{} with {asked} needs about {} (a KV cache of {} per sequence); {} {}: {} \
             sequences fit",
            self.model,
            gb(self.needed),
            mb_or_gb(self.per_sequence),
            gb(self.available.bytes),
            self.available.source,
            self.fit
        )
    }
}

impl fmt::Display for SequenceShortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&format!("{} sequences at once", self.asked)))
    }
}

/// Memory the process can still use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure comes from.
    pub source: AvailableSource,
}

/// Which limit [`Available`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvailableSource {
    /// The system's available memory (free plus reclaimable caches).
    System,
    /// The process's cgroup limit, lower than the system's.
    Cgroup,
}

impl fmt::Display for AvailableSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::System => "are available",
            Self::Cgroup => "are available to this cgroup",
        })
    }
}

/// The memory this process can still use, or `None` where the system does not say.
pub fn available() -> Option<Available> {
    let mut sys = sysinfo::System::new().ok()?;
    sys.refresh_memory();
    let system = sys.available_memory();
    let cgroup = sys.cgroup_limits().map(|limits| limits.free_memory);
    pick_available(system, cgroup)
}

fn pick_available(system: u64, cgroup: Option<u64>) -> Option<Available> {
    let sys = (system > 0).then_some(Available {
        bytes: system,
        source: AvailableSource::System,
    });
    match cgroup {
        Some(free) if free > 0 && sys.is_none_or(|s| free < s.bytes) => Some(Available {
            bytes: free,
            source: AvailableSource::Cgroup,
        }),
        _ => sys,
    }
}

/// `bytes` in decimal gigabytes with one decimal, the unit model cards use.
pub fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// `bytes` in decimal megabytes below a gigabyte, else as [`gb`].
fn mb_or_gb(bytes: u64) -> String {
    if bytes < 1_000_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        gb(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2-Audio-7B's decoder and encoder.
    fn dims_7b() -> Dims {
        Dims {
            layers: 32,
            heads: 32,
            kv_heads: 32,
            head_dim: 128,
            hidden: 4096,
            intermediate: 11008,
            vocab: 156_032,
            encoder_heads: 20,
            encoder_positions: 1500,
            encoder_ffn: 5120,
        }
    }

    /// A checkpoint's configuration and tensor headers.
    fn checkpoint(model: &str) -> (ModelConfig, Vec<TensorInfo>) {
        use crate::checkpoint::{self, ModelSource, WeightStore};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(model);
        let files = checkpoint::resolve(&ModelSource::Local(dir), false).unwrap();
        let cfg = ModelConfig::from_file(&files.config).unwrap();
        (cfg, WeightStore::open(&files.weights).unwrap().infos())
    }

    /// The estimate follows the loaders: a tied checkpoint's stored `lm_head.weight`
    /// (transformers' copy, which the loader never reads) adds nothing, in every mode, while
    /// an untied head counts in its format; a tensor no loader reads adds nothing.
    #[test]
    fn the_estimate_counts_what_the_loaders_keep() {
        let modes = [
            (DType::F32, None),
            (DType::BF16, Some(WeightFormat::Bf16)),
            (DType::BF16, Some(WeightFormat::Q8_0)),
            (DType::BF16, Some(WeightFormat::Q4K)),
        ];
        for (model, tied) in [("tiny-base", true), ("tiny-chat", false)] {
            let (cfg, infos) = checkpoint(model);
            assert_eq!(cfg.text_config.tie_word_embeddings, tied);
            let head = "language_model.lm_head.weight";
            assert!(infos.iter().any(|i| i.name == head), "{model}");
            let without: Vec<TensorInfo> =
                infos.iter().filter(|i| i.name != head).cloned().collect();
            let mut extra = infos.clone();
            extra.push(TensorInfo {
                name: "audio_tower.unused.weight".to_string(),
                ..infos[0].clone()
            });
            for (llm_read, llm_format) in modes {
                let place = Placement {
                    compute: DType::F32,
                    audio_linear: DType::BF16,
                    llm_read,
                    llm_format,
                };
                let weights = |infos: &[TensorInfo]| estimate(&cfg, infos, &place, 100).weights;
                let head_bytes = weights(&infos) - weights(&without);
                assert_eq!(head_bytes == 0, tied, "{model} {llm_format:?}");
                assert_eq!(weights(&extra), weights(&infos), "{model} {llm_format:?}");
            }
        }
    }

    #[test]
    fn kv_cache_of_the_7b_model_is_half_a_megabyte_per_position_in_bf16() {
        // 2 (k, v) x 32 layers x 32 heads x 128 dims x 2 bytes = 512 KiB per position.
        assert_eq!(dims_7b().kv_cache(1, 2), 512 << 10);
        assert_eq!(dims_7b().kv_cache(1000, 4), 1000 * (1 << 20));
    }

    #[test]
    fn activations_take_the_larger_stage_plus_the_widened_weight() {
        let d = dims_7b();
        let encoder = 2 * 20 * 1500 * 1500 * 4 + 2 * 1500 * 5120 * 4;
        // A short prompt: the encoder's attention dominates.
        assert_eq!(d.activations(100, 0), encoder);
        assert_eq!(d.activations(100, 7), encoder + 7);
        // A long prompt: the prefill's scores grow with it (one chunk of rows at a time).
        assert!(d.activations(4000, 0) > encoder);
    }

    #[test]
    fn each_sequence_adds_one_kv_cache() {
        let f = Footprint {
            weights: 1000,
            kv_cache: 10,
            activations: 100,
        };
        let base = 1100 + OVERHEAD_BYTES;
        assert_eq!(f.total(), base + 10);
        assert_eq!(f.total_for(8), base + 80);
        assert_eq!(f.total_for(usize::MAX), u64::MAX);
        assert_eq!(f.sequences_within(base - 1), 0);
        assert_eq!(f.sequences_within(base + 9), 0);
        assert_eq!(f.sequences_within(base + 10), 1);
        assert_eq!(f.sequences_within(base + 85), 8);
        let no_cache = Footprint { kv_cache: 0, ..f };
        assert_eq!(no_cache.sequences_within(base), usize::MAX);
    }

    #[test]
    fn the_tighter_limit_wins() {
        let sys = |bytes| Available {
            bytes,
            source: AvailableSource::System,
        };
        assert_eq!(pick_available(10, None), Some(sys(10)));
        assert_eq!(pick_available(10, Some(20)), Some(sys(10)));
        assert_eq!(
            pick_available(10, Some(4)),
            Some(Available {
                bytes: 4,
                source: AvailableSource::Cgroup
            })
        );
        assert_eq!(pick_available(0, None), None);
        assert_eq!(pick_available(0, Some(0)), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        let a = available().expect("sysinfo reads the memory on the test platforms");
        assert!(a.bytes > 64 << 20, "{a:?}");
    }

    #[test]
    fn gigabytes_are_decimal() {
        assert_eq!(gb(16_794_189_824), "16.8 GB");
        assert_eq!(mb_or_gb(1_234_567), "1.2 MB");
        assert_eq!(mb_or_gb(2_500_000_000), "2.5 GB");
    }
}
