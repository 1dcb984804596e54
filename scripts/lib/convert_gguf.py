"""Run llama.cpp's convert_hf_to_gguf.py (the copy vendored in llama-cpp-python's sdist).

    $VENV/bin/python scripts/lib/convert_gguf.py LLAMA_CPP_DIR -- CONVERTER ARGS...

LLAMA_CPP_DIR is the sdist's vendor/llama.cpp (it holds convert_hf_to_gguf.py, conversion/ and
gguf-py/). Everything after `--` goes to the converter unchanged, e.g.
`MODEL_DIR --outtype f32 --outfile text.gguf` or `MODEL_DIR --mmproj --outtype f32 --outfile mm.gguf`.

One adaptation, and only one: the converter recognises a BPE pre-tokenizer by hashing the
tokenization of a test string with the hub tokenizer it knows. The benchmark checkpoint carries
the tiny test tokenizer (models/tiny-chat), whose pre-tokenizer regex is exactly Qwen2's but whose
vocabulary is not, so the hash is unknown. When the converter gives up on the hash and the
tokenizer.json pre-tokenizer regex is Qwen2's, this wrapper answers "qwen2"; anything else still
fails as the converter would. The tokenizer only matters for llama.cpp's text handling; the
benchmark feeds token ids and embeddings directly.
"""

import json
import runpy
import sys
from pathlib import Path

QWEN2_PRE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def pre_tokenizer_regexes(model_dir: Path) -> list[str]:
    """The Split regexes of tokenizer.json's pre-tokenizer (empty when there is none)."""
    path = model_dir / "tokenizer.json"
    if not path.exists():
        return []
    pre = json.loads(path.read_text()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    return [s["pattern"]["Regex"] for s in steps
            if s.get("type") == "Split" and "Regex" in s.get("pattern", {})]


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        sys.exit(__doc__)
    llama_dir = Path(sys.argv[1]).resolve()
    converter = llama_dir / "convert_hf_to_gguf.py"
    # The converter imports `conversion` from its own folder and gguf from gguf-py/.
    sys.path[:0] = [str(llama_dir), str(llama_dir / "gguf-py")]
    from conversion import base  # noqa: E402  (needs the path above)

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if QWEN2_PRE_REGEX in pre_tokenizer_regexes(Path(self.dir_model)):
                print("convert_gguf: unknown tokenizer hash, Qwen2 pre-tokenizer regex: using "
                      "'qwen2'", file=sys.stderr)
                return "qwen2"
            raise

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(converter)] + sys.argv[3:]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main()
