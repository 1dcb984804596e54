"""Write a Qwen2-Audio checkpoint of realistic shape with seeded random weights, for timing.

    $VENV/bin/python scripts/make_bench_model.py OUT_DIR [--shape small|7b|af3-7b] [--dtype f32|bf16]
                                                 [--config-only]

`--shape small` (the default; needs torch and transformers): a Whisper-small-sized encoder
(d_model 768, 12 layers, 12 heads, ffn 3072, 128 mel bins) and a Qwen2-0.5B-sized decoder
(hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab 151936), written by
transformers' `save_pretrained`, in f32 (the default) or, with `--dtype bf16`, the same seeded
weights rounded to bf16 (as the hub stores Qwen2-Audio), for timing the bf16 weight paths.

`--shape 7b` (needs only numpy): Qwen2-Audio-7B's exact layout, as on the hub: the
Whisper-large-v3-sized encoder (d_model 1280, 32 layers, 20 heads, ffn 5120), the 4096 x 1280
projector and the 7.7 B-parameter Qwen2 decoder (hidden 4096, 32 layers, 32 heads, no GQA,
intermediate 11008, vocab 156032, untied head), bf16, 5 shards of about 3.9 GB and a
`model.safetensors.index.json`, 16.8 GB in all. Its `config.json` is the hub's
(Qwen/Qwen2-Audio-7B-Instruct): the Qwen2 class defaults (hidden_size 4096, 32 layers, 32
heads) are left out, as there, so the loader has to supply them. Tensors are streamed to disk
one chunk at a time (a few hundred MB of memory), never held whole.

`--shape af3-7b` (needs only numpy): Audio Flamingo 3's layout (nvidia/audio-flamingo-3-hf):
the same Whisper-large-v3-sized encoder, the two-layer projector (`linear_1` 1280 -> 3584, GELU,
`linear_2` 3584 -> 3584, with biases) and the Qwen2.5-7B decoder (hidden 3584, 28 layers, 28
heads, 4 KV heads, intermediate 18944, vocab 151672, rope_theta 1e6, untied head): 8.27 B
parameters, bf16, 5 shards, 16.5 GB. Its `config.json` is the one transformers 5.24 writes for the
hub conversion (every field, encoder fields under their canonical names `hidden_size`,
`num_hidden_layers`, ...), with models/tiny-af3's token ids.

The tokenizer, processor files and chat template are those of models/tiny-chat (models/tiny-af3 for
`af3-7b`): their ids fit in the vocabulary, and the special token ids in config.json are theirs.
Weights are random (N(0, 0.02), norms 1): only for speed and memory measurements.
`--config-only` writes config.json and those files, prints the planned tensors, parameters and
shards, and writes no weights (seconds instead of minutes).
"""

import argparse
import json
import math
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = {"small": ROOT / "models" / "tiny-chat", "7b": ROOT / "models" / "tiny-chat",
        "af3-7b": ROOT / "models" / "tiny-af3"}
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "processor_config.json",
                   "chat_template.jinja", "generation_config.json"]


def write_small(out: Path, tiny_cfg: dict, dtype: str = "f32") -> None:
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    cfg = Qwen2AudioConfig(
        audio_config=dict(
            model_type="qwen2_audio_encoder", num_mel_bins=128, d_model=768, encoder_layers=12,
            encoder_attention_heads=12, encoder_ffn_dim=3072, max_source_positions=1500,
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
            num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
            max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=False, bos_token_id=tiny_cfg["text_config"].get("bos_token_id"),
            eos_token_id=tiny_cfg["text_config"].get("eos_token_id"),
        ),
        audio_token_index=tiny_cfg["audio_token_index"],
    )
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
        model.config.torch_dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True, max_shard_size="1GB")
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n / 1e6:.1f} M parameters")


# Qwen2-Audio-7B: audio_config and text_config as written in the hub's config.json.
AUDIO_7B = dict(d_model=1280, layers=32, ffn=5120, mel=128, positions=1500)
TEXT_7B = dict(hidden=4096, layers=32, inter=11008, vocab=156032, heads=32, kv_heads=32)
# Audio Flamingo 3: the same encoder shape, a Qwen2.5-7B decoder.
TEXT_AF3_7B = dict(hidden=3584, layers=28, inter=18944, vocab=151672, heads=28, kv_heads=4)


def config_7b(tiny_cfg: dict) -> dict:
    """The hub's config.json of Qwen2-Audio-7B-Instruct, with tiny-chat's token ids."""
    text = tiny_cfg["text_config"]
    return {
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "audio_config": {
            "model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "encoder_layers": 32,
            "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "d_model": 1280,
            "activation_function": "gelu", "scale_embedding": False,
            "max_source_positions": 1500,
        },
        "audio_token_index": tiny_cfg["audio_token_index"],
        "ignore_index": -100,
        "model_type": "qwen2_audio",
        "text_config": {
            "bos_token_id": text.get("bos_token_id"), "eos_token_id": text.get("eos_token_id"),
            "intermediate_size": 11008, "max_position_embeddings": 8192, "model_type": "qwen2",
            "rms_norm_eps": 1e-05, "rope_theta": 10000, "sliding_window": 32768,
            "torch_dtype": "bfloat16", "use_mrope": False, "vocab_size": 156032,
        },
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.1",
        "vocab_size": 156032,
    }


