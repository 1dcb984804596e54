//! Hand-worked selections for every strategy, and the typed errors for bad values.

use auris_prune::{
    budget, global_indices, select, select_windows, Policy, PruneError, Remainder, Selection,
    Strategy, WindowInput, STRATEGY_NAMES,
};

/// Three segments of four tokens when `S = 3`: [0,4) [4,8) [8,12).
const SCORES12: [f32; 12] = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.1, 0.1, 0.5, 0.4, 0.6, 0.0];

fn indices(strategy: Strategy, keep: f32, scores: &[f32]) -> Vec<usize> {
    match select(&Policy { strategy, keep }, scores, None) {
        Ok(selection) => {
            assert_eq!(selection.merged, None);
            selection.indices
        }
        Err(err) => panic!("{strategy} keep={keep}: {err}"),
    }
}

fn segmentwise(segments: usize, remainder: Remainder) -> Strategy {
    Strategy::Segmentwise {
        segments,
        remainder,
    }
}

#[test]
fn budget_rounds_half_up_and_clamps() {
    assert_eq!(budget(750, 1.0), 750);
    assert_eq!(budget(750, 0.5), 375);
    assert_eq!(budget(750, 0.25), 188); // 187.5 + 0.5
    assert_eq!(budget(750, 0.1), 75);
    assert_eq!(budget(5, 0.1), 1); // 0.5 + 0.5, with 0.1 read as the decimal 0.1
    assert_eq!(budget(3, 0.5), 2);
    assert_eq!(budget(10, 0.01), 1); // floor(0.6) = 0, clamped up
    assert_eq!(budget(12, 0.55), 7); // 6.6 + 0.5
    assert_eq!(budget(0, 0.5), 0);
    assert_eq!(budget(4, f32::NAN), 1);
    assert_eq!(budget(4, 7.0), 4);
}

#[test]
fn segmentwise_spread_gives_leftover_to_global_best() {
    // K = 7, S = 3: two per segment -> {0,1} {5,4} {10,8}; the leftover slot goes to 2 (0.7).
    assert_eq!(
        indices(segmentwise(3, Remainder::Spread), 0.55, &SCORES12),
        vec![0, 1, 2, 4, 5, 8, 10]
    );
}

#[test]
fn segmentwise_drop_keeps_s_times_floor() {
    assert_eq!(
        indices(segmentwise(3, Remainder::Drop), 0.55, &SCORES12),
        vec![0, 1, 4, 5, 8, 10]
    );
}

#[test]
fn segmentwise_with_k_below_s() {
    // K = 2 < S = 3: no per-segment quota, so spread is the global top 2.
    assert_eq!(
        indices(segmentwise(3, Remainder::Spread), 0.2, &SCORES12),
        vec![0, 1]
    );
    let err = select(
        &Policy {
            strategy: segmentwise(3, Remainder::Drop),
            keep: 0.2,
        },
        &SCORES12,
        None,
    );
    assert_eq!(
        err,
        Err(PruneError::DropKeepsNothing {
            budget: 2,
            segments: 3
        })
    );
}

#[test]
fn segmentwise_more_segments_than_tokens() {
    assert_eq!(
        indices(segmentwise(10, Remainder::Spread), 0.5, &[0.1, 0.3, 0.2]),
        vec![1, 2]
    );
}

#[test]
fn segmentwise_ties_go_to_lower_index_inside_a_segment() {
    // S = 2 over 6 tokens, K = 2: segment [0,3) and [3,6) each keep their first tie.
    assert_eq!(
        indices(segmentwise(2, Remainder::Spread), 0.34, &[1.0; 6]),
        vec![0, 3]
    );
}

