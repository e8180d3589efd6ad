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

The package, one module per seam (everything public is importable from ``eurosat_lib.models``):

* :mod:`.registry` — :class:`BackboneSpec` per backbone in :data:`BACKBONES`: Keras constructor,
  preprocessing of its ImageNet weights, size limits, official no-top weights file, block rule.
* :mod:`.weights` — finding, fetching and loading the official weights; :func:`build_backbone`.
* :mod:`.blocks` — naming a backbone's blocks, :func:`truncate_backbone`.
* :mod:`.layers` — :class:`Preprocess`, :class:`RandomDihedral`, :func:`make_augmentation`.
* :mod:`.freezing` — :func:`set_trainable`, BatchNorm momentum, :func:`count_params`.
* :mod:`.assembly` — :func:`build_model`, :func:`build_small_cnn`, the head, :func:`describe_model`.
"""

from __future__ import annotations

import functools

from .._quiet import quiet_backend_import

# Before Keras: its TensorFlow import would print C++ log lines into notebooks otherwise.
quiet_backend_import()

from ..data import IMAGE_SIZE as INPUT_SIZE  # noqa: E402  (the 64 px input; data owns the fact)
from .assembly import (  # noqa: E402
    HeadConfig,
    build_head,
    build_model,
    build_small_cnn,
    describe_model,
    split_feature_extractor,
)
from .blocks import (  # noqa: E402
    backbone_and_family,
    block_names,
    block_table,
    clean_cuts,
    graph_ops,
    pick_block,
    truncate_backbone,
)
from .freezing import SCRATCH_BN_MOMENTUM, all_sublayers, count_params, set_bn_momentum, set_trainable  # noqa: E402
from .layers import (  # noqa: E402
    AUGMENT_POLICIES,
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSING_MODES,
    Preprocess,
    RandomDihedral,
    make_augmentation,
)
from .registry import (  # noqa: E402
    BACKBONES,
    BLOCK_RULES,
    KNOWN_FILES,
    BackboneSpec,
    BlockRule,
    WeightsFile,
    describe_kwargs,
    get_backbone_spec,
    list_backbones,
)
from .weights import (  # noqa: E402
    RESERVED_KWARGS,
    CorruptWeightsError,
    WeightsUnavailableError,
    build_backbone,
    find_local_weights,
    fold_efficientnet_std,
    resolve_weights,
    weights_file_problem,
)


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
    "AUGMENT_POLICIES",
    "BACKBONES",
    "BLOCK_RULES",
    "CAFFE_MEAN_BGR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SIZE",
    "KNOWN_FILES",
    "PREPROCESSING_MODES",
    "RESERVED_KWARGS",
    "SCRATCH_BN_MOMENTUM",
    "BackboneSpec",
    "BlockRule",
    "CorruptWeightsError",
    "HeadConfig",
    "Preprocess",
    "RandomDihedral",
    "WeightsFile",
    "WeightsUnavailableError",
    "all_sublayers",
    "backbone_and_family",
    "block_names",
    "block_table",
    "build_backbone",
    "build_head",
    "build_model",
    "build_small_cnn",
    "clean_cuts",
    "count_params",
    "describe_kwargs",
    "describe_model",
    "find_local_weights",
    "fold_efficientnet_std",
    "get_backbone_spec",
    "graph_ops",
    "list_backbones",
    "make_augmentation",
    "pick_block",
    "resolve_weights",
    "set_bn_momentum",
    "set_trainable",
    "split_feature_extractor",
    "truncate_backbone",
    "weights_file_problem",
]
