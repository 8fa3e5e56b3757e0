"""Keras' own MultiHeadAttention test cases, for each of our attention layers.

Every case of Keras 3.15's `keras/src/layers/attention/multi_head_attention_test.py`
(50 with its parameters) has a counterpart here, written for linear attention:
numbers are compared with MultiHeadAttention itself through `feature_map="exact"`
(FAVOR+ maps statistically), relative layers by properties. Three cases test
MultiHeadAttention's internals (`_compute_attention` overrides, the fused
causal kernel) and two its flash attention; their counterparts test what our
layers promise instead (named `..._counterpart`). Layers: `FavorAttention`,
`RelativeFavorAttention` (the exact 1-D/2-D/N-D factor, its defaults) and
`ClippedRelativeAttention` (one grid, self-attention: cross-attention and
causal cases do not apply to it and are skipped with the reason).
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from relperf_tf.layers import ClippedRelativeAttention, FavorAttention, RelativeFavorAttention
from relperf_tf.layers.favor_attention import get_keras_mask

try:  # Keras' own setter of a tensor's mask, on every backend
    from keras.src.backend import set_keras_mask
except ImportError:  # pragma: no cover

    def set_keras_mask(x, mask):
        x._keras_mask = mask


from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends

LAYERS = {
    "favor": FavorAttention,
    "relative": RelativeFavorAttention,
    "clipped": lambda *args, **kw: ClippedRelativeAttention(*args, class_token=False, **kw),
}
# Trainable weights beyond MultiHeadAttention's: α, β and the own encoding's ω; r_0 … r_D.
EXTRA_TRAINABLE = {"favor": 0, "relative": 3, "clipped": 1}
CROSS = "ClippedRelativeAttention pairs the tokens of one grid (T = S)"
CAUSAL = "ClippedRelativeAttention's windows look both ways (no causal form)"
AXES = "ClippedRelativeAttention attends over one token axis"


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(shape, seed=0):
    return rng(seed).normal(size=shape).astype("float32")


def skip_for(name, reason, applies=True):
    if name == "clipped" and applies:
        pytest.skip(reason)


# --- test_basics (1) ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "options, trainable",
    [
        (dict(), 8),
        (dict(value_dim=4, use_bias=False, dropout=0.5), 4),
        (dict(use_gate=True), 10),
        (dict(value_dim=4, use_bias=False, dropout=0.5, use_gate=True), 5),
    ],
    ids=["plain", "no-bias-dropout", "gate", "gate-no-bias-dropout"],
)
def test_basics(tmp_path, name, options, trainable):
    values = 8 if name == "clipped" else 4
    run_layer_test(
        tmp_path,
        lambda **kw: LAYERS[name](2, 2, **options, nb_features=4, **kw),
        [normal((2, 8, 16)), normal((2, values, 16), 1)],
        (2, 8, 16),
        expected_trainable_weights=trainable + EXTRA_TRAINABLE[name],
        expected_non_trainable_weights=2,  # the FAVOR+ draw W and its redraw step
    )


# --- test_basics_with_flash_attention, test_flash_attention_with_errors (2) ---------


@pytest.mark.parametrize("name", list(LAYERS))
def test_flash_attention_counterpart(name):
    """There is no flash kernel to choose: linear attention never forms the matrix a flash
    kernel tiles. None and False are accepted (MultiHeadAttention's signature), True says why
    not."""
    x = normal((2, 4, 8))
    for accepted in (None, False):
        assert LAYERS[name](2, 2, flash_attention=accepted)(x, x).shape == (2, 4, 8)
    with pytest.raises(ValueError, match="flash_attention=True is not allowed"):
        LAYERS[name](2, 2, flash_attention=True)


# --- test_high_dim_attention (6) ---------------------------------------------------

HIGH_DIM = [
    ("4d_inputs_1freebatch_mask2", (3, 4), (3, 2), (2,)),
    ("4d_inputs_1freebatch_mask3", (3, 4), (3, 2), (2,)),
    ("4d_inputs_1freebatch_mask4", (3, 4), (3, 2), (2,)),
    ("4d_inputs_2d_attention", (3, 4), (3, 2), (1, 2)),
    ("5d_inputs_2d_attention", (5, 3, 4), (5, 3, 2), (2, 3)),
    ("5d_inputs_2d_attention_fullmask", (5, 3, 4), (5, 3, 2), (2, 3)),
]


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "case, query_dims, value_dims, axes", HIGH_DIM, ids=[c[0] for c in HIGH_DIM]
)
@pytest.mark.parametrize("use_gate", [False, True])
def test_high_dim_attention(tmp_path, name, case, query_dims, value_dims, axes, use_gate):
    """Attention over chosen axes of 4-D and 5-D inputs; the relative factor runs on the grid
    of those axes (2-D here: the query's and the key's grids differ)."""
    skip_for(name, CROSS)
    query, value = normal((3,) + query_dims + (8,)), normal((3,) + value_dims + (8,), 1)
    run_layer_test(
        tmp_path,
        lambda **kw: LAYERS[name](2, 2, attention_axes=axes, use_gate=use_gate, **kw),
        [query, value],
        query.shape,
        expected_trainable_weights=(10 if use_gate else 8) + EXTRA_TRAINABLE[name],
        expected_non_trainable_weights=2,
    )


def test_clipped_attends_over_one_axis_of_a_high_dim_input():
    """The clipped layer's counterpart: self-attention over axis 2 of `[batch, 3, 5, dim]`."""
    x = normal((2, 3, 5, 8))
    layer = ClippedRelativeAttention(2, 2, attention_axes=2, class_token=False, clipping_dist=2)
    out = np.array(layer(x, x))
    assert out.shape == (2, 3, 5, 8)
    rows = ClippedRelativeAttention(2, 2, class_token=False, clipping_dist=2)
    rows(x[:, 0], x[:, 0])
    rows.set_weights(layer.get_weights())
    for row in range(3):  # each row attends within itself: the same as a [batch, 5, dim] call
        np.testing.assert_allclose(out[:, row], rows(x[:, row], x[:, row]), atol=1e-6)
    with pytest.raises(ValueError, match="one token axis"):
        ClippedRelativeAttention(2, 2, attention_axes=(1, 2))


def test_relative_factor_over_three_axes_equals_brute_force():
    """An N-D grid: one exact factor per attention axis, exp(Σ_a P_a(Δ_a)) · softmax scores."""
    keras.utils.set_random_seed(2)
    query, value = normal((2, 2, 3, 4, 8)), normal((2, 3, 2, 2, 8), 1)
    layer = RelativeFavorAttention(2, 4, feature_map="exact", pos_scales=2)
    out = np.array(layer(query, value))
    grids = [
        np.stack(np.unravel_index(np.arange(np.prod(g)), g), -1) for g in ((2, 3, 4), (3, 2, 2))
    ]
    offsets = grids[0][:, None, :] - grids[1][None, :, :]  # [T, S, 3]
    omega = np.array(layer._encoding.frequencies.numpy(), "float64")
    alpha, beta = np.array(layer.alpha.numpy(), "float64"), np.array(layer.beta.numpy(), "float64")
    bias = 0.0
    for axis in range(3):
        angles = offsets[..., axis, None] * omega  # [T, S, 2]
        block = slice(2 * axis, 2 * axis + 2)
        bias = bias + (
            np.einsum("tsk,hk->hts", np.cos(angles), alpha[:, block])
            + np.einsum("tsk,hk->hts", np.sin(angles), beta[:, block])
        )
    bias = bias / np.sqrt(layer.query_key_dim)
    q = np.einsum(
        "btd,dk->btk", query.reshape(2, -1, 8), np.array(layer.query_dense.kernel.numpy())
    )
    q = (q + np.array(layer.query_dense.bias.numpy())).reshape(2, -1, 2, 4).transpose(0, 2, 1, 3)
    k = np.einsum("btd,dk->btk", value.reshape(2, -1, 8), np.array(layer.key_dense.kernel.numpy()))
    k = (k + np.array(layer.key_dense.bias.numpy())).reshape(2, -1, 2, 4).transpose(0, 2, 1, 3)
    v = np.einsum(
        "btd,dk->btk", value.reshape(2, -1, 8), np.array(layer.value_dense.kernel.numpy())
    )
    v = (v + np.array(layer.value_dense.bias.numpy())).reshape(2, -1, 2, 4).transpose(0, 2, 1, 3)
    scores = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(layer.query_key_dim) + bias[None]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhij,bhjd->bhid", weights, v).transpose(0, 2, 1, 3).reshape(2, 24, 8)
    expected = heads @ np.array(layer.output_dense.kernel.numpy()) + np.array(
        layer.output_dense.bias.numpy()
    )
    np.testing.assert_allclose(out.reshape(2, 24, 8), expected, atol=1e-5)


# --- test_attention_axes_negative_indexing (1) ------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("use_gate", [False, True])
def test_attention_axes_negative_indexing(name, use_gate):
    x = normal((2, 3, 8, 4))
    positive = LAYERS[name](2, 4, attention_axes=2, use_gate=use_gate)
    negative = LAYERS[name](2, 4, attention_axes=-2, use_gate=use_gate)
    positive(x, x), negative(x, x)
    negative.set_weights(positive.get_weights())
    z_pos, a_pos = positive(x, x, return_attention_scores=True)
    z_neg, a_neg = negative(x, x, return_attention_scores=True)
    assert z_pos.shape == z_neg.shape and a_pos.shape == a_neg.shape == (2, 3, 2, 8, 8)
    np.testing.assert_allclose(z_pos, z_neg, atol=1e-5)
    np.testing.assert_allclose(a_pos, a_neg, atol=1e-5)


# --- test_compute_output_shape (7) --------------------------------------------------

OUTPUT_SHAPES = [
    ("without_key_same_proj", (4, 8), (2, 8), None, None),
    ("with_key_same_proj", (4, 8), (2, 8), (2, 3), None),
    ("without_key_different_proj", (4, 8), (2, 8), None, (3, 4)),
    ("with_key_different_proj", (4, 8), (2, 8), (2, 3), (1, 5)),
    ("high_dim_same_proj", (4, 2, 3, 8), (1, 1, 5, 8), (1, 1, 5, 2), None),
    ("high_dim_different_proj", (4, 2, 3, 8), (1, 1, 5, 8), (1, 1, 5, 2), (3, 2)),
    ("different_qv_last_dims", (4, 2, 3, 8), (4, 2, 3, 7), (4, 2, 3, 8), None),
]


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "case, query_dims, value_dims, key_dims, output_shape",
    OUTPUT_SHAPES,
    ids=[c[0] for c in OUTPUT_SHAPES],
)
def test_compute_output_shape(name, case, query_dims, value_dims, key_dims, output_shape):
    skip_for(name, CROSS if len(query_dims) == 2 else AXES)
    layer = LAYERS[name](2, 2, value_dim=2, output_shape=output_shape)
    shapes = [(7,) + query_dims, (7,) + value_dims, None if key_dims is None else (7,) + key_dims]
    output = layer(*(None if s is None else np.ones(s, "float32") for s in shapes))
    assert tuple(output.shape) == layer.compute_output_shape(*shapes)
    as_lists = [None if s is None else list(s) for s in shapes]
    assert tuple(output.shape) == layer.compute_output_shape(*as_lists)