def config_af3_7b(tiny_cfg: dict) -> dict:
    """config.json of the AF3 hub conversion as transformers 5.24 writes it (transformers'
    convert_audioflamingo3_to_hf.py: `AudioFlamingo3Config(text_config=Qwen2Config(...))`, encoder
    defaults), with tiny-af3's token ids."""
    text = tiny_cfg["text_config"]
    a, t = AUDIO_7B, TEXT_AF3_7B
    return {
        "architectures": ["AudioFlamingo3ForConditionalGeneration"],
        "audio_config": {
            "activation_dropout": 0.0, "activation_function": "gelu", "attention_dropout": 0.0,
            "dropout": 0.0, "hidden_size": a["d_model"], "initializer_range": 0.02,
            "intermediate_size": a["ffn"], "layerdrop": 0.0, "max_source_positions": a["positions"],
            "model_type": "audioflamingo3_encoder", "num_attention_heads": 20,
            "num_hidden_layers": a["layers"], "num_mel_bins": a["mel"], "scale_embedding": False,
        },
        "audio_token_id": tiny_cfg["audio_token_id"],
        "dtype": "bfloat16",
        "model_type": "audioflamingo3",
        "projector_bias": True,
        "projector_hidden_act": "gelu",
        "text_config": {
            "attention_dropout": 0.0, "bos_token_id": None, "eos_token_id": text.get("eos_token_id"),
            "hidden_act": "silu", "hidden_size": t["hidden"], "initializer_range": 0.02,
            "intermediate_size": t["inter"], "layer_types": ["full_attention"] * t["layers"],
            "max_position_embeddings": 32768, "max_window_layers": 28, "model_max_length": 8192,
            "model_type": "qwen2", "num_attention_heads": t["heads"],
            "num_hidden_layers": t["layers"], "num_key_value_heads": t["kv_heads"],
            "pad_token_id": text.get("pad_token_id"), "rms_norm_eps": 1e-06,
            "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
            "sliding_window": None, "tie_word_embeddings": False, "use_cache": False,
            "use_sliding_window": False, "vocab_size": t["vocab"],
        },
        "transformers_version": "5.24.0",
    }


def encoder_tensors(a: dict) -> list[tuple[str, tuple[int, ...], str]]:
    d = a["d_model"]
    out = [
        ("audio_tower.conv1.weight", (d, a["mel"], 3), "normal"),
        ("audio_tower.conv1.bias", (d,), "zeros"),
        ("audio_tower.conv2.weight", (d, d, 3), "normal"),
        ("audio_tower.conv2.bias", (d,), "zeros"),
        ("audio_tower.embed_positions.weight", (a["positions"], d), "normal"),
    ]
    for i in range(a["layers"]):
        p = f"audio_tower.layers.{i}"
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            out.append((f"{p}.self_attn.{proj}.weight", (d, d), "normal"))
            if proj != "k_proj":
                out.append((f"{p}.self_attn.{proj}.bias", (d,), "zeros"))
        for norm in ["self_attn_layer_norm", "final_layer_norm"]:
            out.append((f"{p}.{norm}.weight", (d,), "ones"))
            out.append((f"{p}.{norm}.bias", (d,), "zeros"))
        out += [(f"{p}.fc1.weight", (a["ffn"], d), "normal"), (f"{p}.fc1.bias", (a["ffn"],), "zeros"),
                (f"{p}.fc2.weight", (d, a["ffn"]), "normal"), (f"{p}.fc2.bias", (d,), "zeros")]
    out += [("audio_tower.layer_norm.weight", (d,), "ones"),
            ("audio_tower.layer_norm.bias", (d,), "zeros")]
    return out


def projector_tensors(shape: str, d: int, h: int) -> list[tuple[str, tuple[int, ...], str]]:
    if shape == "af3-7b":
        return [("multi_modal_projector.linear_1.weight", (h, d), "normal"),
                ("multi_modal_projector.linear_1.bias", (h,), "zeros"),
                ("multi_modal_projector.linear_2.weight", (h, h), "normal"),
                ("multi_modal_projector.linear_2.bias", (h,), "zeros")]
    return [("multi_modal_projector.linear.weight", (h, d), "normal"),
            ("multi_modal_projector.linear.bias", (h,), "zeros")]


