"""FAVOR+ feature maps φ, the table that names them, and the linear attention they enable.

All tensors are `[batch, heads, tokens, dim]`; a projection is `[features, dim]`.
A query or key may also come as blocks `[x_1, x_2, …]` that stand for their
concatenation along the last axis; later blocks may have size-1 batch/head
axes (shared positional features), so their projections are computed once.
- softmax kernel: φ(x) = m^(-1/2)(exp(W x' − ‖x'‖²/2 − c) + ε), x' = d^(-1/4) x,
  so that E[φ(q)·φ(k)] = exp(q·k/√d) (up to the stabiliser c, which cancels).
- relu kernel (generalized attention): φ(x) = ReLU(W x') + 1e-3.
- no projection (efficient attention): softmax of q over features, of k over tokens.
- linear attention: out = D⁻¹ φ(Q)(φ(K)ᵀV), D = diag(φ(Q) φ(K)ᵀ1); O(N·m·d).
"""

import dataclasses
import typing

from keras import ops

RELU_EPSILON = 1e-3
# Stands for −∞ in masked logits: exp of it is exactly 0, and nothing overflows.
NEGATIVE = -1e30


def project(x, projection, scale=1.0):
    """x (W·scale)ᵀ as one 2-D matmul: `[b, h, n, d]` × `[m, d]` → `[b, h, n, m]`.

    Folding `scale` into the small W and flattening the batch axes avoids a
    pass over x and lets the CPU run one large GEMM instead of a batched einsum.
    """
    flat = ops.reshape(x, (-1, x.shape[-1]))
    projected = ops.matmul(flat, ops.transpose(projection * scale))
    return ops.reshape(projected, tuple(ops.shape(x)[:-1]) + (projection.shape[0],))


def as_blocks(x):
    """A tensor or a list of blocks (see module docstring) → list of blocks."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def concatenate_blocks(x):
    """The concatenation the blocks stand for, `[batch, heads, tokens, Σ dim]`."""
    blocks = as_blocks(x)
    if len(blocks) == 1:
        return blocks[0]
    leading = tuple(ops.shape(blocks[0])[:-1])
    return ops.concatenate([ops.broadcast_to(b, leading + (b.shape[-1],)) for b in blocks], axis=-1)


def project_blocks(x, projection, scale=1.0):
    """[x_1, x_2, …] (W·scale)ᵀ as Σ_i x_i (W_i·scale)ᵀ, W_i the matching columns of W.

    Each block is one 2-D GEMM at its own (possibly batch- or head-shared)
    size; the sum broadcasts to `[batch, heads, tokens, features]`.
    """
    projected, start = None, 0
    for block in as_blocks(x):
        width = block.shape[-1]
        part = project(block, projection[:, start : start + width], scale)
        projected = part if projected is None else projected + part
        start += width
    if start != projection.shape[1]:
        raise ValueError(
            f"blocks of total width {start} do not match a projection of width "
            f"{projection.shape[1]}."
        )
    return projected


def _softmax_kernel_parts(x, projection):
    """(W x', ‖x'‖²/2) with x' = d^(-1/4) x: `[b, h, n, m]` and `[b, h, n, 1]`."""
    dim = projection.shape[1]
    projected = project_blocks(x, projection, dim**-0.25)  # W x'
    square_norm = sum(ops.sum(ops.square(b), axis=-1, keepdims=True) for b in as_blocks(x))
    return projected, (0.5 * dim**-0.5) * square_norm


def softmax_kernel_logits(x, projection):
    """log of the unstabilised softmax-kernel features, W x' − ‖x'‖²/2 (x' = d^(-1/4) x).

    `[batch, heads, tokens, features]`; the causal path stabilises them per chunk.
    """
    projected, half_square_norm = _softmax_kernel_parts(x, projection)
    return projected - half_square_norm


def masked_max(x, axis, mask=None):
    """max of x over `axis` (kept), over the entries where `mask` `[b, 1, n, 1]` is 1 only;
    0 where nothing is valid. Without gradient (a stabiliser)."""
    if mask is not None:
        x = ops.where(mask > 0, x, NEGATIVE)
    top = ops.max(x, axis=axis, keepdims=True)
    if mask is not None:
        top = ops.where(top > NEGATIVE, top, ops.zeros_like(top))
    return ops.stop_gradient(top)


def softmax_kernel_features(
    x, projection, is_query, eps=1e-4, stabilize=True, normalize=True, mask=None
):
    """Positive random features of the softmax kernel.

    Args:
        x: `[batch, heads, tokens, dim]` queries or keys, or blocks of them.
        projection: `[features, dim]` random matrix W.
        is_query: bool; queries are stabilised per token, keys by one max per
            (batch, head) over all valid tokens and features.
        eps: float, ε added to every feature.
        stabilize: bool, subtract the max c (False gives the raw unbiased
            estimator, for tests).
        normalize: bool, apply the m^(-1/2) factor. `linear_attention`'s
            output does not depend on it (it cancels), so the layers skip it.
        mask: optional `[batch, 1, tokens, 1]` 0/1 key weights: masked keys get
            φ = 0 and take no part in the stabiliser.

    Returns:
        `[batch, heads, tokens, features]`.
    """
    nb_features = projection.shape[0]
    projected, offset = _softmax_kernel_parts(x, projection)
    if stabilize:  # the max of W x' (not of the logits): c cancels in the normalisation
        offset = offset + masked_max(projected, -1 if is_query else (-2, -1), mask)
    logits = projected - offset
    if mask is not None:  # exp(−huge) = 0: no inf × 0 in either pass
        logits = ops.where(mask > 0, logits, NEGATIVE)
    features = ops.exp(logits) + eps
    if mask is not None:
        features = features * mask
    return features * nb_features**-0.5 if normalize else features


