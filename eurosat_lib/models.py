"""Transfer-learning models for EuroSAT: an ImageNet backbone behind a small classification head.

Anatomy of a model from :func:`build_model` (a Keras functional model; the layer NAMES are the
contract other modules rely on, e.g. Grad-CAM, feature caching and run records)::

    image       keras.Input((64, 64, 3), uint8)     raw EuroSAT pixels
    to_float    Rescaling(1.0)                       uint8 -> float 0..255
    augment     keras.Sequential (optional)          label-preserving augmentation, training only
    resize      Resizing(image_size) / Identity      the backbone's input resolution
    preprocess  Preprocess(mode)                     0..255 RGB -> what the ImageNet weights expect
    backbone    nested keras.applications model      include_top=False, maybe truncated
    head_pool   GlobalAveragePooling2D / Max         (B, h, w, C) -> (B, C) features
    head_dropout_i, head_dense_i (optional, i=0..)   extra hidden layers (dropout on their input)
    head_dropout  Dropout (if dropout > 0)
    predictions Dense(num_classes, softmax, float32) float32 even under mixed precision

The model is a plain chain: every layer consumes the previous one's output. Everything needed
to rebuild or describe it lives in layer configs, so a ``.keras`` file reloads (after
``import eurosat_lib.models``, which registers the custom layers) and :func:`describe_model`
works on the reloaded model.

Backbones are described by :class:`BackboneSpec` entries in :data:`BACKBONES`: the Keras
constructor, the preprocessing its ImageNet weights were trained with, the size limits, the
official no-top weights file, and a rule naming its blocks. A *block* is a group of layers a
user recognises in ``backbone.summary()`` (``block_5`` in MobileNetV2, ``conv4_block2`` in
ResNet50, ``mixed7`` in InceptionV3 ...), defined by its END layer: the last layer of the block
in ``backbone.layers`` order, placed where the graph has a clean cut (that layer's output is the
only tensor flowing on). Truncating at a block keeps the backbone up to its end layer;
unfreezing "from" a block makes the block's own layers and everything after trainable.

Weights: ``weights="imagenet"`` looks for the official file in
:func:`eurosat_lib.config.weights_search_dirs` before downloading it, and always hands the file
to Keras as a path. For the MobileNet family the 224-px no-top file is used at every input size
(Keras' own ``weights="imagenet"`` would fetch a size-specific file for 96-192 px inputs; the
convolution weights do not depend on the input size).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eurosat_lib._quiet import quiet_backend_import

# Before Keras: its TensorFlow import would print C++ log lines into notebooks otherwise.
quiet_backend_import()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from eurosat_lib import config  # noqa: E402


def _cache_keras_saving_skipsets() -> None:
    """Make Keras' weight saving about twice as fast (every checkpoint of every run).

    ``keras.src.saving.saving_lib.get_attr_skipset`` (Keras 3.x up to at least 3.15) caches its
    result under ``saving_attr_skipset_<type>`` but looks it up under ``saving_attr_skiplist_<type>``,
    so the cache never hits: each of the ~1,000 objects walked by one ``save_weights`` of
    MobileNetV2 builds a throw-away reference ``Layer()`` and ``dir()``s it (~0.35 s of ~0.7 s per
    save here). The sets depend only on Keras' classes, so a per-process cache is exact.
    """
    try:
        from keras.src.saving import saving_lib
    except ImportError:  # a Keras without this module: nothing to fix
        return
    original = getattr(saving_lib, "get_attr_skipset", None)
    if original is None or getattr(original, "_eurosat_cached", False):
        return
    cached = functools.lru_cache(maxsize=None)(original)
    cached._eurosat_cached = True  # type: ignore[attr-defined]
    saving_lib.get_attr_skipset = cached


_cache_keras_saving_skipsets()

__all__ = [
    "BACKBONES",
    "AUGMENT_POLICIES",
    "PREPROCESSING_MODES",
    "BackboneSpec",
    "BlockRule",
    "HeadConfig",
    "Preprocess",
    "RandomDihedral",
    "WeightsFile",
    "WeightsUnavailableError",
    "block_names",
    "build_backbone",
    "build_model",
    "count_params",
    "describe_model",
    "find_local_weights",
    "get_backbone_spec",
    "list_backbones",
    "make_augmentation",
    "resolve_weights",
    "set_trainable",
    "split_feature_extractor",
    "truncate_backbone",
]

#: EuroSAT RGB images are 64x64; the model input is fixed to this size.
INPUT_SIZE = 64

#: Modes of :class:`Preprocess`. "unit" (x / 255) exists only for the wrong-preprocessing
#: experiment: it is a common mistake, never what an ImageNet backbone expects.
PREPROCESSING_MODES = ("tf", "caffe", "torch", "none", "unit")

AUGMENT_POLICIES = ("flip", "light", "randaugment")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

# Keys build_model/build_backbone set themselves; passing them in backbone_kwargs would
# silently change the model anatomy.
_RESERVED_KWARGS = (
    "include_top", "weights", "input_shape", "input_tensor", "pooling", "classes", "classifier_activation",
)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsFile:
    """An official Keras weights file: where Keras publishes it and its checksum (if any)."""

    fname: str
    url: str
    file_hash: str | None = None


@dataclass(frozen=True)
class BlockRule:
    """How to name a family's blocks from its layer names.

    ``pattern`` is searched in each layer name; its groups, formatted through ``label``, give
    the block a layer belongs to. Layers that match no pattern (auto-named activations, adds,
    shortcut convs) join the block whose end follows them. Layers before the first block form
    ``stem``, layers after the last form ``top`` (``None``: the family has none).
    ``signature`` is a layer-name regex that identifies the family in a bare model.
    """

    pattern: str
    signature: str
    label: str = "{0}"
    stem: str | None = "stem"
    top: str | None = "top"


BLOCK_RULES: dict[str, BlockRule] = {
    # Order matters for signature detection: more specific families first.
    "mobilenet_v2": BlockRule(r"^(expanded_conv|block_\d+)_", signature=r"^block_\d+_expand$"),
    "mobilenet_v3": BlockRule(r"^(expanded_conv(?:_\d+)?)_", signature=r"^expanded_conv_\d+_expand$"),
    # MobileNet v1 block i = conv_pad_i / conv_dw_i* / conv_pw_i*; Keras calls it block_id=i.
    "mobilenet": BlockRule(r"^conv_(?:dw|pw|pad)_(\d+)", label="block_{0}", signature=r"^conv_dw_\d+$"),
    "efficientnet": BlockRule(r"^(block\d+[a-z])_", signature=r"^block1a_"),
    "resnet_v2": BlockRule(r"^(conv\d_block\d+)_", signature=r"^conv2_block1_preact_bn$"),
    "densenet": BlockRule(r"^(conv\d_block\d+|pool\d)_", signature=r"^conv2_block1_concat$"),
    "resnet": BlockRule(r"^(conv\d_block\d+)_", signature=r"^conv2_block1_add$"),
    "convnext": BlockRule(r"_(stage_\d+_block_\d+)_", signature=r"_stage_0_block_0_depthwise_conv$"),
    # Exact names: mixed9_0 / mixed9_1 are inner concatenations of mixed9 and mixed10.
    "inception_v3": BlockRule(r"^(mixed\d+)$", signature=r"^mixed0$", top=None),
    "xception": BlockRule(r"^(block\d+)_", signature=r"^block2_sepconv1$", stem=None, top=None),
    "vgg": BlockRule(r"^(block\d+)_", signature=r"^block1_conv1$", stem=None, top=None),
}


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: constructor, preprocessing, size limits, official weights, block rule.

    ``preprocessing`` is the mode its ImageNet weights expect on 0-255 RGB input: "tf"
    (scale to [-1, 1]), "caffe" (RGB->BGR, minus the ImageNet mean), "torch" (/255, then
    ImageNet mean/std) or "none" (the network normalises inside and expects 0-255).
    ``module`` is the ``keras.applications.<module>`` whose ``preprocess_input`` defines it.
    """

    name: str
    constructor: str
    module: str
    preprocessing: str
    min_size: int
    default_size: int
    family: str
    weights: Callable[..., WeightsFile] = field(repr=False, compare=False)
    #: Keras adds a Rescaling(1/sqrt(std)) to EfficientNet (v1) only for weights="imagenet"
    #: (tensorflow/tensorflow#49930); loading the same file by path needs it folded in.
    imagenet_std_fix: bool = False

    def weights_file(self, **backbone_kwargs: Any) -> WeightsFile:
        """The official ImageNet no-top weights file for these constructor kwargs."""
        return self.weights(**backbone_kwargs)

    def build_fn(self) -> Callable[..., keras.Model]:
        """The ``keras.applications`` constructor."""
        return getattr(keras.applications, self.constructor)

    def preprocess_input(self) -> Callable[..., Any]:
        """``keras.applications.<module>.preprocess_input`` (the reference for this backbone)."""
        return getattr(keras.applications, self.module).preprocess_input

    @property
    def block_rule(self) -> BlockRule:
        return BLOCK_RULES[self.family]


