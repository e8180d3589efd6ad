"""The source-similarity study (experiments/similarity.py): the class split, the plan, the verdict-chosen
sentences, and one end-to-end run at smoke size on a few real images.

The statistics run on constructed tables whose answer is known, so each check can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib.experiments import negative_transfer as NT
from eurosat_lib.experiments import resolve_params
from eurosat_lib.experiments import similarity as SIM
from eurosat_lib.experiments.core import train_subset

A = ("AnnualCrop", "Forest", "Pasture", "Residential", "River")
B = ("HerbaceousVegetation", "Highway", "Industrial", "PermanentCrop", "SeaLake")


def params(tmp_path=None, profile="smoke", **over):
    out = {"out_dir": str(tmp_path / "02_negative_transfer")} if tmp_path is not None else {}
    return resolve_params(NT.NOTEBOOK, profile=profile, **{**out, **over})


def label_only_data(per_class: dict[str, int]) -> D.EuroSAT:
    """EuroSAT's labels and a stratified 60/20/20 split with 1-pixel images: enough for planning."""
    labels = np.concatenate([np.full(n, D.CLASS_NAMES.index(c)) for c, n in per_class.items()]).astype(np.int64)
    ids = np.array([f"{D.CLASS_NAMES[c]}/{D.CLASS_NAMES[c]}_{i}" for i, c in enumerate(labels)])
    from eurosat_lib.data.splits import stratified_split

    return D.EuroSAT(images=np.zeros((len(labels), 1, 1, 3), np.uint8), labels=labels, file_ids=ids,
                     split=stratified_split(ids, labels))  # fmt: skip


# ------------------------------------------------------------------------------------------
# The class split: no image of the source task in the target's pool
# ------------------------------------------------------------------------------------------


def assert_no_leak(data: D.EuroSAT, source_classes=A) -> None:
    source_train, target = SIM.split_tasks(data, source_classes)
    a_ids = set(data.file_ids[np.isin(data.labels, [data.class_names.index(c) for c in source_classes])])
    # every target image (train, val, test) is a B image, and every B image is in the target
    assert not set(target.file_ids) & a_ids
    b_mask = ~np.isin(data.labels, [data.class_names.index(c) for c in source_classes])
    assert set(target.file_ids) == set(data.file_ids[b_mask])
    # the labels are re-numbered per task, and still name the image's true class
    for task in (source_train, target):
        names = np.array(task.class_names)[task.labels]
        assert (names == np.array([f.split("/")[0] for f in task.file_ids])).all()
    assert target.class_names == tuple(c for c in data.class_names if c not in source_classes)
    # the source trains on A's training split only; the target keeps B's manifest splits
    assert set(source_train.file_ids) <= a_ids and set(source_train.split) == {"train"}
    for split in ("train", "val", "test"):
        expected = set(data.file_ids[b_mask & (data.split == split)])
        assert set(target.get_split(split).file_ids) == expected


def test_class_split_keeps_the_source_classes_out_of_the_target():
    data = D.make_synthetic(n_per_class=20, seed=0)
    assert SIM.target_classes(A) == B and SIM.SOURCE_CLASSES == A
    assert_no_leak(data)
    # the check catches a leak: a "target" that still holds one source image fails it
    _, target = SIM.split_tasks(data)
    leaky = D.EuroSAT(images=np.concatenate([target.images, data.images[:1]]),
                      labels=np.concatenate([target.labels, [0]]), file_ids=np.concatenate([target.file_ids, data.file_ids[:1]]),
                      class_names=target.class_names, split=np.concatenate([target.split, data.split[:1]]))  # fmt: skip
    a_ids = set(data.file_ids[np.isin(data.labels, [D.CLASS_NAMES.index(c) for c in A])])
    assert set(leaky.file_ids) & a_ids  # what assert_no_leak's first check refuses
    with pytest.raises(ValueError, match="unknown classes \\['Forst'\\]"):
        SIM.target_classes(["Forst"])
    with pytest.raises(ValueError, match="classes on both sides"):
        SIM.target_classes(D.CLASS_NAMES)


def test_class_split_on_the_real_data(real_data):
    assert_no_leak(real_data)
    _, target = SIM.split_tasks(real_data)
    counts = np.bincount(target.labels[target.split_indices("train")])
    assert counts.min() == 1500 and len(target.split_indices("test")) == 2700


