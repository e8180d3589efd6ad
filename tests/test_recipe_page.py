"""The recipe study's page (issue 15): built from run records alone, choosing on validation,
hiding contended timings, and comparing each configuration with the base on the same test images."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest

from conftest import REPO
from eurosat_lib import report as R
from eurosat_lib import stats
from eurosat_lib.summaries import recipes as RP

BOOK = REPO / "book"
N = 400  # test images of the fabricated runs


def _record(name, seed, *, val, test, minutes, contended=False, px=128, epochs=6, warnings=(), spans=False, spe=None,
            tta=None, tta_s=None):  # tta / tta_s: the TTA pass's timing (written by _study)
    rec = {
        "status": "complete", "warnings": list(warnings),
        "params": {"spec_key": f"{name}-{seed}", "name": f"recipe_{name}_seed{seed}", "seed": seed, "image_size": px,
                   "tags": {"study": "recipes", "recipe": name, "what": f"what {name}"}},
        "metrics": {"val": {"accuracy": val, "n": N}, "test": {"accuracy": test, "n": N}},
        "timings": {"fit_seconds": minutes * 60, "phases": {"head": {"epochs_run": 20}, "finetune": {"epochs_run": epochs}},
                    "machine_load": {"start": {}, "end": {}}, "contended": contended,
                    **({"spans_processes": True} if spans else {})},
        "environment": {"cpu_count": 2, "cpu_model": "Test CPU"},
    }  # fmt: skip
    if spe is not None:  # a fine-tuning phase with its seconds per epoch (the machine's speed)
        rec["params"].update(backbone_kwargs={"alpha": 0.35}, phases=[{"name": "head"}, {"name": "finetune", "unfreeze": "all",
                                                                                          "batch_size": 64}])  # fmt: skip
        rec["timings"]["phases"]["finetune"]["seconds_per_epoch"] = spe
    return rec


def _preds(labels, acc, rng):
    """Predictions right on exactly round(acc * n) images: the first ones are the wrong ones, so a
    more accurate run's errors are a subset of a less accurate one's (a clear paired difference)."""
    pred = labels.copy()
    wrong = np.arange(len(labels) - int(round(acc * len(labels))))
    pred[wrong] = (labels[wrong] + 1) % 10
    return pred


def _study(tmp_path, runs, planned):
    study = tmp_path / "book" / "runs" / "cpu" / "recipe_study"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N)
    for kw in runs:
        rec = _record(**kw)
        d = study / rec["params"]["name"]
        d.mkdir(parents=True)
        (d / "record.json").write_text(json.dumps(rec))
        test_pred, tta_pred = _preds(labels, kw["test"], rng), _preds(labels, min(1.0, kw["test"] + 0.005), rng)
        # the TTA pass's own timing: quiet on the run's machine unless the run says otherwise
        tta_timing = {"legacy": {}, "contended": {"machine_load": {}, "contended": True, "environment": rec["environment"]},
                      "elsewhere": {"machine_load": {}, "contended": False, "environment": {"cpu_count": 2, "cpu_model": "Other CPU"}},
                      }.get(kw.get("tta"), {"machine_load": {}, "contended": False, "environment": rec["environment"]})  # fmt: skip
        (d / "tta.json").write_text(json.dumps({
            "spec_key": rec["params"]["spec_key"], "test_accuracy": float(np.mean(tta_pred == labels)), "seconds": kw.get("tta_s", 30.0),
            "n": N, "labels": RP.encode_labels(labels), "test_pred": RP.encode_labels(test_pred),
            "tta_pred": RP.encode_labels(tta_pred), **tta_timing}))  # fmt: skip
    (study / RP.PLAN_FILE).write_text(json.dumps({"command": "python -m eurosat_lib.experiments.recipe_study --profile cpu",
                                                   "recipes": [{"name": n, "what": f"what {n}"} for n in planned]}))  # fmt: skip
    return study, labels


RUNS = [
    dict(name="base", seed=0, val=0.960, test=0.965, minutes=8.0),
    # the best TEST score within 20 min, but not the best on validation
    dict(name="e10", seed=0, val=0.970, test=0.985, minutes=12.0),
    dict(name="px160", seed=0, val=0.975, test=0.975, minutes=15.0),
    dict(name="px160", seed=1, val=0.977, test=0.980, minutes=15.4),
    # most accurate on validation, but measured under contention: never chosen, no time shown
    dict(name="px224", seed=0, val=0.990, test=0.990, minutes=19.0, contended=True),
    dict(name="e15", seed=0, val=0.980, test=0.987, minutes=25.0),
    # resumed across processes: its minutes are partly another process's, never shown nor chosen
    dict(name="ls10", seed=0, val=0.995, test=0.995, minutes=10.0, spans=True),
]


def test_page_chooses_on_validation_and_hides_contended_timings(tmp_path):
    study, labels = _study(tmp_path, RUNS, ["e3", "base", "e10", "px160", "px224", "e15", "ls10"])
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    assert "6 of 7 configurations have run (7 runs)" in page and "Not run yet: `e3` (what e3)" in page
    assert "not shown: resumed across processes" in next(line for line in page.splitlines() if line.startswith("| `ls10`"))
    assert "`px160` (2)" in page  # the configuration with two seeds is named
    # px224 is the best on validation but contended: its minutes are withheld and it is not chosen
    row = next(line for line in page.splitlines() if line.startswith("| `px224`"))
    assert "not shown: contended" in row
    goal = next(line for line in page.splitlines() if line.startswith("**Within 20 minutes"))
    # chosen on validation (px160, val 97.6 %) although e10 has the better test accuracy
    assert "`px160`" in goal and "`e10`" not in goal and "mean of 2 seeds" in goal
    assert "test **97.75 %**" in goal and "**not reached**" in goal
    moon = next(line for line in page.splitlines() if line.startswith("**Within 30 minutes"))
    assert "`e15`" in moon and "98.70 %" in moon and "**reached** without test-time augmentation" in moon
    assert (tmp_path / "book" / "images" / "recipes.png").stat().st_size > 10_000


def test_page_compares_with_the_base_on_the_same_test_images(tmp_path):
    study, labels = _study(tmp_path, RUNS, [r["name"] for r in RUNS])
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    rows = {r["recipe"]: r for r in RP.read_rows(study) if r["seed"] == 0}
    y = RP.decode_labels(rows["base"]["labels"])
    want = stats.bootstrap_diff(RP.decode_labels(rows["e10"]["test_pred"]) == y, RP.decode_labels(rows["base"]["test_pred"]) == y)
    line = next(line for line in page.splitlines() if line.startswith("| `e10` |") and "vs" not in line and "points" in line)
    assert stats.format_diff(want, digits=2) in line and f"**{want.verdict}**" in line
    assert want.verdict == "better" and "+2.00 points" in line  # 98.5 vs 96.5 % on 400 images
    # the interval is the paired one, not the unpaired binomial
    assert "unpaired" not in line


def test_gap_section_names_only_measured_gains_and_the_untried(tmp_path):
    """Short of the goal, the page says how far the best timed point is, names the changes whose paired
    interval against the base excludes zero (never one within noise) and lists what has not run."""
    runs = [dict(name="base", seed=0, val=0.960, test=0.965, minutes=8.0),
            dict(name="e10", seed=0, val=0.970, test=0.975, minutes=12.0),  # +1.0 points on 400 images: better
            dict(name="px96", seed=0, val=0.961, test=0.9675, minutes=6.0)]  # +0.25 points: within noise
    _study(tmp_path, runs, ["base", "e10", "px96", "e15"])
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    text = page.split("## What would close the gap", 1)[1].split("##", 1)[0]
    assert "`e10`, scores 97.50 % in 12.0 min, 0.80 points below the goal's 98.3 %." in text
    assert "`e10` (what e10) +1.00 points" in text and "`px96`" not in text.split("Not measured here")[0]
    assert "`e15` (what e15)" in text.split("Not measured here")[1]
    # reached within the budget: no such section
    runs[1]["test"] = 0.99
    shutil.rmtree(tmp_path / "book")
    _study(tmp_path, runs, ["base", "e10", "px96"])
    assert "What would close the gap" not in R.build_recipes_page(tmp_path / "book", "cpu").read_text()


def test_tta_minutes_follow_the_training_minutes_rule(tmp_path):
    """A TTA pass's minutes are shown only when its tta.json kept the load, was quiet, and ran on the
    study's machine: a file from before the load was kept, a contended pass, or one on another CPU
    shows – and is counted in the page's note; a configuration's minutes average its quiet passes."""
    runs = [dict(name="base", seed=0, val=0.960, test=0.965, minutes=8.0, tta_s=60.0),
            dict(name="base", seed=1, val=0.961, test=0.966, minutes=8.0, tta_s=600.0, tta="contended"),
            dict(name="e10", seed=0, val=0.970, test=0.975, minutes=12.0, tta_s=90.0, tta="legacy"),
            dict(name="px160", seed=0, val=0.975, test=0.975, minutes=15.0, tta_s=120.0, tta="elsewhere")]  # fmt: skip
    study, _ = _study(tmp_path, runs, ["base", "e10", "px160"])
    rows = RP.read_rows(study)
    why = {(r["recipe"], r["seed"]): r["tta_untimed"] for r in rows}
    assert why == {("base", 0): None, ("base", 1): "contended", ("e10", 0): "load not recorded", ("px160", 0): None}
    assert RP.tta_untimed_reason({"machine_load": {}, "environment": {"cpu_model": "Other CPU", "cpu_count": 2}},
                                 "Test CPU, 2 cores") == "timed on another machine (Other CPU, 2 cores)"
    entries = {e["recipe"]: e for e in RP.by_recipe(rows, "Test CPU, 2 cores")}
    assert entries["base"]["tta_minutes"] == pytest.approx(1.0)  # the quiet pass alone, not (60 + 600) / 2 s
    assert math.isnan(entries["e10"]["tta_minutes"]) and math.isnan(entries["px160"]["tta_minutes"])
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    table: dict[str, str] = {}  # the first table: every configuration
    for line in page.splitlines():
        if line.startswith("| `"):
            table.setdefault(line.split(" | ")[0].strip("| `"), line)
    assert " | 1.0 | " in table["base"] and " | – | " in table["e10"] and " | – | " in table["px160"]
    assert "1 of 4 TTA passes qualify (1 contended; 1 load not recorded; 1 timed on another machine)" in page


def test_tta_file_of_another_spec_is_ignored(tmp_path):
    study, _ = _study(tmp_path, RUNS[:2], ["base", "e10"])
    tta = study / "recipe_e10_seed0" / "tta.json"
    got = json.loads(tta.read_text())
    got["spec_key"] = "stale"
    tta.write_text(json.dumps(got))
    rows = {r["recipe"]: r for r in RP.read_rows(study)}
    assert math.isnan(rows["e10"]["tta_test_acc"]) and rows["e10"]["test_pred"] is None
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    assert "no per-image predictions" in page


def test_flagged_configuration_is_never_chosen_nor_compared(tmp_path):
    runs = RUNS[:1] + [dict(name="e10", seed=0, val=0.999, test=0.10, minutes=5.0, warnings=["diverged"])]
    _study(tmp_path, runs, ["base", "e10"])
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    goal = next(line for line in page.splitlines() if line.startswith("**Within 20 minutes"))
    assert "`base`" in goal and "`e10`" not in goal
    assert "not compared (flagged run)" in page and "⚠ diverged" in page


def test_labels_round_trip():
    x = np.array([0, 9, 3, 3, 7])
    assert RP.encode_labels(x) == "09337"
    assert np.array_equal(RP.decode_labels(RP.encode_labels(x)), x)
    assert RP.encode_labels([12, 1]) == [12, 1] and np.array_equal(RP.decode_labels([12, 1]), [12, 1])


def test_no_study_folder_leaves_no_page(tmp_path):
    (tmp_path / "book" / "runs" / "cpu").mkdir(parents=True)
    assert R.build_recipes_page(tmp_path / "book", "cpu") is None
    assert not (tmp_path / "book" / "recipes.md").exists()


def test_committed_recipes_page_is_what_the_run_records_give(tmp_path):
    committed = BOOK / "recipes.md"
    assert committed.is_file(), "book/recipes.md is missing: run `python -m eurosat_lib report --profile cpu`"
    fresh = R.build_recipes_page(BOOK, "cpu", out=tmp_path / "recipes.md", images_dir=tmp_path / "images")
    assert fresh.read_text() == committed.read_text(), "book/recipes.md is stale or hand-edited: regenerate it"
    for rec in re.findall(r"`(book/runs/cpu/recipe_study)/", committed.read_text()):
        assert (REPO / rec).is_dir()


def test_the_committed_study_figure_is_readable():
    """The figure of the committed study: point labels do not overlap (they did: adjustText ran
    before the axis limits changed), each point carries its 95 % interval over the test images, the
    x axis names the CPU the minutes are from, and the title says why each unplaced configuration
    is missing (timed on another CPU is not "not trusted")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eurosat_lib.plots import plot_recipe_front
    from eurosat_lib.sanity import wilson_interval

    rows = RP.read_rows(BOOK / "runs" / "cpu" / "recipe_study")
    entries = RP.by_recipe(rows)
    machine = RP.study_machine(rows)
    fig = plot_recipe_front(entries, front=RP.pareto_front(entries), machine=machine)
    fig.canvas.draw()
    ax = fig.axes[0]
    timed = [e for e in entries if math.isfinite(e["minutes"])]
    names = {e["recipe"] for e in timed}
    labels = [t for t in ax.texts if t.get_text() in names]
    assert len(labels) == len(timed) >= 12
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in labels]
    clash = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
             if boxes[i].overlaps(boxes[j])]  # fmt: skip
    assert not clash, f"point labels overlap: {clash}"
    assert ax.get_xlabel() == f"training minutes (head phase + fine-tuning) on {machine}"
    # the interval band of every placed point: Wilson over its test images
    (segs,) = [c.get_segments() for c in ax.collections if c.get_label() == "95 % interval over the test images"]
    e = timed[0]
    assert np.allclose(segs[0][:, 1], wilson_interval(e["test_acc"], e["n_test"]))
    title = ax.get_title()
    other = [e["recipe"] for e in entries if not math.isfinite(e["minutes"]) and not e["axis_runs"]]
    assert other and f"not placed, timed on another CPU: {', '.join(other)}" in title
    assert "e10" in title.split("timing not trusted:")[1]  # features cached by an earlier run: timed here, not trusted
    plt.close(fig)


