"""One Keras backend's view of the cross-backend cases (`tests/test_backends.py` runs it).

    python -m tests.backend_probe BACKEND WORKDIR

In a fresh interpreter under `KERAS_BACKEND=BACKEND`, for each case in
WORKDIR/cases.json: the projections a fresh build draws from the case's seed,
the logits with the weights of WORKDIR/<case>.npz (made on TensorFlow) set,
and the logits of WORKDIR/<case>.keras loaded. Then a few `fit` steps of the
tiny preset's model on NumPy arrays. Everything goes to WORKDIR/BACKEND.npz
(`make` mode, on TensorFlow, first writes the cases' weights and files).
"""

import json
import os
import sys


def projections(model):
    """The FAVOR+ draws of a model (its `projection` weights), in weight order."""
    import keras

    return [keras.ops.convert_to_numpy(w) for w in model.weights if w.path.endswith("/projection")]


def run(backend, workdir, make=False):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    from relperf_tf import build_model

    assert keras.backend.backend() == backend, keras.backend.backend()
    with open(os.path.join(workdir, "cases.json")) as f:
        spec = json.load(f)
    images = np.load(os.path.join(workdir, "images.npy"))
    results = {}
    for name, arguments in spec["cases"].items():
        model = build_model(**arguments)
        for index, draw in enumerate(projections(model)):
            results[f"{name}/draw{index}"] = draw
        stem = os.path.join(workdir, name)
        if make:
            weights = model.get_weights()
            np.savez(stem + ".npz", *weights)
            model.save(stem + ".keras")
        else:
            with np.load(stem + ".npz") as stored:
                model.set_weights([stored[f"arr_{i}"] for i in range(len(stored.files))])
            loaded = keras.saving.load_model(stem + ".keras")
            results[f"{name}/loaded"] = keras.ops.convert_to_numpy(loaded(images))
        results[f"{name}/logits"] = keras.ops.convert_to_numpy(model(images))

    fit = spec["fit"]
    keras.utils.set_random_seed(0)
    model = build_model(**fit["model"])
    model.compile(
        optimizer=keras.optimizers.Adam(fit["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    shape = [fit["batch_size"]] + fit["model"]["image_shape"]
    x = rng.random(shape).astype("float32")
    y = rng.integers(0, fit["model"]["num_classes"], fit["batch_size"])
    history = model.fit(x, y, batch_size=fit["batch_size"], epochs=fit["epochs"], verbose=0)
    results["fit/loss"] = np.array(history.history["loss"])
    np.savez(os.path.join(workdir, f"{backend}.npz"), **results)


if __name__ == "__main__":
    backend, workdir = sys.argv[1], sys.argv[2]
    run(backend, workdir, make=len(sys.argv) > 3 and sys.argv[3] == "make")
