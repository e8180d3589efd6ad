"""Notebook parameters and profiles: validate a ``parameters`` cell, fill in profile defaults.

A notebook's ``parameters`` cell hands its values to :func:`resolve_params`; ``None`` means
"the profile decides". Bad values fail at once with a message naming the parameter, what is
allowed and how to pass it with papermill. Chapter modules declare their own parameters with
:func:`register_notebook_params`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import numpy as np

from .. import config
from .. import models as M

PROFILES = ("smoke", "cpu", "gpu")
NOTEBOOKS = (
    "00_data",
    "01_transfer_learning",
    "02_negative_transfer",
    "03_finetune",
    "04_overfitting",
    "05_backbones",
    "06_truncation",
)


class ParameterError(ValueError):
    """A notebook parameter has a wrong type or value."""


# --------------------------------------------------------------------------------------------
# Parameters and profiles
# --------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _check_backbone(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be a backbone name"
    try:
        M.get_backbone_spec(v)
    except ValueError as e:
        return str(e)
    return None


def _check_weights(v: Any) -> str | None:
    if v is None or (isinstance(v, str) and v.lower() in ("imagenet", "none")):
        return None
    if isinstance(v, str) and Path(v).expanduser().is_file():
        return None
    return "must be 'imagenet', 'none' (train from scratch) or the path of an existing weights file"


def _pos_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "must be a positive integer"


def _nonneg_int(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "must be a non-negative integer"


def _pos_num(v: Any) -> str | None:
    return None if _is_num(v) and np.isfinite(v) and v > 0 else "must be a positive number"


def _fraction(v: Any) -> str | None:
    return None if _is_num(v) and 0 < v <= 1 else "must be a number in (0, 1]"


def _seeds(v: Any) -> str | None:
    if _is_int(v) and v > 0:
        return None
    if isinstance(v, (list, tuple)) and v and all(_is_int(s) for s in v):
        return None
    return "must be a number of seeds (positive int) or a non-empty list of int seeds"


def _int_list(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and v and all(_is_int(s) and s > 0 for s in v):
        return None
    return "must be a non-empty list of positive integers"


def _str_or_none(v: Any) -> str | None:
    return None if v is None or isinstance(v, str) else "must be a string"


def _choice(*options: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {list(options)}"

    return check


def _data_source(v: Any) -> str | None:
    if v in ("auto", "real", "synthetic"):
        return None
    if isinstance(v, str) and Path(v).expanduser().exists():
        return None
    return "must be 'auto', 'real', 'synthetic' or the path of an EuroSAT archive/folder"


#: name -> (validator, help). Every notebook accepts these; notebook-specific ones are added
#: in NOTEBOOK_PARAMS.
COMMON_PARAMS: dict[str, tuple[Callable[[Any], str | None], str]] = {
    "profile": (_choice(*PROFILES), "smoke (seconds, CI) | cpu (real data, minutes) | gpu (full schedules)"),
    "data_source": (_data_source, "'auto' (real if on disk, else synthetic for smoke), 'real', 'synthetic' or a path"),
    "backbone": (_check_backbone, "keras.applications backbone name"),
    "alpha": (lambda v: None if v is None or (_is_num(v) and v > 0) else "must be a positive number or None", "MobileNet width multiplier"),
    "weights": (_check_weights, "'imagenet', 'none' or a weights file"),
    "image_size": (_pos_int, "input size the 64 px images are resized to"),
    "epochs_head": (_nonneg_int, "epochs of head training on the frozen base"),
    "epochs_finetune": (_nonneg_int, "epochs of fine-tuning"),
    "epochs": (_nonneg_int, "epochs for single-phase runs"),
    "lr_head": (_pos_num, "learning rate of the head phase"),
    "lr_finetune": (_pos_num, "learning rate of the fine-tuning phase"),
    "batch_size": (_pos_int, "images per step"),
    "train_fraction": (_fraction, "fraction of the training split used"),
    "n_per_class": (lambda v: None if v is None or (_is_int(v) and v > 0) else "must be a positive integer or None", "training images per class (None = all)"),
    "seeds": (_seeds, "number of seeds, or explicit list of seeds"),
    "test_n_per_class": (lambda v: None if v is None or (_is_int(v) and v > 0) else "must be a positive integer or None", "test images per class scored (None = the whole test split)"),
    "out_dir": (_str_or_none, "folder for run folders (default runs/<profile>/<notebook>)"),
}

#: Profile defaults shared by every notebook; NOTEBOOK_DEFAULTS refine them.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(data_source="auto", backbone="MobileNetV2", alpha=0.35, weights="imagenet", image_size=64,
                  epochs_head=1, epochs_finetune=1, epochs=1, lr_head=1e-3, lr_finetune=1e-4, batch_size=32,
                  train_fraction=1.0, n_per_class=8, seeds=1, test_n_per_class=10),
    "cpu": dict(data_source="real", backbone="MobileNetV2", alpha=0.35, weights="imagenet", image_size=128,
                epochs_head=30, epochs_finetune=3, epochs=10, lr_head=1e-3, lr_finetune=3e-4, batch_size=64,
                train_fraction=1.0, n_per_class=None, seeds=3),
    "gpu": dict(data_source="real", backbone="MobileNetV2", alpha=None, weights="imagenet", image_size=224,
                epochs_head=30, epochs_finetune=15, epochs=40, lr_head=1e-3, lr_finetune=1e-4, batch_size=128,
                train_fraction=1.0, n_per_class=None, seeds=5),
}  # fmt: skip

NOTEBOOK_PARAMS: dict[str, dict[str, tuple[Callable[[Any], str | None], str]]] = {nb: {} for nb in NOTEBOOKS}
NOTEBOOK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {nb: {p: {} for p in PROFILES} for nb in NOTEBOOKS}


def register_notebook_params(
    notebook: str,
    params: Mapping[str, tuple[Callable[[Any], str | None], str]] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Declare a notebook's own parameters and per-profile defaults (used by this module)."""
    NOTEBOOK_PARAMS[notebook].update(params or {})
    for profile, values in (defaults or {}).items():
        NOTEBOOK_DEFAULTS[notebook][profile].update(values)


