"""experiments.core.predict scores many models without TensorFlow's retracing warning.

Chapters score dozens of models, each on a small split; through ``model.predict`` every model
traced its own predict function and TensorFlow printed "5 out of the last 7 calls to
<function TensorFlowTrainer.make_predict_function...> triggered tf.function retracing" into
the executed chapters (issue: clean outputs).
"""

from __future__ import annotations

import logging

import numpy as np


def _tiny_classifier(seed: int):
    import keras

    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_predicting_with_many_models_does_not_retrace(caplog):
    from eurosat_lib.experiments import predict

    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        probs = [predict(_tiny_classifier(seed), images, batch_size=16) for seed in range(8)]
    assert all(p.shape == (40, 10) and np.allclose(p.sum(1), 1, atol=1e-5) for p in probs)
    retracing = [r.getMessage()[:120] for r in caplog.records if "retracing" in r.getMessage()]
    assert not retracing, retracing
    # Eager and compiled paths agree (a large input goes through Keras' predict function).
    model = _tiny_classifier(0)
    big = np.repeat(images, 4, axis=0)  # 160 images = 10 batches of 16
    assert np.allclose(predict(model, big, batch_size=16), predict(model, big, batch_size=16, eager=True), atol=1e-5)
