"""Chapter 04 — small data, big models: spotting overfitting, and why the test set must be honest.

Studies (each returns tidy :class:`pandas.DataFrame` rows, runs are run folders under ``P.out_dir``):

* :func:`overfit_pair` — a big network trained from scratch vs a frozen ImageNet base + head on
  the same small subset: learning curves and train/validation/test accuracy gaps.
* :func:`fraction_curve` — frozen features + head on nested subsets of a training pool
  (each smaller subset inside the larger one), several seeds; optional fine-tuning points.
* :func:`regularisation_study` — augmentation, dropout and early stopping at small n.
* :func:`good_model` — the two-phase recipe on the whole training pool, scored on the full test split.
* :func:`selection_leak`, :func:`test_set_scenarios` — what a leaky or unrepresentative
  evaluation would have reported, against the honest number.

Heads on cached features (:func:`feature_head_run`) train through the same
:func:`eurosat_lib.training.fit_phase` as every other run, on a feature matrix instead of images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import evaluation as E
from .. import models as M
from .. import training as T
from .._io import write_json_atomic
from . import crossover as CX
from .core import (
    ExperimentSpec, RunResult, accelerator_for, checkpoints_for, data_identity, eval_split, predict, run, train_subset,
)
from .params import (
    ChapterParams, backbone_kwargs, backbone_name, choice, fraction, int_list, list_of, nonneg_int, optional, param,
    pos_int, pos_num, satisfies, seeds_param, weights_param,
)  # fmt: skip
from .recipes import model_fields, scratch_model_fn, two_phases

NOTEBOOK = "04_overfitting"

#: The regularisation configurations of section 3: (augmentation, head dropout, early stopping).
REG_CONFIGS: dict[str, tuple[bool, bool, bool]] = {
    "none": (False, False, False),
    "augmentation": (True, False, False),
    "dropout": (False, True, False),
    "early stopping": (False, False, True),
    "all three": (True, True, True),
}


@dataclass(frozen=True)
class OverfittingParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 04's parameters (validators and per-profile defaults: :mod:`.params`)."""

    backbone: str = param(backbone_name, "backbone of every model", default="MobileNetV2")
    alpha: float | None = param(optional(pos_num), "width of the pretrained MobileNetV2", smoke=0.35, cpu=0.35, gpu=None)
    big_alpha: float = param(pos_num, "width of the MobileNetV2 trained from scratch in section 1", smoke=0.35, cpu=0.35, gpu=1.0)
    weights: str | None = weights_param()
    image_size: int = param(pos_int, "input size the 64 px images are resized to", smoke=64, cpu=64, gpu=128)
    n_small: int = param(pos_int, "training images per class in sections 1 and 5", smoke=3, cpu=50, gpu=50)
    epochs: int = param(nonneg_int, "epochs of section 1", smoke=1, cpu=20, gpu=60)
    lr_scratch: float = param(pos_num, "learning rate of the from-scratch model", default=1e-3)
    lr_head: float = param(pos_num, "learning rate of the head phase", default=1e-3)
    lr_finetune: float = param(pos_num, "learning rate of the fine-tuning phase", default=1e-4)
    epochs_head: int = param(nonneg_int, "epochs of head training on the frozen base", smoke=2, cpu=20, gpu=30)
    epochs_finetune: int = param(nonneg_int, "epochs of fine-tuning", smoke=1, cpu=1, gpu=5)
    batch_size: int = param(pos_int, "images per step", smoke=64, cpu=32, gpu=64)
    pool_n_per_class: int | None = param(optional(pos_int), "training pool per class for sections 2 and 4",
                                         smoke=6, cpu=None, gpu=None)
    fractions: list[float] = param(list_of(fraction, "fractions in (0, 1]"), "fractions of the pool in the nested-subset curve",
                                   smoke=[0.5, 1.0], cpu=[0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0],
                                   gpu=[0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0])
    finetune_fractions: list[float] = param(list_of(fraction, "fractions in (0, 1]", empty_ok=True),
                                            "fractions that also get a fine-tuned point, may be empty",
                                            smoke=[0.5], cpu=[], gpu=[0.01, 0.05, 0.25, 1.0])
    reg_n: int = param(pos_int, "training images per class in section 3", smoke=3, cpu=20, gpu=20)
    reg_configs: list[str] = param(
        satisfies(lambda v: list_of(choice(*REG_CONFIGS), "", distinct=True)(v) is None and "none" in v,
                  f"must be a list of distinct names from {list(REG_CONFIGS)} that includes 'none' (the baseline)"),
        "regularisation configurations in section 3 ('none' is the baseline)",
        # the smoke baseline and all three together run every code path (augmented images
        # through the frozen base, dropout, early stopping) in two runs instead of five
        smoke=["none", "all three"], cpu=list(REG_CONFIGS), gpu=list(REG_CONFIGS),
    )
    reg_epochs: int = param(pos_int, "epochs of the regularisation runs", smoke=2, cpu=30, gpu=60)
    reg_hidden: int = param(pos_int, "hidden units of the head in section 3", smoke=16, cpu=256, gpu=512)
    reg_dropout: float = param(fraction, "dropout rate of the 'dropout' configurations", default=0.5)
    patience: int = param(pos_int, "early-stopping patience in epochs (on validation loss)", smoke=1, cpu=5, gpu=8)
    n_configs: int = param(pos_int, "configurations in the selection-on-test demonstration", smoke=3, cpu=20, gpu=40)
    test_sizes: list[int] = param(int_list, "test images per class of the small test sets in section 5",
                                  smoke=[2], cpu=[5, 20, 100], gpu=[5, 20, 100])
    n_draws: int = param(pos_int, "random test sets drawn per scenario", smoke=50, cpu=2000, gpu=5000)
    seeds: list[int] = seeds_param("seeds of the trained models (sections 1, 4, and 3 with augmentation)",
                                   smoke=1, cpu=3, gpu=5)
    # Issue 12: an arm that costs under a minute gets >= 5 seeds.
    curve_seeds: list[int] = seeds_param("seeds of heads on cached features: section 2, and section 3 without "
                                         "augmentation (seconds each)", smoke=1, cpu=5, gpu=5)
    # Issue 12: 300 validation images (binomial SE ~2 points) could not carry the chapter's comparisons.
    val_n_per_class: int | None = param(optional(pos_int), "validation images per class scored (None: all 5,400)",
                                        smoke=2, cpu=None, gpu=None)
    monitor_n_per_class: int | None = param(optional(pos_int), "validation images per class watched after every epoch "
                                            "of models that do not train on cached features (None: all)",
                                            smoke=None, cpu=30, gpu=None)
    test_n_per_class: int | None = param(optional(pos_int), "test images per class",
                                         smoke=6, cpu=None, gpu=None)


