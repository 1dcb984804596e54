//! The selection algorithms: one window's scores (and vectors) in, kept indices out.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{Policy, PruneError, Remainder, Strategy};

/// The tokens kept from one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Kept token indices: ascending, unique, each `< N`.
    pub indices: Vec<usize>,
    /// VisionZip only: `indices.len() × d` row-major rows to use instead of gathering the
    /// encoder output at `indices` (dominant rows copied, contextual targets merged).
    /// `None`: gather the rows at `indices`.
    pub merged: Option<Vec<f32>>,
}

impl Selection {
    /// Number of kept tokens.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether nothing is kept (never the case for a selection returned by [`select`]).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The token budget `K = clamp(floor(r * N + 0.5), 1, N)` for `N` tokens at keep ratio `r`.
///
/// `r` is taken as the decimal number the `f32` prints as (`0.1_f32` means 0.1, not
/// 0.100000001), and the arithmetic is done in `f64`, so budgets agree bit for bit with a
/// Python `math.floor(r * n + 0.5)` given the same decimal ratio. Returns 0 for `N = 0`
/// ([`select`] rejects that case). An out-of-range `keep` is not an error here: it clamps
/// (NaN gives 1).
pub fn budget(n: usize, keep: f32) -> usize {
    if n == 0 {
        return 0;
    }
    let raw = (decimal_f64(keep) * n as f64 + 0.5).floor();
    // `as` saturates (NaN -> 0), then the clamp gives the documented range.
    (raw as usize).clamp(1, n)
}

/// Selects the tokens one window keeps under `policy`.
///
/// `scores` holds the `N` valid audio-token scores; `vectors`, if given, is the encoder
/// output as `(rows, d)` with `rows` an `N × d` row-major buffer. Only `VisionZip` uses the
/// vectors (and requires them); when given to another strategy only their shape is checked.
///
/// # Errors
/// An invalid policy, `N = 0`, a NaN score, a vector buffer of the wrong shape, missing or
/// non-finite vectors for `VisionZip`, or `Segmentwise` with `Remainder::Drop` keeping nothing.
pub fn select(
    policy: &Policy,
    scores: &[f32],
    vectors: Option<(&[f32], usize)>,
) -> Result<Selection, PruneError> {
    policy.validate()?;
    let n = scores.len();
    if n == 0 {
        return Err(PruneError::EmptyWindow);
    }
    if let Some(position) = scores.iter().position(|s| s.is_nan()) {
        return Err(PruneError::NanScore { position });
    }
    if let Some((rows, d)) = vectors {
        check_shape(n, rows, d)?;
    }
    let k = budget(n, policy.keep);
    let gathered = |indices: Vec<usize>| Selection {
        indices,
        merged: None,
    };
    Ok(match policy.strategy {
        Strategy::None => gathered((0..n).collect()),
        Strategy::Segmentwise {
            segments,
            remainder,
        } => gathered(segmentwise(scores, k, segments, remainder)?),
        Strategy::TopK => gathered(sorted(ranking(scores, Order::Highest)[..k].to_vec())),
        Strategy::BottomK => gathered(sorted(ranking(scores, Order::Lowest)[..k].to_vec())),
        Strategy::Random { seed } => gathered(random(n, k, seed)),
        Strategy::Uniform => gathered(uniform(n, k)),
        Strategy::VisionZip { contextual_share } => {
            let (rows, d) = vectors.ok_or(PruneError::MissingVectors {
                strategy: policy.strategy.name(),
            })?;
            check_finite(rows, d)?;
            visionzip(scores, rows, d, k, contextual_share)
        }
    })
}

fn check_shape(n: usize, rows: &[f32], d: usize) -> Result<(), PruneError> {
    if d == 0 {
        return Err(PruneError::ZeroDimension);
    }
    let expected = n.saturating_mul(d);
    if rows.len() != expected || n.checked_mul(d).is_none() {
        return Err(PruneError::VectorShape {
            n,
            d,
            expected,
            actual: rows.len(),
        });
    }
    Ok(())
}

fn check_finite(rows: &[f32], d: usize) -> Result<(), PruneError> {
    match rows.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(PruneError::NonFiniteVector {
            row: at / d,
            column: at % d,
            value: rows[at],
        }),
        None => Ok(()),
    }
}

