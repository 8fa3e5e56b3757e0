"""One helper that every layer goes through, as keras-hub's `run_layer_test` does."""

import json

import keras
import numpy as np

from tests.gradients import gradients


def run_layer_test(
    tmp_path,
    make_layer,
    inputs,
    expected_shape,
    *,
    expected_trainable_weights,
    expected_non_trainable_weights=0,
    run_mixed_precision_check=True,
    keyword_inputs=None,
    call_options=None,
):
    """Weight counts, config and JSON round trips, eager and symbolic calls, a train step,
    `.keras` reload and a `mixed_bfloat16` pass.

    Args:
        make_layer: callable taking Keras' layer keyword arguments (`dtype`)
            and returning a fresh layer.
        inputs: list of NumPy arrays (or lists of them), the layer's positional
            call arguments.
        keyword_inputs: dict of NumPy arrays (or lists of them), keyword
            tensor arguments (e.g. `positions`).
        call_options: dict of non-tensor keyword arguments (e.g. `grid_shape`).
        expected_shape: the output shape for `inputs`.
        expected_trainable_weights, expected_non_trainable_weights: how many
            weights the built layer holds.
        run_mixed_precision_check: whether to run the `mixed_bfloat16` pass.
    """
    keyword_inputs = dict(keyword_inputs or {})
    call_options = dict(call_options or {})
    layer = make_layer()
    output = layer(*inputs, **keyword_inputs, **call_options)
    assert tuple(output.shape) == tuple(expected_shape)
    assert len(layer.trainable_weights) == expected_trainable_weights
    assert len(layer.non_trainable_weights) == expected_non_trainable_weights

    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    from_json = layer.__class__.from_config(json.loads(json.dumps(config)))
    assert json.dumps(from_json.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)

    def symbolic_of(x):
        return keras.Input(batch_shape=x.shape, dtype=str(x.dtype))

    symbolic = keras.tree.map_structure(symbolic_of, inputs)
    symbolic_keywords = keras.tree.map_structure(symbolic_of, keyword_inputs)
    model_inputs = list(symbolic) + [symbolic_keywords[k] for k in sorted(symbolic_keywords)]
    model_outputs = make_layer()(*symbolic, **symbolic_keywords, **call_options)
    model = keras.Model(model_inputs, model_outputs)
    all_inputs = list(inputs) + [keyword_inputs[k] for k in sorted(keyword_inputs)]
    assert tuple(model.output.shape) == tuple(expected_shape)

    target = keras.ops.ones(expected_shape, "float32")
    if model.trainable_weights:
        before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]

        # One optimizer step by hand: inputs without a batch axis (shared
        # positional tables) are fine here, where `fit` would refuse them.
        def loss():
            prediction = keras.ops.cast(model(all_inputs, training=True), "float32")
            return keras.ops.mean(keras.ops.square(prediction - target))

        grads = gradients(
            loss, variables=model.trainable_weights, state=model.non_trainable_weights
        )
        optimizer = keras.optimizers.Adam()
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], model.trainable_weights)
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), "no weight moved"
    path = str(tmp_path / "layer.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(all_inputs), model(all_inputs), atol=1e-6)

    if run_mixed_precision_check:
        mixed = make_layer(dtype="mixed_bfloat16")
        outputs = keras.tree.flatten(mixed(*inputs, **keyword_inputs, **call_options))
        assert all(
            keras.backend.standardize_dtype(o.dtype) == mixed.compute_dtype == "bfloat16"
            for o in outputs
        )
        for weight in mixed.weights:
            if "float" in str(weight.dtype):
                assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
