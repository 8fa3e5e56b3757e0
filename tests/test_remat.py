"""Rematerialisation: the same gradients with less kept, and redraw state counted once."""

import keras
import numpy as np
import pytest

from relperf_tf import MODEL_NAMES, build_model
from relperf_tf.layers import FavorKernel
from tests.gradients import gradients

pytestmark = pytest.mark.all_backends

TINY = dict(
    dim=16,
    depth=2,
    heads=2,
    attn_dropout=0.0,
    ff_dropout=0.0,
    pos_scales=2,
    clipping_dist=2,
    nb_features=8,
    seed=4,
    feature_redraw_interval=0,
)


def model_gradients(model, images, labels):
    def loss():
        logits = model(images, training=True)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )

    return gradients(loss, variables=model.trainable_variables)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_remat_gives_the_same_gradients(name):
    rng = np.random.default_rng(0)
    images = rng.random((3, 4, 4, 1)).astype("float32")
    labels = np.array([0, 1, 2])
    plain = build_model(name, image_shape=(4, 4, 1), num_classes=3, **TINY)
    remat = build_model(name, image_shape=(4, 4, 1), num_classes=3, **TINY, remat=True)
    remat.set_weights(plain.get_weights())
    assert remat.arguments()["remat"] is True
    for expected, got in zip(
        model_gradients(plain, images, labels), model_gradients(remat, images, labels)
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_remat_recomputation_does_not_count_steps_twice():
    kernel = FavorKernel(nb_features=8, feature_redraw_interval=2, seed=1, remat=True)
    q = np.random.default_rng(1).normal(size=(1, 1, 5, 8)).astype("float32")
    kernel(q, q, q)

    def loss(x):
        return keras.ops.sum(kernel(x, x, x, training=True))

    for _ in range(5):
        (grad,) = gradients(loss, [q], state=kernel.non_trainable_weights)
        assert np.all(np.isfinite(grad))
    assert int(keras.ops.convert_to_numpy(kernel.step)) == 5
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(kernel.projection), keras.ops.convert_to_numpy(kernel.draw(2))
    )


def test_remat_with_dropout_trains():
    model = build_model(
        "Performer", image_shape=(4, 4, 1), num_classes=2, **{**TINY, "ff_dropout": 0.2}, remat=True
    )
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(
        np.random.default_rng(2).random((4, 4, 4, 1)).astype("float32"),
        np.array([0, 1, 0, 1]),
        epochs=2,
        verbose=0,
    )
    assert np.all(np.isfinite(history.history["loss"]))
