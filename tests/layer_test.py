"""One helper that every layer goes through (config, symbolic/eager call, train, save)."""

import keras
import numpy as np
import tensorflow as tf


def run_layer_test(tmp_path, make_layer, inputs, expected_shape):
    """Config round trip, eager and symbolic call, a train step, `.keras` reload.

    Args:
        make_layer: zero-argument callable returning a fresh layer.
        inputs: list of NumPy arrays (or lists of them), the layer's positional
            call arguments.
        expected_shape: the output shape for `inputs`.
    """
    layer = make_layer()
    output = layer(*inputs)
    assert tuple(output.shape) == tuple(expected_shape)

    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    symbolic = keras.tree.map_structure(lambda x: keras.Input(batch_shape=x.shape, dtype=str(x.dtype)), inputs)
    model = keras.Model(symbolic, make_layer()(*symbolic))
    assert tuple(model.output.shape) == tuple(expected_shape)

    target = np.ones(expected_shape, "float32")
    if model.trainable_weights:
        before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        # One optimizer step by hand: inputs without a batch axis (shared
        # positional tables) are fine here, where `fit` would refuse them.
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(model(list(inputs), training=True) - target))
        optimizer = keras.optimizers.Adam()
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), "no weight moved"
    path = str(tmp_path / "layer.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded(list(inputs)), model(list(inputs)), atol=1e-6
    )
