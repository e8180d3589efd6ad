"""The recipe study (issue 15): new training switches, dihedral TTA, the Pareto front, and a dry run.

The switches the study varies (label smoothing, warm-up, linear decay) are checked against the
formulas they implement; adding them must not change the identity of any committed run.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import REPO, once_per_run
from eurosat_lib import data as D
from eurosat_lib import models as M
from eurosat_lib import training as T
from eurosat_lib.experiments import recipe_study as RS
from eurosat_lib.experiments.core import ExperimentSpec


def test_new_phase_fields_leave_every_committed_run_key_unchanged():
    """A committed record's spec, rebuilt from its params.json, still hashes to its spec_key:
    the fields added for the study are left out of the identity while at their defaults."""
    checked = 0
    for params_path in sorted((REPO / "book" / "runs" / "cpu" / "reference").glob("*/params.json"))[:3]:
        p = json.loads(params_path.read_text())
        fields = {k: v for k, v in p.items() if k not in ("spec_key", "data")}
        fields["phases"] = tuple(T.PhaseConfig(**ph) for ph in fields["phases"])
        fields["head"] = M.HeadConfig(**fields["head"])
        for k in ("eval_splits",):
            fields[k] = tuple(fields[k])
        assert ExperimentSpec(**fields).key() == p["spec_key"], params_path
        checked += 1
    assert checked >= 1
    # ... and a changed new field does change the identity.
    ph = T.PhaseConfig("finetune", label_smoothing=0.1)
    assert "label_smoothing" in ph.to_dict() and "label_smoothing" not in T.PhaseConfig("finetune").to_dict()


def test_every_committed_recipe_run_keeps_its_key_so_the_study_reuses_it():
    """Adding a Recipe or phase field must not make the study retrain its finished runs."""
    folder = REPO / "book" / "runs" / "cpu" / "recipe_study"
    by_name = {r.name: r for r in RS.RECIPES}
    checked = 0
    for params_path in sorted(folder.glob("recipe_*_seed*/params.json")):
        p = json.loads(params_path.read_text())
        recipe = by_name[p["tags"]["recipe"]]
        assert RS.spec_for(recipe, RS.PROFILES["cpu"], p["seed"]).key() == p["spec_key"], params_path
        checked += 1
    assert checked >= 10


def test_a_configuration_can_validate_each_epoch_on_a_subset():
    fast = next(r for r in RS.RECIPES if r.name == "fast160")
    head, tune = RS.spec_for(fast, RS.PROFILES["cpu"], 0).phases
    assert tune.val_n_per_class == 50 and head.val_n_per_class is None and tune.label_smoothing == 0.1
    spec = RS.spec_for(fast, RS.PROFILES["cpu"], 0)
    assert spec.val_n_per_class is None and spec.image_size == 160  # final scores: the whole splits
    subset = {r.name for r in RS.RECIPES if any(ph.val_n_per_class is not None for ph in r.phases())}
    assert subset == {"fast160", "e15_ls", "e20", "e25", "e20_a05"}  # those that say so in their description
    assert all("validated on 500 images" in r.what for r in RS.RECIPES if r.name in subset)


def test_new_phase_fields_are_validated_by_name():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\) in phase 'x'"):
        T.PhaseConfig("x", label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"warmup_epochs must be an integer in \[0, epochs=2\]"):
        T.PhaseConfig("x", epochs=2, warmup_epochs=3)
    with pytest.raises(ValueError, match="early_stopping_monitor must be"):
        T.PhaseConfig("x", early_stopping_monitor="accuracy")
    with pytest.raises(ValueError, match="schedule must be one of"):
        T.PhaseConfig("x", schedule="step")


@pytest.mark.parametrize("decay", ["cosine", "linear", "none"])
def test_warmup_decay_follows_its_formula(decay):
    s = T.WarmupDecay(1e-3, total_steps=110, warmup_steps=10, decay=decay)
    lr = [float(s(i)) for i in (0, 5, 10, 60, 110, 200)]
    assert lr[0] == pytest.approx(0.0, abs=1e-12) and lr[1] == pytest.approx(5e-4) and lr[2] == pytest.approx(1e-3)
    mid = {"cosine": 0.5e-3, "linear": 0.5e-3, "none": 1e-3}[decay]
    end = {"cosine": 0.0, "linear": 0.0, "none": 1e-3}[decay]
    assert lr[3] == pytest.approx(mid, rel=1e-5) and lr[4] == pytest.approx(end, abs=1e-9) and lr[5] == pytest.approx(end, abs=1e-9)
    s75 = float(s(85))  # 3/4 of the decay: cosine 0.146, linear 0.25 of the peak
    assert s75 == pytest.approx({"cosine": 1e-3 * 0.5 * (1 + math.cos(0.75 * math.pi)), "linear": 0.25e-3, "none": 1e-3}[decay], rel=1e-4)
    assert T.WarmupDecay(**s.get_config()).get_config() == s.get_config()


def test_optimizer_uses_the_warmup_schedule_only_when_asked():
    import keras

    plain = T.make_optimizer(T.PhaseConfig("a", epochs=4, schedule="cosine"), steps=40)
    assert isinstance(plain.learning_rate if not hasattr(plain, "_learning_rate") else plain._learning_rate,
                      (keras.optimizers.schedules.CosineDecay,)) or "Cosine" in type(plain._learning_rate).__name__  # fmt: skip
    warm = T.make_optimizer(T.PhaseConfig("a", epochs=4, schedule="linear", warmup_epochs=1), steps=40)
    sched = warm._learning_rate
    assert isinstance(sched, T.WarmupDecay) and sched.warmup_steps == 10 and sched.decay == "linear"


def test_label_smoothing_loss_matches_the_formula():
    y = np.array([0, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    eps, k = 0.1, 3
    target = np.full((2, k), eps / k)
    target[np.arange(2), y] += 1 - eps
    want = float(np.mean(-(target * np.log(p)).sum(1)))
    got = float(T.SmoothedSparseCrossentropy(eps)(y, p))
    assert got == pytest.approx(want, rel=1e-5)
    assert float(T.SmoothedSparseCrossentropy(0.0)(y, p)) == pytest.approx(float(np.mean(-np.log(p[np.arange(2), y]))), rel=1e-5)


def test_dihedral_views_are_the_eight_distinct_symmetries_and_tta_averages_them():
    img = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
    views = list(T.dihedral_views(img))
    assert len(views) == 8 and len({v[0].tobytes() for v in views}) == 8
    import keras

    inp = keras.Input((3, 3, 1))
    # a model that reads only the top-left pixel: its output changes with orientation
    out = keras.layers.Lambda(lambda t: keras.ops.softmax(keras.ops.stack([t[:, 0, 0, 0], -t[:, 0, 0, 0]], axis=-1) / 10.0))(inp)
    model = keras.Model(inp, out)
    tta = T.predict_dihedral(model, img)
    want = np.mean([T.predict_batches(model, np.ascontiguousarray(v)) for v in views], axis=0)
    assert np.allclose(tta, want, atol=1e-6) and not np.allclose(tta, T.predict_batches(model, img), atol=1e-3)


def test_pareto_front_and_choice_on_validation():
    rows = [
        {"recipe": "a", "minutes": 5, "test_acc": 0.95, "val_acc": 0.95},
        {"recipe": "b", "minutes": 10, "test_acc": 0.97, "val_acc": 0.96},
        {"recipe": "c", "minutes": 12, "test_acc": 0.96, "val_acc": 0.97},  # dominated on test by b
        {"recipe": "d", "minutes": 20, "test_acc": 0.98, "val_acc": 0.965},
        {"recipe": "e", "minutes": 10, "test_acc": 0.94, "val_acc": 0.90},  # same cost as b, worse
    ]
    assert [r["recipe"] for r in RS.pareto_front(rows)] == ["a", "b", "d"]
    # choice reads validation, never test: within 15 min, c (val .97) beats b (test .97)
    assert RS.choose(rows, 15)["recipe"] == "c"
    assert RS.choose(rows, 4) is None


def test_the_study_has_at_least_twelve_one_change_configurations_that_all_build():
    assert len(RS.RECIPES) >= 12 and len({r.name for r in RS.RECIPES}) == len(RS.RECIPES)
    for prof in ("cpu", "gpu"):
        specs = [RS.spec_for(r, RS.PROFILES[prof], 0) for r in RS.RECIPES]
        assert len({s.key() for s in specs}) == len(specs)
    base = RS.spec_for(RS.BASE, RS.PROFILES["cpu"], 0)
    assert base.image_size == 128 and base.phases[1].epochs == 6 and base.phases[1].unfreeze == "all"
    assert base.phases[0].epochs == 40 and base.phases[0].early_stopping == 5  # the real head phase
    smoke = RS.spec_for(RS.BASE, RS.PROFILES["smoke"], 0)
    assert [ph.epochs for ph in smoke.phases] == [1, 1] and smoke.phases[0].early_stopping is None
    with pytest.raises(ValueError, match="unknown recipe"):
        RS.run_study("smoke", only=["nope"], data=D.make_synthetic(n_per_class=4))


def test_dry_run_trains_one_recipe_then_reuses_it(tmp_path):
    """The smoke profile end to end on tiny synthetic data: a run, its TTA figure, then reuse."""
    data = D.make_synthetic(n_per_class=12, seed=0)
    first = RS.run_study("smoke", root=tmp_path, only=["adamw_lin"], data=data, log=lambda *_: None)
    assert {r["seed"] for r in first} == {0, 1}  # the front-runner's extra seed
    r = first[0]
    assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["tta_test_acc"] <= 1.0 and r["minutes"] > 0
    assert (r["epochs"], r["head_epochs"]) == (1, 1)  # fine-tuning epochs counted apart from the head's
    folder = RS.out_dir("smoke", tmp_path) / "recipe_adamw_lin_seed0"
    tta = json.loads((folder / "tta.json").read_text())
    assert tta["spec_key"] == json.loads((folder / "params.json").read_text())["spec_key"]
    # the TTA pass is a timing: it keeps the machine's load around it and names the machine
    from eurosat_lib.summaries.recipes import machine_name as RP_machine_name

    assert set(tta["machine_load"]) >= {"start", "end"} and isinstance(tta["contended"], bool)
    assert tta["environment"]["cpu_count"] >= 1 and r["tta_machine"] == RP_machine_name(tta["environment"])
    # seed 1 runs the same frozen base on the same images, yet pays for its own feature extraction
    for seed in (0, 1):
        rec = json.loads((RS.out_dir("smoke", tmp_path) / f"recipe_adamw_lin_seed{seed}" / "record.json").read_text())
        assert not any(ph.get("features_from_cache") for ph in rec["timings"]["phases"].values()), seed
    mtime = (folder / "record.json").stat().st_mtime_ns
    again = RS.run_study("smoke", root=tmp_path, only=["adamw_lin"], data=data, log=lambda *_: None)
    assert (folder / "record.json").stat().st_mtime_ns == mtime  # reused, not retrained
    assert [x["test_acc"] for x in again] == [x["test_acc"] for x in first]
    # --seeds: exactly the named seed, e.g. to time on this session's CPU a configuration first run elsewhere
    extra = RS.run_study("smoke", root=tmp_path, only=["adamw_lin"], data=data, seeds=[2], tta=False, log=lambda *_: None)
    assert [x["seed"] for x in extra] == [2] and math.isnan(extra[0]["tta_test_acc"])  # not measured
    assert sorted(p.name for p in RS.out_dir("smoke", tmp_path).glob("recipe_*")) == [
        f"recipe_adamw_lin_seed{k}" for k in (0, 1, 2)]  # fmt: skip
    with pytest.raises(ValueError, match="seeds must be non-negative"):
        RS.run_study("smoke", root=tmp_path, only=["adamw_lin"], data=data, seeds=[], log=lambda *_: None)
    with pytest.raises(SystemExit):
        RS.main(["--profile", "smoke", "--root", str(tmp_path), "--seeds", "1"])  # --seeds without --only
    # an interrupted run (its record still says running) is trained again from its start when asked,
    # so that its minutes count (a resumed run shows none)
    seed2 = RS.out_dir("smoke", tmp_path) / "recipe_adamw_lin_seed2"
    rec = json.loads((seed2 / "record.json").read_text())
    (seed2 / "record.json").write_text(json.dumps({**rec, "status": "running"}))
    (seed2 / "leftover_checkpoint.weights.h5").write_text("stale")
    logs: list = []
    again = RS.run_study("smoke", root=tmp_path, only=["adamw_lin"], data=data, seeds=[2], tta=False,
                         restart_interrupted=True, log=logs.append)  # fmt: skip
    assert any("recipe_adamw_lin_seed2: an interrupted run's checkpoints were deleted" in m for m in logs)
    rec = json.loads((seed2 / "record.json").read_text())
    assert rec["status"] == "complete" and not rec["timings"].get("spans_processes") and again[0]["minutes"] > 0
    assert not (seed2 / "leftover_checkpoint.weights.h5").exists()
    # a finished run is never discarded
    mtime = (seed2 / "record.json").stat().st_mtime_ns
    RS.run_study("smoke", root=tmp_path, only=["adamw_lin"], data=data, seeds=[2], tta=False, restart_interrupted=True,
                 log=lambda *_: None)  # fmt: skip
    assert (seed2 / "record.json").stat().st_mtime_ns == mtime


def test_gpu_page_gives_the_study_command_and_says_whether_it_ran():
    """book/gpu.md's command is the module's real entry point (run here with --list), and the
    page's status line agrees with the committed gpu records."""
    import re
    import subprocess
    import sys

    page = (REPO / "book" / "gpu.md").read_text()
    (cmd,) = re.findall(r"^KERAS_BACKEND=jax (python -m eurosat_lib\.experiments\.recipe_study --profile gpu)$", page, re.M)
    out = subprocess.run([sys.executable, *cmd.split()[1:], "--list"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.strip().splitlines()) == len(RS.RECIPES) + len(RS.ENSEMBLES)
    assert any(line.startswith("e20x2") and "ensemble" in line for line in out.stdout.splitlines())
    ran = any((REPO / "book" / "runs" / "gpu" / "recipe_study").glob("*/record.json"))
    assert ("**Status: not run yet.**" in page) == (not ran)
    assert f"≥ {100 * RS.GPU_GOAL[0]:.1f} % test accuracy in ≤ {RS.GPU_GOAL[1]:.0f} minutes" in page


def test_progressive_resizing_finishes_at_the_larger_size_with_the_trained_weights(tmp_path):
    """`finish160` in the dry run: fine-tune at 32 px, then a finishing phase at 64 px on the same
    weights; the saved model takes the larger size and the record counts both phases' epochs."""
    data = D.make_synthetic(n_per_class=12, seed=0)
    (r,) = [x for x in RS.run_study("smoke", root=tmp_path, only=["finish160"], data=data, log=lambda *_: None) if x["seed"] == 0]
    folder = RS.out_dir("smoke", tmp_path) / "recipe_finish160_seed0"
    rec = json.loads((folder / "record.json").read_text())
    assert [ph["name"] for ph in rec["params"]["phases"]] == ["head", "finetune", "finish"]
    assert rec["params"]["image_size"] == 32 and rec["params"]["phases"][2]["image_size"] == 64
    assert (r["image_size"], r["final_size"], r["epochs"]) == (32, 64, 2)
    assert rec["model_info"]["image_size"] == 64  # the model that was scored and saved is the 64 px one
    assert set(rec["timings"]["phases"]) == {"head", "finetune", "finish"}


def test_resized_model_carries_every_weight_and_refuses_a_size_dependent_one():
    import keras

    from eurosat_lib.experiments import core

    spec = RS.spec_for(RS.BASE, RS.PROFILES["smoke"], 0)
    spec = ExperimentSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, "weights": None})
    small = core.build_from_spec(spec)
    for v in small.trainable_weights[:3]:
        v.assign(v.value + 1.0)
    big = core.resized_model(small, spec, 64)
    # the images stay 64 px at the input; the backbone behind the in-model resize takes the new size
    assert (M.describe_model(small)["image_size"], M.describe_model(big)["image_size"]) == (32, 64)
    assert all(np.allclose(np.asarray(a.value), np.asarray(b.value)) for a, b in zip(small.weights, big.weights))

    def flat(s):  # a head whose weight shape depends on the input size
        inp = keras.Input((s.image_size, s.image_size, 3))
        return keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))

    with pytest.raises(ValueError, match="progressive resizing needs a network whose weights do not depend on the input size"):
        core.resized_model(flat(spec), spec, 48, model_fn=flat)


