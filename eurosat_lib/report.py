"""The book's results chapter, generated from run records — never typed by hand.

``python -m eurosat_lib report`` (run by ``make experiments`` after the chapters) reads

* the headline runs ``book/runs/<profile>/reference/*/record.json`` (``scripts/reference_runs.py``),
* each chapter's ``book/runs/<profile>/<notebook>/summary.json`` (written by the notebook's
  Summary cell with :func:`eurosat_lib.experiments.save_summary`, listing the runs it came from),

and writes ``book/results.md`` plus its figures under ``book/images/``. Every number on that page
is formatted from one of those files, and each table names its source, so any figure can be
traced back to a run folder. A test regenerates the page and compares it with the committed one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ._io import atomic_path

#: Published anchors (Helber et al., IEEE JSTARS 2019, RGB bands, 80/20 train/test split).
PUBLISHED = (
    {"method": "ResNet-50, ImageNet-pretrained, fine-tuned", "accuracy": 0.9857,
     "setting": "RGB, 80/20 split (21,600 training images), 224 px input, ~23.5 M parameters"},
    {"method": "GoogLeNet, ImageNet-pretrained, fine-tuned", "accuracy": 0.9818,
     "setting": "RGB, 80/20 split, 224 px input, ~6.8 M parameters"},
    {"method": "Two-layer CNN trained from scratch", "accuracy": 0.8796,
     "setting": "RGB, 80/20 split, 64 px input"},
)  # fmt: skip

REFERENCE_RUNS = (
    ("mobilenetv2_035_frozen", "Frozen ImageNet base + new head"),
    ("mobilenetv2_035_finetune", "Two-phase fine-tuning (head, then all layers, BatchNorm frozen)"),
    ("mobilenetv2_035_scratch", "Same network trained from scratch"),
)


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def _num(x: Any, fmt: str = "{:,.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table from ``rows`` with ``columns`` given as (key, header)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(k, "–")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rel(path: Path, book_dir: Path) -> str:
    return os.path.relpath(path, book_dir.parent).replace(os.sep, "/")


# --------------------------------------------------------------------------------------------
# Flags and comparisons: every flagged run shows its flag beside its number, and every
# comparison the page states carries a 95 % interval and a verdict word from eurosat_lib.stats.
# --------------------------------------------------------------------------------------------

#: Flags that make a run's number unusable as a finding (it measured a broken run).
BROKEN_FLAGS = ("chance-level", "diverged")


def record_warnings(record: Mapping[str, Any] | None) -> list[str]:
    """A record's sanity flags: its ``warnings`` field, or computed from its numbers if it predates them."""
    from .sanity import flags_from_record

    if not record:
        return []
    w = record.get("warnings")
    return list(w) if isinstance(w, list) else flags_from_record(record)


def flag_note(warnings_per_run: Sequence[Sequence[str]]) -> str:
    """``" ⚠ chance-level (2/2 runs)"`` for a group of runs; ``""`` when none is flagged."""
    runs = list(warnings_per_run)
    counts: dict[str, int] = {}
    for w in runs:
        for f in w:
            counts[f] = counts.get(f, 0) + 1
    if not counts:
        return ""
    from .sanity import FLAGS

    order = [f for f in FLAGS if f in counts] + sorted(f for f in counts if f not in FLAGS)
    if len(runs) == 1:
        return " ⚠ " + ", ".join(order)
    return " ⚠ " + ", ".join(f"{f} ({counts[f]}/{len(runs)} runs)" for f in order)


def is_broken(warnings_per_run: Sequence[Sequence[str]]) -> bool:
    """True if any run of the group is chance-level or diverged: its number is not a finding."""
    return any(f in BROKEN_FLAGS for w in warnings_per_run for f in w)


def compare_text(d: Any, a_flags: Sequence[Sequence[str]] = (), b_flags: Sequence[Sequence[str]] = ()) -> str:
    """A comparison as the page states it: difference, 95 % interval, verdict word — or why none.

    A comparison with a chance-level or diverged arm is not stated; a ``worse`` verdict for an arm
    that was still improving (or ``better`` against one) is marked as a lower bound of the gap
    that more training could change.
    """
    from .stats import format_diff

    if is_broken(a_flags) or is_broken(b_flags):
        return "not compared: a flagged run (see ⚠) is not a finding"
    word = d.verdict
    text = f"{format_diff(d)}: **{word}**"
    still = lambda fl: any("not converged" in w for w in fl)  # noqa: E731
    if (word == "worse" and still(a_flags)) or (word == "better" and still(b_flags)):
        text += " (the lower arm was still improving: the gap is partly its budget)"
    return text


