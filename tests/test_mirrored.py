"""MirroredStrategy on two logical CPUs computes what one device computes: all-reduce, then
clip the global norm, then apply; with XLA too."""

import keras
import numpy as np
import pytest

from relperf_tf.app import training

SETTINGS = dict(
    dim=8,
    depth=2,
    heads=2,
    nb_features=4,
    batch_size=16,
    attn_dropout=0.0,
    ff_dropout=0.0,
    feature_redraw_interval=0,
    learning_rate=2e-3,
    seed=0,
)


def trained_weights(strategy, jit_compile, clipnorm, initial=None, steps=4):
    config = training.resolve_config(
        "RelativePerformer",
        "mnist",
        position_kernel="exact",
        jit_compile=jit_compile,
        **SETTINGS,
    )
    keras.utils.set_random_seed(0)
    model = training.build_compiled_model(config, strategy)
    model.optimizer.global_clipnorm = clipnorm
    if initial is not None:
        model.set_weights(initial)
    start = model.get_weights()
    rng = np.random.default_rng(1)
    images = rng.random((16 * steps, 32, 32, 1)).astype("float32")
    labels = np.arange(16 * steps) % 10
    model.fit(images, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return start, model.get_weights(), model


# Two of the four combinations (about 30 s each): the graph step plain, the XLA step with the
# clip active (the all-reduce, the global-norm clip and XLA together).
@pytest.mark.parametrize(
    "jit_compile,clipnorm", [(False, 1e6), (True, 1e-3)], ids=["graph", "xla_clipping_active"]
)
def test_two_replicas_equal_one_device(jit_compile, clipnorm):
    mirrored = training.make_strategy("mirrored", cpu_replicas=2)
    assert mirrored.num_replicas_in_sync == 2
    start, single, _ = trained_weights(training.make_strategy("default"), jit_compile, clipnorm)
    _, replicated, model = trained_weights(mirrored, jit_compile, clipnorm, initial=start)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(single, start))
    assert moved > 1e-4  # the steps changed the weights
    for weight, one, two in zip(model.weights, single, replicated):
        np.testing.assert_allclose(two, one, atol=1e-5, rtol=0, err_msg=weight.path)
    if clipnorm < 1:
        # Clipped to 1e-3 per step: Adam's first steps still move each weight by about lr,
        # so the check that matters is the agreement above; here the clip must be active.
        first_step_norm = _gradient_norm(model, start)
        assert first_step_norm > clipnorm


def _gradient_norm(model, weights):
    """The global norm of the first batch's gradient at `weights` (one device)."""
    import tensorflow as tf

    clone = training.build_compiled_model(
        training.resolve_config("RelativePerformer", "mnist", position_kernel="exact", **SETTINGS),
        training.make_strategy("default"),
    )
    clone.set_weights(weights)
    images = np.random.default_rng(1).random((16, 32, 32, 1)).astype("float32")
    labels = np.arange(16) % 10
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(
            labels, clone(images, training=True), from_logits=True
        )
        loss = tf.reduce_mean(loss)
    grads = [g for g in tape.gradient(loss, clone.trainable_weights) if g is not None]
    return float(tf.linalg.global_norm(grads))


def test_a_mirrored_run_sees_the_pipeline_order_one_device_sees():
    """Keras' own fit under a strategy started a pass over the pipeline to build the model, so a
    reshuffling pipeline handed training its second order (keras-team/keras#20394): the
    mirrored run must see the batches one device sees, validation too."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    images = rng.random((16 * 4, 32, 32, 1)).astype("float32")
    labels = rng.integers(0, 10, 16 * 4)

    def fit(strategy):
        config = training.resolve_config("NoposPerformer", "mnist", jit_compile=False, **SETTINGS)
        keras.utils.set_random_seed(0)
        model = training.build_compiled_model(config, strategy)
        # Reshuffled each pass, in the same orders for each new pipeline.
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(64, seed=3)
        dataset = dataset.batch(16)
        history = model.fit(
            dataset,
            epochs=1,
            steps_per_epoch=2,
            validation_data=dataset,
            validation_steps=1,
            shuffle=False,
            verbose=0,
        )
        return model.get_weights(), history.history

    single, single_history = fit(training.make_strategy("default"))
    replicated, replicated_history = fit(training.make_strategy("mirrored", cpu_replicas=2))
    # Adam moves each weight by about the learning rate (2e-3) per step on any batch order:
    # agreement to 1e-4 means the same batches.
    for one, two in zip(single, replicated):
        np.testing.assert_allclose(two, one, atol=1e-4, rtol=0)
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(replicated_history[key], single_history[key], rtol=1e-4)
