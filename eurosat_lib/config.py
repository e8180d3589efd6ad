"""Where things live: the one place that decides data, cache and weights locations.

Every other module asks here; nothing else reads these environment variables.

Environment variables
---------------------
``EUROSAT_DATA_DIR``
    Cache directory for the downloaded archive and the decoded ``.npy`` arrays. Default: the
    user cache dir (``~/.cache/eurosat_lib`` on Linux). An archive placed here is found.
``EUROSAT_ARCHIVE``
    Path to an EuroSAT archive (zip) or extracted folder to use instead of searching.
``EUROSAT_WEIGHTS_DIR``
    Directory (or ``os.pathsep``-separated list) searched for official Keras weight files
    (e.g. ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5``) before
    anything is downloaded.
``EUROSAT_RUNS_DIR``
    Where run folders are written when a notebook does not say otherwise. Default ``runs/``
    under the current directory.

Development checkouts also look in ``../shared/data`` beside the repository (where this
project's machines and CI keep the real archive and weights), so a fresh clone works offline
there without any variable set.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

PACKAGE_DIR = Path(__file__).resolve().parent
#: Repository root when running from a source checkout (editable install); may not exist
#: for a wheel install, in which case the dev fallbacks below simply don't match anything.
REPO_ROOT = PACKAGE_DIR.parent
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

ARCHIVE_NAMES = ("EuroSAT_RGB.zip", "EuroSAT.zip", "eurosat-rgb.zip", "eurosat.zip")
#: Folder names that hold the class folders in the archives users meet.
ARCHIVE_ROOTS = ("EuroSAT_RGB", "2750", "EuroSAT", "eurosat", "EuroSAT-RGB")


def cache_dir() -> Path:
    """Directory for downloads and decoded arrays (created on demand by writers).

    Returns:
        ``$EUROSAT_DATA_DIR``, default ``~/.cache/eurosat_lib``.
    """
    env = os.environ.get("EUROSAT_DATA_DIR")
    return Path(env).expanduser() if env else Path(user_cache_dir("eurosat_lib"))


def archive_search_dirs() -> list[Path]:
    """Directories searched, in order, for an already-present EuroSAT archive or folder.

    Returns:
        The directories, first searched first.
    """
    dirs = [cache_dir()]
    if SHARED_DATA_DIR.is_dir():
        dirs.append(SHARED_DATA_DIR)
    return dirs


def weights_search_dirs() -> list[Path]:
    """Directories searched, in order, for official Keras weight files.

    Returns:
        ``$EUROSAT_WEIGHTS_DIR`` entries, ``$KERAS_HOME/models`` (default ``~/.keras/models``),
        then ``../shared/data/weights`` beside a source checkout when present.
    """
    dirs: list[Path] = []
    env = os.environ.get("EUROSAT_WEIGHTS_DIR")
    if env:
        dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    dirs.append(keras_home / "models")
    if (SHARED_DATA_DIR / "weights").is_dir():
        dirs.append(SHARED_DATA_DIR / "weights")
    return dirs


def runs_dir() -> Path:
    """Default parent folder for run folders.

    Returns:
        ``$EUROSAT_RUNS_DIR``, default ``runs``.
    """
    return Path(os.environ.get("EUROSAT_RUNS_DIR", "runs")).expanduser()
