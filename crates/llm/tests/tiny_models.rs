//! Decoder-only parity on the checked-in tiny checkpoints (`models/tiny-*`) against the
//! transformers outputs in `tests/fixtures/ref/` (f32, eager attention), made by
//! `scripts/make_fixtures.sh`. The prompt embeddings are rebuilt from the fixture's
//! `input_ids` and its `projected` audio rows, so only the language model is under test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use auris_llm::{generate, GenerateOptions, Generation, Qwen2Config, Qwen2Decoder, SamplingParams};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every tensor of a checkpoint directory (single file or sharded).
fn checkpoint(dir: &Path) -> HashMap<String, Tensor> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let index: Value = serde_json::from_str(&std::fs::read_to_string(index).unwrap()).unwrap();
        let mut files: Vec<String> = index["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        files.sort();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    files
        .iter()
        .flat_map(|f| candle_core::safetensors::load(f, &Device::Cpu).unwrap())
        .collect()
}

struct Fixture {
    model: Qwen2Decoder,
    config: Value,
    case: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture(model: &str, case: &str) -> Fixture {
    let dir = root().join("models").join(model);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg: Qwen2Config = serde_json::from_value(config["text_config"].clone()).unwrap();
    let weights = checkpoint(&dir);
    let language: Vec<&String> = weights
        .keys()
        .filter(|k| k.starts_with("language_model."))
        .collect();
    // Weight coverage: everything we read exists; everything stored is read (a tied head may
    // also be stored, as a copy that transformers ignores).
    for name in Qwen2Decoder::tensor_names(&cfg) {
        assert!(
            weights.contains_key(&format!("language_model.{name}")),
            "{name}"
        );
    }
    let read = Qwen2Decoder::tensor_names(&cfg);
    for name in language {
        let rel = &name["language_model.".len()..];
        let ok =
            read.iter().any(|r| r == rel) || (cfg.tie_word_embeddings && rel == "lm_head.weight");
        assert!(ok, "{name} is never read");
    }
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let decoder = Qwen2Decoder::load(&cfg, vb.pp("language_model")).unwrap();
    let ref_dir = root().join("tests/fixtures/ref").join(model);
    let case_json: Value = serde_json::from_str(
        &std::fs::read_to_string(ref_dir.join(format!("{case}.json"))).unwrap(),
    )
    .unwrap();
    let tensors =
        candle_core::safetensors::load(ref_dir.join(format!("{case}.safetensors")), &Device::Cpu)
            .unwrap();
    Fixture {
        model: decoder,
        config,
        case: case_json,
        tensors,
    }
}

fn generation_config(model: &str) -> Value {
    let path = root()
        .join("models")
        .join(model)
        .join("generation_config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `embed_tokens(input_ids)` with the audio span replaced by the projected rows.
fn prompt_embeds(f: &Fixture) -> (Vec<u32>, Tensor) {
    let input_ids = ids(&f.case["input_ids"]);
    let span = ids(&f.case["audio_token_span"]);
    let (start, end) = (span[0] as usize, span[1] as usize);
    let ids_t = Tensor::new(input_ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let text = f.model.embed_tokens(&ids_t).unwrap();
    let projected = f.tensors["projected"].unsqueeze(0).unwrap();
    assert_eq!(projected.dim(1).unwrap(), end - start);
    let n = input_ids.len();
    let embeds = Tensor::cat(
        &[
            &text.narrow(1, 0, start).unwrap(),
            &projected,
            &text.narrow(1, end, n - end).unwrap(),
        ],
        1,
    )
    .unwrap();
    (input_ids, embeds)
}

/// Greedy generation after `embeds` with the case's `generation` settings (max new tokens,
/// repetition penalty), stopping on `stop_ids`.
fn greedy(
    f: &Fixture,
    embeds: &Tensor,
    input_ids: &[u32],
    generation: &Value,
    stop_ids: Vec<u32>,
) -> Generation {
    let opts = GenerateOptions {
        max_new_tokens: generation["max_new_tokens"].as_u64().unwrap() as usize,
        stop_ids,
        sampling: SamplingParams {
            repetition_penalty: generation["repetition_penalty"].as_f64().unwrap_or(1.0) as f32,
            ..Default::default()
        },
    };
    generate(
        &f.model,
        &mut f.model.new_cache(),
        embeds,
        input_ids,
        &opts,
        &mut |_| true,
    )
    .unwrap()
}

fn check_greedy(model: &str, case: &str) {
    let f = fixture(model, case);
    let (input_ids, embeds) = prompt_embeds(&f);

    let logits = f
        .model
        .forward_embeds(&embeds, &mut f.model.new_cache())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let expect = &f.tensors["prompt_logits"];
    let diff = (logits - expect)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff < 1e-4,
        "{model}/{case}: prompt logits differ by {diff}"
    );

    let generation = &f.case["generation"];
    let out = greedy(
        &f,
        &embeds,
        &input_ids,
        generation,
        ids(&f.case["eos_token_ids"]),
    );
    assert_eq!(out.tokens, ids(&f.case["greedy_ids"]), "{model}/{case}");
    for (a, b) in out.margins.iter().zip(floats(&f.case["greedy_margins"])) {
        assert!(
            (*a as f64 - b).abs() < 1e-3,
            "{model}/{case}: margin {a} vs {b}"
        );
    }
}

#[test]
fn tiny_chat_greedy_matches_transformers() {
    check_greedy("tiny-chat", "caption_librivox");
}

#[test]
fn tiny_base_greedy_matches_transformers() {
    check_greedy("tiny-base", "caption_librivox");
}

#[test]
fn tiny_chat_choice_logprobs_match_transformers() {
    let f = fixture("tiny-chat", "ask_mc_dog");
    let (_, embeds) = prompt_embeds(&f);
    let mut cache = f.model.new_cache();
    let prompt_last = f.model.forward_embeds(&embeds, &mut cache).unwrap();
    let prompt_len = cache.len();
    for choice in f.case["choice_logprobs"].as_array().unwrap() {
        cache.truncate(prompt_len);
        let toks = ids(&choice["ids"]);
        let t = Tensor::new(toks.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let all = f
            .model
            .forward_embeds_all(&f.model.embed_tokens(&t).unwrap(), &mut cache)
            .unwrap();
        // Position i of the continuation predicts token i + 1; the prompt predicts token 0.
        let preds = Tensor::cat(&[&prompt_last.unsqueeze(1).unwrap(), &all], 1)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let logp = candle_nn::ops::log_softmax(&preds, D::Minus1).unwrap();
        let logp: Vec<Vec<f32>> = logp.to_vec2().unwrap();
        let ours: Vec<f64> = toks
            .iter()
            .enumerate()
            .map(|(i, &tok)| logp[i][tok as usize] as f64)
            .collect();
        for (a, b) in ours.iter().zip(floats(&choice["token_logprobs"])) {
            assert!((a - b).abs() < 1e-3, "{}: {a} vs {b}", choice["letter"]);
        }
    }
}

#[test]
fn tiny_chat_pruned_prompt_matches_transformers() {
    let f = fixture("tiny-chat", "prune_seg25_librivox");
    let input_ids = ids(&f.case["pruned_input_ids"]);
    let kept = ids(&f.case["prune"]["kept_indices"]);
    let audio_id = f.config["audio_token_index"].as_u64().unwrap() as u32;
    let start = input_ids.iter().position(|&t| t == audio_id).unwrap();
    let end = start + kept.len();
    assert!(input_ids[start..end].iter().all(|&t| t == audio_id));
    let kept_t = Tensor::new(kept.as_slice(), &Device::Cpu).unwrap();
    let rows = f.tensors["projected"]
        .index_select(&kept_t, 0)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ids_t = Tensor::new(input_ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let text = f.model.embed_tokens(&ids_t).unwrap();
    let n = input_ids.len();
    let embeds = Tensor::cat(
        &[
            &text.narrow(1, 0, start).unwrap(),
            &rows,
            &text.narrow(1, end, n - end).unwrap(),
        ],
        1,
    )
    .unwrap();
    let out = greedy(
        &f,
        &embeds,
        &input_ids,
        &f.case["generation"],
        ids(&generation_config("tiny-chat")["eos_token_id"]),
    );
    assert_eq!(out.tokens, ids(&f.case["pruned_greedy_ids"]));
    for (a, b) in out
        .margins
        .iter()
        .zip(floats(&f.case["pruned_greedy_margins"]))
    {
        assert!((*a as f64 - b).abs() < 1e-3, "margin {a} vs {b}");
    }
}
