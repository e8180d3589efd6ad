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

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import models as M
from .. import training as T
from .core import ExperimentSpec, RunResult, run
from .params import _is_int, _is_num, _pos_int, _pos_num, backbone_kwargs, register_notebook_params
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


def _sizes(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and v and all(_is_int(s) and s >= 32 for s in v)
    return None if ok else "must be a non-empty list of input sizes (ints >= 32)"


def _modes(v: Any) -> str | None:
    allowed = ("auto",) + M.PREPROCESSING_MODES
    ok = isinstance(v, (list, tuple)) and v and all(m in allowed for m in v)
    return None if ok else f"must be a non-empty list of preprocessing modes from {list(allowed)}"


def _heads(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and v and all(
        isinstance(h, (list, tuple)) and all(_is_int(u) and u > 0 for u in h) for h in v
    )
    return None if ok else "must be a non-empty list of hidden-layer lists, e.g. [[], [256], [512, 256]]"


def _dropout(v: Any) -> str | None:
    return None if _is_num(v) and 0 <= v < 1 else "must be a dropout rate in [0, 1)"


register_notebook_params(
    NOTEBOOK,
    {
        "compare_image_size": (_pos_int, "input size of the section-1 comparison (all three models)"),
        "lr_scratch": (_pos_num, "learning rate of the from-scratch runs"),
        "resolutions": (_sizes, "input sizes the 64 px images are resized to for frozen features"),
        "preprocessing_modes": (_modes, "input normalisations compared on frozen features"),
        "heads": (_heads, "hidden layers of the heads compared on frozen features"),
        "head_dropout": (_dropout, "dropout rate of every head"),
        "val_n_per_class": (_pos_int, "validation images per class used for comparisons"),
    },
    {
        "smoke": dict(n_per_class=5, val_n_per_class=3, test_n_per_class=5, compare_image_size=32, image_size=32,
                      resolutions=[32, 48], preprocessing_modes=["auto", "unit"], heads=[[], [16]],
                      head_dropout=0.2, epochs=1, epochs_head=1, lr_head=1e-3, lr_scratch=1e-3, batch_size=64, seeds=1),
        "cpu": dict(n_per_class=100, val_n_per_class=100, test_n_per_class=None, compare_image_size=64, image_size=128,
                    resolutions=[64, 128, 224], preprocessing_modes=["auto", "unit", "caffe", "none"],
                    heads=[[], [256], [512, 256]], head_dropout=0.2, epochs=15, epochs_head=30, lr_head=1e-3,
                    lr_scratch=1e-3, batch_size=32, seeds=2),
        "gpu": dict(n_per_class=None, val_n_per_class=None, test_n_per_class=None, compare_image_size=128, image_size=224,
                    resolutions=[64, 128, 224], preprocessing_modes=["auto", "unit", "caffe", "none"],
                    heads=[[], [256], [512, 256]], head_dropout=0.2, epochs=30, epochs_head=30, lr_head=1e-3,
                    lr_scratch=1e-3, batch_size=64, seeds=5),
    },  # fmt: skip
)


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
    """``model_fn`` for :func:`run`: the small CNN a :class:`SmallCNNSpec` describes."""
    return M.build_small_cnn(num_classes, augment=spec.augment, head=spec.head, seed=spec.seed,
                             bn_momentum=float(spec.tags.get("bn_momentum", M.SCRATCH_BN_MOMENTUM)))


def head_config(P: SimpleNamespace, dense_units: Sequence[int] = ()) -> M.HeadConfig:
    return M.HeadConfig(dense_units=tuple(dense_units), dropout=float(P.head_dropout))


def head_label(dense_units: Sequence[int]) -> str:
    """``"linear"`` for no hidden layer, else e.g. ``"512-256"``."""
    return "-".join(str(u) for u in dense_units) if dense_units else "linear"


def _budget_phase(P: SimpleNamespace, name: str, lr: float, *, cached: bool) -> T.PhaseConfig:
    # Same epochs, batch size, schedule and selection rule for the three models of section 1:
    # the weights of the epoch with the lowest validation loss are kept (patience = all epochs,
    # so nothing stops early and every model gets the same number of updates).
    return T.PhaseConfig(name, epochs=P.epochs, learning_rate=lr, batch_size=P.batch_size, schedule="cosine",
                         early_stopping=max(1, P.epochs), use_feature_cache=cached)  # fmt: skip


def compare_specs(P: SimpleNamespace, seed: int) -> dict[str, ExperimentSpec]:
    """The three section-1 specs for one seed, keyed by :data:`COMPARE_MODELS` labels."""
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
    """A head trained on cached features of the frozen ImageNet base, scored on validation."""
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
    """1-based epoch with the lowest validation loss (the weights a run keeps), or None."""
    vl = [np.inf if v is None else v for v in history.get("val_loss", [])]
    return int(np.argmin(vl)) + 1 if vl else None


def run_row(res: RunResult, **extra: Any) -> dict[str, Any]:
    """One table row from a finished run: metrics, sizes, cost, the epoch kept."""
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
    }


def epoch_curves(results: Sequence[tuple[dict[str, Any], RunResult]]) -> pd.DataFrame:
    """Tidy per-epoch history (``epoch``, ``accuracy``, ``val_accuracy``, ``val_loss``, ...) of runs.

    ``results`` pairs each run with the labels to attach (e.g. ``{"model": ..., "seed": 0}``).
    """
    rows = []
    for labels, res in results:
        for phase in res.record.get("history") or []:
            hist = phase["history"]
            n = len(next(iter(hist.values()), []))
            for i in range(n):
                rows.append({**labels, "phase": phase["name"], "epoch": i + 1, **{k: v[i] for k, v in hist.items()}})
    return pd.DataFrame(rows)


def mean_sd(df: pd.DataFrame, by: str | list[str], cols: Sequence[str] = ("val_accuracy",)) -> pd.DataFrame:
    """Mean, standard deviation and number of runs of ``cols`` per group (order kept)."""
    return df.groupby(by, sort=False)[list(cols)].agg(["mean", "std", "count"])


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------


def compare_from_scratch(P: SimpleNamespace, data: D.EuroSAT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Section 1: the three models for every seed. Returns ``(runs, per-epoch curves)``."""
    rows, pairs = [], []
    for seed in P.seeds:
        for model, spec in compare_specs(P, seed).items():
            if isinstance(spec, SmallCNNSpec):
                kw = {"model_fn": lambda s: small_cnn_model(s, data.num_classes)}
            elif spec.weights is None:
                kw = {"model_fn": scratch_model_fn(data.num_classes)}  # BatchNorm momentum from the tags
            else:
                kw = {}
            res = run(P, spec, data, save_model=False, **kw)  # phase weights are kept; nothing reloads these
            labels = {"model": model, "seed": seed}
            rows.append(run_row(res, **labels, init=spec.tags["init"], image_size=spec.image_size))
            pairs.append((labels, res))
    return pd.DataFrame(rows), epoch_curves(pairs)


def _probe(P: SimpleNamespace, data: D.EuroSAT, **kw: Any) -> dict[str, Any]:
    res = run(P, probe_spec(P, **kw), data, save_model=False)
    return run_row(res, **kw, head=head_label(kw.get("dense_units", ())))


def sweep_resolution(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 2: linear probes on frozen features at each input size (validation)."""
    rows = [_probe(P, data, image_size=s, seed=seed) for s in P.resolutions for seed in P.seeds]
    return pd.DataFrame(rows).drop(columns=["dense_units"], errors="ignore")


def sweep_preprocessing(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 3: linear probes with each input normalisation at ``P.image_size`` (validation)."""
    expected = M.get_backbone_spec(P.backbone).preprocessing
    rows = []
    for mode in P.preprocessing_modes:
        actual = expected if mode == "auto" else mode
        for seed in P.seeds:
            row = _probe(P, data, image_size=P.image_size, preprocessing=mode, seed=seed)
            row.update(mode=actual, correct=actual == expected,
                       label=f"{actual}{' (correct)' if actual == expected else ''}", feeds=MODE_TEXT[actual])  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows).drop(columns=["dense_units"], errors="ignore")


def sweep_heads(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 4: heads with 0, 1 or 2 hidden layers on the same frozen features (validation)."""
    rows = [_probe(P, data, image_size=P.image_size, dense_units=tuple(h), seed=seed) for h in P.heads for seed in P.seeds]
    return pd.DataFrame(rows).drop(columns=["dense_units"], errors="ignore")


def preprocessing_ranges(images: np.ndarray, backbone: str, modes: Sequence[str]) -> pd.DataFrame:
    """What the backbone receives under each mode: min, max, mean and sd of the inputs."""
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
    """Per-seed ``metric[a] - metric[b]`` (runs of the same seed share their training images)."""
    wide = df.pivot_table(index="seed", columns=by, values=metric, aggfunc="mean")
    return (wide[a] - wide[b]).dropna()
