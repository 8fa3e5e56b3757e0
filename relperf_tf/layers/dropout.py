"""`keras.layers.Dropout` with a mask that XLA:CPU draws quickly on TensorFlow.

Keras' TensorFlow dropout asks `tf.random.stateless_uniform` for its default
algorithm. Compiled by XLA on a CPU, with the seed known only at run time, that
draw is slow: in a `jit_compile=True` step of the reference Performer (dim 128,
depth 4, 1 025 tokens, batch 16) dropout 0.1 cost 1 180 against 849 ms without
it (Zen 4). With Threefry, which XLA generates inline, the same step took 924 ms
(`benchmarks/user_script.py` records the rows; docs/benchmarks.md).
"""

import keras
from keras import ops

# TensorFlow stateless ops take int32 seeds under XLA; Keras folds its int64
# SeedGenerator state into them modulo int32.max − 1, and so do we.
_INT32_SEED_MODULUS = 2**31 - 2


def in_xla_compilation():
    """Whether TensorFlow is tracing for XLA right now (`tf.function(jit_compile=True)`).

    False on other backends, eagerly, and in a plain graph.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    try:  # TensorFlow's own test of the tracing context; not a public API.
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # then every step keeps Keras' draw: slower under XLA, still right
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@keras.saving.register_keras_serializable(package="relperf_tf")
class Dropout(keras.layers.Dropout):
    """Dropout, a drop-in `keras.layers.Dropout`: `x → x·mask / (1 − rate)`, any shape.

    Same arguments, config and state (its `seed_generator` variable), so files
    and checkpoints written with `keras.layers.Dropout` load. Only one case
    changes: in a TensorFlow step compiled by XLA the Bernoulli mask is
    `stateless_uniform(alg="threefry") ≥ rate` of the generator's next seed.
    TensorFlow has no Threefry kernel outside XLA, so graphs, eager calls and the
    other backends keep Keras' own draw; a graph step and an XLA step with one
    seed therefore drop different units.

    Example:
    >>> Dropout(0.5)(keras.ops.ones((2, 3)), training=False).shape
    (2, 3)
    """

    def call(self, inputs, training=False):
        if training and 0 < self.rate < 1 and in_xla_compilation():
            return self._threefry_dropout(inputs)
        return super().call(inputs, training=training)

    def _threefry_dropout(self, inputs):
        import tensorflow as tf

        seed = ops.cast(ops.mod(self.seed_generator.next(), _INT32_SEED_MODULUS), "int32")
        noise_shape = None
        if self.noise_shape is not None:
            shape = ops.shape(inputs)
            noise_shape = [shape[i] if n is None else n for i, n in enumerate(self.noise_shape)]
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=self.rate, noise_shape=noise_shape, seed=seed, rng_alg="threefry"
        )
