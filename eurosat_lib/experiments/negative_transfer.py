"""Chapter 02 — negative transfer: when a pretrained start is worse than training from scratch.

Definition (Wang et al., 2019, *Characterizing and avoiding negative transfer*)::

    gap = test error with transfer - test error from scratch      (same architecture, same budget)
    negative transfer  <=>  gap > 0

Section 1 (the gap against data size) reads chapter 3's crossover study, whose frozen and scratch
arms each have their own recipe and budget (:func:`gap_vs_n_crossover`). The cases of section 2
use the same network (MobileNetV2, same width and input size), the same labelled target subset
(per seed), the same optimiser, batch size and number of epochs as their scratch arm. Gaps are
paired by seed (the same training images for both arms), with a 95 % interval (:func:`summarise_gaps`).

Every study returns a tidy :class:`pandas.DataFrame` (one row per run and seed, with the run
folder); runs are ordinary run folders under ``P.out_dir`` named by their configuration, so
the sections share runs they have in common and reruns reuse them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import models as M
from .. import runs as R
from .. import sanity
from .. import training as T
from ..summaries.negative_transfer import WHY, why  # noqa: F401  (re-exported: chapter text the summary needs too)
from ..summaries.negative_transfer import (  # noqa: F401  (re-exported: section 1's words, shared with the Summary)
    arm_flags, budget_paragraph, reference_scratch, size_text, still_improving_note, whole_split_images,
)
from ..summaries.render import flag_note
from . import crossover as CX
from .core import ExperimentSpec, RunResult, run
from .params import (
    ChapterParams, all_of, at_least, backbone_kwargs, backbone_name, choice, list_of, nonneg_int, optional, param,
    pos_int, pos_num, resolve_params, satisfies, seeds_param, weights_param,
)  # fmt: skip
from .recipes import scratch_model_fn

NOTEBOOK = "02_negative_transfer"

#: How the cases of section 2 are labelled in tables and figures (name -> one-line description).
CASES: dict[str, str] = {
    "imagenet_frozen": "ImageNet base, frozen + new head (the usual recipe)",
    "imagenet_gentle": "ImageNet base: head first, then all layers at a low learning rate",
    "raw_pixels": "ImageNet base, frozen, fed raw 0-255 pixels instead of [-1, 1]",
    "tiny_input": "ImageNet base, frozen, images shrunk to a tiny input size",
    "tiny_raw_pixels": "ImageNet base, frozen, tiny input AND raw 0-255 pixels",
    "shuffled_source_frozen": "base pretrained on EuroSAT with SHUFFLED labels, frozen + new head",
    "shuffled_source_finetuned": "base pretrained on EuroSAT with SHUFFLED labels, all layers retrained",
    "imagenet_aggressive": "ImageNet base, all layers (BatchNorm too) at a high learning rate from step 1",
}


@dataclass(frozen=True)
class NegativeTransferParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 02's parameters (validators and per-profile defaults: :mod:`.params`)."""

    backbone: str = param(backbone_name, "the network of every arm", default="MobileNetV2")
    alpha: float | None = param(optional(pos_num), "MobileNet width multiplier", smoke=0.35, cpu=0.35, gpu=None)
    weights: str | None = weights_param("the pretrained start of the transfer arms")
    image_size: int = param(pos_int, "input size of every arm", default=64)
    case_n: int = param(pos_int, "labelled training images per class in section 2", smoke=4, cpu=100, gpu=100)
    cases: list[str] = param(
        list_of(choice(*CASES), f"case names from {list(CASES)}"), "which transfer cases section 2 runs",
        smoke=["imagenet_frozen", "tiny_raw_pixels", "shuffled_source_frozen", "imagenet_aggressive"],
        cpu=["imagenet_frozen", "imagenet_gentle", "raw_pixels", "tiny_input", "tiny_raw_pixels",
             "shuffled_source_frozen", "imagenet_aggressive"],
        gpu=list(CASES),
    )  # fmt: skip
    epochs: int = param(nonneg_int, "training budget in epochs, the same for every arm", smoke=1, cpu=10, gpu=30)
    min_steps: int = param(pos_int, "minimum optimiser steps per run: tiny subsets get more epochs", smoke=1, cpu=60, gpu=200)
    batch_size: int = param(pos_int, "images per step", smoke=64, cpu=32, gpu=32)
    lr: float = param(pos_num, "Adam learning rate of the scratch arm and of every head", default=1e-3)
    lr_gentle: float = param(pos_num, "learning rate of the gentle fine-tuning phase", default=1e-4)
    lr_aggressive: float = param(pos_num, "learning rate of the aggressive full unfreezing", default=1e-2)
    small_size: int = param(at_least(32), "tiny input size of the resolution-mismatch cases (MobileNetV2: at least 32)", default=32)
    source_n_per_class: int = param(pos_int, "images per class of the shuffled-label source task", smoke=3, cpu=100, gpu=1000)
    source_epochs: int = param(pos_int, "pretraining epochs on the shuffled-label source", smoke=1, cpu=10, gpu=30)
    source_init: str = param(choice("scratch", "imagenet"), "scratch or imagenet: start of the shuffled-label pretraining",
                             default="scratch")
    seeds: list[int] = seeds_param(smoke=1, cpu=3, gpu=5)
    val_n_per_class: int | None = param(pos_int, "validation images per class, monitoring only",
                                        smoke=2, cpu=20, gpu=None)
    test_n_per_class: int | None = param(optional(pos_int), "test images per class scored",
                                         smoke=4, cpu=100, gpu=None)
    # The similarity study (experiments/similarity.py): sources pretrained on half of the classes (A),
    # transferred to the other half (B). Its runs live in <out_dir>/similarity.
    sim_source_classes: list[str] = param(
        all_of(list_of(choice(*D.CLASS_NAMES), f"class names from {list(D.CLASS_NAMES)}", distinct=True),
               satisfies(lambda v: len(v) < len(D.CLASS_NAMES), "must leave at least one class for the target task")),
        "similarity: the source task's classes (A); the target task is the other classes (B)",
        default=["AnnualCrop", "Forest", "Pasture", "Residential", "River"],
    )  # fmt: skip
    sim_sizes: list[int] = param(list_of(pos_int, "positive ints", distinct=True),
                                 "similarity: target images per class of the frozen and scratch arms",
                                 smoke=[2], cpu=[5, 20, 100, 1500], gpu=[5, 20, 100, 500, 1500])  # fmt: skip
    sim_finetune_sizes: list[int] = param(list_of(pos_int, "positive ints", distinct=True),
                                          "similarity: target images per class of the fine-tuned arm",
                                          smoke=[2], cpu=[5, 100], gpu=[5, 20, 100, 500, 1500])  # fmt: skip
    sim_seeds: list[int] = seeds_param("similarity: seeds of the fine-tuned and scratch arms", smoke=1, cpu=3, gpu=5)
    sim_cheap_seeds: list[int] = seeds_param("similarity: seeds of the frozen arm (under a minute per run)",
                                             smoke=1, cpu=5, gpu=5)  # fmt: skip
    sim_image_size: int = param(at_least(32), "similarity: input size of every run (64: EuroSAT's native size)",
                                smoke=32, cpu=64, gpu=64)  # fmt: skip
    sim_source_n_per_class: int | None = param(optional(pos_int), "similarity: source training images per class; "
                                               "None: A's whole training split", smoke=3, cpu=1000, gpu=None)  # fmt: skip
    sim_source_epochs: int = param(pos_int, "similarity: pretraining epochs on the source task", smoke=1, cpu=6, gpu=30)
    sim_head_epochs: int = param(pos_int, "similarity: epochs of the head phase (early stopping after 5)",
                                 smoke=1, cpu=30, gpu=50)  # fmt: skip
    sim_lr: float = param(pos_num, "similarity: peak fine-tuning learning rate (cosine decay to 0)", default=3e-4)
    sim_epochs: int = param(pos_int, "similarity: fine-tuning epoch cap at large sizes (early stopping ends sooner)",
                            smoke=1, cpu=8, gpu=15)  # fmt: skip
    sim_min_steps: int = param(pos_int, "similarity: fine-tuning step cap at least (small sizes)",
                               smoke=1, cpu=400, gpu=800)  # fmt: skip
    sim_scratch_epochs: int = param(pos_int, "similarity: epoch cap of the scratch arm at large sizes",
                                    smoke=1, cpu=6, gpu=60)  # fmt: skip
    sim_scratch_min_steps: int = param(pos_int, "similarity: scratch steps at least (its cap at small sizes)",
                                       smoke=1, cpu=600, gpu=4000)  # fmt: skip
    sim_patience: int = param(pos_int, "similarity: early-stopping patience (epochs) of the fine-tuned arms (scratch runs its whole budget)",
                              smoke=1, cpu=3, gpu=8)  # fmt: skip
    sim_epoch_steps: int = param(pos_int, "similarity: steps per epoch at least (small sets repeat within an epoch)",
                                 smoke=1, cpu=25, gpu=50)  # fmt: skip
    sim_val_n_per_class: int | None = param(optional(pos_int), "similarity: validation images per class watched by "
                                            "early stopping (the frozen arm uses them all)", smoke=2, cpu=50, gpu=None)
    sim_test_n_per_class: int | None = param(optional(pos_int), "similarity: test images per class scored; None: all",
                                             smoke=4, cpu=None, gpu=None)  # fmt: skip


