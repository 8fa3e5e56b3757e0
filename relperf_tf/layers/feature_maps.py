"""FAVOR+ feature maps φ and the linear attention they enable.

All tensors are `[batch, heads, tokens, dim]`; a projection is `[features, dim]`.
- softmax kernel: φ(x) = m^(-1/2)(exp(W x' − ‖x'‖²/2 − c) + ε), x' = d^(-1/4) x,
  so that E[φ(q)·φ(k)] = exp(q·k/√d) (up to the stabiliser c, which cancels).
- relu kernel (generalized attention): φ(x) = ReLU(W x') + 1e-3.
- no projection (efficient attention): softmax of q over features, of k over tokens.
- linear attention: out = D⁻¹ φ(Q)(φ(K)ᵀV), D = diag(φ(Q) φ(K)ᵀ1); O(N·m·d).
"""

from keras import ops

RELU_EPSILON = 1e-3


def softmax_kernel_features(x, projection, is_query, eps=1e-4, stabilize=True):
    """Positive random features of the softmax kernel.

    Args:
        x: `[batch, heads, tokens, dim]` queries or keys.
        projection: `[features, dim]` random matrix W.
        is_query: bool; queries are stabilised per token, keys by one max per
            (batch, head) over all tokens and features.
        eps: float, ε added to every feature.
        stabilize: bool, subtract the max c (False gives the raw unbiased
            estimator, for tests).

    Returns:
        `[batch, heads, tokens, features]`.
    """
    dim = x.shape[-1]
    nb_features = projection.shape[0]
    x = x * (dim**-0.25)
    projected = ops.einsum("bhnd,md->bhnm", x, projection)  # [b, h, n, m]
    half_sq_norm = 0.5 * ops.sum(ops.square(x), axis=-1, keepdims=True)  # [b, h, n, 1]
    stabiliser = 0.0
    if stabilize:
        axes = -1 if is_query else (-2, -1)
        stabiliser = ops.stop_gradient(ops.max(projected, axis=axes, keepdims=True))
    return (nb_features**-0.5) * (ops.exp(projected - half_sq_norm - stabiliser) + eps)


def relu_kernel_features(x, projection):
    """Generalized-attention features ReLU(W x') + 1e-3, `[b, h, n, m]`."""
    dim = x.shape[-1]
    projected = ops.einsum("bhnd,md->bhnm", x * (dim**-0.25), projection)
    return ops.relu(projected) + RELU_EPSILON


def no_projection_features(x, is_query):
    """Efficient-attention features: softmax over features (q) or tokens (k)."""
    return ops.softmax(x, axis=-1 if is_query else -2)


def linear_attention(query_features, key_features, value):
    """D⁻¹ φ(Q)(φ(K)ᵀV) without forming the N×N matrix.

    Args:
        query_features: `[batch, heads, tokens_q, features]`.
        key_features: `[batch, heads, tokens_k, features]`.
        value: `[batch, heads, tokens_k, dim_v]`.

    Returns:
        `[batch, heads, tokens_q, dim_v]`.
    """
    context = ops.einsum("bhnm,bhnd->bhmd", key_features, value)  # [b, h, m, dv]
    key_sum = ops.sum(key_features, axis=2)  # [b, h, m]
    numerator = ops.einsum("bhnm,bhmd->bhnd", query_features, context)  # [b, h, n, dv]
    denominator = ops.einsum("bhnm,bhm->bhn", query_features, key_sum)  # [b, h, n]
    return numerator / ops.expand_dims(denominator, -1)


def exact_attention(query, key, value):
    """Softmax attention softmax(QKᵀ/√d)V, quadratic in tokens (reference only)."""
    scores = ops.einsum("bhnd,bhkd->bhnk", query, key) / (query.shape[-1] ** 0.5)
    return ops.einsum("bhnk,bhkd->bhnd", ops.softmax(scores, axis=-1), value)
