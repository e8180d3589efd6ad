"""Chapter 4's summary (overfitting and honest evaluation): gaps, the data-efficiency curve, the final model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .._io import atomic_path
from ..runs import phase_epochs_run
from .base import ChapterSummary
from .render import (
    RecordContext,
    chapter_link,
    compare_text,
    flag_note,
    md_table,
    mean_sd,
    num,
    pct,
    record_warnings,
    setting_text,
    versus,
    working_context,
)
from .transfer import CROSSOVER_DIR, budget_shows_in_reference, run_steps, scratch_reference_text, scratch_references


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
        ctx = working_context(ctx)
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
            reg_text = regularisation_effects(reg, ctx)
        else:
            reg_text = (f"best configuration by mean test accuracy: **{m['mean'].idxmax()}**\n"
                        f"  ({m['mean'].max():.1%}) vs {base['mean']:.1%} with none.")
        sd_word = "fell" if last["std"] < first["std"] else "did not fall"
        small = self.numeric_frame("selection_leak").iloc[0]
        spread = self.numeric_frame("test_spread").set_index("scenario")
        worst = spread["off_by_more_than_2_points"].idxmax()
        honest = self.good_model_test_accuracy
        scratch_note, good_note = self._budget_notes(reg, ctx)
        curve_seeds = f", {len(P['curve_seeds'])} for the heads on cached features" if P.get("curve_seeds") else ""
        return f'''
*Numbers from this run ({self.profile} profile, {P["backbone"]}, {P["image_size"]} px, {len(P["seeds"])} seed(s){curve_seeds}).*

- **Overfitting:** from scratch, {P["n_small"]} images per class gave {sc.train:.1%} training but {sc.test:.1%} test accuracy
  (gap {100 * sc.train_minus_test:.1f} points); the frozen ImageNet base gave {fr.test:.1%} test accuracy with a gap of
  {100 * fr.train_minus_test:.1f} points.{scratch_note}
- **More data:** validation accuracy of frozen features + head rose from {first['mean']:.1%} ({fro.index[0]:,} images) to
  {last['mean']:.1%} ({fro.index[-1]:,} images); seed-to-seed sd {sd_word} from {first['std']:.1%} to {last['std']:.1%}.
- **Regularisation at {P["reg_n"]} images per class:** {reg_text}
- **A good model:** {honest:.1%} on {self.test_n:,} test images, weakest class {self.weakest_class or "–"} ({opt(self.weakest_class_recall)} recall), ECE {self.good_model_ece:.3f}.{good_note}
- **Leaks:** scored on its own training images the good model would claim {opt(self.good_model_train_accuracy)} (honest: {honest:.1%});
  the scratch model {self.scratch_train_accuracy:.1%} (honest: {self.scratch_test_accuracy:.1%}). {leak_text(dict(small), P["n_configs"])}
- **Unrepresentative test sets:** {worst} test sets missed the honest {honest:.1%} by more than 2 points in
  {spread.loc[worst, 'off_by_more_than_2_points']:.0%} of draws (5th–95th percentile {spread.loc[worst, 'p5']:.1%}–{spread.loc[worst, 'p95']:.1%}).
'''

    def _budget_notes(self, reg: Any, ctx: RecordContext) -> tuple[str, str]:
        """The Summary's budget clauses (section 1's scratch model, section 4's model), read from the records.

        The chapter's folder is found from the regularisation table's runs; without it (an older
        summary, or no records) both are empty.
        """
        folder = _folder(ctx, list(reg["run"])) if reg is not None and "run" in reg else None
        if folder is None or not folder.is_dir():
            return "", ""
        from ..runs import complete_records

        P = self.parameters
        scratch = [r for _, r in complete_records(folder, chapter=self.NOTEBOOK, model="scratch")
                   if r["params"].get("n_per_class") == P.get("n_small") and r["params"].get("seed") in (P.get("seeds") or [])]
        scratch_note = ""
        if scratch and self.scratch_test_accuracy is not None:
            refs = scratch_references(folder, scratch[0], P.get("n_small"))
            steps = run_steps(scratch[0])
            if budget_shows_in_reference(refs, self.scratch_test_accuracy, P.get("n_small")):
                cx = refs["crossover"]
                trained = f"{steps:,} steps" if steps else "its budget"
                scratch_note = (f" The scratch model trained for {trained} ({'; '.join(phases_in_words(scratch[0]))}); chapter 3's "
                                f"crossover trains the same network on {cx['n_per_class']} images per class for "
                                + (f"{cx['steps']:,} steps" if cx.get("steps") else "longer")
                                + f" to {mean_sd(cx['test_accuracy'])}{flag_note(cx['flags'])} test accuracy, so the gap to the "
                                "frozen base is partly this budget (section 1).")  # fmt: skip
        good = [r for _, r in complete_records(folder, chapter=self.NOTEBOOK, model="good")]
        good_note = ""
        if good:
            refs = finetune_references(folder, good[0])
            cmp = _finetune_comparisons(good[0], refs)
            last = (phases_in_words(good[0]) or [""])[-1]
            if cmp:
                good_note = (f" Its budget, last phase: {last}; against chapter 3's fine-tuning of the same network on "
                             f"the whole training split: " + "; ".join(cmp) + " (section 4).")
        return scratch_note, good_note

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
    verdict = ("The pretrained model generalises better *and* overfits less at this section's budgets: both intervals exclude zero."
               if better and overfits_less else
               "Measured here, the intervals do not show that the frozen base both generalises better and overfits less.")
    budget = scratch_budget_text([ctx.record(r) for r in runs[sc_m]], n_small, float(sc["test"]), _folder(ctx, runs[sc_m]))
    return (f"From scratch, {int(trainable[sc_m]):,} trainable weights fitted {n_small * 10:,} images to **{sc['train']:.1%}** "
            f"training accuracy but reached **{sc['test']:.1%}** on test: a train–test gap of {100 * sc['gap']:.1f} points. "
            f"The frozen base trains only {int(trainable[fr_m]):,} head weights; it reached {fr['train']:.1%} on its training "
            f"images and **{fr['test']:.1%}** on test (gap {100 * fr['gap']:.1f} points). Frozen minus scratch, paired by "
            f"seed: test accuracy {test_text}; train–test gap {gap_text}. {verdict}" + (f" {budget}" if budget else ""))


# --------------------------------------------------------------------------------------------
# Budgets, read from the records: what a number here was trained with, and what longer runs reach
# --------------------------------------------------------------------------------------------


def _folder(ctx: RecordContext, runs: Sequence[Any]) -> Path | None:
    """The chapter's run folder, from one of its runs (relative to ``ctx.root``)."""
    run = next((r for r in runs if isinstance(r, str)), None)
    if run is None or ctx.root is None:
        return None
    return (Path(run) if Path(run).is_absolute() else ctx.root / run).parent


