"""SavedModel export for TF Serving: round trip without relperf_tf, signatures, versions, .keras."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from relperf_tf import data, export, runs
from tests.conftest import run_script

SERVE_WITHOUT_RELPERF = """
import sys, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(images=tf.constant(np.load(sys.argv[2])))
assert "relperf_tf" not in sys.modules
np.save(sys.argv[3], out["probabilities"].numpy())
print(out["probabilities"].dtype.name, out["classes"].dtype.name)
"""


def test_export_round_trip_in_a_process_without_relperf(tmp_path, exported, fashion_mnist_dir):
    run_dir, export_dir = exported
    version_dir = os.path.join(export_dir, "1")
    images, _ = data.raw_test_images("fashion_mnist", fashion_mnist_dir)
    np.save(tmp_path / "images.npy", images[:64])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_WITHOUT_RELPERF,
            version_dir,
            str(tmp_path / "images.npy"),
            str(tmp_path / "probs.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["float32", "int64"]
    model = runs.load_best_model(run_dir)
    expected = tf.nn.softmax(
        model.predict(data.preprocess(images[:64], "fashion_mnist", "linear"), verbose=0)
    ).numpy()
    assert np.abs(np.load(tmp_path / "probs.npy") - expected).max() <= 1e-5


def test_saved_model_cli_lists_the_signature(exported):
    _, export_dir = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", os.path.join(export_dir, "1"), "--all"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for word in (
        "serving_default",
        "images",
        "uint8",
        "probabilities",
        "classes",
        "(-1, 28, 28, 1)",
    ):
        assert word in result.stdout


@pytest.mark.parametrize(
    "images,message",
    [
        (np.zeros((2, 28, 28, 1), "float32"), "expected to be a uint8 tensor"),
        (np.zeros((28, 28, 1), "uint8"), "images must be uint8 [batch, 28, 28, 1]"),
        (np.zeros((2, 32, 32, 1), "uint8"), "images must be uint8 [batch, 28, 28, 1]"),
        (np.zeros((2, 28, 28, 3), "uint8"), "images must be uint8 [batch, 28, 28, 1]"),
    ],
    ids=["float32", "rank3", "32x32", "rgb"],
)
def test_signature_rejects_bad_inputs(exported, images, message):
    _, export_dir = exported
    serve = tf.saved_model.load(os.path.join(export_dir, "1")).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        serve(images=tf.constant(images))


def test_next_export_gets_the_next_version(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    model = runs.load_best_model(run_dir)
    for expected in ("1", "2"):
        path = export.export_saved_model(model, "fashion_mnist", "linear", str(tmp_path))
        assert os.path.basename(path) == expected
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_keras_format(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    result = run_script(
        "export.py", [run_dir, f"--export_dir={tmp_path / 'model.keras'}", "--format=keras"]
    )
    assert result.returncode == 0 and (tmp_path / "model.keras").exists()
