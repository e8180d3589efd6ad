"""Experiments: notebook parameters and profiles, one-call runs, the chapters' studies.

* :mod:`.params` — ``resolve_params`` / ``params_from``: a chapter's typed parameters dataclass
  (validated, per-profile defaults), and ``CHAPTERS``, the one list of chapters.
* :mod:`.core` — ``ExperimentSpec`` + ``run_experiment``: one training run = one run folder.
* :mod:`.notebooks` — ``run_notebooks`` (``make experiments``): papermill templates into the book.
* one module per chapter with that chapter's studies (``transfer``, ``negative_transfer``,
  ``finetune``, ``overfitting``, ``backbones``, ``truncation``), each declaring its parameters
  dataclass. Importing this package imports no chapter: ``resolve_params`` loads the one asked for.
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
    recorded_weights_digest,
    run_experiment,
    save_summary,
    train_subset,
    weights_available,
    weights_file_digest,
)
from .notebooks import library_fingerprint, run_notebooks
from .params import (
    CHAPTERS,
    NOTEBOOKS,
    PROFILES,
    ChapterParams,
    ParameterError,
    backbone_kwargs,
    chapter_params,
    params_from,
    require_weights,
    resolve_params,
)

__all__ = [
    "accelerator_for", "checkpoints_for", "run",
    "CHAPTERS", "NOTEBOOKS", "PROFILES", "ChapterParams", "ExperimentSpec", "ParameterError", "RunResult", "backbone_kwargs",
    "build_from_spec", "data_identity", "hardware_summary", "header_table", "inference_speed",
    "library_fingerprint", "load_data", "load_run_model", "params_from", "predict", "recorded_weights_digest",
    "require_weights", "chapter_params", "resolve_params", "run_experiment", "run_notebooks", "save_summary", "train_subset",
    "weights_available", "weights_file_digest",
]  # fmt: skip