class _Ctx:
    """Where renderers find the run records their summaries name (paths relative to the repository)."""

    def __init__(self, root: Path | None = None, chapter_dir: Path | None = None, images_dir: Path | None = None):
        self.root, self.chapter_dir, self.images_dir = root, chapter_dir, images_dir
        self._cache: dict[str, dict[str, Any] | None] = {}

    def record(self, run: Any) -> dict[str, Any] | None:
        if not isinstance(run, str) or self.root is None:
            return None
        if run not in self._cache:
            path = Path(run) if Path(run).is_absolute() else self.root / run
            self._cache[run] = _read(path / "record.json")
        return self._cache[run]

    def warnings(self, runs: Sequence[Any]) -> list[list[str]]:
        return [record_warnings(self.record(r)) for r in runs]

    def n_eval(self, runs: Sequence[Any], split: str) -> int | None:
        """Images the runs were scored on for ``split`` (the smallest, if they differ); None if unknown."""
        ns = [((self.record(r) or {}).get("metrics") or {}).get(split, {}).get("n") for r in runs]
        ns = [n for n in ns if isinstance(n, int) and n > 0]
        return min(ns) if ns else None


def reference_section(runs_dir: Path, book_dir: Path) -> tuple[str, dict[str, Any]]:
    """The headline table (frozen / fine-tuned / scratch MobileNetV2) and its numbers."""
    rows, found = [], {}
    for name, label in REFERENCE_RUNS:
        rec_path = runs_dir / "reference" / name / "record.json"
        rec = _read(rec_path)
        if not rec or rec.get("status") != "complete":
            continue
        test = rec["metrics"]["test"]
        found[name] = rec
        rows.append({
            "method": label,
            "acc": pct(test["accuracy"]) + flag_note([record_warnings(rec)]),
            "f1": f"{test['macro_f1']:.3f}",
            "ece": f"{test['ece']:.3f}",
            "train": _num(rec["extra"]["train_size"]),
            "time": _duration(rec["timings"]["fit_seconds"])
            + (f" ({rec['params']['tags']['timing_note']})" if rec["params"].get("tags", {}).get("timing_note") else ""),
            "params": _num(rec["model_info"]["params"]["trainable"]),
            "src": f"`{_rel(rec_path, book_dir)}`",
        })  # fmt: skip
    if not rows:
        return "", found
    any_rec = next(iter(found.values()))
    p = any_rec["params"]
    env = any_rec["environment"]
    text = [
        "## Headline: one network, three ways",
        "",
        f"{p['backbone']} (α = {p['backbone_kwargs'].get('alpha', 1.0)}) at {p['image_size']} px, trained on the "
        f"full training split and scored on the full test split ({any_rec['metrics']['test']['n']:,} images). "
        f"Machine: {env['cpu_model']}, {env['cpu_count']} cores"
        + (f", GPU: {env['gpus']}." if env.get("gpus") else ", no GPU."),
        "",
        md_table(rows, [("method", "method"), ("acc", "test accuracy"), ("f1", "macro-F1"), ("ece", "ECE"),
                        ("train", "training images"), ("params", "trainable parameters (last phase)"),
                        ("time", "training time"), ("src", "record")]),  # fmt: skip
        "",
    ]
    fz, ft, sc = (found.get(n) for n, _ in REFERENCE_RUNS)
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
        ep_ft = sum(ph["epochs_run"] for ph in ft["timings"]["phases"].values())
        ep_sc = sum(ph["epochs_run"] for ph in sc["timings"]["phases"].values())
        d = independent_diff(c, nc, b, nb)
        sentence = (
            f"The same architecture trained from random weights reached **{pct(c)}** after {ep_sc} epochs "
            f"({_duration(sc['timings']['fit_seconds'])}); against the fine-tuned model "
            f"({ep_ft} epochs including the head phase, {_duration(ft['timings']['fit_seconds'])}): "
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
                         "from-scratch network trained to a plateau compares with that.")  # fmt: skip
        text.append(sentence)
    if found:
        text.append("")
        text.append("Intervals here are unpaired (the records keep confusion matrices, not per-image predictions), "
                    "so they are conservative.")  # fmt: skip
    text.append("")
    return "\n".join(text), found


def published_section(best: Mapping[str, Any] | None) -> str:
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
            f"Our best headline run reaches {pct(acc)}, {100 * (0.9857 - acc):.2f} points below their ResNet-50. "
            f"The settings differ: a {best['model_info']['params']['total'] / 1e6:.1f} M-parameter "
            f"{p['backbone']} (α = {p['backbone_kwargs'].get('alpha', 1.0)}) instead of a 23.5 M-parameter ResNet-50, "
            f"{p['image_size']} px instead of 224 px, {best['extra']['train_size']:,} training images (60 % split) "
            "instead of 21,600 (80 %), and a few CPU epochs. Their from-scratch two-layer CNN is a different, much "
            "smaller network than our from-scratch MobileNetV2."
        )
        out.append("")
    return "\n".join(out)


