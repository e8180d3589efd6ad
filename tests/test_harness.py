"""The test harness itself: shared expensive fixtures run once per test run, whatever the scheduler."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

_WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    from conftest import once_per_run

    def produce(folder):
        with open(Path(sys.argv[1]) / "calls.txt", "a") as f:
            f.write("call\\n")
        time.sleep(1.0)  # the other process asks meanwhile: it must wait, not produce again
        (folder / "result.txt").write_text("done")

    folder = once_per_run(Path(sys.argv[1]), "shared", produce)
    print((folder / "result.txt").read_text())
    """
)


def test_once_per_run_produces_once_for_concurrent_workers(tmp_path):
    """Two processes (as two xdist workers) ask at once: one produces, both see the result."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(REPO / "tests")], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o.strip() for o in outs] == ["done", "done"]
    assert (tmp_path / "calls.txt").read_text() == "call\n"


def test_once_per_run_retries_after_a_failed_attempt(tmp_path):
    from conftest import once_per_run

    def fail(folder):
        (folder / "partial.txt").write_text("half")
        raise RuntimeError("build failed")

    try:
        once_per_run(tmp_path, "thing", fail)
    except RuntimeError:
        pass
    folder = once_per_run(tmp_path, "thing", lambda f: (f / "ok.txt").write_text("ok"))
    assert sorted(p.name for p in folder.iterdir()) == [".done", "ok.txt"]  # no leftovers of the failed attempt


def test_a_background_job_reports_its_exit_status_and_output_to_any_waiter(tmp_path):
    """start_in_background / wait_in_background (the book job): the waiter gets the job's exit
    status, stdout and stderr, a failed job is not mistaken for a finished one, and a job still
    running past the timeout fails the waiting test instead of hanging it."""
    import pytest

    from conftest import reap_background, start_in_background, wait_in_background

    procs = [start_in_background(tmp_path, "ok", [sys.executable, "-c", "print('built')"]),
             start_in_background(tmp_path, "bad", [sys.executable, "-c", "import sys; sys.stderr.write('broke'); sys.exit(3)"]),
             start_in_background(tmp_path, "slow", [sys.executable, "-c", "import time; time.sleep(30)"])]  # fmt: skip
    assert wait_in_background(tmp_path, "ok", timeout=60) == (0, "built\n", "")
    assert wait_in_background(tmp_path, "bad", timeout=60) == (3, "", "broke")
    with pytest.raises(pytest.fail.Exception, match="did not finish in 1 s"):
        wait_in_background(tmp_path, "slow", timeout=1)
    import conftest

    others = [p for p in conftest._BACKGROUND if p not in procs]  # e.g. the book job of this worker
    reap_background(timeout=1, procs=procs)  # kills the sleeper, and nothing else
    assert not (tmp_path / "slow.rc").exists() and procs[2].returncode == -9
    assert conftest._BACKGROUND == others and all(p.poll() is None or p.returncode >= 0 for p in others)
