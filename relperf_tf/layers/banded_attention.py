"""Sliding-window linear attention (`sliding_window`), linear in tokens.

Query i attends to keys j with |i − j| < w, and j <= i when causal (the band
`keras.layers.MultiHeadAttention(sliding_window=w)` applies):
out_i = Σ_band A_ij v_j / Σ_band A_ij, A_ij = φ(q_i)·φ(k_j) [· exp(P(i − j))].
Tokens are cut into chunks of C = w, so query chunk c needs only key chunks
c − 1, c and c + 1 (c − 1 and c when causal): one `[C, 3C]` (or `[C, 2C]`)
masked product per chunk, O(N·w·(m + d)) time and O(N·w) memory per head,
with no prefix sums (so no cancellation between large running sums).
"""

from keras import ops

from relperf_tf.layers.feature_maps import NEGATIVE, safe_divide
from relperf_tf.layers.token_layout import length


def _chunks(x, chunk, padded):
    """`[b, h, n, f]` → `[b, h, n/C, C, f]`, zero-padded to `padded` tokens."""
    tokens = length(x, 2)
    x = ops.pad(x, ((0, 0), (0, 0), (0, padded - tokens), (0, 0)))
    return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], -1, chunk, x.shape[-1]))


def _neighbours(x, causal):
    """Chunks `[b, h, n, C, f]` → each chunk's keys `[b, h, n, 2C or 3C, f]`: the chunk before,
    the chunk itself, and (unless causal) the chunk after; zeros beyond the ends."""
    before = ops.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0), (0, 0)))[:, :, :-1]
    parts = [before, x]
    if not causal:
        parts.append(ops.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0), (0, 0)))[:, :, 1:])
    return ops.concatenate(parts, axis=3)


def band_offsets(window, causal):
    """Offsets Δ = i − j `[C, K]` between a chunk's queries and its keys, and which are in the
    band (`[C, K]` bool), for C = w and K = 2C or 3C keys starting one chunk before."""
    keys = window * (2 if causal else 3)
    offsets = ops.arange(window)[:, None] - ops.arange(keys)[None, :] + window
    allowed = ops.abs(offsets) < window
    if causal:
        allowed = ops.logical_and(allowed, offsets >= 0)
    return offsets, allowed


def banded_linear_attention(query_features, key_features, value, window, causal=False, logits=None):
    """D⁻¹ Σ_(|i − j| < w) φ(q_i)·φ(k_j) [exp(P(i − j))] v_j, in chunks of w tokens.

    Args:
        query_features: `[batch, heads, T, features]` φ(Q), positive.
        key_features: `[batch, heads, S, features]` φ(K) (0 for masked keys).
        value: `[batch, heads, S, dim_v]`.
        window: int w >= 1, the band's half-width plus one.
        causal: bool, also j <= i.
        logits: optional `[heads, T + S − 1]`, P(Δ) for Δ = −(S−1) … T−1 (the exact
            1-D factor), scaled by its maximum over the band before exp.

    Returns:
        `[batch, heads, T, dim_v]` (0 for a query with no key in its band).
    """
    window = int(window)
    queries, keys = length(query_features, 2), length(key_features, 2)
    dim_v = value.shape[-1]
    longest = ops.maximum(queries, keys) if not isinstance(queries, int) else max(queries, keys)
    padded = (longest + window - 1) // window * window
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    query_chunks = _chunks(query_features, window, padded)  # [b, h, n, C, m]
    key_chunks = _neighbours(_chunks(key_features, window, padded), causal)  # [b, h, n, K, m]
    value_chunks = _neighbours(_chunks(value_and_ones, window, padded), causal)
    weights = ops.einsum("bhnim,bhnjm->bhnij", query_chunks, key_chunks)  # [b, h, n, C, K]
    offsets, allowed = band_offsets(window, causal)
    if logits is None:
        factor = ops.cast(allowed, weights.dtype)[None, None, None]
    else:
        # P at each band offset (offsets beyond the sequences meet zero features: any value).
        index = ops.clip(offsets + keys - 1, 0, ops.shape(logits)[-1] - 1)
        table = ops.take(logits, ops.reshape(index, (-1,)), axis=-1)
        table = ops.reshape(table, (ops.shape(logits)[0],) + tuple(offsets.shape))  # [h, C, K]
        table = ops.where(allowed[None], table, NEGATIVE)
        table = table - ops.stop_gradient(ops.max(table, axis=(1, 2), keepdims=True))
        factor = ops.cast(ops.exp(table), weights.dtype)[None, :, None]  # [1, h, 1, C, K]
    out = ops.einsum("bhnij,bhnjc->bhnic", weights * factor, value_chunks)  # [b, h, n, C, dv+1]
    out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], padded, dim_v + 1))
    out = out[:, :, :queries]
    return safe_divide(out[..., :dim_v], out[..., dim_v:])
