"""One experiment = one run folder: :class:`ExperimentSpec` in, ``record.json`` out.

:func:`run_experiment` trains and evaluates a spec into ``out_dir/<name>`` (``params.json``,
``record.json``, per-phase history CSVs, ``model.keras``). A finished run with the same spec is
reused, an interrupted one resumes; the book only ever reads the records.
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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .. import __version__
from .. import data as D
from .. import evaluation as E
from .. import models as M
from .. import runs as R
from .. import training as T
from .._io import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from ..summaries import ChapterSummary


# --------------------------------------------------------------------------------------------
# Data for a notebook
# --------------------------------------------------------------------------------------------


def load_data(source: str = "auto", profile: str = "cpu") -> D.EuroSAT:
    """The dataset a notebook works on: real EuroSAT, or synthetic where allowed.

    ``"auto"``: the real archive if one is already on disk (never downloads), else synthetic —
    only the smoke profile allows that fallback.

    Args:
        source: ``"auto"``, ``"real"`` (downloads when missing), ``"synthetic"`` or a path to the archive.
        profile: The notebook's profile.

    Returns:
        The dataset.

    Raises:
        FileNotFoundError: ``"auto"`` outside the smoke profile and no archive on disk.
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
    """True if ``weights`` can be used without a download (a local file exists).

    Args:
        backbone: A registry backbone name.
        weights: ``"imagenet"``, None (random weights: always available) or a path.
        **kwargs: The backbone's options (e.g. ``alpha``).

    Returns:
        Whether the weights are on disk.
    """
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
    #: Splits scored after training. Never "train+val" for selection: that leaks.
    eval_splits: tuple[str, ...] = ("val", "test")
    #: Stratified subsets (fixed seed 0, identical for every run) of the validation and test
    #: splits, for sweeps on a CPU budget; None = the whole split.
    val_n_per_class: int | None = None
    test_n_per_class: int | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"experiment {self.name!r} has no phases")
        if self.n_per_class is not None and self.train_fraction is not None:
            raise ValueError(f"experiment {self.name!r}: give n_per_class or train_fraction, not both")
        M.get_backbone_spec(self.backbone)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (a run's ``params``).

        Returns:
            Every field, phases and head as dicts.
        """
        d = dataclasses.asdict(self)
        d["phases"] = [p.to_dict() for p in self.phases]
        d["head"] = dataclasses.asdict(self.head)
        d["backbone_kwargs"] = dict(self.backbone_kwargs)
        d["tags"] = dict(self.tags)
        return d

    def key(self) -> str:
        """Hash of the fields that differ from their defaults.

        Leaving defaults out keeps the keys of existing runs stable when a new, defaulted field
        is added to the spec, so finished runs are not retrained for nothing.

        Returns:
            The hex digest (a run's ``spec_key``).
        """
        full = self.to_dict()
        defaults = {
            f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
            for f in dataclasses.fields(self)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
        defaults["head"] = dataclasses.asdict(M.HeadConfig())
        defaults = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in defaults.items()}
        keep = {k: v for k, v in full.items() if k not in defaults or _norm(defaults[k]) != _norm(v)}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _norm(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


@dataclass
class RunResult:
    """A finished run: its record, and (when kept in memory) the model and test predictions."""

    record: R.RunRecord
    run_dir: Path
    model: Any = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    #: Trains the run again when its model file is missing (a fresh clone has only the records).
    remake: Callable[[], "RunResult"] | None = field(default=None, repr=False, compare=False)

    @property
    def test_accuracy(self) -> float:
        """The run's test accuracy, from its record."""
        return float(self.record["metrics"]["test"]["accuracy"])

    def load_model(self):
        """The run's trained model: in memory, else ``model.keras``, else trained again.

        Model files are never committed, so a run reused from its record alone (a fresh clone)
        is re-created here rather than failing (issue: a later step needs the model).

        Returns:
            The Keras model.
        """
        if self.model is None:
            if not (self.run_dir / "model.keras").is_file() and self.remake is not None:
                fresh = self.remake()
                self.record, self.model = fresh.record, fresh.model
            else:
                self.model = load_run_model(self.run_dir)
        return self.model


def train_subset(data: D.EuroSAT, spec: ExperimentSpec) -> D.EuroSAT:
    """The training images a spec uses: the manifest's train split, optionally a nested subset.

    Args:
        data: The dataset.
        spec: The run (``n_per_class`` / ``fraction`` and ``seed``).

    Returns:
        The training images.
    """
    if spec.n_per_class is not None:
        return data.get_split("train", n_per_class=spec.n_per_class, seed=spec.seed)
    if spec.train_fraction is not None and spec.train_fraction < 1:
        return data.get_split("train", fraction=spec.train_fraction, seed=spec.seed)
    return data.get_split("train")


def eval_split(data: D.EuroSAT, split: str, spec: ExperimentSpec) -> D.EuroSAT:
    """A validation/test split, or its fixed stratified subset when the spec asks for one.

    Args:
        data: The dataset.
        split: ``"val"`` or ``"test"``.
        spec: The run (``val_n_per_class`` / ``test_n_per_class``).

    Returns:
        The split or its subset.
    """
    n = {"val": spec.val_n_per_class, "test": spec.test_n_per_class}.get(split)
    return data.get_split(split, n_per_class=n, seed=0)


def data_identity(data: D.EuroSAT) -> dict[str, Any]:
    """What data a run used, without machine paths (records are published in the book).

    Args:
        data: The dataset.

    Returns:
        Source name, content digest, whether it is the published EuroSAT, split version and size.
    """
    return {
        "source": Path(data.source).name if data.source and not data.source.startswith("synthetic") else data.source,
        "content_digest": data.info.get("content_digest"),
        "published_eurosat": data.info.get("content_digest") == D.PUBLISHED_CONTENT_DIGEST,
        "split_version": D.SPLIT_VERSION,
        "num_images": len(data),
    }


def build_from_spec(spec: ExperimentSpec, num_classes: int = 10):
    """The (untrained) Keras model a spec describes.

    Args:
        spec: The run.
        num_classes: Classes of the head.

    Returns:
        The Keras model.
    """
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


def resized_model(model: Any, spec: ExperimentSpec, image_size: int,
                  model_fn: Callable[[ExperimentSpec], Any] | None = None) -> Any:  # fmt: skip
    """The same network built for ``image_size`` inputs, with every weight of ``model`` carried over.

    The models resize their 64 px input inside the network and end in global pooling, so no
    weight's shape depends on the input size: a convolutional network trained at one size can be
    fine-tuned and evaluated at another (progressive resizing; Touvron et al.'s FixRes). The
    weights are copied in order, which is the same for two builds from one spec.

    Args:
        model: The trained model.
        spec: Its spec.
        image_size: The new input size.
        model_fn: The builder that made ``model`` (default :func:`build_from_spec`).

    Returns:
        The rebuilt model.

    Raises:
        ValueError: The two builds' weights differ in number or shape (a builder whose weights
            depend on the input size, e.g. a flattening head).
    """
    new = (model_fn or build_from_spec)(dataclasses.replace(spec, image_size=image_size))
    old_w, new_w = model.weights, new.weights
    if len(old_w) != len(new_w) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(old_w, new_w)):
        raise ValueError(
            f"experiment {spec.name!r}: the model built at {image_size} px does not have the same weights as the one at "
            f"{spec.image_size} px ({len(old_w)} vs {len(new_w)} weights); progressive resizing needs a network whose "
            "weights do not depend on the input size (global pooling before the head)"
        )
    for a, b in zip(old_w, new_w):
        b.assign(a.value)
    return new


def weights_file_digest(weights: Any) -> str | None:
    """SHA-256 of a weights *file* a spec names by path (None for ``"imagenet"``, None or a missing file).

    Args:
        weights: A spec's ``weights``.

    Returns:
        The hex digest, or None.
    """
    if not isinstance(weights, (str, os.PathLike)) or str(weights) in ("imagenet", "none", ""):
        return None
    path = Path(weights)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recorded_weights_digest(run_dir: Path) -> str | None:
    """The weights digest a finished run recorded (``extra.weights_sha256``); None if it has none.

    Args:
        run_dir: The run folder.

    Returns:
        The digest, or None (no record, or one written before runs recorded it).
    """
    try:
        rec = R.read(run_dir)
    except (OSError, ValueError):  # no record yet, or one that cannot be read: nothing recorded
        return None
    digest = (rec.extra or {}).get("weights_sha256")
    return digest if isinstance(digest, str) else None


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
    checkpoints: bool = True,
    needs: Sequence[str] = (),
    reuse_features: bool = True,
    wait_quiet_s: float = 0.0,
) -> RunResult:
    """Train and evaluate one spec into ``out_dir/<spec.name>``; reuse or resume when possible.

    The run folder is owned by :func:`eurosat_lib.runs.reuse_or_run`: a finished run with the
    same spec is reused (one process at a time), an interrupted one resumes. A spec whose weights
    are a file records the file's SHA-256 (``extra.weights_sha256``); a finished run that recorded
    another digest than the file now holds was trained from other weights and is trained again.

    Args:
        spec: the run.
        data: the dataset; metrics are computed on its ``spec.eval_splits`` (val and test).
        out_dir: parent of the run folder.
        accelerator: mixed precision / XLA / strategy switches (default: plain CPU).
        reuse: False trains again even when a finished record exists.
        save_model: keep ``model.keras`` in the run folder.
        keep_predictions: keep each split's probabilities on the result.
        verbose: Keras ``fit`` verbosity.
        model_fn: replaces :func:`build_from_spec` (e.g. a base pretrained elsewhere).
        train_data: replaces the spec's training subset (e.g. labels deliberately shuffled).
        checkpoints: per-epoch checkpoints (see :func:`training.fit_phase`).
        needs: files a later step needs from the run folder (``"model.keras"``): a finished run
            without them is trained again instead of reused. :meth:`RunResult.load_model` asks
            for the model this way by itself.
        reuse_features: read the frozen base's features from an earlier run's cache (see
            :func:`training.fit_phase`); False when the run's minutes must include extracting
            them (time-to-accuracy). The record says which (``features_from_cache``).
        wait_quiet_s: before training (not when reusing), wait up to this many seconds for a
            quiet machine (:func:`eurosat_lib.runs.wait_until_quiet`); for timed runs.

    Returns:
        The run's record, folder, and (when trained now) the model and predictions.

    Raises:
        ValueError: ``needs`` asks for the model while ``save_model`` is False.
    """
    if "model.keras" in needs and not save_model:
        raise ValueError(f"experiment {spec.name!r}: needs=['model.keras'] with save_model=False cannot be met")
    run_dir = Path(out_dir) / spec.name
    params = {"spec_key": spec.key(), **spec.to_dict(), "data": data_identity(data)}
    made: dict[str, Any] = {}
    weights_digest = weights_file_digest(spec.weights)
    if reuse and weights_digest is not None and recorded_weights_digest(run_dir) not in (None, weights_digest):
        # The spec names its weights by path; a source network retrained since (its weights are
        # never committed) writes different weights to the same path. A target run trained from
        # the old ones is not this run: train it again rather than mix sources in one study.
        reuse = False

    def produce(folder: Path) -> R.RunRecord:
        acc = accelerator or T.Accelerator()
        t0 = time.perf_counter()
        T.set_seed(spec.seed)
        with acc.scope():
            model = (model_fn or build_from_spec)(spec)
        train = train_data if train_data is not None else train_subset(data, spec)
        val = eval_split(data, "val", spec)
        built = [(model, spec.image_size)]

        def resize(current: Any, size: int) -> Any:  # progressive resizing: the same weights, built for `size`
            if size != built[-1][1]:
                with acc.scope():
                    built.append((resized_model(current, spec, size, model_fn), size))
            return built[-1][0]

        results = T.train_phases(model, train, val, spec.phases, resize=resize, seed=spec.seed, run_dir=folder,
                                 accelerator=acc, verbose=verbose, checkpoints=checkpoints,
                                 reuse_features=reuse_features)  # fmt: skip
        model = built[-1][0]
        # A phase finished by an earlier process (skipped) or continued from its checkpoint (resumed)
        # was partly timed elsewhere: the skipped phases' stored seconds are added, and the record
        # says its timing spans processes, so the book does not show it as one measurement.
        fit_seconds = time.perf_counter() - t0 + sum(r.seconds for r in results if r.skipped)
        spans = any(r.skipped or r.resumed for r in results)

        metrics, predictions = {}, {}
        t_eval = time.perf_counter()
        use_features = spec.phases[-1].use_feature_cache
        for split in spec.eval_splits:
            part = eval_split(data, split, spec)
            y_prob = predict(model, part.images, use_feature_cache=use_features, eager=acc.run_eagerly)
            metrics[split] = E.evaluate_predictions(part.labels, y_prob, part.class_names)
            if keep_predictions:
                predictions[split] = y_prob
        eval_seconds = time.perf_counter() - t_eval
        ips = inference_speed(model, data.images[:256]) if not acc.run_eagerly else float("nan")
        timings = {
            "fit_seconds": round(fit_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "phases": {r.name: {"seconds": r.seconds, "seconds_per_epoch": r.seconds_per_epoch,
                                "feature_seconds": r.feature_seconds, "epochs_run": r.epochs_run,
                                "resumed": r.resumed, **({"skipped": True} if r.skipped else {}),
                                **({"features_from_cache": True} if r.features_from_cache else {})} for r in results},
            "inference_images_per_s": round(ips, 1),
            **({"spans_processes": True} if spans else {}),
        }  # fmt: skip
        if save_model:
            with atomic_path(folder / "model.keras", suffix=".keras") as tmp:
                model.save(str(tmp))
        made.update(model=model, predictions=predictions)
        return R.RunRecord(
            params=params,
            metrics=metrics,
            history=[{"name": r.name, "history": r.history} for r in results],
            timings=timings,
            model_info=M.describe_model(model),
            extra={"train_size": len(train), "accelerator": acc.to_dict(),
                   **({"weights_sha256": weights_digest} if weights_digest is not None else {})},
        )

    record = R.reuse_or_run(run_dir, params, produce, needs=needs, reuse=reuse, wait_quiet_s=wait_quiet_s)

    def remake() -> RunResult:
        return run_experiment(spec, data, out_dir, accelerator=accelerator, keep_predictions=keep_predictions, verbose=verbose,
                              model_fn=model_fn, train_data=train_data, checkpoints=checkpoints, needs=("model.keras",),
                              reuse_features=reuse_features)  # fmt: skip

    return RunResult(record=record, run_dir=run_dir, model=made.get("model"), predictions=made.get("predictions", {}),
                     remake=remake if save_model else None)  # fmt: skip


def predict(model, images: np.ndarray, use_feature_cache: bool = False, batch_size: int = 256, eager: bool = False) -> np.ndarray:
    """Class probabilities; with a frozen base, through the (disk-cached) backbone features.

    Args:
        model: a ``eurosat_lib.models`` classifier (uint8 images in, probabilities out).
        images: ``(N, H, W, 3)`` uint8 images.
        use_feature_cache: compute (or reuse) the frozen base's features, then run the head.
        batch_size: images per call of the model.
        eager: always call the model eagerly (the smoke profile); otherwise
            :func:`eurosat_lib.training.predict_batches` chooses by backend (eager on
            TensorFlow, so scoring many models traces no graph per model).

    Returns:
        ``(N, num_classes)`` float32 probabilities.
    """
    import keras

    mode = True if eager else None
    if use_feature_cache:
        extractor, head = M.split_feature_extractor(model)
        feats = T.extract_features(extractor, images, batch_size=batch_size, desc="eval features", eager=eager)
        return T.predict_batches(head, feats, batch_size=max(batch_size, 1024), eager=mode)
    return T.predict_batches(model, images, batch_size=batch_size, eager=mode)


_ACCELERATORS: dict[str, T.Accelerator] = {}


def accelerator_for(profile: str) -> T.Accelerator:
    """The accelerator settings of a profile (configured once per process).

    ``smoke`` runs eagerly (a few steps never repay graph tracing); ``cpu``/``gpu`` use graphs and
    switch mixed precision, XLA and multi-GPU on exactly when GPUs are present.

    Args:
        profile: ``smoke``, ``cpu`` or ``gpu``.

    Returns:
        The switches.
    """
    if profile not in _ACCELERATORS:
        _ACCELERATORS[profile] = T.configure_accelerator(run_eagerly=(profile == "smoke"))
    return _ACCELERATORS[profile]


def checkpoints_for(profile: str) -> bool:
    """Whether a profile's runs keep per-epoch checkpoints (:func:`training.fit_phase`).

    ``smoke`` runs last seconds: resuming one mid-phase would save less time than the
    checkpoints cost.

    Args:
        profile: ``smoke``, ``cpu`` or ``gpu``.

    Returns:
        False for ``smoke``, True otherwise.
    """
    return profile != "smoke"


def run(P, spec: ExperimentSpec, data: D.EuroSAT, **kwargs: Any) -> RunResult:
    """:func:`run_experiment` with a notebook's profile settings and output folder.

    Args:
        P: The chapter's parameters (``profile``, ``out_dir``).
        spec: The run.
        data: The dataset.
        **kwargs: Passed to :func:`run_experiment`.

    Returns:
        The run.
    """
    kwargs.setdefault("accelerator", accelerator_for(P.profile))
    kwargs.setdefault("checkpoints", checkpoints_for(P.profile))
    return run_experiment(spec, data, P.out_dir, **kwargs)


def inference_speed(model, images: np.ndarray, repeats: int = 2) -> float:
    """Images per second for batched inference (warm: the first call compiles).

    Args:
        model: A Keras model.
        images: The batch to time.
        repeats: Timed passes (the best counts).

    Returns:
        Images per second.
    """
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
    """Reload a run's trained model (``run_dir/model.keras``) in one call.

    Args:
        run_dir: The run folder.

    Returns:
        The Keras model.
    """
    import keras

    return keras.models.load_model(R.run_model_path(run_dir))


# --------------------------------------------------------------------------------------------
# Notebook header: what ran, where
# --------------------------------------------------------------------------------------------


def hardware_summary() -> dict[str, Any]:
    """Where a chapter ran: CPU, GPUs and the versions that matter (for its header).

    Returns:
        CPU, GPUs, and the Keras (with its backend), TensorFlow, library and Python versions.
    """
    env = R.environment()
    return {
        "cpu": f"{env['cpu_model']} ({env['cpu_count']} cores)",
        "gpus": ", ".join(T.gpu_names()) or "none",
        "keras": f"{env['keras']} ({env['keras_backend']} backend)",
        "tensorflow": env.get("tensorflow"),
        "eurosat_lib": __version__,
        "python": platform.python_version(),
    }


def header_table(
    params: ChapterParams | SimpleNamespace, data: D.EuroSAT | None = None, notes: Mapping[str, Any] | None = None
):
    """A chapter's run settings, shown at its top as one line that opens into a table.

    The table lists the parameters the chapter declares (the fields of its parameters
    dataclass, nothing it does not read), then the data, the hardware and any ``notes``.

    Args:
        params: the chapter's resolved parameters (:func:`~.params.resolve_params`).
        data: the dataset the chapter works on, if any.
        notes: extra rows (name -> value), e.g. the blocks a chapter cuts after.

    Returns:
        An ``IPython.display.HTML`` object: a closed ``<details>`` block (a collapsed dropdown
        in Jupyter and in the book) whose summary names profile, data and hardware.
    """
    import html

    import pandas as pd
    from IPython.display import HTML

    def fmt(v: Any) -> str:  # one string column; lists read as typed in a parameters cell
        return json.dumps(v) if isinstance(v, (list, tuple)) else str(v)

    values = vars(params)
    rows = [("parameter", k, fmt(v)) for k, v in values.items()]
    ident = data_identity(data) if data is not None else {}
    rows += [("data", k, fmt(v)) for k, v in ident.items()]
    hardware = hardware_summary()
    rows += [("hardware", k, fmt(v)) for k, v in hardware.items()]
    rows += [("note", k, fmt(v)) for k, v in (notes or {}).items()]
    table = pd.DataFrame(rows, columns=["group", "name", "value"]).set_index(["group", "name"])
    parts = [f"profile <b>{html.escape(str(values.get('profile')))}</b>", f"{len(values)} parameters"]
    if ident:
        published = " (the published EuroSAT)" if ident.get("published_eurosat") else ""
        parts.append(f"{ident['num_images']:,} images{published}")
    parts.append(html.escape(hardware["gpus"] if hardware["gpus"] != "none" else f"CPU only: {hardware['cpu']}"))
    summary = "Run settings: " + " · ".join(parts)
    body = table.to_html(escape=True, border=0, classes="eurosat-header")
    return HTML(f'<details class="eurosat-header">\n<summary>{summary}</summary>\n\n{body}\n</details>')


# --------------------------------------------------------------------------------------------
# Chapter summaries: what the results chapter reads
# --------------------------------------------------------------------------------------------


def save_summary(
    P: Any,
    summary: "ChapterSummary | Mapping[str, Any]",
    tables: Mapping[str, Any] | None = None,
    runs: Iterable[RunResult | str | os.PathLike] = (),
) -> Path:
    """Write ``<out_dir>/summary.json``: the chapter's typed summary (:mod:`eurosat_lib.summaries`).

    Called from a notebook's Summary cell with the summary its chapter module's ``summarize``
    built. The older form, a mapping of numbers plus ``tables`` and ``runs`` (what chapters
    executed before the typed summaries call), is turned into the chapter's summary type first,
    so it writes the same file and an unknown chapter fails here rather than on the results page.

    Args:
        P: The chapter's parameters (``notebook``, ``profile``, ``out_dir``).
        summary: A :class:`~eurosat_lib.summaries.base.ChapterSummary`, or the numbers as a mapping.
        tables: With a mapping only: table name -> DataFrame or rows.
        runs: With a mapping only: run folders the numbers come from (besides those the tables name).

    Returns:
        The path written.

    Raises:
        ValueError: A typed summary of another chapter, or ``tables``/``runs`` given with a typed summary.
        KeyError: The chapter has no summary type.
    """
    from .. import summaries as S

    if isinstance(summary, S.ChapterSummary):
        if tables or list(runs):
            raise ValueError("save_summary: tables and runs belong in the typed summary (its summarize() sets them)")
        if summary.NOTEBOOK != P.notebook:
            raise ValueError(f"save_summary: a {summary.NOTEBOOK!r} summary given for chapter {P.notebook!r}")
    else:
        summary = S.summary_type(P.notebook).from_study(P, tables, runs, **dict(summary))
    path = Path(P.out_dir) / "summary.json"
    write_json_atomic(path, R.jsonable(summary.to_json()))
    return path
