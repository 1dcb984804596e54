#!/usr/bin/env bash
# scripts/ray_eval.py on a two-node Ray cluster on loopback, with the second node killed while
# shards run. Exit 0 only when all of this holds:
#   - the reference: `auris eval mmau` of the committed mini manifest (tests/fixtures/eval) on
#     models/tiny-chat, on one machine, no Ray;
#   - the same sweep in SHARDS (12) shards on a one-node cluster (head only, 1 CPU): its merged
#     report equals the reference byte for byte;
#   - a second node joins (`ray start --address`, 1 CPU); the sweep again (merged report equal
#     to the reference), then once more, and as soon as a shard runs on the second node, every process of that node (raylet, workers, the auris
#     they run) gets `kill -9`: the job still finishes, the shard is retried (on the head), every
#     item is answered exactly once, and the merged report equals the reference byte for byte.
# Prints the figures: shards, nodes, attempts, retries, wall time.
#
# Usage: scripts/ray_eval_check.sh [BINARY]   (default target/debug/auris)
# Env: VENV (default .venv-ray), SHARDS (12), NEW_TOKENS (64), PORT (a free one).
# Loopback only; Ray's processes are started in their own sessions and only those are killed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
BIN="$(realpath "${1:-target/debug/auris}")"
VENV="${VENV:-.venv-ray}"
SHARDS="${SHARDS:-12}"
ensure_venv "$VENV" "$(sed -n 's/^RAY_PIN="\(.*\)"$/\1/p' scripts/ray_eval.sh)"
export RAY_USAGE_STATS_ENABLED=0 VENV
# Declare a node dead after 4 missed health checks 500 ms apart (the default is 5 x 3 s).
export RAY_health_check_period_ms=500 RAY_health_check_failure_threshold=4
WORK="$(mktemp -d /tmp/auris-ray-check.XXXXXX)"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
SWEEP=(eval mmau --model "$(realpath models/tiny-chat)"
  --manifest "$(realpath tests/fixtures/eval/mmau_mini.json)"
  --audio-dir "$(realpath tests/fixtures/audio)" --max-new-tokens "${NEW_TOKENS:-64}")
SIDS=()

