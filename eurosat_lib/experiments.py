"""Experiments: notebook parameters and profiles, one-call runs, and running the notebooks.

Three layers, each usable alone:

* :func:`resolve_params` — a notebook's ``parameters`` cell hands its values here; ``None``
  means "the profile decides". Bad values fail at once with a message naming the parameter.
* :class:`ExperimentSpec` + :func:`run_experiment` — one training run from data to run folder
  (``params.json`` in, ``record.json`` + history CSVs + ``model.keras`` out). A finished run
  with the same spec is reused, an interrupted one resumes.
* :func:`run_notebooks` — ``make experiments``: papermill every template into the book, in
  dependency order, skipping notebooks whose template, parameters and library are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import __version__, config
from . import data as D
from . import evaluation as E
from . import models as M
from . import training as T
from ._io import atomic_path, write_json_atomic

PROFILES = ("smoke", "cpu", "gpu")
NOTEBOOKS = (
    "00_data",
    "01_transfer_learning",
    "02_negative_transfer",
    "03_finetune",
    "04_overfitting",
    "05_backbones",
    "06_truncation",
)


class ParameterError(ValueError):
    """A notebook parameter has a wrong type or value."""


# --------------------------------------------------------------------------------------------
# Parameters and profiles
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _check_backbone(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a backbone name"
    try:
        M.get_backbone_spec(v)
    except ValueError as e:
        return str(e)
    return None


def _check_weights(v: Any) -> str | None:
    if v is None or (isinstance(v, str) and v.lower() in ("imagenet", "none")):
        return None
    if isinstance(v, str) and Path(v).expanduser().is_file():
        return None
    return "must be 'imagenet', 'none' (train from scratch) or the path of an existing weights file"


def _pos_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "must be a positive integer"


def _nonneg_int(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "must be a non-negative integer"


def _pos_num(v: Any) -> str | None:
    return None if _is_num(v) and np.isfinite(v) and v > 0 else "must be a positive number"


def _fraction(v: Any) -> str | None:
    return None if _is_num(v) and 0 < v <= 1 else "must be a number in (0, 1]"


def _seeds(v: Any) -> str | None:
    if _is_int(v) and v > 0:
        return None
    if isinstance(v, (list, tuple)) and v and all(_is_int(s) for s in v):
        return None
    return "must be a number of seeds (positive int) or a non-empty list of int seeds"


def _int_list(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and v and all(_is_int(s) and s > 0 for s in v):
        return None
    return "must be a non-empty list of positive integers"


def _str_or_none(v: Any) -> str | None:
    return None if v is None or isinstance(v, str) else "must be a string"


def _choice(*options: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {list(options)}"

    return check


def _data_source(v: Any) -> str | None:
    if v in ("auto", "real", "synthetic"):
        return None
    if isinstance(v, str) and Path(v).expanduser().exists():
        return None
    return "must be 'auto', 'real', 'synthetic' or the path of an EuroSAT archive/folder"


#: name -> (validator, help). Every notebook accepts these; notebook-specific ones are added
#: in NOTEBOOK_PARAMS.
COMMON_PARAMS: dict[str, tuple[Callable[[Any], str | None], str]] = {
    "profile": (_choice(*PROFILES), "smoke (seconds, CI) | cpu (real data, minutes) | gpu (full schedules)"),
    "data_source": (_data_source, "'auto' (real if on disk, else synthetic for smoke), 'real', 'synthetic' or a path"),
    "backbone": (_check_backbone, "keras.applications backbone name"),
    "alpha": (lambda v: None if v is None or (_is_num(v) and v > 0) else "must be a positive number or None", "MobileNet width multiplier"),
    "weights": (_check_weights, "'imagenet', 'none' or a weights file"),
    "image_size": (_pos_int, "input size the 64 px images are resized to"),
    "epochs_head": (_nonneg_int, "epochs of head training on the frozen base"),
    "epochs_finetune": (_nonneg_int, "epochs of fine-tuning"),
    "epochs": (_nonneg_int, "epochs for single-phase runs"),
    "lr_head": (_pos_num, "learning rate of the head phase"),
    "lr_finetune": (_pos_num, "learning rate of the fine-tuning phase"),
    "batch_size": (_pos_int, "images per step"),
    "train_fraction": (_fraction, "fraction of the training split used"),
    "n_per_class": (lambda v: None if v is None or (_is_int(v) and v > 0) else "must be a positive integer or None", "training images per class (None = all)"),
    "seeds": (_seeds, "number of seeds, or explicit list of seeds"),
    "out_dir": (_str_or_none, "folder for run folders (default runs/<profile>/<notebook>)"),
}

#: Profile defaults shared by every notebook; NOTEBOOK_DEFAULTS refine them.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(data_source="auto", backbone="MobileNetV2", alpha=0.35, weights="imagenet", image_size=64,
                  epochs_head=1, epochs_finetune=1, epochs=1, lr_head=1e-3, lr_finetune=1e-4, batch_size=32,
                  train_fraction=1.0, n_per_class=8, seeds=1),
    "cpu": dict(data_source="real", backbone="MobileNetV2", alpha=0.35, weights="imagenet", image_size=128,
                epochs_head=30, epochs_finetune=3, epochs=10, lr_head=1e-3, lr_finetune=3e-4, batch_size=64,
                train_fraction=1.0, n_per_class=None, seeds=3),
    "gpu": dict(data_source="real", backbone="MobileNetV2", alpha=None, weights="imagenet", image_size=224,
                epochs_head=30, epochs_finetune=15, epochs=40, lr_head=1e-3, lr_finetune=1e-4, batch_size=128,
                train_fraction=1.0, n_per_class=None, seeds=5),
}  # fmt: skip

NOTEBOOK_PARAMS: dict[str, dict[str, tuple[Callable[[Any], str | None], str]]] = {nb: {} for nb in NOTEBOOKS}
NOTEBOOK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {nb: {p: {} for p in PROFILES} for nb in NOTEBOOKS}


def register_notebook_params(
    notebook: str,
    params: Mapping[str, tuple[Callable[[Any], str | None], str]] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Declare a notebook's own parameters and per-profile defaults (used by this module)."""
    NOTEBOOK_PARAMS[notebook].update(params or {})
    for profile, values in (defaults or {}).items():
        NOTEBOOK_DEFAULTS[notebook][profile].update(values)


