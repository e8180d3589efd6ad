"""Chapter 3's summary (fine-tuning): the two-phase recipe and its depth, learning-rate and BatchNorm sweeps.

Also the prose under each of the chapter's sections (``recipe_markdown``, ``lr_markdown``,
``depth_markdown``, ``batchnorm_markdown``) and the fine-tuning setups read from run records
(``finetune_budget``, ``setup_table``), which the crossover study's text shares. Every number a
flagged run enters carries its ⚠ (:func:`.render.flag_note`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..runs import phase_epochs_run
from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    compare_text,
    flag_note,
    group_flags,
    is_broken,
    is_number,
    md_table,
    mean_sd,
    num,
    pct,
    paired_values,
    record_warnings,
    setting_text,
    versus,
    working_context,
)


def depth_label(fraction: float) -> str:
    """How the page names a share of unfrozen blocks.

    Args:
        fraction: Share of the backbone's blocks unfrozen, from the top.

    Returns:
        ``"base frozen (head only)"``, ``"all blocks unfrozen"`` or ``"top 50% of the blocks unfrozen"``.
    """
    if fraction == 0:
        return "base frozen (head only)"
    if fraction >= 1:
        return "all blocks unfrozen"
    return f"top {fraction:.0%} of the blocks unfrozen"


def network_label(backbone: Any, alpha: Any = None) -> str:
    """A network as the page names it: ``"MobileNetV2 α = 0.35"`` (the width only when set).

    Args:
        backbone: The backbone's name.
        alpha: Its width multiplier, or None.

    Returns:
        The label.
    """
    return f"{backbone}" + (f" α = {alpha:g}" if is_number(alpha) else "")


def finetune_budget(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How a run's fine-tuning phase was trained, as its record states it (nothing is assumed).

    Updates are the phase's epochs run times its optimiser steps per epoch: the budget the run's
    tags recorded (the crossover study repeats small sets within an epoch), else one pass over the
    training images in batches of the phase's size.

    Args:
        record: A run record (``record.json`` content) with a phase named ``finetune``, or None.

    Returns:
        ``backbone``, ``alpha``, ``image_size``, ``train_images``, ``batch_size``, ``epochs`` (the
        cap), ``epochs_run``, ``steps_per_epoch``, ``updates``, ``lr``, ``schedule``,
        ``early_stopping`` (patience or None), ``unfreeze``, ``freeze_bn`` and ``flags``; None when
        the record has no fine-tuning phase.
    """
    if not record:
        return None
    p = record.get("params") or {}
    phases = [ph for ph in p.get("phases") or [] if isinstance(ph, Mapping) and ph.get("name") == "finetune"]
    if not phases:
        return None
    ph = phases[-1]
    b = (p.get("tags") or {}).get("budget") or {}
    fed = (record.get("extra") or {}).get("train_size")
    batch = ph.get("batch_size")
    per_epoch = b.get("steps_per_epoch") or (math.ceil(fed / batch) if is_number(fed) and is_number(batch) else None)
    run_epochs = phase_epochs_run(record, "finetune")
    epochs_run = run_epochs if is_number(run_epochs) else ph.get("epochs")
    return {"backbone": p.get("backbone"), "alpha": (p.get("backbone_kwargs") or {}).get("alpha"),
            "image_size": p.get("image_size"), "train_images": b.get("train_images") or fed, "batch_size": batch,
            "epochs": ph.get("epochs"), "epochs_run": epochs_run, "steps_per_epoch": per_epoch,
            "updates": epochs_run * per_epoch if is_number(epochs_run) and is_number(per_epoch) else None,
            "lr": ph.get("learning_rate"), "schedule": ph.get("schedule") or "constant",
            "early_stopping": ph.get("early_stopping"), "unfreeze": ph.get("unfreeze"), "freeze_bn": ph.get("freeze_bn"),
            "flags": record_warnings(record)}  # fmt: skip


def budget_words(b: Mapping[str, Any]) -> str:
    """A fine-tuning budget in words, e.g. "3 epochs × 8 steps = 24 updates on 500 images (batches of 64)".

    Args:
        b: :func:`finetune_budget`'s mapping.

    Returns:
        The text.
    """
    return (f"{num(b['epochs_run'])} epochs × {num(b['steps_per_epoch'])} steps = {num(b['updates'])} updates on "
            f"{num(b['train_images'])} images (batches of {num(b['batch_size'])})")  # fmt: skip


