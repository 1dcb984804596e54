"""How far each weight mode moves the model's next-token distributions from the f32 reference.

Run through `scripts/quant_quality.sh` (it builds auris and fetches the clips); by default
the 17 real clips of the real-weights parity check. For each clip:
1. the reference: `auris caption --dtype f32 --greedy --max-new-tokens N` (default prompt);
2. the evaluation text: the reference's rendered prompt followed by its greedy output, given to
   every mode as `--raw-prompt`, so all modes are scored on the same tokens (the prompt, the
   audio and N greedy steps, teacher-forced);
3. `auris inspect` in each mode saves the logits of every position; against the f32 logits:
   mean KL divergence KL(p_f32 || p_mode) over all positions, and top-1 agreement;
4. `auris caption --greedy` in each mode: is the N-token greedy output identical to f32's?

The modes are weight storages (`auto`, `bf16`, `f16`, `q8_0`, `q4_0`, `q4_k`, all computing in
f32) and compute precisions (`compute_bf16`: `--compute bf16`, products on bf16 inputs and
weights). The f32 reference pins `--compute f32`.

With --torch, transformers does the same on the same clips and texts in bfloat16 against
float32 (`Qwen2AudioForConditionalGeneration.from_pretrained(dtype=...)`, eager attention, the
front end of scripts/lib/audio.py): mean KL of its bf16 next-token distributions from its f32
ones over the same teacher-forced text, top-1 agreement, and whether `generate` (greedy, N new
tokens, same prompt) gives the same tokens in both dtypes. That is how far PyTorch's own bf16
moves the model: the yardstick for `compute_bf16`.

Writes a JSON report (per clip and overall) and prints markdown tables.

    $VENV/bin/python scripts/quant_quality.py --auris target/release/auris --model models/real-mini \
        --modes auto,bf16,q8_0,q4_0,q4_k --out bench/quant_quality.json [CLIP...]
    $VENV/bin/python scripts/quant_quality.py --auris target/release/auris --model models/real-mini \
        --modes compute_bf16 --torch --out bench/compute_quality.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "lib"))
from real_clips import CLIPS  # noqa: E402  (scripts/lib is on the path from here on)
from auris_cli import auris  # noqa: E402

# Mode name -> the auris flags that select it. "auto" keeps the checkpoint's own precision
# (float16 for real-mini) and computes in f32 (auto compute is f32 without a bf16 kernel);
# "compute_bf16" rounds every product's inputs and the weights to bf16.
MODE_FLAGS = {
    "f32": ["--dtype", "f32", "--compute", "f32"],
    "compute_bf16": ["--compute", "bf16"],
    "auto": ["--dtype", "auto"],
    "bf16": ["--dtype", "bf16"],
    "f16": ["--dtype", "f16"],
    "q8_0": ["--quant", "q8_0"],
    "q4_0": ["--quant", "q4_0"],
    "q4_k": ["--quant", "q4_k"],
}


def log(msg: str) -> None:
    print(f"quant_quality: {msg}", file=sys.stderr, flush=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare_logits(ref: np.ndarray, ours: np.ndarray) -> dict:
    """Per-position KL(p_ref || p_ours) and top-1 agreement over (positions, vocab) logits."""
    assert ref.shape == ours.shape, (ref.shape, ours.shape)
    lp, lq = log_softmax(ref), log_softmax(ours)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    top1 = ref.argmax(axis=-1) == ours.argmax(axis=-1)
    return {"positions": int(ref.shape[0]), "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agree": int(top1.sum())}


def summarise(rows: list[dict]) -> dict:
    """Positions-weighted mean KL, max KL, top-1 agreement and identical greedy outputs."""
    positions = sum(r["positions"] for r in rows)
    return {
        "kl_mean": sum(r["kl_mean"] * r["positions"] for r in rows) / positions,
        "kl_max": max(r["kl_max"] for r in rows),
        "top1_agree": sum(r["top1_agree"] for r in rows) / positions,
        "greedy_identical": f"{sum(r['greedy_identical'] for r in rows)}/{len(rows)}",
    }


def print_table(first: str, summary: dict) -> None:
    print(f"| {first} | mean KL | max KL | top-1 agreement | identical 32-token greedy outputs |")
    print("|---|---|---|---|---|")
    for mode, s in summary.items():
        print(f"| {mode} | {s['kl_mean']:.2e} | {s['kl_max']:.2e} | {100 * s['top1_agree']:.2f} % "
              f"| {s['greedy_identical']} |")


def torch_bf16_vs_f32(model_dir: Path, clips: list[Path], refs: list[dict], max_new: int) -> dict:
    """Per clip: transformers in bfloat16 against float32 on the teacher-forced text of `refs`
    (KL, top-1) and greedy generation from the same prompt (identical tokens?)."""
    import torch  # noqa: PLC0415  (only this part needs it)
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration  # noqa: PLC0415
    from audio import SR, load_16k  # noqa: PLC0415

    proc = AutoProcessor.from_pretrained(model_dir)
    models = {name: Qwen2AudioForConditionalGeneration.from_pretrained(
        model_dir, dtype=dtype, attn_implementation="eager").eval()
        for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16))}
    rows = {}
    for clip, ref in zip(clips, refs):
        wav, _ = load_16k(clip)
        logits, greedy = {}, {}
        for name, model in models.items():
            def inputs(text: str) -> dict:
                x = dict(proc(text=text, audio=wav, sampling_rate=SR, return_tensors="pt"))
                x["input_features"] = x["input_features"].to(model.dtype)
                return x
            with torch.no_grad():
                logits[name] = model(**inputs(ref["prompt"] + ref["text"])).logits[0].float().numpy()
                x = inputs(ref["prompt"])
                g = model.generate(**x, max_new_tokens=max_new, do_sample=False)
            greedy[name] = g[0, x["input_ids"].shape[1]:].tolist()
        rows[clip.stem] = compare_logits(logits["f32"], logits["bf16"])
        rows[clip.stem]["greedy_identical"] = greedy["f32"] == greedy["bf16"]
        log(f"torch {clip.stem}: {rows[clip.stem]}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--auris", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--modes", default="auto,bf16,q8_0,q4_0,q4_k")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "quant-quality")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "quant_quality.json")
    ap.add_argument("--torch", action="store_true",
                    help="also transformers bfloat16 against float32 on the same clips and texts")
    ap.add_argument("clips", type=Path, nargs="*",
                    help="audio files (default: the 17 clips of scripts/lib/real_clips.py)")
    args = ap.parse_args()
    if not args.clips:
        args.clips = [ROOT / path for _, path, _ in CLIPS]
    missing = [str(c) for c in args.clips if not c.exists()]
    if missing:
        raise SystemExit(f"missing clips (scripts/quant_quality.sh downloads them): {missing}")
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODE_FLAGS]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; known: {sorted(MODE_FLAGS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    common = ["--json", "--quiet", "--greedy", "--model", str(args.model),
              "--max-new-tokens", str(args.max_new_tokens)]
    t0 = time.time()
    refs = auris(args.auris, ["caption", *common, *MODE_FLAGS["f32"], *map(str, args.clips)])
    report = {"model": str(args.model), "max_new_tokens": args.max_new_tokens, "modes": modes,
              "clips": {}}
    for clip, ref in zip(args.clips, refs):
        raw = ref["prompt"] + ref["text"]
        logits = {}
        for mode in ["f32", *modes]:
            out = args.work / f"{clip.stem}.{mode}.safetensors"
            auris(args.auris, ["inspect", "--json", "--quiet", "--model", str(args.model),
                               *MODE_FLAGS[mode], "--raw-prompt", raw, "--out", str(out), str(clip)])
            logits[mode] = load_file(str(out))["all_logits"]
        report["clips"][clip.stem] = {m: compare_logits(logits["f32"], logits[m]) for m in modes}
        log(f"{clip.stem}: {len(ref['output_token_ids'])} reference tokens ({time.time() - t0:.0f} s)")
    for mode in modes:
        greedy = auris(args.auris, ["caption", *common, *MODE_FLAGS[mode], *map(str, args.clips)])
        for clip, ref, g in zip(args.clips, refs, greedy):
            report["clips"][clip.stem][mode]["greedy_identical"] = \
                g["output_token_ids"] == ref["output_token_ids"]
        log(f"greedy {mode} done ({time.time() - t0:.0f} s)")
    report["summary"] = {m: summarise([c[m] for c in report["clips"].values()]) for m in modes}
    if args.torch:
        rows = torch_bf16_vs_f32(args.model, args.clips, refs, args.max_new_tokens)
        report["torch_bf16_vs_f32"] = {"clips": rows, "summary": summarise(list(rows.values()))}
        log(f"transformers bf16 vs f32 done ({time.time() - t0:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print_table("mode (auris, against auris f32)", report["summary"])
    if args.torch:
        print()
        print_table("transformers", {"bf16 against f32": report["torch_bf16_vs_f32"]["summary"]})
    log(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
