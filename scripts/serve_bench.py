"""The serving benchmark's client and report (run by scripts/serve_bench.sh; standard library only).

    python3 scripts/serve_bench.py full-vocab SRC DST
    python3 scripts/serve_bench.py run --base URL --clients N --requests R --clips A,B,C \
        --label NAME [--max-tokens 64] [--body-extra JSON] --out RUN.json
    python3 scripts/serve_bench.py report --runs DIR --threads T --out serve.json

full-vocab: DST becomes SRC with a tokenizer.json that names every id of the model's vocabulary
(the weights, config and the other files are symbolic links to SRC's). The benchmark checkpoint
carries the tiny test tokenizer (406 tokens) while its random weights pick ids anywhere in
151,936: such ids decode to no text, so a streamed answer would carry no content until its end
and the time to first token could not be measured. The added ids are plain vocabulary entries
("Ġt<id>", decoded " t<id>") that no merge produces: prompts tokenize exactly as before, and
every generated token streams as text on both servers.

run: a closed loop in the style of `vllm bench serve --max-concurrency N`: N client threads
each send their next request as soon as the previous answer ends, R requests in all, request i
using clip i mod len(clips). Each request streams `/v1/chat/completions` with one `input_audio`
part (base64 WAV) and a text question, greedy, `max_tokens` new tokens, usage included. Per
request: time to first token (the first chunk with non-empty content), inter-token latencies
(between content chunks), end to end, prompt and completion tokens (the usage chunk; without
one, the content chunks are counted). Prints a `vllm bench serve`-style summary on stderr and
writes the requests and the summary as JSON.

report: merges the run files of a directory into one JSON document and a markdown table (next
to it, .md) with the machine (CPU model and SIMD flags from /proc/cpuinfo), threads and date.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import git_head, machine  # noqa: E402  (the scripts folder, above)

QUESTION = "Describe the audio."
PERCENTILES = (50, 99)


def full_vocab(src: Path, dst: Path) -> None:
    """DST: SRC with every vocabulary id in tokenizer.json (see the module doc)."""
    vocab_size = json.loads((src / "config.json").read_text())["text_config"]["vocab_size"]
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    # The special tokens join the vocabulary under their own ids: the tokenizers library gives an
    # added token that the model's vocabulary lacks the id after the vocabulary's last.
    for t in tok["added_tokens"]:
        vocab.setdefault(t["content"], t["id"])
    taken = set(vocab.values())
    for i in range(vocab_size):
        if i not in taken:
            name = f"\u0120t{i}"
            if name in vocab:
                sys.exit(f"{src}/tokenizer.json already has the token {name!r}")
            vocab[name] = i
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        link = dst / f.name
        if f.name == "tokenizer.json" or link.exists() or link.is_symlink():
            continue
        link.symlink_to(f.resolve())
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    print(f"wrote {dst} ({vocab_size} tokens named)", file=sys.stderr)


def percentile(values: list[float], p: float) -> float | None:
    """numpy's default (linear) percentile, as `vllm bench serve` reports them."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def stats(values: list[float]) -> dict:
    """Mean and percentiles of a list of seconds, in milliseconds."""
    out = {"mean_ms": sum(values) / len(values) * 1e3 if values else None}
    for p in PERCENTILES:
        q = percentile(values, p)
        out[f"p{p}_ms"] = None if q is None else q * 1e3
    return out


def request_body(clip: Path, max_tokens: int, extra: dict) -> bytes:
    audio = base64.b64encode(clip.read_bytes()).decode()
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
            {"type": "text", "text": QUESTION}]}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update(extra)
    return json.dumps(body).encode()


def one_request(base: urllib.parse.SplitResult, body: bytes, timeout: float) -> dict:
    """Streams one chat completion; times are seconds from sending the request."""
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=timeout)
    start = time.perf_counter()
    out: dict = {"ok": False, "ttft_s": None, "itl_s": [], "prompt_tokens": None,
                 "completion_tokens": None, "content_chunks": 0, "finish_reason": None}
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        out["status"] = resp.status
        if resp.status != 200:
            out["error"] = resp.read().decode(errors="replace")[:500]
            return out
        last = None
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                out["ok"] = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = json.dumps(chunk["error"])[:500]
                break
            now = time.perf_counter() - start
            for choice in chunk.get("choices") or []:
                if choice.get("delta", {}).get("content"):
                    out["content_chunks"] += 1
                    if out["ttft_s"] is None:
                        out["ttft_s"] = now
                    else:
                        out["itl_s"].append(now - last)
                    last = now
                if choice.get("finish_reason"):
                    out["finish_reason"] = choice["finish_reason"]
            if chunk.get("usage"):
                out["prompt_tokens"] = chunk["usage"].get("prompt_tokens")
                out["completion_tokens"] = chunk["usage"].get("completion_tokens")
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        out["e2e_s"] = time.perf_counter() - start
        conn.close()
    if out["completion_tokens"] is None:
        out["completion_tokens"] = out["content_chunks"]
    return out


