"""Linear attention times an exact, separable positional factor on an H×W grid.

A_ij = M_row[r_i, r_j] · M_col[c_i, c_j] · φ(q_i)·φ(k_j) and
out_i = Σ_j A_ij v_j / Σ_j A_ij, without any N×N matrix: with
T_j = φ(k_j) ⊗ [v_j, 1] viewed as `[H, W, m·(d+1)]`,
S = M_row ·rows (M_col ·cols T) and out_i ∝ φ(q_i)·S_i, O(N·(H+W)·m·d).
When M depends on r_i − r_j and c_i − c_j only (Toeplitz masks), A_ij depends
on contents and offsets only, for any fixed φ: exact translation equivariance.
A class token (first, no position) has factor 1 with every token both ways.
Queries and keys may lie on different grids (cross-attention): M_row is
`[H_q, H_k]`, M_col `[W_q, W_k]`.
Grids of more axes (`attention_axes` over three or more axes) take one factor
per axis the same way: `axes_linear_attention`, O(N·(Σ L_a)·m·d).
"""

import numpy as np
from keras import ops

from relperf_tf.layers.feature_maps import safe_divide


def relative_offsets(length, circular=False):
    """Offsets a − b of an axis of `length` positions, float32 `[length, length]`.

    With `circular`, offsets are taken modulo `length` into
    [−length/2, length/2): the masks become circulant, and a cyclic shift of
    the grid moves every output with it exactly.
    """
    positions = np.arange(int(length))
    offsets = positions[:, None] - positions[None, :]
    if circular:
        offsets = (offsets + length // 2) % length - length // 2
    return offsets.astype("float32")


def grid_shapes_of(row_logits, col_logits):
    """((H_q, W_q), (H_k, W_k)) from per-axis tables `[heads, H_q, H_k]` and `[heads, W_q, W_k]`."""
    return (
        (int(row_logits.shape[-2]), int(col_logits.shape[-2])),
        (int(row_logits.shape[-1]), int(col_logits.shape[-1])),
    )


def has_class_token(tokens, grid_shape, name="tokens"):
    """Whether `tokens` = H·W + 1 (a class token first) or H·W; else ValueError."""
    height, width = grid_shape
    if tokens not in (height * width, height * width + 1):
        raise ValueError(
            f"{tokens} {name} do not fit a {height}×{width} grid; "
            f"use {height * width} or {height * width + 1} (class token first)."
        )
    return tokens == height * width + 1


def grid_factors(row_logits, col_logits):
    """exp of the positional logits, each query row scaled by its own max.

    Returns M_row `[heads, H_q, H_k]`, M_col `[heads, W_q, W_k]` (entries in
    (0, 1]) and `[heads, H_q·W_q]` exp(−max_row − max_col) per query: a key
    class token's factor 1 in the rescaled units (the scale cancels between
    numerator and denominator of each query, so nothing overflows however
    large the logits).
    """
    row_logits, col_logits = ops.convert_to_tensor(row_logits), ops.convert_to_tensor(col_logits)
    row_max = ops.stop_gradient(ops.max(row_logits, axis=-1, keepdims=True))  # [h, H_q, 1]
    col_max = ops.stop_gradient(ops.max(col_logits, axis=-1, keepdims=True))  # [h, W_q, 1]
    class_weight = ops.exp(-(row_max + ops.swapaxes(col_max, -1, -2)))  # [h, H_q, W_q]
    class_weight = ops.reshape(class_weight, (ops.shape(row_logits)[0], -1))
    return ops.exp(row_logits - row_max), ops.exp(col_logits - col_max), class_weight


def grid_linear_attention(query_features, key_features, value, row_logits, col_logits):
    """D⁻¹ Σ_j M_row[r_i, r_j] M_col[c_i, c_j] (φ(q_i)·φ(k_j)) v_j on grids.

    Args:
        query_features: `[batch, heads, T, features]` φ(Q), positive.
        key_features: `[batch, heads, S, features]` φ(K) (0 for masked keys).
        value: `[batch, heads, S, dim_v]`.
        row_logits: `[heads, H_q, H_k]`, log M_row (row of the query, row of the key).
        col_logits: `[heads, W_q, W_k]`, log M_col.
        Queries are the H_q·W_q grid tokens, keys the H_k·W_k ones, row-major,
        each optionally preceded by one class token (factor 1 with every token).

    Returns:
        `[batch, heads, T, dim_v]`.
    """
    query_features, key_features, value = (
        ops.convert_to_tensor(x) for x in (query_features, key_features, value)
    )
    (height_q, width_q), (height_k, width_k) = grid_shapes_of(row_logits, col_logits)
    query_class = has_class_token(query_features.shape[2], (height_q, width_q), "queries")
    key_class = has_class_token(key_features.shape[2], (height_k, width_k), "keys")
    row_factor, col_factor, class_weight = grid_factors(row_logits, col_logits)
    batch, heads = ops.shape(value)[0], ops.shape(value)[1]
    features, dim_v = key_features.shape[-1], value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)

    def columns_last(x, height, width):  # [b, h, H·W, f] → [b, h, H, f, W]
        x = ops.reshape(x, (batch, heads, height, width, x.shape[-1]))
        return ops.transpose(x, (0, 1, 2, 4, 3))

    # T_j = φ(k_j) ⊗ [v_j, 1], laid out [b, h, H, m, d+1, W] so that both
    # masks are plain batched matmuls (no transpose of the large tensor).
    key_grid = slice(1, None) if key_class else slice(None)
    keys = columns_last(key_features[:, :, key_grid], height_k, width_k)  # [b, h, H_k, m, W_k]
    values = columns_last(value_and_ones[:, :, key_grid], height_k, width_k)
    outer = keys[:, :, :, :, None, :] * values[:, :, :, None, :, :]
    mixed = ops.reshape(outer, (batch, heads, height_k * features * (dim_v + 1), width_k))
    mixed = ops.matmul(mixed, ops.transpose(col_factor, (0, 2, 1))[None])  # along columns
    mixed = ops.reshape(mixed, (batch, heads, height_k, features * (dim_v + 1) * width_q))
    mixed = ops.matmul(row_factor[None], mixed)  # along rows
    mixed = ops.reshape(mixed, (batch, heads, height_q, features, dim_v + 1, width_q))
    if key_class:
        # The class token's key reaches every grid query with factor 1.
        class_key = ops.einsum("bhnm,bhnc->bhmc", key_features[:, :, :1], value_and_ones[:, :, :1])
        weight = ops.reshape(class_weight, (1, -1, height_q, 1, 1, width_q))
        mixed = mixed + class_key[:, :, None, :, :, None] * weight
    query_grid = slice(1, None) if query_class else slice(None)
    queries = columns_last(query_features[:, :, query_grid], height_q, width_q)
    out = ops.sum(queries[:, :, :, :, None, :] * mixed, axis=3)  # [b, h, H_q, d+1, W_q]
    out = ops.reshape(
        ops.transpose(out, (0, 1, 2, 4, 3)), (batch, heads, height_q * width_q, dim_v + 1)
    )
    if query_class:
        # The class token's query sees every token with factor 1: plain linear attention.
        context = ops.einsum("bhnm,bhnc->bhmc", key_features, value_and_ones)
        class_out = ops.einsum("bhnm,bhmc->bhnc", query_features[:, :, :1], context)
        out = ops.concatenate([class_out, out], axis=2)
    return safe_divide(out[..., :dim_v], out[..., dim_v:])


