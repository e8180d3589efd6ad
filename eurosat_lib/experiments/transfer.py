"""Chapter 01 — when does reusing ImageNet features help?

Four studies, each returning a tidy ``pandas.DataFrame`` (one row per run, with its run folder):

* :func:`compare_from_scratch` — frozen ImageNet base + new head vs the same network from
  scratch vs a small CNN from scratch: same images, same number of epochs and batch size,
  scored on the test split (these are the chapter's final models).
* :func:`sweep_resolution`, :func:`sweep_preprocessing`, :func:`sweep_heads` — heads trained on
  cached frozen features (cheap), compared on the validation split only.

The probe runs are named by their configuration (size, preprocessing, head, seed), so the
sweeps share the runs they have in common and re-running the notebook reuses finished runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import models as M
from .. import training as T
from .core import ExperimentSpec, RunResult, run
from .params import (
    ChapterParams, at_least, backbone_kwargs, backbone_name, choice, interval, list_of, nonneg_int, optional, param,
    pos_int, pos_num, seeds_param, weights_param,
)  # fmt: skip
from .recipes import scratch_model_fn

NOTEBOOK = "01_transfer_learning"

#: ``ExperimentSpec.backbone`` of the small CNN (not a keras.applications backbone).
SMALL_CNN = "SmallCNN"

#: The three models of section 1, in the order they are shown.
COMPARE_MODELS = ("ImageNet features (frozen) + head", "same network, from scratch", "small CNN, from scratch")

#: What each preprocessing mode feeds the backbone (float 0-255 RGB in).
MODE_TEXT = {
    "tf": "x / 127.5 - 1 (range -1..1)",
    "caffe": "RGB->BGR, minus ImageNet mean (about -124..152)",
    "torch": "x / 255, then ImageNet mean/std",
    "none": "raw 0..255",
    "unit": "x / 255 (range 0..1)",
}


@dataclass(frozen=True)
class TransferParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 01's parameters (validators and per-profile defaults: :mod:`.params`)."""

    backbone: str = param(backbone_name, "the pretrained network studied", default="MobileNetV2")
    alpha: float | None = param(optional(pos_num), "MobileNet width multiplier", smoke=0.35, cpu=0.35, gpu=None)
    weights: str | None = weights_param()
    compare_image_size: int = param(pos_int, "input size of section 1 (all three models)", smoke=32, cpu=64, gpu=128)
    image_size: int = param(pos_int, "input size of sections 3 and 4", smoke=32, cpu=128, gpu=224)
    resolutions: list[int] = param(list_of(at_least(32), "input sizes (ints >= 32)"),
                                   "input sizes compared on frozen features in section 2",
                                   smoke=[32, 48], cpu=[64, 128, 224], gpu=[64, 128, 224])
    preprocessing_modes: list[str] = param(
        list_of(choice("auto", *M.PREPROCESSING_MODES), f"preprocessing modes from {['auto', *M.PREPROCESSING_MODES]}"),
        "input normalisations compared in section 3",
        smoke=["auto", "unit"], cpu=["auto", "unit", "caffe", "none"], gpu=["auto", "unit", "caffe", "none"],
    )
    heads: list[list[int]] = param(list_of(list_of(pos_int, "units", empty_ok=True), "hidden-layer lists, e.g. [[], [256], [512, 256]]"),
                                   "hidden layers of the heads compared in section 4",
                                   smoke=[[], [16]], cpu=[[], [256], [512, 256]], gpu=[[], [256], [512, 256]])
    head_dropout: float = param(interval(0, 1, closed="left", what="a dropout rate"), "dropout rate of every head", default=0.2)
    epochs: int = param(nonneg_int, "section 1 budget: epochs for every model", smoke=1, cpu=15, gpu=30)
    epochs_head: int = param(nonneg_int, "head epochs on cached features in sections 2 to 4", smoke=1, cpu=30, gpu=30)
    lr_head: float = param(pos_num, "learning rate of the heads", default=1e-3)
    lr_scratch: float = param(pos_num, "learning rate of the from-scratch runs", default=1e-3)
    batch_size: int = param(pos_int, "images per step", smoke=64, cpu=32, gpu=64)
    n_per_class: int | None = param(optional(pos_int), "training images per class", smoke=5, cpu=100, gpu=None)
    # Issue 12: comparisons on 1,000 validation images had a binomial standard error of ~1 point,
    # as large as the differences discussed; the whole split (5,400) costs seconds on cached features.
    val_n_per_class: int | None = param(optional(pos_int), "validation images per class scored (None: all 5,400)",
                                        smoke=3, cpu=None, gpu=None)
    monitor_n_per_class: int | None = param(optional(pos_int), "validation images per class section 1 scores after "
                                            "every epoch to keep its best epoch (None: all)", smoke=None, cpu=100, gpu=None)
    test_n_per_class: int | None = param(optional(pos_int), "test images per class scored in section 1",
                                         smoke=5, cpu=None, gpu=None)
    seeds: list[int] = seeds_param("seeds of section 1's three models", smoke=1, cpu=3, gpu=5)
    probe_seeds: list[int] = seeds_param("seeds of the cached-feature probes of sections 2-4 (seconds each)",
                                         smoke=1, cpu=5, gpu=5)


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmallCNNSpec(ExperimentSpec):
    """An :class:`ExperimentSpec` whose model is :func:`eurosat_lib.models.build_small_cnn`.

    ``backbone`` is :data:`SMALL_CNN`, which is not in the keras.applications registry, so the
    registry check is skipped; run it with ``model_fn=small_cnn_model``.
    """

    backbone: str = SMALL_CNN
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.backbone != SMALL_CNN:
            raise ValueError(f"SmallCNNSpec is for backbone={SMALL_CNN!r}; use ExperimentSpec for {self.backbone!r}")
        if not self.phases:
            raise ValueError(f"experiment {self.name!r} has no phases")
        if self.n_per_class is not None and self.train_fraction is not None:
            raise ValueError(f"experiment {self.name!r}: give n_per_class or train_fraction, not both")