def relu_kernel_features(x, projection, mask=None):
    """Generalized-attention features ReLU(W x') + 1e-3, `[b, h, n, m]` (0 for masked keys)."""
    features = ops.relu(project_blocks(x, projection, projection.shape[1] ** -0.25)) + RELU_EPSILON
    return features if mask is None else features * mask


def no_projection_features(x, is_query, mask=None):
    """Efficient-attention features: softmax over features (q) or over the valid tokens (k)."""
    x = concatenate_blocks(x)
    if is_query:
        return ops.softmax(x, axis=-1)
    if mask is None:
        return ops.softmax(x, axis=-2)
    return ops.softmax(ops.where(mask > 0, x, NEGATIVE), axis=-2) * mask


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """One entry of `FEATURE_MAPS`.

    Attributes:
        random_features: whether φ needs a random projection W `[m, d]`.
        features: `(x, is_query, projection, eps, stabilize, mask) → [b, h, n, m]`,
            or None for exact softmax attention (no features: quadratic).
        causal: whether causal attention can use φ: the key features must not
            depend on other tokens (`efficient` normalises keys over all of them).
    """

    random_features: bool
    features: typing.Optional[typing.Callable]
    causal: bool = True


FEATURE_MAPS = {
    "softmax": FeatureMap(
        True,
        lambda x, is_query, projection, eps, stabilize=True, mask=None: softmax_kernel_features(
            x, projection, is_query, eps, stabilize=stabilize, normalize=False, mask=mask
        ),
    ),
    "relu": FeatureMap(
        True,
        lambda x, is_query, projection, eps, stabilize=True, mask=None: relu_kernel_features(
            x, projection, mask
        ),
    ),
    "efficient": FeatureMap(
        False,
        lambda x, is_query, projection, eps, stabilize=True, mask=None: no_projection_features(
            x, is_query, mask
        ),
        causal=False,
    ),
    "exact": FeatureMap(False, None),
}


def safe_divide(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (a query with no valid key)."""
    positive = denominator > 0
    return ops.where(positive, numerator, 0.0) / ops.where(positive, denominator, 1.0)


def linear_attention(query_features, key_features, value):
    """D⁻¹ φ(Q)(φ(K)ᵀV) without forming the N×N matrix.

    The normaliser D = φ(Q)(φ(K)ᵀ1) rides along as one extra column of ones
    in V, so both come out of the same two batched matmuls.

    Args:
        query_features: `[batch, heads, tokens_q, features]`.
        key_features: `[batch, heads, tokens_k, features]` (0 for masked keys).
        value: `[batch, heads, tokens_k, dim_v]`.

    Returns:
        `[batch, heads, tokens_q, dim_v]` (0 for a query with no valid key).
    """
    dim_v = value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    context = ops.matmul(ops.swapaxes(key_features, -1, -2), value_and_ones)  # [b, h, m, dv+1]
    out = ops.matmul(query_features, context)  # [b, h, n, dv+1]
    return safe_divide(out[..., :dim_v], out[..., dim_v:])


def exact_attention(query, key, value, bias=None, key_mask=None, causal=False, window=None):
    """Softmax attention softmax(QKᵀ/√d + bias)V, quadratic in tokens (reference only).

    Args:
        query, key: `[batch, heads, T or S, d]` (or blocks), value `[batch, heads, S, dv]`.
        bias: optional `[heads, T, S]` logits added to every batch element.
        key_mask: optional `[batch, 1 or heads, S, 1]` 0/1 key weights.
        causal: bool, key j attends to query i only when j <= i.
        window: optional int, only keys with |i − j| < window.
    """
    weights = exact_weights(query, key, bias, key_mask, causal, window)
    return ops.einsum("bhnk,bhkd->bhnd", weights, ops.cast(value, weights.dtype))


def exact_weights(query, key, bias=None, key_mask=None, causal=False, window=None):
    """The attention weights of `exact_attention`, `[batch, heads, T, S]` (rows sum to 1, or 0
    where a query has no valid key)."""
    width = sum(block.shape[-1] for block in as_blocks(query))
    query, key = concatenate_blocks(query), concatenate_blocks(key)
    scores = ops.einsum("bhnd,bhkd->bhnk", query, key) / (width**0.5)
    if bias is not None:
        scores = scores + ops.cast(bias, scores.dtype)[None]
    allowed = pair_mask(ops.shape(scores)[2], ops.shape(scores)[3], key_mask, causal, window)
    if allowed is not None:
        scores = ops.where(allowed, scores, NEGATIVE)
    weights = ops.softmax(scores, axis=-1)
    return weights if allowed is None else weights * ops.cast(allowed, weights.dtype)


def pair_mask(queries, keys, key_mask=None, causal=False, window=None):
    """Which (i, j) may attend, broadcastable to `[batch, heads, T, S]`, or None (all)."""
    allowed = None
    if key_mask is not None:
        allowed = ops.swapaxes(key_mask > 0, -1, -2)  # [b, 1 or h, 1, S]
    offsets = ops.arange(queries)[:, None] - ops.arange(keys)[None, :]
    pairs = []
    if causal:
        pairs.append(offsets >= 0)
    if window:
        pairs.append(ops.abs(offsets) < window)
    for condition in pairs:
        allowed = condition if allowed is None else ops.logical_and(allowed, condition)
    return allowed
