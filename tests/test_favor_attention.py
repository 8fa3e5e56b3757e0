"""FAVOR+ attention against exact softmax attention computed in NumPy."""

import keras
import numpy as np
import pytest

from relperf_tf.layers import FavorAttention, FavorKernel
from tests.gradients import gradients
from tests.layer_test import run_layer_test

pytestmark = pytest.mark.all_backends


def numpy_softmax_attention(q, k, v):
    scores = np.einsum("bhnd,bhkd->bhnk", q, k) / np.sqrt(q.shape[-1])
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bhnk,bhkd->bhnd", scores / scores.sum(-1, keepdims=True), v)


def favor_error(nb_features, q, k, v, seeds=5):
    exact = numpy_softmax_attention(q, k, v)
    errors = []
    for seed in range(seeds):
        out = FavorKernel(nb_features=nb_features, seed=seed)(q, k, v)
        errors.append(np.abs(np.array(out) - exact).mean() / np.abs(exact).mean())
    return float(np.mean(errors))


def test_favor_approximates_softmax_attention():
    """N = 64, d = 16: error at m = 256 is at least 2× lower than at m = 16."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, 2, 64, 16)).astype("float32") * 0.7 for _ in range(3))
    error_16, error_256 = favor_error(16, q, k, v), favor_error(256, q, k, v)
    print(f"FAVOR+ relative error: m=16 {error_16:.4f}, m=256 {error_256:.4f}")
    assert error_256 * 2 <= error_16


def test_exact_kernel_matches_numpy():
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 2, 9, 8)).astype("float32") for _ in range(3))
    np.testing.assert_allclose(
        FavorKernel(feature_map="exact")(q, k, v), numpy_softmax_attention(q, k, v), atol=1e-5
    )


@pytest.mark.parametrize("options", [dict(feature_map="relu"), dict(feature_map="efficient")])
def test_other_kernels_are_normalised_averages_of_values(options):
    """Every option is a convex combination of values: constant v passes through."""
    rng = np.random.default_rng(2)
    q, k = (rng.normal(size=(1, 2, 12, 8)).astype("float32") for _ in range(2))
    v = np.full((1, 2, 12, 4), 3.0, "float32")
    np.testing.assert_allclose(FavorKernel(**options)(q, k, v), v, rtol=1e-5)


@pytest.mark.tensorflow_only
def test_linear_memory_graph_has_no_token_by_token_tensor():
    """Tracing at N = 2048 creates no tensor with two token axes."""
    layer = FavorAttention(num_heads=2, nb_features=8)
    import tensorflow as tf

    fn = tf.function(lambda x: layer(x))
    graph = fn.get_concrete_function(tf.TensorSpec((1, 2048, 8))).graph
    for op in graph.get_operations():
        for out in op.outputs:
            dims = out.shape.as_list() if out.shape.rank is not None else []
            assert dims.count(2048) < 2, f"{op.name} has shape {dims}"


@pytest.mark.parametrize(
    "options",
    [{}, dict(feature_map="relu"), dict(feature_map="efficient"), dict(feature_map="exact")],
)
def test_favor_attention_layer(tmp_path, options):
    x = np.random.default_rng(3).normal(size=(2, 7, 8)).astype("float32")
    random = options.get("feature_map", "softmax") in ("softmax", "relu")
    run_layer_test(
        tmp_path,
        lambda **kw: FavorAttention(num_heads=2, nb_features=8, **options, **kw),
        [x],
        (2, 7, 8),
        expected_trainable_weights=8,  # q, k, v, output: kernel and bias each
        expected_non_trainable_weights=2 if random else 0,  # W and the redraw step
    )


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="feature_map='cosine'"):
        FavorKernel(feature_map="cosine")
    with pytest.raises(ValueError, match="nb_features=0"):
        FavorKernel(nb_features=0)
    with pytest.raises(ValueError, match="dim=10 is not divisible by num_heads=4"):
        FavorAttention(num_heads=4)(keras.ops.zeros((1, 3, 10)))


@pytest.mark.parametrize("kernel", ["softmax", "relu", "exact"])
def test_blocks_with_shared_axes_equal_their_concatenation(kernel):
    """[content, shared positions] (batch/head axes of size 1) = the concatenated q, k."""
    rng = np.random.default_rng(4)
    q_content, k_content, v = (rng.normal(size=(3, 2, 6, 4)).astype("float32") for _ in range(3))
    q_shared = rng.normal(size=(1, 2, 6, 2)).astype("float32")  # per head, shared by the batch
    k_shared = rng.normal(size=(1, 1, 6, 2)).astype("float32")  # shared by batch and heads
    q = np.concatenate([q_content, np.broadcast_to(q_shared, (3, 2, 6, 2))], -1)
    k = np.concatenate([k_content, np.broadcast_to(k_shared, (3, 2, 6, 2))], -1)
    layer = FavorKernel(nb_features=16, feature_map=kernel, seed=2)
    whole = np.array(layer(q, k, v))
    blocks = np.array(layer([q_content, q_shared], [k_content, k_shared], v))
    np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-5)
    assert (
        layer.compute_output_shape(
            [q_content.shape, q_shared.shape], [k_content.shape, k_shared.shape], v.shape
        )
        == v.shape
    )


def test_fused_projections_equal_the_separate_dense_layers():
    from relperf_tf.layers.favor_attention import fused_dense

    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    layers = [keras.layers.Dense(units, name=f"d{units}") for units in (8, 4, 8)]
    for layer in layers:
        layer.build(x.shape)
        layer.bias.assign(np.random.default_rng(layer.units).normal(size=layer.units))
    expected = [
        x @ np.array(layer.kernel.numpy()) + np.array(layer.bias.numpy()) for layer in layers
    ]
    fused = fused_dense(keras.ops.convert_to_tensor(x), layers)
    assert [tuple(f.shape) for f in fused] == [(2, 5, 8), (2, 5, 4), (2, 5, 8)]
    for got, want in zip(fused, expected):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-5)
    # Gradients reach each layer's own kernel.
    grads = gradients(
        lambda: sum(
            keras.ops.sum(f**2) for f in fused_dense(keras.ops.convert_to_tensor(x), layers)
        ),
        variables=[layer.kernel for layer in layers],
    )
    for layer, grad, out in zip(layers, grads, expected):
        np.testing.assert_allclose(
            np.array(grad), 2 * np.einsum("bnd,bnu->du", x, out), rtol=1e-4, atol=1e-4
        )
    # A LoRA-enabled layer is called as itself (its low-rank update is not in `kernel`).
    layers[1].enable_lora(2)
    layers[1].lora_kernel_b.assign(np.ones((2, 4), "float32"))
    np.testing.assert_allclose(
        np.array(fused_dense(keras.ops.convert_to_tensor(x), layers)[1]),
        np.array(layers[1](x)),
        rtol=1e-5,
        atol=1e-5,
    )
