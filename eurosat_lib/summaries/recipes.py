"""The recipe study's page (issue 15): test accuracy against training minutes, from the run records.

:mod:`eurosat_lib.experiments.recipe_study` trains the configurations; this module reads what
they left in ``book/runs/<profile>/recipe_study/`` (each run's ``record.json`` and its ``tta.json``
with per-image test predictions) and writes the page's Markdown. It imports neither Keras nor
TensorFlow, so the book's report can render it on a machine that cannot train.

The rules the page follows:

* A configuration is *chosen* on validation accuracy within a training budget; its test accuracy
  is then reported once (choosing on test would select on the test set).
* Training minutes are shown only for runs whose record says the machine was quiet
  (:func:`eurosat_lib.runs.timing_trusted`); a contended run keeps its accuracy but shows no time.
* Every comparison with the base recipe is a paired bootstrap over the same test images
  (:func:`eurosat_lib.stats.bootstrap_diff`) with a verdict word; with one seed, that interval
  covers test-image noise, not seed-to-seed variation, and the page says so.
* Test-time augmentation (the mean over the 8 dihedral views) is reported beside the plain
  number, and its minutes are counted apart from training.
* An ensemble (``ensemble_<name>.json``: finished runs' probabilities averaged) costs its members'
  minutes added up, is compared with its member that is best on validation, and is never the
  choice: the headline is one network.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .render import duration, flag_note, is_broken, md_table, pct, read_json, relative_source

#: The issue's goals on 2 CPU cores: (test accuracy, training minutes).
GOAL, MOONSHOT = (0.983, 20.0), (0.986, 30.0)
#: Helber et al. 2019, ResNet-50 fine-tuned on EuroSAT RGB (224 px, 80/20 split, GPU).
HELBER_RESNET50 = 0.9857
#: The base configuration every other one changes one thing of.
BASE_NAME = "base"


def decode_labels(stored: str | Sequence[int]) -> np.ndarray:
    """Per-image class indices from their stored form (a digit string, or a list of ints).

    Args:
        stored: What ``tta.json`` keeps under ``test_pred`` / ``tta_pred``.

    Returns:
        ``(N,)`` int array.
    """
    if isinstance(stored, str):
        return np.frombuffer(stored.encode("ascii"), dtype=np.uint8).astype(int) - ord("0")
    return np.asarray(stored, dtype=int)


def encode_labels(labels: Any) -> str | list[int]:
    """Per-image class indices in a compact JSON form: one digit per image when every class < 10.

    Args:
        labels: ``(N,)`` integer class indices.

    Returns:
        A string of digits (EuroSAT's 10 classes), else a list of ints.
    """
    labels = np.asarray(labels, dtype=int).ravel()
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        return [int(v) for v in labels]
    return "".join(map(str, labels))


def record_row(record: Mapping[str, Any], tta: Mapping[str, Any] | None) -> dict[str, Any]:
    """One table row from a finished run's record and its ``tta.json``.

    Args:
        record: The run's ``record.json`` content.
        tta: Its ``tta.json`` content, or None when test-time augmentation was not measured.

    Returns:
        The row: recipe, what changed, seed, image size, fine-tuning and head epochs run,
        validation, test and TTA test accuracy, training (and TTA) minutes, whether the timing
        was contended, the run's flags, and the per-image test predictions where kept.
    """
    from ..runs import used_cached_features  # keras-free, as this module

    params, timings = record["params"], record["timings"]
    tags = params.get("tags") or {}
    phases = timings.get("phases") or {}
    return {
        "recipe": tags.get("recipe", params["name"]), "what": tags.get("what", ""), "seed": params["seed"],
        "run": params["name"], "spec_key": params.get("spec_key"), "image_size": params["image_size"],
        # progressive resizing: the last phase that sets a size is the size the run is scored at
        "final_size": next((ph["image_size"] for ph in reversed(params.get("phases") or []) if ph.get("image_size")),
                           params["image_size"]),
        # the head trains on cached features in seconds; the recipe's epochs are the fine-tuning ones (all phases after it)
        "epochs": sum((ph or {}).get("epochs_run", 0) for name, ph in phases.items() if name != "head"),
        "head_epochs": (phases.get("head") or {}).get("epochs_run", 0),
        "val_acc": record["metrics"]["val"]["accuracy"], "test_acc": record["metrics"]["test"]["accuracy"],
        "n_val": record["metrics"]["val"].get("n"), "n_test": record["metrics"]["test"].get("n"),
        "tta_test_acc": tta["test_accuracy"] if tta else float("nan"),
        "minutes": timings["fit_seconds"] / 60.0,
        "tta_minutes": tta["seconds"] / 60.0 if tta else float("nan"),
        # where and how quietly the TTA pass ran (it may run in a later process than the training)
        "tta_machine": machine_name(tta["environment"]) if tta and tta.get("environment") else None,
        "tta_untimed": tta_untimed_reason(tta) if tta else "not measured",
        "contended": bool(timings.get("contended", False)),
        "load_recorded": "machine_load" in timings,
        "spans_processes": bool(timings.get("spans_processes", False)),
        "features_from_cache": used_cached_features(record),
        # the machine's speed during the run: seconds per epoch of the fine-tuning phase, and the
        # work such an epoch does (runs with the same workload did the same work per epoch)
        "finetune_s_per_epoch": (phases.get("finetune") or {}).get("seconds_per_epoch"),
        "finetune_workload": _workload(params),
        "machine": machine_name(record.get("environment") or {}),
        "warnings": list(record.get("warnings", [])),
        "labels": (tta or {}).get("labels"), "test_pred": (tta or {}).get("test_pred"),
        "tta_pred": (tta or {}).get("tta_pred"),
    }  # fmt: skip


def _workload(params: Mapping[str, Any]) -> str | None:
    """What one fine-tuning epoch computes: width, input size, unfrozen layers, batch size, and the
    validation subset where an epoch scores one (an epoch's seconds include its validation pass)."""
    tune = next((ph for ph in params.get("phases") or [] if ph.get("name") == "finetune"), None)
    if tune is None:
        return None
    alpha = (params.get("backbone_kwargs") or {}).get("alpha")
    monitor = tune.get("val_n_per_class")
    return (f"alpha {alpha}, {tune.get('image_size') or params['image_size']} px, unfreeze {tune.get('unfreeze')}, "
            f"batch {tune.get('batch_size')}" + (f", validated on {monitor} images per class" if monitor else ""))  # fmt: skip


def speed_drift(rows: Sequence[Mapping[str, Any]], machine: str | None = None) -> dict[str, Any] | None:
    """How much the machine's speed varied across runs that did the same work per epoch.

    Among the runs timed on ``machine`` whose timing is trusted, the most common fine-tuning
    workload (e.g. 128 px, every layer, batch 64) is taken; its seconds per epoch are compared.

    Args:
        rows: :func:`record_row` rows.
        machine: The study's machine (default :func:`study_machine` of ``rows``).

    Returns:
        ``{"workload", "runs", "recipes", "low", "high", "median"}`` (seconds per epoch), or None
        with fewer than two such runs.
    """
    machine = machine if machine is not None else study_machine(rows)
    timed = [r for r in rows if r.get("finetune_workload") and r.get("finetune_s_per_epoch")
             and untimed_reason(r, machine) is None]  # fmt: skip
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in timed:
        by.setdefault(r["finetune_workload"], []).append(r)
    if not by:
        return None
    workload, runs = max(by.items(), key=lambda kv: (len(kv[1]), kv[0]))
    if len(runs) < 2:
        return None
    secs = sorted(float(r["finetune_s_per_epoch"]) for r in runs)
    return {"workload": workload, "runs": len(runs), "recipes": sorted({r["recipe"] for r in runs}),
            "low": secs[0], "high": secs[-1], "median": float(np.median(secs))}  # fmt: skip


def read_rows(study_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete run of a study folder as a :func:`record_row`, ordered by run folder name.

    A run whose ``tta.json`` belongs to another spec (a retrained run) gets no TTA figure.

    Args:
        study_dir: ``book/runs/<profile>/recipe_study``.

    Returns:
        The rows; a ``"record"`` key holds each record's path.
    """
    from ..runs import RUN_RECORD, complete_records

    rows = []
    for run_dir, rec in complete_records(study_dir):
        tta = read_json(run_dir / "tta.json")
        if tta and tta.get("spec_key") != rec["params"].get("spec_key"):
            tta = None
        rows.append({**record_row(rec, tta), "record": run_dir / RUN_RECORD})
    return rows


def machine_name(environment: Mapping[str, Any]) -> str:
    """A run's machine as the page names it: CPU model and cores, and GPUs where there were any.

    Sessions of this project do not always get the same CPU, and minutes measured on two CPU
    models are not one axis; the page compares minutes on one machine only (:func:`study_machine`).
    Where the record kept the CPU's SIMD extensions (``cpu_isa``), the widest is part of the name:
    two VMs both called "AMD EPYC" ran the same fine-tuning epoch ~5x apart (46-51 s and 264 s);
    the slow one has AVX2 but no AVX-512, what the fast one had was not recorded. Records from
    before ``cpu_isa`` was kept keep the bare model name.

    Args:
        environment: A record's ``environment``.

    Returns:
        E.g. ``"Intel(R) Xeon(R) Processor, 2 cores"`` or ``"AMD EPYC (AVX2), 2 cores"``.
    """
    isa = environment.get("cpu_isa")
    widest = None if isa is None else next(
        (label for flag, label in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in isa), "no AVX2")
    model = (environment.get("cpu_model") or "unknown CPU") + (f" ({widest})" if widest else "")
    name = f"{model}, {environment.get('cpu_count') or '?'} cores"
    gpus = environment.get("gpus")
    return name + (f", GPU: {', '.join(map(str, gpus))}" if gpus else "")


def timed_machines(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Each machine and how many configurations have a trusted timing on it (contended, resumed
    or cache-reading runs do not count), most first.

    Args:
        rows: :func:`record_row` rows.

    Returns:
        ``{machine name: number of timed configurations}``.
    """
    timed: dict[str, set[str]] = {}
    for r in rows:
        if untimed_reason(r) is None:
            timed.setdefault(r.get("machine", ""), set()).add(r["recipe"])
    return dict(sorted(((m, len(v)) for m, v in timed.items()), key=lambda kv: (-kv[1], kv[0])))


def study_machine(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The machine whose minutes the page's main time axis shows: the one with the most configurations
    timed on it (ties: the base run's machine, then the one most runs ran on).

    Counting timed configurations, not runs, keeps the axis where the study is most complete: extra
    seeds run on another machine add accuracy, not a second axis.

    Args:
        rows: :func:`record_row` rows.

    Returns:
        Its :func:`machine_name`, or None without rows.
    """
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("machine", "")] = counts.get(r.get("machine", ""), 0) + 1
    if not counts:
        return None
    timed = timed_machines(rows)
    base = next((r.get("machine", "") for r in rows if r["recipe"] == BASE_NAME), None)
    return max(sorted(counts), key=lambda m: (timed.get(m, 0), m == base, counts[m]))


def trusted_minutes(row: Mapping[str, Any], machine: str | None = None) -> float:
    """The row's training minutes if its timing may be shown, else NaN.

    Args:
        row: A :func:`record_row`.
        machine: The study's machine (:func:`study_machine`); None accepts any.

    Returns:
        Minutes, or NaN when :func:`untimed_reason` gives a reason.
    """
    return float(row["minutes"]) if untimed_reason(row, machine) is None else math.nan


def untimed_reason(row: Mapping[str, Any], machine: str | None = None) -> str | None:
    """Why a run's minutes may not be shown beside the others, or None when they may.

    Args:
        row: A :func:`record_row`.
        machine: The study's machine; a run timed on another is not on the same time axis.

    Returns:
        ``"load not recorded"``, ``"contended"``, ``"resumed across processes"``, ``"features
        cached by an earlier run"`` (its minutes leave out the feature extraction every other
        run pays), ``"timed on another machine (…)"`` or None.
    """
    if machine is not None and row.get("machine", "") != machine:
        return f"timed on another machine ({row.get('machine', '?')})"
    if not row.get("load_recorded"):
        return "load not recorded"
    if row.get("contended"):
        return "contended"
    if row.get("spans_processes"):
        return "resumed across processes"
    if row.get("features_from_cache"):
        return "features cached by an earlier run"
    return None


def tta_untimed_reason(tta: Mapping[str, Any], machine: str | None = None) -> str | None:
    """Why a ``tta.json``'s inference seconds may not be shown, or None when they may.

    The same rule as a run's training minutes (:func:`untimed_reason`): the pass must have kept
    the machine's load around it, been quiet, and (given ``machine``) run on that machine.

    Args:
        tta: A ``tta.json`` (:func:`eurosat_lib.experiments.recipe_study.tta_result`).
        machine: The machine whose time axis it must be on; None: any.

    Returns:
        ``"load not recorded"`` (files written before the load was kept), ``"contended"``,
        ``"timed on another machine (…)"`` or None.
    """
    if "machine_load" not in tta or not tta.get("environment"):
        return "load not recorded"
    if tta.get("contended"):
        return "contended"
    where = machine_name(tta["environment"])
    if machine is not None and where != machine:
        return f"timed on another machine ({where})"
    return None


def by_recipe(rows: Sequence[Mapping[str, Any]], machine: str | None = None) -> list[dict[str, Any]]:
    """One entry per configuration: its runs' mean accuracies and trusted minutes.

    Args:
        rows: :func:`record_row` rows (any seeds).
        machine: Whose minutes count (default :func:`study_machine` of ``rows``).

    Returns:
        Entries with ``recipe``, ``what``, ``image_size``, ``epochs``, ``seeds``, ``val_acc``,
        ``test_acc``, ``tta_test_acc``, ``test_sd`` (NaN with one seed), ``minutes`` (the mean over
        the trusted runs on ``machine``; NaN when none; runs on other machines add seeds, not
        minutes), ``axis_runs`` (the runs on ``machine``) and ``timed_runs`` (how many of them are
        trusted), ``other_minutes`` (``{machine: mean minutes}`` of trusted runs elsewhere),
        ``tta_minutes``, ``warnings`` (per run), ``runs``. Ordered by minutes (untimed last), then name.
    """
    machine = machine if machine is not None else study_machine(rows)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["recipe"], []).append(r)
    out = []
    for name, runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        here = [r for r in runs if machine is None or r.get("machine", "") == machine]
        # a seed measured under contention (or resumed) is no timing, but the configuration's quiet
        # seeds on the same machine are: its minutes are theirs, and the table says how many
        mins = [m for m in (trusted_minutes(r, machine) for r in here) if math.isfinite(m)]
        elsewhere: dict[str, list[float]] = {}
        for r in runs:
            if r not in here and untimed_reason(r) is None:
                elsewhere.setdefault(r.get("machine", ""), []).append(float(r["minutes"]))
        test = [r["test_acc"] for r in runs]
        out.append({
            "recipe": name, "what": runs[0]["what"], "image_size": runs[0]["image_size"],
            "final_size": runs[0].get("final_size", runs[0]["image_size"]), "epochs": runs[0]["epochs"],
            "seeds": [r["seed"] for r in runs], "val_acc": float(np.mean([r["val_acc"] for r in runs])),
            "test_acc": float(np.mean(test)), "test_sd": float(np.std(test, ddof=1)) if len(test) > 1 else math.nan,
            "tta_test_acc": float(np.mean([r["tta_test_acc"] for r in runs])),
            "minutes": float(np.mean(mins)) if mins else math.nan, "axis_runs": here, "timed_runs": len(mins),
            "other_minutes": {m: float(np.mean(v)) for m, v in sorted(elsewhere.items())},
            # inference minutes are machine time too: only quiet TTA passes on this machine count
            "tta_minutes": _mean_or_nan([r["tta_minutes"] for r in runs if _tta_reason(r, machine) is None]),
            "n_test": runs[0].get("n_test"), "warnings": [r["warnings"] for r in runs], "runs": runs, "machine": machine,
        })  # fmt: skip
    return sorted(out, key=lambda e: (not math.isfinite(e["minutes"]), e["minutes"] if math.isfinite(e["minutes"]) else 0, e["recipe"]))


def _tta_reason(row: Mapping[str, Any], machine: str | None) -> str | None:
    """A :func:`record_row`'s :func:`tta_untimed_reason` on ``machine``'s time axis (``"not measured"`` without TTA)."""
    why = row.get("tta_untimed", "not measured")
    if why is None and machine is not None and row.get("tta_machine") != machine:
        return f"timed on another machine ({row.get('tta_machine')})"
    return why


def _tta_timing_note(rows: Sequence[Mapping[str, Any]], machine: str | None) -> str:
    """How many TTA passes may show their minutes, and why the others do not (counted per reason)."""
    reasons: dict[str, int] = {}
    measured = 0
    for r in rows:
        why = _tta_reason(r, machine)
        if why == "not measured":
            continue
        measured += 1
        if why is not None:
            key = why.split(" (")[0]  # "timed on another machine (…)": counted together
            reasons[key] = reasons.get(key, 0) + 1
    if not reasons:
        return f"All {measured} TTA passes qualify."
    why = "; ".join(f"{n} {k}" for k, n in sorted(reasons.items()))
    note = f"{measured - sum(reasons.values())} of {measured} TTA passes qualify ({why}): the others show –."
    if "load not recorded" in reasons:
        note += " Passes measured before `tta.json` kept the load have no verifiable timing."
    return note


def _mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _per_run_flags(row: Mapping[str, Any]) -> list[list[str]]:
    """A row's flags as one list per run (an entry keeps one per run; a single run's row keeps one list)."""
    w = list(row.get("warnings") or [])
    return [w] if w and isinstance(w[0], str) else w


def choose(rows: Sequence[Mapping[str, Any]], budget_minutes: float) -> Mapping[str, Any] | None:
    """The row with the best VALIDATION accuracy among those timed within ``budget_minutes`` of training.

    Choosing on validation and reporting its test accuracy once keeps the headline honest;
    picking the best test score among many recipes would be selection on the test set. Rows
    flagged chance-level or diverged, and rows without a trusted timing (NaN minutes), never qualify.

    Args:
        rows: :func:`by_recipe` entries or single-run rows (``minutes``, ``val_acc``, optional ``warnings``).
        budget_minutes: The most training minutes allowed.

    Returns:
        The chosen row, or None when none fits.
    """
    fits = [r for r in rows if math.isfinite(r["minutes"]) and r["minutes"] <= budget_minutes and not is_broken(_per_run_flags(r))]
    return max(fits, key=lambda r: r["val_acc"]) if fits else None


def pareto_front(rows: Sequence[Mapping[str, Any]], x: str = "minutes", y: str = "test_acc") -> list[Mapping[str, Any]]:
    """The rows no other beats on both axes (less ``x`` and more ``y``), by increasing ``x``.

    Rows without a finite ``x`` (an untrusted timing) are left out; of rows tied in ``x`` only the
    better ``y`` can be on the front.

    Args:
        rows: Table rows or :func:`by_recipe` entries.
        x: The cost column (smaller is better).
        y: The quality column (larger is better).

    Returns:
        The non-dominated rows, sorted by ``x``.
    """
    front, best = [], -math.inf
    for r in sorted((r for r in rows if math.isfinite(r[x])), key=lambda r: (r[x], -r[y])):
        if r[y] > best:
            front.append(r)
            best = r[y]
    return front


def versus_base(entry: Mapping[str, Any], base: Mapping[str, Any] | None, key: str = "test_pred") -> Any:
    """Seed-0 test accuracy of ``entry`` minus the base recipe's, paired over the same test images.

    Args:
        entry: A :func:`by_recipe` entry.
        base: The base recipe's entry, or None.
        key: ``"test_pred"`` (plain) or ``"tta_pred"`` (test-time augmentation).

    Returns:
        A :class:`eurosat_lib.stats.Diff`, or None when either side lacks per-image predictions.
    """
    if base is None:
        return None
    return paired(entry["runs"][0], base["runs"][0], key)


#: The file a study folder keeps its plan in (the configurations it is meant to run).
PLAN_FILE = "plan.json"
#: The files a study folder keeps its ensembles' scores in (``ensemble_<name>.json``).
ENSEMBLE_FILE = "ensemble_{name}.json"


def read_ensembles(study_dir: str | Path) -> list[dict[str, Any]]:
    """The scored ensembles of a study folder (``ensemble_<name>.json``), ordered by name.

    Args:
        study_dir: ``book/runs/<profile>/recipe_study``.

    Returns:
        Their contents (see :func:`eurosat_lib.experiments.recipe_study.ensemble_result`).
    """
    found = []
    for path in sorted(Path(study_dir).glob(ENSEMBLE_FILE.format(name="*"))):
        got = read_json(path)
        if got and "members" in got:
            found.append(got)
    return found


def bench_over_base(bench: Mapping[str, Any] | None) -> dict[str, float]:
    """Each configuration's cost relative to ``base`` in ``benchmarks/bench_recipes.py``'s result.

    Args:
        bench: The result file, parsed, or None.

    Returns:
        ``{configuration: ratio}``; empty for no result, a ``--quick`` run or one without configurations.
    """
    conf = ((bench or {}).get("figures") or {}).get("configurations") or {}
    if not bench or bench.get("quick") or not conf:
        return {}
    base = conf.get(BASE_NAME, {}).get("modelled_minutes")
    out = {}
    for name, c in conf.items():
        m = c.get("modelled_minutes")
        # result files written before bench_recipes stored `over_base` give it only through the minutes
        x = c.get("over_base") or (m / base if m and base else None)
        if m and x:
            out[name] = float(x)
    return out


def ensemble_entry(ens: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], machine: str | None,
                   over_base: Mapping[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """An ensemble as the page shows it: its scores, and its members' runs and minutes.

    Its training minutes are the members' added up (on 2 cores they train one after the other), and
    only when every member has a trusted timing on ``machine``; ``other_minutes`` holds the sum on
    another machine where all members were timed there. A member whose record no longer has the
    spec key the ensemble averaged (it was trained again since) makes the entry ``stale``.

    Args:
        ens: A :func:`read_ensembles` item.
        rows: The study's :func:`record_row` rows.
        machine: The page's main time axis (:func:`study_machine`).
        over_base: :func:`bench_over_base`: the configurations' costs measured side by side, for the
            ensemble's (its members' added up) and its ``versus`` configuration's.

    Returns:
        An entry with ``recipe`` (the ensemble's name), ``what``, ``members`` (the member configuration),
        ``val_acc``, ``test_acc``, ``tta_test_acc``, ``n_test``, ``minutes`` (NaN when not all members are
        timed on ``machine``), ``other_minutes``, ``runs`` (the members' rows),
        ``axis_runs``, ``timed_runs``, ``warnings`` (per member), ``labels``, ``test_pred``,
        ``tta_pred``, ``stale`` (the members' runs that changed since; empty when none), ``best_member``
        (the member row best on validation) and ``gain`` / ``tta_gain`` (the ensemble minus that member
        on the same test images, a :class:`eurosat_lib.stats.Diff`; None when stale, flagged or unpaired);
        ``versus`` (the single configuration it is declared against, or None), ``versus_run`` (that
        configuration's run best on validation), ``versus_gain`` / ``versus_tta_gain`` (the ensemble
        minus that run), ``versus_why`` (why they are not compared, or None), ``x_base`` and
        ``versus_x_base`` (the two sides' cost relative to ``base`` side by side; NaN unmeasured).
    """
    by_run = {r.get("run"): r for r in rows}
    members = [by_run.get(m["run"]) for m in ens["members"]]
    stale = [m["run"] for m, r in zip(ens["members"], members) if r is None or r.get("spec_key") != m["spec_key"]]
    runs = [r for r in members if r is not None]
    here = [r for r in runs if machine is None or r.get("machine", "") == machine]
    mins = [trusted_minutes(r, machine) for r in here]
    total = float(sum(mins)) if len(mins) == len(ens["members"]) and all(math.isfinite(m) for m in mins) else math.nan
    elsewhere = {r.get("machine", "") for r in runs} - {machine}
    other = {}
    for m in sorted(elsewhere):
        there = [r for r in runs if r.get("machine", "") == m and untimed_reason(r) is None]
        if len(there) == len(ens["members"]):
            other[m] = float(sum(r["minutes"] for r in there))
    # the member it is compared with is chosen on validation: on test it would flatter the gain
    best = max(runs, key=lambda r: r["val_acc"]) if runs else None
    compare = best is not None and not stale and not is_broken([r.get("warnings", []) for r in runs])
    versus, vs_run, vs_why = ens.get("versus"), None, None
    if versus:
        # the single network's run is chosen on validation too, as the page's choice is
        candidates = [r for r in rows if r.get("recipe") == versus]
        vs_run = max(candidates, key=lambda r: r["val_acc"]) if candidates else None
        vs_why = ("its score is stale" if stale else f"`{versus}` has not run" if vs_run is None
                  else "a flagged run" if not compare or is_broken(_per_run_flags(vs_run)) else None)  # fmt: skip
    vs_ok = versus is not None and vs_why is None
    ob = over_base or {}
    x_base = len(ens["members"]) * ob[ens["recipe"]] if ens["recipe"] in ob else math.nan
    return {
        "recipe": ens["name"], "what": ens["what"], "members": ens["recipe"], "val_acc": ens["val_acc"],
        "test_acc": ens["test_acc"], "tta_test_acc": ens.get("tta_test_acc", math.nan), "n_test": ens.get("n_test"),
        "minutes": total, "other_minutes": other, "runs": runs, "axis_runs": here, "timed_runs": sum(math.isfinite(m) for m in mins), "machine": machine,
        "warnings": [r.get("warnings", []) for r in runs], "labels": ens.get("labels"),
        "test_pred": ens.get("test_pred"), "tta_pred": ens.get("tta_pred"), "stale": stale, "best_member": best,
        "gain": paired(ens, best) if compare else None, "tta_gain": paired(ens, best, "tta_pred") if compare else None,
        "versus": versus, "versus_run": vs_run, "versus_why": vs_why,
        "versus_gain": paired(ens, vs_run) if vs_ok else None,
        "versus_tta_gain": paired(ens, vs_run, "tta_pred") if vs_ok else None,
        "x_base": x_base, "versus_x_base": ob.get(versus, math.nan) if versus else math.nan,
    }  # fmt: skip


def paired(a: Mapping[str, Any], b: Mapping[str, Any], key: str = "test_pred") -> Any:
    """``a``'s accuracy minus ``b``'s over the same test images (paired bootstrap), or None.

    Args:
        a: A run row or ensemble entry with ``labels`` and ``key`` (per-image predictions).
        b: Another.
        key: ``"test_pred"`` or ``"tta_pred"``.

    Returns:
        A :class:`eurosat_lib.stats.Diff`, or None when either lacks predictions or they were not
        scored on the same images in the same order.
    """
    from ..stats import bootstrap_diff

    if any(r.get(k) is None for r in (a, b) for k in (key, "labels")):
        return None
    ya, yb = decode_labels(a["labels"]), decode_labels(b["labels"])
    pa, pb = decode_labels(a[key]), decode_labels(b[key])
    if not (len(pa) == len(pb) == len(ya)) or not np.array_equal(ya, yb):
        return None
    return bootstrap_diff(pa == ya, pb == yb)


def ensemble_section(ensembles: Sequence[Mapping[str, Any]], source: str,
                     pending: Sequence[Mapping[str, Any]] = ()) -> list[str]:  # fmt: skip
    """The page's section on ensembles: each one's scores against its member chosen on validation.

    Args:
        ensembles: :func:`ensemble_entry` entries.
        source: The study folder as the page cites it.
        pending: The plan's ensembles (``name``, ``what``, ``versus``) that have no score yet.

    Returns:
        Markdown lines (none without ensembles, scored or pending).
    """
    if not ensembles and not pending:
        return []
    out = ["## Runs averaged (ensembles)", "",
           "Runs with different seeds make different mistakes; averaging the class probabilities of finished runs "
           "(an ensemble) is a common way to turn that into accuracy. It costs every member: its training minutes are "
           "the members' added up (on 2 cores they train one after the other), and inference runs each member. Which "
           "runs are averaged is fixed by a configuration and its seeds, not picked by their test scores. Each "
           "ensemble is compared with its member that scores higher on **validation** (choosing the member on test "
           "would flatter the gain), on the same test images. That says what averaging adds to those runs, not "
           "whether one network given the same compute (more epochs) would do as well"
           + (": the sentences under the table answer that where an ensemble was declared against such a network. "
              if any(e.get("versus") for e in ensembles) else
              ": an ensemble declared against such a network is listed below, not scored yet. "
              if any(e.get("versus") for e in pending) else ": no such comparison is part of this study. ")
           + "An ensemble is not a candidate for the choice above, nor a point of the figure or the front: the headline "
           "is one network, which the results page's reference run trains.", ""]  # fmt: skip
    table = []
    for e in ensembles:
        if e["stale"]:
            table.append({"name": f"`{e['recipe']}`", "what": e["what"], "min": "–", "val": "–", "test": "–", "tta": "–",
                          "d": f"stale: {', '.join(e['stale'])} trained again since; score it again", "dt": "–", "x": "–"})  # fmt: skip
            continue
        best, broken = e["best_member"], is_broken(e["warnings"])
        table.append({
            "name": f"`{e['recipe']}`", "what": e["what"], "min": _minutes_text(e), "val": pct(e["val_acc"]),
            "test": _acc_ci(e["test_acc"], e["n_test"]) + flag_note(e["warnings"]),
            "tta": pct(e["tta_test_acc"]) if math.isfinite(e["tta_test_acc"]) else "–",
            "d": "not compared (flagged member)" if broken else
                 (f"seed {best['seed']}: " + format_diff_text(e["gain"]) if e["gain"] else "no per-image predictions"),
            "dt": "–" if e["tta_gain"] is None else format_diff_text(e["tta_gain"]),
            "x": f"{e['x_base']:.2f}×" if math.isfinite(e.get("x_base", math.nan)) else "–",
        })  # fmt: skip
    costed = any(math.isfinite(e.get("x_base", math.nan)) for e in ensembles)
    out += [] if not table else [md_table(table, [("name", "ensemble"), ("what", "members"), ("min", "training minutes (members added up)")]
                     + ([("x", "× base, side by side (members added up)")] if costed else [])
                     + [("val", "validation"), ("test", "test (95 % interval)"), ("tta", "test with TTA"),
                        ("d", "test vs its member best on validation"), ("dt", "with TTA, vs that member with TTA")]), ""]  # fmt: skip
    versus = [t for e in ensembles if (t := versus_text(e))]
    if versus:
        out += [" ".join(versus), ""]
    if pending:
        out += ["Declared, not scored yet: " + "; ".join(
            f"`{p['name']}` ({p['what']}" + (f", against one network of `{p['versus']}`" if p.get("versus") else "") + ")"
            for p in pending) + ". `python -m eurosat_lib.experiments.recipe_study --ensembles` scores them where their "
            "members' model files are (they are not committed); elsewhere it stops rather than train the members again, "
            "which `--retrain-missing` does, replacing their records and minutes.", ""]  # fmt: skip
    out += [f"Scores: `{source}/ensemble_<name>.json` (`python -m eurosat_lib.experiments.recipe_study --ensembles`).", ""]
    return out


def versus_text(e: Mapping[str, Any]) -> str:
    """An ensemble against the one network it was declared against (:func:`ensemble_entry`'s ``versus``).

    Args:
        e: An :func:`ensemble_entry` entry.

    Returns:
        A sentence with the paired difference and its verdict, why they are not compared, or ``""``
        when the ensemble names no such network.
    """
    vs = e.get("versus")
    if not vs or e.get("stale"):  # a stale ensemble's row already says so, and shows no score
        return ""
    if e.get("versus_why") or e.get("versus_gain") is None:
        why = e.get("versus_why") or "no per-image predictions on the same test images"
        return f"`{e['recipe']}` is not compared with one network of `{vs}`: {why}."
    run = e["versus_run"]
    x, vx = e.get("x_base", math.nan), e.get("versus_x_base", math.nan)
    cost = (f", which the side-by-side benchmark puts at {vx:.2f}× `{BASE_NAME}`'s training time against the ensemble's "
            f"{x:.2f}×" if math.isfinite(x) and math.isfinite(vx) else "")  # fmt: skip
    what = f" ({run['what']})" if run.get("what") else ""
    tta = (f"; with test-time augmentation on both, {format_diff_text(e['versus_tta_gain'])}"
           if e.get("versus_tta_gain") is not None else "")  # fmt: skip
    return (f"`{e['recipe']}` against one network of about the same compute, `{vs}`{what}, its run best on validation "
            f"(seed {run['seed']}){cost}: the ensemble minus that network, {format_diff_text(e['versus_gain'])}{tta}.")


def _minutes_text(e: Mapping[str, Any]) -> str:
    here = e["axis_runs"]
    if math.isfinite(e["minutes"]):
        if e["timed_runs"] == len(here):
            return f"{e['minutes']:.1f}"
        untimed = [(run["seed"], why) for run in here if (why := untimed_reason(run, e.get("machine")))]
        return (f"{e['minutes']:.1f} ({e['timed_runs']} of {len(here)} runs; "
                + "; ".join(f"seed {k}: {why}" for k, why in untimed) + ")")  # fmt: skip
    if here:  # runs on other machines are extra seeds here: this axis's own reasons decide
        reasons = {r for r in (untimed_reason(run, e.get("machine")) for run in here) if r}
    else:  # on another time axis only: say where and how long, never comparing it with this one
        other = e.get("other_minutes") or {}
        where = set()
        for run in e["runs"]:
            m = run.get("machine", "?")
            why = untimed_reason(run)
            where.add(f"{m}: {other[m]:.1f} min" if m in other else f"{m}, {why}")
        # one phrase for all the other machines: "timed on another machine (A), timed on another machine (B)" read as a stutter
        return f"not shown: timed on {'another machine' if len(where) == 1 else 'other machines'} ({'; '.join(sorted(where))})"
    return "not shown: " + ", ".join(sorted(reasons))


def _acc_ci(acc: float, n: int | None) -> str:
    from ..sanity import wilson_interval

    if not n:
        return pct(acc)
    lo, hi = wilson_interval(acc, int(n))
    return f"{pct(acc)} ({100 * lo:.2f}–{100 * hi:.2f})"


def _seeds_text(e: Mapping[str, Any]) -> str:
    if len(e["seeds"]) < 2:
        return "1"
    return f"{len(e['seeds'])} (test sd {100 * e['test_sd']:.2f})"


def choice_text(entries: Sequence[Mapping[str, Any]], budget: float, target: float, label: str, cores: str) -> str:
    """The paragraph on the configuration chosen within ``budget`` minutes and whether it reached ``target``.

    Args:
        entries: :func:`by_recipe` entries.
        budget: Training minutes allowed.
        target: The test accuracy aimed at.
        label: ``"goal"`` or ``"moonshot"``.
        cores: How the machine is named (``"2 CPU cores"``).

    Returns:
        Markdown.
    """
    from ..sanity import wilson_interval

    c = choose(entries, budget)
    if c is None:
        head = f"**Within {budget:.0f} minutes ({label}: ≥ {100 * target:.1f} % test):**"
        timed = [e for e in entries if math.isfinite(e["minutes"]) and not is_broken(_per_run_flags(e))]
        if not timed:
            return f"{head} no configuration has a trusted timing on {cores} yet."
        # timed, but slower than the budget: say by how much rather than "not yet"
        fastest = min(timed, key=lambda e: e["minutes"])
        if len(timed) == 1:
            return f"{head} the one configuration timed on {cores}, `{fastest['recipe']}`, took {fastest['minutes']:.1f} min of training."
        return (f"{head} none of the {len(timed)} configurations timed on {cores} fits: "
                f"the fastest, `{fastest['recipe']}`, took {fastest['minutes']:.1f} min of training.")  # fmt: skip
    n = int(c["n_test"] or 0)
    lo, hi = wilson_interval(c["test_acc"], n) if n else (math.nan, math.nan)
    tta = c["tta_test_acc"]
    reached = c["test_acc"] >= target
    tta_reached = math.isfinite(tta) and tta >= target
    words = [
        f"**Within {budget:.0f} minutes ({label}: ≥ {100 * target:.1f} % test):** the best configuration on validation is "
        f"`{c['recipe']}` ({c['what']}; {_minutes_text(c)} min of training on {cores}), validation {pct(c['val_acc'])}, "
        f"test **{pct(c['test_acc'])}** (95 % interval {100 * lo:.2f}–{100 * hi:.2f} %, {n:,} images"
        + (f", mean of {len(c['seeds'])} seeds" if len(c["seeds"]) > 1 else ", one seed") + ").",
    ]
    if math.isfinite(tta):
        spent = f"{c['tta_minutes']:.1f} min of inference, " if math.isfinite(c.get("tta_minutes", math.nan)) else ""
        words.append(f"With test-time augmentation (8 dihedral views, {spent}not counted as training) "
                     f"it scores **{pct(tta)}**.")  # fmt: skip
    if reached:
        words.append(f"The {label} is **reached** without test-time augmentation.")
    elif tta_reached:
        words.append(f"The {label} is reached only **with** test-time augmentation; without it the run is "
                     f"{100 * (target - c['test_acc']):.2f} points short.")  # fmt: skip
    else:
        best = max(c["test_acc"], tta if math.isfinite(tta) else -1.0)
        words.append(f"The {label} is **not reached**: {100 * (target - best):.2f} points short"
                     + (" even with test-time augmentation." if math.isfinite(tta) else "."))  # fmt: skip
    return " ".join(words)


def _speed_ratio_text(rows: Sequence[Mapping[str, Any]], main: str, other: str) -> str:
    """`` The same fine-tuning epoch (…) took a median of X s on main and Y s on other.`` or ``""``."""
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r.get("finetune_workload") and r.get("finetune_s_per_epoch") and untimed_reason(r) is None:
            by.setdefault((r["finetune_workload"], r.get("machine", "")), []).append(float(r["finetune_s_per_epoch"]))
    shared = sorted({w for w, m in by if m == main} & {w for w, m in by if m == other},
                    key=lambda w: (-(len(by[(w, main)]) + len(by[(w, other)])), w))  # ties by name: sets iterate in hash order
    if not shared:
        return ""
    w = shared[0]
    a, b = float(np.median(by[(w, main)])), float(np.median(by[(w, other)]))
    na, nb = len(by[(w, main)]), len(by[(w, other)])
    return (f" The same fine-tuning epoch ({w}) took {'a median of ' if max(na, nb) > 1 else ''}{a:.0f} s on {main} "
            f"({na} run{'s' if na != 1 else ''}) and {b:.0f} s on {other} ({nb} run{'s' if nb != 1 else ''}), "
            "different runs on different days.")


def _drift_lines(rows: Sequence[Mapping[str, Any]], machine: str | None) -> list[str]:
    d = speed_drift(rows, machine)
    if d is None:
        return []
    names = ", ".join(f"`{n}`" for n in d["recipes"])
    return [f"- Even on one machine the speed drifts: the same fine-tuning epoch ({d['workload']}; runs of {names}) "
            f"took from {d['low']:.0f} to {d['high']:.0f} s ({d['runs']} runs, median {d['median']:.0f} s), "
            f"{100 * (d['high'] / d['low'] - 1):.0f} % apart for reasons that are not the recipe. Differences in minutes "
            "smaller than that are not evidence that one recipe is faster; `benchmarks/bench_recipes.py` measures "
            "the configurations' costs side by side in one run."]


def bench_section(bench: Mapping[str, Any] | None, study: Mapping[str, float] | None = None, axis: str = "",
                  source: str = "benchmarks/results/recipes.json") -> list[str]:  # fmt: skip
    """The configurations' costs as ``benchmarks/bench_recipes.py`` modelled them side by side in one run.

    The study's minutes come from runs hours or sessions apart on a drifting machine; the benchmark
    times one epoch of every workload interleaved in one process, so its ratios to the base recipe
    are the configurations' relative costs (also for planned ones that have not run).

    Args:
        bench: The benchmark's result file, parsed; None, a ``--quick`` run (synthetic images, smoke
            sizes) or one without configurations gives no section.
        study: The study's minutes per configuration on its main axis (NaN: untimed there), for
            the same ratios as the runs measured them and an estimate for configurations not timed.
        axis: That axis's CPU (:func:`study_machine`).
        source: The result file's path as the page cites it.

    Returns:
        Markdown lines (empty: no section).
    """
    conf = ((bench or {}).get("figures") or {}).get("configurations") or {}
    if not bench or bench.get("quick") or not conf:
        return []
    f = bench["figures"]
    study = {k: v for k, v in (study or {}).items() if math.isfinite(v)}
    study_base = study.get(BASE_NAME)
    rows, estimates = [], []
    rounds = len(f.get("rounds") or [])
    ranged = rounds > 1 and all(c.get("over_base_range") for c in conf.values())
    ratio = bench_over_base(bench)
    for name, c in sorted(conf.items(), key=lambda kv: (kv[1].get("modelled_minutes") or math.inf, kv[0])):
        m = c.get("modelled_minutes")
        x = ratio.get(name)
        lo, hi = c.get("over_base_range") or (math.nan, math.nan)
        rows.append({"recipe": f"`{name}`", "min": f"{m:.1f}" if m else "–", "x": f"{x:.2f}×" if m and x else "–",
                     "rx": f"{lo:.2f}–{hi:.2f}" if ranged and m and name != BASE_NAME else "–",
                     "sx": f"{study[name] / study_base:.2f}×" if name in study and study_base else "–"})  # fmt: skip
        if m and x and study_base and name not in study:
            estimates.append(_estimate(name, x, (lo, hi) if ranged else None, study_base))
    machine = f.get("machine") or machine_name(bench.get("environment") or {})
    when = str((bench.get("environment") or {}).get("timestamp", ""))[:10]
    out = ["## What each configuration costs, measured side by side", "",
           f"The minutes above come from runs timed hours or sessions apart. `benchmarks/bench_recipes.py` timed one "
           f"training epoch and one inference pass of every workload of the study interleaved in one process "
           f"({rounds} round{'s' if rounds != 1 else ''} on {f.get('train_images', '?')} real training images"
           + (f", on {machine}" if machine else "") + (f", {when}" if when else "")
           + ") and models each configuration's training minutes from those speeds: feature extraction for the head, "
           "then every fine-tuning epoch with its validation pass (the head's own epochs on cached features are left "
           "out). The ratio to `base` is the configuration's cost relative to the base recipe; the minutes are that "
           "CPU's, so they are not the minutes of the table above unless it is the same CPU.", ""]  # fmt: skip
    if f.get("contended"):
        out += [f"⚠ Another job kept a core busy during part of that run ({', '.join(f['contended'])}): those "
                "workloads' speeds, and every ratio that uses them, are not evidence.", ""]  # fmt: skip
    if ranged:
        out += [f"The modelled minutes and `× base` use each workload's median speed over the {rounds} rounds. The "
                "next column is the lowest and highest the same ratio took *within one round*: each round times every "
                "workload minutes apart, so a round's ratio is a paired comparison, and its spread over rounds is how "
                "far the machine's drift moved the ratio while nothing else changed. (The ratio of medians can lie "
                "outside that range when two workloads' medians come from different rounds.)", ""]  # fmt: skip
    columns = [("recipe", "configuration"), ("min", f"modelled minutes{' on ' + machine if machine else ''}"),
               ("x", "× base")] + ([("rx", "× base within one round (lowest–highest)")] if ranged else [])  # fmt: skip
    if study_base:
        columns.append(("sx", f"× base in the study's runs{' (' + axis + ')' if axis else ''}"))
    out += [md_table(rows, columns), "", f"Source: `{source}`.", ""]
    out += _same_work_lines(conf, study, study_base, axis)
    if estimates:
        # a planning figure, not a measurement: the ratio measured here times base's minutes on the axis
        out += [f"At these ratios, the configurations without a time on {axis or 'the main axis'} would take about "
                + ", ".join(estimates) + f" there (ratio × `{BASE_NAME}`'s {study_base:.1f} min"
                + ("; in brackets, at the lowest and highest ratio of one round" if ranged else "")
                + "); an estimate, not a timing.", ""]  # fmt: skip
    return out


def _test_images(entries: Sequence[Mapping[str, Any]]) -> str:
    sizes = {e.get("n_test") for e in entries}
    return f"the {sizes.pop():,} test images" if len(sizes) == 1 and None not in sizes else "its test images"


def _estimate(name: str, ratio: float, spread: tuple[float, float] | None, base_minutes: float) -> str:
    """``name`` ~minutes on the main axis (ratio x base's minutes), with the per-round range; one
    decimal where whole minutes would print a range as a single number ("18–18")."""
    vals = [ratio * base_minutes] + ([spread[0] * base_minutes, spread[1] * base_minutes] if spread else [])
    digits = 1 if spread and f"{vals[1]:.0f}" == f"{vals[2]:.0f}" else 0
    text = f"`{name}` ~{vals[0]:.{digits}f} min"
    return text + (f" ({vals[1]:.{digits}f}–{vals[2]:.{digits}f})" if spread else "")


def _same_work_lines(conf: Mapping[str, Mapping[str, Any]], study: Mapping[str, float], study_base: float | None,
                     axis: str) -> list[str]:  # fmt: skip
    """A sentence per group of configurations that do the same work (equal modelled minutes: same
    workload, epochs and validation) but whose study runs took different multiples of ``base``:
    that spread is the study minutes' drift, not the recipes' cost."""
    base_m = (conf.get(BASE_NAME) or {}).get("modelled_minutes")
    if not study_base or not base_m:
        return []
    groups: dict[float, list[str]] = {}
    for name, c in conf.items():
        m = c.get("modelled_minutes")
        if m and name in study:
            groups.setdefault(round(float(m), 6), []).append(name)
    out = []
    for m, names in sorted(groups.items()):
        if len(names) < 2:
            continue
        names = sorted(names, key=lambda n: (study[n], n))
        lo, hi = study[names[0]] / study_base, study[names[-1]] / study_base
        if hi <= lo:
            continue
        listed = ", ".join(f"`{n}`" for n in names[:-1]) + f" and `{names[-1]}`"
        out.append(f"{listed} do the same work as the benchmark models it (the same width, input size, unfrozen "
                   f"layers, batch, epochs and validation: {m / float(base_m):.2f}× `{BASE_NAME}` here), yet their runs "
                   f"{'on ' + axis + ' ' if axis else ''}took {lo:.2f}× to {hi:.2f}× `{BASE_NAME}`'s minutes, "
                   f"{100 * (hi / lo - 1):.0f} % apart: the study's minutes carry that much drift, and two "
                   "configurations whose minutes differ by less than that are not evidence that one costs more.")  # fmt: skip
    return out + [""] if out else []


def render_page(rows: Sequence[dict[str, Any]], *, source: str, profile: str, plan: Mapping[str, Any] | None = None,
                figure: str | None = None, bench: Mapping[str, Any] | None = None,
                ensembles: Sequence[Mapping[str, Any]] = ()) -> str:  # fmt: skip
    """The recipe study's page.

    Args:
        rows: :func:`read_rows` of the study folder.
        source: The study folder as the page cites it (relative to the repository).
        profile: The profile's name.
        plan: The study's ``plan.json`` (``recipes``: name/what pairs, ``command``), or None.
        figure: The figure's path relative to the page, or None for no figure.
        bench: ``benchmarks/bench_recipes.py``'s result, parsed (:func:`bench_section`), or None.
        ensembles: :func:`read_ensembles` of the study folder.

    Returns:
        Markdown.
    """
    machine = study_machine(rows) or ""
    entries = by_recipe(rows, machine)
    over_base = bench_over_base(bench)
    ens = [ensemble_entry(x, rows, machine, over_base) for x in ensembles]
    names = {e["recipe"] for e in entries}
    planned = [(r["name"], r["what"]) for r in (plan or {}).get("recipes", [])]
    missing = [(n, w) for n, w in planned if n not in names]
    base = next((e for e in entries if e["recipe"] == BASE_NAME), None)
    cores = machine or "this machine"
    out = [
        "# Fine-tuning recipes: accuracy against training time",
        "",
        f"*Generated by `python -m eurosat_lib report` from the run records in `{source}/` (profile `{profile}`): "
        "each run's `record.json` and its `tta.json` (test-time augmentation and per-image test predictions). "
        "Do not edit by hand.*",
        "",
        "## Overview",
        "",
        "The headline fine-tuned MobileNetV2 of the [results page](results.md) is one recipe: a new head trained on "
        "cached features of the frozen ImageNet base, then every layer fine-tuned with BatchNorm frozen (128 px input, "
        "Adam at 3e-4 with cosine decay, 6 epochs, random dihedral flips). Most configurations below change **one** "
        "thing of it — input size, fine-tuning epochs, label smoothing, optimiser and schedule, width, how many blocks "
        "are unfrozen — and a few combine changes (progressive resizing, larger inputs with more epochs; the table's "
        "second column says what changed). Each is measured as test accuracy against minutes of training"
        + (f" on {cores}" if machine else "") + ". "
        f"The goal: at least **{100 * GOAL[0]:.1f} %** test accuracy in at most **{GOAL[1]:.0f} minutes** of training; "
        f"the moonshot: **{100 * MOONSHOT[0]:.1f} %** in {MOONSHOT[1]:.0f} minutes, above Helber et al.'s ImageNet "
        f"ResNet-50 ({100 * HELBER_RESNET50:.2f} %, 224 px, 80/20 split, GPU) {{cite}}`helber2019eurosat`.",
        "",
        "How to read it:",
        "",
        "- A configuration is **chosen on validation accuracy**; its test accuracy is then reported once. "
        "Picking the best test score among many configurations would select on the test set.",
        "- **Minutes** are training time (head phase, feature extraction and fine-tuning), shown only for runs whose "
        "record says the machine was quiet (at its start and end, and in the samples of the load taken every minute "
        "while it trained, in records that keep them: the end sample alone averages a job in the middle of a long "
        "run away) and that ran in one process; a run measured under "
        "contention, or resumed after an interruption, keeps its accuracy but shows no time (the study's "
        "`--restart-interrupted` trains an interrupted run again from its start instead). A configuration's "
        "minutes are the mean over its runs that may be shown; the table says when a seed is left out.",
        f"- Minutes are compared **on one machine** ({machine or 'none yet'}). This project's sessions do not always "
        "get the same CPU, and the same epoch can take several times as long on one as on another (the sections on "
        "the other CPUs below give the measured ratio), so a run timed on another CPU shows no minutes here. A CPU "
        "is named by its model and, where its record kept them, its widest SIMD extension (AVX2, AVX-512): two "
        "machines with one model name but different extensions are two time axes.",
        *_drift_lines(rows, machine),
        "- **Test with TTA** averages the predictions over the 8 dihedral views of each image (overhead images have no "
        "canonical orientation); its inference minutes are counted apart from training, and shown under the same "
        "rule as training minutes: a TTA pass that kept the machine's load around it, quiet, on this machine. "
        + _tta_timing_note(rows, machine),
        "- Test accuracies carry a 95 % Wilson interval over the test images; each configuration is compared with the "
        "base recipe on the same test images (paired bootstrap). With one seed, that interval covers the test "
        "images' noise, not the spread between seeds.",
        "",
        "## Status",
        "",
    ]
    n_plan = len(planned) or len(entries)
    status = f"{len(entries)} of {n_plan} configurations have run ({len(rows)} runs)."
    if missing:
        status += " Not run yet: " + ", ".join(f"`{n}` ({w})" for n, w in missing) + "."
        if plan and plan.get("command"):
            status += f" `{plan['command']}` runs them (finished runs are reused)."
    multi = [e for e in entries if len(e["seeds"]) > 1]
    status += (" Configurations with more than one seed: " + ", ".join(f"`{e['recipe']}` ({len(e['seeds'])})" for e in multi) + "."
               if multi else " Every configuration has one seed so far; the front-runners get a second one when the study finishes its first pass.")  # fmt: skip
    out += [status, ""]
    if not entries:
        return "\n".join(out).rstrip() + "\n"
    front = pareto_front(entries)
    out += ["## Accuracy against training minutes", ""]
    if figure:
        out += [f"![Test accuracy against training minutes, one point per configuration]({figure})", "",
                "How to read the figure: a filled dot is a configuration's test accuracy (mean over its seeds), the "
                f"pale band behind it its 95 % interval over {_test_images(entries)}, the capped bar the range over its "
                "seeds; the hollow dot above it is the same runs with test-time augmentation, at the same training "
                "minutes. A configuration is inside a shaded corner when it meets the goal (green) or the moonshot "
                "(red). Where two bands overlap, the figure alone does not say which configuration is more accurate: "
                "the paired comparisons below do.", ""]  # fmt: skip
    if front:
        out += ["On test accuracy, the Pareto front (no other configuration is both faster and more accurate) runs "
                + " → ".join(f"`{e['recipe']}` ({e['minutes']:.1f} min, {pct(e['test_acc'])})" for e in front)
                + ". The front describes the runs; the choice below is made on validation.", ""]  # fmt: skip
    table = []
    for e in entries:
        table.append({
            "recipe": f"`{e['recipe']}`", "what": e["what"], "px": f"{e['image_size']} px" if e["final_size"] == e["image_size"] else f"{e['image_size']} → {e['final_size']} px", "ep": str(e["epochs"]),
            "min": _minutes_text(e), "val": pct(e["val_acc"]), "test": _acc_ci(e["test_acc"], e["n_test"]) + flag_note(e["warnings"]),
            "tta": pct(e["tta_test_acc"]), "tmin": f"{e['tta_minutes']:.1f}" if math.isfinite(e["tta_minutes"]) else "–",
            "seeds": _seeds_text(e),
        })  # fmt: skip
    out += ["## Every configuration", "",
            md_table(table, [("recipe", "configuration"), ("what", "what changed"), ("px", "input"), ("ep", "fine-tuning epochs"),
                             ("min", "training minutes"), ("val", "validation"), ("test", "test (95 % interval)"),
                             ("tta", "test with TTA"), ("tmin", "TTA minutes"), ("seeds", "seeds")]),  # fmt: skip
            "", f"Records: `{source}/recipe_<configuration>_seed<k>/record.json`.", ""]  # fmt: skip
    diffs = {}  # unflagged configurations' paired test differences from the base (the gap section reuses them)
    if base is not None:
        comp = []
        for e in entries:
            if e is base:
                continue
            d, dt = versus_base(e, base), versus_base(e, base, "tta_pred")
            broken = is_broken(e["warnings"]) or is_broken(base["warnings"])
            if d is not None and not broken:
                diffs[e["recipe"]] = d
            extra = e["minutes"] - base["minutes"]
            comp.append({
                "recipe": f"`{e['recipe']}`",
                "d": "not compared (flagged run)" if broken else (format_diff_text(d) if d else "no per-image predictions"),
                "dt": "–" if broken or dt is None else format_diff_text(dt),
                "min": f"{extra:+.1f}" if math.isfinite(extra) else "–",
            })  # fmt: skip
        out += ["## Against the base recipe", "",
                "Seed 0 of each configuration minus seed 0 of `base`, on the same test images:", "",
                md_table(comp, [("recipe", "configuration"), ("d", "test accuracy vs base"), ("dt", "with TTA, vs base with TTA"),
                                ("min", "extra training minutes")]),  # fmt: skip
                ""]
    out += ["## The choice", "",
            choice_text(entries, GOAL[1], GOAL[0], "goal", cores), "",
            choice_text(entries, MOONSHOT[1], MOONSHOT[0], "moonshot", cores), ""]
    for other, n_timed in timed_machines(rows).items():
        if other == machine:
            continue
        there = by_recipe(rows, other)
        out += [f"### On {other}", "",
                f"{n_timed} configuration{'s' if n_timed != 1 else ''} {'were' if n_timed != 1 else 'was'} timed on "
                f"{other}, a CPU some of this project's sessions get. Its minutes are a time axis of their own: "
                "the choice there is made among the runs timed there, and never compared with the minutes above."
                + _speed_ratio_text(rows, machine, other), "",
                choice_text(there, GOAL[1], GOAL[0], "goal", other), "",
                choice_text(there, MOONSHOT[1], MOONSHOT[0], "moonshot", other), ""]  # fmt: skip
    scored = {x.get("name") for x in ensembles}
    out += ensemble_section(ens, source, [p for p in (plan or {}).get("ensembles", []) if p.get("name") not in scored])
    out += bench_section(bench, {e["recipe"]: e["minutes"] for e in entries}, machine)
    gap = next_steps_text(entries, diffs, missing, ens)
    if gap:
        out += ["## What would close the gap", "", gap, ""]
    best30 = choose(entries, MOONSHOT[1])
    if best30 is not None and best30.get("n_test"):
        from ..stats import independent_diff

        d = independent_diff(best30["test_acc"], int(best30["n_test"]), HELBER_RESNET50, int(best30["n_test"]))
        out += [f"Against Helber et al.'s ResNet-50 ({100 * HELBER_RESNET50:.2f} %), the configuration chosen within "
                f"{MOONSHOT[1]:.0f} minutes differs by {format_diff_text(d)}. That compares recipes, not test images: their "
                "80/20 split trains on 21,600 images and tests on another 5,400; the interval assumes 5,400 test images on "
                "their side.", ""]  # fmt: skip
    return "\n".join(out).rstrip() + "\n"


def next_steps_text(entries: Sequence[Mapping[str, Any]], diffs: Mapping[str, Any],
                    missing: Sequence[tuple[str, str]] = (), ensembles: Sequence[Mapping[str, Any]] = ()) -> str:  # fmt: skip
    """What the study measured toward the goal, and what it leaves untried, when the goal is not reached.

    Only measured gains are named (a configuration whose paired interval against the base excludes
    zero, from an unflagged run); everything else is listed as untried, never as a promise.

    Args:
        entries: :func:`by_recipe` entries.
        diffs: ``{recipe: Diff}``: each unflagged configuration's paired test difference from the
            base recipe (:func:`versus_base`), as the page's comparison table computed them.
        missing: ``(name, what)`` of the planned configurations that have not run.
        ensembles: :func:`ensemble_entry` entries: what averaging runs reached, and at what cost.

    Returns:
        Markdown, or ``""`` when the goal is reached within its budget (or nothing has a timing yet).
    """
    c = choose(entries, GOAL[1])
    if c is None or c["test_acc"] >= GOAL[0]:
        return ""
    gains = sorted(((diffs[e["recipe"]].mean, e) for e in entries
                    if e["recipe"] in diffs and diffs[e["recipe"]].verdict == "better"), key=lambda g: -g[0])  # fmt: skip
    front = pareto_front(entries)
    words = []
    if front:
        top = front[-1]
        words.append(f"The most accurate timed configuration, `{top['recipe']}`, scores {pct(top['test_acc'])} in "
                     f"{top['minutes']:.1f} min, {100 * (GOAL[0] - top['test_acc']):.2f} points below the goal's "
                     f"{100 * GOAL[0]:.1f} %" + (" and over its budget." if top["minutes"] > GOAL[1] else "."))  # fmt: skip
    if gains:
        words.append("Measured against the base recipe on the same test images, these changes helped: "
                     + "; ".join(f"`{e['recipe']}` ({e['what']}) {100 * m:+.2f} points" for m, e in gains)
                     + ". Each was measured alone or in the combination its row names, so their gains need not add up.")  # fmt: skip
    else:
        words.append("No configuration beats the base recipe by more than the test images' noise.")
    for e in ensembles:
        if e["stale"] or is_broken(e["warnings"]):
            continue
        cost = (f"{e['minutes']:.1f} min of training" if math.isfinite(e["minutes"]) else
                "; ".join(f"{m:.1f} min of training on {k}" for k, m in e["other_minutes"].items()) or "its members' minutes")
        tta = f", {pct(e['tta_test_acc'])} with test-time augmentation" if math.isfinite(e["tta_test_acc"]) else ""
        gain = f"; against its member best on validation, {format_diff_text(e['gain'])}" if e["gain"] else ""
        if e.get("versus_gain") is not None:
            gain += f"; against one network of about the same compute (`{e['versus']}`), {format_diff_text(e['versus_gain'])}"
        words.append(f"Averaging runs: `{e['recipe']}` ({e['what']}) scores {pct(e['test_acc'])}{tta}, at the cost of all "
                     f"its members ({cost}){gain} (see the section on ensembles).")  # fmt: skip
    untried = [f"`{n}` ({w})" for n, w in missing]
    words.append("Not measured here: " + ("the planned configurations that have not run yet (" + ", ".join(untried) + "); "
                                          if untried else "")
                 + "combinations of the changes that helped beyond the few in the table; wider or larger backbones (EfficientNet, ResNet-50) "
                 "with ImageNet weights, which these machines do not have (they train from scratch here); and the "
                 "same study at full scale on one GPU ([the GPU edition](gpu.md)).")  # fmt: skip
    return " ".join(words)


def format_diff_text(d: Any) -> str:
    """A difference with its interval and verdict word, ``"+0.4 points (95 % CI …): **better**"``.

    Args:
        d: A :class:`eurosat_lib.stats.Diff`.

    Returns:
        The text.
    """
    from ..stats import format_diff

    return f"{format_diff(d, digits=2)}: **{d.verdict}**"
