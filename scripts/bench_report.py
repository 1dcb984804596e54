"""Merge the timings of auris, PyTorch and llama.cpp into bench/results.json and a markdown table.

Run by scripts/bench.sh (seconds; no model is loaded here):

    python3 scripts/bench_report.py --auris30 auris_30s.json --auris10 auris_10s.json \
        --torch torch.json --llamacpp llamacpp.json --threads 2 --out bench/results.json \
        --md bench/results.md

--auris30 is `auris bench --json --keeps 1,0.25` on the 29.9 s clip, --auris10 `auris bench --json`
on the 10 s clip; --auris30-bf16 and --auris10-bf16 the same on the checkpoint stored in bf16
(auris keeps the bf16 weights and computes in f32), reported against auris' f32 times; --torch and --llamacpp are written by scripts/bench_peers.py. A missing or
unreadable peer file leaves that engine with only a `notes` entry. The markdown table goes to
stdout and to --md; ratios are auris / peer for times, and for decode the ratio of times per
token (peer tok/s / auris tok/s), so below 1 always means auris is faster.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

KEYS = [
    "mel_30s_s", "encoder_30s_s", "encoder_10s_s", "prefill_800_s", "prefill_238_s",
    "decode_tok_s", "ttft_30s_none_s", "ttft_30s_seg25_s", "e2e_30s_none_s", "e2e_30s_seg25_s",
    "peak_rss_mb",
]
LABELS = {
    "mel_30s_s": "log-mel, 30 s",
    "encoder_30s_s": "encoder, one 30 s window",
    "encoder_10s_s": "encoder, 10 s clip",
    "prefill_800_s": "LLM prefill, {p800} tokens",
    "prefill_238_s": "LLM prefill, {p238} tokens",
    "decode_tok_s": "decode after the {p800}-token prompt (tok/s)",
    "ttft_30s_none_s": "time to first token, 30 s, no pruning",
    "ttft_30s_seg25_s": "time to first token, 30 s, segmentwise keep 0.25",
    "e2e_30s_none_s": "end to end ({n} tokens), no pruning",
    "e2e_30s_seg25_s": "end to end ({n} tokens), segmentwise keep 0.25",
    "peak_rss_mb": "peak RSS (MiB)",
}
PEERS = ["torch", "llamacpp"]


def sec(stat: dict) -> float:
    """A `{min_ms, median_ms}` stat of `auris bench` as median seconds."""
    return stat["median_ms"] / 1e3


def keep_report(report: dict, keep: float) -> dict | None:
    """The per-keep entry of an `auris bench` report for one keep ratio."""
    for entry in report["keeps"]:
        if abs(entry["keep"] - keep) < 1e-6:
            return entry
    return None


def auris_engine(r30: dict, r10: dict | None) -> dict:
    """Map `auris bench --json` reports to the result keys.

    ttft in `auris bench` is decode + mel + encoder (with scores when pruning) + selection and
    projection + prefill up to the first logits; e2e adds the generated tokens.
    """
    out: dict = {"engine": "auris"}
    notes = []
    detail: dict = {"decode_audio_s": sec(r30["decode_audio"]),
                    "encoder_with_scores_30s_s": sec(r30["encoder_with_scores"]),
                    "scores_overhead_pct": r30["scores_overhead_pct"]}
    out["mel_30s_s"] = sec(r30["mel"])
    out["encoder_30s_s"] = sec(r30["encoder"])
    if r10 is not None:
        out["encoder_10s_s"] = sec(r10["encoder"])
    else:
        notes.append("no report on the 10 s clip: encoder_10s_s not measured")
    full, pruned = keep_report(r30, 1.0), keep_report(r30, 0.25)
    if full is not None:
        out["prefill_800_s"] = sec(full["prefill"])
        out["decode_tok_s"] = full["decode_tok_s"]
        out["ttft_30s_none_s"] = sec(full["ttft"])
        out["e2e_30s_none_s"] = sec(full["e2e"])
        detail["prefill_800_tokens"] = full["prompt_tokens"]
        detail["ttft_prompt_tokens"] = full["prompt_tokens"]
        detail["ttft_audio_tokens"] = full["n_kept"]
        detail["select_project_none_s"] = sec(full["select_project"])
    if pruned is not None:
        out["prefill_238_s"] = sec(pruned["prefill"])
        out["ttft_30s_seg25_s"] = sec(pruned["ttft"])
        out["e2e_30s_seg25_s"] = sec(pruned["e2e"])
        detail["prefill_238_tokens"] = pruned["prompt_tokens"]
        detail["seg25_kept_tokens"] = pruned["n_kept"]
        detail["select_project_seg25_s"] = sec(pruned["select_project"])
    out["peak_rss_mb"] = max(r30["peak_rss_mb"], r10["peak_rss_mb"] if r10 else 0.0)
    # The machine's limits as `auris bench` measured them, and the work of the stages in FLOPs
    # (auris' counts; the peers do the same products on the same shapes).
    if "fma_peak_gflops" in r30:
        detail["fma_peak_gflops"] = r30["fma_peak_gflops"]
        detail["fma_level"] = r30["fma_level"]
        detail["read_bandwidth_gb_s"] = r30["read_bandwidth"] / 1e9
        detail["encoder_30s_gflop"] = r30["encoder_gflop"]
        if full is not None:
            detail["prefill_800_gflop"] = full["prefill_gflop"]
    notes.append("prefill_800_s/prefill_238_s are the real prompt's prefill (audio embeddings + "
                 "text) at keep 1 and keep 0.25; peers prefill the same number of tokens")
    out["notes"] = notes
    out["detail"] = detail
    out["repeat"], out["new_tokens"] = r30["repeat"], r30["new_tokens"]
    return out


def machine() -> dict:
    """CPU model, logical cores, memory and kernel of this machine."""
    info = {"cpu": platform.processor() or "unknown", "logical_cores": os.cpu_count(),
            "kernel": platform.release()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["simd"] = [f for f in ["avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16",
                                            "avx512_vnni", "avx_vnni", "amx_bf16"] if f in flags]
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def git_head(root: Path) -> str | None:
    """The checked-out commit, with `-dirty` when the tree has changes."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def fmt(key: str, value: float | None) -> str:
    """A cell: seconds with 2-3 significant decimals, tok/s and MiB as numbers."""
    if value is None:
        return "-"
    if key == "peak_rss_mb":
        return f"{value:.0f}"
    if key == "decode_tok_s":
        return f"{value:.2f}"
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s"


