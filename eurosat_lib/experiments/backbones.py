"""Chapter 05 — choosing a base model.

Every candidate backbone is trained with the chapter-3 two-phase recipe
(:func:`eurosat_lib.experiments.recipes.two_phase_spec`: head on cached features of the frozen
base, then fine-tuning), on the same training images. The best candidate is chosen by
**validation** accuracy; only the chosen one is then scored on the whole test split.

Candidates are written ``"Backbone"`` or ``"Backbone:alpha"`` (``"MobileNetV2:0.35"``). A
candidate uses ImageNet weights when they can be had; where they cannot (no file on disk, no
network) and ``scratch_if_missing`` is set, it is trained from random weights instead — at its
own (smaller) input size, in one phase with all layers and BatchNorm training from the first step
(BatchNorm momentum :data:`eurosat_lib.models.SCRATCH_BN_MOMENTUM`), a cosine schedule and early
stopping (:func:`scratch_spec`) — never a head phase on a frozen random backbone — and labelled
"from scratch" everywhere.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import evaluation as E
from .. import models as M
from .. import runs as R
from .. import training as T
from .._io import write_json_atomic
from .core import ExperimentSpec, RunResult, accelerator_for, predict, run, weights_available
from .params import (
    ChapterParams, ParameterError, backbone_kwargs, boolean, fraction, is_int, nonneg_int, optional, param, pos_int,
    pos_num, seeds_param, seeds_spec, weights_param,
)  # fmt: skip
from .recipes import FINETUNE_PATIENCE, scratch_model_fn, two_phase_spec, until_plateau

NOTEBOOK = "05_backbones"

_MOBILENETS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large")


def parse_candidate(text: str) -> tuple[str, float | None]:
    """``"MobileNetV2:0.35"`` -> ``("MobileNetV2", 0.35)``; ``"ResNet50"`` -> ``("ResNet50", None)``.

    The backbone name is checked against the registry (and normalised to its spelling there);
    an alpha is only accepted for the MobileNet family.

    Args:
        text: ``Name`` or ``Name:alpha``.

    Returns:
        The registry's backbone name and the alpha (None without one).

    Raises:
        ValueError: Not a string, an unknown backbone, an alpha for a backbone that takes none,
            or an alpha that is not a number.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a candidate must be a string like 'MobileNetV2:0.35' or 'ResNet50', got {text!r}")
    name, _, alpha_text = text.strip().partition(":")
    spec = M.get_backbone_spec(name.strip())
    if not alpha_text:
        return spec.name, None
    if spec.name not in _MOBILENETS:
        raise ValueError(f"candidate {text!r}: only MobileNets take a width multiplier (alpha)")
    try:
        alpha = float(alpha_text)
    except ValueError:
        raise ValueError(f"candidate {text!r}: alpha {alpha_text!r} is not a number") from None
    if not alpha > 0:
        raise ValueError(f"candidate {text!r}: alpha must be positive")
    return spec.name, alpha


def _candidates(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)) or not v:
        return "must be a non-empty list of backbones, e.g. ['MobileNetV2:0.35', 'ResNet50']"
    try:
        parsed = [parse_candidate(c) for c in v]
    except ValueError as e:
        return f"is invalid: {e}"
    if len(set(parsed)) != len(parsed):
        return "lists the same candidate twice"
    return None


