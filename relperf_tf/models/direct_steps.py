"""`fit` and `evaluate` steps that call the XLA-compiled step directly.

Keras 3's TensorFlow trainer runs every step as a graph (`tf.function`) that
takes the batch from the iterator and calls the XLA-compiled step inside it.
On CPU that nesting made our training step about 1.5× slower than calling the
same compiled step directly (measurements: docs/presets.md). `DirectXlaSteps`
takes the batch eagerly and calls the compiled step, which computes exactly
what Keras' would (`distribute_strategy.run(train_step)`).

It applies where Keras would compile one step per call on one replica:
`jit_compile` on, not `run_eagerly`, `steps_per_execution == 1`, one replica
in sync.

With several replicas in sync (MirroredStrategy) the steps are `ReplicaSteps`:
each replica computes its gradient (XLA-compiled with `jit_compile`, inside
`strategy.run`, as the multi-worker loop does), the gradients are all-reduced,
then clipped by their global norm and applied, so the update is the one a
single device computes on the same global batch. Keras' own mirrored `fit`
clips each replica's part before its all-reduce, and with `jit_compile` it
compiles the whole `strategy.run` into one XLA cluster, which cannot reach the
other replicas' variables. Everywhere else Keras' own functions run unchanged.
"""

import tensorflow as tf
from keras.src.backend.tensorflow.trainer import reduce_per_replica
from keras.src.losses import loss as loss_module
from keras.src.trainers import data_adapters


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


def uses_replica_steps(model):
    """Whether `model`'s train and test functions are the all-reduce-then-clip ones."""
    return (
        not model.run_eagerly
        and model.steps_per_execution == 1
        and model.distribute_strategy.num_replicas_in_sync > 1
    )


def replica_step_function(model, step):
    """`function(iterator)`: the next distributed batch through `step` on every replica (a graph,
    not XLA: `step` compiles its own per-replica part), outputs reduced as Keras does."""
    strategy = model.distribute_strategy

    @tf.autograph.experimental.do_not_convert
    def one_step_on_data(data):
        return step(data)

    @tf.function(reduce_retracing=True)
    def on_data(data):
        outputs = strategy.run(one_step_on_data, args=(data,))
        return reduce_per_replica(outputs, strategy, reduction="auto")

    def function(iterator):
        return on_data(next(iterator))

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
        if uses_replica_steps(self):
            step = self._replica_train_step if kind == "train" else self.test_step
            setattr(self, attribute, replica_step_function(self, step))
        elif uses_direct_steps(self):
            setattr(self, attribute, direct_step_function(self, getattr(self, f"{kind}_step")))
        else:
            return getattr(super(), f"make_{kind}_function")(force)
        return getattr(self, attribute)

    # --- several replicas: all-reduce, then clip, then apply -----------------

    def _replica_gradients(self, x, y, sample_weight):
        """(gradients, predictions, loss) of this replica's part of the batch (the loss and
        gradients of the global mean, as Keras scales them for distribution)."""
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            scaled = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled, self.trainable_weights), y_pred, loss

    def _replica_train_step(self, data):
        """One replica's train step: its gradient, all-reduced, clipped, applied once."""
        x, y, sample_weight = data_adapters.data_adapter_utils.unpack_x_y_sample_weight(data)
        if getattr(self, "_compiled_gradients", None) is None:
            self._compiled_gradients = tf.function(
                self._replica_gradients, jit_compile=bool(self.jit_compile), reduce_retracing=True
            )
        grads, y_pred, loss = self._compiled_gradients(x, y, sample_weight)
        self._loss_tracker.update_state(
            loss_module.unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
        )
        pairs = [(g, w) for g, w in zip(grads, self.trainable_weights) if g is not None]
        context = tf.distribute.get_replica_context()
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
        clipnorm = self.optimizer.global_clipnorm
        if clipnorm:
            total, _ = tf.clip_by_global_norm(total, clipnorm)
        # The optimizer sums the replicas' gradients again: hand it 1/R of the global one
        # (its own global-norm clip then sees at most clipnorm/R and does nothing).
        share = 1.0 / self.distribute_strategy.num_replicas_in_sync
        self.optimizer.apply([g * share for g in total], [w for _, w in pairs])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
