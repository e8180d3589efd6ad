"""Shared fixtures: the real archive from ../shared/data, an isolated cache, small archives."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL_ARCHIVE = SHARED / "EuroSAT_RGB.zip"
WEIGHTS_DIR = SHARED / "weights"

# Keep test runs quiet and away from the user's cache. Set before anything imports the library
# (and inherited by papermill kernels and subprocesses started by tests).
os.environ.setdefault("EUROSAT_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One compute thread per process: the suite runs 3 xdist workers on 2 cores, plus papermill
# kernels and benchmark subprocesses beside them. With TensorFlow's default pools (one thread
# per core each) the processes' idle threads spin while others hold the cores: three smoke
# notebooks side by side used 6% more CPU and took 9% longer that way.
for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, worker_id) -> Path:
    """A folder shared by every pytest-xdist worker of this test run (their common parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


def once_per_run(run_dir: Path, name: str, produce: Callable[[Path], None]) -> Path:
    """Call ``produce(folder)`` once per test run, in whichever worker asks first; the others wait
    for it and get the same folder. A failed attempt leaves no mark, so the next asker retries.

    Why not only ``--dist loadgroup``: since pytest 9.2 xdist's group suffix no longer takes effect
    (pytest-dev/pytest-xdist#1386), so a module fixture ran once per worker: every benchmark
    script twice, ~70 CPU-s of a ~13 CPU-min suite. This works under any scheduler."""
    from filelock import FileLock

    folder = run_dir / name
    with FileLock(str(folder) + ".lock", timeout=900):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            produce(folder)
            (folder / ".done").touch()
    return folder


#: processes this worker started with :func:`start_in_background` (reaped by :func:`reap_background`)
_BACKGROUND: list = []


def start_in_background(folder: Path, name: str, cmd: list[str], env: dict[str, str] | None = None):
    """Start ``cmd`` (from the repository root) without waiting: its stdout goes to
    ``folder/<name>.log``, its stderr to ``folder/<name>.err`` and, when it ends, its exit status to
    ``folder/<name>.rc`` (written whole, then renamed), which any worker can wait for with
    :func:`wait_in_background`. A worker blocked on a serial job (the book build, the benchmark
    runs) leaves a core idle; started early in the background, the job fills idle time instead."""
    import subprocess

    script = '"$@" > "$BG_LOG" 2> "$BG_ERR"; echo $? > "$BG_RC.part" && mv "$BG_RC.part" "$BG_RC"'
    env = dict(os.environ if env is None else env, BG_LOG=str(folder / f"{name}.log"),
               BG_ERR=str(folder / f"{name}.err"), BG_RC=str(folder / f"{name}.rc"))  # fmt: skip
    proc = subprocess.Popen(["sh", "-c", script, "sh", *cmd], env=env, cwd=REPO, start_new_session=True)
    _BACKGROUND.append(proc)
    return proc


def wait_in_background(folder: Path, name: str, timeout: float) -> tuple[int, str, str]:
    """Wait for a :func:`start_in_background` job: ``(exit status, stdout, stderr)``."""
    import time

    rc_file = folder / f"{name}.rc"
    deadline = time.monotonic() + timeout
    while not rc_file.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"background job {name} ({folder}) did not finish in {timeout:.0f} s")
        time.sleep(0.5)
    return int(rc_file.read_text()), (folder / f"{name}.log").read_text(), (folder / f"{name}.err").read_text()


def reap_background(timeout: float, procs: list | None = None) -> None:
    """Wait for this worker's background jobs (another worker may be waiting on them), or only
    ``procs`` (what :func:`start_in_background` returned), killing any still running after
    ``timeout`` seconds."""
    import signal
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    for proc in list(_BACKGROUND if procs is None else procs):
        _BACKGROUND.remove(proc)
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session", autouse=True)
def _book_job_in_background(run_dir, request):
    """Build and render the book in the background from the start of the test run when a selected
    test uses it (the ``built_book`` fixture of tests/test_book.py, which runs that file with
    ``--job``). Before, the first test to need it built it (~26 s) and rendered it while a second
    worker waiting for the same book sat idle."""
    if any("built_book" in getattr(item, "fixturenames", ()) for item in request.session.items):
        import sys

        once_per_run(run_dir, "book_job", lambda out: start_in_background(
            out, "job", [sys.executable, str(REPO / "tests" / "test_book.py"), "--job", str(out)]))  # fmt: skip
    yield
    reap_background(900)


@pytest.fixture(scope="session")
def smoke_runs(run_dir) -> Path:
    """One runs folder for every smoke notebook of this test run, laid out like ``book/runs/<profile>``
    (a folder per chapter): chapter 02 reads chapter 03's crossover study from the folder beside its
    own, as the book's edition does, so the study is trained once, not once per notebook (and not
    twice at once: a run folder is locked while it trains)."""
    root = run_dir / "smoke_runs"
    root.mkdir(exist_ok=True)
    return root