def test_every_target_run_trains_on_target_images_only():
    data = D.make_synthetic(n_per_class=40, seed=0)
    P = params(sim_sizes=[2, 4], sim_cheap_seeds=2)
    _, target = SIM.split_tasks(data)
    for r in SIM.plan(P, data):
        if r.role == "target":
            names = {f.split("/")[0] for f in train_subset(target, r.spec).file_ids}
            assert names <= set(B), r.spec.name


# ------------------------------------------------------------------------------------------
# The plan: sizes, seeds, recipes, cost
# ------------------------------------------------------------------------------------------


def test_cpu_plan_sizes_seeds_recipes_and_cost():
    # EuroSAT's class counts (the manifest split is stratified 60/20/20)
    data = label_only_data(D.CLASS_COUNTS)
    P = params(profile="cpu")
    runs = SIM.plan(P, data)
    assert [r.role for r in runs[:3]] == ["source"] * 3  # the sources first: every target run needs one
    assert {r.spec.tags["source"] for r in runs[:3]} == set(SIM.PRETRAINED_HERE)
    count: dict[tuple[str, str], set] = {}
    for r in runs[3:]:
        count.setdefault((r.spec.tags["source"], r.spec.tags["arm"]), set()).add((r.spec.tags["size"], r.spec.seed))
    for source in SIM.TRANSFERRED:
        assert count[(source, "frozen")] == {(n, s) for n in (5, 20, 100, 1500) for s in range(5)}
        assert count[(source, "finetune")] == {(n, s) for n in (5, 100) for s in range(3)}
    assert count[("random", "scratch")] == {(n, s) for n in (5, 20, 100, 1500) for s in range(3)}
    assert len(count) == 9 and len(runs) == 3 + 4 * (20 + 6) + 12
    specs = {r.spec.name: r.spec for r in runs}
    frozen, tuned, scratch = specs["in_domain_frozen_n5_seed0"], specs["in_domain_finetune_n5_seed0"], specs["random_scratch_n5_seed0"]
    assert frozen.weights == str(SIM.study_dir(P) / "source_in_domain_n1000" / SIM.SOURCE_WEIGHTS_FILE)
    assert [p.name for p in frozen.phases] == ["head"] and frozen.phases[0].use_feature_cache and frozen.val_n_per_class is None
    assert tuned.phases[1].unfreeze == "all" and tuned.phases[1].freeze_bn and tuned.phases[1].learning_rate == P.sim_lr
    (only,) = scratch.phases  # no pretraining = the scratch recipe, never a head on a frozen random base
    assert scratch.weights is None and only.unfreeze == "all" and not only.freeze_bn and only.optimizer == "adamw"
    # scratch spends its whole stated budget; the fine-tuned arm stops at its plateau
    assert only.early_stopping is None and scratch.tags["bn_momentum"] < 0.99
    assert tuned.phases[1].early_stopping == P.sim_patience and tuned.phases[1].early_stopping_monitor == "val_accuracy"
    assert specs["imagenet_frozen_n5_seed0"].weights == "imagenet"
    src = specs["source_shuffled_n1000"]
    assert src.tags["labels"] == "shuffled" and src.weights is None and src.n_per_class == 1000
    assert specs["source_in_domain_imagenet_n1000"].weights == "imagenet"
    assert all(s.image_size == 64 and s.test_n_per_class is None for s in specs.values())
    # the stated cpu cost (README): at most ~110 min alone on the book's machine, with every
    # fine-tuned and scratch run at its cap (early stopping ends most sooner). It was 85 min
    # before the fine-tuned arms got a cap of 400 steps and early stopping instead of 150 steps.
    total = sum(r.seconds for r in runs) / 60
    assert 30 < total <= 110, total
    # a fair scratch comparator: at every size where both run, scratch's cap is at least fine-tuning's
    caps = {(r.spec.tags["arm"], r.spec.tags["size"]): r.spec.tags["budget"]["steps"] for r in runs[3:]}
    for (arm, size), steps in caps.items():
        if arm == "finetune":
            assert caps[("scratch", size)] >= steps, (size, caps[("scratch", size)], steps)
    text = SIM.plan_text(runs)
    assert text.splitlines()[-1].endswith(f"total {total:.0f}")
    with pytest.raises(ValueError, match=r"sim sizes \[1600\].*smallest class has \(1500\)"):
        SIM.plan(params(profile="cpu", sim_sizes=[5, 1600]), data)


