"""eurosat_lib.runs: run records (typed, atomic, old records still load), reuse-or-run with a
folder lock, files a later step needs, machine load in timings, gather into a table."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np
import pytest

from eurosat_lib import evaluation as ev
from eurosat_lib import runs


def onehot_probs(pred, k, conf=1.0):
    pred = np.asarray(pred)
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


# --------------------------------------------------------------------------------------------
# Histories
# --------------------------------------------------------------------------------------------


def test_combine_history_phases():
    head = {"loss": [1.0, 0.8], "val_loss": [1.1, 0.9], "accuracy": [0.5, 0.6]}
    fine = {"name": "fine-tune", "history": {"loss": [0.5, 0.4, 0.3], "val_loss": [0.6, 0.5, 0.5]}}
    merged, bounds, names = runs.combine_history([head, fine])
    assert bounds == [2] and names == ["phase 1", "fine-tune"]
    assert merged["loss"] == [1.0, 0.8, 0.5, 0.4, 0.3]
    assert merged["accuracy"][:2] == [0.5, 0.6] and all(math.isnan(v) for v in merged["accuracy"][2:])
    assert runs.combine_history(head) == ({k: [float(x) for x in v] for k, v in head.items()}, [], ["phase 1"])
    with pytest.raises(TypeError):
        runs.combine_history(3)


# --------------------------------------------------------------------------------------------
# Run records
# --------------------------------------------------------------------------------------------


def _fake_metrics(acc_pred, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, 40)
    pred = np.where(rng.random(40) < acc_pred, y, (y + 1) % 10)
    return ev.evaluate_predictions(y, onehot_probs(pred, 10, 0.9))


def _write(run_dir, status="complete", **params):
    return runs.write_record(
        run_dir,
        params={"backbone": "resnet", "lr": 1e-3, "seed": 0, "aug": {"flip": True}, **params},
        metrics={"test": _fake_metrics(0.8), "val": _fake_metrics(0.9, 1)},
        history=[{"loss": [1.0, np.float32(0.5)]}, {"name": "finetune", "history": {"loss": [0.3, float("nan")]}}],
        timings={"fit_seconds": 100.0, "eval_seconds": 5.0, "inference_images_per_s": 900.0,
                 "phases": {"head": {"seconds": 60.0, "resumed": False}}},
        model_info={"backbone": "resnet", "params": {"trainable": 1000, "non_trainable": 234, "total": 1234}},
        extra={"note": np.int64(3)},
        status=status,
    )


def test_run_record_round_trip(tmp_path):
    path = _write(tmp_path / "r1")
    assert path == tmp_path / "r1" / runs.RUN_RECORD
    rec = runs.read(tmp_path / "r1")
    assert rec == runs.read(path)
    assert rec["status"] == "complete" and rec["params"]["aug"] == {"flip": True}
    assert rec["metrics"]["test"]["confusion_matrix"] == _fake_metrics(0.8)["confusion_matrix"]
    assert rec["history"][1]["history"]["loss"] == [0.3, None]  # NaN stored as null (strict JSON)
    assert rec["extra"] == {"note": 3}
    env = rec["environment"]
    for key in ("eurosat_lib", "python", "numpy", "keras", "keras_backend", "platform", "cpu_count", "gpus", "timestamp"):
        assert key in env
    assert env["timestamp"].endswith("+00:00")
    assert "hostname" not in env and "node" not in env
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    if len(platform.node()) >= 6:
        assert platform.node() not in text


def test_write_run_record_validates(tmp_path):
    with pytest.raises(ValueError, match="status"):
        runs.write_record(tmp_path, params={}, status="done")
    with pytest.raises(TypeError, match=r"record\.params\.fn: .* is not JSON-serialisable"):
        runs.write_record(tmp_path, params={"fn": print})
    assert not list(tmp_path.iterdir())


def test_read_run_record_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / "record.json")):
        runs.read(tmp_path / "nope")
    bad = tmp_path / "bad" / "record.json"
    bad.parent.mkdir()
    bad.write_text('{"status": "compl')
    with pytest.raises(ValueError, match=f"{bad}.*not valid JSON"):
        runs.read(bad.parent)


def test_record_write_is_atomic(tmp_path, monkeypatch):
    _write(tmp_path, lr=0.1)
    before = (tmp_path / "record.json").read_text()
    real_write_text = Path.write_text

    def crash_mid_write(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)  # half the bytes...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(Path, "write_text", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, lr=0.2)
    monkeypatch.undo()
    assert (tmp_path / "record.json").read_text() == before
    assert runs.read(tmp_path)["params"]["lr"] == 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]  # no temp files left


def test_gather_runs(tmp_path):
    _write(tmp_path / "exp" / "resnet_s0", seed=0)
    _write(tmp_path / "exp" / "resnet_s1", seed=1)
    _write(tmp_path / "exp" / "crashed", status="running", seed=2)
    (tmp_path / "exp" / "empty").mkdir()  # a folder without a record is not a run
    df = runs.gather(tmp_path)
    assert len(df) == 2
    assert df["run"].tolist() == ["exp/resnet_s0", "exp/resnet_s1"]
    for col in (
        "run", "status", "backbone", "lr", "seed", "aug.flip",
        "test_accuracy", "test_macro_f1", "test_ece", "test_nll", "val_accuracy", "val_ece",
        "total_params", "trainable_params", "fit_seconds", "inference_images_per_s", "total_seconds",
    ):
        assert col in df.columns, col
    assert df["seed"].tolist() == [0, 1]
    assert df["test_accuracy"].iloc[0] == pytest.approx(_fake_metrics(0.8)["accuracy"])
    assert df["total_seconds"].tolist() == [105.0, 105.0]  # rates are not summed
    assert df["total_params"].tolist() == [1234, 1234] and df["trainable_params"].tolist() == [1000, 1000]
    assert df["phases.head.seconds"].tolist() == [60.0, 60.0]  # nested timings flattened
    assert (df["status"] == "complete").all()

    everything = runs.gather(tmp_path, include_incomplete=True)
    assert len(everything) == 3 and set(everything["status"]) == {"complete", "running"}

    # A corrupt record is reported and skipped, not fatal for the whole table.
    (tmp_path / "exp" / "broken").mkdir()
    (tmp_path / "exp" / "broken" / "record.json").write_text("{")
    with pytest.warns(UserWarning, match="broken"):
        assert len(runs.gather(tmp_path)) == 2
    assert list(runs.gather(tmp_path / "exp" / "empty").columns)[:2] == ["run", "status"]


