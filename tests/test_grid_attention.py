"""Exact positional factor on a grid: brute force, equivalence with strategy 1, equivariance."""

import keras
import numpy as np
import pytest

from relperf_tf.layers import (
    FavorKernel,
    GridRelativeAttention,
    LearnableSinusoidEncoding,
    RelativeFavorAttention,
)
from relperf_tf.layers.grid_attention import grid_linear_attention, relative_offsets
from relperf_tf.layers.grid_positions import grid_coordinates
from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends

HEIGHT, WIDTH = 5, 7  # not square


def numpy_grid_attention(query_features, key_features, value, row_logits, col_logits):
    """O(N²) reference: A_ij = exp(P_row[r_i, r_j] + P_col[c_i, c_j]) φ(q_i)·φ(k_j)."""
    tokens = query_features.shape[2]
    class_token = tokens == HEIGHT * WIDTH + 1
    rows, cols = np.divmod(np.arange(HEIGHT * WIDTH), WIDTH)
    logits = row_logits[:, rows][:, :, rows] + col_logits[:, cols][:, :, cols]  # [h, N, N]
    if class_token:
        logits = np.pad(logits, ((0, 0), (1, 0), (1, 0)))
    weights = np.einsum("bhim,bhjm->bhij", query_features, key_features) * np.exp(logits)[None]
    return np.einsum("bhij,bhjd->bhid", weights, value) / weights.sum(-1, keepdims=True)


def offset_encodings(num_scales=3, circular=False):
    encoding = LearnableSinusoidEncoding(num_scales, 2.0 * max(HEIGHT, WIDTH))
    return [encoding(relative_offsets(n, circular)[..., None]) for n in (HEIGHT, WIDTH)]


def test_relative_offsets():
    np.testing.assert_array_equal(relative_offsets(3), [[0, -1, -2], [1, 0, -1], [2, 1, 0]])
    circular = relative_offsets(4, circular=True)
    np.testing.assert_array_equal(circular[0], [0, -1, -2, 1])  # in [−2, 2)
    np.testing.assert_array_equal(circular[3], [-1, -2, 1, 0])


@pytest.mark.parametrize("class_token", [False, True])
def test_grid_product_equals_brute_force(class_token):
    """Large logits too: the per-row rescaling must not change the result."""
    rng = np.random.default_rng(0)
    tokens = HEIGHT * WIDTH + int(class_token)
    query_features, key_features = (
        rng.random((2, 3, tokens, 6)).astype("float32") + 0.1 for _ in range(2)
    )
    value = rng.normal(size=(2, 3, tokens, 4)).astype("float32")
    row_logits = (rng.normal(size=(3, HEIGHT, HEIGHT)) * 30).astype("float32")
    col_logits = (rng.normal(size=(3, WIDTH, WIDTH)) * 30).astype("float32")
    fast = grid_linear_attention(query_features, key_features, value, row_logits, col_logits)
    expected = numpy_grid_attention(
        *(
            x.astype("float64")
            for x in (query_features, key_features, value, row_logits, col_logits)
        )
    )
    np.testing.assert_allclose(fast, expected, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(feature_map="relu"), dict(feature_map="efficient"), dict(feature_map="exact")],
)
def test_kernel_with_position_factor_equals_brute_force(options):
    """Every kernel option: the layer's linear-time output = the O(N²) sum with its own φ."""
    rng = np.random.default_rng(1)
    tokens = HEIGHT * WIDTH + 1
    query, key = (rng.normal(size=(2, 2, tokens, 8)).astype("float32") * 0.5 for _ in range(2))
    value = rng.normal(size=(2, 2, tokens, 4)).astype("float32")
    logits = [rng.normal(size=(2, n, n)).astype("float32") for n in (HEIGHT, WIDTH)]
    kernel = FavorKernel(nb_features=16, seed=3, **options)
    out = kernel(query, key, value, position_logits=logits)
    if kernel.is_exact:
        scores = np.einsum("bhid,bhjd->bhij", query, key) / np.sqrt(8.0)
        rows, cols = np.divmod(np.arange(HEIGHT * WIDTH), WIDTH)
        bias = logits[0][:, rows][:, :, rows] + logits[1][:, cols][:, :, cols]
        scores = scores + np.pad(bias, ((0, 0), (1, 0), (1, 0)))[None]
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected = np.einsum("bhij,bhjd->bhid", weights / weights.sum(-1, keepdims=True), value)
    else:
        projection = (
            None if not kernel.uses_projection else keras.ops.convert_to_tensor(kernel.projection)
        )
        query_features = np.array(kernel.features(query, True, projection), "float64")
        key_features = np.array(kernel.features(key, False, projection), "float64")
        expected = numpy_grid_attention(query_features, key_features, value, *logits)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_exact_factor_with_exact_kernel_is_strategy_one():
    """Same weights: grid offsets + exact kernel = RelativeFavorAttention with the exact kernel.

    Checks that the factor uses strategy 1's α, β, pairs and 1/√d scaling.
    """
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(2, HEIGHT * WIDTH + 1, 16)).astype("float32")
    encoding = LearnableSinusoidEncoding(3, 14.0)
    grid = GridRelativeAttention(2, feature_map="exact")
    offsets = [encoding(relative_offsets(n)[..., None]) for n in (HEIGHT, WIDTH)]
    out = grid(inputs, positions=offsets)
    strategy_one = RelativeFavorAttention(
        2, feature_map="exact", position_kernel="favor", pos_scales=None
    )
    positions = np.pad(np.array(encoding(grid_coordinates(HEIGHT, WIDTH))), ((1, 0), (0, 0)))
    strategy_one.build(inputs.shape, positions_shape=positions.shape)
    strategy_one.set_weights(grid.get_weights())
    np.testing.assert_allclose(out, strategy_one(inputs, positions=positions), atol=1e-5)


