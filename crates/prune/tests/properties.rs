//! Property tests of the selection contract over random scores, policies and window sizes.

use auris_prune::{
    budget, global_indices, select, select_windows, Policy, PruneError, Remainder, Selection,
    Strategy, WindowInput,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as PropStrategy;

fn strategy() -> impl PropStrategy<Value = Strategy> {
    prop_oneof![
        Just(Strategy::None),
        (
            1usize..=24,
            prop_oneof![Just(Remainder::Spread), Just(Remainder::Drop)]
        )
            .prop_map(|(segments, remainder)| Strategy::Segmentwise {
                segments,
                remainder
            }),
        Just(Strategy::TopK),
        Just(Strategy::BottomK),
        any::<u64>().prop_map(|seed| Strategy::Random { seed }),
        Just(Strategy::Uniform),
        (0u32..100).prop_map(|p| Strategy::VisionZip {
            contextual_share: p as f32 / 100.0
        }),
    ]
}

fn keep() -> impl PropStrategy<Value = f32> {
    prop_oneof![Just(1.0f32), (1u32..=1000).prop_map(|m| m as f32 / 1000.0)]
}

/// Scores drawn from a few levels so ties are common, or from a wide range.
fn scores(max_n: usize) -> impl PropStrategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec((0u8..4).prop_map(f32::from), 1..=max_n),
        prop::collection::vec(-1.0e3f32..1.0e3, 1..=max_n),
    ]
}

/// Scores plus `(rows, d)` encoder output with small integer entries (zeros and ties included).
fn window(max_n: usize) -> impl PropStrategy<Value = (Vec<f32>, Vec<f32>, usize)> {
    (scores(max_n), 1usize..=4).prop_flat_map(|(scores, d)| {
        let n = scores.len();
        (
            Just(scores),
            prop::collection::vec((-3i8..=3).prop_map(f32::from), n * d),
            Just(d),
        )
    })
}

fn run(policy: &Policy, scores: &[f32], rows: &[f32], d: usize) -> Result<Selection, PruneError> {
    select(policy, scores, Some((rows, d)))
}

fn segment_bounds(n: usize, segments: usize) -> Vec<(usize, usize)> {
    (0..segments)
        .map(|s| (s * n / segments, (s + 1) * n / segments))
        .collect()
}

/// `a` outranks `b` for Top-K: higher score, or equal score and lower index.
fn outranks(scores: &[f32], a: usize, b: usize) -> bool {
    scores[a] > scores[b] || (scores[a] == scores[b] && a < b)
}

