//! The `multi_modal_projector` of an audio-language model: maps the audio encoder's rows to the
//! language model's hidden size, token by token. Two kinds exist:
//!
//! * [`ProjectorKind::Linear`], Qwen2-Audio's one linear layer (`Qwen2AudioMultiModalProjector`
//!   in transformers' `src/transformers/models/qwen2_audio/modeling_qwen2_audio.py`), weights
//!   `multi_modal_projector.linear.{weight,bias}`;
//! * [`ProjectorKind::Mlp`], Audio Flamingo 3's two layers with an activation between them
//!   (`AudioFlamingo3MultiModalProjector` in
//!   `src/transformers/models/audioflamingo3/modeling_audioflamingo3.py`):
//!   `linear_2(act(linear_1(x)))`, `linear_1` `(d_audio -> hidden)`, `linear_2`
//!   `(hidden -> hidden)`, both with a bias when the config's `projector_bias` is true and the
//!   activation named by `projector_hidden_act`; weights
//!   `multi_modal_projector.linear_{1,2}.{weight,bias}`.
//!
//! Both map `(n, d_audio) -> (n, hidden)`. Because they act on each row alone, projecting only
//! the rows kept by pruning gives exactly the rows the full projection would have produced.
//!
//! [`MultiModalProjector::with_compute`] picks the precision of the products' inputs: f32 (as
//! loaded), or bf16 (weights rounded to bf16 once, each layer's input rows rounded before its
//! product, f32 accumulation and bias; [`auris_kernels::round`]).

use auris_kernels::round::{round_bf16_in_place, Compute};
use candle_core::{DType, Module, Tensor};
use candle_nn::{linear, linear_b, Linear, VarBuilder};
use serde::Deserialize;

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

/// The activation between the two layers of an MLP projector, named as in transformers'
/// `ACT2FN` (`src/transformers/activations.py`); a config's `projector_hidden_act` deserializes
/// into it, and a name outside this list is a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ProjectorAct {
    /// Exact, erf-based GELU (`"gelu"`, Audio Flamingo 3's default).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh-approximated GELU (`"gelu_pytorch_tanh"`, `"gelu_new"`).
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new")]
    GeluTanh,
    /// `x * sigmoid(1.702 x)` (`"quick_gelu"`).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// `max(x, 0)` (`"relu"`).
    #[serde(rename = "relu")]
    Relu,
    /// `x * sigmoid(x)` (`"silu"`, `"swish"`).
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

impl ProjectorAct {
    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Relu => xs.relu(),
            Self::Silu => xs.silu(),
        }
    }
}

/// Which projector a checkpoint has; chosen by the model family from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorKind {
    /// One linear layer with a bias (`linear`), Qwen2-Audio's.
    Linear,
    /// `linear_2(act(linear_1(x)))`, Audio Flamingo 3's.
    Mlp {
        /// The activation between the layers (`projector_hidden_act`).
        act: ProjectorAct,
        /// Whether both layers have a bias (`projector_bias`).
        bias: bool,
    },
}

enum Layers {
    Linear(Linear),
    Mlp {
        linear_1: Linear,
        act: ProjectorAct,
        linear_2: Linear,
    },
}

/// The audio-to-text projector.
pub struct MultiModalProjector {
    layers: Layers,
    in_dim: usize,
    out_dim: usize,
    compute: Compute,
}

impl MultiModalProjector {
    /// Loads the linear projector, `linear.{weight,bias}` (`(out_dim, in_dim)`, `(out_dim,)`),
    /// from `vb`, which must point at the checkpoint's `multi_modal_projector` prefix. The same as
    /// [`MultiModalProjector::load_kind`] with [`ProjectorKind::Linear`].
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self, ProjectorError> {
        Self::load_kind(ProjectorKind::Linear, in_dim, out_dim, vb)
    }

