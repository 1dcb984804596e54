#!/usr/bin/env bash
# Three `auris serve` replicas (models/tiny-chat) behind HAProxy on loopback, health-checked on
# GET /ready; 8 clients send a bounded load through the balancer (scripts/serve_load.py) and
# one replica gets SIGTERM mid-run. Exit 0 only when all of this holds:
#   - no client request fails (every answer a 200);
#   - the drained replica answers 503 on /ready before it exits, and exits 0;
#   - the replicas' vllm:request_success_total counters (GET /metrics; the drained replica's
#     last scrape, taken after its last request) add up to the requests sent.
# HAProxy holds each request whole (option http-buffer-request) and retries one that a draining
# replica refuses (503) or a closed port refuses on another replica (retry-on 503
# conn-failure, option redispatch), as a balancer in front of replicas that drain should.
#
# Usage: scripts/replicas_check.sh [BINARY]   (default target/debug/auris)
# Env: REQUESTS (120), CLIENTS (8). Needs python3 (standard library only) and curl.
# Installs HAProxy from Debian (apt-get) when it is missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:-target/debug/auris}")"
REQUESTS="${REQUESTS:-120}"
CLIENTS="${CLIENTS:-8}"
CLIP=tests/fixtures/audio/tone_440_16k.wav
source scripts/lib/debian.sh
source scripts/lib/serve.sh
ensure_debian_package haproxy haproxy
WORK="$(mktemp -d /tmp/auris-replicas.XXXXXX)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "replicas check FAILED: $*" >&2; exit 1; }

ADDRS=()
for i in 1 2 3; do
  "$BIN" serve --model models/tiny-chat --device cpu --port 0 --threads 1 \
    --max-new-tokens 16 --drain-linger-ms 2000 2>"$WORK/replica$i.log" &
  PIDS+=($!)
done
for i in 1 2 3; do
  addr="$(serve_address "$WORK/replica$i.log" "${PIDS[i - 1]}")" || fail "replica $i not ready"
  ADDRS+=("$addr")
done
LB_PORT="$(free_port)"
cat >"$WORK/haproxy.cfg" <<EOF
global
  maxconn 256
  # Room for a whole request body: HAProxy retries only a request it still holds.
  tune.bufsize 1048576
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout http-request 30s
  # Wait for the whole request before picking a replica: HAProxy can only retry a request it
  # still holds in full.
  option http-buffer-request
  retries 3
  option redispatch 1
  retry-on 503 conn-failure empty-response
frontend auris
  bind 127.0.0.1:$LB_PORT
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /ready
  http-check expect status 200
  default-server inter 100ms fall 1 rise 2
  server r1 ${ADDRS[0]#http://} check
  server r2 ${ADDRS[1]#http://} check
  server r3 ${ADDRS[2]#http://} check
EOF
haproxy -c -q -f "$WORK/haproxy.cfg"
haproxy -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
PIDS+=($!)
LB="http://127.0.0.1:$LB_PORT"
for _ in $(seq 100); do curl -sf "$LB/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$LB/ready" >/dev/null || fail "HAProxy does not answer on $LB"

success() { # ADDR -> the replica's vllm:request_success_total, summed over its labels
  curl -sf "$1/metrics" | awk '/^vllm:request_success_total/ {s += $NF} END {print s + 0}'
}

echo "== $REQUESTS requests from $CLIENTS clients through HAProxy ($LB); replicas ${ADDRS[*]}"
start=$(date +%s.%N)
python3 scripts/serve_load.py "$LB" "$CLIP" --requests "$REQUESTS" --clients "$CLIENTS" \
  --all-ok >"$WORK/load.json" 2>"$WORK/load.err" &
LOAD=$!
# SIGTERM to replica 2 once a third of the requests are answered.
while :; do
  done_now=0
  for a in "${ADDRS[@]}"; do done_now=$((done_now + $(success "$a"))); done
  ((done_now * 3 >= REQUESTS)) && break
  kill -0 "$LOAD" 2>/dev/null || fail "the load ended before the SIGTERM: $(cat "$WORK/load.err")"
  sleep 0.05
done
R2="${ADDRS[1]}"
kill -TERM "${PIDS[1]}"
echo "SIGTERM to replica 2 ($R2) after $done_now answered requests"
ready_503=0
last=""
while kill -0 "${PIDS[1]}" 2>/dev/null; do
  code="$(curl -s -o /dev/null -w '%{http_code}' "$R2/ready" || true)"
  [[ "$code" == 503 ]] && ready_503=1
  if m="$(curl -sf "$R2/metrics")"; then last="$m"; fi
  sleep 0.02
done
wait "${PIDS[1]}" && r2_status=0 || r2_status=$?
((ready_503)) || fail "replica 2 never answered 503 on /ready before it exited"
((r2_status == 0)) || fail "replica 2 exited with status $r2_status"
wait "$LOAD" || fail "client requests failed: $(cat "$WORK/load.json" "$WORK/load.err")"
wall=$(echo "$(date +%s.%N) - $start" | bc)
r2_left="$(echo "$last" | awk '/^vllm:num_requests_(running|waiting)/ {s += $NF} END {print s + 0}')"
((r2_left == 0)) || fail "replica 2's last scrape still shows $r2_left requests in flight"
r2_count="$(echo "$last" | awk '/^vllm:request_success_total/ {s += $NF} END {print s + 0}')"
r1_count="$(success "${ADDRS[0]}")"
r3_count="$(success "${ADDRS[2]}")"
total=$((r1_count + r2_count + r3_count))
echo "load: $(cat "$WORK/load.json")"
echo "requests per replica (vllm:request_success_total): r1=$r1_count r2=$r2_count (drained) r3=$r3_count, sum $total of $REQUESTS sent"
echo "replica 2: /ready answered 503 while draining, exit status 0; wall time ${wall%.*} s"
((total == REQUESTS)) || fail "the counters add up to $total, not $REQUESTS"
((r2_count > 0)) || fail "replica 2 served nothing before its SIGTERM"
echo "replicas check: ok (0 requests lost)"