@pytest.mark.parametrize("key", ["labels", "test_pred", "tta_pred"])
def test_committed_study_runs_keep_per_image_predictions(key):
    """Every committed recipe-study run keeps what its paired comparisons need, consistent with its record."""
    study = BOOK / "runs" / "cpu" / "recipe_study"
    rows = RP.read_rows(study)
    assert rows, "no committed recipe-study runs"
    for r in rows:
        assert r[key] is not None and len(RP.decode_labels(r[key])) == r["n_test"], r["record"]
        y = RP.decode_labels(r["labels"])
        if key == "test_pred":
            assert np.mean(RP.decode_labels(r["test_pred"]) == y) == pytest.approx(r["test_acc"], abs=1e-9), r["record"]
        if key == "tta_pred":
            assert np.mean(RP.decode_labels(r["tta_pred"]) == y) == pytest.approx(r["tta_test_acc"], abs=1e-9), r["record"]


def test_minutes_from_another_cpu_are_not_on_the_time_axis(tmp_path):
    """Sessions get different CPU models: a run timed on another one shows no minutes and is never chosen."""
    study, _ = _study(tmp_path, RUNS[:3], ["base", "e10", "px160"])
    rec_path = study / "recipe_px160_seed0" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["environment"]["cpu_model"] = "Other CPU"
    rec_path.write_text(json.dumps(rec))
    rows = RP.read_rows(study)
    assert RP.study_machine(rows) == "Test CPU, 2 cores"
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `px160`"))
    assert "not shown: timed on another machine (Other CPU, 2 cores: 15.0 min)" in row  # its own axis, said as such
    goal = next(line for line in page.splitlines() if line.startswith("**Within 20 minutes"))
    assert "`e10`" in goal  # px160 has the better validation accuracy but no comparable minutes
    assert "compared **on one machine** (Test CPU, 2 cores)" in page
    # the other CPU's runs are a time axis of their own, with their own choice, never mixed into the first
    other = page.split("### On Other CPU, 2 cores", 1)[1]
    assert other.lstrip().startswith("1 configuration was timed on Other CPU, 2 cores")
    goal2 = next(line for line in other.splitlines() if line.startswith("**Within 20 minutes"))
    assert "`px160`" in goal2 and "15.0 min of training on Other CPU, 2 cores" in goal2