def place_pair(content_a, content_b, position, offset, background):
    """A grid of `background` tokens with content a at `position` and b at position + offset."""
    tokens = np.repeat(background[None], HEIGHT * WIDTH + 1, axis=0)
    i = 1 + position[0] * WIDTH + position[1]
    j = 1 + (position[0] + offset[0]) * WIDTH + position[1] + offset[1]
    tokens[i], tokens[j] = content_a, content_b
    return tokens, i, j


def pair_weights_at(layer, positions_of, placements, offset):
    """A_ij between the same two contents placed at several positions, same offset: [placements,
    heads]."""
    rng = np.random.default_rng(4)
    content_a, content_b, background = rng.normal(size=(3, 16)).astype("float32")
    weights = []
    for position in placements:
        tokens, i, j = place_pair(content_a, content_b, position, offset, background)
        all_weights = np.array(layer.pair_weights(tokens[None], positions_of(tokens)), "float64")
        weights.append(all_weights[0, :, i, j])
    return np.array(weights)


PLACEMENTS = [(0, 0), (1, 2), (2, 4), (3, 1)]
OFFSET = (1, 2)


def test_exact_factor_is_equivariant_for_a_fixed_draw():
    """m = 16, one stored draw, no redraw: the weight depends on contents and offset only."""
    keras.utils.set_random_seed(0)
    offsets = offset_encodings()
    layer = GridRelativeAttention(2, nb_features=16, feature_redraw_interval=0, eps=0.0)
    weights = pair_weights_at(layer, lambda tokens: offsets, PLACEMENTS, OFFSET)
    np.testing.assert_allclose(weights, np.broadcast_to(weights[0], weights.shape), rtol=1e-5)


def test_strategy_one_with_favor_is_not_equivariant_for_a_fixed_draw():
    """The same check fails for the paper's path: φ([q; e(p_i)R])·φ([k; e(p_j)]) depends on p_i +
    p_j."""
    keras.utils.set_random_seed(0)
    encoding = LearnableSinusoidEncoding(3, 14.0)
    positions = np.pad(np.array(encoding(grid_coordinates(HEIGHT, WIDTH))), ((1, 0), (0, 0)))
    layer = RelativeFavorAttention(
        2,
        nb_features=16,
        feature_redraw_interval=0,
        eps=0.0,
        position_kernel="favor",
        pos_scales=None,
    )
    weights = pair_weights_at(layer, lambda tokens: positions, PLACEMENTS, OFFSET)
    spread = np.abs(weights / weights[0] - 1.0).max()
    print(f"strategy 1 with FAVOR+ (m = 16): weights at one offset differ by up to {spread:.1%}")
    assert spread > 0.05
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(weights, np.broadcast_to(weights[0], weights.shape), rtol=1e-5)


def test_circular_factor_moves_outputs_with_cyclic_shifts():
    """Circular offsets: rolling the grid rolls every output exactly (class token unchanged)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    offsets = offset_encodings(circular=True)
    layer = GridRelativeAttention(2, nb_features=16)
    grid = rng.normal(size=(2, HEIGHT, WIDTH, 16)).astype("float32")
    class_token = rng.normal(size=(2, 1, 16)).astype("float32")

    def run(g):
        return np.array(
            layer(np.concatenate([class_token, g.reshape(2, -1, 16)], axis=1), positions=offsets)
        )

    base = run(grid)
    for shift in [(1, 0), (0, 3), (2, -3)]:
        moved = run(np.roll(grid, shift, axis=(1, 2)))
        np.testing.assert_allclose(moved[:, 0], base[:, 0], atol=1e-5)
        expected = np.roll(base[:, 1:].reshape(2, HEIGHT, WIDTH, 16), shift, axis=(1, 2))
        np.testing.assert_allclose(moved[:, 1:].reshape(2, HEIGHT, WIDTH, 16), expected, atol=1e-5)


def test_content_rel_attn_is_rejected_naming_both_options():
    with pytest.raises(ValueError, match="content_rel_attn=True.*position_kernel"):
        GridRelativeAttention(2, content_rel_attn=True)


def test_grid_relative_attention_layer(tmp_path):
    rng = np.random.default_rng(6)
    inputs = rng.normal(size=(2, HEIGHT * WIDTH + 1, 16)).astype("float32")
    offsets = [np.array(x) for x in offset_encodings()]
    run_layer_test(
        tmp_path,
        lambda **kw: GridRelativeAttention(2, nb_features=8, **kw),
        [inputs],
        (2, HEIGHT * WIDTH + 1, 16),
        keyword_inputs=dict(positions=offsets),
        expected_trainable_weights=10,  # q, k, v, output (kernel, bias); α, β
        expected_non_trainable_weights=2,
    )