# --- test_shape_mismatch_error (3) ------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "query_shape, value_shape, key_shape",
    [
        ((2, 4, 8), (2, 2, 7), (2,)),
        ((2, 4, 8), (2, 2, 8), (2, 1, 7)),
        ((2, 4, 2, 3, 8), (2, 1, 1, 5, 8), (2, 1, 15, 5, 2)),
    ],
    ids=["query_value_dim_mismatch", "key_value_dim_mismatch", "key_value_dim_mismatch_high_dim"],
)
def test_shape_mismatch_error(name, query_shape, value_shape, key_shape):
    layer = LAYERS[name](4, 2, value_dim=2)
    with pytest.raises(ValueError, match="key of shape .* and value of shape .* must be equal"):
        layer.compute_output_shape(query_shape, value_shape, key_shape)
    with pytest.raises(ValueError, match="key of shape .* and value of shape .* must be equal"):
        layer(np.ones(query_shape), np.ones(value_shape), np.ones(key_shape))


# --- test_invalid_scalar_args_rejected (1) -----------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_invalid_scalar_args_rejected(name):
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=rf"num_heads={bad!r} is not allowed"):
            LAYERS[name](bad, 4)
        with pytest.raises(ValueError, match=rf"key_dim={bad!r} is not allowed"):
            LAYERS[name](4, bad)
        with pytest.raises(ValueError, match=rf"value_dim={bad!r} is not allowed"):
            LAYERS[name](4, 4, value_dim=bad)
    LAYERS[name](4, 4, value_dim=None)


