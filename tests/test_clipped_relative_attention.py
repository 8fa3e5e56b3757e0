"""Strategy 2: the linear-time window decomposition against brute force."""

import numpy as np
import pytest

from relperf_tf.layers import ClippedRelativeAttention
from relperf_tf.layers.clipped_relative_attention import ring_sums
from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends


def brute_force_relative(query, value, embeddings, height, width, clip, class_token):
    """O(N²) reference: out_i = Σ_j exp(q_i·r_d(i,j)/√d) v_j / Σ_j exp(q_i·r_d(i,j)/√d)."""
    rows, cols = np.divmod(np.arange(height * width), width)
    dist = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    dist = np.minimum(dist, clip)
    if class_token:
        n = height * width + 1
        full = np.full((n, n), clip)
        full[:-1, :-1] = dist
        dist = full
    r = embeddings[:, dist]  # [h, n, n, d]
    scores = np.einsum("bhnd,hnkd->bhnk", query, r) / np.sqrt(query.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhnk,bhkd->bhnd", weights, value)


@pytest.mark.parametrize("clip", [1, 3, 8])
def test_linear_time_equals_brute_force_on_non_square_grid(clip):
    height, width, heads, dim = 5, 7, 4, 16
    layer = ClippedRelativeAttention(heads, grid_shape=(height, width), clipping_dist=clip)
    layer.build((None, height * width + 1, dim))
    rng = np.random.default_rng(clip)
    query, value = (
        rng.normal(size=(2, 2, height * width + 1, 4)).astype("float32") for _ in range(2)
    )
    fast = np.array(layer.relative_heads(query, value))
    slow = brute_force_relative(
        query, value, np.array(layer.relative_embeddings.numpy()), height, width, clip, True
    )
    np.testing.assert_allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("clip", [1, 2, 5])
def test_ring_sums_equal_manhattan_rings(clip):
    """R_d(i) = Σ of v over tokens at Manhattan distance exactly d, on a 4×6 grid."""
    height, width = 4, 6
    value = np.random.default_rng(clip).normal(size=(1, 1, height * width + 1, 3)).astype("float32")
    rows, cols = np.divmod(np.arange(height * width), width)
    dist = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    rings = ring_sums(value, (height, width), clip)
    assert len(rings) == clip
    for d, ring in enumerate(rings):
        expected = np.einsum("nk,kc->nc", (dist == d).astype("float32"), value[0, 0, :-1])
        np.testing.assert_allclose(np.array(ring)[0, 0, :-1], expected, atol=1e-5)
        np.testing.assert_array_equal(
            np.array(ring)[0, 0, -1], 0.0
        )  # the class token is in no ring


@pytest.mark.parametrize("query_index", [0, 17, 35])
def test_one_query_equals_its_row_of_the_full_output(query_index):
    """query_index (a grid token's window, or the last, class token) = the full computation."""
    height, width, heads, dim = 5, 7, 4, 16
    layer = ClippedRelativeAttention(heads, grid_shape=(height, width), clipping_dist=3)
    layer.build((None, height * width + 1, dim))
    rng = np.random.default_rng(query_index)
    query, value = (
        rng.normal(size=(2, 2, height * width + 1, 4)).astype("float32") for _ in range(2)
    )
    full = np.array(layer.relative_heads(query, value))
    one = np.array(
        layer.relative_heads(query[:, :, query_index : query_index + 1], value, query_index)
    )
    np.testing.assert_allclose(one[:, :, 0], full[:, :, query_index], atol=1e-5)


def test_translation_equivariance_away_from_borders():
    """Content moved by (1, −2) on a 9×9 grid moves the output with it."""
    height = width = 9
    layer = ClippedRelativeAttention(
        2, grid_shape=(height, width), clipping_dist=2, feature_map="exact"
    )
    rng = np.random.default_rng(4)
    grid = np.zeros((1, height, width, 8), "float32")
    grid[0, 3:6, 3:6] = rng.normal(size=(3, 3, 8))
    cls = rng.normal(size=(1, 1, 8)).astype("float32")
    moved = np.roll(grid, (1, -2), axis=(1, 2))

    def run(g):
        out = np.array(layer(np.concatenate([g.reshape(1, -1, 8), cls], axis=1)))
        return out[0, :-1].reshape(height, width, 8), out[0, -1]

    base, base_cls = run(grid)
    shifted, shifted_cls = run(moved)
    inner = np.s_[2:6, 3:5]  # windows of radius 1 stay inside the grid before and after
    np.testing.assert_allclose(
        np.roll(base, (1, -2), axis=(0, 1))[inner], shifted[inner], atol=1e-5
    )
    np.testing.assert_allclose(base_cls, shifted_cls, atol=1e-5)


def test_clipped_layer(tmp_path):
    x = np.random.default_rng(5).normal(size=(2, 13, 8)).astype("float32")
    run_layer_test(
        tmp_path,
        lambda **kw: ClippedRelativeAttention(
            2, grid_shape=(3, 4), clipping_dist=2, nb_features=8, **kw
        ),
        [x],
        (2, 13, 8),
        expected_trainable_weights=9,  # q, k, v, output (kernel, bias); the relative embeddings
        expected_non_trainable_weights=2,  # W and the redraw step
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="clipping_dist=0"):
        ClippedRelativeAttention(2, grid_shape=(3, 3), clipping_dist=0)
    with pytest.raises(ValueError, match="heads=3"):
        ClippedRelativeAttention(3, grid_shape=(3, 3))
