"""eurosat_lib.runs: run records (typed, atomic, old records still load), reuse-or-run with a
folder lock, files a later step needs, machine load in timings, gather into a table."""

from __future__ import annotations

import json
import math
import platform
import sys
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
    if sys.platform.startswith("linux"):  # the SIMD extensions /proc/cpuinfo reports, in a fixed order
        flags = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split())
        assert env["cpu_isa"] == [f for f in runs.CPU_ISA_FLAGS if f in flags]
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




# --------------------------------------------------------------------------------------------
# Records written before runs.py still load, losslessly
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "book" / "runs").glob("**/record.json"))


def test_committed_records_load_and_round_trip_losslessly():
    assert len(COMMITTED) > 50
    for path in COMMITTED:
        original = json.loads(path.read_text())
        rec = runs.read(path.parent)
        assert rec.complete and rec.key == original["params"]["spec_key"], path
        assert rec.warnings == original.get("warnings", []) and rec["metrics"] == original["metrics"]
        assert rec.to_dict() == original, path
    # and written back, byte for byte (key order included)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for path in COMMITTED[::7]:
            runs.write(tmp, runs.read(path.parent))
            assert (Path(tmp) / "record.json").read_bytes() == path.read_bytes(), path


def test_results_page_from_records_rewritten_by_runs_is_byte_identical(tmp_path):
    """Every committed record read and written back through RunRecord: the results page
    (``python -m eurosat_lib report --profile cpu``) comes out byte-identical."""
    import shutil

    from eurosat_lib import report

    book = tmp_path / "book"
    shutil.copytree(REPO / "book" / "runs" / "cpu", book / "runs" / "cpu")
    for path in sorted(book.glob("runs/**/record.json")):
        runs.write(path.parent, runs.read(path))
        assert "warnings" in json.loads(path.read_text())  # really rewritten in the new layout
    page = report.build_results_page(book, "cpu", out=tmp_path / "results.md", images_dir=tmp_path / "images")
    assert page.read_bytes() == (REPO / "book" / "results.md").read_bytes()


def test_run_record_is_typed_and_names_bad_input(tmp_path):
    rec = runs.RunRecord(params={"spec_key": "k"}, metrics={"test": {"accuracy": 0.5}}, warnings=["at chance level"],
                         history=[{"name": "head", "history": {"loss": [1.0, 0.5]}}])  # fmt: skip
    runs.write(tmp_path, rec)
    back = runs.read(tmp_path)
    assert back.warnings == ["at chance level"] and back.phase_histories() == {"head": {"loss": [1.0, 0.5]}}
    assert back.environment["cpu_count"] and dict(back)["metrics"] == {"test": {"accuracy": 0.5}}
    with pytest.raises(TypeError, match="warnings must be a list of strings"):
        runs.RunRecord(params={}, warnings="oops")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "record.json").write_text('{"schema": 1}')
    with pytest.raises(ValueError, match=r"x/record\.json lacks 'status'/'params'"):
        runs.read(tmp_path / "x")


def test_the_light_modules_import_no_pandas_sklearn_or_keras():
    """``eurosat predict`` finds the model through runs.run_model_path before importing Keras."""
    import subprocess
    import sys

    code = ("import sys; from eurosat_lib import runs; from eurosat_lib.__main__ import cmd_predict; "
            "heavy = {'pandas', 'sklearn', 'keras', 'tensorflow', 'jax'} & set(sys.modules); assert not heavy, heavy")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_missing_model_error_names_the_command_that_makes_it(tmp_path):
    ref = tmp_path / "book" / "runs" / "cpu" / "reference" / "mobilenetv2_035_finetune"
    ref.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"Make it with: python scripts/reference_runs\.py --only finetune$"):
        runs.run_model_path(ref)
    smoke = tmp_path / "book" / "runs" / "smoke" / "reference" / "mobilenetv2_035_frozen"
    smoke.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"--only frozen --profile smoke$"):
        runs.run_model_path(smoke)
    with pytest.raises(FileNotFoundError, match="running again the chapter or script"):
        runs.run_model_path(tmp_path)


# --------------------------------------------------------------------------------------------
# reuse_or_run
# --------------------------------------------------------------------------------------------


