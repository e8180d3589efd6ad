"""Chapter 5's summary (choosing a backbone): the leaderboard, the choice and its runner-up."""

from __future__ import annotations

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

        out = ["## Choosing a backbone (" + chapter_link(self.NOTEBOOK, "chapter 5") + ")", "",
               f"Ranked by validation accuracy; *init* says whether ImageNet weights were available here or the candidate "
               f"was trained from scratch. A flagged candidate (⚠) is shown but never chosen or compared. Source: {source}.", ""]  # fmt: skip
        board = self.frame("leaderboard")
        runs = self.frame("runs")
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
            text = (f"Chosen on validation: **{self.chosen}**, {pct(self.chosen_test_accuracy)} on {num(self.test_n)} "
                    "test images.")
            if board is not None and runs is not None and len(board) > 1:
                ok = [c for c in board["candidate"] if c != self.chosen and not is_broken(flags_of.get(c, []))]
                if ok:
                    runner = ok[0]
                    xa, xb, ra, rb = paired_values(runs, "candidate", self.chosen, runner, "val_accuracy")
                    if xa:
                        d = paired_diff(xa, xb, n_eval=ctx.n_eval(ra + rb, "val"))
                        text += (f" Against the runner-up **{runner}** on validation: "
                                 f"{compare_text(d, ctx.warnings(ra), ctx.warnings(rb))}.")
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
                 f"validation, **{self.chosen_test_accuracy:.2%}** on the test split ({self.test_n:,} images).",
                 f"- **Cost of the choice:** {', '.join(cost) or 'not measured in this run'}."]  # fmt: skip
        if len(board) > 1:
            runner = board.index[1]
            lines.append(f"- **Runner-up:** {runner}, against the choice on validation "
                         f"{versus(runs, 'candidate', runner, chosen, 'val_accuracy', ctx)}.")
        vs = scratch_vs_pretrained(board, runs, ctx)
        if vs:
            lines.append(f"- **Pretrained vs from scratch:** the best from scratch ({vs[0]}) against the best pretrained "
                         f"({vs[1]}) on validation {vs[2]}.")
        return "\n".join(lines) + "\n"




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
    return scr[0], pre[0], versus(runs, "candidate", scr[0], pre[0], "val_accuracy", ctx)


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
