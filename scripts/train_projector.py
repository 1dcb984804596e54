#!/usr/bin/env python3
"""Train real-mini's projector (512 -> 896 linear) so that the frozen Qwen2.5-0.5B hears audio.

Run through `scripts/train_projector.sh` (pinned venv, data from scripts/make_projector_data.sh).

The first stage of LLaVA- and Qwen-Audio-style training: the audio encoder and the language
model stay frozen; only `multi_modal_projector.linear` learns, with teacher forcing on prompts in
the model's own chat template:

  <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
  Audio 1: <|audio_bos|><|AUDIO|> x N<|audio_eos|>\\nTranscribe the audio.<|im_end|>\\n
  <|im_start|>assistant\\n{text}<|im_end|>

(the loss is the cross-entropy of the answer tokens, `<|im_end|>` included).

1. Encoder outputs are computed once per clip (frozen, after the pooler and the final layer
   norm) and cached. The encoder runs on the clip's valid conv positions only: in Qwen2-Audio
   the padded positions are masked out as keys, so the valid outputs are the same as the
   30-second window's (checked against the model's own masked forward on the first clip).
2. AdamW on the projector (initialised from real-mini's random projector), warm-up then cosine
   decay, gradient clipping, a fixed seed and a fixed example order. The number of steps is
   either given (--steps) or sized from a measurement of seconds per step and a time budget
   (--minutes); the report records the steps so that `--steps` reproduces the run.
3. Writes the projector (float32 safetensors, with the training facts in its metadata), a
   training.json, and the loss curve (CSV and SVG).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "lib"))
from loss_plot import write_loss_svg  # noqa: E402

INSTRUCTION = "Transcribe the audio."
SR = 16_000


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# encoder outputs, once
# ----------------------------------------------------------------------------------------------


def encode_valid(tower, features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Qwen2AudioEncoder.forward on the valid part of one clip: (80, 3000) mel -> (N, 512)."""
    t1 = (n_frames - 1) // 2 + 1
    # conv2 position j reads conv1 positions up to 2j+1, which read mel frames up to 2j+2:
    # the valid positions need the frames up to F+1 (padding values included, as in the window)
    x = features[None, :, : min(n_frames + 2, features.shape[-1])]
    x = F.gelu(tower.conv1(x))
    x = F.gelu(tower.conv2(x))[:, :, :t1].permute(0, 2, 1)
    h = x + tower.embed_positions.weight[:t1]
    for layer in tower.layers:
        h = layer(h, None)
    h = tower.avg_pooler(h.permute(0, 2, 1)).permute(0, 2, 1)
    return tower.layer_norm(h)[0]