def test_parameters_are_checked():
    from eurosat_lib.experiments.params import ParameterError

    with pytest.raises(ParameterError, match="sim_source_classes.*class names"):
        params(sim_source_classes=["Forst"])
    with pytest.raises(ParameterError, match="sim_source_classes.*at least one class for the target"):
        params(sim_source_classes=list(D.CLASS_NAMES))
    with pytest.raises(ParameterError, match="sim_sizes"):
        params(sim_sizes=[5, 5])
    smoke, cpu = params(), params(profile="cpu")
    assert smoke.sim_sizes == [2] and smoke.sim_image_size == 32 and cpu.sim_cheap_seeds == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------
# Differences and the sentences they choose, on constructed tables
# ------------------------------------------------------------------------------------------

SIZES = (5, 100)


def made_table(acc: dict[tuple[str, str], dict[int, float]], noise: float = 0.002) -> pd.DataFrame:
    """Per (source, arm): size -> mean accuracy; 5 seeds for frozen, 3 otherwise; 2,700 test images."""
    rows = []
    for (source, arm), by_size in acc.items():
        for size, a in by_size.items():
            for seed in range(5 if arm == "frozen" else 3):
                rows.append({"source": source, "arm": arm, "size": size, "n_per_class": float(size), "seed": seed,
                             "test_acc": a + noise * (seed % 3 - 1), "test_images": 2700, "warnings": ""})  # fmt: skip
    return pd.DataFrame(rows)


def study_table(in_domain: float, shuffled: float) -> pd.DataFrame:
    """ImageNet frozen at 80 %, scratch at 70 %; the in-domain and shuffled sources as given."""
    return made_table({
        ("imagenet", "frozen"): {n: 0.80 for n in SIZES}, ("random", "scratch"): {n: 0.70 for n in SIZES},
        ("in_domain", "frozen"): {n: in_domain for n in SIZES}, ("shuffled", "frozen"): {n: shuffled for n in SIZES},
    })  # fmt: skip


def test_differences_pair_on_common_seeds_against_both_baselines():
    diffs = SIM.differences(study_table(in_domain=0.85, shuffled=0.60))
    d = diffs.set_index(["source", "baseline", "size"])
    assert d.loc[("in_domain", "imagenet", 5), "verdict"] == "better" and d.loc[("in_domain", "imagenet", 5), "seeds"] == 5
    assert d.loc[("in_domain", "random", 5), "seeds"] == 3  # scratch ran 3 seeds: only those pair
    assert d.loc[("shuffled", "random", 100), "effect"] == "hurts"
    assert abs(d.loc[("shuffled", "random", 100), "diff"] + 0.10) < 1e-9
    assert ("imagenet", "imagenet", 5) not in d.index and d.loc[("imagenet", "random", 5), "effect"] == "helps"
    table = SIM.difference_table(diffs, "frozen")
    assert list(table.columns) == ["− ImageNet", "− no pretraining (from scratch)"]
    assert table.loc[(SIM.SOURCE_LABELS["shuffled"], "100")].iloc[1].endswith(": hurts")
    assert table.loc[(SIM.SOURCE_LABELS["imagenet"], "5")].iloc[0] == "—"


@pytest.mark.parametrize("verdict, word", [("better", "helps"), ("worse", "hurts"), ("no measurable difference", "no detectable difference")])
def test_each_verdict_chooses_its_own_sentence(verdict, word):
    assert SIM.effect(verdict) == word
    for source, by_baseline in SIM.WHY.items():
        for baseline in by_baseline:
            mine = SIM.why(source, baseline, verdict)
            others = {SIM.why(source, baseline, v) for v in ("better", "worse", "no measurable difference") if v != verdict}
            assert mine and mine not in others, (source, baseline)
    with pytest.raises(ValueError, match="unknown verdict"):
        SIM.effect("clearly better")
    with pytest.raises(ValueError, match="no explanation for source 'random'"):
        SIM.why("random", "imagenet", verdict)


