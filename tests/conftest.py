"""Test setup: TF backend, two logical CPUs (for MirroredStrategy), shared data."""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory):
    """A TFDS data dir with the real Fashion-MNIST, prepared offline from Debian's files."""
    from relperf_tf.app import data

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data.prepare("fashion_mnist", data_dir)
    return data_dir


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
