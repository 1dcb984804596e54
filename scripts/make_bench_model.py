"""Write a Qwen2-Audio checkpoint of realistic shape with seeded random weights, for timing.

Shapes (issue 7): a Whisper-small-sized encoder (d_model 768, 12 layers, 12 heads, ffn 3072,
128 mel bins) and a Qwen2-0.5B-sized decoder (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936). The tokenizer, processor files and chat template are those of
models/tiny-chat (their ids fit in the vocabulary). Weights are random: only for speed.

    $VENV/bin/python scripts/make_bench_model.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "models" / "tiny-chat"


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tiny_cfg = json.loads((TINY / "config.json").read_text())
    audio_token = tiny_cfg["audio_token_index"]
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
        audio_token_index=audio_token,
    )
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    model.save_pretrained(out, safe_serialization=True, max_shard_size="1GB")
    for name in ["tokenizer.json", "tokenizer_config.json", "processor_config.json",
                 "chat_template.jinja", "generation_config.json"]:
        shutil.copy(TINY / name, out / name)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