def test_narrative_explains_each_source_by_its_measured_verdict():
    helps = study_table(in_domain=0.85, shuffled=0.75)
    hurts = study_table(in_domain=0.60, shuffled=0.60)
    text_h = SIM.narrative(helps, SIM.differences(helps))  # the frozen arm: its own sentences where WHY's would not hold
    text_w = SIM.narrative(hurts, SIM.differences(hurts))

    def frozen(source, effect):
        return SIM.why(source, "random", {"helps": "better", "hurts": "worse"}[effect], "frozen")

    assert frozen("in_domain", "helps") in text_h and frozen("in_domain", "hurts") not in text_h
    assert frozen("in_domain", "hurts") in text_w and frozen("in_domain", "helps") not in text_w
    assert frozen("shuffled", "helps") in text_h and frozen("shuffled", "hurts") in text_w
    assert "+15.0 points (95 % CI" in text_h and "**helps**" in text_h and "**hurts**" in text_w
    # one seed: a number, but no verdict and no explanation
    one = study_table(0.85, 0.60)
    one = one[one["seed"] == 0]
    text_1 = SIM.narrative(one, SIM.differences(one))
    assert "no interval, so no verdict" in text_1 and "**helps**" not in text_1


def test_answer_is_chosen_by_the_verdicts():
    def answer(in_domain, shuffled):
        return SIM.answer(SIM.differences(study_table(in_domain, shuffled)))

    assert answer(0.85, 0.60).startswith("**Yes, in this study")
    assert answer(0.85, 0.75).startswith("**Partly")
    assert answer(0.75, 0.75).startswith("**No, not similarity alone")
    assert answer(0.80, 0.60).startswith("**Only at the far end")
    assert answer(0.80, 0.70).startswith("**Not measurably")
    assert SIM.answer(SIM.differences(study_table(0.8, 0.7)).iloc[0:0]).startswith("*The similarity study has no")
    # a closer source that wins at one size and loses at another: closeness did not decide alone
    small, large = SIZES[0], SIZES[-1]
    mixed = made_table({("imagenet", "frozen"): {n: 0.80 for n in SIZES}, ("random", "scratch"): {n: 0.70 for n in SIZES},
                        ("in_domain", "frozen"): {n: 0.85 if n == small else 0.75 if n == large else 0.80 for n in SIZES},
                        ("shuffled", "frozen"): {n: 0.70 for n in SIZES}})  # fmt: skip
    text = SIM.answer(SIM.differences(mixed))
    assert text.startswith("**Mixed") and "could not be told apart from no pretraining" in text
    # closer sources tied with ImageNet, the unrelated one above scratch: not "not measurably"
    assert answer(0.80, 0.75).startswith("**No (")


def test_plot_similarity_draws_a_panel_per_arm_with_the_scratch_reference():
    import matplotlib.pyplot as plt

    from eurosat_lib import plots

    table = made_table({("imagenet", "frozen"): {5: 0.8, 100: 0.9}, ("imagenet", "finetune"): {5: 0.82, 100: 0.93},
                        ("random", "scratch"): {5: 0.5, 100: 0.8}, ("in_domain", "frozen"): {5: 0.85, 100: 0.9}})  # fmt: skip
    cur = SIM.curves(table)
    assert (cur["low"] < cur["mean"]).all() and (cur["mean"] < cur["high"]).all()
    fig = plots.plot_similarity(cur, table)
    frozen, tuned = fig.axes[:2]
    assert [a.get_title() for a in (frozen, tuned)] == ["frozen base + head", "fine-tuned: all layers"]
    assert len(frozen.get_lines()) == 3 and len(tuned.get_lines()) == 2  # scratch drawn in both panels
    assert frozen.get_xscale() == "log" and frozen.get_xlabel() == "labelled target images per class (log scale)"
    assert [t.get_text() for t in frozen.get_xticklabels()] == ["5", "100"]
    with pytest.raises(ValueError, match=r"columns \['low'\] not in the curves table"):
        plots.plot_similarity(cur.drop(columns="low"))
    plt.close("all")


# ------------------------------------------------------------------------------------------
# End to end at smoke size (the smoke notebook's own study), and the command line
# ------------------------------------------------------------------------------------------


