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

import tensorflow as tf
from keras import ops

RELU_EPSILON = 1e-3


def project(x, projection, scale=1.0):
    """x (W·scale)ᵀ as one 2-D matmul: `[b, h, n, d]` × `[m, d]` → `[b, h, n, m]`.

    Folding `scale` into the small W and flattening the batch axes avoids a
    pass over x and lets the CPU run one large GEMM instead of a batched einsum.
    """
    flat = ops.reshape(x, (-1, x.shape[-1]))
    projected = ops.matmul(flat, ops.transpose(projection * scale))
    return tf.reshape(projected, tf.concat([tf.shape(x)[:-1], [projection.shape[0]]], 0))


def as_blocks(x):
    """A tensor or a list of blocks (see module docstring) → list of blocks."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def concatenate_blocks(x):
    """The concatenation the blocks stand for, `[batch, heads, tokens, Σ dim]`."""
    blocks = as_blocks(x)
    if len(blocks) == 1:
        return blocks[0]
    leading = tf.shape(blocks[0])[:-1]
    return ops.concatenate(
        [tf.broadcast_to(b, tf.concat([leading, tf.shape(b)[-1:]], 0)) for b in blocks], axis=-1
    )


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


def softmax_kernel_features(x, projection, is_query, eps=1e-4, stabilize=True, normalize=True):
    """Positive random features of the softmax kernel.

    Args:
        x: `[batch, heads, tokens, dim]` queries or keys, or blocks of them.
        projection: `[features, dim]` random matrix W.
        is_query: bool; queries are stabilised per token, keys by one max per
            (batch, head) over all tokens and features.
        eps: float, ε added to every feature.
        stabilize: bool, subtract the max c (False gives the raw unbiased
            estimator, for tests).
        normalize: bool, apply the m^(-1/2) factor. `linear_attention`'s
            output does not depend on it (it cancels), so the layers skip it.

    Returns:
        `[batch, heads, tokens, features]`.
    """
    dim = projection.shape[1]
    nb_features = projection.shape[0]
    projected = project_blocks(x, projection, dim**-0.25)  # W x', x' = d^(-1/4) x
    square_norm = sum(ops.sum(ops.square(b), axis=-1, keepdims=True) for b in as_blocks(x))
    offset = (0.5 * dim**-0.5) * square_norm  # ‖x'‖²/2
    if stabilize:
        axes = -1 if is_query else (-2, -1)
        offset = offset + ops.stop_gradient(ops.max(projected, axis=axes, keepdims=True))
    features = ops.exp(projected - offset) + eps
    return features * nb_features**-0.5 if normalize else features


def relu_kernel_features(x, projection):
    """Generalized-attention features ReLU(W x') + 1e-3, `[b, h, n, m]`."""
    return ops.relu(project_blocks(x, projection, projection.shape[1] ** -0.25)) + RELU_EPSILON


def no_projection_features(x, is_query):
    """Efficient-attention features: softmax over features (q) or tokens (k)."""
    return ops.softmax(concatenate_blocks(x), axis=-1 if is_query else -2)


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """One entry of `FEATURE_MAPS`.

    Attributes:
        random_features: whether φ needs a random projection W `[m, d]`.
        features: `(x, is_query, projection, eps, stabilize) → [b, h, n, m]`,
            or None for exact softmax attention (no features: quadratic).
    """

    random_features: bool
    features: typing.Optional[typing.Callable]


FEATURE_MAPS = {
    "softmax": FeatureMap(
        True,
        lambda x, is_query, projection, eps, stabilize=True: softmax_kernel_features(
            x, projection, is_query, eps, stabilize=stabilize, normalize=False
        ),
    ),
    "relu": FeatureMap(
        True,
        lambda x, is_query, projection, eps, stabilize=True: relu_kernel_features(x, projection),
    ),
    "efficient": FeatureMap(
        False,
        lambda x, is_query, projection, eps, stabilize=True: no_projection_features(x, is_query),
    ),
    "exact": FeatureMap(False, None),
}


def linear_attention(query_features, key_features, value):
    """D⁻¹ φ(Q)(φ(K)ᵀV) without forming the N×N matrix.

    The normaliser D = φ(Q)(φ(K)ᵀ1) rides along as one extra column of ones
    in V, so both come out of the same two batched matmuls.

    Args:
        query_features: `[batch, heads, tokens_q, features]`.
        key_features: `[batch, heads, tokens_k, features]`.
        value: `[batch, heads, tokens_k, dim_v]`.

    Returns:
        `[batch, heads, tokens_q, dim_v]`.
    """
    dim_v = value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    context = tf.linalg.matmul(key_features, value_and_ones, adjoint_a=True)  # [b, h, m, dv+1]
    out = tf.linalg.matmul(query_features, context)  # [b, h, n, dv+1]
    return out[..., :dim_v] / out[..., dim_v:]


def exact_attention(query, key, value, bias=None):
    """Softmax attention softmax(QKᵀ/√d + bias)V, quadratic in tokens (reference only).

    `bias`: optional `[heads, tokens, tokens]` logits added to every batch element.
    """
    width = sum(block.shape[-1] for block in as_blocks(query))
    query, key = concatenate_blocks(query), concatenate_blocks(key)
    scores = ops.einsum("bhnd,bhkd->bhnk", query, key) / (width**0.5)
    if bias is not None:
        scores = scores + bias[None]
    return ops.einsum("bhnk,bhkd->bhnd", ops.softmax(scores, axis=-1), value)
