"""Blocks of a backbone and truncation.

A *block* is a group of layers a user recognises in ``backbone.summary()`` (``block_5`` in
MobileNetV2, ``conv4_block2`` in ResNet50, ``mixed7`` in InceptionV3 ...), defined by its END
layer: the last layer of the block in ``backbone.layers`` order, placed where the graph has a
clean cut (that layer's output is the only tensor flowing on). Truncating at a block keeps the
backbone up to its end layer; unfreezing "from" a block makes the block's own layers and
everything after trainable. Each family's naming rule is a :class:`BlockRule` in the registry.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from typing import Any

import keras

from .registry import BLOCK_RULES, BackboneSpec, get_backbone_spec
from .weights import build_backbone


def graph_ops(model: keras.Model) -> list[Any]:
    """All operations of a functional model in graph order: layers and bare ops.

    Bare ops matter: ConvNeXt's residual ``inputs + x`` is an operation, not a layer, and a
    block must end after it.

    Args:
        model: A functional Keras model.

    Returns:
        The operations, inputs first.
    """
    return list(getattr(model, "operations", None) or model.layers)


def clean_cuts(model: keras.Model) -> list[int]:
    """Indices ``i`` in :func:`graph_ops` where only operation ``i``'s output flows on.

    Args:
        model: A functional Keras model.

    Returns:
        The indices where the model can be cut into a chain.
    """
    graph = graph_ops(model)
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


def block_table(backbone: keras.Model, family: str | None = None) -> list[tuple[str, int, int]]:
    """``[(block name, first index, end index)]`` over :func:`graph_ops`, covering all but the input.

    Args:
        backbone: The backbone model.
        family: Its registry family (None: told from its layer names).

    Returns:
        One row per block, in graph order.

    Raises:
        ValueError: The family cannot be told, or its rule finds no block.
    """
    rule = BLOCK_RULES[family or _family_of(backbone)]
    model_layers = graph_ops(backbone)
    spans: dict[str, list[int]] = {}
    for i, layer in enumerate(model_layers):
        m = re.search(rule.pattern, layer.name)
        if m:
            key = rule.label.format(*m.groups())
            spans.setdefault(key, [i, i])[1] = i
    if not spans:
        raise ValueError(f"no blocks found in {backbone.name!r} with the {family} rule")
    cuts = clean_cuts(backbone)
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
    return tuple(b for b, _, _ in block_table(model, spec.family))


def backbone_and_family(model: keras.Model) -> tuple[keras.Model, str | None]:
    """``(backbone, family)`` of a :func:`build_model` model (its nested ``backbone`` layer and
    the registry family) or of a bare backbone (itself, family None: told from layer names).

    Args:
        model: A :func:`build_model` model or a bare backbone.

    Returns:
        The backbone and its family.
    """
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
    """Ordered block names of a backbone, as a user sees them in ``backbone.summary()``.

    Args:
        backbone: a registry name, a bare backbone or a :func:`build_model` model. For a
            truncated backbone the list ends at the block it was cut after.

    Returns:
        Block names, input side first (``["stem", "expanded_conv", "block_1", ..., "top"]``).

    Raises:
        ValueError: unknown registry name, or a model whose family cannot be told.
    """
    if isinstance(backbone, (str, BackboneSpec)):
        return list(_spec_block_names(get_backbone_spec(backbone).name))
    bb, family = backbone_and_family(backbone)
    return [b for b, _, _ in block_table(bb, family)]


def pick_block(table: list[tuple[str, int, int]], at: str | float, what: str) -> tuple[str, int, int]:
    """The row of :func:`block_table` that ``at`` (a block name or a fraction of the blocks) means.

    ``what`` names the parameter in errors (``"truncate_at"``, ``"set_trainable policy"``).

    Args:
        table: :func:`block_table`'s rows.
        at: A block name, or a fraction in (0, 1] of the blocks counted from the input.
        what: The parameter's name, for error messages.

    Returns:
        The block's row.

    Raises:
        ValueError: An unknown block name, or a value that is neither a name nor a fraction in (0, 1].
    """
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
    """``backbone`` cut after a block: what a shallower feature extractor would see.

    Args:
        backbone: a bare backbone (e.g. from :func:`build_backbone`).
        at: a block name (see :func:`block_names`), or a fraction in (0, 1] of the block list
            (the cut follows block ``ceil(at * n_blocks)``; 1.0 keeps everything).
        family: the backbone's :data:`BLOCK_RULES` key; None: told from its layer names.

    Returns:
        A model sharing layers (and weights) with ``backbone``; ``backbone`` itself for the last block.

    Raises:
        ValueError: unknown block name, a fraction outside (0, 1], or an unknown family.
    """
    table = block_table(backbone, family)
    _, _, end = pick_block(table, at, "truncate_at")
    graph = graph_ops(backbone)
    if end == len(graph) - 1:
        return backbone
    return keras.Model(backbone.inputs[0], graph[end].output, name=backbone.name)

