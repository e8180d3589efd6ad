"""Chapter 00 — the EuroSAT data: class balance, the committed split, channel statistics, leakage.

Pure NumPy/pandas on the loaded :class:`~eurosat_lib.data.EuroSAT` and the committed split
manifest; no model is trained. :func:`write_summary` leaves ``data_summary.json`` in the
chapter's output folder for the book's results chapter to quote.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from .. import data as D
from .. import models as M
from .._io import write_json_atomic
from ..summaries.data import DataSummary
from .core import data_identity
from .params import ChapterParams, nonneg_int, param, pos_int

NOTEBOOK = "00_data"
SUMMARY_FILE = "data_summary.json"
CHANNELS = ("red", "green", "blue")

#: The ImageNet statistics behind Keras' "torch" preprocessing (RGB, 0-1 scale) and the mean
#: "caffe" preprocessing subtracts (stored BGR in Keras, given here in RGB order, 0-255 scale).
IMAGENET_MEAN = tuple(float(m) for m in M.IMAGENET_MEAN)
IMAGENET_STD = tuple(float(s) for s in M.IMAGENET_STD)
CAFFE_MEAN_RGB = tuple(float(m) for m in reversed(M.CAFFE_MEAN_BGR))

@dataclass(frozen=True)
class DataParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 00's parameters (validators and per-profile defaults: :mod:`.params`)."""

    seed: int = param(nonneg_int, "seed of the random image samples shown", default=0)
    grid_per_class: int = param(pos_int, "images per class in the sample grid", smoke=3, cpu=8, gpu=8)


# --------------------------------------------------------------------------------------------
# The committed split manifest
# --------------------------------------------------------------------------------------------


def read_manifest_table(path: str | os.PathLike = D.MANIFEST_PATH) -> pd.DataFrame:
    """The manifest as written, one row per line: ``file_id, label, split`` (repeats kept).

    :func:`eurosat_lib.data.read_manifest` returns a dict, which would hide a file id listed
    twice; this table keeps every line so :func:`leakage_checks` can look for exactly that.

    Args:
        path: The manifest CSV.

    Returns:
        The table, every line of the file.

    Raises:
        SplitManifestError: The manifest is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise D.SplitManifestError(f"split manifest {path} is missing; regenerate it with scripts/make_split.py")
    return pd.read_csv(path, comment="#", dtype=str)


def split_sizes(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, canonical order) and split (columns), with totals and shares.

    Args:
        manifest: :func:`read_manifest_table`'s table.

    Returns:
        The counts, an ``all classes`` row, and each split's share.
    """
    table = pd.crosstab(
        pd.Categorical(manifest["label"], categories=list(D.CLASS_NAMES)),
        pd.Categorical(manifest["split"], categories=list(D.SPLIT_NAMES)),
        dropna=False,
    )
    table.index.name, table.columns.name = "class", None
    table.columns = [str(c) for c in table.columns]
    table["total"] = table.sum(axis=1)
    table.loc["all classes"] = table.sum(axis=0)
    for s in D.SPLIT_NAMES:
        table[f"{s} share"] = table[s] / table["total"]
    return table


def _image_hashes(images: np.ndarray, chunk: int = 2048) -> np.ndarray:
    out = []
    for start in range(0, len(images), chunk):
        block = np.ascontiguousarray(images[start : start + chunk])
        out += [hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest() for img in block]
    return np.array(out)


