//! Audio Flamingo 3 against transformers on the tiny AF3 checkpoints (`models/tiny-af3`: bf16,
//! sharded, MLP projector with biases, sampling generation config; `models/tiny-af3-f32`: f32, one
//! file, no projector biases, greedy generation config), whose references
//! `scripts/make_af3_fixtures.py` made with the pinned transformers.
//!
//! Same tolerances as the Qwen2-Audio parity tests; greedy ids identical with the model's own
//! generation defaults (only sampling turned off).

use auris::pipeline::{PromptSpec, Task};
use auris_prune::{Policy, Remainder, Strategy};

use crate::common::{assert_close, auris, fixture, load_model, model_dir, run, Case};
use crate::parity::{assert_same_tokens, greedy_request, no_pruning, selection, strategy};

const REL: f32 = 1e-4;
const SCORE_ABS: f32 = 1e-5;

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
    assert_eq!(r.prompt_token_ids, case.ids("input_ids"), "expanded ids");
    let ins = r.inspection.as_ref().unwrap();
    for (what, ours) in [
        ("audio_embeds", &ins.audio_embeds),
        ("projected", &ins.projected),
        ("prompt_logits", &ins.prompt_logits),
    ] {
        assert_close(
            &format!("{model}/{case_name} {what}"),
            ours,
            case.tensor(what),
            REL,
        );
    }
    let (diff, _) = crate::common::max_abs_diff(&ins.audio_scores, case.tensor("audio_scores"));
    assert!(diff <= SCORE_ABS, "scores differ by {diff}");
    assert_same_tokens(&case, "greedy_ids", "greedy_stopped_on_eos", &r);
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

#[test]
fn af3_segmentwise_quarter_matches_transformers_on_one_window() {
    let case = Case::load("tiny-af3", "prune_seg25_librivox");
    let policy = Policy {
        strategy: Strategy::Segmentwise {
            segments: 10,
            remainder: Remainder::Spread,
        },
        keep: 0.25,
    };
    let r = run_case("tiny-af3", &case, policy);
    let kept: Vec<usize> =
        serde_json::from_value(case.json["prune"]["kept_indices"].clone()).unwrap();
    assert_eq!(r.kept_indices, kept);
    assert_eq!(r.prompt_token_ids, case.ids("pruned_input_ids"));
    let ins = r.inspection.as_ref().unwrap();
    assert_close(
        "af3 pruned prompt logits",
        &ins.prompt_logits,
        case.tensor("pruned_prompt_logits"),
        REL,
    );
    assert_same_tokens(&case, "pruned_greedy_ids", "pruned_stopped_on_eos", &r);
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
    let p = load_model("tiny-af3");
    let case = Case::load("tiny-af3", "ask_mc_dog");
    let choices: Vec<String> = case.json["choice_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (_, text) = c["text"].as_str().unwrap().split_once(' ').unwrap();
            text.to_string()
        })
        .collect();
    let mut request = greedy_request(&p, &case, no_pruning());
    request.task = Task::ScoreChoices(choices);
    let ours = p
        .run(&request, &mut |_| true)
        .unwrap()
        .choice_logprobs
        .unwrap();
    let theirs: Vec<f32> = case.json["choice_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sum"].as_f64().unwrap() as f32)
        .collect();
    // A 48 kHz MP3: auris decodes and resamples it its own way, hence the looser bound.
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(
            (a - b).abs() < 0.05 * b.abs().max(1.0),
            "{ours:?} vs {theirs:?}"
        );
    }
}

/// The binary on an AF3 checkpoint: caption through the chat template, and a raw prompt with
/// the family's own `<sound>` placeholder (Qwen2-Audio's `<|AUDIO|>` is refused).
#[test]
fn af3_cli_caption_and_raw_prompt() {
    let case = Case::load("tiny-af3", "caption_librivox");
    let out = run(auris()
        .args([
            "caption",
            "--json",
            "--greedy",
            "--max-new-tokens",
            "24",
            "--model",
        ])
        .arg(model_dir("tiny-af3"))
        .arg(case.audio()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(json["prompt"], case.json["prompt"]);
    assert_eq!(json["output_token_ids"], case.json["greedy_ids"]);

    let raw = case.json["prompt"].as_str().unwrap();
    let out = run(auris()
        .args([
            "caption",
            "--json",
            "--greedy",
            "--max-new-tokens",
            "24",
            "--model",
        ])
        .arg(model_dir("tiny-af3"))
        .arg(case.audio())
        .args(["--raw-prompt", raw]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
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
