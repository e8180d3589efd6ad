"""Sanity flags: deliberately broken runs (synthetic histories and one real Keras run that blows
up) get the right flags, healthy ones none, and every committed record carries its flags."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from eurosat_lib import sanity as S


def _phase(name, loss, val_acc, val_loss=None):
    h = {"loss": list(loss), "val_accuracy": list(val_acc)}
    if val_loss is not None:
        h["val_loss"] = list(val_loss)
    return {"name": name, "history": h}


def _metrics(val=0.85, test=0.86, n_val=300, n_test=5400):
    return {"val": {"accuracy": val, "n": n_val}, "test": {"accuracy": test, "n": n_test}}


HEALTHY = [_phase("head", [2.3, 1.0, 0.6, 0.5, 0.45, 0.44], [0.5, 0.8, 0.84, 0.85, 0.85, 0.849])]


def test_a_healthy_run_has_no_flags():
    assert S.flags(HEALTHY, _metrics()) == []


def test_wilson_interval_known_values():
    # 10 % of 300: the Wilson 95 % interval is 7.09 % .. 13.92 % (scipy.stats.binomtest agrees).
    lo, hi = S.wilson_interval(0.1, 300)
    assert lo == pytest.approx(0.07095, abs=1e-5) and hi == pytest.approx(0.13917, abs=1e-5)
    with pytest.raises(ValueError, match="n >= 1"):
        S.wilson_interval(0.5, 0)


@pytest.mark.parametrize(
    ("acc", "n", "flagged"),
    [
        (0.10, 300, True),  # the chapter-3 LR-0.01 collapse and the ch. 5 EfficientNet "scratch" run
        (0.10, 5400, True),
        (0.065, 200, True),  # below chance is no better
        (0.15, 200, True),  # lower end 10.7 % <= 12 %: cannot show it beats chance by 2 points
        (0.14, 5400, False),  # lower end 13.1 %: above chance by more than the margin
        (0.19, 200, False),
        (0.85, 300, False),
    ],
)
def test_chance_level_rule(acc, n, flagged):
    got = S.flags(HEALTHY, {"val": {"accuracy": acc, "n": n}})
    assert ("chance-level" in got) is flagged


def test_chance_level_on_test_split_only_and_uses_num_classes():
    assert "chance-level" in S.flags(HEALTHY, _metrics(val=0.85, test=0.1))
    # 30 % on a 3-class task is chance; on a 10-class task it is not.
    assert "chance-level" in S.flags(HEALTHY, {"val": {"accuracy": 0.3, "n": 300}}, num_classes=3)
    assert "chance-level" not in S.flags(HEALTHY, {"val": {"accuracy": 0.3, "n": 300}}, num_classes=10)
    # A split without n is judged with n_eval, or skipped when nothing says how many images.
    assert S.flags(HEALTHY, {"val": {"accuracy": 0.1}}) == []
    assert "chance-level" in S.flags(HEALTHY, {"val": {"accuracy": 0.1}}, n_eval=300)


def test_diverged_nan_loss():
    hist = [_phase("head", [2.3, 1.2, math.nan], [0.3, 0.5, 0.5])]
    assert "diverged" in S.flags(hist, _metrics())
    hist = [_phase("head", [2.3, 1.2, 1.0], [0.3, 0.5, 0.5], val_loss=[2.0, float("inf"), 1.5])]
    assert "diverged" in S.flags(hist, _metrics())


def test_diverged_when_finetuning_blows_up_even_if_it_creeps_down_again():
    # Chapter 3, LR 0.01: the head ends at 0.15, fine-tuning starts at 26 and ends at 18 —
    # below its own phase start, far above the run's start (2.76).
    hist = [_phase("head", [2.76, 0.5, 0.153], [0.6, 0.85, 0.88]), _phase("finetune", [26.5, 20.0, 18.5], [0.1, 0.1, 0.1])]
    assert S.flags(hist, _metrics(val=0.1, test=0.1)) == ["chance-level", "diverged"]
    # A fine-tuning phase whose loss merely starts above the head's end is not divergence.
    ok = [_phase("head", [2.76, 0.5, 0.153], [0.6, 0.85, 0.88]), _phase("finetune", [1.2, 0.6, 0.38], [0.84, 0.87, 0.87])]
    assert "diverged" not in S.flags(ok, _metrics())


def test_not_converged_when_still_rising_beyond_noise():
    # The headline scratch run: 53.5 -> 78.6 % in 5 epochs on 5,400 validation images.
    rising = [_phase("scratch", [1.33, 1.0, 0.8, 0.7, 0.64], [0.535, 0.651, 0.75, 0.773, 0.786])]
    assert S.flags(rising, _metrics(val=0.786, test=0.79, n_val=5400)) == ["not converged"]
    # A slower climb (+4.6 points over the last 3 epochs): beyond the noise of 5,400 validation
    # images (SE of a difference 0.8 points), within that of 50 (8 points).
    slow = [_phase("scratch", [1.33, 1.0, 0.8, 0.7, 0.64], [0.70, 0.74, 0.75, 0.76, 0.786])]
    assert S.flags(slow, _metrics(n_val=5400)) == ["not converged"]
    assert "not converged" not in S.flags(slow, _metrics(n_val=50))
    # Best epoch is the last one, but only by a hair: a plateau, not a climb.
    plateau = [_phase("head", [2.0, 0.6, 0.5, 0.45, 0.44, 0.43], [0.6, 0.84, 0.85, 0.85, 0.849, 0.852])]
    assert "not converged" not in S.flags(plateau, _metrics(n_val=300))
    # Rising a lot but the best epoch was earlier: not "stopped while improving".
    dip = [_phase("head", [2.0, 1.0, 0.8, 0.7], [0.3, 0.9, 0.5, 0.8])]
    assert "not converged" not in S.flags(dip, _metrics(n_val=300))
    # n_eval overrides the validation split's n (the curve may be monitored on another set).
    assert "not converged" in S.flags(rising, {"val": {"accuracy": 0.786}}, n_eval=5400)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        S.flags(HEALTHY, _metrics(), num_classes=1)
    with pytest.raises(ValueError, match="window"):
        S.flags(HEALTHY, _metrics(), window=0)


def test_history_accepts_a_keras_history_dict_and_arrays():
    assert S.history_series({"loss": np.array([1.0, 2.0])}, "loss") == [1.0, 2.0]
    assert S.history_series(None, "loss") == []
    assert S.flags({"loss": np.array([1.0, 3.0])}, None) == ["diverged"]


def test_a_really_broken_keras_run_is_flagged():
    """A real (tiny) Keras fit with an absurd learning rate: the loss explodes, predictions collapse."""
    code = r"""
