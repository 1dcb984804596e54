"""Time the peers of `auris bench` on the same checkpoint, clips and prompt: PyTorch and llama.cpp.

Run by scripts/bench.sh, one engine per process (so each peak RSS is that engine's alone):

    $VENV/bin/python scripts/bench_peers.py torch    --model bench/work/realistic \
        --clip30 bench/work/clip_29p9s.wav --clip10 bench/work/clip_10s.wav --threads 2 --out torch.json
    $VENV/bin/python scripts/bench_peers.py llamacpp --model bench/work/realistic \
        --gguf bench/work/gguf/realistic-f32.gguf --mmproj bench/work/gguf/mmproj-realistic-f32.gguf \
        --clip30 bench/work/clip_29p9s.wav --clip10 bench/work/clip_10s.wav --threads 2 --out llamacpp.json

Each writes one JSON object with the keys of bench/results.json it could measure (seconds, medians
of --repeat runs after --warmup untimed runs), `peak_rss_mb` (VmHWM of this process), `notes`
(what could not be measured, and why; the settings that matter) and `detail` (token counts, extra
stages). On the realistic checkpoint and 2 cores one engine takes about 2 minutes with --warmup 1
--repeat 1 and about 4 minutes with the defaults.

What is timed, per engine:
  mel_30s_s       log-mel of the 29.9 s clip (the file decode is in detail.decode_audio_s)
  encoder_30s_s   the audio encoder on that one 30 s window
  encoder_10s_s   the audio encoder on the 10 s clip (both peers run the full 3000-frame window)
  prefill_800_s   the language model on --prefill-tokens[0] random token ids, logits of the last
  prefill_238_s   position only; the same on --prefill-tokens[1] ids
  ttft_30s_none_s the user's path from the file: decode + mel + encoder + projector + merge +
                  prefill of the real prompt + the first greedy token
  e2e_30s_none_s  the same plus --new-tokens greedy tokens with the KV cache (stop ids ignored)
  decode_tok_s    those tokens / their time (the decode after the ~800-token prompt)
Neither peer prunes audio tokens, so neither has ttft_30s_seg25_s / e2e_30s_seg25_s.

The prompt is the one auris uses for `caption` on a chat model: the checkpoint's chat template with
one user turn holding the audio and "Describe the audio in one sentence.".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

DEFAULT_INSTRUCTION = "Describe the audio in one sentence."  # src/pipeline.rs DEFAULT_CHAT_CAPTION
AUDIO_PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
SEED = 0


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"bench_peers: {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def timed(fn: Callable[[], object], warmup: int, repeat: int, what: str) -> tuple[float, object]:
    """Median wall time in seconds of `fn` over `repeat` runs after `warmup` untimed runs; also
    returns the last run's result."""
    samples = []
    result = None
    for i in range(warmup + repeat):
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            samples.append(elapsed)
    med = statistics.median(samples)
    log(f"{what}: {med:.3f} s (median of {repeat})")
    return med, result


def render_prompt(model_dir: Path, instruction: str) -> str:
    """The prompt text auris renders for one audio input (the checkpoint's chat template)."""
    import jinja2

    template = (model_dir / "chat_template.jinja").read_text()
    messages = [{"role": "user", "content": [
        {"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": instruction}]}]
    return jinja2.Environment().from_string(template).render(
        messages=messages, add_generation_prompt=True)