def chapter_sections(runs_dir: Path, book_dir: Path, renderers: Mapping[str, Callable[..., str]], images_dir: Path | None = None) -> str:
    """One section per chapter summary found, rendered by that chapter's renderer.

    Each renderer gets ``(summary, source, ctx=...)``; ``ctx`` finds the run records the summary
    names, so flags are read from the records themselves.
    """
    parts = []
    for notebook, render in renderers.items():
        path = runs_dir / notebook / "summary.json"
        summary = _read(path)
        if summary is None:
            continue
        source = f"`{_rel(path, book_dir)}`"
        ctx = _Ctx(root=book_dir.resolve().parent, chapter_dir=(runs_dir / notebook).resolve(), images_dir=images_dir or book_dir / "images")
        parts.append(render(summary, source, ctx=ctx))
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


# --------------------------------------------------------------------------------------------
# Chapter sections: each reads one chapter's summary.json (raw per-run tables) and aggregates it
# here, so mean ± sd over seeds is computed the same way for every chapter.
# --------------------------------------------------------------------------------------------


def _ok(x: Any) -> bool:
    """A real number (JSON ``null`` and NaN are missing values)."""
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def _frame(summary: Mapping[str, Any], name: str):
    import pandas as pd

    rows = (summary.get("tables") or {}).get(name)
    return pd.DataFrame(rows) if rows else None


def _mean_sd(values, digits: int = 1, scale: float = 100.0, unit: str = " %") -> str:
    """``"93.4 ± 0.5 %"`` over seeds; a lone value without ± (one seed has no spread)."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and x == x], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{scale * v[0]:.{digits}f}{unit}"
    return f"{scale * v.mean():.{digits}f} ± {scale * v.std(ddof=1):.{digits}f}{unit}"


def _grouped(df, by: str, col: str, **kw) -> list[tuple[Any, str, int]]:
    return [(k, _mean_sd(g[col], **kw), len(g)) for k, g in df.groupby(by, sort=False)]


def run_image_size(record: Mapping[str, Any] | None) -> int | None:
    """The input size a run's network actually saw (its parameters, else its model description)."""
    if not record:
        return None
    size = (record.get("params") or {}).get("image_size") or (record.get("model_info") or {}).get("image_size")
    return int(size) if isinstance(size, (int, float)) else None


def chapter_sizes(chapter_dir: Path | None) -> dict[int, int]:
    """Input size -> number of completed runs at that size, over a chapter's run folders."""
    out: dict[int, int] = {}
    if chapter_dir is None or not chapter_dir.is_dir():
        return out
    for path in sorted(chapter_dir.glob("*/record.json")):
        size = run_image_size(_read(path))
        if size:
            out[size] = out.get(size, 0) + 1
    return out


def _setting(summary: Mapping[str, Any], with_n: bool = True, ctx: _Ctx | None = None) -> str:
    """Backbone, input size(s), images per class and seeds; the sizes are read from the chapter's records."""
    p = summary.get("parameters", {})
    bits = []
    if p.get("backbone"):
        alpha = p.get("alpha")
        bits.append(f"{p['backbone']}" + (f" α = {alpha}" if alpha else ""))
    sizes = chapter_sizes(ctx.chapter_dir) if ctx is not None else {}
    if sizes:
        main = max(sizes, key=lambda k: (sizes[k], k == p.get("image_size")))
        others = ", ".join(f"{k} px in {v} of {sum(sizes.values())} runs" for k, v in sorted(sizes.items()) if k != main)
        bits.append(f"{main} px" + (f" ({others})" if others else ""))
    elif p.get("image_size"):
        bits.append(f"{p['image_size']} px")
    if with_n and p.get("n_per_class"):
        bits.append(f"{p['n_per_class']} training images per class")
    if p.get("seeds"):
        bits.append(f"{len(p['seeds'])} seed(s)")
    return ", ".join(bits)


def _chapter_link(notebook: str, title: str) -> str:
    return f"[{title}](chapters/{notebook}.ipynb)"


def _paired(df, key: str, a: Any, b: Any, col: str):
    """Values of ``col`` for groups ``key == a`` and ``key == b``, aligned by seed, and their run paths."""
    ga = df[df[key] == a].set_index("seed")
    gb = df[df[key] == b].set_index("seed")
    seeds = [s for s in ga.index if s in gb.index and _ok(ga.loc[s, col]) and _ok(gb.loc[s, col])]
    runs = lambda g: [g.loc[s, "run"] for s in seeds] if "run" in g else []  # noqa: E731
    return [float(ga.loc[s, col]) for s in seeds], [float(gb.loc[s, col]) for s in seeds], runs(ga), runs(gb)


def _vs(df, key: str, a: Any, b: Any, col: str, ctx: _Ctx) -> str:
    """``compare_text`` of group ``a`` against group ``b`` (paired by seed); ``"–"`` for the baseline itself."""
    from .stats import paired_diff

    if a == b:
        return "(reference)"
    xa, xb, ra, rb = _paired(df, key, a, b, col)
    if not xa:
        return "–"
    n_eval = ctx.n_eval(ra + rb, "test" if col.startswith("test") else "val")
    return compare_text(paired_diff(xa, xb, n_eval=n_eval), ctx.warnings(ra), ctx.warnings(rb))