#[test]
fn default_segmentwise_on_twenty_tokens() {
    // S = 10 segments of 2; K = 13: the better of each pair (1, 2, 4, 7, 9, 10, 13, 15, 17,
    // 18), then the three best of the rest: 0.8 (5), 0.6 (8), 0.55 (16).
    let scores = [
        0.5, 0.95, 0.2, 0.1, 0.9, 0.8, 0.3, 0.4, 0.6, 0.85, 0.7, 0.05, 0.15, 0.25, 0.35, 0.45,
        0.55, 0.65, 0.75, 0.01,
    ];
    let strategy: Strategy = "segmentwise".parse().unwrap_or(Strategy::TopK);
    assert_eq!(
        strategy,
        Strategy::Segmentwise {
            segments: 10,
            remainder: Remainder::Spread
        }
    );
    assert_eq!(budget(20, 0.65), 13);
    assert_eq!(
        indices(strategy, 0.65, &scores),
        vec![1, 2, 4, 5, 7, 8, 9, 10, 13, 15, 16, 17, 18]
    );
    // Global Top-K takes 0 and 14 instead of 2 and 13, leaving segments 1 and 6 empty.
    assert_eq!(
        indices(Strategy::TopK, 0.65, &scores),
        vec![0, 1, 4, 5, 7, 8, 9, 10, 14, 15, 16, 17, 18]
    );
}

#[test]
fn topk_and_bottomk() {
    // K = 7.
    assert_eq!(
        indices(Strategy::TopK, 0.55, &SCORES12),
        vec![0, 1, 2, 5, 8, 9, 10]
    );
    assert_eq!(
        indices(Strategy::BottomK, 0.55, &SCORES12),
        vec![3, 4, 5, 6, 7, 9, 11]
    );
    // K = 3: the 0.1 tie at 3, 6, 7 is cut; the lower indices win.
    assert_eq!(indices(Strategy::BottomK, 0.25, &SCORES12), vec![3, 6, 11]);
    assert_eq!(indices(Strategy::TopK, 0.5, &[2.0; 6]), vec![0, 1, 2]);
}

#[test]
fn uniform_strides() {
    // N = 12, K = 5: floor(1.2), floor(3.6), floor(6.0), floor(8.4), floor(10.8).
    assert_eq!(
        indices(Strategy::Uniform, 0.4, &SCORES12),
        vec![1, 3, 6, 8, 10]
    );
    assert_eq!(indices(Strategy::Uniform, 1.0, &[0.0; 4]), vec![0, 1, 2, 3]);
    assert_eq!(indices(Strategy::Uniform, 0.2, &[0.0; 5]), vec![2]);
}

#[test]
fn none_keeps_everything() {
    assert_eq!(
        indices(Strategy::None, 0.1, &SCORES12),
        (0..12).collect::<Vec<_>>()
    );
}

#[test]
fn random_is_seeded() {
    let a = indices(Strategy::Random { seed: 7 }, 0.5, &SCORES12);
    let b = indices(Strategy::Random { seed: 7 }, 0.5, &SCORES12);
    assert_eq!(a, b);
    assert_eq!(a.len(), 6);
    assert!(a.windows(2).all(|w| w[0] < w[1]));
}

/// N = 10, K = 5, share 0.4: C = round(2.0) = 2 contextual, 3 dominant.
#[test]
fn visionzip_merges_groups_by_cosine() {
    let scores = [0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.05, 0.15, 0.25, 0.35];
    #[rustfmt::skip]
    let rows: [f32; 20] = [
        3.0, 4.0,   // 0 dominant
        1.0, 0.0,   // 1 -> target 3 (cos 1 vs 0)
        5.0, 6.0,   // 2 dominant
        1.0, 0.0,   // 3 target A
        2.0, 1.0,   // 4 -> A (0.894 vs 0.447)
        7.0, 8.0,   // 5 dominant
        0.0, 0.0,   // 6 zero norm: similarity 0 to both, tie -> A
        -1.0, 3.0,  // 7 -> B (-0.316 vs 0.949)
        0.0, 1.0,   // 8 target B
        1.0, 1.0,   // 9 tie 0.707 -> A
    ];
    // Dominant: 0, 2, 5. Rest (M = 7): [1, 3, 4, 6, 7, 8, 9]; targets at list positions
    // floor(0.5 * 7 / 2) = 1 -> index 3 and floor(1.5 * 7 / 2) = 5 -> index 8.
    // A = mean(rows 3, 1, 4, 6, 9) = (5, 2) / 5; B = mean(rows 8, 7) = (-1, 4) / 2.
    let policy = Policy {
        strategy: Strategy::VisionZip {
            contextual_share: 0.4,
        },
        keep: 0.5,
    };
    let got = select(&policy, &scores, Some((&rows, 2)));
    let expected = Selection {
        indices: vec![0, 2, 3, 5, 8],
        merged: Some(vec![3.0, 4.0, 5.0, 6.0, 1.0, 0.4, 7.0, 8.0, -0.5, 2.0]),
    };
    assert_eq!(got, Ok(expected));
}

