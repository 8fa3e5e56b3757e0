"""Sequence classification with padding masks: sequential Fashion-MNIST.

Each 28×28 image becomes a sequence of pixels in raster order, cut after its last non-blank
pixel, so the sequences have different lengths and a batch is padded (with -1, a value no
pixel has). The padding mask says which tokens are real; every attention layer and the
pooling receive it, so padded tokens change nothing real.

Positions are the token order, applied exactly by `RelativeFavorAttention` (its default
`position_kernel="exact"`): attention depends on how far apart two pixels are, not on where
they are, and the layer runs at any length.

    python examples/sequence_classification.py           # a few minutes on a laptop CPU
    python examples/sequence_classification.py --quick   # a few steps (the tests run this)

Data: Fashion-MNIST, prepared offline by relperf_tf's application (`pip install
"relperf_tf[app]"`; on Debian the files come from `apt-get install dataset-fashion-mnist`).
"""

import argparse

import keras
import numpy as np

from relperf_tf.layers import RelativeFavorAttention


def load_sequences(split, count):
    """Pixels in raster order, each sequence cut after its last non-blank pixel, and labels."""
    import tensorflow_datasets as tfds

    from relperf_tf.app import data

    builder = data.prepare("fashion_mnist")
    images, labels = tfds.as_numpy(
        builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
    )
    pixels = images[:count].reshape(count, -1).astype("float32") / 255.0  # [N, 784]
    lengths = 784 - np.argmax(pixels[:, ::-1] > 0, axis=1)  # up to the last non-blank pixel
    padded = np.zeros_like(pixels)
    for row, length in enumerate(lengths):
        padded[row, :length] = pixels[row, :length]
    # Padding is marked with -1, which no pixel has (the model reads its mask from it).
    padded[np.arange(784)[None, :] >= lengths[:, None]] = -1.0
    return padded[..., None], labels[:count], lengths


def build_model(dim=32, heads=4, blocks=2):
    """Pixels [batch, tokens, 1] (-1 = padding) → class logits."""
    pixels = keras.Input((None, 1))
    # The padding mask, True for real tokens: every attention layer and the pooling get it.
    mask = keras.ops.not_equal(pixels[..., 0], -1.0)
    x = keras.layers.Dense(dim)(pixels)
    for _ in range(blocks):
        # Pre-norm residual blocks: attention, then a feed-forward layer.
        h = keras.layers.LayerNormalization()(x)
        x = x + RelativeFavorAttention(heads, dim // heads)(h, h, query_mask=mask, value_mask=mask)
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.Dense(dim)(keras.layers.Dense(2 * dim, activation="gelu")(h))
    pooled = keras.layers.GlobalAveragePooling1D()(x, mask=mask)  # the real tokens' mean
    return keras.Model(pixels, keras.layers.Dense(10)(pooled))


def main(quick=False):
    count = 256 if quick else 20_000
    x, y, lengths = load_sequences("train", count)
    print(f"{count} sequences of {lengths.min()} to {lengths.max()} pixels")
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=4 if quick else None, verbose=2)
    test_x, test_y, _ = load_sequences("test", 256 if quick else 2_000)
    _, accuracy = model.evaluate(test_x, test_y, verbose=0)
    print(f"test accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to check it runs")
    main(parser.parse_args().quick)