def resolve_params(notebook: str, **given: Any) -> SimpleNamespace:
    """Validate a notebook's parameters and fill ``None`` values from its profile.

    Raises :class:`ParameterError` naming the parameter, the bad value, what is allowed and
    how to pass it with papermill.
    """
    if notebook not in NOTEBOOKS:
        raise ParameterError(f"unknown notebook {notebook!r}; expected one of {list(NOTEBOOKS)}")
    schema = {**COMMON_PARAMS, **NOTEBOOK_PARAMS[notebook]}
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for {notebook}; known: {sorted(schema)}")
    profile = given.get("profile") or "cpu"
    err = COMMON_PARAMS["profile"][0](profile)
    if err:
        raise ParameterError(f"parameter 'profile' {err}, got {profile!r} (papermill: -p profile cpu)")
    values = {**PROFILE_DEFAULTS[profile], **NOTEBOOK_DEFAULTS[notebook][profile]}
    values["profile"] = profile
    for name, v in given.items():
        if v is not None:
            values[name] = v
    if isinstance(values.get("weights"), str) and values["weights"].lower() == "none":
        values["weights"] = None
    for name, (check, help_) in schema.items():
        if name not in values:
            values[name] = None
        v = values[name]
        if v is None and name in ("weights", "out_dir", "alpha", "n_per_class"):
            continue
        if v is None:
            continue
        err = check(v)
        if err:
            raise ParameterError(
                f"parameter {name!r} {err}, got {v!r} ({help_}). "
                f"With papermill: -p {name} <value>; see the notebook's parameters cell."
            )
    if values.get("backbone") and values.get("image_size"):
        spec = M.get_backbone_spec(values["backbone"])
        if values["image_size"] < spec.min_size:
            raise ParameterError(
                f"parameter 'image_size' is {values['image_size']} but {values['backbone']} needs at least "
                f"{spec.min_size} px; pass -p image_size {max(spec.min_size, 64)} or larger"
            )
    if isinstance(values.get("seeds"), (int, np.integer)):
        values["seeds"] = list(range(int(values["seeds"])))
    values["notebook"] = notebook
    if values.get("out_dir") is None:
        values["out_dir"] = str(config.runs_dir() / profile / notebook)
    return SimpleNamespace(**values)


def backbone_kwargs(backbone: str, alpha: float | None) -> dict[str, Any]:
    """Constructor options from notebook parameters (``alpha`` only applies to MobileNets)."""
    return {"alpha": alpha} if alpha is not None and backbone in ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large") else {}


# --------------------------------------------------------------------------------------------
# Data for a notebook
# --------------------------------------------------------------------------------------------