/// N = 20, K = 10, default share 0.18: C = round(1.8) = 2, 8 dominant.
#[test]
fn visionzip_default_share() {
    let scores: Vec<f32> = (0..20)
        .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
        .collect();
    // Rows: token i is (i, 1).
    let rows: Vec<f32> = (0..20).flat_map(|i| [i as f32, 1.0]).collect();
    let strategy: Strategy = "visionzip".parse().unwrap_or(Strategy::TopK);
    let got = select(
        &Policy {
            strategy,
            keep: 0.5,
        },
        &scores,
        Some((&rows, 2)),
    );
    // Dominant: even indices 0..=14 (ties -> lower). Rest (M = 12), in index order:
    // [1, 3, 5, 7, 9, 11, 13, 15, 16, 17, 18, 19]; targets at list positions
    // floor(0.5 * 12 / 2) = 3 -> index 7 and floor(1.5 * 12 / 2) = 9 -> index 17.
    // Each other token (i, 1) joins the target with the larger cosine.
    let cos = |a: f64, b: f64| (a * b + 1.0) / ((a * a + 1.0).sqrt() * (b * b + 1.0).sqrt());
    let rest = [1usize, 3, 5, 9, 11, 13, 15, 16, 18, 19];
    let mut a = vec![7usize];
    let mut b = vec![17usize];
    for &i in &rest {
        if cos(i as f64, 7.0) >= cos(i as f64, 17.0) {
            a.push(i);
        } else {
            b.push(i);
        }
    }
    let mean = |g: &[usize]| {
        let x = g.iter().sum::<usize>() as f64 / g.len() as f64;
        [x as f32, 1.0]
    };
    let mut merged = Vec::new();
    for i in [0usize, 2, 4, 6, 7, 8, 10, 12, 14, 17] {
        match i {
            7 => merged.extend(mean(&a)),
            17 => merged.extend(mean(&b)),
            _ => merged.extend([i as f32, 1.0]),
        }
    }
    assert_eq!(
        got,
        Ok(Selection {
            indices: vec![0, 2, 4, 6, 7, 8, 10, 12, 14, 17],
            merged: Some(merged),
        })
    );
}

#[test]
fn visionzip_with_zero_share_is_topk() {
    let rows = vec![1.0; 12];
    let policy = Policy {
        strategy: Strategy::VisionZip {
            contextual_share: 0.0,
        },
        keep: 0.55,
    };
    let got = select(&policy, &SCORES12, Some((&rows, 1)));
    assert_eq!(
        got.map(|s| s.indices),
        Ok(indices(Strategy::TopK, 0.55, &SCORES12))
    );
}

#[test]
fn visionzip_needs_vectors() {
    let policy = Policy {
        strategy: "visionzip".parse().unwrap_or(Strategy::TopK),
        keep: 0.5,
    };
    assert_eq!(
        select(&policy, &SCORES12, None),
        Err(PruneError::MissingVectors {
            strategy: "visionzip"
        })
    );
    let mut rows = vec![0.5; 24];
    rows[7] = f32::NAN;
    let err = select(&policy, &SCORES12, Some((&rows, 2)));
    assert!(matches!(
        err,
        Err(PruneError::NonFiniteVector {
            row: 3,
            column: 1,
            ..
        })
    ));
}

#[test]
fn vector_shape_is_checked() {
    let policy = Policy {
        strategy: Strategy::TopK,
        keep: 0.5,
    };
    let err = select(&policy, &SCORES12, Some((&[0.0; 23], 2)));
    assert_eq!(
        err,
        Err(PruneError::VectorShape {
            n: 12,
            d: 2,
            expected: 24,
            actual: 23
        })
    );
    assert_eq!(
        select(&policy, &SCORES12, Some((&[], 0))),
        Err(PruneError::ZeroDimension)
    );
}

fn message(err: PruneError) -> String {
    err.to_string()
}