_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _fixed(fname: str, url: str, file_hash: str | None) -> Callable[..., WeightsFile]:
    """Weights rule for backbones whose file does not depend on constructor kwargs."""

    def rule(**kwargs: Any) -> WeightsFile:
        return WeightsFile(fname, url, file_hash)

    return rule


def _check_alpha(name: str, alpha: float, allowed: tuple[float, ...]) -> float:
    alpha = float(alpha)
    if alpha not in allowed:
        raise ValueError(f"{name} has ImageNet weights only for alpha in {allowed}; got alpha={alpha}")
    return alpha


def _mobilenet_weights(alpha: float = 1.0, **kwargs: Any) -> WeightsFile:
    alpha = _check_alpha("MobileNet", alpha, (0.25, 0.5, 0.75, 1.0))
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    # Always the 224 file: same conv weights at every size, and no size-specific download.
    fname = f"mobilenet_{alpha_text}_224_tf_no_top.h5"
    return WeightsFile(fname, _GCS + "mobilenet/" + fname)


def _mobilenet_v2_weights(alpha: float = 1.0, **kwargs: Any) -> WeightsFile:
    alpha = _check_alpha("MobileNetV2", alpha, (0.35, 0.5, 0.75, 1.0, 1.3, 1.4))
    fname = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
    return WeightsFile(fname, _GCS + "mobilenet_v2/" + fname)


