"""Chapter 5's summary (choosing a backbone): the leaderboard, the choice and its runner-up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    compare_text,
    duration,
    flag_note,
    is_broken,
    is_number,
    md_table,
    mean_sd,
    num,
    paired_values,
    pct,
    versus,
    working_context,
)


@dataclass(frozen=True)
class BackbonesSummary(ChapterSummary):
    """Chapter 5: the candidate chosen on validation and its test score.

    Attributes:
        chosen: The chosen candidate's label.
        chosen_test_accuracy: Its mean test accuracy over seeds.
        test_n: Test images it was scored on.
    """

    NOTEBOOK = "05_backbones"

    chosen: str | None = None
    chosen_test_accuracy: float | None = None
    test_n: int | None = None

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 5's section: the leaderboard (flagged candidates shown, never chosen) and the choice."""
        from ..stats import paired_diff

        out = ["## Choosing a backbone (" + chapter_link(self.NOTEBOOK, "chapter 5") + ")", ""]
        runs = self.frame("runs")
        setting = backbones_setting(self.parameters, set(runs["init"]) if runs is not None and "init" in runs else None)
        if setting:
            out += [f"Setting: {setting}.", ""]
        out += [f"Ranked by validation accuracy (mean ± sd over seeds); *init* says whether ImageNet weights were available "
                "here or the candidate was trained from scratch. A flagged candidate (⚠) is shown but never chosen or "
                f"compared. Source: {source}.", ""]  # fmt: skip
        board = self.frame("leaderboard")
        flags_of = {}
        if runs is not None and "run" in runs:
            flags_of = {c: ctx.warnings(list(g["run"])) for c, g in runs.groupby("candidate", sort=False)}
        if board is not None:
            rows = []
            for _, r in board.iterrows():
                fl = flags_of.get(r["candidate"], [])
                va = pct(r["val_accuracy"], 1) + (f" ± {100 * r['val_sd']:.1f}" if is_number(r.get("val_sd")) else "") + flag_note(fl)
                if is_broken(fl):
                    va += " — not a finding"
                rows.append({"c": r["candidate"], "i": r["init"], "px": num(r["image_size"]), "va": va,
                             "te": pct(r.get("test_accuracy"), 1), "p": f"{r['params_M']:.2f}",
                             "s": num(r.get("images_per_s")),
                             "t": duration(r.get("fit_seconds") if is_number(r.get("fit_seconds")) else None)})  # fmt: skip
            out += [md_table(rows, [("c", "candidate"), ("i", "init"), ("px", "input px"), ("va", "validation accuracy"),
                                    ("te", "test accuracy (subset)"), ("p", "parameters (M)"), ("s", "inference images/s"),
                                    ("t", "training time")]), ""]  # fmt: skip
            broken = [c for c, fl in flags_of.items() if is_broken(fl)]
            for c in broken:
                init = board.set_index("candidate").loc[c, "init"] if c in set(board["candidate"]) else ""
                recs = [ctx.record(r) for r in runs[runs["candidate"] == c]["run"]] if init == "from scratch" else []
                why = "".join(scratch_story(r) for r in recs[:1] if r)
                out += [f"**{c}**{flag_note(flags_of[c])}: left out of the choice.{why}", ""]
        if self.chosen is not None:
            final = self.numeric_frame("final")
            spread = (f" (the mean of {len(final)} seeds, sd {100 * final['test_accuracy'].std(ddof=1):.1f} points)"
                      if final is not None and len(final) > 1 else "")
            text = (f"Chosen on validation: **{self.chosen}**, {pct(self.chosen_test_accuracy)} on {num(self.test_n)} "
                    f"test images{spread}.")
            if board is not None and runs is not None and len(board) > 1:
                ok = [c for c in board["candidate"] if c != self.chosen and not is_broken(flags_of.get(c, []))]
                if ok:
                    runner = ok[0]
                    xa, xb, ra, rb = paired_values(runs, "candidate", self.chosen, runner, "val_accuracy")
                    if xa:
                        d = paired_diff(xa, xb, n_eval=ctx.n_eval(ra + rb, "val"))
                        text += (f" Against the runner-up **{runner}** on validation: "
                                 f"{compare_text(d, ctx.warnings(ra), ctx.warnings(rb))}.")
                        stopped = stopped_below_head(runs, ctx) if "run" in runs else []
                        if stopped:
                            check = sensitivity_text(runs, self.chosen, runner, "val_accuracy", stopped, ctx)
                            odd = outlier_test_text(runs, self.chosen, final, ctx, "chapter 5, section 2") if final is not None else ""
                            text += (" Early stopping ended " + ", ".join(f"`{o['name']}`" for o in stopped)
                                     + " on weights below the run's own head phase (chapter 5, section 2)"
                                     + (f"; {check}" if check else "") + "." + (f" {odd}" if odd else ""))
            out += [text, ""]
        return out

    def notebook_markdown(self, ctx: RecordContext | None = None) -> str:
        """The chapter's own Summary cell: the choice, its cost, the runner-up and pretrained vs scratch.

        Read from the summary's fields, parameters and tables (the leaderboard in its order, best first),
        so the executed chapter and a summary loaded from its ``summary.json`` give the same text.
        Comparisons are paired by seed with their 95 % interval; a cost not measured on a quiet machine
        is left out.

        Args:
            ctx: Where the runs' records are (default: paths relative to the working directory).

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        from ..data import CLASS_NAMES

        ctx = working_context(ctx)
        board = self.numeric_frame("leaderboard").set_index("candidate")
        runs = self.numeric_frame("runs")
        final = self.numeric_frame("final")
        chosen = self.chosen
        n_train = int(self.parameters.get("n_per_class") or 0) * len(CLASS_NAMES) or "all"
        cost = [f"{board.loc[chosen, 'params_M']:.2f} M parameters"] if is_number(board.loc[chosen, "params_M"]) else []
        if is_number(board.loc[chosen, "images_per_s"]):
            cost.append(f"{board.loc[chosen, 'images_per_s']:.0f} images/s at inference")
        if is_number(board.loc[chosen, "fit_seconds"]):
            cost.append(f"{board.loc[chosen, 'fit_seconds']:.0f} s to train here")
        lines = [f"*Numbers from this run ({self.profile} profile, {len(board)} candidates, {len(runs)} runs, "
                 f"{n_train} training images, recipe of chapter 3).*", "",
                 f"- **Choice (by validation):** {chosen} — {mean_sd(runs.loc[runs['candidate'] == chosen, 'val_accuracy'])} "
                 f"validation, **{self.chosen_test_accuracy:.2%}** on the test split ({self.test_n:,} images"
                 + (f", the mean of {len(final)} seeds" if final is not None and len(final) > 1 else "") + ").",
                 f"- **Cost of the choice:** {', '.join(cost) or 'not measured in this run'}."]  # fmt: skip
        stopped = stopped_below_head(runs, ctx)
        if len(board) > 1:
            runner = board.index[1]
            check = sensitivity_text(runs, runner, chosen, "val_accuracy", stopped, ctx)
            lines.append(f"- **Runner-up:** {runner}, against the choice on validation "
                         f"{versus(runs, 'candidate', runner, chosen, 'val_accuracy', ctx)}" + (f"; {check}" if check else "") + ".")
        if stopped:
            odd = outlier_test_text(runs, chosen, final, ctx) if final is not None else ""
            lines.append("- **Runs to read with care:** " + ", ".join(f"`{o['name']}`" for o in stopped)
                         + f": early stopping ended {'each' if len(stopped) > 1 else 'its'} fine-tune on a few hundred watched "
                         "validation images, on weights below the run's own head phase (section 2)." + (f" {odd}" if odd else ""))
        vs = scratch_vs_pretrained(board, runs, ctx)
        if vs:
            lines.append(f"- **Pretrained vs from scratch:** the best from scratch ({vs[0]}) against the best pretrained "
                         f"({vs[1]}) on validation {vs[2]}.")
        return "\n".join(lines) + "\n"




def backbones_setting(parameters: Mapping[str, Any], inits: set[str] | None = None) -> str:
    """Chapter 5's setting in words: training images, input sizes, seeds and epoch budgets of each kind of candidate.

    Args:
        parameters: The chapter's parameters.
        inits: The kinds of candidate that ran (``"ImageNet"``, ``"from scratch"``); None: both.

    Returns:
        The setting, ``""`` when the parameters do not say.
    """
    from ..data import CLASS_NAMES

    p = parameters
    if not p.get("seeds"):
        return ""
    bits = []
    if p.get("n_per_class"):
        bits.append(f"{p['n_per_class']} training images per class ({p['n_per_class'] * len(CLASS_NAMES):,} in all)")
    if p.get("image_size") and (inits is None or "ImageNet" in inits):
        pre = f"pretrained candidates at {p['image_size']} px, {len(p['seeds'])} seeds"
        if p.get("epochs_head") is not None and p.get("epochs_finetune") is not None:
            pre += (f", a {p['epochs_head']}-epoch head phase then fine-tuning capped at {p['epochs_finetune']} epochs "
                    "(early stopping on validation accuracy)")
        bits.append(pre)
    scratch = p.get("scratch_seeds")
    if scratch is not None and p.get("scratch_image_size") and (inits is None or "from scratch" in inits):
        k = len(scratch) if isinstance(scratch, (list, tuple)) else int(scratch)
        bits.append(f"from scratch at {p['scratch_image_size']} px, {k} seeds"
                    + (f", capped at {p['scratch_epochs']} epochs" if p.get("scratch_epochs") else ""))
    return "; ".join(bits)


def epoch_cap(record: Mapping[str, Any]) -> int:
    """The most epochs the record's phases allowed (early stopping ended the run if it ran fewer).

    Args:
        record: A run record.

    Returns:
        The sum of the phases' epoch budgets.
    """
    return sum(int(ph.get("epochs") or 0) for ph in (record.get("params") or {}).get("phases") or [])


def scratch_story(record: Mapping[str, Any]) -> str:
    """Why a from-scratch run's number is not a finding, read from its own record (phases, history).

    Args:
        record: The flagged run's record.

    Returns:
        The explanation (a leading space), or ``""`` when the record does not say.
    """
    phases = (record.get("params") or {}).get("phases") or []
    if phases and phases[0].get("unfreeze") == "frozen":
        return (" Its run trained a head on a frozen, randomly initialised backbone before any layer of the "
                "backbone could learn, so its number measures that mistake, not the architecture.")  # fmt: skip
    hist: dict[str, list[float]] = {}
    for ph in record.get("history") or []:
        for k, v in (ph.get("history") or {}).items():
            hist.setdefault(k, []).extend(v)
    tr, va = hist.get("accuracy") or [], hist.get("val_accuracy") or []
    if not tr or not va:
        return ""
    n = (record.get("extra") or {}).get("train_size")
    # early stopping restored the best epoch of what it watched (validation loss unless the phase says)
    monitor = (phases[-1].get("early_stopping_monitor") if phases else None) or "val_loss"
    watched = hist.get(monitor) or []
    pick = max if "accuracy" in monitor else min
    best = pick(range(len(watched)), key=watched.__getitem__) if watched else None
    what = "validation accuracy" if monitor == "val_accuracy" else "validation loss"
    restored = (f", and early stopping on {what} kept the weights of epoch {best + 1} (validation "
                f"accuracy {pct(va[best], 0)})" if best is not None and best < len(va) and len(va) < epoch_cap(record) else "")
    return (f" It trained every layer from random weights for {len(tr)} epochs: training accuracy rose to "
            f"{pct(max(tr), 0)} while validation accuracy stayed between {pct(min(va), 0)} and {pct(max(va), 0)}"
            + (f" (on {num(n)} training images)" if n else "")
            + restored + ". It had not yet learned features that carry to new images, so its number says "
            "nothing about the architecture.")


def summarize(P: Any, leaderboard: Any, runs: Any, final: Any, chosen: str) -> BackbonesSummary:
    """Chapter 5's summary from the leaderboard, the per-run table and the chosen model's test runs.

    Args:
        P: The chapter's parameters.
        leaderboard: ``summarise`` (indexed by candidate, best first).
        runs: ``compare_backbones``'s per-run table.
        final: ``final_test``'s table (one row per seed; ``test_accuracy``, ``test_n``).
        chosen: The candidate chosen on validation (``choose``).

    Returns:
        The typed summary, with the three tables.
    """
    return BackbonesSummary.from_study(
        P, {"leaderboard": leaderboard.reset_index(), "runs": runs, "final": final},
        chosen=str(chosen), chosen_test_accuracy=float(final["test_accuracy"].mean()), test_n=int(final["test_n"].iloc[0]),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The chapter's own paragraphs: every accuracy comparison through the paired 95 % interval
# --------------------------------------------------------------------------------------------


def scratch_vs_pretrained(board: Any, runs: Any, ctx: RecordContext) -> tuple[str, str, str] | None:
    """The best candidate from scratch against the best pretrained one, on validation, paired by seed.

    Args:
        board: The leaderboard (best first; ``init`` is ``"ImageNet"`` or ``"from scratch"``).
        runs: The per-run table.
        ctx: Where the runs' records are.

    Returns:
        ``(scratch candidate, pretrained candidate, the comparison's text)``, or None without both kinds.
    """
    pre = [c for c in board.index if board.loc[c, "init"] == "ImageNet"]
    scr = [c for c in board.index if board.loc[c, "init"] == "from scratch"]
    if not (pre and scr):
        return None
    return scr[0], pre[0], versus(runs, "candidate", scr[0], pre[0], "val_accuracy", ctx) + confounds(board, runs, scr[0], pre[0])


def confounds(board: Any, runs: Any, a: str, b: str) -> str:
    """What differs between two candidates besides their initial weights, read from the tables.

    Args:
        board: The leaderboard (indexed by candidate; ``init``, ``image_size``).
        runs: The per-run table (``candidate``, ``backbone``).
        a: One candidate.
        b: The other.

    Returns:
        A clause (leading ``"; "``), ``""`` when only the weights differ.
    """
    what = []
    names = runs.groupby("candidate")["backbone"].first() if "backbone" in runs else {}
    if a in names and b in names and names[a] != names[b]:
        what.append(f"the architecture ({names[a]} vs {names[b]})")
    sa, sb = board.loc[a, "image_size"], board.loc[b, "image_size"]
    if is_number(sa) and is_number(sb) and sa != sb:
        what.append(f"the input size ({sa:.0f} vs {sb:.0f} px; chapter 1 measures what input size alone changes)")
    if board.loc[a, "init"] != board.loc[b, "init"]:
        what.append("the recipe (one all-layers phase from random weights vs a head phase then fine-tuning)")
    if not what:
        return ""
    return ("; this compares more than the ImageNet weights: " + (", ".join(what[:-1]) + " and " if len(what) > 1 else "")
            + what[-1] + " differ too, so it is not the value of pretraining alone")


def leaderboard_paragraph(runs: Any, board: Any, front: Sequence[str] = (), ctx: RecordContext | None = None) -> str:
    """Section 3's paragraph: every candidate against the best on validation, then the costs.

    Args:
        runs: ``compare_backbones``'s per-run table (``candidate``, ``seed``, ``val_accuracy``, ``run``).
        board: The leaderboard (``summarise``: indexed by candidate, best first).
        front: The Pareto-optimal candidates.
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Markdown.
    """
    ctx = working_context(ctx)
    best = board.index[0]
    g = runs[runs["candidate"] == best]
    n_val = ctx.n_eval(list(runs["run"]), "val")
    out = [f"The best mean validation accuracy came from **{best}**: {mean_sd(g['val_accuracy'])} over {len(g)} seed(s)"
           + (f" ({n_val:,} validation images)" if n_val else "") + flag_note(ctx.warnings(list(g["run"]))) + "."]  # fmt: skip
    others = [f"**{c}** {mean_sd(runs.loc[runs['candidate'] == c, 'val_accuracy'])}, "
              f"{versus(runs, 'candidate', c, best, 'val_accuracy', ctx)}" for c in board.index[1:]]
    if others:
        out.append("Against it, paired by seed (the same training images): " + "; ".join(others) + ".")
    stopped = stopped_below_head(runs, ctx)
    if stopped:
        names = ", ".join(f"`{o['name']}`" for o in stopped)
        checks = [t for t in (sensitivity_text(runs, c, best, "val_accuracy", stopped, ctx) for c in board.index[1:]) if t]
        out.append(f"These comparisons keep {names}, whose fine-tune{'s' if len(stopped) > 1 else ''} early stopping ended "
                   f"below {'their' if len(stopped) > 1 else 'its'} own head phase (section 2)"
                   + ("; " + "; ".join(checks) if checks else "") + ".")
    speed = board["images_per_s"].astype(float)
    if speed.notna().any():
        fastest = speed.idxmax()
        if fastest != best and is_number(speed[best]):
            out.append(f"The fastest at inference, **{fastest}**, runs {speed[fastest] / speed[best]:.1f}× as fast as {best}.")
    else:
        out.append("Inference speeds are not shown: none was measured on a quiet machine in this run.")
    smallest = board["params_M"].astype(float).idxmin()
    if smallest != best:
        out.append(f"The smallest, **{smallest}**, has {board.loc[smallest, 'params_M']:.2f} M parameters against "
                   f"{board.loc[best, 'params_M']:.2f} M.")
    vs = scratch_vs_pretrained(board, runs, ctx)
    if vs:
        out.append(f"The best candidate trained from scratch, **{vs[0]}**, against the best pretrained one, {vs[1]}: {vs[2]}.")
    if front:
        out.append("Not beaten on both accuracy and speed by any other candidate (the Pareto front): " + ", ".join(front) + ".")
    return " ".join(out)


def outlier_test_text(runs: Any, chosen: str, final: Any, ctx: RecordContext, where: str = "section 2") -> str:
    """The chosen candidate's early-stopped runs (:func:`stopped_below_head`) on the test split, and its
    mean without them, labelled as a sensitivity check.

    Args:
        runs: The per-run table.
        chosen: The chosen candidate.
        final: ``final_test``'s table (``seed``, ``test_accuracy``).
        ctx: Where the runs' records are.
        where: Where the page explains those runs.

    Returns:
        Sentences, ``""`` when none of the chosen candidate's runs stopped below its head phase.
    """
    bad = {o["seed"]: o for o in stopped_below_head(runs[runs["candidate"] == chosen], ctx)}
    hit = final[final["seed"].isin(bad)]
    rest = final[~final["seed"].isin(bad)]
    if hit.empty or len(rest) < 2:
        return ""
    each = "; ".join(f"seed {int(r['seed'])} (`{bad[int(r['seed'])]['name']}`) scores {pct(r['test_accuracy'])}" for _, r in hit.iterrows())
    lo, hi = rest["test_accuracy"].min(), rest["test_accuracy"].max()
    one = len(hit) == 1
    return (f"On the test split, {each}, against {pct(lo)} to {pct(hi)} for the other seeds: early stopping ended "
            f"{'its' if one else 'their'} fine-tune{'' if one else 's'} below {'its' if one else 'their'} own head phase "
            f"({where}). Without {'it' if one else 'them'}, as a sensitivity check only: {mean_sd(rest['test_accuracy'])} "
            f"over {len(rest)} seeds.")


def test_paragraph(runs: Any, chosen: str, final: Any, ctx: RecordContext | None = None) -> str:
    """Section 4's paragraph: the chosen candidate on the test split, and whether the test subset disagrees.

    Args:
        runs: The per-run table (``test_accuracy`` on the leaderboard's small test subset).
        chosen: The candidate chosen on validation.
        final: ``final_test``'s table (one row per seed; ``test_accuracy``, ``test_macro_f1``, ``test_n``).
        ctx: Where the runs' records are.

    Returns:
        Markdown.
    """
    ctx = working_context(ctx)
    out = [f"Chosen on validation: **{chosen}**. On the test split ({int(final['test_n'].iloc[0]):,} images) it scores "
           f"**{mean_sd(final['test_accuracy'])}** accuracy (macro-F1 {final['test_macro_f1'].mean():.3f}, {len(final)} seed(s))."]
    odd = outlier_test_text(runs, chosen, final, ctx)
    if odd:
        out.append(odd)
    by_test = runs.groupby("candidate", sort=False)["test_accuracy"].mean()
    if by_test.notna().any():
        top = by_test.idxmax()
        n_sub = ctx.n_eval(list(runs["run"]), "test")
        sub = f"the leaderboard's test subset ({n_sub:,} images)" if n_sub else "the leaderboard's test subset"
        if top == chosen:
            out.append(f"On {sub} the same candidate is first.")
        else:
            out.append(f"On {sub} **{top}** is first; against the chosen candidate there: "
                       f"{versus(runs, 'candidate', top, chosen, 'test_accuracy', ctx)}. Picking it from those numbers "
                       "would have made a choice on test images, which chapter 4 shows is optimistic.")  # an output: no link (not rewritten for the book)
    return " ".join(out)


# --------------------------------------------------------------------------------------------
# Budgets and early-stopped runs, read from the runs' histories
# --------------------------------------------------------------------------------------------


def run_budget(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A pretrained run's two phases as its record tells them: epochs run against the cap, best epochs.

    Args:
        record: A run record with a ``head`` and a ``finetune`` phase.

    Returns:
        ``head_ran``, ``head_cap``, ``head_best`` (1-based epoch of the best validation accuracy),
        ``head_val`` (its last validation accuracy) and ``head_last5`` (validation accuracy at the start
        and end of its last five epochs); ``ran``, ``cap``, ``best``, ``patience``, ``watched`` (validation
        images the fine-tune scored after each epoch), ``watched_best``, ``dip_after_best`` (how far the
        watched accuracy fell below its best afterwards) and ``loss_still_falling`` (its watched
        validation loss lowest at its last epoch); ``final_val`` and ``n_val`` (the kept weights on
        the validation split). None for a record without both phases.
    """
    from ..sanity import monitored_images

    if not record:
        return None
    params = {p.get("name"): p for p in (record.get("params") or {}).get("phases") or []}
    hist = {h.get("name"): h.get("history") or {} for h in record.get("history") or []}
    hv, fv = (hist.get("head") or {}).get("val_accuracy") or [], (hist.get("finetune") or {}).get("val_accuracy") or []
    if not (hv and fv and "finetune" in params and "head" in params):
        return None
    fl = (hist.get("finetune") or {}).get("val_loss") or []
    first_best = lambda v: max(range(len(v)), key=v.__getitem__) + 1  # noqa: E731  (Keras keeps the first best)
    val = (record.get("metrics") or {}).get("val") or {}
    best = first_best(fv)
    return {
        "head_ran": len(hv), "head_cap": int(params["head"].get("epochs") or 0), "head_best": first_best(hv),
        "head_val": float(hv[-1]), "head_last5": (float(hv[-min(5, len(hv))]), float(hv[-1])),
        "ran": len(fv), "cap": int(params["finetune"].get("epochs") or 0), "best": best,
        "patience": params["finetune"].get("early_stopping"), "watched": monitored_images(record),
        "watched_best": float(fv[best - 1]), "dip_after_best": float(fv[best - 1] - min(fv[best:])) if best < len(fv) else 0.0,
        "loss_still_falling": bool(fl) and min(range(len(fl)), key=fl.__getitem__) == len(fl) - 1,
        "final_val": val.get("accuracy"), "n_val": val.get("n"),
    }  # fmt: skip


def stopped_below_head(runs: Any, ctx: RecordContext) -> list[dict[str, Any]]:
    """Pretrained runs whose fine-tune early stopping ended before its cap, on weights that score below
    the run's own head phase on the validation split: the fine-tune made them worse, so their number
    measures where early stopping fell, not the backbone.

    Args:
        runs: The per-run table (``candidate``, ``seed``, ``run``).
        ctx: Where the runs' records are.

    Returns:
        One entry per such run: :func:`run_budget`'s fields with ``candidate``, ``seed`` and ``name`` (its folder).
    """
    from pathlib import PurePath

    out = []
    if runs is None or "run" not in runs:
        return out
    for _, r in runs.iterrows():
        b = run_budget(ctx.record(r["run"]))
        if b and b["ran"] < b["cap"] and is_number(b["final_val"]) and b["final_val"] < b["head_val"]:
            out.append({**b, "candidate": r["candidate"], "seed": int(r["seed"]), "name": PurePath(str(r["run"])).name})
    return out


def dip_z(o: Mapping[str, Any]) -> float | None:
    """An early-stopped run's dip after its best epoch, in standard errors of a difference between two
    accuracies on the watched images (``sqrt(2 p (1 - p) / n)``): below 1.96 the dip is within their noise.

    Args:
        o: An entry of :func:`stopped_below_head`.

    Returns:
        The ratio, None without a watched-image count.
    """
    from ..stats import binomial_se

    w = o.get("watched")
    return o["dip_after_best"] / (math.sqrt(2) * binomial_se(o["watched_best"], w)) if w else None


def stopped_sentence(o: Mapping[str, Any]) -> str:
    """One early-stopped run in words: where early stopping ended it, on what, and what its kept weights score.

    Args:
        o: An entry of :func:`stopped_below_head`.

    Returns:
        The sentence (no trailing full stop).
    """
    w, z = o.get("watched"), dip_z(o)
    watched = f"the {w:,} watched validation images" if w else "the watched validation images"
    dip = (f"; the next epochs scored up to {100 * o['dip_after_best']:.1f} points lower there"
           + (f", {z:.1f} standard errors of a difference on so few images" if z is not None else "")
           if o["dip_after_best"] > 0 else "")
    falling = ", while the validation loss on them was still falling (lowest at its last epoch)" if o["loss_still_falling"] else ""
    return (f"`{o['name']}` ({o['candidate']}, seed {o['seed']}): early stopping"
            + (f" (patience {o['patience']} on {watched})" if o.get("patience") else f" (on {watched})")
            + f" ended its fine-tune after {o['ran']} of at most {o['cap']} epochs and kept epoch {o['best']}'s weights "
            f"({pct(o['watched_best'], 1)} on those images{dip}){falling}; on all {num(o['n_val'])} validation images those "
            f"weights score {pct(o['final_val'], 1)}, below the {pct(o['head_val'], 1)} its own head phase had reached "
            "before fine-tuning")


def sensitivity_text(runs: Any, a: Any, b: Any, col: str, stopped: Sequence[Mapping[str, Any]], ctx: RecordContext) -> str:
    """``a`` against ``b`` again without the seeds where either has a run of :func:`stopped_below_head`.

    A sensitivity check, labelled so: the chapter's comparison keeps every seed.

    Args:
        runs: The per-run table.
        a: The compared candidate.
        b: The reference candidate.
        col: The measured column.
        stopped: :func:`stopped_below_head`'s entries.
        ctx: Where the runs' records are.

    Returns:
        The clause, ``""`` when no shared seed is affected or fewer than two seeds would be left.
    """
    bad = {s["seed"] for s in stopped if s["candidate"] in (a, b)}
    shared = set(runs.loc[runs["candidate"] == a, "seed"]) & set(runs.loc[runs["candidate"] == b, "seed"])
    drop = sorted(bad & shared)
    keep = runs[~runs["seed"].isin(drop)]
    if not drop or len(shared - set(drop)) < 2:
        return ""
    seeds = ", ".join(map(str, drop))
    return (f"as a sensitivity check only, without seed{'s' if len(drop) > 1 else ''} {seeds}, **{a}** against **{b}**: "
            f"{versus(keep, 'candidate', a, b, col, ctx)}")


def budget_paragraph(runs: Any, ctx: RecordContext | None = None) -> str:
    """Section 2's budgets, read from the pretrained runs' histories: did the head phase and the
    fine-tune end on their caps or on a plateau, and which fine-tunes early stopping ended badly.

    Args:
        runs: ``compare_backbones``'s per-run table (``candidate``, ``seed``, ``run``).
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Markdown, ``""`` when no record has both phases.
    """
    ctx = working_context(ctx)
    rows = [(r["candidate"], int(r["seed"]), run_budget(ctx.record(r["run"]))) for _, r in runs.iterrows()] if "run" in runs else []
    rows = [(c, s, b) for c, s, b in rows if b]
    if not rows:
        return ""
    k = len(rows)
    caps = sorted({b["head_cap"] for _, _, b in rows})
    at_cap = sum(b["head_ran"] >= b["head_cap"] for _, _, b in rows)
    bests = sorted(b["head_best"] for _, _, b in rows)
    head = (f"all {k} pretrained runs used the whole {'/'.join(map(str, caps))} epochs" if at_cap == k
            else f"{at_cap} of {k} pretrained runs used the whole {'/'.join(map(str, caps))} epochs")
    head += f" (best validation accuracy at epoch {bests[0]}" + (f"–{bests[-1]}" if bests[-1] != bests[0] else "") + ")"
    gains = {}
    for c, s, b in rows:
        g = b["head_last5"][1] - b["head_last5"][0]
        if c not in gains or g > gains[c][0]:
            gains[c] = (g, s, b["head_last5"])
    top = max(gains, key=lambda c: gains[c][0])
    g, s, (v0, v1) = gains[top]
    rest = [c for c in gains if c != top]
    head += (f"; over the last five of them validation accuracy still rose by up to {100 * g:.1f} points for **{top}** "
             f"(seed {s}: {pct(v0, 1)} → {pct(v1, 1)})"
             + (f" and by at most {100 * max(gains[c][0] for c in rest):.1f} for the others" if rest else "")
             + ", so the fine-tune started from a head that had not levelled off everywhere")
    ft_caps = "/".join(map(str, sorted({b["cap"] for _, _, b in rows})))
    full = [b for _, _, b in rows if b["ran"] >= b["cap"]]
    early = [b for _, _, b in rows if b["ran"] < b["cap"]]
    tune = f"{len(full)} of {k} ran the whole {ft_caps}-epoch cap"
    if full:
        fb = sorted(b["best"] for b in full)
        tune += f" (best watched epoch {fb[0]}" + (f"–{fb[-1]}" if fb[-1] != fb[0] else "") + ")"
    if early:
        tune += f", early stopping ended {len(early)} sooner (after {', '.join(str(b['ran']) for b in early)} epochs)"
    text = f"**Training budgets, read from the runs' histories.** Head phase: {head}. Fine-tuning: {tune}."
    stopped = stopped_below_head(runs, ctx)
    if stopped:
        count = {1: "One", 2: "Two", 3: "Three"}.get(len(stopped), str(len(stopped)))
        text += (f" {count} of them ended on weights that score below their own head phase: "
                 + "; ".join(stopped_sentence(o) for o in stopped) + ".")
        zs = [dip_z(o) for o in stopped]
        if zs and all(z is not None and z < 1.96 for z in zs):
            text += (" Those dips are within the watched subset's noise: early stopping on a few hundred images ended these "
                     "fine-tunes on noise, so their numbers measure where it stopped rather than the backbone.")
        text += " The comparisons below keep every run, and say what these runs change."
    return text
