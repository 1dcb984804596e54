"""CTranslate2 Whisper checkpoints: the model.bin reader and the mapping to transformers' names.

Used by build_real_mini.py (the encoder of real-mini) and asr_pruning.py (the whole Whisper model
for the reference transcriber): one copy of each.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch


def read_ct2(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    """Parses a CTranslate2 model.bin (ctranslate2/specs/model_spec.py::_serialize, all little-endian)."""
    data = path.read_bytes()
    pos = 0

    def unpack(fmt: str):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v

    def string() -> str:
        nonlocal pos
        (n,) = unpack("H")  # length including the NUL
        raw = data[pos : pos + n]
        pos += n
        assert raw[-1:] == b"\0", raw
        return raw[:-1].decode("utf-8")

    (version,) = unpack("I")
    spec = string()
    (revision,) = unpack("I")
    (n_vars,) = unpack("I")
    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    variables = {}
    for _ in range(n_vars):
        name = string()
        (rank,) = unpack("B")
        dims = unpack("I" * rank) if rank else ()
        (code,) = unpack("B")
        (nbytes,) = unpack("I")
        dt = np.dtype(dtypes[code])
        arr = np.frombuffer(data, dtype=dt, count=nbytes // dt.itemsize, offset=pos).reshape(dims)
        pos += nbytes
        variables[name] = arr
    (n_alias,) = unpack("I")
    aliases = {}
    for _ in range(n_alias):
        alias = string()
        aliases[alias] = string()
    assert pos == len(data), f"{len(data) - pos} trailing bytes in {path}"
    return variables, aliases, {"binary_version": version, "spec": spec, "revision": revision, "n_vars": n_vars}


def ct2_to_hf(v: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict]:
    """Maps CT2 variables to HF names (the inverse of CTranslate2's `WhisperLoader` in
    `python/ctranslate2/converters/transformers.py`); fused q/k/v are split."""

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(v[name], dtype=np.float16, copy=True))

    d = v["encoder/conv1/weight"].shape[0]
    out: dict[str, torch.Tensor] = {}

    def layer_norm(src: str, dst: str) -> None:
        out[dst + ".weight"], out[dst + ".bias"] = t(src + "/gamma"), t(src + "/beta")

    def dense(src: str, dst: str) -> None:
        out[dst + ".weight"], out[dst + ".bias"] = t(src + "/weight"), t(src + "/bias")

    def split(src: str, dsts: list[str]) -> None:
        w, b = t(src + "/weight"), t(src + "/bias")
        assert w.shape == (len(dsts) * d, d), (src, w.shape)
        for i, dst in enumerate(dsts):
            out[dst + ".weight"] = w[i * d : (i + 1) * d].clone()
            part = b[i * d : (i + 1) * d].clone()
            if dst.endswith("k_proj"):
                assert torch.count_nonzero(part) == 0, f"{src}: k bias is not zero"
            else:
                out[dst + ".bias"] = part

    def layers(side: str) -> int:
        return 1 + max(int(m.group(1)) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k)))

    for conv in ("conv1", "conv2"):
        dense(f"encoder/{conv}", f"model.encoder.{conv}")
    out["model.encoder.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    n_enc = layers("encoder")
    for i in range(n_enc):
        s, p = f"encoder/layer_{i}", f"model.encoder.layers.{i}."
        layer_norm(f"{s}/self_attention/layer_norm", p + "self_attn_layer_norm")
        split(f"{s}/self_attention/linear_0", [p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"])
        dense(f"{s}/self_attention/linear_1", p + "self_attn.out_proj")
        layer_norm(f"{s}/ffn/layer_norm", p + "final_layer_norm")
        dense(f"{s}/ffn/linear_0", p + "fc1")
        dense(f"{s}/ffn/linear_1", p + "fc2")
    layer_norm("encoder/layer_norm", "model.encoder.layer_norm")

    out["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    n_dec = layers("decoder")
    for i in range(n_dec):
        s, p = f"decoder/layer_{i}", f"model.decoder.layers.{i}."
        layer_norm(f"{s}/self_attention/layer_norm", p + "self_attn_layer_norm")
        split(f"{s}/self_attention/linear_0", [p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"])
        dense(f"{s}/self_attention/linear_1", p + "self_attn.out_proj")
        layer_norm(f"{s}/attention/layer_norm", p + "encoder_attn_layer_norm")
        dense(f"{s}/attention/linear_0", p + "encoder_attn.q_proj")
        split(f"{s}/attention/linear_1", [p + "encoder_attn.k_proj", p + "encoder_attn.v_proj"])
        dense(f"{s}/attention/linear_2", p + "encoder_attn.out_proj")
        layer_norm(f"{s}/ffn/layer_norm", p + "final_layer_norm")
        dense(f"{s}/ffn/linear_0", p + "fc1")
        dense(f"{s}/ffn/linear_1", p + "fc2")
    layer_norm("decoder/layer_norm", "model.decoder.layer_norm")

    shape = dict(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
    )
    return out, shape
