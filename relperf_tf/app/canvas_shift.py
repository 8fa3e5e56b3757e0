"""The 1-D shift and length tests of sequence models: a sequence inside a longer masked canvas.

A test sequence of N tokens is placed at offset s of a canvas of L ≥ N + s
background tokens (zeros), with a padding mask that marks its own tokens.
A model whose attention honours the mask and sees positions only through
differences (the exact 1-D factor) gives the same logits at every s; an
absolute encoding does not (its tokens' positions move); a model without
positions is invariant to any placement. The length test keeps s = 0 and
grows L beyond the training length.
"""

import numpy as np
import tensorflow as tf

from relperf_tf.app import data as data_lib


def place(pixels, offset, canvas_length):
    """`pixels` `[n, N, C]` at `offset` of a zero canvas: model inputs {pixels, padding_mask}."""
    count, length, channels = pixels.shape
    if offset < 0 or offset + length > canvas_length:
        raise ValueError(
            f"offset={offset} does not fit a sequence of {length} tokens into a canvas of "
            f"{canvas_length}; use 0 <= offset <= {canvas_length - length}."
        )
    canvas = np.zeros((count, canvas_length, channels), pixels.dtype)
    canvas[:, offset : offset + length] = pixels
    mask = np.zeros((count, canvas_length), bool)
    mask[:, offset : offset + length] = True
    return {"pixels": canvas, "padding_mask": mask}


def test_sequences(dataset, count, data_dir=None, embedding_type="linear"):
    """The first `count` test images as sequences `[count, N, C]` (the run's preprocessing)."""
    images, labels = data_lib.raw_test_images(dataset, data_dir)
    images, labels = images[:count], labels[:count]
    inputs = data_lib.preprocess(images, dataset, embedding_type, layout="sequence")
    return np.asarray(inputs["pixels"]), labels


def canvas_rows(model, pixels, labels, placements, batch_size=250):
    """One row per (offset, canvas length): accuracy, and the largest logit change against the
    first placement (0 for a model that is exactly invariant to it)."""
    rows, reference = [], None
    for offset, canvas_length in placements:
        # A dataset keeps the canvas length static (layers that lay out windows need it).
        inputs = tf.data.Dataset.from_tensor_slices(place(pixels, offset, canvas_length))
        logits = np.asarray(model.predict(inputs.batch(batch_size), verbose=0), "float64")
        if reference is None:
            reference = logits
        rows.append(
            dict(
                offset=int(offset),
                canvas_length=int(canvas_length),
                accuracy=float(np.mean(logits.argmax(-1) == labels)),
                max_logit_change=float(np.abs(logits - reference).max()),
            )
        )
    return rows


def shift_placements(length, max_offset, step=8):
    """s = 0, step, …, max_offset in a canvas of length + max_offset."""
    offsets = sorted(set(range(0, max_offset + 1, step)) | {max_offset})
    return [(offset, length + max_offset) for offset in offsets]


def length_placements(length, factors=(1.0, 1.25, 2.0)):
    """s = 0 in canvases of length·factor (1: the training length, no padding)."""
    return [(0, int(round(length * factor))) for factor in factors]