def ratio(key: str, auris: float | None, peer: float | None) -> str:
    """auris / peer for times and memory; peer / auris for tok/s (a ratio of times per token)."""
    if auris is None or peer is None or auris <= 0 or peer <= 0:
        return "-"
    r = peer / auris if key == "decode_tok_s" else auris / peer
    return f"{r:.2f}x"


def markdown(results: dict) -> str:
    """The table of times and ratios, with the run's context on top."""
    eng = results["engines"]
    m = results["machine"]
    tokens = results.get("prompt_tokens", {})
    p800, p238 = tokens.get("none", 800), tokens.get("seg25", 238)
    n = eng.get("auris", {}).get("new_tokens", 64)
    lines = [
        f"Benchmark of {results['date']} on {m.get('cpu')} ({m.get('logical_cores')} logical cores, "
        f"{m.get('memory_gib')} GiB; {' '.join(m.get('simd', []))}), {results['threads']} threads, f32, "
        f"{results['checkpoint']}, median of {results['repeat']} run(s) after {results['warmup']} "
        f"warm-up(s){' (--quick)' if results.get('quick') else ''}; auris {results.get('auris_commit')}.",
        "",
        "| work | auris | PyTorch | llama.cpp | auris / PyTorch | auris / llama.cpp |",
        "|---|---|---|---|---|---|",
    ]
    for key in KEYS:
        a = eng.get("auris", {}).get(key)
        t = eng.get("torch", {}).get(key)
        ll = eng.get("llamacpp", {}).get(key)
        label = LABELS[key].format(p800=p800, p238=p238, n=n)
        lines.append(f"| {label} | {fmt(key, a)} | {fmt(key, t)} | {fmt(key, ll)} | "
                     f"{ratio(key, a, t)} | {ratio(key, a, ll)} |")
    a = eng.get("auris", {})
    if a.get("ttft_30s_none_s") and a.get("ttft_30s_seg25_s"):
        lines += ["", f"auris pruning (segmentwise, keep 0.25) / no pruning: time to first token "
                      f"{a['ttft_30s_seg25_s'] / a['ttft_30s_none_s']:.2f}x"
                  + (f", end to end {a['e2e_30s_seg25_s'] / a['e2e_30s_none_s']:.2f}x"
                     if a.get("e2e_30s_none_s") and a.get("e2e_30s_seg25_s") else "") + "."]
    lines += bf16_table(eng, p800, p238)
    lines += machine_limit(eng)
    warning = busy_warning(results.get("load_average_at_start"))
    if warning:
        lines += ["", f"**{warning}**"]
    lines += ["", "Ratios: auris time / peer time (for decode: peer tok/s / auris tok/s); below 1 "
                  "means auris is faster. `-`: not measured (see `notes` in bench/results.json)."]
    for name in ["auris", *PEERS]:
        for note in eng.get(name, {}).get("notes", []):
            lines.append(f"- {name}: {note}")
    return "\n".join(lines) + "\n"


BF16_KEYS = ["encoder_30s_s", "encoder_10s_s", "prefill_800_s", "prefill_238_s",
             "ttft_30s_none_s", "ttft_30s_seg25_s", "decode_tok_s", "peak_rss_mb"]


