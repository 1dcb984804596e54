"""Quantise a GGUF with llama.cpp's own quantiser (llama_model_quantize, through llama-cpp-python).

    $VENV/bin/python scripts/lib/quantize_gguf.py IN.gguf OUT.gguf TYPE

TYPE is q4_0, q4_k_m or q8_0, llama.cpp's `llama-quantize` types of the same names (the
converter writes q8_0 itself, but not the 4-bit types). Used by scripts/bench.sh to give
llama.cpp the weight type auris runs with --quant.
"""

import sys

FTYPES = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
          "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[3] not in FTYPES:
        sys.exit(__doc__)
    import llama_cpp as ll

    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, FTYPES[sys.argv[3]])
    status = ll.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
    if status != 0:
        sys.exit(f"llama_model_quantize failed ({status})")


if __name__ == "__main__":
    main()