def _group_flags(g, ctx: _Ctx) -> list[list[str]]:
    return ctx.warnings(list(g["run"])) if "run" in g else []


def render_data(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None) -> str:
    counts = summary.get("class_counts") or {}
    sizes = summary.get("split_sizes") or {}
    lines = ["## The data", ""]
    if counts:
        lines.append(f"{sum(counts.values()):,} images in {len(counts)} classes "
                     f"(from {min(counts.values()):,} to {max(counts.values()):,} per class); "
                     + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + f" in the fixed split. Source: {source}.")
        lines.append("")
    return "\n".join(lines)


def _sizes(ctx: _Ctx, runs: Sequence[Any], fallback: Any = None) -> str:
    """The input size(s) the runs actually trained at, read from their records (``"64 px"``)."""
    got = sorted({int(r["params"]["image_size"]) for r in (ctx.record(x) for x in runs) if r and r.get("params", {}).get("image_size")})
    if not got and _ok(fallback):
        got = [int(fallback)]
    return " / ".join(f"{v} px" for v in got) if got else "–"


def render_transfer(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None) -> str:
    ctx = ctx or _Ctx()
    p = summary.get("parameters", {})
    seeds = f"{len(p['seeds'])} seed(s)" if p.get("seeds") else ""
    who = f"{p['backbone']}" + (f" α = {p['alpha']}" if p.get("alpha") else "") if p.get("backbone") else ""
    n = f"{p['n_per_class']} training images per class" if p.get("n_per_class") else ""
    out = ["## Reusing ImageNet features (" + _chapter_link("01_transfer_learning", "chapter 1") + ")", "",
           f"Setting: {', '.join(b for b in (who, n, seeds) if b)}; each table says the input size its runs used. Source: {source}.", ""]
    cmp = _frame(summary, "compare")
    if cmp is not None:
        rows = []
        models = list(dict.fromkeys(cmp["model"]))
        ref = models[0]
        for model, g in cmp.groupby("model", sort=False):
            size = _sizes(ctx, list(g["run"]) if "run" in g else [], g["image_size"].iloc[0] if "image_size" in g else None)
            rows.append({"model": model, "px": size, "test": _mean_sd(g["test_accuracy"]) + flag_note(_group_flags(g, ctx)),
                         "f1": _mean_sd(g["test_macro_f1"], digits=3, scale=1, unit=""),
                         "vs": _vs(cmp, "model", model, ref, "test_accuracy", ctx),
                         "params": _num(g["trainable_params"].iloc[0]), "time": _duration(float(g["fit_seconds"].mean())),
                         "n": len(g)})  # fmt: skip
        out += [md_table(rows, [("model", "model (same images, same epochs)"), ("px", "input"), ("test", "test accuracy"),
                                ("f1", "macro-F1"), ("vs", f"vs {ref} (test accuracy)"), ("params", "trainable parameters"),
                                ("time", "training time"), ("n", "seeds")]), ""]  # fmt: skip
    rows = []
    for name, key, label, is_ref in (
        ("resolution", "image_size", lambda k: f"input resized to {k} px", lambda g: g["image_size"].iloc[0] == min(res_sizes)),
        ("preprocessing", "label", lambda k: f"preprocessing: {k}", lambda g: bool(g.get("correct", [False]).iloc[0]) if "correct" in g else False),
        ("heads", "head", lambda k: f"head: {k}", lambda g: g["head"].iloc[0] == "linear"),
    ):  # fmt: skip
        t = _frame(summary, name)
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
            rows.append({"what": label(k), "px": _sizes(ctx, runs, g["image_size"].iloc[0] if "image_size" in g else None),
                         "acc": _mean_sd(g["val_accuracy"]) + flag_note(_group_flags(g, ctx)),
                         "vs": _vs(t, key, k, refs[0], "val_accuracy", ctx), "ref": label(refs[0]), "n": len(g)})  # fmt: skip
    if rows:
        out += ["Frozen features, one setting changed at a time (validation accuracy, mean ± sd over seeds; each row "
                "compared with the reference row of its group):", "",
                md_table(rows, [("what", "setting"), ("px", "input"), ("acc", "validation accuracy"),
                                ("vs", "difference vs the group's reference"), ("n", "seeds")]), ""]  # fmt: skip
    return "\n".join(out)


