"""Chapter 06 — removing layers: where can a pretrained backbone be cut?

The backbone is cut after a block (``build_model(truncate_at=...)``), a new head is trained on the
frozen, cached features of what is left (a *linear probe* of that depth), and accuracy is put
next to what the cut saves: backbone parameters and inference speed. Every study returns a tidy
``pandas.DataFrame``; the runs are ordinary run folders under ``P.out_dir``, named by
configuration (``cut-block_12_seed0``), so reruns reuse them.

Public functions, in the order the notebook uses them: :func:`resolve_cuts` (which blocks),
:func:`sweep_cuts` (a head per cut and seed, validation only), :func:`measure_speed`,
:func:`cut_table` (one row per cut), :func:`choose_cut` (the shallowest cut within
``tolerance`` of the full backbone), :func:`score_on_test` (test accuracy of the full backbone and
the chosen cut only) and :func:`finetune_cuts` (does a short fine-tune recover a cut?).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import data as D
from .. import models as M
from .. import runs as R
from .. import training as T
from ..stats import eval_half_width, paired_diff
from .core import ExperimentSpec, RunResult, run
from .params import (
    ChapterParams, any_of, backbone_kwargs, backbone_name, choice, fraction, interval, is_num, list_of, nonneg_int,
    optional, param, pos_int, pos_num, seeds_param, string, weights_param,
)  # fmt: skip
from .recipes import FINETUNE_PATIENCE, model_fields, until_plateau  # noqa: F401 (FINETUNE_PATIENCE: the chapter's name for it)

NOTEBOOK = "06_truncation"

#: The head trained at every cut: global average pooling and one linear softmax layer.
PROBE_HEAD = M.HeadConfig(pooling="avg", dropout=0.0)
#: Batch size of the head phase (on cached features, so small batches cost little).
HEAD_BATCH = 32

#: ``cuts="stages"``: every block after which the feature map changes shape (a new stage starts).
STAGES = "stages"


@dataclass(frozen=True)
class TruncationParams(ChapterParams, notebook=NOTEBOOK):
    """Chapter 06's parameters (validators and per-profile defaults: :mod:`.params`)."""

    backbone: str = param(backbone_name, "any name from eurosat_lib.models.list_backbones()", default="MobileNetV2")
    alpha: float | None = param(optional(pos_num), "MobileNet width multiplier", smoke=0.35, cpu=0.35, gpu=None)
    weights: str | None = weights_param()
    image_size: int = param(pos_int, "input size the 64 px images are resized to", smoke=64, cpu=128, gpu=224)
    cuts: str | list[str | float] = param(
        any_of(choice(STAGES), list_of(any_of(string, fraction, message=""), ""),
               message=f"must be {STAGES!r} or a non-empty list of block names and/or fractions in (0, 1]"),
        "stages, or a list of block names and fractions of the blocks",
        smoke=[0.5, 1.0], cpu=STAGES, gpu=STAGES, example=["block_6", 0.5],
    )
    epochs_head: int = param(nonneg_int, "epochs of the head (linear probe) at every cut", smoke=1, cpu=15, gpu=15)
    lr_head: float = param(pos_num, "learning rate of the head phase", default=2e-2)
    # Issue 12: two constant-rate epochs stopped fine-tuning while it was still climbing back
    # (flagged "not converged"), so "fine-tuning hurts" measured the budget; the crossover's
    # fine-tuned arms (cosine decay, early stopping on validation accuracy) get the same care here.
    epochs_finetune: int = param(nonneg_int, "most epochs of the fine-tunes (cosine decay, early stopping)",
                                 smoke=1, cpu=8, gpu=10)
    lr_finetune: float = param(pos_num, "learning rate of the short fine-tunes", smoke=1e-4, cpu=3e-4, gpu=1e-4)
    batch_size: int = param(pos_int, "batch size of the fine-tuning runs", smoke=128, cpu=32, gpu=128)
    n_per_class: int | None = param(optional(pos_int), "training images per class", smoke=8, cpu=100, gpu=None)
    # Issue 12: 500 validation images and 2 seeds could not resolve the 1-point tolerance.
    val_n_per_class: int | None = param(optional(pos_int), "validation images per class (None: all 5,400)",
                                        smoke=4, cpu=None, gpu=None)
    monitor_n_per_class: int | None = param(optional(pos_int), "validation images per class watched after each "
                                            "fine-tuning epoch (None: all)", smoke=None, cpu=50, gpu=None)
    test_n_per_class: int | None = param(optional(pos_int), "test images per class scored",
                                         smoke=10, cpu=None, gpu=None)
    tolerance: float = param(interval(0, 1, closed="left", what="an accuracy difference"),
                             "accuracy a cut may lose and still count as safe, 0.01 is one point", default=0.01)
    n_finetune: int = param(nonneg_int, "cuts besides the full backbone given a short fine-tune", smoke=0, cpu=1, gpu=3)
    speed_images: int = param(pos_int, "images per timed inference batch", smoke=16, cpu=256, gpu=256)
    seeds: list[int] = seeds_param("seeds of the linear probes at every cut (seconds each)", smoke=1, cpu=5, gpu=5)
    finetune_seeds: list[int] = seeds_param("seeds of the short fine-tunes", smoke=1, cpu=3, gpu=3)


