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
            "acc": pct(test["accuracy"]),
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
    if fz and ft:
        a, b = fz["metrics"]["test"]["accuracy"], ft["metrics"]["test"]["accuracy"]
        text.append(
            f"Fine-tuning the whole network after the head phase moved test accuracy from **{pct(a)}** (frozen "
            f"base) to **{pct(b)}** ({100 * (b - a):+.2f} points), i.e. it removed "
            f"{100 * ((1 - a) - (1 - b)) / (1 - a):.0f} % of the frozen model's errors."
        )
    if ft and sc:
        b, c = ft["metrics"]["test"]["accuracy"], sc["metrics"]["test"]["accuracy"]
        ep_ft = sum(ph["epochs_run"] for ph in ft["timings"]["phases"].values())
        ep_sc = sum(ph["epochs_run"] for ph in sc["timings"]["phases"].values())
        sentence = (
            f"The same architecture trained from random weights reached **{pct(c)}** after {ep_sc} epochs "
            f"({_duration(sc['timings']['fit_seconds'])}), {100 * (b - c):.2f} points below the fine-tuned model "
            f"({ep_ft} epochs including the head phase, {_duration(ft['timings']['fit_seconds'])})."
        )
        # Say whether the scratch run had converged: a still-rising curve means the gap is partly budget.
        val = [v for ph in sc.get("history", []) for v in ph.get("history", {}).get("val_accuracy", [])]
        if len(val) >= 2 and val[-1] > val[-2]:
            sentence += (
                f" Its validation accuracy was still rising ({pct(val[-2])} → {pct(val[-1])} in the last epoch), "
                "so part of that gap is the short training budget, not only the missing ImageNet features."
            )
        text.append(sentence)
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
    """One section per chapter summary found, rendered by that chapter's renderer."""
    parts = []
    for notebook, render in renderers.items():
        path = runs_dir / notebook / "summary.json"
        summary = _read(path)
        if summary is None:
            continue
        source = f"`{_rel(path, book_dir)}`"
        if render is render_overfitting:
            parts.append(render(summary, source, images_dir=images_dir or book_dir / "images"))
        else:
            parts.append(render(summary, source))
    return "\n".join(parts)


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


def _setting(summary: Mapping[str, Any], with_n: bool = True) -> str:
    p = summary.get("parameters", {})
    bits = []
    if p.get("backbone"):
        alpha = p.get("alpha")
        bits.append(f"{p['backbone']}" + (f" α = {alpha}" if alpha else ""))
    if p.get("image_size"):
        bits.append(f"{p['image_size']} px")
    if with_n and p.get("n_per_class"):
        bits.append(f"{p['n_per_class']} training images per class")
    if p.get("seeds"):
        bits.append(f"{len(p['seeds'])} seed(s)")
    return ", ".join(bits)


def _chapter_link(notebook: str, title: str) -> str:
    return f"[{title}](chapters/{notebook}.ipynb)"


def render_data(summary: Mapping[str, Any], source: str) -> str:
    counts = summary.get("class_counts") or {}
    sizes = summary.get("split_sizes") or {}
    lines = ["## The data", ""]
    if counts:
        lines.append(f"{sum(counts.values()):,} images in {len(counts)} classes "
                     f"(from {min(counts.values()):,} to {max(counts.values()):,} per class); "
                     + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + f" in the fixed split. Source: {source}.")
        lines.append("")
    return "\n".join(lines)


