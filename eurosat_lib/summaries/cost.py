"""What computing an edition cost: the recorded time of every run its chapters read (issue 12).

``make experiments PROFILE=cpu`` from scratch trains every run of every chapter, and the long
studies the chapters run (the similarity study under chapter 2, the crossover under chapter 3).
Runs are reused and resume after a kill, so no single sitting measures that total; the run
records do. Each record keeps its own training and scoring seconds (``timings.fit_seconds`` +
``timings.eval_seconds``). :func:`edition_cost` sums them per chapter and study, and counts the
runs whose time is not a quiet measurement (:func:`eurosat_lib.runs.timing_trusted`): timed while
other jobs shared the CPU (longer than alone), or reading head features an earlier run cached
(shorter: the extraction is left out). :func:`render_cost` writes the table the reproduce page
(``book/gpu.md``) includes, with the chapters' own execution time from the executed notebooks.

Keras-free, like the rest of :mod:`eurosat_lib.summaries`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .render import md_table, read_json

#: Issue 12's budget: ``make experiments PROFILE=cpu`` from scratch within this many hours on 2 cores.
GOAL_HOURS = 5.0
#: Sub-folders of a chapter's run folder that hold a long study of their own (a row each).
STUDIES = ("crossover", "similarity")
#: The file :func:`eurosat_lib.report.build_cost_snippet` writes, included by ``book/gpu.md``.
SNIPPET = "edition_cost.md"


def edition_cost(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Recorded minutes per chapter (and per study inside a chapter) of one profile's runs.

    Args:
        runs_dir: ``book/runs/<profile>``; its ``NN_*`` folders are the chapters (the recipe
            study and the headline runs have their own commands and are not counted).

    Returns:
        One row per chapter part, in chapter order: ``chapter``, ``part`` (``"chapter"`` or a
        study name), ``runs`` (finished records), ``minutes`` (their training and scoring time),
        ``contended`` and ``cached`` (runs timed beside other jobs / on cached head features),
        ``untimed`` (records without timings), ``scratch_minutes`` (the minutes of runs trained
        from random weights: the from-scratch baselines) and ``machines`` (each CPU the runs were
        timed on, as :func:`eurosat_lib.summaries.recipes.machine_name` names it -> runs).
    """
    from ..runs import recorded_minutes, used_cached_features  # keras-free, as this module
    from .recipes import machine_name

    rows = []
    for chapter in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and p.name[:2].isdigit()):
        parts: dict[str, dict[str, Any]] = {}
        for path in sorted(chapter.rglob("record.json")):
            rec = read_json(path)
            if not rec or rec.get("status") != "complete":
                continue
            rel = path.relative_to(chapter).parts
            part = rel[0] if len(rel) > 2 and rel[0] in STUDIES else "chapter"
            g = parts.setdefault(part, {"runs": 0, "minutes": 0.0, "contended": 0, "cached": 0, "untimed": 0,
                                        "scratch_minutes": 0.0, "machines": {}})  # fmt: skip
            g["runs"] += 1
            minutes = recorded_minutes(rec)
            if minutes is None:
                g["untimed"] += 1
                continue
            g["minutes"] += minutes
            params = rec.get("params") or {}
            if "weights" in params and params["weights"] is None:  # a record that names no weights is not counted as scratch
                g["scratch_minutes"] += minutes
            if rec.get("environment"):
                name = machine_name(rec["environment"])
                g["machines"][name] = g["machines"].get(name, 0) + 1
            g["contended"] += bool((rec.get("timings") or {}).get("contended", False))
            g["cached"] += used_cached_features(rec)
        order = ["chapter"] + [s for s in STUDIES if s in parts]
        rows += [{"chapter": chapter.name, "part": p, **parts[p]} for p in order if p in parts]
    return rows


def execution_minutes(chapters_dir: str | Path, profile: str) -> dict[str, float]:
    """Minutes each executed chapter's last execution took (``metadata.eurosat.seconds``).

    Args:
        chapters_dir: ``book/chapters``.
        profile: Only chapters executed at this profile count.

    Returns:
        Chapter name -> minutes, for the notebooks that carry the stamp.
    """
    out = {}
    for nb in sorted(Path(chapters_dir).glob("[0-9][0-9]_*.ipynb")):
        stamp = (json.loads(nb.read_text()).get("metadata") or {}).get("eurosat") or {}
        if stamp.get("profile") == profile and isinstance(stamp.get("seconds"), (int, float)):
            out[nb.stem] = stamp["seconds"] / 60
    return out