#[test]
fn bad_keep_values_are_typed_errors() {
    for keep in [0.0, 1.5, -0.25, f32::NAN, f32::INFINITY] {
        let policy = Policy {
            strategy: Strategy::TopK,
            keep,
        };
        let err = policy.validate().map_err(message);
        assert!(
            matches!(&err, Err(m) if m.contains("keep ratio") && m.contains(&keep.to_string())),
            "{keep}: {err:?}"
        );
        assert!(matches!(
            select(&policy, &SCORES12, None),
            Err(PruneError::InvalidKeep { .. })
        ));
    }
    assert_eq!(
        Policy::new(Strategy::TopK, 0.0),
        Err(PruneError::InvalidKeep { value: 0.0 })
    );
    assert!(Policy::new(Strategy::TopK, 1.0).is_ok());
}

#[test]
fn zero_segments_is_a_typed_error() {
    let policy = Policy {
        strategy: segmentwise(0, Remainder::Spread),
        keep: 0.5,
    };
    assert_eq!(
        policy.validate(),
        Err(PruneError::InvalidSegments { value: 0 })
    );
    assert!(policy
        .validate()
        .map_err(message)
        .is_err_and(|m| m.contains("segments") && m.contains('0')));
}

#[test]
fn bad_contextual_share_is_a_typed_error() {
    for share in [1.0, -0.1, f32::NAN] {
        let policy = Policy {
            strategy: Strategy::VisionZip {
                contextual_share: share,
            },
            keep: 0.5,
        };
        assert!(policy
            .validate()
            .map_err(message)
            .is_err_and(|m| m.contains("contextual_share") && m.contains(&share.to_string())));
    }
}

#[test]
fn strategy_names_round_trip() {
    for name in STRATEGY_NAMES {
        let parsed: Result<Strategy, _> = name.parse();
        assert_eq!(parsed.map(|s| s.name()), Ok(name));
    }
    assert_eq!(
        "random".parse::<Strategy>(),
        Ok(Strategy::Random { seed: 0 })
    );
    let err = "segmentwize".parse::<Strategy>().map_err(message);
    assert!(
        matches!(&err, Err(m) if m.contains("segmentwize")
            && STRATEGY_NAMES.iter().all(|n| m.contains(n))),
        "{err:?}"
    );
    assert_eq!("drop".parse::<Remainder>(), Ok(Remainder::Drop));
    assert!("keep".parse::<Remainder>().is_err());
}

#[test]
fn empty_and_nan_scores() {
    let policy = Policy {
        strategy: Strategy::None,
        keep: 1.0,
    };
    assert_eq!(select(&policy, &[], None), Err(PruneError::EmptyWindow));
    let err = select(&policy, &[0.1, 0.2, f32::NAN, f32::NAN], None);
    assert_eq!(err, Err(PruneError::NanScore { position: 2 }));
    assert!(err.map_err(message).is_err_and(|m| m.contains('2')));
}

#[test]
fn windows_are_pruned_on_their_own_then_offset() {
    let policy = Policy {
        strategy: Strategy::TopK,
        keep: 0.5,
    };
    let first = [0.1, 0.9, 0.5, 0.3];
    let second = [0.7, 0.2];
    let windows = [WindowInput::new(&first), WindowInput::new(&second)];
    let selections = select_windows(&policy, &windows);
    let selections = match selections {
        Ok(s) => s,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(selections[0].indices, vec![1, 2]);
    assert_eq!(selections[1].indices, vec![0]);
    assert_eq!(global_indices(&[4, 2], &selections), Ok(vec![1, 2, 4]));
    assert_eq!(
        global_indices(&[4], &selections),
        Err(PruneError::WindowCountMismatch {
            lengths: 1,
            selections: 2
        })
    );
    assert_eq!(
        global_indices(&[4, 0], &selections),
        Err(PruneError::IndexOutOfRange {
            window: 1,
            index: 0,
            len: 0
        })
    );
    let bad = [WindowInput::new(&first), WindowInput::new(&[])];
    assert_eq!(
        select_windows(&policy, &bad),
        Err(PruneError::Window {
            window: 1,
            source: Box::new(PruneError::EmptyWindow)
        })
    );
}
