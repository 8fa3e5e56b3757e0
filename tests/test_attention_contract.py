"""Every attention layer under keras.layers.MultiHeadAttention's contract: masks, cross- and
causal attention, relative positions at any length, checked against NumPy brute force."""

import warnings

import keras
import numpy as np
import pytest

from relperf_tf.layers import (
    ClippedRelativeAttention,
    FavorAttention,
    FavorKernel,
    RelativeFavorAttention,
)
from relperf_tf.layers.causal_attention import causal_linear_attention
from relperf_tf.layers.feature_maps import softmax_kernel_logits
from relperf_tf.layers.toeplitz_attention import float64_available, toeplitz_linear_attention
from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends

DIM, HEADS = 16, 2
# The FFT method computes in float64, which JAX has only with jax_enable_x64.
METHODS = ("dense", "fft") if float64_available() else ("dense",)
NO_FLOAT64 = "JAX without jax_enable_x64 has no float64 for toeplitz_method='fft'"
RNG = np.random.default_rng(0)


def tokens(batch, length, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=(batch, length, DIM)) * scale).astype("float32")


# --- NumPy brute force -------------------------------------------------------


def numpy_dense(layer, x):
    kernel, bias = (np.array(w.numpy(), "float64") for w in layer.weights[:2])
    return x.astype("float64") @ kernel + bias


def numpy_heads(x, heads):
    batch, length, width = x.shape
    return x.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)


def numpy_axis_logits(layer, offsets, axis=0):
    """P(Δ)/√d over an array of offsets from the layer's α, β and own frequencies."""
    scales = layer.pos_scales
    omega = np.array(layer._encoding.frequencies.numpy(), "float64")  # [S]
    alpha = np.array(layer.alpha.numpy(), "float64")[:, axis * scales : (axis + 1) * scales]
    beta = np.array(layer.beta.numpy(), "float64")[:, axis * scales : (axis + 1) * scales]
    angles = np.asarray(offsets, "float64")[..., None] * omega  # [..., S]
    logits = np.einsum("...s,hs->h...", np.cos(angles), alpha) + np.einsum(
        "...s,hs->h...", np.sin(angles), beta
    )
    return logits / np.sqrt(layer.query_key_dim)


def numpy_attention(layer, query, value, bias=None, key_valid=None, query_valid=None, causal=False):
    """softmax(q·k/√d + bias) v through the layer's own projections, in float64.

    bias: `[heads, T, S]` positional logits (already / √d); the content part
    uses strategy 1's width `query_key_dim` when the layer has one.
    """
    q = numpy_heads(numpy_dense(layer._query_dense, query), layer.num_heads)
    k = numpy_heads(numpy_dense(layer._key_dense, value), layer.num_heads)
    v = numpy_heads(numpy_dense(layer._value_dense, value), layer.num_heads)
    width = getattr(layer, "query_key_dim", q.shape[-1])
    scores = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(width)
    if bias is not None:
        scores = scores + bias[None]
    allowed = np.ones(scores.shape, bool)
    if key_valid is not None:
        allowed &= key_valid[:, None, None, :]
    if causal:
        allowed &= np.tril(np.ones(scores.shape[-2:], bool))[None, None]
    scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    heads = np.einsum("bhij,bhjd->bhid", weights, v)
    if query_valid is not None:
        heads = heads * query_valid[:, None, :, None]
    merged = heads.transpose(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], -1)
    return numpy_dense(layer._output_dense, merged)


def offsets_1d(queries, keys):
    return np.arange(queries)[:, None] - np.arange(keys)[None, :]


# --- exact paths against brute force ---------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_content_attention_equals_brute_force_with_masks(causal, cross):
    """feature_map='exact': key and query masks, causal, cross-attention (T = 9, S = 13)."""
    if causal and cross:
        pytest.skip("causal attention pairs query i with key i (T = S)")
    query = tokens(2, 9, 1)
    value = tokens(2, 13, 2) if cross else query
    key_valid = np.ones(value.shape[:2], bool)
    key_valid[0, -3:] = key_valid[1, 2] = False
    query_valid = np.ones(query.shape[:2], bool)
    query_valid[1, -2:] = False
    layer = FavorAttention(HEADS, key_dim=4, value_dim=6, feature_map="exact")
    out = layer(query, value, query_mask=query_valid, value_mask=key_valid, use_causal_mask=causal)
    expected = numpy_attention(layer, query, value, None, key_valid, query_valid, causal)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("kernel", ["exact", "circular"])
