"""Does similarity decide whether transfer helps? Sources closer to and further from the target.

A study module (not a chapter): chapter 2 runs and narrates it; it imports no chapter. EuroSAT's
ten classes are split in two (:data:`SOURCE_CLASSES`, parameter ``sim_source_classes``):

* **A** (the source task): AnnualCrop, Forest, Pasture, Residential, River. Networks are
  pretrained on A's *training split* only.
* **B** (the target task): the other five classes. The target's training subsets, its validation
  images (selection: early stopping) and its test images (the number compared) all come from B;
  no image of A is in the target's pool (:func:`class_task`, tested with a leak detector).

The target's network is MobileNetV2 (the chapter's width, ``sim_image_size`` pixels) with a
backbone from one of :data:`SOURCES`:

``in_domain``
    Random init, trained on A: a source *closer* to the target than ImageNet (same sensor,
    resolution and kind of scene, different classes).
``in_domain_imagenet``
    ImageNet init, then trained on A: ImageNet's generic filters adapted to satellite patches.
``imagenet``
    The usual start (the reference every other source is compared with).
``shuffled``
    Trained on A's images with *shuffled* labels (same recipe as ``in_domain``): an unrelated
    source, the same images with the task destroyed.
``random``
    No pretraining: the from-scratch arm with its own recipe and a fair budget (AdamW, cosine
    decay over its whole stated budget, BatchNorm momentum
    :data:`eurosat_lib.models.SCRATCH_BN_MOMENTUM`), never a head on a frozen random base.

Every pretrained source enters two arms, with the recipes of the crossover study
(:mod:`.crossover`, so "frozen" and "fine-tuned" mean the same thing in both studies):
``frozen`` (the base frozen, a head on cached features; cheap, so ``sim_cheap_seeds`` seeds at
every ``sim_sizes``) and ``finetune`` (the head phase, then every layer at a low rate with cosine
decay, BatchNorm frozen; ``sim_seeds`` seeds at ``sim_finetune_sizes``). The ``random`` source
is the ``scratch`` arm at every size with ``sim_seeds`` seeds, and serves as the "no transfer"
reference of both arms.

Each comparison (a source against ``imagenet`` in the same arm, and against ``random``) is the
paired mean difference of test accuracy over the seeds both ran (same training images per seed)
with a 95 % interval (:func:`eurosat_lib.stats.paired_diff`, with the test set's binomial noise);
its verdict word comes from :func:`eurosat_lib.stats.verdict`, and the sentence explaining a
source is chosen by that verdict (:func:`why`). The pretraining runs (one per pretrained source,
seed 0, shared by every target seed: the source is a fixed artefact, like ImageNet's weights)
are ordinary run folders too, so the whole study resumes after a kill.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import models as M
from .. import runs as R
from .. import stats
from .. import training as T
from ..summaries.render import flag_note, is_number
from . import crossover as CX
from .core import ExperimentSpec, RunResult, build_from_spec, run, train_subset
from .params import backbone_kwargs
from .recipes import BN_MOMENTUM_TAG, scratch_model_fn

#: The source task's classes (A); the target task is the other five (B).
SOURCE_CLASSES: tuple[str, ...] = ("AnnualCrop", "Forest", "Pasture", "Residential", "River")
#: The sources of the target's backbone, in the order figures and tables list them.
SOURCES = ("in_domain", "in_domain_imagenet", "imagenet", "shuffled", "random")
#: Sources pretrained here, on A (the others are ImageNet's file and no weights at all).
PRETRAINED_HERE = ("in_domain", "in_domain_imagenet", "shuffled")
#: Sources whose base enters the frozen and fine-tuned arms (``random`` is the scratch arm).
TRANSFERRED = ("in_domain", "in_domain_imagenet", "imagenet", "shuffled")
#: The sources each transferred source is compared with.
BASELINES = ("imagenet", "random")
#: The arms: the crossover study's recipes under the names this study uses.
ARMS = ("frozen", "finetune", "scratch")
_CX_ARM = {"frozen": "frozen", "finetune": "finetune_all", "scratch": "scratch"}
#: Words for the sources (legends, tables, prose).
SOURCE_LABELS = {
    "in_domain": "in-domain (EuroSAT A, random init)",
    "in_domain_imagenet": "in-domain (EuroSAT A, ImageNet init)",
    "imagenet": "ImageNet",
    "shuffled": "unrelated (EuroSAT A, shuffled labels)",
    "random": "no pretraining (from scratch)",
}
ARM_LABELS = {"frozen": "frozen base + head", "finetune": "fine-tuned: all layers", "scratch": "from scratch"}
#: Sub-folder of chapter 2's ``out_dir`` holding the study's runs.
SUBDIR = "similarity"
#: The chapter that runs the study: its runs live in ``<runs>/<profile>/02_negative_transfer/similarity``.
HOME = "02_negative_transfer"
#: Learning rates of the pretraining on A: random weights start with nothing to protect (AdamW at
#: the scratch rate); ImageNet weights are adapted at a lower rate, so the source keeps them as a start.
SOURCE_LR = {"in_domain": 1e-3, "shuffled": 1e-3, "in_domain_imagenet": 3e-4}
#: File, in a pretraining run's folder, holding its backbone's weights (what the target loads).
SOURCE_WEIGHTS_FILE = "source_backbone.weights.h5"
#: Throughputs behind :func:`estimate_seconds` (images per second on the book's 2-core CPU,
#: MobileNetV2-0.35 at 64 px, measured alone; records of chapter 2 and the headline scratch run):
#: training with back-propagation, and inference (features, validation, test).
TRAIN_IMAGES_PER_S = 150.0
INFER_IMAGES_PER_S = 400.0
#: Seconds per run for building the model, tracing and writing its folder.
RUN_OVERHEAD_S = 6.0


# --------------------------------------------------------------------------------------------
# The class split
# --------------------------------------------------------------------------------------------


def target_classes(source_classes: Sequence[str], all_classes: Sequence[str] = D.CLASS_NAMES) -> tuple[str, ...]:
    """The target task's classes: every class not in the source task, in canonical order.

    Args:
        source_classes: the source task's class names.
        all_classes: the dataset's classes.

    Returns:
        The remaining class names.

    Raises:
        ValueError: an unknown class, or a split that leaves a side empty.
    """
    unknown = [c for c in source_classes if c not in all_classes]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; EuroSAT's are {list(all_classes)}")
    rest = tuple(c for c in all_classes if c not in set(source_classes))
    if not source_classes or not rest:
        raise ValueError(f"the class split needs classes on both sides; got source {list(source_classes)}")
    return rest


def class_task(data: D.EuroSAT, classes: Sequence[str]) -> D.EuroSAT:
    """The images of ``classes`` only, relabelled ``0..len(classes)-1`` in the given order.

    The split of every image (train / val / test) is kept, so the sub-task's splits are the
    committed manifest's; the file ids are kept, so a test can prove which images are in it.

    Args:
        data: the full dataset.
        classes: class names to keep.

    Returns:
        A :class:`eurosat_lib.data.EuroSAT` with ``class_names == tuple(classes)``.

    Raises:
        ValueError: a class not in ``data``.
    """
    missing = [c for c in classes if c not in data.class_names]
    if missing:
        raise ValueError(f"classes {missing} are not in the dataset ({list(data.class_names)})")
    old = [data.class_names.index(c) for c in classes]
    keep = np.flatnonzero(np.isin(data.labels, old))
    sub = data.take(keep)
    remap = np.full(data.num_classes, -1, dtype=np.int64)
    remap[old] = np.arange(len(old))
    return replace(sub, labels=remap[sub.labels], class_names=tuple(classes),
                   info={**data.info, "classes": list(classes)})  # fmt: skip


def split_tasks(data: D.EuroSAT, source_classes: Sequence[str] = SOURCE_CLASSES) -> tuple[D.EuroSAT, D.EuroSAT]:
    """The source task (A, its training split only) and the target task (B, all its splits).

    Args:
        data: the full dataset.
        source_classes: A's classes.

    Returns:
        ``(source_train, target)``: A's training images, and B with its train/val/test splits.
    """
    source = class_task(data, source_classes)
    return source.get_split("train"), class_task(data, target_classes(source_classes, data.class_names))


def shuffled_labels(labels: np.ndarray, seed: int = 777) -> np.ndarray:
    """A random permutation of ``labels``: the same class counts, no link between image and label.

    Args:
        labels: the true labels.
        seed: the permutation's seed (fixed: the source is one artefact).

    Returns:
        The permuted labels.
    """
    return np.asarray(labels)[np.random.default_rng(seed).permutation(len(labels))]


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


def study_dir(P: SimpleNamespace) -> Path:
    """Where the study's run folders live.

    Args:
        P: chapter 2's parameters (``out_dir``).

    Returns:
        ``<P.out_dir>/similarity``.
    """
    return Path(P.out_dir) / SUBDIR


def records_dir(chapter_out_dir: str | Path) -> Path:
    """The study's folder as seen from another chapter of the same profile.

    Args:
        chapter_out_dir: that chapter's ``out_dir``.

    Returns:
        ``<its parent>/02_negative_transfer/similarity``.
    """
    return Path(chapter_out_dir).parent / HOME / SUBDIR


def _cx(P: SimpleNamespace) -> SimpleNamespace:
    """The crossover study's recipe parameters, filled from the ``sim_*`` ones (same recipes)."""
    return SimpleNamespace(
        backbone=P.backbone, alpha=P.alpha, weights=P.weights, profile=P.profile, lr_head=P.lr,
        epochs_head=P.sim_head_epochs, crossover_lr=P.sim_lr, crossover_top_fraction=1.0,
        crossover_epochs=P.sim_epochs, crossover_min_steps=P.sim_min_steps, crossover_scratch_epochs=P.sim_scratch_epochs,
        crossover_scratch_min_steps=P.sim_scratch_min_steps, crossover_patience=P.sim_patience,
        crossover_epoch_steps=P.sim_epoch_steps,
    )  # fmt: skip