def test_study_runs_end_to_end_on_real_images_and_a_second_call_reuses_it(smoke_similarity):
    """The smoke notebook's own study (conftest.smoke_similarity trains it once per test run, and
    notebook 02 reuses it): 12 runs of MobileNetV2 at 32 px on real images, 2 per class."""
    from eurosat_lib import experiments as X
    from eurosat_lib import runs as R

    P = params(None, out_dir=smoke_similarity["out_dir"])
    data = X.load_data(P.data_source, P.profile)
    lines = smoke_similarity["lines"]
    # the first call trained every run: three sources, then the target's runs
    assert len(lines) == 3 + 9 and all("trained in" in line for line in lines) and all(smoke_similarity["trained"])
    study = SIM.run_study(P, data, progress=lines.append)  # the second call
    table = study.table
    assert list(study.sources["source"]) == list(SIM.PRETRAINED_HERE)
    assert {(s, a) for s, a in zip(table["source"].astype(str), table["arm"].astype(str))} == \
        {(s, a) for s in SIM.TRANSFERRED for a in ("frozen", "finetune")} | {("random", "scratch")}  # fmt: skip
    assert (table["test_images"] == 4 * 5).all() and table["test_acc"].between(0, 1).all()
    assert not table["trained"].any() and all("reused" in line for line in lines[12:]) and len(lines) == 24
    # every source left its weights, and the target's runs loaded them; the target has 5 classes
    for src in study.sources["run"]:
        assert (Path(src) / SIM.SOURCE_WEIGHTS_FILE).is_file()
    rec = R.read(table.loc[table["source"] == "in_domain", "run"].iloc[0])
    assert rec["model_info"]["num_classes"] == 5 and rec["params"]["weights"].endswith(SIM.SOURCE_WEIGHTS_FILE)
    # each run paid for its own head features (frozen and fine-tuned arms share subsets): its minutes are measured
    assert not any(R.used_cached_features(R.read(r)) for r in table["run"])
    stamps = {p: p.stat().st_mtime_ns for p in SIM.study_dir(P).glob("*/record.json")}
    assert len(stamps) == 12
    again = SIM.run_study(P, data)
    assert not again.table["trained"].any() and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a fresh clone has the records but no model or weights files: with every target run finished,
    # nothing asks for the sources' weights, so nothing is trained again (notebook 02, reading the
    # same study beside this test, is such a reader too)
    for src in study.sources["run"]:
        for name in (SIM.SOURCE_WEIGHTS_FILE, "model.keras"):
            (Path(src) / name).unlink()
    clone = SIM.run_study(P, data)
    assert not clone.table["trained"].any() and not any((Path(s) / SIM.SOURCE_WEIGHTS_FILE).exists() for s in study.sources["run"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    cols = [c for c in SIM.COLUMNS if c != "trained"]
    pd.testing.assert_frame_equal(SIM.read_table(SIM.study_dir(P))[cols], table[cols])
    assert SIM.narrative(table, SIM.differences(table)).count("- **") == 4


def test_study_command_plans_without_training(monkeypatch, tmp_path, capsys):
    from eurosat_lib import __main__ as cli
    from eurosat_lib import experiments as X

    monkeypatch.setattr(X, "load_data", lambda source, profile: D.make_synthetic(n_per_class=40, seed=0))
    out = tmp_path / "book" / "runs" / "smoke" / "02_negative_transfer"
    assert cli.main(["study", "similarity", "--profile", "smoke", "--plan", "--out-dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert str(out / "similarity") in lines[0] and lines[1].startswith("source_in_domain_n3")
    assert len(lines) == 1 + 3 + (4 * (1 + 1) + 1) + 1 and lines[-1].startswith("estimated minutes")
    assert not out.exists()  # a plan trains nothing
    assert cli.main(["study", "similarity", "--profile", "smoke", "--plan", "--out-dir", str(out), "-p", "sim_seeds", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 3 + (4 + 4 * 2 + 2) + 1
    assert cli.main(["study", "similarity", "--profile", "smoke", "--plan", "-p", "sim_seed", "2"]) == 2
    assert "did you mean 'sim_seeds'" in capsys.readouterr().err


def test_sources_note_reads_its_numbers_from_the_rows():
    rows = pd.DataFrame([{"source": "in_domain", "train_images": 5000, "val_acc": 0.912, "train_acc": 0.95, "minutes": 3.0,
                          "warnings": "", "budget": "6 epochs", "run": "x"},
                         {"source": "shuffled", "train_images": 5000, "val_acc": 0.2, "train_acc": 0.21, "minutes": 3.0,
                          "warnings": "chance-level", "budget": "6 epochs", "run": "y"}])  # fmt: skip
    text = SIM.sources_note(rows)
    assert "5,000 images of task A" in text and "true labels 91.2% (chance: 20%)" in text
    assert "on its shuffled labels 21.0%" in text and "Sanity flags: chance-level." in text
    assert SIM.sources_note(rows.iloc[0:0]).startswith("*No source")