@pytest.mark.parametrize("causal", [False, True])
def test_relative_1d_exact_path_equals_brute_force(kernel, causal):
    """exp(P(i − j)) softmax bias from the layer's α, β, ω; masks; both Toeplitz methods."""
    x = tokens(2, 11, 3)
    key_valid = np.ones(x.shape[:2], bool)
    key_valid[0, -4:] = False
    offsets = offsets_1d(11, 11)
    if kernel == "circular":
        offsets = (offsets + 5) % 11 - 5
    for method in METHODS:
        keras.utils.set_random_seed(1)
        layer = RelativeFavorAttention(
            HEADS, position_kernel=kernel, pos_scales=3, feature_map="exact", toeplitz_method=method
        )
        out = layer(x, x, value_mask=key_valid, use_causal_mask=causal)
        bias = numpy_axis_logits(layer, offsets)
        expected = numpy_attention(layer, x, x, bias, key_valid, None, causal)
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_relative_1d_cross_attention_equals_brute_force():
    query, value = tokens(2, 7, 4), tokens(2, 12, 5)
    layer = RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=2, feature_map="exact"
    )
    out = layer(query, value)
    expected = numpy_attention(layer, query, value, numpy_axis_logits(layer, offsets_1d(7, 12)))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_relative_2d_exact_path_equals_brute_force_with_cross_grids():
    """2-D factor at call time: a 3×4 query grid (class token first) on a 2×5 key grid."""
    query, value = tokens(2, 13, 6), tokens(2, 10, 7)
    key_valid = np.ones(value.shape[:2], bool)
    key_valid[1, :3] = False
    layer = RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=2, position_axes=2, feature_map="exact"
    )
    out = layer(query, value, value_mask=key_valid, grid_shape=(3, 4), key_grid_shape=(2, 5))
    rows_q, cols_q = np.divmod(np.arange(12), 4)
    rows_k, cols_k = np.divmod(np.arange(10), 5)
    bias = numpy_axis_logits(layer, rows_q[:, None] - rows_k[None], 0) + numpy_axis_logits(
        layer, cols_q[:, None] - cols_k[None], 1
    )
    bias = np.pad(bias, ((0, 0), (1, 0), (0, 0)))  # the class token: factor 1
    expected = numpy_attention(layer, query, value, bias, key_valid)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_favor_paths_approach_brute_force_as_features_grow():
    """FAVOR+ with the exact 1-D factor, masks and causality: error shrinks with m."""
    x = tokens(1, 24, 8, scale=0.5)
    key_valid = np.ones(x.shape[:2], bool)
    key_valid[0, -5:] = False
    errors = {}
    for features in (8, 2048):
        deviation = []
        for seed in range(3):
            keras.utils.set_random_seed(3)  # the same projections and α, β for every m
            layer = RelativeFavorAttention(
                HEADS, position_kernel="exact", pos_scales=2, nb_features=features, seed=seed
            )
            out = np.array(layer(x, x, value_mask=key_valid, use_causal_mask=True))
            bias = numpy_axis_logits(layer, offsets_1d(24, 24))
            expected = numpy_attention(layer, x, x, bias, key_valid, None, True)
            deviation.append(np.abs(out - expected).mean() / np.abs(expected).mean())
        errors[features] = np.mean(deviation)
    print("FAVOR+ (exact 1-D factor, causal, masked) relative error by m:", errors)
    assert errors[2048] * 3 < errors[8]


# --- kernels against the same features computed quadratically ----------------


def test_toeplitz_methods_equal_the_quadratic_sum():
    rng = np.random.default_rng(9)
    qf, kf = (rng.random((2, 2, n, 5)).astype("float32") + 0.1 for n in (30, 21))
    value = rng.normal(size=(2, 2, 21, 3)).astype("float32")
    logits = rng.normal(size=(2, 50)).astype("float32") * 3
    table = logits[:, offsets_1d(30, 21) + 20]  # [h, T, S]
    weights = np.einsum("bhim,bhjm->bhij", qf, kf) * np.exp(table)[None]
    expected = np.einsum("bhij,bhjd->bhid", weights, value) / weights.sum(-1, keepdims=True)
    for method in METHODS:
        out = toeplitz_linear_attention(qf, kf, value, logits, method=method)
        np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
