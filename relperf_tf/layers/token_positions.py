"""The positions of a token sequence, 0 … N−1, as a graph node for position encodings."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="relperf_tf")
class TokenPositions(keras.layers.Layer):
    """Token indices of `[batch, N, ...]` as float32 `[N, 1]`: no weights, any N.

    Called on the token tensor to sit in the model's graph (a functional
    model feeds a learnable encoding from a node); only its length matters.

    Example:
    >>> TokenPositions()(keras.ops.zeros((2, 5, 8))).shape
    (5, 1)
    """

    def call(self, tokens):
        return ops.cast(ops.arange(ops.shape(tokens)[1]), "float32")[:, None]

    def compute_output_spec(self, tokens):
        return keras.KerasTensor((tokens.shape[1], 1), dtype="float32")
