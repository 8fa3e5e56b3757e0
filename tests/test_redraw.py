"""Feature redraws: at interval multiples only, never in inference, same on replicas."""

import keras
import numpy as np
import pytest

from relperf_tf import build_model
from relperf_tf.layers import FavorKernel

pytestmark = pytest.mark.all_backends


def test_projection_changes_exactly_at_interval_multiples():
    kernel = FavorKernel(nb_features=8, feature_redraw_interval=3, seed=5)
    q = np.random.default_rng(0).normal(size=(1, 1, 4, 8)).astype("float32")
    kernel(q, q, q)  # build
    snapshots = [np.array(kernel.projection.numpy())]
    changed_at = []
    for step in range(1, 8):
        kernel(q, q, q, training=True)
        kernel(q, q, q, training=False)  # inference never redraws nor counts
        current = np.array(kernel.projection.numpy())
        if not np.array_equal(current, snapshots[-1]):
            changed_at.append(step - 1)  # the step counter value when it was drawn
        snapshots.append(current)
    assert changed_at == [3, 6]
    assert int(kernel.step) == 7
    # (XLA may fuse the draw inside the training call differently: JAX rounds within 1 ulp.)
    np.testing.assert_allclose(snapshots[4], np.array(kernel.draw(1)), rtol=1e-6, atol=1e-6)


def test_no_redraw_when_interval_is_zero():
    kernel = FavorKernel(nb_features=8, feature_redraw_interval=0)
    q = np.ones((1, 1, 2, 4), "float32")
    kernel(q, q, q)
    before = np.array(kernel.projection.numpy())
    for _ in range(3):
        kernel(q, q, q, training=True)
    np.testing.assert_array_equal(before, np.array(kernel.projection.numpy()))


@pytest.mark.tensorflow_only
def test_mirrored_replicas_draw_identical_features():
    from relperf_tf.app import training

    strategy = training.make_strategy("mirrored", cpu_replicas=2)
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = build_model(
            "RelativePerformer",
            image_shape=(4, 4, 1),
            num_classes=3,
            dim=8,
            depth=1,
            heads=2,
            pos_scales=1,
            nb_features=8,
            feature_redraw_interval=2,
            seed=1,
        )
        model.compile(
            optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
    projection = next(w for w in model.non_trainable_weights if "projection" in w.path)
    step = next(w for w in model.non_trainable_weights if w.path.endswith("step"))
    initial = np.array(projection.numpy())
    images = np.random.default_rng(0).random((40, 4, 4, 1)).astype("float32")
    model.fit(images, np.arange(40) % 3, batch_size=8, epochs=1, verbose=0)
    replicas = [np.array(v.numpy()) for v in strategy.experimental_local_results(projection.value)]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    assert [int(v) for v in strategy.experimental_local_results(step.value)] == [5, 5]
    assert not np.array_equal(replicas[0], initial)
    weights = [
        [np.array(v.numpy()) for v in strategy.experimental_local_results(w.value)]
        for w in model.trainable_weights
    ]
    for per_replica in weights:
        np.testing.assert_array_equal(per_replica[0], per_replica[1])
