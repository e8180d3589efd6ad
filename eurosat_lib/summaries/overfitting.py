"""Chapter 4's summary (overfitting and honest evaluation): gaps, the data-efficiency curve, the final model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .._io import atomic_path
from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    compare_text,
    md_table,
    mean_sd,
    num,
    pct,
    setting_text,
    versus,
    working_context,
)


@dataclass(frozen=True)
class OverfittingSummary(ChapterSummary):
    """Chapter 4: the train-test gaps, and the chapter's final ("good") model on the test split.

    Attributes:
        good_model_test_accuracy: The final model's test accuracy.
        good_model_macro_f1: Its test macro-F1.
        good_model_ece: Its expected calibration error.
        test_n: Test images it was scored on.
        n_small: Training images per class of the overfitting pair.
        scratch_train_accuracy: The from-scratch model's training accuracy (mean over seeds).
        scratch_test_accuracy: Its test accuracy.
        frozen_test_accuracy: The frozen ImageNet base's test accuracy.
        good_model_train_accuracy: The final model's accuracy on a sample of its own training images.
        weakest_class: The class with the final model's lowest test recall.
        weakest_class_recall: That recall.
    """

    NOTEBOOK = "04_overfitting"

    good_model_test_accuracy: float | None = None
    good_model_macro_f1: float | None = None
    good_model_ece: float | None = None
    test_n: int | None = None
    n_small: int | None = None
    scratch_train_accuracy: float | None = None
    scratch_test_accuracy: float | None = None
    frozen_test_accuracy: float | None = None
    good_model_train_accuracy: float | None = None
    weakest_class: str | None = None
    weakest_class_recall: float | None = None

    def notebook_markdown(self, ctx: RecordContext | None = None) -> str:
        """The chapter's own Summary cell: the gap, more data, regularisation, the good model, leaks, test-set spread.

        Read from the summary's fields, parameters and tables. A summary written before the final
        model's training accuracy and weakest class were kept shows "–" for them; one whose
        regularisation table names each run's folder compares every configuration with none, paired
        by seed with its interval (an older one kept the best mean test accuracy it was executed with).

        Args:
            ctx: Where the runs' records are (default: paths relative to the working directory).

        Returns:
            Markdown, as the template's Summary cell displays it.
        """
        P = self.parameters
        opt = lambda x: "–" if x is None else f"{x:.1%}"  # noqa: E731
        gaps = self.numeric_frame("gaps").set_index("model")
        sc, fr = gaps.loc["from scratch"], gaps.loc["frozen ImageNet base"]
        curve = self.numeric_frame("fraction_curve")
        fro = curve[curve.method == "frozen features + head"].groupby("train_images")["val_accuracy"].agg(["mean", "std"])
        first, last = fro.iloc[0], fro.iloc[-1]
        reg = self.numeric_frame("regularisation")
        m = reg.groupby("config", sort=False)["test_accuracy"].agg(["mean", "std"])
        base = m.loc["none"]
        if "run" in reg:  # chosen on validation, paired by seed (the chapter that has each run's folder)
            reg_text = regularisation_effects(reg, working_context(ctx))
        else:
            reg_text = (f"best configuration by mean test accuracy: **{m['mean'].idxmax()}**\n"
                        f"  ({m['mean'].max():.1%}) vs {base['mean']:.1%} with none.")
        sd_word = "fell" if last["std"] < first["std"] else "did not fall"
        small = self.numeric_frame("selection_leak").iloc[0]
        spread = self.numeric_frame("test_spread").set_index("scenario")
        worst = spread["off_by_more_than_2_points"].idxmax()
        honest = self.good_model_test_accuracy
        curve_seeds = f", {len(P['curve_seeds'])} for the heads on cached features" if P.get("curve_seeds") else ""
        return f'''
*Numbers from this run ({self.profile} profile, {P["backbone"]}, {P["image_size"]} px, {len(P["seeds"])} seed(s){curve_seeds}).*

- **Overfitting:** from scratch, {P["n_small"]} images per class gave {sc.train:.1%} training but {sc.test:.1%} test accuracy
  (gap {100 * sc.train_minus_test:.1f} points); the frozen ImageNet base gave {fr.test:.1%} test accuracy with a gap of
  {100 * fr.train_minus_test:.1f} points.
- **More data:** validation accuracy of frozen features + head rose from {first['mean']:.1%} ({fro.index[0]:,} images) to
  {last['mean']:.1%} ({fro.index[-1]:,} images); seed-to-seed sd {sd_word} from {first['std']:.1%} to {last['std']:.1%}.
- **Regularisation at {P["reg_n"]} images per class:** {reg_text}
- **A good model:** {honest:.1%} on {self.test_n:,} test images, weakest class {self.weakest_class or "–"} ({opt(self.weakest_class_recall)} recall), ECE {self.good_model_ece:.3f}.
- **Leaks:** scored on its own training images the good model would claim {opt(self.good_model_train_accuracy)} (honest: {honest:.1%});
  the scratch model {self.scratch_train_accuracy:.1%} (honest: {self.scratch_test_accuracy:.1%}). Choosing the best of {P["n_configs"]} heads on a
  {int(small.test_images)}-image test set reports {small.leaky_reported:.1%}, but that head delivers {small.leaky_fresh:.1%}
  on fresh data ({100 * small.optimism:+.1f} points of optimism); choosing on validation reports {small.honest_reported:.1%}
  and delivers {small.honest_fresh:.1%}.
- **Unrepresentative test sets:** {worst} test sets missed the honest {honest:.1%} by more than 2 points in
  {spread.loc[worst, 'off_by_more_than_2_points']:.0%} of draws (5th–95th percentile {spread.loc[worst, 'p5']:.1%}–{spread.loc[worst, 'p95']:.1%}).
'''

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        """Chapter 4's section: the gaps, the data-efficiency curve (a figure), regularisation against none
        (paired by seed, on test) and the final model."""
        images_dir = ctx.images_dir
        out = ["## Overfitting and honest evaluation (" + chapter_link(self.NOTEBOOK, "chapter 4") + ")", "",
               f"Setting: {setting_text(self.parameters, with_n=False, ctx=ctx)}. Source: {source}.", ""]
        gaps = self.frame("gaps")
        if gaps is not None:
            rows = [{"m": r["model"], "tr": pct(r.get("train"), 1), "va": pct(r.get("val"), 1), "te": pct(r.get("test"), 1),
                     "gap": f"{100 * r['train_minus_test']:+.1f}"} for _, r in gaps.iterrows()]  # fmt: skip
            out += [f"{self.n_small if self.n_small is not None else ''} training images per class:", "",
                    md_table(rows, [("m", "model"), ("tr", "train accuracy"), ("va", "validation"), ("te", "test"),
                                    ("gap", "train − test (points)")]), ""]  # fmt: skip
        curve = self.frame("fraction_curve")
        if curve is not None and images_dir is not None:
            fig_path = data_efficiency_figure(curve, Path(images_dir))
            rows = []
            for (method, size), g in curve.groupby(["method", "train_images"], sort=False):
                rows.append({"m": method, "n": num(size), "acc": mean_sd(g["val_accuracy"]), "k": len(g)})
            out += ["Data efficiency (nested stratified subsets of the training split; validation accuracy, mean ± sd over seeds):", "",
                    f"![data-efficiency curve](images/{fig_path.name})", "",
                    md_table(rows, [("m", "method"), ("n", "training images"), ("acc", "validation accuracy"), ("k", "seeds")]), ""]  # fmt: skip
        reg = self.numeric_frame("regularisation")
        if reg is not None and "run" in reg and "none" in set(reg["config"]):
            out += [f"Regularisation at {self.parameters['reg_n']} training images per class, each configuration "
                    + regularisation_effects(reg, ctx), ""]  # fmt: skip
        if self.good_model_test_accuracy is not None:
            out += [f"The chapter's final model scores {pct(self.good_model_test_accuracy)} on {num(self.test_n)} test images "
                    f"(macro-F1 {self.good_model_macro_f1:.3f}, expected calibration error {self.good_model_ece:.3f}).", ""]  # fmt: skip
        return out


def data_efficiency_figure(curve: Any, images_dir: Path) -> Path:
    """Draw validation accuracy against training images per method (mean ± sd over seeds).

    Args:
        curve: One row per method, training size and seed (``method``, ``train_images``, ``val_accuracy``).
        images_dir: Where the figure is written (created if missing).

    Returns:
        The PNG's path, ``results_data_efficiency.png``.
    """
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


def summarize(P: Any, good_model: Mapping[str, Any], gaps: Any, fraction_curve: Any, regularisation: Any,
              selection_leak: Any, test_spread: Any, good_model_train: Mapping[str, Any] | None = None) -> OverfittingSummary:  # fmt: skip
    """Chapter 4's summary from its studies' tables and the final model's test metrics.

    Args:
        P: The chapter's parameters (``n_small``).
        good_model: ``evaluate_predictions`` of the final model on the test split.
        gaps: ``gap_table`` (indexed by model: ``from scratch``, ``frozen ImageNet base``).
        fraction_curve: ``fraction_curve``'s table.
        regularisation: ``regularisation_study``'s table.
        selection_leak: ``selection_leak``'s table.
        test_spread: ``spread_table`` (indexed by scenario).
        good_model_train: ``good_model_train_metrics``: the final model on its own training images (optional).

    Returns:
        The typed summary, with the five tables.
    """
    sc, fr = gaps.loc["from scratch"], gaps.loc["frozen ImageNet base"]
    per_class = good_model.get("per_class") or {}
    # the first class with the lowest recall (dict order: the class order), as idxmin picks it
    weakest = min(per_class, key=lambda c: per_class[c]["recall"]) if per_class else None
    return OverfittingSummary.from_study(
        P, {"gaps": gaps.reset_index(), "fraction_curve": fraction_curve, "regularisation": regularisation,
            "selection_leak": selection_leak, "test_spread": test_spread.reset_index()},
        good_model_test_accuracy=float(good_model["accuracy"]), good_model_macro_f1=float(good_model["macro_f1"]),
        good_model_ece=float(good_model["ece"]), test_n=int(good_model["n"]), n_small=int(P.n_small),
        scratch_train_accuracy=float(sc.train), scratch_test_accuracy=float(sc.test), frozen_test_accuracy=float(fr.test),
        good_model_train_accuracy=None if good_model_train is None else float(good_model_train["accuracy"]),
        weakest_class=weakest, weakest_class_recall=None if weakest is None else float(per_class[weakest]["recall"]),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The chapter's own paragraphs: every comparison paired by seed, with its 95 % interval
# --------------------------------------------------------------------------------------------


def regularisation_effects(reg: Any, ctx: RecordContext | None = None) -> str:
    """Each regularisation configuration against none on the test split, paired by seed.

    Test, not validation: early stopping picks its epoch on validation, which flatters its
    validation score; nothing is chosen on the test split here, so it measures each
    configuration's effect without choosing one.

    Args:
        reg: ``regularisation_study``'s table (``config``, ``seed``, ``test_accuracy``, ``run``).
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Markdown: one clause per configuration with its difference, 95 % interval and verdict.
    """
    ctx = working_context(ctx)
    configs = [c for c in dict.fromkeys(reg["config"]) if c != "none"]
    return ("against none on the test split, paired by seed (nothing is chosen on it): "
            + "; ".join(f"**{c}** {versus(reg, 'config', c, 'none', 'test_accuracy', ctx)}" for c in configs) + ".")


def regularisation_paragraph(reg: Any, ctx: RecordContext | None = None) -> str:
    """Section 3's paragraph: no regularisation's numbers, then every configuration against it on test.

    Args:
        reg: ``regularisation_study``'s table (with ``run``).
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Markdown.
    """
    m = reg.groupby("config", sort=False)[["test_accuracy", "train_minus_test"]].mean()
    return (f"No regularisation: {m.loc['none', 'test_accuracy']:.1%} test accuracy (train–test gap "
            f"{100 * m.loc['none', 'train_minus_test']:.1f} points). Each configuration " + regularisation_effects(reg, ctx))


def pair_paragraph(pair: Any, n_small: int, ctx: RecordContext | None = None) -> str:
    """Section 1's paragraph: the from-scratch and frozen models' fit and generalisation, paired by seed.

    Args:
        pair: ``overfit_pair``'s long table (``model``, ``seed``, ``split``, ``accuracy``, ``trainable``, ``run``).
        n_small: Training images per class.
        ctx: Where the runs' records are (default: paths relative to the working directory).

    Returns:
        Markdown: both models' numbers, the paired test difference and the paired difference of
        their train–test gaps; "generalises better and overfits less" only where both intervals say so.
    """
    from ..stats import paired_diff

    ctx = working_context(ctx)
    sc_m, fr_m = "from scratch", "frozen ImageNet base"
    wide = pair.pivot_table(index=["model", "seed"], columns="split", values="accuracy")
    wide["gap"] = wide["train"] - wide["test"]
    mean = wide.groupby(level="model").mean()
    sc, fr = mean.loc[sc_m], mean.loc[fr_m]
    trainable = pair.groupby("model")["trainable"].first()
    test = pair[pair["split"] == "test"].rename(columns={"accuracy": "test_accuracy"})
    seeds = sorted(set(wide.loc[sc_m].index) & set(wide.loc[fr_m].index))
    gap_d = paired_diff(wide.loc[fr_m].loc[seeds, "gap"].to_numpy(), wide.loc[sc_m].loc[seeds, "gap"].to_numpy())
    test_text = versus(test, "model", fr_m, sc_m, "test_accuracy", ctx)
    runs = {m: list(pair.loc[pair["model"] == m, "run"].drop_duplicates()) for m in (sc_m, fr_m)}
    # A gap is better when smaller: better/worse (higher is better) would read backwards here.
    gap_text = compare_text(gap_d, ctx.warnings(runs[fr_m]), ctx.warnings(runs[sc_m]),
                            words={"worse": "smaller", "better": "larger"})  # fmt: skip
    better = "**better**" in test_text
    overfits_less = gap_d.verdict == "worse"  # a lower gap: frozen minus scratch below zero
    verdict = ("The pretrained model generalises better *and* overfits less: both intervals exclude zero."
               if better and overfits_less else
               "Measured here, the intervals do not show that the frozen base both generalises better and overfits less.")
    return (f"From scratch, {int(trainable[sc_m]):,} trainable weights fitted {n_small * 10:,} images to **{sc['train']:.1%}** "
            f"training accuracy but reached **{sc['test']:.1%}** on test: a train–test gap of {100 * sc['gap']:.1f} points. "
            f"The frozen base trains only {int(trainable[fr_m]):,} head weights; it reached {fr['train']:.1%} on its training "
            f"images and **{fr['test']:.1%}** on test (gap {100 * fr['gap']:.1f} points). Frozen minus scratch, paired by "
            f"seed: test accuracy {test_text}; train–test gap {gap_text}. {verdict}")
