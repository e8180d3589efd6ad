"""Training loops: phases, feature caching, callbacks, resume and accelerator switches.

The recipe the book studies is two-phase transfer::

    model = build_model("MobileNetV2", weights="imagenet", backbone_kwargs={"alpha": 0.35})
    head = PhaseConfig("head", epochs=5, learning_rate=1e-3)                  # frozen base
    tune = PhaseConfig("finetune", epochs=5, learning_rate=1e-4, unfreeze="block_13")
    results = train_phases(model, train, val, [head, tune], run_dir="runs/demo")

* A **phase** is one ``model.fit`` with its own optimizer, learning rate and trainable set;
  changing what is trainable needs a re-compile, so each phase compiles afresh.
* **Feature caching** (``PhaseConfig(..., use_feature_cache=True)``): with a frozen base every
  epoch recomputes the same backbone features, so they are extracted once (and kept on disk,
  keyed by the extractor's weights and the images) and the head alone is trained on them. The
  head's layers are shared with the full model, so the full model is ready for evaluation or
  fine-tuning afterwards.
* **Resume**: each phase keeps a Keras ``BackupAndRestore`` checkpoint under
  ``run_dir/checkpoints/<phase>``; a finished phase leaves ``phase_<name>.weights.h5`` and an
  entry in ``state.json``. Re-running the same call after a crash skips finished phases and
  continues the interrupted one from its last completed epoch. Batch order and dropout noise are
  derived from ``(seed, epoch)``, so a resumed run ends with the same weights as an unbroken one.
  ``checkpoints=False`` drops the per-epoch checkpoints (runs of a few seconds, the ``smoke``
  profile: saving the model twice an epoch costs more than re-running it); finished phases are
  still kept, so such a run resumes at the start of its interrupted phase.
* Early stopping and "best" checkpoints watch the **validation** split, never the test split.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import time
import warnings
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import models as M  # noqa: I001  (first: it imports Keras quietly, see models.py)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from . import config  # noqa: E402
from ._io import atomic_path, progress, write_json_atomic
from .data import EuroSAT, nested_subset

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
#: PhaseConfig fields added after runs were committed: ``to_dict`` leaves them out while they
#: hold their default, so the identity (``ExperimentSpec.key``) of every earlier run is unchanged.
_LATER_FIELDS = {"label_smoothing": 0.0, "warmup_epochs": 0, "early_stopping_monitor": "val_loss", "image_size": None,
                 "val_n_per_class": None}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase. Invalid values raise ``ValueError`` naming the parameter.

    Args:
        name: phase name (``"head"``, ``"finetune"``, ``"scratch"``...), used for files.
        epochs: maximum epochs.
        learning_rate: peak learning rate (> 0).
        batch_size: images per step.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: decoupled weight decay (adamw/sgd).
        schedule: ``"constant"``, ``"cosine"`` or ``"linear"`` decay to 0 over the phase (after
            any warm-up).
        early_stopping: patience in epochs on ``early_stopping_monitor`` (restores the best
            weights), or None.
        unfreeze: trainable policy applied before the phase (see ``models.set_trainable``):
            ``"frozen"``, ``"all"``, an int (top N backbone layers) or a block name; None keeps
            the model's current trainable state.
        freeze_bn: keep BatchNorm layers frozen (inference mode) when unfreezing.
        use_feature_cache: train only the head on cached backbone features (frozen base only).
        label_smoothing: share of each label's probability mass spread over all classes (0 = off).
        warmup_epochs: epochs of linear warm-up from 0 to ``learning_rate`` before the decay.
        early_stopping_monitor: ``"val_loss"`` or ``"val_accuracy"``. A network trained from
            scratch on few steps can have a rising validation loss while its accuracy still
            climbs (its BatchNorm statistics lag its weights); accuracy is the safer signal there.
        image_size: train this phase (and evaluate after it) at another input size than the
            run's (progressive resizing: train small, finish large). The run rebuilds the model at
            this size and carries every weight over (:func:`eurosat_lib.experiments.core.resized_model`);
            the phase must set ``unfreeze`` because a rebuilt model starts with the builder's
            trainable state. None keeps the current size.
        val_n_per_class: score only this many validation images per class after each epoch (a
            fixed stratified subset, the same for every run; the whole set when a class has
            fewer). Early stopping and the best checkpoint watch it. A phase without early
            stopping uses validation only to draw its learning curve, and at 160 px a pass over
            5,400 images is a fifth of each fine-tuning epoch; the run's final scores still use
            its whole validation split. None: every validation image, every epoch.

    Raises:
        ValueError: a value out of range, naming the field and the phase.
    """

    name: str = "head"
    epochs: int = 5
    learning_rate: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    early_stopping: int | None = None
    unfreeze: str | int | None = None
    freeze_bn: bool = True
    use_feature_cache: bool = False
    label_smoothing: float = 0.0
    warmup_epochs: int = 0
    early_stopping_monitor: str = "val_loss"
    image_size: int | None = None
    val_n_per_class: int | None = None

    def __post_init__(self) -> None:
        where = f"in phase {self.name!r}"
        if not isinstance(self.epochs, (int, np.integer)) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer {where}, got {self.epochs!r}")
        if not isinstance(self.learning_rate, (int, float)) or not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive number {where}, got {self.learning_rate!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer {where}, got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} {where}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} {where}, got {self.schedule!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0 {where}, got {self.weight_decay!r}")
        if self.early_stopping is not None and (not isinstance(self.early_stopping, int) or self.early_stopping < 1):
            raise ValueError(f"early_stopping must be None or a positive integer {where}, got {self.early_stopping!r}")
        if not isinstance(self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1) {where}, got {self.label_smoothing!r}")
        if not isinstance(self.warmup_epochs, (int, np.integer)) or isinstance(self.warmup_epochs, bool) or not 0 <= self.warmup_epochs <= max(self.epochs, 0):
            raise ValueError(f"warmup_epochs must be an integer in [0, epochs={self.epochs}] {where}, got {self.warmup_epochs!r}")
        if self.early_stopping_monitor not in ("val_loss", "val_accuracy"):
            raise ValueError(f"early_stopping_monitor must be 'val_loss' or 'val_accuracy' {where}, got {self.early_stopping_monitor!r}")
        if self.image_size is not None and (
            not isinstance(self.image_size, (int, np.integer)) or isinstance(self.image_size, bool) or self.image_size < 32
        ):
            raise ValueError(f"image_size must be None or an integer >= 32 {where}, got {self.image_size!r}")
        if self.val_n_per_class is not None and (
            not isinstance(self.val_n_per_class, (int, np.integer)) or isinstance(self.val_n_per_class, bool)
            or self.val_n_per_class < 1
        ):  # fmt: skip
            raise ValueError(f"val_n_per_class must be None or a positive integer {where}, got {self.val_n_per_class!r}")
        if self.image_size is not None and self.unfreeze is None:
            raise ValueError(
                f"a phase that changes image_size must set unfreeze {where}: the model is rebuilt at the "
                "new size and starts with the builder's trainable state"
            )
        if self.use_feature_cache and self.unfreeze not in (None, "frozen"):
            raise ValueError(
                f"use_feature_cache needs a frozen base {where} (unfreeze={self.unfreeze!r}); "
                "cached features cannot change while the backbone trains"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; fields added later are left out while they hold their default.

        Returns:
            The phase's settings, JSON-able (what a record's ``params.phases`` holds).
        """
        d = asdict(self)
        for k, default in _LATER_FIELDS.items():
            if d[k] == default:
                del d[k]
        return d


@dataclass
class PhaseResult:
    """What one phase did: its per-epoch history, timing and where it stopped."""

    name: str
    history: dict[str, list[float]]
    seconds: float
    epochs_run: int
    trainable_params: int
    feature_seconds: float = 0.0
    seconds_per_epoch: float = 0.0
    resumed: bool = False
    skipped: bool = False
    #: the frozen base's features were read from an earlier run's cache: the phase's seconds
    #: leave out their extraction (see ``reuse_features`` in :func:`fit_phase`)
    features_from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data.

        Returns:
            Every field: name, history, seconds, epochs run, trainable parameters, feature and
            per-epoch seconds, whether it resumed or was skipped.
        """
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Accelerators: mixed precision, XLA, several GPUs — all off on CPU by default
# --------------------------------------------------------------------------------------------


def gpu_names() -> list[str]:
    """Names of visible GPUs for the active Keras backend (empty on CPU).

    Returns:
        One name per GPU.
    """
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_physical_devices("GPU")]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices() if d.platform == "gpu"]
        if backend == "torch":
            import torch

            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - device discovery must never break training on CPU
        return []
    return []


