//! Choosing the next token from logits with transformers' `generate` semantics: repetition
//! penalty, then (when sampling) temperature, top-k and top-p, drawn by candle's
//! `LogitsProcessor`.

use std::collections::HashSet;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::LlmError;

/// How the next token is chosen from the logits (transformers' `GenerationConfig` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `None` or `0.0` means greedy decoding (`do_sample=False`), where
    /// `top_k` and `top_p` are ignored.
    pub temperature: Option<f64>,
    /// Keep only the `k` highest logits (ties with the `k`-th are kept, as in transformers);
    /// `None` or `0` disables it.
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches
    /// `p`, in `(0, 1]`; `None` or `1.0` disables it.
    pub top_p: Option<f64>,
    /// transformers' `repetition_penalty`; `1.0` is off. Applies under greedy decoding too.
    pub repetition_penalty: f32,
    /// Seed of the sampler's random number generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy decoding without repetition penalty.
    fn default() -> Self {
        Self {
            temperature: None,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: every distinct id in `context` is
/// penalised once, `logit < 0` multiplied by `penalty`, otherwise divided by it. Ids outside
/// `logits` are skipped.
pub(crate) fn apply_repetition_penalty(logits: &mut [f32], penalty: f32, context: &[u32]) {
    if penalty == 1.0 {
        return;
    }
    let mut done = HashSet::with_capacity(context.len());
    for &id in context {
        if !done.insert(id) {
            continue;
        }
        if let Some(logit) = logits.get_mut(id as usize) {
            *logit = if *logit < 0.0 {
                *logit * penalty
            } else {
                *logit / penalty
            };
        }
    }
}

/// Highest minus second-highest value (0 on a tie, infinite with a single finite value).
fn top_margin(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > first {
            second = first;
            first = x;
        } else if x > second {
            second = x;
        }
    }
    first - second
}

/// transformers' `TopKLogitsWarper`: every logit below the `k`-th largest becomes `-inf`
/// (ties with the `k`-th survive).
pub(crate) fn mask_top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted = logits.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    for x in logits.iter_mut() {
        if *x < kth {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// One sequence's sampler: the repetition penalty, then candle's `LogitsProcessor` (seeded,
/// so a sequence's draws depend only on its own seed) with the transformers warper order.
pub(crate) struct Sampler {
    processor: LogitsProcessor,
    top_k: Option<usize>,
    repetition_penalty: f32,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // candle's `LogitsProcessor` has no `Debug`.
        f.debug_struct("Sampler")
            .field("top_k", &self.top_k)
            .field("repetition_penalty", &self.repetition_penalty)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Validates `p` (each bad field is an [`LlmError::InvalidSampling`] naming it).
    pub(crate) fn new(p: &SamplingParams) -> Result<Self, LlmError> {
        if !(p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0) {
            return Err(LlmError::InvalidSampling {
                field: "repetition_penalty",
                value: p.repetition_penalty.to_string(),
                reason: "must be finite and > 0",
            });
        }
        let temperature = match p.temperature {
            Some(t) if !(t.is_finite() && t >= 0.0) => {
                return Err(LlmError::InvalidSampling {
                    field: "temperature",
                    value: t.to_string(),
                    reason: "must be finite and >= 0",
                });
            }
            Some(t) if t > 0.0 => Some(t),
            _ => None,
        };
        if let Some(top_p) = p.top_p {
            if !(top_p > 0.0 && top_p <= 1.0) {
                return Err(LlmError::InvalidSampling {
                    field: "top_p",
                    value: top_p.to_string(),
                    reason: "must be in (0, 1]",
                });
            }
        }
        let Some(temperature) = temperature else {
            return Ok(Self {
                processor: LogitsProcessor::from_sampling(p.seed, Sampling::ArgMax),
                top_k: None,
                repetition_penalty: p.repetition_penalty,
            });
        };
        // Top-k is applied here as a logits mask (keeping ties like transformers); candle's
        // `TopKThenTopP` would apply top-p to probabilities that were not renormalised over
        // the top k. Masking commutes with the temperature, so candle may apply it.
        let sampling = match p.top_p {
            Some(top_p) if top_p < 1.0 => Sampling::TopP {
                p: top_p,
                temperature,
            },
            _ => Sampling::All { temperature },
        };
        Ok(Self {
            processor: LogitsProcessor::from_sampling(p.seed, sampling),
            top_k: p.top_k.filter(|&k| k > 0),
            repetition_penalty: p.repetition_penalty,
        })
    }

    /// The next token after `logits` `(1, vocab)`, `seen` being the ids the repetition penalty
    /// looks at, and the margin of the penalised logits (see [`crate::Generation::margins`]).
    pub(crate) fn next(&mut self, logits: &Tensor, seen: &[u32]) -> Result<(u32, f32), LlmError> {
        let mut row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        apply_repetition_penalty(&mut row, self.repetition_penalty, seen);
        let margin = top_margin(&row);
        Ok((self.choose(row)?, margin))
    }

    fn choose(&mut self, mut logits: Vec<f32>) -> Result<u32, LlmError> {
        if let Some(k) = self.top_k {
            mask_top_k(&mut logits, k);
        }
        // On the CPU, so argmax ties resolve to the lowest index on every backend.
        let len = logits.len();
        let logits = Tensor::from_vec(logits, len, &Device::Cpu)?;
        Ok(self.processor.sample(&logits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_matches_transformers() {
        let mut logits = vec![2.0f32, -2.0, 0.0, 1.0, -1.0];
        // id 0 twice, id 1 once, id 2 (zero logit) once, id 9 out of range.
        apply_repetition_penalty(&mut logits, 2.0, &[0, 1, 0, 2, 9]);
        assert_eq!(logits, vec![1.0, -4.0, 0.0, 1.0, -1.0]);
        let mut same = vec![2.0f32, -2.0];
        apply_repetition_penalty(&mut same, 1.0, &[0, 1]);
        assert_eq!(same, vec![2.0, -2.0]);
    }

    #[test]
    fn candle_repeat_penalty_agrees() {
        let logits = vec![2.0f32, -2.0, 0.0, 1.0, -1.0];
        let ctx = [0, 1, 0, 2, 4, 4];
        let t = Tensor::new(logits.as_slice(), &Device::Cpu).unwrap();
        let candle: Vec<f32> = candle_transformers::utils::apply_repeat_penalty(&t, 1.3, &ctx)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut ours = logits;
        apply_repetition_penalty(&mut ours, 1.3, &ctx);
        assert_eq!(candle, ours);
    }

    #[test]
    fn greedy_ties_go_to_lowest_index() {
        let mut sampler = Sampler::new(&SamplingParams::default()).unwrap();
        assert_eq!(sampler.choose(vec![0.0, 3.0, 1.0, 3.0, 3.0]).unwrap(), 1);
        assert_eq!(sampler.choose(vec![5.0, 5.0]).unwrap(), 0);
        // Greedy ignores top-k/top-p and a zero temperature means greedy.
        let mut sampler = Sampler::new(&SamplingParams {
            temperature: Some(0.0),
            top_k: Some(1),
            top_p: Some(0.1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(sampler.choose(vec![1.0, 2.0, 2.0]).unwrap(), 1);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut logits = vec![1.0f32, 5.0, 3.0, 3.0, 0.0];
        mask_top_k(&mut logits, 2);
        let inf = f32::NEG_INFINITY;
        assert_eq!(logits, vec![inf, 5.0, 3.0, 3.0, inf]);
        let mut all = vec![1.0f32, 2.0];
        mask_top_k(&mut all, 5);
        assert_eq!(all, vec![1.0, 2.0]);
    }

    #[test]
    fn top_k_one_sampling_is_argmax() {
        let mut sampler = Sampler::new(&SamplingParams {
            temperature: Some(1.5),
            top_k: Some(1),
            seed: 7,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(sampler.choose(vec![0.0, 0.5, 0.4, -1.0]).unwrap(), 1);
        }
    }

    #[test]
    fn top_p_renormalises_after_top_k() {
        // probs ~ [0.4, 0.3, 0.2, 0.1]; top_k=2 leaves [4/7, 3/7]; top_p=0.5 then keeps only
        // the first (transformers renormalises), while 0.5 of the unnormalised mass would
        // keep two.
        let logits: Vec<f32> = [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut sampler = Sampler::new(&SamplingParams {
            temperature: Some(1.0),
            top_k: Some(2),
            top_p: Some(0.5),
            seed: 1,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..50 {
            assert_eq!(sampler.choose(logits.clone()).unwrap(), 0);
        }
    }

    #[test]
    fn sampling_is_seeded() {
        let params = SamplingParams {
            temperature: Some(1.0),
            seed: 42,
            ..Default::default()
        };
        let logits = vec![0.0f32; 50];
        let draw = |params: &SamplingParams| {
            let mut sampler = Sampler::new(params).unwrap();
            (0..20)
                .map(|_| sampler.choose(logits.clone()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        let other = SamplingParams {
            seed: 43,
            ..params.clone()
        };
        assert_ne!(draw(&params), draw(&other));
    }

    #[test]
    fn invalid_sampling_names_field() {
        for (params, field) in [
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplingParams {
                    temperature: Some(-1.0),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: Some(1.5),
                    ..Default::default()
                },
                "top_p",
            ),
        ] {
            let Err(err) = Sampler::new(&params) else {
                panic!("{field} accepted")
            };
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn margin_is_top1_minus_top2() {
        assert_eq!(top_margin(&[1.0, 4.0, 2.5]), 1.5);
        assert_eq!(top_margin(&[3.0, 3.0]), 0.0);
    }
}