def test_a_phase_that_changes_size_must_say_what_trains():
    with pytest.raises(ValueError, match="image_size must be None or an integer >= 32"):
        T.PhaseConfig("x", image_size=8, unfreeze="all")
    with pytest.raises(ValueError, match="must set unfreeze"):
        T.PhaseConfig("x", image_size=160)
    assert "image_size" not in T.PhaseConfig("x").to_dict() and T.PhaseConfig("x", image_size=160, unfreeze="all").to_dict()["image_size"] == 160


def test_duplicate_phase_names_raise_through_run_experiment_before_any_training(tmp_path, monkeypatch):
    """run_experiment hands all phases to training.train_phases in one call, so its unique-name
    check holds for every spec (two phases named alike would share state and weight files)."""
    from eurosat_lib import training as T
    from eurosat_lib.experiments import core

    monkeypatch.setattr(T, "fit_phase", lambda *a, **k: pytest.fail("no phase may train"))
    spec = RS.spec_for(RS.BASE, RS.PROFILES["smoke"], 0)
    fields = {f: getattr(spec, f) for f in spec.__dataclass_fields__}
    twice = ExperimentSpec(**{**fields, "weights": None, "phases": (spec.phases[0], spec.phases[0])})
    with pytest.raises(ValueError, match="phase names must be unique"):
        core.run_experiment(twice, D.make_synthetic(n_per_class=12, seed=0), tmp_path)
    (rec,) = (tmp_path / twice.name).glob("record.json")
    assert json.loads(rec.read_text())["status"] == "failed"  # marked failed, never read as a result