def random_ids(n: int, vocab: int, avoid: set[int]) -> list[int]:
    """`n` seeded random ordinary token ids (never a special id such as the audio token)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    ids = rng.integers(0, min(vocab, 100_000), size=n * 2)
    return [int(i) for i in ids if int(i) not in avoid][:n]


# --------------------------------------------------------------------------------------------
# PyTorch + transformers


def check_lm_head(model_dir: Path, loaded) -> str:
    """Whether transformers loaded the checkpoint's output layer.

    transformers 5.x does not tie Qwen2-Audio's lm_head to the embeddings even when the config
    says so: a checkpoint without its own lm_head weight would run with a random output layer
    (the timing is the same, but the tokens differ from the other engines').
    """
    import torch
    from safetensors import safe_open

    weight_map = json.loads((model_dir / "model.safetensors.index.json").read_text())["weight_map"]
    names = [n for n in weight_map if n.endswith("lm_head.weight")]
    if not names:
        return "warning: the checkpoint has no lm_head weight; transformers left it random"
    with safe_open(str(model_dir / weight_map[names[0]]), framework="pt") as f:
        saved = f.get_slice(names[0])[:4]
    if not torch.equal(saved.to(loaded.dtype), loaded[:4].detach()):
        return f"warning: lm_head differs from the checkpoint's {names[0]}"
    return f"lm_head loaded from the checkpoint's {names[0]}"


def bench_torch(args: argparse.Namespace) -> dict:
    """Time transformers' Qwen2-Audio (eager mode, f32) on the CPU."""
    import numpy as np
    import soundfile as sf
    import torch
    import transformers
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    notes = [
        f"torch {torch.__version__}, transformers {transformers.__version__}, f32, eager mode "
        f"(no torch.compile), attn_implementation={args.attn}, torch.set_num_threads({args.threads})",
        "no token pruning in transformers: ttft_30s_seg25_s and e2e_30s_seg25_s not measured",
        "the encoder always runs the full 3000-frame window with an attention mask, also for the "
        "10 s clip (that is what transformers does)",
    ]
    model = Qwen2AudioForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=args.attn).eval()
    notes.append(check_lm_head(args.model, model.lm_head.weight))
    processor = AutoProcessor.from_pretrained(args.model)
    fe = processor.feature_extractor
    lm = model.model.language_model
    lm_head = model.lm_head
    audio_token = model.config.audio_token_id
    vocab = model.config.text_config.vocab_size

    def load(path: Path) -> np.ndarray:
        samples, rate = sf.read(path, dtype="float32")
        if rate != fe.sampling_rate or samples.ndim != 1:
            sys.exit(f"{path}: expected mono {fe.sampling_rate} Hz, got {rate} Hz, shape {samples.shape}")
        return samples

    def features(samples: np.ndarray):
        return fe(samples, sampling_rate=fe.sampling_rate, return_attention_mask=True,
                  padding="max_length", return_tensors="pt")

    def encode(feats) -> torch.Tensor:
        # What Qwen2AudioModel.forward does before the projector: the mask from the valid frames,
        # then the encoder over the whole 3000-frame window.
        from transformers.masking_utils import create_bidirectional_mask

        tower = model.model.audio_tower
        x = feats["input_features"]
        lengths, _ = tower._get_feat_extract_output_lengths(feats["attention_mask"].sum(-1))
        max_len = (x.shape[-1] - 2) // 2 + 1
        mask_2d = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
        mask = create_bidirectional_mask(config=tower.config,
                                         inputs_embeds=torch.zeros(1, max_len, 1), attention_mask=mask_2d)
        return tower(x, attention_mask=mask).last_hidden_state

    def prefill(ids: list[int]):
        out = lm(input_ids=torch.tensor([ids]), use_cache=True)
        logits = lm_head(out.last_hidden_state[:, -1:, :])
        return out.cache, logits

    def decode(cache, logits, n: int) -> list[int]:
        tokens = []
        for _ in range(n):
            nxt = int(logits[0, -1].argmax())
            tokens.append(nxt)
            out = lm(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True)
            cache, logits = out.cache, lm_head(out.last_hidden_state)
        return tokens

    text = render_prompt(args.model, args.instruction)
    result: dict = {"engine": "torch"}
    detail: dict = {}
    with torch.inference_mode():
        samples30, samples10 = load(args.clip30), load(args.clip10)
        result["mel_30s_s"], feats30 = timed(lambda: features(samples30), args.warmup, args.repeat, "mel 30 s")
        feats10 = features(samples10)
        result["encoder_30s_s"], _ = timed(lambda: encode(feats30), args.warmup, args.repeat, "encoder 30 s")
        result["encoder_10s_s"], _ = timed(lambda: encode(feats10), args.warmup, args.repeat, "encoder 10 s")
        for n, key in zip(args.prefill_tokens, ["prefill_800_s", "prefill_238_s"]):
            ids = random_ids(n, vocab, {audio_token})
            result[key], _ = timed(lambda: prefill(ids), args.warmup, args.repeat, f"prefill {n}")
            detail[key[:-2] + "_tokens"] = n

        def request() -> dict:
            # The user's path: file -> processor (log-mel, prompt expansion) -> encoder ->
            # projector -> merge -> prefill (last position's logits) -> first token -> decode.
            t0 = time.perf_counter()
            samples, rate = sf.read(args.clip30, dtype="float32")
            inputs = processor(text=text, audio=samples, sampling_rate=rate, return_tensors="pt")
            out = model.model(**inputs, use_cache=True)
            logits = lm_head(out.last_hidden_state[:, -1:, :])
            int(logits[0, -1].argmax())
            t1 = time.perf_counter()
            tokens = decode(out.cache, logits, args.new_tokens)
            t2 = time.perf_counter()
            return {"ttft": t1 - t0, "e2e": t2 - t0, "decode": t2 - t1, "n": len(tokens),
                    "prompt_tokens": int(inputs["input_ids"].shape[1]),
                    "audio_tokens": int((inputs["input_ids"] == audio_token).sum())}

        runs = [request() for _ in range(args.warmup + args.repeat)][args.warmup:]
        result["ttft_30s_none_s"] = statistics.median(r["ttft"] for r in runs)
        result["e2e_30s_none_s"] = statistics.median(r["e2e"] for r in runs)
        result["decode_tok_s"] = statistics.median(r["n"] / r["decode"] for r in runs)
        detail["ttft_prompt_tokens"] = runs[-1]["prompt_tokens"]
        detail["ttft_audio_tokens"] = runs[-1]["audio_tokens"]
        detail["decode_after_tokens"] = runs[-1]["prompt_tokens"]
        log(f"ttft {result['ttft_30s_none_s']:.3f} s, e2e {result['e2e_30s_none_s']:.3f} s, "
            f"decode {result['decode_tok_s']:.2f} tok/s")

        # Extra stages, for the table's reader: the file decode and the projector.
        detail["decode_audio_s"], _ = timed(lambda: load(args.clip30), args.warmup, args.repeat, "decode audio")
        hidden = encode(feats30)
        detail["projector_30s_s"], _ = timed(lambda: model.model.multi_modal_projector(hidden),
                                             args.warmup, args.repeat, "projector")
    result["peak_rss_mb"] = peak_rss_mb()
    result["notes"] = notes
    result["detail"] = detail
    return result


