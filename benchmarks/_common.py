"""Plumbing shared by the benchmark scripts: arguments, tables, timing, memory, JSON results.

Deliberately free of TensorFlow/Keras/JAX imports, so that a script can pick its Keras backend
(``bench_gpu_jax.py`` sets ``KERAS_BACKEND=jax``) and the ``bench_backbones.py`` parent process,
which only starts one child per configuration, stays light.

Every result file has the same top-level layout (``SCHEMA``)::

    {"benchmark": "data", "schema": 1, "quick": false, "args": {...},
     "environment": eurosat_lib.runs.environment(),
     "figures": {...}, "ratios": {...}, "goals": {name: {"target", "value", "met", "description"}},
     "notes": [...], "wall_seconds": 123.4,
     "machine_load": {"start": {...}, "end": {...}, "rule": "..."}, "contended": false}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: ``--quick`` runs write here unless told otherwise, so they never overwrite real figures.
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"
SCHEMA = 1

# A source checkout without `pip install -e .` still finds the library.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _start_load() -> dict[str, Any] | None:
    try:
        from eurosat_lib import runs
    except ImportError:  # the library itself is missing: the script fails later with a clear error
        return None
    return runs.machine_load()


#: The machine's load when the benchmark script started (importing this module); compared with
#: the load at the end to flag results measured under contention.
START_LOAD = _start_load()


# --------------------------------------------------------------------------------------------
# Arguments and result files
# --------------------------------------------------------------------------------------------


def make_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds (used by tests/test_benchmarks.py)")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where <name>.json is written (default {RESULTS_DIR.relative_to(REPO)}, "
        f"or {QUICK_RESULTS_DIR.relative_to(REPO)} with --quick)",
    )
    return p


def results_dir(args: argparse.Namespace) -> Path:
    if args.results_dir is not None:
        return Path(args.results_dir)
    return QUICK_RESULTS_DIR if args.quick else RESULTS_DIR


def lib_io():
    """``eurosat_lib.runs``, for its atomic writes (``atomic_path``, ``write_json_atomic``); importing
    it does not import TensorFlow."""
    import eurosat_lib.runs

    return eurosat_lib.runs


def environment() -> dict[str, Any]:
    """``eurosat_lib.runs.environment()`` (versions, CPU, GPUs, timestamp) and the machine's load
    now (``runs.machine_load``). ``eurosat_lib.runs`` needs neither pandas, scikit-learn nor a
    Keras backend, so a lean GPU machine (JAX + Keras only) has it too."""
    from eurosat_lib import runs

    return {**runs.environment(), "machine_load": runs.machine_load()}


def load_timings(start: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"machine_load": {"start", "end", "rule"}, "contended": bool}`` for a result file: the
    load when the script started (``START_LOAD``) and now. See ``eurosat_lib.runs.is_contended``."""
    from eurosat_lib import runs

    end = runs.machine_load()
    return runs.load_timings(start or end, end)


def jsonable_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}


def write_results(
    args: argparse.Namespace,
    name: str,
    *,
    figures: Mapping[str, Any],
    ratios: Mapping[str, Any],
    goals: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    env: Mapping[str, Any] | None = None,
    started: float,
) -> Path:
    """Write ``<results dir>/<name>.json`` atomically and return its path."""
    payload = {
        "benchmark": name,
        "schema": SCHEMA,
        "quick": bool(args.quick),
        "args": jsonable_args(args),
        "environment": dict(env) if env is not None else environment(),
        "figures": _clean(figures),
        "ratios": _clean(ratios),
        "goals": _clean(goals or {}),
        "notes": list(notes),
        "wall_seconds": round(time.perf_counter() - started, 2),
        **load_timings(START_LOAD),
    }
    path = results_dir(args) / f"{name}.json"
    lib_io().write_json_atomic(path, payload)
    print(f"\nresults: {path}")
    return path


def _clean(obj: Any) -> Any:
    """Round floats for readability; NaN/inf -> None (strict JSON)."""
    if isinstance(obj, float):
        return round(obj, 4) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def goal(value: float | None, target: float, description: str, higher_is_better: bool = True) -> dict[str, Any]:
    if value is None or not math.isfinite(value):
        met = False
    else:
        met = value >= target if higher_is_better else value <= target
    return {"target": target, "value": value, "met": met, "higher_is_better": higher_is_better, "description": description}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