def test_a_phase_with_image_size_needs_a_resize_callback():
    from eurosat_lib import training as T

    with pytest.raises(ValueError, match=r"phases \['finish'\] set image_size: pass resize="):
        T.train_phases(None, None, None, [T.PhaseConfig("head"), T.PhaseConfig("finish", unfreeze="all", image_size=64)])


@pytest.fixture(scope="module")
def smoke_ensemble(run_dir):
    """The smoke profile's ensemble scored once (its two members trained): ``(root, data, result, log)``.

    Once per test run, not per xdist worker (``conftest.once_per_run``): it trains two members (~30 s),
    and its tests are spread over both workers. The tests copy ``root`` before changing anything."""
    data = D.make_synthetic(n_per_class=12, seed=0)

    def produce(folder):
        logs: list = []
        got = RS.run_ensembles("smoke", root=folder / "root", data=data, log=logs.append)[0]
        (folder / "returned.json").write_text(json.dumps({"result": got, "log": logs}))

    folder = once_per_run(run_dir, "smoke_ensemble", produce)
    returned = json.loads((folder / "returned.json").read_text())
    return folder / "root", data, returned["result"], returned["log"]


def _copy_study(src, dst):
    import shutil

    shutil.copytree(RS.out_dir("smoke", src), RS.out_dir("smoke", dst))