def closed_loop(base: str, bodies: list[tuple[str, bytes]], clients: int, timeout: float):
    """Runs every body with `clients` concurrent clients; returns the results and the wall time."""
    url = urllib.parse.urlsplit(base)
    lock = threading.Lock()
    results: list[dict] = []
    queue = list(enumerate(bodies))

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, (clip, body) = queue.pop(0)
            r = one_request(url, body, timeout)
            r.update(index=i, clip=clip)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results, key=lambda r: r["index"]), time.perf_counter() - t0


def summarize(results: list[dict], duration: float, clients: int) -> dict:
    """The figures of `vllm bench serve` over the successful requests."""
    ok = [r for r in results if r["ok"] and r["ttft_s"] is not None]
    out_tokens = sum(r["completion_tokens"] for r in ok)
    in_tokens = sum(r["prompt_tokens"] or 0 for r in ok)
    # TPOT per request: the time after the first token over the tokens after the first.
    tpot = [(r["e2e_s"] - r["ttft_s"]) / (r["completion_tokens"] - 1)
            for r in ok if r["completion_tokens"] > 1]
    return {
        "max_concurrency": clients,
        "requests": len(results),
        "successful_requests": len(ok),
        "failed_requests": len(results) - len(ok),
        "duration_s": duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "mean_output_tokens": out_tokens / len(ok) if ok else None,
        "request_throughput": len(ok) / duration,
        "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        "ttft": stats([r["ttft_s"] for r in ok]),
        "tpot": stats(tpot),
        "itl": stats([x for r in ok for x in r["itl_s"]]),
        "e2el": stats([r["e2e_s"] for r in ok]),
    }


