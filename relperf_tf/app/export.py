"""SavedModel export for TF Serving: raw uint8 images in, probabilities out.

Layout: `<export_dir>/<version>/` (next free integer), signature
`serving_default`: `images` uint8 `[None, H, W, C]` at the dataset's native
size → `probabilities` float32 `[None, classes]`, `classes` int64 `[None]`;
`logits`: `pixels` as the model sees them (`[None, 32, 32, C]`, after the
resize and normalisation) → `logits` float32 `[None, classes]`.
Resize and normalisation run inside the graph; the random features are the
stored ones (no redraw at inference), so the export is deterministic.
`assets.extra/relperf.json` records dataset, class names and input shape.

With `jit_compile=True` the model's forward pass in both signatures is an
XLA-compiled function (the input checks and the resize stay in the graph):
on CPU it serves more images/s than the graph (docs/benchmarks.md, Serving).
TF Serving runs it only when started with `--xla_cpu_compilation_enabled=true`
(otherwise the first request fails), and compiles once per new batch size, so
pair it with fixed batch sizes (TF Serving's batching `allowed_batch_sizes`).
"""

import errno
import json
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from relperf_tf.app import data as data_lib

METADATA = os.path.join("assets.extra", "relperf.json")
FORMATS = ("saved_model", "keras")


def next_version(export_dir):
    taken = [
        int(name)
        for name in (os.listdir(export_dir) if os.path.isdir(export_dir) else [])
        if re.fullmatch(r"\d+", name)
    ]
    return max(taken, default=0) + 1


def _forward(model, jit_compile):
    """`model(inputs, training=False)` as float32 logits, XLA-compiled if `jit_compile`."""

    def logits(inputs):
        return tf.cast(model(inputs, training=False), tf.float32)

    return tf.function(logits, jit_compile=True) if jit_compile else logits


def serving_function(model, dataset, embedding_type, jit_compile=False):
    """The tf.function TF Serving calls: uint8 images → probabilities, classes."""
    spec = data_lib.get_spec(dataset)
    forward = _forward(model, jit_compile)

    @tf.function(
        input_signature=[tf.TensorSpec((None,) + spec.native_shape, tf.uint8, name="images")]
    )
    def serve(images):
        # Loaded signatures do not enforce static shapes: check, never resize garbage.
        expected = "images must be uint8 [batch, {}, {}, {}]".format(*spec.native_shape)
        # Padding keeps the comparison well-formed whatever rank arrives (the
        # graph's static shapes assume rank 4, so a rank test would be folded away).
        shape = tf.shape(images)
        padded = tf.concat([shape, tf.fill([4], -1)], axis=0)[1:4]
        valid = tf.reduce_all(tf.equal(padded, tf.constant(spec.native_shape)))
        with tf.control_dependencies([tf.debugging.Assert(valid, [expected, "got shape", shape])]):
            images = tf.identity(images)
        logits = forward(data_lib.preprocess(images, dataset, embedding_type))
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {
            "probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
        }

    return serve


def logits_function(model, dataset, embedding_type, jit_compile=False):
    """The `logits` signature: preprocessed 32×32 inputs (what the model sees) → logits.

    For experiments that act on the model's own pixel grid, such as the shift
    test, which moves images after the resize.
    """
    spec = data_lib.get_spec(dataset)
    dtype = tf.uint8 if embedding_type == "lookup" else tf.float32
    forward = _forward(model, jit_compile)

    @tf.function(input_signature=[tf.TensorSpec((None,) + spec.image_shape, dtype, name="pixels")])
    def logits(pixels):
        return {"logits": forward(pixels)}

    return logits


def export_saved_model(
    model, dataset, embedding_type, export_dir, extra_metadata=None, jit_compile=False
):
    """Writes `<export_dir>/<next version>/`; returns that path.

    `jit_compile`: the signatures run the model XLA-compiled (see the module
    docstring for what TF Serving needs then).

    The version directory appears only when complete (written to a temporary
    directory beside it, then renamed), so TF Serving never loads half a model.
    """
    spec = data_lib.get_spec(dataset)
    os.makedirs(export_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=export_dir)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serving_default", serving_function(model, dataset, embedding_type, jit_compile)
        )
        archive.add_endpoint("logits", logits_function(model, dataset, embedding_type, jit_compile))
        archive.write_out(staging, verbose=False)
        metadata = dict(
            dataset=dataset,
            class_names=list(spec.class_names),
            input_shape=list(spec.native_shape),
            input_dtype="uint8",
            embedding_type=embedding_type,
            jit_compile=bool(jit_compile),
            **(extra_metadata or {}),
        )
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, METADATA), "w") as f:
            json.dump(metadata, f, indent=2)
        target = _publish(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _publish(staging, export_dir):
    """Renames the complete `staging` directory to the next free version; returns it.

    Renaming onto an existing version fails (it is never empty), so two
    concurrent exports each get their own number.
    """
    while True:
        target = os.path.join(export_dir, str(next_version(export_dir)))
        try:
            os.rename(staging, target)
            return target
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise


def latest_version_dir(model_dir):
    """`model_dir` itself if it is a SavedModel, else its highest-numbered version."""
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    versions = [
        int(n)
        for n in (os.listdir(model_dir) if os.path.isdir(model_dir) else [])
        if re.fullmatch(r"\d+", n)
    ]
    if not versions:
        raise ValueError(
            f"MODEL_DIR {model_dir!r} holds no SavedModel (no saved_model.pb and no numbered "
            "version)."
        )
    return os.path.join(model_dir, str(max(versions)))


def read_metadata(version_dir):
    with open(os.path.join(version_dir, METADATA)) as f:
        return json.load(f)