def test_an_ensemble_averages_its_members_probabilities_and_is_reused_until_a_member_changes(smoke_ensemble, tmp_path,
                                                                                               monkeypatch):  # fmt: skip
    """The smoke ensemble end to end: members trained (or reused), scores from the averaged probabilities,
    the file reused without loading a model, and scored again once a member was trained again."""
    root, data, got, logs = smoke_ensemble
    _copy_study(root, tmp_path)
    folder = RS.out_dir("smoke", tmp_path)
    assert got["name"] == "e3x2" and [m["run"] for m in got["members"]] == ["recipe_e3_seed0", "recipe_e3_seed1"]
    assert json.loads((folder / "ensemble_e3x2.json").read_text()) == got
    assert any(m.startswith("[recipes] ensemble e3x2:") for m in logs)
    # the scores are those of the members' probabilities averaged, image by image
    from eurosat_lib.experiments.core import eval_split, load_run_model, predict

    prof = RS.PROFILES["smoke"]
    specs = [RS.spec_for(RS.RECIPES[0], prof, k) for k in (0, 1)]
    assert specs[0].tags["recipe"] == "e3"
    test = eval_split(data, "test", specs[0])
    probs = [predict(load_run_model(folder / s.name), test.images) for s in specs]
    mean = (probs[0] + probs[1]) / 2
    assert got["test_acc"] == pytest.approx(float(np.mean(mean.argmax(1) == test.labels)))
    assert got["test_pred"] == RS.encode_labels(mean.argmax(1)) and got["n_test"] == len(test)
    assert [m["spec_key"] for m in got["members"]] == [s.key() for s in specs]
    # reused: no model is loaded when the members are the runs it averaged
    monkeypatch.setattr(RS.T, "predict_dihedral", lambda *a, **k: pytest.fail("an unchanged ensemble was scored again"))
    assert RS.run_ensembles("smoke", root=tmp_path, data=data, log=lambda *_: None)[0] == got
    monkeypatch.undo()
    # a member whose record changed (a different spec) is a different ensemble: scored again
    stale = dict(got, members=[dict(got["members"][0], spec_key="another-run"), got["members"][1]], test_acc=-1.0)
    (folder / "ensemble_e3x2.json").write_text(json.dumps(stale))
    assert RS.run_ensembles("smoke", root=tmp_path, data=data, log=lambda *_: None)[0]["test_acc"] == got["test_acc"]
    with pytest.raises(ValueError, match="unknown ensemble"):
        RS.run_ensembles("smoke", root=tmp_path, data=data, names=["nope"])
    with pytest.raises(SystemExit):
        RS.main(["--profile", "smoke", "--root", str(tmp_path), "--ensembles", "--only", "e3"])


