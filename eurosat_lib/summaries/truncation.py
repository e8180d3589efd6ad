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
    flag_note,
    is_number,
    md_table,
    pct,
    read_json,
    record_warnings,
    setting_text,
    working_context,
)



def speedup_text(row: Any, ranged: bool = True) -> str:
    """A cut's inference speed-up over the full backbone, with its range within single timing rounds.

    Args:
        row: A ``cut_table`` row (``speedup``; ``speedup_low`` / ``speedup_high`` where the timing
            kept its rounds).
        ranged: Add the range (False for the reference row, whose ratio is 1 by definition).

    Returns:
        E.g. ``"1.20× (1.05–1.31)"``, ``"1.20×"`` without rounds, ``"–"`` when not measured.
    """
    s = row.get("speedup") if hasattr(row, "get") else None
    if not is_number(s):
        return "–"
    lo, hi = row.get("speedup_low"), row.get("speedup_high")
    return f"{s:.2f}×" + (f" ({lo:.2f}–{hi:.2f})" if ranged and is_number(lo) and is_number(hi) else "")

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
        eval_half: The smallest half-width the validation images' term alone gives a cut's interval.
        val_images: The validation images each run was scored on.
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
    eval_half: float | None = None
    val_images: float | None = None

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
        fastest = table["speedup"].astype(float).max() if "speedup" in table else float("nan")
        # a speed measured while other jobs kept the CPU busy is withheld (NaN): say so, never "nan×"
        speed = (f"the fastest cut runs {speedup_text(table.loc[table['speedup'].astype(float).idxmax()])} as fast as the\n  "
                 "full backbone on this machine" if is_number(fastest)
                 else "speeds not shown: they were measured while other jobs kept this machine's CPU busy")  # fmt: skip
        tol = f"{100 * tolerance:g} point(s)"
        interval = self.rule == "95 % upper bound"
        test_runs, ft_runs = self.numeric_frame("test_runs"), self.numeric_frame("finetune_runs")
        if c != full:
            shown = (f"its loss is at most {100 * self.chosen_loss_high:.2f} points at the upper end of the 95 % interval, paired by seed"
                     if interval and is_number(self.chosen_loss_high) else "one seed, so the mean loss decides (no interval)")
            on_test = (f"on the test split, against the full backbone: {compare_text(_paired(test_runs, 'test_accuracy', c, full))}"
                       if test_runs is not None else f"on the test split it scores {t[c]:.2%} against {t[full]:.2%} for the full backbone")
            where = (f"the shallowest cut shown to lose at most {tol} against the full backbone is `{c}` ({shown}; "
                     f"{self.chosen_params_share:.0%} of the parameters"
                     + (f", {self.chosen_speedup:.2f}× the speed" if is_number(self.chosen_speedup) else "") + f"); {on_test}")
        else:
            where = (f"no cut is shown to lose at most {tol} against the full backbone, so the answer here is not to cut "
                     f"(test accuracy {t[full]:.2%})")
            if interval and is_number(self.noise) and self.noise > tolerance:
                where += (f"; the intervals are ±{100 * self.noise:.1f} points wide (median), wider than the tolerance, so "
                          "no cut could have been shown safe here, however close"
                          + evaluation_limit_text(table, full, tolerance, self.eval_half, self.val_images,
                                                  P.get("val_n_per_class") is None, short=True))  # fmt: skip
        return f'''
*Numbers from this run ({self.profile} profile, {P["backbone"]} α={P["alpha"]}, {P["image_size"]} px, {len(P["seeds"])} seed(s),
{P["n_per_class"] or "all"} training images per class, {len(table)} cuts).*

- **Size vs speed:** the cuts keep from {table.params_share.min():.1%} to 100% of the backbone's
  {int(table.backbone_params.iloc[-1]):,} parameters; {speed}.
- **Frozen features:** validation accuracy ranges from {table.val_mean.min():.2%} (cut after `{table.val_mean.idxmin()}`)
  to {table.val_mean.max():.2%} (`{table.val_mean.idxmax()}`); the full backbone gives {table.loc[full, "val_mean"]:.2%}.
  Accuracy went up with depth at {steps_up} of {len(table) - 1} steps between neighbouring cuts; the biggest step down
  is from `{self.cliff_from}` to `{self.cliff_to}` ({self.cliff_step * 100:.1f} points). {expectation_text(table)}
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
        # a fine-tune's flag goes wherever its number does (after the comparison: the block name leads)
        parts = [f"`{b}` {compare_text(_paired(ft_runs, 'val_accuracy', (b, 'fine-tuned'), (b, 'frozen + head')), flags(b))}"
                 + flag_note(flags(b)) for b in ft_wide.index]
        text = (f"fine-tuning (up to {P['epochs_finetune']} epochs) against the same run's frozen head (validation, paired "
                "by seed): " + "; ".join(parts))
        cut_ft = ft_wide["fine-tuned"].drop(index=full)
        if len(cut_ft):
            best = str(cut_ft.idxmax())
            d = _paired(tuned, "val_accuracy", best, full)
            # non-inferiority, as for the frozen cuts: the whole interval of the loss within the tolerance
            ok = math.isfinite(d.low) and -d.low <= tolerance + 1e-12
            text += (f". The best fine-tuned cut, `{best}`{flag_note(flags(best))}, against the fine-tuned full backbone"
                     f"{flag_note(flags(full))}: {compare_text(d, flags(best), flags(full))}; it is "
                     + (f"shown to lose at most {tol}" if ok else f"not shown to lose at most {tol}"))
        budget = budget_text(finetune_budget(tuned, ctx))
        return text + (f". {budget}" if budget else "")

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
                             "d": vs, "s": speedup_text(r) if str(r["block"]) != full else speedup_text(r, ranged=False)})  # fmt: skip
            rounds = cuts["speed_rounds"].dropna() if "speed_rounds" in cuts else []
            speed_head = (f"inference speed-up (lowest–highest within one of {rounds.max():.0f} timing rounds)" if len(rounds)
                          else "inference speed-up")  # fmt: skip
            out += [md_table(rows, [("b", "cut after"), ("p", "share of parameters"), ("va", "validation accuracy (frozen, mean)"),
                                    ("d", "difference vs full backbone (paired by seed)"), ("s", speed_head)]), ""]  # fmt: skip
        if self.chosen_cut is not None:
            tol = self.tolerance if self.tolerance is not None else float("nan")
            if self.rule == "95 % upper bound":
                rule = (f"The rule: the shallowest cut whose loss against the full backbone is at most {100 * tol:.1f} points at "
                        "the upper end of its 95 % interval (paired by seed, the validation images' noise included), a "
                        "non-inferiority test: a mean loss inside the tolerance is not enough.")
            else:
                rule = (f"The rule: the shallowest cut whose mean loss against the full backbone is at most {100 * tol:.1f} "
                        f"points ({self.rule or 'no interval'}).")
            if self.chosen_cut != self.full:
                high = (f", at most {100 * self.chosen_loss_high:.2f} points at the upper end of its interval"
                        if is_number(self.chosen_loss_high) else "")
                rule += f" Chosen by it: `{self.chosen_cut}`{high} (full backbone: `{self.full}`)."
            else:
                rule += f" No cut is shown safe by it, so it keeps the full backbone (`{self.full}`)."
                if self.rule == "95 % upper bound" and is_number(self.noise) and self.noise > tol and cuts is not None:
                    table, eval_half, n_val = self.numeric_frame("cuts").set_index("block"), self.eval_half, self.val_images
                    if "eval_half" not in table:  # a summary written before the table kept the interval's parts
                        table, eval_half, n_val = _limits_from_records(table, cut_seeds(ctx), str(self.full))
                    rule += evaluation_limit_text(table, str(self.full), tol, eval_half, n_val,
                                                  self.parameters.get("val_n_per_class") is None)  # fmt: skip
            out += [rule, ""]
            full_runs = cut_seeds(ctx).get(str(self.full), {})
            nv = min((v[2] for v in full_runs.values() if v[2]), default=None)
            if nv and is_number(self.tolerance) and cuts is not None:
                p_full = float(cuts.set_index("block").loc[str(self.full), "val_mean"]) if str(self.full) in set(cuts["block"]) else None
                se = binomial_se(p_full, nv) if is_number(p_full) else None
                if se is not None and self.tolerance < se:
                    out += [f"That tolerance is below one binomial standard error of the full backbone's validation accuracy "
                            f"({100 * se:.1f} points on {nv:,} images): cuts this close cannot be told apart here.", ""]
        ft = self.numeric_frame("finetune_runs")
        if ft is not None and self.full is not None:
            out += finetune_section(ft, str(self.full), self.parameters, ctx)
        return out


def finetune_section(ft: Any, full: str, parameters: Mapping[str, Any], ctx: RecordContext) -> list[str]:
    """The results page's fine-tuning rows: each cut before and after its fine-tune, paired by seed.

    Args:
        ft: ``finetune_cuts``'s long table (``block``, ``seed``, ``stage``, ``val_accuracy``, ``val_images``, ``run``).
        full: The full backbone's block.
        parameters: The chapter's parameters (``epochs_finetune``, ``tolerance``).
        ctx: Where the runs' records are (their flags and histories).

    Returns:
        Markdown lines.
    """
    tuned = ft[ft["stage"] == "fine-tuned"]
    flags = _tuned_flags(tuned, ctx)
    rows = []
    for block, g in ft.groupby("block", sort=False):
        means = g.groupby("stage")["val_accuracy"].mean()
        rows.append({"b": f"`{block}`", "h": pct(means.get("frozen + head"), 1),
                     "f": pct(means.get("fine-tuned"), 1) + flag_note(flags(block)),
                     "d": compare_text(_paired(ft, "val_accuracy", (block, "fine-tuned"), (block, "frozen + head")), flags(block))})  # fmt: skip
    cap = parameters.get("epochs_finetune")
    out = [f"Fine-tuning (every layer of what is left, up to {cap} epochs, early stopping on validation accuracy), each run "
           "against its own frozen head, on the validation split:", "",
           md_table(rows, [("b", "cut after"), ("h", "frozen + head (mean)"), ("f", "fine-tuned (mean)"),
                           ("d", "fine-tuned vs its own head (paired by seed)")]), ""]  # fmt: skip
    others = [b for b in tuned["block"].unique() if b != full]
    if others and full in set(tuned["block"]):
        best = str(tuned[tuned["block"].isin(others)].groupby("block")["val_accuracy"].mean().idxmax())
        d = _paired(tuned, "val_accuracy", best, full)
        tol = parameters.get("tolerance")
        ok = is_number(tol) and math.isfinite(d.low) and -d.low <= tol + 1e-12
        line = (f"The best fine-tuned cut, `{best}`{flag_note(flags(best))}, against the fine-tuned full backbone"
                f"{flag_note(flags(full))}: {compare_text(d, flags(best), flags(full))}")
        if is_number(tol):
            line += f"; it is {'' if ok else 'not '}shown to lose at most {100 * tol:g} point(s)"
        out += [line + ".", ""]
    budget = budget_text(finetune_budget(tuned, ctx))
    if budget:
        out += [budget + ".", ""]
    return out


def _limits_from_records(table: Any, per_seed: Mapping[str, Mapping[int, tuple]], full: str) -> tuple[Any, float | None, float | None]:
    """``cut_table``'s ``loss_high_seeds`` and ``eval_half`` (and ``choose_cut``'s ``eval_half``, ``val_images``)
    computed from the runs' records (:func:`cut_seeds`), for a cut table that does not have them."""
    from ..stats import eval_half_width, paired_diff

    table = table.copy()
    halves, n_all = {}, []
    for block in table.index:
        a, b = per_seed.get(str(block), {}), per_seed.get(full, {})
        seeds = sorted(set(a) & set(b))
        n = min((a[k][2] for k in seeds if a[k][2]), default=None)
        if str(block) == full or not seeds or not n:
            continue
        x, y = [b[k][0] for k in seeds], [a[k][0] for k in seeds]
        table.loc[block, "loss_high_seeds"] = paired_diff(x, y).high if len(seeds) > 1 else float("nan")
        halves[block] = eval_half_width(sum(x) / len(x), sum(y) / len(y), n)
        n_all.append(n)
    return table, (min(halves.values()) if halves else None), (float(min(n_all)) if n_all else None)


def evaluation_limit_text(cuts: Any, full: str, tolerance: float, eval_half: float | None, n_val: float | None,
                          whole_split: bool, short: bool = False) -> str:
    """Why no cut could pass the non-inferiority rule here, and what could: read from the cut table.

    The interval of a cut's loss adds the validation images' binomial noise of both arms, unpaired (an
    upper bound: the records keep no per-image predictions). When that term alone is wider than the
    tolerance, no cut scoring below the full backbone can pass, whatever the number of seeds. The seeds'
    spread alone (the images held fixed) is stated for the best cut, and not used as a test.

    Args:
        cuts: ``cut_table`` indexed by block (``val_mean``, ``drop``; ``loss_high_seeds`` when it has it).
        full: The full backbone's block.
        tolerance: The chapter's tolerance.
        eval_half: The smallest half-width the images' term gives a cut (``choose_cut``), None if unknown.
        n_val: The validation images each run was scored on.
        whole_split: Whether the runs were scored on the whole validation split already.
        short: The Summary's wording (one clause) instead of the section's sentences.

    Returns:
        Text to append after a sentence or clause (leading ``": "``/``" "``), ``""`` when the records do not say.
    """
    if not (is_number(eval_half) and is_number(n_val)):
        return ""
    if eval_half <= tolerance:
        # the seeds' spread is what makes the intervals wide: more seeds (or images) narrow them
        more = "more seeds" + ("" if whole_split else " or validation images")
        return (f": {more} would narrow them" if short else
                f" The intervals are wider than the tolerance mainly through the seeds' spread: {more} would narrow them.")
    n = int(n_val)
    rest = cuts.drop(index=full, errors="ignore")
    best = str(rest["val_mean"].astype(float).idxmax()) if len(rest) else None
    images = ("the whole validation split is already scored" if whole_split
              else "scoring more validation images would narrow it")
    seeds = ""
    if best is not None and "loss_high_seeds" in rest and is_number(rest.loc[best, "loss_high_seeds"]):
        seeds = (f"the seeds' spread alone (the {n:,} images held fixed) puts `{best}`'s loss at "
                 f"{100 * rest.loc[best, 'drop']:.2f} points, at most {100 * rest.loc[best, 'loss_high_seeds']:.2f} "
                 "at the upper end of its 95 % interval, which leaves out the images' noise, so it does not show the cut safe")
    if short:
        return (f": the validation images' term alone is ±{100 * eval_half:.2f} points on {n:,} images (unpaired, an upper "
                f"bound: the records keep no per-image predictions), so more seeds cannot narrow it and {images}; a paired "
                "test on per-image predictions could" + (f"; {seeds}" if seeds else ""))
    return (f" Why no cut could pass: each interval adds the validation images' sampling noise of both arms as if they "
            "had been scored on different images (an upper bound: the records keep no per-image predictions), and on "
            f"{n:,} images that term alone is ±{100 * eval_half:.2f} points, more than the {100 * tolerance:g}-point "
            f"tolerance, so no cut scoring below the full backbone could be shown within it however many seeds ran, and "
            f"{images}. Keeping each run's per-image predictions would allow a paired test on the same images "
            "(`stats.bootstrap_diff`), which counts only the images the two models label differently."
            + (f" For comparison, {seeds}." if seeds else ""))


def expectation_text(table: Any) -> str:
    """Whether the overview's expectation (the top of an ImageNet network is the least useful part for
    these images) held for a linear probe, chosen by the cut table's numbers.

    Args:
        table: ``cut_table`` indexed by block, shallow to deep (``val_mean``; ``loss_high`` for intervals).

    Returns:
        One sentence.
    """
    full = table.index[-1]
    best = str(table["val_mean"].astype(float).idxmax())
    cuts = table.drop(index=full)
    high = cuts["loss_high"].astype(float) if "loss_high" in cuts else None
    above = [str(b) for b in cuts.index if high is not None and math.isfinite(high[b]) and high[b] < 0]
    if above:
        return (f"The expectation of the overview held for a linear probe: cut after `{above[-1]}`, the frozen features "
                "score measurably above the full backbone's (its interval lies above it).")
    if best == full:
        return ("The expectation of the overview (that the top of an ImageNet network is the least useful part for these "
                "images) did not hold for a linear probe: the full backbone has the highest mean and no cut is measurably "
                "above it.")
    return (f"The highest mean is the cut after `{best}`'s, but no cut is measurably above the full backbone, so these "
            "runs do not decide the overview's expectation for a linear probe.")


def finetune_budget(tuned: Any, ctx: RecordContext) -> list[dict[str, Any]]:
    """Each fine-tuned run's budget, read from its record: epochs run, cap, best epoch, watched images.

    Args:
        tuned: Rows of fine-tuned runs (a ``run`` column naming their folders).
        ctx: Where the runs' records are.

    Returns:
        One entry per run whose record has a fine-tuning phase: ``run``, ``ran``, ``cap``, ``best``
        (1-based: the epoch with the highest watched validation accuracy, the first if tied) and
        ``watched`` (validation images scored after each epoch, None if unknown).
    """
    from ..sanity import monitored_images

    out = []
    for run in dict.fromkeys(tuned["run"]) if "run" in tuned else []:
        rec = ctx.record(run)
        if not rec:
            continue
        phases = [p for p in (rec.get("params") or {}).get("phases") or [] if p.get("name") == "finetune"]
        hist = next((h.get("history") or {} for h in rec.get("history") or [] if h.get("name") == "finetune"), {})
        val = hist.get("val_accuracy") or []
        if not phases or not val:
            continue
        best = max(range(len(val)), key=val.__getitem__) + 1
        out.append({"run": run, "ran": len(val), "cap": int(phases[0].get("epochs") or 0), "best": best,
                    "watched": monitored_images(rec)})  # fmt: skip
    return out


def budget_text(budget: list[dict[str, Any]]) -> str:
    """Whether the fine-tunes' epoch cap was binding, in words (no trailing full stop).

    Args:
        budget: :func:`finetune_budget`'s entries.

    Returns:
        The sentence, ``""`` without entries.
    """
    if not budget:
        return ""
    k = len(budget)
    caps = sorted({b["cap"] for b in budget})
    cap = "/".join(map(str, caps))
    at_cap = sum(b["ran"] >= b["cap"] for b in budget)
    late = sum(b["best"] >= b["cap"] - 1 for b in budget)
    bests = sorted(b["best"] for b in budget)
    watched = {b["watched"] for b in budget}
    on = f"the {watched.pop():,} watched validation images" if len(watched) == 1 and None not in watched else "the watched validation images"
    ran = (f"Every fine-tune ran its whole cap of {cap} epochs (early stopping ended none of the {k})" if at_cap == k
           else f"{at_cap} of {k} fine-tunes ran their whole cap of {cap} epochs")
    text = (f"{ran}, and the best epoch on {on} was epoch {bests[0]}" + (f"–{bests[-1]}" if bests[-1] != bests[0] else "")
            + f", one of the cap's last two in {late} of {k}")
    if 2 * at_cap > k and 2 * late > k:
        text += (": the budget was binding, so these gains are lower bounds of what fine-tuning adds, and fine-tuned "
                 "cuts are compared at a budget that held them back")
    return text


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


def choice_paragraph(table: Any, choice: Mapping[str, Any], whole_split: bool = True) -> str:
    """Section 3's paragraph: the cut chosen by the non-inferiority rule, or why none was.

    Args:
        table: ``cut_table`` (``val_mean``, ``drop``, ``loss_high``, ``params_share``, ``speedup``).
        choice: ``choose_cut``'s result.
        whole_split: Whether the runs were scored on the whole validation split (then more images
            cannot narrow the intervals).

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
                   if interval and best != full else "")
                + ". By the rule the answer stays the whole backbone: these runs cannot show a cut safe, which is not "
                "a finding that every cut loses more than the tolerance.")  # fmt: skip
    if interval and is_number(choice.get("noise")) and choice["noise"] > tol:
        text += (f" The intervals here are ±{100 * choice['noise']:.1f} points wide (median), wider than the tolerance."
                 + evaluation_limit_text(table, full, tol, choice.get("eval_half"), choice.get("val_images"), whole_split))
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

    ctx = working_context(ctx)
    tuned = ft[ft["stage"] == "fine-tuned"]
    flags = _tuned_flags(tuned, ctx)
    parts = []
    n_val = int(ft["val_images"].min()) if "val_images" in ft and ft["val_images"].notna().any() else None
    for block, g in ft.groupby("block", sort=False):
        wide = g.pivot_table(index="seed", columns="stage", values="val_accuracy").dropna()
        if {"fine-tuned", "frozen + head"} <= set(wide.columns) and len(wide):
            d = paired_diff(wide["fine-tuned"].to_numpy(), wide["frozen + head"].to_numpy(), n_eval=n_val)
            parts.append(f"at `{block}`{flag_note(flags(block))} fine-tuning against the frozen cut's own head: "
                         f"{compare_text(d, flags(block))}")
    if not parts:
        return ""
    budget = budget_text(finetune_budget(tuned, ctx))
    return ("Paired by seed (the same run before and after its fine-tuning phase): " + "; ".join(parts) + "."
            + (f" {budget}." if budget else ""))


def finetune_flags(ft: Any, ctx: RecordContext | None = None) -> dict[str, str]:
    """Each block's flag note for its fine-tuned runs (``""`` when none is flagged), for the chapter's table.

    Args:
        ft: ``finetune_cuts``'s long table (``block``, ``stage``, ``run``).
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Block -> the note, e.g. ``"⚠ not converged (1/3 runs)"``.
    """
    flags = _tuned_flags(ft[ft["stage"] == "fine-tuned"], working_context(ctx))
    return {str(b): flag_note(flags(b)).strip() for b in dict.fromkeys(ft["block"])}