def small_cnn_model(spec: ExperimentSpec, num_classes: int = 10):
    """``model_fn`` for :func:`run`: the small CNN a :class:`SmallCNNSpec` describes.

    Args:
        spec: A :class:`SmallCNNSpec`.
        num_classes: Classes of the output layer.

    Returns:
        The untrained Keras model.
    """
    return M.build_small_cnn(num_classes, augment=spec.augment, head=spec.head, seed=spec.seed,
                             bn_momentum=float(spec.tags.get("bn_momentum", M.SCRATCH_BN_MOMENTUM)))


def head_config(P: SimpleNamespace, dense_units: Sequence[int] = ()) -> M.HeadConfig:
    """The chapter's classification head with ``dense_units`` hidden layers (its dropout).

    Args:
        P: The chapter's parameters (``head_dropout``).
        dense_units: Units of each hidden layer (empty: a linear head).

    Returns:
        The head's configuration.
    """
    return M.HeadConfig(dense_units=tuple(dense_units), dropout=float(P.head_dropout))


def head_label(dense_units: Sequence[int]) -> str:
    """``"linear"`` for no hidden layer, else e.g. ``"512-256"``.

    Args:
        dense_units: Units of each hidden layer.

    Returns:
        The label.
    """
    return "-".join(str(u) for u in dense_units) if dense_units else "linear"


def _budget_phase(P: SimpleNamespace, name: str, lr: float, *, cached: bool) -> T.PhaseConfig:
    # Same epochs, batch size, schedule and selection rule for the three models of section 1:
    # the weights of the epoch with the lowest validation loss are kept (patience = all epochs,
    # so nothing stops early and every model gets the same number of updates).
    # The per-epoch choice watches a fixed subset (scoring 5,400 images after every epoch of the
    # from-scratch models would cost more than their training); the kept model is scored on all.
    return T.PhaseConfig(name, epochs=P.epochs, learning_rate=lr, batch_size=P.batch_size, schedule="cosine",
                         early_stopping=max(1, P.epochs), use_feature_cache=cached,
                         val_n_per_class=P.monitor_n_per_class)  # fmt: skip


