#!/usr/bin/env python3
"""Write tests/fixtures/audio/edge/: audio files that real tools produce and decoders trip on.

Standard library only; derived byte for byte from the committed clips in tests/fixtures/audio/
(written by scripts/make_fixtures.sh), so the output is deterministic:

  dog_empty_id3v2.mp3  an ID3v2.3 tag of size 0 (as common taggers write after removing every
                       frame) followed by the first 12 MPEG frames of dog_48k.mp3
  dog_frames.mp3       the same 12 frames with no tag (what the tagged file must decode to)
  mp3_named.wav        dog_frames.mp3 under a .wav name
  flac_named.wav       crow_44k1.flac under a .wav name
  wav_named.mp3        short_0p2s_16k.wav under an .mp3 name

Usage: python3 scripts/make_audio_edge_fixtures.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "tests" / "fixtures" / "audio"
OUT = AUDIO / "edge"
FRAMES = 12

# MPEG-1 Layer III bitrates (kbit/s) and sample rates (ISO/IEC 11172-3, 2.4.2.3).
BITRATES = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
RATES = [44100, 48000, 32000]


def id3v2_len(data: bytes) -> int:
    """Bytes of the ID3v2 tag at the start of data (0 if none)."""
    if not data.startswith(b"ID3"):
        return 0
    size = 0
    for b in data[6:10]:
        size = (size << 7) | b
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def mpeg_frames(data: bytes, count: int) -> bytes:
    """The first count MPEG-1 Layer III frames of data (which starts at a frame)."""
    at = 0
    for _ in range(count):
        h = data[at : at + 4]
        if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xFE) != 0xFA:
            raise SystemExit(f"no MPEG-1 Layer III frame header at byte {at}")
        bitrate = BITRATES[h[2] >> 4] * 1000
        rate = RATES[(h[2] >> 2) & 3]
        padding = (h[2] >> 1) & 1
        at += 144 * bitrate // rate + padding
    return data[:at]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    mp3 = (AUDIO / "dog_48k.mp3").read_bytes()
    frames = mpeg_frames(mp3[id3v2_len(mp3) :], FRAMES)
    empty_tag = b"ID3\x03\x00\x00\x00\x00\x00\x00"
    (OUT / "dog_empty_id3v2.mp3").write_bytes(empty_tag + frames)
    (OUT / "dog_frames.mp3").write_bytes(frames)
    (OUT / "mp3_named.wav").write_bytes(frames)
    shutil.copyfile(AUDIO / "crow_44k1.flac", OUT / "flac_named.wav")
    shutil.copyfile(AUDIO / "short_0p2s_16k.wav", OUT / "wav_named.mp3")
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
