"""Prose that cannot drift from its numbers.

A checker reads the text the book shows — ``book/results.md`` and the *generated* text of the
executed chapters (their code cells' Markdown/text outputs) — and reports every sentence that
contradicts its own numbers:

* **comparison** — a sentence that calls a numeric difference *better*, *worse*, *clearly* (or a
  bold **negative**/**positive** verdict) without a 95 % interval, or whose interval includes zero;
* **pixel size** — a stated input size at which none of the section's / chapter's runs trained,
  or a ``Setting:`` line naming one size while the chapter's runs used several;
* **levelled off** — "levelled off" in a sentence that itself reports runs whose best epoch was
  the last one, or about a chapter whose from-scratch runs peaked at their last epoch.

The checker is unit-tested on crafted text (so it can fail), then run on the committed pages.
Sentences of executed chapters that were generated before the generating code was fixed are
listed in :data:`AWAITING_RE_EXECUTION`: the test fails if a *new* contradiction appears, and also
if a listed one has gone (re-executed), so the list only ever shrinks.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from conftest import REPO

BOOK = REPO / "book"

# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------

_NUM = r"[+\-−]?\d+(?:\.\d+)?"
COMPARISON_WORD = re.compile(r"\b(better|worse|clearly)\b|\*\*(negative|positive)(?: transfer)?\*\*", re.I)
NO_DIFFERENCE = re.compile(r"no measurable difference", re.I)
SIGNED_DIFF = re.compile(r"[+\-−]\d+(?:\.\d+)?(?:\s*±\s*\d+(?:\.\d+)?)?\s*(?:points|pp|percentage points)\b")
CI = re.compile(rf"(?:95\s*%\s*CI\s*)?({_NUM})\s*(?:to|…)\s*({_NUM})(?!\s*(?:images|px|epochs|runs|seeds|per))")
BARE_SIGNED_RANGE = re.compile(r"([+\-−]\d+(?:\.\d+)?)\s+to\s+([+\-−]\d+(?:\.\d+)?)")
LABELLED_CI = re.compile(rf"95\s*%\s*CI\s*({_NUM})\s*to\s*({_NUM})")
PX = re.compile(r"\b(\d{2,4})\s?px\b")
LEVELLED = re.compile(r"levell?ed off|plateau(?:ed)?\b", re.I)
#: A verdict defined by standard deviations ("counts as negative when ... more than one standard
#: deviation"): the book's verdicts come from the 95 % interval (eurosat_lib.stats), so such a rule
#: describes a test the numbers beside it did not pass through.
SD_RULE = re.compile(r"\b(?:counts? as|is called|called)\b.{0,160}?\b(?:one|1|two|2)\s+standard\s+deviations?\b", re.I)
SHARE_LAST = re.compile(r"best validation epoch was the last one in ([\d.]+)\s*%(?: and ([\d.]+)\s*%)?")


def _f(x: str) -> float:
    return float(x.replace("−", "-"))


def sentences(text: str) -> list[str]:
    """Lines, then sentences within a line (table rows stay whole: their cells belong together)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("|"):
            out.append(line)
        else:
            out += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z*(])", line) if s.strip()]
    return out


def comparison_problems(text: str) -> list[tuple[str, str]]:
    """(sentence, why) for each comparison word that its own interval does not support."""
    bad = []
    for s in sentences(text):
        if SD_RULE.search(s):
            bad.append((s, "a verdict rule in standard deviations: the book's verdicts use the 95 % interval"))
            continue
        words = COMPARISON_WORD.search(s)
        if not words or NO_DIFFERENCE.search(s) and not re.search(r"\*\*(better|worse)\*\*", s):
            continue
        ci = LABELLED_CI.findall(s) or BARE_SIGNED_RANGE.findall(s)
        table_verdict = s.startswith("|") and re.search(r"\*\*(better|worse|negative|positive)", s, re.I)
        if not ci and not SIGNED_DIFF.search(s) and not table_verdict:
            continue  # a word without a number ("transfer better {cite}") states no measured comparison
        if not ci:
            bad.append((s, "comparison word without a 95 % interval"))
            continue
        for lo, hi in ci:
            lo, hi = _f(lo), _f(hi)
            if lo <= 0 <= hi and not NO_DIFFERENCE.search(s):
                bad.append((s, f"comparison word but the interval {lo:+g} to {hi:+g} includes zero"))
                break
    return bad


