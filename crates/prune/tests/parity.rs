//! Parity with the Python reference selections in `scripts/make_fixtures.py`.
//!
//! The fixture `tests/fixtures/ref/tiny-chat/prune_seg25_librivox.{json,safetensors}` holds the
//! tiny-chat model's real audio scores and encoder output for one clip (N = 82, d = 64), and
//! the reference's kept indices for every deterministic strategy at keep 0.5, 0.25 and 0.1
//! (`random` is not comparable across implementations), plus VisionZip's merged rows.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;

use auris_prune::{select, Policy, PruneError, Remainder, Strategy, DEFAULT_SEGMENTS};
use safetensors::{Dtype, SafeTensors};

type Selections = BTreeMap<String, BTreeMap<String, Vec<usize>>>;

fn fixture(ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/ref/tiny-chat")
        .join(format!("prune_seg25_librivox.{ext}"))
}

/// A float32 tensor as `(values, shape)`.
fn f32_tensor(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<f32>, Vec<usize>), Box<dyn Error>> {
    let view = st.tensor(name)?;
    if view.dtype() != Dtype::F32 {
        return Err(format!("{name}: expected F32, got {:?}", view.dtype()).into());
    }
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((values, view.shape().to_vec()))
}

fn strategy_for(name: &str) -> Result<Strategy, Box<dyn Error>> {
    Ok(match name {
        "segmentwise_drop" => Strategy::Segmentwise {
            segments: DEFAULT_SEGMENTS,
            remainder: Remainder::Drop,
        },
        // The reference uses the defaults: S = 10 with the leftover spread, share 0.18.
        other => other.parse()?,
    })
}

#[test]
fn selections_match_the_python_reference() -> Result<(), Box<dyn Error>> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("json"))?)?;
    let selections: Selections = serde_json::from_value(
        doc.get("selections")
            .cloned()
            .ok_or("fixture has no `selections`")?,
    )?;
    let bytes = std::fs::read(fixture("safetensors"))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let (scores, _) = f32_tensor(&st, "audio_scores")?;
    let (embeds, shape) = f32_tensor(&st, "audio_embeds")?;
    let n = scores.len();
    let d = match shape.as_slice() {
        [rows, d] if *rows == n => *d,
        other => return Err(format!("audio_embeds shape {other:?}, expected [{n}, d]").into()),
    };

    let expected_names = [
        "bottomk",
        "segmentwise",
        "segmentwise_drop",
        "topk",
        "uniform",
        "visionzip",
    ];
    assert_eq!(
        selections.keys().map(String::as_str).collect::<Vec<_>>(),
        expected_names
    );
    let mut compared = 0;
    for (name, by_keep) in &selections {
        let strategy = strategy_for(name)?;
        for (keep, want) in by_keep {
            let policy = Policy {
                strategy,
                keep: keep.parse()?,
            };
            let got = select(&policy, &scores, Some((&embeds, d)));
            if name == "segmentwise_drop" && want.is_empty() {
                assert!(
                    matches!(got, Err(PruneError::DropKeepsNothing { .. })),
                    "{name} keep={keep}: reference keeps nothing, got {got:?}"
                );
                compared += 1;
                continue;
            }
            let got = got.map_err(|e| format!("{name} keep={keep}: {e}"))?;
            assert_eq!(&got.indices, want, "{name} keep={keep}");

            if let Some(merged) = &got.merged {
                let (rows, rows_shape) = f32_tensor(&st, &format!("visionzip_{keep}_rows"))?;
                assert_eq!(rows_shape, [want.len(), d], "{name} keep={keep} rows shape");
                for (at, (a, b)) in merged.iter().zip(&rows).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{name} keep={keep}: merged[{}][{}] = {a}, reference {b}",
                        at / d,
                        at % d
                    );
                }
            }
            compared += 1;
        }
    }
    assert_eq!(compared, expected_names.len() * 3);
    Ok(())
}
