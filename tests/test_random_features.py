"""Random matrices and feature maps: orthogonality, scaling, unbiasedness."""

import numpy as np
import pytest
from keras import ops

from relperf_tf.layers import feature_maps
from relperf_tf.layers.random_features import default_nb_features, orthogonal_random_matrix

pytestmark = pytest.mark.all_backends


def draw(m, d, scaling, seed=(1, 2)):
    return ops.convert_to_numpy(orthogonal_random_matrix(m, d, seed, scaling))


@pytest.mark.parametrize("scaling", ["gaussian", "fixed"])
def test_rows_orthogonal_within_each_block(scaling):
    m, d = 20, 8  # blocks of 8, 8, 4 rows
    w = draw(m, d, scaling)
    norms = np.linalg.norm(w, axis=1)
    for start in range(0, m, d):
        block = w[start : start + d] / norms[start : start + d, None]
        gram = block @ block.T
        np.testing.assert_allclose(gram, np.eye(len(block)), atol=1e-5)
    # Rows of different blocks are independent, so not orthogonal in general.
    cross = (w[:d] / norms[:d, None]) @ (w[d : 2 * d] / norms[d : 2 * d, None]).T
    assert np.abs(cross).max() > 1e-2


def test_row_norms_follow_the_scaling():
    d = 16
    np.testing.assert_allclose(np.linalg.norm(draw(64, d, "fixed"), axis=1), np.sqrt(d), rtol=1e-5)
    norms = np.linalg.norm(draw(4096, d, "gaussian"), axis=1)
    # Chi distribution with d degrees of freedom: mean ≈ √(d − 1/2), variance ≈ 1/2.
    assert abs(norms.mean() - np.sqrt(d - 0.5)) < 0.05
    assert 0.4 < norms.var() < 0.6


def test_draws_are_deterministic_and_seed_dependent():
    np.testing.assert_array_equal(draw(16, 8, "gaussian", (3, 4)), draw(16, 8, "gaussian", (3, 4)))
    assert not np.allclose(draw(16, 8, "gaussian", (3, 4)), draw(16, 8, "gaussian", (3, 5)))


def test_default_nb_features():
    assert default_nb_features(32) == int(32 * np.log(32)) == 110
    assert default_nb_features(8) == 16


def test_softmax_features_are_unbiased():
    """Averaged over 1000 draws, φ(q)·φ(k) ≈ exp(q·k/√d) within 5 % (d = 8).

    The blocks of one matrix are independent draws, and φ(q)·φ(k) with 1000·m rows is the
    mean of the 1000 m-row estimates: one matrix of 1000 draws' rows stands for them.
    """
    d, draws = 8, 1000
    m = default_nb_features(d)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, d)).astype("float32") * 0.5
    k = rng.normal(size=(3, d)).astype("float32") * 0.5
    exact = np.exp(np.sum(q * k, axis=1) / np.sqrt(d))
    w = orthogonal_random_matrix(draws * m, d, (7, 0))
    fq = feature_maps.softmax_kernel_features(q[None, None], w, True, eps=0.0, stabilize=False)
    fk = feature_maps.softmax_kernel_features(k[None, None], w, False, eps=0.0, stabilize=False)
    estimate = np.sum(ops.convert_to_numpy(fq * fk), axis=-1)[0, 0]
    relative_error = np.abs(estimate / exact - 1)
    print("unbiasedness relative error per pair:", relative_error)
    assert relative_error.max() < 0.05


def test_features_are_positive():
    x = np.random.default_rng(1).normal(size=(2, 2, 10, 8)).astype("float32") * 3
    w = orthogonal_random_matrix(16, 8, (0, 0))
    for is_query in (True, False):
        assert np.all(
            ops.convert_to_numpy(feature_maps.softmax_kernel_features(x, w, is_query)) > 0
        )
    assert np.all(ops.convert_to_numpy(feature_maps.relu_kernel_features(x, w)) >= 1e-3)