def resolve_params(notebook: str, **given: Any) -> SimpleNamespace:
    """Validate a notebook's parameters and fill ``None`` values from its profile.

    Raises :class:`ParameterError` naming the parameter, the bad value, what is allowed and
    how to pass it with papermill.
    """
    if notebook not in NOTEBOOKS:
        raise ParameterError(f"unknown notebook {notebook!r}; expected one of {list(NOTEBOOKS)}")
    schema = {**COMMON_PARAMS, **NOTEBOOK_PARAMS[notebook]}
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown} for {notebook}; known: {sorted(schema)}")
    profile = given.get("profile") or "cpu"
    err = COMMON_PARAMS["profile"][0](profile)
    if err:
        raise ParameterError(f"parameter 'profile' {err}, got {profile!r} (papermill: -p profile cpu)")
    values = {**PROFILE_DEFAULTS[profile], **NOTEBOOK_DEFAULTS[notebook][profile]}
    values["profile"] = profile
    for name, v in given.items():
        if v is not None:
            values[name] = v
    if isinstance(values.get("weights"), str) and values["weights"].lower() == "none":
        values["weights"] = None
    for name, (check, help_) in schema.items():
        if name not in values:
            values[name] = None
        v = values[name]
        if v is None:
            continue
        err = check(v)
        if err:
            raise ParameterError(
                f"parameter {name!r} {err}, got {v!r} ({help_}). "
                f"With papermill: -p {name} <value>; see the notebook's parameters cell."
            )
    if values.get("backbone") and values.get("image_size"):
        spec = M.get_backbone_spec(values["backbone"])
        if values["image_size"] < spec.min_size:
            raise ParameterError(
                f"parameter 'image_size' is {values['image_size']} but {values['backbone']} needs at least "
                f"{spec.min_size} px; pass -p image_size {max(spec.min_size, 64)} or larger"
            )
    if isinstance(values.get("seeds"), (int, np.integer)):
        values["seeds"] = list(range(int(values["seeds"])))
    values["notebook"] = notebook
    if values.get("out_dir") is None:
        values["out_dir"] = str(config.runs_dir() / profile / notebook)
    return SimpleNamespace(**values)


def backbone_kwargs(backbone: str, alpha: float | None) -> dict[str, Any]:
    """Constructor options from notebook parameters (``alpha`` only applies to MobileNets)."""
    return {"alpha": alpha} if alpha is not None and backbone in ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large") else {}




def params_from(namespace: Mapping[str, Any], notebook: str) -> SimpleNamespace:
    """:func:`resolve_params` for the variables a ``parameters`` cell defined in ``namespace``.

    Used as ``P = X.params_from(globals(), "03_finetune")``: every known parameter found in
    the notebook's namespace is validated; the rest come from the profile.
    """
    known = set(COMMON_PARAMS) | set(NOTEBOOK_PARAMS[notebook])
    return resolve_params(notebook, **{k: namespace[k] for k in known if k in namespace})


def require_weights(P: SimpleNamespace) -> str | None:
    """Resolve ``P.weights`` for ``P.backbone`` now (finding or downloading the file).

    Called in a notebook's first cell so that missing weights fail in seconds, with the message
    naming the file to fetch, instead of after the data has been loaded.
    """
    if P.weights is None:
        return None
    return M.resolve_weights(P.backbone, P.weights, **backbone_kwargs(P.backbone, P.alpha))
