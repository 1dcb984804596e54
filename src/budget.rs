//! The context budget: does the prompt an audio file produces fit the language model's
//! positions, and which keep ratio makes it fit.
//!
//! The prompt holds `audio + text` tokens and generation appends up to `max_new_tokens`; all
//! of them need a position below the text config's `max_position_embeddings` (the RoPE range
//! the model was trained for). The audio count is exact: each 30 s window yields
//! [`auris_audio::audio_token_count`] tokens of its valid mel frames, and the policy keeps
//! per window what [`auris_prune::select`] keeps for that many tokens.

use std::fmt;

use auris_prune::{Policy, Strategy};
use serde::Serialize;

use crate::Error;

/// What to do when the audio does not fit the context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextFit {
    /// Lower the keep ratio (pruning with segmentwise when the policy keeps every token) until
    /// the prompt fits; without it an overflow is an [`Error::ContextOverflow`].
    pub fit: bool,
    /// At most this many audio tokens go to the language model (the keep ratio is lowered
    /// to meet it, as with `fit`).
    pub max_audio_tokens: Option<usize>,
}

/// The numbers of one request's context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ContextUse {
    /// The model's `text_config.max_position_embeddings`.
    pub max_positions: usize,
    /// Audio tokens the encoder produces over all windows.
    pub audio_tokens: usize,
    /// Audio tokens the policy keeps.
    pub kept_audio_tokens: usize,
    /// Prompt tokens besides the audio (template, instruction, `<|audio_bos|>`/`<|audio_eos|>`).
    pub text_tokens: usize,
    /// Positions reserved for generation.
    pub max_new_tokens: usize,
    /// The keep ratio applied, as the decimal the `f32` prints as (0.45, not 0.4499999881).
    pub keep: f64,
    /// True when the keep ratio was lowered to fit.
    pub fitted: bool,
}

impl ContextUse {
    /// Positions the request needs at most.
    pub fn total(&self) -> usize {
        self.kept_audio_tokens + self.text_tokens + self.max_new_tokens
    }
}

/// A prompt that does not fit, with the ways out.
#[derive(Debug, Clone, PartialEq)]
pub struct Overflow {
    /// The numbers at the requested policy.
    pub usage: ContextUse,
    /// The cap on kept audio tokens ([`ContextFit::max_audio_tokens`]), when given.
    pub max_audio_tokens: Option<usize>,
    /// A policy that would fit, if any keep ratio does: the largest ratio with the fewest
    /// decimals (two to four).
    pub fits: Option<Fitting>,
}

/// A pruning policy that makes an overflowing prompt fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fitting {
    /// The policy: the requested strategy at a lower keep ratio, or segmentwise when the
    /// request kept every token.
    pub policy: Policy,
    /// True when `policy` prunes with another strategy than the request's (which kept every
    /// token).
    pub strategy_changed: bool,
}

impl Overflow {
    /// The overflow in one sentence, naming the audio-token cap as `cap_name`.
    pub fn describe(&self, cap_name: &str) -> String {
        let u = &self.usage;
        let mut text = format!(
            "the prompt does not fit the model's context: {} audio tokens (kept {} at keep {}) + {} text tokens + {} new tokens = {} positions, max_position_embeddings is {}",
            u.audio_tokens,
            u.kept_audio_tokens,
            u.keep,
            u.text_tokens,
            u.max_new_tokens,
            u.total(),
            u.max_positions
        );
        if let Some(n) = self.max_audio_tokens {
            text.push_str(&format!(" (and {cap_name} is {n})"));
        }
        if self.fits.is_none() {
            text.push_str("; no keep ratio fits (one token per 30 s window is already too many)");
        }
        text
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("the audio-token cap"))
    }
}

/// Audio tokens each window yields, from the windows' valid mel frames.
pub fn window_tokens(valid_frames: impl IntoIterator<Item = usize>) -> Vec<usize> {
    valid_frames
        .into_iter()
        .map(auris_audio::audio_token_count)
        .collect()
}

/// Tokens `policy` keeps over selections (windows, or whole inputs; see
/// [`crate::family::SelectionScope::selection_lengths`]) of `tokens` audio tokens each; `None`
/// when the policy keeps nothing in some selection (segmentwise with the remainder dropped and
/// `K < S`).
pub fn kept_tokens(tokens: &[usize], policy: &Policy) -> Option<usize> {
    let mut total = 0;
    let mut last: Option<(usize, usize)> = None;
    for &n in tokens {
        if n == 0 {
            continue;
        }
        let kept = match last {
            Some((m, k)) if m == n => k,
            _ => kept_in_window(n, policy)?,
        };
        last = Some((n, kept));
        total += kept;
    }
    Some(total)
}