def print_summary(label: str, s: dict) -> None:
    """The summary block, laid out as `vllm bench serve` prints it."""
    def row(name: str, value, fmt: str = "{:.2f}") -> None:
        text = "-" if value is None else fmt.format(value)
        print(f"{name:<40}{text:<10}", file=sys.stderr)

    print(f"{' Serving Benchmark Result: ' + label + ' ':=^50}", file=sys.stderr)
    row("Successful requests:", s["successful_requests"], "{}")
    row("Failed requests:", s["failed_requests"], "{}")
    row("Maximum request concurrency:", s["max_concurrency"], "{}")
    row("Benchmark duration (s):", s["duration_s"])
    row("Total input tokens:", s["total_input_tokens"], "{}")
    row("Total generated tokens:", s["total_output_tokens"], "{}")
    row("Request throughput (req/s):", s["request_throughput"])
    row("Output token throughput (tok/s):", s["output_throughput"])
    row("Total token throughput (tok/s):", s["total_token_throughput"])
    for key, title in [("ttft", "Time to First Token"),
                       ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")]:
        name = key.upper()
        print(f"{title:-^50}", file=sys.stderr)
        row(f"Mean {name} (ms):", s[key]["mean_ms"])
        row(f"Median {name} (ms):", s[key]["p50_ms"])
        row(f"P99 {name} (ms):", s[key]["p99_ms"])
    print("=" * 50, file=sys.stderr)


def run(a: argparse.Namespace) -> None:
    clips = [Path(c) for c in a.clips.split(",")]
    extra = json.loads(a.body_extra) if a.body_extra else {}
    by_clip = {c: request_body(c, a.max_tokens, extra) for c in clips}
    bodies = [(clips[i % len(clips)].name, by_clip[clips[i % len(clips)]])
              for i in range(a.requests)]
    results, duration = closed_loop(a.base, bodies, a.clients, a.timeout)
    summary = summarize(results, duration, a.clients)
    print_summary(a.label, summary)
    doc = {"label": a.label, "engine": a.engine, "weights": a.weights, "clients": a.clients,
           "max_tokens": a.max_tokens, "body_extra": extra, "clips": [c.name for c in clips],
           "summary": summary, "requests": results}
    a.out.write_text(json.dumps(doc, indent=1))
    failed = [r for r in results if not r["ok"]]
    if failed:
        sys.exit(f"{a.label}: {len(failed)} of {len(results)} requests failed, the first: "
                 f"{failed[0].get('status')} {failed[0].get('error')}")


def cpu_flags() -> list[str]:
    """Every flag of the first CPU in /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def cell(value, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def table(runs: list[dict]) -> str:
    """One markdown row per engine, weight type and concurrency."""
    lines = [
        "| engine | weights | N | requests | output tok/s | req/s | TTFT p50 / p99 (ms) "
        "| TPOT p50 / p99 (ms) | ITL p50 (ms) | E2E p50 / p99 (s) | prompt tokens (mean) "
        "| output tokens (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["summary"]
        ok = s["successful_requests"] or 1
        lines.append(
            f"| {r['engine']} | {r['weights']} | {r['clients']} | {s['successful_requests']}"
            f"/{s['requests']} | {s['output_throughput']:.1f} | {s['request_throughput']:.2f} "
            f"| {cell(s['ttft']['p50_ms'])} / {cell(s['ttft']['p99_ms'])} "
            f"| {cell(s['tpot']['p50_ms'], '{:.1f}')} / {cell(s['tpot']['p99_ms'], '{:.1f}')} "
            f"| {cell(s['itl']['p50_ms'], '{:.1f}')} "
            f"| {cell(s['e2el']['p50_ms'] and s['e2el']['p50_ms'] / 1e3, '{:.2f}')} / "
            f"{cell(s['e2el']['p99_ms'] and s['e2el']['p99_ms'] / 1e3, '{:.2f}')} "
            f"| {s['total_input_tokens'] / ok:.0f} | {cell(s['mean_output_tokens'], '{:.1f}')} |")
    return "\n".join(lines) + "\n"


def report(a: argparse.Namespace) -> None:
    order = {"auris": 0, "llama-server": 1}
    runs = [json.loads(p.read_text()) for p in sorted(a.runs.glob("*.json"))]
    runs.sort(key=lambda r: (r["weights"], order.get(r["engine"], 2), r["clients"]))
    for r in runs:
        del r["requests"]
    m = machine()
    m["flags"] = cpu_flags()
    root = Path(__file__).resolve().parent.parent
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": m, "threads": a.threads, "auris_commit": git_head(root),
           "command": a.command, "elapsed_s": a.elapsed_s,
           "llama_server": a.llama_version, "load_average_start": a.load_start,
           "notes": a.note, "runs": runs}
    a.out.write_text(json.dumps(doc, indent=1))
    md = [f"Serving benchmark, {doc['date']}: {m.get('cpu')} ({m.get('logical_cores')} logical "
          f"cores, SIMD {' '.join(m.get('simd', []))}), {a.threads} threads per server, "
          f"auris {doc['auris_commit']}, llama-server {a.llama_version or '-'}, load average "
          f"{a.load_start} at the start.", "",
          f"Command: `{a.command}` ({a.elapsed_s} s in all, including builds and conversions "
          "when they ran).", ""]
    md += [f"- {n}" for n in a.note] + ([""] if a.note else [])
    md.append(table(runs))
    text = "\n".join(md)
    a.out.with_suffix(".md").write_text(text)
    print(text, end="")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fv = sub.add_parser("full-vocab")
    fv.add_argument("src", type=Path)
    fv.add_argument("dst", type=Path)
    r = sub.add_parser("run")
    r.add_argument("--base", required=True, help="the server, e.g. http://127.0.0.1:8080")
    r.add_argument("--clients", type=int, required=True)
    r.add_argument("--requests", type=int, required=True)
    r.add_argument("--clips", required=True, help="WAV files, comma-separated")
    r.add_argument("--max-tokens", type=int, default=64)
    r.add_argument("--body-extra", help="JSON object merged into every request body")
    r.add_argument("--timeout", type=float, default=600, help="seconds per request")
    r.add_argument("--label", required=True)
    r.add_argument("--engine", required=True)
    r.add_argument("--weights", required=True)
    r.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("report")
    rep.add_argument("--runs", type=Path, required=True)
    rep.add_argument("--threads", type=int, required=True)
    rep.add_argument("--llama-version")
    rep.add_argument("--load-start")
    rep.add_argument("--note", action="append", default=[])
    rep.add_argument("--command", help="the command line that made the runs")
    rep.add_argument("--elapsed-s", type=int, help="how long it ran")
    rep.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.cmd == "full-vocab":
        full_vocab(a.src, a.dst)
    elif a.cmd == "run":
        run(a)
    else:
        report(a)


if __name__ == "__main__":
    main()
