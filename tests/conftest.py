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
# One compute thread per process: the suite runs 2 xdist workers on 2 cores, plus papermill
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
    """Start the long tests first: on 2 workers a 2-minute test drawn last leaves one core idle
    while the other finishes it. Longest-first is the classic fix; the markers say which are
    long (the benchmark group, the smoke notebooks, ``slow``). A stable sort, so every xdist
    worker collects the same order."""
    def rank(item) -> int:
        if item.get_closest_marker("xdist_group") or item.get_closest_marker("notebooks"):
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