    /// Loads a projector of the given kind from `vb` (the checkpoint's `multi_modal_projector`
    /// prefix). [`ProjectorKind::Mlp`] reads `linear_1.weight` `(out_dim, in_dim)`,
    /// `linear_2.weight` `(out_dim, out_dim)` and, with `bias`, `linear_{1,2}.bias` `(out_dim,)`.
    pub fn load_kind(
        kind: ProjectorKind,
        in_dim: usize,
        out_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self, ProjectorError> {
        let layers = match kind {
            ProjectorKind::Linear => Layers::Linear(linear(in_dim, out_dim, vb.pp("linear"))?),
            ProjectorKind::Mlp { act, bias } => Layers::Mlp {
                linear_1: linear_b(in_dim, out_dim, bias, vb.pp("linear_1"))?,
                act,
                linear_2: linear_b(out_dim, out_dim, bias, vb.pp("linear_2"))?,
            },
        };
        Ok(Self {
            layers,
            in_dim,
            out_dim,
            compute: Compute::F32,
        })
    }

    /// The projector with its products in `compute`: under [`Compute::Bf16`] the weights are
    /// rounded to bf16 here (the biases stay), and [`MultiModalProjector::forward`] rounds each
    /// layer's input rows to bf16.
    pub fn with_compute(mut self, compute: Compute) -> Result<Self, ProjectorError> {
        if compute == Compute::Bf16 {
            let round = |l: &Linear| -> candle_core::Result<Linear> {
                Ok(Linear::new(rounded_bf16(l.weight())?, l.bias().cloned()))
            };
            self.layers = match &self.layers {
                Layers::Linear(l) => Layers::Linear(round(l)?),
                Layers::Mlp {
                    linear_1,
                    act,
                    linear_2,
                } => Layers::Mlp {
                    linear_1: round(linear_1)?,
                    act: *act,
                    linear_2: round(linear_2)?,
                },
            };
        }
        self.compute = compute;
        Ok(self)
    }

    /// The precision of the products' inputs ([`MultiModalProjector::with_compute`]).
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// `layer(x)` with `x` rounded to bf16 first under [`Compute::Bf16`].
    fn product(&self, layer: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.compute {
            Compute::F32 => layer.forward(x),
            Compute::Bf16 => layer.forward(&rounded_bf16(x)?),
        }
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
        Ok(match &self.layers {
            Layers::Linear(linear) => self.product(linear, rows)?,
            Layers::Mlp {
                linear_1,
                act,
                linear_2,
            } => self.product(linear_2, &act.apply(&self.product(linear_1, rows)?)?)?,
        })
    }
}

/// `t`'s values rounded to bf16, in `t`'s dtype (an f32 tensor holding bf16 values).
fn rounded_bf16(t: &Tensor) -> candle_core::Result<Tensor> {
    let mut values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    round_bf16_in_place(&mut values);
    Tensor::from_vec(values, t.dims(), t.device())?.to_dtype(t.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn var_builder(tensors: &[(&str, Tensor)]) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(name, t)| (name.to_string(), t.clone()))
            .collect();
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
    }

