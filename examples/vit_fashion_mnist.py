"""A ViT on Fashion-MNIST patches with exact 2-D relative positions.

The 28×28 image is cut into 4×4 patches: a 7×7 grid of 16-value tokens. Attention runs over
the rows and columns of that grid (`attention_axes=(1, 2)` on a `[batch, 7, 7, dim]` tensor,
as `keras.layers.MultiHeadAttention` takes it), and `RelativeFavorAttention` multiplies every
attention weight by exp(P_row(Δr) + P_col(Δc)), learned and applied exactly, for any random
draw of FAVOR+'s features. No position embedding is added anywhere.

With `position_kernel="circular"` the offsets are taken modulo the grid, and the model is
exactly equivariant to cyclic shifts of the patch grid: roll the image by a patch and every
feature rolls with it (checked at the end). `position_kernel="exact"` (the layer's default)
uses the offsets on the finite grid instead: equivariant too, but a token near the border
sees a different neighbourhood when the content moves.

    python examples/vit_fashion_mnist.py           # minutes on a laptop CPU
    python examples/vit_fashion_mnist.py --quick   # a few steps (the tests run this)

Data: Fashion-MNIST, prepared offline by relperf_tf's application (`pip install
"relperf_tf[app]"`; on Debian: `apt-get install dataset-fashion-mnist`).
"""

import argparse

import keras

from relperf_tf.layers import RelativeFavorAttention

PATCH, DIM, HEADS = 4, 64, 4


def load(split, count):
    import tensorflow_datasets as tfds

    from relperf_tf.app import data

    builder = data.prepare("fashion_mnist")
    images, labels = tfds.as_numpy(
        builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
    )
    return images[:count].astype("float32") / 255.0, labels[:count]


def build_vit(blocks=3, position_kernel="circular"):
    images = keras.Input((28, 28, 1))
    # Patches as tokens on their grid: [batch, 7, 7, dim].
    x = keras.layers.Conv2D(DIM, PATCH, strides=PATCH)(images)
    for _ in range(blocks):
        h = keras.layers.LayerNormalization()(x)
        attention = RelativeFavorAttention(
            HEADS, DIM // HEADS, attention_axes=(1, 2), position_kernel=position_kernel
        )
        x = x + attention(h, h)
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.Dense(DIM)(keras.layers.Dense(2 * DIM, activation="gelu")(h))
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(10)(pooled))


def main(quick=False):
    x, y = load("train", 256 if quick else 60_000)
    model = build_vit()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    epochs, steps = (1, 3) if quick else (5, None)
    model.fit(x, y, batch_size=64, epochs=epochs, steps_per_epoch=steps, verbose=2)
    test_x, test_y = load("test", 256 if quick else 10_000)
    _, accuracy = model.evaluate(test_x, test_y, verbose=0)
    print(f"test accuracy: {accuracy:.3f}")
    # Equivariance: roll the images by one patch; the patch features roll with them.
    features = keras.Model(model.input, model.layers[-3].output)
    rolled = features(keras.ops.roll(test_x[:4], PATCH, axis=2))
    expected = keras.ops.roll(features(test_x[:4]), 1, axis=2)
    change = float(keras.ops.max(keras.ops.abs(rolled - expected)))
    print(f"features of rolled images minus rolled features: {change:.1e}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to check it runs")
    main(parser.parse_args().quick)