def pixel_problems(text: str, sizes: set[int], setting_sizes: set[int] | None = None) -> list[tuple[str, str]]:
    """Stated sizes no run used; a ``Setting:`` line with one size when the runs used several."""
    bad = []
    for s in sentences(text):
        stated = {int(x) for x in PX.findall(s)}
        odd = sorted(stated - sizes)
        if odd and sizes:
            bad.append((s, f"states {odd} px but the runs used {sorted(sizes)} px"))
        elif s.startswith("Setting:") and len(stated) == 1 and len(setting_sizes or sizes) > 1:
            bad.append((s, f"names one input size {sorted(stated)} for runs at {sorted(setting_sizes or sizes)} px"))
    return bad


def levelled_problems(text: str, scratch_best_last: int = 0) -> list[tuple[str, str]]:
    """'levelled off' next to runs whose best epoch was the last (stated in the sentence or counted from records)."""
    bad = []
    for s in sentences(text):
        s = re.sub(r"`[^`]*`", "", s)  # a run folder's name (e.g. `..._scratch_plateau/record.json`) is not prose
        if not LEVELLED.search(s) or re.search(r"\bnot\b[^.]*levell?ed off|still (?:improving|rising)", s, re.I):
            continue
        share = SHARE_LAST.search(s)
        if share and any(_f(x) > 0 for x in share.groups() if x):
            bad.append((s, "says levelled off while it reports runs whose best epoch was the last one"))
        elif scratch_best_last and re.search(r"scratch", s, re.I):
            bad.append((s, f"says levelled off but {scratch_best_last} from-scratch run(s) peaked at their last epoch"))
    return bad


# --------------------------------------------------------------------------------------------
# Reading the book
# --------------------------------------------------------------------------------------------


def _records(chapter_dir: Path, recursive: bool = True) -> list[dict]:
    out = []
    # Every run of the chapter, studies in sub-folders included (chapter 3's crossover runs at 64 px).
    for p in sorted(chapter_dir.rglob("record.json") if recursive else chapter_dir.glob("*/record.json")):
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            pass
    return out


def _size(rec: dict) -> int | None:
    s = (rec.get("params") or {}).get("image_size") or (rec.get("model_info") or {}).get("image_size")
    return int(s) if s else None


def run_sizes(chapter_dir: Path, recursive: bool = True) -> set[int]:
    return {s for s in map(_size, _records(chapter_dir, recursive)) if s}


def best_is_last(rec: dict) -> bool:
    """The validation accuracy of the run's last epoch is its best (over all phases)."""
    val = [v for ph in rec.get("history") or [] for v in (ph.get("history") or {}).get("val_accuracy") or []]
    return len(val) >= 2 and all(map(math.isfinite, val)) and val[-1] >= max(val)


def scratch_best_last(chapter_dir: Path) -> int:
    return sum(1 for r in _records(chapter_dir) if (r.get("params") or {}).get("weights") is None and best_is_last(r))


