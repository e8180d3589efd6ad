"""Chapter 03 — fine-tuning: the two-phase recipe, how deep to unfreeze, which learning rate,
and the BatchNorm pitfall.

Every study here returns a tidy ``pandas.DataFrame`` (one row per run, with the run folder) that
the notebook plots; the runs themselves are ordinary run folders under ``P.out_dir``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pandas as pd

from .. import data as D
from .core import RunResult, run
from .params import (
    ChapterParams, any_of, backbone_name, choice, fraction, interval, list_of, nonneg_int, optional, param, pos_int,
    pos_num, seeds_param, weights_param,
)  # fmt: skip
from .recipes import two_phase_spec, unfreeze_policy

NOTEBOOK = "03_finetune"


@dataclass(frozen=True)
class FinetuneParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 03's parameters (validators and per-profile defaults: :mod:`.params`)."""

    backbone: str = param(backbone_name, "any name from eurosat_lib.models.list_backbones()", default="MobileNetV2")
    alpha: float | None = param(optional(pos_num), "MobileNet width multiplier", smoke=0.35, cpu=0.35, gpu=None)
    weights: str | None = weights_param()
    image_size: int = param(pos_int, "input size the 64 px images are resized to", smoke=64, cpu=128, gpu=224)
    epochs_head: int = param(nonneg_int, "epochs of head training on the frozen base", smoke=1, cpu=30, gpu=30)
    epochs_finetune: int = param(nonneg_int, "epochs of fine-tuning", smoke=1, cpu=3, gpu=10)
    lr_head: float = param(pos_num, "learning rate of the head phase", default=1e-3)
    lr_finetune: float = param(pos_num, "learning rate of the fine-tuning phase", smoke=1e-4, cpu=3e-4, gpu=1e-4)
    batch_size: int = param(pos_int, "images per fine-tuning step", smoke=64, cpu=64, gpu=128)
    small_batch: int = param(pos_int, "batch size of the BatchNorm-pitfall runs", smoke=64, cpu=16, gpu=16)
    n_per_class: int | None = param(optional(pos_int), "training images per class", smoke=6, cpu=50, gpu=None)
    # Issue 12: choices made on 300 validation images (binomial SE ~2 points) with 2 seeds were noise.
    val_n_per_class: int | None = param(optional(pos_int), "validation images per class each run is scored on, "
                                        "for selection (None: all 5,400)", smoke=4, cpu=None, gpu=None)
    monitor_n_per_class: int | None = param(optional(pos_int), "validation images per class watched after each "
                                            "fine-tuning epoch (None: all)", smoke=None, cpu=30, gpu=None)
    test_n_per_class: int | None = param(optional(pos_int), "test images per class scored",
                                         smoke=10, cpu=None, gpu=None)
    unfreeze_fraction: float = param(fraction, "share of the backbone's blocks unfrozen (from the top) in the main recipe",
                                     smoke=0.1, cpu=0.5, gpu=0.5)
    unfreeze_fractions: list[float] = param(
        list_of(interval(0, 1), "fractions in [0, 1] (0 = head only, 1 = all blocks)"), "depths swept",
        smoke=[0.1], cpu=[0.0, 0.25, 0.5, 1.0], gpu=[0.0, 0.1, 0.25, 0.5, 0.75, 1.0],
    )
    learning_rates: list[float] = param(list_of(pos_num, "positive learning rates"), "fine-tuning learning rates swept",
                                        smoke=[1e-4, 1e-3], cpu=[1e-5, 1e-4, 3e-4, 1e-3, 1e-2],
                                        gpu=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2])  # fmt: skip
    seeds: list[int] = seeds_param(smoke=1, cpu=3, gpu=3)
    # The crossover study (experiments/crossover.py): every arm at every size, native 64 px images.
    crossover_sizes: list[int | str] = param(
        list_of(any_of(pos_int, choice("all"), message=""), "positive ints or 'all' (the whole training split)",
                distinct=True),
        "crossover: labelled training images per class ('all': the whole training split)",
        smoke=[2, 4], cpu=[5, 20, 50, 150, 500, "all"], gpu=[5, 20, 50, 150, 500, "all"], example=[5, 50, "all"],
    )  # fmt: skip
    crossover_seeds: list[int] = seeds_param("crossover: seeds of the fine-tuned and scratch arms", smoke=1, cpu=3, gpu=5)
    crossover_cheap_seeds: list[int] = seeds_param("crossover: seeds of the frozen arm (under a minute per run)",
                                                   smoke=1, cpu=5, gpu=5)  # fmt: skip
    crossover_image_size: int = param(pos_int, "crossover: input size (64: EuroSAT's native size)", smoke=32, cpu=64, gpu=64)
    crossover_val_n_per_class: int | None = param(optional(pos_int), "crossover: validation images per class watched by "
                                                  "early stopping (the frozen arm uses them all)", smoke=2, cpu=50, gpu=None)
    crossover_test_n_per_class: int | None = param(optional(pos_int), "crossover: test images per class scored (None: all)",
                                                   smoke=4, cpu=None, gpu=None)  # fmt: skip
    crossover_lr: float = param(pos_num, "crossover: peak fine-tuning learning rate (cosine decay to 0)", default=3e-4)
    crossover_top_fraction: float = param(fraction, "crossover: share of the blocks the finetune_top arm unfreezes",
                                          default=0.25)  # fmt: skip
    # cpu: 3 epochs / 150 steps left a third of the fine-tuned runs still improving at their end
    crossover_epochs: int = param(pos_int, "crossover: fine-tuning epoch cap at large sizes (early stopping ends sooner)",
                                  smoke=1, cpu=8, gpu=15)  # fmt: skip
    crossover_min_steps: int = param(pos_int, "crossover: fine-tuning step cap at least (small sizes)",
                                     smoke=1, cpu=400, gpu=800)  # fmt: skip
    # Scratch's budget is above the fine-tuned arms' cap (a fair budget: random weights need more
    # steps) and it spends all of it; on the whole split it is the study's largest cost.
    crossover_scratch_epochs: int = param(pos_int, "crossover: epoch cap of the scratch arm at large sizes",
                                          smoke=1, cpu=12, gpu=60)  # fmt: skip
    crossover_scratch_min_steps: int = param(pos_int, "crossover: scratch steps at least (its cap at small sizes)",
                                             smoke=1, cpu=1200, gpu=4000)  # fmt: skip
    crossover_patience: int = param(pos_int, "crossover: early-stopping patience (epochs) of the fine-tuned arms (scratch runs its whole budget)",
                                    smoke=1, cpu=3, gpu=8)  # fmt: skip
    crossover_epoch_steps: int = param(pos_int, "crossover: steps per epoch at least (small sets repeat within an epoch)",
                                       smoke=1, cpu=25, gpu=50)  # fmt: skip