def render_transfer(summary: Mapping[str, Any], source: str) -> str:
    out = ["## Reusing ImageNet features (" + _chapter_link("01_transfer_learning", "chapter 1") + ")", "",
           f"Setting: {_setting(summary)}. Source: {source}.", ""]
    cmp = _frame(summary, "compare")
    if cmp is not None:
        rows = []
        for model, g in cmp.groupby("model", sort=False):
            rows.append({"model": model, "test": _mean_sd(g["test_accuracy"]), "f1": _mean_sd(g["test_macro_f1"], digits=3, scale=1, unit=""),
                         "params": _num(g["trainable_params"].iloc[0]), "time": _duration(float(g["fit_seconds"].mean())),
                         "n": len(g)})  # fmt: skip
        out += [md_table(rows, [("model", "model (same images, same epochs)"), ("test", "test accuracy"), ("f1", "macro-F1"),
                                ("params", "trainable parameters"), ("time", "training time"), ("n", "seeds")]), ""]  # fmt: skip
    res = _frame(summary, "resolution")
    pre = _frame(summary, "preprocessing")
    heads = _frame(summary, "heads")
    rows = []
    if res is not None:
        rows += [{"what": f"input resized to {k} px", "acc": v, "n": n} for k, v, n in _grouped(res, "image_size", "val_accuracy")]
    if pre is not None:
        label = "label" if "label" in pre else "mode"
        rows += [{"what": f"preprocessing: {k}", "acc": v, "n": n} for k, v, n in _grouped(pre, label, "val_accuracy")]
    if heads is not None:
        rows += [{"what": f"head: {k}", "acc": v, "n": n} for k, v, n in _grouped(heads, "head", "val_accuracy")]
    if rows:
        out += ["Frozen features, one setting changed at a time (validation accuracy, mean ± sd over seeds):", "",
                md_table(rows, [("what", "setting"), ("acc", "validation accuracy"), ("n", "seeds")]), ""]
    return "\n".join(out)


def render_negative(summary: Mapping[str, Any], source: str) -> str:
    out = ["## Negative transfer (" + _chapter_link("02_negative_transfer", "chapter 2") + ")", "",
           f"Gap = test error with transfer − test error from scratch (same network, images and budget); "
           f"a gap above zero is negative transfer. Verdict: *negative*/*positive* when the mean is more than "
           f"one sd (over seeds) away from zero, else *inconclusive*. Setting: {_setting(summary, with_n=False)}. Source: {source}.", ""]
    for name, key, header in (("gap_vs_n", "n_per_class", "labelled images per class"), ("cases", "case", "case")):
        t = _frame(summary, name)
        if t is None:
            continue
        rows = [{"k": r[key], "t": pct(r["err_transfer"], 1), "s": pct(r["err_scratch"], 1),
                 "gap": f"{100 * r['gap_mean']:+.1f} ± {100 * r['gap_sd']:.1f}" if _ok(r["gap_sd"]) else f"{100 * r['gap_mean']:+.1f}",
                 "neg": f"{int(r['seeds_negative'])}/{int(r['seeds'])}", "v": f"**{r['verdict']}**"} for _, r in t.iterrows()]  # fmt: skip
        if name == "cases":
            out += [f"Cases built to make transfer hurt, at {summary['numbers'].get('case_n')} images per class:", ""]
        out += [md_table(rows, [("k", header), ("t", "error, transfer"), ("s", "error, scratch"), ("gap", "gap (points)"),
                                ("neg", "seeds with gap > 0"), ("v", "verdict")]), ""]  # fmt: skip
    n = summary.get("numbers", {})
    if n.get("negative_cases") is not None:
        out += [f"Negative in this run: {', '.join(f'`{c}`' for c in n['negative_cases']) or 'none'}; "
                f"positive: {', '.join(f'`{c}`' for c in n.get('positive_cases', [])) or 'none'}.", ""]
    return "\n".join(out)


