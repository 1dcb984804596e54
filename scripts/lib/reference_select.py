"""Reference token selections: the plain definitions that crates/prune mirrors.

One copy, used by make_fixtures.py (fixtures), check_real_parity.py and asr_pruning.py.
Ties go to the lower index everywhere, as in crates/prune.
"""

from __future__ import annotations

import math

import numpy as np


def budget(r: float, n: int) -> int:
    return max(1, min(n, math.floor(r * n + 0.5)))


def rank_desc(scores: np.ndarray, idx) -> list[int]:
    return sorted(idx, key=lambda i: (-float(scores[i]), i))


def sel_topk(s, K):
    return sorted(rank_desc(s, range(len(s)))[:K])


def sel_bottomk(s, K):
    return sorted(sorted(range(len(s)), key=lambda i: (float(s[i]), i))[:K])


def sel_uniform(N, K):
    return [math.floor((i + 0.5) * N / K) for i in range(K)]


def sel_segmentwise(s, K, S, remainder=True):
    N = len(s)
    per = K // S
    kept = []
    for seg in range(S):
        lo, hi = math.floor(seg * N / S), math.floor((seg + 1) * N / S)
        kept += rank_desc(s, range(lo, hi))[:per]
    if remainder:
        taken = set(kept)
        rest = rank_desc(s, [i for i in range(N) if i not in taken])
        kept += rest[: K - len(kept)]
    return sorted(kept)


def sel_visionzip(s, K, embeds):
    N = len(s)
    C = round(0.18 * K)
    dominant = rank_desc(s, range(N))[: K - C]
    dom = set(dominant)
    non_dom = [i for i in range(N) if i not in dom]
    M = len(non_dom)
    targets = [non_dom[math.floor((j + 0.5) * M / C)] for j in range(C)] if C > 0 else []
    tset = set(targets)
    e = embeds.astype(np.float64)
    norm = e / np.linalg.norm(e, axis=1, keepdims=True)
    groups = {t: [t] for t in targets}
    assign = {}
    for i in non_dom:
        if i in tset:
            continue
        sims = [float(norm[i] @ norm[t]) for t in targets]
        best = max(range(C), key=lambda j: (sims[j], -targets[j]))  # ties -> lower target index
        groups[targets[best]].append(i)
        assign[i] = targets[best]
    kept = sorted(dom | tset)
    rows = []
    for i in kept:
        if i in tset:
            rows.append(embeds[groups[i]].astype(np.float64).mean(axis=0))
        else:
            rows.append(embeds[i].astype(np.float64))
    return kept, np.array(rows, dtype=np.float32), {"contextual": C, "dominant": sorted(dominant), "targets": targets,
                                                    "assign": {str(k): v for k, v in sorted(assign.items())}}
