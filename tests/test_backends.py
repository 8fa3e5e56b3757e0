"""One library, three Keras backends: the same draws, logits, `.keras` files and training.

TensorFlow builds each model and writes its weights and `.keras` file; JAX
and PyTorch, each in a fresh interpreter (`tests/backend_probe.py`), draw
from the same seeds, set the same weights, load the same file and train the
tiny preset's model for a few steps on NumPy arrays.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

OTHER_BACKENDS = ("jax", "torch")
TINY = dict(image_shape=[6, 6, 1], num_classes=3, dim=16, depth=2, heads=2, nb_features=8, seed=3)
CASES = {
    "Performer": dict(name="Performer"),
    "NoposPerformer": dict(name="NoposPerformer"),
    "RelativePerformer": dict(name="RelativePerformer"),
    "RelativePerformer-exact": dict(name="RelativePerformer", position_kernel="exact"),
    "RelativePerformer-circular": dict(
        name="RelativePerformer", position_kernel="circular", locality=4.0
    ),
    "ClippedRelativePerformer": dict(name="ClippedRelativePerformer", clipping_dist=2),
    "LearnedPositionPerformer": dict(name="LearnedPositionPerformer"),
}
TOLERANCE = 1e-5  # float32 logits: max |difference| (the bound)


def probe(backend, workdir, *mode):
    result = subprocess.run(
        [sys.executable, "-m", "tests.backend_probe", backend, str(workdir), *mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, f"{backend}: {result.stderr[-3000:]}"
    with np.load(os.path.join(workdir, f"{backend}.npz")) as results:
        return dict(results)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{backend: its probe's arrays}, TensorFlow's made first."""
    from relperf_tf.app.run_config import PRESETS

    workdir = tmp_path_factory.mktemp("backends")
    tiny = PRESETS["tiny"]
    fit_model = dict(
        name="RelativePerformer",
        position_kernel="circular",
        image_shape=[28, 28, 1],
        num_classes=10,
        seed=1,
        **{k: tiny[k] for k in ("dim", "depth", "heads", "nb_features")},
    )
    spec = dict(
        cases={name: dict(TINY, **options) for name, options in CASES.items()},
        fit=dict(
            model=fit_model,
            batch_size=tiny["batch_size"],
            learning_rate=tiny["learning_rate"],
            epochs=4,
        ),
    )
    with open(workdir / "cases.json", "w") as f:
        json.dump(spec, f)
    images = np.random.default_rng(0).random((4, *TINY["image_shape"])).astype("float32")
    np.save(workdir / "images.npy", images)
    found = {"tensorflow": probe("tensorflow", workdir, "make")}
    # The other backends' probes read TensorFlow's files only: both at once (2 cores).
    with concurrent.futures.ThreadPoolExecutor(len(OTHER_BACKENDS)) as pool:
        runs = {backend: pool.submit(probe, backend, workdir) for backend in OTHER_BACKENDS}
    found.update({backend: run.result() for backend, run in runs.items()})
    return found


def worst(results, key):
    return max(
        float(np.abs(results[b][key] - results["tensorflow"][key]).max()) for b in OTHER_BACKENDS
    )


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_weights_give_the_same_logits_on_every_backend(results, case):
    for backend in OTHER_BACKENDS:
        for kind in ("logits", "loaded"):
            difference = np.abs(
                results[backend][f"{case}/{kind}"] - results["tensorflow"][f"{case}/logits"]
            ).max()
            print(f"{case} {backend} {kind}: max |Δ logits| = {difference:.2e}")
            assert difference <= TOLERANCE, (case, backend, kind, difference)


def test_the_same_seed_draws_the_same_projection_on_every_backend(results):
    keys = [k for k in results["tensorflow"] if "/draw" in k]
    assert len(keys) >= 2 * len(CASES)  # every model has two FAVOR+ blocks
    for key in keys:
        for backend in OTHER_BACKENDS:
            # Threefry's bits are identical; Box–Muller's log/cos and the QR round differently.
            np.testing.assert_allclose(
                results[backend][key], results["tensorflow"][key], rtol=1e-5, atol=1e-5
            )
    print("max |Δ projection| over all draws:", max(worst(results, k) for k in keys))


@pytest.mark.parametrize("backend", ("tensorflow",) + OTHER_BACKENDS)
def test_fit_on_numpy_arrays_lowers_the_loss_on_every_backend(results, backend):
    losses = results[backend]["fit/loss"]
    print(backend, "tiny-preset losses:", np.round(losses, 4))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