def generated_text(notebook: Path) -> str:
    """The Markdown/plain text a chapter's code cells produced (what the reader sees as prose)."""
    nb = json.loads(notebook.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/markdown" in data:
                parts.append("".join(data["text/markdown"]))
    return "\n".join(parts)


def chapter_problems(notebook: Path) -> list[tuple[str, str]]:
    runs = BOOK / "runs" / "cpu" / notebook.stem
    text = generated_text(notebook)
    sizes = run_sizes(runs)
    return comparison_problems(text) + pixel_problems(text, sizes) + levelled_problems(text, scratch_best_last(runs))


def results_problems(page: str) -> list[tuple[str, str]]:
    """Each section of results.md checked against the runs of the chapter (or headline) it cites."""
    bad = []
    for section in re.split(r"\n(?=## )", page):
        cited = re.findall(r"`book/runs/cpu/([^/`]+)/", section)
        dirs = {BOOK / "runs" / "cpu" / c for c in cited}
        # A results section quotes its chapter's own runs, not the studies in its sub-folders (chapter
        # 3's section states the 128 px sweeps; its 64 px crossover study is not on the results page).
        sizes = set().union(*(run_sizes(d, recursive=False) for d in dirs)) if dirs else set()
        bad += comparison_problems(section)
        bad += pixel_problems(section, sizes) if sizes else []
        bad += levelled_problems(section, sum(scratch_best_last(d) for d in dirs))
    return bad


# --------------------------------------------------------------------------------------------
# The checker can fail: crafted text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "- **early stopping**: 77.9% test accuracy, clearly -0.5 points vs no regularisation",
        "Fine-tuning is better: +1.7 points (95 % CI -3.6 to +7.0, 300 images).",
        "| all blocks | 84.8 % | -3.3 points (95 % CI -19.8 to +13.2, 2 seeds): **worse** |",
        "gap +8.8 ± 5.6 points → **negative** (3 of 3 seeds with gap > 0)",
        "| tiny_raw_pixels | 63.8 % | 55.0 % | +8.8 ± 5.6 | -5.2 to +22.8 | 3/3 | **negative transfer** |",
        "| 5 | 35.2 % | 87.5 % | -52.3 ± 5.1 | 0/3 | **positive** |",  # the old page: one sd, no interval
        # chapter 2's overview until this check existed, beside verdicts taken from the interval
        "A case counts as **negative** when the mean gap is above zero by more than one standard deviation, "
        "**positive** when it is below zero by more than one, and **inconclusive** otherwise.",
    ],
)
def test_checker_flags_unsupported_comparisons(text):
    assert comparison_problems(text), text


@pytest.mark.parametrize(
    "text",
    [
        "-17.8 points (95 % CI -19.0 to -16.6, 5,400 images, unpaired): **worse**",
        "+2.2 points (95 % CI -0.4 to +4.6, 3 seeds): **no measurable difference**",
        "| shuffled | 73.9 % | 55.0 % | +18.9 ± 3.4 | +10.5 to +27.3 | 3/3 | **negative transfer** |",
        "Bigger ImageNet models tend to transfer better {cite}`kornblith2019better`.",
        "The test split of 5,400 images is scored once.",
    ],
)
def test_checker_accepts_supported_or_non_comparisons(text):
    assert comparison_problems(text) == []


def test_checker_pixel_sizes():
    old = "Setting: MobileNetV2 α = 0.35, 128 px, 100 training images per class, 2 seed(s)."
    assert pixel_problems(old, {64, 128, 224})  # one size named for runs at three
    assert pixel_problems("The comparison ran at 128 px.", {64})
    assert pixel_problems("Setting: MobileNetV2, 128 px, 2 seed(s).", {128}) == []
    assert pixel_problems("Setting: MobileNetV2, 64 px (32 px in 6 of 37 runs).", {32, 64}) == []


def test_checker_levelled_off():
    s = ("For the from-scratch models the best validation epoch was the last one in 50% and 0% of runs: "
         "they had levelled off within the budget.")  # fmt: skip
    assert levelled_problems(s)
    assert levelled_problems("The from-scratch runs had levelled off.", scratch_best_last=1)
    assert levelled_problems("The from-scratch runs had levelled off.", scratch_best_last=0) == []
    ok = "For the from-scratch models the best validation epoch was the last one in 0% and 0% of runs: they had levelled off."
    assert levelled_problems(ok) == []
    assert levelled_problems("They were still improving, so they had not levelled off.", scratch_best_last=2) == []
    # a record's path is not prose; the same words outside backticks still count
    assert levelled_problems("From scratch: 95 % (`runs/x_scratch_plateau/record.json`).", scratch_best_last=2) == []
    assert levelled_problems("From scratch to a plateau: 95 %.", scratch_best_last=2)


def test_best_is_last():
    rec = {"history": [{"history": {"val_accuracy": [0.5, 0.7]}}, {"history": {"val_accuracy": [0.72, 0.75]}}]}
    assert best_is_last(rec)
    rec["history"][1]["history"]["val_accuracy"] = [0.75, 0.74]
    assert not best_is_last(rec)


