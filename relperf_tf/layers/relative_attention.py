"""Strategy 1 of arXiv:2102.07680: relative positions through rotated features, through FAVOR+
or as an exact factor, in 1-D (token order) or 2-D (grids), at any length."""

import keras
import numpy as np
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import toeplitz_attention, token_layout
from relperf_tf.layers.favor_attention import FavorAttention, kernel_policy, select_token
from relperf_tf.layers.grid_attention import has_class_token
from relperf_tf.layers.sinusoid_encoding import LearnableSinusoidEncoding

# How the positional logits enter: estimated with the content by FAVOR+ (the
# paper), or as an exact factor with offsets on the finite axis or cyclic ones.
POSITION_KERNELS = ("favor", "exact", "circular")
# Random features of an exact or circular factor's content part unless given: positions are
# exact, the features only estimate content similarity, and the factor's product costs
# m·(d + 1) channels per head. m = 2 keeps a training step within half of
# MultiHeadAttention's at 512 tokens and a tenth at 4 096 (docs/benchmarks.md); m = 4, the
# shipped models', scored 3.6 points more on one epoch of sequential Fashion-MNIST at about
# 1.4× the cost.
EXACT_FACTOR_FEATURES = 2


def rotate_pairs(pairs, alpha, beta):
    """Row vectors [s, c] times R = [[α, β], [−β, α]]: [sα − cβ, sβ + cα].

    Args:
        pairs: `[..., pairs, 2]` (sin, cos) pairs.
        alpha, beta: broadcastable to `[..., pairs]`.
    """
    sin, cos = pairs[..., 0], pairs[..., 1]
    return ops.stack([sin * alpha - cos * beta, sin * beta + cos * alpha], axis=-1)


def wrap_offsets(offsets, length):
    """Offsets taken modulo `length` into [−length/2, length/2) (circulant factors)."""
    half = length // 2
    return (offsets + half) % length - half


