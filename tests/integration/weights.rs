//! Weight storage options end to end: `--quant`, `--dtype` on the CPU, and the memory check
//! that refuses a model too big for the machine before reading any weight.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{auris, copy_model, fixture, model_dir, run, Run};

/// `auris caption --json --greedy --max-new-tokens 4` of a LibriVox clip on `model`.
pub(crate) fn caption(model: &Path, extra: &[&str]) -> Run {
    run(auris()
        .args([
            "caption",
            "--json",
            "--greedy",
            "--max-new-tokens",
            "4",
            "--model",
        ])
        .arg(model)
        .args(extra)
        .arg(fixture("audio/librivox_0930_16k.wav")))
}

/// The JSON output of a run that succeeded.
pub(crate) fn output(out: &Run) -> Value {
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

#[test]
fn every_weight_mode_captions() {
    let model = model_dir("tiny-chat");
    for flags in [
        &["--dtype", "f32"][..],
        &[],
        &["--dtype", "bf16"],
        &["--dtype", "f16"],
        &["--quant", "q8_0"],
        &["--quant", "q4_0"],
        &["--quant", "q4_k"],
        &["--no-memory-check"],
    ] {
        let v = output(&caption(&model, flags));
        let ids = v["output_token_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 4, "{flags:?}: {v}");
    }
}

#[test]
fn checkpoint_precision_gives_the_f32_tokens() {
    // tiny-chat is bf16 on disk: keeping it so and computing in f32 is the f32 model on the
    // same values, up to summation order.
    let model = model_dir("tiny-chat");
    let f32 = output(&caption(&model, &["--dtype", "f32"]));
    let auto = output(&caption(&model, &[]));
    assert_eq!(f32["output_token_ids"], auto["output_token_ids"]);
}

#[test]
fn quant_with_dtype_or_on_a_gpu_is_a_usage_error() {
    let model = model_dir("tiny-chat");
    let out = caption(&model, &["--quant", "q8_0", "--dtype", "bf16"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("leave --dtype at auto"),
        "{}",
        out.stderr
    );
    let out = caption(&model, &["--quant", "q5_k"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// A checkpoint whose one language-model weight is 2^39 bf16 values (1 TiB), as a sparse file:
/// no disk space, and nothing is read when the check refuses it.
fn giant_checkpoint() -> PathBuf {
    let dir = copy_model("tiny-chat", "giant");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let name = "language_model.model.layers.0.mlp.up_proj.weight";
    let (rows, cols) = (1u64 << 19, 1u64 << 20);
    let bytes = rows * cols * 2;
    let header = serde_json::json!({
        name: {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [0, bytes]}
    })
    .to_string();
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let shard = "model-00001-of-00001.safetensors";
    let mut data = (header.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(&header);
    std::fs::write(dir.join(shard), &data).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(shard))
        .unwrap();
    file.set_len(data.len() as u64 + bytes).unwrap();
    let index = serde_json::json!({"weight_map": {name: shard}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn a_model_too_big_for_memory_is_refused_before_loading() {
    let dir = giant_checkpoint();
    let out = caption(&dir, &["--quant", "q4_k"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let first = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    // 2^39 weights: 309.2 GB in q4_k, plus the tensor widened to f32 while it is quantised.
    let gb: f64 = first
        .split("needs about ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(gb > 309.2, "{first}");
    assert!(first.contains("GB with --quant q4_k"), "{first}");
    assert!(first.contains("GB are available"), "{first}");
    assert!(
        out.stderr.contains("hint: no weight mode fits")
            && out.stderr.contains("--no-memory-check"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}