#: This chapter's runs of the shared two-phase recipe (:func:`.recipes.two_phase_spec`): head on
#: the frozen base (cached features), then fine-tune the top ``fraction`` of the blocks.
recipe_spec = functools.partial(two_phase_spec, chapter=NOTEBOOK)


def _name(fraction: float, lr: float, batch_size: int, freeze_bn: bool, seed: int) -> str:
    # Runs are named by their configuration, so the sweeps share runs they have in common
    # (e.g. the depth sweep's run at the recipe's depth is the learning-rate sweep's run too).
    return f"unfreeze{fraction:g}_lr{lr:g}_bs{batch_size}_bn{'frozen' if freeze_bn else 'training'}_seed{seed}"


def _row(res: RunResult, **extra: Any) -> dict[str, Any]:
    rec = res.record
    phases = {h["name"]: h["history"] for h in rec["history"]}
    head_val = phases.get("head", {}).get("val_accuracy", [float("nan")])
    return {
        **extra,
        "val_accuracy": rec["metrics"]["val"]["accuracy"],
        "val_n": rec["metrics"]["val"].get("n"),  # images scored: the comparison's evaluation noise
        "test_accuracy": rec["metrics"].get("test", {}).get("accuracy"),
        "val_after_head": head_val[-1] if head_val else float("nan"),
        "trainable_params": rec["model_info"]["params"]["trainable"] if "params" in (rec.get("model_info") or {}) else None,
        "finetune_s_per_epoch": rec["timings"]["phases"].get("finetune", {}).get("seconds_per_epoch"),
        # sanity flags ("diverged", "chance-level", "not converged"): shown beside the number
        "warnings": "; ".join(rec.get("warnings") or []),
        "run": str(res.run_dir),
    }


def run_recipe(P: SimpleNamespace, data: D.EuroSAT) -> RunResult:
    """The main two-phase run on the chosen training subset, scored on the full test split.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        The run (its record holds both phases' histories and the test metrics).
    """
    return run(P, recipe_spec(P, name="recipe", fraction=P.unfreeze_fraction, lr=P.lr_finetune, seed=P.seeds[0], full_test=True), data)


def sweep_depth(P: SimpleNamespace, data: D.EuroSAT, lr: float | None = None) -> pd.DataFrame:
    """Validation accuracy for each unfreeze depth and seed.

    Args:
        P: the chapter's parameters.
        data: the dataset.
        lr: the fine-tuning learning rate (the one :func:`pick_lr` chose on the learning-rate
            sweep; default the recipe's ``P.lr_finetune``).

    Returns:
        One row per (depth, seed), with the learning rate used in ``lr_finetune``.
    """
    lr = P.lr_finetune if lr is None else float(lr)
    rows = []
    for f in P.unfreeze_fractions:
        for seed in P.seeds:
            res = run(P, recipe_spec(P, name=_name(f, lr, P.batch_size, True, seed), fraction=f, lr=lr, seed=seed), data)
            rows.append(_row(res, unfreeze_fraction=f, policy=unfreeze_policy(P.backbone, f), lr_finetune=lr, seed=seed))
    return pd.DataFrame(rows)