def grid_logits(row_logits, col_logits, query_class, key_class):
    """log(M_row[r_i, r_j] M_col[c_i, c_j]) as `[heads, T, S]`, 0 for the class tokens.

    Quadratic in tokens: for the exact-softmax reference and attention maps only.
    """
    heads = ops.shape(row_logits)[0]
    (height_q, width_q), (height_k, width_k) = grid_shapes_of(row_logits, col_logits)
    logits = (
        row_logits[:, :, None, :, None] + col_logits[:, None, :, None, :]
    )  # [h, Hq, Wq, Hk, Wk]
    logits = ops.reshape(logits, (heads, height_q * width_q, height_k * width_k))
    return ops.pad(logits, ((0, 0), (int(query_class), 0), (int(key_class), 0)))


def _axis_factor(logits):
    """exp of one axis's logits `[heads, L_q, L_k]`, each query row scaled by its own max (the
    scale of a query is the same in its numerator and denominator: it cancels)."""
    logits = ops.convert_to_tensor(logits)
    return ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))


def axes_linear_attention(query_features, key_features, value, tables):
    """D⁻¹ Σ_j Π_a M_a[p_a(i), p_a(j)] (φ(q_i)·φ(k_j)) v_j on a grid of any number of axes.

    Args:
        query_features: `[batch, heads, T, features]`, T = Π L_q,a (row-major, no class token).
        key_features: `[batch, heads, S, features]`, S = Π L_k,a.
        value: `[batch, heads, S, dim_v]`.
        tables: one `[heads, L_q,a, L_k,a]` logits table per axis.

    Returns:
        `[batch, heads, T, dim_v]`.
    """
    query_features, key_features, value = (
        ops.convert_to_tensor(x) for x in (query_features, key_features, value)
    )
    count = len(tables)
    key_grid = tuple(int(t.shape[-1]) for t in tables)
    batch, heads = ops.shape(value)[0], ops.shape(value)[1]
    features, dim_v = key_features.shape[-1], value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    outer = key_features[..., :, None] * value_and_ones[..., None, :]  # [b, h, S, m, dv+1]
    mixed = ops.reshape(outer, (batch, heads) + key_grid + (features * (dim_v + 1),))
    query_letters, key_letters = "mnopqrst"[:count], "abcdefgh"[:count]
    for axis, table in enumerate(tables):
        # Along axis a: Σ_(j_a) M_a[i_a, j_a] mixed[..., j_a, ...] (the other axes as they are).
        before = query_letters[:axis] + key_letters[axis:]
        after = query_letters[: axis + 1] + key_letters[axis + 1 :]
        equation = f"zy{before}w,y{query_letters[axis]}{key_letters[axis]}->zy{after}w"
        mixed = ops.einsum(equation, mixed, _axis_factor(table))
    mixed = ops.reshape(mixed, (batch, heads, -1, features, dim_v + 1))
    out = ops.einsum("bhnm,bhnmc->bhnc", query_features, mixed)
    return safe_divide(out[..., :dim_v], out[..., dim_v:])


def axes_logits(tables):
    """Σ_a log M_a[p_a(i), p_a(j)] as `[heads, T, S]` (quadratic: references and maps only)."""
    count = len(tables)
    total = None
    for axis, table in enumerate(tables):
        # [h, L_q,a, L_k,a] placed on axis a of the query grid and axis a of the key grid.
        shape = [1] * (2 * count)
        shape[axis], shape[count + axis] = table.shape[-2], table.shape[-1]
        index = tuple(slice(None) if d in (axis, count + axis) else None for d in range(2 * count))
        placed = ops.convert_to_tensor(table)[(slice(None),) + index]
        total = placed if total is None else total + placed
    heads = ops.shape(tables[0])[0]
    queries = int(np.prod([t.shape[-2] for t in tables]))
    keys = int(np.prod([t.shape[-1] for t in tables]))
    return ops.reshape(total, (heads, queries, keys))
