#!/usr/bin/env python3
"""Generate the Audio Flamingo 3 fixtures by running the reference implementation itself.

Run through `scripts/make_fixtures.sh`, after `scripts/make_fixtures.py` (whose clips, mel fixtures,
tokenizer and helpers it reuses). Writes (relative to the repository root):

  models/tiny-af3/, tiny-af3-f32/      tiny random AudioFlamingo3ForConditionalGeneration checkpoints
                                       (hub layout)
  tests/fixtures/ref/tiny-af3*/        per-case reference outputs (json + safetensors)
  tests/fixtures/ref/af3_config_defaults.json, af3_processor_windows.json

Everything is deterministic (fixed seeds); tests/fixtures/README.md documents the layout.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3EncoderConfig,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    AutoProcessor,
    GenerationConfig,
    Qwen2Config,
    Qwen2TokenizerFast,
    WhisperFeatureExtractor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402
from make_fixtures import (  # noqa: E402
    AUDIO, CHAT_CAPTION_TEXT, MAX_NEW_TOKENS, MC_TEXT, MEL, MIN_MARGIN, MODELS, N_FRAMES, REF, SEGMENTS, SR,
    WINDOW, dir_size, generate_recorded, init_weights, log, margins_of, rel,
    save_tensors, write_json,
)
from audio import load_16k  # noqa: E402  (scripts/lib, put on sys.path by make_fixtures)

# The hub tokenizer has Qwen2.5's specials, then `<sound>` (151669) and the Music Flamingo
# `<|sound_bos|>`/`<|sound_eos|>`; the tiny one keeps that order in miniature (`<sound>` = 405, not
# tiny-chat's `<|AUDIO|>` id 403, so a loader that hard-codes either id fails).
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
            "<sound>", "<|sound_bos|>", "<|sound_eos|>"]

# The chat template of nvidia/audio-flamingo-3-hf (set by transformers'
# models/audioflamingo3/convert_audioflamingo3_to_hf.py), written out here: a default system turn when
# the conversation has none; in a turn whose content is a list, `<sound>` when any item is audio,
# then every text item concatenated (so the sound always comes first, with no separator).
PROCESSOR_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages if m['content'] is not none %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}"
    "{% set seen = namespace(audio=False, text='') %}"
    "{% for c in m['content'] %}"
    "{% if c.get('type') == 'audio' or 'audio' in c %}{% set seen.audio = True %}"
    "{% elif c.get('type') == 'text' or 'text' in c %}{% set seen.text = seen.text + c['text'] %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if seen.audio %}<sound>{% endif %}{{ seen.text }}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRANSCRIBE_PROMPT = "Transcribe the input speech."  # AudioFlamingo3Processor.default_transcription_prompt

# Weight seeds, chosen (by trying a few) so that no greedy step of any case has a top-1/top-2 margin
# below MIN_MARGIN.
MODEL_SEEDS = {"tiny-af3": 3, "tiny-af3-f32": 15}
LOGIT_SCALE = 4.0  # lm_head weights are N(0, 0.2) * LOGIT_SCALE
PRUNE_KEEP = 0.25
MAX_AF3_BYTES = 4_000_000
ROOT_CACHE = mf.ROOT / "scripts" / ".cache"


def af3_tokenizer():
    return mf.build_tokenizer(SPECIALS)


def fast_tokenizer(tok) -> Qwen2TokenizerFast:
    return Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              bos_token=None, unk_token=None)


def make_processor(tok) -> AudioFlamingo3Processor:
    # As the hub's: WhisperFeatureExtractor(feature_size=128, return_attention_mask=True), defaults otherwise.
    fe = WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    return AudioFlamingo3Processor(feature_extractor=fe, tokenizer=fast_tokenizer(tok),
                                   chat_template=PROCESSOR_CHAT_TEMPLATE)


def model_config(kind: str, ids: dict) -> AudioFlamingo3Config:
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    if kind == "tiny-af3":
        # Shaped like the hub model in miniature: GQA decoder, rope_theta 1e6, projector with biases.
        audio = dict(model_type="audioflamingo3_encoder", hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=128)
        text = dict(model_type="qwen2", vocab_size=512, hidden_size=80, intermediate_size=160, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, eos_token_id=im_end,
                    pad_token_id=eot, use_cache=False)
        return AudioFlamingo3Config(audio_config=audio, text_config=text, audio_token_id=ids["<sound>"])
    audio = dict(model_type="audioflamingo3_encoder", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64)
    text = dict(model_type="qwen2", vocab_size=512, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, eos_token_id=im_end, pad_token_id=eot)
    return AudioFlamingo3Config(audio_config=audio, text_config=text, audio_token_id=ids["<sound>"],
                                projector_bias=False)


def generation_config(kind: str, ids: dict) -> GenerationConfig:
    eot, im_end = ids["<|endoftext|>"], ids["<|im_end|>"]
    if kind == "tiny-af3":
        # The sampling defaults of the first hub conversion.
        return GenerationConfig(bos_token_id=eot, do_sample=True, eos_token_id=[im_end, eot], pad_token_id=eot,
                                repetition_penalty=1.05, temperature=0.7, top_k=20, top_p=0.8)
    # What the current converter writes: the tokenizer's ids and a length limit, greedy.
    return GenerationConfig(eos_token_id=im_end, pad_token_id=eot, max_new_tokens=2048)


def make_model(kind: str, tok) -> dict:
    out = MODELS / kind
    if out.exists():
        shutil.rmtree(out)
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    cfg = model_config(kind, ids)
    seed = MODEL_SEEDS[kind]
    torch.manual_seed(seed)
    model = AudioFlamingo3ForConditionalGeneration(cfg).eval()
    init_weights(model, seed)
    with torch.no_grad():
        # Peakier logits: the 24-step greedy runs over 1050 audio tokens otherwise meet near-ties
        # (top-1/top-2 gaps under MIN_MARGIN) for every seed tried.
        model.lm_head.weight.mul_(LOGIT_SCALE)
    model.generation_config = generation_config(kind, ids)
    if kind == "tiny-af3":
        model = model.to(torch.bfloat16)
        model.save_pretrained(out, max_shard_size="200KB")
    else:
        model.save_pretrained(out)
    make_processor(tok).save_pretrained(out)

    facts = {"dir": rel(out), "special_token_ids": ids}
    saved = json.loads((out / "config.json").read_text())
    facts["config_written"] = json.loads(json.dumps(saved))
    if kind == "tiny-af3":
        facts["config_keys_removed"] = mf.write_without_defaults(out, saved, AudioFlamingo3Config,
                                                                 AudioFlamingo3EncoderConfig)

    tensors = mf.checked_tensors(out)
    proj = sorted(k for k in tensors if k.startswith("multi_modal_projector."))
    want = [f"multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("bias", "weight")
            if p == "weight" or cfg.projector_bias]
    assert proj == sorted(want), proj
    facts.update(n_tensors=len(tensors), shards=sorted({v[0] for v in tensors.values()}),
                 dtypes=sorted({v[2] for v in tensors.values()}), projector_tensors=proj)
    if kind == "tiny-af3":
        assert len(facts["shards"]) >= 3 and (out / "model.safetensors.index.json").exists(), facts["shards"]
    facts["files"] = sorted(p.name for p in out.iterdir())
    facts["n_parameters"] = sum(p.numel() for p in model.parameters())
    return facts


def load_reference(kind: str):
    d = MODELS / kind
    model = AudioFlamingo3ForConditionalGeneration.from_pretrained(d, dtype=torch.float32,
                                                                   attn_implementation="eager").eval()
    proc = AutoProcessor.from_pretrained(d)
    assert isinstance(proc, AudioFlamingo3Processor), type(proc)
    return model, proc


# ----------------------------------------------------------------------------------------------
# reference cases
# ----------------------------------------------------------------------------------------------


def token_counts(frames: int) -> tuple[int, int]:
    t1 = (frames - 1) // 2 + 1
    return t1, (t1 - 2) // 2 + 1


def fixture_features(clip: str, feats: torch.Tensor) -> tuple[torch.Tensor, list[dict], float]:
    """The mel fixture of every window as a (windows, 128, 3000) batch, checked against the processor's.

    The references run on these features, not on the processor's own: a CPU whose FFT rounds
    differently from the one that made the mel fixtures gives features a few 1e-5 away, and the
    encoder references must match the mel fixtures that the Rust tests feed in."""
    stem = Path(clip).stem
    doc = json.loads((MEL / f"{stem}.json").read_text())
    assert len(doc["windows"]) == feats.shape[0], (clip, len(doc["windows"]), feats.shape)
    out = []
    with safe_open(str(MEL / f"{stem}.safetensors"), "np") as h:
        for w in range(len(doc["windows"])):
            ref = h.get_tensor(f"mel128_w{w}")
            pad = h.get_tensor(f"mel128_w{w}_pad")[0]
            full = np.full((128, N_FRAMES), pad, dtype=np.float32)
            full[:, : ref.shape[1]] = ref
            out.append(full)
    fixture = torch.from_numpy(np.stack(out))
    diff = float((fixture - feats).abs().max())
    assert diff < 2e-4, f"{clip}: processor features differ from the mel fixture by {diff}"
    return fixture, doc["windows"], diff


def audio_internals(model, inputs) -> dict:
    """Encoder output, scores and projector output per window, as the model's forward builds them."""
    tower = model.model.audio_tower
    captured = {}

    def post_hook(_module, _args, _kwargs, output):
        captured["hidden"] = output.last_hidden_state.detach().clone()

    handle = tower.register_forward_hook(post_hook, with_kwargs=True)
    with torch.no_grad():
        out = model(**inputs)
    handle.remove()

    feats, fmask = inputs["input_features"], inputs["input_features_mask"]
    with torch.no_grad():
        enc = tower(feats, input_features_mask=fmask, output_attentions=True)
        assert torch.equal(enc.last_hidden_state, captured["hidden"]), "re-run of the audio tower differs"
        hidden = enc.last_hidden_state  # (windows, 750, d_audio)
        projected = model.model.multi_modal_projector(hidden)
        pooler = model.model.get_audio_features(feats, fmask).pooler_output
    att = enc.attentions[-1]  # (windows, H, 1500, 1500)
    windows, scores, embeds, rows = [], [], [], []
    for w in range(feats.shape[0]):
        frames = int(fmask[w].sum())
        t1, n = token_counts(frames)
        if t1 < att.shape[-1]:
            assert float(att[w, :, :, t1:].abs().max()) == 0.0, "padded keys received attention"
        s = att[w].mean(dim=0)[:t1].mean(dim=0)
        scores.append(((s[0::2] + s[1::2]) / 2)[:n])
        embeds.append(hidden[w, :n])
        rows.append(projected[w, :n])
        windows.append({"valid_frames": frames, "t1": t1, "n_audio_tokens": n})
    projected_valid = torch.cat(rows)
    assert torch.equal(projected_valid, pooler), "projector rows differ from get_audio_features"
    return dict(
        windows=windows,
        N=sum(w["n_audio_tokens"] for w in windows),
        audio_scores=torch.cat(scores).numpy().astype(np.float32),
        audio_embeds=torch.cat(embeds).numpy().astype(np.float32),
        projected=projected_valid.numpy().astype(np.float32),
        projected_valid=projected_valid,
        prompt_logits=out.logits[0, -1].float().numpy().astype(np.float32),
    )


