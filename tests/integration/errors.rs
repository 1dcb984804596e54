//! Bad input gets a one-line error, a `hint:` line and a non-zero exit; nothing panics.

use auris::checkpoint::ModelSource;
use auris::{Error, LoadOptions, Pipeline};
use candle_core::{DType, Device, Tensor};

use crate::common::{auris, copy_model, fixture, model_dir, run, Run};

fn caption(model: &std::path::Path, audio: &std::path::Path, extra: &[&str]) -> Run {
    run(auris()
        .args(["caption", "--max-new-tokens", "2", "--model"])
        .arg(model)
        .arg(audio)
        .args(extra))
}

fn assert_clean_failure(out: &Run, code: i32, needle: &str) {
    assert_eq!(
        out.code, code,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(out.stderr.contains("error:"), "{}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

fn assert_hint(out: &Run) {
    assert!(out.stderr.contains("hint:"), "no hint in: {}", out.stderr);
}

#[test]
fn missing_model_folder() {
    let out = caption(
        &fixture("no-such-model"),
        &fixture("audio/tone_440_16k.wav"),
        &[],
    );
    assert_clean_failure(&out, 1, "no such folder");
    assert_hint(&out);
}

#[test]
fn hub_id_not_cached_while_offline() {
    let home = std::env::temp_dir().join(format!("auris-empty-hf-home-{}", std::process::id()));
    let out = run(auris()
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &home)
        .args(["caption", "--model", "Qwen/Qwen2-Audio-7B-Instruct"])
        .arg(fixture("audio/tone_440_16k.wav")));
    assert_clean_failure(&out, 1, "not in the hub cache");
    assert!(out.stderr.contains("HF_HUB_OFFLINE"), "{}", out.stderr);
    assert_hint(&out);
}

#[test]
fn malformed_config() {
    let dir = copy_model("tiny-base", "badconfig");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let out = caption(&dir, &fixture("audio/tone_440_16k.wav"), &[]);
    assert_clean_failure(&out, 1, "config.json");
}

#[test]
fn config_value_errors_name_the_field() {
    let dir = copy_model("tiny-base", "badfield");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["text_config"]["num_attention_heads"] = serde_json::json!(3);
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let out = caption(&dir, &fixture("audio/tone_440_16k.wav"), &[]);
    assert_clean_failure(&out, 1, "num_attention_heads");
}

#[test]
fn audio_errors_name_the_file() {
    for (file, needle) in [
        ("bad/empty.wav", "empty.wav"),
        ("bad/truncated_header.wav", "truncated_header.wav"),
        ("bad/random_bytes.wav", "random_bytes.wav"),
        ("bad/text_renamed.mp3", "text_renamed.mp3"),
        ("bad/zero_samples.wav", "zero_samples.wav"),
        ("bad/nan_samples.wav", "nan_samples.wav"),
        ("tiny_2frames_16k.wav", "too short"),
        ("no_such_file.wav", "no_such_file.wav"),
    ] {
        let out = caption(
            &model_dir("tiny-base"),
            &fixture(&format!("audio/{file}")),
            &[],
        );
        assert_clean_failure(&out, 1, needle);
        assert_hint(&out);
        assert!(
            out.stdout.is_empty(),
            "{file}: partial output {}",
            out.stdout
        );
        // The file is named once, not once by the CLI and again by the error.
        let error = out.stderr.lines().find(|l| l.starts_with("error:"));
        let error = error.unwrap_or_default();
        assert_eq!(error.matches(needle).count(), 1, "{error}");
    }
}

#[test]
fn tagged_mp3_and_lying_extensions_are_captioned() {
    for file in [
        "dog_empty_id3v2.mp3",
        "flac_named.wav",
        "mp3_named.wav",
        "wav_named.mp3",
    ] {
        let out = caption(
            &model_dir("tiny-base"),
            &fixture(&format!("audio/edge/{file}")),
            &["--quiet"],
        );
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
    }
}

#[test]
fn raw_prompt_without_placeholder_is_a_usage_error() {
    let out = caption(
        &model_dir("tiny-base"),
        &fixture("audio/tone_440_16k.wav"),
        &["--raw-prompt", "no audio here"],
    );
    assert_clean_failure(&out, 2, "<|AUDIO|>");
    assert_hint(&out);
}

#[test]
fn more_placeholders_than_audio_files() {
    let out = caption(
        &model_dir("tiny-base"),
        &fixture("audio/tone_440_16k.wav"),
        &["--raw-prompt", "<|AUDIO|> and <|AUDIO|>"],
    );
    assert_clean_failure(&out, 1, "2 <|AUDIO|> placeholder(s) but 1 audio");
}

#[test]
fn invalid_flag_values_are_usage_errors() {
    for (args, needle) in [
        (vec!["--prune", "segmentwise", "--keep", "0"], "keep"),
        (vec!["--prune", "segmentwise", "--keep", "1.5"], "keep"),
        (
            vec!["--prune", "segmentwise", "--segments", "0"],
            "segments",
        ),
        (vec!["--prune", "nonsense"], "nonsense"),
        (vec!["--device", "tpu"], "tpu"),
        (vec!["--top-p", "0"], "top-p"),
        (vec!["--threads", "0"], "threads"),
    ] {
        let out = caption(
            &model_dir("tiny-base"),
            &fixture("audio/tone_440_16k.wav"),
            &args,
        );
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

/// A GPU the build or the machine lacks is a usage error with the way out, never a panic or a
/// silent fall back to the CPU. This binary is built without `cuda`/`metal` (the test suite's
/// build), or, if someone runs the suite with `--features cuda` on a machine with a GPU, the
/// device opens and the test has nothing to check for that device.
#[test]
fn unavailable_gpu_is_a_usage_error_with_a_hint() {
    for (device, built, missing_build, missing_device) in [
        (
            "cuda",
            cfg!(feature = "cuda"),
            "built without CUDA support",
            "no CUDA device found",
        ),
        (
            "cuda:1",
            cfg!(feature = "cuda"),
            "built without CUDA support",
            "no CUDA device found",
        ),
        (
            "metal",
            cfg!(feature = "metal"),
            "built without Metal support",
            "no Metal device found",
        ),
    ] {
        let out = caption(
            &model_dir("tiny-base"),
            &fixture("audio/tone_440_16k.wav"),
            &["--device", device],
        );
        if out.code == 0 {
            assert!(built, "--device {device} ran on a build without it");
            continue;
        }
        assert_eq!(out.code, 2, "--device {device}: {}", out.stderr);
        let needle = if built { missing_device } else { missing_build };
        assert!(out.stderr.contains(needle), "{device}: {}", out.stderr);
        assert!(out.stderr.contains("hint: "), "{device}: {}", out.stderr);
        if !built {
            assert!(out.stderr.contains("--features"), "{}", out.stderr);
        }
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

fn load(dir: &std::path::Path) -> Result<Pipeline, Error> {
    Pipeline::load(
        &ModelSource::Local(dir.to_path_buf()),
        &LoadOptions::default(),
    )
}

fn rewrite_weights(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

#[test]
fn every_checkpoint_tensor_is_used() {
    let dir = copy_model("tiny-base", "extra");
    rewrite_weights(&dir, |t| {
        t.insert(
            "audio_tower.layers.9.fc1.weight".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load(&dir).err().expect("an unused tensor must be reported");
    assert!(
        err.to_string().contains("audio_tower.layers.9.fc1.weight"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_model("tiny-base", "missing");
    rewrite_weights(&dir, |t| {
        t.remove("multi_modal_projector.linear.bias");
    });
    let err = load(&dir).err().expect("a missing tensor must be reported");
    assert!(
        err.to_string()
            .contains("multi_modal_projector.linear.bias"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let dir = copy_model("tiny-base", "shape");
    rewrite_weights(&dir, |t| {
        t.insert(
            "audio_tower.conv1.bias".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load(&dir).err().expect("a wrong shape must be reported");
    assert!(err.to_string().contains("audio_tower.conv1.bias"), "{err}");
}

#[test]
fn missing_shard_is_named() {
    let dir = copy_model("tiny-chat", "shard");
    std::fs::remove_file(dir.join("model-00002-of-00004.safetensors")).unwrap();
    let err = load(&dir).err().expect("a missing shard must be reported");
    assert!(
        err.to_string().contains("model-00002-of-00004.safetensors"),
        "{err}"
    );
}
