#!/usr/bin/env python3
"""Training data for auris-mini's projector: synthetic English speech with its text.

Run through `scripts/make_projector_data.sh`, which fetches the text packages and checks the
tools. Every clip is made here, from package-registry software only:

  text    sentences of Debian's fortune cookie files (fortunes-min, fortunes 1:1.99.1-7.3),
          3 to 16 words, letters and common punctuation only; sentences whose normalised words
          equal a transcript of the evaluation speech (LibriVox, asterisk prompts) are dropped
  speech  Debian espeak-ng: one of several English voices and voice variants, speed 125-215
          words per minute, pitch 20-80, word gap 0-3 (10 ms units)
  sound   sox: resampled to 16 kHz; with probability 0.35 the 8 kHz telephone band (rate 8k,
          sinc 300-3400 Hz, back to 16 kHz) as the asterisk prompts have; with probability 0.5
          pink-ish noise at 5-30 dB SNR (numpy, seeded per clip); 0-0.4 s of silence before and
          after; peak level -1 to -20 dBFS (sox norm)

No recorded audio is used at all, so no evaluation clip (scripts/lib/real_clips.py, the
`auris eval asr` manifests) can be in the training set. Everything is drawn from one seeded
generator, so the same seed, count and package versions give the same manifest; each line
records the clip's sha256, and the manifest's own sha256 is written next to it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd"]
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "Annie", "belinda", "linda", "Alicia", "edward", "david", "grandma", "max"]
FORTUNE_FILES = {
    "fortunes-min": ["fortunes", "literature", "riddles"],
    "fortunes": ["wisdom", "people", "humorists", "education", "love", "pets", "food", "science", "platitudes",
                 "art", "work", "miscellaneous", "kids", "magic", "news", "sports", "songs-poems", "men-women",
                 "politics", "law", "medicine", "cookie", "definitions"],
}
ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:'!?\"-]+$")


def words(text: str) -> tuple[str, ...]:
    """Lower-case words without punctuation (the comparison key against evaluation transcripts)."""
    return tuple(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).replace("'", "").split())


def sentences(root: Path) -> list[str]:
    out = []
    for pkg, names in FORTUNE_FILES.items():
        for name in names:
            path = root / pkg / "usr/share/games/fortunes" / name
            text = path.read_text(encoding="utf-8", errors="replace")
            for cookie in text.split("\n%\n"):
                # drop attributions ("-- Author") and the indentation of verse
                body = re.split(r"\n\s*--", cookie)[0]
                body = " ".join(body.split())
                for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", body):
                    s = s.strip().strip('"').strip()
                    n = len(s.split())
                    if 3 <= n <= 16 and ALLOWED.match(s) and s[0].isupper() and s[-1] in ".!?":
                        out.append(s)
    return sorted(set(out))


def eval_transcripts(asterisk_text: Path | None, librivox: Path | None) -> set[tuple[str, ...]]:
    keys = set()
    if asterisk_text and asterisk_text.exists():
        for line in gzip.open(asterisk_text, "rt", encoding="utf-8", errors="replace"):
            if ":" in line:
                keys.add(words(line.split(":", 1)[1]))
    if librivox and (librivox / "transcription").exists():
        for line in (librivox / "transcription").read_text().splitlines():
            keys.add(words(re.sub(r"\(.*?\)", "", line)))
    keys.discard(())
    return keys


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_clip(text: str, rng: random.Random, out: Path, tmp: Path, seed: int) -> dict:
    voice = rng.choice(VOICES)
    variant = rng.choice(VARIANTS)
    speed, pitch, gap = rng.randint(125, 215), rng.randint(20, 80), rng.randint(0, 3)
    telephone = rng.random() < 0.35
    snr = round(rng.uniform(5, 30), 1) if rng.random() < 0.5 else None
    pad = (round(rng.uniform(0, 0.4), 2), round(rng.uniform(0, 0.4), 2))
    peak = round(rng.uniform(-20, -1), 1)
    raw, mid = tmp / "raw.wav", tmp / "mid.wav"
    v = voice + (f"+{variant}" if variant else "")
    run(["espeak-ng", "-v", v, "-s", str(speed), "-p", str(pitch), "-g", str(gap), "-w", str(raw), text])
    effects = ["rate", "-v", str(SR)]
    if telephone:
        effects = ["rate", "-v", "8000", "sinc", "300-3400", "rate", "-v", str(SR)]
    run(["sox", "-R", str(raw), "-c", "1", "-b", "32", "-e", "floating-point", str(mid), *effects,
         "pad", str(pad[0]), str(pad[1])])
    wav, sr = sf.read(mid, dtype="float64")
    assert sr == SR, sr
    if snr is not None:
        noise_rng = np.random.default_rng(seed)
        white = noise_rng.standard_normal(len(wav) + 64)
        # a gentle low-pass of white noise (pink-ish), then scaled to the SNR over the speech
        noise = np.convolve(white, np.ones(8) / 8, mode="same")[: len(wav)]
        p_speech = float(np.mean(wav[np.abs(wav) > 1e-4] ** 2)) if np.any(np.abs(wav) > 1e-4) else 1e-8
        noise *= np.sqrt(p_speech / 10 ** (snr / 10) / np.mean(noise**2))
        wav = wav + noise
    sf.write(mid, wav.astype(np.float32), SR, subtype="FLOAT")
    run(["sox", "-R", str(mid), "-b", "16", str(out), "norm", str(peak)])
    return {"voice": v, "speed": speed, "pitch": pitch, "gap": gap, "telephone": telephone, "snr_db": snr,
            "pad_s": list(pad), "peak_dbfs": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=Path, required=True, help="folder with the extracted fortunes packages")
    ap.add_argument("--asterisk-text", type=Path, help="core-sounds-en.txt.gz (transcripts to keep out)")
    ap.add_argument("--librivox", type=Path, help="pocketsphinx-testdata's librivox folder (transcripts to keep out)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--shard", default="0/1", help="i/n: make only every n-th clip from the i-th (parallel runs)")
    ap.add_argument("--merge", action="store_true", help="join the shards' manifests into manifest.jsonl")
    args = ap.parse_args()
    out = args.out
    if args.merge:
        lines = []
        for p in sorted(out.glob("manifest.part*.jsonl")):
            lines += p.read_text().splitlines()
        lines.sort(key=lambda line: json.loads(line)["id"])
        assert len(lines) == args.count, f"{len(lines)} clips in the shards, expected {args.count}"
        (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        digest = sha256(out / "manifest.jsonl")
        (out / "manifest.sha256").write_text(f"{digest}  manifest.jsonl\n")
        print(f"{len(lines)} clips; manifest sha256 {digest}")
        return

    pool = sentences(args.texts)
    keep_out = eval_transcripts(args.asterisk_text, args.librivox)
    pool = [s for s in pool if words(s) not in keep_out]
    print(f"{len(pool)} sentences after dropping evaluation transcripts ({len(keep_out)} of them)")
    rng = random.Random(args.seed)
    # one draw per clip, in order, whatever the shard: each shard makes the same clips a single run would
    plan = []
    for i in range(args.count):
        text = pool[rng.randrange(len(pool))]
        plan.append((i, text, rng.getrandbits(64)))
    k, n = (int(x) for x in args.shard.split("/"))
    (out / "wav").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, open(out / f"manifest.part{k}.jsonl", "w") as f:
        for i, text, clip_seed in plan[k::n]:
            path = out / "wav" / f"{i:05d}.wav"
            info = make_clip(text, random.Random(clip_seed), path, Path(tmp), clip_seed)
            dur = sf.info(path).frames / SR
            rec = {"id": f"{i:05d}", "audio": f"wav/{i:05d}.wav", "text": text, "duration_s": round(dur, 3),
                   **info, "sha256": sha256(path)}
            f.write(json.dumps(rec) + "\n")
            if i % 200 < n:
                print(f"{i}: {dur:.1f} s {info['voice']} {text!r}", flush=True)


if __name__ == "__main__":
    main()
