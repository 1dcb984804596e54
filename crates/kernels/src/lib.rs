//! auris-kernels: CPU kernels that the encoder (`auris-audio`) and the decoder (`auris-llm`)
//! share, on plain `f32` slices (no tensors).
//!
//! - [`softmax`]: a softmax with a vectorised `exp`, AVX-512F / AVX2+FMA / portable chosen at
//!   run time.
//! - [`attention`]: multi-head attention fused per head and block of queries (logits, softmax,
//!   output, and optionally the attention each key received), without the `(heads, queries,
//!   keys)` probability tensors; prefix (padding) and causal (with an optional sliding window)
//!   visibility, grouped-query heads, any row and head strides.
//! - [`peak`]: the f32 multiply-add peak of this machine, measured.

pub mod attention;
pub mod peak;
pub mod softmax;
#[doc(hidden)]
pub mod test_values;