    fn t2(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    fn projector() -> MultiModalProjector {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2.0], [0.5, -1.0], [0.0, 3.0]], &dev).unwrap();
        let b = Tensor::new(&[0.1f32, 0.2, 0.3], &dev).unwrap();
        let vb = var_builder(&[("linear.weight", w), ("linear.bias", b)]);
        MultiModalProjector::load(2, 3, vb).unwrap()
    }

    fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (row, want_row) in got.iter().zip(want) {
            assert_eq!(row.len(), want_row.len(), "{got:?}");
            for (a, b) in row.iter().zip(want_row) {
                assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn projects_rows_independently() {
        let p = projector();
        let x = t2(&[[1.0, 1.0], [2.0, 0.0]]);
        let y = p.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_close(&y, &[vec![3.1, -0.3, 3.3], vec![2.1, 1.2, 0.3]]);
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

    /// Weights of a 2 -> 2 MLP: `linear_1` (2, 2), `linear_2` (2, 2), optional biases.
    fn mlp_weights(bias: bool) -> Vec<(&'static str, Tensor)> {
        let mut w = vec![
            ("linear_1.weight", t2(&[[1.0, -1.0], [0.5, 2.0]])),
            ("linear_2.weight", t2(&[[2.0, 0.0], [-1.0, 1.0]])),
        ];
        if bias {
            let dev = Device::Cpu;
            w.push(("linear_1.bias", Tensor::new(&[0.5f32, -3.0], &dev).unwrap()));
            w.push(("linear_2.bias", Tensor::new(&[0.25f32, 1.0], &dev).unwrap()));
        }
        w
    }

    fn gelu_erf(x: f64) -> f64 {
        // erf by its Taylor series, plenty for |x| <= 3 in these tests.
        let z = x / std::f64::consts::SQRT_2;
        let mut term = z;
        let mut sum = z;
        for n in 1..60 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        let erf = 2.0 / std::f64::consts::PI.sqrt() * sum;
        0.5 * x * (1.0 + erf)
    }

    /// A scalar activation, computed by hand.
    type Scalar = fn(f64) -> f64;

    /// `linear_2(act(linear_1(x)))` by hand for the weights of `mlp_weights`.
    fn mlp_by_hand(x: [f64; 2], act: Scalar, bias: bool) -> Vec<f32> {
        let (b1, b2) = if bias {
            ([0.5, -3.0], [0.25, 1.0])
        } else {
            ([0.0; 2], [0.0; 2])
        };
        let h = [
            act(x[0] - x[1] + b1[0]),
            act(0.5 * x[0] + 2.0 * x[1] + b1[1]),
        ];
        vec![(2.0 * h[0] + b2[0]) as f32, (-h[0] + h[1] + b2[1]) as f32]
    }

    #[test]
    fn mlp_matches_a_hand_computation() {
        let inputs = [[1.0f64, 1.0], [2.0, -0.5], [-1.5, 0.25]];
        let x = t2(&inputs.map(|r| r.map(|v| v as f32)));
        let cases: [(ProjectorAct, Scalar); 4] = [
            (ProjectorAct::Gelu, gelu_erf),
            (ProjectorAct::Relu, |v| v.max(0.0)),
            (ProjectorAct::Silu, |v| v / (1.0 + (-v).exp())),
            (ProjectorAct::QuickGelu, |v| v / (1.0 + (-1.702 * v).exp())),
        ];
        for bias in [true, false] {
            for (act, f) in cases {
                let kind = ProjectorKind::Mlp { act, bias };
                let p = MultiModalProjector::load_kind(kind, 2, 2, var_builder(&mlp_weights(bias)))
                    .unwrap();
                let got = p.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                let want: Vec<Vec<f32>> = inputs.iter().map(|r| mlp_by_hand(*r, f, bias)).collect();
                assert_close(&got, &want);
            }
        }
    }

    #[test]
    fn mlp_gelu_is_not_the_tanh_approximation() {
        // At x = -3 erf GELU is -0.00405 and tanh GELU -0.00364; linear_2 doubles the gap.
        let kind = |act| ProjectorKind::Mlp { act, bias: false };
        let x = t2(&[[-1.5, 1.5]]); // linear_1 gives -3.0 and 2.25
        let run = |act| {
            MultiModalProjector::load_kind(kind(act), 2, 2, var_builder(&mlp_weights(false)))
                .unwrap()
                .forward(&x)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        let erf = run(ProjectorAct::Gelu);
        assert_close(&erf, &[mlp_by_hand([-1.5, 1.5], gelu_erf, false)]);
        let tanh = run(ProjectorAct::GeluTanh);
        assert!((erf[0][0] - tanh[0][0]).abs() > 5e-4, "{erf:?} {tanh:?}");
    }

    #[test]
    fn mlp_without_bias_needs_no_bias_tensors_and_with_bias_requires_them() {
        let kind = |bias| ProjectorKind::Mlp {
            act: ProjectorAct::Gelu,
            bias,
        };
        assert!(MultiModalProjector::load_kind(
            kind(false),
            2,
            2,
            var_builder(&mlp_weights(false))
        )
        .is_ok());
        let err =
            MultiModalProjector::load_kind(kind(true), 2, 2, var_builder(&mlp_weights(false)))
                .err()
                .expect("a missing bias must fail");
        assert!(err.to_string().contains("linear_1.bias"), "{err}");
    }

    #[test]
    fn mlp_rejects_wrong_width_and_keeps_rows_independent() {
        let kind = ProjectorKind::Mlp {
            act: ProjectorAct::Gelu,
            bias: true,
        };
        let p =
            MultiModalProjector::load_kind(kind, 2, 2, var_builder(&mlp_weights(true))).unwrap();
        assert_eq!(p.out_dim(), 2);
        let err = p
            .forward(&Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProjectorError::WidthMismatch {
                    expected: 2,
                    actual: 3
                }
            ),
            "{err}"
        );
        let x = t2(&[[1.0, 1.0], [2.0, -0.5]]);
        let both = p.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let second = p.forward(&x.narrow(0, 1, 1).unwrap()).unwrap();
        assert_eq!(second.to_vec2::<f32>().unwrap()[0], both[1]);
    }

    /// bf16 compute: values chosen so the rounding shows (1 + 2^-10 rounds to 1, 3 + 2^-6
    /// stays): both layers of an MLP give the hand computation on the rounded inputs,
    /// hidden rows and weights, and not the f32 one; the linear kind likewise.
    #[test]
    fn bf16_compute_rounds_every_product_input() {
        let fine = 1.0 + 2f32.powi(-10);
        let x = t2(&[[fine, 3.0 + 2f32.powi(-6)]]);
        let kind = ProjectorKind::Mlp {
            act: ProjectorAct::Relu,
            bias: false,
        };
        let weights = vec![
            ("linear_1.weight", t2(&[[fine, 0.0], [0.0, 1.0]])),
            ("linear_2.weight", t2(&[[1.0, 0.0], [0.0, fine]])),
        ];
        let load = || MultiModalProjector::load_kind(kind, 2, 2, var_builder(&weights)).unwrap();
        let f32_out = load().forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let p = load().with_compute(Compute::Bf16).unwrap();
        assert_eq!(p.compute(), Compute::Bf16);
        let bf16_out = p.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        // f32: (fine * fine, fine * (3 + 2^-6)); bf16: every `fine` is 1.
        let third = 3.0 + 2f32.powi(-6);
        assert_close(&f32_out, &[vec![fine * fine, fine * third]]);
        assert_close(&bf16_out, &[vec![1.0, third]]);
        let linear = projector().with_compute(Compute::Bf16).unwrap();
        let y = linear.forward(&t2(&[[fine, 1.0]])).unwrap();
        assert_close(&y.to_vec2::<f32>().unwrap(), &[vec![3.1, -0.3, 3.3]]);
    }

    #[test]
    fn activation_names_follow_act2fn() {
        let parse = |name: &str| serde_json::from_str::<ProjectorAct>(&format!("\"{name}\""));
        assert_eq!(parse("gelu").unwrap(), ProjectorAct::Gelu);
        assert_eq!(parse("gelu_new").unwrap(), ProjectorAct::GeluTanh);
        assert_eq!(parse("gelu_pytorch_tanh").unwrap(), ProjectorAct::GeluTanh);
        assert_eq!(parse("quick_gelu").unwrap(), ProjectorAct::QuickGelu);
        assert_eq!(parse("relu").unwrap(), ProjectorAct::Relu);
        assert_eq!(parse("silu").unwrap(), ProjectorAct::Silu);
        assert_eq!(parse("swish").unwrap(), ProjectorAct::Silu);
        assert!(parse("tanh").is_err());
    }
}