def phase_words(phase: Mapping[str, Any], epochs_run: int | None = None) -> str:
    """One training phase in words: what trains, for how many epochs, at which learning rate.

    Args:
        phase: A phase of a record's ``params["phases"]``.
        epochs_run: Epochs it ran (None: its cap).

    Returns:
        E.g. ``"the layers from `block_8` up: 1 epoch, learning rate 0.0001, constant schedule"``.
    """
    cap = int(phase.get("epochs") or 0)
    ran = cap if epochs_run is None else int(epochs_run)
    unfreeze = phase.get("unfreeze")
    what = ("a head on the frozen base's cached features" if phase.get("use_feature_cache") else
            "every layer" if unfreeze == "all" else f"the layers from `{unfreeze}` up" if unfreeze else "the head")
    how = [f"learning rate {phase.get('learning_rate'):g}", f"{phase.get('schedule') or 'constant'} schedule"]
    if phase.get("early_stopping"):
        how.append(f"early stopping after {phase['early_stopping']} epochs without improvement")
    return f"{what}: {ran} epoch{'' if ran == 1 else 's'}" + (f" of up to {cap}" if ran != cap else "") + ", " + ", ".join(how)


def phases_in_words(record: Mapping[str, Any]) -> list[str]:
    """Each phase of a run in words (:func:`phase_words`), with the epochs it actually ran.

    Args:
        record: A run record.

    Returns:
        One entry per phase.
    """
    return [phase_words(ph, phase_epochs_run(record, ph.get("name"))) for ph in (record.get("params") or {}).get("phases") or []]


