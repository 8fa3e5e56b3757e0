"""The quadratic baseline of the benchmarks: exact softmax attention in the Performer.

`SoftmaxSelfAttention` is `keras.layers.MultiHeadAttention` with the FAVOR+
layers' call signature; `SoftmaxAttentionClassifier` is `Performer` with it
in every block (same embedding, positions, blocks and head), made by one more
position strategy (`absolute_softmax`) registered here. Benchmark code,
not part of the installed package.
"""

import keras

from relperf_tf.layers.favor_attention import select_token
from relperf_tf.models import PerformerClassifier, position_strategies


@keras.saving.register_keras_serializable(package="relperf_benchmarks")
class SoftmaxSelfAttention(keras.layers.MultiHeadAttention):
    """Quadratic softmax attention: `keras.layers.MultiHeadAttention` plus `query_index`.

    out = W_o · softmax(q kᵀ / √d) v per head, q, k, v `[batch, heads,
    tokens, dim/heads]`: Keras' own layer, whose call the FAVOR+ layers share,
    with the one extension `TransformerBlock` uses in a classifier's last block.
    It is the `exact` baseline of the benchmarks (O(N²) time and memory).

    Args:
        num_heads: int, number of heads.
        key_dim: int, width of each head (input width / num_heads for the
            same shapes as the FAVOR+ layers).
        **kwargs: other `keras.layers.MultiHeadAttention` arguments.

    Call arguments:
        query, value, key, masks, training: as `keras.layers.MultiHeadAttention`
            (value None: self-attention).
        query_index: optional int, only that token's output (see `FavorAttention`).

    Returns:
        `[batch, tokens, dim]`.

    Example:
    >>> x = keras.random.normal((1, 9, 8))
    >>> SoftmaxSelfAttention(num_heads=2, key_dim=4)(x, x).shape
    (1, 9, 8)
    """

    def build(self, query_shape, value_shape=None, key_shape=None):
        super().build(query_shape, value_shape or query_shape, key_shape)

    def call(
        self, query, value=None, key=None, query_mask=None, training=None, query_index=None, **kw
    ):
        value = query if value is None else value  # self-attention
        if query_index is not None:
            query = select_token(query, query_index)
            query_mask = None if query_mask is None else select_token(query_mask, query_index)
        return super().call(query, value, key, query_mask=query_mask, training=training, **kw)

    def compute_output_spec(self, query, value=None, *args, query_index=None, **kwargs):
        shape = tuple(query.shape) if query_index is None else (query.shape[0], 1, query.shape[2])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


class SoftmaxAbsolutePositions(position_strategies.AbsolutePositions):
    """`Performer`'s absolute positions, with `keras.layers.MultiHeadAttention` in every block."""

    name = "absolute_softmax"
    model_name = "SoftmaxPerformer"

    def attention(self, backbone, index, favor):
        # FAVOR+ options are accepted and ignored: only the layer's name and policy carry over.
        return SoftmaxSelfAttention(
            backbone.heads,
            backbone.dim // backbone.heads,
            name=favor["name"],
            **backbone.sublayer_options,
        )


position_strategies.register(SoftmaxAbsolutePositions())


def SoftmaxAttentionClassifier(image_shape, num_classes, **hparams):
    """`Performer` whose attention is `keras.layers.MultiHeadAttention` (exact softmax).

    Same embedding, absolute positions, blocks and head; only the attention
    layer differs (the `absolute_softmax` position strategy above), so
    benchmarks compare FAVOR+ with quadratic attention in the same
    architecture. FAVOR+ options are accepted and ignored.
    """
    return PerformerClassifier(
        image_shape, num_classes, position_encoding="absolute_softmax", **hparams
    )
