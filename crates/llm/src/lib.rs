//! Qwen2 decoder over input embeddings, with a caller-owned KV cache and transformers-style
//! generation.
//!
//! This is the language-model stage of auris: Qwen2-Audio's `language_model`
//! (`Qwen2ForCausalLM`). It takes embeddings rather than token ids so the pipeline can splice
//! projected audio features into the prompt.
//!
//! # Contract
//!
//! - [`Qwen2Config`] mirrors `config.json` / `text_config` with transformers' class defaults;
//!   [`Qwen2Config::validate`] names the offending field and value.
//! - [`Qwen2Decoder::load`] reads the weights under a `VarBuilder` placed at the language
//!   model's prefix (`language_model` in Qwen2-Audio checkpoints); compute dtype and device are
//!   the `VarBuilder`'s. Norms and softmax run in f32 whatever the dtype.
//! - [`Qwen2Decoder::load_with`] with [`LoadOptions`] keeps the linear weights in a
//!   [`WeightFormat`] (`f32`, `bf16`, `f16`, or GGML's `q8_0`, `q4_0`, `q4_k` quantised at load,
//!   one tensor at a time and 32 MiB of f32 rows at a time within it, never a whole tensor in
//!   f32) and computes everything else in f32; the `VarBuilder`'s dtype is
//!   only the dtype tensors are read in. The output head gets [`WeightFormat::head_format`];
//!   a weight whose row length does not fit the block falls back per
//!   [`WeightFormat::for_row_len`]. The embedding table gets [`WeightFormat::embedding_format`]:
//!   `q8_0` in the block formats (lookups dequantise only the gathered rows; a tied head of
//!   that format shares the table), the checkpoint's dtype otherwise or when its rows do not
//!   fit the block; norm weights and biases are f32. [`Qwen2Decoder::load_with_rows`] also
//!   takes a [`RowReader`] (the checkpoint's tensors by ranges of rows), from which every
//!   weight stored in a block format is read one chunk of rows at a time: the load then never
//!   holds a whole such tensor, not even in the checkpoint's dtype. [`Qwen2Decoder::weight_format`],
//!   [`Qwen2Decoder::head_weight_format`], [`Qwen2Decoder::dtype`] (the compute dtype) and
//!   [`Qwen2Decoder::linear_weight_bytes`], [`Qwen2Decoder::embedding_format`] and
//!   [`Qwen2Decoder::embedding_bytes`] describe the result. On the CPU, single-row
//!   products (decode), and the stacked decode rows of several sequences, run auris-kernels'
//!   multi-threaded GEMVs, picked at run time by its detected `Cpu`, each row's result
//!   bitwise that row alone: f32 and bf16/f16 weights (`auris_kernels::gemv`,
//!   `auris_kernels::halfgemv`: AVX2 + FMA + F16C, portable); quantised weights against
//!   each activation row quantised to 8-bit blocks, integer block dots
//!   (`auris_kernels::qgemv` for `q8_0`/`q4_0`: AVX512-VNNI, AVX-VNNI, AVX2 or portable;
//!   `auris_kernels::q4k`: AVX2 or portable). Several rows (prefill) of half weights go
//!   through `auris_kernels::linear`, widening a cache-sized block of weight rows at a time;
//!   quantised weights dequantise one chunk of weight rows at a time for gemm from 16 rows on,
//!   and 2 to 15 rows go through candle's `QMatMul`.
//! - [`LoadOptions::compute`] picks the precision of the products' inputs
//!   ([`auris_kernels::round::Compute`]): f32 (exact), or bf16 (activations, attention
//!   queries, cached keys and values, and probabilities rounded to bf16 once per product,
//!   bf16 weights, f32 accumulation), as PyTorch in bf16 and llama.cpp's bf16 path multiply.
//!   [`Qwen2Decoder::compute`] says which.
//! - [`SizePlan`] says what a load keeps, per [`Part`] ([`PartBytes`]), from the functions the
//!   loader itself calls: a memory estimate asks it instead of repeating the loader's rules.
//! - [`Qwen2Decoder::embed_tokens`]: ids `(batch, seq)` → `(batch, seq, hidden)` in the compute
//!   dtype.
//! - [`Qwen2Decoder::forward_embeds`]: embeddings `(batch, seq, hidden)` of any float dtype (cast
//!   to the compute dtype) → logits of the last position `(batch, vocab)`, f32. [`Qwen2Decoder::forward_embeds_all`] → `(batch, seq,
//!   vocab)`, f32. New tokens take the contiguous RoPE positions `cache.len()..cache.len() +
//!   seq` and are appended to the [`KvCache`]; every row of a batch shares the positions
//!   (no padding support). Sequences at different positions each have their own cache:
//!   [`Qwen2Decoder::forward_batch`] runs several, each [`SequenceInput`] at its cache's
//!   positions, the single decode positions stacked into one product per linear layer.
//! - [`KvCache`] is owned by the caller ([`Qwen2Decoder::new_cache`]); it grows in place,
//!   [`KvCache::truncate`] rewinds it (to reuse a prompt for several continuations) and
//!   `clone` forks it.
//! - [`Sequence`] is one sequence's decoding state (its cache and position, seeded sampler,
//!   the ids the repetition penalty sees, token limit, stop ids, [`StopStrings`]):
//!   [`Sequence::prefill`] makes it, [`Sequence::step`] emits one token with transformers'
//!   `generate` semantics (repetition penalty → temperature → top-k → top-p), sampling through
//!   `candle_transformers::generation::LogitsProcessor`; [`step_many`] advances several
//!   together through [`Qwen2Decoder::forward_batch`], each at its own position.
//!   [`generate`] and [`generate_from_logits`] are the loop over one sequence's steps.
//!
//! The maths follows transformers' `modeling_qwen2.py` (eager attention): pre-RMSNorm blocks,
//! q/k/v projections with bias and o without, rotate-half RoPE with `inv_freq` in f32, GQA by
//! repeating key/value heads, scale `1/sqrt(head_dim)`, causal (and, for sliding layers,
//! windowed) masking, SwiGLU MLP, final norm, `lm_head` (tied to `embed_tokens` when
//! `tie_word_embeddings`). Only the `"default"` RoPE is implemented; other `rope_type`s are a
//! [`LlmError::Unsupported`].
//!
//! Errors are [`LlmError`]; nothing panics on bad input.

mod cache;
mod config;
mod embedding;
mod error;
mod format;
mod generate;
mod linear;
mod model;
mod plan;
mod rows;
mod sampling;
mod sequence;
mod stop;
#[cfg(test)]
mod test_values;
#[cfg(test)]
mod tests;

pub use cache::KvCache;
pub use config::{HiddenAct, Qwen2Config, RopeParameters, TokenIds};
pub use error::LlmError;
pub use format::{LoadOptions, WeightFormat};
pub use generate::{generate, generate_from_logits, GenerateOptions, Generation};
pub use model::{Qwen2Decoder, SequenceInput, PREFILL_CHUNK};
pub use plan::{Part, PartBytes, SizePlan};
pub use rows::RowReader;
pub use sampling::SamplingParams;
pub use sequence::{step_many, Finish, Sequence};
pub use stop::StopStrings;