# --- test_initializer (1) ---------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_initializer(name):
    layer = LAYERS[name](
        12, 64, use_gate=True, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02)
    )
    layer.build((2, 4, 8), (2, 4, 8))
    kernels = [
        np.array(d.kernel.numpy())
        for d in (layer.query_dense, layer.key_dense, layer.value_dense, layer.gate_dense)
    ]
    for other in kernels[1:]:
        n = min(other.shape[1], kernels[0].shape[1])
        assert not np.allclose(kernels[0][:, :n], other[:, :n])
    assert np.abs(np.array(layer.output_dense.kernel.numpy())).max() < 0.05  # TruncatedNormal(0.02)


# --- test_query_mask_propagation, test_no_warning_with_keras_mask (2) ---------------

QUERY_IDS = np.array([[1, 2, 3, 0, 0], [3, 3, 1, 1, 2], [1, 0, 0, 0, 0]])
VALUE_IDS = np.array([[5, 4, 0], [3, 0, 0], [2, 1, 1]])


@pytest.mark.parametrize("name", list(LAYERS))
def test_query_mask_propagation(name):
    layer = LAYERS[name](2, 2)
    assert layer.supports_masking
    query = keras.layers.Embedding(4, 8, mask_zero=True)(QUERY_IDS)
    value = query if name == "clipped" else normal((3, 3, 8))
    output = layer(query, value)
    np.testing.assert_array_equal(get_keras_mask(output), get_keras_mask(query))


