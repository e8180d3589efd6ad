"""Which layers train: freezing policies, BatchNorm handling, parameter counts."""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
from keras import layers

from .blocks import backbone_and_family, block_table, graph_ops, pick_block

#: BatchNorm momentum for networks trained from scratch in short runs. Keras' MobileNets use
#: 0.999, tuned for long ImageNet schedules: after a few hundred steps their moving statistics
#: are still mostly the initial (0, 1) and the model in inference mode predicts one class for
#: everything (train accuracy rises, validation stays at chance). Measured here: 0.99 still gave
#: chance validation accuracy after 470 steps at 64 px; 0.9 catches up within ~50 steps.
SCRATCH_BN_MOMENTUM = 0.9


def set_bn_momentum(model: Any, momentum: float = SCRATCH_BN_MOMENTUM) -> int:
    """Set ``momentum`` on every BatchNormalization layer of ``model`` (nested ones included).

    Record the value in the run's spec (e.g. its tags) so the run folder says what was trained.

    Args:
        model: any Keras model.
        momentum: the moving-statistics momentum.

    Returns:
        How many layers changed.
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum != momentum:
            layer.momentum = float(momentum)
            changed += 1
    return changed


def all_sublayers(layer: Any) -> list[Any]:
    """Every layer nested in ``layer``, depth first (the nested backbone's own layers too).

    Args:
        layer: A layer or model.

    Returns:
        The nested layers (not ``layer`` itself).
    """
    out = []
    for sub in getattr(layer, "layers", []):
        out.append(sub)
        out.extend(all_sublayers(sub))
    return out


def _is_head(layer: Any) -> bool:
    return layer.name.startswith("head_") or layer.name == "predictions"


def set_trainable(model: keras.Model, policy: str | int, freeze_bn: bool = True) -> keras.Model:
    """Choose which backbone layers train; the head always trains.

    Trainability is read when a model is compiled: call ``model.compile(...)`` again after
    changing it.

    Args:
        model: a :func:`build_model` model, or a bare backbone.
        policy: "frozen" (no backbone layer), "all", an int N (the last N layers of
            ``backbone.layers``) or a block name (that block and everything after it, see
            :func:`block_names`).
        freeze_bn: keep every BatchNormalization layer non-trainable, which in Keras 3 also
            makes it run in inference mode (the fine-tuning recipe for pretrained bases).

    Returns:
        ``model``, changed in place.

    Raises:
        ValueError: a negative int, an unknown block name or any other policy.
    """
    backbone, family = backbone_and_family(model)
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
        _, start, _ = pick_block(block_table(backbone, family), policy, "set_trainable policy")
        position = {id(op): i for i, op in enumerate(graph_ops(backbone))}
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
        for layer in all_sublayers(backbone):
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    for layer in model.layers:
        if _is_head(layer):
            layer.trainable = True
    return model


def count_params(model: keras.Model) -> dict[str, int]:
    """Parameter counts of ``model`` as it is now (trainability included).

    Args:
        model: any Keras model.

    Returns:
        ``{"trainable": ..., "non_trainable": ..., "total": ...}``.
    """
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(math.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}

