//! auris-kernels: every CPU kernel of the workspace, on plain slices (no tensors); the encoder
//! (`auris-audio`) and the decoder (`auris-llm`) call them.
//!
//! - [`cpu`]: the one CPU-feature type, [`cpu::Cpu`], made only by run-time detection (or an
//!   `unsafe` promise); every kernel below reaches its `#[target_feature]` code through one.
//! - [`softmax`]: a softmax with a vectorised `exp`, AVX-512F / AVX2+FMA / portable.
//! - [`attention`]: multi-head attention fused per head and block of queries (logits, softmax,
//!   output, and optionally the attention each key received), without the `(heads, queries,
//!   keys)` probability tensors; prefix (padding) and causal (with an optional sliding window)
//!   visibility, grouped-query heads, any row and head strides.
//! - [`activation`]: GELU (the erf form) with a vectorised `erf`, in place; the gated SiLU of
//!   the decoder's MLP.
//! - [`linear`]: `x W^T + b` with the bias in the product and an optional GELU, for weights
//!   stored in f32, bf16 or f16 (half weights widened exactly, a cache-sized block of rows at a
//!   time, inside the product): the encoder's layers and the decoder's prefill.
//! - The decode steps' products of one activation row or a stack of them (one new position
//!   of each of several sequences), split over the rayon pool by weight rows only ([`batch`]),
//!   each weight read once for the whole stack and each row's result bitwise that row alone:
//!   [`gemv`] (f32 weights), [`halfgemv`] (bf16/f16 weights widened exactly), [`qgemv`] (GGML
//!   `q8_0`/`q4_0` blocks against activation rows quantised to 8 bits, integer block dots with
//!   AVX512-VNNI, AVX-VNNI or AVX2) and [`q4k`] (GGML `q4_K` super-blocks).
//! - [`packed`]: bf16/f16 weights packed in panels of 16 output columns, and the decode
//!   products over them that keep a stack of rows' sums in registers (the decoder's half
//!   linears on the CPU), with the same promise: one FMA chain per output, a row of a stack bitwise that
//!   row alone.
//! - [`peak`]: the f32 multiply-add peak of this machine, measured.
//! - [`round`]: the precision of the products' inputs ([`round::Compute`]: f32, or bf16 as
//!   PyTorch and llama.cpp compute it), the bf16 rounding (AVX2, portable), and the rule `auto`
//!   follows. [`linear`] and [`attention`] take a [`round::Compute`].

pub mod activation;
pub mod attention;
pub mod batch;
pub mod cpu;
pub mod gemv;
pub mod halfgemv;
pub mod linear;
pub mod packed;
pub mod peak;
pub mod q4k;
pub mod qgemv;
pub mod round;
pub mod softmax;
#[doc(hidden)]
pub mod test_values;