def _gap_rows(t, runs_table, key: str, ctx: _Ctx) -> list[dict[str, Any]]:
    """Chapter 2's rows: transfer vs scratch error, the paired gap with its t interval, and a verdict."""
    from .stats import diff_from_moments, paired_diff

    rows = []
    for _, r in t.iterrows():
        per = runs_table[runs_table[key] == r[key]] if runs_table is not None and key in runs_table else None
        if per is not None and len(per):
            # transfer accuracy - scratch accuracy = -(gap): "better" means transfer helped.
            n_eval = int(per["test_images"].min()) if "test_images" in per and _ok(per["test_images"].min()) else None
            d = paired_diff(1 - per["err_transfer"].to_numpy(float), 1 - per["err_scratch"].to_numpy(float), n_eval=n_eval)
            ft = ctx.warnings(list(per["run"])) if "run" in per else []
            fs = ctx.warnings(list(per["run_scratch"])) if "run_scratch" in per else []
        else:
            d = diff_from_moments(-float(r["gap_mean"]), float(r["gap_sd"]) if _ok(r["gap_sd"]) else math.nan, int(r["seeds"]))
            ft, fs = [], []
        gap_ci = (f"{-100 * d.high:+.1f} to {-100 * d.low:+.1f}" if _ok(d.low) and _ok(d.high) else "no interval (1 seed)")
        if is_broken(ft) or is_broken(fs):
            v = "not a finding (flagged run, ⚠)"
        else:
            v = {"better": "positive transfer", "worse": "**negative transfer**"}.get(d.verdict, "no measurable difference")
            if d.verdict != "no measurable difference":
                v = f"**{v}**" if not v.startswith("**") else v
            if d.verdict == "better" and any("not converged" in w for w in fs):
                v += " (scratch still improving: gap partly budget)"
        rows.append({"k": r[key], "t": pct(r["err_transfer"], 1) + flag_note(ft), "s": pct(r["err_scratch"], 1) + flag_note(fs),
                     "gap": f"{100 * r['gap_mean']:+.1f} ± {100 * r['gap_sd']:.1f}" if _ok(r["gap_sd"]) else f"{100 * r['gap_mean']:+.1f}",
                     "ci": gap_ci,
                     "neg": f"{int(r['seeds_negative'])}/{int(r['seeds'])}", "v": v, "verdict": d.verdict,
                     "broken": is_broken(ft) or is_broken(fs)})  # fmt: skip
    return rows


def render_negative(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None) -> str:
    ctx = ctx or _Ctx()
    out = ["## Negative transfer (" + _chapter_link("02_negative_transfer", "chapter 2") + ")", "",
           f"Gap = test error with transfer − test error from scratch (same network, images and budget, paired by seed); "
           f"a gap above zero is negative transfer. *Negative* / *positive transfer* only when the 95 % interval of the "
           f"gap excludes zero. Setting: {_setting(summary, with_n=False, ctx=ctx)}. Source: {source}.", ""]
    verdicts: dict[str, list[str]] = {"negative": [], "positive": [], "none": []}
    for name, runs_name, key, header in (("gap_vs_n", "gap_runs", "n_per_class", "labelled images per class"),
                                         ("cases", "case_runs", "case", "case")):  # fmt: skip
        t = _frame(summary, name)
        if t is None:
            continue
        rows = _gap_rows(t, _frame(summary, runs_name), key, ctx)
        if name == "cases":
            out += [f"Cases built to make transfer hurt, at {summary['numbers'].get('case_n')} images per class:", ""]
            for r in rows:
                bucket = "none" if r["broken"] else {"better": "positive", "worse": "negative"}.get(r["verdict"], "none")
                verdicts[bucket].append(str(r["k"]))
        out += [md_table(rows, [("k", header), ("t", "error, transfer"), ("s", "error, scratch"), ("gap", "gap (points, mean ± sd)"),
                                ("ci", "95 % CI of the gap"), ("neg", "seeds with gap > 0"), ("v", "verdict")]), ""]  # fmt: skip
    if _frame(summary, "cases") is not None:
        fmt = lambda cs: ", ".join(f"`{c}`" for c in cs) or "none"  # noqa: E731
        out += [f"Measured negative transfer: {fmt(verdicts['negative'])}; positive: {fmt(verdicts['positive'])}; "
                f"no measurable difference: {fmt(verdicts['none'])}.", ""]
    return "\n".join(out)


def _depth_label(fraction: float) -> str:
    if fraction == 0:
        return "base frozen (head only)"
    if fraction >= 1:
        return "all blocks unfrozen"
    return f"top {fraction:.0%} of the blocks unfrozen"