@dataclass(frozen=True)
class BackbonesParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 05's parameters (validators and per-profile defaults: :mod:`.params`)."""

    candidates: list[str] = param(
        _candidates, "backbones compared, Name or Name:alpha",
        smoke=["MobileNetV2:0.35", "MobileNetV3Small"],
        cpu=["MobileNetV2:0.35", "MobileNetV2:0.5", "MobileNet:0.25", "EfficientNetB0"],
        gpu=["MobileNetV2:0.35", "MobileNetV2:0.5", "MobileNetV2:1.0", "MobileNet:0.25", "EfficientNetB0", "ResNet50",
             "DenseNet121"],
    )  # fmt: skip
    weights: str | None = weights_param("imagenet | none")
    scratch_if_missing: bool = param(boolean, "train from scratch where ImageNet weights are unavailable",
                                     smoke=True, cpu=True, gpu=False)
    image_size: int = param(pos_int, "input size of pretrained candidates", smoke=32, cpu=128, gpu=224)
    scratch_image_size: int = param(pos_int, "input size of candidates trained from scratch", smoke=32, cpu=64, gpu=224)
    epochs_head: int = param(nonneg_int, "epochs of head training on the frozen base", smoke=1, cpu=30, gpu=30)
    # cpu: 3 constant-rate epochs left 4 of 5 runs still climbing back from the first fine-tuning
    # epoch's drop (flagged "not converged"); now a cap, with cosine decay and early stopping.
    epochs_finetune: int = param(nonneg_int, "fine-tuning epoch cap (early stopping ends sooner)", smoke=1, cpu=12, gpu=15)
    # Its own cap, not epochs_head + epochs_finetune: head epochs on cached features cost seconds, a
    # scratch epoch trains the whole network, so epochs are no common currency. 33 full-network epochs
    # (264 steps at 50 images per class) are more than a pretrained candidate's fine-tuning gets.
    scratch_epochs: int = param(pos_int, "epoch cap of candidates trained from scratch (early stopping ends sooner)",
                                smoke=2, cpu=33, gpu=40)  # fmt: skip
    lr_head: float = param(pos_num, "learning rate of the head phase", default=1e-3)
    lr_finetune: float = param(pos_num, "fine-tuning rate of pretrained candidates", smoke=1e-4, cpu=3e-4, gpu=1e-4)
    lr_scratch: float = param(pos_num, "all-layers rate of candidates trained from scratch", default=1e-3)
    unfreeze_fraction: float = param(fraction, "share of a pretrained backbone's blocks fine-tuned (from the top)", default=0.5)
    batch_size: int = param(pos_int, "images per fine-tuning step", smoke=64, cpu=64, gpu=128)
    n_per_class: int | None = param(optional(pos_int), "training images per class", smoke=5, cpu=50, gpu=None)
    # Issue 12: a choice made on 300 validation images with 2 seeds (86.0 ± 3.3 vs 82.2 ± 1.6 %) was noise.
    val_n_per_class: int | None = param(optional(pos_int), "validation images per class each candidate is scored "
                                        "on for the choice (None: all 5,400)", smoke=3, cpu=None, gpu=None)
    monitor_n_per_class: int | None = param(optional(pos_int), "validation images per class watched after each "
                                            "fine-tuning or from-scratch epoch (None: all)", smoke=None, cpu=30, gpu=None)
    leaderboard_test_n_per_class: int | None = param(pos_int, "test images per class scored for every candidate",
                                                     smoke=3, cpu=50, gpu=None)
    test_n_per_class: int | None = param(optional(pos_int), "test images per class for the chosen model",
                                         smoke=5, cpu=None, gpu=None)
    # A pretrained candidate costs about a minute here: 5 seeds (issue 12); one from scratch ~9 min: 3.
    seeds: list[int] = seeds_param("seeds of pretrained candidates (number or list)", smoke=1, cpu=5, gpu=3)
    scratch_seeds: int | list[int] = param(seeds_spec, "seeds of candidates trained from scratch (number or list)",
                                           smoke=1, cpu=3, gpu=3, example=[0])


