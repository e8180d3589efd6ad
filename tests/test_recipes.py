"""The plain-Keras recipe cells of chapters 1, 3 and 6 build what the library builds.

The cells are taken from the notebook templates by their ``keras-recipe`` tag and run here as
they are (on small synthetic data, with the real ImageNet weights from ../shared/data/weights),
so a recipe on the page cannot drift from ``eurosat_lib.models``.
"""

from __future__ import annotations

import numpy as np
import nbformat
import pytest

from conftest import REPO, WEIGHTS_DIR

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5").is_file(),
    reason=f"MobileNetV2 (alpha 0.35) ImageNet weights not found in {WEIGHTS_DIR} (../shared/data/weights)",
)


def _run_recipe(chapter: str) -> dict:
    """Execute the chapter's ``keras-recipe`` code cells, in order, with ``data`` defined as the
    notebook defines it (here: the synthetic data a smoke run without the archive uses)."""
    from eurosat_lib.data import make_synthetic

    nb = nbformat.read(REPO / "notebooks" / f"{chapter}.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "keras-recipe" in c.metadata.get("tags", [])]
    assert cells, f"{chapter}: no cell tagged keras-recipe"
    namespace: dict = {"data": make_synthetic(n_per_class=40, seed=0)}
    exec(compile("\n\n".join(cells), f"{chapter} recipe cells", "exec"), namespace)  # noqa: S102 - our own notebook
    return namespace


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _frozen_names(backbone) -> set[str]:
    return {layer.name for layer in backbone.layers if layer.weights and not layer.trainable}


@pytest.mark.slow  # ~10 CPU-s: tracing the train step of MobileNetV2
def test_chapter1_recipe_is_the_librarys_frozen_model():
    from eurosat_lib import models as M

    ns = _run_recipe("01_transfer_learning")
    lib = M.build_model("MobileNetV2", image_size=64, backbone_kwargs={"alpha": 0.35})
    lib_base = lib.get_layer("backbone")
    assert _trainable(ns["model"]) == _trainable(lib) == 12_810  # the head: 1280 x 10 + 10
    assert _frozen_names(ns["base"]) == _frozen_names(lib_base) and not ns["base"].trainable_weights
    # The same ImageNet weights, and the same function of the image (dropout off).
    assert np.allclose(ns["base"].get_layer("Conv1").kernel.numpy(), lib_base.get_layer("Conv1").kernel.numpy())
    ns["model"].get_layer(index=-1).set_weights(lib.get_layer("predictions").get_weights())
    x = ns["small"].images[:8]
    assert np.allclose(ns["model"](x.astype("float32"), training=False), lib(x, training=False), atol=1e-4)
    assert len(ns["history"].history["loss"]) == 2


@pytest.mark.slow  # ~17 CPU-s: two phases, two traced train steps
def test_chapter3_unfreezing_matches_set_trainable():
    from eurosat_lib import models as M

    ns = _run_recipe("03_finetune")
    lib = M.set_trainable(M.build_model("MobileNetV2", image_size=64, backbone_kwargs={"alpha": 0.35}), "block_13", freeze_bn=True)
    assert _trainable(ns["model"]) == _trainable(lib)
    assert _frozen_names(ns["base"]) == _frozen_names(lib.get_layer("backbone"))
    bn = [layer for layer in ns["base"].layers if layer.__class__.__name__ == "BatchNormalization"]
    assert bn and not any(layer.trainable for layer in bn), "BatchNorm must stay frozen while fine-tuning"
    assert _trainable(ns["model"]) > 12_810, "the recipe did not unfreeze any block"


def test_chapter6_cut_matches_truncate_backbone():
    from eurosat_lib import models as M

    ns = _run_recipe("06_truncation")
    lib = M.truncate_backbone(M.build_backbone("MobileNetV2", 64, "imagenet", alpha=0.35), "block_9")
    # Same layers (the input layer's automatic name aside), same output.
    assert [layer.name for layer in ns["cut"].layers[1:]] == [layer.name for layer in lib.layers[1:]]
    assert tuple(ns["cut"].output.shape) == tuple(lib.output.shape)
    assert ns["cut"].count_params() == lib.count_params() < ns["base"].count_params()