def test_the_headline_choice_is_the_cpus_own_where_the_study_timed_it(tmp_path):
    """What fits in 20 minutes depends on the CPU: a headline trained on a CPU with timings of its
    own in the study takes that CPU's choice; on any other CPU, the main axis's."""
    study, _ = _study(tmp_path, RUNS[:3], ["base", "e10", "px160"])
    rec_path = study / "recipe_px160_seed0" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["environment"]["cpu_model"] = "Other CPU"
    rec_path.write_text(json.dumps(rec))
    assert R.current_recipe_choice(study) == "e10"  # main axis (Test CPU): px160 has no minutes there
    assert R.current_recipe_choice(study, "Test CPU, 2 cores") == "e10"
    assert R.current_recipe_choice(study, "Other CPU, 2 cores") == "px160"  # timed there, 15.0 min
    assert R.current_recipe_choice(study, "Unseen CPU, 2 cores") == "e10"  # no timings there: the main axis
    # rows the caller has read already are used instead of a second read of the folder
    rows = RP.read_rows(study)
    assert R.current_recipe_choice(study, "Other CPU, 2 cores", rows) == "px160"
    assert R.current_recipe_choice(study, "Other CPU, 2 cores", [r for r in rows if r["recipe"] != "px160"]) == "e10"
    rec["timings"]["fit_seconds"] = 78 * 60  # a CPU on which nothing timed fits in 20 min: the main axis's choice
    rec_path.write_text(json.dumps(rec))
    assert R.current_recipe_choice(study, "Other CPU, 2 cores") == "e10"


