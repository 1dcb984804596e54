//! auris-kernels: CPU kernels that the encoder (`auris-audio`) and the decoder (`auris-llm`)
//! share, on plain slices (no tensors).
//!
//! - [`softmax`]: a softmax with a vectorised `exp`, AVX-512F / AVX2+FMA / portable chosen at
//!   run time.
//! - [`attention`]: multi-head attention fused per head and block of queries (logits, softmax,
//!   output, and optionally the attention each key received), without the `(heads, queries,
//!   keys)` probability tensors; prefix (padding) and causal (with an optional sliding window)
//!   visibility, grouped-query heads, any row and head strides.
//! - [`activation`]: GELU (the erf form) with a vectorised `erf`, in place.
//! - [`linear`]: `x W^T + b` with the bias in the product and an optional GELU, for weights
//!   stored in f32, bf16 or f16 (half weights widened exactly, a cache-sized block of rows at a
//!   time, inside the product).
//! - [`peak`]: the f32 multiply-add peak of this machine, measured.

pub mod activation;
pub mod attention;
pub mod linear;
pub mod peak;
pub mod softmax;
#[doc(hidden)]
pub mod test_values;