def bf16_table(eng: dict, p800: int, p238: int) -> list[str]:
    """auris with bf16 weights (f32 compute) against its f32 run."""
    a, b = eng.get("auris", {}), eng.get("auris_bf16")
    if not b:
        return []
    lines = ["", "auris with the checkpoint stored in bf16 (`--dtype auto`: bf16 weights, widened "
                 "to f32 inside the products):", "",
             "| work | auris f32 | auris bf16 | bf16 / f32 |", "|---|---|---|---|"]
    for key in BF16_KEYS:
        label = LABELS[key].format(p800=p800, p238=p238, n="")
        f, h = a.get(key), b.get(key)
        r = "-" if not f or not h else (f"{f / h:.2f}x" if key == "decode_tok_s" else f"{h / f:.2f}x")
        lines.append(f"| {label} | {fmt(key, f)} | {fmt(key, h)} | {r} |")
    return lines


def machine_limit(eng: dict) -> list[str]:
    """The machine-limit lines: measured FMA peak and bandwidth, each engine's share of the peak."""
    d = eng.get("auris", {}).get("detail", {})
    peak = d.get("fma_peak_gflops")
    if not peak:
        return []
    parts = []
    for key, work, label in [("encoder_30s_s", "encoder_30s_gflop", "encoder, 30 s window"),
                             ("prefill_800_s", "prefill_800_gflop", "prefill of the full prompt")]:
        if not d.get(work):
            continue
        shares = []
        for name, title in [("auris", "auris"), ("torch", "PyTorch"), ("llamacpp", "llama.cpp")]:
            t = eng.get(name, {}).get(key)
            if t:
                gflops = d[work] / t
                shares.append(f"{title} {gflops:.0f} GFLOP/s ({100 * gflops / peak:.0f} %)")
        parts.append(f"{label} ({d[work]:.0f} GFLOP): " + ", ".join(shares))
    return ["", f"Machine limit, measured by `auris bench`: f32 FMA peak {peak:.0f} GFLOP/s "
                f"({d.get('fma_level')}), read bandwidth {d.get('read_bandwidth_gb_s', 0):.1f} GB/s. "
                "Share of the peak: " + "; ".join(parts) + "."]


def ordered(engine: dict) -> dict:
    """An engine's object with the result keys first, in the table's order."""
    head = {"engine": engine.get("engine")}
    head.update({k: engine[k] for k in KEYS if k in engine})
    head.update({k: v for k, v in engine.items() if k not in head})
    return head


def busy_warning(load_start: float | None) -> str | None:
    """A warning when the machine was busy as the run began (1-minute load average above 1)."""
    if load_start is None or load_start <= 1.0:
        return None
    return (f"warning: the 1-minute load average was {load_start:.2f} when the run began: other "
            "work competed for the cores, so these times (multi-threaded decode above all, whose "
            "threads wait on each other) do not measure the engines; rerun on a quiet machine")


def read_json(path: Path | None) -> tuple[dict | None, str | None]:
    """A JSON file, or None and the reason it could not be read."""
    if path is None:
        return None, "not run"
    try:
        return json.loads(path.read_text()), None
    except (OSError, json.JSONDecodeError) as err:
        return None, f"no result ({err})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--auris30", type=Path, required=True)
    parser.add_argument("--auris10", type=Path)
    parser.add_argument("--torch", type=Path)
    parser.add_argument("--llamacpp", type=Path)
    parser.add_argument("--auris30-bf16", type=Path)
    parser.add_argument("--auris10-bf16", type=Path)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, help="timed runs (default: auris's report)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--checkpoint", default="bench/work/realistic")
    parser.add_argument("--load-start", type=float,
                        help="1-minute load average when the run began (from /proc/loadavg)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()

    r30, err = read_json(args.auris30)
    if r30 is None:
        raise SystemExit(f"auris report {args.auris30}: {err}")
    r10, _ = read_json(args.auris10)
    engines = {"auris": ordered(auris_engine(r30, r10))}
    b30, _ = read_json(args.auris30_bf16)
    if b30 is not None:
        b10, _ = read_json(args.auris10_bf16)
        engines["auris_bf16"] = {**ordered(auris_engine(b30, b10)), "engine": "auris_bf16"}
    for name in PEERS:
        data, err = read_json(getattr(args, name))
        if data is None:
            engines[name] = {"engine": name, "notes": [f"{err}; see the log of scripts/bench.sh"]}
        else:
            engines[name] = ordered(data)
    root = Path(__file__).resolve().parent.parent
    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "threads": args.threads,
        "machine": machine(),
        "checkpoint": args.checkpoint,
        "clips": {"30s": r30["audio"], "30s_duration_s": r30["duration_s"],
                  "10s": r10["audio"] if r10 else None},
        "prompt_tokens": {"none": engines["auris"]["detail"].get("prefill_800_tokens"),
                          "seg25": engines["auris"]["detail"].get("prefill_238_tokens")},
        "warmup": args.warmup,
        "repeat": args.repeat if args.repeat is not None else r30["repeat"],
        "quick": args.quick,
        "load_average_at_start": args.load_start,
        "auris_commit": git_head(root),
        "engines": engines,
    }
    # The engines also sit at the top level, as the format asks (`auris`, `torch`, ...).
    for name, data in engines.items():
        results[name] = data
    del results["engines"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown({**results, "engines": engines})
    if args.md:
        args.md.write_text(table)
    print(table, end="")


if __name__ == "__main__":
    main()
