"""The quadratic baseline of the benchmarks: exact softmax attention in the Performer.

`SoftmaxSelfAttention` is `keras.layers.MultiHeadAttention` with the FAVOR+
layers' call signature; `SoftmaxAttentionClassifier` is `Performer` with it
in every block (same embedding, positions, blocks and head). Benchmark code,
not part of the installed package.
"""

import keras

from relperf_tf.layers.favor_attention import select_token
from relperf_tf.models import PerformerClassifier


@keras.saving.register_keras_serializable(package="relperf_benchmarks")
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
        query_index: optional int, only that token's output (see `FavorAttention`).

    Returns:
        `[batch, tokens, dim]`.

    Example:
    >>> SoftmaxSelfAttention(num_heads=2, key_dim=4)(keras.random.normal((1, 9, 8))).shape
    (1, 9, 8)
    """

    def build(self, inputs_shape):
        super().build(inputs_shape, inputs_shape)

    def call(self, inputs, training=None, query_index=None):
        query = inputs if query_index is None else select_token(inputs, query_index)
        return super().call(query, inputs, training=training)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def compute_output_spec(self, inputs, training=None, query_index=None):
        shape = (
            tuple(inputs.shape) if query_index is None else (inputs.shape[0], 1, inputs.shape[2])
        )
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="relperf_benchmarks")
class SoftmaxAttentionClassifier(PerformerClassifier):
    """`Performer` whose attention is `keras.layers.MultiHeadAttention` (exact softmax).

    Same embedding, absolute positions, blocks and head; only the attention
    layer differs, so benchmarks compare FAVOR+ with quadratic attention in
    the same architecture. FAVOR+ options are accepted and ignored.
    """

    def _attention(self, index):
        return SoftmaxSelfAttention(
            self.heads, self.dim // self.heads, name="attention", **self._sublayer
        )
