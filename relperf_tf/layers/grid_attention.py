"""Linear attention times an exact, separable positional factor on an H×W grid.

A_ij = M_row[r_i, r_j] · M_col[c_i, c_j] · φ(q_i)·φ(k_j) and
out_i = Σ_j A_ij v_j / Σ_j A_ij, without any N×N matrix: with
T_j = φ(k_j) ⊗ [v_j, 1] viewed as `[H, W, m·(d+1)]`,
S = M_row ·rows (M_col ·cols T) and out_i ∝ φ(q_i)·S_i, O(N·(H+W)·m·d).
When M depends on r_i − r_j and c_i − c_j only (Toeplitz masks), A_ij depends
on contents and offsets only, for any fixed φ: exact translation equivariance.
A class token (first, no position) has factor 1 with every token both ways.
"""

import numpy as np
from keras import ops


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


def grid_shape_of(row_logits, col_logits):
    """(H, W) from per-axis tables `[heads, H, H]` and `[heads, W, W]`."""
    return int(row_logits.shape[-1]), int(col_logits.shape[-1])


def has_class_token(tokens, row_logits, col_logits):
    """Whether `tokens` = H·W + 1 (a class token first) or H·W; else ValueError."""
    height, width = grid_shape_of(row_logits, col_logits)
    if tokens not in (height * width, height * width + 1):
        raise ValueError(
            f"{tokens} tokens do not fit a {height}×{width} grid; "
            f"use {height * width} or {height * width + 1} (class token first)."
        )
    return tokens == height * width + 1


def grid_factors(row_logits, col_logits):
    """exp of the positional logits, each query row scaled by its own max.

    Returns M_row `[heads, H, H]`, M_col `[heads, W, W]` (entries in (0, 1])
    and `[heads, H·W]` exp(−max_row − max_col) per query: the class token's
    factor 1 in the rescaled units (the scale cancels between numerator and
    denominator of each query, so nothing overflows however large the logits).
    """
    row_max = ops.stop_gradient(ops.max(row_logits, axis=-1, keepdims=True))  # [h, H, 1]
    col_max = ops.stop_gradient(ops.max(col_logits, axis=-1, keepdims=True))  # [h, W, 1]
    class_weight = ops.exp(-(row_max + ops.swapaxes(col_max, -1, -2)))  # [h, H, W]
    class_weight = ops.reshape(class_weight, (ops.shape(row_logits)[0], -1))
    return ops.exp(row_logits - row_max), ops.exp(col_logits - col_max), class_weight


def grid_linear_attention(query_features, key_features, value, row_logits, col_logits):
    """D⁻¹ Σ_j M_row[r_i, r_j] M_col[c_i, c_j] (φ(q_i)·φ(k_j)) v_j on a grid.

    Args:
        query_features: `[batch, heads, tokens, features]` φ(Q), positive.
        key_features: `[batch, heads, tokens, features]` φ(K), positive.
        value: `[batch, heads, tokens, dim_v]`.
        row_logits: `[heads, H, H]`, log M_row (row of the query, row of the key).
        col_logits: `[heads, W, W]`, log M_col.
        Tokens are the H·W grid tokens, row-major, optionally preceded by one
        class token (factor 1 with every token).

    Returns:
        `[batch, heads, tokens, dim_v]`.
    """
    tokens = query_features.shape[2]
    height, width = grid_shape_of(row_logits, col_logits)
    class_token = has_class_token(tokens, row_logits, col_logits)
    row_factor, col_factor, class_weight = grid_factors(row_logits, col_logits)
    batch, heads = ops.shape(value)[0], ops.shape(value)[1]
    features, dim_v = key_features.shape[-1], value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    grid = slice(1, None) if class_token else slice(None)

    def columns_last(x):  # [b, h, H·W, f] → [b, h, H, f, W]
        x = ops.reshape(x, (batch, heads, height, width, x.shape[-1]))
        return ops.transpose(x, (0, 1, 2, 4, 3))

    # T_j = φ(k_j) ⊗ [v_j, 1], laid out [b, h, H, m, d+1, W] so that both
    # masks are plain batched matmuls (no transpose of the large tensor).
    keys = columns_last(key_features[:, :, grid])  # [b, h, H, m, W]
    values = columns_last(value_and_ones[:, :, grid])  # [b, h, H, d+1, W]
    outer = keys[:, :, :, :, None, :] * values[:, :, :, None, :, :]
    mixed = ops.reshape(outer, (batch, heads, height * features * (dim_v + 1), width))
    mixed = ops.matmul(mixed, ops.transpose(col_factor, (0, 2, 1))[None])  # along columns
    mixed = ops.reshape(mixed, (batch, heads, height, features * (dim_v + 1) * width))
    mixed = ops.matmul(row_factor[None], mixed)  # along rows
    mixed = ops.reshape(mixed, (batch, heads, height, features, dim_v + 1, width))
    if class_token:
        # The class token's key reaches every grid query with factor 1.
        class_key = ops.einsum("bhnm,bhnc->bhmc", key_features[:, :, :1], value_and_ones[:, :, :1])
        weight = ops.reshape(class_weight, (1, -1, height, 1, 1, width))
        mixed = mixed + class_key[:, :, None, :, :, None] * weight
    queries = columns_last(query_features[:, :, grid])  # [b, h, H, m, W]
    out = ops.sum(queries[:, :, :, :, None, :] * mixed, axis=3)  # [b, h, H, d+1, W]
    out = ops.reshape(
        ops.transpose(out, (0, 1, 2, 4, 3)), (batch, heads, height * width, dim_v + 1)
    )
    if class_token:
        # The class token's query sees every token with factor 1: plain linear attention.
        context = ops.einsum("bhnm,bhnc->bhmc", key_features, value_and_ones)
        class_out = ops.einsum("bhnm,bhmc->bhnc", query_features[:, :, :1], context)
        out = ops.concatenate([class_out, out], axis=2)
    return out[..., :dim_v] / out[..., dim_v:]


def grid_logits(row_logits, col_logits, class_token):
    """log(M_row[r_i, r_j] M_col[c_i, c_j]) as `[heads, tokens, tokens]`, 0 for the class token.

    Quadratic in tokens: for the exact-softmax reference only.
    """
    heads = ops.shape(row_logits)[0]
    height, width = grid_shape_of(row_logits, col_logits)
    logits = row_logits[:, :, None, :, None] + col_logits[:, None, :, None, :]  # [h, H, W, H, W]
    logits = ops.reshape(logits, (heads, height * width, height * width))
    if class_token:
        logits = ops.pad(logits, ((0, 0), (1, 0), (1, 0)))
    return logits
