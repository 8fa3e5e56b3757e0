"""Exact softmax self-attention through `keras.layers.MultiHeadAttention`."""

import keras


@keras.saving.register_keras_serializable(package="relperf_tf")
class SoftmaxSelfAttention(keras.layers.MultiHeadAttention):
    """Quadratic softmax self-attention with the FAVOR+ layers' call signature.

    out = W_o · softmax(q kᵀ / √d) v per head, q, k, v `[batch, heads,
    tokens, dim/heads]`: Keras' own `MultiHeadAttention` (query = value =
    inputs), so `TransformerBlock` can hold it where it holds a FAVOR+ layer.
    It is the `exact` baseline of the benchmarks (O(N²) time and memory).

    Args:
        num_heads: int, number of heads.
        key_dim: int, width of each head (input width / num_heads for the
            same shapes as the FAVOR+ layers).
        **kwargs: other `keras.layers.MultiHeadAttention` arguments.

    Call arguments:
        inputs: `[batch, tokens, dim]`.
        training: bool.

    Returns:
        `[batch, tokens, dim]`.

    Example:
    >>> SoftmaxSelfAttention(num_heads=2, key_dim=4)(keras.random.normal((1, 9, 8))).shape
    (1, 9, 8)
    """

    def build(self, inputs_shape):
        super().build(inputs_shape, inputs_shape)

    def call(self, inputs, training=None):
        return super().call(inputs, inputs, training=training)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)