def source_spec(P: SimpleNamespace, source: str, train_images: int) -> ExperimentSpec:
    """Pretraining of one source on task A (every layer trains, BatchNorm too; a fixed budget).

    Args:
        P: resolved chapter parameters (``backbone``, ``alpha``, ``weights``, ``sim_image_size``,
            ``sim_source_epochs``, ``sim_source_n_per_class``, ``sim_val_n_per_class``, ``batch_size``).
        source: one of :data:`PRETRAINED_HERE`.
        train_images: images of A it trains on (recorded).

    Returns:
        The run's spec (seed 0, scored on A's validation split with its true labels).

    Raises:
        ValueError: ``source`` is not pretrained here.
    """
    if source not in PRETRAINED_HERE:
        raise ValueError(f"source {source!r} is not pretrained on task A; those are {list(PRETRAINED_HERE)}")
    init = P.weights if source == "in_domain_imagenet" else None
    # No early stopping: the shuffled source's validation loss (true labels) says nothing about
    # what it learned, and all three sources get the same, stated budget.
    phase = T.PhaseConfig("source", epochs=P.sim_source_epochs, learning_rate=SOURCE_LR[source], batch_size=CX.BATCH,
                          optimizer="adamw", weight_decay=CX.SCRATCH_WEIGHT_DECAY, schedule="cosine", unfreeze="all",
                          freeze_bn=False)  # fmt: skip
    n = P.sim_source_n_per_class
    return ExperimentSpec(
        name=f"source_{source}_{'all' if n is None else f'n{n}'}",
        backbone=P.backbone,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=init,
        image_size=P.sim_image_size,
        freeze_bn=False,
        augment="flip",
        phases=(phase,),
        seed=0,
        n_per_class=n,
        val_n_per_class=P.sim_val_n_per_class,
        eval_splits=("val",),
        tags={"study": "similarity", "role": "source", "source": source, "labels": "shuffled" if source == "shuffled" else "true",
              "classes": list(P.sim_source_classes), "train_images": int(train_images),
              "budget": {"rule": f"{P.sim_source_epochs} epochs, every layer, AdamW at {SOURCE_LR[source]:g}, cosine decay to 0",
                         "epochs": P.sim_source_epochs}, BN_MOMENTUM_TAG: M.SCRATCH_BN_MOMENTUM},
    )  # fmt: skip


def target_spec(P: SimpleNamespace, source: str, arm: str, size: int, seed: int, train_images: int,
                weights: str | None) -> ExperimentSpec:  # fmt: skip
    """One run on the target task: ``source``'s base in ``arm`` on ``size`` images per class.

    Args:
        P: resolved chapter parameters (the ``sim_*`` fields, ``backbone``, ``alpha``, ``lr``).
        source: one of :data:`SOURCES` (``random`` only with ``arm="scratch"``).
        arm: one of :data:`ARMS`.
        size: labelled images per class of the target.
        seed: training seed; also picks the nested subset.
        train_images: images in that subset (sets the budget).
        weights: the source's weights (``"imagenet"``, a pretraining run's weights file, or None).

    Returns:
        The run's spec, named ``<source>_<arm>_n<size>_seed<seed>``.

    Raises:
        ValueError: an unknown source or arm, or ``random`` outside the scratch arm.
    """
    if source not in SOURCES or arm not in ARMS:
        raise ValueError(f"unknown source {source!r} or arm {arm!r}; expected {list(SOURCES)} and {list(ARMS)}")
    if (source == "random") != (arm == "scratch"):
        raise ValueError("the random source is the scratch arm (never a head on a frozen random base), and only it")
    C = _cx(P)
    b = CX.budget(C, _CX_ARM[arm], train_images)
    tags: dict[str, Any] = {"study": "similarity", "role": "target", "source": source, "arm": arm, "size": int(size),
                            "budget": b.to_dict()}  # fmt: skip
    if arm == "scratch":
        tags[BN_MOMENTUM_TAG] = M.SCRATCH_BN_MOMENTUM
    return ExperimentSpec(
        name=f"{source}_{arm}_n{int(size)}_seed{seed}",
        backbone=P.backbone,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=weights,
        image_size=P.sim_image_size,
        augment="flip",
        phases=CX.arm_phases(C, _CX_ARM[arm], b),
        seed=seed,
        n_per_class=int(size),
        # cached features make the whole validation split free for the frozen arm (smoke: tiny everywhere)
        val_n_per_class=None if arm == "frozen" and P.profile != "smoke" else P.sim_val_n_per_class,
        test_n_per_class=P.sim_test_n_per_class,
        eval_splits=("val", "test"),
        tags=tags,
    )


