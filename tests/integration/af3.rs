//! Audio Flamingo 3 against transformers on the tiny AF3 checkpoints (`models/tiny-af3`: bf16,
//! sharded, MLP projector with biases, sampling generation config; `models/tiny-af3-f32`: f32, one
//! file, no projector biases, greedy generation config), whose references
//! `scripts/make_af3_fixtures.py` made with the pinned transformers.
//!
//! Same tolerances as the Qwen2-Audio parity tests; greedy ids identical with the model's own
//! generation defaults (only sampling turned off).

use std::path::Path;

use auris::pipeline::PromptSpec;
use auris_prune::Policy;
use serde_json::Value;

use crate::common::{auris, fixture, load_model, model_dir, run, Case};
use crate::parity::{
    assert_pruned_like_reference, assert_unpruned_like_reference, check_choice_scores,
    greedy_request, no_pruning, selection, strategy,
};

/// Runs `case` of `model` greedy with `policy`, through the model's chat template when the
/// case has a conversation, else with its prompt verbatim; checks every stage shared with the
/// unpruned reference.
fn run_case(model: &str, case: &Case, policy: Policy) -> auris::Response {
    let p = load_model(model);
    let mut request = greedy_request(&p, case, policy);
    if let Some(text) = case.json["conversation"][0]["content"][1]["text"].as_str() {
        assert_eq!(text, p.default_caption_instruction());
        request.prompt = PromptSpec::Instruction {
            text: text.to_string(),
            system: None,
        };
    }
    let r = p.run(&request, &mut |_| true).unwrap();
    assert_eq!(r.prompt, case.json["prompt"].as_str().unwrap(), "prompt");
    assert_eq!(
        r.n_audio_tokens,
        case.json["n_audio_tokens"].as_u64().unwrap() as usize
    );
    r
}

fn check_unpruned(model: &str, case_name: &str) {
    let case = Case::load(model, case_name);
    let r = run_case(model, &case, no_pruning());
    assert_unpruned_like_reference(&format!("{model}/{case_name}"), &case, &r);
}

#[test]
fn af3_one_window_caption_matches_transformers() {
    check_unpruned("tiny-af3", "caption_librivox");
}

#[test]
fn af3_two_window_caption_matches_transformers() {
    check_unpruned("tiny-af3", "caption_long42");
}

#[test]
fn af3_f32_without_projector_bias_transcribes_like_transformers() {
    check_unpruned("tiny-af3-f32", "transcribe_librivox");
}

fn check_segmentwise_quarter(case_name: &str) {
    let case = Case::load("tiny-af3", case_name);
    let policy = Policy {
        strategy: strategy("segmentwise"),
        keep: 0.25,
    };
    let r = run_case("tiny-af3", &case, policy);
    assert_pruned_like_reference(&case, &r);
}

#[test]
fn af3_segmentwise_quarter_matches_transformers_on_one_window() {
    check_segmentwise_quarter("prune_seg25_librivox");
}

/// Two windows (42 s): the selection runs over both windows' tokens together, as the
/// reference's does over the whole `<sound>` run (kept indices, pruned prompt ids and logits,
/// greedy ids).
#[test]
fn af3_segmentwise_quarter_matches_transformers_over_two_windows() {
    check_segmentwise_quarter("prune_seg25_long42");
}

