//! How the decoder stores its linear weights, and the options to load it that way.

use std::fmt;
use std::str::FromStr;

use auris_kernels::round::Compute;
use candle_core::DType;

use crate::LlmError;

/// Storage precision of the decoder's linear weights (GGUF type names).
///
/// Whatever the storage, [`crate::Qwen2Decoder::load_with`] computes in f32: activations,
/// norms, RoPE, attention and the KV cache are f32, and each weight is widened (or its block
/// dequantised) inside the product. The block formats are GGML's:
///
/// | format | block | bytes per block | bytes per weight |
/// |--------|-------|-----------------|------------------|
/// | `f32`  | 1     | 4               | 4                |
/// | `bf16` | 1     | 2               | 2                |
/// | `f16`  | 1     | 2               | 2                |
/// | `q8_0` | 32    | 34 (f16 scale + 32 × i8) | 1.0625  |
/// | `q4_0` | 32    | 18 (f16 scale + 32 × 4 bit) | 0.5625 |
/// | `q4_k` | 256   | 144 (f16 scale and min, 8 × 6-bit sub-scales and mins, 256 × 4 bit) | 0.5625 |
///
/// A block format needs the row length (the input size) to be a multiple of its block; a
/// tensor whose rows do not divide falls back, see [`WeightFormat::for_row_len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// 32-bit floats.
    F32,
    /// bfloat16 (the dtype of most hub checkpoints).
    Bf16,
    /// IEEE half precision.
    F16,
    /// GGML `Q8_0`: blocks of 32 signed bytes sharing one f16 scale.
    Q8_0,
    /// GGML `Q4_0`: blocks of 32 four-bit values (offset 8) sharing one f16 scale.
    Q4_0,
    /// GGML `Q4_K`: super-blocks of 256 four-bit values, eight sub-blocks of 32 with 6-bit
    /// scales and minimums under two f16 super-block factors.
    Q4K,
}

impl WeightFormat {
    /// Every format, in the order of [`WeightFormat::name`]'s list.
    pub const ALL: [WeightFormat; 6] = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::F16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q4K,
    ];

    /// The lower-case name used on the command line: `f32|bf16|f16|q8_0|q4_0|q4_k`.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
            WeightFormat::Q4K => "q4_k",
        }
    }

    /// Weights per block: 1 for the float formats, 32 for `q8_0`/`q4_0`, 256 for `q4_k`.
    pub fn block_len(self) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::Bf16 | WeightFormat::F16 => 1,
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => 32,
            WeightFormat::Q4K => 256,
        }
    }

    /// Bytes one block occupies (see the table on [`WeightFormat`]).
    pub fn block_bytes(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::Bf16 | WeightFormat::F16 => 2,
            WeightFormat::Q8_0 => 34,
            WeightFormat::Q4_0 => 18,
            WeightFormat::Q4K => 144,
        }
    }

    /// Average bytes per weight, for memory estimates: `block_bytes / block_len`.
    pub fn bytes_per_weight(self) -> f64 {
        self.block_bytes() as f64 / self.block_len() as f64
    }

    /// The candle dtype of a float format; `None` for the block formats.
    pub fn dtype(self) -> Option<DType> {
        match self {
            WeightFormat::F32 => Some(DType::F32),
            WeightFormat::Bf16 => Some(DType::BF16),
            WeightFormat::F16 => Some(DType::F16),
            _ => None,
        }
    }

    /// Whether this is a block-quantised (GGML) format.
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// The format a tensor with rows of `row_len` weights actually gets when `self` is asked
    /// for: `self` when `row_len` is a multiple of the block; otherwise `q4_k` falls back to
    /// `q4_0` (same bits per weight, blocks of 32), and a row that is not a multiple of 32
    /// keeps `bf16` (no GGML block format fits it).
    pub fn for_row_len(self, row_len: usize) -> WeightFormat {
        if row_len.is_multiple_of(self.block_len()) {
            self
        } else if self == WeightFormat::Q4K && row_len.is_multiple_of(32) {
            WeightFormat::Q4_0
        } else {
            WeightFormat::Bf16
        }
    }

    /// The format of the output head (`lm_head`) when the other linears use `self`.
    ///
    /// The head is the largest matrix and the last step before sampling, so the 4-bit modes
    /// give it 8 bits (`q8_0`), as llama.cpp's `Q4_0`/`Q4_K_M` give `output.weight` 6 or 8
    /// bits; the other formats keep it as asked.
    pub fn head_format(self) -> WeightFormat {
        match self {
            WeightFormat::Q4_0 | WeightFormat::Q4K => WeightFormat::Q8_0,
            other => other,
        }
    }

    /// The format of the embedding table (`embed_tokens`) when the linears use `self`;
    /// `None` means the checkpoint's dtype (the `VarBuilder`'s).
    ///
    /// The block formats store it as `q8_0`, as llama.cpp's `Q8_0`/`Q4_0`/`Q4_K_M` files store
    /// `token_embd`: half of bf16's size, and a lookup dequantises only the gathered rows. The
    /// float formats keep the checkpoint's dtype (a lookup only gathers rows, so widening the
    /// whole table would cost memory for nothing). A table whose rows (`hidden_size`) are not
    /// a multiple of 32, or that is not on the CPU, keeps the checkpoint's dtype whatever
    /// this says. A tied head whose [`WeightFormat::head_format`] is this format shares the
    /// table rather than holding a second copy.
    pub fn embedding_format(self) -> Option<WeightFormat> {
        if self.is_quantized() {
            Some(WeightFormat::Q8_0)
        } else {
            None
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = LlmError;

    /// Parses [`WeightFormat::name`], ignoring ASCII case (`Q4_K` = `q4_k`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WeightFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| LlmError::InvalidOption {
                option: "weights",
                value: s.to_string(),
                expected: "one of f32, bf16, f16, q8_0, q4_0, q4_k",
            })
    }
}