def _schedule_words(b: Mapping[str, Any]) -> str:
    if b["schedule"] == "cosine":
        return f"cosine decay to 0 over {num(b['epochs'])} epochs"
    return str(b["schedule"])


#: The rows of :func:`setup_table`: (label, the cell's text from a :func:`finetune_budget` mapping).
SETUP_ROWS: tuple[tuple[str, Any], ...] = (
    ("network", lambda b: network_label(b["backbone"], b["alpha"])),
    ("input size", lambda b: f"{num(b['image_size'])} px"),
    ("labelled training images", lambda b: num(b["train_images"])),
    ("layers fine-tuned", lambda b: ("all" if b["unfreeze"] == "all" else f"from {b['unfreeze']} up")
     + (", BatchNorm frozen" if b["freeze_bn"] else ", BatchNorm updating")),
    ("fine-tuning updates", lambda b: f"{num(b['updates'])} ({num(b['epochs_run'])} epochs × {num(b['steps_per_epoch'])} steps)"),
    ("batch size", lambda b: num(b["batch_size"])),
    ("peak learning rate", lambda b: f"{b['lr']:g}" if is_number(b["lr"]) else "–"),
    ("schedule", _schedule_words),
    ("stopping", lambda b: (f"early stopping on validation accuracy (patience {b['early_stopping']}), at most "
                            f"{num(b['epochs'])} epochs") if b["early_stopping"] else f"fixed: {num(b['epochs'])} epochs"),
    ("sanity flags", lambda b: flag_note([b["flags"]]).strip() or "none"),
)  # fmt: skip


def setup_table(setups: Mapping[str, Mapping[str, Any] | None]) -> tuple[str, list[str]]:
    """The fine-tuning setups of several runs side by side, each cell read from the run's record.

    Args:
        setups: Column header -> a run record (``record.json`` content); a None or a record without
            a fine-tuning phase is left out.

    Returns:
        The Markdown table (one row per :data:`SETUP_ROWS` entry, one column per run; empty when no
        run is left) and the labels of the rows whose cells differ between the runs (the sanity
        flags aside: they are a result, not a setting).
    """
    budgets = {name: finetune_budget(rec) for name, rec in setups.items()}
    budgets = {name: b for name, b in budgets.items() if b is not None}
    if not budgets:
        return "", []
    rows, differ = [], []
    for label, cell in SETUP_ROWS:
        cells = {name: cell(b) for name, b in budgets.items()}
        rows.append({"what": label, **cells})
        if label != "sanity flags" and len(set(cells.values())) > 1:
            differ.append(label)
    return md_table(rows, [("what", "")] + [(name, name) for name in budgets]), differ


def listed(items: Sequence[str]) -> str:
    """Items as prose lists them: ``"a"``, ``"a and b"``, ``"a, b and c"`` (``""`` for none).

    Args:
        items: The items' texts.

    Returns:
        The list in words.
    """
    items = list(items)
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def recipe_markdown(record: Mapping[str, Any], n_seeds: int) -> str:
    """Section 1's text under the recipe's curves: its test score and validation change, each with the run's flags.

    Args:
        record: The recipe run's record (head phase first, then fine-tuning; scored on test).
        n_seeds: Seeds of the sweeps that follow (sections 2-4).

    Returns:
        Markdown.
    """
    from ..stats import independent_diff

    test, val = record["metrics"]["test"], record["metrics"]["val"]
    note = flag_note([record_warnings(record)])
    head = float(record["history"][0]["history"]["val_accuracy"][-1])
    change = compare_text(independent_diff(val["accuracy"], val["n"], head, val["n"]), [record_warnings(record)])
    b = finetune_budget(record)
    text = (f"On the full test split ({test['n']:,} images) the fine-tuned model reaches **{test['accuracy']:.2%}**{note} "
            f"accuracy (macro-F1 {test['macro_f1']:.3f}); on validation ({val['n']:,} images), this run's accuracy went "
            f"from {head:.2%} after the head phase to {val['accuracy']:.2%}{note} after fine-tuning: {change}.")  # fmt: skip
    still = still_improving(record)
    if still:
        text += f" ⚠ {still}, so both numbers are what this budget gives, not what fine-tuning reaches."
    text += (f" That is one run, and its two phases differ in length as well as in what trains: section 3 compares the "
             f"depths with the same number of updates, paired over {n_seeds} seeds with a 95 % interval. Fine-tuning ran "
             f"{budget_words(b) if b else 'on ' + format(record['extra']['train_size'], ',') + ' images'} and took "
             f"{record['timings']['phases']['finetune']['seconds_per_epoch']:.0f} s per epoch here.")  # fmt: skip
    return text


