"""Cut the benchmark clips from the committed 42 s fixture (16 kHz mono 16-bit PCM WAV).

    python3 scripts/lib/bench_clips.py OUT_DIR

Writes OUT_DIR/clip_29p9s.wav (the first 29.9 s: llama.cpp's audio path encodes an input of
exactly 30.0 s as two windows, so the clip stays just under one window), OUT_DIR/clip_10s.wav
(the first 10 s) and OUT_DIR/clip_3s.wav (the first 3 s). The source,
tests/fixtures/audio/long_42s_16k.wav, is LibriVox speech and tones (see
tests/fixtures/audio/README.md). Standard library only; takes well under a second.
"""

import sys
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "audio" / "long_42s_16k.wav"
CLIPS = {"clip_29p9s.wav": 29.9, "clip_10s.wav": 10.0, "clip_3s.wav": 3.0}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with wave.open(str(SOURCE), "rb") as src:
        params = src.getparams()
        if (params.nchannels, params.framerate, params.sampwidth) != (1, 16000, 2):
            sys.exit(f"{SOURCE}: expected 16 kHz mono 16-bit, got {params}")
        frames = src.readframes(params.nframes)
    for name, seconds in CLIPS.items():
        n = round(seconds * params.framerate)
        with wave.open(str(out / name), "wb") as dst:
            dst.setnchannels(1)
            dst.setsampwidth(2)
            dst.setframerate(params.framerate)
            dst.writeframes(frames[: n * 2])
        print(f"wrote {out / name} ({n} samples, {seconds} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