def _jit_by_default() -> bool:
    """XLA compilation where no GPU asks for it. On JAX, ``jit_compile=False`` is not a graph
    without XLA (as on TensorFlow) but op-by-op dispatch, each op compiled on its own: JAX
    always jits unless told otherwise. TensorFlow's plain graphs are the faster choice on CPU."""
    return keras.backend.backend() == "jax"


@dataclass(frozen=True)
class Accelerator:
    """Resolved accelerator switches. Build and compile models inside :meth:`scope`."""

    mixed_precision: bool = False
    jit_compile: bool = field(default_factory=_jit_by_default)
    multi_gpu: bool = False
    gpus: tuple[str, ...] = ()
    #: Skip graph tracing. Tracing a MobileNetV2 train step costs 10-50 s on 2 CPU cores, far
    #: more than a handful of eager steps: right for smoke runs, wrong for real training.
    run_eagerly: bool = False

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Context for building/compiling: the distribution strategy when several GPUs are used.

        Yields:
            Nothing; models built inside the block are placed by the strategy.
        """
        if self.multi_gpu and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.distribute.MirroredStrategy().scope():
                yield
        else:
            yield

    def to_dict(self) -> dict[str, Any]:
        """The switches in effect, as a record's ``accelerator`` entry holds them.

        Returns:
            Mixed precision, XLA, multi-GPU, the GPUs' names and eager execution.
        """
        return asdict(self)


def configure_accelerator(
    mixed_precision: bool | str = "auto",
    jit_compile: bool | str = "auto",
    multi_gpu: bool | str = "auto",
    run_eagerly: bool = False,
) -> Accelerator:
    """Turn on GPU speed-ups where they help; ``"auto"`` means on with a GPU, off on CPU (except
    ``jit_compile`` on JAX, which is always on: see :func:`_jit_by_default`).

    Mixed precision sets Keras' global dtype policy (``mixed_float16``; model outputs stay
    float32). Several GPUs use ``tf.distribute.MirroredStrategy`` on TensorFlow and
    ``keras.distribution.DataParallel`` on JAX.

    Args:
        mixed_precision: True, False or ``"auto"``.
        jit_compile: True, False or ``"auto"`` (XLA compilation of the train step).
        multi_gpu: True, False or ``"auto"`` (data parallelism over every visible GPU).
        run_eagerly: Run training steps eagerly (debugging; the smoke profile).

    Returns:
        The switches in effect and the distribution scope.

    Raises:
        ValueError: A switch that is not True, False or ``"auto"``.
    """
    gpus = tuple(gpu_names())

    def pick(v: bool | str, default: bool, name: str) -> bool:
        if v == "auto":
            return default
        if isinstance(v, bool):
            return v
        raise ValueError(f"{name} must be True, False or 'auto', got {v!r}")

    acc = Accelerator(
        mixed_precision=pick(mixed_precision, bool(gpus), "mixed_precision"),
        jit_compile=pick(jit_compile, bool(gpus) or _jit_by_default(), "jit_compile"),
        multi_gpu=pick(multi_gpu, len(gpus) > 1, "multi_gpu"),
        gpus=gpus,
        run_eagerly=bool(run_eagerly),
    )
    keras.mixed_precision.set_global_policy("mixed_float16" if acc.mixed_precision else "float32")
    if acc.multi_gpu and keras.backend.backend() == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return acc


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend; optionally make TF ops deterministic (slower).

    Args:
        seed: The seed.
        deterministic: Also make TensorFlow's ops deterministic.
    """
    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