def load_data(source: str = "auto", profile: str = "cpu") -> D.EuroSAT:
    """The dataset a notebook works on: real EuroSAT, or synthetic where allowed.

    ``"auto"``: the real archive if one is already on disk (never downloads), else synthetic —
    only the smoke profile allows that fallback.
    """
    if source == "synthetic":
        return D.make_synthetic(n_per_class=40, seed=0)
    if source == "real":
        return D.load_eurosat()
    if source == "auto":
        try:
            return D.load_eurosat(download=False)
        except FileNotFoundError:
            if profile != "smoke":
                raise
            return D.make_synthetic(n_per_class=40, seed=0)
    return D.load_eurosat(source)


def weights_available(backbone: str, weights: str | None, **kwargs: Any) -> bool:
    """True if ``weights`` can be used without a download (a local file exists)."""
    if weights is None:
        return True
    try:
        path = M.find_local_weights(backbone, **kwargs) if weights == "imagenet" else Path(weights)
    except (ValueError, KeyError):
        return False
    return path is not None and Path(path).is_file()


# --------------------------------------------------------------------------------------------
# One experiment = one run folder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything that defines one training run (hashable into :meth:`key`)."""

    name: str
    backbone: str = "MobileNetV2"
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = "imagenet"
    image_size: int | None = None
    head: M.HeadConfig = field(default_factory=M.HeadConfig)
    augment: str | None = None
    truncate_at: str | float | None = None
    preprocessing: str = "auto"
    freeze_bn: bool | None = None
    phases: tuple[T.PhaseConfig, ...] = ()
    seed: int = 0
    n_per_class: int | None = None
    train_fraction: float | None = None
    #: "train" = the manifest's train split; "train+val" would leak model selection, so no.
    eval_splits: tuple[str, ...] = ("val", "test")
    tags: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"experiment {self.name!r} has no phases")
        if self.n_per_class is not None and self.train_fraction is not None:
            raise ValueError(f"experiment {self.name!r}: give n_per_class or train_fraction, not both")
        M.get_backbone_spec(self.backbone)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["phases"] = [p.to_dict() for p in self.phases]
        d["head"] = dataclasses.asdict(self.head)
        d["backbone_kwargs"] = dict(self.backbone_kwargs)
        d["tags"] = dict(self.tags)
        return d

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RunResult:
    """A finished run: its record, and (when kept in memory) the model and test predictions."""

    record: dict[str, Any]
    run_dir: Path
    model: Any = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float:
        return float(self.record["metrics"]["test"]["accuracy"])

    def load_model(self):
        """The run's trained model (reloaded from ``model.keras`` if not in memory)."""
        if self.model is None:
            self.model = load_run_model(self.run_dir)
        return self.model


def train_subset(data: D.EuroSAT, spec: ExperimentSpec) -> D.EuroSAT:
    """The training images a spec uses: the manifest's train split, optionally a nested subset."""
    train = data.get_split("train")
    if spec.n_per_class is not None:
        return D.nested_subset(train, n_per_class=spec.n_per_class, seed=spec.seed)
    if spec.train_fraction is not None and spec.train_fraction < 1:
        return D.nested_subset(train, fraction=spec.train_fraction, seed=spec.seed)
    return train


def data_identity(data: D.EuroSAT) -> dict[str, Any]:
    """What data a run used, without machine paths (records are published in the book)."""
    return {
        "source": Path(data.source).name if data.source and not data.source.startswith("synthetic") else data.source,
        "content_digest": data.info.get("content_digest"),
        "published_eurosat": data.info.get("content_digest") == D.PUBLISHED_CONTENT_DIGEST,
        "split_version": D.SPLIT_VERSION,
        "num_images": len(data),
    }


def build_from_spec(spec: ExperimentSpec, num_classes: int = 10):
    """The (untrained) Keras model a spec describes."""
    return M.build_model(
        spec.backbone,
        weights=spec.weights,
        image_size=spec.image_size,
        num_classes=num_classes,
        augment=spec.augment,
        head=spec.head,
        truncate_at=spec.truncate_at,
        preprocessing=spec.preprocessing,
        freeze_bn=spec.freeze_bn,
        backbone_kwargs=dict(spec.backbone_kwargs),
        seed=spec.seed,
    )


