"""Issue 15: a timing measured while other jobs kept the CPU busy is never shown as a figure."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from eurosat_lib import runs as R
from eurosat_lib.experiments import backbones as BB
from eurosat_lib.experiments import truncation as TR
from eurosat_lib.experiments.core import RunResult


def _record(contended: bool | None) -> dict:
    timings = {"fit_seconds": 120.0, "inference_images_per_s": 450.0, "phases": {"finetune": {"seconds_per_epoch": 30.0}}}
    if contended is not None:
        timings["contended"] = contended
    return {"metrics": {"val": {"accuracy": 0.9, "macro_f1": 0.9}, "test": {"accuracy": 0.89, "macro_f1": 0.89, "n": 100}},
            "timings": timings, "history": [], "model_info": {"params": {"total": 1000, "trainable": 10}}}  # fmt: skip


def test_timing_trusted_reads_the_contended_flag():
    assert R.timing_trusted(_record(False)) and R.timing_trusted(_record(None)) and R.timing_trusted(None)
    assert not R.timing_trusted(_record(True))


@pytest.mark.parametrize("contended", [False, True])
def test_backbone_rows_hide_contended_timings(contended):
    c = BB.Candidate("MobileNetV2", 0.35, True, 128)
    row = BB.leaderboard_row(c, 0, RunResult(record=_record(contended), run_dir=Path("x")))
    assert row["timing_contended"] is contended and row["val_accuracy"] == 0.9  # accuracy is kept either way
    if contended:
        assert np.isnan(row["inference_images_per_s"]) and np.isnan(row["fit_seconds"]) and np.isnan(row["finetune_s_per_epoch"])
    else:
        assert (row["inference_images_per_s"], row["fit_seconds"], row["finetune_s_per_epoch"]) == (450.0, 120.0, 30.0)


@pytest.mark.parametrize("other", [0.2, 1.8])
def test_truncation_speeds_are_withheld_when_the_machine_is_busy(monkeypatch, other):
    import keras

    def tiny(*args, **kwargs):
        inp = keras.Input((8, 8, 3))
        return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp))

    monkeypatch.setattr(TR.M, "build_model", tiny)
    monkeypatch.setattr(TR.M, "block_names", lambda backbone: ["b1", "b2"])
    monkeypatch.setattr(TR.R, "machine_load", lambda: {"other_cores": other, "cpu_count": 2})
    P = SimpleNamespace(backbone="MobileNetV2", alpha=0.35, image_size=8, speed_images=4)
    data = SimpleNamespace(images=np.zeros((4, 8, 8, 3), np.uint8))
    speed = TR.measure_speed(P, data, ["b1", "b2"], repeats=1)
    busy = other > 1.0
    assert list(speed["contended"]) == [busy, busy]
    assert speed["images_per_s"].isna().all() == busy and (speed["images_per_s"] > 0).all() == (not busy)