_MOBILENET_V3_NOTOP_HASHES = {
    "large_224_0.75_float": "40af19a13ebea4e2ee0c676887f69a2e",
    "large_224_1.0_float": "07fb09a5933dd0c8eaafa16978110389",
    "large_minimalistic_224_1.0_float": "ec5221f64a2f6d1ef965a614bdae7973",
    "small_224_0.75_float": "ebdb5cc8e0b497cd13a7c275d475c819",
    "small_224_1.0_float": "d3e8ec802a04aa4fc771ee12a9a9b836",
    "small_minimalistic_224_1.0_float": "cde8136e733e811080d9fcd8a252f7e4",
}


def _mobilenet_v3_weights(model_type: str) -> Callable[..., WeightsFile]:
    def rule(alpha: float = 1.0, minimalistic: bool = False, **kwargs: Any) -> WeightsFile:
        allowed = (1.0,) if minimalistic else (0.75, 1.0)
        label = f"MobileNetV3{model_type.title()}{' (minimalistic)' if minimalistic else ''}"
        alpha = _check_alpha(label, alpha, allowed)
        key = f"{model_type}{'_minimalistic' if minimalistic else ''}_224_{alpha}_float"
        fname = f"weights_mobilenet_v3_{key}_no_top_v2.h5"
        return WeightsFile(fname, _GCS + "mobilenet_v3/" + fname, _MOBILENET_V3_NOTOP_HASHES[key])

    return rule


def _efficientnet(variant: str, default_size: int, file_hash: str) -> BackboneSpec:
    fname = f"efficientnet{variant}_notop.h5"
    return BackboneSpec(
        name=f"EfficientNet{variant.upper()}",
        constructor=f"EfficientNet{variant.upper()}",
        module="efficientnet",
        preprocessing="none",
        min_size=32,
        default_size=default_size,
        family="efficientnet",
        weights=_fixed(fname, "https://storage.googleapis.com/keras-applications/" + fname, file_hash),
        imagenet_std_fix=True,
    )


def _efficientnet_v2(variant: str, default_size: int, file_hash: str) -> BackboneSpec:
    fname = f"efficientnetv2-{variant}_notop.h5"
    return BackboneSpec(
        name=f"EfficientNetV2{variant.upper()}",
        constructor=f"EfficientNetV2{variant.upper()}",
        module="efficientnet_v2",
        preprocessing="none",
        min_size=32,
        default_size=default_size,
        family="efficientnet",
        weights=_fixed(fname, _GCS + "efficientnet_v2/" + fname, file_hash),
    )


def _simple(
    name: str, module: str, preprocessing: str, family: str, fname: str, url_dir: str, file_hash: str | None,
    min_size: int = 32, default_size: int = 224,
) -> BackboneSpec:
    return BackboneSpec(
        name=name, constructor=name, module=module, preprocessing=preprocessing, min_size=min_size,
        default_size=default_size, family=family, weights=_fixed(fname, _GCS + url_dir + fname, file_hash),
    )