def scratch_budget_text(records: Sequence[Mapping[str, Any] | None], n_small: int, accuracy: float,
                        chapter_dir: str | Path | None) -> str:  # fmt: skip
    """Section 1's from-scratch budget, what longer runs of the same network reach, and what follows.

    Args:
        records: The from-scratch runs' records.
        n_small: Training images per class.
        accuracy: Their mean test accuracy.
        chapter_dir: The chapter's run folder (its parent holds chapter 3's crossover study).

    Returns:
        Sentences (``""`` without records).
    """
    recs = [r for r in records if r]
    if not recs:
        return ""
    rec = recs[0]
    steps = run_steps(rec)
    aug = (rec.get("params") or {}).get("augment")
    text = [f"The from-scratch model's budget: {'; '.join(phases_in_words(rec))}, {'no augmentation' if not aug else f'{aug} augmentation'}"
            + (f", {steps:,} steps" if steps else "") + "."]  # fmt: skip
    if chapter_dir is not None:
        refs = scratch_references(chapter_dir, rec, n_small)
        text.append(scratch_reference_text(refs))
        if budget_shows_in_reference(refs, accuracy, n_small):
            text.append("With no more images per class, every seed of that longer run scores above this model's mean, so part of "
                        "the gap to the frozen base is this section's short budget, not only the pretrained features.")
    return " ".join(t for t in text if t)