session_pids() { ps -eo pid=,sid= | awk -v s="$1" '$2 == s {print $1}'; }
cleanup() {
  local sid
  for sid in "${SIDS[@]}"; do
    # shellcheck disable=SC2046
    kill -9 $(session_pids "$sid") 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ray start ARGS... in a session of its own; prints the session id.
ray_start() {
  local log="$WORK/ray-start-$RANDOM.log"
  setsid bash -c 'echo $$ >"$0.sid"; exec "$@"' "$log" "$VENV/bin/ray" start \
    --node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats "$@" </dev/null >"$log" 2>&1 \
    || { cat "$log" >&2; return 1; }
  cat "$log.sid"
}

ray_eval() { # WORK_SUBDIR -> runs the sharded sweep, merged report in WORK_SUBDIR.json
  scripts/ray_eval.sh --address "127.0.0.1:$PORT" --shards "$SHARDS" \
    --work-dir "$WORK/$1" --auris "$BIN" --no-timings --out "$WORK/$1.json" -- "${SWEEP[@]}" \
    >"$WORK/$1.out" 2>"$WORK/$1.err"
}

fail() { echo "ray eval check FAILED: $*" >&2; exit 1; }

echo "== reference: one machine, no Ray"
start=$(date +%s.%N)
"$BIN" "${SWEEP[@]}" --no-timings --quiet --out "$WORK/single.json" \
  --predictions "$WORK/single.jsonl" >/dev/null
single_s=$(echo "$(date +%s.%N) - $start" | bc)

echo "== one node ($SHARDS shards)"
SIDS+=("$(ray_start --head --port="$PORT" --temp-dir="$WORK/ray" --include-dashboard=false)")
ray_eval one || { cat "$WORK/one.err" >&2; fail "the one-node job failed"; }
cmp "$WORK/one.json" "$WORK/single.json" || fail "one node: the merged report differs"

echo "== two nodes ($SHARDS shards), then again with the second killed while a shard runs on it"
SID2="$(ray_start --address="127.0.0.1:$PORT" --node-manager-port=$((PORT + 1)) \
  --object-manager-port=$((PORT + 2)) --min-worker-port=$((PORT + 10)) \
  --max-worker-port=$((PORT + 60)))"
SIDS+=("$SID2")
NODE2="$(ps -eo sid=,args= | awk -v s="$SID2" '$1 == s' | grep -o -- '--node_id=[0-9a-f]*' \
  | head -n1 | cut -d= -f2)"
[[ -n "$NODE2" ]] || fail "no raylet for the second node"
ray_eval both || { cat "$WORK/both.err" >&2; fail "the two-node job failed"; }
cmp "$WORK/both.json" "$WORK/single.json" || fail "two nodes: the merged report differs"
# The job again, the second node killed as soon as it runs a shard that is not done. A job that
# ends before the second node took any shard (Ray may keep a short job on the head) is run
# again, up to 3 times.
kill_run() {
  rm -rf "$WORK/two" "$WORK/two.json"
  ray_eval two &
  JOB=$!
  killed=""
  ATTEMPTS="$WORK/two/attempts.jsonl"
  for _ in $(seq 6000); do
    # The first attempt on the second node whose shard is not done yet.
    while read -r shard; do
      if [[ ! -f "$(printf '%s/two/shard-%04d-of-%04d.jsonl' "$WORK" "$shard" "$SHARDS")" ]]; then
        killed="$shard"
        break
      fi
    done < <(grep -F "\"node\": \"$NODE2\"" "$ATTEMPTS" 2>/dev/null \
      | sed -n 's/.*"shard": \([0-9]*\).*/\1/p')
    if [[ -n "$killed" ]]; then
      # shellcheck disable=SC2046
      kill -9 $(session_pids "$SID2") 2>/dev/null || true
      echo "killed the second node (session $SID2) while it ran shard $killed"
      break
    fi
    kill -0 "$JOB" 2>/dev/null || break
    sleep 0.01
  done
}
for _ in 1 2 3; do
  kill_run
  [[ -n "$killed" ]] && break
  wait "$JOB" || true
  echo "the job ended before a shard ran on the second node; again"
done
[[ -n "$killed" ]] || fail "no shard ran on the second node"
wait "$JOB" || { cat "$WORK/two.err" >&2; fail "the two-node job failed after the kill"; }
cmp "$WORK/two.json" "$WORK/single.json" || fail "two nodes: the merged report differs"

"$VENV/bin/python" - "$WORK" "$SHARDS" "$killed" "$single_s" <<'PYEOF'
import glob, json, os, sys
work, n, killed, single_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
manifest = {i["id"] for i in json.load(open(json.load(open(glob.glob(f"{work}/two/*.run.json")[0]))["manifest"]))}
seen, owners = {}, {}
for path in sorted(glob.glob(f"{work}/two/shard-*.jsonl")):
    record = json.load(open(path[: -len(".jsonl")] + ".run.json"))
    for line in open(path):
        p = json.loads(line)
        key = (p["id"], p["strategy"], p["keep"], p["mode"])
        assert key not in seen, f"{key} twice: {seen[key]} and {path}"
        seen[key] = path
        owners.setdefault(p["id"], set()).add(path)
    for s in record["skipped"]:
        owners.setdefault(s["id"], set()).add(path)
assert set(owners) == manifest, (sorted(owners), sorted(manifest))
assert all(len(o) == 1 for o in owners.values()), owners
one = json.load(open(f"{work}/one/summary.json"))
both = json.load(open(f"{work}/both/summary.json"))
two = json.load(open(f"{work}/two/summary.json"))
assert two["retries"] >= 1, two
retried = [json.loads(l)["shard"] for l in open(f"{work}/two/attempts.jsonl")]
assert retried.count(killed) >= 2, (killed, retried)
print(f"every item exactly once: {len(manifest)} items, {len(seen)} predictions in {n} shards")
print(f"single machine, no Ray: {single_s:.1f} s")
print(f"1 node:  {one['shards']} shards, {one['attempts']} attempts, {one['retries']} retries, {one['wall_s']} s")
print(f"2 nodes: {both['shards']} shards, {both['attempts']} attempts, {both['retries']} retries, "
      f"{both['nodes_used']} nodes used, {both['wall_s']} s")
print(f"2 nodes, one killed: {two['shards']} shards, {two['attempts']} attempts, {two['retries']} retries "
      f"(shard {killed} killed with its node), {two['wall_s']} s")
PYEOF
echo "ray eval check: ok (merged reports equal the single run's byte for byte)"