def encode_window(model, features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The model's own path (30-second window, masked padding), for the check."""
    from transformers.masking_utils import create_bidirectional_mask  # noqa: PLC0415

    tower = model.model.audio_tower
    t1 = (n_frames - 1) // 2 + 1
    mask2d = (torch.arange(1500)[None] < t1).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=torch.zeros(1, 1500, 1),
                                     attention_mask=mask2d)
    out = tower(features[None], attention_mask=mask).last_hidden_state[0]
    return out[: (t1 - 2) // 2 + 1]


def precompute(model, proc, manifest: list[dict], data_dir: Path, cache: Path) -> dict[str, torch.Tensor]:
    """Encoder outputs of every clip, cached in `cache` (saved as they are made: a rerun resumes)."""
    enc = load_file(str(cache)) if cache.exists() else {}
    todo = [(i, r) for i, r in enumerate(manifest) if r["id"] not in enc]
    log(f"encoder outputs: {len(manifest) - len(todo)} clips from {cache}, {len(todo)} to compute")
    fe = proc.feature_extractor
    tower = model.model.audio_tower
    start = time.time()
    with torch.no_grad():
        for k, (i, r) in enumerate(todo):
            wav, sr = sf.read(data_dir / r["audio"], dtype="float32")
            assert sr == SR, (r["audio"], sr)
            # log-mel of the clip plus 1 s of zeros: the frames up to F+1 are those of the 30 s
            # window (the STFT's reflection padding and the max used for the dynamic range are
            # only reached further on), at a fifth of the cost; checked on the first clip
            n_frames = -(-len(wav) // 160)
            padded = np.concatenate([wav, np.zeros(SR, dtype=np.float32)])
            feats = fe(padded, sampling_rate=SR, padding="longest", return_tensors="pt")["input_features"][0]
            out = encode_valid(tower, feats, n_frames)
            if i == 0:
                f = fe(wav, sampling_rate=SR, return_attention_mask=True, padding="max_length", return_tensors="pt")
                window = f["input_features"][0]
                assert int(f["attention_mask"].sum()) == n_frames
                assert torch.equal(window[:, : n_frames + 2], feats[:, : n_frames + 2])
                ref = encode_window(model, window, n_frames)
                err = float((out - ref).abs().max() / ref.abs().max())
                log(f"valid-part encoder vs. the masked 30 s window on {r['id']}: rel {err:.2e} ({len(out)} tokens)")
                assert err < 1e-4, err
            enc[r["id"]] = out.contiguous()
            if (k + 1) % 100 == 0 or k + 1 == len(todo):
                save_file(enc, str(cache))
                log(f"  encoded {k + 1}/{len(todo)} ({time.time() - start:.0f} s)")
    log(f"encoder outputs: {len(enc)} clips in {time.time() - start:.0f} s -> {cache}")
    return enc


# ----------------------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------------------


class Batcher:
    """Token ids of prompt + answer for each clip, padded into batches (audio rows filled later)."""

    def __init__(self, proc, audio_id: int, pad_id: int):
        tok = proc.tokenizer
        conv = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"},
                                             {"type": "text", "text": INSTRUCTION}]}]
        prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert ids.count(audio_id) == 1, prompt
        k = ids.index(audio_id)
        self.before, self.after = ids[:k], ids[k + 1:]
        self.tok, self.audio_id, self.pad_id = tok, audio_id, pad_id
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.prompt = prompt

    def answer(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] + [self.im_end]

    def make(self, items: list[tuple[torch.Tensor, str]]):
        rows, lens = [], []
        for enc, text in items:
            ans = self.answer(text)
            ids = self.before + [self.audio_id] * len(enc) + self.after + ans
            rows.append((ids, len(self.before), len(enc), len(ids) - len(ans)))
            lens.append(len(ids))
        L = max(lens)
        ids = torch.full((len(items), L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(items), L), dtype=torch.long)
        labels = torch.full((len(items), L), -100, dtype=torch.long)
        spans = []
        for b, (row, a0, n, ans0) in enumerate(rows):
            ids[b, : len(row)] = torch.tensor(row)
            attn[b, : len(row)] = 1
            labels[b, ans0: len(row)] = torch.tensor(row[ans0:])
            spans.append((a0, n))
        return ids, attn, labels, spans