def compare_specs(P: SimpleNamespace, seed: int) -> dict[str, ExperimentSpec]:
    """The three section-1 specs for one seed, keyed by :data:`COMPARE_MODELS` labels.

    Args:
        P: The chapter's parameters.
        seed: The seed of all three.

    Returns:
        Model label -> spec.
    """
    size = P.compare_image_size
    common = dict(seed=seed, n_per_class=P.n_per_class, val_n_per_class=P.val_n_per_class,
                  test_n_per_class=P.test_n_per_class, eval_splits=("val", "test"))  # fmt: skip
    bk = backbone_kwargs(P.backbone, P.alpha)
    frozen, scratch, cnn = COMPARE_MODELS
    tag = lambda model, init: {"chapter": NOTEBOOK, "study": "compare", "model": model, "init": init}  # noqa: E731
    return {
        frozen: ExperimentSpec(
            name=f"compare_frozen_{size}px_seed{seed}", backbone=P.backbone, backbone_kwargs=bk, weights=P.weights,
            image_size=size, head=head_config(P), phases=(_budget_phase(P, "head", P.lr_head, cached=True),),
            tags=tag(frozen, "imagenet" if P.weights else "random"), **common),
        scratch: ExperimentSpec(
            name=f"compare_scratch_{size}px_seed{seed}", backbone=P.backbone, backbone_kwargs=bk, weights=None,
            image_size=size, head=head_config(P), augment="flip",
            phases=(_budget_phase(P, "scratch", P.lr_scratch, cached=False),),
            tags={**tag(scratch, "random"), "bn_momentum": M.SCRATCH_BN_MOMENTUM}, **common),
        cnn: SmallCNNSpec(
            name=f"compare_smallcnn_seed{seed}", image_size=M.INPUT_SIZE, head=head_config(P), augment="flip",
            phases=(_budget_phase(P, "scratch", P.lr_scratch, cached=False),),
            tags={**tag(cnn, "random"), "bn_momentum": M.SCRATCH_BN_MOMENTUM}, **common),
    }  # fmt: skip


def probe_spec(
    P: SimpleNamespace, *, image_size: int, preprocessing: str = "auto", dense_units: Sequence[int] = (), seed: int = 0
) -> ExperimentSpec:
    """A head trained on cached features of the frozen ImageNet base, scored on validation.

    Args:
        P: The chapter's parameters.
        image_size: The input size the 64 px images are resized to.
        preprocessing: The input normalisation (``"auto"``: the backbone's own).
        dense_units: Hidden layers of the head.
        seed: The run's seed.

    Returns:
        The spec.
    """
    name = f"probe_{image_size}px_{preprocessing}_{head_label(dense_units)}_seed{seed}"
    return ExperimentSpec(
        name=name,
        backbone=P.backbone,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=P.weights,
        image_size=image_size,
        preprocessing=preprocessing,
        head=head_config(P, dense_units),
        phases=(T.PhaseConfig("head", epochs=P.epochs_head, learning_rate=P.lr_head, batch_size=P.batch_size,
                              early_stopping=5, use_feature_cache=True),),  # fmt: skip
        seed=seed,
        n_per_class=P.n_per_class,
        val_n_per_class=P.val_n_per_class,
        eval_splits=("val",),
        tags={"chapter": NOTEBOOK, "study": "probe"},
    )


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


def best_epoch(history: dict[str, list[float]]) -> int | None:
    """1-based epoch with the lowest validation loss (the weights a run keeps), or None.

    Args:
        history: A merged history (``val_loss`` per epoch).

    Returns:
        The epoch, or None without validation loss.
    """
    vl = [np.inf if v is None else v for v in history.get("val_loss", [])]
    return int(np.argmin(vl)) + 1 if vl else None