/// The `f64` whose shortest decimal form is the same as `x`'s, so `0.1_f32` becomes `0.1`.
///
/// Rust prints floats as the shortest decimal that round-trips, so this recovers the ratio
/// a user typed (and a Python reference would hold as a double).
fn decimal_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

#[derive(Clone, Copy)]
enum Order {
    Highest,
    Lowest,
}

/// All indices, best first; equal scores (including `-0.0` and `0.0`) go to the lower index.
///
/// Scores must be NaN-free (checked by [`select`]), which makes `partial_cmp` total.
fn ranking(scores: &[f32], order: Order) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        let by_score = scores[a].partial_cmp(&scores[b]).unwrap_or(Ordering::Equal);
        let by_score = match order {
            Order::Highest => by_score.reverse(),
            Order::Lowest => by_score,
        };
        by_score.then(a.cmp(&b))
    });
    idx
}

fn sorted(mut indices: Vec<usize>) -> Vec<usize> {
    indices.sort_unstable();
    indices
}

fn segmentwise(
    scores: &[f32],
    k: usize,
    segments: usize,
    remainder: Remainder,
) -> Result<Vec<usize>, PruneError> {
    let n = scores.len();
    let quota = k / segments;
    if quota == 0 && remainder == Remainder::Drop {
        return Err(PruneError::DropKeepsNothing {
            budget: k,
            segments,
        });
    }
    let rank = ranking(scores, Order::Highest);
    let mut kept = vec![false; n];
    let mut count = 0;
    // quota >= 1 implies segments <= k <= n, so this loop is bounded by n even for huge S.
    if quota > 0 {
        let mut taken = vec![0usize; segments];
        // Walking the global ranking visits each segment's tokens in that segment's own
        // (score desc, index asc) order, so the first `quota` hits per segment are its top.
        for &i in &rank {
            // Segment of token i: the largest s with floor(s*n/S) <= i, i.e. s*n < (i+1)*S.
            let s = (((i as u128 + 1) * segments as u128 - 1) / n as u128) as usize;
            if taken[s] < quota {
                taken[s] += 1;
                kept[i] = true;
                count += 1;
            }
        }
    }
    if remainder == Remainder::Spread {
        for &i in &rank {
            if count >= k {
                break;
            }
            if !kept[i] {
                kept[i] = true;
                count += 1;
            }
        }
    }
    Ok((0..n).filter(|&i| kept[i]).collect())
}

fn random(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    sorted(rand::seq::index::sample(&mut rng, n, k).into_vec())
}

/// `floor((i + 0.5) * n / k)` for `i` in `0..k`, in exact integer arithmetic.
fn uniform(n: usize, k: usize) -> Vec<usize> {
    (0..k)
        .map(|i| ((2 * i as u128 + 1) * n as u128 / (2 * k as u128)) as usize)
        .collect()
}

/// Python's `round`: to nearest, ties to even.
fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Number of VisionZip contextual tokens `C = round(share * K)`, ties to even.
pub(crate) fn contextual_count(k: usize, share: f32) -> usize {
    let c = round_half_even(decimal_f64(share) * k as f64);
    (c as usize).min(k)
}

