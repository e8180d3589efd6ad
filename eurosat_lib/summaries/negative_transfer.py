"""Chapter 2's summary (negative transfer): the gap per data size and per case, with verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .base import ChapterSummary
from .render import RecordContext, chapter_link, flag_note, is_broken, is_number, md_table, pct, setting_text


#: Why each case came out as it did, one explanation per measured outcome (case -> verdict ->
#: mechanism). :func:`why` picks the one matching the verdict; an inconclusive case gets none,
#: because there is no measured effect to explain.
WHY: dict[str, dict[str, str]] = {
    "imagenet_frozen": {
        "positive": "ImageNet features are generic enough for satellite patches, and the few labels only have to fit a linear head",
        "negative": "the frozen ImageNet features do not separate these land-cover classes well enough for a linear head, while the scratch network adapts every layer to them",
    },
    "imagenet_gentle": {
        "positive": "the head is trained first, so fine-tuning starts from sensible gradients, and the low learning rate adapts the pretrained features instead of overwriting them",
        "negative": "even a gentle fine-tune moved the pretrained features further than the few labels can support, ending below a network trained for this data from the start",
    },
    "raw_pixels": {
        "negative": "the frozen base expects inputs in [-1, 1]; raw 0-255 values are ~128x larger, so with frozen BatchNorm statistics the activations saturate the ReLU6 units and much of the image information is clipped away",
        "positive": "raw 0-255 inputs saturate many activations of the frozen base, but enough image structure survives for a head on its features to beat a network trained from scratch on so few images",
    },
    "tiny_input": {
        "negative": "shrunk to the tiny input size, the image leaves the base's last feature map one or a few cells wide (MobileNetV2 divides the input by 32) and the fine texture that separates land-cover classes is gone; the pretrained filters see a scale they were not trained on",
        "positive": "even shrunk to the tiny input size, where the base's last feature map is one or a few cells wide, the pretrained filters keep enough colour and coarse texture to beat scratch training on so few labels",
    },
    "tiny_raw_pixels": {
        "negative": "both mismatches at once: saturated activations on top of an input too small for the pretrained filters",
        "positive": "even with both mismatches (saturated activations, an input too small for the filters) the frozen features still gave a head more to work with than scratch training on so few labels",
    },
    "shuffled_source_frozen": {
        "negative": "the source labels had nothing to do with the images, so the pretrained features encode no land-cover information (at best memorised noise), and freezing them stops the target labels from repairing them",
        "positive": "even features learned from shuffled labels (generic filters fitted to these very images) were more useful to a linear head than a random start at this data size",
    },
    "shuffled_source_finetuned": {
        "negative": "retraining every layer did not undo a start that had memorised noise: it began from weights worse than a random initialisation",
        "positive": "retraining every layer let the target labels repair the features, and pretraining on the same kind of images still gave a better start than random weights",
    },
    "imagenet_aggressive": {
        "negative": "a high learning rate on every layer, with a random head sending large gradients into the base and BatchNorm statistics re-estimated from small batches, overwrites the pretrained features in the first steps and leaves a badly initialised network",
        "positive": "despite the high learning rate on every layer (BatchNorm re-estimated from small batches), the pretrained start kept an advantage over random weights: the first steps damaged the features without erasing them",
    },
}


def why(case: str, verdict: str) -> str | None:
    """The explanation of ``case`` that matches its measured ``verdict`` (None when inconclusive or unknown).

    Args:
        case: The case's name.
        verdict: Its measured verdict.

    Returns:
        The explanation, or None.
    """
    key = "negative" if verdict.startswith("negative") else "positive" if verdict.startswith("positive") else None
    return WHY.get(case, {}).get(key) if key else None

@dataclass(frozen=True)
class NegativeTransferSummary(ChapterSummary):
    """Chapter 2: transfer vs scratch error, paired by seed.

    Attributes:
        case_n: Labelled images per class of the cases.
        negative_cases: Cases whose gap's interval lies above zero (transfer hurt).
        positive_cases: Cases whose gap's interval lies below zero (transfer helped).
        similarity_answer: Section 3's answer to "does similarity decide?" for the frozen arm, the words its
            measured verdicts choose (``similarity.answer``); None when the chapter has no similarity study.
    """

    NOTEBOOK = "02_negative_transfer"

    case_n: int | None = None
    negative_cases: tuple[str, ...] | None = None
    positive_cases: tuple[str, ...] | None = None
    similarity_answer: str | None = None


    def notebook_markdown(self) -> str:
        """The chapter's own Summary cell: the gap by data size, the cases by verdict, why the negative ones hurt.

        Read from the summary's parameters and tables (the verdicts from the ``cases`` table, as
        :func:`summarize` sorts them), so the executed chapter and a summary loaded from its
        ``summary.json`` give the same text.

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        P = self.parameters
        by_n, by_case, case_runs = self.numeric_frame("gap_vs_n"), self.numeric_frame("cases"), self.numeric_frame("case_runs")
        verdict = by_case["verdict"].astype(str)
        negative = by_case[verdict.str.startswith("negative")]
        positive = by_case[verdict.str.startswith("positive")]
        unclear = by_case[verdict == "inconclusive"]
        flagged = by_case[verdict.str.startswith("not a finding")]
        lo, hi = by_n.iloc[0], by_n.iloc[-1]

        def names(df: Any) -> str:
            def one(r: Any) -> str:
                lo, hi = r.get("gap_low"), r.get("gap_high")
                ci = f", 95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}" if is_number(lo) and is_number(hi) else ", one seed: no interval"
                return f"`{r['case']}` ({100 * r['gap_mean']:+.1f} points{ci})"

            return ", ".join(one(r) for _, r in df.iterrows()) or "none"

        who = f"{P['backbone']}" + (f" α={P['alpha']}" if P.get("alpha") else "")
        sizes = ", ".join(f"{int(n):,}: {v}" for n, v in zip(by_n.n_per_class, by_n.verdict))
        text = f'''
*Numbers from this run ({self.profile} profile, {who}, {P["image_size"]} px, {len(P["seeds"])} seed(s),
test error on {int(case_runs.test_images.iloc[0]):,} test images).*

- **Data size** (frozen ImageNet base + head against the same network from scratch, each with its own
  recipe and budget): gap {100 * lo.gap_mean:+.1f} points of test error at {int(lo.n_per_class):,} images per class and
  {100 * hi.gap_mean:+.1f} at {int(hi.n_per_class):,} (verdict per size: {sizes}).
- **Negative transfer (95 % interval of the gap above zero) at {P["case_n"]} images per class:** {names(negative)}.
- **Positive transfer:** {names(positive)}.
- **Inconclusive (the 95 % interval includes zero):** {names(unclear)}.
''' + (f"- **Not findings (a chance-level or diverged run):** {names(flagged)}.\n" if len(flagged) else "") + ("\nWhy the negative cases hurt, in this run's terms:\n" + "\n".join(f"- `{c}`: {why(c, 'negative')}." for c in negative.case)
       if len(negative) else "\nNo case turned negative in this run; the gaps above say how close each came.")
        if self.similarity_answer is not None:  # a chapter without section 3 keeps its text unchanged
            text += "\n\n- **Similarity (section 3):** " + self.similarity_answer
        return text

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 2's section: the gap per data size and per case, each with its interval and verdict."""
        out = ["## Negative transfer (" + chapter_link(self.NOTEBOOK, "chapter 2") + ")", "",
               f"Gap = test error with transfer − test error from scratch (same network and images, paired by seed; by data "
               f"size, each arm with its own recipe and budget (chapter 3's crossover runs), and for the cases, the scratch "
               f"arm's budget); "
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


def summarize(P: Any, gap_vs_n: Any, cases: Any, gap_runs: Any, case_runs: Any, similarity_answer: str | None = None,
              similarity_differences: Any = None, similarity_runs: Any = None) -> NegativeTransferSummary:  # fmt: skip
    """Chapter 2's summary from its two studies, per run and summarised per group.

    Args:
        P: The chapter's parameters (``case_n``).
        gap_vs_n: The gap per data size (``summarise_gaps`` over ``gap_runs``).
        cases: The gap per case, with a ``verdict`` column (``summarise_gaps`` over ``case_runs``).
        gap_runs: One row per data size and seed.
        case_runs: One row per case and seed.
        similarity_answer: Section 3's answer for the frozen arm (``similarity.answer(diffs, "frozen")``), if
            the chapter has the similarity study.
        similarity_differences: The study's ``similarity.differences`` table, if any.
        similarity_runs: The study's run table (``similarity.run_study(...).table``), if any.

    Returns:
        The typed summary: the cases sorted by their verdict, and the four tables (six with the similarity study's).
    """
    verdict = cases["verdict"].astype(str)
    tables = {"gap_vs_n": gap_vs_n, "cases": cases, "gap_runs": gap_runs, "case_runs": case_runs}
    for name, table in (("similarity_differences", similarity_differences), ("similarity_runs", similarity_runs)):
        if table is not None:
            tables[name] = table
    return NegativeTransferSummary.from_study(
        P, tables, similarity_answer=similarity_answer,
        case_n=int(P.case_n), negative_cases=tuple(cases.loc[verdict.str.startswith("negative"), "case"]),
        positive_cases=tuple(cases.loc[verdict.str.startswith("positive"), "case"]),
    )  # fmt: skip