def run_row(res: RunResult, **extra: Any) -> dict[str, Any]:
    """One table row from a finished run: metrics, sizes, cost, the epoch kept.

    Args:
        res: The run.
        **extra: Labels to add to the row (e.g. ``model``, ``seed``).

    Returns:
        The row.
    """
    rec = res.record
    hist = rec["history"][-1]["history"] if rec.get("history") else {}
    metrics = rec.get("metrics") or {}
    params = (rec.get("model_info") or {}).get("params", {})
    timings = rec.get("timings") or {}
    phase = next(iter(timings.get("phases", {}).values()), {})
    return {
        **extra,
        "val_accuracy": metrics.get("val", {}).get("accuracy"),
        "val_macro_f1": metrics.get("val", {}).get("macro_f1"),
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "test_macro_f1": metrics.get("test", {}).get("macro_f1"),
        "train_accuracy": hist.get("accuracy", [np.nan])[-1] if hist.get("accuracy") else np.nan,
        "epochs_run": phase.get("epochs_run"),
        "best_epoch": best_epoch(hist),
        "total_params": params.get("total"),
        "trainable_params": params.get("trainable"),
        "fit_seconds": timings.get("fit_seconds"),
        "feature_seconds": phase.get("feature_seconds"),
        "train_size": (rec.get("extra") or {}).get("train_size"),
        "run": str(res.run_dir),
        "warnings": "; ".join(rec.get("warnings") or []),  # the run's sanity flags: figures circle them
    }


def epoch_curves(results: Sequence[tuple[dict[str, Any], RunResult]]) -> pd.DataFrame:
    """Tidy per-epoch history (``epoch``, ``accuracy``, ``val_accuracy``, ``val_loss``, ...) of runs.

    ``results`` pairs each run with the labels to attach (e.g. ``{"model": ..., "seed": 0}``).

    Args:
        results: ``(labels, run)`` pairs.

    Returns:
        One row per run and epoch.
    """
    rows = []
    for labels, res in results:
        for phase in res.record.get("history") or []:
            hist = phase["history"]
            n = len(next(iter(hist.values()), []))
            for i in range(n):
                rows.append({**labels, "phase": phase["name"], "epoch": i + 1, **{k: v[i] for k, v in hist.items()}})
    return pd.DataFrame(rows)


def record_curves(table: pd.DataFrame, labels: Sequence[str] = ("head", "seed")) -> pd.DataFrame:
    """Tidy per-epoch history of the runs a table names (its ``run`` column), read from their records.

    The sweeps return one row per run; their figures of training per epoch read the histories
    back from the records, so nothing is trained again.

    Args:
        table: One row per run, with ``run`` and the ``labels`` columns.
        labels: Columns copied onto every epoch of the run.

    Returns:
        One row per run and epoch (``epoch``, the labels, and every logged metric).
    """
    pairs = []
    for _, row in table.iterrows():
        record = json.loads((Path(row["run"]) / "record.json").read_text())
        pairs.append(({k: row[k] for k in labels}, SimpleNamespace(record=record)))
    return epoch_curves(pairs)


def mean_sd(df: pd.DataFrame, by: str | list[str], cols: Sequence[str] = ("val_accuracy",)) -> pd.DataFrame:
    """Mean, standard deviation and number of runs of ``cols`` per group (order kept).

    Args:
        df: One row per run.
        by: The grouping column(s).
        cols: The columns summarised.

    Returns:
        One row per group; columns ``(col, mean|std|count)``.
    """
    return df.groupby(by, sort=False)[list(cols)].agg(["mean", "std", "count"])


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------


