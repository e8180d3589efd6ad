"""Scoring many models prints no TensorFlow retracing warning (the chapters' stderr stays clean).

Chapters score dozens of models; through ``model.predict`` every model traced its own predict
function and TensorFlow printed "5 out of the last 7 calls to <function
TensorFlowTrainer.make_predict_function...> triggered tf.function retracing" into the executed
chapters (issue: clean outputs). The check runs in a fresh process and reads its stderr, where
the chapters saw the warning (TensorFlow's logger does not propagate to pytest's handlers).
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np, keras
from eurosat_lib.experiments import predict
from eurosat_lib.training import predict_batches

def tiny(seed):
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

rng = np.random.default_rng(0)
small = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
big = rng.integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)  # 4 full batches of 16 and a short one
for seed in range(8):
    m = tiny(seed)
    for images in (small, big):
        p = predict(m, images, batch_size=16)
        assert p.shape == (len(images), 10) and np.allclose(p.sum(1), 1, atol=1e-5)
m = tiny(0)
ref = np.asarray(m.predict(big, batch_size=16, verbose=0))
assert np.allclose(predict(m, big, batch_size=16), ref, atol=1e-5)
assert np.allclose(predict_batches(m, big, 16, eager=False), ref, atol=1e-5)
print("OK")
"""


def test_predicting_with_many_models_does_not_retrace():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    retracing = [ln for ln in r.stderr.splitlines() if "retracing" in ln]
    assert not retracing, retracing[:2]