# --------------------------------------------------------------------------------------------
# Which blocks to cut after
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _anatomy(backbone: str, image_size: int, kwargs_items: tuple = ()) -> tuple[tuple[str, tuple[int, ...], int], ...]:
    bb = M.build_backbone(backbone, image_size, weights=None, **dict(kwargs_items))
    out = []
    for name in M.block_names(bb):
        cut = M.truncate_backbone(bb, name)
        out.append((name, tuple(int(d) for d in cut.outputs[0].shape[1:]), M.count_params(cut)["total"]))
    return tuple(out)


def block_shapes(backbone: str, image_size: int, kwargs_items: tuple = ()) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``((block, output shape without batch), ...)`` for every block of ``backbone``.

    Built without weights (shapes do not depend on them); ``kwargs_items`` are the constructor
    kwargs as a sorted tuple of pairs (e.g. ``(("alpha", 0.35),)``).

    Args:
        backbone: A registry backbone name.
        image_size: The input size.
        kwargs_items: The constructor's options, as above (hashable: the result is cached).

    Returns:
        The blocks, in order, with their output shapes.
    """
    return tuple((n, shape) for n, shape, _ in _anatomy(backbone, image_size, kwargs_items))


def cut_anatomy(P: SimpleNamespace, blocks: Sequence[str]) -> pd.DataFrame:
    """What the backbone keeps when cut after each of ``blocks``: depth, output shape, parameters.

    ``depth`` counts blocks (of all of the backbone's blocks, ``blocks_total``); ``feature_dim``
    is the output's channel count — what global average pooling hands the head.

    Args:
        P: The chapter's parameters (backbone, its options, ``image_size``).
        blocks: The cuts.

    Returns:
        One row per cut (indexed by block): ``depth``, ``blocks_total``, ``output_shape``,
        ``feature_dim``, ``backbone_params`` and ``params_share``.
    """
    kw = tuple(sorted(backbone_kwargs(P.backbone, P.alpha).items()))
    info = {n: (shape, params) for n, shape, params in _anatomy(P.backbone, P.image_size, kw)}
    names = list(info)
    full_params = info[names[-1]][1]
    rows = [
        {
            "block": b,
            "depth": names.index(b) + 1,
            "blocks_total": len(names),
            "output_shape": " × ".join(map(str, info[b][0])),
            "feature_dim": info[b][0][-1],
            "backbone_params": info[b][1],
            "params_share": info[b][1] / full_params,
        }
        for b in blocks
    ]
    return pd.DataFrame(rows).set_index("block")


def stage_ends(shapes: Sequence[tuple[str, tuple[int, ...]]], skip: Sequence[str] = ("stem",)) -> list[str]:
    """Blocks after which the feature map changes shape (resolution or width), plus the last block.

    These are the natural cut points: inside a stage, blocks refine features at one resolution
    and width; a stage end is where a network hands over to the next level. Blocks in ``skip``
    (the stem: a lone convolution, not a stage) are left out.

    Args:
        shapes: :func:`block_shapes`'s result.
        skip: Blocks never listed.

    Returns:
        The stage ends, in order.
    """
    names = [n for n, _ in shapes]
    out = [n for (n, s), (_, s_next) in zip(shapes[:-1], shapes[1:]) if s != s_next]
    out.append(names[-1])
    return [n for n in out if n not in skip]


def resolve_cuts(P: SimpleNamespace) -> list[str]:
    """The block names ``P.cuts`` stands for, in backbone order, without repeats.

    The full backbone (the last block) is always included: it is the reference.

    Args:
        P: The chapter's parameters (``cuts``: ``"stages"``, or block names and fractions).

    Returns:
        The block names.

    Raises:
        ValueError: A cut names no block of the backbone.
    """
    names = M.block_names(P.backbone)
    if P.cuts == STAGES:
        kw = tuple(sorted(backbone_kwargs(P.backbone, P.alpha).items()))
        picked = stage_ends(block_shapes(P.backbone, P.image_size, kw))
    else:
        picked = [block_at(names, c) for c in P.cuts]
    picked.append(names[-1])
    return [n for n in names if n in set(picked)]


def block_at(names: Sequence[str], cut: str | float) -> str:
    """The block a cut means: a block name as is; a fraction ``f`` -> the block ending the first
    ``ceil(f * n_blocks)`` blocks (as ``models.build_model(truncate_at=f)`` reads it).

    Args:
        names: The backbone's blocks, in order.
        cut: A block name or a fraction in (0, 1].

    Returns:
        The block's name.

    Raises:
        ValueError: An unknown block, or a value that is neither a name nor a fraction in (0, 1].
    """
    if isinstance(cut, str):
        if cut not in names:
            raise ValueError(f"unknown block {cut!r}; valid blocks: {', '.join(names)}")
        return cut
    if isinstance(cut, bool) or not is_num(cut) or not 0 < cut <= 1:
        raise ValueError(f"a cut must be a block name or a fraction in (0, 1]; got {cut!r}")
    k = max(1, math.ceil(round(float(cut) * len(names), 9))) - 1
    return names[k]


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def cut_spec(P: SimpleNamespace, block: str, seed: int, *, with_test: bool = False, finetune: bool = False) -> ExperimentSpec:
    """Cut after ``block``, train a head on cached features; optionally fine-tune what is left.

    The full backbone (``block`` = the last block) is built untruncated. ``with_test`` adds the
    test split to the scored splits (only for the configurations the chapter reports).

    Args:
        P: The chapter's parameters.
        block: The block to cut after.
        seed: The run's seed.
        with_test: Score the test split too.
        finetune: Add the fine-tuning phase.

    Returns:
        The spec.
    """
    full = block == M.block_names(P.backbone)[-1]
    # A linear probe: no dropout (it would cap what a 8-16-channel feature vector can give) and
    # a cosine schedule from a high rate, so shallow cuts' poorly scaled features converge too.
    phases = [T.PhaseConfig("head", epochs=P.epochs_head, learning_rate=P.lr_head, batch_size=HEAD_BATCH,
                            schedule="cosine", use_feature_cache=True)]  # fmt: skip
    if finetune:
        phases.append(until_plateau(T.PhaseConfig("finetune", epochs=P.epochs_finetune, learning_rate=P.lr_finetune,
                                                  batch_size=P.batch_size, unfreeze="all", freeze_bn=True,
                                                  val_n_per_class=P.monitor_n_per_class)))  # fmt: skip
    name = f"cut-{block}" + ("_finetune" if finetune else "") + ("_test" if with_test else "") + f"_seed{seed}"
    return ExperimentSpec(
        name=name,
        **model_fields(P),
        truncate_at=None if full else block,
        head=PROBE_HEAD,
        phases=tuple(phases),
        seed=seed,
        n_per_class=P.n_per_class,
        val_n_per_class=P.val_n_per_class,
        eval_splits=("val", "test") if with_test else ("val",),
        test_n_per_class=P.test_n_per_class,
        tags={"chapter": NOTEBOOK, "cut": block, "finetune": finetune},
    )


def _row(res: RunResult, names: Sequence[str], **extra: Any) -> dict[str, Any]:
    rec = res.record
    info = rec["model_info"]
    block = rec["params"]["tags"]["cut"]
    phases = {h["name"]: h["history"] for h in rec["history"]}
    head_val = phases.get("head", {}).get("val_accuracy") or [float("nan")]
    return {
        "block": block,
        "depth": names.index(block) + 1,
        "feature_dim": info["feature_dim"],
        "backbone_params": info["backbone_params"]["total"],
        **extra,
        "val_accuracy": rec["metrics"]["val"]["accuracy"],
        "val_images": rec["metrics"]["val"].get("n"),
        "test_accuracy": rec["metrics"].get("test", {}).get("accuracy"),
        "test_images": rec["metrics"].get("test", {}).get("n"),
        "val_after_head": head_val[-1],
        "run": str(res.run_dir),
        "warnings": "; ".join(rec.get("warnings") or []),  # the run's sanity flags: figures circle them
    }


def sweep_cuts(P: SimpleNamespace, data: D.EuroSAT, blocks: Sequence[str]) -> pd.DataFrame:
    """One linear-probe run per cut and seed, scored on validation. One row per run.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        blocks: The cuts.

    Returns:
        One row per run: block, depth, feature size, backbone parameters, seed, validation
        accuracy (after the head phase too) and the run folder.
    """
    names = M.block_names(P.backbone)
    rows = []
    for block in blocks:
        for seed in P.seeds:
            rows.append(_row(run(P, cut_spec(P, block, seed), data), names, seed=seed))
    return pd.DataFrame(rows)


def measure_speed(P: SimpleNamespace, data: D.EuroSAT, blocks: Sequence[str], repeats: int = 5) -> pd.DataFrame:
    """Batched inference speed (images/s) of the whole model cut at each block.

    All cut models are built first (without weights: speed does not depend on them) and then
    timed in ``repeats`` round-robin rounds on the same ``P.speed_images`` images, keeping each
    model's best time — so a burst of load on a shared machine hits every cut alike instead of
    one. Eager batched calls (no graph tracing per model), the same for every cut.

    The machine's load is sampled before and after (:func:`eurosat_lib.runs.machine_load`):
    when other processes kept more than half the cores busy, the speeds are not figures the
    book may show (issue 15), so ``images_per_s`` is NaN and ``contended`` is True.

    Returns:
        One row per block: ``block``, ``images_per_s`` (from its best round), ``round_seconds``
        (each round's time, in order: a round times every cut within seconds, so the ratio of two
        cuts' times in one round is a paired measurement, and its spread over rounds is how far
        the machine's drift moves a speed-up; :func:`cut_table`), ``contended``.

    Args:
        P: The chapter's parameters (``speed_images``).
        data: The dataset (the timed images).
        blocks: The cuts.
        repeats: Round-robin rounds.
    """
    import keras

    load_before = R.machine_load()
    images = np.asarray(data.images[: P.speed_images])
    names = M.block_names(P.backbone)
    models = {
        b: M.build_model(P.backbone, weights=None, image_size=P.image_size, truncate_at=None if b == names[-1] else b,
                         backbone_kwargs=backbone_kwargs(P.backbone, P.alpha))
        for b in blocks
    }  # fmt: skip
    rounds: dict[str, list[float]] = {b: [] for b in blocks}
    for model in models.values():  # warm-up: the first call builds the eager kernels
        keras.ops.convert_to_numpy(model(images[:8], training=False))
    for _ in range(repeats):
        for b, model in models.items():
            t = time.perf_counter()
            keras.ops.convert_to_numpy(model(images, training=False))
            rounds[b].append(time.perf_counter() - t)
    contended = R.is_contended(load_before, R.machine_load())
    speeds = [np.nan if contended else len(images) / min(rounds[b]) for b in blocks]
    return pd.DataFrame({"block": list(blocks), "images_per_s": speeds, "round_seconds": [rounds[b] for b in blocks],
                         "contended": contended})  # fmt: skip


def speedup_range(speed: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each cut's speed-up over ``reference`` within each timing round: the lowest and highest.

    Args:
        speed: :func:`measure_speed`'s table (``round_seconds``; ``images_per_s`` NaN when the
            machine was busy, which makes the range NaN too).
        reference: The block the speed-ups are relative to (the full backbone).

    Returns:
        Indexed by block: ``speedup_low``, ``speedup_high``, ``speed_rounds`` (NaN where the table
        has no rounds, e.g. one written before they were kept).

    Raises:
        KeyError: ``reference`` is not a block of ``speed``.
    """
    by = speed.set_index("block")
    if reference not in by.index:
        raise KeyError(f"reference block {reference!r} was not timed; timed: {list(by.index)}")
    ref = by.loc[reference, "round_seconds"] if "round_seconds" in by else None
    out = {}
    for block, row in by.iterrows():
        mine = row.get("round_seconds") if "round_seconds" in by else None
        ok = isinstance(ref, (list, tuple, np.ndarray)) and isinstance(mine, (list, tuple, np.ndarray)) and len(mine) == len(ref)
        if not ok or not np.isfinite(row["images_per_s"]):
            out[block] = {"speedup_low": np.nan, "speedup_high": np.nan, "speed_rounds": np.nan}
            continue
        ratios = np.asarray(ref, dtype=float) / np.asarray(mine, dtype=float)  # > 1: the cut ran faster in that round
        out[block] = {"speedup_low": float(ratios.min()), "speedup_high": float(ratios.max()), "speed_rounds": float(len(ratios))}
    return pd.DataFrame.from_dict(out, orient="index")


def cut_table(sweep: pd.DataFrame, speed: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cut (backbone order): mean/sd validation accuracy over seeds, size, speed.

    ``drop`` is the full backbone's mean accuracy minus the cut's (positive = worse);
    ``params_share`` and ``speedup`` compare with the full backbone (the deepest cut).
    ``loss_high`` is the upper end of the 95 % interval of the loss, paired by seed, with the
    validation images' noise (:func:`eurosat_lib.stats.paired_diff`); ``loss_high_seeds`` the same
    from the seeds' spread alone; ``eval_half`` the half-width the images' binomial term gives by
    itself (1.96 standard errors of an unpaired difference: no seed count shrinks it);
    ``val_images`` the validation images each run was scored on.

    Args:
        sweep: :func:`sweep_cuts`'s table.
        speed: :func:`measure_speed`'s table (None: no speeds).

    Returns:
        The table, indexed by block.
    """
    g = sweep.groupby("block", sort=False)
    table = g.agg(
        depth=("depth", "first"),
        feature_dim=("feature_dim", "first"),
        backbone_params=("backbone_params", "first"),
        val_mean=("val_accuracy", "mean"),
        val_sd=("val_accuracy", "std"),
        seeds=("val_accuracy", "count"),
    ).sort_values("depth")
    full = table.iloc[-1]
    table["drop"] = full["val_mean"] - table["val_mean"]
    # The loss against the full backbone, paired by seed (the same training images), with the
    # upper end of its 95 % interval: how much a cut may lose, given the seeds and the images scored.
    wide = sweep.pivot_table(index="seed", columns="block", values="val_accuracy", aggfunc="mean")
    n_val = sweep["val_images"].min() if "val_images" in sweep and sweep["val_images"].notna().any() else None
    high, seeds_high, eval_half = {}, {}, {}
    for block in table.index:
        pair = wide[[block, table.index[-1]]].dropna()
        if block == table.index[-1] or not len(pair):
            reference = block == table.index[-1]
            high[block] = seeds_high[block] = eval_half[block] = 0.0 if reference else float("nan")
            continue
        a, b = pair[table.index[-1]].to_numpy(), pair[block].to_numpy()
        high[block] = paired_diff(a, b, n_eval=int(n_val) if n_val else None).high
        # The two parts of that interval, apart, so the page can say which one keeps a cut from
        # passing: the seeds' spread alone (the evaluation images held fixed), and the images'
        # binomial term alone (unpaired: an upper bound, as the records keep no per-image
        # predictions), which no number of seeds shrinks.
        seeds_high[block] = paired_diff(a, b).high
        eval_half[block] = eval_half_width(float(a.mean()), float(b.mean()), int(n_val)) if n_val else float("nan")
    table["loss_high"] = pd.Series(high)
    table["loss_high_seeds"] = pd.Series(seeds_high)
    table["eval_half"] = pd.Series(eval_half)
    table["val_images"] = float(n_val) if n_val else float("nan")
    table["params_share"] = table["backbone_params"] / full["backbone_params"]
    if speed is not None:
        table = table.join(speed.set_index("block")["images_per_s"])
        table["speedup"] = table["images_per_s"] / table.loc[table.index[-1], "images_per_s"]
        if "round_seconds" in speed:
            table = table.join(speedup_range(speed, table.index[-1]))
    return table


def choose_cut(table: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """Read the answer off :func:`cut_table`.

    * ``full``: the full backbone (the last row); ``chosen``: the shallowest cut shown to lose at
      most ``tolerance``: the upper end of the 95 % interval of its paired loss (``loss_high``) is
      within the tolerance (a non-inferiority test: a cut whose mean loss is small but whose
      interval reaches past the tolerance is not shown safe). Without intervals (one seed) the
      mean loss decides and ``rule`` says so. The full backbone if no cut qualifies;
    * ``rule``: ``"95 % upper bound"`` or ``"mean (one seed: no interval)"``;
    * ``noise``: the median half-width of the cuts' intervals (NaN without intervals): a
      tolerance below it cannot be met by any cut however similar, which the chapter must say;
    * ``chosen_all_safe``: whether every cut deeper than the chosen one is within tolerance too
      (if not, the curve is not monotone and the choice deserves a second look);
    * ``cliff``: the adjacent pair of cuts with the largest accuracy step (``cliff_from`` is the
      deeper block, ``cliff_to`` the shallower one, ``cliff_step`` the loss in accuracy);
    * ``chosen_gap_sd``: the chosen cut's gap to the full backbone in units of the larger of the
      two seed standard deviations (NaN with one seed), to tell noise from a real loss;
    * ``eval_half``: the smallest half-width the validation images' term alone gives any cut's
      interval (NaN when the table does not say): above ``tolerance``, no cut scoring below the
      full backbone can pass, however many seeds; ``val_images``: the images behind it.

    Args:
        table: :func:`cut_table`'s table.
        tolerance: Accuracy a cut may lose and still count as safe.

    Returns:
        The entries above.

    Raises:
        ValueError: The table is empty.
    """
    if table.empty:
        raise ValueError("no cuts to choose from")
    full = table.index[-1]
    high = table["loss_high"] if "loss_high" in table else pd.Series(np.nan, index=table.index)
    cuts = table.index[:-1]
    with_interval = len(cuts) > 0 and bool(np.isfinite(high[cuts].astype(float)).all())
    ok = (high <= tolerance + 1e-12) if with_interval else (table["drop"] <= tolerance + 1e-12)
    ok[full] = True
    chosen = next(b for b in table.index if ok[b])
    half = (high[cuts] - table.loc[cuts, "drop"]).astype(float) if with_interval else pd.Series(dtype=float)
    deeper = table.index[table.index.get_loc(chosen):]
    steps = table["val_mean"].diff(-1).iloc[:-1]  # shallower minus the next deeper
    if len(steps):
        cliff_to = steps.idxmin()
        cliff_from = table.index[table.index.get_loc(cliff_to) + 1]
        step = float(table.loc[cliff_from, "val_mean"] - table.loc[cliff_to, "val_mean"])
    else:
        cliff_to = cliff_from = full
        step = 0.0
    sds = [float(table.loc[b, "val_sd"]) for b in (chosen, full)]
    sd = max((v for v in sds if np.isfinite(v)), default=float("nan"))
    gap = float(table.loc[chosen, "drop"])
    return {
        "full": full,
        "chosen": chosen,
        "chosen_all_safe": bool(ok[deeper].all()),
        "chosen_drop": gap,
        "chosen_loss_high": float(high[chosen]) if with_interval else float("nan"),
        "rule": "95 % upper bound" if with_interval else "mean (one seed: no interval)",
        "noise": float(half.median()) if len(half) else float("nan"),
        "chosen_gap_sd": gap / sd if np.isfinite(sd) and sd > 0 else float("nan"),
        "chosen_params_share": float(table.loc[chosen, "params_share"]),
        "chosen_speedup": float(table.loc[chosen, "speedup"]) if "speedup" in table else float("nan"),
        "cliff_from": cliff_from,
        "cliff_to": cliff_to,
        "cliff_step": step,
        "tolerance": float(tolerance),
        "eval_half": float(table.loc[cuts, "eval_half"].astype(float).min()) if "eval_half" in table and len(cuts) else float("nan"),
        "val_images": float(table["val_images"].iloc[0]) if "val_images" in table else float("nan"),
    }


def score_on_test(P: SimpleNamespace, data: D.EuroSAT, blocks: Sequence[str]) -> pd.DataFrame:
    """Test accuracy of the given cuts (the full backbone and the chosen one), every seed.

    Separate runs (``..._test``) that repeat the sweep's head training and also score the test
    split; the sweep itself never looks at test.

    Args:
        P: The chapter's parameters.
        data: The dataset.
        blocks: The cuts to score.

    Returns:
        One row per cut and seed, with test accuracy and test images.
    """
    names = M.block_names(P.backbone)
    rows = []
    for block in dict.fromkeys(blocks):
        for seed in P.seeds:
            rows.append(_row(run(P, cut_spec(P, block, seed, with_test=True), data), names, seed=seed))
    return pd.DataFrame(rows)


def finetune_candidates(table: pd.DataFrame, choice: dict[str, Any], n: int) -> list[str]:
    """The full backbone, the chosen cut and the next shallower cuts: ``n`` cuts besides the full one.

    The shallower cuts are the interesting ones: they lost accuracy with a frozen base, and the
    question is whether letting what is left of the backbone adapt wins it back.

    Args:
        table: :func:`cut_table`'s table.
        choice: :func:`choose_cut`'s result.
        n: Cuts to fine-tune besides the full backbone.

    Returns:
        The blocks, in backbone order.
    """
    order = list(table.index)
    start = order.index(choice["chosen"])
    cuts = [b for b in reversed(order[: start + 1]) if b != choice["full"]][:n]
    return [b for b in order if b in set(cuts) | {choice["full"]}]


def finetune_cuts(P: SimpleNamespace, data: D.EuroSAT, blocks: Sequence[str]) -> pd.DataFrame:
    """Head phase, then ``P.epochs_finetune`` epochs with the whole (cut) backbone trainable.

    Every seed of ``P.finetune_seeds``. Long format for plotting: two rows per cut and seed,
    ``stage`` = "frozen + head" (validation accuracy after the head phase) and "fine-tuned".

    Args:
        P: The chapter's parameters.
        data: The dataset.
        blocks: The cuts to fine-tune.

    Returns:
        The long table described above.
    """
    names = M.block_names(P.backbone)
    rows = []
    for block in blocks:
        for seed in P.finetune_seeds:
            res = run(P, cut_spec(P, block, seed, finetune=True), data)
            r = _row(res, names, seed=seed)
            ft = res.record["timings"]["phases"].get("finetune", {})
            for stage, acc in (("frozen + head", r["val_after_head"]), ("fine-tuned", r["val_accuracy"])):
                # the flags judge the run's end (the fine-tuned model), not the head stage before it
                rows.append({**r, "stage": stage, "val_accuracy": acc, "finetune_s_per_epoch": ft.get("seconds_per_epoch"),
                             "warnings": r["warnings"] if stage == "fine-tuned" else ""})  # fmt: skip
    return pd.DataFrame(rows)