def test_an_ensemble_refuses_a_model_file_that_is_not_its_record(smoke_ensemble, tmp_path):
    """A member's model must score what its record says: another run's model file averaged in would pass unseen."""
    root, data, _, _ = smoke_ensemble
    _copy_study(root, tmp_path)
    folder = RS.out_dir("smoke", tmp_path)
    (folder / "ensemble_e3x2.json").unlink()
    rec_path = folder / "recipe_e3_seed1" / "record.json"
    rec = json.loads(rec_path.read_text())
    acc = rec["metrics"]["test"]["accuracy"]
    rec["metrics"]["test"]["accuracy"] = acc - 0.5 if acc > 0.5 else acc + 0.5  # not what the model scores
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"recipe_e3_seed1.*model\.keras.*record\.json says"):
        RS.run_ensembles("smoke", root=tmp_path, data=data, log=lambda *_: None)
    assert not (folder / "ensemble_e3x2.json").exists()  # nothing half-written


def test_each_ensemble_names_configurations_its_profiles_run():
    """An ensemble's members and the one network it is declared against are configurations of every
    profile that scores it: a name missing there would leave the page's comparison silently empty."""
    recipes = {r.name for r in RS.RECIPES}
    by_name = {e.name: e for e in RS.ENSEMBLES}
    assert all(e.recipe in recipes and (e.versus is None or e.versus in recipes) for e in RS.ENSEMBLES)
    for prof in RS.PROFILES.values():
        for name in prof.ensembles:
            e = by_name[name]
            assert e.recipe in prof.recipes and (e.versus is None or e.versus in prof.recipes), (prof.name, name)
    assert by_name["base_x2"].versus == "e15_ls" and "base_x2" in RS.PROFILES["cpu"].ensembles


