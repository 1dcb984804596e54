//! The `auris` binary: JSON output, inspect, help.

use serde_json::Value;

use crate::common::{assert_close, auris, fixture, json_ids, model_dir, run, Case};

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn caption_json_reproduces_reference_tokens() {
    let case = Case::load("tiny-base", "caption_librivox");
    let out = run(auris()
        .args(["caption", "--json", "--max-new-tokens", "24", "--model"])
        .arg(model_dir("tiny-base"))
        .args(["--compute", "f32"])
        .arg(case.audio()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1);
    let v = &lines[0];
    assert_eq!(json_ids(&v["output_token_ids"]), case.ids("greedy_ids"));
    assert_eq!(json_ids(&v["prompt_token_ids"]), case.ids("input_ids"));
    assert_eq!(v["prompt"], case.json["prompt"]);
    assert_eq!(v["n_audio_tokens"], case.json["n_audio_tokens"]);
    assert_eq!(v["n_kept"], case.json["n_audio_tokens"]);
    assert_eq!(v["sample_rate"], 16000);
    for key in [
        "audio",
        "duration_s",
        "kept_indices",
        "text",
        "timings_ms",
        "tokens_per_s",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in [
        "load",
        "decode_audio",
        "mel",
        "encoder",
        "prefill",
        "generate",
    ] {
        assert!(v["timings_ms"][key].is_number(), "missing timing {key}");
    }
}

#[test]
fn ask_json_reproduces_reference_greedy_with_repetition_penalty() {
    let case = Case::load("tiny-chat", "caption_librivox");
    let out = run(auris()
        .args([
            "ask",
            "--json",
            "--greedy",
            "--max-new-tokens",
            "24",
            "--model",
        ])
        .arg(model_dir("tiny-chat"))
        .args(["--compute", "f32"])
        .arg(case.audio())
        .args(["--question", "Describe the audio in one sentence."]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = &json_lines(&out.stdout)[0];
    assert_eq!(v["prompt"], case.json["prompt"]);
    assert_eq!(json_ids(&v["output_token_ids"]), case.ids("greedy_ids"));
}

#[test]
fn ask_with_choices_scores_them() {
    let case = Case::load("tiny-chat", "ask_mc_dog");
    let out = run(auris()
        .args(["ask", "--json", "--score-choices", "--model"])
        .arg(model_dir("tiny-chat"))
        .args(["--compute", "f32"])
        .arg(case.audio())
        .args([
            "--question",
            "What can be heard?",
            "--choice",
            "a dog barking",
            "--choice",
            "a violin",
            "--choice",
            "a car engine",
        ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = &json_lines(&out.stdout)[0];
    assert_eq!(v["prompt"], case.json["prompt"]);
    assert_eq!(v["choice_logprobs"].as_array().unwrap().len(), 3);
    // The reference ranks "(B) a violin" first on this random model.
    assert_eq!(v["answer"], "B");
    assert_eq!(v["answer_text"], "a violin");
}

#[test]
fn caption_with_segmentwise_pruning_reports_the_selection() {
    let case = Case::load("tiny-chat", "prune_seg25_librivox");
    let out = run(auris()
        .args([
            "caption",
            "--json",
            "--greedy",
            "--max-new-tokens",
            "24",
            "--prune",
            "segmentwise",
            "--keep",
            "0.25",
            "--segments",
            "10",
            "--model",
        ])
        .arg(model_dir("tiny-chat"))
        .args(["--compute", "f32"])
        .arg(case.audio()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = &json_lines(&out.stdout)[0];
    assert_eq!(v["kept_indices"], case.json["prune"]["kept_indices"]);
    assert_eq!(v["n_kept"], 21);
    assert_eq!(v["prune"]["strategy"], "segmentwise");
    assert_eq!(
        json_ids(&v["output_token_ids"]),
        case.ids("pruned_greedy_ids")
    );
}

#[test]
fn inspect_writes_reference_tensors() {
    let case = Case::load("tiny-chat", "caption_librivox");
    let out_path =
        std::env::temp_dir().join(format!("auris-inspect-{}.safetensors", std::process::id()));
    let out = run(auris()
        .args(["inspect", "--model"])
        .arg(model_dir("tiny-chat"))
        .args(["--compute", "f32"])
        .arg(case.audio())
        .arg("--out")
        .arg(&out_path));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = candle_core::safetensors::load(&out_path, &candle_core::Device::Cpu).unwrap();
    for key in ["audio_embeds", "projected", "prompt_logits"] {
        assert_close(&format!("inspect {key}"), &t[key], case.tensor(key), 1e-4);
    }
    let mel = candle_core::safetensors::load(
        fixture("mel/librivox_0930_16k.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let stored = &mel["mel128_w0"];
    let n = stored.dim(1).unwrap();
    let ours = t["input_features"].narrow(1, 0, n).unwrap();
    assert_close("inspect input_features", &ours, stored, 1e-3);
    assert_eq!(
        t["audio_scores"].dims(),
        &[case.json["n_audio_tokens"].as_u64().unwrap() as usize]
    );
    let _ = std::fs::remove_file(out_path);
}

#[test]
fn several_files_load_once_and_a_failure_does_not_stop_the_rest() {
    let out = run(auris()
        .args(["caption", "--json", "--max-new-tokens", "2", "--model"])
        .arg(model_dir("tiny-base"))
        .arg(fixture("audio/tone_440_16k.wav"))
        .arg(fixture("audio/bad/random_bytes.wav"))
        .arg(fixture("audio/librivox_0880_16k.wav")));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3);
    assert!(lines[0].get("text").is_some());
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("random_bytes.wav"),
        "{}",
        lines[1]
    );
    assert!(lines[2].get("text").is_some());
    assert_eq!(out.stderr.matches("loading").count(), 1, "{}", out.stderr);
}

fn help_snapshot(args: &[&str], name: &str) {
    let out = run(auris().args(args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let path = crate::common::root().join("tests/snapshots").join(name);
    if std::env::var_os("AURIS_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &out.stdout).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with AURIS_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        out.stdout,
        expected,
        "help of `auris {}` changed; rerun with AURIS_UPDATE_SNAPSHOTS=1 if intended",
        args.join(" ")
    );
}

#[test]
fn help_output_is_stable() {
    help_snapshot(&["--help"], "help.txt");
    help_snapshot(&["caption", "--help"], "help_caption.txt");
    help_snapshot(&["ask", "--help"], "help_ask.txt");
    help_snapshot(&["inspect", "--help"], "help_inspect.txt");
    help_snapshot(&["serve", "--help"], "help_serve.txt");
    help_snapshot(&["bench", "--help"], "help_bench.txt");
    help_snapshot(&["download", "--help"], "help_download.txt");
    help_snapshot(
        &["eval", "asr-pruning", "--help"],
        "help_eval_asr_pruning.txt",
    );
    help_snapshot(&["eval", "mmau", "--help"], "help_eval_mmau.txt");
    help_snapshot(&["eval", "captions", "--help"], "help_eval_captions.txt");
    help_snapshot(
        &["eval", "transcribe", "--help"],
        "help_eval_transcribe.txt",
    );
    help_snapshot(&["eval", "report", "--help"], "help_eval_report.txt");
}

fn prompt_of(model: &std::path::Path, extra: &[&str]) -> String {
    let out = run(auris()
        .args(["inspect", "--json", "--model"])
        .arg(model)
        .arg(fixture("audio/tone_440_16k.wav"))
        .arg("--out")
        .arg(std::env::temp_dir().join(format!("auris-prompt-{}.safetensors", std::process::id())))
        .args(extra));
    assert_eq!(out.code, 0, "{}", out.stderr);
    json_lines(&out.stdout)[0]["prompt"]
        .as_str()
        .unwrap()
        .to_string()
}

const BUILTIN_CAPTION_PROMPT: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nDescribe the audio in one sentence.<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn prompt_format_can_be_forced() {
    let base = model_dir("tiny-base");
    assert_eq!(
        prompt_of(&base, &[]),
        "<|audio_bos|><|AUDIO|><|audio_eos|>Generate the caption in English:"
    );
    // tiny-base ships no template: `chat` falls back to the built-in Qwen2-Audio ChatML one.
    assert_eq!(
        prompt_of(&base, &["--prompt-format", "chat"]),
        BUILTIN_CAPTION_PROMPT
    );
    assert!(
        prompt_of(&model_dir("tiny-chat"), &["--prompt-format", "base"])
            .starts_with("<|audio_bos|>")
    );
}

#[test]
fn instruct_named_model_without_template_gets_the_builtin_chat_template() {
    // The hub's Qwen2-Audio-7B-Instruct ships no chat template file; transformers then uses
    // the processor's built-in one, and so do we.
    let dir = crate::common::copy_model("tiny-base", "Qwen2-Audio-Instruct");
    assert_eq!(prompt_of(&dir, &[]), BUILTIN_CAPTION_PROMPT);
}

#[test]
fn text_only_tokenizer_template_is_not_used_for_audio() {
    let dir = crate::common::copy_model("tiny-base", "texttemplate");
    let path = dir.join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["chat_template"] = Value::String("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}".into());
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(prompt_of(&dir, &[]).starts_with("<|audio_bos|>"));
}

#[test]
fn bench_quick_reports_every_stage() {
    let out = run(auris()
        .args(["bench", "--quick", "--json", "--keeps", "1,0.25", "--model"])
        .arg(model_dir("tiny-chat"))
        .arg(fixture("audio/librivox_0930_16k.wav")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = &json_lines(&out.stdout)[0];
    for key in ["decode_audio", "mel", "encoder", "encoder_with_scores"] {
        assert!(v[key]["median_ms"].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    let keeps = v["keeps"].as_array().unwrap();
    assert_eq!(keeps.len(), 2);
    assert_eq!(keeps[0]["strategy"], "none");
    assert_eq!(keeps[0]["n_kept"], 82);
    assert_eq!(keeps[1]["strategy"], "segmentwise");
    assert_eq!(keeps[1]["n_kept"], 21);
    assert!(keeps[1]["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(v["compute"], "f32", "{v}");
    assert!(v["compute_reason"].as_str().unwrap().starts_with("auto: "));
    // Off unless asked for: the report keeps its fields.
    assert!(v.get("decode_batch").is_none(), "{v}");
}

#[test]
fn bench_decode_batch_reports_each_size() {
    let bench = |sizes: &str| {
        run(auris()
            .args([
                "bench",
                "--quick",
                "--json",
                "--decode-batch",
                sizes,
                "--model",
            ])
            .arg(model_dir("tiny-chat"))
            .arg(fixture("audio/librivox_0930_16k.wav")))
    };
    let out = bench("1,3");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = &json_lines(&out.stdout)[0];
    let sizes = v["decode_batch"].as_array().unwrap();
    assert_eq!(sizes.len(), 2, "{v}");
    for (entry, batch) in sizes.iter().zip([1, 3]) {
        assert_eq!(entry["batch"], batch);
        assert_eq!(entry["steps"], 8);
        assert!(entry["tok_s"].as_f64().unwrap() > 0.0, "{entry}");
    }
    let out = bench("2,0");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--decode-batch"), "{}", out.stderr);
}

#[test]
fn bench_rejects_bad_keep_ratios() {
    let out = run(auris()
        .args(["bench", "--quick", "--keeps", "0", "--model"])
        .arg(model_dir("tiny-chat"))
        .arg(fixture("audio/librivox_0930_16k.wav")));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("keep"), "{}", out.stderr);
}

#[test]
fn broken_pipe_is_not_an_error() {
    let mut child = auris()
        .args(["caption", "--max-new-tokens", "2", "--model"])
        .arg(model_dir("tiny-base"))
        .arg(fixture("audio/tone_440_16k.wav"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}
