//! The context budget: audio that would overflow `max_position_embeddings` is an error with
//! the numbers and a hint, or is pruned to fit with `--fit-context` / `--max-audio-tokens`.

use serde_json::Value;

use crate::common::{auris, copy_model, fixture, model_dir, run, Run};

/// A copy of tiny-chat whose text config allows `positions` positions.
pub(crate) fn short_context_model(positions: usize, tag: &str) -> std::path::PathBuf {
    let dir = copy_model("tiny-chat", tag);
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["text_config"]["max_position_embeddings"] = positions.into();
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

/// `auris caption` of the 42 s clip (30 s + 12 s windows: 750 + 300 = 1050 audio tokens).
fn caption_long(model: &std::path::Path, extra: &[&str]) -> Run {
    run(auris()
        .args(["caption", "--quiet", "--max-new-tokens", "8", "--model"])
        .arg(model)
        .arg(fixture("audio/long_42s_16k.wav"))
        .args(extra))
}

fn json_line(out: &Run) -> Value {
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

#[test]
fn overflowing_audio_is_an_error_with_the_numbers_and_a_hint() {
    let model = short_context_model(600, "ctx-overflow");
    let out = caption_long(&model, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for part in [
        "1050 audio tokens",
        "8 new tokens",
        "max_position_embeddings is 600",
    ] {
        assert!(out.stderr.contains(part), "{part:?} in {}", out.stderr);
    }
    assert!(
        out.stderr.contains("hint: --prune segmentwise --keep 0."),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--fit-context"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn fit_context_prunes_to_the_largest_keep_that_fits() {
    let model = short_context_model(600, "ctx-fit");
    let v = json_line(&caption_long(&model, &["--fit-context", "--json"]));
    let ctx = &v["context"];
    assert_eq!(ctx["fitted"], true, "{v}");
    assert_eq!(ctx["audio_tokens"], 1050);
    let kept = v["n_kept"].as_u64().unwrap();
    assert_eq!(ctx["kept_audio_tokens"].as_u64(), Some(kept));
    let prompt = v["prompt_token_ids"].as_array().unwrap().len() as u64;
    assert!(prompt + 8 <= 600, "{prompt} prompt tokens: {v}");
    // The ratio is the largest that fits: 0.0001 more would not.
    let keep = v["prune"]["keep"].as_f64().unwrap();
    assert_eq!(v["prune"]["strategy"], "segmentwise", "{v}");
    assert!(keep > 0.3 && keep < 0.6, "{v}");
    assert_eq!(ctx["keep"].as_f64(), Some(keep));
    // Tokens come from both windows (the second starts at token 750).
    let indices = v["kept_indices"].as_array().unwrap();
    assert!(indices.iter().any(|i| i.as_u64().unwrap() >= 750), "{v}");
    assert!(indices.iter().any(|i| i.as_u64().unwrap() < 750), "{v}");
}

#[test]
fn max_audio_tokens_caps_the_audio_and_keeps_a_fitting_request_as_is() {
    let model = model_dir("tiny-chat");
    let v = json_line(&caption_long(
        &model,
        &["--max-audio-tokens", "100", "--json"],
    ));
    let kept = v["n_kept"].as_u64().unwrap();
    assert!((90..=100).contains(&kept), "{v}");
    assert_eq!(v["prune"]["keep_requested"], 0.25);
    // A request that fits runs unchanged.
    let v = json_line(&caption_long(&model, &["--fit-context", "--json"]));
    assert_eq!(v["n_kept"], 1050, "{v}");
    assert_eq!(v["context"]["fitted"], false);
    assert_eq!(v["prune"], serde_json::json!({ "strategy": "none" }));
}