# --------------------------------------------------------------------------------------------
# Data feeding
# --------------------------------------------------------------------------------------------


class ArraySequence(keras.utils.PyDataset):
    """Batches of in-memory arrays; the shuffle order is a function of ``(seed, epoch)``.

    Keras' own array shuffling depends on how many epochs this process has run, so a resumed
    run would see different batches than an unbroken one. Here :class:`EpochSeeder` tells the
    sequence which epoch it is, making the order reproducible across restarts.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None, batch_size: int, shuffle: bool = False, seed: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        if y is not None and len(x) != len(y):
            raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (the order depends on the seed and the epoch only, so a resumed run repeats it).

        Args:
            epoch: The epoch about to start (0-based).
        """
        n = len(self.x)
        self.order = np.random.default_rng([self.seed, int(epoch)]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        xb = np.asarray(self.x[idx])
        return xb if self.y is None else (xb, np.asarray(self.y[idx]))


class EpochSeeder(keras.callbacks.Callback):
    """At each epoch start: set the batch order and reseed the model's random layers.

    Dropout and augmentation draw from Keras ``SeedGenerator`` states; resetting them from
    ``(seed, epoch)`` makes each epoch's noise independent of process history (resume-safe).
    """

    def __init__(self, sequence: ArraySequence, seed: int):
        super().__init__()
        self.sequence, self.seed = sequence, int(seed)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Tell the training sequence which epoch starts, so its shuffle order can be reproduced.

        Args:
            epoch: The epoch about to start (0-based).
            logs: Keras' logs (unused).
        """
        self.sequence.set_epoch(epoch)
        for i, gen in enumerate(_seed_generators(self.model)):
            state = np.random.default_rng([self.seed, epoch, i]).integers(0, 2**31 - 1, size=gen.state.shape)
            gen.state.assign(state.astype(gen.state.dtype))


def _seed_generators(model: keras.Model) -> list:
    from keras.src.random.seed_generator import SeedGenerator

    gens, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attr in vars(layer).values():
            if isinstance(attr, SeedGenerator) and id(attr) not in seen:
                seen.add(id(attr))
                gens.append(attr)
    return gens


# --------------------------------------------------------------------------------------------
# Feature caching
# --------------------------------------------------------------------------------------------


#: extractor -> digest of its config. A built model's architecture never changes, and
#: serialising MobileNetV2's config costs more than hashing its weights; weights can change
#: (fine-tuning), so they are hashed on every call.
_CONFIG_DIGESTS: "weakref.WeakKeyDictionary[keras.Model, bytes]" = weakref.WeakKeyDictionary()


def _extractor_key(extractor: keras.Model, images: np.ndarray) -> str:
    """Key a feature cache by everything that determines the features: config, weights, pixels."""
    cfg = _CONFIG_DIGESTS.get(extractor)
    if cfg is None:
        cfg = hashlib.sha256(json.dumps(extractor.get_config(), sort_keys=True, default=str).encode()).digest()
        _CONFIG_DIGESTS[extractor] = cfg
    h = hashlib.sha256(cfg)
    for w in extractor.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    h.update(str(images.shape).encode())
    h.update(hashlib.sha256(np.ascontiguousarray(images)).digest())
    return h.hexdigest()[:32]


def predict_batches(
    model: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    *,
    eager: bool | None = None,
    starts: Iterable[int] | None = None,
) -> np.ndarray:
    """Outputs of ``model`` (inference mode) over ``images`` in batches, as float32.

    The one prediction path of the library. On TensorFlow it calls the model eagerly: the
    chapters predict with dozens of different models, and ``model.predict`` traces a new
    ``tf.function`` for each, which costs a trace per model and makes TensorFlow print its
    "triggered tf.function retracing" warning into the book. Eager calls run the same kernels
    (measured here: ~1.5x the steady-state time of a traced graph, less than a trace for the
    one or two passes a model gets). On JAX, eager execution dispatches op by op, so the jitted
    ``model.predict`` is used there.

    Args:
        model: any Keras model.
        images: ``(N, ...)`` inputs.
        batch_size: inputs per call.
        eager: force eager calls (True) or ``model.predict`` (False); None chooses by backend.
        starts: the batch start offsets to iterate (e.g. wrapped in a progress bar); default all.

    Returns:
        The outputs, float32, one row per input.
    """
    if eager is None:
        eager = keras.backend.backend() == "tensorflow"
    if not eager:
        return np.asarray(model.predict(np.asarray(images), batch_size=batch_size, verbose=0), dtype=np.float32)
    starts = range(0, len(images), batch_size) if starts is None else starts
    outs = [
        np.asarray(keras.ops.convert_to_numpy(model(np.asarray(images[i : i + batch_size]), training=False)), dtype=np.float32)
        for i in starts
    ]  # fmt: skip
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def dihedral_views(images: np.ndarray) -> Iterator[np.ndarray]:
    """The 8 symmetries of the square (4 rotations, each with and without a mirror) of NHWC images.

    Overhead images have no canonical orientation, so each view is as valid an input as the
    original: the basis of dihedral test-time augmentation.

    Args:
        images: ``(N, H, W, C)`` images (square).

    Yields:
        Each of the 8 views, the same shape as ``images``.
    """
    for k in range(4):
        rotated = np.rot90(images, k, axes=(1, 2))
        yield rotated
        yield rotated[:, :, ::-1]


def predict_dihedral(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities averaged over the 8 dihedral views of each image (test-time augmentation).

    Args:
        model: a classifier with softmax outputs.
        images: ``(N, H, W, C)`` square images.
        batch_size: inputs per call.

    Returns:
        ``(N, classes)`` float32 mean probabilities; costs 8 passes of :func:`predict_batches`.
    """
    total = None
    for view in dihedral_views(np.asarray(images)):
        p = predict_batches(model, np.ascontiguousarray(view), batch_size)
        total = p if total is None else total + p
    return (total / 8.0).astype(np.float32) if total is not None else np.zeros((0,), np.float32)


def extract_features(
    extractor: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    cache: bool = True,
    desc: str = "features",
    eager: bool = False,
    reuse: bool = True,
) -> np.ndarray:
    """Run ``extractor`` over ``images`` once (progress bar), caching the result on disk.

    The cache lives in ``$EUROSAT_DATA_DIR/features/<key>.npy`` and is keyed by the extractor's
    config and weights and the image bytes, so a changed model or data never reuses stale
    features. Written atomically.

    Args:
        extractor: The feature model (e.g. a frozen backbone with pooling).
        images: The inputs.
        batch_size: Inputs per call.
        cache: Whether to use the on-disk cache at all.
        desc: The progress bar's label.
        eager: Passed to :func:`predict_batches`.
        reuse: Whether to read features an earlier call cached (False: compute them, and
            refresh the cache; a timed run that must pay for its own extraction).

    Returns:
        The features, float32, one row per image.
    """
    return _features(extractor, images, batch_size, cache=cache, desc=desc, eager=eager, reuse=reuse)[0]


def _features(extractor: keras.Model, images: np.ndarray, batch_size: int = 256, *, cache: bool = True,
              desc: str = "features", eager: bool = False, reuse: bool = True) -> tuple[np.ndarray, bool]:  # fmt: skip
    """:func:`extract_features`, plus whether the features were read from the cache."""
    path = None
    if cache:
        path = config.cache_dir() / "features" / f"{_extractor_key(extractor, images)}.npy"
        if reuse and path.is_file():
            try:
                return np.load(path), True
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
    batches = progress(range(0, len(images), batch_size), desc=desc, unit="batch")
    feats = predict_batches(extractor, images, batch_size, eager=True if eager else None, starts=batches)
    if not len(feats):
        feats = np.zeros((0, extractor.output.shape[-1]), np.float32)
    if path is not None:
        with atomic_path(path, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, feats)
    return feats, False


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="eurosat_lib")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine or linear decay to 0.

    Keras' ``CosineDecay`` warms up too, but has no linear-to-zero decay; one schedule for both
    keeps the two recipes the study compares identical except for the decay's shape.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "cosine"):
        self.peak, self.total_steps, self.warmup_steps, self.decay = float(peak), int(total_steps), int(warmup_steps), decay

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = ops.cast(max(self.warmup_steps, 1), "float32")
        span = ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32")
        t = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            shape = 0.5 * (1.0 + ops.cos(math.pi * t))
        elif self.decay == "linear":
            shape = 1.0 - t
        else:  # "none": warm-up, then constant
            shape = ops.ones_like(t)
        rising = self.peak * ops.minimum(step / warm, 1.0)
        return ops.where(step < self.warmup_steps, rising, self.peak * shape)

    def get_config(self) -> dict[str, Any]:
        """The schedule's constructor arguments (Keras serialisation).

        Returns:
            The config.
        """
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "decay": self.decay}