def sweep_lr(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Validation accuracy for each fine-tuning learning rate and seed, at the recipe's depth.

    Args:
        P: The chapter's parameters.
        data: The dataset.

    Returns:
        One row per (learning rate, seed).
    """
    rows = []
    for lr in P.learning_rates:
        for seed in P.seeds:
            name = _name(P.unfreeze_fraction, lr, P.batch_size, True, seed)
            res = run(P, recipe_spec(P, name=name, fraction=P.unfreeze_fraction, lr=lr, seed=seed), data)
            rows.append(_row(res, lr_finetune=lr, seed=seed))
    return pd.DataFrame(rows)


#: Flags that make a run's number unusable for choosing a learning rate (a collapsed or blown-up
#: run); "not converged" is a budget statement and does not disqualify.
BROKEN = ("diverged", "chance-level")


def lr_summary(lrs: pd.DataFrame) -> pd.DataFrame:
    """The learning-rate sweep per rate: mean and sd of validation accuracy, and the runs' flags.

    A rate whose runs diverged or stayed at chance shows that flag in ``shown`` instead of a
    number: its accuracy is the collapse, not a measurement of the rate.

    Args:
        lrs: :func:`sweep_lr` rows (``lr_finetune``, ``seed``, ``val_accuracy``, ``warnings``).

    Returns:
        One row per rate (index ``lr_finetune``): ``mean``, ``sd``, ``seeds``, ``flags`` (joined),
        ``broken`` (a run of it diverged or stayed at chance) and ``shown`` (the mean as a
        percentage, or the flag).
    """
    rows = []
    for lr, g in lrs.groupby("lr_finetune", sort=True):
        flags = sorted({f for w in g.get("warnings", pd.Series([""] * len(g))).fillna("") for f in w.split("; ") if f})
        broken = [f for f in flags if f in BROKEN]
        mean = float(g["val_accuracy"].mean())
        rows.append({"lr_finetune": lr, "mean": mean, "sd": float(g["val_accuracy"].std(ddof=1)) if len(g) > 1 else float("nan"),
                     "seeds": len(g), "flags": ", ".join(flags), "broken": bool(broken),
                     "shown": " / ".join(broken) if broken else f"{mean:.2%}"})  # fmt: skip
    return pd.DataFrame(rows).set_index("lr_finetune")


def pick_lr(lrs: pd.DataFrame) -> float:
    """The fine-tuning learning rate chosen on validation: the best mean over seeds among sound rates.

    A rate any of whose runs is flagged ``diverged`` or ``chance-level`` (:data:`BROKEN`) is
    never chosen; among the rest the highest mean validation accuracy wins (a tie goes to the
    lower rate, the safer one). The test split plays no part.

    Args:
        lrs: :func:`sweep_lr` rows.

    Returns:
        The chosen rate.

    Raises:
        ValueError: every rate is flagged (add lower rates to ``learning_rates``) or the table is empty.
    """
    s = lr_summary(lrs) if len(lrs) else pd.DataFrame()
    sound = s[~s["broken"].astype(bool)] if len(s) else s
    if sound.empty:
        raise ValueError("no learning rate of the sweep is usable: every one has a run flagged diverged or chance-level "
                         "(or the sweep is empty); add lower rates to the parameter 'learning_rates'")
    best = sound["mean"].max()
    return float(min(lr for lr, m in sound["mean"].items() if m == best))


def batchnorm_pitfall(P: SimpleNamespace, data: D.EuroSAT) -> tuple[pd.DataFrame, dict[tuple[str, int], RunResult]]:
    """Fine-tune at the recipe's depth with small batches, BatchNorm frozen vs updating.

    Returns the table and the runs keyed by ``("frozen" | "training", seed)``.

    Args:
        P: The chapter's parameters (``small_batch``).
        data: The dataset.

    Returns:
        The table (one row per BatchNorm mode and seed) and the runs.
    """
    rows, runs = [], {}
    for freeze_bn in (True, False):
        for seed in P.seeds:
            name = _name(P.unfreeze_fraction, P.lr_finetune, P.small_batch, freeze_bn, seed)
            spec = recipe_spec(P, name=name, fraction=P.unfreeze_fraction, lr=P.lr_finetune, seed=seed, freeze_bn=freeze_bn, batch_size=P.small_batch)
            runs[("frozen" if freeze_bn else "training", seed)] = res = run(P, spec, data)
            rows.append(_row(res, batchnorm="frozen (inference mode)" if freeze_bn else "updating (training mode)", seed=seed))
    return pd.DataFrame(rows), runs