def still_improving(record: Mapping[str, Any] | None) -> str:
    """Why a run is flagged "not converged", from its own curve; ``""`` when it is not.

    Args:
        record: A run record or None.

    Returns:
        E.g. "its monitored validation accuracy was still rising when fine-tuning ended (76.3 % → 81.3 % →
        88.3 % on 300 images)".
    """
    from ..sanity import monitored_images

    if not record or "not converged" not in record_warnings(record):
        return ""
    hist = record.get("history") or []
    watched = [h for h in hist if isinstance(h, Mapping) and (h.get("history") or {}).get("val_accuracy")]
    if not watched:
        return "its validation accuracy was still rising when training ended"
    last = watched[-1]
    curve = " → ".join(pct(v, 1) for v in last["history"]["val_accuracy"][-4:])
    n = monitored_images(record) or ((record.get("metrics") or {}).get("val") or {}).get("n")
    phase = {"finetune": "fine-tuning", "head": "head"}.get(last.get("name"), last.get("name") or "last")
    return (f"its monitored validation accuracy was still rising when its {phase} phase ended "
            f"({curve}{f' on {n:,} images' if n else ''})")  # fmt: skip


def _paired(df: Any, key: str, a: Any, b: Any, ctx: RecordContext, col: str = "val_accuracy") -> tuple[Any, str]:
    """Group ``a`` against group ``b`` paired by seed: the difference (None without a shared seed) and its text."""
    from ..stats import paired_diff

    xa, xb, ra, rb = paired_values(df, key, a, b, col)
    if not xa:
        return None, "–"
    d = paired_diff(xa, xb, n_eval=ctx.n_eval(ra + rb, "val"))
    return d, compare_text(d, ctx.warnings(ra), ctx.warnings(rb))


def _group(df: Any, key: str, k: Any, ctx: RecordContext, col: str = "val_accuracy") -> str:
    """A group's mean ± sd over seeds with its runs' flags."""
    g = df[df[key] == k]
    return mean_sd(g[col]) + flag_note(group_flags(g, ctx))


def _first_record(df: Any, ctx: RecordContext) -> dict[str, Any] | None:
    runs = list(df["run"]) if df is not None and "run" in df else []
    return ctx.record(str(runs[0])) if runs else None


def lr_markdown(lrs: Any, chosen: float, ctx: RecordContext | None = None) -> str:
    """Section 2's finding in words: the chosen rate against the others, each with its flags, and what the budget limits.

    Args:
        lrs: ``sweep_lr`` rows (``lr_finetune``, ``seed``, ``val_accuracy``, ``run``).
        chosen: The rate chosen on validation (``pick_lr``).
        ctx: Where the runs' records are (default: the working directory).

    Returns:
        Markdown: one sentence per rate, then the budget the choice was made with.
    """
    ctx = working_context(ctx)
    broken = [lr for lr, g in lrs.groupby("lr_finetune") if is_broken(group_flags(g, ctx))]
    sound = [lr for lr in sorted(set(lrs["lr_finetune"])) if lr not in broken and lr != chosen]
    text = f"{chosen:g} chosen on validation ({_group(lrs, 'lr_finetune', chosen, ctx)})"
    if sound:
        text += "; against it " + "; ".join(f"{lr:g} {_paired(lrs, 'lr_finetune', lr, chosen, ctx)[1]} "
                                            f"(at {_group(lrs, 'lr_finetune', lr, ctx)})" for lr in sound)  # fmt: skip
    if broken:
        text += ("; " + ", ".join(f"{lr:g}" for lr in broken) + " collapsed (flagged diverged or chance-level): "
                 "not a measurement of the rate")
    text += "."
    b = finetune_budget(_first_record(lrs, ctx))
    if b:
        still = [lr for lr in sound if any("not converged" in w for w in group_flags(lrs[lrs["lr_finetune"] == lr], ctx))]
        text += (f" Every rate had the same small budget, {budget_words(b)} at a constant rate, so the choice is the best "
                 "rate for that budget")
        text += (f": {listed([f'{lr:g}' for lr in still])} {'was' if len(still) == 1 else 'were'} still improving when "
                 "it ended (⚠), so a longer run could rank them differently." if still else ".")
    return text


