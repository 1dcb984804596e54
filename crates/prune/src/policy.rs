//! What to keep: the strategy, its parameters and the keep ratio.

use std::fmt;
use std::str::FromStr;

use crate::PruneError;

/// Segment count `S` used by the paper's main experiments, and by `"segmentwise"`.
pub const DEFAULT_SEGMENTS: usize = 10;

/// VisionZip's contextual share of the budget (≈ 0.18 "as in the original"), used by `"visionzip"`.
pub const DEFAULT_CONTEXTUAL_SHARE: f32 = 0.18;

/// Seed used by `"random"` when none is given.
pub const DEFAULT_SEED: u64 = 0;

/// Checks a keep ratio on its own: it must lie in `(0, 1]` (NaN fails).
pub fn validate_keep(keep: f32) -> Result<(), PruneError> {
    if keep > 0.0 && keep <= 1.0 {
        Ok(())
    } else {
        Err(PruneError::InvalidKeep { value: keep })
    }
}

/// Every name [`Strategy::from_str`] accepts, in the order errors list them.
pub const STRATEGY_NAMES: [&str; 7] = [
    "none",
    "segmentwise",
    "topk",
    "bottomk",
    "random",
    "uniform",
    "visionzip",
];

/// How a token-selection strategy picks the `K` kept tokens of one window.
///
/// The exact definitions are in the [crate docs](crate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// Keep all `N` tokens (no pruning; the keep ratio is ignored).
    None,
    /// Segmentwise Top-K (the paper's method): `floor(K/S)` best tokens per segment.
    Segmentwise {
        /// Number of equal temporal segments `S` (`>= 1`; `S > N` gives empty segments).
        segments: usize,
        /// What happens to the `K - S*floor(K/S)` leftover slots.
        remainder: Remainder,
    },
    /// The `K` highest scores over the whole window.
    TopK,
    /// The `K` lowest scores (an ablation showing the scores carry information).
    BottomK,
    /// `K` tokens drawn uniformly without replacement (reproducible within auris only).
    Random {
        /// Seed for `StdRng::seed_from_u64`.
        seed: u64,
    },
    /// `K` evenly strided tokens, `floor((i + 0.5) * N / K)`.
    Uniform,
    /// VisionZip: dominant tokens by score plus contextual tokens merged by cosine similarity.
    VisionZip {
        /// Share of the budget given to contextual tokens, in `[0, 1)`; `C = round(share * K)`.
        contextual_share: f32,
    },
}

impl Strategy {
    /// The strategy's name as [`FromStr`] accepts it, e.g. `"segmentwise"`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Segmentwise { .. } => "segmentwise",
            Strategy::TopK => "topk",
            Strategy::BottomK => "bottomk",
            Strategy::Random { .. } => "random",
            Strategy::Uniform => "uniform",
            Strategy::VisionZip { .. } => "visionzip",
        }
    }

    /// Checks the strategy's own parameters; errors name the parameter and value.
    pub fn validate(&self) -> Result<(), PruneError> {
        match *self {
            Strategy::Segmentwise { segments: 0, .. } => {
                Err(PruneError::InvalidSegments { value: 0 })
            }
            Strategy::VisionZip { contextual_share } if !(0.0..1.0).contains(&contextual_share) => {
                Err(PruneError::InvalidContextualShare {
                    value: contextual_share,
                })
            }
            _ => Ok(()),
        }
    }
}

impl Default for Strategy {
    /// Segmentwise Top-K with `S = 10` and the leftover spread to the global best.
    fn default() -> Self {
        Strategy::Segmentwise {
            segments: DEFAULT_SEGMENTS,
            remainder: Remainder::Spread,
        }
    }
}

impl FromStr for Strategy {
    type Err = PruneError;

    /// Parses one of [`STRATEGY_NAMES`] into the strategy with its default parameters
    /// ([`DEFAULT_SEGMENTS`] with [`Remainder::Spread`], [`DEFAULT_SEED`],
    /// [`DEFAULT_CONTEXTUAL_SHARE`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Strategy::None,
            "segmentwise" => Strategy::default(),
            "topk" => Strategy::TopK,
            "bottomk" => Strategy::BottomK,
            "random" => Strategy::Random { seed: DEFAULT_SEED },
            "uniform" => Strategy::Uniform,
            "visionzip" => Strategy::VisionZip {
                contextual_share: DEFAULT_CONTEXTUAL_SHARE,
            },
            _ => return Err(PruneError::UnknownStrategy { name: s.to_owned() }),
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `Segmentwise` does with the `K - S*floor(K/S)` slots the per-segment quotas leave over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Remainder {
    /// Give them to the highest-scoring tokens not yet kept, over the whole window,
    /// so exactly `K` tokens are kept.
    #[default]
    Spread,
    /// Drop them, keeping the paper's literal `S*floor(K/S)` tokens (an error if that is 0).
    Drop,
}

impl Remainder {
    /// The name [`FromStr`] accepts: `"spread"` or `"drop"`.
    pub fn name(&self) -> &'static str {
        match self {
            Remainder::Spread => "spread",
            Remainder::Drop => "drop",
        }
    }
}

impl FromStr for Remainder {
    type Err = String;

    /// Parses `"spread"` or `"drop"`; the error message lists both.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spread" => Ok(Remainder::Spread),
            "drop" => Ok(Remainder::Drop),
            _ => Err(format!(
                "unknown segmentwise remainder {s:?}; valid names: spread, drop"
            )),
        }
    }
}

impl fmt::Display for Remainder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy plus the keep ratio `r`: everything [`select`](crate::select) needs besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// How the kept tokens are chosen.
    pub strategy: Strategy,
    /// Keep ratio `r` in `(0, 1]`; the budget is [`budget(N, r)`](crate::budget).
    pub keep: f32,
}

impl Policy {
    /// Builds a policy and [validates](Policy::validate) it.
    pub fn new(strategy: Strategy, keep: f32) -> Result<Self, PruneError> {
        let policy = Policy { strategy, keep };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks `keep` in `(0, 1]`, `segments >= 1` and `contextual_share` in `[0, 1)`.
    ///
    /// NaN fails every range check. The keep ratio is checked for every strategy, `None`
    /// included, so a policy is valid or not independently of the strategy chosen.
    pub fn validate(&self) -> Result<(), PruneError> {
        validate_keep(self.keep)?;
        self.strategy.validate()
    }
}
