"""ImageNet weights: where the official files are found, and loading them into a backbone.

``weights="imagenet"`` looks for the official file in
:func:`eurosat_lib.config.weights_search_dirs` before downloading it, and always hands the file
to Keras as a path. For the MobileNet family the 224-px no-top file is used at every input size
(Keras' own ``weights="imagenet"`` would fetch a size-specific file for 96-192 px inputs; the
convolution weights do not depend on the input size).
"""

from __future__ import annotations

import hashlib
import inspect
import numbers
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from eurosat_lib import config

from .layers import IMAGENET_STD
from .registry import BackboneSpec, WeightsFile, describe_kwargs, get_backbone_spec

#: Constructor keys build_model/build_backbone set themselves; passing them in
#: ``backbone_kwargs`` would silently change the model anatomy.
RESERVED_KWARGS = (
    "include_top", "weights", "input_shape", "input_tensor", "pooling", "classes", "classifier_activation",
)


class WeightsUnavailableError(FileNotFoundError):
    """Official weights are neither in the search dirs nor downloadable (e.g. offline)."""


class CorruptWeightsError(ValueError):
    """A weights file that cannot be a weights file at all: empty, cut short, or other bytes."""


def weights_file_problem(path: str | os.PathLike, official: WeightsFile | None = None) -> str | None:
    """Why ``path`` is not a readable weights file, or None if it looks like one.

    Args:
        path: an existing file.
        official: the official file it is meant to be; its size and sha256 (where known) are
            checked when ``path`` has the official file's name.

    Returns:
        A short reason ("it is empty, 0 bytes", "it is not an HDF5 file" ...) or None.
    """
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "it is empty, 0 bytes"
    is_official = official is not None and p.name == official.fname
    if is_official and official.size is not None and size != official.size:
        return f"it has {size:,} bytes, the official file {official.size:,}"
    if p.suffix == ".keras":
        if not zipfile.is_zipfile(p):
            return "it is not a zip archive, which .keras files are"
    else:
        import h5py  # Keras' own dependency for .h5 files

        if not h5py.is_hdf5(p):
            return "it is not an HDF5 file"
    if is_official and official.sha256 is not None:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest != official.sha256:
            return f"its sha256 is {digest}, not the official file's"
    return None


def _corrupt_message(path: str | os.PathLike, problem: str, official: WeightsFile | None) -> str:
    head = f"weights file {path} is corrupt ({problem})."
    if official is None or Path(path).name != official.fname:
        return f"{head} Delete it and write it again (re-run what saved it, or copy it again)."
    facts = []
    if official.size is not None:
        facts.append(f"{official.size:,} bytes")
    if official.sha256 is not None:
        facts.append(f"sha256 {official.sha256}")
    elif official.file_hash is not None:
        facts.append(f"{'md5' if len(official.file_hash) == 32 else 'sha256'} {official.file_hash}")
    known = f" The official file is {', '.join(facts)}." if facts else ""
    return f"{head} Delete it and fetch it again from {official.url}.{known}"


def find_local_weights(backbone: str, **backbone_kwargs: Any) -> Path | None:
    """The official ImageNet file for ``backbone`` if it is already on disk (never downloads).

    Args:
        backbone: registry name.
        **backbone_kwargs: constructor options that choose the file (``alpha``, ``minimalistic``).

    Returns:
        The first match in :func:`eurosat_lib.config.weights_search_dirs`, or None.

    Raises:
        ValueError: unknown backbone, or no ImageNet weights for these options (e.g. that alpha).
    """
    fname = get_backbone_spec(backbone).weights_file(**backbone_kwargs).fname
    for d in config.weights_search_dirs():
        if (d / fname).is_file():
            return d / fname
    return None


