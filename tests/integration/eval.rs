//! `auris eval mmau` and `auris eval captions` on `models/tiny-chat` (random weights: these
//! check the machinery, the counts, the resumption and the JSON layout, not the scores) with the
//! small manifests in `tests/fixtures/eval/` over the committed clips.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{auris, fixture, model_dir, root, run, Run};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("auris-eval-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `auris eval <task> --model tiny-chat --manifest <fixture> --audio-dir tests/fixtures/audio`
/// with short generations, plus `extra`.
fn eval(task: &str, manifest: &str, dir: &Path, extra: &[&str]) -> Run {
    run(auris()
        .args(["eval", task, "--model"])
        .arg(model_dir("tiny-chat"))
        .arg("--manifest")
        .arg(fixture(&format!("eval/{manifest}")))
        .arg("--audio-dir")
        .arg(fixture("audio"))
        .args(["--max-new-tokens", "4", "--quiet", "--out"])
        .arg(dir.join("r.json"))
        .arg("--predictions")
        .arg(dir.join("p.jsonl"))
        .args(extra))
}

#[test]
fn eval_mmau_counts_skips_and_json_layout() {
    let dir = scratch("mmau");
    let out = eval(
        "mmau",
        "mmau_mini.json",
        &dir,
        &["--strategies", "segmentwise,topk", "--keeps", "1,0.5"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("| segmentwise | 0.5 |"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("| sound |"),
        "task columns: {}",
        out.stdout
    );
    let j = read_json(&dir.join("r.json"));
    assert_eq!(j["task"], "mmau");
    assert_eq!(j["mode"], "generate");
    assert_eq!(j["items"], 6);
    assert_eq!(j["scored"], 4);
    // The missing and the undecodable clip are listed with their reason, not dropped.
    let skipped: Vec<&str> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["mini-missing", "mini-undecodable"], "{j}");
    assert!(j["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("no_such_clip.wav"));
    // Keep 1 is the baseline: none, then each strategy at 0.5.
    let results = j["results"].as_array().unwrap();
    let configs: Vec<(String, f64)> = results
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap().to_string(),
                r["keep"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        configs,
        [
            ("none".into(), 1.0),
            ("segmentwise".into(), 0.5),
            ("topk".into(), 0.5)
        ]
    );
    for r in results {
        assert_eq!(r["items"], 4, "{r}");
        let acc = r["metrics"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r}");
        let tasks: Vec<&String> = r["groups"]["task"].as_object().unwrap().keys().collect();
        assert_eq!(tasks, ["music", "sound", "speech"]);
        assert_eq!(r["groups"]["difficulty"].as_object().unwrap().len(), 3);
        assert!(r["prefill_ms"].as_f64().unwrap() > 0.0);
        assert!(r["end_to_end_ms"].as_f64().unwrap() >= r["prefill_ms"].as_f64().unwrap());
    }
    // Pruning at 0.5 halves the audio tokens the model sees.
    let kept = |i: usize| results[i]["kept_tokens"].as_f64().unwrap();
    assert!(kept(1) < 0.6 * kept(0), "{j}");
    assert!(j["parameters"]["prompt_template"]
        .as_str()
        .unwrap()
        .contains("Select one option from the provided choices."));
    // One prediction per scored item and configuration, with its verdict.
    let preds = read_lines(&dir.join("p.jsonl"));
    assert_eq!(preds.len(), 4 * 3);
    for p in &preds {
        for key in [
            "id",
            "strategy",
            "keep",
            "mode",
            "prediction",
            "correct",
            "n_kept",
            "prefill_ms",
        ] {
            assert!(!p[key].is_null(), "{key} missing in {p}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_mmau_resumes_from_the_predictions_file() {
    let dir = scratch("resume");
    // Segmentwise on the first two items, with the keep ratios and options in `extra`.
    let resume = |extra: &[&str]| {
        let mut args = vec!["--strategies", "segmentwise", "--limit", "2"];
        args.extend_from_slice(extra);
        eval("mmau", "mmau_mini.json", &dir, &args)
    };
    let first = resume(&["--keeps", "0.5"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let path = dir.join("p.jsonl");
    assert_eq!(read_lines(&path).len(), 2 * 2);
    let first_json = read_json(&dir.join("r.json"));
    assert_eq!(first_json["resumed"], 0);

    // Nothing left to do: every prediction comes from the file, the results are the same.
    let again = resume(&["--keeps", "0.5"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again_json = read_json(&dir.join("r.json"));
    assert_eq!(again_json["resumed"], 4);
    assert_eq!(
        again_json["results"][1]["metrics"],
        first_json["results"][1]["metrics"]
    );
    assert_eq!(read_lines(&path).len(), 4);

    // An interrupted write (a last line without its newline) is dropped and made again; a new
    // keep ratio adds only its own predictions.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"id\": \"mini-sound-1\", \"stra");
    std::fs::write(&path, text).unwrap();
    let more = resume(&["--keeps", "0.5,0.25"]);
    assert_eq!(more.code, 0, "{}", more.stderr);
    assert_eq!(read_lines(&path).len(), 2 * 3);
    assert_eq!(read_json(&dir.join("r.json"))["resumed"], 4);

    // Other pruning settings would make other predictions: the file is refused.
    let other = resume(&["--keeps", "0.5", "--segments", "5"]);
    assert_ne!(other.code, 0);
    assert!(other.stderr.contains("other settings"), "{}", other.stderr);
    assert_eq!(read_lines(&path).len(), 2 * 3);

    // Score-choices is its own mode: the same file, new predictions, each one of the choices.
    let scored = resume(&["--keeps", "0.5", "--score-choices"]);
    assert_eq!(scored.code, 0, "{}", scored.stderr);
    let j = read_json(&dir.join("r.json"));
    assert_eq!(j["mode"], "score-choices");
    assert_eq!(j["resumed"], 0);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2 * 3 + 2 * 2);
    let manifest = read_json(&fixture("eval/mmau_mini.json"));
    for p in lines.iter().filter(|p| p["mode"] == "score-choices") {
        let item = manifest
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == p["id"])
            .unwrap();
        assert!(
            item["choices"]
                .as_array()
                .unwrap()
                .contains(&p["prediction"]),
            "{p}"
        );
        assert_eq!(p["correct"], p["prediction"] == item["answer"], "{p}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_captions_on_clotho_csv_and_json_lines() {
    let dir = scratch("captions");
    let out = run(auris()
        .args(["eval", "captions", "--model"])
        .arg(model_dir("tiny-chat"))
        .arg("--manifest")
        .arg(fixture("eval/clotho_mini.csv"))
        .arg("--audio-dir")
        .arg(fixture("audio"))
        .args(["--strategies", "segmentwise", "--keeps", "0.25", "--quiet"])
        .args(["--max-new-tokens", "4", "--out"])
        .arg(dir.join("c.json"))
        .arg("--plot")
        .arg(dir.join("c.svg"))
        .arg("--markdown")
        .arg(dir.join("c.md")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = read_json(&dir.join("c.json"));
    assert_eq!(j["task"], "captions");
    assert_eq!(j["items"], 5);
    // The 42 s clip is cut into 30 s windows like the CLI does; the missing one is listed.
    assert_eq!(j["scored"], 4, "{j}");
    assert_eq!(j["skipped"][0]["id"], "missing_clip.wav");
    assert_eq!(
        j["parameters"]["prompt"], "Describe the audio in one sentence.",
        "the chat model's captioning instruction"
    );
    for r in j["results"].as_array().unwrap() {
        for m in ["cider_d", "bleu_4", "rouge_l"] {
            let v = r["metrics"][m].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{m} {r}");
        }
    }
    let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
    assert!(svg.contains("\nsegmentwise\n"), "{svg}");
    let md = std::fs::read_to_string(dir.join("c.md")).unwrap();
    assert!(
        md.contains("| strategy | keep | bleu_4 | cider_d | rouge_l |"),
        "{md}"
    );

    let jl = eval(
        "captions",
        "captions_mini.jsonl",
        &dir,
        &[
            "--strategies",
            "topk",
            "--keeps",
            "0.5",
            "--prompt",
            "Caption this.",
        ],
    );
    assert_eq!(jl.code, 0, "{}", jl.stderr);
    let j = read_json(&dir.join("r.json"));
    assert_eq!(j["scored"], 2);
    assert_eq!(j["parameters"]["prompt"], "Caption this.");
    let preds = read_lines(&dir.join("p.jsonl"));
    assert_eq!(preds.len(), 2 * 2);
    assert!(preds.iter().all(|p| p["correct"].is_null()));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_transcribe_wer_per_source_and_timings() {
    let dir = scratch("transcribe");
    let out = run(auris()
        .args(["eval", "transcribe", "--model"])
        .arg(model_dir("tiny-chat"))
        .arg("--manifest")
        .arg(fixture("eval/transcribe_mini.jsonl"))
        .args(["--strategies", "uniform", "--keeps", "1,0.5", "--quiet"])
        .args(["--max-new-tokens", "3", "--out"])
        .arg(dir.join("t.json"))
        .arg("--markdown")
        .arg(dir.join("t.md")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let j = read_json(&dir.join("t.json"));
    assert_eq!(j["task"], "transcribe");
    assert_eq!(j["metric"], "wer");
    assert_eq!(j["scored"], 2, "{j}");
    assert_eq!(j["parameters"]["prompt"], "Transcribe the audio.");
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "baseline and uniform at 0.5");
    for r in results {
        // 8 + 8 reference words after normalisation ("ill-disposed" is two words)
        assert_eq!(r["metrics"]["words"], 16.0, "{r}");
        let wer = r["metrics"]["wer"].as_f64().unwrap();
        let errors = r["metrics"]["errors"].as_f64().unwrap();
        assert!(
            (wer - (errors / 16.0 * 1e4).round() / 1e4).abs() < 1e-9,
            "{r}"
        );
        let sources = r["groups"]["source"].as_object().unwrap();
        assert_eq!(sources.len(), 2, "{r}");
        let ttft = r["ttft_ms"].as_f64().unwrap();
        assert!(
            ttft >= r["prefill_ms"].as_f64().unwrap() && ttft > 0.0,
            "{r}"
        );
    }
    assert!(results[1]["kept_tokens"].as_f64() < results[0]["kept_tokens"].as_f64());
    let md = std::fs::read_to_string(dir.join("t.md")).unwrap();
    assert!(md.contains("| TTFT ms |"), "{md}");
    assert!(md.contains("| fixture | librivox |"), "{md}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_rejects_bad_input() {
    let dir = scratch("bad");
    let out = eval(
        "mmau",
        "mmau_mini.json",
        &dir,
        &["--prompt-template", "{question}"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("{choices}"), "{}", out.stderr);
    let out = eval("mmau", "mmau_mini.json", &dir, &["--strategies", "none"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = eval("captions", "clotho_mini.csv", &dir, &["--keeps", "0"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // A manifest in the wrong layout names the file and the problem.
    let out = eval("mmau", "clotho_mini.csv", &dir, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("clotho_mini.csv"), "{}", out.stderr);
    let out = eval("captions", "mmau_mini.json", &dir, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    std::fs::remove_dir_all(&dir).ok();
}

/// `auris eval mmau` on the mini manifest (segmentwise at 0.5, 3 new tokens, no timings) with
/// its predictions in `dir/<name>.jsonl` and its report in `dir/<name>.json`, plus `extra`.
fn sweep_part(dir: &Path, manifest: &Path, name: &str, extra: &[&str]) -> Run {
    run(auris()
        .args(["eval", "mmau", "--model"])
        .arg(model_dir("tiny-chat"))
        .arg("--manifest")
        .arg(manifest)
        .arg("--audio-dir")
        .arg(fixture("audio"))
        .args(["--strategies", "segmentwise", "--keeps", "0.5"])
        .args(["--max-new-tokens", "3", "--quiet", "--no-timings", "--out"])
        .arg(dir.join(format!("{name}.json")))
        .arg("--predictions")
        .arg(dir.join(format!("{name}.jsonl")))
        .args(extra))
}

/// `auris eval report --no-timings --out dir/merged.json --predictions <dir/name.jsonl...>`.
fn merge(dir: &Path, names: &[&str]) -> Run {
    run(auris()
        .args(["eval", "report", "--quiet", "--no-timings", "--out"])
        .arg(dir.join("merged.json"))
        .arg("--markdown")
        .arg(dir.join("merged.md"))
        .arg("--predictions")
        .args(names.iter().map(|n| dir.join(format!("{n}.jsonl")))))
}

/// The sweep of `sweep_part` in 3 shards, `dir/s1.jsonl` to `dir/s3.jsonl`.
fn three_shards(dir: &Path, manifest: &Path) {
    for k in 1..=3 {
        let part = sweep_part(
            dir,
            manifest,
            &format!("s{k}"),
            &["--shard", &format!("{k}/3")],
        );
        assert_eq!(part.code, 0, "shard {k}: {}", part.stderr);
        // The file appears whole when the part is done: nothing partial is left behind.
        assert!(!dir.join(format!("s{k}.jsonl.partial")).exists());
    }
}

/// The ids a finished part answered or skipped.
fn part_ids(dir: &Path, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = read_lines(&dir.join(format!("{name}.jsonl")))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let record = read_json(&dir.join(format!("{name}.run.json")));
    for s in record["skipped"].as_array().unwrap() {
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn eval_shards_merge_into_the_single_run_report() {
    let dir = scratch("shards");
    let manifest = fixture("eval/mmau_mini.json");
    let single = sweep_part(&dir, &manifest, "single", &[]);
    assert_eq!(single.code, 0, "{}", single.stderr);
    three_shards(&dir, &manifest);
    // Every item of the manifest is in exactly one part.
    let mut all: Vec<String> = (1..=3)
        .flat_map(|k| part_ids(&dir, &format!("s{k}")))
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (6, 6), "{all:?}");

    let merged = merge(&dir, &["s3", "s1", "s2"]);
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    let want = std::fs::read(dir.join("single.json")).unwrap();
    assert_eq!(
        String::from_utf8(std::fs::read(dir.join("merged.json")).unwrap()).unwrap(),
        String::from_utf8(want.clone()).unwrap(),
        "the merged report is the single run's"
    );
    let j = read_json(&dir.join("merged.json"));
    assert_eq!(
        (j["items"].as_u64(), j["scored"].as_u64()),
        (Some(6), Some(4))
    );
    assert!(j.get("runtime_s").is_none() && j["results"][0].get("ttft_ms").is_none());
    // The single run's own file merges into the same report; with timings, they are there.
    let again = merge(&dir, &["single"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(std::fs::read(dir.join("merged.json")).unwrap(), want);
    let timed = run(auris()
        .args(["eval", "report", "--quiet", "--out"])
        .arg(dir.join("timed.json"))
        .arg("--predictions")
        .arg(dir.join("single.jsonl")));
    assert_eq!(timed.code, 0, "{}", timed.stderr);
    let t = read_json(&dir.join("timed.json"));
    assert_eq!(t["resumed"], 4 * 2);
    assert!(
        t["results"][0]["end_to_end_ms"].as_f64().unwrap() > 0.0,
        "{t}"
    );

    // The slice of an item depends on its id, not on where the manifest lists it.
    let mut items = read_json(&manifest).as_array().unwrap().clone();
    items.reverse();
    let reversed = dir.join("reversed.json");
    std::fs::write(&reversed, serde_json::to_string(&items).unwrap()).unwrap();
    let rev = sweep_part(&dir, &reversed, "r2", &["--shard", "2/3"]);
    assert_eq!(rev.code, 0, "{}", rev.stderr);
    assert_eq!(part_ids(&dir, "r2"), part_ids(&dir, "s2"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_report_refuses_conflicts_and_names_missing_items() {
    let dir = scratch("merge-bad");
    let manifest = fixture("eval/mmau_mini.json");
    three_shards(&dir, &manifest);
    // A part left out: its items are named.
    let k = (1..=3)
        .find(|k| !part_ids(&dir, &format!("s{k}")).is_empty())
        .unwrap();
    let rest: Vec<String> = (1..=3)
        .filter(|&i| i != k)
        .map(|i| format!("s{i}"))
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let out = merge(&dir, &rest);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("missing"), "{}", out.stderr);
    for id in part_ids(&dir, &format!("s{k}")) {
        assert!(out.stderr.contains(&id), "{id}: {}", out.stderr);
    }

    // The same predictions twice are fine; a different answer to one of them is refused.
    let answered = (1..=3)
        .map(|i| format!("s{i}"))
        .find(|n| !read_lines(&dir.join(format!("{n}.jsonl"))).is_empty())
        .unwrap();
    let text = std::fs::read_to_string(dir.join(format!("{answered}.jsonl"))).unwrap();
    std::fs::copy(
        dir.join(format!("{answered}.run.json")),
        dir.join("copy.run.json"),
    )
    .unwrap();
    std::fs::write(dir.join("copy.jsonl"), &text).unwrap();
    assert_eq!(merge(&dir, &["s1", "s2", "s3", "copy"]).code, 0);
    let mut lines = read_lines(&dir.join("copy.jsonl"));
    lines[0]["prediction"] = Value::from("something else entirely");
    let changed: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("copy.jsonl"), changed.join("\n") + "\n").unwrap();
    let out = merge(&dir, &["s1", "s2", "s3", "copy"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("two different answers"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(lines[0]["id"].as_str().unwrap()),
        "{}",
        out.stderr
    );

    // Parts of other sweeps are not merged; a file without its run record is named.
    let other = sweep_part(&dir, &manifest, "other", &["--shard", "1/3", "--seed", "7"]);
    assert_eq!(other.code, 0, "{}", other.stderr);
    let out = merge(&dir, &["s2", "s3", "other"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("different sweeps"), "{}", out.stderr);
    std::fs::remove_file(dir.join("copy.run.json")).unwrap();
    let out = merge(&dir, &["copy"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("copy.run.json"), "{}", out.stderr);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_rejects_bad_shard_values() {
    let dir = scratch("bad-shard");
    let manifest = fixture("eval/mmau_mini.json");
    for (bad, says) in [
        ("0/3", "from 1 to N"),
        ("4/3", "from 1 to N"),
        ("1/0", "at least 1"),
        ("two/three", "expected K/N"),
        ("3", "expected K/N"),
    ] {
        let out = sweep_part(&dir, &manifest, "x", &["--shard", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("--shard") && out.stderr.contains(says),
            "{bad}: {}",
            out.stderr
        );
    }
    assert!(!dir.join("x.jsonl").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `scripts/ray_eval_check.sh` with this build: a two-node Ray cluster on loopback, 12 shards,
/// the second node killed while a shard runs on it; the merged report must equal the single
/// run's byte for byte. Prints the figures.
#[test]
#[ignore = "opt-in: starts a Ray cluster (pinned ray[data] in .venv-ray, made by the script; a few minutes)"]
fn ray_eval_check_survives_a_killed_node() {
    let out = run(std::process::Command::new("scripts/ray_eval_check.sh")
        .current_dir(root())
        .arg(env!("CARGO_BIN_EXE_auris")));
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ray eval check: ok"), "{}", out.stdout);
}

/// Both tasks over the real clips on the opt-in real-weights checkpoint; prints the tables.
#[test]
#[ignore = "opt-in: needs AURIS_REAL_MINI=models/real-mini (built by scripts/build_real_mini.sh)"]
fn real_mini_runs_both_evaluations() {
    let model = std::env::var_os("AURIS_REAL_MINI")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .expect("set AURIS_REAL_MINI=models/real-mini (scripts/build_real_mini.sh builds it)");
    let dir = scratch("real");
    for (task, manifest) in [("mmau", "mmau_mini.json"), ("captions", "clotho_mini.csv")] {
        let out = run(auris()
            .args(["eval", task, "--model"])
            .arg(&model)
            .arg("--manifest")
            .arg(fixture(&format!("eval/{manifest}")))
            .arg("--audio-dir")
            .arg(fixture("audio"))
            .args([
                "--device",
                "cpu",
                "--quiet",
                "--keeps",
                "0.5,0.25,0.1",
                "--max-new-tokens",
                "16",
                "--out",
            ])
            .arg(dir.join(format!("{task}.json"))));
        assert_eq!(out.code, 0, "{task}: {}", out.stderr);
        eprintln!("{task} on {}:\n{}", model.display(), out.stdout);
        let j = read_json(&dir.join(format!("{task}.json")));
        assert_eq!(j["results"].as_array().unwrap().len(), 1 + 3 * 3);
    }
    std::fs::remove_dir_all(&dir).ok();
}
