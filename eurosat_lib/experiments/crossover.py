"""The fine-tuning crossover: above which labelled-data size does fine-tuning beat a frozen base?

A study module (not a chapter): chapter 3 runs and narrates it, chapter 4 draws its curve from
the records; it imports no chapter. Four arms, same network (MobileNetV2, the chapter's width),
same images at their native 64 px, the same nested training subsets per seed
(``data.get_split("train", n_per_class=n, seed=s)``; the largest "size" is the whole training
split, 1,620 images per class on average), each arm with a recipe fit for it:

``frozen``
    ImageNet base frozen, a new head trained on cached features (Adam, early stopping on
    validation accuracy). Costs seconds, so it gets more seeds and the whole validation split.
``finetune_top``
    The frozen arm's head phase, then the top share of the blocks unfrozen (BatchNorm kept in
    inference mode) at a low learning rate with cosine decay: the Keras two-phase recipe, with
    early stopping on validation accuracy under an epoch cap.
``finetune_all``
    The same, with every layer unfrozen (BatchNorm frozen): the headline run's recipe.
``scratch``
    The same architecture from random weights, one phase, every layer and BatchNorm training
    (momentum :data:`eurosat_lib.models.SCRATCH_BN_MOMENTUM`), AdamW with cosine decay to 0 over
    its whole budget, no early stopping. Never a head on a frozen random base (that measures
    nothing but chance).

**Budget.** Steps scale with the data. A fine-tuning phase runs to its plateau or to its cap: up
to ``crossover_epochs`` epochs, or more at small sizes so that its cap is at least
``crossover_min_steps`` steps, stopping early, with its best weights, after
``crossover_patience`` epochs without a higher validation accuracy (:data:`MONITOR` says why not
the loss). Scratch gets a stated compute budget instead, never smaller than the fine-tuned cap:
``crossover_scratch_epochs`` epochs (at least ``crossover_scratch_min_steps`` steps), all of
them. A network learning from random weights climbs slowly and noisily on a 500-image
validation subset, and patience cut it short: one scratch run at 150 images per class stopped
after 10 of its 26 epochs, at 54 % validation and 46 % training accuracy, still climbing, having
used less compute than the fine-tuned arm it was compared with. (A fixed fine-tuning budget of
3-6 epochs left 11 of 30 fine-tuned runs with validation accuracy still rising 2-5 points at
their end: the comparison with the frozen base measured the budget, not the method.) An *epoch* is at least ``crossover_epoch_steps``
steps: at 5 images per class one pass is 2 batches, so the training set is repeated within an
epoch (``passes_per_epoch`` in the run's tags) — otherwise validation, early-stopping patience
and the learning curves would tick every two steps. Every record states its budget in its tags
and, through :mod:`eurosat_lib.sanity`, whether it was still improving ("not converged").

**Evaluation.** Test accuracy on the whole test split (5,400 images) is the number compared;
nothing is chosen on it. Validation monitors early stopping only: the whole validation split for
the frozen arm (cached features: free), a fixed stratified subset (``crossover_val_n_per_class``,
the same images for every run) for the arms that run the network on every validation pass.

Runs are ordinary run folders under ``<out_dir>/crossover`` (:func:`.core.run`), so the study
resumes after a kill and a re-run reuses every finished run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
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
from ..summaries.finetune import finetune_budget, listed, network_label, setup_table
from ..summaries.render import compare_text, flag_note, read_json, record_warnings
from .core import ExperimentSpec, RunResult, run, train_subset
from .params import backbone_kwargs
from .recipes import BN_MOMENTUM_TAG, scratch_model_fn, unfreeze_policy

#: The arms, in the order figures and tables list them.
ARMS = ("frozen", "finetune_top", "finetune_all", "scratch")
#: The arms compared with ``frozen`` to find the crossover.
FINETUNED = ("finetune_top", "finetune_all")
#: Words for the arms (legends, tables, prose).
ARM_LABELS = {
    "frozen": "frozen base + head",
    "finetune_top": "fine-tuned: top blocks",
    "finetune_all": "fine-tuned: all layers",
    "scratch": "from scratch",
}
#: The size meaning "the whole training split" (its classes hold 1,200-1,800 images, so no single
#: ``n_per_class`` names it).
WHOLE_SPLIT = "all"
#: Sub-folder of a chapter's ``out_dir`` holding the study's runs.
SUBDIR = "crossover"
#: The chapter that runs the study: its runs live in ``<runs>/<profile>/03_finetune/crossover``.
HOME = "03_finetune"
#: Images per step of every phase. Small, because the smallest sizes hold 50 images; the same
#: for every arm and size so that "steps" means the same amount of data everywhere.
BATCH = 32
#: Early-stopping patience (epochs) of the head phase, as in the chapter's two-phase recipe.
HEAD_PATIENCE = 5
#: Scratch optimiser: AdamW (decoupled weight decay regularises a network that starts from
#: nothing) at a rate 3-10x the fine-tuning rates: random weights have no features to protect.
SCRATCH_LR = 1e-3
SCRATCH_WEIGHT_DECAY = 1e-4


# --------------------------------------------------------------------------------------------
# Sizes, budgets and specs
# --------------------------------------------------------------------------------------------


def study_dir(P: SimpleNamespace) -> Path:
    """Where the study's run folders live.

    Args:
        P: the chapter's parameters (``out_dir``).

    Returns:
        ``<P.out_dir>/crossover``.
    """
    return Path(P.out_dir) / SUBDIR


def records_dir(chapter_out_dir: str | Path) -> Path:
    """The study's folder as seen from another chapter of the same profile.

    Args:
        chapter_out_dir: that chapter's ``out_dir`` (e.g. ``book/runs/cpu/04_overfitting``).

    Returns:
        ``<its parent>/03_finetune/crossover``.
    """
    return Path(chapter_out_dir).parent / HOME / SUBDIR


def size_label(size: int | str) -> str:
    """A size as it appears in run names.

    Args:
        size: images per class, or :data:`WHOLE_SPLIT`.

    Returns:
        ``"n20"`` for 20, ``"all"`` for the whole split.
    """
    return WHOLE_SPLIT if size == WHOLE_SPLIT else f"n{int(size)}"


def images_per_class(data: D.EuroSAT, size: int | str) -> float:
    """Labelled training images per class at ``size`` (the figures' x axis).

    Args:
        data: the dataset (its training split).
        size: images per class, or :data:`WHOLE_SPLIT`.

    Returns:
        ``size``, or the whole split's mean over classes (1,620 on EuroSAT).
    """
    if size == WHOLE_SPLIT:
        return len(data.split_indices("train")) / data.num_classes
    return float(size)


@dataclass(frozen=True)
class Budget:
    """How long one arm trains at one size (recorded in the run's tags).

    Attributes:
        train_images: labelled images (before repetition).
        passes_per_epoch: times the training set is repeated within one epoch.
        steps_per_epoch: optimiser steps per epoch (batches of :data:`BATCH`).
        epochs: epochs of the main phase (fine-tuning, or the scratch cap).
        head_epochs: epochs of the head phase (0 for scratch); early stopping may end it sooner.
        patience: early-stopping patience of the main phase in epochs, or None (runs every epoch).
        rule: the budget in words.
    """

    train_images: int
    passes_per_epoch: int
    steps_per_epoch: int
    epochs: int
    head_epochs: int
    patience: int | None
    rule: str

    @property
    def steps(self) -> int:
        """Optimiser steps of the main phase at its full length (``epochs * steps_per_epoch``)."""
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """The budget as the run's tags record it.

        Returns:
            The fields, ``steps`` and ``rule``, JSON-ready.
        """
        return {"train_images": self.train_images, "passes_per_epoch": self.passes_per_epoch,
                "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs, "steps": self.steps,
                "head_epochs": self.head_epochs, "patience": self.patience, "rule": self.rule}  # fmt: skip


def budget(P: SimpleNamespace, arm: str, train_images: int) -> Budget:
    """The training budget of ``arm`` on ``train_images`` labelled images (see the module docstring).

    Args:
        P: resolved chapter parameters (``epochs_head``, ``crossover_epoch_steps``,
            ``crossover_epochs``, ``crossover_min_steps``, ``crossover_scratch_epochs``,
            ``crossover_scratch_min_steps``, ``crossover_patience``).
        arm: one of :data:`ARMS`.
        train_images: size of the training subset.

    Returns:
        The :class:`Budget`.

    Raises:
        ValueError: an unknown arm or an empty training set.
    """
    if arm not in ARMS:
        raise ValueError(f"unknown crossover arm {arm!r}; expected one of {list(ARMS)}")
    if train_images < 1:
        raise ValueError(f"crossover arm {arm!r} got an empty training set")
    # repeat a small set within an epoch until the epoch holds crossover_epoch_steps full batches
    passes = max(1, math.ceil(P.crossover_epoch_steps * BATCH / train_images))
    per_epoch = math.ceil(train_images * passes / BATCH)
    if arm == "scratch":
        epochs = max(P.crossover_scratch_epochs, math.ceil(P.crossover_scratch_min_steps / per_epoch))
        rule = (f"{epochs} epochs = {epochs * per_epoch} steps (at least {P.crossover_scratch_min_steps} steps, "
                f"{P.crossover_scratch_epochs} epochs at large sizes), cosine decay to 0, no early stopping: the whole budget")
        return Budget(train_images, passes, per_epoch, epochs, 0, None, rule)
    if arm == "frozen":
        rule = f"head only: up to {P.epochs_head} epochs, early stopping after {HEAD_PATIENCE} without a higher validation accuracy"
        return Budget(train_images, passes, per_epoch, 0, P.epochs_head, None, rule)
    epochs = max(P.crossover_epochs, math.ceil(P.crossover_min_steps / per_epoch))
    rule = (f"head phase (up to {P.epochs_head} epochs), then up to {epochs} fine-tuning epochs = {epochs * per_epoch} "
            f"steps (at least {P.crossover_min_steps} steps, {P.crossover_epochs} epochs at large sizes), cosine decay "
            f"to 0 over the cap, early stopping after {P.crossover_patience} epochs without a higher validation accuracy")
    return Budget(train_images, passes, per_epoch, epochs, P.epochs_head, P.crossover_patience, rule)


#: What every arm's early stopping watches (and restores the best epoch of). Not the validation
#: loss: fine-tuned on 5 images per class, a network's validation loss was lowest after its first
#: epoch and then rose (growing confidence on the images it got wrong) while its validation
#: accuracy climbed another 7-8 points; stopping on the loss kept the first epoch's weights and
#: scored the arm 7 points below where it was heading. The frozen arm watches the same thing, so
#: every arm is compared at the same kind of plateau.
MONITOR = "val_accuracy"


def arm_phases(P: SimpleNamespace, arm: str, b: Budget) -> tuple[T.PhaseConfig, ...]:
    """The training phases of one arm under budget ``b``.

    Args:
        P: resolved chapter parameters (``backbone``, ``lr_head``, ``crossover_lr``,
            ``crossover_top_fraction``).
        arm: one of :data:`ARMS`.
        b: its :func:`budget`.

    Returns:
        One phase (``frozen``: head on cached features; ``scratch``: everything) or two
        (head, then fine-tuning).
    """
    if arm == "scratch":
        # Everything trains from the first step, BatchNorm too, for the whole budget with cosine
        # decay to 0 (the final weights are scored; the sanity flag says if it was still improving)
        return (T.PhaseConfig("scratch", epochs=b.epochs, learning_rate=SCRATCH_LR, batch_size=BATCH, optimizer="adamw",
                              weight_decay=SCRATCH_WEIGHT_DECAY, schedule="cosine", early_stopping=b.patience,
                              unfreeze="all", freeze_bn=False),)  # fmt: skip
    # The head phase of every pretrained arm: cached features of the frozen base (the frozen
    # arm IS this phase; the fine-tuned arms start from it, so fine-tuning never pushes
    # gradients from a random head into the pretrained blocks).
    head = T.PhaseConfig("head", epochs=b.head_epochs, learning_rate=P.lr_head, batch_size=BATCH,
                         early_stopping=HEAD_PATIENCE, early_stopping_monitor=MONITOR, use_feature_cache=True)  # fmt: skip
    if arm == "frozen":
        return (head,)
    # Fine-tuning: a low peak rate decayed to 0 (the headline recipe's schedule), BatchNorm kept
    # in inference mode (small batches would overwrite its ImageNet statistics: chapter 3,
    # section 4). Early stopping with patience under a cap, so that each run is compared at its
    # own plateau; the flags still say when a run hit the cap while improving.
    fraction = 1.0 if arm == "finetune_all" else P.crossover_top_fraction
    tune = T.PhaseConfig("finetune", epochs=b.epochs, learning_rate=P.crossover_lr, batch_size=BATCH, schedule="cosine",
                         early_stopping=b.patience, early_stopping_monitor=MONITOR,
                         unfreeze=unfreeze_policy(P.backbone, fraction), freeze_bn=True)  # fmt: skip
    return (head, tune)


def arm_spec(P: SimpleNamespace, arm: str, size: int | str, seed: int, train_images: int) -> ExperimentSpec:
    """One run of the study: ``arm`` on the ``size`` subset of seed ``seed``.

    Args:
        P: resolved chapter parameters (see :func:`budget` and :func:`arm_phases`, plus
            ``alpha``, ``weights``, ``crossover_image_size``, ``crossover_val_n_per_class``,
            ``crossover_test_n_per_class``).
        arm: one of :data:`ARMS`.
        size: images per class, or :data:`WHOLE_SPLIT`.
        seed: training seed; also picks the nested subset.
        train_images: images in that subset (sets the budget).

    Returns:
        The run's spec, named ``<arm>_<size>_seed<seed>``; its tags hold the arm, size and budget.
    """
    b = budget(P, arm, train_images)
    scratch = arm == "scratch"
    tags: dict[str, Any] = {"study": "crossover", "arm": arm, "size": size, "budget": b.to_dict()}
    if scratch:
        tags[BN_MOMENTUM_TAG] = M.SCRATCH_BN_MOMENTUM
    return ExperimentSpec(
        name=f"{arm}_{size_label(size)}_seed{seed}",
        backbone=P.backbone,
        backbone_kwargs=backbone_kwargs(P.backbone, P.alpha),
        weights=None if scratch else P.weights,
        image_size=P.crossover_image_size,
        augment="flip",  # the same for every arm; cached features are the un-augmented images
        phases=arm_phases(P, arm, b),
        seed=seed,
        n_per_class=None if size == WHOLE_SPLIT else int(size),
        # cached features make the whole validation split free for the frozen arm (smoke: tiny everywhere)
        val_n_per_class=None if arm == "frozen" and P.profile != "smoke" else P.crossover_val_n_per_class,
        test_n_per_class=P.crossover_test_n_per_class,
        eval_splits=("val", "test"),
        tags=tags,
    )


def plan(P: SimpleNamespace, data: D.EuroSAT) -> list[tuple[ExperimentSpec, float]]:
    """Every run of the study with a rough relative cost, cheapest first.

    The frozen arm runs at every size with ``crossover_cheap_seeds``, the others with
    ``crossover_seeds``. The cost counts images pushed through the network (training steps,
    weighted by how much of it trains, plus validation passes); it only orders the runs.

    Args:
        P: resolved chapter parameters.
        data: the dataset (its training split sets the subset sizes).

    Returns:
        ``[(spec, cost)]`` sorted by cost.

    Raises:
        ValueError: A size asks for more training images per class than the smallest class has.
    """
    train_labels = data.labels[data.split_indices("train")]
    smallest = int(np.bincount(train_labels, minlength=data.num_classes).min())
    too_big = [s for s in P.crossover_sizes if s != WHOLE_SPLIT and int(s) > smallest]
    if too_big:
        raise ValueError(f"crossover_sizes {too_big} ask for more training images per class than the smallest class has "
                         f"({smallest}); use sizes up to {smallest}, and {WHOLE_SPLIT!r} for the whole training split")
    out = []
    n_val = P.crossover_val_n_per_class * data.num_classes if P.crossover_val_n_per_class else len(data.split_indices("val"))
    weight = {"frozen": 0.0, "finetune_top": 0.6, "finetune_all": 1.0, "scratch": 1.0}
    for arm in ARMS:
        seeds = P.crossover_cheap_seeds if arm == "frozen" else P.crossover_seeds
        for size in P.crossover_sizes:
            n = len(train_labels) if size == WHOLE_SPLIT else int(size) * data.num_classes
            b = budget(P, arm, n)
            # features once (0.3: inference only), then the trained part's steps and its validation passes
            cost = 0.3 * n * b.passes_per_epoch + weight[arm] * (b.steps * BATCH + 0.3 * n_val * b.epochs)
            out += [(arm_spec(P, arm, size, seed, n), cost) for seed in seeds]
    return sorted(out, key=lambda t: t[1])


# --------------------------------------------------------------------------------------------
# Running the study, reading its table
# --------------------------------------------------------------------------------------------


def record_row(record: R.RunRecord, run_dir: Path, trained: bool) -> dict[str, Any]:
    """One table row from a finished run of a study built on these arms (this one, and the similarity study).

    Args:
        record: The run's record (its tags name ``arm`` and ``size``).
        run_dir: The run's folder.
        trained: Whether this call trained the run (False: reused).

    Returns:
        ``arm``, ``size``, ``n_per_class``, ``seed``, accuracies, test images, minutes (NaN
        when :func:`eurosat_lib.runs.timing_trusted` says the timing is not a measurement), epochs
        run, budget rule, flags, ``trained`` and ``run``.
    """
    p = record["params"]
    tags = p.get("tags") or {}
    m = record["metrics"]
    size = tags.get("size")
    k = (record["model_info"] or {}).get("num_classes") or 10
    # the x axis: images per class; the whole split's is its mean per class (1,620 on EuroSAT)
    per_class = (tags.get("budget") or {}).get("train_images", np.nan) / k if size == WHOLE_SPLIT else float(size)
    return {
        "arm": tags.get("arm"),
        "size": size,
        "n_per_class": per_class,
        "seed": p.get("seed"),
        "test_acc": m.get("test", {}).get("accuracy"),
        "val_acc": m.get("val", {}).get("accuracy"),
        "test_images": m.get("test", {}).get("n"),
        "minutes": R.trusted_minutes(record),  # NaN unless a quiet measurement
        "epochs_run": R.epochs_run(record) or 0,
        "budget": (tags.get("budget") or {}).get("rule"),
        "warnings": "; ".join(record["warnings"]),
        "trained": trained,
        "run": str(run_dir),
    }


#: Columns of the study's table, in order.
COLUMNS = ["arm", "size", "n_per_class", "seed", "test_acc", "val_acc", "test_images", "minutes", "epochs_run", "budget",
           "warnings", "trained", "run"]  # fmt: skip


def _tidy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["arm"] = pd.Categorical(df["arm"], categories=list(ARMS), ordered=True)
    return df.sort_values(["arm", "n_per_class", "seed"], kind="stable").reset_index(drop=True)


def run_study(
    P: SimpleNamespace, data: D.EuroSAT, *, progress: Callable[[str], None] | None = None, arms: Sequence[str] = ARMS
) -> pd.DataFrame:
    """Run (or reuse) every run of the study, cheapest first, and return the tidy table.

    Args:
        P: resolved chapter parameters (``out_dir``, ``profile`` and the ``crossover_*`` fields).
        data: the dataset.
        progress: called with one line per run (e.g. ``print``); None: silent.
        arms: the arms to run (default all).

    Returns:
        One row per run: ``arm``, ``size``, ``n_per_class`` (images per class, the x axis),
        ``seed``, ``test_acc``, ``val_acc``, ``test_images``, ``minutes``, ``epochs_run``,
        ``budget`` (in words), ``warnings`` (sanity flags), ``trained`` (False: reused) and ``run``.
    """
    import keras

    where = SimpleNamespace(**{**vars(P), "out_dir": str(study_dir(P))})
    todo = [(s, c) for s, c in plan(P, data) if s.tags["arm"] in arms]
    rows = []
    for i, (spec, _) in enumerate(todo, 1):
        t0 = time.perf_counter()
        train = train_subset(data, spec)
        passes = spec.tags["budget"]["passes_per_epoch"]
        tiled = train if passes == 1 else train.take(np.tile(np.arange(len(train)), passes))
        # reuse_features=False: each run computes its own head features (seconds at 64 px), so its
        # minutes are a measurement of what the arm costs, not of what an earlier run cached
        res: RunResult = run(where, spec, data, train_data=tiled, save_model=False, keep_predictions=False,
                             model_fn=scratch_model_fn() if spec.tags["arm"] == "scratch" else None,
                             reuse_features=False)  # fmt: skip
        trained = res.model is not None
        row = record_row(res.record, res.run_dir, trained)
        rows.append(row)
        if trained:
            # dozens of models in one process: free each one's graph state before the next
            keras.backend.clear_session()
        if progress is not None:
            flags = f" [{row['warnings']}]" if row["warnings"] else ""
            how = f"trained in {(time.perf_counter() - t0) / 60:.1f} min" if trained else "reused"
            progress(f"[{i}/{len(todo)}] {spec.name}: {how}, test accuracy {row['test_acc']:.2%}{flags}")
    return _tidy(rows)


def read_table(folder: str | Path) -> pd.DataFrame:
    """The study's table from its finished records alone (trains nothing; chapter 4 draws from it).

    Args:
        folder: the study's folder (:func:`study_dir`), e.g. ``book/runs/cpu/03_finetune/crossover``.

    Returns:
        The table of :func:`run_study` (``trained`` is False everywhere); empty when there are no
        finished records.
    """
    return _tidy([record_row(rec, run_dir, False) for run_dir, rec in R.complete_records(folder, study="crossover")])


# --------------------------------------------------------------------------------------------
# The answer: curves, paired differences, the crossover size
# --------------------------------------------------------------------------------------------


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy per arm and size with a 95 % interval over seeds (the figure's lines and bands).

    The interval is Student-t over the seeds plus the test set's own binomial noise
    (:func:`eurosat_lib.stats.diff_from_moments`); with one seed there is none (NaN).

    Args:
        table: :func:`run_study` / :func:`read_table` rows.

    Returns:
        One row per (arm, size): ``arm``, ``label``, ``size``, ``n_per_class``, ``mean``, ``low``,
        ``high``, ``seeds``, ``flagged`` (runs with a sanity flag).
    """
    rows = []
    for (arm, size), g in table.groupby(["arm", "size"], observed=True, sort=False):
        acc = g["test_acc"].astype(float)
        n_test = int(g["test_images"].max()) if g["test_images"].notna().any() else None
        p = float(np.clip(acc.mean(), 0, 1))
        eval_var = stats.binomial_se(p, n_test) ** 2 if n_test else 0.0
        d = stats.diff_from_moments(float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else math.nan, len(acc),
                                    eval_var=eval_var)  # fmt: skip
        rows.append({"arm": arm, "label": ARM_LABELS.get(str(arm), str(arm)), "size": size,
                     "n_per_class": float(g["n_per_class"].iloc[0]), "mean": d.mean, "low": d.low, "high": d.high,
                     "seeds": len(acc), "flagged": int((g["warnings"].fillna("") != "").sum())})  # fmt: skip
    out = pd.DataFrame(rows, columns=["arm", "label", "size", "n_per_class", "mean", "low", "high", "seeds", "flagged"])
    known = [a for a in ARMS if a in set(out["arm"].astype(str))]
    out["arm"] = pd.Categorical(out["arm"].astype(str), categories=known + sorted(set(out["arm"].astype(str)) - set(known)),
                                ordered=True)  # fmt: skip
    return out.sort_values(["arm", "n_per_class"], kind="stable").reset_index(drop=True)


def differences(table: pd.DataFrame, arms: Sequence[str] = FINETUNED, baseline: str = "frozen") -> pd.DataFrame:
    """Per fine-tuned arm and size: test accuracy minus the frozen arm's, paired by seed, with a 95 % CI.

    Seeds pair the runs (same training images, :func:`.core.train_subset`); only seeds both arms
    ran are used. The interval is :func:`eurosat_lib.stats.paired_diff` with the test set's size
    (``n_eval``), and the verdict word is :func:`eurosat_lib.stats.verdict`'s: a difference whose
    interval includes zero is "no measurable difference", never a win.

    Args:
        table: :func:`run_study` / :func:`read_table` rows.
        arms: the arms compared with ``baseline``.
        baseline: the reference arm.

    Returns:
        One row per (arm, size): ``arm``, ``size``, ``n_per_class``, ``diff``, ``low``, ``high``,
        ``seeds``, ``verdict``, ``text`` (:func:`eurosat_lib.stats.format_diff`), ``flags`` (the sanity
        flags of the runs involved, joined) and ``note`` (the same as the page shows them beside a number,
        :func:`eurosat_lib.summaries.render.flag_note`: " ⚠ not converged (2/6 runs)"; ``""`` when none).
    """
    rows = []
    base = table[table["arm"] == baseline]
    for arm in arms:
        mine = table[table["arm"] == arm]
        for size, g in mine.groupby("size", sort=False):
            a = g.set_index("seed")["test_acc"].astype(float)
            b = base[base["size"] == size].set_index("seed")["test_acc"].astype(float)
            seeds = sorted(set(a.index) & set(b.index))
            if not seeds:
                continue
            n_test = pd.concat([g, base[base["size"] == size]])["test_images"].dropna()
            d = stats.paired_diff(a[seeds].to_numpy(), b[seeds].to_numpy(), n_eval=int(n_test.min()) if len(n_test) else None)
            involved = pd.concat([g[g["seed"].isin(seeds)], base[(base["size"] == size) & base["seed"].isin(seeds)]])
            per_run = [[f for f in w.split("; ") if f] for w in involved["warnings"].fillna("")]
            flags = sorted({f for w in per_run for f in w})
            rows.append({"arm": arm, "size": size, "n_per_class": float(g["n_per_class"].iloc[0]), "diff": d.mean,
                         "low": d.low, "high": d.high, "seeds": d.n, "verdict": d.verdict, "text": stats.format_diff(d),
                         "flags": ", ".join(flags), "note": flag_note(per_run)})  # fmt: skip
    out = pd.DataFrame(rows, columns=["arm", "size", "n_per_class", "diff", "low", "high", "seeds", "verdict", "text", "flags",
                                      "note"])  # fmt: skip
    return out.sort_values(["arm", "n_per_class"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Crossover:
    """Where one fine-tuned arm beats the frozen base, size by size, and whether that makes a crossover.

    Attributes:
        arm: the fine-tuned arm.
        n_per_class: the crossover (images per class): the size from which on every size's interval lies
            above zero while no smaller size's does; the smallest size measured when every size's does.
            None when there is none: no size wins, the largest does not, or wins lie on both sides of a
            size that does not win (a tie between two wins is no crossover).
        size: the same size as the study names it (an int or ``"all"``), or None.
        sizes: the sizes compared, ascending.
        verdicts: each size's verdict (:func:`eurosat_lib.stats.verdict`), in the order of ``sizes``.
        notes: each size's flag note (``differences``' ``note``), in the same order.
    """

    arm: str
    n_per_class: float | None
    size: int | str | None
    sizes: tuple[float, ...]
    verdicts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        """Whether the verdicts place a crossover (or a win from the smallest size measured on)."""
        return self.n_per_class is not None

    @property
    def from_smallest(self) -> bool:
        """Whether fine-tuning wins at every size measured: the crossover, if any, lies below the range."""
        return self.found and bool(self.sizes) and self.n_per_class == self.sizes[0]

    def describe(self, with_flags: bool = True) -> str:
        """The answer in words, as it follows "fine-tuning beats the frozen base": every size's verdict counts.

        Args:
            with_flags: Name the sizes whose comparison a flagged run enters, with its ⚠ (off where the
                text quotes those sizes' numbers with their own ⚠).

        Returns:
            E.g. "at every size measured (5-1,620 labelled images per class; ...)", "from 150 labelled
            images per class on (...)", or "at 5, 20 and 150 labelled images per class but not at 50 (...)".
        """
        if not self.sizes:
            return "not measured (no paired runs)"
        span = f"{self.sizes[0]:,.0f}-{self.sizes[-1]:,.0f} labelled images per class"
        flagged = [f"at {s:,.0f}:{n}" for s, n in zip(self.sizes, self.notes) if n]
        flags = f" (flagged runs enter the comparison {'; '.join(flagged)})" if flagged and with_flags else ""
        # a Crossover built without verdicts (older callers) knows only where its wins start
        verdicts = self.verdicts or (("better",) * len(self.sizes) if self.from_smallest else ())
        wins = [s for s, v in zip(self.sizes, verdicts) if v == "better"]
        rest = {}
        for s, v in zip(self.sizes, verdicts):
            if v != "better":
                rest.setdefault(v, []).append(s)
        not_won = "; ".join(f"{v} at {listed([f'{x:,.0f}' for x in ss])}" for v, ss in rest.items())
        if self.from_smallest:
            return (f"at every size measured ({span}), from the smallest on: no crossover in that range, any lies below "
                    f"{self.sizes[0]:,.0f}{flags}")
        if self.found:
            return f"from {self.n_per_class:,.0f} labelled images per class on" + (f" (below it: {not_won})" if not_won else "") + flags
        if not wins:
            return f"at none of the sizes measured ({not_won}): no crossover in the range studied ({span}){flags}"
        return (f"at {listed([f'{x:,.0f}' for x in wins])} labelled images per class but not at every size ({not_won}): no size above which "
                f"it always wins, so no crossover in the range studied ({span}){flags}")


def crossover_size(diffs: pd.DataFrame, arm: str) -> Crossover:
    """Where fine-tuning ``arm`` beats the frozen base, measured: the crossover if the verdicts place one.

    A size counts only when its 95 % interval excludes zero in fine-tuning's favour (verdict
    "better"). A crossover is claimed only when every size from it on counts and no smaller size
    does: fine-tuning does not win below it and wins from it on. When every size counts, the answer
    is "from the smallest size measured" (any crossover lies below the range). A win at a middle
    size followed by a tie is not a crossover, nor is a tie between two wins (fine-tuning winning
    below and above a size where it does not), and a tie is never a win.

    Args:
        diffs: :func:`differences` rows.
        arm: the fine-tuned arm.

    Returns:
        A :class:`Crossover` (``n_per_class`` None when the verdicts place none).
    """
    rows = diffs[diffs["arm"] == arm].sort_values("n_per_class").reset_index(drop=True)
    sizes = tuple(float(x) for x in rows["n_per_class"])
    verdicts = tuple(str(v) for v in rows["verdict"])
    notes = tuple(str(n) for n in rows["note"].fillna("")) if "note" in rows else ("",) * len(rows)
    wins = [v == "better" for v in verdicts]
    k = len(wins)
    while k > 0 and wins[k - 1]:
        k -= 1  # the wins' unbroken run up to the largest size starts at k
    if k == len(wins) or any(wins[:k]):
        return Crossover(arm, None, None, sizes, verdicts, notes)
    return Crossover(arm, sizes[k], rows.loc[k, "size"], sizes, verdicts, notes)


def difference_table(diffs: pd.DataFrame) -> pd.DataFrame:
    """:func:`differences` for display.

    Args:
        diffs: :func:`differences` rows.

    Returns:
        One row per size (labelled images per class), one column per fine-tuned arm, each cell the
        difference with its interval and verdict ("+2.1 points (95 % CI ...): better"), then the ⚠ of
        any flagged run that enters it ("⚠ not converged (2/6 runs)"); empty when there are no rows.
    """
    if diffs.empty:
        return pd.DataFrame()
    note = diffs["note"].fillna("") if "note" in diffs else diffs["flags"].map(lambda f: f" ⚠ {f}" if f else "")
    cell = diffs.assign(cell=diffs["text"] + ": " + diffs["verdict"] + note)
    wide = cell.pivot(index="n_per_class", columns="arm", values="cell")
    wide = wide[[a for a in FINETUNED if a in wide.columns]]
    wide.columns = [f"{ARM_LABELS[a]} − frozen" for a in wide.columns]
    wide.index = [f"{n:,.0f}" for n in wide.index]
    wide.index.name = "labelled images per class"
    return wide


#: The headline runs (keys of :data:`eurosat_lib.runs.HEADLINE_RUNS`) the study's text sets its
#: numbers beside.
HEADLINE_KEYS = ("frozen", "finetune", "scratch_plateau")


def headline_runs(P: SimpleNamespace) -> dict[str, Path]:
    """The finished headline runs of the chapter's profile, for the study's text to read.

    Args:
        P: the chapter's parameters (``out_dir``: ``<runs>/<profile>/03_finetune``).

    Returns:
        Key of :data:`HEADLINE_KEYS` -> run folder (:func:`eurosat_lib.runs.headline_run_dir`), for
        those with a record (none at a profile without headline runs, e.g. smoke).
    """
    dirs = {k: R.headline_run_dir(Path(P.out_dir).parent, k) for k in HEADLINE_KEYS}
    return {k: d for k, d in dirs.items() if (d / "record.json").is_file()}


def _note(rows: pd.DataFrame) -> str:
    """The ⚠ of the runs in ``rows`` (their ``warnings`` column), as beside a number they make."""
    return flag_note([[f for f in str(w).split("; ") if f] for w in rows["warnings"].fillna("")])


def _record(run: Any) -> dict[str, Any] | None:
    return read_json(Path(str(run)) / "record.json") if run is not None else None


def scratch_note(table: pd.DataFrame, plateau: Any = None) -> str:
    """What bounds the scratch arm at the study's largest size, read from its runs' curves, and the plateau run beside it.

    Args:
        table: :func:`run_study` / :func:`read_table` rows (``run`` names each record's folder).
        plateau: the folder of a from-scratch run of the same network trained to its plateau (the
            headline's ``scratch_plateau``), or None.

    Returns:
        Sentences (Markdown), empty without scratch runs.
    """
    from ..sanity import best_epoch, monitored_images
    from ..stats import independent_diff

    sc = table[table["arm"] == "scratch"]
    if sc.empty:
        return ""
    n_max = sc["n_per_class"].max()
    big = sc[sc["n_per_class"] == n_max]
    recs = [_record(r) for r in big["run"]] if "run" in big else []
    # (best epoch, epochs) of the last phase that watched validation: the phase whose weights are scored
    bests = [b for b in (best_epoch((r or {}).get("history"), last_phase=True) for r in recs) if b]
    text = ""
    if bests:
        at_end = sum(b == n for b, n in bests)
        epochs = ", ".join(str(b) for b, _ in bests)
        text = (f" Scratch trains for its whole budget; at {n_max:,.0f} images per class its best validation epoch was "
                f"{epochs} of {bests[0][1]} in its {len(bests)} runs")
        if at_end:
            text += (f" (the last in {at_end} of them): it was still climbing when the budget ended, so that number is "
                     "bound by the budget, a lower bound for this network from random weights, not its reach")
            if not _note(big):
                # the images the sanity rule judged the curve on (sanity.flags_from_record)
                watched = (monitored_images(recs[0]) or ((recs[0].get("metrics") or {}).get("val") or {}).get("n")) if recs[0] else None
                text += (" (no run is flagged: the last epochs' gain is within the noise of the "
                         + (f"{watched:,} " if watched else "") + "validation images it watched)")
        text += "."
    rec = _record(plateau)
    if rec and (rec.get("metrics") or {}).get("test"):
        test = rec["metrics"]["test"]
        ph = (rec["params"].get("phases") or [{}])[-1]
        fz = table[(table["arm"] == "frozen") & (table["n_per_class"] == n_max)]
        run_epochs = R.phase_epochs_run(rec, ph.get("name")) or ph.get("epochs")
        text += (f" Trained with its own longer recipe ({run_epochs} epochs at {rec['params'].get('image_size')} px, "
                 f"{ph.get('optimizer', '').replace('adamw', 'AdamW').replace('adam', 'Adam')}, peak learning rate "
                 f"{ph.get('learning_rate'):g}, {ph.get('schedule')} schedule; `{Path(str(plateau)).as_posix()}`), the same "
                 f"network ({network_label(rec['params'].get('backbone'), (rec['params'].get('backbone_kwargs') or {}).get('alpha'))}) "
                 f"from random weights reaches {test['accuracy']:.2%}{flag_note([record_warnings(rec)])} on "
                 f"{(rec.get('extra') or {}).get('train_size', 0):,} training images")  # fmt: skip
        if len(fz) and fz["test_images"].notna().any():
            p_fz, n = float(fz["test_acc"].mean()), int(fz["test_images"].min())
            d = independent_diff(float(test["accuracy"]), int(test["n"]), p_fz, n)
            text += (f"; against this study's frozen arm at {n_max:,.0f} images per class ({p_fz:.1%}{_note(fz)}): "
                     f"{compare_text(d, [record_warnings(rec)], [[f for f in str(w).split('; ') if f] for w in fz['warnings'].fillna('')])}")
        text += "."
    return text


def narrative(table: pd.DataFrame, diffs: pd.DataFrame, plateau: Any = None) -> str:
    """The crossover section's prose, every number and verdict word read from the tables and records.

    Args:
        table: :func:`run_study` rows.
        diffs: :func:`differences` of that table.
        plateau: the folder of the from-scratch run trained to its plateau (:func:`headline_runs`'
            ``scratch_plateau``), or None.

    Returns:
        Markdown: each fine-tuned arm's verdict size by size (a crossover only where the verdicts place
        one) with the differences at the smallest size, at every size it does not win and at the largest;
        where scratch stands and what bounds it; which runs carry sanity flags. Every number a flagged
        run enters carries its ⚠.
    """
    if table.empty or diffs.empty:
        return "*No finished crossover runs yet: run `python -m eurosat_lib study crossover` first.*"
    cur = curves(table)
    lines = []
    for arm in FINETUNED:
        d = diffs[diffs["arm"] == arm].sort_values("n_per_class").reset_index(drop=True)
        if d.empty:
            continue
        cx = crossover_size(diffs, arm)
        line = f"- **{ARM_LABELS[arm]}** beats the frozen base {cx.describe(with_flags=False)}."
        quoted = sorted({0, len(d) - 1} | {i for i in range(len(d)) if d.loc[i, "verdict"] != "better"})
        for i in quoted:
            r = d.loc[i]
            note = r["note"] if "note" in d and isinstance(r["note"], str) else ""
            line += f" At {r['n_per_class']:,.0f} images per class: {r['text']}: {r['verdict']}{note}."
        lines.append(line)
    sc = cur[cur["arm"] == "scratch"].sort_values("n_per_class")
    if not sc.empty:
        ends = [sc.iloc[0]] + ([sc.iloc[-1]] if len(sc) > 1 else [])
        said = " and ".join(f"{r['mean']:.1%}{_note(table[(table['arm'] == 'scratch') & (table['n_per_class'] == r['n_per_class'])])} "
                            f"at {r['n_per_class']:,.0f} images per class" for r in ends)  # fmt: skip
        vs = differences(table, arms=("scratch",), baseline="frozen")
        vs = vs[vs["n_per_class"].isin([r["n_per_class"] for r in ends])].sort_values("n_per_class")
        against = "; ".join(f"{r['text']}: {r['verdict']}{r['note']} at {r['n_per_class']:,.0f}" for _, r in vs.iterrows())
        lines.append(f"- **From scratch** reaches {said} on test" + (f"; against the frozen base, paired by seed: {against}." if against else ".")
                     + scratch_note(table, plateau))  # fmt: skip
    flagged = table[table["warnings"].fillna("") != ""]
    if len(flagged):
        kinds = sorted({f for w in flagged["warnings"] for f in w.split("; ") if f})
        names = (": " + ", ".join(f"`{Path(str(r)).name}`" for r in flagged["run"])) if "run" in flagged else ""
        lines.append(f"- {len(flagged)} of {len(table)} runs carry a sanity flag ({', '.join(kinds)}{names}); every "
                     "difference they enter carries its ⚠, and a flagged number is a property of its budget, not a finding.")
    return "\n".join(lines)


def _first_run(table: pd.DataFrame | None, arm: str, largest: bool = True) -> Any:
    if table is None or table.empty or "run" not in table:
        return None
    rows = table[table["arm"] == arm]
    if rows.empty:
        return None
    n = rows["n_per_class"].max() if largest else rows["n_per_class"].min()
    return rows[rows["n_per_class"] == n].sort_values("seed")["run"].iloc[0]


def reconciliation(P: SimpleNamespace, diffs: pd.DataFrame, lr_chosen: float | None = None,
                   depth: pd.DataFrame | None = None, table: pd.DataFrame | None = None,
                   headline: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Why the chapter's small-data sweep, the crossover and the headline run disagree, in their own numbers.

    The three setups are set side by side from their records (every row that differs is named), and
    the explaining sentences are chosen by what was measured: the sweep's own all-layers-vs-frozen
    difference (when ``depth`` is given), the budget it had, where the crossover lies relative to the
    sweep's data size, and (with the headline runs) how the two input sizes move the frozen base and
    the fine-tuned network.

    Args:
        P: the chapter's parameters (``n_per_class``, ``epochs_finetune``, ``lr_finetune``,
            ``val_n_per_class``, ``crossover_image_size``, ``crossover_min_steps``, ``crossover_lr``).
        diffs: :func:`differences` rows.
        lr_chosen: the learning rate the chapter's grid chose on validation (the depth sweep's).
        depth: the chapter's depth sweep (``unfreeze_fraction``, ``seed``, ``val_accuracy``, ``run``), if run.
        table: the study's :func:`run_study` rows (its records), if at hand.
        headline: :func:`headline_runs` (``frozen`` and ``finetune`` are read), if any.

    Returns:
        Markdown (paragraphs and the setups' table), or a note that the study has no results yet.
    """
    d = diffs[diffs["arm"] == "finetune_all"].sort_values("n_per_class")
    if d.empty:
        return "*The crossover study has no paired results yet.*"
    headline = headline or {}
    cx = crossover_size(diffs, "finetune_all")
    sweep_n = P.n_per_class
    at = float(sweep_n) if sweep_n else float(d["n_per_class"].max())
    near = d.iloc[int(np.argmin(np.abs(np.log(d["n_per_class"].to_numpy(dtype=float)) - np.log(at))))]
    full = d.iloc[-1]
    rate = f"{lr_chosen:g} (chosen on validation)" if lr_chosen is not None else f"{P.lr_finetune:g}"
    sweep_run = None
    if depth is not None and "run" in depth and (depth["unfreeze_fraction"] == 1.0).any():
        sweep_run = depth[depth["unfreeze_fraction"] == 1.0].sort_values("seed")["run"].iloc[0]
    cx_run = _first_run(table, "finetune_all")
    records = {"depth sweep, all layers (first seed)": _record(sweep_run),
               f"crossover, all layers, {full['n_per_class']:,.0f} per class (first seed)": _record(cx_run),
               "headline fine-tuning": _record(headline.get("finetune"))}  # fmt: skip
    grid, differ = setup_table(records)
    budgets = {k: finetune_budget(r) for k, r in records.items()}
    sb, xb = (budgets[k] for k in list(records)[:2])
    if grid:
        parts = [f"The depth sweep of this chapter, the crossover study and the headline run fine-tune under different "
                 f"setups (one run of each, read from its record; the sweep at the rate {rate}):", "", grid, "",
                 f"They differ in {listed(differ) or 'nothing the records state'}. The crossover varies the data "
                 "alone, each run fine-tuned until validation accuracy stops rising or its cap is reached."]  # fmt: skip
        parts = ["\n".join(parts)]
    else:
        parts = [f"The depth sweep of this chapter fine-tunes on {sweep_n or 'all the'} images per class for {P.epochs_finetune} "
                 f"epochs at a constant learning rate of {rate}; the headline run unfreezes every layer on the whole training "
                 f"split with a cosine schedule. The crossover study varies the data alone: at every size fine-tuning runs "
                 f"until validation accuracy stops rising or its cap is reached (at least {P.crossover_min_steps} steps), "
                 f"with cosine decay from {P.crossover_lr:g} at {P.crossover_image_size} px."]  # fmt: skip
    sweep = None
    if depth is not None and len(depth) and {0.0, 1.0} <= set(depth["unfreeze_fraction"]):
        a = depth[depth["unfreeze_fraction"] == 1.0].set_index("seed")["val_accuracy"]
        b = depth[depth["unfreeze_fraction"] == 0.0].set_index("seed")["val_accuracy"]
        seeds = sorted(set(a.index) & set(b.index))
        if seeds:
            if "val_n" in depth and depth["val_n"].notna().any():
                n_val = int(depth["val_n"].min())
            else:
                n_val = P.val_n_per_class * 10 if P.val_n_per_class else None
            sweep = stats.paired_diff(a[seeds].to_numpy(), b[seeds].to_numpy(), n_eval=n_val)
            parts.append(f"In the depth sweep, all layers against the frozen base gave {stats.format_diff(sweep)} on "
                         f"validation: {sweep.verdict}.")
    note = lambda r: r["note"] if isinstance(r.get("note"), str) else ""  # noqa: E731
    parts.append(f"In the crossover, at {near['n_per_class']:,.0f} images per class, the same comparison gives "
                 f"{near['text']} on test: {near['verdict']}{note(near)}.")
    if len(d) > 1:
        where = "On the whole training split" if full["size"] == WHOLE_SPLIT else "At the largest size"
        parts.append(f"{where} ({full['n_per_class']:,.0f} images per class) it gives {full['text']}: {full['verdict']}{note(full)}.")
    if sweep is not None and sweep.verdict != "better" and sb and xb and sb["updates"] and xb["updates"]:
        ratio = xb["lr"] / sb["lr"] if sb["lr"] else float("nan")
        parts.append(f"The sweep's fine-tuning is {sb['updates']:,} updates at a constant {sb['lr']:g}; the crossover's run "
                     f"above took {xb['updates']:,} at a peak rate {ratio:.0f} times higher ({xb['lr']:g}), so the sweep's "
                     f'"{sweep.verdict}" says what so small a budget does, not whether unfreezing pays.')
    if not np.isfinite(d[["low", "high"]].to_numpy(dtype=float)).all():
        parts.append("Points with a single seed carry no interval, so where those are the study cannot yet place the "
                     "crossover: more seeds, not a verdict, are needed there.")
    elif sweep is not None and sweep.verdict == "better":
        parts.append("The sweep already shows fine-tuning paying at its size, so the two results agree.")
    elif cx.found and not cx.from_smallest and at < cx.n_per_class:
        parts.append(f"The sweep's size lies below the crossover ({cx.n_per_class:,.0f} images per class)"
                     + (" and the headline's whole split above it" if full["size"] == WHOLE_SPLIT else "")
                     + ": the amount of labelled data, not a contradiction, separates the two results.")
    elif cx.found:
        where = (f"at every size measured, from {cx.n_per_class:,.0f} images per class" if cx.from_smallest
                 else f"from {cx.n_per_class:,.0f} images per class on")
        parts.append(f"In the crossover fine-tuning all layers wins {where}, at or below the sweep's size, so data size "
                     "alone does not explain the sweep's result" + (f": the setups also differ in {listed(differ)}." if differ else "."))
    else:
        wins = d[d["verdict"] == "better"]
        if len(wins):
            parts.append(f"Fine-tuning all layers beats the frozen base at {', '.join(f'{n:,.0f}' for n in wins['n_per_class'])} "
                         f"images per class but not at every size, so in this range there is no size above which it always "
                         "wins, and the study places no crossover.")
        else:
            parts.append(f"In this range fine-tuning never beats the frozen base by more than the noise at "
                         f"{P.crossover_image_size} pixels per side. The headline run differs from this study in input size "
                         "and schedule as well as data, and this study varies only the data, so it cannot say which of "
                         "those differences gives the headline its gain.")
    text = " ".join(parts[1:])
    out = parts[0] + "\n\n" + text
    gap = _input_size_sentence(table, headline)
    return out + (" " + gap if gap else "")


def _input_size_sentence(table: pd.DataFrame | None, headline: dict[str, Any]) -> str:
    """The whole split at the study's input size against the headline's: each arm's change, unpaired."""
    from ..stats import independent_diff

    fz_rec, ft_rec = _record(headline.get("frozen")), _record(headline.get("finetune"))
    if table is None or table.empty or "run" not in table or not fz_rec or not ft_rec:
        return ""
    whole = table[table["size"].astype(str) == WHOLE_SPLIT]
    ft = whole[whole["arm"] == "finetune_all"]
    # the frozen seeds the fine-tuned arm ran too: the gain is then the paired difference of the table
    fz = whole[(whole["arm"] == "frozen") & whole["seed"].isin(set(ft["seed"]))]
    if fz.empty or ft.empty or not ft["test_images"].notna().any():
        return ""
    size = sorted({r["params"]["image_size"] for r in (_record(x) for x in whole["run"]) if r and r.get("params")})
    px, hpx = " / ".join(f"{v} px" for v in size), f"{ft_rec['params'].get('image_size')} px"
    n = int(whole["test_images"].min())
    fz_acc, ft_acc = float(fz["test_acc"].mean()), float(ft["test_acc"].mean())
    h_fz, h_ft = fz_rec["metrics"]["test"], ft_rec["metrics"]["test"]
    fl = lambda rows: [[f for f in str(w).split("; ") if f] for w in rows["warnings"].fillna("")]  # noqa: E731
    d_fz = independent_diff(float(h_fz["accuracy"]), int(h_fz["n"]), fz_acc, n)
    d_ft = independent_diff(float(h_ft["accuracy"]), int(h_ft["n"]), ft_acc, n)
    gain, h_gain = 100 * (ft_acc - fz_acc), 100 * (h_ft["accuracy"] - h_fz["accuracy"])
    return (f"On the whole training split the crossover ({px}; the {len(fz)} seeds both arms ran) has the frozen base at "
            f"{fz_acc:.1%}{_note(fz)} and all layers "
            f"fine-tuned at {ft_acc:.1%}{_note(ft)} ({gain:+.1f} points), the headline ({hpx}) {h_fz['accuracy']:.2%}"
            f"{flag_note([record_warnings(fz_rec)])} and {h_ft['accuracy']:.2%}{flag_note([record_warnings(ft_rec)])} "
            f"({h_gain:+.1f} points): from the crossover to the headline the frozen base moves "
            f"{compare_text(d_fz, [record_warnings(fz_rec)], fl(fz))} and the fine-tuned network "
            f"{compare_text(d_ft, [record_warnings(ft_rec)], fl(ft))}, which is the whole difference between the two gains "
            f"(different runs: unpaired intervals; the input size is one of the differences in the table above, not "
            f"the only one).")  # fmt: skip


def cli(P: SimpleNamespace, data: D.EuroSAT, plan_only: bool = False, log: Callable[[str], None] = print) -> None:
    """What ``python -m eurosat_lib study crossover`` does: print the plan, or run the study and print its answer.

    Args:
        P: The chapter's resolved parameters.
        data: The dataset.
        plan_only: Print the runs, cheapest first, with their relative cost, and train nothing.
        log: Line printer.
    """
    if plan_only:
        for spec, cost in plan(P, data):
            log(f"{spec.name:<32} relative cost {cost / 1e3:10.1f}  {spec.tags['budget']['rule']}")
        return
    table = run_study(P, data, progress=log)
    diffs = differences(table)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        log(difference_table(diffs).to_string())
    for arm in FINETUNED:
        log(f"crossover of {ARM_LABELS[arm]}: {crossover_size(diffs, arm).describe()}")