def leakage_checks(manifest: pd.DataFrame, data: D.EuroSAT | None = None) -> dict[str, Any]:
    """Can an image be in two splits? Checked on the manifest and, if given, on the loaded data.

    Keys: ``manifest_rows``, ``manifest_duplicate_ids`` (ids listed more than once),
    ``manifest_ids_in_two_splits``, ``manifest_label_mismatch`` (label column disagrees with the
    class folder in the id); with ``data``: ``data_ids_in_two_splits`` (ids found in more than one
    split of the loaded data), ``identical_images_across_splits`` (groups of byte-identical
    images that span splits: a file-id check cannot see a copied image) and
    ``identical_images_within_splits``. Each value is a count; ``examples`` holds a few ids.

    Args:
        manifest: :func:`read_manifest_table`'s table.
        data: The loaded dataset (None: the manifest checks only).

    Returns:
        The counts above, and ``examples``.
    """
    ids = manifest["file_id"]
    splits_per_id = manifest.groupby("file_id")["split"].nunique()
    folder = ids.str.split("/", n=1).str[0]
    out: dict[str, Any] = {
        "manifest_rows": int(len(manifest)),
        "manifest_duplicate_ids": int(ids.duplicated().sum()),
        "manifest_ids_in_two_splits": int((splits_per_id > 1).sum()),
        "manifest_label_mismatch": int((folder != manifest["label"]).sum()),
        "examples": sorted(splits_per_id.index[splits_per_id > 1])[:5],
    }
    if data is not None and data.split is not None:
        frame = pd.DataFrame({"file_id": data.file_ids.astype(str), "split": data.split.astype(str)})
        per_id = frame.groupby("file_id")["split"].nunique()
        out["data_ids_in_two_splits"] = int((per_id > 1).sum())
        frame["hash"] = _image_hashes(data.images)
        groups = frame.groupby("hash")["split"].agg(["nunique", "size"])
        dup = groups[groups["size"] > 1]
        out["identical_images_across_splits"] = int((dup["nunique"] > 1).sum())
        out["identical_images_within_splits"] = int((dup["nunique"] == 1).sum())
        cross = dup.index[dup["nunique"] > 1][:3]
        out["examples"] += [sorted(frame.loc[frame.hash == h, "file_id"]) for h in cross]
    return out


# --------------------------------------------------------------------------------------------
# Channel statistics
# --------------------------------------------------------------------------------------------


def _hist_stats(counts: np.ndarray) -> tuple[float, float]:
    """Exact mean and standard deviation of uint8 values from their 256-bin histogram."""
    v = np.arange(256, dtype=np.float64)
    n = counts.sum()
    mean = float((counts * v).sum() / n)
    return mean, float(np.sqrt(max((counts * (v - mean) ** 2).sum() / n, 0.0)))


def channel_stats(data: D.EuroSAT, split: str | None = "train") -> pd.DataFrame:
    """Per-channel pixel mean and standard deviation (0-255), per class and over all classes.

    Computed exactly from 256-bin histograms of every pixel of ``split`` (the training split by
    default: normalisation statistics must not be learned from the test images), ``None`` for
    all images. Rows: the classes in canonical order, then ``"all"``; columns
    ``(stat, channel)`` with ``stat`` in ``mean``/``std``, plus ``images``.

    Args:
        data: The dataset (uint8 RGB).
        split: Whose pixels (``"train"``, ``"val"``, ``"test"``), or None for all images.

    Returns:
        The table described above.

    Raises:
        ValueError: The images are not uint8 RGB.
    """
    part = data.get_split(split) if split else data
    images = np.asarray(part.images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}")
    hist = np.zeros((part.num_classes, 3, 256), dtype=np.int64)
    for c in range(part.num_classes):
        sel = images[part.labels == c]
        for ch in range(3):
            hist[c, ch] = np.bincount(sel[..., ch].ravel(), minlength=256)
    rows, index = [], []
    counts = np.bincount(part.labels, minlength=part.num_classes)
    for name, h, n in [*zip(part.class_names, hist, counts), ("all", hist.sum(axis=0), counts.sum())]:
        if n == 0:
            continue
        stats = [_hist_stats(h[ch]) for ch in range(3)]
        rows.append([s[0] for s in stats] + [s[1] for s in stats] + [int(n)])
        index.append(name)
    cols = pd.MultiIndex.from_tuples([("mean", c) for c in CHANNELS] + [("std", c) for c in CHANNELS] + [("images", "")])
    return pd.DataFrame(rows, index=pd.Index(index, name="class"), columns=cols)


def normalization_table(stats: pd.DataFrame) -> pd.DataFrame:
    """EuroSAT's channel mean/std next to the ImageNet values the pretrained weights expect.

    All on the 0-1 scale (pixel / 255). Rows: ``EuroSAT train`` and ``ImageNet`` (what "torch"
    preprocessing subtracts and divides by; "caffe" subtracts the same mean ×255 and does not
    divide), then the difference.

    Args:
        stats: :func:`channel_stats`'s table.

    Returns:
        The comparison, one column per channel statistic.
    """
    mean = stats.loc["all", "mean"].to_numpy() / 255.0
    std = stats.loc["all", "std"].to_numpy() / 255.0
    table = pd.DataFrame(
        [list(mean) + list(std), list(IMAGENET_MEAN) + list(IMAGENET_STD)],
        index=["EuroSAT train", "ImageNet"],
        columns=pd.MultiIndex.from_tuples([("mean", c) for c in CHANNELS] + [("std", c) for c in CHANNELS]),
    )
    table.loc["EuroSAT − ImageNet"] = table.loc["EuroSAT train"] - table.loc["ImageNet"]
    return table