# --------------------------------------------------------------------------------------------
# Pure helpers: accuracy on subsets, selection leak, test-set scenarios
# --------------------------------------------------------------------------------------------


def stratified_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, stratified halves of a split (indices): the "test set" and fresh data like it.

    Args:
        labels: Class index per image of the split.
        seed: The generator's seed.

    Returns:
        The two halves' positions into ``labels``.
    """
    labels = np.asarray(labels)
    a, b = [], []
    for c in np.unique(labels):
        idx = np.random.default_rng([seed, int(c)]).permutation(np.flatnonzero(labels == c))
        a.append(idx[: len(idx) // 2])
        b.append(idx[len(idx) // 2 :])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def selection_leak(
    val_acc: Sequence[float], correct: np.ndarray, labels: np.ndarray, test_sizes: Sequence[int | None], seed: int = 0,
    n_draws: int = 1,
) -> pd.DataFrame:
    """What "pick the best of K configurations on the test set" reports, vs picking on validation.

    ``correct`` is ``(K, N)``: per configuration, which test images it got right. The test split
    is cut into two stratified halves: the *reported* half (shrunk to ``test_size`` images per
    class, ``None`` = the whole half) and a *fresh* half standing in for new data. Per size:

    * ``leaky_reported`` — the best configuration's accuracy on the half it was chosen on;
    * ``leaky_fresh`` — the same configuration on fresh data (what it really delivers);
    * ``honest_reported`` / ``honest_fresh`` — the configuration chosen on validation.

    One cut of the split gives one small test set, whose own sampling noise (a standard error of
    about 5 points at 50 images) can move the optimism more than the selection does. So the cut
    and the small test set are drawn ``n_draws`` times (from the saved per-image correctness: no
    training) and each column is the mean over draws; ``optimism_low`` / ``optimism_high`` are the
    2.5th and 97.5th percentiles of the single draws' optimism. Draw 0 is the single cut of
    ``seed`` (what ``n_draws=1`` gives).

    Args:
        val_acc: Each configuration's validation accuracy.
        correct: ``(K, N)`` booleans, as above.
        labels: The test images' classes.
        test_sizes: Images per class of the reported half (None: the whole half).
        seed: How the test split is halved (draw ``d`` uses ``seed + d``).
        n_draws: Cuts of the test split drawn.

    Returns:
        One row per size: ``test_images``, the four accuracies, ``optimism`` (means over draws),
        ``optimism_low``, ``optimism_high``, ``draws`` and ``configs``.

    Raises:
        ValueError: ``correct`` is not ``(len(val_acc), N)``, or ``n_draws`` < 1.
    """
    correct = np.asarray(correct, dtype=bool)
    val_acc = np.asarray(val_acc, dtype=float)
    if correct.ndim != 2 or correct.shape[0] != len(val_acc):
        raise ValueError(f"correct must be (K, N) with K = len(val_acc) = {len(val_acc)}; got shape {correct.shape}")
    if int(n_draws) < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    labels = np.asarray(labels)
    k_val = int(np.argmax(val_acc))
    draws: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(test_sizes))}
    for d in range(int(n_draws)):
        half_a, half_b = stratified_halves(labels, seed + d)
        fresh = correct[:, half_b].mean(axis=1)
        for i, size in enumerate(test_sizes):
            if size is None:
                pick = half_a
            else:
                pick = half_a[D.subset_indices(labels[half_a], n_per_class=int(size), seed=seed + d)]
            reported = correct[:, pick].mean(axis=1)
            k_test = int(np.argmax(reported))
            draws[i].append({
                "test_images": len(pick),
                "leaky_reported": reported[k_test],
                "leaky_fresh": fresh[k_test],
                "honest_reported": reported[k_val],
                "honest_fresh": fresh[k_val],
                "optimism": reported[k_test] - fresh[k_test],
            })  # fmt: skip
    rows = []
    for i in range(len(test_sizes)):
        t = pd.DataFrame(draws[i])
        row = {c: float(t[c].mean()) for c in ("leaky_reported", "leaky_fresh", "honest_reported", "honest_fresh", "optimism")}
        rows.append({"test_images": int(t["test_images"].iloc[0]), **row,
                     "optimism_low": float(t["optimism"].quantile(0.025)), "optimism_high": float(t["optimism"].quantile(0.975)),
                     "draws": len(t), "configs": len(val_acc)})  # fmt: skip
    return pd.DataFrame(rows)


def test_set_scenarios(
    labels: np.ndarray, correct: np.ndarray, sizes: Sequence[int], n_draws: int = 1000, skew_alpha: float = 0.5,
    skew_size: int = 500, seed: int = 0, num_classes: int = 10,
) -> pd.DataFrame:
    """Accuracy a model would be credited with on smaller or skewed test sets, drawn from the real one.

    Scenarios (``n_draws`` each, one row per draw):

    * ``random <m>`` — ``m`` test images drawn at random, not stratified (a quick, small test set);
    * ``stratified <m>`` — ``m`` images with the classes in their true proportions;
    * ``class-skewed <skew_size>`` — class proportions from a Dirichlet(``skew_alpha``) draw: a test
      set collected somewhere whose land-cover mix differs from the real distribution.

    Args:
        labels: The test images' classes.
        correct: Whether the model got each test image right.
        sizes: The test-set sizes ``m`` drawn.
        n_draws: Draws per scenario.
        skew_alpha: The Dirichlet concentration of the skewed class mix.
        skew_size: Images per skewed test set.
        seed: The generator's seed.
        num_classes: Classes.

    Returns:
        One row per draw: ``scenario``, ``size``, ``draw`` and ``accuracy``.

    Raises:
        ValueError: ``labels`` and ``correct`` differ in shape.
    """
    labels = np.asarray(labels)
    correct = np.asarray(correct, dtype=float)
    if labels.shape != correct.shape:
        raise ValueError(f"labels and correct must have the same shape; got {labels.shape} and {correct.shape}")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    share = np.array([len(i) for i in by_class], dtype=float) / len(labels)
    rows = []
    for m in sizes:
        m = int(min(m, len(labels)))
        for d in range(n_draws):
            rows.append({"scenario": f"random {m}", "size": m, "draw": d, "accuracy": correct[rng.choice(len(labels), m, replace=False)].mean()})
        counts = _apportion(share, m)
        for d in range(n_draws):
            pick = np.concatenate([rng.choice(i, min(k, len(i)), replace=False) for i, k in zip(by_class, counts) if k > 0])
            rows.append({"scenario": f"stratified {m}", "size": m, "draw": d, "accuracy": correct[pick].mean()})
    present = [c for c in range(num_classes) if len(by_class[c])]
    for d in range(n_draws):
        mix = rng.dirichlet(np.full(len(present), skew_alpha))
        counts = rng.multinomial(skew_size, mix)
        pick = np.concatenate([rng.choice(by_class[c], k, replace=True) for c, k in zip(present, counts) if k > 0])
        rows.append({"scenario": f"class-skewed {skew_size}", "size": skew_size, "draw": d, "accuracy": correct[pick].mean()})
    return pd.DataFrame(rows)


def _apportion(share: np.ndarray, m: int) -> np.ndarray:
    """Integer counts summing to ``m`` in proportion to ``share`` (largest remainders)."""
    raw = share / share.sum() * m
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: m - counts.sum()]:
        counts[i] += 1
    return counts


def spread_table(scen: pd.DataFrame, honest: float) -> pd.DataFrame:
    """Per scenario: median, 5th and 95th percentile, and how often it misses ``honest`` by > 2 points.

    Args:
        scen: :func:`test_set_scenarios`'s draws.
        honest: The accuracy on the whole test split.

    Returns:
        One row per scenario (indexed by scenario).
    """
    g = scen.groupby("scenario", sort=False)["accuracy"]
    out = pd.DataFrame({
        "median": g.median(),
        "p5": g.quantile(0.05),
        "p95": g.quantile(0.95),
        "off_by_more_than_2_points": g.apply(lambda a: float((np.abs(a - honest) > 0.02).mean())),
    })  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Heads on cached features, as run folders
# --------------------------------------------------------------------------------------------


def _as_dataset(x: np.ndarray, y: np.ndarray) -> D.EuroSAT:
    """A feature matrix dressed as a dataset so :func:`training.fit_phase` can batch it."""
    return D.EuroSAT(images=x, labels=np.asarray(y), file_ids=np.arange(len(y)).astype(str), source="features")


def build_head(dim: int, hidden: Sequence[int] = (), dropout: float = 0.0, num_classes: int = 10, name: str = "head"):
    """The classification head alone, on ``dim``-dimensional pooled features (same layers as ``build_model``).

    Args:
        dim: The features' size.
        hidden: Units of each hidden layer.
        dropout: Dropout before each dense layer.
        num_classes: Classes.
        name: The model's name.

    Returns:
        The untrained Keras model.
    """
    return M.build_head(dim, M.HeadConfig(dense_units=tuple(hidden), dropout=dropout), num_classes, name)


def feature_head_run(
    P: SimpleNamespace,
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    evals: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    phase: T.PhaseConfig,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    inputs_key: str,
    seed: int = 0,
    tags: Mapping[str, Any] | None = None,
    keep: Sequence[str] = ("test",),
) -> dict[str, Any]:
    """Train a head on cached features into ``P.out_dir/<name>`` and score it on ``evals``.

    ``evals`` maps split names to ``(features, labels)``; ``"val"`` (if given) is monitored during
    training. Returns ``{"record": ..., "predictions": {split: y_prob}}`` for the splits in
    ``keep`` (saved as ``predictions.npz``). A finished run with the same configuration is reused.

    The run is keyed on ``inputs_key`` (where the features come from, e.g.
    :meth:`FeatureBank.inputs_key`), not on the features' bits: the same extractor on another CPU
    or oneDNN path yields features that differ in the last bits, and keying on those retrained
    every head (and moved the chapter's numbers) whenever the features were recomputed.

    Args:
        P: The chapter's parameters (``out_dir``).
        name: The run folder's name.
        train: Training ``(features, labels)``.
        evals: Split name -> ``(features, labels)``.
        phase: The training phase.
        hidden: Hidden layers of the head.
        dropout: Dropout of the head.
        inputs_key: Where ``train`` and ``evals`` come from (extractor, data and image indices).
        seed: The run's seed.
        tags: Labels stored with the run's parameters.
        keep: Splits whose predictions are kept.

    Returns:
        The record and the kept predictions.

    Raises:
        ValueError: ``inputs_key`` is empty.
    """
    run_dir = Path(P.out_dir) / name
    x_tr, y_tr = train
    if not inputs_key:
        raise ValueError(f"feature_head_run({name!r}): inputs_key is empty; pass FeatureBank.inputs_key(indices)")
    params = {
        "kind": "feature_head", "name": name, "phase": phase.to_dict(), "hidden": list(hidden), "dropout": dropout,
        "seed": seed, "tags": dict(tags or {}), "inputs_key": inputs_key,
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
    params["spec_key"] = key
    from .. import runs as R  # the run-folder owner (imported here: this module's imports belong to others)
    from .._io import atomic_path

    pred_path = run_dir / "predictions.npz"
    made: dict[str, np.ndarray] = {}

    def produce(folder: Path) -> R.RunRecord:
        T.set_seed(seed)
        head = build_head(x_tr.shape[1], hidden, dropout)
        val = _as_dataset(*evals["val"]) if "val" in evals else None
        acc = accelerator_for(P.profile)
        res = T.fit_phase(head, _as_dataset(x_tr, y_tr), val, phase, seed=seed, run_dir=folder, accelerator=acc, tensorboard=False,
                          checkpoints=checkpoints_for(P.profile))
        metrics = {}
        for split, (x, y) in evals.items():
            p = T.predict_batches(head, x, batch_size=1024, eager=True if acc.run_eagerly else None)
            metrics[split] = E.evaluate_predictions(y, p)
            if split in keep:
                made[split] = p
        with atomic_path(pred_path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **made)
        return R.RunRecord(
            params=params, metrics=metrics, history=[{"name": res.name, "history": res.history}],
            timings={"fit_seconds": res.seconds}, model_info={"params": M.count_params(head)},
            extra={"train_size": int(len(y_tr))},
        )  # fmt: skip

    # Reused only with its predictions: a later step reads them, and they are never committed.
    record = R.reuse_or_run(run_dir, params, produce, needs=[pred_path.name])
    if not made:
        with np.load(pred_path) as z:
            made = {k: z[k] for k in z.files}
    return {"record": record, "predictions": made}


class FeatureBank:
    """Pooled features of the frozen pretrained base for the pool, validation and test images (disk-cached)."""

    def __init__(self, P: SimpleNamespace, data: D.EuroSAT):
        self.P = P
        self.pool = training_pool(P, data)
        self.val = data.get_split("val", n_per_class=P.val_n_per_class, seed=0)
        self.test = data.get_split("test", n_per_class=P.test_n_per_class, seed=0)
        model = M.build_model(P.backbone, weights=P.weights, image_size=P.image_size, backbone_kwargs=backbone_kwargs(P.backbone, P.alpha))
        self.extractor, _ = M.split_feature_extractor(model)
        eager = accelerator_for(P.profile).run_eagerly
        self.x_pool = T.extract_features(self.extractor, self.pool.images, desc="pool features", eager=eager)
        self.x_val = T.extract_features(self.extractor, self.val.images, desc="val features", eager=eager)
        self.x_test = T.extract_features(self.extractor, self.test.images, desc="test features", eager=eager)
        self.source = {
            # Layer names carry per-session counters, so the extractor is named by its shape, not its JSON.
            "backbone": P.backbone, "weights": P.weights, "image_size": P.image_size, "alpha": P.alpha,
            "extractor": {"params": M.count_params(self.extractor), "features": int(self.x_pool.shape[1])},
            "data": data_identity(data),
            "images": {k: _ids_digest(s) for k, s in (("pool", self.pool), ("val", self.val), ("test", self.test))},
        }  # fmt: skip

    def inputs_key(self, idx: np.ndarray) -> str:
        """The key of a head run on the pool images ``idx`` scored on this bank's validation and test.

        It names the features' provenance (extractor, data, which images), so recomputed features
        whose last bits differ still find their runs.

        Args:
            idx: Indices into the pool.

        Returns:
            A 16-hex-digit key.
        """
        sel = hashlib.sha256(np.ascontiguousarray(np.asarray(idx, dtype=np.int64))).hexdigest()
        return hashlib.sha256(json.dumps({**self.source, "train_indices": sel}, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def evals(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The validation and test features with their labels, as :func:`feature_head_run` takes them.

        Returns:
            ``{"val": (features, labels), "test": (features, labels)}``.
        """
        return {"val": (self.x_val, self.val.labels), "test": (self.x_test, self.test.labels)}


def _ids_digest(part: D.EuroSAT) -> str:
    """Digest of a split's image ids and labels, in order (which images, not their pixels)."""
    h = hashlib.sha256("\n".join(map(str, part.file_ids)).encode())
    h.update(np.ascontiguousarray(np.asarray(part.labels, dtype=np.int64)))
    return h.hexdigest()[:16]


def training_pool(P: SimpleNamespace, data: D.EuroSAT) -> D.EuroSAT:
    """The training images sections 2 and 4 draw from: the training split, or a fixed stratified part of it.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        The pool.
    """
    return data.get_split("train", n_per_class=P.pool_n_per_class, seed=0)


# --------------------------------------------------------------------------------------------
# Section 1: a big model from scratch vs a frozen pretrained base, on a small subset
# --------------------------------------------------------------------------------------------


def _small_common(P: SimpleNamespace, name: str, seed: int, **tags: Any) -> dict[str, Any]:
    return dict(
        name=name, backbone=P.backbone, seed=seed, n_per_class=P.n_small, val_n_per_class=P.val_n_per_class,
        test_n_per_class=P.test_n_per_class, image_size=P.image_size, tags={"chapter": NOTEBOOK, **tags},
    )  # fmt: skip


def scratch_spec(P: SimpleNamespace, seed: int) -> ExperimentSpec:
    """MobileNetV2 (width ``big_alpha``) from random init on ``n_small`` per class: no augmentation, no early stopping.

    Args:
        P: The chapter's parameters.
        seed: The run's seed.

    Returns:
        The spec.
    """
    return ExperimentSpec(
        **_small_common(P, f"scratch_a{P.big_alpha:g}_n{P.n_small}_seed{seed}", seed, model="scratch", bn_momentum=M.SCRATCH_BN_MOMENTUM),
        backbone_kwargs=backbone_kwargs(P.backbone, P.big_alpha),
        weights=None,
        phases=(T.PhaseConfig("scratch", epochs=P.epochs, learning_rate=P.lr_scratch, batch_size=P.batch_size, unfreeze="all",
                              freeze_bn=False, val_n_per_class=P.monitor_n_per_class),),
    )  # fmt: skip


def frozen_spec(P: SimpleNamespace, seed: int) -> ExperimentSpec:
    """The frozen ImageNet base + new head on the same subset, same epochs (head on cached features).

    Args:
        P: The chapter's parameters.
        seed: The run's seed.

    Returns:
        The spec.
    """
    return ExperimentSpec(
        **_small_common(P, f"frozen_n{P.n_small}_seed{seed}", seed, model="frozen"),
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=P.weights,
        # the same images watched per epoch as the scratch model's, so both curves are comparable
        phases=(T.PhaseConfig("head", epochs=P.epochs, learning_rate=P.lr_head, batch_size=P.batch_size, use_feature_cache=True,
                              val_n_per_class=P.monitor_n_per_class),),
    )  # fmt: skip


def train_metrics(res: RunResult, train: D.EuroSAT, use_feature_cache: bool, eager: bool = False) -> dict[str, Any]:
    """Metrics on the run's own training images, in inference mode (cached in ``train_metrics.json``).

    Args:
        res: The run.
        train: Its training images.
        use_feature_cache: Whether it trained on cached features (its model is scored the same way).
        eager: Predict eagerly.

    Returns:
        :func:`~eurosat_lib.evaluation.evaluate_predictions` metrics.
    """
    path = res.run_dir / "train_metrics.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("spec_key") == res.record["params"]["spec_key"]:
            return cached["metrics"]
    y_prob = predict(res.load_model(), train.images, use_feature_cache=use_feature_cache, eager=eager)
    metrics = E.evaluate_predictions(train.labels, y_prob, train.class_names)
    write_json_atomic(path, {"spec_key": res.record["params"]["spec_key"], "metrics": metrics})
    return metrics


def overfit_pair(P: SimpleNamespace, data: D.EuroSAT) -> tuple[pd.DataFrame, dict[tuple[str, int], RunResult]]:
    """Section 1: train / validation / test accuracy of both models per seed (long table) and the runs.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        One row per model, seed and split (``accuracy``, ``params``, ``trainable``, ``run``), and the runs.
    """
    rows, runs = [], {}
    eager = accelerator_for(P.profile).run_eagerly
    for model, make, cached in (("from scratch", scratch_spec, False), ("frozen ImageNet base", frozen_spec, True)):
        for seed in P.seeds:
            spec = make(P, seed)
            res = run(P, spec, data, model_fn=scratch_model_fn())
            runs[(model, seed)] = res
            tr = train_metrics(res, train_subset(data, spec), cached, eager)
            m = res.record["metrics"]
            for split, acc in (("train", tr["accuracy"]), ("val", m["val"]["accuracy"]), ("test", m["test"]["accuracy"])):
                rows.append({"model": model, "seed": seed, "split": split, "accuracy": acc,
                             "params": res.record["model_info"]["params"]["total"],
                             "trainable": res.record["model_info"]["params"]["trainable"], "run": str(res.run_dir)})  # fmt: skip
    return pd.DataFrame(rows), runs


def gap_table(long: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean train/val/test accuracy and the train-test gap (mean ± sd over seeds).

    Args:
        long: :func:`overfit_pair`'s table.

    Returns:
        One row per model (indexed by model): ``train``, ``val``, ``test``, ``train_minus_test``,
        ``gap_sd`` and ``seeds``.
    """
    wide = long.pivot_table(index=["model", "seed"], columns="split", values="accuracy").reset_index()
    wide["train_minus_test"] = wide["train"] - wide["test"]
    g = wide.groupby("model", sort=False)
    out = g[["train", "val", "test", "train_minus_test"]].mean()
    out["gap_sd"] = g["train_minus_test"].std(ddof=1)
    out["seeds"] = g["seed"].nunique()
    return out


# --------------------------------------------------------------------------------------------
# Section 2: accuracy against training-set fraction (nested subsets)
# --------------------------------------------------------------------------------------------


def fraction_curve(P: SimpleNamespace, data: D.EuroSAT, bank: FeatureBank | None = None) -> pd.DataFrame:
    """Frozen features + linear head on nested subsets of the pool, per fraction and seed.

    For a seed, the subset at each fraction contains every smaller one (:func:`data.subset_indices`).
    Validation accuracy is the comparison; test accuracy is shown too, nothing is chosen on it.
    Fine-tuned points (``P.finetune_fractions``) run the two-phase recipe on the same subsets.

    Args:
        P: The chapter's parameters (``fractions``, ``finetune_fractions``).
        data: The dataset.
        bank: Cached features (default: made now).

    Returns:
        One row per method, fraction and seed.
    """
    bank = bank or FeatureBank(P, data)
    rows = []
    for seed in P.curve_seeds:
        for f in sorted(P.fractions):
            idx = D.subset_indices(bank.pool.labels, fraction=f, seed=seed, num_classes=bank.pool.num_classes)
            phase = T.PhaseConfig("head", epochs=P.epochs_head, learning_rate=P.lr_head, batch_size=128)
            out = feature_head_run(P, f"curve_frozen_f{f:g}_seed{seed}", (bank.x_pool[idx], bank.pool.labels[idx]),
                                   bank.evals(), phase=phase, inputs_key=bank.inputs_key(idx), seed=seed, tags={"fraction": f},
                                   keep=())  # fmt: skip
            rec = out["record"]
            rows.append({"method": "frozen features + head", "fraction": f, "train_images": len(idx), "seed": seed,
                         "val_accuracy": rec["metrics"]["val"]["accuracy"], "test_accuracy": rec["metrics"]["test"]["accuracy"]})  # fmt: skip
        for f in sorted(P.finetune_fractions):
            res = run(P, good_model_spec(P, name=f"curve_finetune_f{f:g}_seed{seed}", fraction=f, seed=seed), data)
            rows.append({"method": "fine-tuned (two phases)", "fraction": f, "train_images": res.record["extra"]["train_size"],
                         "seed": seed, "val_accuracy": res.record["metrics"]["val"]["accuracy"],
                         "test_accuracy": res.record["metrics"]["test"]["accuracy"]})  # fmt: skip
    return pd.DataFrame(rows)


def crossover_curves(P: SimpleNamespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data-efficiency curve of every arm (frozen, fine-tuned, scratch), from chapter 3's crossover records.

    Reads the finished runs of :mod:`.crossover` (``<runs>/<profile>/03_finetune/crossover``, beside
    this chapter's ``out_dir``); trains nothing. Empty tables when the study has not run yet.

    Args:
        P: this chapter's parameters (its ``out_dir`` locates the study's records).

    Returns:
        ``(runs, curves)``: one row per run (:func:`.crossover.read_table`) and per arm and size
        (:func:`.crossover.curves`: mean test accuracy with its 95 % interval over seeds).
    """
    runs = CX.read_table(CX.records_dir(P.out_dir))
    return runs, (CX.curves(runs) if len(runs) else pd.DataFrame())


def check_nested(labels: np.ndarray, fractions: Sequence[float], seed: int, num_classes: int = 10) -> bool:
    """True if every smaller-fraction subset lies inside every larger one (for this seed).

    Args:
        labels: Class index per image of the pool.
        fractions: The fractions.
        seed: The seed.
        num_classes: Classes.

    Returns:
        Whether the subsets nest.
    """
    subsets = [set(D.subset_indices(labels, fraction=f, seed=seed, num_classes=num_classes).tolist()) for f in sorted(fractions)]
    return all(a <= b for a, b in zip(subsets, subsets[1:]))


# --------------------------------------------------------------------------------------------
# Section 3: augmentation, dropout, early stopping
# --------------------------------------------------------------------------------------------


def reg_spec(P: SimpleNamespace, config: str, seed: int) -> ExperimentSpec:
    """Frozen ImageNet base + a hidden-layer head on ``reg_n`` per class with one regularisation config.

    Without augmentation the head trains on cached features; with it, every step runs the frozen
    base on freshly augmented images (flips, 90° turns, small shifts, brightness/contrast).

    Args:
        P: The chapter's parameters.
        config: A name of :data:`REG_CONFIGS`.
        seed: The run's seed.

    Returns:
        The spec.
    """
    aug, drop, es = REG_CONFIGS[config]
    common = _small_common(P, f"reg_{config.replace(' ', '_')}_n{P.reg_n}_seed{seed}", seed, reg_config=config)
    common["n_per_class"] = P.reg_n
    return ExperimentSpec(
        **common,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=P.weights,
        augment="light" if aug else None,
        head=M.HeadConfig(dense_units=(P.reg_hidden,), dropout=P.reg_dropout if drop else 0.0),
        phases=(T.PhaseConfig("head", epochs=P.reg_epochs, learning_rate=P.lr_head, batch_size=P.batch_size,
                              early_stopping=P.patience if es else None, use_feature_cache=not aug,
                              # every configuration stops on the same watched images (augmented
                              # ones cannot use cached features, so scoring all 5,400 per epoch costs)
                              val_n_per_class=P.monitor_n_per_class),),
    )  # fmt: skip


def regularisation_study(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Section 3: each configuration in ``P.reg_configs`` (names of :data:`REG_CONFIGS`) per seed:
    train (inference mode), val and test accuracy.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        One row per configuration and seed (accuracies, ``epochs_run``, ``fit_seconds``, ``run``).
    """
    rows = []
    eager = accelerator_for(P.profile).run_eagerly
    for config in P.reg_configs:
        # a head on cached features costs seconds (curve_seeds); with augmentation the frozen base
        # runs on every step (seeds). "none" has every seed, so each configuration pairs with it.
        cached = not REG_CONFIGS[config][0]
        for seed in (P.curve_seeds if cached else P.seeds):
            spec = reg_spec(P, config, seed)
            res = run(P, spec, data)
            tr = train_metrics(res, train_subset(data, spec), True, eager)
            m = res.record["metrics"]
            rows.append({"config": config, "seed": seed, "train_accuracy": tr["accuracy"], "val_accuracy": m["val"]["accuracy"],
                         "test_accuracy": m["test"]["accuracy"], "epochs_run": res.record["timings"]["phases"]["head"]["epochs_run"],
                         "fit_seconds": res.record["timings"]["fit_seconds"], "run": str(res.run_dir)})  # fmt: skip
    df = pd.DataFrame(rows)
    df["train_minus_test"] = df["train_accuracy"] - df["test_accuracy"]
    return df


# --------------------------------------------------------------------------------------------
# Section 4: a good model, evaluated on the full test split
# --------------------------------------------------------------------------------------------


def good_model_spec(P: SimpleNamespace, name: str = "good_model", fraction: float | None = None, seed: int | None = None) -> ExperimentSpec:
    """Two phases on the training pool: head on cached features, then the top half of the blocks at a low rate.

    ``fraction`` trains on that share of the pool instead (the fine-tuned points of section 2).

    Args:
        P: The chapter's parameters.
        name: The run folder's name.
        fraction: Share of the pool to train on (None: all of it).
        seed: The run's seed (default: the first of ``P.seeds``).

    Returns:
        The spec.
    """
    seed = P.seeds[0] if seed is None else seed
    n, frac = P.pool_n_per_class, fraction
    if fraction is not None and n is not None:
        n, frac = max(1, round(fraction * n)), None
    return ExperimentSpec(
        name=name,
        **model_fields(P),
        augment="flip",
        phases=two_phases(P, fraction=0.5, lr=P.lr_finetune),
        seed=seed,
        n_per_class=n,
        train_fraction=frac,
        val_n_per_class=P.val_n_per_class,
        test_n_per_class=P.test_n_per_class,
        tags={"chapter": NOTEBOOK, "model": "good" if fraction is None else "curve", "fraction": fraction},
    )


def good_model(P: SimpleNamespace, data: D.EuroSAT) -> tuple[RunResult, D.EuroSAT, np.ndarray]:
    """The good model, the test images it was scored on (the whole test split unless
    ``test_n_per_class`` says otherwise) and its test probabilities.

    Predictions are kept in ``test_predictions.npy`` in the run folder, so a rerun reuses them.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        The run, the test images and the probabilities.
    """
    spec = good_model_spec(P)
    res = run(P, spec, data)
    test = eval_split(data, "test", spec)
    path = res.run_dir / "test_predictions.npy"
    y_prob = res.predictions.get("test")
    if y_prob is None and path.is_file():
        y_prob = np.load(path)
        if y_prob.shape[0] != len(test):
            y_prob = None
    if y_prob is None:
        y_prob = predict(res.load_model(), test.images, eager=accelerator_for(P.profile).run_eagerly)
    np.save(path, y_prob)
    return res, test, y_prob


def good_model_train_metrics(P: SimpleNamespace, data: D.EuroSAT, res: RunResult, n_per_class: int = 100) -> dict[str, Any]:
    """The good model scored on a stratified sample of its own training images (inference mode).

    Args:
        P: The chapter's parameters.
        data: The dataset.
        res: The good model's run.
        n_per_class: Training images per class scored.

    Returns:
        :func:`~eurosat_lib.evaluation.evaluate_predictions` metrics.
    """
    train = train_subset(data, good_model_spec(P))
    n = min(n_per_class, min(c for c in train.class_counts().values() if c > 0))
    return train_metrics(res, D.nested_subset(train, n_per_class=n, seed=0), False, accelerator_for(P.profile).run_eagerly)


# --------------------------------------------------------------------------------------------
# Section 5: leaky evaluations
# --------------------------------------------------------------------------------------------


def config_grid(P: SimpleNamespace) -> list[dict[str, Any]]:
    """``P.n_configs`` head configurations (learning rate, epochs, hidden units, dropout, seed), fixed order.

    Args:
        P: The chapter's parameters (``n_configs``).

    Returns:
        One dict per configuration.
    """
    rng = np.random.default_rng(2024)
    out = []
    for k in range(P.n_configs):
        out.append({
            "lr": float(10 ** rng.uniform(-4, -2)),
            "epochs": int(rng.choice([max(1, P.epochs_head // 2), P.epochs_head, 2 * P.epochs_head])),
            "hidden": [int(rng.choice([0, 64, 256]))],
            "dropout": float(rng.choice([0.0, 0.2, 0.5])),
            "seed": k,
        })  # fmt: skip
        out[-1]["hidden"] = [h for h in out[-1]["hidden"] if h]
    return out


def config_sweep(P: SimpleNamespace, data: D.EuroSAT, bank: FeatureBank) -> tuple[pd.DataFrame, np.ndarray]:
    """Train every head of :func:`config_grid` on ``n_small`` per class of the pool; returns the
    table (val and test accuracy per config) and the ``(K, N_test)`` correctness matrix.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        bank: Cached features of the pool, validation and test images.

    Returns:
        The table and the correctness matrix.
    """
    idx = D.subset_indices(bank.pool.labels, n_per_class=min(P.n_small, min(bank.pool.class_counts().values())), seed=0,
                           num_classes=bank.pool.num_classes)  # fmt: skip
    rows, correct = [], []
    for k, cfg in enumerate(config_grid(P)):
        phase = T.PhaseConfig("head", epochs=cfg["epochs"], learning_rate=cfg["lr"], batch_size=P.batch_size)
        out = feature_head_run(P, f"sweep_config{k:02d}", (bank.x_pool[idx], bank.pool.labels[idx]), bank.evals(),
                               phase=phase, hidden=cfg["hidden"], dropout=cfg["dropout"], seed=cfg["seed"],
                               inputs_key=bank.inputs_key(idx), tags={"config": k})  # fmt: skip
        m = out["record"]["metrics"]
        rows.append({"config": k, **{k2: v for k2, v in cfg.items() if k2 != "seed"}, "val_accuracy": m["val"]["accuracy"],
                     "test_accuracy": m["test"]["accuracy"]})  # fmt: skip
        correct.append(out["predictions"]["test"].argmax(axis=1) == bank.test.labels)
    return pd.DataFrame(rows), np.array(correct)