def compare_from_scratch(P: SimpleNamespace, data: D.EuroSAT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Section 1: the three models for every seed. Returns ``(runs, per-epoch curves)``.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        One row per model and seed, and their per-epoch curves.
    """
    rows, pairs = [], []
    for seed in P.seeds:
        for model, spec in compare_specs(P, seed).items():
            if isinstance(spec, SmallCNNSpec):
                kw = {"model_fn": lambda s: small_cnn_model(s, data.num_classes)}
            elif spec.weights is None:
                kw = {"model_fn": scratch_model_fn(data.num_classes)}  # BatchNorm momentum from the tags
            else:
                kw = {}
            # phase weights are kept (nothing reloads these); the chapter compares training times,
            # so every run pays for its own feature extraction
            res = run(P, spec, data, save_model=False, reuse_features=False, **kw)
            labels = {"model": model, "seed": seed}
            rows.append(run_row(res, **labels, init=spec.tags["init"], image_size=spec.image_size))
            pairs.append((labels, res))
    return pd.DataFrame(rows), epoch_curves(pairs)


def _probe(P: SimpleNamespace, data: D.EuroSAT, **kw: Any) -> dict[str, Any]:
    res = run(P, probe_spec(P, **kw), data, save_model=False)
    return run_row(res, **kw, head=head_label(kw.get("dense_units", ())))


def sweep_resolution(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 2: linear probes on frozen features at each input size (validation).

    Args:
        P: The chapter's parameters (``resolutions``).
        data: The dataset.

    Returns:
        One row per input size and seed (with the feature-extraction seconds).
    """
    rows = [_probe(P, data, image_size=s, seed=seed) for s in P.resolutions for seed in P.probe_seeds]
    return pd.DataFrame(rows).drop(columns=["dense_units"], errors="ignore")


def sweep_preprocessing(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 3: linear probes with each input normalisation at ``P.image_size`` (validation).

    Args:
        P: The chapter's parameters (``preprocessing_modes``).
        data: The dataset.

    Returns:
        One row per mode and seed; ``correct`` marks the backbone's own mode.
    """
    expected = M.get_backbone_spec(P.backbone).preprocessing
    rows = []
    for mode in P.preprocessing_modes:
        actual = expected if mode == "auto" else mode
        for seed in P.probe_seeds:
            row = _probe(P, data, image_size=P.image_size, preprocessing=mode, seed=seed)
            row.update(mode=actual, correct=actual == expected,
                       label=f"{actual}{' (correct)' if actual == expected else ''}", feeds=MODE_TEXT[actual])  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows).drop(columns=["dense_units"], errors="ignore")


def sweep_heads(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 4: heads with 0, 1 or 2 hidden layers on the same frozen features (validation).

    Args:
        P: The chapter's parameters (``heads``).
        data: The dataset.

    Returns:
        One row per head and seed.
    """
    rows = [_probe(P, data, image_size=P.image_size, dense_units=tuple(h), seed=seed) for h in P.heads for seed in P.probe_seeds]
    return pd.DataFrame(rows).drop(columns=["dense_units"], errors="ignore")


def preprocessing_ranges(images: np.ndarray, backbone: str, modes: Sequence[str]) -> pd.DataFrame:
    """What the backbone receives under each mode: min, max, mean and sd of the inputs.

    Args:
        images: Sample uint8 images.
        backbone: A registry backbone name.
        modes: The modes to compare.

    Returns:
        One row per mode (indexed by mode): whether it is the backbone's own, what it feeds,
        and the inputs' min, max, mean and sd.
    """
    import keras

    expected = M.get_backbone_spec(backbone).preprocessing
    x = np.asarray(images, dtype=np.float32)
    rows = []
    for mode in modes:
        actual = expected if mode == "auto" else mode
        y = keras.ops.convert_to_numpy(M.Preprocess(actual)(x))
        rows.append({"mode": actual, "correct": actual == expected, "feeds": MODE_TEXT[actual],
                     "min": float(y.min()), "max": float(y.max()), "mean": float(y.mean()), "sd": float(y.std())})  # fmt: skip
    return pd.DataFrame(rows).drop_duplicates("mode").set_index("mode")


def paired_gap(df: pd.DataFrame, by: str, a: Any, b: Any, metric: str = "val_accuracy") -> pd.Series:
    """Per-seed ``metric[a] - metric[b]`` (runs of the same seed share their training images).

    Args:
        df: One row per run (``seed``, ``by``, ``metric``).
        by: The grouping column.
        a: Group a's key.
        b: Group b's key.
        metric: The compared column.

    Returns:
        The differences, indexed by the seeds both groups have.
    """
    wide = df.pivot_table(index="seed", columns=by, values=metric, aggfunc="mean")
    return (wide[a] - wide[b]).dropna()