def preprocessed_stats(stats: pd.DataFrame) -> pd.DataFrame:
    """What EuroSAT pixels look like after each ImageNet preprocessing mode (mean and std).

    Every mode is affine per channel, so the result follows from the raw mean/std exactly:
    ``tf`` maps to [-1, 1]; ``caffe`` subtracts the ImageNet mean (0-255 scale); ``torch``
    standardises with the ImageNet mean/std, which gives mean 0 and std 1 only for images with
    ImageNet's statistics. Rows: modes; columns ``(mean|std, channel)``.

    Args:
        stats: :func:`channel_stats`'s table.

    Returns:
        The table described above.
    """
    m = stats.loc["all", "mean"].to_numpy(dtype=float)
    s = stats.loc["all", "std"].to_numpy(dtype=float)
    im_m, im_s = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    modes = {
        "tf: x/127.5 − 1": (m / 127.5 - 1.0, s / 127.5),
        "caffe: x − ImageNet mean": (m - np.array(CAFFE_MEAN_RGB), s),
        "torch: (x/255 − mean)/std": ((m / 255.0 - im_m) / im_s, s / 255.0 / im_s),
    }
    rows = {k: list(a) + list(b) for k, (a, b) in modes.items()}
    cols = pd.MultiIndex.from_tuples([("mean", c) for c in CHANNELS] + [("std", c) for c in CHANNELS])
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


# --------------------------------------------------------------------------------------------
# The summary the book quotes
# --------------------------------------------------------------------------------------------


def summary(data: D.EuroSAT, sizes: pd.DataFrame, stats: pd.DataFrame, checks: dict[str, Any]) -> dict[str, Any]:
    """A JSON-serialisable summary: class counts, split sizes, channel mean/std, leakage checks.

    Args:
        data: The dataset.
        sizes: :func:`split_sizes`'s table.
        stats: :func:`channel_stats`'s table.
        checks: :func:`leakage_checks`'s result.

    Returns:
        What ``data_summary.json`` holds (:class:`~eurosat_lib.summaries.data.DataSummary` reads it).
    """
    classes = [c for c in sizes.index if c != "all classes"]
    return {
        "data": data_identity(data),
        "class_names": list(data.class_names),
        "class_counts": data.class_counts(),
        "split_sizes": {s: int(sizes.loc["all classes", s]) for s in D.SPLIT_NAMES},
        "split_class_counts": {s: {c: int(sizes.loc[c, s]) for c in classes} for s in D.SPLIT_NAMES},
        "split_manifest": D.MANIFEST_PATH.name,
        "channel_stats_split": "train",
        "channel_mean_255": dict(zip(CHANNELS, map(float, stats.loc["all", "mean"]))),
        "channel_std_255": dict(zip(CHANNELS, map(float, stats.loc["all", "std"]))),
        "channel_mean_01": dict(zip(CHANNELS, (float(v) / 255 for v in stats.loc["all", "mean"]))),
        "channel_std_01": dict(zip(CHANNELS, (float(v) / 255 for v in stats.loc["all", "std"]))),
        "imagenet_mean_01": dict(zip(CHANNELS, IMAGENET_MEAN)),
        "imagenet_std_01": dict(zip(CHANNELS, IMAGENET_STD)),
        "leakage": {k: v for k, v in checks.items() if k != "examples"},
    }


def write_summary(P: SimpleNamespace, info: "dict[str, Any] | DataSummary") -> Path:
    """Write the chapter's summary to ``P.out_dir/data_summary.json`` atomically.

    Args:
        P: The chapter's parameters (``out_dir``).
        info: :func:`summary`'s mapping, or the typed :class:`~eurosat_lib.summaries.data.DataSummary`.

    Returns:
        The path written.
    """
    path = Path(P.out_dir) / SUMMARY_FILE
    write_json_atomic(path, info.to_json() if isinstance(info, DataSummary) else info)
    return path
