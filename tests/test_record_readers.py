"""The facts several modules read from a run record, each read by one helper: the best validation
epoch (:func:`eurosat_lib.sanity.best_epoch`), the epochs a run trained
(:func:`eurosat_lib.runs.epochs_run`, :func:`eurosat_lib.runs.phase_epochs_run`) and the headline
runs' folder names (:data:`eurosat_lib.runs.HEADLINE_RUNS`)."""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO
from eurosat_lib import runs as R
from eurosat_lib import sanity

NAN = math.nan


def _phases(*curves: list[float] | None, key: str = "val_accuracy") -> list[dict]:
    """A record's ``history``: one phase per curve (None: a phase that did not watch ``key``)."""
    return [{"name": f"p{i}", "history": {"loss": [1.0] * len(c or [0]), **({key: c} if c is not None else {})}}
            for i, c in enumerate(curves)]  # fmt: skip


# --------------------------------------------------------------------------------------------
# best_epoch
# --------------------------------------------------------------------------------------------


def test_a_tie_at_the_end_is_the_first_maximum_or_the_last_as_asked():
    h = _phases([0.5, 0.7, 0.6, 0.7])
    assert sanity.best_epoch(h) == (2, 4)
    assert sanity.best_epoch(h, ties="last") == (4, 4)  # the last epoch equals the best: "best at the end"
    assert sanity.best_epoch(_phases([0.5, 0.7, 0.6]), ties="last") == (2, 3)
    with pytest.raises(ValueError, match="ties"):
        sanity.best_epoch(h, ties="middle")


def test_nan_epochs_are_dropped_or_count_as_the_maximum():
    h = _phases([0.5, NAN, 0.6, 0.55])
    assert sanity.best_epoch(h, finite=True) == (2, 3)  # epochs counted over the finite values
    assert sanity.best_epoch(h) == (2, 4)  # kept: numpy's rule, a NaN is the maximum
    assert sanity.best_epoch(_phases([0.6, math.inf, 0.6]), finite=True, ties="last") == (2, 2)
    assert sanity.best_epoch(_phases([NAN, NAN]), finite=True) is None


def test_last_phase_reads_the_last_phase_that_watched_the_metric():
    h = _phases([0.5, 0.8], [0.6, 0.7, 0.65], None)  # the last phase watched nothing
    assert sanity.best_epoch(h) == (2, 5)  # every phase, one after the other
    assert sanity.best_epoch(h, last_phase=True) == (2, 3)  # the fine-tune's own curve
    assert sanity.best_epoch(h, "loss") == (1, 6)
    assert sanity.best_epoch(h, "loss", last_phase=True) == (1, 1)


def test_fewer_than_two_values():
    assert sanity.best_epoch(_phases([0.4])) == (1, 1)  # one epoch is its own best: the caller checks n
    for empty in (None, [], _phases(None), _phases([])):
        assert sanity.best_epoch(empty) is None
        assert sanity.best_epoch(empty, last_phase=True) is None
    assert sanity.best_epoch({"val_accuracy": [0.2, 0.3]}) == (2, 2)  # one Keras History.history


# The three readers best_epoch replaced, as they were written: it must answer as each did.
def _old_crossover(history):
    hist = [h for h in history or [] if (h.get("history") or {}).get("val_accuracy")]
    if not hist:
        return None
    val = hist[-1]["history"]["val_accuracy"]
    return int(np.argmax(val)) + 1, len(val)


def _old_transfer(history):
    val = sanity.history_series(history, "val_accuracy")
    return None if len(val) < 2 else (val.index(max(val)) + 1, len(val))


def _old_scratch_best_last(history):
    val = [v for v in sanity.history_series(history, "val_accuracy") if np.isfinite(v)]
    return bool(len(val) >= 2 and val[-1] >= max(val))


def test_best_epoch_answers_as_each_reader_it_replaced():
    rng = random.Random(0)
    for _ in range(3000):
        # few distinct values, so that ties (at the end too) are common; NaNs for the scratch reader
        curves = [[rng.choice([0.1, 0.2, 0.3]) for _ in range(rng.randint(0, 4))] if rng.random() > 0.2 else None
                  for _ in range(rng.randint(1, 3))]  # fmt: skip
        h = _phases(*curves)
        assert sanity.best_epoch(h, last_phase=True) == _old_crossover(h), h
        b = sanity.best_epoch(h)
        assert (b if b and b[1] >= 2 else None) == _old_transfer(h), h
        h_nan = _phases(*[[NAN if rng.random() < 0.2 else v for v in c] if c else c for c in curves])
        b = sanity.best_epoch(h_nan, finite=True, ties="last")
        assert (b is not None and b[1] >= 2 and b[0] == b[1]) == _old_scratch_best_last(h_nan), h_nan


def test_scratch_trace_reads_its_best_epoch_and_epochs_through_the_helpers(tmp_path):
    from eurosat_lib.experiments import negative_transfer as NT

    run = tmp_path / "scratch_n5_seed0"
    R.write_record(run, params={"tags": {"budget": {"train_images": 50, "steps": 96}}},
                   history=[{"name": "scratch", "history": {"val_accuracy": [0.2, 0.4, NAN, 0.4]}}],
                   timings={"phases": {"scratch": {"epochs_run": 4}}})  # fmt: skip
    t = NT.scratch_trace(run)
    assert t["scratch_best_last"] is True  # 0.4 again at the end: its best came in its last epoch
    assert (t["scratch_val_before"], t["scratch_val_last"], t["scratch_epochs"], t["scratch_steps"]) == (0.4, 0.4, 4, 96)
    R.write_record(run, params={}, history=[{"name": "scratch", "history": {"val_accuracy": [0.5]}}])
    t = NT.scratch_trace(run)
    assert t["scratch_best_last"] is False and t["scratch_epochs"] == 0 and math.isnan(t["scratch_val_before"])


