"""Run by `make test-wheel` in a fresh virtualenv holding only the built wheel and jax[cpu]:
the library trains, saves and reloads a small model on JAX, and TensorFlow is neither
installed nor imported. The application's commands there exit with one line naming the
extra to install."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import relperf_tf  # noqa: E402
from relperf_tf.layers import RelativeFavorAttention  # noqa: E402

assert importlib.util.find_spec("tensorflow") is None, "tensorflow is installed"
assert keras.backend.backend() == "jax"

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 24, 8)).astype("float32")
y = (x[:, :12, 0].mean(axis=1) > x[:, 12:, 0].mean(axis=1)).astype("int32")

inputs = keras.Input((24, 8))
h = RelativeFavorAttention(2, 4)(inputs, inputs, use_causal_mask=True)
outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
model = keras.Model(inputs, outputs)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
assert np.isfinite(history.history["loss"]).all()

classifier = relperf_tf.build_model(
    "RelativePerformer", image_shape=(28, 28, 1), num_classes=10, dim=8, depth=1, heads=2
)
logits = classifier(np.zeros((2, 28, 28, 1), "float32"))
assert tuple(logits.shape) == (2, 10), logits.shape

folder = tempfile.mkdtemp()
try:
    path = os.path.join(folder, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
finally:
    shutil.rmtree(folder)

assert "tensorflow" not in sys.modules, "the library imported tensorflow"

command = os.path.join(os.path.dirname(sys.executable), "relperf-train")  # the venv's bin/
assert os.path.exists(command), "the wheel installed no relperf-train command"
result = subprocess.run([command, "--help"], capture_output=True, text=True)
message = result.stderr.strip().splitlines()
assert result.returncode != 0 and len(message) == 1 and "relperf_tf[app]" in message[0], (
    result.returncode,
    result.stderr,
)
print("wheel + jax[cpu]: trained, saved and reloaded on JAX without TensorFlow;", message[0])
