"""Linear attention times an exact 1-D relative factor: a Toeplitz product, dense or by FFT.

A_ij = exp(P(i − j)) · φ(q_i)·φ(k_j), out_i = Σ_j A_ij v_j / Σ_j A_ij, for
queries i = 0…T−1 and keys j = 0…S−1 in token order. With
T_j = φ(k_j) ⊗ [v_j, 1] (`[S, m·(d+1)]` channels), S_i = Σ_j exp(P(i − j)) T_j
is a Toeplitz product on every channel and out_i ∝ φ(q_i)·S_i. Both methods
are exact (within 1e-5 relative of the dense float64 result, every row):
- `dense`: the `[T, S]` table exp(P(i − j) − max_row), one matrix product per
  head shared by the batch, O(T·S·m·d);
- `fft`: the same product as a linear convolution in float64, O(N log N·m·d)
  (Luo et al. 2021, arXiv:2106.12566). A float32 FFT carries an absolute error
  ~1e-7 of the largest term, so sharp factors and causal keys (which carry no
  ε) lose their small entries; float64 keeps ~1e-16. Rows that see only
  factor entries far below the largest one (a causal row before the factor's
  peak) would still drown in the others' rounding, so rows are put in levels
  by the largest entry they see (`row_levels`), and a level's rows take the
  factor with the entries above their level removed: exact for them, and
  computed only when some row is in that level.
- `auto` (default): `dense` while T·S is at most `DENSE_MAX_PAIRS`, else
  `fft`; decided when the graph runs if the lengths are not static, so a
  model computes the same function in `fit` and `predict`. The crossover is
  measured (docs/benchmarks.md, "1-D exact factor"). Where float64 is not
  available (JAX without `jax_enable_x64`), `auto` stays `dense` and `fft`
  is refused.
P enters as one vector over Δ = −(S−1) … T−1. Causal: factor 0 for j > i,
still a (lower-triangular) Toeplitz product.
"""

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.layers.feature_maps import NEGATIVE, safe_divide
from relperf_tf.layers.token_layout import length

METHODS = ("auto", "dense", "fft")
# `auto` uses the dense product while T·S is at most this (measured: docs/benchmarks.md).
DENSE_MAX_PAIRS = 1024 * 1024
# Row levels of the FFT: a level spans this many e-folds of the factor below the largest entry
# (its rows see entries up to e^LEVEL_WIDTH above their own largest: float64 keeps 1e-9), and
# LEVELS of them reach 3·LEVEL_WIDTH below it; deeper rows take the last level.
LEVEL_WIDTH = 12.0
LEVELS = 4


def check_method(method):
    validation.check_choice("toeplitz_method", method, METHODS)