def render_cost(rows: Sequence[Mapping[str, Any]], executed: Mapping[str, float], profile: str, source: str,
                pending: Sequence[str] = ()) -> str:
    """The reproduce page's account of what the edition cost, as Markdown.

    Args:
        rows: :func:`edition_cost`.
        executed: :func:`execution_minutes`.
        profile: The profile (named in the text).
        source: Where the records are (named under the table).
        pending: Chapters whose next version waits in ``notebooks/pending/`` for a long study:
            their studies' runs count only as far as they have finished.

    Returns:
        A table per chapter part, the total, and what it means for the 5-hour budget.
    """
    if not rows:
        return f"No run records of the `{profile}` profile yet: `make experiments PROFILE={profile}` writes them.\n"
    fmt = lambda m: f"{m:,.0f}" if m >= 10 else f"{m:.1f}"  # noqa: E731
    table = [{"chapter": r["chapter"], "part": "the chapter" if r["part"] == "chapter" else f"its {r['part']} study",
              "runs": str(r["runs"]), "minutes": fmt(r["minutes"]), "scratch": fmt(r.get("scratch_minutes", 0.0)),
              "contended": str(r["contended"]), "cached": str(r["cached"])} for r in rows]  # fmt: skip
    columns = [("chapter", "chapter"), ("part", "runs of"), ("runs", "runs"), ("minutes", "minutes recorded"),
               ("scratch", "of which from random weights"), ("contended", "timed beside other jobs"),
               ("cached", "on cached features")]  # fmt: skip
    runs = sum(r["runs"] for r in rows)
    minutes = sum(r["minutes"] for r in rows)
    contended, cached = sum(r["contended"] for r in rows), sum(r["cached"] for r in rows)
    untimed = sum(r["untimed"] for r in rows)
    scratch = sum(r.get("scratch_minutes", 0.0) for r in rows)
    machines: dict[str, int] = {}
    for r in rows:
        for name, n in (r.get("machines") or {}).items():
            machines[name] = machines.get(name, 0) + n
    overhead = sum(executed.values())
    total_h = total_hours(rows, executed)
    lines = [md_table(table, columns, right=("runs", "minutes", "scratch", "contended", "cached")), "",
             f"*Source: the `record.json` of every finished run under `{source}`; chapter executions from the "
             "executed notebooks' metadata.*", ""]  # fmt: skip
    text = (f"**{runs:,} runs, {minutes / 60:.1f} hours of recorded training and scoring.** The chapters' last "
            f"executions took {fmt(overhead)} minutes (figures, summaries, and any run that trained then, which is "
            f"so counted twice). So `make experiments PROFILE={profile}` from scratch costs at most about "
            f"**{total_h:.1f} hours** on 2 cores")
    if profile == "cpu":
        verdict = "within" if total_h <= GOAL_HOURS else "over"
        text += f": {verdict} the {GOAL_HOURS:g}-hour budget the cpu edition is meant to fit"
    text += "."
    if scratch and minutes:
        # where the hours go decides what a shorter edition would give up: the fair from-scratch
        # baselines (trained to a plateau or to at least the transfer arm's budget) are most of it
        text += (f" Runs trained from random weights (mostly the from-scratch baselines the transfer arms are "
                 f"measured against) account for {scratch / 60:.1f} of those hours ({100 * scratch / minutes:.0f} %); the rest, "
                 f"{(minutes - scratch) / 60:.1f} hours, trains or scores from ImageNet or a chapter's own source network.")  # fmt: skip
    if len(machines) > 1:
        # this project's sessions get different CPUs, and the same epoch can run several times faster on one
        text += (" The runs were timed on more than one CPU (" + "; ".join(f"{name}: {n} run{'' if n == 1 else 's'}" for name, n in
                 sorted(machines.items(), key=lambda kv: -kv[1])) + "), so the total mixes their speeds.")  # fmt: skip
    caveats = []
    if contended:
        caveats.append(f"{contended} runs were timed while other jobs shared the CPU, so their minutes are longer than "
                       "a quiet run's")
    if cached:
        caveats.append(f"{cached} runs read head features an earlier run had cached, so their minutes leave out that "
                       "extraction (seconds to a minute each)")
    if untimed:
        caveats.append(f"{untimed} records hold no timings and count as zero")
    if caveats:
        text += " Not every minute is a quiet measurement: " + "; ".join(caveats) + "."
    if pending:
        text += (" Not final: " + ", ".join(f"`{c}`" for c in pending) + (" waits" if len(pending) == 1 else " wait")
                 + " in `notebooks/pending/` for a study still running, whose runs count here as far as they have finished.")
    lines += [text, ""]
    return "\n".join(lines)


def total_hours(rows: Sequence[Mapping[str, Any]], executed: Mapping[str, float]) -> float:
    """Recorded run minutes plus chapter execution minutes, in hours (NaN without rows).

    Args:
        rows: :func:`edition_cost`.
        executed: :func:`execution_minutes`.

    Returns:
        The total in hours.
    """
    if not rows:
        return math.nan
    return (sum(r["minutes"] for r in rows) + sum(executed.values())) / 60