def conversation(clip: str, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "audio", "audio_url": f"tests/fixtures/audio/{clip}"},
                                         {"type": "text", "text": text}]}]


def run_case(model, proc, *, kind: str, clip: str, prompt: str, gen_kwargs: dict, extra: dict) -> tuple[dict, dict, dict]:
    wav, meta = load_16k(AUDIO / clip)
    inputs = dict(proc(text=prompt, audio=wav, return_tensors="pt"))
    inputs["input_features"], mel_windows, mel_diff = fixture_features(clip, inputs["input_features"])
    it = audio_internals(model, inputs)
    ids = inputs["input_ids"][0]
    audio_id = model.config.audio_token_id
    pos = (ids == audio_id).nonzero().flatten().tolist()
    assert len(pos) == it["N"] and pos == list(range(pos[0], pos[0] + len(pos))), (len(pos), it["N"])
    assert int(proc._get_audio_token_length(torch.tensor(sum(w["valid_frames"] for w in it["windows"])))) == it["N"]

    g, procs = generate_recorded(model, **inputs, **gen_kwargs)
    new_ids = g.sequences[0, ids.shape[0]:].tolist()
    if gen_kwargs.get("repetition_penalty", 1.0) == 1.0:
        assert np.allclose(g.scores[0][0].float().numpy(), it["prompt_logits"], atol=1e-5), "step-0 scores differ"
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    windows = [{"start_sample": m["start_sample"], "n_samples": m["n_samples"], **w,
                "mel_tensor": f"mel128_w{i}", "mel_pad_tensor": f"mel128_w{i}_pad"}
               for i, (m, w) in enumerate(zip(mel_windows, it["windows"]))]
    doc = {
        "model": f"models/{kind}",
        "audio": f"audio/{clip}",
        "audio_meta": {k: meta[k] for k in ("sample_rate", "channels", "n_samples", "n_samples_16k", "resampled")},
        **extra,
        "prompt": prompt,
        "input_ids": ids.tolist(),
        "audio_token_id": audio_id,
        "audio_token_span": [pos[0], pos[-1] + 1],
        "n_windows": len(windows),
        "windows": windows,
        "n_audio_tokens": it["N"],
        "input_features": {"mel": f"mel/{Path(clip).stem}.safetensors", "shape": [len(windows), 128, N_FRAMES],
                           "note": "window w is mel128_w{w} then mel128_w{w}_pad repeated to 3000 frames; the "
                                   "references ran on these (the processor's own features on the generating "
                                   "machine differed by max_abs_diff_to_processor)",
                           "max_abs_diff_to_processor": mel_diff},
        "generation": {**gen_kwargs, "output_scores": True},
        "logits_processors": procs,
        "eos_token_ids": eos,
        "greedy_ids": new_ids,
        "greedy_margins": margins_of(g.scores),
        "greedy_stopped_on_eos": bool(new_ids and new_ids[-1] in eos),
        "text": proc.decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        "text_with_special_tokens": proc.decode(new_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
    }
    tensors = {k: it[k] for k in ("audio_embeds", "audio_scores", "projected", "prompt_logits")}
    return doc, tensors, {"inputs": inputs, "internals": it}


def pruned_case(model, proc, source: dict, run: dict, gen_kwargs: dict) -> tuple[dict, dict]:
    """Segmentwise keep 0.25 over the whole `<sound>` run (all windows), plus every strategy's selection."""
    it = run["internals"]
    scores, embeds = it["audio_scores"], it["audio_embeds"]
    sel, vz_rows, vz_info = mf.selections(scores, embeds)
    ids = run["inputs"]["input_ids"][0]
    audio_id = model.config.audio_token_id
    every = list(range(it["N"]))
    full_ids, full_gen, _, full_logits, _ = mf.pruned_generation(model, ids, it["projected_valid"], every,
                                                                  gen_kwargs, audio_id=audio_id)
    assert full_ids == ids.tolist() and full_gen == source["greedy_ids"], (full_gen, source["greedy_ids"])
    assert np.allclose(full_logits, it["prompt_logits"], atol=1e-4)
    kept = sel["segmentwise"][str(PRUNE_KEEP)]
    p_ids, p_gen, p_m, p_logits, p_procs = mf.pruned_generation(model, ids, it["projected_valid"], kept, gen_kwargs,
                                                                audio_id=audio_id)
    eos = source["eos_token_ids"]
    doc = {
        "model": source["model"],
        "audio": source["audio"],
        "source_case": f"{source['model'].split('/')[-1]}/{source['case']} (same prompt, scores, embeddings)",
        "prompt": source["prompt"],
        "input_ids": source["input_ids"],
        "windows": source["windows"],
        "n_audio_tokens": it["N"],
        "selection_scope": "the whole <sound> run: the windows' tokens concatenated in order",
        **mf.pruned_fields(proc, sel, vz_info, kept, PRUNE_KEEP, gen_kwargs, (p_ids, p_gen, p_m, p_procs), eos),
    }
    tensors = {"audio_scores": scores, "audio_embeds": embeds, "projected": it["projected"],
               "pruned_prompt_logits": p_logits, **vz_rows}
    return doc, tensors


def choice_case(model, proc, doc: dict, run: dict) -> None:
    doc["choice_logprobs"] = mf.choice_logprobs(model, proc, run["inputs"])
    doc["choice_logprobs_note"] = ("continuation '(L) <choice>' tokenized without special tokens, appended to "
                                   "input_ids; sum of log_softmax(raw logits) over the continuation tokens")


def write_case(kind: str, case: str, doc: dict, tensors: dict, report: dict) -> None:
    write_json(REF / kind / f"{case}.json", doc)
    save_tensors(REF / kind / f"{case}.safetensors", tensors)
    report[f"{kind}/{case}"] = doc


def make_refs_tiny_af3(report: dict) -> None:
    kind = "tiny-af3"
    model, proc = load_reference(kind)
    # Greedy, with the repetition penalty of the checkpoint's generation_config.json (auris' defaults).
    gen = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "repetition_penalty": 1.05}
    runs = {}
    for case, clip, text in (("caption_librivox", "librivox_0930_16k.wav", CHAT_CAPTION_TEXT),
                             ("caption_long42", "long_42s_16k.wav", CHAT_CAPTION_TEXT),
                             ("ask_mc_dog", "dog_48k.mp3", MC_TEXT)):
        conv = conversation(clip, text)
        prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        expect = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<sound>" + text
                  + "<|im_end|>\n<|im_start|>assistant\n")
        assert prompt == expect, repr(prompt)
        extra = {"case": case, "conversation": conv,
                 "prompt_source": "processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)"}
        doc, tensors, run = run_case(model, proc, kind=kind, clip=clip, prompt=prompt, gen_kwargs=gen, extra=extra)
        if case == "ask_mc_dog":
            choice_case(model, proc, doc, run)
        write_case(kind, case, doc, tensors, report)
        runs[case] = (doc, run)
    for source in ("caption_librivox", "caption_long42"):
        doc, run = runs[source]
        pdoc, ptensors = pruned_case(model, proc, doc, run, gen)
        write_case(kind, f"prune_seg25_{source.split('_', 1)[1]}", pdoc, ptensors, report)


