"""SavedModel export for TF Serving: round trip without relperf_tf, signatures, versions, .keras."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from relperf_tf.app import data, export, runs
from tests.conftest import run_script

SERVE_WITHOUT_RELPERF = """
import sys, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(images=tf.constant(np.load(sys.argv[2])))
assert "relperf_tf" not in sys.modules
np.save(sys.argv[3], out["probabilities"].numpy())
print(out["probabilities"].dtype.name, out["classes"].dtype.name)
"""


def _served_without_relperf(version_dir, images, tmp_path):
    """Probabilities of `serving_default` on `images`, computed in a process without relperf_tf."""
    np.save(tmp_path / "images.npy", images)
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
    return np.load(tmp_path / "probs.npy")


def _keras_probabilities(run_dir, images):
    model = runs.load_best_model(run_dir)
    return tf.nn.softmax(
        model.predict(data.preprocess(images, "fashion_mnist", "linear"), verbose=0)
    ).numpy()


def test_export_round_trip_in_a_process_without_relperf(tmp_path, exported, fashion_mnist_dir):
    run_dir, export_dir = exported
    images = data.raw_test_images("fashion_mnist", fashion_mnist_dir)[0][:64]
    served = _served_without_relperf(os.path.join(export_dir, "1"), images, tmp_path)
    assert np.abs(served - _keras_probabilities(run_dir, images)).max() <= 1e-5


def _xla_functions(version_dir):
    """Names of the SavedModel's functions marked for XLA compilation."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return [
        function.signature.name
        for graph in saved.meta_graphs
        for function in graph.graph_def.library.function
        if function.attr["_XlaMustCompile"].b
    ]


def test_xla_export_serves_the_same_probabilities(tmp_path, exported, fashion_mnist_dir):
    run_dir, plain_dir = exported
    export_dir = tmp_path / "xla"
    result = run_script("export.py", [run_dir, f"--export_dir={export_dir}", "--jit_compile"])
    assert result.returncode == 0, result.stderr[-2000:]
    version_dir = str(export_dir / "1")
    assert _xla_functions(version_dir) and not _xla_functions(os.path.join(plain_dir, "1"))
    assert export.read_metadata(version_dir)["jit_compile"] is True
    assert export.read_metadata(os.path.join(plain_dir, "1"))["jit_compile"] is False
    images = data.raw_test_images("fashion_mnist", fashion_mnist_dir)[0][:64]
    served = _served_without_relperf(version_dir, images, tmp_path)
    assert np.abs(served - _keras_probabilities(run_dir, images)).max() <= 1e-5
    # The input checks stay outside the compiled function.
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be uint8"):
        serve(images=tf.zeros([2, 32, 32, 1], tf.uint8))


def test_jit_compile_is_refused_for_keras_files(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    target = tmp_path / "model.keras"
    result = run_script(
        "export.py", [run_dir, f"--export_dir={target}", "--format=keras", "--jit_compile"]
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: flag --jit_compile applies to --format=saved_model only, not 'keras'."
    )
    assert not os.listdir(tmp_path)


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