def test_a_headline_from_a_slower_cpu_also_quotes_the_study_time_on_the_main_axis(tmp_path):
    """A headline re-run on a CPU ~5x slower than the study's main axis misses 20 min for the CPU's
    sake: the results page says which half of the goal failed and quotes the configuration's own
    time on the axis where it was chosen."""
    study, _ = _study(tmp_path, RUNS[:3], ["base", "e10", "px160"])
    assert R.study_minutes(study, "e10", "Slow CPU, 2 cores") == ("Test CPU, 2 cores", 12.0)
    assert R.study_minutes(study, "e10", "Test CPU, 2 cores") is None  # same CPU: its own time says it
    assert R.study_minutes(study, "px224", "Slow CPU, 2 cores") is None  # never ran
    assert R.study_minutes(study, "e10", "Slow CPU, 2 cores", [r for r in RP.read_rows(study) if r["recipe"] != "e10"]) is None
    assert R.study_minutes(tmp_path / "nowhere", "e10", "Slow CPU, 2 cores") is None
    ref = tmp_path / "book" / "runs" / "cpu" / "reference" / "mobilenetv2_035_recipe"
    ref.mkdir(parents=True)
    rec = {"status": "complete", "warnings": [], "extra": {"train_size": 16200},
           "metrics": {"test": {"accuracy": 0.977, "n": 5400, "macro_f1": 0.97, "ece": 0.01}},
           "timings": {"fit_seconds": 69 * 60, "machine_load": {"start": {}, "end": {}}, "contended": False,
                       "phases": {"p": {"epochs_run": 15}}},
           "model_info": {"params": {"trainable": 1, "total": 1}},
           "params": {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}, "image_size": 128, "spec_key": "k",
                      "tags": {"recipe": "e10", "what": "10 epochs"}, "phases": []},
           "environment": {"cpu_model": "Slow CPU", "cpu_count": 2, "gpus": []}, "history": []}  # fmt: skip
    (ref / "record.json").write_text(json.dumps(rec))
    (ref / "tta.json").write_text(json.dumps({"spec_key": "k", "test_accuracy": 0.9808, "seconds": 60.0, "n": 5400}))
    text, _ = R.reference_section(tmp_path / "book" / "runs" / "cpu", tmp_path / "book")
    para = next(line for line in text.splitlines() if line.startswith("The configuration the [recipe study]"))
    assert ("The goal (≥ 98.3 % in ≤ 20 min): **not met** (97.70 % is below 98.3 % even with test-time augmentation; "
            "69.0 min is over 20 min).") in para  # fmt: skip
    assert "In the study the same configuration took 12.0 min on Test CPU, 2 cores (its main time axis)" in para
    # on the main axis itself, or within the budget, there is nothing to add
    rec["environment"]["cpu_model"] = "Test CPU"
    (ref / "record.json").write_text(json.dumps(rec))
    text, _ = R.reference_section(tmp_path / "book" / "runs" / "cpu", tmp_path / "book")
    assert "In the study the same configuration" not in text and "69.0 min is over 20 min" in text


def test_an_axis_where_nothing_fits_the_budget_says_how_far_off_it_is():
    slow = [dict(recipe="e15_ls", minutes=78.0, val_acc=0.97, warnings=[[]]), dict(recipe="e20", minutes=95.0, val_acc=0.98, warnings=[[]])]
    text = RP.choice_text(slow, 20.0, 0.983, "goal", "Slow CPU, 2 cores")
    assert text == ("**Within 20 minutes (goal: ≥ 98.3 % test):** none of the 2 configurations timed on Slow CPU, 2 cores "
                    "fits: the fastest, `e15_ls`, took 78.0 min of training.")
    assert RP.choice_text(slow[:1], 20.0, 0.983, "goal", "S").endswith(
        "the one configuration timed on S, `e15_ls`, took 78.0 min of training.")
    untimed = [dict(recipe="e15_ls", minutes=math.nan, val_acc=0.97, warnings=[[]])]
    assert RP.choice_text(untimed, 20.0, 0.983, "goal", "X").endswith("no configuration has a trusted timing on X yet.")


def test_extra_seeds_on_another_cpu_keep_the_configurations_minutes(tmp_path):
    """A front-runner's second seed run in a session with another CPU adds a seed, not a time: the
    configuration keeps the minutes of its run on the study's machine, and the axis stays where
    most configurations were timed."""
    runs = RUNS[:3] + [dict(name="e10", seed=1, val=0.972, test=0.983, minutes=5.0)]
    study, _ = _study(tmp_path, runs, ["base", "e10", "px160"])
    rec_path = study / "recipe_e10_seed1" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["environment"]["cpu_model"] = "Other CPU"
    rec_path.write_text(json.dumps(rec))
    rows = RP.read_rows(study)
    assert RP.study_machine(rows) == "Test CPU, 2 cores" and RP.timed_machines(rows) == {"Test CPU, 2 cores": 3, "Other CPU, 2 cores": 1}
    e10 = next(e for e in RP.by_recipe(rows) if e["recipe"] == "e10")
    assert e10["minutes"] == 12.0 and e10["seeds"] == [0, 1] and e10["other_minutes"] == {"Other CPU, 2 cores": 5.0}
    assert e10["test_acc"] == pytest.approx(0.984)