def _same_pretrained(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    pa, pb = (a or {}).get("params") or {}, (b or {}).get("params") or {}
    return bool(pa and pb) and all(pa.get(k) == pb.get(k) for k in ("backbone", "backbone_kwargs", "image_size", "weights"))


#: Chapter 3's fine-tuned arms, as the crossover study tags them, and their words.
FINETUNED_ARMS = {"finetune_all": "all layers", "finetune_top": "top blocks"}


def finetune_references(chapter_dir: str | Path, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Chapter 3's fine-tuning of ``record``'s pretrained network on the whole training split, per arm.

    Args:
        chapter_dir: This chapter's run folder (its parent holds chapter 3's crossover study).
        record: The record of the model compared (its backbone, width, weights and input size).

    Returns:
        Arm -> ``test_accuracy`` (per seed), ``test_images``, ``flags`` and ``last_phase``
        (the fine-tuning phase's parameters); only arms with runs.
    """
    from ..runs import complete_records

    out: dict[str, dict[str, Any]] = {}
    for _, rec in complete_records(Path(chapter_dir).parent / CROSSOVER_DIR, study="crossover", size="all"):
        arm = (rec["params"].get("tags") or {}).get("arm")
        if arm in FINETUNED_ARMS and _same_pretrained(rec, record) and (rec.get("metrics") or {}).get("test"):
            o = out.setdefault(arm, {"test_accuracy": [], "test_images": [], "flags": [], "last_phase": rec["params"]["phases"][-1]})
            o["test_accuracy"].append(float(rec["metrics"]["test"]["accuracy"]))
            o["test_images"].append(int(rec["metrics"]["test"].get("n") or 0))
            o["flags"].append(record_warnings(rec))
    return {a: out[a] for a in FINETUNED_ARMS if a in out}


def _finetune_comparisons(record: Mapping[str, Any], refs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    from ..stats import independent_diff

    test = (record.get("metrics") or {}).get("test") or {}
    out = []
    for arm, r in refs.items():
        n_ref = min(n for n in r["test_images"] if n) if any(r["test_images"]) else None
        if not test.get("n") or not n_ref:
            continue
        mean = sum(r["test_accuracy"]) / len(r["test_accuracy"])
        d = independent_diff(float(test["accuracy"]), int(test["n"]), mean, n_ref)
        out.append(f"{FINETUNED_ARMS[arm]}{flag_note(r['flags'])}: {compare_text(d, [record_warnings(record)], r['flags'])}")
    return out


def good_model_paragraph(record: Mapping[str, Any], chapter_dir: str | Path | None = None) -> str:
    """Section 4's model: its budget, read from its record, against chapter 3's fine-tuning of the same network.

    Args:
        record: The good model's record.
        chapter_dir: This chapter's run folder (None: chapter 3 is not read).

    Returns:
        Markdown.
    """
    p = record.get("params") or {}
    test = (record.get("metrics") or {}).get("test") or {}
    n = (record.get("extra") or {}).get("train_size")
    words = phases_in_words(record)
    text = [f"This model's budget, read from its record: {'; then '.join(words)}; at {p.get('image_size')} px"
            + (f" on {n:,} training images" if n else "") + f", scored {pct(test.get('accuracy'), 1)} on the test split."]
    refs = finetune_references(chapter_dir, record) if chapter_dir is not None else {}
    if refs:
        last = next(iter(refs.values()))["last_phase"]
        arms = "; ".join(f"{FINETUNED_ARMS[a]} {mean_sd(r['test_accuracy'])} ({len(r['test_accuracy'])} seeds){flag_note(r['flags'])}"
                         for a, r in refs.items())  # fmt: skip
        text.append(f"Chapter 3's crossover study fine-tunes the same network on the whole training split "
                    f"at {p.get('image_size')} px for longer (up to {last.get('epochs')} fine-tuning epochs at learning rate "
                    f"{last.get('learning_rate'):g}): {arms} test accuracy.")  # fmt: skip
        cmp = _finetune_comparisons(record, refs)
        if cmp:
            text.append("This model against each: " + "; ".join(cmp) + ".")
    phases = p.get("phases") or []
    last_ran = None
    if len(phases) > 1:
        last_ran = phase_epochs_run(record, phases[-1].get("name"))
        last_ran = phases[-1].get("epochs") if last_ran is None else last_ran
    if last_ran is not None and int(last_ran) <= 2:
        text.append(f"With {last_ran} fine-tuning epoch{'' if int(last_ran) == 1 else 's'} it cannot show whether fine-tuning had "
                    "converged: it is a model to check the evaluation tools below on, not the book's best model.")
    return " ".join(text)


def _draws(row: Mapping[str, Any]) -> int:
    d = row.get("draws")
    return int(d) if isinstance(d, (int, float)) and d == d else 1  # absent or NaN: a table of one cut


def leak_text(row: Mapping[str, Any], n_configs: Any) -> str:
    """The selection-on-test leak of one test-set size: reported, delivered and the optimism.

    A table with ``draws`` gives the means over that many cuts of the test split and the spread of
    single draws; an older one (one cut) is stated as one draw with the binomial standard error of
    its reported accuracy, so its optimism is not read as a measurement.

    Args:
        row: A row of :func:`eurosat_lib.experiments.overfitting.selection_leak`'s table.
        n_configs: Configurations chosen from.

    Returns:
        Markdown.
    """
    from ..stats import binomial_se

    n = int(row["test_images"])
    draws = _draws(row)
    if draws > 1:
        return (f"Choosing the best of {n_configs} heads on a {n}-image test set reports {row['leaky_reported']:.1%} on average over "
                f"{draws:,} random cuts of the test split, but that head delivers {row['leaky_fresh']:.1%} on fresh data: "
                f"{100 * row['optimism']:+.1f} points of optimism on average (95 % of single draws between "
                f"{100 * row['optimism_low']:+.1f} and {100 * row['optimism_high']:+.1f}); choosing on validation reports "
                f"{row['honest_reported']:.1%} and delivers {row['honest_fresh']:.1%}.")  # fmt: skip
    se = 100 * binomial_se(float(row["leaky_reported"]), n)
    return (f"Choosing the best of {n_configs} heads on a {n}-image test set reported {row['leaky_reported']:.1%}, and that head "
            f"delivers {row['leaky_fresh']:.1%} on fresh data ({100 * row['optimism']:+.1f} points); this is one draw of the test "
            f"set, and one accuracy on {n} images has a standard error of about {se:.1f} points, so the size of the optimism "
            f"is not measured by it. Choosing on validation reports {row['honest_reported']:.1%} and delivers "
            f"{row['honest_fresh']:.1%}.")  # fmt: skip


def leak_paragraph(leak: Any, n_configs: Any) -> str:
    """Section 5's leak table in words: the smallest test set's numbers, then the mean optimism per size.

    Args:
        leak: :func:`eurosat_lib.experiments.overfitting.selection_leak`'s table.
        n_configs: Configurations chosen from.

    Returns:
        Markdown.
    """
    rows = [dict(r) for _, r in leak.iterrows()]
    text = leak_text(rows[0], n_configs)
    if len(rows) > 1 and _draws(rows[0]) > 1:
        text += (" Mean optimism per test-set size: "
                 + "; ".join(f"{int(r['test_images']):,} images {100 * r['optimism']:+.1f} points" for r in rows) + ".")
    return text