# --------------------------------------------------------------------------------------------
# The committed book
# --------------------------------------------------------------------------------------------


def test_results_page_does_not_contradict_its_numbers():
    problems = results_problems((BOOK / "results.md").read_text())
    assert not problems, "\n".join(f"{why}: {s}" for s, why in problems)


def test_recipes_page_does_not_contradict_its_numbers():
    """The recipe study's page: every verdict word beside an interval that supports it. (Its pixel sizes
    include planned configurations and the published anchor's 224 px, so they are not checked against runs.)"""
    page = (BOOK / "recipes.md").read_text()
    problems = comparison_problems(page) + levelled_problems(page, scratch_best_last(BOOK / "runs" / "cpu" / "recipe_study"))
    assert not problems, "\n".join(f"{why}: {s}" for s, why in problems)


#: Contradictions in executed chapters whose generating code is fixed but which still show the
#: old text until the chapter is re-executed (notebook, start of the sentence, where it was fixed).
AWAITING_RE_EXECUTION: dict[tuple[str, str], str] = {}  # every listed sentence was fixed by re-executing its chapter


def _chapter_findings() -> dict[tuple[str, str], str]:
    found = {}
    for nb in sorted((BOOK / "chapters").glob("*.ipynb")):
        for sentence, why in chapter_problems(nb):
            found[(nb.stem, sentence)] = why
    return found


def test_executed_chapters_do_not_contradict_their_numbers():
    found = _chapter_findings()

    def known(key):
        return any(key[0] == nb and key[1].lstrip().startswith(start) for nb, start in AWAITING_RE_EXECUTION)

    new = {k: v for k, v in found.items() if not known(k)}
    assert not new, "new contradictions:\n" + "\n".join(f"{nb}: {why}: {s}" for (nb, s), why in new.items())
    gone = [k for k in AWAITING_RE_EXECUTION if not any(nb == k[0] and s.lstrip().startswith(k[1]) for nb, s in found)]
    assert not gone, f"re-executed and fixed — remove from AWAITING_RE_EXECUTION: {gone}"


def test_no_page_or_template_defines_a_verdict_by_standard_deviations():
    """The written method (markdown cells, pages, pending templates) names the rule the numbers use."""
    texts = {p: p.read_text() for p in BOOK.glob("*.md")}
    for folder in (BOOK / "chapters", REPO / "notebooks", REPO / "notebooks" / "pending"):
        for p in folder.glob("*.ipynb"):
            texts[p] = "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "markdown")
    bad = [f"{p.relative_to(REPO)}: {s}" for p, t in texts.items() for s in sentences(t) if SD_RULE.search(s)]
    assert not bad, "\n".join(bad)


TIME_TO_RUN = re.compile(r"`cpu` ≈ (\d+(?:\.\d+)?)(?:–(\d+(?:\.\d+)?))? (min|h)\b")


def test_each_chapters_stated_cpu_time_matches_its_recorded_runs():
    """A reader plans by the "Time to run" line: the chapter's own runs (not a study that runs apart)
    recorded at most 1.5x its upper figure and at least half its lower one. Recorded minutes include
    runs timed beside other jobs (slower), so the band is wide; a stale figure still fails."""
    from eurosat_lib.summaries.cost import edition_cost

    recorded = {r["chapter"]: r["minutes"] for r in edition_cost(BOOK / "runs" / "cpu") if r["part"] == "chapter"}
    checked, off = 0, {}
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        text = "".join(json.loads(nb.read_text())["cells"][0]["source"])
        m = TIME_TO_RUN.search(text)
        assert m, f"{nb.name}: no '`cpu` ≈ N min' in its Overview's Time to run line"
        if nb.stem not in recorded:  # a chapter that trains nothing (00_data) has no run records
            continue
        scale = 60.0 if m.group(3) == "h" else 1.0
        low, high = float(m.group(1)) * scale, float(m.group(2) or m.group(1)) * scale
        checked += 1
        if not 0.5 * low <= recorded[nb.stem] <= 1.5 * high:
            off[nb.stem] = f"states {m.group(0)!r}, its runs recorded {recorded[nb.stem]:.0f} min"
    assert checked >= 6 and not off, off