# --------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One backbone of the comparison, with how it is initialised and fed."""

    backbone: str
    alpha: float | None
    pretrained: bool
    image_size: int
    weights_file: str | None = None

    @property
    def name(self) -> str:
        """``MobileNetV2-0.35`` (name and alpha) or the backbone's name."""
        return f"{self.backbone}-{self.alpha:g}" if self.alpha is not None else self.backbone

    @property
    def init(self) -> str:
        """``"ImageNet"`` or ``"from scratch"``."""
        return "ImageNet" if self.pretrained else "from scratch"

    @property
    def label(self) -> str:
        """What tables and plots call it: name, initialisation and input size."""
        return f"{self.name} · {self.init} · {self.image_size}px"

    @property
    def slug(self) -> str:
        """The run folders' prefix: name, init and input size, lower case."""
        return f"{self.name.lower()}_{'imagenet' if self.pretrained else 'scratch'}_{self.image_size}px"

    def namespace(self, P: SimpleNamespace) -> SimpleNamespace:
        """``P`` with this candidate's backbone, alpha, weights and size (what two_phase_spec reads).

        Args:
            P: The chapter's parameters.

        Returns:
            A copy of ``P`` set up for this candidate.
        """
        return SimpleNamespace(**{**vars(P), "backbone": self.backbone, "alpha": self.alpha,
                                  "weights": "imagenet" if self.pretrained else None, "image_size": self.image_size})  # fmt: skip


def resolve_candidates(P: SimpleNamespace) -> list[Candidate]:
    """Decide, for every candidate, ImageNet weights or from scratch — failing fast if neither.

    With ``P.weights`` None every candidate trains from scratch. Otherwise a candidate whose
    official ImageNet file is on disk is pretrained; one without is trained from scratch when
    ``P.scratch_if_missing``, else its weights are fetched now (the error names the file).

    Args:
        P: The chapter's parameters (``candidates``, ``weights``, ``scratch_if_missing``).

    Returns:
        One candidate per entry of ``P.candidates``.

    Raises:
        ParameterError: ``weights`` is neither ``imagenet`` nor ``none``, or a candidate is
            malformed or its weights cannot be had.
    """
    if P.weights not in (None, "imagenet"):
        raise ParameterError(f"parameter 'weights' must be 'imagenet' or 'none' for {NOTEBOOK} (it compares several "
                             f"backbones), got {P.weights!r} (papermill: -p weights none)")  # fmt: skip
    out = []
    for text in P.candidates:
        backbone, alpha = parse_candidate(text)
        kw = backbone_kwargs(backbone, alpha)
        weights_kw = {k: v for k, v in kw.items() if k in ("alpha", "minimalistic")}
        pretrained, path = False, None
        if P.weights == "imagenet":
            try:
                if weights_available(backbone, "imagenet", **weights_kw):
                    pretrained, path = True, M.find_local_weights(backbone, **weights_kw)
                elif not P.scratch_if_missing:
                    pretrained, path = True, M.resolve_weights(backbone, "imagenet", **weights_kw)
            except ValueError as e:  # e.g. an alpha without ImageNet weights
                if not P.scratch_if_missing:
                    raise ParameterError(f"candidate {text!r}: {e}") from e
        size = P.image_size if pretrained else P.scratch_image_size
        min_size = M.get_backbone_spec(backbone).min_size
        if size < min_size:
            raise ParameterError(f"candidate {text!r} needs inputs of at least {min_size} px, got {size} "
                                 f"(parameter {'image_size' if pretrained else 'scratch_image_size'})")  # fmt: skip
        out.append(Candidate(backbone, alpha, pretrained, size, str(path) if path else None))
    return out


def candidates_table(cands: Sequence[Candidate]) -> pd.DataFrame:
    """What will be compared: one row per candidate (shown before anything trains).

    Args:
        cands: The candidates.

    Returns:
        One row per candidate: backbone, alpha, init, input size and the weights file.
    """
    rows = [{"candidate": c.label, "backbone": c.backbone, "alpha": c.alpha, "init": c.init, "image_size": c.image_size,
             "weights file": c.weights_file.rsplit("/", 1)[-1] if c.weights_file else "— (random init)"} for c in cands]  # fmt: skip
    return pd.DataFrame(rows).set_index("candidate")


#: Early-stopping patience (epochs, on validation accuracy, best weights restored) of a candidate
#: trained from scratch: it trains to its plateau within the epoch budget, not for a fixed count.
SCRATCH_PATIENCE = 5

