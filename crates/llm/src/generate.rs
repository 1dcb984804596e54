//! Autoregressive generation with transformers' `generate` semantics.

use std::collections::HashSet;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::{KvCache, LlmError, Qwen2Decoder};

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

/// Options of one [`generate`] call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateOptions {
    /// Upper bound on generated tokens, a produced stop id included (as transformers counts).
    pub max_new_tokens: usize,
    /// Generation ends when one of these is produced (from `generation_config.json` or the
    /// tokenizer; never hard-coded).
    pub stop_ids: Vec<u32>,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Generation {
    /// The generated tokens, without the stop id that ended generation.
    pub tokens: Vec<u32>,
    /// The stop id that ended generation, if one did (transformers would append it to the
    /// output ids).
    pub stopped_on: Option<u32>,
    /// Per step (one per token in `tokens`, plus one for the stop id if any): the highest
    /// minus the second-highest logit after the repetition penalty, before temperature.
    pub margins: Vec<f32>,
}

/// Generates up to `opts.max_new_tokens` tokens after `prompt_embeds` `(1, seq, hidden)`.
///
/// `cache` holds whatever precedes the prompt (usually nothing); on return it holds the prompt
/// and every emitted token except the last one (which was never fed back). `context_ids` are
/// the prompt's token ids (placeholders included, as transformers sees `input_ids`), used by
/// the repetition penalty together with the generated ids.
///
/// Each step: logits in f32 → repetition penalty → (when sampling) temperature → top-k →
/// top-p → argmax or a draw from `candle_transformers::generation::LogitsProcessor` seeded
/// with `sampling.seed`. Greedy ties go to the lowest token id, like `torch.argmax`.
/// `on_token` sees every emitted non-stop token; returning `false` stops after that token.
pub fn generate(
    model: &Qwen2Decoder,
    cache: &mut KvCache,
    prompt_embeds: &Tensor,
    context_ids: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation, LlmError> {
    if prompt_embeds.dims().first() != Some(&1) {
        return Err(LlmError::BadInput {
            what: "prompt_embeds",
            expected: format!("(1, seq, {})", model.config().hidden_size),
            actual: prompt_embeds.dims().to_vec(),
            dtype: prompt_embeds.dtype(),
        });
    }
    if opts.max_new_tokens == 0 {
        return Ok(Generation::default());
    }
    let logits = model.forward_embeds(prompt_embeds, cache)?;
    generate_from_logits(model, cache, &logits, context_ids, opts, on_token)
}

/// Continues generation from the logits of a prefill that already ran on `cache`.
///
/// `first_logits` is `(1, vocab)`, the output of [`Qwen2Decoder::forward_embeds`] on the prompt;
/// the caller times or inspects the prefill separately. Otherwise the same as [`generate`].
pub fn generate_from_logits(
    model: &Qwen2Decoder,
    cache: &mut KvCache,
    first_logits: &Tensor,
    context_ids: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation, LlmError> {
    let sampling = &opts.sampling;
    let mut chooser = Chooser::new(sampling)?;
    let mut out = Generation::default();
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut seen: Vec<u32> = context_ids.to_vec();
    let mut logits = first_logits.clone();
    loop {
        let mut row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
        apply_repetition_penalty(&mut row, sampling.repetition_penalty, &seen);
        out.margins.push(top_margin(&row));
        let next = chooser.choose(row)?;
        if opts.stop_ids.contains(&next) {
            out.stopped_on = Some(next);
            break;
        }
        out.tokens.push(next);
        seen.push(next);
        if !on_token(next) || out.tokens.len() >= opts.max_new_tokens {
            break;
        }
        let ids = Tensor::new(&[[next]], model.device())?;
        logits = model.forward_embeds(&model.embed_tokens(&ids)?, cache)?;
    }
    Ok(out)
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

/// Picks tokens from processed logits: candle's `LogitsProcessor` with the transformers
/// warper order.
struct Chooser {
    processor: LogitsProcessor,
    top_k: Option<usize>,
}

impl Chooser {
    fn new(p: &SamplingParams) -> Result<Self, LlmError> {
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
        })
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
        let mut chooser = Chooser::new(&SamplingParams::default()).unwrap();
        assert_eq!(chooser.choose(vec![0.0, 3.0, 1.0, 3.0, 3.0]).unwrap(), 1);
        assert_eq!(chooser.choose(vec![5.0, 5.0]).unwrap(), 0);
        // Greedy ignores top-k/top-p and a zero temperature means greedy.
        let mut chooser = Chooser::new(&SamplingParams {
            temperature: Some(0.0),
            top_k: Some(1),
            top_p: Some(0.1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(chooser.choose(vec![1.0, 2.0, 2.0]).unwrap(), 1);
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
        let mut chooser = Chooser::new(&SamplingParams {
            temperature: Some(1.5),
            top_k: Some(1),
            seed: 7,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..20 {
            assert_eq!(chooser.choose(vec![0.0, 0.5, 0.4, -1.0]).unwrap(), 1);
        }
    }

    #[test]
    fn top_p_renormalises_after_top_k() {
        // probs ~ [0.4, 0.3, 0.2, 0.1]; top_k=2 leaves [4/7, 3/7]; top_p=0.5 then keeps only
        // the first (transformers renormalises), while 0.5 of the unnormalised mass would
        // keep two.
        let logits: Vec<f32> = [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut chooser = Chooser::new(&SamplingParams {
            temperature: Some(1.0),
            top_k: Some(2),
            top_p: Some(0.5),
            seed: 1,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..50 {
            assert_eq!(chooser.choose(logits.clone()).unwrap(), 0);
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
            let mut chooser = Chooser::new(params).unwrap();
            (0..20)
                .map(|_| chooser.choose(logits.clone()).unwrap())
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
            let Err(err) = Chooser::new(&params) else {
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
