"""Strategy 1 of arXiv:2102.07680: relative positions through rotated features."""

import keras
from keras import ops

from relperf_tf import settings
from relperf_tf.layers.favor_attention import FavorAttention, select_token


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
        content_rel_attn: bool, add the content-conditioned rotation: each
            token also rotates the positional features by its own (α, β).
        alpha_initializer, beta_initializer: initializers of α and β
            `[heads, pairs]`; default N(0, 1) as in the paper (see
            `locality_prior` for a local start).
        **kwargs: FAVOR+ options of `FavorAttention` (`FavorKernel`).

    Call arguments:
        inputs: `[batch, tokens, dim]`.
        positions: `[tokens, P2]` or `[batch, tokens, P2]` interleaved
            (sin, cos) encodings, e.g. from `LearnableSinusoidEncoding`;
            zeros for tokens without a position (the class token).
        training: bool.
        query_index: optional int, only that token's output (see `FavorAttention`).

    Returns:
        `[batch, tokens, dim]` (`[batch, 1, dim]` with `query_index`).

    Example:
    >>> x = keras.random.normal((1, 5, 8))
    >>> pos = keras.random.normal((5, 4))
    >>> RelativeFavorAttention(num_heads=2)(x, pos).shape
    (1, 5, 8)
    """

    def __init__(
        self,
        num_heads,
        content_rel_attn=False,
        alpha_initializer=None,
        beta_initializer=None,
        **kwargs,
    ):
        super().__init__(num_heads, **kwargs)
        self.content_rel_attn = bool(content_rel_attn)
        # α, β ~ N(0, 1) as in the paper (Keras' "random_normal" has stddev 0.05).
        paper = keras.initializers.RandomNormal(0.0, 1.0)
        self.alpha_initializer = keras.initializers.get(alpha_initializer or paper)
        self.beta_initializer = keras.initializers.get(beta_initializer or paper)

    @staticmethod
    def check_options(**options):
        if "content_rel_attn" in options:
            settings.check_choice("content_rel_attn", options["content_rel_attn"], (False, True))

    def _extra_query_key_dim(self, positions_shape):
        width = int(positions_shape[-1])
        if width % 2:
            raise ValueError(
                f"positions width={width} is not allowed; use interleaved (sin, cos) pairs."
            )
        return width * (2 if self.content_rel_attn else 1)

    def build(self, inputs_shape, positions_shape):
        self._build_projections(inputs_shape, positions_shape)
        self._build_rotations(inputs_shape, int(positions_shape[-1]) // 2)

    def _build_rotations(self, inputs_shape, num_pairs):
        """α, β `[heads, pairs]` (and the content-conditioned rotation)."""
        self.num_pairs = num_pairs
        shape = (self.num_heads, self.num_pairs)
        self.alpha = self.add_weight(name="alpha", shape=shape, initializer=self.alpha_initializer)
        self.beta = self.add_weight(name="beta", shape=shape, initializer=self.beta_initializer)
        if self.content_rel_attn:
            self._content_rotation = keras.layers.Dense(
                self.num_heads * self.num_pairs * 2,
                name="content_rotation",
                dtype=self.dtype_policy,
            )
            self._content_rotation.build(inputs_shape)

    def _positional_features(self, inputs, positions, query_index=None):
        """Positional blocks of q and k, without copies per batch element.

        Returns lists of query blocks (`[1 or b, h, n_q, P2]`: the static
        rotation; with `content_rel_attn` also `[b, h, n_q, P2]`) and the
        matching key blocks (`[1 or b, 1, n, P2]`, e(p_j) each time); FAVOR+
        projects the shared ones once per step, not once per image. n_q = 1
        with `query_index`.
        """
        positions = ops.cast(positions, inputs.dtype)
        if len(positions.shape) == 2:
            positions = positions[None]  # [1, n, P2]: shared by the batch
        width = 2 * self.num_pairs

        def as_pairs(x):  # [lead, n, P2] → [lead, 1, n, pairs, 2]
            return ops.reshape(x, (ops.shape(x)[0], 1, ops.shape(x)[1], self.num_pairs, 2))

        def as_heads(x, heads):  # [lead, h, n, pairs, 2] → [lead, h, n, P2]
            return ops.reshape(x, (ops.shape(x)[0], heads, ops.shape(x)[2], width))

        query_positions = positions if query_index is None else select_token(positions, query_index)
        query_inputs = inputs if query_index is None else select_token(inputs, query_index)
        query_pairs = as_pairs(query_positions)
        static = rotate_pairs(
            query_pairs, self.alpha[None, :, None, :], self.beta[None, :, None, :]
        )
        query_parts = [as_heads(static, self.num_heads)]
        if self.content_rel_attn:
            batch, tokens = ops.shape(query_inputs)[0], ops.shape(query_inputs)[1]
            rotation = ops.reshape(
                self._content_rotation(query_inputs),
                (batch, tokens, self.num_heads, self.num_pairs, 2),
            )
            rotation = ops.transpose(rotation, (0, 2, 1, 3, 4))  # [b, h, n_q, pairs, 2]
            dynamic = rotate_pairs(query_pairs, rotation[..., 0], rotation[..., 1])
            query_parts.append(as_heads(dynamic, self.num_heads))
        key_parts = [as_heads(as_pairs(positions), 1)] * len(query_parts)
        return query_parts, key_parts

    def _attention_inputs(self, inputs, positions=None, query_index=None):
        query, key, value = self._project(inputs, query_index)
        query_parts, key_parts = self._positional_features(inputs, positions, query_index)
        return [query] + query_parts, [key] + key_parts, value, None

    def call(self, inputs, positions, training=None, query_index=None):
        query, key, value, _ = self._attention_inputs(inputs, positions, query_index)
        return self._output(self._favor(query, key, value, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(
            content_rel_attn=self.content_rel_attn,
            alpha_initializer=keras.initializers.serialize(self.alpha_initializer),
            beta_initializer=keras.initializers.serialize(self.beta_initializer),
        )
        return config


RelativeFavorAttention.SETTINGS = settings.describe(
    RelativeFavorAttention,
    ("content_rel_attn",),
    models={"content_rel_attn": ("RelativePerformer",)},
    search={"content_rel_attn": settings.Boolean()},
)