def test_minutes_of_a_run_that_reused_cached_features_are_not_shown(tmp_path):
    """A run whose head read the frozen base's features from an earlier run's cache skipped the
    extraction every other run paid for: its minutes are withheld and it is never chosen on time."""
    study, _ = _study(tmp_path, RUNS[:3], ["base", "e10", "px160"])
    rec_path = study / "recipe_px160_seed0" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["timings"]["phases"]["head"]["features_from_cache"] = True
    rec_path.write_text(json.dumps(rec))
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `px160`"))
    assert "not shown: features cached by an earlier run" in row
    goal = next(line for line in page.splitlines() if line.startswith("**Within 20 minutes"))
    assert "`e10`" in goal and "`px160`" not in goal


def test_page_states_how_much_the_machine_speed_drifted_across_runs(tmp_path):
    """Runs that did the same work per epoch give the machine's own drift; a contended run's speed
    is not part of it, and without two such runs the page says nothing about it."""
    runs = [dict(RUNS[0], spe=80.0), dict(RUNS[1], spe=120.0), dict(RUNS[2], spe=100.0),
            dict(name="px224", seed=0, val=0.9, test=0.9, minutes=19.0, contended=True, spe=300.0)]  # fmt: skip
    _study(tmp_path, runs, ["base", "e10", "px160", "px224"])
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    line = next(ln for ln in page.splitlines() if ln.startswith("- Even on one machine the speed drifts"))
    assert "(alpha 0.35, 128 px, unfreeze all, batch 64; runs of `base`, `e10`, `px160`)" in line
    assert "took from 80 to 120 s (3 runs, median 100 s), 50 % apart" in line
    _study(tmp_path / "one", [dict(RUNS[0], spe=80.0), RUNS[1]], ["base", "e10"])
    assert "speed drifts" not in R.build_recipes_page(tmp_path / "one" / "book", "cpu").read_text()


def test_a_contended_seed_leaves_the_configurations_quiet_seeds_timed(tmp_path):
    """A second, quiet seed on the same machine times a configuration whose first seed was contended:
    its minutes are the quiet run's alone, and the table says that the other seed is not counted."""
    runs = [dict(name="base", seed=0, val=0.960, test=0.965, minutes=30.0, contended=True),
            dict(name="base", seed=1, val=0.962, test=0.966, minutes=12.0),
            dict(name="e10", seed=0, val=0.970, test=0.975, minutes=16.0)]  # fmt: skip
    study, _ = _study(tmp_path, runs, ["base", "e10"])
    entries = {e["recipe"]: e for e in RP.by_recipe(RP.read_rows(study))}
    assert entries["base"]["minutes"] == pytest.approx(12.0) and entries["base"]["timed_runs"] == 1
    assert len(entries["base"]["axis_runs"]) == 2
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `base`"))
    assert "| 12.0 (1 of 2 runs; seed 0: contended) |" in row
    # both runs contended: no minutes at all
    entries = {e["recipe"]: e for e in RP.by_recipe([{**r, "contended": True} for r in RP.read_rows(study)])}
    assert math.isnan(entries["base"]["minutes"]) and entries["base"]["timed_runs"] == 0


def test_an_epoch_validated_on_a_subset_is_another_workload():
    """An epoch's seconds include its validation pass, so a run that scores 500 images per epoch is
    not the same work per epoch as one that scores all 5,400, and never enters the drift figure."""
    params = {"image_size": 128, "backbone_kwargs": {"alpha": 0.35},
              "phases": [{"name": "head"}, {"name": "finetune", "unfreeze": "all", "batch_size": 64}]}  # fmt: skip
    subset = {**params, "phases": [{"name": "head"}, {"name": "finetune", "unfreeze": "all", "batch_size": 64,
                                                      "val_n_per_class": 50}]}  # fmt: skip
    assert RP._workload(params) == "alpha 0.35, 128 px, unfreeze all, batch 64"
    assert RP._workload(subset) == "alpha 0.35, 128 px, unfreeze all, batch 64, validated on 50 images per class"


def _bench(quick=False, contended=()):
    return {"benchmark": "recipes", "quick": quick,
            "environment": {"cpu_model": "Bench CPU", "cpu_count": 2, "cpu_isa": ["avx2"], "timestamp": "2026-12-02T01:00:00+00:00"},
            "figures": {"machine": "Bench CPU (AVX2), 2 cores", "train_images": 1020, "rounds": [{}, {}, {}],
                        "contended": list(contended),
                        "configurations": {"base": {"modelled_minutes": 40.0}, "e20": {"modelled_minutes": 100.0},
                                           "e3": {"modelled_minutes": 25.0}, "broken": {"modelled_minutes": None}}}}  # fmt: skip