/// How [`crate::Qwen2Decoder::load_with`] stores the weights and computes the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Storage of the linear layers (attention and MLP projections, and the output head as
    /// given by [`WeightFormat::head_format`]); the embedding table gets
    /// [`WeightFormat::embedding_format`].
    pub weights: WeightFormat,
    /// Precision of the matrix products' inputs. [`Compute::Bf16`] multiplies bf16 weights
    /// (`f32` and `f16` storage become `bf16`; the block formats keep their integer products,
    /// as do their activations, quantised to 8 bits per block) by activations rounded to bf16
    /// once per product, prefill and decode alike and the output head too, and rounds the
    /// attention's queries, the keys and values as they enter the cache, and the probabilities
    /// before they weigh the values; accumulation, norms, softmax and the residual stream stay
    /// f32 ([`auris_kernels::round`]).
    pub compute: Compute,
}

impl LoadOptions {
    /// The weight storage that `compute` multiplies: `bf16` for the float formats under
    /// [`Compute::Bf16`], `weights` otherwise.
    pub fn stored_weights(&self) -> WeightFormat {
        match (self.compute, self.weights) {
            (Compute::Bf16, WeightFormat::F32 | WeightFormat::F16) => WeightFormat::Bf16,
            (_, w) => w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_errors() {
        for f in WeightFormat::ALL {
            assert_eq!(f.name().parse::<WeightFormat>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("Q4_K".parse::<WeightFormat>().unwrap(), WeightFormat::Q4K);
        let err = "q5_k".parse::<WeightFormat>().unwrap_err().to_string();
        assert!(err.contains("q5_k") && err.contains("q4_k"), "{err}");
    }

    #[test]
    fn bytes_per_weight_follow_ggml_blocks() {
        assert_eq!(WeightFormat::F32.bytes_per_weight(), 4.0);
        assert_eq!(WeightFormat::Bf16.bytes_per_weight(), 2.0);
        assert_eq!(WeightFormat::Q8_0.bytes_per_weight(), 34.0 / 32.0);
        assert_eq!(WeightFormat::Q4_0.bytes_per_weight(), 18.0 / 32.0);
        assert_eq!(WeightFormat::Q4K.bytes_per_weight(), 144.0 / 256.0);
    }

    #[test]
    fn rows_that_do_not_divide_fall_back() {
        assert_eq!(WeightFormat::Q4K.for_row_len(4096), WeightFormat::Q4K);
        assert_eq!(WeightFormat::Q4K.for_row_len(896), WeightFormat::Q4_0);
        assert_eq!(WeightFormat::Q4K.for_row_len(33), WeightFormat::Bf16);
        assert_eq!(WeightFormat::Q8_0.for_row_len(48), WeightFormat::Bf16);
        assert_eq!(WeightFormat::Q8_0.for_row_len(64), WeightFormat::Q8_0);
        assert_eq!(WeightFormat::F16.for_row_len(7), WeightFormat::F16);
        assert_eq!(WeightFormat::Q4_0.head_format(), WeightFormat::Q8_0);
        assert_eq!(WeightFormat::Bf16.head_format(), WeightFormat::Bf16);
    }

    #[test]
    fn quantised_modes_store_the_embedding_as_q8_0() {
        for f in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4K] {
            assert_eq!(f.embedding_format(), Some(WeightFormat::Q8_0), "{f}");
            // A tied head of the head format can then share the table.
            assert_eq!(f.embedding_format(), Some(f.head_format()), "{f}");
        }
        for f in [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16] {
            assert_eq!(f.embedding_format(), None, "{f}");
        }
    }
}