@keras.saving.register_keras_serializable(package="eurosat_lib")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing (Keras' sparse loss has none)."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        """Cross-entropy of ``y_pred`` against integer labels smoothed towards uniform.

        Args:
            y_true: Integer class labels.
            y_pred: Predicted class probabilities.

        Returns:
            The per-sample losses.
        """
        ops = keras.ops
        n = ops.shape(y_pred)[-1]
        onehot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n)
        return keras.losses.categorical_crossentropy(onehot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        """The loss's constructor arguments (Keras serialisation).

        Returns:
            The config.
        """
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_optimizer(phase: PhaseConfig, steps: int, steps_per_epoch: int | None = None) -> keras.optimizers.Optimizer:
    """The phase's optimizer with its learning-rate schedule over ``steps`` optimizer steps.

    Args:
        phase: the phase (optimizer, learning rate, schedule, warm-up, weight decay).
        steps: optimizer steps in the whole phase (the schedule's length).
        steps_per_epoch: steps in one epoch, to turn ``warmup_epochs`` into steps (default
            ``steps // epochs``).

    Returns:
        A fresh Keras optimizer.
    """
    lr: Any = phase.learning_rate
    warmup = getattr(phase, "warmup_epochs", 0)
    if warmup or (phase.schedule == "linear" and steps > 0):
        per_epoch = steps_per_epoch or max(steps // max(phase.epochs, 1), 1)
        decay = {"cosine": "cosine", "linear": "linear", "constant": "none"}[phase.schedule]
        lr = WarmupDecay(phase.learning_rate, steps, warmup * per_epoch, decay=decay)
    elif phase.schedule == "cosine" and steps > 0:
        lr = keras.optimizers.schedules.CosineDecay(phase.learning_rate, decay_steps=steps)
    if phase.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if phase.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=phase.weight_decay or 1e-4)
    return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=phase.weight_decay or None)


def compile_for(model: keras.Model, phase: PhaseConfig, steps: int, jit_compile: bool = False, run_eagerly: bool = False) -> None:
    """(Re-)compile ``model`` for a phase: needed whenever what is trainable changed.

    Args:
        model: The model.
        phase: The phase (optimizer, learning rate and schedule, loss settings).
        steps: Optimiser steps per epoch (for the schedule).
        jit_compile: Compile the train step with XLA.
        run_eagerly: Run the train step eagerly.
    """
    model.compile(
        optimizer=make_optimizer(phase, steps),
        loss=(SmoothedSparseCrossentropy(phase.label_smoothing) if phase.label_smoothing else keras.losses.SparseCategoricalCrossentropy()),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile and not run_eagerly,
        run_eagerly=run_eagerly,
    )


def _read_csv_history(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    hist: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            # Keras' CSVLogger writes "NA" for a metric an epoch did not log (val_* when a phase
            # runs without validation data): such a column is not part of the history.
            if k == "epoch" or v in (None, "", "NA"):
                continue
            hist.setdefault(k, []).append(float(v))
    return hist


class _State:
    """``run_dir/state.json``: which phases finished (atomic rewrite on every change).

    A state file that cannot be read (flipped bytes, a hand edit, another layout) is reported by
    path with a warning and treated as "no phase finished": the per-epoch checkpoints still
    resume the interrupted phase, and a finished phase is simply trained again. A run must never
    fail the same way on every retry because of a bookkeeping file.
    """

    def __init__(self, run_dir: Path | None):
        self.path = run_dir / "state.json" if run_dir else None
        self.data: dict[str, Any] = {"completed": {}}
        if self.path and self.path.is_file():
            self.data = {"completed": self._read(self.path)}

    @staticmethod
    def _read(path: Path) -> dict[str, dict]:
        known = {f.name for f in fields(PhaseResult)}
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            completed = data["completed"]
            if not isinstance(completed, dict) or not all(
                isinstance(v, dict) and {"name", "history", "seconds", "epochs_run", "trainable_params"} <= set(v) <= known
                for v in completed.values()
            ):
                raise ValueError("'completed' is not a mapping of phase results")
            return completed
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            warnings.warn(
                f"{path} is unreadable ({type(e).__name__}: {e}); treating it as 'no completed phases' "
                "(per-epoch checkpoints still resume the interrupted phase)",
                RuntimeWarning,
                stacklevel=4,
            )
            return {}

    def done(self, name: str) -> dict | None:
        return self.data["completed"].get(name)

    def mark(self, name: str, result: PhaseResult) -> None:
        self.data["completed"][name] = result.to_dict()
        if self.path:
            write_json_atomic(self.path, self.data)


def monitor_subset(val: EuroSAT, n_per_class: int) -> EuroSAT:
    """The validation images a phase scores after each epoch (:attr:`PhaseConfig.val_n_per_class`).

    Args:
        val: The run's validation images.
        n_per_class: Images per class to keep.

    Returns:
        ``nested_subset(val, n_per_class, seed=0)`` (the same images for every run), or ``val``
        itself when no class has more than ``n_per_class`` images (a run already scoring a
        small subset, e.g. the smoke profile).

    Raises:
        ValueError: Some classes have more images than ``n_per_class`` and some fewer: a
            stratified subset of that size does not exist.
    """
    counts = np.bincount(val.labels, minlength=val.num_classes)
    present = counts[counts > 0]
    if present.size == 0 or present.max() <= n_per_class:
        return val
    if present.min() < n_per_class:
        raise ValueError(f"val_n_per_class={n_per_class}, but the validation classes have {present.min()} to "
                         f"{present.max()} images: use at most {present.min()}, or None for all of them")
    return nested_subset(val, n_per_class=n_per_class, seed=0)


def fit_phase(
    model: keras.Model,
    train: EuroSAT,
    val: EuroSAT | None,
    phase: PhaseConfig,
    *,
    seed: int = 0,
    run_dir: str | os.PathLike | None = None,
    accelerator: Accelerator | None = None,
    verbose: int = 0,
    tensorboard: bool = True,
    checkpoints: bool = True,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    reuse_features: bool = True,
) -> PhaseResult:
    """Train ``model`` for one phase; resumable when ``run_dir`` is given.

    Returns the phase's history (all epochs, across restarts) and timings. See the module
    docstring for the resume contract (and what ``checkpoints=False`` gives up).

    Args:
        model: The model, with the phase's layers trainable.
        train: The training images.
        val: The validation images (None: no validation, no early stopping).
        phase: The phase's settings.
        seed: Seeds shuffling and augmentation.
        run_dir: The run folder (checkpoints, logs); None trains without resume.
        accelerator: Mixed precision / XLA / multi-GPU switches (default: configured now).
        verbose: Keras' verbosity.
        tensorboard: Write TensorBoard logs into ``run_dir``.
        checkpoints: Save a checkpoint per epoch so an interrupted phase resumes.
        extra_callbacks: More Keras callbacks.
        reuse_features: With ``use_feature_cache``, read features an earlier run cached on
            disk. False computes them here, so the phase's time includes their extraction (a
            time-to-accuracy measurement must pay for it, whatever ran before).

    Returns:
        The phase's result.
    """
    acc = accelerator or Accelerator()
    if val is not None and phase.val_n_per_class is not None:
        val = monitor_subset(val, phase.val_n_per_class)
    run_dir = Path(run_dir) if run_dir is not None else None
    state = _State(run_dir)
    done = state.done(phase.name)
    if done is not None and run_dir is not None and (run_dir / f"phase_{phase.name}.weights.h5").is_file():
        if phase.unfreeze is not None:
            M.set_trainable(model, phase.unfreeze, freeze_bn=phase.freeze_bn)
        model.load_weights(run_dir / f"phase_{phase.name}.weights.h5")
        return PhaseResult(**{**done, "skipped": True})

    if phase.unfreeze is not None:
        M.set_trainable(model, phase.unfreeze, freeze_bn=phase.freeze_bn)
    trainable = M.count_params(model)["trainable"]
    t_start = time.perf_counter()
    feature_seconds, from_cache = 0.0, False

    if phase.use_feature_cache:
        extractor, head = M.split_feature_extractor(model)
        t0 = time.perf_counter()
        x_train, from_cache = _features(extractor, train.images, desc=f"{phase.name}: train features", eager=acc.run_eagerly,
                                        reuse=reuse_features)  # fmt: skip
        if val is not None:
            x_val, val_cached = _features(extractor, val.images, desc=f"{phase.name}: val features", eager=acc.run_eagerly,
                                          reuse=reuse_features)  # fmt: skip
            from_cache = from_cache or val_cached
        else:
            x_val = None
        feature_seconds = time.perf_counter() - t0
        fit_model = head
    else:
        x_train, x_val, fit_model = train.images, (val.images if val is not None else None), model

    seq = ArraySequence(x_train, train.labels, phase.batch_size, shuffle=True, seed=seed)
    vseq = ArraySequence(x_val, val.labels, max(phase.batch_size, 256)) if val is not None else None
    with acc.scope():
        compile_for(fit_model, phase, steps=len(seq) * phase.epochs, jit_compile=acc.jit_compile, run_eagerly=acc.run_eagerly)

    callbacks: list[keras.callbacks.Callback] = [EpochSeeder(seq, seed)]
    resumed = False
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        backup = run_dir / "checkpoints" / phase.name
        resumed = checkpoints and (backup / "training_metadata.json").is_file()
        if checkpoints:
            callbacks.append(keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True))
        elif backup.exists():
            # From an earlier checkpointed attempt: this one starts the phase afresh (its history
            # log too), so a later checkpointed run must not resume from that older state.
            shutil.rmtree(backup)
        csv_path = run_dir / f"history_{phase.name}.csv"
        if not resumed and csv_path.exists():
            csv_path.unlink()  # a stale log from an earlier, abandoned attempt
        callbacks.append(keras.callbacks.CSVLogger(str(csv_path), append=True))
        if vseq is not None and checkpoints:
            callbacks.append(
                keras.callbacks.ModelCheckpoint(
                    str(run_dir / "checkpoints" / f"best_{phase.name}.weights.h5"),
                    monitor="val_loss",
                    save_best_only=True,
                    save_weights_only=True,
                )
            )
        if tensorboard and _tensorboard_available():
            callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard" / phase.name), write_graph=False))
    if phase.early_stopping and vseq is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=phase.early_stopping_monitor, patience=phase.early_stopping, restore_best_weights=True)
        )
    callbacks += list(extra_callbacks)

    # shuffle=False: the sequence shuffles itself from (seed, epoch). Keras' own PyDataset
    # shuffling draws from Python's global RNG, which a resumed process cannot replay.
    # Keras' BackupAndRestore resumes by setting the model's private ``_initial_epoch``, and
    # ``fit`` prefers that over its own ``initial_epoch`` argument - also in the NEXT fit of the
    # same model. Left in place, a phase resumed at epoch k would make the following phase start
    # at epoch k and silently run k epochs too few. Clear it around every fit, so each phase
    # starts at epoch 0 unless its own backup says otherwise.
    _clear_resumed_epoch(fit_model)
    try:
        hist = fit_model.fit(seq, validation_data=vseq, epochs=phase.epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    finally:
        _clear_resumed_epoch(fit_model)
    seconds = time.perf_counter() - t_start
    history = _read_csv_history(run_dir / f"history_{phase.name}.csv") if run_dir else {}
    if not history:
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(next(iter(history.values()), []))
    train_epochs_here = max(1, len(hist.history.get("loss", [])))
    result = PhaseResult(
        name=phase.name,
        history=history,
        seconds=round(seconds, 3),
        epochs_run=epochs_run,
        trainable_params=trainable,
        feature_seconds=round(feature_seconds, 3),
        seconds_per_epoch=round((seconds - feature_seconds) / train_epochs_here, 3),
        resumed=resumed,
        features_from_cache=from_cache,
    )
    if run_dir is not None:
        with atomic_path(run_dir / f"phase_{phase.name}.weights.h5", suffix=".weights.h5") as tmp:
            model.save_weights(str(tmp))
        state.mark(phase.name, result)
    return result


def _clear_resumed_epoch(model: keras.Model) -> None:
    """Forget the epoch a ``BackupAndRestore`` restore left on ``model`` (see :func:`fit_phase`).

    ``_initial_epoch`` is Keras-private (``keras.src.trainers.Trainer``); there is no public way
    to reset it. Checked with ``hasattr`` so a Keras without it changes nothing here.
    """
    if hasattr(model, "_initial_epoch"):
        model._initial_epoch = None


def _tensorboard_available() -> bool:
    # Keras' TensorBoard callback writes through tf.summary + the tensorboard package; a
    # JAX-only GPU machine has neither, and training must not fail for want of logs.
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorboard"))


def train_phases(
    model: keras.Model,
    train: EuroSAT,
    val: EuroSAT | None,
    phases: Sequence[PhaseConfig],
    *,
    resize: Callable[[keras.Model, int], keras.Model] | None = None,
    **kwargs: Any,
) -> list[PhaseResult]:
    """Run phases in order (e.g. head on a frozen base, then fine-tuning). See :func:`fit_phase`.

    Args:
        model: The model.
        train: The training images.
        val: The validation images.
        phases: The phases, in order (names unique).
        resize: Called as ``resize(model, size)`` before each phase that sets
            :attr:`PhaseConfig.image_size`; it returns the model to train from then on (the same
            weights, built for ``size``: progressive resizing). The caller keeps what it returns,
            since that, not ``model``, is the trained network afterwards.
        **kwargs: Passed to :func:`fit_phase`.

    Returns:
        One result per phase.

    Raises:
        ValueError: Two phases share a name (their state and weight files would collide), or a
            phase sets ``image_size`` and no ``resize`` is given.
    """
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique, got {names}")
    sized = [p.name for p in phases if p.image_size is not None]
    if sized and resize is None:
        raise ValueError(f"phases {sized} set image_size: pass resize= to build the model at that size")
    results = []
    for p in phases:
        if p.image_size is not None:
            model = resize(model, p.image_size)  # type: ignore[misc]  # checked above
        results.append(fit_phase(model, train, val, p, **kwargs))
    return results