#: What a scratch candidate's early stopping watches. Not validation loss: a network from random
#: weights first grows confident on its training images while its BatchNorm statistics still lag, so
#: validation loss rises for several epochs as validation accuracy starts to climb. Watching the loss
#: stopped the cpu edition's EfficientNetB0 after 6 epochs at chance (its lowest loss was epoch 1).
SCRATCH_MONITOR = "val_accuracy"


def candidate_spec(P: SimpleNamespace, c: Candidate, seed: int):
    """The training recipe of one candidate and seed.

    Pretrained: the chapter-3 recipe — head on cached features of the frozen base, then the top
    ``unfreeze_fraction`` of blocks with BatchNorm frozen, at ``lr_finetune`` decaying to 0 on a
    cosine over up to ``epochs_finetune`` epochs, stopped early on validation accuracy
    (:func:`.recipes.until_plateau`, as the crossover study's fine-tuned arms).

    From scratch: :func:`scratch_spec`. A randomly initialised backbone is never frozen under a
    head phase — its features are noise, so that phase only fits a head to noise (the committed
    EfficientNetB0 run sat at ln 10 loss and chance accuracy) and wastes the budget.

    Both are scored on validation and on a fixed ``leaderboard_test_n_per_class`` test subset.

    Args:
        P: The chapter's parameters.
        c: The candidate.
        seed: The run's seed.

    Returns:
        The spec.
    """
    if not c.pretrained:
        return scratch_spec(P, c, seed)
    ns = c.namespace(P)
    ns.test_n_per_class = P.leaderboard_test_n_per_class
    spec = two_phase_spec(
        ns,
        chapter=NOTEBOOK,
        name=f"{c.slug}_seed{seed}",
        fraction=P.unfreeze_fraction,
        lr=P.lr_finetune,
        seed=seed,
        freeze_bn=True,
        full_test=True,
    )
    head, tune = spec.phases
    tags = {**spec.tags, "chapter": NOTEBOOK, "recipe": "03_finetune.recipe_spec, fine-tuned until its plateau",
            "candidate": c.label, "init": c.init, "early_stopping": FINETUNE_PATIENCE}  # fmt: skip
    return dataclasses.replace(spec, phases=(head, until_plateau(tune)), tags=tags)


def scratch_spec(P: SimpleNamespace, c: Candidate, seed: int) -> ExperimentSpec:
    """A candidate without ImageNet weights, trained from scratch with a recipe fit for scratch.

    One phase, every layer and BatchNorm training from the first step (BatchNorm momentum
    :data:`eurosat_lib.models.SCRATCH_BN_MOMENTUM`, set by the run's ``model_fn``),
    flip augmentation, Adam at ``lr_scratch`` with a cosine schedule, and early stopping on
    validation accuracy (:data:`SCRATCH_MONITOR`, patience :data:`SCRATCH_PATIENCE`). Its epoch cap is
    ``scratch_epochs``: more full-network epochs than a pretrained candidate's fine-tuning gets, so it
    trains to its plateau or to that cap, whichever comes first; the record's sanity flags say
    whether it was still improving.

    Args:
        P: The chapter's parameters.
        c: A candidate without ImageNet weights.
        seed: The run's seed.

    Returns:
        The spec.

    Raises:
        ValueError: The candidate is pretrained.
    """
    if c.pretrained:
        raise ValueError(f"scratch_spec is for candidates without ImageNet weights; {c.label} has them")
    budget = int(P.scratch_epochs)
    return ExperimentSpec(
        name=f"{c.slug}_seed{seed}",
        backbone=c.backbone,
        backbone_kwargs=backbone_kwargs(c.backbone, c.alpha),
        weights=None,
        image_size=c.image_size,
        augment="flip",
        freeze_bn=False,
        phases=(T.PhaseConfig("scratch", epochs=budget, learning_rate=P.lr_scratch, batch_size=P.batch_size,
                              schedule="cosine", early_stopping=SCRATCH_PATIENCE, early_stopping_monitor=SCRATCH_MONITOR,
                              unfreeze="all", freeze_bn=False, val_n_per_class=P.monitor_n_per_class),),
        seed=seed,
        n_per_class=P.n_per_class,
        val_n_per_class=P.val_n_per_class,
        eval_splits=("val", "test"),
        test_n_per_class=P.leaderboard_test_n_per_class,
        tags={"chapter": NOTEBOOK, "recipe": "from scratch: all layers, cosine, early stopping", "candidate": c.label,
              "init": c.init, "bn_momentum": M.SCRATCH_BN_MOMENTUM, "epoch_budget": budget,
              "early_stopping": SCRATCH_PATIENCE},
    )  # fmt: skip


