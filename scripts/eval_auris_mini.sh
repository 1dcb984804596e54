#!/usr/bin/env bash
# auris-mini on real recorded speech nobody here synthesised: WER of `auris eval transcribe`
# (greedy, "Transcribe the audio.", the WER normaliser of eval asr-pruning) on the LibriVox
# utterances of Debian pocketsphinx-testdata and a spread subset of the Debian asterisk prompts,
# compared with real-mini (random projector, on the 9 speech clips of the parity check), then the
# pruning sweep on auris-mini over the same clips (64 new tokens at most, as without pruning).
#
#   scripts/eval_auris_mini.sh                    # WER of both models, then the sweep
#   scripts/eval_auris_mini.sh --every 8          # asterisk subset: every 8th prompt (default 16)
#   scripts/eval_auris_mini.sh --no-sweep         # WER only
#
# Needs models/auris-mini (scripts/build_auris_mini.sh) and models/real-mini. Writes
# bench/work/alm/{manifest,core}.jsonl, bench/auris_mini_wer.{json,md} (no pruning) and
# bench/auris_mini_pruning.{json,md,svg} (segmentwise, topk, bottomk, random, uniform,
# visionzip at 0.5/0.25/0.1). Predictions go to bench/work/alm/*.jsonl, so a rerun resumes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

EVERY=16
MAX_NEW=64
SWEEP=1
BIN="${AURIS_BIN:-}"
while (($#)); do
  case "$1" in
    --every) EVERY="$2"; shift 2 ;;
    --no-sweep) SWEEP=0; shift ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
for m in auris-mini real-mini; do
  if [[ ! -f "$ROOT/models/$m/config.json" ]]; then
    echo "error: no checkpoint in models/$m" >&2
    echo "hint: scripts/build_auris_mini.sh builds both" >&2
    exit 2
  fi
done

ensure_ref_venv
fetch_clip_packages
fetch_debs "asterisk-core-sounds-en=1.6.1-1"
X="$CACHE/x"
ALM="$ROOT/bench/work/alm"
mkdir -p "$ALM"
"$PY" "$ROOT/scripts/asr_pruning.py" manifest \
  --asterisk-wav "$X/asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en_US_f_Allison" \
  --asterisk-text "$X/asterisk-core-sounds-en/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz" \
  --librivox "$X/pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox" \
  --out "$ALM/all.jsonl"
# every LibriVox utterance; the asterisk prompts of scripts/lib/real_clips.py and every N-th other
"$PY" - "$ALM/all.jsonl" "$ALM/manifest.jsonl" "$EVERY" "$ROOT" <<'PYEOF'
import json, sys
from pathlib import Path
sys.path.insert(0, f"{sys.argv[4]}/scripts/lib")
from real_clips import CLIPS
named = {Path(p).name for _, p, g in CLIPS if g == "speech_8k"}
rows = [json.loads(line) for line in open(sys.argv[1])]
every = int(sys.argv[3])
out, k = [], 0
for r in rows:
    if r["source"] == "asterisk":
        if Path(r["audio"]).name not in named and k % every:
            k += 1
            continue
        k += 1
    out.append(r)
Path(sys.argv[2]).write_text("".join(json.dumps(r) + "\n" for r in out))
# the 9 speech clips of the parity check (every LibriVox utterance, 4 asterisk prompts): the
# random-projector baseline
core = [r for r in out if r["source"] == "librivox" or Path(r["audio"]).name in named]
Path(sys.argv[2]).with_name("core.jsonl").write_text("".join(json.dumps(r) + "\n" for r in core))
print(f"{len(out)} clips ({sum(r['source'] == 'librivox' for r in out)} LibriVox), "
      f"{sum(r['duration_s'] for r in out) / 60:.1f} min", file=sys.stderr)
PYEOF

cd "$ROOT"
if [[ -z "$BIN" ]]; then
  cargo build --quiet --bin auris
  BIN="$ROOT/target/debug/auris"
fi
# auris-mini on the whole set, then rescored on the 9 clips (resumed from its predictions file,
# nothing is run again); real-mini on the 9 clips
"$BIN" eval transcribe --model models/auris-mini --manifest "$ALM/manifest.jsonl" --keeps 1 \
  --max-new-tokens "$MAX_NEW" --predictions "$ALM/auris-mini.jsonl" --out "$ALM/auris-mini-wer.json" \
  --markdown "$ALM/auris-mini-wer.md"
for m in auris-mini real-mini; do
  "$BIN" eval transcribe --model "models/$m" --manifest "$ALM/core.jsonl" --keeps 1 \
    --max-new-tokens "$MAX_NEW" --predictions "$ALM/$m.jsonl" --out "$ALM/$m-core.json" --markdown "$ALM/$m-core.md"
done
"$PY" - "$ALM" <<'PYEOF'
import json, sys
from pathlib import Path
alm = Path(sys.argv[1])
out = {f"{m} ({s})": json.loads((alm / f"{m}-{s}.json").read_text())
       for m, s in (("auris-mini", "wer"), ("auris-mini", "core"), ("real-mini", "core"))}
Path("bench/auris_mini_wer.json").write_text(json.dumps(out, indent=1) + "\n")
lines = ["| model (clips) | clips | WER | WER LibriVox | WER asterisk | TTFT ms |", "|---|---|---|---|---|---|"]
for m, r in out.items():
    row = r["results"][0]
    src = row.get("groups", {}).get("source", {})
    lines.append(f"| {m} | {r['scored']} | {row['metrics']['wer']:.3f} | {src.get('librivox', float('nan')):.3f} | "
                 f"{src.get('asterisk', float('nan')):.3f} | {row['ttft_ms']:.0f} |")
Path("bench/auris_mini_wer.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
if ((SWEEP)); then
  # the same predictions file and settings as the WER pass: its unpruned runs are resumed
  REPORT="$ROOT/bench/auris_mini_pruning"
  "$BIN" eval transcribe --model models/auris-mini --manifest "$ALM/manifest.jsonl" \
    --strategies segmentwise,topk,bottomk,random,uniform,visionzip --keeps 0.5,0.25,0.1 \
    --max-new-tokens "$MAX_NEW" --predictions "$ALM/auris-mini.jsonl" \
    --out "$REPORT.json" --markdown "$REPORT.md" --plot "$REPORT.svg"
fi
