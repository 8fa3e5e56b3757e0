"""Strategy 1 of arXiv:2102.07680: relative positions through rotated features."""

import keras
from keras import ops

from relperf_tf.layers.favor_attention import FavorAttention


def rotate_pairs(pairs, alpha, beta):
    """Row vectors [s, c] times R = [[α, β], [−β, α]]: [sα − cβ, sβ + cα].

    Args:
        pairs: `[..., pairs, 2]` (sin, cos) pairs.
        alpha, beta: broadcastable to `[..., pairs]`.
    """
    sin, cos = pairs[..., 0], pairs[..., 1]
    return ops.stack([sin * alpha - cos * beta, sin * beta + cos * alpha], axis=-1)


@keras.saving.register_keras_serializable(package="relperf_tf")
class RelativeFavorAttention(FavorAttention):
    """FAVOR+ attention whose q·k depends on positions only through differences.

    query_i = [W_q x_i ; e(p_i) R_h], key_j = [W_k x_j ; e(p_j)], with one
    learned 2×2 block R = [[α, β], [−β, α]] per head and (sin, cos) pair, so
    the positional part of q·k is Σ α cos(ω(p_i−p_j)) + β sin(ω(p_i−p_j)).
    With `content_rel_attn`, a Dense layer maps x_i to its own (α, β) per
    head and pair; the query gets that second rotated block and the key
    repeats e(p_j). FAVOR+ sees head width `dim/heads + P2·(1 + content_rel_attn)`.

    Args:
        num_heads: int, number of heads.
        content_rel_attn: bool, add the content-conditioned rotation.
        **kwargs: FAVOR+ options of `FavorAttention`.

    Call arguments:
        inputs: `[batch, tokens, dim]`.
        positions: `[tokens, P2]` or `[batch, tokens, P2]` interleaved
            (sin, cos) encodings, e.g. from `LearnableSinusoidEncoding`;
            zeros for tokens without a position (the class token).
        training: bool.

    Returns:
        `[batch, tokens, dim]`.

    Example:
    >>> x = keras.random.normal((1, 5, 8))
    >>> pos = keras.random.normal((5, 4))
    >>> RelativeFavorAttention(num_heads=2)(x, pos).shape
    (1, 5, 8)
    """

    def __init__(self, num_heads, content_rel_attn=False, **kwargs):
        super().__init__(num_heads, **kwargs)
        self.content_rel_attn = bool(content_rel_attn)

    def _extra_query_key_dim(self, positions_shape):
        width = int(positions_shape[-1])
        if width % 2:
            raise ValueError(
                f"positions width={width} is not allowed; use interleaved (sin, cos) pairs."
            )
        return width * (2 if self.content_rel_attn else 1)

    def build(self, inputs_shape, positions_shape):
        self._build_projections(inputs_shape, positions_shape)
        self.num_pairs = int(positions_shape[-1]) // 2
        shape = (self.num_heads, self.num_pairs)
        # α, β ~ N(0, 1) as in the paper (Keras' "random_normal" has stddev 0.05).
        self.alpha = self.add_weight(
            name="alpha", shape=shape, initializer=keras.initializers.RandomNormal(0.0, 1.0)
        )
        self.beta = self.add_weight(
            name="beta", shape=shape, initializer=keras.initializers.RandomNormal(0.0, 1.0)
        )
        if self.content_rel_attn:
            self._content_rotation = keras.layers.Dense(
                self.num_heads * self.num_pairs * 2, name="content_rotation"
            )
            self._content_rotation.build(inputs_shape)

    def _positional_features(self, inputs, positions):
        """Positional blocks of q and k, without copies per batch element.

        Returns lists of query blocks (`[1 or b, h, n, P2]`: the static
        rotation; with `content_rel_attn` also `[b, h, n, P2]`) and the
        matching key blocks (`[1 or b, 1, n, P2]`, e(p_j) each time); FAVOR+
        projects the shared ones once per step, not once per image.
        """
        positions = ops.cast(positions, inputs.dtype)
        if len(positions.shape) == 2:
            positions = positions[None]  # [1, n, P2]: shared by the batch
        lead, tokens = ops.shape(positions)[0], ops.shape(positions)[1]
        width = 2 * self.num_pairs
        pairs = ops.reshape(positions, (lead, 1, tokens, self.num_pairs, 2))
        static = rotate_pairs(pairs, self.alpha[None, :, None, :], self.beta[None, :, None, :])
        query_parts = [ops.reshape(static, (lead, self.num_heads, tokens, width))]
        key_part = ops.reshape(pairs, (lead, 1, tokens, width))
        if self.content_rel_attn:
            batch = ops.shape(inputs)[0]
            rotation = ops.reshape(
                self._content_rotation(inputs),
                (batch, tokens, self.num_heads, self.num_pairs, 2),
            )
            rotation = ops.transpose(rotation, (0, 2, 1, 3, 4))  # [b, h, n, pairs, 2]
            dynamic = rotate_pairs(pairs, rotation[..., 0], rotation[..., 1])
            query_parts.append(ops.reshape(dynamic, (batch, self.num_heads, tokens, width)))
        key_parts = [key_part] * len(query_parts)
        return query_parts, key_parts

    def call(self, inputs, positions, training=None):
        query, key, value = self._project(inputs)
        query_parts, key_parts = self._positional_features(inputs, positions)
        heads = self._favor([query] + query_parts, [key] + key_parts, value, training=training)
        return self._output(heads)

    def get_config(self):
        config = super().get_config()
        config.update(content_rel_attn=self.content_rel_attn)
        return config