def seeds_for(P: SimpleNamespace, c: Candidate) -> list[int]:
    """The seeds a candidate runs with: ``P.seeds`` when pretrained, ``P.scratch_seeds`` otherwise.

    Args:
        P: The chapter's parameters.
        c: The candidate.

    Returns:
        The seeds.
    """
    if c.pretrained:
        return list(P.seeds)
    s = P.scratch_seeds
    return list(range(int(s))) if is_int(s) else list(s)


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def leaderboard_row(c: Candidate, seed: int, res: RunResult) -> dict[str, Any]:
    """One row of the per-run table from a finished run.

    Args:
        c: The candidate.
        seed: The run's seed.
        res: The run.

    Returns:
        Candidate, backbone, init, input size, seed, validation and test accuracy, test images,
        validation after the head phase, parameter counts, inference speed, timings (and
        whether they were contended) and the run folder.
    """
    rec = res.record
    m = rec.get("metrics") or {}
    t = rec.get("timings") or {}
    phases = {h["name"]: h["history"] for h in rec.get("history") or []}
    head_val = phases.get("head", {}).get("val_accuracy") or [np.nan]
    params = (rec.get("model_info") or {}).get("params", {})
    ips = t.get("inference_images_per_s")
    # Timings taken while other jobs kept the CPU busy are not figures (issue 15): NaN, flagged.
    trusted = R.timing_trusted(rec)
    if not trusted:
        ips = None
    return {
        "candidate": c.label,
        "backbone": c.name,
        "init": c.init,
        "image_size": c.image_size,
        "seed": seed,
        "val_accuracy": m.get("val", {}).get("accuracy"),
        "val_macro_f1": m.get("val", {}).get("macro_f1"),
        "test_accuracy": m.get("test", {}).get("accuracy"),
        "test_macro_f1": m.get("test", {}).get("macro_f1"),
        "test_n": m.get("test", {}).get("n"),
        "val_after_head": head_val[-1],
        "total_params": params.get("total"),
        "trainable_params": params.get("trainable"),
        "inference_images_per_s": np.nan if ips is None else float(ips),
        "fit_seconds": t.get("fit_seconds") if trusted else np.nan,
        "finetune_s_per_epoch": (t.get("phases", {}).get("finetune", {}).get("seconds_per_epoch") if trusted else np.nan),
        "timing_contended": not trusted,
        "run": str(res.run_dir),
    }


