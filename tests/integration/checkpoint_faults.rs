//! A damaged checkpoint is an error naming the file and the tensor, never a panic or a model
//! that silently loads wrong weights. Each test damages a copy of the sharded tiny-chat.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use auris::checkpoint::ModelSource;
use auris::{Error, LoadOptions, Pipeline};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::common::copy_model;

fn load(dir: &Path) -> Result<Pipeline, Error> {
    Pipeline::load(
        &ModelSource::Local(dir.to_path_buf()),
        &LoadOptions::default(),
    )
}

fn load_error(dir: &Path) -> String {
    match load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_names(err: &str, parts: &[&str]) {
    for part in parts {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

/// The shard of tiny-chat's index that holds `tensor`.
fn shard_of(dir: &Path, tensor: &str) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    let index: Value = serde_json::from_str(&text).unwrap();
    dir.join(index["weight_map"][tensor].as_str().unwrap())
}

fn rewrite_shard(path: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

const BIAS: &str = "multi_modal_projector.linear.bias";

#[test]
fn truncated_shard_is_named() {
    let dir = copy_model("tiny-chat", "fault-truncated");
    let shard = shard_of(&dir, "language_model.model.embed_tokens.weight");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let name = shard.file_name().unwrap().to_str().unwrap();
    assert_names(
        &load_error(&dir),
        &[name, "truncated", &bytes.len().to_string()],
    );
}

#[test]
fn index_naming_a_tensor_twice_is_rejected() {
    let dir = copy_model("tiny-chat", "fault-index-twice");
    let path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // serde_json would keep the last of two equal keys; the raw text repeats one.
    let twice = text.replacen(
        "\"weight_map\": {",
        "\"weight_map\": {\"audio_tower.conv1.bias\": \"model-00002-of-00004.safetensors\", ",
        1,
    );
    assert_ne!(twice, text, "the index layout changed");
    std::fs::write(&path, twice).unwrap();
    assert_names(
        &load_error(&dir),
        &[
            "model.safetensors.index.json",
            "audio_tower.conv1.bias",
            "twice",
        ],
    );
}

#[test]
fn tensor_stored_in_two_shards_is_rejected() {
    let dir = copy_model("tiny-chat", "fault-two-shards");
    let home = shard_of(&dir, BIAS);
    let copy = candle_core::safetensors::load(&home, &Device::Cpu).unwrap()[BIAS].clone();
    let other = shard_of(&dir, "language_model.model.embed_tokens.weight");
    assert_ne!(home, other);
    rewrite_shard(&other, |t| {
        t.insert(BIAS.into(), copy);
    });
    let err = load_error(&dir);
    let names = [home, other].map(|p| p.file_name().unwrap().to_str().unwrap().to_string());
    assert_names(&err, &[BIAS, &names[0], &names[1]]);
}

#[test]
fn tensor_of_the_wrong_dtype_or_shape_is_named_with_its_file() {
    let dir = copy_model("tiny-chat", "fault-dtype");
    let shard = shard_of(&dir, BIAS);
    let n = candle_core::safetensors::load(&shard, &Device::Cpu).unwrap()[BIAS]
        .dim(0)
        .unwrap();
    rewrite_shard(&shard, |t| {
        t.insert(
            BIAS.into(),
            Tensor::zeros(n, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    let name = shard.file_name().unwrap().to_str().unwrap();
    assert_names(&load_error(&dir), &[BIAS, name, "I64"]);

    rewrite_shard(&shard, |t| {
        t.insert(
            BIAS.into(),
            Tensor::zeros(n + 1, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_names(&load_error(&dir), &[BIAS, name, "shape"]);
}

#[test]
fn tokenizer_without_the_audio_tokens_is_named() {
    let dir = copy_model("tiny-chat", "fault-tokenizer");
    let path = dir.join("tokenizer.json");
    let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let added = tok["added_tokens"].as_array_mut().unwrap();
    added.retain(|t| t["content"] != "<|AUDIO|>");
    std::fs::write(&path, tok.to_string()).unwrap();
    assert_names(
        &load_error(&dir),
        &["tokenizer.json", "<|AUDIO|>", "audio special tokens"],
    );
}

#[test]
fn index_placing_a_tensor_in_the_wrong_shard_is_named() {
    let dir = copy_model("tiny-chat", "fault-index-wrong-shard");
    let home = shard_of(&dir, BIAS);
    let other = shard_of(&dir, "language_model.model.embed_tokens.weight");
    assert_ne!(home, other);
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let path = dir.join("model.safetensors.index.json");
    let write_index = |tensor: &str, shard: &str| {
        let mut index: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        index["weight_map"][tensor] = Value::from(shard);
        std::fs::write(&path, index.to_string()).unwrap();
    };
    write_index(BIAS, &name(&other));
    assert_names(
        &load_error(&dir),
        &[
            "model.safetensors.index.json",
            BIAS,
            &name(&other),
            &name(&home),
        ],
    );
    // A tensor the index names that no shard stores.
    write_index(BIAS, &name(&home));
    write_index("audio_tower.no_such.weight", &name(&home));
    assert_names(
        &load_error(&dir),
        &[
            "model.safetensors.index.json",
            "audio_tower.no_such.weight",
            &name(&home),
            "does not store it",
        ],
    );
}
