"""The `exact` baseline: Keras MultiHeadAttention behind the FAVOR+ call signature."""

import keras
import numpy as np
import pytest

from benchmarks import benchmarking
from benchmarks.softmax_baseline import SoftmaxSelfAttention
from tests.layer_test import run_layer_test
from tests.test_favor_attention import numpy_softmax_attention

pytestmark = pytest.mark.all_backends


def test_softmax_self_attention_matches_numpy():
    """W_o · softmax(q kᵀ/√d) v with the layer's own projection weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    layer = SoftmaxSelfAttention(num_heads=2, key_dim=4)
    out = np.array(layer(x))

    def heads(dense):  # EinsumDense [dim, heads, d] + bias [heads, d] → [b, h, n, d]
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
        return np.einsum("bnc,chd->bhnd", x, kernel) + bias[None, :, None, :]

    q, k, v = heads(layer._query_dense), heads(layer._key_dense), heads(layer._value_dense)
    attended = numpy_softmax_attention(q, k, v)  # [b, h, n, d]
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer._output_dense.weights)
    expected = np.einsum("bhnd,hdc->bnc", attended, kernel) + bias
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_softmax_self_attention_layer_contract(tmp_path):
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        tmp_path,
        lambda **kw: SoftmaxSelfAttention(num_heads=2, key_dim=4, **kw),
        [x],
        (2, 5, 8),
        expected_trainable_weights=8,
    )


def test_exact_benchmark_model_is_performer_with_multi_head_attention():
    model = benchmarking.build(
        "exact", image_size=4, batch_size=2, jit_compile=False, dim=16, depth=1, heads=2
    )
    performer = benchmarking.build(
        "Performer", image_size=4, batch_size=2, jit_compile=False, dim=16, depth=1, heads=2
    )
    assert isinstance(model.blocks[0].attention, SoftmaxSelfAttention)
    # Same architecture apart from attention: FAVOR+ keeps W and a step counter
    # as non-trainable state; trainable parameter counts are equal.
    assert model.count_params() - performer.count_params() == -sum(
        int(np.prod(w.shape)) for w in performer.non_trainable_weights
    )
    images = np.random.default_rng(2).random((2, 4, 4, 1)).astype("float32")
    history = model.fit(images, np.array([0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
