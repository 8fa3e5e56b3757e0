"""The layers without a file of their own go through the shared layer test."""

import numpy as np
import pytest

from relperf_tf.layers import (
    ClassToken,
    FavorAttention,
    FavorKernel,
    GridPositions,
    PixelEmbedding,
    PositionEmbedding,
    TransformerBlock,
)
from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends


@pytest.mark.parametrize(
    "embedding_type,trainable", [("linear", 2), ("MLP", 4), ("lookup", 1)], ids=str
)
def test_pixel_embedding(tmp_path, embedding_type, trainable):
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 2)).astype("float32")
    if embedding_type != "lookup":
        images = images / 255
    run_layer_test(
        tmp_path,
        lambda **kw: PixelEmbedding(8, embedding_type, **kw),
        [images],
        (2, 12, 8),
        expected_trainable_weights=trainable,
        # The lookup's table output is bf16 too, but its index input stays integer.
        run_mixed_precision_check=True,
    )


def test_class_token(tmp_path):
    tokens = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        tmp_path,
        lambda **kw: ClassToken("last", **kw),
        [tokens],
        (2, 6, 8),
        expected_trainable_weights=1,
    )


def test_position_embedding(tmp_path):
    tokens = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        tmp_path,
        lambda **kw: PositionEmbedding(7, **kw),
        [tokens],
        (2, 5, 8),
        expected_trainable_weights=1,
    )
    layer = PositionEmbedding(7)
    out = np.array(layer(tokens))
    np.testing.assert_allclose(
        out - tokens, np.broadcast_to(np.array(layer.table.numpy())[:5], out.shape), atol=1e-6
    )
    with pytest.raises(ValueError, match="9 tokens are not allowed; this PositionEmbedding has"):
        PositionEmbedding(7)(np.zeros((1, 9, 8), "float32"))
    with pytest.raises(ValueError, match="length=0"):
        PositionEmbedding(0)


@pytest.mark.parametrize("remat", [False, True], ids=["plain", "remat"])
def test_transformer_block(tmp_path, remat):
    tokens = np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32")

    def make(**kw):
        attention = FavorAttention(2, nb_features=4, **kw)
        return TransformerBlock(attention, 0.0, 0.1, ff_multiplier=2, remat=remat, **kw)

    run_layer_test(
        tmp_path,
        make,
        [tokens],
        (2, 5, 8),
        # 2 LayerNorms, 2 feed-forward Dense (γ/β, kernel/bias each); the attention's 8.
        expected_trainable_weights=16,
        expected_non_trainable_weights=2,
    )


def test_grid_positions(tmp_path):
    tokens = np.zeros((2, 6, 4), "float32")
    run_layer_test(
        tmp_path,
        lambda **kw: GridPositions((2, 3), "coordinates", **kw),
        [tokens],
        (6, 2),
        expected_trainable_weights=0,
        run_mixed_precision_check=False,  # constant float32 positions whatever the policy
    )
    offsets = GridPositions((2, 3), "col_offsets", circular=True)(tokens)
    np.testing.assert_array_equal(np.array(offsets)[..., 0], [[0, -1, 1], [1, 0, -1], [-1, 1, 0]])


@pytest.mark.parametrize("feature_map", ["softmax", "relu", "efficient", "exact"])
def test_favor_kernel(tmp_path, feature_map):
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 2, 5, 4)).astype("float32") for _ in range(3))
    random = feature_map in ("softmax", "relu")
    run_layer_test(
        tmp_path,
        lambda **kw: FavorKernel(nb_features=6, feature_map=feature_map, **kw),
        [q, k, v],
        (2, 2, 5, 4),
        expected_trainable_weights=0,
        expected_non_trainable_weights=2 if random else 0,
        run_mixed_precision_check=False,  # the kernel computes in float32 by design
    )
