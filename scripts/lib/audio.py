"""Audio as the reference side reads it: one copy for every script in scripts/."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

SR = 16_000


def load_16k(path: Path) -> tuple[np.ndarray, dict]:
    """soundfile float32 (always_2d) -> channel mean -> resample_poly to 16 kHz when needed.

    Returns the mono float32 samples and what was done (sample rate, channels, resampling)."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    meta = dict(sample_rate=sr, channels=x.shape[1], n_samples=x.shape[0])
    mono = x.mean(axis=1, dtype=np.float32)
    if sr != SR:
        g = math.gcd(SR, sr)
        up, down = SR // g, sr // g
        mono = scipy.signal.resample_poly(mono.astype(np.float64), up, down).astype(np.float32)
        meta.update(resampled=True, resample={"method": "scipy.signal.resample_poly", "up": up, "down": down,
                                              "window": ["kaiser", 5.0], "computed_in": "float64"})
    else:
        meta.update(resampled=False)
    meta["n_samples_16k"] = int(len(mono))
    return mono, meta
