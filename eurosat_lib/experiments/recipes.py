"""Recipes several chapters share: how deep to unfreeze, the two-phase fine-tuning recipe, and
the ``model_fn`` that gives networks trained from scratch a BatchNorm momentum that settles.

Chapters never import each other (a test parses their imports); what two of them use lives
here, below them and above :mod:`.core` and :mod:`.params`. The BatchNorm momentum itself is
a fact about the model, so it is defined once, in :data:`eurosat_lib.models.SCRATCH_BN_MOMENTUM`.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, Callable

from .. import models as M
from .. import training as T
from .core import ExperimentSpec, build_from_spec
from .params import backbone_kwargs

#: Tag key under which a run records the BatchNorm momentum its ``model_fn`` set.
BN_MOMENTUM_TAG = "bn_momentum"

#: Fine-tuning epochs without a better watched validation accuracy before a fine-tune stops (its
#: best weights restored), as in chapter 3's crossover study's fine-tuned arms (cpu profile).
FINETUNE_PATIENCE = 3


def until_plateau(phase: T.PhaseConfig) -> T.PhaseConfig:
    """``phase`` with the crossover's fine-tuned schedule: cosine decay to 0 over its epoch cap, and
    early stopping after :data:`FINETUNE_PATIENCE` epochs without a better validation accuracy.

    A short constant-rate fine-tune stops wherever its epoch count says: the first fine-tuning
    epochs knock validation accuracy down (the unfrozen layers move) and the rest climb back, so
    two or three epochs measure that budget, not the backbone (chapters 5 and 6's first cpu runs
    were flagged "not converged" for that reason). Watching accuracy, not loss, because a
    fine-tune can grow more confident (higher loss on its errors) while it gets more images right.

    Args:
        phase: A fine-tuning phase (its ``epochs`` become the cap).

    Returns:
        The same phase with ``schedule="cosine"`` and the early stopping above.
    """
    return dataclasses.replace(phase, schedule="cosine", early_stopping=FINETUNE_PATIENCE,
                               early_stopping_monitor="val_accuracy")  # fmt: skip


def model_fields(P: SimpleNamespace) -> dict[str, Any]:
    """The :class:`.core.ExperimentSpec` fields naming the model the notebook parameters describe.

    Args:
        P: resolved notebook parameters (``backbone``, ``alpha``, ``weights``, ``image_size``).

    Returns:
        ``backbone``, ``backbone_kwargs`` (its ``alpha`` where it takes one), ``weights`` and
        ``image_size``, to unpack into ``ExperimentSpec(...)``.
    """
    return dict(backbone=P.backbone, backbone_kwargs=backbone_kwargs(P.backbone, P.alpha), weights=P.weights,
                image_size=P.image_size)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Networks trained from scratch
# --------------------------------------------------------------------------------------------


def scratch_model_fn(num_classes: int = 10) -> Callable[[ExperimentSpec], Any]:
    """A ``model_fn`` for :func:`.core.run`: the spec's model with the spec's BatchNorm momentum.

    The momentum is read from ``spec.tags["bn_momentum"]`` (default
    :data:`eurosat_lib.models.SCRATCH_BN_MOMENTUM`), so the run folder records what was
    trained. Use it for every run whose BatchNorm layers train from a random start: Keras'
    MobileNets keep 0.999, which never settles in a short run (see the constant for why).

    Args:
        num_classes: outputs of the classification head.

    Returns:
        A function ``spec -> keras.Model``.
    """

    def build(spec: ExperimentSpec) -> Any:
        model = build_from_spec(spec, num_classes)
        M.set_bn_momentum(model, float(spec.tags.get(BN_MOMENTUM_TAG, M.SCRATCH_BN_MOMENTUM)))
        return model

    return build


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


def unfreeze_policy(backbone: str, fraction: float) -> str:
    """The ``set_trainable`` policy that unfreezes the top ``fraction`` of a backbone's blocks.

    Args:
        backbone: registry name (see :func:`eurosat_lib.models.list_backbones`).
        fraction: share of the blocks to unfreeze, counted from the top. 0 (or less) keeps the
            base frozen (only the head trains), 1 (or more) unfreezes everything; in between,
            the first block of the top ``round(fraction * n_blocks)`` blocks (at least one).

    Returns:
        ``"frozen"``, ``"all"`` or a block name, as :func:`eurosat_lib.models.set_trainable` takes.

    Raises:
        ValueError: ``backbone`` is not in the registry.
    """
    if fraction <= 0:
        return "frozen"
    if fraction >= 1:
        return "all"
    blocks = M.block_names(backbone)
    k = max(1, round(fraction * len(blocks)))
    return blocks[len(blocks) - k]


def two_phases(
    P: SimpleNamespace, *, fraction: float, lr: float, batch_size: int | None = None, freeze_bn: bool = True
) -> tuple[T.PhaseConfig, T.PhaseConfig]:
    """The two-phase recipe: a head on cached features of the frozen base, then fine-tuning.

    Phase ``head``: ``P.epochs_head`` epochs at ``P.lr_head``, batches of 128, early stopping
    after 5 epochs without a better validation loss. Phase ``finetune``: ``P.epochs_finetune``
    epochs at ``lr`` with the top ``fraction`` of the blocks trainable (:func:`unfreeze_policy`).
    The head phase watches the whole validation set the run is given (on cached features that
    costs seconds); the fine-tuning phase watches ``P.monitor_n_per_class`` images per class of
    it, where the chapter has that parameter, because scoring 5,400 images after every
    fine-tuning epoch would cost more than the epoch. The run's final scores use the whole set.

    Args:
        P: resolved notebook parameters (``backbone``, ``epochs_head``, ``lr_head``,
            ``epochs_finetune``, ``batch_size``, optionally ``monitor_n_per_class``).
        fraction: share of the blocks unfrozen in the second phase.
        lr: learning rate of the second phase.
        batch_size: batch size of the second phase (default ``P.batch_size``).
        freeze_bn: keep BatchNorm in inference mode while fine-tuning (the Keras recipe).

    Returns:
        ``(head phase, finetune phase)``.
    """
    return (
        T.PhaseConfig("head", epochs=P.epochs_head, learning_rate=P.lr_head, batch_size=128,
                      early_stopping=5, use_feature_cache=True),
        T.PhaseConfig("finetune", epochs=P.epochs_finetune, learning_rate=lr, batch_size=batch_size or P.batch_size,
                      unfreeze=unfreeze_policy(P.backbone, fraction), freeze_bn=freeze_bn,
                      val_n_per_class=getattr(P, "monitor_n_per_class", None)),
    )  # fmt: skip


def two_phase_spec(
    P: SimpleNamespace,
    *,
    chapter: str,
    name: str,
    fraction: float,
    lr: float,
    seed: int,
    freeze_bn: bool = True,
    batch_size: int | None = None,
    full_test: bool = False,
) -> ExperimentSpec:
    """One run of the two-phase recipe (:func:`two_phases`) with flip augmentation.

    Args:
        P: resolved notebook parameters (those of :func:`two_phases`, plus ``alpha``,
            ``weights``, ``image_size``, ``n_per_class``, ``val_n_per_class``, ``test_n_per_class``).
        chapter: the notebook this run belongs to (recorded in the tags).
        name: run folder name.
        fraction: share of the blocks unfrozen in the second phase.
        lr: learning rate of the second phase.
        seed: training seed (also picks the training subset).
        freeze_bn: keep BatchNorm in inference mode while fine-tuning.
        batch_size: batch size of the second phase (default ``P.batch_size``).
        full_test: also score the test split (otherwise validation only).

    Returns:
        The run's :class:`.core.ExperimentSpec`; its tags record the fraction, learning rate,
        BatchNorm mode and batch size.
    """
    bs = batch_size or P.batch_size
    return ExperimentSpec(
        name=name,
        **model_fields(P),
        augment="flip",
        phases=two_phases(P, fraction=fraction, lr=lr, batch_size=bs, freeze_bn=freeze_bn),
        seed=seed,
        n_per_class=P.n_per_class,
        val_n_per_class=P.val_n_per_class,
        eval_splits=("val", "test") if full_test else ("val",),
        test_n_per_class=P.test_n_per_class,
        tags={"chapter": chapter, "unfreeze_fraction": fraction, "lr_finetune": lr, "freeze_bn": freeze_bn,
              "batch_size": bs},
    )  # fmt: skip