fn visionzip(scores: &[f32], rows: &[f32], d: usize, k: usize, share: f32) -> Selection {
    let n = scores.len();
    let c = contextual_count(k, share);
    let rank = ranking(scores, Order::Highest);
    let mut dominant = vec![false; n];
    for &i in &rank[..k - c] {
        dominant[i] = true;
    }
    let row = |i: usize| &rows[i * d..(i + 1) * d];

    // Non-dominant tokens in index order; M >= C because K - C <= N - C.
    let rest: Vec<usize> = (0..n).filter(|&i| !dominant[i]).collect();
    let m = rest.len();
    let targets: Vec<usize> = (0..c)
        .map(|j| rest[((2 * j as u128 + 1) * m as u128 / (2 * c as u128)) as usize])
        .collect();

    // Group sums start with the target itself.
    let mut sums: Vec<Vec<f64>> = targets
        .iter()
        .map(|&t| row(t).iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut counts = vec![1usize; c];
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let target_norms: Vec<f64> = targets.iter().map(|&t| norm(row(t))).collect();
    let mut is_target = vec![false; n];
    for &t in &targets {
        is_target[t] = true;
    }
    if c > 0 {
        for &i in rest.iter().filter(|&&i| !is_target[i]) {
            let v = row(i);
            let v_norm = norm(v);
            let mut best = 0;
            let mut best_sim = f64::NEG_INFINITY;
            for (j, &t) in targets.iter().enumerate() {
                let denom = v_norm * target_norms[j];
                let sim = if denom == 0.0 {
                    0.0
                } else {
                    let dot: f64 = v
                        .iter()
                        .zip(row(t))
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    dot / denom
                };
                // Strictly greater: ties stay with the lower target.
                if sim > best_sim {
                    best = j;
                    best_sim = sim;
                }
            }
            for (acc, &x) in sums[best].iter_mut().zip(v) {
                *acc += f64::from(x);
            }
            counts[best] += 1;
        }
    }

    let mut indices: Vec<usize> = (0..n).filter(|&i| dominant[i] || is_target[i]).collect();
    indices.sort_unstable();
    let mut merged = Vec::with_capacity(indices.len() * d);
    let mut next_target = 0;
    for &i in &indices {
        if is_target[i] {
            // Targets are in ascending index order, as are `indices`.
            let count = counts[next_target] as f64;
            merged.extend(sums[next_target].iter().map(|&s| (s / count) as f32));
            next_target += 1;
        } else {
            merged.extend_from_slice(row(i));
        }
    }
    Selection {
        indices,
        merged: Some(merged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_f64_recovers_typed_ratio() {
        assert_eq!(decimal_f64(0.1), 0.1);
        assert_eq!(decimal_f64(0.18), 0.18);
        assert_eq!(decimal_f64(1.0), 1.0);
    }

    #[test]
    fn round_half_even_matches_python() {
        // Python: round(0.5) == 0, round(1.5) == 2, round(2.5) == 2, round(0.18 * 25) == 4.
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        // 0.18 * 25 == 4.5 -> 4 (half away from zero would give 5); 0.18 * 75 == 13.5 -> 14.
        assert_eq!(contextual_count(25, 0.18), 4);
        assert_eq!(contextual_count(75, 0.18), 14);
        assert_eq!(contextual_count(5, 0.5), 2);
        assert_eq!(contextual_count(375, 0.18), 68);
        assert_eq!(contextual_count(188, 0.18), 34);
        assert_eq!(contextual_count(10, 0.0), 0);
    }

    fn segment_start(s: usize, n: usize, segments: usize) -> usize {
        s * n / segments
    }

    #[test]
    fn segment_of_token_matches_bounds() {
        for n in 1..40 {
            for segments in 1..50 {
                let quota_free = segmentwise(&vec![1.0; n], n, segments, Remainder::Drop);
                if n / segments == 0 {
                    assert!(quota_free.is_err());
                    continue;
                }
                // With all scores equal and K = N, every segment keeps floor(N/S) from its start.
                let kept = quota_free.unwrap_or_default();
                let q = n / segments;
                let expected: Vec<usize> = (0..segments)
                    .flat_map(|s| {
                        let lo = segment_start(s, n, segments);
                        lo..lo + q
                    })
                    .collect();
                assert_eq!(kept, expected, "n={n} segments={segments}");
            }
        }
    }

    #[test]
    fn ranking_treats_signed_zeros_as_equal() {
        assert_eq!(ranking(&[-0.0, 0.0], Order::Highest), vec![0, 1]);
        assert_eq!(ranking(&[0.0, -0.0], Order::Lowest), vec![0, 1]);
    }
}