def make_refs_tiny_af3_f32(report: dict) -> None:
    kind = "tiny-af3-f32"
    model, proc = load_reference(kind)
    gen = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}
    clip = "librivox_0880_16k.wav"
    wav, _ = load_16k(AUDIO / clip)
    prompt = proc.apply_transcription_request(audio=wav, tokenize=False)[0]
    expect = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<sound>{TRANSCRIBE_PROMPT}"
              "<|im_end|>\n<|im_start|>assistant\n")
    assert prompt == expect, repr(prompt)
    extra = {"case": "transcribe_librivox",
             "prompt_source": "processor.apply_transcription_request(audio, tokenize=False) (default prompt)"}
    doc, tensors, _ = run_case(model, proc, kind=kind, clip=clip, prompt=prompt, gen_kwargs=gen, extra=extra)
    write_case(kind, "transcribe_librivox", doc, tensors, report)


def processor_windows() -> dict:
    """How AudioFlamingo3Processor cuts audio into windows and counts `<sound>` tokens, by length."""
    proc = make_processor(af3_tokenizer())
    rows = []
    transformers.logging.set_verbosity_warning()
    for seconds, extra_samples in ((0.5, 0), (1, 0), (30, 0), (30, 1), (42, 0), (59.99, 0), (600, 0), (600, 1),
                                   (750, 0)):
        n = int(round(seconds * SR)) + extra_samples
        x = np.zeros(n, dtype=np.float32)
        x[::97] = 0.1  # not all zeros (the extractor's output does not matter here, only the counts)
        out = proc(text="<sound>", audio=x, return_tensors="pt")
        frames = out["input_features_mask"].sum(-1).tolist()
        ids = out["input_ids"][0]
        rows.append({"n_samples": n, "seconds": n / SR, "n_windows": len(frames), "window_valid_frames": frames,
                     "n_sound_tokens": int((ids == proc.audio_token_id).sum()),
                     "sum_per_window_tokens": sum(token_counts(f)[1] for f in frames),
                     "samples_used": min(n, len(frames) * WINDOW)})
    transformers.logging.set_verbosity_error()
    return {
        "transformers_version": transformers.__version__,
        "processor": "AudioFlamingo3Processor(WhisperFeatureExtractor(feature_size=128, return_attention_mask=True), "
                     "max_audio_len=600)",
        "window_samples": WINDOW,
        "max_windows": 20,
        "rule": "n_windows = min(max(1, ceil(n / 480000)), 20); past 600 s the rest is dropped with a logged warning; "
                "each window is padded to 480000 samples; n_sound_tokens = N(sum of the windows' valid frames), "
                "N(F) = ((F - 1)//2 + 1 - 2)//2 + 1, equal to the sum of N over the windows",
        "cases": rows,
    }


