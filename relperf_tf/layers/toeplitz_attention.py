"""Linear attention times an exact 1-D relative factor: a Toeplitz product, dense or by FFT.

A_ij = exp(P(i − j)) · φ(q_i)·φ(k_j), out_i = Σ_j A_ij v_j / Σ_j A_ij, for
queries i = 0…T−1 and keys j = 0…S−1 in token order. With
T_j = φ(k_j) ⊗ [v_j, 1] (`[S, m·(d+1)]` channels), S_i = Σ_j exp(P(i − j)) T_j
is a Toeplitz product on every channel and out_i ∝ φ(q_i)·S_i:
- `dense`: the `[T, S]` matrix exp(P(i − j)) times T, O(T·S·m·d), exact;
- `fft`: the same product as a linear convolution of length ≥ T + S − 1,
  O(N log N·m·d) (Luo et al. 2021, arXiv:2106.12566); float32 FFTs carry an
  absolute error ~1e-7 of the largest factor entry, so entries far below
  that are lost;
- `auto`: `dense` up to `DENSE_MAX_TOKENS` keys·queries, else `fft`, decided
  when the graph runs if the lengths are not static, so that a model computes
  the same function in `fit` (static lengths) and in `predict` (Keras relaxes
  them). docs/benchmarks.md ("1-D exact factor") measures both: the FFT is
  faster from a few hundred tokens, but loses the factor's small entries, and
  a causal model, whose keys carry no ε, can then mis-normalise its early
  tokens; the dense product is exact.
P enters as one vector over Δ = −(S−1) … T−1; before exp it is shifted by
its max per head (FFT) or per query row (dense); the scale cancels in each
query's normalisation.
Causal: factor 0 for j > i, still a (lower-triangular) Toeplitz product.
"""

from keras import ops

from relperf_tf import validation
from relperf_tf.layers.feature_maps import NEGATIVE, safe_divide
from relperf_tf.layers.token_layout import length

METHODS = ("auto", "dense", "fft")
# `auto` uses the dense product while T·S is at most this (measured: docs/benchmarks.md).
DENSE_MAX_TOKENS = 2048 * 2048


def check_method(method):
    validation.check_choice("toeplitz_method", method, METHODS)


def offsets_vector(queries, keys):
    """The offsets Δ = i − j the vector form covers, −(S−1) … T−1, float32 `[T + S − 1]`."""
    return ops.cast(ops.arange(queries + keys - 1) - (keys - 1), "float32")


def causal_logits(logits, keys):
    """The vector with the future (Δ < 0, the first S − 1 entries) at −∞."""
    future = ops.arange(ops.shape(logits)[-1]) < keys - 1
    return ops.where(future[None], NEGATIVE, logits)


def toeplitz_table(logits, queries, keys):
    """P(i − j) as a `[heads, T, S]` table (quadratic: the dense path and references)."""
    index = ops.arange(queries)[:, None] - ops.arange(keys)[None, :] + (keys - 1)
    table = ops.take(logits, ops.reshape(index, (-1,)), axis=-1)
    return ops.reshape(table, (ops.shape(logits)[0], queries, keys))


def _fft_length(size):
    """The smallest power of two >= size (sizes of the form 2^k are the FFT's fastest)."""
    if not isinstance(size, int):  # a length known only when the graph runs
        return ops.cast(2.0 ** ops.ceil(ops.log2(ops.cast(size, "float32"))), "int32")
    length = 1
    while length < size:
        length *= 2
    return length


def _toeplitz_product_fft(factor, mixed, queries):
    """Σ_j factor[i − j + S − 1] mixed[..., j] along the last axis, by FFT.

    factor `[heads, T + S − 1]`, mixed `[b, h, channels, S]` → `[b, h, channels, T]`.
    """
    keys = length(mixed, -1)
    size = _fft_length(queries + keys - 1)
    factor_real, factor_imag = ops.rfft(factor, fft_length=size)  # [h, L/2 + 1]
    mixed_real, mixed_imag = ops.rfft(mixed, fft_length=size)  # [b, h, c, L/2 + 1]
    factor_real, factor_imag = factor_real[None, :, None], factor_imag[None, :, None]
    real = mixed_real * factor_real - mixed_imag * factor_imag
    imag = mixed_real * factor_imag + mixed_imag * factor_real
    full = ops.irfft((real, imag), fft_length=size)  # the linear convolution
    return full[..., keys - 1 : keys - 1 + queries]


def toeplitz_linear_attention(
    query_features, key_features, value, logits, causal=False, method="auto"
):
    """D⁻¹ Σ_j exp(P(i − j)) (φ(q_i)·φ(k_j)) v_j along the token order.

    Args:
        query_features: `[batch, heads, T, features]` φ(Q), positive.
        key_features: `[batch, heads, S, features]` φ(K) (0 for masked keys).
        value: `[batch, heads, S, dim_v]`.
        logits: `[heads, T + S − 1]`, P(Δ) for Δ = −(S−1) … T−1.
        causal: bool, factor 0 for keys after the query (j > i).
        method: `auto`, `dense` or `fft` (module docstring).

    Returns:
        `[batch, heads, T, dim_v]`.
    """
    check_method(method)
    query_features, key_features, value, logits = (
        ops.convert_to_tensor(x) for x in (query_features, key_features, value, logits)
    )
    queries, keys = length(query_features, 2), length(key_features, 2)
    static = isinstance(queries, int) and isinstance(keys, int)
    if static and logits.shape[-1] not in (None, queries + keys - 1):
        raise ValueError(
            f"position logits of length {logits.shape[-1]} do not fit {queries} queries and "
            f"{keys} keys; use T + S − 1 = {queries + keys - 1} offsets."
        )
    if causal:
        logits = causal_logits(logits, keys)
    batch, heads = ops.shape(value)[0], ops.shape(value)[1]
    features, dim_v = key_features.shape[-1], value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    # T_j = φ(k_j) ⊗ [v_j, 1], channels first: [b, h, m·(d+1), S].
    outer = key_features[..., :, None] * value_and_ones[..., None, :]  # [b, h, S, m, dv+1]
    outer = ops.reshape(outer, (batch, heads, keys, features * (dim_v + 1)))

    def dense():
        # Each query row scaled by its own max (over the keys it may see: causal rows over
        # Δ = 0 … i, whatever the padding), so its largest factor is 1.
        table = toeplitz_table(logits, queries, keys)  # [h, T, S]
        table = ops.exp(table - ops.stop_gradient(ops.max(table, axis=-1, keepdims=True)))
        return ops.einsum("hij,bhjc->bhic", table, outer)  # [b, h, T, m·(dv+1)]

    def fft():
        factor = ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))
        return ops.swapaxes(
            _toeplitz_product_fft(factor, ops.swapaxes(outer, -1, -2), queries), -1, -2
        )

    if method == "dense":
        mixed = dense()
    elif method == "fft":
        mixed = fft()
    elif static:
        mixed = dense() if queries * keys <= DENSE_MAX_TOKENS else fft()
    else:  # lengths known only when the graph runs: the same choice, made then
        mixed = ops.cond(queries * keys <= DENSE_MAX_TOKENS, dense, fft)
    mixed = ops.reshape(mixed, (batch, heads, queries, features, dim_v + 1))
    out = ops.einsum("bhim,bhimc->bhic", query_features, mixed)  # [b, h, T, dv+1]
    return safe_divide(out[..., :dim_v], out[..., dim_v:])
