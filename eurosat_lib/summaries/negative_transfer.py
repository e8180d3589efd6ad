"""Chapter 2's summary (negative transfer): the gap per data size and per case, with verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .base import ChapterSummary
from .render import RecordContext, chapter_link, flag_note, is_broken, is_number, md_table, pct, setting_text


@dataclass(frozen=True)
class NegativeTransferSummary(ChapterSummary):
    """Chapter 2: transfer vs scratch error, paired by seed.

    Attributes:
        case_n: Labelled images per class of the cases.
        negative_cases: Cases whose gap's interval lies above zero (transfer hurt).
        positive_cases: Cases whose gap's interval lies below zero (transfer helped).
    """

    NOTEBOOK = "02_negative_transfer"

    case_n: int | None = None
    negative_cases: tuple[str, ...] | None = None
    positive_cases: tuple[str, ...] | None = None

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 2's section: the gap per data size and per case, each with its interval and verdict."""
        out = ["## Negative transfer (" + chapter_link(self.NOTEBOOK, "chapter 2") + ")", "",
               f"Gap = test error with transfer − test error from scratch (same network, images and budget, paired by seed); "
               f"a gap above zero is negative transfer. *Negative* / *positive transfer* only when the 95 % interval of the "
               f"gap excludes zero. Setting: {setting_text(self.parameters, with_n=False, ctx=ctx)}. Source: {source}.", ""]  # fmt: skip
        verdicts: dict[str, list[str]] = {"negative": [], "positive": [], "none": []}
        for name, runs_name, key, header in (("gap_vs_n", "gap_runs", "n_per_class", "labelled images per class"),
                                             ("cases", "case_runs", "case", "case")):  # fmt: skip
            t = self.frame(name)
            if t is None:
                continue
            rows = gap_rows(t, self.frame(runs_name), key, ctx)
            if name == "cases":
                out += [f"Cases built to make transfer hurt, at {self.case_n} images per class:", ""]
                for r in rows:
                    bucket = "none" if r["broken"] else {"better": "positive", "worse": "negative"}.get(r["verdict"], "none")
                    verdicts[bucket].append(str(r["k"]))
            out += [md_table(rows, [("k", header), ("t", "error, transfer"), ("s", "error, scratch"), ("gap", "gap (points, mean ± sd)"),
                                    ("ci", "95 % CI of the gap"), ("neg", "seeds with gap > 0"), ("v", "verdict")]), ""]  # fmt: skip
        if self.frame("cases") is not None:
            fmt = lambda cs: ", ".join(f"`{c}`" for c in cs) or "none"  # noqa: E731
            out += [f"Measured negative transfer: {fmt(verdicts['negative'])}; positive: {fmt(verdicts['positive'])}; "
                    f"no measurable difference: {fmt(verdicts['none'])}.", ""]
        return out


def gap_rows(t: Any, runs_table: Any, key: str, ctx: RecordContext) -> list[dict[str, Any]]:
    """Chapter 2's rows: transfer vs scratch error, the paired gap with its t interval, and a verdict.

    Args:
        t: One row per group (``gap_mean``, ``gap_sd``, ``seeds`` ...).
        runs_table: One row per run and seed (``err_transfer``, ``err_scratch``, ``run``, ``run_scratch``), or None.
        key: The grouping column.
        ctx: Where the runs' records are.

    Returns:
        Rows for :func:`~eurosat_lib.summaries.render.md_table`, with ``verdict`` and ``broken``.
    """
    from ..stats import diff_from_moments, paired_diff

    rows = []
    for _, r in t.iterrows():
        per = runs_table[runs_table[key] == r[key]] if runs_table is not None and key in runs_table else None
        if per is not None and len(per):
            # transfer accuracy - scratch accuracy = -(gap): "better" means transfer helped.
            n_eval = int(per["test_images"].min()) if "test_images" in per and is_number(per["test_images"].min()) else None
            d = paired_diff(1 - per["err_transfer"].to_numpy(float), 1 - per["err_scratch"].to_numpy(float), n_eval=n_eval)
            ft = ctx.warnings(list(per["run"])) if "run" in per else []
            fs = ctx.warnings(list(per["run_scratch"])) if "run_scratch" in per else []
        else:
            d = diff_from_moments(-float(r["gap_mean"]), float(r["gap_sd"]) if is_number(r["gap_sd"]) else math.nan, int(r["seeds"]))
            ft, fs = [], []
        gap_ci = (f"{-100 * d.high:+.1f} to {-100 * d.low:+.1f}" if is_number(d.low) and is_number(d.high) else "no interval (1 seed)")
        if is_broken(ft) or is_broken(fs):
            v = "not a finding (flagged run, ⚠)"
        else:
            v = {"better": "positive transfer", "worse": "**negative transfer**"}.get(d.verdict, "no measurable difference")
            if d.verdict != "no measurable difference":
                v = f"**{v}**" if not v.startswith("**") else v
            if d.verdict == "better" and any("not converged" in w for w in fs):
                v += " (scratch still improving: gap partly budget)"
        rows.append({"k": r[key], "t": pct(r["err_transfer"], 1) + flag_note(ft), "s": pct(r["err_scratch"], 1) + flag_note(fs),
                     "gap": f"{100 * r['gap_mean']:+.1f} ± {100 * r['gap_sd']:.1f}" if is_number(r["gap_sd"]) else f"{100 * r['gap_mean']:+.1f}",
                     "ci": gap_ci,
                     "neg": f"{int(r['seeds_negative'])}/{int(r['seeds'])}", "v": v, "verdict": d.verdict,
                     "broken": is_broken(ft) or is_broken(fs)})  # fmt: skip
    return rows


def summarize(P: Any, gap_vs_n: Any, cases: Any, gap_runs: Any, case_runs: Any) -> NegativeTransferSummary:
    """Chapter 2's summary from its two studies, per run and summarised per group.

    Args:
        P: The chapter's parameters (``case_n``).
        gap_vs_n: The gap per data size (``summarise_gaps`` over ``gap_runs``).
        cases: The gap per case, with a ``verdict`` column (``summarise_gaps`` over ``case_runs``).
        gap_runs: One row per data size and seed.
        case_runs: One row per case and seed.

    Returns:
        The typed summary: the cases sorted by their verdict, and the four tables.
    """
    verdict = cases["verdict"].astype(str)
    return NegativeTransferSummary.from_study(
        P, {"gap_vs_n": gap_vs_n, "cases": cases, "gap_runs": gap_runs, "case_runs": case_runs},
        case_n=int(P.case_n), negative_cases=tuple(cases.loc[verdict.str.startswith("negative"), "case"]),
        positive_cases=tuple(cases.loc[verdict.str.startswith("positive"), "case"]),
    )  # fmt: skip
