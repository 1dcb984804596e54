//! The Qwen2-Audio `multi_modal_projector`: one linear layer from the audio encoder's width to the
//! language model's hidden size, applied token by token.
//!
//! Mirrors `Qwen2AudioMultiModalProjector` in transformers'
//! `src/transformers/models/qwen2_audio/modeling_qwen2_audio.py`:
//! `(n, d_audio) -> (n, hidden)`, weights `multi_modal_projector.linear.{weight,bias}`.
//! Because it acts on each row alone, projecting only the rows kept by pruning gives exactly
//! the rows the full projection would have produced.

use candle_core::{Module, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

/// Errors of the projector stage.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// A tensor operation failed (missing weight, wrong shape, device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The input rows do not have the encoder's width.
    #[error("projector input has width {actual}, expected the audio encoder width {expected}")]
    WidthMismatch {
        /// `d_audio` the projector was built for.
        expected: usize,
        /// Width of the rows passed in.
        actual: usize,
    },
}

/// The linear audio-to-text projector.
pub struct MultiModalProjector {
    linear: Linear,
    in_dim: usize,
    out_dim: usize,
}

impl MultiModalProjector {
    /// Loads `linear.{weight,bias}` (`(out_dim, in_dim)`, `(out_dim,)`) from `vb`, which must
    /// point at the checkpoint's `multi_modal_projector` prefix.
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self, ProjectorError> {
        Ok(Self {
            linear: linear(in_dim, out_dim, vb.pp("linear"))?,
            in_dim,
            out_dim,
        })
    }

    /// Width of the language model's embeddings.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Projects `(n, d_audio)` encoder rows to `(n, hidden)`.
    pub fn forward(&self, rows: &Tensor) -> Result<Tensor, ProjectorError> {
        let width = rows.dims().last().copied().unwrap_or(0);
        if width != self.in_dim {
            return Err(ProjectorError::WidthMismatch {
                expected: self.in_dim,
                actual: width,
            });
        }
        Ok(self.linear.forward(rows)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn projector() -> MultiModalProjector {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2.0], [0.5, -1.0], [0.0, 3.0]], &dev).unwrap();
        let b = Tensor::new(&[0.1f32, 0.2, 0.3], &dev).unwrap();
        let map = HashMap::from([
            ("linear.weight".to_string(), w),
            ("linear.bias".to_string(), b),
        ]);
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        MultiModalProjector::load(2, 3, vb).unwrap()
    }

    #[test]
    fn projects_rows_independently() {
        let p = projector();
        let x = Tensor::new(&[[1f32, 1.0], [2.0, 0.0]], &Device::Cpu).unwrap();
        let y = p.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let expected = [[3.1f32, -0.3, 3.3], [2.1, 1.2, 0.3]];
        for (row, want) in y.iter().zip(expected) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{y:?}");
            }
        }
        let row = p.forward(&x.narrow(0, 1, 1).unwrap()).unwrap();
        assert_eq!(row.to_vec2::<f32>().unwrap()[0], y[1]);
    }

    #[test]
    fn rejects_wrong_width() {
        let p = projector();
        let x = Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap();
        let err = p.forward(&x).unwrap_err();
        assert!(err.to_string().contains("width 3"), "{err}");
    }
}
