"""Causal linear attention by chunked prefix sums, O(N·m·d) time, O(N/C·m·d) state.

out_i = φ(q_i)·Σ_(j≤i) φ(k_j) [v_j, 1]ᵀ, normalised by its last column. Tokens
are cut into chunks of C: inside a chunk the masked C×C product
(φ(Q_c)φ(K_c)ᵀ ⊙ lower-triangle) [V_c, 1]; across chunks the states
Σ_(chunk) φ(k)[v, 1]ᵀ `[m, d+1]` of the earlier chunks (one per chunk, never
one per token: for N = 64k and C = 128, 512 states instead of 65 536).
Softmax-kernel keys come as logits l_j = w·k_j' − ‖k_j'‖²/2 and are stabilised
by the running maximum R_c = max over the chunks ≤ c: chunk c's keys use
exp(l_j − R_c), the state of an earlier chunk c' is carried with
exp(R_c' − R_c) ≤ 1. No ε is added to the keys, so the common scale of the
keys a query sees cancels exactly and no output depends on a later token.
"""

from keras import ops

from relperf_tf.layers.feature_maps import NEGATIVE, safe_divide


def _chunks(x, chunk, padded_tokens, fill=0.0):
    """`[b, h, n, f]` → `[b, h, n/C, C, f]`, tokens padded with `fill` to a multiple of C."""
    tokens = ops.shape(x)[2]
    x = ops.pad(x, ((0, 0), (0, 0), (0, padded_tokens - tokens), (0, 0)), constant_values=fill)
    return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], -1, chunk, x.shape[-1]))


def causal_linear_attention(query_features, keys, value, chunk_size=128, key_logits=False):
    """Causal D⁻¹ φ(Q)(φ(K)ᵀV): query i attends to keys j <= i (any T and S, as
    MultiHeadAttention's causal mask: queries past the last key see every key).

    Args:
        query_features: `[batch, heads, tokens, features]` φ(Q) (zero for padded queries).
        keys: `[batch, heads, tokens, features]`: φ(K) (zero for masked keys), or
            with `key_logits` the logits of exp-features (NEGATIVE for masked keys).
        value: `[batch, heads, tokens, dim_v]`.
        chunk_size: int C, tokens per chunk.
        key_logits: bool, whether `keys` are logits to stabilise per chunk.

    Returns:
        `[batch, heads, tokens, dim_v]` (0 for a query with no valid key).
    """
    query_count, key_count = ops.shape(query_features)[2], ops.shape(value)[2]
    dim_v = value.shape[-1]
    chunk = int(chunk_size)
    longest = query_count if query_count is key_count else None
    if longest is None:
        static = isinstance(query_count, int) and isinstance(key_count, int)
        longest = max(query_count, key_count) if static else ops.maximum(query_count, key_count)
    padded = (longest + chunk - 1) // chunk * chunk
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    queries = _chunks(query_features, chunk, padded)  # [b, h, n, C, m]
    values = _chunks(value_and_ones, chunk, padded)  # [b, h, n, C, dv+1]
    if key_logits:
        logits = _chunks(keys, chunk, padded, fill=NEGATIVE)
        valid = logits > NEGATIVE / 2  # masked and padded keys carry NEGATIVE
        top = ops.max(logits, axis=(3, 4))  # [b, h, n]
        count = ops.shape(top)[-1]
        earlier_or_same = ops.arange(count)[:, None] >= ops.arange(count)[None, :]  # [n, n]
        running = ops.max(ops.where(earlier_or_same, top[..., None, :], NEGATIVE), axis=-1)
        running = ops.stop_gradient(running)  # R_c, [b, h, n]
        shifted = ops.where(valid, logits - running[..., None, None], NEGATIVE)
        keys = ops.exp(shifted) * ops.cast(valid, shifted.dtype)  # [b, h, n, C, m], ≤ 1
        # State of chunk c' seen from chunk c > c': exp(R_c' − R_c) ≤ 1.
        carry = ops.exp(
            ops.minimum(running[..., None, :] - running[..., :, None], 0.0)
        )  # [b, h, n (c), n (c')]
    else:
        keys = _chunks(keys, chunk, padded)
        count = ops.shape(keys)[2]
        carry = None
    earlier = ops.cast(
        ops.arange(count)[:, None] > ops.arange(count)[None, :], keys.dtype
    )  # c' < c
    # Inside each chunk: the masked C×C product.
    scores = ops.einsum("bhnim,bhnjm->bhnij", queries, keys)  # [b, h, n, C, C]
    lower = ops.cast(ops.arange(chunk)[:, None] >= ops.arange(chunk)[None, :], scores.dtype)
    out = ops.einsum("bhnij,bhnjc->bhnic", scores * lower, values)  # [b, h, n, C, dv+1]
    # Across chunks: each chunk's state, carried to every later chunk.
    states = ops.einsum("bhnjm,bhnjc->bhnmc", keys, values)  # [b, h, n, m, dv+1]
    if carry is None:
        before = ops.einsum("kl,bhlmc->bhkmc", earlier, states)  # Σ of the earlier chunks' states
    else:
        before = ops.einsum("bhkl,bhlmc->bhkmc", carry * earlier, states)
    out = out + ops.einsum("bhnim,bhnmc->bhnic", queries, before)
    out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], padded, dim_v + 1))
    out = out[:, :, :query_count]
    return safe_divide(out[..., :dim_v], out[..., dim_v:])
