"""Strategy 1 with its positional part computed exactly: equivariant for any draw."""

import keras
from keras import ops

from relperf_tf import settings
from relperf_tf.layers.grid_attention import has_class_token
from relperf_tf.layers.relative_attention import RelativeFavorAttention, rotate_pairs


@keras.saving.register_keras_serializable(package="relperf_tf")
class GridRelativeAttention(RelativeFavorAttention):
    """Strategy 1 (arXiv:2102.07680) with an exact positional factor on a grid.

    Strategy 1's logit splits into content and position,
    q·k/√d = q_c·k_c/√d + P_row(r_i − r_j) + P_col(c_i − c_j), with
    P(Δ) = Σ_s α_s cos(ω_s Δ) + β_s sin(ω_s Δ) / √d per head (d: strategy 1's
    head width, dim/heads + 2·pairs). FAVOR+ random features estimate the
    content part only; the positional factor is applied exactly:
    A_ij = exp(P_row) exp(P_col) φ(q_i)·φ(k_j), in O(N·(H+W)·m·d) (see
    `grid_attention`). For every fixed random draw, A_ij depends on the two
    contents and their offset only, so attention is exactly translation
    equivariant; with circular offsets (the model's `position_kernel=
    "circular"`), exactly invariant to cyclic shifts of the grid.
    The weights (α, β per head and (sin, cos) pair; q, k, v, output) are
    those of `RelativeFavorAttention`.

    Args:
        num_heads: int, number of heads.
        content_rel_attn: must be False: a content-conditioned rotation makes
            the factor differ per query, which the grid product cannot apply.
        **kwargs: α, β initializers of `RelativeFavorAttention`; FAVOR+
            options of `FavorAttention` (content part).

    Call arguments:
        inputs: `[batch, tokens, dim]`, H·W grid tokens (row-major), optionally
            after one class token (no position: factor 1 with every token).
        positions: `[row_offsets, col_offsets]`, the sinusoid encodings of the
            offsets between rows `[H, H, 2S]` and columns `[W, W, 2S]`
            (e.g. `LearnableSinusoidEncoding` of `relative_offsets(H)[..., None]`).
        training: bool.
        query_index: optional 0: the class token's output alone, `[batch, 1, dim]`.

    Returns:
        `[batch, tokens, dim]`.

    Example:
    >>> from relperf_tf.layers.grid_attention import relative_offsets
    >>> encode = LearnableSinusoidEncoding(2, 8.0)
    >>> offsets = [encode(relative_offsets(n)[..., None]) for n in (3, 4)]
    >>> GridRelativeAttention(2)(keras.random.normal((1, 13, 8)), offsets).shape
    (1, 13, 8)
    """

    def __init__(self, num_heads, content_rel_attn=False, **kwargs):
        self.check_options(content_rel_attn=content_rel_attn)
        super().__init__(num_heads, content_rel_attn=False, **kwargs)

    @staticmethod
    def check_options(**options):
        if options.get("content_rel_attn"):
            raise settings.InvalidSetting(
                "content_rel_attn=True is not allowed with position_kernel='exact' or 'circular' "
                "(a per-query rotation has no exact grid factor); use position_kernel='favor' "
                "or content_rel_attn=False.",
                ["content_rel_attn", "position_kernel"],
            )

    def _extra_query_key_dim(self, positions_shape):
        return 0  # FAVOR+ sees the content part only

    def build(self, inputs_shape, positions_shape):
        row_shape, col_shape = positions_shape
        if (
            tuple(row_shape[:2]) != (row_shape[0], row_shape[0])
            or row_shape[-1] != col_shape[-1]
            or row_shape[-1] % 2
        ):
            raise ValueError(
                f"positions of shapes {tuple(row_shape)} and {tuple(col_shape)} are not allowed; "
                "use offset encodings [H, H, 2S] and [W, W, 2S]."
            )
        self._build_projections(inputs_shape)
        pairs_per_axis = int(row_shape[-1]) // 2
        self._build_rotations(inputs_shape, 2 * pairs_per_axis)
        # Strategy 1's head width, which sets the 1/√d of both parts.
        self.query_key_dim = self.head_dim + 2 * self.num_pairs

    def position_logits(self, row_offsets, col_offsets):
        """P_row `[heads, H, H]` and P_col `[heads, W, W]`, scaled like q·k/√d.

        P(Δ) = e(Δ) R · e(0) = Σ_s α_s cos ω_sΔ + β_s sin ω_sΔ: rows use the
        first half of the (α, β) pairs, columns the second, as in strategy 1.
        """
        half = self.num_pairs // 2
        logits = []
        for encoding, pairs in ((row_offsets, slice(None, half)), (col_offsets, slice(half, None))):
            encoding = ops.cast(encoding, self.compute_dtype)
            length = ops.shape(encoding)[0]
            encoding = ops.reshape(encoding, (1, length, length, half, 2))
            alpha = self.alpha[:, None, None, pairs]
            beta = self.beta[:, None, None, pairs]
            rotated_cos = rotate_pairs(encoding, alpha, beta)[..., 1]  # [h, L, L, S]
            logits.append(ops.sum(rotated_cos, axis=-1) / self.query_key_dim**0.5)
        return logits

    def _attention_inputs(self, inputs, positions=None, query_index=None):
        query, key, value = self._project(inputs, query_index)
        # d^(-1/4) of strategy 1's full width: q_c'·k_c' = q_c·k_c/√d.
        scale = (self.head_dim / self.query_key_dim) ** 0.25
        logits = self.position_logits(*positions)
        if query_index is not None:
            if query_index != 0 or not has_class_token(inputs.shape[1], *logits):
                raise ValueError(
                    f"query_index={query_index} is not allowed; GridRelativeAttention computes "
                    "one token alone only for the class token (query_index=0)."
                )
            logits = None  # the class token's factor is 1 with every token
        return query * scale, key * scale, value, logits

    def call(self, inputs, positions, training=None, query_index=None):
        query, key, value, logits = self._attention_inputs(inputs, positions, query_index)
        heads = self._favor(query, key, value, training=training, position_logits=logits)
        return self._output(heads)