# --------------------------------------------------------------------------------------------
# llama.cpp through llama-cpp-python's low-level bindings


def bench_llamacpp(args: argparse.Namespace) -> dict:
    """Time llama.cpp (text GGUF + mmproj GGUF, f32) through llama_cpp and llama_cpp.mtmd_cpp."""
    import ctypes
    import importlib.metadata

    import numpy as np
    import llama_cpp as ll

    flash = {"auto": ll.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": ll.LLAMA_FLASH_ATTN_TYPE_ENABLED,
             "off": ll.LLAMA_FLASH_ATTN_TYPE_DISABLED}[args.flash_attn]
    notes = [
        f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')} (llama.cpp built from the "
        f"sdist), {args.gguf.name} from the vendored convert_hf_to_gguf.py, n_threads=n_threads_batch="
        f"{args.threads}, flash_attn={args.flash_attn}, n_batch={args.n_batch}, n_ubatch={args.n_ubatch}",
        "no token pruning in llama.cpp: ttft_30s_seg25_s and e2e_30s_seg25_s not measured",
        "the converter stores the encoder's two conv weights as f16 (its rule for conv kernels)",
    ]

    # Keep llama.cpp's and mtmd's logs off stderr unless --verbose; errors still surface as
    # failed calls below. The callback object must outlive every call that may log.
    @ll.llama_log_callback
    def quiet(level, text, user_data):  # noqa: ARG001
        return None

    args._quiet = quiet
    if not args.verbose:
        ll.llama_log_set(quiet, ctypes.c_void_p())
    ll.llama_backend_init()
    mparams = ll.llama_model_default_params()
    model = ll.llama_model_load_from_file(str(args.gguf).encode(), mparams)
    if not model:
        sys.exit(f"llama.cpp could not load {args.gguf}")
    cparams = ll.llama_context_default_params()
    cparams.n_ctx = args.n_ctx
    cparams.n_batch = args.n_batch
    cparams.n_ubatch = args.n_ubatch
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    cparams.flash_attn_type = flash
    ctx = ll.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("llama.cpp could not create a context")
    vocab = ll.llama_model_get_vocab(model)
    n_vocab = ll.llama_vocab_n_tokens(vocab)
    mem = ll.llama_get_memory(ctx)
    batch = ll.llama_batch_init(max(args.n_batch, max(args.prefill_tokens)), 0, 1)

    def last_token() -> int:
        ptr = ll.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).argmax())

    def decode_tokens(ids: list[int], pos0: int) -> None:
        for start in range(0, len(ids), args.n_batch):
            chunk = ids[start:start + args.n_batch]
            batch.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos0 + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = start + i == len(ids) - 1
            if ll.llama_decode(ctx, batch) != 0:
                sys.exit("llama_decode failed")

    def prefill(ids: list[int]) -> int:
        ll.llama_memory_clear(mem, True)
        decode_tokens(ids, 0)
        return last_token()

    def generate(first: int, pos: int, n: int) -> list[int]:
        tokens, nxt = [], first
        for i in range(n):
            tokens.append(nxt)
            decode_tokens([nxt], pos + i)
            nxt = last_token()
        return tokens

    result: dict = {"engine": "llamacpp"}
    detail: dict = {}
    for n, key in zip(args.prefill_tokens, ["prefill_800_s", "prefill_238_s"]):
        ids = random_ids(n, n_vocab, set())
        result[key], _ = timed(lambda: prefill(ids), args.warmup, args.repeat, f"prefill {n}")
        detail[key[:-2] + "_tokens"] = n

    mtmd = None
    if args.mmproj is None:
        notes.append("text GGUF only (no --mmproj): prefill and decode measured")
    else:
        try:
            from llama_cpp import mtmd_cpp as mtmd
        except (ImportError, OSError) as err:
            notes.append(f"no mtmd bindings ({err}): mel, encoder, ttft and e2e not measured")
    if mtmd is not None:
        if not args.verbose:
            mtmd.mtmd_log_set(args._quiet, ctypes.c_void_p())
            mtmd.mtmd_helper_log_set(args._quiet, ctypes.c_void_p())
        mp = mtmd.mtmd_context_params_default()
        mp.use_gpu = False
        mp.n_threads = args.threads
        mp.flash_attn_type = flash
        mp.print_timings = False
        mctx = mtmd.mtmd_init_from_file(str(args.mmproj).encode(), model, mp)
        if not mctx or not mtmd.mtmd_support_audio(mctx):
            sys.exit(f"mtmd could not load {args.mmproj} as an audio projector")
        marker = mtmd.mtmd_default_marker()
        text = render_prompt(args.model, args.instruction).replace(AUDIO_PLACEHOLDER, marker.decode())
        notes.append("log-mel runs inside mtmd_tokenize with llama.cpp's fixed 4 threads "
                     "(mtmd-audio.cpp), whatever n_threads is")

        def bitmap(path: Path):
            bm = mtmd.mtmd_helper_bitmap_init_from_file(mctx, str(path).encode(), False)
            if not bm:
                sys.exit(f"mtmd could not read {path}")
            return bm

        def tokenize(bm):
            chunks = mtmd.mtmd_input_chunks_init()
            raw = text.encode()
            txt = mtmd.mtmd_input_text(text=raw, text_len=len(raw), add_special=True, parse_special=True)
            bms = (mtmd.mtmd_bitmap_p_ctypes * 1)(bm)
            if mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(txt), bms, 1) != 0:
                sys.exit("mtmd_tokenize failed")
            return chunks

        def audio_chunks(chunks) -> list:
            out = []
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                c = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(c) == mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO:
                    out.append(c)
            return out

        def encode(chunks) -> None:
            for c in audio_chunks(chunks):
                if mtmd.mtmd_encode_chunk(mctx, c) != 0:
                    sys.exit("mtmd_encode_chunk failed")

        bm30, bm10 = bitmap(args.clip30), bitmap(args.clip10)
        detail["decode_audio_s"], _ = timed(lambda: mtmd.mtmd_bitmap_free(bitmap(args.clip30)),
                                            args.warmup, args.repeat, "decode audio")
        result["mel_30s_s"], chunks30 = timed(lambda: tokenize(bm30), args.warmup, args.repeat, "mel 30 s")
        chunks10 = tokenize(bm10)
        n_win30, n_win10 = len(audio_chunks(chunks30)), len(audio_chunks(chunks10))
        detail["audio_windows_30s"] = n_win30
        detail["audio_windows_10s"] = n_win10
        detail["ttft_audio_tokens"] = sum(mtmd.mtmd_input_chunk_get_n_tokens(c) for c in audio_chunks(chunks30))
        detail["ttft_prompt_tokens"] = mtmd.mtmd_helper_get_n_tokens(chunks30)
        if n_win30 != 1:
            notes.append(f"the 29.9 s clip became {n_win30} encoder windows (expected 1)")
        result["encoder_30s_s"], _ = timed(lambda: encode(chunks30), args.warmup, args.repeat, "encoder 30 s")
        result["encoder_10s_s"], _ = timed(lambda: encode(chunks10), args.warmup, args.repeat, "encoder 10 s")
        notes.append("encoder times include the projector (mtmd_encode_chunk runs both); the 10 s "
                     "clip is padded to a full 3000-frame window")

        def request() -> dict:
            t0 = time.perf_counter()
            bm = bitmap(args.clip30)
            chunks = tokenize(bm)
            ll.llama_memory_clear(mem, True)
            new_past = ll.llama_pos(0)
            if mtmd.mtmd_helper_eval_chunks(mctx, ctx, chunks, 0, 0, args.n_batch, True,
                                            ctypes.byref(new_past)) != 0:
                sys.exit("mtmd_helper_eval_chunks failed")
            first = last_token()
            t1 = time.perf_counter()
            tokens = generate(first, new_past.value, args.new_tokens)
            t2 = time.perf_counter()
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bm)
            return {"ttft": t1 - t0, "e2e": t2 - t0, "decode": t2 - t1, "n": len(tokens)}

        runs = [request() for _ in range(args.warmup + args.repeat)][args.warmup:]
        result["ttft_30s_none_s"] = statistics.median(r["ttft"] for r in runs)
        result["e2e_30s_none_s"] = statistics.median(r["e2e"] for r in runs)
        result["decode_tok_s"] = statistics.median(r["n"] / r["decode"] for r in runs)
        detail["decode_after_tokens"] = detail["ttft_prompt_tokens"]
        log(f"ttft {result['ttft_30s_none_s']:.3f} s, e2e {result['e2e_30s_none_s']:.3f} s, "
            f"decode {result['decode_tok_s']:.2f} tok/s")
        for chunks in (chunks30, chunks10):
            mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bm30)
        mtmd.mtmd_bitmap_free(bm10)
        mtmd.mtmd_free(mctx)
    else:
        # Without mtmd, decode speed comes from the LLM alone after the first prefill (median
        # of --repeat runs after --warmup).
        prompt = random_ids(args.prefill_tokens[0], n_vocab, set())
        speeds = []
        for _ in range(args.warmup + args.repeat):
            first = prefill(prompt)
            start = time.perf_counter()
            n = len(generate(first, args.prefill_tokens[0], args.new_tokens))
            speeds.append(n / (time.perf_counter() - start))
        result["decode_tok_s"] = statistics.median(speeds[args.warmup:])
        detail["decode_after_tokens"] = args.prefill_tokens[0]
        log(f"decode {result['decode_tok_s']:.2f} tok/s")

    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    ll.llama_model_free(model)
    result["peak_rss_mb"] = peak_rss_mb()
    result["notes"] = notes
    result["detail"] = detail
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("engine", choices=["torch", "llamacpp"])
    parser.add_argument("--model", type=Path, required=True, help="the hub-format checkpoint")
    parser.add_argument("--gguf", type=Path, help="llamacpp: the text GGUF")
    parser.add_argument("--mmproj", type=Path,
                        help="llamacpp: the audio encoder + projector GGUF (without it: prefill and decode only)")
    parser.add_argument("--clip30", type=Path, required=True, help="the 29.9 s clip (16 kHz mono)")
    parser.add_argument("--clip10", type=Path, required=True, help="the 10 s clip (16 kHz mono)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", default="800,238",
                        help="token counts of the two LLM-only prefills (bench.sh passes auris's)")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                        help="torch: transformers' attention implementation")
    parser.add_argument("--flash-attn", default="auto", choices=["auto", "on", "off"],
                        help="llamacpp: flash attention (llama.cpp's default is auto)")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-batch", type=int, default=2048)
    parser.add_argument("--n-ubatch", type=int, default=512)
    parser.add_argument("--verbose", action="store_true", help="llamacpp: keep llama.cpp's logs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.prefill_tokens = [int(n) for n in args.prefill_tokens.split(",")]
    if len(args.prefill_tokens) != 2:
        parser.error("--prefill-tokens takes two counts, e.g. 800,238")
    if args.engine == "llamacpp" and args.gguf is None:
        parser.error("llamacpp needs --gguf (and --mmproj for the audio stages)")
    result = bench_torch(args) if args.engine == "torch" else bench_llamacpp(args)
    result["threads"] = args.threads
    result["warmup"], result["repeat"], result["new_tokens"] = args.warmup, args.repeat, args.new_tokens
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
