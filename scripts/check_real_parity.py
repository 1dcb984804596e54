#!/usr/bin/env python3
"""Real-weights parity: auris vs. transformers on models/real-mini, on real speech and sounds.

Run through `scripts/check_real_parity.sh` (pinned venv, clips downloaded into scripts/.cache/).

For every clip the engine is run through its command line (`auris inspect` for the tensors,
`auris caption --json --greedy` for the tokens) and transformers computes the same things in
float32 with eager attention, the way scripts/make_fixtures.py does:

  mel              WhisperFeatureExtractor input_features (80 x 3000)
  audio_embeds     audio_tower(...).last_hidden_state[:N]
  audio_scores     last encoder layer attention, mean over heads and valid queries, paired average
  prompt_logits    raw logits at the last prompt position
  greedy ids       32 new tokens, greedy (the checkpoint's generation_config is greedy)

Two references per clip:
  * end to end: transformers loads the clip itself (soundfile, scipy resample_poly to 16 kHz);
  * model only: transformers runs on the engine's own log-mel (`auris inspect`'s input_features).
    For native 16 kHz WAV both are the same up to float noise; for resampled or compressed clips
    (8 kHz asterisk prompts, 44.1/48 kHz sounds) the front ends differ (resampler, MP3 decoder), so
    the model-only reference is what checks the encoder and decoder tightly, and the end-to-end
    one measures how far the front end moves the result.

The engine is also run with --dtype bf16 (speech clips) and compared with the f32 reference, next
to transformers itself in bf16 on the same input (how much drift bf16 causes on its own).
Pruning figures (score concentration, temporal coverage of segmentwise vs. topk) come from the
engine's f32 scores and its --prune selections and go to bench/real_mini_pruning.json.

Exit status 1 when a parity check fails (the thresholds are in CHECKS below).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from reference_select import sel_segmentwise, sel_topk  # noqa: E402
from audio import load_16k  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
from real_clips import CLIPS  # noqa: E402  (scripts/lib is on the path, above)
from auris_cli import auris  # noqa: E402
SR = 16_000
MAX_NEW = 32
KEEP = 0.25
SEGMENTS = 10
TOKENS_PER_S = 25  # 40 ms per audio token
INSTRUCTION = "Describe the audio in one sentence."

# Thresholds (f32 engine vs. f32 transformers). "rel" = max abs diff / max |reference|.
CHECKS = {
    # native 16 kHz WAV, end to end: both front ends see the same samples (crates/audio's own
    # fixture test uses the same bound)
    "mel_abs_16k": 1e-3,
    # resampled or decoded clips, end to end: the resamplers differ on purpose (rubato's long sinc
    # vs. resample_poly's 61-tap Kaiser, see crates/audio/src/resample.rs and
    # crates/audio/tests/frontend.rs), and so do the MP3/Vorbis decoders. Near the Nyquist
    # frequency of the source (4 kHz for the asterisk prompts) and in the top mel bins (6.8-8 kHz)
    # that moves the features by up to ~1. Checked on the bins whose filter ends below 85% of the
    # lower Nyquist frequency, over the valid frames: mean and 99th percentile of |diff|.
    "mel_inband_mean_resampled": 1e-3,
    "mel_inband_p99_resampled": 5e-3,
    # model only (transformers on the engine's own mel), every clip
    "embeds_rel": 5e-4,
    "scores_rel": 5e-4,      # relative to the largest score
    "logits_rel": 1e-4,
    # greedy ids must be identical; a divergence is tolerated only at a step whose reference
    # top-1/top-2 margin is below this (a near-tie that float noise may flip)
    "near_tie": 1e-2,
}


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# reference
# ----------------------------------------------------------------------------------------------


def reference(model, inputs: dict) -> dict:
    """Encoder output, scores, projector output, prompt logits and greedy tokens, like make_fixtures."""
    tower = model.model.audio_tower
    captured = {}

    def pre_hook(_m, args, kwargs):
        if "features" not in captured:
            captured["features"] = args[0] if args else kwargs["input_features"]
            captured["mask"] = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    h = tower.register_forward_pre_hook(pre_hook, with_kwargs=True)
    with torch.no_grad():
        g = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, output_scores=True,
                           output_logits=True, return_dict_in_generate=True)
    h.remove()
    F = int(inputs["feature_attention_mask"].sum())
    T1, N = (F - 1) // 2 + 1, ((F - 1) // 2 + 1 - 2) // 2 + 1
    with torch.no_grad():
        enc = tower(captured["features"], attention_mask=captured["mask"], output_attentions=True)
        att = enc.attentions[-1]
        if T1 < att.shape[-1]:
            assert float(att[0, :, :, T1:].abs().max()) == 0.0, "padded keys received attention"
        s = att[0].mean(dim=0)[:T1].mean(dim=0)
        pooled = (s[0::2] + s[1::2]) / 2
        hidden = enc.last_hidden_state[0]
        projected = model.model.multi_modal_projector(hidden)
    P = inputs["input_ids"].shape[1]
    new = g.sequences[0, P:].tolist()
    margins = []
    for sc in g.scores:
        top = torch.topk(sc[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    eos = model.generation_config.eos_token_id
    return {
        "F": F, "T1": T1, "N": N,
        "tensors": {
            "input_features": captured["features"][0].float().numpy(),
            "audio_embeds": hidden[:N].float().numpy(),
            "audio_scores": pooled[:N].float().numpy(),
            "projected": projected[:N].float().numpy(),
            "prompt_logits": g.logits[0][0].float().numpy().astype(np.float32),
        },
        "greedy_ids": new,
        "greedy_margins": margins,
        "stopped_on_eos": bool(new and new[-1] in eos),
    }


def run_reference(model, proc, clip_path: Path, prompt: str) -> dict:
    wav, meta = load_16k(clip_path)
    inputs = dict(proc(text=prompt, audio=wav, sampling_rate=SR, return_tensors="pt"))
    r = reference(model, inputs)
    r["input_ids"] = inputs["input_ids"][0].tolist()
    r["audio_meta"] = meta
    return r


def run_reference_on_mel(model, mel: np.ndarray, n_samples: int, ids: list[int]) -> dict:
    F = math.ceil(n_samples / 160)
    mask = torch.zeros((1, mel.shape[1]), dtype=torch.long)
    mask[0, :F] = 1
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones((1, len(ids)), dtype=torch.long),
              "input_features": torch.from_numpy(mel)[None].to(model.dtype), "feature_attention_mask": mask}
    return reference(model, inputs)


# ----------------------------------------------------------------------------------------------
# engine
# ----------------------------------------------------------------------------------------------


def engine_inspect(binary, model, clip, prompt, out: Path, dtype: str) -> tuple[dict, dict]:
    out.parent.mkdir(parents=True, exist_ok=True)
    [v] = auris(binary, ["inspect", "--json", "--quiet", "--model", str(model), "--dtype", dtype,
                         "--raw-prompt", prompt, "--out", str(out), str(clip)])
    return v, load_np(str(out))


def engine_caption(binary, model, clips, prompt, dtype: str, extra=()) -> list[dict]:
    return auris(binary, ["caption", "--json", "--quiet", "--greedy", "--model", str(model), "--dtype", dtype,
                          "--raw-prompt", prompt, *extra, *[str(c) for c in clips]])


# ----------------------------------------------------------------------------------------------
# comparisons
# ----------------------------------------------------------------------------------------------


def diff(a: np.ndarray, b: np.ndarray) -> dict:
    assert a.shape == b.shape, (a.shape, b.shape)
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.abs(b).max())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "max_ref": scale,
            "rel": float(d.max() / max(scale, 1e-12))}


_FE = None


def mel_stats(ours: np.ndarray, ref: np.ndarray, frames: int, source_rate: int) -> dict:
    """Max/mean over the valid frames, and mean/p99 over the mel bins whose filter ends below 85%
    of the lower Nyquist frequency (source or 16 kHz), where both resamplers pass the signal."""
    global _FE
    if _FE is None:
        from transformers import WhisperFeatureExtractor  # noqa: PLC0415

        fe = WhisperFeatureExtractor(feature_size=ours.shape[0])
        freqs = np.linspace(0, SR / 2, fe.mel_filters.shape[0])
        _FE = np.array([freqs[np.nonzero(fe.mel_filters[:, j])[0].max()] for j in range(fe.mel_filters.shape[1])])
    upper = _FE
    d = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    valid = d[:, :frames]
    band = upper <= 0.85 * min(source_rate, SR) / 2
    inb = valid[band]
    return {"max_abs": float(d.max()), "valid_max_abs": float(valid.max()), "valid_mean_abs": float(valid.mean()),
            "inband_bins": int(band.sum()), "inband_max_abs": float(inb.max()), "inband_mean_abs": float(inb.mean()),
            "inband_p99_abs": float(np.quantile(inb, 0.99))}


def greedy_compare(ours: list[int], ours_stop, ref: dict) -> dict:
    expected = list(ref["greedy_ids"])
    if ref["stopped_on_eos"]:
        expected = expected[:-1]
    n = min(len(ours), len(expected))
    first = next((i for i in range(n) if ours[i] != expected[i]), None)
    if first is None and len(ours) != len(expected):
        first = n
    out = {"identical": first is None, "n_ref": len(ref["greedy_ids"]), "first_divergence": first}
    if first is not None and first < len(ref["greedy_margins"]):
        out["ref_margin_at_divergence"] = ref["greedy_margins"][first]
    out["min_ref_margin"] = min(ref["greedy_margins"]) if ref["greedy_margins"] else None
    return out


def greedy_ok(g: dict) -> bool:
    return g["identical"] or g.get("ref_margin_at_divergence", 1.0) < CHECKS["near_tie"]


BINS = {"1s": 25, "0.4s": 10, "0.2s": 5}  # coverage bin sizes, in tokens


def prune_stats(scores: np.ndarray, kept: dict[str, list[int]], mel: np.ndarray) -> dict:
    N = len(scores)
    K = max(1, min(N, math.floor(KEEP * N + 0.5)))
    order = np.argsort(-scores, kind="stable")
    # per-token loudness: mean log-mel over the 4 frames a token covers
    energy = mel[:, : 4 * N].mean(axis=0).reshape(N, 4).mean(axis=1)
    out = {"n_tokens": N, "budget": K,
           "top25_share": float(scores[order[:K]].sum() / scores.sum()),
           "top10_share": float(scores[order[: max(1, math.floor(0.1 * N + 0.5))]].sum() / scores.sum()),
           "first_token_over_mean": float(scores[0] / scores.mean()),
           "last_token_over_mean": float(scores[-1] / scores.mean()),
           "corr_with_loudness": float(np.corrcoef(scores, energy)[0, 1])}
    for name, idx in kept.items():
        gaps = np.diff([-1, *sorted(idx), N]) - 1  # dropped tokens between kept ones (and the ends)
        out[name] = {"n_kept": len(idx), "max_gap_s": float(gaps.max()) / TOKENS_PER_S}
        for label, b in BINS.items():
            out[name][f"coverage_{label}"] = len({i // b for i in idx}) / math.ceil(N / b)
    return out


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "real-mini")
    ap.add_argument("--auris", type=Path, default=ROOT / "target" / "debug" / "auris")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "real-parity")
    ap.add_argument("--pruning-out", type=Path, default=ROOT / "bench" / "real_mini_pruning.json")
    ap.add_argument("--parity-out", type=Path, default=ROOT / "bench" / "real_mini_parity.json")
    ap.add_argument("--bf16", choices=["speech", "all", "none"], default="speech",
                    help="clips the bf16 engine run covers (bf16 on CPU is slow)")
    ap.add_argument("--only", nargs="*", help="clip names to run (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    model_dir = args.model.resolve()
    clips = [c for c in CLIPS if not args.only or c[0] in args.only]
    missing = [p for _, p, _ in clips if not (ROOT / p).exists()]
    if missing:
        raise SystemExit(f"missing clips (run scripts/check_real_parity.sh, it downloads them): {missing}")

    t0 = time.time()
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    proc = AutoProcessor.from_pretrained(model_dir)
    conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": INSTRUCTION}]}]
    prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    log(f"transformers {transformers.__version__}, torch {torch.__version__}; model loaded in {time.time() - t0:.0f} s")
    log(f"prompt: {prompt!r}")

    cache = {}

    def model_bf16():
        if "bf16" not in cache:
            cache["bf16"] = Qwen2AudioForConditionalGeneration.from_pretrained(
                model_dir, dtype=torch.bfloat16, attn_implementation="eager").eval()
        return cache["bf16"]

    work = args.work
    (work / "ref").mkdir(parents=True, exist_ok=True)
    report = {"model": str(args.model), "prompt": prompt, "max_new_tokens": MAX_NEW, "checks": CHECKS, "clips": {}}
    failures = []

    # ---- engine: greedy runs (one model load per batch) and pruning selections
    paths = [ROOT / p for _, p, _ in clips]
    t = time.time()
    cap32 = engine_caption(args.auris, model_dir, paths, prompt, "f32", ["--max-new-tokens", str(MAX_NEW)])
    log(f"engine f32 greedy: {len(cap32)} clips in {time.time() - t:.0f} s")
    sel = {}
    for strat in ("segmentwise", "topk"):
        t = time.time()
        sel[strat] = engine_caption(args.auris, model_dir, paths, prompt, "f32",
                                    ["--max-new-tokens", "1", "--prune", strat, "--keep", str(KEEP),
                                     "--segments", str(SEGMENTS)])
        log(f"engine --prune {strat}: {time.time() - t:.0f} s")
    bf16_names = [n for n, _, g in clips if args.bf16 == "all" or (args.bf16 == "speech" and g.startswith("speech"))]
    cap_bf16 = {}
    if bf16_names:
        t = time.time()
        bpaths = [ROOT / p for n, p, _ in clips if n in bf16_names]
        for n, v in zip(bf16_names, engine_caption(args.auris, model_dir, bpaths, prompt, "bf16",
                                                   ["--max-new-tokens", str(MAX_NEW)])):
            cap_bf16[n] = v
        log(f"engine bf16 greedy: {len(bpaths)} clips in {time.time() - t:.0f} s")

    pruning = {}
    for (name, rel_path, group), c32, cseg, ctop in zip(clips, cap32, sel["segmentwise"], sel["topk"]):
        t = time.time()
        clip = ROOT / rel_path
        rec = {"clip": rel_path, "group": group}
        ev, et = engine_inspect(args.auris, model_dir, clip, prompt, work / "engine" / f"{name}.f32.safetensors", "f32")
        ref = run_reference(model, proc, clip, prompt)
        rec["audio"] = {**ref["audio_meta"], "duration_s": ev["duration_s"], "engine_n_samples_16k":
                        int(round(ev["duration_s"] * SR))}
        rec["N"] = {"engine": ev["n_audio_tokens"], "reference": ref["N"]}
        save_np(ref["tensors"], str(work / "ref" / f"{name}.safetensors"))
        (work / "ref" / f"{name}.json").write_text(json.dumps({
            "clip": rel_path, "group": group, "resampled": ref["audio_meta"]["resampled"], "prompt": prompt,
            "input_ids": ref["input_ids"], "F": ref["F"], "T1": ref["T1"], "N": ref["N"],
            "greedy_ids": ref["greedy_ids"], "greedy_margins": ref["greedy_margins"],
            "stopped_on_eos": ref["stopped_on_eos"], "checks": CHECKS}, indent=1) + "\n")

        native = not ref["audio_meta"]["resampled"] and rel_path.endswith(".wav")
        same_len = ev["n_audio_tokens"] == ref["N"]
        e2e = {"prompt_ids_equal": ev["prompt_token_ids"] == ref["input_ids"], "same_n_tokens": same_len,
               "mel": mel_stats(et["input_features"], ref["tensors"]["input_features"], min(ref["F"] + 2, 3000),
                                ref["audio_meta"]["sample_rate"])}
        if same_len:
            for k in ("audio_embeds", "audio_scores", "projected", "prompt_logits"):
                e2e[k] = diff(et[k], ref["tensors"][k])
            e2e["greedy"] = greedy_compare(c32["output_token_ids"], None, ref)
        rec["end_to_end"] = e2e

        # model only: transformers on the engine's mel (tight for every clip)
        if native:
            mo_ref = ref
        else:
            mo_ref = run_reference_on_mel(model, et["input_features"], rec["audio"]["engine_n_samples_16k"],
                                          ev["prompt_token_ids"])
            assert mo_ref["N"] == ev["n_audio_tokens"], (mo_ref["N"], ev["n_audio_tokens"])
        mo = {k: diff(et[k], mo_ref["tensors"][k]) for k in ("audio_embeds", "audio_scores", "projected", "prompt_logits")}
        mo["greedy"] = greedy_compare(c32["output_token_ids"], None, mo_ref)
        mo["reference"] = "same as end_to_end" if native else "transformers on the engine's input_features"
        rec["model_only"] = mo

        ok = (mo["audio_embeds"]["rel"] <= CHECKS["embeds_rel"] and mo["audio_scores"]["rel"] <= CHECKS["scores_rel"]
              and mo["prompt_logits"]["rel"] <= CHECKS["logits_rel"] and greedy_ok(mo["greedy"]))
        if native:
            ok = ok and e2e["prompt_ids_equal"] and e2e["mel"]["max_abs"] <= CHECKS["mel_abs_16k"]
        else:
            ok = ok and (e2e["mel"]["inband_mean_abs"] <= CHECKS["mel_inband_mean_resampled"]
                         and e2e["mel"]["inband_p99_abs"] <= CHECKS["mel_inband_p99_resampled"])
        rec["pass"] = bool(ok)
        if not ok:
            failures.append(name)

        # bf16
        if name in cap_bf16:
            bv, bt = engine_inspect(args.auris, model_dir, clip, prompt, work / "engine" / f"{name}.bf16.safetensors",
                                    "bf16")
            b = {"prompt_logits_vs_reference": diff(bt["prompt_logits"], mo_ref["tensors"]["prompt_logits"]),
                 "prompt_logits_vs_engine_f32": diff(bt["prompt_logits"], et["prompt_logits"]),
                 "audio_embeds_vs_reference": diff(bt["audio_embeds"], mo_ref["tensors"]["audio_embeds"]),
                 "audio_scores_vs_reference": diff(bt["audio_scores"], mo_ref["tensors"]["audio_scores"]),
                 "top1_equal": int(np.argmax(bt["prompt_logits"])) == int(np.argmax(mo_ref["tensors"]["prompt_logits"])),
                 "greedy": greedy_compare(cap_bf16[name]["output_token_ids"], None, mo_ref),
                 "text": cap_bf16[name]["text"]}
            # transformers itself in bf16 on the same input: how much of the drift is bf16's own
            t16 = run_reference_on_mel(model_bf16(), et["input_features"], rec["audio"]["engine_n_samples_16k"],
                                       ev["prompt_token_ids"])
            b["transformers_bf16"] = {
                "prompt_logits_vs_reference": diff(t16["tensors"]["prompt_logits"], mo_ref["tensors"]["prompt_logits"]),
                "audio_embeds_vs_reference": diff(t16["tensors"]["audio_embeds"], mo_ref["tensors"]["audio_embeds"]),
                "top1_equal": int(np.argmax(t16["tensors"]["prompt_logits"]))
                == int(np.argmax(mo_ref["tensors"]["prompt_logits"])),
                "greedy": greedy_compare(t16["greedy_ids"][:-1] if t16["stopped_on_eos"] else t16["greedy_ids"],
                                         None, mo_ref)}
            b["engine_vs_transformers_bf16_logits"] = diff(bt["prompt_logits"], t16["tensors"]["prompt_logits"])
            rec["bf16"] = b

        # pruning (engine f32 scores and selections)
        scores = et["audio_scores"].astype(np.float64)
        kept = {"segmentwise": cseg["kept_indices"], "topk": ctop["kept_indices"]}
        N = len(scores)
        K = max(1, min(N, math.floor(KEEP * N + 0.5)))
        kept["uniform"] = [math.floor((i + 0.5) * N / K) for i in range(K)]
        st = prune_stats(scores, kept, et["input_features"])
        st["group"] = group
        st["duration_s"] = ev["duration_s"]
        # the engine's selections equal the plain definitions on its own scores, and how many of
        # them survive on the reference's scores
        refs = mo_ref["tensors"]["audio_scores"].astype(np.float64)
        st["selection_checks"] = {
            "segmentwise_matches_definition": kept["segmentwise"] == sel_segmentwise(scores, K, SEGMENTS),
            "topk_matches_definition": kept["topk"] == sel_topk(scores, K),
            "segmentwise_overlap_with_reference_scores":
                len(set(kept["segmentwise"]) & set(sel_segmentwise(refs, K, SEGMENTS))) / K,
            "topk_overlap_with_reference_scores": len(set(kept["topk"]) & set(sel_topk(refs, K))) / K,
        }
        if not (st["selection_checks"]["segmentwise_matches_definition"] and st["selection_checks"]["topk_matches_definition"]):
            failures.append(f"{name} (selection)")
            rec["pass"] = False
        pruning[name] = st
        rec["text"] = c32["text"]
        report["clips"][name] = rec
        m = mo
        log(f"{name:28s} N={ev['n_audio_tokens']:3d} mel {e2e['mel']['max_abs']:.2e} | model-only: embeds {m['audio_embeds']['rel']:.1e} "
            f"scores {m['audio_scores']['rel']:.1e} logits {m['prompt_logits']['max_abs']:.2e} (rel {m['prompt_logits']['rel']:.1e}) "
            f"greedy {'=' if m['greedy']['identical'] else 'diverge@' + str(m['greedy']['first_divergence'])}"
            + (f" | bf16 logits {rec['bf16']['prompt_logits_vs_reference']['max_abs']:.2f} greedy "
               f"{'=' if rec['bf16']['greedy']['identical'] else 'diverge@' + str(rec['bf16']['greedy']['first_divergence'])}"
               f" (transformers bf16: logits {rec['bf16']['transformers_bf16']['prompt_logits_vs_reference']['max_abs']:.2f}"
               f" greedy {'=' if rec['bf16']['transformers_bf16']['greedy']['identical'] else 'diverge@' + str(rec['bf16']['transformers_bf16']['greedy']['first_divergence'])})"
               if "bf16" in rec else "")
            + f" | {'ok' if rec['pass'] else 'FAIL'} ({time.time() - t:.0f} s)")

    # ---- summaries
    def agg(values):
        values = list(values)
        return {"max": max(values), "median": float(np.median(values))} if values else None

    recs = report["clips"].values()
    summary = {
        "clips": len(report["clips"]),
        "passed": sum(r["pass"] for r in recs),
        "f32_model_only": {k: agg(r["model_only"][k]["rel"] for r in recs) for k in
                           ("audio_embeds", "audio_scores", "projected", "prompt_logits")},
        "f32_prompt_logits_max_abs": agg(r["model_only"]["prompt_logits"]["max_abs"] for r in recs),
        "f32_greedy_identical": f"{sum(r['model_only']['greedy']['identical'] for r in recs)}/{len(report['clips'])}",
        "f32_mel_max_abs_native_16k": agg(r["end_to_end"]["mel"]["max_abs"] for r in recs if r["group"] == "speech"),
        "f32_mel_max_abs_resampled": agg(r["end_to_end"]["mel"]["max_abs"] for r in recs if r["group"] != "speech"),
        "f32_mel_inband_mean_resampled": agg(r["end_to_end"]["mel"]["inband_mean_abs"] for r in recs
                                             if r["group"] != "speech"),
        "f32_mel_inband_p99_resampled": agg(r["end_to_end"]["mel"]["inband_p99_abs"] for r in recs
                                            if r["group"] != "speech"),
        "f32_end_to_end_logits_rel_resampled": agg(r["end_to_end"]["prompt_logits"]["rel"] for r in recs
                                                    if r["group"] != "speech" and "prompt_logits" in r["end_to_end"]),
        "f32_end_to_end_greedy_identical_resampled":
            f"{sum(r['end_to_end'].get('greedy', {}).get('identical', False) for r in recs if r['group'] != 'speech')}"
            f"/{sum(r['group'] != 'speech' for r in recs)}",
    }
    b16 = [r["bf16"] for r in recs if "bf16" in r]
    if b16:
        summary["bf16"] = {
            "clips": len(b16),
            "prompt_logits_max_abs_vs_reference": agg(b["prompt_logits_vs_reference"]["max_abs"] for b in b16),
            "prompt_logits_rel_vs_reference": agg(b["prompt_logits_vs_reference"]["rel"] for b in b16),
            "audio_embeds_rel_vs_reference": agg(b["audio_embeds_vs_reference"]["rel"] for b in b16),
            "prompt_top1_equal": f"{sum(b['top1_equal'] for b in b16)}/{len(b16)}",
            "greedy_identical": f"{sum(b['greedy']['identical'] for b in b16)}/{len(b16)}",
            "first_divergence": {n: r["bf16"]["greedy"]["first_divergence"] for n, r in report["clips"].items()
                                 if "bf16" in r},
            "transformers_bf16": {
                "prompt_logits_max_abs_vs_reference": agg(b["transformers_bf16"]["prompt_logits_vs_reference"]["max_abs"]
                                                          for b in b16),
                "audio_embeds_rel_vs_reference": agg(b["transformers_bf16"]["audio_embeds_vs_reference"]["rel"]
                                                     for b in b16),
                "prompt_top1_equal": f"{sum(b['transformers_bf16']['top1_equal'] for b in b16)}/{len(b16)}",
                "greedy_identical": f"{sum(b['transformers_bf16']['greedy']['identical'] for b in b16)}/{len(b16)}",
                "first_divergence": {n: r["bf16"]["transformers_bf16"]["greedy"]["first_divergence"]
                                     for n, r in report["clips"].items() if "bf16" in r},
            },
        }
    report["summary"] = summary
    report["failures"] = failures
    (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")

    groups = {}
    for g in ("speech", "speech_8k", "sound"):
        rows = [s for s in pruning.values() if s["group"] == g]
        if rows:
            mean = lambda f: round(float(np.mean([f(s) for s in rows])), 4)  # noqa: E731
            groups[g] = {"clips": len(rows), "top25_share_mean": mean(lambda s: s["top25_share"]),
                         "first_token_over_mean_mean": mean(lambda s: s["first_token_over_mean"]),
                         "corr_with_loudness_mean": mean(lambda s: s["corr_with_loudness"])}
            for k in ("segmentwise", "topk", "uniform"):
                groups[g][k] = {f"coverage_{label}_mean": mean(lambda s, k=k, label=label: s[k][f"coverage_{label}"])
                                for label in BINS}
                groups[g][k]["max_gap_s_mean"] = mean(lambda s, k=k: s[k]["max_gap_s"])
    args.pruning_out.parent.mkdir(parents=True, exist_ok=True)
    args.pruning_out.write_text(json.dumps({
        "generator": "scripts/check_real_parity.sh",
        "model": "models/real-mini (whisper-base encoder, Qwen2.5-Coder-0.5B-Instruct decoder, random projector)",
        "scores": "auris f32 encoder attention scores: last layer, mean over heads and valid queries, paired average",
        "keep": KEEP, "segments": SEGMENTS, "bin": f"1 s = {TOKENS_PER_S} audio tokens",
        "definitions": {
            "top25_share": "share of the total score held by the top 25% (the budget K) of tokens",
            "coverage_1s": "fraction of 1 s bins (ceil(N/25); the last one may be partial) that keep at least one "
                           "token; coverage_0.4s and coverage_0.2s the same with 10- and 5-token bins",
            "first_token_over_mean": "score of token 0 / mean score (attention sink at the start)",
            "corr_with_loudness": "Pearson correlation of the scores with the mean log-mel of each token's 4 frames",
            "max_gap_s": "longest run of dropped tokens, in seconds",
            "uniform": "evenly spaced K tokens, for comparison",
        },
        "groups": groups,
        "clips": {n: json.loads(json.dumps(s), parse_float=lambda x: round(float(x), 4)) for n, s in pruning.items()},
    }, indent=1) + "\n")
    args.parity_out.write_text(json.dumps({"generator": "scripts/check_real_parity.sh", "summary": summary,
                                           "failures": failures}, indent=1) + "\n")
    log(json.dumps(summary, indent=1))
    log(json.dumps(groups, indent=1))
    if failures:
        log(f"FAILED: {failures}")
        return 1
    log(f"real-weights parity: all {len(report['clips'])} clips pass ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