def _producer(calls, files=("model.keras",), fail=False):
    def produce(folder):
        calls.append(folder)
        if fail:
            raise RuntimeError("training blew up")
        for f in files:
            (folder / f).write_text("weights")
        return runs.RunRecord(params={}, metrics={"test": {"accuracy": 0.9}}, timings={"fit_seconds": 1.5})

    return produce


def test_reuse_or_run_reuses_reruns_and_records_failures(tmp_path):
    folder = tmp_path / "run"
    calls = []
    rec = runs.reuse_or_run(folder, {"spec_key": "a", "lr": 1}, _producer(calls))
    assert len(calls) == 1 and rec.complete and rec.params == {"spec_key": "a", "lr": 1}
    assert json.loads((folder / "params.json").read_text()) == {"spec_key": "a", "lr": 1}
    assert rec.timings["fit_seconds"] == 1.5 and "contended" in rec.timings and "start" in rec.timings["machine_load"]
    assert rec.warnings == []  # sanity flags: none provable from these numbers (no history, no n)
    assert runs.reuse_or_run(folder, {"spec_key": "a", "lr": 1}, _producer(calls)) == rec and len(calls) == 1
    # Issue 16 item 7: a finished run whose model a later step needs is re-created, not reused.
    (folder / "model.keras").unlink()
    assert runs.reuse_or_run(folder, {"spec_key": "a"}, _producer(calls)).complete and len(calls) == 1  # not needed
    runs.reuse_or_run(folder, {"spec_key": "a"}, _producer(calls), needs=["model.keras"])
    assert len(calls) == 2 and (folder / "model.keras").is_file()
    # A different run under the same name starts clean (no stale files resumed).
    (folder / "stale.txt").write_text("x")
    runs.reuse_or_run(folder, {"spec_key": "b"}, _producer(calls))
    assert len(calls) == 3 and not (folder / "stale.txt").exists()
    with pytest.raises(RuntimeError, match="blew up"):
        runs.reuse_or_run(folder, {"spec_key": "c"}, _producer(calls, fail=True))
    assert runs.read(folder).status == "failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]  # the lock lives beside the folder


@pytest.mark.parametrize("damage", [b"\xff\xfe{", b'{"spec_key": ', b"[1, 2]"], ids=["bytes", "truncated", "other-layout"])
def test_unreadable_params_json_is_reported_and_rewritten(tmp_path, damage):
    """Issue 16 item 4: a damaged params.json no longer bricks the run; the folder's
    checkpoints are kept (it is not known to be another run) and the file is rewritten."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "keep.txt").write_text("resume me")
    (folder / "params.json").write_bytes(damage)
    calls = []
    if damage == b"[1, 2]":  # valid JSON without a key: treated like a folder of another run
        runs.reuse_or_run(folder, {"spec_key": "a"}, _producer(calls))
        assert not (folder / "checkpoints").exists()
    else:
        with pytest.warns(RuntimeWarning, match=r"params\.json is unreadable .*rewriting it"):
            runs.reuse_or_run(folder, {"spec_key": "a"}, _producer(calls))
        assert (folder / "checkpoints" / "keep.txt").is_file()
    assert json.loads((folder / "params.json").read_text()) == {"spec_key": "a"} and len(calls) == 1


_LOCK_CHILD = """
import json, sys, time
from pathlib import Path
from eurosat_lib import runs
folder, log = Path(sys.argv[1]), Path(sys.argv[2])
def produce(f):
    with open(log, "a") as fh:
        fh.write("produce\\n")
    time.sleep(1.5)  # long enough for the other process to arrive while this one holds the folder
    return runs.RunRecord(params={}, metrics={"test": {"accuracy": 0.75}})