# --------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def timed(out: dict[str, float], key: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        out[key] = time.perf_counter() - t


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temporary folder for one benchmark, removed afterwards with ``$EUROSAT_DATA_DIR`` restored.

    Benchmarks point ``$EUROSAT_DATA_DIR`` at fresh caches inside it; whatever they set, the
    caller's value (or its absence) comes back when the block ends.

    Args:
        prefix: The folder name's prefix.
        parent: Where to create it (default: the system's temporary folder).

    Yields:
        The folder.
    """
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    old = os.environ.get("EUROSAT_DATA_DIR")
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("EUROSAT_DATA_DIR", None)
        else:
            os.environ["EUROSAT_DATA_DIR"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def epoch_clock():
    """A Keras callback recording each epoch's wall time in ``.seconds`` (Keras imported only when
    called, so this module stays free of a backend)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    return EpochClock()


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / (1024 * 1024)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for measurement subprocesses: quiet logs and progress bars."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("EUROSAT_PROGRESS", "0")
    env.update(extra)
    return env


def run_json_child(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``cmd``; its last stdout line starting with ``RESULT `` is parsed as JSON.

    Returns ``{"error": ...}`` (with the tail of stderr) instead of raising, so one failing
    configuration does not lose the others.
    """
    t = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), env=dict(env) if env else None, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        return {"error": f"exit {proc.returncode}: {tail}"}
    out = json.loads(lines[-1][len("RESULT ") :])
    out.setdefault("process_wall_seconds", wall)
    return out


def emit_child_result(obj: Mapping[str, Any]) -> None:
    print("RESULT " + json.dumps(_clean(obj)), flush=True)


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    left = [[i == 0 or isinstance(c, str) for i, c in enumerate(row)] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r, lf in zip(cells, left):
        print("  ".join(c.ljust(w) if lj else c.rjust(w) for c, w, lj in zip(r, widths, lf)).rstrip())


def print_goals(goals: Mapping[str, Mapping[str, Any]]) -> None:
    if not goals:
        return
    rows = [
        (name, g["description"], (">= " if g.get("higher_is_better", True) else "<= ") + fmt(float(g["target"])), g["value"],
         "MET" if g["met"] else "not met")
        for name, g in goals.items()
    ]
    print_table("Goals", ["goal", "what", "target", "value", "status"], rows)


def finish(args: argparse.Namespace, name: str, *, figures: Mapping[str, Any], ratios: Mapping[str, Any],
           goals: Mapping[str, Any], notes: Sequence[str], started: float, env: Mapping[str, Any] | None = None) -> int:
    """Print the goals and notes, write the result file; the exit status of a benchmark script.

    ``env``: the run's :func:`environment` when the script already read it (None reads it here).
    """
    print_goals(goals)
    for note in notes:
        print(f"note: {note}")
    env = environment() if env is None else env
    write_results(args, name, figures=figures, ratios=ratios, goals=goals, notes=notes, env=env, started=started)
    return 0


# --------------------------------------------------------------------------------------------
# Reading other benchmarks' results
# --------------------------------------------------------------------------------------------


def cpu_reference_from_backbones(path: Path, image_size: int, backbone: str = "MobileNetV2") -> dict[str, Any] | None:
    """The ``backbone`` entry of a ``backbones.json`` for ``image_size`` (nearest size if absent).

    Returns ``{"source", "label", "train_images_per_s", "inference_images_per_s", ...}`` or None.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        configs = data["figures"]["configs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cands = [
        c for c in configs
        if str(c.get("backbone", "")) == backbone and not c.get("error") and c.get("train_images_per_s")
    ]  # fmt: skip
    if not cands:
        return None
    best = min(cands, key=lambda c: (abs(int(c["image_size"]) - image_size), -int(c["image_size"])))
    kwargs = best.get("backbone_kwargs") or {}
    label = (
        f"{best['backbone']}"
        + "".join(f" {k}={v}" for k, v in kwargs.items())
        + f", {best['image_size']} px, batch {best.get('batch_size')}, {best.get('keras_backend', 'tensorflow')} on CPU"
        + (" (quick run)" if data.get("quick") else "")
    )
    return {
        "source": str(path.name),
        "label": label,
        "backbone": best["backbone"],
        "backbone_kwargs": kwargs,
        "image_size": int(best["image_size"]),
        "batch_size": best.get("batch_size"),
        "train_images_per_s": best["train_images_per_s"],
        "inference_images_per_s": best.get("inference_images_per_s"),
        "cpu_model": (data.get("environment") or {}).get("cpu_model"),
        "cpu_count": (data.get("environment") or {}).get("cpu_count"),
    }