def depth_markdown(depth: Any, lr: float, ctx: RecordContext | None = None) -> str:
    """Section 3's finding in words: each depth against the frozen base, and what the budget limits.

    Args:
        depth: ``sweep_depth`` rows (``unfreeze_fraction``, ``seed``, ``val_accuracy``, ``run``).
        lr: The rate the sweep fine-tuned at.
        ctx: Where the runs' records are (default: the working directory).

    Returns:
        Markdown (the depths' comparisons, then the budget); empty without a frozen-base row and another
        depth. The frozen base itself is :func:`depth_reference`.
    """
    ctx = working_context(ctx)
    fractions = sorted(set(depth["unfreeze_fraction"]))
    if 0.0 not in fractions or len(fractions) < 2:
        return ""
    diffs = {f: _paired(depth, "unfreeze_fraction", f, 0.0, ctx) for f in fractions if f != 0.0}
    parts = [f"{depth_label(f)} {t} (at {_group(depth, 'unfreeze_fraction', f, ctx)})" for f, (_, t) in diffs.items()]
    text = "; ".join(parts) + "."
    b = finetune_budget(_first_record(depth[depth["unfreeze_fraction"] != 0.0], ctx))
    if b:
        text += f" Each depth had {budget_words(b)} at a constant {b['lr']:g}"
        verdicts = {d.verdict for d, _ in diffs.values() if d is not None}
        if verdicts == {"no measurable difference"}:
            text += (": no depth moved measurably from the frozen base with so few updates at so low a rate, which is "
                     "what such a budget gives, not evidence that depth does not matter (section 5 gives "
                     "fine-tuning far more updates).")
        else:
            text += ", and the differences above hold for that budget only."
    return text


def depth_reference(depth: Any, ctx: RecordContext | None = None) -> str:
    """The frozen base of the depth sweep, mean ± sd over seeds with its runs' flags.

    Args:
        depth: ``sweep_depth`` rows.
        ctx: Where the runs' records are (default: the working directory).

    Returns:
        E.g. "86.5 ± 0.2 %".
    """
    return _group(depth, "unfreeze_fraction", 0.0, working_context(ctx))


def depth_table(depth: Any, ctx: RecordContext | None = None) -> Any:
    """Section 3's table: each depth's validation accuracy and its paired difference from the frozen base (95 % interval).

    Args:
        depth: ``sweep_depth`` rows (``unfreeze_fraction``, ``policy``, ``seed``, ``val_accuracy``,
            ``trainable_params``, ``run``).
        ctx: Where the runs' records are (default: the working directory).

    Returns:
        A DataFrame indexed by the depth in words.
    """
    import pandas as pd

    ctx = working_context(ctx)
    rows = []
    for f, g in depth.groupby("unfreeze_fraction", sort=True):
        rows.append({"share of blocks unfrozen": depth_label(f), "first block trained": g["policy"].iloc[0] if "policy" in g else "–",
                     "trainable parameters": num(g["trainable_params"].iloc[0]) if "trainable_params" in g else "–",
                     "validation accuracy (mean ± sd)": _group(depth, "unfreeze_fraction", f, ctx),
                     "vs frozen base, paired by seed": "(reference)" if f == 0.0 or 0.0 not in set(depth["unfreeze_fraction"])
                     else _paired(depth, "unfreeze_fraction", f, 0.0, ctx)[1], "seeds": len(g)})  # fmt: skip
    return pd.DataFrame(rows).set_index("share of blocks unfrozen")


def group_table(df: Any, key: str, ctx: RecordContext | None = None, col: str = "val_accuracy") -> Any:
    """Each group's validation accuracy over seeds, with the ⚠ of its flagged runs beside it.

    Args:
        df: One row per run (``key``, ``seed``, ``col``, ``run``).
        key: The grouping column.
        ctx: Where the runs' records are (default: the working directory).
        col: The measured column.

    Returns:
        A DataFrame indexed by the group: ``validation accuracy (mean ± sd)`` and ``seeds``.
    """
    import pandas as pd

    ctx = working_context(ctx)
    rows = [{key: k, "validation accuracy (mean ± sd)": _group(df, key, k, ctx, col), "seeds": len(g)}
            for k, g in df.groupby(key, sort=False)]  # fmt: skip
    return pd.DataFrame(rows).set_index(key)


