//! The encoder's convolution stem: `gelu(conv2(gelu(conv1(mel))))`, conv1 kernel 3 padding 1,
//! conv2 kernel 3 stride 2 padding 1 (`Qwen2AudioEncoder.conv1/conv2` in transformers'
//! `modeling_qwen2_audio.py`, as in Whisper).
//!
//! On the CPU in f32 each convolution is one matrix product with no copy of its input: the input
//! is laid out time-major (`(frames, channels)`, a zero row before and after for the padding),
//! so the window of output `t` (input rows `s t - 1 ..= s t + 1`) is one contiguous run of
//! `3 x channels` values and consecutive windows start `s x channels` apart: overlapping rows of
//! one buffer ([`auris_kernels::linear::Rows`]). The weights are permuted once at load from
//! `(out, in, k)` to `(out, k, in)` to match. The bias is inside the product and the GELU runs in
//! place ([`auris_kernels::linear`]). Elsewhere (another device or dtype) candle's `conv1d`.

use auris_kernels::activation::gelu_erf_in_place;
use auris_kernels::linear::{linear_into_with, Rows};
use auris_kernels::round::Compute;
use candle_core::{DType, Module, Tensor};
use candle_nn::Conv1d;

use crate::LogMel;

/// The two convolutions, in the form the device runs fastest.
pub(crate) enum Stem {
    /// candle's `conv1d` then `gelu_erf`.
    Candle { conv1: Conv1d, conv2: Conv1d },
    /// f32 on the CPU: weights `(out, 3, in)` and biases, as matrix products.
    Cpu {
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        d: usize,
    },
}

impl Stem {
    /// The CPU form when the weights are f32 on the CPU, candle's otherwise.
    pub(crate) fn new(conv1: Conv1d, conv2: Conv1d) -> candle_core::Result<Self> {
        let w = conv1.weight();
        if !w.device().is_cpu() || w.dtype() != DType::F32 {
            return Ok(Self::Candle { conv1, conv2 });
        }
        let (d, _, _) = w.dims3()?;
        let permuted = |c: &Conv1d| -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
            let w = c.weight().permute((0, 2, 1))?.flatten_all()?.to_vec1()?;
            let b = match c.bias() {
                Some(b) => b.to_vec1()?,
                None => vec![0.0; c.weight().dim(0)?],
            };
            Ok((w, b))
        };
        let (w1, b1) = permuted(&conv1)?;
        let (w2, b2) = permuted(&conv2)?;
        Ok(Self::Cpu { w1, b1, w2, b2, d })
    }

    /// The stem over the first `frames` mel frames (zero padded past them), the first
    /// `positions` outputs of conv2: `(1, positions, d)`.
    pub(crate) fn forward(
        &self,
        mel: &LogMel,
        frames: usize,
        positions: usize,
        dtype: DType,
        compute: Compute,
        device: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Candle { conv1, conv2 } => {
                let input = Tensor::from_slice(&mel.data, (1, mel.n_mels, mel.n_frames), device)?
                    .narrow(2, 0, frames)?
                    .to_dtype(dtype)?;
                let x = conv1.forward(&input)?.gelu_erf()?;
                let x = conv2.forward(&x)?.gelu_erf()?;
                x.narrow(2, 0, positions)?.transpose(1, 2)
            }
            Self::Cpu { w1, b1, w2, b2, d } => {
                let weights = [(w1, b1), (w2, b2)];
                let y = cpu_stem(mel, frames, positions, weights, *d, compute);
                Tensor::from_vec(y, (1, positions, *d), device)
            }
        }
    }
}

/// [`Stem::Cpu`]'s two products; `positions <= (frames + 1) / 2`.
fn cpu_stem(
    mel: &LogMel,
    frames: usize,
    positions: usize,
    [(w1, b1), (w2, b2)]: [(&Vec<f32>, &Vec<f32>); 2],
    d: usize,
    compute: Compute,
) -> Vec<f32> {
    let c = mel.n_mels;
    // Time-major mel with a zero row on each side: row t + 1 is frame t.
    let mut input = vec![0.0f32; (frames + 2) * c];
    for (ch, row) in mel.data.chunks_exact(mel.n_frames).enumerate() {
        for (t, &v) in row[..frames].iter().enumerate() {
            input[(t + 1) * c + ch] = v;
        }
    }
    // conv1 (stride 1) into rows 1..=frames of conv2's padded input.
    let mut hidden = vec![0.0f32; (frames + 2) * d];
    let body = &mut hidden[d..(frames + 1) * d];
    body.chunks_exact_mut(d).for_each(|r| r.copy_from_slice(b1));
    let windows = Rows {
        data: &input,
        rows: frames,
        len: 3 * c,
        stride: c,
    };
    linear_into_with(compute, body, d, 0, windows, &w1[..]);
    gelu_erf_in_place(body);
    // conv2 (stride 2): output t reads padded rows 2t..2t + 2.
    let mut out = b2.repeat(positions);
    let windows = Rows {
        data: &hidden,
        rows: positions,
        len: 3 * d,
        stride: 2 * d,
    };
    linear_into_with(compute, &mut out, d, 0, windows, &w2[..]);
    gelu_erf_in_place(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use auris_kernels::test_values::values;
    use candle_core::Device;
    use candle_nn::Conv1dConfig;

    const F32: Compute = Compute::F32;

    fn conv(out: usize, inp: usize, stride: usize, seed: u64) -> Conv1d {
        let w = Tensor::from_vec(values(out * inp * 3, seed), (out, inp, 3), &Device::Cpu);
        let b = Tensor::from_vec(values(out, seed + 1), out, &Device::Cpu);
        let cfg = Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        Conv1d::new(w.unwrap(), Some(b.unwrap()), cfg)
    }

    /// The CPU products equal candle's convolutions (odd channel counts, frame counts that cut
    /// the window short, the whole window) on 1-3 threads.
    #[test]
    fn the_cpu_stem_matches_candles_convolutions() {
        let (n_mels, n_frames, d) = (5, 40, 7);
        let mel = LogMel {
            n_mels,
            n_frames,
            data: values(n_mels * n_frames, 1),
            valid_frames: n_frames,
        };
        let candle = Stem::Candle {
            conv1: conv(d, n_mels, 1, 2),
            conv2: conv(d, d, 2, 4),
        };
        let cpu = Stem::new(conv(d, n_mels, 1, 2), conv(d, d, 2, 4)).unwrap();
        assert!(matches!(cpu, Stem::Cpu { .. }));
        for (frames, positions) in [(1, 1), (7, 3), (9, 4), (40, 20), (40, 13)] {
            let want: Vec<f32> = candle
                .forward(&mel, frames, positions, DType::F32, F32, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got: Vec<f32> = pool
                    .install(|| cpu.forward(&mel, frames, positions, DType::F32, F32, &Device::Cpu))
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(got.len(), want.len(), "{frames} frames");
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{frames}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
