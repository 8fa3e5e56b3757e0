"""Test setup: TF backend, two logical CPUs (for MirroredStrategy), shared data."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory):
    """A TFDS data dir with the real Fashion-MNIST, prepared offline from Debian's files."""
    from relperf_tf import data

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data.prepare("fashion_mnist", data_dir)
    return data_dir