def test_causal_prefix_sums_equal_the_masked_quadratic_sum(chunk_size):
    """Chunked and stabilised per chunk: the unstabilised features' causal average, any C."""
    rng = np.random.default_rng(10)
    query, key = (rng.normal(size=(2, 2, 19, 4)).astype("float32") for _ in range(2))
    value = rng.normal(size=(2, 2, 19, 3)).astype("float32")
    kernel = FavorKernel(nb_features=8, seed=1)
    kernel.build(query.shape)
    projection = keras.ops.convert_to_tensor(kernel.projection)
    qf = np.array(kernel.features(query, True, projection))
    key_logits = np.array(softmax_kernel_logits(key, projection), "float64")
    weights = np.einsum("bhim,bhjm->bhij", qf, np.exp(key_logits)) * np.tril(np.ones((19, 19)))
    expected = np.einsum("bhij,bhjd->bhid", weights, value) / weights.sum(-1, keepdims=True)
    out = causal_linear_attention(qf, key_logits.astype("float32"), value, chunk_size, True)
    np.testing.assert_allclose(out, expected, atol=1e-5)


# --- properties ------------------------------------------------------------

LAYERS = {
    "favor-softmax": lambda: FavorAttention(HEADS, nb_features=8),
    "favor-relu": lambda: FavorAttention(HEADS, nb_features=8, feature_map="relu"),
    "favor-efficient": lambda: FavorAttention(HEADS, feature_map="efficient"),
    "favor-exact": lambda: FavorAttention(HEADS, feature_map="exact"),
    "relative-favor-1d": lambda: RelativeFavorAttention(HEADS, pos_scales=2, nb_features=8),
    "relative-exact-1d-dense": lambda: RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=2, nb_features=8, toeplitz_method="dense"
    ),
    "relative-exact-1d-fft": lambda: RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=2, nb_features=8, toeplitz_method="fft"
    ),
    "relative-exact-1d-exact-kernel": lambda: RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=2, feature_map="exact"
    ),
}
CAUSAL = [name for name in LAYERS if name != "favor-efficient"]


def skip_without_float64(name):
    if "fft" in name and not float64_available():
        pytest.skip(NO_FLOAT64)


@pytest.mark.parametrize("name", list(LAYERS))
def test_padding_does_not_change_real_tokens(name):
    """40 real tokens, then 10 padded ones of any content: the real outputs stay (≤ 1e-6)."""
    skip_without_float64(name)
    keras.utils.set_random_seed(0)
    layer = LAYERS[name]()
    real = tokens(2, 40, 11)
    padded = np.concatenate([real, tokens(2, 10, 12, scale=5.0)], axis=1)
    mask = np.arange(50)[None] < 40
    mask = np.repeat(mask, 2, axis=0)
    base = np.array(layer(real, real))
    out = np.array(layer(padded, padded, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(out[:, :40], base, atol=1e-6)


@pytest.mark.parametrize(
    "make, grid",
    [
        (
            lambda: RelativeFavorAttention(
                HEADS, position_kernel="exact", pos_scales=2, position_axes=2, nb_features=8
            ),
            (3, 4),
        ),
        (
            lambda: RelativeFavorAttention(
                HEADS, position_kernel="circular", pos_scales=2, position_axes=2, nb_features=8
            ),
            (3, 4),
        ),
        (lambda: RelativeFavorAttention(HEADS, pos_scales=2, position_axes=2), (3, 4)),
        (lambda: ClippedRelativeAttention(HEADS, clipping_dist=2, class_token=False), (3, 4)),
    ],
    ids=["exact-2d", "circular-2d", "favor-2d", "clipped"],
)
def test_masked_grid_tokens_do_not_reach_the_others(make, grid):
    """2-D layers: the content of masked grid tokens does not change the other outputs."""
    keras.utils.set_random_seed(0)
    layer = make()
    x = tokens(2, 12, 13)
    mask = np.ones((2, 12), bool)
    mask[0, [1, 6]] = mask[1, [0, 11]] = False
    other = np.where(mask[..., None], x, tokens(2, 12, 14, scale=5.0))
    base = np.array(layer(x, x, query_mask=mask, value_mask=mask, grid_shape=grid))
    out = np.array(layer(other, other, query_mask=mask, value_mask=mask, grid_shape=grid))
    np.testing.assert_allclose(out[mask], base[mask], atol=1e-6)


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_outputs_do_not_see_later_tokens(name):
    skip_without_float64(name)
    keras.utils.set_random_seed(0)
    layer = LAYERS[name]()
    x = tokens(1, 30, 15)
    changed = x.copy()
    changed[:, 17:] = tokens(1, 13, 16, scale=3.0)
    base = np.array(layer(x, x, use_causal_mask=True))
    out = np.array(layer(changed, changed, use_causal_mask=True))
    # A token that saw the future would move by far more than the later ones' 1e-3.
    np.testing.assert_allclose(out[:, :17], base[:, :17], atol=1e-5)
    assert np.abs(out[:, 17:] - base[:, 17:]).max() > 1e-3


@pytest.mark.parametrize("method", ["dense", "fft"])
@pytest.mark.parametrize("causal", [False, True])
def test_1d_exact_factor_is_equivariant_for_a_fixed_draw(method, causal):
    """A sequence placed at any offset of a masked canvas gives the same outputs, one draw."""
    skip_without_float64(method)
    keras.utils.set_random_seed(0)
    layer = RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=3, nb_features=4, toeplitz_method=method
    )
    sequence = tokens(1, 20, 17)
    outputs = []
    for offset in (0, 3, 11):
        canvas = np.zeros((1, 40, DIM), "float32") + 7.0  # background content, masked
        canvas[:, offset : offset + 20] = sequence
        mask = np.zeros((1, 40), bool)
        mask[:, offset : offset + 20] = True
        out = layer(canvas, canvas, query_mask=mask, value_mask=mask, use_causal_mask=causal)
        outputs.append(np.array(out)[:, offset : offset + 20])
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], atol=1e-5)