import json, os, numpy as np
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras
from eurosat_lib.sanity import flags
rng = np.random.default_rng(0)
x = rng.normal(size=(400, 16)).astype("float32"); y = np.repeat(np.arange(10), 40); x[:, :10] += 2 * np.eye(10)[y]
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
m.compile(keras.optimizers.SGD(learning_rate=1e4), "sparse_categorical_crossentropy", metrics=["accuracy"])
h = m.fit(x[:300], y[:300], validation_data=(x[300:], y[300:]), epochs=4, batch_size=50, verbose=0)
pred = np.nan_to_num(m.predict(x[300:], verbose=0)).argmax(1)
metrics = {"val": {"accuracy": float((pred == y[300:]).mean()), "n": 100}}
print(json.dumps({"flags": flags(h.history, metrics), "loss": [float(v) for v in h.history["loss"]]}))
"""
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "diverged" in got["flags"], got
    assert "chance-level" in got["flags"], got


def _records():
    return sorted((REPO / "book" / "runs").rglob("record.json"))


def test_every_committed_record_carries_its_own_flags():
    records = _records()
    assert len(records) > 100
    stale = []
    for path in records:
        rec = json.loads(path.read_text())
        if rec.get("warnings") != S.flags_from_record(rec):
            stale.append(str(path.relative_to(REPO)))
    assert not stale, f"run `python scripts/flag_records.py`: {stale[:5]}"
    # No record at chance level without its flag (the book's acceptance rule).
    for path in records:
        rec = json.loads(path.read_text())
        low = [s for s, m in (rec.get("metrics") or {}).items() if isinstance(m, dict) and m.get("accuracy", 1) <= 0.15]
        if low:
            assert "chance-level" in rec["warnings"], (path, low)


def test_flag_records_script_check_mode(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    rec = {"schema": 1, "status": "complete", "metrics": {"val": {"accuracy": 0.1, "n": 300}}, "history": HEALTHY}
    (run / "record.json").write_text(json.dumps(rec, indent=2) + "\n")
    script = str(REPO / "scripts" / "flag_records.py")
    check = subprocess.run([sys.executable, script, "--check", str(tmp_path / "runs")], capture_output=True, text=True)
    assert check.returncode == 1 and "chance-level" in check.stdout
    subprocess.run([sys.executable, script, str(tmp_path / "runs")], check=True, capture_output=True)
    new = json.loads((run / "record.json").read_text())
    assert list(new)[:3] == ["schema", "status", "warnings"] and new["warnings"] == ["chance-level"]
    assert {k: v for k, v in new.items() if k != "warnings"} == rec  # nothing else changed
    assert subprocess.run([sys.executable, script, "--check", str(tmp_path / "runs")], capture_output=True).returncode == 0
    bad = subprocess.run([sys.executable, script, str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_a_fine_tune_still_climbing_back_towards_its_head_is_not_converged():
    """Chapter 6's two-epoch fine-tunes: the head phase ends at 88 %, fine-tuning drops to 78 % and
    climbs to 83.6 % when the budget ends: still improving, although below the head's best."""
    hist = [_phase("head", [2.0, 0.6, 0.5], [0.80, 0.87, 0.88]), _phase("finetune", [1.48, 0.43], [0.782, 0.836])]
    assert S.flags(hist, _metrics(val=0.83, test=0.83, n_val=500)) == ["not converged"]
    # the same climb within the noise of the 50 images it was watched on is not shown
    assert "not converged" not in S.flags(hist, _metrics(val=0.83, test=0.83, n_val=50))
    # a fine-tune that rose and levelled off is converged, whatever the head did
    flat = [_phase("head", [2.0, 0.6, 0.5], [0.80, 0.87, 0.88]), _phase("finetune", [1.0, 0.5, 0.4, 0.4], [0.85, 0.90, 0.905, 0.904])]
    assert "not converged" not in S.flags(flat, _metrics(n_val=5400))


def test_the_noise_of_a_watched_subset_comes_from_the_phase_that_watched_it():
    rec = {"history": [_phase("head", [2.0, 0.6], [0.80, 0.88]), _phase("finetune", [1.48, 0.43], [0.782, 0.836])],
           "params": {"phases": [{"name": "head"}, {"name": "finetune", "val_n_per_class": 2}]},
           "metrics": _metrics(val=0.83, test=0.83, n_val=5400), "model_info": {"num_classes": 10}}
    assert S.monitored_images(rec) == 20
    assert "not converged" not in S.flags_from_record(rec)  # 5.4 points on 20 images is noise
    rec["params"]["phases"][1]["val_n_per_class"] = 50
    assert S.monitored_images(rec) == 500 and "not converged" in S.flags_from_record(rec)
    del rec["params"]["phases"][1]["val_n_per_class"]
    assert S.monitored_images(rec) is None and "not converged" in S.flags_from_record(rec)  # the 5,400 of the split