def test_the_side_by_side_cost_benchmark_becomes_a_section_with_ratios_to_base(tmp_path):
    """bench_recipes' modelled minutes (one process, interleaved) give each configuration's cost
    relative to the base recipe, planned ones included; a quick (synthetic) run gives none."""
    lines = RP.bench_section(_bench())
    text = "\n".join(lines)
    assert lines[0] == "## What each configuration costs, measured side by side"
    assert "3 rounds on 1020 real training images, on Bench CPU (AVX2), 2 cores, 2026-12-02" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows == ["| `e3` | 25.0 | 0.62× |", "| `base` | 40.0 | 1.00× |", "| `e20` | 100.0 | 2.50× |", "| `broken` | – | – |"]
    assert "⚠" not in text and "would take about" not in text  # no study minutes given
    # beside the study's own ratios (main axis), and an estimate for configurations without a time there
    text = "\n".join(RP.bench_section(_bench(), {"base": 8.0, "e3": 6.0, "e20": math.nan}, "Main CPU, 2 cores"))
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[:3] == ["| `e3` | 25.0 | 0.62× | 0.75× |", "| `base` | 40.0 | 1.00× | 1.00× |", "| `e20` | 100.0 | 2.50× | – |"]
    assert "× base in the study's runs (Main CPU, 2 cores)" in text
    assert ("would take about `e20` ~20 min, `broken`" not in text
            and "would take about `e20` ~20 min there (ratio × `base`'s 8.0 min); an estimate, not a timing." in text)  # fmt: skip
    assert "⚠ Another job kept a core busy during part of that run (round 2 e20)" in "\n".join(RP.bench_section(_bench(contended=["round 2 e20"])))
    assert RP.bench_section(_bench(quick=True)) == [] and RP.bench_section(None) == []
    # the page reads the committed result beside the book; without one, no section
    study, _ = _study(tmp_path, RUNS[:3], ["base", "e10", "px160"])
    assert "measured side by side\n" not in R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "recipes.json").write_text(json.dumps(_bench()))
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    assert "## What each configuration costs, measured side by side" in page and "| `e20` | 100.0 | 2.50× |" in page


def _ranged_bench():
    conf = {"base": {"modelled_minutes": 40.0, "over_base_range": [1.0, 1.0]},
            "ls10": {"modelled_minutes": 60.0, "over_base_range": [1.4, 1.7]},
            "adamw": {"modelled_minutes": 60.0, "over_base_range": [1.4, 1.7]},
            "e10": {"modelled_minutes": 60.0, "over_base_range": [1.4, 1.7]},
            "e20": {"modelled_minutes": 100.0, "over_base_range": [2.3, 2.8]}}  # fmt: skip
    b = _bench()
    b["figures"]["configurations"] = conf
    return b


def test_the_cost_ratios_carry_their_range_over_rounds_and_same_work_names_the_drift():
    """Each ratio to base shows the lowest and highest it took within one round; configurations the
    benchmark models as the same work but whose study runs took different multiples of base get a
    sentence with that spread; the estimates carry the same range."""
    study = {"base": 8.0, "ls10": 12.0, "adamw": 18.0, "e10": math.nan}
    text = "\n".join(RP.bench_section(_ranged_bench(), study, "Main CPU, 2 cores"))
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert "| `base` | 40.0 | 1.00× | – | 1.00× |" in rows  # base against itself has no range
    assert "| `ls10` | 60.0 | 1.50× | 1.40–1.70 | 1.50× |" in rows and "| `adamw` | 60.0 | 1.50× | 1.40–1.70 | 2.25× |" in rows
    assert "| × base within one round (lowest–highest) |" in text and "median speed over the 3 rounds" in text
    # ls10 and adamw: same modelled work, study ratios 1.50x and 2.25x -> 50 % apart; e10 has no study time
    assert ("`ls10` and `adamw` do the same work as the benchmark models it (the same width, input size, unfrozen "
            "layers, batch, epochs and validation: 1.50× `base` here), yet their runs on Main CPU, 2 cores took "
            "1.50× to 2.25× `base`'s minutes, 50 % apart") in text  # fmt: skip
    assert "`e10`, `ls10`" not in text
    # estimates for the untimed: ratio x base's 8.0 min, with the round range (1.4*8=11, 1.7*8=14; 2.3*8=18, 2.8*8=22)
    assert "`e10` ~12 min (11–14), `e20` ~20 min (18–22) there" in text
    assert "in brackets, at the lowest and highest ratio of one round" in text
    # one round: no range column (it would repeat the ratio)
    one = _ranged_bench()
    one["figures"]["rounds"] = [{}]
    text1 = "\n".join(RP.bench_section(one, study, "Main CPU, 2 cores"))
    assert "within one round" not in text1 and "`e20` ~20 min there" in text1 and "| `ls10` | 60.0 | 1.50× | 1.50× |" in text1
    # equal study ratios: no drift sentence
    text = "\n".join(RP.bench_section(_ranged_bench(), {**study, "adamw": 12.0}, "Main CPU, 2 cores"))
    assert "do the same work" not in text


def test_the_ratio_to_base_is_read_from_the_file_and_a_narrow_estimate_keeps_a_decimal():
    """A result file that stores `over_base` is read as stored (older files: modelled minutes over
    base's); an estimate whose range rounds to one whole minute prints tenths instead of "18–18"."""
    b = _ranged_bench()
    b["figures"]["configurations"]["e15"] = {"modelled_minutes": 92.0, "over_base": 2.3, "over_base_range": [2.27, 2.32]}
    b["figures"]["configurations"]["e20"]["over_base"] = 2.6  # stored ratio wins over 100 / 40 = 2.50
    text = "\n".join(RP.bench_section(b, {"base": 7.9, "ls10": 12.0, "adamw": 18.0, "e10": math.nan}, "Main CPU, 2 cores"))
    assert "| `e20` | 100.0 | 2.60× | 2.30–2.80 | – |" in text and "| `e15` | 92.0 | 2.30× | 2.27–2.32 | – |" in text
    # 2.3 x 7.9 = 18.17 (17.93-18.33: both "18" in whole minutes); e20 2.6 x 7.9 = 20.5 (18.2-22.1)
    assert "`e15` ~18.2 min (17.9–18.3)" in text and "`e20` ~21 min (18–22)" in text and "(18–18)" not in text
    assert RP._estimate("x", 2.0, None, 8.0) == "`x` ~16 min"


