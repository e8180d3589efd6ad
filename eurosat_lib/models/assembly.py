"""The whole model: backbone, head and the layers around them; its description for run records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from ..data import IMAGE_SIZE
from .blocks import backbone_and_family, block_names, block_table, graph_ops, truncate_backbone
from .freezing import SCRATCH_BN_MOMENTUM, all_sublayers, count_params, set_trainable
from .layers import AUGMENT_POLICIES, PREPROCESSING_MODES, Preprocess, make_augmentation
from .registry import get_backbone_spec
from .weights import build_backbone, resolve_weights


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

    The layers are named as the package docstring shows; other modules rely on those names.
    Pretrained backbones start frozen, from-scratch ones trainable; change that with
    :func:`set_trainable` (then re-compile).

    Args:
        backbone: registry name (see :func:`list_backbones`).
        weights: "imagenet", None (random init) or the path of a weights file
            (see :func:`resolve_weights`).
        image_size: size images are resized to; default the backbone's ImageNet size.
        num_classes: outputs of the softmax layer.
        augment: None or an augmentation policy of :func:`make_augmentation`.
        head: pooling, hidden layers and dropout of the head.
        truncate_at: None, or where to cut the backbone (see :func:`truncate_backbone`).
        preprocessing: "auto" (the backbone's own mode) or a :data:`PREPROCESSING_MODES`
            entry (for experiments).
        freeze_bn: keep BatchNormalization in inference mode even when the backbone is
            unfrozen: BN layers stay non-trainable (pass the same value to
            :func:`set_trainable` later) and the backbone is called with ``training=False``.
            Default: True for pretrained weights, False from scratch.
        backbone_kwargs: further constructor options (``alpha`` ...).
        seed: seed of the augmentation layers.
        name: the model's name; default ``eurosat_<backbone>``.

    Returns:
        An uncompiled functional ``keras.Model``.

    Raises:
        ValueError: unknown backbone, preprocessing, augmentation or truncation point, a
            ``head`` that is not a :class:`HeadConfig`, bad backbone options, or a weights file
            that does not fit.
        FileNotFoundError: the weights cannot be found or fetched (see :func:`resolve_weights`).
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

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    if augment is not None:
        x = make_augmentation(augment, seed)(x)
    if size == IMAGE_SIZE:
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



def split_feature_extractor(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Split a :func:`build_model` model at ``head_pool`` for training on cached features.

    Args:
        model: a :func:`build_model` or :func:`build_small_cnn` model.

    Returns:
        ``(extractor, head)`` with ``head(extractor(x)) == model(x)``. ``extractor`` maps images
        to the pooled features (augmentation is inactive at inference, so cached features are
        the clean ones). ``head`` maps features to probabilities through the SAME layer objects
        as ``model``: training it on cached features trains ``model``'s head in place.
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
    """A JSON-serialisable summary for run records.

    Args:
        model: a :func:`build_model` or :func:`build_small_cnn` model (also after reloading).

    Returns:
        Backbone, input and image sizes, preprocessing (used and expected), truncation point,
        block count, head, BatchNorm state, trainable layers and parameter counts.
    """
    backbone, family = backbone_and_family(model)
    prep = model.get_layer("preprocess")
    spec = get_backbone_spec(prep.backbone) if prep.backbone else None
    table = block_table(backbone, family)
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
    bns = [layer for layer in all_sublayers(backbone) if isinstance(layer, layers.BatchNormalization)]
    return {
        "backbone": spec.name if spec else backbone.name,
        "input_size": int(model.inputs[0].shape[1]),
        "image_size": int(backbone.inputs[0].shape[1]),
        "preprocessing": prep.mode,
        "expected_preprocessing": spec.preprocessing if spec else None,
        "truncated_at": None if full is None or last_block == full[-1] else last_block,
        "blocks": len(table),
        "backbone_output": graph_ops(backbone)[-1].name,
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



def _head_layers(x: Any, head: HeadConfig, num_classes: int) -> Any:
    """Dense layers, dropout and softmax of the head, on pooled features."""
    for i, units in enumerate(head.dense_units):
        # Dropout on each dense layer's input, so the last one is not followed by two dropouts.
        if head.dropout > 0:
            x = layers.Dropout(head.dropout, name=f"head_dropout_{i}")(x)
        x = layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
    if head.dropout > 0:
        x = layers.Dropout(head.dropout, name="head_dropout")(x)
    # float32 output even under mixed precision: softmax and the loss need the range.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def _head(x: Any, head: HeadConfig, num_classes: int) -> Any:
    """The classification head on a backbone's feature map: pooling, dense layers, softmax."""
    if head.pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    else:
        x = layers.GlobalMaxPooling2D(name="head_pool")(x)
    return _head_layers(x, head, num_classes)


def build_head(feature_dim: int, head: HeadConfig = HeadConfig(), num_classes: int = 10, name: str = "head") -> keras.Model:
    """The classification head alone, on pooled features: the layers :func:`build_model` puts
    after ``head_pool``, for heads trained on a cached feature matrix.

    Args:
        feature_dim: length of a feature vector (the backbone's channel count).
        head: hidden layers and dropout (its ``pooling`` does not apply: features are pooled).
        num_classes: outputs of the softmax layer.
        name: the model's name.

    Returns:
        A ``keras.Model`` mapping ``(batch, feature_dim)`` features to class probabilities.
    """
    inputs = keras.Input((int(feature_dim),), name="features")
    return keras.Model(inputs, _head_layers(inputs, head, num_classes), name=name)


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
    :func:`set_trainable` policies by block work too. Built fully trainable.

    Args:
        num_classes: outputs of the softmax layer.
        filters: output channels of each block.
        augment: None or an augmentation policy of :func:`make_augmentation`.
        head: pooling, hidden layers and dropout of the head.
        seed: seed of the augmentation layers.
        bn_momentum: BatchNorm momentum; default :data:`SCRATCH_BN_MOMENTUM` (Keras' 0.99 lags
            behind in short runs).
        name: the model's name.

    Returns:
        An uncompiled functional ``keras.Model``.

    Raises:
        ValueError: empty or non-positive ``filters``, a ``head`` that is not a
            :class:`HeadConfig`, or an unknown ``augment`` policy.
    """
    momentum = SCRATCH_BN_MOMENTUM if bn_momentum is None else float(bn_momentum)
    filters = tuple(int(f) for f in filters)
    if not filters or any(f <= 0 for f in filters):
        raise ValueError(f"filters must be a non-empty tuple of positive ints; got {filters!r}")
    if not isinstance(head, HeadConfig):
        raise ValueError(f"head must be a HeadConfig; got {head!r}")
    if augment is not None and augment not in AUGMENT_POLICIES:
        raise ValueError(f"augment must be None or one of {AUGMENT_POLICIES}; got {augment!r}")
    bb_in = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="backbone_input")
    x = bb_in
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{i}_conv1")(x)
        x = layers.BatchNormalization(momentum=momentum, name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        if i < len(filters):
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    backbone = keras.Model(bb_in, x, name="backbone")

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8", name="image")
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


