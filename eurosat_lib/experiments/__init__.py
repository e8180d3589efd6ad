"""Experiments: notebook parameters and profiles, one-call runs, the chapters' studies.

* :mod:`.params` — ``resolve_params``: validate a notebook's ``parameters`` cell, profiles.
* :mod:`.core` — ``ExperimentSpec`` + ``run_experiment``: one training run = one run folder.
* :mod:`.notebooks` — ``run_notebooks`` (``make experiments``): papermill templates into the book.
* one module per chapter with that chapter's studies (``transfer``, ``negative_transfer``,
  ``finetune``, ``overfitting``, ``backbones``, ``truncation``), each registering its parameters.
"""

from .core import (
    ExperimentSpec,
    accelerator_for,
    checkpoints_for,
    run,
    RunResult,
    build_from_spec,
    data_identity,
    hardware_summary,
    header_table,
    inference_speed,
    load_data,
    load_run_model,
    predict,
    run_experiment,
    save_summary,
    train_subset,
    weights_available,
)
from .notebooks import library_fingerprint, run_notebooks
# Chapter modules register their notebook parameters on import.
from . import backbones, data_overview, finetune, negative_transfer, overfitting, transfer, truncation  # noqa: E402,F401
from .params import (
    NOTEBOOKS,
    PROFILES,
    ParameterError,
    backbone_kwargs,
    params_from,
    register_notebook_params,
    require_weights,
    resolve_params,
)

__all__ = [
    "accelerator_for", "checkpoints_for", "run",
    "NOTEBOOKS", "PROFILES", "ExperimentSpec", "ParameterError", "RunResult", "backbone_kwargs",
    "build_from_spec", "data_identity", "hardware_summary", "header_table", "inference_speed",
    "library_fingerprint", "load_data", "load_run_model", "params_from", "predict", "register_notebook_params", "require_weights",
    "resolve_params", "run_experiment", "run_notebooks", "save_summary", "train_subset", "weights_available",
]  # fmt: skip
