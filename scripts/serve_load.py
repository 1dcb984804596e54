"""A bounded load test of `auris serve` (stdlib only): N requests from C concurrent clients;
reports the statuses, p50/p99 latency and the server's RSS before and after."""

import argparse
import base64
import json
import threading
import time
import urllib.error
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("clip")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pid", type=int, help="the server's pid, to read its RSS")
    ap.add_argument("--max-rss-growth-mib", type=float, default=64,
                    help="fail when the server's RSS grows more than this during the run")
    ap.add_argument("--all-ok", action="store_true",
                    help="fail unless every request gets 200 (429 and 503 count as failures)")
    a = ap.parse_args()
    audio = base64.b64encode(open(a.clip, "rb").read()).decode()
    body = json.dumps({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
        {"type": "text", "text": "What is heard?"}]}], "max_tokens": 16}).encode()
    lock, latencies, statuses, todo = threading.Lock(), [], {}, [a.requests]

    def client():
        while True:
            with lock:
                if todo[0] == 0:
                    return
                todo[0] -= 1
            req = urllib.request.Request(f"{a.base}/v1/chat/completions", data=body,
                                         headers={"content-type": "application/json"})
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(req) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError as e:
                status = f"error: {e}"
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1

    rss0 = rss_kib(a.pid) if a.pid else None
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss1 = rss_kib(a.pid) if a.pid else None
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3
    print(json.dumps({"requests": a.requests, "clients": a.clients, "statuses": statuses,
                      "p50_ms": round(q(0.50), 1), "p99_ms": round(q(0.99), 1),
                      "wall_s": round(wall, 2), "rss_kib_before": rss0, "rss_kib_after": rss1}))
    bad = {k: v for k, v in statuses.items() if k not in ((200,) if a.all_ok else (200, 429, 503))}
    if bad:
        raise SystemExit(f"unexpected statuses: {bad}")
    if a.pid and (rss1 - rss0) / 1024 > a.max_rss_growth_mib:
        raise SystemExit(f"server RSS grew {(rss1 - rss0) / 1024:.0f} MiB (> {a.max_rss_growth_mib})")


main()