def run_experiment(
    spec: ExperimentSpec,
    data: D.EuroSAT,
    out_dir: str | os.PathLike,
    *,
    accelerator: T.Accelerator | None = None,
    reuse: bool = True,
    save_model: bool = True,
    keep_predictions: bool = True,
    verbose: int = 0,
    model_fn: Callable[[ExperimentSpec], Any] | None = None,
    train_data: D.EuroSAT | None = None,
) -> RunResult:
    """Train and evaluate one spec into ``out_dir/<spec.name>``; reuse or resume when possible.

    ``model_fn`` replaces :func:`build_from_spec` (e.g. a base pretrained elsewhere);
    ``train_data`` replaces the spec's training subset (e.g. labels deliberately shuffled).
    Metrics are computed on the ``eval_splits`` of ``data`` (validation and test by default).
    """
    run_dir = Path(out_dir) / spec.name
    record_path = run_dir / E.RUN_RECORD
    if reuse and record_path.is_file():
        try:
            old = E.read_run_record(run_dir)
        except (OSError, ValueError):
            old = None
        if old and old.get("status") == "complete" and old.get("params", {}).get("spec_key") == spec.key():
            return RunResult(record=old, run_dir=run_dir)
    if run_dir.exists():
        params_file = run_dir / "params.json"
        prev = json.loads(params_file.read_text()) if params_file.is_file() else {}
        if prev.get("spec_key") != spec.key():
            # A different experiment used this name before: start clean rather than resume it.
            import shutil

            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {"spec_key": spec.key(), **spec.to_dict(), "data": data_identity(data)}
    write_json_atomic(run_dir / "params.json", params)
    E.write_run_record(run_dir, params=params, status="running")

    acc = accelerator or T.Accelerator()
    t0 = time.perf_counter()
    T.set_seed(spec.seed)
    with acc.scope():
        model = (model_fn or build_from_spec)(spec)
    train = train_data if train_data is not None else train_subset(data, spec)
    val = data.get_split("val")
    try:
        results = T.train_phases(model, train, val, list(spec.phases), seed=spec.seed, run_dir=run_dir, accelerator=acc, verbose=verbose)
    except BaseException:
        E.write_run_record(run_dir, params=params, status="failed")
        raise
    fit_seconds = time.perf_counter() - t0

    metrics, predictions = {}, {}
    t_eval = time.perf_counter()
    use_features = spec.phases[-1].use_feature_cache
    for split in spec.eval_splits:
        part = data.get_split(split)
        y_prob = predict(model, part.images, use_feature_cache=use_features)
        metrics[split] = E.evaluate_predictions(part.labels, y_prob, part.class_names)
        if keep_predictions:
            predictions[split] = y_prob
    eval_seconds = time.perf_counter() - t_eval
    ips = inference_speed(model, data.images[:256])
    timings = {
        "fit_seconds": round(fit_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "phases": {r.name: {"seconds": r.seconds, "seconds_per_epoch": r.seconds_per_epoch,
                            "feature_seconds": r.feature_seconds, "epochs_run": r.epochs_run,
                            "resumed": r.resumed} for r in results},
        "inference_images_per_s": round(ips, 1),
    }  # fmt: skip
    if save_model:
        with atomic_path(run_dir / "model.keras", suffix=".keras") as tmp:
            model.save(str(tmp))
    record_file = E.write_run_record(
        run_dir,
        params=params,
        metrics=metrics,
        history=[{"name": r.name, "history": r.history} for r in results],
        timings=timings,
        model_info=M.describe_model(model),
        extra={"train_size": len(train), "accelerator": acc.to_dict()},
        status="complete",
    )
    return RunResult(record=E.read_run_record(record_file.parent), run_dir=run_dir, model=model, predictions=predictions)


def predict(model, images: np.ndarray, use_feature_cache: bool = False, batch_size: int = 256) -> np.ndarray:
    """Class probabilities; with a frozen base, through the (disk-cached) backbone features."""
    if use_feature_cache:
        extractor, head = M.split_feature_extractor(model)
        feats = T.extract_features(extractor, images, batch_size=batch_size, desc="eval features")
        return np.asarray(head.predict(feats, batch_size=1024, verbose=0), dtype=np.float32)
    return E.predict_proba(model, images, batch_size=batch_size)


def inference_speed(model, images: np.ndarray, repeats: int = 2) -> float:
    """Images per second for batched inference (warm: the first call compiles)."""
    import keras

    batch = np.asarray(images)
    keras.ops.convert_to_numpy(model(batch[:8], training=False))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        keras.ops.convert_to_numpy(model(batch, training=False))
        best = min(best, time.perf_counter() - t)
    return len(batch) / best


def load_run_model(run_dir: str | os.PathLike):
    """Reload a run's trained model (``run_dir/model.keras``) in one call."""
    import keras

    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the run did not save a model (save_model=False), did not finish, "
            "or its folder was copied without model files (they are not committed). Re-run it."
        )
    return keras.models.load_model(path)


