"""TFDS input pipelines: MNIST, Fashion-MNIST (offline from Debian), CIFAR-10.

Splits: train = the training split minus its last `validation_size` (5 000)
examples, validation = those examples, test = the test split. Images are
resized to 32×32 (bilinear); MNIST/Fashion-MNIST are scaled to [0, 1], CIFAR-10
normalised per channel; the `lookup` embedding receives uint8 values instead.
Pipeline: map → cache → shuffle(seeded) → batch → prefetch(AUTOTUNE).
"""

import dataclasses
import glob
import os
import shutil
import tempfile

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from relperf_tf.app import data_sources
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


def _missing_data_message(dataset, data_dir):
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return (
        f"dataset {dataset!r} is not prepared in {where} and cannot be downloaded (no network). "
        f"Provide it with --data_dir=DIR (or TFDS_DATA_DIR=DIR) pointing at a TFDS data dir that "
        f"holds {dataset}, e.g. one made with `tfds build {dataset}` on a machine with network."
    )


def prepare(dataset, data_dir=None):
    """The prepared TFDS builder; prepares it first if needed.

    Fashion-MNIST is prepared offline from Debian's `dataset-fashion-mnist`
    files (checksums verified by TFDS); other datasets are downloaded when
    the network allows, else `DataUnavailableError` says how to provide them.
    """
    get_spec(dataset)
    builder = tfds.builder(dataset, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    debian = data_sources.DEBIAN_FASHION_MNIST
    if dataset == "fashion_mnist" and os.path.isdir(debian):
        manual_dir = tempfile.mkdtemp(prefix="fashion_mnist_")
        try:
            for name in sorted(os.listdir(debian)):
                if name.endswith(".gz"):
                    data_sources.restore_upstream_gzip(
                        os.path.join(debian, name), os.path.join(manual_dir, name)
                    )
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except NonMatchingChecksumError as error:
            # TFDS prepares into a temporary folder: nothing is left that a later run would trust.
            detail = " ".join(str(error).split())
            raise DataUnavailableError(
                f"a file of {debian} does not match Fashion-MNIST's registered checksum "
                f"({detail[:200]}); reinstall it: sudo apt-get install --reinstall "
                "dataset-fashion-mnist."
            ) from None
        finally:
            shutil.rmtree(manual_dir, ignore_errors=True)
        return builder
    if not data_sources.network_available():
        raise DataUnavailableError(_missing_data_message(dataset, data_dir))
    builder.download_and_prepare()
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
    rebuild = f"delete {builder.data_dir} and run again to rebuild it" + (
        " from Debian's files"
        if dataset == "fashion_mnist"
        else f" (`tfds build {dataset}`, or a copy made on a machine with network)"
    )
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
