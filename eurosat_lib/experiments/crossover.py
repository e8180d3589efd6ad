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
    timings = record["timings"] or {}
    epochs = {name: ph.get("epochs_run") for name, ph in (timings.get("phases") or {}).items()}
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
        "epochs_run": sum(v or 0 for v in epochs.values()),
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
        ``seeds``, ``verdict``, ``text`` (:func:`eurosat_lib.stats.format_diff`) and
        ``flags`` (the sanity flags of the runs involved, joined).
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
            flags = sorted({f for w in involved["warnings"].fillna("") for f in w.split("; ") if f})
            rows.append({"arm": arm, "size": size, "n_per_class": float(g["n_per_class"].iloc[0]), "diff": d.mean,
                         "low": d.low, "high": d.high, "seeds": d.n, "verdict": d.verdict, "text": stats.format_diff(d),
                         "flags": ", ".join(flags)})  # fmt: skip
    out = pd.DataFrame(rows, columns=["arm", "size", "n_per_class", "diff", "low", "high", "seeds", "verdict", "text", "flags"])
    return out.sort_values(["arm", "n_per_class"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Crossover:
    """Where one fine-tuned arm starts to beat the frozen base.

    Attributes:
        arm: the fine-tuned arm.
        n_per_class: the smallest size from which on every larger size's interval lies above zero
            (images per class), or None: no such size in the range studied.
        size: the same size as the study names it (an int or ``"all"``), or None.
        sizes: the sizes compared, ascending.
    """

    arm: str
    n_per_class: float | None
    size: int | str | None
    sizes: tuple[float, ...]

    @property
    def found(self) -> bool:
        """Whether a crossover lies in the range studied."""
        return self.n_per_class is not None

    def describe(self) -> str:
        """The answer in words.

        Returns:
            E.g. "from 150 labelled images per class on", or "none in the range studied (5-1,620 ...)".
        """
        if not self.sizes:
            return "not measured (no paired runs)"
        if self.found:
            return f"from {self.n_per_class:,.0f} labelled images per class on"
        return f"none in the range studied ({self.sizes[0]:,.0f}-{self.sizes[-1]:,.0f} labelled images per class)"


def crossover_size(diffs: pd.DataFrame, arm: str) -> Crossover:
    """The smallest size above which fine-tuning ``arm`` beats the frozen base, measured.

    A size counts only when its 95 % interval excludes zero in fine-tuning's favour (verdict
    "better"); the crossover is the smallest size from which on *every* larger size counts too.
    If the largest size does not count there is none in the range: a win at some middle size
    followed by a tie is not a crossover, and a tie is never a win.

    Args:
        diffs: :func:`differences` rows.
        arm: the fine-tuned arm.

    Returns:
        A :class:`Crossover` (``n_per_class`` None when none is in the range).
    """
    rows = diffs[diffs["arm"] == arm].sort_values("n_per_class")
    sizes = tuple(float(x) for x in rows["n_per_class"])
    found = None
    for _, r in rows[::-1].iterrows():
        if r["verdict"] != "better":
            break
        found = r
    if found is None:
        return Crossover(arm, None, None, sizes)
    return Crossover(arm, float(found["n_per_class"]), found["size"], sizes)


def difference_table(diffs: pd.DataFrame) -> pd.DataFrame:
    """:func:`differences` for display.

    Args:
        diffs: :func:`differences` rows.

    Returns:
        One row per size (labelled images per class), one column per fine-tuned arm, each cell the
        difference with its interval and verdict ("+2.1 points (95 % CI ...): better"), plus the
        runs' sanity flags; empty when there are no rows.
    """
    if diffs.empty:
        return pd.DataFrame()
    cell = diffs.assign(cell=diffs["text"] + ": " + diffs["verdict"] + diffs["flags"].map(lambda f: f" [flags: {f}]" if f else ""))
    wide = cell.pivot(index="n_per_class", columns="arm", values="cell")
    wide = wide[[a for a in FINETUNED if a in wide.columns]]
    wide.columns = [f"{ARM_LABELS[a]} − frozen" for a in wide.columns]
    wide.index = [f"{n:,.0f}" for n in wide.index]
    wide.index.name = "labelled images per class"
    return wide


def narrative(table: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """The crossover section's prose, every number and verdict word read from the tables.

    Args:
        table: :func:`run_study` rows.
        diffs: :func:`differences` of that table.

    Returns:
        Markdown: the crossover of each fine-tuned arm, the difference at the smallest and the
        largest size, where scratch stands, and which runs carry sanity flags.
    """
    if table.empty or diffs.empty:
        return "*No finished crossover runs yet: run `python -m eurosat_lib study crossover` first.*"
    cur = curves(table)
    lines = []
    for arm in FINETUNED:
        d = diffs[diffs["arm"] == arm].sort_values("n_per_class")
        if d.empty:
            continue
        cx = crossover_size(diffs, arm)
        lo, hi = d.iloc[0], d.iloc[-1]
        line = (f"- **{ARM_LABELS[arm]}** against the frozen base: crossover {cx.describe()}. "
                f"At {lo['n_per_class']:,.0f} images per class the difference is {lo['text']}: {lo['verdict']}.")
        if len(d) > 1:
            line += f" At {hi['n_per_class']:,.0f} images per class it is {hi['text']}: {hi['verdict']}."
        lines.append(line)
    sc = cur[cur["arm"] == "scratch"].sort_values("n_per_class")
    if not sc.empty:
        ends = [sc.iloc[0]] + ([sc.iloc[-1]] if len(sc) > 1 else [])
        said = " and ".join(f"{r['mean']:.1%} at {r['n_per_class']:,.0f} images per class" for r in ends)
        vs = differences(table, arms=("scratch",), baseline="frozen")
        vs = vs[vs["n_per_class"].isin([r["n_per_class"] for r in ends])].sort_values("n_per_class")
        against = "; ".join(f"{r['text']}: {r['verdict']} at {r['n_per_class']:,.0f}" for _, r in vs.iterrows())
        lines.append(f"- **From scratch** reaches {said} on test" + (f"; against the frozen base, paired by seed: {against}." if against else "."))
    flagged = table[table["warnings"].fillna("") != ""]
    if len(flagged):
        kinds = sorted({f for w in flagged["warnings"] for f in w.split("; ") if f})
        lines.append(f"- {len(flagged)} of {len(table)} runs carry a sanity flag ({', '.join(kinds)}); the table marks "
                     "the comparisons they enter, and a flagged number is a property of its budget, not a finding.")
    return "\n".join(lines)


def reconciliation(P: SimpleNamespace, diffs: pd.DataFrame, lr_chosen: float | None = None,
                   depth: pd.DataFrame | None = None) -> str:  # fmt: skip
    """Why the chapter's small-data sweep and the headline run disagree, in the crossover's numbers.

    The explaining sentence is chosen by what was measured: the sweep's own all-layers-vs-frozen
    difference (when ``depth`` is given), and where the crossover lies relative to the sweep's
    data size.

    Args:
        P: the chapter's parameters (``n_per_class``, ``epochs_finetune``, ``lr_finetune``,
            ``val_n_per_class``, ``crossover_image_size``, ``crossover_min_steps``, ``crossover_lr``).
        diffs: :func:`differences` rows.
        lr_chosen: the learning rate the chapter's grid chose on validation (the depth sweep's).
        depth: the chapter's depth sweep (``unfreeze_fraction``, ``seed``, ``val_accuracy``), if run.

    Returns:
        Markdown (a paragraph), or a note that the study has no results yet.
    """
    d = diffs[diffs["arm"] == "finetune_all"].sort_values("n_per_class")
    if d.empty:
        return "*The crossover study has no paired results yet.*"
    cx = crossover_size(diffs, "finetune_all")
    sweep_n = P.n_per_class
    at = float(sweep_n) if sweep_n else float(d["n_per_class"].max())
    near = d.iloc[int(np.argmin(np.abs(np.log(d["n_per_class"].to_numpy(dtype=float)) - np.log(at))))]
    full = d.iloc[-1]
    rate = f"{lr_chosen:g} (chosen on validation)" if lr_chosen is not None else f"{P.lr_finetune:g}"
    parts = [
        f"The depth sweep of this chapter fine-tunes on {sweep_n or 'all the'} images per class for {P.epochs_finetune} "
        f"epochs at a constant learning rate of {rate}; the headline run unfreezes every layer on the whole training "
        f"split with a cosine schedule. The crossover study varies the data alone: at every size fine-tuning "
        f"runs until validation accuracy stops rising or its cap is reached (at least {P.crossover_min_steps} steps), "
        f"with cosine decay from "
        f"{P.crossover_lr:g}."
    ]
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
    parts.append(f"In the crossover, at {near['n_per_class']:,.0f} images per class, the same comparison gives "
                 f"{near['text']} on test: {near['verdict']}.")
    if len(d) > 1:
        where = "On the whole training split" if full["size"] == WHOLE_SPLIT else "At the largest size"
        parts.append(f"{where} ({full['n_per_class']:,.0f} images per class) it gives {full['text']}: {full['verdict']}.")
    if not np.isfinite(d[["low", "high"]].to_numpy(dtype=float)).all():
        parts.append("Points with a single seed carry no interval, so where those are the study cannot yet place the "
                     "crossover: more seeds, not a verdict, are needed there.")
    elif sweep is not None and sweep.verdict == "better":
        parts.append("The sweep already shows fine-tuning paying at its size, so the two results agree.")
    elif cx.found and at < cx.n_per_class:
        parts.append(f"The sweep's size lies below the crossover ({cx.n_per_class:,.0f} images per class)"
                     + (" and the headline's whole split above it" if full["size"] == WHOLE_SPLIT else "")
                     + ": the amount of labelled data, not a contradiction, separates the two results.")
    elif cx.found:
        parts.append(f"The crossover ({cx.n_per_class:,.0f} images per class) lies at or below the sweep's size, so data "
                     "size alone does not explain the sweep's result: with the crossover's budget (more steps, a "
                     "decaying rate) fine-tuning pays at that size"
                     + ("; the sweep's short constant-rate schedule did not show it." if sweep is not None else "."))
    else:
        wins = d[d["verdict"] == "better"]
        if len(wins):
            parts.append(f"Fine-tuning all layers beats the frozen base at {', '.join(f'{n:,.0f}' for n in wins['n_per_class'])} "
                         f"images per class but not at {full['n_per_class']:,.0f} (there: {full['verdict']}), so in this "
                         "range there is no size above which it always wins, and the study places no crossover.")
        else:
            parts.append(f"In this range fine-tuning never beats the frozen base by more than the noise at "
                         f"{P.crossover_image_size} pixels per side. The headline run differs from this study in input size "
                         "and schedule as well as data, and this study varies only the data, so it cannot say which of "
                         "those differences gives the headline its gain.")
    return " ".join(parts)


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
