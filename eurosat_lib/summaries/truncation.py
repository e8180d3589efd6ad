"""Chapter 6's summary (truncating the backbone): accuracy and speed per cut, and the cut chosen."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    compare_text,
    is_number,
    md_table,
    pct,
    read_json,
    record_warnings,
    setting_text,
    working_context,
)


@dataclass(frozen=True)
class TruncationSummary(ChapterSummary):
    """Chapter 6: the shallowest cut within the tolerance, and the biggest step down in accuracy.

    Attributes:
        chosen_cut: The cut chosen (the full backbone's last block when none is within the tolerance).
        full: The full backbone's last block.
        chosen: ``choose_cut``'s choice (the same as ``chosen_cut``).
        chosen_all_safe: Whether every deeper cut is within the tolerance too.
        chosen_drop: The chosen cut's loss of validation accuracy against the full backbone.
        chosen_gap_sd: That loss in seed standard deviations.
        chosen_params_share: The chosen cut's share of the backbone's parameters.
        chosen_speedup: Its inference speed relative to the full backbone (NaN: not measured).
        cliff_from: The deeper cut of the biggest step down in accuracy.
        cliff_to: The shallower cut of that step.
        cliff_step: The step's size (accuracy).
        tolerance: Accuracy a cut may lose and still count as safe.
        chosen_loss_high: Upper end of the 95 % interval of the chosen cut's paired loss (NaN: one seed).
        rule: How the cut was chosen (``"95 % upper bound"`` or the one-seed mean rule).
        noise: Median half-width of the cuts' intervals (a tolerance below it cannot be met).
    """

    NOTEBOOK = "06_truncation"

    chosen_cut: str | None = None
    full: str | None = None
    chosen: str | None = None
    chosen_all_safe: bool | None = None
    chosen_drop: float | None = None
    chosen_gap_sd: float | None = None
    chosen_params_share: float | None = None
    chosen_speedup: float | None = None
    cliff_from: str | None = None
    cliff_to: str | None = None
    cliff_step: float | None = None
    tolerance: float | None = None
    chosen_loss_high: float | None = None
    rule: str | None = None
    noise: float | None = None

    def notebook_markdown(self, ctx: RecordContext | None = None) -> str:
        """The chapter's own Summary cell: size vs speed, frozen features per cut, where to cut, fine-tuning.

        Read from the summary's fields, parameters and tables (each indexed by block, shallow to deep),
        so the executed chapter and a summary loaded from its ``summary.json`` give the same text.
        With the per-seed tables (``test_runs``, ``finetune_runs``) every comparison is paired by
        seed with its 95 % interval, and "within the tolerance" means the interval's upper bound
        of the loss is (the rule ``choose_cut`` chose by); a fine-tune still improving when it stopped
        is marked so by its record's flag.

        Args:
            ctx: Where the runs' records are (default: paths relative to the working directory).

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        P = self.parameters
        table = self.numeric_frame("cuts").set_index("block")
        t = self.numeric_frame("test").set_index("block")["test_mean"]
        ft_wide = self.numeric_frame("finetune").set_index("block")
        c, full, tolerance = self.chosen, self.full, P["tolerance"]
        steps_up = int((table["val_mean"].diff().iloc[1:] > 0).sum())
        tol = f"{100 * tolerance:g} point(s)"
        interval = self.rule == "95 % upper bound"
        test_runs, ft_runs = self.numeric_frame("test_runs"), self.numeric_frame("finetune_runs")
        if c != full:
            shown = (f"its loss is at most {100 * self.chosen_loss_high:.2f} points at the upper end of the 95 % interval, paired by seed"
                     if interval and is_number(self.chosen_loss_high) else "one seed, so the mean loss decides (no interval)")
            on_test = (f"on the test split, against the full backbone: {compare_text(_paired(test_runs, 'test_accuracy', c, full))}"
                       if test_runs is not None else f"on the test split it scores {t[c]:.2%} against {t[full]:.2%} for the full backbone")
            where = (f"the shallowest cut shown to lose at most {tol} against the full backbone is `{c}` ({shown}; "
                     f"{self.chosen_params_share:.0%} of the parameters, {self.chosen_speedup:.2f}× the speed); {on_test}")
        else:
            where = (f"no cut is shown to lose at most {tol} against the full backbone, so the answer here is not to cut "
                     f"(test accuracy {t[full]:.2%})")
            if interval and is_number(self.noise) and self.noise > tolerance:
                where += (f"; the intervals are ±{100 * self.noise:.1f} points wide (median), wider than the tolerance, so "
                          "no cut could have been shown safe here, however close")
        return f'''
*Numbers from this run ({self.profile} profile, {P["backbone"]} α={P["alpha"]}, {P["image_size"]} px, {len(P["seeds"])} seed(s),
{P["n_per_class"] or "all"} training images per class, {len(table)} cuts).*

- **Size vs speed:** the cuts keep from {table.params_share.min():.1%} to 100% of the backbone's
  {int(table.backbone_params.iloc[-1]):,} parameters; the fastest cut runs {table.speedup.max():.2f}× as fast as the
  full backbone on this machine.
- **Frozen features:** validation accuracy ranges from {table.val_mean.min():.2%} (cut after `{table.val_mean.idxmin()}`)
  to {table.val_mean.max():.2%} (`{table.val_mean.idxmax()}`); the full backbone gives {table.loc[full, "val_mean"]:.2%}.
  Accuracy went up with depth at {steps_up} of {len(table) - 1} steps between neighbouring cuts; the biggest step down
  is from `{self.cliff_from}` to `{self.cliff_to}` ({self.cliff_step * 100:.1f} points).
- **Where to cut:** {where}.
- **Fine-tuning:** {self._finetune_text(ft_wide, ft_runs, full, tolerance, tol, working_context(ctx))}.
'''

    def _finetune_text(self, ft_wide: Any, ft_runs: Any, full: str, tolerance: float, tol: str, ctx: RecordContext) -> str:
        """The Summary's fine-tuning bullet: each cut's gain, and the best fine-tuned cut against the full backbone."""
        P = self.parameters
        if ft_runs is None:
            # Means alone carry no interval, and the chapter states no comparison without one.
            return ("this summary has no per-seed fine-tuning table, so no fine-tuning comparison is stated; "
                    "re-execute chapter 6 to get one")
        tuned = ft_runs[ft_runs["stage"] == "fine-tuned"]
        flags = _tuned_flags(tuned, ctx)
        parts = [f"`{b}` {compare_text(_paired(ft_runs, 'val_accuracy', (b, 'fine-tuned'), (b, 'frozen + head')), flags(b))}"
                 for b in ft_wide.index]
        text = (f"fine-tuning (up to {P['epochs_finetune']} epochs) against the same run's frozen head (validation, paired "
                "by seed): " + "; ".join(parts))
        cut_ft = ft_wide["fine-tuned"].drop(index=full)
        if len(cut_ft):
            best = str(cut_ft.idxmax())
            d = _paired(tuned, "val_accuracy", best, full)
            # non-inferiority, as for the frozen cuts: the whole interval of the loss within the tolerance
            ok = math.isfinite(d.low) and -d.low <= tolerance + 1e-12
            text += (f". The best fine-tuned cut, `{best}`, against the fine-tuned full backbone: "
                     f"{compare_text(d, flags(best), flags(full))}; it is "
                     + (f"shown to lose at most {tol}" if ok else f"not shown to lose at most {tol}"))
        return text

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 6's section: every cut against the full backbone (paired by seed), then the choice."""
        from ..stats import binomial_se, paired_diff

        out = ["## Truncating the backbone (" + chapter_link(self.NOTEBOOK, "chapter 6") + ")", "",
               f"Setting: {setting_text(self.parameters, ctx=ctx)}. Source: {source}.", ""]
        cuts = self.frame("cuts")
        if cuts is not None:
            per_seed = cut_seeds(ctx)
            full = str(self.full if self.full is not None else cuts["block"].iloc[-1])
            rows = []
            for _, r in cuts.iterrows():
                vs = "–"
                a, b = per_seed.get(str(r["block"]), {}), per_seed.get(full, {})
                seeds = sorted(set(a) & set(b))
                if str(r["block"]) == full:
                    vs = "(reference)"
                elif seeds:
                    d = paired_diff([a[k][0] for k in seeds], [b[k][0] for k in seeds],
                                    n_eval=min((a[k][2] for k in seeds if a[k][2]), default=None))  # fmt: skip
                    vs = compare_text(d, [a[k][1] for k in seeds], [b[k][1] for k in seeds])
                elif is_number(r.get("drop")):
                    vs = f"{-100 * r['drop']:+.1f} points (per-seed values not found: no interval)"
                rows.append({"b": f"`{r['block']}`", "p": pct(r.get("params_share"), 1), "va": pct(r.get("val_mean"), 1),
                             "d": vs, "s": f"{r['speedup']:.2f}×" if is_number(r.get("speedup")) else "–"})  # fmt: skip
            out += [md_table(rows, [("b", "cut after"), ("p", "share of parameters"), ("va", "validation accuracy (frozen, mean)"),
                                    ("d", "difference vs full backbone (paired by seed)"), ("s", "inference speed-up")]), ""]  # fmt: skip
        if self.chosen_cut is not None:
            tol = self.tolerance if self.tolerance is not None else float("nan")
            out += [f"Shallowest cut within the chapter's tolerance of {100 * tol:.1f} points: "
                    f"`{self.chosen_cut}` (full backbone: `{self.full}`).", ""]
            full_runs = cut_seeds(ctx).get(str(self.full), {})
            nv = min((v[2] for v in full_runs.values() if v[2]), default=None)
            if nv and is_number(self.tolerance) and cuts is not None:
                p_full = float(cuts.set_index("block").loc[str(self.full), "val_mean"]) if str(self.full) in set(cuts["block"]) else None
                se = binomial_se(p_full, nv) if is_number(p_full) else None
                if se is not None and self.tolerance < se:
                    out += [f"That tolerance is below one binomial standard error of the full backbone's validation accuracy "
                            f"({100 * se:.1f} points on {nv:,} images): cuts this close cannot be told apart here.", ""]
        return out


def cut_seeds(ctx: RecordContext) -> dict[str, dict[int, tuple[float, list[str], int | None]]]:
    """Chapter 6's frozen-cut runs (``cut-<block>_seed<k>``): block -> seed -> (val accuracy, flags, val images).

    Args:
        ctx: Where the chapter's run folder is.

    Returns:
        The completed runs' validation numbers, empty without a chapter folder.
    """
    out: dict[str, dict[int, tuple[float, list[str], int | None]]] = {}
    if ctx.chapter_dir is None or not ctx.chapter_dir.is_dir():
        return out
    for d in sorted(ctx.chapter_dir.iterdir()):
        m = re.fullmatch(r"cut-(.+)_seed(\d+)", d.name)
        rec = read_json(d / "record.json") if m else None
        if m and rec and rec.get("status") == "complete" and is_number((rec.get("metrics") or {}).get("val", {}).get("accuracy")):
            val = rec["metrics"]["val"]
            out.setdefault(m.group(1), {})[int(m.group(2))] = (float(val["accuracy"]), record_warnings(rec), int(val.get("n") or 0) or None)
    return out


def summarize(P: Any, cuts: Any, choice: Mapping[str, Any], test: Any, finetune: Any,
              test_runs: Any = None, finetune_runs: Any = None) -> TruncationSummary:
    """Chapter 6's summary from the cut table, the choice and the test and fine-tuning tables.

    Args:
        P: The chapter's parameters.
        cuts: ``cut_table`` (indexed by block, shallow to deep).
        choice: ``choose_cut``'s result (its scalar entries become the summary's numbers).
        test: The test scores per block (indexed by block).
        finetune: Frozen + head vs fine-tuned per block (indexed by block).
        test_runs: ``score_on_test``'s per-seed table (``block``, ``seed``, ``test_accuracy``,
            ``test_images``), for the paired test comparison.
        finetune_runs: ``finetune_cuts``'s per-seed table (``block``, ``seed``, ``stage``,
            ``val_accuracy``, ``val_images``), for the paired fine-tuning gains.

    Returns:
        The typed summary, with its tables.
    """
    scalars = {k: v for k, v in choice.items() if isinstance(v, (int, float, str, bool))}
    tables = {"cuts": cuts.reset_index(), "test": test.reset_index(), "finetune": finetune.reset_index()}
    for name, df in (("test_runs", test_runs), ("finetune_runs", finetune_runs)):
        if df is not None:
            tables[name] = df
    return TruncationSummary.from_study(P, tables, **{"chosen_cut": choice["chosen"], "full": choice["full"], **scalars})


def _tuned_flags(tuned: Any, ctx: RecordContext) -> Any:
    """block -> the flags of its fine-tuned runs (the head stage of a run is not what its flags judge)."""
    def flags(block: str) -> list[list[str]]:
        runs = list(tuned.loc[tuned["block"] == block, "run"]) if "run" in tuned else []
        return ctx.warnings(runs)

    return flags


def _paired(runs: Any, col: str, a: Any, b: Any) -> Any:
    """Arm ``a`` minus arm ``b`` of ``col``, paired by seed, with the evaluation images' noise.

    An arm is a block, or a ``(block, stage)`` pair in a table with a ``stage`` column.
    """
    from ..stats import paired_diff

    def arm(key: Any) -> Any:
        if isinstance(key, tuple):
            sel = (runs["block"] == key[0]) & (runs["stage"] == key[1])
        else:
            sel = runs["block"] == key
        return runs[sel].set_index("seed")

    xa, xb = arm(a), arm(b)
    seeds = sorted(set(xa.index) & set(xb.index))
    n_col = "test_images" if col.startswith("test") else "val_images"
    n = int(runs[n_col].min()) if n_col in runs and runs[n_col].notna().any() else None
    return paired_diff(xa.loc[seeds, col].to_numpy(), xb.loc[seeds, col].to_numpy(), n_eval=n)


# --------------------------------------------------------------------------------------------
# The chapter's own paragraphs
# --------------------------------------------------------------------------------------------


def choice_paragraph(table: Any, choice: Mapping[str, Any]) -> str:
    """Section 3's paragraph: the cut chosen by the non-inferiority rule, or why none was.

    Args:
        table: ``cut_table`` (``val_mean``, ``drop``, ``loss_high``, ``params_share``, ``speedup``).
        choice: ``choose_cut``'s result.

    Returns:
        Markdown.
    """
    c, full, tol = choice["chosen"], choice["full"], float(choice["tolerance"])
    interval = choice.get("rule") == "95 % upper bound"
    if c != full:
        text = (f"**Chosen cut: after `{c}`** — {pct(table.loc[c, 'val_mean'])} validation accuracy against "
                f"{pct(table.loc[full, 'val_mean'])} for the full backbone: it loses {100 * choice['chosen_drop']:.2f} points"
                + (f", at most {100 * choice['chosen_loss_high']:.2f} (upper end of the 95 % interval, paired by seed), "
                   f"within the tolerance of {100 * tol:g} point(s)" if interval else
                   f" on the mean of one seed, within the tolerance of {100 * tol:g} point(s) (no interval: one seed)")
                + f". It keeps {choice['chosen_params_share']:.0%} of the parameters"
                + (f" and runs {choice['chosen_speedup']:.2f}× as fast." if is_number(choice.get("chosen_speedup"))
                   else " (speed not measured on a quiet machine)."))  # fmt: skip
    else:
        best = table["val_mean"].iloc[:-1].astype(float).idxmax() if len(table) > 1 else full
        text = (f"**No cut is shown to lose at most {100 * tol:g} point(s)**: the best cut, `{best}`, reaches "
                f"{pct(table.loc[best, 'val_mean'])} against {pct(table.loc[full, 'val_mean'])}"
                + (f", and its loss could be as large as {100 * table.loc[best, 'loss_high']:.2f} points (95 % upper bound)"
                   if interval and best != full else "") + ". On this evidence, keep the whole backbone.")  # fmt: skip
    if interval and is_number(choice.get("noise")) and choice["noise"] > tol:
        text += (f" The intervals here are ±{100 * choice['noise']:.1f} points wide (median), wider than the tolerance: "
                 "no cut could be shown safe at this tolerance, however close, without more seeds or images.")
    if not choice.get("chosen_all_safe", True):
        text += (" Some deeper cut is not shown within the tolerance: either its accuracy dips below the chosen cut's "
                 "or its interval is wider; the table above says which.")
    return text + (f" The largest single step down is from `{choice['cliff_from']}` to `{choice['cliff_to']}`: "
                   f"{100 * choice['cliff_step']:.1f} points.")


def finetune_paragraph(ft: Any, ctx: RecordContext | None = None) -> str:
    """Section 4's paragraph: what the fine-tune adds at each cut, paired with its own head phase.

    Args:
        ft: ``finetune_cuts``'s long table (``block``, ``seed``, ``stage``, ``val_accuracy``, ``val_images``,
            ``run``).
        ctx: Where the runs' records are (default: paths relative to the working directory): a
            fine-tune still improving when it stopped is marked so.

    Returns:
        Markdown.
    """
    from ..stats import paired_diff

    flags = _tuned_flags(ft[ft["stage"] == "fine-tuned"], working_context(ctx))
    parts = []
    n_val = int(ft["val_images"].min()) if "val_images" in ft and ft["val_images"].notna().any() else None
    for block, g in ft.groupby("block", sort=False):
        wide = g.pivot_table(index="seed", columns="stage", values="val_accuracy").dropna()
        if {"fine-tuned", "frozen + head"} <= set(wide.columns) and len(wide):
            d = paired_diff(wide["fine-tuned"].to_numpy(), wide["frozen + head"].to_numpy(), n_eval=n_val)
            parts.append(f"at `{block}` fine-tuning against the frozen cut's own head: {compare_text(d, flags(block))}")
    return ("Paired by seed (the same run before and after its fine-tuning phase): " + "; ".join(parts) + ".") if parts else ""