def render_finetune(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None) -> str:
    from .stats import independent_diff

    ctx = ctx or _Ctx()
    n = summary.get("numbers", {})
    out = ["## Fine-tuning (" + _chapter_link("03_finetune", "chapter 3") + ")", "",
           f"Setting: {_setting(summary, ctx=ctx)}. Source: {source}.", ""]
    recipe = ctx.record(str(ctx.chapter_dir / "recipe")) if ctx.chapter_dir is not None else None
    if "recipe_test_accuracy" in n:
        nval = (recipe or {}).get("metrics", {}).get("val", {}).get("n")
        change = ""
        if nval and _ok(n.get("val_after_head")) and _ok(n.get("val_after_finetune")):
            d = independent_diff(n["val_after_finetune"], nval, n["val_after_head"], nval)
            change = f" on {nval} validation images — {compare_text(d, [record_warnings(recipe)])} —"
        out += [f"The two-phase recipe moved validation accuracy from {pct(n['val_after_head'])} (frozen base + head) to "
                f"{pct(n['val_after_finetune'])}{change} and scores **{pct(n['recipe_test_accuracy'])}**"
                f"{flag_note([record_warnings(recipe)]) if recipe else ''} on the test split "
                f"(macro-F1 {n['recipe_test_macro_f1']:.3f}) with {_num(n.get('train_size'))} training images.", ""]
    rows = []
    sweeps = (("depth", "unfreeze_fraction", _depth_label, 0.0),
              ("learning_rate", "lr_finetune", lambda k: f"fine-tuning learning rate {k:g}", None),
              ("batchnorm", "batchnorm", lambda k: f"BatchNorm {k}", None))  # fmt: skip
    for name, key, label, ref in sweeps:
        t = _frame(summary, name)
        if t is None:
            continue
        groups = list(t.groupby(key, sort=False))
        if ref is None or ref not in [k for k, _ in groups]:
            # no natural baseline: compare with the best group that is not flagged broken (chosen on validation)
            ok = [(k, g) for k, g in groups if not is_broken(_group_flags(g, ctx))]
            ref = max(ok or groups, key=lambda kg: kg[1]["val_accuracy"].mean())[0]
        for k, g in groups:
            flags = _group_flags(g, ctx)
            acc = _mean_sd(g["val_accuracy"]) + flag_note(flags)
            if is_broken(flags):
                acc += " — collapsed, not a finding"
            rows.append({"what": label(k), "acc": acc, "vs": _vs(t, key, k, ref, "val_accuracy", ctx),
                         "ref": label(ref), "n": len(g)})  # fmt: skip
    if rows:
        out += ["Each sweep row is compared with its sweep's reference: the frozen base for depth, otherwise the best "
                "unflagged setting of the sweep (which makes that comparison favour the reference).", "",
                md_table(rows, [("what", "sweep"), ("acc", "validation accuracy"), ("ref", "reference"),
                                ("vs", "difference vs reference"), ("n", "seeds")]), ""]  # fmt: skip
    return "\n".join(out)


def render_overfitting(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None, images_dir: Path | None = None) -> str:
    ctx = ctx or _Ctx(images_dir=images_dir)
    images_dir = images_dir or ctx.images_dir
    n = summary.get("numbers", {})
    out = ["## Overfitting and honest evaluation (" + _chapter_link("04_overfitting", "chapter 4") + ")", "",
           f"Setting: {_setting(summary, with_n=False, ctx=ctx)}. Source: {source}.", ""]
    gaps = _frame(summary, "gaps")
    if gaps is not None:
        rows = [{"m": r["model"], "tr": pct(r.get("train"), 1), "va": pct(r.get("val"), 1), "te": pct(r.get("test"), 1),
                 "gap": f"{100 * r['train_minus_test']:+.1f}"} for _, r in gaps.iterrows()]  # fmt: skip
        out += [f"{n.get('n_small', '')} training images per class:", "",
                md_table(rows, [("m", "model"), ("tr", "train accuracy"), ("va", "validation"), ("te", "test"), ("gap", "train − test (points)")]), ""]
    curve = _frame(summary, "fraction_curve")
    if curve is not None and images_dir is not None:
        fig_path = _data_efficiency_figure(curve, images_dir)
        rows = []
        for (method, size), g in curve.groupby(["method", "train_images"], sort=False):
            rows.append({"m": method, "n": _num(size), "acc": _mean_sd(g["val_accuracy"]), "k": len(g)})
        out += ["Data efficiency (nested stratified subsets of the training split; validation accuracy, mean ± sd over seeds):", "",
                f"![data-efficiency curve](images/{fig_path.name})", "",
                md_table(rows, [("m", "method"), ("n", "training images"), ("acc", "validation accuracy"), ("k", "seeds")]), ""]  # fmt: skip
    if "good_model_test_accuracy" in n:
        out += [f"The chapter's final model scores {pct(n['good_model_test_accuracy'])} on {_num(n.get('test_n'))} test images "
                f"(macro-F1 {n['good_model_macro_f1']:.3f}, expected calibration error {n['good_model_ece']:.3f}).", ""]
    return "\n".join(out)