def resolve_weights(backbone: str, weights: str | os.PathLike | None, **backbone_kwargs: Any) -> str | None:
    """The weights file to load for ``backbone``, or ``None`` to train from scratch.

    Args:
        backbone: registry name.
        weights: ``None``/"none" (random init), the path of a weights file, or "imagenet": the
            official no-top file for ``backbone_kwargs``, found in
            :func:`eurosat_lib.config.weights_search_dirs` or downloaded once with
            ``keras.utils.get_file``.
        **backbone_kwargs: constructor options that choose the file (``alpha``, ``minimalistic``).

    Returns:
        The file's path as a string, or None for a random start.

    Raises:
        FileNotFoundError: a path that does not exist.
        WeightsUnavailableError: "imagenet", the file is not on disk and the download failed
            (one attempt); the message names the file, its URL and where to put it.
        ValueError: any other ``weights`` value, unknown backbone or unsupported options.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and weights != "imagenet"):
        path = Path(weights).expanduser()
        if path.is_file():
            return str(path)
        text = str(weights)
        if isinstance(weights, os.PathLike) or os.sep in text or "/" in text or text.endswith((".h5", ".keras")):
            raise FileNotFoundError(f"weights file not found: {path}")
        raise ValueError(f"weights must be None, 'imagenet' or the path of a weights file; got weights={weights!r}")
    if not isinstance(weights, str):
        raise ValueError(f"weights must be None, 'imagenet' or the path of a weights file; got weights={weights!r}")

    spec = get_backbone_spec(backbone)
    wf = spec.weights_file(**backbone_kwargs)
    local = find_local_weights(spec.name, **backbone_kwargs)
    if local is not None:
        return str(local)
    dirs = config.weights_search_dirs()
    try:
        # One attempt, no retries: offline, DNS fails at once and the error below says what to do.
        return keras.utils.get_file(wf.fname, wf.url, cache_subdir="models", file_hash=wf.file_hash)
    except Exception as e:  # noqa: BLE001 - get_file raises bare Exception for network errors
        searched = "\n".join(f"  - {d}" for d in dirs)
        raise WeightsUnavailableError(
            f"ImageNet weights for {spec.name}{describe_kwargs(backbone_kwargs)} are not available: "
            f"'{wf.fname}' is in none of the weights search directories\n{searched}\n"
            f"and downloading it from {wf.url} failed ({type(e).__name__}: {e}).\n"
            f"Fetch that file on a machine with internet access and put it in $EUROSAT_WEIGHTS_DIR "
            f"(any directory; point the variable at it) or in ~/.keras/models, or pass weights=None "
            f"(papermill: -p weights none) to train from scratch."
        ) from e



def _check_backbone_kwargs(spec: BackboneSpec, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bad = [k for k in kwargs if k in RESERVED_KWARGS]
    if bad:
        raise ValueError(f"backbone_kwargs may not set {bad}: build_model/build_backbone set them for {spec.name}")
    kwargs = dict(kwargs)
    params = inspect.signature(spec.build_fn()).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ValueError(f"{spec.constructor} has no argument(s) {unknown}; it accepts {sorted(params)}")
    if spec.preprocessing == "none" and "include_preprocessing" in params:
        if kwargs.get("include_preprocessing", True) is False:
            raise ValueError(
                f"{spec.name} normalises its input inside (include_preprocessing=True); turning that off "
                f"is not supported - use build_model(preprocessing=...) to feed it differently"
            )
        kwargs["include_preprocessing"] = True
    return kwargs


def fold_efficientnet_std(model: keras.Model) -> None:
    """Give a by-path-loaded EfficientNet the normalisation Keras uses for weights="imagenet".

    Keras inserts ``Rescaling(1/sqrt(std))`` after the Normalization layer only when
    ``weights == "imagenet"``; scaling the stored variance by ``std`` is the same operation
    (sqrt(var * std) = sqrt(var) * sqrt(std)) and keeps the layer graph unchanged.

    Args:
        model: An EfficientNet backbone whose weights were loaded from a file.
    """
    norm = next(layer for layer in model.layers if isinstance(layer, layers.Normalization))
    std = np.asarray(IMAGENET_STD, dtype="float32")
    norm.adapt_variance.assign(ops.convert_to_numpy(norm.adapt_variance) * std)
    norm.finalize_state()


def build_backbone(
    name: str, image_size: int, weights: str | os.PathLike | None = "imagenet", **kwargs: Any
) -> keras.Model:
    """The ``keras.applications`` model ``name`` without its top, on ``(image_size, image_size, 3)``.

    Weights are loaded here by path, not by the Keras constructor (see the module docstring),
    and kept in memory per process, so building the same pretrained backbone again is cheap.

    Args:
        name: registry name.
        image_size: input size in pixels (at least the backbone's ``min_size``).
        weights: as in :func:`resolve_weights`.
        **kwargs: further constructor options (``alpha`` ...); not the ones this function sets
            itself (:data:`RESERVED_KWARGS`).

    Returns:
        The backbone, a functional ``keras.Model``.

    Raises:
        CorruptWeightsError: the weights file is empty, cut short or not a weights file (a
            ``ValueError``; the message names the path, and for an official file where to fetch
            it again and its size or checksum).
        ValueError: bad size or options, or a weights file that does not fit the architecture
            (wrong backbone or ``alpha``; the message names the expected file).
        FileNotFoundError: see :func:`resolve_weights`.
    """
    spec = get_backbone_spec(name)
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise ValueError(f"image_size must be an int, got image_size={image_size!r}")
    image_size = int(image_size)
    if image_size < spec.min_size:
        raise ValueError(
            f"image_size={image_size} is too small for {spec.name}: its minimum input size is {spec.min_size} px"
        )
    kwargs = _check_backbone_kwargs(spec, kwargs)
    weights_kwargs = {k: v for k, v in kwargs.items() if k in ("alpha", "minimalistic")}
    path = resolve_weights(spec.name, weights, **weights_kwargs)
    # Weights are loaded by us, not by the constructor: Keras' "imagenet" branch would pick a
    # size-specific MobileNet file and its path branch gives no hint on a mismatch.
    model = spec.build_fn()(include_top=False, weights=None, input_shape=(image_size, image_size, 3), **kwargs)
    if path is None:
        return model
    st = os.stat(path)
    key = (spec.name, tuple(sorted(kwargs.items())), str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    cached = _LOADED_WEIGHTS.get(key)
    if cached is not None and _set_weights_if_they_fit(model, cached):
        return model
    try:
        model.load_weights(path)
    except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
        try:
            official = spec.weights_file(**weights_kwargs)
            expected = f"the official file is {official.fname!r}"
        except ValueError as e2:
            official, expected = None, str(e2)
        # A file that is no weights file at all is damaged, not meant for another architecture.
        problem = weights_file_problem(path, official)
        if problem is not None:
            raise CorruptWeightsError(_corrupt_message(path, problem, official)) from e
        raise ValueError(
            f"weights file {path} does not fit backbone {spec.name}{describe_kwargs(kwargs)} "
            f"({expected}); Keras said: {e}"
        ) from e
    if spec.imagenet_std_fix and Path(path).name == spec.weights_file(**weights_kwargs).fname:
        fold_efficientnet_std(model)
    _LOADED_WEIGHTS[key] = model.get_weights()
    return model


#: (backbone, constructor options, weights file, its mtime and size) -> the loaded weights.
#: Studies build the same pretrained backbone dozens of times per process; reading the HDF5
#: file through Keras' legacy loader costs more than building the layers, copying arrays in
#: almost nothing. A few MB per backbone (ResNet50: 95 MB), kept for the process's life.
_LOADED_WEIGHTS: dict[tuple, list[np.ndarray]] = {}


def _set_weights_if_they_fit(model: keras.Model, weights: list[np.ndarray]) -> bool:
    ws = model.weights
    if len(ws) != len(weights) or any(tuple(w.shape) != a.shape for w, a in zip(ws, weights)):
        return False  # e.g. an input size that changes a weight's shape: load from the file
    model.set_weights(weights)
    return True

