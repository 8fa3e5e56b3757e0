"""The numbers behind relperf-inspect's pictures: positional kernels over offsets are the
factors the forward pass applies, attention maps are its weights (NumPy brute force)."""

import numpy as np
import pytest
from keras import ops

from relperf_tf.layers.grid_attention import relative_offsets
from relperf_tf.models import attention_maps, build_model
from tests.test_attention_contract import numpy_dense, numpy_heads

pytestmark = pytest.mark.all_backends

GRID = (3, 4)


def tiny(position_kernel, feature_map="softmax", name="RelativePerformer"):
    return build_model(
        name,
        image_shape=GRID + (1,),
        num_classes=3,
        dim=8,
        depth=2,
        heads=2,
        nb_features=4,
        feature_map=feature_map,
        locality=2.0,
        **({"position_kernel": position_kernel} if name == "RelativePerformer" else {}),
    )


def pixels():
    return np.random.default_rng(0).random((2, GRID[0] * GRID[1], 1)).astype("float32")


@pytest.mark.parametrize("position_kernel", ["exact", "circular", "favor"])
def test_kernels_are_the_tables_the_forward_pass_uses(position_kernel):
    model = tiny(position_kernel)
    kernels = attention_maps.positional_kernels(model.backbone)
    assert set(kernels) == {"block_0", "block_1"}
    rows, cols = GRID
    for block in model.blocks:
        kernel = kernels[block.name]  # [h, 2H - 1, 2W - 1]
        assert kernel.shape == (2, 2 * rows - 1, 2 * cols - 1)
        if position_kernel == "favor":
            continue  # the paper's path has no table: its P enters FAVOR+ with the content
        circular = position_kernel == "circular"
        encodings = [
            model.positions(relative_offsets(n, circular)[..., None].astype("float32"))
            for n in GRID
        ]
        row_table, col_table = (
            np.array(ops.convert_to_numpy(t)) for t in block.attention.position_logits(*encodings)
        )
        offsets = [relative_offsets(n, circular).astype(int) for n in GRID]
        # The factor of a query–key pair (rows a, b; columns c, d) is the kernel at their offset.
        table = row_table[:, :, :, None, None] + col_table[:, None, None, :, :]
        picked = kernel[:, offsets[0] + rows - 1][:, :, :, offsets[1] + cols - 1]
        np.testing.assert_allclose(table, picked, atol=1e-5)


@pytest.mark.parametrize("query", ["class", (1, 2)])
@pytest.mark.parametrize(
    "name, position_kernel",
    [("RelativePerformer", "exact"), ("RelativePerformer", "favor"), ("Performer", None)],
)
def test_maps_are_rows_of_weights_that_sum_to_one(name, position_kernel, query):
    model = tiny(position_kernel, name=name)
    maps = attention_maps.attention_maps(model.backbone, pixels(), query)
    assert set(maps) == {"block_0", "block_1"}
    for weights in maps.values():
        assert weights.shape == (2, 2, GRID[0] * GRID[1] + 1)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        assert weights.min() >= 0
    assert attention_maps.pixel_map(model.backbone, maps["block_0"]).shape == (2, 2) + GRID


def test_an_exact_map_is_the_brute_force_softmax_with_the_positional_bias():
    """feature_map='exact' and the exact factor: A_ij = softmax_j(q_i·k_j/√d + P(Δ_ij)), Δ = query
    − key, P = 0 for pairs with the class token; the query at pixel (1, 2) in block 0."""
    model = tiny("exact", feature_map="exact")
    backbone = model.backbone
    x = pixels()
    maps = attention_maps.attention_maps(backbone, x, (1, 2))
    # Block 0's inputs, then q and k by NumPy from the layers' weights.
    tokens = backbone.embedding(np.expand_dims(x, 2))
    tokens = np.array(backbone.class_token_layer(tokens), "float64")
    block = backbone.blocks[0]
    hidden = np.array(block._attention_norm(tokens), "float64")
    attention = block.attention
    q = numpy_heads(numpy_dense(attention._query_dense, hidden), 2)
    k = numpy_heads(numpy_dense(attention._key_dense, hidden), 2)
    # Strategy 1's scale: 1/√d of the full query–key width (content and positional pairs).
    logits = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(attention.query_key_dim)
    kernel = attention_maps.positional_kernels(backbone)["block_0"]  # [h, 2H - 1, 2W - 1]
    rows, cols = GRID
    coords = [(r, c) for r in range(rows) for c in range(cols)]
    bias = np.zeros((2, len(coords) + 1, len(coords) + 1))
    for i, (ri, ci) in enumerate(coords):
        for j, (rj, cj) in enumerate(coords):
            bias[:, i + 1, j + 1] = kernel[:, ri - rj + rows - 1, ci - cj + cols - 1]
    logits = logits + bias[None]
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    query = attention_maps.token_index(backbone, (1, 2))
    np.testing.assert_allclose(maps["block_0"], weights[:, :, query], atol=1e-5)


def test_bad_queries_name_the_argument():
    model = tiny("exact")
    with pytest.raises(ValueError, match=r"query=\(3, 0\) is not allowed"):
        attention_maps.attention_maps(model.backbone, pixels(), (3, 0))