@keras.saving.register_keras_serializable(package="relperf_tf")
class RelativeFavorAttention(FavorAttention):
    """FAVOR+ attention whose q·k depends on positions only through differences.

    Strategy 1 of arXiv:2102.07680: query_i = [W_q x_i ; e(p_i) R_h], key_j =
    [W_k x_j ; e(p_j)], with one learned 2×2 block R = [[α, β], [−β, α]] per
    head and (sin, cos) pair, so the positional part of q·k/√d is
    P(p_i − p_j) = Σ α cos(ωΔ) + β sin(ωΔ) (/√d; d = key_dim + 2·pairs),
    summed over the position axes. `position_kernel` says how P enters:
    - `exact` (default): FAVOR+ features of the content only, times the exact
      factor exp(P(p_i − p_j)): equivariant for any fixed draw. 1-D: a
      Toeplitz product (`toeplitz_attention`), causal allowed; 2-D and more:
      one product per axis (`grid_attention`).
    - `circular`: the same with offsets modulo the axis length: exactly
      invariant to cyclic shifts (T = S on every axis).
    - `favor` (the paper): inside the FAVOR+ features; equivariant in
      expectation over draws.
    With `content_rel_attn` (favor only), a Dense layer maps x_i to its own
    (α, β) per head and pair; the query gets that second rotated block and
    the key repeats e(p_j).

    Positions: by default the layer owns a learnable sinusoid encoding
    (`pos_scales` frequencies per axis) of the positions along the attention
    axes: token order for `[batch, tokens, dim]` inputs, (row, column) for
    `attention_axes=(1, 2)` over `[batch, H, W, dim]`, and so on; any length
    runs with the same weights. With `pos_scales=None` the call passes
    encodings made elsewhere (`positions`; the image models share one
    encoding across blocks).

    Args:
        num_heads: int, number of heads.
        key_dim: int, width of each head's query and key.
        *args: `FavorAttention`'s further arguments in MultiHeadAttention's
            order (`value_dim`, `dropout`, `use_bias`, `output_shape`,
            `attention_axes`, `sliding_window`, …); they may be keywords.
        position_kernel: `exact` (default), `circular` or `favor` (above).
        pos_scales: int S >= 1, sinusoid frequencies per position axis of the
            layer's own encoding (default 4, as the paper and our shipped
            models); None: encodings are given at call time.
        position_axes: None (default: as many as the attention axes), or the
            number of axes of the own encoding; 2 with `[batch, tokens, dim]`
            inputs is the grid of the call's `grid_shape`.
        max_timescale: float T > 0, the own encoding's initial frequencies
            ω_s = T^(−(s−1)/S) (default 64: periods of 6 to 140 tokens).
        content_rel_attn: bool, add the content-conditioned rotation (`favor`
            only: a per-query rotation has no exact factor).
        alpha_initializer: initializer of α `[heads, pairs]`; default N(0, 1)
            as in the paper (see `locality_prior` for a local start).
        beta_initializer: initializer of β, likewise.
        toeplitz_method: `auto`, `dense` or `fft`: how the 1-D exact factor
            is applied (`toeplitz_attention`).
        **kwargs: `FavorAttention`'s keyword arguments (`use_gate`, `seed`,
            the initializers, …) and the FAVOR+ options of `FavorKernel`;
            `nb_features` defaults to `EXACT_FACTOR_FEATURES` (2) with an exact
            or circular factor.

    Call arguments:
        query, value, key, masks, use_causal_mask, return_attention_scores,
            training: as `FavorAttention` (causal: 1-D positions only).
        positions: encodings made elsewhere (layers without `pos_scales`):
            `favor`: `[tokens, 2·pairs]` or `[batch, tokens, 2·pairs]`
            interleaved (sin, cos) per token (zeros for a class token), or a
            pair (query's, key's); `exact`/`circular`: `[row_offsets,
            col_offsets]`, encodings of the row offsets `[H_q, H_k, 2S]` and
            column offsets `[W_q, W_k, 2S]`.
        grid_shape: (H, W) of the query's grid for `position_axes=2` on
            `[batch, tokens, dim]` inputs; tokens are H·W, or H·W + 1 with a
            class token first.
        key_grid_shape: (H, W) of the keys' grid (default: `grid_shape`).
        query_index: optional int, only that token's output (see `FavorAttention`;
            `exact`/`circular`: the class token, 0, only).
        cache, cache_update_index: decode causally one step at a time (see
            `FavorAttention`; 1-D layers with their own encoding; `favor`: an
            O(1) state, `exact`: the past tokens' keys and values, O(t) per
            token; `circular` cannot, its offsets wrap around the whole
            sequence).

    Returns:
        `[batch, T, dim]` (`[batch, 1, dim]` with `query_index`).

    Example:
    >>> x = keras.random.normal((2, 50, 16))
    >>> layer = RelativeFavorAttention(4, key_dim=4)
    >>> layer(x, x, use_causal_mask=True).shape
    (2, 50, 16)
    >>> layer(x[:, :20], x[:, :20]).shape  # another length, the same weights
    (2, 20, 16)
    >>> grid = keras.random.normal((2, 6, 7, 16))  # 2-D positions over rows and columns
    >>> RelativeFavorAttention(4, key_dim=4, attention_axes=(1, 2))(grid, grid).shape
    (2, 6, 7, 16)
    """

    # The constructor arguments a model passes through from its own options.
    OPTIONS = ("content_rel_attn",)

    def __init__(
        self,
        num_heads,
        key_dim=None,
        *args,
        position_kernel="exact",
        pos_scales=4,
        position_axes=None,
        max_timescale=64.0,
        content_rel_attn=False,
        alpha_initializer=None,
        beta_initializer=None,
        toeplitz_method="auto",
        **kwargs,
    ):
        if position_kernel in ("exact", "circular"):
            kwargs.setdefault("nb_features", EXACT_FACTOR_FEATURES)
        super().__init__(num_heads, key_dim, *args, **kwargs)
        validation.check_choice("position_kernel", position_kernel, POSITION_KERNELS)
        validation.check_optional_int("pos_scales", pos_scales, 1)
        validation.check_optional_int("position_axes", position_axes, 1)
        validation.check_number("max_timescale", max_timescale, 0.0, exclusive_minimum=True)
        toeplitz_attention.check_method(toeplitz_method)
        self.check_options(content_rel_attn=content_rel_attn)
        self.check_kernel(position_kernel, content_rel_attn)
        if self.sliding_window is not None and position_kernel == "circular":
            raise ValueError(
                "sliding_window is not allowed with position_kernel='circular': a circulant "
                "band wraps around the ends; use position_kernel='exact' or no window."
            )
        axes = None if self.attention_axes is None else len(self.attention_axes)
        if position_axes is not None and axes is not None and position_axes != axes:
            raise ValueError(
                f"position_axes={position_axes} does not fit attention_axes="
                f"{self.attention_axes}; leave position_axes=None (one per attention axis)."
            )
        self.position_kernel = position_kernel
        self.pos_scales = None if pos_scales is None else int(pos_scales)
        self.position_axes = None if position_axes is None else int(position_axes)
        self.max_timescale = float(max_timescale)
        self.content_rel_attn = bool(content_rel_attn)
        self.toeplitz_method = toeplitz_method
        # α, β ~ N(0, 1) as in the paper (Keras' "random_normal" has stddev 0.05).
        paper = keras.initializers.RandomNormal(0.0, 1.0)
        self.alpha_initializer = keras.initializers.get(alpha_initializer or paper)
        self.beta_initializer = keras.initializers.get(beta_initializer or paper)

    @staticmethod
    def check_options(**options):
        if "content_rel_attn" in options:
            validation.check_choice("content_rel_attn", options["content_rel_attn"], (False, True))

    @staticmethod
    def check_kernel(position_kernel, content_rel_attn):
        """The content-conditioned rotation exists for the `favor` kernel only."""
        if content_rel_attn and position_kernel != "favor":
            raise validation.InvalidSetting(
                "content_rel_attn=True is not allowed with position_kernel='exact' or 'circular' "
                "(a per-query rotation has no exact grid factor); use position_kernel='favor' "
                "or content_rel_attn=False.",
                ["content_rel_attn", "position_kernel"],
            )

    @property
    def exact_factor(self):
        """Whether the positional part is applied exactly (not through FAVOR+)."""
        return self.position_kernel != "favor"

    # --- build -------------------------------------------------------------

    def _pairs_from(self, positions_shape):
        """(sin, cos) pairs of α, β: the own encoding's, or those of the given encodings."""
        if self.pos_scales is not None:
            return self.num_position_axes * self.pos_scales
        if positions_shape is None:
            raise ValueError(
                f"{type(self).__name__} with pos_scales=None needs positions=… encodings at "
                "call time; or set pos_scales (default 4) to give the layer its own position "
                "encoding."
            )
        if self.exact_factor:
            row_shape, col_shape = positions_shape
            if len(row_shape) != 3 or row_shape[-1] != col_shape[-1] or row_shape[-1] % 2:
                raise ValueError(
                    f"positions of shapes {tuple(row_shape)} and {tuple(col_shape)} are not "
                    "allowed; use offset encodings [H_q, H_k, 2S] and [W_q, W_k, 2S]."
                )
            return int(row_shape[-1])  # rows' S pairs, then columns'
        if isinstance(positions_shape, (list, tuple)) and isinstance(
            positions_shape[0], (list, tuple)
        ):
            positions_shape = positions_shape[0]  # (query's, key's)
        width = int(positions_shape[-1])
        if width % 2:
            raise ValueError(
                f"positions width={width} is not allowed; use interleaved (sin, cos) pairs."
            )
        return width // 2

    def _extra_query_key_dim(self, positions_shape):
        if self.exact_factor:
            return 0  # FAVOR+ sees the content part only
        return 2 * self.num_pairs * (2 if self.content_rel_attn else 1)

    def build(self, query_shape, value_shape=None, key_shape=None, positions_shape=None):
        rank = len(query_shape)
        attention_axes = len(token_layout.resolve_axes(self.attention_axes, rank))
        # Axes of the own encoding; encodings given at call time: 2 offset tables (exact).
        self.num_position_axes = self.position_axes or attention_axes
        if self.pos_scales is None and self.exact_factor:
            self.num_position_axes = 2
        self.num_pairs = self._pairs_from(positions_shape)
        self._build_projections(query_shape, value_shape, key_shape, positions_shape)
        self._build_rotations(query_shape)
        # Strategy 1's head width, which sets the 1/√d of both parts.
        self.query_key_dim = self.head_dim + 2 * self.num_pairs
        if self.pos_scales is not None:
            self._encoding = LearnableSinusoidEncoding(
                self.pos_scales,
                self.max_timescale,
                name="positions",
                dtype=kernel_policy(self.dtype_policy),  # phases ω·p in float32 (or float64)
            )
            self._encoding.build((None, 1))

    def _build_rotations(self, inputs_shape):
        """α, β `[heads, pairs]` (and the content-conditioned rotation)."""
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

    # --- positions of the layer's own encoding -------------------------------

    def _grids(self, queries, keys, grids, grid_shape, key_grid_shape):
        """The query's and the key's grids (sizes per position axis), and whether each has a
        class token first (the legacy `grid_shape` form only)."""
        query_grid, key_grid = grids
        if grid_shape is None and key_grid_shape is None:
            if len(query_grid) == self.num_position_axes:
                return tuple(query_grid), tuple(key_grid), False, False
            if self.num_position_axes == 2 and len(query_grid) == 1:
                raise ValueError(
                    "a 2-D layer (position_axes=2) on [batch, tokens, dim] inputs needs "
                    "grid_shape=(H, W) at call time; or attend over two axes of a [batch, H, W, "
                    "dim] input (attention_axes=(1, 2))."
                )
            raise ValueError(
                f"this layer encodes {self.num_position_axes} position axes; the call attends "
                f"over {len(query_grid)}: set attention_axes (or position_axes) to match."
            )
        if self.num_position_axes != 2 or len(query_grid) != 1:
            raise ValueError(
                "grid_shape is for 2-D layers (position_axes=2) on [batch, tokens, dim] inputs; "
                "this layer takes positions from its attention axes."
            )
        grid_shape = tuple(int(s) for s in grid_shape)
        key_grid_shape = grid_shape if key_grid_shape is None else tuple(key_grid_shape)
        if len(grid_shape) != 2 or len(key_grid_shape) != 2:
            raise ValueError(
                f"grid_shape={grid_shape} / key_grid_shape={key_grid_shape} are not allowed; "
                "use (H, W)."
            )
        query_class = has_class_token(queries, grid_shape, "queries")
        key_class = has_class_token(keys, key_grid_shape, "keys")
        return grid_shape, key_grid_shape, query_class, key_class

    def _encode(self, coordinates):
        """The own encoding of float coordinates `[..., 1]` → `[..., 2S]` (float32)."""
        return self._encoding(ops.cast(coordinates, "float32"))

    def _token_encodings(self, grid, class_token):
        """Per-token encodings `[1, N, axes·2S]` of a row-major grid (zeros for a class token)."""
        if len(grid) == 1:
            encoding = self._encode(ops.arange(grid[0])[:, None])  # any length, also traced
        else:
            coordinates = np.stack(
                np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=-1
            ).astype("float32")  # [N, axes]
            encoding = ops.reshape(self._encode(coordinates[..., None]), (len(coordinates), -1))
        if class_token:
            encoding = ops.pad(encoding, ((1, 0), (0, 0)))
        return encoding[None]

    def _own_factor_logits(self, query_grid, key_grid):
        """The exact factor's logits: 1-D `[(heads, T + S − 1)]`, else one `[heads, L_q, L_k]`
        table per axis."""
        circular = self.position_kernel == "circular"
        for axis, (query_length, key_length) in enumerate(zip(query_grid, key_grid)):
            static = isinstance(query_length, int) and isinstance(key_length, int)
            if circular and static and query_length != key_length:
                raise ValueError(
                    f"position_kernel='circular' needs queries and keys of one length per axis; "
                    f"got {query_length} and {key_length} on axis {axis}."
                )
        if len(query_grid) == 1:
            offsets = toeplitz_attention.offsets_vector(query_grid[0], key_grid[0])
            if circular:
                offsets = wrap_offsets(offsets, ops.cast(query_grid[0], "float32"))
            return [self._axis_logits(self._encode(offsets[:, None]), 0)]
        logits = []
        for axis, (query_length, key_length) in enumerate(zip(query_grid, key_grid)):
            offsets = np.arange(query_length)[:, None] - np.arange(key_length)[None, :]
            if circular:
                offsets = wrap_offsets(offsets, query_length)
            encoding = self._encode(offsets.astype("float32")[..., None])  # [Lq, Lk, 2S]
            logits.append(self._axis_logits(encoding, axis))
        return logits

    # --- strategy 1's two paths --------------------------------------------

    def _axis_logits(self, encoding, axis):
        """P over one axis, `[heads, ...]` from its offset encodings `[..., 2S]`, scaled like
        q·k/√d.

        P(Δ) = e(Δ) R · e(0) = Σ_s α_s cos ω_sΔ + β_s sin ω_sΔ, with axis
        `axis`'s block of the (α, β) pairs (axes in order, as in strategy 1's
        features).
        """
        scales = self.num_pairs // self.num_position_axes
        return self._rotated_logits(encoding, slice(axis * scales, (axis + 1) * scales), scales)

    def _rotated_logits(self, encoding, pairs, scales):
        encoding = ops.cast(encoding, self.compute_dtype)
        lead = tuple(ops.shape(encoding)[:-1])
        encoding = ops.reshape(encoding, (1,) + lead + (scales, 2))
        index = (slice(None),) + (None,) * len(lead) + (pairs,)
        alpha, beta = (ops.cast(w, self.compute_dtype) for w in (self.alpha, self.beta))
        rotated_cos = rotate_pairs(encoding, alpha[index], beta[index])[..., 1]
        return ops.sum(rotated_cos, axis=-1) / self.query_key_dim**0.5  # [h, ...]

    def _positional_features(self, query_inputs, query_positions, key_positions):
        """Positional blocks of q and k, without copies per batch element.

        Returns lists of query blocks (`[1 or b, h, T, 2·pairs]`: the static
        rotation; with `content_rel_attn` also `[b, h, T, 2·pairs]`) and the
        matching key blocks (`[1 or b, 1, S, 2·pairs]`, e(p_j) each time);
        FAVOR+ projects the shared ones once per step, not once per image.
        """
        width = 2 * self.num_pairs

        def as_pairs(x):  # [lead, n, P2] → [lead, 1, n, pairs, 2]
            x = ops.cast(x, query_inputs.dtype)
            if len(x.shape) == 2:
                x = x[None]  # [1, n, P2]: shared by the batch
            return ops.reshape(x, (ops.shape(x)[0], 1, ops.shape(x)[1], self.num_pairs, 2))

        def as_heads(x, heads):  # [lead, h, n, pairs, 2] → [lead, h, n, P2]
            return ops.reshape(x, (ops.shape(x)[0], heads, ops.shape(x)[2], width))

        alpha, beta = (ops.cast(w, query_inputs.dtype) for w in (self.alpha, self.beta))
        query_pairs = as_pairs(query_positions)
        static = rotate_pairs(query_pairs, alpha[None, :, None, :], beta[None, :, None, :])
        query_parts = [as_heads(static, self.num_heads)]
        if self.content_rel_attn:
            batch, tokens = ops.shape(query_inputs)[0], ops.shape(query_inputs)[1]
            rotation = ops.reshape(
                self._content_rotation(query_inputs),
                (batch, tokens, self.num_heads, self.num_pairs, 2),
            )
            rotation = ops.transpose(rotation, (0, 2, 1, 3, 4))  # [b, h, T, pairs, 2]
            dynamic = rotate_pairs(query_pairs, rotation[..., 0], rotation[..., 1])
            query_parts.append(as_heads(dynamic, self.num_heads))
        key_parts = [as_heads(as_pairs(key_positions), 1)] * len(query_parts)
        return query_parts, key_parts

    def _toeplitz_method(self):
        return self.toeplitz_method

    def _positional(
        self,
        query,
        value,
        q,
        k,
        query_index=None,
        grids=None,
        positions=None,
        grid_shape=None,
        key_grid_shape=None,
    ):
        queries, keys = token_layout.length(query, 1), token_layout.length(value, 1)
        grids = grids or ((queries,), (keys,))
        own = self.pos_scales is not None
        if own and positions is not None:
            raise ValueError(
                "positions=… is for layers with pos_scales=None; this layer encodes positions "
                "itself (its attention axes, or grid_shape)."
            )
        if not own and (grid_shape is not None or key_grid_shape is not None):
            raise ValueError(
                "grid_shape is for layers with pos_scales (their own encoding); this layer takes "
                "positions=… encodings."
            )
        if not own and positions is None:
            self._pairs_from(None)  # raises the message naming both ways
        if own:
            query_grid, key_grid, query_class, key_class = self._grids(
                queries, keys, grids, grid_shape, key_grid_shape
            )
        if not self.exact_factor:
            if own:
                query_positions = self._token_encodings(query_grid, query_class)
                key_positions = self._token_encodings(key_grid, key_class)
            elif isinstance(positions, (list, tuple)):
                query_positions, key_positions = positions
            else:
                query_positions = key_positions = positions
            query_inputs = query
            if query_index is not None:
                query_inputs = select_token(query, query_index)
                query_positions = select_token(
                    query_positions if len(query_positions.shape) == 3 else query_positions[None],
                    query_index,
                )
            query_parts, key_parts = self._positional_features(
                query_inputs, query_positions, key_positions
            )
            return [q] + query_parts, [k] + key_parts, []
        scale = self._content_scale()
        if own:
            logits = self._own_factor_logits(query_grid, key_grid)
        else:
            logits = [self._axis_logits(encoding, axis) for axis, encoding in enumerate(positions)]
        if query_index is not None:
            grid = None if len(logits) != 2 else (logits[0].shape[-2], logits[1].shape[-2])
            if query_index != 0 or grid is None or not has_class_token(queries, grid):
                raise ValueError(
                    f"query_index={query_index} is not allowed; with an exact factor one token is "
                    "computed alone only for a grid's class token (query_index=0)."
                )
            logits = []  # the class token's factor is 1 with every token
        return q * scale, k * scale, logits

    def _content_scale(self):
        """The exact factor's scale of the content q and k, (d / d_full)^(1/4) with d_full
        strategy 1's full width, so that q_c'·k_c' = q_c·k_c/√d."""
        return (self.head_dim / self.query_key_dim) ** 0.25

    # --- decoding one step at a time -------------------------------------------

    def _cache_kind(self):
        if self.pos_scales is None or self.num_position_axes != 1:
            raise ValueError(
                "decoding with a cache needs a 1-D layer with its own encoding (pos_scales set, "
                "one attention axis)."
            )
        if self.position_kernel == "circular":
            raise ValueError(
                "decoding with a cache is not allowed with position_kernel='circular': its "
                "offsets wrap around the whole sequence, unknown while decoding; use 'exact'."
            )
        kind = super()._cache_kind()
        return "key_value" if self.exact_factor else kind

    def _decode_positional(self, query, q, k, index, length):
        tokens = ops.shape(query)[1]
        positions = ops.cast(index, "float32") + ops.cast(ops.arange(tokens), "float32")
        if not self.exact_factor:
            encodings = self._encode(positions[:, None])[None]  # [1, T_new, 2S]
            query_parts, key_parts = self._positional_features(query, encodings, encodings)
            return [q] + query_parts, [k] + key_parts, None
        # P(i − j) for the new positions i against every cached position j.
        offsets = positions[:, None] - ops.cast(ops.arange(length), "float32")[None, :]
        logits = self._axis_logits(self._encode(offsets[..., None]), 0)  # [h, T_new, S_max]
        scale = self._content_scale()
        return q * scale, k * scale, ops.cast(logits, q.dtype)

    def axis_logits(self, encoding, axis, axes=2):
        """P(Δ) over position axis `axis` of `axes`, `[heads, ...]`, from encodings of offsets
        `[..., 2S]`: Σ_s α_s cos ω_sΔ + β_s sin ω_sΔ / √d with that axis's block of (α, β)."""
        scales = self.num_pairs // axes
        return self._rotated_logits(encoding, slice(axis * scales, (axis + 1) * scales), scales)

    def position_logits(self, row_offsets, col_offsets):
        """P_row `[heads, H, H]` and P_col `[heads, W, W]` from offset encodings (see
        `_axis_logits`)."""
        return [self._axis_logits(row_offsets, 0), self._axis_logits(col_offsets, 1)]

    def call(
        self,
        query,
        value=None,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        positions=None,
        grid_shape=None,
        key_grid_shape=None,
        query_index=None,
        cache=None,
        cache_update_index=None,
    ):
        if cache is not None:
            extra = dict(positions=positions, grid_shape=grid_shape, key_grid_shape=key_grid_shape)
            extra = {name: value for name, value in extra.items() if value is not None}
            return self._decode(query, value, key, query_mask, cache, cache_update_index, extra)
        return super().call(
            query,
            value,
            key,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            use_causal_mask=use_causal_mask,
            query_index=query_index,
            positions=positions,
            grid_shape=grid_shape,
            key_grid_shape=key_grid_shape,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            position_kernel=self.position_kernel,
            pos_scales=self.pos_scales,
            position_axes=self.position_axes,
            max_timescale=self.max_timescale,
            content_rel_attn=self.content_rel_attn,
            alpha_initializer=keras.initializers.serialize(self.alpha_initializer),
            beta_initializer=keras.initializers.serialize(self.beta_initializer),
            toeplitz_method=self.toeplitz_method,
        )
        return config