BN_FROZEN, BN_UPDATING = "frozen (inference mode)", "updating (training mode)"


def batchnorm_markdown(bn: Any, lr_chosen: float | None = None, ctx: RecordContext | None = None,
                       min_seeds: int = 5) -> str:  # fmt: skip
    """Section 4's finding, chosen by its intervals: updating against frozen BatchNorm, both against the head alone.

    Args:
        bn: ``batchnorm_pitfall`` rows (``batchnorm``, ``seed``, ``val_accuracy``, ``val_after_head``, ``run``).
        lr_chosen: The rate section 2 chose (the text says when these runs used another).
        ctx: Where the runs' records are (default: the working directory).
        min_seeds: The seeds the book's checklist asks for when a run trains in under a minute.

    Returns:
        Markdown; empty without both modes.
    """
    import pandas as pd

    ctx = working_context(ctx)
    if not {BN_FROZEN, BN_UPDATING} <= set(bn["batchnorm"]) or "run" not in bn:
        return ""
    d, vs = _paired(bn, "batchnorm", BN_UPDATING, BN_FROZEN, ctx)
    b = finetune_budget(_first_record(bn, ctx))
    text = (f"updating against frozen {vs} (updating {_group(bn, 'batchnorm', BN_UPDATING, ctx)}, frozen "
            f"{_group(bn, 'batchnorm', BN_FROZEN, ctx)}).")
    verdict = d.verdict if d is not None else None
    if verdict == "worse":
        text += " Here updating the statistics on small batches cost accuracy, as the mechanism above predicts."
    elif verdict == "better":
        text += " Here updating the statistics did better: the pitfall did not appear in this setting."
    elif d is not None and math.isfinite(d.low):
        text += (f" The interval includes zero: with {d.n} seeds this run neither shows the pitfall nor rules it out "
                 f"(the interval reaches {100 * d.low:+.1f} points).")
    elif d is not None:
        text += " One seed gives no interval: this run neither shows the pitfall nor rules it out."
    # each arm against its own head phase (the same seed's frozen base + head): did fine-tuning help at all?
    if "val_after_head" in bn:
        heads = bn.drop_duplicates("seed")
        long = pd.concat([bn[["batchnorm", "seed", "val_accuracy", "run"]],
                          heads.assign(batchnorm="head only", val_accuracy=heads["val_after_head"])[["batchnorm", "seed", "val_accuracy", "run"]]])  # fmt: skip
        # the head's number is from the same run's first phase: compare without the fine-tune's flags twice
        long = long.assign(run=long["run"].where(long["batchnorm"] != "head only", None))
        against = {m: _paired(long, "batchnorm", m, "head only", ctx) for m in (BN_FROZEN, BN_UPDATING)}
        below = [m for m, (x, _) in against.items() if x is not None and x.verdict == "worse"]
        head = mean_sd(heads["val_after_head"])
        parts = "; ".join(f"{m.split(' (')[0]} {t}" for m, (_, t) in against.items())
        means_below = all(bn.loc[bn["batchnorm"] == m, "val_accuracy"].mean() < heads["val_after_head"].mean() for m in against)
        if len(below) == 2:
            text += (f" Both arms ended below the head-only model of the same seeds ({head}): {parts}. Fine-tuning "
                     "damaged the pretrained features in both, so this section compares two damaged models.")
        elif means_below:
            text += (f" Both arms' means ended below the head-only model of the same seeds ({head}); paired by seed: "
                     f"{parts}.")
        else:
            text += f" Against the head-only model of the same seeds ({head}): {parts}."
    if b and lr_chosen is not None and b["lr"] != lr_chosen:
        text += (f" These runs fine-tune at the recipe's rate {b['lr']:g} with batches of {b['batch_size']}, not at the "
                 f"{lr_chosen:g} section 2 chose: they measure BatchNorm at that rate.")
    elif b:
        text += f" These runs fine-tune at {b['lr']:g} with batches of {b['batch_size']}."
    seeds = bn["seed"].nunique()
    cheap = {}
    for mode, g in bn.groupby("batchnorm", sort=False):
        secs = [((ctx.record(str(r)) or {}).get("timings") or {}).get("fit_seconds") for r in g["run"]]
        secs = sorted(x for x in secs if is_number(x))
        if secs and secs[len(secs) // 2] < 60:
            cheap[mode.split(" (")[0]] = secs[len(secs) // 2]
    if cheap and seeds < min_seeds:
        runs = listed([f"{m} about {v:.0f} s" for m, v in cheap.items()])
        text += (f" A run takes under a minute to train ({runs}, median of its records); the book asks for at least "
                 f"{min_seeds} seeds for arms that cheap and this section has {seeds}, so its intervals are wider than "
                 "they need to be: a limitation of these runs, not a finding.")
    return text


@dataclass(frozen=True)
class FinetuneSummary(ChapterSummary):
    """Chapter 3: the recipe's scores and the best settings of its sweeps.

    Attributes:
        recipe_test_accuracy: The recipe's test accuracy.
        recipe_test_macro_f1: The recipe's test macro-F1.
        val_after_head: Validation accuracy after the head phase (frozen base).
        val_after_finetune: Validation accuracy after fine-tuning.
        train_size: Training images of the recipe.
        lr_chosen: The fine-tuning learning rate chosen on validation among the sound rates (``pick_lr``:
            a diverged or chance-level rate never is), which the depth sweep used; None when not given.
        crossover_top: Where fine-tuning the top blocks beats the frozen base in the crossover study, size by
            size as the verdicts say, in words (``crossover.Crossover.describe``: e.g. "from 150 labelled images
            per class on (...)" or "at every size measured (...)"); None without the study.
        crossover_top_n: The crossover in labelled images per class (the smallest size measured when
            fine-tuning wins at every size); None when there is none (no win, or wins on both sides of a tie).
        crossover_all: As ``crossover_top``, for fine-tuning every layer.
        crossover_all_n: As ``crossover_top_n``, for fine-tuning every layer.
    """

    NOTEBOOK = "03_finetune"

    recipe_test_accuracy: float | None = None
    recipe_test_macro_f1: float | None = None
    val_after_head: float | None = None
    val_after_finetune: float | None = None
    train_size: int | None = None
    lr_chosen: float | None = None
    crossover_top: str | None = None
    crossover_top_n: float | None = None
    crossover_all: str | None = None
    crossover_all_n: float | None = None

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 3's section: the recipe's result, then every sweep row against its sweep's reference."""
        from ..stats import independent_diff

        out = ["## Fine-tuning (" + chapter_link(self.NOTEBOOK, "chapter 3") + ")", "",
               f"Setting: {setting_text(self.parameters, ctx=ctx)}. Source: {source}.", ""]
        recipe = ctx.record(str(ctx.chapter_dir / "recipe")) if ctx.chapter_dir is not None else None
        if self.recipe_test_accuracy is not None:
            nval = (recipe or {}).get("metrics", {}).get("val", {}).get("n")
            change = ""
            if nval and is_number(self.val_after_head) and is_number(self.val_after_finetune):
                d = independent_diff(self.val_after_finetune, nval, self.val_after_head, nval)
                change = f" on {nval:,} validation images — {compare_text(d, [record_warnings(recipe)])} —"
            out += [f"The two-phase recipe moved validation accuracy from {pct(self.val_after_head)} (frozen base + head) to "
                    f"{pct(self.val_after_finetune)}{change} and scores **{pct(self.recipe_test_accuracy)}**"
                    f"{flag_note([record_warnings(recipe)]) if recipe else ''} on the test split "
                    f"(macro-F1 {self.recipe_test_macro_f1:.3f}) with {num(self.train_size)} training images.", ""]  # fmt: skip
        rows = []
        sweeps = (("depth", "unfreeze_fraction", depth_label, 0.0),
                  ("learning_rate", "lr_finetune", lambda k: f"fine-tuning learning rate {k:g}", None),
                  ("batchnorm", "batchnorm", lambda k: f"BatchNorm {k}", None))  # fmt: skip
        for name, key, label, ref in sweeps:
            t = self.frame(name)
            if t is None:
                continue
            groups = list(t.groupby(key, sort=False))
            if ref is None or ref not in [k for k, _ in groups]:
                # no natural baseline: compare with the best group that is not flagged broken (chosen on validation)
                ok = [(k, g) for k, g in groups if not is_broken(group_flags(g, ctx))]
                ref = max(ok or groups, key=lambda kg: kg[1]["val_accuracy"].mean())[0]
            for k, g in groups:
                flags = group_flags(g, ctx)
                acc = mean_sd(g["val_accuracy"]) + flag_note(flags)
                if is_broken(flags):
                    acc += " — collapsed, not a finding"
                rows.append({"what": label(k), "acc": acc, "vs": versus(t, key, k, ref, "val_accuracy", ctx),
                             "ref": label(ref), "n": len(g)})  # fmt: skip
        if rows:
            out += ["Each sweep row is compared with its sweep's reference: the frozen base for depth, otherwise the best "
                    "unflagged setting of the sweep (which makes that comparison favour the reference).", "",
                    md_table(rows, [("what", "sweep"), ("acc", "validation accuracy"), ("ref", "reference"),
                                    ("vs", "difference vs reference"), ("n", "seeds")]), ""]  # fmt: skip
        return out

    def notebook_markdown(self, ctx: RecordContext | None = None) -> str:
        """The chapter's own Summary cell: its numbers in a few bullets (the results page has :meth:`render_markdown`).

        Everything is read from the summary's fields, parameters and tables and from the run records they
        name, so the executed chapter and a summary loaded from its ``summary.json`` give the same text. A
        chapter with a learning rate chosen on validation (``lr_chosen``) states every comparison paired by
        seed with its 95 % interval, shows each flagged run's ⚠ beside every number it enters, and never
        quotes a collapsed run as a setting's result; an older chapter keeps the text it was executed with.

        Args:
            ctx: Where the runs' records are (default: paths relative to the working directory).

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        P = self.parameters
        ctx = working_context(ctx)
        depth, lrs, bn = self.numeric_frame("depth"), self.numeric_frame("learning_rate"), self.numeric_frame("batchnorm")
        if self.lr_chosen is not None and "run" in depth and "run" in lrs:
            return self._interval_markdown(P, depth, lrs, bn, ctx) + self._crossover_line(ctx, Path(str(depth["run"].iloc[0])).parent)
        # A summary saved before the sweeps kept their runs (or without a rate chosen on validation):
        # means alone carry no interval, so no setting is called best, worst, better or worse.
        return (f"\n*Numbers from this run ({self.profile} profile, {network_label(P['backbone'], P.get('alpha'))}, "
                f"{P['image_size']} px).*\n\n"
                f"- **Recipe (one run):** fine-tuning moved validation accuracy from {self.val_after_head:.2%} (frozen base + "
                f"head) to {self.val_after_finetune:.2%}; the model scores **{self.recipe_test_accuracy:.2%}** on the full test "
                "split.\n- **Sweeps:** this summary keeps no per-seed runs or no rate chosen on validation, so no setting is "
                "compared here; re-execute chapter 3 to get paired intervals.\n") + self._crossover_line(ctx)  # fmt: skip

    def _interval_markdown(self, P: Any, depth: Any, lrs: Any, bn: Any, ctx: RecordContext) -> str:
        """The Summary bullets with paired intervals (recipe, learning rate, depth, BatchNorm), flags beside every number."""
        from ..stats import independent_diff

        lines = [f"*Numbers from this run ({self.profile} profile, {network_label(P['backbone'], P.get('alpha'))}, "
                 f"{P['image_size']} px; sections 2-4: {len(P['seeds'])} seed(s) per setting, paired by seed, 95 % "
                 "intervals).*", ""]  # fmt: skip
        # the recipe's folder sits beside the sweeps' runs (summarize's runs=[recipe folder])
        recipe = ctx.record(str(Path(str(depth["run"].iloc[0])).parent / "recipe"))
        note = flag_note([record_warnings(recipe)]) if recipe else ""
        nval = ((recipe or {}).get("metrics") or {}).get("val", {}).get("n")
        change = f"{100 * (self.val_after_finetune - self.val_after_head):+.1f} points"
        if nval:
            change = compare_text(independent_diff(self.val_after_finetune, nval, self.val_after_head, nval), [record_warnings(recipe)])
        b = finetune_budget(recipe)
        still = still_improving(recipe)
        lines.append(f"- **Recipe (one run{f'; {budget_words(b)}' if b else ''}):** fine-tuning moved validation accuracy "
                     f"from {self.val_after_head:.2%} (frozen base + head) to {self.val_after_finetune:.2%}{note}, {change}; "
                     f"the model scores **{self.recipe_test_accuracy:.2%}**{note} on the full test split"
                     + (f" (⚠ {still}: a property of this budget, not of fine-tuning)." if still else "."))  # fmt: skip
        chosen = self.lr_chosen
        lines.append(f"- **Learning rate (depth {P['unfreeze_fraction']:g}):** {lr_markdown(lrs, chosen, ctx)}")
        text = depth_markdown(depth, chosen, ctx)
        if text:
            lines.append(f"- **Depth (at {chosen:g}, the same number of updates), against the frozen base "
                         f"({depth_reference(depth, ctx)}):** {text}")
        text = batchnorm_markdown(bn, chosen, ctx) if bn is not None else ""
        if text:
            lines.append(f"- **BatchNorm (batches of {P['small_batch']}):** {text}")
        return "\n".join(lines) + "\n"

    def _crossover_line(self, ctx: RecordContext | None = None, chapter_dir: Path | None = None) -> str:
        """The crossover bullet (section 5), empty without the study; its network and input size are read from its records."""
        if self.crossover_top is None and self.crossover_all is None:
            return ""
        setting = ""
        if ctx is not None and chapter_dir is not None:
            recs = [ctx.record(str(r.parent)) for r in sorted((Path(ctx.root or ".") / chapter_dir / "crossover").glob("*/record.json"))]
            nets = sorted({network_label(r["params"].get("backbone"), (r["params"].get("backbone_kwargs") or {}).get("alpha"))
                           for r in recs if r and r.get("params")})  # fmt: skip
            sizes = sorted({int(r["params"]["image_size"]) for r in recs if r and (r.get("params") or {}).get("image_size")})
            if nets and sizes:
                setting = (f" ({' / '.join(nets)} at {' / '.join(f'{v} px' for v in sizes)}"
                           + (f", not the {self.parameters.get('image_size')} px of sections 1-4" if self.parameters.get("image_size") not in sizes else "")
                           + ")")  # fmt: skip
        return (f"- **Crossover (section 5):** on the test split, paired by seed with a 95 % interval{setting}, fine-tuning "
                f"the top blocks beats the frozen base + head {self.crossover_top or 'not measured'}; fine-tuning all layers "
                f"beats it {self.crossover_all or 'not measured'}.\n")  # fmt: skip


def summarize(P: Any, recipe: Mapping[str, Any], depth: Any, learning_rate: Any, batchnorm: Any,
              runs: Iterable[Any] = (), lr_chosen: float | None = None, crossover: Any = None,
              crossovers: Iterable[Any] = ()) -> FinetuneSummary:  # fmt: skip
    """Chapter 3's summary from the recipe's record and the three sweeps' tables.

    Args:
        P: The chapter's parameters.
        recipe: The recipe run's record (its first phase is the head phase).
        depth: ``sweep_depth``'s table.
        learning_rate: ``sweep_lr``'s table.
        batchnorm: ``batchnorm_pitfall``'s table.
        runs: Run folders besides those the tables name (the recipe's folder).
        lr_chosen: The rate ``finetune.pick_lr`` chose on validation (section 2), if the chapter has it.
        crossover: The crossover study's ``crossover.differences`` table (section 5), if the chapter has it.
        crossovers: ``crossover.crossover_size`` of each fine-tuned arm (objects with ``arm``,
            ``n_per_class`` and ``describe()``; arms ``finetune_top`` and ``finetune_all``).

    Returns:
        The typed summary, with the three tables (four with the crossover's differences).
    """
    test = recipe["metrics"]["test"]
    tables = {"depth": depth, "learning_rate": learning_rate, "batchnorm": batchnorm}
    if crossover is not None:
        tables["crossover"] = crossover
    cross = {}
    for c in crossovers:  # the study's own finding (crossover.crossover_size), in words and in images per class
        key = {"finetune_top": "top", "finetune_all": "all"}[c.arm]
        cross[f"crossover_{key}"] = c.describe()
        cross[f"crossover_{key}_n"] = c.n_per_class
    return FinetuneSummary.from_study(
        P, tables, runs=runs, lr_chosen=lr_chosen, **cross,
        recipe_test_accuracy=float(test["accuracy"]), recipe_test_macro_f1=float(test["macro_f1"]),
        val_after_head=float(recipe["history"][0]["history"]["val_accuracy"][-1]),
        val_after_finetune=float(recipe["metrics"]["val"]["accuracy"]), train_size=int(recipe["extra"]["train_size"]),
    )  # fmt: skip
