"""The model's own layers: ImageNet preprocessing and the augmentation block.

Both are registered Keras serialisables, so a saved ``.keras`` model reloads after
``import eurosat_lib.models``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

#: Modes of :class:`Preprocess`. "unit" (x / 255) exists only for the wrong-preprocessing
#: experiment: it is a common mistake, never what an ImageNet backbone expects.
PREPROCESSING_MODES = ("tf", "caffe", "torch", "none", "unit")

#: Policies of :func:`make_augmentation`.
AUGMENT_POLICIES = ("flip", "light", "randaugment")

#: The ImageNet channel means "caffe" preprocessing subtracts, in BGR order on the 0-255 scale
#: (``keras.applications.imagenet_utils``).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: The ImageNet channel means and standard deviations of "torch" preprocessing, RGB, 0-1 scale.
#: (Not the caffe means divided by 255: the two were computed separately.)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        """Normalise a batch as the backbone's weights expect.

        Args:
            inputs: float RGB in 0..255, channels last.

        Returns:
            The normalised batch, float32.
        """
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=x.dtype)
        mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype=x.dtype)
        std = ops.convert_to_tensor(IMAGENET_STD, dtype=x.dtype)
        return (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape: Any) -> Any:
        """The output shape (the input's: normalisation keeps it).

        Args:
            input_shape: The input's shape.

        Returns:
            The same shape.
        """
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The layer's constructor arguments (Keras serialisation).

        Returns:
            The config, with ``mode`` and ``backbone``.
        """
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
        """Apply a random symmetry per image when training; pass the batch through otherwise.

        Args:
            inputs: A channels-last batch.
            training: Whether Keras is training (None: not training).

        Returns:
            The batch, each image flipped and/or transposed at random when training.
        """
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
        """The output shape (the input's: a symmetry of a square keeps it).

        Args:
            input_shape: The input's shape.

        Returns:
            The same shape.
        """
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The layer's constructor arguments (Keras serialisation).

        Returns:
            The config, with ``seed``.
        """
        return {**super().get_config(), "seed": self.seed}


def make_augmentation(policy: str, seed: int | None = None, name: str = "augment") -> keras.Sequential:
    """The augmentation block for ``policy``, on 0-255 float images (active in training only).

    Args:
        policy: "flip" (the 8 dihedral symmetries), "light" (plus small shifts, brightness and
            contrast) or "randaugment" (plus two random RandAugment operations).
        seed: base seed; each layer gets its own offset from it. None: unseeded.
        name: the block's layer name (``build_model`` relies on "augment").

    Returns:
        A ``keras.Sequential`` of Keras core layers.

    Raises:
        ValueError: unknown ``policy``.
    """
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

