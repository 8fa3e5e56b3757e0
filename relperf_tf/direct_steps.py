"""`fit` and `evaluate` steps that call the XLA-compiled step directly.

Keras 3's TensorFlow trainer runs every step as a graph (`tf.function`) that
takes the batch from the iterator and calls the XLA-compiled step inside it.
On CPU that nesting made our training step about 1.5× slower than calling the
same compiled step directly (measurements: docs/presets.md). `DirectXlaSteps`
takes the batch eagerly and calls the compiled step, which computes exactly
what Keras' would (`distribute_strategy.run(train_step)`).

It applies where Keras would compile one step per call on one replica:
`jit_compile` on, not `run_eagerly`, `steps_per_execution == 1`, one replica
in sync; everywhere else Keras' own functions run unchanged.
"""

import tensorflow as tf


def uses_direct_steps(model):
    """Whether `model`'s train and test functions are the direct ones."""
    return (
        model.jit_compile is True
        and not model.run_eagerly
        and model.steps_per_execution == 1
        and model.distribute_strategy.num_replicas_in_sync == 1
    )


def direct_step_function(model, step):
    """`function(iterator)`: the next batch, taken eagerly, through `step` compiled with XLA.

    Raises StopIteration (or OutOfRangeError) at the end of the data, which
    Keras' epoch iterator turns into the end of the epoch.
    """

    @tf.autograph.experimental.do_not_convert
    def one_step_on_data(data):
        return model.distribute_strategy.run(step, args=(data,))

    compiled = tf.function(one_step_on_data, reduce_retracing=True, jit_compile=True)

    def function(iterator):
        return compiled(next(iterator))

    return function


class DirectXlaSteps:
    """Mixin for `keras.Model` subclasses (place it before `keras.Model`): direct train and test
    steps where they apply."""

    def make_train_function(self, force=False):
        return self._direct_or_keras_function("train", force)

    def make_test_function(self, force=False):
        return self._direct_or_keras_function("test", force)

    def _direct_or_keras_function(self, kind, force):
        """`self.<kind>_function`, made once: the direct one where it applies, else Keras' own."""
        attribute = f"{kind}_function"
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        if not uses_direct_steps(self):
            return getattr(super(), f"make_{kind}_function")(force)
        setattr(self, attribute, direct_step_function(self, getattr(self, f"{kind}_step")))
        return getattr(self, attribute)
