"""Grad-CAM (Selvaraju et al., 2017): where in an image a model's class evidence lies.

    heat = gradcam.grad_cam(model, images)          # (N, H, W) in [0, 1], one map per image

Works on models that follow the ``eurosat_lib.models`` contract (uint8 input, a nested
``"backbone"`` whose output is the last conv feature map, a chain of head layers) with the
TensorFlow, JAX and torch Keras backends. Keras is imported inside the functions only.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["grad_cam"]


def _split_at_backbone(model: Any) -> tuple[list[Any], Any, list[Any]]:
    """``(stem layers, backbone, head layers)`` of a model following the models contract.

    A nested model's ``.output`` belongs to its own inner graph in Keras 3, so a sub-model
    ``Model(model.inputs, backbone.output)`` is "not connected". The contract's graph is a
    chain, so the layers before and after the backbone are simply called in order.
    """
    import keras

    try:
        backbone = model.get_layer("backbone")
    except ValueError as e:
        raise ValueError(
            "grad_cam needs a model with a nested layer named 'backbone' whose output is the last "
            "conv feature map (as built by eurosat_lib.models)"
        ) from e
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    i = layers.index(backbone)
    return layers[:i], backbone, layers[i + 1 :]


def _is_softmax_dense(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax


def _head_scores(head: Sequence[Any], features: Any) -> Any:
    """Run the head on a feature map; the class score is the logit, as in Selvaraju et al.

    Gradients of the softmax output shrink as the model grows confident and mix in the other
    classes, so a final softmax Dense is applied without its activation.
    """
    from keras import ops

    x = features
    for layer in head[:-1]:
        x = layer(x, training=False)
    last = head[-1]
    if _is_softmax_dense(last):
        x = ops.matmul(x, last.kernel)
        return ops.add(x, last.bias) if last.use_bias else x
    return last(x, training=False)


def _score_gradients(head_fn: Callable[[Any], Any], features: Any, class_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (B, K), d score[class_index] / d features)`` with the active Keras backend.

    The one place that knows about backends: Keras 3 has no backend-neutral gradient API.
    """
    import keras
    from keras import ops

    backend = keras.backend.backend()
    def picked(scores: Any) -> Any:
        mask = ops.one_hot(ops.convert_to_tensor(class_index, dtype="int32"), ops.shape(scores)[-1], dtype=scores.dtype)
        return ops.sum(scores * mask)

    if backend == "tensorflow":
        import tensorflow as tf

        features = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(features)
            scores = head_fn(features)
            target = picked(scores)
        grads = tape.gradient(target, features)
    elif backend == "jax":
        import jax

        def f(feats: Any) -> tuple[Any, Any]:
            scores = head_fn(feats)
            return picked(scores), scores

        (_, scores), grads = jax.value_and_grad(f, has_aux=True)(features)
    elif backend == "torch":
        features = features.detach().requires_grad_(True)
        scores = head_fn(features)
        picked(scores).backward()
        grads = features.grad
        scores = scores.detach()
    else:
        raise NotImplementedError(f"grad_cam does not support the {backend!r} Keras backend")
    return ops.convert_to_numpy(scores), ops.convert_to_numpy(grads)


def grad_cam(
    model: Any, images: np.ndarray, class_index: int | Sequence[int] | np.ndarray | None = None, batch_size: int = 64
) -> np.ndarray:
    """Grad-CAM heatmaps (Selvaraju et al., 2017), ``(N, H, W)`` in ``[0, 1]`` at image size.

    ``class_index``: ``None`` explains each image's predicted class; an int explains that class
    for every image; a sequence gives one class per image. The model must follow the
    ``eurosat_lib.models`` contract: uint8 input, a nested ``"backbone"`` whose output is the
    last conv feature map, then a chain of head layers ending in ``"predictions"``. An image
    with no positive evidence for the class gets an all-zero map.

    Args:
        model: A model built by :func:`eurosat_lib.models.build_model`.
        images: uint8 images, ``(N, H, W, C)``, or one ``(H, W, C)`` image.
        class_index: The class(es) to explain, as above.
        batch_size: Images per gradient pass.

    Returns:
        The heatmaps, float32 ``(N, H, W)``.

    Raises:
        ValueError: ``images`` has the wrong shape, the model does not follow the contract, or a
        class index is out of range.
    """
    from keras import ops

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or one (H, W, C) image, got shape {images.shape}")
    n, height, width = images.shape[:3]
    stem, backbone, head = _split_at_backbone(model)
    if not head:
        raise ValueError("grad_cam: the model has no layers after 'backbone'")
    if class_index is None:
        targets = None
    else:
        targets = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,)).copy()
    input_dtype = model.inputs[0].dtype
    out = np.empty((n, height, width), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        x = ops.convert_to_tensor(batch, dtype=input_dtype)
        expected = ops.convert_to_numpy(model(x, training=False))
        for layer in stem:
            x = layer(x, training=False)
        features = backbone(x, training=False)
        if len(ops.shape(features)) != 4:
            raise ValueError(f"grad_cam: 'backbone' must output a (B, h, w, C) feature map, got shape {ops.shape(features)}")
        idx = expected.argmax(axis=1) if targets is None else targets[start : start + len(batch)]
        if idx.min() < 0 or idx.max() >= expected.shape[1]:
            raise ValueError(f"class_index must be in [0, {expected.shape[1] - 1}], got {idx.min()}..{idx.max()}")
        scores, grads = _score_gradients(lambda f: _head_scores(head, f), features, idx)
        # Guard against models that are not a plain chain: the manual pass must reproduce them.
        probs = ops.convert_to_numpy(ops.softmax(scores)) if _is_softmax_dense(head[-1]) else scores
        if probs.shape != expected.shape or not np.allclose(probs, expected, atol=1e-3):
            raise ValueError(
                "grad_cam: running the layers around 'backbone' in order does not reproduce the model's "
                "output; the model does not follow the eurosat_lib.models contract (a chain of layers)"
            )
        feats = ops.convert_to_numpy(features).astype(np.float32)
        weights = grads.mean(axis=(1, 2))  # (B, C): global-average-pooled gradients
        cam = np.maximum(np.einsum("bhwc,bc->bhw", feats, weights), 0.0)
        cam = ops.convert_to_numpy(ops.image.resize(cam[..., None], (height, width), interpolation="bilinear"))[..., 0]
        cam = np.maximum(cam, 0.0)
        peak = cam.max(axis=(1, 2), keepdims=True)
        out[start : start + len(batch)] = np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0)
