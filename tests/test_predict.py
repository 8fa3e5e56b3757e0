"""`predict.py`: classify image files with an exported model."""

import json

import numpy as np
import tensorflow as tf

from relperf_tf.app import data
from tests.conftest import run_script


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
    result = run_script("predict.py", [export_dir] + paths + ["--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads(result.stdout)
    assert [p["file"] for p in predictions] == paths
    assert predictions[0]["class_name"] == predictions[2]["class_name"]  # RGB of the same image
    assert all(0 < p["probability"] <= 1 for p in predictions)
    table = run_script("predict.py", [export_dir, paths[0]])
    assert table.returncode == 0 and table.stdout.startswith(paths[0] + "\t")

    big = tmp_path / "big.png"
    big.write_bytes(tf.io.encode_png(np.zeros((64, 64, 1), "uint8")).numpy())
    wrong = run_script("predict.py", [export_dir, str(big)])
    assert wrong.returncode != 0 and "28×28" in wrong.stderr
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    assert "not a PNG" in run_script("predict.py", [export_dir, str(junk)]).stderr