# --------------------------------------------------------------------------------------------
# Notebook header: what ran, where
# --------------------------------------------------------------------------------------------


def hardware_summary() -> dict[str, Any]:
    env = E.environment()
    return {
        "cpu": f"{env['cpu_model']} ({env['cpu_count']} cores)",
        "gpus": ", ".join(T.gpu_names()) or "none",
        "keras": f"{env['keras']} ({env['keras_backend']} backend)",
        "tensorflow": env.get("tensorflow"),
        "eurosat_lib": __version__,
        "python": platform.python_version(),
    }


def header_table(params: SimpleNamespace, data: D.EuroSAT | None = None, notes: Mapping[str, Any] | None = None):
    """A pandas table of the resolved parameters, data and hardware, shown at a chapter's top."""
    import pandas as pd

    rows = [("parameter", k, v) for k, v in vars(params).items()]
    if data is not None:
        ident = data_identity(data)
        rows += [("data", k, v) for k, v in ident.items()]
    rows += [("hardware", k, v) for k, v in hardware_summary().items()]
    rows += [("note", k, v) for k, v in (notes or {}).items()]
    return pd.DataFrame(rows, columns=["group", "name", "value"]).set_index(["group", "name"])


# --------------------------------------------------------------------------------------------
# make experiments: papermill every template into the book
# --------------------------------------------------------------------------------------------


def library_fingerprint() -> str:
    """Hash of the library's source: a changed library re-runs every notebook."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(config.PACKAGE_DIR.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run_notebooks(
    profile: str = "cpu",
    notebooks: Sequence[str] | None = None,
    *,
    templates_dir: str | os.PathLike = "notebooks",
    book_dir: str | os.PathLike = "book",
    force: bool = False,
    extra_params: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Execute notebook templates with papermill into ``book/chapters/``, in order.

    A notebook is skipped when its template, parameters and library fingerprint match those
    stored in the executed copy. Output is written to a temporary file and renamed, so the book
    never holds a half-executed chapter; run folders go to ``book/runs/<profile>/<notebook>``.
    """
    import nbformat
    import papermill

    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {PROFILES}, got {profile!r}")
    templates_dir, book_dir = Path(templates_dir), Path(book_dir)
    chosen = list(notebooks or NOTEBOOKS)
    bad = [n for n in chosen if n not in NOTEBOOKS]
    if bad:
        raise ParameterError(f"unknown notebook(s) {bad}; expected names from {list(NOTEBOOKS)}")
    lib = library_fingerprint()
    report = []
    for name in NOTEBOOKS:
        if name not in chosen:
            continue
        template = templates_dir / f"{name}.ipynb"
        out = book_dir / "chapters" / f"{name}.ipynb"
        params = {"profile": profile, "out_dir": str(book_dir / "runs" / profile / name), **(extra_params or {})}
        stamp = {
            "template_sha256": hashlib.sha256(template.read_bytes()).hexdigest(),
            "parameters": params,
            "library": lib,
        }
        if not force and out.is_file():
            old = nbformat.read(out, as_version=4).metadata.get("eurosat", {})
            if {k: old.get(k) for k in stamp} == stamp:
                log(f"[skip] {name}: unchanged (template, parameters, library)")
                report.append({"notebook": name, "status": "skipped"})
                continue
        log(f"[run ] {name} (profile={profile})")
        t0 = time.perf_counter()
        with atomic_path(out, suffix=".ipynb") as tmp:
            papermill.execute_notebook(
                str(template), str(tmp), parameters=params, cwd=str(Path.cwd()), progress_bar=False, kernel_name="python3"
            )
            nb = nbformat.read(tmp, as_version=4)
            nb.metadata["eurosat"] = {**stamp, "seconds": round(time.perf_counter() - t0, 1), "profile": profile}
            _strip_noise(nb)
            nbformat.write(nb, tmp)
        secs = time.perf_counter() - t0
        log(f"[done] {name} in {secs:.0f} s -> {out}")
        report.append({"notebook": name, "status": "ran", "seconds": round(secs, 1)})
    return report


def _strip_noise(nb) -> None:
    """Drop stderr stream outputs (TF C++ logs, progress bars) from an executed notebook."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