def test_1d_layer_runs_at_any_length_with_the_same_weights():
    layer = RelativeFavorAttention(HEADS, position_kernel="exact", pos_scales=2, nb_features=4)
    weights = None
    for length in (5, 37, 300):
        assert layer(tokens(1, length), tokens(1, length)).shape == (1, length, DIM)
        now = [np.array(w.numpy()) for w in layer.weights]
        if weights is not None:
            assert all(np.array_equal(a, b) for a, b in zip(weights, now))
        weights = now


# --- return_attention_scores --------------------------------------------------


@pytest.mark.parametrize(
    "make, call",
    [
        (lambda: FavorAttention(HEADS, nb_features=8), {}),
        (lambda: FavorAttention(HEADS, feature_map="exact"), dict(use_causal_mask=True)),
        (
            lambda: RelativeFavorAttention(HEADS, position_kernel="exact", pos_scales=2),
            dict(use_causal_mask=True),
        ),
        (lambda: RelativeFavorAttention(HEADS, pos_scales=2), {}),
        (
            lambda: RelativeFavorAttention(
                HEADS, position_kernel="circular", pos_scales=2, position_axes=2
            ),
            dict(grid_shape=(3, 4)),
        ),
        (lambda: ClippedRelativeAttention(HEADS, clipping_dist=2), dict(grid_shape=(3, 4))),
    ],
    ids=["favor", "exact-causal", "relative-exact-causal", "relative-favor", "circular-2d", "clip"],
)
def test_attention_scores_are_the_weights_the_layer_applies(make, call):
    """Rows sum to 1 over the valid keys, and W_o(weights · v) is the layer's output."""
    keras.utils.set_random_seed(0)
    layer = make()
    tokens_count = 13 if isinstance(layer, ClippedRelativeAttention) else 12
    x = tokens(2, tokens_count, 18)
    mask = np.ones((2, tokens_count), bool)
    mask[1, 3] = False
    out, weights = layer(x, x, value_mask=mask, return_attention_scores=True, **call)
    weights = np.array(weights, "float64")
    assert weights.shape == (2, HEADS, tokens_count, tokens_count)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.abs(weights[1, :, :, 3]).max() == 0.0
    v = numpy_heads(numpy_dense(layer._value_dense, x), HEADS)
    heads = np.einsum("bhij,bhjd->bhid", weights, v)
    merged = heads.transpose(0, 2, 1, 3).reshape(2, tokens_count, -1)
    np.testing.assert_allclose(out, numpy_dense(layer._output_dense, merged), atol=1e-4)


# --- the Keras contract -----------------------------------------------------

SWAPS = {
    "MultiHeadAttention": lambda: keras.layers.MultiHeadAttention(HEADS, key_dim=8),
    "FavorAttention": lambda: FavorAttention(HEADS, key_dim=8, nb_features=8),
    "RelativeFavorAttention": lambda: RelativeFavorAttention(HEADS, key_dim=8, pos_scales=2),
    "RelativeFavorAttention-exact": lambda: RelativeFavorAttention(
        HEADS, key_dim=8, position_kernel="exact", pos_scales=2, nb_features=4
    ),
    "ClippedRelativeAttention": lambda: ClippedRelativeAttention(
        HEADS, key_dim=8, clipping_dist=3, class_token=False
    ),
}


