"""Chapter 5's summary (choosing a backbone): the leaderboard, the choice and its runner-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

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
    num,
    paired_values,
    pct,
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

    def notebook_markdown(self) -> str:
        """The chapter's own Summary cell: the choice, its cost, the runner-up and pretrained vs scratch.

        Read from the summary's fields, parameters and tables (the leaderboard in its order, best first),
        so the executed chapter and a summary loaded from its ``summary.json`` give the same text.

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        from ..data import CLASS_NAMES

        nan = float("nan")
        board = self.numeric_frame("leaderboard").set_index("candidate")
        runs = self.numeric_frame("runs")
        chosen = self.chosen
        pre = board[board["init"] == "ImageNet"]
        scr = board[board["init"] == "from scratch"]
        n_train = int(self.parameters.get("n_per_class") or 0) * len(CLASS_NAMES) or "all"
        return f'''
*Numbers from this run ({self.profile} profile, {len(board)} candidates, {len(runs)} runs,
{n_train} training images, recipe of chapter 3).*

- **Choice (by validation):** {chosen} — {board.loc[chosen, 'val_accuracy']:.2%} validation,
  **{self.chosen_test_accuracy:.2%}** on the test split ({self.test_n:,} images).
- **Cost of the choice:** {board.loc[chosen, 'params_M']:.2f} M parameters, {board.loc[chosen, 'images_per_s']:.0f} images/s
  at inference, {board.loc[chosen, 'fit_seconds']:.0f} s to train here.
- **Runner-up:** {board.index[1] if len(board) > 1 else "none"}
  ({board['val_accuracy'].iloc[1] if len(board) > 1 else nan:.2%} validation).
- **Pretrained vs from scratch:** {pre['val_accuracy'].mean() if len(pre) else nan:.2%} vs
  {scr['val_accuracy'].mean() if len(scr) else nan:.2%} mean validation accuracy.
'''


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