def test_the_cross_cpu_speed_sentence_breaks_ties_by_workload_name():
    """Two workloads timed equally often on both CPUs: the sentence names the same one whatever the
    order of the rows (a set's order changed with the hash seed and made the page differ per run)."""
    def row(w, m, s):
        return {"finetune_workload": w, "finetune_s_per_epoch": s, "machine": m, "recipe": "x", "seed": 0, "load_recorded": True}

    rows = [row("w-b", "A", 10.0), row("w-b", "B", 20.0), row("w-b", "B", 22.0),
            row("w-a", "A", 30.0), row("w-a", "A", 32.0), row("w-a", "B", 60.0)]  # fmt: skip
    for order in (rows, rows[::-1]):
        assert "(w-a) took a median of 31 s on A (2 runs) and 60 s on B (1 run)" in RP._speed_ratio_text(order, "A", "B")


def _ensemble(study, labels, name, recipe, seeds, acc, tta_acc=None):
    """An ``ensemble_<name>.json`` over the study's runs ``recipe_<recipe>_seed<k>``, right on round(acc * N) images."""
    members = []
    for k in seeds:
        rec = json.loads((study / f"recipe_{recipe}_seed{k}" / "record.json").read_text())
        members.append({"run": rec["params"]["name"], "spec_key": rec["params"]["spec_key"],
                        "val_acc": rec["metrics"]["val"]["accuracy"], "test_acc": rec["metrics"]["test"]["accuracy"]})  # fmt: skip
    rng = np.random.default_rng(1)
    tta_acc = acc if tta_acc is None else tta_acc
    ens = {"name": name, "recipe": recipe, "seeds": list(seeds), "what": f"{recipe} seeds averaged", "members": members,
           "val_acc": 0.999, "test_acc": acc, "tta_test_acc": tta_acc, "n_val": N, "n_test": N, "tta_seconds": 60.0,
           "labels": RP.encode_labels(labels), "test_pred": RP.encode_labels(_preds(labels, acc, rng)),
           "tta_pred": RP.encode_labels(_preds(labels, tta_acc, rng))}  # fmt: skip
    (study / RP.ENSEMBLE_FILE.format(name=name)).write_text(json.dumps(ens))
    return ens


ENS_RUNS = [
    dict(name="base", seed=0, val=0.960, test=0.965, minutes=8.0),
    # seed 0 is the better member on validation, seed 1 on test: the ensemble is compared with seed 0
    dict(name="e20", seed=0, val=0.975, test=0.970, minutes=9.0),
    dict(name="e20", seed=1, val=0.972, test=0.980, minutes=9.5),
]


