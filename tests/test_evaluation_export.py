"""Evaluation CSV, shift experiment, SavedModel export/serving signature, predict."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from relperf_tf import data, export, runs, shift, training
from tests.conftest import REPO

SCRIPTS = os.path.join(REPO, "scripts")


def script(name, args, **kwargs):
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name)] + args, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_mnist_dir):
    log_dir = tmp_path_factory.mktemp("logs")
    config = training.resolve_config(
        "RelativePerformer", "fashion_mnist", log_dir=str(log_dir), data_dir=fashion_mnist_dir,
        dim=8, depth=1, heads=2, nb_features=4, batch_size=32, epochs=1, steps_per_epoch=5, seed=0, verbose=0,
    )
    result = training.train(config)
    return result["run_dir"], str(log_dir)


def test_evaluate_csv_appends_without_duplicates(tmp_path, tiny_run):
    run_dir, log_dir = tiny_run
    output = str(tmp_path / "results.csv")
    for _ in range(2):
        result = script("evaluate.py", [log_dir, f"--output={output}"])
        assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(output)))
    assert len(rows) == 1
    row = rows[0]
    assert row["run_dir"] == run_dir and row["model"] == "RelativePerformer" and row["dim"] == "8"
    recorded = json.load(open(os.path.join(run_dir, "test_metrics.json")))
    assert float(row["test_accuracy"]) == pytest.approx(recorded["test_accuracy"], abs=1e-6)
    assert int(row["parameters"]) > 0 and float(row["test_loss"]) > 0


def test_shift_moves_pixels_exactly_and_wraps_only_empty_columns():
    rng = np.random.default_rng(0)
    images = np.zeros((3, 6, 20, 1), "uint8")
    images[0, :, 5:15] = rng.integers(1, 255, size=(6, 10, 1))  # 5 empty columns each side
    images[1, :, 4:15] = 7  # only 4 empty columns on the left
    images[2, :, 5:16] = 9  # only 4 on the right
    np.testing.assert_array_equal(shift.empty_border_mask(images, 5), [True, False, False])
    np.testing.assert_array_equal(shift.empty_border_mask(images, 4), [True, True, True])
    for s in range(-5, 6):
        moved = shift.shift_images(images[:1], s)
        np.testing.assert_array_equal(moved[0, :, 5 + s : 15 + s], images[0, :, 5:15])  # moved exactly
        assert moved.sum() == images[:1].sum()  # nothing lost
        assert np.count_nonzero(moved) == np.count_nonzero(images[:1])


def test_selection_refuses_when_nothing_qualifies(fashion_mnist_dir):
    images, labels = shift.select_images("fashion_mnist", [1], 8, fashion_mnist_dir)
    assert len(images) > 100 and set(labels) == {1}
    resized = np.array(data.preprocess(images, "fashion_mnist", "lookup"))
    assert shift.empty_border_mask(resized, 8).all()
    with pytest.raises(ValueError, match="no fashion_mnist test image"):
        shift.select_images("fashion_mnist", [1], 16, fashion_mnist_dir)
    with pytest.raises(ValueError, match="dataset='cifar10'"):
        shift.select_images("cifar10", [1], 8)


def test_shift_script_writes_csv_and_plot(tmp_path, tiny_run):
    run_dir, _ = tiny_run
    output, plot = tmp_path / "shift.csv", tmp_path / "shift.png"
    result = script("shift_robustness.py", [run_dir, "--labels=1", "--max_shift=4", f"--output={output}", f"--plot={plot}"])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(output)))
    assert [int(r["shift"]) for r in rows] == list(range(-4, 5))
    assert all(0 <= float(r["accuracy_mean"]) <= 1 and int(r["images"]) > 0 for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    refused = script("shift_robustness.py", [run_dir, "--labels=1", "--max_shift=16", f"--output={tmp_path / 'no.csv'}"])
    assert refused.returncode != 0 and "no fashion_mnist test image" in refused.stderr
    assert not (tmp_path / "no.csv").exists()
    stepped = script("shift_robustness.py", [run_dir, "--labels=1", "--max_shift=4", "--shift_step=3", f"--output={output}"])
    assert stepped.returncode == 0, stepped.stderr[-2000:]
    assert [int(r["shift"]) for r in csv.DictReader(open(output))] == [-4, -3, 0, 3, 4]
    refused = script("shift_robustness.py", [run_dir, "--shift_step=0", f"--output={tmp_path / 'no.csv'}"])
    assert refused.returncode == 2 and "--shift_step=0" in refused.stderr
    assert not (tmp_path / "no.csv").exists()


SERVE_WITHOUT_RELPERF = """
import sys, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(images=tf.constant(np.load(sys.argv[2])))
assert "relperf_tf" not in sys.modules
np.save(sys.argv[3], out["probabilities"].numpy())
print(out["probabilities"].dtype.name, out["classes"].dtype.name)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
    run_dir, _ = tiny_run
    export_dir = str(tmp_path_factory.mktemp("saved_models") / "relative")
    result = script("export.py", [run_dir, f"--export_dir={export_dir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir, export_dir


def test_export_round_trip_in_a_process_without_relperf(tmp_path, exported, fashion_mnist_dir):
    run_dir, export_dir = exported
    version_dir = os.path.join(export_dir, "1")
    images, _ = data.raw_test_images("fashion_mnist", fashion_mnist_dir)
    np.save(tmp_path / "images.npy", images[:64])
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_RELPERF, version_dir, str(tmp_path / "images.npy"), str(tmp_path / "probs.npy")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["float32", "int64"]
    model = runs.load_best_model(run_dir)
    expected = tf.nn.softmax(model.predict(data.preprocess(images[:64], "fashion_mnist", "linear"), verbose=0)).numpy()
    assert np.abs(np.load(tmp_path / "probs.npy") - expected).max() <= 1e-5


def test_shift_experiment_on_the_saved_model_matches_the_run(exported):
    """The `logits` signature lets the shift test run on what is served: same curve as best.keras."""
    run_dir, export_dir = exported
    rows = shift.run_shift_experiment([run_dir, export_dir], [1], 4, step=4)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["run_dir"], []).append((row["shift"], row["accuracy_mean"], row["loss_mean"]))
    (first, curve), (second, other) = sorted(by_source.items())
    assert [r[0] for r in curve] == [-4, 0, 4]
    np.testing.assert_allclose(np.array(curve), np.array(other), atol=1e-5)
    assert {row["model"] for row in rows} == {"RelativePerformer"}


def test_saved_model_cli_lists_the_signature(exported):
    _, export_dir = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", os.path.join(export_dir, "1"), "--all"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for word in ("serving_default", "images", "uint8", "probabilities", "classes", "(-1, 28, 28, 1)"):
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
    result = script("export.py", [run_dir, f"--export_dir={tmp_path / 'model.keras'}", "--format=keras"])
    assert result.returncode == 0 and (tmp_path / "model.keras").exists()


def test_predict_on_png_files(tmp_path, exported, fashion_mnist_dir):
    _, export_dir = exported
    images, _ = data.raw_test_images("fashion_mnist", fashion_mnist_dir)
    paths = []
    for index, image in enumerate(images[:2]):
        path = tmp_path / f"gray{index}.png"
        path.write_bytes(tf.io.encode_png(image).numpy())
        paths.append(str(path))
    rgb = tmp_path / "rgb.png"
    rgb.write_bytes(tf.io.encode_png(tf.image.grayscale_to_rgb(tf.constant(images[0]))).numpy())
    paths.append(str(rgb))
    result = script("predict.py", [export_dir] + paths + ["--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads(result.stdout)
    assert [p["file"] for p in predictions] == paths
    assert predictions[0]["class_name"] == predictions[2]["class_name"]  # RGB of the same image
    assert all(0 < p["probability"] <= 1 for p in predictions)
    table = script("predict.py", [export_dir, paths[0]])
    assert table.returncode == 0 and table.stdout.startswith(paths[0] + "\t")

    big = tmp_path / "big.png"
    big.write_bytes(tf.io.encode_png(np.zeros((64, 64, 1), "uint8")).numpy())
    wrong = script("predict.py", [export_dir, str(big)])
    assert wrong.returncode != 0 and "28×28" in wrong.stderr
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    assert "not a PNG" in script("predict.py", [export_dir, str(junk)]).stderr