@pytest.mark.parametrize("name", list(SWAPS))
@pytest.mark.parametrize("cross", [False, True])
def test_drop_in_for_multi_head_attention(name, cross):
    """Embedding(mask_zero=True) → attention → pooling: the same functional model, one fit step,
    no 'does not support masking' warning."""
    if cross and name == "ClippedRelativeAttention":
        pytest.skip("the clipped heads pair tokens of one grid (T = S)")
    words = keras.Input((12,), dtype="int32")
    embedded = keras.layers.Embedding(20, DIM, mask_zero=True)(words)
    if cross:
        context_words = keras.Input((7,), dtype="int32")
        context = keras.layers.Embedding(20, DIM, mask_zero=True)(context_words)
        attended = SWAPS[name]()(embedded, context)
        inputs = [words, context_words]
    else:
        attended = SWAPS[name]()(embedded, embedded)
        inputs = [words]
    pooled = keras.layers.GlobalAveragePooling1D()(attended)
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 20, (8, 12))] + ([rng.integers(0, 20, (8, 7))] if cross else [])
    for sample in data:
        sample[:, -3:] = 0  # padding
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*does not support masking.*")
        history = model.fit(data, rng.integers(0, 3, 8), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_implicit_mask_is_honoured():
    """Keras' mask from the embedding reaches the keys: padded ids change nothing real."""
    embedding = keras.layers.Embedding(20, DIM, mask_zero=True)
    layer = RelativeFavorAttention(HEADS, position_kernel="exact", pos_scales=2, nb_features=4)
    ids = np.random.default_rng(1).integers(1, 20, (2, 9))
    padded = np.concatenate([ids, np.zeros((2, 4), int)], axis=1)
    base = np.array(layer(embedding(ids), embedding(ids)))
    out = np.array(layer(embedding(padded), embedding(padded)))
    np.testing.assert_allclose(out[:, :9], base, atol=1e-6)
    x = embedding(padded)  # self-attention with value omitted takes the query's mask too
    np.testing.assert_allclose(np.array(layer(x))[:, :9], base, atol=1e-6)


def test_multi_head_attention_arguments():
    x, context = tokens(2, 6), tokens(2, 9, 1)
    layer = FavorAttention(
        4,
        key_dim=8,
        value_dim=5,
        output_shape=7,
        use_bias=False,
        dropout=0.5,
        kernel_initializer="he_normal",
        kernel_regularizer="l2",
    )
    assert layer(x, context).shape == (2, 6, 7)
    assert layer._query_dense.kernel.shape == (DIM, 32)
    assert layer._value_dense.kernel.shape == (DIM, 20)
    assert not layer._query_dense.use_bias
    assert len(layer.losses) == 4  # the four kernels' L2
    np.testing.assert_allclose(layer(x, context), layer(x, context))  # dropout off outside fit
    assert np.abs(np.array(layer(x, context, training=True)) - np.array(layer(x, context))).max()
    clone = FavorAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


HOLE = np.ones((2, 6, 9), bool)
HOLE[0, 2, 3] = False  # one pair masked: no query/key padding gives it
BAD_MASKS = [
    (dict(attention_mask=HOLE), "does not factorise"),
    (dict(attention_mask=np.ones((2, 9), bool)), r"attention_mask of shape \(2, 9\).*\[6, 9\]"),
    (dict(attention_mask=np.ones((2, 3, 6, 9), bool)), r"\[2, 2, 6, 9\]"),
    (dict(value_mask=np.ones((2, 8), bool)), r"value_mask of shape \(2, 8\).*\[2, 9\]"),
    (dict(key_mask=np.ones((2, 9, 1), bool)), "key_mask of shape"),
    (dict(query_mask=np.ones((2, 5), bool)), "query_mask of shape"),
]


@pytest.mark.parametrize("masks, message", BAD_MASKS)
@pytest.mark.parametrize(
    "make",
    [
        lambda: FavorAttention(HEADS),
        lambda: RelativeFavorAttention(HEADS, position_kernel="exact", pos_scales=2),
    ],
    ids=["favor", "relative-exact"],
)
def test_bad_masks_raise_one_clear_error(make, masks, message):
    with pytest.raises(ValueError, match=message):
        make()(tokens(2, 6), tokens(2, 9, 1), **masks)


def test_bad_arguments_raise_one_clear_error():
    x = tokens(2, 6)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['num_features'\]"):
        FavorAttention(HEADS, num_features=4)
    with pytest.raises(ValueError, match="position_kernel='toeplitz'"):
        RelativeFavorAttention(HEADS, position_kernel="toeplitz")
    with pytest.raises(ValueError, match="toeplitz_method='blocked'"):
        RelativeFavorAttention(HEADS, toeplitz_method="blocked")
    with pytest.raises(ValueError, match="feature_map='efficient'"):
        FavorAttention(HEADS, feature_map="efficient")(x, x, use_causal_mask=True)
    grid = RelativeFavorAttention(HEADS, position_kernel="exact", pos_scales=2, position_axes=2)
    with pytest.raises(ValueError, match="needs grid_shape"):
        grid(x, x)
    with pytest.raises(ValueError, match="2-D positional factor"):
        grid(x, x, grid_shape=(2, 3), use_causal_mask=True)
    with pytest.raises(ValueError, match="8 queries do not fit a 2×3 grid"):
        grid(tokens(2, 8), x, grid_shape=(2, 3))
    with pytest.raises(ValueError, match="circular.*one length per axis"):
        RelativeFavorAttention(HEADS, position_kernel="circular", pos_scales=2)(x, tokens(2, 9))
    with pytest.raises(ValueError, match="needs positions=… encodings"):
        RelativeFavorAttention(HEADS, pos_scales=None)(x, x)
    with pytest.raises(ValueError, match="use_causal_mask=True is not allowed"):
        ClippedRelativeAttention(HEADS)(x, x, use_causal_mask=True)
    with pytest.raises(ValueError, match="T = S"):
        ClippedRelativeAttention(HEADS, class_token=False)(x, tokens(2, 9))


@pytest.mark.parametrize(
    "make, inputs, options, trainable",
    [
        (lambda **kw: FavorAttention(HEADS, key_dim=4, nb_features=4, **kw), 2, {}, 8),
        (
            lambda **kw: RelativeFavorAttention(
                HEADS, position_kernel="exact", pos_scales=2, nb_features=4, **kw
            ),
            1,
            {},
            11,  # q, k, v, output (kernel, bias); α, β; ω
        ),
        (
            lambda **kw: RelativeFavorAttention(
                HEADS, position_kernel="circular", pos_scales=2, position_axes=2, **kw
            ),
            1,
            dict(grid_shape=(2, 3)),
            11,
        ),
        (
            lambda **kw: ClippedRelativeAttention(HEADS, clipping_dist=2, class_token=False, **kw),
            1,
            dict(grid_shape=(2, 3)),
            9,  # q, k, v, output (kernel, bias); r_0 … r_D
        ),
    ],
    ids=["cross", "relative-exact-1d", "circular-2d", "clipped-grid-at-call"],
)
def test_new_configurations_round_trip(tmp_path, make, inputs, options, trainable):
    query = tokens(2, 6)
    call = [query, tokens(2, 9, 1)] if inputs == 2 else [query, query]
    run_layer_test(
        tmp_path,
        make,
        call,
        (2, 6, DIM),
        expected_trainable_weights=trainable,
        expected_non_trainable_weights=2,  # W and the redraw step
        call_options=options,
    )


@pytest.mark.tensorflow_only
def test_auto_method_is_the_same_when_lengths_are_known_only_at_run_time():
    """`predict` relaxes the token count to None: `auto` must still pick the dense product."""
    import tensorflow as tf

    layer = RelativeFavorAttention(HEADS, position_kernel="exact", pos_scales=2, nb_features=4)
    x = tokens(2, 33, 19)
    static = np.array(layer(x, x, use_causal_mask=True))
    relaxed = tf.function(
        lambda x: layer(x, x, use_causal_mask=True),
        input_signature=[tf.TensorSpec((None, None, DIM))],
    )
    np.testing.assert_allclose(np.array(relaxed(x)), static, atol=1e-6)


@pytest.mark.tensorflow_only
def test_exact_kernel_with_the_1d_factor_runs_when_lengths_are_known_only_at_run_time():
    import tensorflow as tf

    layer = RelativeFavorAttention(
        HEADS, position_kernel="exact", pos_scales=2, feature_map="exact"
    )
    x = tokens(2, 21, 20)
    relaxed = tf.function(
        lambda x: layer(x, x, use_causal_mask=True),
        input_signature=[tf.TensorSpec((None, None, DIM))],
    )
    np.testing.assert_allclose(
        np.array(relaxed(x)), np.array(layer(x, x, use_causal_mask=True)), atol=1e-6
    )