def _smoke_study(run_dir: Path, chapter: Path, notebook: str, study: str) -> dict:
    """Train a chapter's study at the smoke profile once per test run into the smoke notebooks'
    runs folder, exactly as the notebook's cell runs it (same parameters, same data), and return
    ``{"out_dir", "lines", "trained"}``: the chapter folder, the study's progress lines, and which
    runs this first call trained. Skips, as the notebooks do, without ImageNet weights offline."""
    import importlib
    import json

    from eurosat_lib.models import WeightsUnavailableError

    def produce(folder: Path) -> None:
        from eurosat_lib import experiments as X

        P = X.resolve_params(notebook, profile="smoke", out_dir=str(chapter))
        X.require_weights(P)
        lines: list[str] = []
        result = importlib.import_module(f"eurosat_lib.experiments.{study}").run_study(
            P, X.load_data(P.data_source, P.profile), progress=lines.append)
        table = getattr(result, "table", result)  # similarity returns a Study, crossover its table
        returned = {"out_dir": str(chapter), "lines": lines, "trained": [bool(v) for v in table["trained"]]}
        (folder / "returned.json").write_text(json.dumps(returned))

    try:
        folder = once_per_run(run_dir, f"smoke_{study}", produce)
    except WeightsUnavailableError as e:
        pytest.skip(f"the {study} study needs ImageNet weights: not in {WEIGHTS_DIR} and not downloadable ({str(e)[:160]})")
    return json.loads((folder / "returned.json").read_text())


@pytest.fixture(scope="session")
def smoke_similarity(run_dir, smoke_runs) -> dict:
    """Chapter 02's similarity study at the smoke profile (12 runs, ~90 s: the costliest part of
    notebook 02), trained once per test run: test_similarity's end-to-end test checks it (trained,
    then reused, then a fresh clone's view) and notebook 02 reuses it. See :func:`_smoke_study`."""
    return _smoke_study(run_dir, smoke_runs / "02_negative_transfer", "02_negative_transfer", "similarity")


@pytest.fixture(scope="session")
def smoke_crossover(run_dir, smoke_runs) -> dict:
    """Chapter 03's crossover study at the smoke profile (8 runs), trained once per test run:
    test_crossover's end-to-end test checks it, notebook 03 reuses it, and notebook 02 reads its
    frozen and scratch arms as the edition does. See :func:`_smoke_study`."""
    return _smoke_study(run_dir, smoke_runs / "03_finetune", "03_finetune", "crossover")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(run_dir):
    """One cache dir per test run, shared by pytest-xdist workers: the real archive is decoded
    once per run (the data layer's file lock makes concurrent first loads wait, not collide)."""
    old = os.environ.get("EUROSAT_DATA_DIR")
    shared = run_dir / "eurosat_cache"
    shared.mkdir(parents=True, exist_ok=True)
    os.environ["EUROSAT_DATA_DIR"] = str(shared)
    yield
    if old is None:
        os.environ.pop("EUROSAT_DATA_DIR", None)
    else:
        os.environ["EUROSAT_DATA_DIR"] = old


def pytest_collection_modifyitems(config, items):
    """Start the long tests first: a 2-minute test drawn last leaves a core idle
    while the other finishes it. Longest-first is the classic fix; the markers say which are
    long (the benchmark group, the smoke notebooks, ``slow``). A stable sort, so every xdist
    worker collects the same order."""
    def rank(item) -> int:
        group = item.get_closest_marker("xdist_group")
        if group and group.args[:1] == ("book",):
            return 3  # last: the book is built in the background meanwhile (_book_job_in_background)
        if group or item.get_closest_marker("notebooks"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


needs_real_data = pytest.mark.skipif(
    not REAL_ARCHIVE.is_file(), reason=f"real EuroSAT archive not found at {REAL_ARCHIVE} (../shared/data)"
)


@pytest.fixture(scope="session")
def worker_id(request) -> str:
    """The xdist worker id ("gw0", ...) or "master" without xdist."""
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


@pytest.fixture(scope="session")
def real_data():
    """The full real dataset, loaded once per session (decoded into the session cache)."""
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real EuroSAT archive not found at {REAL_ARCHIVE}")
    from eurosat_lib.data import load_eurosat

    return load_eurosat(REAL_ARCHIVE)


@pytest.fixture(scope="session")
def real_members() -> dict[str, bytes]:
    """A few real JPEGs per class ({'Forest/Forest_1.jpg': bytes}) for building small archives."""
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real EuroSAT archive not found at {REAL_ARCHIVE}")
    from eurosat_lib.data import CLASS_NAMES

    out = {}
    with zipfile.ZipFile(REAL_ARCHIVE) as zf:
        for cls in CLASS_NAMES:
            for i in range(1, 4):
                out[f"{cls}/{cls}_{i}.jpg"] = zf.read(f"EuroSAT_RGB/{cls}/{cls}_{i}.jpg")
    return out


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` ({member name: bytes}) into a zip at ``path``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, blob in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)
    return root


def jpeg_bytes(size=(64, 64), color=(10, 120, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()
