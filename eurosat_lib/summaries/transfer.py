"""Chapter 1's summary (reusing ImageNet features): what it measured and its results section."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..runs import epochs_run, phase_epochs_run
from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    compare_text,
    duration,
    flag_note,
    group_flags,
    is_broken,
    md_table,
    mean_sd,
    num,
    paired_values,
    pct,
    record_warnings,
    sizes_text,
    versus,
    working_context,
)


@dataclass(frozen=True)
class TransferSummary(ChapterSummary):
    """Chapter 1: frozen features vs scratch, input size, preprocessing and head sweeps.

    Attributes:
        frozen_test_accuracy: Mean test accuracy of frozen ImageNet features + head.
        scratch_test_accuracy: Mean test accuracy of the same network from scratch.
        small_cnn_test_accuracy: Mean test accuracy of the small CNN from scratch.
        best_resolution: The input size with the best mean validation accuracy.
        correct_preprocessing: The backbone's own input normalisation.
        deep_head: The deepest head compared.
    """

    NOTEBOOK = "01_transfer_learning"

    frozen_test_accuracy: float | None = None
    scratch_test_accuracy: float | None = None
    small_cnn_test_accuracy: float | None = None
    best_resolution: int | None = None
    correct_preprocessing: str | None = None
    deep_head: str | None = None

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 1's section: the three models compared, then the one-setting-at-a-time sweeps."""
        p = self.parameters
        seeds = f"{len(p['seeds'])} seed(s)" if p.get("seeds") else ""
        who = f"{p['backbone']}" + (f" α = {p['alpha']}" if p.get("alpha") else "") if p.get("backbone") else ""
        n = f"{p['n_per_class']} training images per class" if p.get("n_per_class") else ""
        out = ["## Reusing ImageNet features (" + chapter_link(self.NOTEBOOK, "chapter 1") + ")", "",
               f"Setting: {', '.join(b for b in (who, n, seeds) if b)}; each table says the input size its runs used. Source: {source}.", ""]  # fmt: skip
        cmp = self.frame("compare")
        if cmp is not None:
            rows = []
            ref = list(dict.fromkeys(cmp["model"]))[0]
            for model, g in cmp.groupby("model", sort=False):
                size = sizes_text(ctx, list(g["run"]) if "run" in g else [], g["image_size"].iloc[0] if "image_size" in g else None)
                rows.append({"model": model, "px": size, "test": mean_sd(g["test_accuracy"]) + flag_note(group_flags(g, ctx)),
                             "f1": mean_sd(g["test_macro_f1"], digits=3, scale=1, unit=""),
                             "vs": versus(cmp, "model", model, ref, "test_accuracy", ctx),
                             "params": num(g["trainable_params"].iloc[0]), "time": duration(float(g["fit_seconds"].mean())),
                             "n": len(g)})  # fmt: skip
            out += [md_table(rows, [("model", "model (same images, same epochs)"), ("px", "input"), ("test", "test accuracy"),
                                    ("f1", "macro-F1"), ("vs", f"vs {ref} (test accuracy)"), ("params", "trainable parameters"),
                                    ("time", "training time"), ("n", "seeds")]), ""]  # fmt: skip
            # A gap measured at an equal epoch budget is partly that budget where the book's longer
            # scratch runs score higher: the results page says so beside the table, as the chapter does.
            notes = budget_notes(cmp, self.parameters.get("epochs"), ctx, "chapter 1, section 1")
            if notes:
                out += [" ".join(notes), ""]
        rows = []
        res_sizes: list[Any] = []
        for name, key, label, is_ref in (
            ("resolution", "image_size", lambda k: f"input resized to {k} px", lambda g: g["image_size"].iloc[0] == min(res_sizes)),
            ("preprocessing", "label", lambda k: f"preprocessing: {k}", lambda g: bool(g["correct"].iloc[0]) if "correct" in g else False),
            ("heads", "head", lambda k: f"head: {k}", lambda g: g["head"].iloc[0] == "linear"),
        ):  # fmt: skip
            t = self.frame(name)
            if t is None:
                continue
            if name == "resolution":
                res_sizes = list(t["image_size"])
            if key not in t:
                key = "mode"
            groups = list(t.groupby(key, sort=False))
            refs = [k for k, g in groups if is_ref(g)] or [groups[0][0]]
            for k, g in groups:
                runs = list(g["run"]) if "run" in g else []
                rows.append({"what": label(k), "px": sizes_text(ctx, runs, g["image_size"].iloc[0] if "image_size" in g else None),
                             "acc": mean_sd(g["val_accuracy"]) + flag_note(group_flags(g, ctx)),
                             "vs": versus(t, key, k, refs[0], "val_accuracy", ctx), "ref": label(refs[0]), "n": len(g)})  # fmt: skip
        if rows:
            out += ["Frozen features, one setting changed at a time (validation accuracy, mean ± sd over seeds; each row "
                    "compared with the reference row of its group):", "",
                    md_table(rows, [("what", "setting"), ("px", "input"), ("acc", "validation accuracy"),
                                    ("vs", "difference vs the group's reference"), ("n", "seeds")]), ""]  # fmt: skip
        return out

    def notebook_markdown(self, ctx: RecordContext | None = None) -> str:
        """The chapter's own Summary cell: each question's answer with its interval and verdict.

        Args:
            ctx: Where the runs' records are (default: paths relative to the working directory).

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        ctx = working_context(ctx)
        p = self.parameters
        cmp, res = self.numeric_frame("compare"), self.numeric_frame("resolution")
        pre, hd = self.numeric_frame("preprocessing"), self.numeric_frame("heads")
        who = f"{p.get('backbone')}" + (f" α = {p['alpha']}" if p.get("alpha") else "")
        lines = [f"*Numbers from this run ({self.profile} profile, {who}, {int(cmp['train_size'].iloc[0]):,} training images; "
                 f"section 1: {_seeds(len(set(cmp['seed'])))}, sections 2-4: {_seeds(len(set(res['seed'])))}).*", ""]  # fmt: skip
        models = list(dict.fromkeys(cmp["model"]))
        acc = lambda m: mean_sd(cmp.loc[cmp["model"] == m, "test_accuracy"]) + flag_note(group_flags(cmp[cmp["model"] == m], ctx))  # noqa: E731
        budget = budget_notes(cmp, p.get("epochs"), ctx, "section 1")
        lines.append(f"- **Reuse vs scratch** (test, {p.get('epochs')} epochs each): {models[0]} {acc(models[0])}; "
                     + "; ".join(f"{m} {acc(m)} ({versus(cmp, 'model', m, models[0], 'test_accuracy', ctx)})" for m in models[1:])
                     + "." + "".join(" " + b for b in budget))  # fmt: skip
        lo = int(res["image_size"].min())
        by_size = res.groupby("image_size")["val_accuracy"].mean().sort_values(ascending=False)
        best = int(by_size.index[0])
        vs = [f"against the next best, {int(by_size.index[1])} px, {versus(res, 'image_size', best, int(by_size.index[1]), 'val_accuracy', ctx)}"
              ] if len(by_size) > 1 else []  # fmt: skip
        if best != lo and (len(by_size) < 2 or int(by_size.index[1]) != lo):
            vs.append(f"against {lo} px {versus(res, 'image_size', best, lo, 'val_accuracy', ctx)}")
        lines.append(f"- **Resolution** (frozen features, validation): highest mean at {best} px, "
                     f"{mean_sd(res.loc[res['image_size'] == best, 'val_accuracy'])}" + ("; " + "; ".join(vs) if vs else "") + ".")  # fmt: skip
        correct = str(pre.loc[pre["correct"].astype(bool), "mode"].iloc[0])
        wrong = pre[~pre["correct"].astype(bool)].groupby("mode")["val_accuracy"].mean()
        if len(wrong):
            worst = str(wrong.idxmin())
            lines.append(f"- **Preprocessing:** the correct `{correct}` gives {mean_sd(pre.loc[pre['mode'] == correct, 'val_accuracy'])}; "
                         f"the worst wrong one, `{worst}`, {versus(pre, 'mode', worst, correct, 'val_accuracy', ctx)}.")  # fmt: skip
        deep = list(dict.fromkeys(hd["head"]))[-1]
        lines.append(f"- **Head depth:** `{deep}`{flag_note(group_flags(hd[hd['head'] == deep], ctx))} against the linear head "
                     f"{versus(hd, 'head', deep, 'linear', 'val_accuracy', ctx)}. " + head_diagnosis(hd, deep, ctx=ctx))  # fmt: skip
        return "\n".join(lines) + "\n"


def summarize(P: Any, compare: Any, resolution: Any, preprocessing: Any, heads: Any,
              models: Sequence[str] | None = None) -> TransferSummary:  # fmt: skip
    """Chapter 1's summary from its four studies' tables.

    Args:
        P: The chapter's parameters.
        compare: ``compare_from_scratch``'s table (one row per model and seed).
        resolution: ``sweep_resolution``'s table.
        preprocessing: ``sweep_preprocessing``'s table (a boolean ``correct`` column).
        heads: ``sweep_heads``'s table (the linear head first, the deepest last).
        models: The frozen, scratch and small-CNN model names (default: ``compare``'s order).

    Returns:
        The typed summary, with the four tables.
    """
    acc = compare.groupby("model", sort=False)["test_accuracy"].mean()
    frozen_m, scratch_m, cnn_m = tuple(models or acc.index[:3])
    by_size = resolution.groupby("image_size")["val_accuracy"].mean()
    correct = preprocessing.loc[preprocessing["correct"].astype(bool), "mode"].iloc[0]
    deep = heads.groupby("head", sort=False)["val_accuracy"].mean().index[-1]
    return TransferSummary.from_study(
        P, {"compare": compare, "resolution": resolution, "preprocessing": preprocessing, "heads": heads},
        frozen_test_accuracy=float(acc[frozen_m]), scratch_test_accuracy=float(acc[scratch_m]),
        small_cnn_test_accuracy=float(acc[cnn_m]), best_resolution=int(by_size.idxmax()),
        correct_preprocessing=str(correct), deep_head=str(deep),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The chapter's own paragraphs: every comparison through stats (a 95 % interval and its verdict)
# --------------------------------------------------------------------------------------------


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _minutes(ctx: RecordContext, runs: Sequence[Any]) -> float:
    """Mean training-and-scoring minutes of the runs whose timing is a measurement (NaN if none)."""
    from ..runs import trusted_minutes

    got = [m for m in (trusted_minutes(ctx.record(r)) for r in runs) if not math.isnan(m)]
    return sum(got) / len(got) if got else math.nan


def _best_epochs(ctx: RecordContext, runs: Sequence[Any]) -> list[tuple[int, int]]:
    """(best epoch, epochs run) of each run's validation accuracy (over all phases); empty if any has fewer than 2 epochs."""
    from ..sanity import best_epoch

    out = []
    for r in runs:
        best = best_epoch((ctx.record(r) or {}).get("history"))
        if best is None or best[1] < 2:
            return []
        out.append(best)
    return out


def _not_converged(ctx: RecordContext, runs: Sequence[Any]) -> int:
    return sum("not converged" in w for w in ctx.warnings(list(runs)))


# --------------------------------------------------------------------------------------------
# The book's other from-scratch runs of the same network: chapter 3's crossover, reference/
# --------------------------------------------------------------------------------------------

#: Chapter 3's crossover study, relative to a profile's runs folder (where
#: ``experiments.crossover.records_dir`` finds it; not imported: that module loads TensorFlow).
CROSSOVER_DIR = Path("03_finetune") / "crossover"
#: The results page's headline runs, relative to a profile's runs folder.
REFERENCE_DIR = Path("reference")


def same_network(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two run records trained the same network, from random weights, at the same input size.

    Args:
        a: A run record (or None).
        b: Another.

    Returns:
        True if both start from random weights with the same backbone, width and input size.
    """
    pa, pb = (a or {}).get("params") or {}, (b or {}).get("params") or {}
    keys = ("backbone", "backbone_kwargs", "image_size")
    return bool(pa and pb) and all(pa.get(k) == pb.get(k) for k in keys) and pa.get("weights") is None and pb.get("weights") is None


def run_steps(record: Mapping[str, Any] | None) -> int | None:
    """Optimiser steps a run took: its tagged budget's, else epochs run × batches per epoch, per phase.

    Args:
        record: A run record.

    Returns:
        The steps, None when the record does not say.
    """
    params = (record or {}).get("params") or {}
    budget = (params.get("tags") or {}).get("budget")
    if isinstance(budget, Mapping) and isinstance(budget.get("steps"), int):
        return int(budget["steps"])
    n = ((record or {}).get("extra") or {}).get("train_size")
    total = 0
    for ph in params.get("phases") or []:
        epochs = phase_epochs_run(record, ph.get("name"))
        epochs = ph.get("epochs") if epochs is None else epochs
        if not n or epochs is None or not ph.get("batch_size"):
            return None
        total += int(epochs) * math.ceil(int(n) / int(ph["batch_size"]))
    return total or None


def _epochs_run(record: Mapping[str, Any]) -> int:
    return epochs_run(record) or 0  # a record that times no phase counts 0, as it always did


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def scratch_references(chapter_dir: str | Path, like: Mapping[str, Any] | None, n_per_class: int | None) -> dict[str, Any]:
    """The book's other runs of ``like``'s network from random weights, with their budgets.

    Read from the records of the same profile (``chapter_dir``'s parent): chapter 3's crossover
    scratch arm at the largest size up to ``n_per_class`` (else its smallest), and the unflagged
    whole-split run under ``reference/`` that trained longest. Nothing is trained.

    Args:
        chapter_dir: The chapter's run folder (e.g. ``book/runs/cpu/01_transfer_learning``).
        like: The record of one of the chapter's from-scratch runs (its network and input size).
        n_per_class: The chapter's training images per class (None: the whole split).

    Returns:
        ``{"crossover": {...}, "whole_split": {...}}``, each only where such runs exist.
    """
    from ..runs import complete_records

    root = Path(chapter_dir).parent
    out: dict[str, Any] = {}
    by_size: dict[int, list[Mapping[str, Any]]] = {}
    for _, rec in complete_records(root / CROSSOVER_DIR, study="crossover", arm="scratch"):
        size = (rec["params"].get("tags") or {}).get("size")
        if isinstance(size, int) and same_network(rec, like) and ((rec.get("metrics") or {}).get("test") or {}).get("accuracy") is not None:
            by_size.setdefault(size, []).append(rec)
    if by_size:
        fits = [k for k in by_size if n_per_class is None or k <= n_per_class]
        size = max(fits) if fits else min(by_size)
        recs = by_size[size]
        ph = (recs[0]["params"].get("phases") or [{}])[0]
        steps = [run_steps(r) for r in recs]
        out["crossover"] = {
            "n_per_class": size, "test_accuracy": [float(r["metrics"]["test"]["accuracy"]) for r in recs],
            "epochs": [_epochs_run(r) for r in recs], "steps": max(s for s in steps if s) if any(steps) else None,
            "schedule": ph.get("schedule"), "learning_rate": ph.get("learning_rate"), "augment": recs[0]["params"].get("augment"),
            "flags": [record_warnings(r) for r in recs],
        }  # fmt: skip
    whole = [(d, r) for d, r in complete_records(root / REFERENCE_DIR)
             if same_network(r, like) and r["params"].get("n_per_class") is None and r["params"].get("train_fraction") is None
             and not record_warnings(r) and (r.get("metrics") or {}).get("test")]  # fmt: skip
    if whole:
        d, r = max(whole, key=lambda dr: _epochs_run(dr[1]))
        try:
            where = d.resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            where = f"{REFERENCE_DIR.as_posix()}/{d.name}"
        out["whole_split"] = {"test_accuracy": float(r["metrics"]["test"]["accuracy"]), "epochs": _epochs_run(r),
                              "train_images": (r.get("extra") or {}).get("train_size"), "run": where}  # fmt: skip
    return out


def scratch_reference_text(refs: Mapping[str, Any]) -> str:
    """What :func:`scratch_references` found, as a sentence with links (``""`` when nothing was found).

    Args:
        refs: :func:`scratch_references`'s result.

    Returns:
        Markdown for a chapter page (links relative to ``book/chapters``).
    """
    parts = []
    cx = refs.get("crossover")
    if cx:
        how = [f"{cx['steps']:,} steps" if cx.get("steps") else "",
               f"{cx['schedule']} learning rate from {cx['learning_rate']:g}" if cx.get("schedule") else "",
               "random flips and 90° turns" if cx.get("augment") == "flip" else ""]  # fmt: skip
        parts.append(f"chapter 3's crossover study (chapter 3, section 5; the gaps it gives per data size are in "
                     f"chapter 2, section 1) trains it on {cx['n_per_class']:,} images per class for "
                     f"{_span(cx['epochs'])} epochs ({', '.join(b for b in how if b)}): {mean_sd(cx['test_accuracy'])} test accuracy "
                     f"({_seeds(len(cx['test_accuracy']))}){flag_note(cx['flags'])}")  # fmt: skip
    ws = refs.get("whole_split")
    if ws:
        images = f" ({ws['train_images']:,} images)" if ws.get("train_images") else ""
        parts.append(f"on the whole training split{images} for {ws['epochs']} epochs it reaches {pct(ws['test_accuracy'])} "
                     f"(`{ws['run']}`, on the results page)")  # fmt: skip
    if not parts:
        return ""
    return "The book trains the same network from scratch with larger budgets: " + "; ".join(parts) + "."


def budget_shows_in_reference(refs: Mapping[str, Any], accuracy: float, n_per_class: int | None) -> bool:
    """Whether chapter 3's longer scratch run, on no more images per class, scored above ``accuracy``.

    Then a gap measured at this chapter's budget is partly that budget (the crossover run had no
    more data, only more steps and its own schedule).

    Args:
        refs: :func:`scratch_references`'s result.
        accuracy: The chapter's from-scratch test accuracy (mean over seeds).
        n_per_class: The chapter's training images per class.

    Returns:
        True if the crossover arm is there, used at most ``n_per_class`` images and every seed scored higher.
    """
    cx = refs.get("crossover")
    if not cx or (n_per_class is not None and cx["n_per_class"] > n_per_class) or is_broken(cx["flags"]):
        return False
    return min(cx["test_accuracy"]) > accuracy


def _chapter_dir(ctx: RecordContext, run: Any) -> Path | None:
    if not isinstance(run, str) or ctx.root is None:
        return None
    path = Path(run) if Path(run).is_absolute() else ctx.root / run
    return path.parent


def _references_of(ctx: RecordContext, runs: Sequence[Any]) -> tuple[Mapping[str, Any], dict[str, Any]] | None:
    """(the first run's record, :func:`scratch_references` of its network) for a group of from-scratch runs."""
    rec = ctx.record(runs[0]) if runs else None
    where = _chapter_dir(ctx, runs[0]) if runs else None
    if not rec or where is None:
        return None
    return rec, scratch_references(where, rec, (rec.get("params") or {}).get("n_per_class"))


def _reference_brief(rec: Mapping[str, Any], refs: Mapping[str, Any]) -> str:
    """The other scratch runs' results in a clause, for the Summary (the section has the details)."""
    bits = []
    if refs.get("crossover"):
        cx = refs["crossover"]
        steps = f" in {cx['steps']:,} steps" if cx.get("steps") else ""
        bits.append(f"{mean_sd(cx['test_accuracy'])}{flag_note(cx['flags'])} with {cx['n_per_class']:,} images per class{steps} "
                    "(chapter 3's crossover)")  # fmt: skip
    if refs.get("whole_split"):
        bits.append(f"{pct(refs['whole_split']['test_accuracy'])} on the whole training split")
    steps = run_steps(rec)
    return (f"{steps:,} steps here" if steps else "this budget") + "; with longer budgets it reaches " + " and ".join(bits) if bits else ""


def _budget_sentences(ctx: RecordContext, runs: Sequence[Any], accuracy: float, epochs: int | None) -> tuple[str, str]:
    """(what the other scratch runs of the book reached, the conclusion about this budget) for ``runs``."""
    found = _references_of(ctx, runs)
    if found is None:
        return "", ""
    rec, refs = found
    text = scratch_reference_text(refs)
    if not text or not budget_shows_in_reference(refs, accuracy, (rec.get("params") or {}).get("n_per_class")):
        return text, ""
    steps = run_steps(rec)
    budget = (f"the equal {epochs}-epoch budget" if epochs else "its budget") + (f" ({steps:,} steps here)" if steps else "")
    return text, (f"With no more images per class, every seed of that longer run scores above this model's mean, so part of "
                  f"the gap to the frozen features is {budget}, not only the missing ImageNet features.")  # fmt: skip


def budget_notes(compare: Any, epochs: int | None, ctx: RecordContext, where: str) -> list[str]:
    """One sentence per from-scratch model of ``compare`` whose gap is partly its equal epoch budget.

    Args:
        compare: ``compare_from_scratch``'s table (the frozen model first; ``model``, ``run``,
            ``test_accuracy``).
        epochs: The epoch budget every model had.
        ctx: Where the runs' records are.
        where: Where the details are, e.g. ``"section 1"``.

    Returns:
        Sentences (empty where the book's longer scratch runs do not score above the model).
    """
    out = []
    for m in list(dict.fromkeys(compare["model"]))[1:]:
        g = compare[compare["model"] == m]
        runs = list(g["run"]) if "run" in g else []
        _, why = _budget_sentences(ctx, runs, float(g["test_accuracy"].mean()), epochs)
        if why:
            out.append(f"{m[0].upper() + m[1:]}: {_reference_brief(*_references_of(ctx, runs))}, so its gap is partly "
                       f"the equal budget ({where}).")  # fmt: skip
    return out


def compare_paragraph(compare: Any, epochs: int, ctx: RecordContext | None = None) -> str:
    """Section 1's paragraph: each from-scratch model against frozen features, paired over seeds.

    Args:
        compare: ``compare_from_scratch``'s table (the frozen model first).
        epochs: The epoch budget every model had.
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Markdown.
    """
    ctx = working_context(ctx)
    models = list(dict.fromkeys(compare["model"]))
    ref, g_ref = models[0], compare[compare["model"] == models[0]]
    n_test = ctx.n_eval(list(compare["run"]), "test")
    text = [f"With {int(compare['train_size'].iloc[0]):,} training images and {epochs} epochs for every model, "
            f"{ref} scores **{mean_sd(g_ref['test_accuracy'])}** test accuracy (mean ± sd over {_seeds(len(g_ref))}"
            + (f", {n_test:,} test images" if n_test else "") + ")" + flag_note(group_flags(g_ref, ctx)) + "."]  # fmt: skip
    for m in models[1:]:
        g = compare[compare["model"] == m]
        text.append(f"{m[0].upper() + m[1:]}: **{mean_sd(g['test_accuracy'])}**{flag_note(group_flags(g, ctx))}; "
                    f"against the frozen features {versus(compare, 'model', m, ref, 'test_accuracy', ctx)}.")  # fmt: skip
    for m in models[1:]:
        g = compare[compare["model"] == m]
        runs = list(g["run"]) if "run" in g else []
        k = _not_converged(ctx, runs)
        name = m[0].upper() + m[1:]
        # The other from-scratch runs of the same network in the book (longer budgets) say what
        # this chapter's equal budget alone cannot: whether the gap is partly that budget.
        refs = [t for t in _budget_sentences(ctx, runs, float(g["test_accuracy"].mean()), epochs) if t]
        if k:
            text += [f"{name} was still improving when the budget ended in {k} of {len(runs)} run(s) "
                     "(flag “not converged”): with more epochs it would score higher, so its gap is partly the budget.", *refs]
            continue
        best = _best_epochs(ctx, runs)
        if not best:
            text += [f"{name}: no run is flagged as still improving when the budget ended ({len(runs)} run(s)).", *refs]
            continue
        at_last = sum(b == n for b, n in best)
        epochs_text = (", ".join(str(b) for b, _ in best[:-1]) + " and " if len(best) > 1 else "") + str(best[-1][0])
        of = f" of {best[0][1]}" if len({n for _, n in best}) == 1 else ""
        # "levelled off" only where no run peaked at its last epoch: a last-epoch best within the
        # noise is not a flag, but it is not a plateau either
        text.append(f"{name}'s best validation accuracy came at epoch {epochs_text}{of}"
                    + (f": {at_last} of {len(runs)} run(s) at the last epoch, by less than the noise of the validation "
                       "images (none is flagged “not converged”), so these runs alone do not show whether more epochs would help."
                       if at_last else ", none at the last: within this budget it had stopped improving."))
        text += refs
    mins = {m: _minutes(ctx, list(compare.loc[compare["model"] == m, "run"])) for m in models}
    if all(not math.isnan(v) for v in mins.values()):
        text.append("Training and scoring took " + ", ".join(f"{duration(60 * v)} ({m})" for m, v in mins.items())
                    + " per run on this machine (runs timed alone).")
    return " ".join(text)


def sweep_paragraph(table: Any, key: str, ref: Any, label: Any = str, ctx: RecordContext | None = None) -> str:
    """A frozen-feature sweep's paragraph: each setting against the reference, on validation, paired.

    Args:
        table: One row per run (``seed``, ``key``, ``val_accuracy``, ``run``).
        key: The swept column.
        ref: The reference setting.
        label: Setting -> its name in the text.
        ctx: Where the runs' records are.

    Returns:
        Markdown.
    """
    ctx = working_context(ctx)
    g_ref = table[table[key] == ref]
    n_val = ctx.n_eval(list(table["run"]), "val") if "run" in table else None
    out = [f"{label(ref)}: **{mean_sd(g_ref['val_accuracy'])}** validation accuracy (mean ± sd over {_seeds(len(g_ref))}"
           + (f", {n_val:,} validation images" if n_val else "") + ")" + flag_note(group_flags(g_ref, ctx)) + "."]  # fmt: skip
    for k in dict.fromkeys(table[key]):
        if k == ref:
            continue
        g = table[table[key] == k]
        out.append(f"{label(k)}: {mean_sd(g['val_accuracy'])}{flag_note(group_flags(g, ctx))}, "
                   f"{versus(table, key, k, ref, 'val_accuracy', ctx)} against {label(ref)}.")  # fmt: skip
    return " ".join(out)


def matched_training_accuracy(ctx: RecordContext, runs_a: Sequence[Any], runs_b: Sequence[Any]) -> dict[str, list[Any]] | None:
    """Training accuracy of paired runs after the same number of epochs, and the epoch each run kept.

    Heads that stop early run for different numbers of epochs, so their last-epoch training
    accuracies differ by training length as much as by fit. Per pair, the epoch compared is the
    last one both runs reached; the kept epoch is the one of lowest validation loss (early
    stopping restores its weights).

    Args:
        ctx: Where the runs' records are.
        runs_a: Run folders of arm a.
        runs_b: The runs of arm b, paired with ``runs_a`` by position (same seed).

    Returns:
        ``{"a", "b"}`` (training accuracy per pair at the compared epoch), ``"epoch"`` (that epoch
        per pair), ``"kept_a"``, ``"kept_b"`` (each run's kept epoch; empty without validation
        loss); None when a record lacks its per-epoch training accuracy.
    """
    from ..sanity import history_series

    out: dict[str, list[Any]] = {"a": [], "b": [], "epoch": [], "kept_a": [], "kept_b": []}
    for ra, rb in zip(runs_a, runs_b):
        ha, hb = ((ctx.record(r) or {}).get("history") for r in (ra, rb))
        ta, tb = history_series(ha, "accuracy"), history_series(hb, "accuracy")
        if not ta or not tb:
            return None
        m = min(len(ta), len(tb))
        out["a"].append(ta[m - 1])
        out["b"].append(tb[m - 1])
        out["epoch"].append(m)
        for key, h in (("kept_a", ha), ("kept_b", hb)):
            vl = [v if math.isfinite(v) else math.inf for v in history_series(h, "val_loss")]
            if vl:
                out[key].append(vl.index(min(vl)) + 1)
    if len(out["kept_a"]) != len(out["a"]) or len(out["kept_b"]) != len(out["b"]):
        out["kept_a"], out["kept_b"] = [], []
    return out


def head_diagnosis(heads: Any, head: str, ref: str = "linear", ctx: RecordContext | None = None) -> str:
    """Whether a head that differs from the linear one on validation over- or underfits.

    Training accuracy is compared after the same number of epochs (:func:`matched_training_accuracy`,
    read from the runs' histories), not at each run's last epoch: heads that stop early at
    different epochs would otherwise differ by training length. A head worse on validation *and*
    on its own training images after as many epochs underfits (it has not fitted the training set
    in its budget); one worse on validation but not on training overfits.

    Args:
        heads: ``sweep_heads``'s table (``seed``, ``head``, ``val_accuracy``, ``run``).
        head: The head judged.
        ref: The reference head.
        ctx: Where the runs' records are.

    Returns:
        Sentences: the training-accuracy comparison, the epochs early stopping kept, the diagnosis.
    """
    from ..stats import paired_diff

    ctx = working_context(ctx)
    va, vb, ra, rb = paired_values(heads, "head", head, ref, "val_accuracy")
    if not va:
        return ""
    fa, fb = ctx.warnings(ra), ctx.warnings(rb)
    if is_broken(fa) or is_broken(fb):
        return ""  # a chance-level or diverged head is not diagnosed
    val = paired_diff(va, vb, n_eval=ctx.n_eval(ra + rb, "val"))
    fit = matched_training_accuracy(ctx, ra, rb)
    if fit is None:  # the last-epoch column would compare training lengths, so nothing is said
        if val.verdict == "worse":
            return f"Whether the `{head}` head under- or overfits needs the runs' per-epoch training accuracy, which their records lack."
        if val.verdict == "better":
            return "The extra capacity helps on these features."
        return "On validation the extra layers make no measurable difference."
    train = paired_diff(fit["a"], fit["b"])
    said = (f"Training accuracy after the same number of epochs (epoch {_span(fit['epoch'])}, the last epoch both heads of a seed "
            f"ran; dropout active) of the `{head}` head{flag_note(fa)} against `{ref}`: {compare_text(train, fa, fb)}.")
    if fit["kept_a"]:
        said += (f" Early stopping kept each head's epoch of lowest validation loss: epoch {_span(fit['kept_a'])} for `{head}`, "
                 f"{_span(fit['kept_b'])} for `{ref}`.")  # fmt: skip
    if val.verdict == "worse" and train.verdict == "worse":
        return said + (f" It fits its own training images less well too: in this budget the `{head}` head *underfits*; "
                       "this is not overfitting.")
    if val.verdict == "worse":
        return said + f" It fits the training images at least as well but generalises worse: the `{head}` head *overfits*."
    if val.verdict == "better":
        return said + " The extra capacity helps on these features."
    return said + " On validation the extra layers make no measurable difference."