def test_an_ensembles_comparison_named_after_scoring_is_added_without_scoring_again(smoke_ensemble, tmp_path, monkeypatch):
    """The one network an ensemble is compared with is part of its file; naming one later keeps the scores
    (nothing is predicted again) and writes the name."""
    root, data, got, _ = smoke_ensemble
    assert got["versus"] == "ls10"
    _copy_study(root, tmp_path)
    path = RS.out_dir("smoke", tmp_path) / "ensemble_e3x2.json"
    path.write_text(json.dumps({k: v for k, v in got.items() if k != "versus"}))  # a file from before `versus`
    monkeypatch.setattr(RS.T, "predict_dihedral", lambda *a, **k: pytest.fail("an unchanged ensemble was scored again"))
    again = RS.run_ensembles("smoke", root=tmp_path, data=data, log=lambda *_: None)[0]
    assert again == got and json.loads(path.read_text())["versus"] == "ls10"


def test_an_ensemble_never_retrains_a_member_whose_model_file_is_gone_unless_asked(smoke_ensemble, tmp_path):
    """Model files are not committed: scoring an ensemble in a fresh clone must not train its members again
    in silence (that replaced a committed record, its minutes included); it says so, and --retrain-missing does it."""
    root, data, got, _ = smoke_ensemble
    _copy_study(root, tmp_path)
    folder = RS.out_dir("smoke", tmp_path)
    (folder / "ensemble_e3x2.json").unlink()
    (folder / "recipe_e3_seed1" / "model.keras").unlink()
    rec = (folder / "recipe_e3_seed1" / "record.json").read_text()
    with pytest.raises(ValueError, match=r"recipe_e3_seed1 kept no model\.keras.*--ensembles e3x2 --retrain-missing"):
        RS.run_ensembles("smoke", root=tmp_path, data=data, log=lambda *_: None)
    assert (folder / "recipe_e3_seed1" / "record.json").read_text() == rec  # the committed record is untouched
    assert not (folder / "ensemble_e3x2.json").exists()
    # the reuse path needs no model: a scored ensemble whose members are unchanged is read back as it was
    (folder / "ensemble_e3x2.json").write_text(json.dumps(got))
    assert RS.run_ensembles("smoke", root=tmp_path, data=data, log=lambda *_: None)[0] == got
    (folder / "ensemble_e3x2.json").unlink()
    again = RS.run_ensembles("smoke", root=tmp_path, data=data, retrain_missing=True, log=lambda *_: None)[0]
    assert (folder / "recipe_e3_seed1" / "model.keras").is_file() and (folder / "ensemble_e3x2.json").is_file()
    assert again["members"][1]["run"] == "recipe_e3_seed1"


def test_the_plan_lists_the_profiles_ensembles(tmp_path):
    plan = json.loads(RS.write_plan("smoke", tmp_path).read_text())
    assert plan["ensembles"] == [{"name": "e3x2", "what": RS.ENSEMBLES[-1].what, "versus": "ls10"}]
    assert [e["name"] for e in json.loads(RS.write_plan("cpu", tmp_path).read_text())["ensembles"]] == ["e20x2", "base_x2"]
