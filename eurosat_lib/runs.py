"""Run folders: one owner for ``params.json`` in, ``record.json`` out.

A run is a folder. This module is the only code that reads or writes its record::

    record = runs.reuse_or_run(folder, params, produce, needs=["model.keras"])
    record.metrics["test"]["accuracy"]          # typed fields ...
    record["metrics"]["test"]["accuracy"]       # ... and the record's JSON layout, read-only
    table = runs.gather("book/runs/cpu")        # one row per finished run (pandas)

* :class:`RunRecord`: parameters, metrics per split, phase histories, timings (with the machine's
  load at start and end and a ``contended`` flag), environment, and ``warnings`` (findings about
  the run that a reader must see, e.g. "chance level"; filled by the caller).
* :func:`reuse_or_run`: a finished run with the same parameters is reused; a run folder is
  locked while a process works in it (a second process waits, then reuses the finished run);
  a finished run missing a file a later step needs (``needs``) is run again.
* :func:`environment`: versions, platform, CPU, GPUs; :func:`machine_load`: load and busy cores.

Light on purpose: no Keras, pandas or scikit-learn at import (``eurosat predict`` finds a model
through :func:`run_model_path` before it pays for the Keras import; a JAX-only machine can write
benchmark results). pandas is imported inside :func:`gather` only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Mapping as _MappingABC
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from . import __version__
# Run folders own atomic writing; benchmarks and scripts use these through runs, not the private _io.
from ._io import atomic_path, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "PARAMS_FILE",
    "atomic_path",
    "write_json_atomic",
    "RUN_RECORD",
    "RUN_STATUSES",
    "RunFolderBusy",
    "RunRecord",
    "cached_json",
    "combine_history",
    "environment",
    "epochs_run",
    "gather",
    "HEADLINE_RUNS",
    "headline_run_dir",
    "jsonable",
    "machine_load",
    "phase_epochs_run",
    "read",
    "reuse_or_run",
    "run_lock",
    "run_model_path",
    "write",
    "write_record",
]

#: File name of a run's record inside its run folder.
RUN_RECORD = "record.json"
#: File name of a run's parameters (written before training; the record repeats them).
PARAMS_FILE = "params.json"
RUN_STATUSES = ("complete", "running", "failed")
#: Bump when the record layout changes incompatibly.
RECORD_SCHEMA = 1
#: Per-split metrics copied into :func:`gather` columns as ``<split>_<name>``.
_SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "ece", "nll", "n")
#: A timing is flagged ``contended`` when other processes kept more than this share of the
#: machine's cores busy at the run's start or end, or over any interval between the samples
#: taken while it ran (see :func:`machine_load` and :class:`LoadMonitor`).
CONTENDED_SHARE = 0.5
#: Seconds between the samples of the machine's load a run takes while it trains.
LOAD_SAMPLE_S = 60.0
#: The headline runs (``scripts/reference_runs.py``, whose ``--only`` takes these keys; the results
#: page's first table): key -> run folder name under ``<runs>/<profile>/reference``
#: (:func:`headline_run_dir`). The one list of their names: the report, the studies and the
#: chapters that set a number beside a headline run read it from here.
HEADLINE_RUNS: dict[str, str] = {
    "frozen": "mobilenetv2_035_frozen",
    "finetune": "mobilenetv2_035_finetune",
    "scratch": "mobilenetv2_035_scratch",
    "scratch_plateau": "mobilenetv2_035_scratch_plateau",
    "recipe": "mobilenetv2_035_recipe",
}


# --------------------------------------------------------------------------------------------
# Plain JSON
# --------------------------------------------------------------------------------------------


def jsonable(obj: Any, where: str = "record") -> Any:
    """Plain-JSON copy of ``obj``: numpy -> Python, tuples -> lists, NaN/inf -> None.

    Strict JSON has no NaN; a diverged loss is recorded as null so every JSON reader copes.
    Checked before anything touches the disk, so a bad value never costs the old record.

    Args:
        obj: The value to copy (mappings, sequences, numpy scalars and arrays, paths).
        where: How messages name ``obj``'s place.

    Returns:
        The copy, made of JSON types only.

    Raises:
        TypeError: a value that is not plain data, named by its place in ``obj``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), where)
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if hasattr(obj, "history") and isinstance(obj.history, Mapping):  # a Keras History
        return jsonable(obj.history, where)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON-serialisable; record plain numbers, strings, lists or dicts")


# --------------------------------------------------------------------------------------------
# Environment and machine load
# --------------------------------------------------------------------------------------------


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpuinfo_field(key: str) -> str | None:
    """The first ``key : value`` line's value in ``/proc/cpuinfo``, or None where it cannot say."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


#: SIMD extensions that change what one epoch costs on a CPU (TensorFlow's oneDNN kernels pick the
#: widest): two VMs can both call themselves "AMD EPYC" and differ in them.
CPU_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpu_isa() -> list[str] | None:
    """The :data:`CPU_ISA_FLAGS` this CPU reports, or None where ``/proc/cpuinfo`` cannot say."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else [x for x in CPU_ISA_FLAGS if x in set(flags.split())]