def _weights_of(P: SimpleNamespace, source: str) -> str | None:
    if source == "imagenet":
        return P.weights
    if source == "random":
        return None
    return str(study_dir(P) / source_spec(P, source, 0).name / SOURCE_WEIGHTS_FILE)


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study, in the order it runs.

    Attributes:
        spec: the run.
        seconds: its estimated cost alone on the book's CPU (:func:`estimate_seconds`).
        role: ``"source"`` (pretraining on A) or ``"target"``.
    """

    spec: ExperimentSpec
    seconds: float
    role: str


def estimate_seconds(steps: int, n_val: int, val_passes: int, n_test: int, feature_images: int = 0) -> float:
    """A run's cost on the book's 2-core CPU from the images it pushes through the network.

    Args:
        steps: optimiser steps through the whole network (0 when only a head trains).
        n_val: validation images scored per pass through the network.
        val_passes: such passes (epochs that run the network; 0 when validation features are cached).
        n_test: test images run through the network (0 when their features are cached).
        feature_images: images whose features the head phase computes.

    Returns:
        Estimated seconds with :data:`TRAIN_IMAGES_PER_S`, :data:`INFER_IMAGES_PER_S` and
        :data:`RUN_OVERHEAD_S` (an upper bound where early stopping ends a run sooner).
    """
    train = steps * CX.BATCH / TRAIN_IMAGES_PER_S
    infer = (feature_images + n_val * val_passes + n_test) / INFER_IMAGES_PER_S
    return RUN_OVERHEAD_S + train + infer


def plan(P: SimpleNamespace, data: D.EuroSAT) -> list[PlannedRun]:
    """Every run of the study: the pretraining runs first, then the target's, cheapest first.

    Args:
        P: resolved chapter parameters.
        data: the full dataset (10 classes; the study splits it).

    Returns:
        The :class:`PlannedRun` list.

    Raises:
        ValueError: a size asks for more images per class than the target's smallest class has,
            or more source images than A's smallest class has.
    """
    source_train, target = split_tasks(data, P.sim_source_classes)
    tr = target.labels[target.split_indices("train")]
    smallest = int(np.bincount(tr, minlength=target.num_classes).min())
    too_big = [s for s in sorted({*P.sim_sizes, *P.sim_finetune_sizes}) if s > smallest]
    if too_big:
        raise ValueError(f"sim sizes {too_big} ask for more target training images per class than its smallest class has "
                         f"({smallest}); use sizes up to {smallest}")  # fmt: skip
    src_smallest = int(np.bincount(source_train.labels, minlength=source_train.num_classes).min())
    n_src = P.sim_source_n_per_class
    if n_src is not None and n_src > src_smallest:
        raise ValueError(f"sim_source_n_per_class={n_src} but the source task's smallest class has {src_smallest} training "
                         "images; use at most that, or None for all of them")  # fmt: skip
    n_source = len(source_train) if n_src is None else n_src * source_train.num_classes
    n_val_src = (P.sim_val_n_per_class * source_train.num_classes) if P.sim_val_n_per_class else len(data.split_indices("val")) // 2
    out = []
    for source in PRETRAINED_HERE:
        spec = source_spec(P, source, n_source)
        steps = P.sim_source_epochs * math.ceil(n_source / CX.BATCH)
        out.append(PlannedRun(spec, estimate_seconds(steps, n_val_src, P.sim_source_epochs, 0), "source"))
    k = target.num_classes
    n_val_all = len(target.split_indices("val"))
    n_val = P.sim_val_n_per_class * k if P.sim_val_n_per_class else n_val_all
    n_test = P.sim_test_n_per_class * k if P.sim_test_n_per_class else len(target.split_indices("test"))
    C = _cx(P)
    targets = []
    for source in SOURCES:
        arms = ("scratch",) if source == "random" else ("frozen", "finetune")
        for arm in arms:
            sizes = P.sim_finetune_sizes if arm == "finetune" else P.sim_sizes
            seeds = P.sim_cheap_seeds if arm == "frozen" else P.sim_seeds
            for size in sizes:
                n = int(size) * k
                b = CX.budget(C, _CX_ARM[arm], n)
                if arm == "frozen":
                    # the frozen base's validation and test features are cached on disk by the first
                    # run of each source (features are keyed by weights and images); later runs only
                    # compute their training subset's
                    sec = estimate_seconds(0, 0, 0, 0, feature_images=n)
                else:
                    feats = n if arm == "finetune" else 0
                    sec = estimate_seconds(b.steps, n_val, b.epochs, n_test, feature_images=feats)
                targets += [PlannedRun(target_spec(P, source, arm, size, seed, n, _weights_of(P, source)), sec, "target")
                            for seed in seeds]  # fmt: skip
    targets.sort(key=lambda r: r.seconds)
    # the cached features, once per source: validation (whole split for the frozen arm, the
    # watched subset for the fine-tuned arm's head phase) and test
    n_val_frozen = n_val if P.profile == "smoke" else n_val_all
    for source in TRANSFERRED:
        first = next((i for i, r in enumerate(targets) if r.spec.tags["source"] == source and r.spec.tags["arm"] == "frozen"), None)
        if first is not None:
            extra = estimate_seconds(0, n_val_frozen + n_val, 1, n_test) - RUN_OVERHEAD_S
            targets[first] = replace(targets[first], seconds=targets[first].seconds + extra)
    return out + targets


def plan_text(runs: Sequence[PlannedRun]) -> str:
    """The plan as the ``--plan`` command prints it: one line per run, then the totals.

    Args:
        runs: :func:`plan`'s list.

    Returns:
        Text lines; the last ones sum the estimated minutes per role and arm.
    """
    lines = []
    for r in runs:
        rule = r.spec.tags["budget"]["rule"]
        lines.append(f"{r.spec.name:<40} ~{r.seconds / 60:5.1f} min  {rule}")
    by: dict[str, float] = {}
    for r in runs:
        key = "pretraining on A" if r.role == "source" else ARM_LABELS[r.spec.tags["arm"]]
        by[key] = by.get(key, 0.0) + r.seconds
    lines.append("estimated minutes alone on the book's 2-core CPU (upper bound: early stopping ends fine-tuned runs sooner): "
                 + ", ".join(f"{k} {v / 60:.0f}" for k, v in by.items()) + f"; total {sum(by.values()) / 60:.0f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Running the study, reading its table
# --------------------------------------------------------------------------------------------


#: Columns of the study's table, in order.
COLUMNS = ["source", "arm", "size", "n_per_class", "seed", "test_acc", "val_acc", "test_images", "minutes", "epochs_run",
           "budget", "warnings", "trained", "run"]  # fmt: skip


def _row(record: R.RunRecord, run_dir: Path, trained: bool) -> dict[str, Any]:
    # the crossover study's row (same arms, budgets and tags) plus the source network
    tags = record["params"].get("tags") or {}
    return {"source": tags.get("source"), **CX.record_row(record, run_dir, trained)}


def _tidy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["source"] = pd.Categorical(df["source"], categories=list(SOURCES), ordered=True)
    df["arm"] = pd.Categorical(df["arm"], categories=list(ARMS), ordered=True)
    return df.sort_values(["arm", "source", "n_per_class", "seed"], kind="stable").reset_index(drop=True)


@dataclass
class Study:
    """What :func:`run_study` returns.

    Attributes:
        table: one row per target run (:data:`COLUMNS`).
        sources: one row per pretraining run (:data:`SOURCE_COLUMNS`): ``source``, ``train_images``,
            ``val_acc`` (A's validation split, true labels), ``train_acc`` / ``train_acc_prev`` (last
            two epochs, on the labels it saw), ``epochs``, ``learned`` (:func:`source_learned`),
            ``minutes``, ``warnings``, ``budget``, ``run``.
    """

    table: pd.DataFrame
    sources: pd.DataFrame


def _source_row(res: RunResult) -> dict[str, Any]:
    rec = res.record
    tags = rec["params"].get("tags") or {}
    hist = rec["history"][-1]["history"] if rec["history"] else {}
    acc = list(hist.get("accuracy") or [np.nan])
    n = tags.get("train_images")
    k = len(tags.get("classes") or SOURCE_CLASSES)
    return {"source": tags.get("source"), "train_images": n,
            "val_acc": rec["metrics"].get("val", {}).get("accuracy"),
            "train_acc": acc[-1], "train_acc_prev": acc[-2] if len(acc) > 1 else np.nan,
            "epochs": sum(len(ph["history"].get("loss") or []) for ph in rec["history"]),
            "learned": source_learned(acc[-1], n, k),
            "minutes": R.trusted_minutes(rec),
            "warnings": "; ".join(rec["warnings"]), "budget": (tags.get("budget") or {}).get("rule"),
            "run": str(res.run_dir)}  # fmt: skip


#: Columns of :attr:`Study.sources`, in order.
SOURCE_COLUMNS = ["source", "train_images", "val_acc", "train_acc", "train_acc_prev", "epochs", "learned", "minutes", "warnings",
                  "budget", "run"]  # fmt: skip


def source_learned(train_acc: float, n: Any, num_classes: int) -> bool | None:
    """Whether a pretraining fitted its own training labels: the chance-level flag's rule, on them.

    A source trained on shuffled labels is meant to be at chance on the *true* labels (that is
    what its record's validation flag sees); on its *own* labels it can still fit (memorise)
    them, and if it did not, its weights hold nothing a source task put there.

    Args:
        train_acc: Training accuracy of its last epoch, on the labels it trained on.
        n: Its training images.
        num_classes: The source task's classes.

    Returns:
        False when the lower end of the accuracy's Wilson 95 % interval is within the
        :mod:`eurosat_lib.sanity` margin of chance (``1 / num_classes + 0.02``), True above it,
        None when unknown.
    """
    from ..sanity import wilson_interval

    if not (isinstance(n, (int, np.integer)) and n > 0) or train_acc is None or not np.isfinite(train_acc):
        return None
    return bool(wilson_interval(min(max(float(train_acc), 0.0), 1.0), int(n))[0] > 1 / num_classes + 0.02)


def still_rising(last: float, before: float, n: Any) -> bool:
    """Whether a training accuracy gained more than the noise of two accuracies on ``n`` images in its last epoch.

    Args:
        last: The last epoch's accuracy.
        before: The epoch before's.
        n: Images behind each.

    Returns:
        True when ``last - before > sqrt(2 p (1 - p) / n)`` (the :mod:`eurosat_lib.sanity` rule).
    """
    if not (isinstance(n, (int, np.integer)) and n > 0) or not (np.isfinite(last) and np.isfinite(before)):
        return False
    p = min(max(float(last), 0.0), 1.0)
    return bool(last - before > math.sqrt(2 * p * (1 - p) / int(n)))


def pretrain_source(P: SimpleNamespace, data: D.EuroSAT, spec: ExperimentSpec) -> RunResult:
    """Run (or reuse) one pretraining on task A.

    Args:
        P: resolved chapter parameters (``out_dir``, ``profile``, ``sim_source_classes``).
        data: the full dataset; the run trains on A's training split (the spec's subset of it,
            labels shuffled for the ``shuffled`` source) and is scored on A's validation split.
        spec: :func:`source_spec`'s spec.

    Returns:
        The run (its model in memory when trained now; :func:`source_weights` writes the file
        the target's runs load).
    """
    where = SimpleNamespace(**{**vars(P), "out_dir": str(study_dir(P))})
    task = class_task(data, P.sim_source_classes)
    train = train_subset(task, spec)
    if spec.tags["source"] == "shuffled":
        train = replace(train, labels=shuffled_labels(train.labels))
    return run(where, spec, task, train_data=train, model_fn=scratch_model_fn(task.num_classes))


def source_weights(res: RunResult) -> Path:
    """The backbone weights of a pretraining run, saved beside its record on first use.

    Weight files are never committed: on a fresh clone, a target run that must train asks for
    them and the source is trained again (:meth:`.core.RunResult.load_model`); when every target
    run is already finished nobody asks, and nothing is retrained.

    Args:
        res: :func:`pretrain_source`'s run.

    Returns:
        ``<run folder>/source_backbone.weights.h5``.
    """
    path = res.run_dir / SOURCE_WEIGHTS_FILE
    if not path.is_file():
        from .._io import atomic_path

        backbone = res.load_model().get_layer("backbone")
        with atomic_path(path, suffix=".weights.h5") as tmp:
            backbone.save_weights(str(tmp))
    return path


def _finished(folder: Path, spec: ExperimentSpec) -> bool:
    """Whether ``spec``'s run folder holds a finished record of this very spec (it would be reused)."""
    return R.reusable(folder / spec.name, {"spec_key": spec.key()}) is not None


def run_study(P: SimpleNamespace, data: D.EuroSAT, *, progress: Callable[[str], None] | None = None) -> Study:
    """Run (or reuse) every run of the study: the sources first, then the target's runs, cheapest first.

    Args:
        P: resolved chapter parameters (``out_dir``, ``profile`` and the ``sim_*`` fields).
        data: the full dataset (10 classes).
        progress: called with one line per run (e.g. ``print``); None: silent.

    Returns:
        A :class:`Study`: the target runs' table and the pretraining runs' rows.
    """
    import keras

    target = class_task(data, target_classes(P.sim_source_classes, data.class_names))
    where = SimpleNamespace(**{**vars(P), "out_dir": str(study_dir(P))})
    todo = plan(P, data)
    rows, src_rows = [], []
    sources: dict[str, RunResult] = {}
    k = target.num_classes
    for i, r in enumerate(todo, 1):
        t0 = time.perf_counter()
        spec = r.spec
        if r.role == "source":
            res = sources[spec.tags["source"]] = pretrain_source(P, data, spec)
            src_rows.append(_source_row(res))
            trained = res.model is not None
            if trained:
                source_weights(res)  # now, while the model is in memory
            label = f"val accuracy on A {src_rows[-1]['val_acc']:.2%}"
            flags = src_rows[-1]["warnings"]
        else:
            source = spec.tags["source"]
            if source in sources and not _finished(study_dir(P), spec):
                source_weights(sources[source])  # the run below loads them
            train = train_subset(target, spec)
            passes = spec.tags["budget"]["passes_per_epoch"]
            tiled = train if passes == 1 else train.take(np.tile(np.arange(len(train)), passes))
            fn = scratch_model_fn(k) if spec.tags["arm"] == "scratch" else (lambda s: build_from_spec(s, k))
            # each run pays for its own head features (as in the crossover): its minutes are a measurement
            res = run(where, spec, target, train_data=tiled, save_model=False, keep_predictions=False, model_fn=fn,
                      reuse_features=False)  # fmt: skip
            row = _row(res.record, res.run_dir, res.model is not None)
            rows.append(row)
            trained = row["trained"]
            label = f"test accuracy {row['test_acc']:.2%}"
            flags = row["warnings"]
        if trained:
            # dozens of models in one process: free each one's graph state before the next
            keras.backend.clear_session()
        if progress is not None:
            how = f"trained in {(time.perf_counter() - t0) / 60:.1f} min" if trained else "reused"
            progress(f"[{i}/{len(todo)}] {spec.name}: {how}, {label}" + (f" [{flags}]" if flags else ""))
    return Study(_tidy(rows), pd.DataFrame(src_rows, columns=SOURCE_COLUMNS))


def sources_note(sources: pd.DataFrame, num_classes: int = len(SOURCE_CLASSES)) -> str:
    """What each pretraining on task A reached, in words (numbers from its record).

    A flagged source says what its flag means here: the shuffled source is *meant* to be at
    chance on A's true labels, so its flag matters only when it did not fit its own labels either
    (:func:`source_learned`): then it learned nothing, and the text says what its weights are.
    A training accuracy still rising in the last epoch (:func:`still_rising`) is named.

    Args:
        sources: :attr:`Study.sources`.
        num_classes: classes of the source task (chance = 1 / num_classes).

    Returns:
        Markdown: one bullet per source, with its sanity flags; a note when there is none.
    """
    if sources.empty:
        return "*No source has been pretrained yet.*"
    lines = []
    for _, r in sources.iterrows():
        flags = f" ⚠ Sanity flags: {r['warnings']}." if r["warnings"] else ""
        shuffled = r["source"] == "shuffled"
        seen = "its shuffled labels" if shuffled else "its labels"
        prev = r.get("train_acc_prev", np.nan)
        rising = (f" (still rising: {r['train_acc_prev']:.1%} in the epoch before)"
                  if still_rising(r["train_acc"], prev if prev is not None else np.nan, r["train_images"]) else "")  # fmt: skip
        line = (f"- **{SOURCE_LABELS.get(r['source'], r['source'])}**: {int(r['train_images']):,} images of task A, "
                f"{r['budget']}; training accuracy on {seen} {r['train_acc']:.1%} in the last epoch{rising}, accuracy on "
                f"A's validation images with their true labels {r['val_acc']:.1%} (chance: {1 / num_classes:.0%}).{flags}")
        learned = r.get("learned")
        if shuffled and "chance-level" in str(r["warnings"]):
            line += " On the true labels chance is the design: its labels were shuffled."
        if learned is not None and not pd.isna(learned) and not bool(learned):
            start = "ImageNet's weights" if r["source"] == "in_domain_imagenet" else "a random initialisation"
            line += (f" On its *own* labels it stayed within noise of chance too: it learned nothing from its task, so its "
                     f"weights are {start} moved by gradients that carried no information, with BatchNorm statistics of "
                     "A's images. Its comparisons below measure that untrained base, not what an unrelated source "
                     "task would transfer.")
        elif shuffled and learned:
            line += " On its own labels it rose above chance: it fitted (memorised) some of them."
        lines.append(line)
    return "\n".join(lines)


def read_table(folder: str | Path) -> pd.DataFrame:
    """The target runs' table from the finished records alone (trains nothing).

    Args:
        folder: the study's folder (:func:`study_dir`).

    Returns:
        :func:`run_study`'s table (``trained`` False everywhere); empty without finished records.
    """
    return _tidy([_row(rec, run_dir, False) for run_dir, rec in R.complete_records(folder, study="similarity", role="target")])


# --------------------------------------------------------------------------------------------
# The answer: curves, paired differences, verdict-chosen sentences
# --------------------------------------------------------------------------------------------


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy per (arm, source, size) with a 95 % interval over seeds (the figure).

    The interval is Student-t over the seeds plus the test set's binomial noise
    (:func:`eurosat_lib.stats.diff_from_moments`); with one seed there is none (NaN).

    Args:
        table: :func:`run_study` / :func:`read_table` rows.

    Returns:
        One row per (arm, source, size): ``arm``, ``source``, ``label``, ``n_per_class``, ``mean``,
        ``low``, ``high``, ``seeds``, ``flagged``.
    """
    rows = []
    for (arm, source, size), g in table.groupby(["arm", "source", "size"], observed=True, sort=True):
        acc = g["test_acc"].astype(float)
        n_test = int(g["test_images"].max()) if g["test_images"].notna().any() else None
        p = float(np.clip(acc.mean(), 0, 1))
        eval_var = stats.binomial_se(p, n_test) ** 2 if n_test else 0.0
        d = stats.diff_from_moments(float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else math.nan, len(acc),
                                    eval_var=eval_var)  # fmt: skip
        rows.append({"arm": str(arm), "source": str(source), "label": SOURCE_LABELS.get(str(source), str(source)),
                     "n_per_class": float(size), "mean": d.mean, "low": d.low, "high": d.high, "seeds": len(acc),
                     "flagged": int((g["warnings"].fillna("") != "").sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["arm", "source", "label", "n_per_class", "mean", "low", "high", "seeds", "flagged"])


def _pair(a: pd.DataFrame, b: pd.DataFrame) -> tuple[stats.Diff, int, str] | None:
    x = a.set_index("seed")["test_acc"].astype(float)
    y = b.set_index("seed")["test_acc"].astype(float)
    seeds = sorted(set(x.index) & set(y.index))
    if not seeds:
        return None
    n_test = pd.concat([a, b])["test_images"].dropna()
    d = stats.paired_diff(x[seeds].to_numpy(), y[seeds].to_numpy(), n_eval=int(n_test.min()) if len(n_test) else None)
    involved = pd.concat([a[a["seed"].isin(seeds)], b[b["seed"].isin(seeds)]])
    flags = sorted({f for w in involved["warnings"].fillna("") for f in str(w).split("; ") if f})
    return d, len(seeds), ", ".join(flags)


def differences(table: pd.DataFrame, sources: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every transferred source against ``imagenet`` (same arm) and against ``random`` (scratch), per size.

    Paired by seed over the seeds both ran (same training images, :func:`.core.train_subset`);
    the interval is :func:`eurosat_lib.stats.paired_diff` with the test set's size, the verdict
    :func:`eurosat_lib.stats.verdict`'s and the effect word :func:`effect`'s.

    With ``sources`` (:attr:`Study.sources`) each row also carries its source's pretraining
    flags and whether that pretraining learned its own labels (:func:`source_learned`): a
    source that learned nothing is an untrained base, and the sentences say so.

    Args:
        table: :func:`run_study` / :func:`read_table` rows.
        sources: the pretraining runs' rows, or None.

    Returns:
        One row per (arm, source, baseline, size): ``arm``, ``source``, ``baseline``, ``size``,
        ``n_per_class``, ``diff``, ``low``, ``high``, ``seeds``, ``verdict``, ``effect``
        (helps / hurts / no detectable difference), ``text``, ``flags`` (the target runs'),
        ``source_flags`` and ``source_learned`` (None where the source was not pretrained here
        or ``sources`` is not given).
    """
    cols = ["arm", "source", "baseline", "size", "n_per_class", "diff", "low", "high", "seeds", "verdict", "effect", "text",
            "flags", "source_flags", "source_learned"]  # fmt: skip
    pre: dict[str, tuple[str, Any]] = {}
    if sources is not None and len(sources):
        for _, r in sources.iterrows():
            learned = r.get("learned")
            pre[str(r["source"])] = (str(r.get("warnings") or ""), None if learned is None or pd.isna(learned) else bool(learned))
    rows = []
    t = table.assign(source=table["source"].astype(str), arm=table["arm"].astype(str))
    for arm in ("frozen", "finetune"):
        for source in TRANSFERRED:
            mine = t[(t["arm"] == arm) & (t["source"] == source)]
            for size, g in mine.groupby("size", sort=True):
                for baseline in BASELINES:
                    if baseline == source:
                        continue
                    ref = t[(t["source"] == baseline) & (t["size"] == size)
                            & (t["arm"] == ("scratch" if baseline == "random" else arm))]  # fmt: skip
                    got = _pair(g, ref)
                    if got is None:
                        continue
                    d, n, flags = got
                    rows.append({"arm": arm, "source": source, "baseline": baseline, "size": int(size),
                                 "n_per_class": float(size), "diff": d.mean, "low": d.low, "high": d.high, "seeds": n,
                                 "verdict": d.verdict, "effect": effect(d.verdict), "text": stats.format_diff(d),
                                 "flags": flags, "source_flags": pre.get(source, ("", None))[0],
                                 "source_learned": pre.get(source, ("", None))[1]})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


#: Verdict word of :func:`eurosat_lib.stats.verdict` -> what it means for a source.
EFFECTS = {"better": "helps", "worse": "hurts", "no measurable difference": "no detectable difference"}


def effect(verdict: str) -> str:
    """The effect of a source against its baseline, in the study's words.

    Args:
        verdict: one of :data:`eurosat_lib.stats.VERDICTS`.

    Returns:
        ``"helps"``, ``"hurts"`` or ``"no detectable difference"``.

    Raises:
        ValueError: an unknown verdict.
    """
    if verdict not in EFFECTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {list(EFFECTS)}")
    return EFFECTS[verdict]


#: Why a source came out as measured: source -> baseline -> effect -> mechanism. :func:`why`
#: picks the sentence of the *measured* effect; there is one for each outcome, so no sentence is
#: attached to a result it does not describe. These read for a base the target retrains (the
#: fine-tuned arm); :data:`WHY_FROZEN` replaces those that would not hold for a frozen base.
WHY: dict[str, dict[str, dict[str, str]]] = {
    "in_domain": {
        "random": {
            "helps": "filters learned on other land-cover classes of the same sensor already separate textures and colours "
                     "the target needs, so the target's labels only have to be mapped onto them",
            "hurts": "features fitted to five other classes were specific enough to mislead: starting from them cost more than "
                     "the target's own labels could repair within the budget",
            "no detectable difference": "whatever the source's features carry, the target's labels taught a randomly "
                                        "initialised network as much in its budget (or the seeds disagree too much to tell)",
        },
        "imagenet": {
            "helps": "a source closer to the target than ImageNet gave more useful features, although it was pretrained on "
                     "far fewer images",
            "hurts": "ImageNet's weights come from over a million images and a full training schedule, this source from "
                     "the few thousand images of five classes and the budget listed above: closeness to the target changed "
                     "together with the size and training of the source, so the loss shows that this small in-domain "
                     "source gave poorer features than ImageNet's, not that breadth beats closeness",
            "no detectable difference": "the closer source and ImageNet ended within the noise of each other, although the "
                                        "closer one was pretrained on far fewer images: closeness alone did not buy a "
                                        "measurable gain here",
        },
    },
    "in_domain_imagenet": {
        "random": {
            "helps": "ImageNet's generic filters, adapted to satellite patches on the source classes, gave the target a "
                     "start that random weights could not catch up with in the budget",
            "hurts": "adapting ImageNet's features to five other classes narrowed them so much that they misled the target",
            "no detectable difference": "the target's labels taught a network trained from scratch as much in its "
                                        "budget (or the seeds disagree too much to tell)",
        },
        "imagenet": {
            "helps": "adapting ImageNet's features to EuroSAT imagery first (a closer intermediate source) improved on "
                     "ImageNet alone",
            "hurts": "the detour through five other EuroSAT classes, on a small source in a short budget, discarded "
                     "ImageNet features the target needed",
            "no detectable difference": "the detour through the other EuroSAT classes neither added to nor removed "
                                        "anything measurable from ImageNet's features",
        },
    },
    "imagenet": {
        "random": {
            "helps": "ImageNet's generic features (edges, textures, colours) transfer to satellite patches well enough to "
                     "beat a network that must learn them from the target's labels alone within its budget",
            "hurts": "at this size the target's own labels teach a network from scratch more than ImageNet's photo "
                     "features give: the domain gap costs more than the pretraining brings",
            "no detectable difference": "ImageNet features and training from scratch ended within the noise of each "
                                        "other at this size",
        },
    },
    "shuffled": {
        "random": {
            "helps": "even with its labels destroyed, pretraining on the same kind of images left useful low-level filters "
                     "and image statistics (BatchNorm) behind: what helped is the images, not the task",
            "hurts": "the source fitted labels unrelated to its images (memorised noise), and fine-tuning from those "
                     "weights ended below a random start: negative transfer from an unrelated source",
            "no detectable difference": "a source whose labels carry nothing gave features neither more nor less useful than "
                                        "a random start, within the noise",
        },
        "imagenet": {
            "helps": "the destroyed source still beat ImageNet, so what counted here was seeing the target's kind of "
                     "images, not a meaningful source task",
            "hurts": "ImageNet's meaningful source task beat the same EuroSAT images with meaningless labels: the "
                     "source task matters, not only the images",
            "no detectable difference": "the destroyed source and ImageNet ended within the noise of each other",
        },
    },
}

#: The frozen arm's sentences where :data:`WHY`'s would not hold: a frozen base is never
#: retrained (only a new head learns the target), while the scratch arm it is compared with trains
#: every layer on the target's labels within its own budget.
WHY_FROZEN: dict[str, dict[str, dict[str, str]]] = {
    "in_domain": {
        "random": {
            "hurts": "with the base frozen nothing repairs it: features fitted to five other classes, read by a new head "
                     "alone, separated the target's classes less well than a network whose every layer trained on the "
                     "target's labels",
            "no detectable difference": "a head on the frozen source features ended within the noise of a network whose "
                                        "every layer trained on the target's labels (or the seeds disagree too much to tell)",
        },
    },
    "in_domain_imagenet": {
        "random": {
            "helps": "ImageNet's filters, adapted to satellite patches on the source classes and kept frozen, gave a head "
                     "features that a network trained from scratch on the target's labels did not match within its budget",
            "hurts": "adapting ImageNet's features to five other classes narrowed them, and with the base frozen nothing "
                     "repairs that: a network whose every layer trained on the target's labels ended above a head on them",
            "no detectable difference": "a head on the frozen source features ended within the noise of a network whose "
                                        "every layer trained on the target's labels (or the seeds disagree too much to tell)",
        },
    },
    "imagenet": {
        "random": {
            "helps": "ImageNet's frozen generic features (edges, textures, colours) gave a head more to work with than a "
                     "network trained from scratch on the target's labels reached within its budget",
        },
    },
    "shuffled": {
        "random": {
            "helps": "even features fitted to shuffled labels, kept frozen, gave a head more than a network trained from "
                     "scratch reached in its budget: what helped is the images (filters, BatchNorm statistics), not the task",
            "hurts": "features fitted to labels unrelated to the images (memorised noise), kept frozen, gave a head less to "
                     "work with than a network whose every layer trained on the target's labels: nothing repairs a frozen base",
            "no detectable difference": "a head on features fitted to shuffled labels ended within the noise of a network "
                                        "trained from scratch on every layer",
        },
    },
}

#: Sentences for a source whose pretraining learned nothing (its training accuracy on its own
#: labels within noise of chance, :func:`source_learned`): its comparisons measure an untrained
#: base, not the source task it was meant to stand for. ``"<baseline>/<arm>"`` -> effect -> sentence.
WHY_UNTRAINED: dict[str, dict[str, str]] = {
    "random/frozen": {
        "helps": "its pretraining learned nothing, yet a head on its frozen base beat a network trained from scratch: what "
                 "helped can only be what the run left regardless of labels (BatchNorm statistics of the source images, "
                 "weight scales), not a source task",
        "hurts": "its pretraining learned nothing, so the frozen base is an untrained network with BatchNorm statistics of "
                 "the source images, and a head on it fell below a network whose every layer trained on the target's "
                 "labels: this measures an untrained frozen base against full training, not transfer from an unrelated source",
        "no detectable difference": "its pretraining learned nothing, and a head on that untrained frozen base ended within "
                                    "the noise of training from scratch",
    },
    "random/finetune": {
        "helps": "its pretraining learned nothing, yet fine-tuning from its weights beat a fresh start: what helped can only "
                 "be what the run left regardless of labels (BatchNorm statistics, weight scales), not a source task",
        "hurts": "its pretraining learned nothing, yet fine-tuning from its weights ended below a fresh start: what that "
                 "failed run left behind (weights moved by uninformative gradients) is the cause, not an unrelated source task",
        "no detectable difference": "its pretraining learned nothing, so fine-tuning started from weights no more "
                                    "informed than a fresh initialisation, and ended within the noise of training from "
                                    "scratch, as such a start would",
    },
    "imagenet": {
        "helps": "a base whose pretraining learned nothing beat ImageNet's features: what counted was not the source task",
        "hurts": "ImageNet's trained features beat a base whose pretraining learned nothing: a trained base against an "
                 "untrained one, which says nothing about what an unrelated source task does",
        "no detectable difference": "a base whose pretraining learned nothing ended within the noise of ImageNet's features",
    },
}


def why(source: str, baseline: str, verdict: str, arm: str | None = None, learned: bool = True) -> str:
    """The explanation of ``source`` against ``baseline`` that matches the measured ``verdict``.

    Args:
        source: one of :data:`TRANSFERRED`.
        baseline: one of :data:`BASELINES` (other than ``source``).
        verdict: the comparison's verdict (:data:`eurosat_lib.stats.VERDICTS`).
        arm: the arm compared (``"frozen"`` picks :data:`WHY_FROZEN` where it has a sentence); None:
            :data:`WHY`'s.
        learned: whether the source's pretraining learned its own labels (:func:`source_learned`);
            False picks :data:`WHY_UNTRAINED`.

    Returns:
        The sentence for that outcome.

    Raises:
        ValueError: an unknown source, baseline or verdict.
    """
    word = effect(verdict)
    if source not in WHY or baseline not in WHY[source]:
        raise ValueError(f"no explanation for source {source!r} against {baseline!r}")
    if not learned:
        key = f"random/{'frozen' if arm == 'frozen' else 'finetune'}" if baseline == "random" else baseline
        return WHY_UNTRAINED[key][word]
    if arm == "frozen" and word in WHY_FROZEN.get(source, {}).get(baseline, {}):
        return WHY_FROZEN[source][baseline][word]
    return WHY[source][baseline][word]


def why_across_sizes(source: str, baseline: str, rows: pd.DataFrame, arm: str | None = None, learned: bool = True) -> str:
    """One explanation for a source against a baseline over every size it was measured at.

    The same effect at every size gets that effect's sentence (:func:`why`); effects that differ
    between sizes get a sentence that says so and explains each measured effect where it held.

    Args:
        source: one of :data:`TRANSFERRED`.
        baseline: one of :data:`BASELINES`.
        rows: that comparison's :func:`differences` rows (``n_per_class``, ``verdict``, ``effect``,
            ``low``, ``high``), one per size.
        arm: the arm (:func:`why`).
        learned: whether the source learned its own labels (:func:`why`).

    Returns:
        The sentence, or ``""`` when no size has an interval.
    """
    ok = rows[np.isfinite(rows["low"].astype(float)) & np.isfinite(rows["high"].astype(float))]
    if ok.empty:
        return ""
    order = [e for e in ("hurts", "helps", "no detectable difference") if (ok["effect"] == e).any()]
    if len(order) == 1:
        return why(source, baseline, ok["verdict"].iloc[0], arm, learned)
    parts = []
    for e in order:
        mine = ok[ok["effect"] == e]
        sizes = ", ".join(f"{n:,.0f}" for n in mine["n_per_class"])
        if e == "no detectable difference":
            parts.append(f"at {sizes} images per class the difference is within the noise")
        else:
            parts.append(f"where it {e} ({sizes} images per class), {why(source, baseline, mine['verdict'].iloc[0], arm, learned)}")
    return "the verdict changes with the target's size, so no single reason covers every size: " + "; ".join(parts)


def difference_table(diffs: pd.DataFrame, arm: str) -> pd.DataFrame:
    """:func:`differences` of one arm for display: a row per source and size, a column per baseline.

    Args:
        diffs: :func:`differences` rows.
        arm: ``"frozen"`` or ``"finetune"``.

    Returns:
        Cells like ``"+2.1 points (95 % CI ...): helps"`` (plus the runs' sanity flags, and the
        source pretraining's ⚠ flags); empty when the arm has no rows.
    """
    d = diffs[diffs["arm"] == arm]
    if d.empty:
        return pd.DataFrame()
    src = d["source_flags"] if "source_flags" in d else pd.Series("", index=d.index)
    cell = d.assign(cell=d["text"] + ": " + d["effect"] + d["flags"].map(lambda f: f" [flags: {f}]" if f else "")
                    + src.map(lambda f: f" [source{_flag_note(f)}]" if isinstance(f, str) and f else ""),
                    label=d["source"].map(SOURCE_LABELS))  # fmt: skip
    wide = cell.pivot_table(index=["label", "n_per_class"], columns="baseline", values="cell", aggfunc="first", sort=False)
    # ImageNet is not compared with itself: its row has a dash there, not NaN
    wide = wide[[b for b in BASELINES if b in wide.columns]].fillna("—")
    wide.columns = [f"− {SOURCE_LABELS[b]}" for b in wide.columns]
    wide.index = wide.index.set_levels([wide.index.levels[0], [f"{n:,.0f}" for n in wide.index.levels[1]]])
    wide.index.names = ["source", "labelled images per class"]
    return wide


def _flag_note(flags: str) -> str:
    return flag_note([[f for f in str(flags).split("; ") if f]])


def _learned(rows: pd.DataFrame) -> bool:
    """False only when the rows say the source's pretraining learned nothing (unknown counts as learned)."""
    if "source_learned" not in rows:
        return True
    known = [v for v in rows["source_learned"] if v is not None and not pd.isna(v)]
    return not known or bool(known[0])


def _sized(r: pd.Series) -> str:
    """One size's difference and verdict word (no explanation: that comes once, for every size)."""
    flags = f" ⚠ {r['flags']}" if isinstance(r.get("flags"), str) and r["flags"] else ""
    if not (np.isfinite(r["low"]) and np.isfinite(r["high"])):
        return f"at {r['n_per_class']:,.0f} images per class {r['text']}{flags}: one seed gives no interval, so no verdict and nothing to explain"
    return f"at {r['n_per_class']:,.0f} images per class {r['text']}{flags}, **{r['effect']}**"


def _source_facts(sources: pd.DataFrame | None, source: str) -> str:
    """A pretrained source's size and budget in words, from its row (``""`` when unknown)."""
    if sources is None or not len(sources) or source not in set(sources["source"]):
        return ""
    r = sources[sources["source"] == source].iloc[0]
    epochs = r.get("epochs")
    text = f"{int(r['train_images']):,} images of task A" + (f", {int(epochs)} epochs" if is_number(epochs) else "")
    prev = r.get("train_acc_prev")
    if is_number(prev) and still_rising(r["train_acc"], prev, r["train_images"]):
        text += f", training accuracy still rising in its last epoch: {prev:.1%} → {r['train_acc']:.1%}"
    return text


def narrative(table: pd.DataFrame, diffs: pd.DataFrame, arm: str = "frozen", sources: pd.DataFrame | None = None) -> str:
    """One bullet per transferred source: its difference from each baseline at every size, each with
    its verdict, and one explanation per baseline chosen from all of those verdicts.

    Args:
        table: :func:`run_study` rows.
        diffs: :func:`differences` of that table.
        arm: the arm narrated (the frozen arm's explanations say that its base is never retrained).
        sources: :attr:`Study.sources`, for the size and budget of the sources pretrained here.

    Returns:
        Markdown; every number and verdict word read from ``diffs`` (and ``sources``).
    """
    d = diffs[diffs["arm"] == arm]
    if table.empty or d.empty:
        return "*No finished similarity runs yet: run `python -m eurosat_lib study similarity` first.*"
    lines = []
    for source in TRANSFERRED:
        mine = d[d["source"] == source].sort_values("n_per_class")
        if mine.empty:
            continue
        learned = _learned(mine)
        head = f"- **{SOURCE_LABELS[source]}**"
        src_flags = mine["source_flags"].iloc[0] if "source_flags" in mine else ""
        if isinstance(src_flags, str) and src_flags:
            head += (f" (source pretraining{_flag_note(src_flags)}"
                     + ("; it learned nothing from its own labels, see the sources above)" if not learned else ")"))
        lines.append(head + ":")
        for baseline, words in (("random", "training from scratch"), ("imagenet", "ImageNet")):
            rows = mine[mine["baseline"] == baseline]
            if rows.empty:
                continue
            sentence = f"  - against {words}: " + "; ".join(_sized(r) for _, r in rows.iterrows()) + "."
            reason = why_across_sizes(source, baseline, rows, arm, learned)
            if reason:
                sentence += f" Why: {reason}."
            if source == "in_domain" and baseline == "imagenet" and (rows["effect"] == "hurts").any():
                facts = _source_facts(sources, source)
                sentence += ((f" This source: {facts}." if facts else "")
                             + " Neumann et al.'s in-domain sources, which did beat ImageNet, were large remote-sensing "
                             "datasets with full training schedules: a different kind of in-domain source.")
            lines.append(sentence)
    flagged = table[(table["arm"].astype(str).isin([arm, "scratch"])) & (table["warnings"].fillna("") != "")]
    if len(flagged):
        kinds = sorted({f for w in flagged["warnings"] for f in str(w).split("; ") if f})
        lines.append(f"- {len(flagged)} runs carry a sanity flag ({', '.join(kinds)}); the tables mark the comparisons they "
                     "enter, and a flagged number is a property of its budget, not a finding.")
    return "\n".join(lines)


def answer(diffs: pd.DataFrame, arm: str = "frozen", sources: pd.DataFrame | None = None) -> str:
    """The study's answer to "does similarity decide whether transfer helps?", chosen by the verdicts.

    Reads, in ``arm``, whether the closer sources (``in_domain``, ``in_domain_imagenet``) beat
    ImageNet at some size and never lose to it, and whether the unrelated source (``shuffled``)
    loses to training from scratch at some size. An unrelated source whose pretraining learned
    nothing (``source_learned`` False in ``diffs``) is no test of dissimilarity: its verdicts are
    left out and the answer says so. A loss of the closer sources to ImageNet is stated with the
    confound it carries (the sources' size and training budget, from ``sources`` when given).

    Args:
        diffs: :func:`differences` rows.
        arm: the arm judged.
        sources: :attr:`Study.sources`, for the in-domain source's images and epochs.

    Returns:
        One or two sentences (markdown), or a note that there are no comparisons yet.
    """
    d = diffs[diffs["arm"] == arm]
    if d.empty:
        return "*The similarity study has no paired results yet.*"

    def verdicts(source: str, baseline: str) -> set[str]:
        return set(d[(d["source"] == source) & (d["baseline"] == baseline)]["verdict"])

    close = verdicts("in_domain", "imagenet") | verdicts("in_domain_imagenet", "imagenet")
    untrained = not _learned(d[d["source"] == "shuffled"])
    far = set() if untrained else verdicts("shuffled", "random")
    closer_wins, closer_loses = "better" in close, "worse" in close
    unrelated_hurts, unrelated_helps = "worse" in far, "better" in far
    where = ARM_LABELS[arm]
    if untrained:
        far_text = (" The unrelated source is no test of dissimilarity here: its pretraining learned nothing from its own "
                    "(shuffled) labels (⚠ chance-level), so it is an untrained base and its comparisons are left out.")
    else:
        far_text = (" The unrelated source fell below no pretraining." if unrelated_hurts else
                    " The unrelated source even beat no pretraining: pretraining on these images helped whatever their labels."
                    if unrelated_helps else " The unrelated source could not be told apart from no pretraining.")  # fmt: skip
    if closer_wins and closer_loses:
        return (f"**Mixed ({where}):** a closer source beat ImageNet at some sizes and fell below it at others, so closeness "
                "to the target did not decide on its own; the sizes in the table above say where each won." + far_text)
    if closer_wins and not closer_loses and unrelated_hurts:
        return (f"**Yes, in this study ({where}):** a source closer to the target than ImageNet beat ImageNet, and an "
                "unrelated source fell below no pretraining at all: how similar the source is decided whether "
                "transfer helped.")
    if closer_wins and not closer_loses:
        return (f"**Partly ({where}):** a closer source beat ImageNet, so similarity raised the gain"
                + ("." + far_text if untrained else "; but the unrelated source did not measurably hurt compared with "
                   "training from scratch, so dissimilarity alone did not make transfer negative here."))
    if closer_loses and not closer_wins:
        facts = _source_facts(sources, "in_domain")
        return (f"**No, not similarity alone ({where}):** no closer source beat ImageNet at any size, and at some sizes they "
                "fell below it. But the in-domain sources were pretrained on far fewer images than ImageNet's weights"
                + (f" (the one from random init: {facts})" if facts else "")
                + ": closeness changed together with the size and training of the source, so this shows that a small "
                "in-domain source did not match ImageNet, not that breadth beats closeness."
                + (far_text if untrained else " The unrelated source did hurt." if unrelated_hurts else ""))
    if unrelated_hurts:
        return (f"**Only at the far end ({where}):** the unrelated source fell below training from scratch, but the "
                "closer sources and ImageNet could not be told apart (or traded places across sizes): beyond "
                "\"related at all\", the study cannot show that more similarity helps more.")
    if unrelated_helps:
        return (f"**No ({where}):** the closer sources could not be told apart from ImageNet, and even the unrelated "
                "source beat no pretraining: on this evidence, pretraining on related *images* helped whatever their "
                "labels, and similarity of the source *task* did not decide.")
    return (f"**Not measurably ({where}):** no source's difference from ImageNet or from training from scratch that "
            "would show an effect of similarity excludes zero: with these seeds and sizes the study cannot say that "
            "similarity decides." + (far_text if untrained else ""))


def cli(P: SimpleNamespace, data: D.EuroSAT, plan_only: bool = False, log: Callable[[str], None] = print) -> None:
    """What ``python -m eurosat_lib study similarity`` does: print the plan, or run the study and print its answer.

    Args:
        P: The chapter's resolved parameters.
        data: The dataset.
        plan_only: Print the sources and target runs with their cost, and train nothing.
        log: Line printer.
    """
    if plan_only:
        log(plan_text(plan(P, data)))
        return
    study = run_study(P, data, progress=log)
    diffs = differences(study.table, study.sources)
    with pd.option_context("display.width", 220, "display.max_colwidth", 90):
        for arm in ("frozen", "finetune"):
            table = difference_table(diffs, arm)
            if len(table):
                log(f"\n{ARM_LABELS[arm]}:\n{table.to_string()}")
    log("\n" + answer(diffs, "frozen", study.sources))