fn kept_in_window(n: usize, policy: &Policy) -> Option<usize> {
    match policy.strategy {
        Strategy::None => Some(n),
        // VisionZip keeps its budget K (dominant plus merged contextual tokens) and needs
        // vectors to run; every other strategy is run on flat scores for its exact count.
        Strategy::VisionZip { .. } => Some(auris_prune::budget(n, policy.keep)),
        _ => auris_prune::select(policy, &vec![0.0; n], None)
            .ok()
            .map(|s| s.len()),
    }
}

/// Decimals of the keep ratios `--fit-context` chooses from (`k / 10^4`).
const FIT_DIGITS: u32 = 4;

/// The largest keep ratio of the form `k / 10^digits`, at most `ceiling`, whose kept count
/// is at most `cap`.
fn largest_keep(
    tokens: &[usize],
    strategy: Strategy,
    ceiling: f32,
    cap: usize,
    digits: u32,
) -> Option<f32> {
    let steps = 10u32.pow(digits);
    let keep_at = |k: u32| k as f32 / steps as f32;
    let fits = |k: u32| {
        let policy = Policy {
            strategy,
            keep: keep_at(k),
        };
        kept_tokens(tokens, &policy).is_some_and(|n| n <= cap)
    };
    let top = ((f64::from(ceiling) * f64::from(steps)).floor() as u32).clamp(1, steps);
    if !fits(1) {
        // Segmentwise with the remainder dropped can keep nothing at tiny ratios; the search
        // below needs a fitting lower end.
        return (2..=top).find(|&k| fits(k)).map(keep_at);
    }
    // The kept count grows with the ratio: find the last k that fits.
    let (mut lo, mut hi) = (1, top);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(keep_at(lo))
}

