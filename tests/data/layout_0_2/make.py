"""Writes the fixture files of this folder with relperf_tf 0.2 (commit 3964591), whose layers
had `seed=0` defaults, `RelativeFavorAttention(num_heads, position_kernel, …)` and an output
projection named `output`; `tests/test_layout_0_2.py` loads them with today's code.

Run from a checkout of that commit: `python tests/data/layout_0_2/make.py OUT_DIR`.
"""

import os
import sys

import keras
import numpy as np

from relperf_tf.layers import ClippedRelativeAttention, FavorAttention, RelativeFavorAttention
from relperf_tf.models import build_sequence_model


def layers_model():
    """A functional model of the three layers as a user would have written them then."""
    tokens = keras.Input((12, 16))
    x = FavorAttention(2, key_dim=4, nb_features=8)(tokens, tokens)
    x = RelativeFavorAttention(2, position_kernel="exact", pos_scales=2, nb_features=4)(x, x)
    x = RelativeFavorAttention(2, pos_scales=2, nb_features=4)(x, x, use_causal_mask=True)
    x = ClippedRelativeAttention(2, grid_shape=(3, 4), class_token=False, clipping_dist=2)(x, x)
    return keras.Model(tokens, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x)))


def main(out):
    keras.utils.set_random_seed(0)
    inputs = np.random.default_rng(0).normal(size=(2, 12, 16)).astype("float32")
    model = layers_model()
    model.compile("adam", "mse")
    model.fit(inputs, np.ones((2, 3)), epochs=1, verbose=0)  # optimizer state in the file
    model.save(os.path.join(out, "layers.keras"))
    sequence = build_sequence_model(
        "RelativePerformer",
        channels=1,
        num_classes=3,
        dim=16,
        depth=2,
        heads=2,
        position_kernel="exact",
        nb_features=4,
        causal=True,
        seed=3,
        max_length=20,
    )
    pixels = np.random.default_rng(1).normal(size=(2, 20, 1)).astype("float32")
    batch = {"pixels": pixels, "padding_mask": np.arange(20)[None] < np.array([[20], [15]])}
    sequence.save(os.path.join(out, "sequence_relative_exact.keras"))
    np.savez(
        os.path.join(out, "expected.npz"),
        inputs=inputs,
        layers=model.predict(inputs, verbose=0),
        pixels=pixels,
        padding_mask=batch["padding_mask"],
        sequence=sequence.predict(batch, verbose=0),
    )


if __name__ == "__main__":
    main(sys.argv[1])
