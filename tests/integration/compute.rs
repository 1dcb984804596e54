//! `--compute`: bf16 products on the tiny checkpoints against the f32 path, what `auto`
//! resolves to, and the combinations that are refused.
//!
//! bf16 rounds every product's inputs to 8 significant bits (a relative step of 2^-8), so the
//! stages move by a few of those steps relative to their largest value: measured on an AVX2
//! CPU, the encoder output by 0.3-0.8 %, the projected rows by 0.5-1.0 %, the logits by
//! 1.6-2.8 % of the f32 path's largest magnitude; [`REL`] (5 %) leaves room for another
//! summation order. The greedy tokens are identical on all four checkpoints.

use auris::checkpoint::ModelSource;
use auris::{ComputeChoice, LoadOptions, Pipeline};
use serde_json::Value;

use crate::common::{auris, fixture, max_abs_diff, model_dir, run, Case};
use crate::parity::{greedy_request, no_pruning};

/// Largest difference between bf16 and f32 compute, relative to the f32 stage's largest value.
const REL: f32 = 5e-2;

fn load(model: &str, compute: ComputeChoice) -> Pipeline {
    let opts = LoadOptions {
        compute,
        ..LoadOptions::default()
    };
    Pipeline::load(&ModelSource::Local(model_dir(model)), &opts)
        .unwrap_or_else(|e| panic!("loading {model}: {e}"))
}

/// Every tiny checkpoint (bf16, f16 and f32 on disk; Qwen2-Audio and Audio Flamingo 3) runs in
/// bf16: each stage is close to f32 and not equal to it, and the greedy tokens are those of f32.
#[test]
fn bf16_compute_is_close_to_f32_on_every_tiny_checkpoint() {
    for (model, case) in [
        ("tiny-chat", "caption_librivox"),
        ("tiny-base", "caption_long42"),
        ("tiny-af3", "caption_librivox"),
        ("tiny-af3-f32", "transcribe_librivox"),
    ] {
        let case = Case::load(model, case);
        let f32 = load(model, ComputeChoice::F32);
        let bf16 = load(model, ComputeChoice::Bf16);
        assert_eq!(f32.compute().name, "f32");
        assert_eq!(bf16.compute().name, "bf16");
        let run = |p: &Pipeline| {
            p.run(&greedy_request(p, &case, no_pruning()), &mut |_| true)
                .unwrap()
        };
        let (a, b) = (run(&f32), run(&bf16));
        let (ia, ib) = (a.inspection.unwrap(), b.inspection.unwrap());
        for (what, x, y) in [
            ("audio_embeds", &ib.audio_embeds, &ia.audio_embeds),
            ("projected", &ib.projected, &ia.projected),
            ("all_logits", &ib.all_logits, &ia.all_logits),
        ] {
            let (diff, scale) = max_abs_diff(x, y);
            eprintln!("{model} {what}: bf16 vs f32 max abs diff {diff:.3e}, max |f32| {scale:.3e}");
            assert!(
                diff <= REL * scale.max(1.0),
                "{model} {what}: {diff} vs {scale}"
            );
            assert!(diff > 0.0, "{model} {what}: bf16 changed nothing");
        }
        assert_eq!(b.output_token_ids, a.output_token_ids, "{model} greedy ids");
    }
}

fn caption(extra: &[&str]) -> (Value, String) {
    let out = crate::weights::caption(&model_dir("tiny-chat"), extra);
    (crate::weights::output(&out), out.stderr)
}

/// No bf16 kernel exists yet, so `auto` is f32 on every CPU and says why; the JSON names what
/// ran.
#[test]
fn auto_computes_in_f32_and_says_why() {
    let (auto, stderr) = caption(&[]);
    assert_eq!(auto["compute"], "f32");
    assert!(stderr.contains("auris: compute f32 (auto: "), "{stderr}");
    let (exact, _) = caption(&["--compute", "f32"]);
    assert_eq!(exact["output_token_ids"], auto["output_token_ids"]);
    let (bf16, stderr) = caption(&["--compute", "bf16", "--quant", "q8_0"]);
    assert_eq!(bf16["compute"], "bf16");
    assert!(stderr.contains("auris: compute bf16 (chosen)"), "{stderr}");
}

#[test]
fn bf16_compute_with_f32_or_f16_weights_is_a_usage_error() {
    for dtype in ["f32", "f16"] {
        let out = run(auris()
            .args(["caption", "--compute", "bf16", "--dtype", dtype, "--model"])
            .arg(model_dir("tiny-chat"))
            .arg(fixture("audio/librivox_0930_16k.wav")));
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("bf16 weights"), "{}", out.stderr);
    }
}