/// The policy a request runs with: `policy` when its prompt fits, else (with `fit.fit` or a
/// `max_audio_tokens`) the largest keep ratio that fits, or an [`Error::ContextOverflow`].
///
/// `tokens` are the audio tokens of each selection (each window, or each whole input under
/// [`crate::family::SelectionScope::WholeInput`]), `text_tokens` the prompt's other tokens.
pub fn plan(
    tokens: &[usize],
    text_tokens: usize,
    max_new_tokens: usize,
    max_positions: usize,
    policy: &Policy,
    fit: &ContextFit,
) -> Result<(Policy, ContextUse), Error> {
    let audio_tokens: usize = tokens.iter().sum();
    let usage_at = |policy: &Policy, fitted: bool| ContextUse {
        max_positions,
        audio_tokens,
        kept_audio_tokens: kept_tokens(tokens, policy).unwrap_or(0),
        text_tokens,
        max_new_tokens,
        keep: policy
            .keep
            .to_string()
            .parse()
            .unwrap_or(f64::from(policy.keep)),
        fitted,
    };
    let requested = usage_at(policy, false);
    // None when the text and the new tokens alone overflow: no keep ratio helps.
    let room = max_positions.checked_sub(text_tokens + max_new_tokens);
    let cap = room.map_or(0, |room| fit.max_audio_tokens.map_or(room, |n| n.min(room)));
    if room.is_some() && requested.kept_audio_tokens <= cap {
        return Ok((*policy, requested));
    }
    let (strategy, ceiling) = match policy.strategy {
        Strategy::None => (Strategy::default(), 1.0),
        s => (s, policy.keep),
    };
    let choose = fit.fit || fit.max_audio_tokens.is_some();
    let fitting = |digits| {
        room?;
        let keep = largest_keep(tokens, strategy, ceiling, cap, digits)?;
        Some(Policy { strategy, keep })
    };
    if choose {
        if let Some(fitted) = fitting(FIT_DIGITS) {
            return Ok((fitted, usage_at(&fitted, true)));
        }
    }
    let fits = (2..=FIT_DIGITS).find_map(fitting).map(|fitted| Fitting {
        policy: fitted,
        strategy_changed: fitted.strategy != policy.strategy,
    });
    Err(Error::ContextOverflow(Box::new(Overflow {
        usage: requested,
        max_audio_tokens: fit.max_audio_tokens,
        fits,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use auris_prune::Remainder;

    const FULL: usize = 750;

    fn none() -> Policy {
        Policy {
            strategy: Strategy::None,
            keep: 1.0,
        }
    }

    #[test]
    fn window_tokens_follow_the_encoder_lengths() {
        // 30 s = 3000 frames -> 750 tokens; 10 s = 1000 frames -> 250; 2 frames -> none.
        assert_eq!(window_tokens([3000, 1000, 2, 3]), [750, 250, 0, 1]);
    }

    #[test]
    fn a_prompt_that_fits_keeps_the_policy() {
        let (p, u) = plan(&[FULL], 20, 100, 8192, &none(), &ContextFit::default()).unwrap();
        assert_eq!(p, none());
        assert_eq!(
            (u.kept_audio_tokens, u.total(), u.fitted),
            (750, 870, false)
        );
    }

    #[test]
    fn an_overflow_names_the_numbers_and_a_keep_that_fits() {
        // Ten minutes: 20 windows, 15000 tokens, on an 8192-position model.
        let tokens = vec![FULL; 20];
        let err = plan(&tokens, 30, 256, 8192, &none(), &ContextFit::default()).unwrap_err();
        let Error::ContextOverflow(o) = &err else {
            panic!("{err}")
        };
        assert_eq!(o.usage.total(), 15000 + 30 + 256);
        // 7906 positions left: keep 0.52 gives 20 * 390 = 7800, 0.53 gives 20 * 398 = 7960.
        let fits = o.fits.expect("a keep ratio fits");
        assert_eq!(
            (
                fits.policy.strategy,
                fits.policy.keep,
                fits.strategy_changed
            ),
            (Strategy::default(), 0.52, true),
            "{err}"
        );
        let text = err.to_string();
        for part in [
            "15000 audio tokens",
            "30 text tokens",
            "256 new tokens",
            "8192",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn text_and_new_tokens_alone_can_overflow() {
        // No audio at all, but the reserved new tokens pass the model's positions.
        let err = plan(&[], 30, 10_000, 8192, &none(), &ContextFit::default()).unwrap_err();
        let Error::ContextOverflow(o) = &err else {
            panic!("{err}")
        };
        assert_eq!(o.fits, None);
        assert!(plan(&[], 30, 100, 8192, &none(), &ContextFit::default()).is_ok());
    }

    #[test]
    fn fit_context_chooses_the_largest_ratio_that_fits() {
        let tokens = vec![FULL; 20];
        let fit = ContextFit {
            fit: true,
            max_audio_tokens: None,
        };
        let (p, u) = plan(&tokens, 30, 256, 8192, &none(), &fit).unwrap();
        assert_eq!(p.strategy, Strategy::default());
        assert!(u.fitted && u.total() <= 8192, "{u:?}");
        let more = Policy {
            keep: p.keep + 1e-4,
            ..p
        };
        assert!(kept_tokens(&tokens, &more).unwrap() > 8192 - 286, "{p:?}");
        // A chosen strategy is kept, and the ratio never rises above the requested one.
        let topk = Policy {
            strategy: Strategy::TopK,
            keep: 0.1,
        };
        assert_eq!(plan(&tokens, 30, 256, 8192, &topk, &fit).unwrap().0, topk);
    }

    #[test]
    fn max_audio_tokens_caps_the_kept_count() {
        let fit = ContextFit {
            fit: false,
            max_audio_tokens: Some(100),
        };
        let (p, u) = plan(&[FULL, FULL, 250], 10, 10, 32768, &none(), &fit).unwrap();
        assert!(
            u.kept_audio_tokens <= 100 && u.kept_audio_tokens >= 95,
            "{u:?}"
        );
        assert!(p.keep < 0.06, "{p:?}");
    }

    #[test]
    fn nothing_fits_when_one_token_per_window_is_too_many() {
        let fit = ContextFit {
            fit: true,
            max_audio_tokens: None,
        };
        let err = plan(&vec![FULL; 200], 10, 10, 100, &none(), &fit).unwrap_err();
        assert!(err.to_string().contains("no keep ratio fits"), "{err}");
    }

    #[test]
    fn segmentwise_drop_counts_what_it_really_keeps() {
        let policy = Policy {
            strategy: Strategy::Segmentwise {
                segments: 10,
                remainder: Remainder::Drop,
            },
            keep: 0.1,
        };
        // K = 75 per window, 10 * floor(75 / 10) = 70 kept.
        assert_eq!(kept_tokens(&[FULL, FULL], &policy), Some(140));
        let tiny = Policy {
            keep: 0.001,
            ..policy
        };
        assert_eq!(kept_tokens(&[FULL], &tiny), None);
    }

    /// Over the whole input the budget counts one selection of the windows' sum: segmentwise
    /// with the remainder dropped keeps `S * floor(K / S)` of 1050, not of 750 and of 300.
    #[test]
    fn whole_input_counts_one_selection() {
        use crate::family::SelectionScope;
        let policy = Policy::new(
            Strategy::Segmentwise {
                segments: 16,
                remainder: Remainder::Drop,
            },
            0.25,
        )
        .unwrap();
        let windows = [750, 300];
        let count =
            |scope: SelectionScope| kept_tokens(&scope.selection_lengths(&windows), &policy);
        // K = 188 and 75 per window (176 + 64 kept); K = 263 over both (256 kept).
        assert_eq!(count(SelectionScope::PerWindow), Some(176 + 64));
        assert_eq!(count(SelectionScope::WholeInput), Some(256));
    }
}