def test_an_ensemble_costs_its_members_minutes_and_is_compared_with_its_member_best_on_validation(tmp_path):
    study, labels = _study(tmp_path, ENS_RUNS, ["base", "e20"])
    _ensemble(study, labels, "e20x2", "e20", (0, 1), 0.99)
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    section = page.split("## Runs averaged (ensembles)", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| `e20x2`"))
    assert "| 18.5 |" in row  # 9.0 + 9.5 minutes: the members train one after the other
    rows = {r["seed"]: r for r in RP.read_rows(study) if r["recipe"] == "e20"}
    ens = RP.read_ensembles(study)[0]
    want = RP.paired(ens, rows[0])  # the member best on validation (seed 0), not on test (seed 1)
    assert want is not None and "seed 0: " + RP.format_diff_text(want) in row
    assert want.verdict == "better" and "+2.00 points" in row  # 99.0 vs 97.0 % on the same 400 images
    # the choice stays a single network although the ensemble's validation score (99.9 %) is the best
    goal = next(line for line in page.splitlines() if line.startswith("**Within 20 minutes"))
    assert "`e20x2`" not in goal and "`e20`" in goal
    gap = page.split("## What would close the gap", 1)[1]
    assert "`e20x2` (e20 seeds averaged) scores 99.00 %, 99.00 % with test-time augmentation, at the cost of all its members " \
           "(18.5 min of training); against its member best on validation, +2.00 points (95 % CI" in gap


def test_an_ensemble_with_an_untrusted_or_retrained_member_shows_no_minutes_or_no_score(tmp_path):
    runs = [dict(ENS_RUNS[0]), dict(ENS_RUNS[1]), dict(ENS_RUNS[2], contended=True)]
    study, labels = _study(tmp_path, runs, ["base", "e20"])
    _ensemble(study, labels, "e20x2", "e20", (0, 1), 0.99)
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `e20x2`"))
    assert "not shown: contended" in row and "18.5" not in row
    # a member trained again since (another spec key) makes the averaged score stale: no number is shown
    rec_path = study / "recipe_e20_seed1" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["params"]["spec_key"] = "retrained"
    rec_path.write_text(json.dumps(rec))
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `e20x2`"))
    assert "stale: recipe_e20_seed1 trained again since" in row and "99.00" not in row
    assert "Averaging runs" not in page


def _bench_ratios(tmp_path, ratios):
    """A side-by-side cost benchmark result (``benchmarks/results/recipes.json`` beside the book) with these ratios."""
    path = tmp_path / "benchmarks" / "results" / "recipes.json"
    path.parent.mkdir(parents=True)
    conf = {n: {"modelled_minutes": 10.0 * x, "over_base": x} for n, x in ratios.items()}
    path.write_text(json.dumps({"quick": False, "figures": {"configurations": conf, "train_images": 1020}}))


VS_RUNS = ENS_RUNS + [
    # the single network it is declared against: seed 1 is its better run on validation, seed 0 on test
    dict(name="e15_ls", seed=0, val=0.970, test=0.985, minutes=15.0),
    dict(name="e15_ls", seed=1, val=0.978, test=0.975, minutes=15.5),
]


def _versus(study, labels, versus="e15_ls"):
    ens = _ensemble(study, labels, "e20x2", "e20", (0, 1), 0.99)
    (study / RP.ENSEMBLE_FILE.format(name="e20x2")).write_text(json.dumps(dict(ens, versus=versus)))


def test_an_ensemble_declared_against_one_network_is_compared_with_its_run_best_on_validation(tmp_path):
    study, labels = _study(tmp_path, VS_RUNS, ["base", "e20", "e15_ls"])
    _bench_ratios(tmp_path, {"base": 1.0, "e20": 2.43, "e15_ls": 1.86})
    _versus(study, labels)
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    section = page.split("## Runs averaged (ensembles)", 1)[1].split("\n## ", 1)[0]
    single = {r["seed"]: r for r in RP.read_rows(study) if r["recipe"] == "e15_ls"}
    want = RP.paired(RP.read_ensembles(study)[0], single[1])  # chosen on validation: seed 1, not seed 0 (better on test)
    assert want is not None and want.verdict == "better" and f"{100 * want.mean:+.2f}" == "+1.50"
    assert ("`e20x2` against one network of about the same compute, `e15_ls` (what e15_ls), its run best on validation "
            "(seed 1), which the side-by-side benchmark puts at 1.86× `base`'s training time against the ensemble's 4.86×: the "
            "ensemble minus that network, " + RP.format_diff_text(want)) in section  # fmt: skip
    assert "with test-time augmentation on both, " in section
    row = next(line for line in section.splitlines() if line.startswith("| `e20x2`"))
    assert "| 4.86× |" in row  # two members of 2.43× each
    gap = page.split("## What would close the gap", 1)[1]
    assert "against one network of about the same compute (`e15_ls`), " + RP.format_diff_text(want) in gap
    # a member trained again since: the row says stale, and no comparison is drawn from the old score
    rec_path = study / "recipe_e20_seed0" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["params"]["spec_key"] = "retrained"
    rec_path.write_text(json.dumps(rec))
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    assert "stale: recipe_e20_seed0" in page and "about the same compute" not in page and "is not compared" not in page


def test_an_ensemble_is_not_compared_with_a_network_that_has_not_run_or_is_flagged(tmp_path):
    study, labels = _study(tmp_path, ENS_RUNS, ["base", "e20", "e15_ls"])
    _versus(study, labels)
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    assert "`e20x2` is not compared with one network of `e15_ls`: `e15_ls` has not run." in page
    assert "about the same compute" not in page and "× base, side by side" not in page  # no benchmark here either
    runs = VS_RUNS[:4] + [dict(VS_RUNS[4], warnings=("diverged",))]
    study, labels = _study(tmp_path / "flagged", runs, ["base", "e20", "e15_ls"])
    _versus(study, labels)
    page = R.build_recipes_page(tmp_path / "flagged" / "book", "cpu").read_text()
    assert "`e20x2` is not compared with one network of `e15_ls`: a flagged run." in page


def test_a_declared_ensemble_without_a_score_is_listed_as_not_scored(tmp_path):
    """An ensemble in the plan but without its file (its members' models were not at hand) is named, never dropped."""
    study, labels = _study(tmp_path, VS_RUNS, ["base", "e20", "e15_ls"])
    plan = json.loads((study / RP.PLAN_FILE).read_text())
    plan["ensembles"] = [{"name": "base_x2", "what": "two base runs averaged", "versus": "e15_ls"},
                         {"name": "e20x2", "what": "two e20 runs averaged", "versus": None}]  # fmt: skip
    (study / RP.PLAN_FILE).write_text(json.dumps(plan))
    _ensemble(study, labels, "e20x2", "e20", (0, 1), 0.99)  # scored: in the table, not in the pending line
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    section = page.split("## Runs averaged (ensembles)", 1)[1].split("\n## ", 1)[0]
    assert "Declared, not scored yet: `base_x2` (two base runs averaged, against one network of `e15_ls`). " in section
    assert "e20x2` (two e20" not in section and "| `e20x2`" in section
    assert "an ensemble declared against such a network is listed below, not scored yet" in section


def test_a_configuration_timed_only_on_other_cpus_names_them_in_one_phrase(tmp_path):
    """`e20` was timed on two other CPUs: the cell named both in one phrase, not as "timed on another
    machine (A), timed on another machine (B)"."""
    study, _ = _study(tmp_path, RUNS[:4], ["base", "e10", "px160"])
    for seed, cpu in ((0, "Other CPU"), (1, "Third CPU")):
        rec_path = study / f"recipe_px160_seed{seed}" / "record.json"
        rec = json.loads(rec_path.read_text())
        rec["environment"]["cpu_model"] = cpu
        rec_path.write_text(json.dumps(rec))
    page = R.build_recipes_page(tmp_path / "book", "cpu").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `px160`"))
    assert "not shown: timed on other machines (Other CPU, 2 cores: 15.0 min; Third CPU, 2 cores: 15.4 min)" in row
    assert row.count("timed on") == 1


def test_the_committed_studys_front_runners_have_two_seeds():
    """Issue 15's acceptance: at least 12 configurations with minutes and test accuracy, and at
    least 2 seeds for the front-runners: every configuration on the Pareto front of the study's
    main time axis (the book's figure), and the one chosen within each budget on every CPU's axis."""
    rows = RP.read_rows(BOOK / "runs" / "cpu" / "recipe_study")
    entries = RP.by_recipe(rows)
    assert sum(math.isfinite(e["minutes"]) and e["n_test"] == 5_400 for e in entries) >= 12
    front = {e["recipe"] for e in RP.pareto_front([e for e in entries if math.isfinite(e["minutes"])])}
    chosen = {c["recipe"] for machine in RP.timed_machines(rows) for b in (RP.GOAL[1], RP.MOONSHOT[1])
              if (c := RP.choose(RP.by_recipe(rows, machine), b))}  # fmt: skip
    assert len(chosen) >= 3  # e15_ls on the main axis; e15, px160, e20_a05 on the other CPUs
    one_seed = sorted(name for name in front | chosen if len(next(e for e in entries if e["recipe"] == name)["seeds"]) < 2)
    assert len(front) >= 5 and not one_seed, f"front-runners with one seed: {one_seed}"