def compare_backbones(P: SimpleNamespace, data: D.EuroSAT, cands: Sequence[Candidate] | None = None) -> tuple[pd.DataFrame, dict]:
    """Train every candidate (recipe, each seed). Returns ``(one row per run, {(label, seed): RunResult})``.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        cands: The candidates (default: :func:`resolve_candidates`).

    Returns:
        The per-run table and the runs.
    """
    cands = list(cands) if cands is not None else resolve_candidates(P)
    rows, runs = [], {}
    for c in cands:
        for seed in seeds_for(P, c):
            spec = candidate_spec(P, c, seed)
            kw = {} if c.pretrained else {"model_fn": scratch_model_fn(data.num_classes)}  # momentum from the tags
            # the leaderboard compares training times: every run pays for its own feature extraction
            res = run(P, spec, data, reuse_features=False, **kw)
            runs[(c.label, seed)] = res
            rows.append(leaderboard_row(c, seed, res))
    return pd.DataFrame(rows), runs


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate, best validation accuracy first: means (and sd) over seeds.

    Args:
        df: :func:`compare_backbones`'s per-run table.

    Returns:
        The leaderboard, indexed by candidate.
    """
    g = df.groupby("candidate", sort=False)
    table = g.agg(
        init=("init", "first"),
        image_size=("image_size", "first"),
        seeds=("seed", "count"),
        val_accuracy=("val_accuracy", "mean"),
        val_sd=("val_accuracy", "std"),
        val_macro_f1=("val_macro_f1", "mean"),
        test_accuracy=("test_accuracy", "mean"),
        test_macro_f1=("test_macro_f1", "mean"),
        params_M=("total_params", lambda s: s.iloc[0] / 1e6),
        images_per_s=("inference_images_per_s", "mean"),
        fit_seconds=("fit_seconds", "mean"),
    )
    return table.sort_values(["val_accuracy", "params_M"], ascending=[False, True])


def choose(df: pd.DataFrame) -> str:
    """The candidate with the best mean validation accuracy (ties: fewer parameters).

    Args:
        df: :func:`compare_backbones`'s per-run table.

    Returns:
        The candidate's label.
    """
    return str(summarise(df).index[0])


def pareto_front(table: pd.DataFrame, accuracy: str = "val_accuracy", speed: str = "images_per_s") -> list[str]:
    """Candidates no other beats on both accuracy and speed (higher is better for both).

    Args:
        table: The leaderboard (indexed by candidate).
        accuracy: The accuracy column.
        speed: The speed column.

    Returns:
        The candidates on the front.
    """
    t = table[[accuracy, speed]].astype(float).dropna()
    front = []
    for name, row in t.iterrows():
        others = t.drop(index=name)
        dominated = ((others[accuracy] >= row[accuracy]) & (others[speed] >= row[speed])
                     & ((others[accuracy] > row[accuracy]) | (others[speed] > row[speed]))).any()  # fmt: skip
        if not dominated:
            front.append(str(name))
    return front


def final_test(P: SimpleNamespace, data: D.EuroSAT, runs: dict, chosen: str) -> tuple[pd.DataFrame, dict[int, dict]]:
    """The chosen candidate's runs scored on the test split (``test_n_per_class``; None = whole).

    Returns ``(one row per seed, {seed: evaluate_predictions metrics})``. The metrics are stored
    in each run folder (``final_test.json``), so a re-run reuses them.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        runs: :func:`compare_backbones`'s runs.
        chosen: The chosen candidate's label.

    Returns:
        The per-seed table and each seed's metrics.

    Raises:
        ValueError: No run of ``chosen``.
    """
    # the same fixed stratified subset (seed 0) as core.eval_split when test_n_per_class is set
    part = data.get_split("test", n_per_class=P.test_n_per_class, seed=0)
    rows, all_metrics = [], {}
    for (label, seed), res in runs.items():
        if label != chosen:
            continue
        from .. import runs as R  # the run-folder owner (imported here: this module's imports belong to others)

        key = {"test_n_per_class": P.test_n_per_class, "n": len(part), "spec_key": res.record["params"].get("spec_key")}

        def score(res=res):
            y_prob = predict(res.load_model(), part.images, eager=accelerator_for(P.profile).run_eagerly)
            return E.evaluate_predictions(part.labels, y_prob, part.class_names)

        metrics = R.cached_json(res.run_dir / "final_test.json", key, score)
        all_metrics[seed] = metrics
        rows.append({"candidate": label, "seed": seed, "test_accuracy": metrics["accuracy"],
                     "test_macro_f1": metrics["macro_f1"], "test_n": metrics["n"], "run": str(res.run_dir)})  # fmt: skip
    if not rows:
        raise ValueError(f"no runs of candidate {chosen!r}; known: {sorted({k[0] for k in runs})}")
    return pd.DataFrame(rows), all_metrics
