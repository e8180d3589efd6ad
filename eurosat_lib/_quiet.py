"""Import the TensorFlow backend without its C++ start-up log lines.

TensorFlow's C++ runtime writes oneDNN, CUDA-stub and ``cuInit`` lines straight to file
descriptor 2 while importing and initialising devices. ``TF_CPP_MIN_LOG_LEVEL`` does not silence
all of them, and in notebooks they turn into red stderr blocks. We point fd 2 at /dev/null for
exactly that window (import + device discovery), then restore it; Python exceptions are not
affected. ``EUROSAT_QUIET_TF=0`` turns this off when debugging an installation.
"""

from __future__ import annotations

import os
import sys


def quiet_backend_import() -> None:
    if os.environ.get("EUROSAT_QUIET_TF", "1") == "0" or "tensorflow" in sys.modules:
        return
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            tf.constant(0.0) + 1.0  # first op: device initialisation (cuInit) logs here
        except ImportError:
            pass  # reported properly when keras imports its backend
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
