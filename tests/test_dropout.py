"""The library's Dropout: Keras' draw outside XLA, a Threefry mask inside, Keras' saved state."""

import keras
import numpy as np
import pytest
from keras import ops

from relperf_tf.layers import Dropout
from relperf_tf.layers.dropout import in_xla_compilation

pytestmark = pytest.mark.all_backends


def make_pair(rate=0.3, seed=7, noise_shape=None):
    return Dropout(rate, noise_shape=noise_shape, seed=seed), keras.layers.Dropout(
        rate, noise_shape=noise_shape, seed=seed
    )


def test_outside_xla_it_is_keras_dropout_bit_for_bit():
    ours, theirs = make_pair()
    x = np.random.default_rng(0).normal(size=(4, 9, 16)).astype("float32")
    for _ in range(2):  # the seed state advances alike
        np.testing.assert_array_equal(
            ops.convert_to_numpy(ours(x, training=True)),
            ops.convert_to_numpy(theirs(x, training=True)),
        )
    np.testing.assert_array_equal(ops.convert_to_numpy(ours(x)), x)
    assert not in_xla_compilation()


def test_config_round_trips_and_the_class_is_registered():
    layer = Dropout(0.25, noise_shape=(None, 1, 4), seed=3, name="drop")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is Dropout
    assert again.get_config() == layer.get_config()


def test_files_and_variables_of_keras_dropout_carry_over(tmp_path):
    """A weights file written with keras.layers.Dropout has the layout ours writes, and loads;
    the seed state keeps its variable path (what tf.train.Checkpoint-style backups key on)."""
    import h5py

    def model(dropout):
        keras.backend.clear_session()  # the same automatic names for both
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(3), dropout(0.5)])

    paths = {}
    models = {"ours": model(Dropout), "keras": model(keras.layers.Dropout)}
    for name, m in models.items():
        m.save_weights(str(tmp_path / f"{name}.weights.h5"))
        with h5py.File(tmp_path / f"{name}.weights.h5") as f:
            paths[name] = []
            f.visit(paths[name].append)
    assert paths["ours"] == paths["keras"]
    models["ours"].load_weights(str(tmp_path / "keras.weights.h5"))
    np.testing.assert_array_equal(
        models["ours"].layers[0].get_weights()[0], models["keras"].layers[0].get_weights()[0]
    )
    assert [v.path for v in models["ours"].variables] == [v.path for v in models["keras"].variables]


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("noise_shape", [None, (None, 1, 8)])
def test_under_xla_the_mask_is_threefry_of_the_next_seed(noise_shape):
    import tensorflow as tf

    rate = 0.3
    layer = Dropout(rate, noise_shape=noise_shape, seed=5)
    x = tf.constant(np.random.default_rng(1).normal(size=(3, 6, 8)).astype("float32"))
    seen = []

    @tf.function(jit_compile=True)
    def step(x):
        seen.append(in_xla_compilation())
        return layer(x, training=True)

    @tf.function(jit_compile=True)
    def threefry_uniform(shape, seed):
        return tf.random.stateless_uniform(shape, seed=seed, alg="threefry")

    outputs = []
    for _ in range(2):
        state = ops.convert_to_numpy(layer.seed_generator.state)
        seed = tf.constant(np.mod(state, 2**31 - 2).astype("int32"))
        mask_shape = [3, 1 if noise_shape else 6, 8]
        keep = ops.convert_to_numpy(threefry_uniform(mask_shape, seed)) >= rate
        expected = x.numpy() * np.float32(1 / (1 - rate)) * keep
        got = step(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
        outputs.append(got)
    assert seen == [True]
    assert not np.array_equal(outputs[0], outputs[1])  # a fresh mask every step


@pytest.mark.tensorflow_only
def test_under_xla_it_drops_the_rate_and_keeps_the_rest_scaled():
    import tensorflow as tf

    rate = 0.1
    layer = Dropout(rate, seed=2)
    x = tf.ones((64, 32, 64))
    got = tf.function(lambda x: layer(x, training=True), jit_compile=True)(x).numpy()
    dropped = np.mean(got == 0)
    sigma = np.sqrt(rate * (1 - rate) / got.size)
    assert abs(dropped - rate) < 5 * sigma
    np.testing.assert_allclose(got[got != 0], 1 / (1 - rate), rtol=1e-6)
