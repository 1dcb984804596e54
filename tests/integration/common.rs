//! Fixture access shared by the tests.

use std::collections::HashMap;
use std::path::PathBuf;

use auris::checkpoint::ModelSource;
use auris::{ComputeChoice, LoadOptions, Pipeline};
use candle_core::{Device, Tensor};
use serde_json::Value;

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under `tests/fixtures/`.
pub(crate) fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// A model folder under `models/`.
pub(crate) fn model_dir(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// Loads a tiny model on the CPU in f32, products included (`--compute f32`: the reference
/// path on every CPU, whatever `auto` would pick).
pub(crate) fn load_model(name: &str) -> Pipeline {
    Pipeline::load(
        &ModelSource::Local(model_dir(name)),
        &LoadOptions {
            compute: ComputeChoice::F32,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A reference case: its JSON and its tensors.
pub(crate) struct Case {
    pub(crate) json: Value,
    pub(crate) tensors: HashMap<String, Tensor>,
}

impl Case {
    pub(crate) fn load(model: &str, case: &str) -> Self {
        let base = fixture(&format!("ref/{model}/{case}"));
        let text = std::fs::read_to_string(base.with_extension("json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        let tensors =
            candle_core::safetensors::load(base.with_extension("safetensors"), &Device::Cpu)
                .unwrap();
        Self { json, tensors }
    }

    /// The clip this case ran on.
    pub(crate) fn audio(&self) -> PathBuf {
        fixture(self.json["audio"].as_str().unwrap())
    }

    pub(crate) fn ids(&self, key: &str) -> Vec<u32> {
        json_ids(&self.json[key])
    }

    pub(crate) fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("no tensor {key}"))
    }
}

/// A JSON array of token ids.
pub(crate) fn json_ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array of ids: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest absolute difference and largest |reference| of two tensors of the same shape.
pub(crate) fn max_abs_diff(actual: &Tensor, expected: &Tensor) -> (f32, f32) {
    assert_eq!(actual.dims(), expected.dims(), "shape");
    let a = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = e.iter().map(|x| x.abs()).fold(0f32, f32::max);
    (diff, scale)
}

/// Asserts `actual` is within `rel` of `expected`, relative to the reference's largest value.
pub(crate) fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, rel: f32) {
    let (diff, scale) = max_abs_diff(actual, expected);
    eprintln!(
        "parity {what}: max abs diff {diff:.3e} (max |ref| {scale:.3e}, rel {:.3e})",
        diff / scale.max(1e-12)
    );
    assert!(
        diff <= rel * scale.max(1.0),
        "{what}: max abs diff {diff} exceeds {rel} x {scale}"
    );
}

/// Copies a model folder into a fresh temporary folder for tests that damage it.
pub(crate) fn copy_model(name: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("auris-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

/// The `auris` binary built for this test run.
pub(crate) fn auris() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_auris"));
    cmd.current_dir(root());
    cmd.env_remove("AURIS_MODEL");
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Output of a finished command.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn run(cmd: &mut std::process::Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
