//! What loading the decoder keeps in memory, part by part, decided by the functions the loader
//! itself calls ([`WeightFormat::for_row_len`], [`WeightFormat::head_format`], the embedding
//! table's [`table_format`], the tied head's [`tied_head_shares_table`], the tensors
//! [`Qwen2Decoder::tensor_names`](crate::Qwen2Decoder::tensor_names) lists): a memory estimate
//! asks a [`SizePlan`] rather than re-deriving those rules, so a change to the loader changes
//! the estimate with it.

use std::collections::HashMap;

use candle_core::DType;

use crate::linear::QUANTIZE_CHUNK_WEIGHTS;
use crate::{Qwen2Config, WeightFormat};

/// A part of the decoder's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The token embedding table, `model.embed_tokens.weight`.
    Embedding,
    /// The projections of the decoder layers (attention and MLP weights).
    Layers,
    /// The output head: `lm_head.weight`, or with `tie_word_embeddings` the table again when
    /// the head cannot share it.
    Head,
    /// Norm weights and the projections' biases.
    Other,
}

/// Every tensor [`Qwen2Decoder::load`](crate::Qwen2Decoder::load) reads for `cfg`, relative
/// to its `VarBuilder`, with the part it belongs to.
pub(crate) fn tensor_parts(cfg: &Qwen2Config) -> Vec<(String, Part)> {
    let mut names = vec![("model.embed_tokens.weight".to_string(), Part::Embedding)];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj"] {
            names.push((format!("{p}.self_attn.{proj}.weight"), Part::Layers));
            names.push((format!("{p}.self_attn.{proj}.bias"), Part::Other));
        }
        names.push((format!("{p}.self_attn.o_proj.weight"), Part::Layers));
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            names.push((format!("{p}.mlp.{proj}.weight"), Part::Layers));
        }
        names.push((format!("{p}.input_layernorm.weight"), Part::Other));
        names.push((format!("{p}.post_attention_layernorm.weight"), Part::Other));
    }
    names.push(("model.norm.weight".to_string(), Part::Other));
    if !cfg.tie_word_embeddings {
        names.push(("lm_head.weight".to_string(), Part::Head));
    }
    names
}

/// The format the embedding table is stored in when `asked` is its
/// [`WeightFormat::embedding_format`] and its rows hold `hidden` values: `asked` when its block
/// divides the rows, else `None` (the checkpoint's dtype). (Off the CPU the table also keeps
/// the checkpoint's dtype.)
pub(crate) fn table_format(asked: Option<WeightFormat>, hidden: usize) -> Option<WeightFormat> {
    asked.filter(|f| f.is_quantized() && hidden.is_multiple_of(f.block_len()))
}

/// Whether a tied head of `head` format shares a quantised table of `table` format instead of
/// holding its own copy: the same blocks.
pub(crate) fn tied_head_shares_table(head: WeightFormat, table: WeightFormat) -> bool {
    head == table
}

/// Bytes of `numel` weights stored as `format`.
fn format_bytes(numel: u64, format: WeightFormat) -> u64 {
    (numel as f64 * format.bytes_per_weight()).ceil() as u64
}

/// Bytes the load keeps, per [`Part`], and the largest transient buffer it passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartBytes {
    /// [`Part::Embedding`].
    pub embedding: u64,
    /// [`Part::Layers`].
    pub layers: u64,
    /// [`Part::Head`]: zero when a tied head shares the table.
    pub head: u64,
    /// [`Part::Other`].
    pub other: u64,
    /// The largest buffer alive only while loading: one chunk of the rows of a tensor being
    /// quantised, as [`crate::Qwen2Decoder::load_with_rows`] reads them, in the dtype it is
    /// read in and in f32.
    pub transient: u64,
}

impl PartBytes {
    /// Every part together (the transient buffer aside).
    pub fn total(&self) -> u64 {
        self.embedding + self.layers + self.head + self.other
    }

    fn add(&mut self, part: Part, bytes: u64) {
        match part {
            Part::Embedding => self.embedding += bytes,
            Part::Layers => self.layers += bytes,
            Part::Head => self.head += bytes,
            Part::Other => self.other += bytes,
        }
    }
}

/// What [`Qwen2Decoder::load`](crate::Qwen2Decoder::load) (`storage: None`) or
/// [`Qwen2Decoder::load_with_rows`](crate::Qwen2Decoder::load_with_rows) keeps of each tensor,
/// reading them in `read` on the CPU (the weights it quantises by chunks of rows).
#[derive(Debug, Clone)]
pub struct SizePlan {
    parts: HashMap<String, Part>,
    tied: bool,
    read: DType,
    storage: Option<WeightFormat>,
}

