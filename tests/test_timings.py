"""Issue 15: a timing measured while other jobs kept the CPU busy is never shown as a figure."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
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


def test_timing_of_a_run_on_cached_features_is_not_trusted():
    """A head phase that read its features from an earlier run's cache skipped their extraction:
    its run's time is not comparable with runs that paid for it."""
    rec = _record(False)
    rec["timings"]["phases"]["head"] = {"seconds": 12.0, "features_from_cache": True}
    assert not R.timing_trusted(rec)
    rec["timings"]["phases"]["head"]["features_from_cache"] = False
    assert R.timing_trusted(rec)


def test_recorded_minutes_sum_fit_and_scoring_and_only_trusted_ones_are_shown():
    rec = _record(False)
    rec["timings"]["eval_seconds"] = 30.0
    assert R.recorded_minutes(rec) == 2.5 and R.trusted_minutes(rec) == 2.5
    rec["timings"]["contended"] = True  # still a cost the edition paid, but not a measurement
    assert R.recorded_minutes(rec) == 2.5 and np.isnan(R.trusted_minutes(rec))
    untimed = {"timings": {"eval_seconds": 30.0}}  # written before timings were kept
    assert R.recorded_minutes(untimed) is None and np.isnan(R.trusted_minutes(untimed))
    assert R.recorded_minutes(None) is None


def test_the_edition_cost_knows_every_study_the_command_line_runs():
    """The cost table finds a study by its folder: a study added to the command line (or a folder
    renamed) without telling :mod:`eurosat_lib.summaries.cost` would be counted as chapter runs."""
    import importlib

    from eurosat_lib import __main__ as cli
    from eurosat_lib.summaries import cost

    assert set(cost.STUDIES) == set(cli.STUDIES)
    for name, (module, _chapter) in cli.STUDIES.items():
        assert importlib.import_module(f"eurosat_lib.experiments.{module}").SUBDIR == name


@pytest.mark.parametrize("chapter", ["01_transfer_learning", "05_backbones"])
def test_chapters_that_compare_training_times_pay_for_their_features(chapter, monkeypatch):
    """Chapters 1 and 5 compare arms' training times: their runs never read cached features."""
    from eurosat_lib import data as D
    from eurosat_lib.experiments import transfer as TF
    from eurosat_lib.experiments.params import resolve_params

    class Called(Exception):
        pass

    def fake_run(P, spec, data, **kw):
        raise Called(kw)

    P = resolve_params(chapter, profile="smoke")
    data = D.make_synthetic(n_per_class=12, seed=0)
    module = TF if chapter == "01_transfer_learning" else BB
    monkeypatch.setattr(module, "run", fake_run)
    with pytest.raises(Called) as got:
        if module is TF:
            TF.compare_from_scratch(P, data)
        else:
            BB.compare_backbones(P, data, [BB.Candidate("MobileNetV2", 0.35, True, 64)])
    assert got.value.args[0].get("reuse_features") is False


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
    assert all(len(r) == 1 and r[0] > 0 for r in speed["round_seconds"])  # every round kept, busy or not
    rng = TR.speedup_range(speed, "b2")
    assert rng["speedup_low"].isna().all() == busy  # a withheld speed has no range either


def test_the_speedup_range_is_the_ratio_within_each_round():
    speed = pd.DataFrame({"block": ["b1", "b2", "top"], "images_per_s": [4.0, 2.0, 2.0],
                          "round_seconds": [[1.0, 2.0, 1.0], [2.0, 2.0, 3.0], [2.0, 4.0, 2.0]]})  # fmt: skip
    rng = TR.speedup_range(speed, "top")
    assert rng.loc["b1", "speedup_low"] == 2.0 and rng.loc["b1", "speedup_high"] == 2.0  # 2/1, 4/2, 2/1
    assert rng.loc["b2", "speedup_low"] == pytest.approx(2 / 3) and rng.loc["b2", "speedup_high"] == 2.0
    assert rng.loc["top", "speedup_low"] == rng.loc["top", "speedup_high"] == 1.0 and rng["speed_rounds"].eq(3).all()
    with pytest.raises(KeyError, match="reference block 'nope' was not timed"):
        TR.speedup_range(speed, "nope")
    old = speed.drop(columns="round_seconds")  # a table from before rounds were kept: no range, no error
    assert TR.speedup_range(old, "top")["speedup_low"].isna().all()


def _load(other: float) -> dict:
    return {"other_cores": other, "cpu_count": 2}


def test_wait_until_quiet_waits_out_a_lagging_load_and_gives_up_after_its_limit():
    slept, lines = [], []
    samples = iter([_load(1.4), _load(1.2), _load(0.3)])
    assert R.wait_until_quiet(60, 10, lines.append, sample=lambda: next(samples), sleep=slept.append)
    assert slept == [10, 10] and lines[0].startswith("waiting for a quiet machine") and lines[-1] == "quiet after 20 s"
    slept.clear()
    assert not R.wait_until_quiet(30, 10, lines.append, sample=lambda: _load(1.9), sleep=slept.append)
    assert slept == [10, 10, 10] and "still busy after 30 s" in lines[-1]


def test_reuse_or_run_waits_for_quiet_only_before_training(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(R, "wait_until_quiet", lambda *a, **k: calls.append(a) or True)
    make = lambda folder: R.RunRecord(params={}, metrics={"val": {"accuracy": 0.5}})  # noqa: E731
    R.reuse_or_run(tmp_path / "run", {"spec_key": "k"}, make, wait_quiet_s=120)
    assert len(calls) == 1 and calls[0][0] == 120
    R.reuse_or_run(tmp_path / "run", {"spec_key": "k"}, make, wait_quiet_s=120)  # reused: no wait
    R.reuse_or_run(tmp_path / "other", {"spec_key": "k2"}, make)  # the default starts at once
    assert len(calls) == 1