def render_finetune(summary: Mapping[str, Any], source: str) -> str:
    n = summary.get("numbers", {})
    out = ["## Fine-tuning (" + _chapter_link("03_finetune", "chapter 3") + ")", "",
           f"Setting: {_setting(summary)}. Source: {source}.", ""]
    if "recipe_test_accuracy" in n:
        out += [f"The two-phase recipe moved validation accuracy from {pct(n['val_after_head'])} (frozen base + head) to "
                f"{pct(n['val_after_finetune'])} and scores **{pct(n['recipe_test_accuracy'])}** on the test split "
                f"(macro-F1 {n['recipe_test_macro_f1']:.3f}) with {_num(n.get('train_size'))} training images.", ""]
    rows = []
    depth, lrs, bn = _frame(summary, "depth"), _frame(summary, "learning_rate"), _frame(summary, "batchnorm")
    if depth is not None:
        rows += [{"what": f"unfreeze top {k:g} of the blocks", "acc": v, "n": c} for k, v, c in _grouped(depth, "unfreeze_fraction", "val_accuracy")]
    if lrs is not None:
        rows += [{"what": f"fine-tuning learning rate {k:g}", "acc": v, "n": c} for k, v, c in _grouped(lrs, "lr_finetune", "val_accuracy")]
    if bn is not None:
        rows += [{"what": f"BatchNorm {k}", "acc": v, "n": c} for k, v, c in _grouped(bn, "batchnorm", "val_accuracy")]
    if rows:
        out += [md_table(rows, [("what", "sweep"), ("acc", "validation accuracy"), ("n", "seeds")]), ""]
    return "\n".join(out)


def render_overfitting(summary: Mapping[str, Any], source: str, images_dir: Path | None = None) -> str:
    n = summary.get("numbers", {})
    out = ["## Overfitting and honest evaluation (" + _chapter_link("04_overfitting", "chapter 4") + ")", "",
           f"Setting: {_setting(summary, with_n=False)}. Source: {source}.", ""]
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


def render_backbones(summary: Mapping[str, Any], source: str) -> str:
    n = summary.get("numbers", {})
    out = ["## Choosing a backbone (" + _chapter_link("05_backbones", "chapter 5") + ")", "",
           f"Ranked by validation accuracy; *init* says whether ImageNet weights were available here or the candidate "
           f"was trained from scratch. Source: {source}.", ""]
    board = _frame(summary, "leaderboard")
    if board is not None:
        rows = [{"c": r["candidate"], "i": r["init"], "px": _num(r["image_size"]),
                 "va": pct(r["val_accuracy"], 1) + (f" ± {100 * r['val_sd']:.1f}" if _ok(r.get("val_sd")) else ""),
                 "te": pct(r.get("test_accuracy"), 1), "p": f"{r['params_M']:.2f}",
                 "s": _num(r.get("images_per_s")), "t": _duration(r.get("fit_seconds") if _ok(r.get("fit_seconds")) else None)} for _, r in board.iterrows()]  # fmt: skip
        out += [md_table(rows, [("c", "candidate"), ("i", "init"), ("px", "input px"), ("va", "validation accuracy"),
                                ("te", "test accuracy (subset)"), ("p", "parameters (M)"), ("s", "inference images/s"),
                                ("t", "training time")]), ""]  # fmt: skip
    if "chosen" in n:
        out += [f"Chosen on validation: **{n['chosen']}**, {pct(n['chosen_test_accuracy'])} on {_num(n.get('test_n'))} test images.", ""]
    return "\n".join(out)


def render_truncation(summary: Mapping[str, Any], source: str) -> str:
    n = summary.get("numbers", {})
    out = ["## Truncating the backbone (" + _chapter_link("06_truncation", "chapter 6") + ")", "",
           f"Setting: {_setting(summary)}. Source: {source}.", ""]
    cuts = _frame(summary, "cuts")
    if cuts is not None:
        rows = [{"b": f"`{r['block']}`", "p": pct(r.get("params_share"), 1), "va": pct(r.get("val_mean"), 1),
                 "d": f"{-100 * r['drop']:+.1f}" if _ok(r.get("drop")) else "–",
                 "s": f"{r['speedup']:.2f}×" if _ok(r.get("speedup")) else "–"}
                for _, r in cuts.iterrows()]  # fmt: skip
        out += [md_table(rows, [("b", "cut after"), ("p", "share of parameters"), ("va", "validation accuracy (frozen, mean)"),
                                ("d", "change vs full backbone (points)"), ("s", "inference speed-up")]), ""]  # fmt: skip
    if "chosen_cut" in n:
        out += [f"Shallowest cut within tolerance: `{n['chosen_cut']}` (full backbone: `{n['full']}`).", ""]
    return "\n".join(out)


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
