"""Chapter 03 — fine-tuning: the two-phase recipe, how deep to unfreeze, which learning rate,
and the BatchNorm pitfall.

Every study here returns a tidy ``pandas.DataFrame`` (one row per run, with the run folder) that
the notebook plots; the runs themselves are ordinary run folders under ``P.out_dir``.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import pandas as pd

from .. import data as D
from .core import RunResult, run
from .params import _fraction, _is_num, _pos_int, register_notebook_params
from .recipes import two_phase_spec, unfreeze_policy

NOTEBOOK = "03_finetune"


def _fractions(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and v and all(_is_num(f) and 0 <= f <= 1 for f in v)
    return None if ok else "must be a non-empty list of fractions in [0, 1] (0 = head only, 1 = all blocks)"


def _rates(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and v and all(_is_num(f) and f > 0 for f in v)
    return None if ok else "must be a non-empty list of positive learning rates"


register_notebook_params(
    NOTEBOOK,
    {
        "unfreeze_fraction": (_fraction, "fraction of the backbone's blocks unfrozen (from the top) in the main recipe"),
        "unfreeze_fractions": (_fractions, "depths swept: fractions of blocks unfrozen from the top"),
        "learning_rates": (_rates, "fine-tuning learning rates swept"),
        "val_n_per_class": (_pos_int, "validation images per class used for monitoring and selection"),
        "small_batch": (_pos_int, "batch size of the BatchNorm-pitfall runs"),
    },
    {
        "smoke": dict(n_per_class=6, unfreeze_fraction=0.1, unfreeze_fractions=[0.1], learning_rates=[1e-4],
                      val_n_per_class=4, small_batch=64, batch_size=64, epochs_head=1, epochs_finetune=1, seeds=1, image_size=64),
        "cpu": dict(n_per_class=50, unfreeze_fraction=0.5, unfreeze_fractions=[0.0, 0.25, 1.0],
                    learning_rates=[1e-5, 1e-4, 1e-2], val_n_per_class=30, small_batch=16,
                    epochs_head=30, epochs_finetune=3, seeds=2, image_size=128),
        "gpu": dict(n_per_class=None, unfreeze_fraction=0.5, unfreeze_fractions=[0.0, 0.1, 0.25, 0.5, 0.75, 1.0],
                    learning_rates=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2], val_n_per_class=None, small_batch=16,
                    epochs_head=30, epochs_finetune=10, seeds=3, image_size=224),
    },  # fmt: skip
)


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
        "test_accuracy": rec["metrics"].get("test", {}).get("accuracy"),
        "val_after_head": head_val[-1] if head_val else float("nan"),
        "trainable_params": rec["model_info"]["params"]["trainable"] if "params" in (rec.get("model_info") or {}) else None,
        "finetune_s_per_epoch": rec["timings"]["phases"].get("finetune", {}).get("seconds_per_epoch"),
        "run": str(res.run_dir),
    }


def run_recipe(P: SimpleNamespace, data: D.EuroSAT) -> RunResult:
    """The main two-phase run on the chosen training subset, scored on the full test split."""
    return run(P, recipe_spec(P, name="recipe", fraction=P.unfreeze_fraction, lr=P.lr_finetune, seed=P.seeds[0], full_test=True), data)


def sweep_depth(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Validation accuracy for each unfreeze depth and seed, at the recipe's learning rate."""
    rows = []
    for f in P.unfreeze_fractions:
        for seed in P.seeds:
            res = run(P, recipe_spec(P, name=_name(f, P.lr_finetune, P.batch_size, True, seed), fraction=f, lr=P.lr_finetune, seed=seed), data)
            rows.append(_row(res, unfreeze_fraction=f, policy=unfreeze_policy(P.backbone, f), seed=seed))
    return pd.DataFrame(rows)


def sweep_lr(P: SimpleNamespace, data: D.EuroSAT) -> pd.DataFrame:
    """Validation accuracy for each fine-tuning learning rate and seed, at the recipe's depth."""
    rows = []
    for lr in P.learning_rates:
        for seed in P.seeds:
            name = _name(P.unfreeze_fraction, lr, P.batch_size, True, seed)
            res = run(P, recipe_spec(P, name=name, fraction=P.unfreeze_fraction, lr=lr, seed=seed), data)
            rows.append(_row(res, lr_finetune=lr, seed=seed))
    return pd.DataFrame(rows)


def batchnorm_pitfall(P: SimpleNamespace, data: D.EuroSAT) -> tuple[pd.DataFrame, dict[tuple[str, int], RunResult]]:
    """Fine-tune at the recipe's depth with small batches, BatchNorm frozen vs updating.

    Returns the table and the runs keyed by ``("frozen" | "training", seed)``.
    """
    rows, runs = [], {}
    for freeze_bn in (True, False):
        for seed in P.seeds:
            name = _name(P.unfreeze_fraction, P.lr_finetune, P.small_batch, freeze_bn, seed)
            spec = recipe_spec(P, name=name, fraction=P.unfreeze_fraction, lr=P.lr_finetune, seed=seed, freeze_bn=freeze_bn, batch_size=P.small_batch)
            runs[("frozen" if freeze_bn else "training", seed)] = res = run(P, spec, data)
            rows.append(_row(res, batchnorm="frozen (inference mode)" if freeze_bn else "updating (training mode)", seed=seed))
    return pd.DataFrame(rows), runs
