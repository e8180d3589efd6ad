"""Chapter 3's summary (fine-tuning): the two-phase recipe and its depth, learning-rate and BatchNorm sweeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

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
        crossover_top: Where fine-tuning the top blocks starts to beat the frozen base in the crossover
            study, in words (e.g. "from 150 labelled images per class on"); None without the study.
        crossover_top_n: The same size in labelled images per class; None when none is in the range.
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

        Everything is read from the summary's fields, parameters and tables, so the executed chapter and a
        summary loaded from its ``summary.json`` give the same text. A chapter with a learning rate chosen on
        validation (``lr_chosen``) states every comparison paired by seed with its 95 % interval, and never
        quotes a collapsed run as a setting's result; an older chapter keeps the text it was executed with.

        Args:
            ctx: Where the runs' records are (default: paths relative to the working directory).

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        P = self.parameters
        depth, lrs, bn = self.numeric_frame("depth"), self.numeric_frame("learning_rate"), self.numeric_frame("batchnorm")
        if self.lr_chosen is not None and "run" in depth and "run" in lrs:
            return self._interval_markdown(P, depth, lrs, bn, working_context(ctx)) + self._crossover_line()
        # A summary saved before the sweeps kept their runs (or without a rate chosen on validation):
        # means alone carry no interval, so no setting is called best, worst, better or worse.
        return (f"\n*Numbers from this run ({self.profile} profile, {P['backbone']}, {P['image_size']} px).*\n\n"
                f"- **Recipe (one run):** fine-tuning moved validation accuracy from {self.val_after_head:.2%} (frozen base + "
                f"head) to {self.val_after_finetune:.2%}; the model scores **{self.recipe_test_accuracy:.2%}** on the full test "
                "split.\n- **Sweeps:** this summary keeps no per-seed runs or no rate chosen on validation, so no setting is "
                "compared here; re-execute chapter 3 to get paired intervals.\n") + self._crossover_line()  # fmt: skip

    def _interval_markdown(self, P: Any, depth: Any, lrs: Any, bn: Any, ctx: RecordContext) -> str:
        """The Summary bullets with paired intervals (recipe, learning rate, depth, BatchNorm)."""
        from ..stats import independent_diff

        lines = [f"*Numbers from this run ({self.profile} profile, {P['backbone']}, {P['image_size']} px; sections 2-4: "
                 f"{len(P['seeds'])} seed(s) per setting, paired by seed, 95 % intervals).*", ""]  # fmt: skip
        # the recipe's folder sits beside the sweeps' runs (summarize's runs=[recipe folder])
        recipe = ctx.record(str(Path(str(depth["run"].iloc[0])).parent / "recipe"))
        nval = ((recipe or {}).get("metrics") or {}).get("val", {}).get("n")
        change = f"{100 * (self.val_after_finetune - self.val_after_head):+.1f} points"
        if nval:
            change = compare_text(independent_diff(self.val_after_finetune, nval, self.val_after_head, nval), [record_warnings(recipe)])
        lines.append(f"- **Recipe (one run):** fine-tuning moved validation accuracy from {self.val_after_head:.2%} (frozen base + "
                     f"head) to {self.val_after_finetune:.2%}, {change}; the model scores **{self.recipe_test_accuracy:.2%}** "
                     "on the full test split.")  # fmt: skip
        chosen = self.lr_chosen
        broken = [lr for lr, g in lrs.groupby("lr_finetune") if is_broken(group_flags(g, ctx))]
        sound = [lr for lr in sorted(set(lrs["lr_finetune"])) if lr not in broken and lr != chosen]
        text = (f"- **Learning rate (depth {P['unfreeze_fraction']:g}):** {chosen:g} chosen on validation "
                f"({mean_sd(lrs.loc[lrs['lr_finetune'] == chosen, 'val_accuracy'])})")
        if sound:
            text += "; against it " + "; ".join(f"{lr:g} {versus(lrs, 'lr_finetune', lr, chosen, 'val_accuracy', ctx)}" for lr in sound)
        if broken:
            text += ("; " + ", ".join(f"{lr:g}" for lr in broken) + " collapsed (flagged diverged or chance-level): "
                     "not a measurement of the rate")
        lines.append(text + ".")
        fractions = sorted(set(depth["unfreeze_fraction"]))
        if 0.0 in fractions and len(fractions) > 1:
            parts = [f"{depth_label(f)} {versus(depth, 'unfreeze_fraction', f, 0.0, 'val_accuracy', ctx)}" for f in fractions if f != 0.0]
            lines.append(f"- **Depth (at {chosen:g}, the same number of updates), against the frozen base "
                         f"({mean_sd(depth.loc[depth['unfreeze_fraction'] == 0.0, 'val_accuracy'])}):** " + "; ".join(parts) + ".")
        modes = list(dict.fromkeys(bn["batchnorm"]))
        if "frozen (inference mode)" in modes and "updating (training mode)" in modes and "run" in bn:
            lines.append(f"- **BatchNorm (batches of {P['small_batch']}):** updating against frozen "
                         f"{versus(bn, 'batchnorm', 'updating (training mode)', 'frozen (inference mode)', 'val_accuracy', ctx)}.")
        return "\n".join(lines) + "\n"

    def _crossover_line(self) -> str:
        """The crossover bullet (section 5), empty without the study."""
        if self.crossover_top is None and self.crossover_all is None:
            return ""
        return (f"- **Crossover (section 5):** on the test split, paired by seed with a 95 % interval, fine-tuning the top "
                f"blocks beats the frozen base + head {self.crossover_top or 'not measured'}; fine-tuning all layers "
                f"{self.crossover_all or 'not measured'}.\n")  # fmt: skip


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
