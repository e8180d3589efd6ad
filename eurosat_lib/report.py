"""The book's results chapter, generated from run records — never typed by hand.

``python -m eurosat_lib report`` (run by ``make experiments`` after the chapters) reads

* the headline runs ``book/runs/<profile>/reference/*/record.json`` (``scripts/reference_runs.py``),
* each chapter's ``book/runs/<profile>/<notebook>/summary.json`` (a typed summary of
  :mod:`eurosat_lib.summaries`, written by the notebook's Summary cell with
  :func:`eurosat_lib.experiments.save_summary`, listing the runs it came from),

and writes ``book/results.md`` plus its figures under ``book/images/``. Every number on that page
is formatted from one of those files, and each table names its source, so any figure can be
traced back to a run folder. A test regenerates the page and compares it with the committed one.

This module only assembles: the headline runs and the published anchors are its own sections;
each chapter's section is its summary's ``render_markdown()``, so no chapter's keys are read here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._io import atomic_path
from .runs import HEADLINE_RUNS, epochs_run, headline_run_dir
from .summaries import SUMMARIES, RecordContext, load_summary, summary_file
from .summaries.render import (  # noqa: F401  (re-exported: the page's formatting, public since the first version)
    BROKEN_FLAGS,
    chapter_sizes,
    compare_text,
    duration,
    flag_note,
    is_broken,
    md_table,
    num,
    pct,
    read_json,
    record_warnings,
    relative_source,
    run_image_size,
)

#: Published anchors (Helber et al., IEEE JSTARS 2019, RGB bands, 80/20 train/test split).
PUBLISHED = (
    {"method": "ResNet-50, ImageNet-pretrained, fine-tuned", "accuracy": 0.9857,
     "setting": "RGB, 80/20 split (21,600 training images), 224 px input, ~23.5 M parameters"},
    {"method": "GoogLeNet, ImageNet-pretrained, fine-tuned", "accuracy": 0.9818,
     "setting": "RGB, 80/20 split, 224 px input, ~6.8 M parameters"},
    {"method": "Two-layer CNN trained from scratch", "accuracy": 0.8796,
     "setting": "RGB, 80/20 split, 64 px input"},
)  # fmt: skip

#: The headline table's rows, in order: key of :data:`eurosat_lib.runs.HEADLINE_RUNS` -> the method in words.
REFERENCE_LABELS: dict[str, str] = {
    "frozen": "Frozen ImageNet base + new head",
    "finetune": "Two-phase fine-tuning (head, then all layers, BatchNorm frozen)",
    "scratch": "Same network trained from scratch",
    "scratch_plateau": "Same network from scratch, native 64 px, 60-epoch schedule",
    "recipe": "The [recipe study](recipes.md)'s choice within 20 minutes (fine-tuned)",
}
#: ``(run folder name, method)`` of each headline row (public since the first version).
REFERENCE_RUNS = tuple((HEADLINE_RUNS[key], label) for key, label in REFERENCE_LABELS.items())


def shown_time(rec: Mapping[str, Any]) -> str:
    """A headline record's training time as the page may show it.

    Timings measured while other jobs shared the CPU are not figures (issue 15: the same epoch ran
    at 60 s alone and 309 s shared), and a record written before the machine's load was kept cannot
    show it was alone, so neither prints a number.

    Args:
        rec: A complete run record.

    Returns:
        The duration, or why it is withheld.
    """
    from .runs import timing_trusted, used_cached_features

    timings = rec.get("timings") or {}
    if "machine_load" not in timings:
        return "not shown: machine load not recorded"
    if timings.get("spans_processes"):
        return "not shown: resumed across processes"
    if used_cached_features(rec):
        return "not shown: features cached by an earlier run"
    if not timing_trusted(rec):
        return "not shown: measured under contention"
    return duration(timings["fit_seconds"])


def reference_section(runs_dir: Path, book_dir: Path) -> tuple[str, dict[str, Any]]:
    """The headline table (frozen / fine-tuned / scratch MobileNetV2) and its numbers.

    Args:
        runs_dir: ``book/runs/<profile>``.
        book_dir: The book's folder (sources are cited relative to the folder above it).

    Returns:
        ``(markdown, records)``: the section (``""`` without a complete headline run) and the
        complete headline records by run name.
    """
    from collections import Counter

    from .summaries.recipes import machine_name

    rows, found = [], {}
    for key, label in REFERENCE_LABELS.items():
        rec_path = headline_run_dir(runs_dir, key) / "record.json"
        rec = read_json(rec_path)
        if not rec or rec.get("status") != "complete":
            continue
        test = rec["metrics"]["test"]
        found[HEADLINE_RUNS[key]] = rec
        rows.append({
            "method": label,
            "acc": pct(test["accuracy"]) + flag_note([record_warnings(rec)]),
            "f1": f"{test['macro_f1']:.3f}",
            "ece": f"{test['ece']:.3f}",
            "train": num(rec["extra"]["train_size"]),
            "size": f"{rec['params']['image_size']} px",
            "time": shown_time(rec),
            "params": num(rec["model_info"]["params"]["trainable"]),
            "src": f"`{relative_source(rec_path, book_dir)}`",
        })  # fmt: skip
    if not rows:
        return "", found
    any_rec = next(iter(found.values()))
    p = any_rec["params"]
    env = any_rec["environment"]
    # Sessions do not always get the same CPU, and one epoch can take several times as long on one as on
    # another: a headline re-run on another CPU names it beside its time instead of inheriting the
    # table's machine line.
    machines = {name: machine_name(rec["environment"]) for name, rec in found.items()}
    main = Counter(machines.values()).most_common(1)[0][0]
    for row, name in zip(rows, found):
        if machines[name] != main and not row["time"].startswith("not shown"):
            row["time"] += f" (on {machines[name]})"
    where = (f"Machine: {main}" + ("." if env.get("gpus") else ", no GPU.")
             if len(set(machines.values())) == 1 else
             f"Machine: {main}, unless a row's training time names another; this project's sessions do not always get "
             "the same CPU, so times on two CPUs are not one axis.")  # fmt: skip
    text = [
        f"## Headline: one network, {('one', 'two', 'three', 'four', 'five')[len(rows) - 1]} ways",
        "",
        f"{p['backbone']} (α = {p['backbone_kwargs'].get('alpha', 1.0)}), trained on the "
        f"full training split and scored on the full test split ({any_rec['metrics']['test']['n']:,} images). " + where,
        "",
        md_table(rows, [("method", "method"), ("acc", "test accuracy"), ("f1", "macro-F1"), ("ece", "ECE"),
                        ("size", "input"), ("train", "training images"), ("params", "trainable parameters (last phase)"),
                        ("time", "training time"), ("src", "record")]),  # fmt: skip
        "",
    ]
    fz, ft, sc, sp, rc = (found.get(HEADLINE_RUNS[k]) for k in ("frozen", "finetune", "scratch", "scratch_plateau", "recipe"))
    from .stats import independent_diff

    def acc_n(rec: Mapping[str, Any]) -> tuple[float, int]:
        return rec["metrics"]["test"]["accuracy"], rec["metrics"]["test"]["n"]

    if fz and ft:
        (a, na), (b, nb) = acc_n(fz), acc_n(ft)
        d = independent_diff(b, nb, a, na)
        text.append(
            f"Fine-tuning the whole network after the head phase moved test accuracy from **{pct(a)}** (frozen "
            f"base) to **{pct(b)}**: {compare_text(d, [record_warnings(ft)], [record_warnings(fz)])}"
            + (f"; it removed {100 * ((1 - a) - (1 - b)) / (1 - a):.0f} % of the frozen model's errors."
               if d.verdict == "better" and not is_broken([record_warnings(ft), record_warnings(fz)]) else ".")
        )  # fmt: skip
        if "not converged" in record_warnings(ft):
            text.append("The fine-tuned run's validation accuracy was still rising when its schedule ended "
                        "(⚠ not converged): its number is a lower bound of what this recipe reaches.")  # fmt: skip
    if ft and sc:
        (b, nb), (c, nc) = acc_n(ft), acc_n(sc)
        ep_ft, ep_sc = epochs_run(ft), epochs_run(sc)
        d = independent_diff(c, nc, b, nb)
        sentence = (
            f"The same architecture trained from random weights reached **{pct(c)}** after {ep_sc} epochs "
            f"(training time {shown_time(sc)}); against the fine-tuned model "
            f"({ep_ft} epochs including the head phase): "
            f"{compare_text(d, [record_warnings(sc)], [record_warnings(ft)])}."
        )
        # Say whether the scratch run had converged: a still-rising curve means the gap is partly budget.
        val = [v for ph in sc.get("history", []) for v in ph.get("history", {}).get("val_accuracy", [])]
        if len(val) >= 2 and val[-1] > val[-2]:
            sentence += (
                f" Its validation accuracy was still rising ({pct(val[-2])} → {pct(val[-1])} in the last epoch), "
                "so part of that gap is the short training budget, not only the missing ImageNet features."
            )
        if "not converged" in record_warnings(sc):
            sentence += (f" Helber et al.'s two-layer CNN trained from scratch reached {pct(PUBLISHED[2]['accuracy'])} "
                         "(80/20 split); this run stopped while still improving, so it does not say how a "
                         "from-scratch network trained to convergence compares with that"
                         + (" (the next paragraph does)." if sp else "."))  # fmt: skip
        text.append(sentence)
    if sp:
        text.append("")
        text.append(plateau_sentence(sp, ft))
    if rc:
        text.append("")
        study, here = runs_dir / "recipe_study", machine_name(rc["environment"])
        from .summaries.recipes import read_rows

        rows = read_rows(study) if study.is_dir() else []
        text.append(recipe_sentence(rc, read_json(headline_run_dir(runs_dir, "recipe") / "tta.json"), ft,
                                    current=current_recipe_choice(study, here, rows),
                                    study_time=study_minutes(study, (rc["params"].get("tags") or {}).get("recipe"), here, rows)))  # fmt: skip
    if found:
        text.append("")
        text.append("Intervals here are unpaired (the records keep confusion matrices, not per-image predictions), "
                    "so they are conservative.")  # fmt: skip
    text.append("")
    return "\n".join(text), found


OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


def plateau_sentence(sp: Mapping[str, Any], ft: Mapping[str, Any] | None) -> str:
    """What the from-scratch run trained to a plateau says, against the fine-tuned run and Helber's CNN.

    Args:
        sp: The plateau run's complete record.
        ft: The fine-tuned headline record, or None.

    Returns:
        Markdown: the run's number and stopping, and each comparison with its 95 % interval.
    """
    from .stats import independent_diff

    c, nc = sp["metrics"]["test"]["accuracy"], sp["metrics"]["test"]["n"]
    flags = [record_warnings(sp)]
    phase = sp["params"]["phases"][-1]
    epochs = epochs_run(sp)
    val = [v for ph in sp.get("history", []) for v in ph.get("history", {}).get("val_accuracy", [])]
    if epochs < phase["epochs"]:
        stop = f"early stopping ended it after {epochs} of at most {phase['epochs']} epochs (a plateau on validation)"
    else:
        # A cosine schedule ending at zero usually makes the last epoch the best by a hair, so say
        # how much the last epochs gained against the noise rather than calling it a plateau.
        first = val[-6] if len(val) > 5 else val[0]
        n_val = (sp["metrics"].get("val") or {}).get("n") or nc
        se = math.sqrt(2 * val[-1] * (1 - val[-1]) / n_val)
        gain = val[-1] - max(val[:-5] or val[:1])
        stop = (f"it ran its whole {epochs}-epoch schedule (the learning rate decays to zero at the end); validation "
                f"accuracy went from {pct(first)} to {pct(val[-1])} over the last five epochs, "
                + (f"{100 * gain:.2f} points above its best before them, less than one standard error of such a "
                   f"difference ({100 * se:.2f} points on {n_val:,} validation images), so the run is not flagged as "
                   "still improving although its best epoch is its last" if gain <= se else
                   f"{100 * gain:.2f} points above its best before them, more than one standard error "
                   f"({100 * se:.2f} points): it was still improving"))
    out = (f"Trained for longer instead, with a recipe made for training from scratch ({sp['params']['image_size']} px, "
           f"{OPTIMIZER_NAMES.get(phase['optimizer'], phase['optimizer'])} with peak learning rate {phase['learning_rate']:g} and {phase['schedule']} decay, early stopping after "
           f"{phase['early_stopping']} epochs without a lower validation loss), the same network from random weights "
           f"reached **{pct(c)}**{flag_note(flags)}: {stop}.")  # fmt: skip
    if ft:
        b, nb = ft["metrics"]["test"]["accuracy"], ft["metrics"]["test"]["n"]
        out += (f" Against the fine-tuned ImageNet model: {compare_text(independent_diff(c, nc, b, nb), flags, [record_warnings(ft)])}"
                "; the five-epoch scratch row above is far from what this network reaches from random weights "
                "(it differs in budget, input size and optimiser, so the table does not say which of them matters most).")  # fmt: skip
    helber = PUBLISHED[2]
    # Helber et al. scored 20 % of the 27,000 images: 5,400, the size of our test split.
    d = independent_diff(c, nc, helber["accuracy"], 5400)
    out += (f" Against Helber et al.'s two-layer CNN trained from scratch ({pct(helber['accuracy'])}): "
            f"{compare_text(d, flags)}. That compares recipes, not test images: their 80/20 split trains on "
            f"21,600 images and tests on another 5,400, ours trains on {sp['extra']['train_size']:,}; the interval "
            "assumes 5,400 test images on their side.")  # fmt: skip
    return out


def current_recipe_choice(study_dir: Path, machine: str | None = None,
                          rows: Sequence[Mapping[str, Any]] | None = None) -> str | None:  # fmt: skip
    """The configuration the recipe study chooses within the goal's minutes now.

    Which configurations fit in 20 minutes depends on the CPU (the same epoch has taken from ~50 s
    to ~260 s on this project's CPUs), so on a machine with timings of its own in the
    study the choice is made among those; elsewhere (or where none of them fits), on the study's
    main time axis.

    Args:
        study_dir: ``book/runs/<profile>/recipe_study``.
        machine: A :func:`eurosat_lib.summaries.recipes.machine_name` (where the headline runs or
            ran); None: the study's main axis (:func:`eurosat_lib.summaries.recipes.study_machine`).
        rows: The study's rows when the caller has read them already (one read per page).

    Returns:
        Its name, or None (no study folder, or no timed configuration within the budget).
    """
    from .summaries import recipes as RP

    if not Path(study_dir).is_dir():
        return None
    rows = RP.read_rows(study_dir) if rows is None else rows
    own = RP.choose(RP.by_recipe(rows, machine), RP.GOAL[1]) if machine in RP.timed_machines(rows) else None
    # a CPU too slow for any timed configuration to fit runs the main axis's choice: still the best guess
    chosen = own or RP.choose(RP.by_recipe(rows), RP.GOAL[1])
    return chosen["recipe"] if chosen else None


def study_minutes(study_dir: Path, recipe: str | None, machine: str | None,
                  rows: Sequence[Mapping[str, Any]] | None = None) -> tuple[str, float] | None:  # fmt: skip
    """The study's trusted minutes for ``recipe`` on its main time axis, when ``machine`` is another CPU.

    A headline re-run on a slower CPU than the study's main axis misses the time budget for the CPU's
    sake, not the configuration's; the page then also quotes the configuration's time where the
    study chose it.

    Args:
        study_dir: ``book/runs/<profile>/recipe_study``.
        recipe: The configuration's name.
        machine: The headline's :func:`eurosat_lib.summaries.recipes.machine_name`.
        rows: The study's rows when the caller has read them already.

    Returns:
        ``(main axis, mean minutes)``, or None (no study, same CPU, or no trusted timing there).
    """
    from .summaries import recipes as RP

    if not recipe or not Path(study_dir).is_dir():
        return None
    rows = RP.read_rows(study_dir) if rows is None else rows
    main = RP.study_machine(rows)
    if main is None or main == machine:
        return None
    entry = next((e for e in RP.by_recipe(rows, main) if e["recipe"] == recipe), None)
    return (main, entry["minutes"]) if entry and math.isfinite(entry["minutes"]) else None


def recipe_sentence(rc: Mapping[str, Any], tta: Mapping[str, Any] | None, ft: Mapping[str, Any] | None,
                    current: str | None = None, study_time: tuple[str, float] | None = None) -> str:  # fmt: skip
    """The headline run of the recipe study's choice: accuracy and minutes against the goal, TTA apart.

    Args:
        rc: The recipe headline's complete record.
        tta: Its ``tta.json`` (dihedral test-time augmentation), or None.
        ft: The fine-tuned headline record it improves on, or None.
        current: The study's choice now (:func:`current_recipe_choice`); when it is not the record's
            configuration (more configurations ran since), the sentence says so and how to re-run.
        study_time: ``(CPU, minutes)`` of the same configuration on the study's main time axis
            (:func:`study_minutes`) when the headline ran on another CPU; None: not quoted.

    Returns:
        Markdown.
    """
    from .runs import timing_trusted
    from .stats import independent_diff
    from .summaries.recipes import GOAL, MOONSHOT, machine_name, tta_untimed_reason

    acc, n = rc["metrics"]["test"]["accuracy"], rc["metrics"]["test"]["n"]
    tags = rc["params"].get("tags") or {}
    minutes = rc["timings"]["fit_seconds"] / 60.0
    trusted = "machine_load" in rc["timings"] and timing_trusted(rc)
    flags = [record_warnings(rc)]
    out = (f"The configuration the [recipe study](recipes.md) chose on validation within {GOAL[1]:.0f} minutes "
           f"(`{tags.get('recipe', '?')}`: {tags.get('what', '')}), re-run as its own record, reached **{pct(acc)}**{flag_note(flags)} "
           f"test accuracy in {shown_time(rc)} of training"
           + (f" on {machine_name(rc['environment'])}." if trusted else "."))  # fmt: skip
    tta_ok = bool(tta) and tta.get("spec_key") == rc["params"].get("spec_key")
    if tta_ok:
        # the TTA pass is timed under the training minutes' rule: load kept, quiet (the machine is named)
        why = tta_untimed_reason(tta)
        spent = (f"{tta['seconds'] / 60:.1f} min of inference on {machine_name(tta['environment'])}" if why is None
                 else f"inference minutes not shown: {why}")  # fmt: skip
        out += (f" Averaged over the 8 dihedral views of each test image it scores **{pct(tta['test_accuracy'])}** "
                f"({spent}, not counted as training).")  # fmt: skip
    if not trusted:
        out += " Its timing is not shown, so whether it meets the time goal is not stated."
    else:
        for (target, budget), name in ((GOAL, "goal"), (MOONSHOT, "moonshot")):
            within = minutes <= budget
            hit = acc >= target
            hit_tta = tta_ok and tta["test_accuracy"] >= target
            verdict = ("met" if within and hit else "met only with test-time augmentation" if within and hit_tta
                       else "not met")  # fmt: skip
            # a miss says which half failed: a slow CPU and a short accuracy ask for different remedies
            why = ([] if hit or (within and hit_tta) else
                   [f"{pct(acc)} is below {100 * target:.1f} %" + (" even with test-time augmentation" if tta_ok and not hit_tta else "")])
            why += [] if within else [f"{minutes:.1f} min is over {budget:.0f} min"]
            out += f" The {name} (≥ {100 * target:.1f} % in ≤ {budget:.0f} min): **{verdict}**" + (f" ({'; '.join(why)})." if why else ".")
        if study_time and minutes > GOAL[1]:
            out += (f" In the study the same configuration took {study_time[1]:.1f} min on {study_time[0]} (its main "
                    "time axis), where the time budget was judged.")  # fmt: skip
    if ft:
        b, nb = ft["metrics"]["test"]["accuracy"], ft["metrics"]["test"]["n"]
        out += f" Against the two-phase fine-tuning row: {compare_text(independent_diff(acc, n, b, nb), flags, [record_warnings(ft)])}."
    if current and current != tags.get("recipe"):
        out += (f" More configurations have run since: the study's choice within {GOAL[1]:.0f} minutes is now `{current}` "
                "(see the [recipe study](recipes.md)); `python scripts/reference_runs.py --only recipe` re-runs this "
                "headline with it.")  # fmt: skip
    return out


def published_section(best: Mapping[str, Any] | None) -> str:
    """Helber et al.'s published accuracies, and how our best headline run's setting differs.

    Args:
        best: The best complete headline record, or None.

    Returns:
        Markdown.
    """
    rows = [{"method": r["method"], "acc": pct(r["accuracy"]), "setting": r["setting"]} for r in PUBLISHED]
    out = [
        "## Beside the published numbers",
        "",
        "Helber et al. {cite}`helber2019eurosat` (Table III, RGB) report:",
        "",
        md_table(rows, [("method", "method"), ("acc", "accuracy"), ("setting", "their setting")]),
        "",
    ]
    if best:
        acc = best["metrics"]["test"]["accuracy"]
        p = best["params"]
        out.append(
            f"Our best headline run reaches {pct(acc)}, {100 * abs(0.9857 - acc):.2f} points "
            f"{'below' if acc < 0.9857 else 'above'} their ResNet-50. "
            f"The settings differ: a {best['model_info']['params']['total'] / 1e6:.1f} M-parameter "
            f"{p['backbone']} (α = {p['backbone_kwargs'].get('alpha', 1.0)}) instead of a 23.5 M-parameter ResNet-50, "
            f"{p['image_size']} px instead of 224 px, {best['extra']['train_size']:,} training images (60 % split) "
            "instead of 21,600 (80 %), and a few CPU epochs. Their from-scratch two-layer CNN is a different, much "
            "smaller network than our from-scratch MobileNetV2."
        )
        out.append("")
    return "\n".join(out)


def chapter_sections(runs_dir: Path, book_dir: Path, images_dir: Path | None = None, types: Sequence[type] = SUMMARIES[1:]) -> str:
    """One section per chapter summary found, each its summary's ``render_markdown()``.

    Args:
        runs_dir: ``book/runs/<profile>``.
        book_dir: The book's folder (sources are cited relative to the folder above it).
        images_dir: Where figures go (default ``book_dir/images``).
        types: The chapters' summary types, in page order (default: chapters 1 to 6).

    Returns:
        The sections, preceded by how comparisons are stated; ``""`` when no summary is found.
    """
    parts = []
    for cls in types:
        chapter_dir = runs_dir / cls.NOTEBOOK
        summary = load_summary(chapter_dir, cls.NOTEBOOK)
        if summary is None:
            continue
        source = f"`{relative_source(chapter_dir / summary_file(cls.NOTEBOOK), book_dir)}`"
        ctx = RecordContext(root=book_dir.resolve().parent, chapter_dir=chapter_dir.resolve(),
                            images_dir=images_dir or book_dir / "images")  # fmt: skip
        parts.append(summary.render_markdown(source, ctx=ctx))
    if parts:
        parts.insert(0, COMPARISON_RULES)
    return "\n".join(parts)


#: How the chapter sections state comparisons (printed once, above them).
COMPARISON_RULES = """## How the comparisons below are stated

Each difference is a paired mean difference over seeds (the same training images per seed) with a
95 % interval computed by `eurosat_lib.stats`: the seed-to-seed spread (Student t) plus the binomial
noise of the shared evaluation images, which seeds alone do not show. *Better* / *worse* appear only
when the interval excludes zero, otherwise *no measurable difference*; with 2 seeds a large seed spread
makes the interval very wide, which is the honest size of that evidence. A run flagged ⚠ *chance-level*
or *diverged* (`eurosat_lib.sanity`, stored in its record's `warnings`) is shown with its flag and never
used as a finding; ⚠ *not converged* marks a run still improving when it stopped.
"""


def build_results_page(
    book_dir: str | os.PathLike = "book",
    profile: str = "cpu",
    out: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``book/results.md`` (or ``out``) from the run records of ``profile``.

    Figures go to ``images_dir`` (default ``book/images``), linked as ``images/<name>``.

    Args:
        book_dir: The book's folder.
        profile: Whose run records (``book/runs/<profile>/``).
        out: The page's path (default ``book/results.md``).
        images_dir: Where figures go.

    Returns:
        The page's path.

    Raises:
        FileNotFoundError: ``book/runs/<profile>/`` holds no run record or chapter summary; the
            page is then left as it is (a page from zero records would wipe the committed one).
    """
    book_dir = Path(book_dir)
    runs_dir = book_dir / "runs" / profile
    target = Path(out) if out else book_dir / "results.md"
    if not runs_dir.is_dir() or not any(
        p.name in ("record.json", "summary.json", "data_summary.json") for p in runs_dir.rglob("*.json")
    ):
        raise FileNotFoundError(
            f"no run records for profile {profile!r} under {runs_dir}: {target} left unchanged. "
            f"Run `make experiments PROFILE={profile}` first (from the repository root)."
        )
    ref_text, ref = reference_section(runs_dir, book_dir)
    best = max(ref.values(), key=lambda r: r["metrics"]["test"]["accuracy"]) if ref else None
    data_type = SUMMARIES[0]
    data_path = runs_dir / data_type.NOTEBOOK / summary_file(data_type.NOTEBOOK)
    data_summary = read_json(data_path)
    page = [
        "# Results",
        "",
        f"*Generated by `python -m eurosat_lib report` from the run records in `book/runs/{profile}/` "
        "(profile `" + profile + "`); every number below is read from a record named next to it. "
        "Do not edit by hand — re-run `make experiments`.*",
        "",
        data_type.from_json(data_summary).render_markdown(f"`{relative_source(data_path, book_dir)}`") if data_summary else "",
        ref_text,
        published_section(best),
        chapter_sections(runs_dir, book_dir, Path(images_dir) if images_dir else None),
    ]
    with atomic_path(target, suffix=".md") as tmp:
        tmp.write_text("\n".join(page).rstrip() + "\n")
    return target


def build_recipes_page(
    book_dir: str | os.PathLike = "book",
    profile: str = "cpu",
    out: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
) -> Path | None:
    """Write ``book/recipes.md`` (the recipe study, issue 15) and its figure from the study's run records.

    Args:
        book_dir: The book's folder.
        profile: Whose run records (``book/runs/<profile>/recipe_study/``).
        out: The page's path (default ``book/recipes.md``).
        images_dir: Where the figure goes (default ``book/images``), linked as ``images/recipes.png``.

    Returns:
        The page's path, or None when the profile has no recipe-study folder (the page is left as it is).
    """
    from .summaries import recipes as RP

    book_dir = Path(book_dir)
    study = book_dir / "runs" / profile / "recipe_study"
    if not study.is_dir():
        return None
    rows = RP.read_rows(study)
    plan = read_json(study / RP.PLAN_FILE)
    entries = RP.by_recipe(rows)
    figure = None
    if entries:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plots import plot_recipe_front

        img_dir = Path(images_dir) if images_dir else book_dir / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        fig = plot_recipe_front(entries, goal=RP.GOAL, moonshot=RP.MOONSHOT, front=RP.pareto_front(entries),
                                machine=RP.study_machine(rows))  # fmt: skip
        with atomic_path(img_dir / "recipes.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
        plt.close(fig)
        figure = "images/recipes.png"
    # the side-by-side cost benchmark, when one was run for real (only the cpu study has one)
    bench = read_json(book_dir.resolve().parent / "benchmarks" / "results" / "recipes.json") if profile == "cpu" else None
    page = RP.render_page(rows, source=relative_source(study, book_dir), profile=profile, plan=plan, figure=figure, bench=bench,
                          ensembles=RP.read_ensembles(study))
    target = Path(out) if out else book_dir / "recipes.md"
    with atomic_path(target, suffix=".md") as tmp:
        tmp.write_text(page)
    return target


def build_cost_snippet(book_dir: str | os.PathLike = "book", profile: str = "cpu", out: str | os.PathLike | None = None) -> Path:
    """Write ``book/edition_cost.md``: what ``make experiments`` cost, from the run records (``book/gpu.md`` includes it).

    Args:
        book_dir: The book's folder.
        profile: Whose run records (``book/runs/<profile>/``) and executed chapters.
        out: The file's path (default ``book/edition_cost.md``).

    Returns:
        The file's path.
    """
    from .summaries import cost

    book_dir = Path(book_dir)
    runs_dir = book_dir / "runs" / profile
    rows = cost.edition_cost(runs_dir) if runs_dir.is_dir() else []
    pending = sorted(p.stem for p in (book_dir.parent / "notebooks" / "pending").glob("[0-9][0-9]_*.ipynb"))
    text = cost.render_cost(rows, cost.execution_minutes(book_dir / "chapters", profile), profile,
                            source=relative_source(runs_dir, book_dir), pending=pending)  # fmt: skip
    target = Path(out) if out else book_dir / cost.SNIPPET
    with atomic_path(target, suffix=".md") as tmp:
        tmp.write_text(text)
    return target