@pytest.mark.parametrize("name", list(LAYERS))
def test_no_warning_with_keras_mask(name):
    query = keras.layers.Embedding(4, 8, mask_zero=True)(QUERY_IDS)
    value = query if name == "clipped" else keras.layers.Embedding(6, 8, mask_zero=True)(VALUE_IDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LAYERS[name](2, 2)(query, value)
    assert not [w for w in caught if "mask" in str(w.message).lower()], caught


# --- test_masking (2) -------------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "not_causal"])
def test_masking(name, causal):
    """The inputs' Keras masks (and the causal flag) mean what the same pairwise mask means."""
    skip_for(name, CROSS)
    layer = LAYERS[name](2, 2)
    query = keras.layers.Embedding(4, 8, mask_zero=True)(QUERY_IDS)
    value = keras.layers.Embedding(6, 8, mask_zero=True)(VALUE_IDS)
    automatic = np.array(layer(query, value, use_causal_mask=causal))
    mask = (QUERY_IDS != 0)[:, :, None] & (VALUE_IDS != 0)[:, None, :]
    if causal:  # key j reaches query i when j <= i, also for T != S
        mask &= np.tril(np.ones((5, 3), bool))[None]
    set_keras_mask(query, None)
    set_keras_mask(value, None)
    manual = np.array(layer(query, value, attention_mask=mask))
    np.testing.assert_allclose(automatic, manual, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_masking_with_different_shapes(name):
    """A lower triangle as `[T, S]` (float, as MultiHeadAttention casts), `[B, T, S]` and
    `[B, heads, T, S]`: one causal layer, as `use_causal_mask=True`."""
    skip_for(name, CAUSAL)
    x = normal((2, 5, 8))
    layer = LAYERS[name](2, 4)
    mask = ops.tril(ops.ones((5, 5)))
    outputs = [layer(x, x, attention_mask=mask)]
    mask = ops.tile(mask[None], (2, 1, 1))
    outputs.append(layer(x, x, attention_mask=mask))
    outputs.append(layer(x, x, attention_mask=ops.tile(mask[:, None], (1, 2, 1, 1))))
    outputs.append(layer(x, x, use_causal_mask=True))
    for output in outputs[1:]:
        np.testing.assert_allclose(outputs[0], output, atol=1e-6)


# --- test_sliding_window, _validation, _serialization (3) ---------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_sliding_window(name):
    """The weights the layer applies are inside the band |i − j| < 3 (and j <= i) only."""
    if name == "clipped":
        with pytest.raises(ValueError, match="sliding_window is not allowed"):
            ClippedRelativeAttention(2, 4, sliding_window=3)
        return
    layer = LAYERS[name](2, 4, sliding_window=3)
    x = normal((1, 6, 8))
    offsets = np.arange(6)[:, None] - np.arange(6)[None, :]
    for causal, band in ((True, (offsets >= 0) & (offsets < 3)), (False, np.abs(offsets) < 3)):
        _, scores = layer(x, x, use_causal_mask=causal, return_attention_scores=True)
        scores = np.array(scores)[0]
        assert (scores[:, band] > 0).all() and (scores[:, ~band] == 0).all()


@pytest.mark.parametrize("name", list(LAYERS))
def test_sliding_window_validation(name):
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"sliding_window={bad} is not allowed"):
            LAYERS[name](2, 4, sliding_window=bad)


@pytest.mark.parametrize("name", ["favor", "relative"])
def test_sliding_window_serialization(name):
    layer = LAYERS[name](2, 4, sliding_window=5)
    config = layer.get_config()
    assert config["sliding_window"] == 5
    assert type(layer).from_config(config).sliding_window == 5


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("feature_map", ["exact", "softmax"])
def test_sliding_window_equals_the_banded_mask(causal, feature_map):
    """Linear-time band vs the same layer with the band as a dense mask: FAVOR+ features
    computed quadratically, and MultiHeadAttention itself for `exact`; T = 37, w = 4."""
    mha = keras.layers.MultiHeadAttention(2, 4, sliding_window=4)
    x = normal((2, 37, 8))
    expected = np.array(mha(x, x, use_causal_mask=causal))
    layer = FavorAttention.from_multi_head_attention(mha, feature_map=feature_map, nb_features=8)
    out, weights = layer(x, x, use_causal_mask=causal, return_attention_scores=True)
    v = np.array(layer.value_dense(x)).reshape(2, 37, 2, 4).transpose(0, 2, 1, 3)
    heads = np.einsum("bhij,bhjd->bhid", np.array(weights, "float64"), v)
    merged = heads.transpose(0, 2, 1, 3).reshape(2, 37, 8)
    dense = merged @ np.array(layer.output_dense.kernel.numpy()) + np.array(
        layer.output_dense.bias.numpy()
    )
    np.testing.assert_allclose(out, dense, atol=1e-5)
    if feature_map == "exact":
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sliding_window_with_the_relative_factor_is_the_banded_quadratic_sum():
    """The linear-time band times exp(P(i − j)) against the quadratic weights of the same
    layer (band as a dense mask, factor as a dense table); a band wider than the sequence is
    the layer without one."""
    keras.utils.set_random_seed(4)
    x = normal((1, 29, 8))
    for feature_map in ("exact", "softmax"):
        banded = RelativeFavorAttention(2, 4, sliding_window=5, feature_map=feature_map)
        out, weights = banded(x, x, use_causal_mask=True, return_attention_scores=True)
        offsets = np.arange(29)[:, None] - np.arange(29)[None, :]
        weights = np.array(weights, "float64")
        assert (weights[..., (offsets < 0) | (offsets >= 5)] == 0).all()
        v = np.array(banded.value_dense(x)).reshape(1, 29, 2, 4).transpose(0, 2, 1, 3)
        heads = np.einsum("bhij,bhjd->bhid", weights, v).transpose(0, 2, 1, 3).reshape(1, 29, 8)
        dense = heads @ np.array(banded.output_dense.kernel.numpy()) + np.array(
            banded.output_dense.bias.numpy()
        )
        np.testing.assert_allclose(out, dense, atol=1e-5)
        wide = RelativeFavorAttention(2, 4, sliding_window=40, feature_map=feature_map)
        wide(x, x)
        wide.set_weights(banded.get_weights())
        full = RelativeFavorAttention(2, 4, feature_map=feature_map)
        full(x, x)
        full.set_weights(banded.get_weights())
        np.testing.assert_allclose(
            wide(x, x, use_causal_mask=True), full(x, x, use_causal_mask=True), atol=1e-5
        )
    with pytest.raises(ValueError, match="circular"):
        RelativeFavorAttention(2, 4, sliding_window=5, position_kernel="circular")


# --- causal cases (MultiHeadAttention's fused kernel and _compute_attention) ---------


@pytest.mark.parametrize("name", list(LAYERS))
def test_causal_only_fast_path(name):
    skip_for(name, CAUSAL)
    layer = LAYERS[name](2, 4)
    x = normal((2, 5, 8))
    causal = np.tril(np.ones((1, 5, 5), bool))
    np.testing.assert_allclose(
        layer(x, x, use_causal_mask=True), layer(x, x, attention_mask=causal), atol=1e-5
    )


@pytest.mark.parametrize("name", list(LAYERS))
def test_causal_only_skipped_for_subclass_counterpart(name):
    """MultiHeadAttention's case checks that a subclass overriding `_compute_attention` still
    gets a mask. Ours have no such override point; what they promise instead: a subclass
    (the relative layers subclass FavorAttention) applies the causal mask it is given, so no
    output depends on a later token."""
    skip_for(name, CAUSAL)
    layer = LAYERS[name](2, 4)
    x = normal((2, 9, 8))
    changed = x.copy()
    changed[:, 6:] = normal((2, 3, 8), 5)
    np.testing.assert_allclose(
        np.array(layer(x, x, use_causal_mask=True))[:, :6],
        np.array(layer(changed, changed, use_causal_mask=True))[:, :6],
        atol=1e-5,
    )


@pytest.mark.parametrize("name", list(LAYERS))
def test_causal_only_with_other_mask_falls_back_counterpart(name):
    """A mask with one hole cannot be applied in linear time: one clear error, never ignored.
    A padding mask with the causal flag is the merged mask."""
    skip_for(name, CAUSAL)
    layer = LAYERS[name](2, 4)
    x = normal((2, 5, 8))
    extra = np.ones((2, 5, 5), bool)
    extra[:, 3, 1] = False  # below the diagonal: the triangle keeps the hole
    with pytest.raises(ValueError, match="does not factorise"):
        layer(x, x, attention_mask=extra & np.tril(np.ones((5, 5), bool)))
    padding = np.ones((2, 5), bool)
    padding[1, -2:] = False
    extra = padding[:, :, None] & padding[:, None, :]
    merged = extra & np.tril(np.ones((5, 5), bool))
    out1 = layer(x, x, attention_mask=extra, use_causal_mask=True)
    np.testing.assert_allclose(out1, layer(x, x, attention_mask=merged), atol=1e-5)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(
    "dropout, scores",
    [(0.0, True), (0.1, False), (0.1, True)],
    ids=["scores_only", "dropout_only", "dropout_and_scores"],
)
def test_causal_only_masks_when_fused_path_disabled(name, dropout, scores):
    skip_for(name, CAUSAL)
    future = np.triu(np.ones((6, 6), bool), k=1)
    x = normal((1, 6, 8))
    layer = LAYERS[name](2, 4, dropout=dropout)
    if scores:
        _, weights = layer(x, x, use_causal_mask=True, return_attention_scores=True)
        assert np.array(weights)[..., future].sum() < 1e-6
    else:
        np.testing.assert_allclose(
            layer(x, x, use_causal_mask=True),
            layer(x, x, attention_mask=~future[None]),
            atol=1e-5,
        )


@pytest.mark.parametrize("name", list(LAYERS))
def test_causal_only_masks_non_4d_inputs(name):
    """Causal attention over axis 1 of a `[batch, 5, 3, dim]` input (axis 2: batch)."""
    skip_for(name, CAUSAL)
    future = np.triu(np.ones((5, 5), bool), k=1)
    x = normal((1, 5, 3, 8))
    layer = LAYERS[name](2, 4, attention_axes=1)
    _, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    assert scores.shape == (1, 3, 2, 5, 5)
    assert np.array(scores)[..., future].sum() < 1e-6


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("scores", [False, True], ids=["fused_fallback", "manual_path"])
def test_compute_attention_combines_causal_and_explicit_mask_counterpart(name, scores):
    """MultiHeadAttention's `_compute_attention(attention_mask=…, use_causal_mask=True)`
    internals have no counterpart here; the promise they protect does: the causal flag and an
    explicit (padding) mask both hold, in outputs and in the weights."""
    skip_for(name, CAUSAL)
    layer = LAYERS[name](2, 4)
    x = normal((1, 5, 8))
    keys = np.array([[True, False, True, True, True]])
    extra = np.broadcast_to(keys[:, None, :], (1, 5, 5))
    merged = extra & np.tril(np.ones((5, 5), bool))[None]
    both = layer(x, x, attention_mask=extra, use_causal_mask=True, return_attention_scores=scores)
    once = layer(x, x, attention_mask=merged, return_attention_scores=scores)
    for a, b in zip(keras.tree.flatten(both), keras.tree.flatten(once)):
        np.testing.assert_allclose(a, b, atol=1e-5)


# --- test_correctness (2) ---------------------------------------------------------


def identity_attention(dtype, **options):
    """MultiHeadAttention's correctness setup (identity projections, float16), and ours with
    the same weights."""
    key_dim = 8
    query = np.identity(key_dim)[None]
    value = np.arange(key_dim * key_dim).reshape(1, key_dim, key_dim) / 100.0
    mha = keras.layers.MultiHeadAttention(num_heads=8, key_dim=key_dim, dtype=dtype)
    mha.build(query.shape, value.shape, query.shape)
    kernel = np.repeat(np.identity(key_dim)[:, None], 8, axis=1)
    mha.set_weights([kernel, np.zeros((8, key_dim))] * 3 + [kernel, np.zeros(key_dim)])
    return mha, FavorAttention.from_multi_head_attention(mha, **options), query, value


@pytest.mark.parametrize(
    "flash", [False, True], ids=["disable_flash_attention", "enable_flash_attention"]
)
def test_correctness(flash):
    """The exact kernel gives MultiHeadAttention's numbers (with or without its flash kernel:
    ours has none), under float16."""
    mha, layer, query, value = identity_attention("float16", feature_map="exact")
    expected = np.tile(
        np.array([2.406, 2.440, 2.473, 2.504, 2.535, 2.568, 2.602, 2.633])[None, :, None], (1, 1, 8)
    )
    output, scores = layer(query, value, query, return_attention_scores=True)
    np.testing.assert_allclose(np.array(output, "float32"), expected, atol=1e-2)
    np.testing.assert_allclose(output, mha(query, value, query), atol=1e-2)
    diagonal = np.where(np.identity(8, bool), 0.1691, 0.1187)
    np.testing.assert_allclose(
        np.array(scores, "float32"), np.tile(diagonal, (1, 8, 1, 1)), atol=1e-2
    )


def test_favor_estimate_approaches_multi_head_attention_as_features_grow():
    """FAVOR+'s error against MultiHeadAttention falls with m (statistically: over seeds)."""
    mha = keras.layers.MultiHeadAttention(2, 4)
    x = normal((2, 16, 8), 3) * 0.5
    expected = np.array(mha(x, x))
    errors = {}
    for features in (4, 256):
        errors[features] = np.mean(
            [
                np.abs(
                    np.array(
                        FavorAttention.from_multi_head_attention(mha, nb_features=features, seed=s)(
                            x, x
                        )
                    )
                    - expected
                ).mean()
                for s in range(4)
            ]
        )
    assert errors[256] * 3 < errors[4], errors


# --- test_mha_constraints (1) -----------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_mha_constraints(name):
    for argument, attribute in (("kernel_constraint", "kernel"), ("bias_constraint", "bias")):
        layer = LAYERS[name](2, 2, use_gate=True, **{argument: "non_neg"})
        layer.build((1, 2, 2), (1, 2, 2))
        for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.gate_dense):
            assert isinstance(getattr(dense, attribute).constraint, keras.constraints.NonNeg)


