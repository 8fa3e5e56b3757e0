"""One helper that every layer goes through (config, symbolic/eager call, train, save)."""

import keras
import numpy as np


def run_layer_test(tmp_path, make_layer, inputs, expected_shape):
    """Config round trip, eager and symbolic call, a train step, `.keras` reload.

    Args:
        make_layer: zero-argument callable returning a fresh layer.
        inputs: list of NumPy arrays, the layer's positional call arguments.
        expected_shape: the output shape for `inputs`.
    """
    layer = make_layer()
    output = layer(*inputs)
    assert tuple(output.shape) == tuple(expected_shape)

    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    symbolic = [keras.Input(batch_shape=x.shape, dtype=str(x.dtype)) for x in inputs]
    model = keras.Model(symbolic, make_layer()(*symbolic))
    assert tuple(model.output.shape) == tuple(expected_shape)

    model.compile(optimizer="adam", loss="mse")
    target = np.ones(expected_shape, "float32")
    if model.trainable_weights:
        before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        model.fit(list(inputs), target, epochs=1, batch_size=inputs[0].shape[0], verbose=0)
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), "no weight moved"
    path = str(tmp_path / "layer.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(list(inputs), verbose=0), model.predict(list(inputs), verbose=0), atol=1e-6
    )
