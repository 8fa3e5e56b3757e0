"""`fit` and `evaluate` steps that call the XLA-compiled step directly (TensorFlow only).

Keras 3's TensorFlow trainer runs every step as a graph (`tf.function`) that
takes the batch from the iterator and calls the XLA-compiled step inside it.
On CPU that nesting made our training step about 1.5× slower than calling the
same compiled step directly (measurements: docs/presets.md). `install`
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

Under a strategy, Keras' `fit` and `evaluate` build the model symbolically
from a batch they take off a first pass over the pipeline, then start a new
pass (keras-team/keras#20394): a pipeline that reshuffles each pass (ours)
then trains a mirrored run on its second order, not the one a single device
sees with the same seed, after filling the shuffle buffer once for nothing.
`install` builds from the `tf.data` pipeline's `element_spec` instead, so no
pass is started.

TensorFlow-only (it is about `tf.function` and `tf.distribute`), so it belongs
to the application: `run_setup.compile_model` installs it on each model it
compiles (`install`); the library's models use Keras' own trainer on every
backend.
"""

import functools

import keras
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


def install(model):
    """Makes `model`'s `fit` and `evaluate` use the direct (or all-reduce-then-clip) steps where
    they apply, Keras' own functions elsewhere. Returns `model`.

    Per instance: it replaces the model's `make_train_function` and
    `make_test_function`, whose Keras versions it keeps for the other cases,
    and `_maybe_symbolic_build`, which it hands the pipeline's `element_spec`
    instead of letting it take a batch.
    """
    if keras.backend.backend() != "tensorflow":
        return model
    keras_build = model._maybe_symbolic_build
    build = functools.partial(_symbolic_build_from_spec, keras_build)
    object.__setattr__(model, "_maybe_symbolic_build", build)
    for kind in ("train", "test"):
        keras_maker = getattr(model, f"make_{kind}_function")
        maker = functools.partial(_direct_or_keras_function, model, kind, keras_maker)
        object.__setattr__(model, f"make_{kind}_function", maker)
    return model


def _direct_or_keras_function(model, kind, keras_maker, force=False):
    """`model.<kind>_function`, made once: the direct one where it applies, else Keras' own."""
    attribute = f"{kind}_function"
    if getattr(model, attribute) is not None and not force:
        return getattr(model, attribute)
    if uses_replica_steps(model):
        step = functools.partial(_replica_train_step, model) if kind == "train" else model.test_step
        setattr(model, attribute, replica_step_function(model, step))
    elif uses_direct_steps(model):
        setattr(model, attribute, direct_step_function(model, getattr(model, f"{kind}_step")))
    else:
        return keras_maker(force)
    return getattr(model, attribute)


def _symbolic_build_from_spec(keras_build, iterator=None, data_batch=None):
    """Keras' `_maybe_symbolic_build`, given the `tf.data` pipeline's `element_spec` in place of
    the batch it would take off a pass over `iterator` that nothing else reads."""
    dataset = getattr(getattr(iterator, "data_adapter", None), "_dataset", None)
    if iterator is not None and data_batch is None and isinstance(dataset, tf.data.Dataset):
        return keras_build(data_batch=dataset.element_spec)
    return keras_build(iterator=iterator, data_batch=data_batch)


# --- several replicas: all-reduce, then clip, then apply ---------------------


def _replica_gradients(model, x, y, sample_weight):
    """(gradients, predictions, loss) of this replica's part of the batch (the loss and
    gradients of the global mean, as Keras scales them for distribution)."""
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        scaled = model.optimizer.scale_loss(loss)
    return tape.gradient(scaled, model.trainable_weights), y_pred, loss


def _replica_train_step(model, data):
    """One replica's train step: its gradient, all-reduced, clipped, applied once."""
    x, y, sample_weight = data_adapters.data_adapter_utils.unpack_x_y_sample_weight(data)
    compiled = model.__dict__.get("_compiled_gradients")
    if compiled is None:
        compiled = tf.function(
            functools.partial(_replica_gradients, model),
            jit_compile=bool(model.jit_compile),
            reduce_retracing=True,
        )
        object.__setattr__(model, "_compiled_gradients", compiled)
    grads, y_pred, loss = compiled(x, y, sample_weight)
    model._loss_tracker.update_state(
        loss_module.unscale_loss_for_distribution(loss),
        sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
    )
    pairs = [(g, w) for g, w in zip(grads, model.trainable_weights) if g is not None]
    context = tf.distribute.get_replica_context()
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
    clipnorm = model.optimizer.global_clipnorm
    if clipnorm:
        total, _ = tf.clip_by_global_norm(total, clipnorm)
    # The optimizer sums the replicas' gradients again: hand it 1/R of the global one
    # (its own global-norm clip then sees at most clipnorm/R and does nothing).
    share = 1.0 / model.distribute_strategy.num_replicas_in_sync
    model.optimizer.apply([g * share for g in total], [w for _, w in pairs])
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
