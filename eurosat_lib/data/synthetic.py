"""Synthetic EuroSAT-shaped data for tests and examples."""

from __future__ import annotations

import numpy as np

from .core import CLASS_NAMES, IMAGE_SHAPE, IMAGE_SIZE, EuroSAT
from .splits import stratified_split


def make_synthetic(n_per_class: int = 30, seed: int = 0, noise: float = 18.0) -> EuroSAT:
    """A learnable EuroSAT-shaped dataset: class-dependent colour and stripe texture + noise.

    Same container, class names, id format and (freshly computed, stratified 60/20/20) split as
    the real data, so code and notebooks run where the real archive is absent. Not a stand-in
    for real results.

    Args:
        n_per_class: images per class.
        seed: draws the noise and stripe phases (the class palette is fixed).
        noise: standard deviation of the Gaussian pixel noise.

    Returns:
        An :class:`EuroSAT` with a stratified 60/20/20 split.
    """
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    # Fixed per-class palette/texture (independent of `seed`, so classes mean the same thing
    # across seeds): base colour, stripe angle and spatial frequency.
    palette = np.random.default_rng(12345).uniform(40, 215, size=(k, 3)).astype(np.float32)
    angles = np.linspace(0, np.pi, k, endpoint=False)
    freqs = np.linspace(0.08, 0.45, k)
    images = np.empty((k * n_per_class, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.repeat(np.arange(k), n_per_class)
    for i, c in enumerate(labels):
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(freqs[c] * (np.cos(angles[c]) * xx + np.sin(angles[c]) * yy) + phase)
        img = palette[c] + 45.0 * stripes[..., None] + rng.normal(0, noise, size=IMAGE_SHAPE)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    counters = np.zeros(k, dtype=int)
    ids = []
    for c in labels:
        counters[c] += 1
        ids.append(f"{CLASS_NAMES[c]}/{CLASS_NAMES[c]}_{counters[c]}")
    ids_arr = np.array(ids)
    return EuroSAT(
        images=images,
        labels=labels.astype(np.int64),
        file_ids=ids_arr,
        split=stratified_split(ids_arr, labels),
        source=f"synthetic(n_per_class={n_per_class}, seed={seed})",
    )
