"""Chapter 1's summary (reusing ImageNet features): what it measured and its results section."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

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
        lines.append(f"- **Reuse vs scratch** (test, {p.get('epochs')} epochs each): {models[0]} "
                     f"{mean_sd(cmp.loc[cmp['model'] == models[0], 'test_accuracy'])}; "
                     + "; ".join(f"{m} {mean_sd(cmp.loc[cmp['model'] == m, 'test_accuracy'])} "
                                 f"({versus(cmp, 'model', m, models[0], 'test_accuracy', ctx)})" for m in models[1:]) + ".")  # fmt: skip
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
        lines.append(f"- **Head depth:** `{deep}` against the linear head {versus(hd, 'head', deep, 'linear', 'val_accuracy', ctx)}. "
                     + head_diagnosis(hd, deep, ctx=ctx))  # fmt: skip
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
    """(best epoch, epochs run) of each run's validation accuracy (over all phases); empty if any record lacks it."""
    from ..sanity import history_series

    out = []
    for r in runs:
        val = history_series((ctx.record(r) or {}).get("history"), "val_accuracy")
        if len(val) < 2:
            return []
        out.append((val.index(max(val)) + 1, len(val)))
    return out


def _not_converged(ctx: RecordContext, runs: Sequence[Any]) -> int:
    return sum("not converged" in w for w in ctx.warnings(list(runs)))


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
        runs = list(compare.loc[compare["model"] == m, "run"])
        k = _not_converged(ctx, runs)
        name = m[0].upper() + m[1:]
        if k:
            text.append(f"{name} was still improving when the budget ended in {k} of {len(runs)} run(s) "
                        "(flag “not converged”): with more epochs it would score higher, so its gap is partly the budget.")
            continue
        best = _best_epochs(ctx, runs)
        if not best:
            text.append(f"{name}: no run is flagged as still improving when the budget ended ({len(runs)} run(s)).")
            continue
        at_last = sum(b == n for b, n in best)
        epochs_text = (", ".join(str(b) for b, _ in best[:-1]) + " and " if len(best) > 1 else "") + str(best[-1][0])
        of = f" of {best[0][1]}" if len({n for _, n in best}) == 1 else ""
        # "levelled off" only where no run peaked at its last epoch: a last-epoch best within the
        # noise is not a flag, but it is not a plateau either
        text.append(f"{name}'s best validation accuracy came at epoch {epochs_text}{of}"
                    + (f": {at_last} of {len(runs)} run(s) at the last epoch, by less than the noise of the validation "
                       "images (none is flagged “not converged”), so whether more epochs would help is not shown here."
                       if at_last else ", none at the last: within this budget it had stopped improving."))
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


def head_diagnosis(heads: Any, head: str, ref: str = "linear", ctx: RecordContext | None = None) -> str:
    """Whether a head that differs from the linear one on validation over- or underfits.

    A head worse on validation *and* on its own training images underfits (it has not fitted the
    training set in its budget); one worse on validation but not on training overfits.

    Args:
        heads: ``sweep_heads``'s table (``train_accuracy``: last epoch, dropout active).
        head: The head judged.
        ref: The reference head.
        ctx: Where the runs' records are.

    Returns:
        A sentence.
    """
    from ..stats import paired_diff

    ctx = working_context(ctx)
    va, vb, ra, rb = paired_values(heads, "head", head, ref, "val_accuracy")
    ta, tb, _, _ = paired_values(heads, "head", head, ref, "train_accuracy")
    if not va or not ta:
        return ""
    if is_broken(ctx.warnings(ra)) or is_broken(ctx.warnings(rb)):
        return ""  # a chance-level or diverged head is not diagnosed
    val, train = paired_diff(va, vb, n_eval=ctx.n_eval(ra + rb, "val")), paired_diff(ta, tb)
    said = f"Training accuracy (last epoch, dropout active) of the `{head}` head against `{ref}`: {compare_text(train)}."
    if val.verdict == "worse" and train.verdict == "worse":
        return said + (f" It fits its own training images less well too: in this budget the `{head}` head *underfits*; "
                       "this is not overfitting.")
    if val.verdict == "worse":
        return said + f" It fits the training images at least as well but generalises worse: the `{head}` head *overfits*."
    if val.verdict == "better":
        return said + " The extra capacity helps on these features."
    return said + " On validation the extra layers make no measurable difference."
