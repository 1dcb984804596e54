"""CIDEr-D, BLEU-4 and ROUGE-L from aac-metrics on fixed strings (run by
make_caption_metric_fixtures.sh, which pins the versions).

The three metric files are imported from the installed package without running
aac_metrics/__init__.py, which imports every metric (and their heavy dependencies). The functions
are called directly, so sentences are split on white space (str.split), as the Rust side's parity
test does.
"""

import importlib
import importlib.util
import json
import sys
import types
from importlib.metadata import version
from pathlib import Path


def load_metrics():
    spec = importlib.util.find_spec("aac_metrics")
    root = Path(spec.submodule_search_locations[0])
    for name, sub in [("aac_metrics", ""), ("aac_metrics.utils", "utils"), ("aac_metrics.functional", "functional")]:
        module = types.ModuleType(name)
        module.__path__ = [str(root / sub)]
        sys.modules[name] = module
    cider = importlib.import_module("aac_metrics.functional.cider_d").cider_d
    bleu = importlib.import_module("aac_metrics.functional.bleu").bleu_4
    rouge = importlib.import_module("aac_metrics.functional.rouge_l").rouge_l
    return cider, bleu, rouge


# Lower-case, punctuation already removed (as auris' tokenisation leaves them).
CORPORA = {
    "clotho_like": {
        "candidates": [
            "a dog barks several times in the distance",
            "rain falls steadily on a metal roof",
            "a man speaks while cars pass by",
            "birds chirp and sing in a forest",
        ],
        "references": [
            ["two dogs bark loudly one after another", "a dog barks several times outside",
             "dogs are barking in the distance", "a dog is barking while people talk",
             "a dog barks repeatedly"],
            ["rain is falling on a roof", "heavy rain falls on a metal roof",
             "water drips steadily onto a tin roof", "rain pours down on a roof",
             "steady rain hits a metal surface"],
            ["a man is talking as traffic passes", "cars drive by while a man speaks",
             "a person speaks near a busy road", "traffic noise and a man talking",
             "a man talks while vehicles pass"],
            ["birds are chirping in the woods", "many birds sing in a forest",
             "birds chirp while wind blows", "a bird sings and others chirp",
             "birds call out in the trees"],
        ],
    },
    "repeats_and_lengths": {
        "candidates": [
            "dog dog dog dog dog dog",
            "a",
            "the engine of a large truck idles and then the truck drives away slowly down the road",
        ],
        "references": [
            ["a dog barks", "a dog is barking loudly"],
            ["a bell rings twice", "a bell is ringing"],
            ["a truck engine idles", "a large truck starts and drives away", "an engine runs"],
        ],
    },
    "no_overlap": {
        "candidates": ["music plays softly", "a crowd cheers"],
        "references": [["a door slams shut"], ["water runs from a tap", "a faucet runs"]],
    },
    "exact_copies": {
        "candidates": ["a crow caws once", "a steady high pitched tone"],
        "references": [["a crow caws once", "a single bird calls out loudly"],
                       ["a steady high pitched tone", "a pure beep sounds continuously"]],
    },
}


def main():
    cider_d, bleu_4, rouge_l = load_metrics()
    cases = []
    for name, c in CORPORA.items():
        cands, refs = c["candidates"], c["references"]
        cider = cider_d(cands, refs, return_all_scores=False)
        bleu = bleu_4(cands, refs, return_all_scores=False)
        rouge = rouge_l(cands, refs, return_all_scores=False)
        cases.append({
            "name": name,
            "candidates": cands,
            "references": refs,
            "cider_d": float(cider),
            "bleu_4": float(bleu),
            "rouge_l": float(rouge),
        })
    out = {
        "generator": "scripts/make_caption_metric_fixtures.sh",
        "package": f"aac-metrics=={version('aac-metrics')}",
        "tokenizer": "str.split",
        "cases": cases,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
