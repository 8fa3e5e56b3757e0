"""Input pipelines: offline Fashion-MNIST, mock MNIST/CIFAR-10, missing-data errors."""

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from relperf_tf.app import data

CHECKSUMS = os.path.join(os.path.dirname(tfds.__file__), "url_checksums", "fashion_mnist.txt")


def test_debian_files_restore_to_the_upstream_checksums(tmp_path):
    registered = {}
    with open(CHECKSUMS) as f:
        for line in f:
            url, size, sha, name = line.split()
            registered[name] = (int(size), sha)
    for name, (size, sha) in registered.items():
        target = tmp_path / name
        data.data_sources.restore_upstream_gzip(
            os.path.join(data.data_sources.DEBIAN_FASHION_MNIST, name), str(target)
        )
        content = target.read_bytes()
        assert (len(content), hashlib.sha256(content).hexdigest()) == (size, sha), name


def test_offline_fashion_mnist_is_complete(fashion_mnist_dir):
    builder = data.prepare("fashion_mnist", fashion_mnist_dir)
    assert builder.info.splits["train"].num_examples == 60_000
    assert builder.info.splits["test"].num_examples == 10_000
    labels = tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True, batch_size=-1))[1]
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [6000] * 10)


def test_real_pipeline_splits_and_ranges(fashion_mnist_dir):
    splits = data.load("fashion_mnist", 64, data_dir=fashion_mnist_dir, seed=0)
    images, labels = next(iter(splits.train))
    assert images.shape == (64, 32, 32, 1) and images.dtype.name == "float32"
    assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
    assert labels.shape == (64,)
    assert sum(int(b[1].shape[0]) for b in splits.validation) == 5000


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
@pytest.mark.parametrize("embedding_type", ["linear", "lookup"])
def test_mock_pipelines(monkeypatch, tmp_path, dataset, embedding_type):
    monkeypatch.setattr(data.data_sources, "network_available", lambda: True)
    with tfds.testing.mock_data(num_examples=12):
        splits = data.load(dataset, 4, embedding_type, data_dir=str(tmp_path), validation_size=4)
        images, labels = next(iter(splits.train))
    channels = data.DATASETS[dataset].channels
    assert images.shape == (4, 32, 32, channels)
    assert labels.dtype.name == "int64" and np.all(
        (np.array(labels) >= 0) & (np.array(labels) < 10)
    )
    values = np.array(images)
    if embedding_type == "lookup":
        assert images.dtype.name == "uint8"
    elif dataset == "cifar10":
        # (x − mean)/std of values in [0, 1]
        assert (
            values.min() >= -0.4914 / 0.2023 - 1e-4 and values.max() <= (1 - 0.4465) / 0.2010 + 1e-4
        )
    else:
        assert images.dtype.name == "float32" and 0 <= values.min() and values.max() <= 1


def test_preprocess_resizes_bilinearly_and_scales():
    images = np.full((2, 28, 28, 1), 255, "uint8")
    out = np.array(data.preprocess(images, "mnist", "linear"))
    assert out.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    cifar = np.array(data.preprocess(np.zeros((1, 32, 32, 3), "uint8"), "cifar10", "linear"))
    np.testing.assert_allclose(
        cifar[0, 0, 0],
        -np.array([0.4914, 0.4822, 0.4465]) / np.array([0.2023, 0.1994, 0.2010]),
        rtol=1e-5,
    )


def test_missing_data_gives_an_actionable_error(monkeypatch, tmp_path):
    monkeypatch.setattr(data.data_sources, "network_available", lambda: False)
    with pytest.raises(data.DataUnavailableError, match="--data_dir=DIR.*TFDS_DATA_DIR"):
        data.load("cifar10", 4, data_dir=str(tmp_path / "empty"))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset='svhn'"):
        data.get_spec("svhn")


def test_random_translation_moves_images_and_fills_the_background():
    from relperf_tf.app.data import preprocess, random_translation

    raw = np.zeros((8, 32, 32, 1), "uint8")
    raw[:, 12:20, 12:20] = 255
    images = preprocess(tf.constant(raw), "fashion_mnist", "linear")
    background = float(preprocess(tf.zeros((1, 1, 1, 1)), "fashion_mnist", "linear")[0, 0, 0, 0])
    moved = random_translation("fashion_mnist", "linear", 4, seed=0)(images).numpy()
    assert moved.shape == images.shape
    bright = moved > (background + float(tf.reduce_max(images))) / 2
    # Every square moved by at most 4 pixels along each axis, kept its size, and some moved.
    assert all(bright[i].sum() == 64 for i in range(8))
    rows = [np.nonzero(bright[i].any(axis=(1, 2)))[0] for i in range(8)]
    assert all(8 <= r.min() <= 16 for r in rows)
    assert any(r.min() != 12 for r in rows)
    np.testing.assert_allclose(moved[~bright], background, atol=1e-6)
    blank = tf.fill((2, 32, 32, 1), background)
    np.testing.assert_allclose(random_translation("fashion_mnist", "linear", 4)(blank), blank)


@pytest.mark.parametrize("embedding_type", ["linear", "lookup"])
def test_random_flip_mirrors_some_images_left_right_and_keeps_the_rest(embedding_type):
    from relperf_tf.app.data import random_flip

    raw = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 1)).astype("uint8")
    images = raw if embedding_type == "lookup" else raw.astype("float32") / 255.0
    flipped = np.asarray(random_flip(embedding_type, seed=0)(tf.constant(images)))
    assert flipped.dtype == images.dtype
    mirrored = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images)]
    kept = [np.array_equal(f, i) for f, i in zip(flipped, images)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image is one or the other
    assert 16 <= sum(mirrored) <= 48  # probability ½ each (±4σ)


def test_flip_augmentation_applies_to_training_batches_only(monkeypatch, tmp_path):
    monkeypatch.setattr(data.data_sources, "network_available", lambda: True)
    with tfds.testing.mock_data(num_examples=40):
        plain = data.load("mnist", 40, data_dir=str(tmp_path), validation_size=8, seed=0)
        flips = data.load(
            "mnist", 40, data_dir=str(tmp_path), validation_size=8, seed=0, augment_flip=True
        )
        (a, _), (b, _) = next(iter(plain.train)), next(iter(flips.train))
        a, b = np.asarray(a), np.asarray(b)
        mirrored = sum(
            np.array_equal(y, x[:, ::-1]) and not np.array_equal(y, x) for x, y in zip(a, b)
        )
        assert 0 < mirrored < len(a)
        for split in ("validation", "test"):
            (x, _), (y, _) = next(iter(getattr(plain, split))), next(iter(getattr(flips, split)))
            np.testing.assert_array_equal(x, y)
