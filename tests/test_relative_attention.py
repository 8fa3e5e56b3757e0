"""Strategy 1: relative positions through rotated sinusoid features."""

import keras
import numpy as np
import pytest

from relperf_tf.layers import FavorAttention, LearnableSinusoidEncoding, RelativeFavorAttention
from relperf_tf.layers.grid_positions import grid_coordinates
from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends

OFFSET = np.array([3.0, -5.0], "float32")  # +3 rows, −5 cols


def setup(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 12, 16)).astype("float32")
    coords = grid_coordinates(3, 4)
    encoding = LearnableSinusoidEncoding(num_scales=3, max_timescale=8.0)
    return x, coords, encoding


def test_sinusoid_encoding_values():
    encoding = LearnableSinusoidEncoding(num_scales=2, max_timescale=16.0)
    out = np.array(encoding(np.array([[2.0, 5.0]], "float32")))
    freqs = np.array([1.0, 16.0**-0.5])
    expected = []
    for p in (2.0, 5.0):
        for w in freqs:
            expected += [np.sin(w * p), np.cos(w * p)]
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_relative_query_key_products_depend_only_on_differences():
    """Exact kernel (FAVOR+'s m → ∞ limit): output unchanged under a translation."""
    x, coords, encoding = setup()
    for content_rel_attn in (False, True):
        layer = RelativeFavorAttention(
            2,
            content_rel_attn=content_rel_attn,
            feature_map="exact",
            position_kernel="favor",
            pos_scales=None,
        )
        base = np.array(layer(x, positions=encoding(coords)))
        moved = np.array(layer(x, positions=encoding(coords + OFFSET)))
        np.testing.assert_allclose(moved, base, atol=1e-5)


def test_absolute_encoding_is_not_equivariant():
    x, coords, _ = setup()
    encoding = LearnableSinusoidEncoding(num_scales=4, max_timescale=32000.0)
    layer = FavorAttention(2, feature_map="exact")
    base = np.array(layer(keras.ops.add(x, encoding(coords))))
    moved = np.array(layer(keras.ops.add(x, encoding(coords + OFFSET))))
    assert np.abs(moved - base).max() > 1e-2


def test_favor_features_are_equivariant_up_to_estimator_noise():
    """With a finite draw φ(q)·φ(k) depends on q + k, so equivariance holds in
    expectation; the deviation shrinks as the number of features grows."""
    x, coords, encoding = setup()
    deviations = {}
    for m in (8, 16384):
        deviation = []
        for seed in range(4):
            keras.utils.set_random_seed(0)  # same dense weights, α, β for every m
            layer = RelativeFavorAttention(
                2, nb_features=m, eps=0.0, seed=seed, position_kernel="favor", pos_scales=None
            )
            base = np.array(layer(x, positions=encoding(coords)))
            moved = np.array(layer(x, positions=encoding(coords + OFFSET)))
            deviation.append(np.abs(moved - base).mean())
        deviations[m] = np.mean(deviation)
    print("relative FAVOR+ translation deviation by m:", deviations)
    assert deviations[16384] * 2 < deviations[8]


def test_class_token_without_position_sees_positions_only_through_content():
    """Zero positional features: the token's query carries no positional part."""
    x, coords, encoding = setup()
    layer = RelativeFavorAttention(2, feature_map="exact", position_kernel="favor", pos_scales=None)
    positions = np.array(encoding(coords))
    positions[0] = 0.0
    moved = np.array(encoding(coords + OFFSET))
    moved[0] = 0.0
    np.testing.assert_allclose(layer(x, positions=moved), layer(x, positions=positions), atol=1e-5)


@pytest.mark.parametrize("content_rel_attn", [False, True])
def test_relative_attention_layer(tmp_path, content_rel_attn):
    x, coords, encoding = setup()
    positions = np.broadcast_to(np.array(encoding(coords)), (2, 12, 12)).copy()
    run_layer_test(
        tmp_path,
        lambda **kw: RelativeFavorAttention(
            2,
            content_rel_attn=content_rel_attn,
            nb_features=8,
            position_kernel="favor",
            pos_scales=None,
            **kw,
        ),
        [x],
        (2, 12, 16),
        keyword_inputs=dict(positions=positions),
        # q, k, v, output (kernel, bias); α, β; the content rotation's Dense.
        expected_trainable_weights=12 if content_rel_attn else 10,
        expected_non_trainable_weights=2,
    )


def test_sinusoid_encoding_layer(tmp_path):
    run_layer_test(
        tmp_path,
        lambda **kw: LearnableSinusoidEncoding(3, 8.0, **kw),
        [grid_coordinates(2, 3)],
        (6, 12),
        expected_trainable_weights=1,  # the frequencies
    )


def test_bad_pos_scales():
    with pytest.raises(ValueError, match="pos_scales=0"):
        LearnableSinusoidEncoding(0)