/// Every strategy's selection over auris's scores equals the reference's, on one window and on
/// the two windows' scores concatenated (the scope the reference selects in).
#[test]
fn af3_selections_match_transformers_scores() {
    let p = load_model("tiny-af3");
    let mut checked = 0;
    for case_name in ["prune_seg25_librivox", "prune_seg25_long42"] {
        let case = Case::load("tiny-af3", case_name);
        let audio = p.load_audio(&case.audio()).unwrap();
        let encoded = p.encode(&audio, true).unwrap();
        let scores: Vec<f32> = encoded
            .iter()
            .flat_map(|w| w.scores.clone().unwrap())
            .collect();
        for name in ["segmentwise", "topk", "bottomk", "uniform"] {
            for keep in ["0.5", "0.25", "0.1"] {
                let Some(expected) = selection(&case, name, keep) else {
                    continue;
                };
                let policy = Policy {
                    strategy: strategy(name),
                    keep: keep.parse().unwrap(),
                };
                let sel = auris_prune::select(&policy, &scores, None).unwrap();
                assert_eq!(sel.indices, expected, "{case_name} {name} keep {keep}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} selections checked");
}

#[test]
fn af3_choice_scores_match_transformers() {
    check_choice_scores("tiny-af3");
}

/// `auris caption --json` on `model` with `extra` options: its one output object.
fn caption_json(model: &Path, audio: &Path, extra: &[&str]) -> Value {
    let out = run(auris()
        .args(["caption", "--json", "--compute", "f32", "--model"])
        .arg(model)
        .arg(audio)
        .args(extra));
    assert_eq!(out.code, 0, "{extra:?}: {}", out.stderr);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

/// The binary on an AF3 checkpoint: caption through the chat template, and a raw prompt with
/// the family's own `<sound>` placeholder (Qwen2-Audio's `<|AUDIO|>` is refused).
#[test]
fn af3_cli_caption_and_raw_prompt() {
    let case = Case::load("tiny-af3", "caption_librivox");
    let dir = model_dir("tiny-af3");
    let greedy = ["--greedy", "--max-new-tokens", "24"];
    let json = caption_json(&dir, &case.audio(), &greedy);
    assert_eq!(json["prompt"], case.json["prompt"]);
    assert_eq!(json["output_token_ids"], case.json["greedy_ids"]);

    let raw = case.json["prompt"].as_str().unwrap();
    let json = caption_json(
        &dir,
        &case.audio(),
        &[&greedy[..], &["--raw-prompt", raw]].concat(),
    );
    assert_eq!(json["prompt_token_ids"], case.json["input_ids"]);
    assert_eq!(json["n_audio_tokens"], 82);

    let out = run(auris()
        .args(["caption", "--model"])
        .arg(model_dir("tiny-af3"))
        .arg(fixture("audio/tone_440_16k.wav"))
        .args(["--raw-prompt", "<|audio_bos|><|AUDIO|><|audio_eos|>Hi"]));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("<sound>"), "{}", out.stderr);
}

/// The other options on an AF3 checkpoint: every pruning strategy on two windows, the weight
/// formats, `--score-choices`, and `--fit-context` on a copy whose context is too short for
/// the whole 42 s clip.
#[test]
fn af3_cli_strategies_formats_and_fit_context() {
    let long = fixture("audio/long_42s_16k.wav");
    let caption = |model: &Path, extra: &[&str]| {
        caption_json(model, &long, &[&["--max-new-tokens", "2"], extra].concat())
    };
    let dir = model_dir("tiny-af3");
    // Every pruning strategy auris-prune names.
    for &strategy in auris_prune::STRATEGY_NAMES.iter().filter(|&&n| n != "none") {
        let json = caption(&dir, &["--prune", strategy, "--keep", "0.25"]);
        assert_eq!(json["n_audio_tokens"], 1050, "{strategy}");
        // One selection over both windows: a quarter of 1050 (per window it would also be
        // 188 + 75 = 263, so the window boundaries are checked by the parity test above).
        assert_eq!(json["n_kept"], 263, "{strategy}");
    }
    for format in [
        ["--dtype", "bf16"],
        ["--quant", "q8_0"],
        ["--quant", "q4_k"],
    ] {
        assert_eq!(caption(&dir, &format)["n_kept"], 1050, "{format:?}");
    }

    let case = Case::load("tiny-af3", "ask_mc_dog");
    let out = run(auris()
        .args(["ask", "--json", "--score-choices", "--model"])
        .arg(&dir)
        .arg(case.audio())
        .args(["--question", "What can be heard?"])
        .args(["--choice", "a dog barking", "--choice", "a violin"])
        .args(["--choice", "a car engine"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(json["choice_logprobs"].as_array().map(Vec::len), Some(3));

    let short = crate::common::copy_model("tiny-af3", "af3-short-context");
    let path = short.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["text_config"]["max_position_embeddings"] = 600.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let out = run(auris()
        .args(["caption", "--max-new-tokens", "2", "--model"])
        .arg(&short)
        .arg(&long));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--fit-context"), "{}", out.stderr);
    let json = caption(&short, &["--fit-context"]);
    assert_eq!(json["context"]["fitted"], true);
    let kept = json["n_kept"].as_u64().unwrap();
    assert!(kept > 0 && kept < 1050, "{kept}");
}