# File names, URLs, hashes, sizes and modes are copied from keras/src/applications/*.py
# (Keras 3.15); tests/test_models.py cross-checks the hashes against the installed Keras.
_SPECS = [
    _efficientnet("b0", 224, "50bc09e76180e00e4465e1a485ddc09d"),
    _efficientnet("b1", 240, "74c4e6b3e1f6a1eea24c589628592432"),
    _efficientnet("b2", 260, "111f8e2ac8aa800a7a99e3239f7bfb39"),
    _efficientnet("b3", 300, "af6d107764bb5b1abb91932881670226"),
    _efficientnet_v2("b0", 224, "893217f2bb855e2983157299931e43ff"),
    _efficientnet_v2("b1", 240, "0e80663031ca32d657f9caa404b6ec37"),
    _efficientnet_v2("b2", 260, "1dfe2e7a5d45b6632553a8961ea609eb"),
    _simple("ResNet50", "resnet50", "caffe", "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "resnet/", "4d473c1dd8becc155b73f8504c6f6626"),
    _simple("ResNet50V2", "resnet_v2", "tf", "resnet_v2", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "resnet/", "fac2f116257151a9d068a22e544a4917"),
    BackboneSpec("MobileNet", "MobileNet", "mobilenet", "tf", 32, 224, "mobilenet", _mobilenet_weights),
    BackboneSpec("MobileNetV2", "MobileNetV2", "mobilenet_v2", "tf", 32, 224, "mobilenet_v2", _mobilenet_v2_weights),
    BackboneSpec("MobileNetV3Small", "MobileNetV3Small", "mobilenet_v3", "none", 32, 224, "mobilenet_v3",
                 _mobilenet_v3_weights("small")),
    BackboneSpec("MobileNetV3Large", "MobileNetV3Large", "mobilenet_v3", "none", 32, 224, "mobilenet_v3",
                 _mobilenet_v3_weights("large")),
    _simple("DenseNet121", "densenet", "torch", "densenet", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "densenet/", "30ee3e1110167f948a6b9946edeeb738"),
    _simple("ConvNeXtTiny", "convnext", "none", "convnext", "convnext_tiny_notop.h5", "convnext/",
            "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
    _simple("Xception", "xception", "tf", "xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "xception/", "b0042744bf5b25fce3cb969f33bebb97", min_size=71, default_size=299),
    _simple("InceptionV3", "inception_v3", "tf", "inception_v3",
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "inception_v3/",
            "bcbd6486424b2319ff4ef7d526e38f63", min_size=75, default_size=299),
    _simple("VGG16", "vgg16", "caffe", "vgg", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg16/",
            "6d6bbae143d832006294945121d1f1fc"),
]

#: All supported backbones by name.
BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in _SPECS}


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    return list(BACKBONES)


def get_backbone_spec(name: str | BackboneSpec) -> BackboneSpec:
    """The registry entry for ``name`` (case-insensitive); unknown names raise ``ValueError``."""
    if isinstance(name, BackboneSpec):
        return name
    if name in BACKBONES:
        return BACKBONES[name]
    by_lower = {k.lower(): k for k in BACKBONES}
    if isinstance(name, str) and name.lower() in by_lower:
        return BACKBONES[by_lower[name.lower()]]
    # difflib.get_close_matches breaks ties by reverse string order; prefer registry order.
    query = str(name).lower()
    scored = [(difflib.SequenceMatcher(None, query, k).ratio(), -i, k) for i, k in enumerate(by_lower)]
    close = [k for r, _, k in sorted(scored, reverse=True)[:3] if r >= 0.6]
    hint = f" Did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    raise ValueError(f"Unknown backbone {name!r}.{hint} Valid backbones: {', '.join(BACKBONES)}")


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


class WeightsUnavailableError(FileNotFoundError):
    """Official weights are neither in the search dirs nor downloadable (e.g. offline)."""


def _describe_kwargs(kwargs: Mapping[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")" if kwargs else ""


def find_local_weights(backbone: str, **backbone_kwargs: Any) -> Path | None:
    """The official ImageNet file for ``backbone`` if already on disk (no download), else None.

    Searches :func:`eurosat_lib.config.weights_search_dirs` in order.
    """
    fname = get_backbone_spec(backbone).weights_file(**backbone_kwargs).fname
    for d in config.weights_search_dirs():
        if (d / fname).is_file():
            return d / fname
    return None


def resolve_weights(backbone: str, weights: str | os.PathLike | None, **backbone_kwargs: Any) -> str | None:
    """The weights file to load for ``backbone``, or ``None`` to train from scratch.

    ``None``/"none" -> ``None``; a path -> that path (must exist); "imagenet" -> the official
    no-top file for ``backbone_kwargs`` (e.g. ``alpha``), found in
    :func:`eurosat_lib.config.weights_search_dirs` or downloaded with ``keras.utils.get_file``.
    A failed download raises :class:`WeightsUnavailableError` at once, naming the file, its URL
    and where to put it.
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
            f"ImageNet weights for {spec.name}{_describe_kwargs(backbone_kwargs)} are not available: "
            f"'{wf.fname}' is in none of the weights search directories\n{searched}\n"
            f"and downloading it from {wf.url} failed ({type(e).__name__}: {e}).\n"
            f"Fetch that file on a machine with internet access and put it in $EUROSAT_WEIGHTS_DIR "
            f"(any directory; point the variable at it) or in ~/.keras/models, or pass weights=None "
            f"(papermill: -p weights none) to train from scratch."
        ) from e


# --------------------------------------------------------------------------------------------
# Backbone construction
# --------------------------------------------------------------------------------------------


def _check_backbone_kwargs(spec: BackboneSpec, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bad = [k for k in kwargs if k in _RESERVED_KWARGS]
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


def _fold_efficientnet_std(model: keras.Model) -> None:
    """Give a by-path-loaded EfficientNet the normalisation Keras uses for weights="imagenet".

    Keras inserts ``Rescaling(1/sqrt(std))`` after the Normalization layer only when
    ``weights == "imagenet"``; scaling the stored variance by ``std`` is the same operation
    (sqrt(var * std) = sqrt(var) * sqrt(std)) and keeps the layer graph unchanged.
    """
    norm = next(layer for layer in model.layers if isinstance(layer, layers.Normalization))
    std = np.asarray(_TORCH_STD, dtype="float32")
    norm.adapt_variance.assign(ops.convert_to_numpy(norm.adapt_variance) * std)
    norm.finalize_state()


def build_backbone(
    name: str, image_size: int, weights: str | os.PathLike | None = "imagenet", **kwargs: Any
) -> keras.Model:
    """The ``keras.applications`` model ``name`` (include_top=False, input (s, s, 3)).

    ``weights`` as in :func:`resolve_weights`. A weights file that does not fit the
    architecture (wrong backbone or ``alpha``) raises ``ValueError`` naming the expected file.
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
            expected = f"the official file is {spec.weights_file(**weights_kwargs).fname!r}"
        except ValueError as e2:
            expected = str(e2)
        raise ValueError(
            f"weights file {path} does not fit backbone {spec.name}{_describe_kwargs(kwargs)} "
            f"({expected}); Keras said: {e}"
        ) from e
    if spec.imagenet_std_fix and Path(path).name == spec.weights_file(**weights_kwargs).fname:
        _fold_efficientnet_std(model)
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


# --------------------------------------------------------------------------------------------
# Blocks and truncation
# --------------------------------------------------------------------------------------------


def _graph_ops(model: keras.Model) -> list[Any]:
    """All operations of a functional model in graph order: layers and bare ops.

    Bare ops matter: ConvNeXt's residual ``inputs + x`` is an operation, not a layer, and a
    block must end after it.
    """
    return list(getattr(model, "operations", None) or model.layers)


def _clean_cuts(model: keras.Model) -> list[int]:
    """Indices ``i`` in :func:`_graph_ops` where only operation ``i``'s output flows on."""
    graph = _graph_ops(model)
    index = {id(op): i for i, op in enumerate(graph)}
    reach = list(range(len(graph)))  # furthest consumer of each operation's output
    for ci, op in enumerate(graph):
        for node in op._inbound_nodes:
            parents = [index.get(id(p.operation)) for p in node.parent_nodes]
            if None in parents:  # a call in another graph (layer shared with another model)
                continue
            for p in parents:
                reach[p] = max(reach[p], ci)
    cuts, furthest = [], 0
    for i in range(len(graph)):
        if furthest <= i:
            cuts.append(i)
        furthest = max(furthest, reach[i])
    return cuts


def _family_of(model: keras.Model) -> str:
    names = [layer.name for layer in model.layers]
    for family, rule in BLOCK_RULES.items():
        if any(re.search(rule.signature, n) for n in names):
            return family
    raise ValueError(f"cannot tell which backbone family model {model.name!r} belongs to; known: {list(BLOCK_RULES)}")


def _block_table(backbone: keras.Model, family: str | None = None) -> list[tuple[str, int, int]]:
    """``[(block name, first index, end index)]`` over :func:`_graph_ops`, covering all but the input."""
    rule = BLOCK_RULES[family or _family_of(backbone)]
    model_layers = _graph_ops(backbone)
    spans: dict[str, list[int]] = {}
    for i, layer in enumerate(model_layers):
        m = re.search(rule.pattern, layer.name)
        if m:
            key = rule.label.format(*m.groups())
            spans.setdefault(key, [i, i])[1] = i
    if not spans:
        raise ValueError(f"no blocks found in {backbone.name!r} with the {family} rule")
    cuts = _clean_cuts(backbone)
    ends: list[tuple[str, int]] = []
    first = next(iter(spans.values()))[0]
    stem_end = max(c for c in cuts if c < first)
    if rule.stem and stem_end >= 1:
        ends.append((rule.stem, stem_end))
    for key, (_, last) in spans.items():
        end = min((c for c in cuts if c >= last), default=len(model_layers) - 1)
        # No clean cut between two blocks: they cannot be separated, the later name absorbs.
        while ends and end <= ends[-1][1]:
            ends.pop()
        ends.append((key, end))
    if ends[-1][1] < len(model_layers) - 1:
        if rule.top:
            ends.append((rule.top, len(model_layers) - 1))
        else:  # trailing layers without a name of their own join the last block
            ends[-1] = (ends[-1][0], len(model_layers) - 1)
    table, start = [], 1
    for key, end in ends:
        table.append((key, start, end))
        start = end + 1
    return table


@functools.lru_cache(maxsize=None)
def _spec_block_names(name: str) -> tuple[str, ...]:
    spec = get_backbone_spec(name)
    model = build_backbone(spec.name, max(spec.min_size, 32), weights=None)
    return tuple(b for b, _, _ in _block_table(model, spec.family))


def _outer_info(model: keras.Model) -> tuple[keras.Model, str | None]:
    """``(backbone, family)`` for a build_model model or a bare backbone."""
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        return model, None
    family = None
    try:
        spec_name = model.get_layer("preprocess").backbone
        if spec_name:
            family = get_backbone_spec(spec_name).family
    except ValueError:
        pass
    return backbone, family


def block_names(backbone: str | keras.Model) -> list[str]:
    """Ordered block names of a backbone (registry name, bare backbone or build_model model).

    For a truncated backbone the list ends at the block it was cut after.
    """
    if isinstance(backbone, (str, BackboneSpec)):
        return list(_spec_block_names(get_backbone_spec(backbone).name))
    bb, family = _outer_info(backbone)
    return [b for b, _, _ in _block_table(bb, family)]


def _pick_block(table: list[tuple[str, int, int]], at: str | float, what: str) -> tuple[str, int, int]:
    names = [b for b, _, _ in table]
    if isinstance(at, str):
        if at not in names:
            raise ValueError(f"unknown block {at!r} for {what}; valid blocks: {', '.join(names)}")
        return table[names.index(at)]
    if isinstance(at, bool) or not isinstance(at, numbers.Real) or not 0 < at <= 1:
        raise ValueError(f"{what} must be a block name or a fraction in (0, 1]; got {at!r}")
    k = max(1, math.ceil(round(float(at) * len(table), 9))) - 1
    return table[k]


def truncate_backbone(backbone: keras.Model, at: str | float, family: str | None = None) -> keras.Model:
    """``backbone`` cut after block ``at`` (a block name, or a fraction of the block list).

    The result shares layers (and weights) with ``backbone``; fraction 1.0 returns the full
    backbone.
    """
    table = _block_table(backbone, family)
    _, _, end = _pick_block(table, at, "truncate_at")
    graph = _graph_ops(backbone)
    if end == len(graph) - 1:
        return backbone
    return keras.Model(backbone.inputs[0], graph[end].output, name=backbone.name)


# --------------------------------------------------------------------------------------------
# Custom layers
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="eurosat_lib")
class Preprocess(layers.Layer):
    """Map float 0-255 RGB to what a backbone's ImageNet weights expect.

    ``mode``: "tf" -> [-1, 1]; "caffe" -> BGR minus the ImageNet mean; "torch" -> /255 then
    ImageNet mean/std; "none" -> unchanged (the backbone normalises inside); "unit" -> /255
    (a deliberate mistake for experiments). Matches ``keras.applications.*.preprocess_input``.
    ``backbone`` records which registry backbone this feeds (used by :func:`describe_model`).
    """

    def __init__(self, mode: str, backbone: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"Preprocess mode must be one of {PREPROCESSING_MODES}; got {mode!r}")
        self.mode = mode
        self.backbone = backbone

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
        std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
        return (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "backbone": self.backbone}


@keras.saving.register_keras_serializable(package="eurosat_lib")
class RandomDihedral(layers.Layer):
    """Random element of the dihedral group D4 per image: flips and a transpose (training only).

    Overhead imagery has no canonical "up", so all 8 symmetries of the square preserve the
    label. Expects channels-last batches; the transpose is skipped for non-square images.
    """

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training:
            return inputs
        x = inputs
        u = keras.random.uniform((ops.shape(x)[0], 3), seed=self.seed_generator)

        def where(col: int, a: Any, b: Any) -> Any:
            return ops.where(ops.reshape(u[:, col] < 0.5, (-1, 1, 1, 1)), a, b)

        x = where(0, ops.flip(x, axis=2), x)
        x = where(1, ops.flip(x, axis=1), x)
        if x.shape[1] is not None and x.shape[1] == x.shape[2]:
            x = where(2, ops.transpose(x, (0, 2, 1, 3)), x)
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


def make_augmentation(policy: str, seed: int | None = None, name: str = "augment") -> keras.Sequential:
    """The augmentation block for ``policy`` ("flip", "light" or "randaugment"), on 0-255 floats."""
    # keras-cv 0.9's RandAugment breaks inside a functional model's fit and its layers are
    # TF-only; Keras core layers keep the model backend-agnostic (JAX GPU runs).
    def s(k: int) -> int | None:
        return None if seed is None else seed + k

    if policy == "flip":
        aug = [RandomDihedral(seed=s(0), name="dihedral")]
    elif policy == "light":
        aug = [
            RandomDihedral(seed=s(0), name="dihedral"),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=s(1), name="translate"),
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=s(2), name="brightness"),
            layers.RandomContrast(0.1, value_range=(0, 255), seed=s(3), name="contrast"),
        ]
    elif policy == "randaugment":
        aug = [
            RandomDihedral(seed=s(0), name="dihedral"),
            layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=s(1), name="randaugment"),
        ]
    else:
        raise ValueError(f"augment must be None or one of {AUGMENT_POLICIES}; got {policy!r}")
    return keras.Sequential(aug, name=name)


