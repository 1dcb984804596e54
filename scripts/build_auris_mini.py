#!/usr/bin/env python3
"""Build models/auris-mini: real-mini with the trained projector (models/auris-mini-projector/).

Run through `scripts/build_auris_mini.sh`. Every file of real-mini is linked (or copied) except
the shard that holds `multi_modal_projector.linear.*`, which is rewritten with the trained
weights (float16, like every tensor of the checkpoint), and the model card. The result is
checked: same tensor names and shapes as real-mini, the projector equal to the trained one
rounded to float16, every other tensor untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

PROJ = ("multi_modal_projector.linear.weight", "multi_modal_projector.linear.bias")


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--real-mini", type=Path, required=True)
    ap.add_argument("--projector", type=Path, required=True, help="projector.safetensors (train_projector.py)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    src, out = args.real_mini.resolve(), args.out
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shards = {index["weight_map"][k] for k in PROJ}
    assert len(shards) == 1, shards
    [shard] = shards
    trained = load_file(str(args.projector))
    with safe_open(str(args.projector), "pt") as h:
        facts = {k: json.loads(v) for k, v in (h.metadata() or {}).items()}
    assert set(trained) == set(PROJ), sorted(trained)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.name not in (shard, "README.md"):
            link_or_copy(f, out / f.name)
    tensors = load_file(str(src / shard))
    for k in PROJ:
        assert tensors[k].shape == trained[k].shape, (k, tensors[k].shape, trained[k].shape)
        assert tensors[k].dtype == torch.float16, tensors[k].dtype
        tensors[k] = trained[k].to(torch.float16).contiguous()
    save_file(tensors, str(out / shard), metadata={"format": "pt"})

    # check
    again = load_file(str(out / shard))
    before = load_file(str(src / shard))
    for k, v in again.items():
        want = trained[k].to(torch.float16) if k in PROJ else before[k]
        assert v.dtype == want.dtype and torch.equal(v, want), k
    assert set(again) == set(before)

    card = (src / "README.md").read_text(encoding="utf-8").splitlines()
    card[0] = "# auris-mini: real-mini with a trained projector"
    # real-mini's card says its projector is random; this one's is not (see "Projector" below)
    card = [line for line in card if not line.startswith("| `multi_modal_projector` | random")]
    for k, line in enumerate(card):
        if line.startswith("Built by `scripts/build_real_mini.sh`"):
            end = next((j for j in range(k, len(card)) if not card[j].strip()), len(card))
            card[k:end] = ["Built by `scripts/build_auris_mini.sh` of auris from real-mini (real whisper-base and",
                           "Qwen2.5 weights, below) by training its projector only; every other weight is real-mini's."]
            break
    card += [
        "",
        "## Projector",
        "",
        "`multi_modal_projector.linear` was trained (encoder and language model frozen) on synthetic",
        "speech (Debian espeak-ng reading Debian fortune sentences, sox augmentation) by",
        "`scripts/train_projector.sh` of auris, to answer `Transcribe the audio.` with the words spoken.",
        "The trained weights are stored here in float16 like every other tensor.",
        "",
        f"- training data manifest sha256: `{facts.get('data_manifest_sha256')}`",
        f"- seed {facts.get('seed')}, {facts.get('steps_done')} steps of batch {facts.get('batch')} "
        f"({facts.get('examples_seen')} clips), AdamW lr {facts.get('lr')}",
        f"- validation loss (held-out synthetic clips): {facts.get('val_loss_initial', 0):.3f} with the "
        f"random projector, {facts.get('val_loss_final', 0):.3f} trained",
        "",
    ]
    (out / "README.md").write_text("\n".join(card), encoding="utf-8")
    print(f"wrote {out} (projector from {args.projector}, {len(again)} tensors in {shard} checked)")


if __name__ == "__main__":
    main()
