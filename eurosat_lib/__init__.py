"""eurosat_lib — data, models, training and evaluation for the EuroSAT transfer-learning book.

Modules, one job each: :mod:`~eurosat_lib.data` (load, cache, split, subsets),
:mod:`~eurosat_lib.models` (backbones, heads, freezing, truncation),
:mod:`~eurosat_lib.training` (phases, feature caching, resume), :mod:`~eurosat_lib.evaluation`
(metrics, run records), :mod:`~eurosat_lib.plots` and :mod:`~eurosat_lib.experiments`
(notebook parameters, profiles, running experiments).

Importing the package (or :mod:`~eurosat_lib.data`, :mod:`~eurosat_lib.report`) does not import
TensorFlow: only the modules that build or train models do, through
:func:`eurosat_lib._quiet.quiet_backend_import`, which keeps TensorFlow's C++ start-up log lines
out of notebooks.
"""

__version__ = "0.1.0"