# --------------------------------------------------------------------------------------------
# Full model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadConfig:
    """Classification head: pooling ("avg"/"max"), extra ReLU dense layers, dropout rate."""

    pooling: str = "avg"
    dense_units: tuple[int, ...] = ()
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.pooling not in ("avg", "max"):
            raise ValueError(f"HeadConfig.pooling must be 'avg' or 'max'; got {self.pooling!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"HeadConfig.dropout must be in [0, 1); got {self.dropout}")
        units = tuple(int(u) for u in self.dense_units)
        if any(u <= 0 for u in units):
            raise ValueError(f"HeadConfig.dense_units must be positive; got {self.dense_units}")
        object.__setattr__(self, "dense_units", units)


def build_model(
    backbone: str = "MobileNetV2",
    *,
    weights: str | os.PathLike | None = "imagenet",
    image_size: int | None = None,
    num_classes: int = 10,
    augment: str | None = None,
    head: HeadConfig = HeadConfig(),
    truncate_at: str | float | None = None,
    preprocessing: str = "auto",
    freeze_bn: bool | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    name: str | None = None,
) -> keras.Model:
    """A EuroSAT classifier: uint8 64x64 images -> ``num_classes`` softmax probabilities.

    ``image_size`` (default: the backbone's ImageNet size) is what images are resized to.
    ``preprocessing="auto"`` uses the backbone's own mode; others are for experiments.
    ``freeze_bn`` (default: pretrained) keeps BatchNormalization in inference mode even when
    the backbone is unfrozen: BN layers stay non-trainable (pass the same ``freeze_bn`` to
    :func:`set_trainable` later) and the backbone is called with ``training=False``.
    Pretrained backbones start frozen, from-scratch ones trainable; change that with
    :func:`set_trainable` (then re-compile). ``seed`` seeds augmentation.
    """
    spec = get_backbone_spec(backbone)
    size = spec.default_size if image_size is None else image_size
    kwargs = dict(backbone_kwargs or {})
    if preprocessing == "auto":
        mode = spec.preprocessing
    elif preprocessing in PREPROCESSING_MODES:
        mode = preprocessing
    else:
        raise ValueError(f"preprocessing must be 'auto' or one of {PREPROCESSING_MODES}; got {preprocessing!r}")
    if not isinstance(head, HeadConfig):
        raise ValueError(f"head must be a HeadConfig; got {head!r}")
    if augment is not None and augment not in AUGMENT_POLICIES:
        raise ValueError(f"augment must be None or one of {AUGMENT_POLICIES}; got {augment!r}")
    weights_kwargs = {k: v for k, v in kwargs.items() if k in ("alpha", "minimalistic")}
    weights_path = resolve_weights(spec.name, weights, **weights_kwargs)
    pretrained = weights_path is not None
    if freeze_bn is None:
        freeze_bn = pretrained

    bb = build_backbone(spec.name, size, weights_path, **kwargs)
    if truncate_at is not None:
        bb = truncate_backbone(bb, truncate_at, spec.family)
    # Re-wrap under the contract name; the layers (and loaded weights) are shared.
    bb = keras.Model(bb.inputs[0], bb.outputs[0], name="backbone")

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    if augment is not None:
        x = make_augmentation(augment, seed)(x)
    if size == INPUT_SIZE:
        x = layers.Identity(name="resize")(x)
    else:
        x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    x = Preprocess(mode, backbone=spec.name, name="preprocess")(x)
    # The Keras transfer-learning recipe. Caveat: Keras 3 lets an explicit training=True (as
    # fit passes) override this stored flag (keras-team/keras#20285), so what really keeps BN in
    # inference mode during fit is BN.trainable=False, which set_trainable(freeze_bn=True) keeps.
    x = bb(x, training=False) if freeze_bn else bb(x)
    outputs = _head(x, head, num_classes)
    model = keras.Model(inputs, outputs, name=name or f"eurosat_{spec.name.lower()}")
    set_trainable(model, "frozen" if pretrained else "all", freeze_bn=freeze_bn)
    return model


# --------------------------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------------------------


def _all_sublayers(layer: Any) -> list[Any]:
    out = []
    for sub in getattr(layer, "layers", []):
        out.append(sub)
        out.extend(_all_sublayers(sub))
    return out


def _is_head(layer: Any) -> bool:
    return layer.name.startswith("head_") or layer.name == "predictions"


def set_trainable(model: keras.Model, policy: str | int, freeze_bn: bool = True) -> keras.Model:
    """Choose which backbone layers train; the head always trains. Returns ``model``.

    ``policy``: "frozen" (no backbone layer), "all", an int N (the last N layers of
    ``backbone.layers``) or a block name (that block and everything after it, see
    :func:`block_names`). With ``freeze_bn`` every BatchNormalization layer stays
    non-trainable, which in Keras 3 also makes it run in inference mode. Trainability is read
    when a model is compiled: call ``model.compile(...)`` again after changing it.
    """
    backbone, family = _outer_info(model)
    bb_layers = backbone.layers
    n = len(bb_layers)
    if policy == "frozen":
        trainable = [False] * n
    elif policy == "all":
        trainable = [True] * n
    elif isinstance(policy, numbers.Integral) and not isinstance(policy, bool):
        if policy < 0:
            raise ValueError(f"policy as an int must be >= 0; got {policy}")
        trainable = [i >= n - int(policy) for i in range(n)]
    elif isinstance(policy, str):
        _, start, _ = _pick_block(_block_table(backbone, family), policy, "set_trainable policy")
        position = {id(op): i for i, op in enumerate(_graph_ops(backbone))}
        trainable = [position[id(layer)] >= start for layer in bb_layers]
    else:
        raise ValueError(f"policy must be 'frozen', 'all', an int or a block name; got {policy!r}")

    model.trainable = True  # propagates to every sublayer; the loops below narrow it down
    if backbone is not model:
        for layer in model.layers:
            if layer is not backbone and not _is_head(layer):
                layer.trainable = True
    for layer, flag in zip(bb_layers, trainable):
        layer.trainable = flag
    if freeze_bn:
        for layer in _all_sublayers(backbone):
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    for layer in model.layers:
        if _is_head(layer):
            layer.trainable = True
    return model


def count_params(model: keras.Model) -> dict[str, int]:
    """``{"trainable", "non_trainable", "total"}`` parameter counts (as the model is now)."""
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(math.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


# --------------------------------------------------------------------------------------------
# Feature caching and description
# --------------------------------------------------------------------------------------------


def split_feature_extractor(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(extractor, head)`` with ``head(extractor(x)) == model(x)``.

    ``extractor`` maps images to the pooled features (output of ``head_pool``); augmentation
    is inactive at inference so cached features are the clean ones. ``head`` maps features to
    probabilities through the SAME layer objects as ``model``: training it on cached features
    trains ``model``'s head in place.
    """
    pool = model.get_layer("head_pool")
    extractor = keras.Model(model.inputs[0], pool.output, name=f"{model.name}_features")
    after = model.layers[model.layers.index(pool) + 1 :]
    feats = keras.Input((pool.output.shape[-1],), name="features")
    x = feats
    for layer in after:
        x = layer(x)
    return extractor, keras.Model(feats, x, name=f"{model.name}_head")


def describe_model(model: keras.Model) -> dict[str, Any]:
    """A JSON-serialisable summary for run records: backbone, sizes, preprocessing, params."""
    backbone, family = _outer_info(model)
    prep = model.get_layer("preprocess")
    spec = get_backbone_spec(prep.backbone) if prep.backbone else None
    table = _block_table(backbone, family)
    last_block = table[-1][0]
    full = block_names(spec.name) if spec else None
    pool = model.get_layer("head_pool")
    dense = [layer.units for layer in model.layers if layer.name.startswith("head_dense_")]
    try:
        dropout = float(model.get_layer("head_dropout").rate)
    except ValueError:
        dropout = 0.0
    try:
        augment = [layer.name for layer in model.get_layer("augment").layers]
    except ValueError:
        augment = None
    bb_params = count_params(backbone)
    bns = [layer for layer in _all_sublayers(backbone) if isinstance(layer, layers.BatchNormalization)]
    return {
        "backbone": spec.name if spec else backbone.name,
        "input_size": int(model.inputs[0].shape[1]),
        "image_size": int(backbone.inputs[0].shape[1]),
        "preprocessing": prep.mode,
        "expected_preprocessing": spec.preprocessing if spec else None,
        "truncated_at": None if full is None or last_block == full[-1] else last_block,
        "blocks": len(table),
        "backbone_output": _graph_ops(backbone)[-1].name,
        "feature_dim": int(pool.output.shape[-1]),
        "augment": augment,
        "head": {
            "pooling": "avg" if isinstance(pool, layers.GlobalAveragePooling2D) else "max",
            "dense_units": dense,
            "dropout": dropout,
        },
        "num_classes": int(model.get_layer("predictions").units),
        "bn_frozen": bool(bns) and all(not layer.trainable for layer in bns),
        "backbone_trainable_layers": sum(1 for layer in backbone.layers if layer.trainable and layer.weights),
        "params": count_params(model),
        "backbone_params": bb_params,
    }


# --------------------------------------------------------------------------------------------
# A small CNN trained from scratch (the baseline of chapter 1)
# --------------------------------------------------------------------------------------------


def _head(x: Any, head: HeadConfig, num_classes: int) -> Any:
    """The classification head on a backbone's feature map: pooling, dense layers, softmax."""
    from keras import layers

    if head.pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    else:
        x = layers.GlobalMaxPooling2D(name="head_pool")(x)
    for i, units in enumerate(head.dense_units):
        # Dropout on each dense layer's input, so the last one is not followed by two dropouts.
        if head.dropout > 0:
            x = layers.Dropout(head.dropout, name=f"head_dropout_{i}")(x)
        x = layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
    if head.dropout > 0:
        x = layers.Dropout(head.dropout, name="head_dropout")(x)
    # float32 output even under mixed precision: softmax and the loss need the range.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def build_small_cnn(
    num_classes: int = 10,
    *,
    filters: tuple[int, ...] = (32, 64, 128, 128),
    augment: str | None = None,
    head: HeadConfig = HeadConfig(),
    seed: int | None = None,
    bn_momentum: float | None = None,
    name: str = "eurosat_small_cnn",
) -> keras.Model:
    """A small plain CNN for uint8 64x64 EuroSAT images, trained from scratch.

    Same contract as :func:`build_model` (``image`` -> ``to_float`` -> optional ``augment`` ->
    ``resize`` (identity) -> ``preprocess`` ("unit": x / 255, the usual choice from scratch)
    -> nested ``backbone`` -> ``head_pool`` ... ``predictions``), so training, feature caching,
    Grad-CAM and :func:`describe_model` work unchanged. The backbone is ``len(filters)`` blocks
    ``block<i>_conv`` (3x3) -> ``block<i>_bn`` -> ``block<i>_relu``, with 2x2 max-pooling
    (``block<i>_pool``) after every block but the last, so it ends in the last conv feature
    map; its layer names follow the VGG block rule, so :func:`block_names` and
    :func:`set_trainable` policies by block work too. Built fully trainable. BatchNorm momentum
    defaults to :data:`SCRATCH_BN_MOMENTUM` (Keras' 0.99 lags behind in short runs).
    """
    momentum = SCRATCH_BN_MOMENTUM if bn_momentum is None else float(bn_momentum)
    filters = tuple(int(f) for f in filters)
    if not filters or any(f <= 0 for f in filters):
        raise ValueError(f"filters must be a non-empty tuple of positive ints; got {filters!r}")
    if not isinstance(head, HeadConfig):
        raise ValueError(f"head must be a HeadConfig; got {head!r}")
    if augment is not None and augment not in AUGMENT_POLICIES:
        raise ValueError(f"augment must be None or one of {AUGMENT_POLICIES}; got {augment!r}")
    bb_in = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="backbone_input")
    x = bb_in
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{i}_conv1")(x)
        x = layers.BatchNormalization(momentum=momentum, name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        if i < len(filters):
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    backbone = keras.Model(bb_in, x, name="backbone")

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    if augment is not None:
        x = make_augmentation(augment, seed)(x)
    x = layers.Identity(name="resize")(x)
    x = Preprocess("unit", backbone=None, name="preprocess")(x)
    x = backbone(x)
    outputs = _head(x, head, num_classes)
    model = keras.Model(inputs, outputs, name=name)
    set_trainable(model, "all", freeze_bn=False)
    return model


#: BatchNorm momentum for networks trained from scratch in short runs. Keras' MobileNets use
#: 0.999, tuned for long ImageNet schedules: after a few hundred steps their moving statistics
#: are still mostly the initial (0, 1) and the model in inference mode predicts one class for
#: everything (train accuracy rises, validation stays at chance). Measured here: 0.99 still gave
#: chance validation accuracy after 470 steps at 64 px; 0.9 catches up within ~50 steps.
SCRATCH_BN_MOMENTUM = 0.9


def set_bn_momentum(model: Any, momentum: float = SCRATCH_BN_MOMENTUM) -> int:
    """Set ``momentum`` on every BatchNormalization layer of ``model`` (nested ones included).

    Returns how many layers changed. Record the value in the run's spec (e.g. its tags) so the
    run folder says what was trained.
    """
    import keras

    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum != momentum:
            layer.momentum = float(momentum)
            changed += 1
    return changed
