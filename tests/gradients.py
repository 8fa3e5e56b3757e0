"""Gradients on any Keras backend, for the library's tests (TensorFlow's tape, JAX, autograd)."""

import keras
import numpy as np
from keras import ops


def gradients(fn, arrays=(), variables=(), state=()):
    """d fn / d (arrays, variables) as NumPy arrays, on the current backend.

    Args:
        fn: callable of the `arrays` (as tensors) returning a scalar tensor;
            it may read `variables` and update `state`.
        arrays: NumPy arrays to differentiate with respect to.
        variables: Keras variables to differentiate with respect to.
        state: Keras variables `fn` updates (a FAVOR+ step counter): on JAX,
            whose calls are pure, their new values are assigned afterwards,
            as Keras' JAX trainer does; the other backends update them in place.

    Returns:
        list: one gradient per array, then per variable (zeros where unused).
    """
    backend = keras.backend.backend()
    arrays = [np.asarray(a, "float32") for a in arrays]
    variables, state = list(variables), list(state)
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = fn(*tensors)
        grads = tape.gradient(loss, tensors + variables)
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        loss = fn(*tensors)
        grads = torch.autograd.grad(loss, tensors + [v.value for v in variables], allow_unused=True)
    elif backend == "jax":
        import jax

        def pure(tensors, values, state_values):
            mapping = list(zip(variables, values)) + list(zip(state, state_values))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                loss = fn(*tensors)
            return loss, [scope.get_current_value(v) for v in state]

        (_, new_state), grads = jax.value_and_grad(pure, argnums=(0, 1), has_aux=True)(
            [jax.numpy.asarray(a) for a in arrays],
            [v.value for v in variables],
            [v.value for v in state],
        )
        grads = list(grads[0]) + list(grads[1])
        for variable, value in zip(state, new_state):
            variable.assign(value)
    else:
        raise ValueError(f"no gradients for backend {backend!r}")
    values = arrays + [np.zeros(v.shape, "float32") for v in variables]
    return [
        np.zeros_like(value) if g is None else ops.convert_to_numpy(g)
        for g, value in zip(grads, values)
    ]