#: The ``model_fn`` of every run of this chapter: arms whose BatchNorm layers train get the
#: momentum recorded in their tags (models.SCRATCH_BN_MOMENTUM, see there for why).
build_model_fn = scratch_model_fn()


def _run(P: SimpleNamespace, spec: ExperimentSpec, data: D.EuroSAT, **kwargs: Any) -> RunResult:
    return run(P, spec, data, model_fn=build_model_fn, **kwargs)


# --------------------------------------------------------------------------------------------
# Budget and gap arithmetic (pure functions)
# --------------------------------------------------------------------------------------------


def budget_epochs(n_images: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Epochs every arm trains for on ``n_images``: ``epochs``, or more if that is < ``min_steps`` steps.

    Tiny subsets give one or two steps per epoch; the floor on optimiser steps keeps the
    scratch arm from being judged after a handful of updates. All arms get the same number.

    Args:
        n_images: Training images.
        batch_size: Images per step.
        epochs: The chapter's budget in epochs.
        min_steps: The fewest optimiser steps a run may take.

    Returns:
        The epochs.

    Raises:
        ValueError: A count below its minimum.
    """
    if n_images < 1 or batch_size < 1 or epochs < 1 or min_steps < 0:
        raise ValueError(f"need n_images, batch_size, epochs >= 1 and min_steps >= 0; got {n_images}, {batch_size}, {epochs}, {min_steps}")
    steps_per_epoch = math.ceil(n_images / batch_size)
    return max(int(epochs), math.ceil(min_steps / steps_per_epoch))


def verdict(mean: float, sd: float, n: int, eval_var: float = 0.0) -> str:
    """``"negative"`` / ``"positive"`` only when the 95 % interval of the mean gap excludes zero.

    The interval is :func:`eurosat_lib.stats.diff_from_moments` over ``n`` seeds (Student t on the
    seed spread, plus ``eval_var``, the test images' binomial noise). Otherwise ``"inconclusive"``;
    a single seed has no interval and gets ``"inconclusive (1 seed)"``.

    Args:
        mean: mean gap (transfer error - scratch error) over seeds.
        sd: standard deviation (ddof=1) of the per-seed gaps.
        n: number of seeds.
        eval_var: added variance of the mean gap from the evaluation set.

    Returns:
        ``"negative"``, ``"positive"``, ``"inconclusive"`` or ``"inconclusive (1 seed)"``.
    """
    from ..stats import diff_from_moments

    if not np.isfinite(mean) or n < 1:
        return "inconclusive"
    if n == 1 or not np.isfinite(sd):
        return "inconclusive (1 seed)"
    # accuracy difference (transfer - scratch) = -gap: "better" means positive transfer
    d = diff_from_moments(-float(mean), float(sd), int(n), eval_var=eval_var)
    return {"better": "positive", "worse": "negative"}.get(d.verdict, "inconclusive")


def gap_interval(mean: float, sd: float, n: int, eval_var: float = 0.0) -> tuple[float, float]:
    """95 % interval of the mean gap (same computation as :func:`verdict`); NaNs with one seed.

    Args:
        mean: Mean gap over seeds.
        sd: Standard deviation (ddof=1) of the per-seed gaps.
        n: Number of seeds.
        eval_var: Added variance of the mean gap from the evaluation set.

    Returns:
        ``(low, high)``.
    """
    from ..stats import diff_from_moments

    if n < 2 or not (np.isfinite(mean) and np.isfinite(sd)):
        return (math.nan, math.nan)
    d = diff_from_moments(-float(mean), float(sd), int(n), eval_var=eval_var)
    return (-d.high, -d.low)


def _eval_var(g: pd.DataFrame) -> float:
    """Binomial variance of a mean gap from the shared test images (0 if their number is unknown)."""
    if "test_images" not in g or not np.isfinite(g["test_images"].min()):
        return 0.0
    n = int(g["test_images"].min())
    at, ats = 1 - float(g["err_transfer"].mean()), 1 - float(g["err_scratch"].mean())
    return (at * (1 - at) + ats * (1 - ats)) / n


#: The verdict of a gap whose runs include a chance-level or diverged one.
NOT_A_FINDING = "not a finding (flagged run)"


def summarise_gaps(df: pd.DataFrame, by: str | Sequence[str]) -> pd.DataFrame:
    """Mean, sd, min, max and 95 % interval of ``gap`` (and both arms' errors) per group, with a :func:`verdict`.

    ``df`` needs columns ``gap``, ``err_transfer``, ``err_scratch`` and ``seed`` (``test_images``,
    when present, adds the test set's binomial noise to the interval). ``seeds_negative`` counts
    seeds whose own gap was > 0. With a ``flags`` column (the runs' sanity flags), a group holding
    a chance-level or diverged run gets the verdict :data:`NOT_A_FINDING`.

    Args:
        df: One row per run pair (see above).
        by: The grouping column(s).

    Returns:
        One row per group, in order of first appearance.
    """
    by = [by] if isinstance(by, str) else list(by)
    g = df.groupby(by, sort=False)
    out = pd.DataFrame({
        "err_transfer": g["err_transfer"].mean(),
        "err_scratch": g["err_scratch"].mean(),
        "gap_mean": g["gap"].mean(),
        "gap_sd": g["gap"].std(ddof=1),
        "gap_min": g["gap"].min(),
        "gap_max": g["gap"].max(),
        "seeds": g["seed"].nunique(),
        "seeds_negative": g["gap"].apply(lambda s: int((s > 0).sum())),
        "eval_var": g.apply(_eval_var, include_groups=False),
    })  # fmt: skip
    ci = [gap_interval(m, s, k, e) for m, s, k, e in zip(out["gap_mean"], out["gap_sd"], out["seeds"], out["eval_var"])]
    out["gap_low"] = [lo for lo, _ in ci]
    out["gap_high"] = [hi for _, hi in ci]
    out["verdict"] = [verdict(m, s, k, e) for m, s, k, e in zip(out["gap_mean"], out["gap_sd"], out["seeds"], out["eval_var"])]
    if "flags" in df:
        # a chance-level or diverged run on either side: the gap measures that failure, not transfer
        broken = g["flags"].apply(lambda f: any(x in str(v) for v in f for x in ("chance-level", "diverged")))
        out["flags"] = g["flags"].apply(lambda f: "; ".join(sorted({x for v in f for x in str(v).split("; ") if x})))
        out.loc[broken, "verdict"] = NOT_A_FINDING
    return out.drop(columns="eval_var").reset_index()


def paired_gaps(transfer: pd.DataFrame, scratch: pd.DataFrame, on: Sequence[str] = ("n_per_class", "seed")) -> pd.DataFrame:
    """Join transfer and scratch rows on ``on`` (same subset, same seed): ``gap = err_transfer - err_scratch``.

    Args:
        transfer: The transfer arm's rows (``err_transfer``).
        scratch: The scratch arm's rows (``err_scratch``).
        on: The columns that pair them.

    Returns:
        The joined rows with ``gap``.
    """
    on = list(on)
    keep = on + ["test_error", "run"] + (["flags"] if "flags" in scratch else [])
    s = scratch[keep].rename(columns={"test_error": "err_scratch", "run": "run_scratch", "flags": "flags_scratch"})
    t = transfer.rename(columns={"test_error": "err_transfer"})
    out = t.merge(s, on=on, how="inner", validate="many_to_one")
    out["gap"] = out["err_transfer"] - out["err_scratch"]
    if "flags_scratch" in out:  # both runs' flags: a broken run on either side makes the gap no finding
        own = list(out["flags"]) if "flags" in out else [""] * len(out)
        out["flags_transfer"] = own  # each arm's own, so the page can put a flag beside the arm it belongs to
        out["flags"] = ["; ".join(x for x in (a, b) if x) for a, b in zip(own, out["flags_scratch"])]
    return out


# --------------------------------------------------------------------------------------------
# The shuffled-label source task
# --------------------------------------------------------------------------------------------


def source_indices(labels: np.ndarray, n_per_class: int, exclude: np.ndarray, seed: int = 12345, num_classes: int = 10) -> np.ndarray:
    """Stratified indices of ``n_per_class`` images per class, none of them in ``exclude``.

    The source task must not contain the target's labelled images; this picks from the rest.

    Args:
        labels: Class index per image of the pool.
        n_per_class: Images per class to pick.
        exclude: Positions that must not be picked.
        seed: The generator's seed.
        num_classes: Classes to pick from.

    Returns:
        Sorted positions into ``labels``.

    Raises:
        ValueError: A class has fewer than ``n_per_class`` images left.
    """
    labels = np.asarray(labels)
    excluded = np.zeros(len(labels), dtype=bool)
    excluded[np.asarray(exclude, dtype=np.int64)] = True
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero((labels == c) & ~excluded)
        if n_per_class > len(idx):
            raise ValueError(f"class {c} has only {len(idx)} images outside the target subsets; asked for {n_per_class}")
        picked.append(np.random.default_rng([seed, c]).permutation(idx)[:n_per_class])
    return np.sort(np.concatenate(picked))


def shuffle_labels(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random permutation of ``labels``: the same class counts, no link between image and label.

    Args:
        labels: Class indices.
        seed: The generator's seed.

    Returns:
        The permuted labels.
    """
    return np.asarray(labels)[np.random.default_rng(seed).permutation(len(labels))]


def shuffled_source_data(P: SimpleNamespace, data: D.EuroSAT) -> D.EuroSAT:
    """The source task: EuroSAT training images (disjoint from every target subset) with shuffled labels.

    Args:
        P: The chapter's parameters (``source_n_per_class``).
        data: The dataset.

    Returns:
        The source images with shuffled labels.
    """
    pos = data.split_indices("train")
    labels = data.labels[pos]
    n_target = P.case_n
    exclude = np.concatenate([D.subset_indices(labels, n_per_class=n_target, seed=s, num_classes=data.num_classes) for s in P.seeds])
    src = data.take(pos[source_indices(labels, P.source_n_per_class, exclude, num_classes=data.num_classes)])
    from dataclasses import replace

    return replace(src, labels=shuffle_labels(src.labels, seed=777))


# --------------------------------------------------------------------------------------------
# Specs: one per arm
# --------------------------------------------------------------------------------------------


def _common(P: SimpleNamespace, name: str, n: int, seed: int, **tags: Any) -> dict[str, Any]:
    return dict(
        name=name,
        backbone=P.backbone,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        seed=seed,
        n_per_class=n,
        val_n_per_class=P.val_n_per_class,
        test_n_per_class=P.test_n_per_class,
        tags={"chapter": NOTEBOOK, "bn_momentum": M.SCRATCH_BN_MOMENTUM, **tags},
    )


def _epochs(P: SimpleNamespace, n: int) -> int:
    return budget_epochs(n * 10, P.batch_size, P.epochs, P.min_steps)


def scratch_spec(P: SimpleNamespace, n: int, seed: int) -> ExperimentSpec:
    """Same architecture from a random initialisation, every layer trained (BatchNorm in training mode).

    Args:
        P: The chapter's parameters.
        n: Labelled training images per class.
        seed: The run's seed.

    Returns:
        The spec.
    """
    e = _epochs(P, n)
    return ExperimentSpec(
        **_common(P, f"scratch_n{n}_seed{seed}", n, seed, arm="scratch"),
        weights=None,
        image_size=P.image_size,
        phases=(T.PhaseConfig("scratch", epochs=e, learning_rate=P.lr, batch_size=P.batch_size, schedule="cosine", unfreeze="all", freeze_bn=False),),
    )


def frozen_spec(
    P: SimpleNamespace, n: int, seed: int, *, case: str = "imagenet_frozen", weights: str | None = "imagenet",
    preprocessing: str = "auto", image_size: int | None = None,
) -> ExperimentSpec:
    """A pretrained base kept frozen; a new head trained on its (cached) features, same epochs and optimiser.

    Args:
        P: The chapter's parameters.
        n: Labelled training images per class.
        seed: The run's seed.
        case: The case's name (the run folder's prefix).
        weights: The base's weights (``"imagenet"`` or a file).
        preprocessing: The input normalisation (``"auto"``: the backbone's own).
        image_size: The input size (default ``P.image_size``).

    Returns:
        The spec.
    """
    e = _epochs(P, n)
    return ExperimentSpec(
        **_common(P, f"{case}_n{n}_seed{seed}", n, seed, arm="transfer", case=case),
        weights=weights,
        image_size=image_size or P.image_size,
        preprocessing=preprocessing,
        phases=(T.PhaseConfig("head", epochs=e, learning_rate=P.lr, batch_size=P.batch_size, schedule="cosine", use_feature_cache=True),),
    )  # fmt: skip


def gentle_spec(P: SimpleNamespace, n: int, seed: int) -> ExperimentSpec:
    """The gentle recipe in the same number of epochs: half head-only, half all layers at ``lr_gentle`` (BatchNorm frozen).

    Args:
        P: The chapter's parameters.
        n: Labelled training images per class.
        seed: The run's seed.

    Returns:
        The spec.
    """
    e = _epochs(P, n)
    e_head = max(1, math.ceil(e / 2))
    return ExperimentSpec(
        **_common(P, f"imagenet_gentle_n{n}_seed{seed}", n, seed, arm="transfer", case="imagenet_gentle"),
        weights=P.weights,
        image_size=P.image_size,
        phases=(
            T.PhaseConfig("head", epochs=e_head, learning_rate=P.lr, batch_size=P.batch_size, schedule="cosine", use_feature_cache=True),
            T.PhaseConfig("finetune", epochs=max(e - e_head, 1), learning_rate=P.lr_gentle, batch_size=P.batch_size, schedule="cosine",
                          unfreeze="all", freeze_bn=True),
        ),  # fmt: skip
    )


def aggressive_spec(P: SimpleNamespace, n: int, seed: int) -> ExperimentSpec:
    """All layers, BatchNorm included, trainable from the first step at ``lr_aggressive``; no head warm-up.

    Args:
        P: The chapter's parameters.
        n: Labelled training images per class.
        seed: The run's seed.

    Returns:
        The spec.
    """
    e = _epochs(P, n)
    return ExperimentSpec(
        **_common(P, f"imagenet_aggressive_n{n}_seed{seed}", n, seed, arm="transfer", case="imagenet_aggressive"),
        weights=P.weights,
        image_size=P.image_size,
        freeze_bn=False,
        phases=(T.PhaseConfig("aggressive", epochs=e, learning_rate=P.lr_aggressive, batch_size=P.batch_size, schedule="cosine",
                              unfreeze="all", freeze_bn=False),),
    )  # fmt: skip


def source_spec(P: SimpleNamespace) -> ExperimentSpec:
    """Pretraining on the shuffled-label source task (every layer trains; scored on the real-label val split).

    Args:
        P: The chapter's parameters.

    Returns:
        The spec.
    """
    init = None if P.source_init == "scratch" else P.weights
    return ExperimentSpec(
        name=f"source_shuffled_{P.source_init}_n{P.source_n_per_class}",
        backbone=P.backbone,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=init,
        image_size=P.image_size,
        freeze_bn=False,
        phases=(T.PhaseConfig("source", epochs=P.source_epochs, learning_rate=P.lr, batch_size=P.batch_size, schedule="cosine",
                              unfreeze="all", freeze_bn=False),),
        seed=0,
        val_n_per_class=P.val_n_per_class,
        eval_splits=("val",),
        tags={"chapter": NOTEBOOK, "bn_momentum": M.SCRATCH_BN_MOMENTUM, "arm": "source", "labels": "shuffled", "source_init": P.source_init,
              "source_n_per_class": P.source_n_per_class},
    )  # fmt: skip


def shuffled_finetune_spec(P: SimpleNamespace, n: int, seed: int, weights: str) -> ExperimentSpec:
    """The shuffled-label base retrained end to end with exactly the scratch arm's recipe.

    Args:
        P: The chapter's parameters.
        n: Labelled training images per class.
        seed: The run's seed.
        weights: The shuffled-label base's weights file.

    Returns:
        The spec.
    """
    e = _epochs(P, n)
    return ExperimentSpec(
        **_common(P, f"shuffled_source_finetuned_n{n}_seed{seed}", n, seed, arm="transfer", case="shuffled_source_finetuned"),
        weights=weights,
        image_size=P.image_size,
        freeze_bn=False,
        phases=(T.PhaseConfig("finetune", epochs=e, learning_rate=P.lr, batch_size=P.batch_size, schedule="cosine", unfreeze="all", freeze_bn=False),),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------


def _row(res: RunResult, **extra: Any) -> dict[str, Any]:
    rec = res.record
    test = rec["metrics"]["test"]
    return {
        **extra,
        "test_accuracy": test["accuracy"],
        "test_error": 1.0 - test["accuracy"],
        "test_images": test["n"],
        "val_accuracy": rec["metrics"]["val"]["accuracy"],
        "train_size": rec["extra"]["train_size"],
        "epochs": R.epochs_run(rec),
        "fit_seconds": rec["timings"]["fit_seconds"],
        "flags": "; ".join(rec.get("warnings") or []),
        "run": str(res.run_dir),
    }


def scratch_runs(P: SimpleNamespace, data: D.EuroSAT, ns: Sequence[int]) -> pd.DataFrame:
    """The scratch arm for each ``n`` and seed.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        ns: Labelled training images per class.

    Returns:
        One row per (n, seed), read from each run's record.
    """
    rows = []
    for n in ns:
        for seed in P.seeds:
            rows.append(_row(_run(P, scratch_spec(P, n, seed), data), n_per_class=n, seed=seed))
    return pd.DataFrame(rows)


def crossover_params(P: SimpleNamespace) -> ChapterParams:
    """Chapter 3's parameters for the crossover study beside this chapter (same profile, weights and data).

    Args:
        P: This chapter's parameters.

    Returns:
        Chapter 3's resolved parameters, its ``out_dir`` the sibling folder the study lives in.
    """
    return resolve_params(CX.HOME, profile=P.profile, weights=P.weights, data_source=P.data_source,
                          out_dir=str(CX.records_dir(P.out_dir).parent))  # fmt: skip


def gap_vs_n_crossover(P: SimpleNamespace, data: D.EuroSAT | None = None) -> pd.DataFrame:
    """Section 1 from chapter 3's crossover records: frozen ImageNet base + head vs the same network from scratch.

    Both arms there have their own recipe and budget (scratch: AdamW, cosine decay, BatchNorm
    momentum 0.9, at least the fine-tuned arms' step cap, spent whole), at six data sizes from 5
    images per class to the whole training split, on the whole test split. Equal-budget scratch
    runs at tiny sizes (this chapter's earlier design) never left chance level, so their "gap"
    measured a network that had not learned. With ``data``, runs of those two arms the study has
    not finished yet are trained first (into the study's own folder, where chapter 3 reuses
    them); without, only finished records are read.

    Args:
        P: This chapter's parameters (its ``out_dir`` locates the study beside it).
        data: The dataset, to train missing runs; None reads records only.

    Returns:
        One row per data size and seed with both arms: ``n_per_class``, ``size``, ``seed``,
        ``err_transfer``, ``err_scratch``, ``gap``, ``test_images``, ``flags`` (both runs'),
        ``flags_transfer`` / ``flags_scratch`` (each arm's), ``train_images`` (the subset's size)
        and the scratch arm's budget as its record has it (:func:`scratch_trace`), then ``run`` /
        ``run_scratch``. Empty when the study has not run.
    """
    cols = ["n_per_class", "size", "seed", "err_transfer", "err_scratch", "gap", "test_images", "flags", "flags_transfer",
            "flags_scratch", "train_images", *SCRATCH_TRACE, "run", "run_scratch"]  # fmt: skip
    if data is not None:
        CX.run_study(crossover_params(P), data, arms=("frozen", "scratch"))
    t = CX.read_table(CX.records_dir(P.out_dir))
    if t.empty:
        return pd.DataFrame(columns=cols)
    t = t.assign(n_per_class=t["n_per_class"].round().astype(int), err=1.0 - t["test_acc"].astype(float))
    keys = ["n_per_class", "size", "seed"]
    fro = t[t["arm"] == "frozen"][keys + ["err", "test_images", "warnings", "run"]]
    scr = t[t["arm"] == "scratch"][keys + ["err", "test_images", "warnings", "run"]]
    out = fro.merge(scr, on=keys, suffixes=("_t", "_s"), validate="one_to_one")
    out = out.rename(columns={"err_t": "err_transfer", "err_s": "err_scratch", "run_t": "run", "run_s": "run_scratch"})
    out["gap"] = out["err_transfer"] - out["err_scratch"]
    out["test_images"] = out[["test_images_t", "test_images_s"]].min(axis=1)
    out["flags"] = ["; ".join(x for x in (a, b) if x) for a, b in zip(out["warnings_t"], out["warnings_s"])]
    out["flags_transfer"], out["flags_scratch"] = out["warnings_t"], out["warnings_s"]
    trace = pd.DataFrame([scratch_trace(r) for r in out["run_scratch"]], index=out.index)
    out = pd.concat([out, trace], axis=1)
    return out[cols].sort_values(["n_per_class", "seed"]).reset_index(drop=True)


#: What :func:`scratch_trace` reads from a scratch run's record (columns of section 1's table).
SCRATCH_TRACE = ("scratch_epochs", "scratch_steps", "scratch_best_last", "scratch_val_before", "scratch_val_last")


def scratch_trace(run: str | Path) -> dict[str, Any]:
    """A scratch run's budget and the end of its validation curve, from its record.

    The scratch arm spends a fixed budget without early stopping, so whether it was still rising
    when the budget ran out says how far its test error is from what the network can reach.

    Args:
        run: The run folder.

    Returns:
        ``train_images`` (its training subset), ``scratch_epochs`` (epochs run), ``scratch_steps``
        (optimiser steps of its budget), ``scratch_best_last`` (its best validation accuracy came
        in its last epoch), ``scratch_val_before`` / ``scratch_val_last`` (validation accuracy of its
        last two epochs).
    """
    rec = R.read(run)
    budget = (rec["params"].get("tags") or {}).get("budget") or {}
    val = [v for v in sanity.history_series(rec["history"], "val_accuracy") if np.isfinite(v)]
    # over the finite values of every phase; ties="last": a last epoch that equals an earlier best is its best
    best = sanity.best_epoch(rec["history"], finite=True, ties="last")
    return {"train_images": budget.get("train_images", (rec.get("extra") or {}).get("train_size")),
            "scratch_epochs": R.epochs_run(rec) or 0,
            "scratch_steps": budget.get("steps"),
            "scratch_best_last": best is not None and best[1] >= 2 and best[0] == best[1],
            "scratch_val_before": val[-2] if len(val) >= 2 else math.nan,
            "scratch_val_last": val[-1] if val else math.nan}  # fmt: skip


def gap_paragraph(by_n: pd.DataFrame, runs: pd.DataFrame | None = None, reference: dict[str, Any] | None = None) -> str:
    """Section 1's paragraph from :func:`summarise_gaps` per data size: every gap with its interval.

    The verdicts are stated for the budgets the arms had: with ``runs`` the paragraph names the
    scratch arm's budget at the largest size and whether it was still rising, and with
    ``reference`` it sets a longer-trained scratch run beside the whole-split gap.

    Args:
        by_n: One row per data size (``n_per_class``, both errors, ``gap_mean``, ``gap_low``,
            ``gap_high``, ``seeds``, ``verdict``).
        runs: :func:`gap_vs_n_crossover`'s per-seed rows (the whole split's image count, each
            arm's flags, the scratch budget), or None.
        reference: :func:`reference_scratch`, or None.

    Returns:
        Markdown.
    """
    if by_n.empty:
        return "*Chapter 3's crossover study has no finished runs yet: run `python -m eurosat_lib study crossover`.*"
    whole = whole_split_images(runs)

    def one(r: pd.Series) -> str:
        ci = (f"95 % CI {100 * r.gap_low:+.1f} to {100 * r.gap_high:+.1f}" if np.isfinite(r.gap_low) and np.isfinite(r.gap_high)
              else "no interval")  # fmt: skip
        ft, fs = arm_flags(runs, "n_per_class", r.n_per_class)
        size = (size_text(r.n_per_class, whole).replace("the whole split", "**the whole split**", 1) if float(r.n_per_class) in whole
                else f"**{r.n_per_class:,.0f}** images per class")  # fmt: skip
        return (f"at {size}, test error "
                f"{r.err_transfer:.1%}{flag_note(ft)} with the frozen ImageNet base against {r.err_scratch:.1%}{flag_note(fs)} "
                f"from scratch: gap {100 * r.gap_mean:+.1f} points ({ci}, {int(r.seeds)} seed{'s' if int(r.seeds) != 1 else ''}) "
                f"→ **{r.verdict}**{still_improving_note(str(r.verdict), ft, fs)}")

    lines = [one(r) for _, r in by_n.iterrows()]
    v = by_n["verdict"]
    n_test = sorted({int(n) for n in runs["test_images"] if np.isfinite(n)}) if runs is not None and "test_images" in runs else []
    scored = f", {n_test[0]:,} test images" if len(n_test) == 1 else ""
    text = f"Paired by seed (the same images for both arms{scored}): " + "; ".join(lines) + ". "
    if (v == NOT_A_FINDING).all():
        text += "Every size holds a flagged run (chance-level or diverged): no gap here is a finding. "
    elif (v == "negative").any():
        text += f"Transfer was negative at {', '.join(str(int(n)) for n in by_n.loc[v == 'negative', 'n_per_class'])} images per class. "
    elif (v == "positive").all():
        text += ("At every size, within these budgets, the frozen ImageNet base had the lower test error (every interval "
                 "lies below zero). ")
    else:
        text += "No size shows negative transfer; where the interval includes zero, the two arms cannot be told apart. "
    sound = by_n[by_n["verdict"] != NOT_A_FINDING]
    if len(sound) > 1:
        lo, hi = sound.iloc[0], sound.iloc[-1]
        text += (f"From {size_text(lo.n_per_class, whole)} to {size_text(hi.n_per_class, whole)} the scratch arm's error fell by "
                 f"{100 * (lo.err_scratch - hi.err_scratch):.1f} points and the transfer arm's by "
                 f"{100 * (lo.err_transfer - hi.err_transfer):.1f}, so the gap went from {100 * lo.gap_mean:+.1f} to "
                 f"{100 * hi.gap_mean:+.1f} points.")  # fmt: skip
    budget = budget_paragraph(runs, reference, by_n)
    return text.rstrip() + ("\n\n" + budget if budget else "")


def label_whole_split(fig: Any, runs: pd.DataFrame) -> Any:
    """Name the whole training split on a data-size axis of ``fig`` (its images per class are a mean).

    :func:`eurosat_lib.plots.plot_gap_vs_n` puts each size's images per class on the x axis; the
    whole split is unbalanced (its classes hold 1,200-1,800 images), so its tick says so.

    Args:
        fig: The figure.
        runs: :func:`gap_vs_n_crossover`'s rows (``size``, ``n_per_class``, ``train_images``).

    Returns:
        The same figure.
    """
    whole = whole_split_images(runs)
    if not whole:
        return fig
    for ax in fig.axes:
        ticks = list(ax.get_xticks())
        labels = [t.get_text() for t in ax.get_xticklabels()]
        if len(ticks) != len(labels):
            continue
        new = [f"all\n({whole[float(t)]:,} images)" if float(t) in whole and whole[float(t)] else "all" if float(t) in whole
               else lab for t, lab in zip(ticks, labels)]  # fmt: skip
        if new != labels:
            ax.set_xticks(ticks, new)
    return fig


def gap_table(by: pd.DataFrame) -> Any:
    """:func:`summarise_gaps` as the chapter shows it: errors in %, gaps and their interval in points.

    Args:
        by: One row per group.

    Returns:
        A pandas ``Styler`` (the gap columns are differences of error rates: points, signed).
    """
    points = lambda x: "–" if not np.isfinite(x) else f"{100 * x:+.1f}"  # noqa: E731
    gaps = [c for c in ("gap_mean", "gap_sd", "gap_min", "gap_max", "gap_low", "gap_high") if c in by]
    fmt = {c: "{:.1%}" for c in ("err_transfer", "err_scratch") if c in by} | {c: points for c in gaps}
    if "gap_sd" in by:
        fmt["gap_sd"] = lambda x: "–" if not np.isfinite(x) else f"{100 * x:.1f}"
    return by.style.format(fmt).set_caption(
        "err_*: test error; gap_* (transfer − scratch error, in points): mean, sd, min and max over seeds, and the "
        "95 % interval (gap_low to gap_high); below zero, the pretrained start had the lower error")


#: File, in the shuffled-label source's run folder, holding its backbone's weights (what the cases load).
SOURCE_WEIGHTS_FILE = "source_backbone.weights.h5"


def pretrain_shuffled_source(P: SimpleNamespace, data: D.EuroSAT, write_weights: bool = True) -> tuple[RunResult, Path]:
    """Pretrain the base on the shuffled-label source; returns the run and its backbone weights file.

    The backbone's weights are saved once as ``source_backbone.weights.h5`` in the run folder,
    loadable by ``build_model(weights=<that path>)`` like any pretrained file.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        write_weights: Write the weights file if it is missing. Model files are never committed,
            so on a fresh checkout writing it means training the source again; False (every case
            that loads it is finished) reuses the source's record alone.

    Returns:
        The source run and the path of its backbone's weights (which may not exist when
        ``write_weights`` is False).
    """
    res = _run(P, source_spec(P), data, train_data=shuffled_source_data(P, data))
    path = res.run_dir / SOURCE_WEIGHTS_FILE
    if write_weights and not path.is_file():
        from .._io import atomic_path

        backbone = res.load_model().get_layer("backbone")
        with atomic_path(path, suffix=".weights.h5") as tmp:
            backbone.save_weights(str(tmp))
    return res, path


def _case_spec(P: SimpleNamespace, case: str, n: int, seed: int, source_path: Path | None) -> ExperimentSpec:
    """The spec of one case of section 2 (``source_path``: the shuffled-label base's weights file)."""
    if case == "imagenet_frozen":
        return frozen_spec(P, n, seed, weights=P.weights)
    if case == "raw_pixels":
        return frozen_spec(P, n, seed, case=case, weights=P.weights, preprocessing="none")
    if case == "tiny_input":
        return frozen_spec(P, n, seed, case=case, weights=P.weights, image_size=P.small_size)
    if case == "tiny_raw_pixels":
        return frozen_spec(P, n, seed, case=case, weights=P.weights, image_size=P.small_size, preprocessing="none")
    if case == "shuffled_source_frozen":
        return frozen_spec(P, n, seed, case=case, weights=str(source_path))
    if case == "shuffled_source_finetuned":
        return shuffled_finetune_spec(P, n, seed, str(source_path))
    if case == "imagenet_gentle":
        return gentle_spec(P, n, seed)
    if case == "imagenet_aggressive":
        return aggressive_spec(P, n, seed)
    raise ValueError(f"unknown case {case!r}")  # pragma: no cover - validated by the parameter check


def _source_weights_needed(P: SimpleNamespace, n: int, source_path: Path) -> bool:
    """Whether some shuffled-source case still has to train (only then must the source's weights exist)."""
    specs = [_case_spec(P, c, n, seed, source_path) for c in P.cases if c.startswith("shuffled_source") for seed in P.seeds]
    return any(R.reusable(Path(P.out_dir) / s.name, {"spec_key": s.key()}) is None for s in specs)


def transfer_cases(P: SimpleNamespace, data: D.EuroSAT) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Section 2: each case in ``P.cases`` at ``P.case_n`` images per class, paired with scratch by seed.

    Returns the per-seed table (``case``, ``seed``, both errors, ``gap``) and notes about the
    source task (its validation accuracy with real labels, which should be near chance).

    Args:
        P: The chapter's parameters (``cases``, ``case_n``).
        data: The dataset.

    Returns:
        The per-seed table and the notes, as described above.

    Raises:
        ValueError: An unknown case.
    """
    n = P.case_n
    rows, notes = [], {}
    source_path = None
    for case in P.cases:
        if case.startswith("shuffled_source") and source_path is None:
            planned = Path(P.out_dir) / source_spec(P).name / SOURCE_WEIGHTS_FILE
            src, source_path = pretrain_shuffled_source(P, data, write_weights=_source_weights_needed(P, n, planned))
            notes["source_val_accuracy"] = src.record["metrics"]["val"]["accuracy"]
            notes["source_train_size"] = src.record["extra"]["train_size"]
            notes["source_train_accuracy"] = src.record["history"][-1]["history"]["accuracy"][-1]
            notes["source_flags"] = list(src.record.get("warnings") or [])
            notes["source_init"] = P.source_init
        for seed in P.seeds:
            rows.append(_row(_run(P, _case_spec(P, case, n, seed, source_path), data), case=case, n_per_class=n, seed=seed))
    transfer = pd.DataFrame(rows)
    out = paired_gaps(transfer, scratch_runs(P, data, [n]))
    out.insert(1, "description", out["case"].map(CASES))
    return out, notes


def histories(df: pd.DataFrame, cases: Sequence[str], seed: int) -> dict[str, Any]:
    """Training histories (all phases) of the given cases' runs for one seed, plus the scratch arm.

    Args:
        df: The cases' per-run table (``case``, ``seed``, ``run``).
        cases: The cases to show.
        seed: The seed.

    Returns:
        Case (and ``"scratch"``) -> its phases' histories.
    """
    out = {}
    for case in cases:
        rows = df[(df["case"] == case) & (df["seed"] == seed)]
        if len(rows):
            out[case] = R.read(rows["run"].iloc[0])["history"]
    rows = df[df["seed"] == seed]
    if len(rows):
        out["scratch"] = R.read(rows["run_scratch"].iloc[0])["history"]
    return out


def explain(summary: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[str]:
    """One computed sentence per case: its gap with the 95 % interval, the verdict, and the reason
    matching that verdict (none when the interval includes zero).

    A flagged run is shown with its ⚠ beside its arm's error (with ``runs``: how many of the
    arm's runs; without, the group's flags), and a run still improving when it stopped says what
    that does to the verdict.

    Args:
        summary: :func:`summarise_gaps` per case.
        runs: :func:`transfer_cases`' per-seed rows (each arm's flags), or None.

    Returns:
        The sentences, one per case.
    """
    lines = []
    for _, r in summary.iterrows():
        lo, hi = (r.get("gap_low", math.nan), r.get("gap_high", math.nan))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = gap_interval(r.gap_mean, r.gap_sd, int(r.seeds))
        ci = (f" (95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}, {int(r.seeds)} seeds)" if np.isfinite(lo) and np.isfinite(hi)
              else f" ({int(r.seeds)} seed, no interval)")  # fmt: skip
        ft, fs = arm_flags(runs, "case", r.case)
        if runs is None and isinstance(r.get("flags"), str) and r.get("flags"):
            ft = [[f for f in r["flags"].split("; ") if f]]  # the group's flags: which arm is not known here
        reason = why(r.case, r.verdict)
        if r.verdict == NOT_A_FINDING:
            tail = f"; a run is flagged ({r.get('flags', '')}), so the gap measures that failure, not transfer."
        else:
            tail = f"; why: {reason}." if reason else "; the interval includes zero, so there is no effect to explain."
            tail = tail[:-1] + still_improving_note(str(r.verdict), ft, fs) + "."
        lines.append(
            f"**{r.case}** ({CASES.get(r.case, r.case)}): test error {r.err_transfer:.1%}{flag_note(ft)} vs "
            f"{r.err_scratch:.1%}{flag_note(fs)} from scratch, gap {100 * r.gap_mean:+.1f} points{ci} → **{r.verdict}** "
            f"({r.seeds_negative} of {r.seeds} seeds with gap > 0)" + tail
        )
    return lines


def source_note(notes: dict[str, Any], num_classes: int = 10) -> str:
    """Section 2's shuffled-label source in words: what it reached, its sanity flags and what they mean here.

    Its accuracy on the true labels is meant to be at chance (the labels it trained on were
    shuffled), so a "chance-level" flag there is the design working; whether it fitted its own
    shuffled labels above chance says what its weights hold.

    Args:
        notes: :func:`transfer_cases`' notes (empty when no case used the source).
        num_classes: The source task's classes (chance = 1 / num_classes).

    Returns:
        Markdown, ``""`` without notes.
    """
    if not notes:
        return ""
    n, acc = int(notes["source_train_size"]), float(notes["source_train_accuracy"])
    flags = [f for f in notes.get("source_flags", []) if f]
    text = (f"Shuffled-label source: {n:,} images, training accuracy on its shuffled labels {acc:.1%} at the end of "
            f"pretraining, validation accuracy with the true labels {notes['source_val_accuracy']:.1%}"
            f"{flag_note([flags])} (chance: {1 / num_classes:.0%}).")
    if "chance-level" in flags:
        text += " The flag is the design working: labels unrelated to the images leave nothing to predict the true ones with."
    low, _ = sanity.wilson_interval(acc, n)
    if low > 1 / num_classes:
        text += (f" On its own shuffled labels it rose above chance (95 % interval from {low:.1%}): it fitted some of "
                 "them, which with no link between image and label is memorising.")
    else:
        start = "ImageNet's weights" if notes.get("source_init") == "imagenet" else "a random initialisation"
        text += (f" On its own shuffled labels it stayed within noise of chance: it learned nothing, so its weights are "
                 f"{start} moved by gradients that carried no information, with BatchNorm statistics of its images.")
    return text