def _gpu_names() -> list[str] | None:
    """GPU names if a backend is already imported (never imports one just to ask)."""
    try:
        if "jax" in sys.modules:
            devs = [d for d in sys.modules["jax"].devices() if d.platform == "gpu"]
            return [str(getattr(d, "device_kind", d)) for d in devs]
        if "tensorflow" in sys.modules:
            tf = sys.modules["tensorflow"]
            names = []
            for dev in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(dev)
                names.append(str(details.get("device_name", dev.name)))
            return names
    except Exception:  # device listing is best effort; a record must still be written
        pass
    return None


def _keras_backend() -> str | None:
    if "keras" in sys.modules:
        try:
            return str(sys.modules["keras"].backend.backend())
        except Exception:
            return None
    return os.environ.get("KERAS_BACKEND")


def environment() -> dict[str, Any]:
    """Where and when a run happened: versions, platform, CPU, GPUs, UTC timestamp.

    Host and user names are deliberately left out: records are shared with the book.

    Returns:
        ``eurosat_lib``, ``python`` and the packages' versions, ``keras_backend``, ``platform``,
        ``machine``, ``cpu_count``, ``cpu_model``, ``cpu_isa`` (:data:`CPU_ISA_FLAGS` present; None
        where unknown), ``gpus`` and the UTC ``timestamp``.
    """
    return {
        "eurosat_lib": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": _package_version("keras"),
        "keras_backend": _keras_backend(),
        "tensorflow": _package_version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "jax": _package_version("jax"),
        "torch": _package_version("torch"),
        "scikit_learn": _package_version("scikit-learn"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "gpus": _gpu_names(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


#: (wall time, this process's CPU seconds, its estimated share of the 1-minute load) at the last
#: :func:`machine_load` call.
_LAST_SAMPLE: tuple[float, float, float] | None = None
#: The load average's horizon (the 1-minute figure), in seconds.
_LOAD_WINDOW = 60.0


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _process_start() -> float:
    """Wall-clock (``time.time``) start of this process; psutil if present, else import time."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - psutil is optional
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


_PSUTIL_PRIMED = False


def _busy_cores(window: float) -> float | None:
    """Cores busy (whole machine) since the previous call — over ``window`` seconds the first
    time — or None without psutil. Between a run's start and end samples that is the average
    over the whole run, at no cost (no second waiting window)."""
    global _PSUTIL_PRIMED
    try:
        import psutil
    except ImportError:
        return None
    per_cpu = psutil.cpu_percent(interval=None if _PSUTIL_PRIMED else window, percpu=True)
    _PSUTIL_PRIMED = True
    return round(sum(per_cpu) / 100.0, 2)


def _loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # Windows
        return None


def machine_load(window: float = 0.1) -> dict[str, Any]:
    """How busy the machine is now, and how much of that is other processes.

    Returns a dict: ``loadavg`` (1, 5, 15 min; None where the OS has none), ``busy_cores``
    (cores busy since the previous sample, or over ``window`` seconds the first time; psutil;
    None without it), ``own_cores`` (this process's CPU use over about the last minute, in
    cores), and ``other_cores``: the cores other processes used over the same interval as
    ``busy_cores`` (``busy_cores`` minus this process's CPU use over that interval), never below
    0. Between a run's start and end samples that is their average over the whole run. Without
    psutil it falls back on the 1-minute load average minus ``own_cores``. The load average is
    not used where CPU time is known: it counts *runnable threads*, and TensorFlow keeps more
    threads runnable than this machine has cores, so a training process alone on 2 cores showed
    a load of 2.6 while using 1.6 cores, and "load minus own use" read a full core of other
    processes that did not exist (6 of 16 crossover runs were flagged contended that way).

    Args:
        window: Seconds to sample CPU use over when there is no previous sample.

    Returns:
        ``loadavg``, ``busy_cores``, ``own_cores`` and ``other_cores`` as described above.
    """
    with _SAMPLE_LOCK:  # a LoadMonitor thread samples while the main thread may too
        return _machine_load(window)


#: Serialises :func:`machine_load`: each sample moves the "since the previous sample" state.
_SAMPLE_LOCK = threading.Lock()


def _machine_load(window: float) -> dict[str, Any]:
    global _LAST_SAMPLE
    cpu_before, t_before = _own_cpu_seconds(), time.time()
    busy = _busy_cores(window)
    now, cpu = time.time(), _own_cpu_seconds()
    # This process's CPU seconds over about the last minute, in cores (kept in the record), and
    # over the interval busy_cores covers (since the previous sample, else the sampling window).
    if _LAST_SAMPLE is not None:
        t0, cpu0, own0 = _LAST_SAMPLE
        dt = max(now - t0, 1e-3)
        own = (cpu - cpu0) / max(dt, _LOAD_WINDOW) + own0 * max(0.0, _LOAD_WINDOW - dt) / _LOAD_WINDOW
        own_interval = (cpu - cpu0) / dt
    else:
        own = cpu / max(now - _process_start(), _LOAD_WINDOW)
        own_interval = (cpu - cpu_before) / max(now - t_before, window, 1e-3)
    _LAST_SAMPLE = (now, cpu, own)
    load = _loadavg()
    if busy is not None:
        other = busy - own_interval
    elif load is not None:
        other = load[0] - own
    else:
        other = None
    return {
        "loadavg": [round(v, 2) for v in load] if load is not None else None,
        "busy_cores": busy,
        "own_cores": round(own, 2),
        "other_cores": round(max(other, 0.0), 2) if other is not None else None,
        "cpu_count": os.cpu_count(),
    }


def is_contended(*samples: Mapping[str, Any]) -> bool:
    """The rule behind ``timings["contended"]``: in any sample, other processes kept more than
    :data:`CONTENDED_SHARE` of the cores busy (``other_cores > 0.5 * cpu_count``).

    Args:
        *samples: :func:`machine_load` results (those without ``other_cores`` are ignored).

    Returns:
        True when any sample was contended.
    """
    for s in samples:
        other, cores = s.get("other_cores"), s.get("cpu_count") or 1
        if other is not None and other > CONTENDED_SHARE * cores:
            return True
    return False


def wait_until_quiet(max_wait_s: float = 600.0, poll_s: float = 10.0, log: Callable[[str], None] | None = None,
                     *, sample: Callable[[], Mapping[str, Any]] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> bool:  # fmt: skip
    """Wait until the machine is quiet by the :func:`is_contended` rule, before timed work starts.

    The 1-minute load average lags: right after another job (a test run, the previous
    configuration's evaluation in another process) it still counts that job for a minute or two,
    so a run started at once is recorded as contended although nothing else runs. Waiting here
    costs that minute instead of the run's timing.

    Args:
        max_wait_s: Give up after this many seconds (the run then starts, and its record says
            whether it was contended).
        poll_s: Seconds between samples.
        log: Called with a line when waiting starts and ends (None: silent).
        sample: Returns a :func:`machine_load` sample (default: :func:`machine_load`).
        sleep: The sleeping function (tests pass a fake clock).

    Returns:
        True when the machine became quiet, False when ``max_wait_s`` ran out first.
    """
    sample = sample or machine_load
    waited = 0.0
    while is_contended(s := sample()):
        if waited >= max_wait_s:
            if log:
                log(f"the machine is still busy after {waited:.0f} s (other processes: {s.get('other_cores')} cores); "
                    "starting anyway, the record will say it was contended")  # fmt: skip
            return False
        if log and waited == 0:
            log(f"waiting for a quiet machine (other processes: {s.get('other_cores')} cores of {s.get('cpu_count')})")
        sleep(poll_s)
        waited += poll_s
    if log and waited:
        log(f"quiet after {waited:.0f} s")
    return True


def _timed_phases(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``record["timings"]["phases"]``: phase name -> its timing (epochs run, seconds, ...); {} if absent."""
    return ((record or {}).get("timings") or {}).get("phases") or {}


def used_cached_features(record: Mapping[str, Any] | None) -> bool:
    """Whether a phase of the run read the frozen base's features from an earlier run's cache.

    Args:
        record: a run record (``record.json`` as a mapping), or None.

    Returns:
        True when a phase in ``record["timings"]["phases"]`` says ``features_from_cache``.
    """
    return any(bool(ph.get("features_from_cache")) for ph in _timed_phases(record).values() if isinstance(ph, Mapping))


def timing_trusted(record: Mapping[str, Any] | None) -> bool:
    """Whether a record's timings may be shown as figures: not ``contended``, not ``spans_processes``,
    no phase on features read from an earlier run's cache.

    Records written before the machine's load was kept carry no flag and count as trusted; a
    figure measured while other processes kept more than half the cores busy is never shown in
    the book (tables print "contended" instead), nor one of a run resumed across processes (part
    of it was timed by a process whose load the record does not hold), nor one whose head phase
    read its features from an earlier run's cache (it left out work the other runs paid for).

    Args:
        record: a run record (``record.json`` as a mapping), or None.

    Returns:
        False when ``record["timings"]`` says ``contended`` or ``spans_processes``, or a phase
        says ``features_from_cache``; else True.
    """
    timings = (record or {}).get("timings") or {}
    return not (bool(timings.get("contended", False)) or bool(timings.get("spans_processes", False))
                or used_cached_features(record))  # fmt: skip


def recorded_minutes(record: Mapping[str, Any] | None) -> float | None:
    """A record's training and scoring time in minutes (``fit_seconds`` + ``eval_seconds``).

    Whether that time may be shown as a measurement is :func:`timing_trusted`'s question, not
    this one's: the edition's cost counts every minute a run took, a study's table only trusted ones.

    Args:
        record: a run record (``record.json`` as a mapping), or None.

    Returns:
        Minutes, or None for a record without timings (written before they were kept).
    """
    timings = (record or {}).get("timings") or {}
    if timings.get("fit_seconds") is None:
        return None
    return ((timings.get("fit_seconds") or 0.0) + (timings.get("eval_seconds") or 0.0)) / 60


def epochs_run(record: Mapping[str, Any] | None) -> int | None:
    """Epochs a run trained, over all its phases (early stopping may end a phase before its cap).

    Args:
        record: a run record (``record.json`` as a mapping), or None.

    Returns:
        The sum of ``epochs_run`` over ``record["timings"]["phases"]`` (a phase without a count
        adds 0), or None when the record times no phase (written before phases were timed).
    """
    phases = _timed_phases(record)
    if not phases:
        return None
    return sum(int(ph.get("epochs_run") or 0) for ph in phases.values())


def phase_epochs_run(record: Mapping[str, Any] | None, phase: str | None) -> int | None:
    """Epochs one phase of a run trained.

    Args:
        record: a run record (``record.json`` as a mapping), or None.
        phase: the phase's name (``params["phases"][i]["name"]``).

    Returns:
        ``record["timings"]["phases"][phase]["epochs_run"]``, or None when the record does not say
        (the caller then usually falls back on the phase's cap, ``epochs``).
    """
    ran = (_timed_phases(record).get(phase) or {}).get("epochs_run")
    return None if ran is None else int(ran)


def trusted_minutes(record: Mapping[str, Any] | None) -> float:
    """:func:`recorded_minutes` rounded to 0.01 where :func:`timing_trusted`, else NaN.

    What a study's table shows: a time taken while other jobs shared the CPU (or resumed across
    processes, or on another run's cached features) is not a measurement of the run's cost, so it
    is left empty and never averaged.

    Args:
        record: a run record (``record.json`` as a mapping), or None.

    Returns:
        Minutes, or NaN.
    """
    minutes = recorded_minutes(record)
    return round(minutes, 2) if minutes is not None and timing_trusted(record) else math.nan


def load_timings(start: Mapping[str, Any], end: Mapping[str, Any], during: Sequence[Mapping[str, Any]] = (),
                 interval_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The ``machine_load`` / ``contended`` entries of a record's or benchmark's timings.

    Args:
        start: :func:`machine_load` when the timed work began.
        end: :func:`machine_load` when it ended.
        during: samples taken while it ran (:class:`LoadMonitor`); each covers the interval since
            the previous one. Their other processes' cores are kept as one list.
        interval_s: the seconds between those samples, as the record states them.

    Returns:
        ``{"machine_load": {"start": ..., "end": ..., ["during": ...,] "rule": ...}, "contended": bool}``.
    """
    load: dict[str, Any] = {"start": dict(start), "end": dict(end)}
    rule = f"contended: other processes' CPU use > {CONTENDED_SHARE} x cores at start or end"
    if during:
        load["during"] = {"interval_s": interval_s, "other_cores": [s.get("other_cores") for s in during]}
        rule += " or over any interval between the samples taken during the run"
    return {"machine_load": {**load, "rule": rule}, "contended": is_contended(start, *during, end)}


class LoadMonitor:
    """Samples :func:`machine_load` every ``interval_s`` seconds in a background thread while
    timed work runs (``with LoadMonitor() as m: ...``; then ``m.samples``).

    Start and end samples alone miss a job that ran in the middle of a long run: the end sample's
    ``other_cores`` is the average since the start sample, so a test suite that kept both cores
    busy for 10 of a run's 50 minutes averages 0.4 cores there, under the 1-core rule, and the
    run's inflated minutes would pass as quiet. Each sample taken here covers only the interval
    since the one before it, so such a job shows in at least one of them.

    Args:
        interval_s: seconds between samples (default :data:`LOAD_SAMPLE_S`).
        sample: returns one sample (default: :func:`machine_load`, looked up when sampling).
    """

    def __init__(self, interval_s: float | None = None, sample: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.interval_s = float(LOAD_SAMPLE_S if interval_s is None else interval_s)
        self._sample = sample
        self.samples: list[Mapping[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append((self._sample or machine_load)())
            except Exception:  # noqa: BLE001 - a failed sample must not stop the training it watches
                continue

    def __enter__(self) -> LoadMonitor:
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


@dataclass(eq=True)
class RunRecord(_MappingABC):
    """A run's ``record.json``, typed. Also a read-only mapping of its JSON layout
    (``record["metrics"]["test"]``), so code written against the plain dicts keeps working.

    Attributes:
        params: what defines the run (``spec_key`` identifies it).
        status: ``"complete"``, ``"running"`` or ``"failed"``.
        metrics: ``{split: evaluation.evaluate_predictions(...)}``.
        history: phase histories, ``[{"name": phase, "history": {metric: [per epoch]}}]`` (or
            one dict of lists).
        timings: seconds (``fit_seconds``, ``eval_seconds``, per phase), ``machine_load`` at start
            and end (and ``during``: other processes' cores sampled while it ran, see
            :class:`LoadMonitor`) and ``contended`` (see :func:`is_contended`).
        model_info: ``models.describe_model(model)``.
        extra: anything else (train size, accelerator).
        environment: :func:`environment` when the record was written.
        warnings: findings a reader of the run must see: :func:`reuse_or_run` adds
            :func:`eurosat_lib.sanity.flags` (``"chance-level"``, ``"diverged"``,
            ``"not converged"``) to any the producer gave; an empty list means none.
        schema: record layout version.
    """

    params: dict[str, Any]
    status: str = "complete"
    metrics: dict[str, Any] | None = None
    history: Any = None
    timings: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    schema: int = RECORD_SCHEMA

    # Field order of the JSON file, as committed records have it (``warnings`` right after
    # ``status``, where scripts/flag_records.py put it): a record read and written back is
    # byte-identical.
    _ORDER = ("schema", "status", "warnings", "params", "metrics", "history", "timings", "model_info", "extra", "environment")

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {self.status!r}")
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params must be a dict, got {type(self.params).__name__}")
        if isinstance(self.warnings, str) or not all(isinstance(w, str) for w in self.warnings):
            raise TypeError(f"warnings must be a list of strings, got {self.warnings!r}")

    # mapping access ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in self._ORDER:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ORDER)

    def __len__(self) -> int:
        return len(self._ORDER)

    # conversion --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (plain data; raises TypeError naming a value that is not).

        Returns:
            The record as ``record.json`` holds it.
        """
        d = {k: getattr(self, k) for k in self._ORDER}
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "record") -> "RunRecord":
        """A record from its JSON layout; keys unknown to this version are ignored.

        Args:
            d: The parsed ``record.json``.
            source: How error messages name where ``d`` came from.

        Returns:
            The typed record.

        Raises:
            ValueError: ``d`` lacks ``status`` or ``params`` (naming ``source``).
        """
        if not isinstance(d, Mapping) or "status" not in d or "params" not in d:
            raise ValueError(f"run record {source} lacks 'status'/'params'; it was not written by eurosat_lib.runs")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for k in ("timings", "extra", "environment"):
            if kwargs.get(k) is None:
                kwargs[k] = {}
        kwargs["warnings"] = list(kwargs.get("warnings") or [])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"run record {source}: {e}") from e

    # typed views -------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Whether the run finished (``status == "complete"``).

        Returns:
            True for a finished run.
        """
        return self.status == "complete"

    @property
    def key(self) -> str | None:
        """The run's identity (``params["spec_key"]``)."""
        return self.params.get("spec_key")

    def phase_histories(self) -> dict[str, dict[str, list[float]]]:
        """``{phase name: {metric: per-epoch values}}`` (one phase ``"run"`` for a flat history).

        Returns:
            The per-phase histories, in training order.
        """
        h = self.history
        if not h:
            return {}
        if isinstance(h, Mapping):
            return {"run": dict(h)}
        return {str(p.get("name", f"phase {i + 1}")): dict(p.get("history") or {}) for i, p in enumerate(h)}


def _record_path(run_dir: str | os.PathLike) -> Path:
    p = Path(run_dir)
    return p if p.name == RUN_RECORD else p / RUN_RECORD


def write(run_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write ``record`` to ``<run_dir>/record.json`` atomically; returns the path.

    The environment is filled in (now) when the record carries none.

    Args:
        run_dir: The run folder (created if missing).
        record: The record to write.

    Returns:
        The path of ``record.json``.
    """
    if not record.environment:
        record.environment = environment()
    path = _record_path(run_dir)
    write_json_atomic(path, record.to_dict())
    return path


def write_record(
    run_dir: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    history: Any = None,
    timings: Mapping[str, Any] | None = None,
    model_info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    status: str = "complete",
    warnings: Sequence[str] = (),
) -> Path:
    """Build a :class:`RunRecord` from its parts and :func:`write` it (the environment is now's).

    ``history``: a dict of lists or a list of phase dicts (see :func:`combine_history`).
    ``timings``: seconds, e.g. ``{"fit_seconds": 812.4}``; top-level ``*_seconds`` keys are
    summed into ``total_seconds`` by :func:`gather` unless that key is given.

    Args:
        run_dir: The run folder (created if missing).
        params: What defined the run (JSON-able).
        metrics: Metrics per split (``{"test": {"accuracy": ...}}``).
        history: The training history.
        timings: Seconds per phase and in total, and the machine's load.
        model_info: Parameter counts and the model's description.
        extra: Anything else the chapter keeps (e.g. ``train_size``).
        status: ``"complete"`` or another of :data:`STATUSES`.
        warnings: The run's sanity flags (:mod:`eurosat_lib.sanity`).

    Returns:
        The path of ``record.json``.

    Raises:
        ValueError: unknown ``status``. TypeError: ``params`` not a dict, or a value that is not
            plain data (checked before the old record is touched).
    """
    record = RunRecord(
        params=dict(params), status=status, metrics=dict(metrics) if metrics is not None else None, history=history,
        timings=dict(timings or {}), model_info=dict(model_info) if model_info is not None else None,
        extra=dict(extra or {}), environment=environment(), warnings=list(warnings),
    )  # fmt: skip
    return write(run_dir, record)


def read(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run's record (pass the run folder or its ``record.json``).

    Args:
        run_dir: The run folder, or its ``record.json``.

    Returns:
        The typed record.

    Raises:
        FileNotFoundError: no record there. ValueError: not valid JSON, or not a run record
            (the message names the file and what to do).
    """
    path = _record_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"run record {path} does not exist; was the run finished?")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"run record {path} is not valid JSON ({e}); delete the run folder and re-run it") from e
    return RunRecord.from_dict(data, str(path))


def complete_records(folder: str | os.PathLike, **tags: Any) -> Iterator[tuple[Path, RunRecord]]:
    """The finished runs directly under ``folder`` whose ``params["tags"]`` match ``tags``, by folder name.

    Unreadable and unfinished records are skipped: a study's table is built from what has run,
    and a run still in progress (or killed) must not become a row.

    Args:
        folder: A study's folder (one run folder per child).
        **tags: Tag values a run must carry (``study="crossover"``).

    Yields:
        ``(run folder, record)`` pairs.
    """
    for path in sorted(Path(folder).glob(f"*/{RUN_RECORD}")):
        try:
            rec = read(path.parent)
        except (OSError, ValueError):
            continue
        have = rec["params"].get("tags") or {}
        if rec.complete and all(have.get(k) == v for k, v in tags.items()):
            yield path.parent, rec


def headline_run_dir(profile_dir: str | os.PathLike, key: str) -> Path:
    """The folder of one headline run of a profile.

    Args:
        profile_dir: the profile's runs folder (``book/runs/<profile>``).
        key: a key of :data:`HEADLINE_RUNS` (``"frozen"``, ``"finetune"``, ``"scratch"``,
            ``"scratch_plateau"``, ``"recipe"``).

    Returns:
        ``<profile_dir>/reference/<its folder name>``.

    Raises:
        KeyError: ``key`` names no headline run.
    """
    if key not in HEADLINE_RUNS:
        raise KeyError(f"no headline run {key!r}; known: {list(HEADLINE_RUNS)}")
    return Path(profile_dir) / "reference" / HEADLINE_RUNS[key]


def run_model_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/model.keras``; without Keras, pandas or scikit-learn imports.

    Args:
        run_dir: The run folder.

    Returns:
        The path of its ``model.keras``.

    Raises:
        FileNotFoundError: the model is missing, saying which command makes it.
    """
    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        hint = _remake_hint(Path(run_dir))
        raise FileNotFoundError(
            f"{path} does not exist: model files are not committed (a fresh clone has only the records), "
            f"or the run did not save one or did not finish. {hint}"
        )
    return path


def _remake_hint(run_dir: Path) -> str:
    """The command that (re)creates a run's model: the reference runs have their own script."""
    # the three runs this hint has always named; scripts/reference_runs.py also takes scratch_plateau and recipe
    only = {HEADLINE_RUNS[k]: k for k in ("frozen", "finetune", "scratch")}
    parts = run_dir.resolve().parts
    if run_dir.name in only and len(parts) >= 5 and parts[-2] == "reference":
        cmd = f"python scripts/reference_runs.py --only {only[run_dir.name]}"
        if parts[-5:-3] == ("book", "runs"):
            profile = parts[-3]
            return f"Make it with: {cmd}" + ("" if profile == "cpu" else f" --profile {profile}")
        return f"Make it with: {cmd} --out {run_dir.parent.as_posix()}"
    return "Make it by running again the chapter or script that wrote this run: a finished run whose model is missing is retrained."


# --------------------------------------------------------------------------------------------
# Reuse or run, one process at a time
# --------------------------------------------------------------------------------------------


class RunFolderBusy(RuntimeError):
    """Another process holds a run folder's lock for longer than the caller would wait."""


def _lock_paths(folder: Path) -> tuple[Path, Path]:
    # Beside the folder, not inside it: a run that starts over deletes its folder, and deleting
    # a held lock file would let a third process lock a new file of the same name.
    return folder.with_name(f".{folder.name}.lock"), folder.with_name(f".{folder.name}.lock.pid")


@contextmanager
def run_lock(folder: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock (a ``filelock`` file beside it) for the block.

    A second process asking for a held lock says once which process holds it, then waits:
    ``timeout=None`` for as long as it takes, else that many seconds before
    :class:`RunFolderBusy` (naming the folder and the holder's PID). The lock dies with its
    process (an OS lock), so a killed run never blocks the next.

    Args:
        folder: The run folder to lock.
        timeout: Seconds to wait for another process's lock; None waits for as long as it takes.

    Yields:
        Nothing; the lock is held for the ``with`` block.

    Raises:
        RunFolderBusy: The lock was still held after ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_file, pid_file = _lock_paths(folder)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if timeout != 0:  # a caller that will not wait (discard_interrupted) gets RunFolderBusy, no "waiting"
            print(f"run folder {folder} is in use by process {_holder(pid_file)}; waiting for it to finish, then "
                  "reusing its result", file=sys.stderr, flush=True)  # fmt: skip
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise RunFolderBusy(
                f"run folder {folder} is still in use by process {_holder(pid_file)} after {timeout} s; "
                "wait for it to finish or stop that process"
            ) from None
    try:
        pid_file.write_text(str(os.getpid()))
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def discard_interrupted(folder: str | os.PathLike) -> bool:
    """Delete a run folder that holds an unfinished run, so the next run starts from scratch.

    A resumed run keeps its accuracy but not its time (part of it ran in a process whose load the
    record does not hold: ``spans_processes``). A study measured as time-to-accuracy can choose to
    pay for the whole run again rather than lose its minutes.

    Args:
        folder: The run folder.

    Returns:
        True when an unfinished run was deleted; False when there was none, or its record says
        ``complete`` (kept).

    Raises:
        RunFolderBusy: Another process is running it now (nothing is deleted).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    with run_lock(folder, timeout=0):
        try:
            if read(folder).status == "complete":
                return False
        except (FileNotFoundError, ValueError):  # no record, or an unreadable one: unfinished
            pass
        shutil.rmtree(folder)
    return True


def _holder(pid_file: Path) -> str:
    try:
        return pid_file.read_text().strip() or "?"
    except OSError:
        return "?"


def _params_key(params: Mapping[str, Any]) -> str:
    key = params.get("spec_key")
    if key:
        return str(key)
    return hashlib.sha256(json.dumps(jsonable(params), sort_keys=True).encode()).hexdigest()[:16]


def _previous_key(folder: Path) -> str | None:
    """The ``spec_key`` in ``folder/params.json``: None when there is none, ``""`` when the file
    is unreadable (warned; it is rewritten from the run's parameters)."""
    path = folder / PARAMS_FILE
    if not path.is_file():
        return None
    try:
        prev = json.loads(path.read_bytes().decode("utf-8"))
        return str(prev["spec_key"]) if isinstance(prev, Mapping) and "spec_key" in prev else None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        warnings.warn(f"{path} is unreadable ({type(e).__name__}: {e}); rewriting it from the run's parameters",
                      RuntimeWarning, stacklevel=3)  # fmt: skip
        return ""  # unreadable: not known to differ, so the folder's checkpoints may still resume


def reusable(folder: str | os.PathLike, params: Mapping[str, Any], needs: Sequence[str] = ()) -> RunRecord | None:
    """The finished record in ``folder`` if it can be reused for ``params``, else None.

    Reusable: complete, the same ``spec_key`` (or hash of ``params``), and every file in
    ``needs`` present (e.g. ``model.keras``, which is never committed).

    Args:
        folder: The run folder.
        params: The parameters the run would be made with.
        needs: Files (relative to ``folder``) a later step needs.

    Returns:
        The reusable record, or None.
    """
    folder = Path(folder)
    try:
        old = read(folder)
    except (OSError, ValueError):
        return None
    if not old.complete or _params_key(old.params) != _params_key(params):
        return None
    if any(not (folder / n).exists() for n in needs):
        return None
    return old


def reuse_or_run(
    folder: str | os.PathLike,
    params: Mapping[str, Any],
    produce: Callable[[Path], RunRecord],
    *,
    needs: Sequence[str] = (),
    reuse: bool = True,
    lock_timeout: float | None = None,
    wait_quiet_s: float = 0.0,
) -> RunRecord:
    """Reuse the finished run in ``folder`` or make it, one process at a time.

    Under :func:`run_lock`: if a complete record with the same parameters is there and every
    file in ``needs`` exists, it is returned. Otherwise a folder left by *different* parameters
    is cleared (a folder of the same run keeps its checkpoints, so an interrupted run resumes),
    ``params.json`` and a ``"running"`` record are written, and ``produce(folder)`` is called;
    its :class:`RunRecord` is written as the result (``"failed"`` is written if it raises).

    Args:
        folder: the run folder.
        params: what defines the run; ``params["spec_key"]`` (else a hash of ``params``)
            decides whether an old record is the same run.
        produce: trains and evaluates, returning the finished record (its ``params`` are
            replaced by ``params``).
        needs: files (relative to ``folder``) a later step needs; a finished run without them
            is run again (the checkpoints left, if any, are reused).
        reuse: False runs again even when a finished record exists.
        lock_timeout: seconds to wait for another process in the folder (None: no limit).
        wait_quiet_s: before a run that will train (not a reused one), wait up to this many
            seconds for a quiet machine (:func:`wait_until_quiet`); 0 starts at once. Timed
            studies set it, so a run does not start inside the load of the job before it.

    Returns:
        The reused or new record.

    Raises:
        RunFolderBusy: another process held the folder longer than ``lock_timeout``.
    """
    folder = Path(folder)
    with run_lock(folder, lock_timeout):
        if reuse:
            old = reusable(folder, params, needs)
            if old is not None:
                return old
        key = _params_key(params)
        if folder.exists():
            prev = _previous_key(folder)
            if prev != "" and prev != key:
                # A different run used this name (or left no parameters to tell): start clean
                # rather than resume its checkpoints. An unreadable params.json ("") keeps them.
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        params = dict(params)
        write_json_atomic(folder / PARAMS_FILE, jsonable(params, "params"))
        if wait_quiet_s > 0:
            wait_until_quiet(wait_quiet_s, log=lambda m: print(f"[{folder.name}] {m}", file=sys.stderr, flush=True))
        load_start = machine_load()
        write(folder, RunRecord(params=params, status="running", timings=load_timings(load_start, load_start)))
        try:
            with LoadMonitor() as monitor:
                record = produce(folder)
        except BaseException:
            write(folder, RunRecord(params=params, status="failed"))
            raise
        record.params = params
        record.status = "complete"
        # Findings about the finished run (chance level, diverged, not converged), from its own
        # numbers, after any the caller's produce() found.
        from .sanity import flags_from_record

        found = flags_from_record(record.to_dict())
        record.warnings = [*record.warnings, *[w for w in found if w not in record.warnings]]
        record.timings = {**record.timings, **load_timings(load_start, machine_load(), monitor.samples, monitor.interval_s)}
        record.environment = {}
        write(folder, record)
        return read(folder)


def cached_json(path: str | os.PathLike, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON result, stored in ``path`` with ``key`` and reused while the key matches.

    For derived results inside a run folder (e.g. a final test score); an unreadable file is
    simply recomputed.

    Args:
        path: The cache file.
        key: What the result depends on (JSON-able); a different key recomputes.
        compute: Makes the result (JSON-able) when the cache does not hold it.

    Returns:
        The cached or freshly computed result.
    """
    path = Path(path)
    key = jsonable(key, "key")
    if path.is_file():
        try:
            saved = json.loads(path.read_bytes().decode("utf-8"))
            if isinstance(saved, Mapping) and saved.get("key") == key:
                return saved["value"] if "value" in saved else saved["metrics"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError):
            pass
    value = jsonable(compute(), "value")
    write_json_atomic(path, {"key": key, "value": value})
    return value


# --------------------------------------------------------------------------------------------
# Histories and tables
# --------------------------------------------------------------------------------------------


def combine_history(history: Any) -> tuple[dict[str, list[float]], list[int], list[str]]:
    """Merge a training history into one epoch-indexed dict.

    Accepts a Keras ``History``, a dict of lists (``{"loss": [...], "val_loss": [...]}``) or a
    list of phases, each a dict of lists or ``{"name": ..., "history": {...}}``. Returns
    ``(merged, boundaries, phase_names)`` where ``boundaries[i]`` is the number of epochs
    before phase ``i + 1`` starts (e.g. where fine-tuning began). Metrics missing from a phase
    are NaN there, so every list has the same length.

    Args:
        history: The history in one of the forms above.

    Returns:
        ``(merged, boundaries, phase_names)`` as described above.

    Raises:
        TypeError: not a history. ValueError: a phase whose metric lists differ in length.
    """
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        history = history.history
    if isinstance(history, Mapping):
        phases = [history]
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        phases = list(history)
    else:
        raise TypeError(f"history must be a dict of lists or a list of phase dicts, got {type(history).__name__}")
    names: list[str] = []
    parts: list[Mapping[str, Sequence[float]]] = []
    for i, phase in enumerate(phases):
        if hasattr(phase, "history") and isinstance(phase.history, Mapping):
            phase = phase.history
        if not isinstance(phase, Mapping):
            raise TypeError(f"history phase {i} must be a dict, got {type(phase).__name__}")
        if "history" in phase and isinstance(phase["history"], Mapping):
            names.append(str(phase.get("name", f"phase {i + 1}")))
            parts.append(phase["history"])
        else:
            names.append(f"phase {i + 1}")
            parts.append(phase)
    keys: list[str] = []
    for part in parts:
        keys += [k for k in part if k not in keys]
    merged: dict[str, list[float]] = {k: [] for k in keys}
    boundaries: list[int] = []
    total = 0
    for i, part in enumerate(parts):
        lengths = {len(v) for v in part.values()}
        if len(lengths) > 1:
            raise ValueError(f"history phase {i}: metric lists differ in length {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if i > 0:
            boundaries.append(total)
        for k in keys:
            merged[k] += [float(v) for v in part[k]] if k in part else [math.nan] * n
        total += n
    return merged, boundaries, names


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)  # hashable and readable; lists rarely matter for grouping
        else:
            out[key] = v
    return out


def _summary_row(run: str, record: RunRecord) -> dict[str, Any]:
    env = record.environment or {}
    row: dict[str, Any] = {
        "run": run,
        "status": record.status,
        "timestamp": env.get("timestamp"),
        "keras_backend": env.get("keras_backend"),
    }
    reserved = set(row)
    for k, v in _flatten(record.params or {}).items():
        row[f"param.{k}" if k in reserved else k] = v
    for split, m in (record.metrics or {}).items():
        if isinstance(m, Mapping):
            for name in _SUMMARY_METRICS:
                if name in m:
                    row[f"{split}_{name}"] = m[name]
    # eurosat_lib.models.describe_model nests counts as {"params": {"total", "trainable", ...}}.
    info = record.model_info or {}
    counts = info.get("params") if isinstance(info.get("params"), Mapping) else {}
    for name in ("total", "trainable"):
        value = counts.get(name, info.get(f"{name}_params"))
        if value is not None:
            row[f"{name}_params"] = value
    timings = record.timings or {}
    if "contended" in timings:
        row["contended"] = bool(timings["contended"])
    flat_t = {k: v for k, v in _flatten(timings).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("machine_load.")}  # fmt: skip
    for k, v in flat_t.items():
        row[k if k not in row else f"timing.{k}"] = v
    if "total_seconds" not in flat_t:
        # Additive durations are the top-level "*_seconds" keys; rates and means are not summed.
        parts = [v for k, v in timings.items() if k.endswith("_seconds") and isinstance(v, (int, float))]
        row["total_seconds"] = float(sum(parts)) if parts else math.nan
    row["warnings"] = "; ".join(record.warnings)
    return row


def gather(root: str | os.PathLike, pattern: str = f"**/{RUN_RECORD}", include_incomplete: bool = False) -> "pd.DataFrame":
    """One row per run record under ``root``, sorted by run path.

    Columns: ``run`` (folder relative to ``root``), ``status``, ``timestamp``,
    ``keras_backend``, every ``params`` key (nested keys joined with ``.``), ``<split>_<metric>``
    for ``accuracy, macro_f1, weighted_f1, ece, nll, n`` of each split in ``metrics`` (so
    ``test_accuracy``, ``val_ece``, ...), ``total_params``, ``trainable_params``, the numeric
    ``timings``, ``total_seconds``, ``contended`` (where recorded) and ``warnings`` (joined).
    Runs whose status is not ``"complete"`` are skipped unless ``include_incomplete``;
    unreadable records are skipped with a warning naming the file.

    Args:
        root: The folder searched.
        pattern: The glob for record files under ``root``.
        include_incomplete: Whether runs that did not finish get a row too.

    Returns:
        The table, one row per run.
    """
    import pandas as pd

    root = Path(root)
    rows = []
    for path in sorted(root.glob(pattern)):
        try:
            record = read(path)
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping unreadable run record: {e}", stacklevel=2)
            continue
        if not record.complete and not include_incomplete:
            continue
        rows.append(_summary_row(path.parent.relative_to(root).as_posix() or ".", record))
    if not rows:
        return pd.DataFrame(columns=["run", "status", "timestamp", "keras_backend"])
    return pd.DataFrame(rows).sort_values("run", kind="stable").reset_index(drop=True)