def float64_available():
    """Whether this backend computes in float64 (JAX only with `jax_enable_x64`)."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


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
    size_power = 1
    while size_power < size:
        size_power *= 2
    return size_power


def window_counts(flags, keys):
    """How many of `flags` `[h, T + S − 1]` (bool) each query row i sees: the window
    i … i + S − 1 of the offsets vector, `[h, T]` int32, by a cumulative sum."""
    counts = ops.cumsum(ops.cast(flags, "int32"), axis=-1)
    counts = ops.pad(counts, ((0, 0), (1, 0)))  # counts[k] = Σ flags[:k]
    total = ops.shape(flags)[-1] + 1
    queries = total - keys  # (T + S − 1 + 1) − S
    return counts[:, keys : keys + queries] - counts[:, :queries]


def row_levels(logits, keys, top):
    """Each query row's level `[h, T]` int32: 0 if it sees an entry within LEVEL_WIDTH of the
    largest `top` `[h, 1]`, 1 if within 2·LEVEL_WIDTH, …, at most LEVELS − 1."""
    level = 0
    for step in range(1, LEVELS):
        seen = window_counts(logits >= top - step * LEVEL_WIDTH, keys)
        level = level + ops.cast(seen == 0, "int32")
    return level


def _fft_attention(logits, outer, query_features, queries, keys):
    """Σ_m φ_m(q_i) Σ_j exp(P(i − j)) outer[m, c, j] by float64 FFTs, `[b, h, T, c]`.

    logits `[h, T + S − 1]` (−∞ where the factor is 0), outer `[b, h, m, c, S]`,
    query_features `[b, h, T, m]`. Each row is scaled by the top of its level
    (`row_levels`), which cancels in its normalisation; rows below level 0 (rare)
    are computed again, only when there are any.
    """
    batch, heads, features, channels = (ops.shape(outer)[i] for i in range(4))
    size = _fft_length(queries + keys - 1)
    logits = ops.cast(logits, "float64")
    top = ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))  # [h, 1]
    flat = ops.reshape(ops.cast(outer, "float64"), (batch, heads, features * channels, keys))
    spectrum_real, spectrum_imag = ops.rfft(flat, fft_length=size)
    levels = ops.stop_gradient(row_levels(logits, keys, top))  # [h, T]

    def level_attention(level):
        ceiling = top - level * LEVEL_WIDTH
        kept = ops.where(logits <= ceiling, logits - ceiling, NEGATIVE)
        factor_real, factor_imag = ops.rfft(ops.exp(kept), fft_length=size)  # [h, L/2 + 1]
        factor_real, factor_imag = factor_real[None, :, None], factor_imag[None, :, None]
        real = spectrum_real * factor_real - spectrum_imag * factor_imag
        imag = spectrum_real * factor_imag + spectrum_imag * factor_real
        full = ops.irfft((real, imag), fft_length=size)  # the linear convolution
        mixed = ops.cast(full[..., keys - 1 : keys - 1 + queries], query_features.dtype)
        mixed = ops.reshape(mixed, (batch, heads, features, channels, queries))
        return ops.einsum("bhim,bhmci->bhic", query_features, mixed)  # [b, h, T, c]

    def deep_rows():
        rows = levels[None, :, :, None]  # [1, h, T, 1]
        correction = 0.0
        for level in range(1, LEVELS):
            correction = correction + ops.where(rows == level, level_attention(level), 0.0)
        return correction

    out = level_attention(0)
    if LEVELS == 1:
        return out
    deep = ops.cond(ops.any(levels > 0), deep_rows, lambda: ops.zeros_like(out))
    return ops.where(levels[None, :, :, None] > 0, deep, out)


def _dense_mixed(logits, outer, queries, keys):
    """The same product by the dense table, each query row scaled by its own max (over the keys
    it may see), `[b, h, T, c]` from outer `[b, h, S, c]`."""
    table = toeplitz_table(logits, queries, keys)  # [h, T, S]
    table = ops.exp(table - ops.stop_gradient(ops.max(table, axis=-1, keepdims=True)))
    return ops.einsum("hij,bhjc->bhic", table, outer)


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
    if method == "fft" and not float64_available():
        raise ValueError(
            "toeplitz_method='fft' needs float64, which JAX computes only with jax_enable_x64 "
            "(jax.config.update('jax_enable_x64', True)); use toeplitz_method='auto' or 'dense'."
        )
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

    def dense():
        # T_j = φ(k_j) ⊗ [v_j, 1], channels last: [b, h, S, m·(dv+1)].
        outer = key_features[..., :, None] * value_and_ones[..., None, :]
        outer = ops.reshape(outer, (batch, heads, keys, features * (dim_v + 1)))
        mixed = _dense_mixed(logits, outer, queries, keys)
        mixed = ops.reshape(mixed, (batch, heads, queries, features, dim_v + 1))
        return ops.einsum("bhim,bhimc->bhic", query_features, mixed)  # [b, h, T, dv+1]

    def fft():
        # T_j channels first, tokens last (the FFT's axis): [b, h, m, dv+1, S].
        outer = ops.einsum("bhsm,bhsc->bhmcs", key_features, value_and_ones)
        return _fft_attention(logits, outer, query_features, queries, keys)

    if method == "dense" or (method == "auto" and not float64_available()):
        out = dense()
    elif method == "fft":
        out = fft()
    elif static:
        out = dense() if queries * keys <= DENSE_MAX_PAIRS else fft()
    else:  # lengths known only when the graph runs: the same choice, made then
        out = ops.cond(queries * keys <= DENSE_MAX_PAIRS, dense, fft)
    return safe_divide(out[..., :dim_v], out[..., dim_v:])
