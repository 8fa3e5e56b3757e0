"""Every dtype policy on every attention layer (keras-hub's `run_precision_test`): outputs in
the compute dtype, each weight in its layer's variable dtype, the FAVOR+ kernel and the
position phases in float32 (float64 under float64), and numbers close to float32's."""

import keras
import numpy as np
import pytest

from relperf_tf.layers import (
    ClippedRelativeAttention,
    FavorAttention,
    RelativeFavorAttention,
    TransformerBlock,
)

pytestmark = pytest.mark.all_backends

POLICIES = ["float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16"]
# How far each policy's outputs may be from float32's (outputs are O(1)).
TOLERANCE = {"float16": 2e-2, "bfloat16": 1e-1, "float64": 1e-5}
LAYERS = {
    "favor": lambda **kw: FavorAttention(2, 4, nb_features=8, seed=1, **kw),
    "favor-causal-gate": lambda **kw: FavorAttention(2, 4, seed=1, use_gate=True, **kw),
    "relative-exact": lambda **kw: RelativeFavorAttention(2, 4, nb_features=8, seed=1, **kw),
    "relative-2d": lambda **kw: RelativeFavorAttention(
        2, 4, nb_features=8, seed=1, attention_axes=(1, 2), **kw
    ),
    "relative-favor": lambda **kw: RelativeFavorAttention(
        2, 4, nb_features=8, seed=1, position_kernel="favor", **kw
    ),
    "clipped": lambda **kw: ClippedRelativeAttention(
        2, 4, nb_features=8, seed=1, class_token=False, clipping_dist=2, **kw
    ),
    "block": lambda **kw: TransformerBlock(FavorAttention(2, 4, nb_features=8, seed=1, **kw), **kw),
}


def inputs(name):
    shape = (2, 3, 4, 8) if name == "relative-2d" else (2, 12, 8)
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def call(layer, name, x):
    if name == "block":
        return layer(x)
    return layer(x, x, use_causal_mask=name == "favor-causal-gate")


def as_float32(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("policy", POLICIES)
def test_dtype_policy(name, policy):
    if policy == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX without jax_enable_x64 has no float64 (Keras computes in float32)")
    x = inputs(name)
    keras.utils.set_random_seed(0)
    reference = LAYERS[name]()
    expected = as_float32(call(reference, name, x))
    layer = LAYERS[name](dtype=policy)
    out = call(layer, name, x)
    policy = keras.dtype_policies.get(policy)
    assert keras.backend.standardize_dtype(out.dtype) == policy.compute_dtype
    wide = "float64" if policy.variable_dtype == "float64" else "float32"
    for sublayer in layer._flatten_layers(include_self=True):
        kernel_side = sublayer.name in ("favor", "positions")
        expected_variables = wide if kernel_side else policy.variable_dtype
        for weight in sublayer._trainable_variables + sublayer._non_trainable_variables:
            if "float" in keras.backend.standardize_dtype(weight.dtype):
                assert keras.backend.standardize_dtype(weight.dtype) == expected_variables, (
                    weight.path
                )
        if sublayer.name == "favor":
            assert sublayer.compute_dtype == wide
    layer.set_weights(reference.get_weights())
    out = as_float32(call(layer, name, x))
    assert np.isfinite(out).all()
    tolerance = TOLERANCE.get(policy.compute_dtype, 1e-1)
    np.testing.assert_allclose(out, expected, atol=tolerance * max(1.0, np.abs(expected).max()))
