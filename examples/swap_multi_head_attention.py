"""Swapping MultiHeadAttention out of an existing Keras model.

A small text classifier is trained with `keras.layers.MultiHeadAttention`. Its attention is
then replaced by `FavorAttention`, keeping the trained weights, in two steps:

1. `FavorAttention.from_multi_head_attention(layer, feature_map="exact")`: our layer with
   the same configuration and weights, computing what MultiHeadAttention computes (exact
   softmax attention): the cloned model gives the same predictions.
2. `FavorAttention.from_multi_head_attention(layer)` with FAVOR+'s random features: linear in
   the sequence length instead of quadratic. It approximates the trained attention, so a
   short fine-tuning recovers what the approximation costs.

`keras.models.clone_model` with a `clone_function` does the swap; every other layer is
shared with the original model. The data is synthetic (no download): the label says whether
token 7 appears before token 3 in a sequence.

    python examples/swap_multi_head_attention.py           # a minute on a laptop CPU
    python examples/swap_multi_head_attention.py --quick   # fewer steps (the tests run this)
"""

import argparse

import keras
import numpy as np

from relperf_tf.layers import FavorAttention


def make_data(count, length=32, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 10, (count, length))
    first_seven = np.argmax(tokens == 7, axis=1) + length * ~(tokens == 7).any(axis=1)
    first_three = np.argmax(tokens == 3, axis=1) + length * ~(tokens == 3).any(axis=1)
    return tokens, (first_seven < first_three).astype("int32")


def build_model(length=32, dim=32):
    tokens = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(10, dim)(tokens)
    x = x + keras.layers.Embedding(length, dim)(keras.ops.arange(length))[None]
    x = x + keras.layers.MultiHeadAttention(4, dim // 4, name="attention")(x, x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(2)(x))


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def swap(**options):
    """A clone_function: our attention in place of MultiHeadAttention, its weights kept."""

    def clone(layer):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return FavorAttention.from_multi_head_attention(layer, **options)
        return layer  # shared with the original model

    return clone


def main(quick=False):
    x, y = make_data(512 if quick else 8_000)
    test_x, test_y = make_data(512, seed=1)
    model = compile_model(build_model())
    model.fit(x, y, batch_size=64, epochs=1 if quick else 8, verbose=0)
    print(f"MultiHeadAttention: test accuracy {model.evaluate(test_x, test_y, verbose=0)[1]:.3f}")

    exact = keras.models.clone_model(model, clone_function=swap(feature_map="exact"))
    difference = np.abs(exact.predict(test_x, verbose=0) - model.predict(test_x, verbose=0)).max()
    print(f"FavorAttention(feature_map='exact'): largest logit difference {difference:.1e}")

    linear = compile_model(keras.models.clone_model(model, clone_function=swap(nb_features=64)))
    before = linear.evaluate(test_x, test_y, verbose=0)[1]
    linear.fit(x, y, batch_size=64, epochs=1 if quick else 2, verbose=0)
    after = linear.evaluate(test_x, test_y, verbose=0)[1]
    print(f"FavorAttention (FAVOR+, m = 64): test accuracy {before:.3f}, fine-tuned {after:.3f}")
    return difference


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, to check it runs")
    main(parser.parse_args().quick)