impl SizePlan {
    /// The plan of loading `cfg`'s decoder with tensors read in `read` and the linear weights
    /// stored as `storage` (`None`: everything in `read`, as `Qwen2Decoder::load` does).
    pub fn new(cfg: &Qwen2Config, read: DType, storage: Option<WeightFormat>) -> Self {
        Self {
            parts: tensor_parts(cfg).into_iter().collect(),
            tied: cfg.tie_word_embeddings,
            read,
            storage,
        }
    }

    /// The dtype of the activations and of the KV cache: f32 with a storage format, `read`
    /// without.
    pub fn compute_dtype(&self) -> DType {
        match self.storage {
            Some(_) => DType::F32,
            None => self.read,
        }
    }

    /// The part tensor `name` (relative to the decoder's prefix) belongs to, or `None` when the
    /// load does not read it (a tied checkpoint's stored `lm_head.weight`).
    pub fn part(&self, name: &str) -> Option<Part> {
        self.parts.get(name).copied()
    }

    /// The bytes the load keeps of `tensors` (name relative to the decoder's prefix, shape as
    /// stored), per part. Tensors the load does not read take nothing.
    pub fn bytes<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> PartBytes {
        let mut sizes = PartBytes::default();
        for (name, shape) in tensors {
            let Some(part) = self.part(name) else {
                continue;
            };
            let (kept, transient) = self.tensor_bytes(part, shape);
            sizes.add(part, kept);
            sizes.transient = sizes.transient.max(transient);
            if part == Part::Embedding {
                sizes.head += self.tied_head_bytes(shape);
                // A tied bf16/f16 head shares the table, then is packed beside it (the table
                // then looks its rows up in the packed head).
                let head = self.storage.map(WeightFormat::head_format);
                if self.tied && matches!(head, Some(WeightFormat::Bf16 | WeightFormat::F16)) {
                    sizes.transient = sizes.transient.max(self.tensor_bytes(Part::Head, shape).1);
                }
            }
        }
        sizes
    }

    /// Bytes kept of one tensor of `part` and `shape`, and the transient bytes of its load.
    fn tensor_bytes(&self, part: Part, shape: &[usize]) -> (u64, u64) {
        let numel = shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
        let as_read = numel.saturating_mul(self.read.size_in_bytes() as u64);
        let Some(storage) = self.storage else {
            return (as_read, 0);
        };
        let cols = shape.last().copied().unwrap_or(0);
        let stored = match part {
            Part::Layers => storage.for_row_len(cols),
            Part::Head => storage.head_format().for_row_len(cols),
            Part::Embedding => match table_format(storage.embedding_format(), cols) {
                Some(format) => format,
                None => return (as_read, 0),
            },
            // Norms and biases are widened to f32.
            Part::Other => return (numel.saturating_mul(4), 0),
        };
        // Quantising reads one chunk of rows at a time: its mapped pages and their copy in
        // `read`, then the chunk in f32 (`Storage::quantize`); never the whole tensor.
        let read_bytes = self.read.size_in_bytes() as u64;
        let transient = if stored.is_quantized() {
            (QUANTIZE_CHUNK_WEIGHTS.max(cols) as u64)
                .min(numel)
                .saturating_mul(2 * read_bytes + 4)
        } else if matches!(stored, WeightFormat::Bf16 | WeightFormat::F16) {
            // Packing a bf16/f16 linear for the decode kernels (`Linear::pack`) holds the
            // packed copy beside the row-major one, one linear at a time.
            numel.saturating_mul(2)
        } else {
            0
        };
        (format_bytes(numel, stored), transient)
    }

    /// With `tie_word_embeddings`, the bytes of the head made from the table of `shape`: none
    /// when it shares the table (the same tensor without a storage format, the same blocks
    /// ([`tied_head_shares_table`]), or a float format of the table's own dtype, which candle
    /// converts without a copy), else a copy in the head's format.
    fn tied_head_bytes(&self, shape: &[usize]) -> u64 {
        let (true, Some(storage)) = (self.tied, self.storage) else {
            return 0;
        };
        let cols = shape.last().copied().unwrap_or(0);
        let head = storage.head_format().for_row_len(cols);
        let shared = match table_format(storage.embedding_format(), cols) {
            Some(table) => tied_head_shares_table(head, table),
            None => head.dtype() == Some(self.read),
        };
        if shared {
            0
        } else {
            self.tensor_bytes(Part::Head, shape).0
        }
    }
}