def loss_of(model, proj, batch, enc_rows, dtype) -> tuple[torch.Tensor, int]:
    ids, attn, labels, spans = batch
    lm = model.model.language_model
    with torch.no_grad():
        emb = lm.embed_tokens(ids)
    parts = []
    for b, (a0, n) in enumerate(spans):
        audio = proj(enc_rows[b]).to(dtype)
        parts.append(torch.cat([emb[b, :a0], audio, emb[b, a0 + n:]], dim=0))
    embeds = torch.stack(parts)
    hidden = lm(inputs_embeds=embeds, attention_mask=attn, use_cache=False).last_hidden_state
    # logits only where an answer token is predicted (the 151936-wide head is a quarter of the
    # model's FLOPs per position)
    tgt = labels[:, 1:]
    sel = tgt != -100
    h = hidden[:, :-1][sel]
    logits = model.lm_head(h).float()
    n = int(sel.sum())
    return F.cross_entropy(logits, tgt[sel], reduction="sum") / n, n


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "real-mini")
    ap.add_argument("--data", type=Path, required=True, help="folder with manifest.jsonl (make_projector_data.sh)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "auris-mini-projector")
    ap.add_argument("--curve", type=Path, default=ROOT / "bench" / "auris_mini_training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-floor", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="bf16",
                    help="the frozen language model's dtype (the projector and optimiser stay f32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val", type=int, default=48, help="clips held out of training for the validation loss")
    ap.add_argument("--init", type=Path,
                    help="start from this projector.safetensors instead of real-mini's random projector")
    ap.add_argument("--clips", type=int, help="use only the manifest's first N clips (what the budget can train on)")
    steps = ap.add_mutually_exclusive_group(required=True)
    steps.add_argument("--steps", type=int, help="optimiser steps (reproduces a run)")
    steps.add_argument("--minutes", type=float, help="time budget for the steps: sized from a measurement")
    ap.add_argument("--stop-after-minutes", type=float,
                    help="a hard wall-clock stop for the training loop (the projector so far is saved)")
    ap.add_argument("--stop-at-step", type=int,
                    help="stop after this many steps of a --steps schedule (reproduces a run that the wall clock stopped)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    transformers.logging.set_verbosity_error()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    t_start = time.time()

    manifest_path = args.data / "manifest.jsonl"
    manifest = [json.loads(line) for line in manifest_path.read_text().splitlines() if line.strip()]
    manifest_sha = sha256_file(manifest_path)
    manifest = manifest[: args.clips or len(manifest)]
    log(f"torch {torch.__version__}, transformers {transformers.__version__}; {len(manifest)} clips, "
        f"manifest sha256 {manifest_sha}")

    model = Qwen2AudioForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(args.model)
    model.requires_grad_(False)
    enc = precompute(model, proc, manifest, args.data, args.data / f"encoded-{manifest_sha[:16]}.safetensors")
    model.model.audio_tower = None  # not needed any more
    model.model.language_model.to(dtype)
    model.lm_head.to(dtype)

    lin = model.model.multi_modal_projector.linear
    proj = torch.nn.Linear(lin.in_features, lin.out_features)
    start = (load_file(str(args.init)) if args.init is not None else
             {"multi_modal_projector.linear.weight": lin.weight, "multi_modal_projector.linear.bias": lin.bias})
    with torch.no_grad():
        proj.weight.copy_(start["multi_modal_projector.linear.weight"].float())
        proj.bias.copy_(start["multi_modal_projector.linear.bias"].float())
    init_w = proj.weight.detach().clone()
    opt = torch.optim.AdamW(proj.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    batcher = Batcher(proc, model.config.audio_token_index, proc.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    log(f"prompt: {batcher.prompt!r} + answer + <|im_end|>")
    order = list(range(len(manifest)))
    rng = random.Random(args.seed)
    rng.shuffle(order)
    val_idx, train_idx = order[: args.val], order[args.val:]

    def items(idx):
        return [(enc[manifest[i]["id"]], manifest[i]["text"]) for i in idx]

    def val_loss() -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for k in range(0, len(val_idx), args.batch):
                chunk = items(val_idx[k: k + args.batch])
                loss, m = loss_of(model, proj, batcher.make(chunk), [e for e, _ in chunk], dtype)
                total += float(loss) * m
                n += m
        return total / max(1, n)

    def train_step(step: int, total_steps: int, idx: list[int]) -> tuple[float, int]:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total_steps, args.lr, args.warmup, args.lr_floor)
        chunk = items(idx)
        loss, m = loss_of(model, proj, batcher.make(chunk), [e for e, _ in chunk], dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(proj.parameters(), 1.0)
        opt.step()
        return float(loss), m

    # Batches: the training clips in a seeded order, clips of similar length together within
    # windows of 16 batches (less padding), the batches themselves in a seeded order.
    def epoch_batches(epoch: int) -> list[list[int]]:
        r = random.Random(args.seed * 1000 + epoch)
        idx = train_idx[:]
        r.shuffle(idx)
        w = 16 * args.batch
        batches = []
        for k in range(0, len(idx), w):
            win = sorted(idx[k: k + w], key=lambda i: len(enc[manifest[i]["id"]]))
            batches += [win[j: j + args.batch] for j in range(0, len(win), args.batch)]
        r.shuffle(batches)
        return [b for b in batches if len(b) == args.batch]

    schedule = []
    epoch = 0
    while len(schedule) < 100_000 and epoch < 50:
        schedule += epoch_batches(epoch)
        epoch += 1

    v0 = val_loss()
    start_name = f"the projector of {args.init}" if args.init is not None else "real-mini's random projector"
    log(f"validation loss with {start_name}: {v0:.3f} ({len(val_idx)} clips)")

    curve = []
    measured_s = None
    if args.steps is not None:
        total = args.steps
    else:
        # measure on steps 2-4 (the schedule's own batches, as if for a long run; their
        # updates are undone afterwards so that the run equals a --steps run)
        state = {k: v.clone() for k, v in proj.state_dict().items()}
        opt_state = opt.state_dict()
        t = time.time()
        train_step(0, 10**6, schedule[0])
        t = time.time()
        for s in range(1, 4):
            train_step(s, 10**6, schedule[s])
        measured_s = (time.time() - t) / 3
        proj.load_state_dict(state)
        opt = torch.optim.AdamW(proj.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        opt.load_state_dict(opt_state)
        total = max(args.warmup + 1, int(args.minutes * 60 / measured_s))
        log(f"measured {measured_s:.2f} s/step (batch {args.batch}, {args.dtype}, {args.threads} threads): "
            f"{total} steps fit {args.minutes} minutes")

    t_train = time.time()
    stopped_early = False
    seen = 0
    for step in range(total):
        if args.stop_at_step is not None and step >= args.stop_at_step:
            stopped_early = True
            break
        if args.stop_after_minutes and time.time() - t_train > args.stop_after_minutes * 60:
            stopped_early = True
            log(f"stopping at step {step}: --stop-after-minutes {args.stop_after_minutes} reached")
            break
        loss, m = train_step(step, total, schedule[step])
        seen += args.batch
        elapsed = time.time() - t_train
        curve.append((step + 1, seen, loss, opt.param_groups[0]["lr"], round(elapsed, 1)))
        if (step + 1) % 50 == 0:  # a kill or a crash later still leaves a projector
            args.out.mkdir(parents=True, exist_ok=True)
            save_file({"multi_modal_projector.linear.weight": proj.weight.detach().clone(),
                       "multi_modal_projector.linear.bias": proj.bias.detach().clone()},
                      str(args.out / "projector.partial.safetensors"), metadata={"step": str(step + 1)})
        if step % 10 == 0 or step == total - 1:
            log(f"step {step + 1}/{total} loss {loss:.3f} lr {opt.param_groups[0]['lr']:.2e} "
                f"({elapsed / (step + 1):.2f} s/step, {elapsed / 60:.1f} min)")
    train_s = time.time() - t_train
    steps_done = len(curve)
    v1 = val_loss()
    log(f"validation loss: {v0:.3f} -> {v1:.3f}")

    facts = {
        "command": " ".join(["scripts/train_projector.py", *sys.argv[1:]]),
        "reproduce_with": f"--clips {len(manifest)} --steps {total} --warmup {args.warmup} --lr {args.lr} --batch {args.batch} "
                          f"--dtype {args.dtype} --seed {args.seed}"
                          + (f" --init {args.init}" if args.init is not None else "")
                          + (f" --stop-at-step {steps_done}" if stopped_early else ""),
        "data_manifest_sha256": manifest_sha, "clips": len(manifest), "clips_option": args.clips, "train_clips": len(train_idx),
        "val_clips": len(val_idx), "seed": args.seed, "batch": args.batch, "lr": args.lr, "lr_floor": args.lr_floor,
        "warmup": args.warmup, "weight_decay": args.weight_decay, "dtype": args.dtype, "threads": args.threads,
        "steps_planned": total, "steps_done": steps_done, "examples_seen": seen,
        "epochs": round(seen / max(1, len(train_idx)), 2), "measured_s_per_step": measured_s,
        "train_s": round(train_s, 1), "s_per_step": round(train_s / max(1, steps_done), 2),
        "loss_first": curve[0][2] if curve else None,
        "loss_last20_mean": float(np.mean([c[2] for c in curve[-20:]])) if curve else None,
        "val_loss_initial": v0, "val_loss_final": v1,
        "weight_change_rel": float((proj.weight - init_w).norm() / init_w.norm()),
        "prompt": batcher.prompt, "torch": torch.__version__, "transformers": transformers.__version__,
        "total_s": round(time.time() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {"multi_modal_projector.linear.weight": proj.weight.detach().float().contiguous(),
               "multi_modal_projector.linear.bias": proj.bias.detach().float().contiguous()}
    save_file(tensors, str(args.out / "projector.safetensors"),
              metadata={k: json.dumps(v) for k, v in facts.items()})
    (args.out / "training.json").write_text(json.dumps(facts, indent=1) + "\n")
    (args.out / "projector.partial.safetensors").unlink(missing_ok=True)
    args.curve.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{args.curve}.csv", "w") as f:
        f.write("step,examples,loss,lr,elapsed_s\n")
        for c in curve:
            f.write(",".join(str(x) for x in c) + "\n")
    write_loss_svg(Path(f"{args.curve}.svg"), [(c[0], c[2]) for c in curve],
                   title=f"auris-mini projector: training loss ({steps_done} steps x {args.batch} clips)",
                   val=[(0, v0), (steps_done, v1)])
    log(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