# --- test_lora (1) ----------------------------------------------------------------


# The last load puts the uncompiled plain model's weights (no optimizer state) into the
# trained LoRA model, as Keras' own test does; Keras says it skips the optimizer's state.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("name", list(LAYERS))
def test_lora(tmp_path, name):
    if keras.backend.backend() == "numpy":  # pragma: no cover
        pytest.skip("no training")
    x = {"query": normal((1, 2, 2)), "key": normal((1, 2, 2), 1), "value": normal((1, 2, 2), 2)}
    y = normal((1, 2, 2), 3)

    heads = 4 if name == "clipped" else 3  # the clipped layer splits its heads in two halves

    def model(lora):
        layer = LAYERS[name](heads, 8, use_bias=False, use_gate=True)
        inputs = {k: keras.Input((2, 2), name=k) for k in ("query", "key", "value")}
        outputs = layer(inputs["query"], inputs["value"], inputs["key"])
        if lora:
            for dense in (layer.query_dense, layer.key_dense, layer.value_dense):
                dense.enable_lora(2)
        return keras.Model(inputs, outputs), layer

    lora_model, layer = model(True)
    extra = EXTRA_TRAINABLE[name]
    assert len(layer.trainable_variables) == 8 + extra
    assert len(layer.non_trainable_variables) == 3 + 2  # frozen q, k, v; W and its step
    lora_model.compile(optimizer="sgd", loss="mse")
    lora_model.fit(x, y, verbose=0)
    path = str(tmp_path / "lora_model.keras")
    lora_model.save(path)
    np.testing.assert_allclose(
        lora_model.predict(x, verbose=0),
        keras.saving.load_model(path).predict(x, verbose=0),
        atol=1e-6,
    )
    weights = str(tmp_path / "lora_model.weights.h5")
    lora_model.save_weights(weights)
    plain_model, _ = model(False)
    plain_model.load_weights(weights)
    np.testing.assert_allclose(
        lora_model.predict(x, verbose=0), plain_model.predict(x, verbose=0), atol=1e-6
    )
    plain_model.save_weights(weights)
    lora_model.load_weights(weights)
    np.testing.assert_allclose(
        lora_model.predict(x, verbose=0), plain_model.predict(x, verbose=0), atol=1e-6
    )


