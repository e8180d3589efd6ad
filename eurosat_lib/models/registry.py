"""The backbone registry: one :class:`BackboneSpec` per supported ``keras.applications`` model.

Each entry names the Keras constructor, the preprocessing its ImageNet weights were trained
with, the input-size limits, the official no-top weights file (name, URL, checksum) and the
:class:`BlockRule` that names its blocks. Everything else asks this registry.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras

@dataclass(frozen=True)
class WeightsFile:
    """An official Keras weights file: where Keras publishes it and how to recognise it.

    ``file_hash`` is the checksum Keras' own download checks (md5 or sha256, by its length; None
    where Keras has none); ``size`` and ``sha256`` are known for the files in :data:`KNOWN_FILES`.
    """

    fname: str
    url: str
    file_hash: str | None = None
    size: int | None = None
    sha256: str | None = None


#: Size in bytes and sha256 of official files checked here (the ones the project's tests and
#: book use), so a damaged copy can be told apart from a file for another architecture.
KNOWN_FILES: dict[str, tuple[int, str]] = {
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5":
        (2_019_640, "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f"),
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5":
        (3_201_480, "279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05"),
    "mobilenet_2_5_224_tf_no_top.h5":
        (2_108_140, "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"),
}  # fmt: skip


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
        """The official ImageNet no-top weights file for these constructor kwargs.

        Args:
            **backbone_kwargs: The constructor's options (e.g. ``alpha``).

        Returns:
            The file's name, URL and, when known, size and checksum.
        """
        wf = self.weights(**backbone_kwargs)
        if wf.fname in KNOWN_FILES:
            size, sha256 = KNOWN_FILES[wf.fname]
            wf = dataclasses.replace(wf, size=size, sha256=sha256)
        return wf

    def build_fn(self) -> Callable[..., keras.Model]:
        """The ``keras.applications`` constructor.

        Returns:
            The constructor, e.g. ``keras.applications.MobileNetV2``.
        """
        return getattr(keras.applications, self.constructor)

    def preprocess_input(self) -> Callable[..., Any]:
        """``keras.applications.<module>.preprocess_input`` (the reference for this backbone).

        Returns:
            The function.
        """
        return getattr(keras.applications, self.module).preprocess_input

    @property
    def block_rule(self) -> BlockRule:
        """How this backbone's blocks are found and named (its family's :class:`BlockRule`)."""
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


def _efficientnet(variant: str, default_size: int, file_hash: str, v2: bool = False) -> BackboneSpec:
    name = f"EfficientNet{'V2' if v2 else ''}{variant.upper()}"
    if v2:
        fname = f"efficientnetv2-{variant}_notop.h5"
        url = _GCS + "efficientnet_v2/" + fname
    else:  # v1 files are published outside the tensorflow/ folder
        fname = f"efficientnet{variant}_notop.h5"
        url = "https://storage.googleapis.com/keras-applications/" + fname
    return BackboneSpec(
        name=name,
        constructor=name,
        module="efficientnet_v2" if v2 else "efficientnet",
        preprocessing="none",
        min_size=32,
        default_size=default_size,
        family="efficientnet",
        weights=_fixed(fname, url, file_hash),
        imagenet_std_fix=not v2,  # Keras' extra Rescaling exists for v1 only
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
    _efficientnet("b0", 224, "893217f2bb855e2983157299931e43ff", v2=True),
    _efficientnet("b1", 240, "0e80663031ca32d657f9caa404b6ec37", v2=True),
    _efficientnet("b2", 260, "1dfe2e7a5d45b6632553a8961ea609eb", v2=True),
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
    """Names of all registered backbones.

    Returns:
        The names of :data:`BACKBONES`, in registry order.
    """
    return list(BACKBONES)


def get_backbone_spec(name: str | BackboneSpec) -> BackboneSpec:
    """The registry entry for a backbone.

    Args:
        name: a registry name, in any letter case (``"mobilenetv2"``), or a spec (returned as is).

    Returns:
        The :class:`BackboneSpec`.

    Raises:
        ValueError: unknown name; the message suggests the closest names and lists all.
    """
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



def describe_kwargs(kwargs: Mapping[str, Any]) -> str:
    """Constructor options as they appear in messages: ``"(alpha=0.35)"``, or ``""`` for none.

    Args:
        kwargs: The options.

    Returns:
        The text.
    """
    return "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")" if kwargs else ""
