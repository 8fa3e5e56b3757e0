"""The exact 1-D factor's default path is exact: within 1e-5 relative of the dense float64
result, row by row, at lengths where `auto` takes the dense product and where it takes the
float64 FFT; with sharp factors (the locality prior's amplitude 30), causal keys (no ε, a wide
range), padding, and rows that see only entries far below the factor's largest."""

import os
import subprocess
import sys

import numpy as np
import pytest

from relperf_tf.layers import toeplitz_attention
from relperf_tf.layers.toeplitz_attention import (
    DENSE_MAX_PAIRS,
    float64_available,
    row_levels,
    toeplitz_linear_attention,
    window_counts,
)
from tests.conftest import REPO

pytestmark = pytest.mark.all_backends

OMEGA = 64.0 ** (-np.arange(4) / 4)
FFT_LENGTH = int(DENSE_MAX_PAIRS**0.5) + 200  # `auto` takes the FFT here


def factor_logits(length, kind, heads=2):
    """P(Δ) for Δ = −(n−1) … n−1 as the 1-D layer builds it (4 scales, /√16):
    `normal` (the paper's N(0, 1) α, β), `locality30` (the prior of the shipped models: a
    sharp peak at offsets ±1), `farpeak` (a sharp peak a third of the sequence away: rows
    before it see only entries ~e^-50 of the largest)."""
    rng = np.random.default_rng(0)
    delta = np.arange(2 * length - 1) - (length - 1)
    if kind == "normal":
        alpha, beta = rng.normal(size=(heads, 4)), rng.normal(size=(heads, 4))
    else:
        shift = np.array([1, -1] if kind == "locality30" else [length // 3, -(length // 3)])
        alpha = 30 * np.cos(np.outer(shift[:heads], OMEGA))
        beta = 30 * np.sin(np.outer(shift[:heads], OMEGA))
    angles = delta[:, None] * OMEGA
    logits = np.einsum("ls,hs->hl", np.cos(angles), alpha)
    logits += np.einsum("ls,hs->hl", np.sin(angles), beta)
    return (logits / 4.0).astype("float32")


def inputs(length, heads=2, features=2, dim_v=3):
    """φ(Q), φ(K) without ε over a wide range (causal keys), values, and a masked stretch."""
    rng = np.random.default_rng(1)
    query = (rng.random((1, heads, length, features)) + 1e-3).astype("float32")
    key = np.exp(3 * rng.normal(size=(1, heads, length, features))).astype("float32")
    value = rng.normal(size=(1, heads, length, dim_v)).astype("float32")
    valid = np.ones(length, bool)
    valid[length // 2 : length // 2 + length // 8] = False
    return query, key * valid[None, None, :, None], value


def reference(query, key, value, logits, causal):
    """The dense result in float64, each row scaled by its own largest visible entry."""
    length = query.shape[2]
    index = np.arange(length)[:, None] - np.arange(length)[None, :] + length - 1
    table = logits[:, index].astype("float64")
    if causal:
        table = np.where(index >= length - 1, table, -np.inf)
    table = np.exp(table - table.max(-1, keepdims=True))
    weights = np.einsum("bhim,bhjm->bhij", query.astype("float64"), key.astype("float64"))
    weights = weights * table[None]
    return np.einsum("bhij,bhjd->bhid", weights, value) / weights.sum(-1, keepdims=True)


def methods():
    return ("auto", "dense", "fft") if float64_available() else ("auto", "dense")


@pytest.mark.parametrize("kind", ["normal", "locality30", "farpeak"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("length", [97, FFT_LENGTH])
def test_every_method_is_exact_row_by_row(kind, causal, length):
    query, key, value = inputs(length)
    logits = factor_logits(length, kind)
    expected = reference(query, key, value, logits, causal)
    for method in methods():
        if method == "dense" and length == FFT_LENGTH and not float64_available():
            continue  # auto is dense there already
        out = np.asarray(
            toeplitz_linear_attention(query, key, value, logits, causal, method), "float64"
        )
        error = np.abs(out - expected).max(-1) / np.abs(expected).max(-1)
        assert error.max() < 1e-5, (method, error.max())


def test_row_levels_count_what_each_row_sees():
    """window_counts and row_levels against NumPy: row i sees offsets i … i + S − 1."""
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(2, 9 + 6 - 1)) * 20).astype("float32")
    flags = logits > 5
    counts = np.asarray(window_counts(flags, 6))
    expected = np.stack([flags[:, i : i + 6].sum(-1) for i in range(9)], axis=-1)
    np.testing.assert_array_equal(counts, expected)
    top = logits.max(-1, keepdims=True)
    levels = np.asarray(row_levels(logits, 6, top))
    row_max = np.stack([logits[:, i : i + 6].max(-1) for i in range(9)], axis=-1)
    width, deepest = toeplitz_attention.LEVEL_WIDTH, toeplitz_attention.LEVELS - 1
    expected = np.minimum(np.floor((top - row_max) / width), deepest).astype(int)
    np.testing.assert_array_equal(levels, expected)


def test_fft_without_float64_says_how_to_get_it():
    if float64_available():
        pytest.skip("this backend has float64")
    query, key, value = inputs(16)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        toeplitz_linear_attention(query, key, value, factor_logits(16, "normal"), method="fft")


@pytest.mark.tensorflow_only  # runs once: the check is a JAX process of its own
def test_jax_with_float64_takes_the_exact_fft():
    """Under JAX with jax_enable_x64 (a fresh process), `fft` equals the float64 dense result."""
    code = (
        "import jax; jax.config.update('jax_enable_x64', True); import numpy as np; "
        "from tests.test_exact_factor import *; "
        f"q, k, v = inputs({FFT_LENGTH}); l = factor_logits({FFT_LENGTH}, 'farpeak'); "
        "ref = reference(q, k, v, l, True); "
        "out = np.asarray(toeplitz_linear_attention(q, k, v, l, True, 'fft'), 'float64'); "
        "print((np.abs(out - ref).max(-1) / np.abs(ref).max(-1)).max())"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-5
