#!/usr/bin/env bash
# A real Prometheus server (Debian's `prometheus` package) scrapes `auris serve` (models/tiny-chat)
# on GET /metrics every 200 ms while 4 clients send 8 chat completions with audio (half of them
# streamed) and one bad request (HTTP 400). Then its HTTP API (/api/v1/query) must say:
#   - the target is up (`up` is 1) and its samples carry model_name="models/tiny-chat";
#   - vllm:request_success_total (summed over finished_reason) is 8, the 400 not counted;
#   - vllm:time_to_first_token_seconds_count, vllm:e2e_request_latency_seconds_count and
#     vllm:request_queue_time_seconds_count are 8;
#   - vllm:prompt_tokens_total and vllm:generation_tokens_total equal the sums of the answers'
#     usage (prompt_tokens, completion_tokens);
#   - vllm:num_requests_running was at least 1 in some scrape during the load, and it and
#     vllm:num_requests_waiting are 0 once every answer is in.
# Prints the values and "prometheus check: ok"; exits 1 naming the first value that differs.
#
# Usage: scripts/prometheus_check.sh [BINARY]   (default target/debug/auris)
# Needs python3 (standard library only) and curl. Installs Prometheus from Debian (apt-get) when
# it is missing. Loopback only; both servers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:-target/debug/auris}")"
MODEL=models/tiny-chat
source scripts/lib/debian.sh
source scripts/lib/serve.sh
ensure_debian_package prometheus prometheus
WORK="$(mktemp -d /tmp/auris-prometheus.XXXXXX)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "prometheus check FAILED: $*" >&2; exit 1; }

"$BIN" serve --model "$MODEL" --device cpu --port 0 --threads 1 2>"$WORK/auris.log" &
PIDS+=($!)
ADDR="$(serve_address "$WORK/auris.log" "${PIDS[0]}")" || fail "auris serve exited or is not ready"

PROM_PORT="$(free_port)"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 200ms
  scrape_timeout: 200ms
scrape_configs:
  - job_name: auris
    metrics_path: /metrics
    static_configs:
      - targets: ["${ADDR#http://}"]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn 2>"$WORK/prometheus.log" &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"
for _ in $(seq 300); do
  curl -sf "$PROM/-/ready" >/dev/null && break
  kill -0 "${PIDS[1]}" 2>/dev/null || { cat "$WORK/prometheus.log" >&2; fail "prometheus exited"; }
  sleep 0.1
done
curl -sf "$PROM/-/ready" >/dev/null || { cat "$WORK/prometheus.log" >&2; fail "prometheus not ready"; }

python3 - "$ADDR" "$PROM" "$MODEL" <<'PYEOF' || { tail -n 20 "$WORK/auris.log" "$WORK/prometheus.log" >&2; exit 1; }
import base64, json, sys, threading, time, urllib.error, urllib.parse, urllib.request

auris, prom, model = sys.argv[1:4]
CLIENTS, REQUESTS = 4, 8


def fail(msg):
    sys.exit(f"prometheus check FAILED: {msg}")


def query(expr):
    """The value of an instant query with one series, or None when it has none."""
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.load(r)
    if doc["status"] != "success":
        fail(f"query {expr}: {doc}")
    result = doc["data"]["result"]
    if len(result) > 1:
        fail(f"query {expr}: {len(result)} series, expected one: {result}")
    return (result[0]["metric"], float(result[0]["value"][1])) if result else (None, None)


def wait_for(expr, want, seconds=30):
    """Polls until the query gives `want` (after the next scrapes); returns the last value."""
    deadline = time.monotonic() + seconds
    while True:
        _, value = query(expr)
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def post(body):
    req = urllib.request.Request(f"{auris}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def usage_of(status, text, stream):
    if status != 200:
        fail(f"a request got HTTP {status}: {text[:300]}")
    if not stream:
        return json.loads(text)["usage"]
    events = [l[5:].strip() for l in text.splitlines() if l.startswith("data:")]
    if events[-1] != "[DONE]":
        fail(f"a stream did not end with [DONE]: {events[-3:]}")
    usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    if len(usage) != 1:
        fail(f"a stream carried {len(usage)} usage chunks")
    return usage[0]


if wait_for('up{job="auris"}', 1.0) != 1.0:
    fail("the target is not up after 30 s of scrapes")
clips = ["tests/fixtures/audio/librivox_0930_16k.wav", "tests/fixtures/audio/tone_440_16k.wav"]
audio = [base64.b64encode(open(c, "rb").read()).decode() for c in clips]
lock, usages, todo = threading.Lock(), [], list(range(REQUESTS))


def client():
    while True:
        with lock:
            if not todo:
                return
            i = todo.pop()
        stream = i % 2 == 0
        body = {"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": audio[i % 2], "format": "wav"}},
            {"type": "text", "text": "What is heard?"}]}],
            "max_tokens": 48, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        u = usage_of(*post(body), stream)
        with lock:
            usages.append(u)


threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if len(usages) != REQUESTS:
    fail(f"{len(usages)} of {REQUESTS} requests answered")
status, text = post({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})
if status != 400:
    fail(f"max_tokens 0 got HTTP {status}, expected 400: {text[:300]}")
prompt = sum(u["prompt_tokens"] for u in usages)
generated = sum(u["completion_tokens"] for u in usages)

job = '{job="auris"}'
expected = {
    f"sum(vllm:request_success_total{job})": REQUESTS,
    f"vllm:time_to_first_token_seconds_count{job}": REQUESTS,
    f"vllm:e2e_request_latency_seconds_count{job}": REQUESTS,
    f"vllm:request_queue_time_seconds_count{job}": REQUESTS,
    f"vllm:prompt_tokens_total{job}": prompt,
    f"vllm:generation_tokens_total{job}": generated,
    f"vllm:num_requests_running{job}": 0,
    f"vllm:num_requests_waiting{job}": 0,
}
# The first expression waits for a scrape taken after the last answer; the others read it.
first = next(iter(expected))
wait_for(first, float(expected[first]))
for expr, want in expected.items():
    _, value = query(expr)
    print(f"{expr} = {value} (expected {want})")
    if value != float(want):
        fail(f"{expr} is {value}, expected {want}")
_, busy = query(f"max_over_time(vllm:num_requests_running{job}[5m])")
print(f"max_over_time(vllm:num_requests_running{job}[5m]) = {busy} (expected >= 1)")
if not busy or busy < 1:
    fail("no scrape saw a running request during the load")
labels, _ = query(f"vllm:time_to_first_token_seconds_sum{job}")
if labels.get("model_name") != model:
    fail(f"model_name label {labels.get('model_name')!r}, expected {model!r}")
_, ttft_p50 = query(f"histogram_quantile(0.5, vllm:time_to_first_token_seconds_bucket{job})")
print(f"histogram_quantile(0.5, vllm:time_to_first_token_seconds_bucket) = {ttft_p50} s")
print("prometheus check: ok")
PYEOF
