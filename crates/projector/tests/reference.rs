//! The projector on the tiny checkpoints' own weights against transformers' output, from the
//! reference fixtures (`tests/fixtures/ref/<model>/<case>.safetensors`: `audio_embeds` in,
//! `projected` out; made by `scripts/make_fixtures.sh`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use auris_projector::{MultiModalProjector, ProjectorAct, ProjectorKind};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

const PREFIX: &str = "multi_modal_projector.";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `multi_modal_projector.*` tensor of the checkpoint in `models/<model>` (all shards),
/// names relative to that prefix.
fn projector_weights(model: &str) -> HashMap<String, Tensor> {
    let dir = repo().join("models").join(model);
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            for (name, t) in candle_core::safetensors::load(&path, &Device::Cpu).unwrap() {
                if let Some(rest) = name.strip_prefix(PREFIX) {
                    out.insert(rest.to_string(), t);
                }
            }
        }
    }
    out
}

fn reference(model: &str, case: &str) -> HashMap<String, Tensor> {
    let path = repo().join(format!("tests/fixtures/ref/{model}/{case}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn check(model: &str, case: &str, kind: ProjectorKind) {
    let weights = projector_weights(model);
    let names: Vec<&String> = weights.keys().collect();
    let first = match kind {
        ProjectorKind::Linear => "linear.weight",
        ProjectorKind::Mlp { .. } => "linear_1.weight",
    };
    let (out_dim, in_dim) = weights[first].dims2().unwrap();
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let p = MultiModalProjector::load_kind(kind, in_dim, out_dim, vb).unwrap();
    let refs = reference(model, case);
    let got = p.forward(&refs["audio_embeds"]).unwrap();
    let want = &refs["projected"];
    assert_eq!(got.dims(), want.dims(), "{model}/{case}");
    let err = (&got - want).unwrap().abs().unwrap().max_all().unwrap();
    let scale = want.abs().unwrap().max_all().unwrap();
    let (err, scale) = (
        err.to_scalar::<f32>().unwrap(),
        scale.to_scalar::<f32>().unwrap(),
    );
    assert!(
        err <= 1e-5 * scale.max(1.0),
        "{model}/{case}: max |diff| {err} (max |ref| {scale}); weights {names:?}"
    );
}

#[test]
fn linear_projector_matches_transformers_on_tiny_chat() {
    check("tiny-chat", "caption_librivox", ProjectorKind::Linear);
}

#[test]
fn mlp_projector_with_bias_matches_transformers_on_tiny_af3() {
    let kind = ProjectorKind::Mlp {
        act: ProjectorAct::Gelu,
        bias: true,
    };
    check("tiny-af3", "caption_librivox", kind);
    check("tiny-af3", "caption_long42", kind);
}

#[test]
fn mlp_projector_without_bias_matches_transformers_on_tiny_af3_f32() {
    let kind = ProjectorKind::Mlp {
        act: ProjectorAct::Gelu,
        bias: false,
    };
    check("tiny-af3-f32", "transcribe_librivox", kind);
}
