"""Chapter 2's summary (negative transfer): the gap per data size and per case, with verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..runs import HEADLINE_RUNS, epochs_run, headline_run_dir
from .base import ChapterSummary
from .render import RecordContext, chapter_link, flag_note, is_broken, is_number, md_table, pct, read_json, setting_text

#: The size label of chapter 3's crossover runs on the whole training split (``crossover.WHOLE_SPLIT``).
WHOLE_SPLIT = "all"
#: The headline run of the same network trained from scratch on a longer schedule
#: (``scripts/reference_runs.py``): what section 1's whole-split scratch arm is read against.
SCRATCH_REFERENCE = HEADLINE_RUNS["scratch_plateau"]
_REPO = Path(__file__).resolve().parents[2]


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


def shown_path(path: str | Path) -> str:
    """A run folder as the page names it: relative to the repository when it lies inside it.

    Args:
        path: The folder (absolute, or relative to the working directory).

    Returns:
        A POSIX path.
    """
    try:
        return Path(path).resolve().relative_to(_REPO).as_posix()
    except ValueError:
        return Path(path).as_posix()


def reference_scratch(out_dir: str | Path) -> dict[str, Any] | None:
    """The longer-trained from-scratch headline run beside this chapter's runs, read from its record.

    Section 1's scratch arm spends a fixed budget; this run of the same network (its own recipe,
    the whole training split, a longer schedule) shows what that budget leaves out.

    Args:
        out_dir: This chapter's run folder (``book/runs/<profile>/02_negative_transfer``); the
            headline runs are in its sibling ``reference``.

    Returns:
        ``run`` (its folder, relative to the repository), ``test_accuracy``, ``test_images``,
        ``train_images``, ``image_size``, ``epochs_run``, ``seed`` and ``warnings`` (``"; "``
        joined); None when the run is missing or unfinished.
    """
    folder = headline_run_dir(Path(out_dir).parent, "scratch_plateau")
    rec = read_json(folder / "record.json")
    if not rec or rec.get("status") != "complete" or "test" not in (rec.get("metrics") or {}):
        return None
    test = rec["metrics"]["test"]
    return {"run": shown_path(folder), "test_accuracy": float(test["accuracy"]), "test_images": int(test["n"]),
            "train_images": (rec.get("extra") or {}).get("train_size"), "image_size": rec["params"].get("image_size"),
            "epochs_run": epochs_run(rec) or 0, "seed": rec["params"].get("seed"),
            "warnings": "; ".join(rec.get("warnings") or [])}  # fmt: skip


def _flags(value: Any) -> list[str]:
    return [f for f in value.split("; ") if f] if isinstance(value, str) else []


def arm_flags(runs: Any, key: str, value: Any) -> tuple[list[list[str]], list[list[str]]]:
    """Each run's sanity flags in one group of a per-seed table, transfer arm and scratch arm apart.

    Args:
        runs: One row per seed pair (``flags_transfer`` / ``flags_scratch``; an older table has
            only ``flags``, both runs' flags joined, which then count as the transfer arm's).
        key: The grouping column.
        value: The group.

    Returns:
        ``(transfer, scratch)``: one list of flags per run, for :func:`~.render.flag_note`.
    """
    if runs is None or key not in runs:
        return [], []
    g = runs[runs[key] == value]
    if "flags_transfer" in g and "flags_scratch" in g:
        return [_flags(v) for v in g["flags_transfer"]], [_flags(v) for v in g["flags_scratch"]]
    return ([_flags(v) for v in g["flags"]] if "flags" in g else []), []


def still_improving_note(verdict: str, transfer: Sequence[Sequence[str]], scratch: Sequence[Sequence[str]]) -> str:
    """What a "not converged" run does to a gap's verdict (the chapter's sign: gap = transfer − scratch error).

    Args:
        verdict: ``"positive"``, ``"negative"`` or ``"inconclusive"`` (as :func:`why` reads it).
        transfer: The transfer arm's flags per run.
        scratch: The scratch arm's flags per run.

    Returns:
        A parenthesis to append, or ``""``.
    """
    still = lambda fl: any("not converged" in w for w in fl)  # noqa: E731
    if verdict.startswith("positive") and still(scratch) or verdict.startswith("negative") and still(transfer):
        return " (⚠ the arm behind was still improving when its training stopped: the gap is partly its budget)"
    if not verdict.startswith(("positive", "negative")) and (still(transfer) or still(scratch)):
        return " (⚠ an arm was still improving when its training stopped: more training could change this)"
    return ""


def whole_split_images(runs: Any) -> dict[float, Any]:
    """Data sizes of a per-seed table that are the whole training split: images per class -> training images.

    Args:
        runs: Section 1's per-seed table (``n_per_class``, ``size``; ``train_images`` when known).

    Returns:
        ``{n_per_class: train_images or None}``; empty for a table without ``size``.
    """
    if runs is None or "size" not in runs:
        return {}
    whole = runs[runs["size"].astype(str) == WHOLE_SPLIT]
    out: dict[float, Any] = {}
    for n, g in whole.groupby("n_per_class"):
        images = g["train_images"].dropna() if "train_images" in g else []
        out[float(n)] = int(images.iloc[0]) if len(images) else None
    return out


def size_text(n_per_class: float, whole: Mapping[float, Any] | None = None, short: bool = False) -> str:
    """A data size in words: ``"5 images per class"``, or the whole split with its real counts.

    The whole split is not balanced (its classes hold 1,200-1,800 images), so its "images per
    class" is a mean, said as one.

    Args:
        n_per_class: Images per class (a mean for the whole split).
        whole: :func:`whole_split_images`.
        short: The label of a list ("5", "whole split") instead of a phrase.

    Returns:
        The text.
    """
    if whole and float(n_per_class) in whole:
        if short:
            return "whole split"
        images = whole[float(n_per_class)]
        count = f"{images:,} images; " if images else ""
        return f"the whole split ({count}{n_per_class:,.0f} per class on average)"
    return f"{n_per_class:,.0f}" if short else f"{n_per_class:,.0f} images per class"


def _counts(values: Any, unit: str) -> str:
    """``"3 seeds"`` or ``"3-5 seeds"`` from a column of counts (``unit`` singular)."""
    v = sorted({int(x) for x in values if is_number(x)})
    if not v:
        return ""
    text = f"{v[0]:,}" if len(v) == 1 else f"{v[0]:,}–{v[-1]:,}"
    return f"{text} {unit}{'' if v == [1] else 's'}"


def scratch_budget_text(runs: Any) -> str:
    """Section 1's scratch budget at its largest size, and whether that arm was still rising when it ended.

    Read from the per-seed table's ``scratch_*`` columns (:func:`.experiments.negative_transfer.gap_vs_n_crossover`).

    Args:
        runs: Section 1's per-seed table.

    Returns:
        A sentence fragment, or ``""`` for a table without those columns.
    """
    if runs is None or "scratch_epochs" not in runs or not len(runs):
        return ""
    top = runs[runs["n_per_class"] == runs["n_per_class"].max()]
    epochs = _counts(top["scratch_epochs"], "epoch")
    steps = sorted({int(x) for x in top.get("scratch_steps", []) if is_number(x)})
    text = (f"the scratch arm trained {epochs}" + (f" ({steps[0]:,} optimiser steps)" if len(steps) == 1 else "")
            + f" at {size_text(float(top['n_per_class'].iloc[0]), whole_split_images(runs))}")
    rising = top[top["scratch_best_last"].fillna(False).astype(bool)] if "scratch_best_last" in top else top.iloc[0:0]
    if len(rising):
        steps_seen = ", ".join(f"{100 * a:.1f} → {100 * b:.1f} %" for a, b in zip(rising["scratch_val_before"], rising["scratch_val_last"]))
        text += (f", and in {len(rising)} of {len(top)} seeds its best validation accuracy came in its last epoch "
                 f"(last two epochs: {steps_seen})")
    return text


def reference_text(reference: Mapping[str, Any] | None, frozen_error: float | None) -> str:
    """The longer-trained scratch run against section 1's frozen arm on the whole split, in words.

    One unpaired run has no interval, so no verdict is stated: only what it means for the sign of
    the whole-split gap.

    Args:
        reference: :func:`reference_scratch`, or None.
        frozen_error: The frozen arm's mean test error on the whole split, or None.

    Returns:
        Sentences, or ``""`` without the run.
    """
    if not reference:
        return ""
    err = 1.0 - float(reference["test_accuracy"])
    seed = "1 seed" if reference.get("seed") is not None else "one run"
    text = (f"The same network from scratch trained {reference['epochs_run']} epochs on the whole split with a recipe of "
            f"its own (`{reference['run']}`, {seed}, {reference['image_size']} px) reached a test error of {100 * err:.1f} %"
            f"{flag_note([_flags(reference.get('warnings'))])} on {int(reference['test_images']):,} test images")
    if frozen_error is None or not is_number(frozen_error):
        return text + "."
    if err < frozen_error:
        return (text + f", below the frozen ImageNet arm's {100 * frozen_error:.1f} % on the whole split: a single run, "
                "not paired, so no verdict, but with more training the sign of the whole-split gap can flip.")
    return (text + f", not below the frozen ImageNet arm's {100 * frozen_error:.1f} % on the whole split (a single run, "
            "not paired, so no verdict): the longer schedule did not reverse the whole-split gap.")


def budget_paragraph(runs: Any, reference: Mapping[str, Any] | None, by_n: Any) -> str:
    """What section 1's verdicts are conditional on: the scratch budget, and the longer-trained scratch run.

    Args:
        runs: Section 1's per-seed table.
        reference: :func:`reference_scratch`, or None.
        by_n: Section 1's gaps per size (the whole split's frozen error).

    Returns:
        Sentences, or ``""`` when neither is known.
    """
    budget = scratch_budget_text(runs)
    whole = whole_split_images(runs)
    frozen = None
    if by_n is not None and len(by_n) and whole:
        last = by_n[by_n["n_per_class"].astype(float).isin(list(whole))]
        frozen = float(last["err_transfer"].iloc[0]) if len(last) else None
    parts = []
    if budget:
        parts.append(f"These verdicts hold for the budgets the arms had: {budget}.")
    ref = reference_text(reference, frozen)
    if ref:
        parts.append(ref)
    return " ".join(parts)


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
        ``summary.json`` give the same text. Each line names its own seeds and test images: the
        three sections score different test sets with different seeds.

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        P = self.parameters
        by_n, by_case, case_runs = self.numeric_frame("gap_vs_n"), self.numeric_frame("cases"), self.numeric_frame("case_runs")
        gap_runs = self.numeric_frame("gap_runs")
        verdict = by_case["verdict"].astype(str)
        negative = by_case[verdict.str.startswith("negative")]
        positive = by_case[verdict.str.startswith("positive")]
        unclear = by_case[verdict == "inconclusive"]
        flagged = by_case[verdict.str.startswith("not a finding")]
        lo, hi = by_n.iloc[0], by_n.iloc[-1]
        whole = whole_split_images(gap_runs)

        def names(df: Any) -> str:
            def one(r: Any) -> str:
                lo, hi = r.get("gap_low"), r.get("gap_high")
                ci = f", 95 % CI {100 * lo:+.1f} to {100 * hi:+.1f}" if is_number(lo) and is_number(hi) else ", one seed: no interval"
                ft, fs = arm_flags(case_runs, "case", r["case"])
                note = (f"; transfer{flag_note(ft)}" if flag_note(ft) else "") + (f"; scratch{flag_note(fs)}" if flag_note(fs) else "")
                still = still_improving_note(str(r["verdict"]), ft, fs).strip()[1:-1]  # inside this parenthesis
                return f"`{r['case']}` ({100 * r['gap_mean']:+.1f} points{ci}{note}" + (f": {still.removeprefix('⚠ ').replace(': more training', ', so more training')}" if still else "") + ")"

            return ", ".join(one(r) for _, r in df.iterrows()) or "none"

        def scored(seeds: Any, runs: Any) -> str:
            images = _counts(runs["test_images"], "test image") if runs is not None and "test_images" in runs else ""
            return "; ".join(x for x in (_counts(seeds, "seed"), images) if x)

        who = f"{P['backbone']}" + (f" α={P['alpha']}" if P.get("alpha") else "")
        sizes = ", ".join(f"{size_text(n, whole, short=True)}: {v}" for n, v in zip(by_n.n_per_class, by_n.verdict))
        budget = budget_paragraph(gap_runs, self.reference, by_n)
        text = f'''
*Numbers from this run ({self.profile} profile, {who}, {P["image_size"]} px); each line names its own seeds and test images.*

- **Data size** (frozen ImageNet base + head against the same network from scratch, each with its own
  recipe and budget; {scored(by_n.seeds, gap_runs)}): gap {100 * lo.gap_mean:+.1f} points of test error at {size_text(lo.n_per_class, whole)} and
  {100 * hi.gap_mean:+.1f} at {size_text(hi.n_per_class, whole)} (verdict per size: {sizes}).{" " + budget if budget else ""}
- **Cases (section 2)**, each against a scratch arm trained on the same images with the cases' own, shorter budget
  ({scored(by_case.seeds, case_runs)}):
  - **Negative transfer (95 % interval of the gap above zero) at {P["case_n"]} images per class:** {names(negative)}.
  - **Positive transfer:** {names(positive)}.
  - **Inconclusive (the 95 % interval includes zero):** {names(unclear)}.
''' + (f"  - **Not findings (a chance-level or diverged run):** {names(flagged)}.\n" if len(flagged) else "") + ("\nWhy the negative cases hurt, in this run's terms:\n" + "\n".join(f"- `{c}`: {why(c, 'negative')}." for c in negative.case)
       if len(negative) else "\nNo case turned negative in this run; the gaps above say how close each came.")
        if self.similarity_answer is not None:  # a chapter without section 3 keeps its text unchanged
            text += "\n\n- **Similarity (section 3):** " + self.similarity_answer + self._similarity_scored()
        return text

    @property
    def reference(self) -> dict[str, Any] | None:
        """The longer-trained scratch run (:func:`reference_scratch`) the summary was built with, or None."""
        rows = self.tables.get("reference_scratch")
        return dict(rows[0]) if rows else None

    def _similarity_scored(self) -> str:
        """Seeds and test images behind section 3's answer (frozen arm), when its tables say so."""
        diffs, runs = self.numeric_frame("similarity_differences"), self.numeric_frame("similarity_runs")
        if diffs is None or "seeds" not in diffs or "baseline" not in diffs:
            return ""
        frozen = diffs[diffs["arm"] == "frozen"]
        per = [f"{_counts(frozen.loc[frozen['baseline'] == b, 'seeds'], 'seed')} against {w}"
               for b, w in (("imagenet", "ImageNet"), ("random", "training from scratch")) if (frozen["baseline"] == b).any()]
        images = _counts(runs["test_images"], "test image") if runs is not None and "test_images" in runs else ""
        return f" *(Frozen arm: {', '.join(per)}" + (f"; {images} of the target task" if images else "") + ".)*" if per else ""

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
            whole = whole_split_images(self.numeric_frame(runs_name)) if key == "n_per_class" else {}
            for r in rows:  # the whole split is unbalanced: its images per class are a mean, not a size
                if whole and float(r["k"]) in whole:
                    r["k"] = f"whole split ({whole[float(r['k'])]:,} images)" if whole[float(r["k"])] else "whole split"
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
        The typed summary: the cases sorted by their verdict, and the four tables (six with the similarity study's),
        plus ``reference_scratch`` (:func:`reference_scratch`) when that run is beside ``P.out_dir``.
    """
    verdict = cases["verdict"].astype(str)
    tables = {"gap_vs_n": gap_vs_n, "cases": cases, "gap_runs": gap_runs, "case_runs": case_runs}
    for name, table in (("similarity_differences", similarity_differences), ("similarity_runs", similarity_runs)):
        if table is not None:
            tables[name] = table
    reference = reference_scratch(P.out_dir) if getattr(P, "out_dir", None) else None
    if reference is not None:  # section 1's whole-split gap is read against it (a table: no number of its own)
        import pandas as pd

        tables["reference_scratch"] = pd.DataFrame([reference])  # stored as every table is (same JSON precision)
    return NegativeTransferSummary.from_study(
        P, tables, similarity_answer=similarity_answer,
        case_n=int(P.case_n), negative_cases=tuple(cases.loc[verdict.str.startswith("negative"), "case"]),
        positive_cases=tuple(cases.loc[verdict.str.startswith("positive"), "case"]),
    )  # fmt: skip