# --- test_symbolic_return_attention_scores (2) -------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("shape", [(1, 2, 3), (2, 3, 5)])
def test_symbolic_return_attention_scores(name, shape):
    layer = LAYERS[name](4, 2)
    symbolic = layer(
        keras.Input(batch_shape=shape), keras.Input(batch_shape=shape), return_attention_scores=True
    )
    eager = layer(normal(shape), normal(shape, 1), return_attention_scores=True)
    assert len(symbolic) == len(eager) == 2
    assert [tuple(s.shape) for s in symbolic] == [tuple(e.shape) for e in eager]


# --- test_dtype_policy_map, test_quantize_int8 (2) ---------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_dtype_policy_map(name):
    quantized = keras.dtype_policies.QuantizedDTypePolicy("int8", "float32")
    policy_map = keras.dtype_policies.DTypePolicyMap()
    for sublayer in ("query", "key", "value"):
        policy_map[f"mha/{sublayer}"] = quantized
    layer = LAYERS[name](4, 8, use_bias=False, dtype=policy_map, name="mha")
    layer.build((1, 2, 2), (1, 2, 2), (1, 2, 2))
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense):
        assert keras.backend.standardize_dtype(dense._kernel.dtype) == "int8"


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("use_gate", [False, True])
def test_quantize_int8(name, use_gate):
    keras.utils.set_random_seed(1347)
    query, key, value = normal((1, 2, 2)), normal((1, 2, 2), 1), normal((1, 2, 2), 2)
    layer = LAYERS[name](4, 8, use_bias=False, use_gate=use_gate)
    layer.build(query.shape, value.shape, key.shape)
    before = np.array(layer(query, value, key))
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense) + (
        (layer.gate_dense,) if use_gate else ()
    ):
        dense.quantize("int8")
        assert keras.backend.standardize_dtype(dense._kernel.dtype) == "int8"
    after = np.array(layer(query, value, key))
    assert np.mean(np.square(before - after)) < 1e-2