def main() -> None:
    torch.manual_seed(mf.SEED)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    log(f"AF3: torch {torch.__version__}, transformers {transformers.__version__}")
    for kind in ("tiny-af3", "tiny-af3-f32"):
        shutil.rmtree(REF / kind, ignore_errors=True)

    tok = af3_tokenizer()
    facts = {k: make_model(k, tok) for k in MODEL_SEEDS}
    write_json(REF / "af3_config_defaults.json", {
        "transformers_version": transformers.__version__,
        "AudioFlamingo3Config": json.loads(AudioFlamingo3Config().to_json_string(use_diff=False)),
        "AudioFlamingo3EncoderConfig": json.loads(AudioFlamingo3EncoderConfig().to_json_string(use_diff=False)),
        "AudioFlamingo3EncoderConfig.attribute_map": AudioFlamingo3EncoderConfig.attribute_map,
        "Qwen2Config": json.loads(Qwen2Config().to_json_string(use_diff=False)),
    })
    write_json(REF / "af3_processor_windows.json", processor_windows())

    report = {}
    make_refs_tiny_af3(report)
    make_refs_tiny_af3_f32(report)

    write_json(ROOT_CACHE / "last_run_af3_facts.json", {"models": facts})
    for k, f in facts.items():
        log(f"== {k}: {f['n_parameters']} parameters, {f['n_tensors']} tensors in {f['shards']} {f['dtypes']}; "
            f"projector {f['projector_tensors']}")
        if "config_keys_removed" in f:
            log(f"   config keys removed (transformers defaults): {json.dumps(f['config_keys_removed'])}")
    worst = mf.log_cases(report)
    paths = [REF / "tiny-af3", REF / "tiny-af3-f32", MODELS / "tiny-af3", MODELS / "tiny-af3-f32"]
    for p in paths:
        log(f"   {rel(p):32s} {dir_size(p) / 1e6:7.3f} MB")
    total = sum(dir_size(p) for p in paths)
    log(f"   AF3 total {total / 1e6:.3f} MB")
    assert total < MAX_AF3_BYTES, "AF3 fixtures too large"
    assert worst >= MIN_MARGIN, f"a greedy step has margin {worst:.4f} < {MIN_MARGIN}: choose other MODEL_SEEDS"


if __name__ == "__main__":
    main()
