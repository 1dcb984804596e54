"""The decode-by-weight-type table of scripts/bench.sh: auris against llama.cpp, type by type.

    $VENV/bin/python scripts/bench_weights_report.py --run bench/work/run --weights f32,bf16,q8_0 \
        --threads 2 --out bench/results_weights.json

Reads RUN/weights_auris_<type>.json (`auris bench --json`) and RUN/weights_llamacpp_<type>.json
(`bench_peers.py llamacpp` without --mmproj), writes the JSON and a markdown table next to it
(.md) and prints the table. Ratios are auris / llama.cpp for speeds (above 1: auris is faster).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                keep = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                        "avx_vnni", "amx_tile"]
                return " ".join(f for f in keep if f in flags)
    except OSError:
        pass
    return ""


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = []
    for w in [w for w in args.weights.split(",") if w]:
        a = load(args.run / f"weights_auris_{w}.json")
        p = load(args.run / f"weights_llamacpp_{w}.json")
        if a is None:
            continue
        k = a["keeps"][0]
        row = {
            "weights": w,
            "auris_head": a["head_weights"],
            "prompt_tokens": k["prompt_tokens"],
            "auris_load_s": a["load_ms"] / 1e3,
            "auris_prefill_s": k["prefill"]["median_ms"] / 1e3,
            "auris_decode_tok_s": k["decode_tok_s"],
            "weight_gb_per_token": a["weight_bytes_per_token"] / 1e9,
            "read_bandwidth_gb_s": a["read_bandwidth"] / 1e9,
            "decode_limit_tok_s": a["decode_limit_tok_s"],
            "auris_fraction_of_limit": k["decode_tok_s"] / a["decode_limit_tok_s"],
            "auris_peak_rss_mb": a["peak_rss_mb"],
        }
        if p is not None:
            row |= {
                "llamacpp_prefill_s": p.get("prefill_800_s"),
                "llamacpp_decode_tok_s": p.get("decode_tok_s"),
                "llamacpp_peak_rss_mb": p.get("peak_rss_mb"),
                "decode_ratio": k["decode_tok_s"] / p["decode_tok_s"] if p.get("decode_tok_s") else None,
            }
        rows.append(row)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [
        f"{report['date']}, {report['cpu']} ({report['cpu_flags']}), {args.threads} threads; "
        f"read bandwidth {f(rows[0]['read_bandwidth_gb_s'] if rows else None, '.1f')} GB/s",
        "",
        "| weights | prompt | auris prefill | llama.cpp prefill | auris decode tok/s | llama.cpp decode tok/s "
        "| auris / llama.cpp | auris at % of bandwidth limit | auris peak RSS | llama.cpp peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['weights']} (head {r['auris_head']}) | {r['prompt_tokens']} | {f(r['auris_prefill_s'], '.2f')} s "
            f"| {f(r.get('llamacpp_prefill_s'), '.2f')} s | {f(r['auris_decode_tok_s'], '.2f')} "
            f"| {f(r.get('llamacpp_decode_tok_s'), '.2f')} | {f(r.get('decode_ratio'), '.2f')}x "
            f"| {100 * r['auris_fraction_of_limit']:.0f} % | {r['auris_peak_rss_mb']:.0f} MiB "
            f"| {f(r.get('llamacpp_peak_rss_mb'), '.0f')} MiB |")
    md = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
