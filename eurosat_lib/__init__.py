"""eurosat_lib — data, models, training and evaluation for the EuroSAT transfer-learning book.

Modules, one job each: :mod:`~eurosat_lib.data` (load, cache, split, subsets),
:mod:`~eurosat_lib.models` (backbones, heads, freezing, truncation),
:mod:`~eurosat_lib.training` (phases, feature caching, resume), :mod:`~eurosat_lib.evaluation`
(metrics, run records), :mod:`~eurosat_lib.plots` and :mod:`~eurosat_lib.experiments`
(notebook parameters, profiles, running experiments).
"""

from ._quiet import quiet_backend_import

__version__ = "0.1.0"

quiet_backend_import()