/// Indices best first by (score descending, index ascending).
fn top_order(scores: &[f32], range: std::ops::Range<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = range.collect();
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    order
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kept_count_is_the_budget(
        strategy in strategy(), keep in keep(), (scores, rows, d) in window(80)
    ) {
        let n = scores.len();
        let k = budget(n, keep);
        prop_assert!((1..=n).contains(&k));
        let policy = Policy { strategy, keep };
        let got = run(&policy, &scores, &rows, d);
        match strategy {
            Strategy::None => prop_assert_eq!(got.map(|s| s.len()), Ok(n)),
            Strategy::Segmentwise { segments, remainder: Remainder::Drop } => {
                if k / segments == 0 {
                    prop_assert_eq!(
                        got,
                        Err(PruneError::DropKeepsNothing { budget: k, segments })
                    );
                } else {
                    prop_assert_eq!(got.map(|s| s.len()), Ok(segments * (k / segments)));
                }
            }
            _ => prop_assert_eq!(got.map(|s| s.len()), Ok(k)),
        }
    }

    #[test]
    fn indices_are_sorted_unique_in_range(
        strategy in strategy(), keep in keep(), (scores, rows, d) in window(80)
    ) {
        let policy = Policy { strategy, keep };
        if let Ok(sel) = run(&policy, &scores, &rows, d) {
            prop_assert!(!sel.is_empty());
            prop_assert!(sel.indices.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(sel.indices.iter().all(|&i| i < scores.len()));
            match strategy {
                Strategy::VisionZip { .. } => {
                    prop_assert_eq!(sel.merged.map(|m| m.len()), Some(sel.indices.len() * d));
                }
                _ => prop_assert_eq!(sel.merged, None),
            }
        }
    }

    #[test]
    fn every_segment_gets_its_quota(
        segments in 1usize..=24,
        remainder in prop_oneof![Just(Remainder::Spread), Just(Remainder::Drop)],
        keep in keep(),
        scores in scores(120),
    ) {
        let n = scores.len();
        let k = budget(n, keep);
        let quota = k / segments;
        let policy = Policy { strategy: Strategy::Segmentwise { segments, remainder }, keep };
        match select(&policy, &scores, None) {
            Ok(sel) => {
                for (lo, hi) in segment_bounds(n, segments) {
                    let in_segment: Vec<usize> =
                        sel.indices.iter().copied().filter(|&i| lo <= i && i < hi).collect();
                    let want = quota.min(hi - lo);
                    if remainder == Remainder::Drop {
                        prop_assert_eq!(in_segment.len(), want);
                    } else {
                        prop_assert!(in_segment.len() >= want);
                    }
                    // The segment's own top `want` tokens are among the kept ones.
                    let order = top_order(&scores, lo..hi);
                    for i in &order[..want] {
                        prop_assert!(in_segment.contains(i));
                    }
                }
            }
            Err(err) => {
                prop_assert_eq!(remainder, Remainder::Drop);
                prop_assert_eq!(quota, 0);
                prop_assert_eq!(err, PruneError::DropKeepsNothing { budget: k, segments });
            }
        }
    }

    #[test]
    fn topk_and_bottomk_respect_ranking_and_ties(keep in keep(), scores in scores(80)) {
        let n = scores.len();
        for (strategy, sign) in [(Strategy::TopK, 1.0f32), (Strategy::BottomK, -1.0)] {
            let sel = select(&Policy { strategy, keep }, &scores, None);
            prop_assert!(sel.is_ok());
            let kept = sel.map(|s| s.indices).unwrap_or_default();
            let flipped: Vec<f32> = scores.iter().map(|s| sign * s).collect();
            for i in 0..n {
                if kept.contains(&i) {
                    continue;
                }
                for &j in &kept {
                    prop_assert!(outranks(&flipped, j, i), "{} kept over {}", j, i);
                }
            }
        }
    }

    #[test]
    fn equal_scores_keep_the_first_k(keep in keep(), n in 1usize..60, level in -5.0f32..5.0) {
        let scores = vec![level; n];
        let first_k: Vec<usize> = (0..budget(n, keep)).collect();
        for strategy in [Strategy::TopK, Strategy::BottomK] {
            let sel = select(&Policy { strategy, keep }, &scores, None);
            prop_assert_eq!(sel.map(|s| s.indices), Ok(first_k.clone()));
        }
    }

    #[test]
    fn uniform_follows_its_formula(keep in keep(), n in 1usize..200) {
        let k = budget(n, keep);
        let expected: Vec<usize> =
            (0..k).map(|i| ((i as f64 + 0.5) * n as f64 / k as f64).floor() as usize).collect();
        let sel = select(&Policy { strategy: Strategy::Uniform, keep }, &vec![0.0; n], None);
        prop_assert_eq!(sel.map(|s| s.indices), Ok(expected));
    }

    #[test]
    fn selection_is_deterministic(
        strategy in strategy(), keep in keep(), (scores, rows, d) in window(60)
    ) {
        let policy = Policy { strategy, keep };
        prop_assert_eq!(run(&policy, &scores, &rows, d), run(&policy, &scores, &rows, d));
    }

    #[test]
    fn keep_one_keeps_everything(strategy in strategy(), (scores, rows, d) in window(60)) {
        let n = scores.len();
        let policy = Policy { strategy, keep: 1.0 };
        let got = run(&policy, &scores, &rows, d);
        match strategy {
            // The literal paper budget S*floor(N/S) may fall short of N.
            Strategy::Segmentwise { remainder: Remainder::Drop, .. } => {}
            Strategy::VisionZip { .. } => {
                // Every non-dominant token is a target with a group of one: rows unchanged.
                prop_assert_eq!(
                    got,
                    Ok(Selection { indices: (0..n).collect(), merged: Some(rows.clone()) })
                );
            }
            _ => prop_assert_eq!(got.map(|s| s.indices), Ok((0..n).collect::<Vec<_>>())),
        }
    }

    #[test]
    fn visionzip_keeps_topk_dominants_and_preserves_row_mass(
        share in 0u32..100, keep in keep(), (scores, rows, d) in window(60)
    ) {
        let n = scores.len();
        let contextual_share = share as f32 / 100.0;
        let policy = Policy { strategy: Strategy::VisionZip { contextual_share }, keep };
        let sel = run(&policy, &scores, &rows, d);
        prop_assert!(sel.is_ok());
        let sel = sel.unwrap_or(Selection { indices: vec![], merged: None });
        let k = budget(n, keep);
        // C by Python's round (ties to even) on the decimal share.
        let c = ((share as f64 / 100.0) * k as f64).round_ties_even() as usize;
        let mut top = top_order(&scores, 0..n);
        top.truncate(k - c);
        for i in &top {
            prop_assert!(sel.indices.contains(i));
        }
        // Dominant rows are copied verbatim.
        let merged = sel.merged.unwrap_or_default();
        for (pos, &i) in sel.indices.iter().enumerate() {
            if top.contains(&i) {
                prop_assert_eq!(&merged[pos * d..(pos + 1) * d], &rows[i * d..(i + 1) * d]);
            }
        }
        // Every merged row is a mean of rows, so it lies within the column-wise range.
        for col in 0..d {
            let lo = (0..n).map(|i| rows[i * d + col]).fold(f32::INFINITY, f32::min);
            let hi = (0..n).map(|i| rows[i * d + col]).fold(f32::NEG_INFINITY, f32::max);
            for pos in 0..sel.indices.len() {
                let v = merged[pos * d + col];
                prop_assert!(lo - 1e-5 <= v && v <= hi + 1e-5);
            }
        }
    }

    #[test]
    fn windows_concatenate_per_window_selections(
        strategy in strategy(),
        keep in keep(),
        windows in prop::collection::vec(window(40), 1..4),
    ) {
        let policy = Policy { strategy, keep };
        let inputs: Vec<WindowInput<'_>> = windows
            .iter()
            .map(|(s, r, d)| WindowInput::with_vectors(s, r, *d))
            .collect();
        let lengths: Vec<usize> = windows.iter().map(|(s, _, _)| s.len()).collect();
        match select_windows(&policy, &inputs) {
            Ok(selections) => {
                prop_assert_eq!(selections.len(), windows.len());
                let mut expected = Vec::new();
                let mut offset = 0;
                for (w, ((s, r, d), sel)) in windows.iter().zip(&selections).enumerate() {
                    let mut own = policy;
                    if let Strategy::Random { seed } = strategy {
                        own.strategy = Strategy::Random { seed: seed.wrapping_add(w as u64) };
                    }
                    let alone = run(&own, s, r, *d);
                    prop_assert_eq!(Ok(sel), alone.as_ref());
                    expected.extend(sel.indices.iter().map(|i| i + offset));
                    offset += s.len();
                }
                let global = global_indices(&lengths, &selections);
                prop_assert_eq!(global.as_ref(), Ok(&expected));
                prop_assert!(expected.windows(2).all(|p| p[0] < p[1]));
            }
            Err(PruneError::Window { window, source }) => {
                let (s, r, d) = &windows[window];
                prop_assert!(run(&policy, s, r, *d).is_err());
                let is_drop = matches!(*source, PruneError::DropKeepsNothing { .. });
                prop_assert!(is_drop, "{}", source);
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }

    #[test]
    fn tiny_windows(
        strategy in strategy(), keep in keep(), n in 1usize..=3, d in 1usize..=2
    ) {
        let scores: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let rows = vec![1.0; n * d];
        let policy = Policy { strategy, keep };
        let got = run(&policy, &scores, &rows, d);
        match (strategy, got) {
            (Strategy::Segmentwise { remainder: Remainder::Drop, segments }, Err(err)) => {
                prop_assert_eq!(
                    err,
                    PruneError::DropKeepsNothing { budget: budget(n, keep), segments }
                );
            }
            (_, Ok(sel)) => {
                prop_assert!(!sel.is_empty());
                prop_assert!(sel.indices.iter().all(|&i| i < n));
            }
            (_, Err(err)) => prop_assert!(false, "unexpected error {}", err),
        }
    }
}