rec = runs.reuse_or_run(folder, {"spec_key": "same"}, produce)
print(json.dumps(rec.metrics))
"""


def test_two_processes_in_one_run_folder_produce_once(tmp_path):
    """Issue 16 item 2 (the lock itself; tests/test_reliability.py runs real training): the second
    process waits for the first, says who holds the folder, then reuses the finished run."""
    import subprocess
    import sys
    import time

    script, log, folder = tmp_path / "child.py", tmp_path / "log.txt", tmp_path / "runs" / "r"
    script.write_text(_LOCK_CHILD)
    first = subprocess.Popen([sys.executable, str(script), str(folder), str(log)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.Popen([sys.executable, str(script), str(folder), str(log)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert log.read_text() == "produce\n"
    assert json.loads(out1) == json.loads(out2) == {"test": {"accuracy": 0.75}}
    assert f"run folder {folder} is in use by process {first.pid}" in err2
    assert runs.read(folder).complete


def test_busy_folder_fails_after_the_timeout_naming_folder_and_holder(tmp_path):
    import os

    folder = tmp_path / "r"
    with runs.run_lock(folder):
        # A second lock object, from another thread: flock() locks belong to the open file,
        # so it waits like another process would (tests/test_reliability.py uses processes).
        import threading

        err = []

        def other():
            try:
                with runs.run_lock(folder, timeout=0.2):
                    pass
            except runs.RunFolderBusy as e:
                err.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert err and str(folder) in err[0] and f"process {os.getpid()}" in err[0]


# --------------------------------------------------------------------------------------------
# Machine load (issue 15 item 1)
# --------------------------------------------------------------------------------------------


def test_machine_load_and_the_contended_rule(monkeypatch):
    monkeypatch.setattr(runs.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runs, "_busy_cores", lambda window: 1.9)
    monkeypatch.setattr(runs, "_LAST_SAMPLE", None)
    monkeypatch.setattr(runs, "_process_start", lambda: runs.time.time() - 600)
    monkeypatch.setattr(runs, "_own_cpu_seconds", lambda: 60.0)  # 0.1 core over 10 minutes, idle now
    monkeypatch.setattr(runs.os, "getloadavg", lambda: (1.6, 1.2, 0.8))
    busy = runs.machine_load()  # 1.9 cores busy, none of them ours: other processes
    assert busy["loadavg"] == [1.6, 1.2, 0.8] and busy["own_cores"] == pytest.approx(0.1, abs=0.01)
    assert busy["other_cores"] == pytest.approx(1.9, abs=0.01) and busy["busy_cores"] == 1.9
    monkeypatch.setattr(runs, "_busy_cores", lambda window: 0.3)
    quiet = runs.machine_load()
    assert quiet["other_cores"] == pytest.approx(0.3, abs=0.01)
    assert runs.is_contended(busy) and not runs.is_contended(quiet)
    t = runs.load_timings(quiet, busy)
    assert t["contended"] is True and t["machine_load"]["start"] == quiet and "rule" in t["machine_load"]
    # This process's own training is not counted as contention: 1.9 cores busy, 1.8 of them ours.
    monkeypatch.setattr(runs, "_busy_cores", lambda window: 1.9)
    monkeypatch.setattr(runs, "_LAST_SAMPLE", (runs.time.time() - 120, 60.0 - 216.0, 0.0))
    monkeypatch.setattr(runs.os, "getloadavg", lambda: (1.9, 1.9, 1.5))
    own = runs.machine_load()
    assert own["own_cores"] == pytest.approx(1.8, abs=0.01) and not runs.is_contended(own)


def test_queued_threads_of_our_own_are_no_contention(monkeypatch):
    """A crossover run alone on the machine: load 2.64 (TensorFlow's threads queue for the 2
    cores), 1.6 cores busy, 1.59 of them its own. "Load minus own use" read 1.05 other cores and
    flagged it contended; the CPU actually used by others over the run was 0.01 cores."""
    monkeypatch.setattr(runs.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runs, "_own_cpu_seconds", lambda: 1000.0 + 1.59 * 600)
    monkeypatch.setattr(runs, "_LAST_SAMPLE", (runs.time.time() - 600, 1000.0, 1.5))
    monkeypatch.setattr(runs.os, "getloadavg", lambda: (2.64, 2.54, 2.35))
    monkeypatch.setattr(runs, "_busy_cores", lambda window: 1.6)
    alone = runs.machine_load()
    assert alone["other_cores"] == pytest.approx(0.01, abs=0.02) and not runs.is_contended(alone)
    # the same load with another job sharing the CPU over the run: 2 cores busy, 0.9 ours
    monkeypatch.setattr(runs, "_own_cpu_seconds", lambda: 1000.0 + 0.9 * 600)
    monkeypatch.setattr(runs, "_LAST_SAMPLE", (runs.time.time() - 600, 1000.0, 1.5))
    monkeypatch.setattr(runs, "_busy_cores", lambda window: 2.0)
    shared = runs.machine_load()
    assert shared["other_cores"] == pytest.approx(1.1, abs=0.02) and runs.is_contended(shared)
    # without psutil, the load average is all there is
    monkeypatch.setattr(runs, "_busy_cores", lambda window: None)
    monkeypatch.setattr(runs, "_LAST_SAMPLE", (runs.time.time() - 600, 1000.0, 0.9))
    fallback = runs.machine_load()
    assert fallback["other_cores"] == pytest.approx(2.64 - 0.9, abs=0.02)


def test_a_job_in_the_middle_of_a_run_is_caught_by_the_samples_taken_while_it_trains(tmp_path, monkeypatch):
    """Start and end quiet, another job in between: the end sample alone averages it away (a test
    suite on both cores for 10 of a run's 50 minutes reads 0.4 cores there); the samples the run
    takes while it trains each cover their own interval, so one of them shows it."""
    quiet = {"loadavg": [0.1, 0.1, 0.1], "busy_cores": 0.1, "own_cores": 0.0, "other_cores": 0.1, "cpu_count": 2}
    busy = {**quiet, "busy_cores": 2.0, "other_cores": 1.8}
    state = {"calls": 0, "during": 0}

    def sample(window=0.1):
        state["calls"] += 1
        return busy if state["during"] == 2 else quiet

    def produce(folder):
        # wait until the monitor has taken three samples; the second of them sees the other job
        while len(samples_seen) < 3:
            runs.time.sleep(0.005)
        return runs.RunRecord(params={}, metrics={"test": {"accuracy": 0.9}}, timings={"fit_seconds": 1.0})

    samples_seen: list = []

    class Spy(runs.LoadMonitor):
        def _run(self):
            while not self._stop.wait(self.interval_s):
                state["during"] += 1
                self.samples.append(sample())
                samples_seen.append(1)

    monkeypatch.setattr(runs, "machine_load", sample)
    monkeypatch.setattr(runs, "LoadMonitor", lambda: Spy(interval_s=0.01))
    rec = runs.reuse_or_run(tmp_path / "r", {"spec_key": "a"}, produce)
    load = rec.timings["machine_load"]
    assert load["start"]["other_cores"] == 0.1 and load["end"]["other_cores"] == 0.1  # both ends quiet
    assert load["during"]["interval_s"] == 0.01 and 1.8 in load["during"]["other_cores"]
    assert rec.timings["contended"] is True and "any interval" in load["rule"]
    # the same run with a quiet middle is not flagged, and says what it sampled
    state["during"] = -100
    samples_seen.clear()
    rec = runs.reuse_or_run(tmp_path / "q", {"spec_key": "b"}, produce)
    assert rec.timings["contended"] is False and rec.timings["machine_load"]["during"]["other_cores"][:3] == [0.1] * 3


def test_discard_interrupted_deletes_only_an_unfinished_run_no_one_is_running(tmp_path, capsys):
    import subprocess

    assert runs.discard_interrupted(tmp_path / "none") is False
    done = tmp_path / "done"
    runs.reuse_or_run(done, {"spec_key": "a"}, _producer([]))
    assert runs.discard_interrupted(done) is False and (done / "record.json").is_file()
    running = tmp_path / "running"
    runs.write(running, runs.RunRecord(params={"spec_key": "b"}, status="running"))
    (running / "phase_head.weights.h5").write_text("checkpoint")
    assert runs.discard_interrupted(running) is True and not running.exists()
    bare = tmp_path / "bare"  # checkpoints, no record: a run killed before its first record
    bare.mkdir()
    (bare / "state.json").write_text("{}")
    assert runs.discard_interrupted(bare) is True and not bare.exists()
    # another process holds the run's lock (it is training it): nothing is deleted
    busy = tmp_path / "busy"
    runs.write(busy, runs.RunRecord(params={"spec_key": "c"}, status="running"))
    lock_file = busy.with_name(".busy.lock")  # the lock beside the folder
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               f"l = FileLock({str(lock_file)!r}); l.acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.RunFolderBusy, match="busy"):
            runs.discard_interrupted(busy)
        assert (busy / "record.json").is_file()
        assert "waiting" not in capsys.readouterr().err  # it does not wait, so it does not say so
    finally:
        holder.kill()
        holder.wait()


def test_the_load_monitor_samples_on_its_interval_and_survives_a_failed_sample():
    got = []

    def sample():
        got.append(len(got))
        if len(got) == 2:
            raise OSError("psutil could not read /proc/stat")
        return {"other_cores": float(len(got)), "cpu_count": 2}

    with runs.LoadMonitor(interval_s=0.01, sample=sample) as m:
        while len(got) < 4:
            runs.time.sleep(0.005)
    n = len(m.samples)
    runs.time.sleep(0.05)
    assert len(m.samples) == n, "the thread stops when the block ends"
    assert [s["other_cores"] for s in m.samples][:3] == [1.0, 3.0, 4.0]  # the failed second sample is skipped
    assert runs.LoadMonitor().interval_s == runs.LOAD_SAMPLE_S == 60.0
    assert runs.load_timings({"other_cores": 0.0}, {"other_cores": 0.0}) == {
        "machine_load": {"start": {"other_cores": 0.0}, "end": {"other_cores": 0.0},
                         "rule": "contended: other processes' CPU use > 0.5 x cores at start or end"},
        "contended": False}  # no samples during: the layout older records have  # fmt: skip


def test_records_carry_the_contended_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "machine_load", lambda window=0.1: {"loadavg": [5.0, 5.0, 5.0], "busy_cores": 2.0,
                                                                  "own_cores": 0.0, "other_cores": 5.0, "cpu_count": 2})  # fmt: skip
    rec = runs.reuse_or_run(tmp_path / "r", {"spec_key": "a"}, _producer([]))
    assert rec.timings["contended"] is True and rec.timings["machine_load"]["end"]["other_cores"] == 5.0
    table = runs.gather(tmp_path)
    assert table["contended"].tolist() == [True] and "machine_load.start.loadavg" not in table.columns


# --------------------------------------------------------------------------------------------
# A finished run whose model a later step needs is re-created (issue 16 item 7)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_chapter_02_source_model_is_re_created_in_a_fresh_clone(tmp_path):
    """Chapter 02's transfer_cases loads source_shuffled_*/model.keras; its committed record made
    the run count as done and the chapter stopped. Now the step re-creates the model."""
    from eurosat_lib import data as D
    from eurosat_lib.experiments import negative_transfer as NT
    from eurosat_lib.experiments import resolve_params

    data = D.make_synthetic(n_per_class=40, seed=0)
    P = resolve_params("02_negative_transfer", profile="smoke", source_n_per_class=3, case_n=2, seeds=[0],
                       weights=None, image_size=32, out_dir=str(tmp_path / "02"))  # fmt: skip
    # The committed state: a finished record (and parameters), no model files.
    spec = NT.source_spec(P)
    folder = Path(P.out_dir) / spec.name
    runs.write_record(folder, params={"spec_key": spec.key()}, metrics={"val": {"accuracy": 0.1}})
    (folder / "params.json").write_text(json.dumps({"spec_key": spec.key()}))
    res, path = NT.pretrain_shuffled_source(P, data)  # failed with "model.keras does not exist"
    assert path.is_file() and (folder / "model.keras").is_file()
    assert res.record["status"] == "complete" and res.record["params"]["backbone"] == P.backbone  # really re-run


@pytest.mark.slow
def test_readme_reference_run_then_predict_at_smoke_size(tmp_path, capsys):
    """README: `python scripts/reference_runs.py --only finetune`, then `python -m eurosat_lib
    predict <run> my_images/`; from a fresh clone (record, no model) the script retrained nothing
    and predict failed. At smoke size, in-process (the commands' own main functions)."""
    import importlib.util

    from PIL import Image

    from eurosat_lib import data as D
    from eurosat_lib.__main__ import main as cli

    spec = importlib.util.spec_from_file_location("reference_runs", REPO / "scripts" / "reference_runs.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    out = tmp_path / "reference"
    run = out / "mobilenetv2_035_finetune"
    # The committed state: a finished record (and parameters), no model files.
    key = ref.smoke_spec(ref.SPECS["finetune"]).key()
    runs.write_record(run, params={"spec_key": key}, metrics={"test": {"accuracy": 0.1, "macro_f1": 0.1}}, timings={"fit_seconds": 1})
    (run / "params.json").write_text(json.dumps({"spec_key": key}))
    with pytest.raises(FileNotFoundError, match="reference_runs.py --only finetune --out"):
        runs.run_model_path(run)
    assert ref.main(["--profile", "smoke", "--only", "finetune", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trained"] is True  # retrained, not reused
    images = tmp_path / "my_images"
    images.mkdir()
    syn = D.make_synthetic(n_per_class=1, seed=3)
    for i in range(3):
        Image.fromarray(syn.images[i]).save(images / f"img{i}.png")
    assert cli(["predict", str(run), str(images), "--csv", str(tmp_path / "pred.csv")]) == 0
    rows = (tmp_path / "pred.csv").read_text().strip().splitlines()
    assert rows[0].startswith("image,prediction,confidence") and len(rows) == 4


def test_benchmark_results_carry_machine_load(tmp_path, monkeypatch):
    """Issue 15 item 1 for benchmarks: benchmarks/_common.write_results stores the load at the
    script's start and end and the contended flag (mocked: another process on both cores)."""
    import argparse
    import importlib.util
    import time

    spec = importlib.util.spec_from_file_location("_bench_common", REPO / "benchmarks" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    busy = {"loadavg": [2.5, 2.0, 1.0], "busy_cores": 2.0, "own_cores": 0.1, "other_cores": 2.4, "cpu_count": 2}
    monkeypatch.setattr(runs, "machine_load", lambda window=0.1: busy)
    args = argparse.Namespace(quick=True, results_dir=tmp_path)
    data = json.loads(common.write_results(args, "demo", figures={}, ratios={}, started=time.perf_counter()).read_text())
    assert data["contended"] is True and data["machine_load"]["end"] == busy and data["machine_load"]["start"]["cpu_count"]
    assert data["environment"]["machine_load"] == busy and data["environment"]["python"]


def test_cached_json_reuses_by_key_and_reads_the_older_layout(tmp_path):
    path = tmp_path / "final_test.json"
    path.write_text(json.dumps({"key": {"n": 5}, "metrics": {"accuracy": 0.5}}))  # as committed today
    assert runs.cached_json(path, {"n": 5}, lambda: pytest.fail("recomputed")) == {"accuracy": 0.5}
    assert runs.cached_json(path, {"n": 6}, lambda: {"accuracy": np.float32(0.75)}) == {"accuracy": 0.75}
    assert runs.cached_json(path, {"n": 6}, lambda: pytest.fail("recomputed")) == {"accuracy": 0.75}
    path.write_bytes(b"\xff")
    assert runs.cached_json(path, {"n": 6}, lambda: 1) == 1


def test_finished_runs_carry_sanity_flags_after_the_producers_own(tmp_path):
    def produce(folder):
        return runs.RunRecord(params={}, metrics={"test": {"accuracy": 0.1, "n": 5400}}, warnings=["hand-checked"])

    rec = runs.reuse_or_run(tmp_path / "r", {"spec_key": "a"}, produce)
    assert rec.warnings == ["hand-checked", "chance-level"]
    assert runs.gather(tmp_path)["warnings"].tolist() == ["hand-checked; chance-level"]


@pytest.mark.parametrize("isa, name", [
    (None, "AMD EPYC, 2 cores"),  # records from before cpu_isa was kept: the bare model name
    ([], "AMD EPYC (no AVX2), 2 cores"),
    (["avx2"], "AMD EPYC (AVX2), 2 cores"),
    (["avx2", "avx512f", "avx512_bf16"], "AMD EPYC (AVX-512), 2 cores"),
    (["avx2", "avx512f", "amx_tile", "amx_bf16"], "AMD EPYC (AMX), 2 cores"),
])  # fmt: skip
def test_a_cpus_widest_simd_extension_is_part_of_its_name(isa, name):
    """Two VMs both called "AMD EPYC" ran one epoch 6x apart: what the record knows of the CPU's
    SIMD extensions keeps them on separate time axes."""
    from eurosat_lib.summaries.recipes import machine_name

    env = {"cpu_model": "AMD EPYC", "cpu_count": 2, **({} if isa is None else {"cpu_isa": isa})}
    assert machine_name(env) == name
