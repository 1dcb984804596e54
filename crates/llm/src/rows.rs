//! Reading ranges of rows of a checkpoint's 2-D tensors, so that a weight quantised at load
//! never passes through memory whole (see [`crate::Qwen2Decoder::load_with_rows`]).

use std::ops::Range;

use candle_core::Tensor;

/// Ranges of rows of the checkpoint's 2-D tensors, each read without the rest of its tensor
/// (from a memory-mapped safetensors file, the bytes of those rows only).
///
/// Names are full checkpoint names, as the `VarBuilder`'s backend knows them (the builder's
/// prefix, a dot, the tensor's name), e.g. `language_model.lm_head.weight`.
pub trait RowReader {
    /// The stored shape of tensor `name`, or `None` when the checkpoint has no such tensor.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;

    /// Rows `rows` of the 2-D tensor `name` as a `(rows.len(), columns)` CPU tensor in its
    /// stored dtype; an error when the tensor is missing, not 2-D, not stored as floats, or
    /// has fewer rows.
    fn read_rows(&self, name: &str, rows: Range<usize>) -> candle_core::Result<Tensor>;
}
