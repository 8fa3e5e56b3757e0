"""Strategy 2 of arXiv:2102.07680: clipped relative embeddings, linear time."""

import keras
import numpy as np
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import attention_masks
from relperf_tf.layers.favor_attention import FavorAttention
from relperf_tf.layers.feature_maps import safe_divide


def window_tables(height, width, clipping_dist, class_token):
    """Constant neighbourhood tables of an H×W grid (built once, in NumPy).

    Offsets (dr, dc) with |dr| + |dc| < D, K = 2D² − 2D + 1 of them. Token
    order is row-major; the class token (if any) is last and has no window.

    Returns:
        neighbours: int32 `[tokens, K]`, token index of each neighbour (0 when
            outside the grid; then `valid` is 0).
        valid: float32 `[tokens, K]`, 1 where the neighbour is on the grid.
        ring: int32 `[K]`, the distance |dr| + |dc| of each offset.
        counts: float32 `[tokens, D]`, the number of valid neighbours per distance.
    """
    reach = clipping_dist - 1
    dr, dc = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    keep = np.abs(dr) + np.abs(dc) < clipping_dist
    dr, dc = dr[keep], dc[keep]  # [K]
    ring = (np.abs(dr) + np.abs(dc)).astype(np.int32)
    rows, cols = np.divmod(np.arange(height * width), width)
    nr, nc = rows[:, None] + dr[None], cols[:, None] + dc[None]  # [N, K]
    valid = (nr >= 0) & (nr < height) & (nc >= 0) & (nc < width)
    neighbours = np.where(valid, nr * width + nc, 0).astype(np.int32)
    if class_token:
        neighbours = np.concatenate([neighbours, np.zeros((1, len(ring)), np.int32)])
        valid = np.concatenate([valid, np.zeros((1, len(ring)), bool)])
    counts = np.stack([(valid & (ring == d)).sum(1) for d in range(clipping_dist)], axis=1)
    return neighbours, valid.astype(np.float32), ring, counts.astype(np.float32)


def ring_sums(value, grid_shape, clipping_dist):
    """R_d(i) = Σ_(|Δrow|+|Δcol| = d) v_j for d = 0 … D−1, by shifted adds.

    value `[b, h, tokens, d]` (grid tokens row-major first, then at most one
    class token, which is in no ring) → D tensors `[b, h, tokens, d]` (zero for
    the class token). Diamond sums B_d (|Δrow|+|Δcol| ≤ d) follow
    B_d = B_(d−1)(r−1, c) + B_(d−1)(r+1, c) − B_(d−2) + v(r, c±d) + v(r, c±(d−1))
    on the grid padded by D zeros (wide enough that every diamond a grid token
    needs is exact), and R_d = B_d − B_(d−1).
    """
    height, width = grid_shape
    batch, heads = ops.shape(value)[0], ops.shape(value)[1]
    tokens, dim = value.shape[2], value.shape[3]
    pad = clipping_dist
    grid = ops.reshape(value[:, :, : height * width], (batch, heads, height, width, dim))
    grid = ops.pad(grid, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)))

    def shift(x, rows, cols):  # y(r, c) = x(r + rows, c + cols), zero outside
        x = ops.pad(
            x,
            ((0, 0), (0, 0), (max(-rows, 0), max(rows, 0)), (max(-cols, 0), max(cols, 0)), (0, 0)),
        )
        r0, c0 = max(rows, 0), max(cols, 0)
        return x[:, :, r0 : r0 + height + 2 * pad, c0 : c0 + width + 2 * pad]

    def on_grid(x):
        x = ops.reshape(
            x[:, :, pad : pad + height, pad : pad + width], (batch, heads, height * width, dim)
        )
        if tokens > height * width:
            x = ops.pad(x, ((0, 0), (0, 0), (0, tokens - height * width), (0, 0)))
        return x

    def row_pair(distance):  # v(r, c − d) + v(r, c + d), or v for d = 0
        return grid if distance == 0 else shift(grid, 0, -distance) + shift(grid, 0, distance)

    rings, before, current = [on_grid(grid)], None, grid
    for distance in range(1, clipping_dist):
        # B_(d−1) shifted up and down covers B_d but (0, ±d) and (0, ±(d−1)),
        # and covers B_(d−2) twice.
        following = (
            shift(current, -1, 0)
            + shift(current, 1, 0)
            + row_pair(distance)
            + row_pair(distance - 1)
        )
        if before is not None:
            following = following - before
        rings.append(on_grid(following - current))
        before, current = current, following
    return rings


