"""The GPU check: a prebuilt auris binary against the committed tiny models and their reference
fixtures (tests/fixtures/ref/, made by transformers through scripts/make_fixtures.py), on one
device. Standard library only: a GPU machine lent for a few minutes has no network.

One summary line per check (PASS/FAIL/INFO), exit status 1 if any check failed. Run through
scripts/gpu_check.sh; `--device cpu` is the dry run that any machine can do.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# The largest checkpoints the bench check looks for, largest first (built by scripts that a GPU
# machine without network cannot run; whichever is present is used).
BENCH_CANDIDATES = ["bench/work/m7b", "bench/work/realistic", "models/real-mini", "models/tiny-chat"]


def load_case(model, case):
    with open(FIXTURES / "ref" / model / f"{case}.json") as f:
        return json.load(f)


class Checks:
    def __init__(self, binary, device, timeout):
        self.binary, self.device, self.timeout = binary, device, timeout
        self.failed = 0

    def auris(self, args):
        """Runs auris with --json on the chosen device; returns (first JSON line, stderr, s)."""
        cmd = [str(self.binary), *args, "--json", "--device", self.device]
        start = time.monotonic()
        try:
            out = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired:
            raise CheckError(f"timed out after {self.timeout} s: {' '.join(cmd)}")
        elapsed = time.monotonic() - start
        if out.returncode != 0:
            tail = out.stderr.strip().splitlines()[-3:]
            raise CheckError(f"exit {out.returncode}: {' | '.join(tail)}")
        lines = [l for l in out.stdout.splitlines() if l.strip()]
        if not lines:
            raise CheckError("no JSON output")
        return json.loads(lines[0]), out.stderr, elapsed

    def run(self, name, fn):
        try:
            status, detail = fn()
        except CheckError as e:
            status, detail = "FAIL", str(e)
        except Exception as e:  # a bug in this script is a failed check too, never a pass
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
        if status == "FAIL":
            self.failed += 1
        print(f"{status:4} {name}: {detail}", flush=True)


class CheckError(Exception):
    pass


def first_divergence(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return i
    return None if len(got) == len(want) else min(len(got), len(want))


def greedy_args(model, case, extra):
    c = load_case(model, case)
    audio = FIXTURES / c["audio"]
    if model == "tiny-chat":
        cmd = ["ask", "--greedy", "--question", "Describe the audio in one sentence."]
    else:
        cmd = ["caption"]
    return c, [*cmd, "--max-new-tokens", "24", "--model", f"models/{model}", str(audio), *extra]


def parity(checks, model, case, ids_key, extra, dtype):
    """Greedy ids against the reference: equal in f32; in bf16/f16 the drift is reported."""
    c, args = greedy_args(model, case, [*extra, "--dtype", dtype])
    v, _, s = checks.auris(args)
    got, want = v["output_token_ids"], c[ids_key]
    at = first_divergence(got, want)
    if dtype == "f32":
        if at is not None:
            return "FAIL", f"ids differ from the reference at token {at} of {len(want)} ({s:.1f} s)"
        kept = c.get("prune", {}).get("kept_indices")
        if kept is not None and v["kept_indices"] != kept:
            return "FAIL", "kept indices differ from the reference selection"
        return "PASS", f"{len(got)}/{len(want)} greedy ids equal the reference ({s:.1f} s)"
    same = len(want) if at is None else at
    margins = c.get(ids_key.replace("ids", "margins")) or []
    margin = f", reference top-2 margin there {margins[at]:.3f}" if at is not None and at < len(margins) else ""
    return "INFO", f"{dtype}: first {same}/{len(want)} ids equal the f32 reference{margin} ({s:.1f} s)"


def score_choices(checks):
    c = load_case("tiny-chat", "ask_mc_dog")
    choices = ["a dog barking", "a violin", "a car engine"]
    args = ["ask", "--score-choices", "--model", "models/tiny-chat", str(FIXTURES / c["audio"]),
            "--question", "What can be heard?"]
    for choice in choices:
        args += ["--choice", choice]
    v, _, s = checks.auris(args)
    want = max(c["choice_logprobs"], key=lambda x: x["sum"])["letter"]
    sums = ", ".join(f"{x:.2f}" for x in v["choice_logprobs"])
    ref = ", ".join(f"{x['sum']:.2f}" for x in c["choice_logprobs"])
    status = "PASS" if v["answer"] == want else "FAIL"
    return status, f"answer {v['answer']} (reference {want}); sums [{sums}] vs reference [{ref}] ({s:.1f} s)"


def bench(checks, model_dir):
    audio = FIXTURES / "audio" / "librivox_0930_16k.wav"
    args = ["bench", "--model", str(model_dir), str(audio), "--quick", "--keeps", "1,0.25"]
    v, _, s = checks.auris(args)
    parts = [f"{model_dir} ({v['weights']} weights), {v['duration_s']} s clip: "
             f"encoder {v['encoder']['min_ms']:.0f} ms"]
    for k in v["keeps"]:
        parts.append(f"keep {k['keep']:g}: prefill {k['prompt_tokens']} tok "
                     f"{k['prefill']['min_ms']:.0f} ms, ttft {k['ttft']['min_ms']:.0f} ms, "
                     f"decode {k['decode_tok_s']:.1f} tok/s")
    parts.append(f"peak RSS {v['peak_rss_mb']:.0f} MB")
    return "INFO", "; ".join(parts) + f" ({s:.1f} s)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "auris"),
                    help="the auris binary to check (default target/release/auris)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, metal or cpu (dry run)")
    ap.add_argument("--bench-model", help="checkpoint for the bench line (default: the largest "
                    "of " + ", ".join(BENCH_CANDIDATES) + " that exists)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per auris run")
    a = ap.parse_args()
    binary = Path(a.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"gpu_check: no executable auris at {binary} (build it, or pass --bin)")
    checks = Checks(binary.resolve(), a.device, a.timeout)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"INFO {version} on --device {a.device}", flush=True)

    seg = ["--prune", "segmentwise", "--keep", "0.25", "--segments", "10"]
    cases = [
        ("tiny-base", "caption_librivox", "greedy_ids", []),
        ("tiny-chat", "caption_librivox", "greedy_ids", []),
        ("tiny-chat", "prune_seg25_librivox", "pruned_greedy_ids", seg),
    ]
    for dtype in ["f32", "bf16"]:
        for model, case, key, extra in cases:
            checks.run(f"parity {dtype} {model}/{case}",
                       lambda: parity(checks, model, case, key, extra, dtype))
    checks.run("ask --score-choices tiny-chat/ask_mc_dog", lambda: score_choices(checks))
    model_dir = a.bench_model or next(
        (m for m in BENCH_CANDIDATES if (ROOT / m / "config.json").exists()), None)
    if model_dir:
        checks.run("bench", lambda: bench(checks, model_dir))
    print(f"{'FAIL' if checks.failed else 'PASS'} gpu_check: {checks.failed} failed check(s)")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
