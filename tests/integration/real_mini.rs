//! Opt-in real-weights parity on `models/real-mini` (whisper-base encoder, Qwen2.5-Coder-0.5B
//! decoder, random projector; see README "Real weights").
//!
//! Skipped unless `AURIS_REAL_MINI` names the checkpoint folder, so default CI never needs the
//! 1.3 GB of weights. `scripts/build_real_mini.sh` builds the checkpoint;
//! `scripts/check_real_parity.sh` computes the transformers reference (f32, eager) into
//! `bench/work/real-parity/ref/` (or `AURIS_REAL_MINI_REF`) and then runs this test, which checks
//! the in-process pipeline against it on the native 16 kHz LibriVox clips with the thresholds
//! the reference JSON carries (`checks`).

use std::path::PathBuf;

use auris::checkpoint::ModelSource;
use auris::pipeline::{PromptSpec, Request, Task};
use auris::{ComputeChoice, LoadOptions, Pipeline};
use auris_prune::{Policy, Strategy};
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::common::{json_ids, max_abs_diff, root};

fn resolve(path: std::ffi::OsString) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        root().join(p)
    }
}

/// The checkpoint and the reference folder named by `AURIS_REAL_MINI` (and
/// `AURIS_REAL_MINI_REF`).
fn setup() -> Option<(PathBuf, PathBuf)> {
    let model = std::env::var_os("AURIS_REAL_MINI").expect(
        "set AURIS_REAL_MINI=models/real-mini: scripts/build_real_mini.sh builds the checkpoint \
         and scripts/check_real_parity.sh computes the reference and runs this test",
    );
    let model = resolve(model);
    let refs = std::env::var_os("AURIS_REAL_MINI_REF")
        .map(resolve)
        .unwrap_or_else(|| root().join("bench/work/real-parity/ref"));
    assert!(
        model.join("config.json").is_file(),
        "AURIS_REAL_MINI={}: no config.json there; build it with scripts/build_real_mini.sh",
        model.display()
    );
    assert!(
        refs.is_dir(),
        "no transformers reference in {}: run scripts/check_real_parity.sh (it writes it)",
        refs.display()
    );
    Some((model, refs))
}

fn rel_diff(what: &str, ours: &Tensor, reference: &Tensor) -> f32 {
    let (diff, scale) = max_abs_diff(ours, reference);
    let rel = diff / scale.max(1e-12);
    eprintln!("real_mini {what}: max abs diff {diff:.3e} (max |ref| {scale:.3e}, rel {rel:.3e})");
    rel
}

#[test]
#[ignore = "opt-in: needs AURIS_REAL_MINI=models/real-mini (run scripts/check_real_parity.sh)"]
fn real_mini_matches_transformers_on_librivox() {
    let Some((model, refs)) = setup() else {
        return;
    };
    let opts = LoadOptions {
        compute: ComputeChoice::F32,
        ..LoadOptions::default()
    };
    let p = Pipeline::load(&ModelSource::Local(model.clone()), &opts)
        .unwrap_or_else(|e| panic!("loading {}: {e}", model.display()));
    assert!(p.is_chat(), "real-mini ships a chat template");
    let im_end = p.tokenizer().token_to_id("<|im_end|>").unwrap();
    let eot = p.tokenizer().token_to_id("<|endoftext|>").unwrap();
    assert_eq!(p.stop_ids(), &[im_end, eot]);

    let mut cases: Vec<PathBuf> = std::fs::read_dir(&refs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    let mut checked = 0;
    for json_path in cases {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        // Native 16 kHz WAV only: the other clips go through different resamplers and decoders
        // (check_real_parity.py covers them by running transformers on the engine's mel).
        if json["group"] != "speech" || json["resampled"].as_bool() != Some(false) {
            continue;
        }
        let name = json_path.file_stem().unwrap().to_string_lossy().to_string();
        let tensors =
            candle_core::safetensors::load(json_path.with_extension("safetensors"), &Device::Cpu)
                .unwrap();
        let checks = &json["checks"];
        let limit = |k: &str| checks[k].as_f64().unwrap() as f32;

        let mut generate = p.default_generate_options(32);
        generate.sampling.temperature = None;
        let request = Request {
            audio: root().join(json["clip"].as_str().unwrap()),
            prompt: PromptSpec::Raw(json["prompt"].as_str().unwrap().to_string()),
            policy: Policy {
                strategy: Strategy::None,
                keep: 1.0,
            },
            generate,
            task: Task::Inspect { generate: true },
            context: Default::default(),
        };
        let r = p.run(&request, &mut |_| true).unwrap();
        assert_eq!(
            r.prompt_token_ids,
            json_ids(&json["input_ids"]),
            "{name}: ids"
        );
        let ins = r.inspection.as_ref().unwrap();

        let (mel_diff, _) = max_abs_diff(&ins.input_features, &tensors["input_features"]);
        eprintln!("real_mini {name} mel: max abs diff {mel_diff:.3e}");
        assert!(mel_diff <= limit("mel_abs_16k"), "{name}: mel {mel_diff}");
        for (key, check) in [
            ("audio_embeds", "embeds_rel"),
            ("audio_scores", "scores_rel"),
            ("prompt_logits", "logits_rel"),
        ] {
            let rel = rel_diff(
                &format!("{name} {key}"),
                &ins_tensor(ins, key),
                &tensors[key],
            );
            assert!(
                rel <= limit(check),
                "{name}: {key} rel {rel} > {}",
                limit(check)
            );
        }

        // Greedy ids: identical, or diverging only at a near-tie of the reference.
        let mut expected = json_ids(&json["greedy_ids"]);
        if json["stopped_on_eos"].as_bool().unwrap() {
            let eos = expected.pop();
            assert_eq!(r.stopped_on, eos, "{name}: stop token");
        }
        let margins: Vec<f64> = json["greedy_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let ours = &r.output_token_ids;
        match (0..ours.len().max(expected.len())).find(|&i| ours.get(i) != expected.get(i)) {
            None => eprintln!("real_mini {name} greedy: {} ids identical", ours.len()),
            Some(i) => {
                let m = margins.get(i).copied().unwrap_or(f64::INFINITY);
                eprintln!(
                    "real_mini {name} greedy: diverges at step {i} (reference margin {m:.4})"
                );
                assert!(
                    m < f64::from(limit("near_tie")),
                    "{name}: greedy ids diverge at step {i} (margin {m}): {ours:?} vs {expected:?}"
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "only {checked} LibriVox references in {}",
        refs.display()
    );
}

fn ins_tensor(ins: &auris::pipeline::Inspection, key: &str) -> Tensor {
    match key {
        "audio_embeds" => ins.audio_embeds.clone(),
        "audio_scores" => ins.audio_scores.clone(),
        "prompt_logits" => ins.prompt_logits.clone(),
        other => panic!("no tensor {other}"),
    }
}
