"""fit/evaluate with the compiled step called directly compute what Keras' nested steps do."""

import keras
import numpy as np
import tensorflow as tf

from relperf_tf.app import direct_steps
from relperf_tf.app.direct_steps import uses_direct_steps
from relperf_tf.models import build_model


def _model(jit_compile=True, **compile_options):
    keras.utils.set_random_seed(3)
    model = build_model(
        "Performer",
        image_shape=(4, 4, 1),
        num_classes=3,
        dim=8,
        depth=1,
        heads=2,
        nb_features=4,
        feature_redraw_interval=2,
        attn_dropout=0.0,
        ff_dropout=0.0,
        seed=3,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        **compile_options,
    )
    return direct_steps.install(model)


def _data():
    rng = np.random.default_rng(0)
    images = rng.random((16, 4, 4, 1)).astype("float32")
    labels = rng.integers(0, 3, 16)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def test_direct_steps_train_and_evaluate_like_keras_own_functions():
    direct, nested = _model(), _model()
    # Keras' own train/test functions (the compiled step nested in a graph), bypassing the mixin.
    nested.train_function = (
        keras.Model.make_train_function(nested, force=True) or nested.train_function
    )
    nested.test_function = (
        keras.Model.make_test_function(nested, force=True) or nested.test_function
    )
    assert (
        uses_direct_steps(direct)
        and "direct_step_function" in direct.make_train_function().__qualname__
    )
    assert "direct_step_function" not in nested.train_function.__qualname__
    histories = [
        m.fit(_data(), epochs=2, verbose=0, shuffle=False).history for m in (direct, nested)
    ]
    assert len(histories[0]["loss"]) == 2  # the end of the data ends each epoch
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(histories[0][key], histories[1][key], rtol=1e-5, atol=1e-6)
    for a, b in zip(
        direct.weights, nested.weights
    ):  # the FAVOR+ redraw state (every 2 steps) included
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            rtol=1e-5,
            atol=1e-6,
            err_msg=a.path,
        )
    np.testing.assert_allclose(
        direct.evaluate(_data(), verbose=0), nested.evaluate(_data(), verbose=0), rtol=1e-5
    )


def test_keras_own_functions_run_where_direct_steps_do_not_apply():
    for model in (
        _model(jit_compile=False),
        _model(steps_per_execution=2),
        _model(run_eagerly=True, jit_compile=False),
    ):
        assert not uses_direct_steps(model)
        model.make_train_function()
        model.make_test_function()
        for function in (model.train_function, model.test_function):
            assert "direct_step_function" not in function.__qualname__