def decoder_tensors(t: dict) -> list[tuple[str, tuple[int, ...], str]]:
    h = t["hidden"]
    kv = h // t["heads"] * t["kv_heads"]
    out = [("language_model.model.embed_tokens.weight", (t["vocab"], h), "normal")]
    for i in range(t["layers"]):
        p = f"language_model.model.layers.{i}"
        for proj, rows in [("q_proj", h), ("k_proj", kv), ("v_proj", kv)]:
            out.append((f"{p}.self_attn.{proj}.weight", (rows, h), "normal"))
            out.append((f"{p}.self_attn.{proj}.bias", (rows,), "normal"))
        out.append((f"{p}.self_attn.o_proj.weight", (h, h), "normal"))
        out += [(f"{p}.mlp.gate_proj.weight", (t["inter"], h), "normal"),
                (f"{p}.mlp.up_proj.weight", (t["inter"], h), "normal"),
                (f"{p}.mlp.down_proj.weight", (h, t["inter"]), "normal")]
        out.append((f"{p}.input_layernorm.weight", (h,), "ones"))
        out.append((f"{p}.post_attention_layernorm.weight", (h,), "ones"))
    out += [("language_model.model.norm.weight", (h,), "ones"),
            ("language_model.lm_head.weight", (t["vocab"], h), "normal")]
    return out


def tensors_7b(shape: str = "7b") -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) in the hub's order; init is "normal", "zeros" or "ones"."""
    text = TEXT_AF3_7B if shape == "af3-7b" else TEXT_7B
    return (encoder_tensors(AUDIO_7B) + projector_tensors(shape, AUDIO_7B["d_model"], text["hidden"])
            + decoder_tensors(text))


def write_shard(path: Path, tensors, rng) -> None:
    """A safetensors file (8-byte header length, JSON header, raw little-endian data)."""
    import numpy as np

    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    chunk = 1 << 25
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for _, shape, init in tensors:
            n = int(np.prod(shape))
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                if init == "normal":
                    values = rng.standard_normal(m, dtype=np.float32) * np.float32(0.02)
                else:
                    values = np.full(m, 1.0 if init == "ones" else 0.0, dtype=np.float32)
                # bf16 = the high half of the f32 bits, rounded to nearest even.
                bits = values.view(np.uint32)
                bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
                f.write((bits >> np.uint32(16)).astype("<u2").tobytes())


def plan_shards(tensors, shard_bytes: int) -> list[list[tuple[str, tuple[int, ...], str]]]:
    shards, current, size = [], [], 0
    for name, shape, init in tensors:
        nbytes = 2 * math.prod(shape)
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape, init))
        size += nbytes
    shards.append(current)
    return shards


def write_7b(out: Path, shape: str, tiny_cfg: dict, config_only: bool = False,
             shard_bytes: int = 3_900_000_000) -> None:
    import numpy as np

    config = config_af3_7b(tiny_cfg) if shape == "af3-7b" else config_7b(tiny_cfg)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shards = plan_shards(tensors_7b(shape), shard_bytes)
    params = sum(math.prod(s) for tensors in shards for _, s, _ in tensors)
    if config_only:
        n_tensors = sum(len(t) for t in shards)
        print(f"wrote {out / 'config.json'}; planned: {n_tensors} tensors, {params / 1e9:.3f} B parameters, "
              f"{2 * params / 1e9:.1f} GB in {len(shards)} shards (no weights written)")
        return
    rng = np.random.default_rng(0)
    weight_map, total = {}, 0
    for i, tensors in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        print(f"writing {fname} ({len(tensors)} tensors)", flush=True)
        write_shard(out / fname, tensors, rng)
        for name, shape_, _ in tensors:
            weight_map[name] = fname
            total += 2 * math.prod(shape_)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {out}: {total / 2 / 1e9:.2f} B parameters, {total / 1e9:.1f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=["small", "7b", "af3-7b"], default="small")
    parser.add_argument("--dtype", choices=["f32", "bf16"],
                        help="storage: f32 (default) or bf16 for the small shape, bf16 for 7b and af3-7b")
    parser.add_argument("--config-only", action="store_true",
                        help="7b and af3-7b: write config.json and the tokenizer files, no weights")
    args = parser.parse_args()
    big = args.shape in ("7b", "af3-7b")
    if big and args.dtype == "f32":
        parser.error(f"--shape {args.shape} is written in bf16 only")
    if args.config_only and not big:
        parser.error("--config-only applies to --shape 7b and af3-7b")
    args.out.mkdir(parents=True, exist_ok=True)
    tiny = TINY[args.shape]
    tiny_cfg = json.loads((tiny / "config.json").read_text())
    if big:
        write_7b(args.out, args.shape, tiny_cfg, args.config_only)
    else:
        write_small(args.out, tiny_cfg, args.dtype or "f32")
    for name in TOKENIZER_FILES:
        shutil.copy(tiny / name, args.out / name)


if __name__ == "__main__":
    main()