# --------------------------------------------------------------------------------------------
# epochs_run
# --------------------------------------------------------------------------------------------


def test_epochs_run_in_total_and_per_phase():
    rec = {"timings": {"phases": {"head": {"epochs_run": 14, "seconds": 3.0}, "finetune": {"epochs_run": 6},
                                  "extra": {"seconds": 1.0}}}}  # fmt: skip
    assert R.epochs_run(rec) == 20  # a phase without a count adds nothing
    assert (R.phase_epochs_run(rec, "head"), R.phase_epochs_run(rec, "finetune")) == (14, 6)
    assert R.phase_epochs_run(rec, "extra") is None and R.phase_epochs_run(rec, "missing") is None
    assert R.phase_epochs_run(rec, None) is None


def test_epochs_run_of_a_record_without_timings():
    for rec in (None, {}, {"timings": None}, {"timings": {"fit_seconds": 3.0}}, {"timings": {"phases": {}}}):
        assert R.epochs_run(rec) is None
        assert R.phase_epochs_run(rec, "head") is None


def test_epochs_run_of_a_committed_record_and_its_readers():
    from eurosat_lib.summaries.negative_transfer import reference_scratch

    rec = R.read(REPO / "book" / "runs" / "cpu" / "reference" / R.HEADLINE_RUNS["scratch_plateau"])
    assert R.epochs_run(rec) == sum(ph["epochs_run"] for ph in rec["timings"]["phases"].values())
    assert reference_scratch(REPO / "book" / "runs" / "cpu" / "02_negative_transfer")["epochs_run"] == R.epochs_run(rec)


# --------------------------------------------------------------------------------------------
# The headline runs' names: one mapping, every module reads it
# --------------------------------------------------------------------------------------------


def test_headline_run_dir():
    assert list(R.HEADLINE_RUNS) == ["frozen", "finetune", "scratch", "scratch_plateau", "recipe"]
    assert R.headline_run_dir("book/runs/cpu", "finetune") == Path("book/runs/cpu/reference/mobilenetv2_035_finetune")
    with pytest.raises(KeyError, match="no headline run 'tuned'"):
        R.headline_run_dir("book/runs/cpu", "tuned")
    for key in R.HEADLINE_RUNS:  # the committed cpu profile has every one
        assert (R.headline_run_dir(REPO / "book" / "runs" / "cpu", key) / "record.json").is_file(), key


def test_every_module_names_the_headline_runs_from_the_one_mapping():
    from eurosat_lib import report
    from eurosat_lib.experiments import crossover as CX
    from eurosat_lib.summaries import negative_transfer as SNT

    assert [name for name, _ in report.REFERENCE_RUNS] == list(R.HEADLINE_RUNS.values())
    assert list(report.REFERENCE_LABELS) == list(R.HEADLINE_RUNS)
    assert SNT.SCRATCH_REFERENCE == R.HEADLINE_RUNS["scratch_plateau"]
    found = CX.headline_runs(SimpleNamespace(out_dir=str(REPO / "book" / "runs" / "cpu" / "03_finetune")))
    assert found == {k: R.headline_run_dir(REPO / "book" / "runs" / "cpu", k) for k in CX.HEADLINE_KEYS}
    assert set(CX.HEADLINE_KEYS) <= set(R.HEADLINE_RUNS)


def test_reference_runs_script_names_its_runs_from_the_mapping():
    spec = importlib.util.spec_from_file_location("reference_runs_names", REPO / "scripts" / "reference_runs.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    assert {k: s.name for k, s in ref.SPECS.items()} == {k: v for k, v in R.HEADLINE_RUNS.items() if k != "recipe"}
    recipe = ref.recipe_spec(str(REPO / "book" / "runs" / "cpu" / "recipe_study"))
    assert recipe is not None and recipe.name == R.HEADLINE_RUNS["recipe"]


# --------------------------------------------------------------------------------------------
# Two functions that shared a name
# --------------------------------------------------------------------------------------------


def test_phases_in_words_is_chapter_4s_and_budget_words_chapter_3s():
    from eurosat_lib.summaries import finetune as SF
    from eurosat_lib.summaries import overfitting as SO

    assert not hasattr(SO, "budget_words") and hasattr(SF, "budget_words")
    rec = {"params": {"phases": [{"name": "head", "epochs": 20, "learning_rate": 1e-3, "use_feature_cache": True},
                                 {"name": "finetune", "epochs": 5, "learning_rate": 1e-4, "unfreeze": "all"}]},
           "timings": {"phases": {"head": {"epochs_run": 14}}}}  # fmt: skip
    words = SO.phases_in_words(rec)
    assert words[0].startswith("a head on the frozen base's cached features: 14 epochs of up to 20,")
    assert words[1].startswith("every layer: 5 epochs, learning rate 0.0001")  # no count: its cap