def grid_distances(grid_shape, clipping_dist, class_token):
    """min(|Δrow| + |Δcol|, D) between tokens (D for every pair with the class token), int32
    `[tokens, tokens]`; quadratic: for attention maps and tests."""
    height, width = grid_shape
    rows, cols = np.divmod(np.arange(height * width), width)
    distance = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    distance = np.minimum(distance, clipping_dist)
    if class_token:
        distance = np.pad(distance, ((0, 1), (0, 1)), constant_values=clipping_dist)
    return distance.astype("int32")


@keras.saving.register_keras_serializable(package="relperf_tf")
class ClippedRelativeAttention(FavorAttention):
    """Half FAVOR+ content heads, half clipped-relative heads, O(N·D²·d).

    A relative head scores pair (i, j) by exp(q_i · r_d(i,j) / √d) with
    d(i, j) = min(|Δrow| + |Δcol|, D) and learned r_0 … r_D (r_D also for every
    pair with the class token). Output_i = Σ_j score_ij v_j / Σ_j score_ij,
    computed as exp(q_i·r_D) Σ_j v_j + Σ_(d<D) (exp(q_i·r_d) − exp(q_i·r_D)) R_d(i):
    one global sum plus the ring sums R_d(i) = Σ_(d(i,j)=d) v_j, which do not
    depend on the query (`ring_sums`: 4D shifted adds of the value grid,
    O(N·D·d), no gather). Masked keys drop out of every sum and every count
    (the ring sums carry a validity channel).
    The scores use the exact exponential (D + 1 dot products per query), the
    limit that FAVOR+ features φ(q)·φ(r) estimate, so the layer is
    deterministic.

    Args:
        num_heads: int, even; the first half are content heads.
        key_dim: int, width of each head's query and key.
        *args: `FavorAttention`'s further arguments in MultiHeadAttention's
            order (`value_dim`, `dropout`, `use_bias`, `output_shape`,
            `attention_axes`, …; one attention axis, no `sliding_window`).
        grid_shape: (height, width) of the token grid (any H×W), or None: the
            grid is given at call time, or else the tokens are one row (1-D).
        clipping_dist: int, the clipping distance D >= 1: Manhattan distances
            beyond D share one learned embedding (as do the class token's pairs).
        class_token: bool, whether one class token follows the grid tokens.
        **kwargs: `FavorAttention`'s keyword arguments and the FAVOR+ options
            of the content heads (`FavorKernel`).

    Call arguments:
        query, value, key, masks, return_attention_scores, training: as
            `FavorAttention`; query and value lie on the same grid (T = S).
            `use_causal_mask=True` is rejected (windows look both ways).
        grid_shape: optional (H, W) for this call (default: the constructor's).
        query_index: optional int, only that token's output (see `FavorAttention`).

    Returns:
        `[batch, tokens, dim]` (`[batch, 1, dim]` with `query_index`).

    Example:
    >>> layer = ClippedRelativeAttention(2, clipping_dist=2)
    >>> x = keras.random.normal((1, 13, 8))
    >>> layer(x, x, grid_shape=(3, 4)).shape
    (1, 13, 8)
    """

    # The constructor arguments a model passes through from its own options.
    OPTIONS = ("clipping_dist",)

    def __init__(
        self,
        num_heads,
        key_dim=None,
        *args,
        grid_shape=None,
        clipping_dist=8,
        class_token=True,
        **kwargs,
    ):
        super().__init__(num_heads, key_dim, *args, **kwargs)
        self.check_heads_even(self.num_heads)
        if self.sliding_window is not None:
            raise ValueError(
                "sliding_window is not allowed with ClippedRelativeAttention: its relative heads "
                "already attend within the clipping distance; use sliding_window=None."
            )
        if self.attention_axes is not None and len(self.attention_axes) != 1:
            raise ValueError(
                f"attention_axes={self.attention_axes} is not allowed for "
                "ClippedRelativeAttention: it attends over one token axis (give a 2-D grid as "
                "grid_shape); use one axis."
            )
        self.check_options(clipping_dist=clipping_dist)
        self.grid_shape = None if grid_shape is None else tuple(int(s) for s in grid_shape)
        self.clipping_dist = int(clipping_dist)
        self.class_token = bool(class_token)

    @staticmethod
    def check_heads_even(num_heads):
        """Half the heads attend by content, half by relative position."""
        if num_heads < 2 or num_heads % 2:
            raise validation.InvalidSetting(
                f"num_heads={num_heads} is not allowed for ClippedRelativeAttention; "
                "use an even number >= 2 (half content, half relative heads).",
                ["num_heads"],
            )

    @staticmethod
    def check_options(**options):
        if "clipping_dist" in options:
            validation.check_int("clipping_dist", options["clipping_dist"], 1)

    def _key_heads(self):
        return self.num_heads // 2

    def build(self, query_shape, value_shape=None, key_shape=None):
        self._build_projections(query_shape, value_shape, key_shape)
        if self.grid_shape is not None and query_shape[1] is not None:
            self._grid(query_shape[1], None)  # the constructor's grid must fit
        self.relative_embeddings = self.add_weight(
            name="relative_embeddings",
            shape=(self.num_heads // 2, self.clipping_dist + 1, self.head_dim),
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
        )

    def _grid(self, tokens, grid_shape):
        """The (H, W) of this call: given, the constructor's, or one row of the grid tokens."""
        grid_shape = grid_shape or self.grid_shape
        if tokens is None:
            raise ValueError(
                "ClippedRelativeAttention needs a static token count (its windows are laid out "
                "when the graph is built); give the inputs a fixed length."
            )
        if grid_shape is None:
            return (1, tokens - int(self.class_token))
        height, width = (int(s) for s in grid_shape)
        needed = height * width + int(self.class_token)
        if tokens != needed:
            raise ValueError(
                f"ClippedRelativeAttention got {tokens} tokens; grid_shape={(height, width)} "
                f"with class_token={self.class_token} needs {needed}."
            )
        return (height, width)

    def relative_heads(self, query, value, query_index=None, *, grid_shape=None, key_valid=None):
        """Clipped-relative attention. query `[b, h_r, n_q, d]`, value `[b, h_r, n, d]` → `[b, h_r,
        n_q, d]`.

        n_q = n, or 1 for the token `query_index` alone. `grid_shape`: this
        call's grid (default: the layer's, see `_grid`); `key_valid`: optional
        `[b, n]` or `[b, h_r, n]` bool. Computed in the kernel's float32
        (scores, their exponentials and the normaliser), as the content heads'
        FAVOR+.
        """
        dtype = self._favor.compute_dtype  # float32 (float64 under a float64 policy)
        query, value = ops.cast(query, dtype), ops.cast(value, dtype)
        dim = value.shape[-1]
        if key_valid is None:
            valid = ops.ones_like(value[..., :1])
        else:
            valid = ops.cast(key_valid, dtype)  # [b, S] or [b, h_r, S]
            valid = valid[:, None, :, None] if len(valid.shape) == 2 else valid[..., None]
            valid = ops.broadcast_to(valid, ops.shape(value[..., :1]))
        # [v_j, 1] of the valid keys: every sum below carries its own count.
        value_and_valid = ops.concatenate([value * valid, valid], axis=-1)
        embeddings = ops.cast(self.relative_embeddings, dtype)
        scores = ops.einsum("bhnd,hrd->bhnr", query, embeddings)
        scores = scores / (self.head_dim**0.5)  # [b, h, n, D+1]
        scores = scores - ops.stop_gradient(ops.max(scores, axis=-1, keepdims=True))
        weights = ops.exp(scores)
        far = weights[..., -1:]  # [b, h, n, 1]
        near = weights[..., :-1] - far  # [b, h, n, D]
        out = far * ops.sum(value_and_valid, axis=2, keepdims=True)
        grid_shape = self._grid(value.shape[2], grid_shape)
        height, width = grid_shape
        if query_index is None:
            rings = ring_sums(value_and_valid, grid_shape, self.clipping_dist)
            for distance, ring in enumerate(rings):
                out = out + near[..., distance, None] * ring
        else:
            tokens = value.shape[2]
            index = query_index % tokens
            if not self.class_token or index != tokens - 1:
                # One grid token: gather its window (the class token has none).
                neighbours, valid_window, ring, _ = window_tables(
                    height, width, self.clipping_dist, self.class_token
                )
                valid = ops.convert_to_tensor(valid_window[index], near.dtype)  # a NumPy row
                window_weights = ops.take(near, ring, axis=-1) * valid  # [b, h, 1, K]
                window_values = ops.take(value_and_valid, neighbours[index], axis=2)
                out = out + ops.einsum("bhnk,bhkd->bhnd", window_weights, window_values)
        return safe_divide(out[..., :dim], out[..., dim:])

    def _cache_kind(self):
        raise ValueError(
            "decoding with a cache is not allowed with ClippedRelativeAttention: its windows look "
            "both ways (no causal form)."
        )

    def _heads(
        self,
        query,
        value,
        q,
        k,
        v,
        masks,
        grids,
        training,
        query_index,
        scores,
        grid_shape=None,
    ):
        if masks.causal is not False:
            raise ValueError(
                "use_causal_mask=True (or a causal attention_mask) is not allowed with "
                "ClippedRelativeAttention: its windows look both ways; use FavorAttention or a "
                "1-D RelativeFavorAttention."
            )
        if query.shape[1] != value.shape[1]:
            raise ValueError(
                f"ClippedRelativeAttention needs query and value on one grid (T = S); got "
                f"T={query.shape[1]} and S={value.shape[1]}."
            )
        grid = self._grid(value.shape[1], grid_shape)
        half = self.num_heads // 2
        key_valid = masks.key_valid
        content_valid = relative_valid = key_valid
        if key_valid is not None and len(key_valid.shape) == 3:  # one mask per head
            content_valid, relative_valid = key_valid[:, :half], key_valid[:, half:]
        key_weights = attention_masks.key_weights(content_valid, self._favor.compute_dtype)
        content = self._favor(
            q[:, :half], k, v[:, :half], training=training, key_weights=key_weights
        )
        relative = self.relative_heads(
            q[:, half:], v[:, half:], query_index, grid_shape=grid, key_valid=relative_valid
        )
        heads = ops.concatenate([content, ops.cast(relative, content.dtype)], axis=1)
        if not scores:
            return heads, None
        weights = self.attention_weights(q, k, grid, key_weights, query_index, relative_valid)
        return heads, weights

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
        grid_shape=None,
        query_index=None,
        cache=None,
        cache_update_index=None,
    ):
        if cache is not None:
            self._cache_kind()  # raises why not
        if use_causal_mask:
            raise ValueError(
                "use_causal_mask=True is not allowed with ClippedRelativeAttention: its windows "
                "look both ways; use FavorAttention or a 1-D RelativeFavorAttention."
            )
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
            query_index=query_index,
            grid_shape=grid_shape,
        )

    def _relative_scores(self, query, grid_shape, query_index=None):
        """log of the relative heads' unnormalised weights q_i·r_d(i,j)/√d, `[b, h_r, n_q, n]`."""
        distance = grid_distances(grid_shape, self.clipping_dist, self.class_token)
        if query_index is not None:
            distance = distance[[query_index]]
        embeddings = ops.cast(self.relative_embeddings, query.dtype)
        scores = ops.einsum("bhnd,hrd->bhnr", query, embeddings)
        scores = scores / (self.head_dim**0.5)  # [b, h, n, D+1]
        return ops.take_along_axis(scores, distance[None, None], axis=-1)

    def attention_weights(
        self, q, k, grid_shape, key_weights=None, query_index=None, relative_valid=None
    ):
        """Normalised weights `[batch, heads, T, S]`: content heads, then relative heads
        (`relative_valid`: their key mask, `[b, S]` or `[b, h_r, S]`; default: `key_weights`).
        Quadratic: for inspection and tests."""
        half = self.num_heads // 2
        content = self._favor.attention_weights(q[:, :half], k, key_weights=key_weights)
        query = ops.cast(q[:, half:], self._favor.compute_dtype)
        scores = self._relative_scores(query, grid_shape, query_index)
        scores = scores - ops.max(scores, axis=-1, keepdims=True)
        relative = ops.exp(scores)
        if relative_valid is not None:
            valid = ops.cast(relative_valid, relative.dtype)
            relative = relative * (
                valid[:, None, None] if len(valid.shape) == 2 else valid[:, :, None]
            )
        elif key_weights is not None:
            relative = relative * ops.swapaxes(key_weights, -1, -2)
        relative = safe_divide(relative, ops.sum(relative, axis=-1, keepdims=True))
        return ops.concatenate([content, relative], axis=1)

    def pair_weights(self, inputs, positions=None, grid_shape=None):
        """Unnormalised weights `[batch, heads, tokens, tokens]`: content heads, then relative
        heads.

        Relative head weight exp(q_i·r_d(i,j)/√d), d(i, j) = min(|Δrow| + |Δcol|, D)
        (D for every pair with the class token). Quadratic: for inspection and tests.
        """
        if not self.built:
            self(inputs, inputs, grid_shape=grid_shape)
        query, key, _ = self._project(inputs, inputs, inputs)
        half = self.num_heads // 2
        content = self._favor.pair_weights(query[:, :half], key)
        grid = self._grid(inputs.shape[1], grid_shape)
        relative = ops.exp(self._relative_scores(query[:, half:], grid))
        return ops.concatenate([content, relative], axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_shape=self.grid_shape,
            clipping_dist=self.clipping_dist,
            class_token=self.class_token,
        )
        return config