def _data_efficiency_figure(curve, images_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, g in curve.groupby("method", sort=False):
        s = g.groupby("train_images")["val_accuracy"].agg(["mean", "std"]).fillna(0)
        ax.errorbar(s.index, 100 * s["mean"], yerr=100 * s["std"], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target = images_dir / "results_data_efficiency.png"
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return target


def render_backbones(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None) -> str:
    from .stats import paired_diff

    ctx = ctx or _Ctx()
    n = summary.get("numbers", {})
    out = ["## Choosing a backbone (" + _chapter_link("05_backbones", "chapter 5") + ")", "",
           f"Ranked by validation accuracy; *init* says whether ImageNet weights were available here or the candidate "
           f"was trained from scratch. A flagged candidate (⚠) is shown but never chosen or compared. Source: {source}.", ""]
    board = _frame(summary, "leaderboard")
    runs = _frame(summary, "runs")
    flags_of = {}
    if runs is not None and "run" in runs:
        flags_of = {c: ctx.warnings(list(g["run"])) for c, g in runs.groupby("candidate", sort=False)}
    if board is not None:
        rows = []
        for _, r in board.iterrows():
            fl = flags_of.get(r["candidate"], [])
            va = pct(r["val_accuracy"], 1) + (f" ± {100 * r['val_sd']:.1f}" if _ok(r.get("val_sd")) else "") + flag_note(fl)
            if is_broken(fl):
                va += " — not a finding"
            rows.append({"c": r["candidate"], "i": r["init"], "px": _num(r["image_size"]), "va": va,
                         "te": pct(r.get("test_accuracy"), 1), "p": f"{r['params_M']:.2f}",
                         "s": _num(r.get("images_per_s")), "t": _duration(r.get("fit_seconds") if _ok(r.get("fit_seconds")) else None)})  # fmt: skip
        out += [md_table(rows, [("c", "candidate"), ("i", "init"), ("px", "input px"), ("va", "validation accuracy"),
                                ("te", "test accuracy (subset)"), ("p", "parameters (M)"), ("s", "inference images/s"),
                                ("t", "training time")]), ""]  # fmt: skip
        broken = [c for c, fl in flags_of.items() if is_broken(fl)]
        for c in broken:
            init = board.set_index("candidate").loc[c, "init"] if c in set(board["candidate"]) else ""
            recs = [ctx.record(r) for r in runs[runs["candidate"] == c]["run"]] if init == "from scratch" else []
            why = "".join(_scratch_story(r) for r in recs[:1] if r)
            out += [f"**{c}**{flag_note(flags_of[c])}: left out of the choice.{why}", ""]
    if "chosen" in n:
        text = f"Chosen on validation: **{n['chosen']}**, {pct(n['chosen_test_accuracy'])} on {_num(n.get('test_n'))} test images."
        if board is not None and runs is not None and len(board) > 1:
            ok = [c for c in board["candidate"] if c != n["chosen"] and not is_broken(flags_of.get(c, []))]
            if ok:
                runner = ok[0]
                xa, xb, ra, rb = _paired(runs, "candidate", n["chosen"], runner, "val_accuracy")
                if xa:
                    d = paired_diff(xa, xb, n_eval=ctx.n_eval(ra + rb, "val"))
                    text += (f" Against the runner-up **{runner}** on validation: "
                             f"{compare_text(d, ctx.warnings(ra), ctx.warnings(rb))}.")
        out += [text, ""]
    return "\n".join(out)


def _epoch_cap(record: Mapping[str, Any]) -> int:
    """The most epochs the record's phases allowed (early stopping ended the run if it ran fewer)."""
    return sum(int(ph.get("epochs") or 0) for ph in (record.get("params") or {}).get("phases") or [])


def _scratch_story(record: Mapping[str, Any]) -> str:
    """Why a from-scratch run's number is not a finding, read from its own record (phases, history)."""
    phases = (record.get("params") or {}).get("phases") or []
    if phases and phases[0].get("unfreeze") == "frozen":
        return (" Its run trained a head on a frozen, randomly initialised backbone before any layer of the "
                "backbone could learn, so its number measures that mistake, not the architecture.")  # fmt: skip
    hist = {}
    for ph in record.get("history") or []:
        for k, v in (ph.get("history") or {}).items():
            hist.setdefault(k, []).extend(v)
    tr, va = hist.get("accuracy") or [], hist.get("val_accuracy") or []
    if not tr or not va:
        return ""
    n = (record.get("extra") or {}).get("train_size")
    vl = hist.get("val_loss") or []
    best = min(range(len(vl)), key=vl.__getitem__) if vl else None
    restored = (f", and early stopping on validation loss kept the weights of epoch {best + 1} (validation "
                f"accuracy {pct(va[best], 0)})" if best is not None and best < len(va) and len(va) < _epoch_cap(record) else "")
    return (f" It trained every layer from random weights for {len(tr)} epochs: training accuracy rose to "
            f"{pct(max(tr), 0)} while validation accuracy stayed between {pct(min(va), 0)} and {pct(max(va), 0)}"
            + (f" (on {_num(n)} training images)" if n else "")
            + restored + ". It had not yet learned features that carry to new images, so its number says "
            "nothing about the architecture.")


def render_truncation(summary: Mapping[str, Any], source: str, ctx: _Ctx | None = None) -> str:
    from .stats import diff_from_moments

    ctx = ctx or _Ctx()
    n = summary.get("numbers", {})
    out = ["## Truncating the backbone (" + _chapter_link("06_truncation", "chapter 6") + ")", "",
           f"Setting: {_setting(summary, ctx=ctx)}. Source: {source}.", ""]
    cuts = _frame(summary, "cuts")
    if cuts is not None:
        per_seed = _cut_seeds(ctx)
        full = str(n.get("full", cuts["block"].iloc[-1]))
        rows = []
        for _, r in cuts.iterrows():
            vs = "–"
            a, b = per_seed.get(str(r["block"]), {}), per_seed.get(full, {})
            seeds = sorted(set(a) & set(b))
            if str(r["block"]) == full:
                vs = "(reference)"
            elif seeds:
                from .stats import paired_diff

                d = paired_diff([a[k][0] for k in seeds], [b[k][0] for k in seeds], n_eval=min((a[k][2] for k in seeds if a[k][2]), default=None))
                vs = compare_text(d, [a[k][1] for k in seeds], [b[k][1] for k in seeds])
            elif _ok(r.get("drop")):
                vs = f"{-100 * r['drop']:+.1f} points (per-seed values not found: no interval)"
            rows.append({"b": f"`{r['block']}`", "p": pct(r.get("params_share"), 1), "va": pct(r.get("val_mean"), 1),
                         "d": vs, "s": f"{r['speedup']:.2f}×" if _ok(r.get("speedup")) else "–"})  # fmt: skip
        out += [md_table(rows, [("b", "cut after"), ("p", "share of parameters"), ("va", "validation accuracy (frozen, mean)"),
                                ("d", "difference vs full backbone (paired by seed)"), ("s", "inference speed-up")]), ""]  # fmt: skip
    if "chosen_cut" in n:
        out += [f"Shallowest cut within the chapter's tolerance of {100 * n.get('tolerance', float('nan')):.1f} points: "
                f"`{n['chosen_cut']}` (full backbone: `{n['full']}`).", ""]
        full_runs = _cut_seeds(ctx).get(str(n.get("full")), {})
        nv = min((v[2] for v in full_runs.values() if v[2]), default=None)
        if nv and _ok(n.get("tolerance")) and cuts is not None:
            from .stats import binomial_se

            p_full = float(cuts.set_index("block").loc[str(n["full"]), "val_mean"]) if str(n["full"]) in set(cuts["block"]) else None
            se = binomial_se(p_full, nv) if _ok(p_full) else None
            if se is not None and n["tolerance"] < se:
                out += [f"That tolerance is below one binomial standard error of the full backbone's validation accuracy "
                        f"({100 * se:.1f} points on {nv:,} images): cuts this close cannot be told apart here.", ""]
    return "\n".join(out)


def _cut_seeds(ctx: _Ctx) -> dict[str, dict[int, tuple[float, list[str], int | None]]]:
    """Chapter 6's frozen-cut runs (``cut-<block>_seed<k>``): block -> seed -> (val accuracy, flags, val images)."""
    import re

    out: dict[str, dict[int, tuple[float, list[str], int | None]]] = {}
    if ctx.chapter_dir is None or not ctx.chapter_dir.is_dir():
        return out
    for d in sorted(ctx.chapter_dir.iterdir()):
        m = re.fullmatch(r"cut-(.+)_seed(\d+)", d.name)
        rec = _read(d / "record.json") if m else None
        if rec and rec.get("status") == "complete" and _ok((rec.get("metrics") or {}).get("val", {}).get("accuracy")):
            val = rec["metrics"]["val"]
            out.setdefault(m.group(1), {})[int(m.group(2))] = (float(val["accuracy"]), record_warnings(rec), int(val.get("n") or 0) or None)
    return out


#: Chapter renderers: notebook name -> function(summary, source) -> Markdown.
RENDERERS: dict[str, Callable[..., str]] = {
    "01_transfer_learning": render_transfer,
    "02_negative_transfer": render_negative,
    "03_finetune": render_finetune,
    "04_overfitting": render_overfitting,
    "05_backbones": render_backbones,
    "06_truncation": render_truncation,
}


def build_results_page(
    book_dir: str | os.PathLike = "book",
    profile: str = "cpu",
    out: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``book/results.md`` (or ``out``) from the run records of ``profile``.

    Figures go to ``images_dir`` (default ``book/images``), linked as ``images/<name>``.

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
    data_path = runs_dir / "00_data" / "data_summary.json"
    data_summary = _read(data_path)
    page = [
        "# Results",
        "",
        f"*Generated by `python -m eurosat_lib report` from the run records in `book/runs/{profile}/` "
        "(profile `" + profile + "`); every number below is read from a record named next to it. "
        "Do not edit by hand — re-run `make experiments`.*",
        "",
        render_data(data_summary, f"`{_rel(data_path, book_dir)}`") if data_summary else "",
        ref_text,
        published_section(best),
        chapter_sections(runs_dir, book_dir, RENDERERS, Path(images_dir) if images_dir else None),
    ]
    with atomic_path(target, suffix=".md") as tmp:
        tmp.write_text("\n".join(page).rstrip() + "\n")
    return target