# --- output_shape (3) -------------------------------------------------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_output_shape_as_int_and_tuple(name):
    query = normal((2, 4, 16))
    value = query if name == "clipped" else normal((2, 4, 16), 1)
    assert LAYERS[name](2, 16, output_shape=8)(query, value).shape == (2, 4, 8)
    assert LAYERS[name](2, 16, output_shape=(8, 8))(query, value).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("name", list(LAYERS))
def test_output_shape_error(name):
    for bad in (8.0, (8, 0), "8"):
        with pytest.raises(ValueError, match="output_shape=.* is not allowed"):
            LAYERS[name](2, 16, output_shape=bad)


# --- beyond Keras' file: seeds, weights from MultiHeadAttention ----------------------


@pytest.mark.parametrize("name", list(LAYERS))
def test_seeds_the_keras_way(tmp_path, name):
    """seed=None: two layers built alike draw different W; `set_random_seed` repeats the
    draws; the config keeps the drawn seed, so a reloaded layer has the same W."""
    x = normal((1, 6, 8))

    def draws():
        first, second = LAYERS[name](2, 4, nb_features=4), LAYERS[name](2, 4, nb_features=4)
        first(x, x), second(x, x)
        return first, second

    keras.utils.set_random_seed(11)
    first, second = draws()
    assert first.seed != second.seed
    assert not np.allclose(first.favor.projection, second.favor.projection)
    keras.utils.set_random_seed(11)
    again, _ = draws()
    assert again.seed == first.seed
    np.testing.assert_array_equal(again.favor.projection, first.favor.projection)
    clone = type(first).from_config(first.get_config())
    clone(x, x)
    np.testing.assert_array_equal(clone.favor.projection, first.favor.projection)
    explicit = LAYERS[name](2, 4, nb_features=4, seed=7)
    assert explicit.seed == 7 and explicit.get_config()["seed"] == 7


def test_weights_of_a_trained_multi_head_attention_model_port_to_exact_favor():
    """A functional model trained with MultiHeadAttention, its attention swapped by
    `clone_model` + `from_multi_head_attention(feature_map="exact")`: the same outputs."""
    inputs = keras.Input((10, 8))
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(attended))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    x, y = normal((16, 10, 8)), normal((16, 3), 1)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)

    def swap(layer):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return FavorAttention.from_multi_head_attention(layer, feature_map="exact")
        return layer

    swapped = keras.models.clone_model(model, clone_function=swap)
    assert isinstance(swapped.get_layer("mha"), FavorAttention)
    np.testing.assert_allclose(
        swapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    with pytest.raises(ValueError, match="cannot take"):
        ClippedRelativeAttention.from_multi_head_attention(
            model.get_layer("mha"), class_token=False
        )
