"""Chapter 1's summary (reusing ImageNet features): what it measured and its results section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    duration,
    flag_note,
    group_flags,
    md_table,
    mean_sd,
    num,
    sizes_text,
    versus,
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
